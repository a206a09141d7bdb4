//! A cell's coordinates: the one vocabulary of the tool. Filters (`--filter`), the
//! matrix's `include`/`exclude`/`image.latest` selectors, tag templates, planned cells
//! and manifest records all name and match coordinates through this module, so a key
//! means the same thing everywhere.

use std::borrow::Cow;

use serde::{Deserialize, Serialize};

/// Docker platform ↔ the arch word in Miniconda installer names.
pub const PLATFORMS: &[(&str, &str)] = &[
    ("linux/amd64", "x86_64"),
    ("linux/arm64", "aarch64"),
    ("linux/ppc64le", "ppc64le"),
    ("linux/s390x", "s390x"),
];

/// The installer arch of a Docker platform (`linux/arm64` → `aarch64`).
pub fn installer_arch(platform: &str) -> Option<&'static str> {
    PLATFORMS
        .iter()
        .find(|(p, _)| *p == platform)
        .map(|(_, a)| *a)
}

/// A coordinate's name.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Key {
    Python,
    Miniconda,
    Base,
    Os,
    Cuda,
    Cudnn,
    Flavor,
    Platform,
    Arch,
    Variant,
    /// `pytorch` or `tensorflow` for a framework image, `none` for a Miniconda image.
    Framework,
    /// The PyTorch release of a framework image.
    Torch,
    /// The TensorFlow release of a framework image.
    Tf,
    /// The framework's wheel variant (`cu124`, `cpu`).
    CudaWheel,
    /// The user-defined family (`families:`) whose layer made the image; `none` for a
    /// Miniconda or framework image.
    Family,
    /// The cell's id (not a coordinate of the image, but selectable).
    Id,
    /// Any of the cell's tags, with or without the repository.
    Tag,
}

impl Key {
    pub const ALL: &'static [Key] = &[
        Key::Python,
        Key::Cuda,
        Key::Cudnn,
        Key::Flavor,
        Key::Os,
        Key::Platform,
        Key::Arch,
        Key::Variant,
        Key::Base,
        Key::Miniconda,
        Key::Framework,
        Key::Torch,
        Key::Tf,
        Key::CudaWheel,
        Key::Family,
        Key::Tag,
        Key::Id,
    ];
    /// What an `exclude` or `image.latest` selector may test.
    pub const RULE: &'static [Key] = &[
        Key::Python,
        Key::Base,
        Key::Cuda,
        Key::Cudnn,
        Key::Flavor,
        Key::Os,
        Key::Platform,
        Key::Arch,
        Key::Variant,
        Key::Miniconda,
        Key::Framework,
        Key::Torch,
        Key::Tf,
        Key::CudaWheel,
        Key::Family,
    ];
    /// What an `include` names: the coordinates that define a cell.
    pub const INCLUDE: &'static [Key] = &[
        Key::Base,
        Key::Python,
        Key::Miniconda,
        Key::Platform,
        Key::Variant,
    ];
    /// Coordinates a tag template may use (besides `{py}`, `{date}` and `{tag}`).
    pub const TEMPLATE: &'static [Key] = &[
        Key::Python,
        Key::Miniconda,
        Key::Base,
        Key::Os,
        Key::Cuda,
        Key::Cudnn,
        Key::Flavor,
        Key::Variant,
        Key::Arch,
        Key::Torch,
        Key::Tf,
        Key::CudaWheel,
    ];
    /// Placeholders that name a framework image's own coordinates: not in `image.tag`.
    pub const FRAMEWORK: &'static [Key] = &[Key::Torch, Key::Tf, Key::CudaWheel];

    pub fn name(self) -> &'static str {
        match self {
            Key::Python => "python",
            Key::Miniconda => "miniconda",
            Key::Base => "base",
            Key::Os => "os",
            Key::Cuda => "cuda",
            Key::Cudnn => "cudnn",
            Key::Flavor => "flavor",
            Key::Platform => "platform",
            Key::Arch => "arch",
            Key::Variant => "variant",
            Key::Framework => "framework",
            Key::Torch => "torch",
            Key::Tf => "tf",
            Key::CudaWheel => "cuda_wheel",
            Key::Family => "family",
            Key::Id => "id",
            Key::Tag => "tag",
        }
    }

    pub fn parse(s: &str) -> Option<Key> {
        Key::ALL.iter().copied().find(|k| k.name() == s)
    }

    pub fn names(keys: &[Key]) -> Vec<&'static str> {
        keys.iter().map(|k| k.name()).collect()
    }

    /// A coordinate only framework and family images have a value for.
    pub fn is_framework(self) -> bool {
        matches!(
            self,
            Key::Framework | Key::Torch | Key::Tf | Key::CudaWheel | Key::Family
        )
    }

    /// Versions match by leading components too: `cuda: "12"` selects every 12.x.
    pub fn is_version(self) -> bool {
        matches!(
            self,
            Key::Python | Key::Cuda | Key::Miniconda | Key::Torch | Key::Tf
        )
    }
}

/// Where a cell sits in the matrix. Serialised as is into the manifest, so a record
/// is matched exactly like the cell it came from.
#[derive(
    Clone, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize, schemars::JsonSchema,
)]
pub struct Coordinate {
    pub python: String,
    pub miniconda: String,
    /// The base reference as built (`nvidia/cuda:12.4.1-cudnn-devel-ubuntu22.04`).
    pub base: String,
    /// `ubuntu22.04`, `debian12`.
    pub os: String,
    pub cuda: Option<String>,
    pub cudnn: Option<String>,
    pub flavor: Option<String>,
    pub platform: String,
    pub variant: String,
    /// A framework image's framework (`pytorch`, `tensorflow`); None for a Miniconda
    /// image (its framework images' parent).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub framework: Option<String>,
    /// The PyTorch release of a PyTorch image.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub torch: Option<String>,
    /// The TensorFlow release of a TensorFlow image.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tf: Option<String>,
    /// The framework's wheel variant (`cu124`, `cpu`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cuda_wheel: Option<String>,
    /// The user-defined family whose layer made the image (`yolo`); None for a
    /// Miniconda or framework image.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub family: Option<String>,
    /// Every user-defined family on the image's way from its Miniconda cell, with its
    /// release (empty for a family without `versions`): `{yolo: "8.3.0"}`.
    #[serde(default, skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub families: std::collections::BTreeMap<String, String>,
}

impl Coordinate {
    /// `cuda12.4.1-cudnn-devel-ubuntu22.04` or `ubuntu22.04`: the base as the seed's tags
    /// name it.
    pub fn base_slug(&self) -> String {
        match &self.cuda {
            Some(v) => {
                let mut s = format!("cuda{v}");
                if let Some(t) = &self.cudnn {
                    s.push('-');
                    s.push_str(t);
                }
                if let Some(f) = &self.flavor {
                    s.push('-');
                    s.push_str(f);
                }
                format!("{s}-{}", self.os)
            }
            None => self.os.clone(),
        }
    }

    /// A coordinate's value for selectors; `none` where a CPU base has no CUDA.
    /// None for `id` and `tag`, which belong to the cell, not its coordinates.
    pub fn value(&self, key: Key) -> Option<Cow<'_, str>> {
        let none = || Cow::Borrowed("none");
        Some(match key {
            Key::Python => Cow::Borrowed(&self.python),
            Key::Miniconda => Cow::Borrowed(&self.miniconda),
            Key::Base => Cow::Borrowed(&self.base),
            Key::Os => Cow::Borrowed(&self.os),
            Key::Cuda => self.cuda.as_deref().map_or_else(none, Cow::Borrowed),
            Key::Cudnn => self.cudnn.as_deref().map_or_else(none, Cow::Borrowed),
            Key::Flavor => self.flavor.as_deref().map_or_else(none, Cow::Borrowed),
            Key::Platform => Cow::Borrowed(&self.platform),
            Key::Arch => Cow::Borrowed(installer_arch(&self.platform).unwrap_or("")),
            Key::Variant => Cow::Borrowed(&self.variant),
            Key::Framework => self.framework.as_deref().map_or_else(none, Cow::Borrowed),
            Key::Torch => self.torch.as_deref().map_or_else(none, Cow::Borrowed),
            Key::Tf => self.tf.as_deref().map_or_else(none, Cow::Borrowed),
            Key::CudaWheel => self.cuda_wheel.as_deref().map_or_else(none, Cow::Borrowed),
            Key::Family => self.family.as_deref().map_or_else(none, Cow::Borrowed),
            Key::Id | Key::Tag => return None,
        })
    }

    /// A coordinate's value in a tag: empty where a CPU base has no CUDA, and `base`
    /// is the base's slug.
    pub fn template_text(&self, key: Key) -> Cow<'_, str> {
        fn text(v: &Option<String>) -> Cow<'_, str> {
            Cow::Borrowed(v.as_deref().unwrap_or_default())
        }
        match key {
            Key::Base => Cow::Owned(self.base_slug()),
            Key::Cuda => text(&self.cuda),
            Key::Cudnn => text(&self.cudnn),
            Key::Flavor => text(&self.flavor),
            Key::Torch => text(&self.torch),
            Key::Tf => text(&self.tf),
            Key::CudaWheel => text(&self.cuda_wheel),
            k => self.value(k).unwrap_or_default(),
        }
    }

    /// Whether this coordinate matches a glob (`*`, `?`). Versions also match by
    /// leading components (`12` → 12.x), and `base` also matches the base's slug.
    pub fn matches(&self, key: Key, pattern: &str) -> bool {
        let Some(v) = self.value(key) else {
            return false;
        };
        let glob = wildmatch::WildMatch::new(pattern);
        if glob.matches(&v) {
            return true;
        }
        if key == Key::Base && glob.matches(&self.base_slug()) {
            return true;
        }
        key.is_version()
            && (v.starts_with(&format!("{pattern}.")) || v.starts_with(&format!("{pattern}-")))
    }
}

/// Something that can be selected: a planned cell or a manifest record.
pub trait Subject {
    fn coordinate(&self) -> &Coordinate;
    fn id(&self) -> &str;
    fn tags(&self) -> &[String];

    /// Whether `key` matches `pattern` for this subject: the one matcher behind
    /// filters, selectors and record selection.
    fn matches(&self, key: Key, pattern: &str) -> bool {
        let glob = || wildmatch::WildMatch::new(pattern);
        match key {
            Key::Id => glob().matches(self.id()),
            Key::Tag => {
                let g = glob();
                self.tags().iter().any(|t| {
                    g.matches(t) || t.rsplit_once(':').is_some_and(|(_, tag)| g.matches(tag))
                })
            }
            k => self.coordinate().matches(k, pattern),
        }
    }
}

/// `--filter KEY=GLOB`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Filter {
    pub key: Key,
    pub pattern: String,
}

impl std::str::FromStr for Filter {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let keys = Key::names(Key::ALL).join(", ");
        let (k, v) = s
            .split_once('=')
            .ok_or_else(|| format!("`{s}` is not KEY=VALUE (keys: {keys})"))?;
        let Some(key) = Key::parse(k) else {
            let hint = crate::diag::did_you_mean(k, &Key::names(Key::ALL))
                .map(|h| format!("did you mean `{h}`? "))
                .unwrap_or_default();
            return Err(format!(
                "unknown filter key `{k}` ({hint}expected one of: {keys})"
            ));
        };
        if v.is_empty() {
            return Err(format!("filter `{s}` has an empty value"));
        }
        Ok(Filter {
            key,
            pattern: v.to_string(),
        })
    }
}

impl Filter {
    pub fn matches(&self, s: &dyn Subject) -> bool {
        s.matches(self.key, &self.pattern)
    }
}

/// The subjects every filter matches, in order.
pub fn select<'a, T: Subject>(items: &'a [T], filters: &[Filter]) -> Vec<&'a T> {
    items
        .iter()
        .filter(|c| filters.iter().all(|f| f.matches(*c)))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    struct S(Coordinate, String, Vec<String>);
    impl Subject for S {
        fn coordinate(&self) -> &Coordinate {
            &self.0
        }
        fn id(&self) -> &str {
            &self.1
        }
        fn tags(&self) -> &[String] {
            &self.2
        }
    }

    fn gpu() -> S {
        S(
            Coordinate {
                python: "3.10".into(),
                miniconda: "24.5.0-0".into(),
                base: "nvidia/cuda:12.1.1-cudnn8-devel-ubuntu22.04".into(),
                os: "ubuntu22.04".into(),
                cuda: Some("12.1.1".into()),
                cudnn: Some("cudnn8".into()),
                flavor: Some("devel".into()),
                platform: "linux/arm64".into(),
                variant: "default".into(),
                framework: Some("pytorch".into()),
                torch: Some("2.5.1".into()),
                tf: None,
                cuda_wheel: Some("cu121".into()),
                ..Coordinate::default()
            },
            "py3.10-cuda12.1.1-cudnn8-devel-ubuntu22.04-arm64".into(),
            vec!["miniconda:conda3-python3.10-cuda12.1.1-cudnn8-devel-ubuntu22.04".into()],
        )
    }

    #[test]
    fn every_key_selects() {
        let s = gpu();
        let cases: &[(Key, &str, &str)] = &[
            (Key::Python, "3.10", "3.1"),
            (Key::Miniconda, "24", "23"),
            (Key::Base, "cuda12.1.1-*", "ubuntu:22.04"),
            (Key::Os, "ubuntu22.04", "debian12"),
            (Key::Cuda, "12", "11"),
            (Key::Cudnn, "cudnn8", "cudnn9"),
            (Key::Flavor, "devel", "runtime"),
            (Key::Platform, "linux/arm64", "linux/amd64"),
            (Key::Arch, "aarch64", "x86_64"),
            (Key::Variant, "default", "data"),
            (Key::Framework, "pytorch", "none"),
            (Key::Torch, "2.5", "2.4.1"),
            (Key::Tf, "none", "2.17.0"),
            (Key::CudaWheel, "cu12?", "cpu"),
            (Key::Family, "none", "yolo"),
            (Key::Id, "py3.10-*-arm64", "py3.11-*"),
            (Key::Tag, "conda3-python3.10-*", "latest"),
        ];
        assert_eq!(cases.len(), Key::ALL.len(), "a case for every key");
        for (k, yes, no) in cases {
            assert!(s.matches(*k, yes), "{k:?} should match {yes}");
            assert!(!s.matches(*k, no), "{k:?} should not match {no}");
            let f: Filter = format!("{}={yes}", k.name()).parse().unwrap();
            assert!(f.matches(&s));
        }
    }

    #[test]
    fn cpu_bases_say_none() {
        let mut s = gpu();
        s.0.cuda = None;
        s.0.cudnn = None;
        s.0.flavor = None;
        assert!(s.matches(Key::Cuda, "none") && s.matches(Key::Cudnn, "none"));
        assert_eq!(s.0.template_text(Key::Cuda), "");
        assert_eq!(s.0.base_slug(), "ubuntu22.04");
        assert_eq!(gpu().0.base_slug(), "cuda12.1.1-cudnn8-devel-ubuntu22.04");
    }

    #[test]
    fn bad_filters_say_what_is_valid() {
        let e = "pyhton=3.10".parse::<Filter>().unwrap_err();
        assert!(e.contains("did you mean `python`"), "{e}");
        assert!("python=".parse::<Filter>().is_err());
        assert!("python".parse::<Filter>().is_err());
    }
}
