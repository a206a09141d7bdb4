//! The planner: `matrix.yaml` → a complete, validated [`Plan`].
//!
//! Everything `build` will do is decided here: each cell's base, Python, Miniconda
//! installer (name, SHA256, download URLs), platform, variant and tags. The plan is
//! deterministic: cells sort by their coordinates (versions as versions), and a
//! cell's id is made from its coordinates, so reordering the YAML changes neither.
//!
//! Steps, each its own module: the axes ([`axes`]), their expansion with rules
//! ([`expand`]), then tags and ids ([`tags`]).

pub mod axes;
pub mod base;
pub mod catalogue;
pub mod custom;
pub mod data;
pub mod expand;
pub mod family;
pub mod fast;
pub mod frameworks;
pub mod listing;
pub mod output;
pub mod shard;
pub mod stack;
pub mod tags;
pub mod version;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::Serialize;
use sha2::{Digest, Sha256};

use crate::config::raw::{self, RawRule};
use crate::config::{settings, yaml};
use crate::coord::{Coordinate, Key, Subject, PLATFORMS};
use crate::diag::{Diagnostic, Diags, Pos};
use crate::error::Error;
use base::Base;
use version::{CondaRelease, PyVersion};

pub use axes::DEFAULT_MINICONDA;
pub const DEFAULT_MAX_CELLS: u64 = 1000;

#[derive(Clone, Debug, Serialize)]
pub struct Variant {
    pub name: String,
    pub pip: Vec<String>,
    pub apt: Vec<String>,
    /// Requirements that replace the common stack's pins (`numpy>=2`): the variant
    /// says so, and gets them.
    pub overrides: Vec<String>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct InstallerRef {
    pub file: String,
    pub sha256: String,
    pub urls: Vec<String>,
    /// A pre-downloaded copy in `sources.installer_dir`, used instead of the mirrors.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub local: Option<PathBuf>,
}

#[derive(Clone, Debug)]
pub struct Cell {
    pub id: String,
    /// Where the cell sits: the values filters, rules, templates and records use.
    pub coord: Coordinate,
    pub python: PyVersion,
    pub miniconda: CondaRelease,
    pub base: Arc<Base>,
    pub variant: Arc<Variant>,
    pub installer: Arc<InstallerRef>,
    /// Full references; the first is the primary tag.
    pub tags: Vec<String>,
    /// Its tag group, when other cells differ from it only in platform and share its
    /// tags.
    pub group: Option<TagGroup>,
    /// A framework image: what it installs, and the Miniconda cell it builds on.
    pub framework: Option<Box<family::Framework>>,
    /// An image of a user-defined family: what its layer adds, and the cell it builds on.
    pub custom: Option<Box<custom::Layer>>,
}

impl Cell {
    pub fn primary_tag(&self) -> &str {
        &self.tags[0]
    }

    /// `linux/amd64`.
    pub fn platform(&self) -> &str {
        &self.coord.platform
    }

    /// The installer's arch word for the platform (`x86_64`).
    pub fn arch(&self) -> &str {
        crate::coord::installer_arch(&self.coord.platform).unwrap_or("")
    }

    /// The tag its own image carries on its engine (and is verified and pushed under):
    /// the platform tag in a tag group, else the primary tag. A group's shared tags
    /// name an image index, which exists only in a registry.
    pub fn local_tag(&self) -> &str {
        self.group
            .as_ref()
            .map_or_else(|| self.primary_tag(), |g| g.platform_tag.as_str())
    }

    /// The id of the cell whose image it builds on (a framework or family image's
    /// parent).
    pub fn parent(&self) -> Option<&str> {
        match (&self.framework, &self.custom) {
            (Some(f), _) => Some(f.parent.as_str()),
            (None, Some(l)) => Some(l.parent.as_str()),
            (None, None) => None,
        }
    }

    /// Whether it is a layer on another cell's image (not built from a base).
    pub fn is_layer(&self) -> bool {
        self.framework.is_some() || self.custom.is_some()
    }

    /// Every tag it carries on its engine.
    pub fn local_tags(&self) -> Vec<String> {
        match &self.group {
            Some(g) => vec![g.platform_tag.clone()],
            None => self.tags.clone(),
        }
    }

    /// The cells whose base digests make its identity: its tag group's members (their
    /// ids and platforms), or itself.
    pub fn identity_members(&self) -> Vec<(&str, &str)> {
        match &self.group {
            Some(g) => g
                .members
                .iter()
                .map(|m| (m.id.as_str(), m.platform.as_str()))
                .collect(),
            None => vec![(self.id.as_str(), self.platform())],
        }
    }

    /// The installers its context carries: its group's, one per platform, or its own.
    pub fn context_installers(&self) -> impl Iterator<Item = (&str, &InstallerRef)> {
        let members = self.group.as_ref().map_or(&[][..], |g| &g.members[..]);
        let own = self
            .group
            .is_none()
            .then(|| (self.arch(), &*self.installer));
        members
            .iter()
            .map(|m| (m.arch.as_str(), &m.installer))
            .chain(own)
    }
}

/// Cells that differ only in platform share their tags: in the registry, each tag is one
/// image index over the members' images, which are pushed under their platform tags.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct TagGroup {
    /// The shared primary tag without the repository (`conda3-python3.11-ubuntu22.04`).
    pub name: String,
    /// This member's own tag, `REPO:NAME-arm64`.
    pub platform_tag: String,
    /// Every member (this one too), in plan order.
    pub members: Vec<GroupMember>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct GroupMember {
    pub id: String,
    pub platform: String,
    /// The installer's arch word (`aarch64`), as `uname -m` says it in the image.
    pub arch: String,
    pub installer: InstallerRef,
}

impl Subject for Cell {
    fn coordinate(&self) -> &Coordinate {
        &self.coord
    }
    fn id(&self) -> &str {
        &self.id
    }
    fn tags(&self) -> &[String] {
        &self.tags
    }
}

#[derive(Clone, Debug, Serialize, schemars::JsonSchema)]
pub struct Excluded {
    pub id: String,
    /// All of its coordinates (the fields below are what `plan` prints).
    #[serde(skip)]
    pub coord: Coordinate,
    pub python: String,
    pub base: String,
    pub platform: String,
    pub variant: String,
    pub reason: String,
    pub line: usize,
}

impl Excluded {
    /// The cell `id` at `coord`, left out by `rule` (its reason and line go with it).
    pub fn by_rule(id: String, coord: Coordinate, rule: &RawRule) -> Excluded {
        Excluded {
            id,
            python: coord.python.clone(),
            base: coord.base.clone(),
            platform: coord.platform.clone(),
            variant: coord.variant.clone(),
            coord,
            reason: rule
                .reason
                .as_ref()
                .map(|r| r.value.clone())
                .unwrap_or_default(),
            line: rule.at.line,
        }
    }
}

#[derive(Debug)]
pub struct Plan {
    pub matrix_file: PathBuf,
    pub matrix_sha256: String,
    pub settings: settings::Settings,
    pub cells: Vec<Cell>,
    pub excluded: Vec<Excluded>,
    pub warnings: Vec<Diagnostic>,
    pub date: String,
}

pub struct PlanOptions {
    /// `YYYYMMDD` for `{date}` in tags.
    pub date: String,
}

/// Plan from a file on disk.
pub fn load(path: &Path, opts: &PlanOptions) -> Result<Plan, Error> {
    load_with(path, opts, &|_, _| {})
}

/// What [`load_with`] tells its caller once the settings and the axes are read (and
/// valid), before the cells are expanded: the settings, and each (base reference,
/// platform) of the axes (an `include` may add more).
pub type AxesHook<'h> = dyn Fn(&settings::Settings, Vec<(String, String)>) + 'h;

/// [`load`], calling `on_axes` as soon as the bases are known, so that a caller can
/// ask the engines about them while the matrix expands.
pub fn load_with(path: &Path, opts: &PlanOptions, on_axes: &AxesHook) -> Result<Plan, Error> {
    let text = crate::config::read_text(path)?;
    let dir = path
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .map_or_else(|| PathBuf::from("."), Path::to_path_buf);
    plan_text_with(&text, &path.display().to_string(), &dir, opts, on_axes).map(|mut p| {
        p.matrix_file = path.to_path_buf();
        p
    })
}

/// A plan of `yaml` (as `m.yaml` in `dir`, on 2026-01-01) for unit tests, its
/// diagnostics one per line.
#[cfg(test)]
pub(crate) fn plan_for_tests(yaml: &str, dir: &Path) -> Result<Plan, String> {
    plan_text(
        yaml,
        "m.yaml",
        dir,
        &PlanOptions {
            date: "20260101".into(),
        },
    )
    .map_err(|e| match e {
        Error::InvalidMatrix(d) => d
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join("\n"),
        e => e.to_string(),
    })
}

/// Plan from text; `file` names it in diagnostics, `dir` resolves relative paths.
pub fn plan_text(text: &str, file: &str, dir: &Path, opts: &PlanOptions) -> Result<Plan, Error> {
    plan_text_with(text, file, dir, opts, &|_, _| {})
}

fn plan_text_with(
    text: &str,
    file: &str,
    dir: &Path,
    opts: &PlanOptions,
    on_axes: &AxesHook,
) -> Result<Plan, Error> {
    let mut d = Diags::new(file);
    let root = match yaml::parse(text) {
        Ok(n) => n,
        Err((at, msg)) => {
            d.error(at, "", msg);
            return Err(Error::InvalidMatrix(d.sorted()));
        }
    };
    let raw = raw::walk(&root, &mut d);
    check_version(&raw, &mut d);
    let settings = settings::read(&raw, dir, &mut d);
    let user_catalogue = axes::user_catalogue(&raw, &mut d);
    let axes = expand::Axes {
        bases: axes::bases(&raw, settings.sources.cuda_registry.as_deref(), &mut d),
        pythons: axes::pythons(&raw, &opts.date, &mut d),
        variants: axes::variants(&raw, &mut d),
        platforms: axes::platforms(&raw, &mut d),
    };
    tags::check_templates(&raw, &settings, &mut d);
    let entries = family::axis(&raw, &mut d);
    let families = custom::defs(&raw, &settings, dir, &mut d);
    check_rules(&raw.exclude, &mut d);
    let max = raw
        .max_cells
        .as_ref()
        .map_or(DEFAULT_MAX_CELLS, |m| m.value);
    let total = axes.product() + raw.include.len() as u64;
    if total > max {
        d.error(
            raw.max_cells.as_ref().map(|m| m.at).or(Some(Pos { line: 1, col: 1 })),
            "limits.max_cells",
            format!(
                "the matrix expands to {total} cells ({} bases × {} pythons × {} variants × {} platforms), over the cap of {max}; narrow it or raise `limits.max_cells`",
                axes.bases.len(), axes.pythons.len(), axes.variants.len(), axes.platforms.len()
            ),
        );
    }
    if d.has_errors() {
        return Err(Error::InvalidMatrix(d.sorted()));
    }
    on_axes(
        &settings,
        axes.bases
            .iter()
            .flat_map(|b| {
                axes.platforms
                    .iter()
                    .map(|p| (b.reference.clone(), p.name.clone()))
            })
            .collect(),
    );
    let (cells, mut excluded) = expand::cells(&raw, axes, &settings, &user_catalogue, &mut d);
    if d.has_errors() {
        return Err(Error::InvalidMatrix(d.sorted()));
    }
    let (cells, children_excluded) = family::grow(cells, &entries, &raw, &settings, &mut d);
    let orphans = family::children_of_excluded(&excluded, &entries);
    excluded.extend(children_excluded);
    excluded.extend(orphans);
    let (mut cells, family_excluded) = custom::grow(cells, &families, &raw, &mut d);
    excluded.extend(family_excluded);
    let orphans = custom::children_of_excluded(&excluded, &families);
    excluded.extend(orphans);
    if d.has_errors() {
        return Err(Error::InvalidMatrix(d.sorted()));
    }
    stack::check(&cells, &settings.pip, &raw, &mut d);
    tags::assign(&mut cells, &settings, &raw, &opts.date, &mut d);
    family::link(&mut cells);
    custom::link(&mut cells);
    if d.has_errors() {
        return Err(Error::InvalidMatrix(d.sorted()));
    }
    Ok(Plan {
        matrix_file: PathBuf::from(file),
        matrix_sha256: hex(&Sha256::digest(text.as_bytes())),
        settings,
        cells,
        excluded,
        warnings: d.sorted(),
        date: opts.date.clone(),
    })
}

fn check_version(raw: &raw::RawConfig, d: &mut Diags) {
    match &raw.version {
        Some(v) if v.value == "1" => {}
        Some(v) => d.error(
            Some(v.at),
            "version",
            format!(
                "unsupported matrix version `{}` (this tool reads version: 1)",
                v.value
            ),
        ),
        // present but unreadable: the reader said why
        None if raw.present.iter().any(|k| k == "version") => {}
        None => d.error(
            Some(Pos { line: 1, col: 1 }),
            "version",
            "missing `version: 1` at the top of the file",
        ),
    }
}

/// Exclusions naming a platform must name a real one (a glob may match several).
fn check_rules(rules: &[RawRule], d: &mut Diags) {
    for r in rules {
        for (k, v) in &r.fields {
            if *k == Key::Platform
                && !v.value.contains(['*', '?'])
                && !PLATFORMS.iter().any(|a| a.0 == v.value)
            {
                d.error(
                    Some(v.at),
                    format!("{}.platform", r.key),
                    format!("unknown platform `{}`", v.value),
                );
            }
        }
    }
}

/// Every field of the selector must match (globs `*` and `?` allowed).
pub fn rule_matches(rule: &RawRule, c: &Coordinate) -> bool {
    rule.fields.iter().all(|(k, pat)| c.matches(*k, &pat.value))
}

pub fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        s.push(char::from(DIGITS[usize::from(b >> 4)]));
        s.push(char::from(DIGITS[usize::from(b & 15)]));
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plan(yaml: &str) -> Result<Plan, Vec<String>> {
        let opts = PlanOptions {
            date: "20260101".into(),
        };
        plan_text(yaml, "m.yaml", Path::new("."), &opts).map_err(|e| match e {
            Error::InvalidMatrix(d) => d.iter().map(ToString::to_string).collect(),
            e => vec![e.to_string()],
        })
    }

    fn ids(p: &Plan) -> Vec<&str> {
        p.cells.iter().map(|c| c.id.as_str()).collect()
    }

    #[test]
    fn expansion_order_is_by_coordinates_with_versions_as_versions() {
        let p = plan("version: 1\nimage: {tag: \"conda3-python{python}-{base}-{arch}\"}\nbases: [nvidia/cuda:12.4.1-cudnn-devel-ubuntu22.04, ubuntu:24.04, ubuntu:22.04]\npython: [\"3.10\", \"3.9\"]\nplatforms: [linux/arm64, linux/amd64]\n").unwrap();
        assert_eq!(
            ids(&p),
            [
                "py3.9-ubuntu22.04-amd64",
                "py3.9-ubuntu22.04-arm64",
                "py3.10-ubuntu22.04-amd64",
                "py3.10-ubuntu22.04-arm64",
                "py3.9-ubuntu24.04-amd64",
                "py3.9-ubuntu24.04-arm64",
                "py3.10-ubuntu24.04-amd64",
                "py3.10-ubuntu24.04-arm64",
                "py3.9-cuda12.4.1-cudnn-devel-ubuntu22.04-amd64",
                "py3.9-cuda12.4.1-cudnn-devel-ubuntu22.04-arm64",
                "py3.10-cuda12.4.1-cudnn-devel-ubuntu22.04-amd64",
                "py3.10-cuda12.4.1-cudnn-devel-ubuntu22.04-arm64",
            ]
        );
        // the arm64 cells get aarch64 installers
        assert_eq!(
            p.cells[1].installer.file,
            "Miniconda3-py39_24.5.0-0-Linux-aarch64.sh"
        );
    }

    #[test]
    fn seed_tags_are_reproduced() {
        let p = plan("version: 1\nbases: [nvidia/cuda:12.1.0-cudnn8-devel-ubuntu22.04, ubuntu:22.04]\npython: [\"3.10\"]\n").unwrap();
        let tags: Vec<&str> = p.cells.iter().map(|c| c.primary_tag()).collect();
        assert_eq!(
            tags,
            [
                "miniconda:conda3-python3.10-ubuntu22.04",
                "miniconda:conda3-python3.10-cuda12.1.0-cudnn8-devel-ubuntu22.04"
            ]
        );
        assert_eq!(
            p.warnings.len(),
            1,
            "the EOL seed base is a warning, not an error"
        );
    }

    #[test]
    fn aliases_and_latest() {
        let p = plan("version: 1\nimage:\n  repository: reg.example:5000/ml/conda\n  aliases: [\"{tag}-{date}\"]\n  latest: {python: \"3.11\"}\nbases: [ubuntu:22.04]\npython: [\"3.10\", \"3.11\"]\n").unwrap();
        assert_eq!(
            p.cells[1].tags,
            [
                "reg.example:5000/ml/conda:conda3-python3.11-ubuntu22.04",
                "reg.example:5000/ml/conda:conda3-python3.11-ubuntu22.04-20260101",
                "reg.example:5000/ml/conda:latest"
            ]
        );
        let e = plan("version: 1\nimage:\n  latest: {os: ubuntu22.04}\nbases: [ubuntu:22.04]\npython: [\"3.10\", \"3.11\"]\n").unwrap_err();
        assert!(e[0].contains("matches 2 cells"), "{e:?}");
    }

    #[test]
    fn include_adds_cells_and_restores_excluded_ones() {
        let p = plan(
            "version: 1\nbases: [ubuntu:22.04]\npython: [\"3.10\", \"3.11\"]\nexclude:\n  - {python: \"3.11\", reason: r}\ninclude:\n  - {base: ubuntu:22.04, python: \"3.11\"}\n  - {base: ubuntu:22.04, python: \"3.10\", miniconda: \"24.4.0-0\"}\nimage:\n  tag: \"c{miniconda}-python{python}-{base}\"\n",
        )
        .unwrap();
        assert_eq!(
            ids(&p),
            [
                "py3.10-ubuntu22.04-amd64-conda24.4.0-0",
                "py3.10-ubuntu22.04-amd64-conda24.5.0-0",
                "py3.11-ubuntu22.04-amd64"
            ]
        );
        assert!(p.excluded.is_empty());
    }

    #[test]
    fn include_reuses_the_os_of_a_declared_base() {
        let yaml = "version: 1\nbases:\n  - ubuntu:22.04\n  - {image: \"reg.example/ml/os:1\", os: debian12}\npython: [\"3.11\"]\nexclude:\n  - {base: \"reg.example/ml/os:1\", reason: r}\ninclude:\n  - {base: \"reg.example/ml/os:1\", python: \"3.11\", miniconda: \"24.4.0-0\"}\nimage:\n  tag: \"c{miniconda}-python{python}-{base}\"\n";
        let p = plan(yaml).unwrap();
        let c = p
            .cells
            .iter()
            .find(|c| c.base.reference == "reg.example/ml/os:1")
            .unwrap();
        assert_eq!(c.base.os.slug(), "debian12");
        let e = plan(&yaml.replace(
            "include:\n  - {base: \"reg.example/ml/os:1\"",
            "include:\n  - {base: \"reg.example/ml/other:1\"",
        ))
        .unwrap_err();
        assert!(
            e[0].contains("takes `os` from a base declared in `bases:`"),
            "{e:?}"
        );
    }

    #[test]
    fn exclusions_carry_reasons_and_unused_ones_warn() {
        let p = plan("version: 1\nbases: [ubuntu:22.04, ubuntu:24.04]\npython: [\"3.10\"]\nexclude:\n  - {os: ubuntu24.04, reason: \"not yet\"}\n  - {cuda: \"12.*\", reason: \"no cuda here\"}\n").unwrap();
        assert_eq!(p.excluded.len(), 1);
        assert_eq!(p.excluded[0].reason, "not yet");
        assert_eq!(p.excluded[0].line, 5);
        assert!(p
            .warnings
            .iter()
            .any(|w| w.message.contains("matches no cell")));
    }

    #[test]
    fn every_error_is_reported_at_once() {
        let e = plan("version: 1\nbases: [ubuntu:18.04, \"nvidia/cuda:12.4.1-cudnn9-devel-ubuntu22.04\"]\npython: [\"3.10\", \"2.7\"]\npackages:\n  pip: [\"a b\"]\n").unwrap_err();
        assert_eq!(e.len(), 4, "{e:#?}");
        for want in [
            "`ubuntu:18.04`",
            "cuDNN token `cudnn9`",
            "Python 2.7 is not offered",
            "`a b` is not a plain pip requirement",
        ] {
            assert!(e.iter().any(|x| x.contains(want)), "missing {want}: {e:#?}");
        }
    }

    #[test]
    fn the_default_release_is_the_documented_one() {
        assert_eq!(axes::default_release().to_string(), DEFAULT_MINICONDA);
    }
}
