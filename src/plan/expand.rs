//! Expansion: the axes' cross product, then exclusions (first matching rule wins),
//! then inclusions, then one cell per remaining point with its installer, sorted by
//! coordinates (versions as versions).

use std::collections::BTreeSet;
use std::sync::Arc;

use crate::config::raw::{RawConfig, RawRule};
use crate::config::settings::Settings;
use crate::coord::{Coordinate, Key};
use crate::diag::{Diags, Pos};
use crate::plan::axes::{self, default_release, Platform, PyEntry};
use crate::plan::base::{self, Base};
use crate::plan::catalogue::Catalogue;
use crate::plan::version::{CondaRelease, PyVersion};
use crate::plan::{rule_matches, tags, Cell, Excluded, Variant};

/// The axes of a matrix, as read.
pub struct Axes {
    pub bases: Vec<Arc<Base>>,
    pub pythons: Vec<PyEntry>,
    pub variants: Vec<Arc<Variant>>,
    pub platforms: Vec<Platform>,
}

impl Axes {
    pub fn product(&self) -> u64 {
        self.bases.len() as u64
            * self.pythons.len() as u64
            * self.variants.len() as u64
            * self.platforms.len() as u64
    }

    fn coordinate(&self, p: &Point) -> Coordinate {
        coordinate(
            &self.pythons[p.py],
            &self.bases[p.base],
            &self.variants[p.variant],
            &self.platforms[p.platform].name,
        )
    }
}

/// A cell's coordinates from its parts.
pub fn coordinate(py: &PyEntry, base: &Base, variant: &Variant, platform: &str) -> Coordinate {
    Coordinate {
        python: py.version.to_string(),
        miniconda: py.release.to_string(),
        platform: platform.to_string(),
        variant: variant.name.clone(),
        ..base_coordinate(base)
    }
}

/// The coordinates a base decides (the image, its OS and CUDA); the rest empty.
fn base_coordinate(base: &Base) -> Coordinate {
    let cuda = base.cuda.as_ref();
    Coordinate {
        base: base.reference.clone(),
        os: base.os.slug(),
        cuda: cuda.map(|c| c.version.to_string()),
        cudnn: cuda.and_then(|c| c.cudnn.clone()),
        flavor: cuda.map(|c| c.flavor.clone()),
        ..Coordinate::default()
    }
}

/// One point of the product: indexes into the axes, and the rule that excluded it.
#[derive(Clone)]
struct Point<'a> {
    base: usize,
    py: usize,
    variant: usize,
    platform: usize,
    rule: Option<&'a RawRule>,
}

impl Point<'_> {
    fn same_cell(&self, o: &Point) -> bool {
        (self.base, self.py, self.variant, self.platform) == (o.base, o.py, o.variant, o.platform)
    }
}

/// Cells and exclusions of the matrix. Errors (no installer, an empty matrix) go to `d`.
pub fn cells(
    raw: &RawConfig,
    mut axes: Axes,
    settings: &Settings,
    user_catalogue: &Catalogue,
    d: &mut Diags,
) -> (Vec<Cell>, Vec<Excluded>) {
    let mut points = product(raw, &axes, d);
    for inc in &raw.include {
        let Some(p) = include_point(inc, &mut axes, settings.sources.cuda_registry.as_deref(), d)
        else {
            continue;
        };
        if points.iter().any(|x| x.rule.is_none() && x.same_cell(&p)) {
            d.warn(
                Some(inc.at),
                &inc.key,
                "this inclusion names a cell the matrix already has",
            );
        } else {
            // An inclusion adds a cell; it also brings back a cell an exclusion removed.
            points.retain(|x| !(x.rule.is_some() && x.same_cell(&p)));
            points.push(p);
        }
    }
    sort_points(&mut points, &axes);
    let (mut cells, mut excluded) = build_cells(&points, &axes, settings, user_catalogue, d);
    if !d.has_errors() && cells.is_empty() {
        let why = match points.len() {
            0 => "no bases or no python versions are listed".to_string(),
            1 => "its only cell is excluded".to_string(),
            n => format!("all {n} cells are excluded"),
        };
        d.error(
            Some(Pos { line: 1, col: 1 }),
            "",
            format!("the matrix is empty: {why}"),
        );
    }
    excluded.sort_by(|a, b| a.id.cmp(&b.id));
    tags::disambiguate_ids(&mut cells);
    (cells, excluded)
}

/// The cross product with each point's excluding rule; unused rules warn.
fn product<'a>(raw: &'a RawConfig, axes: &Axes, d: &mut Diags) -> Vec<Point<'a>> {
    let mut points = Vec::new();
    for base in 0..axes.bases.len() {
        for py in 0..axes.pythons.len() {
            for variant in 0..axes.variants.len() {
                for platform in 0..axes.platforms.len() {
                    points.push(Point {
                        base,
                        py,
                        variant,
                        platform,
                        rule: None,
                    });
                }
            }
        }
    }
    let mut hits = vec![0usize; raw.exclude.len()];
    if !raw.exclude.is_empty() {
        for p in &mut points {
            let coord = axes.coordinate(p);
            if let Some((i, rule)) = raw
                .exclude
                .iter()
                .enumerate()
                .find(|(_, r)| rule_matches(r, &coord))
            {
                hits[i] += 1;
                p.rule = Some(rule);
            }
        }
    }
    for (n, rule) in hits.iter().zip(&raw.exclude) {
        // a rule on a framework coordinate is matched against the framework images
        if *n == 0 && !rule.fields.iter().any(|(k, _)| k.is_framework()) {
            d.warn(Some(rule.at), &rule.key, "this exclusion matches no cell");
        }
    }
    points
}

/// What a cell takes from its Python entry and platform, worked out once per pair
/// rather than once per cell (a 10,000-cell matrix has a few dozen pairs).
struct PyPlatform {
    installer: Result<std::sync::Arc<crate::plan::InstallerRef>, String>,
    python: String,
    miniconda: String,
}

fn build_cells(
    points: &[Point],
    axes: &Axes,
    settings: &Settings,
    user_catalogue: &Catalogue,
    d: &mut Diags,
) -> (Vec<Cell>, Vec<Excluded>) {
    use rayon::prelude::*;
    let n_platforms = axes.platforms.len();
    // each (Python, platform) the points use, worked out once
    let mut memo: Vec<Option<PyPlatform>> = Vec::new();
    memo.resize_with(axes.pythons.len() * n_platforms, || None);
    for p in points {
        let (py, platform) = (&axes.pythons[p.py], &axes.platforms[p.platform]);
        memo[p.py * n_platforms + p.platform].get_or_insert_with(|| PyPlatform {
            installer: axes::installer_for(py, &platform.arch, user_catalogue, settings)
                .map(std::sync::Arc::new),
            python: py.version.to_string(),
            miniconda: py.release.to_string(),
        });
    }
    // an installer folder is for offline builds: one that lacks an installer a cell
    // needs would send that build to the network without a word
    if let Some(dir) = &settings.sources.installer_dir {
        for i in memo
            .iter()
            .flatten()
            .filter_map(|pp| pp.installer.as_ref().ok())
        {
            if i.local.is_none() {
                d.warn(
                    None,
                    "sources.installer_dir",
                    format!(
                        "{} has no {}; its cells download it from the mirrors",
                        dir.display(),
                        i.file
                    ),
                );
            }
        }
    }
    let pair = |p: &Point| {
        memo[p.py * n_platforms + p.platform]
            .as_ref()
            .expect("every pair a point uses is worked out above")
    };
    let mut excluded = Vec::new();
    let mut reported: BTreeSet<&str> = BTreeSet::new();
    for p in points {
        let pp = pair(p);
        if let Some(rule) = p.rule {
            let id = tags::cell_id(
                &pp.python,
                &axes.bases[p.base],
                &axes.variants[p.variant],
                &axes.platforms[p.platform].name,
            );
            excluded.push(Excluded::by_rule(id, axes.coordinate(p), rule));
        } else if let Err(msg) = &pp.installer {
            if reported.insert(msg) {
                let py = &axes.pythons[p.py];
                d.error(Some(py.at), &py.key, msg.clone());
            }
        }
    }
    let base_coords: Vec<Coordinate> = axes.bases.iter().map(|b| base_coordinate(b)).collect();
    // the points that are cells, first: a parallel filter would gather the cells in
    // lists grown by doubling (18 MB at the peak for 10,000) and then copy them into
    // one; a parallel map of these writes each cell in its place
    let kept: Vec<(&Point, &Arc<crate::plan::InstallerRef>, &PyPlatform)> = points
        .iter()
        .filter_map(|p| {
            let pp = pair(p);
            let installer = pp.installer.as_ref().ok().filter(|_| p.rule.is_none())?;
            Some((p, installer, pp))
        })
        .collect();
    // the cells themselves, in the points' order, on every core
    let cells = kept
        .par_iter()
        .map(|&(p, installer, pp)| {
            let (base, py) = (&axes.bases[p.base], &axes.pythons[p.py]);
            let (variant, platform) = (&axes.variants[p.variant], &axes.platforms[p.platform]);
            Cell {
                id: tags::cell_id(&pp.python, base, variant, &platform.name),
                coord: Coordinate {
                    python: pp.python.clone(),
                    miniconda: pp.miniconda.clone(),
                    platform: platform.name.clone(),
                    variant: variant.name.clone(),
                    ..base_coords[p.base].clone()
                },
                python: py.version,
                miniconda: py.release.clone(),
                base: base.clone(),
                variant: variant.clone(),
                installer: installer.clone(),
                tags: Vec::new(),
                group: None,
                framework: None,
                custom: None,
            }
        })
        .collect();
    (cells, excluded)
}

/// What a base decides of the cell order: CPU bases before CUDA ones, then the OS and
/// its version, the CUDA version, flavor and cuDNN.
type BaseKey = (
    u8,
    String,
    Option<semver::Version>,
    Option<String>,
    Option<String>,
);

fn base_key(b: &Base) -> BaseKey {
    let os = &b.os;
    let osv = os
        .version
        .split('.')
        .map(|p| format!("{p:0>4}"))
        .collect::<Vec<_>>()
        .join(".");
    (
        u8::from(b.cuda.is_some()),
        format!("{:?}{osv}", os.family),
        b.cuda.as_ref().map(|x| x.version.clone()),
        b.cuda.as_ref().map(|x| x.flavor.clone()),
        b.cuda.as_ref().and_then(|x| x.cudnn.clone()),
    )
}

/// Points in cell order: the base's key ([`BaseKey`]), then Python, Miniconda
/// (versions as versions), variant, platform, the base's reference and, last, the
/// point's place. Each axis entry is ranked once, so that the cells are made in order
/// and 10,000 of them are never compared (or moved) by their strings.
fn sort_points(points: &mut [Point], axes: &Axes) {
    /// Each item's rank: equal items share one, the first place of their kind.
    fn ranks<T: Ord>(items: &[T]) -> Vec<usize> {
        let mut order: Vec<usize> = (0..items.len()).collect();
        order.sort_by(|&a, &b| items[a].cmp(&items[b]));
        let mut out = vec![0; items.len()];
        for (n, w) in order.windows(2).enumerate() {
            out[w[1]] = if items[w[0]] == items[w[1]] {
                out[w[0]]
            } else {
                n + 1
            };
        }
        out
    }
    let keys: Vec<BaseKey> = axes.bases.iter().map(|b| base_key(b)).collect();
    let refs: Vec<&str> = axes.bases.iter().map(|b| b.reference.as_str()).collect();
    let pythons: Vec<_> = axes
        .pythons
        .iter()
        .map(|p| (p.version, &p.release))
        .collect();
    let variants: Vec<&str> = axes.variants.iter().map(|v| v.name.as_str()).collect();
    let platforms: Vec<&str> = axes.platforms.iter().map(|p| p.name.as_str()).collect();
    let (key, reference) = (ranks(&keys), ranks(&refs));
    let (python, variant, platform) = (ranks(&pythons), ranks(&variants), ranks(&platforms));
    let mut order: Vec<(usize, usize, usize, usize, usize, usize)> = points
        .iter()
        .enumerate()
        .map(|(i, p)| {
            (
                key[p.base],
                python[p.py],
                variant[p.variant],
                platform[p.platform],
                reference[p.base],
                i,
            )
        })
        .collect();
    order.sort_unstable();
    let sorted: Vec<Point> = order.iter().map(|o| points[o.5].clone()).collect();
    points.clone_from_slice(&sorted);
}

/// The base an `include` names. A base declared in `bases:` (perhaps with its `os`)
/// is reused as declared; an include cannot carry `os` itself.
fn include_base(
    inc: &RawRule,
    base_s: &crate::diag::Sp<String>,
    axes: &Axes,
    cuda_registry: Option<&str>,
    d: &mut Diags,
) -> Option<Base> {
    let declared = axes
        .bases
        .iter()
        .find(|b| b.reference == base_s.value)
        .map(|b| (**b).clone());
    let parsed = match declared {
        Some(b) => Ok((b, base::BaseNotes::default())),
        None => base::parse(&base_s.value, None, cuda_registry),
    };
    match parsed {
        Ok((b, notes)) => {
            for w in notes.warnings {
                d.warn(Some(base_s.at), format!("{}.base", inc.key), w);
            }
            Some(b)
        }
        Err(e) => {
            d.error(
                Some(base_s.at),
                format!("{}.base", inc.key),
                format!("{e} (an inclusion takes `os` from a base declared in `bases:`)"),
            );
            None
        }
    }
}

/// The point an `include` names, adding its base or Python to the axes if new.
fn include_point<'a>(
    inc: &'a RawRule,
    axes: &mut Axes,
    cuda_registry: Option<&str>,
    d: &mut Diags,
) -> Option<Point<'a>> {
    let get = |k: Key| inc.fields.iter().find(|(n, _)| *n == k).map(|(_, v)| v);
    let (Some(base_s), Some(py_s)) = (get(Key::Base), get(Key::Python)) else {
        d.error(
            Some(inc.at),
            &inc.key,
            "an inclusion names a whole cell: it needs at least `base` and `python`",
        );
        return None;
    };
    let base = include_base(inc, base_s, axes, cuda_registry, d)?;
    let version = match PyVersion::parse(&py_s.value) {
        Ok(v) => v,
        Err(e) => {
            d.error(Some(py_s.at), format!("{}.python", inc.key), e);
            return None;
        }
    };
    let release = match get(Key::Miniconda) {
        Some(m) => match CondaRelease::parse(&m.value) {
            Ok(r) => r,
            Err(e) => {
                d.error(Some(m.at), format!("{}.miniconda", inc.key), e);
                return None;
            }
        },
        None => axes
            .pythons
            .iter()
            .find(|p| p.version == version)
            .map_or_else(default_release, |p| p.release.clone()),
    };
    let base = match axes.bases.iter().position(|b| b.same_image(&base)) {
        Some(i) => i,
        None => {
            axes.bases.push(Arc::new(base));
            axes.bases.len() - 1
        }
    };
    let py = match axes
        .pythons
        .iter()
        .position(|p| p.version == version && p.release == release)
    {
        Some(i) => i,
        None => {
            axes.pythons.push(PyEntry {
                version,
                release,
                at: py_s.at,
                key: format!("{}.python", inc.key),
            });
            axes.pythons.len() - 1
        }
    };
    let variant = match get(Key::Variant) {
        Some(v) => match axes.variants.iter().position(|x| x.name == v.value) {
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
    let platform = match get(Key::Platform) {
        Some(p) => match axes.platforms.iter().position(|x| x.name == p.value) {
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
    Some(Point {
        base,
        py,
        variant,
        platform,
        rule: None,
    })
}
