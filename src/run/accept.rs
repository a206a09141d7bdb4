//! Acceptance, after the builds: what each image holds (versions read from it and
//! written into its labels and the manifest), whether it passes verification, and only
//! then the public tags. A cell is built under a private candidate tag; its primary
//! tag and aliases move to it once it is accepted, so a failed, interrupted or
//! unverified night leaves yesterday's tags where they were.

use std::collections::{BTreeMap, HashMap};

use crate::docker::{BuildRequest, Docker};
use crate::engines::Engines;
use crate::labels;
use crate::manifest::{CellRecord, Manifest, Status, Verification};
use crate::plan::Cell;
use crate::signals::Cancel;

/// Where the final build step records the versions of what it installed.
pub const VERSIONS_FILE: &str = "/etc/image-matrix/versions.json";

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
/// verification's container), independent of the others. What can be asked about many
/// images at once is: the tags about to move, the bases' environment and the labels of
/// up-to-date images before, the sizes and the candidate tags' removal after.
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
    let work: Vec<&Candidate> = cells
        .iter()
        .filter(|c| man.cells[c.record].status.succeeded())
        .collect();
    if work.is_empty() {
        return;
    }
    let known = Known::gather(engines, man, &work);
    say(&format!(
        "accepting {} image{}{} ...",
        work.len(),
        if work.len() == 1 { "" } else { "s" },
        if opts.verify {
            " (verify, then tag)"
        } else {
            " (tag)"
        }
    ));
    let recs: &Manifest = man;
    let one = |c: &&Candidate| {
        let mut rec = recs.cells[c.record].clone();
        accept_one(engines, &mut rec, c, &known, previous, opts, cancel, say);
        (c.record, rec)
    };
    let done: Vec<(usize, CellRecord)> = match rayon::ThreadPoolBuilder::new()
        .num_threads(opts.jobs.clamp(1, 64))
        .build()
    {
        Ok(pool) => pool.install(|| work.par_iter().map(one).collect()),
        // no threads to be had: one at a time, as before
        Err(_) => work.iter().map(one).collect(),
    };
    for (i, rec) in done {
        man.cells[i] = rec;
    }
    finish(engines, man, &work);
}

/// What acceptance asks each engine once, up front, instead of once per cell.
#[derive(Default)]
struct Known {
    /// Per engine: every tag of the run's repositories and the image it points at
    /// (None when the engine could not list them: then each tag is asked about).
    tags: HashMap<String, Option<HashMap<String, String>>>,
    /// Per engine and base image: CUDA and cuDNN as the base's environment declares
    /// them (cells inherit it).
    base_versions: HashMap<(String, String), BTreeMap<String, String>>,
    /// Per engine: the labels of the up-to-date cells' images, by image ID.
    labels: HashMap<String, HashMap<String, BTreeMap<String, String>>>,
}

impl Known {
    fn gather(engines: &Engines, man: &Manifest, work: &[&Candidate]) -> Known {
        let mut k = Known::default();
        let mut by_engine: BTreeMap<String, Vec<&CellRecord>> = BTreeMap::new();
        for c in work {
            let rec = &man.cells[c.record];
            by_engine.entry(engine_key(rec)).or_default().push(rec);
        }
        let mut repos: Vec<String> = work
            .iter()
            .flat_map(|c| c.cell.local_tags())
            .map(|t| crate::reference::split(&t).0.to_string())
            .collect();
        repos.sort();
        repos.dedup();
        for (name, recs) in by_engine {
            let Some(engine) = engines.engine(recs[0].engine.as_deref()) else {
                continue;
            };
            let docker = &engine.docker;
            let mut tags = Some(HashMap::new());
            for r in &repos {
                match (docker.tags_of(r), tags.as_mut()) {
                    (Ok(t), Some(all)) => all.extend(t),
                    _ => tags = None,
                }
            }
            k.tags.insert(name.clone(), tags);
            let mut bases: Vec<&str> = recs
                .iter()
                .filter(|r| r.status == Status::Built)
                .map(|r| base_of(r))
                .collect();
            bases.sort_unstable();
            bases.dedup();
            for b in bases {
                let v = docker
                    .labels_and_env(b)
                    .map(|(_, env)| cuda_versions(&env))
                    .unwrap_or_default();
                k.base_versions.insert((name.clone(), b.to_string()), v);
            }
            let current: Vec<&str> = recs
                .iter()
                .filter(|r| r.status == Status::UpToDate)
                .filter_map(|r| r.image_id.as_deref())
                .collect();
            let labels = docker
                .inspect_by_id(&current, "{{json .Config.Labels}}")
                .into_iter()
                .map(|(id, l)| (id, parse_labels(&l)))
                .collect();
            k.labels.insert(name, labels);
        }
        k
    }

    /// Whether `tag` already names `image` on this engine.
    fn tag_is_on(&self, docker: &Docker, engine: &str, tag: &str, image: &str) -> bool {
        match self.tags.get(engine) {
            Some(Some(tags)) => tags.get(docker_hub_short(tag)).map(String::as_str) == Some(image),
            _ => docker.image_id(tag).as_deref() == Some(image),
        }
    }
}

/// A tag as `docker image ls` prints it: Docker Hub's registry (and its `library/`
/// namespace) left out, as the client does.
fn docker_hub_short(tag: &str) -> &str {
    let t = tag.strip_prefix("docker.io/").unwrap_or(tag);
    t.strip_prefix("library/").unwrap_or(t)
}

/// The engine a record names, as a key ("" for the first engine).
fn engine_key(rec: &CellRecord) -> String {
    rec.engine.clone().unwrap_or_default()
}

/// The base image a cell was built from, as this engine knows it.
fn base_of(rec: &CellRecord) -> &str {
    rec.base_digest.as_deref().unwrap_or(&rec.coordinates.base)
}

fn parse_labels(json: &str) -> BTreeMap<String, String> {
    serde_json::from_str::<Option<BTreeMap<String, String>>>(json)
        .ok()
        .flatten()
        .unwrap_or_default()
}

/// After the cells: the sizes nobody has read yet, in one call per engine, and the
/// candidate tags of promoted images, removed in one call per engine.
fn finish(engines: &Engines, man: &mut Manifest, work: &[&Candidate]) {
    let mut by_engine: BTreeMap<String, Vec<usize>> = BTreeMap::new();
    for c in work {
        by_engine
            .entry(engine_key(&man.cells[c.record]))
            .or_default()
            .push(c.record);
    }
    for recs in by_engine.values() {
        let Some(engine) = engines.engine(man.cells[recs[0]].engine.as_deref()) else {
            continue;
        };
        let docker = &engine.docker;
        let unsized_: Vec<&str> = recs
            .iter()
            .map(|&i| &man.cells[i])
            .filter(|r| r.size_bytes.is_none())
            .filter_map(|r| r.image_id.as_deref())
            .collect();
        let sizes = docker.inspect_by_id(&unsized_, "{{.Size}}");
        for &i in recs {
            let rec = &mut man.cells[i];
            if rec.size_bytes.is_none() {
                let id = rec.image_id.as_deref().unwrap_or_default();
                rec.size_bytes = match sizes.get(id) {
                    Some(s) => s.trim().parse().ok(),
                    None => docker.image_id_and_size(id).map(|(_, s)| s),
                };
            }
        }
        let promoted: Vec<&str> = work
            .iter()
            .filter(|c| recs.contains(&c.record))
            .filter(|c| {
                let r = &man.cells[c.record];
                r.status == Status::Built && r.candidate.is_none()
            })
            .map(|c| c.candidate.as_str())
            .collect();
        // the public tags hold them now; the private names are only clutter
        docker.untag_all(&promoted);
    }
}

#[allow(clippy::too_many_arguments)]
fn accept_one(
    engines: &Engines,
    rec: &mut CellRecord,
    c: &Candidate,
    known: &Known,
    previous: Option<&Manifest>,
    opts: &Options,
    cancel: &Cancel,
    say: &(dyn Fn(&str) + Sync),
) {
    let Some(engine) = engines.engine(rec.engine.as_deref()) else {
        return;
    };
    let docker = &engine.docker;
    let key = engine_key(rec);
    let emulated = engine.emulates(&rec.coordinates.platform);
    rec.emulated = emulated;
    if rec.status == Status::Built {
        let base = known
            .base_versions
            .get(&(key.clone(), base_of(rec).to_string()))
            .cloned()
            .unwrap_or_default();
        record_versions(docker, rec, c, base, say);
    } else {
        let image = rec.image_id.as_deref().unwrap_or(&c.candidate);
        rec.versions = match known.labels.get(&key).and_then(|l| l.get(image)) {
            Some(labels) => version_labels(labels.clone()),
            None => versions_from_labels(docker, image),
        };
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
        promote(docker, known, &key, rec, c, say);
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
    base_versions: BTreeMap<String, String>,
    say: &(dyn Fn(&str) + Sync),
) {
    let image = rec.image_id.clone().unwrap_or_else(|| c.candidate.clone());
    // printed by the build when its final step ran; read from the image otherwise
    let mut versions = std::mem::take(&mut rec.versions);
    if versions.is_empty() {
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
    }
    versions.extend(base_versions);
    if versions.is_empty() {
        return;
    }
    let labels: Vec<(String, String)> = versions
        .iter()
        .map(|(k, v)| (format!("{}{k}", labels::VERSION_PREFIX), v.clone()))
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
        None => docker
            .relabel(&image, &c.candidate, c.cell.platform(), &labels)
            .map(|id| (id, None)),
    };
    match relabelled {
        Ok((id, size)) => {
            rec.image_id = Some(id);
            // None: read with the others' once every cell is accepted
            rec.size_bytes = size;
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
) -> Result<(String, Option<u64>), String> {
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
        .map(|(id, size)| (id, Some(size)))
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
        .map(|(labels, _)| version_labels(labels))
        .unwrap_or_default()
}

/// The `io.image-matrix.version.NAME` labels among an image's labels, by NAME.
fn version_labels(labels: BTreeMap<String, String>) -> BTreeMap<String, String> {
    labels
        .into_iter()
        .filter_map(|(k, v)| Some((k.strip_prefix(labels::VERSION_PREFIX)?.to_string(), v)))
        .collect()
}

/// Move the public tags to the cell's image; record the ones that moved (or are new).
/// The candidate tag is removed afterwards, with the others' (see [`finish`]).
fn promote(
    docker: &Docker,
    known: &Known,
    engine: &str,
    rec: &mut CellRecord,
    c: &Candidate,
    say: &(dyn Fn(&str) + Sync),
) {
    let Some(image) = rec.image_id.clone() else {
        return;
    };
    // a tag group's member carries its platform tag here; its shared tags name an
    // index, which `push` makes in the registry
    for t in &c.cell.local_tags() {
        if known.tag_is_on(docker, engine, t, &image) {
            continue;
        }
        match docker.tag(&image, t) {
            Ok(()) => rec.tags_added.push(t.clone()),
            Err(e) => say(&format!("warning: cannot tag {t}: {e}")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tags_are_compared_as_image_ls_prints_them() {
        assert_eq!(docker_hub_short("docker.io/library/m:1"), "m:1");
        assert_eq!(docker_hub_short("docker.io/org/m:1"), "org/m:1");
        assert_eq!(docker_hub_short("org/m:1"), "org/m:1");
        assert_eq!(
            docker_hub_short("127.0.0.1:5000/library/m:1"),
            "127.0.0.1:5000/library/m:1"
        );
    }

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
