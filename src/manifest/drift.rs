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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::manifest::{CellRecord, Installer, Status};
    use crate::plan::{plan_text, PlanOptions};
    use crate::run::prepare::record_for;

    fn plan(yaml: &str) -> Plan {
        plan_text(
            yaml,
            "m.yaml",
            std::path::Path::new("."),
            &PlanOptions {
                date: "20260101".into(),
            },
        )
        .unwrap()
    }

    /// A manifest in which every cell of `p` built with today's inputs.
    fn built(p: &Plan) -> Manifest {
        let mut m = Manifest::new("m.yaml", "0", None);
        for c in &p.cells {
            let ctx = render::render(&p.settings, c);
            let mut r = record_for(c, Some(render::input_hash(&ctx, c, &[])));
            r.input_parts = render::part_hashes(&ctx);
            r.status = Status::Built;
            m.cells.push(r);
        }
        m
    }

    fn kinds(ch: &[Change]) -> Vec<(&str, &str)> {
        ch.iter().map(|c| (c.id.as_str(), c.change)).collect()
    }

    #[test]
    fn every_kind_of_change_is_named() {
        let yaml = "version: 1\nbases: [ubuntu:22.04]\npython: [\"3.10\", \"3.11\"]\n";
        let p = plan(yaml);
        let mut prev = built(&p);
        prev.cells[1].status = Status::Failed;
        prev.cells.push(CellRecord {
            status: Status::Built,
            ..CellRecord::new("py3.9-ubuntu22.04-amd64", Default::default())
        });
        let cells: Vec<&Cell> = p.cells.iter().collect();
        let ch = diff(&p, &cells, &prev);
        assert_eq!(
            kinds(&ch),
            [
                ("py3.10-ubuntu22.04-amd64", "unchanged"),
                ("py3.11-ubuntu22.04-amd64", "rebuild"),
                ("py3.9-ubuntu22.04-amd64", "removed"),
            ]
        );
        let p2 = plan(&format!("{yaml}packages: {{apt: [vim]}}\n"));
        let cells: Vec<&Cell> = p2.cells.iter().collect();
        let ch = diff(&p2, &cells, &built(&p));
        assert_eq!(ch[0].change, "changed");
        assert_eq!(
            ch[0].why,
            ["OS layer (apt packages, locale, timezone or its script)"]
        );
    }

    #[test]
    fn a_short_recorded_sha256_is_shown_not_sliced() {
        let p = plan("version: 1\nbases: [ubuntu:22.04]\npython: [\"3.10\"]\n");
        let mut prev = built(&p);
        prev.cells[0].input_hash = Some("old".into());
        prev.cells[0].installer = Some(Installer {
            file: p.cells[0].installer.file.clone(),
            sha256: "abc".into(),
        });
        let cells: Vec<&Cell> = p.cells.iter().collect();
        let ch = diff(&p, &cells, &prev);
        assert_eq!(ch[0].change, "changed");
        assert!(
            ch[0].why[0].starts_with("installer SHA256 abc… → "),
            "{:?}",
            ch[0].why
        );
    }
}
