//! `matrix publish MANIFEST`: the public tags and indexes made through the registry's
//! API from the digests the shards staged; `matrix login`: credentials for it.

use std::time::Instant;

use crate::cli::{LoginArgs, PublishArgs};
use crate::error::{Error, Exit};
use crate::manifest::io;
use crate::registry::{client, publish, Repo};

pub fn run(args: &PublishArgs) -> Result<Exit, Error> {
    let started = Instant::now();
    let mut man = io::read(&args.manifest).map_err(Error::Preflight)?;
    let public = man
        .repository
        .as_deref()
        .ok_or_else(|| {
            Error::Preflight(format!(
                "{}: the manifest does not name its repository (written by an older image-matrix); build again to publish it",
                args.manifest.display()
            ))
        })
        .and_then(|r| Repo::parse(r).map_err(|e| Error::Preflight(format!("{}: {e}", args.manifest.display()))))?;
    let registry = registry_client(&args.registry, std::slice::from_ref(&public))?;
    let opts = publish::Options {
        need_verified: man.cells.iter().any(|c| c.verification.is_some()),
        allow_partial: args.allow_partial,
        platform_tags: args.platform_tags,
    };
    let result = publish::publish(&registry, &man, &opts, &crate::report::phase_lines);
    let outcome = match result {
        Ok(p) => {
            let complete = p.complete;
            crate::term::line(&summary(&p, started.elapsed().as_secs_f64()));
            p.apply_replacing(&mut man);
            Ok(complete)
        }
        Err(why) => Err(why),
    };
    io::write(&args.manifest, &man).map_err(|source| Error::StaleManifest {
        path: args.manifest.clone(),
        source,
    })?;
    match outcome {
        Ok(all) => Ok(Exit::from_ok(all)),
        Err(why) => {
            crate::term::line(&format!("publish: {why}"));
            Ok(Exit::Failed)
        }
    }
}

/// A registry client as the command line sets it up.
pub(super) fn registry_client(
    args: &crate::cli::RegistryArgs,
    repos: &[Repo],
) -> Result<client::Registry, Error> {
    let extra_ca = match &args.registry_ca {
        Some(p) => Some(
            std::fs::read(p)
                .map_err(|e| Error::Usage(format!("--registry-ca {}: {e}", p.display())))?,
        ),
        None => None,
    };
    let settings = client::Settings {
        insecure: args.insecure_registry.clone(),
        extra_ca,
        timeout: std::time::Duration::from_secs(args.registry_timeout.max(1)),
    };
    let refs: Vec<&Repo> = repos.iter().collect();
    client::Registry::new(&refs, &settings).map_err(Error::Preflight)
}

/// What a publish did, in one line.
fn summary(p: &crate::run::publish::Published, secs: f64) -> String {
    let moved = p
        .pushed
        .iter()
        .filter(|(_, x)| x.ok && !x.unchanged)
        .count();
    let kept = p.pushed.iter().filter(|(_, x)| x.unchanged).count();
    let failed = p.pushed.iter().filter(|(_, x)| !x.ok).count();
    let made = p.indexes.iter().filter(|x| x.ok && !x.unchanged).count();
    let kept_idx = p.indexes.iter().filter(|x| x.unchanged).count();
    let idx_failed = p.indexes.iter().filter(|x| !x.ok).count();
    if moved + made + failed + idx_failed == 0 {
        return format!(
            "publish: nothing changed: {kept} tags and {kept_idx} indexes already pointed at their digests ({secs:.1}s)"
        );
    }
    let mut s = format!(
        "publish: {moved} tags moved, {kept} already in place; {made} indexes made, {kept_idx} already in place"
    );
    if failed + idx_failed > 0 {
        s.push_str(&format!(
            "; {failed} tags and {idx_failed} indexes failed (run again to finish)"
        ));
    }
    s.push_str(&format!(" ({secs:.1}s)"));
    s
}

pub fn login(args: &LoginArgs) -> Result<Exit, Error> {
    let host = args.registry.trim_end_matches('/');
    Repo::parse(&format!("{host}/x"))
        .ok()
        .filter(|r| r.host == host || host == "docker.io")
        .ok_or_else(|| {
            Error::Usage(format!(
                "`{host}` is not a registry host: write HOST or HOST:PORT, e.g. registry.example:5000 (docker.io for Docker Hub)"
            ))
        })?;
    let mut secret = String::new();
    std::io::Read::read_to_string(&mut std::io::stdin(), &mut secret)
        .map_err(|e| Error::Usage(format!("--password-stdin: {e}")))?;
    let secret = secret.trim_end_matches(['\n', '\r']);
    if secret.is_empty() {
        return Err(Error::Usage(
            "--password-stdin: standard input was empty".into(),
        ));
    }
    let path =
        crate::registry::auth::store(host, &args.username, secret).map_err(Error::Preflight)?;
    crate::term::line(&format!(
        "login: credentials for {host} stored in {}",
        path.display()
    ));
    Ok(Exit::Success)
}
