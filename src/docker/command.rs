//! Docker command lines as data: every argv the client gets is built here, and
//! nothing here runs (nextest's typed command builders). A [`Command`] holds the
//! client, its argv (with `--context` first when one is set) and the environment that
//! points it at its engine; [`super::process`] runs it and [`super::Docker`] parses
//! what it prints, so each argv is tested without spawning anything.
//!
//! Every argv is a list of words, never a shell string. The query builders give the
//! words after the client's own prefix; [`Docker::command`] adds that prefix.

use std::ffi::OsString;
use std::path::PathBuf;

use super::{BuildRequest, Builder, Docker};

/// One run of a program, as data.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Command {
    pub program: PathBuf,
    pub args: Vec<OsString>,
    /// Changes to the child's environment, in order: a value sets the variable, None
    /// removes it.
    pub env: Vec<(&'static str, Option<String>)>,
    /// Bytes for its stdin; None leaves the tool's own.
    pub stdin: Option<Vec<u8>>,
}

impl Docker {
    fn prefix(&self) -> Vec<OsString> {
        match &self.context {
            Some(c) => vec!["--context".into(), c.into()],
            None => Vec::new(),
        }
    }

    /// The client run with `args` (after its prefix), pointed at this client's engine.
    pub(super) fn command<S: AsRef<str>>(&self, args: &[S]) -> Command {
        let mut argv = self.prefix();
        argv.extend(args.iter().map(|a| OsString::from(a.as_ref())));
        self.client_command(argv)
    }

    /// Point a command at this client's engine: an explicit host replaces whatever
    /// DOCKER_HOST / DOCKER_CONTEXT the tool was started with.
    fn client_command(&self, args: Vec<OsString>) -> Command {
        let env = match &self.host {
            Some(h) => vec![("DOCKER_HOST", Some(h.clone())), ("DOCKER_CONTEXT", None)],
            None => Vec::new(),
        };
        Command {
            program: self.client.clone(),
            args,
            env,
            stdin: None,
        }
    }

    /// Environment the build client needs for the chosen builder.
    pub fn build_env(&self) -> Option<(&'static str, &'static str)> {
        match self.builder {
            Builder::Auto | Builder::Buildx => None,
            Builder::Legacy => Some(("DOCKER_BUILDKIT", "0")),
            Builder::Buildkit => Some(("DOCKER_BUILDKIT", "1")),
        }
    }

    /// `docker build` of `r`, with the builder's environment.
    pub(super) fn build_command(&self, r: &BuildRequest) -> Command {
        let mut c = self.client_command(self.build_args(r).into_iter().map(Into::into).collect());
        if let Some((k, v)) = self.build_env() {
            c.env.push((k, Some(v.into())));
        }
        c
    }

    /// The full `docker build` argv (without the client path).
    pub fn build_args(&self, r: &BuildRequest) -> Vec<String> {
        let mut a: Vec<String> = self
            .prefix()
            .into_iter()
            .map(|s| s.to_string_lossy().into_owned())
            .collect();
        match self.builder {
            Builder::Buildx => {
                a.extend(["buildx".into(), "build".into(), "--progress=plain".into()]);
                if let Some(b) = &self.buildx_builder {
                    a.push("--builder".into());
                    a.push(b.clone());
                }
                // Into the engine's image store; a build without tags (a shared stage)
                // only fills the builder's cache.
                if !r.tags.is_empty() {
                    a.push("--load".into());
                }
            }
            Builder::Buildkit => a.extend(["build".into(), "--progress=plain".into()]),
            // The legacy builder leaves failed steps' containers behind without it.
            Builder::Auto | Builder::Legacy => a.extend(["build".into(), "--force-rm".into()]),
        }
        for t in &r.tags {
            a.push("-t".into());
            a.push(t.clone());
        }
        if let Some(t) = &r.target {
            a.push("--target".into());
            a.push(t.clone());
        }
        for (k, v) in &r.labels {
            a.push("--label".into());
            a.push(format!("{k}={v}"));
        }
        for (k, v) in &r.build_args {
            a.push("--build-arg".into());
            a.push(format!("{k}={v}"));
        }
        if let Some(n) = &r.network {
            a.push("--network".into());
            a.push(n.clone());
            // a builder of its own (docker-container, kubernetes) grants the host
            // network only when asked; the engine's own builder ignores it
            if self.builder == Builder::Buildx && n == "host" {
                a.push("--allow".into());
                a.push("network.host".into());
            }
        }
        if let Some(p) = &r.platform {
            a.push("--platform".into());
            a.push(p.clone());
        }
        if r.pull {
            a.push("--pull".into());
        }
        if r.no_cache {
            a.push("--no-cache".into());
        }
        if let Some(f) = &r.iidfile {
            a.push("--iidfile".into());
            a.push(f.display().to_string());
        }
        a.extend(self.cache_args(r));
        a.push(r.context_dir.display().to_string());
        a
    }

    /// The registry cache: where to take layers from, and inline metadata in what is
    /// built. Only BuildKit uses them (the legacy builder takes cache only from images
    /// already pulled, so a run refuses the cache settings with it).
    fn cache_args(&self, r: &BuildRequest) -> Vec<String> {
        let mut a = Vec::new();
        if !self.builder.is_buildkit() {
            return a;
        }
        for c in &r.cache_from {
            a.push("--cache-from".into());
            a.push(match self.builder {
                Builder::Buildx => format!("type=registry,ref={c}"),
                _ => c.clone(),
            });
        }
        if r.inline_cache {
            match self.builder {
                Builder::Buildx => a.extend(["--cache-to".into(), "type=inline".into()]),
                _ => a.extend(["--build-arg".into(), "BUILDKIT_INLINE_CACHE=1".into()]),
            }
        }
        a
    }

    /// A copy-pasteable shell line reproducing a build.
    pub fn build_command_line(&self, r: &BuildRequest) -> String {
        let mut words: Vec<String> = Vec::new();
        if let Some(h) = &self.host {
            words.push(format!("DOCKER_HOST={}", crate::shell::word(h)));
        }
        if let Some((k, v)) = self.build_env() {
            words.push(format!("{k}={v}"));
        }
        words.push(crate::shell::word(&self.client.display().to_string()));
        words.extend(self.build_args(r).iter().map(|w| crate::shell::word(w)));
        words.join(" ")
    }

    /// A metadata-only build: `base` with these labels as `tag`, the Dockerfile on
    /// stdin; quiet, so that it prints the new image's ID and nothing else.
    pub(super) fn relabel_command(
        &self,
        base: &str,
        tag: &str,
        platform: &str,
        labels: &[(String, String)],
    ) -> Command {
        let mut args = self.prefix();
        args.extend(["build".into(), "--quiet".into(), "-t".into(), tag.into()]);
        args.extend(["--platform".into(), platform.into()]);
        for (k, v) in labels {
            args.push("--label".into());
            args.push(format!("{k}={v}").into());
        }
        args.push("-".into());
        let mut c = self.client_command(args);
        c.stdin = Some(format!("FROM {base}\n").into_bytes());
        // buildx's current builder may be one of its own, which cannot see this
        // engine's images: a metadata-only build is the daemon's (legacy) builder's job
        let env = match self.builder {
            Builder::Buildx => Some(("DOCKER_BUILDKIT", "0")),
            _ => self.build_env(),
        };
        if let Some((k, v)) = env {
            c.env.push((k, Some(v.into())));
        }
        c
    }
}

fn words(w: &[&str]) -> Vec<String> {
    w.iter().map(|s| (*s).to_string()).collect()
}

/// `buildx version`: whether the client has the buildx plugin.
pub fn buildx_version() -> Vec<String> {
    words(&["buildx", "version"])
}

/// `buildx inspect --bootstrap`: whether a buildx builder exists, started.
pub fn buildx_inspect(name: &str) -> Vec<String> {
    words(&["buildx", "inspect", "--bootstrap", name])
}

/// `version`: the client's and the server's version and the server's architecture.
pub fn versions() -> Vec<String> {
    words(&[
        "version",
        "--format",
        "{{.Client.Version}}|{{.Server.Version}}|{{.Server.Arch}}",
    ])
}

/// `version`: the server's version only (empty when no daemon answers).
pub fn server_version() -> Vec<String> {
    words(&["version", "--format", "{{.Server.Version}}"])
}

/// `context inspect`: the endpoint the client resolves.
pub fn endpoint() -> Vec<String> {
    words(&[
        "context",
        "inspect",
        "--format",
        "{{.Endpoints.docker.Host}}",
    ])
}

/// `image inspect` of `images` with a Go template.
fn inspect(format: &str, images: &[&str]) -> Vec<String> {
    let mut a = words(&["image", "inspect", "--format", format]);
    a.extend(words(images));
    a
}

/// One label of an image (`<no value>` when it has none).
pub fn label(image: &str, label: &str) -> Vec<String> {
    inspect(
        &format!("{{{{ index .Config.Labels \"{label}\" }}}}"),
        &[image],
    )
}

/// What `image inspect` prints of a base: ID, platform and registry digests (json, not
/// join: clients format a daemon's list differently, and a 28.x client cannot `join`
/// a 20.10 daemon's RepoDigests).
pub const DIGEST_FIELDS: &str = "{{.Id}}|{{.Os}}/{{.Architecture}}|{{json .RepoDigests}}";

/// [`DIGEST_FIELDS`] of each image, a line each.
pub fn image_digests(images: &[&str]) -> Vec<String> {
    inspect(DIGEST_FIELDS, images)
}

/// `ID|SIZE` of an image.
pub fn image_id_and_size(image: &str) -> Vec<String> {
    inspect("{{.Id}}|{{.Size}}", &[image])
}

pub fn image_id(image: &str) -> Vec<String> {
    inspect("{{.Id}}", &[image])
}

/// An image's labels and environment, as `JSON|JSON`.
pub fn labels_and_env(image: &str) -> Vec<String> {
    inspect("{{json .Config.Labels}}|{{json .Config.Env}}", &[image])
}

/// An image's layer digests, as JSON.
pub fn layers(image: &str) -> Vec<String> {
    inspect("{{json .RootFS.Layers}}", &[image])
}

/// `ID|FIELDS` of each image: each line names the image it is about.
pub fn inspect_by_id(fields: &str, images: &[&str]) -> Vec<String> {
    inspect(&format!("{{{{.Id}}}}|{fields}"), images)
}

/// `image ls` of a repository: `REPOSITORY:TAG|ID` a line.
pub fn tags_of(repository: &str) -> Vec<String> {
    words(&[
        "image",
        "ls",
        "--no-trunc",
        "--format",
        "{{.Repository}}:{{.Tag}}|{{.ID}}",
        repository,
    ])
}

/// `pull` of one platform.
pub fn pull(image: &str, platform: &str) -> Vec<String> {
    words(&["pull", "--platform", platform, image])
}

/// Every image (intermediate ones too) that carries `label=value`, by full ID.
pub fn images_labelled(label: &str, value: &str) -> Vec<String> {
    words(&[
        "image",
        "ls",
        "-a",
        "--no-trunc",
        "--filter",
        &format!("label={label}={value}"),
        "--format",
        "{{.ID}}",
    ])
}

/// `image rm -f` of one image by ID (it may carry several tags).
pub fn remove_image(id: &str) -> Vec<String> {
    words(&["image", "rm", "-f", id])
}

/// The engine's disk use per kind (images, containers, volumes, build cache).
pub fn disk_usage() -> Vec<String> {
    words(&["system", "df", "--format", "{{.Type}}\t{{.Size}}"])
}

/// `image rm` of tags (an image goes with its last tag).
pub fn untag(tags: &[&str]) -> Vec<String> {
    let mut a = words(&["image", "rm"]);
    a.extend(words(tags));
    a
}

pub fn tag(src: &str, dst: &str) -> Vec<String> {
    words(&["tag", src, dst])
}

pub fn push(tag: &str) -> Vec<String> {
    words(&["push", tag])
}

/// `manifest rm`: forget a local list.
pub fn manifest_rm(index: &str) -> Vec<String> {
    words(&["manifest", "rm", index])
}

/// `manifest create` of a list over pushed members (`--insecure`: plain HTTP).
pub fn manifest_create(index: &str, members: &[String], insecure: bool) -> Vec<String> {
    let mut a = words(&["manifest", "create"]);
    if insecure {
        a.push("--insecure".into());
    }
    a.push(index.into());
    a.extend(members.iter().cloned());
    a
}

/// `manifest push --purge` (the local list goes once pushed).
pub fn manifest_push(index: &str, insecure: bool) -> Vec<String> {
    let mut a = words(&["manifest", "push", "--purge"]);
    if insecure {
        a.push("--insecure".into());
    }
    a.push(index.into());
    a
}

/// `run -d` with the caller's options, image and command.
pub fn run_detached(args: &[String]) -> Vec<String> {
    let mut a = words(&["run", "-d"]);
    a.extend(args.iter().cloned());
    a
}

/// `rm -f -v`: a container and its anonymous volumes.
pub fn remove_container(name: &str) -> Vec<String> {
    words(&["rm", "-f", "-v", name])
}

/// `ps`: the IDs of the containers that have stopped or never ran.
pub fn stopped_containers() -> Vec<String> {
    words(&[
        "ps",
        "-a",
        "-q",
        "--no-trunc",
        "--filter",
        "status=exited",
        "--filter",
        "status=created",
        "--filter",
        "status=dead",
    ])
}

/// `container inspect`: `ID|CREATED|CMD (json)` a line.
pub fn created_and_command(ids: &[&str]) -> Vec<String> {
    let mut a = words(&[
        "container",
        "inspect",
        "--format",
        "{{.Id}}|{{.Created}}|{{json .Config.Cmd}}",
    ]);
    a.extend(words(ids));
    a
}

pub fn exec(container: &str, argv: &[&str]) -> Vec<String> {
    let mut a = words(&["exec", container]);
    a.extend(words(argv));
    a
}

pub fn logs(container: &str) -> Vec<String> {
    words(&["logs", container])
}

/// Print a file of an image: `run --rm --network none` with `cat`, so it works for
/// any platform the engine runs (emulated ones too).
pub fn read_file(image: &str, platform: &str, path: &str) -> Vec<String> {
    words(&[
        "run",
        "--rm",
        "--network",
        "none",
        "--platform",
        platform,
        "--entrypoint",
        "/bin/cat",
        image,
        path,
    ])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reproducing_command_lines_quote_only_what_needs_it() {
        let d = Docker {
            client: "docker".into(),
            context: None,
            host: None,
            builder: Builder::Buildkit,
            buildx_builder: None,
        };
        let r = BuildRequest {
            context_dir: "ctx".into(),
            tags: vec!["r:t".into()],
            labels: vec![("k".into(), "v w".into())],
            ..BuildRequest::default()
        };
        assert_eq!(
            d.build_command_line(&r),
            "DOCKER_BUILDKIT=1 docker build --progress=plain -t r:t --label 'k=v w' ctx"
        );
    }

    #[test]
    fn buildx_builds_load_into_the_engine_and_carry_the_registry_cache() {
        let d = Docker {
            client: "docker".into(),
            context: Some("ci".into()),
            host: None,
            builder: Builder::Buildx,
            buildx_builder: Some("farm".into()),
        };
        let r = BuildRequest {
            context_dir: "ctx".into(),
            tags: vec!["r:t".into()],
            network: Some("host".into()),
            cache_from: vec!["reg:5000/m:t".into()],
            inline_cache: true,
            ..BuildRequest::default()
        };
        assert_eq!(
            d.build_command_line(&r),
            "docker --context ci buildx build --progress=plain --builder farm --load -t r:t --network host --allow network.host --cache-from type=registry,ref=reg:5000/m:t --cache-to type=inline ctx"
        );
        // a shared stage (no tag) stays in the builder's cache
        let stage = BuildRequest {
            tags: Vec::new(),
            target: Some("system".into()),
            ..r.clone()
        };
        assert!(!d.build_args(&stage).contains(&"--load".to_string()));
        let classic = Docker {
            builder: Builder::Buildkit,
            ..d.clone()
        };
        let a = classic.build_args(&r).join(" ");
        assert!(
            a.contains("--cache-from reg:5000/m:t --build-arg BUILDKIT_INLINE_CACHE=1"),
            "{a}"
        );
        assert!(!a.contains("--allow"), "{a}");
        let legacy = Docker {
            builder: Builder::Legacy,
            ..d
        };
        assert!(!legacy.build_args(&r).join(" ").contains("cache"));
    }

    #[test]
    fn a_host_replaces_the_callers_engine_and_a_context_comes_first() {
        let d = Docker {
            client: "/usr/bin/docker".into(),
            context: Some("ci".into()),
            host: Some("ssh://ci@build-1".into()),
            builder: Builder::Auto,
            buildx_builder: None,
        };
        assert_eq!(
            d.command(&tag("a:1", "b:2")),
            Command {
                program: "/usr/bin/docker".into(),
                args: ["--context", "ci", "tag", "a:1", "b:2"]
                    .map(OsString::from)
                    .to_vec(),
                env: vec![
                    ("DOCKER_HOST", Some("ssh://ci@build-1".into())),
                    ("DOCKER_CONTEXT", None)
                ],
                stdin: None,
            }
        );
        let local = Docker {
            context: None,
            host: None,
            ..d
        };
        assert!(local.command(&push("a:1")).env.is_empty());
    }

    #[test]
    fn an_index_is_created_over_its_members_then_pushed_and_purged() {
        let members = ["r@sha256:1".to_string(), "r@sha256:2".to_string()];
        assert_eq!(
            manifest_create("r:t", &members, true).join(" "),
            "manifest create --insecure r:t r@sha256:1 r@sha256:2"
        );
        assert_eq!(
            manifest_push("r:t", false).join(" "),
            "manifest push --purge r:t"
        );
        assert_eq!(manifest_rm("r:t").join(" "), "manifest rm r:t");
    }

    #[test]
    fn queries_ask_for_what_their_parsers_read() {
        assert_eq!(
            label("r:t", "org.opencontainers.image.version").join(" "),
            "image inspect --format {{ index .Config.Labels \"org.opencontainers.image.version\" }} r:t"
        );
        assert_eq!(
            inspect_by_id("{{.Size}}", &["a", "b"]).join(" "),
            "image inspect --format {{.Id}}|{{.Size}} a b"
        );
        assert_eq!(
            image_digests(&["a", "b"]).join(" "),
            format!("image inspect --format {DIGEST_FIELDS} a b")
        );
        assert_eq!(
            read_file("r:t", "linux/arm64", "/etc/os-release").join(" "),
            "run --rm --network none --platform linux/arm64 --entrypoint /bin/cat r:t /etc/os-release"
        );
        assert_eq!(untag(&["a", "b"]).join(" "), "image rm a b");
    }

    #[test]
    fn a_relabel_reads_its_dockerfile_on_stdin_and_skips_a_buildx_builder() {
        let d = Docker {
            client: "docker".into(),
            context: None,
            host: None,
            builder: Builder::Buildx,
            buildx_builder: Some("farm".into()),
        };
        let labels = [("k".to_string(), "v".to_string())];
        let c = d.relabel_command("base@sha256:1", "r:t", "linux/amd64", &labels);
        assert_eq!(
            c.args.join(std::ffi::OsStr::new(" ")),
            "build --quiet -t r:t --platform linux/amd64 --label k=v -"
        );
        assert_eq!(c.stdin.as_deref(), Some(&b"FROM base@sha256:1\n"[..]));
        assert_eq!(c.env, vec![("DOCKER_BUILDKIT", Some("0".into()))]);
        let legacy = Docker {
            builder: Builder::Legacy,
            ..d
        };
        let r = BuildRequest {
            context_dir: "ctx".into(),
            ..BuildRequest::default()
        };
        assert_eq!(
            legacy.build_command(&r).env,
            vec![("DOCKER_BUILDKIT", Some("0".into()))]
        );
    }
}
