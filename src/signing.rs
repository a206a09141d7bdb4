//! Signatures in the format cosign writes and the containers/image library (skopeo,
//! podman, CRI-O policies) verifies: an ECDSA P-256 signature over a "simple signing"
//! payload that names the repository and the manifest digest, stored in the registry
//! as an OCI image under the tag `sha256-<hex>.sig` beside the signed image, the
//! signature in the layer's `dev.cosignproject.cosign/signature` annotation.
//!
//! Keys are cosign's: the private key PKCS#8, encrypted with a key derived by scrypt
//! (N = 32768, r = 8, p = 1) and sealed with NaCl's secretbox, in a PEM block
//! `ENCRYPTED SIGSTORE PRIVATE KEY`; the public key a PKIX `PUBLIC KEY` PEM. The
//! cryptography is the RustCrypto crates' (p256, scrypt, crypto_secretbox); this
//! module only arranges their inputs and outputs in those formats. Keyless signing
//! (Fulcio certificates, a Rekor transparency log) and KMS keys are out of scope.

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine as _;
use crypto_secretbox::aead::{Aead, KeyInit};
use p256::ecdsa::signature::{Signer as _, Verifier as _};
use p256::ecdsa::{DerSignature, SigningKey, VerifyingKey};
use p256::pkcs8::{DecodePrivateKey, DecodePublicKey, EncodePrivateKey, EncodePublicKey};
use rand_core::{OsRng, RngCore};

pub const PRIVATE_PEM: &str = "ENCRYPTED SIGSTORE PRIVATE KEY";
/// The label older cosign versions wrote; read as well.
const PRIVATE_PEM_COSIGN: &str = "ENCRYPTED COSIGN PRIVATE KEY";
pub const PAYLOAD_MEDIA_TYPE: &str = "application/vnd.dev.cosign.simplesigning.v1+json";
pub const SIGNATURE_ANNOTATION: &str = "dev.cosignproject.cosign/signature";

/// A new key pair: (the private key encrypted with `password`, the public key), both PEM.
pub fn generate(password: &[u8]) -> Result<(String, String), String> {
    let key = SigningKey::random(&mut OsRng);
    Ok((encrypt(&key, password)?, public_pem(key.verifying_key())?))
}

fn derive(password: &[u8], salt: &[u8]) -> Result<[u8; 32], String> {
    let params = scrypt::Params::new(15, 8, 1, 32).map_err(|e| e.to_string())?;
    let mut out = [0u8; 32];
    scrypt::scrypt(password, salt, &params, &mut out).map_err(|e| e.to_string())?;
    Ok(out)
}

fn encrypt(key: &SigningKey, password: &[u8]) -> Result<String, String> {
    let der = key.to_pkcs8_der().map_err(|e| e.to_string())?;
    let mut salt = [0u8; 32];
    let mut nonce = [0u8; 24];
    OsRng.fill_bytes(&mut salt);
    OsRng.fill_bytes(&mut nonce);
    let box_key = derive(password, &salt)?;
    let sealed = crypto_secretbox::XSalsa20Poly1305::new(&box_key.into())
        .encrypt(&nonce.into(), der.as_bytes())
        .map_err(|_| "sealing the key failed".to_string())?;
    let doc = serde_json::json!({
        "kdf": {"name": "scrypt", "params": {"N": 32768, "r": 8, "p": 1}, "salt": B64.encode(salt)},
        "cipher": {"name": "nacl/secretbox", "nonce": B64.encode(nonce)},
        "ciphertext": B64.encode(sealed),
    });
    Ok(pem(
        PRIVATE_PEM,
        &serde_json::to_vec(&doc).unwrap_or_default(),
    ))
}

fn pem(label: &str, der: &[u8]) -> String {
    let body = B64.encode(der);
    let mut s = format!("-----BEGIN {label}-----\n");
    for chunk in body.as_bytes().chunks(64) {
        s.push_str(std::str::from_utf8(chunk).unwrap_or_default());
        s.push('\n');
    }
    s.push_str(&format!("-----END {label}-----\n"));
    s
}

fn unpem(text: &str) -> Option<(String, Vec<u8>)> {
    let begin = text.find("-----BEGIN ")?;
    let rest = &text[begin + 11..];
    let label_end = rest.find("-----")?;
    let label = rest[..label_end].to_string();
    let end = rest.find(&format!("-----END {label}-----"))?;
    let body: String = rest[label_end + 5..end].split_whitespace().collect();
    Some((label, B64.decode(body).ok()?))
}

/// The private key in `pem`, unsealed with `password`.
pub fn decrypt(pem: &str, password: &[u8]) -> Result<SigningKey, String> {
    let (label, json) = unpem(pem).ok_or("not a PEM file")?;
    if label != PRIVATE_PEM && label != PRIVATE_PEM_COSIGN {
        return Err(format!(
            "a `{label}` PEM block, not a cosign private key ({PRIVATE_PEM}); make one with `matrix signature keygen`"
        ));
    }
    let doc: serde_json::Value =
        serde_json::from_slice(&json).map_err(|e| format!("the sealed key is not JSON: {e}"))?;
    let field = |path: &str| {
        doc.pointer(path)
            .and_then(|v| v.as_str())
            .and_then(|s| B64.decode(s).ok())
            .ok_or_else(|| format!("the sealed key lacks {path}"))
    };
    let (kdf, cipher) = (
        doc.pointer("/kdf/name").and_then(|v| v.as_str()),
        doc.pointer("/cipher/name").and_then(|v| v.as_str()),
    );
    if kdf != Some("scrypt") || cipher != Some("nacl/secretbox") {
        return Err(format!(
            "the key is sealed with {kdf:?}/{cipher:?}; only scrypt and nacl/secretbox are read"
        ));
    }
    let n = doc
        .pointer("/kdf/params/N")
        .and_then(|v| v.as_u64())
        .unwrap_or(0);
    if !n.is_power_of_two() || n < 2 {
        return Err("the key's scrypt N is not a power of two".into());
    }
    let r = doc
        .pointer("/kdf/params/r")
        .and_then(|v| v.as_u64())
        .unwrap_or(8) as u32;
    let p = doc
        .pointer("/kdf/params/p")
        .and_then(|v| v.as_u64())
        .unwrap_or(1) as u32;
    let params =
        scrypt::Params::new(n.trailing_zeros() as u8, r, p, 32).map_err(|e| e.to_string())?;
    let mut box_key = [0u8; 32];
    scrypt::scrypt(password, &field("/kdf/salt")?, &params, &mut box_key)
        .map_err(|e| e.to_string())?;
    let nonce = field("/cipher/nonce")?;
    if nonce.len() != 24 {
        return Err("the key's nonce is not 24 bytes".into());
    }
    let der = crypto_secretbox::XSalsa20Poly1305::new(&box_key.into())
        .decrypt(
            crypto_secretbox::Nonce::from_slice(&nonce),
            field("/ciphertext")?.as_slice(),
        )
        .map_err(|_| "the password does not open this key".to_string())?;
    SigningKey::from_pkcs8_der(&der)
        .map_err(|e| format!("the unsealed key is not a P-256 private key: {e}"))
}

pub fn public_pem(key: &VerifyingKey) -> Result<String, String> {
    key.to_public_key_pem(p256::pkcs8::LineEnding::LF)
        .map_err(|e| e.to_string())
}

pub fn load_public(pem: &str) -> Result<VerifyingKey, String> {
    VerifyingKey::from_public_key_pem(pem)
        .map_err(|e| format!("not a P-256 public key (PEM `PUBLIC KEY`): {e}"))
}

/// What is signed for `digest` in `repository`: cosign's simple signing payload.
pub fn payload(repository: &str, digest: &str) -> Vec<u8> {
    serde_json::to_vec(&serde_json::json!({
        "critical": {
            "identity": {"docker-reference": repository},
            "image": {"docker-manifest-digest": digest},
            "type": "cosign container image signature",
        },
        "optional": null,
    }))
    .unwrap_or_default()
}

/// The signature of `payload`, base64 of its DER encoding (deterministic, RFC 6979:
/// the same key and payload give the same bytes, so re-signing changes nothing).
pub fn sign(key: &SigningKey, payload: &[u8]) -> String {
    let sig: DerSignature = key.sign(payload);
    B64.encode(sig.as_bytes())
}

pub fn verify(key: &VerifyingKey, payload: &[u8], signature_b64: &str) -> bool {
    B64.decode(signature_b64.trim())
        .ok()
        .and_then(|der| DerSignature::from_bytes(&der).ok())
        .is_some_and(|sig| key.verify(payload, &sig).is_ok())
}

/// The tag cosign stores the signatures of `digest` under.
pub fn signature_tag(digest: &str) -> String {
    format!("{}.sig", digest.replace(':', "-"))
}

/// The checks a signed payload must pass for `digest` in `repository`.
pub fn payload_names(payload: &[u8], repository: &str, digest: &str) -> Result<(), String> {
    let v: serde_json::Value =
        serde_json::from_slice(payload).map_err(|e| format!("the payload is not JSON: {e}"))?;
    let c = &v["critical"];
    if c["type"] != "cosign container image signature" {
        return Err("the payload is not a cosign container image signature".into());
    }
    if c["image"]["docker-manifest-digest"] != digest {
        return Err(format!(
            "it signs {} , not {digest}",
            c["image"]["docker-manifest-digest"]
        ));
    }
    if c["identity"]["docker-reference"] != repository {
        return Err(format!(
            "it names the repository {}, not {repository}",
            c["identity"]["docker-reference"]
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_sealed_key_opens_with_its_password_only_and_signs_verifiably() {
        let (private, public) = generate(b"correct horse").unwrap();
        assert!(private.starts_with("-----BEGIN ENCRYPTED SIGSTORE PRIVATE KEY-----\n"));
        assert!(public.starts_with("-----BEGIN PUBLIC KEY-----"));
        assert!(decrypt(&private, b"wrong")
            .unwrap_err()
            .contains("password"));
        let key = decrypt(&private, b"correct horse").unwrap();
        let p = payload(
            "reg.example/ml/conda",
            &format!("sha256:{}", "a".repeat(64)),
        );
        let s = sign(&key, &p);
        assert_eq!(s, sign(&key, &p), "deterministic");
        let vk = load_public(&public).unwrap();
        assert!(verify(&vk, &p, &s));
        let mut other = p.clone();
        other[10] ^= 1;
        assert!(!verify(&vk, &other, &s));
        let (_, stranger) = generate(b"x").unwrap();
        assert!(!verify(&load_public(&stranger).unwrap(), &p, &s));
    }

    #[test]
    fn a_payload_names_its_image_and_repository() {
        let d = format!("sha256:{}", "b".repeat(64));
        let p = payload("reg.example/ml/conda", &d);
        assert!(payload_names(&p, "reg.example/ml/conda", &d).is_ok());
        assert!(payload_names(&p, "reg.example/ml/other", &d).is_err());
        assert!(payload_names(&p, "reg.example/ml/conda", "sha256:00").is_err());
        assert_eq!(signature_tag(&d), format!("sha256-{}.sig", "b".repeat(64)));
    }

    #[test]
    fn other_pem_files_are_refused_by_name() {
        let (_, public) = generate(b"").unwrap();
        assert!(decrypt(&public, b"").unwrap_err().contains("PUBLIC KEY"));
        assert!(decrypt("nonsense", b"").is_err());
    }
}
