//! Docker engines as the user names them: where cells are built.
//!
//! An engine is a name, a target (a `DOCKER_HOST` URL or a docker context) and how many
//! builds it runs at once. Engines come from `--engine NAME=TARGET[,jobs=N]` or the
//! `engines:` list of matrix.yaml; without either, the one engine is whatever the
//! docker client points at. Names are what the manifest records per cell, so that
//! push and verify reach the engine that holds the image.

use std::fmt;
use std::str::FromStr;

#[derive(
    Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize, schemars::JsonSchema,
)]
#[serde(rename_all = "kebab-case")]
pub enum Target {
    /// A `DOCKER_HOST` value: `unix:///…`, `tcp://…`, `ssh://…`, `npipe://…`, `fd://…`.
    Host(String),
    /// A docker context name (`docker context ls`).
    Context(String),
    /// Whatever the client points at (DOCKER_HOST, or its current context).
    Default,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EngineSpec {
    pub name: String,
    pub target: Target,
    /// Builds at once on this engine; None means the global `-j`.
    pub jobs: Option<usize>,
    /// The platforms it builds, natively or emulated; empty means its own and those
    /// its host emulates (found out when it answers).
    pub platforms: Vec<String>,
    /// The buildx builder that builds for it (its images are loaded into the
    /// engine); None is the global `--buildx-builder`, else the engine's own BuildKit.
    pub buildx_builder: Option<String>,
}

pub const MAX_ENGINES: usize = 64;
const SCHEMES: &[&str] = &["unix://", "tcp://", "ssh://", "npipe://", "fd://"];

impl fmt::Display for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Target::Host(h) => f.write_str(h),
            Target::Context(c) => f.write_str(c),
            Target::Default => f.write_str("the client's default engine"),
        }
    }
}

pub fn check_name(name: &str) -> Result<(), String> {
    let ok = !name.is_empty()
        && name.len() <= 32
        && name.as_bytes()[0].is_ascii_alphanumeric()
        && name
            .bytes()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || b"_.-".contains(&c));
    if ok {
        Ok(())
    } else {
        Err(format!(
            "`{name}` is not an engine name (1–32 of a-z, 0-9, `_`, `.`, `-`, starting with a letter or digit)"
        ))
    }
}

/// A `DOCKER_HOST` URL when it has a scheme, otherwise a context name.
pub fn parse_target(t: &str) -> Result<Target, String> {
    if t.is_empty() || t.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(format!(
            "`{t}` is not an engine target (a DOCKER_HOST URL such as unix:///run/docker-b.sock or ssh://user@host, or a docker context name)"
        ));
    }
    if t.contains("://") {
        // ssh reads a host (or user) that starts with `-` as an option
        // (`ssh://-oProxyCommand=…` runs a command)
        let dash = t.strip_prefix("ssh://").is_some_and(|rest| {
            rest.starts_with('-')
                || rest
                    .split_once('@')
                    .is_some_and(|(_, h)| h.starts_with('-'))
        });
        if dash {
            return Err(format!(
                "`{t}` is not an ssh:// engine target (a user or host may not start with `-`)"
            ));
        }
        if SCHEMES
            .iter()
            .any(|s| t.starts_with(s) && t.len() > s.len())
        {
            Ok(Target::Host(t.to_string()))
        } else {
            Err(format!(
                "`{t}` is not a DOCKER_HOST URL (expected one of the schemes: {})",
                SCHEMES.join(", ")
            ))
        }
    } else if t
        .bytes()
        .all(|c| c.is_ascii_alphanumeric() || b"_.-".contains(&c))
    {
        Ok(Target::Context(t.to_string()))
    } else {
        Err(format!(
            "`{t}` is neither a DOCKER_HOST URL ({}) nor a docker context name",
            SCHEMES.join(", ")
        ))
    }
}

pub fn check_jobs(n: &str) -> Result<usize, String> {
    match n.parse::<usize>() {
        Ok(j) if (1..=256).contains(&j) => Ok(j),
        _ => Err(format!(
            "`jobs={n}` is not a number of builds (expected 1 to 256)"
        )),
    }
}

/// A platform an engine may be said to build.
pub fn check_platform(p: &str) -> Result<String, String> {
    if crate::coord::installer_arch(p).is_some() {
        Ok(p.to_string())
    } else {
        let known: Vec<&str> = crate::coord::PLATFORMS.iter().map(|(p, _)| *p).collect();
        Err(format!(
            "`{p}` is not a platform (expected one of: {})",
            known.join(", ")
        ))
    }
}

/// A buildx builder's name (`docker buildx ls`), as `docker buildx create --name`
/// accepts it.
pub fn check_buildx_builder(name: &str) -> Result<String, String> {
    let ok = !name.is_empty()
        && name.len() <= 64
        && name.as_bytes()[0].is_ascii_alphanumeric()
        && name
            .bytes()
            .all(|c| c.is_ascii_alphanumeric() || b"_.-".contains(&c));
    if ok {
        Ok(name.to_string())
    } else {
        Err(format!(
            "`{name}` is not a buildx builder name (1–64 of ASCII letters, digits, `_`, `.`, `-`, starting with a letter or digit; `docker buildx ls` lists them)"
        ))
    }
}

impl FromStr for EngineSpec {
    type Err = String;

    /// `NAME=TARGET[,jobs=N][,platform=P]...[,buildx_builder=B]`.
    fn from_str(s: &str) -> Result<Self, String> {
        let usage = "expected NAME=TARGET[,jobs=N][,platform=P]...[,buildx_builder=B], e.g. b=unix:///run/docker-b.sock,jobs=2,platform=linux/arm64";
        let (name, rest) = s
            .split_once('=')
            .ok_or_else(|| format!("`{s}` is not an engine ({usage})"))?;
        check_name(name)?;
        let mut parts = rest.split(',');
        let target = parse_target(parts.next().unwrap_or_default())?;
        let (mut jobs, mut platforms, mut buildx_builder) = (None, Vec::new(), None);
        for opt in parts {
            match opt.split_once('=') {
                Some(("jobs", j)) => jobs = Some(check_jobs(j)?),
                Some(("buildx_builder", b)) => buildx_builder = Some(check_buildx_builder(b)?),
                Some(("platform", p)) => {
                    let p = check_platform(p)?;
                    if !platforms.contains(&p) {
                        platforms.push(p);
                    }
                }
                _ => {
                    return Err(format!(
                        "`{opt}` in `{s}` is not an engine option ({usage})"
                    ))
                }
            }
        }
        Ok(EngineSpec {
            name: name.to_string(),
            target,
            jobs,
            platforms,
            buildx_builder,
        })
    }
}

/// Refuse two engines with one name or one target (the second would only add
/// contention on the same daemon while looking like more capacity).
pub fn check_unique(specs: &[EngineSpec]) -> Result<(), String> {
    if specs.len() > MAX_ENGINES {
        return Err(format!(
            "{} engines given; at most {MAX_ENGINES} are supported",
            specs.len()
        ));
    }
    for (i, a) in specs.iter().enumerate() {
        for b in &specs[..i] {
            if a.name == b.name {
                return Err(format!("engine name `{}` is given twice", a.name));
            }
            if a.target == b.target {
                return Err(format!(
                    "engines `{}` and `{}` both point at {}",
                    b.name, a.name, a.target
                ));
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn engines_parse_from_the_command_line() {
        let e: EngineSpec = "b=unix:///run/docker-b.sock,jobs=3".parse().unwrap();
        assert_eq!(e.name, "b");
        assert_eq!(e.target, Target::Host("unix:///run/docker-b.sock".into()));
        assert_eq!(e.jobs, Some(3));
        let e: EngineSpec = "gpu-1=gpu-box".parse().unwrap();
        assert_eq!(e.target, Target::Context("gpu-box".into()));
        assert_eq!(e.jobs, None);
        let e: EngineSpec = "r=ssh://ci@build-3".parse().unwrap();
        assert_eq!(e.target, Target::Host("ssh://ci@build-3".into()));
        let e: EngineSpec = "arm=unix:///a.sock,platform=linux/arm64,jobs=1,platform=linux/amd64"
            .parse()
            .unwrap();
        assert_eq!(e.platforms, ["linux/arm64", "linux/amd64"]);
        assert_eq!(e.jobs, Some(1));
        assert_eq!(e.buildx_builder, None);
        let e: EngineSpec = "k=ctx,buildx_builder=k8s-farm".parse().unwrap();
        assert_eq!(e.buildx_builder.as_deref(), Some("k8s-farm"));
    }

    #[test]
    fn bad_engines_say_what_would_be_valid() {
        let err = |s: &str| s.parse::<EngineSpec>().unwrap_err();
        assert!(err("unix:///x.sock").contains("expected NAME=TARGET"));
        assert!(err("B=ctx").contains("not an engine name"));
        assert!(err("b=http://x").contains("expected one of the schemes"));
        assert!(err("b=ctx,jobs=0").contains("expected 1 to 256"));
        assert!(err("b=a b").contains("not an engine target"));
        assert!(err("b=unix://").contains("schemes"));
        assert!(err("b=ctx,platform=linux/riscv64").contains("expected one of: linux/amd64"));
        assert!(err("b=ctx,gpus=all").contains("not an engine option"));
        assert!(err("b=ctx,buildx_builder=a b").contains("not a buildx builder name"));
    }

    #[test]
    fn names_and_targets_are_unique() {
        let a: EngineSpec = "a=unix:///a.sock".parse().unwrap();
        let b: EngineSpec = "b=unix:///a.sock".parse().unwrap();
        let a2: EngineSpec = "a=ctx".parse().unwrap();
        assert!(check_unique(&[a.clone(), b])
            .unwrap_err()
            .contains("both point at unix:///a.sock"));
        assert!(check_unique(&[a.clone(), a2])
            .unwrap_err()
            .contains("given twice"));
        assert!(check_unique(&[a]).is_ok());
    }
}
