//! What the scheduler tells its listeners (the terminal reporter, the JSON event
//! stream and the manifest recorder): events in arrival order, ending with exactly one
//! `Finished` per cell, and one per shared stage and engine that built it.

use std::path::Path;
use std::time::Duration;

use crate::manifest::{Manifest, Pushed, Requeue, Status, Verification};
use crate::run::executor::{Job, JobKind, Step};

/// How a job ended.
#[derive(Clone, Debug)]
pub struct Outcome {
    pub job: JobKind,
    pub id: String,
    pub status: Status,
    pub attempts: u32,
    pub exit_code: Option<i32>,
    pub duration: Duration,
    /// The last lines of output, for the failure report.
    pub tail: Vec<String>,
    /// Image id and size, after a build (or of the image that is up to date). A fresh
    /// build's size is left to acceptance, which asks for many images in one call.
    pub image: Option<(String, Option<u64>)>,
    /// The versions a fresh build printed (JSON), see [`super::executor::VERSIONS_MARKER`].
    pub versions: Option<String>,
    /// Why it failed, was cancelled or was not started, in one line.
    pub reason: Option<String>,
    /// The engine that ran (or holds) it.
    pub engine: Option<String>,
    pub requeues: Vec<Requeue>,
}

impl Outcome {
    /// A job that never ran.
    pub fn not_started(job: JobKind, id: &str) -> Outcome {
        Outcome {
            job,
            id: id.to_string(),
            status: Status::NotStarted,
            attempts: 0,
            exit_code: None,
            duration: Duration::ZERO,
            tail: Vec::new(),
            image: None,
            versions: None,
            reason: None,
            engine: None,
            requeues: Vec::new(),
        }
    }
}

#[derive(Clone, Debug)]
pub enum Event {
    Started {
        job: JobKind,
        id: String,
        attempt: u32,
        engine: String,
    },
    /// A cell lost with its engine, back in the queue.
    Requeued {
        job: JobKind,
        id: String,
        from: String,
        reason: String,
    },
    EngineDown {
        engine: String,
        reason: String,
        /// How many engines are still up after this one.
        left: usize,
    },
    Step {
        job: JobKind,
        id: String,
        step: Step,
    },
    Retrying {
        job: JobKind,
        id: String,
        attempt: u32,
        wait: Duration,
    },
    Finished(Outcome),
}

/// What the phases after the builds (acceptance, verification, promotion of tags,
/// publishing) tell their listeners, as it happens. They print nothing themselves: the
/// reporters draw these (a line for people, an event of the JSON stream) and the
/// manifest records the results the phases return.
#[derive(Clone, Debug)]
pub enum Phase<'a> {
    /// Acceptance begins for `images` images.
    Accepting {
        images: usize,
        verify: bool,
    },
    Verifying {
        id: &'a str,
        tag: &'a str,
    },
    /// A public tag now names the cell's image.
    Promoted {
        id: &'a str,
        tag: &'a str,
    },
    /// Something went wrong that does not stop the phase (a label not written, a tag
    /// that could not be set); `text` says what, starting with `warning: `.
    Warning {
        id: Option<&'a str>,
        text: String,
    },
    /// Something people should know that is not a warning.
    Info {
        id: Option<&'a str>,
        text: String,
    },
    /// A push failed and is tried again.
    PushRetrying {
        id: &'a str,
        tag: &'a str,
        error: &'a str,
    },
    /// A local tag had moved since the build and was pointed back before the push.
    Repinned {
        id: &'a str,
        tag: &'a str,
        image: &'a str,
        was: Option<&'a str>,
    },
    Pushed {
        id: &'a str,
        pushed: &'a Pushed,
    },
    /// An engine pruned (`--keep`): the line people read, and its result.
    Pruned {
        engine: &'a str,
        text: String,
        result: &'a Result<crate::prune::Pruned, String>,
    },
    /// An image index of a tag group: made and pushed under `tag` (with the registry's
    /// digest), failed, or not made at all (`tag` None: a platform is missing).
    Index {
        group: &'a str,
        tag: Option<&'a str>,
        digest: Option<&'a str>,
        error: Option<&'a str>,
    },
}

/// Where a phase sends its events; called from several threads at once.
pub type Listen<'a> = &'a (dyn Fn(&Phase) + Sync);

impl Phase<'_> {
    /// The line people read for it, if any.
    pub fn line(&self) -> Option<String> {
        Some(match self {
            Phase::Accepting { images, verify } => format!(
                "accepting {images} image{}{} ...",
                if *images == 1 { "" } else { "s" },
                if *verify {
                    " (verify, then tag)"
                } else {
                    " (tag)"
                }
            ),
            Phase::Verifying { tag, .. } => format!("verifying {tag} ..."),
            Phase::Promoted { .. } => return None,
            Phase::Warning { text, .. } | Phase::Info { text, .. } | Phase::Pruned { text, .. } => {
                text.clone()
            }
            Phase::PushRetrying { tag, error, .. } => format!("push {tag}: {error}; retrying"),
            Phase::Repinned {
                tag, image, was, ..
            } => format!(
                "{tag}: pointed back at {image} (it was {})",
                was.unwrap_or("not there")
            ),
            Phase::Pushed { pushed, .. } => format!(
                "push {}: {}",
                pushed.tag,
                match &pushed.error {
                    None if pushed.unchanged => format!(
                        "unchanged (already {})",
                        pushed.digest.as_deref().unwrap_or("there")
                    ),
                    None => match &pushed.digest {
                        Some(d) => format!("ok ({d})"),
                        None => "ok".to_string(),
                    },
                    Some(e) => format!("failed: {e}"),
                }
            ),
            Phase::Index {
                group,
                tag: None,
                error,
                ..
            } => format!("index {group}: {}", error.unwrap_or("not made")),
            Phase::Index {
                tag: Some(t),
                digest,
                error: None,
                ..
            } => format!(
                "index {t}: ok ({})",
                digest.unwrap_or("digest not reported")
            ),
            Phase::Index {
                tag: Some(t),
                error: Some(e),
                ..
            } => format!("index {t}: failed: {e}"),
        })
    }
}

/// Who hears a build run: the reporters (terminal and JSON) implement it, and the run
/// tells them everything through it, from the plan of jobs to the exit code; the run
/// itself prints nothing once its listener exists. (The manifest recorder is the other
/// listener, of the scheduler's events and the phases' results.)
pub trait Listener: Send {
    /// The plan of the run: the initial manifest and every job, cells and stages.
    fn run_started(&mut self, m: &Manifest, manifest_path: &Path, jobs: &[&Job]);
    /// A scheduler event; `reproduce` is the command that rebuilds a failed job.
    fn event(&mut self, ev: &Event, reproduce: Option<&str>);
    /// A failed build's last lines, log and reproduction, for people.
    fn failure(&mut self, o: &Outcome, log: &str, reproduce: &str);
    /// The scheduler is done.
    fn scheduled(&mut self);
    /// An event of the phases after the builds.
    fn phase(&mut self, ev: &Phase);
    /// A cell's verification, check by check.
    fn verified(&mut self, id: &str, tag: &str, v: &Verification);
    /// The table of this run's verifications, for people.
    fn verification_table(&mut self, table: &str) -> std::io::Result<()>;
    /// The end: how the run ended, its reports, and the exit code.
    fn run_finished(&mut self, m: &Manifest, manifest_path: &Path, reports: &[&Path], code: i32);
}
