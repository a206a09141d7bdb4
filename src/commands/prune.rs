//! `matrix prune --keep N`: the images of the last N runs stay, this matrix's others go.

use crate::cli::PruneArgs;
use crate::error::{Error, Exit};
use crate::manifest::io;
use crate::prune;

pub fn run(matrix: &std::path::Path, args: &PruneArgs) -> Result<Exit, Error> {
    let m = io::read(&args.manifest).map_err(Error::Preflight)?;
    if args.registry {
        return registry(args, &m);
    }
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

/// `--registry`: dated tags older than the last N nights, through the registry's API.
fn registry(args: &PruneArgs, m: &crate::manifest::Manifest) -> Result<Exit, Error> {
    use crate::registry::retention;
    let keep = args.keep_dated.unwrap_or(1) as usize;
    let repo = m
        .repository
        .as_deref()
        .map(crate::registry::Repo::parse)
        .transpose()
        .map_err(|e| Error::Preflight(format!("{}: {e}", args.manifest.display())))?;
    let client = super::publish::registry_client(&args.registry_access, repo.as_slice())?;
    let plan =
        retention::plan(&client, m, keep).map_err(|e| Error::Preflight(format!("prune: {e}")))?;
    let say = |s: &str| crate::term::line(s);
    say(&format!(
        "prune: keeping the nights {}; {} dated tags older",
        plan.kept.join(", "),
        plan.doomed.len()
    ));
    if args.dry_run {
        for d in &plan.doomed {
            let how = match &d.by {
                retention::By::Digest(x) => format!("with its image {x}"),
                retention::By::Tag => "alone (a kept tag names its image)".into(),
            };
            say(&format!(
                "prune: would delete {} (night {}) {how}",
                d.tag, d.date
            ));
        }
        return Ok(Exit::Success);
    }
    let done = retention::apply(&client, &plan, &say);
    let count =
        |f: &dyn Fn(&Result<bool, String>) -> bool| done.iter().filter(|(_, r)| f(r)).count();
    let failed = count(&|r| r.is_err());
    say(&format!(
        "prune: {} dated tags deleted, {} left (the registry deletes them only with their image), {failed} failed",
        count(&|r| r == &Ok(true)),
        count(&|r| r == &Ok(false)),
    ));
    Ok(Exit::from_ok(failed == 0))
}
