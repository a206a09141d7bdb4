//! Python and Miniconda versions, compared as versions (3.8 < 3.10), never as strings.

use std::fmt;

/// A Python minor series such as 3.10.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct PyVersion {
    pub major: u32,
    pub minor: u32,
}

impl PyVersion {
    pub fn parse(s: &str) -> Result<Self, String> {
        let bad =
            || format!("`{s}` is not a Python version; write major.minor, for example \"3.10\"");
        let (a, b) = s.split_once('.').ok_or_else(bad)?;
        let digits =
            |x: &str| !x.is_empty() && x.len() <= 3 && x.bytes().all(|c| c.is_ascii_digit());
        if !digits(a) || !digits(b) {
            return Err(bad());
        }
        let v = PyVersion {
            major: a.parse().map_err(|_| bad())?,
            minor: b.parse().map_err(|_| bad())?,
        };
        if v.major != 3 {
            return Err(format!(
                "Python {s} is not offered by Miniconda3 (it ships Python 3.x)"
            ));
        }
        Ok(v)
    }

    /// `py310` in installer names.
    pub fn tag(self) -> String {
        format!("py{}{}", self.major, self.minor)
    }
}

impl fmt::Display for PyVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}", self.major, self.minor)
    }
}

/// A Miniconda release: `24.5.0-0` (22.11 and later carry a build counter) or `4.12.0`.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct CondaRelease {
    pub version: semver::Version,
    pub build: Option<u32>,
}

impl CondaRelease {
    pub fn parse(s: &str) -> Result<Self, String> {
        let bad = || {
            format!("`{s}` is not a Miniconda release; write VERSION-BUILD such as \"24.5.0-0\" (or \"4.12.0\" for the 4.x series)")
        };
        let (ver, build) = match s.split_once('-') {
            Some((v, b)) => (v, Some(b.parse::<u32>().map_err(|_| bad())?)),
            None => (s, None),
        };
        let version = semver::Version::parse(ver).map_err(|_| bad())?;
        if !version.pre.is_empty() || !version.build.is_empty() {
            return Err(bad());
        }
        let r = CondaRelease { version, build };
        if r.has_build_counter() != build.is_some() {
            return Err(if build.is_some() {
                format!("Miniconda {ver} predates build counters; write \"{ver}\"")
            } else {
                format!("Miniconda {ver} installers carry a build counter; write \"{ver}-0\" (or the -1/-2 the release used)")
            });
        }
        Ok(r)
    }

    /// Releases from 22.11 on name their installers with a `-{build}` counter.
    pub fn has_build_counter(&self) -> bool {
        self.version.major >= 22
    }

    /// Miniconda 25.x and later gate `conda install` from Anaconda's channels behind
    /// terms-of-service acceptance.
    pub fn has_tos_gate(&self) -> bool {
        self.version.major >= 25
    }

    pub fn installer_file(&self, py: PyVersion, arch: &str) -> String {
        format!("Miniconda3-{}_{}-Linux-{arch}.sh", py.tag(), self)
    }
}

impl fmt::Display for CondaRelease {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.build {
            Some(b) => write!(f, "{}-{b}", self.version),
            None => write!(f, "{}", self.version),
        }
    }
}

/// Split an installer file name into its Python, release and arch.
pub fn parse_installer_file(name: &str) -> Option<(PyVersion, CondaRelease, String)> {
    let rest = name.strip_prefix("Miniconda3-py")?.strip_suffix(".sh")?;
    let (py, rest) = rest.split_once('_')?;
    let (release, arch) = rest.split_once("-Linux-")?;
    if py.len() < 2 {
        return None;
    }
    let pyv = PyVersion::parse(&format!("{}.{}", &py[..1], &py[1..])).ok()?;
    let release = CondaRelease::parse(release).ok()?;
    Some((pyv, release, arch.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn python_versions_sort_numerically() {
        let mut v: Vec<PyVersion> = ["3.10", "3.8", "3.12", "3.9"]
            .iter()
            .map(|s| PyVersion::parse(s).unwrap())
            .collect();
        v.sort();
        let s: Vec<String> = v.iter().map(ToString::to_string).collect();
        assert_eq!(s, ["3.8", "3.9", "3.10", "3.12"]);
        assert_eq!(PyVersion::parse("3.10").unwrap().tag(), "py310");
    }

    #[test]
    fn bad_python_versions_are_refused() {
        assert!(PyVersion::parse("3").is_err());
        assert!(PyVersion::parse("3.10.1").is_err());
        assert!(PyVersion::parse("2.7").unwrap_err().contains("Python 3.x"));
        assert!(PyVersion::parse("3.x").is_err());
    }

    #[test]
    fn installer_names_follow_both_eras() {
        let py = PyVersion::parse("3.10").unwrap();
        let r = CondaRelease::parse("24.5.0-0").unwrap();
        assert_eq!(
            r.installer_file(py, "x86_64"),
            "Miniconda3-py310_24.5.0-0-Linux-x86_64.sh"
        );
        let old = CondaRelease::parse("4.12.0").unwrap();
        assert_eq!(
            old.installer_file(PyVersion::parse("3.9").unwrap(), "aarch64"),
            "Miniconda3-py39_4.12.0-Linux-aarch64.sh"
        );
        assert!(CondaRelease::parse("24.5.0")
            .unwrap_err()
            .contains("build counter"));
        assert!(CondaRelease::parse("4.12.0-0")
            .unwrap_err()
            .contains("predates"));
        assert!(CondaRelease::parse("latest").is_err());
    }

    #[test]
    fn installer_names_round_trip() {
        let (py, r, arch) =
            parse_installer_file("Miniconda3-py38_23.11.0-2-Linux-x86_64.sh").unwrap();
        assert_eq!(
            (py.to_string(), r.to_string(), arch.as_str()),
            ("3.8".into(), "23.11.0-2".into(), "x86_64")
        );
        assert!(parse_installer_file("Miniconda3-latest-Linux-x86_64.sh").is_none());
    }

    #[test]
    fn releases_order_by_version_then_build() {
        let a = CondaRelease::parse("23.11.0-1").unwrap();
        let b = CondaRelease::parse("23.11.0-2").unwrap();
        let c = CondaRelease::parse("24.1.2-0").unwrap();
        assert!(a < b && b < c);
    }
}
