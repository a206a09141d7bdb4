//! `matrix plan`: what `build` would do, as a table, JSON, a bake file or a GitHub
//! Actions matrix; with `--diff`, what changes against a previous manifest.

use std::collections::HashMap;
use std::io::Write;

use super::{json_text, load_plan, print, select};
use crate::cli::{Cli, PlanArgs, PlanFormat};
use crate::error::{Error, Exit};
use crate::manifest::{drift, io};
use crate::plan::output;

/// The bases' digests as the engines hold them now: those of the previous run for
/// `--diff` (so that it sees a base that moved), the matrix's for bake (the client's
/// default engine when neither names any); nothing is pulled. Where no engine answers,
/// it says so and returns none: `--diff` then assumes the previous manifest's, bake
/// leaves out the labels that need them.
fn current_digests(
    cells: &[&crate::plan::Cell],
    configured: &[crate::config::engine::EngineSpec],
    recorded: &[crate::manifest::EngineRecord],
    assumed: &str,
) -> (drift::Digests, Vec<String>) {
    let client: std::path::PathBuf =
        std::env::var_os("DOCKER").map_or_else(|| "docker".into(), Into::into);
    let mut out = drift::Digests::new();
    let engines = crate::engines::specs(&[], None, configured, recorded)
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
            crate::term::line(&format!("note: base digests not checked ({e}); {assumed}"));
            return (out, Vec::new());
        }
    };
    let native: Vec<String> = engines
        .iter()
        .map(crate::engines::Engine::native_platform)
        .collect();
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
    (out, native)
}

/// What `build` would pass for each cell, for the bake file: the same requests
/// (`prepare::cell_request`), over the bases as the engines hold them now. A cell
/// whose base no engine holds gets no input-hash label (its identity is not known
/// until the base is pulled), and the plan says so.
fn bake_builds(
    plan: &crate::plan::Plan,
    cells: &[&crate::plan::Cell],
    args: &PlanArgs,
) -> HashMap<String, output::BakeBuild> {
    use crate::run::prepare;
    use rayon::prelude::*;
    let (digests, native) = current_digests(
        cells,
        &plan.settings.engines,
        &[],
        "the bake targets carry no input-hash label",
    );
    let settings = prepare::Settings {
        network: plan.settings.network.clone(),
        pull: args.pull,
        native,
        labels: super::image_labels(plan),
        bases: prepare::Bases {
            digests,
            holders: HashMap::new(),
        },
        cache: super::cache_settings(plan, &args.cache),
        ..prepare::Settings::default()
    };
    let paths = prepare::Paths {
        contexts: args.contexts.clone(),
        logs: "logs".into(),
        iid: "iid".into(),
    };
    let renderer = crate::render::Renderer::new(&plan.settings);
    // parents first: a framework image's identity covers its parent's
    let build = |c: &&crate::plan::Cell, parent: Option<&str>| {
        if settings.identity_digests(c).contains(&prepare::UNRESOLVED) {
            let r = prepare::unresolved_request(plan, c, &paths, &settings);
            return (c.id.clone(), r, None);
        }
        let (r, hash) = prepare::cell_request(plan, &renderer, c, &paths, &settings, parent);
        (c.id.clone(), r, Some(hash))
    };
    let mut built: Vec<_> = cells
        .par_iter()
        .filter(|c| c.framework.is_none())
        .map(|c| build(c, None))
        .collect();
    let parent_hashes: HashMap<String, String> = built
        .iter()
        .filter_map(|(id, _, hash)| Some((id.clone(), hash.clone()?)))
        .collect();
    built.extend(
        cells
            .par_iter()
            .filter(|c| c.framework.is_some())
            .map(|c| {
                build(
                    c,
                    c.parent()
                        .and_then(|p| parent_hashes.get(p))
                        .map(String::as_str),
                )
            })
            .collect::<Vec<_>>(),
    );
    let builds: Vec<(String, output::BakeBuild, bool)> = built
        .into_iter()
        .map(|(id, r, hash)| {
            let b = output::BakeBuild {
                labels: r.labels,
                network: r.network,
                pull: r.pull,
                cache_from: r.cache_from,
                inline_cache: r.inline_cache,
            };
            (id, b, hash.is_some())
        })
        .collect();
    let by_id: HashMap<&str, &crate::plan::Cell> =
        cells.iter().map(|c| (c.id.as_str(), *c)).collect();
    let mut unknown: Vec<String> = builds
        .iter()
        .filter(|b| !b.2)
        .filter_map(|b| by_id.get(b.0.as_str()))
        .map(|c| format!("{} ({})", c.base.reference, c.platform()))
        .collect();
    unknown.sort();
    unknown.dedup();
    if !unknown.is_empty() {
        crate::term::line(&format!(
            "warning: no engine holds {}: its bake targets carry no input-hash label, so `matrix build` builds them again after bake (pull the bases first to have them recognised)",
            unknown.join(", ")
        ));
    }
    builds.into_iter().map(|(id, b, _)| (id, b)).collect()
}

pub fn run(cli: &Cli, args: &PlanArgs) -> Result<Exit, Error> {
    let plan = load_plan(cli, &args.select)?;
    let cells = select(&plan, &args.select);
    if let Some(prev) = &args.diff {
        let m = io::read(prev).map_err(|e| Error::Preflight(format!("--diff: {e}")))?;
        let (digests, _) = current_digests(
            &cells,
            &[],
            &m.engines,
            "the previous manifest's are assumed",
        );
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
            let builds = bake_builds(&plan, &cells, args);
            let none = output::BakeBuild::default();
            let build = |c: &crate::plan::Cell| builds.get(&c.id).unwrap_or(&none);
            crate::term::out_with(|w| output::write_bake(w, &cells, &args.contexts, &build))
                .map_err(|source| Error::Output {
                    what: "the bake file",
                    source,
                })?;
            // the process ends here: freeing 10,000 requests one by one took 7 % of it
            std::mem::forget(builds);
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
    // nor is a 10,000-cell plan worth freeing on the way out (5 % of `--format json`)
    std::mem::forget(plan);
    Ok(Exit::Success)
}
