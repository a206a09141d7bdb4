//! `bench -- bake`: the peer benchmark. The nightly's 4 cells (Miniconda 24.5.0-0 and
//! 24.4.0-0 stand-ins x package sets default and +pandas, Python 3.11, local Debian
//! bookworm base), built on one fresh engine each time (`scripts/engine.sh start NAME
//! --fresh`: an empty data root, only the base loaded, so the same cold cache), all on
//! that engine's own BuildKit through buildx's `docker` driver:
//!
//! - `docker buildx bake` on `matrix render` + `plan --format bake`, against
//!   `matrix build -j 2 --builder buildx --verify` (which also verifies every image
//!   and writes the manifest; the verification's share is printed);
//! - a runner that starts empty rebuilding after a published run, without and with
//!   the registry cache (`--cache-from registry`, images pushed with inline cache
//!   metadata), against a warm runner that kept its daemon.
//!
//! Apart from the other benchmarks (its own helpers, which `downloads.rs` borrows).
//! Needs `scripts/setup-test-env.sh` (daemon, base image, buildx plugin, registry).

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

/// The bench engine's name (`BAKE_ENGINE` overrides it, for a machine shared with
/// other benchmarks).
fn engine_name() -> String {
    std::env::var("BAKE_ENGINE").unwrap_or_else(|_| "bench-bake".into())
}
const BASE: &str = "image-matrix-test/debian:bookworm";
const INSTALLERS: [&str; 2] = [
    "Miniconda3-py311_24.5.0-0-Linux-x86_64.sh",
    "Miniconda3-py311_24.4.0-0-Linux-x86_64.sh",
];

pub(super) fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// The `matrix` binary measured: `MATRIX_BIN`, else the release build.
pub(super) fn matrix_bin() -> PathBuf {
    std::env::var_os("MATRIX_BIN")
        .map_or_else(|| root().join("target/release/matrix"), PathBuf::from)
}

pub(super) fn run(cmd: &mut Command) -> (bool, String) {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"));
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr),
    )
}

/// A background server started by a script that prints its port and leaves its pid in
/// a file; killed when dropped.
struct Server {
    out: String,
    pid: String,
}

impl Server {
    fn start(script: &str, dir: &Path, args: &[&str], pidfile: &str) -> Server {
        let (ok, out) = run(Command::new(root().join(script)).arg(dir).args(args));
        assert!(ok, "{script}: {out}");
        let pid = std::fs::read_to_string(dir.join(pidfile))
            .unwrap()
            .trim()
            .to_string();
        Server { out, pid }
    }

    fn word(&self, n: usize) -> &str {
        self.out.split_whitespace().nth(n).unwrap_or_default()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = Command::new("kill").arg(&self.pid).status();
    }
}

/// The bench engine, wiped when the benchmark ends however it ends.
struct Engine;

impl Engine {
    /// A fresh start: an empty data root with only the base image loaded.
    fn fresh(&self) -> String {
        let (ok, out) = run(Command::new(root().join("scripts/engine.sh"))
            .env("ENGINE_BASES", BASE)
            .args(["start", &engine_name(), "--fresh"]));
        assert!(ok, "scripts/engine.sh: {out}");
        out.trim().lines().last().unwrap_or_default().to_string()
    }
}

impl Drop for Engine {
    fn drop(&mut self) {
        let _ = run(Command::new(root().join("scripts/engine.sh")).args([
            "stop",
            &engine_name(),
            "--wipe",
        ]));
    }
}

fn matrix_yaml(repo: &str, port: &str, sha: &str) -> String {
    format!(
        "version: 1\nimage:\n  repository: {repo}\n  tag: \"conda3-python{{python}}-{{miniconda}}-{{base}}-{{variant}}\"\nbases: [{BASE}]\npython: [\"3.11\"]\ninclude:\n  - {{base: {BASE}, python: \"3.11\", miniconda: \"24.4.0-0\", variant: default}}\n  - {{base: {BASE}, python: \"3.11\", miniconda: \"24.4.0-0\", variant: pandas}}\nvariants:\n  - name: default\n  - name: pandas\n    pip: [pandas]\ninstallers:\n  - {{file: {a}, sha256: \"{sha}\"}}\n  - {{file: {b}, sha256: \"{sha}\"}}\nsources:\n  installer_mirrors: [\"http://127.0.0.1:{port}/\"]\n  ca_bundle: /etc/ssl/certs/ca-certificates.crt\nbuild:\n  network: host\n",
        a = INSTALLERS[0],
        b = INSTALLERS[1],
    )
}

/// `matrix ARGS` in `dir` against the engine at `host`; its wall time and manifest.
fn matrix(dir: &Path, host: &str, args: &[&str], out: &str) -> (Duration, serde_json::Value) {
    let bin = matrix_bin();
    assert!(
        bin.exists(),
        "build the release binary first (cargo build --release), or name one in MATRIX_BIN"
    );
    let t = Instant::now();
    let (ok, text) = run(Command::new(bin).current_dir(dir).args(args).args([
        "--engine",
        &format!("bench={host}"),
        "-o",
        out,
    ]));
    let wall = t.elapsed();
    assert!(ok, "matrix {args:?} failed: {text}");
    let m: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(dir.join(out).join("manifest.json")).unwrap(),
    )
    .unwrap();
    (wall, m)
}

fn count(m: &serde_json::Value, status: &str) -> usize {
    m["cells"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|c| c["status"] == status)
        .count()
}

/// Seconds the run spent verifying (the sum over its cells; they verify one by one).
fn verify_seconds(m: &serde_json::Value) -> f64 {
    m["cells"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|c| c["verification"]["seconds"].as_f64())
        .sum()
}

pub(super) fn load() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .unwrap_or_default()
        .split_whitespace()
        .take(3)
        .collect::<Vec<_>>()
        .join(" ")
}

/// A measured run: its wall time, the verification summed over its cells, and the
/// CPU time every process on the machine used while it ran.
struct Run {
    wall: Duration,
    verify: f64,
    cpu: f64,
}

/// Seconds of CPU time all processes used between two `cpu_jiffies` readings
/// (`/proc/stat` counts in clock ticks, `getconf CLK_TCK` a second).
fn cpu_seconds(before: (u64, u64), after: (u64, u64)) -> f64 {
    // SAFETY: sysconf reads a constant of the system and touches no memory of ours
    let ticks = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    (after.0 - before.0) as f64 / ticks.max(1) as f64
}

/// `docker buildx bake` on `matrix render` + `plan --format bake`, from a cold cache
/// (a fresh engine); the time to render and plan is returned apart.
fn bake(dir: &Path, engine: &Engine) -> (Duration, Run) {
    let bin = matrix_bin();
    let host = engine.fresh();
    let t = Instant::now();
    let (ok, out) = run(Command::new(&bin)
        .current_dir(dir)
        .env("DOCKER_HOST", &host)
        .args(["render", "-o", "ctx"]));
    assert!(ok, "{out}");
    let plan = Command::new(&bin)
        .current_dir(dir)
        .env("DOCKER_HOST", &host)
        .args(["plan", "--format", "bake", "--contexts", "ctx"])
        .output()
        .unwrap();
    assert!(plan.status.success());
    std::fs::write(dir.join("bake.json"), &plan.stdout).unwrap();
    let prepare = t.elapsed();
    let t = Instant::now();
    let cpu0 = super::nightly::cpu_jiffies();
    let (ok, out) = run(Command::new("docker")
        .current_dir(dir)
        .env("DOCKER_HOST", &host)
        .args([
            "buildx",
            "bake",
            "-f",
            "bake.json",
            "--allow",
            "network.host",
            "--progress",
            "plain",
        ]));
    let wall = t.elapsed();
    let cpu = cpu_seconds(cpu0, super::nightly::cpu_jiffies());
    assert!(ok, "bake failed: {out}");
    (
        prepare,
        Run {
            wall,
            verify: 0.0,
            cpu,
        },
    )
}

/// `matrix build -j 2 --builder buildx --verify --force EXTRA` on `host`.
fn ours(dir: &Path, host: &str, extra: &[&str], out: &str) -> Run {
    let mut args = vec!["--verify"];
    args.extend(extra);
    ours_with(dir, host, &args, out)
}

/// `matrix build -j 2 --builder buildx --force EXTRA` on `host`.
fn ours_with(dir: &Path, host: &str, extra: &[&str], out: &str) -> Run {
    // BAKE_JOBS: builds at once (bake starts every target at once)
    let jobs = std::env::var("BAKE_JOBS").unwrap_or_else(|_| "2".into());
    let mut args = vec![
        "build",
        "-j",
        jobs.as_str(),
        "--builder",
        "buildx",
        "--force",
    ];
    args.extend(extra);
    let cpu0 = super::nightly::cpu_jiffies();
    let (wall, m) = matrix(dir, host, &args, out);
    let cpu = cpu_seconds(cpu0, super::nightly::cpu_jiffies());
    assert_eq!(count(&m, "built"), 4, "{m}");
    Run {
        wall,
        verify: verify_seconds(&m),
        cpu,
    }
}

fn versions() -> String {
    let (_, v) = run(Command::new("docker").args([
        "version",
        "--format",
        "client {{.Client.Version}}, daemon {{.Server.Version}}",
    ]));
    let (_, b) = run(Command::new("docker").args(["buildx", "version"]));
    format!("docker {}; buildx {}", v.trim(), b.trim())
}

fn date() -> String {
    let (_, d) = run(Command::new("date").args(["-u", "+%Y-%m-%d %H:%M UTC"]));
    d.trim().to_string()
}

/// min / median / max of some seconds.
fn spread(mut v: Vec<f64>) -> String {
    v.sort_by(f64::total_cmp);
    format!(
        "min {:.2} median {:.2} max {:.2}",
        v[0],
        v[v.len() / 2],
        v[v.len() - 1]
    )
}

/// `--rounds N`: the peer comparison alone, interleaved: in each round bake, ours and
/// ours `--verify`, each cold on a fresh engine. Each run's CPU time (all processes)
/// is printed beside its wall: CPU ÷ cores is a floor no schedule on this machine can
/// beat, so it tells whether a ratio is a matter of scheduling or of work.
fn peer_rounds(dir: &Path, engine: &Engine, n: usize) {
    let s = |d: Duration| d.as_secs_f64();
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get()) as f64;
    let (mut peer, mut plain, mut verified, mut ratios) = (vec![], vec![], vec![], vec![]);
    let (mut cpu_peer, mut cpu_plain, mut cpu_verified) = (vec![], vec![], vec![]);
    for r in 1..=n {
        let before = load();
        let (_, b) = bake(dir, engine);
        let host = engine.fresh();
        let p = ours_with(dir, &host, &[], &format!("out-plain-{r}"));
        let host = engine.fresh();
        let v = ours(dir, &host, &[], &format!("out-verify-{r}"));
        println!(
            "  round {r}: bake {:.1} s, ours {:.1} s ({:.2}), ours --verify {:.1} s ({:.2}; verification summed {:.1} s); load before {before}, after {}",
            s(b.wall),
            s(p.wall),
            s(p.wall) / s(b.wall),
            s(v.wall),
            s(v.wall) / s(b.wall),
            v.verify,
            load()
        );
        println!(
            "           CPU time of all processes: bake {:.1} s, ours {:.1} s, ours --verify {:.1} s; ours --verify's CPU ÷ {cores} cores = {:.1} s = {:.2} of bake's wall (no schedule here ends sooner)",
            b.cpu,
            p.cpu,
            v.cpu,
            v.cpu / cores,
            v.cpu / cores / s(b.wall)
        );
        ratios.push(s(v.wall) / s(b.wall));
        peer.push(s(b.wall));
        plain.push(s(p.wall));
        verified.push(s(v.wall));
        cpu_peer.push(b.cpu);
        cpu_plain.push(p.cpu);
        cpu_verified.push(v.cpu);
    }
    println!(
        "  bake:           {} s; CPU {} s",
        spread(peer),
        spread(cpu_peer)
    );
    println!(
        "  ours:           {} s; CPU {} s",
        spread(plain),
        spread(cpu_plain)
    );
    println!(
        "  ours --verify:  {} s; CPU {} s",
        spread(verified),
        spread(cpu_verified)
    );
    println!(
        "  ours --verify ÷ bake per round: {} (goal <= 0.90)",
        spread(ratios)
    );
}

pub fn run_bench(args: &[String]) {
    // the plugin as scripts/setup-test-env.sh installs it: in a Docker config
    // directory of its own, out of sight of every other docker command
    if std::env::var_os("DOCKER_CONFIG").is_none() {
        std::env::set_var("DOCKER_CONFIG", "/usr/local/lib/image-matrix/docker");
    }
    let (ok, v) = run(Command::new("docker").args(["buildx", "version"]));
    assert!(
        ok,
        "needs the buildx plugin (scripts/setup-test-env.sh): {v}"
    );
    let dir = tempfile::tempdir().unwrap();
    let mirror = Server::start(
        "scripts/standin-mirror.sh",
        &dir.path().join("mirror"),
        &INSTALLERS,
        "server.pid",
    );
    let registry = Server::start(
        "scripts/local-registry.sh",
        &dir.path().join("registry"),
        &[],
        "registry.pid",
    );
    let repo = format!("127.0.0.1:{}/bench-bake/miniconda", registry.word(0));
    std::fs::write(
        dir.path().join("matrix.yaml"),
        matrix_yaml(&repo, mirror.word(0), mirror.word(1)),
    )
    .unwrap();
    let engine = Engine;
    let s = |d: Duration| d.as_secs_f64();
    // each figure is printed as soon as it is measured: a run cut short still leaves
    // the ones before it
    println!(
        "{}; {}; {}; {} cores shared with other work",
        date(),
        versions(),
        matrix_bin().display(),
        std::thread::available_parallelism().map_or(0, |n| n.get())
    );
    println!("4 cells (Miniconda 24.5.0-0/24.4.0-0 stand-ins x default/+pandas, Python 3.11, local Debian bookworm base), all on one engine's own BuildKit (buildx's docker driver); a fresh engine (empty data root, base only) is the cold cache and the empty runner");
    if let Some(n) = args
        .windows(2)
        .find(|w| w[0] == "--rounds")
        .map(|w| w[1].parse::<usize>().expect("--rounds N"))
    {
        println!("peer only, {n} interleaved rounds, cold cache each (a fresh engine per run):");
        return peer_rounds(dir.path(), &engine, n);
    }
    println!(
        "peer, cold cache each (load average 1/5/15 min before: {}):",
        load()
    );
    let (prepare, peer) = bake(dir.path(), &engine);
    let peer = peer.wall;
    println!("  docker buildx bake -f, all 4 targets at once:             {:>6.1} s  (+ {:.1} s for matrix render + plan --format bake; load after {})", s(peer), s(prepare), load());
    let host = engine.fresh();
    let cold = ours(dir.path(), &host, &[], "out-cold");
    println!("  matrix build -j 2 --builder buildx --verify:              {:>6.1} s  ratio {:.2} against bake (goal <= 1.00); load after {}", s(cold.wall), s(cold.wall) / s(peer), load());
    println!("    verification summed over the cells {:.1} s = {:.0}% of our wall (an upper bound: a cell verifies while the next builds); without it {:.1} s, ratio {:.2}", cold.verify, 100.0 * cold.verify / s(cold.wall), s(cold.wall) - cold.verify, (s(cold.wall) - cold.verify) / s(peer));
    println!("registry cache, every run matrix build -j 2 --builder buildx --verify --force:");
    println!("  empty runner, no cache (the cold run above):              {:>6.1} s  (verification {:.1} s)", s(cold.wall), cold.verify);
    let warm = ours(
        dir.path(),
        &host,
        &["--cache-to", "inline", "--push"],
        "out-publish",
    );
    println!("  warm runner (kept daemon and build cache), publishing with --cache-to inline --push: {:>6.1} s  (verification {:.1} s; load after {})", s(warm.wall), warm.verify, load());
    let host = engine.fresh();
    let cached = ours(
        dir.path(),
        &host,
        &["--cache-from", "registry"],
        "out-cached",
    );
    println!("  empty runner, --cache-from registry:                      {:>6.1} s  (verification {:.1} s), {:.2} of the uncached empty runner's; load after {}", s(cached.wall), cached.verify, s(cached.wall) / s(cold.wall), load());
}
