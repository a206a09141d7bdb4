//! `matrix manifest merge`: the manifests of shards joined into one, with each cell's
//! SBOM copied beside the merged manifest (so the merged record's `sbom/<cell>.json`
//! resolves where `report` and `publish` read it).

use std::path::{Path, PathBuf};

use crate::error::{Error, Exit};
use crate::manifest::{io, merge, Manifest};

pub fn run(inputs: &[PathBuf], output: &PathBuf, allow_partial: bool) -> Result<Exit, Error> {
    let mut read = Vec::new();
    for p in inputs {
        read.push((p.clone(), io::read(p).map_err(Error::Preflight)?));
    }
    let named = read
        .iter()
        .map(|(p, m)| (p.display().to_string(), m.clone()))
        .collect();
    let mut m = merge::merge(named, allow_partial).map_err(Error::Preflight)?;
    let copied = copy_sboms(&read, &mut m, output);
    io::write(output, &m).map_err(|e| Error::write(output, e))?;
    let n = inputs.len();
    crate::term::line(&format!(
        "merged {n} manifest{} ({} cells, {copied} SBOMs) into {}{}",
        if n == 1 { "" } else { "s" },
        m.cells.len(),
        output.display(),
        m.incomplete()
            .map(|why| format!("; incomplete: {why}"))
            .unwrap_or_default()
    ));
    Ok(Exit::Success)
}

/// Each merged cell's SBOM copied from beside the shard manifest that recorded it to
/// beside the merged one, when it is the file recorded (its sha256); a record whose
/// file cannot be copied keeps its counts, loses its path and says why. Returns how
/// many were copied.
fn copy_sboms(inputs: &[(PathBuf, Manifest)], merged: &mut Manifest, output: &Path) -> usize {
    let out_dir = output.parent().unwrap_or(Path::new("."));
    let mut copied = 0;
    for c in &mut merged.cells {
        let Some(rec) = c.sbom.as_mut() else {
            continue;
        };
        let Some(rel) = crate::report::packages::link(rec).map(str::to_string) else {
            continue;
        };
        let from = inputs.iter().find_map(|(p, m)| {
            m.cells
                .iter()
                .any(|x| {
                    x.id == c.id && x.sbom.as_ref().and_then(|s| s.path.as_ref()) == Some(&rel)
                })
                .then(|| p.parent().unwrap_or(Path::new(".")).join(&rel))
        });
        let to = out_dir.join(&rel);
        let done = from
            .ok_or_else(|| "no shard manifest records it".to_string())
            .and_then(|from| {
                if from == to {
                    return Ok(());
                }
                let bytes = std::fs::read(&from).map_err(|e| format!("{}: {e}", from.display()))?;
                if rec.sha256.as_deref() != Some(crate::sbom::sha256_hex(&bytes).as_str()) {
                    return Err(format!(
                        "{} changed since its run recorded it",
                        from.display()
                    ));
                }
                std::fs::create_dir_all(to.parent().unwrap_or(out_dir))
                    .and_then(|()| std::fs::write(&to, &bytes))
                    .map_err(|e| format!("{}: {e}", to.display()))
            });
        match done {
            Ok(()) => copied += 1,
            Err(why) => {
                rec.path = None;
                rec.notes.push(format!("SBOM not copied by merge: {why}"));
            }
        }
    }
    copied
}
