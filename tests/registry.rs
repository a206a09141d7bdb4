//! `matrix publish` and `matrix prune --registry` against a real registry (Debian's
//! docker-registry, requiring a login), with no Docker daemon anywhere: the staged
//! images are small OCI images made here and copied in by skopeo, as a shard job's
//! `build --stage` would have pushed them, and skopeo (a client we did not write)
//! reads the results. Needs docker-registry, htpasswd and skopeo
//! (scripts/setup-test-env.sh installs them); fails, never skips, without.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use common::{sh, Matrix, Registry};
use image_matrix::manifest::{CellRecord, Manifest, Staged, Status, Verification};
use sha2::Digest as _;

const USER: &str = "ci";

fn sha(bytes: &[u8]) -> String {
    format!("sha256:{:x}", sha2::Sha256::digest(bytes))
}

/// A registry requiring a login, its client config (logged in with `matrix login`)
/// and a work folder.
struct Setup {
    dir: tempfile::TempDir,
    reg: Option<Registry>,
    host: String,
    password: String,
}

impl Setup {
    fn new() -> Setup {
        for tool in ["docker-registry", "htpasswd", "skopeo"] {
            assert!(
                Command::new("sh")
                    .args(["-c", &format!("command -v {tool}")])
                    .output()
                    .is_ok_and(|o| o.status.success()),
                "{tool} is missing: run scripts/setup-test-env.sh"
            );
        }
        let dir = tempfile::tempdir().unwrap();
        let password = format!("pw-{}-{}", std::process::id(), rand_suffix());
        let reg = Registry::start_as(&dir.path().join("registry"), Some((USER, &password)));
        let host = format!("127.0.0.1:{}", reg.port);
        let s = Setup {
            dir,
            reg: Some(reg),
            host,
            password,
        };
        let pw = s.password.clone();
        s.login(&pw, &s.config());
        s
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }

    fn config(&self) -> PathBuf {
        self.path().join("docker-config")
    }

    fn login(&self, password: &str, config: &Path) -> String {
        let mut child = Matrix::new(self.path())
            .args(["login", &self.host, "--username", USER, "--password-stdin"])
            .env("DOCKER_CONFIG", config)
            .command()
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        std::io::Write::write_all(&mut child.stdin.take().unwrap(), password.as_bytes()).unwrap();
        let out = child.wait_with_output().unwrap();
        assert!(out.status.success(), "{out:?}");
        String::from_utf8_lossy(&out.stderr).to_string()
    }

    /// `matrix ARGS` with no Docker reachable; (exit code, stderr).
    fn matrix(&self, args: &[&str], config: &Path) -> (i32, String) {
        let o = Matrix::new(self.path())
            .args(args)
            .env("DOCKER_CONFIG", config)
            .env("DOCKER_HOST", "unix:///nonexistent/docker.sock")
            .env("PATH", "/nonexistent")
            .output();
        (
            o.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&o.stderr).to_string(),
        )
    }

    fn skopeo(&self, args: &[&str]) -> String {
        let (code, out, err) = sh(Command::new("skopeo")
            .args(args)
            .arg("--authfile")
            .arg(self.config().join("config.json")));
        assert_eq!(code, 0, "skopeo {args:?}: {err}");
        out
    }

    /// A small image for `arch` (its config made distinct by `label`), pushed to
    /// `repo:tag` as skopeo pushes an OCI layout; returns its manifest and config
    /// digests.
    fn image(&self, repo: &str, tag: &str, arch: &str, label: &str) -> (String, String) {
        let layout = self.path().join(format!("layout-{label}"));
        let blobs = layout.join("blobs/sha256");
        std::fs::create_dir_all(&blobs).unwrap();
        let put = |bytes: &[u8]| {
            let d = sha(bytes);
            std::fs::write(blobs.join(&d[7..]), bytes).unwrap();
            d
        };
        let src = layout.join("src");
        std::fs::create_dir_all(&src).unwrap();
        std::fs::write(src.join("hello"), label).unwrap();
        let tar = layout.join("layer.tar");
        let (code, _, err) = sh(Command::new("tar")
            .arg("--sort=name")
            .arg("--mtime=@0")
            .arg("--owner=0")
            .arg("--group=0")
            .arg("-cf")
            .arg(&tar)
            .arg("-C")
            .arg(&src)
            .arg("hello"));
        assert_eq!(code, 0, "{err}");
        let layer = std::fs::read(&tar).unwrap();
        let diff_id = sha(&layer);
        let layer_digest = put(&layer);
        let config = serde_json::to_vec(&serde_json::json!({
            "architecture": arch,
            "os": "linux",
            "config": {"Labels": {"test": label}},
            "rootfs": {"type": "layers", "diff_ids": [diff_id]},
        }))
        .unwrap();
        let config_digest = put(&config);
        let manifest = serde_json::to_vec(&serde_json::json!({
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": config_digest, "size": config.len()},
            "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar", "digest": layer_digest, "size": layer.len()}],
        }))
        .unwrap();
        let manifest_digest = put(&manifest);
        std::fs::write(
            layout.join("index.json"),
            serde_json::to_vec(&serde_json::json!({
                "schemaVersion": 2,
                "manifests": [{"mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": manifest_digest, "size": manifest.len(), "annotations": {"org.opencontainers.image.ref.name": "x"}}],
            }))
            .unwrap(),
        )
        .unwrap();
        std::fs::write(
            layout.join("oci-layout"),
            r#"{"imageLayoutVersion":"1.0.0"}"#,
        )
        .unwrap();
        let digestfile = layout.join("digest");
        self.skopeo(&[
            "copy",
            "-q",
            "--dest-tls-verify=false",
            "--digestfile",
            digestfile.to_str().unwrap(),
            &format!("oci:{}:x", layout.display()),
            &format!("docker://{repo}:{tag}"),
        ]);
        // skopeo may write the manifest its own way (compressing the layer): what the
        // registry holds is what counts, as after a docker push
        let pushed = std::fs::read_to_string(digestfile)
            .unwrap()
            .trim()
            .to_string();
        let (held, raw) = self.read(&format!("{repo}@{pushed}"));
        assert_eq!(held, pushed);
        assert_eq!(raw["config"]["digest"], config_digest.as_str(), "{raw}");
        let _ = manifest_digest;
        (pushed, config_digest)
    }

    /// The digest skopeo reads at `repo:tag`, and the raw manifest.
    fn read(&self, image: &str) -> (String, serde_json::Value) {
        let raw = self.skopeo(&[
            "inspect",
            "--raw",
            "--tls-verify=false",
            &format!("docker://{image}"),
        ]);
        (sha(raw.as_bytes()), serde_json::from_str(&raw).unwrap())
    }

    fn tags(&self, repo: &str) -> Vec<String> {
        let out = self.skopeo(&[
            "list-tags",
            "--tls-verify=false",
            &format!("docker://{repo}"),
        ]);
        let v: serde_json::Value = serde_json::from_str(&out).unwrap();
        let mut t: Vec<String> = v["Tags"]
            .as_array()
            .unwrap()
            .iter()
            .map(|x| x.as_str().unwrap().to_string())
            .collect();
        t.sort();
        t
    }
}

fn rand_suffix() -> u128 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos()
}

/// A merged manifest as two shard jobs would have left it: cell `solo` (amd64) and a
/// tag group `g` over amd64 and arm64, each built, verified and staged.
fn merged(s: &Setup, repo: &str, date: &str) -> Manifest {
    let staging = format!("{repo}-staging");
    let mut m = Manifest::new("matrix.yaml", "0", None);
    m.repository = Some(repo.to_string());
    m.date = Some(date.to_string());
    for (id, arch, group) in [
        ("solo", "amd64", None),
        ("g-amd64", "amd64", Some("g")),
        ("g-arm64", "arm64", Some("g")),
    ] {
        let mut c = CellRecord::new(id, Default::default());
        c.coordinates.platform = format!("linux/{arch}");
        c.status = Status::Built;
        c.verification = Some(Verification {
            ok: true,
            ..Default::default()
        });
        let name = group.unwrap_or(id);
        c.tags = vec![format!("{repo}:{name}"), format!("{repo}:{name}-{date}")];
        c.group = group.map(String::from);
        if group.is_some() {
            c.platform_tag = Some(format!("{repo}:{id}"));
        }
        let stage_tag = format!("{id}-{date}");
        let (digest, config) = s.image(&staging, &stage_tag, arch, &format!("{id}-{date}"));
        c.image_id = Some(config.clone());
        c.staged = Some(Staged {
            repository: staging.clone(),
            tag: stage_tag,
            digest,
            config,
        });
        m.cells.push(c);
        m.planned.push(id.to_string());
    }
    m
}

fn write(s: &Setup, name: &str, m: &Manifest) -> String {
    std::fs::write(s.path().join(name), serde_json::to_vec_pretty(m).unwrap()).unwrap();
    name.to_string()
}

#[test]
fn publish_makes_the_tags_and_the_index_once_and_a_second_run_changes_nothing() {
    let s = Setup::new();
    let repo = format!("{}/ns/miniconda", s.host);
    let m = merged(&s, &repo, "20261129");
    let file = write(&s, "all.json", &m);
    let config = s.config();
    let (code, err) = s.matrix(&["publish", &file], &config);
    assert_eq!(code, 0, "{err}");
    assert!(
        err.contains("publish: 2 tags moved") && err.contains("1 indexes made"),
        "{err}"
    );
    // the solo cell's tags are its staged image
    let staged = |i: usize| m.cells[i].staged.as_ref().unwrap().digest.clone();
    assert_eq!(s.read(&format!("{repo}:solo")).0, staged(0));
    assert_eq!(s.read(&format!("{repo}:solo-20261129")).0, staged(0));
    // the group's tags are one index over both platforms' staged images
    let (index_digest, index) = s.read(&format!("{repo}:g"));
    let mut members: Vec<(String, String)> = index["manifests"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            (
                e["platform"]["architecture"].as_str().unwrap().into(),
                e["digest"].as_str().unwrap().into(),
            )
        })
        .collect();
    members.sort();
    assert_eq!(
        members,
        [
            ("amd64".to_string(), staged(1)),
            ("arm64".to_string(), staged(2))
        ]
    );
    assert_eq!(s.read(&format!("{repo}:g-20261129")).0, index_digest);
    // no per-platform tags in the public repository
    assert!(
        !s.tags(&repo).iter().any(|t| t.starts_with("g-a")),
        "{:?}",
        s.tags(&repo)
    );
    // what it did is in the manifest, and no secret anywhere
    let text = std::fs::read_to_string(s.path().join(&file)).unwrap();
    let after: Manifest = serde_json::from_str(&text).unwrap();
    assert_eq!(
        after.indexes[0].digest.as_deref(),
        Some(index_digest.as_str())
    );
    assert!(after.cells[0]
        .pushed
        .iter()
        .all(|p| p.ok && p.digest.as_deref() == Some(staged(0).as_str())));
    for t in [&text, &err] {
        assert!(!t.contains(&s.password), "a secret leaked: {t}");
    }
    // the report shows each staged digest and the tags made from it
    let (code, err) = s.matrix(&["report", &file, "-o", "report.html"], &config);
    assert_eq!(code, 0, "{err}");
    let html = std::fs::read_to_string(s.path().join("report.html")).unwrap();
    assert!(
        html.contains("Staged (by digest)") && html.contains(&staged(2)),
        "no staged digest in the report"
    );
    assert!(
        html.contains(&index_digest),
        "no index digest in the report"
    );
    assert!(!html.contains(&s.password));
    // again: nothing changes, and it says so; the manifest's records are not doubled
    let (code, err) = s.matrix(&["publish", &file], &config);
    assert_eq!(code, 0, "{err}");
    assert!(err.contains("nothing changed"), "{err}");
    let again: Manifest =
        serde_json::from_slice(&std::fs::read(s.path().join(&file)).unwrap()).unwrap();
    assert_eq!(again.cells[0].pushed.len(), 2);
    assert!(again.cells[0].pushed.iter().all(|p| p.unchanged));
    assert_eq!(s.read(&format!("{repo}:g")).0, index_digest);
}

/// Makes a registry's tag folder unwritable (even for root) while it lives: the
/// registry then fails to move that tag, as if the publish stopped right before it.
struct Frozen(PathBuf);

impl Drop for Frozen {
    fn drop(&mut self) {
        let _ = Command::new("chattr")
            .arg("-R")
            .arg("-i")
            .arg(&self.0)
            .status();
    }
}

#[test]
fn a_publish_stopped_between_two_tags_finishes_when_run_again() {
    let s = Setup::new();
    let repo = format!("{}/ns/miniconda", s.host);
    let m = merged(&s, &repo, "20261129");
    let file = write(&s, "all.json", &m);
    // the alias of the solo cell cannot be written: make its folder first, frozen
    let tag_dir = s
        .path()
        .join("registry/storage/docker/registry/v2/repositories/ns/miniconda/_manifests/tags/solo-20261129");
    std::fs::create_dir_all(&tag_dir).unwrap();
    {
        let (code, _, err) = sh(Command::new("chattr").arg("-R").arg("+i").arg(&tag_dir));
        assert_eq!(code, 0, "chattr: {err}");
        let _frozen = Frozen(tag_dir.clone());
        let (code, err) = s.matrix(&["publish", &file], &s.config());
        assert_ne!(code, 0, "{err}");
        assert!(err.contains("run again to finish"), "{err}");
        assert!(
            err.contains(&format!("push {repo}:solo-20261129: failed")),
            "{err}"
        );
    }
    let (code, err) = s.matrix(&["publish", &file], &s.config());
    assert_eq!(code, 0, "{err}");
    assert!(
        err.contains("unchanged"),
        "the first tags stayed done: {err}"
    );
    assert!(
        err.contains(&format!("push {repo}:solo-20261129: ok")),
        "{err}"
    );
    assert_eq!(
        s.read(&format!("{repo}:solo-20261129")).0,
        m.cells[0].staged.as_ref().unwrap().digest
    );
}

#[test]
fn what_cannot_be_published_publishes_nothing_and_says_why() {
    let s = Setup::new();
    let repo = format!("{}/ns/miniconda", s.host);
    let m = merged(&s, &repo, "20261129");
    let config = s.config();
    let nothing_public = |why: &str| {
        // a repository nothing was published to does not exist at all
        let (code, out, err) = sh(Command::new("skopeo")
            .args(["list-tags", "--tls-verify=false", "--authfile"])
            .arg(s.config().join("config.json"))
            .arg(format!("docker://{repo}")));
        assert!(
            code != 0 && err.contains("404"),
            "{why}: the public repository exists: {out}{err}"
        );
    };
    // a wrong password
    let wrong = s.path().join("wrong-config");
    s.login("not-the-password", &wrong);
    let file = write(&s, "all.json", &m);
    let (code, err) = s.matrix(&["publish", &file], &wrong);
    assert_ne!(code, 0);
    assert!(
        err.contains("refused the credentials") && err.contains("publishing nothing"),
        "{err}"
    );
    assert!(
        !err.contains("not-the-password") && !err.contains(&s.password),
        "{err}"
    );
    // a cell that did not pass verification
    let mut bad = m.clone();
    bad.cells[2].verification.as_mut().unwrap().ok = false;
    let (code, err) = s.matrix(&["publish", &write(&s, "unverified.json", &bad)], &config);
    assert_ne!(code, 0);
    assert!(err.contains("did not build and verify (g-arm64)"), "{err}");
    nothing_public("unverified");
    // a digest the registry does not hold
    let mut bad = m.clone();
    bad.cells[1].staged.as_mut().unwrap().digest = format!("sha256:{}", "0".repeat(64));
    let (code, err) = s.matrix(&["publish", &write(&s, "lost.json", &bad)], &config);
    assert_ne!(code, 0);
    assert!(err.contains("no longer holds cell g-amd64"), "{err}");
    nothing_public("lost digest");
    // a staged image that is not the one the cell built
    let mut bad = m.clone();
    bad.cells[0].staged = bad.cells[1].staged.clone();
    let (code, err) = s.matrix(&["publish", &write(&s, "swapped.json", &bad)], &config);
    assert_ne!(code, 0);
    assert!(err.contains("not the image the cell built"), "{err}");
    nothing_public("swapped image");
    // a registry that is down
    let mut s = s;
    drop(s.reg.take());
    let (code, err) = s.matrix(&["publish", &file], &config);
    assert_ne!(code, 0);
    assert!(err.contains("does not answer"), "{err}");
}

#[test]
fn prune_registry_deletes_the_dated_tags_of_old_nights_only() {
    let s = Setup::new();
    let repo = format!("{}/ns/miniconda", s.host);
    // five nights published, each a new image (staged and published as the tool does)
    let mut last = None;
    for night in ["20261201", "20261202", "20261203", "20261204", "20261205"] {
        let m = merged(&s, &repo, night);
        let file = write(&s, &format!("{night}.json"), &m);
        let (code, err) = s.matrix(&["publish", &file], &s.config());
        assert_eq!(code, 0, "{night}: {err}");
        last = Some(file);
    }
    let last = last.unwrap();
    let before = s.tags(&repo);
    assert_eq!(before.iter().filter(|t| t.starts_with("solo-")).count(), 5);
    let (code, err) = s.matrix(
        &[
            "prune",
            "--registry",
            "--keep-dated",
            "2",
            "--manifest",
            &last,
            "--dry-run",
        ],
        &s.config(),
    );
    assert_eq!(code, 0, "{err}");
    assert!(
        err.contains("keeping the nights 20261205, 20261204; 6 dated tags older"),
        "{err}"
    );
    assert_eq!(s.tags(&repo), before, "a dry run deletes nothing");
    let (code, err) = s.matrix(
        &[
            "prune",
            "--registry",
            "--keep-dated",
            "2",
            "--manifest",
            &last,
        ],
        &s.config(),
    );
    assert_eq!(code, 0, "{err}");
    assert!(err.contains("6 dated tags deleted"), "{err}");
    assert_eq!(
        s.tags(&repo),
        [
            "g",
            "g-20261204",
            "g-20261205",
            "solo",
            "solo-20261204",
            "solo-20261205"
        ]
    );
    // what the latest run published still resolves
    let (_, index) = s.read(&format!("{repo}:g"));
    assert_eq!(index["manifests"].as_array().unwrap().len(), 2);
}

/// sigstore-rs (the sigstore project's Rust client, tests/cosign-check), built once:
/// a verifier we did not write. Debian's skopeo 1.9 would be the obvious one, but its
/// sigstore support is patched out ("Debian-local change: sigstore disabled").
fn cosign_check() -> PathBuf {
    static BUILT: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
    BUILT
        .get_or_init(|| {
            let root = Path::new(env!("CARGO_MANIFEST_DIR"));
            let target = root.join("target/cosign-check");
            let (code, _, err) = sh(Command::new("cargo")
                .args(["build", "--quiet", "--locked", "--manifest-path"])
                .arg(root.join("tests/cosign-check/Cargo.toml"))
                .env("CARGO_TARGET_DIR", &target));
            assert_eq!(code, 0, "building tests/cosign-check: {err}");
            target.join("debug/cosign-check")
        })
        .clone()
}

/// Whether sigstore-rs finds a signature of `image` by the key `public`.
fn sigstore_accepts(s: &Setup, image: &str, public: &Path) -> (bool, String) {
    let (code, out, err) = sh(Command::new(cosign_check())
        .arg(image)
        .arg(public)
        .env("REGISTRY_USER", USER)
        .env("REGISTRY_PASSWORD", &s.password));
    (code == 0, format!("{out}{err}"))
}

#[test]
fn published_images_carry_signatures_sigstore_verifies() {
    let s = Setup::new();
    let repo = format!("{}/ns/miniconda", s.host);
    // a shard's manifest with the solo cell's SBOM beside it, merged into another folder
    let mut m = merged(&s, &repo, "20261129");
    let bom = serde_json::to_vec(&serde_json::json!({
        "bomFormat": "CycloneDX", "specVersion": "1.5", "version": 1,
        "components": [{"type": "library", "name": "jupyterlab", "version": "4.2.5", "purl": "pkg:pypi/jupyterlab@4.2.5"}],
    }))
    .unwrap();
    std::fs::create_dir_all(s.path().join("shard-1/sbom")).unwrap();
    std::fs::write(s.path().join("shard-1/sbom/solo.json"), &bom).unwrap();
    m.cells[0].sbom = Some(image_matrix::manifest::SbomRecord {
        path: Some("sbom/solo.json".into()),
        format: "CycloneDX 1.5 JSON".into(),
        sha256: Some(format!("{:x}", sha2::Sha256::digest(&bom))),
        ..Default::default()
    });
    write(&s, "shard-1/manifest.json", &m);
    let (code, err) = s.matrix(
        &[
            "manifest",
            "merge",
            "shard-1/manifest.json",
            "-o",
            "merged/all.json",
        ],
        &s.config(),
    );
    assert_eq!(code, 0, "{err}");
    assert!(err.contains("1 SBOMs"), "{err}");
    assert_eq!(
        std::fs::read(s.path().join("merged/sbom/solo.json")).unwrap(),
        bom
    );
    let file = "merged/all.json".to_string();
    // a key pair made by the tool, its private key sealed with a password
    let keygen = |prefix: &str, pw: &str| {
        let o = Matrix::new(s.path())
            .args(["signature", "keygen", "--output", prefix])
            .env("IMAGE_MATRIX_SIGNING_PASSWORD", pw)
            .output();
        assert!(o.status.success(), "{o:?}");
    };
    keygen("release", "key-pass-1");
    keygen("stranger", "key-pass-2");
    let sealed = std::fs::read_to_string(s.path().join("release.key")).unwrap();
    // the key from a CI secret: the PEM in a variable, its password in another
    let o = Matrix::new(s.path())
        .args(["publish", &file, "--sign-key", "env:RELEASE_KEY"])
        .env("DOCKER_CONFIG", s.config())
        .env("RELEASE_KEY", &sealed)
        .env("IMAGE_MATRIX_SIGNING_PASSWORD", "key-pass-1")
        .output();
    let err = String::from_utf8_lossy(&o.stderr).to_string();
    assert!(o.status.success(), "{err}");
    assert!(err.contains("sign sha256:"), "{err}");
    assert!(
        !err.contains("key-pass-1") && !err.contains("PRIVATE KEY"),
        "{err}"
    );
    let after: Manifest =
        serde_json::from_slice(&std::fs::read(s.path().join(&file)).unwrap()).unwrap();
    assert_eq!(after.signatures.len(), 4, "three images and one index");
    // our own check, then sigstore-rs's (a verifier we did not write)
    let public = s.path().join("release.pub");
    let (code, err) = s.matrix(
        &[
            "signature",
            "verify",
            "--key",
            public.to_str().unwrap(),
            &format!("{repo}:g"),
        ],
        &s.config(),
    );
    assert_eq!(code, 0, "{err}");
    assert_eq!(
        err.matches("1 valid signature").count(),
        3,
        "the index and both platforms: {err}"
    );
    assert_eq!(
        err.matches("provenance signed by").count(),
        2,
        "each platform's provenance: {err}"
    );
    assert!(err.contains("https://slsa.dev/provenance/v1"), "{err}");
    // the solo cell's SBOM travels with it, signed
    let (code, err) = s.matrix(
        &[
            "signature",
            "verify",
            "--key",
            public.to_str().unwrap(),
            &format!("{repo}:solo"),
        ],
        &s.config(),
    );
    assert_eq!(code, 0, "{err}");
    assert!(
        err.contains("https://cyclonedx.org/bom (1 components)"),
        "{err}"
    );
    assert_eq!(after.attestations.len(), 3, "one per image");
    let g_amd64 = after.cells[1].staged.as_ref().unwrap().digest.clone();
    for image in [
        format!("{repo}:solo"),
        format!("{repo}:g"),
        format!("{repo}@{g_amd64}"),
    ] {
        let (ok, why) = sigstore_accepts(&s, &image, &public);
        assert!(ok, "sigstore-rs refused {image}: {why}");
        let (ok, _) = sigstore_accepts(&s, &image, &s.path().join("stranger.pub"));
        assert!(!ok, "sigstore-rs accepted {image} under another key");
    }
    // an image nobody signed is refused by both
    let (unsigned, _) = s.image(&repo, "unsigned", "amd64", "unsigned");
    let (ok, _) = sigstore_accepts(&s, &format!("{repo}:unsigned"), &public);
    assert!(!ok, "sigstore-rs accepted an unsigned image");
    let (code, err) = s.matrix(
        &[
            "signature",
            "verify",
            "--key",
            public.to_str().unwrap(),
            &format!("{repo}@{unsigned}"),
        ],
        &s.config(),
    );
    assert_ne!(code, 0);
    assert!(err.contains("has no signature"), "{err}");
    // a wrong password opens nothing and publishes nothing new
    let o = Matrix::new(s.path())
        .args(["publish", &file, "--sign-key", "release.key"])
        .env("DOCKER_CONFIG", s.config())
        .env("IMAGE_MATRIX_SIGNING_PASSWORD", "wrong")
        .output();
    assert!(!o.status.success());
    assert!(String::from_utf8_lossy(&o.stderr).contains("the password does not open this key"));
    // the key is sealed as cosign seals keys: sigstore-rs opens it with its password only
    for (pw, opens) in [("key-pass-1", true), ("wrong", false)] {
        let (code, out, err) = sh(Command::new(cosign_check())
            .arg("--open")
            .arg(s.path().join("release.key"))
            .env("COSIGN_PASSWORD", pw));
        assert_eq!(code == 0, opens, "{out}{err}");
    }
}
