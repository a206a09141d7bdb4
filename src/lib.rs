//! image-matrix: plan, build, verify and publish a matrix of ML container images.
//!
//! Data flows one way: CLI args → [`raw::RawConfig`] → [`plan::Plan`] → rendered build
//! contexts ([`render`]) → build outcomes ([`scheduler`], via an [`executor::Executor`])
//! → [`manifest::Manifest`]. Only [`yaml`] names the YAML library, only [`docker`]
//! spawns processes, only [`reporter`] draws on the terminal, only [`manifest`] writes
//! the manifest.

pub mod base;
pub mod catalogue;
pub mod cli;
pub mod diag;
pub mod docker;
pub mod drift;
pub mod engine;
pub mod executor;
pub mod exit;
pub mod filter;
pub mod manifest;
pub mod nightly;
pub mod plan;
pub mod plan_out;
pub mod raw;
pub mod reference;
pub mod render;
pub mod reporter;
pub mod scheduler;
pub mod settings;
pub mod shard;
pub mod verify;
pub mod version;
pub mod yaml;

use std::io::Write;

use cli::{Cli, Command, PlanFormat};

/// Today as `YYYYMMDD` (UTC).
pub fn today() -> String {
    let now = humantime::format_rfc3339_seconds(std::time::SystemTime::now()).to_string();
    now[..10].replace('-', "")
}

/// Print to stdout; a closed pipe (`matrix plan | head`) is not an error.
pub fn out(text: &str) {
    let mut o = std::io::stdout().lock();
    let _ = o.write_all(text.as_bytes()).and_then(|()| o.flush());
}

pub fn err(text: &str) {
    let mut e = std::io::stderr().lock();
    let _ = writeln!(e, "{text}");
}

fn load_plan(cli: &Cli, select: &cli::Selection) -> Result<plan::Plan, i32> {
    let opts = plan::PlanOptions {
        date: select.date.clone().unwrap_or_else(today),
    };
    match plan::load(&cli.matrix, &opts) {
        Ok(p) => {
            for w in &p.warnings {
                err(&w.to_string());
            }
            Ok(p)
        }
        Err(e @ plan::PlanError::Read { .. }) => {
            err(&format!("error: {e}"));
            Err(exit::INVALID_MATRIX)
        }
        Err(e) => {
            err(&e.to_string());
            Err(exit::INVALID_MATRIX)
        }
    }
}

fn json_text(v: &serde_json::Value) -> String {
    let mut s = serde_json::to_string_pretty(v).unwrap_or_default();
    s.push('\n');
    s
}

/// The cells a command works on: the filters, then the shard.
pub fn select<'a>(plan: &'a plan::Plan, s: &cli::Selection) -> Vec<&'a plan::Cell> {
    let cells = filter::select(&plan.cells, &s.filters);
    match s.shard {
        Some(shard) => shard::select(&cells, shard),
        None => cells,
    }
}

/// Run a parsed command line and return the process exit code.
pub fn run(cli: Cli) -> i32 {
    match &cli.command {
        Command::Plan(args) => {
            let plan = match load_plan(&cli, &args.select) {
                Ok(p) => p,
                Err(code) => return code,
            };
            let cells = select(&plan, &args.select);
            if let Some(prev) = &args.diff {
                let m = match manifest::read(prev) {
                    Ok(m) => m,
                    Err(e) => {
                        err(&format!("error: --diff: {e}"));
                        return exit::PREFLIGHT;
                    }
                };
                let changes = drift::diff(&plan, &cells, &m);
                out(&match args.format {
                    PlanFormat::Json => json_text(
                        &serde_json::json!({ "version": 1, "against": prev.display().to_string(), "cells": changes }),
                    ),
                    _ => drift::table(&changes),
                });
                return exit::OK;
            }
            let text = match args.format {
                PlanFormat::Table => plan_out::table(&plan, &cells),
                PlanFormat::Json => {
                    // Streamed: a 10,000-cell plan never exists as a JSON tree in memory.
                    let mut o = std::io::BufWriter::new(std::io::stdout().lock());
                    let _ = serde_json::to_writer_pretty(&mut o, &plan_out::json(&plan, &cells))
                        .map_err(std::io::Error::from)
                        .and_then(|()| writeln!(o))
                        .and_then(|()| o.flush());
                    return exit::OK;
                }
                PlanFormat::Bake => json_text(&plan_out::bake(&plan, &cells, &args.contexts)),
                PlanFormat::Gha if args.shards.is_some() => {
                    let n = usize::from(args.shards.unwrap_or(1));
                    json_text(&plan_out::gha_shards(&cells, n))
                }
                PlanFormat::Gha => {
                    if cells.len() > 256 {
                        err(&format!("warning: {} cells exceed GitHub Actions' 256 jobs per matrix; use --filter to split", cells.len()));
                    }
                    json_text(&plan_out::gha(&cells))
                }
            };
            out(&text);
            exit::OK
        }
        Command::Render(args) => {
            let plan = match load_plan(&cli, &args.select) {
                Ok(p) => p,
                Err(code) => return code,
            };
            let cells = select(&plan, &args.select);
            for c in &cells {
                let ctx = render::render(&plan.settings, c);
                let dir = args.output.join(&c.id);
                if let Err(e) = render::write(&ctx, &dir) {
                    err(&format!("error: cannot write {}: {e}", dir.display()));
                    return exit::PREFLIGHT;
                }
                out(&format!("{}\n", dir.display()));
            }
            err(&format!(
                "rendered {} context{} under {}; build one with: docker build -t TAG {}/<id>",
                cells.len(),
                if cells.len() == 1 { "" } else { "s" },
                args.output.display(),
                args.output.display()
            ));
            exit::OK
        }
        Command::Build(args) => {
            if args.jobs == 0 {
                err("error: -j must be at least 1");
                return exit::USAGE;
            }
            let plan = match load_plan(&cli, &args.select) {
                Ok(p) => p,
                Err(code) => return code,
            };
            nightly::build(&plan, args)
        }
        Command::Verify(args) => verify::run(args),
        Command::Push(args) => nightly::push(args),
        Command::Manifest(cli::ManifestCommand::Merge { inputs, output }) => {
            match manifest::merge_files(inputs) {
                Ok(m) => match manifest::write(output, &m) {
                    Ok(()) => {
                        err(&format!(
                            "merged {} manifests ({} cells) into {}",
                            inputs.len(),
                            m.cells.len(),
                            output.display()
                        ));
                        exit::OK
                    }
                    Err(e) => {
                        err(&format!("error: cannot write {}: {e}", output.display()));
                        exit::PREFLIGHT
                    }
                },
                Err(e) => {
                    err(&format!("error: {e}"));
                    exit::FAILED
                }
            }
        }
    }
}
