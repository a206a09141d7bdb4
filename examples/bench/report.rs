//! The `nightly` report: the setup it ran on, per builder the like-for-like rows
//! (min / median / max), the ratio of medians with the spread of the per-round
//! ratios, the raw figures, and the stage times with the bound and where the rest
//! of our wall went.

use std::process::Command;

use super::nightly::{Bench, Client, Machine, OursRun, Series};
use super::stages::{slots, Cell, Profile, KINDS};

/// (min, median, max); the median of an even count is the mean of the middle two.
pub fn spread(v: &[f64]) -> (f64, f64, f64) {
    let mut s = v.to_vec();
    s.sort_by(f64::total_cmp);
    let n = s.len();
    if n == 0 {
        return (f64::NAN, f64::NAN, f64::NAN);
    }
    let med = if n % 2 == 1 {
        s[n / 2]
    } else {
        (s[n / 2 - 1] + s[n / 2]) / 2.0
    };
    (s[0], med, s[n - 1])
}

/// The index of the run whose wall is the median (the lower middle of an even count).
fn median_run(runs: &[OursRun]) -> usize {
    let mut idx: Vec<usize> = (0..runs.len()).collect();
    idx.sort_by(|a, b| runs[*a].wall.total_cmp(&runs[*b].wall));
    idx[(runs.len() - 1) / 2]
}

fn text_of(cmd: &mut Command) -> String {
    cmd.output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_default()
}

fn first_line_with(file: &str, key: &str) -> String {
    std::fs::read_to_string(file)
        .unwrap_or_default()
        .lines()
        .find(|l| l.starts_with(key))
        .and_then(|l| l.split_once(['=', ':']).map(|(_, v)| v))
        .unwrap_or_default()
        .trim()
        .trim_matches('"')
        .to_string()
}

fn header(b: &Bench, clients: &[&Client]) {
    let mem_gib = first_line_with("/proc/meminfo", "MemTotal")
        .trim_end_matches("kB")
        .trim()
        .parse::<f64>()
        .map_or(f64::NAN, |k| k / 1024.0 / 1024.0);
    let daemon =
        |fmt: &str| text_of(Command::new(&b.buildkit.path).args(["info", "--format", fmt]));
    println!(
        "date: {} UTC",
        text_of(Command::new("date").args(["-u", "+%Y-%m-%d %H:%M"]))
    );
    println!(
        "machine: {} cores ({}), {mem_gib:.0} GiB, {}, kernel {}",
        b.cores,
        first_line_with("/proc/cpuinfo", "model name"),
        first_line_with("/etc/os-release", "PRETTY_NAME"),
        text_of(Command::new("uname").arg("-r"))
    );
    println!(
        "daemon: Docker {} ({} storage, {} cgroups v{}), shared with other builds",
        daemon("{{.ServerVersion}}"),
        daemon("{{.Driver}}"),
        daemon("{{.CgroupDriver}}"),
        daemon("{{.CgroupVersion}}")
    );
    for c in clients {
        println!("client: {}", c.describe());
    }
    println!(
        "matrix: {} cells, Python 3.11 (stand-in installers from a loopback mirror) x {} x package sets default and +pandas, on the local Debian bookworm base",
        b.opts.cells,
        if b.opts.cells == 4 { "Miniconda 24.5.0-0 and 24.4.0-0" } else { "Miniconda 24.5.0-0" }
    );
    let first = match &b.opts.before {
        None => "the seed's way, `matrix build -j 2`".to_string(),
        Some(p) => format!(
            "`matrix build -j 2` with {} (before the change) and with this checkout's binary, alternating which goes first",
            p.display()
        ),
    };
    println!(
        "runs: {} rounds; in each, for each builder in turn: {first}{}",
        b.opts.runs,
        if b.opts.solo {
            ", `matrix build -j 1`"
        } else {
            ""
        }
    );
    println!("cold start before every run: a new base (the local base + one layer holding the run's id), so no layer or BuildKit cache record matches; afterwards the run's images, containers and BuildKit records are removed. Other users' images and caches are not touched; nothing is pruned daemon-wide.");
}

fn row(name: &str, v: &[f64]) {
    if v.is_empty() {
        return;
    }
    let (lo, med, hi) = spread(v);
    println!("  {name:<44} {lo:>8.1} s {med:>8.1} s {hi:>8.1} s");
}

/// (ratio of the medians, lowest and highest per-round ratio), None without runs.
fn ratio(num: &[f64], den: &[f64]) -> Option<(f64, f64, f64)> {
    if num.is_empty() || den.is_empty() {
        return None;
    }
    let pairs: Vec<f64> = num.iter().zip(den).map(|(a, b)| a / b).collect();
    let (lo, _, hi) = spread(&pairs);
    Some((spread(num).1 / spread(den).1, lo, hi))
}

fn walls(runs: &[OursRun]) -> Vec<f64> {
    runs.iter().map(|r| r.wall).collect()
}

/// Per round: our -j 2 wall over the bound from that round's -j 1 stage times.
fn over_solo_bound(s: &Series) -> Vec<f64> {
    s.ours
        .iter()
        .zip(&s.solo)
        .map(|(o, solo)| o.wall / solo.profile.bound(&solo.cells))
        .collect()
}

fn series(b: &Bench, c: &Client, s: &Series) {
    println!();
    println!("== {} ==", c.describe());
    println!("  {:<44} {:>10} {:>10} {:>10}", "", "min", "median", "max");
    let seed: Vec<f64> = s.seed.iter().map(|r| r.wall).collect();
    let ours = walls(&s.ours);
    row(
        &format!("seed's way, {} x docker build, one by one", b.opts.cells),
        &seed,
    );
    row("matrix build -j 2", &ours);
    row("matrix build -j 1 (for the bound)", &walls(&s.solo));
    row("matrix build -j 2, before the change", &walls(&s.before));
    if let Some((med, lo, hi)) = ratio(&ours, &seed) {
        println!(
            "  ratio ours / seed's way, same client and builder: {med:.2} (ratio of the medians; per round {lo:.2} .. {hi:.2}); target <= 0.60"
        );
    }
    if let Some((med, lo, hi)) = ratio(&ours, &walls(&s.before)) {
        println!(
            "  ratio after / before the change: {med:.2} (ratio of the medians; per round {lo:.2} .. {hi:.2})"
        );
    }
    if !s.solo.is_empty() {
        let bounds: Vec<f64> = s.solo.iter().map(|r| r.profile.bound(&r.cells)).collect();
        let (blo, bmed, bhi) = spread(&bounds);
        let (lo, med, hi) = spread(&over_solo_bound(s));
        println!("  lower bound, from each round's -j 1 stage times: median {bmed:.1} s ({blo:.1} .. {bhi:.1})");
        println!("  our wall / that round's bound: median {med:.2} (per round {lo:.2} .. {hi:.2}); goal <= 1.15");
        let with: Vec<f64> = s
            .ours
            .iter()
            .zip(&s.solo)
            .map(|(o, solo)| o.wall / solo.profile.bound_with_exports(&solo.cells))
            .collect();
        let (lo, med, hi) = spread(&with);
        println!("  our wall / that round's bound with each shared stage's export counted as work (its layers are written once however it is built): median {med:.2} (per round {lo:.2} .. {hi:.2})");
    }
    let own: Vec<f64> = s
        .ours
        .iter()
        .map(|r| r.wall / r.profile.bound(&r.cells))
        .collect();
    let (lo, med, hi) = spread(&own);
    println!("  our wall / the bound from the run's own stage times (looser: stages side by side run longer): median {med:.2} ({lo:.2} .. {hi:.2})");
    resources(s);
    raw(s);
    stage_report(b, s);
}

fn resources(s: &Series) {
    let cpu: Vec<f64> = s.ours.iter().map(|r| r.cpu).collect();
    let share: Vec<f64> = s.ours.iter().map(|r| 100.0 * r.cpu / r.wall).collect();
    println!(
        "  tool CPU: median {:.3} s = {:.2} % of the wall (max {:.2} %); target < 2 %",
        spread(&cpu).1,
        spread(&share).1,
        spread(&share).2
    );
    let max = |v: Vec<f64>| spread(&v).2;
    println!(
        "  peak RSS (largest over the runs): the matrix process {:.1} MB (its VmHWM); with the docker clients it waited for {:.1} MB (wait4); the seed's docker client {:.1} MB (wait4)",
        max(s.ours.iter().chain(&s.solo).map(|r| r.rss_self_mb).collect()),
        max(s.ours.iter().chain(&s.solo).map(|r| r.rss_tree_mb).collect()),
        max(s.seed.iter().map(|r| r.rss_mb).collect())
    );
    let warm: Vec<(f64, usize)> = s.ours.iter().filter_map(|r| r.warm).collect();
    let (wl, wm, wh) = spread(&warm.iter().map(|w| w.0).collect::<Vec<_>>());
    println!(
        "  warm nightly, nothing changed: {wl:.2} / {wm:.2} / {wh:.2} s (min / median / max), up-to-date cells per run: {:?}; target < 2 s",
        warm.iter().map(|w| w.1).collect::<Vec<_>>()
    );
    if s.seed.is_empty() {
        return;
    }
    println!(
        "  image size, same base and same apt + pip packages: seed {:.0} MB, ours {:.0} MB",
        s.seed.last().map_or(0.0, |r| r.size_mb),
        s.ours.last().map_or(0.0, |r| r.size_mb)
    );
}

fn machine(m: &Machine) -> String {
    format!("load {:.2}, CPUs {:.0} % busy", m.load, 100.0 * m.busy)
}

fn raw(s: &Series) {
    println!("  raw, in run order [1-minute load average at the start, share of all CPU time busy during the run]:");
    for (i, o) in s.ours.iter().enumerate() {
        let other = match (s.seed.get(i), s.before.get(i)) {
            (Some(sd), _) => format!(
                "seed {:.1} s [{}]; ours {:.1} s [{}]; ratio {:.3}",
                sd.wall,
                machine(&sd.machine),
                o.wall,
                machine(&o.machine),
                o.wall / sd.wall
            ),
            (None, Some(bf)) => format!(
                "before {:.1} s [{}]; after {:.1} s [{}]; ratio {:.3}",
                bf.wall,
                machine(&bf.machine),
                o.wall,
                machine(&o.machine),
                o.wall / bf.wall
            ),
            (None, None) => format!("ours {:.1} s [{}]", o.wall, machine(&o.machine)),
        };
        println!(
            "    round {}: {other}; tool CPU {:.3} s; peak RSS {:.1} / {:.1} MB; warm {:.2} s",
            i + 1,
            o.cpu,
            o.rss_self_mb,
            o.rss_tree_mb,
            o.warm.map_or(f64::NAN, |w| w.0)
        );
        if let Some(solo) = s.solo.get(i) {
            let bound = solo.profile.bound(&solo.cells);
            println!(
                "             -j 1 {:.1} s [{}]; bound {bound:.1} s; ours / bound {:.3}; bound from ours' own stages {:.1} s",
                solo.wall,
                machine(&solo.machine),
                o.wall / bound,
                o.profile.bound(&o.cells)
            );
        }
    }
}

fn stage_table(title: &str, p: &Profile) {
    println!("  {title}:");
    print!("    {:<44} {:>6} {:>6}", "job", "start", "end");
    for k in KINDS {
        print!(" {:>9}", k.label());
    }
    println!(
        " {:>8} {:>10} {:>9} {:>7}",
        "overhead", "cached", "st.export", "commit"
    );
    for j in &p.jobs {
        print!("    {:<44} {:>6.1} {:>6.1}", j.id, j.start, j.end);
        for s in j.work {
            if s > 0.0 {
                print!(" {s:>9.1}");
            } else {
                print!(" {:>9}", "");
            }
        }
        println!(
            " {:>8.1} {:>5.1} ({:>2}) {:>9.1} {:>7.1}",
            j.overhead(),
            j.cached_secs,
            j.cached,
            j.stage_export,
            j.commit
        );
    }
}

fn bound_lines(p: &Profile, cells: &[Cell]) {
    let by_kind = p.work_by_kind();
    let parts: Vec<String> = KINDS
        .iter()
        .map(|k| format!("{} {:.1}", k.label(), by_kind[*k as usize]))
        .collect();
    println!(
        "    stage work, each stage once: {:.1} s ({}); work done twice: {:.1} s",
        p.work(),
        parts.join(", "),
        p.duplicated
    );
    let (chain, end) = p.chain(cells);
    let per_core = p.work() / p.cores as f64;
    println!(
        "    longest chain {chain:.1} s (OS layer -> Miniconda + pip -> {end}); work / {} cores {per_core:.1} s; bound {:.1} s",
        p.cores,
        chain.max(per_core)
    );
}

fn stage_report(b: &Bench, s: &Series) {
    if s.ours.is_empty() {
        return;
    }
    let i = median_run(&s.ours);
    let m = &s.ours[i];
    let solo = s.solo.get(i);
    println!("  stage tables: each job's window (start, end: s since the run started), its work by kind, and the rest of its window as overhead; of that overhead, `cached` is the time (and number) of steps answered from the cache and `st.export` a --target stage's own export; `commit` is the legacy builder's layer commits, part of the work columns");
    if let Some(r) = solo {
        stage_table(
            &format!(
                "stage times (s) of round {}'s -j 1 run ({:.1} s), from its start",
                i + 1,
                r.wall
            ),
            &r.profile,
        );
        bound_lines(&r.profile, &r.cells);
    }
    stage_table(
        &format!(
            "stage times (s) of round {}'s -j 2 run ({:.1} s, the median)",
            i + 1,
            m.wall
        ),
        &m.profile,
    );
    bound_lines(&m.profile, &m.cells);
    let sl = slots(&m.profile, m.wall);
    println!(
        "    {} cores x {:.1} s = {:.1} core-s = stage work {:.1} + per-job overhead {:.1} + idle {:.1}{}",
        b.cores,
        m.wall,
        sl.total,
        sl.work,
        sl.overhead,
        sl.idle,
        if sl.oversubscribed > 0.0 {
            format!(" - oversubscribed {:.1}", sl.oversubscribed)
        } else {
            String::new()
        }
    );
    if let Some(r) = solo {
        let extra = m.profile.work() - r.profile.work();
        println!(
            "    stage work side by side {:.1} s vs one at a time {:.1} s: {extra:+.1} s ({:+.0} %)",
            m.profile.work(),
            r.profile.work(),
            100.0 * extra / r.profile.work()
        );
    }
    println!("    stretches of >= 1 s with a free core (from-to s, free cores: running):");
    for (from, to, free, running) in &sl.gaps {
        let what = if running.is_empty() {
            "nothing (planning, or between jobs)".to_string()
        } else {
            running.join(", ")
        };
        println!("      {from:>6.1}-{to:<6.1} {free}: {what}");
    }
    if !s.before.is_empty() {
        let k = median_run(&s.before);
        let r = &s.before[k];
        stage_table(
            &format!(
                "stage times (s) of round {}'s -j 2 run with the binary before the change ({:.1} s, the median)",
                k + 1,
                r.wall
            ),
            &r.profile,
        );
        bound_lines(&r.profile, &r.cells);
    }
}

/// Print the whole report.
pub fn print(b: &Bench, clients: &[&Client], all: &[Series], took: f64) {
    println!();
    header(b, clients);
    for (c, s) in clients.iter().zip(all) {
        series(b, c, s);
    }
    println!();
    let against = if b.opts.before.is_some() {
        "after / before the change"
    } else {
        "ours / the seed's way"
    };
    println!("like for like ({against} with the same client and builder: ratio of the medians, per-round spread; our wall / the round's bound):");
    for (c, s) in clients.iter().zip(all) {
        let seed: Vec<f64> = s.seed.iter().map(|r| r.wall).collect();
        let ours = walls(&s.ours);
        let den = if seed.is_empty() {
            walls(&s.before)
        } else {
            seed
        };
        let (med, lo, hi) = ratio(&ours, &den).unwrap_or((f64::NAN, f64::NAN, f64::NAN));
        let bound = if s.solo.is_empty() {
            String::new()
        } else {
            let (blo, bmed, bhi) = spread(&over_solo_bound(s));
            format!("; wall / bound {bmed:.2} ({blo:.2} .. {bhi:.2})")
        };
        println!("  {:<9} {med:.2} ({lo:.2} .. {hi:.2}){bound}", c.builder);
    }
    println!("the whole benchmark took {took:.0} s");
}
