//! A build run, phase by phase: preflight (`preflight.rs`) → the scheduler (its events
//! to the listener and the manifest recorder) → acceptance (versions, verification,
//! the public tags) → publishing → the leftovers of lost engines → the last record,
//! the reports and the summary → pruning. Each phase returns what it did or emits
//! events; the recorder is the only writer of the manifest, and once the listener
//! exists nothing else is told to people.

use std::path::{Path, PathBuf};
use std::time::Duration;

use super::accept;
use super::events::{Event, Listener, Outcome, Phase};
use super::executor::{DockerExecutor, Job, JobKind};
use super::options::Options;
use super::preflight::{self, Outputs, Ready};
use super::prepare::Prepared;
use super::publish;
use super::recorder::Recorder;
use super::scheduler;
use crate::docker::{BuildRequest, Docker};
use crate::engines::Engines;
use crate::error::{Error, Exit};
use crate::manifest::{io, Manifest, RunOutcome, Status, Verification};
use crate::plan::{Cell, Plan};
use crate::signals::{Cancel, Reason};

/// How often the manifest is rewritten while cells finish (and at the end).
const RECORD_EVERY: Duration = Duration::from_secs(2);

/// Writes the reports derived from a finished manifest (`report.html`, `report.md`)
/// beside it (its path, the run it replaces, the run's log folder); returns those
/// written.
pub type Reports<'a> = &'a dyn Fn(&Manifest, Option<&Manifest>, &Path, &Path) -> Vec<PathBuf>;

/// Run the build of `cells`. `listener` makes the run's listener once the jobs are
/// known (how many, and whether several engines build them); `say` takes the lines for
/// people before it exists (the preflight's) and after it has closed (prune's).
pub fn run<L: Listener>(
    plan: &Plan,
    cells: &[&Cell],
    o: &Options,
    cancel: &Cancel,
    listener: impl FnOnce(usize, bool) -> L,
    reports: Reports,
    say: preflight::Say,
) -> Result<Exit, Error> {
    let out = Outputs::new(o);
    super::prepare::writable_dir(&out.out).map_err(Error::Preflight)?;
    let _lock = crate::lock::acquire(&out.out).map_err(Error::Preflight)?;
    out.preflight()?;
    // a manifest or a log folder outside the output folder is this run's alone too
    let _manifest_lock = crate::lock::acquire_manifest(&out.manifest).map_err(Error::Preflight)?;
    let _logs_lock = crate::lock::acquire_logs(&out.paths.logs).map_err(Error::Preflight)?;
    // last night's record: where bases were, which images were verified
    let previous = io::read(&out.manifest).ok();
    let (connected, prepared) =
        match preflight::ready(plan, cells, o, &out, previous.as_ref(), cancel, say) {
            Ready::Go(c, p) => (c, p),
            Ready::Stopped(connected) => {
                return preflight::stopped_before_builds(
                    plan,
                    cells,
                    o,
                    connected.as_ref(),
                    &out,
                    cancel,
                    say,
                )
            }
            Ready::Failed(e) => return Err(e),
        };
    let engines = &connected.engines;
    let mut recorder = Recorder::new(
        preflight::initial_manifest(plan, o, &connected, &prepared),
        &out.manifest,
        RECORD_EVERY,
    );
    recorder
        .write()
        .map_err(|e| Error::write(&out.manifest, e))?;
    let mut listener = listener(prepared.jobs.len(), engines.len() > 1);
    let reporter: &mut dyn Listener = &mut listener;
    let all_jobs: Vec<&Job> = prepared
        .jobs
        .iter()
        .chain(prepared.stages.iter().map(|s| &s.job))
        .collect();
    reporter.run_started(recorder.manifest(), &out.manifest, &all_jobs);
    build_and_accept(
        o,
        engines,
        &prepared,
        &mut recorder,
        reporter,
        previous.as_ref(),
        cancel,
    )?;
    record_downloads(&prepared, &out.out, reporter);
    // A refused push (some cell not built, or its engine gone) fails the run even when
    // every cell built: nothing was published.
    let staged = o.stage.is_none() || cancel.is_set() || stage(o, engines, &mut recorder, reporter);
    let published =
        staged && (!o.push || cancel.is_set() || push(o, engines, &mut recorder, reporter));
    remove_leftovers(engines, recorder.manifest(), reporter);
    let end = End {
        manifest: &out.manifest,
        logs: &out.paths.logs,
        previous: previous.as_ref(),
        published,
        prune: o
            .keep
            .filter(|_| !cancel.is_set())
            .map(|n| (engines, plan.settings.repository.as_str(), n)),
    };
    finish(recorder, reporter, reports, cancel, &end)
}

/// What the host's download cache did, in OUT/downloads.json and one line for people.
fn record_downloads(prepared: &Prepared, out: &Path, reporter: &mut dyn Listener) {
    let Some(d) = &prepared.downloads else {
        return;
    };
    let stats = d.stats();
    let path = out.join("downloads.json");
    let mb = |b: u64| b as f64 / 1e6;
    let mut text = format!(
        "download cache: {} file(s) fetched ({:.1} MB), {} served from the cache ({:.1} MB), {} joined a download under way; {} index page(s) ({:.1} MB) and {} apt index(es) ({:.1} MB) fetched as always; figures in {}",
        stats.fetched.len(),
        mb(stats.fetched.iter().map(|f| f.bytes).sum()),
        stats.from_cache,
        mb(stats.from_cache_bytes),
        stats.joined,
        stats.pages,
        mb(stats.page_bytes),
        stats.passed,
        mb(stats.passed_bytes),
        path.display()
    );
    if let Err(e) = io::write_json(&path, &stats) {
        text = format!("warning: cannot write {}: {e}", path.display());
    }
    for failed in &stats.failed {
        reporter.phase(&Phase::Warning {
            id: None,
            text: format!("warning: download cache: {failed}"),
        });
    }
    reporter.phase(&Phase::Info { id: None, text });
}

/// Run the jobs; the reporter draws each event and the recorder applies it; `built`
/// hears of each cell whose build succeeded, with its record as the build left it.
fn schedule(
    o: &Options,
    engines: &Engines,
    prepared: &Prepared,
    cancel: &Cancel,
    recorder: &mut Recorder,
    reporter: &Shared,
    built: &dyn Fn(usize, &crate::manifest::CellRecord),
) -> Vec<Outcome> {
    let contexts = |job: JobKind, mounts: bool| prepared.sent_context(job, mounts);
    let execs: Vec<DockerExecutor> = engines
        .iter()
        .map(|e| DockerExecutor {
            docker: e.docker.clone(),
            grace: o.kill_grace,
            contexts: &contexts,
        })
        .collect();
    let sched_engines: Vec<scheduler::Engine> = engines
        .iter()
        .zip(&execs)
        .map(|(e, exec)| scheduler::Engine {
            name: e.name.clone(),
            exec,
            slots: e.slots,
            platforms: e.platforms.clone(),
        })
        .collect();
    let opts = scheduler::Options {
        engine_check: o.engine_check,
        fail_fast: o.fail_fast,
        timeout: o.timeout,
        retries: o.retries,
        backoff: Duration::from_secs(5),
        check_threads: o.jobs,
    };
    let outcomes = scheduler::run(
        &sched_engines,
        &prepared.stages,
        &prepared.jobs,
        &opts,
        cancel,
        &mut |ev: &Event| {
            let failed = match ev {
                Event::Finished(o) => reproduce(engines, prepared, o).map(|r| (o, r)),
                _ => None,
            };
            with(reporter, |r| {
                r.event(ev, failed.as_ref().map(|(_, (_, repro))| repro.as_str()));
            });
            recorder.apply(ev);
            if let Some((o, (log, repro))) = failed {
                // a cell failed with its shared stage did not run; the stage's failure
                // was shown
                if o.attempts > 0 {
                    with(reporter, |r| r.failure(o, &log, &repro));
                }
                if let JobKind::Cell(i) = o.job {
                    recorder.reproduce(i, repro);
                }
            }
            if let Event::Finished(o) = ev {
                if let (JobKind::Cell(i), Status::Built) = (o.job, o.status) {
                    if let Some(rec) = recorder.manifest().cells.get(i) {
                        built(i, rec);
                    }
                }
            }
        },
    );
    with(reporter, |r| r.scheduled());
    outcomes
}

/// The reporter, heard by the scheduler and by the acceptance of finished cells at once.
type Shared<'r> = std::sync::Mutex<&'r mut dyn Listener>;

/// Tell the reporter something (a poisoned lock: a reporter that panicked hears no
/// more).
fn with(reporter: &Shared, f: impl FnOnce(&mut dyn Listener)) {
    if let Ok(mut r) = reporter.lock() {
        f(&mut **r);
    }
}

/// The builds, and the acceptance of their images. With verification, a cell is
/// accepted (and verified) as soon as it is built, on `jobs` threads beside the
/// scheduler, so verifying overlaps the builds still running; once the last build
/// has ended, its `jobs` slots verify too. The cells found up to date, and everything
/// without verification, are accepted after the builds.
fn build_and_accept(
    o: &Options,
    engines: &Engines,
    prepared: &Prepared,
    recorder: &mut Recorder,
    reporter: &mut dyn Listener,
    previous: Option<&Manifest>,
    cancel: &Cancel,
) -> Result<(), Error> {
    let contexts = job_contexts(prepared);
    let candidates = candidates(prepared, &contexts);
    let opts = accept_options(o, engines, recorder);
    let shared: Shared = std::sync::Mutex::new(reporter);
    let before: Vec<Option<Verification>> = recorder
        .manifest()
        .cells
        .iter()
        .map(|c| c.verification.clone())
        .collect();
    let listen = |ev: &Phase| with(&shared, |r| r.phase(ev));
    let mut early_done = Vec::new();
    let announced = std::sync::atomic::AtomicBool::new(false);
    if o.verify {
        let early = accept::Early::new(engines, previous, &opts, cancel, &listen);
        let (tx, rx) = std::sync::mpsc::channel::<(usize, crate::manifest::CellRecord)>();
        let rx = std::sync::Mutex::new(rx);
        let by_record: std::collections::HashMap<usize, &accept::Candidate> =
            candidates.iter().map(|c| (c.record, c)).collect();
        let worker = || loop {
            let next = match rx.lock() {
                Ok(r) => r.recv(),
                Err(_) => break,
            };
            let Ok((i, rec)) = next else { break };
            if let Some(c) = by_record.get(&i) {
                early.accept(rec, c);
            }
        };
        let slots = opts.jobs.clamp(1, 64);
        std::thread::scope(|s| {
            for _ in 0..slots {
                s.spawn(worker);
            }
            let tx = std::sync::Mutex::new(tx);
            let built = |i: usize, rec: &crate::manifest::CellRecord| {
                // acceptance begins with the first cell built: every cell is accepted,
                // those built as they finish, those up to date after the builds
                if !announced.swap(true, std::sync::atomic::Ordering::SeqCst) {
                    listen(&Phase::Accepting {
                        images: candidates.len(),
                        verify: true,
                    });
                }
                if let Ok(t) = tx.lock() {
                    let _ = t.send((i, rec.clone()));
                }
            };
            schedule(o, engines, prepared, cancel, recorder, &shared, &built);
            // the builds' slots are free now: each takes a cell still waiting to be
            // verified, so the last builds' verifications run side by side
            for _ in 0..slots {
                s.spawn(worker);
            }
            // the workers end once the queue is empty and closed
            drop(tx);
        });
        let accepted = early.finish();
        early_done = accepted.0.iter().map(|(i, _)| *i).collect();
        let _ = recorder.accepted(accepted);
    } else {
        schedule(o, engines, prepared, cancel, recorder, &shared, &|_, _| {});
    }
    let rest: Vec<accept::Candidate> = candidates
        .into_iter()
        .filter(|c| !early_done.contains(&c.record))
        .collect();
    let opts = accept::Options {
        announced: announced.into_inner(),
        ..opts
    };
    let accepted = accept::accept(
        engines,
        recorder.manifest(),
        &rest,
        previous,
        &opts,
        cancel,
        &listen,
    );
    let _ = recorder.accepted(accepted);
    let reporter = shared
        .into_inner()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    if o.verify {
        verification_table(recorder.manifest(), before, reporter)?;
    }
    Ok(())
}

/// A failed build's log and the command that reproduces it (for the reporters and the
/// record; a cell whose shared stage failed gets its own). Builds read their context
/// on standard input: the one that failed is written to its folder here, before the
/// command that names that folder is shown.
fn reproduce(engines: &Engines, prepared: &Prepared, o: &Outcome) -> Option<(String, String)> {
    if !matches!(o.status, Status::Failed | Status::TimedOut) {
        return None;
    }
    let job: &Job = match o.job {
        JobKind::Cell(i) => &prepared.jobs[i],
        JobKind::Stage(s) => &prepared.stages[s].job,
    };
    let dir = &job.request.context_dir;
    let log = job.log_path.display().to_string();
    if let Err(e) = crate::render::write(&prepared.context(o.job), dir) {
        let why = format!(
            "its context could not be written to {}: {e}; `matrix render` writes it",
            dir.display()
        );
        return Some((log, why));
    }
    let docker: &Docker = engines
        .get(o.engine.as_deref())
        .unwrap_or(&engines.first().docker);
    let repro = format!(
        "cd {} && {}",
        crate::shell::word(&dir.display().to_string()),
        docker.build_command_line(&BuildRequest {
            context_dir: ".".into(),
            iidfile: None,
            labels: Vec::new(),
            ..job.request.clone()
        })
    );
    Some((log, repro))
}

/// Each job's context, rendered only if a build asks for it (a relabelling build
/// after an inline-cache build).
fn job_contexts<'a>(
    prepared: &'a Prepared<'_>,
) -> Vec<impl Fn(&mut dyn std::io::Write) -> std::io::Result<()> + Sync + 'a> {
    prepared
        .jobs
        .iter()
        .map(|j| {
            move |w: &mut dyn std::io::Write| {
                // the build again, as the executor sent it the first time: with the
                // download caches (an inline cache means BuildKit), so every step is
                // taken from that build's cache
                let ctx =
                    prepared.sent_context(j.kind, j.request.inline_cache && !j.request.no_cache);
                crate::render::archive::write(&ctx, w)
            }
        })
        .collect()
}

/// Every cell job as a candidate for acceptance: its record (which names its tags and
/// platform) and the candidate tag it is built under.
fn candidates<'p, F>(prepared: &'p Prepared, contexts: &'p [F]) -> Vec<accept::Candidate<'p>>
where
    F: Fn(&mut dyn std::io::Write) -> std::io::Result<()> + Sync,
{
    prepared
        .jobs
        .iter()
        .zip(contexts)
        .filter_map(|(j, context)| match j.kind {
            JobKind::Cell(record) => Some(accept::Candidate {
                record,
                candidate: j.request.tags[0].clone(),
                rebuild: j.request.inline_cache.then_some(accept::Rebuild {
                    request: &j.request,
                    context,
                }),
            }),
            JobKind::Stage(_) => None,
        })
        .collect()
}

fn accept_options(o: &Options, engines: &Engines, recorder: &Recorder) -> accept::Options {
    accept::Options {
        verify: o.verify,
        ready_timeout: 90,
        jobs: engines.iter().map(|e| e.slots.get()).sum(),
        sbom_dir: Some(
            recorder
                .path()
                .parent()
                .filter(|p| !p.as_os_str().is_empty())
                .unwrap_or(std::path::Path::new("."))
                .to_path_buf(),
        ),
        announced: false,
    }
}

/// The verification results of this run (those that changed), as a table.
fn verification_table(
    m: &Manifest,
    before: Vec<Option<Verification>>,
    reporter: &mut dyn Listener,
) -> Result<(), Error> {
    let started = m.started.clone();
    let mut report: Vec<(String, Verification)> = Vec::new();
    for (c, b) in m.cells.iter().zip(before) {
        let (Some(v), Some(tag)) = (&c.verification, c.local_tag()) else {
            continue;
        };
        if b.as_ref() == Some(v) {
            continue;
        }
        reporter.verified(&c.id, tag, v);
        let mut label = tag.to_string();
        // a result carried over for the same image ID ran in an earlier run
        if let Some(at) = v.verified_at.as_ref().filter(|at| **at < started) {
            label.push_str(&format!(" (this same image, verified {at})"));
        }
        if v.emulated {
            label.push_str(&format!(" (under emulation, {})", c.coordinates.platform));
        }
        report.push((label, v.clone()));
    }
    let table = crate::verify::table(&report);
    reporter
        .verification_table(&table)
        .map_err(|source| Error::Output {
            what: "the verification results",
            source,
        })
}

/// The publishing options of a run (`allow_partial` for staging: a shard stages what
/// passed).
fn publishing(o: &Options, allow_partial: bool) -> publish::Options {
    publish::Options {
        need_verified: o.verify,
        allow_partial,
        retries: o.retries.max(2),
        backoff: Duration::from_secs(2),
    }
}

/// `--stage`: the verified images pushed by digest to the staging repository.
fn stage(
    o: &Options,
    engines: &Engines,
    recorder: &mut Recorder,
    reporter: &mut dyn Listener,
) -> bool {
    let Some(repo) = o.stage.as_deref() else {
        return true;
    };
    let shared = std::sync::Mutex::new(&mut *reporter);
    let listen = |ev: &Phase| {
        if let Ok(mut r) = shared.lock() {
            r.phase(ev);
        }
    };
    let staged = publish::stage(
        engines,
        recorder.manifest(),
        repo,
        &publishing(o, true),
        &listen,
    );
    match staged {
        Ok((staged, all)) => {
            let _ = recorder.staged(staged);
            all
        }
        Err(why) => {
            listen(&Phase::Warning {
                id: None,
                text: format!("stage: {why}"),
            });
            false
        }
    }
}

fn push(
    o: &Options,
    engines: &Engines,
    recorder: &mut Recorder,
    reporter: &mut dyn Listener,
) -> bool {
    let opts = publishing(o, false);
    let shared = std::sync::Mutex::new(&mut *reporter);
    let listen = |ev: &Phase| {
        if let Ok(mut r) = shared.lock() {
            r.phase(ev);
        }
    };
    let r = publish::publish(engines, recorder.manifest(), &opts, &listen).map(|p| {
        let complete = p.complete;
        let _ = recorder.published(p);
        complete
    });
    match r {
        Ok(all) => all,
        Err(why) => {
            listen(&Phase::Warning {
                id: None,
                text: format!("push: {why}"),
            });
            false
        }
    }
}

/// A daemon that died mid-build (and answers again) keeps the stopped containers of
/// the steps it was running; remove those this run left, on every engine that answers.
fn remove_leftovers(engines: &Engines, m: &Manifest, reporter: &mut dyn Listener) {
    let lost: Vec<&str> = m
        .cells
        .iter()
        .flat_map(|c| c.requeued.iter().map(|r| r.engine.as_str()))
        .chain(
            m.cells
                .iter()
                .filter(|c| c.status == Status::Failed)
                .filter_map(|c| c.engine.as_deref()),
        )
        .collect();
    for e in engines.iter().filter(|e| lost.contains(&e.name.as_str())) {
        if e.docker.ping(Duration::from_secs(5)).is_err() {
            continue;
        }
        match e.docker.remove_build_leftovers(&m.started) {
            Ok(0) => {}
            Ok(n) => reporter.phase(&Phase::Info {
                id: None,
                text: format!(
                    "removed {n} stopped build container{} this run left on engine {}",
                    if n == 1 { "" } else { "s" },
                    e.name
                ),
            }),
            Err(err) => reporter.phase(&Phase::Warning {
                id: None,
                text: format!(
                    "warning: cannot list the build containers left on engine {}: {err}",
                    e.name
                ),
            }),
        }
    }
}

/// What the last phase needs to know of the run besides its record.
struct End<'a> {
    /// Where the manifest is (the reports and history go beside it).
    manifest: &'a Path,
    /// The run's log folder.
    logs: &'a Path,
    /// The run this one replaces.
    previous: Option<&'a Manifest>,
    /// Whether everything that should have been published was.
    published: bool,
    /// `--keep N`: prune the engines to the last N runs of this repository.
    prune: Option<(&'a Engines, &'a str, usize)>,
}

/// The run's outcome into the manifest, the last write (a failure to record is an
/// I/O error that names the stale file), the reports and history, pruning (which does
/// not change how the run ended), the summary and the exit.
fn finish(
    mut recorder: Recorder,
    reporter: &mut dyn Listener,
    reports: Reports,
    cancel: &Cancel,
    end: &End,
) -> Result<Exit, Error> {
    let outcome = match cancel.reason() {
        Some(Reason::Signal(s)) => RunOutcome::Interrupted {
            signal: s.name().into(),
        },
        Some(Reason::FailFast) => RunOutcome::FailedFast,
        None if recorder.manifest().engines.iter().all(|e| e.down.is_some()) => {
            RunOutcome::EnginesLost
        }
        None => RunOutcome::Completed,
    };
    let written = recorder.close(outcome);
    let m = recorder.manifest();
    let reports = reports(m, end.previous, end.manifest, end.logs);
    if written.is_ok() {
        if let Err(e) = crate::prune::archive(m, end.manifest) {
            reporter.phase(&Phase::Warning {
                id: None,
                text: format!("warning: cannot keep this run in history/: {e}"),
            });
        }
    }
    if let (Some((engines, repository, keep)), true) = (end.prune, written.is_ok()) {
        prune(engines, repository, keep, end.manifest, reporter);
    }
    let result = match (written, cancel.signal()) {
        (Err(source), _) => Err(Error::StaleManifest {
            path: end.manifest.to_path_buf(),
            source,
        }),
        (Ok(()), Some(s)) => Ok(Exit::Stopped(s)),
        (Ok(()), None) => {
            let bad = m.cells.iter().any(|c| {
                matches!(
                    c.status,
                    Status::Failed | Status::TimedOut | Status::Cancelled | Status::NotStarted
                ) || c.verification.as_ref().is_some_and(|v| !v.ok)
                    || c.pushed.iter().any(|p| !p.ok)
            });
            Ok(Exit::from_ok(!bad && end.published))
        }
    };
    let code = result.as_ref().map_or_else(Error::exit_code, |e| e.code());
    let reports: Vec<&Path> = reports.iter().map(PathBuf::as_path).collect();
    reporter.run_finished(m, end.manifest, &reports, code);
    result
}

/// Prune every engine to the last `keep` runs, each result an event.
fn prune(
    engines: &Engines,
    repository: &str,
    keep: usize,
    manifest: &Path,
    reporter: &mut dyn Listener,
) {
    match crate::prune::prune_engines(engines, repository, manifest, keep) {
        Err(e) => reporter.phase(&Phase::Warning {
            id: None,
            text: format!("prune: {e}"),
        }),
        Ok((0, _)) => reporter.phase(&Phase::Info {
            id: None,
            text: crate::prune::no_history(manifest),
        }),
        Ok((runs, done)) => {
            for d in &done {
                reporter.phase(&Phase::Pruned {
                    engine: &d.engine,
                    text: d.line(repository, runs),
                    result: &d.result,
                });
            }
        }
    }
}

/// A second signal: every build and query group killed, verify containers removed.
pub fn on_urgent() {
    crate::docker::kill_all_groups();
    crate::verify::remove_all_containers();
}
