//! What a build shows while it runs, chosen with `--progress`: the terminal reporter
//! (bars, plain lines or only failures, on stderr) and, with `json`, the event stream
//! on stdout. Both only listen: `commands/build.rs` hands every scheduler event and
//! every later result (verification, push, the end of the run) to [`Progress`], which
//! passes it on to the listeners the mode asks for.

use std::path::Path;

use super::json::JsonReporter;
use super::terminal::Reporter;
use super::Mode;
use crate::manifest::{Manifest, Verification};
use crate::run::events::{Event, Listener, Outcome, Phase};
use crate::run::executor::Job;

/// The listeners of one build run.
pub struct Progress {
    terminal: Reporter,
    json: Option<JsonReporter>,
}

impl Progress {
    pub fn new(mode: Mode, total: usize, show_engines: bool) -> Progress {
        let mut terminal = Reporter::new(total, mode);
        terminal.show_engines(show_engines);
        Progress {
            terminal,
            json: (mode == Mode::Json).then(JsonReporter::stdout),
        }
    }

    /// Whether results go to the event stream (so stdout carries nothing else).
    pub fn is_json(&self) -> bool {
        self.json.is_some()
    }

    /// The plan of the run: the initial manifest (one record per job, then the
    /// exclusions) and every job, cells and shared stages.
    pub fn run_started(&mut self, m: &Manifest, manifest_path: &Path, jobs: &[&Job]) {
        if let Some(j) = &mut self.json {
            j.run_started(m, manifest_path, jobs);
        }
    }

    /// A scheduler event; `reproduce` is the command that rebuilds a failed job.
    pub fn event(&mut self, ev: &Event, reproduce: Option<&str>) {
        self.terminal.event(ev);
        if let Some(j) = &mut self.json {
            j.event(ev, reproduce);
        }
    }

    /// A failed build's last lines, log and reproduction, for people (the event
    /// stream carries them in its `finished` event).
    pub fn failure(&mut self, o: &Outcome, log: &str, repro: &str) {
        self.terminal.failure(o, log, repro);
    }

    /// The scheduler is done: clear the bars.
    pub fn finish(&mut self) {
        self.terminal.finish();
    }

    /// A line for people, on stderr.
    pub fn line(&mut self, text: &str) {
        self.terminal.line(text);
    }

    /// An event of the phases after the builds: its line for people (on stderr, in
    /// every mode, as before the stream existed) and its event in the stream.
    pub fn phase(&mut self, ev: &Phase) {
        if let Some(text) = ev.line() {
            self.terminal.line(&text);
        }
        if let Some(j) = &mut self.json {
            j.phase(ev);
        }
    }

    pub fn verified(&mut self, id: &str, tag: &str, v: &Verification) {
        if let Some(j) = &mut self.json {
            j.verified(id, tag, v);
        }
    }

    /// The summary for people and the `run-finished` event.
    pub fn run_finished(
        &mut self,
        m: &Manifest,
        manifest_path: &Path,
        reports: &[&Path],
        exit_code: i32,
    ) {
        self.terminal
            .summary(m, &manifest_path.display().to_string());
        if let Some(j) = &mut self.json {
            j.run_finished(m, manifest_path, reports, exit_code);
        }
    }
}

impl Listener for Progress {
    fn run_started(&mut self, m: &Manifest, manifest_path: &Path, jobs: &[&Job]) {
        Progress::run_started(self, m, manifest_path, jobs);
    }
    fn event(&mut self, ev: &Event, reproduce: Option<&str>) {
        Progress::event(self, ev, reproduce);
    }
    fn failure(&mut self, o: &Outcome, log: &str, reproduce: &str) {
        Progress::failure(self, o, log, reproduce);
    }
    fn scheduled(&mut self) {
        self.finish();
    }
    fn phase(&mut self, ev: &Phase) {
        Progress::phase(self, ev);
    }
    fn verified(&mut self, id: &str, tag: &str, v: &Verification) {
        Progress::verified(self, id, tag, v);
    }
    /// On stdout for people; with the event stream there, on stderr.
    fn verification_table(&mut self, table: &str) -> std::io::Result<()> {
        if self.is_json() {
            self.line(table.trim_end());
            Ok(())
        } else {
            crate::term::out(table)
        }
    }
    fn run_finished(&mut self, m: &Manifest, manifest_path: &Path, reports: &[&Path], code: i32) {
        Progress::run_finished(self, m, manifest_path, reports, code);
    }
}
