//! Image-wide settings: sources, packages and runtime defaults, validated.
//!
//! Every value here can reach the Dockerfile or a build script, so each is checked
//! against a strict character class (and, for time zones and locales, against the
//! real lists) before it is accepted. Anything that could word-split, inject shell
//! syntax or be read as an option is refused with the rule it broke.

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use crate::config::raw::RawConfig;
use crate::config::requirement::Requirement;
use crate::diag::{Diags, Sp};
use crate::reference;

pub const DEFAULT_MIRROR: &str = "https://repo.anaconda.com/miniconda/";
/// PyTorch's wheel indexes: `ROOT/cu124`, `ROOT/cpu`…
pub const DEFAULT_PYTORCH_INDEX: &str = "https://download.pytorch.org/whl/";
/// The Python package index, when `sources.pip_index` names none.
pub const PYPI: &str = "https://pypi.org/simple";
/// Tag templates of the framework images (the seed family's tags, without a separate
/// repository: `{torch}-python{python}-{base}` in a repository of its own reproduces
/// them exactly).
pub const DEFAULT_PYTORCH_TAG: &str = "pytorch{torch}-python{python}-{base}";
pub const DEFAULT_TENSORFLOW_TAG: &str = "tensorflow{tf}-python{python}-{base}";
/// Packages every image needs for its own features; always installed.
pub const REQUIRED_APT: &[&str] = &[
    "openssh-server",
    "locales",
    "tzdata",
    "curl",
    "ca-certificates",
    "supervisor",
];
/// The seed's tools plus git, git-lfs and ping; `packages.apt` replaces this list.
pub const DEFAULT_APT: &[&str] = &["vim", "tmux", "wget", "git", "git-lfs", "iputils-ping"];
/// The seed's pip list. numpy is pinned below 2.0 for older TensorBoard, as the seed
/// does, but only where such a numpy has wheels: not for Python 3.13 and later, whose
/// cells get numpy 2 (and a TensorBoard that works with it).
pub const DEFAULT_PIP: &[&str] = &[
    "numpy<2.0; python_version < \"3.13\"",
    "jupyterlab",
    "jupyterlab-language-pack-zh-CN",
    "jupyterlab_pygments",
    "tensorboard",
];

const TIMEZONES: &str = include_str!("../../data/timezones.txt");
const LOCALES: &str = include_str!("../../data/locales.txt");

#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(tag = "policy", rename_all = "lowercase")]
pub enum PasswordPolicy {
    /// A new password per container, printed once to its log.
    Random,
    /// No password login; keys only.
    Disabled,
    /// The same password for every container (the seed's 123456). Only its SHA-512
    /// crypt hash reaches the image.
    Fixed {
        #[serde(skip)]
        password: String,
    },
}

#[derive(Clone, Debug, serde::Serialize)]
pub struct Runtime {
    pub root_password: PasswordPolicy,
    pub ssh_port: u16,
    pub jupyter_port: u16,
    pub tensorboard_port: u16,
    pub jupyter_base_url: String,
    pub tensorboard_prefix: String,
    pub tensorboard_logdir: String,
    /// `all` (the default, as the seed serves it: reachable through `-p 6006:6006`)
    /// or `localhost` (only through `ssh -L` or `--network host`). TensorBoard has no
    /// authentication either way; the README and the MOTD say so.
    pub tensorboard_bind: String,
    pub timezone: String,
    pub locale: String,
}

/// Where the build fetches things from.
#[derive(Clone, Debug, Default, serde::Serialize)]
pub struct Sources {
    /// Installer mirrors, each ending in `/`, tried in order.
    pub mirrors: Vec<String>,
    pub installer_dir: Option<PathBuf>,
    pub pip_index: Option<String>,
    pub conda_channels: Vec<String>,
    pub ca_bundle: Option<PathBuf>,
    pub cuda_registry: Option<String>,
    /// A mirror root with Debian's and Ubuntu's layouts (`/debian`, `/debian-security`,
    /// `/ubuntu`, `/ubuntu-ports`), used for the build and kept in the image.
    pub apt_mirror: Option<String>,
    /// Anaconda's channel terms (Miniconda 25+): accepted in the image at build time,
    /// or left to the user (the default; the MOTD says how).
    pub conda_tos: CondaTos,
    /// Where PyTorch wheels come from.
    pub pytorch_index: TorchIndex,
}

/// Where PyTorch wheels come from.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum TorchIndex {
    /// Roots of PyTorch's per-variant indexes (each gets `cu124/`, `cpu/`…), tried in
    /// order: download.pytorch.org or mirrors of it.
    Variants(Vec<String>),
    /// The Python package index (`sources.pip_index`, else PyPI): one build per
    /// release, which the framework catalogue names.
    PackageIndex,
}

impl Default for TorchIndex {
    fn default() -> Self {
        TorchIndex::Variants(vec![DEFAULT_PYTORCH_INDEX.to_string()])
    }
}

impl Sources {
    /// The package index URL pip uses at build time.
    pub fn package_index(&self) -> &str {
        self.pip_index.as_deref().unwrap_or(PYPI)
    }
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum CondaTos {
    /// The image's users accept them (or use mirror channels); the MOTD says how.
    #[default]
    User,
    /// The release engineer accepts them for every user of the image, at build time.
    Accept,
}

#[derive(Clone, Debug, serde::Serialize)]
pub struct Settings {
    pub repository: String,
    pub tag_template: String,
    /// Tag templates of the PyTorch and TensorFlow images.
    pub pytorch_tag: String,
    pub tensorflow_tag: String,
    /// Repositories of the PyTorch and TensorFlow images, where they have their own
    /// (`image.pytorch_repository`); else they share `repository`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pytorch_repository: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tensorflow_repository: Option<String>,
    pub alias_templates: Vec<String>,
    pub sources: Sources,
    pub apt: Vec<String>,
    pub pip: Vec<String>,
    pub runtime: Runtime,
    pub network: Option<String>,
    /// The registry cache (`cache:`); transport only, so not part of any cell's inputs.
    #[serde(skip)]
    pub cache: Cache,
    /// Where to build (`engines:`); host-specific, so not part of any cell's inputs.
    #[serde(skip)]
    pub engines: Vec<crate::config::engine::EngineSpec>,
}

/// Where builds take layer cache from (`cache.from`, `--cache-from`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CacheFrom {
    /// Each cell's own image as `push` publishes it: its tag in the matrix's
    /// repository (a tag group member's platform tag).
    Registry,
    /// An image reference; `{tag}` in it stands for the cell's tag.
    Ref(String),
}

impl CacheFrom {
    /// The reference a cell takes cache from; `published` is the cell's own tag in its
    /// repository (`REPO:TAG`).
    pub fn resolve(&self, published: &str) -> String {
        match self {
            CacheFrom::Registry => published.to_string(),
            CacheFrom::Ref(r) => {
                let tag = crate::reference::split(published).1.unwrap_or("latest");
                r.replace("{tag}", tag)
            }
        }
    }
}

impl std::str::FromStr for CacheFrom {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        if s == "registry" {
            return Ok(CacheFrom::Registry);
        }
        crate::reference::check_reference(&s.replace("{tag}", "tag"))
            .map(|()| CacheFrom::Ref(s.to_string()))
            .map_err(|e| {
                format!("`{s}` is not a cache source ({e}; expected `registry` — each cell's published image — or an image reference such as registry.example.com/ml/cache:{{tag}})")
            })
    }
}

/// The registry cache of every build: sources to take layers from, and inline cache
/// metadata in what is built (so that the pushed images are the next run's cache).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Cache {
    pub from: Vec<CacheFrom>,
    pub inline: bool,
}

impl Cache {
    pub fn is_set(&self) -> bool {
        self.inline || !self.from.is_empty()
    }
}

/// Characters that never appear in any accepted value: they would split words or
/// start shell syntax if a value were ever expanded unquoted.
fn forbidden(c: char) -> bool {
    c.is_whitespace()
        || c.is_control()
        || matches!(
            c,
            '\'' | '"' | '`' | '$' | '\\' | ';' | '&' | '|' | '(' | ')' | '{' | '}'
        )
}

pub fn check_apt(s: &str) -> Result<(), String> {
    let (name, ver) = s.split_once('=').map_or((s, None), |(n, v)| (n, Some(v)));
    let name_ok = name.len() >= 2
        && name.as_bytes()[0].is_ascii_alphanumeric()
        && name.bytes().all(|c| {
            c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, b'+' | b'.' | b'-')
        });
    let ver_ok = ver.is_none_or(|v| {
        !v.is_empty()
            && v.bytes()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'.' | b'+' | b'~' | b':' | b'-'))
    });
    if name_ok && ver_ok {
        Ok(())
    } else {
        Err(format!("`{s}` is not a Debian package name (lowercase letters, digits, `+`, `.`, `-`; optionally `=VERSION`)"))
    }
}

/// A pip requirement: `NAME[extras]` with version clauses and, optionally, a marker on
/// the Python version (see [`Requirement`]).
pub fn check_pip(s: &str) -> Result<(), String> {
    Requirement::parse(s).map(|_| ())
}

/// An http(s) URL curl and pip take literally: a host (and port), a path, no fragment,
/// no brackets (curl would expand them as a glob), nothing a shell would act on.
pub fn check_url(s: &str) -> Result<(), String> {
    let bad = |why: &str| {
        Err(format!(
            "`{s}` is not a usable mirror URL: {why} (expected http(s)://HOST[:PORT]/PATH)"
        ))
    };
    let Some(rest) = s
        .strip_prefix("https://")
        .or_else(|| s.strip_prefix("http://"))
    else {
        return bad("it must start with https:// or http://");
    };
    if s.chars().any(forbidden) || s.contains(['<', '>']) {
        return bad("it holds spaces, quotes or shell characters");
    }
    if s.contains('#') {
        return bad("`#` starts a fragment, which is never sent to the server");
    }
    if s.contains(['[', ']']) {
        return bad("`[…]` would be expanded by curl as a URL glob");
    }
    let host = rest.split('/').next().unwrap_or_default();
    let name = match host.rsplit_once(':') {
        Some((h, p)) if !p.is_empty() && p.len() <= 5 && p.bytes().all(|c| c.is_ascii_digit()) => h,
        Some(_) => return bad("its port is not a number"),
        None => host,
    };
    let label_ok = |l: &str| {
        !l.is_empty()
            && l.bytes().all(|c| c.is_ascii_alphanumeric() || c == b'-')
            && !l.starts_with('-')
            && !l.ends_with('-')
    };
    if name.is_empty() || !name.split('.').all(label_ok) {
        return bad("it names no valid host");
    }
    Ok(())
}

fn check_url_path(s: &str, what: &str) -> Result<(), String> {
    if s.starts_with('/')
        && s.bytes()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'/' | b'_' | b'-' | b'.'))
        && !s.contains("..")
    {
        Ok(())
    } else {
        Err(format!("`{s}` is not a valid {what}: it must start with `/` and hold only ASCII letters, digits, `/`, `_`, `-`, `.`"))
    }
}

/// A Docker network name for `RUN` steps (`host`, `none`, a user network).
pub fn check_network(s: &str) -> Result<(), String> {
    check_word(s, "network name", b"._-")
}

fn check_word(s: &str, what: &str, extra: &[u8]) -> Result<(), String> {
    if !s.is_empty()
        && s.as_bytes()[0].is_ascii_alphanumeric()
        && s.bytes()
            .all(|c| c.is_ascii_alphanumeric() || extra.contains(&c))
    {
        Ok(())
    } else {
        let extra: String = extra
            .iter()
            .map(|c| format!("`{}`", *c as char))
            .collect::<Vec<_>>()
            .join(" ");
        Err(format!(
            "`{s}` is not a valid {what} (an ASCII letter or digit, then letters, digits and {extra})"
        ))
    }
}

/// A conda channel: a name (`conda-forge`, `pytorch/label/nightly`) or a URL.
pub fn check_channel(s: &str) -> Result<(), String> {
    if s.contains("://") {
        return check_url(s);
    }
    check_word(s, "conda channel name", b"._-/")
}

fn listed(
    list: &'static str,
    cache: &'static OnceLock<Vec<&'static str>>,
) -> &'static [&'static str] {
    cache.get_or_init(|| {
        list.lines()
            .filter(|l| !l.starts_with('#') && !l.is_empty())
            .collect()
    })
}

/// An IANA time zone name the image's tzdata knows (`Asia/Shanghai`, `UTC`).
pub fn check_timezone(s: &str) -> Result<(), String> {
    static ZONES: OnceLock<Vec<&'static str>> = OnceLock::new();
    let zones = listed(TIMEZONES, &ZONES);
    if zones.binary_search(&s).is_ok() {
        return Ok(());
    }
    let hint = crate::diag::did_you_mean(s, zones)
        .map(|z| format!("did you mean `{z}`? "))
        .unwrap_or_default();
    Err(format!(
        "`{s}` is not a time zone name ({hint}expected an IANA name such as Asia/Shanghai or UTC; data/timezones.txt lists them)"
    ))
}

/// A UTF-8 locale glibc can generate, written `ll_CC.UTF-8` (`zh_CN.UTF-8`).
pub fn check_locale(s: &str) -> Result<(), String> {
    static NAMES: OnceLock<Vec<&'static str>> = OnceLock::new();
    let shape = s.strip_suffix(".UTF-8").is_some_and(|l| {
        let (a, b) = l.split_once('_').unwrap_or(("", ""));
        (2..=3).contains(&a.len())
            && a.bytes().all(|c| c.is_ascii_lowercase())
            && b.len() == 2
            && b.bytes().all(|c| c.is_ascii_uppercase())
    });
    if shape && listed(LOCALES, &NAMES).binary_search(&s).is_ok() {
        return Ok(());
    }
    Err(format!(
        "`{s}` is not a UTF-8 locale glibc can generate (expected a name such as zh_CN.UTF-8 or en_US.UTF-8; data/locales.txt lists them)"
    ))
}

/// Read the image-wide settings. `dir` is the matrix file's folder, against which
/// relative paths are resolved.
pub fn read(raw: &RawConfig, dir: &Path, d: &mut Diags) -> Settings {
    let repository = raw.image.repository.as_ref().map_or_else(
        || "miniconda".to_string(),
        |r| {
            accept(
                r,
                "image.repository",
                reference::check_repository(&r.value),
                d,
            );
            r.value.clone()
        },
    );
    let tag_template = raw
        .image
        .tag
        .as_ref()
        .map_or("conda3-python{python}-{base}".to_string(), |t| {
            t.value.clone()
        });
    let apt = list(&raw.packages.apt, DEFAULT_APT, "packages.apt", check_apt, d);
    let pip = list(&raw.packages.pip, DEFAULT_PIP, "packages.pip", check_pip, d);
    let network = raw
        .build
        .network
        .as_ref()
        .filter(|n| accept(n, "build.network", check_network(&n.value), d))
        .map(|n| n.value.clone());
    Settings {
        repository,
        tag_template,
        pytorch_tag: raw
            .image
            .pytorch_tag
            .as_ref()
            .map_or(DEFAULT_PYTORCH_TAG.to_string(), |t| t.value.clone()),
        tensorflow_tag: raw
            .image
            .tensorflow_tag
            .as_ref()
            .map_or(DEFAULT_TENSORFLOW_TAG.to_string(), |t| t.value.clone()),
        pytorch_repository: family_repository(
            raw.image.pytorch_repository.as_ref(),
            "image.pytorch_repository",
            d,
        ),
        tensorflow_repository: family_repository(
            raw.image.tensorflow_repository.as_ref(),
            "image.tensorflow_repository",
            d,
        ),
        alias_templates: raw.image.aliases.iter().map(|a| a.value.clone()).collect(),
        sources: read_sources(raw, dir, d),
        apt,
        pip,
        runtime: read_runtime(raw, d),
        network,
        cache: read_cache(raw, d),
        engines: read_engines(raw, d),
    }
}

/// `cache:`: `from` (`registry` or references) and `inline` (default: true once
/// `cache:` is given, so that the images pushed are the next run's cache).
fn read_cache(raw: &RawConfig, d: &mut Diags) -> Cache {
    let c = &raw.cache;
    let mut out = Cache {
        from: Vec::new(),
        inline: c.at.is_some(),
    };
    for f in &c.from {
        match f.value.parse::<CacheFrom>() {
            Ok(v) if !out.from.contains(&v) => out.from.push(v),
            Ok(_) => {}
            Err(m) => d.error(Some(f.at), "cache.from", m),
        }
    }
    if let Some(i) = &c.inline {
        match i.value.as_str() {
            "true" => out.inline = true,
            "false" => out.inline = false,
            v => d.error(
                Some(i.at),
                "cache.inline",
                format!("`{v}` is not a yes/no value (expected true or false)"),
            ),
        }
    }
    out
}

/// Report a failed check at the value's place; whether it passed.
/// `image.pytorch_repository` / `image.tensorflow_repository`: a repository name.
fn family_repository(r: Option<&Sp<String>>, key: &str, d: &mut Diags) -> Option<String> {
    r.filter(|r| accept(r, key, reference::check_repository(&r.value), d))
        .map(|r| r.value.clone())
}

fn accept(v: &Sp<String>, key: &str, r: Result<(), String>, d: &mut Diags) -> bool {
    match r {
        Ok(()) => true,
        Err(e) => {
            d.error(Some(v.at), key, e);
            false
        }
    }
}

/// A list setting: the default when absent, else the valid entries (each invalid one
/// reported).
fn list(
    v: &Option<Vec<Sp<String>>>,
    dflt: &[&str],
    key: &str,
    f: fn(&str) -> Result<(), String>,
    d: &mut Diags,
) -> Vec<String> {
    match v {
        None => dflt.iter().map(|s| (*s).to_string()).collect(),
        Some(items) => items
            .iter()
            .filter(|i| accept(i, key, f(&i.value), d))
            .map(|i| i.value.clone())
            .collect(),
    }
}

fn read_sources(raw: &RawConfig, dir: &Path, d: &mut Diags) -> Sources {
    let src = &raw.sources;
    let mirrors = match &src.installer_mirrors {
        None => vec![DEFAULT_MIRROR.to_string()],
        Some(list) if list.is_empty() => {
            d.error(
                src.installer_mirrors_at,
                "sources.installer_mirrors",
                format!("an empty list leaves no way to fetch the installers; list at least one mirror (Anaconda's is {DEFAULT_MIRROR}) or use `sources.installer_dir`"),
            );
            Vec::new()
        }
        Some(list) => list
            .iter()
            .filter(|m| accept(m, "sources.installer_mirrors", check_url(&m.value), d))
            .map(|m| {
                if m.value.ends_with('/') {
                    m.value.clone()
                } else {
                    format!("{}/", m.value)
                }
            })
            .collect(),
    };
    let pip_index = src
        .pip_index
        .as_ref()
        .filter(|p| accept(p, "sources.pip_index", check_url(&p.value), d))
        .map(|p| p.value.clone());
    let conda_channels = src
        .conda_channels
        .iter()
        .filter(|c| accept(c, "sources.conda_channels", check_channel(&c.value), d))
        .map(|c| c.value.clone())
        .collect();
    let cuda_registry = src
        .cuda_registry
        .as_ref()
        .filter(|r| {
            let ok = reference::check_repository(&r.value)
                .map_err(|e| format!("{e} (a registry path such as nvcr.io/nvidia/cuda)"));
            accept(r, "sources.cuda_registry", ok, d)
        })
        .map(|r| r.value.clone());
    let installer_dir = src
        .installer_dir
        .as_ref()
        .and_then(|p| existing(dir, p, "sources.installer_dir", true, d));
    let ca_bundle = src.ca_bundle.as_ref().and_then(|p| {
        let path = existing(dir, p, "sources.ca_bundle", false, d)?;
        match std::fs::read_to_string(&path) {
            Ok(text) if text.contains("-----BEGIN CERTIFICATE-----") => Some(path),
            _ => {
                d.error(
                    Some(p.at),
                    "sources.ca_bundle",
                    format!(
                        "`{}` holds no PEM certificate (-----BEGIN CERTIFICATE-----)",
                        path.display()
                    ),
                );
                None
            }
        }
    });
    let apt_mirror = src
        .apt_mirror
        .as_ref()
        .filter(|m| accept(m, "sources.apt_mirror", check_url(&m.value), d))
        .map(|m| m.value.trim_end_matches('/').to_string());
    let conda_tos = match src.conda_tos.as_ref().map(|t| (t, t.value.as_str())) {
        None | Some((_, "user")) => CondaTos::User,
        Some((_, "accept")) => CondaTos::Accept,
        Some((t, other)) => {
            d.error(
                Some(t.at),
                "sources.conda_tos",
                format!("`{other}` is not a choice (expected one of: user, accept); `accept` accepts Anaconda's channel terms for every user of the image"),
            );
            CondaTos::User
        }
    };
    Sources {
        mirrors,
        installer_dir,
        pip_index,
        conda_channels,
        ca_bundle,
        cuda_registry,
        apt_mirror,
        conda_tos,
        pytorch_index: read_pytorch_index(src, d),
    }
}

/// `sources.pytorch_index`: `pypi`, or index roots (each must serve PyTorch's layout:
/// `ROOT/cu124/torch/`…).
fn read_pytorch_index(src: &crate::config::raw::RawSources, d: &mut Diags) -> TorchIndex {
    use crate::config::raw::RawIndex;
    match &src.pytorch_index {
        None => TorchIndex::default(),
        Some(RawIndex::Word(w)) if w.value == "pypi" => TorchIndex::PackageIndex,
        Some(RawIndex::Word(w)) => {
            d.error(
                Some(w.at),
                "sources.pytorch_index",
                format!("`{}` is not a choice: write `pypi` (the package index, which serves one build per release) or a list of index roots such as [\"{DEFAULT_PYTORCH_INDEX}\"]", w.value),
            );
            TorchIndex::default()
        }
        Some(RawIndex::List(list, at)) if list.is_empty() => {
            d.error(
                Some(*at),
                "sources.pytorch_index",
                format!("an empty list leaves no way to fetch PyTorch; list at least one index root (PyTorch's is {DEFAULT_PYTORCH_INDEX}) or write `pypi`"),
            );
            TorchIndex::default()
        }
        Some(RawIndex::List(list, _)) => TorchIndex::Variants(
            list.iter()
                .filter(|m| accept(m, "sources.pytorch_index", check_url(&m.value), d))
                .map(|m| format!("{}/", m.value.trim_end_matches('/')))
                .collect(),
        ),
    }
}

/// A path setting, resolved against the matrix's folder, that must exist.
fn existing(
    dir: &Path,
    p: &Sp<String>,
    key: &str,
    want_dir: bool,
    d: &mut Diags,
) -> Option<PathBuf> {
    let path = dir.join(&p.value);
    let ok = if want_dir {
        path.is_dir()
    } else {
        path.is_file()
    };
    if ok {
        return Some(path);
    }
    d.error(
        Some(p.at),
        key,
        format!(
            "{} `{}` does not exist",
            if want_dir { "directory" } else { "file" },
            path.display()
        ),
    );
    None
}

/// The engines a matrix file's text declares under `engines:` (each entry that reads
/// as valid; the rest of the file is not looked at), for a command that has no plan to
/// read them from. None when the text is not YAML.
pub fn declared_engines(text: &str, file: &str) -> Option<Vec<crate::config::engine::EngineSpec>> {
    let root = crate::config::yaml::parse(text).ok()?;
    let mut d = Diags::new(file);
    let raw = crate::config::raw::walk(&root, &mut d);
    Some(read_engines(&raw, &mut d))
}

fn read_engines(raw: &RawConfig, d: &mut Diags) -> Vec<crate::config::engine::EngineSpec> {
    use crate::config::engine::{check_name, parse_target, EngineSpec, Target};
    let mut out: Vec<EngineSpec> = Vec::new();
    for e in &raw.engines {
        let Some(name) = &e.name else {
            d.error(Some(e.at), &e.key, "an engine needs a `name`");
            continue;
        };
        if let Err(m) = check_name(&name.value) {
            d.error(Some(name.at), format!("{}.name", e.key), m);
            continue;
        }
        let (field, given) = match (&e.host, &e.context) {
            (Some(h), None) => ("host", h),
            (None, Some(c)) => ("context", c),
            _ => {
                d.error(
                    Some(e.at),
                    &e.key,
                    "an engine needs exactly one of `host` (a DOCKER_HOST URL) and `context` (a docker context name)",
                );
                continue;
            }
        };
        let target = match parse_target(&given.value) {
            Ok(t) if matches!(t, Target::Host(_)) == (field == "host") => t,
            _ => {
                let want = if field == "host" {
                    "a DOCKER_HOST URL (unix://, tcp://, ssh://, npipe://, fd://)"
                } else {
                    "a docker context name (letters, digits, `_`, `.`, `-`)"
                };
                d.error(
                    Some(given.at),
                    format!("{}.{field}", e.key),
                    format!("`{}` is not {want}", given.value),
                );
                continue;
            }
        };
        let mut platforms = Vec::new();
        for p in &e.platforms {
            match crate::config::engine::check_platform(&p.value) {
                Ok(p) if !platforms.contains(&p) => platforms.push(p),
                Ok(_) => {}
                Err(m) => d.error(Some(p.at), format!("{}.platforms", e.key), m),
            }
        }
        let buildx_builder = e.buildx_builder.as_ref().and_then(|b| {
            crate::config::engine::check_buildx_builder(&b.value)
                .map_err(|m| d.error(Some(b.at), format!("{}.buildx_builder", e.key), m))
                .ok()
        });
        let spec = EngineSpec {
            name: name.value.clone(),
            target,
            jobs: e.jobs.as_ref().and_then(|j| usize::try_from(j.value).ok()),
            platforms,
            buildx_builder,
        };
        let mut both = out.clone();
        both.push(spec.clone());
        if let Err(m) = crate::config::engine::check_unique(&both) {
            d.error(Some(e.at), &e.key, m);
            continue;
        }
        out.push(spec);
    }
    out
}

/// A text setting: the default when absent, else the value if it passes `f`.
fn text(
    v: &Option<Sp<String>>,
    key: &str,
    dflt: &str,
    f: &dyn Fn(&str) -> Result<(), String>,
    d: &mut Diags,
) -> String {
    match v {
        None => dflt.to_string(),
        Some(v) => match f(&v.value) {
            Ok(()) => v.value.clone(),
            Err(e) => {
                d.error(Some(v.at), key, e);
                dflt.to_string()
            }
        },
    }
}

fn read_runtime(raw: &RawConfig, d: &mut Diags) -> Runtime {
    let r = &raw.runtime;
    let (ssh_port, jupyter_port, tensorboard_port) = read_ports(raw, d);
    let mut jupyter_base_url = text(
        &r.jupyter_base_url,
        "runtime.jupyter_base_url",
        "/jupyter/",
        &|s| check_url_path(s, "URL path"),
        d,
    );
    if !jupyter_base_url.ends_with('/') {
        jupyter_base_url.push('/');
    }
    let tensorboard_prefix = text(
        &r.tensorboard_prefix,
        "runtime.tensorboard_prefix",
        "/monitor",
        &|s| {
            check_url_path(s, "URL path")?;
            if s.len() > 1 && s.ends_with('/') {
                return Err(format!(
                    "`{s}`: write the TensorBoard prefix without a trailing slash (`{}`)",
                    s.trim_end_matches('/')
                ));
            }
            Ok(())
        },
        d,
    );
    let tensorboard_logdir = text(
        &r.tensorboard_logdir,
        "runtime.tensorboard_logdir",
        "/root/tensorboard-logs",
        &|s| {
            check_url_path(s, "absolute path")?;
            let top = s.trim_end_matches('/');
            let system = ["/proc", "/sys", "/dev", "/etc", "/usr", "/bin", "/lib"]
                .iter()
                .any(|d| top == *d || top.starts_with(&format!("{d}/")));
            if top.is_empty() || system {
                return Err(format!(
                    "`{s}` is not a folder for logs: TensorBoard reads every file below it (and the boot script creates it); give a folder of its own such as /root/tensorboard-logs"
                ));
            }
            Ok(())
        },
        d,
    );
    let tensorboard_bind = text(
        &r.tensorboard_bind,
        "runtime.tensorboard_bind",
        "all",
        &|s| {
            match s {
            "localhost" | "all" => Ok(()),
            _ => Err(format!("`{s}` is not a bind policy (expected one of: all, localhost); TensorBoard has no authentication, so `all` (the default) exposes it to whoever reaches the port, and `localhost` keeps it inside the container")),
        }
        },
        d,
    );
    Runtime {
        root_password: read_password(raw, d),
        ssh_port,
        jupyter_port,
        tensorboard_port,
        jupyter_base_url,
        tensorboard_prefix,
        tensorboard_logdir,
        tensorboard_bind,
        timezone: text(
            &r.timezone,
            "runtime.timezone",
            "Asia/Shanghai",
            &check_timezone,
            d,
        ),
        locale: text(&r.locale, "runtime.locale", "zh_CN.UTF-8", &check_locale, d),
    }
}

/// The three service ports: each valid, and no two the same (the services could not
/// all listen).
fn read_ports(raw: &RawConfig, d: &mut Diags) -> (u16, u16, u16) {
    let r = &raw.runtime;
    let ports = [
        ("runtime.ssh_port", &r.ssh_port, 22u16),
        ("runtime.jupyter_port", &r.jupyter_port, 8888),
        ("runtime.tensorboard_port", &r.tensorboard_port, 6006),
    ];
    let value = |p: &Option<Sp<u64>>, dflt: u16| {
        p.as_ref()
            .and_then(|p| u16::try_from(p.value).ok())
            .unwrap_or(dflt)
    };
    let values: Vec<u16> = ports.iter().map(|(_, p, dflt)| value(p, *dflt)).collect();
    for i in 0..ports.len() {
        for j in 0..i {
            if values[i] == values[j] {
                let at = ports[i].1.as_ref().or(ports[j].1.as_ref()).map(|p| p.at);
                d.error(
                    at,
                    ports[i].0,
                    format!(
                        "port {} is also `{}`; sshd, JupyterLab and TensorBoard each need their own port",
                        values[i], ports[j].0
                    ),
                );
            }
        }
    }
    (values[0], values[1], values[2])
}

fn read_password(raw: &RawConfig, d: &mut Diags) -> PasswordPolicy {
    let r = &raw.runtime;
    let at = r.root_password.as_ref().map(|p| p.at);
    match r.root_password.as_ref().map(|p| p.value.as_str()) {
        None | Some("random") => PasswordPolicy::Random,
        Some("disabled") => PasswordPolicy::Disabled,
        Some("fixed") => match &r.fixed_password {
            Some(p) if !p.value.is_empty() && p.value.chars().all(|c| c.is_ascii_graphic()) => {
                d.warn(
                    Some(p.at),
                    "runtime.root_password.fixed",
                    "a fixed root password is the same in every container of every image; prefer `random` or pass ROOT_PASSWORD_FILE at run time (only its SHA-512 crypt hash goes into the image)",
                );
                PasswordPolicy::Fixed {
                    password: p.value.clone(),
                }
            }
            Some(p) => {
                d.error(
                    Some(p.at),
                    "runtime.root_password.fixed",
                    "a fixed password must be printable ASCII without spaces",
                );
                PasswordPolicy::Random
            }
            None => {
                d.error(
                    at,
                    "runtime.root_password",
                    "give the password as `root_password: {fixed: \"…\"}`",
                );
                PasswordPolicy::Random
            }
        },
        Some(other) => {
            d.error(at, "runtime.root_password", format!("unknown policy `{other}` (expected one of: random, disabled, {{fixed: \"…\"}})"));
            PasswordPolicy::Random
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pip_requirements() {
        for ok in [
            "numpy<2.0",
            "jupyterlab",
            "jupyterlab-language-pack-zh-CN",
            "torch==2.3.1",
            "a[b,c]>=1,<2",
            "x~=1.4.2",
        ] {
            assert!(check_pip(ok).is_ok(), "{ok}");
        }
        for bad in [
            "1 --index-url http://evil",
            "x==1;rm",
            "x @ https://e/x.whl",
            "-r req.txt",
            "x==$(id)",
            "x; sys_platform=='linux'",
            "x=1",
            "",
        ] {
            assert!(check_pip(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn apt_names() {
        assert!(check_apt("openssh-server").is_ok());
        assert!(check_apt("libstdc++6=12.2.0-14").is_ok());
        assert!(check_apt("vim;id").is_err());
        assert!(check_apt("Vim").is_err());
    }

    #[test]
    fn urls() {
        assert!(check_url("https://mirrors.tuna.tsinghua.edu.cn/anaconda/miniconda/").is_ok());
        assert!(check_url("http://127.0.0.1:8000/").is_ok());
        for bad in [
            "ftp://x/",
            "https://x/$(id)",
            "https://x/ y",
            "https://x/a#frag",
            "https://x/[a-b]/",
            "https:///path",
            "https://-x-/",
            "https://x:port/",
        ] {
            assert!(check_url(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn channels_zones_and_locales_are_checked_against_what_exists() {
        assert!(check_channel("conda-forge").is_ok());
        assert!(check_channel("https://mirrors.tuna.tsinghua.edu.cn/anaconda/pkgs/main").is_ok());
        assert!(check_channel("--set").is_err());
        assert!(check_timezone("Asia/Shanghai").is_ok());
        assert!(check_timezone("UTC").is_ok());
        assert!(check_timezone("/etc/shadow").is_err());
        let e = check_timezone("Asia/Shangai").unwrap_err();
        assert!(e.contains("did you mean `Asia/Shanghai`"), "{e}");
        assert!(check_timezone("Mars/Olympus_Mons").is_err());
        assert!(check_locale("zh_CN.UTF-8").is_ok());
        assert!(check_locale("en_US.UTF-8").is_ok());
        assert!(check_locale("zz_ZZ.UTF-8").is_err());
        assert!(check_locale("zh_CN.GB2312").is_err());
        assert!(check_network("host").is_ok());
        assert_eq!("registry".parse::<CacheFrom>(), Ok(CacheFrom::Registry));
        let r: CacheFrom = "reg.example:5000/ml/cache:{tag}".parse().unwrap();
        assert_eq!(
            r.resolve("reg.example:5000/ml/miniconda:conda3-py3.11"),
            "reg.example:5000/ml/cache:conda3-py3.11"
        );
        assert_eq!(
            CacheFrom::Registry.resolve("reg.example:5000/ml/miniconda:t"),
            "reg.example:5000/ml/miniconda:t"
        );
        let bad = "type=registry,ref=x".parse::<CacheFrom>().unwrap_err();
        assert!(bad.contains("expected `registry`"), "{bad}");
        assert!(check_network("host --privileged").is_err());
        assert!(check_network("-x").is_err());
    }

    #[test]
    fn tensorboard_serves_beyond_loopback_unless_the_matrix_closes_it() {
        let bind = |extra: &str| {
            let text = format!("version: 1\nbases: [ubuntu:22.04]\npython: [\"3.11\"]\n{extra}");
            crate::plan::plan_text(
                &text,
                "m.yaml",
                Path::new("."),
                &crate::plan::PlanOptions {
                    date: "20260101".into(),
                },
            )
            .map(|p| p.settings.runtime.tensorboard_bind.clone())
        };
        assert_eq!(
            bind("").unwrap(),
            "all",
            "the seed's -p 6006:6006 reaches it"
        );
        assert_eq!(
            bind("runtime:\n  tensorboard_bind: localhost\n").unwrap(),
            "localhost"
        );
        assert!(bind("runtime:\n  tensorboard_bind: 0.0.0.0\n").is_err());
    }

    #[test]
    fn the_engines_a_matrix_declares_are_read_without_the_rest_of_it() {
        use crate::config::engine::Target;
        let text = "version: 1\nbases: [ubuntu:22.04]\nunknown: x\nengines:\n  - {name: a, host: \"tcp://a:2375\"}\n  - {name: b, context: remote}\n  - {name: c, host: \"not a url\"}\n";
        let e = declared_engines(text, "m.yaml").unwrap();
        let got: Vec<(&str, &Target)> = e.iter().map(|s| (s.name.as_str(), &s.target)).collect();
        assert_eq!(
            got,
            [
                ("a", &Target::Host("tcp://a:2375".into())),
                ("b", &Target::Context("remote".into()))
            ],
            "an entry that is not valid declares nothing"
        );
        assert!(declared_engines("version: 1\n", "m.yaml")
            .unwrap()
            .is_empty());
        assert!(declared_engines("engines: [\n", "m.yaml").is_none());
    }
}
