//! Where an image came from, as a statement others can check: an in-toto Statement
//! (v1) whose predicate is SLSA Provenance v1, signed in a DSSE envelope, the form
//! `cosign attest` writes and `cosign verify-attestation` reads.
//!
//! What it says of a cell's image: the builder (this tool, its version and commit),
//! the matrix file's SHA256, the cell's coordinates and identity (input hash), the
//! resolved base image digest, the Miniconda installer (file and SHA256), the run's
//! start and end (the manifest records times per run, not per build), and the engine
//! and builder that built it.

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine as _;
use p256::ecdsa::{SigningKey, VerifyingKey};

use crate::manifest::{CellRecord, Manifest};

pub const STATEMENT_TYPE: &str = "https://in-toto.io/Statement/v1";
pub const PREDICATE_TYPE: &str = "https://slsa.dev/provenance/v1";
pub const PAYLOAD_TYPE: &str = "application/vnd.in-toto+json";
pub const ENVELOPE_MEDIA_TYPE: &str = "application/vnd.dsse.envelope.v1+json";
/// What this tool's builds are, for `buildType`.
pub const BUILD_TYPE: &str = "https://github.com/image-matrix/image-matrix/build/v1";

/// The provenance of `cell`'s image, published in `repository` as `digest`.
pub fn statement(
    man: &Manifest,
    cell: &CellRecord,
    repository: &str,
    digest: &str,
) -> serde_json::Value {
    let hex = digest.strip_prefix("sha256:").unwrap_or(digest);
    let mut deps = Vec::new();
    if let Some(d) = &cell.base_digest {
        deps.push(serde_json::json!({
            "uri": format!("docker://{}", cell.coordinates.base),
            "digest": {"sha256": d.strip_prefix("sha256:").unwrap_or(d)},
        }));
    }
    if let Some(i) = &cell.installer {
        deps.push(serde_json::json!({
            "name": i.file,
            "digest": {"sha256": i.sha256},
        }));
    }
    let engine = cell
        .engine
        .as_deref()
        .unwrap_or(crate::engines::DEFAULT_ENGINE);
    serde_json::json!({
        "_type": STATEMENT_TYPE,
        "subject": [{"name": repository, "digest": {"sha256": hex}}],
        "predicateType": PREDICATE_TYPE,
        "predicate": {
            "buildDefinition": {
                "buildType": BUILD_TYPE,
                "externalParameters": {
                    "matrix": {"path": man.matrix, "sha256": man.matrix_sha256},
                    "cell": cell.id,
                    "coordinates": cell.coordinates,
                    "date": man.date,
                },
                "internalParameters": {
                    "input_hash": cell.input_hash,
                    "engine": engine,
                    "builder": man.docker.as_ref().map(|d| d.builder.clone()),
                    "docker_server": man.docker.as_ref().map(|d| d.server.clone()),
                },
                "resolvedDependencies": deps,
            },
            "runDetails": {
                "builder": {
                    "id": "https://github.com/image-matrix/image-matrix",
                    "version": {"image-matrix": format!("{} ({})", env!("CARGO_PKG_VERSION"), env!("IMAGE_MATRIX_COMMIT"))},
                },
                "metadata": {
                    "invocationId": format!("{}#{}", man.started, cell.id),
                    "startedOn": man.started,
                    "finishedOn": man.finished,
                },
            },
        },
    })
}

/// CycloneDX's predicate type for an in-toto statement carrying a BOM.
pub const SBOM_PREDICATE_TYPE: &str = "https://cyclonedx.org/bom";

/// The cell's SBOM (beside its manifest in `dir`) as an in-toto statement about
/// `digest`: None when the cell has none; an error when the file is not the one its
/// record names (a path outside `sbom/`, another sha256, not a CycloneDX document).
pub fn sbom_statement(
    dir: &std::path::Path,
    cell: &CellRecord,
    repository: &str,
    digest: &str,
) -> Option<Result<serde_json::Value, String>> {
    let rec = cell.sbom.as_ref()?;
    rec.path.as_ref()?;
    let Some(rel) = crate::report::packages::link(rec) else {
        return Some(Err(format!(
            "cell {}: its SBOM path is not a file of the sbom/ folder; not attached",
            cell.id
        )));
    };
    let path = dir.join(rel);
    Some((|| {
        let bytes = std::fs::read(&path).map_err(|e| format!("{}: {e}", path.display()))?;
        if rec.sha256.as_deref() != Some(crate::sbom::sha256_hex(&bytes).as_str()) {
            return Err(format!(
                "{}: not the file its run recorded (sha256)",
                path.display()
            ));
        }
        let bom: serde_json::Value = serde_json::from_slice(&bytes)
            .map_err(|e| format!("{}: not JSON: {e}", path.display()))?;
        if bom["bomFormat"] != "CycloneDX" {
            return Err(format!("{}: not a CycloneDX document", path.display()));
        }
        let hex = digest.strip_prefix("sha256:").unwrap_or(digest);
        Ok(serde_json::json!({
            "_type": STATEMENT_TYPE,
            "subject": [{"name": repository, "digest": {"sha256": hex}}],
            "predicateType": SBOM_PREDICATE_TYPE,
            "predicate": bom,
        }))
    })())
}

/// DSSE's pre-authentication encoding: what the signature covers.
fn pae(payload_type: &str, payload: &[u8]) -> Vec<u8> {
    let mut out = format!(
        "DSSEv1 {} {} {} ",
        payload_type.len(),
        payload_type,
        payload.len()
    )
    .into_bytes();
    out.extend_from_slice(payload);
    out
}

/// `statement` signed: a DSSE envelope (JSON).
pub fn envelope(statement: &serde_json::Value, key: &SigningKey) -> Vec<u8> {
    let payload = serde_json::to_vec(statement).unwrap_or_default();
    let sig = crate::signing::sign(key, &pae(PAYLOAD_TYPE, &payload));
    serde_json::to_vec(&serde_json::json!({
        "payloadType": PAYLOAD_TYPE,
        "payload": B64.encode(&payload),
        "signatures": [{"keyid": "", "sig": sig}],
    }))
    .unwrap_or_default()
}

/// The statement an envelope carries, when `key` signed it and it is about `digest`.
pub fn open(
    envelope: &[u8],
    key: &VerifyingKey,
    digest: &str,
) -> Result<serde_json::Value, String> {
    let e: serde_json::Value =
        serde_json::from_slice(envelope).map_err(|e| format!("not a DSSE envelope: {e}"))?;
    let payload_type = e["payloadType"].as_str().unwrap_or_default();
    let payload = e["payload"]
        .as_str()
        .and_then(|p| B64.decode(p).ok())
        .ok_or("the envelope has no payload")?;
    let signed = e["signatures"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|s| s["sig"].as_str())
        .any(|s| crate::signing::verify(key, &pae(payload_type, &payload), s));
    if !signed {
        return Err("no signature in the envelope is by this key".into());
    }
    let st: serde_json::Value =
        serde_json::from_slice(&payload).map_err(|e| format!("the statement is not JSON: {e}"))?;
    let hex = digest.strip_prefix("sha256:").unwrap_or(digest);
    let about = st["subject"]
        .as_array()
        .into_iter()
        .flatten()
        .any(|s| s["digest"]["sha256"] == hex);
    if !about {
        return Err(format!("the statement is not about {digest}"));
    }
    Ok(st)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_signed_statement_opens_only_with_its_key_and_for_its_image() {
        let mut m = Manifest::new("matrix.yaml", "ab12", None);
        m.date = Some("20261207".into());
        let mut c = CellRecord::new("py3.11-debian12-amd64", Default::default());
        c.base_digest = Some(format!("sha256:{}", "b".repeat(64)));
        c.installer = Some(crate::manifest::Installer {
            file: "Miniconda3-py311_24.5.0-0-Linux-x86_64.sh".into(),
            sha256: "c".repeat(64),
        });
        c.input_hash = Some("h".into());
        let digest = format!("sha256:{}", "a".repeat(64));
        let st = statement(&m, &c, "reg.example/ml/conda", &digest);
        assert_eq!(st["predicateType"], PREDICATE_TYPE);
        assert_eq!(
            st["predicate"]["buildDefinition"]["externalParameters"]["matrix"]["sha256"],
            "ab12"
        );
        assert_eq!(
            st["predicate"]["buildDefinition"]["resolvedDependencies"]
                .as_array()
                .unwrap()
                .len(),
            2
        );
        let (sealed, public) = crate::signing::generate(b"").unwrap();
        let key = crate::signing::decrypt(&sealed, b"").unwrap();
        let env = envelope(&st, &key);
        let vk = crate::signing::load_public(&public).unwrap();
        assert_eq!(open(&env, &vk, &digest).unwrap(), st);
        assert!(open(&env, &vk, &format!("sha256:{}", "d".repeat(64))).is_err());
        let (_, other) = crate::signing::generate(b"").unwrap();
        assert!(open(&env, &crate::signing::load_public(&other).unwrap(), &digest).is_err());
        // the signature covers the payload type too
        let mut tampered: serde_json::Value = serde_json::from_slice(&env).unwrap();
        tampered["payloadType"] = "text/plain".into();
        assert!(open(&serde_json::to_vec(&tampered).unwrap(), &vk, &digest).is_err());
    }
}
