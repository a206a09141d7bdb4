//! The scheduler: runs jobs on one or more Docker engines, each with its own number
//! of build slots (rayon workers), in plan order, with retries, timeouts, fail-fast and
//! cancellation. It never touches the terminal or the manifest: it emits [`Event`]s,
//! which the caller's thread turns into progress lines and manifest updates.
//!
//! Invariants:
//! - Cells that share a base (their `affinity`) go to the engine that already holds
//!   that base's layers; another engine takes one only when it would otherwise idle.
//! - Shared stages (`warm` groups) are built once per engine, before the first of their
//!   cells runs there, so that cells of one base do not race to build the same layers;
//!   a shared stage that fails on its own fails its member cells without running them.
//! - An engine that stops answering is marked down for the rest of the run; a cell lost
//!   with it goes back to the queue (its attempt counts, and the loss is recorded).
//! - Every cell ends with exactly one outcome; `Finished` is emitted once per cell.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU8, Ordering};
use std::sync::{mpsc, Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use crate::docker::Stop;
use crate::executor::{AttemptEnd, Executor, Job, Step};
use crate::manifest::{Requeue, Status};

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
    /// How often every engine is asked whether it still answers (several engines
    /// only; zero turns the check off).
    pub engine_check: Duration,
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
    /// The engine that ran (or holds) it.
    pub engine: Option<String>,
    pub requeues: Vec<Requeue>,
}

#[derive(Clone, Debug)]
pub enum Event {
    Started {
        id: String,
        attempt: u32,
        engine: String,
    },
    /// A cell lost with its engine, back in the queue.
    Requeued {
        id: String,
        from: String,
        reason: String,
    },
    EngineDown {
        engine: String,
        reason: String,
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

/// An engine as the scheduler sees it: a name, an executor bound to its daemon and
/// how many builds it runs at once.
pub struct Engine<'a> {
    pub name: String,
    pub exec: &'a dyn Executor,
    pub jobs: usize,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Task {
    Warm(usize),
    Cell(usize),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum WarmState {
    Running,
    Done,
    Failed,
}

/// What the workers share, behind one lock. Cells are in plan order; `bound` maps a
/// cell's affinity (its base) to the engine that holds that base's layers.
struct State {
    pending: Vec<bool>,
    running: Vec<Option<usize>>,
    results: Vec<Option<Outcome>>,
    attempts: Vec<u32>,
    requeues: Vec<Vec<Requeue>>,
    warm: HashMap<(usize, usize), WarmState>,
    bound: HashMap<String, usize>,
    down: Vec<Option<String>>,
    busy: Vec<usize>,
}

struct Shared<'a> {
    engines: &'a [Engine<'a>],
    warm: Vec<&'a Warm>,
    /// Per cell: the shared stages (indexes into `warm`) it needs, in build order.
    needs: Vec<Vec<usize>>,
    jobs: &'a [Job],
    opts: &'a Options,
    cancel: &'a Cancel,
    state: Mutex<State>,
    wake: Condvar,
}

type Tx = mpsc::Sender<Event>;

/// Run everything on the given engines; `on_event` is called on the caller's thread,
/// in arrival order. Returns one outcome per cell job, in job order.
///
/// Workers (one per build slot of each engine) take the next task for their engine:
/// first cells of bases bound to it, then a base nobody holds yet (bound to the least
/// loaded engine), and only when the engine would otherwise sit idle, cells queued
/// behind a saturated engine. A cell's shared stages are built once per engine, just
/// before the first of its cells runs there. An engine that stops answering is marked
/// down and its unfinished cells go back to the queue.
pub fn run(
    engines: &[Engine],
    warm_phases: &[Vec<Warm>],
    jobs: &[Job],
    opts: &Options,
    cancel: &Cancel,
    on_event: &mut dyn FnMut(&Event),
) -> Vec<Outcome> {
    let warm: Vec<&Warm> = warm_phases.iter().flatten().collect();
    let mut needs = vec![Vec::new(); jobs.len()];
    for (w, wm) in warm.iter().enumerate() {
        for &m in &wm.members {
            needs[m].push(w);
        }
    }
    let mut st = State {
        pending: vec![true; jobs.len()],
        running: vec![None; jobs.len()],
        results: vec![None; jobs.len()],
        attempts: vec![0; jobs.len()],
        requeues: vec![Vec::new(); jobs.len()],
        warm: HashMap::new(),
        bound: HashMap::new(),
        down: vec![None; engines.len()],
        busy: vec![0; engines.len()],
    };
    if engines.is_empty() {
        return jobs.iter().map(|j| not_started(&j.id)).collect();
    }
    // Up-to-date cells first, so that a nightly where nothing changed builds no shared
    // stage at all. The checks are independent, so they run on the pool too. A base
    // whose cells are already on an engine stays bound to that engine.
    if !opts.force {
        use rayon::prelude::*;
        let check = |j: &Job| {
            engines
                .iter()
                .enumerate()
                .find_map(|(e, eng)| up_to_date(j, eng).map(|o| (e, o)))
        };
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(opts.jobs.clamp(1, 8))
            .build();
        let fresh: Vec<Option<(usize, Outcome)>> = match pool {
            Ok(p) => p.install(|| jobs.par_iter().map(check).collect()),
            Err(_) => jobs.iter().map(check).collect(),
        };
        for (i, o) in fresh.into_iter().enumerate() {
            if let Some((e, o)) = o {
                on_event(&Event::Finished(o.clone()));
                st.bound.entry(jobs[i].affinity.clone()).or_insert(e);
                st.pending[i] = false;
                st.results[i] = Some(o);
            }
        }
    }
    let shared = Shared {
        engines,
        warm,
        needs,
        jobs,
        opts,
        cancel,
        state: Mutex::new(st),
        wake: Condvar::new(),
    };
    let slots: usize = engines.iter().map(|e| e.jobs.max(1)).sum();
    let all_done = AtomicBool::new(false);
    let (tx, rx) = mpsc::channel::<Event>();
    std::thread::scope(|s| {
        let (shared, all_done) = (&shared, &all_done);
        let txw = tx.clone();
        s.spawn(move || {
            let pool = match rayon::ThreadPoolBuilder::new().num_threads(slots).build() {
                Ok(p) => p,
                Err(_) => return,
            };
            pool.scope(|ps| {
                for (e, eng) in engines.iter().enumerate() {
                    for _ in 0..eng.jobs.max(1) {
                        let tx = txw.clone();
                        ps.spawn(move |_| shared.worker(e, &tx));
                    }
                }
            });
            all_done.store(true, Ordering::SeqCst);
        });
        if engines.len() > 1 && !opts.engine_check.is_zero() {
            let tx = tx.clone();
            s.spawn(move || shared.monitor(all_done, &tx));
        }
        drop(tx);
        for ev in rx {
            on_event(&ev);
        }
    });
    let st = shared.state.into_inner().unwrap_or_else(|p| p.into_inner());
    st.results
        .into_iter()
        .zip(jobs)
        .zip(st.requeues)
        .map(|((r, j), rq)| {
            r.unwrap_or_else(|| Outcome {
                requeues: rq,
                ..not_started(&j.id)
            })
        })
        .collect()
}

impl Shared<'_> {
    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn worker(&self, e: usize, tx: &Tx) {
        loop {
            let task = {
                let mut st = self.lock();
                loop {
                    let finished =
                        !st.pending.iter().any(|p| *p) && st.running.iter().all(Option::is_none);
                    if st.down[e].is_some() || self.cancel.is_set() || finished {
                        self.wake.notify_all();
                        return;
                    }
                    if let Some(t) = self.pick(&st, e) {
                        self.begin(&mut st, t, e);
                        // a new binding or a busier engine changes what the others pick
                        self.wake.notify_all();
                        break t;
                    }
                    self.fail_if_stuck(&mut st, tx);
                    st = self
                        .wake
                        .wait_timeout(st, Duration::from_millis(50))
                        .map(|r| r.0)
                        .unwrap_or_else(|p| p.into_inner().0);
                }
            };
            let eng = &self.engines[e];
            let down = || self.lock().down[e].is_some();
            let (job, first) = match task {
                Task::Warm(w) => (&self.warm[w].job, 1),
                Task::Cell(i) => (&self.jobs[i], self.lock().attempts[i] + 1),
            };
            let ran = run_job(job, eng, first, self.opts, self.cancel, &down, &|ev| {
                let _ = tx.send(ev);
            });
            let mut st = self.lock();
            self.end(&mut st, task, e, ran, tx);
            self.wake.notify_all();
        }
    }

    /// Every few seconds ask each engine whether it answers; two misses in a row mark it
    /// down (a daemon that hangs never fails the builds on it by itself).
    fn monitor(&self, all_done: &AtomicBool, tx: &Tx) {
        let mut misses = vec![0u32; self.engines.len()];
        let mut next = Instant::now() + self.opts.engine_check;
        while !all_done.load(Ordering::SeqCst) {
            if Instant::now() < next {
                std::thread::sleep(Duration::from_millis(50));
                continue;
            }
            next = Instant::now() + self.opts.engine_check;
            for (e, eng) in self.engines.iter().enumerate() {
                if self.lock().down[e].is_some() {
                    continue;
                }
                match eng.exec.alive() {
                    Ok(()) => misses[e] = 0,
                    Err(why) => {
                        misses[e] += 1;
                        if misses[e] >= 2 {
                            let mut st = self.lock();
                            self.mark_down(&mut st, e, &format!("stopped answering: {why}"), tx);
                            self.wake.notify_all();
                        }
                    }
                }
            }
        }
    }

    fn affinity_of(&self, i: usize) -> &str {
        &self.jobs[i].affinity
    }

    /// The next thing engine `e` should do for cell `i`: a shared stage it still lacks,
    /// or the cell itself; None while one of its shared stages is being built there.
    fn task_for(&self, st: &State, i: usize, e: usize) -> Option<Task> {
        for &w in &self.needs[i] {
            match st.warm.get(&(w, e)) {
                Some(WarmState::Done) => {}
                Some(_) => return None,
                None => return Some(Task::Warm(w)),
            }
        }
        Some(Task::Cell(i))
    }

    fn load(&self, st: &State, e: usize) -> f64 {
        let queued = (0..self.jobs.len())
            .filter(|&i| st.pending[i] && st.bound.get(self.affinity_of(i)) == Some(&e))
            .count();
        (queued + st.busy[e]) as f64 / self.engines[e].jobs.max(1) as f64
    }

    fn has_free_slot(&self, st: &State, e: usize) -> bool {
        st.down[e].is_none() && st.busy[e] < self.engines[e].jobs.max(1)
    }

    fn pick(&self, st: &State, e: usize) -> Option<Task> {
        let pending = || (0..self.jobs.len()).filter(|&i| st.pending[i]);
        // 1. cells whose base this engine already holds
        for i in pending().filter(|&i| st.bound.get(self.affinity_of(i)) == Some(&e)) {
            if let Some(t) = self.task_for(st, i, e) {
                return Some(t);
            }
        }
        // 2. a base nobody holds: it goes to the least loaded engine with a free slot
        if let Some(i) = pending().find(|&i| !st.bound.contains_key(self.affinity_of(i))) {
            let groups = |f: usize| st.bound.values().filter(|o| **o == f).count();
            let best = (0..self.engines.len())
                .filter(|&f| self.has_free_slot(st, f))
                .min_by(|&a, &b| {
                    self.load(st, a)
                        .total_cmp(&self.load(st, b))
                        .then(groups(a).cmp(&groups(b)))
                });
            if best == Some(e) {
                return self.task_for(st, i, e);
            }
        }
        // 3. rather than sit idle, take a cell queued behind a saturated engine: one
        // this engine can start as is, or, when the queue is long enough to repay
        // building that base's shared stages here too, the first of those stages
        for i in pending() {
            let Some(f) = st.bound.get(self.affinity_of(i)).copied() else {
                continue;
            };
            if f == e || self.has_free_slot(st, f) {
                continue;
            }
            match self.task_for(st, i, e) {
                Some(t @ Task::Cell(_)) => return Some(t),
                Some(t @ Task::Warm(_)) if self.long_queue(st, i, f) => return Some(t),
                _ => {}
            }
        }
        None
    }

    /// Whether the cells of `i`'s base waiting for engine `f` are more than two rounds
    /// of its slots. Below that, `f` starts them about as soon as another engine could
    /// finish building the base's shared stages (measured: with 4 cells of one base on
    /// two one-core engines of 2 slots, the second engine built the stages and never
    /// got a cell), so building them twice would only cost.
    fn long_queue(&self, st: &State, i: usize, f: usize) -> bool {
        let a = self.affinity_of(i);
        let waiting = (0..self.jobs.len())
            .filter(|&j| st.pending[j] && self.affinity_of(j) == a)
            .count();
        waiting > 2 * self.engines[f].jobs.max(1)
    }

    fn begin(&self, st: &mut State, t: Task, e: usize) {
        st.busy[e] += 1;
        match t {
            Task::Warm(w) => {
                st.warm.insert((w, e), WarmState::Running);
                for &m in &self.warm[w].members {
                    st.bound.entry(self.jobs[m].affinity.clone()).or_insert(e);
                }
            }
            Task::Cell(i) => {
                st.pending[i] = false;
                st.running[i] = Some(e);
                st.bound.entry(self.jobs[i].affinity.clone()).or_insert(e);
            }
        }
    }

    fn end(&self, st: &mut State, t: Task, e: usize, ran: Ran, tx: &Tx) {
        st.busy[e] = st.busy[e].saturating_sub(1);
        let lost = ran.engine_down.is_some() || st.down[e].is_some();
        if let Some(why) = &ran.engine_down {
            self.mark_down(st, e, why, tx);
        }
        match t {
            Task::Warm(w) => {
                if lost {
                    st.warm.remove(&(w, e));
                } else if ran.outcome.status.succeeded() {
                    st.warm.insert((w, e), WarmState::Done);
                } else if ran.outcome.status == Status::Cancelled {
                    st.warm.remove(&(w, e));
                    let _ = tx.send(Event::Finished(ran.outcome));
                } else {
                    st.warm.insert((w, e), WarmState::Failed);
                    self.fail_members(st, w, &ran.outcome, tx);
                    let _ = tx.send(Event::Finished(ran.outcome));
                }
            }
            Task::Cell(i) => {
                st.running[i] = None;
                st.attempts[i] = ran.outcome.attempts;
                if lost {
                    let reason = st.down[e].clone().unwrap_or_default();
                    st.requeues[i].push(Requeue {
                        engine: self.engines[e].name.clone(),
                        reason: reason.clone(),
                        seconds: (ran.outcome.duration.as_secs_f64() * 10.0).round() / 10.0,
                    });
                    if st.down.iter().all(Option::is_some) {
                        self.fail_for_no_engine(st, i, tx);
                    } else if let Some(why) = self.failed_stage(st, i) {
                        self.fail_unrunnable(st, i, why, tx);
                    } else {
                        st.pending[i] = true;
                        let _ = tx.send(Event::Requeued {
                            id: self.jobs[i].id.clone(),
                            from: self.engines[e].name.clone(),
                            reason,
                        });
                    }
                } else {
                    let mut o = ran.outcome;
                    o.requeues = std::mem::take(&mut st.requeues[i]);
                    st.results[i] = Some(o.clone());
                    let _ = tx.send(Event::Finished(o));
                }
            }
        }
    }

    /// A shared stage that failed for a reason of its own fails its waiting members once,
    /// instead of each of them building the same broken layers again.
    fn fail_members(&self, st: &mut State, w: usize, o: &Outcome, tx: &Tx) {
        let wm = self.warm[w];
        for &m in &wm.members {
            if !st.pending[m] {
                continue;
            }
            st.pending[m] = false;
            let status = match o.status {
                Status::NotStarted | Status::Cancelled => o.status,
                _ => Status::Failed,
            };
            let out = Outcome {
                id: self.jobs[m].id.clone(),
                status,
                attempts: 0,
                exit_code: o.exit_code,
                duration: Duration::ZERO,
                tail: o.tail.clone(),
                image: None,
                reason: Some(format!(
                    "shared stage {} {}: {}",
                    wm.job.id,
                    o.status.as_str(),
                    o.reason.clone().unwrap_or_default()
                )),
                verification: None,
                engine: o.engine.clone(),
                requeues: std::mem::take(&mut st.requeues[m]),
            };
            st.results[m] = Some(out.clone());
            let _ = tx.send(Event::Finished(out));
        }
    }

    fn mark_down(&self, st: &mut State, e: usize, why: &str, tx: &Tx) {
        if st.down[e].is_some() {
            return;
        }
        st.down[e] = Some(why.to_string());
        st.bound.retain(|_, owner| *owner != e);
        st.warm.retain(|(_, on), _| *on != e);
        let _ = tx.send(Event::EngineDown {
            engine: self.engines[e].name.clone(),
            reason: why.to_string(),
        });
        if st.down.iter().all(Option::is_some) {
            for i in 0..self.jobs.len() {
                if st.pending[i] {
                    self.fail_for_no_engine(st, i, tx);
                }
            }
        }
    }

    fn fail_for_no_engine(&self, st: &mut State, i: usize, tx: &Tx) {
        let why: Vec<String> = self
            .engines
            .iter()
            .zip(&st.down)
            .map(|(eng, d)| format!("{} ({})", eng.name, d.as_deref().unwrap_or("up")))
            .collect();
        let reason = format!("no engine left to build on: {}", why.join("; "));
        self.fail_unrunnable(st, i, reason, tx);
    }

    /// A pending cell that cannot run any more ends as failed, with why.
    fn fail_unrunnable(&self, st: &mut State, i: usize, reason: String, tx: &Tx) {
        st.pending[i] = false;
        let o = Outcome {
            status: Status::Failed,
            attempts: st.attempts[i],
            reason: Some(reason),
            requeues: std::mem::take(&mut st.requeues[i]),
            ..not_started(&self.jobs[i].id)
        };
        st.results[i] = Some(o.clone());
        let _ = tx.send(Event::Finished(o));
    }

    /// A shared stage of cell `i` that failed on its own on some engine: the cell would
    /// fail the same way anywhere (and that engine would never start it).
    fn failed_stage(&self, st: &State, i: usize) -> Option<String> {
        self.needs[i].iter().find_map(|&w| {
            st.warm.iter().find_map(|((x, on), s)| {
                (*x == w && *s == WarmState::Failed).then(|| {
                    format!(
                        "shared stage {} failed on engine {}",
                        self.warm[w].job.id, self.engines[*on].name
                    )
                })
            })
        })
    }

    /// Defence against a stall: with nothing running anywhere, if no engine that is up
    /// would take any pending cell, those cells can never run; fail them rather than
    /// wait for ever.
    fn fail_if_stuck(&self, st: &mut State, tx: &Tx) {
        if st.busy.iter().any(|b| *b > 0) {
            return;
        }
        let takers = (0..self.engines.len())
            .filter(|&f| st.down[f].is_none())
            .any(|f| self.pick(st, f).is_some());
        if takers {
            return;
        }
        for i in 0..self.jobs.len() {
            if st.pending[i] {
                let why = self
                    .failed_stage(st, i)
                    .unwrap_or_else(|| "no engine that is up can build it".into());
                self.fail_unrunnable(st, i, why, tx);
            }
        }
    }
}

fn up_to_date(job: &Job, eng: &Engine) -> Option<Outcome> {
    let t = Instant::now();
    eng.exec.up_to_date(job).then(|| Outcome {
        duration: t.elapsed(),
        image: eng.exec.image_info(job),
        engine: Some(eng.name.clone()),
        status: Status::UpToDate,
        ..not_started(&job.id)
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
        engine: None,
        requeues: Vec::new(),
    }
}

/// One job's run on one engine, and whether the engine turned out to be gone.
struct Ran {
    outcome: Outcome,
    engine_down: Option<String>,
}

fn run_job(
    job: &Job,
    eng: &Engine,
    first_attempt: u32,
    opts: &Options,
    cancel: &Cancel,
    down: &(dyn Fn() -> bool + Sync),
    emit: &dyn Fn(Event),
) -> Ran {
    let start = Instant::now();
    let exec = eng.exec;
    let mut attempt = first_attempt - 1;
    loop {
        attempt += 1;
        emit(Event::Started {
            id: job.id.clone(),
            attempt,
            engine: eng.name.clone(),
        });
        let t0 = Instant::now();
        let stop = || {
            if cancel.is_set() || down() {
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
        let outcome = |status, exit_code, reason, tail: Vec<String>| Outcome {
            id: job.id.clone(),
            status,
            attempts: attempt,
            exit_code,
            duration: start.elapsed(),
            tail,
            image: None,
            reason,
            verification: None,
            engine: Some(eng.name.clone()),
            requeues: Vec::new(),
        };
        // A failure may be the engine's, not the build's: ask it before blaming the cell.
        let engine_gone = match &r.end {
            AttemptEnd::Failed { .. } | AttemptEnd::Error(_) => exec.alive().err(),
            AttemptEnd::Cancelled if !cancel.is_set() && down() => {
                Some("marked down by the health check".into())
            }
            _ => None,
        };
        if let Some(why) = engine_gone {
            return Ran {
                outcome: outcome(Status::Failed, None, Some(why.clone()), r.tail),
                engine_down: Some(why),
            };
        }
        let (status, code, reason) = match &r.end {
            AttemptEnd::Succeeded => (Status::Built, Some(0), None),
            AttemptEnd::Failed {
                exit_code,
                transient,
            } => {
                if *transient && attempt < first_attempt + opts.retries && !cancel.is_set() {
                    let wait = opts.backoff * 2u32.saturating_pow(attempt - first_attempt);
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
        let mut o = outcome(status, code, reason, r.tail);
        if status == Status::Built {
            o.image = exec.image_info(job);
        }
        if opts.verify && status == Status::Built && !cancel.is_set() && job.primary_tag.is_some() {
            emit(Event::Step {
                id: job.id.clone(),
                step: Step {
                    index: 1,
                    total: 1,
                    text: "verifying the image".into(),
                },
            });
            o.verification = exec.verify(job, cancel);
        }
        o.duration = start.elapsed();
        return Ran {
            outcome: o,
            engine_down: None,
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
            affinity: String::new(),
        }
    }

    /// A job of base `base`.
    fn on(id: &str, base: &str) -> Job {
        Job {
            affinity: base.into(),
            ..job(id)
        }
    }

    /// One engine with `opts.jobs` slots.
    fn run1(
        warm: &[Vec<Warm>],
        jobs: &[Job],
        exec: &dyn Executor,
        opts: &Options,
        cancel: &Cancel,
        on_event: &mut dyn FnMut(&Event),
    ) -> Vec<Outcome> {
        let engines = [Engine {
            name: "only".into(),
            exec,
            jobs: opts.jobs,
        }];
        run(&engines, warm, jobs, opts, cancel, on_event)
    }

    fn two<'a>(a: &'a FakeExecutor, b: &'a FakeExecutor, jobs: usize) -> [Engine<'a>; 2] {
        [
            Engine {
                name: "a".into(),
                exec: a,
                jobs,
            },
            Engine {
                name: "b".into(),
                exec: b,
                jobs,
            },
        ]
    }

    /// Engines a and b with `slots` builds each; events dropped.
    fn run2(
        a: &FakeExecutor,
        b: &FakeExecutor,
        slots: usize,
        warm: &[Vec<Warm>],
        jobs: &[Job],
    ) -> Vec<Outcome> {
        run(
            &two(a, b, slots),
            warm,
            jobs,
            &opts(slots),
            &Cancel::default(),
            &mut |_| {},
        )
    }

    fn calls(f: &FakeExecutor) -> Vec<String> {
        let mut c = f.calls.lock().unwrap().clone();
        c.sort();
        c
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
            engine_check: Duration::from_millis(20),
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
        let o = run1(&[], &jobs, &fake, &opts(1), &Cancel::default(), &mut |e| {
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
        let out = run1(&[], &jobs, &fake, &o, &Cancel::default(), &mut |_| {});
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
        let out = run1(
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
        let out = run1(
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
        let out = run1(
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
        let out = run1(&[], &[job("a")], &fake, &o, &Cancel::default(), &mut |_| {});
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
        let out = run1(
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
        assert_eq!(calls(&fake), ["b#1", "warm#1"]);
    }

    #[test]
    fn cancellation_marks_running_cancelled_and_rest_not_started() {
        let fake = FakeExecutor::default();
        fake.script("a", vec![FakeAttempt::Hang]);
        let cancel = Cancel::default();
        let c2 = cancel.clone();
        let out = run1(
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

    #[test]
    fn cells_of_one_base_stay_on_one_engine() {
        let (a, b) = (FakeExecutor::default(), FakeExecutor::default());
        for id in ["x1", "x2", "y1", "y2"] {
            a.script(id, vec![FakeAttempt::Ok { millis: 30 }]);
            b.script(id, vec![FakeAttempt::Ok { millis: 30 }]);
        }
        let jobs = [on("x1", "X"), on("y1", "Y"), on("x2", "X"), on("y2", "Y")];
        let out = run2(&a, &b, 1, &[], &jobs);
        assert_eq!(statuses(&out), ["built"; 4]);
        let (ca, cb) = (calls(&a), calls(&b));
        assert!(
            (ca == ["x1#1", "x2#1"] && cb == ["y1#1", "y2#1"])
                || (ca == ["y1#1", "y2#1"] && cb == ["x1#1", "x2#1"]),
            "a ran {ca:?}, b ran {cb:?}"
        );
        for o in &out {
            let expect = if ca.contains(&format!("{}#1", o.id)) {
                "a"
            } else {
                "b"
            };
            assert_eq!(o.engine.as_deref(), Some(expect));
        }
    }

    #[test]
    fn shared_stages_are_built_once_per_engine_that_needs_them() {
        let (a, b) = (FakeExecutor::default(), FakeExecutor::default());
        for id in ["x1", "x2", "y1", "y2", "wx", "wy"] {
            a.script(id, vec![FakeAttempt::Ok { millis: 30 }]);
            b.script(id, vec![FakeAttempt::Ok { millis: 30 }]);
        }
        let jobs = [on("x1", "X"), on("x2", "X"), on("y1", "Y"), on("y2", "Y")];
        let warm = vec![vec![
            Warm {
                job: on("wx", "X"),
                members: vec![0, 1],
            },
            Warm {
                job: on("wy", "Y"),
                members: vec![2, 3],
            },
        ]];
        let out = run2(&a, &b, 2, &warm, &jobs);
        assert_eq!(statuses(&out), ["built"; 4]);
        let mut both = [calls(&a), calls(&b)];
        both.sort();
        assert_eq!(
            both,
            [vec!["wx#1", "x1#1", "x2#1"], vec!["wy#1", "y1#1", "y2#1"]]
        );
    }

    #[test]
    fn an_idle_engine_takes_cells_queued_behind_a_busy_one() {
        let (a, b) = (FakeExecutor::default(), FakeExecutor::default());
        let ids = ["x1", "x2", "x3", "x4"];
        for id in ids {
            a.script(id, vec![FakeAttempt::Ok { millis: 40 }]);
            b.script(id, vec![FakeAttempt::Ok { millis: 40 }]);
        }
        let jobs: Vec<Job> = ids.iter().map(|i| on(i, "X")).collect();
        let out = run2(&a, &b, 1, &[], &jobs);
        assert_eq!(statuses(&out), ["built"; 4]);
        let (ca, cb) = (calls(&a), calls(&b));
        assert!(!ca.is_empty() && !cb.is_empty(), "a {ca:?} b {cb:?}");
        assert_eq!(ca.len() + cb.len(), 4, "each cell built once");
    }

    #[test]
    fn a_dead_engine_is_marked_down_and_its_cell_is_requeued() {
        // b already holds base Y (y0 is up to date there), so y1 goes to b, which dies
        let a = FakeExecutor::default();
        let b = FakeExecutor {
            up_to_date: vec!["y0".into()],
            ..Default::default()
        };
        b.script("y1", vec![FakeAttempt::KillEngine]);
        for id in ["x1", "x2"] {
            a.script(id, vec![FakeAttempt::Ok { millis: 30 }]);
        }
        let jobs = [
            on("x1", "X"),
            on("y1", "Y"),
            on("x2", "X"),
            on("y2", "Y"),
            on("y0", "Y"),
        ];
        let mut events = Vec::new();
        let out = run(
            &two(&a, &b, 1),
            &[],
            &jobs,
            &opts(1),
            &Cancel::default(),
            &mut |e| events.push(e.clone()),
        );
        assert_eq!(
            statuses(&out),
            ["built", "built", "built", "built", "up-to-date"]
        );
        let y1 = &out[1];
        assert_eq!(y1.attempts, 2, "the lost attempt counts");
        assert_eq!(y1.requeues.len(), 1);
        let lost = y1.requeues[0].engine.clone();
        assert_eq!(lost, "b");
        assert_eq!(y1.requeues[0].reason, "fake engine is gone");
        assert_eq!(y1.engine.as_deref(), Some("a"));
        assert_eq!(out[3].engine.as_deref(), Some("a"));
        // nothing else ran on the dead engine
        assert_eq!(calls(&b), ["y1#1"]);
        assert!(calls(&a).contains(&"y1#2".to_string()));
        let downs = events
            .iter()
            .filter(|e| matches!(e, Event::EngineDown { engine, .. } if *engine == lost))
            .count();
        assert_eq!(downs, 1);
        assert!(events
            .iter()
            .any(|e| matches!(e, Event::Requeued { id, .. } if id == "y1")));
        let finished = events
            .iter()
            .filter(|e| matches!(e, Event::Finished(_)))
            .count();
        assert_eq!(finished, 5, "one Finished per cell");
    }

    #[test]
    fn the_health_check_catches_an_engine_that_hangs() {
        let a = FakeExecutor::default();
        let b = FakeExecutor {
            up_to_date: vec!["y0".into()],
            ..Default::default()
        };
        b.script("y1", vec![FakeAttempt::FreezeEngine]);
        let jobs = [on("x1", "X"), on("y1", "Y"), on("y0", "Y")];
        let out = run2(&a, &b, 1, &[], &jobs);
        assert_eq!(statuses(&out), ["built", "built", "up-to-date"]);
        assert_eq!(out[1].engine.as_deref(), Some("a"));
        assert_eq!(out[1].requeues.len(), 1);
        assert!(out[1].requeues[0].reason.starts_with("stopped answering"));
    }

    #[test]
    fn with_every_engine_down_the_rest_fails_with_the_reasons() {
        let (a, b) = (FakeExecutor::default(), FakeExecutor::default());
        for f in [&a, &b] {
            f.script("x1", vec![FakeAttempt::KillEngine]);
            f.script("x2", vec![FakeAttempt::KillEngine]);
        }
        let jobs = [on("x1", "X"), on("x2", "X"), on("x3", "X")];
        let out = run2(&a, &b, 1, &[], &jobs);
        assert_eq!(statuses(&out), ["failed"; 3]);
        for o in &out {
            let r = o.reason.as_deref().unwrap();
            assert!(
                r.starts_with("no engine left to build on: a (") && r.contains("; b ("),
                "{r}"
            );
        }
    }

    /// What `by_hand` drives: engines a and b, cells x1 and x2 of one base, both
    /// needing shared stage wx.
    struct Fixture {
        a: FakeExecutor,
        b: FakeExecutor,
        warm: [Warm; 1],
        jobs: [Job; 2],
        opts: Options,
        cancel: Cancel,
    }

    impl Fixture {
        fn new() -> Fixture {
            Fixture {
                a: FakeExecutor::default(),
                b: FakeExecutor::default(),
                warm: [Warm {
                    job: on("wx", "X"),
                    members: vec![0, 1],
                }],
                jobs: [on("x1", "X"), on("x2", "X")],
                opts: opts(1),
                cancel: Cancel::default(),
            }
        }
    }

    /// Shared state for driving `end` and `fail_if_stuck` by hand, nothing running.
    fn by_hand<'a>(f: &'a Fixture, engines: &'a [Engine<'a>]) -> Shared<'a> {
        Shared {
            engines,
            warm: f.warm.iter().collect(),
            needs: vec![vec![0], vec![0]],
            jobs: &f.jobs,
            opts: &f.opts,
            cancel: &f.cancel,
            state: Mutex::new(State {
                pending: vec![false; 2],
                running: vec![None; 2],
                results: vec![None; 2],
                attempts: vec![0; 2],
                requeues: vec![Vec::new(); 2],
                warm: HashMap::new(),
                bound: HashMap::new(),
                down: vec![None; 2],
                busy: vec![0; 2],
            }),
            wake: Condvar::new(),
        }
    }

    #[test]
    fn a_cell_lost_with_its_engine_is_not_requeued_onto_a_failed_shared_stage() {
        let f = Fixture::new();
        let engines = two(&f.a, &f.b, 1);
        let sh = by_hand(&f, &engines);
        let (tx, rx) = mpsc::channel();
        {
            // wx failed on a while x1 ran on b, then b died under x1
            let mut st = sh.lock();
            st.warm.insert((0, 0), WarmState::Failed);
            st.running[0] = Some(1);
            st.busy[1] = 1;
            let ran = Ran {
                outcome: Outcome {
                    attempts: 1,
                    status: Status::Failed,
                    ..not_started("x1")
                },
                engine_down: Some("gone".into()),
            };
            sh.end(&mut st, Task::Cell(0), 1, ran, &tx);
            let r = st.results[0].as_ref().expect("x1 ended");
            assert_eq!(r.status, Status::Failed);
            assert_eq!(
                r.reason.as_deref(),
                Some("shared stage wx failed on engine a")
            );
            assert_eq!(r.requeues.len(), 1, "the loss is still recorded");
            assert!(!st.pending[0]);
        }
        drop(tx);
        assert!(rx
            .iter()
            .any(|e| matches!(e, Event::Finished(o) if o.id == "x1")));
    }

    #[test]
    fn cells_nobody_can_build_fail_instead_of_waiting_for_ever() {
        let f = Fixture::new();
        let engines = two(&f.a, &f.b, 1);
        let sh = by_hand(&f, &engines);
        let (tx, _rx) = mpsc::channel();
        let mut st = sh.lock();
        // x2 pending; b is down and wx failed on a, the only engine left
        st.pending[1] = true;
        st.down[1] = Some("gone".into());
        st.warm.insert((0, 0), WarmState::Failed);
        st.busy[0] = 1;
        sh.fail_if_stuck(&mut st, &tx);
        assert!(st.pending[1], "something still runs: not stuck yet");
        st.busy[0] = 0;
        sh.fail_if_stuck(&mut st, &tx);
        assert!(!st.pending[1]);
        assert_eq!(
            st.results[1].as_ref().unwrap().reason.as_deref(),
            Some("shared stage wx failed on engine a")
        );
    }

    #[test]
    fn an_idle_engine_builds_another_base_s_stages_only_for_a_long_queue() {
        for (cells, b_helps) in [(4, false), (7, true)] {
            let (a, b) = (FakeExecutor::default(), FakeExecutor::default());
            let jobs: Vec<Job> = (0..cells).map(|i| on(&format!("x{i}"), "X")).collect();
            for f in [&a, &b] {
                f.script("wx", vec![FakeAttempt::Ok { millis: 60 }]);
                for j in &jobs {
                    f.script(&j.id, vec![FakeAttempt::Ok { millis: 40 }]);
                }
            }
            let warm = vec![vec![Warm {
                job: on("wx", "X"),
                members: (0..cells).collect(),
            }]];
            let out = run2(&a, &b, 2, &warm, &jobs);
            assert!(out.iter().all(|o| o.status == Status::Built));
            let cb = calls(&b);
            assert_eq!(
                cb.contains(&"wx#1".to_string()),
                b_helps,
                "{cells} cells: b ran {cb:?}"
            );
            if b_helps {
                assert!(cb.len() > 1, "b built cells too: {cb:?}");
            }
        }
    }
}
