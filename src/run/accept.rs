//! Acceptance, after the builds: what each image holds (versions read from it and
//! written into its labels and the manifest), whether it passes verification, and only
//! then the public tags. A cell is built under a private candidate tag; its primary
//! tag and aliases move to it once it is accepted, so a failed, interrupted or
//! unverified night leaves yesterday's tags where they were.

use std::collections::BTreeMap;

use crate::docker::{BuildRequest, Docker};
use crate::engines::Engines;
use crate::manifest::{CellRecord, Manifest, Status, Verification};
use crate::plan::Cell;
use crate::signals::Cancel;

/// Where the final build step records the versions of what it installed.
pub const VERSIONS_FILE: &str = "/etc/image-matrix/versions.json";
/// Labels `io.image-matrix.version.NAME` carry the same versions.
pub const VERSION_LABEL: &str = "io.image-matrix.version.";

pub struct Options {
    /// Verify before promoting; without it, a built image is promoted at once.
    pub verify: bool,
    pub ready_timeout: u64,
    /// How many cells are accepted at once.
    pub jobs: usize,
}

/// One cell to accept: its record, its plan cell and the candidate tag it was built
/// under.
pub struct Candidate<'a> {
    pub record: usize,
    pub cell: &'a Cell,
    pub candidate: String,
    /// The request it was built with, when its image carries inline cache metadata:
    /// the version labels are then added by building it again (every step cached),
    /// which keeps that metadata, where a metadata-only build on top would lose it.
    pub rebuild: Option<&'a BuildRequest>,
}

/// Accept every built or up-to-date cell: versions, verification, tags. `previous` is
/// the manifest this run replaces (an image verified there is not verified again).
/// Cells are accepted `opts.jobs` at a time: each is a handful of docker calls (and a
/// verification's container), independent of the others.
pub fn accept(
    engines: &Engines,
    man: &mut Manifest,
    cells: &[Candidate],
    previous: Option<&Manifest>,
    opts: &Options,
    cancel: &Cancel,
    say: &(dyn Fn(&str) + Sync),
) {
    use rayon::prelude::*;
    let work: Vec<(&Candidate, CellRecord)> = cells
        .iter()
        .filter(|c| man.cells[c.record].status.succeeded())
        .map(|c| (c, man.cells[c.record].clone()))
        .collect();
    let one = |(c, mut rec): (&Candidate, CellRecord)| {
        accept_one(engines, &mut rec, c, previous, opts, cancel, say);
        (c.record, rec)
    };
    let done: Vec<(usize, CellRecord)> = match rayon::ThreadPoolBuilder::new()
        .num_threads(opts.jobs.clamp(1, 64))
        .build()
    {
        Ok(pool) => pool.install(|| work.into_par_iter().map(one).collect()),
        // no threads to be had: one at a time, as before
        Err(_) => work.into_iter().map(one).collect(),
    };
    for (i, rec) in done {
        man.cells[i] = rec;
    }
}

fn accept_one(
    engines: &Engines,
    rec: &mut CellRecord,
    c: &Candidate,
    previous: Option<&Manifest>,
    opts: &Options,
    cancel: &Cancel,
    say: &(dyn Fn(&str) + Sync),
) {
    let Some(engine) = engines.engine(rec.engine.as_deref()) else {
        return;
    };
    let docker = &engine.docker;
    let emulated = engine.emulates(&rec.coordinates.platform);
    rec.emulated = emulated;
    if rec.status == Status::Built {
        record_versions(docker, rec, c, say);
    } else {
        rec.versions =
            versions_from_labels(docker, rec.image_id.as_deref().unwrap_or(&c.candidate));
    }
    let accepted = if !opts.verify {
        true
    } else if cancel.is_set() {
        rec.reason =
            Some("not verified (the run was stopped); public tags left as they were".into());
        false
    } else {
        let v = carried(previous, rec).unwrap_or_else(|| {
            let image = rec.image_id.clone().unwrap_or_else(|| c.candidate.clone());
            say(&format!("verifying {} ...", c.cell.local_tag()));
            crate::verify::verify_image(
                docker,
                &image,
                Some(&rec.coordinates.python),
                opts.ready_timeout,
                emulated,
                cancel,
            )
        });
        let ok = v.ok;
        rec.verification = Some(v);
        if !ok {
            rec.reason = Some("failed verification; public tags left on the previous image".into());
        }
        ok
    };
    if accepted {
        promote(docker, rec, c, say);
    } else if rec.status == Status::Built {
        rec.candidate = Some(c.candidate.clone());
    }
}

/// An earlier verification of this very image (same ID) still holds.
fn carried(previous: Option<&Manifest>, rec: &CellRecord) -> Option<Verification> {
    let id = rec.image_id.as_deref()?;
    previous?
        .cells
        .iter()
        .find(|p| p.id == rec.id && p.image_id.as_deref() == Some(id))
        .and_then(|p| p.verification.clone())
        .filter(|v| v.ok)
}

/// Read the versions from a fresh image and write them into its labels (a metadata
/// build on top of it, under the same candidate tag).
fn record_versions(
    docker: &Docker,
    rec: &mut CellRecord,
    c: &Candidate,
    say: &(dyn Fn(&str) + Sync),
) {
    let image = rec.image_id.clone().unwrap_or_else(|| c.candidate.clone());
    let mut versions = BTreeMap::new();
    match docker.read_file(&image, c.cell.platform(), VERSIONS_FILE) {
        Ok(text) => match serde_json::from_str::<BTreeMap<String, String>>(&text) {
            Ok(v) => versions = v,
            Err(e) => say(&format!(
                "warning: {}: {VERSIONS_FILE} is not a version list: {e}",
                c.cell.id
            )),
        },
        Err(e) => say(&format!(
            "warning: {}: cannot read {VERSIONS_FILE}: {e}",
            c.cell.id
        )),
    }
    if let Ok((_, env)) = docker.labels_and_env(&image) {
        versions.extend(cuda_versions(&env));
    }
    if versions.is_empty() {
        return;
    }
    let labels: Vec<(String, String)> = versions
        .iter()
        .map(|(k, v)| (format!("{VERSION_LABEL}{k}"), v.clone()))
        .collect();
    let relabelled = match c.rebuild.filter(|_| docker.builder.is_buildkit()) {
        Some(r) => rebuild_labelled(docker, r, &image, &c.candidate, &labels)
            .map_err(|e| {
                say(&format!(
                    "warning: {}: {e}; labelling it without its cache metadata",
                    c.cell.id
                ));
            })
            .ok(),
        None => None,
    };
    let relabelled = match relabelled {
        Some(r) => Ok(r),
        None => docker.relabel(&image, &c.candidate, c.cell.platform(), &labels),
    };
    match relabelled {
        Ok((id, size)) => {
            rec.image_id = Some(id);
            rec.size_bytes = Some(size);
        }
        Err(e) => say(&format!(
            "warning: {}: cannot label the versions: {e}",
            c.cell.id
        )),
    }
    rec.versions = versions;
}

/// The same build again with the version labels: only accepted when it made the very
/// same layers (every step came from the cache).
fn rebuild_labelled(
    docker: &Docker,
    r: &BuildRequest,
    image: &str,
    candidate: &str,
    labels: &[(String, String)],
) -> Result<(String, u64), String> {
    let before = docker.layers(image)?;
    let again = BuildRequest {
        tags: vec![candidate.to_string()],
        pull: false,
        no_cache: false,
        cache_from: Vec::new(),
        ..r.clone()
    };
    let (id, layers) =
        docker.rebuild_labelled(&again, labels, std::time::Duration::from_secs(600))?;
    if layers != before {
        // put the candidate tag back on what was built and verified by nobody yet
        let _ = docker.tag(image, candidate);
        return Err("building it again with its version labels did not reuse every layer".into());
    }
    docker
        .image_id_and_size(&id)
        .ok_or_else(|| format!("the labelled image {id} is missing"))
}

/// CUDA and cuDNN as NVIDIA's base images declare them in their environment.
pub fn cuda_versions(env: &[String]) -> BTreeMap<String, String> {
    let mut v = BTreeMap::new();
    for e in env {
        if let Some(x) = e.strip_prefix("CUDA_VERSION=") {
            v.insert("cuda".to_string(), x.to_string());
        } else if let Some(x) = e.strip_prefix("NV_CUDNN_VERSION=") {
            v.insert("cudnn".to_string(), x.to_string());
        }
    }
    v
}

/// The versions an image's labels carry.
pub fn versions_from_labels(docker: &Docker, image: &str) -> BTreeMap<String, String> {
    docker
        .labels_and_env(image)
        .map(|(labels, _)| {
            labels
                .into_iter()
                .filter_map(|(k, v)| Some((k.strip_prefix(VERSION_LABEL)?.to_string(), v)))
                .collect()
        })
        .unwrap_or_default()
}

/// Move the public tags to the cell's image; record the ones that moved (or are new).
fn promote(docker: &Docker, rec: &mut CellRecord, c: &Candidate, say: &(dyn Fn(&str) + Sync)) {
    let Some(image) = rec.image_id.clone() else {
        return;
    };
    // a tag group's member carries its platform tag here; its shared tags name an
    // index, which `push` makes in the registry
    for t in &c.cell.local_tags() {
        if docker.image_id(t).as_deref() == Some(image.as_str()) {
            continue;
        }
        match docker.tag(&image, t) {
            Ok(()) => rec.tags_added.push(t.clone()),
            Err(e) => say(&format!("warning: cannot tag {t}: {e}")),
        }
    }
    if rec.status == Status::Built {
        // the public tags hold it now; the private name is only clutter
        let _ = docker.untag(&c.candidate);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cuda_and_cudnn_come_from_nvidias_environment() {
        let env = [
            "PATH=/usr/bin".to_string(),
            "CUDA_VERSION=12.4.1".into(),
            "NV_CUDNN_VERSION=9.1.0.70-1".into(),
        ];
        let v = cuda_versions(&env);
        assert_eq!(v["cuda"], "12.4.1");
        assert_eq!(v["cudnn"], "9.1.0.70-1");
        assert!(cuda_versions(&["PATH=/bin".to_string()]).is_empty());
    }
}
