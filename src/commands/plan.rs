//! `matrix plan`: what `build` would do, as a table, JSON, a bake file or a GitHub
//! Actions matrix; with `--diff`, what changes against a previous manifest.

use std::io::Write;

use super::{json_text, load_plan, print, select};
use crate::cli::{Cli, PlanArgs, PlanFormat};
use crate::error::{Error, Exit};
use crate::manifest::{drift, io};
use crate::plan::output;

/// The bases' digests as the local Docker engine (DOCKER / DOCKER_HOST) has them now,
/// so that `--diff` sees a base that moved; without an engine, the previous
/// manifest's are assumed (and it says so).
fn current_digests(cells: &[&crate::plan::Cell]) -> drift::Digests {
    let docker = crate::docker::Docker {
        client: std::env::var_os("DOCKER").map_or_else(|| "docker".into(), Into::into),
        context: None,
        host: None,
        builder: crate::docker::Builder::Auto,
    };
    let mut out = drift::Digests::new();
    if let Err(e) = docker.ping(std::time::Duration::from_secs(5)) {
        crate::term::line(&format!(
            "note: base digests not checked (no Docker engine answers: {e}); the previous manifest's are assumed"
        ));
        return out;
    }
    for c in cells {
        let key = (c.base.reference.clone(), c.platform().to_string());
        if out.contains_key(&key) {
            continue;
        }
        if let Ok(Some(d)) = docker.image_digest(&key.0) {
            out.insert(key, d);
        }
    }
    out
}

pub fn run(cli: &Cli, args: &PlanArgs) -> Result<Exit, Error> {
    let plan = load_plan(cli, &args.select)?;
    let cells = select(&plan, &args.select);
    if let Some(prev) = &args.diff {
        let m = io::read(prev).map_err(|e| Error::Preflight(format!("--diff: {e}")))?;
        let digests = current_digests(&cells);
        let changes = drift::diff(&plan, &cells, &m, &digests);
        let text = match args.format {
            PlanFormat::Json => json_text(&serde_json::json!({
                "version": 1,
                "against": prev.display().to_string(),
                "cells": changes,
            })),
            _ => drift::table(&changes),
        };
        print("the diff", &text)?;
        return Ok(Exit::Success);
    }
    match args.format {
        PlanFormat::Table => print("the plan", &output::table(&plan, &cells))?,
        // Streamed: a 10,000-cell plan never exists as a JSON tree in memory.
        PlanFormat::Json => crate::term::out_with(|w| {
            serde_json::to_writer_pretty(&mut *w, &output::json(&plan, &cells))?;
            writeln!(w)
        })
        .map_err(|source| Error::Output {
            what: "the plan",
            source,
        })?,
        PlanFormat::Bake => {
            crate::term::out_with(|w| output::write_bake(w, &plan, &cells, &args.contexts))
                .map_err(|source| Error::Output {
                    what: "the bake file",
                    source,
                })?
        }
        PlanFormat::Gha => {
            if let Some(n) = args.shards {
                print(
                    "the matrix",
                    &json_text(&output::gha_shards(&cells, usize::from(n))),
                )?;
            } else {
                if cells.len() > 256 {
                    crate::term::line(&format!("warning: {} cells exceed GitHub Actions' 256 jobs per matrix; use --shards or --filter to split", cells.len()));
                }
                crate::term::out_with(|w| output::write_gha(w, &cells)).map_err(|source| {
                    Error::Output {
                        what: "the matrix",
                        source,
                    }
                })?;
            }
        }
    }
    Ok(Exit::Success)
}
