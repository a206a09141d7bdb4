//! Image families: framework images (PyTorch, TensorFlow) grown on the Miniconda cells.
//!
//! Every release on a framework axis (`pytorch: ["2.5.1"]`, `tensorflow: [...]`) adds
//! one child to every Miniconda cell: an image built `FROM` that cell's image, so the
//! OS, Miniconda and JupyterLab layers are shared and the parent is verified once. For
//! each child the framework catalogue picks the wheel (the newest variant the base's
//! CUDA can run, `cpu` on a CPU base, or the build the package index serves when
//! `sources.pytorch_index: pypi`), its companions (torchvision, torchaudio) and the
//! index URLs. A child with no wheel is refused here, at plan time, at the place the
//! release is written, with the reason and the nearest release that would install.
//!
//! Invariants: the cells come out in tree order (each parent, then its children), so a
//! parent is always planned — and built — before its children; a child's id is its
//! parent's id plus `-torch2.5.1` / `-tf2.17.0`.

use serde::Serialize;

use crate::config::raw::RawConfig;
use crate::config::requirement::Requirement;
use crate::config::settings::{Settings, TorchIndex};
use crate::coord::{Coordinate, Key};
use crate::diag::{Diags, Sp};
use crate::plan::frameworks::{Frameworks, Need, NoWheel, Source, Wheel};
use crate::plan::{rule_matches, Cell, Excluded};

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, schemars::JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    Pytorch,
    Tensorflow,
}

impl Kind {
    /// `pytorch`, `tensorflow`: the axis's key and the `framework` coordinate.
    pub fn name(self) -> &'static str {
        match self {
            Kind::Pytorch => "pytorch",
            Kind::Tensorflow => "tensorflow",
        }
    }

    /// The coordinate (and placeholder) of its release: `torch`, `tf`.
    pub fn key(self) -> Key {
        match self {
            Kind::Pytorch => Key::Torch,
            Kind::Tensorflow => Key::Tf,
        }
    }

    /// The package that says the release (`torch`, `tensorflow`).
    pub fn package(self) -> &'static str {
        match self {
            Kind::Pytorch => "torch",
            Kind::Tensorflow => "tensorflow",
        }
    }
}

/// One release of a framework axis, and where it is written.
#[derive(Clone, Debug)]
pub struct Entry {
    pub kind: Kind,
    pub version: semver::Version,
    pub text: Sp<String>,
    /// `pytorch[1]`, `tensorflow.versions[0]`.
    pub key: String,
    /// The axis's extra pip requirements (`extra_pip`), installed in the same layer.
    pub extra_pip: Vec<Requirement>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, schemars::JsonSchema)]
pub struct Package {
    pub name: String,
    pub version: String,
}

/// What a framework image installs on its parent, decided at plan time.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, schemars::JsonSchema)]
pub struct Framework {
    pub name: Kind,
    pub version: String,
    /// Every package it pins: torch, torchvision, torchaudio (or tensorflow).
    pub packages: Vec<Package>,
    /// The requirement lines pip gets (`torch==2.5.1`, `tensorflow[and-cuda]==2.17.0`),
    /// then the extra ones; a PyTorch layer from the variant indexes with extras also
    /// gets `--extra-index-url PACKAGE-INDEX` (the pins keep the variant's build: pip
    /// prefers `2.3.0+cu121` to the package index's `2.3.0`, a local version sorting
    /// after the release).
    pub requirements: Vec<String>,
    /// The axis's `extra_pip` requirements that apply to this cell's Python, as written
    /// (without their marker).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub extra_pip: Vec<String>,
    /// The wheel variant: `cu124`, `cpu`.
    pub wheel: String,
    /// The CUDA the framework reports (`torch.version.cuda`); None for a CPU build.
    pub cuda: Option<String>,
    /// Indexes to install from, tried in order.
    pub index_urls: Vec<String>,
    /// `variant-indexes` (PyTorch's per-variant indexes) or `package-index`.
    pub source: &'static str,
    /// The id of the Miniconda cell it builds on.
    pub parent: String,
    /// The parent's primary tag: what a hand-made `docker build` of the context, and a
    /// bake target, build `FROM` (a run builds from the parent's image ID).
    pub parent_tag: String,
}

/// The framework axes as written: releases in `X.Y.Z` form, each once, with the axis's
/// extra pip requirements.
pub fn axis(raw: &RawConfig, d: &mut Diags) -> Vec<Entry> {
    let mut out: Vec<Entry> = Vec::new();
    for (kind, list, extra) in [
        (Kind::Pytorch, &raw.pytorch, &raw.pytorch_extra_pip),
        (Kind::Tensorflow, &raw.tensorflow, &raw.tensorflow_extra_pip),
    ] {
        let mapped = raw.framework_mappings.iter().any(|m| m == kind.name());
        let extra_pip = extra_requirements(kind, extra, d);
        for (i, text) in list.iter().enumerate() {
            let key = if mapped {
                format!("{}.versions[{i}]", kind.name())
            } else {
                format!("{}[{i}]", kind.name())
            };
            let version = match semver::Version::parse(&text.value) {
                Ok(v) if v.pre.is_empty() && v.build.is_empty() => v,
                _ => {
                    d.error(
                        Some(text.at),
                        &key,
                        format!(
                            "`{}` is not a {} release; write MAJOR.MINOR.PATCH such as \"{}\"",
                            text.value,
                            kind.package(),
                            if kind == Kind::Pytorch {
                                "2.5.1"
                            } else {
                                "2.17.0"
                            }
                        ),
                    );
                    continue;
                }
            };
            if out.iter().any(|e| e.kind == kind && e.version == version) {
                d.error(
                    Some(text.at),
                    &key,
                    format!("{} {version} is listed twice", kind.package()),
                );
                continue;
            }
            out.push(Entry {
                kind,
                version,
                text: text.clone(),
                key,
                extra_pip: extra_pip.clone(),
            });
        }
    }
    out
}

/// The packages a framework layer pins itself: an extra requirement must not name them.
fn own_packages(kind: Kind) -> &'static [&'static str] {
    match kind {
        Kind::Pytorch => &["torch", "torchvision", "torchaudio"],
        Kind::Tensorflow => &["tensorflow", "tensorflow-cpu", "tensorflow-cpu-aws"],
    }
}

/// `KIND.extra_pip`: plain pip requirements, each package once, none of the
/// framework's own (the plan pins those from the catalogue).
fn extra_requirements(kind: Kind, extra: &[Sp<String>], d: &mut Diags) -> Vec<Requirement> {
    let mut out: Vec<Requirement> = Vec::new();
    for (i, text) in extra.iter().enumerate() {
        let key = format!("{}.extra_pip[{i}]", kind.name());
        let r = match Requirement::parse(&text.value) {
            Ok(r) => r,
            Err(e) => {
                d.error(Some(text.at), &key, e);
                continue;
            }
        };
        if own_packages(kind).contains(&r.name.as_str()) {
            d.error(
                Some(text.at),
                &key,
                format!(
                    "`{}` is the framework's own package: the plan pins {} from the framework catalogue (write the release under `{}.versions`)",
                    text.value,
                    own_packages(kind).join(", "),
                    kind.name()
                ),
            );
            continue;
        }
        if out.iter().any(|o| o.name == r.name) {
            d.error(
                Some(text.at),
                &key,
                format!(
                    "`{}` is listed twice in `{}.extra_pip`",
                    r.name,
                    kind.name()
                ),
            );
            continue;
        }
        out.push(r);
    }
    out
}

/// A child's coordinate: its parent's, plus the framework and its release.
fn child_coordinate(parent: &Coordinate, e: &Entry, wheel: Option<Wheel>) -> Coordinate {
    let v = Some(e.version.to_string());
    Coordinate {
        framework: Some(e.kind.name().to_string()),
        torch: if e.kind == Kind::Pytorch {
            v.clone()
        } else {
            None
        },
        tf: if e.kind == Kind::Tensorflow { v } else { None },
        cuda_wheel: wheel.map(|w| w.to_string()),
        ..parent.clone()
    }
}

/// `py3.11-debian12-amd64-torch2.5.1`.
pub fn child_id(parent: &str, e: &Entry) -> String {
    match e.kind {
        Kind::Pytorch => format!("{parent}-torch{}", e.version),
        Kind::Tensorflow => format!("{parent}-tf{}", e.version),
    }
}

fn need<'a>(parent: &'a Cell, source: Source) -> Need<'a> {
    Need {
        python: parent.python,
        arch: parent.arch(),
        cuda: parent.base.cuda.as_ref().map(|c| {
            (
                u32::try_from(c.version.major).unwrap_or(u32::MAX),
                u32::try_from(c.version.minor).unwrap_or(u32::MAX),
            )
        }),
        source,
    }
}

/// What a child installs, with a caveat the plan must show (if any), or why nothing
/// installs.
fn pick(parent: &Cell, e: &Entry, s: &Settings) -> Result<(Framework, Option<String>), NoWheel> {
    let cat = Frameworks::get();
    let v = &e.version;
    let (wheel, packages, mut requirements, index_urls, source, note) = match e.kind {
        Kind::Pytorch => {
            let (source, roots) = match &s.sources.pytorch_index {
                TorchIndex::Variants(r) => (Source::VariantIndexes, Some(r)),
                TorchIndex::PackageIndex => (Source::PackageIndex, None),
            };
            let l = cat.pick_torch(v, &need(parent, source))?;
            let packages = vec![
                ("torch", l.torch.to_string()),
                ("torchvision", l.torchvision.clone()),
                ("torchaudio", l.torchaudio.clone()),
            ];
            let reqs = packages.iter().map(|(n, v)| format!("{n}=={v}")).collect();
            let urls = match roots {
                Some(r) => r.iter().map(|root| format!("{root}{}", l.wheel)).collect(),
                None => vec![s.sources.package_index().to_string()],
            };
            let note = (parent.base.cuda.is_none() && l.wheel != Wheel::Cpu).then(|| format!(
                "the package index serves torch {v} only as its {} build: on the CPU base {} it runs on the CPU but brings the CUDA libraries (nvidia-* packages, several GB); PyTorch's cpu index (`sources.pytorch_index`) has a CPU-only build",
                l.wheel, parent.base.reference
            ));
            (l.wheel, packages, reqs, urls, source, note)
        }
        Kind::Tensorflow => {
            let p = cat.pick_tf(v, &need(parent, Source::PackageIndex))?;
            let extra = p.extra.map(|x| format!("[{x}]")).unwrap_or_default();
            (
                p.wheel,
                vec![("tensorflow", v.to_string())],
                vec![format!("tensorflow{extra}=={v}")],
                vec![s.sources.package_index().to_string()],
                Source::PackageIndex,
                p.note,
            )
        }
    };
    let python = parent.python.to_string();
    let extra_pip: Vec<String> = e
        .extra_pip
        .iter()
        .filter(|r| r.applies_to(&python))
        .map(|r| r.spec.clone())
        .collect();
    if !extra_pip.is_empty() && source == Source::VariantIndexes {
        requirements.insert(
            0,
            format!("--extra-index-url {}", s.sources.package_index()),
        );
    }
    requirements.extend(extra_pip.iter().cloned());
    let f = Framework {
        name: e.kind,
        version: v.to_string(),
        packages: packages
            .into_iter()
            .map(|(name, version)| Package {
                name: name.to_string(),
                version,
            })
            .collect(),
        requirements,
        extra_pip,
        wheel: wheel.to_string(),
        cuda: wheel.cuda(),
        index_urls,
        source: match source {
            Source::VariantIndexes => "variant-indexes",
            Source::PackageIndex => "package-index",
        },
        parent: parent.id.clone(),
        parent_tag: String::new(),
    };
    Ok((f, note))
}

/// Refusals of one release, grouped by reason: (entry, reason, nearest, cells).
type Refusals = Vec<(usize, NoWheel, String, Vec<String>)>;

/// The cells in tree order: each Miniconda cell, then its framework images. Children
/// matched by an exclusion are excluded (its hit counted in `hits`); a child with no
/// wheel is an error at its release's place.
pub fn grow(
    cells: Vec<Cell>,
    entries: &[Entry],
    raw: &RawConfig,
    s: &Settings,
    d: &mut Diags,
) -> (Vec<Cell>, Vec<Excluded>) {
    if entries.is_empty() {
        return (cells, Vec::new());
    }
    let mut hits = vec![0usize; raw.exclude.len()];
    let mut out = Vec::with_capacity(cells.len() * (entries.len() + 1));
    let mut excluded = Vec::new();
    let mut refused: Refusals = Vec::new();
    let mut notes: Vec<(usize, String)> = Vec::new();
    for parent in cells {
        let mut children = Vec::new();
        for (n, e) in entries.iter().enumerate() {
            let picked = pick(&parent, e, s);
            let wheel = picked.as_ref().ok().and_then(|f| Wheel::parse(&f.0.wheel));
            let coord = child_coordinate(&parent.coord, e, wheel);
            let id = child_id(&parent.id, e);
            if let Some((i, rule)) = raw
                .exclude
                .iter()
                .enumerate()
                .find(|(_, r)| rule_matches(r, &coord))
            {
                hits[i] += 1;
                excluded.push(Excluded::by_rule(id, coord, rule));
                continue;
            }
            match picked {
                Ok((f, note)) => {
                    if let Some(note) =
                        note.filter(|x| !notes.iter().any(|(m, y)| *m == n && y == x))
                    {
                        notes.push((n, note));
                    }
                    children.push(Cell {
                        id,
                        coord,
                        framework: Some(Box::new(f)),
                        custom: None,
                        group: None,
                        tags: Vec::new(),
                        ..parent.clone()
                    });
                }
                Err(no) => {
                    let near = nearest(&parent, e, s);
                    match refused.iter_mut().find(|r| r.0 == n && r.1 == no) {
                        Some(r) => r.3.push(id),
                        None => refused.push((n, no, near, vec![id])),
                    }
                }
            }
        }
        out.push(parent);
        out.extend(children);
    }
    report(entries, &refused, &notes, d);
    for (n, rule) in hits.iter().zip(&raw.exclude) {
        let framework_rule = rule.fields.iter().any(|(k, _)| k.is_framework())
            && rule.fields.iter().all(|(k, _)| *k != Key::Family);
        if *n == 0 && framework_rule {
            d.warn(Some(rule.at), &rule.key, "this exclusion matches no cell");
        }
    }
    (out, excluded)
}

/// The framework images an excluded Miniconda cell would have had, listed as excluded
/// with it (they are not planned, and must not vanish without a word).
pub fn children_of_excluded(excluded: &[Excluded], entries: &[Entry]) -> Vec<Excluded> {
    let mut out = Vec::new();
    for parent in excluded.iter().filter(|x| x.coord.framework.is_none()) {
        for e in entries {
            let coord = child_coordinate(&parent.coord, e, None);
            out.push(Excluded {
                id: child_id(&parent.id, e),
                python: coord.python.clone(),
                base: coord.base.clone(),
                platform: coord.platform.clone(),
                variant: coord.variant.clone(),
                coord,
                reason: format!("its Miniconda image {} is excluded", parent.id),
                line: parent.line,
            });
        }
    }
    out
}

/// A selection with the parent of every framework image in it (a framework image
/// builds on its parent's image from the same run), in plan order.
pub fn with_parents<'a>(all: &'a [Cell], selected: &[&'a Cell]) -> Vec<&'a Cell> {
    if selected.len() == all.len() {
        return all.iter().collect();
    }
    let wanted: crate::plan::fast::FastSet<&str> = selected
        .iter()
        .flat_map(|c| [Some(c.id.as_str()), c.parent()])
        .flatten()
        .collect();
    all.iter()
        .filter(|c| wanted.contains(c.id.as_str()))
        .collect()
}

/// Point each framework image at its parent's primary tag (tags are assigned after
/// the tree is grown).
pub fn link(cells: &mut [Cell]) {
    if cells.iter().all(|c| c.framework.is_none()) {
        return;
    }
    let parent_tags: Vec<Option<String>> = {
        let tags: crate::plan::fast::FastMap<&str, &str> = cells
            .iter()
            .filter(|c| c.framework.is_none())
            .map(|c| (c.id.as_str(), c.primary_tag()))
            .collect();
        cells
            .iter()
            .map(|c| {
                let f = c.framework.as_ref()?;
                Some(
                    tags.get(f.parent.as_str())
                        .copied()
                        .unwrap_or_default()
                        .to_string(),
                )
            })
            .collect()
    };
    for (c, tag) in cells.iter_mut().zip(parent_tags) {
        if let (Some(f), Some(tag)) = (c.framework.as_mut(), tag) {
            f.parent_tag = tag;
        }
    }
}

/// The nearest release of the same framework that installs in the parent's cell.
fn nearest(parent: &Cell, e: &Entry, s: &Settings) -> String {
    let cat = Frameworks::get();
    let found = match e.kind {
        Kind::Pytorch => {
            let source = match s.sources.pytorch_index {
                TorchIndex::Variants(_) => Source::VariantIndexes,
                TorchIndex::PackageIndex => Source::PackageIndex,
            };
            cat.nearest_torch(&e.version, &need(parent, source))
                .map(|(l, _)| (l.torch.to_string(), l.wheel))
        }
        Kind::Tensorflow => cat
            .nearest_tf(&e.version, &need(parent, Source::PackageIndex))
            .map(|p| (p.line.tensorflow.to_string(), p.wheel)),
    };
    match found {
        Some((v, w)) => format!("the nearest release that installs there is \"{v}\" ({w})"),
        None => format!(
            "no {} release in the catalogue installs there",
            e.kind.package()
        ),
    }
}

/// One error per release and reason, naming the cells (a few) and how to get out.
fn report(entries: &[Entry], refused: &Refusals, notes: &[(usize, String)], d: &mut Diags) {
    for (n, no, near, ids) in refused {
        let e = &entries[*n];
        let cells = match ids.len() {
            1 => format!("cell {}", ids[0]),
            k => format!(
                "{k} cells ({}{})",
                ids.iter().take(3).cloned().collect::<Vec<_>>().join(", "),
                if k > 3 { ", …" } else { "" }
            ),
        };
        let escape = match no.on {
            Key::Torch | Key::Tf => String::new(),
            on => format!(
                "; or exclude the combination: `exclude: [{{{}: \"{}\", {}: …, reason: …}}]`",
                e.kind.key().name(),
                e.version,
                on.name()
            ),
        };
        d.error(
            Some(e.text.at),
            &e.key,
            format!(
                "{}: no wheel installs in {cells}: {no}; {near}{escape}",
                e.text.value
            ),
        );
    }
    for (n, note) in notes {
        let e = &entries[*n];
        d.warn(Some(e.text.at), &e.key, note.as_str());
    }
}

#[cfg(test)]
mod tests {
    use crate::plan::Plan;

    fn plan(yaml: &str) -> Result<Plan, String> {
        crate::plan::plan_for_tests(yaml, std::path::Path::new("."))
    }

    /// The seed family: torch 2.3.0, torchvision 0.18.0, torchaudio 2.3.0 from the
    /// cu121 index on a CUDA 12.1 base, tagged as the seed tags it.
    #[test]
    fn the_seed_familys_image_is_planned_as_the_seed_tags_it() {
        let p = plan("version: 1\nimage: {repository: pytorch, pytorch_tag: \"{torch}-python{python}-{base}\"}\nbases: [nvidia/cuda:12.1.1-cudnn8-devel-ubuntu22.04]\npython: [{version: \"3.8\", miniconda: \"23.11.0-2\"}]\npytorch: [\"2.3.0\"]\n").unwrap();
        let ids: Vec<&str> = p.cells.iter().map(|c| c.id.as_str()).collect();
        assert_eq!(
            ids,
            [
                "py3.8-cuda12.1.1-cudnn8-devel-ubuntu22.04-amd64",
                "py3.8-cuda12.1.1-cudnn8-devel-ubuntu22.04-amd64-torch2.3.0"
            ]
        );
        let c = &p.cells[1];
        let f = c.framework.as_ref().unwrap();
        assert_eq!(
            f.requirements,
            ["torch==2.3.0", "torchvision==0.18.0", "torchaudio==2.3.0"]
        );
        assert_eq!(f.wheel, "cu121");
        assert_eq!(f.cuda.as_deref(), Some("12.1"));
        assert_eq!(f.index_urls, ["https://download.pytorch.org/whl/cu121"]);
        assert_eq!(f.parent, ids[0]);
        assert_eq!(
            f.parent_tag,
            "pytorch:conda3-python3.8-cuda12.1.1-cudnn8-devel-ubuntu22.04"
        );
        assert_eq!(
            c.tags,
            ["pytorch:2.3.0-python3.8-cuda12.1.1-cudnn8-devel-ubuntu22.04"]
        );
        assert_eq!(c.coord.cuda_wheel.as_deref(), Some("cu121"));
    }

    #[test]
    fn a_combination_with_no_wheel_is_refused_where_the_release_is_written() {
        let e = plan("version: 1\nbases: [nvidia/cuda:12.1.1-cudnn8-devel-ubuntu22.04, ubuntu:22.04]\npython: [\"3.11\"]\npytorch: [\"2.5.1\", \"2.7.1\"]\n").unwrap_err();
        assert!(e.contains("m.yaml:4:20: `pytorch[1]`: 2.7.1: no wheel installs in cell py3.11-cuda12.1.1-cudnn8-devel-ubuntu22.04-amd64-torch2.7.1: torch 2.7.1 has no wheel for CUDA 12.1"), "{e}");
        assert!(
            e.contains("the nearest release that installs there is \"2.5.1\" (cu121)"),
            "{e}"
        );
        assert!(
            e.contains("`exclude: [{torch: \"2.7.1\", cuda: …, reason: …}]`"),
            "{e}"
        );
        // excluded, it plans
        let p = plan("version: 1\nbases: [nvidia/cuda:12.1.1-cudnn8-devel-ubuntu22.04, ubuntu:22.04]\npython: [\"3.11\"]\npytorch: [\"2.5.1\", \"2.7.1\"]\nexclude: [{torch: \"2.7.1\", cuda: \"12.1\", reason: no cu121 build}]\n").unwrap();
        assert_eq!(p.cells.len(), 5);
        assert_eq!(p.excluded.len(), 1);
        assert!(p.warnings.is_empty(), "{:?}", p.warnings);
    }

    /// `--filter` on a framework image brings its parent along, and a shard keeps a
    /// tree together (parent and children share a base).
    #[test]
    fn a_filtered_child_brings_its_parent_and_shards_keep_trees_whole() {
        let p = plan("version: 1\nbases: [ubuntu:22.04, \"debian:12\", ubuntu:24.04]\npython: [\"3.11\", \"3.12\"]\npytorch: [\"2.5.1\", \"2.7.1\"]\n").unwrap();
        let f: crate::coord::Filter = "torch=2.7.1".parse().unwrap();
        let picked = crate::coord::select(&p.cells, std::slice::from_ref(&f));
        let got: Vec<&str> = super::with_parents(&p.cells, &picked)
            .iter()
            .filter(|c| c.base.reference == "debian:12")
            .map(|c| c.id.as_str())
            .collect();
        assert_eq!(
            got,
            [
                "py3.11-debian12-amd64",
                "py3.11-debian12-amd64-torch2.7.1",
                "py3.12-debian12-amd64",
                "py3.12-debian12-amd64-torch2.7.1"
            ]
        );
        let all: Vec<&crate::plan::Cell> = p.cells.iter().collect();
        for n in 1..=3 {
            let shard =
                crate::plan::shard::select(&all, crate::plan::shard::Shard { index: n, count: 3 });
            for c in &shard {
                if let Some(parent) = c.parent() {
                    assert!(
                        shard.iter().any(|x| x.id == parent),
                        "{} without its parent",
                        c.id
                    );
                }
            }
        }
    }

    /// The package index serves one build per release; a CPU base gets it with a
    /// warning that it is the CUDA build.
    #[test]
    fn pypi_as_the_source_plans_the_build_pypi_serves() {
        let p = plan("version: 1\nbases: [\"debian:12\"]\npython: [\"3.11\"]\npytorch: [\"2.1.2\"]\nsources: {pytorch_index: pypi, pip_index: \"https://pypi.tuna.tsinghua.edu.cn/simple\"}\n").unwrap();
        let f = p.cells[1].framework.as_ref().unwrap();
        assert_eq!((f.wheel.as_str(), f.source), ("cu121", "package-index"));
        assert_eq!(f.index_urls, ["https://pypi.tuna.tsinghua.edu.cn/simple"]);
        assert!(p.warnings[0].message.contains("only as its cu121 build"));
    }

    /// `extra_pip` joins the layer's requirements (markers decided per cell), changes
    /// the image's identity, and a PyTorch layer from the variant indexes gets the
    /// package index as an extra index for them.
    #[test]
    fn extra_pip_is_part_of_the_layer_and_of_its_identity() {
        let yaml = |extra: &str| {
            format!("version: 1\nbases: [nvidia/cuda:12.1.0-cudnn8-devel-ubuntu22.04]\npython: [\"3.10\", \"3.11\"]\ntensorflow: {{versions: [\"2.15.0\"], extra_pip: [{extra}]}}\npytorch: {{versions: [\"2.3.0\"], extra_pip: [\"einops>=0.8\"]}}\n")
        };
        let p = plan(&yaml("\"tensorrt==8.6.1; python_version < '3.11'\"")).unwrap();
        let tf = |p: &Plan, py: &str| {
            p.cells
                .iter()
                .find(|c| {
                    c.id == format!("py{py}-cuda12.1.0-cudnn8-devel-ubuntu22.04-amd64-tf2.15.0")
                })
                .unwrap()
                .framework
                .clone()
                .unwrap()
        };
        assert_eq!(
            tf(&p, "3.10").requirements,
            ["tensorflow[and-cuda]==2.15.0", "tensorrt==8.6.1"]
        );
        assert_eq!(
            tf(&p, "3.11").requirements,
            ["tensorflow[and-cuda]==2.15.0"]
        );
        assert!(tf(&p, "3.11").extra_pip.is_empty());
        let torch = p.cells[1].framework.as_ref().unwrap();
        assert_eq!(
            torch.requirements,
            [
                "--extra-index-url https://pypi.org/simple",
                "torch==2.3.0",
                "torchvision==0.18.0",
                "torchaudio==2.3.0",
                "einops>=0.8"
            ]
        );
        // the identity follows the extra packages
        let id = |p: &Plan, py: &str| {
            let r = crate::render::Renderer::new(&p.settings);
            let c = p
                .cells
                .iter()
                .find(|c| {
                    c.id == format!("py{py}-cuda12.1.0-cudnn8-devel-ubuntu22.04-amd64-tf2.15.0")
                })
                .unwrap();
            r.identity(c, &["sha256:base"])
        };
        let q = plan(&yaml("\"tensorrt==8.6.1.post1; python_version < '3.11'\"")).unwrap();
        assert_ne!(id(&p, "3.10"), id(&q, "3.10"));
        assert_eq!(
            id(&p, "3.11"),
            id(&q, "3.11"),
            "the marker leaves 3.11 alone"
        );
    }
}
