//! What the reports say about each cell's SBOM: its package counts, its file, and what
//! changed in its packages since a previous run, bounded (the first few names of each
//! kind of change, then how many more).

use crate::manifest::SbomRecord;
use crate::sbom::diff::CellChanges;

/// How many packages of each kind of change are named before "and K more".
pub const SHOWN: usize = 8;

/// `dpkg 166 · conda 0 · pip 104`.
pub fn counts(s: &SbomRecord) -> String {
    let p = &s.packages;
    format!("dpkg {} · conda {} · pip {}", p.dpkg, p.conda, p.pip)
}

/// The SBOM's path when it is a plain file of the SBOM folder (the only kind a report
/// links to: a manifest is an input, and its paths are not trusted).
pub fn link(s: &SbomRecord) -> Option<&str> {
    let p = s.path.as_deref()?;
    let name = p.strip_prefix("sbom/")?;
    let plain = !name.is_empty()
        && !name.starts_with('.')
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_'));
    plain.then_some(p)
}

/// Each kind of change of a cell, as (`upgraded`, `3`, `pip numpy 1.26.4 → 2.0.1, …`);
/// `cmp` orders two versions (the reports' own version order).
pub fn lines(
    ch: &CellChanges,
    cmp: fn(&str, &str) -> std::cmp::Ordering,
) -> Vec<(&'static str, usize, String)> {
    let mut up = Vec::new();
    let mut down = Vec::new();
    for (k, from, to) in &ch.changed {
        let text = format!("{} {from} → {to}", k.label());
        if cmp(to, from) == std::cmp::Ordering::Less {
            down.push(text);
        } else {
            up.push(text);
        }
    }
    let named = |list: &[(crate::sbom::diff::Key, String)]| -> Vec<String> {
        list.iter()
            .map(|(k, v)| format!("{} {v}", k.label()))
            .collect()
    };
    let mut out = Vec::new();
    for (what, list) in [
        ("upgraded", up),
        ("downgraded", down),
        ("added", named(&ch.added)),
        ("removed", named(&ch.removed)),
    ] {
        if !list.is_empty() {
            out.push((what, list.len(), bounded(&list)));
        }
    }
    out
}

/// The first [`SHOWN`] items, then `and K more`.
pub fn bounded(items: &[String]) -> String {
    let mut s = items
        .iter()
        .take(SHOWN)
        .cloned()
        .collect::<Vec<_>>()
        .join(", ");
    if items.len() > SHOWN {
        s.push_str(&format!(", and {} more", items.len() - SHOWN));
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sbom::diff::Key;

    fn k(name: &str) -> Key {
        Key {
            kind: "pypi".into(),
            name: name.into(),
            arch: None,
        }
    }

    #[test]
    fn changes_read_as_upgrades_downgrades_additions_and_removals_bounded() {
        let ch = CellChanges {
            cell: "c".into(),
            added: (0..12)
                .map(|i| (k(&format!("p{i:02}")), "1".into()))
                .collect(),
            removed: vec![(k("six"), "1.16.0".into())],
            changed: vec![
                (k("numpy"), "1.26.4".into(), "2.0.1".into()),
                (k("rich"), "13.10.0".into(), "13.9.0".into()),
            ],
        };
        let l = lines(&ch, crate::report::markdown::version_cmp);
        assert_eq!(
            l[0],
            ("upgraded", 1, "pip numpy 1.26.4 → 2.0.1".to_string())
        );
        assert_eq!(
            l[1],
            ("downgraded", 1, "pip rich 13.10.0 → 13.9.0".to_string())
        );
        assert_eq!(l[2].0, "added");
        assert_eq!(l[2].1, 12);
        assert!(l[2].2.ends_with("pip p07 1, and 4 more"), "{}", l[2].2);
        assert_eq!(l[3], ("removed", 1, "pip six 1.16.0".to_string()));
    }

    #[test]
    fn only_plain_files_of_the_sbom_folder_are_linked() {
        let rec = |p: &str| SbomRecord {
            path: Some(p.into()),
            ..SbomRecord::default()
        };
        assert_eq!(
            link(&rec("sbom/py3.11-debian12.json")),
            Some("sbom/py3.11-debian12.json")
        );
        for bad in [
            "/etc/passwd",
            "sbom/../x.json",
            "javascript:alert(1)",
            "sbom/a b.json",
            "sbom/.x",
        ] {
            assert_eq!(link(&rec(bad)), None, "{bad}");
        }
    }
}
