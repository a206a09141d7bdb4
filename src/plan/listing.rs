//! Reading upstream listings into the catalogue's data files, for `matrix catalogue
//! update`: Anaconda's Miniconda index (its `.files.json`, or the HTML index page)
//! and NVIDIA's supported and unsupported `nvidia/cuda` tag documents. Pure
//! functions: fetching is the command's job.

use std::collections::{BTreeMap, BTreeSet};

use crate::plan::version::parse_installer_file;

/// Installer names (Linux, versioned; never the moving `latest` alias) with their
/// SHA256, from `.files.json` (`{"NAME": {"sha256": "…", …}, …}`).
pub fn installers_from_json(text: &str) -> Result<BTreeMap<String, String>, String> {
    let v: serde_json::Value =
        serde_json::from_str(text).map_err(|e| format!("not a files listing: {e}"))?;
    let obj = v
        .as_object()
        .ok_or("not a files listing: expected an object")?;
    Ok(obj
        .iter()
        .filter_map(|(name, meta)| {
            let sha = meta.get("sha256")?.as_str()?.to_ascii_lowercase();
            keep(name, &sha).then(|| (name.clone(), sha))
        })
        .collect())
}

/// The same from the HTML index page: each table row names an installer and its
/// SHA256.
pub fn installers_from_html(text: &str) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    for row in text.split("<tr").skip(1) {
        let row = row.split("</tr>").next().unwrap_or(row);
        let name = row
            .split(|c: char| c == '"' || c == '>' || c == '<' || c.is_whitespace())
            .find(|w| w.starts_with("Miniconda3-") && w.ends_with(".sh"));
        let sha = row
            .split(|c: char| !c.is_ascii_hexdigit())
            .find(|w| w.len() == 64);
        if let (Some(n), Some(s)) = (name, sha) {
            let s = s.to_ascii_lowercase();
            if keep(n, &s) {
                out.insert(n.to_string(), s);
            }
        }
    }
    out
}

/// An installer name of the catalogue's grammar and a SHA256: a listing is read from
/// the network, and one of its names with a newline, an escape or an unknown
/// architecture must not become a line of the catalogue.
pub(crate) fn keep(name: &str, sha: &str) -> bool {
    let arch_known = crate::coord::PLATFORMS
        .iter()
        .any(|(_, arch)| name.ends_with(&format!("-Linux-{arch}.sh")));
    arch_known
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b))
        && parse_installer_file(name).is_some()
        && sha.len() == 64
        && sha.bytes().all(|c| c.is_ascii_hexdigit())
}

/// The `nvidia/cuda` ubuntu tags a document lists (each in backquotes).
pub fn cuda_tags(markdown: &str) -> BTreeSet<String> {
    markdown
        .split('`')
        .skip(1)
        .step_by(2)
        .filter(|t| looks_like_cuda_tag(t))
        .map(str::to_string)
        .collect()
}

pub(crate) fn looks_like_cuda_tag(t: &str) -> bool {
    let parts: Vec<&str> = t.split('-').collect();
    parts.len() >= 3
        && parts[0].split('.').count() == 3
        && parts[0]
            .split('.')
            .all(|p| !p.is_empty() && p.bytes().all(|c| c.is_ascii_digit()))
        && parts[parts.len() - 1].starts_with("ubuntu")
        && t.bytes()
            .all(|c| c.is_ascii_alphanumeric() || c == b'.' || c == b'-')
}

/// What an update changes.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Changes {
    pub added: Vec<String>,
    /// Names whose SHA256 differs from the catalogue's: a published file changed.
    pub changed: Vec<String>,
    /// Tags whose status moved (supported → eol, or back).
    pub moved: Vec<String>,
}

/// The new installer file: the old entries (Anaconda never deletes an installer, and
/// a mirror's listing may be partial) plus the listing's. Changed SHA256s are kept
/// at their old value unless `accept_changed`.
pub fn merge_installers(
    old: &str,
    listing: &BTreeMap<String, String>,
    stamp: &str,
    accept_changed: bool,
) -> (String, Changes) {
    let mut entries: BTreeMap<String, String> = BTreeMap::new();
    for line in old
        .lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
    {
        if let Some((f, s)) = line.split_once('\t') {
            entries.insert(f.to_string(), s.trim().to_string());
        }
    }
    let mut ch = Changes::default();
    for (name, sha) in listing {
        match entries.get(name) {
            None => {
                ch.added.push(name.clone());
                entries.insert(name.clone(), sha.clone());
            }
            Some(old_sha) if old_sha != sha => {
                ch.changed.push(name.clone());
                if accept_changed {
                    entries.insert(name.clone(), sha.clone());
                }
            }
            Some(_) => {}
        }
    }
    let mut text = format!("# updated: {stamp}\n# Linux Miniconda installers with their published SHA256: Anaconda's listing, merged into the earlier records (installers are never deleted upstream).\n# filename\tsha256\n");
    let mut names: Vec<&String> = entries.keys().collect();
    names.sort_by_key(|n| sort_key(n));
    for n in names {
        text.push_str(&format!("{n}\t{}\n", entries[n]));
    }
    (text, ch)
}

fn sort_key(
    name: &str,
) -> (
    Option<(
        crate::plan::version::CondaRelease,
        crate::plan::version::PyVersion,
    )>,
    String,
) {
    (
        parse_installer_file(name).map(|(py, r, _)| (r, py)),
        name.to_string(),
    )
}

/// The new tag file: every listed tag, `eol` when on the unsupported list (a tag on
/// both lists is eol), plus old tags neither list names any more (kept as eol: NVIDIA
/// deletes them).
pub fn merge_tags(
    old: &str,
    supported: &BTreeSet<String>,
    unsupported: &BTreeSet<String>,
    stamp: &str,
) -> (String, Changes) {
    let mut old_status: BTreeMap<String, String> = BTreeMap::new();
    for line in old
        .lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
    {
        if let Some((t, s)) = line.split_once('\t') {
            old_status.insert(t.to_string(), s.trim().to_string());
        }
    }
    let mut status: BTreeMap<String, &str> = BTreeMap::new();
    for t in supported {
        status.insert(t.clone(), "supported");
    }
    for t in unsupported {
        status.insert(t.clone(), "eol");
    }
    for t in old_status.keys() {
        status.entry(t.clone()).or_insert("eol");
    }
    let mut ch = Changes::default();
    for (t, s) in &status {
        match old_status.get(t) {
            None => ch.added.push(t.clone()),
            Some(o) if o != s => ch.moved.push(format!("{t}: {o} → {s}")),
            Some(_) => {}
        }
    }
    let mut text = format!("# updated: {stamp}\n# nvidia/cuda image tags on ubuntu from NVIDIA's supported and unsupported lists; a tag on both, or on neither any more, is eol (deleted without notice).\n# tag\tstatus\n");
    let mut tags: Vec<(&String, &&str)> = status.iter().collect();
    tags.sort_by_key(|(t, _)| tag_key(t));
    for (t, s) in tags {
        text.push_str(&format!("{t}\t{s}\n"));
    }
    (text, ch)
}

fn tag_key(t: &str) -> (Vec<u64>, String) {
    let v = t.split('-').next().unwrap_or("");
    (
        v.split('.').map(|p| p.parse().unwrap_or(0)).collect(),
        t.to_string(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    const SHA: &str = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

    #[test]
    fn installers_come_from_the_json_listing_and_the_html_page() {
        let json = format!(
            "{{\"Miniconda3-py313_26.9.1-0-Linux-x86_64.sh\": {{\"sha256\": \"{SHA}\", \"size\": 1}}, \"Miniconda3-latest-Linux-x86_64.sh\": {{\"sha256\": \"{SHA}\"}}, \"Miniconda3-py313_26.9.1-0-MacOSX-arm64.sh\": {{\"sha256\": \"{SHA}\"}}}}"
        );
        let got = installers_from_json(&json).unwrap();
        assert_eq!(
            got.keys().collect::<Vec<_>>(),
            ["Miniconda3-py313_26.9.1-0-Linux-x86_64.sh"]
        );
        let html = format!("<table><tr><th>Filename</th></tr>\n<tr>\n<td><a href=\"Miniconda3-py313_26.9.1-0-Linux-aarch64.sh\">Miniconda3-py313_26.9.1-0-Linux-aarch64.sh</a></td>\n<td class=\"s\">150.1M</td><td>2026-09-30 10:00:00</td>\n<td>{SHA}</td>\n</tr></table>");
        let got = installers_from_html(&html);
        assert_eq!(got["Miniconda3-py313_26.9.1-0-Linux-aarch64.sh"], SHA);
    }

    #[test]
    fn merging_adds_and_flags_a_changed_sha256() {
        let old = format!("# updated: 2026-01-01 from x\n# filename\tsha256\nMiniconda3-py311_24.5.0-0-Linux-x86_64.sh\t{SHA}\n");
        let mut listing = BTreeMap::new();
        listing.insert(
            "Miniconda3-py311_24.5.0-0-Linux-x86_64.sh".to_string(),
            "f".repeat(64),
        );
        listing.insert(
            "Miniconda3-py313_26.9.1-0-Linux-x86_64.sh".to_string(),
            SHA.to_string(),
        );
        let (text, ch) = merge_installers(&old, &listing, "2026-11-29 from test", false);
        assert_eq!(ch.added, ["Miniconda3-py313_26.9.1-0-Linux-x86_64.sh"]);
        assert_eq!(ch.changed, ["Miniconda3-py311_24.5.0-0-Linux-x86_64.sh"]);
        assert!(
            text.contains(&format!("Miniconda3-py311_24.5.0-0-Linux-x86_64.sh\t{SHA}")),
            "kept the old SHA256"
        );
        assert!(text.starts_with("# updated: 2026-11-29 from test\n"));
    }

    #[test]
    fn tags_take_their_status_from_the_two_lists() {
        let sup = cuda_tags("- [`13.1.0-cudnn-devel-ubuntu24.04` (*x*)](y)\n- `12.9.1-base-ubuntu24.04`\n`not a tag`");
        let uns = cuda_tags("- `12.9.0-base-ubuntu24.04`\n- `12.9.1-base-ubuntu24.04`");
        let old = "# updated: 2025-08-31 from x\n12.9.0-base-ubuntu24.04\tsupported\n12.1.0-base-ubuntu22.04\teol\n";
        let (text, ch) = merge_tags(old, &sup, &uns, "2026-11-29 from test");
        assert_eq!(
            ch.added,
            ["12.9.1-base-ubuntu24.04", "13.1.0-cudnn-devel-ubuntu24.04"]
        );
        assert_eq!(ch.moved, ["12.9.0-base-ubuntu24.04: supported → eol"]);
        assert!(
            text.contains("12.9.1-base-ubuntu24.04\teol\n"),
            "on both lists: eol"
        );
        assert!(text.contains("12.1.0-base-ubuntu22.04\teol\n"));
        assert!(text.contains("13.1.0-cudnn-devel-ubuntu24.04\tsupported\n"));
    }

    /// Issue 27 item 5: names a hostile listing could give.
    #[test]
    fn a_listings_names_are_only_ever_installer_names() {
        let sha = "a".repeat(64);
        let good = "Miniconda3-py310_24.5.0-0-Linux-x86_64.sh";
        let json = serde_json::json!({
            good: {"sha256": sha},
            "Miniconda3-py310_24.5.0-0-Linux-x86_64.sh\tevil\nMiniconda3-py311_24.5.0-0-Linux-x86_64.sh": {"sha256": sha},
            "Miniconda3-py310_24.5.0-0-Linux-x86_64\u{1b}[2J.sh": {"sha256": sha},
            "Miniconda3-py310_24.5.0-0-Linux-evil.sh": {"sha256": sha},
        })
        .to_string();
        let found = installers_from_json(&json).unwrap();
        assert_eq!(found.keys().collect::<Vec<_>>(), [good]);
    }
}
