//! `matrix plan` output: a table for people, and JSON, Bake and GitHub Actions
//! documents for machines. All are pure functions of the plan.

use std::fmt::Write as _;
use std::path::Path;

use serde::Serialize;
use serde_json::{json, Value};

use crate::plan::{Cell, Plan};

/// Version of the `--format json` document.
pub const PLAN_SCHEMA: u32 = 1;

/// One planned cell, as `--format json` and `cell.json` show it.
#[derive(Serialize)]
pub struct CellDoc<'a> {
    pub id: &'a str,
    pub tags: &'a [String],
    pub base: &'a str,
    pub os: String,
    pub cuda: Option<String>,
    pub cudnn: Option<&'a str>,
    pub flavor: Option<&'a str>,
    pub python: String,
    pub miniconda: String,
    pub platform: &'a str,
    pub variant: &'a str,
    pub installer: InstallerDoc<'a>,
}

#[derive(Serialize)]
pub struct InstallerDoc<'a> {
    pub file: &'a str,
    pub sha256: &'a str,
    pub urls: &'a [String],
}

#[derive(Serialize)]
pub struct PlanDoc<'a> {
    pub version: u32,
    pub matrix: String,
    pub matrix_sha256: &'a str,
    pub date: &'a str,
    pub cells: Vec<CellDoc<'a>>,
    pub excluded: &'a [crate::plan::Excluded],
}

pub fn cell_doc(c: &Cell) -> CellDoc<'_> {
    let cuda = c.base.cuda.as_ref();
    CellDoc {
        id: &c.id,
        tags: &c.tags,
        base: &c.base.reference,
        os: c.base.os.slug(),
        cuda: cuda.map(|x| x.version.to_string()),
        cudnn: cuda.and_then(|x| x.cudnn.as_deref()),
        flavor: cuda.map(|x| x.flavor.as_str()),
        python: c.python.to_string(),
        miniconda: c.miniconda.to_string(),
        platform: &c.platform,
        variant: &c.variant.name,
        installer: InstallerDoc {
            file: &c.installer.file,
            sha256: &c.installer.sha256,
            urls: &c.installer.urls,
        },
    }
}

/// The `--format json` document (schema version 1).
pub fn json<'a>(plan: &'a Plan, cells: &[&'a Cell]) -> PlanDoc<'a> {
    PlanDoc {
        version: PLAN_SCHEMA,
        matrix: plan.matrix_file.display().to_string(),
        matrix_sha256: &plan.matrix_sha256,
        date: &plan.date,
        cells: cells.iter().map(|c| cell_doc(c)).collect(),
        excluded: &plan.excluded,
    }
}

/// Bake target names allow `[a-zA-Z0-9_-]`.
pub fn bake_name(id: &str) -> String {
    id.replace('.', "_")
}

/// A `docker-bake.json` whose targets build the contexts `matrix render -o DIR` writes.
pub fn bake(plan: &Plan, cells: &[&Cell], contexts: &Path) -> Value {
    let mut targets = serde_json::Map::new();
    for c in cells {
        let mut t = json!({
            "context": contexts.join(&c.id).display().to_string(),
            "dockerfile": "Dockerfile",
            "tags": c.tags,
            "platforms": [c.platform],
        });
        if let Some(n) = &plan.settings.network {
            t["network"] = json!(n);
        }
        targets.insert(bake_name(&c.id), t);
    }
    json!({
        "group": { "default": { "targets": cells.iter().map(|c| bake_name(&c.id)).collect::<Vec<_>>() } },
        "target": targets,
    })
}

/// A GitHub Actions matrix: `strategy.matrix: ${{ fromJSON(...) }}`.
pub fn gha(cells: &[&Cell]) -> Value {
    json!({
        "include": cells.iter().map(|c| json!({
            "id": c.id,
            "tag": c.primary_tag(),
            "python": c.python.to_string(),
            "base": c.base.reference,
            "platform": c.platform,
            "variant": c.variant.name,
        })).collect::<Vec<_>>()
    })
}

/// A GitHub Actions matrix of N shard jobs; each runs `matrix build --shard I/N`.
pub fn gha_shards(cells: &[&Cell], n: usize) -> Value {
    let a = crate::shard::assign(cells, n);
    let include: Vec<Value> = (0..n)
        .filter_map(|s| {
            let ids: Vec<&str> = cells
                .iter()
                .zip(&a)
                .filter(|(_, x)| **x == s)
                .map(|(c, _)| c.id.as_str())
                .collect();
            (!ids.is_empty()).then(
                || json!({ "shard": format!("{}/{n}", s + 1), "count": ids.len(), "ids": ids }),
            )
        })
        .collect();
    json!({ "include": include })
}

pub fn table(plan: &Plan, cells: &[&Cell]) -> String {
    let mut rows: Vec<[String; 6]> = vec![[
        "ID".into(),
        "PYTHON".into(),
        "BASE".into(),
        "PLATFORM".into(),
        "INSTALLER (SHA256)".into(),
        "TAGS".into(),
    ]];
    for c in cells {
        rows.push([
            c.id.clone(),
            c.python.to_string(),
            c.base.reference.clone(),
            c.platform.clone(),
            format!("{} ({})", c.installer.file, &c.installer.sha256[..12]),
            c.tags.join(" "),
        ]);
    }
    let mut widths = [0usize; 6];
    for r in &rows {
        for (w, v) in widths.iter_mut().zip(r) {
            *w = (*w).max(v.chars().count());
        }
    }
    let mut out = String::new();
    for r in &rows {
        let mut line = String::new();
        for (i, v) in r.iter().enumerate() {
            if i == 5 {
                line.push_str(v);
            } else {
                let _ = write!(line, "{v:<w$}  ", w = widths[i]);
            }
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
    if !plan.excluded.is_empty() {
        let _ = writeln!(out, "\nexcluded:");
        for e in &plan.excluded {
            let _ = writeln!(out, "  {}  (line {}) {}", e.id, e.line, e.reason);
        }
    }
    let filtered = plan.cells.len() - cells.len();
    let _ = write!(
        out,
        "\n{} cell{} to build",
        cells.len(),
        if cells.len() == 1 { "" } else { "s" }
    );
    if filtered > 0 {
        let _ = write!(out, " ({filtered} more filtered out)");
    }
    let _ = writeln!(out, ", {} excluded", plan.excluded.len());
    // Where they will build; which engine takes which cell is decided as engines free
    // up, so only the engines are known ahead (`--engine` on build replaces them).
    if !plan.settings.engines.is_empty() {
        let engines: Vec<String> = plan
            .settings
            .engines
            .iter()
            .map(|e| {
                let jobs = e
                    .jobs
                    .map_or_else(|| "-j builds".to_string(), |j| format!("{j} builds"));
                let target = match &e.target {
                    crate::engine::Target::Context(c) => format!("context {c}"),
                    t => t.to_string(),
                };
                format!("{} ({target}, {jobs})", e.name)
            })
            .collect();
        let _ = writeln!(out, "engines: {}", engines.join(", "));
    }
    out
}
