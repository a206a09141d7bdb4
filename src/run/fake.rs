//! A scripted executor for tests: each job id maps to a queue of attempt results, so
//! the scheduler's retries, timeouts, cancellation and engine failures are tested fast
//! and deterministically. Compiled only for tests.

use std::collections::VecDeque;
use std::sync::Mutex;
use std::time::Duration;

use crate::docker::Stop;
use crate::run::executor::{AttemptEnd, AttemptResult, Executor, Job, Step};

/// A scripted executor for tests: each job id maps to a queue of attempt results.
#[derive(Default)]
pub struct FakeExecutor {
    pub scripts: Mutex<std::collections::HashMap<String, VecDeque<FakeAttempt>>>,
    pub up_to_date: Vec<String>,
    pub calls: Mutex<Vec<String>>,
    /// Set once the fake engine "dies"; `alive` fails from then on.
    pub dead: std::sync::atomic::AtomicBool,
}

#[derive(Clone, Debug)]
pub enum FakeAttempt {
    Ok {
        millis: u64,
    },
    Fail {
        code: i32,
        transient: bool,
    },
    /// Runs until stopped (for timeouts and cancellation).
    Hang,
    /// The engine dies under the build: the attempt fails and `alive` fails after.
    KillEngine,
    /// The engine stops answering but the build never returns (only the health
    /// check can notice).
    FreezeEngine,
}

impl FakeExecutor {
    pub fn script(&self, id: &str, attempts: Vec<FakeAttempt>) {
        if let Ok(mut s) = self.scripts.lock() {
            s.insert(id.to_string(), attempts.into());
        }
    }
}

/// A fake build that runs until `stop` says so, or succeeds after `run_for`.
fn until_stopped(
    stop: &(dyn Fn() -> Option<Stop> + Sync),
    run_for: Option<Duration>,
) -> AttemptEnd {
    let t = std::time::Instant::now();
    loop {
        match stop() {
            Some(Stop::Cancelled) => return AttemptEnd::Cancelled,
            Some(Stop::TimedOut) => return AttemptEnd::TimedOut,
            None => {}
        }
        if run_for.is_some_and(|d| t.elapsed() >= d) {
            return AttemptEnd::Succeeded;
        }
        std::thread::sleep(Duration::from_millis(2));
    }
}

impl Executor for FakeExecutor {
    fn up_to_date(&self, job: &Job) -> bool {
        self.up_to_date.contains(&job.id)
    }

    fn attempt(
        &self,
        job: &Job,
        attempt: u32,
        on_step: &mut dyn FnMut(Step),
        stop: &(dyn Fn() -> Option<Stop> + Sync),
    ) -> AttemptResult {
        if let Ok(mut c) = self.calls.lock() {
            c.push(format!("{}#{attempt}", job.id));
        }
        let next = self
            .scripts
            .lock()
            .ok()
            .and_then(|mut s| s.get_mut(&job.id).and_then(VecDeque::pop_front));
        on_step(Step {
            index: 1,
            total: 2,
            text: "RUN fake".into(),
        });
        let end = match next.unwrap_or(FakeAttempt::Ok { millis: 0 }) {
            FakeAttempt::Ok { millis } => until_stopped(stop, Some(Duration::from_millis(millis))),
            FakeAttempt::Fail { code, transient } => AttemptEnd::Failed {
                exit_code: code,
                transient,
            },
            FakeAttempt::KillEngine => {
                self.dead.store(true, std::sync::atomic::Ordering::SeqCst);
                AttemptEnd::Failed {
                    exit_code: 1,
                    transient: false,
                }
            }
            FakeAttempt::FreezeEngine => {
                self.dead.store(true, std::sync::atomic::Ordering::SeqCst);
                until_stopped(stop, None)
            }
            FakeAttempt::Hang => until_stopped(stop, None),
        };
        AttemptResult {
            end,
            tail: vec![format!("fake output of {}", job.id)],
            versions: None,
        }
    }

    fn image_info(&self, job: &Job) -> Option<(String, Option<u64>)> {
        Some((format!("sha256:{}", job.id), Some(1000)))
    }

    fn alive(&self) -> Result<(), String> {
        if self.dead.load(std::sync::atomic::Ordering::SeqCst) {
            Err("fake engine is gone".into())
        } else {
            Ok(())
        }
    }
}
