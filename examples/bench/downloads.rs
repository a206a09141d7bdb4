//! `bench -- downloads`: the nights whose base was republished. Every cell of the local
//! nightly's amd64 half (examples/local.yaml.tmpl: Python 3.11 with and without
//! pandas, the stand-in installer on a loopback mirror, on the default daemon's legacy
//! builder) rebuilds from its first step because its base changed (`docker commit`
//! of the base under its own name, as a registry republishing it would). Nights:
//!
//! 1. without the download cache (the builds fetch everything themselves);
//! 2. with `--download-cache` on an empty folder (its first night);
//! 3. with it again after another republish (its second night), `--rounds` times.
//!
//! For each: the wall time, the bytes this machine received on its network interfaces
//! other than loopback during the night (`/proc/net/dev`: the package index, the
//! Debian archive and anything else that ran meanwhile, hence the load printed), the
//! installer downloads the mirror logged, and the cache's own account
//! (`OUT/downloads.json`). Goal: the second night with the cache receives < 10 % of
//! the first night's bytes.
//!
//! Needs `scripts/setup-test-env.sh` (daemon and base) and the release binary.

use std::path::Path;
use std::process::Command;
use std::time::Instant;

use super::bake::{load, matrix_bin, root, run};

const BASE: &str = "image-matrix-test/debian:bookworm";
const BENCH_BASE: &str = "image-matrix-bench/debian:bookworm";
const REPO: &str = "image-matrix-bench/downloads";
const INSTALLER: &str = "Miniconda3-py311_24.5.0-0-Linux-x86_64.sh";

/// Bytes received on every interface but loopback so far.
fn received() -> u64 {
    std::fs::read_to_string("/proc/net/dev")
        .unwrap_or_default()
        .lines()
        .skip(2)
        .filter_map(|l| {
            let (name, rest) = l.split_once(':')?;
            (name.trim() != "lo").then(|| rest.split_whitespace().next()?.parse::<u64>().ok())?
        })
        .sum()
}

/// The base published again: the same Debian with one more file, another image ID.
fn republish(n: usize) {
    let name = format!("image-matrix-bench-republish-{}-{n}", std::process::id());
    let from = if n == 0 { BASE } else { BENCH_BASE };
    let (ok, out) = run(Command::new("docker").args([
        "run",
        "--name",
        &name,
        "--network",
        "none",
        from,
        "touch",
        &format!("/etc/republished-{n}"),
    ]));
    assert!(ok, "{out}");
    let (ok, out) = run(Command::new("docker").args(["commit", &name, BENCH_BASE]));
    assert!(ok, "{out}");
    let _ = run(Command::new("docker").args(["rm", "-f", &name]));
}

struct Night {
    seconds: f64,
    bytes: u64,
    installers: usize,
    cache: Option<serde_json::Value>,
}

fn night(dir: &Path, mirror_log: &Path, cache: Option<&Path>, out: &str) -> Night {
    let installers_before = installer_requests(mirror_log);
    let mut cmd = Command::new(matrix_bin());
    cmd.current_dir(dir).args([
        "build",
        "-j",
        "2",
        "--filter",
        "platform=linux/amd64",
        "-o",
        out,
    ]);
    if let Some(c) = cache {
        cmd.arg("--download-cache").arg(c);
    }
    let (rx, t) = (received(), Instant::now());
    let (ok, text) = run(&mut cmd);
    let (seconds, bytes) = (t.elapsed().as_secs_f64(), received() - rx);
    assert!(ok, "matrix build failed: {text}");
    let m: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(dir.join(out).join("manifest.json")).unwrap(),
    )
    .unwrap();
    let built = m["cells"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|c| c["status"] == "built")
        .count();
    assert_eq!(built, 2, "every cell must rebuild: {text}");
    let cache = cache.map(|_| {
        serde_json::from_str(
            &std::fs::read_to_string(dir.join(out).join("downloads.json")).unwrap(),
        )
        .unwrap()
    });
    Night {
        seconds,
        bytes,
        installers: installer_requests(mirror_log) - installers_before,
        cache,
    }
}

fn installer_requests(log: &Path) -> usize {
    std::fs::read_to_string(log)
        .unwrap_or_default()
        .lines()
        .filter(|l| l.contains(&format!("GET /{INSTALLER}")))
        .count()
}

fn mb(b: u64) -> f64 {
    b as f64 / 1e6
}

fn describe(label: &str, n: &Night) {
    let mut line = format!(
        "  {label:<44} {:>6.1} s  {:>7.1} MB received  installer downloads {}",
        n.seconds,
        mb(n.bytes),
        n.installers
    );
    if let Some(c) = &n.cache {
        let fetched: u64 = c["fetched"]
            .as_array()
            .unwrap()
            .iter()
            .map(|f| f["bytes"].as_u64().unwrap())
            .sum();
        line.push_str(&format!(
            "; cache: {} files fetched ({:.1} MB), {} from the cache ({:.1} MB), pages {:.1} MB, apt indexes {:.1} MB",
            c["fetched"].as_array().unwrap().len(),
            mb(fetched),
            c["from_cache"],
            mb(c["from_cache_bytes"].as_u64().unwrap()),
            mb(c["page_bytes"].as_u64().unwrap()),
            mb(c["passed_bytes"].as_u64().unwrap()),
        ));
    }
    println!("{line}; load after {}", load());
}

pub fn run_bench(args: &[String]) {
    let rounds: usize = args
        .windows(2)
        .find(|w| w[0] == "--rounds")
        .map_or(1, |w| w[1].parse().expect("--rounds N"));
    assert!(
        matrix_bin().exists(),
        "build the release binary first (cargo build --release), or name one in MATRIX_BIN"
    );
    let dir = tempfile::tempdir().unwrap();
    let mirror_dir = dir.path().join("mirror");
    let (ok, out) = run(Command::new(root().join("scripts/standin-mirror.sh"))
        .arg(&mirror_dir)
        .arg(INSTALLER));
    assert!(ok, "{out}");
    let mut w = out.split_whitespace();
    let (port, sha) = (w.next().unwrap().to_string(), w.next().unwrap().to_string());
    let pid = std::fs::read_to_string(mirror_dir.join("server.pid")).unwrap();
    struct Kill(String);
    impl Drop for Kill {
        fn drop(&mut self) {
            let _ = Command::new("kill").arg(self.0.trim()).status();
            let (_, ids) = run(Command::new("docker").args(["images", "-q", REPO]));
            let ids: Vec<&str> = ids.split_whitespace().collect();
            if !ids.is_empty() {
                let _ = run(Command::new("docker")
                    .args(["image", "rm", "-f"])
                    .args(&ids));
            }
            let _ = run(Command::new("docker").args(["image", "rm", "-f", BENCH_BASE]));
            let _ = run(Command::new("docker").args(["image", "prune", "-f"]));
        }
    }
    let _mirror = Kill(pid);
    let template = std::fs::read_to_string(root().join("examples/local.yaml.tmpl")).unwrap();
    let yaml = template
        .replace("@PORT@", &port)
        .replace("@SHA256@", &sha)
        .replace("@CA@", "/etc/ssl/certs/ca-certificates.crt")
        .replace("image-matrix-local/miniconda", REPO)
        .replace(&format!("  - {BASE}\n"), &format!("  - {BENCH_BASE}\n"));
    // the default daemon only: the arm64 cell is filtered out
    let yaml = yaml.split("engines:").next().unwrap().to_string();
    std::fs::write(dir.path().join("matrix.yaml"), yaml).unwrap();
    let log = mirror_dir.join("server.log");
    let cache = dir.path().join("download-cache");
    println!(
        "{}; the local nightly's 2 amd64 cells on the legacy builder, every cell rebuilt each night (base republished); {} cores shared with other work; load before {}",
        std::process::Command::new("date")
            .arg("-u")
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
            .unwrap_or_default(),
        std::thread::available_parallelism().map_or(0, |n| n.get()),
        load()
    );
    let mut n = 0;
    let mut next = || {
        republish(n);
        n += 1;
        format!("out{n}")
    };
    let out = next();
    let without = night(dir.path(), &log, None, &out);
    describe("night without the download cache:", &without);
    let out = next();
    let first = night(dir.path(), &log, Some(&cache), &out);
    describe("first night with it (empty cache):", &first);
    let mut ratios = Vec::new();
    for r in 0..rounds {
        let out = next();
        let again = night(dir.path(), &log, Some(&cache), &out);
        describe(&format!("next night with it (round {}):", r + 1), &again);
        ratios.push(again.bytes as f64 / first.bytes as f64);
    }
    ratios.sort_by(f64::total_cmp);
    println!(
        "received on the next night ÷ the first night with the cache: min {:.3} median {:.3} max {:.3} (goal < 0.10); ÷ the night without it: median {:.3}",
        ratios[0],
        ratios[ratios.len() / 2],
        ratios[ratios.len() - 1],
        ratios[ratios.len() / 2] * first.bytes as f64 / without.bytes as f64
    );
}
