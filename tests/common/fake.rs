//! The fake-docker environment of the process tests: a temp dir with a matrix, the
//! fake `docker` script (tests/fake/docker) and its state directory, and helpers to
//! run `matrix` against it.

use std::path::{Path, PathBuf};
use std::process::Command;

/// The matrix of the process tests: three cells on one base, with a nightly alias.
pub const MATRIX: &str = "version: 1\nimage:\n  aliases: [\"{tag}-nightly\"]\nbases: [ubuntu:22.04]\npython: [\"3.9\", \"3.10\", \"3.11\"]\n";

pub struct Env {
    pub dir: tempfile::TempDir,
    mark: String,
}

impl Env {
    pub fn new(mark: u32) -> Env {
        // a fake build left hanging by an earlier, interrupted run of this test would
        // otherwise count as one of this run's
        let _ = Command::new("pkill")
            .args(["-f", &format!("^sleep {mark}$")])
            .status();
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("matrix.yaml"), MATRIX).unwrap();
        std::fs::create_dir(dir.path().join("state")).unwrap();
        Env {
            dir,
            mark: mark.to_string(),
        }
    }
    /// [`Env::new`] with `yaml` as its matrix.
    pub fn with_matrix(mark: u32, yaml: &str) -> Env {
        let e = Env::new(mark);
        std::fs::write(e.path("matrix.yaml"), yaml).unwrap();
        e
    }
    /// Every docker call so far, a line each (`state/calls`).
    pub fn calls(&self) -> String {
        std::fs::read_to_string(self.path("state/calls")).unwrap()
    }
    pub fn mode(&self, id: &str, mode: &str) {
        std::fs::write(
            self.dir.path().join("state").join(format!("mode-{id}")),
            mode,
        )
        .unwrap();
    }
    pub fn path(&self, p: &str) -> PathBuf {
        self.dir.path().join(p)
    }
    /// `matrix build ARGS` against the fake docker.
    pub fn cmd(&self, args: &[&str]) -> Command {
        let mut c = self.matrix(&["build"]);
        c.args(args);
        c
    }
    /// `matrix ARGS` (any command) against the fake docker.
    pub fn matrix(&self, args: &[&str]) -> Command {
        let mut c = Command::new(env!("CARGO_BIN_EXE_matrix"));
        c.current_dir(self.dir.path())
            .env("FAKE_DOCKER_STATE", self.path("state"))
            .env("IMAGE_MATRIX_DATA", "/nonexistent/image-matrix-data")
            // this host's emulators are not the test's: it makes its own
            .env("IMAGE_MATRIX_BINFMT_DIR", self.path("binfmt"))
            .env("FAKE_SLEEP", &self.mark)
            .env("NO_COLOR", "1")
            .env(
                "DOCKER",
                Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fake/docker"),
            )
            .args(args);
        c
    }
    pub fn push(&self, args: &[&str]) -> (i32, String) {
        let out = Command::new(env!("CARGO_BIN_EXE_matrix"))
            .current_dir(self.dir.path())
            .env("FAKE_DOCKER_STATE", self.path("state"))
            .env("IMAGE_MATRIX_BINFMT_DIR", self.path("binfmt"))
            .env(
                "DOCKER",
                Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fake/docker"),
            )
            .args(["push", "out/manifest.json"])
            .args(args)
            .output()
            .unwrap();
        (
            out.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    }

    pub fn run(&self, args: &[&str]) -> (i32, String) {
        let out = self.cmd(args).output().unwrap();
        (
            out.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    }
    pub fn manifest(&self) -> serde_json::Value {
        let text = std::fs::read_to_string(self.path("out/manifest.json")).unwrap();
        let m = serde_json::from_str(&text).expect("the manifest parses");
        super::schema::check("manifest", &m);
        m
    }
    pub fn status(&self, id: &str) -> String {
        let m = self.manifest();
        let cell = m["cells"]
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["id"] == id)
            .unwrap()
            .clone();
        cell["status"].as_str().unwrap().to_string()
    }
    /// Processes of this test's fake builds still alive.
    pub fn leftovers(&self) -> Vec<String> {
        let out = Command::new("pgrep")
            .args(["-af", &format!("sleep {}", self.mark)])
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter(|l| !l.contains("pgrep"))
            .map(str::to_string)
            .collect()
    }
}
