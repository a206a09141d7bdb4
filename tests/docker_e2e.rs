//! Real images on a real Docker daemon: `matrix build` of the local Debian base with
//! the stand-in installer served from a loopback mirror, `matrix verify` from outside,
//! a wrong SHA256 failing its cell, images without the locale or with SSH host keys
//! made at build time failing verification, an offline boot, a warm nightly, and the
//! BuildKit path of Debian's docker client.
//!
//! These tests need a daemon and the base image (`scripts/setup-test-env.sh`, which
//! `scripts/test.sh` runs). Without them they fail, loudly; they never skip.

use std::process::Command;
use std::time::{Duration, Instant};

mod common;
use common::*;

const GOOD_BASE: &str = "py3.11-debian12-amd64-base-conda24.5.0-0";
const GOOD_EXTRA: &str = "py3.11-debian12-amd64-extra";
const BAD_SHA: &str = "py3.11-debian12-amd64-base-conda23.11.0-2";

#[test]
fn real_images_build_verify_and_fail_where_they_should() {
    require_environment();
    let dir = tempfile::tempdir().unwrap();
    let mirror = Mirror::start(&dir.path().join("mirror"));
    let repo = format!("image-matrix-e2e-{}", std::process::id());
    let _cleanup = Cleanup(repo.clone());
    let yaml = LocalMatrix::new(
        &format!("{repo}/miniconda"),
        "conda3-python{python}-{miniconda}-{base}-{variant}",
        &mirror,
    )
    .axes(
        r#"bases:
  - image-matrix-test/debian:bookworm
python: ["3.11"]
variants:
  - name: base
  - name: extra
    pip: ["six"]
include:
  # Real installer name, real catalogue SHA256, but the mirror serves the stand-in.
  - {base: "image-matrix-test/debian:12", python: "3.11", miniconda: "23.11.0-2", variant: base}
"#,
    )
    .yaml();
    std::fs::write(dir.path().join("matrix.yaml"), yaml).unwrap();

    // 1. Build: two cells succeed, the one with the mismatching installer fails.
    let (code, _, err) = matrix(dir.path(), &["build", "-j", "2"]);
    assert_eq!(code, 1, "one cell must fail:\n{err}");
    let m = manifest(&dir.path().join("out/manifest.json"));
    assert_eq!(m["version"], 1);
    assert!(m["docker"]["server"]
        .as_str()
        .is_some_and(|s| !s.is_empty()));
    assert!(m["finished"].is_string());
    for id in [GOOD_BASE, GOOD_EXTRA] {
        let c = cell(&m, id);
        assert_eq!(c["status"], "built", "{id}: {c}");
        assert!(c["image_id"].as_str().unwrap().starts_with("sha256:"));
        assert!(c["size_bytes"].as_u64().unwrap() > 100_000_000);
        assert_eq!(c["installer"]["sha256"], mirror.sha.as_str());
        let (_, label, _) = docker(&[
            "image",
            "inspect",
            "--format",
            "{{ index .Config.Labels \"io.image-matrix.input-hash\" }}",
            c["tags"][0].as_str().unwrap(),
        ]);
        assert_eq!(label.trim(), c["input_hash"].as_str().unwrap());
    }
    sboms_list_what_the_images_hold(dir.path(), &m);
    let bad = cell(&m, BAD_SHA);
    assert_eq!(bad["status"], "failed");
    assert_eq!(bad["exit_code"], 1);
    let log = std::fs::read_to_string(dir.path().join(bad["log"].as_str().unwrap())).unwrap();
    assert!(
        log.starts_with("# image-matrix build log: ") && log.contains("# command: "),
        "log header"
    );
    let expected = "SHA256 mismatch: expected c9ae82568e9665b1105117b4b1e499607d2a920f0aea6f94410e417a0eff1b9c, got ".to_string() + &mirror.sha;
    assert!(
        log.contains(&expected),
        "the log names file, expected and actual hash:\n{log}"
    );
    assert!(
        err.contains(&expected) && err.contains("reproduce: cd "),
        "the failure report shows the cause:\n{err}"
    );

    let first_sboms: std::collections::HashMap<&str, serde_json::Value> = [GOOD_BASE, GOOD_EXTRA]
        .into_iter()
        .map(|id| (id, cell(&m, id)["sbom"].clone()))
        .collect();

    // 2. Verify the built images from outside.
    let (code, out, err) = matrix(dir.path(), &["verify", "--format", "json"]);
    assert_eq!(code, 0, "verification failed:\n{out}\n{err}");
    let report: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(report.as_array().unwrap().len(), 2);
    for r in report.as_array().unwrap() {
        let names: Vec<&str> = r["checks"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| c["name"].as_str().unwrap())
            .collect();
        for want in [
            "ssh-login",
            "locale",
            "timezone",
            "chinese",
            "workdir",
            "python",
            "conda",
            "motd",
            "jupyter-auth",
            "jupyter-zh-ui",
            "tensorboard",
            "host-keys",
            "no-secrets",
        ] {
            assert!(names.contains(&want), "check {want} missing: {names:?}");
        }
        // recorded, and within verify's own bound (`--ready-timeout`, 90 s): how fast
        // services come up on a loaded 2-core machine is a benchmark's matter
        let ready = r["ready_seconds"].as_f64().unwrap_or(-1.0);
        println!("{}: services ready after {ready:.1} s", r["id"]);
        assert!(ready > 0.0 && ready <= 90.0, "ready_seconds {ready}: {r}");
    }
    let m = manifest(&dir.path().join("out/manifest.json"));
    assert_eq!(
        cell(&m, GOOD_BASE)["verification"]["ok"],
        true,
        "results are written into the manifest"
    );

    // 3. The checks can fail: the same image with its locale removed, and with SSH
    // host keys made at build time (the seed's defect: every container shares them)
    let good = cell(&m, GOOD_BASE)["tags"][0].as_str().unwrap().to_string();
    let nolocale = derived_image(
        &good,
        &format!("{repo}/broken:nolocale"),
        "RUN rm -rf /usr/lib/locale/zh_CN* /usr/lib/locale/locale-archive",
    );
    let baked = derived_image(
        &good,
        &format!("{repo}/broken:bakedkeys"),
        "RUN ssh-keygen -A",
    );
    let (code, out, _) = matrix(
        dir.path(),
        &[
            "verify", "--image", &nolocale, "--image", &baked, "--format", "json",
        ],
    );
    assert_eq!(code, 1, "both broken images must fail verification:\n{out}");
    let report: serde_json::Value = serde_json::from_str(&out).unwrap();
    let failed = |image: &str| -> Vec<String> {
        let r = report
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r.to_string().contains(image))
            .unwrap_or_else(|| panic!("no report of {image}: {report}"));
        r["checks"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|c| c["ok"] == false)
            .map(|c| c["name"].as_str().unwrap().to_string())
            .collect()
    };
    assert_eq!(failed(&nolocale), ["locale"]);
    assert_eq!(failed(&baked), ["host-keys"]);

    // 4. No network at all: every service starts, and docker stop is clean.
    let (code, cid, err) = docker(&["run", "-d", "--network", "none", &good]);
    assert_eq!(code, 0, "{err}");
    let cid = cid.trim().to_string();
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if docker(&["exec", &cid, "/init/bin/healthcheck"]).0 == 0 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "offline container never became healthy: {}",
            docker(&["logs", &cid]).1
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    // Healthy means Jupyter answers and sshd listens; supervisor calls a program RUNNING
    // once it has stayed up for its startsecs, so wait for all three.
    loop {
        let (_, status, _) = docker(&["exec", &cid, "supervisorctl", "status"]);
        if status.matches("RUNNING").count() == 3 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "not every service reached RUNNING offline:\n{status}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    let (code, tb, _) = docker(&[
        "exec",
        &cid,
        "curl",
        "-fsS",
        "http://127.0.0.1:6006/monitor/data/logdir",
    ]);
    assert!(code == 0 && tb.contains("/root/tensorboard-logs"), "{tb}");
    // TensorBoard listens on every interface by default, as the seed serves it (its
    // `-p 6006:6006` reaches it), and the login banner says it has no authentication.
    assert_eq!(tensorboard_listens_on(&cid).as_deref(), Some("00000000"));
    let (code, motd, _) = docker(&["exec", &cid, "/init/bin/motd"]);
    assert!(
        code == 0 && motd.contains("TensorBoard 没有身份验证"),
        "{motd}"
    );
    // SIGTERM, then a grace period long enough for a loaded machine (JupyterLab alone
    // takes ~3 s to shut down at a load average of 7): exit code 0 says supervisord
    // stopped every service and exited by itself; a boot that ignored SIGTERM would be
    // killed at the end of the grace period (137).
    let t = Instant::now();
    assert_eq!(docker(&["stop", "-t", "60", &cid]).0, 0);
    let stop_time = t.elapsed();
    let (_, exit, _) = docker(&["inspect", "--format", "{{.State.ExitCode}}", &cid]);
    let _ = docker(&["rm", "-f", &cid]);
    assert_eq!(
        exit.trim(),
        "0",
        "supervisord exits cleanly on SIGTERM (docker stop took {stop_time:?})"
    );

    // 4b. TENSORBOARD_BIND=localhost keeps it on loopback; a typo stops the boot.
    let (code, cid, err) = docker(&[
        "run",
        "-d",
        "--network",
        "none",
        "-e",
        "TENSORBOARD_BIND=localhost",
        &good,
    ]);
    assert_eq!(code, 0, "{err}");
    let cid = cid.trim().to_string();
    let deadline = Instant::now() + Duration::from_secs(60);
    while tensorboard_listens_on(&cid).is_none() {
        assert!(Instant::now() < deadline, "TensorBoard never listened");
        std::thread::sleep(Duration::from_millis(200));
    }
    assert_eq!(tensorboard_listens_on(&cid).as_deref(), Some("0100007F"));
    let (_, motd, _) = docker(&["exec", &cid, "/init/bin/motd"]);
    assert!(motd.contains("TensorBoard 只监听 127.0.0.1:6006"), "{motd}");
    let _ = docker(&["rm", "-f", &cid]);
    let (code, _, err) = docker(&[
        "run",
        "--rm",
        "--network",
        "none",
        "-e",
        "TENSORBOARD_BIND=everywhere",
        &good,
    ]);
    assert_eq!(code, 64, "{err}");
    assert!(err.contains("expected all or localhost"), "{err}");

    // 5. A warm nightly: nothing changed, so the built cells are up to date.
    let (code, _, err) = matrix(
        dir.path(),
        &["build", "-j", "2", "--filter", "miniconda=24.5.0-0"],
    );
    assert_eq!(code, 0, "{err}");
    let m = manifest(&dir.path().join("out/manifest.json"));
    assert_eq!(cell(&m, GOOD_BASE)["status"], "up-to-date");
    assert_eq!(cell(&m, GOOD_EXTRA)["status"], "up-to-date");
    // the same images: their SBOMs are the ones listed in step 1, not listed again
    for id in [GOOD_BASE, GOOD_EXTRA] {
        assert_eq!(cell(&m, id)["sbom"], first_sboms[id], "{id}");
    }

    // 6. BuildKit, through Debian's 20.10 client.
    let (code, _, err) = matrix(
        dir.path(),
        &[
            "build",
            "--docker",
            "/usr/bin/docker",
            "--builder",
            "buildkit",
            "--force",
            "--filter",
            "variant=extra",
            "-o",
            "out-buildkit",
        ],
    );
    assert_eq!(code, 0, "BuildKit build failed:\n{err}");
    let m = manifest(&dir.path().join("out-buildkit/manifest.json"));
    assert_eq!(cell(&m, GOOD_EXTRA)["status"], "built");
    assert_eq!(m["docker"]["builder"], "buildkit");
    let log = std::fs::read_to_string(
        dir.path()
            .join("out-buildkit/logs")
            .join(format!("{GOOD_EXTRA}.log")),
    )
    .unwrap();
    assert!(
        log.contains("DOCKER_BUILDKIT=1 /usr/bin/docker build --progress=plain")
            // the context arrives as a tar on standard input
            && log.contains("[internal] load remote build context")
            && log
                .lines()
                // each step with the download cache mounted (src/render/cache.rs)
                .any(|l| l.starts_with('#') && l.contains("] RUN --mount=type=cache,id=image-matrix-downloads,target=/var/cache/image-matrix IMAGE_MATRIX_CACHE=/var/cache/image-matrix PIP_CACHE_DIR=/var/cache/image-matrix/pip bash /tmp/image-matrix/")),
        "BuildKit plain output expected:\n{}",
        &log[..log.len().min(2000)]
    );
}

/// The IPv4 address (hex, as /proc/net/tcp writes it) TensorBoard's port 6006 listens
/// on inside the container, if it listens.
/// Each built cell's SBOM, listed from its real image: a valid CycloneDX 1.5 BOM that
/// holds Debian's libc6 and bash, the Python the stand-in installer borrowed from the
/// base (Debian's python3.11), and JupyterLab from pip. The stand-in makes no
/// conda-meta: its record says so.
fn sboms_list_what_the_images_hold(dir: &std::path::Path, m: &serde_json::Value) {
    for id in [GOOD_BASE, GOOD_EXTRA] {
        let rec = &cell(m, id)["sbom"];
        let path = rec["path"]
            .as_str()
            .unwrap_or_else(|| panic!("{id}: no SBOM: {rec}"));
        let doc: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(dir.join("out").join(path)).unwrap())
                .unwrap();
        common::schema::check_cyclonedx(&doc);
        let names: Vec<(String, String)> = doc["components"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| {
                let purl = c["purl"].as_str().unwrap();
                let kind = purl[4..].split('/').next().unwrap().to_string();
                (kind, c["name"].as_str().unwrap().to_string())
            })
            .collect();
        let has = |kind: &str, name: &str| names.iter().any(|(k, n)| k == kind && n == name);
        for (kind, name) in [
            ("deb", "libc6"),
            ("deb", "bash"),
            ("deb", "python3.11"),
            ("pypi", "jupyterlab"),
        ] {
            assert!(has(kind, name), "{id}: no {kind} {name} in {path}");
        }
        let counts = &rec["packages"];
        assert!(counts["dpkg"].as_u64().unwrap() > 50, "{rec}");
        assert!(counts["pip"].as_u64().unwrap() > 20, "{rec}");
        assert_eq!(counts["conda"], 0, "{rec}");
        assert!(
            rec["notes"][0]
                .as_str()
                .unwrap()
                .starts_with("conda: no conda-meta folder"),
            "{rec}"
        );
        let licensed = doc["components"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|c| c["licenses"].is_array())
            .count();
        println!(
            "{id}: SBOM of {counts} listed in {} s, {licensed} components with a licence",
            rec["seconds"]
        );
    }
}

fn tensorboard_listens_on(cid: &str) -> Option<String> {
    let (_, tcp, _) = docker(&["exec", cid, "cat", "/proc/net/tcp"]);
    tcp.lines().find_map(|l| {
        let f: Vec<&str> = l.split_whitespace().collect();
        let (addr, port) = f.get(1)?.split_once(':')?;
        // 0x1776 = 6006; state 0A = LISTEN
        (port == "1776" && f.get(3) == Some(&"0A")).then(|| addr.to_string())
    })
}

/// `tag`: `good` with one more Dockerfile line, built by the daemon's own builder.
fn derived_image(good: &str, tag: &str, line: &str) -> String {
    let mut child = Command::new("docker")
        .args(["build", "-q", "-t", tag, "-"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::null())
        .spawn()
        .unwrap();
    std::io::Write::write_all(
        child.stdin.as_mut().unwrap(),
        format!("FROM {good}\n{line}\n").as_bytes(),
    )
    .unwrap();
    drop(child.stdin.take());
    assert!(child.wait().unwrap().success(), "cannot build {tag}");
    tag.to_string()
}
