//! An in-process engine for unit tests of the phases after the builds: an image store
//! (tags → image IDs, labels per image), a registry that remembers what was pushed,
//! scripted verification verdicts and push failures, and a log of every call that
//! changes something, in order.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

use super::{Fleet, ImageEngine};
use crate::docker::BuildRequest;
use crate::manifest::Verification;
use crate::signals::Cancel;

#[derive(Default)]
pub struct FakeEngine {
    state: Mutex<State>,
    /// Does not answer: every call fails.
    pub down: bool,
    pub buildkit: bool,
}

#[derive(Default)]
struct State {
    /// tag → image ID
    tags: BTreeMap<String, String>,
    /// image ID → labels
    labels: BTreeMap<String, BTreeMap<String, String>>,
    /// image ID → bytes it alone holds
    sizes: BTreeMap<String, u64>,
    /// image ID → whether it passes verification (absent: it passes)
    verdicts: HashMap<String, bool>,
    /// tag → how many of its next pushes fail
    push_failures: HashMap<String, u32>,
    /// what the registry holds: tag → digest
    registry: BTreeMap<String, String>,
    /// image ID → what listing its packages prints (absent: [`LISTING`]); an Err: the
    /// listing fails
    listings: HashMap<String, Result<String, String>>,
    /// every change and verification, in order: `tag ID TAG`, `push TAG`, `index TAG`,
    /// `verify ID`, `untag TAG`, `relabel ID`
    log: Vec<String>,
}

impl FakeEngine {
    /// An engine that does not answer.
    pub fn down() -> FakeEngine {
        FakeEngine {
            down: true,
            ..FakeEngine::default()
        }
    }

    fn st(&self) -> MutexGuard<'_, State> {
        self.state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// An image `id` under `tags`.
    pub fn image(&self, id: &str, tags: &[&str]) {
        let mut s = self.st();
        s.labels.entry(id.to_string()).or_default();
        for t in tags {
            s.tags.insert((*t).to_string(), id.to_string());
        }
    }

    /// An image `id` of `size` bytes with the label `key=value`, untagged.
    pub fn labelled_image(&self, id: &str, key: &str, value: &str, size: u64) {
        let mut s = self.st();
        s.labels
            .entry(id.to_string())
            .or_default()
            .insert(key.to_string(), value.to_string());
        s.sizes.insert(id.to_string(), size);
    }

    /// `id` fails verification.
    pub fn fails_verification(&self, id: &str) {
        self.st().verdicts.insert(id.to_string(), false);
    }

    /// What listing `id`'s packages gives (the collection script's output, or an error).
    pub fn lists(&self, id: &str, output: Result<&str, &str>) {
        let o = output.map(str::to_string).map_err(str::to_string);
        self.st().listings.insert(id.to_string(), o);
    }

    fn listing(&self, image: &str) -> crate::sbom::Collected {
        let id = self.image_id(image).unwrap_or_else(|| image.to_string());
        let built = id.trim_end_matches("-labelled").to_string();
        let s = self.st();
        let output = s
            .listings
            .get(&id)
            .or_else(|| s.listings.get(&built))
            .cloned()
            .unwrap_or_else(|| Ok(LISTING.to_string()));
        crate::sbom::Collected {
            output,
            seconds: 0.1,
        }
    }

    /// The next `n` pushes of `tag` fail.
    pub fn failing_pushes(&self, tag: &str, n: u32) {
        self.st().push_failures.insert(tag.to_string(), n);
    }

    /// The image a tag names here.
    pub fn tagged(&self, tag: &str) -> Option<String> {
        self.st().tags.get(tag).cloned()
    }

    /// What the registry holds under `tag`.
    pub fn in_registry(&self, tag: &str) -> Option<String> {
        self.st().registry.get(tag).cloned()
    }

    pub fn log(&self) -> Vec<String> {
        self.st().log.clone()
    }

    fn answer(&self) -> Result<(), String> {
        if self.down {
            Err("Cannot connect to the Docker daemon".into())
        } else {
            Ok(())
        }
    }
}

/// What the fake lists for an image unless told otherwise: two Debian packages, no
/// conda, one pip package.
pub const LISTING: &str = "@image-matrix-packages 1\n@os debian\t12\n@dpkg\n\
ii \tbash\t5.2.15-2+b13\tamd64\nii \tlibc6\t2.36-9+deb12u10\tamd64\n\
@conda /opt/miniconda3\n@error no conda-meta folder in /opt/miniconda3 (not a conda environment)\n\
@pip 3.11.2\njupyterlab\t4.2.5\tpip\tBSD License\n@dpkg-licenses\nbash\tGPL-3+\n@end\n";

/// The registry digest the fake gives an image (or an index of members).
pub fn digest_of(what: &str) -> String {
    use sha2::{Digest, Sha256};
    let d = Sha256::digest(what.as_bytes());
    let hex: String = d.iter().map(|b| format!("{b:02x}")).collect();
    format!("sha256:{hex}")
}

impl ImageEngine for FakeEngine {
    fn alive(&self, _: Duration) -> Result<(), String> {
        self.answer()
    }
    fn is_buildkit(&self) -> bool {
        self.buildkit
    }
    fn emulates(&self, _: &str) -> bool {
        false
    }
    fn tags_of(&self, repository: &str) -> Result<HashMap<String, String>, String> {
        self.answer()?;
        Ok(self
            .st()
            .tags
            .iter()
            .filter(|(t, _)| crate::reference::split(t).0 == repository)
            .map(|(t, i)| (t.clone(), i.clone()))
            .collect())
    }
    fn labels_and_env(
        &self,
        image: &str,
    ) -> Result<(BTreeMap<String, String>, Vec<String>), String> {
        self.answer()?;
        let id = self
            .image_id(image)
            .ok_or_else(|| format!("No such image: {image}"))?;
        Ok((
            self.st().labels.get(&id).cloned().unwrap_or_default(),
            Vec::new(),
        ))
    }
    fn label(&self, image: &str, key: &str) -> Option<String> {
        let id = self.image_id(image)?;
        self.st().labels.get(&id)?.get(key).cloned()
    }
    fn inspect_many(&self, images: &[&str], fields: &str) -> HashMap<String, String> {
        images
            .iter()
            .filter_map(|i| self.image_id(i))
            .map(|id| {
                let v = if fields.contains("Size") {
                    "4242".to_string()
                } else {
                    serde_json::to_string(&self.st().labels.get(&id)).unwrap_or_default()
                };
                (id, v)
            })
            .collect()
    }
    fn image_id(&self, image: &str) -> Option<String> {
        if self.down {
            return None;
        }
        let s = self.st();
        s.tags
            .get(image)
            .cloned()
            .or_else(|| s.labels.contains_key(image).then(|| image.to_string()))
    }
    fn image_id_and_size(&self, image: &str) -> Option<(String, u64)> {
        self.image_id(image).map(|i| (i, 4242))
    }
    fn read_file(&self, _: &str, _: &str, _: &str) -> Result<String, String> {
        self.answer()?;
        Ok(r#"{"python": "3.11.2", "jupyterlab": "4.2.5"}"#.into())
    }
    fn relabel(
        &self,
        image: &str,
        tag: &str,
        _: &str,
        labels: &[(String, String)],
    ) -> Result<String, String> {
        self.answer()?;
        let id = self
            .image_id(image)
            .ok_or_else(|| format!("No such image: {image}"))?;
        let new = format!("{id}-labelled");
        let mut s = self.st();
        let mut l = s.labels.get(&id).cloned().unwrap_or_default();
        l.extend(labels.iter().cloned());
        s.labels.insert(new.clone(), l);
        s.tags.insert(tag.to_string(), new.clone());
        s.log.push(format!("relabel {id}"));
        Ok(new)
    }
    fn layers(&self, _: &str) -> Result<Vec<String>, String> {
        Ok(vec!["sha256:layer".into()])
    }
    fn rebuild_labelled(
        &self,
        _: &BuildRequest,
        _: crate::docker::Input,
        _: &[(String, String)],
        _: Duration,
    ) -> Result<(String, Vec<String>), String> {
        Err("the fake does not build".into())
    }
    fn images_labelled(&self, label: &str, value: &str) -> Result<Vec<String>, String> {
        self.answer()?;
        Ok(self
            .st()
            .labels
            .iter()
            .filter(|(_, l)| l.get(label).map(String::as_str) == Some(value))
            .map(|(id, _)| id.clone())
            .collect())
    }
    fn remove_image(&self, id: &str) -> Result<(), String> {
        self.answer()?;
        let mut s = self.st();
        s.log.push(format!("rm {id}"));
        s.labels.remove(id);
        s.sizes.remove(id);
        s.tags.retain(|_, i| i != id);
        Ok(())
    }
    fn images_size(&self) -> Result<u64, String> {
        self.answer()?;
        Ok(self.st().sizes.values().sum())
    }
    fn tag(&self, image: &str, tag: &str) -> Result<(), String> {
        self.answer()?;
        let id = self
            .image_id(image)
            .ok_or_else(|| format!("No such image: {image}"))?;
        let mut s = self.st();
        s.log.push(format!("tag {id} {tag}"));
        s.tags.insert(tag.to_string(), id);
        Ok(())
    }
    fn untag_all(&self, tags: &[&str]) {
        let mut s = self.st();
        for t in tags {
            s.log.push(format!("untag {t}"));
            s.tags.remove(*t);
        }
    }
    fn push(&self, tag: &str) -> Result<Option<String>, String> {
        self.answer()?;
        let id = self
            .image_id(tag)
            .ok_or_else(|| format!("No such image: {tag}"))?;
        let mut s = self.st();
        s.log.push(format!("push {tag}"));
        if let Some(n) = s.push_failures.get_mut(tag).filter(|n| **n > 0) {
            *n -= 1;
            return Err("received unexpected HTTP status: 502 Bad Gateway".into());
        }
        let d = digest_of(&id);
        s.registry.insert(tag.to_string(), d.clone());
        Ok(Some(d))
    }
    fn push_index(
        &self,
        index: &str,
        members: &[String],
        _: bool,
    ) -> Result<Option<String>, String> {
        self.answer()?;
        let mut s = self.st();
        s.log.push(format!("index {index}"));
        let d = digest_of(&members.join(","));
        s.registry.insert(index.to_string(), d.clone());
        Ok(Some(d))
    }
    fn verify(
        &self,
        image: &str,
        _: Option<&str>,
        _: u64,
        emulated: bool,
        _: &Cancel,
    ) -> (Verification, Option<crate::sbom::Collected>) {
        let id = self.image_id(image).unwrap_or_else(|| image.to_string());
        let listed = self.listing(image);
        let mut s = self.st();
        s.log.push(format!("verify {id}"));
        // an image labelled with its versions is the one that was built
        let built = id.trim_end_matches("-labelled");
        let ok = s.verdicts.get(built).copied().unwrap_or(true);
        let v = Verification {
            ok,
            emulated,
            verified_at: Some(crate::manifest::now()),
            ..Verification::default()
        };
        (v, Some(listed))
    }
    fn list_packages(&self, image: &str, _: &str, _: bool) -> crate::sbom::Collected {
        let id = self.image_id(image).unwrap_or_else(|| image.to_string());
        self.st().log.push(format!("list-packages {id}"));
        self.listing(image)
    }
}

/// Engines by name; `None` is the first.
#[derive(Default)]
pub struct FakeFleet(pub Vec<(String, FakeEngine)>);

impl FakeFleet {
    pub fn one() -> FakeFleet {
        FakeFleet(vec![(String::new(), FakeEngine::default())])
    }
    pub fn get(&self, name: &str) -> &FakeEngine {
        &self
            .0
            .iter()
            .find(|(n, _)| n == name)
            .expect("an engine of the fake")
            .1
    }
    pub fn first(&self) -> &FakeEngine {
        &self.0[0].1
    }
}

impl Fleet for FakeFleet {
    fn engine(&self, name: Option<&str>) -> Option<&dyn ImageEngine> {
        let e = match name {
            None => self.0.first(),
            Some(n) => self.0.iter().find(|(k, _)| k == n),
        }?;
        Some(&e.1 as &dyn ImageEngine)
    }
}
