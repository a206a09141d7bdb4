//! `matrix build`: the command line → the run's options → the run
//! (`run::runner`: preflight → schedule → accept → publish → record → prune) with the
//! `--progress` reporters listening → the exit code.

use std::path::{Path, PathBuf};

use super::{load_plan, select};
use crate::cli::{BuildArgs, Cli};
use crate::error::{Error, Exit};
use crate::manifest::{io, Manifest};
use crate::plan::Plan;
use crate::report::progress::Progress;
use crate::run::options::Options;
use crate::run::runner;
use crate::signals;

pub fn run(cli: &Cli, args: &BuildArgs) -> Result<Exit, Error> {
    // First of all: from here on a signal stops the run with a record of it, whatever
    // the run is doing (a hung docker query included).
    let cancel = signals::install(runner::on_urgent, crate::term::line);
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
    if let Some(stage) = &args.stage {
        check_stage(stage, &plan.settings.repository)?;
    }
    let progress = args.progress();
    runner::run(
        &plan,
        &cells,
        &options(&plan, args),
        &cancel,
        |jobs, several_engines| Progress::new(progress, jobs, several_engines),
        &write_reports,
        crate::term::line,
    )
}

/// `--stage` names a repository on the registry of the matrix's own, or publish could
/// not make the public tags from it: said before anything is built.
fn check_stage(stage: &str, repository: &str) -> Result<(), Error> {
    let (staging, public) = (
        crate::registry::Repo::parse(stage).map_err(|e| Error::Usage(format!("--stage: {e}")))?,
        crate::registry::Repo::parse(repository)
            .map_err(|e| Error::Usage(format!("the matrix's repository: {e}")))?,
    );
    if staging.host != public.host {
        return Err(Error::Usage(format!(
            "--stage {stage} is on {}, but the matrix publishes to {repository} on {}: stage on the same registry (e.g. --stage {}/{}-staging)",
            staging.host, public.host, public.host, public.path
        )));
    }
    if staging == public {
        return Err(Error::Usage(format!(
            "--stage {stage} is the matrix's public repository: stage in another one (e.g. --stage {repository}-staging), so that no private tag lands where people pull"
        )));
    }
    Ok(())
}

/// The run's options: the command line's, with the matrix's settings applied.
fn options(plan: &Plan, args: &BuildArgs) -> Options {
    let shard = args.select.shard.map(|shard| {
        // the whole selection, so that merge and push can tell a missing shard
        let picked = crate::coord::select(&plan.cells, &args.select.filters);
        let planned = crate::plan::family::with_parents(&plan.cells, &picked)
            .iter()
            .map(|c| c.id.clone())
            .collect();
        (shard.to_string(), planned)
    });
    Options {
        client: args.docker.docker.clone(),
        context: args.docker.context.clone(),
        engines: args.docker.engines.clone(),
        builder: args.builder,
        buildx_builder: args.buildx_builder.clone(),
        jobs: args.jobs,
        engine_check: args.engine_check,
        fail_fast: args.fail_fast,
        timeout: args.timeout,
        retries: args.retries,
        kill_grace: args.kill_grace,
        resume: args.resume.clone(),
        force: args.force,
        pull: args.pull,
        no_cache: args.no_cache,
        network: args
            .network
            .clone()
            .or_else(|| plan.settings.network.clone()),
        download_cache: args
            .download_cache
            .clone()
            .map(|d| (d, args.download_cache_port)),
        out: args.out.clone(),
        log_dir: args.log_dir.clone(),
        manifest: args.manifest.clone(),
        verify: args.verify,
        push: args.push,
        stage: args.stage.clone(),
        keep: args.keep.map(|n| n as usize),
        labels: super::image_labels(plan),
        cache: super::cache_settings(plan, &args.cache),
        shard,
    }
}

/// report.html and report.md beside the manifest (derived from it: a failure to
/// write them is said, and does not change how the run ended). Returns those written.
fn write_reports(
    m: &Manifest,
    previous: Option<&Manifest>,
    manifest_path: &Path,
    logs: &Path,
) -> Vec<PathBuf> {
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
        // no package changes here: the previous run's SBOMs beside this manifest were
        // replaced by tonight's (`matrix report --previous` compares two kept runs)
        let text = super::report::render(format, m, previous, manifest_path, logs, None);
        match io::write_text(&path, &text) {
            Ok(()) => written.push(path),
            Err(e) => crate::term::line(&format!("warning: cannot write {}: {e}", path.display())),
        }
    }
    written
}
