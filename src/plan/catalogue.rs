//! Data shipped in the repository: the Miniconda installer catalogue (names + SHA256),
//! NVIDIA's list of `nvidia/cuda` tags with their support status, and the Python
//! release cycle (each CPython's end of life).
//!
//! Both are compiled into the binary from `data/`; which copy is read (a fresher one
//! from `matrix catalogue update` wins) and its `# updated:` stamp are
//! [`super::data`]'s. A user can also extend the installer catalogue from
//! `matrix.yaml`.

use std::collections::HashMap;
use std::sync::OnceLock;

use crate::plan::data::{data_text, days_between, stamp};
use crate::plan::version::{parse_installer_file, CondaRelease, PyVersion};

const INSTALLERS_TSV: &str = include_str!("../../data/miniconda-installers.tsv");
const CUDA_TAGS_TSV: &str = include_str!("../../data/nvidia-cuda-tags.tsv");
const PYTHON_RELEASES_TSV: &str = include_str!("../../data/python-releases.tsv");
pub const INSTALLERS_FILE: &str = "miniconda-installers.tsv";
pub const CUDA_TAGS_FILE: &str = "nvidia-cuda-tags.tsv";
pub const PYTHON_RELEASES_FILE: &str = "python-releases.tsv";

fn installers_text() -> &'static str {
    static T: OnceLock<&'static str> = OnceLock::new();
    T.get_or_init(|| data_text(INSTALLERS_FILE, INSTALLERS_TSV))
}

fn cuda_tags_text() -> &'static str {
    static T: OnceLock<&'static str> = OnceLock::new();
    T.get_or_init(|| data_text(CUDA_TAGS_FILE, CUDA_TAGS_TSV))
}

fn python_releases_text() -> &'static str {
    static T: OnceLock<&'static str> = OnceLock::new();
    T.get_or_init(|| data_text(PYTHON_RELEASES_FILE, PYTHON_RELEASES_TSV))
}

/// The end of life of a CPython feature release per the Python release cycle
/// (`YYYY-MM-DD`, or `YYYY-MM` where only the month is planned), if the data knows it.
pub fn python_end_of_life(py: PyVersion) -> Option<&'static str> {
    let want = py.to_string();
    python_releases_text()
        .lines()
        .filter(|l| !l.starts_with('#'))
        .find_map(|l| {
            let mut f = l.split('\t').map(str::trim);
            let (v, _first, eol) = (f.next()?, f.next()?, f.next()?);
            (v == want).then_some(eol)
        })
}

/// Whether `py` is past its end of life on `today` (`YYYY-MM-DD`): the date of its end
/// of life, when it is. A month-only end of life ends with the month.
pub fn python_past_end_of_life(py: PyVersion, today: &str) -> Option<&'static str> {
    let eol = python_end_of_life(py)?;
    let last_day = match eol.len() {
        10 => eol.to_string(),
        // `YYYY-MM-31` compares after every day of the month, whatever its length
        7 => format!("{eol}-31"),
        _ => return None,
    };
    (today.len() == 10 && today > last_day.as_str()).then_some(eol)
}

/// A note for each fresher copy of a data file that was refused, and for each
/// catalogue older than `max_days` on `today` (`YYYY-MM-DD`).
pub fn staleness(today: &str, max_days: i64) -> Vec<String> {
    let mut out = Vec::new();
    let (torch, tf) = crate::plan::frameworks::current();
    for (what, text) in [
        ("the Miniconda installer catalogue", installers_text()),
        ("the nvidia/cuda tag list", cuda_tags_text()),
        ("the PyTorch wheel catalogue", torch),
        ("the TensorFlow catalogue", tf),
    ] {
        let Some((date, _)) = stamp(text) else {
            continue;
        };
        if let Some(age) = days_between(&date, today).filter(|a| *a > max_days) {
            out.push(format!(
                "note: {what} is from {date} ({age} days ago); `matrix catalogue update` refreshes it"
            ));
        }
    }
    // after the reads above: a refused copy is found while it is read
    let mut notes = crate::plan::data::refused();
    notes.extend(out);
    notes
}

/// The current data files' text (for `catalogue update` to compare against).
pub fn current() -> (&'static str, &'static str) {
    (installers_text(), cuda_tags_text())
}

#[derive(Debug, Clone)]
pub struct Installer {
    pub py: PyVersion,
    pub release: CondaRelease,
    pub arch: String,
    pub sha256: String,
}

#[derive(Debug, Default)]
pub struct Catalogue {
    by_file: HashMap<String, Installer>,
}

impl Catalogue {
    /// The catalogue compiled from `data/miniconda-installers.tsv`.
    pub fn builtin() -> &'static Catalogue {
        static CAT: OnceLock<Catalogue> = OnceLock::new();
        CAT.get_or_init(|| {
            let mut c = Catalogue::default();
            for line in installers_text()
                .lines()
                .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
            {
                if let Some((file, sha)) = line.split_once('\t') {
                    c.add(file, sha.trim());
                }
            }
            c
        })
    }

    /// Add (or override) an entry; returns false when the name is not an installer name.
    pub fn add(&mut self, file: &str, sha256: &str) -> bool {
        match parse_installer_file(file) {
            Some((py, release, arch)) => {
                self.by_file.insert(
                    file.to_string(),
                    Installer {
                        py,
                        release,
                        arch,
                        sha256: sha256.to_string(),
                    },
                );
                true
            }
            None => false,
        }
    }

    pub fn len(&self) -> usize {
        self.by_file.len()
    }

    pub fn is_empty(&self) -> bool {
        self.by_file.is_empty()
    }

    pub fn get(&self, file: &str) -> Option<&Installer> {
        self.by_file.get(file)
    }

    /// Python versions a release offers on an arch, sorted.
    pub fn pythons_of(&self, release: &CondaRelease, arch: &str) -> Vec<PyVersion> {
        let mut v: Vec<PyVersion> = self
            .by_file
            .values()
            .filter(|i| &i.release == release && i.arch == arch)
            .map(|i| i.py)
            .collect();
        v.sort();
        v.dedup();
        v
    }

    /// The newest release that offers `py` on `arch`.
    pub fn latest_for(&self, py: PyVersion, arch: &str) -> Option<CondaRelease> {
        self.by_file
            .values()
            .filter(|i| i.py == py && i.arch == arch)
            .map(|i| i.release.clone())
            .max()
    }

    /// The release nearest to `near` (newer first on a tie) that ships `py` on `arch`.
    pub fn closest_with(
        &self,
        py: PyVersion,
        arch: &str,
        near: &CondaRelease,
    ) -> Option<CondaRelease> {
        let key = |r: &CondaRelease| {
            let (a, b) = (&r.version, &near.version);
            let dist = |x: &semver::Version| x.major * 10_000 + x.minor * 100 + x.patch;
            (dist(a).abs_diff(dist(b)), std::cmp::Reverse(r.clone()))
        };
        self.by_file
            .values()
            .filter(|i| i.py == py && i.arch == arch)
            .map(|i| i.release.clone())
            .min_by_key(key)
    }

    /// Whether any installer of this release is known, on any arch.
    pub fn knows_release(&self, release: &CondaRelease) -> bool {
        self.by_file.values().any(|i| &i.release == release)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TagStatus {
    Supported,
    Eol,
}

/// NVIDIA's tag list (ubuntu tags of `nvidia/cuda`).
pub fn cuda_tag_status(tag: &str) -> Option<TagStatus> {
    static TAGS: OnceLock<HashMap<&'static str, TagStatus>> = OnceLock::new();
    TAGS.get_or_init(|| {
        cuda_tags_text()
            .lines()
            .filter(|l| !l.starts_with('#'))
            .filter_map(|l| l.split_once('\t'))
            .filter_map(|(t, s)| match s.trim() {
                "supported" => Some((t, TagStatus::Supported)),
                "eol" => Some((t, TagStatus::Eol)),
                _ => None,
            })
            .collect()
    })
    .get(tag)
    .copied()
}

/// What replaces an end-of-life tag: the newest supported tag of the same shape (cudnn
/// token, flavor, os) and the same CUDA minor (a newer patch, `Patch`); failing that, the
/// newest supported tag of the same CUDA major and the same flavor and os, with a cuDNN
/// token where `rest` has one (`Minor`). NVIDIA ends a tag when a newer patch of its
/// minor ships, or when its driver branch ends, so the second kind is a newer minor.
pub fn supported_successor(cuda: &semver::Version, rest: &str) -> Option<Successor> {
    let supported = || {
        cuda_tags_text()
            .lines()
            .filter_map(|l| l.split_once('\t'))
            .filter(|(_, s)| s.trim() == "supported")
            .filter_map(|(t, _)| {
                let (v, r) = t.split_once('-')?;
                let v = semver::Version::parse(v).ok()?;
                (v.major == cuda.major && v > *cuda).then_some((v, r, t))
            })
    };
    let patch = supported()
        .filter(|(v, r, _)| *r == rest && v.minor == cuda.minor)
        .max()
        .map(|(_, _, t)| Successor::Patch(t.to_string()));
    // `cudnn8-devel-ubuntu22.04` and `cudnn-devel-ubuntu22.04` are one shape (the
    // token's number follows the CUDA version); `tensorrt-devel-…` and `devel-…` are not
    fn shape(r: &str) -> (usize, Option<&str>, Vec<&str>) {
        let parts: Vec<&str> = r.split('-').collect();
        let first = parts
            .first()
            .map(|p| p.trim_end_matches(|c: char| c.is_ascii_digit()));
        let tail: Vec<&str> = parts.iter().rev().take(2).copied().collect();
        (parts.len(), first, tail)
    }
    patch.or_else(|| {
        supported()
            .filter(|(_, r, _)| shape(r) == shape(rest))
            .max()
            .map(|(_, _, t)| Successor::Minor(t.to_string()))
    })
}

/// See [`supported_successor`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Successor {
    Patch(String),
    Minor(String),
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn catalogue_knows_the_seed_installer() {
        let c = Catalogue::builtin();
        assert!(c.len() > 400, "catalogue has {} entries", c.len());
        let i = c.get("Miniconda3-py310_24.5.0-0-Linux-x86_64.sh").unwrap();
        assert_eq!(i.sha256.len(), 64);
        let r = CondaRelease::parse("24.5.0-0").unwrap();
        let pys: Vec<String> = c
            .pythons_of(&r, "x86_64")
            .iter()
            .map(ToString::to_string)
            .collect();
        assert!(!pys.contains(&"3.8".to_string()), "{pys:?}");
        assert!(pys.contains(&"3.10".to_string()));
        let py38 = PyVersion::parse("3.8").unwrap();
        assert_eq!(
            c.latest_for(py38, "x86_64").unwrap().to_string(),
            "23.11.0-2"
        );
    }

    #[test]
    fn python_end_of_life_follows_the_release_cycle() {
        let py = |s: &str| PyVersion::parse(s).unwrap();
        assert_eq!(python_end_of_life(py("3.8")), Some("2024-10-07"));
        assert_eq!(
            python_past_end_of_life(py("3.9"), "2026-12-07"),
            Some("2025-10-31")
        );
        // a month-only end of life ends with its month
        assert_eq!(python_past_end_of_life(py("3.10"), "2026-10-31"), None);
        assert_eq!(
            python_past_end_of_life(py("3.10"), "2026-11-01"),
            Some("2026-10")
        );
        assert_eq!(python_past_end_of_life(py("3.12"), "2026-12-07"), None);
        assert_eq!(python_past_end_of_life(py("3.99"), "2026-12-07"), None);
    }

    #[test]
    fn the_shipped_files_are_stamped() {
        assert!(stamp(INSTALLERS_TSV).is_some() && stamp(CUDA_TAGS_TSV).is_some());
    }

    #[test]
    fn cuda_tag_list_knows_eol_and_successor() {
        assert_eq!(
            cuda_tag_status("12.1.0-cudnn8-devel-ubuntu22.04"),
            Some(TagStatus::Eol)
        );
        assert_eq!(
            cuda_tag_status("12.1.1-cudnn8-devel-ubuntu22.04"),
            Some(TagStatus::Supported)
        );
        let v = semver::Version::parse("12.1.0").unwrap();
        assert_eq!(
            supported_successor(&v, "cudnn8-devel-ubuntu22.04"),
            Some(Successor::Patch("12.1.1-cudnn8-devel-ubuntu22.04".into()))
        );
        // 13.0.0 and 13.0.1 moved to the unsupported list; 13.0.2 replaced them
        assert_eq!(
            cuda_tag_status("13.0.0-cudnn-devel-ubuntu24.04"),
            Some(TagStatus::Eol)
        );
        let v = semver::Version::parse("13.0.0").unwrap();
        assert_eq!(
            supported_successor(&v, "cudnn-devel-ubuntu24.04"),
            Some(Successor::Patch("13.0.2-cudnn-devel-ubuntu24.04".into()))
        );
        // no supported 11.7: the newest supported 11.x of the same shape
        let v = semver::Version::parse("11.7.1").unwrap();
        assert_eq!(
            supported_successor(&v, "cudnn8-devel-ubuntu22.04"),
            Some(Successor::Minor("11.8.0-cudnn8-devel-ubuntu22.04".into()))
        );
    }
}
