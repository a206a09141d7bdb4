//! The scheduler: runs jobs on one or more Docker engines, each with its own number
//! of build slots, heaviest cells first and otherwise in plan order, with retries,
//! timeouts, fail-fast and cancellation.
//! It never touches the terminal or the manifest: it emits [`Event`]s, which the
//! caller's thread hands to the reporter and the manifest recorder.
//!
//! Invariants:
//! - Cells that share a base and platform (their `affinity`) go to the engine that
//!   already holds that base's layers; another engine takes one only when it would
//!   otherwise idle. A cell runs only on an engine that can build its platform.
//! - Shared stages are built once per engine, before the first of their cells runs
//!   there, so that cells of one base do not race to build the same layers; a shared
//!   stage that fails on its own fails its member cells without running them.
//! - An engine that stops answering is marked down for the rest of the run; a cell lost
//!   with it goes back to the queue (its attempt counts, and the loss is recorded).
//! - Every cell ends with exactly one outcome; `Finished` is emitted once per cell,
//!   and once per shared stage and engine that ran it (unless its engine was lost).
//! - Engines, cells, shared stages, lanes, affinity groups and ranks are each numbered
//!   with their own index type (`Per` tables take only theirs), so an index of one
//!   space used in another does not compile.
//!
//! Cost: pending cells sit in lanes (one per affinity and set of shared stages, in
//! rank order: heaviest first, then plan order), so picking the next task looks at lanes, not at every cell.

use std::collections::{BTreeSet, HashMap};
use std::marker::PhantomData;
use std::num::NonZeroUsize;
use std::ops::{Deref, DerefMut, Index, IndexMut};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Condvar, Mutex};
use std::time::{Duration, Instant};

use crate::docker::Stop;
use crate::manifest::{Requeue, Status};
use crate::run::events::{Event, Outcome};
use std::borrow::Cow;

use crate::run::executor::{AttemptEnd, Executor, Job};
use crate::signals::{Cancel, Reason};

/// A number that says what it counts. The scheduler keeps several tables side by
/// side (per engine, per cell, per shared stage, …), and an index of one space used in
/// another indexes the wrong row without a word; with one type per space, and tables
/// that take only their own, that mix-up does not compile.
trait Ix: Copy {
    fn from_raw(raw: usize) -> Self;
    fn raw(self) -> usize;
}

macro_rules! index_space {
    ($($(#[$doc:meta])* $name:ident;)*) => {$(
        $(#[$doc])*
        #[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
        struct $name(usize);

        impl Ix for $name {
            fn from_raw(raw: usize) -> Self {
                $name(raw)
            }
            fn raw(self) -> usize {
                self.0
            }
        }
    )*};
}

index_space! {
    /// An engine: its place in the `engines` the run was given.
    EngineIx;
    /// A cell: its place in the cell `jobs` the run was given (the number
    /// `SharedStage::members` and `Job::parent` hold).
    CellIx;
    /// A shared stage: its place in the `stages` the run was given.
    StageIx;
    /// A lane: cells of one affinity group that need the same shared stages.
    LaneIx;
    /// An affinity group: cells of one base and platform (one `Job::affinity`).
    GroupIx;
    /// A cell's place in the order cells start in (see `Shared::rank`).
    Rank;
}

/// A table with one row per id of one space: owned (`Per<EngineIx, Vec<usize>>`) or
/// borrowed (`Per<EngineIx, &[Engine]>`); indexed only by that space's ids.
#[derive(Clone, Debug)]
struct Per<I, S> {
    items: S,
    ix: PhantomData<fn(I)>,
}

impl<I: Ix, S> Per<I, S> {
    fn new(items: S) -> Self {
        Per {
            items,
            ix: PhantomData,
        }
    }
}

impl<I: Ix, T> Per<I, Vec<T>> {
    fn filled(len: usize, row: T) -> Self
    where
        T: Clone,
    {
        Per::new(vec![row; len])
    }

    /// Add a row; its id.
    fn push(&mut self, row: T) -> I {
        self.items.push(row);
        I::from_raw(self.items.len() - 1)
    }

    fn iter_mut(&mut self) -> std::slice::IterMut<'_, T> {
        self.items.iter_mut()
    }

    fn into_rows(self) -> Vec<T> {
        self.items
    }
}

impl<I: Ix, T, S: Deref<Target = [T]>> Per<I, S> {
    fn len(&self) -> usize {
        self.items.len()
    }

    fn ids(&self) -> impl Iterator<Item = I> {
        (0..self.items.len()).map(I::from_raw)
    }

    fn iter(&self) -> std::slice::Iter<'_, T> {
        self.items.iter()
    }

    fn as_slice(&self) -> &[T] {
        &self.items
    }

    /// The rows with their ids.
    fn rows<'s>(&'s self) -> impl Iterator<Item = (I, &'s T)>
    where
        T: 's,
    {
        self.items
            .iter()
            .enumerate()
            .map(|(i, t)| (I::from_raw(i), t))
    }
}

impl<I: Ix, T, S: Deref<Target = [T]>> Index<I> for Per<I, S> {
    type Output = T;
    fn index(&self, i: I) -> &T {
        &self.items[i.raw()]
    }
}

impl<I: Ix, T, S: DerefMut<Target = [T]>> IndexMut<I> for Per<I, S> {
    fn index_mut(&mut self, i: I) -> &mut T {
        &mut self.items[i.raw()]
    }
}

#[derive(Clone, Debug)]
pub struct Options {
    pub fail_fast: bool,
    pub timeout: Option<Duration>,
    /// Re-tries after transient failures (attempts = retries + 1).
    pub retries: u32,
    /// First back-off; doubles per re-try.
    pub backoff: Duration,
    /// How often every engine is asked whether it still answers (several engines
    /// only; zero turns the check off).
    pub engine_check: Duration,
    /// Threads for the up-front up-to-date checks.
    pub check_threads: NonZeroUsize,
}

/// Layers several cells build on (the OS layer of a base, the Miniconda layer of a
/// base and installer), built once per engine before the first of its cells there.
#[derive(Clone, Debug)]
pub struct SharedStage {
    pub job: Job,
    /// Indexes (into the cell jobs) of the cells that need it.
    pub members: Vec<usize>,
}

/// An engine as the scheduler sees it.
pub struct Engine<'a> {
    pub name: String,
    pub exec: &'a dyn Executor,
    pub slots: NonZeroUsize,
    /// Platforms it can build (natively or emulated); empty means any.
    pub platforms: Vec<String>,
}

impl SharedStage {
    fn member_ids(&self) -> impl Iterator<Item = CellIx> + '_ {
        self.members.iter().map(|&m| CellIx(m))
    }
}

impl Engine<'_> {
    /// Whether jobs of `platform` may be given to it (an engine that names no platform
    /// takes any: unlike `engines::Engine::builds`, which says what a connected engine
    /// can build).
    fn takes_platform(&self, platform: &str) -> bool {
        self.platforms.is_empty() || self.platforms.iter().any(|p| p == platform)
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Task {
    Stage(StageIx),
    Cell(CellIx),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum StageState {
    Running,
    Done,
    Failed,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Phase {
    Pending,
    Running(EngineIx),
    Done,
}

/// Everything the run knows about one cell.
#[derive(Clone, Debug)]
struct CellState {
    phase: Phase,
    attempts: u32,
    requeues: Vec<Requeue>,
    result: Option<Outcome>,
}

/// What the workers share, behind one lock.
struct State {
    cells: Per<CellIx, Vec<CellState>>,
    /// Pending cells of each lane, as their ranks (see `Shared::rank`).
    pending: Per<LaneIx, Vec<BTreeSet<Rank>>>,
    pending_total: usize,
    running_total: usize,
    stages: HashMap<(StageIx, EngineIx), StageState>,
    /// Shared stages left with fewer than two cells to build (the others were up to
    /// date): each such cell builds its layers itself.
    unshared: Per<StageIx, Vec<bool>>,
    /// The engine that holds each affinity group's base.
    bound: Per<GroupIx, Vec<Option<EngineIx>>>,
    down: Per<EngineIx, Vec<Option<String>>>,
    busy: Per<EngineIx, Vec<usize>>,
}

/// The run's fixed structure, and its state.
struct Shared<'a> {
    engines: Per<EngineIx, &'a [Engine<'a>]>,
    stages: Per<StageIx, &'a [SharedStage]>,
    jobs: Per<CellIx, &'a [Job]>,
    /// Per cell: the shared stages it needs, in build order.
    needs: Per<CellIx, Vec<Vec<StageIx>>>,
    /// Per cell: its lane; per lane: its affinity group.
    lane_of: Per<CellIx, Vec<LaneIx>>,
    lane_group: Per<LaneIx, Vec<GroupIx>>,
    /// Per lane: one of its jobs (they share platform and allowed engines).
    lane_job: Per<LaneIx, Vec<CellIx>>,
    /// Per cell: its place in the order cells start in, heaviest first (a cell's
    /// `weight`: work left after its shared stages), then plan order; and per rank,
    /// the cell. Among cells ready at once, the one with the longest chain ahead
    /// starts first, so a short cell is not run ahead of a long one that then ends
    /// the run alone.
    rank: Per<CellIx, Vec<Rank>>,
    by_rank: Per<Rank, Vec<CellIx>>,
    opts: &'a Options,
    cancel: &'a Cancel,
    state: Mutex<State>,
    wake: Condvar,
}

type Tx = mpsc::Sender<Event>;

/// Run everything on the given engines; `on_event` is called on the caller's thread,
/// in arrival order. Returns one outcome per cell job, in job order.
///
/// Workers (one per build slot of each engine, never more than there is work) take
/// the next task for their engine: first cells of bases bound to it, then a base
/// nobody holds yet (bound to the least loaded engine that can build it), and only
/// when the engine would otherwise sit idle, cells queued behind a saturated engine.
pub fn run(
    engines: &[Engine],
    stages: &[SharedStage],
    jobs: &[Job],
    opts: &Options,
    cancel: &Cancel,
    on_event: &mut dyn FnMut(&Event),
) -> Vec<Outcome> {
    if engines.is_empty() {
        return jobs
            .iter()
            .map(|j| Outcome::not_started(j.kind, &j.id))
            .collect();
    }
    let shared = Shared::new(engines, stages, jobs, opts, cancel);
    shared.skip_up_to_date(on_event);
    let workers: usize = engines
        .iter()
        .map(|e| e.slots.get().min(jobs.len() + stages.len()).max(1))
        .sum();
    let all_done = AtomicBool::new(false);
    let (tx, rx) = mpsc::channel::<Event>();
    std::thread::scope(|s| {
        let (sh, all_done) = (&shared, &all_done);
        let txw = tx.clone();
        s.spawn(move || {
            let Ok(pool) = rayon::ThreadPoolBuilder::new().num_threads(workers).build() else {
                sh.cancel.set(Reason::FailFast);
                all_done.store(true, Ordering::SeqCst);
                return;
            };
            pool.scope(|ps| {
                for (e, eng) in sh.engines.rows() {
                    for _ in 0..eng.slots.get().min(sh.jobs.len() + sh.stages.len()).max(1) {
                        let tx = txw.clone();
                        ps.spawn(move |_| sh.worker(e, &tx));
                    }
                }
            });
            all_done.store(true, Ordering::SeqCst);
        });
        if engines.len() > 1 && !opts.engine_check.is_zero() {
            let tx = tx.clone();
            s.spawn(move || sh.monitor(all_done, &tx));
        }
        drop(tx);
        for ev in rx {
            on_event(&ev);
        }
    });
    // Cells that never ran (a cancelled run) end here, with why.
    let st = shared.state.into_inner().unwrap_or_else(|p| p.into_inner());
    st.cells
        .into_rows()
        .into_iter()
        .zip(jobs)
        .map(|(c, j)| {
            c.result.unwrap_or_else(|| {
                let o = Outcome {
                    requeues: c.requeues,
                    attempts: c.attempts,
                    reason: cancel.reason().map(Reason::describe),
                    ..Outcome::not_started(j.kind, &j.id)
                };
                on_event(&Event::Finished(o.clone()));
                o
            })
        })
        .collect()
}

impl<'a> Shared<'a> {
    fn new(
        engines: &'a [Engine<'a>],
        stages: &'a [SharedStage],
        jobs: &'a [Job],
        opts: &'a Options,
        cancel: &'a Cancel,
    ) -> Self {
        let (stages, jobs) = (Per::new(stages), Per::new(jobs));
        let mut needs: Per<CellIx, Vec<Vec<StageIx>>> = Per::filled(jobs.len(), Vec::new());
        for (w, stage) in stages.rows() {
            for m in stage.member_ids() {
                needs[m].push(w);
            }
        }
        let mut groups: HashMap<&str, GroupIx> = HashMap::new();
        let mut lane_ids: HashMap<(GroupIx, &[StageIx]), LaneIx> = HashMap::new();
        let mut lane_group = Per::new(Vec::new());
        let mut lane_job = Per::new(Vec::new());
        let mut lane_of = Per::new(Vec::with_capacity(jobs.len()));
        for (i, j) in jobs.rows() {
            let n = GroupIx(groups.len());
            let g = *groups.entry(j.affinity.as_str()).or_insert(n);
            let l = *lane_ids.entry((g, needs[i].as_slice())).or_insert_with(|| {
                lane_group.push(g);
                lane_job.push(i)
            });
            lane_of.push(l);
        }
        let mut by_rank: Vec<CellIx> = jobs.ids().collect();
        by_rank.sort_by_key(|&i| (std::cmp::Reverse(jobs[i].weight), i));
        let by_rank: Per<Rank, Vec<CellIx>> = Per::new(by_rank);
        let mut rank = Per::filled(jobs.len(), Rank(0));
        for (r, &i) in by_rank.rows() {
            rank[i] = r;
        }
        let mut pending: Per<LaneIx, Vec<BTreeSet<Rank>>> =
            Per::filled(lane_job.len(), BTreeSet::new());
        for (i, &l) in lane_of.rows() {
            pending[l].insert(rank[i]);
        }
        let fresh = CellState {
            phase: Phase::Pending,
            attempts: 0,
            requeues: Vec::new(),
            result: None,
        };
        let state = State {
            cells: Per::filled(jobs.len(), fresh),
            pending,
            pending_total: jobs.len(),
            running_total: 0,
            stages: HashMap::new(),
            unshared: Per::filled(stages.len(), false),
            bound: Per::filled(groups.len(), None),
            down: Per::filled(engines.len(), None),
            busy: Per::filled(engines.len(), 0),
        };
        Shared {
            engines: Per::new(engines),
            stages,
            jobs,
            needs,
            lane_of,
            lane_group,
            lane_job,
            rank,
            by_rank,
            opts,
            cancel,
            state: Mutex::new(state),
            wake: Condvar::new(),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Up-to-date cells first, so that a nightly where nothing changed builds no shared
    /// stage at all. The checks are independent, so they run on a pool. A base whose
    /// cells are already on an engine stays bound to that engine.
    fn skip_up_to_date(&self, on_event: &mut dyn FnMut(&Event)) {
        use rayon::prelude::*;
        let check = |j: &Job| {
            if !j.check_current || self.cancel.is_set() {
                return None;
            }
            self.engines
                .rows()
                .filter(|(_, eng)| runs(eng, j))
                .find_map(|(e, eng)| up_to_date(j, eng).map(|o| (e, o)))
        };
        let threads = self.opts.check_threads.get().clamp(1, 8);
        let fresh: Vec<Option<(EngineIx, Outcome)>> =
            match rayon::ThreadPoolBuilder::new().num_threads(threads).build() {
                Ok(p) => p.install(|| self.jobs.as_slice().par_iter().map(check).collect()),
                Err(_) => self.jobs.iter().map(check).collect(),
            };
        let mut st = self.lock();
        for (i, o) in self.jobs.ids().zip(fresh) {
            if let Some((e, o)) = o {
                on_event(&Event::Finished(o.clone()));
                st.bound[self.group_of(i)].get_or_insert(e);
                st.pending[self.lane_of[i]].remove(&self.rank[i]);
                st.pending_total -= 1;
                st.cells[i].phase = Phase::Done;
                st.cells[i].result = Some(o);
            }
        }
        for (w, stage) in self.stages.rows() {
            let left = stage
                .member_ids()
                .filter(|&m| st.cells[m].phase == Phase::Pending)
                .count();
            st.unshared[w] = left < 2;
        }
    }

    fn worker(&self, e: EngineIx, tx: &Tx) {
        loop {
            let task = {
                let mut st = self.lock();
                loop {
                    let finished = st.pending_total == 0 && st.running_total == 0;
                    if st.down[e].is_some() || self.cancel.is_set() || finished {
                        self.wake.notify_all();
                        return;
                    }
                    self.fail_unbuildable(&mut st, tx);
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
                Task::Stage(w) => (Cow::Borrowed(&self.stages[w].job), 1),
                Task::Cell(i) => (self.with_parent(i), self.lock().cells[i].attempts + 1),
            };
            let ran = run_job(&job, eng, first, self.opts, self.cancel, &down, &|ev| {
                let _ = tx.send(ev);
            });
            let mut st = self.lock();
            self.end(&mut st, task, e, ran, tx);
            self.wake.notify_all();
        }
    }

    /// A framework image's job, `FROM` the image its parent built (or found current):
    /// the parent's image ID as the build argument `PARENT`.
    fn with_parent(&self, i: CellIx) -> Cow<'_, Job> {
        let job = &self.jobs[i];
        let Some(p) = self.parent(i) else {
            return Cow::Borrowed(job);
        };
        let st = self.lock();
        let image = st.cells[p].result.as_ref().and_then(|o| o.image.clone());
        let from = image.map_or_else(
            || {
                self.jobs[p]
                    .request
                    .tags
                    .first()
                    .cloned()
                    .unwrap_or_default()
            },
            |(id, _)| id,
        );
        let mut job = job.clone();
        job.request.build_args.push(("PARENT".into(), from));
        Cow::Owned(job)
    }

    /// Every few seconds ask each engine whether it answers; two misses in a row mark it
    /// down (a daemon that hangs never fails the builds on it by itself).
    fn monitor(&self, all_done: &AtomicBool, tx: &Tx) {
        let mut misses: Per<EngineIx, Vec<u32>> = Per::filled(self.engines.len(), 0);
        let mut next = Instant::now() + self.opts.engine_check;
        while !all_done.load(Ordering::SeqCst) {
            if Instant::now() < next {
                std::thread::sleep(Duration::from_millis(50));
                continue;
            }
            next = Instant::now() + self.opts.engine_check;
            for (e, eng) in self.engines.rows() {
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

    /// Whether engine `f` may run the cells of lane `l`.
    fn lane_runs(&self, f: EngineIx, l: LaneIx) -> bool {
        runs(&self.engines[f], &self.jobs[self.lane_job[l]])
    }

    fn group_of(&self, i: CellIx) -> GroupIx {
        self.lane_group[self.lane_of[i]]
    }

    /// The cell whose image cell `i` builds on (a framework image's parent).
    fn parent(&self, i: CellIx) -> Option<CellIx> {
        self.jobs[i].parent.map(CellIx)
    }

    /// The next thing engine `e` should do for cell `i`: a shared stage it still lacks,
    /// or the cell itself; None while one of its shared stages is being built there.
    fn task_for(&self, st: &State, i: CellIx, e: EngineIx) -> Option<Task> {
        // a framework image waits for its parent (a failed parent settles it)
        if let Some(p) = self.parent(i) {
            if st.cells[p].phase != Phase::Done {
                return None;
            }
        }
        for &w in self.needs[i].iter().filter(|&&w| !st.unshared[w]) {
            match st.stages.get(&(w, e)) {
                Some(StageState::Done) => {}
                Some(_) => return None,
                None => return Some(Task::Stage(w)),
            }
        }
        Some(Task::Cell(i))
    }

    /// Cells queued for engine `e` (of bases bound to it) plus those it runs, per slot.
    fn load(&self, st: &State, e: EngineIx) -> f64 {
        let queued: usize = self
            .lane_group
            .rows()
            .filter(|(_, g)| st.bound[**g] == Some(e))
            .map(|(l, _)| st.pending[l].len())
            .sum();
        (queued + st.busy[e]) as f64 / self.engines[e].slots.get() as f64
    }

    fn has_free_slot(&self, st: &State, e: EngineIx) -> bool {
        st.down[e].is_none() && st.busy[e] < self.engines[e].slots.get()
    }

    /// Lanes with pending cells, as (first pending cell, lane), in rank order.
    fn heads(&self, st: &State) -> Vec<(CellIx, LaneIx)> {
        let mut h: Vec<(Rank, LaneIx)> = st
            .pending
            .rows()
            .filter_map(|(l, p)| p.first().map(|r| (*r, l)))
            .collect();
        h.sort_unstable();
        h.into_iter().map(|(r, l)| (self.by_rank[r], l)).collect()
    }

    /// Every pending cell.
    fn all_pending(&self, st: &State) -> Vec<CellIx> {
        st.pending
            .iter()
            .flatten()
            .map(|r| self.by_rank[*r])
            .collect()
    }

    fn pick(&self, st: &State, e: EngineIx) -> Option<Task> {
        if st.pending_total == 0 {
            return None;
        }
        let heads = self.heads(st);
        // 1. cells whose base this engine already holds
        for &(i, l) in &heads {
            if st.bound[self.lane_group[l]] == Some(e) {
                if let Some(t) = self.task_for(st, i, e) {
                    return Some(t);
                }
            }
        }
        // 2. a base nobody holds: it goes to the least loaded engine with a free slot
        // that can build its platform
        let buildable = |l: LaneIx| {
            self.engines
                .ids()
                .any(|f| st.down[f].is_none() && self.lane_runs(f, l))
        };
        if let Some(&(i, l)) = heads
            .iter()
            .find(|(_, l)| st.bound[self.lane_group[*l]].is_none() && buildable(*l))
        {
            let groups = |f: EngineIx| st.bound.iter().filter(|o| **o == Some(f)).count();
            let best = self
                .engines
                .ids()
                .filter(|&f| self.has_free_slot(st, f) && self.lane_runs(f, l))
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
        for &(i, l) in &heads {
            let g = self.lane_group[l];
            let Some(f) = st.bound[g] else { continue };
            if f == e || self.has_free_slot(st, f) || !self.lane_runs(e, l) {
                continue;
            }
            match self.task_for(st, i, e) {
                Some(t @ Task::Cell(_)) => return Some(t),
                Some(t @ Task::Stage(_)) if self.long_queue(st, g, f) => return Some(t),
                _ => {}
            }
        }
        None
    }

    /// Whether the cells of group `g` waiting for engine `f` are more than two rounds
    /// of its slots. Below that, `f` starts them about as soon as another engine could
    /// finish building the base's shared stages (measured: with 4 cells of one base on
    /// two one-core engines of 2 slots, the second engine built the stages and never
    /// got a cell), so building them twice would only cost.
    fn long_queue(&self, st: &State, g: GroupIx, f: EngineIx) -> bool {
        let waiting: usize = self
            .lane_group
            .rows()
            .filter(|(_, lg)| **lg == g)
            .map(|(l, _)| st.pending[l].len())
            .sum();
        waiting > 2 * self.engines[f].slots.get()
    }

    fn begin(&self, st: &mut State, t: Task, e: EngineIx) {
        st.busy[e] += 1;
        match t {
            Task::Stage(w) => {
                st.stages.insert((w, e), StageState::Running);
                for m in self.stages[w].member_ids() {
                    st.bound[self.group_of(m)].get_or_insert(e);
                }
            }
            Task::Cell(i) => {
                st.pending[self.lane_of[i]].remove(&self.rank[i]);
                st.pending_total -= 1;
                st.running_total += 1;
                st.cells[i].phase = Phase::Running(e);
                st.bound[self.group_of(i)].get_or_insert(e);
            }
        }
    }

    fn requeue(&self, st: &mut State, i: CellIx) {
        st.cells[i].phase = Phase::Pending;
        st.pending[self.lane_of[i]].insert(self.rank[i]);
        st.pending_total += 1;
    }

    /// Settle a cell: its one outcome, sent once.
    fn settle(&self, st: &mut State, i: CellIx, mut o: Outcome, tx: &Tx) {
        if st.cells[i].phase == Phase::Pending {
            st.pending[self.lane_of[i]].remove(&self.rank[i]);
            st.pending_total -= 1;
        }
        st.cells[i].phase = Phase::Done;
        o.requeues = std::mem::take(&mut st.cells[i].requeues);
        let failed = (!o.status.succeeded()).then(|| o.clone());
        st.cells[i].result = Some(o.clone());
        let _ = tx.send(Event::Finished(o));
        if let Some(o) = failed {
            self.skip_children(st, i, &o, tx);
        }
    }

    /// The framework images still waiting on parent `p`, which did not succeed: each
    /// ends `skipped (parent failed)` with the parent's reason.
    fn skip_children(&self, st: &mut State, p: CellIx, o: &Outcome, tx: &Tx) {
        let children: Vec<CellIx> = self
            .jobs
            .ids()
            .filter(|&c| self.parent(c) == Some(p) && st.cells[c].phase == Phase::Pending)
            .collect();
        for c in children {
            let why = o
                .reason
                .as_deref()
                .map(|r| format!(": {r}"))
                .unwrap_or_default();
            let out = Outcome {
                reason: Some(format!(
                    "skipped (parent failed): parent {} {}{why}",
                    self.jobs[p].id,
                    o.status.as_str()
                )),
                ..Outcome::not_started(self.jobs[c].kind, &self.jobs[c].id)
            };
            self.settle(st, c, out, tx);
        }
    }

    fn end(&self, st: &mut State, t: Task, e: EngineIx, ran: Ran, tx: &Tx) {
        st.busy[e] = st.busy[e].saturating_sub(1);
        let lost = ran.engine_down.is_some() || st.down[e].is_some();
        if let Some(why) = &ran.engine_down {
            self.mark_down(st, e, why, tx);
        }
        match t {
            Task::Stage(w) => self.end_stage(st, w, e, lost, ran.outcome, tx),
            Task::Cell(i) => {
                st.running_total -= 1;
                st.cells[i].attempts = ran.outcome.attempts;
                if lost {
                    self.lost(st, i, e, &ran.outcome, tx);
                } else {
                    self.settle(st, i, ran.outcome, tx);
                }
            }
        }
    }

    fn end_stage(&self, st: &mut State, w: StageIx, e: EngineIx, lost: bool, o: Outcome, tx: &Tx) {
        if lost {
            st.stages.remove(&(w, e));
        } else if o.status.succeeded() {
            st.stages.insert((w, e), StageState::Done);
            // listeners close the stage's line (and the event stream its job)
            let _ = tx.send(Event::Finished(o));
        } else if o.status == Status::Cancelled {
            st.stages.remove(&(w, e));
            let _ = tx.send(Event::Finished(o));
        } else {
            st.stages.insert((w, e), StageState::Failed);
            self.fail_members(st, w, &o, tx);
            let _ = tx.send(Event::Finished(o));
        }
    }

    /// A cell whose engine went down under it: back in the queue, unless nothing can
    /// run it any more.
    fn lost(&self, st: &mut State, i: CellIx, e: EngineIx, o: &Outcome, tx: &Tx) {
        let reason = st.down[e].clone().unwrap_or_default();
        st.cells[i].requeues.push(Requeue {
            engine: self.engines[e].name.clone(),
            reason: reason.clone(),
            seconds: (o.duration.as_secs_f64() * 10.0).round() / 10.0,
        });
        self.requeue(st, i);
        if st.down.iter().all(Option::is_some) {
            self.fail_for_no_engine(st, i, tx);
        } else if let Some(why) = self.failed_stage(st, i) {
            self.fail_unrunnable(st, i, why, tx);
        } else {
            let _ = tx.send(Event::Requeued {
                job: self.jobs[i].kind,
                id: self.jobs[i].id.clone(),
                from: self.engines[e].name.clone(),
                reason,
            });
        }
    }

    /// A shared stage that failed for a reason of its own fails its waiting members once,
    /// instead of each of them building the same broken layers again.
    fn fail_members(&self, st: &mut State, w: StageIx, o: &Outcome, tx: &Tx) {
        let stage = &self.stages[w];
        for m in stage.member_ids() {
            if st.cells[m].phase != Phase::Pending {
                continue;
            }
            let status = match o.status {
                Status::NotStarted | Status::Cancelled => o.status,
                _ => Status::Failed,
            };
            let out = Outcome {
                status,
                exit_code: o.exit_code,
                tail: o.tail.clone(),
                reason: Some(format!(
                    "shared stage {} {}: {}",
                    stage.job.id,
                    o.status.as_str(),
                    o.reason.clone().unwrap_or_default()
                )),
                engine: o.engine.clone(),
                attempts: st.cells[m].attempts,
                ..Outcome::not_started(self.jobs[m].kind, &self.jobs[m].id)
            };
            self.settle(st, m, out, tx);
        }
    }

    fn mark_down(&self, st: &mut State, e: EngineIx, why: &str, tx: &Tx) {
        if st.down[e].is_some() {
            return;
        }
        st.down[e] = Some(why.to_string());
        for b in st.bound.iter_mut() {
            if *b == Some(e) {
                *b = None;
            }
        }
        st.stages.retain(|(_, on), _| *on != e);
        let left = st.down.iter().filter(|d| d.is_none()).count();
        let _ = tx.send(Event::EngineDown {
            engine: self.engines[e].name.clone(),
            reason: why.to_string(),
            left,
        });
        if left == 0 {
            for i in self.all_pending(st) {
                self.fail_for_no_engine(st, i, tx);
            }
        }
    }

    fn fail_for_no_engine(&self, st: &mut State, i: CellIx, tx: &Tx) {
        let why: Vec<String> = self
            .engines
            .iter()
            .zip(st.down.iter())
            .map(|(eng, d)| format!("{} ({})", eng.name, d.as_deref().unwrap_or("up")))
            .collect();
        let reason = format!("no engine left to build on: {}", why.join("; "));
        self.fail_unrunnable(st, i, reason, tx);
    }

    /// A pending cell that cannot run any more ends as failed, with why.
    fn fail_unrunnable(&self, st: &mut State, i: CellIx, reason: String, tx: &Tx) {
        let o = Outcome {
            status: Status::Failed,
            attempts: st.cells[i].attempts,
            reason: Some(reason),
            ..Outcome::not_started(self.jobs[i].kind, &self.jobs[i].id)
        };
        self.settle(st, i, o, tx);
    }

    /// A shared stage of cell `i` that failed on its own on some engine: the cell would
    /// fail the same way anywhere (and that engine would never start it).
    fn failed_stage(&self, st: &State, i: CellIx) -> Option<String> {
        self.needs[i].iter().find_map(|&w| {
            st.stages.iter().find_map(|((x, on), s)| {
                (*x == w && *s == StageState::Failed).then(|| {
                    format!(
                        "shared stage {} failed on engine {}",
                        self.stages[w].job.id, self.engines[*on].name
                    )
                })
            })
        })
    }

    /// Pending cells of a platform no engine that is up can build end as failed at once;
    /// left queued they would stand in front of every cell after them.
    fn fail_unbuildable(&self, st: &mut State, tx: &Tx) {
        let doomed: Vec<CellIx> = st
            .pending
            .rows()
            .filter(|(l, p)| {
                !p.is_empty()
                    && !self
                        .engines
                        .ids()
                        .any(|f| st.down[f].is_none() && self.lane_runs(f, *l))
            })
            .flat_map(|(_, p)| p.iter().map(|r| self.by_rank[*r]))
            .collect();
        for i in doomed {
            let up: Vec<&str> = self
                .engines
                .ids()
                .filter(|&f| st.down[f].is_none())
                .map(|f| self.engines[f].name.as_str())
                .collect();
            let only = &self.jobs[i].engines;
            let why = format!(
                "no engine that is up builds platform {}{} (up: {})",
                self.jobs[i].platform,
                if only.is_empty() {
                    String::new()
                } else {
                    format!(" with its base (held by {})", only.join(", "))
                },
                if up.is_empty() {
                    "none".to_string()
                } else {
                    up.join(", ")
                }
            );
            self.fail_unrunnable(st, i, why, tx);
        }
    }

    /// Defence against a stall: with nothing running anywhere, if no engine that is up
    /// would take any pending cell, those cells can never run; fail them rather than
    /// wait for ever.
    fn fail_if_stuck(&self, st: &mut State, tx: &Tx) {
        if st.pending_total == 0 || st.busy.iter().any(|b| *b > 0) {
            return;
        }
        let takers = self
            .engines
            .ids()
            .filter(|&f| st.down[f].is_none())
            .any(|f| self.pick(st, f).is_some());
        if takers {
            return;
        }
        for i in self.all_pending(st) {
            let why = self.failed_stage(st, i).unwrap_or_else(|| {
                format!(
                    "no engine that is up can build it (platform {})",
                    self.jobs[i].platform
                )
            });
            self.fail_unrunnable(st, i, why, tx);
        }
    }
}

/// Whether an engine may run a job: it builds the job's platform and, where the job
/// names the engines that hold its base, is one of them.
fn runs(eng: &Engine, j: &Job) -> bool {
    eng.takes_platform(&j.platform) && (j.engines.is_empty() || j.engines.contains(&eng.name))
}

fn up_to_date(job: &Job, eng: &Engine) -> Option<Outcome> {
    let t = Instant::now();
    eng.exec.up_to_date(job).then(|| Outcome {
        duration: t.elapsed(),
        image: eng.exec.image_info(job),
        engine: Some(eng.name.clone()),
        status: Status::UpToDate,
        ..Outcome::not_started(job.kind, &job.id)
    })
}

/// One job's run on one engine, and whether the engine turned out to be gone.
struct Ran {
    outcome: Outcome,
    engine_down: Option<String>,
}

/// Attempts of one job on one engine, with retries after transient failures.
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
            job: job.kind,
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
                    job: job.kind,
                    id: job.id.clone(),
                    step,
                })
            },
            &stop,
        );
        let outcome = |status, exit_code, reason, tail: Vec<String>| Outcome {
            status,
            attempts: attempt,
            exit_code,
            duration: start.elapsed(),
            tail,
            reason,
            engine: Some(eng.name.clone()),
            ..Outcome::not_started(job.kind, &job.id)
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
        if let AttemptEnd::Failed {
            transient: true, ..
        } = r.end
        {
            if attempt < first_attempt + opts.retries && !cancel.is_set() {
                let wait = opts.backoff * 2u32.saturating_pow(attempt - first_attempt);
                emit(Event::Retrying {
                    job: job.kind,
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
        }
        let (status, code, reason) = judge(&r.end, opts, cancel);
        if opts.fail_fast && !status.succeeded() && status != Status::Cancelled {
            cancel.set(Reason::FailFast);
        }
        let mut o = outcome(status, code, reason, r.tail);
        if status == Status::Built {
            o.image = exec.image_info(job);
            o.versions = r.versions;
        }
        o.duration = start.elapsed();
        return Ran {
            outcome: o,
            engine_down: None,
        };
    }
}

/// Status, exit code and reason of an attempt's end.
fn judge(
    end: &AttemptEnd,
    opts: &Options,
    cancel: &Cancel,
) -> (Status, Option<i32>, Option<String>) {
    match end {
        AttemptEnd::Succeeded => (Status::Built, Some(0), None),
        AttemptEnd::Failed {
            exit_code,
            transient,
        } => {
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
            Some(
                cancel
                    .reason()
                    .map_or_else(|| "cancelled".into(), Reason::describe),
            ),
        ),
        AttemptEnd::Error(e) => (Status::Failed, None, Some(e.clone())),
    }
}
#[cfg(test)]
mod tests {
    use super::*;
    use crate::docker::BuildRequest;
    use crate::run::executor::JobKind;
    use crate::run::fake::{FakeAttempt, FakeExecutor};
    use crate::signals::Signal;

    fn job(id: &str) -> Job {
        Job {
            kind: JobKind::Cell(0),
            id: id.into(),
            request: BuildRequest::default(),
            log_path: "/dev/null".into(),
            input_hash: "h".into(),
            legacy_hash: None,
            primary_tag: Some(format!("r:{id}")),
            affinity: String::new(),
            platform: "linux/amd64".into(),
            engines: Vec::new(),
            check_current: true,
            weight: 0,
            parent: None,
        }
    }

    /// Cell jobs numbered in order.
    fn cells<const N: usize>(jobs: [Job; N]) -> Vec<Job> {
        jobs.into_iter()
            .enumerate()
            .map(|(i, j)| Job {
                kind: JobKind::Cell(i),
                ..j
            })
            .collect()
    }

    fn stage(n: usize, j: Job, members: Vec<usize>) -> SharedStage {
        SharedStage {
            job: Job {
                kind: JobKind::Stage(n),
                primary_tag: None,
                ..j
            },
            members,
        }
    }

    /// A job of base `base`.
    fn on(id: &str, base: &str) -> Job {
        Job {
            affinity: base.into(),
            ..job(id)
        }
    }

    fn engine<'a>(name: &str, exec: &'a dyn Executor, slots: usize) -> Engine<'a> {
        Engine {
            name: name.into(),
            exec,
            slots: NonZeroUsize::new(slots).unwrap(),
            platforms: Vec::new(),
        }
    }

    /// One engine with `slots` slots.
    fn run1(
        stages: &[SharedStage],
        jobs: &[Job],
        exec: &dyn Executor,
        slots: usize,
        opts: &Options,
        cancel: &Cancel,
        on_event: &mut dyn FnMut(&Event),
    ) -> Vec<Outcome> {
        let engines = [engine("only", exec, slots)];
        run(&engines, stages, &renumber(jobs), opts, cancel, on_event)
    }

    fn renumber(jobs: &[Job]) -> Vec<Job> {
        jobs.iter()
            .enumerate()
            .map(|(i, j)| Job {
                kind: JobKind::Cell(i),
                ..j.clone()
            })
            .collect()
    }

    fn two<'a>(a: &'a FakeExecutor, b: &'a FakeExecutor, slots: usize) -> [Engine<'a>; 2] {
        [engine("a", a, slots), engine("b", b, slots)]
    }

    /// Engines a and b with `slots` builds each; events dropped.
    fn run2(
        a: &FakeExecutor,
        b: &FakeExecutor,
        slots: usize,
        stages: &[SharedStage],
        jobs: &[Job],
    ) -> Vec<Outcome> {
        run(
            &two(a, b, slots),
            stages,
            &renumber(jobs),
            &opts(),
            &Cancel::default(),
            &mut |_| {},
        )
    }

    fn calls(f: &FakeExecutor) -> Vec<String> {
        let mut c = f.calls.lock().unwrap().clone();
        c.sort();
        c
    }

    fn opts() -> Options {
        Options {
            fail_fast: false,
            timeout: None,
            retries: 0,
            backoff: Duration::from_millis(1),
            engine_check: Duration::from_millis(20),
            check_threads: NonZeroUsize::new(2).unwrap(),
        }
    }

    fn statuses(o: &[Outcome]) -> Vec<&'static str> {
        o.iter().map(|x| x.status.as_str()).collect()
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
        let o = run1(
            &[],
            &jobs,
            &fake,
            1,
            &opts(),
            &Cancel::default(),
            &mut |e| events.push(format!("{e:?}")),
        );
        assert_eq!(statuses(&o), ["built", "failed", "built"]);
        assert_eq!(*fake.calls.lock().unwrap(), ["a#1", "b#1", "c#1"]);
        assert!(events.iter().filter(|e| e.starts_with("Finished")).count() == 3);
    }

    #[test]
    fn heavier_cells_start_first_among_those_ready() {
        // The nightly's shape: an OS stage, two Miniconda stages, and per Miniconda
        // stage a cell with no extra packages and one with pandas.
        let fake = FakeExecutor::default();
        for (id, millis) in [("os", 20), ("ca", 40), ("cb", 40), ("a0", 10), ("b0", 10)] {
            fake.script(id, vec![FakeAttempt::Ok { millis }]);
        }
        for id in ["a1", "b1"] {
            fake.script(id, vec![FakeAttempt::Ok { millis: 60 }]);
        }
        let heavy = |id: &str| Job {
            weight: 1,
            ..job(id)
        };
        let jobs = cells([job("a0"), heavy("a1"), job("b0"), heavy("b1")]);
        let stages = [
            stage(0, job("os"), vec![0, 1, 2, 3]),
            stage(1, job("ca"), vec![0, 1]),
            stage(2, job("cb"), vec![2, 3]),
        ];
        let out = run1(
            &stages,
            &jobs,
            &fake,
            2,
            &opts(),
            &Cancel::default(),
            &mut |_| {},
        );
        assert_eq!(statuses(&out), ["built"; 4]);
        let order = fake.calls.lock().unwrap().clone();
        let at = |id: &str| order.iter().position(|c| c == id).unwrap();
        assert!(at("a1#1") < at("a0#1"), "{order:?}");
        assert!(at("b1#1") < at("b0#1"), "{order:?}");
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
        let mut o = opts();
        o.fail_fast = true;
        let out = run1(&[], &jobs, &fake, 2, &o, &Cancel::default(), &mut |_| {});
        assert_eq!(
            statuses(&out),
            ["cancelled", "failed", "not-started", "not-started"]
        );
        assert_eq!(
            out[0].reason.as_deref(),
            Some("stopped by --fail-fast after a failure")
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
        let mut o = opts();
        o.retries = 2;
        let out = run1(
            &[],
            &[job("a"), job("b"), job("c")],
            &fake,
            1,
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
        let mut o = opts();
        o.timeout = Some(Duration::from_millis(30));
        o.retries = 3;
        let out = run1(
            &[],
            &[job("a"), job("b")],
            &fake,
            1,
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
            2,
            &opts(),
            &Cancel::default(),
            &mut |_| {},
        );
        assert_eq!(statuses(&out), ["up-to-date", "built"]);
        let forced = Job {
            check_current: false,
            ..job("a")
        };
        let out = run1(
            &[],
            &[forced],
            &fake,
            2,
            &opts(),
            &Cancel::default(),
            &mut |_| {},
        );
        assert_eq!(statuses(&out), ["built"]);
    }

    /// An image tree: children wait for their parent even with free slots, and a
    /// failed parent skips its children with its reason instead of building them.
    #[test]
    fn a_parent_builds_first_and_a_failed_one_skips_its_children() {
        let fake = FakeExecutor::default();
        fake.script("p1", vec![FakeAttempt::Ok { millis: 60 }]);
        fake.script(
            "p2",
            vec![FakeAttempt::Fail {
                code: 1,
                transient: false,
            }],
        );
        let child = |id: &str, p: usize| Job {
            parent: Some(p),
            check_current: false,
            ..job(id)
        };
        let jobs = cells([
            Job {
                check_current: false,
                ..job("p1")
            },
            child("p1-torch", 0),
            Job {
                check_current: false,
                ..job("p2")
            },
            child("p2-torch", 2),
            child("p2-tf", 2),
        ]);
        let out = run1(
            &[],
            &jobs,
            &fake,
            4,
            &opts(),
            &Cancel::default(),
            &mut |_| {},
        );
        assert_eq!(
            statuses(&out),
            ["built", "built", "failed", "not-started", "not-started"]
        );
        let reason = out[3].reason.as_deref().unwrap_or_default();
        assert!(
            reason.starts_with("skipped (parent failed): parent p2 failed"),
            "{reason}"
        );
        let calls = calls(&fake);
        let at = |id: &str| calls.iter().position(|c| c == id);
        assert!(at("p1#1") < at("p1-torch#1"), "{calls:?}");
        assert_eq!(at("p2-torch#1"), None, "{calls:?}");
        assert_eq!(at("p2-tf#1"), None, "{calls:?}");
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
        let stages = [stage(0, job("warm"), vec![0, 2])];
        let out = run1(
            &stages,
            &jobs,
            &fake,
            2,
            &opts(),
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
            1,
            &opts(),
            &cancel,
            &mut |e| {
                if matches!(e, Event::Started { .. }) {
                    c2.set(Reason::Signal(Signal::Interrupt));
                }
            },
        );
        assert_eq!(statuses(&out), ["cancelled", "not-started"]);
        assert_eq!(out[0].reason.as_deref(), Some("interrupted by SIGINT"));
        assert_eq!(
            out[1].reason.as_deref(),
            Some("interrupted by SIGINT"),
            "a cell that never started says why"
        );
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
        let stages = [
            stage(0, on("wx", "X"), vec![0, 1]),
            stage(1, on("wy", "Y"), vec![2, 3]),
        ];
        let out = run2(&a, &b, 2, &stages, &jobs);
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
            &renumber(&jobs),
            &opts(),
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
        stages: [SharedStage; 1],
        jobs: Vec<Job>,
        opts: Options,
        cancel: Cancel,
    }

    impl Fixture {
        fn new() -> Fixture {
            Fixture {
                a: FakeExecutor::default(),
                b: FakeExecutor::default(),
                stages: [stage(0, on("wx", "X"), vec![0, 1])],
                jobs: cells([on("x1", "X"), on("x2", "X")]),
                opts: opts(),
                cancel: Cancel::default(),
            }
        }
    }

    /// Shared state for driving `end` and `fail_if_stuck` by hand: both cells taken
    /// out of the queue, nothing running.
    fn by_hand<'a>(f: &'a Fixture, engines: &'a [Engine<'a>]) -> Shared<'a> {
        let sh = Shared::new(engines, &f.stages, &f.jobs, &f.opts, &f.cancel);
        {
            let mut st = sh.lock();
            for i in [CellIx(0), CellIx(1)] {
                st.pending[sh.lane_of[i]].remove(&sh.rank[i]);
                st.cells[i].phase = Phase::Done;
            }
            st.pending_total = 0;
        }
        sh
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
            st.stages
                .insert((StageIx(0), EngineIx(0)), StageState::Failed);
            st.cells[CellIx(0)].phase = Phase::Running(EngineIx(1));
            st.running_total = 1;
            st.busy[EngineIx(1)] = 1;
            let ran = Ran {
                outcome: Outcome {
                    attempts: 1,
                    status: Status::Failed,
                    ..Outcome::not_started(JobKind::Cell(0), "x1")
                },
                engine_down: Some("gone".into()),
            };
            sh.end(&mut st, Task::Cell(CellIx(0)), EngineIx(1), ran, &tx);
            let r = st.cells[CellIx(0)].result.as_ref().expect("x1 ended");
            assert_eq!(r.status, Status::Failed);
            assert_eq!(
                r.reason.as_deref(),
                Some("shared stage wx failed on engine a")
            );
            assert_eq!(r.requeues.len(), 1, "the loss is still recorded");
            assert_eq!(st.cells[CellIx(0)].phase, Phase::Done);
            assert_eq!(st.pending_total, 0);
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
        sh.requeue(&mut st, CellIx(1));
        st.down[EngineIx(1)] = Some("gone".into());
        st.stages
            .insert((StageIx(0), EngineIx(0)), StageState::Failed);
        st.busy[EngineIx(0)] = 1;
        sh.fail_if_stuck(&mut st, &tx);
        assert_eq!(
            st.cells[CellIx(1)].phase,
            Phase::Pending,
            "something still runs: not stuck yet"
        );
        st.busy[EngineIx(0)] = 0;
        sh.fail_if_stuck(&mut st, &tx);
        assert_eq!(st.cells[CellIx(1)].phase, Phase::Done);
        assert_eq!(
            st.cells[CellIx(1)]
                .result
                .as_ref()
                .unwrap()
                .reason
                .as_deref(),
            Some("shared stage wx failed on engine a")
        );
    }

    #[test]
    fn a_platform_no_engine_builds_is_never_started() {
        let (a, b) = (FakeExecutor::default(), FakeExecutor::default());
        let mut engines = two(&a, &b, 1);
        engines[0].platforms = vec!["linux/amd64".into()];
        engines[1].platforms = vec!["linux/amd64".into(), "linux/arm64".into()];
        let arm = Job {
            platform: "linux/arm64".into(),
            ..on("arm", "A")
        };
        let jobs = cells([on("x1", "X"), arm.clone(), on("x2", "X")]);
        let out = run(
            &engines,
            &[],
            &jobs,
            &opts(),
            &Cancel::default(),
            &mut |_| {},
        );
        assert_eq!(statuses(&out), ["built"; 3]);
        assert_eq!(out[1].engine.as_deref(), Some("b"), "only b builds arm64");
        engines[1].platforms = vec!["linux/amd64".into()];
        let out = run(
            &engines,
            &[],
            &cells([arm]),
            &opts(),
            &Cancel::default(),
            &mut |_| {},
        );
        assert_eq!(statuses(&out), ["failed"]);
        assert!(out[0].reason.as_deref().unwrap().contains("linux/arm64"));
    }

    #[test]
    fn cells_of_a_platform_no_engine_builds_do_not_stop_the_others() {
        let (a, b) = (FakeExecutor::default(), FakeExecutor::default());
        let mut engines = two(&a, &b, 1);
        for e in &mut engines {
            e.platforms = vec!["linux/amd64".into()];
        }
        let arm = |id: &str| Job {
            platform: "linux/arm64".into(),
            ..on(id, "A")
        };
        // arm64 cells first in plan order, amd64 cells of several bases behind them
        let jobs = cells([
            arm("arm1"),
            arm("arm2"),
            on("x1", "X"),
            on("y1", "Y"),
            on("x2", "X"),
        ]);
        let out = run(
            &engines,
            &[],
            &jobs,
            &opts(),
            &Cancel::default(),
            &mut |_| {},
        );
        assert_eq!(
            statuses(&out),
            ["failed", "failed", "built", "built", "built"]
        );
        for o in &out[..2] {
            let why = o.reason.as_deref().unwrap();
            assert!(
                why.contains("linux/arm64") && why.contains("up: a, b"),
                "{why}"
            );
        }
        assert!(calls(&a)
            .iter()
            .chain(calls(&b).iter())
            .all(|c| !c.starts_with("arm")));
    }

    #[test]
    fn a_cell_runs_only_where_its_base_is_held() {
        let (a, b) = (FakeExecutor::default(), FakeExecutor::default());
        let engines = two(&a, &b, 2);
        // both engines build arm64 (b natively, a under emulation), but only b holds
        // the arm64 base; a is idle all along and must not take those cells
        let arm = |id: &str| Job {
            platform: "linux/arm64".into(),
            engines: vec!["b".into()],
            ..on(id, "A")
        };
        for f in [&a, &b] {
            for id in ["arm1", "arm2", "arm3", "arm4"] {
                f.script(id, vec![FakeAttempt::Ok { millis: 30 }]);
            }
        }
        let jobs = cells([
            arm("arm1"),
            arm("arm2"),
            arm("arm3"),
            arm("arm4"),
            on("x1", "X"),
        ]);
        let out = run(
            &engines,
            &[],
            &jobs,
            &opts(),
            &Cancel::default(),
            &mut |_| {},
        );
        assert_eq!(statuses(&out), ["built"; 5]);
        for o in &out[..4] {
            assert_eq!(o.engine.as_deref(), Some("b"), "{}", o.id);
        }
        assert!(
            calls(&a).iter().all(|c| !c.starts_with("arm")),
            "{:?}",
            calls(&a)
        );
    }

    #[test]
    fn many_instant_cells_on_many_slots_each_run_once() {
        let a = FakeExecutor::default();
        let jobs: Vec<Job> = (0..2000)
            .map(|i| on(&format!("c{i}"), &format!("B{}", i % 7)))
            .collect();
        let out = run1(&[], &jobs, &a, 8, &opts(), &Cancel::default(), &mut |_| {});
        assert!(out.iter().all(|o| o.status == Status::Built));
        assert_eq!(a.calls.lock().unwrap().len(), 2000);
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
            let stages = [stage(0, on("wx", "X"), (0..cells).collect())];
            let out = run2(&a, &b, 2, &stages, &jobs);
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
