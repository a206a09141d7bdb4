//! User-defined image families (`families:`): the trees release engineers keep on the
//! Miniconda images (an LLM server, a detection toolkit, a training stack), each a
//! layer on a parent — the Miniconda cells, a framework's images (`pytorch`,
//! `tensorflow`) or another family's — multiplied over the family's own releases.
//!
//! A family says what its layer adds (pip, conda and apt packages, package indexes,
//! environment, a script beside the matrix), the services it runs under the image's
//! supervisor (each on a port a variable can move), and the checks `verify` runs on
//! it. Every such image is a child cell: its id is its parent's plus `-NAMEVERSION`,
//! its identity covers its parent's, and its checks travel in its labels so that
//! `matrix verify IMAGE` checks it without the matrix.
//!
//! Invariants: families are grown parents first (a family's parent family before it;
//! a cycle is refused), and the cells come out in tree order (each cell, then its
//! children), so a parent is always planned — and built — before its children.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;

use serde::Serialize;

use crate::config::raw::{RawConfig, RawFamily};
use crate::config::requirement::Requirement;
use crate::config::settings::Settings;
use crate::coord::{Coordinate, Key};
use crate::diag::{Diags, Pos, Sp};
use crate::plan::family::Kind;
use crate::plan::{rule_matches, Cell, Excluded};

/// What a family builds on.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Parent {
    Miniconda,
    Framework(Kind),
    Family(String),
}

impl Parent {
    fn parse(s: &str) -> Parent {
        match s {
            "miniconda" => Parent::Miniconda,
            "pytorch" => Parent::Framework(Kind::Pytorch),
            "tensorflow" => Parent::Framework(Kind::Tensorflow),
            other => Parent::Family(other.to_string()),
        }
    }

    /// Whether a cell is of this kind (a family's parent).
    fn holds(&self, c: &Coordinate) -> bool {
        match self {
            Parent::Miniconda => c.framework.is_none() && c.family.is_none(),
            Parent::Framework(k) => c.framework.as_deref() == Some(k.name()) && c.family.is_none(),
            Parent::Family(n) => c.family.as_deref() == Some(n.as_str()),
        }
    }

    fn name(&self) -> &str {
        match self {
            Parent::Miniconda => "miniconda",
            Parent::Framework(k) => k.name(),
            Parent::Family(n) => n,
        }
    }
}

/// A service the layer runs under the image's supervisor.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, serde::Deserialize, schemars::JsonSchema)]
pub struct Service {
    pub name: String,
    /// Run by bash with the port in `port_env` (and the family's environment).
    pub command: String,
    /// The port it listens on unless `port_env` says another.
    pub port: u16,
    /// The variable that moves it (`docker run -e DEMO_PORT=…`).
    pub port_env: String,
}

/// A check `verify` runs on an image of the family.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, serde::Deserialize, schemars::JsonSchema)]
pub struct Check {
    /// A command run in the container by a login shell; it must exit 0.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub run: Option<String>,
    /// A service of the family that must answer on its port.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service: Option<String>,
    /// The HTTP path to GET from the service (status 200), instead of a TCP connect.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    /// Text the command's output or the response's body must contain.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expect: Option<String>,
}

/// What a family image carries for `verify` (its label): its services and checks.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, serde::Deserialize)]
pub struct Checks {
    pub services: Vec<Service>,
    pub checks: Vec<Check>,
}

/// A script beside the matrix, run as root in the layer.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, schemars::JsonSchema)]
pub struct Script {
    /// As written in the matrix (relative to it).
    pub file: String,
    pub sha256: String,
    #[serde(skip)]
    #[schemars(skip)]
    pub text: Arc<String>,
}

/// A family as the matrix defines it, checked.
#[derive(Clone, Debug)]
pub struct Def {
    pub name: String,
    pub key: String,
    pub parent: Parent,
    pub repository: String,
    pub tag: String,
    pub tag_at: Option<Pos>,
    pub versions: Vec<Sp<String>>,
    pub pip: Vec<String>,
    pub index_urls: Vec<String>,
    pub conda: Vec<String>,
    pub conda_channels: Vec<String>,
    pub apt: Vec<String>,
    pub env: Vec<(String, String)>,
    pub script: Option<Script>,
    pub services: Vec<Service>,
    pub checks: Vec<Check>,
}

/// What one family image installs on its parent, decided at plan time (`{version}`
/// filled in).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, schemars::JsonSchema)]
pub struct Layer {
    pub family: String,
    /// Its release on the family's own axis; None for a family without `versions`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub pip: Vec<String>,
    /// Indexes pip installs from, tried in order.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub index_urls: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conda: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conda_channels: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub apt: Vec<String>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub env: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub script: Option<Script>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub services: Vec<Service>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub checks: Vec<Check>,
    /// The id of the cell it builds on.
    pub parent: String,
    /// The parent's primary tag (what a hand-made build of the context is `FROM`).
    pub parent_tag: String,
    /// The family's repository and tag template.
    #[serde(skip)]
    #[schemars(skip)]
    pub naming: Arc<(String, String, Option<Pos>)>,
}

impl Layer {
    pub fn repository(&self) -> &str {
        &self.naming.0
    }

    pub fn tag_template(&self) -> &str {
        &self.naming.1
    }

    pub fn tag_at(&self) -> Option<Pos> {
        self.naming.2
    }

    /// What its image's label carries for `verify`.
    pub fn checks_label(&self) -> Checks {
        Checks {
            services: self.services.clone(),
            checks: self.checks.clone(),
        }
    }
}

/// Names a family may not take: the kinds of parent, and every placeholder a tag
/// template already has.
fn reserved(name: &str) -> bool {
    [
        "miniconda",
        "pytorch",
        "tensorflow",
        "none",
        "version",
        "py",
        "date",
        "tag",
        "base_name",
    ]
    .contains(&name)
        || Key::parse(name).is_some()
}

fn is_word(s: &str) -> bool {
    let mut ch = s.chars();
    ch.next().is_some_and(|c| c.is_ascii_lowercase())
        && ch.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
        && s.len() <= 32
}

fn is_env_name(s: &str) -> bool {
    let mut ch = s.chars();
    ch.next()
        .is_some_and(|c| c.is_ascii_uppercase() || c == '_')
        && ch.all(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || c == '_')
}

/// Variables the image itself sets or reads at boot: a family must not take them.
const IMAGE_VARIABLES: &[&str] = &[
    "PATH",
    "SSH_PORT",
    "JUPYTER_PORT",
    "TENSORBOARD_PORT",
    "TENSORBOARD_BIND",
    "ROOT_PASSWORD",
    "ROOT_PASSWORD_FILE",
    "JUPYTER_TOKEN",
    "JUPYTER_TOKEN_FILE",
    "SSH_AUTHORIZED_KEYS",
    "SSH_AUTHORIZED_KEYS_FILE",
    "LANG",
    "LC_ALL",
    "TZ",
];

/// Whether a variable's name says it holds a secret (an image's environment is read
/// by anyone who pulls it).
fn secret_name(s: &str) -> bool {
    [
        "PASSWORD",
        "PASSWD",
        "TOKEN",
        "SECRET",
        "CREDENTIAL",
        "PRIVATE",
    ]
    .iter()
    .any(|w| s.contains(w))
        || s.ends_with("_KEY")
        || s == "KEY"
}

/// The families as the matrix defines them, checked, parents first. `dir` is the
/// matrix's folder (scripts are read from beside it).
pub fn defs(raw: &RawConfig, s: &Settings, dir: &Path, d: &mut Diags) -> Vec<Arc<Def>> {
    let mut out: Vec<Def> = Vec::new();
    for f in &raw.families {
        if let Some(def) = def(raw, f, s, dir, &out, d) {
            out.push(def);
        }
    }
    order(out, raw, d).into_iter().map(Arc::new).collect()
}

/// A family's name and parent, checked: a word no coordinate has, defined once, on a
/// parent that exists.
fn name_and_parent(raw: &RawConfig, f: &RawFamily, seen: &[Def], d: &mut Diags) -> Option<Parent> {
    let name = &f.name.value;
    let key = &f.key;
    if !is_word(name) || reserved(name) {
        d.error(
            Some(f.name.at),
            format!("{key}.name"),
            format!(
                "`{name}` cannot name a family: write a lowercase word of letters, digits and `_` (at most 32), not a coordinate or placeholder name (python, base, torch, version, …) nor miniconda, pytorch, tensorflow, none"
            ),
        );
        return None;
    }
    if seen.iter().any(|x| &x.name == name) {
        d.error(
            Some(f.name.at),
            format!("{key}.name"),
            format!("family `{name}` is defined twice"),
        );
        return None;
    }
    let parent = f
        .parent
        .as_ref()
        .map_or(Parent::Miniconda, |p| Parent::parse(&p.value));
    if let (Parent::Family(p), Some(at)) = (&parent, f.parent.as_ref()) {
        if !raw.families.iter().any(|x| &x.name.value == p) {
            let mut known: Vec<&str> = vec!["miniconda", "pytorch", "tensorflow"];
            known.extend(raw.families.iter().map(|x| x.name.value.as_str()));
            let hint = crate::diag::did_you_mean(p, &known)
                .map(|h| format!("did you mean `{h}`? "))
                .unwrap_or_default();
            d.error(
                Some(at.at),
                format!("{key}.parent"),
                format!(
                    "no family `{p}` to build on ({hint}expected one of: {})",
                    known.join(", ")
                ),
            );
            return None;
        }
        if p == name {
            d.error(
                Some(at.at),
                format!("{key}.parent"),
                "a family cannot build on itself",
            );
            return None;
        }
    }
    Some(parent)
}

fn def(
    raw: &RawConfig,
    f: &RawFamily,
    s: &Settings,
    dir: &Path,
    seen: &[Def],
    d: &mut Diags,
) -> Option<Def> {
    let name = &f.name.value;
    let key = &f.key;
    // a bad name or parent is said, and the rest is still checked
    let named = name_and_parent(raw, f, seen, d);
    let parent = named.clone().unwrap_or(Parent::Miniconda);
    let versioned = !f.versions.is_empty();
    let mut ok = versions_ok(f, d) && named.is_some();
    let packages = |list: &[Sp<String>], what: &str, d: &mut Diags, ok: &mut bool| {
        list.iter()
            .enumerate()
            .map(|(i, p)| {
                if p.value.contains("{version}") && !versioned {
                    *ok = false;
                    d.error(
                        Some(p.at),
                        format!("{key}.{what}[{i}]"),
                        "`{version}` needs the family's `versions`",
                    );
                }
                if what == "pip" {
                    let probe = p.value.replace("{version}", "1.0");
                    if let Err(e) = Requirement::parse(&probe) {
                        *ok = false;
                        d.error(Some(p.at), format!("{key}.pip[{i}]"), e);
                    }
                }
                p.value.clone()
            })
            .collect::<Vec<_>>()
    };
    let pip = packages(&f.pip, "pip", d, &mut ok);
    let conda = packages(&f.conda, "conda", d, &mut ok);
    let apt = packages(&f.apt, "apt", d, &mut ok);
    let env = env(f, versioned, d, &mut ok);
    let services = services(f, d, &mut ok);
    let checks = checks(f, &services, d, &mut ok);
    let script = f.script.as_ref().and_then(|p| script(p, key, dir, d));
    if f.script.is_some() && script.is_none() {
        ok = false;
    }
    if pip.is_empty()
        && conda.is_empty()
        && apt.is_empty()
        && script.is_none()
        && services.is_empty()
    {
        d.error(
            Some(f.at),
            key.as_str(),
            format!("family `{name}` adds nothing: give it `pip`, `conda`, `apt`, a `script` or `services`"),
        );
        ok = false;
    }
    let lineage = lineage(&parent, seen, raw);
    let tag = f
        .tag
        .as_ref()
        .map_or_else(|| default_tag(versioned, &lineage), |t| t.value.clone());
    let mut allowed = crate::plan::tags::template_keys(false);
    if versioned {
        allowed.push("version");
    }
    allowed.extend(lineage.keys.iter().copied());
    let names: Vec<String> = lineage.families.clone();
    let mut allowed: Vec<&str> = allowed;
    allowed.extend(names.iter().map(String::as_str));
    crate::plan::tags::check_template(f.tag.as_ref(), &tag, &format!("{key}.tag"), &allowed, d);
    if let Some(r) = &f.repository {
        if let Err(e) = crate::reference::check_repository(&r.value) {
            d.error(Some(r.at), format!("{key}.repository"), e);
            ok = false;
        }
    }
    let index_urls = if f.index_urls.is_empty() {
        vec![s.sources.package_index().to_string()]
    } else {
        f.index_urls.iter().map(|u| u.value.clone()).collect()
    };
    let conda_channels = if f.conda_channels.is_empty() {
        s.sources.conda_channels.clone()
    } else {
        f.conda_channels.iter().map(|u| u.value.clone()).collect()
    };
    ok.then(|| Def {
        name: name.clone(),
        key: key.clone(),
        parent,
        repository: f
            .repository
            .as_ref()
            .map_or_else(|| name.clone(), |r| r.value.clone()),
        tag,
        tag_at: f.tag.as_ref().map(|t| t.at),
        versions: f.versions.clone(),
        pip,
        index_urls,
        conda,
        conda_channels,
        apt,
        env,
        script,
        services,
        checks,
    })
}

fn versions_ok(f: &RawFamily, d: &mut Diags) -> bool {
    let mut ok = true;
    for (i, v) in f.versions.iter().enumerate() {
        let valid = !v.value.is_empty()
            && v.value.len() <= 64
            && v.value
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_' | '+'))
            && v.value
                .chars()
                .next()
                .is_some_and(|c| c.is_ascii_alphanumeric());
        if !valid {
            ok = false;
            d.error(
                Some(v.at),
                format!("{}.versions[{i}]", f.key),
                format!(
                    "`{}` is not a release a tag can carry: letters, digits and . - _ + (at most 64)",
                    v.value
                ),
            );
        } else if f.versions[..i].iter().any(|x| x.value == v.value) {
            ok = false;
            d.error(
                Some(v.at),
                format!("{}.versions[{i}]", f.key),
                format!("release {} is listed twice", v.value),
            );
        }
    }
    ok
}

fn env(f: &RawFamily, versioned: bool, d: &mut Diags, ok: &mut bool) -> Vec<(String, String)> {
    let mut out: Vec<(String, String)> = Vec::new();
    for (k, v) in &f.env {
        let key = format!("{}.env.{}", f.key, k.value);
        let bad = if !is_env_name(&k.value) {
            Some("a variable's name is uppercase letters, digits and `_`".to_string())
        } else if IMAGE_VARIABLES.contains(&k.value.as_str()) {
            Some(format!(
                "{} is the image's own; a family cannot set it",
                k.value
            ))
        } else if secret_name(&k.value) {
            Some(format!(
                "{} looks like a secret, and an image's environment is read by anyone who pulls it; pass it at `docker run -e` instead",
                k.value
            ))
        } else if v.value.contains("{version}") && !versioned {
            Some("`{version}` needs the family's `versions`".to_string())
        } else if v.value.contains('\n') {
            Some("a value is one line".to_string())
        } else {
            None
        };
        if let Some(msg) = bad {
            *ok = false;
            d.error(Some(k.at), key, msg);
            continue;
        }
        out.push((k.value.clone(), v.value.clone()));
    }
    out
}

fn services(f: &RawFamily, d: &mut Diags, ok: &mut bool) -> Vec<Service> {
    let mut out: Vec<Service> = Vec::new();
    for s in &f.services {
        let name = &s.name.value;
        let port_env = s.port_env.as_ref().map_or_else(
            || format!("{}_PORT", name.to_ascii_uppercase().replace('-', "_")),
            |p| p.value.clone(),
        );
        let at = s.port_env.as_ref().map_or(s.name.at, |p| p.at);
        let bad = if !is_word(&name.replace('-', "_")) {
            Some((
                s.name.at,
                "a service's name is a lowercase word (letters, digits, `-`, `_`)".to_string(),
            ))
        } else if out.iter().any(|o| &o.name == name) {
            Some((s.name.at, format!("service `{name}` is listed twice")))
        } else if !is_env_name(&port_env) || IMAGE_VARIABLES.contains(&port_env.as_str()) {
            Some((
                at,
                format!("`{port_env}` cannot be the service's port variable: an uppercase name the image does not use itself (not SSH_PORT, JUPYTER_PORT, TENSORBOARD_PORT)"),
            ))
        } else if [22, 8888, 6006].contains(&s.port.value) {
            Some((
                s.port.at,
                format!(
                    "port {} is the image's own (sshd 22, JupyterLab 8888, TensorBoard 6006)",
                    s.port.value
                ),
            ))
        } else {
            None
        };
        if let Some((at, msg)) = bad {
            *ok = false;
            d.error(Some(at), s.key.as_str(), msg);
            continue;
        }
        out.push(Service {
            name: name.clone(),
            command: s.command.value.clone(),
            port: u16::try_from(s.port.value).unwrap_or(u16::MAX),
            port_env,
        });
    }
    out
}

fn checks(f: &RawFamily, services: &[Service], d: &mut Diags, ok: &mut bool) -> Vec<Check> {
    let mut out = Vec::new();
    for c in &f.checks {
        if let Some(s) = &c.service {
            if !services.iter().any(|x| x.name == s.value) {
                *ok = false;
                let known: Vec<&str> = services.iter().map(|x| x.name.as_str()).collect();
                d.error(
                    Some(s.at),
                    format!("{}.service", c.key),
                    format!(
                        "family `{}` has no service `{}` ({})",
                        f.name.value,
                        s.value,
                        if known.is_empty() {
                            "it has none".to_string()
                        } else {
                            format!("expected one of: {}", known.join(", "))
                        }
                    ),
                );
                continue;
            }
        }
        if let Some(p) = c.path.as_ref().filter(|p| !p.value.starts_with('/')) {
            *ok = false;
            d.error(
                Some(p.at),
                format!("{}.path", c.key),
                "an HTTP path starts with `/`",
            );
            continue;
        }
        out.push(Check {
            run: c.run.as_ref().map(|r| r.value.clone()),
            service: c.service.as_ref().map(|r| r.value.clone()),
            path: c.path.as_ref().map(|r| r.value.clone()),
            expect: c.expect.as_ref().map(|r| r.value.clone()),
        });
    }
    out
}

/// The largest script a family may carry.
const MAX_SCRIPT: u64 = 1024 * 1024;

fn script(p: &Sp<String>, key: &str, dir: &Path, d: &mut Diags) -> Option<Script> {
    let path = dir.join(&p.value);
    let read = std::fs::metadata(&path)
        .map_err(|e| e.to_string())
        .and_then(|m| {
            if !m.is_file() {
                Err("not a regular file".to_string())
            } else if m.len() > MAX_SCRIPT {
                Err(format!(
                    "{} bytes, over the 1 MiB a script may have",
                    m.len()
                ))
            } else {
                std::fs::read_to_string(&path).map_err(|e| e.to_string())
            }
        });
    match read {
        Ok(text) => {
            use sha2::Digest;
            Some(Script {
                file: p.value.clone(),
                sha256: crate::plan::hex(&sha2::Sha256::digest(text.as_bytes())),
                text: Arc::new(text),
            })
        }
        Err(e) => {
            d.error(
                Some(p.at),
                format!("{key}.script"),
                format!(
                    "cannot read the script {} ({e}); a family's script is a text file, its path relative to the matrix",
                    path.display()
                ),
            );
            None
        }
    }
}

/// What the families above a family bring to its tag templates.
struct Lineage {
    /// Framework placeholders (`torch`, `cuda_wheel`) when a framework is an ancestor.
    keys: Vec<&'static str>,
    /// Ancestor families, nearest first.
    families: Vec<String>,
    framework: Option<Kind>,
}

fn lineage(parent: &Parent, seen: &[Def], raw: &RawConfig) -> Lineage {
    let mut out = Lineage {
        keys: Vec::new(),
        families: Vec::new(),
        framework: None,
    };
    let mut p = parent.clone();
    // a cycle is refused by `order`; the walk stops after as many steps as families
    for _ in 0..=raw.families.len() {
        match p {
            Parent::Miniconda => break,
            Parent::Framework(k) => {
                out.framework = Some(k);
                out.keys.push(k.key().name());
                out.keys.push(Key::CudaWheel.name());
                break;
            }
            Parent::Family(ref n) => {
                if out.families.contains(n) {
                    break;
                }
                out.families.push(n.clone());
                let next = seen.iter().find(|d| &d.name == n).map(|d| d.parent.clone());
                let next = next.or_else(|| {
                    raw.families.iter().find(|f| &f.name.value == n).map(|f| {
                        f.parent
                            .as_ref()
                            .map_or(Parent::Miniconda, |p| Parent::parse(&p.value))
                    })
                });
                match next {
                    Some(x) => p = x,
                    None => break,
                }
            }
        }
    }
    out
}

/// `{version}-python{python}-{base}`, with `torch{torch}` (or `tf{tf}`) and each
/// ancestor family's release where they are.
fn default_tag(versioned: bool, l: &Lineage) -> String {
    let mut parts: Vec<String> = Vec::new();
    if versioned {
        parts.push("{version}".into());
    }
    for f in &l.families {
        parts.push(format!("{f}{{{f}}}"));
    }
    match l.framework {
        Some(Kind::Pytorch) => parts.push("torch{torch}".into()),
        Some(Kind::Tensorflow) => parts.push("tf{tf}".into()),
        None => {}
    }
    parts.push("python{python}".into());
    parts.push("{base}".into());
    parts.join("-")
}

/// Parents first; a cycle is an error at each family on it.
fn order(mut defs: Vec<Def>, raw: &RawConfig, d: &mut Diags) -> Vec<Def> {
    let mut out: Vec<Def> = Vec::with_capacity(defs.len());
    while !defs.is_empty() {
        let ready = defs.iter().position(|x| match &x.parent {
            Parent::Family(p) => out.iter().any(|o| &o.name == p),
            _ => true,
        });
        match ready {
            Some(i) => out.push(defs.remove(i)),
            None => {
                for x in &defs {
                    let at = raw
                        .families
                        .iter()
                        .find(|f| f.name.value == x.name)
                        .and_then(|f| f.parent.as_ref().map(|p| p.at));
                    let known = raw.families.iter().any(|f| match &x.parent {
                        Parent::Family(p) => &f.name.value == p,
                        _ => false,
                    });
                    let msg = if known {
                        format!(
                            "family `{}` builds on `{}`, which builds on it again (a cycle)",
                            x.name,
                            x.parent.name()
                        )
                    } else {
                        format!(
                            "family `{}` builds on `{}`, which was refused above",
                            x.name,
                            x.parent.name()
                        )
                    };
                    d.error(at, format!("{}.parent", x.key), msg);
                }
                break;
            }
        }
    }
    out
}

/// A family's releases, each one image per parent (one, unversioned, without
/// `versions`).
fn releases(def: &Def) -> Vec<Option<&str>> {
    if def.versions.is_empty() {
        vec![None]
    } else {
        def.versions
            .iter()
            .map(|v| Some(v.value.as_str()))
            .collect()
    }
}

/// `py3.11-debian12-amd64-yolo8.3.0`.
pub fn child_id(parent: &str, def: &Def, version: Option<&str>) -> String {
    format!("{parent}-{}{}", def.name, version.unwrap_or_default())
}

fn child_coordinate(parent: &Coordinate, def: &Def, version: Option<&str>) -> Coordinate {
    let mut families = parent.families.clone();
    families.insert(def.name.clone(), version.unwrap_or_default().to_string());
    Coordinate {
        family: Some(def.name.clone()),
        families,
        ..parent.clone()
    }
}

fn layer(parent: &Cell, def: &Def, version: Option<&str>) -> Layer {
    let fill = |s: &str| match version {
        Some(v) => s.replace("{version}", v),
        None => s.to_string(),
    };
    let python = parent.python.to_string();
    let pip = def
        .pip
        .iter()
        .map(|p| fill(p))
        .filter(|p| Requirement::parse(p).map_or(true, |r| r.applies_to(&python)))
        .map(|p| Requirement::parse(&p).map_or(p, |r| r.spec))
        .collect();
    Layer {
        family: def.name.clone(),
        version: version.map(str::to_string),
        pip,
        index_urls: def.index_urls.clone(),
        conda: def.conda.iter().map(|p| fill(p)).collect(),
        conda_channels: if def.conda.is_empty() {
            Vec::new()
        } else {
            def.conda_channels.clone()
        },
        apt: def.apt.iter().map(|p| fill(p)).collect(),
        env: def.env.iter().map(|(k, v)| (k.clone(), fill(v))).collect(),
        script: def.script.clone(),
        services: def
            .services
            .iter()
            .map(|x| Service {
                command: fill(&x.command),
                ..x.clone()
            })
            .collect(),
        checks: def
            .checks
            .iter()
            .map(|x| Check {
                run: x.run.as_deref().map(fill),
                expect: x.expect.as_deref().map(fill),
                ..x.clone()
            })
            .collect(),
        parent: parent.id.clone(),
        parent_tag: String::new(),
        naming: Arc::new((def.repository.clone(), def.tag.clone(), def.tag_at)),
    }
}

/// Grow every family on the cells of its parent kind (families parents first), and
/// put the cells in tree order. Children matched by an exclusion are excluded.
pub fn grow(
    cells: Vec<Cell>,
    defs: &[Arc<Def>],
    raw: &RawConfig,
    d: &mut Diags,
) -> (Vec<Cell>, Vec<Excluded>) {
    if defs.is_empty() {
        return (cells, Vec::new());
    }
    let mut hits = vec![0usize; raw.exclude.len()];
    let mut excluded = Vec::new();
    let mut all = cells;
    for def in defs {
        let mut grown = Vec::new();
        let mut parents = 0;
        for parent in all.iter().filter(|c| def.parent.holds(&c.coord)) {
            parents += 1;
            let versions = releases(def);
            for v in versions {
                let coord = child_coordinate(&parent.coord, def, v);
                let id = child_id(&parent.id, def, v);
                if let Some((i, rule)) = raw
                    .exclude
                    .iter()
                    .enumerate()
                    .find(|(_, r)| rule_matches(r, &coord))
                {
                    hits[i] += 1;
                    excluded.push(Excluded::by_rule(id, coord, rule));
                    continue;
                }
                grown.push(Cell {
                    id,
                    coord,
                    framework: None,
                    custom: Some(Box::new(layer(parent, def, v))),
                    group: None,
                    tags: Vec::new(),
                    ..parent.clone()
                });
            }
        }
        if parents == 0 {
            let at = raw
                .families
                .iter()
                .find(|f| f.name.value == def.name)
                .map(|f| f.parent.as_ref().map_or(f.at, |p| p.at));
            d.warn(
                at,
                format!("{}.parent", def.key),
                format!(
                    "family `{}` has no images: no planned image is a `{}` image",
                    def.name,
                    def.parent.name()
                ),
            );
        }
        all.extend(grown);
    }
    for (n, rule) in hits.iter().zip(&raw.exclude) {
        if *n == 0 && rule.fields.iter().any(|(k, _)| *k == Key::Family) {
            d.warn(Some(rule.at), &rule.key, "this exclusion matches no cell");
        }
    }
    (tree_order(all), excluded)
}

/// Each cell followed by its children (in the order they were made), from the roots
/// in their order.
pub fn tree_order(cells: Vec<Cell>) -> Vec<Cell> {
    let index: crate::plan::fast::FastMap<String, usize> = cells
        .iter()
        .enumerate()
        .map(|(i, c)| (c.id.clone(), i))
        .collect();
    let mut children: Vec<Vec<usize>> = vec![Vec::new(); cells.len()];
    let mut roots = Vec::new();
    for (i, c) in cells.iter().enumerate() {
        match c.parent().and_then(|p| index.get(p)) {
            Some(&p) => children[p].push(i),
            None => roots.push(i),
        }
    }
    let mut order = Vec::with_capacity(cells.len());
    let mut stack: Vec<usize> = roots.into_iter().rev().collect();
    while let Some(i) = stack.pop() {
        order.push(i);
        stack.extend(children[i].iter().rev());
    }
    let mut slots: Vec<Option<Cell>> = cells.into_iter().map(Some).collect();
    order.into_iter().filter_map(|i| slots[i].take()).collect()
}

/// The family images an excluded cell would have had (and theirs), listed as
/// excluded with it.
pub fn children_of_excluded(excluded: &[Excluded], defs: &[Arc<Def>]) -> Vec<Excluded> {
    let mut out: Vec<Excluded> = Vec::new();
    for def in defs {
        let mut more = Vec::new();
        for parent in excluded
            .iter()
            .chain(out.iter())
            .filter(|x| def.parent.holds(&x.coord))
        {
            let versions = releases(def);
            for v in versions {
                let coord = child_coordinate(&parent.coord, def, v);
                more.push(Excluded {
                    id: child_id(&parent.id, def, v),
                    python: coord.python.clone(),
                    base: coord.base.clone(),
                    platform: coord.platform.clone(),
                    variant: coord.variant.clone(),
                    coord,
                    reason: format!("the image it builds on, {}, is excluded", parent.id),
                    line: parent.line,
                });
            }
        }
        out.extend(more);
    }
    out
}

/// Point each family image at its parent's primary tag (tags are assigned after the
/// tree is grown).
pub fn link(cells: &mut [Cell]) {
    if cells.iter().all(|c| c.custom.is_none()) {
        return;
    }
    let tags: crate::plan::fast::FastMap<String, String> = cells
        .iter()
        .filter(|c| !c.tags.is_empty())
        .map(|c| (c.id.clone(), c.primary_tag().to_string()))
        .collect();
    for c in cells.iter_mut() {
        if let Some(l) = c.custom.as_mut() {
            l.parent_tag = tags.get(&l.parent).cloned().unwrap_or_default();
        }
    }
}

#[cfg(test)]
mod tests {
    use crate::plan::Plan;

    fn plan_in(dir: &std::path::Path, yaml: &str) -> Result<Plan, String> {
        crate::plan::plan_for_tests(yaml, dir)
    }

    fn plan(yaml: &str) -> Result<Plan, String> {
        plan_in(std::path::Path::new("."), yaml)
    }

    const HEAD: &str = "version: 1\nbases: [\"debian:12\", ubuntu:22.04]\npython: [\"3.11\"]\n";

    /// A tree three deep, in tree order, each image naming its parent and tagged in
    /// its family's repository; filters and exclusions know the `family` key.
    #[test]
    fn families_grow_a_tree_in_tree_order() {
        let p = plan(&format!("{HEAD}pytorch: [\"2.5.1\"]\nfamilies:\n  - {{name: vision, parent: pytorch, versions: [\"8.3.0\", \"8.4.0\"], pip: [\"ultralytics=={{version}}\"]}}\n  - {{name: serve, parent: vision, pip: [uvicorn], tag: \"vision{{vision}}-torch{{torch}}-{{python}}-{{base}}\"}}\nexclude: [{{family: serve, os: ubuntu22.04, reason: not there}}]\n")).unwrap();
        let ids: Vec<&str> = p.cells.iter().map(|c| c.id.as_str()).collect();
        let d = "py3.11-debian12-amd64";
        assert_eq!(
            &ids[..6],
            [
                d.to_string(),
                format!("{d}-torch2.5.1"),
                format!("{d}-torch2.5.1-vision8.3.0"),
                format!("{d}-torch2.5.1-vision8.3.0-serve"),
                format!("{d}-torch2.5.1-vision8.4.0"),
                format!("{d}-torch2.5.1-vision8.4.0-serve"),
            ]
        );
        // ubuntu: its serve images are excluded by the rule
        assert_eq!(p.cells.len(), 10);
        assert_eq!(p.excluded.len(), 2);
        let c = &p.cells[3];
        let l = c.custom.as_ref().unwrap();
        assert_eq!(l.parent, ids[2]);
        assert_eq!(l.parent_tag, "vision:8.3.0-torch2.5.1-python3.11-debian12");
        assert_eq!(c.tags, ["serve:vision8.3.0-torch2.5.1-3.11-debian12"]);
        assert_eq!(c.coord.family.as_deref(), Some("serve"));
        assert_eq!(c.coord.torch.as_deref(), Some("2.5.1"));
        let v = p.cells[2].custom.as_ref().unwrap();
        assert_eq!(v.pip, ["ultralytics==8.3.0"]);
        let f: crate::coord::Filter = "family=vision".parse().unwrap();
        assert_eq!(
            crate::coord::select(&p.cells, std::slice::from_ref(&f)).len(),
            4
        );
    }

    /// Every mistake is said at its place, with what would be valid.
    #[test]
    fn bad_families_are_refused_where_they_are_written() {
        let cases = [
            (
                "[{name: yolo, parent: pytorchh, pip: [x]}]",
                "`families[0].parent`: no family `pytorchh` to build on (did you mean `pytorch`?",
            ),
            (
                "[{name: python, pip: [x]}]",
                "`families[0].name`: `python` cannot name a family",
            ),
            (
                "[{name: a, parent: b, pip: [x]}, {name: b, parent: a, pip: [y]}]",
                "builds on `b`, which builds on it again (a cycle)",
            ),
            (
                "[{name: a, pip: [\"x=={version}\"]}]",
                "`families[0].pip[0]`: `{version}` needs the family's `versions`",
            ),
            (
                "[{name: a, pip: [x], env: {HF_TOKEN: abc}}]",
                "`families[0].env.HF_TOKEN`: HF_TOKEN looks like a secret",
            ),
            (
                "[{name: a, pip: [x], checks: [{service: api}]}]",
                "`families[0].checks[0].service`: family `a` has no service `api` (it has none)",
            ),
            (
                "[{name: a, pip: [x], checks: [{run: ls, service: api}]}]",
                "`families[0].checks[0]`: a check is either `run: COMMAND`",
            ),
            (
                "[{name: a, script: nothere.sh}]",
                "`families[0].script`: cannot read the script ./nothere.sh",
            ),
            ("[{name: a}]", "family `a` adds nothing"),
            (
                "[{name: a, pip: [x], services: [{name: api, command: x, port: 8888}]}]",
                "port 8888 is the image's own",
            ),
            (
                "[{name: a, pip: [x], tag: \"{torch}-{python}\"}]",
                "`families[0].tag`: unknown placeholder `{torch}`",
            ),
            (
                "[{name: a, pip: [x]}, {name: a, pip: [y]}]",
                "`families[1].name`: family `a` is defined twice",
            ),
        ];
        for (families, want) in cases {
            let e = plan(&format!("{HEAD}families: {families}\n")).unwrap_err();
            assert!(e.contains(want), "{families}:\n{e}");
            assert!(e.contains("m.yaml:4:"), "{families}: no place:\n{e}");
        }
    }

    /// A family image's identity covers its layer (its script's bytes too) and its
    /// parent's; a family's name or repository is not part of it.
    #[test]
    fn a_family_images_identity_follows_its_layer_and_its_parent() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("setup.sh"), "echo one\n").unwrap();
        let yaml = |repo: &str| {
            format!("{HEAD}families:\n  - {{name: tool, repository: {repo}, pip: [\"tqdm==4.67.1\"], script: setup.sh}}\n")
        };
        let id = |p: &Plan, parent: &str| {
            let r = crate::render::Renderer::new(&p.settings);
            let c = p.cells.iter().find(|c| c.custom.is_some()).unwrap();
            crate::run::prepare::identity(&r, c, &["sha256:base"], Some(parent))
        };
        let a = plan_in(dir.path(), &yaml("tool")).unwrap();
        let b = plan_in(dir.path(), &yaml("elsewhere")).unwrap();
        assert_eq!(id(&a, "p1"), id(&b, "p1"), "a repository is not identity");
        assert_ne!(id(&a, "p1"), id(&a, "p2"), "the parent is");
        std::fs::write(dir.path().join("setup.sh"), "echo two\n").unwrap();
        let c = plan_in(dir.path(), &yaml("tool")).unwrap();
        assert_ne!(id(&a, "p1"), id(&c, "p1"), "the script is");
        let l = c.cells[1].custom.as_ref().unwrap();
        assert_eq!(l.script.as_ref().unwrap().text.as_str(), "echo two\n");
    }

    /// The rendered context: the lists, the service's run script with its port
    /// variable, and the checks in a label a Dockerfile keeps literal.
    #[test]
    fn a_family_context_carries_its_layer_services_and_checks() {
        let p = plan(&format!("{HEAD}families:\n  - name: serve\n    versions: [\"0.1.0\"]\n    pip: [\"uvicorn==0.32.1; python_version >= '3.9'\", \"old==1; python_version < '3'\"]\n    env: {{SERVE_HOME: \"/opt/$x\"}}\n    services: [{{name: api, command: 'exec uvicorn app:app --port \"$SERVE_PORT\"', port: 11434, port_env: SERVE_PORT}}]\n    checks: [{{service: api, path: /api/version, expect: '\"version\":\"{{version}}\"'}}]\n")).unwrap();
        let c = &p.cells[1];
        let r = crate::render::Renderer::new(&p.settings);
        let ctx = r.render(c);
        let file = |path: &str| {
            let f = ctx
                .files
                .iter()
                .find(|f| f.path == path)
                .unwrap_or_else(|| panic!("{path}"));
            String::from_utf8(f.bytes.to_vec()).unwrap()
        };
        assert_eq!(file("family/requirements.txt"), "uvicorn==0.32.1\n");
        assert_eq!(file("family/packages.txt"), "uvicorn\n");
        let run = file("family/services/api");
        assert!(
            run.contains("export SERVE_PORT=\"${SERVE_PORT:-11434}\""),
            "{run}"
        );
        assert!(
            run.contains("exec bash -c 'exec uvicorn app:app --port \"$SERVE_PORT\"'"),
            "{run}"
        );
        let df = file("Dockerfile");
        assert!(df.contains("ENV SERVE_HOME=\"/opt/\\$x\""), "{df}");
        assert!(
            df.contains("io.image-matrix.family.serve=\"0.1.0\""),
            "{df}"
        );
        assert!(
            df.contains(r#"io.image-matrix.family.serve.checks="{\"services\":[{\"name\":\"api\""#),
            "{df}"
        );
        assert!(
            df.contains(r#"\"expect\":\"\\\"version\\\":\\\"0.1.0\\\"\"}]}""#),
            "{df}"
        );
        assert!(file("family/supervisor.conf").contains("command=/init/family/serve/services/api"));
    }
}
