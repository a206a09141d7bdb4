//! The seam between the phases after the builds (acceptance, verification, promotion
//! of tags, publishing) and a container engine: what those phases ask of an engine,
//! as one trait. The Docker CLI client of a connected engine implements it
//! ([`crate::engines::Engine`]); unit tests use the in-process [`fake`], so that the
//! rules that matter most (tags move only to verified images, nothing is half
//! published) are tested in milliseconds, without a daemon or a shell-script fake.
//!
//! The phases reach engines only through [`Fleet`] (an engine by the name a cell's
//! record gives) and [`ImageEngine`]; they never hold a `Docker` themselves.

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use crate::docker::BuildRequest;
use crate::manifest::Verification;
use crate::sbom::Collected;
use crate::signals::Cancel;

/// What the phases after the builds ask of one engine.
pub trait ImageEngine: Sync {
    /// Whether the daemon answers within `timeout`.
    fn alive(&self, timeout: Duration) -> Result<(), String>;
    /// Whether it builds with BuildKit (which keeps inline cache metadata).
    fn is_buildkit(&self) -> bool;
    /// Whether it builds `platform` under emulation.
    fn emulates(&self, platform: &str) -> bool;
    /// Every tag of `repository` here, and the image ID it names.
    fn tags_of(&self, repository: &str) -> Result<HashMap<String, String>, String>;
    /// An image's labels and environment (`KEY=VALUE` each).
    fn labels_and_env(
        &self,
        image: &str,
    ) -> Result<(BTreeMap<String, String>, Vec<String>), String>;
    /// One label of an image (None: no such image, or no such label).
    fn label(&self, image: &str, key: &str) -> Option<String>;
    /// One Go-template field of many images at once, by image ID (those missing left out).
    fn inspect_many(&self, images: &[&str], fields: &str) -> HashMap<String, String>;
    /// The image ID a reference names here, if any.
    fn image_id(&self, image: &str) -> Option<String>;
    fn image_id_and_size(&self, image: &str) -> Option<(String, u64)>;
    /// A file of an image, read in a container without network.
    fn read_file(&self, image: &str, platform: &str, path: &str) -> Result<String, String>;
    /// A metadata-only build on top of `image` with `labels`, tagged `tag`; its ID.
    fn relabel(
        &self,
        image: &str,
        tag: &str,
        platform: &str,
        labels: &[(String, String)],
    ) -> Result<String, String>;
    /// The image's layer digests.
    fn layers(&self, image: &str) -> Result<Vec<String>, String>;
    /// The same build again with `labels` added, its context on standard input: its
    /// ID and layers.
    fn rebuild_labelled(
        &self,
        request: &BuildRequest,
        context: crate::docker::Input,
        labels: &[(String, String)],
        timeout: Duration,
    ) -> Result<(String, Vec<String>), String>;
    /// The IDs of every image that carries `label=value`.
    fn images_labelled(&self, label: &str, value: &str) -> Result<Vec<String>, String>;
    /// Remove an image by ID, whatever tags it carries.
    fn remove_image(&self, id: &str) -> Result<(), String>;
    /// The engine's image storage in bytes.
    fn images_size(&self) -> Result<u64, String>;
    fn tag(&self, image: &str, tag: &str) -> Result<(), String>;
    /// Remove tags (errors ignored: a tag already gone is no loss).
    fn untag_all(&self, tags: &[&str]);
    /// Push one tag; the registry digest the engine reports.
    fn push(&self, tag: &str) -> Result<Option<String>, String>;
    /// Make and push an image index `index` of `members` (`repo@digest` each).
    fn push_index(
        &self,
        index: &str,
        members: &[String],
        insecure: bool,
    ) -> Result<Option<String>, String>;
    /// Start the image, run every check against it, list its packages in the same
    /// container (None: it never ran), remove it.
    fn verify(
        &self,
        image: &str,
        python: Option<&str>,
        ready_timeout: u64,
        emulated: bool,
        cancel: &Cancel,
    ) -> (Verification, Option<Collected>);
    /// List an image's packages in a container of its own, without network (for a
    /// cell that is not verified): the output of [`crate::sbom::SCRIPT`].
    fn list_packages(&self, image: &str, platform: &str, emulated: bool) -> Collected;
}

/// The engines of a run, by the name a cell's record gives (`None`: the first).
pub trait Fleet: Sync {
    fn engine(&self, name: Option<&str>) -> Option<&dyn ImageEngine>;
}

impl ImageEngine for crate::engines::Engine {
    fn alive(&self, timeout: Duration) -> Result<(), String> {
        self.docker.ping(timeout)
    }
    fn is_buildkit(&self) -> bool {
        self.docker.builder.is_buildkit()
    }
    fn emulates(&self, platform: &str) -> bool {
        crate::engines::Engine::emulates(self, platform)
    }
    fn tags_of(&self, repository: &str) -> Result<HashMap<String, String>, String> {
        self.docker.tags_of(repository)
    }
    fn labels_and_env(
        &self,
        image: &str,
    ) -> Result<(BTreeMap<String, String>, Vec<String>), String> {
        self.docker.labels_and_env(image)
    }
    fn label(&self, image: &str, key: &str) -> Option<String> {
        self.docker.label(image, key)
    }
    fn inspect_many(&self, images: &[&str], fields: &str) -> HashMap<String, String> {
        self.docker.inspect_by_id(images, fields)
    }
    fn image_id(&self, image: &str) -> Option<String> {
        self.docker.image_id(image)
    }
    fn image_id_and_size(&self, image: &str) -> Option<(String, u64)> {
        self.docker.image_id_and_size(image)
    }
    fn read_file(&self, image: &str, platform: &str, path: &str) -> Result<String, String> {
        self.docker.read_file(image, platform, path)
    }
    fn relabel(
        &self,
        image: &str,
        tag: &str,
        platform: &str,
        labels: &[(String, String)],
    ) -> Result<String, String> {
        self.docker.relabel(image, tag, platform, labels)
    }
    fn layers(&self, image: &str) -> Result<Vec<String>, String> {
        self.docker.layers(image)
    }
    fn rebuild_labelled(
        &self,
        request: &BuildRequest,
        context: crate::docker::Input,
        labels: &[(String, String)],
        timeout: Duration,
    ) -> Result<(String, Vec<String>), String> {
        self.docker
            .rebuild_labelled(request, context, labels, timeout)
    }
    fn images_labelled(&self, label: &str, value: &str) -> Result<Vec<String>, String> {
        self.docker.images_labelled(label, value)
    }
    fn remove_image(&self, id: &str) -> Result<(), String> {
        self.docker.remove_image(id)
    }
    fn images_size(&self) -> Result<u64, String> {
        self.docker.images_size()
    }
    fn tag(&self, image: &str, tag: &str) -> Result<(), String> {
        self.docker.tag(image, tag)
    }
    fn untag_all(&self, tags: &[&str]) {
        self.docker.untag_all(tags);
    }
    fn push(&self, tag: &str) -> Result<Option<String>, String> {
        self.docker.push(tag)
    }
    fn push_index(
        &self,
        index: &str,
        members: &[String],
        insecure: bool,
    ) -> Result<Option<String>, String> {
        self.docker.push_index(index, members, insecure)
    }
    fn verify(
        &self,
        image: &str,
        python: Option<&str>,
        ready_timeout: u64,
        emulated: bool,
        cancel: &Cancel,
    ) -> (Verification, Option<Collected>) {
        crate::verify::verify_and_list(&self.docker, image, python, ready_timeout, emulated, cancel)
    }
    fn list_packages(&self, image: &str, platform: &str, emulated: bool) -> Collected {
        let t0 = std::time::Instant::now();
        let output = self.docker.run_script(
            image,
            platform,
            crate::sbom::SCRIPT,
            crate::sbom::timeout(emulated),
        );
        Collected {
            output,
            seconds: t0.elapsed().as_secs_f64(),
        }
    }
}

impl Fleet for crate::engines::Engines {
    fn engine(&self, name: Option<&str>) -> Option<&dyn ImageEngine> {
        crate::engines::Engines::engine(self, name).map(|e| e as &dyn ImageEngine)
    }
}

#[cfg(test)]
pub mod fake;
