//! What changed in a cell's packages between two runs, read from both runs' SBOM files
//! (each path relative to its own manifest's folder): packages added, removed, and
//! whose version moved.

use std::collections::BTreeMap;
use std::path::Path;

use crate::manifest::{CellRecord, Manifest, SbomRecord};

/// A package's identity across runs: its purl type (`deb`, `conda`, `pypi`), name and
/// architecture (a Debian package may be installed for two).
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Key {
    pub kind: String,
    pub name: String,
    pub arch: Option<String>,
}

impl Key {
    /// As people read it: `pip jupyterlab`, `dpkg libc6`.
    pub fn label(&self) -> String {
        let kind = match self.kind.as_str() {
            "deb" => "dpkg",
            "pypi" => "pip",
            k => k,
        };
        format!("{kind} {}", self.name)
    }
}

/// One cell's package changes.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct CellChanges {
    pub cell: String,
    pub added: Vec<(Key, String)>,
    pub removed: Vec<(Key, String)>,
    /// Version moved: from, to.
    pub changed: Vec<(Key, String, String)>,
}

impl CellChanges {
    pub fn is_empty(&self) -> bool {
        self.added.is_empty() && self.removed.is_empty() && self.changed.is_empty()
    }
}

/// Every cell's package changes, and the cells that could not be compared (why).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Changes {
    pub cells: Vec<CellChanges>,
    pub not_compared: Vec<(String, String)>,
}

/// The packages an SBOM lists: identity → version.
pub fn read(dir: &Path, rec: &SbomRecord) -> Result<BTreeMap<Key, String>, String> {
    let rel = rec.path.as_deref().ok_or("no SBOM was made")?;
    let path = dir.join(rel);
    let bytes = std::fs::read(&path).map_err(|e| format!("{}: {e}", path.display()))?;
    if let Some(want) = &rec.sha256 {
        if *want != super::sha256_hex(&bytes) {
            return Err(format!(
                "{} was replaced since its manifest was written",
                path.display()
            ));
        }
    }
    let doc: serde_json::Value =
        serde_json::from_slice(&bytes).map_err(|e| format!("{}: {e}", path.display()))?;
    let mut out = BTreeMap::new();
    for c in doc["components"].as_array().into_iter().flatten() {
        let (Some(name), Some(version), Some(purl)) = (
            c["name"].as_str(),
            c["version"].as_str(),
            c["purl"].as_str(),
        ) else {
            continue;
        };
        out.insert(key(purl, name), version.to_string());
    }
    Ok(out)
}

fn key(purl: &str, name: &str) -> Key {
    let kind = purl
        .strip_prefix("pkg:")
        .and_then(|r| r.split('/').next())
        .unwrap_or("")
        .to_string();
    let arch = purl
        .split_once('?')
        .and_then(|(_, q)| q.split('&').find_map(|kv| kv.strip_prefix("arch=")))
        .map(str::to_string);
    let name = if kind == "pypi" {
        name.to_lowercase().replace('_', "-")
    } else {
        name.to_string()
    };
    Key { kind, name, arch }
}

/// The changes between two package lists.
pub fn compare(
    cell: &str,
    before: &BTreeMap<Key, String>,
    now: &BTreeMap<Key, String>,
) -> CellChanges {
    let mut ch = CellChanges {
        cell: cell.to_string(),
        ..CellChanges::default()
    };
    for (k, v) in now {
        match before.get(k) {
            None => ch.added.push((k.clone(), v.clone())),
            Some(old) if old != v => ch.changed.push((k.clone(), old.clone(), v.clone())),
            Some(_) => {}
        }
    }
    for (k, v) in before {
        if !now.contains_key(k) {
            ch.removed.push((k.clone(), v.clone()));
        }
    }
    ch
}

/// Every cell of `m` that has an SBOM and had one in `previous`, compared; `dir` and
/// `previous_dir` are the manifests' folders.
pub fn between(previous: &Manifest, previous_dir: &Path, m: &Manifest, dir: &Path) -> Changes {
    let mut out = Changes::default();
    for c in &m.cells {
        let Some(p) = previous.cells.iter().find(|p| p.id == c.id) else {
            continue;
        };
        let (Some(now), Some(before)) = (&c.sbom, &p.sbom) else {
            continue;
        };
        if same_file(p, c) {
            continue;
        }
        match (read(previous_dir, before), read(dir, now)) {
            (Ok(b), Ok(n)) => {
                let ch = compare(&c.id, &b, &n);
                if !ch.is_empty() {
                    out.cells.push(ch);
                }
            }
            (Err(e), _) => out
                .not_compared
                .push((c.id.clone(), format!("previous SBOM: {e}"))),
            (_, Err(e)) => out.not_compared.push((c.id.clone(), e)),
        }
    }
    out
}

/// Both records name one SBOM (an image not rebuilt keeps its file): nothing moved.
fn same_file(p: &CellRecord, c: &CellRecord) -> bool {
    match (&p.sbom, &c.sbom) {
        (Some(a), Some(b)) => a.sha256.is_some() && a.sha256 == b.sha256,
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn k(kind: &str, name: &str) -> Key {
        Key {
            kind: kind.into(),
            name: name.into(),
            arch: None,
        }
    }

    #[test]
    fn added_removed_and_moved_packages() {
        let before = BTreeMap::from([
            (k("pypi", "numpy"), "1.26.4".to_string()),
            (k("deb", "curl"), "7.88.1-10".to_string()),
            (k("pypi", "six"), "1.16.0".to_string()),
        ]);
        let now = BTreeMap::from([
            (k("pypi", "numpy"), "2.0.1".to_string()),
            (k("pypi", "six"), "1.16.0".to_string()),
            (k("pypi", "rich"), "13.7.1".to_string()),
        ]);
        let ch = compare("c", &before, &now);
        assert_eq!(ch.added, [(k("pypi", "rich"), "13.7.1".to_string())]);
        assert_eq!(ch.removed, [(k("deb", "curl"), "7.88.1-10".to_string())]);
        assert_eq!(
            ch.changed,
            [(k("pypi", "numpy"), "1.26.4".into(), "2.0.1".into())]
        );
        assert!(compare("c", &now, &now).is_empty());
    }

    #[test]
    fn keys_come_from_package_urls() {
        let x = key(
            "pkg:deb/debian/libc6@2.36?arch=i386&distro=debian-12",
            "libc6",
        );
        assert_eq!(x.kind, "deb");
        assert_eq!(x.arch.as_deref(), Some("i386"));
        assert_eq!(x.label(), "dpkg libc6");
        assert_eq!(
            key("pkg:pypi/jupyter-server@2", "Jupyter_Server").label(),
            "pip jupyter-server"
        );
    }
}
