//! A registry reached through its HTTP API (the OCI distribution spec), with no Docker
//! daemon: what `matrix publish` uses to point public tags at digests that shard jobs
//! pushed, and to make the image indexes of tag groups.
//!
//! [`Api`] is the seam: `client::Registry` speaks to a real registry through the
//! `oci-client` crate, `fake::Fake` (tests) keeps manifests and blobs in memory.

pub mod auth;
pub mod client;
#[cfg(test)]
pub mod fake;
pub mod publish;
pub mod retention;
pub mod sign;

use sha2::Digest as _;

pub const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
pub const DOCKER_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";
pub const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
pub const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";

/// A repository split into the registry that serves it and its path there.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Repo {
    /// `registry.example:5000`; Docker Hub is `docker.io`.
    pub host: String,
    /// `team/miniconda` (`library/…` for Docker Hub's official images).
    pub path: String,
}

impl Repo {
    /// Split a repository the way Docker does: the first component is a registry when
    /// it holds a `.` or a `:`, or is `localhost`; otherwise the repository is on
    /// Docker Hub.
    pub fn parse(repository: &str) -> Result<Repo, String> {
        crate::reference::check_repository(repository)?;
        let (first, rest) = repository.split_once('/').unwrap_or(("", repository));
        let is_host = !first.is_empty() && (first.contains(['.', ':']) || first == "localhost");
        Ok(if is_host {
            Repo {
                host: first.to_string(),
                path: rest.to_string(),
            }
        } else {
            let path = if repository.contains('/') {
                repository.to_string()
            } else {
                format!("library/{repository}")
            };
            Repo {
                host: "docker.io".into(),
                path,
            }
        })
    }

    /// Whether the registry is on this machine's loopback, where plain HTTP is allowed.
    pub fn is_loopback(&self) -> bool {
        crate::reference::is_loopback(&format!("{}/x", self.host))
    }
}

impl std::fmt::Display for Repo {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.host, self.path)
    }
}

/// A manifest as the registry holds it: the exact bytes (their SHA256 is the digest).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Fetched {
    pub body: Vec<u8>,
    pub media_type: String,
    pub digest: String,
}

/// What `publish` needs of a registry. Every method names the repository; `reference`
/// is a tag or a digest.
pub trait Api {
    /// The manifest `reference` names, or None when the registry has none by that name.
    fn manifest(&self, repo: &Repo, reference: &str) -> Result<Option<Fetched>, String>;
    /// Store `body` as a manifest under `reference` (a tag moves; a digest must be the
    /// body's own).
    fn put_manifest(
        &self,
        repo: &Repo,
        reference: &str,
        body: &[u8],
        media_type: &str,
    ) -> Result<(), String>;
    fn blob_exists(&self, repo: &Repo, digest: &str) -> Result<bool, String>;
    /// Make a blob `from` holds available in `to` without uploading it again.
    fn mount_blob(&self, to: &Repo, from: &Repo, digest: &str) -> Result<(), String>;
    /// Upload a blob; returns its digest.
    fn put_blob(&self, repo: &Repo, bytes: &[u8]) -> Result<String, String>;
    /// A blob's bytes, or None when the repository has no such blob.
    fn blob(&self, repo: &Repo, digest: &str) -> Result<Option<Vec<u8>>, String>;
    /// Every tag of the repository.
    fn list_tags(&self, repo: &Repo) -> Result<Vec<String>, String>;
    /// Delete the manifest `reference` names: by digest, the image and every tag on it;
    /// by tag, that tag alone (OCI distribution 1.1). `Ok(false)`: the registry does not
    /// delete that way.
    fn delete(&self, repo: &Repo, reference: &str) -> Result<bool, String>;
}

pub fn sha256_digest(bytes: &[u8]) -> String {
    let mut s = String::with_capacity(71);
    s.push_str("sha256:");
    for b in sha2::Sha256::digest(bytes) {
        s.push_str(&format!("{b:02x}"));
    }
    s
}

/// The media type a manifest's body declares; an OCI manifest may leave it out, and is
/// then told by its fields.
pub fn media_type_of(body: &[u8]) -> Option<String> {
    let v: serde_json::Value = serde_json::from_slice(body).ok()?;
    if let Some(t) = v.get("mediaType").and_then(|t| t.as_str()) {
        return Some(t.to_string());
    }
    if v.get("manifests").is_some() {
        Some(OCI_INDEX.into())
    } else if v.get("config").is_some() {
        Some(OCI_MANIFEST.into())
    } else {
        None
    }
}

/// Point `tag` (a full `REPO:TAG`) at `image` unless it already is: `Ok(true)` when
/// it already was.
pub fn move_tag(api: &dyn Api, public: &Repo, tag: &str, image: &Fetched) -> Result<bool, String> {
    let name = crate::reference::split(tag).1.unwrap_or("latest");
    match api.manifest(public, name)? {
        Some(f) if f.digest == image.digest => Ok(true),
        _ => api
            .put_manifest(public, name, &image.body, &image.media_type)
            .map(|()| false),
    }
}

/// The config digest and every layer digest of a single-platform image manifest.
pub fn blobs_of(body: &[u8]) -> Result<(String, Vec<String>), String> {
    #[derive(serde::Deserialize)]
    struct Descriptor {
        digest: String,
    }
    #[derive(serde::Deserialize)]
    struct Image {
        config: Descriptor,
        #[serde(default)]
        layers: Vec<Descriptor>,
    }
    let m: Image =
        serde_json::from_slice(body).map_err(|e| format!("not an image manifest ({e})"))?;
    for d in std::iter::once(&m.config).chain(&m.layers) {
        if !crate::manifest::merge::is_digest(&d.digest) {
            return Err(format!(
                "names a blob `{}` that is not a sha256 digest",
                d.digest
            ));
        }
    }
    Ok((
        m.config.digest,
        m.layers.into_iter().map(|d| d.digest).collect(),
    ))
}

/// An image index over per-platform manifests, as bytes whose digest is stable for the
/// same members (so a second publish finds it unchanged). Docker's manifest list when
/// every member is a Docker manifest (what a classic daemon pushes), the OCI index
/// otherwise.
pub fn index_body(members: &[(&str, &Fetched)]) -> (Vec<u8>, &'static str) {
    let docker = members.iter().all(|(_, f)| f.media_type == DOCKER_MANIFEST);
    let media_type = if docker { DOCKER_LIST } else { OCI_INDEX };
    let manifests: Vec<serde_json::Value> = members
        .iter()
        .map(|(platform, f)| {
            let mut parts = platform.split('/');
            let os = parts.next().unwrap_or("linux");
            let arch = parts.next().unwrap_or("");
            let mut p = serde_json::json!({ "architecture": arch, "os": os });
            if let Some(v) = parts.next() {
                p["variant"] = v.into();
            }
            serde_json::json!({
                "mediaType": f.media_type,
                "size": f.body.len(),
                "digest": f.digest,
                "platform": p,
            })
        })
        .collect();
    let index = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": media_type,
        "manifests": manifests,
    });
    let body = serde_json::to_vec_pretty(&index).unwrap_or_default();
    (body, media_type)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn repositories_split_as_docker_splits_them() {
        let r = Repo::parse("127.0.0.1:5000/team/miniconda").unwrap();
        assert_eq!(
            (r.host.as_str(), r.path.as_str()),
            ("127.0.0.1:5000", "team/miniconda")
        );
        assert!(r.is_loopback());
        let r = Repo::parse("miniconda").unwrap();
        assert_eq!(
            (r.host.as_str(), r.path.as_str()),
            ("docker.io", "library/miniconda")
        );
        assert!(!r.is_loopback());
        let r = Repo::parse("team/miniconda").unwrap();
        assert_eq!(r.host, "docker.io");
        let r = Repo::parse("ghcr.io/org/x").unwrap();
        assert_eq!((r.host.as_str(), r.path.as_str()), ("ghcr.io", "org/x"));
        assert!(Repo::parse("Bad Repo").is_err());
    }

    #[test]
    fn an_index_is_the_same_bytes_for_the_same_members() {
        let f = |d: &str| Fetched {
            body: b"{}".to_vec(),
            media_type: DOCKER_MANIFEST.into(),
            digest: d.into(),
        };
        let (a, b) = (f("sha256:aa"), f("sha256:bb"));
        let one = index_body(&[("linux/amd64", &a), ("linux/arm/v7", &b)]);
        let two = index_body(&[("linux/amd64", &a), ("linux/arm/v7", &b)]);
        assert_eq!(one, two);
        assert_eq!(one.1, DOCKER_LIST);
        let v: serde_json::Value = serde_json::from_slice(&one.0).unwrap();
        assert_eq!(v["manifests"][1]["platform"]["variant"], "v7");
        assert_eq!(v["manifests"][0]["size"], 2);
        let oci = Fetched {
            media_type: OCI_MANIFEST.into(),
            ..f("sha256:cc")
        };
        assert_eq!(
            index_body(&[("linux/amd64", &a), ("linux/arm64", &oci)]).1,
            OCI_INDEX
        );
    }

    #[test]
    fn media_types_are_read_from_the_body() {
        assert_eq!(
            media_type_of(br#"{"mediaType":"x","config":{}}"#).as_deref(),
            Some("x")
        );
        assert_eq!(
            media_type_of(br#"{"manifests":[]}"#).as_deref(),
            Some(OCI_INDEX)
        );
        assert_eq!(
            media_type_of(br#"{"config":{}}"#).as_deref(),
            Some(OCI_MANIFEST)
        );
        assert_eq!(media_type_of(b"nonsense"), None);
    }
}
