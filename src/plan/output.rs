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
        platform: c.platform(),
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

#[derive(Serialize)]
struct BakeTarget<'a> {
    context: String,
    dockerfile: &'static str,
    tags: &'a [String],
    platforms: [&'a str; 1],
    #[serde(skip_serializing_if = "Option::is_none")]
    network: Option<&'a str>,
}

/// A `docker-bake.json` whose targets build the contexts `matrix render -o DIR` writes.
/// Streamed: targets are written one by one, never held as one JSON tree.
pub fn write_bake<W: std::io::Write>(
    w: &mut W,
    plan: &Plan,
    cells: &[&Cell],
    contexts: &Path,
) -> std::io::Result<()> {
    let names: Vec<String> = cells.iter().map(|c| bake_name(&c.id)).collect();
    w.write_all(b"{\n  \"group\": {\"default\": {\"targets\": ")?;
    serde_json::to_writer(&mut *w, &names)?;
    w.write_all(b"}},\n  \"target\": {")?;
    for (i, (c, name)) in cells.iter().zip(&names).enumerate() {
        w.write_all(if i == 0 { b"\n    " } else { b",\n    " })?;
        serde_json::to_writer(&mut *w, name)?;
        w.write_all(b": ")?;
        let t = BakeTarget {
            context: contexts.join(&c.id).display().to_string(),
            dockerfile: "Dockerfile",
            tags: &c.tags,
            platforms: [c.platform()],
            network: plan.settings.network.as_deref(),
        };
        serde_json::to_writer(&mut *w, &t)?;
    }
    w.write_all(b"\n  }\n}\n")
}

#[derive(Serialize)]
struct GhaEntry<'a> {
    id: &'a str,
    tag: &'a str,
    python: String,
    base: &'a str,
    platform: &'a str,
    variant: &'a str,
}

/// A GitHub Actions matrix, `strategy.matrix: ${{ fromJSON(...) }}`, streamed.
pub fn write_gha<W: std::io::Write>(w: &mut W, cells: &[&Cell]) -> std::io::Result<()> {
    w.write_all(b"{\n  \"include\": [")?;
    for (i, c) in cells.iter().enumerate() {
        w.write_all(if i == 0 { b"\n    " } else { b",\n    " })?;
        serde_json::to_writer(
            &mut *w,
            &GhaEntry {
                id: &c.id,
                tag: c.primary_tag(),
                python: c.python.to_string(),
                base: &c.base.reference,
                platform: c.platform(),
                variant: &c.variant.name,
            },
        )?;
    }
    w.write_all(b"\n  ]\n}\n")
}

/// A GitHub Actions matrix of N shard jobs; each runs `matrix build --shard I/N`.
pub fn gha_shards(cells: &[&Cell], n: usize) -> Value {
    let a = crate::plan::shard::assign(cells, n);
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
            c.platform().to_string(),
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
                    crate::config::engine::Target::Context(c) => format!("context {c}"),
                    t => t.to_string(),
                };
                format!("{} ({target}, {jobs})", e.name)
            })
            .collect();
        let _ = writeln!(out, "engines: {}", engines.join(", "));
    }
    out
}
