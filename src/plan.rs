//! The planner: `matrix.yaml` → a complete, validated [`Plan`].
//!
//! Everything `build` will do is decided here: each cell's base, Python, Miniconda
//! installer (name, SHA256, download URLs), platform, variant and tags. The plan is
//! deterministic: cells sort by their coordinates (versions as versions), and a
//! cell's id is made from its coordinates, so reordering the YAML changes neither.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::Serialize;
use sha2::{Digest, Sha256};

use crate::base::{self, Base};
use crate::catalogue::Catalogue;
use crate::diag::{Diagnostic, Diags, Pos, Sp};
use crate::raw::{self, RawConfig, RawRule};
use crate::reference;
use crate::settings::{self, check_apt, check_pip, Settings};
use crate::version::{CondaRelease, PyVersion};
use crate::yaml;

/// The seed's Miniconda release, used when `miniconda` is not given.
pub const DEFAULT_MINICONDA: &str = "24.5.0-0";

fn default_release() -> CondaRelease {
    CondaRelease {
        version: semver::Version::new(24, 5, 0),
        build: Some(0),
    }
}
pub const DEFAULT_MAX_CELLS: u64 = 1000;

#[derive(Clone, Debug, Serialize)]
pub struct Variant {
    pub name: String,
    pub pip: Vec<String>,
    pub apt: Vec<String>,
}

#[derive(Clone, Debug, Serialize)]
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
    pub python: PyVersion,
    pub miniconda: CondaRelease,
    pub base: Arc<Base>,
    pub platform: String,
    pub arch: String,
    pub variant: Arc<Variant>,
    pub installer: InstallerRef,
    /// Full references; the first is the primary tag.
    pub tags: Vec<String>,
}

impl Cell {
    pub fn primary_tag(&self) -> &str {
        &self.tags[0]
    }

    /// Coordinates by name, for filters, rules and labels.
    pub fn coordinate(&self, key: &str) -> Option<String> {
        Some(match key {
            "python" => self.python.to_string(),
            "miniconda" => self.miniconda.to_string(),
            "base" => self.base.reference.clone(),
            "cuda" => self
                .base
                .cuda
                .as_ref()
                .map_or("none".into(), |c| c.version.to_string()),
            "cudnn" => self
                .base
                .cuda
                .as_ref()
                .and_then(|c| c.cudnn.clone())
                .unwrap_or_else(|| "none".into()),
            "flavor" => self
                .base
                .cuda
                .as_ref()
                .map_or("none".into(), |c| c.flavor.clone()),
            "os" => self.base.os.slug(),
            "platform" => self.platform.clone(),
            "arch" => self.arch.clone(),
            "variant" => self.variant.name.clone(),
            "id" => self.id.clone(),
            _ => return None,
        })
    }
}

#[derive(Clone, Debug, Serialize)]
pub struct Excluded {
    pub id: String,
    pub python: String,
    pub base: String,
    pub platform: String,
    pub variant: String,
    pub reason: String,
    pub line: usize,
}

#[derive(Debug)]
pub struct Plan {
    pub matrix_file: PathBuf,
    pub matrix_sha256: String,
    pub settings: Settings,
    pub cells: Vec<Cell>,
    pub excluded: Vec<Excluded>,
    pub warnings: Vec<Diagnostic>,
    pub date: String,
}

#[derive(Debug, thiserror::Error)]
pub enum PlanError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("{}", render_diags(.0))]
    Invalid(Vec<Diagnostic>),
}

fn render_diags(d: &[Diagnostic]) -> String {
    let errors = d
        .iter()
        .filter(|x| x.severity == crate::diag::Severity::Error)
        .count();
    let mut s: String = d.iter().map(|x| format!("{x}\n")).collect();
    s.push_str(&format!(
        "{errors} error{} in the matrix; nothing was built",
        if errors == 1 { "" } else { "s" }
    ));
    s
}

pub struct PlanOptions {
    /// `YYYYMMDD` for `{date}` in tags.
    pub date: String,
}

/// Plan from a file on disk.
pub fn load(path: &Path, opts: &PlanOptions) -> Result<Plan, PlanError> {
    let text = std::fs::read_to_string(path).map_err(|source| PlanError::Read {
        path: path.display().to_string(),
        source,
    })?;
    let dir = path
        .parent()
        .map_or_else(|| PathBuf::from("."), Path::to_path_buf);
    let dir = if dir.as_os_str().is_empty() {
        PathBuf::from(".")
    } else {
        dir
    };
    plan_text(&text, &path.display().to_string(), &dir, opts).map(|mut p| {
        p.matrix_file = path.to_path_buf();
        p
    })
}

const ARCHES: &[(&str, &str)] = &[
    ("linux/amd64", "x86_64"),
    ("linux/arm64", "aarch64"),
    ("linux/ppc64le", "ppc64le"),
    ("linux/s390x", "s390x"),
];

const TAG_KEYS: &[&str] = &[
    "python",
    "py",
    "miniconda",
    "base",
    "os",
    "cuda",
    "cudnn",
    "flavor",
    "variant",
    "arch",
    "date",
];

struct Coord<'a> {
    base_i: usize,
    py_i: usize,
    variant_i: usize,
    platform_i: usize,
    rule: Option<&'a RawRule>,
}

/// Plan from text; `file` names it in diagnostics, `dir` resolves relative paths.
pub fn plan_text(
    text: &str,
    file: &str,
    dir: &Path,
    opts: &PlanOptions,
) -> Result<Plan, PlanError> {
    let mut d = Diags::new(file);
    let root = match yaml::parse(text) {
        Ok(n) => n,
        Err((at, msg)) => {
            d.error(at, "", msg);
            return Err(PlanError::Invalid(d.sorted()));
        }
    };
    let raw = raw::walk(&root, &mut d);
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
        None => d.error(
            Some(Pos { line: 1, col: 1 }),
            "version",
            "missing `version: 1` at the top of the file",
        ),
    }
    let settings = settings::read(&raw, dir, &mut d);
    let catalogue = extended_catalogue(&raw, &mut d);
    let bases = read_bases(&raw, settings.cuda_registry.as_deref(), &mut d);
    let pythons = read_pythons(&raw, &mut d);
    let platforms = read_platforms(&raw, &mut d);
    let variants = read_variants(&raw, &mut d);
    check_template(
        raw.image.tag.as_ref(),
        &settings.tag_template,
        "image.tag",
        TAG_KEYS,
        &mut d,
    );
    let mut alias_keys = TAG_KEYS.to_vec();
    alias_keys.push("tag");
    for (i, a) in raw.image.aliases.iter().enumerate() {
        check_template(
            Some(a),
            &a.value,
            &format!("image.aliases[{i}]"),
            &alias_keys,
            &mut d,
        );
    }
    check_rules(&raw.exclude, &mut d);

    let max = raw
        .max_cells
        .as_ref()
        .map_or(DEFAULT_MAX_CELLS, |m| m.value);
    let product =
        bases.len() as u64 * pythons.len() as u64 * variants.len() as u64 * platforms.len() as u64;
    if product + raw.include.len() as u64 > max {
        d.error(
            raw.max_cells.as_ref().map(|m| m.at).or(Some(Pos { line: 1, col: 1 })),
            "limits.max_cells",
            format!(
                "the matrix expands to {} cells ({} bases × {} pythons × {} variants × {} platforms), over the cap of {max}; narrow it or raise `limits.max_cells`",
                product + raw.include.len() as u64, bases.len(), pythons.len(), variants.len(), platforms.len()
            ),
        );
        return Err(PlanError::Invalid(d.sorted()));
    }
    if d.has_errors() {
        return Err(PlanError::Invalid(d.sorted()));
    }

    // Cross product, then exclusions (first matching rule wins), then inclusions.
    let mut coords: Vec<Coord> = Vec::new();
    for bi in 0..bases.len() {
        for pi in 0..pythons.len() {
            for vi in 0..variants.len() {
                for fi in 0..platforms.len() {
                    coords.push(Coord {
                        base_i: bi,
                        py_i: pi,
                        variant_i: vi,
                        platform_i: fi,
                        rule: None,
                    });
                }
            }
        }
    }
    let mut bases = bases;
    let mut pythons = pythons;
    let mut rule_hits = vec![0usize; raw.exclude.len()];
    for c in &mut coords {
        let probe = probe_cell(
            &bases[c.base_i].1,
            &pythons[c.py_i],
            &variants[c.variant_i],
            &platforms[c.platform_i],
        );
        if let Some((ri, rule)) = raw
            .exclude
            .iter()
            .enumerate()
            .find(|(_, r)| rule_matches(r, &probe))
        {
            rule_hits[ri] += 1;
            c.rule = Some(rule);
        }
    }
    for (hits, rule) in rule_hits.iter().zip(&raw.exclude) {
        if *hits == 0 {
            d.warn(Some(rule.at), &rule.key, "this exclusion matches no cell");
        }
    }
    for inc in &raw.include {
        if let Some(c) = include_coord(
            inc,
            &mut bases,
            &mut pythons,
            &variants,
            &platforms,
            settings.cuda_registry.as_deref(),
            &mut d,
        ) {
            let dup = coords.iter().any(|x| {
                x.rule.is_none()
                    && x.base_i == c.base_i
                    && x.py_i == c.py_i
                    && x.variant_i == c.variant_i
                    && x.platform_i == c.platform_i
            });
            if dup {
                d.warn(
                    Some(inc.at),
                    &inc.key,
                    "this inclusion names a cell the matrix already has",
                );
            } else {
                // An inclusion adds a cell; it also brings back a cell an exclusion removed.
                coords.retain(|x| {
                    !(x.rule.is_some()
                        && x.base_i == c.base_i
                        && x.py_i == c.py_i
                        && x.variant_i == c.variant_i
                        && x.platform_i == c.platform_i)
                });
                coords.push(c);
            }
        }
    }

    let mut cells = Vec::new();
    let mut excluded = Vec::new();
    let mut installer_errors: BTreeMap<String, ()> = BTreeMap::new();
    for c in &coords {
        let (base_key, base) = &bases[c.base_i];
        let py = &pythons[c.py_i];
        let variant = &variants[c.variant_i];
        let (platform, arch) = &platforms[c.platform_i];
        let id = cell_id(py.0, base, variant, platform);
        if let Some(rule) = c.rule {
            excluded.push(Excluded {
                id,
                python: py.0.to_string(),
                base: base.reference.clone(),
                platform: platform.clone(),
                variant: variant.name.clone(),
                reason: rule
                    .reason
                    .as_ref()
                    .map(|r| r.value.clone())
                    .unwrap_or_default(),
                line: rule.at.line,
            });
            continue;
        }
        let _ = base_key;
        match installer_for(py, arch, &catalogue, &settings) {
            Ok(installer) => cells.push(Cell {
                id,
                python: py.0,
                miniconda: py.1.clone(),
                base: base.clone(),
                platform: platform.clone(),
                arch: arch.clone(),
                variant: variant.clone(),
                installer,
                tags: Vec::new(),
            }),
            Err(msg) => {
                if installer_errors.insert(msg.clone(), ()).is_none() {
                    d.error(Some(py.2), &py.3, msg);
                }
            }
        }
    }
    if d.has_errors() {
        return Err(PlanError::Invalid(d.sorted()));
    }
    if cells.is_empty() {
        let why = if coords.is_empty() {
            "no bases or no python versions are listed".to_string()
        } else {
            if coords.len() == 1 {
                "its only cell is excluded".to_string()
            } else {
                format!("all {} cells are excluded", coords.len())
            }
        };
        d.error(
            Some(Pos { line: 1, col: 1 }),
            "",
            format!("the matrix is empty: {why}"),
        );
        return Err(PlanError::Invalid(d.sorted()));
    }
    cells.sort_by_cached_key(sort_key);
    excluded.sort_by(|a, b| a.id.cmp(&b.id));
    disambiguate_ids(&mut cells);
    let mut seen_ids: HashMap<String, usize> = HashMap::new();
    for (i, c) in cells.iter().enumerate() {
        if let Some(j) = seen_ids.insert(c.id.clone(), i) {
            d.error(
                None,
                "bases",
                format!(
                    "cells {j} and {i} have the same coordinates (id `{}`)",
                    c.id
                ),
            );
        }
    }
    assign_tags(&mut cells, &settings, &raw, &opts.date, &mut d);
    if d.has_errors() {
        return Err(PlanError::Invalid(d.sorted()));
    }
    let warnings = d.sorted();
    Ok(Plan {
        matrix_file: PathBuf::from(file),
        matrix_sha256: hex(&Sha256::digest(text.as_bytes())),
        settings,
        cells,
        excluded,
        warnings,
        date: opts.date.clone(),
    })
}

pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Built-in catalogue plus the user's `installers:` entries.
fn extended_catalogue(raw: &RawConfig, d: &mut Diags) -> Catalogue {
    let mut cat = Catalogue::default();
    let builtin = Catalogue::builtin();
    for inst in &raw.installers {
        let sha = inst.sha256.value.to_ascii_lowercase();
        if sha.len() != 64 || !sha.bytes().all(|c| c.is_ascii_hexdigit()) {
            d.error(
                Some(inst.sha256.at),
                format!("{}.sha256", inst.key),
                format!("`{}` is not a SHA256 (64 hex digits)", inst.sha256.value),
            );
            continue;
        }
        if let Some(known) = builtin.get(&inst.file.value) {
            if known.sha256 != sha {
                d.warn(
                    Some(inst.sha256.at),
                    format!("{}.sha256", inst.key),
                    format!(
                        "overrides the catalogue's SHA256 for {} ({}…)",
                        inst.file.value,
                        &known.sha256[..12]
                    ),
                );
            }
        }
        if !cat.add(&inst.file.value, &sha) {
            d.error(
                Some(inst.file.at),
                format!("{}.file", inst.key),
                format!("`{}` is not a Miniconda installer name (Miniconda3-py310_24.5.0-0-Linux-x86_64.sh)", inst.file.value),
            );
        }
    }
    cat
}

fn installer_for(
    py: &(PyVersion, CondaRelease, Pos, String),
    arch: &str,
    user: &Catalogue,
    s: &Settings,
) -> Result<InstallerRef, String> {
    let (pyv, release, _, _) = py;
    let file = release.installer_file(*pyv, arch);
    let builtin = Catalogue::builtin();
    let sha = match user.get(&file).or_else(|| builtin.get(&file)) {
        Some(i) => i.sha256.clone(),
        None => {
            let offered = builtin.pythons_of(release, arch);
            return Err(if !offered.is_empty() {
                let list: Vec<String> = offered.iter().map(ToString::to_string).collect();
                let last = builtin
                    .latest_for(*pyv, arch)
                    .map(|r| format!("; the newest release with Python {pyv} is \"{r}\", set `miniconda: \"{r}\"` on this entry"))
                    .unwrap_or_default();
                format!("Miniconda {release} does not offer Python {pyv} on {arch} (it offers {}){last}", list.join(", "))
            } else if builtin.knows_release(release) {
                format!("Miniconda {release} has no {arch} installer in the catalogue ({file})")
            } else {
                format!(
                    "installer {file} is not in the catalogue (data/miniconda-installers.tsv); if it exists, add it under `installers:` with its published sha256"
                )
            });
        }
    };
    let local = s
        .installer_dir
        .as_ref()
        .map(|d| d.join(&file))
        .filter(|p| p.is_file());
    Ok(InstallerRef {
        urls: s.mirrors.iter().map(|m| format!("{m}{file}")).collect(),
        file,
        sha256: sha,
        local,
    })
}

fn read_bases(
    raw: &RawConfig,
    cuda_registry: Option<&str>,
    d: &mut Diags,
) -> Vec<(String, Arc<Base>)> {
    let mut out: Vec<(String, Arc<Base>)> = Vec::new();
    if raw.bases.is_empty() && !raw.present.iter().any(|k| k == "bases") {
        d.error(Some(Pos { line: 1, col: 1 }), "bases", "list at least one base image (for example nvidia/cuda:12.1.1-cudnn8-devel-ubuntu22.04 or ubuntu:22.04)");
    }
    for b in &raw.bases {
        match base::parse(&b.image.value, b.os.as_ref().map(Sp::as_str), cuda_registry) {
            Ok((base, notes)) => {
                for w in notes.warnings {
                    d.warn(Some(b.image.at), &b.key, w);
                }
                if out.iter().any(|(_, x)| x.reference == base.reference) {
                    d.error(
                        Some(b.image.at),
                        &b.key,
                        format!("base `{}` is listed twice", base.reference),
                    );
                    continue;
                }
                out.push((b.key.clone(), Arc::new(base)));
            }
            Err(e) => d.error(Some(b.image.at), &b.key, e),
        }
    }
    out
}

type PyEntry = (PyVersion, CondaRelease, Pos, String);

fn read_pythons(raw: &RawConfig, d: &mut Diags) -> Vec<PyEntry> {
    let default = match &raw.miniconda {
        Some(m) => match CondaRelease::parse(&m.value) {
            Ok(r) => r,
            Err(e) => {
                d.error(Some(m.at), "miniconda", e);
                return Vec::new();
            }
        },
        None => default_release(),
    };
    if raw.python.is_empty() && !raw.present.iter().any(|k| k == "python") {
        d.error(
            Some(Pos { line: 1, col: 1 }),
            "python",
            "list at least one Python version (quoted, for example \"3.10\")",
        );
    }
    let mut out: Vec<PyEntry> = Vec::new();
    for p in &raw.python {
        let pyv = match PyVersion::parse(&p.version.value) {
            Ok(v) => v,
            Err(e) => {
                d.error(Some(p.version.at), &p.key, e);
                continue;
            }
        };
        let release = match &p.miniconda {
            Some(m) => match CondaRelease::parse(&m.value) {
                Ok(r) => r,
                Err(e) => {
                    d.error(Some(m.at), format!("{}.miniconda", p.key), e);
                    continue;
                }
            },
            None => default.clone(),
        };
        if out.iter().any(|x| x.0 == pyv) {
            d.error(
                Some(p.version.at),
                &p.key,
                format!("Python {pyv} is listed twice"),
            );
            continue;
        }
        out.push((pyv, release, p.version.at, p.key.clone()));
    }
    out
}

fn read_platforms(raw: &RawConfig, d: &mut Diags) -> Vec<(String, String)> {
    if raw.platforms.is_empty() {
        return vec![("linux/amd64".into(), "x86_64".into())];
    }
    let mut out: Vec<(String, String)> = Vec::new();
    for p in &raw.platforms {
        match ARCHES.iter().find(|(name, _)| *name == p.value) {
            Some((name, arch)) if !out.iter().any(|(n, _)| n == name) => {
                out.push(((*name).into(), (*arch).into()))
            }
            Some(_) => d.error(
                Some(p.at),
                "platforms",
                format!("platform `{}` is listed twice", p.value),
            ),
            None => {
                let names: Vec<&str> = ARCHES.iter().map(|a| a.0).collect();
                d.error(
                    Some(p.at),
                    "platforms",
                    format!(
                        "unknown platform `{}` (expected one of: {})",
                        p.value,
                        names.join(", ")
                    ),
                );
            }
        }
    }
    out
}

fn read_variants(raw: &RawConfig, d: &mut Diags) -> Vec<Arc<Variant>> {
    if raw.variants.is_empty() {
        return vec![Arc::new(Variant {
            name: "default".into(),
            pip: Vec::new(),
            apt: Vec::new(),
        })];
    }
    let mut out: Vec<Arc<Variant>> = Vec::new();
    for v in &raw.variants {
        let n = &v.name.value;
        let ok = !n.is_empty()
            && n.len() <= 32
            && n.as_bytes()[0].is_ascii_lowercase()
            && n.bytes()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == b'-');
        if !ok {
            d.error(Some(v.name.at), format!("{}.name", v.key), format!("`{n}` is not a variant name (lowercase letters, digits and `-`, starting with a letter)"));
            continue;
        }
        if out.iter().any(|x| &x.name == n) {
            d.error(
                Some(v.name.at),
                format!("{}.name", v.key),
                format!("variant `{n}` is defined twice"),
            );
            continue;
        }
        let mut ok_all = true;
        for p in &v.pip {
            if let Err(e) = check_pip(&p.value) {
                d.error(Some(p.at), format!("{}.pip", v.key), e);
                ok_all = false;
            }
        }
        for p in &v.apt {
            if let Err(e) = check_apt(&p.value) {
                d.error(Some(p.at), format!("{}.apt", v.key), e);
                ok_all = false;
            }
        }
        if ok_all {
            out.push(Arc::new(Variant {
                name: n.clone(),
                pip: v.pip.iter().map(|p| p.value.clone()).collect(),
                apt: v.apt.iter().map(|p| p.value.clone()).collect(),
            }));
        }
    }
    out
}

fn check_template(
    at: Option<&Sp<String>>,
    template: &str,
    key: &str,
    allowed: &[&str],
    d: &mut Diags,
) {
    let pos = at.map(|a| a.at);
    let mut rest = template;
    while let Some(open) = rest.find('{') {
        let Some(close) = rest[open..].find('}') else {
            d.error(pos, key, format!("unclosed `{{` in `{template}`"));
            return;
        };
        let name = &rest[open + 1..open + close];
        if !allowed.contains(&name) {
            let hint = crate::diag::did_you_mean(name, allowed)
                .map(|s| format!("did you mean `{{{s}}}`? "))
                .unwrap_or_default();
            d.error(
                pos,
                key,
                format!(
                    "unknown placeholder `{{{name}}}` ({hint}expected one of: {})",
                    allowed
                        .iter()
                        .map(|a| format!("{{{a}}}"))
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
            );
        }
        rest = &rest[open + close + 1..];
    }
    if rest.contains('}') {
        d.error(pos, key, format!("unmatched `}}` in `{template}`"));
    }
}

pub fn expand(template: &str, values: &dyn Fn(&str) -> String) -> String {
    let mut out = String::with_capacity(template.len() + 32);
    let mut rest = template;
    while let Some(open) = rest.find('{') {
        out.push_str(&rest[..open]);
        match rest[open..].find('}') {
            Some(close) => {
                out.push_str(&values(&rest[open + 1..open + close]));
                rest = &rest[open + close + 1..];
            }
            None => {
                out.push_str(&rest[open..]);
                rest = "";
            }
        }
    }
    out.push_str(rest);
    out
}

fn tag_value(c: &Cell, key: &str, date: &str) -> String {
    match key {
        "py" => c.python.tag(),
        "date" => date.to_string(),
        "base" => c.base.slug().to_string(),
        "cuda" => c
            .base
            .cuda
            .as_ref()
            .map_or(String::new(), |x| x.version.to_string()),
        "cudnn" => c
            .base
            .cuda
            .as_ref()
            .and_then(|x| x.cudnn.clone())
            .unwrap_or_default(),
        "flavor" => c
            .base
            .cuda
            .as_ref()
            .map_or(String::new(), |x| x.flavor.clone()),
        other => c.coordinate(other).unwrap_or_default(),
    }
}

fn assign_tags(cells: &mut [Cell], s: &Settings, raw: &RawConfig, date: &str, d: &mut Diags) {
    let tag_at = raw.image.tag.as_ref().map(|t| t.at);
    let mut owners: HashMap<String, String> = HashMap::new();
    let mut reported = 0;
    for c in cells.iter_mut() {
        let tag = expand(&s.tag_template, &|k| tag_value(c, k, date));
        if let Err(e) = reference::check_tag(&tag) {
            if reported < 5 {
                d.error(tag_at, "image.tag", format!("cell {}: {e}", c.id));
            }
            reported += 1;
            continue;
        }
        let mut tags = vec![format!("{}:{tag}", s.repository)];
        for (i, a) in s.alias_templates.iter().enumerate() {
            let alias = expand(a, &|k| {
                if k == "tag" {
                    tag.clone()
                } else {
                    tag_value(c, k, date)
                }
            });
            match reference::check_tag(&alias) {
                Ok(()) => tags.push(format!("{}:{alias}", s.repository)),
                Err(e) => d.error(
                    raw.image.aliases.get(i).map(|a| a.at),
                    format!("image.aliases[{i}]"),
                    format!("cell {}: {e}", c.id),
                ),
            }
        }
        for t in &tags {
            if let Some(other) = owners.insert(t.clone(), c.id.clone()) {
                if other != c.id {
                    d.error(
                        tag_at,
                        "image.tag",
                        format!("tag `{t}` is made by both cell {other} and cell {}; add a placeholder that tells them apart ({{variant}}, {{arch}}, {{miniconda}}…)", c.id),
                    );
                }
            }
        }
        c.tags = tags;
    }
    if reported > 5 {
        d.error(
            tag_at,
            "image.tag",
            format!("…and {} more cells with an invalid tag", reported - 5),
        );
    }
    if let Some(rule) = &raw.image.latest {
        let hits: Vec<usize> = cells
            .iter()
            .enumerate()
            .filter(|(_, c)| rule_matches_cell(rule, c))
            .map(|(i, _)| i)
            .collect();
        match hits.as_slice() {
            [one] => {
                let t = format!("{}:latest", s.repository);
                if let Some(other) = owners.get(&t) {
                    d.error(
                        Some(rule.at),
                        "image.latest",
                        format!("`latest` is already made by cell {other}"),
                    );
                }
                cells[*one].tags.push(t);
            }
            [] => d.error(
                Some(rule.at),
                "image.latest",
                "this selector matches no cell; `latest` must name exactly one",
            ),
            many => d.error(
                Some(rule.at),
                "image.latest",
                format!(
                    "this selector matches {} cells ({}); `latest` must name exactly one",
                    many.len(),
                    many.iter()
                        .map(|i| cells[*i].id.as_str())
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
            ),
        }
    }
}

/// `py3.10-cuda12.1.0-cudnn8-devel-ubuntu22.04-amd64`, plus `-VARIANT` for named variants.
fn cell_id(py: PyVersion, base: &Base, variant: &Variant, platform: &str) -> String {
    let arch = platform.rsplit('/').next().unwrap_or(platform);
    let mut id = format!("py{py}-{}-{arch}", base.slug());
    if variant.name != "default" {
        id.push('-');
        id.push_str(&variant.name);
    }
    id
}

/// Cells whose readable ids collide (same Python, OS slug, arch and variant) get the
/// Miniconda release and, if still needed, a short hash of the base reference: both
/// are coordinates, so ids stay independent of the order of the YAML.
fn disambiguate_ids(cells: &mut [Cell]) {
    for round in 0..2 {
        let mut count: HashMap<String, usize> = HashMap::new();
        for c in cells.iter() {
            *count.entry(c.id.clone()).or_default() += 1;
        }
        for c in cells.iter_mut() {
            if count[&c.id] > 1 {
                if round == 0 {
                    c.id = format!("{}-conda{}", c.id, c.miniconda);
                } else {
                    let h = hex(&Sha256::digest(c.base.reference.as_bytes()));
                    c.id = format!("{}-{}", c.id, &h[..6]);
                }
            }
        }
    }
}

type SortKey = (
    u8,
    String,
    Option<semver::Version>,
    Option<String>,
    Option<String>,
    PyVersion,
    CondaRelease,
    String,
    String,
    String,
);

fn sort_key(c: &Cell) -> SortKey {
    let os = &c.base.os;
    let osv = os
        .version
        .split('.')
        .map(|p| format!("{p:0>4}"))
        .collect::<Vec<_>>()
        .join(".");
    (
        u8::from(c.base.cuda.is_some()),
        format!("{:?}{osv}", os.family),
        c.base.cuda.as_ref().map(|x| x.version.clone()),
        c.base.cuda.as_ref().map(|x| x.flavor.clone()),
        c.base.cuda.as_ref().and_then(|x| x.cudnn.clone()),
        c.python,
        c.miniconda.clone(),
        c.variant.name.clone(),
        c.platform.clone(),
        c.base.reference.clone(),
    )
}

/// The coordinates of a not-yet-planned cell, for rule matching.
fn probe_cell(
    base: &Arc<Base>,
    py: &PyEntry,
    variant: &Arc<Variant>,
    platform: &(String, String),
) -> Cell {
    Cell {
        id: String::new(),
        python: py.0,
        miniconda: py.1.clone(),
        base: base.clone(),
        platform: platform.0.clone(),
        arch: platform.1.clone(),
        variant: variant.clone(),
        installer: InstallerRef {
            file: String::new(),
            sha256: String::new(),
            urls: Vec::new(),
            local: None,
        },
        tags: Vec::new(),
    }
}

fn rule_matches(rule: &RawRule, probe: &Cell) -> bool {
    rule_matches_cell(rule, probe)
}

/// Every field of the rule must match (globs `*` and `?` allowed).
pub fn rule_matches_cell(rule: &RawRule, c: &Cell) -> bool {
    rule.fields
        .iter()
        .all(|(k, pat)| field_matches(c, k, &pat.value))
}

pub fn field_matches(c: &Cell, key: &str, pattern: &str) -> bool {
    let Some(v) = c.coordinate(key) else {
        return false;
    };
    if wildmatch::WildMatch::new(pattern).matches(&v) {
        return true;
    }
    // `base` also matches the base's slug, and versions match by prefix component
    // (`cuda: "12"` selects every 12.x).
    match key {
        "base" => wildmatch::WildMatch::new(pattern).matches(c.base.slug()),
        "cuda" | "python" | "miniconda" => {
            v.starts_with(&format!("{pattern}.")) || v.starts_with(&format!("{pattern}-"))
        }
        _ => false,
    }
}

fn check_rules(rules: &[RawRule], d: &mut Diags) {
    for r in rules {
        for (k, v) in &r.fields {
            if k == "platform"
                && !v.value.contains(['*', '?'])
                && !ARCHES.iter().any(|a| a.0 == v.value)
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

fn include_coord<'a>(
    inc: &'a RawRule,
    bases: &mut Vec<(String, Arc<Base>)>,
    pythons: &mut Vec<PyEntry>,
    variants: &[Arc<Variant>],
    platforms: &[(String, String)],
    cuda_registry: Option<&str>,
    d: &mut Diags,
) -> Option<Coord<'a>> {
    let get = |k: &str| inc.fields.iter().find(|(n, _)| n == k).map(|(_, v)| v);
    let (Some(base_s), Some(py_s)) = (get("base"), get("python")) else {
        d.error(
            Some(inc.at),
            &inc.key,
            "an inclusion names a whole cell: it needs at least `base` and `python`",
        );
        return None;
    };
    // A base declared in `bases:` (perhaps with its `os`) is reused as declared; an
    // include cannot carry `os` itself.
    let declared = bases
        .iter()
        .find(|(_, b)| b.reference == base_s.value)
        .map(|(_, b)| (**b).clone());
    let parsed = match declared {
        Some(b) => Ok((b, base::BaseNotes::default())),
        None => base::parse(&base_s.value, None, cuda_registry),
    };
    let base = match parsed {
        Ok((b, notes)) => {
            for w in notes.warnings {
                d.warn(Some(base_s.at), format!("{}.base", inc.key), w);
            }
            b
        }
        Err(e) => {
            d.error(
                Some(base_s.at),
                format!("{}.base", inc.key),
                format!("{e} (an inclusion takes `os` from a base declared in `bases:`)"),
            );
            return None;
        }
    };
    let pyv = match PyVersion::parse(&py_s.value) {
        Ok(v) => v,
        Err(e) => {
            d.error(Some(py_s.at), format!("{}.python", inc.key), e);
            return None;
        }
    };
    let release = match get("miniconda") {
        Some(m) => match CondaRelease::parse(&m.value) {
            Ok(r) => r,
            Err(e) => {
                d.error(Some(m.at), format!("{}.miniconda", inc.key), e);
                return None;
            }
        },
        None => match pythons.iter().find(|p| p.0 == pyv) {
            Some(p) => p.1.clone(),
            None => default_release(),
        },
    };
    let base_i = match bases
        .iter()
        .position(|(_, b)| b.reference == base.reference)
    {
        Some(i) => i,
        None => {
            bases.push((format!("{}.base", inc.key), Arc::new(base)));
            bases.len() - 1
        }
    };
    let py_i = match pythons.iter().position(|p| p.0 == pyv && p.1 == release) {
        Some(i) => i,
        None => {
            pythons.push((pyv, release, py_s.at, format!("{}.python", inc.key)));
            pythons.len() - 1
        }
    };
    let variant_i = match get("variant") {
        Some(v) => match variants.iter().position(|x| x.name == v.value) {
            Some(i) => i,
            None => {
                d.error(
                    Some(v.at),
                    format!("{}.variant", inc.key),
                    format!("no variant is named `{}`", v.value),
                );
                return None;
            }
        },
        None => 0,
    };
    let platform_i = match get("platform") {
        Some(p) => match platforms.iter().position(|x| x.0 == p.value) {
            Some(i) => i,
            None => {
                d.error(
                    Some(p.at),
                    format!("{}.platform", inc.key),
                    format!("platform `{}` is not in `platforms`", p.value),
                );
                return None;
            }
        },
        None => 0,
    };
    Some(Coord {
        base_i,
        py_i,
        variant_i,
        platform_i,
        rule: None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plan(yaml: &str) -> Result<Plan, Vec<String>> {
        let opts = PlanOptions {
            date: "20260101".into(),
        };
        plan_text(yaml, "m.yaml", Path::new("."), &opts).map_err(|e| match e {
            PlanError::Invalid(d) => d.iter().map(ToString::to_string).collect(),
            PlanError::Read { .. } => vec![e.to_string()],
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
        let e = plan("version: 1\nbases: [ubuntu:18.04, \"nvidia/cuda:12.4.1-cudnn9-devel-ubuntu22.04\"]\npython: [\"3.8\", \"2.7\"]\npackages:\n  pip: [\"a b\"]\n").unwrap_err();
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
        assert_eq!(default_release().to_string(), DEFAULT_MINICONDA);
    }

    #[test]
    fn templates_expand_known_placeholders() {
        assert_eq!(expand("a{x}b{y}", &|k| k.to_uppercase()), "aXbY");
        assert_eq!(
            expand("no placeholders", &|_| String::new()),
            "no placeholders"
        );
        assert_eq!(expand("open{", &|_| String::new()), "open{");
    }
}
