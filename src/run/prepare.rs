//! Preparation, pure: the selected cells and the engines' platforms → one job per cell
//! (its rendered context, its `docker build` request, its input hash), the shared
//! stages several cells build on, and the initial manifest. Nothing here talks to
//! Docker, so all of it is tested without a daemon.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

use crate::docker::BuildRequest;
use crate::labels;
use crate::manifest::{CellRecord, Installer, Status};
use crate::plan::output::BuildOptions;
use crate::plan::{hex, Cell, Excluded, Plan};
use crate::render;
use crate::render::identity::{Identity, Over};
use crate::run::executor::{Job, JobKind};
use crate::run::scheduler::SharedStage;

pub use crate::render::identity::UNRESOLVED;

/// Where a run's files go.
#[derive(Clone, Debug)]
pub struct Paths {
    pub contexts: PathBuf,
    pub logs: PathBuf,
    pub iid: PathBuf,
}

/// What the build options decide about each request.
#[derive(Clone, Debug, Default)]
pub struct Settings {
    pub network: Option<String>,
    pub pull: bool,
    pub no_cache: bool,
    /// Skip cells whose image is current (false with `--force`).
    pub check_current: bool,
    /// Platforms some engine builds natively: `--platform` is passed only where it
    /// differs (or where engines differ).
    pub native: Vec<String>,
    /// OCI labels every image gets (created, source, revision).
    pub labels: Vec<(String, String)>,
    /// Cells that succeeded in a resumed manifest, with their input hash: checked for
    /// being current even with `--force`.
    pub resumed: HashMap<String, String>,
    /// Each cell's input hash as the previous manifest records it.
    pub recorded: HashMap<String, String>,
    /// What each (base reference, platform) resolved to, and where.
    pub bases: Bases,
    /// The registry cache: sources and inline metadata (BuildKit builders only).
    pub cache: crate::config::settings::Cache,
}

/// The bases of a run, each a (reference, platform).
#[derive(Clone, Debug, Default)]
pub struct Bases {
    /// What each resolved to.
    pub digests: crate::plan::fast::FastMap<(String, String), String>,
    /// The engines that hold each; its cells build only there (empty: any engine
    /// that builds the platform, as where no engine holds the base yet).
    pub holders: HashMap<(String, String), Vec<String>>,
}

impl Settings {
    pub fn base_digest(&self, c: &Cell) -> &str {
        self.digest_for(c, c.platform())
    }

    fn digest_for(&self, c: &Cell, platform: &str) -> &str {
        self.bases
            .digests
            .get(crate::plan::fast::pair(&(&c.base.reference, platform)))
            .map_or(UNRESOLVED, String::as_str)
    }

    /// The base digests its identity covers (every platform of its tag group).
    pub fn identity_digests(&self, c: &Cell) -> BaseDigests<'_> {
        match &c.group {
            None => BaseDigests::One([self.base_digest(c)]),
            Some(_) => BaseDigests::Many(
                c.identity_members()
                    .into_iter()
                    .map(|(_, platform)| self.digest_for(c, platform))
                    .collect(),
            ),
        }
    }
}

/// The base digests a cell's identity covers: a cell's own base's, or each of its
/// tag group's (no list made for 10,000 cells of one platform each).
pub enum BaseDigests<'s> {
    One([&'s str; 1]),
    Many(Vec<&'s str>),
}

impl<'s> std::ops::Deref for BaseDigests<'s> {
    type Target = [&'s str];

    fn deref(&self) -> &[&'s str] {
        match self {
            BaseDigests::One(one) => one,
            BaseDigests::Many(many) => many,
        }
    }
}

/// The local tag a cell is built under; public tags move to it only once it is
/// accepted (verified, with `--verify`), so a failed or interrupted night never moves
/// them.
pub fn candidate_tag(c: &Cell, repository: &str) -> String {
    let tag = format!("candidate-{}", c.id);
    if tag.len() <= 128 {
        return format!("{repository}:{tag}");
    }
    let h = hex(&Sha256::digest(c.id.as_bytes()));
    format!("{repository}:candidate-{}", &h[..32])
}

/// Everything a run needs, decided before it starts.
pub struct Prepared<'p> {
    /// The cell of each job (job `i` builds `cells[i]`), for naming shared stages
    /// here and rendering contexts ([`Prepared::context`]); outside, a job's `kind`
    /// names its record, which names the rest.
    cells: Vec<&'p Cell>,
    /// What rendered the contexts to work out the identities, kept to render each
    /// again when its build starts (boxed: it is large, and a run moves this around).
    renderer: Box<render::Renderer<'p>>,
    pub jobs: Vec<Job>,
    pub stages: Vec<SharedStage>,
    /// One record per job (same order), then the exclusions.
    pub records: Vec<CellRecord>,
    /// The host's download cache, serving while the run builds (`--download-cache`).
    pub downloads: Option<crate::downloads::Cache>,
}

/// A new record for a planned cell, not started.
pub fn record_for(c: &Cell, input_hash: Option<String>) -> CellRecord {
    CellRecord {
        tags: c.tags.clone(),
        installer: Some(Installer {
            file: c.installer.file.clone(),
            sha256: c.installer.sha256.clone(),
        }),
        input_hash,
        group: c.group.as_ref().map(|g| g.name.clone()),
        platform_tag: c.group.as_ref().map(|g| g.platform_tag.clone()),
        parent: c.parent().map(str::to_string),
        ..CellRecord::new(&c.id, c.coord.clone())
    }
}

/// The record of an excluded cell.
pub fn excluded_record(e: &Excluded) -> CellRecord {
    CellRecord {
        status: Status::Excluded,
        reason: Some(e.reason.clone()),
        ..CellRecord::new(&e.id, e.coord.clone())
    }
}

/// Jobs, shared stages and records for the selected cells. Each cell's context is
/// rendered in memory to work out its identity and is not kept (10,000 contexts held
/// at once would be 400 MB) nor written: a build renders it again
/// ([`Prepared::context`]) and reads it on its standard input.
pub fn prepare<'p>(
    plan: &'p Plan,
    cells: &[&'p Cell],
    paths: &Paths,
    s: &Settings,
) -> Prepared<'p> {
    let mut p = Prepared {
        cells: Vec::with_capacity(cells.len()),
        renderer: Box::new(render::Renderer::new(&plan.settings)),
        jobs: Vec::with_capacity(cells.len()),
        stages: Vec::new(),
        records: Vec::with_capacity(cells.len() + plan.excluded.len()),
        downloads: None,
    };
    let (mut os_keys, mut conda_keys) = (Vec::new(), Vec::new());
    // job index and input hash of each parent, for its framework and family images
    let mut parents: HashMap<&str, (usize, render::identity::Identity)> = HashMap::new();
    let renderer: &render::Renderer = &p.renderer;
    for c in cells {
        let ctx = renderer.render(c);
        let parent = c.parent().and_then(|id| parents.get(id));
        let base_digest = s.base_digest(c);
        // a framework image's identity covers its parent's, which covers the base
        let identity = match parent {
            Some((_, p)) => Identity::of(renderer, &ctx, c, Over::Parent(p)),
            None => Identity::of(renderer, &ctx, c, Over::Bases(&s.identity_digests(c))),
        };
        let input_hash = identity.hash.clone();
        let mut rec = record_for(c, Some(input_hash.clone()));
        rec.input_parts = render::identity::part_hashes(&ctx);
        rec.base_digest = Some(base_digest.to_string());
        let log_path = paths.logs.join(format!("{}.log", c.id));
        rec.log = Some(log_path.display().to_string());
        let resumed = s.resumed.get(&c.id);
        if resumed.is_some_and(|h| !identity.is(h)) {
            rec.reason = Some("resumed, but its inputs changed since".into());
        }
        let i = p.jobs.len();
        p.jobs.push(Job {
            kind: JobKind::Cell(i),
            id: c.id.clone(),
            request: request(c, &plan.settings.repository, &input_hash, paths, s),
            log_path,
            input_hash,
            legacy_hash: Some(earlier_label(&identity, s.recorded.get(&c.id)).to_string()),
            primary_tag: Some(c.local_tag().to_string()),
            affinity: format!("{} {}", c.base.reference, c.platform()),
            platform: c.platform().to_string(),
            engines: s
                .bases
                .holders
                .get(crate::plan::fast::pair(&(&c.base.reference, c.platform())))
                .cloned()
                .unwrap_or_default(),
            check_current: s.check_current || resumed.is_some_and(|h| identity.is(h)),
            weight: c.variant.pip.len() + c.variant.apt.len() + c.variant.overrides.len(),
            parent: parent.map(|(j, _)| *j),
        });
        if c.is_layer() {
            // no shared stages: its one step builds on the parent's image
            os_keys.push(format!("layer image {}", c.id));
            conda_keys.push(format!("layer image {}", c.id));
        }
        // a family may build on a framework or family image: every cell is a parent
        parents.insert(&c.id, (i, identity));
        if !c.is_layer() {
            os_keys.push(stage_key(&ctx, &["system/"], c));
            conda_keys.push(stage_key(&ctx, &["system/", "conda/"], c));
        }
        p.cells.push(c);
        p.records.push(rec);
    }
    if !s.no_cache {
        let os = stages(&os_keys, Layer::Os, &p, paths, s);
        let conda = stages(&conda_keys, Layer::Conda, &p, paths, s);
        p.stages = os.into_iter().chain(conda).collect();
        for (n, st) in p.stages.iter_mut().enumerate() {
            st.job.kind = JobKind::Stage(n);
        }
    }
    p.records.extend(plan.excluded.iter().map(excluded_record));
    p
}

impl Prepared<'_> {
    /// The build context of a job, rendered anew: a cell's, or a shared stage's (its
    /// first member's, whose request it builds with another target).
    pub fn context(&self, job: JobKind) -> render::Context {
        let cell = match job {
            JobKind::Cell(i) => self.cells[i],
            JobKind::Stage(n) => self.cells[self.stages[n].members[0]],
        };
        self.renderer.render(cell)
    }

    /// A job's context as its build sends it: with BuildKit's cache mounts when
    /// `mounts` (BuildKit, and not `--no-cache`), then through the host's download
    /// cache when one serves. Neither changes the identity, which is the rendered
    /// context's.
    pub fn sent_context(&self, job: JobKind, mounts: bool) -> render::Context {
        let mut ctx = self.context(job);
        if mounts {
            ctx = render::cache::mounted(ctx);
        }
        if let Some(d) = &self.downloads {
            ctx = crate::downloads::route::routed(ctx, d, self.renderer.package_index());
        }
        ctx
    }
}

/// The earlier scheme's identity an image that is current may carry in its label, which
/// `build` takes as current too: scheme 1's where the previous manifest records it
/// (written by a tool of that scheme), else scheme 2's. An image keeps the label it was
/// built with while it stays current, and the manifest records the current scheme's
/// identity, so an image labelled by scheme 1 under a manifest of a later scheme is
/// built once more.
fn earlier_label<'i>(identity: &'i Identity, recorded: Option<&String>) -> &'i str {
    recorded
        .and_then(|h| identity.earlier(h))
        .unwrap_or(&identity.scheme2)
}

fn request(
    c: &Cell,
    repository: &str,
    input_hash: &str,
    paths: &Paths,
    s: &Settings,
) -> BuildRequest {
    let built = build_options(c, repository, input_hash, s);
    let one_native = s.native.len() == 1 && s.native[0] == c.platform();
    BuildRequest {
        context_dir: paths.contexts.join(&c.id),
        tags: vec![candidate_tag(c, repository)],
        target: None,
        labels: built
            .labels
            .into_iter()
            .map(|(k, v)| (k.to_string(), v.into_owned()))
            .collect(),
        network: s.network.clone(),
        platform: (!one_native).then(|| c.platform().to_string()),
        pull: built.pull,
        no_cache: s.no_cache,
        iidfile: Some(paths.iid.join(format!("{}.iid", c.id))),
        build_args: Vec::new(),
        cache_from: built.cache_from,
        inline_cache: built.inline_cache,
    }
}

/// [`BuildOptions`] of a cell whose identity is `input_hash` ([`UNRESOLVED`] leaves
/// out the input-hash and base-digest labels: they would name nothing).
pub fn build_options<'a>(
    c: &'a Cell,
    repository: &'a str,
    input_hash: &'a str,
    s: &'a Settings,
) -> BuildOptions<'a> {
    use std::borrow::Cow;
    let mut labels = Vec::with_capacity(6 + s.labels.len());
    if input_hash != UNRESOLVED {
        labels.push((labels::INPUT_HASH, Cow::Borrowed(input_hash)));
    }
    labels.push((labels::REPOSITORY, Cow::Borrowed(repository)));
    if input_hash != UNRESOLVED {
        labels.push((labels::BASE_DIGEST, Cow::Borrowed(s.base_digest(c))));
    }
    labels.extend(render::build_labels(repository, c));
    labels.extend(
        s.labels
            .iter()
            .map(|(k, v)| (k.as_str(), Cow::Borrowed(v.as_str()))),
    );
    BuildOptions {
        labels,
        network: s.network.as_deref(),
        // a layer's FROM is its parent's local image, never pulled
        pull: s.pull && !c.is_layer(),
        cache_from: s
            .cache
            .from
            .iter()
            .map(|f| f.resolve(c.local_tag()))
            .collect(),
        inline_cache: s.cache.inline,
    }
}

/// A cell's identity, worked out as [`prepare`] does, for outputs that describe a
/// build without running it (bake): with [`build_options`], what `build` would pass.
/// `base_digests` are its [`Settings::identity_digests`]; `parent_hash` is the input
/// hash of a framework image's parent (its identity covers the parent's, as in
/// [`prepare`]).
pub fn identity(
    renderer: &render::Renderer,
    c: &Cell,
    base_digests: &[&str],
    parent_hash: Option<&str>,
) -> String {
    match parent_hash {
        Some(h) => renderer.identity(c, &[h]),
        None => renderer.identity(c, base_digests),
    }
}

/// What decides a shared stage: the base, the platform and the stage's own files.
fn stage_key(ctx: &render::Context, prefixes: &[&str], c: &Cell) -> String {
    let mut h = Sha256::new();
    h.update(c.base.reference.as_bytes());
    h.update([0]);
    h.update(c.platform().as_bytes());
    for f in ctx
        .files
        .iter()
        .filter(|f| prefixes.iter().any(|p| f.path.starts_with(p)))
    {
        h.update(f.path.as_bytes());
        h.update([0]);
        h.update(&f.bytes);
    }
    hex(&h.finalize())
}

#[derive(Clone, Copy)]
enum Layer {
    Os,
    Conda,
}

impl Layer {
    /// The Dockerfile stage it builds.
    fn target(self) -> &'static str {
        match self {
            Layer::Os => "system",
            Layer::Conda => "conda",
        }
    }

    /// A name people understand: `debian12 amd64 · OS layer`.
    fn name(self, c: &Cell) -> String {
        let arch = c.platform().rsplit('/').next().unwrap_or_default();
        match self {
            Layer::Os => format!("{} {arch} · OS layer", c.base.slug()),
            Layer::Conda => format!(
                "{} {arch} · Miniconda {} py{}",
                c.base.slug(),
                c.miniconda,
                c.python
            ),
        }
    }
}

/// Cells whose stage is identical share it; a group of two or more gets one build of
/// that stage before its cells run.
fn stages(
    keys: &[String],
    layer: Layer,
    p: &Prepared,
    paths: &Paths,
    s: &Settings,
) -> Vec<SharedStage> {
    let mut groups: BTreeMap<&str, Vec<usize>> = BTreeMap::new();
    for (i, k) in keys.iter().enumerate() {
        groups.entry(k).or_default().push(i);
    }
    let mut names: HashMap<String, usize> = HashMap::new();
    let mut out: Vec<SharedStage> = groups
        .into_iter()
        .filter(|(_, m)| m.len() >= 2)
        .map(|(k, members)| {
            let first = &p.jobs[members[0]];
            let name = layer.name(p.cells[members[0]]);
            *names.entry(name.clone()).or_default() += 1;
            let mut request = first.request.clone();
            request.tags.clear();
            request.labels.clear();
            request.iidfile = None;
            request.target = Some(layer.target().to_string());
            request.network.clone_from(&s.network);
            SharedStage {
                job: Job {
                    kind: JobKind::Stage(0),
                    id: format!("{name} [{}]", &k[..8]),
                    request,
                    log_path: paths
                        .logs
                        .join(format!("stage-{}-{}.log", layer.target(), &k[..12])),
                    input_hash: k.to_string(),
                    legacy_hash: None,
                    primary_tag: None,
                    affinity: first.affinity.clone(),
                    platform: first.platform.clone(),
                    engines: first.engines.clone(),
                    check_current: false,
                    weight: 0,
                    parent: None,
                },
                members,
            }
        })
        .collect();
    // The hash is only shown where two stages would otherwise share a name.
    for st in &mut out {
        if let Some((name, _)) = st.job.id.rsplit_once(" [") {
            if names.get(name) == Some(&1) {
                st.job.id = name.to_string();
            }
        }
    }
    out
}

/// Create a directory and check it is writable.
pub fn writable_dir(dir: &Path) -> Result<(), String> {
    std::fs::create_dir_all(dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    tempfile::tempfile_in(dir)
        .map(|_| ())
        .map_err(|e| format!("{} is not writable: {e}", dir.display()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plan::{plan_text, PlanOptions};

    fn plan(yaml: &str) -> Plan {
        plan_text(
            yaml,
            "m.yaml",
            Path::new("."),
            &PlanOptions {
                date: "20260101".into(),
            },
        )
        .unwrap()
    }

    fn paths() -> Paths {
        Paths {
            contexts: "out/contexts".into(),
            logs: "out/logs".into(),
            iid: "out/iid".into(),
        }
    }

    #[test]
    fn cells_of_one_base_share_named_stages() {
        let p = plan("version: 1\nimage: {tag: \"c{python}-{base}-{variant}\"}\nbases: [ubuntu:22.04, ubuntu:24.04]\npython: [\"3.10\", \"3.11\"]\nvariants: [{name: a}, {name: b, pip: [pandas]}]\n");
        let cells: Vec<&Cell> = p.cells.iter().collect();
        let s = Settings {
            check_current: true,
            native: vec!["linux/amd64".into()],
            ..Settings::default()
        };
        let prep = prepare(&p, &cells, &paths(), &s);
        assert_eq!(prep.jobs.len(), 8);
        assert_eq!(prep.records.len(), 8);
        let mut names: Vec<&str> = prep.stages[2..].iter().map(|s| s.job.id.as_str()).collect();
        names.sort_unstable();
        assert_eq!(
            names,
            [
                "ubuntu22.04 amd64 · Miniconda 24.5.0-0 py3.10",
                "ubuntu22.04 amd64 · Miniconda 24.5.0-0 py3.11",
                "ubuntu24.04 amd64 · Miniconda 24.5.0-0 py3.10",
                "ubuntu24.04 amd64 · Miniconda 24.5.0-0 py3.11",
            ]
        );
        let mut os: Vec<&str> = prep.stages[..2].iter().map(|s| s.job.id.as_str()).collect();
        os.sort_unstable();
        assert_eq!(
            os,
            [
                "ubuntu22.04 amd64 · OS layer",
                "ubuntu24.04 amd64 · OS layer"
            ]
        );
        for (n, st) in prep.stages.iter().enumerate() {
            assert_eq!(st.job.kind, JobKind::Stage(n));
            assert_eq!(st.members.len(), if n < 2 { 4 } else { 2 });
            assert!(st.job.request.tags.is_empty() && st.job.request.target.is_some());
        }
        assert!(prep.jobs.iter().all(|j| j.request.platform.is_none()));
        assert!(prep.jobs.iter().all(|j| j.check_current));
        assert!(prep.jobs.iter().all(|j| j.request.cache_from.is_empty()));
    }

    #[test]
    fn the_registry_cache_names_each_cells_published_tag_and_reaches_its_stages() {
        let p = plan("version: 1\nimage: {repository: reg.example:5000/ml/m, tag: \"c{python}-{variant}\"}\nbases: [ubuntu:22.04]\npython: [\"3.10\"]\nvariants: [{name: a}, {name: b}]\n");
        let cells: Vec<&Cell> = p.cells.iter().collect();
        let s = Settings {
            cache: crate::config::settings::Cache {
                from: vec![
                    crate::config::settings::CacheFrom::Registry,
                    "reg.example:5000/ml/cache:{tag}".parse().unwrap(),
                ],
                inline: true,
            },
            ..Settings::default()
        };
        let prep = prepare(&p, &cells, &paths(), &s);
        let a = prep.jobs.iter().find(|j| j.id.ends_with("-a")).unwrap();
        assert_eq!(
            a.request.cache_from,
            [
                "reg.example:5000/ml/m:c3.10-a",
                "reg.example:5000/ml/cache:c3.10-a"
            ]
        );
        assert!(a.request.inline_cache);
        assert!(prep
            .stages
            .iter()
            .all(|st| !st.job.request.cache_from.is_empty()));
        let renderer = render::Renderer::new(&p.settings);
        let hash = identity(&renderer, cells[0], &s.identity_digests(cells[0]), None);
        assert_eq!(hash, prep.jobs[0].input_hash);
        let bake = build_options(cells[0], &p.settings.repository, &hash, &s);
        let labels: Vec<(String, String)> = bake
            .labels
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        assert_eq!(labels, prep.jobs[0].request.labels);
        assert_eq!(bake.cache_from, prep.jobs[0].request.cache_from);
    }

    #[test]
    fn no_cache_builds_no_stages_and_other_platforms_are_named() {
        let p = plan("version: 1\nimage: {tag: \"c{python}-{base}-{variant}\"}\nbases: [ubuntu:22.04]\npython: [\"3.10\"]\nvariants: [{name: a}, {name: b}]\nplatforms: [linux/arm64]\n");
        let cells: Vec<&Cell> = p.cells.iter().collect();
        let s = Settings {
            no_cache: true,
            native: vec!["linux/amd64".into()],
            ..Settings::default()
        };
        let prep = prepare(&p, &cells, &paths(), &s);
        assert!(prep.stages.is_empty());
        assert_eq!(
            prep.jobs[0].request.platform.as_deref(),
            Some("linux/arm64")
        );
        assert!(!prep.jobs[0].check_current);
    }
}
