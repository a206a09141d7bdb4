//! `matrix verify`: check built images from outside, either every built cell of a
//! manifest (results written back into it) or loose image references.

use std::path::{Path, PathBuf};
use std::time::Duration;

use super::print;
use crate::cli::{VerifyArgs, VerifyFormat};
use crate::coord::{Filter, Subject};
use crate::docker::run_program;
use crate::engines;
use crate::error::{Error, Exit};
use crate::labels;
use crate::manifest::{io, Manifest, Verification};
use crate::signals::{self, Cancel};
use crate::verify;

pub fn run(matrix: &Path, args: &VerifyArgs) -> Result<Exit, Error> {
    let path = args
        .manifest
        .clone()
        .unwrap_or_else(|| PathBuf::from("out/manifest.json"));
    let manifest = if args.images.is_empty() {
        Some(io::read(&path).map_err(Error::Preflight)?)
    } else {
        None
    };
    let engines = super::manifest_engines(
        &args.docker,
        matrix,
        manifest.as_ref().map(|m| (path.as_path(), m)),
    )?;
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
    let cancel = signals::install(verify::remove_all_containers, crate::term::line);
    let report = match manifest {
        Some(mut m) => {
            let which = selected(&m, &args.filters);
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

/// The built cells of a manifest that every filter selects (any new result replaces
/// an earlier one, so verified cells are selected too).
fn selected(m: &Manifest, filters: &[Filter]) -> Vec<usize> {
    (0..m.cells.len())
        .filter(|&i| {
            let c = &m.cells[i];
            c.status.succeeded() && filters.iter().all(|f| f.matches(c as &dyn Subject))
        })
        .collect()
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
        let py = docker.label(image, labels::PYTHON);
        crate::term::line(&format!("verifying {image} ..."));
        report.push((
            image.clone(),
            verify::verify_image(
                docker,
                image,
                py.as_deref(),
                args.ready_timeout,
                false,
                cancel,
            ),
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::manifest::{CellRecord, Status};
    use crate::plan::{plan_text, PlanOptions};
    use crate::run::prepare::record_for;

    #[test]
    fn the_filters_select_records_exactly_as_they_select_cells() {
        let p = plan_text(
            "version: 1\nbases: [nvidia/cuda:12.4.1-cudnn-devel-ubuntu22.04, nvidia/cuda:11.8.0-cudnn8-runtime-ubuntu22.04, ubuntu:22.04]\npython: [\"3.10\"]\n",
            "m.yaml",
            Path::new("."),
            &PlanOptions { date: "20260101".into() },
        )
        .unwrap();
        let mut m = Manifest::new("m.yaml", "0", None);
        m.cells = p
            .cells
            .iter()
            .map(|c| CellRecord {
                status: Status::Built,
                verification: Some(Verification {
                    ok: true,
                    ..Verification::default()
                }),
                ..record_for(c, None)
            })
            .collect();
        for (f, n) in [
            ("cudnn=cudnn8", 1),
            ("cudnn=none", 1),
            ("flavor=devel", 1),
            ("flavor=runtime", 1),
            ("cuda=12", 1),
            ("cuda=11.8", 1),
            ("cuda=none", 1),
            ("os=ubuntu22.04", 3),
            ("arch=x86_64", 3),
            ("base=cuda12*", 1),
            ("tag=*cuda11.8.0*", 1),
            ("id=py3.10-ubuntu22.04-amd64", 1),
        ] {
            let f: Filter = f.parse().unwrap();
            let by_plan: Vec<&str> = crate::coord::select(&p.cells, std::slice::from_ref(&f))
                .iter()
                .map(|c| c.id.as_str())
                .collect();
            let by_record: Vec<&str> = selected(&m, std::slice::from_ref(&f))
                .iter()
                .map(|i| m.cells[*i].id.as_str())
                .collect();
            assert_eq!(by_plan.len(), n, "{f:?} in the plan");
            assert_eq!(by_plan, by_record, "{f:?}");
        }
        m.cells[0].status = Status::Failed;
        assert_eq!(
            selected(&m, &[]).len(),
            2,
            "verified cells are checked again; failed ones not"
        );
    }
}
