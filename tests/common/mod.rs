//! Helpers shared by the test binaries: running commands (`matrix` through
//! [`Matrix`]), checking the environment of the real-Docker tests (failing loudly when
//! it is missing), the stand-in installer mirror and the matrices served from it
//! ([`LocalMatrix`]), image clean-up, manifest access, and the fake-docker
//! environment ([`fake`]).
#![allow(dead_code)]

use std::path::Path;
use std::process::Command;

pub const BASE: &str = "image-matrix-test/debian:bookworm";
/// Debian trixie, whose system Python is 3.13.
pub const TRIXIE: &str = "image-matrix-test/debian:trixie";

pub fn sh(cmd: &mut Command) -> (i32, String, String) {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"));
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

pub fn docker(args: &[&str]) -> (i32, String, String) {
    sh(Command::new("docker").args(args))
}

pub fn require_environment() {
    let (code, out, err) = docker(&["version", "--format", "{{.Server.Version}}"]);
    assert!(
        code == 0 && !out.trim().is_empty(),
        "these tests need a running Docker daemon (run scripts/setup-test-env.sh): {err}"
    );
    let (code, _, _) = docker(&["image", "inspect", BASE]);
    assert_eq!(
        code, 0,
        "base image {BASE} is missing: run scripts/setup-test-env.sh"
    );
    let (code, _, _) = docker(&["image", "inspect", "image-matrix-test/debian:12"]);
    assert_eq!(
        code, 0,
        "base image image-matrix-test/debian:12 is missing: run scripts/setup-test-env.sh"
    );
    assert!(
        Command::new("sshpass").arg("-V").output().is_ok(),
        "verify needs sshpass: run scripts/setup-test-env.sh"
    );
}

/// The stand-in mirror, stopped when dropped.
pub struct Mirror {
    pub port: String,
    pub sha: String,
    pid: String,
}

impl Mirror {
    pub fn start(dir: &Path) -> Mirror {
        Mirror::start_with(
            dir,
            &[
                "Miniconda3-py311_24.5.0-0-Linux-x86_64.sh",
                "Miniconda3-py311_23.11.0-2-Linux-x86_64.sh",
            ],
        )
    }

    /// The stand-in served under these installer names.
    pub fn start_with(dir: &Path, names: &[&str]) -> Mirror {
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/standin-mirror.sh");
        let (code, out, err) = sh(Command::new(script).arg(dir).args(names));
        assert_eq!(code, 0, "mirror did not start: {err}");
        let mut w = out.split_whitespace();
        let (port, sha) = (w.next().unwrap().to_string(), w.next().unwrap().to_string());
        let pid = std::fs::read_to_string(dir.join("server.pid"))
            .unwrap()
            .trim()
            .to_string();
        Mirror { port, sha, pid }
    }
}

impl Drop for Mirror {
    fn drop(&mut self) {
        let _ = Command::new("kill").arg(&self.pid).status();
    }
}

/// `from` published again as `to`: the same files and one more (`/etc/republished-N`),
/// so another image ID, as a registry republishing a base gives. `name` names the
/// container that makes it (removed after).
pub fn republish(from: &str, to: &str, name: &str, n: u32) {
    let (code, _, err) = docker(&[
        "run",
        "--name",
        name,
        "--network",
        "none",
        from,
        "touch",
        &format!("/etc/republished-{n}"),
    ]);
    assert_eq!(code, 0, "{err}");
    let (code, _, err) = docker(&["commit", name, to]);
    assert_eq!(code, 0, "{err}");
    let _ = docker(&["rm", "-f", name]);
}

/// Images of this run, removed at the end.
/// A loopback registry (`scripts/local-registry.sh`), stopped when dropped.
pub struct Registry {
    pub port: String,
    pid: String,
}

impl Registry {
    pub fn start(dir: &Path) -> Registry {
        Registry::start_as(dir, None)
    }

    /// A registry that requires the login `user`/`password` (htpasswd), or none.
    pub fn start_as(dir: &Path, login: Option<(&str, &str)>) -> Registry {
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/local-registry.sh");
        let mut cmd = Command::new(script);
        cmd.arg(dir);
        if let Some((user, password)) = login {
            cmd.arg(user).env("LOCAL_REGISTRY_PASSWORD", password);
        }
        let (code, out, err) = sh(&mut cmd);
        assert_eq!(
            code, 0,
            "the registry did not start (run scripts/setup-test-env.sh): {err}"
        );
        let pid = std::fs::read_to_string(dir.join("registry.pid"))
            .unwrap()
            .trim()
            .to_string();
        Registry {
            port: out.trim().to_string(),
            pid,
        }
    }

    /// GET a registry API path; (status line + headers, body).
    pub fn get(&self, path: &str) -> (String, String) {
        let (code, out, err) = sh(Command::new("curl").args([
            "-sS",
            "-i",
            "-H",
            "Accept: application/vnd.docker.distribution.manifest.v2+json",
            &format!("http://127.0.0.1:{}{path}", self.port),
        ]));
        assert_eq!(code, 0, "{err}");
        let (head, body) = out.split_once("\r\n\r\n").unwrap_or((&out, ""));
        (head.to_string(), body.to_string())
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        let _ = Command::new("kill").arg(&self.pid).status();
    }
}

/// Removes a test's images when dropped, whatever happened: every image of the
/// repository prefix (`self.0`) on the default daemon, by tag and, for images a
/// moved tag left untagged, by the `io.image-matrix.repository` label our builds set.
pub struct Cleanup(pub String);

impl Drop for Cleanup {
    fn drop(&mut self) {
        remove_images(None, &self.0);
    }
}

/// Removes every image of the repository prefix `repo` from one engine (`host`, or
/// the default daemon): its tags, then the untagged images labelled with it. A tag
/// goes by name, so an image that also has another name (a base the test tagged)
/// stays. Children before parents: an image a later one was built FROM is retried.
pub fn remove_images(host: Option<&str>, repo: &str) {
    let run = |args: &[&str]| {
        let mut cmd = Command::new("docker");
        if let Some(h) = host {
            cmd.env("DOCKER_HOST", h);
        }
        sh(cmd.args(args))
    };
    let ours = |name: &str| name.starts_with(&format!("{repo}/")) || name == repo;
    let (_, tags, _) = run(&["image", "ls", "--format", "{{.Repository}}:{{.Tag}}"]);
    let mut stale: Vec<String> = tags
        .lines()
        .filter(|t| !t.ends_with(":<none>") && t.rsplit_once(':').is_some_and(|(r, _)| ours(r)))
        .map(str::to_string)
        .collect();
    let filter = ["image", "ls", "-q", "--filter", "dangling=true"];
    let (_, untagged, _) = run(&[
        &filter[..],
        &["--filter", "label=io.image-matrix.repository"],
    ]
    .concat());
    let ids: Vec<&str> = untagged.split_whitespace().collect();
    if !ids.is_empty() {
        let format = r#"{{.Id}} {{index .Config.Labels "io.image-matrix.repository"}}"#;
        let (_, labels, _) = run(&[&["image", "inspect", "--format", format][..], &ids].concat());
        stale.extend(labels.lines().filter_map(|l| {
            let (id, label) = l.split_once(' ')?;
            ours(label).then(|| id.to_string())
        }));
    }
    for _ in 0..4 {
        let before = stale.len();
        stale.retain(|r| run(&["rmi", r]).0 != 0 && run(&["image", "inspect", r]).0 == 0);
        if stale.is_empty() || stale.len() == before {
            break;
        }
    }
}

pub fn matrix(dir: &Path, args: &[&str]) -> (i32, String, String) {
    Matrix::new(dir).args(args).run()
}

pub fn manifest(path: &Path) -> serde_json::Value {
    let m = serde_json::from_str(&std::fs::read_to_string(path).unwrap()).expect("manifest parses");
    schema::check("manifest", &m);
    m
}

pub fn cell<'a>(m: &'a serde_json::Value, id: &str) -> &'a serde_json::Value {
    m["cells"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["id"] == id)
        .unwrap_or_else(|| panic!("no cell {id}"))
}

pub mod fake;
pub mod local;
pub mod run;
pub mod schema;

// every binary compiles this module, only the real-Docker ones use the matrices
#[allow(unused_imports)]
pub use local::LocalMatrix;
pub use run::Matrix;
