//! Executors run one build attempt. The scheduler only talks to the [`Executor`]
//! trait, so scheduling, retries, timeouts, cancellation and the manifest are tested
//! with a scripted fake (`run::fake`, tests only) — fast and deterministic — while
//! [`DockerExecutor`] runs real `docker build`s.

use std::collections::VecDeque;
use std::io::Write;
use std::path::PathBuf;
use std::time::Duration;

use crate::docker::{BuildRequest, Docker, Exit, Stop};
use crate::labels;

/// What a job builds.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum JobKind {
    /// The image of cell `n` (an index into the run's cell jobs).
    Cell(usize),
    /// Shared stage `n`: layers several cells build on, built once per engine.
    Stage(usize),
}

/// One unit of work: a cell's image, or a shared stage built once ahead of its cells.
#[derive(Clone, Debug)]
pub struct Job {
    pub kind: JobKind,
    /// What people see: the cell id, or a stage's name (`debian12 · OS layer`).
    pub id: String,
    pub request: BuildRequest,
    pub log_path: PathBuf,
    pub input_hash: String,
    /// The identity its image has if an earlier tool version built it
    /// ([`crate::render::legacy_input_hash`]): also current.
    pub legacy_hash: Option<String>,
    /// Tag checked for `up-to-date` (None for shared stages, which are never skipped).
    pub primary_tag: Option<String>,
    /// Jobs with the same affinity (the same base and platform) share layers, so
    /// they are best built on the same engine.
    pub affinity: String,
    /// The platform it builds for (`linux/amd64`): only engines that can build it run it.
    pub platform: String,
    /// The engines it may run on (those holding its base); empty means any.
    pub engines: Vec<String>,
    /// Skip it when its tag already carries the same input hash (not with `--force`).
    pub check_current: bool,
    /// Work left after its shared stages, as far as the plan knows it: the number of
    /// packages its variant adds (0 for shared stages). Heavier cells start first.
    pub weight: usize,
    /// The cell job this one builds on (a framework image's parent): it runs only
    /// after that one succeeded, `FROM` its image.
    pub parent: Option<usize>,
}

/// Progress inside a build: step k of n and its text.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Step {
    pub index: u32,
    pub total: u32,
    pub text: String,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum AttemptEnd {
    Succeeded,
    Failed {
        exit_code: i32,
        transient: bool,
    },
    TimedOut,
    Cancelled,
    /// The client could not even be started.
    Error(String),
}

#[derive(Clone, Debug)]
pub struct AttemptResult {
    pub end: AttemptEnd,
    /// The last lines of output, for the failure report.
    pub tail: Vec<String>,
    /// What the build printed after its [`VERSIONS_MARKER`] (the JSON of what it
    /// installed), when the step that writes the versions ran in this build (a step
    /// answered from the cache prints nothing: acceptance then reads the file).
    pub versions: Option<String>,
}

/// The final build step prints the versions it recorded after this marker, so a fresh
/// image need not be started again to read them.
pub const VERSIONS_MARKER: &str = "image-matrix-versions: ";

pub trait Executor: Sync {
    /// Whether the job's tag exists with the same input hash.
    fn up_to_date(&self, job: &Job) -> bool;
    /// Run one attempt. `stop` is polled while it runs.
    fn attempt(
        &self,
        job: &Job,
        attempt: u32,
        on_step: &mut dyn FnMut(Step),
        stop: &(dyn Fn() -> Option<Stop> + Sync),
    ) -> AttemptResult;
    /// Image id and size after a successful build (the size may be left unknown when
    /// asking for it would cost a call of its own).
    fn image_info(&self, job: &Job) -> Option<(String, Option<u64>)>;
    /// Whether the engine still answers (asked after a failure, and by the health
    /// check when there are several engines).
    fn alive(&self) -> Result<(), String> {
        Ok(())
    }
}

/// Parse a build step from either builder's output.
///
/// Legacy: `Step 5/21 : RUN …`. BuildKit (`--progress=plain`): `#8 [conda 2/4] RUN …`.
pub fn parse_step(line: &str) -> Option<Step> {
    if let Some(rest) = line.strip_prefix("Step ") {
        let (frac, text) = rest.split_once(" : ")?;
        let (k, n) = frac.split_once('/')?;
        return Some(Step {
            index: k.parse().ok()?,
            total: n.parse().ok()?,
            text: text.trim().to_string(),
        });
    }
    let rest = line.strip_prefix('#')?;
    let (num, rest) = rest.split_once(' ')?;
    if !num.bytes().all(|c| c.is_ascii_digit()) {
        return None;
    }
    let inner = rest.strip_prefix('[')?;
    let (head, text) = inner.split_once("] ")?;
    let frac = head.rsplit(' ').next()?;
    let (k, n) = frac.split_once('/')?;
    let stage = head
        .rsplit_once(' ')
        .map(|(s, _)| format!("{s}: "))
        .unwrap_or_default();
    Some(Step {
        index: k.parse().ok()?,
        total: n.parse().ok()?,
        text: format!("{stage}{}", text.trim()),
    })
}

/// Drop terminal escape sequences (the legacy builder colours stderr red).
pub fn strip_ansi(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars().peekable();
    while let Some(c) = chars.next() {
        if c == '\x1b' {
            if chars.peek() == Some(&'[') {
                chars.next();
                for n in chars.by_ref() {
                    if n.is_ascii_alphabetic() {
                        break;
                    }
                }
            }
            continue;
        }
        out.push(c);
    }
    out
}

/// Output that says the failure came from the network or a registry/mirror hiccup.
pub fn looks_transient(tail: &[String]) -> bool {
    const SIGNS: &[&str] = &[
        "temporary failure in name resolution",
        "could not resolve host",
        "connection reset",
        "connection timed out",
        "connection refused",
        "tls handshake timeout",
        "i/o timeout",
        "503 service",
        "502 bad gateway",
        "500 internal server error",
        "504 gateway",
        "toomanyrequests",
        "too many requests",
        "hash sum mismatch",
        "failed to fetch",
        "readtimeouterror",
        "unexpected eof",
        "curl: (56)",
        "curl: (28)",
        "curl: (35)",
        "network is unreachable",
        "net/http: request canceled",
    ];
    tail.iter().any(|l| {
        let l = l.to_ascii_lowercase();
        SIGNS.iter().any(|s| l.contains(s))
    })
}

/// Renders a job's build context when an attempt starts: none is rendered for a job
/// found up to date, and none is written to disk for a build, which reads it as a tar
/// on its standard input (a failed build's reproduce folder is written by the run).
/// A job's context as sent; `true` asks for BuildKit's cache mounts.
pub type Contexts<'a> = &'a (dyn Fn(JobKind, bool) -> crate::render::Context + Sync);

pub struct DockerExecutor<'a> {
    pub docker: Docker,
    pub grace: Duration,
    pub contexts: Contexts<'a>,
}

const TAIL: usize = 40;

impl Executor for DockerExecutor<'_> {
    fn up_to_date(&self, job: &Job) -> bool {
        job.primary_tag
            .as_ref()
            .and_then(|t| self.docker.label(t, labels::INPUT_HASH))
            .is_some_and(|h| h == job.input_hash || job.legacy_hash.as_ref() == Some(&h))
    }

    fn attempt(
        &self,
        job: &Job,
        attempt: u32,
        on_step: &mut dyn FnMut(Step),
        stop: &(dyn Fn() -> Option<Stop> + Sync),
    ) -> AttemptResult {
        let mut tail: VecDeque<String> = VecDeque::with_capacity(TAIL);
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&job.log_path);
        let mut log = match log {
            Ok(f) => f,
            Err(e) => {
                return AttemptResult {
                    end: AttemptEnd::Error(format!(
                        "cannot open log {}: {e}",
                        job.log_path.display()
                    )),
                    tail: Vec::new(),
                    versions: None,
                }
            }
        };
        // the header in one write (the log is not buffered: it is read as it grows, and
        // a formatted write to a file is a system call per piece)
        let header = format!(
            "# image-matrix build log: {} (attempt {attempt}, {})\n# command: {}\n# its context, a tar on standard input, is written to {} if it fails\n\n",
            job.id,
            crate::manifest::now(),
            self.docker.build_command_line(&job.request.on_stdin()),
            job.request.context_dir.display()
        );
        let _ = log.write_all(header.as_bytes());
        if let Some(f) = &job.request.iidfile {
            // an earlier attempt's; removing a file that is not there still locks its
            // folder, which every build of the run writes in
            if f.symlink_metadata().is_ok() {
                let _ = std::fs::remove_file(f);
            }
        }
        let mut versions = None;
        let mut line_buf = String::new();
        let mut on_line = |raw: &str| {
            line_buf.clear();
            line_buf.push_str(raw);
            line_buf.push('\n');
            let _ = log.write_all(line_buf.as_bytes());
            let clean = strip_ansi(raw);
            let line = clean.as_str();
            // the last one wins: a framework layer prints the list again, extended
            if let Some(i) = line.find(VERSIONS_MARKER) {
                versions = Some(line[i + VERSIONS_MARKER.len()..].trim().to_string());
            }
            if tail.len() == TAIL {
                tail.pop_front();
            }
            tail.push_back(line.to_string());
            if let Some(s) = parse_step(line) {
                on_step(s);
            }
        };
        // BuildKit keeps downloads in a cache mount across builds and nights; the
        // legacy builder has none, and --no-cache means no cache of any kind
        let context = (self.contexts)(
            job.kind,
            self.docker.builder.is_buildkit() && !job.request.no_cache,
        );
        let send = |w: &mut dyn Write| crate::render::archive::write(&context, w);
        let result =
            self.docker
                .build_streaming(&job.request, Some(&send), &mut on_line, stop, self.grace);
        let tail: Vec<String> = tail.into_iter().collect();
        let end = match result {
            Err(e) => {
                AttemptEnd::Error(format!("cannot run {}: {e}", self.docker.client.display()))
            }
            Ok((_, Some(Stop::Cancelled))) => AttemptEnd::Cancelled,
            Ok((_, Some(Stop::TimedOut))) => AttemptEnd::TimedOut,
            Ok((Exit::Code(0), None)) => AttemptEnd::Succeeded,
            Ok((exit, None)) => {
                let code = exit.code();
                AttemptEnd::Failed {
                    exit_code: code,
                    transient: code != 125 && looks_transient(&tail),
                }
            }
        };
        let _ = log.flush();
        AttemptResult {
            end,
            tail,
            versions,
        }
    }

    fn alive(&self) -> Result<(), String> {
        self.docker.ping(Duration::from_secs(10))
    }

    fn image_info(&self, job: &Job) -> Option<(String, Option<u64>)> {
        let id = job
            .request
            .iidfile
            .as_ref()
            .and_then(|f| std::fs::read_to_string(f).ok())
            .map(|s| s.trim().to_string())
            .filter(|s| s.starts_with("sha256:"));
        match id {
            // the build named its image: its size is read later, with many others
            Some(id) => Some((id, None)),
            None => self
                .docker
                .image_id_and_size(job.primary_tag.as_ref()?)
                .map(|(id, size)| (id, Some(size))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn steps_from_both_builders() {
        assert_eq!(
            parse_step("Step 5/21 : RUN bash x").unwrap(),
            Step {
                index: 5,
                total: 21,
                text: "RUN bash x".into()
            }
        );
        assert_eq!(
            parse_step("#9 [conda 2/4] RUN bash /tmp/image-matrix/conda/install-conda.sh").unwrap(),
            Step {
                index: 2,
                total: 4,
                text: "conda: RUN bash /tmp/image-matrix/conda/install-conda.sh".into()
            }
        );
        assert_eq!(
            parse_step("#5 [stage-2 1/5] COPY --from=conda a b")
                .unwrap()
                .index,
            1
        );
        assert!(parse_step("#9 0.512 Collecting numpy").is_none());
        assert!(parse_step("Successfully built 123").is_none());
    }

    #[test]
    fn ansi_colour_is_stripped() {
        assert_eq!(
            strip_ansi("\x1b[91mimage-matrix: bad\x1b[0m"),
            "image-matrix: bad"
        );
    }

    #[test]
    fn transient_failures_are_recognised() {
        assert!(looks_transient(&[
            "curl: (56) Recv failure: Connection reset by peer".into()
        ]));
        assert!(looks_transient(&[
            "E: Failed to fetch http://deb.debian.org/x  Hash Sum mismatch".into()
        ]));
        assert!(!looks_transient(&[
            "image-matrix: x.sh: SHA256 mismatch: expected a, got b".into()
        ]));
        assert!(!looks_transient(&[
            "ERROR: No matching distribution found for nothere".into()
        ]));
    }
}
