//! `matrix prune --keep N`: the images of the last N runs stay, this matrix's others go.

use crate::cli::PruneArgs;
use crate::error::{Error, Exit};
use crate::manifest::io;
use crate::prune;

pub fn run(matrix: &std::path::Path, args: &PruneArgs) -> Result<Exit, Error> {
    let m = io::read(&args.manifest).map_err(Error::Preflight)?;
    let engines = super::manifest_engines(&args.docker, matrix, Some((&args.manifest, &m)))?;
    let repo = m.repository.clone().ok_or_else(|| {
        Error::Preflight(format!(
            "{} does not name its repository (written by an older image-matrix)",
            args.manifest.display()
        ))
    })?;
    Ok(Exit::from_ok(prune::prune_all(
        &engines,
        &repo,
        &args.manifest,
        args.keep as usize,
        &crate::term::line,
    )))
}
