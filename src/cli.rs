//! Command-line definitions (clap). Parsing only; `lib.rs` runs the commands.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};

use crate::filter::Filter;

#[derive(Parser, Debug)]
#[command(
    name = "matrix",
    version,
    about = "Plan, build, verify and publish a matrix of Miniconda + JupyterLab + TensorBoard images"
)]
pub struct Cli {
    /// The matrix file.
    #[arg(
        short = 'f',
        long = "matrix",
        global = true,
        default_value = "matrix.yaml",
        env = "MATRIX_FILE"
    )]
    pub matrix: PathBuf,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Print what `build` would do, without doing it.
    Plan(PlanArgs),
    /// Write one self-contained build context per cell (Dockerfile + init + inputs).
    Render(RenderArgs),
    /// Build every planned cell in parallel and write a manifest.
    Build(Box<BuildArgs>),
    /// Start each built image and check, from outside, that it does what it promises.
    Verify(VerifyArgs),
    /// Push the cells of a manifest that built (and verified), then their alias tags.
    Push(PushArgs),
    /// Work with manifests (merge the manifests of sharded builds).
    #[command(subcommand)]
    Manifest(ManifestCommand),
}

#[derive(Args, Debug, Clone)]
pub struct Selection {
    /// Select cells: KEY=GLOB with KEY one of python, cuda, cudnn, flavor, os, platform,
    /// variant, base, miniconda, tag, id. Repeat to narrow further.
    #[arg(long = "filter", value_name = "KEY=VALUE")]
    pub filters: Vec<Filter>,
    /// Only the cells of shard I of N (cells of one base stay together; see
    /// `plan --format gha --shards N`).
    #[arg(long, value_name = "I/N")]
    pub shard: Option<crate::shard::Shard>,
    /// Date stamp for `{date}` in tags (default: today, UTC).
    #[arg(long, value_name = "YYYYMMDD", value_parser = parse_date)]
    pub date: Option<String>,
}

fn parse_date(s: &str) -> Result<String, String> {
    if s.len() == 8 && s.bytes().all(|c| c.is_ascii_digit()) {
        Ok(s.to_string())
    } else {
        Err(format!("`{s}` is not a date in YYYYMMDD form"))
    }
}

#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum PlanFormat {
    Table,
    Json,
    Bake,
    Gha,
}

#[derive(Args, Debug)]
pub struct PlanArgs {
    #[command(flatten)]
    pub select: Selection,
    #[arg(long, value_enum, default_value = "table")]
    pub format: PlanFormat,
    /// Compare with a previous build manifest: which cells will change and why
    /// (table, or JSON with --format json).
    #[arg(long, value_name = "MANIFEST")]
    pub diff: Option<PathBuf>,
    /// With --format gha: one matrix entry per shard (N CI jobs) instead of per cell.
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u16).range(1..=256))]
    pub shards: Option<u16>,
    /// With --format bake: where `matrix render -o` put the contexts.
    #[arg(long, default_value = "out/contexts")]
    pub contexts: PathBuf,
}

#[derive(Args, Debug)]
pub struct RenderArgs {
    #[command(flatten)]
    pub select: Selection,
    /// Output directory; each cell's context goes to DIR/<cell id>/.
    #[arg(short, long, default_value = "out/contexts")]
    pub output: PathBuf,
}

#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum Builder {
    /// Whatever the client does by default.
    Auto,
    /// The legacy builder (DOCKER_BUILDKIT=0).
    Legacy,
    /// BuildKit (DOCKER_BUILDKIT=1, --progress=plain).
    Buildkit,
}

#[derive(Args, Debug)]
pub struct DockerArgs {
    /// The docker client to run.
    #[arg(long, env = "DOCKER", hide_env_values = true, default_value = "docker")]
    pub docker: PathBuf,
    /// Docker context to use (otherwise DOCKER_HOST / the current context).
    #[arg(long, conflicts_with = "engines")]
    pub context: Option<String>,
    /// A Docker engine: NAME=TARGET[,jobs=N], TARGET a DOCKER_HOST URL (unix://,
    /// tcp://, ssh://) or a docker context. Repeat for several engines; replaces the
    /// matrix's `engines:` list. Push and verify reach each cell on the engine the
    /// manifest names (this option overrides where an engine name points).
    #[arg(long = "engine", value_name = "NAME=TARGET[,jobs=N]")]
    pub engines: Vec<crate::engine::EngineSpec>,
}

#[derive(Args, Debug)]
pub struct BuildArgs {
    #[command(flatten)]
    pub select: Selection,
    #[command(flatten)]
    pub docker: DockerArgs,
    /// Builds to run at once (per engine, unless an engine sets its own `jobs`).
    #[arg(short, long, default_value_t = 2)]
    pub jobs: usize,
    /// How often to check that every engine still answers (with several engines; 0s
    /// turns it off); an engine that misses two checks in a row is marked down and its
    /// unfinished cells go to the others.
    #[arg(long, value_parser = humantime::parse_duration, default_value = "5s")]
    pub engine_check: std::time::Duration,
    /// Where contexts, logs and the manifest go.
    #[arg(short, long, default_value = "out")]
    pub out: PathBuf,
    /// Per-build logs (default OUT/logs).
    #[arg(long)]
    pub log_dir: Option<PathBuf>,
    /// Manifest path (default OUT/manifest.json).
    #[arg(long)]
    pub manifest: Option<PathBuf>,
    /// Which builder the client should use.
    #[arg(long, value_enum, default_value = "auto")]
    pub builder: Builder,
    /// Stop at the first failure: start nothing new and cancel running builds.
    #[arg(long)]
    pub fail_fast: bool,
    /// Time limit per build attempt, e.g. 45m or 2h.
    #[arg(long, value_parser = humantime::parse_duration)]
    pub timeout: Option<std::time::Duration>,
    /// Re-tries after a failure that looks transient (network, registry 5xx, mirror
    /// sync): N re-tries means at most N+1 attempts. Never re-tried: rejected
    /// arguments (exit 125), timeouts, cancellations.
    #[arg(long, default_value_t = 0)]
    pub retries: u32,
    /// How long a stopped build gets between SIGTERM and SIGKILL.
    #[arg(long, value_parser = humantime::parse_duration, default_value = "10s")]
    pub kill_grace: std::time::Duration,
    /// Re-run only the cells of this manifest that did not succeed.
    #[arg(long, value_name = "MANIFEST")]
    pub resume: Option<PathBuf>,
    /// Rebuild cells whose image is already up to date.
    #[arg(long)]
    pub force: bool,
    /// Pass --pull to docker build (fetch newer base layers).
    #[arg(long)]
    pub pull: bool,
    /// Pass --no-cache to docker build.
    #[arg(long)]
    pub no_cache: bool,
    /// Network for RUN steps (overrides build.network in the matrix).
    #[arg(long)]
    pub network: Option<String>,
    /// Verify each image right after it builds.
    #[arg(long)]
    pub verify: bool,
    /// Push cells that built (and verified, with --verify) after every build is done.
    #[arg(long)]
    pub push: bool,
    /// Print only failures and the summary.
    #[arg(short, long)]
    pub quiet: bool,
}

#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum VerifyFormat {
    Table,
    Json,
}

#[derive(Args, Debug)]
pub struct VerifyArgs {
    /// Manifest whose built cells to verify (default: out/manifest.json).
    #[arg(long)]
    pub manifest: Option<PathBuf>,
    /// Verify these image references instead of a manifest.
    #[arg(long = "image", value_name = "REF")]
    pub images: Vec<String>,
    /// Select cells of the manifest (same keys as plan).
    #[arg(long = "filter", value_name = "KEY=VALUE")]
    pub filters: Vec<Filter>,
    #[command(flatten)]
    pub docker: DockerArgs,
    #[arg(long, value_enum, default_value = "table")]
    pub format: VerifyFormat,
    /// Seconds to wait for the services of one container.
    #[arg(long, default_value_t = 90)]
    pub ready_timeout: u64,
}

#[derive(Args, Debug)]
pub struct PushArgs {
    /// The manifest to publish.
    pub manifest: PathBuf,
    #[command(flatten)]
    pub docker: DockerArgs,
    /// Publish the cells that succeeded even when others did not.
    #[arg(long)]
    pub allow_partial: bool,
    /// Re-tries per push.
    #[arg(long, default_value_t = 2)]
    pub retries: u32,
}

#[derive(Subcommand, Debug)]
pub enum ManifestCommand {
    /// Combine the manifests of shards into one; refuses conflicting entries for a cell.
    Merge {
        /// Shard manifests.
        #[arg(required = true)]
        inputs: Vec<PathBuf>,
        /// Where to write the merged manifest.
        #[arg(short, long)]
        output: PathBuf,
    },
}
