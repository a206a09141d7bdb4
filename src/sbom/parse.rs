//! The collection script's output (`collect.sh`) → the packages it lists. The output is
//! read, never trusted: lines that fit no section are counted and skipped, a source
//! whose section is missing says so, and nothing here fails.

use std::collections::BTreeMap;

/// Where a package comes from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Source {
    Dpkg,
    Conda,
    Pip,
}

impl Source {
    pub const ALL: [Source; 3] = [Source::Dpkg, Source::Conda, Source::Pip];

    pub fn as_str(self) -> &'static str {
        match self {
            Source::Dpkg => "dpkg",
            Source::Conda => "conda",
            Source::Pip => "pip",
        }
    }
}

/// One installed package.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Package {
    pub name: String,
    pub version: String,
    /// dpkg: the architecture (`amd64`, `all`).
    pub arch: Option<String>,
    /// conda: the build string and channel.
    pub build: Option<String>,
    pub channel: Option<String>,
    pub license: Option<String>,
}

/// What the script said about one source.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Section {
    /// The script reached this source's section at all.
    pub seen: bool,
    pub packages: Vec<Package>,
    /// Why it lists nothing (no dpkg-query, no conda-meta, no python…).
    pub error: Option<String>,
    /// Entries the script could not read (a broken conda-meta file…).
    pub warnings: Vec<String>,
}

/// The whole listing.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Listing {
    /// `/etc/os-release`'s ID and VERSION_ID (`debian`, `12`).
    pub os: Option<(String, String)>,
    /// The conda prefix the listing looked in, and the Python that ran it.
    pub prefix: Option<String>,
    pub python: Option<String>,
    pub sections: BTreeMap<Source, Section>,
    /// Lines that fit nowhere.
    pub skipped: usize,
    /// The script printed its last line (`@end`): the listing is whole.
    pub complete: bool,
}

impl Listing {
    pub fn section(&self, s: Source) -> Option<&Section> {
        self.sections.get(&s)
    }

    /// How many packages of a source it lists.
    pub fn count(&self, s: Source) -> usize {
        self.section(s).map_or(0, |x| x.packages.len())
    }

    /// Why a source lists no package, when it lists none (one line).
    pub fn why_none(&self, s: Source) -> Option<String> {
        if self.count(s) > 0 {
            return None;
        }
        let name = s.as_str();
        Some(match self.section(s) {
            None if self.complete => format!("{name}: not listed"),
            None => format!("{name}: not listed (the listing stopped early)"),
            Some(x) => match &x.error {
                Some(e) => format!("{name}: {e}"),
                None => format!("{name}: no package installed"),
            },
        })
    }
}

/// Where the lines being read go.
#[derive(Clone, Copy, PartialEq)]
enum At {
    Start,
    In(Source),
    DpkgLicenses,
    Done,
}

/// Read the script's output.
pub fn parse(text: &str) -> Listing {
    let mut l = Listing::default();
    let mut at = At::Start;
    let mut licenses: BTreeMap<String, String> = BTreeMap::new();
    for raw in text.lines() {
        let line = raw.trim_end_matches('\r');
        if line.trim().is_empty() {
            continue;
        }
        if let Some(marker) = line.strip_prefix('@') {
            at = marker_line(&mut l, at, marker);
            continue;
        }
        let ok = match at {
            At::In(s) => package_line(s, line).map(|p| {
                if let Some(p) = p {
                    section(&mut l, s).packages.push(p);
                }
            }),
            At::DpkgLicenses => line.split_once('\t').map(|(n, v)| {
                if !n.trim().is_empty() && !v.trim().is_empty() {
                    licenses.insert(n.trim().to_string(), v.trim().to_string());
                }
            }),
            At::Start | At::Done => None,
        };
        // a dpkg line of a package not installed is not news, only not a package
        if ok.is_none() && !not_installed(at, line) {
            l.skipped += 1;
        }
    }
    finish(&mut l, &licenses);
    l
}

fn section(l: &mut Listing, s: Source) -> &mut Section {
    l.sections.entry(s).or_default()
}

/// `@WORD REST`: a new section, an error or a warning of the current one, the end.
fn marker_line(l: &mut Listing, at: At, marker: &str) -> At {
    let (word, rest) = marker.split_once(' ').unwrap_or((marker, ""));
    let rest = rest.trim().to_string();
    let start = |l: &mut Listing, s: Source| {
        section(l, s).seen = true;
        At::In(s)
    };
    match word {
        "image-matrix-packages" => At::Start,
        "os" => {
            let (id, version) = rest.split_once('\t').unwrap_or((&rest, ""));
            l.os = Some((id.trim().to_string(), version.trim().to_string()));
            at
        }
        "dpkg" => start(l, Source::Dpkg),
        "conda" => {
            l.prefix = Some(rest).filter(|r| !r.is_empty());
            start(l, Source::Conda)
        }
        "pip" => {
            l.python = Some(rest).filter(|r| !r.is_empty());
            start(l, Source::Pip)
        }
        "dpkg-licenses" => At::DpkgLicenses,
        "error" | "warning" => {
            if let At::In(s) = at {
                let x = section(l, s);
                if word == "error" {
                    x.error.get_or_insert(rest);
                } else {
                    x.warnings.push(rest);
                }
            } else {
                l.skipped += 1;
            }
            at
        }
        "end" => {
            l.complete = true;
            At::Done
        }
        _ => {
            l.skipped += 1;
            at
        }
    }
}

/// One package line of a section: None when it is not one, `Some(None)` for a line
/// understood that lists no package of this source.
fn package_line(s: Source, line: &str) -> Option<Option<Package>> {
    let f: Vec<&str> = line.split('\t').map(str::trim).collect();
    let text = |i: usize| f.get(i).map(|v| v.to_string()).filter(|v| !v.is_empty());
    let p = match s {
        // status, name, version, architecture
        Source::Dpkg => {
            let status = f.first()?;
            if f.len() < 4 || !(status.starts_with("ii") || status.starts_with("hi")) {
                return None;
            }
            Package {
                name: text(1)?,
                version: text(2)?,
                arch: text(3),
                ..Package::default()
            }
        }
        // name, version, build, channel, license
        Source::Conda => Package {
            name: text(0)?,
            version: text(1)?,
            build: text(2),
            channel: text(3),
            license: text(4),
            ..Package::default()
        },
        // name, version, installer, license: what conda installed is listed there
        Source::Pip => {
            if text(2).as_deref() == Some("conda") {
                return text(0).map(|_| None);
            }
            Package {
                name: text(0)?,
                version: text(1)?,
                license: text(3),
                ..Package::default()
            }
        }
    };
    valid(&p.name).then_some(Some(p))
}

/// A package name: printable, no spaces.
fn valid(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 200
        && !name.chars().any(|c| c.is_whitespace() || c.is_control())
}

/// A dpkg line of a package removed (`rc`) or half-installed: known, not installed.
fn not_installed(at: At, line: &str) -> bool {
    at == At::In(Source::Dpkg) && line.split('\t').count() >= 4 && !line.starts_with("ii")
}

/// Sort, drop duplicates, give dpkg packages their licences, and drop from pip what
/// conda installed (the same files, listed once, as conda packages).
fn finish(l: &mut Listing, licenses: &BTreeMap<String, String>) {
    for (s, x) in l.sections.iter_mut() {
        if *s == Source::Dpkg {
            for p in &mut x.packages {
                if p.license.is_none() {
                    p.license = licenses.get(&p.name).cloned();
                }
            }
        }
        x.packages.sort_by(|a, b| {
            (a.name.to_lowercase(), &a.version, &a.arch).cmp(&(
                b.name.to_lowercase(),
                &b.version,
                &b.arch,
            ))
        });
        x.packages.dedup_by(|a, b| {
            a.name.eq_ignore_ascii_case(&b.name) && a.version == b.version && a.arch == b.arch
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const REAL: &str = "@image-matrix-packages 1\n@os debian\t12\n@dpkg\n\
ii \tbash\t5.2.15-2+b13\tamd64\n\
ii \tlibc6\t2.36-9+deb12u10\tamd64\n\
rc \told-kernel\t1.0\tamd64\n\
ii \tlibc6\t2.36-9+deb12u10\ti386\n\
@conda /opt/conda\n\
numpy\t1.26.4\tpy311h_0\tpkgs/main\tBSD-3-Clause\n\
python\t3.11.9\th955ad1f_0\tpkgs/main\tPSF-2.0\n\
@warning broken.json: Expecting value: line 1 column 1\n\
@pip 3.11.9\n\
jupyterlab\t4.2.5\tpip\tBSD License\n\
numpy\t1.26.4\tconda\tBSD License\n\
Jupyter_Server\t2.14.2\t\t\n\
@dpkg-licenses\nbash\tGPL-3+\n\
@end\n";

    #[test]
    fn a_whole_listing_is_read_source_by_source() {
        let l = parse(REAL);
        assert!(l.complete);
        assert_eq!(l.os, Some(("debian".into(), "12".into())));
        assert_eq!(l.prefix.as_deref(), Some("/opt/conda"));
        assert_eq!(l.python.as_deref(), Some("3.11.9"));
        // `rc` is removed, not installed; two architectures of libc6 are two packages
        let dpkg = &l.section(Source::Dpkg).unwrap().packages;
        let names: Vec<(&str, Option<&str>)> = dpkg
            .iter()
            .map(|p| (p.name.as_str(), p.arch.as_deref()))
            .collect();
        assert_eq!(
            names,
            [
                ("bash", Some("amd64")),
                ("libc6", Some("amd64")),
                ("libc6", Some("i386"))
            ]
        );
        assert_eq!(dpkg[0].license.as_deref(), Some("GPL-3+"));
        assert_eq!(dpkg[1].license, None);
        let conda = l.section(Source::Conda).unwrap();
        assert_eq!(conda.packages.len(), 2);
        assert_eq!(conda.packages[0].build.as_deref(), Some("py311h_0"));
        assert_eq!(conda.packages[0].license.as_deref(), Some("BSD-3-Clause"));
        assert_eq!(conda.warnings.len(), 1);
        // what conda installed is conda's; an empty licence is none
        let pip = &l.section(Source::Pip).unwrap().packages;
        let names: Vec<&str> = pip.iter().map(|p| p.name.as_str()).collect();
        assert_eq!(names, ["Jupyter_Server", "jupyterlab"]);
        assert_eq!(pip[0].license, None);
        assert_eq!(pip[1].license.as_deref(), Some("BSD License"));
        assert_eq!(l.skipped, 0);
        assert!(l.why_none(Source::Pip).is_none());
    }

    #[test]
    fn odd_lines_are_counted_and_skipped() {
        let text = "noise before the header\n@image-matrix-packages 1\n@dpkg\r\n\
ii \tbash\t5.2\tamd64\r\n\
ii \tonly-two-fields\n\
ii \t\t1.0\tamd64\n\
ii \twith space\t1.0\tamd64\n\
\n   \n\
@surprise what\n\
@pip 3.12.1\n\
just-a-name\n\
good\t1.0\tpip\tMIT\n\
@error after a package, kept\n\
@end\ntrailing words\n";
        let l = parse(text);
        assert_eq!(l.count(Source::Dpkg), 1);
        assert_eq!(l.count(Source::Pip), 1);
        // noise, only-two-fields, empty name, name with space, @surprise, just-a-name,
        // trailing words
        assert_eq!(l.skipped, 7);
        assert!(l.complete);
        assert_eq!(
            l.section(Source::Pip).unwrap().error.as_deref(),
            Some("after a package, kept")
        );
    }

    #[test]
    fn a_source_that_lists_nothing_says_why() {
        let l = parse(
            "@image-matrix-packages 1\n@dpkg\n@error no dpkg-query (not a Debian-based image)\n\
@conda /opt/miniconda3\n@error no conda-meta folder in /opt/miniconda3 (not a conda environment)\n\
@pip 3.11.2\n@end\n",
        );
        assert_eq!(
            l.why_none(Source::Dpkg).unwrap(),
            "dpkg: no dpkg-query (not a Debian-based image)"
        );
        assert!(l
            .why_none(Source::Conda)
            .unwrap()
            .contains("no conda-meta folder"));
        assert_eq!(
            l.why_none(Source::Pip).unwrap(),
            "pip: no package installed"
        );
        // a listing cut short (python died) says so for what it never reached
        let cut = parse("@image-matrix-packages 1\n@dpkg\nii \tbash\t5.2\tamd64\n");
        assert!(!cut.complete);
        assert_eq!(
            cut.why_none(Source::Conda).unwrap(),
            "conda: not listed (the listing stopped early)"
        );
        assert_eq!(parse("").count(Source::Dpkg), 0);
    }

    #[test]
    fn duplicates_are_listed_once_in_name_order() {
        let l = parse("@pip 3\nb\t1\tpip\t\nA\t2\tpip\t\nb\t1\tpip\t\n@end\n");
        let names: Vec<&str> = l
            .section(Source::Pip)
            .unwrap()
            .packages
            .iter()
            .map(|p| p.name.as_str())
            .collect();
        assert_eq!(names, ["A", "b"]);
    }
}
