//! `matrix report MANIFEST`: what a run did, as an HTML page or a Markdown summary.

use std::path::Path;

use super::print;
use crate::cli::{ReportArgs, ReportFormat};
use crate::error::{Error, Exit};
use crate::manifest::{io, Manifest};
use crate::report::{html, markdown};

pub fn run(args: &ReportArgs) -> Result<Exit, Error> {
    let m = io::read(&args.manifest).map_err(Error::Preflight)?;
    let previous = match &args.previous {
        Some(p) => Some(io::read(p).map_err(|e| Error::Preflight(format!("--previous: {e}")))?),
        None => None,
    };
    // the packages' changes, from both runs' SBOMs (each beside its own manifest)
    let packages = match (&previous, &args.previous) {
        (Some(p), Some(path)) => Some(crate::sbom::diff::between(
            p,
            folder_of(path),
            &m,
            folder_of(&args.manifest),
        )),
        _ => None,
    };
    let format = args.format.unwrap_or_else(|| match &args.output {
        Some(p) if p.extension().is_some_and(|e| e == "md") => ReportFormat::Markdown,
        _ => ReportFormat::Html,
    });
    let logs = args
        .log_dir
        .clone()
        .unwrap_or_else(|| html::logs_beside(&args.manifest));
    let text = render(
        format,
        &m,
        previous.as_ref(),
        &args.manifest,
        &logs,
        packages.as_ref(),
    );
    match &args.output {
        Some(path) => {
            io::write_text(path, &text).map_err(|e| Error::write(path, e))?;
            crate::term::line(&format!("report: {}", path.display()));
        }
        None => print("the report", &text)?,
    }
    Ok(Exit::Success)
}

/// The folder of a manifest (`.` for a bare file name).
fn folder_of(path: &Path) -> &Path {
    path.parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."))
}

/// The report of a manifest in one format; failed builds' logs are read from `logs`
/// (the run's log folder) only; `packages`: the package changes since `previous`.
pub fn render(
    format: ReportFormat,
    m: &Manifest,
    previous: Option<&Manifest>,
    path: &Path,
    logs: &Path,
    packages: Option<&crate::sbom::diff::Changes>,
) -> String {
    match format {
        ReportFormat::Html => html::page_with_logs(m, previous, path, logs, packages),
        ReportFormat::Markdown => markdown::summary_with(m, previous, packages),
    }
}
