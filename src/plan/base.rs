//! Base images: what the planner knows from a reference.
//!
//! `nvidia/cuda` tags follow NVIDIA's grammar (`{X.Y.Z}-[{cudnn}-]{base|runtime|devel}-ubuntu{NN.NN}`),
//! `ubuntu:*` and `debian:*` name their release; any other image must say its `os`.
//! From that the planner gets the CUDA version, cuDNN token, flavor and OS, which
//! feed tags, labels and the OS-specific parts of the Dockerfile.

use crate::plan::catalogue::{cuda_tag_status, supported_successor, Successor, TagStatus};
use crate::reference;

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum OsFamily {
    Debian,
    Ubuntu,
}

#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Os {
    pub family: OsFamily,
    /// `22.04` for Ubuntu, `12` for Debian.
    pub version: String,
}

impl std::fmt::Display for Os {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let family = match self.family {
            OsFamily::Ubuntu => "ubuntu",
            OsFamily::Debian => "debian",
        };
        write!(f, "{family}{}", self.version)
    }
}

impl Os {
    /// `ubuntu22.04`, `debian12`: used in tags and ids (and what it displays as).
    pub fn slug(&self) -> String {
        self.to_string()
    }

    pub const SUPPORTED: &'static str =
        "ubuntu20.04, ubuntu22.04, ubuntu24.04, debian11, debian12, debian13";

    pub fn parse_slug(s: &str) -> Result<Os, String> {
        let os = if let Some(v) = s.strip_prefix("ubuntu") {
            Os {
                family: OsFamily::Ubuntu,
                version: v.to_string(),
            }
        } else if let Some(v) = s.strip_prefix("debian") {
            Os {
                family: OsFamily::Debian,
                version: v.to_string(),
            }
        } else {
            return Err(format!(
                "unknown os `{s}` (expected one of: {})",
                Os::SUPPORTED
            ));
        };
        os.check()?;
        Ok(os)
    }

    fn check(&self) -> Result<(), String> {
        let ok = match self.family {
            OsFamily::Ubuntu => matches!(self.version.as_str(), "20.04" | "22.04" | "24.04"),
            OsFamily::Debian => matches!(self.version.as_str(), "11" | "12" | "13"),
        };
        if ok {
            Ok(())
        } else {
            Err(format!(
                "{} is not supported by the image templates (supported: {})",
                self.slug(),
                Os::SUPPORTED
            ))
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Cuda {
    pub version: semver::Version,
    /// `cudnn8`, `cudnn9`, `cudnn`, or none.
    pub cudnn: Option<String>,
    /// `base`, `runtime` or `devel`.
    pub flavor: String,
}

#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Base {
    /// The reference `docker build` will use in `FROM`.
    pub reference: String,
    pub os: Os,
    pub cuda: Option<Cuda>,
    slug: String,
}

impl Base {
    pub fn new(reference: String, os: Os, cuda: Option<Cuda>) -> Base {
        let slug = match &cuda {
            Some(c) => {
                let mut s = format!("cuda{}", c.version);
                if let Some(t) = &c.cudnn {
                    s.push('-');
                    s.push_str(t);
                }
                format!("{s}-{}-{}", c.flavor, os.slug())
            }
            None => os.slug(),
        };
        Base {
            reference,
            os,
            cuda,
            slug,
        }
    }

    /// Whether two bases name the same image, however each was spelt.
    pub fn same_image(&self, other: &Base) -> bool {
        reference::normalize(&self.reference) == reference::normalize(&other.reference)
    }

    /// `cuda12.1.0-cudnn8-devel-ubuntu22.04` or `ubuntu22.04`: the part of the seed's tags
    /// that names the base (computed once: tags, ids and sorting all use it).
    pub fn slug(&self) -> &str {
        &self.slug
    }
}

/// What a base parse found besides the base itself.
#[derive(Debug, Default)]
pub struct BaseNotes {
    pub warnings: Vec<String>,
}

/// The cuDNN token NVIDIA uses for a CUDA version.
pub fn expected_cudnn_token(v: &semver::Version) -> &'static str {
    match (v.major, v.minor) {
        (m, _) if m < 12 => "cudnn8",
        (12, n) if n <= 2 => "cudnn8",
        (12, 3) => "cudnn9",
        _ => "cudnn",
    }
}

fn ubuntu_codename(v: &str) -> Option<&'static str> {
    Some(match v {
        "focal" | "20.04" => "20.04",
        "jammy" | "22.04" => "22.04",
        "noble" | "24.04" => "24.04",
        _ => return None,
    })
}

fn debian_codename(v: &str) -> Option<&'static str> {
    let v = v.strip_suffix("-slim").unwrap_or(v);
    Some(match v {
        "bullseye" | "11" => "11",
        "bookworm" | "12" => "12",
        "trixie" | "13" => "13",
        _ => return None,
    })
}

/// Understand a base reference. `os` is the user's explicit OS for images we cannot
/// read; `cuda_registry` replaces the `nvidia/cuda` repository (mirrors, nvcr.io).
pub fn parse(
    image: &str,
    os: Option<&str>,
    cuda_registry: Option<&str>,
) -> Result<(Base, BaseNotes), String> {
    reference::check_reference(image)
        .map_err(|e| format!("`{image}` is not a valid image reference: {e}"))?;
    let (name, tag, digest) = reference::split(image);
    let tag = tag.unwrap_or("latest");
    let last_two: Vec<&str> = name.rsplit('/').take(2).collect();
    let mut notes = BaseNotes::default();
    let mut reference = image.to_string();

    let is_cuda = last_two.len() == 2 && last_two[0] == "cuda" && last_two[1] == "nvidia";
    if is_cuda {
        if let Some(reg) = cuda_registry {
            if name == "nvidia/cuda" {
                reference = format!("{reg}:{tag}");
                if let Some(d) = digest {
                    reference.push('@');
                    reference.push_str(d);
                }
            }
        }
        let (cuda, os_parsed) = parse_cuda_tag(tag, &mut notes)?;
        let os_final = match os {
            Some(s) => Os::parse_slug(s)?,
            None => os_parsed,
        };
        return Ok((Base::new(reference, os_final, Some(cuda)), notes));
    }

    let os_final = if let Some(s) = os {
        Os::parse_slug(s)?
    } else {
        match last_two[0] {
            "ubuntu" => {
                let v = ubuntu_codename(tag)
                    .ok_or_else(|| format!("cannot tell the Ubuntu release of `{image}` (supported: 20.04, 22.04, 24.04)"))?;
                Os { family: OsFamily::Ubuntu, version: v.into() }
            }
            "debian" => {
                let v = debian_codename(tag).ok_or_else(|| {
                    format!("cannot tell the Debian release of `{image}` (supported: 11/bullseye, 12/bookworm, 13/trixie); add `os: debian12`")
                })?;
                Os { family: OsFamily::Debian, version: v.into() }
            }
            _ => {
                return Err(format!(
                    "cannot tell the OS of `{image}`; write it as a mapping with `image` and `os` (one of: {})",
                    Os::SUPPORTED
                ))
            }
        }
    };
    os_final.check()?;
    Ok((Base::new(reference, os_final, None), notes))
}

fn parse_cuda_tag(tag: &str, notes: &mut BaseNotes) -> Result<(Cuda, Os), String> {
    let grammar =
        "nvidia/cuda tags look like 12.1.1-devel-ubuntu22.04 or 12.1.1-cudnn8-devel-ubuntu22.04";
    let parts: Vec<&str> = tag.split('-').collect();
    let (ver, cudnn, flavor, os) = match parts.as_slice() {
        [v, f, o] => (*v, None, *f, *o),
        [v, c, f, o] => (*v, Some(*c), *f, *o),
        _ => return Err(format!("`{tag}` is not an nvidia/cuda tag ({grammar})")),
    };
    let version = semver::Version::parse(ver)
        .map_err(|_| format!("`{ver}` in `{tag}` is not a CUDA version X.Y.Z ({grammar})"))?;
    if !matches!(flavor, "base" | "runtime" | "devel") {
        return Err(format!(
            "flavor `{flavor}` in `{tag}` must be one of: base, runtime, devel"
        ));
    }
    let os_v = os.strip_prefix("ubuntu").ok_or_else(|| {
        format!("`{tag}`: image-matrix supports the ubuntu variants of nvidia/cuda ({grammar})")
    })?;
    let os = Os {
        family: OsFamily::Ubuntu,
        version: os_v.to_string(),
    };
    os.check()?;
    if let Some(c) = cudnn {
        let want = expected_cudnn_token(&version);
        if !c.starts_with("cudnn") {
            return Err(format!("`{c}` in `{tag}` is not a cuDNN token ({grammar})"));
        }
        if flavor == "base" {
            return Err(format!(
                "`{tag}`: NVIDIA publishes cuDNN only in runtime and devel images"
            ));
        }
        if c != want {
            let fixed = format!("{ver}-{want}-{flavor}-{os_v}", os_v = os.slug());
            // a suggestion only where NVIDIA publishes it: CUDA 99.9.9 is a typo, not a
            // cuDNN mismatch
            if cuda_tag_status(&fixed).is_none() {
                return Err(format!(
                    "`{tag}`: the nvidia/cuda tag list knows no CUDA {version} image (check the version; `matrix catalogue update` refreshes the list)"
                ));
            }
            return Err(format!("cuDNN token `{c}` does not match CUDA {version}: NVIDIA tags it `{want}` (`{fixed}`)"));
        }
    }
    match cuda_tag_status(tag) {
        Some(TagStatus::Supported) => {}
        Some(TagStatus::Eol) => {
            let rest = &tag[ver.len() + 1..];
            let hint = match supported_successor(&version, rest) {
                Some(Successor::Patch(s)) => format!("; its supported successor is `nvidia/cuda:{s}`"),
                Some(Successor::Minor(s)) => format!(
                    "; no newer CUDA {}.{} tag is supported, the nearest supported one is `nvidia/cuda:{s}`",
                    version.major, version.minor
                ),
                None => format!(
                    "; no supported CUDA {} tag of this shape is listed (data/nvidia-cuda-tags.tsv)",
                    version.major
                ),
            };
            notes.warnings.push(format!(
                "nvidia/cuda:{tag} is end-of-life; NVIDIA deletes EOL tags without notice (\"manifest unknown\"){hint}"
            ));
        }
        None => notes.warnings.push(format!(
            "nvidia/cuda:{tag} is not in the shipped tag list (data/nvidia-cuda-tags.tsv); check that NVIDIA publishes it"
        )),
    }
    Ok((
        Cuda {
            version,
            cudnn: cudnn.map(str::to_string),
            flavor: flavor.to_string(),
        },
        os,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seed_base_is_understood_and_flagged_eol() {
        let (b, notes) = parse("nvidia/cuda:12.1.0-cudnn8-devel-ubuntu22.04", None, None).unwrap();
        assert_eq!(b.slug(), "cuda12.1.0-cudnn8-devel-ubuntu22.04");
        assert_eq!(notes.warnings.len(), 1);
        assert!(
            notes.warnings[0].contains("12.1.1-cudnn8-devel-ubuntu22.04"),
            "{:?}",
            notes.warnings
        );
    }

    #[test]
    fn cudnn_token_must_match_cuda() {
        let e = parse("nvidia/cuda:12.4.1-cudnn9-devel-ubuntu22.04", None, None).unwrap_err();
        assert_eq!(e, "cuDNN token `cudnn9` does not match CUDA 12.4.1: NVIDIA tags it `cudnn` (`12.4.1-cudnn-devel-ubuntu22.04`)");
        assert!(parse("nvidia/cuda:12.4.1-cudnn-devel-ubuntu22.04", None, None).is_ok());
        assert!(parse("nvidia/cuda:12.3.2-cudnn9-devel-ubuntu22.04", None, None).is_ok());
    }

    #[test]
    fn plain_bases() {
        let (b, _) = parse("ubuntu:22.04", None, None).unwrap();
        assert_eq!(b.slug(), "ubuntu22.04");
        let (b, _) = parse("debian:bookworm-slim", None, None).unwrap();
        assert_eq!(b.slug(), "debian12");
        let (b, _) = parse("local/base:x", Some("debian12"), None).unwrap();
        assert_eq!(b.os.family, OsFamily::Debian);
        assert!(parse("local/base:x", None, None)
            .unwrap_err()
            .contains("`os`"));
        assert!(parse("ubuntu:18.04", None, None).is_err());
    }

    #[test]
    fn cuda_registry_is_replaced() {
        let (b, _) = parse(
            "nvidia/cuda:12.1.1-devel-ubuntu22.04",
            None,
            Some("nvcr.io/nvidia/cuda"),
        )
        .unwrap();
        assert_eq!(b.reference, "nvcr.io/nvidia/cuda:12.1.1-devel-ubuntu22.04");
        let (b, _) = parse(
            "harbor.corp/mirror/nvidia/cuda:12.1.1-devel-ubuntu22.04",
            None,
            None,
        )
        .unwrap();
        assert!(b.cuda.is_some());
    }
}
