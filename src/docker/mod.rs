//! The one module that spawns processes: the `docker` client, and through
//! [`run_program`] any other program the tool runs (ssh, sshpass, curl, git).
//!
//! Each [`Docker`] method is three steps in a few lines: build the argv
//! (`command.rs`: pure data, tested without spawning anything), run it (`process.rs`:
//! process groups, deadlines, the cancel flag, streaming) and parse what it printed
//! (here). Every command is an argv, never a shell string.

use std::collections::HashMap;
use std::path::PathBuf;
use std::time::Duration;

mod command;
mod process;

pub use process::{kill_all_groups, run_program, signal_group};

/// Which builder `docker build` uses.
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum Builder {
    /// buildx when the client has the plugin, else whatever the client does by default.
    Auto,
    /// The legacy builder (DOCKER_BUILDKIT=0).
    Legacy,
    /// BuildKit (DOCKER_BUILDKIT=1, --progress=plain).
    Buildkit,
    /// `docker buildx build --load` (the buildx plugin), on the engine's own builder or
    /// the buildx builder named with --buildx-builder.
    Buildx,
}

impl Builder {
    pub fn name(self) -> &'static str {
        match self {
            Builder::Auto => "auto",
            Builder::Legacy => "legacy",
            Builder::Buildkit => "buildkit",
            Builder::Buildx => "buildx",
        }
    }

    /// Whether builds run on BuildKit, which a registry cache needs.
    pub fn is_buildkit(self) -> bool {
        matches!(self, Builder::Buildkit | Builder::Buildx)
    }
}

/// How to get the buildx plugin, for the error that says it is missing.
pub const BUILDX_INSTALL: &str = "install Docker's buildx plugin: `apt-get install docker-buildx` (Debian, Ubuntu) or `docker-buildx-plugin` (Docker's own packages), or put the `docker-buildx` binary of a buildx release in ~/.docker/cli-plugins/ or /usr/local/lib/docker/cli-plugins/ (scripts/setup-test-env.sh does that here); or build with --builder buildkit or --builder legacy";

#[derive(Clone, Debug)]
pub struct Docker {
    pub client: PathBuf,
    pub context: Option<String>,
    /// DOCKER_HOST for this client (an engine given as `unix://…`, `tcp://…`,
    /// `ssh://…`); None keeps the caller's environment.
    pub host: Option<String>,
    pub builder: Builder,
    /// With [`Builder::Buildx`]: the buildx builder to build on (`--builder NAME`);
    /// None is the client's current one (normally the engine's own BuildKit).
    pub buildx_builder: Option<String>,
}

/// What a child reads on its standard input, written as it reads it (a build's
/// context, as a tar: `docker build -` and `docker buildx build -` take one).
pub type Input<'a> = &'a (dyn Fn(&mut dyn std::io::Write) -> std::io::Result<()> + Sync);

/// The context argument that makes the client read the context from standard input.
pub const STDIN: &str = "-";

#[derive(Clone, Debug, Default)]
pub struct BuildRequest {
    pub context_dir: PathBuf,
    pub tags: Vec<String>,
    pub target: Option<String>,
    pub labels: Vec<(String, String)>,
    pub network: Option<String>,
    pub platform: Option<String>,
    pub pull: bool,
    pub no_cache: bool,
    pub iidfile: Option<PathBuf>,
    /// `--build-arg` pairs: only a framework image's `PARENT` (its parent's image ID),
    /// never a secret.
    pub build_args: Vec<(String, String)>,
    /// Registry references to take layer cache from (BuildKit only).
    pub cache_from: Vec<String>,
    /// Write inline cache metadata into the image (BuildKit only), so that a later
    /// build elsewhere can use the pushed image as its cache.
    pub inline_cache: bool,
}

impl BuildRequest {
    /// The same build with its context read from standard input ([`STDIN`]); the
    /// command line of a streamed build says so.
    pub fn on_stdin(&self) -> BuildRequest {
        BuildRequest {
            context_dir: STDIN.into(),
            ..self.clone()
        }
    }
}

/// How a child ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Exit {
    Code(i32),
    Signal(i32),
}

impl Exit {
    /// The shell's view: 128+N for a signal.
    pub fn code(&self) -> i32 {
        match self {
            Exit::Code(c) => *c,
            Exit::Signal(s) => 128 + s,
        }
    }
}

/// How long a query (version, inspect) may take before its engine counts as hung.
const QUERY_TIMEOUT: Duration = Duration::from_secs(30);
/// How long a transfer (pull, push) or a change (tag, rm) may take: a deadline for a
/// client that hangs for good, far above any real transfer of one image.
const TRANSFER_TIMEOUT: Duration = Duration::from_secs(4 * 3600);
/// Images per `docker image inspect` / `image rm` call when asking about many.
const INSPECT_CHUNK: usize = 200;
/// How long a buildx builder may take to start (a docker-container builder starts its
/// BuildKit container on first use).
const BOOTSTRAP_TIMEOUT: Duration = Duration::from_secs(120);

/// Why a docker command gave no answer, in parts for the callers that act on them (an
/// image that is not there is not an error to report); its text is what people read.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Failure {
    /// The client could not be started.
    #[error("cannot run {client}: {error}")]
    CannotRun { client: String, error: String },
    /// The run was stopped (a signal) while it ran; it was killed.
    #[error("cannot run {client}: {reason}")]
    Stopped { client: String, reason: String },
    /// The daemon did not answer in time; the client was killed.
    #[error("{target} did not answer within {seconds}s")]
    NoAnswer { target: String, seconds: u64 },
    /// The client refused, saying why on stderr.
    #[error("{stderr}")]
    Refused { command: String, stderr: String },
    /// The client failed without a word.
    #[error("docker {command} exited with {status}")]
    Exited { command: String, status: String },
}

impl Failure {
    /// The engine answered that the image (or object) is not there.
    pub fn is_missing(&self) -> bool {
        matches!(self, Failure::Refused { stderr, .. }
            if stderr.contains("No such image") || stderr.contains("No such object"))
    }
}

impl From<Failure> for String {
    fn from(f: Failure) -> String {
        f.to_string()
    }
}

/// An image an engine holds under some reference.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LocalImage {
    /// The registry digest it was pulled by, or its local ID.
    pub digest: String,
    /// `linux/arm64`: what it runs as (an engine holds one platform per reference).
    pub platform: String,
}

/// One line of [`command::DIGEST_FIELDS`] for `image`: the registry digest it was pulled by
/// (the one of its own name), or its local ID.
fn local_image(image: &str, line: &str) -> LocalImage {
    let mut parts = line.splitn(3, '|');
    let id = parts.next().unwrap_or_default();
    let platform = parts.next().unwrap_or_default().to_string();
    let digests: Vec<String> =
        serde_json::from_str::<Option<Vec<String>>>(parts.next().unwrap_or("null"))
            .ok()
            .flatten()
            .unwrap_or_default();
    let name = crate::reference::split(image).0;
    let digest = digests
        .iter()
        .find(|d| d.split('@').next() == Some(name))
        .or_else(|| digests.first());
    LocalImage {
        digest: digest.map_or_else(|| id.to_string(), Clone::clone),
        platform,
    }
}

/// What stopped a streamed child early.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Stop {
    Cancelled,
    TimedOut,
}

impl Docker {
    /// How the engine is named in messages: its host, its context or "default".
    pub fn target(&self) -> String {
        self.host
            .clone()
            .or_else(|| self.context.as_ref().map(|c| format!("context {c}")))
            .unwrap_or_else(|| "the default engine".into())
    }

    /// `docker buildx version`: whether the client has the buildx plugin.
    pub fn buildx_version(&self) -> Result<String, String> {
        self.capture_within(&command::buildx_version(), QUERY_TIMEOUT)
            .map_err(String::from)
    }

    /// Whether a buildx builder of this name exists (and answers), for this engine.
    pub fn buildx_inspect(&self, name: &str) -> Result<(), String> {
        self.capture_within(&command::buildx_inspect(name), BOOTSTRAP_TIMEOUT)
            .map_err(String::from)
            .map(|_| ())
    }

    /// Run `docker build`, handing each output line to `on_line`. `stop` is polled; when
    /// it says so the build's process group gets SIGTERM, then SIGKILL after `grace`.
    /// With `context`, the build reads its context from standard input (`-`, see
    /// [`BuildRequest::on_stdin`]) as `context` writes it, a tar, while it runs.
    pub fn build_streaming(
        &self,
        r: &BuildRequest,
        context: Option<Input>,
        on_line: &mut dyn FnMut(&str),
        stop: &(dyn Fn() -> Option<Stop> + Sync),
        grace: Duration,
    ) -> std::io::Result<(Exit, Option<Stop>)> {
        let cmd = match context {
            Some(_) => self.build_command(&r.on_stdin()),
            None => self.build_command(r),
        };
        process::stream(&cmd, context, on_line, stop, grace)
    }

    /// Run a docker command that may take long (a pull, a push, a tag) and capture
    /// stdout (stderr kept for errors). Like every child the tool waits on, it is
    /// killed when the run is stopped while it runs (see `process::wait_within`).
    pub fn capture<S: AsRef<str>>(&self, args: &[S]) -> Result<String, Failure> {
        self.capture_within(args, TRANSFER_TIMEOUT)
    }

    /// (client version, server version, server arch) or why the daemon does not answer.
    pub fn versions(&self) -> Result<(String, String, String), String> {
        let s = self.capture_within(&command::versions(), QUERY_TIMEOUT)?;
        let mut p = s.split('|');
        match (p.next(), p.next(), p.next()) {
            (Some(c), Some(v), Some(a)) if !v.is_empty() => Ok((c.into(), v.into(), a.into())),
            _ => Err(format!("unexpected `docker version` output: {s}")),
        }
    }

    /// Like [`Docker::capture`], but a daemon that does not answer within `timeout`
    /// is an error: a hung engine must not hang the preflight, the up-to-date checks
    /// or the health check.
    pub fn capture_within<S: AsRef<str>>(
        &self,
        args: &[S],
        timeout: Duration,
    ) -> Result<String, Failure> {
        let o = self.output_within(args, timeout)?;
        if o.status.success() {
            return Ok(String::from_utf8_lossy(&o.stdout).trim_end().to_string());
        }
        let command = args.first().map_or("", AsRef::as_ref).to_string();
        let stderr = String::from_utf8_lossy(&o.stderr).trim().to_string();
        Err(if stderr.is_empty() {
            Failure::Exited {
                command,
                status: o.status.to_string(),
            }
        } else {
            Failure::Refused { command, stderr }
        })
    }

    /// The client's exit status and both outputs, whatever the status; an error only
    /// when it cannot run, the daemon does not answer within `timeout`, or the run is
    /// stopped meanwhile.
    fn output_within<S: AsRef<str>>(
        &self,
        args: &[S],
        timeout: Duration,
    ) -> Result<std::process::Output, Failure> {
        let client = self.client.display().to_string();
        match process::output_within(&self.command(args), timeout) {
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => Err(Failure::Stopped {
                client,
                reason: e.to_string(),
            }),
            Err(e) => Err(Failure::CannotRun {
                client,
                error: e.to_string(),
            }),
            Ok(None) => Err(Failure::NoAnswer {
                target: self.target(),
                seconds: timeout.as_secs(),
            }),
            Ok(Some(o)) => Ok(o),
        }
    }

    /// The engine's endpoint URL: the explicit host, else what the client resolves
    /// from `--context`, DOCKER_CONTEXT, DOCKER_HOST or its current context.
    pub fn endpoint(&self) -> Result<String, String> {
        match &self.host {
            Some(h) => Ok(h.clone()),
            None => self
                .capture_within(&command::endpoint(), QUERY_TIMEOUT)
                .map_err(String::from),
        }
    }

    /// Ok when containers of this engine run on this machine (a local socket, or TCP
    /// to loopback), so that their host-network ports are this machine's.
    pub fn on_this_host(&self) -> Result<(), String> {
        let ep = self.endpoint()?;
        if endpoint_is_local(&ep) {
            Ok(())
        } else {
            Err(format!(
                "the engine at {ep} runs containers on another host; verify reaches services on 127.0.0.1, so run `matrix verify` on that host"
            ))
        }
    }

    /// Whether the daemon answers within `timeout`.
    pub fn ping(&self, timeout: Duration) -> Result<(), String> {
        let v = self.capture_within(&command::server_version(), timeout)?;
        if v.trim().is_empty() {
            Err("docker version printed no server version".into())
        } else {
            Ok(())
        }
    }

    pub fn label(&self, image: &str, label: &str) -> Option<String> {
        self.capture_within(&command::label(image, label), QUERY_TIMEOUT)
            .ok()
            .filter(|s| !s.is_empty() && s != "<no value>")
    }

    /// What an image reference resolves to here: its registry digest
    /// (`name@sha256:…`, after a pull) or, for an image that never came from a
    /// registry, its local ID; and its platform. `Ok(None)` when this engine has no
    /// such image.
    pub fn image_digest(&self, image: &str) -> Result<Option<LocalImage>, String> {
        match self.capture_within(&command::image_digests(&[image]), QUERY_TIMEOUT) {
            Ok(s) => Ok(Some(local_image(image, &s))),
            Err(e) if e.is_missing() => Ok(None),
            Err(e) => Err(e.into()),
        }
    }

    /// [`Docker::image_digest`] of many images in one client call (each client costs
    /// tens of ms of CPU, and a matrix may have dozens of bases). Docker prints one
    /// line per image found, in the order asked, and names each missing one on stderr
    /// ("No such image: REF"). Where the two do not add up to what was asked, each
    /// image is asked alone.
    pub fn image_digests(&self, images: &[&str]) -> Vec<Result<Option<LocalImage>, String>> {
        // long lists in chunks, far below the argument-size limit
        images
            .chunks(INSPECT_CHUNK)
            .flat_map(|chunk| self.image_digests_at_once(chunk))
            .collect()
    }

    fn image_digests_at_once(&self, images: &[&str]) -> Vec<Result<Option<LocalImage>, String>> {
        let alone = || images.iter().map(|i| self.image_digest(i)).collect();
        if images.len() < 2 {
            return alone();
        }
        let o = match self.output_within(&command::image_digests(images), QUERY_TIMEOUT) {
            Ok(o) => o,
            Err(e) => return images.iter().map(|_| Err(e.to_string())).collect(),
        };
        let err = String::from_utf8_lossy(&o.stderr);
        let missing: Vec<&str> = err
            .lines()
            .filter_map(|l| l.rsplit_once("No such image: ").map(|(_, r)| r.trim()))
            .collect();
        let out = String::from_utf8_lossy(&o.stdout);
        // (a 28.x client prints an empty line when it found none)
        let mut lines = out.lines().filter(|l| !l.is_empty());
        let found = images.iter().filter(|i| !missing.contains(i)).count();
        let explained = err.lines().all(|l| l.contains("No such image: "));
        let failed = !o.status.success() && missing.is_empty();
        if found != lines.clone().count() || !explained || failed {
            return alone();
        }
        images
            .iter()
            .map(|i| {
                if missing.contains(i) {
                    return Ok(None);
                }
                Ok(lines.next().map(|l| local_image(i, l)))
            })
            .collect()
    }

    /// `docker pull` (for one platform).
    pub fn pull(&self, image: &str, platform: &str) -> Result<(), String> {
        self.capture(&command::pull(image, platform))
            .map(|_| ())
            .map_err(String::from)
    }

    pub fn image_id_and_size(&self, image: &str) -> Option<(String, u64)> {
        let s = self
            .capture_within(&command::image_id_and_size(image), QUERY_TIMEOUT)
            .ok()?;
        let (id, size) = s.split_once('|')?;
        Some((id.to_string(), size.parse().ok()?))
    }

    /// The image a reference points at here (its ID), if any.
    pub fn image_id(&self, image: &str) -> Option<String> {
        self.capture_within(&command::image_id(image), QUERY_TIMEOUT)
            .ok()
            .filter(|s| s.starts_with("sha256:"))
    }

    /// An image's labels and environment (`KEY=VALUE` each).
    pub fn labels_and_env(
        &self,
        image: &str,
    ) -> Result<(std::collections::BTreeMap<String, String>, Vec<String>), String> {
        let s = self.capture_within(&command::labels_and_env(image), QUERY_TIMEOUT)?;
        let (l, e) = s.split_once('|').unwrap_or((s.as_str(), "[]"));
        let labels = serde_json::from_str::<Option<std::collections::BTreeMap<String, String>>>(l)
            .map_err(|e| format!("unexpected labels of {image}: {e}"))?
            .unwrap_or_default();
        let env = serde_json::from_str::<Option<Vec<String>>>(e)
            .map_err(|e| format!("unexpected environment of {image}: {e}"))?
            .unwrap_or_default();
        Ok((labels, env))
    }

    /// Print a file of an image (see [`command::read_file`]).
    pub fn read_file(&self, image: &str, platform: &str, path: &str) -> Result<String, String> {
        self.capture(&command::read_file(image, platform, path))
            .map_err(String::from)
    }

    /// A new image: `base` with these labels (no layer; a metadata-only build).
    /// Returns its ID (its size is that of `base`, plus nothing).
    pub fn relabel(
        &self,
        base: &str,
        tag: &str,
        platform: &str,
        labels: &[(String, String)],
    ) -> Result<String, String> {
        let c = self.relabel_command(base, tag, platform, labels);
        let o = process::output_within(&c, Duration::from_secs(300))
            .map_err(|err| format!("cannot run {}: {err}", self.client.display()))?
            .ok_or("labelling the image took over 5 minutes")?;
        if !o.status.success() {
            return Err(String::from_utf8_lossy(&o.stderr).trim().to_string());
        }
        // a quiet build prints the new image's ID, and nothing else, on stdout
        let out = String::from_utf8_lossy(&o.stdout);
        image_id_printed(&out).ok_or_else(|| {
            format!(
                "the labelling build printed no image ID (printed {:?})",
                out.trim()
            )
        })
    }

    /// Build `r` again with more labels: with every step in the build cache this only
    /// writes a new image config, and unlike [`Docker::relabel`] it keeps the build's
    /// own cache keys (the inline cache metadata a later build takes cache from).
    /// The context goes on standard input, as `context` writes it (held in memory for
    /// this one build). Returns the new image's ID and its layers.
    pub fn rebuild_labelled(
        &self,
        r: &BuildRequest,
        context: Input,
        labels: &[(String, String)],
        timeout: Duration,
    ) -> Result<(String, Vec<String>), String> {
        let iid = tempfile::NamedTempFile::new().map_err(|e| e.to_string())?;
        let mut r = r.on_stdin();
        r.labels.extend(labels.iter().cloned());
        r.iidfile = Some(iid.path().to_path_buf());
        let mut tar = Vec::new();
        context(&mut tar).map_err(|e| format!("cannot render the context: {e}"))?;
        let mut cmd = self.build_command(&r);
        cmd.stdin = Some(tar);
        let o = process::joined_output_within(&cmd, timeout)
            .map_err(|err| format!("cannot run {}: {err}", self.client.display()))?
            .ok_or_else(|| format!("the labelling build took over {}s", timeout.as_secs()))?;
        if !o.status.success() {
            let out = String::from_utf8_lossy(&o.stdout);
            let tail: Vec<&str> = out.lines().rev().take(5).collect();
            return Err(tail.into_iter().rev().collect::<Vec<_>>().join("\n"));
        }
        let id = std::fs::read_to_string(iid.path())
            .map_err(|e| e.to_string())?
            .trim()
            .to_string();
        Ok((id.clone(), self.layers(&id)?))
    }

    /// The layer digests of an image (its root file system, bottom first).
    pub fn layers(&self, image: &str) -> Result<Vec<String>, String> {
        let s = self.capture_within(&command::layers(image), QUERY_TIMEOUT)?;
        serde_json::from_str::<Option<Vec<String>>>(&s)
            .map(Option::unwrap_or_default)
            .map_err(|e| format!("unexpected layers of {image}: {e}"))
    }

    /// One `docker image inspect` for many images: `fields` (a Go template) of each,
    /// keyed by image ID. The output names each image by its ID, so an image that is
    /// gone only leaves its key out; the caller asks again one by one for what is
    /// missing. Long lists go in chunks, to stay far below the argument-size limit.
    pub fn inspect_by_id(&self, images: &[&str], fields: &str) -> HashMap<String, String> {
        let mut found = HashMap::new();
        for chunk in images.chunks(INSPECT_CHUNK) {
            // some may be missing: the others are still printed
            let Ok(o) = self.output_within(&command::inspect_by_id(fields, chunk), QUERY_TIMEOUT)
            else {
                continue;
            };
            for line in String::from_utf8_lossy(&o.stdout).lines() {
                if let Some((id, rest)) = line.split_once('|') {
                    if id.starts_with("sha256:") {
                        found.insert(id.to_string(), rest.to_string());
                    }
                }
            }
        }
        found
    }

    /// Every tag of a repository here and the image ID it points at (`image ls`), in one
    /// call: the tags a run is about to move, looked up once instead of one inspect
    /// per tag.
    pub fn tags_of(&self, repository: &str) -> Result<HashMap<String, String>, String> {
        let out = self.capture_within(&command::tags_of(repository), QUERY_TIMEOUT)?;
        Ok(out
            .lines()
            .filter_map(|l| l.split_once('|'))
            .filter(|(t, id)| !t.ends_with(":<none>") && id.starts_with("sha256:"))
            .map(|(t, id)| (t.to_string(), id.to_string()))
            .collect())
    }

    /// The IDs of every image (intermediate ones too) that carries `label=value`.
    pub fn images_labelled(&self, label: &str, value: &str) -> Result<Vec<String>, String> {
        let listed = self.capture(&command::images_labelled(label, value))?;
        let mut ids: Vec<String> = listed
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty())
            .map(str::to_string)
            .collect();
        ids.sort_unstable();
        ids.dedup();
        Ok(ids)
    }

    /// Remove an image by ID, whatever tags it carries.
    pub fn remove_image(&self, id: &str) -> Result<(), String> {
        self.capture(&command::remove_image(id))
            .map(|_| ())
            .map_err(String::from)
    }

    /// The engine's image storage in bytes (shared layers counted once).
    pub fn images_size(&self) -> Result<u64, String> {
        let s = self.capture(&command::disk_usage())?;
        Ok(s.lines()
            .filter_map(|l| l.split_once('\t'))
            .find(|(t, _)| *t == "Images")
            .map_or(0, |(_, size)| bytes(size)))
    }

    /// Remove many tags at once (errors ignored: a tag already gone is no loss).
    pub fn untag_all(&self, tags: &[&str]) {
        for chunk in tags.chunks(INSPECT_CHUNK) {
            let _ = self.capture(&command::untag(chunk));
        }
    }

    /// Remove a tag (the image stays while another tag or container holds it).
    pub fn untag(&self, tag: &str) -> Result<(), String> {
        self.capture(&command::untag(&[tag]))
            .map(|_| ())
            .map_err(String::from)
    }

    pub fn tag(&self, src: &str, dst: &str) -> Result<(), String> {
        self.capture(&command::tag(src, dst))
            .map(|_| ())
            .map_err(String::from)
    }

    /// Push one tag; returns the registry digest the client reports.
    pub fn push(&self, tag: &str) -> Result<Option<String>, String> {
        let out = self.capture(&command::push(tag))?;
        Ok(first_digest(&out))
    }

    /// Make `index` an image index (manifest list) over `members` (each
    /// `REPO@sha256:…`, as pushed) in the registry, and return its digest. The client
    /// reads each member's platform from the registry; `insecure` allows plain HTTP
    /// (a registry on loopback).
    pub fn push_index(
        &self,
        index: &str,
        members: &[String],
        insecure: bool,
    ) -> Result<Option<String>, String> {
        // a local list left by an earlier run would be amended, not replaced
        let _ = self.capture(&command::manifest_rm(index));
        self.capture(&command::manifest_create(index, members, insecure))?;
        let out = self.capture(&command::manifest_push(index, insecure))?;
        Ok(first_digest(&out))
    }

    pub fn run_detached(&self, args: &[String]) -> Result<String, String> {
        self.capture(&command::run_detached(args))
            .map_err(String::from)
    }

    pub fn remove_container(&self, name: &str) {
        let _ = self.capture(&command::remove_container(name));
    }

    /// Remove the stopped containers of our own build steps (their command runs a
    /// script under /tmp/image-matrix/) created since `since` (RFC 3339, UTC): what a
    /// daemon that died mid-build leaves behind. Returns how many went.
    pub fn remove_build_leftovers(&self, since: &str) -> Result<usize, String> {
        let ids = self.capture_within(&command::stopped_containers(), QUERY_TIMEOUT)?;
        let ids: Vec<&str> = ids.split_whitespace().collect();
        if ids.is_empty() {
            return Ok(0);
        }
        let listing = self.capture_within(&command::created_and_command(&ids), QUERY_TIMEOUT)?;
        let since = since.get(..19).unwrap_or(since);
        let mut removed = 0;
        for line in listing.lines() {
            let mut f = line.splitn(3, '|');
            let (Some(id), Some(created), Some(cmd)) = (f.next(), f.next(), f.next()) else {
                continue;
            };
            let ours = cmd.contains("/tmp/image-matrix/");
            let recent = created.get(..19).is_some_and(|c| c >= since);
            if ours && recent && self.capture(&command::remove_container(id)).is_ok() {
                removed += 1;
            }
        }
        Ok(removed)
    }

    pub fn exec(&self, container: &str, argv: &[&str]) -> Result<String, String> {
        self.capture(&command::exec(container, argv))
            .map_err(String::from)
    }

    /// Run `sh -c SCRIPT` in a running container; an error past `timeout`.
    pub fn exec_script(
        &self,
        container: &str,
        script: &str,
        timeout: Duration,
    ) -> Result<String, String> {
        self.capture_within(&["exec", container, "/bin/sh", "-c", script], timeout)
            .map_err(String::from)
    }

    /// Run `sh -c SCRIPT` in a new container of `image` without network, removed
    /// afterwards (as [`Docker::read_file`] does with `cat`); an error past `timeout`.
    pub fn run_script(
        &self,
        image: &str,
        platform: &str,
        script: &str,
        timeout: Duration,
    ) -> Result<String, String> {
        let args = [
            "run",
            "--rm",
            "--network",
            "none",
            "--platform",
            platform,
            "--entrypoint",
            "/bin/sh",
            image,
            "-c",
            script,
        ];
        self.capture_within(&args, timeout).map_err(String::from)
    }

    pub fn logs(&self, container: &str) -> String {
        process::joined_output(&self.command(&command::logs(container)))
            .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
            .unwrap_or_default()
    }
}

/// The first `sha256:…` word of what a push printed: the digest the registry gave.
fn first_digest(out: &str) -> Option<String> {
    out.split_whitespace()
        .find(|w| w.starts_with("sha256:"))
        .map(str::to_string)
}

/// Local socket schemes, or TCP to a loopback address.
pub fn endpoint_is_local(ep: &str) -> bool {
    if ["unix://", "npipe://", "fd://"]
        .iter()
        .any(|s| ep.starts_with(s))
    {
        return true;
    }
    let Some(rest) = ep.strip_prefix("tcp://") else {
        return false;
    };
    let host = rest.split('/').next().unwrap_or_default();
    let host = match host.rsplit_once(':') {
        Some((h, p)) if p.bytes().all(|c| c.is_ascii_digit()) => h,
        _ => host,
    };
    let ip = host.trim_start_matches('[').trim_end_matches(']');
    host == "localhost"
        || ip
            .parse::<std::net::IpAddr>()
            .is_ok_and(|a| a.is_loopback())
}

/// `2.5GB`, `853.2MB`, `0B` → bytes (docker prints decimal units).
pub fn bytes(s: &str) -> u64 {
    let s = s.trim();
    let split = s
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(s.len());
    let (n, unit) = s.split_at(split);
    let n: f64 = n.parse().unwrap_or(0.0);
    let mult = match unit.trim().to_ascii_uppercase().as_str() {
        "KB" | "K" => 1e3,
        "MB" | "M" => 1e6,
        "GB" | "G" => 1e9,
        "TB" | "T" => 1e12,
        _ => 1.0,
    };
    (n * mult) as u64
}

/// The image ID a quiet build printed: `sha256:` and 64 hex digits on its last line
/// (Docker's builders), or the bare digits (Podman's).
fn image_id_printed(out: &str) -> Option<String> {
    let last = out.lines().map(str::trim).rfind(|l| !l.is_empty())?;
    let hex = last.strip_prefix("sha256:").unwrap_or(last);
    let ok = hex.len() == 64 && hex.bytes().all(|b| b.is_ascii_hexdigit());
    ok.then(|| format!("sha256:{hex}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_id_a_quiet_build_prints_is_read_from_its_last_line() {
        let hex = "ab".repeat(32);
        let id = format!("sha256:{hex}");
        assert_eq!(image_id_printed(&format!("{id}\n")), Some(id.clone()));
        // Podman prints the digits alone, after any line of its own
        assert_eq!(
            image_id_printed(&format!("STEP 1/2: FROM base\n{hex}\n\n")),
            Some(id)
        );
        for wrong in [
            "",
            "\n",
            "sha256:abc\n",
            &format!("{hex}x"),
            "Successfully built 1234",
        ] {
            assert_eq!(image_id_printed(wrong), None, "{wrong:?}");
        }
    }

    #[test]
    fn only_sockets_and_loopback_tcp_are_this_host() {
        for ep in [
            "unix:///var/run/docker.sock",
            "tcp://127.0.0.1:2375",
            "tcp://localhost:2376",
            "tcp://[::1]:2375",
        ] {
            assert!(endpoint_is_local(ep), "{ep}");
        }
        for ep in [
            "ssh://ci@build-1",
            "tcp://10.0.0.5:2376",
            "tcp://build-2",
            "tcp://127.0.0.1.example.com:2375",
        ] {
            assert!(!endpoint_is_local(ep), "{ep}");
        }
        let remote = Docker {
            client: "docker".into(),
            context: None,
            host: Some("ssh://ci@build-1".into()),
            builder: Builder::Auto,
            buildx_builder: None,
        };
        assert!(remote
            .on_this_host()
            .unwrap_err()
            .contains("run `matrix verify` on that host"));
    }

    #[test]
    fn a_failure_reads_as_before_and_says_whether_the_image_is_missing() {
        let missing = Failure::Refused {
            command: "image".into(),
            stderr: "Error response from daemon: No such image: m:1".into(),
        };
        assert!(missing.is_missing());
        assert_eq!(
            missing.to_string(),
            "Error response from daemon: No such image: m:1"
        );
        let hung = Failure::NoAnswer {
            target: "unix:///x.sock".into(),
            seconds: 30,
        };
        assert!(!hung.is_missing());
        assert_eq!(
            String::from(hung),
            "unix:///x.sock did not answer within 30s"
        );
        let silent = Failure::Exited {
            command: "tag".into(),
            status: "exit status: 1".into(),
        };
        assert_eq!(silent.to_string(), "docker tag exited with exit status: 1");
        let stopped = Failure::Stopped {
            client: "docker".into(),
            reason: "interrupted by SIGTERM".into(),
        };
        assert_eq!(
            stopped.to_string(),
            "cannot run docker: interrupted by SIGTERM"
        );
    }
}
