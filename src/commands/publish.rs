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
        signer: args.sign_key.as_deref().map(signing_key).transpose()?,
        sbom_dir: Some(
            args.manifest
                .parent()
                .filter(|p| !p.as_os_str().is_empty())
                .unwrap_or(std::path::Path::new("."))
                .to_path_buf(),
        ),
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
    let signed = p.signatures.iter().filter(|x| !x.unchanged).count();
    if moved + made + failed + idx_failed + signed == 0 {
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
    if !p.signatures.is_empty() {
        let made = p.signatures.iter().filter(|x| x.ok && !x.unchanged).count();
        let kept = p.signatures.iter().filter(|x| x.unchanged).count();
        let bad = p.signatures.iter().filter(|x| !x.ok).count();
        s.push_str(&format!("; {made} signatures made, {kept} already there"));
        if bad > 0 {
            s.push_str(&format!(", {bad} failed"));
        }
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

/// The password of signing keys: IMAGE_MATRIX_SIGNING_PASSWORD, else COSIGN_PASSWORD,
/// else empty.
fn signing_password() -> Vec<u8> {
    std::env::var_os("IMAGE_MATRIX_SIGNING_PASSWORD")
        .or_else(|| std::env::var_os("COSIGN_PASSWORD"))
        .map(|p| std::os::unix::ffi::OsStrExt::as_bytes(p.as_os_str()).to_vec())
        .unwrap_or_default()
}

/// `--sign-key FILE` or `--sign-key env:VAR`, opened.
fn signing_key(spec: &str) -> Result<p256::ecdsa::SigningKey, Error> {
    let (pem, from) = match spec.strip_prefix("env:") {
        Some(var) => (
            std::env::var(var).map_err(|_| {
                Error::Usage(format!("--sign-key {spec}: the variable {var} is not set"))
            })?,
            format!("the variable {var}"),
        ),
        None => (
            std::fs::read_to_string(spec)
                .map_err(|e| Error::Usage(format!("--sign-key {spec}: {e}")))?,
            spec.to_string(),
        ),
    };
    crate::signing::decrypt(&pem, &signing_password())
        .map_err(|e| Error::Usage(format!("--sign-key: {from}: {e}")))
}

pub fn signature(c: &crate::cli::SignatureCommand) -> Result<Exit, Error> {
    match c {
        crate::cli::SignatureCommand::Keygen { output } => keygen(output),
        crate::cli::SignatureCommand::Verify {
            key,
            reference,
            registry,
        } => verify_signature(key, reference, registry),
    }
}

fn keygen(prefix: &std::path::Path) -> Result<Exit, Error> {
    let with = |ext: &str| {
        let mut p = prefix.as_os_str().to_owned();
        p.push(ext);
        std::path::PathBuf::from(p)
    };
    let (private, public) = (with(".key"), with(".pub"));
    for p in [&private, &public] {
        if p.exists() {
            return Err(Error::Usage(format!(
                "{} exists; not replacing a key (move it away first)",
                p.display()
            )));
        }
    }
    let password = signing_password();
    if password.is_empty() {
        crate::term::line("signature: IMAGE_MATRIX_SIGNING_PASSWORD is not set: the private key is sealed with an empty password");
    }
    let (sealed, open) = crate::signing::generate(&password).map_err(Error::Preflight)?;
    let write = |path: &std::path::Path, text: &str, mode: u32| {
        use std::io::Write as _;
        use std::os::unix::fs::OpenOptionsExt as _;
        std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(mode)
            .open(path)
            .and_then(|mut f| f.write_all(text.as_bytes()))
            .map_err(|e| Error::Preflight(format!("{}: {e}", path.display())))
    };
    write(&private, &sealed, 0o600)?;
    write(&public, &open, 0o644)?;
    crate::term::line(&format!(
        "signature: private key {} (keep it secret), public key {}",
        private.display(),
        public.display()
    ));
    Ok(Exit::Success)
}

fn verify_signature(
    key: &std::path::Path,
    reference: &str,
    args: &crate::cli::RegistryArgs,
) -> Result<Exit, Error> {
    let pem = std::fs::read_to_string(key)
        .map_err(|e| Error::Usage(format!("--key {}: {e}", key.display())))?;
    let vk = crate::signing::load_public(&pem)
        .map_err(|e| Error::Usage(format!("--key {}: {e}", key.display())))?;
    let (name, tag, digest) = crate::reference::split(reference);
    let repo = Repo::parse(name).map_err(Error::Usage)?;
    let client = registry_client(args, std::slice::from_ref(&repo))?;
    let at = digest.or(tag).unwrap_or("latest");
    let Some(top) = crate::registry::Api::manifest(&client, &repo, at).map_err(Error::Preflight)?
    else {
        crate::term::line(&format!("signature: {reference} does not exist"));
        return Ok(Exit::Failed);
    };
    // an index and each platform it lists
    let mut subjects = vec![top.digest.clone()];
    if let Ok(v) = serde_json::from_slice::<serde_json::Value>(&top.body) {
        for m in v["manifests"].as_array().into_iter().flatten() {
            if let Some(d) = m["digest"].as_str() {
                subjects.push(d.to_string());
            }
        }
    }
    let mut ok = true;
    for (i, d) in subjects.iter().enumerate() {
        match crate::registry::sign::check(&client, &repo, d, &vk) {
            Ok(n) => crate::term::line(&format!(
                "signature: {repo}@{d}: {n} valid signature(s) by {}",
                key.display()
            )),
            Err(e) => {
                ok = false;
                crate::term::line(&format!("signature: {e}"));
            }
        }
        // an image (not the index above its platforms) carries its provenance
        if i > 0 || subjects.len() == 1 {
            match crate::registry::sign::attestations(&client, &repo, d, &vk) {
                Ok(st) => crate::term::line(&format!(
                    "signature: {repo}@{d}: provenance signed by {}: {}",
                    key.display(),
                    provenance_line(&st)
                )),
                Err(e) => {
                    ok = false;
                    crate::term::line(&format!("signature: {e}"));
                }
            }
        }
    }
    Ok(Exit::from_ok(ok))
}

/// What a provenance statement says, in one line.
fn provenance_line(statements: &[serde_json::Value]) -> String {
    statements
        .iter()
        .map(|st| {
            if st["predicateType"] == crate::provenance::SBOM_PREDICATE_TYPE {
                return format!(
                    "{} ({} components)",
                    crate::provenance::SBOM_PREDICATE_TYPE,
                    st["predicate"]["components"].as_array().map_or(0, Vec::len)
                );
            }
            let def = &st["predicate"]["buildDefinition"];
            let deps: Vec<String> = def["resolvedDependencies"]
                .as_array()
                .into_iter()
                .flatten()
                .map(|d| {
                    format!(
                        "{} sha256:{}",
                        d["uri"].as_str().or(d["name"].as_str()).unwrap_or("?"),
                        d["digest"]["sha256"].as_str().unwrap_or("?")
                    )
                })
                .collect();
            format!(
                "{} cell {}, matrix sha256 {}, from {}",
                st["predicateType"].as_str().unwrap_or("?"),
                def["externalParameters"]["cell"].as_str().unwrap_or("?"),
                def["externalParameters"]["matrix"]["sha256"]
                    .as_str()
                    .unwrap_or("?"),
                if deps.is_empty() {
                    "(no recorded inputs)".to_string()
                } else {
                    deps.join(", ")
                }
            )
        })
        .collect::<Vec<_>>()
        .join("; ")
}
