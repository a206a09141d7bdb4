//! The framework catalogue: which PyTorch and TensorFlow releases install where.
//!
//! Read from `data/pytorch.tsv` and `data/tensorflow.tsv` (compiled in; a fresher copy
//! in the data directory wins, as for the installer catalogue). Each line is a fact
//! with its source named in the file's header: for PyTorch, one release and one wheel
//! variant (`cpu`, `cu124`…) with its torchvision/torchaudio, the CPython versions and
//! architectures it has wheels for, and whether it is the build PyPI serves; for
//! TensorFlow, one release with its Pythons, architectures and the CUDA/cuDNN of its
//! GPU build.
//!
//! The planner asks one question per framework cell — which wheel does this release
//! install here (Python, architecture, the base's CUDA, where wheels come from)? — and
//! gets either the line that answers it or a sentence saying why none does and what
//! the nearest choice that installs would be. Nothing here reads the network.

use std::fmt;
use std::sync::OnceLock;

use crate::coord::Key;
use crate::plan::data;
use crate::plan::version::PyVersion;

/// Why no wheel of a release installs in a cell, and on which coordinate it failed
/// (`python`, `cuda`, `platform`; `torch`/`tf` for a release the catalogue lacks).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NoWheel {
    pub on: Key,
    pub why: String,
}

impl fmt::Display for NoWheel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.why)
    }
}

fn no(on: Key, why: String) -> NoWheel {
    NoWheel { on, why }
}

const PYTORCH_TSV: &str = include_str!("../../data/pytorch.tsv");
const TENSORFLOW_TSV: &str = include_str!("../../data/tensorflow.tsv");
pub const PYTORCH_FILE: &str = "pytorch.tsv";
pub const TENSORFLOW_FILE: &str = "tensorflow.tsv";

/// A wheel variant: a CPU build, or a build for one CUDA line (`cu124` = CUDA 12.4).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Wheel {
    Cpu,
    Cuda { major: u32, minor: u32 },
}

impl Wheel {
    /// `cpu`, `cu118`, `cu124`, `cu130`: the last digit is the minor version.
    pub fn parse(s: &str) -> Option<Wheel> {
        if s == "cpu" {
            return Some(Wheel::Cpu);
        }
        let d = s.strip_prefix("cu")?;
        if d.len() < 2 || !d.bytes().all(|c| c.is_ascii_digit()) {
            return None;
        }
        let (major, minor) = d.split_at(d.len() - 1);
        Some(Wheel::Cuda {
            major: major.parse().ok()?,
            minor: minor.parse().ok()?,
        })
    }

    /// What `torch.version.cuda` says for it (`12.4`), None for a CPU build.
    pub fn cuda(self) -> Option<String> {
        match self {
            Wheel::Cpu => None,
            Wheel::Cuda { major, minor } => Some(format!("{major}.{minor}")),
        }
    }

    /// Whether a base with this CUDA (None: a CPU base) runs the wheel as intended: a
    /// CUDA wheel of the base's CUDA major, not newer than the base's CUDA (torch's C++
    /// extension builder refuses a CUDA major that differs from the one torch was built
    /// with, and a newer minor than the base's toolkit needs a newer driver than the
    /// base was made for); on a CPU base only the CPU build.
    pub fn fits(self, base: Option<(u32, u32)>) -> bool {
        match (self, base) {
            (Wheel::Cpu, None) => true,
            (Wheel::Cuda { major, minor }, Some((bm, bn))) => major == bm && minor <= bn,
            _ => false,
        }
    }
}

impl fmt::Display for Wheel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Wheel::Cpu => write!(f, "cpu"),
            Wheel::Cuda { major, minor } => write!(f, "cu{major}{minor}"),
        }
    }
}

/// One line of `pytorch.tsv`: a torch release's wheel variant.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TorchLine {
    pub torch: semver::Version,
    pub torchvision: String,
    pub torchaudio: String,
    pub wheel: Wheel,
    pub pythons: Vec<PyVersion>,
    pub arches: Vec<String>,
    /// The build the Python package index (PyPI) serves for Linux x86_64.
    pub pypi_default: bool,
}

/// One line of `tensorflow.tsv`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TfLine {
    pub tensorflow: semver::Version,
    pub pythons: Vec<PyVersion>,
    /// The CUDA (major, minor) of the Linux x86_64 GPU build.
    pub cuda: (u32, u32),
    pub cudnn: String,
    pub arches: Vec<String>,
}

/// Where a cell's framework wheels come from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Source {
    /// PyTorch's per-variant indexes (download.pytorch.org/whl/VARIANT, or mirrors of
    /// them): every variant of a release.
    VariantIndexes,
    /// The Python package index (PyPI or its mirror): one build per release and arch.
    PackageIndex,
}

/// What a framework cell needs from a wheel.
#[derive(Clone, Copy, Debug)]
pub struct Need<'a> {
    pub python: PyVersion,
    /// `x86_64`, `aarch64`.
    pub arch: &'a str,
    /// The base's CUDA (major, minor), None on a CPU base.
    pub cuda: Option<(u32, u32)>,
    pub source: Source,
}

impl Need<'_> {
    fn base(&self) -> String {
        match self.cuda {
            Some((a, b)) => format!("CUDA {a}.{b}"),
            None => "a CPU base".into(),
        }
    }
}

/// The TensorFlow build a cell installs: always the package `tensorflow` from the
/// package index.
///
/// - CUDA base, x86_64: the CUDA build with its CUDA libraries (the `and-cuda` extra,
///   2.14+; 2.13 uses the base's own), `wheel` = the build's CUDA line (`cu125`).
/// - CPU base, x86_64: the same wheel without the extra. PyPI has no other: the x86_64
///   `tensorflow` wheel IS the CUDA build (`tf.sysconfig.get_build_info()` says
///   `is_cuda_build: True`, CUDA 12.5.1 for 2.18+) and runs on the CPU where no GPU
///   libraries are found; so `wheel` is still `cu125` (what the build reports, what
///   `verify` checks) and the plan warns ([`TfPick::note`]). `tensorflow-cpu` is not
///   used: it is a second distribution name (`pip show tensorflow` finds nothing), and
///   the catalogue does not say for which releases it is published.
/// - aarch64 (no CUDA base accepted): the CPU build (`cpu`; `tensorflow-cpu-aws` for
///   2.13-2.15, which `tensorflow` requires there).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TfPick<'a> {
    pub line: &'a TfLine,
    /// The build's CUDA line (`cu125`), or `cpu` for a CPU build (aarch64).
    pub wheel: Wheel,
    /// The pip extra that brings the CUDA libraries (`and-cuda`, TensorFlow 2.14+).
    pub extra: Option<&'static str>,
    /// A combination that works with a caveat the plan must show: a build for a newer
    /// CUDA minor than the base's (NVIDIA's minor-version compatibility), or the CUDA
    /// build on a CPU base.
    pub note: Option<String>,
}

/// NVIDIA's statement of CUDA minor-version compatibility (read 2026-12-07; named in
/// `data/tensorflow.tsv` as [MVC]): from CUDA
/// 11 on, an application built with any toolkit of a major release family runs, with a
/// limited feature set (no PTX JIT of newer PTX), on a driver of that family (>= 450
/// for 11.x, >= 525 for 12.x, >= 580 for 13.x); a different major does not.
pub const MINOR_VERSION_COMPATIBILITY: &str =
    "https://docs.nvidia.com/deploy/cuda-compatibility/minor-version-compatibility.html";

#[derive(Debug, Default)]
pub struct Frameworks {
    pub torch: Vec<TorchLine>,
    pub tensorflow: Vec<TfLine>,
}

fn list<T>(s: &str, f: impl Fn(&str) -> Option<T>) -> Option<Vec<T>> {
    s.split(',').map(|x| f(x.trim())).collect()
}

fn parse_torch(line: &str) -> Option<TorchLine> {
    let f: Vec<&str> = line.split('\t').map(str::trim).collect();
    let [torch, vision, audio, wheel, pythons, arches, pypi] = f.as_slice() else {
        return None;
    };
    Some(TorchLine {
        torch: semver::Version::parse(torch).ok()?,
        torchvision: (*vision).to_string(),
        torchaudio: (*audio).to_string(),
        wheel: Wheel::parse(wheel)?,
        pythons: list(pythons, |p| PyVersion::parse(p).ok())?,
        arches: list(arches, |a| Some(a.to_string()))?,
        pypi_default: *pypi == "yes",
    })
}

fn parse_tf(line: &str) -> Option<TfLine> {
    let f: Vec<&str> = line.split('\t').map(str::trim).collect();
    let [tf, pythons, cuda, cudnn, arches] = f.as_slice() else {
        return None;
    };
    let (a, b) = cuda.split_once('.')?;
    Some(TfLine {
        tensorflow: semver::Version::parse(tf).ok()?,
        pythons: list(pythons, |p| PyVersion::parse(p).ok())?,
        cuda: (a.parse().ok()?, b.parse().ok()?),
        cudnn: (*cudnn).to_string(),
        arches: list(arches, |a| Some(a.to_string()))?,
    })
}

/// The data lines of a catalogue file (comments and blank lines skipped).
fn rows(text: &str) -> impl Iterator<Item = &str> {
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
}

impl Frameworks {
    /// Parse both files; lines that do not parse are left out (a test keeps the
    /// shipped files free of them).
    pub fn parse(torch: &str, tf: &str) -> Frameworks {
        Frameworks {
            torch: rows(torch).filter_map(parse_torch).collect(),
            tensorflow: rows(tf).filter_map(parse_tf).collect(),
        }
    }

    /// The catalogue plans use: the data directory's copies, else the built-in ones.
    pub fn get() -> &'static Frameworks {
        static F: OnceLock<Frameworks> = OnceLock::new();
        F.get_or_init(|| {
            let (t, f) = texts();
            Frameworks::parse(t, f)
        })
    }

    /// Every torch release, oldest first.
    pub fn torch_releases(&self) -> Vec<&semver::Version> {
        let mut v: Vec<&semver::Version> = self.torch.iter().map(|l| &l.torch).collect();
        v.sort();
        v.dedup();
        v
    }

    fn torch_lines(&self, v: &semver::Version) -> impl Iterator<Item = &TorchLine> {
        let v = v.clone();
        self.torch.iter().filter(move |l| l.torch == v)
    }

    /// The build of `v` the package index serves on an arch: on x86_64 its PyPI build;
    /// on aarch64 the CPU build up to 2.10 and the same CUDA build as x86_64 from 2.11.
    fn package_index_line(&self, v: &semver::Version, arch: &str) -> Option<&TorchLine> {
        let aarch64_is_cuda = *v >= semver::Version::new(2, 11, 0);
        self.torch_lines(v).find(|l| match arch {
            "x86_64" => l.pypi_default,
            "aarch64" if aarch64_is_cuda => l.pypi_default && l.arches.iter().any(|a| a == arch),
            "aarch64" => l.wheel == Wheel::Cpu && l.arches.iter().any(|a| a == arch),
            _ => false,
        })
    }

    /// The wheel of torch `v` a cell installs: the newest variant that fits the base
    /// and has a wheel for its Python and arch; or why there is none.
    pub fn pick_torch(&self, v: &semver::Version, need: &Need) -> Result<&TorchLine, NoWheel> {
        let all: Vec<&TorchLine> = self.torch_lines(v).collect();
        if all.is_empty() {
            return Err(no(Key::Torch, self.unknown_torch(v)));
        }
        let candidates: Vec<&TorchLine> = match need.source {
            Source::PackageIndex => self
                .package_index_line(v, need.arch)
                .filter(|l| need.cuda.is_none() || l.wheel.fits(need.cuda))
                .into_iter()
                .collect(),
            Source::VariantIndexes => all
                .iter()
                .copied()
                .filter(|l| l.wheel.fits(need.cuda))
                .collect(),
        };
        let usable = candidates
            .iter()
            .copied()
            .filter(|l| l.arches.iter().any(|a| a == need.arch))
            .filter(|l| l.pythons.contains(&need.python))
            .max_by_key(|l| l.wheel);
        usable.ok_or_else(|| Self::why_no_torch(v, &all, &candidates, need))
    }

    fn unknown_torch(&self, v: &semver::Version) -> String {
        let known: Vec<String> = self
            .torch_releases()
            .iter()
            .map(ToString::to_string)
            .collect();
        let near = nearest(&self.torch_releases(), v)
            .map(|n| format!("the nearest known release is {n}; "))
            .unwrap_or_default();
        format!(
            "torch {v} is not in the framework catalogue (data/pytorch.tsv); {near}known: {}",
            known.join(", ")
        )
    }

    /// Why no wheel of `v` fits: the first of Python, CUDA line, arch that rules it out.
    fn why_no_torch(
        v: &semver::Version,
        all: &[&TorchLine],
        candidates: &[&TorchLine],
        need: &Need,
    ) -> NoWheel {
        let py = need.python;
        if !all.iter().any(|l| l.pythons.contains(&py)) {
            let mut pys: Vec<PyVersion> = all.iter().flat_map(|l| l.pythons.clone()).collect();
            pys.sort();
            pys.dedup();
            return no(
                Key::Python,
                format!(
                    "torch {v} has no wheel for Python {py} (its wheels are for Python {})",
                    join(&pys)
                ),
            );
        }
        let variants = || {
            let mut w: Vec<Wheel> = all.iter().map(|l| l.wheel).collect();
            w.sort();
            w.dedup();
            join(&w)
        };
        if candidates.is_empty() {
            let why = match (need.source, need.cuda) {
                (Source::PackageIndex, _) if need.arch != "x86_64" && need.arch != "aarch64" => {
                    format!("the package index has no torch {v} for {}", need.arch)
                }
                (Source::PackageIndex, Some((a, b))) => {
                    let w = all.iter().find(|l| l.pypi_default).map_or_else(String::new, |l| l.wheel.to_string());
                    format!("the package index serves torch {v} only as its {w} build, which does not fit CUDA {a}.{b} (a CUDA wheel needs the base's CUDA major and no newer minor); take the variant indexes (`sources.pytorch_index`) instead")
                }
                (_, Some((a, b))) => format!(
                    "torch {v} has no wheel for CUDA {a}.{b}: its variants are {} and a CUDA base takes the newest cuXY of its own CUDA major not newer than its CUDA",
                    variants()
                ),
                (_, None) => format!("torch {v} has no CPU wheel (its variants are {})", variants()),
            };
            let on = if need.cuda.is_some() {
                Key::Cuda
            } else {
                Key::Platform
            };
            return no(on, why);
        }
        let on_arch: Vec<&&TorchLine> = candidates
            .iter()
            .filter(|l| l.arches.iter().any(|a| a == need.arch))
            .collect();
        if on_arch.is_empty() {
            let w: Vec<Wheel> = candidates.iter().map(|l| l.wheel).collect();
            return no(
                Key::Platform,
                format!(
                    "torch {v} has no {} wheel of {} for {} (those wheels are x86_64 only)",
                    need.arch,
                    join(&w),
                    need.base()
                ),
            );
        }
        let mut pys: Vec<PyVersion> = on_arch.iter().flat_map(|l| l.pythons.clone()).collect();
        pys.sort();
        pys.dedup();
        no(
            Key::Python,
            format!(
                "torch {v}'s {} wheels for {} have no Python {py} (they are for Python {})",
                join(&on_arch.iter().map(|l| l.wheel).collect::<Vec<_>>()),
                need.arch,
                join(&pys)
            ),
        )
    }

    /// The release nearest to `v` that installs for `need` (the newer on a tie), with
    /// its wheel.
    pub fn nearest_torch(&self, v: &semver::Version, need: &Need) -> Option<(&TorchLine, bool)> {
        let ok: Vec<&TorchLine> = self
            .torch_releases()
            .into_iter()
            .filter_map(|r| self.pick_torch(r, need).ok())
            .collect();
        let versions: Vec<&semver::Version> = ok.iter().map(|l| &l.torch).collect();
        let n = nearest(&versions, v)?;
        ok.into_iter()
            .find(|l| l.torch == *n)
            .map(|l| (l, l.torch > *v))
    }

    pub fn tf_releases(&self) -> Vec<&semver::Version> {
        let mut v: Vec<&semver::Version> = self.tensorflow.iter().map(|l| &l.tensorflow).collect();
        v.sort();
        v.dedup();
        v
    }

    /// The TensorFlow build a cell installs (see [`TfPick`]). On a CUDA base the
    /// build's CUDA major must be the base's; a newer minor than the base's works by
    /// NVIDIA's minor-version compatibility ([`MINOR_VERSION_COMPATIBILITY`]) and comes
    /// with a note, as does the CUDA build on a CPU base.
    pub fn pick_tf(&self, v: &semver::Version, need: &Need) -> Result<TfPick<'_>, NoWheel> {
        let Some(line) = self.tensorflow.iter().find(|l| l.tensorflow == *v) else {
            let known: Vec<String> = self.tf_releases().iter().map(ToString::to_string).collect();
            let near = nearest(&self.tf_releases(), v)
                .map(|n| format!("the nearest known release is {n}; "))
                .unwrap_or_default();
            return Err(no(Key::Tf, format!(
                "tensorflow {v} is not in the framework catalogue (data/tensorflow.tsv); {near}known: {}",
                known.join(", ")
            )));
        };
        if !line.pythons.contains(&need.python) {
            return Err(no(
                Key::Python,
                format!(
                    "tensorflow {v} has no wheel for Python {} (its wheels are for Python {})",
                    need.python,
                    join(&line.pythons)
                ),
            ));
        }
        if !line.arches.iter().any(|a| a == need.arch) {
            return Err(no(
                Key::Platform,
                format!("tensorflow {v} has no {} wheel", need.arch),
            ));
        }
        let (m, n) = line.cuda;
        let build = Wheel::Cuda { major: m, minor: n };
        let pick = |wheel, extra, note| TfPick {
            line,
            wheel,
            extra,
            note,
        };
        let Some((bm, bn)) = need.cuda else {
            if need.arch != "x86_64" {
                return Ok(pick(Wheel::Cpu, None, None));
            }
            return Ok(pick(build, None, Some(format!(
                "the package index's x86_64 tensorflow {v} is its CUDA {m}.{n} build (no CPU-only build of that name exists); on a CPU base it runs on the CPU without the CUDA libraries, and `verify` expects it to report CUDA {m}.{n}"
            ))));
        };
        if need.arch != "x86_64" {
            return Err(no(Key::Platform, format!(
                "tensorflow {v}'s {} wheels are CPU-only builds, so a CUDA base gains nothing from them",
                need.arch
            )));
        }
        if m > bm {
            return Err(no(Key::Cuda, format!(
                "tensorflow {v} is built for CUDA {m}.{n}, which cannot run on the base's CUDA {bm}.{bn}: a newer CUDA major needs a newer driver than the base's, outside NVIDIA's minor-version compatibility ({MINOR_VERSION_COMPATIBILITY})"
            )));
        }
        if m < bm {
            return Err(no(Key::Cuda, format!(
                "tensorflow {v} is built for CUDA {m}.{n}, an older CUDA major than the base's {bm}.{bn}: it would not use the base's CUDA (it needs CUDA {m} libraries the base does not have, or brings its own beside the base's), so the CUDA base gains nothing"
            )));
        }
        let extra = (*v >= semver::Version::new(2, 14, 0)).then_some("and-cuda");
        let note = (n > bn).then(|| {
            let libs = if extra.is_some() {
                format!("its `and-cuda` extra brings the CUDA {m}.{n} libraries, and ")
            } else {
                String::new()
            };
            format!(
                "tensorflow {v} is built for CUDA {m}.{n}, newer than the base's CUDA {bm}.{bn}: {libs}by NVIDIA's CUDA minor-version compatibility it runs on any CUDA {bm}.x driver (>= the {bm}.0 one), with a limited feature set (no JIT of newer PTX); see {MINOR_VERSION_COMPATIBILITY}"
            )
        });
        Ok(pick(build, extra, note))
    }

    /// The TensorFlow release nearest to `v` that installs for `need`.
    pub fn nearest_tf(&self, v: &semver::Version, need: &Need) -> Option<TfPick<'_>> {
        let ok: Vec<TfPick> = self
            .tf_releases()
            .into_iter()
            .filter_map(|r| self.pick_tf(r, need).ok())
            .collect();
        let versions: Vec<&semver::Version> = ok.iter().map(|p| &p.line.tensorflow).collect();
        let n = nearest(&versions, v)?.clone();
        ok.into_iter().find(|p| p.line.tensorflow == n)
    }
}

/// The version in `list` closest to `v` by release order: the newest not newer than
/// `v` or the oldest newer one, whichever is fewer releases away (the newer on a tie).
fn nearest<'a>(list: &[&'a semver::Version], v: &semver::Version) -> Option<&'a semver::Version> {
    let below = list.iter().copied().filter(|x| *x < v).max();
    let above = list.iter().copied().filter(|x| *x > v).min();
    let dist = |x: &semver::Version| {
        let k = |y: &semver::Version| y.major * 10_000 + y.minor * 100 + y.patch;
        k(x).abs_diff(k(v))
    };
    if let Some(same) = list.iter().copied().find(|x| *x == v) {
        return Some(same);
    }
    match (below, above) {
        (Some(b), Some(a)) => Some(if dist(a) <= dist(b) { a } else { b }),
        (b, a) => a.or(b),
    }
}

fn join<T: fmt::Display>(items: &[T]) -> String {
    items
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join(", ")
}

fn texts() -> (&'static str, &'static str) {
    static T: OnceLock<(&'static str, &'static str)> = OnceLock::new();
    *T.get_or_init(|| {
        (
            data::data_text(PYTORCH_FILE, PYTORCH_TSV),
            data::data_text(TENSORFLOW_FILE, TENSORFLOW_TSV),
        )
    })
}

/// The current framework files' text (for `catalogue update` and staleness notes).
pub fn current() -> (&'static str, &'static str) {
    texts()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(s: &str) -> semver::Version {
        semver::Version::parse(s).unwrap()
    }

    fn need(
        py: &str,
        arch: &'static str,
        cuda: Option<(u32, u32)>,
        source: Source,
    ) -> Need<'static> {
        Need {
            python: PyVersion::parse(py).unwrap(),
            arch,
            cuda,
            source,
        }
    }

    #[test]
    fn the_shipped_catalogue_parses_whole_and_is_stamped() {
        for (text, parsed) in [
            (PYTORCH_TSV, Frameworks::parse(PYTORCH_TSV, "").torch.len()),
            (
                TENSORFLOW_TSV,
                Frameworks::parse("", TENSORFLOW_TSV).tensorflow.len(),
            ),
        ] {
            assert_eq!(rows(text).count(), parsed, "a line does not parse");
            let (date, source) = data::stamp(text).expect("a `# updated:` stamp");
            assert!(
                date.starts_with("20") && source.contains("pypi.org"),
                "{source}"
            );
        }
        assert!(PYTORCH_TSV.lines().count() > 100);
    }

    #[test]
    fn wheel_names_read_as_cuda_lines() {
        assert_eq!(
            Wheel::parse("cu124").unwrap().cuda().as_deref(),
            Some("12.4")
        );
        assert_eq!(
            Wheel::parse("cu130").unwrap().cuda().as_deref(),
            Some("13.0")
        );
        assert_eq!(Wheel::parse("cu118").unwrap().to_string(), "cu118");
        assert_eq!(Wheel::parse("cpu"), Some(Wheel::Cpu));
        for bad in ["cu", "cu1", "rocm6.1", "cuda124", ""] {
            assert!(Wheel::parse(bad).is_none(), "{bad}");
        }
        let cu124 = Wheel::parse("cu124").unwrap();
        assert!(cu124.fits(Some((12, 4))) && cu124.fits(Some((12, 8))));
        assert!(!cu124.fits(Some((12, 1))) && !cu124.fits(Some((13, 0))) && !cu124.fits(None));
        assert!(Wheel::Cpu.fits(None) && !Wheel::Cpu.fits(Some((12, 4))));
    }

    /// The seed family: torch 2.3.0 with torchvision 0.18.0 and torchaudio 2.3.0 from
    /// the cu121 index on a CUDA 12.1 base; the newest variant a newer base can run.
    #[test]
    fn each_base_gets_the_newest_variant_it_can_run() {
        let f = Frameworks::get();
        let src = Source::VariantIndexes;
        let l = f
            .pick_torch(&v("2.3.0"), &need("3.8", "x86_64", Some((12, 1)), src))
            .unwrap();
        assert_eq!(
            (
                l.wheel.to_string(),
                l.torchvision.as_str(),
                l.torchaudio.as_str()
            ),
            ("cu121".into(), "0.18.0", "2.3.0")
        );
        let l = f
            .pick_torch(&v("2.5.1"), &need("3.11", "x86_64", Some((12, 8)), src))
            .unwrap();
        assert_eq!(l.wheel.to_string(), "cu124");
        let l = f
            .pick_torch(&v("2.5.1"), &need("3.11", "x86_64", None, src))
            .unwrap();
        assert_eq!(l.wheel, Wheel::Cpu);
        let l = f
            .pick_torch(&v("2.7.1"), &need("3.12", "aarch64", Some((12, 8)), src))
            .unwrap();
        assert_eq!(l.wheel.to_string(), "cu128");
    }

    #[test]
    fn impossible_combinations_say_why_and_what_is_nearest() {
        let f = Frameworks::get();
        let src = Source::VariantIndexes;
        let py38 = need("3.8", "x86_64", Some((12, 4)), src);
        let e = f.pick_torch(&v("2.7.1"), &py38).unwrap_err().why;
        assert!(
            e.contains("no wheel for Python 3.8") && e.contains("3.9, 3.10"),
            "{e}"
        );
        let (near, newer) = f.nearest_torch(&v("2.7.1"), &py38).unwrap();
        assert_eq!(
            (near.torch.to_string(), near.wheel.to_string(), newer),
            ("2.4.1".into(), "cu124".into(), false)
        );
        let cuda121 = need("3.11", "x86_64", Some((12, 1)), src);
        let e = f.pick_torch(&v("2.7.1"), &cuda121).unwrap_err().why;
        assert!(
            e.contains("no wheel for CUDA 12.1") && e.contains("cu118, cu126, cu128"),
            "{e}"
        );
        assert_eq!(
            f.nearest_torch(&v("2.7.1"), &cuda121)
                .unwrap()
                .0
                .torch
                .to_string(),
            "2.5.1"
        );
        let arm = need("3.11", "aarch64", Some((12, 4)), src);
        let e = f.pick_torch(&v("2.5.1"), &arm).unwrap_err();
        assert_eq!(e.on, Key::Platform);
        let e = e.why;
        assert!(e.contains("no aarch64 wheel of cu121, cu124"), "{e}");
        let e = f.pick_torch(&v("2.5.3"), &arm).unwrap_err().why;
        assert!(
            e.contains("not in the framework catalogue")
                && e.contains("nearest known release is 2.5.1"),
            "{e}"
        );
    }

    /// PyPI serves one build per release: on x86_64 the CUDA build the catalogue marks
    /// (cu121 for 2.1.x), also on a CPU base; aarch64 got CPU builds up to 2.10.
    #[test]
    fn the_package_index_serves_one_named_build() {
        let f = Frameworks::get();
        let pypi = Source::PackageIndex;
        let l = f
            .pick_torch(&v("2.1.2"), &need("3.11", "x86_64", None, pypi))
            .unwrap();
        assert_eq!(l.wheel.to_string(), "cu121");
        let l = f
            .pick_torch(&v("2.5.1"), &need("3.11", "aarch64", None, pypi))
            .unwrap();
        assert_eq!(l.wheel, Wheel::Cpu);
        let l = f
            .pick_torch(&v("2.11.0"), &need("3.11", "aarch64", Some((13, 0)), pypi))
            .unwrap();
        assert_eq!(l.wheel.to_string(), "cu130");
        let e = f
            .pick_torch(&v("2.8.0"), &need("3.11", "x86_64", Some((12, 4)), pypi))
            .unwrap_err()
            .why;
        assert!(e.contains("only as its cu128 build"), "{e}");
    }

    /// What a TensorFlow image is on each kind of base, and what is refused.
    #[test]
    fn tensorflow_takes_its_cuda_build_where_the_base_fits() {
        let f = Frameworks::get();
        let pypi = Source::PackageIndex;
        let pick = |tf: &str, py: &str, arch: &'static str, cuda| {
            f.pick_tf(&v(tf), &need(py, arch, cuda, pypi))
                .map(|p| (p.wheel.to_string(), p.extra, p.note))
        };
        // CUDA base, same major, not older: the CUDA build with its libraries, no note
        let (w, x, note) = pick("2.17.0", "3.11", "x86_64", Some((12, 4))).unwrap();
        assert_eq!((w.as_str(), x, note), ("cu123", Some("and-cuda"), None));
        // 2.13: no and-cuda extra, the base's own CUDA libraries
        let (w, x, note) = pick("2.13.1", "3.8", "x86_64", Some((11, 8))).unwrap();
        assert_eq!((w.as_str(), x, note), ("cu118", None, None));
        // the seed's TensorFlow: 2.15.0 is built for CUDA 12.2, the base is 12.1: it
        // works by minor-version compatibility, with a note naming the source
        let (w, x, note) = pick("2.15.0", "3.10", "x86_64", Some((12, 1))).unwrap();
        let note = note.expect("a note");
        assert_eq!((w.as_str(), x), ("cu122", Some("and-cuda")));
        assert!(
            note.contains("built for CUDA 12.2, newer than the base's CUDA 12.1")
                && note.contains("minor-version compatibility")
                && note.contains(MINOR_VERSION_COMPATIBILITY),
            "{note}"
        );
        let (w, _, note) = pick("2.18.0", "3.11", "x86_64", Some((12, 4))).unwrap();
        assert!(w == "cu125" && note.is_some_and(|n| n.contains("CUDA 12.5")));
        // a different major cannot work: refused with the reason and the source
        let e = f
            .pick_tf(&v("2.13.1"), &need("3.10", "x86_64", Some((12, 4)), pypi))
            .unwrap_err();
        assert_eq!(e.on, Key::Cuda);
        assert!(e.why.contains("older CUDA major"), "{}", e.why);
        let e = f
            .pick_tf(&v("2.21.0"), &need("3.11", "x86_64", Some((11, 8)), pypi))
            .unwrap_err()
            .why;
        assert!(
            e.contains("newer CUDA major") && e.contains(MINOR_VERSION_COMPATIBILITY),
            "{e}"
        );
        assert!(pick("2.21.0", "3.11", "x86_64", Some((13, 0))).is_err());
        let older = need("3.11", "x86_64", Some((11, 8)), pypi);
        assert_eq!(
            f.nearest_tf(&v("2.18.0"), &older)
                .unwrap()
                .line
                .tensorflow
                .to_string(),
            "2.14.1"
        );
        // CPU base, x86_64: the package index's wheel IS the CUDA build; planned as
        // what it reports (cu125), without the libraries, with a note
        let (w, x, note) = pick("2.21.0", "3.11", "x86_64", None).unwrap();
        assert_eq!((w.as_str(), x), ("cu125", None));
        assert!(note.is_some_and(|n| n.contains("runs on the CPU")));
        // aarch64: CPU builds; on a CUDA base refused
        let (w, x, note) = pick("2.17.0", "3.12", "aarch64", None).unwrap();
        assert_eq!((w.as_str(), x, note), ("cpu", None, None));
        let e = f
            .pick_tf(&v("2.17.0"), &need("3.12", "aarch64", Some((12, 4)), pypi))
            .unwrap_err();
        assert_eq!(e.on, Key::Platform);
        assert!(f
            .pick_tf(&v("2.21.0"), &need("3.9", "x86_64", None, pypi))
            .unwrap_err()
            .why
            .contains("Python 3.9"));
    }
}
