//! `nightly`: the seed's way against `matrix build -j 2`, like for like, repeated and
//! interleaved, with the stage times of our runs and the bound they imply.
//!
//! For each builder (the legacy builder through the 28.x client first on PATH, BuildKit
//! through Debian's 20.10 client) the seed's way and ours are timed with the same
//! client. A round is, for each builder in turn: the seed's way, ours with `-j 2`, and
//! ours with `-j 1` (one build at a time, so no stage is stretched by a neighbour:
//! the round's bound comes from its stage times; `--no-solo` leaves it out). `--runs
//! N` rounds. Every timed run starts from the same cold state (`coldstart`).
//!
//! `--before PATH` measures a change to the tool instead: the seed's way is left
//! out, and each round runs `matrix build -j 2` with the binary at PATH (built from
//! the code before the change) and with this checkout's, alternating which goes
//! first, from the same cold start.
//!
//! The daemon is shared: each run records the load average when it started and how
//! busy all CPUs were while it ran, and `--max-load X` waits (up to 15 minutes) for
//! the load average to fall to X before each run.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Instant;

use super::coldstart::{RunBase, LOCAL_BASE};
use super::stages::{self, Cell, Profile};
use super::watch::{measured_with, watched};
use super::{matrix_bin, mirror, root, Mirror, INSTALLERS};

/// What the command line asked for.
pub struct Options {
    pub runs: usize,
    pub cells: usize,
    pub builders: Vec<String>,
    pub solo: bool,
    pub max_load: Option<f64>,
    /// Keep the runs' files (logs with the watcher's stamps, outputs) here.
    pub keep: Option<PathBuf>,
    /// A/B: this `matrix` binary (the code before a change) against ours.
    pub before: Option<PathBuf>,
}

const USAGE: &str = "nightly [--runs N (3)] [--cells 4|2 (4)] [--builders legacy,buildkit] [--no-solo] [--max-load X] [--keep DIR] [--before MATRIX_BINARY]";

impl Options {
    pub fn parse(args: &[String]) -> Options {
        let mut o = Options {
            runs: 3,
            cells: 4,
            builders: vec!["legacy".into(), "buildkit".into()],
            solo: true,
            max_load: None,
            keep: None,
            before: None,
        };
        let mut it = args.iter();
        while let Some(a) = it.next() {
            let mut value = || {
                it.next()
                    .unwrap_or_else(|| panic!("{a} needs a value; usage: {USAGE}"))
                    .clone()
            };
            let number = |v: String| -> usize {
                v.parse()
                    .unwrap_or_else(|_| panic!("{a}: not a number: {v}; usage: {USAGE}"))
            };
            match a.as_str() {
                "--runs" => o.runs = number(value()).max(1),
                "--cells" => o.cells = number(value()),
                "--no-solo" => o.solo = false,
                "--max-load" => {
                    let v = value();
                    o.max_load = Some(v.parse().unwrap_or_else(|_| {
                        panic!("--max-load: not a number: {v}; usage: {USAGE}")
                    }));
                }
                "--keep" => o.keep = Some(PathBuf::from(value())),
                "--before" => o.before = Some(PathBuf::from(value())),
                "--builders" => o.builders = value().split(',').map(str::to_string).collect(),
                _ => panic!("unknown argument {a}; usage: {USAGE}"),
            }
        }
        assert!(
            o.cells == 2 || o.cells == 4,
            "--cells is 4 or 2; usage: {USAGE}"
        );
        assert!(
            o.builders.iter().all(|b| b == "legacy" || b == "buildkit"),
            "--builders: legacy, buildkit or both; usage: {USAGE}"
        );
        o
    }
}

/// A docker client and the builder it drives.
pub struct Client {
    /// `legacy` or `buildkit`: also `matrix build --builder`'s value.
    pub builder: String,
    pub path: PathBuf,
    pub version: String,
}

impl Client {
    fn buildkit(&self) -> bool {
        self.builder == "buildkit"
    }

    fn env(&self) -> &'static str {
        if self.buildkit() {
            "1"
        } else {
            "0"
        }
    }

    pub fn describe(&self) -> String {
        let b = if self.buildkit() {
            "BuildKit"
        } else {
            "legacy builder"
        };
        format!(
            "{b}, client {} {} (DOCKER_BUILDKIT={})",
            self.path.display(),
            self.version,
            self.env()
        )
    }
}

fn client_version(path: &Path) -> String {
    let out = Command::new(path)
        .args(["version", "--format", "{{.Client.Version}}"])
        .stderr(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("cannot run {}: {e}", path.display()));
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// The clients: BENCH_LEGACY_CLIENT (default: the first `docker` on PATH, the 28.x
/// client without buildx) and BENCH_BUILDKIT_CLIENT (default: /usr/bin/docker,
/// Debian's 20.10 client, which still drives BuildKit itself).
fn clients() -> (Client, Client) {
    let on_path = std::env::var_os("PATH")
        .and_then(|p| {
            std::env::split_paths(&p)
                .map(|d| d.join("docker"))
                .find(|d| d.is_file())
        })
        .expect("no docker client on PATH");
    let pick = |var: &str, default: PathBuf| std::env::var_os(var).map_or(default, PathBuf::from);
    let legacy = pick("BENCH_LEGACY_CLIENT", on_path);
    let buildkit = pick("BENCH_BUILDKIT_CLIENT", PathBuf::from("/usr/bin/docker"));
    let make = |builder: &str, path: PathBuf| Client {
        builder: builder.into(),
        version: client_version(&path),
        path,
    };
    (make("legacy", legacy), make("buildkit", buildkit))
}

/// Everything the runs share.
pub struct Bench {
    pub opts: Options,
    /// Where the runs' files go: `--keep DIR`, or a temporary directory.
    pub work: PathBuf,
    _temporary: Option<tempfile::TempDir>,
    pub mirror: Mirror,
    pub seed_ctx: PathBuf,
    pub bin: PathBuf,
    pub legacy: Client,
    pub buildkit: Client,
    pub cores: usize,
    runs_made: std::cell::Cell<usize>,
    interrupted: Arc<AtomicBool>,
}

/// The machine around a run: the 1-minute load average when it started, and the
/// share of all CPU time that was busy while it ran (ours and anyone else's).
#[derive(Clone, Copy, Debug)]
pub struct Machine {
    pub load: f64,
    pub busy: f64,
}

/// (busy, total) jiffies of all CPUs.
pub(super) fn cpu_jiffies() -> (u64, u64) {
    let stat = std::fs::read_to_string("/proc/stat").unwrap_or_default();
    let v: Vec<u64> = stat
        .lines()
        .next()
        .unwrap_or_default()
        .split_whitespace()
        .skip(1)
        .filter_map(|x| x.parse().ok())
        .collect();
    let total: u64 = v.iter().take(8).sum();
    // idle and iowait
    let idle = v.get(3).copied().unwrap_or(0) + v.get(4).copied().unwrap_or(0);
    (total - idle, total)
}

/// Started before a run; `done` after it.
struct Probe {
    load: f64,
    jiffies: (u64, u64),
}

impl Probe {
    fn start() -> Probe {
        Probe {
            load: load_average(),
            jiffies: cpu_jiffies(),
        }
    }

    fn done(self) -> Machine {
        let (b, t) = cpu_jiffies();
        let (b0, t0) = self.jiffies;
        Machine {
            load: self.load,
            busy: (b - b0) as f64 / (t - t0).max(1) as f64,
        }
    }
}

/// One timed run of the seed's way.
pub struct SeedRun {
    pub wall: f64,
    pub machine: Machine,
    /// The largest docker client (wait4 on each build).
    pub rss_mb: f64,
    pub size_mb: f64,
}

/// One timed run of ours.
pub struct OursRun {
    pub wall: f64,
    pub machine: Machine,
    pub rss_self_mb: f64,
    pub rss_tree_mb: f64,
    pub cpu: f64,
    pub size_mb: f64,
    pub cells: Vec<Cell>,
    pub profile: Profile,
    /// A second `matrix build` right after, nothing changed: (wall, up-to-date cells).
    pub warm: Option<(f64, usize)>,
}

/// The runs with one client.
#[derive(Default)]
pub struct Series {
    pub seed: Vec<SeedRun>,
    pub ours: Vec<OursRun>,
    /// `--before`: the same -j 2 runs with the binary built before a change.
    pub before: Vec<OursRun>,
    /// `-j 1`, one per round (none with `--no-solo`).
    pub solo: Vec<OursRun>,
}

fn load_average() -> f64 {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse().ok())
        .unwrap_or(f64::NAN)
}

impl Bench {
    pub fn new(opts: Options) -> Bench {
        let (work, temporary) = match &opts.keep {
            Some(dir) => {
                std::fs::create_dir_all(dir).expect("--keep directory");
                (dir.clone(), None)
            }
            None => {
                let t = tempfile::tempdir().expect("temporary directory");
                (t.path().to_path_buf(), Some(t))
            }
        };
        let mirror = mirror(&work.join("mirror"));
        let seed_ctx = work.join("seed");
        let ok = Command::new("cp")
            .arg("-r")
            .arg(root().join("bench/seed"))
            .arg(&seed_ctx)
            .status()
            .is_ok_and(|s| s.success());
        assert!(ok, "cannot copy bench/seed");
        std::fs::copy(ca(), seed_ctx.join("ca.pem")).expect("copy the CA bundle");
        let (legacy, buildkit) = clients();
        let interrupted = Arc::new(AtomicBool::new(false));
        // A Ctrl-C stops the builds (they share the terminal's process group); the
        // bench then fails the run and its cleanup still removes what it made.
        signal_hook::flag::register(signal_hook::consts::SIGINT, Arc::clone(&interrupted))
            .expect("SIGINT handler");
        Bench {
            opts,
            work,
            _temporary: temporary,
            mirror,
            seed_ctx,
            bin: matrix_bin(),
            legacy,
            buildkit,
            cores: std::thread::available_parallelism().map_or(1, |n| n.get()),
            runs_made: std::cell::Cell::new(0),
            interrupted,
        }
    }

    pub fn clients(&self) -> Vec<&Client> {
        [&self.legacy, &self.buildkit]
            .into_iter()
            .filter(|c| self.opts.builders.contains(&c.builder))
            .collect()
    }

    /// With `--max-load X`: wait until the 1-minute load average is X or less (at most
    /// 15 minutes).
    fn wait_for_quiet(&self) {
        let Some(max) = self.opts.max_load else {
            return;
        };
        let t = Instant::now();
        while load_average() > max && t.elapsed().as_secs() < 900 {
            assert!(
                !self.interrupted.load(Ordering::SeqCst),
                "interrupted (Ctrl-C)"
            );
            std::thread::sleep(std::time::Duration::from_secs(5));
        }
        if t.elapsed().as_secs() >= 5 {
            eprintln!(
                "    waited {:.0} s for the load average to fall to {max} (now {:.2})",
                t.elapsed().as_secs_f64(),
                load_average()
            );
        }
    }

    /// A fresh base for the next run: unique per bench and per run.
    fn fresh_base(&self) -> RunBase {
        assert!(
            !self.interrupted.load(Ordering::SeqCst),
            "interrupted (Ctrl-C)"
        );
        self.wait_for_quiet();
        let n = self.runs_made.get() + 1;
        self.runs_made.set(n);
        let secs = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        let id = format!("{secs}p{}r{n}", std::process::id());
        RunBase::new(&id, &self.work, &self.legacy.path, &self.buildkit.path)
    }

    /// (installer, extra pip packages) of each cell, in the seed's build order.
    fn seed_cells(&self) -> Vec<(&'static str, &'static str)> {
        let installers = &INSTALLERS[..self.opts.cells / 2];
        installers
            .iter()
            .flat_map(|i| [(*i, ""), (*i, "pandas")])
            .collect()
    }

    /// The seed's way: its Dockerfile built once per cell, one after another.
    pub fn seed_run(&self, c: &Client, label: &str) -> SeedRun {
        let base = self.fresh_base();
        let probe = Probe::start();
        let mut rss: f64 = 0.0;
        let mut first_tag = None;
        let t = Instant::now();
        for (i, (installer, extra)) in self.seed_cells().into_iter().enumerate() {
            let tag = format!("{}/seed:cell{i}", base.prefix);
            let log = self.work.join(format!("seed-{label}-{i}.log"));
            let out = std::fs::File::create(&log).expect("seed log");
            let mut cmd = Command::new(&c.path);
            cmd.current_dir(&self.seed_ctx)
                .env("DOCKER_BUILDKIT", c.env())
                .arg("build");
            if c.buildkit() {
                cmd.arg("--progress=plain");
            }
            cmd.args(["--network", "host"]);
            for arg in [
                format!("BASE_IMAGE={}", base.base),
                format!("MINICONDA_PKG={installer}"),
                format!("MIRROR=http://127.0.0.1:{}/", self.mirror.port),
                format!("EXTRA_PIP={extra}"),
                "EXTRA_APT=ca-certificates supervisor git git-lfs iputils-ping".into(),
            ] {
                cmd.arg("--build-arg").arg(arg);
            }
            cmd.args(["-t", &tag, "-f", "./Dockerfile", "."])
                .stdout(out.try_clone().expect("log handle"))
                .stderr(out);
            let (m, ()) = measured_with(&mut cmd, |_, _| ());
            assert!(
                m.status.success(),
                "the seed's build {i} failed; its log: {}\n{}",
                log.display(),
                tail(&log)
            );
            rss = rss.max(m.rss_tree_mb);
            first_tag.get_or_insert(tag);
        }
        let wall = t.elapsed().as_secs_f64();
        let machine = probe.done();
        let size_mb = first_tag.map_or(0.0, |t| size_mb(&c.path, &t));
        SeedRun {
            wall,
            machine,
            rss_mb: rss,
            size_mb,
        }
    }

    /// `matrix build -j JOBS` in `dir` with this client and builder, output to `out`.
    fn matrix(&self, bin: &Path, c: &Client, dir: &Path, jobs: usize, out: &Path) -> Command {
        let out = std::fs::File::create(out).expect("output file");
        let mut cmd = Command::new(bin);
        cmd.current_dir(dir)
            .args(["build", "-j", &jobs.to_string(), "--builder", &c.builder])
            .arg("--docker")
            .arg(&c.path)
            .stdout(out.try_clone().expect("output handle"))
            .stderr(out);
        cmd
    }

    /// Ours: `matrix build -j JOBS --force` with this client and builder.
    pub fn ours_run(&self, c: &Client, label: &str, jobs: usize) -> OursRun {
        self.matrix_run(&self.bin, c, label, jobs)
    }

    /// `matrix build -j JOBS --force` with the binary `bin`.
    fn matrix_run(&self, bin: &Path, c: &Client, label: &str, jobs: usize) -> OursRun {
        let base = self.fresh_base();
        let dir = self.work.join(format!("ours-{label}"));
        std::fs::create_dir_all(&dir).expect("run directory");
        std::fs::write(dir.join("matrix.yaml"), self.matrix_yaml(&base)).expect("matrix");
        let output = dir.join("matrix-output.txt");
        let probe = Probe::start();
        let (m, w) = watched(
            self.matrix(bin, c, &dir, jobs, &output).arg("--force"),
            &dir.join("out/logs"),
        );
        let machine = probe.done();
        if self.opts.keep.is_some() {
            keep_stamped(&dir.join("stamped"), &w.logs);
        }
        assert!(
            m.status.success(),
            "matrix build failed ({label}); its output:\n{}",
            tail(&output)
        );
        let man = manifest(&dir);
        let cells = built_cells(&man, self.opts.cells, &output);
        let jobs_seen: Vec<stages::Job> = w
            .logs
            .iter()
            .filter_map(|(path, lines)| {
                let name = path.file_name()?.to_string_lossy();
                stages::parse(lines, name.starts_with("stage-"), c.buildkit())
            })
            .collect();
        let size_mb = man["cells"]
            .as_array()
            .and_then(|cs| cs.iter().find(|x| x["coordinates"]["variant"] == "default"))
            .and_then(|x| x["size_bytes"].as_f64())
            .unwrap_or(0.0)
            / 1e6;
        let warm = (jobs > 1).then(|| self.warm_run(bin, c, &dir, jobs));
        drop(base);
        OursRun {
            wall: m.wall.as_secs_f64(),
            machine,
            rss_self_mb: w.rss_self_mb,
            rss_tree_mb: m.rss_tree_mb,
            cpu: man["tool_cpu_seconds"].as_f64().unwrap_or(f64::NAN),
            size_mb,
            profile: Profile::new(jobs_seen, &cells, self.cores),
            cells,
            warm,
        }
    }

    /// The same matrix again right after, nothing changed: (wall, up-to-date cells).
    fn warm_run(&self, bin: &Path, c: &Client, dir: &Path, jobs: usize) -> (f64, usize) {
        let output = dir.join("warm-output.txt");
        let (m, ()) = measured_with(&mut self.matrix(bin, c, dir, jobs, &output), |_, _| ());
        assert!(
            m.status.success(),
            "the warm nightly failed:\n{}",
            tail(&output)
        );
        let fresh = manifest(dir)["cells"].as_array().map_or(0, |cs| {
            cs.iter().filter(|x| x["status"] == "up-to-date").count()
        });
        (m.wall.as_secs_f64(), fresh)
    }

    fn matrix_yaml(&self, base: &RunBase) -> String {
        let b = &base.base;
        let include = if self.opts.cells == 4 {
            format!("include:\n  - {{base: \"{b}\", python: \"3.11\", miniconda: \"24.4.0-0\", variant: default}}\n  - {{base: \"{b}\", python: \"3.11\", miniconda: \"24.4.0-0\", variant: pandas}}\n")
        } else {
            String::new()
        };
        format!(
            "version: 1\nimage:\n  repository: {prefix}/miniconda\n  tag: \"conda3-python{{python}}-{{miniconda}}-{{base}}-{{variant}}\"\nbases:\n  - {{image: \"{b}\", os: debian12}}\npython: [\"3.11\"]\n{include}variants:\n  - name: default\n  - name: pandas\n    pip: [pandas]\ninstallers:\n  - {{file: {i0}, sha256: \"{s}\"}}\n  - {{file: {i1}, sha256: \"{s}\"}}\nsources:\n  installer_mirrors: [\"http://127.0.0.1:{p}/\"]\n  ca_bundle: {ca}\nbuild:\n  network: host\n",
            prefix = base.prefix,
            i0 = INSTALLERS[0],
            i1 = INSTALLERS[1],
            s = self.mirror.sha,
            p = self.mirror.port,
            ca = ca(),
        )
    }
}

/// The logs as the watcher saw them, each line with its stamp: `12.3|line`.
fn keep_stamped(dir: &Path, logs: &super::watch::Stamped) {
    std::fs::create_dir_all(dir).expect("stamped log directory");
    for (path, lines) in logs {
        let text: String = lines.iter().map(|(t, l)| format!("{t:.1}|{l}\n")).collect();
        let name = path.file_name().unwrap_or_default();
        std::fs::write(dir.join(name), text).expect("write a stamped log");
    }
}

fn ca() -> &'static str {
    "/etc/ssl/certs/ca-certificates.crt"
}

fn tail(path: &Path) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(40)..].join("\n")
}

fn size_mb(client: &Path, image: &str) -> f64 {
    Command::new(client)
        .args(["image", "inspect", "--format", "{{.Size}}", image])
        .output()
        .ok()
        .and_then(|o| {
            String::from_utf8_lossy(&o.stdout)
                .trim()
                .parse::<f64>()
                .ok()
        })
        .unwrap_or(0.0)
        / 1e6
}

fn manifest(dir: &Path) -> serde_json::Value {
    let text = std::fs::read_to_string(dir.join("out/manifest.json")).expect("manifest");
    serde_json::from_str(&text).expect("manifest JSON")
}

/// The run's cells, after checking that all `n` were built.
fn built_cells(man: &serde_json::Value, n: usize, output: &Path) -> Vec<Cell> {
    let cells: Vec<Cell> = man["cells"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|c| c["status"] == "built")
        .map(|c| {
            let co = &c["coordinates"];
            let s = |v: &serde_json::Value| v.as_str().unwrap_or_default().to_string();
            let os = s(&co["os"]);
            Cell {
                id: s(&c["id"]),
                conda: format!("{os} {} py{}", s(&co["miniconda"]), s(&co["python"])),
                os,
            }
        })
        .collect();
    assert_eq!(cells.len(), n, "not every cell built:\n{}", tail(output));
    cells
}

/// Run the benchmark and print its report.
pub fn run(args: &[String]) {
    let opts = Options::parse(args);
    let b = Bench::new(opts);
    let clients = b.clients();
    let mut series: Vec<Series> = clients.iter().map(|_| Series::default()).collect();
    eprintln!(
        "nightly: {} round(s) of {} cells{}; local base {LOCAL_BASE}; files in {}",
        b.opts.runs,
        b.opts.cells,
        if b.opts.solo {
            ", each with a -j 1 run per builder"
        } else {
            ""
        },
        b.work.display()
    );
    let t0 = Instant::now();
    let note = |r: usize, c: &Client, what: &str, wall: f64| {
        eprintln!(
            "  [{:>6.0} s] round {r}, {}: {what} {wall:.1} s (load average {:.2})",
            t0.elapsed().as_secs_f64(),
            c.builder,
            load_average()
        );
    };
    for r in 1..=b.opts.runs {
        for (c, s) in clients.iter().zip(series.iter_mut()) {
            let label = format!("{}-{r}", c.builder);
            match &b.opts.before {
                None => {
                    let seed = b.seed_run(c, &label);
                    note(r, c, "seed's way", seed.wall);
                    s.seed.push(seed);
                }
                // before first in odd rounds, ours first in even ones
                Some(bin) if r % 2 == 1 => {
                    let before = b.matrix_run(bin, c, &format!("{label}-before"), 2);
                    note(r, c, "before: matrix build -j 2", before.wall);
                    s.before.push(before);
                }
                Some(_) => {}
            }
            let ours = b.ours_run(c, &label, 2);
            note(r, c, "matrix build -j 2", ours.wall);
            s.ours.push(ours);
            if let Some(bin) = b.opts.before.as_ref().filter(|_| r % 2 == 0) {
                let before = b.matrix_run(bin, c, &format!("{label}-before"), 2);
                note(r, c, "before: matrix build -j 2", before.wall);
                s.before.push(before);
            }
            if b.opts.solo {
                let solo = b.ours_run(c, &format!("{label}-solo"), 1);
                note(r, c, "matrix build -j 1", solo.wall);
                s.solo.push(solo);
            }
        }
    }
    super::report::print(&b, &clients, &series, t0.elapsed().as_secs_f64());
}
