//! Acceptance, after the builds: what each image holds (versions read from it and
//! written into its labels and the manifest), whether it passes verification, and only
//! then the public tags. A cell is built under a private candidate tag; its primary
//! tag and aliases move to it once it is accepted, so a failed, interrupted or
//! unverified night leaves yesterday's tags where they were.

use std::collections::{BTreeMap, HashMap};

use crate::docker::{BuildRequest, Input};
use crate::engine::{Fleet, ImageEngine};
use crate::labels;
use crate::manifest::{CellRecord, Manifest, SbomRecord, Status, Verification};
use crate::run::events::{Listen, Phase};
use crate::sbom::{self, Collected};
use crate::signals::Cancel;

/// Where the final build step records the versions of what it installed.
pub const VERSIONS_FILE: &str = "/etc/image-matrix/versions.json";

pub struct Options {
    /// Verify before promoting; without it, a built image is promoted at once.
    pub verify: bool,
    pub ready_timeout: u64,
    /// How many cells are accepted at once.
    pub jobs: usize,
    /// The manifest's folder, where each accepted cell's SBOM is written
    /// (`sbom/<cell>.json`); None: no SBOM.
    pub sbom_dir: Option<std::path::PathBuf>,
    /// Acceptance was announced already (it began while cells were still building).
    pub announced: bool,
}

/// One cell to accept: its record (which names its tags and platform) and the candidate
/// tag it was built under.
pub struct Candidate<'a> {
    pub record: usize,
    pub candidate: String,
    /// How it was built, when its image carries inline cache metadata: the version
    /// labels are then added by building it again (every step cached), which keeps
    /// that metadata, where a metadata-only build on top would lose it.
    pub rebuild: Option<Rebuild<'a>>,
}

/// A build to run again: its request, and its context (sent on standard input, as the
/// first time).
#[derive(Clone, Copy)]
pub struct Rebuild<'a> {
    pub request: &'a BuildRequest,
    pub context: Input<'a>,
}

/// What acceptance decided: the new record of every cell it accepted (by record index),
/// for the manifest's recorder to apply. Acceptance itself writes no manifest.
#[derive(Debug, Default)]
pub struct Accepted(pub Vec<(usize, CellRecord)>);

impl Accepted {
    /// The records into the manifest they came from.
    pub fn apply(self, man: &mut Manifest) {
        for (i, rec) in self.0 {
            man.cells[i] = rec;
        }
    }
}

/// What accepting one cell needs besides the cell: the same for every cell of a run.
struct Ctx<'a> {
    engines: &'a dyn Fleet,
    known: Known,
    previous: Option<&'a Manifest>,
    opts: &'a Options,
    cancel: &'a Cancel,
    listen: Listen<'a>,
}

/// Accept every built or up-to-date cell: versions, verification, tags. `previous` is
/// the manifest this run replaces (an image verified there is not verified again).
/// Cells are accepted `opts.jobs` at a time: each is a handful of docker calls (and a
/// verification's container), independent of the others. What can be asked about many
/// images at once is: the tags about to move, the bases' environment and the labels of
/// up-to-date images before, the sizes and the candidate tags' removal after.
pub fn accept(
    engines: &dyn Fleet,
    man: &Manifest,
    cells: &[Candidate],
    previous: Option<&Manifest>,
    opts: &Options,
    cancel: &Cancel,
    listen: Listen,
) -> Accepted {
    use rayon::prelude::*;
    let work: Vec<&Candidate> = cells
        .iter()
        .filter(|c| man.cells[c.record].status.succeeded())
        .collect();
    if work.is_empty() {
        return Accepted::default();
    }
    let ctx = Ctx {
        engines,
        known: Known::gather(engines, man, &work),
        previous,
        opts,
        cancel,
        listen,
    };
    if !opts.announced {
        listen(&Phase::Accepting {
            images: work.len(),
            verify: opts.verify,
        });
    }
    let one = |c: &&Candidate| {
        let mut rec = man.cells[c.record].clone();
        accept_one(&ctx, &mut rec, c);
        (c.record, rec)
    };
    let mut done: Vec<(usize, CellRecord)> = match rayon::ThreadPoolBuilder::new()
        .num_threads(opts.jobs.clamp(1, 64))
        .build()
    {
        Ok(pool) => pool.install(|| work.par_iter().map(one).collect()),
        // no threads to be had: one at a time, as before
        Err(_) => work.iter().map(one).collect(),
    };
    finish(engines, &mut done, &work);
    Accepted(done)
}

/// Acceptance of built cells while the others still build: with verification, each
/// cell is accepted (versions, its verification, its SBOM, its tags) as soon as its
/// build finishes, so only the last cell's verification is on the run's critical path.
/// Each cell asks its engine for what [`accept`] asks once for all: its base's CUDA
/// versions (once per base and engine) and its tags one by one. Cells found up to date
/// are accepted after the builds, together, by [`accept`].
pub struct Early<'a> {
    engines: &'a dyn Fleet,
    previous: Option<&'a Manifest>,
    opts: &'a Options,
    cancel: &'a Cancel,
    listen: Listen<'a>,
    bases: std::sync::Mutex<HashMap<(String, String), BTreeMap<String, String>>>,
    done: std::sync::Mutex<Vec<(usize, CellRecord, String)>>,
}

impl<'a> Early<'a> {
    pub fn new(
        engines: &'a dyn Fleet,
        previous: Option<&'a Manifest>,
        opts: &'a Options,
        cancel: &'a Cancel,
        listen: Listen<'a>,
    ) -> Early<'a> {
        Early {
            engines,
            previous,
            opts,
            cancel,
            listen,
            bases: Default::default(),
            done: Default::default(),
        }
    }

    /// Accept one built cell: `rec` is its record as the build left it.
    pub fn accept(&self, mut rec: CellRecord, c: &Candidate) {
        let key = engine_key(&rec);
        let mut known = Known::default();
        if let Some(engine) = self.engines.engine(rec.engine.as_deref()) {
            let base = (key.clone(), base_of(&rec).to_string());
            let cached = self.bases.lock().ok().and_then(|b| b.get(&base).cloned());
            let versions = cached.unwrap_or_else(|| {
                let v = engine
                    .labels_and_env(&base.1)
                    .map(|(_, env)| cuda_versions(&env))
                    .unwrap_or_default();
                if let Ok(mut b) = self.bases.lock() {
                    b.insert(base.clone(), v.clone());
                }
                v
            });
            known.base_versions.insert(base, versions);
        }
        let ctx = Ctx {
            engines: self.engines,
            known,
            previous: self.previous,
            opts: self.opts,
            cancel: self.cancel,
            listen: self.listen,
        };
        accept_one(&ctx, &mut rec, c);
        if let Ok(mut d) = self.done.lock() {
            d.push((c.record, rec, c.candidate.clone()));
        }
    }

    /// The records of the cells accepted so far (by record index), with the sizes read
    /// and the candidate tags of promoted images removed, as [`accept`] ends.
    pub fn finish(self) -> Accepted {
        let done = self.done.into_inner().unwrap_or_default();
        let work: Vec<Candidate> = done
            .iter()
            .map(|(record, _, candidate)| Candidate {
                record: *record,
                candidate: candidate.clone(),
                rebuild: None,
            })
            .collect();
        let mut done: Vec<(usize, CellRecord)> =
            done.into_iter().map(|(i, rec, _)| (i, rec)).collect();
        let refs: Vec<&Candidate> = work.iter().collect();
        finish(self.engines, &mut done, &refs);
        Accepted(done)
    }
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
    fn gather(engines: &dyn Fleet, man: &Manifest, work: &[&Candidate]) -> Known {
        let mut k = Known::default();
        let mut by_engine: BTreeMap<String, Vec<&CellRecord>> = BTreeMap::new();
        for c in work {
            let rec = &man.cells[c.record];
            by_engine.entry(engine_key(rec)).or_default().push(rec);
        }
        let mut repos: Vec<String> = work
            .iter()
            .flat_map(|c| man.cells[c.record].local_tags())
            .map(|t| crate::reference::split(&t).0.to_string())
            .collect();
        repos.sort();
        repos.dedup();
        for (name, recs) in by_engine {
            let Some(engine) = engines.engine(recs[0].engine.as_deref()) else {
                continue;
            };
            let docker = engine;
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
                .inspect_many(&current, "{{json .Config.Labels}}")
                .into_iter()
                .map(|(id, l)| (id, parse_labels(&l)))
                .collect();
            k.labels.insert(name, labels);
        }
        k
    }

    /// Whether `tag` already names `image` on this engine.
    fn tag_is_on(&self, docker: &dyn ImageEngine, engine: &str, tag: &str, image: &str) -> bool {
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
fn finish(engines: &dyn Fleet, done: &mut [(usize, CellRecord)], work: &[&Candidate]) {
    let candidate: HashMap<usize, &str> = work
        .iter()
        .map(|c| (c.record, c.candidate.as_str()))
        .collect();
    let mut by_engine: BTreeMap<String, Vec<usize>> = BTreeMap::new();
    for (k, (_, rec)) in done.iter().enumerate() {
        by_engine.entry(engine_key(rec)).or_default().push(k);
    }
    for ks in by_engine.values() {
        let Some(docker) = engines.engine(done[ks[0]].1.engine.as_deref()) else {
            continue;
        };
        let unsized_: Vec<&str> = ks
            .iter()
            .map(|&k| &done[k].1)
            .filter(|r| r.size_bytes.is_none())
            .filter_map(|r| r.image_id.as_deref())
            .collect();
        let sizes = docker.inspect_many(&unsized_, "{{.Size}}");
        for &k in ks {
            let rec = &mut done[k].1;
            if rec.size_bytes.is_none() {
                let id = rec.image_id.as_deref().unwrap_or_default();
                rec.size_bytes = match sizes.get(id) {
                    Some(s) => s.trim().parse().ok(),
                    None => docker.image_id_and_size(id).map(|(_, s)| s),
                };
            }
        }
        let promoted: Vec<&str> = ks
            .iter()
            .map(|&k| &done[k])
            .filter(|(_, r)| r.status == Status::Built && r.candidate.is_none())
            .filter_map(|(i, _)| candidate.get(i).copied())
            .collect();
        // the public tags hold them now; the private names are only clutter
        docker.untag_all(&promoted);
    }
}

fn accept_one(ctx: &Ctx, rec: &mut CellRecord, c: &Candidate) {
    let (known, previous, opts, cancel, listen) =
        (&ctx.known, ctx.previous, ctx.opts, ctx.cancel, ctx.listen);
    let Some(engine) = ctx.engines.engine(rec.engine.as_deref()) else {
        return;
    };
    let docker = engine;
    let key = engine_key(rec);
    let emulated = engine.emulates(&rec.coordinates.platform);
    rec.emulated = emulated;
    if rec.status == Status::Built {
        let base = known
            .base_versions
            .get(&(key.clone(), base_of(rec).to_string()))
            .cloned()
            .unwrap_or_default();
        record_versions(docker, rec, c, base, listen);
    } else {
        let image = rec.image_id.as_deref().unwrap_or(&c.candidate);
        rec.versions = match known.labels.get(&key).and_then(|l| l.get(image)) {
            Some(labels) => version_labels(labels.clone()),
            None => versions_from_labels(docker, image),
        };
    }
    let (accepted, listed) = verify_cell(ctx, docker, rec, c, emulated);
    if let Some(dir) = opts.sbom_dir.as_deref().filter(|_| !cancel.is_set()) {
        let sbom = sbom_of(docker, rec, c, listed, previous, dir, emulated);
        if sbom.path.is_none() {
            let why = sbom.notes.last().cloned().unwrap_or_default();
            warn(listen, &rec.id, format!("warning: {}: {why}", rec.id));
        }
        rec.sbom = Some(sbom);
    }
    if accepted {
        promote(docker, known, &key, rec, listen);
    } else if rec.status == Status::Built {
        rec.candidate = Some(c.candidate.clone());
    }
}

/// Verify the cell's image unless it need not be (or the run was stopped): whether it
/// may be promoted, and its packages when its verification's container listed them.
fn verify_cell(
    ctx: &Ctx,
    docker: &dyn ImageEngine,
    rec: &mut CellRecord,
    c: &Candidate,
    emulated: bool,
) -> (bool, Option<Collected>) {
    let (opts, listen) = (ctx.opts, ctx.listen);
    if !opts.verify {
        return (true, None);
    }
    if ctx.cancel.is_set() {
        rec.reason =
            Some("not verified (the run was stopped); public tags left as they were".into());
        return (false, None);
    }
    let (v, listed) = match carried(ctx.previous, rec) {
        Some(v) => (v, None),
        None => {
            let image = rec.image_id.clone().unwrap_or_else(|| c.candidate.clone());
            listen(&Phase::Verifying {
                id: &rec.id,
                tag: rec.local_tag().unwrap_or_default(),
            });
            docker.verify(
                &image,
                Some(&rec.coordinates.python),
                opts.ready_timeout,
                emulated,
                ctx.cancel,
            )
        }
    };
    let ok = v.ok;
    rec.verification = Some(v);
    if !ok {
        rec.reason = Some("failed verification; public tags left on the previous image".into());
    }
    (ok, listed)
}

/// The cell's SBOM, written under `dir`: from what its verification listed; else the
/// previous run's, when the image is the same and its file unchanged; else listed now
/// in a container of its own.
fn sbom_of(
    docker: &dyn ImageEngine,
    rec: &CellRecord,
    c: &Candidate,
    listed: Option<Collected>,
    previous: Option<&Manifest>,
    dir: &std::path::Path,
    emulated: bool,
) -> SbomRecord {
    let image = rec.image_id.clone().unwrap_or_else(|| c.candidate.clone());
    // a verification container that could not list (it stopped early) is not the last
    // word: a container of the image's own may
    let listed = match listed.filter(|l| l.output.is_ok()) {
        Some(l) => l,
        None => {
            if let Some(r) = sbom::carried(previous, &rec.id, rec.image_id.as_deref(), dir) {
                return r;
            }
            docker.list_packages(&image, &rec.coordinates.platform, emulated)
        }
    };
    let subject = sbom::cyclonedx::Subject {
        cell: &rec.id,
        tag: rec.local_tag(),
        image_id: rec.image_id.as_deref(),
        platform: &rec.coordinates.platform,
    };
    sbom::record(&listed, &subject, dir)
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
    docker: &dyn ImageEngine,
    rec: &mut CellRecord,
    c: &Candidate,
    base_versions: BTreeMap<String, String>,
    listen: Listen,
) {
    let image = rec.image_id.clone().unwrap_or_else(|| c.candidate.clone());
    let (id, platform) = (rec.id.clone(), rec.coordinates.platform.clone());
    // printed by the build when its final step ran; read from the image otherwise
    let mut versions = std::mem::take(&mut rec.versions);
    if versions.is_empty() {
        match docker.read_file(&image, &platform, VERSIONS_FILE) {
            Ok(text) => match serde_json::from_str::<BTreeMap<String, String>>(&text) {
                Ok(v) => versions = v,
                Err(e) => warn(
                    listen,
                    &id,
                    format!(
                        "warning: {}: {VERSIONS_FILE} is not a version list: {e}",
                        id
                    ),
                ),
            },
            Err(e) => warn(
                listen,
                &id,
                format!("warning: {}: cannot read {VERSIONS_FILE}: {e}", id),
            ),
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
    let relabelled = match c.rebuild.filter(|_| docker.is_buildkit()) {
        Some(r) => rebuild_labelled(docker, r, &image, &c.candidate, &labels)
            .map_err(|e| {
                warn(
                    listen,
                    &id,
                    format!(
                        "warning: {}: {e}; labelling it without its cache metadata",
                        id
                    ),
                );
            })
            .ok(),
        None => None,
    };
    let relabelled = match relabelled {
        Some(r) => Ok(r),
        None => docker
            .relabel(&image, &c.candidate, &platform, &labels)
            .map(|id| (id, None)),
    };
    match relabelled {
        Ok((id, size)) => {
            rec.image_id = Some(id);
            // None: read with the others' once every cell is accepted
            rec.size_bytes = size;
        }
        Err(e) => warn(
            listen,
            &id,
            format!("warning: {}: cannot label the versions: {e}", id),
        ),
    }
    rec.versions = versions;
}

/// The same build again with the version labels: only accepted when it made the very
/// same layers (every step came from the cache).
fn rebuild_labelled(
    docker: &dyn ImageEngine,
    r: Rebuild,
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
        ..r.request.clone()
    };
    let timeout = std::time::Duration::from_secs(600);
    let (id, layers) = docker.rebuild_labelled(&again, r.context, labels, timeout)?;
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

fn warn(listen: Listen, id: &str, text: String) {
    listen(&Phase::Warning { id: Some(id), text });
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
pub fn versions_from_labels(docker: &dyn ImageEngine, image: &str) -> BTreeMap<String, String> {
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
    docker: &dyn ImageEngine,
    known: &Known,
    engine: &str,
    rec: &mut CellRecord,
    listen: Listen,
) {
    let Some(image) = rec.image_id.clone() else {
        return;
    };
    // a tag group's member carries its platform tag here; its shared tags name an
    // index, which `push` makes in the registry
    for t in &rec.local_tags() {
        if known.tag_is_on(docker, engine, t, &image) {
            continue;
        }
        match docker.tag(&image, t) {
            Ok(()) => {
                listen(&Phase::Promoted {
                    id: &rec.id,
                    tag: t,
                });
                rec.tags_added.push(t.clone());
            }
            Err(e) => warn(listen, &rec.id, format!("warning: cannot tag {t}: {e}")),
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

/// Two cells built, for the tests of acceptance.
#[cfg(test)]
mod promotion_support {
    use super::*;
    use crate::engine::fake::FakeFleet;
    use crate::plan::{plan_text, Plan, PlanOptions};

    pub fn plan() -> Plan {
        plan_text(
            "version: 1\nimage:\n  aliases: [\"{tag}-nightly\"]\nbases: [ubuntu:22.04]\npython: [\"3.10\", \"3.11\"]\n",
            "m.yaml",
            std::path::Path::new("."),
            &PlanOptions {
                date: "20260101".into(),
            },
        )
        .unwrap()
    }

    /// Both cells built as `sha256:built-N` under candidate tags, with their versions.
    pub fn built<'p>(p: &'p Plan, fleet: &FakeFleet) -> (Manifest, Vec<Candidate<'p>>) {
        let mut m = Manifest::new("m.yaml", "0", None);
        let mut cands = Vec::new();
        for (i, c) in p.cells.iter().enumerate() {
            let mut r = crate::run::prepare::record_for(c, Some(format!("hash-{i}")));
            r.status = Status::Built;
            r.image_id = Some(format!("sha256:built-{i}"));
            r.versions = BTreeMap::from([("python".to_string(), c.coord.python.clone())]);
            let candidate = format!("miniconda:candidate-{i}");
            fleet
                .first()
                .image(&format!("sha256:built-{i}"), &[candidate.as_str()]);
            m.cells.push(r);
            cands.push(Candidate {
                record: i,
                candidate,
                rebuild: None,
            });
        }
        (m, cands)
    }
}

/// The promotion rules on an in-process engine: tags move only to images that passed.
#[cfg(test)]
mod promotion {
    use super::promotion_support::*;
    use super::*;
    use crate::engine::fake::FakeFleet;

    fn opts(verify: bool) -> Options {
        Options {
            verify,
            ready_timeout: 1,
            jobs: 2,
            sbom_dir: None,
            announced: false,
        }
    }

    #[test]
    fn tags_move_only_to_images_that_pass_verification() {
        let p = plan();
        let fleet = FakeFleet::one();
        let (mut m, cands) = built(&p, &fleet);
        let e = fleet.first();
        // last night's image holds the failing cell's tags
        let failing = &p.cells[1];
        let old: Vec<&str> = failing.tags.iter().map(String::as_str).collect();
        e.image("sha256:last-night", &old);
        e.fails_verification("sha256:built-1");
        accept(
            &fleet,
            &m,
            &cands,
            None,
            &opts(true),
            &Cancel::default(),
            &|_| {},
        )
        .apply(&mut m);
        for t in &p.cells[0].tags {
            assert_eq!(
                e.tagged(t).as_deref(),
                Some("sha256:built-0-labelled"),
                "{t}"
            );
        }
        assert_eq!(m.cells[0].tags_added, p.cells[0].tags);
        for t in &failing.tags {
            assert_eq!(e.tagged(t).as_deref(), Some("sha256:last-night"), "{t}");
        }
        assert!(m.cells[1].tags_added.is_empty());
        assert!(!m.cells[1].verification.as_ref().unwrap().ok);
        // the failed image stays reachable under its private name; the accepted one's
        // private name is gone
        assert_eq!(
            m.cells[1].candidate.as_deref(),
            Some("miniconda:candidate-1")
        );
        assert!(e.tagged("miniconda:candidate-1").is_some());
        assert!(e.tagged("miniconda:candidate-0").is_none());
    }

    #[test]
    fn a_stopped_run_verifies_nothing_and_moves_no_public_tag() {
        let p = plan();
        let fleet = FakeFleet::one();
        let (mut m, cands) = built(&p, &fleet);
        let cancel = Cancel::default();
        cancel.set(crate::signals::Reason::Signal(
            crate::signals::Signal::Terminate,
        ));
        accept(&fleet, &m, &cands, None, &opts(true), &cancel, &|_| {}).apply(&mut m);
        let log = fleet.first().log();
        assert!(!log.iter().any(|l| l.starts_with("verify")), "{log:?}");
        for (c, r) in p.cells.iter().zip(&m.cells) {
            for t in &c.tags {
                assert!(fleet.first().tagged(t).is_none(), "{t} moved: {log:?}");
            }
            assert!(r.reason.as_deref().unwrap().contains("stopped"), "{r:?}");
        }
    }

    #[test]
    fn without_verification_a_built_image_is_tagged_at_once() {
        let p = plan();
        let fleet = FakeFleet::one();
        let (mut m, cands) = built(&p, &fleet);
        fleet.first().fails_verification("sha256:built-1");
        accept(
            &fleet,
            &m,
            &cands,
            None,
            &opts(false),
            &Cancel::default(),
            &|_| {},
        )
        .apply(&mut m);
        let log = fleet.first().log();
        assert!(!log.iter().any(|l| l.starts_with("verify")), "{log:?}");
        for (c, r) in p.cells.iter().zip(&m.cells) {
            assert!(r.verification.is_none());
            for t in &c.tags {
                assert!(fleet.first().tagged(t).is_some(), "{t}: {log:?}");
            }
        }
    }

    #[test]
    fn an_image_verified_last_night_is_not_verified_again() {
        let p = plan();
        let fleet = FakeFleet::one();
        let (mut m, cands) = built(&p, &fleet);
        // up to date: the image (and its labels) of last night
        for r in &mut m.cells {
            r.status = Status::UpToDate;
            r.versions.clear();
        }
        let mut previous = m.clone();
        previous.cells[0].verification = Some(Verification {
            ok: true,
            verified_at: Some("2026-01-01T00:00:00Z".into()),
            ..Verification::default()
        });
        accept(
            &fleet,
            &m,
            &cands,
            Some(&previous),
            &opts(true),
            &Cancel::default(),
            &|_| {},
        )
        .apply(&mut m);
        let log = fleet.first().log();
        let verified: Vec<&String> = log.iter().filter(|l| l.starts_with("verify")).collect();
        assert_eq!(verified, ["verify sha256:built-1"], "{log:?}");
        assert_eq!(
            m.cells[0]
                .verification
                .as_ref()
                .unwrap()
                .verified_at
                .as_deref(),
            Some("2026-01-01T00:00:00Z")
        );
        for c in &p.cells {
            for t in &c.tags {
                assert!(fleet.first().tagged(t).is_some(), "{t}: {log:?}");
            }
        }
        // nothing to label: an up-to-date image keeps what it is
        assert!(!log.iter().any(|l| l.starts_with("relabel")), "{log:?}");
    }
}

/// Each accepted cell's SBOM, on the in-process engine.
#[cfg(test)]
mod sboms {
    use super::promotion_support::*;
    use super::*;
    use crate::engine::fake::FakeFleet;

    fn opts(verify: bool, dir: &std::path::Path) -> Options {
        Options {
            verify,
            ready_timeout: 1,
            jobs: 2,
            sbom_dir: Some(dir.to_path_buf()),
            announced: false,
        }
    }

    fn run(
        fleet: &FakeFleet,
        m: &mut Manifest,
        cands: &[Candidate],
        prev: Option<&Manifest>,
        o: &Options,
    ) {
        accept(fleet, m, cands, prev, o, &Cancel::default(), &|_| {}).apply(m);
    }

    #[test]
    fn a_verified_cell_gets_its_sbom_from_the_verification_container() {
        let p = plan();
        let fleet = FakeFleet::one();
        let (mut m, cands) = built(&p, &fleet);
        let dir = tempfile::tempdir().unwrap();
        run(&fleet, &mut m, &cands, None, &opts(true, dir.path()));
        let log = fleet.first().log();
        assert!(
            !log.iter().any(|l| l.starts_with("list-packages")),
            "{log:?}"
        );
        for r in &m.cells {
            let s = r.sbom.as_ref().expect("an SBOM record");
            assert_eq!(
                s.path.as_deref(),
                Some(format!("sbom/{}.json", r.id).as_str())
            );
            assert_eq!(
                (s.packages.dpkg, s.packages.conda, s.packages.pip),
                (2, 0, 1)
            );
            assert!(
                s.notes[0].starts_with("conda: no conda-meta"),
                "{:?}",
                s.notes
            );
            let doc: serde_json::Value = serde_json::from_slice(
                &std::fs::read(dir.path().join(s.path.as_ref().unwrap())).unwrap(),
            )
            .unwrap();
            crate::sbom::schema_check::validate(&doc);
            assert_eq!(doc["metadata"]["properties"][0]["value"], r.id.as_str());
        }
    }

    #[test]
    fn an_sbom_that_cannot_be_made_fails_nothing() {
        let p = plan();
        let fleet = FakeFleet::one();
        let (mut m, cands) = built(&p, &fleet);
        fleet.first().lists(
            "sha256:built-1",
            Err("exec failed: container is not running"),
        );
        let dir = tempfile::tempdir().unwrap();
        run(&fleet, &mut m, &cands, None, &opts(true, dir.path()));
        // the verification's container could not list: a container of its own tried
        let log = fleet.first().log();
        let tried: Vec<&String> = log
            .iter()
            .filter(|l| l.starts_with("list-packages"))
            .collect();
        assert_eq!(tried, ["list-packages sha256:built-1-labelled"], "{log:?}");
        let s = m.cells[1].sbom.as_ref().unwrap();
        assert_eq!(s.path, None);
        assert!(
            s.notes[0].contains("container is not running"),
            "{:?}",
            s.notes
        );
        // promoted all the same
        assert!(m.cells[1].verification.as_ref().unwrap().ok);
        assert_eq!(m.cells[1].tags_added, p.cells[1].tags);
        assert!(m.cells[0].sbom.as_ref().unwrap().path.is_some());
    }

    #[test]
    fn unverified_cells_are_listed_in_a_container_of_their_own_and_unchanged_ones_carried() {
        let p = plan();
        let fleet = FakeFleet::one();
        let (mut m, cands) = built(&p, &fleet);
        let dir = tempfile::tempdir().unwrap();
        run(&fleet, &mut m, &cands, None, &opts(false, dir.path()));
        let listed = |f: &FakeFleet| {
            f.first()
                .log()
                .iter()
                .filter(|l| l.starts_with("list-packages"))
                .count()
        };
        assert_eq!(listed(&fleet), 2);
        assert!(m
            .cells
            .iter()
            .all(|r| r.sbom.as_ref().unwrap().path.is_some()));
        // the next night: the same images, up to date; their SBOMs are still right
        let previous = m.clone();
        let fleet2 = FakeFleet::one();
        let (mut m2, cands2) = built(&p, &fleet2);
        for (r, old) in m2.cells.iter_mut().zip(&previous.cells) {
            r.status = Status::UpToDate;
            r.image_id.clone_from(&old.image_id);
            fleet2.first().image(old.image_id.as_deref().unwrap(), &[]);
        }
        run(
            &fleet2,
            &mut m2,
            &cands2,
            Some(&previous),
            &opts(false, dir.path()),
        );
        assert_eq!(listed(&fleet2), 0, "{:?}", fleet2.first().log());
        assert_eq!(m2.cells[0].sbom, previous.cells[0].sbom);
    }
}
