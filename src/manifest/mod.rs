//! The build manifest: what a run did, per cell. Its schema (version 1, documented in
//! the README) lives here; [`io`] is the only code that writes it, [`merge`] joins the
//! manifests of shards, and [`drift`] compares a plan with a previous manifest.

pub mod drift;
pub mod io;
pub mod merge;

use serde::{Deserialize, Serialize};

pub use crate::coord::Coordinate as Coordinates;
use crate::coord::{Coordinate, Subject};

pub const SCHEMA: u32 = 1;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum Status {
    Built,
    UpToDate,
    Failed,
    TimedOut,
    Cancelled,
    NotStarted,
    Excluded,
}

impl Status {
    pub fn succeeded(self) -> bool {
        matches!(self, Status::Built | Status::UpToDate)
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Status::Built => "built",
            Status::UpToDate => "up-to-date",
            Status::Failed => "failed",
            Status::TimedOut => "timed-out",
            Status::Cancelled => "cancelled",
            Status::NotStarted => "not-started",
            Status::Excluded => "excluded",
        }
    }
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq, schemars::JsonSchema)]
pub struct Installer {
    pub file: String,
    pub sha256: String,
}

#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq, schemars::JsonSchema)]
pub struct CheckResult {
    pub name: String,
    pub ok: bool,
    pub detail: String,
    /// How long the check took.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seconds: Option<f64>,
}

#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq, schemars::JsonSchema)]
pub struct Verification {
    pub ok: bool,
    pub ready_seconds: Option<f64>,
    pub checks: Vec<CheckResult>,
    /// The image ran under emulation (a foreign platform), with longer deadlines.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub emulated: bool,
    /// Wall time of the whole verification.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seconds: Option<f64>,
    /// When it ran (RFC 3339): a later run that carries it over for the same image
    /// keeps this time.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub verified_at: Option<String>,
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq, schemars::JsonSchema)]
pub struct Pushed {
    pub tag: String,
    pub digest: Option<String>,
    pub ok: bool,
    pub attempts: u32,
    pub error: Option<String>,
    /// `publish` found the tag already at this digest and left it alone.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub unchanged: bool,
}

/// A cell's image as a shard job pushed it to the staging repository (`build
/// --stage`): by digest, no public tag moved. `publish` makes the public tags from it
/// through the registry alone.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq, schemars::JsonSchema)]
pub struct Staged {
    /// The staging repository (`registry.example/team/miniconda-staging`).
    pub repository: String,
    /// The private tag it was pushed under there.
    pub tag: String,
    /// The pushed manifest's digest.
    pub digest: String,
    /// The image's config digest (its image ID on the engine that built it).
    pub config: String,
}

/// A cell's software bill of materials: the file beside the manifest and what it
/// counts. Collection never fails a cell: a listing that could not be had says why in
/// `notes`, with no `path`.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq, schemars::JsonSchema)]
pub struct SbomRecord {
    /// The SBOM, relative to the manifest's folder (`sbom/<cell>.json`); None when
    /// none could be made.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    /// `CycloneDX 1.5 JSON`.
    pub format: String,
    /// Packages listed, per source.
    pub packages: PackageCounts,
    /// The file's sha256 (hex), to tell a file replaced since from the one recorded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sha256: Option<String>,
    /// When the packages were listed (RFC 3339): the SBOM's one timestamp.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub collected_at: Option<String>,
    /// How long listing them took (one `docker exec` in the verification's container,
    /// or one `docker run` when there was none).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seconds: Option<f64>,
    /// Why a source lists no package, or why there is no SBOM (one line each).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub notes: Vec<String>,
}

/// Packages per source: Debian's (dpkg), conda's, and Python's not installed by conda.
#[derive(
    Clone, Copy, Debug, Default, Serialize, Deserialize, PartialEq, Eq, schemars::JsonSchema,
)]
pub struct PackageCounts {
    pub dpkg: usize,
    pub conda: usize,
    pub pip: usize,
}

/// A build lost because its engine stopped answering; the cell went back to the queue.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, schemars::JsonSchema)]
pub struct Requeue {
    pub engine: String,
    pub reason: String,
    /// Time spent on that engine before the cell was taken away from it.
    pub seconds: f64,
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, schemars::JsonSchema)]
pub struct CellRecord {
    pub id: String,
    pub tags: Vec<String>,
    pub coordinates: Coordinate,
    pub installer: Option<Installer>,
    pub input_hash: Option<String>,
    /// Hashes of the context's parts (`Dockerfile`, `system`, `conda`, `variant`,
    /// `image`), so that `plan --diff` can say what changed.
    #[serde(default)]
    pub input_parts: std::collections::BTreeMap<String, String>,
    pub status: Status,
    pub attempts: u32,
    pub exit_code: Option<i32>,
    pub duration_seconds: f64,
    pub log: Option<String>,
    pub image_id: Option<String>,
    pub size_bytes: Option<u64>,
    /// Why it failed, was cancelled or excluded, in one line.
    pub reason: Option<String>,
    pub verification: Option<Verification>,
    #[serde(default)]
    pub pushed: Vec<Pushed>,
    /// The engine that built the image (or holds it, for up-to-date cells); push and
    /// verify go there.
    #[serde(default)]
    pub engine: Option<String>,
    /// Engines this cell was taken away from because they went down.
    #[serde(default)]
    pub requeued: Vec<Requeue>,
    /// What the base reference resolved to (registry digest, or the local image ID of
    /// a base that never came from a registry): part of the cell's identity.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub base_digest: Option<String>,
    /// A framework image's parent: the Miniconda cell it is built `FROM`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parent: Option<String>,
    /// The image ID of the parent it was built from (or found current on).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parent_digest: Option<String>,
    /// Public tags this run moved to the cell's image (new ones, and ones that pointed
    /// elsewhere, e.g. tonight's date tag on an up-to-date image).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tags_added: Vec<String>,
    /// The local reference of a build that was not promoted to the public tags (its
    /// verification failed or did not run); the public tags stayed where they were.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub candidate: Option<String>,
    /// For a failed build: the command that reproduces it (from its context).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reproduce: Option<String>,
    /// Versions read from the image after its build: python, conda, jupyterlab,
    /// tensorboard, numpy, and cuda/cudnn from the base's environment.
    #[serde(default, skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub versions: std::collections::BTreeMap<String, String>,
    /// The tag group it belongs to (cells of other platforms that share its tags).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub group: Option<String>,
    /// In a tag group: the tag its own image has on its engine and is pushed under
    /// (`REPO:TAG-arm64`); its `tags` then name the group's image index.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub platform_tag: Option<String>,
    /// Built (and verified) under emulation, not on a machine of its platform.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub emulated: bool,
    /// Pushed by digest to the staging repository (`build --stage`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub staged: Option<Staged>,
    /// Its packages, listed during acceptance (see `sbom`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sbom: Option<SbomRecord>,
}

/// A tag group's image index, as `push` published it: one index per shared tag, all
/// with the same content, over the members' pushed images.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq, schemars::JsonSchema)]
pub struct IndexRecord {
    pub group: String,
    pub tags: Vec<String>,
    /// Each member's platform, cell and the digest its platform tag was pushed with.
    pub platforms: Vec<IndexEntry>,
    /// The index's own digest, once pushed.
    pub digest: Option<String>,
    pub ok: bool,
    pub error: Option<String>,
    /// `publish` found every tag already at this index and left them alone.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub unchanged: bool,
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq, schemars::JsonSchema)]
pub struct IndexEntry {
    pub platform: String,
    pub cell: String,
    pub digest: Option<String>,
}

/// How a run ended.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq, schemars::JsonSchema)]
#[serde(tag = "result", rename_all = "kebab-case")]
pub enum RunOutcome {
    /// Every selected cell was attempted.
    Completed,
    /// A signal stopped it; what was running is `cancelled`, the rest `not-started`.
    Interrupted { signal: String },
    /// `--fail-fast` stopped it after the first failure.
    FailedFast,
    /// Every engine went down.
    EnginesLost,
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, schemars::JsonSchema)]
pub struct DockerInfo {
    pub client: String,
    pub server: String,
    pub builder: String,
}

/// One engine of the run: how to reach it again, and whether it stayed up.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, schemars::JsonSchema)]
pub struct EngineRecord {
    pub name: String,
    pub target: crate::config::engine::Target,
    pub jobs: usize,
    pub server: String,
    /// Why it was marked down during the run.
    pub down: Option<String>,
    /// The platforms it builds (its own and emulated ones).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub platforms: Vec<String>,
    /// The buildx builder that built for it, when not its own BuildKit.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub buildx_builder: Option<String>,
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, schemars::JsonSchema)]
pub struct Manifest {
    pub version: u32,
    pub tool: String,
    pub tool_version: String,
    pub started: String,
    pub finished: Option<String>,
    pub matrix: String,
    pub matrix_sha256: String,
    /// The image repository of the matrix's tags; `push` publishes only there.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub repository: Option<String>,
    /// The run's `{date}` (`YYYYMMDD`): what `prune --registry` tells dated tags by.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub date: Option<String>,
    pub docker: Option<DockerInfo>,
    /// CPU time (user + system) the tool itself used, without its children.
    #[serde(default)]
    pub tool_cpu_seconds: Option<f64>,
    /// How the run ended: `completed`, `interrupted` (with the signal), `failed-fast`
    /// or `engines-lost`. None while it runs, or in a manifest killed outright.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub outcome: Option<RunOutcome>,
    /// The ids of every cell the run's selection planned (filters applied, before
    /// `--shard`): what a complete set of shard manifests must cover.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub planned: Vec<String>,
    /// The shards (`2/4`) this manifest covers; empty for an unsharded run.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub shards: Vec<String>,
    /// The engines cells were built on (empty: the client's default engine).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub engines: Vec<EngineRecord>,
    pub cells: Vec<CellRecord>,
    /// The image indexes `push` made for tag groups.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub indexes: Vec<IndexRecord>,
    /// The signatures `publish --sign-key` stored, one per published digest.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub signatures: Vec<SignatureRecord>,
    /// The signed provenance (SLSA v1 in-toto statements) `publish --sign-key` stored
    /// beside each published image (`REPO:sha256-<hex>.att`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub attestations: Vec<SignatureRecord>,
}

/// A cosign-format signature of one published digest.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq, schemars::JsonSchema)]
pub struct SignatureRecord {
    /// The signed manifest's digest (an image or an index).
    pub subject: String,
    /// Where the signature is: `REPO:sha256-<hex>.sig`.
    pub tag: String,
    pub ok: bool,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub unchanged: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

impl Manifest {
    pub fn new(matrix: &str, matrix_sha256: &str, docker: Option<DockerInfo>) -> Self {
        Manifest {
            version: SCHEMA,
            tool: "image-matrix".into(),
            tool_version: env!("CARGO_PKG_VERSION").into(),
            started: now(),
            finished: None,
            matrix: matrix.into(),
            matrix_sha256: matrix_sha256.into(),
            repository: None,
            date: None,
            docker,
            tool_cpu_seconds: None,
            outcome: None,
            planned: Vec::new(),
            shards: Vec::new(),
            engines: Vec::new(),
            cells: Vec::new(),
            indexes: Vec::new(),
            signatures: Vec::new(),
            attestations: Vec::new(),
        }
    }

    pub fn count(&self, s: Status) -> usize {
        self.cells.iter().filter(|c| c.status == s).count()
    }

    /// Planned cells with no record here (shards not merged in), and, when the
    /// shards are known, which of them are missing.
    pub fn missing(&self) -> (Vec<&str>, Vec<String>) {
        let have: std::collections::HashSet<&str> =
            self.cells.iter().map(|c| c.id.as_str()).collect();
        let cells = self
            .planned
            .iter()
            .map(String::as_str)
            .filter(|id| !have.contains(id))
            .collect();
        let count = self
            .shards
            .first()
            .and_then(|s| s.split_once('/'))
            .and_then(|(_, n)| n.parse::<usize>().ok());
        let shards = count.map_or_else(Vec::new, |n| {
            (1..=n)
                .map(|i| format!("{i}/{n}"))
                .filter(|s| !self.shards.contains(s))
                .collect()
        });
        (cells, shards)
    }

    /// Why this manifest does not cover its whole plan, if it does not.
    /// Each tag group of the cells that are not excluded, with its members' record
    /// indexes, in the order the cells come.
    pub fn tag_groups(&self) -> Vec<(String, Vec<usize>)> {
        let mut groups: Vec<(String, Vec<usize>)> = Vec::new();
        for (i, c) in self.cells.iter().enumerate() {
            let Some(g) = c.group.as_ref().filter(|_| c.status != Status::Excluded) else {
                continue;
            };
            match groups.iter_mut().find(|(n, _)| n == g) {
                Some((_, m)) => m.push(i),
                None => groups.push((g.clone(), vec![i])),
            }
        }
        groups
    }

    pub fn incomplete(&self) -> Option<String> {
        let (cells, shards) = self.missing();
        if cells.is_empty() && shards.is_empty() {
            return None;
        }
        let mut why = format!(
            "{} of the {} planned cells have no record",
            cells.len(),
            self.planned.len()
        );
        if !shards.is_empty() {
            why.push_str(&format!(" (shards {} are missing)", shards.join(", ")));
        }
        Some(why)
    }
}

impl CellRecord {
    /// A record of a cell that has not started.
    pub fn new(id: &str, coordinates: Coordinate) -> CellRecord {
        CellRecord {
            id: id.to_string(),
            tags: Vec::new(),
            coordinates,
            installer: None,
            input_hash: None,
            parent: None,
            parent_digest: None,
            input_parts: std::collections::BTreeMap::new(),
            status: Status::NotStarted,
            attempts: 0,
            exit_code: None,
            duration_seconds: 0.0,
            log: None,
            image_id: None,
            size_bytes: None,
            reason: None,
            verification: None,
            pushed: Vec::new(),
            engine: None,
            requeued: Vec::new(),
            base_digest: None,
            tags_added: Vec::new(),
            candidate: None,
            reproduce: None,
            versions: std::collections::BTreeMap::new(),
            group: None,
            platform_tag: None,
            emulated: false,
            staged: None,
            sbom: None,
        }
    }

    /// The tag its image has on its engine: the platform tag in a tag group, else the
    /// primary tag.
    /// The tags it carries on its engine: a tag group's member its platform tag, any
    /// other cell all its tags.
    pub fn local_tags(&self) -> Vec<String> {
        match &self.platform_tag {
            Some(t) => vec![t.clone()],
            None => self.tags.clone(),
        }
    }

    pub fn local_tag(&self) -> Option<&str> {
        self.platform_tag
            .as_deref()
            .or_else(|| self.tags.first().map(String::as_str))
    }
}

impl Subject for CellRecord {
    fn coordinate(&self) -> &Coordinate {
        &self.coordinates
    }
    fn id(&self) -> &str {
        &self.id
    }
    fn tags(&self) -> &[String] {
        &self.tags
    }
}

/// This process's own CPU time in seconds (children excluded).
pub fn own_cpu_seconds() -> f64 {
    let mut u = std::mem::MaybeUninit::<libc::rusage>::zeroed();
    // SAFETY: getrusage writes a full rusage struct into the pointer we give it.
    let u = unsafe {
        if libc::getrusage(libc::RUSAGE_SELF, u.as_mut_ptr()) != 0 {
            return 0.0;
        }
        u.assume_init()
    };
    let t = |tv: libc::timeval| tv.tv_sec as f64 + tv.tv_usec as f64 / 1e6;
    t(u.ru_utime) + t(u.ru_stime)
}

pub fn now() -> String {
    humantime::format_rfc3339_seconds(std::time::SystemTime::now()).to_string()
}
