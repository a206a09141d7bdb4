//! The engines of a run, connected: which engines to use (flags, the matrix, a
//! manifest's record, or the client's default), whether each answers, and the client
//! that reaches it. Used by build, verify and push alike.
//!
//! Nothing here writes the terminal: what people should be told (an engine that does
//! not answer, a pull that failed) comes back as `warnings`, or goes to the `say` its
//! caller gives [`connect`], for the command to say.

use std::collections::HashMap;
use std::num::NonZeroUsize;
use std::path::Path;

use crate::config::engine::{check_unique, EngineSpec, Target};
use crate::docker::{Builder, Docker, LocalImage};
use crate::error::Error;
use crate::manifest::EngineRecord;

/// The name of the one engine when none is configured.
pub const DEFAULT_ENGINE: &str = "default";

/// What the daemon said about itself.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ServerInfo {
    pub client_version: String,
    pub server_version: String,
    /// `amd64`, `arm64`…: the platform it builds natively.
    pub arch: String,
}

/// An engine that answered: its name and target, how many builds it runs at once,
/// the client that reaches it and what its daemon is.
#[derive(Clone, Debug)]
pub struct Engine {
    pub name: String,
    pub target: Target,
    pub slots: NonZeroUsize,
    pub docker: Docker,
    pub server: ServerInfo,
    /// Platforms it builds: its own, and those it runs under emulation.
    pub platforms: Vec<String>,
    /// How it builds each foreign platform: the emulator's binfmt handler, or None
    /// where the user declared the platform for an engine on another host.
    pub emulators: Vec<(String, Option<String>)>,
}

impl Engine {
    /// `linux/amd64` for an amd64 daemon.
    pub fn native_platform(&self) -> String {
        format!("linux/{}", self.server.arch)
    }

    /// Whether it builds images of `platform`.
    pub fn builds(&self, platform: &str) -> bool {
        self.platforms.iter().any(|p| p == platform)
    }

    /// Whether it builds (and runs) `platform` under emulation.
    pub fn emulates(&self, platform: &str) -> bool {
        platform != self.native_platform()
    }

    /// `native`, `emulated (qemu-aarch64)` or `emulated (declared)`.
    pub fn how(&self, platform: &str) -> String {
        if !self.emulates(platform) {
            return "native".into();
        }
        match self.emulators.iter().find(|(p, _)| p == platform) {
            Some((_, Some(h))) => format!("emulated ({h})"),
            _ => "emulated (declared for a remote engine)".into(),
        }
    }

    pub fn record(&self) -> EngineRecord {
        EngineRecord {
            name: self.name.clone(),
            target: self.target.clone(),
            jobs: self.slots.get(),
            server: self.server.server_version.clone(),
            down: None,
            platforms: self.platforms.clone(),
            buildx_builder: self.docker.buildx_builder.clone(),
        }
    }
}

/// The engines of a run. Never empty; the first one stands in for cells that name no
/// engine (manifests of one engine).
pub struct Engines {
    list: Vec<Engine>,
}

impl Engines {
    pub fn iter(&self) -> impl Iterator<Item = &Engine> {
        self.list.iter()
    }

    pub fn len(&self) -> usize {
        self.list.len()
    }

    pub fn is_empty(&self) -> bool {
        self.list.is_empty()
    }

    pub fn first(&self) -> &Engine {
        &self.list[0]
    }

    /// The engine a cell names (the first engine for a cell that names none), as
    /// [`Engines::get`] finds it.
    pub fn engine(&self, name: Option<&str>) -> Option<&Engine> {
        match name {
            None => Some(&self.list[0]),
            Some(n) => self.list.iter().find(|e| e.name == n),
        }
    }

    /// The client for the engine a cell names (the first engine for a cell that names
    /// none); None when that engine is not among these, e.g. it did not answer. Never
    /// another engine: the same tag there may be a different image.
    pub fn get(&self, name: Option<&str>) -> Option<&Docker> {
        match name {
            None => Some(&self.list[0].docker),
            Some(n) => self.list.iter().find(|e| e.name == n).map(|e| &e.docker),
        }
    }
}

impl Engines {
    /// Decide each engine's builder: `auto` becomes buildx where the client has the
    /// plugin (and stays the client's default elsewhere); an engine that names a
    /// buildx builder (or `buildx_builder`, for those that name none) builds there.
    /// Buildx without the plugin, or a builder that does not answer, is an error that
    /// says how to fix it, before anything is built.
    pub fn resolve_builders(
        &mut self,
        requested: Builder,
        buildx_builder: Option<&str>,
    ) -> Result<(), String> {
        for e in &mut self.list {
            let named = e
                .docker
                .buildx_builder
                .clone()
                .or_else(|| buildx_builder.map(str::to_string));
            let builder = match (requested, &named) {
                (Builder::Legacy | Builder::Buildkit, Some(b)) => {
                    return Err(format!(
                        "engine {}: the buildx builder `{b}` only builds with --builder buildx (or auto), not --builder {}",
                        e.name,
                        requested.name()
                    ))
                }
                (Builder::Legacy | Builder::Buildkit, None) => requested,
                (Builder::Buildx, _) | (Builder::Auto, Some(_)) => {
                    if let Err(err) = e.docker.buildx_version() {
                        let why = err.lines().next().unwrap_or_default();
                        return Err(format!(
                            "engine {}: building with buildx{} needs the buildx plugin, which {} does not have (`docker buildx version`: {why}); {}",
                            e.name,
                            named.as_ref().map(|b| format!(" (builder `{b}`)")).unwrap_or_default(),
                            e.docker.client.display(),
                            crate::docker::BUILDX_INSTALL
                        ));
                    }
                    Builder::Buildx
                }
                (Builder::Auto, None) if e.docker.buildx_version().is_ok() => Builder::Buildx,
                (Builder::Auto, None) => Builder::Auto,
            };
            e.docker.builder = builder;
            e.docker.buildx_builder = named.filter(|_| builder == Builder::Buildx);
            if let Some(b) = &e.docker.buildx_builder {
                e.docker.buildx_inspect(b).map_err(|err| {
                    format!(
                        "engine {}: the buildx builder `{b}` does not answer ({}); `docker buildx ls` lists the builders, `docker buildx create --name {b} …` makes one",
                        e.name,
                        err.lines().next().unwrap_or_default()
                    )
                })?;
            }
        }
        Ok(())
    }
}

/// What a base reference resolved to for one platform.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct BaseDigest {
    /// The registry digest, or the local image ID for an image that never came from
    /// a registry; None when no engine has the image and it could not be pulled.
    pub digest: Option<String>,
    /// Engines that hold it, for this platform, with that digest: its cells build
    /// only there.
    pub holders: Vec<String>,
    /// Engines that hold a different image of this platform under the same reference.
    pub disagree: Vec<String>,
    /// Engines that build the platform but hold the reference for another one (an
    /// engine's image store keeps one platform per reference), with that platform.
    pub other_platform: Vec<(String, String)>,
}

/// Whether resolving a base may pull it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fetch {
    /// `docker pull` on every engine that builds the platform first (a republished
    /// tag moves): `--pull`.
    Always,
    /// Pull only where no engine holds it, as `docker build` itself would.
    IfMissing,
    /// Look only (`plan --diff`).
    Never,
}

/// Bases resolved, one per key asked about, and the warnings for people (each pull
/// that failed, in the order tried: all of them come before anything is looked at).
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct Resolved {
    pub bases: Vec<BaseDigest>,
    pub warnings: Vec<String>,
}

/// Resolve bases, each a (reference, platform), on the engines that build its
/// platform. Pulls happen before anything is looked at, so that what is found is what
/// the builds will use.
pub fn resolve_bases_quiet(engines: &Engines, keys: &[(String, String)], fetch: Fetch) -> Resolved {
    let capable = |platform: &str| -> Vec<&Engine> {
        engines.iter().filter(|e| e.builds(platform)).collect()
    };
    let mut warnings = Vec::new();
    if fetch == Fetch::Always {
        for (reference, platform) in keys {
            for e in capable(platform) {
                if let Err(err) = e.docker.pull(reference, platform) {
                    warnings.push(format!(
                        "warning: engine {}: cannot pull {reference} for {platform}: {err}",
                        e.name
                    ));
                }
            }
        }
    }
    // One client call per engine for all of its bases (a client costs tens of ms, and
    // a matrix of 20 bases on 2 engines has 40 pairs), the engines side by side.
    let mut per_engine: Vec<(&Engine, Vec<&str>)> = Vec::new();
    for (reference, platform) in keys {
        for e in capable(platform) {
            match per_engine.iter_mut().find(|(x, _)| x.name == e.name) {
                Some((_, refs)) if refs.contains(&reference.as_str()) => {}
                Some((_, refs)) => refs.push(reference),
                None => per_engine.push((e, vec![reference])),
            }
        }
    }
    let mut seen: HashMap<(String, String), Option<LocalImage>> = std::thread::scope(|scope| {
        let asking: Vec<_> = per_engine
            .iter()
            .map(|(e, refs)| scope.spawn(move || (e, refs, e.docker.image_digests(refs))))
            .collect();
        let mut seen = HashMap::new();
        for handle in asking {
            let Ok((e, refs, found)) = handle.join() else {
                continue;
            };
            for (reference, r) in refs.iter().zip(found) {
                seen.insert((e.name.clone(), reference.to_string()), r.ok().flatten());
            }
        }
        seen
    });
    fn look(
        seen: &mut HashMap<(String, String), Option<LocalImage>>,
        e: &Engine,
        reference: &str,
    ) -> Option<LocalImage> {
        seen.entry((e.name.clone(), reference.to_string()))
            .or_insert_with(|| e.docker.image_digest(reference).ok().flatten())
            .clone()
    }
    let mut out = Vec::with_capacity(keys.len());
    for (reference, platform) in keys {
        let mut r = BaseDigest::default();
        let mut found: Vec<(String, String)> = Vec::new();
        let mut absent: Vec<&Engine> = Vec::new();
        for e in capable(platform) {
            match look(&mut seen, e, reference) {
                Some(img) if img.platform == *platform => found.push((e.name.clone(), img.digest)),
                Some(img) => r.other_platform.push((e.name.clone(), img.platform)),
                None => absent.push(e),
            }
        }
        if found.is_empty() && fetch == Fetch::IfMissing {
            // only where nothing would be replaced: a pull onto another platform's
            // image under this name would take it away from that platform's cells
            for e in absent {
                if e.docker.pull(reference, platform).is_ok() {
                    seen.remove(&(e.name.clone(), reference.to_string()));
                    if let Some(img) =
                        look(&mut seen, e, reference).filter(|i| i.platform == *platform)
                    {
                        found.push((e.name.clone(), img.digest));
                        break;
                    }
                }
            }
        }
        r.digest = found.first().map(|(_, d)| d.clone());
        for (name, d) in found {
            if Some(&d) == r.digest.as_ref() {
                r.holders.push(name);
            } else {
                r.disagree.push(name);
            }
        }
        out.push(r);
    }
    Resolved {
        bases: out,
        warnings,
    }
}

/// What an engine builds: the platforms its spec names (each foreign one must have an
/// emulator when the engine runs on this host), or else its own platform and those
/// this host emulates, when it runs here.
type Platforms = (Vec<String>, Vec<(String, Option<String>)>);

fn platforms_of(
    spec: &EngineSpec,
    d: &Docker,
    server: &ServerInfo,
    host: &[crate::emulation::Emulator],
) -> Result<Platforms, String> {
    let native = format!("linux/{}", server.arch);
    let here = d.on_this_host().is_ok();
    let handler = |p: &str| {
        host.iter()
            .find(|e| e.platform == p)
            .map(|e| e.handler.clone())
    };
    if spec.platforms.is_empty() {
        let mut platforms = vec![native.clone()];
        let mut emulators = Vec::new();
        if here {
            for e in host.iter().filter(|e| e.platform != native) {
                platforms.push(e.platform.clone());
                emulators.push((e.platform.clone(), Some(e.handler.clone())));
            }
        }
        return Ok((platforms, emulators));
    }
    let mut emulators = Vec::new();
    for p in spec.platforms.iter().filter(|p| **p != native) {
        let h = handler(p);
        if here && h.is_none() {
            return Err(format!(
                "it is said to build {p}, which is not its own platform ({native}), but {}",
                crate::emulation::how_to_enable(p)
            ));
        }
        emulators.push((p.clone(), h.filter(|_| here)));
    }
    Ok((spec.platforms.clone(), emulators))
}

/// The engines that answered, those that did not (with why), and the warnings for
/// people not said yet (one per engine that does not answer, when there are several).
pub struct Connected {
    pub engines: Engines,
    pub down: Vec<(EngineSpec, String)>,
    pub warnings: Vec<String>,
}

/// Why no engine can be used, and the warnings to say before the error (those
/// naming each engine that does not answer, which the error refers to as "above").
#[derive(Debug)]
pub struct NotConnected {
    pub error: Error,
    pub warnings: Vec<String>,
}

impl From<Error> for NotConnected {
    fn from(error: Error) -> Self {
        NotConnected {
            error,
            warnings: Vec::new(),
        }
    }
}

/// Which engines to use: those a manifest recorded, re-pointed or extended by
/// `--engine`; with nothing recorded, `--engine` alone, else the matrix's `engines:`,
/// else the client's default engine (or `--context`).
pub fn specs(
    flags: &[EngineSpec],
    context: Option<&str>,
    configured: &[EngineSpec],
    recorded: &[EngineRecord],
) -> Result<Vec<EngineSpec>, String> {
    for (i, a) in flags.iter().enumerate() {
        if flags[..i].iter().any(|b| b.name == a.name) {
            return Err(format!(
                "--engine {} is given twice; give each engine name once",
                a.name
            ));
        }
    }
    // a manifest is an input like any other: its targets pass the checks --engine's do
    // (a name re-pointed with --engine is not looked at)
    for r in recorded
        .iter()
        .filter(|r| !flags.iter().any(|f| f.name == r.name))
    {
        crate::config::engine::check_name(&r.name)
            .and_then(|()| check_recorded_target(&r.target))
            .map_err(|e| {
                format!(
                    "the manifest's engine {}: {e}; re-point it with --engine {}=TARGET",
                    r.name, r.name
                )
            })?;
    }
    let mut specs: Vec<EngineSpec> = recorded
        .iter()
        .map(|r| EngineSpec {
            name: r.name.clone(),
            target: r.target.clone(),
            jobs: Some(r.jobs),
            platforms: r.platforms.clone(),
            buildx_builder: r.buildx_builder.clone(),
        })
        .collect();
    for a in flags {
        match specs.iter_mut().find(|s| s.name == a.name) {
            Some(s) => *s = a.clone(),
            None => specs.push(a.clone()),
        }
    }
    if specs.is_empty() {
        specs = configured.to_vec();
    }
    if specs.is_empty() {
        specs.push(EngineSpec {
            name: DEFAULT_ENGINE.into(),
            target: context.map_or(Target::Default, |c| Target::Context(c.to_string())),
            jobs: None,
            platforms: Vec::new(),
            buildx_builder: None,
        });
    }
    Ok(specs)
}

/// The engines a manifest recorded that nothing on this command line vouches for: each
/// at a target other than the client's default, whose name `--engine` does not
/// re-point (nor, for the one default engine, whose context `--context` names). A
/// manifest is an input like any other: a forged one must not send pushes, and the
/// registry credentials with them, to a daemon of its choosing.
pub fn unvouched<'a>(
    recorded: &'a [EngineRecord],
    flags: &[EngineSpec],
    context: Option<&str>,
) -> Vec<&'a EngineRecord> {
    recorded
        .iter()
        .filter(|r| r.target != Target::Default)
        .filter(|r| !flags.iter().any(|f| f.name == r.name))
        .filter(|r| {
            !(r.name == DEFAULT_ENGINE
                && context.is_some_and(|c| r.target == Target::Context(c.to_string())))
        })
        .collect()
}

/// Refuse, before anything is contacted, the engines of `unvouched` that the matrix does
/// not declare with exactly their recorded target. `declared` is the `engines:` of the
/// matrix file `matrix`, or why that file vouches for none (not the matrix `manifest`
/// was built from, unreadable); the error names each engine, its recorded target, why
/// it is not trusted and how to say where its images are.
pub fn check_vouched(
    manifest: &str,
    matrix: &str,
    unvouched: &[&EngineRecord],
    declared: &Result<Vec<EngineSpec>, String>,
) -> Result<(), String> {
    let mut refused = Vec::new();
    let (mut undeclared, mut elsewhere) = (Vec::new(), Vec::new());
    for r in unvouched {
        if let Ok(d) = declared {
            match d.iter().find(|s| s.name == r.name) {
                Some(s) if s.target == r.target => continue,
                Some(s) => elsewhere.push(format!(
                    "{matrix} declares engine {} at {}",
                    r.name,
                    shown(&s.target)
                )),
                None => undeclared.push(r.name.as_str()),
            }
        }
        refused.push(*r);
    }
    if refused.is_empty() {
        return Ok(());
    }
    let why = match declared {
        Err(e) => e.clone(),
        Ok(_) => {
            if !undeclared.is_empty() {
                elsewhere.insert(
                    0,
                    format!("{matrix} declares no engine {}", undeclared.join(" nor ")),
                );
            }
            elsewhere.join("; ")
        }
    };
    let at: Vec<String> = refused
        .iter()
        .map(|r| format!("engine {} at {}", r.name, shown(&r.target)))
        .collect();
    let fix: Vec<String> = refused
        .iter()
        .map(|r| format!("--engine {}=TARGET", r.name))
        .collect();
    Err(format!(
        "{manifest} records {}, which neither --engine on this command line nor the matrix vouches for ({why}); nothing was contacted. Say where {} images really are with {} (the build's own --engine flags, repeated), TARGET a DOCKER_HOST URL or a docker context",
        at.join(" and "),
        if refused.len() == 1 { "its" } else { "their" },
        fix.join(" ")
    ))
}

/// A target as people may read it: a password in a URL's user part is not shown.
fn shown(t: &Target) -> String {
    if let Target::Host(h) = t {
        if let Some((scheme, rest)) = h.split_once("://") {
            let authority = &rest[..rest.find('/').unwrap_or(rest.len())];
            if let Some(at) = authority.rfind('@') {
                if let Some(colon) = authority[..at].find(':') {
                    return format!("{scheme}://{}:***{}", &rest[..colon], &rest[at..]);
                }
            }
        }
    }
    t.to_string()
}

/// A recorded target as `--engine` would take it.
fn check_recorded_target(t: &Target) -> Result<(), String> {
    match t {
        Target::Default => Ok(()),
        Target::Host(h) => match crate::config::engine::parse_target(h)? {
            Target::Host(_) => Ok(()),
            _ => Err(format!("`{h}` is not a DOCKER_HOST URL")),
        },
        Target::Context(c) => match crate::config::engine::parse_target(c)? {
            Target::Context(_) => Ok(()),
            _ => Err(format!("`{c}` is not a docker context name")),
        },
    }
}

/// The client that reaches an engine.
pub fn client(spec: &EngineSpec, client: &Path, builder: Builder) -> Docker {
    Docker {
        client: client.to_path_buf(),
        context: match &spec.target {
            Target::Context(c) => Some(c.clone()),
            _ => None,
        },
        host: match &spec.target {
            Target::Host(h) => Some(h.clone()),
            _ => None,
        },
        builder,
        buildx_builder: spec.buildx_builder.clone(),
    }
}

/// [`connect_quiet`], each warning (an engine that does not answer) handed to `say`,
/// on success and on failure alike: the caller decides where people read it.
pub fn connect(
    docker: &Path,
    builder: Builder,
    specs: Vec<EngineSpec>,
    default_slots: NonZeroUsize,
    say: &dyn Fn(&str),
) -> Result<Connected, Error> {
    match connect_quiet(docker, builder, specs, default_slots) {
        Ok(mut c) => {
            for w in std::mem::take(&mut c.warnings) {
                say(&w);
            }
            Ok(c)
        }
        Err(n) => {
            for w in &n.warnings {
                say(w);
            }
            Err(n.error)
        }
    }
}

/// Ask every engine whether it answers (in parallel). Engines that do not are left out
/// with a warning, unless none answers: then one clear error. `default_slots` is the
/// `-j` of engines that set no `jobs` of their own. Nothing is printed: the warnings
/// come back, in `Connected` or with the error, for the caller to say first.
pub fn connect_quiet(
    docker: &Path,
    builder: Builder,
    specs: Vec<EngineSpec>,
    default_slots: NonZeroUsize,
) -> Result<Connected, NotConnected> {
    check_unique(&specs).map_err(Error::Usage)?;
    let checked: Vec<(EngineSpec, Docker, Result<ServerInfo, String>)> = std::thread::scope(|s| {
        let handles: Vec<_> = specs
            .into_iter()
            .map(|spec| {
                s.spawn(move || {
                    let d = client(&spec, docker, builder);
                    let v = d.versions().map(|(c, v, a)| ServerInfo {
                        client_version: c,
                        server_version: v,
                        arch: a,
                    });
                    (spec, d, v)
                })
            })
            .collect();
        handles.into_iter().filter_map(|h| h.join().ok()).collect()
    });
    let several = checked.len() > 1;
    let (mut up, mut down) = (Vec::new(), Vec::new());
    let mut last_error = String::new();
    let mut warnings = Vec::new();
    let host_emulators = crate::emulation::emulators();
    for (spec, d, v) in checked {
        match v {
            Ok(server) => {
                let (platforms, emulators) = match platforms_of(&spec, &d, &server, &host_emulators)
                {
                    Ok(p) => p,
                    Err(e) => {
                        return Err(NotConnected {
                            error: Error::Preflight(format!("engine {}: {e}", spec.name)),
                            warnings,
                        })
                    }
                };
                up.push(Engine {
                    platforms,
                    emulators,
                    slots: spec
                        .jobs
                        .and_then(NonZeroUsize::new)
                        .unwrap_or(default_slots),
                    name: spec.name,
                    target: spec.target,
                    docker: d,
                    server,
                });
            }
            Err(e) => {
                let place = if several {
                    format!("engine {} at {}", spec.name, spec.target)
                } else {
                    format!(
                        "{}{}",
                        d.client.display(),
                        d.context
                            .as_ref()
                            .map(|c| format!(" --context {c}"))
                            .unwrap_or_default()
                    )
                };
                last_error = format!("the Docker daemon does not answer ({place}): {e}");
                if several {
                    warnings.push(format!("warning: {last_error}"));
                }
                down.push((spec, e));
            }
        }
    }
    if up.is_empty() {
        let what = if several {
            format!(
                "no Docker engine answers (each of the {} is named above)",
                down.len()
            )
        } else {
            last_error
        };
        return Err(NotConnected {
            error: Error::Preflight(format!(
                "{what}; start one (e.g. scripts/start-dockerd.sh) or point DOCKER_HOST / --context / --engine at one"
            )),
            warnings,
        });
    }
    Ok(Connected {
        engines: Engines { list: up },
        down,
        warnings,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(name: &str, target: &str) -> EngineRecord {
        EngineRecord {
            name: name.into(),
            target: crate::config::engine::parse_target(target).unwrap(),
            jobs: 3,
            server: "x".into(),
            down: None,
            platforms: Vec::new(),
            buildx_builder: None,
        }
    }

    fn names(s: &[EngineSpec]) -> Vec<String> {
        s.iter()
            .map(|e| format!("{}={}", e.name, e.target))
            .collect()
    }

    fn flags(f: &[&str]) -> Vec<EngineSpec> {
        f.iter().map(|e| e.parse().unwrap()).collect()
    }

    /// No engine answers through a client that does not exist: nothing is printed, the
    /// warnings come back with the error that refers to them, one per engine.
    #[test]
    fn engines_that_do_not_answer_are_warnings_returned_not_printed() {
        let missing = Path::new("/nonexistent/image-matrix-test/docker");
        let two = flags(&["a=unix:///a.sock", "b=unix:///b.sock"]);
        let n = connect_quiet(missing, Builder::Auto, two, NonZeroUsize::MIN)
            .err()
            .unwrap();
        assert_eq!(n.warnings.len(), 2, "{:?}", n.warnings);
        assert!(
            n.warnings[0].starts_with(
                "warning: the Docker daemon does not answer (engine a at unix:///a.sock): "
            ),
            "{:?}",
            n.warnings
        );
        assert!(n.warnings[1].contains("(engine b at unix:///b.sock)"));
        assert!(n
            .error
            .to_string()
            .contains("no Docker engine answers (each of the 2 is named above)"));
        // one engine: the error says it all, no warning
        let one = flags(&["a=unix:///a.sock"]);
        let n = connect_quiet(missing, Builder::Auto, one, NonZeroUsize::MIN)
            .err()
            .unwrap();
        assert!(n.warnings.is_empty(), "{:?}", n.warnings);
        assert!(n
            .error
            .to_string()
            .contains("the Docker daemon does not answer"));
    }

    #[test]
    fn engines_come_from_flags_then_the_matrix_then_the_default() {
        let configured = flags(&["m=unix:///m.sock"]);
        assert_eq!(
            names(&specs(&flags(&["a=ctx-a"]), None, &configured, &[]).unwrap()),
            ["a=ctx-a"],
            "--engine replaces the matrix's list"
        );
        assert_eq!(
            names(&specs(&[], None, &configured, &[]).unwrap()),
            ["m=unix:///m.sock"]
        );
        let d = specs(&[], None, &[], &[]).unwrap();
        assert_eq!(d[0].name, DEFAULT_ENGINE);
        assert_eq!(d[0].target, Target::Default);
        let c = specs(&[], Some("remote"), &[], &[]).unwrap();
        assert!(specs(&flags(&["a=x", "a=y"]), None, &[], &[])
            .unwrap_err()
            .contains("given twice"));
        assert_eq!(c[0].target, Target::Context("remote".into()));
    }

    #[test]
    fn a_manifests_engines_can_be_re_pointed_by_name() {
        let recorded = [rec("a", "unix:///a.sock"), rec("b", "unix:///b.sock")];
        let s = specs(&flags(&["b=unix:///moved.sock"]), None, &[], &recorded).unwrap();
        assert_eq!(names(&s), ["a=unix:///a.sock", "b=unix:///moved.sock"]);
        assert_eq!(s[0].jobs, Some(3));
    }

    /// Issue 27 item 3: a manifest's engine targets pass --engine's checks, unless the
    /// name is re-pointed.
    #[test]
    fn a_manifests_engine_targets_are_checked_like_the_flags() {
        for bad in [
            "ssh://-oProxyCommand=sh -c id x",
            "ssh://-oProxyCommand=id",
            "ssh://ci@-oProxyCommand=id",
            "http://x",
            "a context; rm -rf",
        ] {
            let mut r = rec("b", "unix:///b.sock");
            r.target = if bad.contains("://") {
                Target::Host(bad.into())
            } else {
                Target::Context(bad.into())
            };
            let e = specs(&[], None, &[], &[r.clone()]).unwrap_err();
            assert!(
                e.contains("the manifest's engine b") && e.contains("--engine b="),
                "{bad}: {e}"
            );
            // re-pointed by the user: the recorded target is not used
            assert!(
                specs(&flags(&["b=unix:///ok.sock"]), None, &[], &[r]).is_ok(),
                "{bad}"
            );
        }
        assert!(crate::config::engine::parse_target("ssh://-oProxyCommand=id").is_err());
        assert!(crate::config::engine::parse_target("ssh://ci@build-1.internal").is_ok());
    }

    /// Issue 27 item 3: a recorded target other than the client's default is used only
    /// where this command line re-points its name (or, for the default engine, names its
    /// context), or the matrix it was built from declares that name at that target.
    #[test]
    fn a_manifests_engine_targets_need_the_user_or_the_matrix_to_vouch_for_them() {
        let mut default = rec(DEFAULT_ENGINE, "ctx");
        default.target = Target::Default;
        let recorded = [
            default,
            rec("gpu1", "tcp://attacker.example:2375"),
            rec("b", "ssh://ci@b"),
        ];
        let names = |v: Vec<&EngineRecord>| v.iter().map(|r| r.name.clone()).collect::<Vec<_>>();
        assert_eq!(
            names(unvouched(&recorded, &[], None)),
            ["gpu1", "b"],
            "the client's default engine needs no one"
        );
        assert_eq!(
            names(unvouched(&recorded, &flags(&["gpu1=unix:///g.sock"]), None)),
            ["b"]
        );
        let ctx = [rec(DEFAULT_ENGINE, "remote")];
        assert!(unvouched(&ctx, &[], Some("remote")).is_empty());
        assert_eq!(unvouched(&ctx, &[], Some("other")).len(), 1);
        assert_eq!(
            unvouched(&[rec("x", "remote")], &[], Some("remote")).len(),
            1,
            "--context stands for the default engine only"
        );

        let left = unvouched(&recorded, &[], None);
        let matrix = |f: &[&str]| Ok(flags(f));
        assert!(check_vouched(
            "m.json",
            "matrix.yaml",
            &left,
            &matrix(&["gpu1=tcp://attacker.example:2375", "b=ssh://ci@b", "c=ctx"])
        )
        .is_ok());
        let e =
            check_vouched("m.json", "matrix.yaml", &left, &matrix(&["b=ssh://ci@b"])).unwrap_err();
        assert!(
            e.starts_with("m.json records engine gpu1 at tcp://attacker.example:2375, which")
                && e.contains("(matrix.yaml declares no engine gpu1)")
                && e.contains("nothing was contacted")
                && e.contains("with --engine gpu1=TARGET (")
                && !e.contains("engine b"),
            "{e}"
        );
        let e = check_vouched(
            "m.json",
            "matrix.yaml",
            &left,
            &matrix(&["gpu1=ssh://ci@gpu1"]),
        )
        .unwrap_err();
        assert!(
            e.contains("records engine gpu1 at tcp://attacker.example:2375 and engine b at ssh://ci@b")
                && e.contains("(matrix.yaml declares no engine b; matrix.yaml declares engine gpu1 at ssh://ci@gpu1)")
                && e.contains("--engine gpu1=TARGET --engine b=TARGET"),
            "{e}"
        );
        let e =
            check_vouched("m.json", "matrix.yaml", &left, &Err("it changed".into())).unwrap_err();
        assert!(e.contains("vouches for (it changed)"), "{e}");
    }

    #[test]
    fn a_password_in_a_target_is_not_shown() {
        let host = |h: &str| shown(&Target::Host(h.into()));
        assert_eq!(host("ssh://ci:s3cret@b:22/x"), "ssh://ci:***@b:22/x");
        assert_eq!(host("tcp://u:p:q@h:2375"), "tcp://u:***@h:2375");
        assert_eq!(host("ssh://ci@b"), "ssh://ci@b");
        assert_eq!(host("unix:///run/a@b:c.sock"), "unix:///run/a@b:c.sock");
        assert_eq!(host("tcp://h:2375"), "tcp://h:2375");
        assert_eq!(shown(&Target::Context("c".into())), "c");
    }
}
