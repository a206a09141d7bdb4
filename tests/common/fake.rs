//! The fake-docker environment of the process tests: a temp dir with a matrix, the
//! fake `docker` script (tests/fake/docker) and its state directory, and helpers to
//! run `matrix` against it.
//!
//! Every process a fake build starts that must end with the build (`sleep MARK`)
//! records its pid in `state/pids`; [`Env::leftovers`] looks only there, and dropping
//! the `Env` kills only those. Nothing is found by name, so a fake build left hanging
//! by an interrupted earlier run, or by another test with the same mark, is never
//! counted as this one's.

use std::path::{Path, PathBuf};
use std::process::Command;

use super::Matrix;

/// The matrix of the process tests: three cells on one base, with a nightly alias.
pub const MATRIX: &str = "version: 1\nimage:\n  aliases: [\"{tag}-nightly\"]\nbases: [ubuntu:22.04]\npython: [\"3.9\", \"3.10\", \"3.11\"]\n";

pub struct Env {
    pub dir: tempfile::TempDir,
    /// How long a hanging fake build sleeps, in seconds: its processes are `sleep MARK`.
    mark: String,
}

impl Env {
    pub fn new(mark: u32) -> Env {
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
        Matrix::new(self.dir.path())
            .env("FAKE_DOCKER_STATE", self.path("state"))
            // this host's emulators are not the test's: it makes its own
            .env("IMAGE_MATRIX_BINFMT_DIR", self.path("binfmt"))
            .env("FAKE_SLEEP", &self.mark)
            .env(
                "DOCKER",
                Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fake/docker"),
            )
            .args(args)
            .command()
    }
    /// `matrix push out/manifest.json ARGS`: (exit code, stderr).
    pub fn push(&self, args: &[&str]) -> (i32, String) {
        let mut c = self.matrix(&["push", "out/manifest.json"]);
        let out = c.args(args).output().unwrap();
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
    /// `matrix plan --diff out/manifest.json`: its stdout, once it exited 0.
    pub fn plan_diff(&self) -> String {
        let out = self
            .matrix(&["plan", "--diff", "out/manifest.json"])
            .output()
            .unwrap();
        let diff = String::from_utf8_lossy(&out.stdout).into_owned();
        assert_eq!(out.status.code(), Some(0), "{diff}");
        diff
    }
    pub fn manifest(&self) -> serde_json::Value {
        let text = std::fs::read_to_string(self.path("out/manifest.json")).unwrap();
        let m = serde_json::from_str(&text).expect("the manifest parses");
        super::schema::check("manifest", &m);
        m
    }
    pub fn status(&self, id: &str) -> String {
        let m = self.manifest();
        super::cell(&m, id)["status"].as_str().unwrap().to_string()
    }
    /// Processes of this test's fake builds still alive, as `PID sleep MARK`.
    pub fn leftovers(&self) -> Vec<String> {
        self.alive()
            .iter()
            .map(|pid| format!("{pid} sleep {}", self.mark))
            .collect()
    }
    /// The recorded pids that are still this test's `sleep MARK` (not a zombie, not
    /// a pid reused by another process since).
    fn alive(&self) -> Vec<i32> {
        let pids = std::fs::read_to_string(self.path("state/pids")).unwrap_or_default();
        let ours = format!("sleep\0{}\0", self.mark);
        pids.split_whitespace()
            .filter_map(|p| p.parse().ok())
            .filter(|pid: &i32| {
                std::fs::read(format!("/proc/{pid}/cmdline")).is_ok_and(|c| c == ours.as_bytes())
            })
            .collect()
    }
}

impl Drop for Env {
    /// A test that failed, or did not wait for its run, leaves no fake build running.
    fn drop(&mut self) {
        for pid in self.alive() {
            // SAFETY: plain kill(2) on a process this test's fake docker started.
            unsafe {
                libc::kill(pid, libc::SIGKILL);
            }
        }
    }
}
