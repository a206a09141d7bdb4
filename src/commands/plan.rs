//! `matrix plan`: what `build` would do, as a table, JSON, a bake file, a GitHub
//! Actions matrix or a GitLab CI child pipeline; with `--diff`, what changes against a previous manifest.

use std::collections::{HashMap, HashSet};
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
    let asked = Asked::new(connect(configured, recorded), Vec::new());
    asked.finish(cells, assumed)
}

/// The engines a plan asks about its bases, and what they said.
struct Asked {
    engines: Result<crate::engines::Engines, Error>,
    /// The (base reference, platform)s asked about.
    keys: HashSet<(String, String)>,
    digests: drift::Digests,
}

/// The engines a manifest recorded, else the matrix's, else the client's default one,
/// as they answer now.
fn connect(
    configured: &[crate::config::engine::EngineSpec],
    recorded: &[crate::manifest::EngineRecord],
) -> Result<crate::engines::Engines, Error> {
    let client: std::path::PathBuf =
        std::env::var_os("DOCKER").map_or_else(|| "docker".into(), Into::into);
    crate::engines::specs(&[], None, configured, recorded)
        .map_err(Error::Usage)
        .and_then(|specs| {
            super::connect_engines(
                &client,
                crate::docker::Builder::Auto,
                specs,
                std::num::NonZeroUsize::MIN,
            )
        })
        .map(|c| c.engines)
}

impl Asked {
    /// Ask `engines` about `keys`.
    fn new(engines: Result<crate::engines::Engines, Error>, keys: Vec<(String, String)>) -> Self {
        let mut asked = Asked {
            engines,
            keys: HashSet::new(),
            digests: drift::Digests::default(),
        };
        asked.ask(keys);
        asked
    }

    fn ask(&mut self, keys: Vec<(String, String)>) {
        let Ok(engines) = &self.engines else { return };
        // nothing is pulled, so no pull fails: there are no warnings to say
        let found =
            crate::engines::resolve_bases_quiet(engines, &keys, crate::engines::Fetch::Never);
        for (key, r) in keys.into_iter().zip(found.bases) {
            if let Some(d) = r.digest {
                self.digests.insert(key.clone(), d);
            }
            self.keys.insert(key);
        }
    }

    /// The digests of the cells' bases (asking about any not asked yet) and the
    /// engines' native platforms; where no engine answers, a note, and none.
    fn finish(
        mut self,
        cells: &[&crate::plan::Cell],
        assumed: &str,
    ) -> (drift::Digests, Vec<String>) {
        if let Err(e) = &self.engines {
            crate::term::line(&format!("note: base digests not checked ({e}); {assumed}"));
            return (drift::Digests::default(), Vec::new());
        }
        // cells of one base and platform mostly come together: each run is looked up once
        let mut last = None;
        let mut keys: Vec<(&str, &str)> = cells
            .iter()
            .map(|c| (c.base.reference.as_str(), c.platform()))
            .filter(|k| last.replace(*k) != Some(*k))
            .filter(|k| !self.keys.contains(crate::plan::fast::pair(k)))
            .collect();
        keys.sort_unstable();
        keys.dedup();
        let keys: Vec<(String, String)> = keys
            .into_iter()
            .map(|(r, p)| (r.to_string(), p.to_string()))
            .collect();
        if !keys.is_empty() {
            self.ask(keys);
        }
        let native = self
            .engines
            .iter()
            .flat_map(|e| e.iter().map(crate::engines::Engine::native_platform))
            .collect();
        (self.digests, native)
    }
}

/// What bake asks of the engines and of git, in the background while the matrix
/// expands: the client's start-up and its questions take about as long as planning
/// 10,000 cells.
#[derive(Default)]
struct Early {
    asked: std::sync::Mutex<Option<std::thread::JoinHandle<Asked>>>,
}

impl Early {
    /// The hook for [`super::load_plan_with`]: ask the matrix's engines about its bases.
    fn start(&self, settings: &crate::config::settings::Settings, keys: Vec<(String, String)>) {
        let configured = settings.engines.clone();
        let handle = std::thread::spawn(move || Asked::new(connect(&configured, &[]), keys));
        *self
            .asked
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = Some(handle);
    }

    fn finish(
        &self,
        plan: &crate::plan::Plan,
        cells: &[&crate::plan::Cell],
        assumed: &str,
    ) -> (drift::Digests, Vec<String>) {
        let started = self
            .asked
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .take();
        match started.map(std::thread::JoinHandle::join) {
            Some(Ok(asked)) => asked.finish(cells, assumed),
            _ => current_digests(cells, &plan.settings.engines, &[], assumed),
        }
    }
}

/// What `build` would pass for each cell, for the bake file: the same options
/// (`prepare::build_options`) over the identities `build` would work out, with the
/// bases as the engines hold them now. A cell whose base no engine holds gets no
/// input-hash label (its identity is not known until the base is pulled), and the
/// plan says so.
fn write_bake(
    w: &mut crate::term::Out,
    plan: &crate::plan::Plan,
    cells: &[&crate::plan::Cell],
    args: &PlanArgs,
    early: &Early,
    labels: Vec<(String, String)>,
) -> std::io::Result<()> {
    use crate::run::prepare;
    let (digests, native) = early.finish(plan, cells, "the bake targets carry no input-hash label");
    let settings = prepare::Settings {
        network: plan.settings.network.clone(),
        pull: args.pull,
        native,
        labels,
        bases: prepare::Bases {
            digests,
            holders: HashMap::new(),
        },
        cache: super::cache_settings(plan, &args.cache),
        ..prepare::Settings::default()
    };
    let identities = identities(plan, cells, &settings);
    let mut unknown: Vec<String> = cells
        .iter()
        .zip(&identities)
        .filter(|(_, id)| id.is_none())
        .map(|(c, _)| format!("{} ({})", c.base.reference, c.platform()))
        .collect();
    unknown.sort();
    unknown.dedup();
    if !unknown.is_empty() {
        crate::term::line(&format!(
            "warning: no engine holds {}: its bake targets carry no input-hash label, so `matrix build` builds them again after bake (pull the bases first to have them recognised)",
            unknown.join(", ")
        ));
    }
    let repository = plan.settings.repository.as_str();
    let build = |i: usize| {
        let hash = identities[i].as_deref().unwrap_or(prepare::UNRESOLVED);
        prepare::build_options(cells[i], repository, hash, &settings)
    };
    output::write_bake(w, cells, &args.contexts, &build)?;
    // the process ends here: freeing 10,000 identities one by one is time for nothing
    std::mem::forget(identities);
    Ok(())
}

/// Each cell's identity as `build` works it out, on every core, parents before their
/// framework and family images (whose identity covers the parent's); none where a base is not
/// held by any engine.
fn identities(
    plan: &crate::plan::Plan,
    cells: &[&crate::plan::Cell],
    s: &crate::run::prepare::Settings,
) -> Vec<Option<String>> {
    use rayon::prelude::*;
    let renderer = crate::render::Renderer::new(&plan.settings);
    let identity = |c: &crate::plan::Cell, parent: Option<&str>| {
        let digests = s.identity_digests(c);
        if digests.contains(&crate::render::identity::UNRESOLVED) {
            return None;
        }
        Some(crate::run::prepare::identity(
            &renderer, c, &digests, parent,
        ))
    };
    let mut out: Vec<Option<String>> = cells
        .par_iter()
        .map(|c| (!c.is_layer()).then(|| identity(c, None)).flatten())
        .collect();
    if cells.iter().any(|c| c.is_layer()) {
        // a layer's depth is its parent's plus one (the plan puts parents first);
        // each depth is worked out on every core once the one above it is done
        let index: HashMap<&str, usize> = cells
            .iter()
            .enumerate()
            .map(|(i, c)| (c.id.as_str(), i))
            .collect();
        let mut depth = vec![0usize; cells.len()];
        for (i, c) in cells.iter().enumerate() {
            if let Some(&p) = c.parent().and_then(|p| index.get(p)) {
                depth[i] = depth[p] + 1;
            }
        }
        let deepest = depth.iter().copied().max().unwrap_or(0);
        for level in 1..=deepest {
            let children: Vec<(usize, Option<String>)> = cells
                .par_iter()
                .enumerate()
                .filter(|(i, _)| depth[*i] == level)
                .map(|(i, c)| {
                    let parent = c.parent().and_then(|p| index.get(p));
                    let parent = parent.and_then(|&p| out[p].as_deref());
                    (i, identity(c, parent))
                })
                .collect();
            for (i, hash) in children {
                out[i] = hash;
            }
        }
    }
    out
}

pub fn run(cli: &Cli, args: &PlanArgs) -> Result<Exit, Error> {
    let bake = args.format == PlanFormat::Bake && args.diff.is_none();
    let early = Early::default();
    // the images' labels ask git for the revision: beside planning, too
    let labels = bake.then(|| {
        let matrix = cli.matrix.clone();
        std::thread::spawn(move || super::image_labels_at(&matrix))
    });
    let plan = if bake {
        super::load_plan_with(cli, &args.select, &|s, keys| early.start(s, keys))?
    } else {
        load_plan(cli, &args.select)?
    };
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
            let labels = match labels.map(std::thread::JoinHandle::join) {
                Some(Ok(l)) => l,
                _ => super::image_labels(&plan),
            };
            crate::term::out_with(|w| write_bake(w, &plan, &cells, args, &early, labels)).map_err(
                |source| Error::Output {
                    what: "the bake file",
                    source,
                },
            )?;
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
        PlanFormat::Gitlab => {
            let Some(n) = args.shards else {
                return Err(Error::Usage(
                    "--format gitlab needs --shards N: the child pipeline has one build job per shard".into(),
                ));
            };
            let matrix = cli.matrix.to_string_lossy();
            let filters = args
                .select
                .filters
                .iter()
                .map(|f| format!("{}={}", f.key.name(), f.pattern))
                .collect();
            let sel = output::GitlabSelection {
                matrix: (cli.matrix != std::path::Path::new("matrix.yaml")).then_some(&*matrix),
                filters,
                date: &plan.date,
            };
            print(
                "the pipeline",
                &output::gitlab_pipeline(&cells, usize::from(n), &sel),
            )?;
        }
    }
    // nor is a 10,000-cell plan worth freeing on the way out (5 % of `--format json`)
    std::mem::forget(plan);
    Ok(Exit::Success)
}
