//! `matrix plan` output: a table for people, and JSON, Bake, GitHub Actions and GitLab
//! CI documents for machines. All are pure functions of the plan.

use std::fmt::Write as _;
use std::path::Path;

use serde::Serialize;
use serde_json::{json, Value};

use crate::plan::fast::FastMap;
use crate::plan::{Cell, Plan};

/// Version of the `--format json` document.
pub const PLAN_SCHEMA: u32 = 1;

/// One planned cell, as `--format json` and `cell.json` show it.
#[derive(Serialize, schemars::JsonSchema)]
pub struct CellDoc<'a> {
    pub id: &'a str,
    pub tags: &'a [String],
    pub base: &'a str,
    pub os: &'a str,
    pub cuda: Option<&'a str>,
    pub cudnn: Option<&'a str>,
    pub flavor: Option<&'a str>,
    pub python: &'a str,
    pub miniconda: &'a str,
    pub platform: &'a str,
    pub variant: &'a str,
    pub installer: InstallerDoc<'a>,
    /// Its tag group: the cells of other platforms its tags also name.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub group: Option<GroupDoc<'a>>,
    /// A framework image: its packages, wheel variant, index URLs and the Miniconda
    /// cell it is built on.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub framework: Option<&'a crate::plan::family::Framework>,
    /// An image of a user-defined family: what its layer adds, and the cell it is
    /// built on.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub family: Option<&'a crate::plan::custom::Layer>,
}

#[derive(Serialize, schemars::JsonSchema)]
pub struct GroupDoc<'a> {
    pub name: &'a str,
    /// The tag its own image is pushed under before the index joins the platforms.
    pub platform_tag: &'a str,
    /// Every member's id and platform, this cell's too.
    pub members: Vec<(&'a str, &'a str)>,
}

#[derive(Serialize, schemars::JsonSchema)]
pub struct InstallerDoc<'a> {
    pub file: &'a str,
    pub sha256: &'a str,
    pub urls: &'a [String],
}

/// `matrix plan --format json`: every planned cell, and those excluded.
#[derive(Serialize, schemars::JsonSchema)]
pub struct PlanDoc<'a> {
    pub version: u32,
    pub matrix: String,
    pub matrix_sha256: &'a str,
    pub date: &'a str,
    pub cells: Vec<CellDoc<'a>>,
    pub excluded: &'a [crate::plan::Excluded],
}

pub fn cell_doc(c: &Cell) -> CellDoc<'_> {
    let cuda = c.base.cuda.as_ref();
    CellDoc {
        id: &c.id,
        tags: &c.tags,
        base: &c.base.reference,
        // the coordinates hold these as text already
        os: &c.coord.os,
        cuda: c.coord.cuda.as_deref(),
        cudnn: cuda.and_then(|x| x.cudnn.as_deref()),
        flavor: cuda.map(|x| x.flavor.as_str()),
        python: &c.coord.python,
        miniconda: &c.coord.miniconda,
        platform: c.platform(),
        variant: &c.variant.name,
        installer: InstallerDoc {
            file: &c.installer.file,
            sha256: &c.installer.sha256,
            urls: &c.installer.urls,
        },
        group: c.group.as_ref().map(|g| GroupDoc {
            name: &g.name,
            platform_tag: &g.platform_tag,
            members: g
                .members
                .iter()
                .map(|m| (m.id.as_str(), m.platform.as_str()))
                .collect(),
        }),
        framework: c.framework.as_deref(),
        family: c.custom.as_deref(),
    }
}

/// The `--format json` document (schema version 1).
pub fn json<'a>(plan: &'a Plan, cells: &[&'a Cell]) -> PlanDoc<'a> {
    PlanDoc {
        version: PLAN_SCHEMA,
        matrix: plan.matrix_file.display().to_string(),
        matrix_sha256: &plan.matrix_sha256,
        date: &plan.date,
        cells: cells.iter().map(|c| cell_doc(c)).collect(),
        excluded: &plan.excluded,
    }
}

/// Bake target names allow `[a-zA-Z0-9_-]`.
pub fn bake_name(id: &str) -> String {
    id.replace('.', "_")
}

/// What `build` passes for one cell beyond its context, tags and paths: what a bake
/// file carries of it too (`run::prepare::build_options` makes it). Borrowed from the
/// cell and the settings where it can be.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct BuildOptions<'a> {
    /// In the order `docker build` gets them (a later one of a name wins).
    pub labels: Vec<(&'a str, std::borrow::Cow<'a, str>)>,
    pub network: Option<&'a str>,
    pub pull: bool,
    /// Registry references to take cache from.
    pub cache_from: Vec<String>,
    pub inline_cache: bool,
}

/// The bake target a framework or family image's parent is built by, from the cells
/// by id (`parents`: empty when the plan has no such images).
fn parent_target(c: &Cell, parents: &FastMap<&str, &Cell>) -> Option<String> {
    let parent = parents.get(c.parent()?)?;
    Some(bake_name(
        parent
            .group
            .as_ref()
            .map_or(parent.id.as_str(), |g| g.name.as_str()),
    ))
}

/// Bake targets: one per cell, and one per tag group (its members' contexts are
/// identical, each picking its installer by architecture), with every platform. The
/// members are indexes into `cells`.
fn bake_targets(cells: &[&Cell]) -> Vec<(String, Vec<usize>)> {
    let mut out: Vec<(String, Vec<usize>)> = Vec::new();
    let mut seen: FastMap<&str, usize> = Default::default();
    for (i, c) in cells.iter().enumerate() {
        match &c.group {
            Some(g) => match seen.get(g.name.as_str()) {
                Some(&t) => out[t].1.push(i),
                None => {
                    seen.insert(&g.name, out.len());
                    out.push((bake_name(&g.name), vec![i]));
                }
            },
            None => out.push((bake_name(&c.id), vec![i])),
        }
    }
    out
}

/// A group target builds every member in one go, so it carries what all of them
/// share: labels every member has with the same value (the input hash of a tag group
/// is one), not a member's own (its cell id, installer, base digest).
fn shared<'a>(builds: &[BuildOptions<'a>]) -> BuildOptions<'a> {
    let mut b = builds[0].clone();
    b.labels
        .retain(|l| builds[1..].iter().all(|o| o.labels.contains(l)));
    b.cache_from
        .retain(|c| builds[1..].iter().all(|o| o.cache_from.contains(c)));
    b
}

/// A JSON string: as it stands when nothing in it needs escaping (the ids, tags,
/// paths and labels of a plan, nearly always), else as serde_json escapes it.
fn json_str(out: &mut Vec<u8>, s: &str) -> serde_json::Result<()> {
    if !needs_escaping(s.as_bytes()) {
        out.push(b'"');
        out.extend_from_slice(s.as_bytes());
        out.push(b'"');
        Ok(())
    } else {
        serde_json::to_writer(out, s)
    }
}

/// The JSON string of `parts` run together.
fn json_str_of(out: &mut Vec<u8>, parts: &[&str]) -> serde_json::Result<()> {
    if parts.iter().any(|p| needs_escaping(p.as_bytes())) {
        return serde_json::to_writer(out, &parts.concat());
    }
    out.push(b'"');
    for p in parts {
        out.extend_from_slice(p.as_bytes());
    }
    out.push(b'"');
    Ok(())
}

/// Whether JSON must escape any of `bytes`: a control character, `"` or `\`. Eight
/// bytes at a time: `x - 0x01…01 & !x & 0x80…80` is non-zero exactly when some byte
/// of `x` is zero (and `x - 0x20…20` when some byte is below 0x20).
fn needs_escaping(bytes: &[u8]) -> bool {
    const ONES: u64 = u64::from_ne_bytes([0x01; 8]);
    const HIGH: u64 = u64::from_ne_bytes([0x80; 8]);
    let has_zero = |x: u64| x.wrapping_sub(ONES) & !x & HIGH != 0;
    let below_space = |x: u64| x.wrapping_sub(ONES * 0x20) & !x & HIGH != 0;
    let mut words = bytes.chunks_exact(8);
    for w in &mut words {
        let mut b = [0; 8];
        b.copy_from_slice(w);
        let x = u64::from_ne_bytes(b);
        if below_space(x)
            || has_zero(x ^ (ONES * u64::from(b'"')))
            || has_zero(x ^ (ONES * u64::from(b'\\')))
        {
            return true;
        }
    }
    words
        .remainder()
        .iter()
        .any(|&b| b < 0x20 || b == b'"' || b == b'\\')
}

/// A JSON array of strings.
fn json_strs<'s>(
    out: &mut Vec<u8>,
    items: impl IntoIterator<Item = &'s str>,
) -> serde_json::Result<()> {
    out.push(b'[');
    for (i, s) in items.into_iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        json_str(out, s)?;
    }
    out.push(b']');
    Ok(())
}

/// Where the contexts are: each cell's is `dir/<cell id>`.
struct Contexts<'p> {
    dir: &'p Path,
    /// `dir` and a separator (none after an empty one or a `/`), as `Path::join`
    /// would write them, where `dir` is UTF-8.
    prefix: Option<String>,
}

impl<'p> Contexts<'p> {
    fn new(dir: &'p Path) -> Self {
        let prefix = dir.to_str().map(|d| {
            if d.is_empty() || d.ends_with('/') {
                d.to_string()
            } else {
                format!("{d}/")
            }
        });
        Contexts { dir, prefix }
    }
}

/// One target's JSON, written field by field (10,000 targets are 9 MB, and serde's
/// escaping byte by byte was an eighth of bake's time): `context`, `dockerfile`,
/// `tags`, `platforms`, then what is set of `labels` (by name; a later value of a
/// name wins), `network` (with the `network.host` entitlement buildx 0.18+ asks
/// for), `pull`, `cache-from`, `cache-to`, and for a framework image the `PARENT`
/// argument naming its parent's target as a build context.
fn write_target<'b>(
    out: &mut Vec<u8>,
    cells: &[&Cell],
    parents: &FastMap<&str, &Cell>,
    members: &[usize],
    contexts: &Contexts,
    build: &(dyn Fn(usize) -> BuildOptions<'b> + Sync),
) -> serde_json::Result<()> {
    let c = cells[members[0]];
    let b = match members {
        [one] => build(*one),
        _ => shared(&members.iter().map(|&m| build(m)).collect::<Vec<_>>()),
    };
    out.extend_from_slice(b"{\"context\":");
    match contexts.prefix.as_deref() {
        Some(prefix) => json_str_of(out, &[prefix, &c.id])?,
        None => json_str(out, &contexts.dir.join(&c.id).display().to_string())?,
    }
    out.extend_from_slice(b",\"dockerfile\":\"Dockerfile\",\"tags\":");
    json_strs(out, c.tags.iter().map(String::as_str))?;
    out.extend_from_slice(b",\"platforms\":");
    json_strs(out, members.iter().map(|&m| cells[m].platform()))?;
    // by name; a stable sort keeps a name's values in order, and the last one wins
    let mut labels: Vec<(&str, &str)> = b.labels.iter().map(|(k, v)| (*k, v.as_ref())).collect();
    labels.sort_by_key(|l| l.0);
    let mut none_yet = true;
    for (i, (k, v)) in labels.iter().enumerate() {
        if labels.get(i + 1).is_some_and(|next| next.0 == *k) {
            continue;
        }
        out.extend_from_slice(if none_yet { b",\"labels\":{" } else { b"," });
        none_yet = false;
        json_str(out, k)?;
        out.push(b':');
        json_str(out, v)?;
    }
    if !none_yet {
        out.push(b'}');
    }
    if let Some(network) = b.network {
        out.extend_from_slice(b",\"network\":");
        json_str(out, network)?;
        if network == "host" {
            out.extend_from_slice(b",\"entitlements\":[\"network.host\"]");
        }
    }
    if b.pull {
        out.extend_from_slice(b",\"pull\":true");
    }
    if !b.cache_from.is_empty() {
        out.extend_from_slice(b",\"cache-from\":");
        let refs: Vec<String> = b
            .cache_from
            .iter()
            .map(|r| format!("type=registry,ref={r}"))
            .collect();
        json_strs(out, refs.iter().map(String::as_str))?;
    }
    if b.inline_cache {
        out.extend_from_slice(b",\"cache-to\":[\"type=inline\"]");
    }
    if let Some(p) = parent_target(c, parents) {
        out.extend_from_slice(b",\"args\":{\"PARENT\":\"parent\"},\"contexts\":{\"parent\":");
        json_str(out, &format!("target:{p}"))?;
        out.push(b'}');
    }
    out.push(b'}');
    Ok(())
}

/// A `docker-bake.json` whose targets build the contexts `matrix render -o DIR` writes,
/// with what `build` passes (`build` gives that of the cell at an index of `cells`).
/// Streamed: the targets' JSON is made in batches on every core and written in order,
/// never held as one JSON tree.
pub fn write_bake<'b, W: std::io::Write>(
    w: &mut W,
    cells: &[&Cell],
    contexts: &Path,
    build: &(dyn Fn(usize) -> BuildOptions<'b> + Sync),
) -> std::io::Result<()> {
    use rayon::prelude::*;
    let contexts = Contexts::new(contexts);
    let targets = bake_targets(cells);
    let parents: FastMap<&str, &Cell> = if cells.iter().any(|c| c.is_layer()) {
        cells.iter().map(|c| (c.id.as_str(), *c)).collect()
    } else {
        FastMap::default()
    };
    let names = targets.iter().map(|t| t.0.as_str());
    let mut head = b"{\n  \"group\": {\"default\": {\"targets\": ".to_vec();
    json_strs(&mut head, names)?;
    head.extend_from_slice(b"}},\n  \"target\": {");
    w.write_all(&head)?;
    // batches of targets made on every core, a wave of them at a time into buffers
    // that are used again (9 MB of fresh pages cost more than writing them)
    const BATCH: usize = 256;
    const WAVE: usize = 8;
    let mut bufs: Vec<Vec<u8>> = (0..WAVE)
        .map(|_| Vec::with_capacity(BATCH * 1024))
        .collect();
    for (k, wave) in targets.chunks(BATCH * WAVE).enumerate() {
        let made: Vec<serde_json::Result<()>> = wave
            .par_chunks(BATCH)
            .zip(bufs.par_iter_mut())
            .enumerate()
            .map(|(n, (batch, out))| {
                out.clear();
                for (i, (name, members)) in batch.iter().enumerate() {
                    let first = k == 0 && n == 0 && i == 0;
                    out.extend_from_slice(if first { b"\n    " } else { b",\n    " });
                    json_str(out, name)?;
                    out.extend_from_slice(b": ");
                    write_target(out, cells, &parents, members, &contexts, build)?;
                }
                Ok(())
            })
            .collect();
        for (r, buf) in made.into_iter().zip(&bufs) {
            r?;
            w.write_all(buf)?;
        }
    }
    w.write_all(b"\n  }\n}\n")
}

#[derive(Serialize)]
struct GhaEntry<'a> {
    id: &'a str,
    tag: &'a str,
    python: String,
    base: &'a str,
    platform: &'a str,
    variant: &'a str,
    /// `amd64`, `arm64`…
    arch: &'a str,
    /// A GitHub-hosted runner that builds the platform natively.
    runner: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    group: Option<&'a str>,
    /// A framework image's parent cell (in the same shard: trees stay together).
    #[serde(skip_serializing_if = "Option::is_none")]
    parent: Option<&'a str>,
}

/// The GitHub-hosted runner label of a platform's native machines (others build under
/// emulation on the x86-64 runners).
fn runner_for(platform: &str) -> &'static str {
    match platform {
        "linux/arm64" => "ubuntu-24.04-arm",
        _ => "ubuntu-24.04",
    }
}

/// A GitHub Actions matrix, `strategy.matrix: ${{ fromJSON(...) }}`, streamed.
pub fn write_gha<W: std::io::Write>(w: &mut W, cells: &[&Cell]) -> std::io::Result<()> {
    w.write_all(b"{\n  \"include\": [")?;
    for (i, c) in cells.iter().enumerate() {
        w.write_all(if i == 0 { b"\n    " } else { b",\n    " })?;
        serde_json::to_writer(
            &mut *w,
            &GhaEntry {
                id: &c.id,
                tag: c.local_tag(),
                python: c.python.to_string(),
                base: &c.base.reference,
                platform: c.platform(),
                variant: &c.variant.name,
                arch: c.platform().rsplit('/').next().unwrap_or(""),
                runner: runner_for(c.platform()),
                group: c.group.as_ref().map(|g| g.name.as_str()),
                parent: c.parent(),
            },
        )?;
    }
    w.write_all(b"\n  ]\n}\n")
}

/// One shard of a plan: what one CI job builds.
pub struct ShardJob<'a> {
    /// 1-based.
    pub index: usize,
    pub count: usize,
    pub ids: Vec<&'a str>,
    /// Sorted, each once.
    pub platforms: Vec<&'a str>,
}

impl ShardJob<'_> {
    /// `I/N`, as `--shard` takes it.
    pub fn shard(&self) -> String {
        format!("{}/{}", self.index, self.count)
    }

    /// The one platform of a shard that holds one, else none.
    fn platform(&self) -> Option<&str> {
        match self.platforms.as_slice() {
            [one] => Some(one),
            _ => None,
        }
    }
}

/// The non-empty shards of N, in order (`shard::assign`'s assignment).
pub fn shard_jobs<'a>(cells: &[&'a Cell], n: usize) -> Vec<ShardJob<'a>> {
    let a = crate::plan::shard::assign(cells, n);
    let mut jobs: Vec<ShardJob> = (0..n)
        .map(|s| ShardJob {
            index: s + 1,
            count: n,
            ids: Vec::new(),
            platforms: Vec::new(),
        })
        .collect();
    for (c, s) in cells.iter().zip(a) {
        jobs[s].ids.push(&c.id);
        jobs[s].platforms.push(c.platform());
    }
    jobs.retain(|j| !j.ids.is_empty());
    for j in &mut jobs {
        j.platforms.sort_unstable();
        j.platforms.dedup();
    }
    jobs
}

/// A GitHub Actions matrix of N shard jobs; each runs `matrix build --shard I/N`.
pub fn gha_shards(cells: &[&Cell], n: usize) -> Value {
    let include: Vec<Value> = shard_jobs(cells, n)
        .iter()
        .map(|j| {
            json!({
                "shard": j.shard(),
                "count": j.ids.len(),
                "platforms": j.platforms,
                // a shard of one platform runs on that platform's own runners
                "runner": runner_for(j.platform().unwrap_or("")),
                "ids": j.ids,
            })
        })
        .collect();
    json!({ "include": include })
}

/// The tag of GitLab's hosted runners for a platform, native for arm64 too: the
/// medium size, which has the cores and memory of GitHub's standard runners.
fn gitlab_runner_for(platform: &str) -> &'static str {
    match platform {
        "linux/arm64" => "saas-linux-medium-arm64",
        _ => "saas-linux-medium-amd64",
    }
}

/// What the jobs of a GitLab child pipeline repeat of the plan's command line, so that
/// every shard job selects the cells the plan split: the matrix file (when not the
/// default), the filters and the date (pinned: a job that starts after midnight UTC
/// still makes the night's tags).
pub struct GitlabSelection<'a> {
    pub matrix: Option<&'a str>,
    pub filters: Vec<String>,
    pub date: &'a str,
}

/// A YAML scalar: bare when nothing in it can mean anything else in YAML, else
/// single-quoted (where only `'` needs escaping).
fn yaml_scalar(s: &str) -> String {
    let bare = !s.is_empty()
        && s.bytes()
            .next()
            .is_some_and(|c| c.is_ascii_alphanumeric() || c == b'.' || c == b'/')
        && s.bytes()
            .all(|c| c.is_ascii_alphanumeric() || b" _./=-$".contains(&c))
        && !matches!(
            s,
            "true" | "false" | "yes" | "no" | "on" | "off" | "null" | "y" | "n"
        )
        && s.parse::<f64>().is_err();
    if bare {
        s.to_string()
    } else {
        format!("'{}'", s.replace('\'', "''"))
    }
}

/// The GitLab job name of a shard's build.
fn gitlab_build_job(j: &ShardJob) -> String {
    format!("build {} {}", j.shard(), j.platform().unwrap_or("mixed"))
}

/// `matrix plan --format gitlab --shards N`: a GitLab CI child pipeline (the parent
/// triggers it with `trigger: include: artifact`): one build job per shard on a
/// GitLab-hosted runner of its platform, each staging its verified images by digest,
/// and a publish job that needs no Docker daemon.
pub fn gitlab_pipeline(cells: &[&Cell], n: usize, sel: &GitlabSelection) -> String {
    let jobs = shard_jobs(cells, n);
    let mut repeat = Vec::new();
    if let Some(m) = sel.matrix {
        repeat.push("-f".to_string());
        repeat.push(m.to_string());
    }
    for f in &sel.filters {
        repeat.push("--filter".into());
        repeat.push(f.clone());
    }
    repeat.push("--date".into());
    repeat.push(sel.date.to_string());
    let repeat = crate::shell::line(&repeat);
    let mut y = String::new();
    let _ = write!(
        y,
        "\
# A GitLab CI child pipeline written by `matrix plan --format gitlab --shards {n}`:
# {cells} cells in {jobs} build jobs, each on a GitLab-hosted runner of its shard's platform
# (arm64 natively), then one publish job that needs no Docker daemon. The parent
# pipeline triggers it (trigger: include: artifact) and passes its variables down:
#   MATRIX_CI_IMAGE  an image (amd64 and arm64) with matrix, Docker's daemon and sshpass
#   MATRIX_STAGING   the staging repository, on the registry of the matrix's repository
# and GitLab's own CI_REGISTRY, CI_REGISTRY_USER and CI_REGISTRY_PASSWORD.
# examples/gitlab-ci.yml is such a parent. Regenerate, do not edit.
stages: [build, publish]

.matrix-build:
  stage: build
  image: $MATRIX_CI_IMAGE
  before_script:
    # the job's own daemon (hosted runners run jobs privileged): verify reaches the
    # containers it starts on 127.0.0.1, which a docker:dind service would not give
    - '(dockerd-entrypoint.sh dockerd --host=unix:///var/run/docker.sock >/tmp/dockerd.log 2>&1 &)'
    - 'for i in $(seq 60); do docker info >/dev/null 2>&1 && break; sleep 1; done; docker info >/dev/null || {{ cat /tmp/dockerd.log; exit 1; }}'
    - 'echo \"$CI_REGISTRY_PASSWORD\" | docker login \"$CI_REGISTRY\" --username \"$CI_REGISTRY_USER\" --password-stdin'
  artifacts:
    when: always
    paths: [shards/]
",
        cells = cells.len(),
        jobs = jobs.len(),
    );
    for j in &jobs {
        let build = format!(
            "matrix build --shard {} {repeat} --verify --stage \"$MATRIX_STAGING\" -o shards/{}",
            j.shard(),
            j.index
        );
        let _ = write!(
            y,
            "\n{}:\n  extends: .matrix-build\n  tags: [{}]\n  script:\n    - {}\n",
            yaml_scalar(&gitlab_build_job(j)),
            gitlab_runner_for(j.platform().unwrap_or("")),
            yaml_scalar(&build),
        );
    }
    let _ = write!(
        y,
        "\n\
publish:
  stage: publish
  image: $MATRIX_CI_IMAGE
  tags: [{runner}]
  # runs when a shard failed too: publish then refuses, and the report says why
  when: always
  needs:
",
        runner = gitlab_runner_for(""),
    );
    for j in &jobs {
        let _ = writeln!(
            y,
            "    - {{job: {}, artifacts: true}}",
            yaml_scalar(&gitlab_build_job(j))
        );
    }
    y.push_str(
        "  \
  script:
    - matrix manifest merge shards/*/manifest.json -o all.json
    - 'echo \"$CI_REGISTRY_PASSWORD\" | matrix login \"$CI_REGISTRY\" --username \"$CI_REGISTRY_USER\" --password-stdin'
    - matrix publish all.json
  after_script:
    - matrix report all.json -o report.html
  artifacts:
    when: always
    paths: [all.json, report.html]
",
    );
    y
}

pub fn table(plan: &Plan, cells: &[&Cell]) -> String {
    use std::borrow::Cow;
    let head = [
        "ID",
        "PYTHON",
        "BASE",
        "PLATFORM",
        "INSTALLER (SHA256)",
        "TAGS",
    ];
    let mut rows: Vec<[Cow<str>; 6]> = Vec::with_capacity(cells.len() + 1);
    rows.push(head.map(Cow::Borrowed));
    for c in cells {
        rows.push([
            Cow::Borrowed(c.id.as_str()),
            Cow::Borrowed(c.coord.python.as_str()),
            Cow::Borrowed(c.base.reference.as_str()),
            Cow::Borrowed(c.platform()),
            Cow::Owned(format!(
                "{} ({})",
                c.installer.file,
                &c.installer.sha256[..12]
            )),
            match c.tags.as_slice() {
                [one] => Cow::Borrowed(one.as_str()),
                many => Cow::Owned(many.join(" ")),
            },
        ]);
    }
    let mut widths = [0usize; 6];
    for r in &rows {
        for (w, v) in widths.iter_mut().zip(r) {
            *w = (*w).max(v.chars().count());
        }
    }
    let line_len: usize = widths.iter().map(|w| w + 2).sum();
    let mut out = String::with_capacity(rows.len() * line_len);
    for r in &rows {
        for (i, v) in r.iter().enumerate() {
            out.push_str(v);
            if i < 5 {
                let pad = widths[i] + 2 - v.chars().count();
                out.extend(std::iter::repeat_n(' ', pad));
            }
        }
        // no trailing blanks (a cell without tags)
        out.truncate(out.trim_end().len());
        out.push('\n');
    }
    if !plan.excluded.is_empty() {
        let _ = writeln!(out, "\nexcluded:");
        for e in &plan.excluded {
            let _ = writeln!(out, "  {}  (line {}) {}", e.id, e.line, e.reason);
        }
    }
    let filtered = plan.cells.len() - cells.len();
    let _ = write!(
        out,
        "\n{} cell{} to build",
        cells.len(),
        if cells.len() == 1 { "" } else { "s" }
    );
    if filtered > 0 {
        let _ = write!(out, " ({filtered} more filtered out)");
    }
    let _ = writeln!(out, ", {} excluded", plan.excluded.len());
    groups_table(&mut out, cells);
    // Where they will build; which engine takes which cell is decided as engines free
    // up, so only the engines are known ahead (`--engine` on build replaces them).
    if !plan.settings.engines.is_empty() {
        let engines: Vec<String> = plan
            .settings
            .engines
            .iter()
            .map(|e| {
                let jobs = e
                    .jobs
                    .map_or_else(|| "-j builds".to_string(), |j| format!("{j} builds"));
                let target = match &e.target {
                    crate::config::engine::Target::Context(c) => format!("context {c}"),
                    t => t.to_string(),
                };
                let platforms = if e.platforms.is_empty() {
                    String::new()
                } else {
                    format!(", {}", e.platforms.join(" "))
                };
                format!("{} ({target}, {jobs}{platforms})", e.name)
            })
            .collect();
        let _ = writeln!(out, "engines: {}", engines.join(", "));
    }
    out
}

/// The tag groups among `cells`: one line per shared tag, with its platforms' cells.
fn groups_table(out: &mut String, cells: &[&Cell]) {
    let mut groups: Vec<(&str, Vec<&Cell>)> = Vec::new();
    for c in cells {
        if let Some(g) = &c.group {
            match groups.iter_mut().find(|(n, _)| *n == g.name) {
                Some((_, m)) => m.push(c),
                None => groups.push((&g.name, vec![c])),
            }
        }
    }
    if groups.is_empty() {
        return;
    }
    let _ = writeln!(
        out,
        "{} tag group{} (one tag, an image index over one image per platform):",
        groups.len(),
        if groups.len() == 1 { "" } else { "s" }
    );
    for (name, members) in &groups {
        let m: Vec<String> = members
            .iter()
            .map(|c| format!("{} ({})", c.id, c.platform()))
            .collect();
        let _ = writeln!(out, "  {name}: {} cells: {}", members.len(), m.join(", "));
        let total = members[0].group.as_ref().map_or(0, |g| g.members.len());
        if total > members.len() {
            let _ = writeln!(
                out,
                "    ({} of its {total} platforms selected: push publishes the group only with all of them)",
                members.len()
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The word-at-a-time check agrees with a byte-by-byte one for every byte value at
    /// every place of strings of 0 to 20 bytes, and what it passes is what serde_json
    /// would write unescaped.
    #[test]
    fn escaping_is_found_wherever_it_is_needed() {
        let slow = |b: &[u8]| b.iter().any(|&c| c < 0x20 || c == b'"' || c == b'\\');
        for len in 0..=20 {
            for at in 0..len.max(1) {
                for byte in 0..=255u8 {
                    let mut s = vec![b'a'; len];
                    if len > 0 {
                        s[at] = byte;
                    }
                    assert_eq!(needs_escaping(&s), slow(&s), "{s:?}");
                }
            }
        }
        for text in [
            "plain/path:tag-1.0",
            "quote\"d",
            "back\\slash",
            "tab\there",
            "é ünïcode",
            "\u{7f}",
        ] {
            let mut out = Vec::new();
            json_str(&mut out, text).unwrap();
            assert_eq!(out, serde_json::to_vec(text).unwrap(), "{text}");
        }
    }

    /// A target's context is written as `Path::join` makes it, whatever the directory
    /// ends in and whether the parts need escaping.
    #[test]
    fn context_paths_are_those_path_join_makes() {
        for dir in [
            "out/contexts",
            "out/contexts/",
            "",
            "/",
            "a\"b",
            "ctx\\dir/",
        ] {
            for id in ["py3.11-ubuntu22.04-amd64-base", "odd\"id"] {
                let contexts = Contexts::new(Path::new(dir));
                let mut out = Vec::new();
                json_str_of(&mut out, &[contexts.prefix.as_deref().unwrap(), id]).unwrap();
                let joined = Path::new(dir).join(id).display().to_string();
                assert_eq!(out, serde_json::to_vec(&joined).unwrap(), "{dir} + {id}");
            }
        }
    }

    /// Labels go out by name, each name once, with the last value `docker build`
    /// would keep.
    #[test]
    fn a_later_label_of_a_name_wins() {
        let p = crate::plan::plan_text(
            "version: 1\nbases: [ubuntu:22.04]\npython: [\"3.11\"]\n",
            "m.yaml",
            Path::new("."),
            &crate::plan::PlanOptions {
                date: "20260101".into(),
            },
        )
        .unwrap();
        let cells: Vec<&Cell> = p.cells.iter().collect();
        let build = |_| BuildOptions {
            labels: ["b=1", "a=x", "c=3", "b=2"]
                .iter()
                .map(|l| (&l[..1], std::borrow::Cow::Borrowed(&l[2..])))
                .collect(),
            network: None,
            pull: false,
            cache_from: Vec::new(),
            inline_cache: false,
        };
        let mut out = Vec::new();
        write_bake(&mut out, &cells, Path::new("ctx"), &build).unwrap();
        let doc: serde_json::Value = serde_json::from_slice(&out).unwrap();
        let target = doc["target"].as_object().unwrap().values().next().unwrap();
        assert_eq!(
            target["labels"],
            serde_json::json!({"a": "x", "b": "2", "c": "3"})
        );
        let text = String::from_utf8(out).unwrap();
        assert!(
            text.contains(r#""labels":{"a":"x","b":"2","c":"3"}"#),
            "{text}"
        );
    }
}
