//! Process-level behaviour of `matrix build` against a fake `docker` script: children
//! that ignore SIGTERM or fork grandchildren, floods of output, Ctrl-C of the tool,
//! preflight, fail-fast and resume. Afterwards no child may remain and the manifest
//! must parse.

mod common;

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::fake::{Env, MATRIX};

const A: &str = "py3.9-ubuntu22.04-amd64";
const B: &str = "py3.10-ubuntu22.04-amd64";
const C: &str = "py3.11-ubuntu22.04-amd64";

#[test]
fn a_timed_out_build_that_ignores_sigterm_is_killed_with_its_grandchildren() {
    let e = Env::new(31001);
    e.mode(A, "ignore-term");
    let t = Instant::now();
    let (code, err) = e.run(&["-j", "2", "--timeout", "1s", "--kill-grace", "1s"]);
    assert_eq!(code, 1, "{err}");
    assert!(
        t.elapsed() < Duration::from_secs(20),
        "took {:?}",
        t.elapsed()
    );
    assert_eq!(e.status(A), "timed-out");
    assert_eq!(e.status(B), "built");
    assert_eq!(e.status(C), "built");
    assert!(
        e.leftovers().is_empty(),
        "left running: {:?}",
        e.leftovers()
    );
    let log = std::fs::read_to_string(e.path(&format!("out/logs/{A}.log"))).unwrap();
    assert!(
        log.contains("# command: ") && log.contains("--iidfile"),
        "{log}"
    );
}

#[test]
fn ctrl_c_cancels_running_builds_and_leaves_a_valid_manifest() {
    let e = Env::new(31002);
    e.mode(A, "hang");
    e.mode(B, "ignore-term");
    let mut child = e
        .cmd(&["-j", "2", "--kill-grace", "1s"])
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    while e.leftovers().len() < 3 {
        assert!(Instant::now() < deadline, "builds did not start");
        std::thread::sleep(Duration::from_millis(50));
    }
    // SAFETY: plain kill(2) on our own child.
    unsafe {
        libc::kill(child.id() as i32, libc::SIGINT);
    }
    let status = child.wait().unwrap();
    assert_eq!(status.code(), Some(130));
    assert_eq!(e.status(A), "cancelled");
    assert_eq!(e.status(B), "cancelled");
    assert_eq!(e.status(C), "not-started");
    assert!(
        e.leftovers().is_empty(),
        "left running: {:?}",
        e.leftovers()
    );
}

#[test]
fn a_second_ctrl_c_stops_at_once_and_kills_every_build() {
    let e = Env::new(31003);
    e.mode(A, "ignore-term");
    let mut child = e
        .cmd(&["-j", "1", "--kill-grace", "60s"])
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    while e.leftovers().len() < 2 {
        assert!(Instant::now() < deadline, "build did not start");
        std::thread::sleep(Duration::from_millis(50));
    }
    let t = Instant::now();
    for _ in 0..2 {
        // SAFETY: plain kill(2) on our own child.
        unsafe {
            libc::kill(child.id() as i32, libc::SIGINT);
        }
        std::thread::sleep(Duration::from_millis(300));
    }
    let status = child.wait().unwrap();
    assert_eq!(status.code(), Some(130));
    assert!(
        t.elapsed() < Duration::from_secs(5),
        "second Ctrl-C took {:?}",
        t.elapsed()
    );
    std::thread::sleep(Duration::from_millis(200));
    assert!(
        e.leftovers().is_empty(),
        "left running: {:?}",
        e.leftovers()
    );
    // the second signal shortened the grace period; it did not skip the record
    let m = e.manifest();
    assert!(m["finished"].is_string(), "{m}");
    assert_eq!(m["outcome"]["result"], "interrupted");
    assert_eq!(m["outcome"]["signal"], "SIGINT");
    assert_eq!(e.status(A), "cancelled");
    assert_eq!(e.status(B), "not-started");
}

#[test]
fn a_flood_of_output_is_logged_in_full() {
    let e = Env::new(31004);
    e.mode(A, "flood");
    let (code, err) = e.run(&["--filter", "python=3.9"]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(e.status(A), "built");
    let log = std::fs::read_to_string(e.path(&format!("out/logs/{A}.log"))).unwrap();
    assert!(log.contains("flood line 200000\n"));
    assert!(log.lines().count() > 200_000);
}

#[test]
fn fail_fast_cancels_and_starts_nothing_new() {
    let e = Env::new(31005);
    e.mode(A, "hang");
    e.mode(B, "fail");
    let (code, err) = e.run(&["-j", "2", "--fail-fast", "--kill-grace", "1s"]);
    assert_eq!(code, 1, "{err}");
    assert_eq!(
        (e.status(A), e.status(B), e.status(C)),
        ("cancelled".into(), "failed".into(), "not-started".into())
    );
    // the failure is reported between rulers with the log and a reproducing command
    assert!(
        err.contains("E: something broke")
            && err.contains("full log: out/logs/py3.10-ubuntu22.04-amd64.log")
            && err.contains("reproduce: cd out/contexts/py3.10"),
        "{err}"
    );
    assert!(e.leftovers().is_empty());
}

#[test]
fn transient_failures_are_retried_when_asked() {
    let e = Env::new(31006);
    e.mode(A, "transient-once");
    let (code, err) = e.run(&["--filter", "python=3.9", "--retries", "1"]);
    assert_eq!(code, 0, "{err}");
    let m = e.manifest();
    assert_eq!(m["cells"][0]["attempts"], 2);
}

#[test]
fn preflight_reports_an_absent_daemon_once() {
    let e = Env::new(31007);
    std::fs::write(e.path("state/daemon-down"), "").unwrap();
    let (code, err) = e.run(&[]);
    assert_eq!(code, 4);
    assert_eq!(err.matches("does not answer").count(), 1, "{err}");
    assert!(!e.path("out/manifest.json").exists());
}

#[test]
fn resume_reruns_only_what_did_not_succeed() {
    let e = Env::new(31008);
    e.mode(B, "fail");
    let (code, _) = e.run(&["-j", "1"]);
    assert_eq!(code, 1);
    std::fs::copy(e.path("out/manifest.json"), e.path("previous.json")).unwrap();
    e.mode(B, "ok");
    std::fs::write(e.path("state/calls"), "").unwrap();
    let (code, err) = e.run(&["-j", "1", "--resume", "previous.json"]);
    assert_eq!(code, 0, "{err}");
    let calls = e.calls();
    // image builds (not the metadata builds that label versions, `--quiet`)
    let builds: Vec<&str> = calls
        .lines()
        .filter(|l| l.starts_with("build ") && !l.contains(" --quiet "))
        .collect();
    assert_eq!(builds.len(), 1, "{calls}");
    assert!(builds[0].ends_with(&format!("/{B}.iid -")), "{}", builds[0]);
    assert_eq!(
        (e.status(A), e.status(B), e.status(C)),
        ("up-to-date".into(), "built".into(), "up-to-date".into())
    );
}

#[test]
fn push_is_two_phase_and_never_half_publishes() {
    let e = Env::new(31009);
    e.mode(B, "fail");
    let (code, _) = e.run(&["-j", "1"]);
    assert_eq!(code, 1);
    let push = |extra: &[&str]| e.push(extra);
    std::fs::write(e.path("state/calls"), "").unwrap();
    let (code, err) = push(&[]);
    assert_eq!(code, 1);
    assert!(
        err.contains("1 of 3 cells did not build; publishing nothing"),
        "{err}"
    );
    let calls = e.calls();
    assert!(
        !calls.lines().any(|l| l.starts_with("push")),
        "nothing may be pushed: {calls}"
    );

    let (code, err) = push(&["--allow-partial"]);
    assert_eq!(code, 0, "{err}");
    let calls = e.calls();
    let pushes: Vec<&str> = calls.lines().filter(|l| l.starts_with("push")).collect();
    assert_eq!(
        pushes,
        [
            "push miniconda:conda3-python3.9-ubuntu22.04",
            "push miniconda:conda3-python3.11-ubuntu22.04",
            "push miniconda:conda3-python3.9-ubuntu22.04-nightly",
            "push miniconda:conda3-python3.11-ubuntu22.04-nightly",
        ],
        "primary tags first, then aliases, and never the failed cell"
    );
    let m = e.manifest();
    let a = m["cells"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["id"] == A)
        .unwrap();
    assert_eq!(a["pushed"].as_array().unwrap().len(), 2);
    assert!(a["pushed"][0]["digest"]
        .as_str()
        .unwrap()
        .starts_with("sha256:"));
}

#[test]
fn failed_pushes_are_retried_and_recorded() {
    let e = Env::new(31010);
    let (code, _) = e.run(&["-j", "1", "--filter", "python=3.9"]);
    assert_eq!(code, 0);
    std::fs::write(e.path("state/push-fails"), "").unwrap();
    let (code, _) = e.push(&["--retries", "1"]);
    assert_eq!(code, 1);
    let m = e.manifest();
    let pushed = &m["cells"][0]["pushed"][0];
    assert_eq!(pushed["ok"], false);
    assert_eq!(pushed["attempts"], 2);
    assert!(pushed["error"].as_str().unwrap().contains("denied"));
}

#[test]
fn sharded_builds_merge_into_one_manifest_and_conflicts_are_refused() {
    let e = Env::with_matrix(
        31011,
        "version: 1\nbases: [ubuntu:20.04, ubuntu:22.04, ubuntu:24.04]\npython: [\"3.10\", \"3.11\"]\n",
    );
    for i in 1..=2 {
        let shard = format!("{i}/2");
        let out = format!("out{i}");
        let (code, err) = e.run(&["--shard", &shard, "-o", &out]);
        assert_eq!(code, 0, "{err}");
    }
    let ids = |p: &str| -> Vec<String> {
        let m: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(e.path(p)).unwrap()).unwrap();
        common::schema::check("manifest", &m);
        m["cells"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| c["id"].as_str().unwrap().to_string())
            .collect()
    };
    let (a, b) = (ids("out1/manifest.json"), ids("out2/manifest.json"));
    assert_eq!(
        (a.len(), b.len()),
        (4, 2),
        "cells of one base stay together: {a:?} {b:?}"
    );
    assert!(a.iter().all(|x| !b.contains(x)));

    let merge = |inputs: &[&str], out: &str| {
        Command::new(env!("CARGO_BIN_EXE_matrix"))
            .current_dir(e.dir.path())
            .args(["manifest", "merge"])
            .args(inputs)
            .args(["-o", out])
            .output()
            .unwrap()
    };
    let res = merge(&["out1/manifest.json", "out2/manifest.json"], "all.json");
    assert!(
        res.status.success(),
        "{}",
        String::from_utf8_lossy(&res.stderr)
    );
    let all = ids("all.json");
    assert_eq!(all.len(), 6);

    // The same cell recorded differently in two manifests is a conflict.
    let mut m: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(e.path("out1/manifest.json")).unwrap())
            .unwrap();
    m["cells"][0]["status"] = "failed".into();
    std::fs::write(e.path("conflict.json"), serde_json::to_string(&m).unwrap()).unwrap();
    let res = merge(&["out1/manifest.json", "conflict.json"], "bad.json");
    assert_eq!(
        res.status.code(),
        Some(4),
        "a conflict is a precondition that failed"
    );
    let err = String::from_utf8_lossy(&res.stderr);
    assert!(
        err.contains("differs between out1/manifest.json and conflict.json; refusing to merge"),
        "{err}"
    );
    assert!(!e.path("bad.json").exists(), "no half-written output");
}

/// The self-hosted example workflow's plan, build and merge commands, exactly as written there, run
/// locally against the fake docker (verify needs a real daemon, push a registry).
#[test]
fn the_example_workflow_plans_builds_shards_and_merges() {
    let e = Env::new(31012);
    std::fs::write(e.path("matrix.yaml"), "version: 1\nbases: [ubuntu:20.04, ubuntu:22.04, ubuntu:24.04, \"debian:12\", \"debian:11\"]\npython: [\"3.10\"]\n").unwrap();
    let wf = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/github-workflow-self-hosted.yml"),
    )
    .unwrap();
    let commands: Vec<String> = wf
        .lines()
        .map(str::trim)
        .map(|l| l.strip_prefix("- run: ").unwrap_or(l))
        .filter(|l| l.starts_with("matrix "))
        .map(str::to_string)
        .collect();
    assert_eq!(commands.len(), 4, "{commands:?}");
    // the variables the workflow's runners provide
    let publish_engines =
        "--engine build-1=ssh://ci@build-1.internal --engine build-2=ssh://ci@build-2.internal";
    let sh = |cmd: &str, runner: &str| {
        let bin = Path::new(env!("CARGO_BIN_EXE_matrix"));
        let line = cmd.replacen("matrix ", &format!("{} ", bin.display()), 1);
        let out = Command::new("bash")
            .arg("-c")
            .arg(&line)
            .current_dir(e.dir.path())
            .env("RUNNER_NAME", runner)
            .env("FAKE_ENGINE", runner)
            .env("PUBLISH_ENGINES", publish_engines)
            .env("FAKE_DOCKER_STATE", e.path("state"))
            .env(
                "DOCKER",
                Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fake/docker"),
            )
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{line}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    sh(&commands[0], "hosted");
    let shards: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(e.path("shards.json")).unwrap()).unwrap();
    let shards = shards["include"].as_array().unwrap().clone();
    assert_eq!(shards.len(), 4);
    let build = commands[1].replace(" --verify", "");
    assert!(build.contains("${{ matrix.shard }}"));
    for (i, s) in shards.iter().enumerate() {
        let line = build.replace("${{ matrix.shard }}", s["shard"].as_str().unwrap());
        // two build hosts take the four shards
        sh(&line, &format!("build-{}", i % 2 + 1));
        std::fs::create_dir_all(e.path(&format!("shards/manifest-{i}"))).unwrap();
        std::fs::rename(
            e.path("out/manifest.json"),
            e.path(&format!("shards/manifest-{i}/manifest.json")),
        )
        .unwrap();
    }
    sh(&commands[2], "publisher");
    let all: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(e.path("all.json")).unwrap()).unwrap();
    common::schema::check("manifest", &all);
    let cells = all["cells"].as_array().unwrap();
    assert_eq!(cells.len(), 5);
    assert!(cells.iter().all(|c| c["status"] == "built"));
    let names: Vec<&str> = all["engines"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["build-1", "build-2"]);

    // publish: every tag is pushed from the build host that holds it
    let before = calls_by_engine(&e).len();
    sh(&commands[3], "publisher");
    let pushes: Vec<(String, String)> = calls_by_engine(&e)[before..]
        .iter()
        .filter(|(_, a)| a.starts_with("push "))
        .cloned()
        .collect();
    assert_eq!(pushes.len(), 5, "{pushes:?}");
    for (engine, a) in &pushes {
        let tag = a.trim_start_matches("push ");
        let cell = cells
            .iter()
            .find(|c| c["tags"][0] == tag)
            .unwrap_or_else(|| panic!("{tag} is no cell's primary tag"));
        // the fake names an engine reached over SSH by its host's first label
        let host = cell["engine"].as_str().unwrap();
        assert_eq!(engine, host, "{tag}");
    }
}

#[test]
fn plan_diff_says_which_cells_change_and_why() {
    let e = Env::new(31013);
    e.mode(B, "fail");
    let (code, _) = e.run(&["-j", "1"]);
    assert_eq!(code, 1);
    std::fs::copy(e.path("out/manifest.json"), e.path("last.json")).unwrap();
    let diff = |yaml: &str| {
        std::fs::write(e.path("matrix.yaml"), yaml).unwrap();
        let out = Command::new(env!("CARGO_BIN_EXE_matrix"))
            .current_dir(e.dir.path())
            .args(["plan", "--diff", "last.json", "--format", "json"])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        v["cells"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| {
                format!(
                    "{} {} {}",
                    c["id"].as_str().unwrap(),
                    c["change"].as_str().unwrap(),
                    c["why"]
                        .as_array()
                        .unwrap()
                        .iter()
                        .map(|w| w.as_str().unwrap())
                        .collect::<Vec<_>>()
                        .join("; ")
                )
            })
            .collect::<Vec<_>>()
    };
    assert_eq!(
        diff(MATRIX),
        [
            format!("{A} unchanged "),
            format!("{B} rebuild previous status failed"),
            format!("{C} unchanged ")
        ]
    );
    let changed = MATRIX.replace("python: [\"3.9\", \"3.10\", \"3.11\"]", "python: [\"3.10\", \"3.11\", \"3.12\"]\npackages:\n  pip: [jupyterlab, tensorboard, pandas]");
    assert_eq!(
        diff(&changed),
        [
            format!("{B} changed Miniconda layer (installer, pip packages, sources or its script)"),
            format!("{C} changed Miniconda layer (installer, pip packages, sources or its script)"),
            "py3.12-ubuntu22.04-amd64 new not in the previous manifest".to_string(),
            format!("{A} removed no longer in the matrix"),
        ]
    );
}

#[test]
fn a_selection_that_matches_nothing_is_an_error() {
    let e = Env::new(31014);
    let (code, err) = e.run(&["--filter", "python=2.7"]);
    assert_eq!(code, 2);
    assert!(
        err.contains("no cell of matrix.yaml matches the selection (3 cells planned)"),
        "{err}"
    );
    assert!(!e.path("out/manifest.json").exists());
}

/// Calls the fake docker received, as (engine, arguments).
fn calls_by_engine(e: &Env) -> Vec<(String, String)> {
    std::fs::read_to_string(e.path("state/calls-by-engine"))
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.split_once(' '))
        .map(|(a, b)| (a.to_string(), b.to_string()))
        .collect()
}

#[test]
fn an_engine_that_dies_mid_run_loses_its_cell_to_the_other_and_push_follows_the_cells() {
    let e = Env::with_matrix(
        31011,
        "version: 1\nimage:\n  aliases: [\"{tag}-nightly\"]\nbases: [ubuntu:22.04, ubuntu:24.04]\npython: [\"3.10\", \"3.11\"]\n",
    );
    let killed = "py3.10-ubuntu24.04-amd64";
    e.mode(killed, "kill-engine-once");
    let engines = [
        "--engine",
        "fa=unix:///fake/fa.sock,jobs=1",
        "--engine",
        "fb=unix:///fake/fb.sock,jobs=1",
    ];
    let (code, err) = e.run(&engines);
    assert_eq!(code, 0, "{err}");
    let m = e.manifest();
    // exactly one engine went down: the one the killed cell first ran on
    let recs = m["engines"].as_array().unwrap();
    assert_eq!(recs.len(), 2);
    let down: Vec<&str> = recs
        .iter()
        .filter(|r| !r["down"].is_null())
        .map(|r| r["name"].as_str().unwrap())
        .collect();
    assert_eq!(down.len(), 1, "{recs:?}");
    let (dead, alive) = if down[0] == "fa" {
        ("fa", "fb")
    } else {
        ("fb", "fa")
    };
    assert!(err.contains(&format!("engine {dead} is down")), "{err}");
    let cells = m["cells"].as_array().unwrap();
    assert_eq!(cells.len(), 4);
    for c in cells {
        assert_eq!(c["status"], "built", "{c}");
    }
    let k = cells.iter().find(|c| c["id"] == killed).unwrap();
    assert_eq!(k["engine"], alive);
    assert_eq!(k["attempts"], 2, "the lost attempt counts as a retry");
    assert_eq!(k["requeued"][0]["engine"], dead);
    assert!(k["requeued"][0]["reason"]
        .as_str()
        .unwrap()
        .contains("Cannot connect to the Docker daemon"));
    // nothing was built on the dead engine after it died
    let calls = calls_by_engine(&e);
    let died_at = calls
        .iter()
        .position(|(en, a)| {
            en == dead && a.contains(" -t ") && a.ends_with(&format!("/{killed}.iid -"))
        })
        .unwrap();
    assert!(
        !calls[died_at + 1..]
            .iter()
            .any(|(en, a)| en == dead && a.starts_with("build")),
        "{calls:#?}"
    );
    // cells of one base were built on one engine (the killed cell aside)
    for base in ["ubuntu22.04", "ubuntu24.04"] {
        let on: std::collections::BTreeSet<&str> = cells
            .iter()
            .filter(|c| c["id"].as_str().unwrap().contains(base))
            .map(|c| c["engine"].as_str().unwrap())
            .collect();
        assert_eq!(on.len(), 1, "{base} split over {on:?}");
    }

    // push reads the engines from the manifest and pushes each tag from its engine
    // (the build's --engine flags repeated: a target only the build's command line
    // named is not taken from the manifest)
    let before = calls_by_engine(&e).len();
    let (code, err) = e.push(&engines);
    assert_eq!(code, 0, "{err}");
    assert!(
        err.contains(&format!("engine {dead} at unix:///fake/{dead}.sock")),
        "{err}"
    );
    let pushes: Vec<(String, String)> = calls_by_engine(&e)[before..]
        .iter()
        .filter(|(_, a)| a.starts_with("push "))
        .cloned()
        .collect();
    assert_eq!(pushes.len(), 8, "4 primary tags + 4 aliases: {pushes:?}");
    for (en, a) in &pushes {
        let tag = a.trim_start_matches("push ");
        let cell = cells
            .iter()
            .find(|c| c["tags"].as_array().unwrap().iter().any(|t| t == tag))
            .unwrap();
        assert_eq!(cell["engine"], en.as_str(), "{tag} pushed from {en}");
    }
}

#[test]
fn push_refuses_cells_whose_engine_does_not_answer() {
    let e = Env::new(31012);
    // engines from the matrix file this time
    let yaml = format!(
        "{MATRIX}engines:\n  - name: fa\n    host: unix:///fake/fa.sock\n  - name: fb\n    host: unix:///fake/fb.sock\n    jobs: 1\n"
    );
    std::fs::write(e.path("matrix.yaml"), yaml).unwrap();
    let (code, err) = e.run(&[]);
    assert_eq!(code, 0, "{err}");
    let m = e.manifest();
    let on: Vec<&str> = m["cells"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["engine"].as_str().unwrap())
        .collect();
    assert_eq!(on.len(), 3);
    let jobs: Vec<u64> = m["engines"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["jobs"].as_u64().unwrap())
        .collect();
    assert_eq!(jobs, [2, 1], "fa takes -j, fb its own jobs");
    // the single base stays on one engine; take that engine away
    let holder = on[0].to_string();
    std::fs::write(e.path(&format!("state/down-{holder}")), "").unwrap();
    let (code, err) = e.push(&[]);
    assert_eq!(code, 1, "{err}");
    assert!(
        err.contains(&format!("are on engines that do not answer ({holder})"))
            && err.contains("publishing nothing"),
        "{err}"
    );
    assert!(!calls_by_engine(&e)
        .iter()
        .any(|(_, a)| a.starts_with("push ")));
}

#[test]
fn an_engine_that_does_not_answer_at_the_start_is_left_out_with_a_warning() {
    let e = Env::new(31013);
    std::fs::write(e.path("state/down-fb"), "").unwrap();
    let (code, err) = e.run(&[
        "--engine",
        "fa=unix:///fake/fa.sock",
        "--engine",
        "fb=unix:///fake/fb.sock",
    ]);
    assert_eq!(code, 0, "{err}");
    assert!(
        err.contains(
            "warning: the Docker daemon does not answer (engine fb at unix:///fake/fb.sock)"
        ),
        "{err}"
    );
    let m = e.manifest();
    let fb = &m["engines"][1];
    assert_eq!(fb["name"], "fb");
    assert!(fb["down"]
        .as_str()
        .unwrap()
        .starts_with("did not answer at the start: Cannot connect"));
    for c in m["cells"].as_array().unwrap() {
        assert_eq!(c["engine"], "fa", "{c}");
    }
    // with no engine answering, nothing starts: one error, the preflight code
    std::fs::write(e.path("state/down-fa"), "").unwrap();
    let (code, err) = e.run(&[
        "--engine",
        "fa=unix:///fake/fa.sock",
        "--engine",
        "fb=unix:///fake/fb.sock",
    ]);
    assert_eq!(code, 4, "{err}");
    assert!(err.contains("error: no Docker engine answers"), "{err}");
}

#[test]
fn build_push_publishes_nothing_when_an_engine_died_after_building_a_cell() {
    let e = Env::with_matrix(
        31014,
        "version: 1\nbases: [ubuntu:22.04, ubuntu:24.04]\npython: [\"3.10\"]\n",
    );
    // one cell per base, so one per engine; the 24.04 cell's engine dies once it is built
    e.mode("py3.10-ubuntu24.04-amd64", "die-after");
    let (code, err) = e.run(&[
        "--engine",
        "fa=unix:///fake/fa.sock,jobs=1",
        "--engine",
        "fb=unix:///fake/fb.sock,jobs=1",
        "--push",
    ]);
    assert_eq!(code, 1, "{err}");
    let m = e.manifest();
    let dead = m["cells"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["id"] == "py3.10-ubuntu24.04-amd64")
        .unwrap()["engine"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(
        err.contains(&format!(
            "push: 1 are on engines that do not answer ({dead}); publishing nothing"
        )),
        "{err}"
    );
    assert!(!calls_by_engine(&e)
        .iter()
        .any(|(_, a)| a.starts_with("push ")));
}

/// The manifest's schema as a snapshot: every field name and shape of a run with a
/// built, a failed and an up-to-date cell (values that change per run are masked).
#[test]
fn the_manifest_schema_is_stable() {
    let e = Env::new(31030);
    let (code, _) = e.run(&["-j", "1"]);
    assert_eq!(code, 0);
    e.mode(B, "fail");
    std::fs::write(
        e.path("matrix.yaml"),
        MATRIX.replace(
            "\"3.11\"]",
            "\"3.11\"]\nexclude: [{python: \"3.11\", reason: \"not tonight\"}]",
        ),
    )
    .unwrap();
    std::fs::remove_file(e.path("state/store-default/tag-miniconda_conda3-python3.10-ubuntu22.04"))
        .unwrap();
    let (code, err) = e.run(&["-j", "1"]);
    assert_eq!(code, 1, "{err}");
    let mut m = e.manifest();
    fn mask(v: &mut serde_json::Value, key: &str) {
        match v {
            serde_json::Value::Object(o) => {
                for (k, x) in o.iter_mut() {
                    let volatile = matches!(
                        k.as_str(),
                        "started"
                            | "finished"
                            | "tool_cpu_seconds"
                            | "duration_seconds"
                            | "input_hash"
                            | "image_id"
                            | "reproduce"
                            | "date"
                    ) || key == "input_parts"
                        || (key == "sbom"
                            && matches!(k.as_str(), "collected_at" | "sha256" | "seconds"));
                    if volatile && !x.is_null() {
                        *x = serde_json::Value::String("[masked]".into());
                    } else {
                        mask(x, k);
                    }
                }
            }
            serde_json::Value::Array(a) => a.iter_mut().for_each(|x| mask(x, key)),
            _ => {}
        }
    }
    mask(&mut m, "");
    insta::assert_json_snapshot!("manifest", m);
}

/// An image tree: a PyTorch image builds after its parent, `FROM` the parent's image
/// ID; a failed parent skips its child with the reason, and the manifest records each
/// child's parent and the parent's image ID.
#[test]
fn a_failed_parent_skips_its_framework_images() {
    let e = Env::with_matrix(
        31030,
        "version: 1\nbases: [ubuntu:22.04]\npython: [\"3.10\", \"3.11\"]\npytorch: [\"2.5.1\"]\n",
    );
    let (p_bad, p_ok) = ("py3.10-ubuntu22.04-amd64", "py3.11-ubuntu22.04-amd64");
    e.mode(p_bad, "fail");
    let (code, err) = e.run(&["-j", "2"]);
    assert_eq!(code, 1, "{err}");
    let m = e.manifest();
    let cell = |id: &str| common::cell(&m, id);
    let bad_child = cell(&format!("{p_bad}-torch2.5.1"));
    assert_eq!(bad_child["status"], "not-started");
    let reason = bad_child["reason"].as_str().unwrap_or_default();
    assert!(
        reason.starts_with(&format!("skipped (parent failed): parent {p_bad} failed")),
        "{reason}"
    );
    assert_eq!(bad_child["parent"], p_bad);
    let ok_child = cell(&format!("{p_ok}-torch2.5.1"));
    assert_eq!(ok_child["status"], "built", "{err}");
    assert_eq!(ok_child["parent"], p_ok);
    // the image the parent's build produced (acceptance then labels it with its
    // versions, a config-only change that gives the parent a new ID over the same layers)
    let from = ok_child["parent_digest"].as_str().unwrap_or_default();
    assert!(from.starts_with("sha256:"), "{from}");
    let calls = e.calls();
    let child_build = calls
        .lines()
        .find(|l| l.starts_with("build") && l.ends_with(&format!("/{p_ok}-torch2.5.1.iid -")))
        .unwrap_or_else(|| panic!("no build of the child in {calls}"));
    assert!(
        child_build.contains(&format!("--build-arg PARENT={from}")),
        "{child_build}"
    );
    assert!(!calls.contains(&format!("{p_bad}-torch2.5.1\n")), "{calls}");
    assert!(e.leftovers().is_empty());
}

/// Acceptance asks about many images at once: one `image ls` for the tags about to
/// move, one `image rm` for every candidate tag, one inspect for the sizes (of
/// built cells) or for the labels (of up-to-date ones), never one call per tag.
#[test]
fn acceptance_asks_about_many_images_at_once() {
    let e = Env::new(31040);
    // A's build is answered from the cache: it prints no versions
    e.mode(A, "cached");
    let (code, err) = e.run(&["-j", "2"]);
    assert_eq!(code, 0, "{err}");
    let calls = e.calls();
    let count = |p: &str| calls.lines().filter(|l| l.starts_with(p)).count();
    // the versions of B and C come from their builds' output, A's from its image; each
    // cell's packages are listed once (not verified: in a container of its own)
    let runs: Vec<&str> = calls.lines().filter(|l| l.starts_with("run ")).collect();
    let (listings, runs): (Vec<&str>, Vec<&str>) = runs
        .into_iter()
        .partition(|l| l.contains("--entrypoint /bin/sh"));
    assert_eq!(runs.len(), 1, "{calls}");
    assert_eq!(listings.len(), 3, "{calls}");
    assert_eq!(count("image ls "), 1, "{calls}");
    let rms: Vec<&str> = calls
        .lines()
        .filter(|l| l.starts_with("image rm "))
        .collect();
    assert_eq!(rms.len(), 1, "{calls}");
    assert_eq!(rms[0].matches("candidate-").count(), 3, "{}", rms[0]);
    let sizes: Vec<&str> = calls
        .lines()
        .filter(|l| l.starts_with("image inspect --format {{.Id}}|{{.Size}} "))
        .collect();
    assert_eq!(sizes.len(), 1, "{calls}");
    assert_eq!(sizes[0].matches("sha256:").count(), 3, "{}", sizes[0]);
    // no public tag is inspected one by one before it moves
    assert_eq!(
        count("image inspect --format {{.Id}} miniconda:"),
        0,
        "{calls}"
    );
    let m = e.manifest();
    for c in m["cells"].as_array().unwrap() {
        assert_eq!(c["size_bytes"], 4242, "{c}");
        assert_eq!(c["tags_added"].as_array().unwrap().len(), 2, "{c}");
        assert_eq!(c["versions"]["numpy"], "1.26.4", "{c}");
    }
    // the candidates are gone, the public tags stay
    let names: Vec<String> = std::fs::read_dir(e.path("state/store-default"))
        .unwrap()
        .filter_map(|f| f.ok()?.file_name().into_string().ok())
        .filter(|n| n.starts_with("tag-"))
        .collect();
    assert_eq!(names.len(), 6, "{names:?}");
    assert!(names.iter().all(|n| !n.contains("candidate")), "{names:?}");

    // the next night: nothing moves, and the versions come from one labels inspect
    std::fs::write(e.path("state/calls"), "").unwrap();
    let (code, err) = e.run(&["-j", "2"]);
    assert_eq!(code, 0, "{err}");
    let calls = e.calls();
    let labels: Vec<&str> = calls
        .lines()
        .filter(|l| l.starts_with("image inspect --format {{.Id}}|{{json .Config.Labels}} "))
        .collect();
    assert_eq!(labels.len(), 1, "{calls}");
    assert!(!calls.lines().any(|l| l.starts_with("tag ")), "{calls}");
    // the same images: last night's SBOMs still hold, no container lists them again
    assert!(!calls.lines().any(|l| l.starts_with("run ")), "{calls}");
    let m = e.manifest();
    for c in m["cells"].as_array().unwrap() {
        assert_eq!(c["status"], "up-to-date", "{c}");
        assert!(c["tags_added"].as_array().is_none_or(Vec::is_empty), "{c}");
        assert_eq!(c["versions"]["numpy"], "1.26.4", "{c}");
    }
}

#[test]
fn the_bases_are_asked_in_one_inspect_per_engine() {
    let e = Env::with_matrix(
        31041,
        "version: 1\nbases: [ubuntu:22.04, ubuntu:24.04, debian:12]\npython: [\"3.11\"]\n",
    );
    // the middle one is missing: docker names it and prints the other two
    std::fs::write(e.path("state/no-base-ubuntu_24.04"), "").unwrap();
    let out = e.matrix(&["plan", "--format", "bake"]).output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{err}");
    let calls = e.calls();
    let inspects: Vec<&str> = calls
        .lines()
        .filter(|l| l.starts_with("image inspect "))
        .collect();
    assert_eq!(inspects.len(), 1, "{calls}");
    for base in ["ubuntu:22.04", "ubuntu:24.04", "debian:12"] {
        assert!(
            inspects[0].ends_with(base) || inspects[0].contains(&format!("{base} ")),
            "{calls}"
        );
    }
    // the two found bases give their targets an input hash; the missing one is named
    let bake: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let hashed = |os: &str| {
        let targets = bake["target"].as_object().unwrap();
        let (_, t) = targets.iter().find(|(n, _)| n.contains(os)).unwrap();
        t["labels"].get("io.image-matrix.input-hash").is_some()
    };
    assert!(hashed("ubuntu22_04") && hashed("debian12"), "{bake}");
    assert!(!hashed("ubuntu24_04"), "{bake}");
    assert!(
        err.contains("no engine holds ubuntu:24.04 (linux/amd64)"),
        "{err}"
    );

    // none there: still one call
    for b in ["ubuntu_22.04", "debian_12"] {
        std::fs::write(e.path(&format!("state/no-base-{b}")), "").unwrap();
    }
    std::fs::write(e.path("state/calls"), "").unwrap();
    let out = e.matrix(&["plan", "--format", "bake"]).output().unwrap();
    assert_eq!(out.status.code(), Some(0));
    let calls = e.calls();
    assert_eq!(
        calls
            .lines()
            .filter(|l| l.starts_with("image inspect "))
            .count(),
        1,
        "{calls}"
    );
}

/// Build every cell (`-j 2`); each cell's id and the input hash the manifest records.
fn built_identities(e: &Env) -> Vec<(String, String)> {
    let (code, err) = e.run(&["-j", "2"]);
    assert_eq!(code, 0, "{err}");
    let m = e.manifest();
    m["cells"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| {
            let id = c["id"].as_str().unwrap().to_string();
            (id, c["input_hash"].as_str().unwrap().to_string())
        })
        .collect()
}

/// Each cell's bake target carries the input hash `build` recorded for it.
fn assert_bake_labels(bake: &[u8], recorded: &[(String, String)]) {
    let bake: serde_json::Value = serde_json::from_slice(bake).unwrap();
    for (id, hash) in recorded {
        let t = &bake["target"][id.replace('.', "_")];
        assert_eq!(
            t["labels"]["io.image-matrix.input-hash"],
            *hash.as_str(),
            "{id}: {t}"
        );
    }
}

/// A framework image's identity covers its parent's: what bake labels it with and what
/// `plan --diff` compares must be what `matrix build` records, or bake-built framework
/// images are built again and every diff calls them changed.
#[test]
fn bake_and_diff_give_framework_images_the_identity_build_gives_them() {
    let e = Env::with_matrix(
        31042,
        "version: 1\nbases: [ubuntu:22.04]\npython: [\"3.11\"]\npytorch: [\"2.5.1\"]\n",
    );
    let recorded = built_identities(&e);
    assert_eq!(recorded.len(), 2, "{recorded:?}");
    let out = e.matrix(&["plan", "--format", "bake"]).output().unwrap();
    assert_eq!(out.status.code(), Some(0));
    assert_bake_labels(&out.stdout, &recorded);
    let out = e
        .matrix(&["plan", "--diff", "out/manifest.json", "--format", "json"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0));
    let diff: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    for c in diff["cells"].as_array().unwrap() {
        assert_eq!(c["change"], "unchanged", "{c}");
    }
}

/// Bake asks the engines about the matrix's bases while the matrix expands; a base
/// only an `include` names is asked about after: its target carries the identity
/// `matrix build` records, as the others' do.
#[test]
fn bake_asks_about_a_base_only_an_inclusion_names() {
    let e = Env::with_matrix(
        31043,
        "version: 1\nbases: [ubuntu:22.04]\npython: [\"3.11\"]\ninclude:\n  - {base: \"debian:12\", python: \"3.11\"}\n",
    );
    let recorded = built_identities(&e);
    assert_eq!(recorded.len(), 2, "{recorded:?}");
    assert!(
        recorded.iter().any(|(id, _)| id.contains("debian12")),
        "{recorded:?}"
    );
    std::fs::write(e.path("state/calls"), "").unwrap();
    let out = e.matrix(&["plan", "--format", "bake"]).output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{err}");
    assert!(!err.contains("no engine holds"), "{err}");
    assert_bake_labels(&out.stdout, &recorded);
    let calls = e.calls();
    let inspects: Vec<&str> = calls
        .lines()
        .filter(|l| l.starts_with("image inspect "))
        .collect();
    assert!(inspects.iter().any(|l| l.ends_with("debian:12")), "{calls}");
}

/// Images an earlier tool version built carry an earlier scheme's identity in their
/// input-hash label (scheme 1, under a manifest that records it; scheme 2, under any
/// manifest: an image keeps its label while it stays current): a new version finds
/// them current and moves no tag, and an image whose inputs did change is still
/// rebuilt.
#[test]
fn images_labelled_by_an_earlier_version_stay_current() {
    use image_matrix::render::identity::{Identity, Over};
    let e = Env::new(31050);
    let (code, err) = e.run(&[]);
    assert_eq!(code, 0, "{err}");
    let plan = image_matrix::plan::plan_text(
        MATRIX,
        "matrix.yaml",
        e.dir.path(),
        &image_matrix::plan::PlanOptions {
            date: "20260101".into(),
        },
    )
    .unwrap();
    let r = image_matrix::render::Renderer::new(&plan.settings);
    for scheme in [1, 2] {
        let mut m = e.manifest();
        for rec in m["cells"].as_array_mut().unwrap() {
            let c = plan.cells.iter().find(|c| c.id == rec["id"]).unwrap();
            let base = rec["base_digest"].as_str().unwrap();
            let id = Identity::of(&r, &r.render(c), c, Over::Bases(&[base]));
            assert_eq!(rec["input_hash"], id.hash.as_str());
            let earlier = if scheme == 1 { &id.legacy } else { &id.scheme2 };
            if scheme == 1 {
                // a manifest written by a tool of scheme 1
                rec["input_hash"] = earlier.as_str().into();
            }
            // the image's label (its candidate's and its tag's), in the fake docker's store
            let mut relabelled = 0;
            for f in std::fs::read_dir(e.path("state")).unwrap().flatten() {
                if !f.file_name().to_string_lossy().starts_with("store-") {
                    continue;
                }
                for l in std::fs::read_dir(f.path()).unwrap().flatten() {
                    let text = std::fs::read_to_string(l.path()).unwrap_or_default();
                    if l.file_name().to_string_lossy().starts_with("label-") && id.is(text.trim()) {
                        std::fs::write(l.path(), format!("{earlier}\n")).unwrap();
                        relabelled += 1;
                    }
                }
            }
            assert!(relabelled > 0, "no image labelled {}", id.hash);
        }
        std::fs::write(e.path("out/manifest.json"), m.to_string()).unwrap();
        std::fs::write(e.path("state/calls"), "").unwrap();
        let (code, err) = e.run(&[]);
        assert_eq!(code, 0, "{err}");
        let builds: Vec<String> = e
            .calls()
            .lines()
            .filter(|l| l.starts_with("build ") && !l.contains(" --quiet "))
            .map(str::to_string)
            .collect();
        assert!(builds.is_empty(), "scheme {scheme}: {builds:?}");
        for id in [A, B, C] {
            assert_eq!(e.status(id), "up-to-date");
        }
    }
    // a changed input is a changed identity under either scheme
    std::fs::write(
        e.path("matrix.yaml"),
        format!("{MATRIX}packages: {{apt: [vim]}}\n"),
    )
    .unwrap();
    let (code, err) = e.run(&[]);
    assert_eq!(code, 0, "{err}");
    for id in [A, B, C] {
        assert_eq!(e.status(id), "built");
    }
}

/// `matrix build` with `file` in the fake's state making one docker call hang, sent
/// `sig` once the hang has begun: from a script's background job (which starts with
/// SIGINT ignored) when `ignored`. The run ends at once with the signal's code, builds
/// nothing, leaves nothing running and says so in its manifest.
fn a_signal_during_a_hung_query_ends_the_run(
    mark: u32,
    file: &str,
    args: &[&str],
    sig: i32,
    ignored: bool,
) {
    use std::os::unix::process::CommandExt;
    let e = Env::new(mark);
    std::fs::write(e.path(&format!("state/{file}")), "").unwrap();
    let mut cmd = e.cmd(args);
    cmd.stderr(Stdio::null());
    if ignored {
        // SAFETY: signal(2) between fork and exec, as a shell does for a background job.
        unsafe {
            cmd.pre_exec(|| {
                libc::signal(libc::SIGINT, libc::SIG_IGN);
                Ok(())
            });
        }
    }
    let mut child = cmd.spawn().unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    let pid_file = e.path("state/hang-pid");
    while std::fs::read_to_string(&pid_file).map_or(true, |s| s.trim().is_empty()) {
        assert!(Instant::now() < deadline, "the hung call never began");
        std::thread::sleep(Duration::from_millis(20));
    }
    let hung: i32 = std::fs::read_to_string(&pid_file)
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    let t = Instant::now();
    // SAFETY: plain kill(2) on our own child.
    unsafe {
        libc::kill(child.id() as i32, sig);
    }
    let status = child.wait().unwrap();
    let took = t.elapsed();
    assert_eq!(status.code(), Some(128 + sig), "took {took:?}");
    assert!(took < Duration::from_secs(5), "the stop took {took:?}");
    assert!(
        !e.calls().lines().any(|l| l.contains("build ")),
        "a build started after the signal:\n{}",
        e.calls()
    );
    // killed, it may stay a zombie for a moment until init reaps it
    let state = std::fs::read_to_string(format!("/proc/{hung}/stat")).unwrap_or_default();
    let alive = state
        .rsplit_once(") ")
        .is_some_and(|(_, rest)| !rest.starts_with('Z'));
    assert!(
        !alive,
        "the hung docker call's child {hung} outlived the run: {state}"
    );
    let m = e.manifest();
    assert_eq!(m["outcome"]["result"], "interrupted", "{m}");
    let name = if sig == libc::SIGINT {
        "SIGINT"
    } else {
        "SIGTERM"
    };
    assert_eq!(m["outcome"]["signal"], name);
    for c in m["cells"].as_array().unwrap() {
        assert_eq!(c["status"], "not-started", "{c}");
    }
}

#[test]
fn sigint_to_a_background_run_during_a_hung_buildx_query_stops_it() {
    a_signal_during_a_hung_query_ends_the_run(31040, "hang-buildx", &[], libc::SIGINT, true);
}

#[test]
fn sigterm_during_a_hung_buildx_query_stops_the_run_with_a_record() {
    a_signal_during_a_hung_query_ends_the_run(31041, "hang-buildx", &[], libc::SIGTERM, false);
}

#[test]
fn sigterm_during_a_slow_pull_stops_the_run_with_a_record() {
    a_signal_during_a_hung_query_ends_the_run(
        31042,
        "hang-pull",
        &["--pull"],
        libc::SIGTERM,
        false,
    );
}

/// Neither the repository nor the tags are part of a cell's identity: a matrix pointed
/// at another registry and given another tag template is a retag. `plan --diff` names
/// both, and the next build tags the images it had under the new names and runs no
/// `docker build`.
#[test]
fn a_new_repository_and_tag_template_retag_and_build_nothing() {
    let e = Env::new(31091);
    let (code, err) = e.run(&["-j", "2"]);
    assert_eq!(code, 0, "{err}");
    let before = e.manifest();
    let renamed = MATRIX.replace(
        "image:\n",
        "image:\n  repository: registry.example:5000/ml/miniconda\n  tag: \"py{python}-{base}\"\n",
    );
    std::fs::write(e.path("matrix.yaml"), renamed).unwrap();
    let diff = e.plan_diff();
    for id in [A, B, C] {
        let line = diff.lines().find(|l| l.starts_with(id)).unwrap();
        assert!(line.contains(" retag "), "{diff}");
        assert!(
            line.contains("repository miniconda → registry.example:5000/ml/miniconda"),
            "{diff}"
        );
        assert!(line.contains("; tag conda3-python3."), "{diff}");
    }
    assert!(!diff.contains("Dockerfile template"), "{diff}");
    std::fs::write(e.path("state/calls"), "").unwrap();
    let (code, err) = e.run(&["-j", "2"]);
    assert_eq!(code, 0, "{err}");
    let calls = e.calls();
    let builds: Vec<&str> = calls
        .lines()
        .filter(|l| l.starts_with("build ") || l.starts_with("buildx build "))
        .collect();
    assert!(builds.is_empty(), "{calls}");
    let after = e.manifest();
    for (old, new) in before["cells"]
        .as_array()
        .unwrap()
        .iter()
        .zip(after["cells"].as_array().unwrap())
    {
        assert_eq!(new["status"], "up-to-date", "{new}");
        assert_eq!(old["image_id"], new["image_id"], "{new}");
        let tag = new["tags"][0].as_str().unwrap();
        assert!(
            tag.starts_with("registry.example:5000/ml/miniconda:py3."),
            "{tag}"
        );
        assert!(
            calls
                .lines()
                .any(|l| l.starts_with("tag ") && l.ends_with(tag)),
            "{calls}"
        );
    }
}

/// Each accepted cell gets `out/sbom/<cell>.json` (a valid CycloneDX 1.5 BOM) that its
/// record links with its counts; the report shows them; `report --previous` against a
/// kept earlier run shows what was upgraded, added and removed.
#[test]
fn each_cell_gets_an_sbom_and_the_report_says_what_changed_in_its_packages() {
    let e = Env::new(31090);
    let (code, err) = e.run(&["-j", "1", "--filter", "python=3.11"]);
    assert_eq!(code, 0, "{err}");
    let m = e.manifest();
    let rec = &common::cell(&m, C)["sbom"];
    assert_eq!(rec["path"], format!("sbom/{C}.json"));
    assert_eq!(rec["format"], "CycloneDX 1.5 JSON");
    assert_eq!(
        rec["packages"],
        serde_json::json!({"dpkg": 2, "conda": 0, "pip": 2})
    );
    assert!(
        rec["notes"][0]
            .as_str()
            .unwrap()
            .starts_with("conda: no conda-meta"),
        "{rec}"
    );
    let text = std::fs::read_to_string(e.path(&format!("out/sbom/{C}.json"))).unwrap();
    let doc: serde_json::Value = serde_json::from_str(&text).unwrap();
    common::schema::check_cyclonedx(&doc);
    let purls: Vec<&str> = doc["components"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["purl"].as_str().unwrap())
        .collect();
    assert_eq!(
        purls,
        [
            "pkg:deb/ubuntu/bash@5.1-6ubuntu1?arch=amd64&distro=ubuntu-22.04",
            "pkg:deb/ubuntu/libc6@2.35-0ubuntu3.8?arch=amd64&distro=ubuntu-22.04",
            "pkg:pypi/jupyterlab@4.2.5",
            "pkg:pypi/numpy@1.26.4",
        ]
    );
    // one listing, in one container of the image, without network
    let calls = e.calls();
    let listings: Vec<&str> = calls
        .lines()
        .filter(|l| l.starts_with("run ") && l.contains("--entrypoint /bin/sh"))
        .collect();
    assert_eq!(listings.len(), 1, "{calls}");
    assert!(listings[0].contains("--network none"), "{}", listings[0]);
    let md = std::fs::read_to_string(e.path("out/report.md")).unwrap();
    assert!(
        md.contains(
            &format!("| {} | 2 | 0 | 2 | [sbom/{}.json](sbom/{C}.json) |", C, C)
                .replace('_', "\\_")
        ),
        "{md}"
    );
    let html = std::fs::read_to_string(e.path("out/report.html")).unwrap();
    assert!(html.contains("dpkg 2 · conda 0 · pip 2"), "{html}");
    assert!(
        html.contains(&format!("<a href=\"sbom/{C}.json\">")),
        "{html}"
    );

    // last night kept; tonight numpy is upgraded, rich added, libc6 gone
    copy_dir(&e.path("out"), &e.path("last"));
    std::fs::write(
        e.path("state/packages"),
        "@image-matrix-packages 1\n@os ubuntu\t22.04\n@dpkg\nii \tbash\t5.1-6ubuntu1\tamd64\n\
@pip 3.11.2\njupyterlab\t4.2.5\tpip\tBSD License\nnumpy\t2.0.1\tpip\tBSD License\n\
rich\t13.7.1\tpip\tMIT\n@end\n",
    )
    .unwrap();
    let (code, err) = e.run(&["-j", "1", "--filter", "python=3.11", "--force"]);
    assert_eq!(code, 0, "{err}");
    let out = e
        .matrix(&[
            "report",
            "out/manifest.json",
            "--previous",
            "last/manifest.json",
            "--format",
            "markdown",
        ])
        .output()
        .unwrap();
    let md = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(md.contains("### Package changes (from the SBOMs)"), "{md}");
    assert!(
        md.contains("  - upgraded (1): pip numpy 1.26.4 → 2.0.1"),
        "{md}"
    );
    assert!(md.contains("  - added (1): pip rich 13.7.1"), "{md}");
    assert!(
        md.contains("  - removed (1): dpkg libc6 2.35-0ubuntu3.8"),
        "{md}"
    );
    let out = e
        .matrix(&[
            "report",
            "out/manifest.json",
            "--previous",
            "last/manifest.json",
        ])
        .output()
        .unwrap();
    let html = String::from_utf8_lossy(&out.stdout);
    assert!(
        html.contains("upgraded (1): pip numpy 1.26.4 → 2.0.1"),
        "{html}"
    );
    // compared with itself (the same files): nothing changed
    let out = e
        .matrix(&[
            "report",
            "out/manifest.json",
            "--previous",
            "out/manifest.json",
            "--format",
            "markdown",
        ])
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&out.stdout).contains("No package changed."));
}

/// A listing that fails leaves the cell accepted, with the reason in its record.
#[test]
fn an_sbom_that_cannot_be_listed_fails_no_cell() {
    let e = Env::new(31091);
    std::fs::write(e.path("state/packages-fail"), "").unwrap();
    let (code, err) = e.run(&["-j", "1", "--filter", "python=3.11"]);
    assert_eq!(code, 0, "{err}");
    assert!(err.contains("no SBOM"), "{err}");
    let m = e.manifest();
    let rec = &common::cell(&m, C)["sbom"];
    assert!(rec.get("path").is_none(), "{rec}");
    assert!(
        rec["notes"][0].as_str().unwrap().contains("no /bin/sh"),
        "{rec}"
    );
    assert_eq!(e.status(C), "built");
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), target).unwrap();
        }
    }
}

/// The regular files of a tar: path → (bytes, executable).
fn tar_files(bytes: &[u8]) -> std::collections::BTreeMap<String, (Vec<u8>, bool)> {
    let mut out = std::collections::BTreeMap::new();
    let mut a = tar::Archive::new(bytes);
    for entry in a.entries().unwrap() {
        let mut entry = entry.unwrap();
        if entry.header().entry_type() != tar::EntryType::Regular {
            continue;
        }
        let path = entry.path().unwrap().display().to_string();
        let x = entry.header().mode().unwrap() & 0o111 != 0;
        let mut data = Vec::new();
        std::io::Read::read_to_end(&mut entry, &mut data).unwrap();
        out.insert(path, (data, x));
    }
    out
}

/// The regular files under a folder, as [`tar_files`] has them.
fn folder_files(dir: &Path) -> std::collections::BTreeMap<String, (Vec<u8>, bool)> {
    use std::os::unix::fs::PermissionsExt;
    fn walk(root: &Path, d: &Path, out: &mut std::collections::BTreeMap<String, (Vec<u8>, bool)>) {
        for e in std::fs::read_dir(d).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                walk(root, &p, out);
            } else {
                let mode = std::fs::metadata(&p).unwrap().permissions().mode();
                let rel = p.strip_prefix(root).unwrap().display().to_string();
                out.insert(rel, (std::fs::read(&p).unwrap(), mode & 0o111 != 0));
            }
        }
    }
    let mut out = std::collections::BTreeMap::new();
    walk(dir, dir, &mut out);
    out
}

const CA: &str = "-----BEGIN CERTIFICATE-----\nMIIBfake\n-----END CERTIFICATE-----\n";

/// Issue 27 item 11: a build reads its context as a tar on stdin (the fake docker
/// takes no folder, and checks the tar holds a Dockerfile and the cell's own
/// cell.json); nothing is written under `contexts/` for a cell that builds or is up to
/// date; a failed cell's reproduce folder exists when its line is printed and holds
/// exactly the files, bytes and modes the build received; the extra CA bundle is in it.
#[test]
fn builds_read_their_context_on_stdin_and_only_a_failure_writes_a_folder() {
    let e = Env::with_matrix(31030, &format!("{MATRIX}sources:\n  ca_bundle: ca.pem\n"));
    std::fs::write(e.path("ca.pem"), CA).unwrap();
    e.mode(B, "fail");
    let (code, err) = e.run(&["-j", "2"]);
    assert_eq!(code, 1, "{err}");
    let calls = e.calls();
    let builds: Vec<&str> = calls
        .lines()
        .filter(|l| l.starts_with("build ") && !l.contains(" --quiet "))
        .collect();
    // the three cells and their shared OS stage
    assert_eq!(builds.len(), 4, "{calls}");
    assert!(builds.iter().all(|l| l.ends_with(" -")), "{calls}");
    for id in [A, B, C] {
        let tar = std::fs::read(e.path(&format!("state/context-{id}.tar"))).unwrap();
        let files = tar_files(&tar);
        assert!(files.contains_key("Dockerfile"), "{:?}", files.keys());
        for stage in ["system", "conda", "variant"] {
            assert_eq!(files[&format!("{stage}/extra-ca.pem")].0, CA.as_bytes());
        }
        assert!(files["image/init/bin/healthcheck"].1, "executable");
        assert!(!files["cell.json"].1);
    }
    let contexts = e.path("out/contexts");
    let listed = |dir: &Path| -> Vec<String> {
        let mut v: Vec<String> = std::fs::read_dir(dir)
            .unwrap()
            .map(|d| d.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        v.sort();
        v
    };
    assert_eq!(listed(&contexts), [B], "only the failed cell has a folder");
    assert!(
        err.contains(&format!("reproduce: cd out/contexts/{B} && ")) && err.contains(" ."),
        "{err}"
    );
    let streamed = tar_files(&std::fs::read(e.path(&format!("state/context-{B}.tar"))).unwrap());
    assert_eq!(folder_files(&contexts.join(B)), streamed);
    let log = std::fs::read_to_string(e.path(&format!("out/logs/{B}.log"))).unwrap();
    assert!(log.contains("--iidfile") && log.contains(" -\n"), "{log}");

    // the next night: A and C are up to date (no build, no context), B builds again
    e.mode(B, "ok");
    std::fs::write(e.path("state/calls"), "").unwrap();
    std::fs::write(e.path("state/contexts"), "").unwrap();
    let (code, err) = e.run(&["-j", "2"]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(
        (e.status(A), e.status(B), e.status(C)),
        ("up-to-date".into(), "built".into(), "up-to-date".into())
    );
    let sent = std::fs::read_to_string(e.path("state/contexts")).unwrap();
    assert_eq!(sent.lines().collect::<Vec<_>>(), [B], "{sent}");
    // last night's reproduce folder went before B was built; none was made since
    assert!(listed(&contexts).is_empty(), "{:?}", listed(&contexts));
}

/// Cancelling a build whose client has not read its context (the writer blocked on a
/// full pipe: 3 MB of CA bundles) ends the run at once and kills the build; the tool's
/// writer does not hold it up.
#[test]
fn ctrl_c_kills_a_build_that_is_still_being_sent_its_context() {
    let e = Env::with_matrix(31031, &format!("{MATRIX}sources:\n  ca_bundle: ca.pem\n"));
    let big = format!("{CA}{}\n", "#".repeat(1 << 20));
    std::fs::write(e.path("ca.pem"), big).unwrap();
    e.mode(A, "hang-unread");
    let mut child = e
        .cmd(&["-j", "1", "--kill-grace", "1s", "--filter", "python=3.9"])
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    while e.leftovers().is_empty() {
        assert!(Instant::now() < deadline, "the build did not start");
        std::thread::sleep(Duration::from_millis(50));
    }
    let t = Instant::now();
    // SAFETY: plain kill(2) on our own child.
    unsafe {
        libc::kill(child.id() as i32, libc::SIGINT);
    }
    let status = child.wait().unwrap();
    assert_eq!(status.code(), Some(130));
    assert!(
        t.elapsed() < Duration::from_secs(10),
        "took {:?}",
        t.elapsed()
    );
    assert_eq!(e.status(A), "cancelled");
    assert!(
        e.leftovers().is_empty(),
        "left running: {:?}",
        e.leftovers()
    );
    assert!(!e.path(&format!("state/context-{A}.tar")).exists());
}

/// A tree of families night after night: a changed family's layer rebuilds its images
/// and their descendants and nothing else. `plan --diff` names them, and the next
/// build runs exactly those `docker build`s, each child after its parent.
#[test]
fn a_changed_family_rebuilds_its_images_and_their_descendants_only() {
    let yaml = |vision_pip: &str| {
        format!("version: 1\nbases: [ubuntu:22.04]\npython: [\"3.11\"]\nfamilies:\n  - {{name: vision, pip: [\"{vision_pip}\"]}}\n  - {{name: serve, parent: vision, pip: [\"uvicorn==0.32.1\"]}}\n  - {{name: other, pip: [\"six==1.17.0\"]}}\n")
    };
    let e = Env::with_matrix(31095, &yaml("pillow==11.0.0"));
    let (code, err) = e.run(&["-j", "2"]);
    assert_eq!(code, 0, "{err}");
    let m = e.manifest();
    let ids: Vec<&str> = m["cells"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["id"].as_str().unwrap())
        .collect();
    let root = "py3.11-ubuntu22.04-amd64";
    assert_eq!(
        ids,
        [
            root.to_string(),
            format!("{root}-vision"),
            format!("{root}-vision-serve"),
            format!("{root}-other")
        ]
    );
    std::fs::write(e.path("matrix.yaml"), yaml("pillow==11.1.0")).unwrap();
    let diff = e.plan_diff();
    let changed: Vec<&str> = diff
        .lines()
        .filter(|l| l.contains(" changed "))
        .filter_map(|l| l.split_whitespace().next())
        .collect();
    assert_eq!(
        changed,
        [format!("{root}-vision"), format!("{root}-vision-serve")],
        "{diff}"
    );
    assert!(
        diff.contains(&format!("the image it builds on ({root}-vision) changed")),
        "{diff}"
    );
    std::fs::write(e.path("state/calls"), "").unwrap();
    let (code, err) = e.run(&["-j", "2"]);
    assert_eq!(code, 0, "{err}");
    let builds: Vec<String> = e
        .calls()
        .lines()
        .filter(|l| l.starts_with("build ") || l.starts_with("buildx build "))
        // not the labelling builds that write the versions on after
        .filter(|l| !l.contains(" --quiet "))
        .map(str::to_string)
        .collect();
    assert_eq!(builds.len(), 2, "{builds:?}");
    assert!(
        builds[0].contains("candidate-py3.11-ubuntu22.04-amd64-vision "),
        "{builds:?}"
    );
    let after = e.manifest();
    let status = |id: &str| {
        after["cells"]
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["id"] == id)
            .unwrap()["status"]
            .as_str()
            .unwrap()
            .to_string()
    };
    assert_eq!(status(root), "up-to-date");
    assert_eq!(status(&format!("{root}-other")), "up-to-date");
    assert_eq!(status(&format!("{root}-vision")), "built");
    assert_eq!(status(&format!("{root}-vision-serve")), "built");
}

/// The host's download cache: refused without the host's network (the builds could
/// not reach it); with it, every context is sent routed through it while the cells'
/// identities stay those of the rendered contexts, and its account is written.
#[test]
fn the_download_cache_routes_what_is_sent_and_changes_no_identity() {
    let e = Env::new(31031);
    let cache = e.path("cache");
    let cache_arg = cache.to_str().unwrap();
    let (code, err) = e.run(&["--download-cache", cache_arg]);
    assert_eq!(code, 4, "{err}");
    assert!(err.contains("add --network host"), "{err}");
    assert!(!e.path("out/manifest.json").exists());

    let (code, err) = e.run(&["--network", "host"]);
    assert_eq!(code, 0, "{err}");
    let plain = e.manifest();
    let dockerfile = |id: &str| {
        let out = std::process::Command::new("tar")
            .arg("-xOf")
            .arg(e.path(&format!("state/context-{id}.tar")))
            .args(["Dockerfile", "conda/mirrors.txt"])
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    assert!(!dockerfile(A).contains("PIP_INDEX_URL"));

    let (code, err) = e.run(&[
        "--network",
        "host",
        "--force",
        "--download-cache",
        cache_arg,
        "--download-cache-port",
        "0",
    ]);
    assert_eq!(code, 0, "{err}");
    assert!(err.contains("download cache: 0 file(s) fetched"), "{err}");
    let sent = dockerfile(A);
    assert!(sent.contains("PIP_INDEX_URL=http://127.0.0.1:"), "{sent}");
    assert!(sent.contains("/installer/"), "{sent}");
    let routed = e.manifest();
    for (a, b) in plain["cells"]
        .as_array()
        .unwrap()
        .iter()
        .zip(routed["cells"].as_array().unwrap())
    {
        assert_eq!(b["status"], "built");
        assert_eq!(a["input_hash"], b["input_hash"], "{a} {b}");
    }
    let dl: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(e.path("out/downloads.json")).unwrap())
            .unwrap();
    assert_eq!(dl["fetched"].as_array().unwrap().len(), 0, "{dl}");
    assert!(cache.join("installers").is_dir());
}
