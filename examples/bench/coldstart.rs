//! The same cold start before every timed run, on a daemon other people share.
//!
//! Each run builds on its own base: the local Debian base plus one layer that holds the
//! run's id, labelled `io.image-matrix.bench-run=<id>`. No layer and no BuildKit cache
//! record of an earlier run (or of anyone else's build) can match it, so both
//! builders start cold without deleting anything that is not the bench's. (A base that
//! differs only by a label is not enough: BuildKit keys its cache on the layers.)
//!
//! After the run, everything it made is removed and nothing else: containers and
//! images carrying the run's label (every image built on the base inherits it), and
//! the BuildKit cache records that descend from the run's layer. A tiny BuildKit build
//! whose command names the run id finds that layer's record: its parent. BuildKit's
//! records of the build contexts themselves (a few KB, keyed by directory, not by
//! run) cannot be told apart from other people's and are left.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use serde_json::Value;

/// The local base every run's base derives from (`scripts/setup-test-env.sh`).
pub const LOCAL_BASE: &str = "image-matrix-test/debian:bookworm";
const LABEL: &str = "io.image-matrix.bench-run";

/// One run's base, and what the run made: removed when dropped.
pub struct RunBase {
    pub id: String,
    /// `image-matrix-bench-<id>/base:debian12`
    pub base: String,
    /// Repository prefix for the run's images: `image-matrix-bench-<id>`.
    pub prefix: String,
    legacy_client: PathBuf,
    buildkit_client: PathBuf,
}

fn run_ok(cmd: &mut Command) -> String {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

impl RunBase {
    /// Make the run's base; `work` is a scratch directory for its build context.
    pub fn new(id: &str, work: &Path, legacy_client: &Path, buildkit_client: &Path) -> RunBase {
        let prefix = format!("image-matrix-bench-{id}");
        let r = RunBase {
            id: id.to_string(),
            base: format!("{prefix}/base:debian12"),
            prefix,
            legacy_client: legacy_client.to_path_buf(),
            buildkit_client: buildkit_client.to_path_buf(),
        };
        let ctx = work.join(format!("base-{id}"));
        std::fs::create_dir_all(&ctx).expect("scratch directory");
        std::fs::write(ctx.join("run-id"), format!("{id}\n")).expect("write run-id");
        std::fs::write(
            ctx.join("Dockerfile"),
            format!(
                "FROM {LOCAL_BASE}\nCOPY run-id /etc/image-matrix-bench-run\nLABEL {LABEL}={id}\n"
            ),
        )
        .expect("write Dockerfile");
        run_ok(
            Command::new(&r.legacy_client)
                .env("DOCKER_BUILDKIT", "0")
                .args(["build", "-q", "-t", &r.base])
                .arg(&ctx),
        );
        // The marker: a BuildKit step on the base whose command names the run, so its
        // cache record's parent is the base layer's record (see the module doc).
        std::fs::write(
            ctx.join("Dockerfile.marker"),
            format!("FROM {}\nRUN echo image-matrix-bench-run-{id}\n", r.base),
        )
        .expect("write marker Dockerfile");
        run_ok(
            Command::new(&r.buildkit_client)
                .env("DOCKER_BUILDKIT", "1")
                .args(["build", "-q", "--network", "none", "-f"])
                .arg(ctx.join("Dockerfile.marker"))
                .arg(&ctx),
        );
        r
    }

    fn docker(&self, args: &[&str]) -> String {
        Command::new(&self.buildkit_client)
            .args(args)
            .stderr(Stdio::null())
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
            .unwrap_or_default()
    }

    /// Remove the run's containers, images and BuildKit records; leave all else.
    pub fn remove(&self) {
        let filter = format!("label={LABEL}={}", self.id);
        let containers = self.docker(&["ps", "-aq", "--filter", &filter]);
        for c in containers.split_whitespace() {
            self.docker(&["rm", "-f", c]);
        }
        // Newest first, so children go before the parents they hold; a few rounds for
        // parents whose children were listed after them.
        for _ in 0..5 {
            let ids = self.docker(&["image", "ls", "-aq", "--filter", &filter]);
            let ids: Vec<&str> = ids.split_whitespace().collect();
            if ids.is_empty() {
                break;
            }
            let mut args = vec!["rmi", "-f"];
            args.extend(ids);
            self.docker(&args);
        }
        for record in self.records() {
            self.docker(&[
                "builder",
                "prune",
                "-f",
                "--filter",
                &format!("id={record}"),
            ]);
        }
    }

    /// The run's BuildKit cache records, children before parents.
    fn records(&self) -> Vec<String> {
        let json = self.docker(&["system", "df", "-v", "--format", "{{json .BuildCache}}"]);
        let all: Vec<Value> = serde_json::from_str(json.trim()).unwrap_or_default();
        let field = |v: &Value, k: &str| v[k].as_str().unwrap_or_default().to_string();
        let marker = format!("image-matrix-bench-run-{}", self.id);
        let Some(root) = all
            .iter()
            .find(|r| field(r, "Description").contains(&marker))
            .map(|r| field(r, "Parent"))
            .filter(|p| !p.is_empty())
        else {
            return Vec::new();
        };
        // depth below the root, for every record that descends from it
        let parent_of = |id: &str| {
            all.iter()
                .find(|r| field(r, "ID") == id)
                .map(|r| field(r, "Parent"))
        };
        let mut found: Vec<(usize, String)> = vec![(0, root.clone())];
        for r in &all {
            let id = field(r, "ID");
            let mut depth = 0;
            let mut at = Some(id.clone());
            while let Some(cur) = at {
                if cur == root {
                    if depth > 0 {
                        found.push((depth, id.clone()));
                    }
                    break;
                }
                depth += 1;
                at = parent_of(&cur).filter(|p| !p.is_empty() && depth < 1000);
            }
        }
        found.sort_by_key(|f| std::cmp::Reverse(f.0));
        found.into_iter().map(|(_, id)| id).collect()
    }
}

impl Drop for RunBase {
    fn drop(&mut self) {
        self.remove();
    }
}
