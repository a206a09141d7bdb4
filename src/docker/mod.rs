//! The one module that spawns processes: typed `docker` command lines.
//!
//! Every command is an argv (never a shell string), built here and run through duct.
//! Builds run in their own process group so that the tool decides when they get a
//! signal (a terminal's Ctrl-C reaches only the tool), and every running group is
//! registered so that a second Ctrl-C can kill them all before the tool exits.

use std::collections::{HashMap, HashSet};
use std::ffi::OsString;
use std::io::{BufRead, BufReader};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

/// Process groups of running children, for the emergency stop.
fn groups() -> &'static Mutex<HashSet<i32>> {
    static G: OnceLock<Mutex<HashSet<i32>>> = OnceLock::new();
    G.get_or_init(|| Mutex::new(HashSet::new()))
}

/// SIGKILL every registered process group (second Ctrl-C).
pub fn kill_all_groups() {
    if let Ok(g) = groups().lock() {
        for pgid in g.iter().filter(|p| **p > 0) {
            // SAFETY: killpg has no memory-safety preconditions.
            unsafe {
                libc::killpg(*pgid, libc::SIGKILL);
            }
        }
    }
}

pub fn signal_group(pgid: i32, sig: i32) {
    // 0 or less would signal the tool's own group (or every process it may signal)
    if pgid <= 0 {
        return;
    }
    // SAFETY: killpg has no memory-safety preconditions.
    unsafe {
        libc::killpg(pgid, sig);
    }
}

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

/// An image an engine holds under some reference.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LocalImage {
    /// The registry digest it was pulled by, or its local ID.
    pub digest: String,
    /// `linux/arm64`: what it runs as (an engine holds one platform per reference).
    pub platform: String,
}

/// What `image inspect` prints of a base: ID, platform and registry digests (json, not
/// join: clients format a daemon's list differently, and a 28.x client cannot `join`
/// a 20.10 daemon's RepoDigests).
const DIGEST_FIELDS: &str = "{{.Id}}|{{.Os}}/{{.Architecture}}|{{json .RepoDigests}}";

/// One line of [`DIGEST_FIELDS`] for `image`: the registry digest it was pulled by
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
    fn prefix(&self) -> Vec<OsString> {
        match &self.context {
            Some(c) => vec!["--context".into(), c.into()],
            None => Vec::new(),
        }
    }

    fn expr(&self, args: &[&str]) -> duct::Expression {
        let mut argv = self.prefix();
        argv.extend(args.iter().map(OsString::from));
        self.target_env(duct::cmd(self.client.as_os_str(), argv))
    }

    /// Point a command at this client's engine: an explicit host replaces whatever
    /// DOCKER_HOST / DOCKER_CONTEXT the tool was started with.
    fn target_env(&self, e: duct::Expression) -> duct::Expression {
        match &self.host {
            Some(h) => e.env("DOCKER_HOST", h).env_remove("DOCKER_CONTEXT"),
            None => e,
        }
    }

    /// How the engine is named in messages: its host, its context or "default".
    pub fn target(&self) -> String {
        self.host
            .clone()
            .or_else(|| self.context.as_ref().map(|c| format!("context {c}")))
            .unwrap_or_else(|| "the default engine".into())
    }

    /// Environment the build client needs for the chosen builder.
    pub fn build_env(&self) -> Option<(&'static str, &'static str)> {
        match self.builder {
            Builder::Auto | Builder::Buildx => None,
            Builder::Legacy => Some(("DOCKER_BUILDKIT", "0")),
            Builder::Buildkit => Some(("DOCKER_BUILDKIT", "1")),
        }
    }

    /// The full `docker build` argv (without the client path).
    pub fn build_args(&self, r: &BuildRequest) -> Vec<String> {
        let mut a: Vec<String> = self
            .prefix()
            .into_iter()
            .map(|s| s.to_string_lossy().into_owned())
            .collect();
        match self.builder {
            Builder::Buildx => {
                a.extend(["buildx".into(), "build".into(), "--progress=plain".into()]);
                if let Some(b) = &self.buildx_builder {
                    a.push("--builder".into());
                    a.push(b.clone());
                }
                // Into the engine's image store; a build without tags (a shared stage)
                // only fills the builder's cache.
                if !r.tags.is_empty() {
                    a.push("--load".into());
                }
            }
            Builder::Buildkit => a.extend(["build".into(), "--progress=plain".into()]),
            // The legacy builder leaves failed steps' containers behind without it.
            Builder::Auto | Builder::Legacy => a.extend(["build".into(), "--force-rm".into()]),
        }
        for t in &r.tags {
            a.push("-t".into());
            a.push(t.clone());
        }
        if let Some(t) = &r.target {
            a.push("--target".into());
            a.push(t.clone());
        }
        for (k, v) in &r.labels {
            a.push("--label".into());
            a.push(format!("{k}={v}"));
        }
        for (k, v) in &r.build_args {
            a.push("--build-arg".into());
            a.push(format!("{k}={v}"));
        }
        if let Some(n) = &r.network {
            a.push("--network".into());
            a.push(n.clone());
            // a builder of its own (docker-container, kubernetes) grants the host
            // network only when asked; the engine's own builder ignores it
            if self.builder == Builder::Buildx && n == "host" {
                a.push("--allow".into());
                a.push("network.host".into());
            }
        }
        if let Some(p) = &r.platform {
            a.push("--platform".into());
            a.push(p.clone());
        }
        if r.pull {
            a.push("--pull".into());
        }
        if r.no_cache {
            a.push("--no-cache".into());
        }
        if let Some(f) = &r.iidfile {
            a.push("--iidfile".into());
            a.push(f.display().to_string());
        }
        a.extend(self.cache_args(r));
        a.push(r.context_dir.display().to_string());
        a
    }

    /// The registry cache: where to take layers from, and inline metadata in what is
    /// built. Only BuildKit uses them (the legacy builder takes cache only from images
    /// already pulled, so a run refuses the cache settings with it).
    fn cache_args(&self, r: &BuildRequest) -> Vec<String> {
        let mut a = Vec::new();
        if !self.builder.is_buildkit() {
            return a;
        }
        for c in &r.cache_from {
            a.push("--cache-from".into());
            a.push(match self.builder {
                Builder::Buildx => format!("type=registry,ref={c}"),
                _ => c.clone(),
            });
        }
        if r.inline_cache {
            match self.builder {
                Builder::Buildx => a.extend(["--cache-to".into(), "type=inline".into()]),
                _ => a.extend(["--build-arg".into(), "BUILDKIT_INLINE_CACHE=1".into()]),
            }
        }
        a
    }

    /// `docker buildx version`: whether the client has the buildx plugin.
    pub fn buildx_version(&self) -> Result<String, String> {
        self.capture_within(&["buildx", "version"], QUERY_TIMEOUT)
    }

    /// Whether a buildx builder of this name exists (and answers), for this engine.
    pub fn buildx_inspect(&self, name: &str) -> Result<(), String> {
        self.capture_within(
            &["buildx", "inspect", "--bootstrap", name],
            BOOTSTRAP_TIMEOUT,
        )
        .map(|_| ())
    }

    /// A copy-pasteable shell line reproducing a build.
    pub fn build_command_line(&self, r: &BuildRequest) -> String {
        let mut words: Vec<String> = Vec::new();
        if let Some(h) = &self.host {
            words.push(format!("DOCKER_HOST={}", crate::shell::word(h)));
        }
        if let Some((k, v)) = self.build_env() {
            words.push(format!("{k}={v}"));
        }
        words.push(crate::shell::word(&self.client.display().to_string()));
        words.extend(self.build_args(r).iter().map(|w| crate::shell::word(w)));
        words.join(" ")
    }

    /// Run `docker build`, handing each output line to `on_line`. `stop` is polled; when
    /// it says so the build's process group gets SIGTERM, then SIGKILL after `grace`.
    pub fn build_streaming(
        &self,
        r: &BuildRequest,
        on_line: &mut dyn FnMut(&str),
        stop: &(dyn Fn() -> Option<Stop> + Sync),
        grace: Duration,
    ) -> std::io::Result<(Exit, Option<Stop>)> {
        let args = self.build_args(r);
        let mut e = self.target_env(
            duct::cmd(self.client.as_os_str(), &args)
                .stderr_to_stdout()
                .unchecked(),
        );
        if let Some((k, v)) = self.build_env() {
            e = e.env(k, v);
        }
        // SAFETY-free: process_group is a safe std API, run in the child before exec.
        let e = e.before_spawn(|cmd| {
            cmd.process_group(0);
            Ok(())
        });
        let reader = e.reader()?;
        let pid = reader.pids().first().copied().unwrap_or(0) as i32;
        if let Ok(mut g) = groups().lock() {
            g.insert(pid);
        }
        let stopped: Mutex<Option<Stop>> = Mutex::new(None);
        let done = std::sync::atomic::AtomicBool::new(false);
        let result = std::thread::scope(|s| {
            let watcher = s.spawn(|| {
                let mut since: Option<Instant> = None;
                while !done.load(std::sync::atomic::Ordering::Acquire) {
                    if since.is_none() {
                        if let Some(why) = stop() {
                            if let Ok(mut st) = stopped.lock() {
                                *st = Some(why);
                            }
                            signal_group(pid, libc::SIGTERM);
                            since = Some(Instant::now());
                        }
                    } else if since.is_some_and(|t| t.elapsed() >= grace) {
                        signal_group(pid, libc::SIGKILL);
                        since = Some(Instant::now() + Duration::from_secs(3600));
                    }
                    // woken early when the build ends, so a short build is not held
                    // up by this period
                    std::thread::park_timeout(Duration::from_millis(50));
                }
            });
            let mut buf = BufReader::new(&reader);
            let mut line = Vec::new();
            loop {
                line.clear();
                match buf.read_until(b'\n', &mut line) {
                    Ok(0) | Err(_) => break,
                    Ok(_) => on_line(String::from_utf8_lossy(&line).trim_end_matches(['\n', '\r'])),
                }
            }
            let status = reader.try_wait();
            // The pipe closes when the client exits; make sure the group is gone too.
            signal_group(pid, libc::SIGKILL);
            done.store(true, std::sync::atomic::Ordering::Release);
            watcher.thread().unpark();
            status.map(|o| o.map(|o| o.status))
        });
        if let Ok(mut g) = groups().lock() {
            g.remove(&pid);
        }
        let status = result?
            .ok_or_else(|| std::io::Error::other("docker build did not report an exit status"))?;
        let exit = match status.code() {
            Some(c) => Exit::Code(c),
            None => {
                Exit::Signal(std::os::unix::process::ExitStatusExt::signal(&status).unwrap_or(0))
            }
        };
        let why = stopped.lock().ok().and_then(|s| *s);
        Ok((exit, why))
    }

    /// Run a docker command that may take long (a pull, a push, a tag) and capture
    /// stdout (stderr kept for errors). Like every child the tool waits on, it is
    /// killed when the run is stopped while it runs (see [`wait_within`]).
    pub fn capture(&self, args: &[&str]) -> Result<String, String> {
        self.capture_within(args, TRANSFER_TIMEOUT)
    }

    /// (client version, server version, server arch) or why the daemon does not answer.
    pub fn versions(&self) -> Result<(String, String, String), String> {
        let s = self.capture_within(
            &[
                "version",
                "--format",
                "{{.Client.Version}}|{{.Server.Version}}|{{.Server.Arch}}",
            ],
            QUERY_TIMEOUT,
        )?;
        let mut p = s.split('|');
        match (p.next(), p.next(), p.next()) {
            (Some(c), Some(v), Some(a)) if !v.is_empty() => Ok((c.into(), v.into(), a.into())),
            _ => Err(format!("unexpected `docker version` output: {s}")),
        }
    }

    /// Like [`Docker::capture`], but a daemon that does not answer within `timeout`
    /// is an error: a hung engine must not hang the preflight, the up-to-date checks
    /// or the health check.
    pub fn capture_within(&self, args: &[&str], timeout: Duration) -> Result<String, String> {
        let o = self.output_within(args, timeout)?;
        if o.status.success() {
            return Ok(String::from_utf8_lossy(&o.stdout).trim_end().to_string());
        }
        let err = String::from_utf8_lossy(&o.stderr).trim().to_string();
        Err(if err.is_empty() {
            format!(
                "docker {} exited with {}",
                args.first().unwrap_or(&""),
                o.status
            )
        } else {
            err
        })
    }

    /// The client's exit status and both outputs, whatever the status; an error only
    /// when it cannot run or the daemon does not answer within `timeout`.
    fn output_within(
        &self,
        args: &[&str],
        timeout: Duration,
    ) -> Result<std::process::Output, String> {
        let e = self
            .expr(args)
            .stdout_capture()
            .stderr_capture()
            .unchecked();
        match wait_within(e, timeout) {
            Err(err) => Err(format!("cannot run {}: {err}", self.client.display())),
            Ok(None) => Err(format!(
                "{} did not answer within {}s",
                self.target(),
                timeout.as_secs()
            )),
            Ok(Some(o)) => Ok(o),
        }
    }

    /// The engine's endpoint URL: the explicit host, else what the client resolves
    /// from `--context`, DOCKER_CONTEXT, DOCKER_HOST or its current context.
    pub fn endpoint(&self) -> Result<String, String> {
        match &self.host {
            Some(h) => Ok(h.clone()),
            None => self.capture_within(
                &[
                    "context",
                    "inspect",
                    "--format",
                    "{{.Endpoints.docker.Host}}",
                ],
                QUERY_TIMEOUT,
            ),
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
        let v = self.capture_within(&["version", "--format", "{{.Server.Version}}"], timeout)?;
        if v.trim().is_empty() {
            Err("docker version printed no server version".into())
        } else {
            Ok(())
        }
    }

    pub fn label(&self, image: &str, label: &str) -> Option<String> {
        let fmt = format!("{{{{ index .Config.Labels \"{label}\" }}}}");
        self.capture_within(
            &["image", "inspect", "--format", &fmt, image],
            QUERY_TIMEOUT,
        )
        .ok()
        .filter(|s| !s.is_empty() && s != "<no value>")
    }

    /// What an image reference resolves to here: its registry digest
    /// (`name@sha256:…`, after a pull) or, for an image that never came from a
    /// registry, its local ID; and its platform. `Ok(None)` when this engine has no
    /// such image.
    pub fn image_digest(&self, image: &str) -> Result<Option<LocalImage>, String> {
        let r = self.capture_within(
            &["image", "inspect", "--format", DIGEST_FIELDS, image],
            QUERY_TIMEOUT,
        );
        match r {
            Ok(s) => Ok(Some(local_image(image, &s))),
            Err(e) if e.contains("No such image") || e.contains("No such object") => Ok(None),
            Err(e) => Err(e),
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
        let mut args = vec!["image", "inspect", "--format", DIGEST_FIELDS];
        args.extend(images);
        let o = match self.output_within(&args, QUERY_TIMEOUT) {
            Ok(o) => o,
            Err(e) => return images.iter().map(|_| Err(e.clone())).collect(),
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
        self.capture(&["pull", "--platform", platform, image])
            .map(|_| ())
    }

    pub fn image_id_and_size(&self, image: &str) -> Option<(String, u64)> {
        let s = self
            .capture_within(
                &["image", "inspect", "--format", "{{.Id}}|{{.Size}}", image],
                QUERY_TIMEOUT,
            )
            .ok()?;
        let (id, size) = s.split_once('|')?;
        Some((id.to_string(), size.parse().ok()?))
    }

    /// The image a reference points at here (its ID), if any.
    pub fn image_id(&self, image: &str) -> Option<String> {
        self.capture_within(
            &["image", "inspect", "--format", "{{.Id}}", image],
            QUERY_TIMEOUT,
        )
        .ok()
        .filter(|s| s.starts_with("sha256:"))
    }

    /// An image's labels and environment (`KEY=VALUE` each).
    pub fn labels_and_env(
        &self,
        image: &str,
    ) -> Result<(std::collections::BTreeMap<String, String>, Vec<String>), String> {
        let s = self.capture_within(
            &[
                "image",
                "inspect",
                "--format",
                "{{json .Config.Labels}}|{{json .Config.Env}}",
                image,
            ],
            QUERY_TIMEOUT,
        )?;
        let (l, e) = s.split_once('|').unwrap_or((s.as_str(), "[]"));
        let labels = serde_json::from_str::<Option<std::collections::BTreeMap<String, String>>>(l)
            .map_err(|e| format!("unexpected labels of {image}: {e}"))?
            .unwrap_or_default();
        let env = serde_json::from_str::<Option<Vec<String>>>(e)
            .map_err(|e| format!("unexpected environment of {image}: {e}"))?
            .unwrap_or_default();
        Ok((labels, env))
    }

    /// Print a file of an image: `docker run --rm --network none` with `cat`, so it
    /// works for any platform the engine runs (emulated ones too).
    pub fn read_file(&self, image: &str, platform: &str, path: &str) -> Result<String, String> {
        self.capture(&[
            "run",
            "--rm",
            "--network",
            "none",
            "--platform",
            platform,
            "--entrypoint",
            "/bin/cat",
            image,
            path,
        ])
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
        let iid = tempfile::NamedTempFile::new().map_err(|e| e.to_string())?;
        let mut args = self.prefix();
        args.extend(["build".into(), "--quiet".into(), "-t".into(), tag.into()]);
        args.extend(["--platform".into(), platform.into()]);
        args.extend(["--iidfile".into(), iid.path().as_os_str().to_owned()]);
        for (k, v) in labels {
            args.push("--label".into());
            args.push(format!("{k}={v}").into());
        }
        args.push("-".into());
        let mut e = self.target_env(
            duct::cmd(self.client.as_os_str(), &args)
                .stdin_bytes(format!("FROM {base}\n"))
                .stdout_capture()
                .stderr_capture()
                .unchecked(),
        );
        // buildx's current builder may be one of its own, which cannot see this
        // engine's images: a metadata-only build is the daemon's (legacy) builder's job
        let env = match self.builder {
            Builder::Buildx => Some(("DOCKER_BUILDKIT", "0")),
            _ => self.build_env(),
        };
        if let Some((k, v)) = env {
            e = e.env(k, v);
        }
        let o = wait_within(e, Duration::from_secs(300))
            .map_err(|err| format!("cannot run {}: {err}", self.client.display()))?
            .ok_or("labelling the image took over 5 minutes")?;
        if !o.status.success() {
            return Err(String::from_utf8_lossy(&o.stderr).trim().to_string());
        }
        let id = std::fs::read_to_string(iid.path())
            .map_err(|e| e.to_string())?
            .trim()
            .to_string();
        if id.starts_with("sha256:") {
            Ok(id)
        } else {
            Err(format!(
                "the labelling build wrote no image ID (read {id:?})"
            ))
        }
    }

    /// Build `r` again with more labels: with every step in the build cache this only
    /// writes a new image config, and unlike [`Docker::relabel`] it keeps the build's
    /// own cache keys (the inline cache metadata a later build takes cache from).
    /// Returns the new image's ID and its layers.
    pub fn rebuild_labelled(
        &self,
        r: &BuildRequest,
        labels: &[(String, String)],
        timeout: Duration,
    ) -> Result<(String, Vec<String>), String> {
        let iid = tempfile::NamedTempFile::new().map_err(|e| e.to_string())?;
        let mut r = r.clone();
        r.labels.extend(labels.iter().cloned());
        r.iidfile = Some(iid.path().to_path_buf());
        let mut e = self.target_env(
            duct::cmd(self.client.as_os_str(), self.build_args(&r))
                .stdout_capture()
                .stderr_to_stdout()
                .unchecked(),
        );
        if let Some((k, v)) = self.build_env() {
            e = e.env(k, v);
        }
        let o = wait_within(e, timeout)
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
        let s = self.capture_within(
            &[
                "image",
                "inspect",
                "--format",
                "{{json .RootFS.Layers}}",
                image,
            ],
            QUERY_TIMEOUT,
        )?;
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
        let format = format!("{{{{.Id}}}}|{fields}");
        for chunk in images.chunks(INSPECT_CHUNK) {
            let mut args = vec!["image", "inspect", "--format", &format];
            args.extend(chunk);
            // some may be missing: the others are still printed
            let Ok(o) = self.output_within(&args, QUERY_TIMEOUT) else {
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
        let out = self.capture_within(
            &[
                "image",
                "ls",
                "--no-trunc",
                "--format",
                "{{.Repository}}:{{.Tag}}|{{.ID}}",
                repository,
            ],
            QUERY_TIMEOUT,
        )?;
        Ok(out
            .lines()
            .filter_map(|l| l.split_once('|'))
            .filter(|(t, id)| !t.ends_with(":<none>") && id.starts_with("sha256:"))
            .map(|(t, id)| (t.to_string(), id.to_string()))
            .collect())
    }

    /// Remove many tags at once (errors ignored: a tag already gone is no loss).
    pub fn untag_all(&self, tags: &[&str]) {
        for chunk in tags.chunks(INSPECT_CHUNK) {
            let mut args = vec!["image", "rm"];
            args.extend(chunk);
            let _ = self.capture(&args);
        }
    }

    /// Remove a tag (the image stays while another tag or container holds it).
    pub fn untag(&self, tag: &str) -> Result<(), String> {
        self.capture(&["image", "rm", tag]).map(|_| ())
    }

    pub fn tag(&self, src: &str, dst: &str) -> Result<(), String> {
        self.capture(&["tag", src, dst]).map(|_| ())
    }

    /// Push one tag; returns the registry digest the client reports.
    pub fn push(&self, tag: &str) -> Result<Option<String>, String> {
        let out = self.capture(&["push", tag])?;
        Ok(out
            .split_whitespace()
            .find(|w| w.starts_with("sha256:"))
            .map(str::to_string))
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
        let _ = self.capture(&["manifest", "rm", index]);
        let mut create = vec!["manifest", "create"];
        if insecure {
            create.push("--insecure");
        }
        create.push(index);
        create.extend(members.iter().map(String::as_str));
        self.capture(&create)?;
        let mut push = vec!["manifest", "push", "--purge"];
        if insecure {
            push.push("--insecure");
        }
        push.push(index);
        let out = self.capture(&push)?;
        Ok(out
            .split_whitespace()
            .find(|w| w.starts_with("sha256:"))
            .map(str::to_string))
    }

    pub fn run_detached(&self, args: &[String]) -> Result<String, String> {
        let mut a = vec!["run", "-d"];
        a.extend(args.iter().map(String::as_str));
        self.capture(&a)
    }

    pub fn remove_container(&self, name: &str) {
        let _ = self.capture(&["rm", "-f", "-v", name]);
    }

    /// Remove the stopped containers of our own build steps (their command runs a
    /// script under /tmp/image-matrix/) created since `since` (RFC 3339, UTC): what a
    /// daemon that died mid-build leaves behind. Returns how many went.
    pub fn remove_build_leftovers(&self, since: &str) -> Result<usize, String> {
        let ids = self.capture_within(
            &[
                "ps",
                "-a",
                "-q",
                "--no-trunc",
                "--filter",
                "status=exited",
                "--filter",
                "status=created",
                "--filter",
                "status=dead",
            ],
            QUERY_TIMEOUT,
        )?;
        let ids: Vec<&str> = ids.split_whitespace().collect();
        if ids.is_empty() {
            return Ok(0);
        }
        let mut args = vec![
            "container",
            "inspect",
            "--format",
            "{{.Id}}|{{.Created}}|{{json .Config.Cmd}}",
        ];
        args.extend(ids);
        let listing = self.capture_within(&args, QUERY_TIMEOUT)?;
        let since = since.get(..19).unwrap_or(since);
        let mut removed = 0;
        for line in listing.lines() {
            let mut f = line.splitn(3, '|');
            let (Some(id), Some(created), Some(cmd)) = (f.next(), f.next(), f.next()) else {
                continue;
            };
            let ours = cmd.contains("/tmp/image-matrix/");
            let recent = created.get(..19).is_some_and(|c| c >= since);
            if ours && recent && self.capture(&["rm", "-f", "-v", id]).is_ok() {
                removed += 1;
            }
        }
        Ok(removed)
    }

    pub fn exec(&self, container: &str, argv: &[&str]) -> Result<String, String> {
        let mut a = vec!["exec", container];
        a.extend_from_slice(argv);
        self.capture(&a)
    }

    pub fn logs(&self, container: &str) -> String {
        self.expr(&["logs", container])
            .stderr_to_stdout()
            .stdout_capture()
            .unchecked()
            .run()
            .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
            .unwrap_or_default()
    }
}

/// Run any non-docker program (ssh, for verify) with an argv and optional stdin.
pub fn run_program(
    program: &Path,
    args: &[String],
    stdin: Option<&[u8]>,
    timeout: Duration,
) -> Result<(i32, Vec<u8>, Vec<u8>), String> {
    let mut e = duct::cmd(program.as_os_str(), args)
        .stdout_capture()
        .stderr_capture()
        .unchecked();
    e = match stdin {
        Some(b) => e.stdin_bytes(b.to_vec()),
        None => e.stdin_null(),
    };
    match wait_within(e, timeout) {
        Ok(Some(o)) => Ok((o.status.code().unwrap_or(-1), o.stdout, o.stderr)),
        Ok(None) => Err(format!(
            "{} did not finish within {}s",
            program.display(),
            timeout.as_secs()
        )),
        Err(err) => Err(format!("cannot run {}: {err}", program.display())),
    }
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

/// Run an expression to its end, or kill it after `timeout` (then `Ok(None)`). The
/// child runs in a process group of its own, registered for the emergency stop, and
/// the whole group is killed on the deadline, and also when the run is stopped (the
/// process's cancel flag set while it runs: then an `Interrupted` error), so that
/// neither a hung client nor what it started outlives the tool. A child started after
/// the stop runs to its end: the record of a stopped run still needs a few queries.
fn wait_within(
    e: duct::Expression,
    timeout: Duration,
) -> std::io::Result<Option<std::process::Output>> {
    let cancel = crate::signals::process();
    let stopped_before = cancel.is_set();
    let handle = e
        .before_spawn(|cmd| {
            cmd.process_group(0);
            Ok(())
        })
        .start()?;
    let pgid = handle.pids().first().copied().unwrap_or(0) as i32;
    if let Ok(mut g) = groups().lock() {
        g.insert(pgid);
    }
    let deadline = Instant::now() + timeout;
    // A thread blocks in wait() while this one waits on the channel: a query that
    // takes 3 ms costs 3 ms, not a polling period (the slices only bound how late a
    // stop is noticed). duct's own wait_timeout registers a SIGCHLD handler per call,
    // far dearer at this rate.
    let result = std::thread::scope(|s| {
        let (tx, rx) = std::sync::mpsc::channel();
        let h = &handle;
        s.spawn(move || {
            let _ = tx.send(h.wait().cloned());
        });
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match rx.recv_timeout(left.min(Duration::from_millis(50))) {
                Ok(r) => return r.map(Some),
                Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => {
                    return Err(std::io::Error::other("the waiting thread ended"))
                }
                Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {}
            }
            let stopped = !stopped_before && cancel.is_set();
            if stopped || Instant::now() >= deadline {
                // the waiting thread returns once the child is gone
                signal_group(pgid, libc::SIGKILL);
                let _ = handle.kill();
                return if stopped {
                    Err(std::io::Error::new(
                        std::io::ErrorKind::Interrupted,
                        cancel
                            .reason()
                            .map_or_else(|| "stopped".into(), |r| r.describe()),
                    ))
                } else {
                    Ok(None)
                };
            }
        }
    });
    if let Ok(mut g) = groups().lock() {
        g.remove(&pgid);
    }
    result
}

#[cfg(test)]
mod tests {
    use super::*;

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
    fn reproducing_command_lines_quote_only_what_needs_it() {
        let d = Docker {
            client: "docker".into(),
            context: None,
            host: None,
            builder: Builder::Buildkit,
            buildx_builder: None,
        };
        let r = BuildRequest {
            context_dir: "ctx".into(),
            tags: vec!["r:t".into()],
            labels: vec![("k".into(), "v w".into())],
            ..BuildRequest::default()
        };
        assert_eq!(
            d.build_command_line(&r),
            "DOCKER_BUILDKIT=1 docker build --progress=plain -t r:t --label 'k=v w' ctx"
        );
    }

    #[test]
    fn buildx_builds_load_into_the_engine_and_carry_the_registry_cache() {
        let d = Docker {
            client: "docker".into(),
            context: Some("ci".into()),
            host: None,
            builder: Builder::Buildx,
            buildx_builder: Some("farm".into()),
        };
        let r = BuildRequest {
            context_dir: "ctx".into(),
            tags: vec!["r:t".into()],
            network: Some("host".into()),
            cache_from: vec!["reg:5000/m:t".into()],
            inline_cache: true,
            ..BuildRequest::default()
        };
        assert_eq!(
            d.build_command_line(&r),
            "docker --context ci buildx build --progress=plain --builder farm --load -t r:t --network host --allow network.host --cache-from type=registry,ref=reg:5000/m:t --cache-to type=inline ctx"
        );
        // a shared stage (no tag) stays in the builder's cache
        let stage = BuildRequest {
            tags: Vec::new(),
            target: Some("system".into()),
            ..r.clone()
        };
        assert!(!d.build_args(&stage).contains(&"--load".to_string()));
        let classic = Docker {
            builder: Builder::Buildkit,
            ..d.clone()
        };
        let a = classic.build_args(&r).join(" ");
        assert!(
            a.contains("--cache-from reg:5000/m:t --build-arg BUILDKIT_INLINE_CACHE=1"),
            "{a}"
        );
        assert!(!a.contains("--allow"), "{a}");
        let legacy = Docker {
            builder: Builder::Legacy,
            ..d
        };
        assert!(!legacy.build_args(&r).join(" ").contains("cache"));
    }
}
