//! Before the first build of a run: its output folders checked, the engines reached,
//! the bases resolved and every cell's identity worked out (the plan's jobs; contexts
//! are rendered in memory, and again when a build streams its own), with the cancel flag
//! looked at after each step, so that a signal at any moment ends the run with a
//! manifest that says so; and the run's first manifest.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use super::options::Options;
use super::prepare::{self, Paths, Prepared};
use crate::engines::{self, Connected, Engines};
use crate::error::{Error, Exit};
use crate::manifest::{io, DockerInfo, EngineRecord, Manifest, RunOutcome, Status};
use crate::plan::Plan;
use crate::signals::{self, Cancel};

/// Where lines for people go before the run's listener exists (the command's choice).
pub type Say = fn(&str);

/// What the steps before the builds came to.
pub(super) enum Ready<'p> {
    Go(Connected, Prepared<'p>),
    /// A signal arrived before any build started (the engines, if they were reached).
    Stopped(Option<Connected>),
    Failed(Error),
}

/// The engines reached, the bases resolved and every identity worked out, with a look at
/// the cancel flag after each step: a signal during any of them (a hung query is
/// killed by it) ends the run before a build starts, and wins over the error the
/// killed query caused.
pub(super) fn ready<'p>(
    plan: &'p Plan,
    cells: &[&'p crate::plan::Cell],
    o: &Options,
    out: &Outputs,
    previous: Option<&Manifest>,
    cancel: &Cancel,
    say: Say,
) -> Ready<'p> {
    let connected = match connect(plan, o, say) {
        _ if cancel.is_set() => return Ready::Stopped(None),
        Ok(c) => c,
        Err(e) => return Ready::Failed(e),
    };
    let prepared = (|| {
        let mut settings = prepare_settings(o, &connected.engines)?;
        check_cache(&settings.cache, &connected.engines)?;
        check_platforms(cells, &connected.engines, say)?;
        if cancel.is_set() {
            return Ok(None);
        }
        settings.bases = resolve_bases(cells, &connected.engines, o.pull, previous, say)?;
        settings.recorded = recorded_hashes(previous);
        if cancel.is_set() {
            return Ok(None);
        }
        let downloads = start_downloads(plan, o, &connected.engines)?;
        let mut prepared = prepare::prepare(plan, cells, &out.paths, &settings);
        prepared.downloads = downloads;
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

/// The host's download cache, serving from here on when asked (and not with
/// --no-cache, which means no cache of any kind). The builds reach it on 127.0.0.1:
/// every engine must be this machine's, building with the host's network.
fn start_downloads(
    plan: &Plan,
    o: &Options,
    engines: &Engines,
) -> Result<Option<crate::downloads::Cache>, Error> {
    let Some((dir, port)) = o.download_cache.as_ref().filter(|_| !o.no_cache) else {
        return Ok(None);
    };
    if o.network.as_deref() != Some("host") {
        return Err(Error::Preflight(
            "--download-cache serves on 127.0.0.1, which a build reaches only on the host's network: add --network host (or `build.network: host` in the matrix)".into(),
        ));
    }
    for e in engines.iter() {
        if let Some(addr) = remote_address(&e.target) {
            return Err(Error::Preflight(format!(
                "--download-cache serves on this machine's 127.0.0.1, which engine {} ({addr}) cannot reach: build without it there, or give that machine a cache of its own (BuildKit's cache mounts need none)",
                e.name
            )));
        }
    }
    let ca = match &plan.settings.sources.ca_bundle {
        Some(p) => Some(std::fs::read(p).map_err(|e| {
            Error::Preflight(format!("cannot read the CA bundle {}: {e}", p.display()))
        })?),
        None => None,
    };
    crate::downloads::Cache::start(dir, *port, ca.as_deref())
        .map(Some)
        .map_err(Error::Preflight)
}

/// The address of an engine on another machine; None for this machine's (a Unix
/// socket, loopback TCP) and for a docker context, which is taken at its word.
fn remote_address(target: &crate::config::engine::Target) -> Option<String> {
    use crate::config::engine::Target;
    let host = match target {
        Target::Host(h) => h.clone(),
        Target::Default => std::env::var("DOCKER_HOST").ok()?,
        Target::Context(_) => return None,
    };
    let local = host.starts_with("unix://")
        || host.starts_with("fd://")
        || ["tcp://127.", "tcp://localhost", "tcp://[::1]"]
            .iter()
            .any(|p| host.starts_with(p));
    (!local).then_some(host)
}

/// Last night's logs, image IDs and context folders of the jobs about to run: a stale
/// image ID would make an up-to-date cell report last night's build, and a context
/// folder is a failed build's (or an earlier version's, which wrote every cell's) that
/// tonight's may not match. Builds read their context on standard input; only a
/// failure writes one here again. (A folder that is not there costs one failed call.)
fn remove_stale_outputs(prepared: &Prepared) {
    let jobs = || {
        prepared
            .jobs
            .iter()
            .chain(prepared.stages.iter().map(|s| &s.job))
    };
    // each folder is listed once, and only what it holds is removed: a fresh output
    // folder costs a few failed listings, not three failed calls a job
    let mut listed = Present::default();
    for j in jobs() {
        listed.remove(&j.log_path, |p| std::fs::remove_file(p));
        if let Some(iid) = &j.request.iidfile {
            listed.remove(iid, |p| std::fs::remove_file(p));
        }
    }
    for j in &prepared.jobs {
        // a symbolic link is removed, not followed
        listed.remove(&j.request.context_dir, |p| std::fs::remove_dir_all(p));
    }
}

/// The names in folders, each listed when first asked about.
#[derive(Default)]
struct Present(HashMap<PathBuf, std::collections::HashSet<std::ffi::OsString>>);

impl Present {
    /// Remove `path` with `how` when its folder lists it.
    fn remove(&mut self, path: &Path, how: fn(&Path) -> std::io::Result<()>) {
        let (Some(dir), Some(name)) = (path.parent(), path.file_name()) else {
            let _ = how(path);
            return;
        };
        let names = self.0.entry(dir.to_path_buf()).or_insert_with(|| {
            let dir = if dir.as_os_str().is_empty() {
                Path::new(".")
            } else {
                dir
            };
            std::fs::read_dir(dir)
                .map(|r| r.filter_map(|e| e.ok().map(|e| e.file_name())).collect())
                .unwrap_or_default()
        });
        if names.contains(name) {
            let _ = how(path);
        }
    }
}

/// A run stopped before its first build: a manifest that says so (every selected cell
/// not started, the engines as far as they were reached) and the signal's exit code.
/// It goes to no history: it built nothing, and must not count as a night for prune.
pub(super) fn stopped_before_builds(
    plan: &Plan,
    cells: &[&crate::plan::Cell],
    o: &Options,
    connected: Option<&Connected>,
    out: &Outputs,
    cancel: &Cancel,
    say: Say,
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
    m.date = Some(plan.date.clone());
    if let Some(c) = connected {
        m.docker = docker_info(c);
        m.engines = engine_records(o, c);
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
    record_shard(&mut m, o);
    m.outcome = Some(RunOutcome::Interrupted {
        signal: signal.name().into(),
    });
    m.finished = Some(crate::manifest::now());
    io::write(&out.manifest, &m).map_err(|source| Error::StaleManifest {
        path: out.manifest.clone(),
        source,
    })?;
    say(&format!(
        "{}: stopped before any build started; {} records it",
        signal.name(),
        out.manifest.display()
    ));
    Ok(Exit::Stopped(signal))
}

/// Where this run's files go, and the lock that keeps a second run out.
pub(super) struct Outputs {
    pub(super) paths: Paths,
    pub(super) manifest: PathBuf,
    pub(super) out: PathBuf,
}

impl Outputs {
    pub(super) fn new(o: &Options) -> Outputs {
        Outputs {
            paths: Paths {
                contexts: o.out.join("contexts"),
                logs: o.log_dir.clone().unwrap_or_else(|| o.out.join("logs")),
                iid: o.out.join("iid"),
            },
            manifest: o
                .manifest
                .clone()
                .unwrap_or_else(|| o.out.join("manifest.json")),
            out: o.out.clone(),
        }
    }

    /// Every directory writable, the manifest ours to replace, and what a killed run
    /// left behind cleaned up.
    pub(super) fn preflight(&self) -> Result<(), Error> {
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
        // the lock is ours: a staging folder there is a killed run's
        crate::render::clean_staging(&self.paths.contexts);
        Ok(())
    }
}

fn connect(plan: &Plan, o: &Options, say: Say) -> Result<Connected, Error> {
    let specs = engines::specs(
        &o.engines,
        o.context.as_deref(),
        &plan.settings.engines,
        &[],
    )
    .map_err(Error::Usage)?;
    let mut c = engines::connect(&o.client, o.builder, specs, o.jobs, &say)?;
    c.engines
        .resolve_builders(o.builder, o.buildx_builder.as_deref())
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

fn prepare_settings(o: &Options, engines: &Engines) -> Result<prepare::Settings, Error> {
    let resumed = match &o.resume {
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
        network: o.network.clone(),
        pull: o.pull,
        no_cache: o.no_cache,
        check_current: !o.force,
        native,
        labels: o.labels.clone(),
        resumed,
        recorded: HashMap::new(),
        bases: prepare::Bases::default(),
        cache: o.cache.clone(),
    })
}

pub(super) fn initial_manifest(
    plan: &Plan,
    o: &Options,
    connected: &Connected,
    prepared: &Prepared,
) -> Manifest {
    let mut m = Manifest::new(
        &plan.matrix_file.display().to_string(),
        &plan.matrix_sha256,
        docker_info(connected),
    );
    m.repository = Some(plan.settings.repository.clone());
    m.date = Some(plan.date.clone());
    m.engines = engine_records(o, connected);
    m.cells = prepared.records.clone();
    record_shard(&mut m, o);
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
fn engine_records(o: &Options, connected: &Connected) -> Vec<EngineRecord> {
    connected
        .engines
        .iter()
        .map(engines::Engine::record)
        .chain(connected.down.iter().map(|(spec, e)| EngineRecord {
            name: spec.name.clone(),
            target: spec.target.clone(),
            jobs: spec.jobs.unwrap_or(o.jobs.get()),
            server: String::new(),
            down: Some(format!("did not answer at the start: {e}")),
            platforms: spec.platforms.clone(),
            buildx_builder: spec.buildx_builder.clone(),
        }))
        .collect()
}

/// A shard's record names the whole selection, so that merge and push can tell a
/// missing shard.
fn record_shard(m: &mut Manifest, o: &Options) {
    if let Some((shard, planned)) = &o.shard {
        m.planned.clone_from(planned);
        m.shards = vec![shard.clone()];
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

/// Which engine builds which of the selection's platforms, and how; a platform no
/// engine builds stops the run before anything is built.
fn check_platforms(cells: &[&crate::plan::Cell], engines: &Engines, say: Say) -> Result<(), Error> {
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
                say(&format!("engine {} builds {}", e.name, what.join(", ")));
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
    say: Say,
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
    let resolved = engines::resolve_bases_quiet(engines, &keys, fetch);
    for w in &resolved.warnings {
        say(w);
    }
    let mut out = prepare::Bases::default();
    for (key, r) in keys.into_iter().zip(resolved.bases) {
        if !r.disagree.is_empty() {
            say(&format!(
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
            say(&format!(
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

#[cfg(test)]
mod tests {
    use crate::config::engine::Target;

    /// The download cache serves on this machine's loopback: engines elsewhere are
    /// named, this machine's are not.
    #[test]
    fn engines_on_other_machines_are_told_apart() {
        for local in [
            "unix:///var/run/docker.sock",
            "tcp://127.0.0.1:2375",
            "tcp://localhost:2375",
            "tcp://[::1]:2375",
        ] {
            assert_eq!(super::remote_address(&Target::Host(local.into())), None);
        }
        for remote in ["ssh://ci@build-1", "tcp://10.0.0.5:2376"] {
            assert_eq!(
                super::remote_address(&Target::Host(remote.into())).as_deref(),
                Some(remote)
            );
        }
    }
}
