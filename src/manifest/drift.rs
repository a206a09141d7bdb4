//! `matrix plan --diff MANIFEST`: which cells tonight's build will change, and why.
//!
//! Each planned cell is rendered in memory and its input hash compared with the one
//! the previous manifest recorded. Where they differ, the recorded per-part hashes
//! (Dockerfile, OS layer, Miniconda layer, variant, boot files) and coordinates say
//! what changed.

use serde::Serialize;

use crate::manifest::{CellRecord, Manifest};
use crate::plan::axes::short;
use crate::plan::{Cell, Plan};
use crate::render;

#[derive(Debug, Serialize, PartialEq, Eq)]
pub struct Change {
    pub id: String,
    /// `new`, `changed`, `rebuild`, `unchanged` or `removed`.
    pub change: &'static str,
    pub why: Vec<String>,
}

fn part_name(part: &str) -> &str {
    match part {
        "Dockerfile" => "Dockerfile template",
        "system" => "OS layer (apt packages, locale, timezone or its script)",
        "conda" => "Miniconda layer (installer, pip packages, sources or its script)",
        "variant" => "variant packages",
        "image" => "boot files or runtime settings",
        other => other,
    }
}

fn reasons(
    cell: &Cell,
    prev: &CellRecord,
    parts: &std::collections::BTreeMap<String, String>,
) -> Vec<String> {
    let mut why = Vec::new();
    if prev.coordinates.base != cell.base.reference {
        why.push(format!(
            "base reference {} → {}",
            prev.coordinates.base, cell.base.reference
        ));
    }
    match &prev.installer {
        Some(i) if i.file != cell.installer.file => {
            why.push(format!("installer {} → {}", i.file, cell.installer.file))
        }
        Some(i) if i.sha256 != cell.installer.sha256 => why.push(format!(
            "installer SHA256 {}… → {}…",
            short(&i.sha256),
            short(&cell.installer.sha256)
        )),
        _ => {}
    }
    if prev.tags != cell.tags {
        why.push("tags".into());
    }
    if prev.input_parts.is_empty() {
        if why.is_empty() {
            why.push("inputs changed (the previous manifest records no per-part hashes)".into());
        }
        return why;
    }
    for (part, h) in parts {
        if prev.input_parts.get(part) != Some(h) {
            why.push(part_name(part).to_string());
        }
    }
    why
}

pub fn diff(plan: &Plan, cells: &[&Cell], prev: &Manifest) -> Vec<Change> {
    let mut out = Vec::new();
    for c in cells {
        let ctx = render::render(&plan.settings, c);
        let hash = render::input_hash(&ctx, c, &[]);
        let Some(p) = prev.cells.iter().find(|r| r.id == c.id) else {
            out.push(Change {
                id: c.id.clone(),
                change: "new",
                why: vec!["not in the previous manifest".into()],
            });
            continue;
        };
        if p.input_hash.as_deref() == Some(hash.as_str()) {
            if p.status.succeeded() {
                out.push(Change {
                    id: c.id.clone(),
                    change: "unchanged",
                    why: Vec::new(),
                });
            } else {
                out.push(Change {
                    id: c.id.clone(),
                    change: "rebuild",
                    why: vec![format!("previous status {}", p.status.as_str())],
                });
            }
            continue;
        }
        out.push(Change {
            id: c.id.clone(),
            change: "changed",
            why: reasons(c, p, &render::part_hashes(&ctx)),
        });
    }
    for p in prev
        .cells
        .iter()
        .filter(|p| p.status != crate::manifest::Status::Excluded)
    {
        if !plan.cells.iter().any(|c| c.id == p.id) {
            out.push(Change {
                id: p.id.clone(),
                change: "removed",
                why: vec!["no longer in the matrix".into()],
            });
        }
    }
    out
}

pub fn table(changes: &[Change]) -> String {
    let w = changes.iter().map(|c| c.id.len()).max().unwrap_or(2).max(2);
    let mut s = format!("{:<w$}  {:<9}  WHY\n", "ID", "CHANGE");
    for c in changes {
        s.push_str(&format!(
            "{:<w$}  {:<9}  {}\n",
            c.id,
            c.change,
            c.why.join("; ")
        ));
    }
    let count = |k: &str| changes.iter().filter(|c| c.change == k).count();
    s.push_str(&format!(
        "\n{} to build ({} new, {} changed, {} to rebuild), {} unchanged, {} removed\n",
        count("new") + count("changed") + count("rebuild"),
        count("new"),
        count("changed"),
        count("rebuild"),
        count("unchanged"),
        count("removed")
    ));
    s
}
