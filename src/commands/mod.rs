//! One file per subcommand, each the subcommand's story: read its options, call the
//! library, report. Helpers they share are here.

mod build;
mod catalogue;
mod completions;
mod man;
mod merge;
mod plan;
mod prune;
mod publish;
mod push;
mod render;
pub(crate) mod report;
mod schema;
mod verify;

use crate::cli::{Cli, Command, ManifestCommand, Selection};
use crate::error::{Error, Exit};
use crate::plan::{Cell, Plan, PlanOptions};

pub fn run(cli: Cli) -> Result<Exit, Error> {
    match &cli.command {
        Command::Plan(args) => plan::run(&cli, args),
        Command::Render(args) => render::run(&cli, args),
        Command::Build(args) => build::run(&cli, args),
        Command::Verify(args) => verify::run(&cli.matrix, args),
        Command::Push(args) => push::run(&cli.matrix, args),
        Command::Publish(args) => publish::run(args),
        Command::Login(args) => publish::login(args),
        Command::Signature(c) => publish::signature(c),
        Command::Report(args) => report::run(args),
        Command::Prune(args) => prune::run(&cli.matrix, args),
        Command::Completions(args) => completions::run(args),
        Command::Man(args) => man::run(args),
        Command::Schema(args) => schema::run(args),
        Command::Catalogue(crate::cli::CatalogueCommand::Update(args)) => catalogue::update(args),
        Command::Manifest(ManifestCommand::Merge {
            inputs,
            output,
            allow_partial,
        }) => merge::run(inputs, output, *allow_partial),
    }
}

/// Today as `YYYYMMDD` (UTC).
pub fn today() -> String {
    let now = humantime::format_rfc3339_seconds(std::time::SystemTime::now()).to_string();
    now[..10].replace('-', "")
}

/// Plan the matrix; warnings go to stderr.
fn load_plan(cli: &Cli, select: &Selection) -> Result<Plan, Error> {
    load_plan_with(cli, select, &|_, _| {})
}

/// [`load_plan`], with [`crate::plan::load_with`]'s hook.
fn load_plan_with(
    cli: &Cli,
    select: &Selection,
    on_axes: &crate::plan::AxesHook,
) -> Result<Plan, Error> {
    let opts = PlanOptions {
        date: select.date.clone().unwrap_or_else(today),
    };
    let plan = crate::plan::load_with(&cli.matrix, &opts, on_axes)?;
    for w in &plan.warnings {
        crate::term::line(&w.to_string());
    }
    let d = today();
    for note in
        crate::plan::catalogue::staleness(&format!("{}-{}-{}", &d[..4], &d[4..6], &d[6..]), 90)
    {
        crate::term::line(&note);
    }
    Ok(plan)
}

/// The cells a command works on: the filters, then the shard.
fn select<'a>(plan: &'a Plan, s: &Selection) -> Vec<&'a Cell> {
    let picked = crate::coord::select(&plan.cells, &s.filters);
    let cells = crate::plan::family::with_parents(&plan.cells, &picked);
    match s.shard {
        Some(shard) => crate::plan::shard::select(&cells, shard),
        None => cells,
    }
}

/// Print a result on stdout; only a closed pipe may cut it short.
fn print(what: &'static str, text: &str) -> Result<(), Error> {
    crate::term::out(text).map_err(|source| Error::Output { what, source })
}

/// The registry cache of a run: the matrix's `cache:`, with `--cache-from` replacing
/// its sources and `--cache-to inline` turning inline metadata on.
fn cache_settings(plan: &Plan, args: &crate::cli::CacheArgs) -> crate::config::settings::Cache {
    let mut c = plan.settings.cache.clone();
    if !args.from.is_empty() {
        c.from.clone_from(&args.from);
    }
    if args.to.is_some() {
        c.inline = true;
    }
    c
}

/// The OCI labels every image of a run gets: when it was made, where its recipe lives
/// and, in a git checkout, which revision.
fn image_labels(plan: &Plan) -> Vec<(String, String)> {
    image_labels_at(&plan.matrix_file)
}

/// [`image_labels`] of the matrix at `matrix_file` (its directory's git revision).
fn image_labels_at(matrix_file: &std::path::Path) -> Vec<(String, String)> {
    let mut labels = vec![
        (crate::labels::CREATED.to_string(), crate::manifest::now()),
        (
            crate::labels::SOURCE.to_string(),
            std::env::var("IMAGE_MATRIX_SOURCE")
                .unwrap_or_else(|_| "https://github.com/matrix-dc/mlops-images".into()),
        ),
    ];
    let matrix_dir = matrix_file
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(std::path::Path::new("."));
    if let Some(rev) = git_revision(matrix_dir) {
        labels.push((crate::labels::REVISION.to_string(), rev));
    }
    labels
}

fn git_revision(dir: &std::path::Path) -> Option<String> {
    let args = vec![
        "-C".to_string(),
        dir.display().to_string(),
        "rev-parse".into(),
        "HEAD".into(),
    ];
    crate::docker::run_program(
        std::path::Path::new("git"),
        &args,
        None,
        std::time::Duration::from_secs(5),
    )
    .ok()
    .filter(|(c, _, _)| *c == 0)
    .map(|(_, o, _)| String::from_utf8_lossy(&o).trim().to_string())
    .filter(|r| !r.is_empty())
}

fn json_text(v: &impl serde::Serialize) -> String {
    let mut s = serde_json::to_string_pretty(v).unwrap_or_default();
    s.push('\n');
    s
}

/// The engines a manifest's cells were built on, reached again (`--engine` re-points a
/// name): push, verify and prune work on each cell where it is. `manifest` is the
/// manifest read and its path (None: no manifest, `verify --image`); `matrix` the
/// matrix file (`-f`), whose `engines:` vouch for the recorded targets they declare
/// when it is the matrix the manifest was built from. A recorded target nothing vouches
/// for is refused before any engine is contacted.
fn manifest_engines(
    docker: &crate::cli::DockerArgs,
    matrix: &std::path::Path,
    manifest: Option<(&std::path::Path, &crate::manifest::Manifest)>,
) -> Result<crate::engines::Engines, Error> {
    let recorded = manifest.map_or(&[][..], |(_, m)| &m.engines[..]);
    let specs = crate::engines::specs(&docker.engines, docker.context.as_deref(), &[], recorded)
        .map_err(Error::Usage)?;
    if let Some((path, m)) = manifest {
        let unvouched =
            crate::engines::unvouched(recorded, &docker.engines, docker.context.as_deref());
        if !unvouched.is_empty() {
            crate::engines::check_vouched(
                &path.display().to_string(),
                &matrix.display().to_string(),
                &unvouched,
                &matrix_engines(matrix, m),
            )
            .map_err(Error::Preflight)?;
        }
    }
    Ok(connect_engines(
        &docker.docker,
        crate::docker::Builder::Auto,
        specs,
        std::num::NonZeroUsize::MIN,
    )?
    .engines)
}

/// The `engines:` of the matrix file at `path` when it is the one `m` was built from
/// (its SHA256 is the manifest's `matrix_sha256`), else why it vouches for none. The
/// file is the one the user names (`-f`, else matrix.yaml), never a path the manifest
/// gives: a forged manifest could name a file of its own, with that file's SHA256.
fn matrix_engines(
    path: &std::path::Path,
    m: &crate::manifest::Manifest,
) -> Result<Vec<crate::config::engine::EngineSpec>, String> {
    use sha2::Digest;
    let file = path.display().to_string();
    let text = crate::config::read_text(path).map_err(|e| e.to_string())?;
    let sha = crate::plan::hex(&sha2::Sha256::digest(text.as_bytes()));
    if sha != m.matrix_sha256 {
        let short = |s: &str| s.chars().take(12).collect::<String>();
        return Err(format!(
            "{file} is not the matrix the manifest was built from: its SHA256 is {}…, the manifest's matrix_sha256 {}…, so its `engines:` vouch for nothing; -f/--matrix names the matrix the manifest was built from",
            short(&sha),
            short(&m.matrix_sha256)
        ));
    }
    crate::config::settings::declared_engines(&text, &file)
        .ok_or_else(|| format!("{file} does not read as YAML"))
}

/// The engines `specs` name, connected, with their warnings (each engine that does not
/// answer) said on stderr first, also before the error when none answers.
fn connect_engines(
    docker: &std::path::Path,
    builder: crate::docker::Builder,
    specs: Vec<crate::config::engine::EngineSpec>,
    default_slots: std::num::NonZeroUsize,
) -> Result<crate::engines::Connected, Error> {
    crate::engines::connect(docker, builder, specs, default_slots, &crate::term::line)
}
