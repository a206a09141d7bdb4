//! `matrix plan --diff MANIFEST`: which cells tonight's build will change, and why.
//!
//! Each planned cell is rendered in memory and its identity (input hash, with the
//! base's current digest) compared with the one the previous manifest recorded. Where
//! they differ, the recorded base digest, installer and per-part hashes (Dockerfile,
//! OS layer, Miniconda layer, variant, boot files) say what changed. A cell whose
//! identity is the same but whose tags differ (tonight's date) is `retag`: nothing
//! is built, tags are added.

use serde::Serialize;

use crate::manifest::{CellRecord, Manifest};
use crate::plan::axes::short;
use crate::plan::{Cell, Plan};
use crate::render;
use crate::render::identity::{Identity, Over};

#[derive(Debug, Serialize, PartialEq, Eq)]
pub struct Change {
    pub id: String,
    /// `new`, `changed`, `rebuild`, `retag`, `unchanged` or `removed`.
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
    base_digest: &str,
) -> Vec<String> {
    let mut why = Vec::new();
    match prev.base_digest.as_deref() {
        Some(d) if d != base_digest => why.push(format!(
            "base digest moved: {} → {}",
            short(d),
            short(base_digest)
        )),
        _ => {}
    }
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

/// Why a cell whose identity is the same gets other tags: its repository or its
/// primary tag was renamed (neither is part of its identity), or its aliases changed
/// (tonight's date).
fn renamed(prev: &CellRecord, cell: &Cell) -> Vec<String> {
    let split = |t: Option<&String>| {
        let (repo, tag, _) = crate::reference::split(t.map_or("", String::as_str));
        (repo.to_string(), tag.unwrap_or_default().to_string())
    };
    let (old_repo, old_tag) = split(prev.tags.first());
    let (repo, tag) = split(cell.tags.first());
    let mut why = Vec::new();
    if old_repo != repo {
        why.push(format!("repository {old_repo} → {repo}"));
    }
    if old_tag != tag {
        why.push(format!("tag {old_tag} → {tag}"));
    }
    if why.is_empty() {
        let added: Vec<&str> = cell
            .tags
            .iter()
            .filter(|t| !prev.tags.contains(t))
            .map(String::as_str)
            .collect();
        why.push(format!("tags only: {}", added.join(" ")));
    }
    why
}

/// The base digest a cell is compared with: the one resolved now, or, where no engine
/// could be asked, the one the previous manifest recorded.
pub type Digests = crate::plan::fast::FastMap<(String, String), String>;

pub fn diff(plan: &Plan, cells: &[&Cell], prev: &Manifest, digests: &Digests) -> Vec<Change> {
    let by_id: std::collections::HashMap<&str, &CellRecord> =
        prev.cells.iter().map(|r| (r.id.as_str(), r)).collect();
    // parents first: a framework or family image's identity covers its parent's input hash
    let mut hashes: std::collections::HashMap<&str, Identity> = std::collections::HashMap::new();
    let mut out = Vec::new();
    let renderer = render::Renderer::new(&plan.settings);
    // the plan's tree order puts every parent before its children
    for c in cells {
        let Some(p) = by_id.get(c.id.as_str()) else {
            out.push(Change {
                id: c.id.clone(),
                change: "new",
                why: vec!["not in the previous manifest".into()],
            });
            continue;
        };
        let digest_of = |id: &str, platform: &str| {
            digests
                .get(crate::plan::fast::pair(&(&c.base.reference, platform)))
                .cloned()
                .or_else(|| by_id.get(id).and_then(|r| r.base_digest.clone()))
                .unwrap_or_else(|| render::identity::UNRESOLVED.into())
        };
        let digest = digest_of(&c.id, c.platform());
        let all: Vec<String> = c
            .identity_members()
            .into_iter()
            .map(|(id, platform)| digest_of(id, platform))
            .collect();
        let all: Vec<&str> = all.iter().map(String::as_str).collect();
        let ctx = renderer.render(c);
        let identity = match c.parent().and_then(|id| hashes.get(id)) {
            Some(p) => Identity::of(&renderer, &ctx, c, Over::Parent(p)),
            None => Identity::of(&renderer, &ctx, c, Over::Bases(&all)),
        };
        // a manifest of an earlier tool version records an earlier scheme's identity
        let same = p.input_hash.as_deref().is_some_and(|h| identity.is(h));
        hashes.insert(&c.id, identity);
        let (change, why) = if !same {
            let mut why = reasons(c, p, &render::identity::part_hashes(&ctx), &digest);
            // a layer whose own files did not change: the image it builds on did
            if let (true, Some(parent)) = (why.is_empty(), c.parent()) {
                why.push(format!("the image it builds on ({parent}) changed"));
            }
            ("changed", why)
        } else if !p.status.succeeded() {
            (
                "rebuild",
                vec![format!("previous status {}", p.status.as_str())],
            )
        } else if p.tags != c.tags {
            ("retag", renamed(p, c))
        } else {
            ("unchanged", Vec::new())
        };
        out.push(Change {
            id: c.id.clone(),
            change,
            why,
        });
    }
    // back in the plan's order
    let position: std::collections::HashMap<&str, usize> = cells
        .iter()
        .enumerate()
        .map(|(i, c)| (c.id.as_str(), i))
        .collect();
    out.sort_by_key(|ch| position.get(ch.id.as_str()).copied());
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
        "\n{} to build ({} new, {} changed, {} to rebuild), {} to retag only, {} unchanged, {} removed\n",
        count("new") + count("changed") + count("rebuild"),
        count("new"),
        count("changed"),
        count("rebuild"),
        count("retag"),
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
    use crate::render::identity::{Identity, Over};
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
            // one base digest for each member of a tag group
            let digests = vec!["sha256:base"; c.identity_members().len()];
            let mut r = record_for(c, Some(render::identity::input_hash(&ctx, c, &digests)));
            r.base_digest = Some("sha256:base".into());
            r.input_parts = render::identity::part_hashes(&ctx);
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
        let ch = diff(&p, &cells, &prev, &Digests::default());
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
        let ch = diff(&p2, &cells, &built(&p), &Digests::default());
        assert_eq!(ch[0].change, "changed");
        assert_eq!(
            ch[0].why,
            ["OS layer (apt packages, locale, timezone or its script)"]
        );
        // a moved base, and a night where only the date tag changes
        let mut moved = Digests::default();
        moved.insert(
            ("ubuntu:22.04".into(), "linux/amd64".into()),
            "sha256:rebuilt".into(),
        );
        let cells: Vec<&Cell> = p.cells.iter().collect();
        let ch = diff(&p, &cells, &built(&p), &moved);
        assert_eq!(ch[0].why, ["base digest moved: base → rebuilt"]);
        let dated = plan(&format!(
            "{yaml}image: {{aliases: [\"{{tag}}-{{date}}\"]}}\n"
        ));
        let cells: Vec<&Cell> = dated.cells.iter().collect();
        let ch = diff(&dated, &cells, &built(&p), &Digests::default());
        assert_eq!(ch[0].change, "retag");
        assert_eq!(
            ch[0].why,
            ["tags only: miniconda:conda3-python3.10-ubuntu22.04-20260101"]
        );
    }

    /// A manifest written by a tool version of identity scheme 1 or 2 records that
    /// scheme's hashes: nothing in it reads as changed, and a real change still does.
    #[test]
    fn a_manifest_of_an_earlier_identity_scheme_is_read_as_unchanged() {
        let yaml = "version: 1\nbases: [ubuntu:22.04]\npython: [\"3.10\", \"3.11\"]\n";
        let p = plan(yaml);
        let r = render::Renderer::new(&p.settings);
        for scheme in [1, 2] {
            let mut prev = built(&p);
            for (rec, c) in prev.cells.iter_mut().zip(&p.cells) {
                let digests = vec!["sha256:base"; c.identity_members().len()];
                let id = Identity::of(&r, &r.render(c), c, Over::Bases(&digests));
                assert_eq!(rec.input_hash.as_deref(), Some(id.hash.as_str()));
                rec.input_hash = Some(if scheme == 1 { id.legacy } else { id.scheme2 });
            }
            let cells: Vec<&Cell> = p.cells.iter().collect();
            let ch = diff(&p, &cells, &prev, &Digests::default());
            assert!(ch.iter().all(|c| c.change == "unchanged"), "{ch:?}");
            let p2 = plan(&format!("{yaml}packages: {{apt: [vim]}}\n"));
            let cells: Vec<&Cell> = p2.cells.iter().collect();
            let ch = diff(&p2, &cells, &prev, &Digests::default());
            assert!(ch.iter().all(|c| c.change == "changed"), "{ch:?}");
        }
    }

    /// Neither the repository nor the tags are part of an identity: a matrix pointed at
    /// another registry, or given another tag template, is retagged, and the diff says
    /// which name changed (never "Dockerfile template"). Cells of their own and the
    /// members of a tag group alike.
    #[test]
    fn a_new_repository_or_tag_template_is_a_retag_that_names_it() {
        for platforms in ["", "platforms: [linux/amd64, linux/arm64]\n"] {
            let yaml = format!(
                "version: 1\nbases: [ubuntu:22.04]\npython: [\"3.10\", \"3.11\"]\n{platforms}"
            );
            let prev = built(&plan(&yaml));
            let moved = plan(&format!(
                "{yaml}image: {{repository: registry.example:5000/ml/miniconda}}\n"
            ));
            let cells: Vec<&Cell> = moved.cells.iter().collect();
            let ch = diff(&moved, &cells, &prev, &Digests::default());
            assert_eq!(ch.len(), prev.cells.len(), "{ch:?}");
            for c in &ch {
                assert_eq!(c.change, "retag", "{ch:?}");
                assert_eq!(
                    c.why,
                    ["repository miniconda → registry.example:5000/ml/miniconda"]
                );
            }
            let retagged = plan(&format!(
                "{yaml}image: {{tag: \"py{{python}}-{{base}}\"}}\n"
            ));
            let cells: Vec<&Cell> = retagged.cells.iter().collect();
            let ch = diff(&retagged, &cells, &prev, &Digests::default());
            for (c, old) in ch.iter().zip(&prev.cells) {
                assert_eq!(c.change, "retag", "{ch:?}");
                let old = old.tags[0].trim_start_matches("miniconda:");
                let new = &c.id[..c.id.rfind('-').unwrap()];
                assert_eq!(c.why, [format!("tag {old} → {new}")]);
            }
        }
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
        let ch = diff(&p, &cells, &prev, &Digests::default());
        assert_eq!(ch[0].change, "changed");
        assert!(
            ch[0].why[0].starts_with("installer SHA256 abc… → "),
            "{:?}",
            ch[0].why
        );
    }
}
