//! `matrix plan`: what `build` would do, as a table, JSON, a bake file or a GitHub
//! Actions matrix; with `--diff`, what changes against a previous manifest.

use std::io::Write;

use super::{json_text, load_plan, print, select};
use crate::cli::{Cli, PlanArgs, PlanFormat};
use crate::error::{Error, Exit};
use crate::manifest::{drift, io};
use crate::plan::output;

/// The bases' digests as the engines of the previous run hold them now (the client's
/// default engine when it recorded none), so that `--diff` sees a base that moved;
/// nothing is pulled. Where no engine answers, the previous manifest's are assumed
/// (and it says so).
fn current_digests(
    cells: &[&crate::plan::Cell],
    prev: &crate::manifest::Manifest,
) -> drift::Digests {
    let client: std::path::PathBuf =
        std::env::var_os("DOCKER").map_or_else(|| "docker".into(), Into::into);
    let mut out = drift::Digests::new();
    let engines = crate::engines::specs(&[], None, &[], &prev.engines)
        .map_err(Error::Usage)
        .and_then(|specs| {
            crate::engines::connect(
                &client,
                crate::docker::Builder::Auto,
                specs,
                std::num::NonZeroUsize::MIN,
            )
        });
    let engines = match engines {
        Ok(c) => c.engines,
        Err(e) => {
            crate::term::line(&format!(
                "note: base digests not checked ({e}); the previous manifest's are assumed"
            ));
            return out;
        }
    };
    let mut keys: Vec<(String, String)> = cells
        .iter()
        .map(|c| (c.base.reference.clone(), c.platform().to_string()))
        .collect();
    keys.sort();
    keys.dedup();
    let found = crate::engines::resolve_bases(&engines, &keys, crate::engines::Fetch::Never);
    for (key, r) in keys.into_iter().zip(found) {
        if let Some(d) = r.digest {
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
        let digests = current_digests(&cells, &m);
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
