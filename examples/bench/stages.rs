//! Where a `matrix build` spends its time, read from the build logs it writes
//! (`OUT/logs/*.log`), and the lower bound no schedule of the same stages can beat.
//!
//! Every log is one job: a shared stage built once with `--target` (`stage-*.log`) or
//! a cell (`<cell id>.log`). Each non-cached build step goes to one kind of work:
//!
//! | kind | Dockerfile steps |
//! |---|---|
//! | OS layer | stage `system` |
//! | Miniconda | stage `conda` up to pip's first line |
//! | pip fetch | stage `conda`, pip resolving and downloading (to `Installing collected packages`) |
//! | pip install | stage `conda` from there: unpacking and writing the packages, then the rest of the step |
//! | variant | the final stage's `variant/` steps |
//! | finalize | the rest of the final stage (boot files, ENV, labels) |
//! | export | a cell's image written out (`exporting to image`; legacy: `Successfully built` to the end) |
//!
//! Step times: the legacy builder's from the time each `Step k/n` line appeared (the
//! watcher's stamps, 100 ms apart); BuildKit's from its own `#N DONE x.ys` and the
//! `#N <seconds> <output>` offsets. What a job's window holds beyond that work is its
//! overhead: steps answered from the cache, context upload, a stage job's export
//! (the cells export the image; a `--target` stage's export is only there because the
//! stage is built as a job of its own).

use std::collections::BTreeMap;

/// A kind of build work.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Os,
    Miniconda,
    PipFetch,
    PipInstall,
    Variant,
    Finalize,
    Export,
}

pub const KINDS: [Kind; 7] = [
    Kind::Os,
    Kind::Miniconda,
    Kind::PipFetch,
    Kind::PipInstall,
    Kind::Variant,
    Kind::Finalize,
    Kind::Export,
];

impl Kind {
    pub fn label(self) -> &'static str {
        match self {
            Kind::Os => "OS layer",
            Kind::Miniconda => "Miniconda",
            Kind::PipFetch => "pip fetch",
            Kind::PipInstall => "pip install",
            Kind::Variant => "variant",
            Kind::Finalize => "finalize",
            Kind::Export => "export",
        }
    }
}

/// Seconds per kind of work.
pub type Work = [f64; 7];

/// One build job, from its log.
#[derive(Clone, Debug, Default)]
pub struct Job {
    /// The job as the tool names it (cell id, or `debian12 amd64 · OS layer`).
    pub id: String,
    /// A shared stage built with `--target` (its export is overhead: the cells export).
    pub stage_job: bool,
    /// Seconds since the run started: the log's header, and its last line.
    pub start: f64,
    pub end: f64,
    pub work: Work,
    /// Steps the builder answered from its cache, and the time they took.
    pub cached: u32,
    pub cached_secs: f64,
    /// A `--target` stage job's export (part of the overhead).
    pub stage_export: f64,
    /// Legacy builder: the time spent committing containers to layers after their
    /// command ended (part of the work above, shown on its own).
    pub commit: f64,
}

impl Job {
    pub fn total_work(&self) -> f64 {
        self.work.iter().sum()
    }

    /// The job's window beyond its work.
    pub fn overhead(&self) -> f64 {
        (self.end - self.start - self.total_work()).max(0.0)
    }
}

const HEADER: &str = "# image-matrix build log: ";

/// The job a log describes (its last attempt), or None if it holds no attempt.
pub fn parse(lines: &[(f64, String)], stage_job: bool, buildkit: bool) -> Option<Job> {
    let at = lines.iter().rposition(|(_, l)| l.starts_with(HEADER))?;
    let (start, header) = &lines[at];
    let id = header[HEADER.len()..]
        .rsplit_once(" (attempt ")
        .map_or(&header[HEADER.len()..], |(id, _)| id);
    let body = &lines[at + 1..];
    let mut job = Job {
        id: id.to_string(),
        stage_job,
        start: *start,
        end: body.last().map_or(*start, |(t, _)| *t),
        ..Job::default()
    };
    if buildkit {
        buildkit_steps(body, &mut job);
    } else {
        legacy_steps(body, &mut job);
    }
    Some(job)
}

/// Whether pip has started: its first line of output.
fn pip_started(line: &str) -> bool {
    let l = line.trim_start();
    [
        "Collecting ",
        "Looking in indexes",
        "Requirement already satisfied",
        "Processing ",
        "Obtaining ",
    ]
    .iter()
    .any(|p| l.starts_with(p))
}

/// Which Dockerfile stage a `FROM` line starts: its `AS` name, or `final`.
fn stage_of_from(instruction: &str) -> Option<String> {
    let words: Vec<&str> = instruction.split_whitespace().collect();
    if !words.first()?.eq_ignore_ascii_case("FROM") {
        return None;
    }
    Some(
        match words.iter().position(|w| w.eq_ignore_ascii_case("AS")) {
            Some(i) => words.get(i + 1).unwrap_or(&"final").to_lowercase(),
            None => "final".to_string(),
        },
    )
}

/// pip's install phase: it has resolved and downloaded everything.
fn pip_installing(line: &str) -> bool {
    line.trim_start()
        .starts_with("Installing collected packages")
}

/// Where pip's phases start in a step, in seconds since the step started.
#[derive(Clone, Copy, Debug, Default)]
struct Marks {
    pip: Option<f64>,
    install: Option<f64>,
}

impl Marks {
    fn see(&mut self, at: f64, line: &str) {
        if self.pip.is_none() && pip_started(line) {
            self.pip = Some(at);
        } else if self.pip.is_some() && self.install.is_none() && pip_installing(line) {
            self.install = Some(at);
        }
    }
}

/// Book `secs` of a step of `stage` running `instruction`. In stage `conda`, the
/// time before pip's first line is Miniconda's, then pip's phases follow (`marks`).
fn book(job: &mut Job, stage: &str, instruction: &str, secs: f64, marks: Marks) {
    let secs = secs.max(0.0);
    let k = |k: Kind| k as usize;
    match stage {
        "system" => job.work[k(Kind::Os)] += secs,
        "conda" => {
            let pip = marks.pip.map_or(secs, |p| p.clamp(0.0, secs));
            let install = marks.install.map_or(secs, |p| p.clamp(pip, secs));
            job.work[k(Kind::Miniconda)] += pip;
            job.work[k(Kind::PipFetch)] += install - pip;
            job.work[k(Kind::PipInstall)] += secs - install;
        }
        _ if instruction.contains("variant") || stage_of_from(instruction).is_some() => {
            job.work[k(Kind::Variant)] += secs
        }
        _ => job.work[k(Kind::Finalize)] += secs,
    }
}

struct LegacyStep {
    start: f64,
    instruction: String,
    stage: String,
    cached: bool,
    /// Stamps of pip's phases (seconds since the run started).
    marks: Marks,
    /// When the step's command last printed (or started), and when its container was
    /// removed: the time between is the layer commit.
    last_output: Option<f64>,
    removed: Option<f64>,
}

/// Legacy builder: `Step k/n : INSTRUCTION`, ` ---> Using cache`, `Successfully built`.
fn legacy_steps(body: &[(f64, String)], job: &mut Job) {
    let mut steps: Vec<LegacyStep> = Vec::new();
    let mut stage = String::from("final");
    let mut built_at = None;
    for (t, raw) in body {
        let line = strip_ansi(raw);
        if let Some((_, instruction)) = line.strip_prefix("Step ").and_then(|r| r.split_once(" : "))
        {
            if let Some(s) = stage_of_from(instruction) {
                stage = s;
            }
            steps.push(LegacyStep {
                start: *t,
                instruction: instruction.trim().to_string(),
                stage: stage.clone(),
                cached: false,
                marks: Marks::default(),
                last_output: None,
                removed: None,
            });
        } else if line.starts_with("Successfully built ") {
            built_at.get_or_insert(*t);
        } else if let Some(s) = steps.last_mut() {
            let l = line.trim_start();
            if l.starts_with("---> Using cache") {
                s.cached = true;
            } else if l.starts_with("Removing intermediate container") {
                s.removed = Some(*t);
            } else if !l.starts_with("---> ") || l.starts_with("---> Running in") {
                s.last_output = Some(*t);
                s.marks.see(*t, &line);
            }
        }
    }
    let steps_end = built_at.unwrap_or(job.end);
    for (i, s) in steps.iter().enumerate() {
        let next = steps.get(i + 1).map_or(steps_end, |n| n.start);
        if s.cached {
            job.cached += 1;
            job.cached_secs += next - s.start;
            continue;
        }
        let marks = Marks {
            pip: s.marks.pip.map(|p| p - s.start),
            install: s.marks.install.map(|p| p - s.start),
        };
        book(job, &s.stage, &s.instruction, next - s.start, marks);
        if let (Some(out), Some(removed)) = (s.last_output, s.removed) {
            job.commit += (removed - out).max(0.0);
        }
    }
    if built_at.is_some() {
        let export = job.end - steps_end;
        if job.stage_job {
            job.stage_export += export;
        } else {
            job.work[Kind::Export as usize] += export;
        }
    }
}

#[derive(Default)]
struct Vertex {
    name: String,
    done: Option<f64>,
    cached: bool,
    marks: Marks,
}

/// BuildKit (`--progress=plain`): `#N NAME`, `#N <secs> <output>`, `#N DONE 1.2s`,
/// `#N CACHED`.
fn buildkit_steps(body: &[(f64, String)], job: &mut Job) {
    let mut order: Vec<u32> = Vec::new();
    let mut vertices: BTreeMap<u32, Vertex> = BTreeMap::new();
    for (_, raw) in body {
        let line = strip_ansi(raw);
        let Some((num, rest)) = line.strip_prefix('#').and_then(|r| r.split_once(' ')) else {
            continue;
        };
        let Ok(n) = num.parse::<u32>() else {
            continue;
        };
        let v = vertices.entry(n).or_insert_with(|| {
            order.push(n);
            Vertex {
                name: rest.to_string(),
                ..Vertex::default()
            }
        });
        if rest == "CACHED" {
            v.cached = true;
        } else if let Some(d) = rest.strip_prefix("DONE ") {
            v.done = d.trim_end_matches('s').parse().ok();
        } else if let Some((offset, text)) = rest.split_once(' ') {
            if let Ok(at) = offset.parse() {
                v.marks.see(at, text);
            }
        }
    }
    for n in order {
        let v = &vertices[&n];
        if v.cached {
            job.cached += 1;
            continue;
        }
        let secs = v.done.unwrap_or(0.0);
        if v.name.starts_with("exporting") {
            if job.stage_job {
                job.stage_export += secs;
            } else {
                job.work[Kind::Export as usize] += secs;
            }
            continue;
        }
        // `[system 3/4] RUN …`; `[internal] …` and `[auth] …` are overhead
        let Some((head, instruction)) = v.name.strip_prefix('[').and_then(|r| r.split_once("] "))
        else {
            continue;
        };
        let Some((stage, _)) = head.rsplit_once(' ') else {
            continue;
        };
        book(job, stage, instruction, secs, v.marks);
    }
}

/// Drop terminal escape sequences (the legacy builder colours stderr).
fn strip_ansi(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars().peekable();
    while let Some(c) = chars.next() {
        if c != '\x1b' {
            out.push(c);
            continue;
        }
        if chars.peek() == Some(&'[') {
            chars.next();
            for n in chars.by_ref() {
                if n.is_ascii_alphabetic() {
                    break;
                }
            }
        }
    }
    out
}

/// A cell of the run, as the manifest gives it.
#[derive(Clone, Debug)]
pub struct Cell {
    pub id: String,
    /// `debian12`
    pub os: String,
    /// `debian12 24.5.0-0 py3.11`: the Miniconda stage it builds on.
    pub conda: String,
}

/// A piece of work every schedule has to do once.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Unit {
    Os(String),
    Conda(String),
    Cell(String),
}

/// The stage work of one run and the bound it implies.
#[derive(Clone, Debug)]
pub struct Profile {
    /// Jobs in the order they started.
    pub jobs: Vec<Job>,
    /// Each unit's work, from the first job that did it.
    pub units: BTreeMap<Unit, Work>,
    /// Work done again by a later job (the same unit built twice).
    pub duplicated: f64,
    /// A shared stage's own export (its layers written into the image store), by the
    /// stage it belongs to, from the first job that built it.
    pub stage_exports: BTreeMap<Unit, f64>,
    pub cores: usize,
}

impl Profile {
    pub fn new(mut jobs: Vec<Job>, cells: &[Cell], cores: usize) -> Profile {
        jobs.sort_by(|a, b| a.start.total_cmp(&b.start));
        let mut units: BTreeMap<Unit, Work> = BTreeMap::new();
        let mut duplicated = 0.0;
        let mut stage_exports = BTreeMap::new();
        for j in &jobs {
            let (os, conda) = match cells.iter().find(|c| c.id == j.id) {
                Some(c) => (c.os.clone(), c.conda.clone()),
                None => stage_keys(&j.id),
            };
            if j.stage_job && j.stage_export > 0.0 {
                let unit = if conda.is_empty() {
                    Unit::Os(os.clone())
                } else {
                    Unit::Conda(conda.clone())
                };
                stage_exports.entry(unit).or_insert(j.stage_export);
            }
            for k in KINDS {
                let unit = match k {
                    Kind::Os => Unit::Os(os.clone()),
                    Kind::Miniconda | Kind::PipFetch | Kind::PipInstall => {
                        Unit::Conda(conda.clone())
                    }
                    _ => Unit::Cell(j.id.clone()),
                };
                let secs = j.work[k as usize];
                let slot = &mut units.entry(unit).or_default()[k as usize];
                if *slot > 0.0 {
                    duplicated += secs;
                } else {
                    *slot = secs;
                }
            }
        }
        units.retain(|_, w| w.iter().any(|s| *s > 0.0));
        Profile {
            jobs,
            units,
            duplicated,
            stage_exports,
            cores,
        }
    }

    fn unit(&self, u: &Unit) -> f64 {
        self.units.get(u).map_or(0.0, |w| w.iter().sum())
    }

    /// Work of each kind, every unit once.
    pub fn work_by_kind(&self) -> Work {
        let mut w = Work::default();
        for unit in self.units.values() {
            for (a, b) in w.iter_mut().zip(unit) {
                *a += b;
            }
        }
        w
    }

    pub fn work(&self) -> f64 {
        self.work_by_kind().iter().sum()
    }

    /// The longest chain of dependent stages: OS layer → Miniconda + pip → cell, and
    /// the cell it ends in.
    pub fn chain(&self, cells: &[Cell]) -> (f64, String) {
        cells
            .iter()
            .map(|c| {
                let t = self.unit(&Unit::Os(c.os.clone()))
                    + self.unit(&Unit::Conda(c.conda.clone()))
                    + self.unit(&Unit::Cell(c.id.clone()));
                (t, c.id.clone())
            })
            .max_by(|a, b| a.0.total_cmp(&b.0))
            .unwrap_or_default()
    }

    /// No schedule of these stages on `cores` cores finishes sooner.
    pub fn bound(&self, cells: &[Cell]) -> f64 {
        self.chain(cells).0.max(self.work() / self.cores as f64)
    }

    /// The bound again, with each shared stage's export counted as its work: its
    /// layers have to be written into the image store once whether the stage is built
    /// as a job of its own or inside a cell's build (the first cell exports them).
    pub fn bound_with_exports(&self, cells: &[Cell]) -> f64 {
        let export = |u: &Unit| self.stage_exports.get(u).copied().unwrap_or(0.0);
        let chain = cells
            .iter()
            .map(|c| {
                let (os, conda) = (Unit::Os(c.os.clone()), Unit::Conda(c.conda.clone()));
                self.unit(&os)
                    + export(&os)
                    + self.unit(&conda)
                    + export(&conda)
                    + self.unit(&Unit::Cell(c.id.clone()))
            })
            .fold(0.0, f64::max);
        let work = self.work() + self.stage_exports.values().sum::<f64>();
        chain.max(work / self.cores as f64)
    }
}

/// (OS key, Miniconda key) of a shared stage job: `debian12 amd64 · Miniconda 24.5.0-0
/// py3.11` → (`debian12`, `debian12 24.5.0-0 py3.11`).
fn stage_keys(id: &str) -> (String, String) {
    let os = id.split_whitespace().next().unwrap_or_default().to_string();
    let conda = id
        .split_once("Miniconda ")
        .map(|(_, rest)| {
            let rest = rest.split(" [").next().unwrap_or(rest);
            format!("{os} {rest}")
        })
        .unwrap_or_default();
    (os, conda)
}

/// How the cores' time was spent in a run: `cores × wall = work + overhead + idle −
/// oversubscribed` (the last when more jobs ran than there are cores).
#[derive(Clone, Debug, Default)]
pub struct Slots {
    pub total: f64,
    pub work: f64,
    pub overhead: f64,
    pub idle: f64,
    pub oversubscribed: f64,
    /// Stretches of at least a second with a free core: (from, to, free cores, jobs
    /// running).
    pub gaps: Vec<(f64, f64, usize, Vec<String>)>,
}

pub fn slots(p: &Profile, wall: f64) -> Slots {
    let mut cuts: Vec<f64> = vec![0.0, wall];
    for j in &p.jobs {
        cuts.extend([j.start.clamp(0.0, wall), j.end.clamp(0.0, wall)]);
    }
    cuts.sort_by(f64::total_cmp);
    cuts.dedup();
    let mut s = Slots {
        total: p.cores as f64 * wall,
        work: p.jobs.iter().map(Job::total_work).sum(),
        overhead: p.jobs.iter().map(Job::overhead).sum(),
        ..Slots::default()
    };
    for w in cuts.windows(2) {
        let (a, b) = (w[0], w[1]);
        let running: Vec<String> = p
            .jobs
            .iter()
            .filter(|j| j.start <= a && j.end >= b)
            .map(|j| j.id.clone())
            .collect();
        let free = p.cores.saturating_sub(running.len());
        s.idle += free as f64 * (b - a);
        s.oversubscribed += running.len().saturating_sub(p.cores) as f64 * (b - a);
        if free > 0 {
            match s.gaps.last_mut() {
                Some(g) if g.1 == a && g.2 == free && g.3 == running => g.1 = b,
                _ => s.gaps.push((a, b, free, running)),
            }
        }
    }
    s.gaps.retain(|g| g.1 - g.0 >= 1.0);
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stamped(text: &str) -> Vec<(f64, String)> {
        // "12.5|line": the time the watcher saw the line
        text.lines()
            .map(|l| {
                let (t, s) = l.split_once('|').unwrap();
                (t.parse().unwrap(), s.to_string())
            })
            .collect()
    }

    #[test]
    fn legacy_steps_are_timed_by_when_they_appeared() {
        let log = stamped(
            "0.0|# image-matrix build log: c1 (attempt 1, 2026-11-29T07:00:00Z)\n\
             0.1|Step 1/6 : FROM base AS system\n\
             0.2|Step 2/6 : RUN bash /tmp/image-matrix/system/setup-system.sh\n\
             0.3| ---> Using cache\n\
             0.5|Step 3/6 : FROM system AS conda\n\
             0.6|Step 4/6 : RUN bash /tmp/image-matrix/conda/install-conda.sh\n\
             3.6|stand-in Miniconda 24.5.0-0 (Python 3.11) installed in /opt/miniconda3\n\
             4.6|Collecting jupyterlab\n\
             14.6|Installing collected packages: numpy, jupyterlab\n\
             18.6|Successfully installed numpy jupyterlab\n\
             20.5|Removing intermediate container 4443a6337158\n\
             20.5| ---> 6e78cb5c93aa\n\
             20.6|Step 5/6 : FROM conda\n\
             20.7|Step 6/6 : RUN bash /tmp/image-matrix/variant/install-variant.sh\n\
             30.7|Successfully built 123\n\
             31.0|Successfully tagged x:y",
        );
        let j = parse(&log, false, false).unwrap();
        assert_eq!(j.id, "c1");
        assert_eq!(j.cached, 1);
        let w = |k: Kind| (j.work[k as usize] * 10.0).round() / 10.0;
        assert_eq!(w(Kind::Os), 0.1); // FROM; the RUN was cached
        assert_eq!(w(Kind::Miniconda), 4.1); // FROM + until pip's first line
        assert_eq!(w(Kind::PipFetch), 10.0);
        assert_eq!(w(Kind::PipInstall), 6.0);
        assert!((j.cached_secs - 0.3).abs() < 1e-9);
        assert!((j.commit - 1.9).abs() < 1e-9);
        assert_eq!(w(Kind::Variant), 10.1);
        assert_eq!(w(Kind::Export), 0.3);
        assert!((j.overhead() - 0.4).abs() < 1e-9);
    }

    #[test]
    fn buildkit_steps_use_its_own_durations() {
        let log = stamped(
            "5.0|# image-matrix build log: debian12 amd64 · Miniconda 24.5.0-0 py3.11 (attempt 1, x)\n\
             5.1|#1 [internal] load build definition from Dockerfile\n\
             5.1|#1 DONE 0.1s\n\
             5.2|#5 [system 4/4] RUN bash /tmp/image-matrix/system/setup-system.sh\n\
             5.2|#5 CACHED\n\
             5.3|#7 [conda 3/3] RUN bash /tmp/image-matrix/conda/install-conda.sh\n\
             9.0|#7 3.512 stand-in Miniconda installed\n\
             9.5|#7 4.001 Collecting numpy<2.0\n\
             30.0|#7 24.001 Installing collected packages: numpy\n\
             40.0|#7 DONE 34.2s\n\
             41.0|#8 exporting to image\n\
             42.0|#8 DONE 1.0s",
        );
        let j = parse(&log, true, true).unwrap();
        assert!(j.stage_job);
        assert_eq!(j.cached, 1);
        assert!((j.work[Kind::Miniconda as usize] - 4.001).abs() < 1e-9);
        assert!((j.work[Kind::PipFetch as usize] - 20.0).abs() < 1e-9);
        assert!((j.work[Kind::PipInstall as usize] - 10.199).abs() < 1e-9);
        assert_eq!(j.stage_export, 1.0);
        assert_eq!(
            j.work[Kind::Export as usize],
            0.0,
            "a stage's export is overhead"
        );
        assert_eq!(
            stage_keys(&j.id),
            ("debian12".into(), "debian12 24.5.0-0 py3.11".into())
        );
    }

    #[test]
    fn the_bound_is_the_longest_chain_or_the_work_over_the_cores() {
        let job = |id: &str, s: f64, e: f64, k: Kind, secs: f64| {
            let mut j = Job {
                id: id.into(),
                start: s,
                end: e,
                ..Job::default()
            };
            j.work[k as usize] = secs;
            j
        };
        let jobs = vec![
            job("debian12 amd64 · OS layer", 0.0, 10.0, Kind::Os, 10.0),
            job(
                "debian12 amd64 · Miniconda 1 py3.11",
                10.0,
                40.0,
                Kind::PipFetch,
                30.0,
            ),
            job("a", 40.0, 45.0, Kind::Variant, 5.0),
            job("b", 40.0, 60.0, Kind::Variant, 20.0),
        ];
        let cells = [
            Cell {
                id: "a".into(),
                os: "debian12".into(),
                conda: "debian12 1 py3.11".into(),
            },
            Cell {
                id: "b".into(),
                os: "debian12".into(),
                conda: "debian12 1 py3.11".into(),
            },
        ];
        let p = Profile::new(jobs, &cells, 2);
        assert_eq!(p.work(), 65.0);
        assert_eq!(p.chain(&cells), (60.0, "b".to_string()));
        assert_eq!(p.bound(&cells), 60.0);
        let s = slots(&p, 60.0);
        // 0-40 one job (40 free core-s), 40-45 two, 45-60 one (15)
        assert_eq!(s.idle, 55.0);
        assert_eq!(s.total, s.work + s.overhead + s.idle - s.oversubscribed);
        assert_eq!(s.gaps.len(), 3);
        assert_eq!(Profile::new(p.jobs.clone(), &cells, 1).bound(&cells), 65.0);
        assert_eq!(p.bound_with_exports(&cells), 60.0, "no stage exported");
        // the stages' own exports, 1 s and 3 s, lengthen the chain through them
        let mut jobs = p.jobs.clone();
        for (j, secs) in jobs.iter_mut().zip([1.0, 3.0]) {
            j.stage_job = true;
            j.stage_export = secs;
        }
        let p = Profile::new(jobs, &cells, 2);
        assert_eq!(p.bound(&cells), 60.0);
        assert_eq!(p.bound_with_exports(&cells), 64.0);
    }
}
