//! What a build run is asked to do: the command line's options for `matrix build`,
//! with the matrix's settings already applied (`commands/build.rs` makes them). The
//! run reads nothing else of the command line.

use std::num::NonZeroUsize;
use std::path::PathBuf;
use std::time::Duration;

use crate::config::engine::EngineSpec;
use crate::config::settings::Cache;
use crate::docker::Builder;

pub struct Options {
    /// The docker client to run.
    pub client: PathBuf,
    /// A docker context for the one engine, or the engines (`--engine` or the matrix's).
    pub context: Option<String>,
    pub engines: Vec<EngineSpec>,
    pub builder: Builder,
    pub buildx_builder: Option<String>,
    /// Builds at once on an engine that sets no `jobs` of its own.
    pub jobs: NonZeroUsize,
    pub engine_check: Duration,
    pub fail_fast: bool,
    pub timeout: Option<Duration>,
    pub retries: u32,
    pub kill_grace: Duration,
    /// A manifest whose succeeded cells are not built again.
    pub resume: Option<PathBuf>,
    /// Build even what is up to date.
    pub force: bool,
    pub pull: bool,
    pub no_cache: bool,
    pub network: Option<String>,
    /// The host's download cache: its folder and port (`--download-cache`).
    pub download_cache: Option<(PathBuf, u16)>,
    pub out: PathBuf,
    pub log_dir: Option<PathBuf>,
    pub manifest: Option<PathBuf>,
    pub verify: bool,
    pub push: bool,
    /// Push each verified cell by digest to this staging repository (no public tag).
    pub stage: Option<String>,
    /// Prune to the images of the last N runs at the end.
    pub keep: Option<usize>,
    /// The labels every image carries (created, source, revision).
    pub labels: Vec<(String, String)>,
    pub cache: Cache,
    /// A shard's name and the ids of the whole selection it is part of (so that merge
    /// and push can tell a missing shard).
    pub shard: Option<(String, Vec<String>)>,
}
