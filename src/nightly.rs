//! `matrix build` and `matrix push`: plan → contexts → scheduler → manifest → push.
//!
//! The orchestration lives here; the pieces it wires (planner, renderer, scheduler,
//! executor, reporter, manifest) each do one thing. Errors that stop the run before
//! anything starts (`Err`) are preflight problems; build failures are outcomes.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::time::Duration;

use sha2::{Digest, Sha256};

use crate::cli::{BuildArgs, PushArgs};
use crate::docker::{BuildRequest, Docker};
use crate::engine::{EngineSpec, Engines, Target};
use crate::executor::{DockerExecutor, Job};
use crate::exit;
use crate::manifest::{
    self, CellRecord, Coordinates, DockerInfo, Installer, Manifest, Pushed, Status,
};
use crate::plan::{hex, Cell, Plan};
use crate::render;
use crate::reporter::Reporter;
use crate::scheduler::{self, Cancel, Event, Warm};

/// Install SIGINT/SIGTERM handling: the first signal cancels (builds get SIGTERM, then
/// SIGKILL after a grace period); a second one kills every build group at once and exits.
pub fn install_signals(cancel: &Cancel, on_second: fn()) {
    use signal_hook::consts::{SIGINT, SIGTERM};
    let Ok(mut signals) = signal_hook::iterator::Signals::new([SIGINT, SIGTERM]) else {
        return;
    };
    let cancel = cancel.clone();
    std::thread::spawn(move || {
        for sig in signals.forever() {
            let why = if sig == SIGTERM {
                Cancel::TERMINATE
            } else {
                Cancel::INTERRUPT
            };
            if cancel.is_set() && cancel.get() != Cancel::FAIL_FAST {
                crate::err("second signal: killing every build now");
                on_second();
                std::process::exit(if cancel.get() == Cancel::TERMINATE {
                    exit::TERMINATED
                } else {
                    exit::INTERRUPTED
                });
            }
            cancel.set(why);
            crate::err("stopping: running builds get SIGTERM, then SIGKILL after the grace period (signal again to stop at once)");
        }
    });
}

/// The name of the one engine when none is configured.
pub const DEFAULT_ENGINE: &str = "default";

/// Which engines to use: those a manifest recorded, re-pointed or extended by
/// `--engine`; with nothing recorded, `--engine` alone, else the matrix's `engines:`,
/// else the client's default engine.
pub fn engine_specs(
    args: &crate::cli::DockerArgs,
    configured: &[EngineSpec],
    recorded: &[manifest::EngineRecord],
) -> Vec<EngineSpec> {
    let mut specs: Vec<EngineSpec> = recorded
        .iter()
        .map(|r| EngineSpec {
            name: r.name.clone(),
            target: r.target.clone(),
            jobs: Some(r.jobs),
        })
        .collect();
    for a in &args.engines {
        match specs.iter_mut().find(|s| s.name == a.name) {
            Some(s) => *s = a.clone(),
            None => specs.push(a.clone()),
        }
    }
    if specs.is_empty() {
        specs = configured.to_vec();
    }
    if specs.is_empty() {
        specs.push(EngineSpec {
            name: DEFAULT_ENGINE.into(),
            target: args
                .context
                .clone()
                .map_or(Target::Default, Target::Context),
            jobs: None,
        });
    }
    specs
}

/// The engines that answered the preflight (with their client version, server
/// version and arch, in the same order) and those that did not (with why).
pub struct Connected {
    pub engines: Engines,
    pub versions: Vec<(String, String, String)>,
    pub down: Vec<(EngineSpec, String)>,
}

/// Ask every engine whether it answers (in parallel). Engines that do not are left out
/// with a warning, unless none answers: then one clear error and the preflight code.
pub fn connect(
    args: &crate::cli::DockerArgs,
    builder: crate::cli::Builder,
    specs: Vec<EngineSpec>,
) -> Result<Connected, i32> {
    if let Err(e) = crate::engine::check_unique(&specs) {
        crate::err(&format!("error: {e}"));
        return Err(exit::USAGE);
    }
    let checked: Vec<(EngineSpec, Docker, _)> = std::thread::scope(|s| {
        let handles: Vec<_> = specs
            .into_iter()
            .map(|spec| {
                s.spawn(move || {
                    let d = spec.docker(&args.docker, builder);
                    let v = d.versions();
                    (spec, d, v)
                })
            })
            .collect();
        handles.into_iter().filter_map(|h| h.join().ok()).collect()
    });
    let several = checked.len() > 1;
    let (mut up, mut answered, mut down) = (Vec::new(), Vec::new(), Vec::new());
    for (spec, d, v) in checked {
        match v {
            Ok(v) => {
                up.push((spec, d));
                answered.push(v);
            }
            Err(e) => {
                let place = if several {
                    format!("engine {} at {}", spec.name, spec.target)
                } else {
                    format!(
                        "{}{}",
                        d.client.display(),
                        d.context
                            .as_ref()
                            .map(|c| format!(" --context {c}"))
                            .unwrap_or_default()
                    )
                };
                crate::err(&format!(
                    "{}: the Docker daemon does not answer ({place}): {e}",
                    if several { "warning" } else { "error" }
                ));
                down.push((spec, e));
            }
        }
    }
    match Engines::new(up) {
        Some(engines) => Ok(Connected {
            engines,
            versions: answered,
            down,
        }),
        None => {
            crate::err(
                "error: no Docker engine answers; start one (e.g. scripts/start-dockerd.sh) or point DOCKER_HOST / --context / --engine at one",
            );
            Err(exit::PREFLIGHT)
        }
    }
}

pub fn record_for(c: &Cell, input_hash: Option<String>) -> CellRecord {
    CellRecord {
        id: c.id.clone(),
        tags: c.tags.clone(),
        coordinates: Coordinates {
            python: c.python.to_string(),
            miniconda: c.miniconda.to_string(),
            base: c.base.reference.clone(),
            os: c.base.os.slug(),
            cuda: c.base.cuda.as_ref().map(|x| x.version.to_string()),
            cudnn: c.base.cuda.as_ref().and_then(|x| x.cudnn.clone()),
            flavor: c.base.cuda.as_ref().map(|x| x.flavor.clone()),
            platform: c.platform.clone(),
            variant: c.variant.name.clone(),
        },
        installer: Some(Installer {
            file: c.installer.file.clone(),
            sha256: c.installer.sha256.clone(),
        }),
        input_hash,
        input_parts: std::collections::BTreeMap::new(),
        status: Status::NotStarted,
        attempts: 0,
        exit_code: None,
        duration_seconds: 0.0,
        log: None,
        image_id: None,
        size_bytes: None,
        reason: None,
        verification: None,
        pushed: Vec::new(),
        engine: None,
        requeued: Vec::new(),
    }
}

fn preflight_dir(dir: &Path) -> Result<(), String> {
    std::fs::create_dir_all(dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    tempfile::tempfile_in(dir)
        .map(|_| ())
        .map_err(|e| format!("{} is not writable: {e}", dir.display()))
}

fn git_revision(dir: &Path) -> Option<String> {
    let args = vec![
        "-C".to_string(),
        dir.display().to_string(),
        "rev-parse".into(),
        "HEAD".into(),
    ];
    crate::docker::run_program(Path::new("git"), &args, None, Duration::from_secs(5))
        .ok()
        .filter(|(c, _, _)| *c == 0)
        .map(|(_, o, _)| String::from_utf8_lossy(&o).trim().to_string())
}

fn hash_files(ctx: &render::Context, prefixes: &[&str], base: &str) -> String {
    let mut h = Sha256::new();
    h.update(base.as_bytes());
    for f in ctx
        .files
        .iter()
        .filter(|f| prefixes.iter().any(|p| f.path.starts_with(p)))
    {
        h.update(f.path.as_bytes());
        h.update([0]);
        h.update(&f.bytes);
    }
    hex(&h.finalize())
}

/// Group cells whose shared stages are identical; a group of two or more gets one
/// warm-up build of that stage before its cells run.
fn warm_groups(
    keys: &[String],
    target: &str,
    jobs: &[Job],
    log_dir: &Path,
    proto: &BuildRequest,
) -> Vec<Warm> {
    let mut groups: BTreeMap<&str, Vec<usize>> = BTreeMap::new();
    for (i, k) in keys.iter().enumerate() {
        groups.entry(k).or_default().push(i);
    }
    groups
        .into_iter()
        .filter(|(_, m)| m.len() >= 2)
        .map(|(k, members)| {
            let first = &jobs[members[0]];
            let id = format!("shared:{target}:{}", &k[..12]);
            let mut request = first.request.clone();
            request.tags.clear();
            request.labels.clear();
            request.iidfile = None;
            request.target = Some(target.to_string());
            request.network.clone_from(&proto.network);
            Warm {
                job: Job {
                    id: id.clone(),
                    request,
                    log_path: log_dir.join(format!("{}.log", id.replace(':', "-"))),
                    input_hash: k.to_string(),
                    primary_tag: None,
                    affinity: first.affinity.clone(),
                },
                members,
            }
        })
        .collect()
}

pub fn build(plan: &Plan, args: &BuildArgs) -> i32 {
    let cells: Vec<&Cell> = crate::select(plan, &args.select);
    if cells.is_empty() {
        // A nightly whose filter matches nothing must not look like a quiet success.
        crate::err(&format!(
            "error: no cell of {} matches the selection ({} cells planned); check --filter / --shard with `matrix plan`",
            plan.matrix_file.display(),
            plan.cells.len()
        ));
        return exit::USAGE;
    }
    // Preflight: one clear error instead of N identical failures.
    let specs = engine_specs(&args.docker, &plan.settings.engines, &[]);
    let Connected {
        engines,
        versions,
        down: down_at_start,
    } = match connect(&args.docker, args.builder, specs) {
        Ok(d) => d,
        Err(code) => return code,
    };
    let (client_v, server_v, _) = versions[0].clone();
    let contexts_dir = args.out.join("contexts");
    let log_dir = args
        .log_dir
        .clone()
        .unwrap_or_else(|| args.out.join("logs"));
    let manifest_path = args
        .manifest
        .clone()
        .unwrap_or_else(|| args.out.join("manifest.json"));
    let iid_dir = args.out.join("iid");
    for d in [
        &contexts_dir,
        &log_dir,
        &iid_dir,
        &manifest_path
            .parent()
            .map_or_else(|| PathBuf::from("."), Path::to_path_buf),
    ] {
        if let Err(e) = preflight_dir(d) {
            crate::err(&format!("error: {e}"));
            return exit::PREFLIGHT;
        }
    }
    let previous: HashMap<String, CellRecord> = match &args.resume {
        Some(p) => match manifest::read(p) {
            Ok(m) => m
                .cells
                .into_iter()
                .filter(|c| c.status.succeeded())
                .map(|c| (c.id.clone(), c))
                .collect(),
            Err(e) => {
                crate::err(&format!("error: --resume: {e}"));
                return exit::PREFLIGHT;
            }
        },
        None => HashMap::new(),
    };

    let builder_name = match args.builder {
        crate::cli::Builder::Auto => "auto",
        crate::cli::Builder::Legacy => "legacy",
        crate::cli::Builder::Buildkit => "buildkit",
    };
    let mut man = Manifest::new(
        &plan.matrix_file.display().to_string(),
        &plan.matrix_sha256,
        Some(DockerInfo {
            client: client_v,
            server: server_v,
            builder: builder_name.into(),
        }),
    );
    man.engines = engines
        .iter()
        .zip(&versions)
        .map(|((spec, _), v)| manifest::EngineRecord {
            name: spec.name.clone(),
            target: spec.target.clone(),
            jobs: spec.jobs.unwrap_or(args.jobs).max(1),
            server: v.1.clone(),
            down: None,
        })
        .chain(
            down_at_start
                .iter()
                .map(|(spec, e)| manifest::EngineRecord {
                    name: spec.name.clone(),
                    target: spec.target.clone(),
                    jobs: spec.jobs.unwrap_or(args.jobs).max(1),
                    server: String::new(),
                    down: Some(format!("did not answer at the start: {e}")),
                }),
        )
        .collect();
    let matrix_dir = plan
        .matrix_file
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let revision = git_revision(matrix_dir).unwrap_or_default();
    let created = manifest::now();
    let network = args
        .network
        .clone()
        .or_else(|| plan.settings.network.clone());
    // `--platform` only where some engine would otherwise build for its own arch.
    let native: std::collections::BTreeSet<String> =
        versions.iter().map(|v| format!("linux/{}", v.2)).collect();

    let mut jobs: Vec<Job> = Vec::new();
    let mut job_cells: Vec<&Cell> = Vec::new();
    let (mut sys_keys, mut conda_keys) = (Vec::new(), Vec::new());
    for c in &cells {
        let ctx = render::render(&plan.settings, c);
        let input_hash = render::input_hash(&ctx, c, &[]);
        let mut rec = record_for(c, Some(input_hash.clone()));
        rec.input_parts = render::part_hashes(&ctx);
        if let Some(prev) = previous.get(&c.id) {
            if prev.input_hash.as_deref() == Some(input_hash.as_str()) {
                let mut kept = prev.clone();
                kept.status = Status::UpToDate;
                kept.reason = Some("succeeded in the resumed manifest".into());
                man.cells.push(kept);
                continue;
            }
            rec.reason = Some("resumed, but its inputs changed since".into());
        }
        let dir = contexts_dir.join(&c.id);
        if let Err(e) = render::write(&ctx, &dir) {
            crate::err(&format!(
                "error: cannot write the build context {}: {e}",
                dir.display()
            ));
            return exit::PREFLIGHT;
        }
        let request = BuildRequest {
            context_dir: dir,
            tags: c.tags.clone(),
            target: None,
            labels: vec![
                ("io.image-matrix.input-hash".into(), input_hash.clone()),
                ("org.opencontainers.image.created".into(), created.clone()),
                (
                    "org.opencontainers.image.source".into(),
                    std::env::var("IMAGE_MATRIX_SOURCE")
                        .unwrap_or_else(|_| "https://github.com/matrix-dc/mlops-images".into()),
                ),
            ]
            .into_iter()
            .chain((!revision.is_empty()).then(|| {
                (
                    "org.opencontainers.image.revision".to_string(),
                    revision.clone(),
                )
            }))
            .collect(),
            network: network.clone(),
            platform: (native.len() != 1 || !native.contains(&c.platform))
                .then(|| c.platform.clone()),
            pull: args.pull,
            no_cache: args.no_cache,
            iidfile: Some(iid_dir.join(format!("{}.iid", c.id))),
        };
        rec.log = Some(log_dir.join(format!("{}.log", c.id)).display().to_string());
        sys_keys.push(hash_files(&ctx, &["system/"], &c.base.reference));
        conda_keys.push(hash_files(&ctx, &["system/", "conda/"], &c.base.reference));
        jobs.push(Job {
            id: c.id.clone(),
            request,
            log_path: log_dir.join(format!("{}.log", c.id)),
            input_hash,
            primary_tag: Some(c.primary_tag().to_string()),
            affinity: format!("{} {}", c.base.reference, c.platform),
        });
        job_cells.push(c);
        man.cells.push(rec);
    }
    for e in &plan.excluded {
        let mut r = CellRecord {
            ..record_for(&plan.cells[0], None)
        };
        r.id.clone_from(&e.id);
        r.tags.clear();
        r.installer = None;
        r.coordinates = Coordinates {
            python: e.python.clone(),
            base: e.base.clone(),
            platform: e.platform.clone(),
            variant: e.variant.clone(),
            ..Coordinates::default()
        };
        r.status = Status::Excluded;
        r.reason = Some(e.reason.clone());
        man.cells.push(r);
    }
    for j in &jobs {
        let _ = std::fs::remove_file(&j.log_path);
    }
    if let Err(e) = manifest::write(&manifest_path, &man) {
        crate::err(&format!(
            "error: cannot write {}: {e}",
            manifest_path.display()
        ));
        return exit::PREFLIGHT;
    }

    let proto = BuildRequest {
        network: network.clone(),
        ..BuildRequest::default()
    };
    let warm = if args.no_cache {
        Vec::new()
    } else {
        vec![
            warm_groups(&sys_keys, "system", &jobs, &log_dir, &proto),
            warm_groups(&conda_keys, "conda", &jobs, &log_dir, &proto),
        ]
    };
    let cancel = Cancel::default();
    install_signals(&cancel, || {
        crate::docker::kill_all_groups();
        crate::verify::remove_all_containers();
    });
    let execs: Vec<DockerExecutor> = engines
        .iter()
        .map(|(_, d)| DockerExecutor {
            docker: d.clone(),
            grace: args.kill_grace,
        })
        .collect();
    let sched_engines: Vec<scheduler::Engine> = engines
        .iter()
        .zip(&execs)
        .map(|((spec, _), exec)| scheduler::Engine {
            name: spec.name.clone(),
            exec,
            jobs: spec.jobs.unwrap_or(args.jobs).max(1),
        })
        .collect();
    let opts = scheduler::Options {
        engine_check: args.engine_check,
        jobs: args.jobs.max(1),
        fail_fast: args.fail_fast,
        timeout: args.timeout,
        retries: args.retries,
        backoff: Duration::from_secs(5),
        force: args.force,
        verify: args.verify,
    };
    let mut reporter = Reporter::new(jobs.len(), args.quiet);
    reporter.show_engines(engines.len() > 1);
    let warm_logs: HashMap<String, (PathBuf, BuildRequest)> = warm
        .iter()
        .flatten()
        .map(|w| {
            (
                w.job.id.clone(),
                (w.job.log_path.clone(), w.job.request.clone()),
            )
        })
        .collect();
    let job_index: HashMap<String, usize> = jobs
        .iter()
        .enumerate()
        .map(|(i, j)| (j.id.clone(), i))
        .collect();
    let mut on_event = |ev: &Event| {
        reporter.event(ev);
        if let Event::EngineDown { engine, reason } = ev {
            if let Some(r) = man.engines.iter_mut().find(|r| &r.name == engine) {
                r.down = Some(reason.clone());
            }
            return;
        }
        let Event::Finished(o) = ev else { return };
        let docker = engines.get(o.engine.as_deref()).unwrap_or(engines.first());
        if let Some((log, req)) = warm_logs.get(&o.id) {
            if !o.status.succeeded() && o.status != Status::NotStarted {
                reporter.failure(
                    o,
                    &log.display().to_string(),
                    &docker.build_command_line(req),
                );
            }
            return;
        }
        let Some(&i) = job_index.get(&o.id) else {
            return;
        };
        if let Some(rec) = man.cells.iter_mut().find(|r| r.id == o.id) {
            rec.status = o.status;
            rec.attempts = o.attempts;
            rec.exit_code = o.exit_code;
            rec.duration_seconds = (o.duration.as_secs_f64() * 10.0).round() / 10.0;
            rec.reason.clone_from(&o.reason);
            rec.engine.clone_from(&o.engine);
            rec.requeued.clone_from(&o.requeues);
            if let Some(v) = &o.verification {
                rec.verification = Some(v.clone());
            }
            if let Some((id, size)) = &o.image {
                rec.image_id = Some(id.clone());
                rec.size_bytes = Some(*size);
            }
            if o.status == Status::UpToDate || o.attempts == 0 && o.status != Status::Failed {
                rec.log = None;
            }
        }
        if let Some(v) = o.verification.as_ref().filter(|v| !v.ok) {
            let failed: Vec<String> = v
                .checks
                .iter()
                .filter(|c| !c.ok)
                .map(|c| format!("  FAIL {}: {}", c.name, c.detail))
                .collect();
            reporter.line(&format!(
                "{} built but failed verification:\n{}",
                o.id,
                failed.join("\n")
            ));
        }
        if matches!(o.status, Status::Failed | Status::TimedOut) && o.attempts > 0 {
            reporter.failure(
                o,
                &jobs[i].log_path.display().to_string(),
                &format!(
                    "cd {} && {}",
                    jobs[i].request.context_dir.display(),
                    docker.build_command_line(&BuildRequest {
                        context_dir: ".".into(),
                        iidfile: None,
                        labels: Vec::new(),
                        ..jobs[i].request.clone()
                    })
                ),
            );
        }
        if let Err(e) = manifest::write(&manifest_path, &man) {
            reporter.line(&format!(
                "warning: cannot update {}: {e}",
                manifest_path.display()
            ));
        }
    };
    let outcomes = scheduler::run(&sched_engines, &warm, &jobs, &opts, &cancel, &mut on_event);
    reporter.finish();

    // Up-to-date cells keep their image; refresh alias tags (dates move nightly).
    for (o, c) in outcomes.iter().zip(&job_cells) {
        if o.status == Status::UpToDate {
            for t in c.tags.iter().skip(1) {
                let docker = engines.get(o.engine.as_deref()).unwrap_or(engines.first());
                if let Err(e) = docker.tag(c.primary_tag(), t) {
                    crate::err(&format!("warning: cannot tag {t}: {e}"));
                }
            }
        }
    }

    if args.verify && !cancel.is_set() {
        // Cells that were up to date were not built, so not verified yet.
        crate::verify::verify_records(&engines, &mut man.cells, 90, &cancel);
        let report: Vec<(String, crate::manifest::Verification)> = man
            .cells
            .iter()
            .filter_map(|c| Some((c.tags.first()?.clone(), c.verification.clone()?)))
            .collect();
        crate::out(&crate::verify::table(&report));
    }
    // A refused push (some cell not built, or its engine gone) fails the run even when
    // every cell built: nothing was published.
    let published = !args.push
        || cancel.is_set()
        || push_records(&engines, &mut man, args.verify, false, args.retries.max(2));
    man.finished = Some(manifest::now());
    man.tool_cpu_seconds = Some((manifest::own_cpu_seconds() * 1000.0).round() / 1000.0);
    if let Err(e) = manifest::write(&manifest_path, &man) {
        crate::err(&format!(
            "error: cannot write {}: {e}",
            manifest_path.display()
        ));
    }
    reporter.summary(&man, &manifest_path.display().to_string());
    match cancel.get() {
        Cancel::INTERRUPT => exit::INTERRUPTED,
        Cancel::TERMINATE => exit::TERMINATED,
        _ => {
            let bad = man.cells.iter().any(|c| {
                matches!(
                    c.status,
                    Status::Failed | Status::TimedOut | Status::Cancelled | Status::NotStarted
                )
            }) || man
                .cells
                .iter()
                .any(|c| c.verification.as_ref().is_some_and(|v| !v.ok))
                || man.cells.iter().any(|c| c.pushed.iter().any(|p| !p.ok))
                || !published;
            if bad {
                exit::FAILED
            } else {
                exit::OK
            }
        }
    }
}

/// Two-phase publish: primary tags of every eligible cell first, then alias tags.
/// Eligible: built or up-to-date, and verified when `need_verified`.
fn push_records(
    engines: &Engines,
    man: &mut Manifest,
    need_verified: bool,
    allow_partial: bool,
    retries: u32,
) -> bool {
    let built = |c: &CellRecord| {
        c.status.succeeded() && (!need_verified || c.verification.as_ref().is_some_and(|v| v.ok))
    };
    let selected: Vec<usize> = (0..man.cells.len())
        .filter(|i| man.cells[*i].status != Status::Excluded)
        .collect();
    // An image is pushed only from the engine that holds it; an engine that does not
    // answer now (left out at the start, or gone since the build) makes its cells
    // ineligible before anything is published. Each engine is asked once.
    let mut answers: HashMap<Option<String>, bool> = HashMap::new();
    for &i in &selected {
        let c = &man.cells[i];
        if built(c) && !answers.contains_key(&c.engine) {
            let up = engines
                .get(c.engine.as_deref())
                .is_some_and(|d| d.ping(Duration::from_secs(10)).is_ok());
            answers.insert(c.engine.clone(), up);
        }
    }
    let reachable = |c: &CellRecord| answers.get(&c.engine).copied().unwrap_or(false);
    let eligible = |c: &CellRecord| built(c) && reachable(c);
    let not_built = selected.iter().filter(|i| !built(&man.cells[**i])).count();
    let mut away: Vec<&str> = selected
        .iter()
        .filter(|i| built(&man.cells[**i]) && !reachable(&man.cells[**i]))
        .map(|i| man.cells[*i].engine.as_deref().unwrap_or(DEFAULT_ENGINE))
        .collect();
    away.sort_unstable();
    away.dedup();
    let unreachable = selected
        .iter()
        .filter(|i| built(&man.cells[**i]) && !reachable(&man.cells[**i]))
        .count();
    if not_built + unreachable > 0 && !allow_partial {
        let mut why = Vec::new();
        if not_built > 0 {
            why.push(format!(
                "{not_built} of {} cells did not build{}",
                selected.len(),
                if need_verified { " and verify" } else { "" }
            ));
        }
        if unreachable > 0 {
            why.push(format!(
                "{unreachable} are on engines that do not answer ({})",
                away.join(", ")
            ));
        }
        crate::err(&format!(
            "push: {}; publishing nothing (use --allow-partial to publish the rest)",
            why.join(" and ")
        ));
        return false;
    }
    let mut all_ok = true;
    for phase in 0..2 {
        for &i in &selected {
            if !eligible(&man.cells[i]) {
                continue;
            }
            let tags: Vec<String> = if phase == 0 {
                man.cells[i].tags.iter().take(1).cloned().collect()
            } else {
                man.cells[i].tags.iter().skip(1).cloned().collect()
            };
            for t in tags {
                let mut attempts = 0;
                let result = loop {
                    attempts += 1;
                    let Some(docker) = engines.get(man.cells[i].engine.as_deref()) else {
                        break Err("the engine that holds the image does not answer".into());
                    };
                    match docker.push(&t) {
                        Ok(d) => break Ok(d),
                        Err(e) if attempts <= retries => {
                            crate::err(&format!("push {t}: {e}; retrying"));
                            std::thread::sleep(Duration::from_secs(2u64.pow(attempts)));
                        }
                        Err(e) => break Err(e),
                    }
                };
                all_ok &= result.is_ok();
                crate::err(&format!(
                    "push {t}: {}",
                    match &result {
                        Ok(_) => "ok".to_string(),
                        Err(e) => format!("failed: {e}"),
                    }
                ));
                man.cells[i].pushed.push(Pushed {
                    tag: t,
                    ok: result.is_ok(),
                    digest: result.as_ref().ok().cloned().flatten(),
                    attempts,
                    error: result.err(),
                });
            }
        }
    }
    all_ok
}

pub fn push(args: &PushArgs) -> i32 {
    let mut man = match manifest::read(&args.manifest) {
        Ok(m) => m,
        Err(e) => {
            crate::err(&format!("error: {e}"));
            return exit::PREFLIGHT;
        }
    };
    let specs = engine_specs(&args.docker, &[], &man.engines);
    let engines = match connect(&args.docker, crate::cli::Builder::Auto, specs) {
        Ok(c) => c.engines,
        Err(code) => return code,
    };
    let verified = man.cells.iter().any(|c| c.verification.is_some());
    let ok = push_records(
        &engines,
        &mut man,
        verified,
        args.allow_partial,
        args.retries,
    );
    if let Err(e) = manifest::write(&args.manifest, &man) {
        crate::err(&format!(
            "error: cannot write {}: {e}",
            args.manifest.display()
        ));
    }
    if ok {
        exit::OK
    } else {
        exit::FAILED
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cli::DockerArgs;

    fn args(engines: &[&str], context: Option<&str>) -> DockerArgs {
        DockerArgs {
            docker: "docker".into(),
            context: context.map(str::to_string),
            engines: engines.iter().map(|e| e.parse().unwrap()).collect(),
        }
    }

    fn rec(name: &str, target: &str) -> manifest::EngineRecord {
        manifest::EngineRecord {
            name: name.into(),
            target: crate::engine::parse_target(target).unwrap(),
            jobs: 3,
            server: "x".into(),
            down: None,
        }
    }

    fn names(s: &[EngineSpec]) -> Vec<String> {
        s.iter()
            .map(|e| format!("{}={}", e.name, e.target))
            .collect()
    }

    #[test]
    fn engines_come_from_flags_then_the_matrix_then_the_default() {
        let configured: Vec<EngineSpec> = vec!["m=unix:///m.sock".parse().unwrap()];
        assert_eq!(
            names(&engine_specs(&args(&["a=ctx-a"], None), &configured, &[])),
            ["a=ctx-a"],
            "--engine replaces the matrix's list"
        );
        assert_eq!(
            names(&engine_specs(&args(&[], None), &configured, &[])),
            ["m=unix:///m.sock"]
        );
        let d = engine_specs(&args(&[], None), &[], &[]);
        assert_eq!(d[0].name, DEFAULT_ENGINE);
        assert_eq!(d[0].target, Target::Default);
        let c = engine_specs(&args(&[], Some("remote")), &[], &[]);
        assert_eq!(c[0].target, Target::Context("remote".into()));
    }

    #[test]
    fn a_manifests_engines_can_be_re_pointed_by_name() {
        let recorded = [rec("a", "unix:///a.sock"), rec("b", "unix:///b.sock")];
        let s = engine_specs(&args(&["b=unix:///moved.sock"], None), &[], &recorded);
        assert_eq!(names(&s), ["a=unix:///a.sock", "b=unix:///moved.sock"]);
        assert_eq!(s[0].jobs, Some(3));
    }
}
