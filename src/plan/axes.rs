//! The matrix's axes, read and validated: bases, Pythons (each with its Miniconda
//! release), platforms and variants, plus the installer catalogue the matrix extends.

use std::sync::Arc;

use crate::config::raw::RawConfig;
use crate::config::settings::{check_apt, check_pip, Settings};
use crate::coord::PLATFORMS;
use crate::diag::{Diags, Pos, Sp};
use crate::plan::base::{self, Base};
use crate::plan::catalogue::Catalogue;
use crate::plan::version::{CondaRelease, PyVersion};
use crate::plan::{InstallerRef, Variant};

/// The seed's Miniconda release, used when `miniconda` is not given.
pub const DEFAULT_MINICONDA: &str = "24.5.0-0";

pub fn default_release() -> CondaRelease {
    CondaRelease {
        version: semver::Version::new(24, 5, 0),
        build: Some(0),
    }
}

/// A Python of the matrix with its Miniconda release, and where it was written.
#[derive(Clone, Debug)]
pub struct PyEntry {
    pub version: PyVersion,
    pub release: CondaRelease,
    pub at: Pos,
    pub key: String,
}

/// A platform and the installer arch it maps to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Platform {
    pub name: String,
    pub arch: String,
}

pub fn bases(raw: &RawConfig, cuda_registry: Option<&str>, d: &mut Diags) -> Vec<Arc<Base>> {
    let mut out: Vec<Arc<Base>> = Vec::new();
    if raw.bases.is_empty() && !raw.present.iter().any(|k| k == "bases") {
        d.error(Some(Pos { line: 1, col: 1 }), "bases", "list at least one base image (for example nvidia/cuda:12.1.1-cudnn8-devel-ubuntu22.04 or ubuntu:22.04)");
    }
    for b in &raw.bases {
        match base::parse(&b.image.value, b.os.as_ref().map(Sp::as_str), cuda_registry) {
            Ok((base, notes)) => {
                for w in notes.warnings {
                    d.warn(Some(b.image.at), &b.key, w);
                }
                if let Some(first) = out.iter().find(|x| x.same_image(&base)) {
                    d.error(
                        Some(b.image.at),
                        &b.key,
                        format!(
                            "base `{}` is listed twice (also as `{}`)",
                            b.image.value, first.reference
                        ),
                    );
                    continue;
                }
                out.push(Arc::new(base));
            }
            Err(e) => d.error(Some(b.image.at), &b.key, e),
        }
    }
    out
}

/// The matrix's Pythons. `date` (`YYYYMMDD`, the plan's date) is the day a Python past
/// its end of life on the Python release cycle is warned about.
pub fn pythons(raw: &RawConfig, date: &str, d: &mut Diags) -> Vec<PyEntry> {
    let default = match &raw.miniconda {
        Some(m) => match CondaRelease::parse(&m.value) {
            Ok(r) => r,
            Err(e) => {
                d.error(Some(m.at), "miniconda", e);
                return Vec::new();
            }
        },
        None => default_release(),
    };
    if raw.python.is_empty() && !raw.present.iter().any(|k| k == "python") {
        d.error(
            Some(Pos { line: 1, col: 1 }),
            "python",
            "list at least one Python version (quoted, for example \"3.10\")",
        );
    }
    let mut out: Vec<PyEntry> = Vec::new();
    for p in &raw.python {
        let version = match PyVersion::parse(&p.version.value) {
            Ok(v) => v,
            Err(e) => {
                d.error(Some(p.version.at), &p.key, e);
                continue;
            }
        };
        let release = match &p.miniconda {
            Some(m) => match CondaRelease::parse(&m.value) {
                Ok(r) => r,
                Err(e) => {
                    d.error(Some(m.at), format!("{}.miniconda", p.key), e);
                    continue;
                }
            },
            None => default.clone(),
        };
        if out.iter().any(|x| x.version == version) {
            d.error(
                Some(p.version.at),
                &p.key,
                format!("Python {version} is listed twice"),
            );
            continue;
        }
        warn_end_of_life(version, date, p.version.at, &p.key, d);
        out.push(PyEntry {
            version,
            release,
            at: p.version.at,
            key: p.key.clone(),
        });
    }
    out
}

/// A Python past its end of life gets no security fixes: worth a warning, not an error
/// (a seed's own images may need one).
fn warn_end_of_life(py: PyVersion, date: &str, at: Pos, key: &str, d: &mut Diags) {
    let today = match (date.get(..4), date.get(4..6), date.get(6..8)) {
        (Some(y), Some(m), Some(dd)) if date.len() == 8 => format!("{y}-{m}-{dd}"),
        _ => return,
    };
    if let Some(eol) = crate::plan::catalogue::python_past_end_of_life(py, &today) {
        let when = if eol.len() == 10 {
            format!("on {eol}")
        } else {
            format!("in {eol}")
        };
        d.warn(
            Some(at),
            key,
            format!(
                "Python {py} reached its end of life {when} (Python release cycle, data/python-releases.tsv): it gets no security fixes; move to a supported Python"
            ),
        );
    }
}

pub fn platforms(raw: &RawConfig, d: &mut Diags) -> Vec<Platform> {
    if raw.platforms.is_empty() {
        return vec![Platform {
            name: "linux/amd64".into(),
            arch: "x86_64".into(),
        }];
    }
    let mut out: Vec<Platform> = Vec::new();
    for p in &raw.platforms {
        match PLATFORMS.iter().find(|(name, _)| *name == p.value) {
            Some((name, arch)) if !out.iter().any(|x| x.name == *name) => out.push(Platform {
                name: (*name).into(),
                arch: (*arch).into(),
            }),
            Some(_) => d.error(
                Some(p.at),
                "platforms",
                format!("platform `{}` is listed twice", p.value),
            ),
            None => {
                let names: Vec<&str> = PLATFORMS.iter().map(|a| a.0).collect();
                d.error(
                    Some(p.at),
                    "platforms",
                    format!(
                        "unknown platform `{}` (expected one of: {})",
                        p.value,
                        names.join(", ")
                    ),
                );
            }
        }
    }
    out
}

pub fn variants(raw: &RawConfig, d: &mut Diags) -> Vec<Arc<Variant>> {
    if raw.variants.is_empty() {
        return vec![Arc::new(Variant {
            name: "default".into(),
            pip: Vec::new(),
            apt: Vec::new(),
            overrides: Vec::new(),
        })];
    }
    let mut out: Vec<Arc<Variant>> = Vec::new();
    for v in &raw.variants {
        let n = &v.name.value;
        let ok = !n.is_empty()
            && n.len() <= 32
            && n.as_bytes()[0].is_ascii_lowercase()
            && n.bytes()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == b'-');
        if !ok {
            d.error(Some(v.name.at), format!("{}.name", v.key), format!("`{n}` is not a variant name (lowercase letters, digits and `-`, starting with a letter)"));
            continue;
        }
        if out.iter().any(|x| &x.name == n) {
            d.error(
                Some(v.name.at),
                format!("{}.name", v.key),
                format!("variant `{n}` is defined twice"),
            );
            continue;
        }
        let mut ok_all = true;
        for p in &v.pip {
            if let Err(e) = check_pip(&p.value) {
                d.error(Some(p.at), format!("{}.pip", v.key), e);
                ok_all = false;
            }
        }
        for p in &v.apt {
            if let Err(e) = check_apt(&p.value) {
                d.error(Some(p.at), format!("{}.apt", v.key), e);
                ok_all = false;
            }
        }
        for p in &v.overrides {
            if let Err(e) = check_pip(&p.value) {
                d.error(Some(p.at), format!("{}.override", v.key), e);
                ok_all = false;
            }
        }
        if ok_all {
            out.push(Arc::new(Variant {
                name: n.clone(),
                pip: v.pip.iter().map(|p| p.value.clone()).collect(),
                apt: v.apt.iter().map(|p| p.value.clone()).collect(),
                overrides: v.overrides.iter().map(|p| p.value.clone()).collect(),
            }));
        }
    }
    out
}

/// The user's `installers:` entries (checked against the built-in catalogue).
pub fn user_catalogue(raw: &RawConfig, d: &mut Diags) -> Catalogue {
    let mut cat = Catalogue::default();
    let builtin = Catalogue::builtin();
    for inst in &raw.installers {
        let sha = inst.sha256.value.to_ascii_lowercase();
        if sha.len() != 64 || !sha.bytes().all(|c| c.is_ascii_hexdigit()) {
            d.error(
                Some(inst.sha256.at),
                format!("{}.sha256", inst.key),
                format!("`{}` is not a SHA256 (64 hex digits)", inst.sha256.value),
            );
            continue;
        }
        if let Some(known) = builtin.get(&inst.file.value) {
            if known.sha256 != sha {
                d.warn(
                    Some(inst.sha256.at),
                    format!("{}.sha256", inst.key),
                    format!(
                        "overrides the catalogue's SHA256 for {} ({}…)",
                        inst.file.value,
                        short(&known.sha256)
                    ),
                );
            }
        }
        if !cat.add(&inst.file.value, &sha) {
            d.error(
                Some(inst.file.at),
                format!("{}.file", inst.key),
                format!("`{}` is not a Miniconda installer name (Miniconda3-py310_24.5.0-0-Linux-x86_64.sh)", inst.file.value),
            );
        }
    }
    cat
}

/// The first 12 characters of a digest, or all of it when shorter.
pub fn short(digest: &str) -> &str {
    let d = digest.strip_prefix("sha256:").unwrap_or(digest);
    d.get(..12).unwrap_or(d)
}

/// The installer a Python entry gets on an arch, or why there is none.
pub fn installer_for(
    py: &PyEntry,
    arch: &str,
    user: &Catalogue,
    s: &Settings,
) -> Result<InstallerRef, String> {
    let release = &py.release;
    let file = release.installer_file(py.version, arch);
    let builtin = Catalogue::builtin();
    let Some(sha) = user
        .get(&file)
        .or_else(|| builtin.get(&file))
        .map(|i| i.sha256.clone())
    else {
        return Err(no_installer(py, arch, &file, builtin));
    };
    let local = s
        .sources
        .installer_dir
        .as_ref()
        .map(|d| d.join(&file))
        .filter(|p| p.is_file());
    Ok(InstallerRef {
        urls: s
            .sources
            .mirrors
            .iter()
            .map(|m| format!("{m}{file}"))
            .collect(),
        file,
        sha256: sha,
        local,
    })
}

fn no_installer(py: &PyEntry, arch: &str, file: &str, builtin: &Catalogue) -> String {
    let (pyv, release) = (py.version, &py.release);
    let offered = builtin.pythons_of(release, arch);
    if !offered.is_empty() {
        let list: Vec<String> = offered.iter().map(ToString::to_string).collect();
        let last = builtin
            .latest_for(pyv, arch)
            .map(|r| format!("; the newest release with Python {pyv} is \"{r}\", set `miniconda: \"{r}\"` on this entry"))
            .unwrap_or_default();
        return format!(
            "Miniconda {release} does not offer Python {pyv} on {arch} (it offers {}){last}",
            list.join(", ")
        );
    }
    if builtin.knows_release(release) {
        let closest = builtin
            .closest_with(pyv, arch, release)
            .map(|r| format!("; the closest release that ships it is \"{r}\""))
            .unwrap_or_default();
        return format!(
            "Miniconda {release} has no {arch} installer in the catalogue ({file}){closest}"
        );
    }
    format!(
        "installer {file} is not in the catalogue (data/miniconda-installers.tsv); if it exists, add it under `installers:` with its published sha256"
    )
}
