//! `matrix build`: plan → engines → prepare → schedule (the reporter and the manifest
//! recorder listen) → tags → verify → publish → the final record and summary.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use super::{load_plan, print, select};
use crate::cli::{BuildArgs, Cli};
use crate::docker::{BuildRequest, Docker};
use crate::engines::{self, Connected, Engines};
use crate::error::{Error, Exit};
use crate::manifest::{io, DockerInfo, EngineRecord, Manifest, RunOutcome, Status, Verification};
use crate::plan::Plan;
use crate::publish;
use crate::report::progress::Progress;
use crate::run::accept;
use crate::run::events::{Event, Outcome, Phase};
use crate::run::executor::{DockerExecutor, Job, JobKind};
use crate::run::prepare::{self, Paths, Prepared};
use crate::run::recorder::Recorder;
use crate::run::scheduler;
use crate::signals::{self, Cancel, Reason};

/// How often the manifest is rewritten while cells finish (and at the end).
const RECORD_EVERY: Duration = Duration::from_secs(2);

pub fn run(cli: &Cli, args: &BuildArgs) -> Result<Exit, Error> {
    // First of all: from here on a signal stops the run with a record of it, whatever
    // the run is doing (a hung docker query included).
    let cancel = signals::install(on_urgent);
    let plan = load_plan(cli, &args.select)?;
    let cells = select(&plan, &args.select);
    if cells.is_empty() {
        // A nightly whose filter matches nothing must not look like a quiet success.
        return Err(Error::Usage(format!(
            "no cell of {} matches the selection ({} cells planned); check --filter / --shard with `matrix plan`",
            plan.matrix_file.display(),
            plan.cells.len()
        )));
    }
    let out = Outputs::new(args);
    prepare::writable_dir(&out.out).map_err(Error::Preflight)?;
    let _lock = crate::lock::acquire(&out.out).map_err(Error::Preflight)?;
    out.preflight()?;
    // last night's record: where bases were, which images were verified
    let previous = io::read(&out.manifest).ok();
    let (connected, prepared) = match ready(&plan, &cells, args, &out, previous.as_ref(), &cancel) {
        Ready::Go(c, p) => (c, p),
        Ready::Stopped(connected) => {
            return stopped_before_builds(&plan, &cells, args, connected.as_ref(), &out, &cancel)
        }
        Ready::Failed(e) => return Err(e),
    };
    let mut recorder = Recorder::new(
        initial_manifest(&plan, args, &connected, &prepared),
        &out.manifest,
        RECORD_EVERY,
    );
    recorder
        .write()
        .map_err(|e| Error::write(&out.manifest, e))?;
    let mut reporter = Progress::new(
        args.progress(),
        prepared.jobs.len(),
        connected.engines.len() > 1,
    );
    let all_jobs: Vec<&Job> = prepared
        .jobs
        .iter()
        .chain(prepared.stages.iter().map(|s| &s.job))
        .collect();
    reporter.run_started(recorder.manifest(), &out.manifest, &all_jobs);
    let outcomes = schedule(
        args,
        &connected.engines,
        &prepared,
        &cancel,
        &mut recorder,
        &mut reporter,
    );
    drop(outcomes);
    accept_cells(
        args,
        &connected.engines,
        &prepared,
        &mut recorder,
        &mut reporter,
        previous.as_ref(),
        &cancel,
    )?;
    // A refused push (some cell not built, or its engine gone) fails the run even when
    // every cell built: nothing was published.
    let published = !args.push
        || cancel.is_set()
        || push(args, &connected.engines, &mut recorder, &mut reporter);
    remove_leftovers(&connected.engines, recorder.manifest());
    let keep = args.keep;
    let done = finish(
        recorder,
        &mut reporter,
        &cancel,
        &out.manifest,
        previous.as_ref(),
        published,
    )?;
    if let (Some(n), false) = (keep, cancel.is_set()) {
        super::prune::prune_all(
            &connected.engines,
            &plan.settings.repository,
            &out.manifest,
            n as usize,
        );
    }
    Ok(done)
}

/// A second signal: every build and query group killed, verify containers removed.
fn on_urgent() {
    crate::docker::kill_all_groups();
    crate::verify::remove_all_containers();
}

/// What the steps before the builds came to.
enum Ready<'p> {
    Go(Connected, Prepared<'p>),
    /// A signal arrived before any build started (the engines, if they were reached).
    Stopped(Option<Connected>),
    Failed(Error),
}

/// The engines reached, the bases resolved and every context rendered, with a look at
/// the cancel flag after each step: a signal during any of them (a hung query is
/// killed by it) ends the run before a build starts, and wins over the error the
/// killed query caused.
fn ready<'p>(
    plan: &'p Plan,
    cells: &[&'p crate::plan::Cell],
    args: &BuildArgs,
    out: &Outputs,
    previous: Option<&Manifest>,
    cancel: &Cancel,
) -> Ready<'p> {
    let connected = match connect(plan, args) {
        _ if cancel.is_set() => return Ready::Stopped(None),
        Ok(c) => c,
        Err(e) => return Ready::Failed(e),
    };
    let prepared = (|| {
        let mut settings = prepare_settings(plan, args, &connected.engines)?;
        check_cache(&settings.cache, &connected.engines)?;
        check_platforms(cells, &connected.engines)?;
        if cancel.is_set() {
            return Ok(None);
        }
        settings.bases = resolve_bases(cells, &connected.engines, args.pull, previous)?;
        settings.recorded = recorded_hashes(previous);
        if cancel.is_set() {
            return Ok(None);
        }
        let prepared = prepare::prepare(plan, cells, &out.paths, &settings, &mut |job, ctx| {
            crate::render::write(ctx, &job.request.context_dir)
                .map_err(|e| Error::write(&job.request.context_dir, e))
        })?;
        Ok(Some(prepared))
    })();
    match prepared {
        _ if cancel.is_set() => Ready::Stopped(Some(connected)),
        Ok(Some(p)) => {
            remove_stale_outputs(&p);
            carry_over(&connected.engines, &p, previous);
            Ready::Go(connected, p)
        }
        Ok(None) => Ready::Stopped(Some(connected)),
        Err(e) => Ready::Failed(e),
    }
}

/// Last night's logs and image IDs of the jobs about to run: a stale image ID would
/// make an up-to-date cell report last night's build.
fn remove_stale_outputs(prepared: &Prepared) {
    for j in prepared
        .jobs
        .iter()
        .chain(prepared.stages.iter().map(|s| &s.job))
    {
        let _ = std::fs::remove_file(&j.log_path);
        if let Some(iid) = &j.request.iidfile {
            let _ = std::fs::remove_file(iid);
        }
    }
}

/// A run stopped before its first build: a manifest that says so (every selected cell
/// not started, the engines as far as they were reached) and the signal's exit code.
/// It goes to no history: it built nothing, and must not count as a night for prune.
fn stopped_before_builds(
    plan: &Plan,
    cells: &[&crate::plan::Cell],
    args: &BuildArgs,
    connected: Option<&Connected>,
    out: &Outputs,
    cancel: &Cancel,
) -> Result<Exit, Error> {
    let signal = cancel.signal().unwrap_or(signals::Signal::Interrupt);
    let why = format!(
        "not started: {} before the builds began",
        cancel
            .reason()
            .unwrap_or(signals::Reason::Signal(signal))
            .describe()
    );
    let mut m = Manifest::new(
        &plan.matrix_file.display().to_string(),
        &plan.matrix_sha256,
        None,
    );
    m.repository = Some(plan.settings.repository.clone());
    if let Some(c) = connected {
        m.docker = docker_info(c);
        m.engines = engine_records(args, c);
    }
    m.cells = cells
        .iter()
        .map(|c| crate::manifest::CellRecord {
            status: Status::NotStarted,
            reason: Some(why.clone()),
            ..prepare::record_for(c, None)
        })
        .chain(plan.excluded.iter().map(prepare::excluded_record))
        .collect();
    record_shard(&mut m, plan, args);
    m.outcome = Some(RunOutcome::Interrupted {
        signal: signal.name().into(),
    });
    m.finished = Some(crate::manifest::now());
    io::write(&out.manifest, &m).map_err(|source| Error::StaleManifest {
        path: out.manifest.clone(),
        source,
    })?;
    crate::term::line(&format!(
        "{}: stopped before any build started; {} records it",
        signal.name(),
        out.manifest.display()
    ));
    Ok(Exit::Stopped(signal))
}

/// Where this run's files go, and the lock that keeps a second run out.
struct Outputs {
    paths: Paths,
    manifest: PathBuf,
    out: PathBuf,
}

impl Outputs {
    fn new(args: &BuildArgs) -> Outputs {
        Outputs {
            paths: Paths {
                contexts: args.out.join("contexts"),
                logs: args
                    .log_dir
                    .clone()
                    .unwrap_or_else(|| args.out.join("logs")),
                iid: args.out.join("iid"),
            },
            manifest: args
                .manifest
                .clone()
                .unwrap_or_else(|| args.out.join("manifest.json")),
            out: args.out.clone(),
        }
    }

    /// Every directory writable, the manifest ours to replace, and what a killed run
    /// left behind cleaned up.
    fn preflight(&self) -> Result<(), Error> {
        let manifest_dir = self
            .manifest
            .parent()
            .filter(|p| !p.as_os_str().is_empty())
            .map_or_else(|| PathBuf::from("."), Path::to_path_buf);
        for d in [
            &self.out,
            &self.paths.contexts,
            &self.paths.logs,
            &self.paths.iid,
            &manifest_dir,
        ] {
            prepare::writable_dir(d).map_err(Error::Preflight)?;
        }
        io::check_target(&self.manifest).map_err(|e| {
            Error::Preflight(format!("--manifest {}: {e}", self.manifest.display()))
        })?;
        io::clean_stale_temps(&manifest_dir);
        Ok(())
    }
}

fn connect(plan: &Plan, args: &BuildArgs) -> Result<Connected, Error> {
    let specs = engines::specs(
        &args.docker.engines,
        args.docker.context.as_deref(),
        &plan.settings.engines,
        &[],
    )
    .map_err(Error::Usage)?;
    let mut c = engines::connect(&args.docker.docker, args.builder, specs, args.jobs)?;
    c.engines
        .resolve_builders(args.builder, args.buildx_builder.as_deref())
        .map_err(Error::Preflight)?;
    Ok(c)
}

/// The registry cache needs BuildKit on every engine: the legacy builder takes cache
/// only from images already pulled, and writes no cache metadata.
fn check_cache(cache: &crate::config::settings::Cache, engines: &Engines) -> Result<(), Error> {
    if !cache.is_set() {
        return Ok(());
    }
    match engines.iter().find(|e| !e.docker.builder.is_buildkit()) {
        None => Ok(()),
        Some(e) => Err(Error::Usage(format!(
            "the registry cache (`cache:` in the matrix, --cache-from, --cache-to) needs BuildKit, but engine {} builds with the {} builder{}; pass --builder buildx or --builder buildkit",
            e.name,
            e.docker.builder.name(),
            if e.docker.builder == crate::docker::Builder::Auto {
                " (its client has no buildx plugin, and its default is the legacy builder)"
            } else {
                ""
            }
        ))),
    }
}

fn prepare_settings(
    plan: &Plan,
    args: &BuildArgs,
    engines: &Engines,
) -> Result<prepare::Settings, Error> {
    let resumed = match &args.resume {
        None => HashMap::new(),
        Some(p) => io::read(p)
            .map_err(|e| Error::Preflight(format!("--resume: {e}")))?
            .cells
            .into_iter()
            .filter(|c| c.status.succeeded())
            .filter_map(|c| Some((c.id, c.input_hash?)))
            .collect(),
    };
    let mut native: Vec<String> = engines
        .iter()
        .map(engines::Engine::native_platform)
        .collect();
    native.sort();
    native.dedup();
    Ok(prepare::Settings {
        network: args
            .network
            .clone()
            .or_else(|| plan.settings.network.clone()),
        pull: args.pull,
        no_cache: args.no_cache,
        check_current: !args.force,
        native,
        labels: super::image_labels(plan),
        resumed,
        recorded: HashMap::new(),
        bases: prepare::Bases::default(),
        cache: super::cache_settings(plan, &args.cache),
    })
}

fn initial_manifest(
    plan: &Plan,
    args: &BuildArgs,
    connected: &Connected,
    prepared: &Prepared,
) -> Manifest {
    let mut m = Manifest::new(
        &plan.matrix_file.display().to_string(),
        &plan.matrix_sha256,
        docker_info(connected),
    );
    m.repository = Some(plan.settings.repository.clone());
    m.engines = engine_records(args, connected);
    m.cells = prepared.records.clone();
    record_shard(&mut m, plan, args);
    m
}

/// The first engine's client, server and builder.
fn docker_info(connected: &Connected) -> Option<DockerInfo> {
    let first = connected.engines.first();
    Some(DockerInfo {
        client: first.server.client_version.clone(),
        server: first.server.server_version.clone(),
        builder: first.docker.builder.name().into(),
    })
}

/// Every engine of the run, those that did not answer at the start included.
fn engine_records(args: &BuildArgs, connected: &Connected) -> Vec<EngineRecord> {
    connected
        .engines
        .iter()
        .map(engines::Engine::record)
        .chain(connected.down.iter().map(|(spec, e)| EngineRecord {
            name: spec.name.clone(),
            target: spec.target.clone(),
            jobs: spec.jobs.unwrap_or(args.jobs.get()),
            server: String::new(),
            down: Some(format!("did not answer at the start: {e}")),
            platforms: spec.platforms.clone(),
            buildx_builder: spec.buildx_builder.clone(),
        }))
        .collect()
}

/// A shard's record names the whole selection, so that merge and push can tell a
/// missing shard.
fn record_shard(m: &mut Manifest, plan: &Plan, args: &BuildArgs) {
    if let Some(shard) = args.select.shard {
        let picked = crate::coord::select(&plan.cells, &args.select.filters);
        m.planned = crate::plan::family::with_parents(&plan.cells, &picked)
            .iter()
            .map(|c| c.id.clone())
            .collect();
        m.shards = vec![shard.to_string()];
    }
}

/// Each cell's input hash as the previous manifest records it.
fn recorded_hashes(previous: Option<&Manifest>) -> HashMap<String, String> {
    previous.map_or_else(HashMap::new, |m| {
        m.cells
            .iter()
            .filter_map(|c| Some((c.id.clone(), c.input_hash.clone()?)))
            .collect()
    })
}

/// Images current under another name: a cell whose repository or tag was renamed since
/// the previous manifest but whose identity is the same (names are not part of it) gets
/// its new local tag on the image it had, on the engine that has it, where the
/// scheduler then finds it current. A rename retags; it rebuilds nothing. (The image
/// keeps the labels it was built with, the old repository's among them.) Where the
/// image is gone, the tag fails and the cell is built.
fn carry_over(engines: &Engines, prepared: &Prepared, previous: Option<&Manifest>) {
    let Some(previous) = previous else { return };
    let by_id: HashMap<&str, &crate::manifest::CellRecord> =
        previous.cells.iter().map(|r| (r.id.as_str(), r)).collect();
    for job in prepared.jobs.iter().filter(|j| j.check_current) {
        let (Some(tag), Some(prev)) = (&job.primary_tag, by_id.get(job.id.as_str())) else {
            continue;
        };
        let same = prev
            .input_hash
            .as_ref()
            .is_some_and(|h| *h == job.input_hash || job.legacy_hash.as_ref() == Some(h));
        let renamed = prev
            .platform_tag
            .as_ref()
            .map_or_else(|| !prev.tags.contains(tag), |t| t != tag);
        if !(same && renamed && prev.status.succeeded()) {
            continue;
        }
        if let (Some(id), Some(docker)) = (&prev.image_id, engines.get(prev.engine.as_deref())) {
            let _ = docker.tag(id, tag);
        }
    }
}

/// Run the jobs; the reporter draws each event and the recorder applies it.
fn schedule(
    args: &BuildArgs,
    engines: &Engines,
    prepared: &Prepared,
    cancel: &Cancel,
    recorder: &mut Recorder,
    reporter: &mut Progress,
) -> Vec<Outcome> {
    let execs: Vec<DockerExecutor> = engines
        .iter()
        .map(|e| DockerExecutor {
            docker: e.docker.clone(),
            grace: args.kill_grace,
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
        engine_check: args.engine_check,
        fail_fast: args.fail_fast,
        timeout: args.timeout,
        retries: args.retries,
        backoff: Duration::from_secs(5),
        check_threads: args.jobs,
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
            reporter.event(ev, failed.as_ref().map(|(_, (_, repro))| repro.as_str()));
            recorder.apply(ev);
            if let Some((o, (log, repro))) = failed {
                // a cell failed with its shared stage did not run; the stage's failure
                // was shown
                if o.attempts > 0 {
                    reporter.failure(o, &log, &repro);
                }
                if let JobKind::Cell(i) = o.job {
                    recorder.reproduce(i, repro);
                }
            }
        },
    );
    reporter.finish();
    outcomes
}

/// A failed build's log and the command that reproduces it (for the reporters and the
/// record; a cell whose shared stage failed gets its own).
fn reproduce(engines: &Engines, prepared: &Prepared, o: &Outcome) -> Option<(String, String)> {
    if !matches!(o.status, Status::Failed | Status::TimedOut) {
        return None;
    }
    let job: &Job = match o.job {
        JobKind::Cell(i) => &prepared.jobs[i],
        JobKind::Stage(s) => &prepared.stages[s].job,
    };
    let docker: &Docker = engines
        .get(o.engine.as_deref())
        .unwrap_or(&engines.first().docker);
    let repro = format!(
        "cd {} && {}",
        crate::shell::word(&job.request.context_dir.display().to_string()),
        docker.build_command_line(&BuildRequest {
            context_dir: ".".into(),
            iidfile: None,
            labels: Vec::new(),
            ..job.request.clone()
        })
    );
    Some((job.log_path.display().to_string(), repro))
}

/// Versions, verification, then the public tags, for every cell that built or was
/// up to date.
fn accept_cells(
    args: &BuildArgs,
    engines: &Engines,
    prepared: &Prepared,
    recorder: &mut Recorder,
    reporter: &mut Progress,
    previous: Option<&Manifest>,
    cancel: &Cancel,
) -> Result<(), Error> {
    let candidates: Vec<accept::Candidate> = prepared
        .jobs
        .iter()
        .zip(&prepared.cells)
        .enumerate()
        .map(|(i, (j, c))| accept::Candidate {
            record: i,
            cell: c,
            candidate: j.request.tags[0].clone(),
            rebuild: j.request.inline_cache.then_some(&j.request),
        })
        .collect();
    let opts = accept::Options {
        verify: args.verify,
        ready_timeout: 90,
        jobs: engines.iter().map(|e| e.slots.get()).sum(),
    };
    let before: Vec<Option<Verification>> = recorder
        .manifest()
        .cells
        .iter()
        .map(|c| c.verification.clone())
        .collect();
    let accepted = {
        // acceptance runs on several threads; the reporter hears them one at a time
        let shared = std::sync::Mutex::new(&mut *reporter);
        let listen = |ev: &Phase| {
            if let Ok(mut r) = shared.lock() {
                r.phase(ev);
            }
        };
        accept::accept(
            engines,
            recorder.manifest(),
            &candidates,
            previous,
            &opts,
            cancel,
            &listen,
        )
    };
    let _ = recorder.accepted(accepted);
    if args.verify {
        let started = recorder.manifest().started.clone();
        let mut report: Vec<(String, Verification)> = Vec::new();
        for (c, b) in recorder.manifest().cells.iter().zip(before) {
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
        if reporter.is_json() {
            // stdout carries only events; the table is for people
            reporter.line(table.trim_end());
        } else {
            print("the verification results", &table)?;
        }
    }
    Ok(())
}

/// Which engine builds which of the selection's platforms, and how; a platform no
/// engine builds stops the run before anything is built.
fn check_platforms(cells: &[&crate::plan::Cell], engines: &Engines) -> Result<(), Error> {
    let mut platforms: Vec<&str> = cells.iter().map(|c| c.platform()).collect();
    platforms.sort_unstable();
    platforms.dedup();
    let foreign = engines
        .iter()
        .any(|e| platforms.iter().any(|p| e.builds(p) && e.emulates(p)));
    if platforms.len() > 1 || foreign {
        for e in engines.iter() {
            let what: Vec<String> = platforms
                .iter()
                .filter(|p| e.builds(p))
                .map(|p| format!("{p} ({})", e.how(p)))
                .collect();
            if !what.is_empty() {
                crate::term::line(&format!("engine {} builds {}", e.name, what.join(", ")));
            }
        }
    }
    let missing: Vec<&str> = platforms
        .iter()
        .copied()
        .filter(|p| !engines.iter().any(|e| e.builds(p)))
        .collect();
    if missing.is_empty() {
        return Ok(());
    }
    let have: Vec<String> = engines
        .iter()
        .map(|e| format!("{} builds {}", e.name, e.platforms.join(", ")))
        .collect();
    Err(Error::Preflight(format!(
        "no engine builds {} ({}); add one that does (--engine NAME=TARGET,platform={}) or, on an engine on this host, enable emulation: {}",
        missing.join(", "),
        have.join("; "),
        missing[0],
        crate::emulation::how_to_enable(missing[0])
    )))
}

/// What each base of the selection resolves to (per platform) and which engines hold
/// it, and a line for every base that moved since the previous manifest. A base no
/// engine that builds its platform can hold (they hold the name for another platform)
/// stops the run before anything is built.
fn resolve_bases(
    cells: &[&crate::plan::Cell],
    engines: &Engines,
    pull: bool,
    previous: Option<&Manifest>,
) -> Result<prepare::Bases, Error> {
    let mut keys: Vec<(String, String)> = cells
        .iter()
        .map(|c| (c.base.reference.clone(), c.platform().to_string()))
        .collect();
    keys.sort();
    keys.dedup();
    let fetch = if pull {
        engines::Fetch::Always
    } else {
        engines::Fetch::IfMissing
    };
    let resolved = engines::resolve_bases(engines, &keys, fetch);
    let mut out = prepare::Bases::default();
    for (key, r) in keys.into_iter().zip(resolved) {
        if !r.disagree.is_empty() {
            crate::term::line(&format!(
                "warning: engines {} hold another image under {} for {} than the one used ({}); its cells build elsewhere; --pull aligns them",
                r.disagree.join(", "),
                key.0,
                key.1,
                r.digest.as_deref().map_or("none", crate::plan::axes::short)
            ));
        }
        if r.holders.is_empty() && !r.other_platform.is_empty() {
            let held: Vec<String> = r
                .other_platform
                .iter()
                .map(|(e, p)| format!("engine {e} holds it for {p}"))
                .collect();
            return Err(Error::Preflight(format!(
                "base {} for {}: no engine that builds {} holds it ({}), and pulling it there would take it from that platform's cells; give an engine of its own to {} (--engine NAME=TARGET,platform={}), or build on the buildx backend",
                key.0, key.1, key.1, held.join("; "), key.1, key.1
            )));
        }
        let digest = r.digest.unwrap_or_else(|| prepare::UNRESOLVED.to_string());
        let before = previous.and_then(|m| {
            m.cells
                .iter()
                .find(|p| p.coordinates.base == key.0 && p.coordinates.platform == key.1)
                .and_then(|p| p.base_digest.clone())
        });
        if let Some(b) = before.filter(|b| *b != digest) {
            crate::term::line(&format!(
                "base {} ({}) moved since the last run: {} → {}",
                key.0,
                key.1,
                crate::plan::axes::short(&b),
                crate::plan::axes::short(&digest)
            ));
        }
        out.holders.insert(key.clone(), r.holders);
        out.digests.insert(key, digest);
    }
    Ok(out)
}

fn push(
    args: &BuildArgs,
    engines: &Engines,
    recorder: &mut Recorder,
    reporter: &mut Progress,
) -> bool {
    let opts = publish::Options {
        need_verified: args.verify,
        allow_partial: false,
        retries: args.retries.max(2),
        backoff: Duration::from_secs(2),
    };
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
            crate::term::line(&format!("push: {why}"));
            false
        }
    }
}

/// A daemon that died mid-build (and answers again) keeps the stopped containers of
/// the steps it was running; remove those this run left, on every engine that answers.
fn remove_leftovers(engines: &Engines, m: &Manifest) {
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
            Ok(n) => crate::term::line(&format!(
                "removed {n} stopped build container{} this run left on engine {}",
                if n == 1 { "" } else { "s" },
                e.name
            )),
            Err(err) => crate::term::line(&format!(
                "warning: cannot list the build containers left on engine {}: {err}",
                e.name
            )),
        }
    }
}

/// report.html and report.md beside the manifest (derived from it: a failure to
/// write them is said, and does not change how the run ended). Returns those written.
fn write_reports(m: &Manifest, previous: Option<&Manifest>, manifest_path: &Path) -> Vec<PathBuf> {
    let mut written = Vec::new();
    let dir = manifest_path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    for (name, format) in [
        ("report.html", crate::cli::ReportFormat::Html),
        ("report.md", crate::cli::ReportFormat::Markdown),
    ] {
        let path = dir.join(name);
        let text = super::report::render(format, m, previous, manifest_path);
        match io::write_text(&path, &text) {
            Ok(()) => written.push(path),
            Err(e) => crate::term::line(&format!("warning: cannot write {}: {e}", path.display())),
        }
    }
    written
}

/// The run's outcome into the manifest, the last write (a failure to record is an
/// I/O error that names the stale file), the summary and the exit.
fn finish(
    mut recorder: Recorder,
    reporter: &mut Progress,
    cancel: &Cancel,
    manifest_path: &Path,
    previous: Option<&Manifest>,
    published: bool,
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
    let reports = write_reports(m, previous, manifest_path);
    if written.is_ok() {
        if let Err(e) = crate::prune::archive(m, manifest_path) {
            crate::term::line(&format!("warning: cannot keep this run in history/: {e}"));
        }
    }
    let result = match (written, cancel.signal()) {
        (Err(source), _) => Err(Error::StaleManifest {
            path: manifest_path.to_path_buf(),
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
            Ok(Exit::from_ok(!bad && published))
        }
    };
    let code = result.as_ref().map_or_else(Error::exit_code, |e| e.code());
    let reports: Vec<&Path> = reports.iter().map(PathBuf::as_path).collect();
    reporter.run_finished(m, manifest_path, &reports, code);
    result
}
