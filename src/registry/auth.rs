//! Registry credentials where Docker users already keep them: `auths` in
//! `$DOCKER_CONFIG/config.json` (default `~/.docker/config.json`), a credential helper
//! (`credHelpers`, `credsStore`: `docker-credential-NAME get`), and `matrix login`,
//! which writes the same file the way `docker login` does. No secret ever reaches an
//! error message: errors name the registry and the file, never what was found.

use std::path::PathBuf;

use base64::Engine as _;
use docker_credential::{CredentialRetrievalError as E, DockerCredential};

/// What to present to one registry.
#[derive(Clone, PartialEq, Eq)]
pub enum Credential {
    Anonymous,
    Basic { user: String, secret: String },
}

impl std::fmt::Debug for Credential {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Credential::Anonymous => f.write_str("Anonymous"),
            Credential::Basic { user, .. } => write!(f, "Basic {{ user: {user:?}, secret: *** }}"),
        }
    }
}

impl Credential {
    /// The secret, for redacting it from anything that is shown.
    pub fn secret(&self) -> Option<&str> {
        match self {
            Credential::Basic { secret, .. } => Some(secret),
            Credential::Anonymous => None,
        }
    }
}

/// The folder of Docker's client configuration.
pub fn config_dir() -> Option<PathBuf> {
    std::env::var_os("DOCKER_CONFIG")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".docker")))
}

/// The key Docker files a registry's credentials under.
fn key_of(host: &str) -> &str {
    match host {
        "docker.io" | "index.docker.io" | "registry-1.docker.io" => "https://index.docker.io/v1/",
        h => h,
    }
}

/// The credential for `host`; anonymous when none is configured.
pub fn for_host(host: &str) -> Result<Credential, String> {
    let file = || {
        config_dir()
            .map(|d| d.join("config.json").display().to_string())
            .unwrap_or_else(|| "~/.docker/config.json".into())
    };
    let Some(path) = config_dir().map(|d| d.join("config.json")) else {
        return Ok(Credential::Anonymous);
    };
    let found = match std::fs::File::open(&path) {
        Ok(f) => {
            docker_credential::get_credential_from_reader(std::io::BufReader::new(f), key_of(host))
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Credential::Anonymous),
        Err(e) => return Err(format!("{}: {e}", path.display())),
    };
    match found {
        Ok(DockerCredential::UsernamePassword(user, secret)) => {
            Ok(Credential::Basic { user, secret })
        }
        Ok(DockerCredential::IdentityToken(_)) => Err(format!(
            "{} holds an identity token for {host} (an OAuth refresh token), which image-matrix cannot use; log in with a user and a password or access token (`matrix login {host}`)",
            file()
        )),
        Err(E::NoCredentialConfigured | E::ConfigNotFound) => Ok(Credential::Anonymous),
        Err(E::ConfigReadError) => Err(format!(
            "{} cannot be read as Docker's client configuration (JSON with `auths`, `credHelpers`, `credsStore`)",
            file()
        )),
        Err(E::CredentialDecodingError | E::CredentialMismatchError) => Err(format!(
            "the `auth` entry for {host} in {} is not base64 of USER:PASSWORD matching its other fields; log in again",
            file()
        )),
        Err(E::HelperFailure { helper, .. }) => Err(format!(
            "the credential helper `{helper}` named in {} failed for {host} (its output is not shown: it may hold secrets); try `{helper} get` by hand",
            file()
        )),
        Err(E::HelperCommunicationError | E::MalformedHelperResponse) => Err(format!(
            "the credential helper that {} names for {host} could not be run or answered nonsense",
            file()
        )),
    }
}

/// Record `user`/`secret` for `host` in Docker's client configuration, as `docker
/// login` does without a credential store: the rest of the file kept, written whole
/// (a temporary file renamed over it), readable by its owner only.
pub fn store(host: &str, user: &str, secret: &str) -> Result<PathBuf, String> {
    let dir = config_dir().ok_or("neither DOCKER_CONFIG nor HOME is set")?;
    let path = dir.join("config.json");
    let mut doc: serde_json::Value = match std::fs::read(&path) {
        Ok(b) => serde_json::from_slice(&b)
            .map_err(|e| format!("{}: not JSON ({e}); not changing it", path.display()))?,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => serde_json::json!({}),
        Err(e) => return Err(format!("{}: {e}", path.display())),
    };
    if !doc.is_object() {
        return Err(format!(
            "{}: not a JSON object; not changing it",
            path.display()
        ));
    }
    if doc.get("credsStore").is_some() || doc.pointer(&format!("/credHelpers/{host}")).is_some() {
        return Err(format!(
            "{} sends {host}'s credentials to a credential helper; log in with `docker login {host}` so the helper stores them",
            path.display()
        ));
    }
    let auth = base64::engine::general_purpose::STANDARD.encode(format!("{user}:{secret}"));
    let auths = doc
        .as_object_mut()
        .and_then(|o| {
            o.entry("auths")
                .or_insert_with(|| serde_json::json!({}))
                .as_object_mut()
        })
        .ok_or_else(|| format!("{}: `auths` is not an object", path.display()))?;
    auths.insert(
        key_of(host).to_string(),
        serde_json::json!({ "auth": auth }),
    );
    std::fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    let mut tmp =
        tempfile::NamedTempFile::new_in(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    {
        use std::io::Write as _;
        use std::os::unix::fs::PermissionsExt as _;
        let f = tmp.as_file_mut();
        f.set_permissions(std::fs::Permissions::from_mode(0o600))
            .and_then(|()| f.write_all(&serde_json::to_vec_pretty(&doc).unwrap_or_default()))
            .and_then(|()| f.sync_all())
            .map_err(|e| format!("{}: {e}", path.display()))?;
    }
    tmp.persist(&path)
        .map_err(|e| format!("{}: {}", path.display(), e.error))?;
    Ok(path)
}

/// `text` with every secret in `secrets` replaced: the last guard before anything a
/// registry or a library said is shown or recorded.
pub fn redact(text: &str, secrets: &[&str]) -> String {
    let mut out = text.to_string();
    for s in secrets.iter().filter(|s| s.len() >= 3) {
        out = out.replace(s, "***");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_never_shows_the_secret() {
        let c = Credential::Basic {
            user: "ci".into(),
            secret: "hunter22".into(),
        };
        assert!(!format!("{c:?}").contains("hunter22"));
        assert_eq!(
            redact("token hunter22 refused", &["hunter22"]),
            "token *** refused"
        );
    }

    #[test]
    fn docker_hub_is_filed_under_its_v1_key() {
        assert_eq!(key_of("docker.io"), "https://index.docker.io/v1/");
        assert_eq!(key_of("127.0.0.1:5000"), "127.0.0.1:5000");
    }
}
