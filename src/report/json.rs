//! `--progress json`: the run as a stream of events, one JSON object per line on
//! stdout, for dashboards and CI log parsers. Schema: `schemas/events.schema.json`
//! (`image-matrix.events/1`; a change that could break a reader gets a new number).
//!
//! Invariants: every line is one complete object carrying `schema`, `time` (UTC, RFC
//! 3339 with milliseconds), `elapsed_seconds` and `event`; every key of an event is
//! always present (`null` when it does not apply), so readers never guess; the stream
//! opens with `run-started`, lists every cell there, gives every listed cell and stage
//! exactly one `finished`, and closes with `run-finished`. Nothing else is written to
//! stdout while it runs; messages for people stay on stderr.

use std::collections::{BTreeMap, HashMap};
use std::io;
use std::path::Path;
use std::time::{Instant, SystemTime};

use serde::Serialize;

use crate::manifest::{CheckResult, Manifest, RunOutcome, Status, Verification};
use crate::run::events::{Event, Outcome, Phase};
use crate::run::executor::{Job, JobKind};

/// The value of every event's `schema` key.
pub const SCHEMA: &str = "image-matrix.events/1";

/// How many of a failed build's last lines its `finished` event carries.
const TAIL_LINES: usize = 20;

/// Where event lines go: stdout, or a buffer in tests.
type Sink = Box<dyn FnMut(&str) -> io::Result<()> + Send>;

pub struct JsonReporter {
    started: Instant,
    /// The log of each job, by id (cells and shared stages).
    logs: HashMap<String, String>,
    /// The last step sent per job: a step is sent once, not once per output line.
    steps: HashMap<String, (u32, u32, String)>,
    sink: Sink,
    /// Set after a write failed: the rest of the stream is dropped (once said).
    broken: bool,
}

#[derive(Serialize)]
struct Line<'a> {
    schema: &'static str,
    time: String,
    elapsed_seconds: f64,
    #[serde(flatten)]
    body: Body<'a>,
}

#[derive(Serialize)]
#[serde(rename_all = "kebab-case")]
enum JobName {
    Cell,
    Stage,
}

impl From<JobKind> for JobName {
    fn from(k: JobKind) -> JobName {
        match k {
            JobKind::Cell(_) => JobName::Cell,
            JobKind::Stage(_) => JobName::Stage,
        }
    }
}

#[derive(Serialize)]
struct PlannedCell<'a> {
    id: &'a str,
    tag: Option<&'a str>,
    log: Option<String>,
}

#[derive(Serialize)]
struct PlannedStage<'a> {
    id: &'a str,
    log: String,
}

#[derive(Serialize)]
struct ExcludedCell<'a> {
    id: &'a str,
    reason: Option<&'a str>,
}

#[derive(Serialize)]
struct EngineLine<'a> {
    name: &'a str,
    jobs: usize,
    down: Option<&'a str>,
}

#[derive(Serialize)]
#[serde(tag = "event", rename_all = "kebab-case")]
enum Body<'a> {
    RunStarted {
        tool_version: &'static str,
        matrix: &'a str,
        manifest: String,
        cells: Vec<PlannedCell<'a>>,
        stages: Vec<PlannedStage<'a>>,
        excluded: Vec<ExcludedCell<'a>>,
        engines: Vec<EngineLine<'a>>,
    },
    Started {
        job: JobName,
        id: &'a str,
        attempt: u32,
        engine: &'a str,
    },
    Step {
        job: JobName,
        id: &'a str,
        index: u32,
        total: u32,
        text: &'a str,
    },
    Retrying {
        job: JobName,
        id: &'a str,
        attempt: u32,
        wait_seconds: f64,
    },
    Requeued {
        job: JobName,
        id: &'a str,
        from: &'a str,
        reason: &'a str,
    },
    EngineDown {
        engine: &'a str,
        reason: &'a str,
        engines_left: usize,
    },
    Finished {
        job: JobName,
        id: &'a str,
        status: &'static str,
        attempts: u32,
        exit_code: Option<i32>,
        duration_seconds: f64,
        engine: Option<&'a str>,
        reason: Option<&'a str>,
        image_id: Option<&'a str>,
        size_bytes: Option<u64>,
        log: Option<&'a str>,
        reproduce: Option<&'a str>,
        tail: &'a [String],
    },
    Verified {
        id: &'a str,
        tag: &'a str,
        ok: bool,
        ready_seconds: Option<f64>,
        checks: &'a [CheckResult],
    },
    Accepting {
        images: usize,
        verify: bool,
    },
    Promoted {
        id: &'a str,
        tag: &'a str,
    },
    /// A line of the phases after the builds for people: `warning` or `info`.
    Note {
        level: &'static str,
        id: Option<&'a str>,
        text: &'a str,
    },
    Pruned {
        engine: &'a str,
        ok: bool,
        removed: Option<usize>,
        kept: Option<usize>,
        freed_bytes: Option<u64>,
        error: Option<&'a str>,
    },
    Index {
        group: &'a str,
        tag: Option<&'a str>,
        ok: bool,
        digest: Option<&'a str>,
        error: Option<&'a str>,
    },
    Pushed {
        id: &'a str,
        tag: &'a str,
        ok: bool,
        digest: Option<&'a str>,
        attempts: u32,
        error: Option<&'a str>,
    },
    RunFinished {
        outcome: Option<&'a RunOutcome>,
        counts: BTreeMap<&'static str, usize>,
        wall_seconds: f64,
        manifest: String,
        reports: Vec<String>,
        exit_code: i32,
    },
}

/// Seconds with millisecond precision (what a dashboard plots, without float noise).
fn seconds(d: std::time::Duration) -> f64 {
    (d.as_secs_f64() * 1000.0).round() / 1000.0
}

impl JsonReporter {
    /// Events on stdout (a closed pipe ends the stream quietly).
    pub fn stdout() -> JsonReporter {
        JsonReporter::into(Box::new(crate::term::out))
    }

    /// Events into `sink`, one line per call, each ending with a newline.
    pub fn into(sink: Sink) -> JsonReporter {
        JsonReporter {
            started: Instant::now(),
            logs: HashMap::new(),
            steps: HashMap::new(),
            sink,
            broken: false,
        }
    }

    fn send(&mut self, body: Body) {
        if self.broken {
            return;
        }
        let line = Line {
            schema: SCHEMA,
            time: humantime::format_rfc3339_millis(SystemTime::now()).to_string(),
            elapsed_seconds: seconds(self.started.elapsed()),
            body,
        };
        let mut text = match serde_json::to_string(&line) {
            Ok(t) => t,
            Err(e) => {
                crate::term::line(&format!("warning: cannot encode a progress event: {e}"));
                return;
            }
        };
        text.push('\n');
        if let Err(e) = (self.sink)(&text) {
            // the manifest still records the run; the stream just ends here
            self.broken = true;
            crate::term::line(&format!(
                "warning: cannot write progress events to stdout: {e}; no more events are written (the manifest still records the run)"
            ));
        }
    }

    /// The plan: every job with its log, the exclusions and the engines.
    pub fn run_started(&mut self, m: &Manifest, manifest_path: &Path, jobs: &[&Job]) {
        for j in jobs {
            self.logs
                .insert(j.id.clone(), j.log_path.display().to_string());
        }
        let by_id: HashMap<&str, &Job> = jobs.iter().map(|j| (j.id.as_str(), *j)).collect();
        let cells = m
            .cells
            .iter()
            .filter(|c| c.status != Status::Excluded)
            .map(|c| PlannedCell {
                id: &c.id,
                tag: c.tags.first().map(String::as_str),
                log: by_id
                    .get(c.id.as_str())
                    .map(|j| j.log_path.display().to_string()),
            })
            .collect();
        let stages = jobs
            .iter()
            .filter(|j| matches!(j.kind, JobKind::Stage(_)))
            .map(|j| PlannedStage {
                id: &j.id,
                log: j.log_path.display().to_string(),
            })
            .collect();
        let body = Body::RunStarted {
            tool_version: crate::VERSION,
            matrix: &m.matrix,
            manifest: manifest_path.display().to_string(),
            cells,
            stages,
            excluded: m
                .cells
                .iter()
                .filter(|c| c.status == Status::Excluded)
                .map(|c| ExcludedCell {
                    id: &c.id,
                    reason: c.reason.as_deref(),
                })
                .collect(),
            engines: m
                .engines
                .iter()
                .map(|e| EngineLine {
                    name: &e.name,
                    jobs: e.jobs,
                    down: e.down.as_deref(),
                })
                .collect(),
        };
        self.send(body);
    }

    /// A scheduler event; `reproduce` goes with a failed build's `finished`.
    pub fn event(&mut self, ev: &Event, reproduce: Option<&str>) {
        let body = match ev {
            Event::Started {
                job,
                id,
                attempt,
                engine,
            } => Body::Started {
                job: (*job).into(),
                id,
                attempt: *attempt,
                engine,
            },
            Event::Step { job, id, step } => {
                let key = (step.index, step.total, step.text.clone());
                if self.steps.get(id) == Some(&key) {
                    return;
                }
                self.steps.insert(id.clone(), key);
                Body::Step {
                    job: (*job).into(),
                    id,
                    index: step.index,
                    total: step.total,
                    text: &step.text,
                }
            }
            Event::Retrying {
                job,
                id,
                attempt,
                wait,
            } => Body::Retrying {
                job: (*job).into(),
                id,
                attempt: *attempt,
                wait_seconds: seconds(*wait),
            },
            Event::Requeued {
                job,
                id,
                from,
                reason,
            } => Body::Requeued {
                job: (*job).into(),
                id,
                from,
                reason,
            },
            Event::EngineDown {
                engine,
                reason,
                left,
            } => Body::EngineDown {
                engine,
                reason,
                engines_left: *left,
            },
            Event::Finished(o) => {
                self.steps.remove(&o.id);
                let log = self.logs.get(&o.id).cloned();
                return self.finished(o, log.as_deref(), reproduce);
            }
        };
        self.send(body);
    }

    fn finished(&mut self, o: &Outcome, log: Option<&str>, reproduce: Option<&str>) {
        let failed = matches!(o.status, Status::Failed | Status::TimedOut);
        let tail = if failed {
            &o.tail[o.tail.len().saturating_sub(TAIL_LINES)..]
        } else {
            &[]
        };
        self.send(Body::Finished {
            job: o.job.into(),
            id: &o.id,
            status: o.status.as_str(),
            attempts: o.attempts,
            exit_code: o.exit_code,
            duration_seconds: seconds(o.duration),
            engine: o.engine.as_deref(),
            reason: o.reason.as_deref(),
            image_id: o.image.as_ref().map(|(id, _)| id.as_str()),
            size_bytes: o.image.as_ref().and_then(|(_, size)| *size),
            log: if o.attempts > 0 { log } else { None },
            reproduce: if failed { reproduce } else { None },
            tail,
        });
    }

    /// A cell's verification, check by check.
    pub fn verified(&mut self, id: &str, tag: &str, v: &Verification) {
        self.send(Body::Verified {
            id,
            tag,
            ok: v.ok,
            ready_seconds: v.ready_seconds,
            checks: &v.checks,
        });
    }

    /// An event of the phases after the builds.
    pub fn phase(&mut self, ev: &Phase) {
        let line = ev.line().unwrap_or_default();
        let note = |level, id| Body::Note {
            level,
            id,
            text: &line,
        };
        let body = match ev {
            Phase::Accepting { images, verify } => Body::Accepting {
                images: *images,
                verify: *verify,
            },
            Phase::Promoted { id, tag } => Body::Promoted { id, tag },
            Phase::Verifying { id, .. } => note("info", Some(id)),
            Phase::Repinned { id, .. } => note("info", Some(id)),
            Phase::Warning { id, .. } => note("warning", *id),
            Phase::Info { id, .. } => note("info", *id),
            Phase::Pruned { engine, result, .. } => Body::Pruned {
                engine,
                ok: result.is_ok(),
                removed: result.as_ref().ok().map(|p| p.removed),
                kept: result.as_ref().ok().map(|p| p.kept),
                freed_bytes: result.as_ref().ok().map(|p| p.freed),
                error: result.as_ref().err().map(String::as_str),
            },
            Phase::PushRetrying { id, .. } => note("warning", Some(id)),
            Phase::Pushed { id, pushed: p } => Body::Pushed {
                id,
                tag: &p.tag,
                ok: p.ok,
                digest: p.digest.as_deref(),
                attempts: p.attempts,
                error: p.error.as_deref(),
            },
            Phase::Index {
                group,
                tag,
                digest,
                error,
            } => Body::Index {
                group,
                tag: *tag,
                ok: tag.is_some() && error.is_none(),
                digest: *digest,
                error: *error,
            },
        };
        self.send(body);
    }

    /// The end: how the run ended, cells per status, where its records are, and the
    /// exit code the tool is about to return.
    pub fn run_finished(
        &mut self,
        m: &Manifest,
        manifest_path: &Path,
        reports: &[&Path],
        exit_code: i32,
    ) {
        let mut counts = BTreeMap::new();
        for c in &m.cells {
            *counts.entry(c.status.as_str()).or_insert(0) += 1;
        }
        self.send(Body::RunFinished {
            outcome: m.outcome.as_ref(),
            counts,
            wall_seconds: seconds(self.started.elapsed()),
            manifest: manifest_path.display().to_string(),
            reports: reports.iter().map(|p| p.display().to_string()).collect(),
            exit_code,
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Arc, Mutex};
    use std::time::Duration;

    use crate::run::executor::Step;

    fn reporter() -> (JsonReporter, Arc<Mutex<Vec<serde_json::Value>>>) {
        let lines = Arc::new(Mutex::new(Vec::new()));
        let l = lines.clone();
        let r = JsonReporter::into(Box::new(move |t: &str| {
            assert!(t.ends_with('\n') && t.matches('\n').count() == 1, "{t:?}");
            l.lock().unwrap().push(serde_json::from_str(t).unwrap());
            Ok(())
        }));
        (r, lines)
    }

    fn step(index: u32, text: &str) -> Event {
        Event::Step {
            job: JobKind::Cell(0),
            id: "a".into(),
            step: Step {
                index,
                total: 3,
                text: text.into(),
            },
        }
    }

    #[test]
    fn a_step_is_sent_once_not_once_per_output_line() {
        let (mut r, lines) = reporter();
        for ev in [
            step(1, "FROM x"),
            step(1, "FROM x"),
            step(2, "RUN y"),
            step(2, "RUN y"),
        ] {
            r.event(&ev, None);
        }
        let l = lines.lock().unwrap();
        assert_eq!(l.len(), 2, "{l:?}");
        assert_eq!(l[1]["event"], "step");
        assert_eq!(l[1]["index"], 2);
        assert_eq!(l[1]["text"], "RUN y");
        assert_eq!(l[1]["schema"], SCHEMA);
    }

    #[test]
    fn a_failure_carries_its_last_lines_and_how_to_reproduce_it() {
        let (mut r, lines) = reporter();
        let tail: Vec<String> = (1..=50).map(|i| format!("line {i}")).collect();
        let failed = Outcome {
            status: Status::Failed,
            attempts: 1,
            exit_code: Some(3),
            duration: Duration::from_millis(1234),
            tail,
            ..Outcome::not_started(JobKind::Cell(0), "a")
        };
        r.event(&Event::Finished(failed), Some("cd x && docker build ."));
        r.event(
            &Event::Finished(Outcome::not_started(JobKind::Cell(1), "b")),
            Some("ignored: it did not fail"),
        );
        let l = lines.lock().unwrap();
        let tail = l[0]["tail"].as_array().unwrap();
        assert_eq!(tail.len(), TAIL_LINES);
        assert_eq!(tail[TAIL_LINES - 1], "line 50");
        assert_eq!(l[0]["reproduce"], "cd x && docker build .");
        assert_eq!(l[0]["duration_seconds"], 1.234);
        assert_eq!(l[1]["status"], "not-started");
        assert!(l[1]["reproduce"].is_null() && l[1]["log"].is_null());
        assert_eq!(l[1]["tail"].as_array().unwrap().len(), 0);
    }

    #[test]
    fn a_stream_that_cannot_be_written_stops_after_the_first_error() {
        let calls = Arc::new(Mutex::new(0));
        let c = calls.clone();
        let mut r = JsonReporter::into(Box::new(move |_: &str| {
            *c.lock().unwrap() += 1;
            Err(io::Error::other("disk full"))
        }));
        r.event(&step(1, "FROM x"), None);
        r.event(&step(2, "RUN y"), None);
        assert_eq!(*calls.lock().unwrap(), 1);
    }
}
