//! `matrix manifest merge`: the manifests of shards joined into one.

use std::path::PathBuf;

use crate::error::{Error, Exit};
use crate::manifest::{io, merge};

pub fn run(inputs: &[PathBuf], output: &PathBuf, allow_partial: bool) -> Result<Exit, Error> {
    let m = merge::merge_files(inputs, allow_partial).map_err(Error::Preflight)?;
    io::write(output, &m).map_err(|e| Error::write(output, e))?;
    let n = inputs.len();
    crate::term::line(&format!(
        "merged {n} manifest{} ({} cells) into {}{}",
        if n == 1 { "" } else { "s" },
        m.cells.len(),
        output.display(),
        m.incomplete()
            .map(|why| format!("; incomplete: {why}"))
            .unwrap_or_default()
    ));
    Ok(Exit::Success)
}
