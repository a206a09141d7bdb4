//! What the scheduler tells its listeners (the terminal reporter, the JSON event
//! stream and the manifest recorder): events in arrival order, ending with exactly one
//! `Finished` per cell, and one per shared stage and engine that built it.

use std::time::Duration;

use crate::manifest::{Requeue, Status};
use crate::run::executor::{JobKind, Step};

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
