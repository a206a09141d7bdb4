//! `matrix prune --keep N`: the images of the last N runs stay, this matrix's others go.

use std::path::Path;

use crate::cli::PruneArgs;
use crate::engines::Engines;
use crate::error::{Error, Exit};
use crate::manifest::io;
use crate::prune;

pub fn run(args: &PruneArgs) -> Result<Exit, Error> {
    let m = io::read(&args.manifest).map_err(Error::Preflight)?;
    let engines = super::manifest_engines(&args.docker, &m.engines)?;
    let repo = m.repository.clone().ok_or_else(|| {
        Error::Preflight(format!(
            "{} does not name its repository (written by an older image-matrix)",
            args.manifest.display()
        ))
    })?;
    Ok(Exit::from_ok(prune_all(
        &engines,
        &repo,
        &args.manifest,
        args.keep as usize,
    )))
}

/// Prune every engine; one line each. False when an engine could not be pruned.
pub fn prune_all(engines: &Engines, repository: &str, manifest: &Path, keep: usize) -> bool {
    let (ids, runs) = prune::kept(&prune::history_dir(manifest), keep);
    if runs.is_empty() {
        crate::term::line(&format!(
            "prune: no run history beside {} yet; nothing removed",
            manifest.display()
        ));
        return true;
    }
    let mut ok = true;
    for e in engines.iter() {
        match prune::prune(&e.docker, repository, &ids) {
            Ok(p) => crate::term::line(&format!(
                "prune: engine {}: removed {} image{} of {repository} that none of the last {} run{} used, kept {}; freed {:.1} MB (build caches left alone)",
                e.name,
                p.removed,
                if p.removed == 1 { "" } else { "s" },
                runs.len(),
                if runs.len() == 1 { "" } else { "s" },
                p.kept,
                p.freed as f64 / 1e6
            )),
            Err(err) => {
                ok = false;
                crate::term::line(&format!("prune: engine {}: {err}", e.name));
            }
        }
    }
    ok
}
