//! `RawConfig`: a plain mirror of `matrix.yaml`, every value with its position.
//!
//! The walker reads the spanned YAML tree, checks each mapping against the keys it
//! knows (unknown keys get "did you mean"), refuses versions written as YAML numbers,
//! and keeps going after every problem so that all of them are reported at once. It
//! checks shapes only; meaning (is this a real installer? a valid tag?) is the
//! planner's job.

mod families;

use crate::config::yaml::Node;
use crate::coord::Key;

use crate::diag::{did_you_mean, Diags, Pos, Sp};
pub use families::{
    RawCheck, RawFamily, RawService, CHECK as CHECK_KEYS, FAMILY as FAMILY_KEYS,
    SERVICE as SERVICE_KEYS,
};

#[derive(Debug, Default)]
pub struct RawConfig {
    pub version: Option<Sp<String>>,
    pub image: RawImage,
    pub bases: Vec<RawBase>,
    pub python: Vec<RawPython>,
    pub miniconda: Option<Sp<String>>,
    pub platforms: Vec<Sp<String>>,
    pub variants: Vec<RawVariant>,
    pub include: Vec<RawRule>,
    pub exclude: Vec<RawRule>,
    pub installers: Vec<RawInstaller>,
    pub sources: RawSources,
    pub packages: RawPackages,
    pub runtime: RawRuntime,
    pub build: RawBuild,
    pub cache: RawCache,
    pub engines: Vec<RawEngine>,
    pub max_cells: Option<Sp<u64>>,
    /// The framework axes: PyTorch and TensorFlow releases, each built on every
    /// Miniconda cell.
    pub pytorch: Vec<Sp<String>>,
    pub tensorflow: Vec<Sp<String>>,
    /// Extra pip requirements of each framework layer (`tensorflow: {versions: [...],
    /// extra_pip: ["tensorrt==8.6.1"]}`).
    pub pytorch_extra_pip: Vec<Sp<String>>,
    pub tensorflow_extra_pip: Vec<Sp<String>>,
    /// The framework axes written as a mapping (their releases are `KEY.versions[i]`).
    pub framework_mappings: Vec<String>,
    /// User-defined image families (`families:`), in the order written.
    pub families: Vec<RawFamily>,
    /// Top-level keys present in the file, even when their value was unreadable.
    pub present: Vec<String>,
}

#[derive(Debug, Default)]
pub struct RawImage {
    pub repository: Option<Sp<String>>,
    pub tag: Option<Sp<String>>,
    /// Tag templates of the framework images.
    pub pytorch_tag: Option<Sp<String>>,
    pub tensorflow_tag: Option<Sp<String>>,
    /// Repositories of the framework images, when not `repository`.
    pub pytorch_repository: Option<Sp<String>>,
    pub tensorflow_repository: Option<Sp<String>>,
    pub aliases: Vec<Sp<String>>,
    pub latest: Option<RawRule>,
}

#[derive(Debug, Clone)]
pub struct RawBase {
    pub key: String,
    pub image: Sp<String>,
    pub os: Option<Sp<String>>,
}

#[derive(Debug, Clone)]
pub struct RawPython {
    pub key: String,
    pub version: Sp<String>,
    pub miniconda: Option<Sp<String>>,
}

#[derive(Debug, Clone)]
pub struct RawVariant {
    pub key: String,
    pub name: Sp<String>,
    pub pip: Vec<Sp<String>>,
    pub apt: Vec<Sp<String>>,
    /// Requirements that replace the common stack's pins for this variant.
    pub overrides: Vec<Sp<String>>,
}

/// A selector used by `include`, `exclude` and `image.latest`.
#[derive(Debug, Clone)]
pub struct RawRule {
    pub key: String,
    pub at: Pos,
    pub fields: Vec<(Key, Sp<String>)>,
    pub reason: Option<Sp<String>>,
}

#[derive(Debug, Clone)]
pub struct RawInstaller {
    pub key: String,
    pub file: Sp<String>,
    pub sha256: Sp<String>,
}

#[derive(Debug, Default)]
pub struct RawSources {
    pub installer_mirrors: Option<Vec<Sp<String>>>,
    /// Where `installer_mirrors` was written.
    pub installer_mirrors_at: Option<Pos>,
    pub installer_dir: Option<Sp<String>>,
    pub pip_index: Option<Sp<String>>,
    pub conda_channels: Vec<Sp<String>>,
    pub ca_bundle: Option<Sp<String>>,
    pub cuda_registry: Option<Sp<String>>,
    pub apt_mirror: Option<Sp<String>>,
    pub conda_tos: Option<Sp<String>>,
    /// Where PyTorch wheels come from: a list of variant index roots, or `pypi`.
    pub pytorch_index: Option<RawIndex>,
}

/// `sources.pytorch_index`: one word (`pypi`) or a list of index roots.
#[derive(Debug, Clone)]
pub enum RawIndex {
    Word(Sp<String>),
    List(Vec<Sp<String>>, Pos),
}

#[derive(Debug, Default)]
pub struct RawPackages {
    pub apt: Option<Vec<Sp<String>>>,
    pub pip: Option<Vec<Sp<String>>>,
}

#[derive(Debug, Default)]
pub struct RawRuntime {
    pub root_password: Option<Sp<String>>,
    pub fixed_password: Option<Sp<String>>,
    pub ssh_port: Option<Sp<u64>>,
    pub jupyter_port: Option<Sp<u64>>,
    pub tensorboard_port: Option<Sp<u64>>,
    pub jupyter_base_url: Option<Sp<String>>,
    pub tensorboard_prefix: Option<Sp<String>>,
    pub tensorboard_logdir: Option<Sp<String>>,
    pub tensorboard_bind: Option<Sp<String>>,
    pub timezone: Option<Sp<String>>,
    pub locale: Option<Sp<String>>,
}

/// One entry of `engines:`; exactly one of `host` and `context`.
#[derive(Debug, Clone)]
pub struct RawEngine {
    pub key: String,
    pub at: Pos,
    pub name: Option<Sp<String>>,
    pub host: Option<Sp<String>>,
    pub context: Option<Sp<String>>,
    pub jobs: Option<Sp<u64>>,
    pub platforms: Vec<Sp<String>>,
    pub buildx_builder: Option<Sp<String>>,
}

#[derive(Debug, Default)]
pub struct RawBuild {
    pub network: Option<Sp<String>>,
}

/// `cache:`: where builds take layer cache from, and whether images carry it inline.
#[derive(Debug, Default)]
pub struct RawCache {
    pub at: Option<Pos>,
    /// `registry` or image references, one or a list.
    pub from: Vec<Sp<String>>,
    pub inline: Option<Sp<String>>,
}

/// The keys each mapping of matrix.yaml accepts (the JSON Schema's types in
/// [`crate::config::schema`] are checked against these).
pub mod keys {
    pub const TOP: &[&str] = &[
        "version",
        "image",
        "bases",
        "python",
        "miniconda",
        "platforms",
        "variants",
        "include",
        "exclude",
        "installers",
        "sources",
        "packages",
        "runtime",
        "build",
        "cache",
        "engines",
        "limits",
        "pytorch",
        "tensorflow",
        "families",
    ];
    pub const IMAGE: &[&str] = &[
        "repository",
        "tag",
        "aliases",
        "latest",
        "pytorch_tag",
        "tensorflow_tag",
        "pytorch_repository",
        "tensorflow_repository",
    ];
    /// `pytorch:` / `tensorflow:` written as a mapping.
    pub const FRAMEWORK: &[&str] = &["versions", "extra_pip"];
    pub const BASE: &[&str] = &["image", "os"];
    pub const PYTHON: &[&str] = &["version", "miniconda"];
    pub const VARIANT: &[&str] = &["name", "pip", "apt", "override"];
    pub const ENGINE: &[&str] = &[
        "name",
        "host",
        "context",
        "jobs",
        "platforms",
        "buildx_builder",
    ];
    pub const INSTALLER: &[&str] = &["file", "sha256"];
    pub const SOURCES: &[&str] = &[
        "installer_mirrors",
        "installer_dir",
        "pip_index",
        "conda_channels",
        "ca_bundle",
        "cuda_registry",
        "apt_mirror",
        "conda_tos",
        "pytorch_index",
    ];
    pub const PACKAGES: &[&str] = &["apt", "pip"];
    pub const RUNTIME: &[&str] = &[
        "root_password",
        "ssh_port",
        "jupyter_port",
        "tensorboard_port",
        "jupyter_base_url",
        "tensorboard_prefix",
        "tensorboard_logdir",
        "tensorboard_bind",
        "timezone",
        "locale",
    ];
    pub const FIXED_PASSWORD: &[&str] = &["fixed"];
    pub const BUILD: &[&str] = &["network"];
    pub const CACHE: &[&str] = &["from", "inline"];
    pub const LIMITS: &[&str] = &["max_cells"];
}

/// Walk a parsed document. Problems go to `d`; the result holds whatever was readable.
pub fn walk(root: &Node, d: &mut Diags) -> RawConfig {
    let mut w = Walker {
        d,
        mapped: Vec::new(),
    };
    let mut cfg = RawConfig::default();
    let Some(top) = w.mapping(root, "", keys::TOP) else {
        return cfg;
    };
    for (k, v) in top.entries().unwrap_or_default() {
        cfg.present.push(k.text.clone());
        match k.text.as_str() {
            "version" => cfg.version = w.string(v, "version"),
            "image" => cfg.image = w.image(v),
            "bases" => {
                cfg.bases = w.list(v, "bases", |w, n, key| w.base(n, key));
            }
            "python" => cfg.python = w.list(v, "python", |w, n, key| w.python(n, key)),
            "miniconda" => cfg.miniconda = w.version(v, "miniconda"),
            "platforms" => {
                w.not_empty(
                    v,
                    "platforms",
                    "leave `platforms` out for the engines' own (linux/amd64)",
                );
                cfg.platforms = w.strings(v, "platforms");
            }
            "variants" => cfg.variants = w.list(v, "variants", |w, n, key| w.variant(n, key)),
            "include" => {
                cfg.include = w.list(v, "include", |w, n, key| {
                    w.rule(n, key, Key::INCLUDE, false)
                });
            }
            "exclude" => {
                cfg.exclude = w.list(v, "exclude", |w, n, key| w.rule(n, key, Key::RULE, true));
            }
            "installers" => {
                cfg.installers = w.list(v, "installers", |w, n, key| w.installer(n, key));
            }
            "sources" => cfg.sources = w.sources(v),
            "packages" => cfg.packages = w.packages(v),
            "runtime" => cfg.runtime = w.runtime(v),
            "build" => {
                if let Some(m) = w.mapping(v, "build", keys::BUILD) {
                    cfg.build.network = m.get("network").and_then(|n| w.string(n, "build.network"));
                }
            }
            "cache" => cfg.cache = w.cache(v),
            "engines" => cfg.engines = w.list(v, "engines", |w, n, key| w.engine(n, key)),
            "pytorch" => {
                (cfg.pytorch, cfg.pytorch_extra_pip) = w.framework(v, "pytorch");
            }
            "tensorflow" => {
                (cfg.tensorflow, cfg.tensorflow_extra_pip) = w.framework(v, "tensorflow");
            }
            "families" => cfg.families = w.list(v, "families", |w, n, key| w.family(n, key)),
            "limits" => {
                if let Some(m) = w.mapping(v, "limits", keys::LIMITS) {
                    cfg.max_cells = m
                        .get("max_cells")
                        .and_then(|n| w.uint(n, "limits.max_cells", 1, 1_000_000));
                }
            }
            _ => {}
        }
    }
    cfg.framework_mappings = w.mapped;
    cfg
}

struct Walker<'d> {
    d: &'d mut Diags,
    /// The framework axes written as a mapping.
    mapped: Vec<String>,
}

fn join(parent: &str, key: &str) -> String {
    if parent.is_empty() {
        key.to_string()
    } else {
        format!("{parent}.{key}")
    }
}

impl Walker<'_> {
    /// A mapping whose keys must come from `allowed`.
    fn mapping<'n>(&mut self, node: &'n Node, key: &str, allowed: &[&str]) -> Option<&'n Node> {
        let Some(entries) = node.entries() else {
            let what = if key.is_empty() {
                "the document".to_string()
            } else {
                format!("`{key}`")
            };
            self.d.error(
                Some(node.at()),
                "",
                format!(
                    "{what} must be a mapping with keys {}, not {}",
                    allowed.join(", "),
                    node.kind()
                ),
            );
            return None;
        };
        for (k, _) in entries {
            if !allowed.contains(&k.text.as_str()) {
                let place = if key.is_empty() {
                    "at the top level".to_string()
                } else {
                    format!("in `{key}`")
                };
                let hint = did_you_mean(&k.text, allowed)
                    .map(|s| format!("did you mean `{s}`? "))
                    .unwrap_or_default();
                self.d.error(
                    Some(k.at),
                    "",
                    format!(
                        "unknown key `{}` {place} ({hint}expected one of: {})",
                        k.text,
                        allowed.join(", ")
                    ),
                );
            }
        }
        Some(node)
    }

    fn seq<'n>(&mut self, node: &'n Node, key: &str) -> Option<&'n [Node]> {
        if let Some(s) = node.items() {
            return Some(s);
        }
        if !node.is_null() {
            self.d.error(
                Some(node.at()),
                key,
                format!("expected a list, found {}", node.kind()),
            );
        }
        None
    }

    fn list<T>(
        &mut self,
        node: &Node,
        key: &str,
        mut each: impl FnMut(&mut Self, &Node, String) -> Option<T>,
    ) -> Vec<T> {
        let Some(s) = self.seq(node, key) else {
            return Vec::new();
        };
        s.iter()
            .enumerate()
            .filter_map(|(i, n)| each(self, n, format!("{key}[{i}]")))
            .collect()
    }

    fn string(&mut self, node: &Node, key: &str) -> Option<Sp<String>> {
        match node.as_scalar() {
            Some(s) if !node.is_null() => Some(Sp::new(s.text.clone(), node.at())),
            _ => {
                self.d.error(
                    Some(node.at()),
                    key,
                    format!(
                        "expected a string, found {}",
                        if node.is_null() {
                            "nothing"
                        } else {
                            node.kind()
                        }
                    ),
                );
                None
            }
        }
    }

    /// A version string. An unquoted `3.10` is a YAML float (3.1 to most readers), so
    /// plain scalars that look like numbers are refused with a hint to quote them.
    fn version(&mut self, node: &Node, key: &str) -> Option<Sp<String>> {
        let v = self.string(node, key)?;
        if node.as_scalar().is_some_and(|s| s.plain) && v.value.parse::<f64>().is_ok() {
            let as_float = v
                .value
                .parse::<f64>()
                .map(|f| f.to_string())
                .unwrap_or_default();
            self.d.error(
                Some(v.at),
                key,
                format!(
                    "version {} is a YAML number (YAML reads it as {as_float}); quote it: \"{}\"",
                    v.value, v.value
                ),
            );
            return None;
        }
        Some(v)
    }

    fn strings(&mut self, node: &Node, key: &str) -> Vec<Sp<String>> {
        self.list(node, key, |w, n, k| w.string(n, &k))
    }

    /// An empty list where one means nothing: said, with what to write instead.
    fn not_empty(&mut self, node: &Node, key: &str, instead: &str) {
        if node.items().is_some_and(<[Node]>::is_empty) {
            self.d.error(
                Some(node.at()),
                key,
                format!("an empty list selects nothing; {instead}"),
            );
        }
    }

    /// Package names (pip requirements, apt packages): strings, and never a bare YAML
    /// number or boolean (`pip: [1, true]` is almost surely not the packages "1" and
    /// "true").
    fn package_names(&mut self, node: &Node, key: &str) -> Vec<Sp<String>> {
        self.list(node, key, |w, n, k| {
            let v = w.string(n, &k)?;
            let plain = n.as_scalar().is_some_and(|s| s.plain);
            let what = if v.value.parse::<f64>().is_ok() {
                Some("number")
            } else if matches!(
                v.value.to_ascii_lowercase().as_str(),
                "true" | "false" | "yes" | "no" | "on" | "off" | "null" | "~"
            ) {
                Some("boolean or null")
            } else {
                None
            };
            match what.filter(|_| plain) {
                Some(what) => {
                    w.d.error(
                        Some(v.at),
                        &k,
                        format!(
                            "`{}` is a YAML {what}, not a package name; quote it (\"{}\") if it is one",
                            v.value, v.value
                        ),
                    );
                    None
                }
                None => Some(v),
            }
        })
    }

    fn uint(&mut self, node: &Node, key: &str, min: u64, max: u64) -> Option<Sp<u64>> {
        let s = self.string(node, key)?;
        match s.value.parse::<u64>() {
            Ok(n) if (min..=max).contains(&n) => Some(Sp::new(n, s.at)),
            _ => {
                self.d.error(
                    Some(s.at),
                    key,
                    format!(
                        "expected a whole number from {min} to {max}, found `{}`",
                        s.value
                    ),
                );
                None
            }
        }
    }

    fn image(&mut self, node: &Node) -> RawImage {
        let mut out = RawImage::default();
        let Some(m) = self.mapping(node, "image", keys::IMAGE) else {
            return out;
        };
        for (k, v) in m.entries().unwrap_or_default() {
            match k.text.as_str() {
                "repository" => out.repository = self.string(v, "image.repository"),
                "tag" => out.tag = self.string(v, "image.tag"),
                "pytorch_tag" => out.pytorch_tag = self.string(v, "image.pytorch_tag"),
                "tensorflow_tag" => out.tensorflow_tag = self.string(v, "image.tensorflow_tag"),
                "pytorch_repository" => {
                    out.pytorch_repository = self.string(v, "image.pytorch_repository");
                }
                "tensorflow_repository" => {
                    out.tensorflow_repository = self.string(v, "image.tensorflow_repository");
                }
                "aliases" => out.aliases = self.strings(v, "image.aliases"),
                "latest" => out.latest = self.rule(v, "image.latest".into(), Key::RULE, false),
                _ => {}
            }
        }
        out
    }

    fn base(&mut self, node: &Node, key: String) -> Option<RawBase> {
        if node.as_scalar().is_some() {
            let image = self.string(node, &key)?;
            return Some(RawBase {
                key,
                image,
                os: None,
            });
        }
        let m = self.mapping(node, &key, keys::BASE)?;
        let image = match m.get("image") {
            Some(n) => self.string(n, &join(&key, "image"))?,
            None => {
                self.d.error(
                    Some(node.at()),
                    &key,
                    "a base needs `image` (a reference such as ubuntu:22.04)",
                );
                return None;
            }
        };
        let os = m.get("os").and_then(|n| self.string(n, &join(&key, "os")));
        Some(RawBase { key, image, os })
    }

    fn python(&mut self, node: &Node, key: String) -> Option<RawPython> {
        if node.as_scalar().is_some() {
            let version = self.version(node, &key)?;
            return Some(RawPython {
                key,
                version,
                miniconda: None,
            });
        }
        let m = self.mapping(node, &key, keys::PYTHON)?;
        let version = match m.get("version") {
            Some(n) => self.version(n, &join(&key, "version")),
            None => {
                self.d.error(
                    Some(node.at()),
                    &key,
                    "a python entry needs `version` (for example \"3.10\")",
                );
                None
            }
        };
        let miniconda = m
            .get("miniconda")
            .and_then(|n| self.version(n, &join(&key, "miniconda")));
        Some(RawPython {
            key,
            version: version?,
            miniconda,
        })
    }

    fn variant(&mut self, node: &Node, key: String) -> Option<RawVariant> {
        let m = self.mapping(node, &key, keys::VARIANT)?;
        let name = match m.get("name") {
            Some(n) => self.string(n, &join(&key, "name")),
            None => {
                self.d
                    .error(Some(node.at()), &key, "a variant needs `name`");
                None
            }
        };
        let pip = m
            .get("pip")
            .map(|n| self.package_names(n, &join(&key, "pip")))
            .unwrap_or_default();
        let apt = m
            .get("apt")
            .map(|n| self.package_names(n, &join(&key, "apt")))
            .unwrap_or_default();
        let overrides = m
            .get("override")
            .map(|n| self.strings(n, &join(&key, "override")))
            .unwrap_or_default();
        Some(RawVariant {
            key,
            name: name?,
            pip,
            apt,
            overrides,
        })
    }

    fn rule(
        &mut self,
        node: &Node,
        key: String,
        fields: &[Key],
        with_reason: bool,
    ) -> Option<RawRule> {
        let mut allowed: Vec<&str> = Key::names(fields);
        if with_reason {
            allowed.push("reason");
        }
        let m = self.mapping(node, &key, &allowed)?;
        let mut rule = RawRule {
            key: key.clone(),
            at: node.at(),
            fields: Vec::new(),
            reason: None,
        };
        for (k, v) in m.entries().unwrap_or_default() {
            let name = k.text.as_str();
            let child = join(&key, name);
            if name == "reason" && with_reason {
                rule.reason = self.string(v, &child);
            } else if let Some(f) = Key::parse(name).filter(|f| fields.contains(f)) {
                let value = if f.is_version() {
                    self.version(v, &child)
                } else {
                    self.string(v, &child)
                };
                if let Some(value) = value {
                    rule.fields.push((f, value));
                }
            }
        }
        if rule.fields.is_empty() {
            self.d.error(
                Some(rule.at),
                &key,
                format!(
                    "a selector needs at least one of: {}",
                    Key::names(fields).join(", ")
                ),
            );
            return None;
        }
        if with_reason && rule.reason.is_none() {
            self.d.error(
                Some(rule.at),
                &key,
                "every exclusion needs a `reason`, which `matrix plan` prints",
            );
        }
        Some(rule)
    }

    fn engine(&mut self, node: &Node, key: String) -> Option<RawEngine> {
        let m = self.mapping(node, &key, keys::ENGINE)?;
        let field = |w: &mut Self, f: &str| m.get(f).and_then(|n| w.string(n, &join(&key, f)));
        let name = field(self, "name");
        let host = field(self, "host");
        let context = field(self, "context");
        let jobs = m
            .get("jobs")
            .and_then(|n| self.uint(n, &join(&key, "jobs"), 1, 256));
        let platforms = m
            .get("platforms")
            .map(|n| self.strings(n, &join(&key, "platforms")))
            .unwrap_or_default();
        let buildx_builder = field(self, "buildx_builder");
        Some(RawEngine {
            platforms,
            buildx_builder,
            at: node.at(),
            key,
            name,
            host,
            context,
            jobs,
        })
    }

    fn cache(&mut self, node: &Node) -> RawCache {
        let mut out = RawCache {
            at: Some(node.at()),
            ..RawCache::default()
        };
        let Some(m) = self.mapping(node, "cache", keys::CACHE) else {
            return out;
        };
        if let Some(f) = m.get("from") {
            out.from = if f.items().is_some() {
                self.strings(f, "cache.from")
            } else {
                self.string(f, "cache.from").into_iter().collect()
            };
        }
        out.inline = m.get("inline").and_then(|n| self.string(n, "cache.inline"));
        out
    }

    fn installer(&mut self, node: &Node, key: String) -> Option<RawInstaller> {
        let m = self.mapping(node, &key, keys::INSTALLER)?;
        let file = m
            .get("file")
            .and_then(|n| self.string(n, &join(&key, "file")));
        let sha256 = m
            .get("sha256")
            .and_then(|n| self.string(n, &join(&key, "sha256")));
        match (file, sha256) {
            (Some(file), Some(sha256)) => Some(RawInstaller { key, file, sha256 }),
            _ => {
                self.d.error(
                    Some(node.at()),
                    &key,
                    "an installer entry needs both `file` and `sha256`",
                );
                None
            }
        }
    }

    fn sources(&mut self, node: &Node) -> RawSources {
        let mut out = RawSources::default();
        let Some(m) = self.mapping(node, "sources", keys::SOURCES) else {
            return out;
        };
        for (k, v) in m.entries().unwrap_or_default() {
            let key = join("sources", &k.text);
            match k.text.as_str() {
                "installer_mirrors" => {
                    out.installer_mirrors = Some(self.strings(v, &key));
                    out.installer_mirrors_at = Some(v.at());
                }
                "installer_dir" => out.installer_dir = self.string(v, &key),
                "pip_index" => out.pip_index = self.string(v, &key),
                "conda_channels" => out.conda_channels = self.strings(v, &key),
                "ca_bundle" => out.ca_bundle = self.string(v, &key),
                "cuda_registry" => out.cuda_registry = self.string(v, &key),
                "apt_mirror" => out.apt_mirror = self.string(v, &key),
                "conda_tos" => out.conda_tos = self.string(v, &key),
                "pytorch_index" => {
                    out.pytorch_index = if v.as_scalar().is_some() {
                        self.string(v, &key).map(RawIndex::Word)
                    } else {
                        Some(RawIndex::List(self.strings(v, &key), v.at()))
                    };
                }
                _ => {}
            }
        }
        out
    }

    /// A framework axis: its releases as a list (`pytorch: ["2.5.1"]`), or a mapping
    /// with them and the layer's extra pip requirements
    /// (`tensorflow: {versions: ["2.15.0"], extra_pip: ["tensorrt==8.6.1"]}`).
    fn framework(&mut self, node: &Node, key: &str) -> (Vec<Sp<String>>, Vec<Sp<String>>) {
        let family = if key == "pytorch" {
            "PyTorch"
        } else {
            "TensorFlow"
        };
        let none = format!("leave `{key}` out for no {family} images");
        if node.entries().is_none() {
            self.not_empty(node, key, &none);
            return (self.list(node, key, |w, n, k| w.version(n, &k)), Vec::new());
        }
        let Some(m) = self.mapping(node, key, keys::FRAMEWORK) else {
            return (Vec::new(), Vec::new());
        };
        self.mapped.push(key.to_string());
        let versions_key = join(key, "versions");
        let versions = match m.get("versions") {
            Some(n) => {
                self.not_empty(n, &versions_key, &none);
                self.list(n, &versions_key, |w, n, k| w.version(n, &k))
            }
            None => {
                self.d.error(
                    Some(node.at()),
                    key,
                    format!("`{key}` written as a mapping needs `versions` (its releases)"),
                );
                Vec::new()
            }
        };
        let extra = m
            .get("extra_pip")
            .map(|n| self.package_names(n, &join(key, "extra_pip")))
            .unwrap_or_default();
        (versions, extra)
    }

    fn packages(&mut self, node: &Node) -> RawPackages {
        let mut out = RawPackages::default();
        let Some(m) = self.mapping(node, "packages", keys::PACKAGES) else {
            return out;
        };
        if let Some(n) = m.get("apt") {
            out.apt = Some(self.package_names(n, "packages.apt"));
        }
        if let Some(n) = m.get("pip") {
            out.pip = Some(self.package_names(n, "packages.pip"));
        }
        out
    }

    fn runtime(&mut self, node: &Node) -> RawRuntime {
        let mut out = RawRuntime::default();
        let Some(m) = self.mapping(node, "runtime", keys::RUNTIME) else {
            return out;
        };
        for (k, v) in m.entries().unwrap_or_default() {
            let key = join("runtime", &k.text);
            match k.text.as_str() {
                "root_password" => {
                    if v.entries().is_some() {
                        if let Some(pm) = self.mapping(v, &key, keys::FIXED_PASSWORD) {
                            out.root_password = Some(Sp::new("fixed".into(), v.at()));
                            out.fixed_password = pm
                                .get("fixed")
                                .and_then(|n| self.string(n, &join(&key, "fixed")));
                        }
                    } else {
                        out.root_password = self.string(v, &key);
                    }
                }
                "ssh_port" => out.ssh_port = self.uint(v, &key, 1, 65535),
                "jupyter_port" => out.jupyter_port = self.uint(v, &key, 1, 65535),
                "tensorboard_port" => out.tensorboard_port = self.uint(v, &key, 1, 65535),
                "jupyter_base_url" => out.jupyter_base_url = self.string(v, &key),
                "tensorboard_prefix" => out.tensorboard_prefix = self.string(v, &key),
                "tensorboard_logdir" => out.tensorboard_logdir = self.string(v, &key),
                "tensorboard_bind" => out.tensorboard_bind = self.string(v, &key),
                "timezone" => out.timezone = self.string(v, &key),
                "locale" => out.locale = self.string(v, &key),
                _ => {}
            }
        }
        out
    }
}
