//! One tag, two architectures, published the way CI runners that are thrown away
//! publish, for real: two engines play two runners. Each builds, verifies and stages
//! (pushes by digest to a staging repository of a registry that requires a login) the
//! shard of its platform: amd64 natively on the default engine, arm64 under QEMU on the
//! "arm" engine (scripts/setup-test-env.sh starts it with an arm64 Debian base). The
//! daemon path (`matrix push` from the engines) is checked while the images are there;
//! then both engines are wiped and `matrix publish` makes the tags and the index with no
//! Docker daemon at all. skopeo (a client we did not write) reads the index; the tag
//! is pulled for each platform and run. Failures publish nothing; a second publish
//! changes nothing; one stopped between two tags finishes when run again.
//! Needs Docker, the arm engine, binfmt emulation, htpasswd and skopeo; fails (never
//! skips) without.

mod common;

use std::path::Path;
use std::process::Command;
use std::time::Instant;

use common::{
    cell, docker, manifest, matrix, remove_images, require_environment, sh, LocalMatrix, Matrix,
    Mirror, Registry, BASE,
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

/// What skopeo (not our code) reads at `image`: the raw manifest or index, and its
/// digest.
fn skopeo_raw(image: &str, authfile: &Path) -> (serde_json::Value, String) {
    let inspect = |extra: &[&str]| {
        let (code, out, err) = sh(Command::new("skopeo")
            .args(["inspect", "--tls-verify=false", "--authfile"])
            .arg(authfile)
            .args(extra)
            .arg(format!("docker://{image}")));
        assert_eq!(code, 0, "skopeo inspect {image}: {err}");
        out
    };
    let raw = inspect(&["--raw"]);
    let digest = inspect(&["--format", "{{.Digest}}"]);
    (
        serde_json::from_str(&raw).unwrap_or_else(|e| panic!("{e}: {raw}")),
        digest.trim().to_string(),
    )
}

/// Every regular file under `dir`.
fn walkdir(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).unwrap().flatten() {
        let p = e.path();
        if p.is_dir() {
            out.extend(walkdir(&p));
        } else if p.is_file() {
            out.push(p);
        }
    }
    out
}

/// Every platform's digest in an index, by architecture.
fn entries(index: &serde_json::Value) -> Vec<(String, String)> {
    let mut v: Vec<(String, String)> = index["manifests"]
        .as_array()
        .unwrap_or_else(|| panic!("not an index: {index}"))
        .iter()
        .map(|e| {
            (
                e["platform"]["architecture"].as_str().unwrap().to_string(),
                e["digest"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    v.sort();
    v
}

/// Makes a registry's tag folder unwritable (even for root) while it lives: the
/// registry then fails to move that tag, as if the publish stopped right before it.
struct Frozen(std::path::PathBuf);

impl Frozen {
    fn new(dir: std::path::PathBuf) -> Frozen {
        let (code, _, err) = sh(Command::new("chattr").arg("-R").arg("+i").arg(&dir));
        assert_eq!(code, 0, "chattr +i {}: {err}", dir.display());
        Frozen(dir)
    }
}

impl Drop for Frozen {
    fn drop(&mut self) {
        let _ = Command::new("chattr")
            .arg("-R")
            .arg("-i")
            .arg(&self.0)
            .status();
    }
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
fn shards_staged_by_two_runners_are_published_through_the_registry_alone() {
    require_environment();
    require_arm_engine();
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let mirror = Mirror::start_with(
        &d.join("mirror"),
        &[
            "Miniconda3-py311_24.5.0-0-Linux-x86_64.sh",
            "Miniconda3-py311_24.5.0-0-Linux-aarch64.sh",
        ],
    );
    let password = format!("pw-{}-{:?}", std::process::id(), Instant::now());
    let reg = Registry::start_as(&d.join("registry"), Some(("ci", &password)));
    // every docker and matrix process of this test reads its logins here
    let config = d.join("docker-config");
    std::env::set_var("DOCKER_CONFIG", &config);
    let authfile = config.join("config.json");
    let host = format!("127.0.0.1:{}", reg.port);
    let login = |pw: &str, cfg: &Path| {
        let mut c = Matrix::new(d)
            .args(["login", &host, "--username", "ci", "--password-stdin"])
            .env("DOCKER_CONFIG", cfg)
            .command();
        c.stdin(std::process::Stdio::piped());
        let mut child = c
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        std::io::Write::write_all(&mut child.stdin.take().unwrap(), pw.as_bytes()).unwrap();
        let out = child.wait_with_output().unwrap();
        assert!(out.status.success(), "{out:?}");
        String::from_utf8_lossy(&out.stderr).to_string()
    };
    let said = login(&password, &config);
    assert!(!said.contains(&password), "{said}");
    let top = format!("image-matrix-multiarch-{}", std::process::id());
    let name = format!("{top}/miniconda");
    let repo = format!("{host}/{name}");
    let staging = format!("{repo}-staging");
    let _clean = Cleanup(format!("{host}/{top}"));
    std::fs::write(d.join("matrix.yaml"), yaml(&repo, &mirror)).unwrap();

    // the planning job: one shard per platform, each with its own kind of runner
    let (code, out, err) = matrix(d, &["plan", "--format", "gha", "--shards", "2"]);
    assert_eq!(code, 0, "{err}");
    let shards: serde_json::Value = serde_json::from_str(&out).unwrap();
    let shard_of = |platform: &str| {
        let s = shards["include"]
            .as_array()
            .unwrap()
            .iter()
            .find(|s| s["platforms"] == serde_json::json!([platform]))
            .unwrap_or_else(|| panic!("no shard of {platform} alone: {shards}"));
        s["shard"].as_str().unwrap().to_string()
    };
    let arm_runner = shards["include"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["platforms"] == serde_json::json!(["linux/arm64"]))
        .map(|s| s["runner"].clone());
    assert_eq!(arm_runner, Some(serde_json::json!("ubuntu-24.04-arm")));

    // two runners: each builds, verifies and stages its shard on its own engine
    let t = Instant::now();
    let amd_engine = "amd=unix:///var/run/docker.sock".to_string();
    let arm_engine = format!("arm={ARM_HOST},platform=linux/arm64");
    for (platform, engine, out) in [
        ("linux/amd64", &amd_engine, "out-amd"),
        ("linux/arm64", &arm_engine, "out-arm"),
    ] {
        let (code, o, err) = matrix(
            d,
            &[
                "build",
                "--shard",
                &shard_of(platform),
                "-j",
                "1",
                "--engine",
                engine,
                "--verify",
                "--stage",
                &staging,
                "--date",
                "20261129",
                "-o",
                out,
            ],
        );
        assert_eq!(code, 0, "{platform}: {o}\n{err}");
    }
    let wall = t.elapsed().as_secs_f64();
    let (code, _, err) = matrix(
        d,
        &[
            "manifest",
            "merge",
            "out-amd/manifest.json",
            "out-arm/manifest.json",
            "-o",
            "all.json",
        ],
    );
    assert_eq!(code, 0, "{err}");
    let m = manifest(&d.join("all.json"));
    let (amd, arm) = (cell(&m, AMD), cell(&m, ARM));
    assert_eq!(
        (amd["engine"].as_str(), arm["engine"].as_str()),
        (Some("amd"), Some("arm"))
    );
    for c in [amd, arm] {
        assert_eq!(c["status"], "built", "{c}");
        assert_eq!(c["verification"]["ok"], true, "{c}");
        assert_eq!(c["staged"]["repository"], staging.as_str(), "{c}");
        assert_eq!(c["staged"]["config"], c["image_id"], "{c}");
        assert!(
            c["pushed"].as_array().is_none_or(|p| p.is_empty()),
            "no public tag moved: {c}"
        );
    }
    assert_eq!(arm["emulated"], true);
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
    let staged = |c: &serde_json::Value| c["staged"]["digest"].as_str().unwrap().to_string();
    let want = vec![
        ("amd64".to_string(), staged(amd)),
        ("arm64".to_string(), staged(arm)),
    ];
    let tag = "conda3-python3.11-debian12";
    let alias = format!("{tag}-20261129");
    let image = format!("{repo}:{tag}");

    // fleets that keep their daemons still publish from them
    let (code, o, err) = matrix(
        d,
        &[
            "push",
            "all.json",
            "--engine",
            &amd_engine,
            "--engine",
            &arm_engine,
        ],
    );
    assert_eq!(code, 0, "{o}\n{err}");
    let (from_daemons, docker_index) = skopeo_raw(&image, &authfile);
    assert_eq!(entries(&from_daemons).len(), 2, "{from_daemons}");
    // that was a copy of the manifest: the registry publish starts from the build's
    let (code, _, err) = matrix(
        d,
        &[
            "manifest",
            "merge",
            "out-amd/manifest.json",
            "out-arm/manifest.json",
            "-o",
            "all.json",
        ],
    );
    assert_eq!(code, 0, "{err}");

    // the runners are thrown away with their images
    remove_images(None, &format!("{host}/{top}"));
    remove_images(Some(ARM_HOST), &format!("{host}/{top}"));
    let no_docker = |args: &[&str], cfg: &Path| {
        let o = Matrix::new(d)
            .args(args)
            .env("DOCKER_HOST", "unix:///nonexistent/docker.sock")
            .env("DOCKER_CONFIG", cfg)
            .env("PATH", "/nonexistent")
            .output();
        (
            o.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&o.stderr).to_string(),
        )
    };
    let still = |why: &str| {
        assert_eq!(
            skopeo_raw(&image, &authfile).1,
            docker_index,
            "{why}: a tag moved"
        );
    };
    let edited = |file: &str, edit: &dyn Fn(&mut serde_json::Value)| {
        let mut v = manifest(&d.join("all.json"));
        edit(&mut v);
        std::fs::write(d.join(file), serde_json::to_vec(&v).unwrap()).unwrap();
    };

    // each failure is clear and publishes nothing
    let wrong = d.join("wrong-config");
    login("not-the-password", &wrong);
    let (code, err) = no_docker(&["publish", "all.json"], &wrong);
    assert_ne!(code, 0);
    assert!(err.contains("refused the credentials"), "{err}");
    assert!(
        !err.contains("not-the-password") && !err.contains(&password),
        "{err}"
    );
    still("wrong password");
    edited("unverified.json", &|v| {
        let c = v["cells"]
            .as_array_mut()
            .unwrap()
            .iter_mut()
            .find(|c| c["id"] == ARM)
            .unwrap();
        c["verification"]["ok"] = false.into();
    });
    let (code, err) = no_docker(&["publish", "unverified.json"], &config);
    assert_ne!(code, 0);
    assert!(
        err.contains("did not build and verify") && err.contains("publishing nothing"),
        "{err}"
    );
    still("unverified cell");
    edited("lost.json", &|v| {
        let c = v["cells"]
            .as_array_mut()
            .unwrap()
            .iter_mut()
            .find(|c| c["id"] == AMD)
            .unwrap();
        c["staged"]["digest"] = format!("sha256:{}", "0".repeat(64)).into();
    });
    let (code, err) = no_docker(&["publish", "lost.json"], &config);
    assert_ne!(code, 0);
    assert!(
        err.contains("no longer holds cell") && err.contains("publishing nothing"),
        "{err}"
    );
    still("lost digest");

    // stopped between two tags (the alias cannot be written), then run again
    let tags = d.join(format!(
        "registry/storage/docker/registry/v2/repositories/{name}/_manifests/tags/{alias}"
    ));
    {
        let _frozen = Frozen::new(tags);
        let (code, err) = no_docker(&["publish", "all.json"], &config);
        assert_ne!(code, 0, "{err}");
        assert!(err.contains("run again to finish"), "{err}");
    }
    let t = Instant::now();
    let (code, err) = no_docker(&["publish", "all.json"], &config);
    let publish_secs = t.elapsed().as_secs_f64();
    assert_eq!(code, 0, "{err}");
    assert!(
        err.contains("1 indexes made") || err.contains("tags moved"),
        "{err}"
    );
    let (index, digest) = skopeo_raw(&image, &authfile);
    assert_eq!(entries(&index), want, "{index}");
    assert_eq!(skopeo_raw(&format!("{repo}:{alias}"), &authfile).1, digest);
    let m = manifest(&d.join("all.json"));
    assert_eq!(m["indexes"][0]["digest"], digest.as_str());
    assert_eq!(m["indexes"][0]["ok"], true);
    // no secret in the manifests, the reports or the build logs
    let mut files = vec![d.join("all.json")];
    for out in ["out-amd", "out-arm"] {
        let walk = walkdir(&d.join(out));
        assert!(walk.len() > 3, "{out}: {walk:?}");
        files.extend(walk);
    }
    for f in files {
        let text = String::from_utf8_lossy(&std::fs::read(&f).unwrap()).to_string();
        assert!(
            !text.contains(&password),
            "{} holds the password",
            f.display()
        );
    }
    // a second publish changes nothing, and says so
    let (code, err) = no_docker(&["publish", "all.json"], &config);
    assert_eq!(code, 0, "{err}");
    assert!(err.contains("nothing changed"), "{err}");
    assert_eq!(skopeo_raw(&image, &authfile).1, digest);

    // signed: each platform's image and the index, each image with its provenance and
    // the SBOM listed from the real image (copied beside all.json by merge)
    let keygen = Matrix::new(d)
        .args(["signature", "keygen", "--output", "release"])
        .env("IMAGE_MATRIX_SIGNING_PASSWORD", "signing-pass")
        .output();
    assert!(keygen.status.success(), "{keygen:?}");
    let signed = Matrix::new(d)
        .args(["publish", "all.json", "--sign-key", "release.key"])
        .env("DOCKER_CONFIG", &config)
        .env("DOCKER_HOST", "unix:///nonexistent/docker.sock")
        .env("IMAGE_MATRIX_SIGNING_PASSWORD", "signing-pass")
        .output();
    let err = String::from_utf8_lossy(&signed.stderr).to_string();
    assert!(signed.status.success(), "{err}");
    assert!(err.contains("3 signatures made"), "{err}");
    let (code, err) = no_docker(
        &[
            "signature",
            "verify",
            "--key",
            "release.pub",
            &format!("{repo}:{tag}"),
        ],
        &config,
    );
    assert_eq!(code, 0, "{err}");
    assert_eq!(err.matches("1 valid signature").count(), 3, "{err}");
    assert_eq!(
        err.matches("https://cyclonedx.org/bom (").count(),
        2,
        "{err}"
    );
    assert_eq!(
        skopeo_raw(&image, &authfile).1,
        digest,
        "signing moved no tag"
    );

    // pulled for each platform on a wiped engine, the tag runs as that machine
    assert_eq!(machine_of(&image, "linux/amd64"), "x86_64");
    assert_eq!(machine_of(&image, "linux/arm64"), "aarch64");
    let _ = docker(&["rmi", "-f", &image]);

    // a registry that is down: a clear error
    drop(reg);
    let (code, err) = no_docker(&["publish", "all.json"], &config);
    assert_ne!(code, 0);
    assert!(err.contains("does not answer"), "{err}");

    let secs = |id: &str| cell(&m, id)["duration_seconds"].as_f64().unwrap();
    let verify = |id: &str| {
        cell(&m, id)["verification"]["seconds"]
            .as_f64()
            .unwrap_or(0.0)
    };
    println!(
        "multi-arch run: {wall:.1}s wall for both shards; amd64 native: build {:.1}s, verify {:.1}s; arm64 emulated: build {:.1}s, verify {:.1}s; publish {publish_secs:.2}s",
        secs(AMD),
        verify(AMD),
        secs(ARM),
        verify(ARM)
    );
}
