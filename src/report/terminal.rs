//! The terminal reporter: draws a build's events.
//!
//! On a terminal: an indicatif root bar (done/total, failures, elapsed, ETA) and one
//! line per running build with its current step, each cut to the terminal's width;
//! finished lines are cleared. Elsewhere (CI): one plain line per event. `--progress
//! quiet` (and `json`, whose events go to stdout) keeps failures and the summary;
//! `--progress tty` draws bars where stderr is not a terminal. `NO_COLOR` turns colour
//! off. Other lines printed
//! meanwhile (signals, verify, push) go through [`crate::term`], above the bars.

use std::collections::HashMap;
use std::io::IsTerminal;
use std::time::{Duration, Instant};

use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};

use super::Mode as Progress;
use crate::manifest::{Manifest, Status};
use crate::run::events::{Event, Outcome};
use crate::run::executor::JobKind;
use crate::term;

pub struct Reporter {
    mode: Mode,
    color: bool,
    total: usize,
    done: usize,
    failed: usize,
    started: Instant,
    steps: HashMap<String, String>,
    /// Say which engine runs a build (only worth the noise with several engines).
    engines: bool,
    /// Where plain and quiet lines go (stderr through `term`; a buffer in tests).
    sink: Box<dyn FnMut(&str) + Send>,
}

enum Mode {
    Bars {
        multi: MultiProgress,
        root: ProgressBar,
        lines: HashMap<String, ProgressBar>,
    },
    Plain,
    Quiet,
}

/// The root bar, drawn into `target`; lines printed meanwhile go above it.
fn bars(total: usize, color: bool, target: ProgressDrawTarget) -> Mode {
    let multi = MultiProgress::with_draw_target(target);
    term::attach(&multi);
    let root = multi.add(ProgressBar::new(total as u64));
    let tpl = if color {
        "{prefix:.bold} [{bar:30.cyan/blue}] {pos}/{len} elapsed {elapsed} eta {eta} {wide_msg}"
    } else {
        "{prefix} [{bar:30}] {pos}/{len} elapsed {elapsed} eta {eta} {wide_msg}"
    };
    root.set_style(
        ProgressStyle::with_template(tpl)
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            .progress_chars("=> "),
    );
    root.set_prefix("images");
    root.enable_steady_tick(Duration::from_millis(200));
    Mode::Bars {
        multi,
        root,
        lines: HashMap::new(),
    }
}

fn fmt_duration(d: Duration) -> String {
    let s = d.as_secs();
    if s >= 60 {
        format!("{}m{:02}s", s / 60, s % 60)
    } else {
        format!("{:.1}s", d.as_secs_f64())
    }
}

impl Reporter {
    /// The reporter `--progress` asks for: `auto` draws bars when stderr is a
    /// terminal and plain lines otherwise, `tty` draws bars anyway, `json` and `quiet`
    /// keep failures and the summary (`json` says the rest on stdout).
    pub fn new(total: usize, progress: Progress) -> Self {
        let tty = std::io::stderr().is_terminal();
        let no_color = std::env::var_os("NO_COLOR").is_some_and(|v| !v.is_empty());
        let color = !no_color
            && match progress {
                Progress::Tty => true,
                Progress::Plain => false,
                Progress::Auto | Progress::Json | Progress::Quiet => tty,
            };
        let mode = match progress {
            Progress::Quiet | Progress::Json => Mode::Quiet,
            Progress::Plain => Mode::Plain,
            Progress::Auto if !tty => Mode::Plain,
            Progress::Auto => bars(total, color, ProgressDrawTarget::stderr()),
            // not a terminal, but asked for: draw anyway (console's Term does not
            // check, where indicatif's stderr target would hide)
            Progress::Tty => bars(
                total,
                color,
                ProgressDrawTarget::term_like(Box::new(console::Term::buffered_stderr())),
            ),
        };
        Reporter {
            mode,
            color,
            total,
            done: 0,
            failed: 0,
            started: Instant::now(),
            steps: HashMap::new(),
            engines: false,
            sink: Box::new(term::line),
        }
    }

    /// Plain lines, without colour, into `sink` (for tests of what CI logs show).
    pub fn plain_into(total: usize, quiet: bool, sink: Box<dyn FnMut(&str) + Send>) -> Self {
        Reporter {
            mode: if quiet { Mode::Quiet } else { Mode::Plain },
            color: false,
            total,
            done: 0,
            failed: 0,
            started: Instant::now(),
            steps: HashMap::new(),
            engines: false,
            sink,
        }
    }

    /// Print a line without tearing the bars.
    pub fn line(&mut self, text: &str) {
        match self.mode {
            Mode::Bars { .. } => term::line(text),
            _ => (self.sink)(text),
        }
    }

    fn paint(&self, text: &str, code: &str) -> String {
        if self.color {
            format!("\x1b[{code}m{text}\x1b[0m")
        } else {
            text.to_string()
        }
    }

    pub fn show_engines(&mut self, yes: bool) {
        self.engines = yes;
    }

    pub fn event(&mut self, ev: &Event) {
        match ev {
            Event::Started {
                id,
                attempt,
                engine,
                ..
            } => {
                let mut again = if *attempt > 1 {
                    format!(" (attempt {attempt})")
                } else {
                    String::new()
                };
                if self.engines {
                    again = format!(" on {engine}{again}");
                }
                match &mut self.mode {
                    Mode::Bars { multi, lines, .. } => {
                        let pb = lines.entry(id.clone()).or_insert_with(|| {
                            let pb = multi.add(ProgressBar::new_spinner());
                            pb.set_style(
                                ProgressStyle::with_template("  {spinner} {prefix} {wide_msg}")
                                    .unwrap_or_else(|_| ProgressStyle::default_spinner()),
                            );
                            // the id keeps at most half the line; the step text the rest
                            let half = term::width().unwrap_or(80) / 2;
                            pb.set_prefix(term::cut(id, half.max(16)));
                            pb.enable_steady_tick(Duration::from_millis(120));
                            pb
                        });
                        pb.set_message(format!("starting{again}"));
                    }
                    Mode::Plain => {
                        let t = format!("[{}] started {id}{again}", self.clock());
                        (self.sink)(&t);
                    }
                    Mode::Quiet => {}
                }
            }
            Event::Step { id, step, .. } => {
                let text: String = step.text.chars().take(70).collect();
                let msg = format!("{}/{} {text}", step.index, step.total);
                match &mut self.mode {
                    Mode::Bars { lines, .. } => {
                        if let Some(pb) = lines.get(id) {
                            pb.set_message(msg);
                        }
                    }
                    Mode::Plain => {
                        // one line per step change, not per output line
                        if self.steps.get(id) != Some(&msg) {
                            let t = format!("[{}] {id} step {msg}", self.clock());
                            (self.sink)(&t);
                            self.steps.insert(id.clone(), msg);
                        }
                    }
                    Mode::Quiet => {}
                }
            }
            Event::Retrying {
                id, attempt, wait, ..
            } => {
                let clock = self.clock();
                self.line(&format!(
                    "[{clock}] {id}: transient failure; attempt {attempt} in {}",
                    fmt_duration(*wait)
                ));
            }
            Event::Requeued {
                id, from, reason, ..
            } => {
                let clock = self.clock();
                self.line(&format!(
                    "[{clock}] {id}: engine {from} lost it ({reason}); back in the queue"
                ));
            }
            Event::EngineDown {
                engine,
                reason,
                left,
            } => {
                let then = match left {
                    0 => "no engine is left: the cells not yet built fail".to_string(),
                    1 => "its unfinished cells go to the one engine left".to_string(),
                    n => format!("its unfinished cells go to the {n} engines left"),
                };
                let clock = self.clock();
                self.line(&format!(
                    "[{clock}] engine {engine} is down: {reason}; {then}"
                ));
            }
            Event::Finished(o) => self.finished(o),
        }
    }

    fn clock(&self) -> String {
        fmt_duration(self.started.elapsed())
    }

    fn finished(&mut self, o: &Outcome) {
        let counts = matches!(o.job, JobKind::Cell(_));
        if counts {
            self.done += 1;
            if !o.status.succeeded() {
                self.failed += 1;
            }
        }
        if o.status == Status::NotStarted {
            // a stopped run: the summary counts these; one line each would be noise
            return;
        }
        let status = match o.status {
            Status::Built | Status::UpToDate => self.paint(o.status.as_str(), "32"),
            Status::NotStarted | Status::Cancelled => self.paint(o.status.as_str(), "33"),
            _ => self.paint(o.status.as_str(), "31"),
        };
        let text = format!(
            "[{}] finished {} {status} in {}",
            self.clock(),
            o.id,
            fmt_duration(o.duration)
        );
        let (done, failed) = (self.done, self.failed);
        match &mut self.mode {
            Mode::Bars { root, lines, multi } => {
                if let Some(pb) = lines.remove(&o.id) {
                    pb.finish_and_clear();
                    multi.remove(&pb);
                }
                if counts {
                    root.set_position(done as u64);
                    root.set_message(if failed > 0 {
                        format!("({failed} failed)")
                    } else {
                        String::new()
                    });
                }
                let _ = multi.println(text);
            }
            Mode::Plain => (self.sink)(&text),
            Mode::Quiet => {
                if !o.status.succeeded() && o.status != Status::NotStarted {
                    (self.sink)(&text);
                }
            }
        }
    }

    /// A failed build: its last lines between rulers, the log and how to reproduce it.
    pub fn failure(&mut self, o: &Outcome, log: &str, repro: &str) {
        let rule = "─".repeat(78);
        let mut s = format!(
            "\n{} {} ({})\n{rule}\n",
            self.paint("✗", "31"),
            o.id,
            o.reason.clone().unwrap_or_default()
        );
        for l in o.tail.iter().rev().take(20).rev() {
            s.push_str(l);
            s.push('\n');
        }
        s.push_str(&format!("{rule}\nfull log: {log}\nreproduce: {repro}\n"));
        self.line(&s);
    }

    /// Clear every bar (running lines included) and route lines to stderr again.
    pub fn finish(&mut self) {
        if let Mode::Bars { root, lines, multi } = &mut self.mode {
            for (_, pb) in lines.drain() {
                pb.finish_and_clear();
                multi.remove(&pb);
            }
            root.finish_and_clear();
            let _ = multi.clear();
        }
        term::detach();
    }

    pub fn summary(&mut self, m: &Manifest, manifest_path: &str) {
        let order = [
            Status::Built,
            Status::UpToDate,
            Status::Failed,
            Status::TimedOut,
            Status::Cancelled,
            Status::NotStarted,
            Status::Excluded,
        ];
        let parts: Vec<String> = order
            .iter()
            .map(|s| (s, m.count(*s)))
            .filter(|(_, n)| *n > 0)
            .map(|(s, n)| format!("{n} {}", s.as_str()))
            .collect();
        // With several engines: where the cells went, and which engines were lost.
        let engines: Vec<String> = m
            .engines
            .iter()
            .map(|e| {
                let n = m
                    .cells
                    .iter()
                    .filter(|c| c.engine.as_deref() == Some(e.name.as_str()))
                    .count();
                match &e.down {
                    Some(why) => format!("{} {n} (down: {why})", e.name),
                    None => format!("{} {n}", e.name),
                }
            })
            .collect();
        let requeued: usize = m.cells.iter().map(|c| c.requeued.len()).sum();
        let placement = if engines.len() > 1 {
            format!(
                "\nengines: {}{}",
                engines.join(", "),
                if requeued > 0 {
                    format!("; {requeued} build(s) requeued from a lost engine")
                } else {
                    String::new()
                }
            )
        } else {
            String::new()
        };
        let text = format!(
            "\n{} cell{} in {}: {}{placement}\nmanifest: {manifest_path}",
            self.total,
            if self.total == 1 { "" } else { "s" },
            fmt_duration(self.started.elapsed()),
            parts.join(", ")
        );
        self.line(&text);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Arc, Mutex};

    fn reporter(quiet: bool) -> (Reporter, Arc<Mutex<Vec<String>>>) {
        let lines = Arc::new(Mutex::new(Vec::new()));
        let l = lines.clone();
        let r = Reporter::plain_into(
            2,
            quiet,
            Box::new(move |t: &str| l.lock().unwrap().push(t.to_string())),
        );
        (r, lines)
    }

    fn finished(i: usize, id: &str, status: Status) -> Event {
        Event::Finished(Outcome {
            status,
            attempts: 1,
            ..Outcome::not_started(JobKind::Cell(i), id)
        })
    }

    #[test]
    fn plain_lines_say_what_happened_once_per_step() {
        let (mut r, lines) = reporter(false);
        r.event(&Event::Started {
            job: JobKind::Cell(0),
            id: "a".into(),
            attempt: 1,
            engine: "e".into(),
        });
        let step = crate::run::executor::Step {
            index: 2,
            total: 5,
            text: "RUN x".into(),
        };
        for _ in 0..3 {
            r.event(&Event::Step {
                job: JobKind::Cell(0),
                id: "a".into(),
                step: step.clone(),
            });
        }
        r.event(&Event::EngineDown {
            engine: "e".into(),
            reason: "gone".into(),
            left: 0,
        });
        r.event(&finished(0, "a", Status::Built));
        r.event(&Event::Finished(Outcome {
            status: Status::Failed,
            ..Outcome::not_started(JobKind::Stage(0), "debian12 amd64 · OS layer")
        }));
        let l = lines.lock().unwrap();
        assert_eq!(l.len(), 5, "{l:?}");
        assert!(l[0].ends_with("started a"));
        assert!(
            l[1].ends_with("a step 2/5 RUN x"),
            "one line per step change"
        );
        assert!(l[2].contains("no engine is left"), "{}", l[2]);
        assert!(l[3].contains("finished a built"));
        assert!(l[4].contains("debian12 amd64 · OS layer failed"));
        assert_eq!((r.done, r.failed), (1, 0), "a shared stage is not a cell");
    }

    #[test]
    fn quiet_keeps_failures_and_the_summary() {
        let (mut r, lines) = reporter(true);
        r.event(&finished(0, "a", Status::Built));
        r.event(&finished(1, "b", Status::Failed));
        let mut m = Manifest::new("m.yaml", "0", None);
        m.cells.push(crate::manifest::CellRecord {
            status: Status::Failed,
            ..crate::manifest::CellRecord::new("b", Default::default())
        });
        r.summary(&m, "out/manifest.json");
        let l = lines.lock().unwrap();
        assert_eq!(l.len(), 2, "{l:?}");
        assert!(l[0].contains("finished b failed"));
        assert!(l[1].contains("2 cells in") && l[1].contains("1 failed"));
        assert!(l[1].ends_with("manifest: out/manifest.json"));
    }
}
