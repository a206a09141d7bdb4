//! Two real Docker engines on this machine: the main daemon and a second `dockerd`
//! with its own data root, exec root and socket (`scripts/engine.sh`). The second one
//! breaks while it builds a cell — killed (SIGKILL), or hung (SIGSTOP: connections
//! accepted, nothing answers, only the health check can tell) — and the cell must go
//! back to the queue, be built on the first engine and be recorded with both. After the
//! kill, `matrix verify` and `matrix push` (to a loopback registry) must find every
//! image on the engine that holds it.
//!
//! Needs root, the main daemon and the base image (`scripts/setup-test-env.sh`).
//! Without them these tests fail, loudly; they never skip.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

mod common;
use common::*;

fn engine_sh(args: &[&str]) -> (i32, String, String) {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/engine.sh");
    sh(Command::new(script).args(args))
}

/// The second engine, stopped and wiped whatever happens.
struct SecondEngine {
    name: &'static str,
    host: String,
}

impl SecondEngine {
    fn start(name: &'static str) -> SecondEngine {
        // --fresh: an empty cache, so that its build is still running when it breaks
        let (code, out, err) = engine_sh(&["start", name, "--fresh"]);
        assert_eq!(code, 0, "the second engine did not start: {err}");
        SecondEngine {
            name,
            host: out.trim().to_string(),
        }
    }
}

impl Drop for SecondEngine {
    fn drop(&mut self) {
        let _ = engine_sh(&["stop", self.name, "--wipe"]);
    }
}

/// A two-engine build (engine a: the main daemon; engine b: a fresh second daemon)
/// during which b is broken with `engine.sh BREAK` 4 s into its first build.
struct Broken {
    // dropped in this order: images, the second engine, then the servers
    _cleanup: Cleanup,
    second: SecondEngine,
    registry: Registry,
    _mirror: Mirror,
    dir: tempfile::TempDir,
    repo: String,
    /// The cell engine b was building when it broke.
    lost: String,
    code: Option<i32>,
    log: String,
}

fn build_and_break(engine: &'static str, how: &str) -> Broken {
    require_environment();
    let dir = tempfile::tempdir().unwrap();
    let mirror = Mirror::start(&dir.path().join("mirror"));
    let registry = Registry::start(&dir.path().join("registry"));
    let repo = format!(
        "127.0.0.1:{}/image-matrix-{engine}-{}",
        registry.port,
        std::process::id()
    );
    let cleanup = Cleanup(repo.clone());
    let second = SecondEngine::start(engine);
    // Two bases (two tags of one image), one cell each: each engine takes one, and no
    // shared stage is built ahead of them.
    let yaml = LocalMatrix::new(
        &format!("{repo}/miniconda"),
        "conda3-python{python}-{base}-{variant}",
        &mirror,
    )
    .image(r#"aliases: ["{tag}-nightly"]"#)
    .axes(
        r#"bases:
  - image-matrix-test/debian:bookworm
  - image-matrix-test/debian:12
python: ["3.11"]
variants:
  - name: base
  - name: extra
    pip: ["six"]
exclude:
  - {base: "image-matrix-test/debian:bookworm", variant: extra, reason: "one cell per base"}
  - {base: "image-matrix-test/debian:12", variant: base, reason: "one cell per base"}
"#,
    )
    .then(&format!(
        r#"engines:
  - name: a
    host: unix:///var/run/docker.sock
    jobs: 1
  - name: b
    host: {host}
    jobs: 1
"#,
        host = second.host,
    ))
    .yaml();
    std::fs::write(dir.path().join("matrix.yaml"), yaml).unwrap();

    let t0 = Instant::now();
    let mut child = Command::new(env!("CARGO_BIN_EXE_matrix"))
        .current_dir(dir.path())
        .env("NO_COLOR", "1")
        .args(["build", "--engine-check", "2s"])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = child.stderr.take().unwrap();
    let mut log = String::new();
    let mut lost: Option<String> = None;
    let mut broken_at = None;
    for line in BufReader::new(stderr).lines() {
        let line = line.unwrap();
        log.push_str(&line);
        log.push('\n');
        // "[1.2s] started <id> on b": let it get going, then break its daemon
        if lost.is_none() && line.contains(" started ") && line.ends_with(" on b") {
            let id = line.split(" started ").nth(1).unwrap();
            lost = Some(id.trim_end_matches(" on b").to_string());
            std::thread::sleep(Duration::from_secs(4));
            let (code, _, err) = engine_sh(&[how, engine]);
            assert_eq!(code, 0, "{err}");
            broken_at = Some(t0.elapsed());
        }
    }
    let code = child.wait().unwrap().code();
    let lost = lost.unwrap_or_else(|| panic!("engine b never started a build:\n{log}"));
    eprintln!(
        "engine b: `{how}` at {:.1}s, run finished at {:.1}s",
        broken_at.unwrap_or_default().as_secs_f64(),
        t0.elapsed().as_secs_f64()
    );
    Broken {
        _cleanup: cleanup,
        second,
        registry,
        _mirror: mirror,
        dir,
        repo,
        lost,
        code,
        log,
    }
}

/// Both cells built on engine a, the lost one after a requeue from b, whose loss the
/// manifest records; returns the manifest.
fn check_requeued(r: &Broken) -> serde_json::Value {
    assert_eq!(
        r.code,
        Some(0),
        "the build must survive the engine:\n{}",
        r.log
    );
    assert!(r.log.contains("engine b is down"), "{}", r.log);
    let m = manifest(&r.dir.path().join("out/manifest.json"));
    let engines = m["engines"].as_array().unwrap();
    assert_eq!(engines.len(), 2);
    assert!(engines[0]["down"].is_null(), "{engines:?}");
    assert!(engines[1]["down"].is_string(), "{engines:?}");
    let cells: Vec<&serde_json::Value> = m["cells"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|c| c["status"] != "excluded")
        .collect();
    assert_eq!(cells.len(), 2);
    for c in &cells {
        assert_eq!(c["status"], "built", "{c}");
        assert_eq!(c["engine"], "a", "{c}");
        // the image is on engine a, with this run's input hash
        let (code, label, err) = docker(&[
            "image",
            "inspect",
            "--format",
            "{{ index .Config.Labels \"io.image-matrix.input-hash\" }}",
            c["tags"][0].as_str().unwrap(),
        ]);
        assert_eq!(code, 0, "{err}");
        assert_eq!(label.trim(), c["input_hash"].as_str().unwrap());
    }
    let k = cell(&m, &r.lost);
    assert_eq!(k["attempts"], 2, "the lost attempt counts: {k}");
    let rq = k["requeued"].as_array().unwrap();
    assert_eq!(rq.len(), 1, "{k}");
    assert_eq!(rq[0]["engine"], "b");
    assert!(rq[0]["seconds"].as_f64().unwrap() >= 3.0, "{k}");
    m
}

#[test]
fn a_hung_engine_is_caught_by_the_health_check() {
    // SIGSTOP: the socket still accepts connections, nothing answers, and the build
    // client waits forever; only the health check can notice.
    let r = build_and_break("e2e-hung", "freeze");
    let m = check_requeued(&r);
    let reason = cell(&m, &r.lost)["requeued"][0]["reason"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(
        reason.starts_with("stopped answering: ") && reason.contains("did not answer within 10s"),
        "{reason}"
    );
}

#[test]
fn a_killed_engine_loses_its_cell_to_the_other_engine() {
    let r = build_and_break("e2e-killed", "kill");
    let m = check_requeued(&r);
    let (dir, registry, repo, second) = (&r.dir, &r.registry, &r.repo, &r.second);
    assert!(
        cell(&m, &r.lost)["requeued"][0]["reason"]
            .as_str()
            .unwrap()
            .contains("Cannot connect to the Docker daemon"),
        "{m}"
    );
    // verify reads the engines from the manifest: b does not answer, every image is on a
    let (code, out, err) = matrix(dir.path(), &["verify", "--format", "json"]);
    assert_eq!(code, 0, "verification failed:\n{out}\n{err}");
    assert!(
        err.contains(&format!("engine b at {}", second.host)),
        "a warning names the engine that does not answer:\n{err}"
    );
    let report: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(report.as_array().unwrap().len(), 2);

    // push (to a loopback registry) from engine a, which holds both images, while b is
    // still down: primary tags, then aliases, each digest as the registry has it
    let (code, _, err) = matrix(dir.path(), &["push", "out/manifest.json"]);
    assert_eq!(code, 0, "push failed:\n{err}");
    let m = manifest(&dir.path().join("out/manifest.json"));
    let name = repo.split_once('/').unwrap().1.to_string() + "/miniconda";
    let (_, tags) = registry.get(&format!("/v2/{name}/tags/list"));
    for c in m["cells"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|c| c["status"] == "built")
    {
        let pushed = c["pushed"].as_array().unwrap();
        assert_eq!(pushed.len(), 2, "{c}");
        for p in pushed {
            assert_eq!(p["ok"], true, "{p}");
            let tag = p["tag"].as_str().unwrap().rsplit_once(':').unwrap().1;
            assert!(tags.contains(&format!("\"{tag}\"")), "{tag} not in {tags}");
            let (head, _) = registry.get(&format!("/v2/{name}/manifests/{tag}"));
            let digest = p["digest"].as_str().unwrap();
            assert!(
                head.to_ascii_lowercase()
                    .contains(&format!("docker-content-digest: {digest}")),
                "{tag}: the manifest records {digest}, the registry says:\n{head}"
            );
        }
    }
}
