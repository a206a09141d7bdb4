//! Benchmarks that print figures (run with `cargo run --release --example bench -- WHAT`):
//!
//! - `plan`: plan a generated 10,000-cell matrix; wall time and peak memory.
//! - `nightly [--runs N] [--cells 4|2] [--builders legacy,buildkit] [--no-solo]`: 4 cells
//!   on the local Debian base with the stand-in mirror, the seed's way (its Dockerfile
//!   once per cell, one after another) against `matrix build -j 2`, like for like per
//!   builder and client, N interleaved rounds from the same cold start; the stage
//!   times from our build logs and the lower bound they imply (`bench/nightly.rs`).
//! - `ready`: time from `docker run` to every service answering, with no network.
//! - `engines`: the same 4 cells (two independent bases x 2 package sets) on one
//!   engine against two, every run on fresh engines with empty caches
//!   (`scripts/engine.sh start NAME --fresh`); wall times, ratios and which engine
//!   built what.
//!
//! - `scale [--rounds N] [--reused-cells N] [--shapes]`: `matrix build -j 8` of 100 / 1,000 /
//!   10,000 cells against a docker that succeeds at once, in a fresh output folder,
//!   and the same folder run again right after 290,000 files were deleted (what a
//!   10,000-cell run of a tool that wrote every context left); `BENCH_BEFORE=BINARY`
//!   adds that binary's rows, interleaved. `--shapes` instead runs about 1,000 cells in
//!   several shapes: variants with several pip and apt packages, on many bases or few
//!   (`BENCH_DUMP=DIR` writes their matrices there and stops, for a profiler).
//! - `bake`: the peer, `docker buildx bake`, against `matrix build -j 2`; and a runner
//!   that starts empty with and without the registry cache (examples/bench/bake.rs).
//!
//! - `publish [--rounds N]`: the daemon-less publish step against a loopback registry
//!   that requires a login: the local nightly's tags and a 100-tag manifest, first and
//!   second run, unsigned and signed (examples/bench/publish.rs).
//!
//! `nightly`, `ready` and `engines` need `scripts/setup-test-env.sh` first. `nightly`
//! removes only what its own runs made (`bench/coldstart.rs`); `engines` leaves the
//! main daemon alone and wipes its own engines when done.

#[path = "bench/coldstart.rs"]
mod coldstart;
#[path = "bench/nightly.rs"]
mod nightly;
#[path = "bench/report.rs"]
mod report;
#[path = "bench/stages.rs"]
mod stages;
#[path = "bench/watch.rs"]
mod watch;

#[path = "bench/bake.rs"]
mod bake;
#[path = "bench/downloads.rs"]
mod downloads;
#[path = "bench/publish.rs"]
mod publish;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn matrix_bin() -> PathBuf {
    let target =
        std::env::var_os("CARGO_TARGET_DIR").map_or_else(|| root().join("target"), PathBuf::from);
    let p = target.join("release/matrix");
    assert!(
        p.exists(),
        "build the release binary first: cargo build --release"
    );
    p
}

fn run(cmd: &mut Command) -> (bool, String) {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"));
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr),
    )
}

fn big_matrix() -> String {
    big_matrix_bases(20, 125)
}

/// `bases` CUDA bases × 4 Pythons × `variants` variants.
fn big_matrix_bases(bases: usize, variants: usize) -> String {
    let tags: Vec<&str> = include_str!("../data/nvidia-cuda-tags.tsv")
        .lines()
        .filter(|l| l.ends_with("\tsupported") && l.contains("ubuntu2") && !l.contains("-base-"))
        .filter_map(|l| l.split('\t').next())
        .filter(|t| !t.starts_with("11.") || t.contains("ubuntu22.04"))
        .take(bases)
        .collect();
    assert_eq!(tags.len(), bases);
    let mut y = String::from("version: 1\nlimits: {max_cells: 10000}\nimage:\n  tag: \"conda3-python{python}-{base}-{variant}\"\nbases:\n");
    for t in &tags {
        y.push_str(&format!("  - nvidia/cuda:{t}\n"));
    }
    y.push_str(
        "python: [\"3.9\", \"3.10\", \"3.11\", \"3.12\"]\nplatforms: [linux/amd64]\nvariants:\n",
    );
    // 20 bases × 4 pythons × 125 variants = 10,000 cells
    for i in 0..variants {
        y.push_str(&format!("  - {{name: set{i}, pip: [\"pkg{i}>=1.0\"]}}\n"));
    }
    y
}

/// A shape of the scale benchmark: `bases` CUDA bases × 4 Pythons × `variants`
/// variants, each with `pip` pip packages (one with a marker) and `apt` apt packages;
/// with `pip` above 1, every other variant also overrides the common numpy pin.
#[derive(Clone, Copy)]
struct Shape {
    bases: usize,
    variants: usize,
    pip: usize,
    apt: usize,
    /// The fake docker lists packages for each SBOM ([`bench_listing`]), as a real
    /// image does; without, every listing stops early and no component is written.
    listing: bool,
}

impl Shape {
    fn cells(self) -> usize {
        self.bases * 4 * self.variants
    }

    fn label(self) -> String {
        format!(
            "{}x4x{} pip {} apt {}{}",
            self.bases,
            self.variants,
            self.pip,
            self.apt,
            if self.listing { " +SBOM" } else { "" }
        )
    }

    fn matrix(self) -> String {
        let mut y = big_matrix_bases(self.bases, 0);
        for i in 0..self.variants {
            let pip: Vec<String> = (0..self.pip)
                .map(|k| {
                    let marker = if k == 1 {
                        "; python_version >= \\\"3.10\\\""
                    } else {
                        ""
                    };
                    format!("\"pkg{i}-{k}>=1.{k},<3{marker}\"")
                })
                .collect();
            let apt: Vec<String> = (0..self.apt).map(|k| format!("lib{i}-{k}")).collect();
            let over = if self.pip > 1 && i % 2 == 1 {
                ", override: [\"numpy>=1.26; python_version < \\\"3.13\\\"\"]"
            } else {
                ""
            };
            y.push_str(&format!(
                "  - {{name: set{i}, pip: [{}], apt: [{}]{over}}}\n",
                pip.join(", "),
                apt.join(", ")
            ));
        }
        y
    }
}

fn bench_plan() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("big.yaml");
    std::fs::write(&file, big_matrix()).unwrap();
    // In process: planning only.
    let text = std::fs::read_to_string(&file).unwrap();
    let opts = image_matrix::plan::PlanOptions {
        date: "20260101".into(),
    };
    let mut inproc = Vec::new();
    let mut plan = None;
    for _ in 0..5 {
        let t = Instant::now();
        let p = image_matrix::plan::plan_text(&text, "big.yaml", dir.path(), &opts).expect("plans");
        inproc.push(t.elapsed());
        assert_eq!(p.cells.len(), 10_000);
        plan = Some(p);
    }
    // Each cell's identity (what bake labels it with), one thread, in process.
    let plan = plan.expect("planned");
    let mut identities = Vec::new();
    for _ in 0..5 {
        let t = Instant::now();
        let renderer = image_matrix::render::Renderer::new(&plan.settings);
        let hashes: Vec<String> = plan
            .cells
            .iter()
            .map(|c| renderer.identity(c, &["sha256:base"]))
            .collect();
        identities.push(t.elapsed());
        assert_eq!(hashes.len(), 10_000);
    }
    identities.sort();
    // The whole command, as a user runs it, output included.
    let bin = matrix_bin();
    let mut walls = Vec::new();
    let mut rss = 0.0f64;
    for _ in 0..5 {
        let (wall, peak, status) = measured(
            Command::new(&bin)
                .arg("-f")
                .arg(&file)
                .args(["plan", "--format", "json"])
                .stdout(Stdio::null())
                .stderr(Stdio::null()),
        );
        walls.push(wall);
        rss = rss.max(peak);
        assert!(status.success());
    }
    inproc.sort();
    walls.sort();
    println!("plan of 10,000 cells (20 CUDA bases x 4 Pythons x 125 variants), 5 runs each:");
    println!(
        "  planning in process      : min {:>7.1} ms   median {:>7.1} ms",
        ms(inproc[0]),
        ms(inproc[2])
    );
    println!(
        "  identities, one thread   : min {:>7.1} ms   median {:>7.1} ms   ({:.1} µs a cell)",
        ms(identities[0]),
        ms(identities[2]),
        ms(identities[2]) / 10.0
    );
    println!(
        "  `matrix plan --format json` : min {:>7.1} ms   median {:>7.1} ms   peak RSS {:.1} MB",
        ms(walls[0]),
        ms(walls[2]),
        rss
    );
    println!("  targets: < 100 ms, < 50 MB");
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

fn docker(args: &[&str]) -> (bool, String) {
    run(Command::new("docker").args(args))
}

struct Mirror {
    port: String,
    sha: String,
    pid: String,
}

impl Drop for Mirror {
    fn drop(&mut self) {
        let _ = Command::new("kill").arg(&self.pid).status();
    }
}

const INSTALLERS: [&str; 2] = [
    "Miniconda3-py311_24.5.0-0-Linux-x86_64.sh",
    "Miniconda3-py311_24.4.0-0-Linux-x86_64.sh",
];

fn mirror(dir: &Path) -> Mirror {
    let (ok, out) = run(Command::new(root().join("scripts/standin-mirror.sh"))
        .arg(dir)
        .args(INSTALLERS));
    assert!(ok, "{out}");
    let mut w = out.split_whitespace();
    let port = w.next().unwrap().to_string();
    let sha = w.next().unwrap().to_string();
    let pid = std::fs::read_to_string(dir.join("server.pid"))
        .unwrap()
        .trim()
        .to_string();
    Mirror { port, sha, pid }
}

fn read_manifest(dir: &Path) -> serde_json::Value {
    serde_json::from_str(&std::fs::read_to_string(dir.join("out/manifest.json")).unwrap()).unwrap()
}

/// The run's manifest, after checking that `n` cells were built (`out`: the run's output).
fn all_built(dir: &Path, n: usize, out: &str) -> serde_json::Value {
    let man = read_manifest(dir);
    let built = man["cells"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|c| c["status"] == "built")
        .count();
    assert_eq!(built, n, "{out}");
    man
}

fn bench_ready() {
    let (_, list) = docker(&[
        "image",
        "ls",
        "--format",
        "{{.Repository}}:{{.Tag}}",
        "--filter",
        "label=io.image-matrix.cell",
    ]);
    let image = list
        .lines()
        .next()
        .expect("build an image first (e.g. scripts/nightly-local.sh)")
        .to_string();
    let mut times = Vec::new();
    for _ in 0..5 {
        let t = Instant::now();
        let (ok, cid) = docker(&["run", "-d", "--network", "none", &image]);
        assert!(ok, "{cid}");
        let cid = cid.trim().to_string();
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let (h, _) = docker(&[
                "exec",
                &cid,
                "sh",
                "-c",
                "/init/bin/healthcheck && curl -fsS -o /dev/null http://127.0.0.1:6006/monitor/",
            ]);
            if h {
                break;
            }
            assert!(Instant::now() < deadline, "never ready");
            std::thread::sleep(Duration::from_millis(50));
        }
        times.push(t.elapsed());
        let _ = docker(&["rm", "-f", &cid]);
    }
    times.sort();
    println!("time to ready with no network (docker run -> sshd, JupyterLab /jupyter/api and TensorBoard /monitor/ answer), {image}, 5 runs:");
    println!("  min {:.2} s   median {:.2} s   max {:.2} s   (target < 5 s; the seed's image starts no service offline)", times[0].as_secs_f64(), times[2].as_secs_f64(), times[4].as_secs_f64());
}

fn engine_sh(args: &[&str]) -> String {
    let (ok, out) = run(Command::new(root().join("scripts/engine.sh")).args(args));
    assert!(ok, "scripts/engine.sh {args:?}: {out}");
    out.trim().lines().last().unwrap_or_default().to_string()
}

/// Bench engines, wiped when the benchmark ends however it ends.
struct BenchEngines;

impl Drop for BenchEngines {
    fn drop(&mut self) {
        for n in ["bench-1", "bench-2"] {
            let _ = run(Command::new(root().join("scripts/engine.sh")).args(["stop", n, "--wipe"]));
        }
    }
}

/// (label, matrix, [(engine, jobs, CPUs it is pinned to)]). The pinned pairs stand in
/// for build hosts of one core each: one such host against two.
type EngineRun = (
    &'static str,
    &'static str,
    &'static [(&'static str, u32, &'static str)],
);
const ENGINE_RUNS: [EngineRun; 6] = [
    (
        "2 bases, 1 engine,  all CPUs,        -j 2",
        "matrix.yaml",
        &[("bench-1", 2, "")],
    ),
    (
        "2 bases, 2 engines, sharing all CPUs, -j 2 each",
        "matrix.yaml",
        &[("bench-1", 2, ""), ("bench-2", 2, "")],
    ),
    (
        "2 bases, 1 engine,  pinned to CPU 0, -j 2",
        "matrix.yaml",
        &[("bench-1", 2, "0")],
    ),
    (
        "2 bases, 2 engines, pinned to CPU 0 / CPU 1, -j 2 each",
        "matrix.yaml",
        &[("bench-1", 2, "0"), ("bench-2", 2, "1")],
    ),
    (
        "1 base,  1 engine,  pinned to CPU 0, -j 2",
        "one-base.yaml",
        &[("bench-1", 2, "0")],
    ),
    (
        "1 base,  2 engines, pinned to CPU 0 / CPU 1, -j 2 each",
        "one-base.yaml",
        &[("bench-1", 2, "0"), ("bench-2", 2, "1")],
    ),
];

fn bench_engines() {
    const ALT: &str = "image-matrix-test/debian-alt:12";
    // A second base that shares no layer above Debian's with the first, as two CUDA
    // bases would not: the cells of one base are independent of the other's.
    let mut child = Command::new("docker")
        .args(["build", "-q", "-t", ALT, "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    std::io::Write::write_all(
        child.stdin.as_mut().unwrap(),
        b"FROM image-matrix-test/debian:bookworm\nRUN echo alt > /etc/image-matrix-bench-alt\n",
    )
    .unwrap();
    drop(child.stdin.take());
    assert!(child.wait().unwrap().success(), "cannot build {ALT}");
    let _engines = BenchEngines;
    let dir = tempfile::tempdir().unwrap();
    let m = mirror(&dir.path().join("mirror"));
    let ca = "/etc/ssl/certs/ca-certificates.crt";
    let yaml = format!(
        "version: 1\nimage:\n  repository: bench-engines/miniconda\n  tag: \"conda3-python{{python}}-{{miniconda}}-{{base}}-{{variant}}\"\nbases:\n  - image-matrix-test/debian:bookworm\n  - {{image: \"{ALT}\", os: debian12}}\npython: [\"3.11\"]\nexclude:\n  - {{base: \"{ALT}\", reason: \"built with 24.4.0-0 below\"}}\ninclude:\n  - {{base: \"{ALT}\", python: \"3.11\", miniconda: \"24.4.0-0\", variant: default}}\n  - {{base: \"{ALT}\", python: \"3.11\", miniconda: \"24.4.0-0\", variant: pandas}}\nvariants:\n  - name: default\n  - name: pandas\n    pip: [pandas]\ninstallers:\n  - {{file: {a}, sha256: \"{s}\"}}\n  - {{file: {b}, sha256: \"{s}\"}}\nsources:\n  installer_mirrors: [\"http://127.0.0.1:{p}/\"]\n  ca_bundle: {ca}\nbuild:\n  network: host\n",
        a = INSTALLERS[0], b = INSTALLERS[1], s = m.sha, p = m.port
    );
    std::fs::write(dir.path().join("matrix.yaml"), &yaml).unwrap();
    // The same 4 cells on one base: they share its OS and Miniconda stages, so a
    // second engine can only help by building those again (the dependent case).
    let one_base = yaml
        .replace(&format!("  - {{image: \"{ALT}\", os: debian12}}\n"), "")
        .replace(ALT, "image-matrix-test/debian:bookworm");
    let one_base = one_base[..one_base.find("exclude:").unwrap()].to_string()
        + "include:"
        + one_base.split("include:").nth(1).unwrap();
    std::fs::write(dir.path().join("one-base.yaml"), one_base).unwrap();
    let bin = matrix_bin();
    let runs = ENGINE_RUNS;
    let mut results = Vec::new();
    for (label, matrix, engines) in runs {
        let mut args = vec![
            "-f".to_string(),
            matrix.into(),
            "build".into(),
            "--force".into(),
        ];
        for (name, jobs, cpus) in engines {
            // fresh: an empty data root, only the base images loaded
            let host = run(Command::new(root().join("scripts/engine.sh"))
                .env(
                    "ENGINE_BASES",
                    format!("image-matrix-test/debian:bookworm {ALT}"),
                )
                .env("ENGINE_CPUS", cpus)
                .args(["start", name, "--fresh"]));
            assert!(host.0, "{}", host.1);
            let host = host.1.trim().lines().last().unwrap_or_default().to_string();
            args.push("--engine".into());
            args.push(format!("{name}={host},jobs={jobs}"));
        }
        let t = Instant::now();
        let (ok, out) = run(Command::new(&bin).current_dir(dir.path()).args(&args));
        let wall = t.elapsed();
        assert!(ok, "matrix build failed: {out}");
        let man = all_built(dir.path(), 4, &out);
        let cells = man["cells"].as_array().unwrap();
        let placement: Vec<String> = cells
            .iter()
            .filter(|c| c["status"] != "excluded")
            .map(|c| {
                format!(
                    "{}->{}",
                    c["id"].as_str().unwrap_or_default(),
                    c["engine"].as_str().unwrap_or_default()
                )
            })
            .collect();
        results.push((label, wall, placement));
        for (name, _, _) in engines {
            engine_sh(&["stop", name]);
        }
    }
    println!("4 cells (2 independent bases, or 1 shared base, x Miniconda 24.5.0-0/24.4.0-0 or package sets default/+pandas, Python 3.11 stand-ins), legacy builder, fresh engines with empty caches for every run, on this {}-core machine:", std::thread::available_parallelism().map_or(0, |n| n.get()));
    for (i, (label, wall, placement)) in results.iter().enumerate() {
        // each two-engine run against the one-engine run just before it
        let base = results[i - i % 2].1.as_secs_f64();
        println!(
            "  {label:<55}: {:>6.1} s  ratio {:.2}   {}",
            wall.as_secs_f64(),
            wall.as_secs_f64() / base,
            placement.join("  ")
        );
    }
}

/// Run a command to its end: wall time, the peak RSS of that one process (wait4 on
/// it, never the cumulative RUSAGE_CHILDREN of this process) and its status.
fn measured(cmd: &mut Command) -> (Duration, f64, std::process::ExitStatus) {
    let (m, ()) = watch::measured_with(cmd, |_, _| ());
    (m.wall, m.rss_tree_mb, m.status)
}

/// A matrix of `n` cells (100, 1,000 or 10,000): CUDA bases × 4 Pythons × variants.
fn scale_matrix(n: usize) -> String {
    let (bases, variants) = match n {
        100 => (5, 5),
        1000 => (10, 25),
        _ => (20, n / 80),
    };
    big_matrix_bases(bases, variants)
}

/// One `matrix build -j 8` of the scale benchmark in `dir` (its `m.yaml`): wall, the
/// tool's own CPU per cell (the manifest's `tool_cpu_seconds`) and peak RSS.
fn scale_run(exe: &Path, dir: &Path, n: usize) -> (f64, f64, f64) {
    scale_run_listing(exe, dir, n, None)
}

/// [`scale_run`] with the fake docker listing `listing` (a file) as every image's packages.
fn scale_run_listing(exe: &Path, dir: &Path, n: usize, listing: Option<&Path>) -> (f64, f64, f64) {
    let mut cmd = Command::new(exe);
    if let Some(l) = listing {
        cmd.env("BENCH_LISTING", l);
    }
    let (wall, rss, status) = measured(
        cmd.current_dir(dir)
            .env("DOCKER", root().join("bench/fake-docker-instant"))
            .args(["-f", "m.yaml", "build", "-j", "8", "--quiet"])
            .stdout(Stdio::null())
            .stderr(Stdio::null()),
    );
    assert!(status.success(), "{} failed on {n} cells", exe.display());
    let man = read_manifest(dir);
    assert_eq!(man["cells"].as_array().unwrap().len(), n);
    let cpu = man["tool_cpu_seconds"].as_f64().unwrap_or(0.0);
    (wall.as_secs_f64(), cpu * 1000.0 / n as f64, rss)
}

/// What a 10,000-cell run of a tool that wrote every context leaves the file system
/// to do: 290,000 files in 10,000 folders made, then deleted (the inodes the next
/// run's new files are allocated among). Returns how long it took.
fn churn(tmp: &Path) -> Duration {
    let t = Instant::now();
    let dir = tempfile::tempdir_in(tmp).unwrap();
    for c in 0..10_000 {
        let d = dir.path().join(format!("c{c}"));
        std::fs::create_dir(&d).unwrap();
        for f in 0..29 {
            std::fs::write(d.join(format!("f{f}")), [b'x'; 600]).unwrap();
        }
    }
    drop(dir);
    t.elapsed()
}

/// `v` sorted: (min, median, max), or just the value for one round.
fn spread(v: &mut [f64], unit: &str, digits: usize) -> String {
    v.sort_by(f64::total_cmp);
    if v.len() == 1 {
        return format!("{:.digits$} {unit}", v[0]);
    }
    format!(
        "{:.digits$} / {:.digits$} / {:.digits$} {unit}",
        v[0],
        v[v.len() / 2],
        v[v.len() - 1]
    )
}

fn bench_scale(args: &[String]) {
    let opt = |name: &str| {
        args.iter()
            .position(|a| a == name)
            .and_then(|i| args.get(i + 1))
            .cloned()
    };
    let rounds: usize = opt("--rounds").map_or(1, |r| r.parse().expect("--rounds N"));
    let reused_cells: usize =
        opt("--reused-cells").map_or(1000, |r| r.parse().expect("--reused-cells N"));
    let mut bins: Vec<(&str, PathBuf)> = vec![("after", matrix_bin())];
    if let Some(b) = std::env::var_os("BENCH_BEFORE") {
        bins.insert(0, ("before", PathBuf::from(b)));
    }
    if args.iter().any(|a| a == "--shapes") {
        return scale_shapes(&bins, rounds);
    }
    // every run writes logs (and, before, contexts): the file system under the temp
    // dir counts
    let tmp = std::env::temp_dir();
    let fs = Command::new("stat")
        .args(["-f", "-c", "%T"])
        .arg(&tmp)
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_default();
    let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    println!(
        "matrix build -j 8 against a docker that succeeds at once (bench/fake-docker-instant),"
    );
    println!(
        "in {} ({fs}; TMPDIR moves it), load average at the start: {}",
        tmp.display(),
        load.trim()
    );
    println!("(min / median / max over {rounds} round(s) where more than one; 10,000 cells once)");
    println!(
        "{:>7}  {:<7} {:<7} {:>26} {:>30} {:>9}",
        "cells", "folder", "binary", "wall", "tool CPU/cell", "peak RSS"
    );
    for n in [100usize, 1000, 10_000] {
        let reps = if n == 10_000 { 1 } else { rounds };
        let mut rows = vec![(Vec::new(), Vec::new(), 0.0f64); bins.len()];
        // the binaries interleaved, so that each round sees the same machine
        for _ in 0..reps {
            for (i, (_, exe)) in bins.iter().enumerate() {
                let dir = tempfile::tempdir().unwrap();
                std::fs::write(dir.path().join("m.yaml"), scale_matrix(n)).unwrap();
                let (wall, cpu, rss) = scale_run(exe, dir.path(), n);
                rows[i].0.push(wall);
                rows[i].1.push(cpu);
                rows[i].2 = rows[i].2.max(rss);
            }
        }
        for ((label, _), (walls, cpus, rss)) in bins.iter().zip(&mut rows) {
            println!(
                "{n:>7}  {:<7} {label:<7} {:>26} {:>30} {:>6.1} MB",
                "fresh",
                spread(walls, "s", 2),
                spread(cpus, "ms", 2),
                rss
            );
        }
    }
    // The same folder again, as every nightly does, the measured run right after a
    // 10,000-cell run of an earlier tool deleted its files. (No peak RSS: a child
    // forked from this process after the churn counts this process's pages.)
    let mut rows = vec![(Vec::new(), Vec::new(), Duration::ZERO); bins.len()];
    for _ in 0..rounds {
        for (i, (_, exe)) in bins.iter().enumerate() {
            let dir = tempfile::tempdir().unwrap();
            std::fs::write(dir.path().join("m.yaml"), scale_matrix(reused_cells)).unwrap();
            scale_run(exe, dir.path(), reused_cells);
            rows[i].2 = rows[i].2.max(churn(&tmp));
            let (wall, cpu, _) = scale_run(exe, dir.path(), reused_cells);
            rows[i].0.push(wall);
            rows[i].1.push(cpu);
        }
    }
    for ((label, _), (walls, cpus, churned)) in bins.iter().zip(&mut rows) {
        println!(
            "{reused_cells:>7}  {:<7} {label:<7} {:>26} {:>30} {:>9}   (290,000 files made and deleted first: {:.1} s at most)",
            "reused",
            spread(walls, "s", 2),
            spread(cpus, "ms", 2),
            "-",
            churned.as_secs_f64()
        );
    }
    println!(
        "load average at the end: {}",
        std::fs::read_to_string("/proc/loadavg")
            .unwrap_or_default()
            .trim()
    );
    println!(
        "targets: 1,000 cells under 10 s wall and 5 ms of tool CPU per cell, linear to 10,000; reused within 1.2x of fresh"
    );
}

/// The shapes of `scale --shapes`: the 1,000 cells of the plain table (10 bases, 25
/// variants of one pip package each) and 960 cells whose variants carry several pip
/// and apt packages, with images that list no packages (as the plain table's) and
/// with images that list as many as a real one does (each cell's SBOM has them).
const SHAPES: &[Shape] = &[
    Shape {
        bases: 10,
        variants: 25,
        pip: 1,
        apt: 0,
        listing: false,
    },
    Shape {
        bases: 60,
        variants: 4,
        pip: 6,
        apt: 3,
        listing: false,
    },
    Shape {
        bases: 10,
        variants: 25,
        pip: 1,
        apt: 0,
        listing: true,
    },
    Shape {
        bases: 60,
        variants: 4,
        pip: 6,
        apt: 3,
        listing: true,
    },
    Shape {
        bases: 10,
        variants: 24,
        pip: 6,
        apt: 3,
        listing: true,
    },
];

/// What listing a built image's packages prints (`src/sbom/collect.sh`), about what a
/// CUDA image with Miniconda and a variant's packages holds: 450 dpkg packages (half
/// with a DEP-5 licence), 70 conda and 160 pip packages.
fn bench_listing() -> String {
    let mut l = String::from("@image-matrix-packages 1\n@os ubuntu\t22.04\n@dpkg\n");
    for i in 0..450 {
        let arch = if i % 4 == 0 { "all" } else { "amd64" };
        l.push_str(&format!(
            "ii \tlibpkg{i}\t{}.{}.{i}-1ubuntu0.{}\t{arch}\n",
            i % 7,
            i % 13,
            i % 3
        ));
    }
    l.push_str("@conda /opt/conda\n");
    for i in 0..70 {
        l.push_str(&format!(
            "condapkg{i}\t{}.{}.{i}\tpy311h{i:06x}_0\tpkgs/main\tBSD-3-Clause\n",
            i % 5,
            i % 11
        ));
    }
    l.push_str("@pip 3.11.2\n");
    for i in 0..160 {
        let (installer, licence) = match i % 3 {
            0 => ("conda", ""),
            1 => ("pip", "MIT"),
            _ => ("pip", "Apache-2.0"),
        };
        l.push_str(&format!(
            "Pip_Pkg{i}\t{}.{}.{i}\t{installer}\t{licence}\n",
            i % 4,
            i % 9
        ));
    }
    l.push_str("@dpkg-licenses\n");
    for i in (0..450).step_by(2) {
        l.push_str(&format!("libpkg{i}\tGPL-2+\n"));
    }
    l.push_str("@end\n");
    l
}

/// `scale --shapes`: every shape, fresh output folder on the temp dir, the shapes and
/// binaries interleaved in each round so that every row sees the same machine.
fn scale_shapes(bins: &[(&str, PathBuf)], rounds: usize) {
    let load = || {
        std::fs::read_to_string("/proc/loadavg")
            .unwrap_or_default()
            .trim()
            .to_string()
    };
    println!(
        "matrix build -j 8 against bench/fake-docker-instant in {}, fresh folders; load average at the start: {}",
        std::env::temp_dir().display(),
        load()
    );
    println!("(min / median / max over {rounds} round(s); shapes and binaries interleaved)");
    let listing = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(listing.path(), bench_listing()).unwrap();
    // for a profiler: each shape's matrix (shape-N.yaml) and the listing, then stop
    if let Some(dir) = std::env::var_os("BENCH_DUMP").map(PathBuf::from) {
        std::fs::create_dir_all(&dir).unwrap();
        for (s, shape) in SHAPES.iter().enumerate() {
            std::fs::write(dir.join(format!("shape-{s}.yaml")), shape.matrix()).unwrap();
        }
        std::fs::write(dir.join("listing"), bench_listing()).unwrap();
        println!(
            "wrote the shapes' matrices and the listing to {}",
            dir.display()
        );
        return;
    }
    let mut rows = vec![vec![(Vec::new(), Vec::new(), 0.0f64); bins.len()]; SHAPES.len()];
    for r in 0..rounds {
        for (s, shape) in SHAPES.iter().enumerate() {
            for (b, (_, exe)) in bins.iter().enumerate() {
                let dir = tempfile::tempdir().unwrap();
                std::fs::write(dir.path().join("m.yaml"), shape.matrix()).unwrap();
                let l = shape.listing.then(|| listing.path());
                let (wall, cpu, rss) = scale_run_listing(exe, dir.path(), shape.cells(), l);
                let row = &mut rows[s][b];
                row.0.push(wall);
                row.1.push(cpu);
                row.2 = row.2.max(rss);
            }
        }
        println!("  round {} done, load average: {}", r + 1, load());
    }
    println!(
        "{:>6}  {:<26} {:<7} {:>26} {:>30} {:>9}",
        "cells", "shape (bases x py x variants)", "binary", "wall", "tool CPU/cell", "peak RSS"
    );
    for (shape, per_bin) in SHAPES.iter().zip(&mut rows) {
        for ((label, _), (walls, cpus, rss)) in bins.iter().zip(per_bin) {
            println!(
                "{:>6}  {:<26} {label:<7} {:>26} {:>30} {:>6.1} MB",
                shape.cells(),
                shape.label(),
                spread(walls, "s", 2),
                spread(cpus, "ms", 2),
                rss
            );
        }
    }
    println!("load average at the end: {}", load());
    println!("target: every shape under 5 ms of tool CPU per cell");
}

/// Plan output for 10,000 cells in every format, through the whole command.
/// `plan --format F` of 10,000 cells, 11 runs each; with `--before BIN`, that binary's
/// runs alternate with this one's (same file, same moment), and each row gets the
/// ratio of medians.
fn bench_formats(args: &[String]) {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("big.yaml");
    std::fs::write(&file, big_matrix()).unwrap();
    let before = args
        .iter()
        .position(|a| a == "--before")
        .and_then(|i| args.get(i + 1))
        .map(PathBuf::from);
    let mut bins = vec![("this", matrix_bin())];
    if let Some(b) = before {
        bins.insert(0, ("before", b));
    }
    println!(
        "`matrix plan --format F` of 10,000 cells, 11 runs each, interleaved (wall; peak RSS of the process):"
    );
    println!(
        "  (bake: no engine answers (DOCKER_HOST names no socket), so no input-hash labels; bake+: a docker that holds every base\n   (bench/fake-docker-instant), so every target's identity is worked out)"
    );
    let fake = root().join("bench/fake-docker-instant");
    for f in ["table", "json", "bake", "bake+", "gha"] {
        let mut walls = vec![Vec::new(); bins.len()];
        let mut rss = vec![0.0f64; bins.len()];
        for _ in 0..11 {
            for (i, (_, bin)) in bins.iter().enumerate() {
                let mut cmd = Command::new(bin);
                cmd.arg("-f")
                    .arg(&file)
                    .args(["plan", "--format", f.trim_end_matches('+')])
                    .stdout(Stdio::null())
                    .stderr(Stdio::null());
                if f == "bake+" {
                    cmd.env("DOCKER", &fake);
                } else {
                    // the real client, pointed at a socket nothing listens on
                    cmd.env_remove("DOCKER")
                        .env("DOCKER_HOST", "unix:///nonexistent/image-matrix-bench.sock");
                }
                let (w, r, st) = measured(&mut cmd);
                assert!(st.success());
                walls[i].push(w);
                rss[i] = rss[i].max(r);
            }
        }
        for (i, (name, _)) in bins.iter().enumerate() {
            walls[i].sort();
            let ratio = if i > 0 {
                format!(
                    "  this ÷ before {:.2}",
                    walls[i][5].as_secs_f64() / walls[0][5].as_secs_f64()
                )
            } else {
                String::new()
            };
            println!(
                "  {f:<6} {name:<6} min {:>6.1} ms  median {:>6.1} ms  max {:>6.1} ms  peak RSS {:.1} MB{ratio}",
                ms(walls[i][0]),
                ms(walls[i][5]),
                ms(walls[i][10]),
                rss[i]
            );
        }
    }
    println!("  target: each under 100 ms");
}

fn main() {
    match std::env::args().nth(1).as_deref() {
        Some("plan") => bench_plan(),
        Some("scale") => bench_scale(&std::env::args().skip(2).collect::<Vec<_>>()),
        Some("formats") => bench_formats(&std::env::args().skip(2).collect::<Vec<_>>()),
        Some("nightly") => nightly::run(&std::env::args().skip(2).collect::<Vec<_>>()),
        Some("ready") => bench_ready(),
        Some("engines") => bench_engines(),
        Some("bake") => bake::run_bench(&std::env::args().skip(2).collect::<Vec<_>>()),
        Some("publish") => publish::run_bench(&std::env::args().skip(2).collect::<Vec<_>>()),
        Some("downloads") => downloads::run_bench(&std::env::args().skip(2).collect::<Vec<_>>()),
        _ => {
            eprintln!("usage: cargo run --release --example bench -- plan|formats [--before MATRIX_BINARY]|scale [--rounds N] [--reused-cells N] [--shapes]|nightly [--runs N] [--cells 4|2] [--builders legacy,buildkit] [--no-solo] [--max-load X] [--keep DIR] [--before MATRIX_BINARY]|ready|engines|bake [--rounds N]|publish [--rounds N]|downloads [--rounds N]");
            std::process::exit(2);
        }
    }
}
