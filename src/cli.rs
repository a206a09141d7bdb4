//! Command-line definitions (clap). Parsing only; `commands/` runs them.

use std::num::NonZeroUsize;
use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};

use crate::config::engine::EngineSpec;
use crate::config::settings::CacheFrom;
use crate::coord::Filter;
use crate::docker::Builder;
use crate::plan::shard::Shard;
use crate::report::Mode as Progress;

/// The exit codes (`crate::exit`), as `--help` lists them: a macro, so that the
/// commands whose outcome people script on can append them to their examples.
macro_rules! exit_codes {
    () => {
        "Exit codes:
  0    everything planned was done and every check passed
  1    a cell failed, timed out, was not started or failed verification; or a push was refused
  2    the command line was wrong, or the selection matched no cell
  3    the matrix file is invalid; nothing was started
  4    a precondition failed before any work (Docker, output directory, input manifest)
  5    an output (manifest, plan, report) could not be written
  129  stopped by SIGHUP; 130 by SIGINT (Ctrl-C); 143 by SIGTERM"
    };
}

#[derive(Parser, Debug)]
#[command(
    name = "matrix",
    version = crate::VERSION,
    about = "Plan, build, verify and publish a matrix of Miniconda + JupyterLab + TensorBoard images",
    after_help = concat!("Examples:
  matrix plan
  matrix build -j 4 --verify
  matrix completions bash > ~/.local/share/bash-completion/completions/matrix

", exit_codes!())
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
    #[command(after_help = "Examples:
  matrix plan
  matrix plan --filter cuda=12 --filter python=3.11
  matrix plan --format json > plan.json
  matrix plan --diff out/manifest.json
  matrix plan --format gha --shards 4
  matrix plan --format gitlab --shards 4 > shards.yml")]
    Plan(PlanArgs),
    /// Write one self-contained build context per cell (Dockerfile + init + inputs).
    #[command(after_help = "Examples:
  matrix render -o out/contexts
  docker build -t my:tag out/contexts/py3.11-ubuntu22.04-amd64")]
    Render(RenderArgs),
    /// Build every planned cell in parallel and write a manifest.
    #[command(after_help = concat!("Examples:
  matrix build -j 4
  matrix build --filter os=ubuntu22.04 --verify
  matrix build --engine a=unix:///var/run/docker.sock --engine b=ssh://ci@b,jobs=4
  matrix build --shard 2/4 -o out/shard-2
  matrix build --progress json > events.jsonl

", exit_codes!()))]
    Build(Box<BuildArgs>),
    /// Start each built image and check, from outside, that it does what it promises.
    #[command(after_help = concat!("Examples:
  matrix verify --manifest out/manifest.json
  matrix verify --image miniconda:conda3-python3.11-ubuntu22.04

", exit_codes!()))]
    Verify(VerifyArgs),
    /// Push the cells of a manifest that built (and verified), then their alias tags.
    #[command(after_help = concat!("Examples:
  matrix push out/manifest.json
  matrix push all.json --engine build-1=ssh://ci@build-1
  matrix push -f ci/matrix.yaml out/manifest.json    # the matrix it was built from

", exit_codes!()))]
    Push(PushArgs),
    /// Make a merged manifest's public tags and image indexes in the registry from the
    /// digests its shards staged (`build --stage`), with no Docker daemon.
    #[command(after_help = concat!("Examples:
  matrix publish all.json
  matrix publish all.json --registry-ca corp-ca.pem
  matrix publish all.json --insecure-registry registry.lan:5000

Credentials come from Docker's client configuration ($DOCKER_CONFIG/config.json, or
~/.docker/config.json): `auths` entries, `credHelpers` and `credsStore`; `matrix login`
writes one. A second publish changes nothing and says so; a killed one finishes when run
again.

", exit_codes!()))]
    Publish(PublishArgs),
    /// Make signing keys, check signatures (cosign's format).
    #[command(subcommand)]
    Signature(SignatureCommand),
    /// Store a registry's credentials where Docker keeps them, for `matrix publish`.
    #[command(after_help = "Examples:
  echo \"$REGISTRY_TOKEN\" | matrix login registry.example --username ci --password-stdin")]
    Login(LoginArgs),
    /// Work with manifests (merge the manifests of sharded builds).
    #[command(
        subcommand,
        after_help = "Examples:
  matrix manifest merge shard-*/manifest.json -o all.json"
    )]
    Manifest(ManifestCommand),
    /// Refresh the installer catalogue and the nvidia/cuda tag list from upstream.
    #[command(
        subcommand,
        after_help = "Examples:
  matrix catalogue update --dry-run"
    )]
    Catalogue(CatalogueCommand),
    /// Remove this matrix's images that none of the last N runs produced or tagged.
    #[command(after_help = "Examples:
  matrix prune --keep 3
  matrix prune --keep 1 --manifest out/local/manifest.json
  matrix prune --registry --keep-dated 7 --manifest all.json --dry-run")]
    Prune(PruneArgs),
    /// Write what a run did as a page people look at (HTML) or a summary (Markdown).
    #[command(after_help = "Examples:
  matrix report out/manifest.json -o report.html
  matrix report out/manifest.json --previous last-night.json -o report.html
  matrix report out/manifest.json --format markdown >> \"$GITHUB_STEP_SUMMARY\"")]
    Report(ReportArgs),
    /// Print a shell's completion script for matrix.
    #[command(after_help = "Examples:
  matrix completions bash > ~/.local/share/bash-completion/completions/matrix
  matrix completions zsh > ~/.zfunc/_matrix      # with fpath+=(~/.zfunc) in ~/.zshrc
  matrix completions fish > ~/.config/fish/completions/matrix.fish
  source <(matrix completions bash)               # this bash session only")]
    Completions(CompletionsArgs),
    /// Print the manual page (roff), or write one page per command into a directory.
    #[command(after_help = "Examples:
  matrix man | man -l -
  matrix man -o ~/.local/share/man/man1 && man matrix-build")]
    Man(ManArgs),
    /// Print the JSON Schema of matrix.yaml, the plan document, the manifest or the
    /// progress events.
    #[command(after_help = "Examples:
  matrix schema matrix > matrix.schema.json
  matrix schema manifest | jq '.properties.cells'
  matrix schema events

Editors check matrix.yaml with the first line
  # yaml-language-server: $schema=schemas/matrix.schema.json")]
    Schema(SchemaArgs),
}

#[derive(Args, Debug)]
pub struct SchemaArgs {
    /// Which schema.
    #[arg(value_parser = clap::builder::PossibleValuesParser::new(crate::schema::NAMES))]
    pub name: String,
}

#[derive(Args, Debug)]
pub struct CompletionsArgs {
    /// The shell to complete for.
    #[arg(value_enum)]
    pub shell: clap_complete::Shell,
}

#[derive(Args, Debug)]
pub struct ManArgs {
    /// Write matrix.1 and matrix-COMMAND.1 for every command into DIR instead of
    /// printing matrix.1.
    #[arg(short, long, value_name = "DIR")]
    pub output: Option<PathBuf>,
}

#[derive(Subcommand, Debug)]
pub enum CatalogueCommand {
    /// Read Anaconda's Miniconda listing and NVIDIA's tag lists, say what changed and
    /// write the data files that plans then read.
    #[command(after_help = "Sources (under --from, or upstream by default):
  miniconda/.files.json, else miniconda/ (the HTML index)   https://repo.anaconda.com/miniconda/
  cuda/supported-tags.md and cuda/unsupported-tags.md     https://gitlab.com/nvidia/container-images/cuda/-/raw/master/doc/

Examples:
  matrix catalogue update
  matrix catalogue update --from /srv/mirror-copy --to data")]
    Update(CatalogueUpdateArgs),
}

#[derive(Args, Debug)]
pub struct CatalogueUpdateArgs {
    /// A directory or URL holding miniconda/ and cuda/ copies of the upstream listings.
    #[arg(long, value_name = "URL|DIR")]
    pub from: Option<String>,
    /// Where to write the data files (default: $IMAGE_MATRIX_DATA, else
    /// ~/.local/share/image-matrix; `data` in a checkout updates the built-in ones).
    #[arg(long, value_name = "DIR")]
    pub to: Option<PathBuf>,
    /// Take a new SHA256 for an installer the catalogue already knows (normally
    /// refused: a published installer whose checksum changes needs a look first).
    #[arg(long)]
    pub accept_changed_sha256: bool,
    /// Say what would change; write nothing.
    #[arg(long)]
    pub dry_run: bool,
}

#[derive(Args, Debug)]
pub struct PruneArgs {
    /// The manifest of the latest run (its history/ folder holds the earlier ones).
    #[arg(long, default_value = "out/manifest.json")]
    pub manifest: PathBuf,
    /// How many runs' images to keep (the latest included).
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u32).range(1..))]
    pub keep: u32,
    #[command(flatten)]
    pub docker: DockerArgs,
    /// Prune the registry instead of the engines: delete the matrix repository's dated
    /// tags (the latest run's date aliases under older dates) of all but the last
    /// --keep-dated nights, through the registry's API. Needs no Docker daemon.
    #[arg(long, requires = "keep_dated", help_heading = "Registry")]
    pub registry: bool,
    /// With --registry: how many nights of dated tags to keep (the latest included).
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..), help_heading = "Registry")]
    pub keep_dated: Option<u32>,
    /// With --registry: list what would be deleted, delete nothing.
    #[arg(long, requires = "registry", help_heading = "Registry")]
    pub dry_run: bool,
    #[command(flatten, next_help_heading = "Registry")]
    pub registry_access: RegistryArgs,
}

#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum ReportFormat {
    Html,
    Markdown,
}

#[derive(Args, Debug)]
pub struct ReportArgs {
    /// The manifest of the run.
    pub manifest: PathBuf,
    /// Where to write it (default: stdout).
    #[arg(short, long)]
    pub output: Option<PathBuf>,
    /// html or markdown (default: from -o's extension, else html).
    #[arg(long, value_enum)]
    pub format: Option<ReportFormat>,
    /// A previous run's manifest: the report says what changed since.
    #[arg(long, value_name = "MANIFEST")]
    pub previous: Option<PathBuf>,
    /// The run's log folder, where the failed builds' last lines are read (default:
    /// `logs/` beside the manifest; give the build's --log-dir if it had one). No log
    /// is read from anywhere else.
    #[arg(long, value_name = "DIR")]
    pub log_dir: Option<PathBuf>,
}

#[derive(Args, Debug, Clone)]
#[command(next_help_heading = "Selection")]
pub struct Selection {
    /// Select cells: KEY=GLOB with KEY one of python, cuda, cudnn, flavor, os, platform,
    /// arch, variant, base, miniconda, tag, id. Repeat to narrow further.
    #[arg(long = "filter", value_name = "KEY=VALUE")]
    pub filters: Vec<Filter>,
    /// Only the cells of shard I of N (cells of one base stay together; see
    /// `plan --format gha --shards N`).
    #[arg(long, value_name = "I/N")]
    pub shard: Option<Shard>,
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

/// `-j`: 1 to 256, like an engine's `jobs`.
fn parse_jobs(s: &str) -> Result<NonZeroUsize, String> {
    crate::config::engine::check_jobs(s)
        .ok()
        .and_then(NonZeroUsize::new)
        .ok_or_else(|| format!("`{s}` is not a number of builds (expected 1 to 256)"))
}

/// `--network`: a network name, as `build.network` accepts.
fn parse_network(s: &str) -> Result<String, String> {
    crate::config::settings::check_network(s).map(|()| s.to_string())
}

#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum PlanFormat {
    Table,
    Json,
    Bake,
    Gha,
    Gitlab,
}

#[derive(Args, Debug)]
pub struct PlanArgs {
    #[command(flatten)]
    pub select: Selection,
    #[arg(long, value_enum, default_value = "table", help_heading = "Output")]
    pub format: PlanFormat,
    /// Compare with a previous build manifest: which cells will change and why
    /// (table, or JSON with --format json).
    #[arg(long, value_name = "MANIFEST", help_heading = "Output")]
    pub diff: Option<PathBuf>,
    /// With --format gha: one matrix entry per shard (N CI jobs) instead of per cell.
    /// With --format gitlab (required): a child pipeline of N build jobs and a publish job.
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u16).range(1..=256), help_heading = "Output")]
    pub shards: Option<u16>,
    /// With --format bake: where `matrix render -o` put the contexts.
    #[arg(long, default_value = "out/contexts", help_heading = "Output")]
    pub contexts: PathBuf,
    /// With --format bake: targets pull their bases, as `build --pull` does.
    #[arg(long, help_heading = "Output")]
    pub pull: bool,
    #[command(flatten)]
    pub cache: CacheArgs,
}

/// The registry cache, as flags (they replace or extend the matrix's `cache:`).
#[derive(Args, Debug, Clone, Default)]
pub struct CacheArgs {
    /// Take layer cache from `registry` (each cell's published image) or an image
    /// reference (`{tag}` is the cell's tag); repeat for several. Replaces the
    /// matrix's `cache.from`. BuildKit builders only.
    #[arg(
        long = "cache-from",
        value_name = "registry|REF",
        help_heading = "Cache"
    )]
    pub from: Vec<CacheFrom>,
    /// `inline`: write cache metadata into the images built, so that once pushed they
    /// are the next run's cache (on by default with `cache:` in the matrix).
    #[arg(
        long = "cache-to",
        value_enum,
        value_name = "inline",
        help_heading = "Cache"
    )]
    pub to: Option<CacheTo>,
}

#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum CacheTo {
    /// Inline cache metadata in the image itself.
    Inline,
}

#[derive(Args, Debug)]
pub struct RenderArgs {
    #[command(flatten)]
    pub select: Selection,
    /// Output directory; each cell's context goes to DIR/<cell id>/.
    #[arg(short, long, default_value = "out/contexts", help_heading = "Output")]
    pub output: PathBuf,
    /// Also write run examples for each image: DIR/<cell id>/run/docker-run.sh and
    /// DIR/<cell id>/run/kubernetes.json (a Deployment and a Service).
    #[arg(long, help_heading = "Output")]
    pub run_examples: bool,
}

#[derive(Args, Debug)]
#[command(next_help_heading = "Engines")]
pub struct DockerArgs {
    /// The docker client to run.
    #[arg(long, env = "DOCKER", hide_env_values = true, default_value = "docker")]
    pub docker: PathBuf,
    /// Docker context to use (otherwise DOCKER_HOST / the current context).
    #[arg(long, conflicts_with = "engines")]
    pub context: Option<String>,
    /// A Docker engine: NAME=TARGET[,jobs=N][,platform=P][,buildx_builder=B], TARGET
    /// a DOCKER_HOST URL (unix://, tcp://, ssh://) or a docker context. Repeat for several engines; replaces the
    /// matrix's `engines:` list. Push and verify reach each cell on the engine the
    /// manifest names (this option overrides where an engine name points); a target
    /// the manifest records is used only when the matrix it was built from declares it
    /// (else name it here again, as the build's --engine did).
    #[arg(long = "engine", value_name = "NAME=TARGET[,jobs=N]")]
    pub engines: Vec<EngineSpec>,
}

#[derive(Args, Debug)]
pub struct BuildArgs {
    #[command(flatten)]
    pub select: Selection,
    #[command(flatten)]
    pub docker: DockerArgs,
    /// Builds to run at once, 1 to 256 (per engine, unless an engine sets its own `jobs`).
    #[arg(short, long, default_value = "2", value_parser = parse_jobs, help_heading = "Engines")]
    pub jobs: NonZeroUsize,
    /// How often to check that every engine still answers (with several engines; 0s
    /// turns it off); an engine that misses two checks in a row is marked down and its
    /// unfinished cells go to the others.
    #[arg(long, value_parser = humantime::parse_duration, default_value = "5s", help_heading = "Engines")]
    pub engine_check: std::time::Duration,
    /// Which builder the client should use (auto: buildx when the client has the
    /// plugin).
    #[arg(long, value_enum, default_value = "auto", help_heading = "Build")]
    pub builder: Builder,
    /// With buildx: the buildx builder to build on (`docker buildx ls`), for engines
    /// that name none (`buildx_builder=` in --engine or `engines:`).
    #[arg(long, value_name = "NAME", value_parser = crate::config::engine::check_buildx_builder, help_heading = "Build")]
    pub buildx_builder: Option<String>,
    #[command(flatten)]
    pub cache: CacheArgs,
    /// Stop at the first failure: start nothing new and cancel running builds.
    #[arg(long, help_heading = "Build")]
    pub fail_fast: bool,
    /// Time limit per build attempt, e.g. 45m or 2h.
    #[arg(long, value_parser = humantime::parse_duration, help_heading = "Build")]
    pub timeout: Option<std::time::Duration>,
    /// Re-tries after a failure that looks transient (network, registry 5xx, mirror
    /// sync): N re-tries means at most N+1 attempts. Never re-tried: rejected
    /// arguments (exit 125), timeouts, cancellations.
    #[arg(long, default_value_t = 0, help_heading = "Build")]
    pub retries: u32,
    /// How long a stopped build gets between SIGTERM and SIGKILL.
    #[arg(long, value_parser = humantime::parse_duration, default_value = "10s", help_heading = "Build")]
    pub kill_grace: std::time::Duration,
    /// Check the cells that succeeded in this manifest like a normal run (their image
    /// and its input hash), even with --force; build the rest.
    #[arg(long, value_name = "MANIFEST", help_heading = "Build")]
    pub resume: Option<PathBuf>,
    /// Rebuild cells whose image is already up to date.
    #[arg(long, help_heading = "Build")]
    pub force: bool,
    /// Pass --pull to docker build (fetch newer base layers).
    #[arg(long, help_heading = "Build")]
    pub pull: bool,
    /// Pass --no-cache to docker build.
    #[arg(long, help_heading = "Build")]
    pub no_cache: bool,
    /// Network for RUN steps (overrides build.network in the matrix).
    #[arg(long, value_parser = parse_network, help_heading = "Build")]
    pub network: Option<String>,
    /// Serve a download cache in DIR to the builds, on 127.0.0.1 (any builder): the
    /// Miniconda installers and every file an index page gives a SHA256 for (wheels,
    /// PyTorch's), fetched once and kept across cells, bases and nights, each checked
    /// against its SHA256. Needs `--network host` and engines on this machine;
    /// --no-cache bypasses it. Its figures go to OUT/downloads.json.
    #[arg(
        long,
        value_name = "DIR",
        env = "IMAGE_MATRIX_DOWNLOAD_CACHE",
        help_heading = "Build"
    )]
    pub download_cache: Option<PathBuf>,
    /// The download cache's port on 127.0.0.1 (0: any free one; a fixed one keeps the
    /// routed steps the same from night to night, for the builder's layer cache).
    #[arg(long, value_name = "PORT", default_value_t = crate::downloads::DEFAULT_PORT, help_heading = "Build")]
    pub download_cache_port: u16,
    /// Where contexts, logs and the manifest go.
    #[arg(short, long, default_value = "out", help_heading = "Output")]
    pub out: PathBuf,
    /// Per-build logs (default OUT/logs).
    #[arg(long, help_heading = "Output")]
    pub log_dir: Option<PathBuf>,
    /// Manifest path (default OUT/manifest.json).
    #[arg(long, help_heading = "Output")]
    pub manifest: Option<PathBuf>,
    /// How to show progress. `json` streams one event per line on stdout for CI log
    /// parsers and dashboards (schema: schemas/events.schema.json).
    #[arg(long, value_enum, default_value = "auto", help_heading = "Output")]
    pub progress: Progress,
    /// Print only failures and the summary (same as --progress quiet).
    #[arg(short, long, conflicts_with = "progress", help_heading = "Output")]
    pub quiet: bool,
    /// Verify each image after the builds.
    #[arg(long, help_heading = "Publishing")]
    pub verify: bool,
    /// Push cells that built (and verified, with --verify) after every build is done.
    #[arg(long, help_heading = "Publishing")]
    pub push: bool,
    /// Push each cell that passed verification by digest to this staging repository
    /// (on the registry of the matrix's repository), moving no public tag; the manifest
    /// records each digest for `matrix publish`. For CI runners that are thrown away.
    #[arg(long, value_name = "REPOSITORY", requires = "verify", value_parser = staging_repository, help_heading = "Publishing")]
    pub stage: Option<String>,
    /// After the run, remove this matrix's images that none of the last N runs
    /// produced or tagged (see `matrix prune`).
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..), help_heading = "Output")]
    pub keep: Option<u32>,
}

impl BuildArgs {
    /// `--progress`, with `--quiet` as its short form.
    pub fn progress(&self) -> Progress {
        if self.quiet {
            Progress::Quiet
        } else {
            self.progress
        }
    }
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
    #[arg(long, value_enum, default_value = "table", help_heading = "Output")]
    pub format: VerifyFormat,
    /// Seconds to wait for the services of one container.
    #[arg(long, default_value_t = 90, help_heading = "Checks")]
    pub ready_timeout: u64,
}

#[derive(Args, Debug)]
pub struct PushArgs {
    /// The manifest to publish.
    pub manifest: PathBuf,
    #[command(flatten)]
    pub docker: DockerArgs,
    /// Publish the cells that succeeded even when others did not.
    #[arg(long, help_heading = "Publishing")]
    pub allow_partial: bool,
    /// Re-tries per push.
    #[arg(long, default_value_t = 2, help_heading = "Publishing")]
    pub retries: u32,
}

#[derive(Args, Debug)]
pub struct PublishArgs {
    /// The manifest to publish (merged from every shard).
    pub manifest: PathBuf,
    /// Publish the cells that were staged even when others were not.
    #[arg(long)]
    pub allow_partial: bool,
    /// Also tag each tag group member's image REPO:TAG-ARCH in the public repository
    /// (the index's tags need no such tags).
    #[arg(long)]
    pub platform_tags: bool,
    /// Sign every published digest (each image, each index) in cosign's format with
    /// this private key: a file, or `env:VAR` for a variable holding the PEM (a CI
    /// secret). Its password: IMAGE_MATRIX_SIGNING_PASSWORD (or COSIGN_PASSWORD).
    #[arg(long, value_name = "FILE|env:VAR")]
    pub sign_key: Option<String>,
    #[command(flatten)]
    pub registry: RegistryArgs,
}

#[derive(Subcommand, Debug)]
pub enum SignatureCommand {
    /// Make a key pair for `publish --sign-key`: PREFIX.key (the private key, sealed
    /// with IMAGE_MATRIX_SIGNING_PASSWORD) and PREFIX.pub, in cosign's formats.
    #[command(after_help = "Examples:
  IMAGE_MATRIX_SIGNING_PASSWORD=… matrix signature keygen --output ci/signing")]
    Keygen {
        /// Where to write PREFIX.key and PREFIX.pub.
        #[arg(long, default_value = "cosign")]
        output: PathBuf,
    },
    /// Check that a published image (or index, and each of its platforms) carries a
    /// valid signature by a key.
    #[command(after_help = "Examples:
  matrix signature verify --key cosign.pub registry.example/ml/miniconda:conda3-python3.11-ubuntu22.04")]
    Verify {
        /// The public key (PEM).
        #[arg(long)]
        key: PathBuf,
        /// REPO:TAG or REPO@sha256:….
        reference: String,
        #[command(flatten)]
        registry: RegistryArgs,
    },
}

#[derive(Args, Debug)]
pub struct RegistryArgs {
    /// Reach this registry (HOST:PORT) over plain HTTP; only loopback registries are
    /// reached so without it.
    #[arg(long, value_name = "HOST:PORT")]
    pub insecure_registry: Vec<String>,
    /// Trust the CA certificates in this PEM file too (a private registry's, a proxy's).
    #[arg(long, value_name = "FILE", env = "IMAGE_MATRIX_REGISTRY_CA")]
    pub registry_ca: Option<PathBuf>,
    /// Give up on a registry request after this many seconds.
    #[arg(long, value_name = "SECONDS", default_value_t = 60)]
    pub registry_timeout: u64,
}

#[derive(Args, Debug)]
pub struct LoginArgs {
    /// The registry (HOST[:PORT]; `docker.io` for Docker Hub).
    pub registry: String,
    #[arg(short, long)]
    pub username: String,
    /// Read the password (or access token) from standard input; the only way to give it,
    /// so that it never appears in a process list or a shell history.
    #[arg(long, required = true)]
    pub password_stdin: bool,
}

#[derive(Subcommand, Debug)]
pub enum ManifestCommand {
    /// Combine the manifests of shards into one; refuses conflicting entries for a cell.
    #[command(after_help = "Examples:
  matrix manifest merge shard-1/manifest.json shard-2/manifest.json -o all.json
  matrix manifest merge shard-1/manifest.json -o partial.json --allow-partial")]
    Merge {
        /// Shard manifests.
        #[arg(required = true)]
        inputs: Vec<PathBuf>,
        /// Where to write the merged manifest.
        #[arg(short, long)]
        output: PathBuf,
        /// Merge even when shards are missing (the result stays marked incomplete, and
        /// push refuses it without --allow-partial too).
        #[arg(long)]
        allow_partial: bool,
    },
}

fn staging_repository(s: &str) -> Result<String, String> {
    crate::reference::check_repository(s).map(|()| s.to_string())
}

#[cfg(test)]
mod tests {
    use crate::exit;

    const EXIT_CODES: &str = exit_codes!();

    #[test]
    fn the_help_lists_every_exit_code() {
        for code in [
            exit::OK,
            exit::FAILED,
            exit::USAGE,
            exit::INVALID_MATRIX,
            exit::PREFLIGHT,
            exit::IO,
            exit::HANGUP,
            exit::INTERRUPTED,
            exit::TERMINATED,
        ] {
            assert!(
                EXIT_CODES.contains(&format!(" {code} ")),
                "exit code {code} is missing from --help"
            );
        }
    }
}
