//! The buildx backend on a real daemon (its own builder, the `docker` driver): a build
//! with `--builder buildx`; `docker buildx bake` on `plan --format bake`, whose images
//! `matrix build` then finds up to date; a Ctrl-C that leaves no build process behind;
//! and a registry cache that fills an empty engine without re-running a step.
//!
//! They need the daemon, the base image and the buildx plugin
//! (`scripts/setup-test-env.sh`). Without them they fail, loudly; they never skip.

use std::io::Read;
use std::net::{TcpListener, TcpStream};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

mod common;
use common::*;

const CELL: &str = "py3.11-debian12-amd64";

/// Where `scripts/setup-test-env.sh` puts the buildx plugin: a Docker config
/// directory of the tests' own, so that only these tests (and every docker and
/// `matrix` they start) see buildx.
const BUILDX_CONFIG: &str = "/usr/local/lib/image-matrix/docker";

fn require_buildx() {
    require_environment();
    // the same value from every test, before any of them starts a process
    static SET: std::sync::Once = std::sync::Once::new();
    SET.call_once(|| {
        if std::env::var_os("DOCKER_CONFIG").is_none() {
            std::env::set_var("DOCKER_CONFIG", BUILDX_CONFIG);
        }
    });
    let (code, out, err) = docker(&["buildx", "version"]);
    assert_eq!(
        code, 0,
        "these tests need the buildx plugin (run scripts/setup-test-env.sh): {out}{err}"
    );
}

/// One cell on the local base, its installer from `mirror` (a URL ending in `/`).
fn matrix_yaml(repo: &str, mirror: &str, sha: &str) -> String {
    LocalMatrix::served(repo, "conda3-python{python}-{base}", mirror, sha)
        .axes(
            r#"bases:
  - image-matrix-test/debian:bookworm
python: ["3.11"]
"#,
        )
        .yaml()
}

fn label(image: &str, key: &str) -> String {
    let (_, out, _) = docker(&[
        "image",
        "inspect",
        "--format",
        &format!("{{{{ index .Config.Labels \"{key}\" }}}}"),
        image,
    ]);
    out.trim().to_string()
}

fn image_id(image: &str) -> String {
    let (code, out, err) = docker(&["image", "inspect", "--format", "{{.Id}}", image]);
    assert_eq!(code, 0, "{image}: {err}");
    out.trim().to_string()
}

#[test]
fn buildx_builds_bake_is_recognised_and_ctrl_c_leaves_nothing_running() {
    require_buildx();
    let dir = tempfile::tempdir().unwrap();
    let mirror = Mirror::start(&dir.path().join("mirror"));
    let prefix = format!("image-matrix-bx-{}", std::process::id());
    let _cleanup = Cleanup(prefix.clone());
    let repo = format!("{prefix}/miniconda");
    let yaml = matrix_yaml(
        &repo,
        &format!("http://127.0.0.1:{}/", mirror.port),
        &mirror.sha,
    );
    std::fs::write(dir.path().join("matrix.yaml"), &yaml).unwrap();

    // 1. A build with the buildx backend: BuildKit's plain progress, logged and counted.
    let t = Instant::now();
    let (code, _, err) = matrix(dir.path(), &["build", "--builder", "buildx"]);
    assert_eq!(code, 0, "{err}");
    eprintln!("buildx build: {:.1}s", t.elapsed().as_secs_f64());
    let m = manifest(&dir.path().join("out/manifest.json"));
    assert_eq!(m["docker"]["builder"], "buildx");
    let c = cell(&m, CELL);
    assert_eq!(c["status"], "built", "{c}");
    let tag = c["tags"][0].as_str().unwrap().to_string();
    assert_eq!(
        label(&tag, "io.image-matrix.input-hash"),
        c["input_hash"].as_str().unwrap()
    );
    assert!(!c["versions"]["python"].is_null(), "versions labelled: {c}");
    let log = std::fs::read_to_string(dir.path().join(c["log"].as_str().unwrap())).unwrap();
    assert!(
        log.contains(" buildx build --progress=plain --load ")
            && log.contains("--network host --allow network.host")
            && log
                .lines()
                .any(|l| l.starts_with('#') && l.contains("] RUN --mount=type=cache,id=image-matrix-downloads,target=/var/cache/image-matrix IMAGE_MATRIX_CACHE=/var/cache/image-matrix PIP_CACHE_DIR=/var/cache/image-matrix/pip bash /tmp/image-matrix/")),
        "{}",
        &log[..log.len().min(3000)]
    );

    // 2. bake on the same contexts, with the plan's labels: `matrix build` takes its
    //    images as they are
    let (_, ids, _) = docker(&["image", "ls", "-q", &repo]);
    for id in ids.lines() {
        let _ = docker(&["rmi", "-f", id]);
    }
    let (code, _, err) = matrix(dir.path(), &["render", "-o", "ctx"]);
    assert_eq!(code, 0, "{err}");
    let (code, bake, err) = matrix(
        dir.path(),
        &["plan", "--format", "bake", "--contexts", "ctx"],
    );
    assert_eq!(code, 0, "{err}");
    std::fs::write(dir.path().join("bake.json"), &bake).unwrap();
    let t = Instant::now();
    let (code, out, err) = sh(Command::new("docker").current_dir(dir.path()).args([
        "buildx",
        "bake",
        "-f",
        "bake.json",
        "--allow",
        "network.host",
        "--progress",
        "plain",
    ]));
    assert_eq!(code, 0, "bake failed:\n{out}\n{err}");
    eprintln!("bake: {:.1}s", t.elapsed().as_secs_f64());
    let baked = image_id(&tag);
    let (code, _, err) = matrix(dir.path(), &["build", "--builder", "buildx"]);
    assert_eq!(code, 0, "{err}");
    let m = manifest(&dir.path().join("out/manifest.json"));
    let c = cell(&m, CELL);
    assert_eq!(c["status"], "up-to-date", "bake's image is recognised: {c}");
    assert_eq!(c["image_id"], baked.as_str());

    // 3. Ctrl-C while a RUN step waits on an installer mirror that never answers.
    let hang = Hang::start();
    std::fs::write(
        dir.path().join("hang.yaml"),
        matrix_yaml(
            &repo,
            &format!("http://127.0.0.1:{}/", hang.port),
            &mirror.sha,
        ),
    )
    .unwrap();
    let out_dir = dir.path().join("out-cancel");
    let child = Command::new(env!("CARGO_BIN_EXE_matrix"))
        .current_dir(dir.path())
        .env("NO_COLOR", "1")
        .env("IMAGE_MATRIX_DATA", "/nonexistent/image-matrix-data")
        // --force: the mirror is transport only (not in the input hash), so without it
        // bake's image above would be taken as up to date; --no-cache: the download
        // cache holds this installer since the build above, and the download must hang
        .args([
            "-f",
            "hang.yaml",
            "build",
            "--builder",
            "buildx",
            "--force",
            "--no-cache",
            "-o",
        ])
        .arg(&out_dir)
        .args(["--kill-grace", "5s"])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut child = child;
    let deadline = Instant::now() + Duration::from_secs(600);
    while hang.connections() == 0 {
        if let Ok(Some(status)) = child.try_wait() {
            let mut err = String::new();
            let _ = child.stderr.take().map(|mut e| e.read_to_string(&mut err));
            panic!("the build ended ({status}) before it reached the installer download:\n{err}");
        }
        assert!(
            Instant::now() < deadline,
            "the build never reached the installer download"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    let marker = format!("127.0.0.1:{}", hang.port);
    assert!(
        !processes_with(&marker).is_empty(),
        "the download runs as a process of this host's build"
    );
    let t = Instant::now();
    // SAFETY: kill has no memory-safety preconditions.
    unsafe {
        libc::kill(child.id() as i32, libc::SIGINT);
    }
    let out = child.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(130), "{err}");
    assert!(
        t.elapsed() < Duration::from_secs(30),
        "took {:?}",
        t.elapsed()
    );
    let m = manifest(&out_dir.join("manifest.json"));
    assert_eq!(cell(&m, CELL)["status"], "cancelled");
    assert_eq!(m["outcome"]["signal"], "SIGINT");
    // nothing of the build is left: the download's connection is closed, no process
    // names the mirror or this run's contexts (the buildx client), no container
    assert!(
        hang.all_closed_within(Duration::from_secs(20)),
        "a download still holds its connection"
    );
    let out_path = out_dir.display().to_string();
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let left: Vec<String> = processes_with(&marker)
            .into_iter()
            .chain(processes_with(&out_path))
            .collect();
        if left.is_empty() {
            break;
        }
        assert!(Instant::now() < deadline, "left running: {left:#?}");
        std::thread::sleep(Duration::from_millis(200));
    }
    let (_, containers, _) = docker(&["ps", "-a", "--no-trunc", "--format", "{{.Command}}"]);
    assert!(
        !containers.contains(&marker),
        "a build container is left: {containers}"
    );
}

#[test]
fn a_registry_cache_fills_an_empty_engine_without_running_a_step() {
    require_buildx();
    let dir = tempfile::tempdir().unwrap();
    let mirror = Mirror::start(&dir.path().join("mirror"));
    let registry = Registry::start(&dir.path().join("registry"));
    let prefix = format!(
        "127.0.0.1:{}/image-matrix-bxc-{}",
        registry.port,
        std::process::id()
    );
    let _cleanup = Cleanup(prefix.clone());
    let yaml = matrix_yaml(
        &format!("{prefix}/miniconda"),
        &format!("http://127.0.0.1:{}/", mirror.port),
        &mirror.sha,
    );
    std::fs::write(dir.path().join("matrix.yaml"), yaml).unwrap();

    // A runner that keeps its daemon builds and publishes with inline cache metadata.
    let (code, _, err) = matrix(
        dir.path(),
        &[
            "build",
            "--builder",
            "buildx",
            "--cache-to",
            "inline",
            "--push",
        ],
    );
    assert_eq!(code, 0, "{err}");
    let m = manifest(&dir.path().join("out/manifest.json"));
    let c = cell(&m, CELL);
    assert!(c["pushed"][0]["ok"] == true, "{c}");

    // A runner that starts empty: a fresh engine, only the base loaded.
    let engine = FreshEngine::start(&format!("bxc{}", std::process::id() % 100_000));
    let t = Instant::now();
    let (code, _, err) = matrix(
        dir.path(),
        &[
            "build",
            "--builder",
            "buildx",
            "--engine",
            &format!("empty={}", engine.host),
            "--cache-from",
            "registry",
            "-o",
            "out-empty",
        ],
    );
    assert_eq!(code, 0, "{err}");
    eprintln!(
        "empty engine, registry cache: {:.1}s",
        t.elapsed().as_secs_f64()
    );
    let m = manifest(&dir.path().join("out-empty/manifest.json"));
    let c = cell(&m, CELL);
    assert_eq!(c["status"], "built", "{c}");
    let log = std::fs::read_to_string(dir.path().join(c["log"].as_str().unwrap())).unwrap();
    assert!(
        log.contains(&format!(
            "importing cache manifest from {prefix}/miniconda:"
        )),
        "{log}"
    );
    // every RUN step came from the cache: marked CACHED, and none printed output
    let runs: Vec<&str> = log
        .lines()
        .filter(|l| {
            l.starts_with('#') && l.contains("] RUN ") && l.contains(" bash /tmp/image-matrix/")
        })
        .filter_map(|l| l.split_whitespace().next())
        .collect();
    assert_eq!(runs.len(), 4, "the four RUN steps: {log}");
    for step in runs {
        assert!(
            log.lines().any(|l| l == format!("{step} CACHED")),
            "{step} was not taken from the cache:\n{log}"
        );
        let ran = log.lines().any(|l| {
            l.strip_prefix(step)
                .and_then(|r| r.strip_prefix(' '))
                .and_then(|r| r.split_whitespace().next())
                .is_some_and(|w| w.parse::<f64>().is_ok())
        });
        assert!(!ran, "{step} ran:\n{log}");
    }
}

/// A second engine with an empty data root (`scripts/engine.sh start NAME --fresh`),
/// wiped when dropped.
struct FreshEngine {
    name: String,
    host: String,
}

impl FreshEngine {
    fn start(name: &str) -> FreshEngine {
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/engine.sh");
        let (code, out, err) = sh(Command::new(&script)
            .env("ENGINE_BASES", BASE)
            .args(["start", name, "--fresh"]));
        assert_eq!(code, 0, "the fresh engine did not start: {err}");
        FreshEngine {
            name: name.to_string(),
            host: out.trim().lines().last().unwrap_or_default().to_string(),
        }
    }
}

impl Drop for FreshEngine {
    fn drop(&mut self) {
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/engine.sh");
        let _ = Command::new(script)
            .args(["stop", &self.name, "--wipe"])
            .status();
    }
}

/// An HTTP server that accepts connections and never answers: a download from it hangs
/// until its process is gone.
struct Hang {
    port: u16,
    streams: Arc<Mutex<Vec<TcpStream>>>,
}

impl Hang {
    fn start() -> Hang {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let streams = Arc::new(Mutex::new(Vec::new()));
        let s = Arc::clone(&streams);
        std::thread::spawn(move || {
            for c in listener.incoming().flatten() {
                s.lock().unwrap().push(c);
            }
        });
        Hang { port, streams }
    }

    fn connections(&self) -> usize {
        self.streams.lock().unwrap().len()
    }

    /// Whether every connection's peer closed it (read returns end of file).
    fn all_closed_within(&self, limit: Duration) -> bool {
        let deadline = Instant::now() + limit;
        let mut streams = self.streams.lock().unwrap();
        streams.iter_mut().all(|s| {
            let mut buf = [0u8; 4096];
            loop {
                let left = deadline.saturating_duration_since(Instant::now());
                if left.is_zero() {
                    return false;
                }
                s.set_read_timeout(Some(left)).unwrap();
                match s.read(&mut buf) {
                    Ok(0) => return true,
                    Ok(_) => {}
                    Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => return true,
                    Err(_) => return false,
                }
            }
        })
    }
}

/// Processes of this host (build containers' too) whose command line contains `what`.
fn processes_with(what: &str) -> Vec<String> {
    let me = std::process::id().to_string();
    let mut out = Vec::new();
    for e in std::fs::read_dir("/proc").unwrap().flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        if !name.bytes().all(|b| b.is_ascii_digit()) || name == me {
            continue;
        }
        let Ok(raw) = std::fs::read(e.path().join("cmdline")) else {
            continue;
        };
        let cmd = String::from_utf8_lossy(&raw).replace('\0', " ");
        if cmd.contains(what) {
            out.push(format!("{name}: {cmd}"));
        }
    }
    out
}

/// pip's "Downloading NAME (12.3 MB)" lines of a build log: how many, and their MB.
fn pip_downloads(log: &str) -> (usize, f64) {
    let mut n = 0;
    let mut mb = 0.0;
    for l in log.lines().filter(|l| l.contains("Downloading ")) {
        n += 1;
        if let Some((size, unit)) = l
            .rsplit_once('(')
            .and_then(|(_, x)| x.trim_end_matches(')').split_once(' '))
        {
            let v: f64 = size.parse().unwrap_or(0.0);
            mb += match unit {
                "kB" => v / 1000.0,
                "MB" => v,
                "GB" => v * 1000.0,
                _ => 0.0,
            };
        }
    }
    (n, mb)
}

/// A night whose base was republished rebuilds every step, but on BuildKit the
/// installer comes from the download cache (its SHA256 checked), not the mirror;
/// `--no-cache` fetches it again. The mirror's own log counts the installer's
/// downloads; pip's downloads per night are printed.
#[test]
fn a_republished_base_takes_the_installer_from_the_cache_and_no_cache_bypasses_it() {
    require_buildx();
    let dir = tempfile::tempdir().unwrap();
    let mirror = Mirror::start(&dir.path().join("mirror"));
    let prefix = format!("image-matrix-bxr-{}", std::process::id());
    let _cleanup = Cleanup(prefix.clone());
    // the base the matrix names is the test's own tag, moved to republish it
    let base = format!("{prefix}/base:bookworm");
    let (code, _, err) = docker(&["tag", BASE, &base]);
    assert_eq!(code, 0, "{err}");
    // an installer of this test's own (the stand-in and one more comment line): no
    // other build has its SHA256, so tests building beside this one on the same
    // BuildKit cannot put it in the shared cache mount between the prune and the first
    // night (which they did: the first night then fetched it 0 times)
    let file = dir
        .path()
        .join("mirror/Miniconda3-py311_24.5.0-0-Linux-x86_64.sh");
    let mut installer = std::fs::read(&file).unwrap();
    installer.extend_from_slice(format!("# {prefix}\n").as_bytes());
    std::fs::write(&file, &installer).unwrap();
    let sha = {
        use sha2::Digest;
        sha2::Sha256::digest(&installer)
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect::<String>()
    };
    let yaml = LocalMatrix::served(
        &format!("{prefix}/miniconda"),
        "conda3-python{python}-{base_name}",
        &format!("http://127.0.0.1:{}/", mirror.port),
        &sha,
    )
    .axes(&format!(
        "bases:\n  - {{image: \"{base}\", os: debian12}}\npython: [\"3.11\"]\n"
    ))
    .yaml();
    std::fs::write(dir.path().join("matrix.yaml"), &yaml).unwrap();
    let served = || {
        std::fs::read_to_string(dir.path().join("mirror/server.log"))
            .unwrap_or_default()
            .lines()
            .filter(|l| l.contains("GET /Miniconda3-") && l.contains(" 200 "))
            .count()
    };
    let night = |out: &str, extra: &[&str]| {
        let t = Instant::now();
        let mut args = vec!["build", "--builder", "buildx", "-o", out];
        args.extend_from_slice(extra);
        let (code, _, err) = matrix(dir.path(), &args);
        assert_eq!(code, 0, "{err}");
        let m = manifest(&dir.path().join(format!("{out}/manifest.json")));
        let c = cell(&m, CELL).clone();
        assert_eq!(c["status"], "built", "{c}");
        let log = std::fs::read_to_string(dir.path().join(c["log"].as_str().unwrap())).unwrap();
        (t.elapsed().as_secs_f64(), log)
    };
    let republish_base = |n: u32| republish(&base, &base, &format!("{prefix}-republish-{n}"), n);

    // the first night starts from an empty download cache, as on a fresh machine
    let (code, _, err) = docker(&["buildx", "prune", "-f", "--filter", "type=exec.cachemount"]);
    assert_eq!(code, 0, "{err}");
    let (first_s, first) = night("out1", &[]);
    let first_dl = pip_downloads(&first);
    assert_eq!(served(), 1, "the first night fetches the installer once");

    republish_base(1);
    let (second_s, second) = night("out2", &[]);
    let second_dl = pip_downloads(&second);
    assert_eq!(
        served(),
        1,
        "the republished night takes the installer from the cache"
    );
    assert!(
        second.contains("from the download cache (SHA256 checked)"),
        "{second}"
    );
    // pip keeps what the index lets it cache (PyPI's files say `immutable`); this
    // machine's proxy strips every caching header, so here pip downloads again, and
    // the figures below say how much
    // --no-cache: no layer cache and no download cache
    republish_base(2);
    let (third_s, third) = night("out3", &["--no-cache"]);
    assert_eq!(served(), 2, "--no-cache fetches the installer again");
    assert!(!third.contains("from the download cache"), "{third}");
    assert!(!third.contains("--mount=type=cache"), "{third}");
    eprintln!(
        "figures: pip downloads: first night {} files, {:.1} MB in {first_s:.1}s; republished base {} files, {:.1} MB in {second_s:.1}s; --no-cache {:.1} MB in {third_s:.1}s; installer served {} times",
        first_dl.0, first_dl.1, second_dl.0, second_dl.1, pip_downloads(&third).1, served()
    );
}
