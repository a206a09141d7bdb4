//! cosign-check IMAGE PUBLIC_KEY: exit 0 when sigstore-rs finds a signature of IMAGE
//! made by PUBLIC_KEY; REGISTRY_USER / REGISTRY_PASSWORD log in; plain HTTP (the
//! tests' registry is on loopback).
//! cosign-check --open PRIVATE_KEY: exit 0 when sigstore-rs opens the sealed private
//! key with the password in COSIGN_PASSWORD (cosign's key format).

use sigstore::cosign::verification_constraint::{PublicKeyVerifier, VerificationConstraintVec};
use sigstore::cosign::{ClientBuilder, CosignCapabilities};
use sigstore::crypto::SigningScheme;
use sigstore::registry::{Auth, ClientConfig, ClientProtocol, OciReference};

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let args: Vec<String> = std::env::args().collect();
    if let [_, flag, private] = args.as_slice() {
        if flag == "--open" {
            let pem = std::fs::read(private).expect("the private key");
            let password = std::env::var("COSIGN_PASSWORD").unwrap_or_default();
            match sigstore::crypto::signing_key::SigStoreKeyPair::from_encrypted_pem(&pem, password.as_bytes()) {
                Ok(_) => println!("cosign-check: the key opens"),
                Err(e) => {
                    eprintln!("cosign-check: the key does not open: {e}");
                    std::process::exit(1);
                }
            }
            return;
        }
    }
    let [_, image, key] = args.as_slice() else {
        eprintln!("usage: cosign-check IMAGE PUBLIC_KEY");
        std::process::exit(2);
    };
    let auth = match (std::env::var("REGISTRY_USER"), std::env::var("REGISTRY_PASSWORD")) {
        (Ok(u), Ok(p)) => Auth::Basic(u, p),
        _ => Auth::Anonymous,
    };
    let config = ClientConfig {
        protocol: ClientProtocol::Http,
        ..Default::default()
    };
    let mut client = ClientBuilder::default()
        .with_oci_client_config(config)
        .build()
        .expect("a sigstore client");
    let image: OciReference = image.parse().expect("an image reference");
    let layers = match client.trusted_signature_layers(&auth, &image).await {
        Ok(l) => l,
        Err(e) => {
            eprintln!("cosign-check: no signature layers: {e}");
            std::process::exit(1);
        }
    };
    let key = std::fs::read(key).expect("the public key");
    let verifier = PublicKeyVerifier::new(&key, &SigningScheme::ECDSA_P256_SHA256_ASN1)
        .expect("a P-256 public key");
    let constraints: VerificationConstraintVec = vec![Box::new(verifier)];
    match sigstore::cosign::verify_constraints(&layers, constraints.iter()) {
        Ok(()) => println!("cosign-check: {} signature layer(s), verified", layers.len()),
        Err(e) => {
            eprintln!("cosign-check: not verified: {e:?}");
            std::process::exit(1);
        }
    }
}
