//! `matrix verify`: check built images from outside, either every built cell of a
//! manifest (results written back into it) or loose image references.

use std::path::{Path, PathBuf};
use std::time::Duration;

use super::print;
use crate::cli::{VerifyArgs, VerifyFormat};
use crate::coord::Subject;
use crate::docker::run_program;
use crate::engines;
use crate::error::{Error, Exit};
use crate::manifest::{io, Verification};
use crate::signals::{self, Cancel};
use crate::verify;

pub fn run(args: &VerifyArgs) -> Result<Exit, Error> {
    let path = args
        .manifest
        .clone()
        .unwrap_or_else(|| PathBuf::from("out/manifest.json"));
    let manifest = if args.images.is_empty() {
        Some(io::read(&path).map_err(Error::Preflight)?)
    } else {
        None
    };
    let recorded = manifest.as_ref().map_or(&[][..], |m| &m.engines[..]);
    let specs = engines::specs(
        &args.docker.engines,
        args.docker.context.as_deref(),
        &[],
        recorded,
    )
    .map_err(Error::Usage)?;
    let engines = engines::connect(
        &args.docker.docker,
        crate::docker::Builder::Auto,
        specs,
        std::num::NonZeroUsize::MIN,
    )?
    .engines;
    if run_program(
        Path::new("sshpass"),
        &["-V".to_string()],
        None,
        Duration::from_secs(5),
    )
    .is_err()
    {
        return Err(Error::Preflight(
            "verify needs `sshpass` and the OpenSSH client (apt-get install sshpass openssh-client)"
                .into(),
        ));
    }
    let cancel = Cancel::default();
    signals::install(&cancel, verify::remove_all_containers);
    let report = match manifest {
        Some(mut m) => {
            let which: Vec<usize> = (0..m.cells.len())
                .filter(|&i| {
                    let c = &m.cells[i];
                    c.status.succeeded()
                        && args.filters.iter().all(|f| f.matches(c as &dyn Subject))
                })
                .collect();
            if which.is_empty() {
                crate::term::line(&format!(
                    "nothing to verify: {} has no built cell{}",
                    path.display(),
                    if args.filters.is_empty() {
                        ""
                    } else {
                        " that the filters select"
                    }
                ));
                return Ok(Exit::Success);
            }
            let r = verify::verify_records(
                &engines,
                &mut m.cells,
                &which,
                args.ready_timeout,
                &cancel,
                &crate::term::line,
            );
            io::write(&path, &m).map_err(|source| Error::StaleManifest {
                path: path.clone(),
                source,
            })?;
            r
        }
        None => loose_images(&engines, args, &cancel),
    };
    show(args.format, &report)?;
    if let Some(s) = cancel.signal() {
        return Ok(Exit::Stopped(s));
    }
    Ok(Exit::from_ok(report.iter().all(|(_, v)| v.ok)))
}

/// Loose images are looked up on the first engine given.
fn loose_images(
    engines: &engines::Engines,
    args: &VerifyArgs,
    cancel: &Cancel,
) -> Vec<(String, Verification)> {
    let docker = &engines.first().docker;
    let mut report = Vec::new();
    for image in &args.images {
        if cancel.is_set() {
            break;
        }
        let py = docker.label(image, "io.image-matrix.python");
        crate::term::line(&format!("verifying {image} ..."));
        report.push((
            image.clone(),
            verify::verify_image(docker, image, py.as_deref(), args.ready_timeout, cancel),
        ));
    }
    report
}

fn show(format: VerifyFormat, report: &[(String, Verification)]) -> Result<(), Error> {
    let text = match format {
        VerifyFormat::Table => verify::table(report),
        VerifyFormat::Json => {
            let v: Vec<serde_json::Value> = report
                .iter()
                .map(|(i, v)| {
                    serde_json::json!({"image": i, "ok": v.ok, "ready_seconds": v.ready_seconds, "checks": v.checks})
                })
                .collect();
            super::json_text(&v)
        }
    };
    print("the results", &text)
}
