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
    let format = args.format.unwrap_or_else(|| match &args.output {
        Some(p) if p.extension().is_some_and(|e| e == "md") => ReportFormat::Markdown,
        _ => ReportFormat::Html,
    });
    let text = render(format, &m, previous.as_ref(), &args.manifest);
    match &args.output {
        Some(path) => {
            io::write_text(path, &text).map_err(|e| Error::write(path, e))?;
            crate::term::line(&format!("report: {}", path.display()));
        }
        None => print("the report", &text)?,
    }
    Ok(Exit::Success)
}

/// The report of a manifest in one format.
pub fn render(
    format: ReportFormat,
    m: &Manifest,
    previous: Option<&Manifest>,
    path: &Path,
) -> String {
    match format {
        ReportFormat::Html => html::page(m, previous, path),
        ReportFormat::Markdown => markdown::summary(m, previous),
    }
}
