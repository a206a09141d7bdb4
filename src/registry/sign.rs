//! Signatures stored and checked in the registry the way cosign stores them (see
//! `crate::signing` for the format): each signed digest gets an OCI image under the
//! tag `sha256-<hex>.sig` whose one layer is the signed payload, the signature in its
//! annotation.

use p256::ecdsa::{SigningKey, VerifyingKey};

use crate::manifest::SignatureRecord;
use crate::run::events::{Listen, Phase};
use crate::signing;

use super::{Api, Fetched, Repo, OCI_MANIFEST};

/// A cosign-style artifact: an OCI image whose layers are `layers` (bytes, media type,
/// annotations), with a config that lists them; its blobs are uploaded, its manifest
/// returned (not yet tagged).
fn artifact(
    api: &dyn Api,
    repo: &Repo,
    layers: &[(&[u8], &str, serde_json::Value)],
) -> Result<Fetched, String> {
    let mut descriptors = Vec::new();
    let mut diff_ids = Vec::new();
    for (bytes, media_type, annotations) in layers {
        let d = api.put_blob(repo, bytes)?;
        diff_ids.push(d.clone());
        descriptors.push(serde_json::json!({
            "mediaType": media_type,
            "size": bytes.len(),
            "digest": d,
            "annotations": annotations,
        }));
    }
    let config = serde_json::to_vec(&serde_json::json!({
        "architecture": "",
        "os": "",
        "config": {},
        "rootfs": {"type": "layers", "diff_ids": diff_ids},
    }))
    .unwrap_or_default();
    let config_digest = api.put_blob(repo, &config)?;
    let body = serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "size": config.len(), "digest": config_digest},
        "layers": descriptors,
    }))
    .unwrap_or_default();
    Ok(Fetched {
        digest: super::sha256_digest(&body),
        body,
        media_type: OCI_MANIFEST.into(),
    })
}

/// The signature image of `digest` in `repo`: its manifest, after uploading its blobs.
fn signature_image(
    api: &dyn Api,
    repo: &Repo,
    digest: &str,
    key: &SigningKey,
) -> Result<Fetched, String> {
    let payload = signing::payload(&repo.to_string(), digest);
    let signature = signing::sign(key, &payload);
    artifact(
        api,
        repo,
        &[(
            &payload,
            signing::PAYLOAD_MEDIA_TYPE,
            serde_json::json!({ signing::SIGNATURE_ANNOTATION: signature }),
        )],
    )
}

/// Sign every subject; one record each, said as it happens.
pub fn store_all(
    api: &dyn Api,
    repo: &Repo,
    subjects: &[&str],
    key: &SigningKey,
    listen: Listen,
) -> Vec<SignatureRecord> {
    let mut out = Vec::new();
    for digest in subjects {
        let tag = format!("{repo}:{}", signing::signature_tag(digest));
        let done = signature_image(api, repo, digest, key)
            .and_then(|image| super::move_tag(api, repo, &tag, &image));
        let rec = SignatureRecord {
            subject: digest.to_string(),
            tag,
            ok: done.is_ok(),
            unchanged: done.as_ref().is_ok_and(|u| *u),
            error: done.err(),
        };
        listen(&Phase::Info {
            id: None,
            text: match (&rec.error, rec.unchanged) {
                (Some(e), _) => format!("sign {digest}: failed: {e}"),
                (None, true) => format!("sign {digest}: unchanged ({})", rec.tag),
                (None, false) => format!("sign {digest}: ok ({})", rec.tag),
            },
        });
        out.push(rec);
    }
    out
}

/// How many valid signatures by `key` the registry holds for `digest` in `repo`; an
/// error says why there is none.
pub fn check(
    api: &dyn Api,
    repo: &Repo,
    digest: &str,
    key: &VerifyingKey,
) -> Result<usize, String> {
    let tag = signing::signature_tag(digest);
    let Some(sig) = api.manifest(repo, &tag)? else {
        return Err(format!(
            "{repo}@{digest} has no signature ({repo}:{tag} does not exist)"
        ));
    };
    let v: serde_json::Value =
        serde_json::from_slice(&sig.body).map_err(|e| format!("{repo}:{tag}: not JSON: {e}"))?;
    let mut valid = 0;
    let mut why = Vec::new();
    for layer in v["layers"].as_array().into_iter().flatten() {
        let (Some(d), Some(s)) = (
            layer["digest"].as_str(),
            layer["annotations"][signing::SIGNATURE_ANNOTATION].as_str(),
        ) else {
            continue;
        };
        let Some(payload) = api.blob(repo, d)? else {
            why.push(format!("payload {d} missing"));
            continue;
        };
        if super::sha256_digest(&payload) != d {
            why.push(format!("payload {d} does not match its digest"));
        } else if !signing::verify(key, &payload, s) {
            why.push("a signature not made by this key".to_string());
        } else if let Err(e) = signing::payload_names(&payload, &repo.to_string(), digest) {
            why.push(e);
        } else {
            valid += 1;
        }
    }
    if valid == 0 {
        return Err(format!(
            "{repo}@{digest}: no valid signature by this key ({})",
            if why.is_empty() {
                "no signature layers".into()
            } else {
                why.join("; ")
            }
        ));
    }
    Ok(valid)
}

/// The tag cosign stores the attestations of `digest` under.
pub fn attestation_tag(digest: &str) -> String {
    format!("{}.att", digest.replace(':', "-"))
}

/// Store signed attestations (DSSE envelopes, with their predicate types) of `digest`
/// as cosign does: one OCI image under `sha256-<hex>.att`, a layer per envelope.
pub fn store_attestations(
    api: &dyn Api,
    repo: &Repo,
    digest: &str,
    envelopes: &[(&str, Vec<u8>)],
) -> SignatureRecord {
    let tag = format!("{repo}:{}", attestation_tag(digest));
    let layers: Vec<(&[u8], &str, serde_json::Value)> = envelopes
        .iter()
        .map(|(predicate_type, env)| {
            (
                env.as_slice(),
                crate::provenance::ENVELOPE_MEDIA_TYPE,
                serde_json::json!({
                    signing::SIGNATURE_ANNOTATION: "",
                    "predicateType": predicate_type,
                }),
            )
        })
        .collect();
    let done =
        artifact(api, repo, &layers).and_then(|image| super::move_tag(api, repo, &tag, &image));
    SignatureRecord {
        subject: digest.to_string(),
        tag,
        ok: done.is_ok(),
        unchanged: done.as_ref().is_ok_and(|u| *u),
        error: done.err(),
    }
}

/// The statements about `digest` signed by `key` that the registry holds.
pub fn attestations(
    api: &dyn Api,
    repo: &Repo,
    digest: &str,
    key: &VerifyingKey,
) -> Result<Vec<serde_json::Value>, String> {
    let tag = attestation_tag(digest);
    let Some(att) = api.manifest(repo, &tag)? else {
        return Err(format!(
            "{repo}@{digest} has no attestation ({repo}:{tag} does not exist)"
        ));
    };
    let v: serde_json::Value =
        serde_json::from_slice(&att.body).map_err(|e| format!("{repo}:{tag}: not JSON: {e}"))?;
    let mut out = Vec::new();
    let mut why = Vec::new();
    for layer in v["layers"].as_array().into_iter().flatten() {
        let Some(d) = layer["digest"].as_str() else {
            continue;
        };
        match api.blob(repo, d)? {
            Some(env) if super::sha256_digest(&env) == d => {
                match crate::provenance::open(&env, key, digest) {
                    Ok(st) => out.push(st),
                    Err(e) => why.push(e),
                }
            }
            _ => why.push(format!("envelope {d} missing or damaged")),
        }
    }
    if out.is_empty() {
        return Err(format!(
            "{repo}@{digest}: no attestation signed by this key ({})",
            why.join("; ")
        ));
    }
    Ok(out)
}
