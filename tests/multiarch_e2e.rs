//! One tag, two architectures, for real: amd64 built natively on the default engine
//! and arm64 under QEMU on the "arm" engine (scripts/setup-test-env.sh starts it with
//! an arm64 Debian base), both verified, pushed to a loopback registry, joined by one
//! image index per tag; then the tag is pulled for each platform and run.
//! Needs Docker, the arm engine and binfmt emulation; fails (never skips) without.

mod common;

use std::path::Path;
use std::process::Command;
use std::time::Instant;

use common::{
    cell, docker, manifest, matrix, remove_images, require_environment, sh, LocalMatrix, Mirror,
    Registry, BASE,
};

const ARM_HOST: &str = "unix:///run/image-matrix-engines/arm.sock";
const AMD: &str = "py3.11-debian12-amd64";
const ARM: &str = "py3.11-debian12-arm64";

fn arm_docker(args: &[&str]) -> (i32, String, String) {
    sh(Command::new("docker")
        .env("DOCKER_HOST", ARM_HOST)
        .args(args))
}

fn require_arm_engine() {
    let (code, _, err) = arm_docker(&["version", "--format", "{{.Server.Version}}"]);
    assert_eq!(
        code, 0,
        "the arm engine ({ARM_HOST}) does not answer: run scripts/setup-test-env.sh: {err}"
    );
    let (code, arch, err) = arm_docker(&["image", "inspect", "-f", "{{.Architecture}}", BASE]);
    assert_eq!(
        (code, arch.trim()),
        (0, "arm64"),
        "the arm engine lacks the arm64 {BASE}: run scripts/setup-test-env.sh: {err}"
    );
    let handler = std::fs::read_to_string("/proc/sys/fs/binfmt_misc/qemu-aarch64")
        .expect("no qemu-aarch64 binfmt handler: run scripts/setup-test-env.sh");
    assert!(
        handler.starts_with("enabled") && handler.contains("flags: PF"),
        "{handler}"
    );
}

/// Images of the test's repository on both engines go when the test ends.
struct Cleanup(String);

impl Drop for Cleanup {
    fn drop(&mut self) {
        remove_images(None, &self.0);
        remove_images(Some(ARM_HOST), &self.0);
    }
}

fn yaml(repo: &str, mirror: &Mirror) -> String {
    LocalMatrix::new(repo, "conda3-python{python}-{base}", mirror)
        .image(r#"aliases: ["{tag}-{date}"]"#)
        .axes(&format!(
            r#"bases: [{BASE}]
python: ["3.11"]
platforms: [linux/amd64, linux/arm64]
"#
        ))
        .installers(&[
            "Miniconda3-py311_24.5.0-0-Linux-x86_64.sh",
            "Miniconda3-py311_24.5.0-0-Linux-aarch64.sh",
        ])
        .yaml()
}

/// The registry's answer for a tag, asked for an image index.
fn index_of(reg: &Registry, name: &str, tag: &str) -> serde_json::Value {
    let (code, out, err) = sh(Command::new("curl").args([
        "-fsS",
        "-H",
        "Accept: application/vnd.docker.distribution.manifest.list.v2+json, application/vnd.oci.image.index.v1+json",
        &format!("http://127.0.0.1:{}/v2/{name}/manifests/{tag}", reg.port),
    ]));
    assert_eq!(code, 0, "{err}");
    serde_json::from_str(&out).unwrap_or_else(|e| panic!("{e}: {out}"))
}

/// `uname -m` in the tag pulled for one platform, on the default engine.
fn machine_of(image: &str, platform: &str) -> String {
    let _ = docker(&["rmi", "-f", image]);
    let (code, _, err) = docker(&["pull", "--platform", platform, image]);
    assert_eq!(code, 0, "pull {image} for {platform}: {err}");
    let (code, out, err) = docker(&[
        "run",
        "--rm",
        "--network",
        "host",
        "--platform",
        platform,
        "--entrypoint",
        "uname",
        image,
        "-m",
    ]);
    assert_eq!(code, 0, "run {image} for {platform}: {err}");
    out.trim().to_string()
}

#[test]
fn one_tag_serves_amd64_natively_built_and_arm64_built_under_emulation() {
    require_environment();
    require_arm_engine();
    let dir = tempfile::tempdir().unwrap();
    let mirror = Mirror::start_with(
        &dir.path().join("mirror"),
        &[
            "Miniconda3-py311_24.5.0-0-Linux-x86_64.sh",
            "Miniconda3-py311_24.5.0-0-Linux-aarch64.sh",
        ],
    );
    let reg = Registry::start(&dir.path().join("registry"));
    let name = format!("image-matrix-multiarch-{}/miniconda", std::process::id());
    let repo = format!("127.0.0.1:{}/{name}", reg.port);
    let _clean = Cleanup(repo.clone());
    std::fs::write(dir.path().join("matrix.yaml"), yaml(&repo, &mirror)).unwrap();

    // the default engine builds amd64 and, with this host's emulator, arm64 too; but
    // it holds the amd64 base, so the arm64 cell goes where the arm64 base is
    let t = Instant::now();
    let (code, out, err) = matrix(
        dir.path(),
        &[
            "build",
            "-j",
            "1",
            "--engine",
            "amd=unix:///var/run/docker.sock",
            "--engine",
            &format!("arm={ARM_HOST},platform=linux/arm64"),
            "--verify",
            "--push",
            "--date",
            "20261129",
        ],
    );
    let wall = t.elapsed().as_secs_f64();
    assert_eq!(code, 0, "{out}\n{err}");
    assert!(
        err.contains("engine arm builds linux/arm64 (emulated (qemu-aarch64))"),
        "{err}"
    );
    let m = manifest(&dir.path().join("out/manifest.json"));
    let (amd, arm) = (cell(&m, AMD), cell(&m, ARM));
    assert_eq!(
        (amd["engine"].as_str(), arm["engine"].as_str()),
        (Some("amd"), Some("arm"))
    );
    for c in [amd, arm] {
        assert_eq!(c["status"], "built", "{c}");
        assert_eq!(c["verification"]["ok"], true, "{c}");
    }
    assert_eq!(arm["emulated"], true);
    assert_eq!(arm["verification"]["emulated"], true);
    let names: Vec<&str> = arm["verification"]["checks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["name"].as_str().unwrap())
        .collect();
    for needed in [
        "ready",
        "ssh-login",
        "locale",
        "python",
        "jupyter-api",
        "tensorboard",
    ] {
        assert!(
            names.contains(&needed),
            "{needed} not run under emulation: {names:?}"
        );
    }
    // each image was pushed under its platform tag; the shared tags are one index
    let idx = &m["indexes"][0];
    assert_eq!(idx["ok"], true, "{idx}");
    let tag = "conda3-python3.11-debian12";
    assert_eq!(
        idx["tags"],
        serde_json::json!([format!("{repo}:{tag}"), format!("{repo}:{tag}-20261129")])
    );
    let listed = index_of(&reg, &name, tag);
    let entries = listed["manifests"].as_array().unwrap();
    assert_eq!(entries.len(), 2, "{listed}");
    for (cell_id, arch) in [(AMD, "amd64"), (ARM, "arm64")] {
        let pushed = cell(&m, cell_id)["pushed"][0]["digest"]
            .as_str()
            .unwrap()
            .to_string();
        let entry = entries
            .iter()
            .find(|e| e["platform"]["architecture"] == arch)
            .unwrap_or_else(|| panic!("no {arch} in {listed}"));
        assert_eq!(entry["digest"], pushed, "{arch}");
    }
    // the alias is the same index
    assert_eq!(index_of(&reg, &name, &format!("{tag}-20261129")), listed);
    // pulled for each platform, the tag runs as that machine
    let image = format!("{repo}:{tag}");
    assert_eq!(machine_of(&image, "linux/amd64"), "x86_64");
    assert_eq!(machine_of(&image, "linux/arm64"), "aarch64");
    let _ = docker(&["rmi", "-f", &image]);

    let secs = |id: &str| cell(&m, id)["duration_seconds"].as_f64().unwrap();
    let verify = |id: &str| {
        cell(&m, id)["verification"]["seconds"]
            .as_f64()
            .unwrap_or(0.0)
    };
    println!(
        "multi-arch run: {wall:.1}s wall; amd64 native: build {:.1}s, verify {:.1}s; arm64 emulated: build {:.1}s, verify {:.1}s",
        secs(AMD),
        verify(AMD),
        secs(ARM),
        verify(ARM)
    );
    assert!(Path::new(&dir.path().join("out/report.html")).exists());
}
