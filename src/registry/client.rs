//! [`Api`] over a real registry, through the `oci-client` crate (the ORAS project's
//! OCI distribution client: token and basic authentication, the spec's manifest and
//! blob calls). It is asynchronous; each call here runs on a small runtime of our own,
//! so the rest of the tool stays synchronous.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use oci_client::client::{Certificate, CertificateEncoding, ClientConfig, ClientProtocol};
use oci_client::errors::{OciDistributionError, OciErrorCode};
use oci_client::secrets::RegistryAuth;
use oci_client::{Client, Reference, RegistryOperation};

use super::auth::Credential;
use super::{media_type_of, Api, Fetched, Repo};

const ACCEPT: &[&str] = &[
    super::DOCKER_MANIFEST,
    super::DOCKER_LIST,
    super::OCI_MANIFEST,
    super::OCI_INDEX,
];

pub struct Settings {
    /// Registries (`host:port`) reached over plain HTTP although not on loopback.
    pub insecure: Vec<String>,
    /// PEM certificates trusted beside the system's (a private registry's CA).
    pub extra_ca: Option<Vec<u8>>,
    pub timeout: Duration,
}

pub struct Registry {
    client: Client,
    /// For what `oci-client` does not do (DELETE), configured the same way.
    http: reqwest::Client,
    /// Registries reached over plain HTTP.
    plain: Vec<String>,
    runtime: tokio::runtime::Runtime,
    /// Each registry's credential, looked up once.
    credentials: Mutex<HashMap<String, Credential>>,
    /// (repository, operation) pairs already authenticated.
    authed: Mutex<Vec<(String, bool)>>,
}

impl Registry {
    /// A client for the registries `hosts` name: plain HTTP for those on loopback and
    /// those `settings.insecure` lists, HTTPS for every other.
    pub fn new(hosts: &[&Repo], settings: &Settings) -> Result<Registry, String> {
        let plain: Vec<String> = hosts
            .iter()
            .filter(|r| r.is_loopback() || settings.insecure.contains(&r.host))
            .map(|r| r.host.clone())
            .chain(settings.insecure.iter().cloned())
            .collect();
        let mut http = reqwest::Client::builder()
            .timeout(settings.timeout)
            .connect_timeout(settings.timeout);
        if let Some(pem) = &settings.extra_ca {
            for cert in reqwest::Certificate::from_pem_bundle(pem)
                .map_err(|e| format!("the extra CA bundle is not PEM certificates: {e}"))?
            {
                http = http.add_root_certificate(cert);
            }
        }
        let http = http
            .build()
            .map_err(|e| format!("cannot start the HTTP client: {e}"))?;
        let config = ClientConfig {
            protocol: ClientProtocol::HttpsExcept(plain.clone()),
            extra_root_certificates: settings
                .extra_ca
                .iter()
                .map(|pem| Certificate {
                    encoding: CertificateEncoding::Pem,
                    data: pem.clone(),
                })
                .collect(),
            read_timeout: Some(settings.timeout),
            connect_timeout: Some(settings.timeout),
            ..ClientConfig::default()
        };
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| format!("cannot start the HTTP client: {e}"))?;
        Ok(Registry {
            client: Client::new(config),
            http,
            plain,
            runtime,
            credentials: Mutex::new(HashMap::new()),
            authed: Mutex::new(Vec::new()),
        })
    }

    fn credential(&self, host: &str) -> Result<Credential, String> {
        let mut known = self.credentials.lock().map_err(|_| "poisoned")?;
        if let Some(c) = known.get(host) {
            return Ok(c.clone());
        }
        let c = super::auth::for_host(host)?;
        known.insert(host.to_string(), c.clone());
        Ok(c)
    }

    fn auth_of(&self, host: &str) -> Result<(RegistryAuth, Option<String>), String> {
        Ok(match self.credential(host)? {
            Credential::Anonymous => (RegistryAuth::Anonymous, None),
            Credential::Basic { user, secret } => {
                (RegistryAuth::Basic(user, secret.clone()), Some(secret))
            }
        })
    }

    /// Authenticate for `op` on `repo` once (the token flow or basic credentials).
    fn ensure(&self, repo: &Repo, push: bool) -> Result<(), String> {
        let key = (repo.to_string(), push);
        if self.authed.lock().map_err(|_| "poisoned")?.contains(&key) {
            return Ok(());
        }
        let (auth, secret) = self.auth_of(&repo.host)?;
        let op = if push {
            RegistryOperation::Push
        } else {
            RegistryOperation::Pull
        };
        let r = reference(repo, None)?;
        self.runtime
            .block_on(self.client.auth(&r, &auth, op))
            .map_err(|e| explain(repo, &e, secret.as_deref()))?;
        self.authed.lock().map_err(|_| "poisoned")?.push(key);
        Ok(())
    }

    fn secret(&self, host: &str) -> Option<String> {
        self.auth_of(host).ok().and_then(|(_, s)| s)
    }
}

fn reference(repo: &Repo, at: Option<&str>) -> Result<Reference, String> {
    let s = match at {
        Some(d) if d.contains(':') => format!("{repo}@{d}"),
        Some(t) => format!("{repo}:{t}"),
        None => format!("{repo}:latest"),
    };
    s.parse::<Reference>()
        .map_err(|e| format!("`{s}` is not a reference the registry client takes: {e}"))
}

fn not_found(e: &OciDistributionError) -> bool {
    match e {
        OciDistributionError::RegistryError { envelope, .. } => envelope.errors.iter().any(|x| {
            matches!(
                x.code,
                OciErrorCode::ManifestUnknown
                    | OciErrorCode::NameUnknown
                    | OciErrorCode::BlobUnknown
            )
        }),
        OciDistributionError::ServerError { code, .. } => *code == 404,
        OciDistributionError::ImageManifestNotFoundError(_) => true,
        _ => false,
    }
}

/// A registry error people can act on, with no secret in it.
fn explain(repo: &Repo, e: &OciDistributionError, secret: Option<&str>) -> String {
    let text = match e {
        OciDistributionError::UnauthorizedError { .. }
        | OciDistributionError::AuthenticationFailure(_) => format!(
            "{}: the registry refused the credentials for {} (check `matrix login {}` or the credential helper)",
            repo.host, repo.path, repo.host
        ),
        OciDistributionError::RequestError(r) if r.is_connect() || r.is_timeout() => {
            // the innermost cause says what happened (connection refused, a timeout…)
            let mut cause: &dyn std::error::Error = r;
            while let Some(inner) = cause.source() {
                cause = inner;
            }
            format!("{}: the registry does not answer ({cause})", repo.host)
        }
        other => format!("{repo}: {other}"),
    };
    super::auth::redact(&text, secret.as_slice())
}

impl Api for Registry {
    fn manifest(&self, repo: &Repo, at: &str) -> Result<Option<Fetched>, String> {
        self.ensure(repo, false)?;
        let (auth, secret) = self.auth_of(&repo.host)?;
        let r = reference(repo, Some(at))?;
        match self
            .runtime
            .block_on(self.client.pull_manifest_raw(&r, &auth, ACCEPT))
        {
            Ok((body, digest)) => {
                let body = body.to_vec();
                let media_type = media_type_of(&body)
                    .ok_or_else(|| format!("{repo}: `{at}` is not a manifest the tool can read"))?;
                Ok(Some(Fetched {
                    body,
                    media_type,
                    digest,
                }))
            }
            Err(e) if not_found(&e) => Ok(None),
            Err(e) => Err(explain(repo, &e, secret.as_deref())),
        }
    }

    fn put_manifest(
        &self,
        repo: &Repo,
        at: &str,
        body: &[u8],
        media_type: &str,
    ) -> Result<(), String> {
        self.ensure(repo, true)?;
        let r = reference(repo, Some(at))?;
        let content_type = media_type
            .parse()
            .map_err(|_| format!("`{media_type}` is not a media type"))?;
        self.runtime
            .block_on(
                self.client
                    .push_manifest_raw(&r, body.to_vec(), content_type),
            )
            .map(|_| ())
            .map_err(|e| explain(repo, &e, self.secret(&repo.host).as_deref()))
    }

    fn blob_exists(&self, repo: &Repo, digest: &str) -> Result<bool, String> {
        self.ensure(repo, false)?;
        let r = reference(repo, Some(digest))?;
        self.runtime
            .block_on(self.client.blob_exists(&r, digest))
            .map_err(|e| explain(repo, &e, self.secret(&repo.host).as_deref()))
    }

    fn mount_blob(&self, to: &Repo, from: &Repo, digest: &str) -> Result<(), String> {
        self.ensure(from, false)?;
        self.ensure(to, true)?;
        let (t, f) = (reference(to, None)?, reference(from, None)?);
        self.runtime
            .block_on(self.client.mount_blob(&t, &f, digest))
            .map_err(|e| explain(to, &e, self.secret(&to.host).as_deref()))
    }

    fn list_tags(&self, repo: &Repo) -> Result<Vec<String>, String> {
        self.ensure(repo, false)?;
        let (auth, secret) = self.auth_of(&repo.host)?;
        let r = reference(repo, None)?;
        let mut out: Vec<String> = Vec::new();
        loop {
            let page = self.runtime.block_on(self.client.list_tags(
                &r,
                &auth,
                Some(1000),
                out.last().map(String::as_str),
            ));
            let page = match page {
                Ok(p) => p.tags,
                // a repository nothing was pushed to has no tags
                Err(e) if not_found(&e) => Vec::new(),
                Err(e) => return Err(explain(repo, &e, secret.as_deref())),
            };
            let more = page.len() == 1000;
            out.extend(page);
            if !more {
                return Ok(out);
            }
        }
    }

    fn delete(&self, repo: &Repo, at: &str) -> Result<bool, String> {
        self.ensure(repo, true)?;
        let (auth, secret) = self.auth_of(&repo.host)?;
        let r = reference(repo, None)?;
        let token = self
            .runtime
            .block_on(self.client.auth(&r, &auth, RegistryOperation::Push))
            .map_err(|e| explain(repo, &e, secret.as_deref()))?;
        let scheme = if self.plain.contains(&repo.host) {
            "http"
        } else {
            "https"
        };
        let url = format!("{scheme}://{}/v2/{}/manifests/{at}", repo.host, repo.path);
        let mut req = self.http.delete(&url);
        req = match (token, &auth) {
            (Some(t), _) => req.bearer_auth(t),
            (None, RegistryAuth::Basic(u, p)) => req.basic_auth(u, Some(p)),
            (None, _) => req,
        };
        let res = self
            .runtime
            .block_on(async { req.send().await })
            .map_err(|e| {
                super::auth::redact(
                    &format!("{repo}: DELETE {at}: {e}"),
                    secret.as_deref().as_slice(),
                )
            })?;
        let status = res.status().as_u16();
        let body = self
            .runtime
            .block_on(async { res.text().await })
            .unwrap_or_default();
        match status {
            200..=299 => Ok(true),
            // distribution 2.x: a tag cannot be deleted alone
            400 | 405 if !at.contains(':') => Ok(false),
            401 | 403 => Err(format!(
                "{}: the registry refused to delete {at} in {} (the login may lack the right to delete)",
                repo.host, repo.path
            )),
            405 => Err(format!(
                "{}: the registry does not delete images (distribution: storage.delete.enabled is off)",
                repo.host
            )),
            code => Err(super::auth::redact(
                &format!("{repo}: DELETE {at}: HTTP {code}: {}", body.trim()),
                secret.as_deref().as_slice(),
            )),
        }
    }

    fn put_blob(&self, repo: &Repo, bytes: &[u8]) -> Result<String, String> {
        self.ensure(repo, true)?;
        let digest = super::sha256_digest(bytes);
        if self.blob_exists(repo, &digest)? {
            return Ok(digest);
        }
        let r = reference(repo, None)?;
        self.runtime
            .block_on(self.client.push_blob(&r, bytes.to_vec(), &digest))
            .map_err(|e| explain(repo, &e, self.secret(&repo.host).as_deref()))?;
        Ok(digest)
    }

    fn blob(&self, repo: &Repo, digest: &str) -> Result<Option<Vec<u8>>, String> {
        self.ensure(repo, false)?;
        let r = reference(repo, Some(digest))?;
        let mut out: Vec<u8> = Vec::new();
        match self
            .runtime
            .block_on(self.client.pull_blob(&r, digest, &mut out))
        {
            Ok(()) => Ok(Some(out)),
            Err(e) if not_found(&e) => Ok(None),
            Err(e) => Err(explain(repo, &e, self.secret(&repo.host).as_deref())),
        }
    }
}
