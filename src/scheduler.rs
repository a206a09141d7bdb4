//! The scheduler: runs jobs on a rayon pool of `-j N` workers, in plan order, with
//! retries, timeouts, fail-fast and cancellation. It never touches the terminal or
//! the manifest: it emits [`Event`]s, which the caller's thread turns into progress
//! lines and manifest updates.
//!
//! Shared stages (`warm` groups) run first, one build per group, so that cells that
//! share a base do not race to build the same layers; a failed shared stage fails its
//! member cells without running them N times.

use std::sync::atomic::{AtomicU8, AtomicUsize, Ordering};
use std::sync::{mpsc, Arc};
use std::time::{Duration, Instant};

use crate::docker::Stop;
use crate::executor::{AttemptEnd, Executor, Job, Step};
use crate::manifest::Status;

/// Why work is being stopped. Shared by the signal handler and the workers.
#[derive(Clone, Default)]
pub struct Cancel(Arc<AtomicU8>);

impl Cancel {
    pub const NONE: u8 = 0;
    pub const FAIL_FAST: u8 = 1;
    pub const INTERRUPT: u8 = 2;
    pub const TERMINATE: u8 = 3;

    /// Record why work stops. The first reason wins, except that a signal replaces
    /// fail-fast: after `--fail-fast` stopped the run, Ctrl-C must still exit 130 and a
    /// second Ctrl-C must still kill at once.
    pub fn set(&self, why: u8) {
        let _ = self
            .0
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |cur| {
                let replace =
                    cur == Self::NONE || (cur == Self::FAIL_FAST && why > Self::FAIL_FAST);
                replace.then_some(why)
            });
    }

    pub fn get(&self) -> u8 {
        self.0.load(Ordering::SeqCst)
    }

    pub fn is_set(&self) -> bool {
        self.get() != Self::NONE
    }
}

#[derive(Clone, Debug)]
pub struct Options {
    pub jobs: usize,
    pub fail_fast: bool,
    pub timeout: Option<Duration>,
    /// Re-tries after transient failures (attempts = retries + 1).
    pub retries: u32,
    /// First back-off; doubles per re-try.
    pub backoff: Duration,
    pub force: bool,
    /// Verify each image in its worker right after it builds.
    pub verify: bool,
}

#[derive(Clone, Debug)]
pub struct Outcome {
    pub id: String,
    pub status: Status,
    pub attempts: u32,
    pub exit_code: Option<i32>,
    pub duration: Duration,
    pub tail: Vec<String>,
    pub image: Option<(String, u64)>,
    pub reason: Option<String>,
    pub verification: Option<crate::manifest::Verification>,
}

#[derive(Clone, Debug)]
pub enum Event {
    Started {
        id: String,
        attempt: u32,
    },
    Step {
        id: String,
        step: Step,
    },
    Retrying {
        id: String,
        attempt: u32,
        wait: Duration,
    },
    Finished(Outcome),
}

/// A shared stage and the indexes (into the cell jobs) of the cells that need it.
#[derive(Clone, Debug)]
pub struct Warm {
    pub job: Job,
    pub members: Vec<usize>,
}

/// Run everything; `on_event` is called on the caller's thread, in arrival order.
/// Returns one outcome per cell job, in job order.
pub fn run(
    warm_phases: &[Vec<Warm>],
    jobs: &[Job],
    exec: &dyn Executor,
    opts: &Options,
    cancel: &Cancel,
    on_event: &mut dyn FnMut(&Event),
) -> Vec<Outcome> {
    let mut results: Vec<Option<Outcome>> = vec![None; jobs.len()];
    // Up-to-date cells first, so that a nightly where nothing changed builds no shared
    // stage at all. The checks are independent, so they run on the pool too.
    if !opts.force {
        use rayon::prelude::*;
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(opts.jobs.clamp(1, 8))
            .build();
        let fresh: Vec<Option<Outcome>> = match pool {
            Ok(p) => p.install(|| jobs.par_iter().map(|j| up_to_date(j, exec)).collect()),
            Err(_) => jobs.iter().map(|j| up_to_date(j, exec)).collect(),
        };
        for (i, o) in fresh.into_iter().enumerate() {
            if let Some(o) = o {
                on_event(&Event::Finished(o.clone()));
                results[i] = Some(o);
            }
        }
    }
    for phase in warm_phases {
        let todo: Vec<&Warm> = phase
            .iter()
            .filter(|w| w.members.iter().any(|m| results[*m].is_none()))
            .collect();
        let warm_jobs: Vec<Job> = todo.iter().map(|w| w.job.clone()).collect();
        let outcomes = run_phase(&warm_jobs, exec, opts, cancel, on_event);
        for (w, o) in todo.iter().zip(outcomes) {
            if o.status.succeeded() {
                continue;
            }
            for m in &w.members {
                if results[*m].is_none() {
                    let reason = format!(
                        "shared stage {} {}: {}",
                        w.job.id,
                        o.status.as_str(),
                        o.reason.clone().unwrap_or_default()
                    );
                    let status = if o.status == Status::NotStarted {
                        Status::NotStarted
                    } else if o.status == Status::Cancelled {
                        Status::Cancelled
                    } else {
                        Status::Failed
                    };
                    let out = Outcome {
                        id: jobs[*m].id.clone(),
                        status,
                        attempts: 0,
                        exit_code: o.exit_code,
                        duration: Duration::ZERO,
                        tail: o.tail.clone(),
                        image: None,
                        reason: Some(reason),
                        verification: None,
                    };
                    on_event(&Event::Finished(out.clone()));
                    results[*m] = Some(out);
                }
            }
        }
    }
    let pending: Vec<usize> = (0..jobs.len()).filter(|i| results[*i].is_none()).collect();
    let pending_jobs: Vec<Job> = pending.iter().map(|i| jobs[*i].clone()).collect();
    let outcomes = run_phase(&pending_jobs, exec, opts, cancel, on_event);
    for (i, o) in pending.into_iter().zip(outcomes) {
        results[i] = Some(o);
    }
    results
        .into_iter()
        .zip(jobs)
        .map(|(r, j)| r.unwrap_or_else(|| not_started(&j.id)))
        .collect()
}

fn up_to_date(job: &Job, exec: &dyn Executor) -> Option<Outcome> {
    let t = Instant::now();
    exec.up_to_date(job).then(|| Outcome {
        id: job.id.clone(),
        status: Status::UpToDate,
        attempts: 0,
        exit_code: None,
        duration: t.elapsed(),
        tail: Vec::new(),
        image: exec.image_info(job),
        reason: None,
        verification: None,
    })
}

fn not_started(id: &str) -> Outcome {
    Outcome {
        id: id.to_string(),
        status: Status::NotStarted,
        attempts: 0,
        exit_code: None,
        duration: Duration::ZERO,
        tail: Vec::new(),
        image: None,
        reason: None,
        verification: None,
    }
}

fn run_phase(
    jobs: &[Job],
    exec: &dyn Executor,
    opts: &Options,
    cancel: &Cancel,
    on_event: &mut dyn FnMut(&Event),
) -> Vec<Outcome> {
    if jobs.is_empty() {
        return Vec::new();
    }
    let workers = opts.jobs.clamp(1, jobs.len());
    let next = AtomicUsize::new(0);
    let (tx, rx) = mpsc::channel::<(usize, Event)>();
    let mut out: Vec<Option<Outcome>> = vec![None; jobs.len()];
    std::thread::scope(|s| {
        let next = &next;
        s.spawn(move || {
            let pool = match rayon::ThreadPoolBuilder::new().num_threads(workers).build() {
                Ok(p) => p,
                Err(_) => return,
            };
            pool.scope(|ps| {
                for _ in 0..workers {
                    let tx = tx.clone();
                    ps.spawn(move |_| loop {
                        let i = next.fetch_add(1, Ordering::SeqCst);
                        if i >= jobs.len() {
                            break;
                        }
                        let o = run_job(&jobs[i], exec, opts, cancel, &|e| {
                            let _ = tx.send((i, e));
                        });
                        let _ = tx.send((i, Event::Finished(o)));
                    });
                }
            });
        });
        for (i, ev) in rx {
            if let Event::Finished(o) = &ev {
                out[i] = Some(o.clone());
            }
            on_event(&ev);
        }
    });
    out.into_iter()
        .zip(jobs)
        .map(|(o, j)| o.unwrap_or_else(|| not_started(&j.id)))
        .collect()
}

fn run_job(
    job: &Job,
    exec: &dyn Executor,
    opts: &Options,
    cancel: &Cancel,
    emit: &dyn Fn(Event),
) -> Outcome {
    let start = Instant::now();
    if cancel.is_set() {
        return not_started(&job.id);
    }
    let mut attempt = 0;
    loop {
        attempt += 1;
        emit(Event::Started {
            id: job.id.clone(),
            attempt,
        });
        let t0 = Instant::now();
        let stop = || {
            if cancel.is_set() {
                Some(Stop::Cancelled)
            } else if opts.timeout.is_some_and(|t| t0.elapsed() >= t) {
                Some(Stop::TimedOut)
            } else {
                None
            }
        };
        let r = exec.attempt(
            job,
            attempt,
            &mut |step| {
                emit(Event::Step {
                    id: job.id.clone(),
                    step,
                })
            },
            &stop,
        );
        let (status, code, reason) = match &r.end {
            AttemptEnd::Succeeded => (Status::Built, Some(0), None),
            AttemptEnd::Failed {
                exit_code,
                transient,
            } => {
                if *transient && attempt <= opts.retries && !cancel.is_set() {
                    let wait = opts.backoff * 2u32.saturating_pow(attempt - 1);
                    emit(Event::Retrying {
                        id: job.id.clone(),
                        attempt: attempt + 1,
                        wait,
                    });
                    let until = Instant::now() + wait;
                    while Instant::now() < until && !cancel.is_set() {
                        std::thread::sleep(Duration::from_millis(20));
                    }
                    if !cancel.is_set() {
                        continue;
                    }
                }
                let why = match *exit_code {
                    125 => "docker rejected the build arguments (exit 125)".to_string(),
                    c if c > 128 => format!("docker build was killed by signal {}", c - 128),
                    c => format!(
                        "docker build exited with {c}{}",
                        if *transient {
                            " (looked transient)"
                        } else {
                            ""
                        }
                    ),
                };
                (Status::Failed, Some(*exit_code), Some(why))
            }
            AttemptEnd::TimedOut => (
                Status::TimedOut,
                None,
                Some(format!(
                    "no result within {}",
                    humantime::format_duration(opts.timeout.unwrap_or_default())
                )),
            ),
            AttemptEnd::Cancelled => (
                Status::Cancelled,
                None,
                Some(cancel_reason(cancel.get()).into()),
            ),
            AttemptEnd::Error(e) => (Status::Failed, None, Some(e.clone())),
        };
        if opts.fail_fast && !status.succeeded() {
            cancel.set(Cancel::FAIL_FAST);
        }
        let image = if status == Status::Built {
            exec.image_info(job)
        } else {
            None
        };
        let verification = if opts.verify && status == Status::Built && !cancel.is_set() {
            emit(Event::Step {
                id: job.id.clone(),
                step: Step {
                    index: 1,
                    total: 1,
                    text: "verifying the image".into(),
                },
            });
            exec.verify(job, cancel)
        } else {
            None
        };
        return Outcome {
            id: job.id.clone(),
            status,
            attempts: attempt,
            exit_code: code,
            duration: start.elapsed(),
            tail: r.tail,
            image,
            reason,
            verification,
        };
    }
}

pub fn cancel_reason(why: u8) -> &'static str {
    match why {
        Cancel::FAIL_FAST => "stopped by --fail-fast after another cell failed",
        Cancel::INTERRUPT => "interrupted (SIGINT)",
        Cancel::TERMINATE => "terminated (SIGTERM)",
        _ => "cancelled",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::docker::BuildRequest;
    use crate::executor::{FakeAttempt, FakeExecutor};

    fn job(id: &str) -> Job {
        Job {
            id: id.into(),
            request: BuildRequest::default(),
            log_path: "/dev/null".into(),
            input_hash: "h".into(),
            primary_tag: Some(format!("r:{id}")),
        }
    }

    fn opts(jobs: usize) -> Options {
        Options {
            jobs,
            fail_fast: false,
            timeout: None,
            retries: 0,
            backoff: Duration::from_millis(1),
            force: false,
            verify: false,
        }
    }

    fn statuses(o: &[Outcome]) -> Vec<&'static str> {
        o.iter().map(|x| x.status.as_str()).collect()
    }

    #[test]
    fn a_signal_overrides_fail_fast_but_not_another_signal() {
        let c = Cancel::default();
        c.set(Cancel::FAIL_FAST);
        c.set(Cancel::INTERRUPT);
        assert_eq!(c.get(), Cancel::INTERRUPT);
        c.set(Cancel::TERMINATE);
        c.set(Cancel::FAIL_FAST);
        assert_eq!(c.get(), Cancel::INTERRUPT);
    }

    #[test]
    fn runs_in_plan_order_on_one_worker_and_keeps_going() {
        let fake = FakeExecutor::default();
        fake.script(
            "b",
            vec![FakeAttempt::Fail {
                code: 1,
                transient: false,
            }],
        );
        let jobs = vec![job("a"), job("b"), job("c")];
        let mut events = Vec::new();
        let o = run(&[], &jobs, &fake, &opts(1), &Cancel::default(), &mut |e| {
            events.push(format!("{e:?}"))
        });
        assert_eq!(statuses(&o), ["built", "failed", "built"]);
        assert_eq!(*fake.calls.lock().unwrap(), ["a#1", "b#1", "c#1"]);
        assert!(events.iter().filter(|e| e.starts_with("Finished")).count() == 3);
    }

    #[test]
    fn fail_fast_cancels_running_and_starts_nothing_new() {
        let fake = FakeExecutor::default();
        fake.script("a", vec![FakeAttempt::Hang]);
        fake.script(
            "b",
            vec![FakeAttempt::Fail {
                code: 2,
                transient: false,
            }],
        );
        let jobs = vec![job("a"), job("b"), job("c"), job("d")];
        let mut o = opts(2);
        o.fail_fast = true;
        let out = run(&[], &jobs, &fake, &o, &Cancel::default(), &mut |_| {});
        assert_eq!(
            statuses(&out),
            ["cancelled", "failed", "not-started", "not-started"]
        );
        assert_eq!(
            out[0].reason.as_deref(),
            Some("stopped by --fail-fast after another cell failed")
        );
    }

    #[test]
    fn transient_failures_are_retried_with_a_limit() {
        let fake = FakeExecutor::default();
        fake.script(
            "a",
            vec![
                FakeAttempt::Fail {
                    code: 1,
                    transient: true,
                },
                FakeAttempt::Ok { millis: 0 },
            ],
        );
        fake.script(
            "b",
            vec![
                FakeAttempt::Fail {
                    code: 1,
                    transient: true
                };
                5
            ],
        );
        fake.script(
            "c",
            vec![
                FakeAttempt::Fail {
                    code: 125,
                    transient: false,
                },
                FakeAttempt::Ok { millis: 0 },
            ],
        );
        let mut o = opts(1);
        o.retries = 2;
        let out = run(
            &[],
            &[job("a"), job("b"), job("c")],
            &fake,
            &o,
            &Cancel::default(),
            &mut |_| {},
        );
        assert_eq!(statuses(&out), ["built", "failed", "failed"]);
        assert_eq!(
            out.iter().map(|x| x.attempts).collect::<Vec<_>>(),
            [2, 3, 1]
        );
        assert!(out[2].reason.as_deref().unwrap().contains("125"));
    }

    #[test]
    fn timeouts_stop_a_hung_build() {
        let fake = FakeExecutor::default();
        fake.script("a", vec![FakeAttempt::Hang]);
        let mut o = opts(1);
        o.timeout = Some(Duration::from_millis(30));
        o.retries = 3;
        let out = run(
            &[],
            &[job("a"), job("b")],
            &fake,
            &o,
            &Cancel::default(),
            &mut |_| {},
        );
        assert_eq!(statuses(&out), ["timed-out", "built"]);
        assert_eq!(out[0].attempts, 1, "a timeout is not re-tried");
    }

    #[test]
    fn up_to_date_cells_are_skipped_unless_forced() {
        let fake = FakeExecutor {
            up_to_date: vec!["a".into()],
            ..Default::default()
        };
        let out = run(
            &[],
            &[job("a"), job("b")],
            &fake,
            &opts(2),
            &Cancel::default(),
            &mut |_| {},
        );
        assert_eq!(statuses(&out), ["up-to-date", "built"]);
        let mut o = opts(2);
        o.force = true;
        let out = run(&[], &[job("a")], &fake, &o, &Cancel::default(), &mut |_| {});
        assert_eq!(statuses(&out), ["built"]);
    }

    #[test]
    fn a_failed_shared_stage_fails_its_members_once() {
        let fake = FakeExecutor::default();
        fake.script(
            "warm",
            vec![FakeAttempt::Fail {
                code: 1,
                transient: false,
            }],
        );
        let jobs = vec![job("a"), job("b"), job("c")];
        let warm = vec![vec![Warm {
            job: job("warm"),
            members: vec![0, 2],
        }]];
        let out = run(
            &warm,
            &jobs,
            &fake,
            &opts(2),
            &Cancel::default(),
            &mut |_| {},
        );
        assert_eq!(statuses(&out), ["failed", "built", "failed"]);
        assert!(out[0]
            .reason
            .as_deref()
            .unwrap()
            .starts_with("shared stage warm failed"));
        let calls = fake.calls.lock().unwrap().clone();
        assert_eq!(calls, ["warm#1", "b#1"]);
    }

    #[test]
    fn cancellation_marks_running_cancelled_and_rest_not_started() {
        let fake = FakeExecutor::default();
        fake.script("a", vec![FakeAttempt::Hang]);
        let cancel = Cancel::default();
        let c2 = cancel.clone();
        let out = run(
            &[],
            &[job("a"), job("b")],
            &fake,
            &opts(1),
            &cancel,
            &mut |e| {
                if matches!(e, Event::Started { .. }) {
                    c2.set(Cancel::INTERRUPT);
                }
            },
        );
        assert_eq!(statuses(&out), ["cancelled", "not-started"]);
        assert_eq!(out[0].reason.as_deref(), Some("interrupted (SIGINT)"));
    }
}
