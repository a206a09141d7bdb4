//! An in-memory registry for the publish rules' tests: manifests by digest and by
//! tag, blobs per repository, and switches for the failures a real one has.

use std::cell::RefCell;
use std::collections::{HashMap, HashSet};

use super::{media_type_of, sha256_digest, Api, Fetched, Repo};

#[derive(Default)]
pub struct Fake {
    /// (repository, digest) → body.
    manifests: RefCell<HashMap<(String, String), Vec<u8>>>,
    /// (repository, tag) → digest.
    tags: RefCell<HashMap<(String, String), String>>,
    blobs: RefCell<HashSet<(String, String)>>,
    /// Blobs uploaded with their bytes.
    blob_bytes: RefCell<HashMap<(String, String), Vec<u8>>>,
    /// Every call that changes something, in order: `put REPO REF`, `mount REPO DIGEST`.
    pub writes: RefCell<Vec<String>>,
    /// Refuse every call, as a registry that is down or refuses the credentials.
    pub down: RefCell<Option<String>>,
    /// Fail the Nth tag put (1-based) as if the process was killed there.
    pub fail_put_tag: RefCell<Option<usize>>,
    puts: RefCell<usize>,
    /// Whether DELETE by tag is supported (distribution 2.x says no).
    pub deletes_tags: std::cell::Cell<bool>,
}

impl Fake {
    /// An image manifest (Docker's media type) with its config and one layer in
    /// `repo`; returns its digest.
    pub fn image(&self, repo: &str, config: &str, layer: &str) -> String {
        let body = serde_json::to_vec(&serde_json::json!({
            "schemaVersion": 2,
            "mediaType": super::DOCKER_MANIFEST,
            "config": {"mediaType": "application/vnd.docker.container.image.v1+json", "size": 1, "digest": config},
            "layers": [{"mediaType": "application/vnd.docker.image.rootfs.diff.tar.gzip", "size": 1, "digest": layer}],
        }))
        .unwrap();
        let d = sha256_digest(&body);
        self.manifests
            .borrow_mut()
            .insert((repo.into(), d.clone()), body);
        for b in [config, layer] {
            self.blobs.borrow_mut().insert((repo.into(), b.into()));
        }
        d
    }

    /// Point `tag` at `digest` (a manifest the repository holds).
    pub fn set_tag(&self, repo: &str, tag: &str, digest: &str) {
        self.tags
            .borrow_mut()
            .insert((repo.into(), tag.into()), digest.into());
    }

    pub fn tag_of(&self, repo: &str, tag: &str) -> Option<String> {
        self.tags.borrow().get(&(repo.into(), tag.into())).cloned()
    }

    pub fn forget(&self, repo: &str, digest: &str) {
        self.manifests
            .borrow_mut()
            .remove(&(repo.into(), digest.into()));
    }

    fn check(&self) -> Result<(), String> {
        match &*self.down.borrow() {
            Some(why) => Err(why.clone()),
            None => Ok(()),
        }
    }
}

impl Api for Fake {
    fn manifest(&self, repo: &Repo, at: &str) -> Result<Option<Fetched>, String> {
        self.check()?;
        let r = repo.to_string();
        let digest = if at.starts_with("sha256:") {
            at.to_string()
        } else {
            match self.tag_of(&r, at) {
                Some(d) => d,
                None => return Ok(None),
            }
        };
        Ok(self
            .manifests
            .borrow()
            .get(&(r, digest.clone()))
            .map(|body| Fetched {
                media_type: media_type_of(body).unwrap_or_default(),
                body: body.clone(),
                digest,
            }))
    }

    fn put_manifest(&self, repo: &Repo, at: &str, body: &[u8], _: &str) -> Result<(), String> {
        self.check()?;
        let r = repo.to_string();
        let d = sha256_digest(body);
        if let Ok((config, layers)) = super::blobs_of(body) {
            for b in std::iter::once(&config).chain(&layers) {
                if !self.blobs.borrow().contains(&(r.clone(), b.clone())) {
                    return Err(format!("{r}: blob unknown to registry: {b}"));
                }
            }
        }
        if at.starts_with("sha256:") {
            if at != d {
                return Err("digest invalid".into());
            }
        } else {
            *self.puts.borrow_mut() += 1;
            if Some(*self.puts.borrow()) == *self.fail_put_tag.borrow() {
                return Err("connection reset".into());
            }
            self.tags
                .borrow_mut()
                .insert((r.clone(), at.into()), d.clone());
        }
        self.manifests
            .borrow_mut()
            .insert((r.clone(), d), body.to_vec());
        self.writes.borrow_mut().push(format!("put {r} {at}"));
        Ok(())
    }

    fn blob_exists(&self, repo: &Repo, digest: &str) -> Result<bool, String> {
        self.check()?;
        Ok(self
            .blobs
            .borrow()
            .contains(&(repo.to_string(), digest.into())))
    }

    fn mount_blob(&self, to: &Repo, from: &Repo, digest: &str) -> Result<(), String> {
        self.check()?;
        if !self.blob_exists(from, digest)? {
            return Err(format!("{from}: blob unknown: {digest}"));
        }
        self.blobs
            .borrow_mut()
            .insert((to.to_string(), digest.into()));
        self.writes
            .borrow_mut()
            .push(format!("mount {to} {digest}"));
        Ok(())
    }

    fn list_tags(&self, repo: &Repo) -> Result<Vec<String>, String> {
        self.check()?;
        let r = repo.to_string();
        let mut v: Vec<String> = self
            .tags
            .borrow()
            .keys()
            .filter(|(x, _)| *x == r)
            .map(|(_, t)| t.clone())
            .collect();
        v.sort();
        Ok(v)
    }

    fn delete(&self, repo: &Repo, at: &str) -> Result<bool, String> {
        self.check()?;
        let r = repo.to_string();
        if at.starts_with("sha256:") {
            if self
                .manifests
                .borrow_mut()
                .remove(&(r.clone(), at.to_string()))
                .is_none()
            {
                return Err(format!("{r}: manifest unknown: {at}"));
            }
            self.tags
                .borrow_mut()
                .retain(|(x, _), d| !(*x == r && d == at));
        } else if !self.deletes_tags.get() {
            return Ok(false);
        } else if self
            .tags
            .borrow_mut()
            .remove(&(r.clone(), at.to_string()))
            .is_none()
        {
            return Err(format!("{r}: manifest unknown: {at}"));
        }
        self.writes.borrow_mut().push(format!("delete {r} {at}"));
        Ok(true)
    }

    fn put_blob(&self, repo: &Repo, bytes: &[u8]) -> Result<String, String> {
        self.check()?;
        let d = sha256_digest(bytes);
        let key = (repo.to_string(), d.clone());
        self.blobs.borrow_mut().insert(key.clone());
        self.blob_bytes.borrow_mut().insert(key, bytes.to_vec());
        Ok(d)
    }

    fn blob(&self, repo: &Repo, digest: &str) -> Result<Option<Vec<u8>>, String> {
        self.check()?;
        Ok(self
            .blob_bytes
            .borrow()
            .get(&(repo.to_string(), digest.to_string()))
            .cloned())
    }
}
