//! `matrix push MANIFEST`: publish what a manifest built, from the engines that hold it.

use crate::cli::PushArgs;
use crate::error::{Error, Exit};
use crate::manifest::io;
use crate::run::publish;

pub fn run(matrix: &std::path::Path, args: &PushArgs) -> Result<Exit, Error> {
    let mut man = io::read(&args.manifest).map_err(Error::Preflight)?;
    let engines = super::manifest_engines(&args.docker, matrix, Some((&args.manifest, &man)))?;
    let opts = publish::Options {
        need_verified: man.cells.iter().any(|c| c.verification.is_some()),
        allow_partial: args.allow_partial,
        retries: args.retries,
        backoff: std::time::Duration::from_secs(2),
    };
    let result = publish::publish(&engines, &man, &opts, &crate::report::phase_lines).map(|p| {
        let complete = p.complete;
        p.apply(&mut man);
        complete
    });
    io::write(&args.manifest, &man).map_err(|source| Error::StaleManifest {
        path: args.manifest.clone(),
        source,
    })?;
    match result {
        Ok(all) => Ok(Exit::from_ok(all)),
        Err(why) => {
            crate::term::line(&format!("push: {why}"));
            Ok(Exit::Failed)
        }
    }
}
