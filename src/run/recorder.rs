//! The manifest recorder: the second listener of a run (beside the terminal reporter).
//! It applies each event to the manifest and writes it at most every so often, plus on
//! demand (the end of the run, a signal), so that a 1,000-cell run writes a handful
//! of manifests, not one per cell.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::manifest::{io, Manifest, Status};
use crate::run::events::{Event, Outcome};
use crate::run::executor::JobKind;

pub struct Recorder {
    manifest: Manifest,
    path: PathBuf,
    every: Duration,
    last: Option<Instant>,
    dirty: bool,
    /// The last write error, if the last write failed.
    pub error: Option<std::io::Error>,
}

impl Recorder {
    /// Record into `path`; job `i` is `manifest.cells[i]`.
    pub fn new(manifest: Manifest, path: &Path, every: Duration) -> Recorder {
        Recorder {
            manifest,
            path: path.to_path_buf(),
            every,
            last: None,
            dirty: true,
            error: None,
        }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The record so far.
    pub fn manifest(&self) -> &Manifest {
        &self.manifest
    }

    /// The command that reproduces job `i`'s failed build.
    pub fn reproduce(&mut self, i: usize, command: String) {
        if let Some(rec) = self.manifest.cells.get_mut(i) {
            rec.reproduce = Some(command);
            self.dirty = true;
        }
    }

    /// What acceptance decided, written at once (the tags have moved).
    pub fn accepted(&mut self, a: crate::run::accept::Accepted) -> std::io::Result<()> {
        a.apply(&mut self.manifest);
        self.touch_and_write()
    }

    /// What a publish did, written at once.
    pub fn published(&mut self, p: super::publish::Published) -> std::io::Result<()> {
        p.apply(&mut self.manifest);
        self.touch_and_write()
    }

    pub fn staged(&mut self, staged: Vec<(usize, crate::manifest::Staged)>) -> std::io::Result<()> {
        for (i, s) in staged {
            self.manifest.cells[i].staged = Some(s);
        }
        self.touch_and_write()
    }

    /// How the run ended, when, and the tool's own CPU time: the last write.
    pub fn close(&mut self, outcome: crate::manifest::RunOutcome) -> std::io::Result<()> {
        let m = &mut self.manifest;
        m.outcome = Some(outcome);
        m.finished = Some(crate::manifest::now());
        m.tool_cpu_seconds = Some((crate::manifest::own_cpu_seconds() * 1000.0).round() / 1000.0);
        self.touch_and_write()
    }

    pub fn apply(&mut self, ev: &Event) {
        match ev {
            Event::EngineDown { engine, reason, .. } => {
                if let Some(r) = self.manifest.engines.iter_mut().find(|r| &r.name == engine) {
                    r.down = Some(reason.clone());
                }
            }
            Event::Finished(o) => {
                if let JobKind::Cell(i) = o.job {
                    self.finished(i, o);
                }
            }
            _ => return,
        }
        self.dirty = true;
        if self.last.is_none_or(|t| t.elapsed() >= self.every) {
            let _ = self.write();
        }
    }

    fn finished(&mut self, i: usize, o: &Outcome) {
        let parent_digest = self.manifest.cells.get(i).and_then(|r| {
            let p = r.parent.as_deref()?;
            let parent = self.manifest.cells.iter().find(|c| c.id == p)?;
            parent.image_id.clone()
        });
        let Some(rec) = self.manifest.cells.get_mut(i) else {
            return;
        };
        if o.status.succeeded() {
            rec.parent_digest = parent_digest;
        }
        rec.status = o.status;
        rec.attempts = o.attempts;
        rec.exit_code = o.exit_code;
        rec.duration_seconds = (o.duration.as_secs_f64() * 10.0).round() / 10.0;
        if o.reason.is_some() || o.status != Status::NotStarted {
            rec.reason.clone_from(&o.reason);
        }
        rec.engine.clone_from(&o.engine);
        rec.requeued.clone_from(&o.requeues);
        if o.status == Status::Built {
            // what this very build printed, or nothing: never an earlier record's
            rec.versions = o
                .versions
                .as_deref()
                .and_then(|v| serde_json::from_str(v).ok())
                .unwrap_or_default();
        }
        if let Some((id, size)) = &o.image {
            rec.image_id = Some(id.clone());
            if size.is_some() {
                rec.size_bytes = *size;
            }
        }
        if o.status == Status::UpToDate || (o.attempts == 0 && o.status != Status::Failed) {
            rec.log = None;
        }
    }

    /// Write now if anything changed since the last write.
    pub fn write(&mut self) -> std::io::Result<()> {
        if !self.dirty {
            return Ok(());
        }
        self.last = Some(Instant::now());
        match io::write(&self.path, &self.manifest) {
            Ok(()) => {
                self.dirty = false;
                self.error = None;
                Ok(())
            }
            Err(e) => {
                let again = std::io::Error::new(e.kind(), e.to_string());
                self.error = Some(e);
                Err(again)
            }
        }
    }

    /// Mark the manifest changed and write it.
    fn touch_and_write(&mut self) -> std::io::Result<()> {
        self.dirty = true;
        self.write()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plan::{plan_text, PlanOptions};
    use crate::run::prepare::record_for;

    #[test]
    fn events_update_their_cell_and_writes_are_throttled() {
        let p = plan_text(
            "version: 1\nbases: [ubuntu:22.04]\npython: [\"3.10\", \"3.11\"]\n",
            "m.yaml",
            Path::new("."),
            &PlanOptions {
                date: "20260101".into(),
            },
        )
        .unwrap();
        let mut m = Manifest::new("m.yaml", "0", None);
        m.cells = p.cells.iter().map(|c| record_for(c, None)).collect();
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("manifest.json");
        let mut r = Recorder::new(m, &path, Duration::from_secs(3600));
        let done = Outcome {
            status: Status::Built,
            attempts: 1,
            image: Some(("sha256:x".into(), Some(7))),
            engine: Some("default".into()),
            ..Outcome::not_started(JobKind::Cell(1), &p.cells[1].id)
        };
        r.apply(&Event::Finished(done));
        assert_eq!(r.manifest.cells[1].status, Status::Built);
        assert_eq!(r.manifest.cells[1].size_bytes, Some(7));
        assert_eq!(r.manifest.cells[0].status, Status::NotStarted);
        let on_disk = io::read(&path).unwrap();
        assert_eq!(
            on_disk.cells[1].status,
            Status::Built,
            "the first event writes"
        );
        let more = Outcome {
            status: Status::Failed,
            attempts: 1,
            ..Outcome::not_started(JobKind::Cell(0), &p.cells[0].id)
        };
        r.apply(&Event::Finished(more));
        assert_eq!(
            io::read(&path).unwrap().cells[0].status,
            Status::NotStarted,
            "the next write waits for the interval"
        );
        r.write().unwrap();
        assert_eq!(io::read(&path).unwrap().cells[0].status, Status::Failed);
    }
}
