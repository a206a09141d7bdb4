//! `matrix build --progress json` against the fake docker: every line of stdout is
//! one event that validates against `schemas/events.schema.json`, nothing else is on
//! stdout, and the stream keeps its promises (opens with `run-started`, one
//! `finished` per listed cell, closes with `run-finished` carrying the exit code).
//! Across the runs here every kind of event the schema names is produced at least
//! once, so an event added to the schema without a test fails here.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::Stdio;

use common::fake::Env;
use serde_json::Value;

fn schema() -> Value {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("schemas/events.schema.json");
    let text = std::fs::read_to_string(&path).expect("schemas/events.schema.json");
    serde_json::from_str(&text).expect("the schema is JSON")
}

/// Every line of `stdout` as an event, each validated against the schema.
fn events(stdout: &str) -> Vec<Value> {
    let schema = schema();
    let validator = jsonschema::options()
        .should_validate_formats(true)
        .build(&schema)
        .expect("the schema compiles");
    let mut out = Vec::new();
    for (n, line) in stdout.lines().enumerate() {
        let v: Value = serde_json::from_str(line)
            .unwrap_or_else(|e| panic!("stdout line {} is not JSON ({e}): {line}", n + 1));
        let errors: Vec<String> = validator
            .iter_errors(&v)
            .map(|e| format!("{e} (at {})", e.instance_path()))
            .collect();
        assert!(
            errors.is_empty(),
            "stdout line {} does not match the schema:\n{line}\n{errors:#?}",
            n + 1
        );
        out.push(v);
    }
    out
}

/// The promises of the stream, whatever happened in the run.
fn check_stream(ev: &[Value], exit_code: i32) {
    assert!(ev.len() >= 2, "{ev:#?}");
    assert_eq!(ev[0]["event"], "run-started", "{}", ev[0]);
    let last = &ev[ev.len() - 1];
    assert_eq!(last["event"], "run-finished", "{last}");
    assert_eq!(last["exit_code"], exit_code, "{last}");
    assert_eq!(ev.iter().filter(|e| e["event"] == "run-started").count(), 1);
    let listed: BTreeSet<&str> = ev[0]["cells"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["id"].as_str().unwrap())
        .collect();
    let mut finished: BTreeMap<&str, usize> = BTreeMap::new();
    for e in ev
        .iter()
        .filter(|e| e["event"] == "finished" && e["job"] == "cell")
    {
        *finished.entry(e["id"].as_str().unwrap()).or_default() += 1;
    }
    assert_eq!(
        finished.keys().copied().collect::<BTreeSet<_>>(),
        listed,
        "every listed cell finishes"
    );
    assert!(
        finished.values().all(|n| *n == 1),
        "one finished per cell: {finished:?}"
    );
    let elapsed: Vec<f64> = ev
        .iter()
        .map(|e| e["elapsed_seconds"].as_f64().unwrap())
        .collect();
    assert!(
        elapsed.windows(2).all(|w| w[0] <= w[1]),
        "events in time order: {elapsed:?}"
    );
    // the counts add up to the cells listed plus those excluded
    let counted: u64 = last["counts"]
        .as_object()
        .unwrap()
        .values()
        .map(|n| n.as_u64().unwrap())
        .sum();
    let excluded = ev[0]["excluded"].as_array().unwrap().len();
    assert_eq!(counted as usize, listed.len() + excluded, "{last}");
}

fn run(e: &Env, args: &[&str]) -> (i32, Vec<Value>, String) {
    let out = e.cmd(args).output().unwrap();
    let code = out.status.code().unwrap_or(-1);
    let stdout = String::from_utf8(out.stdout).expect("utf-8 stdout");
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    let ev = events(&stdout);
    check_stream(&ev, code);
    (code, ev, stderr)
}

fn kinds(ev: &[Value]) -> BTreeSet<String> {
    ev.iter()
        .map(|e| e["event"].as_str().unwrap().to_string())
        .collect()
}

fn the(ev: &[Value], kind: &str, id: &str) -> Value {
    ev.iter()
        .find(|e| e["event"] == kind && e["id"] == id)
        .unwrap_or_else(|| panic!("no {kind} event for {id}"))
        .clone()
}

const FAILS: &str = "py3.10-ubuntu22.04-amd64";
const FLAKY: &str = "py3.11-ubuntu22.04-amd64";

/// A failure, a retry, an exclusion, a shared stage and a verification.
fn one_engine_with_failures() -> (i32, Vec<Value>, String) {
    let e = Env::new(31501);
    std::fs::write(
        e.path("matrix.yaml"),
        "version: 1\nbases: [ubuntu:22.04]\npython: [\"3.9\", \"3.10\", \"3.11\"]\nexclude:\n  - {python: \"3.9\", reason: \"too old\"}\n",
    )
    .unwrap();
    e.mode(FAILS, "fail");
    e.mode(FLAKY, "transient-once");
    run(&e, &["--progress", "json", "--retries", "1", "--verify"])
}

/// Two engines, one dying under a build; then a push.
fn two_engines_one_lost() -> (i32, Vec<Value>, String) {
    let e = Env::new(31502);
    std::fs::write(
        e.path("matrix.yaml"),
        "version: 1\nimage:\n  aliases: [\"{tag}-nightly\"]\nbases: [ubuntu:22.04, ubuntu:24.04]\npython: [\"3.10\", \"3.11\"]\n",
    )
    .unwrap();
    e.mode("py3.10-ubuntu24.04-amd64", "kill-engine-once");
    run(
        &e,
        &[
            "--progress",
            "json",
            "--push",
            "--keep",
            "1",
            "--engine",
            "fa=unix:///fake/fa.sock,jobs=1",
            "--engine",
            "fb=unix:///fake/fb.sock,jobs=1",
        ],
    )
}

/// One tag group of two platforms (arm64 emulated on an engine of its own) pushed:
/// its image index.
fn a_tag_group_pushed() -> (i32, Vec<Value>, String) {
    let e = Env::new(31503);
    std::fs::write(
        e.path("matrix.yaml"),
        "version: 1\nbases: [ubuntu:22.04]\npython: [\"3.11\"]\nplatforms: [linux/amd64, linux/arm64]\n",
    )
    .unwrap();
    std::fs::create_dir_all(e.path("binfmt")).unwrap();
    std::fs::write(
        e.path("binfmt/qemu-aarch64"),
        "enabled\ninterpreter /usr/libexec/qemu-binfmt/aarch64-binfmt-P\nflags: PF\noffset 0\n",
    )
    .unwrap();
    std::fs::write(e.path("state/arm-platform-ubuntu_22.04"), "linux/arm64").unwrap();
    let sock = |n: &str| format!("unix://{}", e.path(&format!("{n}.sock")).display());
    let amd = format!("amd={}", sock("amd"));
    let arm = format!("arm={},platform=linux/arm64", sock("arm"));
    run(
        &e,
        &[
            "--progress",
            "json",
            "--push",
            "-j",
            "1",
            "--engine",
            &amd,
            "--engine",
            &arm,
        ],
    )
}

#[test]
fn every_event_kind_of_the_schema_is_produced_and_valid() {
    let (code, a, err) = one_engine_with_failures();
    assert_eq!(code, 1, "{err}");
    let f = the(&a, "finished", FAILS);
    assert_eq!(f["status"], "failed");
    assert_eq!(f["exit_code"], 3);
    assert!(f["reproduce"].as_str().unwrap().contains(" build "), "{f}");
    assert!(
        f["tail"]
            .as_array()
            .unwrap()
            .iter()
            .any(|l| l == "E: something broke"),
        "{f}"
    );
    let r = the(&a, "retrying", FLAKY);
    assert_eq!(r["attempt"], 2);
    assert_eq!(the(&a, "finished", FLAKY)["status"], "built");
    let v = the(&a, "verified", FLAKY);
    assert_eq!(v["ok"], false, "the fake docker runs no container: {v}");
    assert_eq!(a[0]["excluded"][0]["reason"], "too old", "{}", a[0]);
    assert!(
        a.iter()
            .any(|e| e["event"] == "finished" && e["job"] == "stage" && e["status"] == "built"),
        "a shared stage that built says so"
    );
    // people still get the failure and the summary on stderr
    assert!(
        err.contains("finished py3.10-ubuntu22.04-amd64 failed"),
        "{err}"
    );
    assert!(err.contains("manifest: out/manifest.json"), "{err}");

    let (code, b, err) = two_engines_one_lost();
    assert_eq!(code, 0, "{err}");
    let down = b.iter().find(|e| e["event"] == "engine-down").unwrap();
    assert_eq!(down["engines_left"], 1);
    let rq = the(&b, "requeued", "py3.10-ubuntu24.04-amd64");
    assert_eq!(rq["from"], down["engine"]);
    let pushed: Vec<&Value> = b.iter().filter(|e| e["event"] == "pushed").collect();
    assert_eq!(pushed.len(), 8, "4 cells × (tag + alias)");
    assert!(pushed
        .iter()
        .all(|p| p["ok"] == true && p["digest"].is_string()));

    // acceptance and promotion are events too: the tags and the alias of every cell
    let accepting = b.iter().find(|e| e["event"] == "accepting").unwrap();
    assert_eq!(accepting["images"], 4, "{accepting}");
    assert_eq!(accepting["verify"], false);
    let promoted = b.iter().filter(|e| e["event"] == "promoted").count();
    assert_eq!(promoted, 8, "4 cells × (tag + alias)");
    // with --verify, each verification is announced (the fake's fail: nothing moves)
    assert!(
        a.iter()
            .any(|e| e["event"] == "note" && e["id"] == FLAKY && e["level"] == "info"),
        "a verification starting is a note"
    );
    assert!(!a.iter().any(|e| e["event"] == "promoted"));

    // --keep 1: each engine pruned, after the record and before the end; the engine
    // lost mid-run cannot be, and says why
    let pruned: Vec<&Value> = b.iter().filter(|e| e["event"] == "pruned").collect();
    assert_eq!(pruned.len(), 2, "one per engine: {pruned:?}");
    let up = pruned
        .iter()
        .find(|p| p["engine"] != down["engine"])
        .unwrap();
    assert!(
        up["ok"] == true && up["kept"].is_number() && up["freed_bytes"].is_number(),
        "{up}"
    );
    let lost = pruned
        .iter()
        .find(|p| p["engine"] == down["engine"])
        .unwrap();
    assert!(lost["ok"] == false && lost["error"].is_string(), "{lost}");
    assert_eq!(b.last().unwrap()["event"], "run-finished");

    let (code, c, err) = a_tag_group_pushed();
    assert_eq!(code, 0, "{err}");
    let index: Vec<&Value> = c.iter().filter(|e| e["event"] == "index").collect();
    assert_eq!(index.len(), 1, "one shared tag: {index:?}");
    assert!(
        index[0]["ok"] == true && index[0]["digest"].is_string(),
        "{}",
        index[0]
    );

    let seen: BTreeSet<String> = kinds(&a)
        .union(&kinds(&b))
        .cloned()
        .collect::<BTreeSet<String>>()
        .union(&kinds(&c))
        .cloned()
        .collect();
    let named: BTreeSet<String> = schema()["properties"]["event"]["enum"]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| k.as_str().unwrap().to_string())
        .collect();
    assert_eq!(
        seen, named,
        "every event kind the schema names is produced here"
    );
}

#[test]
fn an_interrupted_run_still_closes_its_stream() {
    let e = Env::new(31503);
    e.mode("py3.9-ubuntu22.04-amd64", "hang");
    let mut child = e
        .cmd(&["--progress", "json", "-j", "1", "--kill-grace", "1s"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut reader = BufReader::new(child.stdout.take().unwrap());
    let mut text = String::new();
    // read until the hanging cell has started, then press Ctrl-C
    loop {
        let mut line = String::new();
        assert!(
            reader.read_line(&mut line).unwrap() > 0,
            "the stream ended before the cell started: {text}"
        );
        text.push_str(&line);
        if line.contains("\"event\":\"started\"") && line.contains("py3.9-") {
            break;
        }
    }
    // SAFETY: plain kill(2) on our own child.
    unsafe {
        libc::kill(child.id() as i32, libc::SIGINT);
    }
    let mut rest = String::new();
    std::io::Read::read_to_string(&mut reader, &mut rest).unwrap();
    text.push_str(&rest);
    let code = child.wait().unwrap().code().unwrap_or(-1);
    assert_eq!(code, 130);
    let ev = events(&text);
    check_stream(&ev, 130);
    let last = ev.last().unwrap();
    assert_eq!(last["outcome"]["result"], "interrupted", "{last}");
    assert_eq!(last["outcome"]["signal"], "SIGINT", "{last}");
    assert_eq!(
        the(&ev, "finished", "py3.9-ubuntu22.04-amd64")["status"],
        "cancelled"
    );
    assert!(e.leftovers().is_empty(), "{:?}", e.leftovers());
}

#[test]
fn quiet_and_progress_cannot_be_given_together() {
    let e = Env::new(31504);
    let out = e.cmd(&["-q", "--progress", "json"]).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("cannot be used with"), "{err}");
}

#[test]
fn the_schema_refuses_what_it_does_not_describe() {
    let validator = jsonschema::options()
        .should_validate_formats(true)
        .build(&schema())
        .unwrap();
    let good = serde_json::json!({
        "schema": "image-matrix.events/1",
        "time": "2026-11-29T07:13:56.954Z",
        "elapsed_seconds": 0.311,
        "event": "engine-down",
        "engine": "fb",
        "reason": "gone",
        "engines_left": 1
    });
    assert!(validator.is_valid(&good));
    let bad = |f: &dyn Fn(&mut Value)| {
        let mut v = good.clone();
        f(&mut v);
        !validator.is_valid(&v)
    };
    assert!(
        bad(&|v| v["schema"] = "image-matrix.events/2".into()),
        "another version"
    );
    assert!(
        bad(&|v| v["time"] = "yesterday".into()),
        "a time that is not RFC 3339"
    );
    assert!(
        bad(&|v| v["extra"] = 1.into()),
        "a key the schema does not list"
    );
    assert!(
        bad(&|v| {
            v.as_object_mut().unwrap().remove("engines_left");
        }),
        "a missing key"
    );
    assert!(
        bad(&|v| v["event"] = "engine-up".into()),
        "an unknown event"
    );
}

#[test]
fn tty_draws_bars_where_stderr_is_a_pipe_and_plain_never_does() {
    let e = Env::new(31505);
    let out = e.cmd(&["--progress", "tty"]).output().unwrap();
    assert_eq!(out.status.code(), Some(0));
    assert!(out.stdout.is_empty(), "progress goes to stderr");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("\x1b[2K") && err.contains("images ["),
        "no bars drawn: {err}"
    );
    let e = Env::new(31506);
    let out = e.cmd(&["--progress", "plain"]).output().unwrap();
    assert_eq!(out.status.code(), Some(0));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!err.contains('\x1b'), "plain lines only: {err:?}");
    assert!(
        err.contains("finished py3.9-ubuntu22.04-amd64 built"),
        "{err}"
    );
}

/// With `--verify`, a cell's verification begins as soon as its build ends, while
/// another cell still builds (it used to wait for every build): its `verifying` note
/// comes before the slow cell's `finished`, and acceptance is announced once.
#[test]
fn verification_overlaps_the_builds_still_running() {
    let e = Env::new(31503);
    std::fs::write(
        e.path("matrix.yaml"),
        "version: 1\nbases: [ubuntu:22.04]\npython: [\"3.10\", \"3.11\"]\n",
    )
    .unwrap();
    e.mode(FAILS, "slow");
    let out = e
        .cmd(&["--progress", "json", "-j", "2", "--verify"])
        .env("FAKE_SLOW", "4")
        .output()
        .unwrap();
    let ev = events(&String::from_utf8(out.stdout).unwrap());
    check_stream(&ev, out.status.code().unwrap_or(-1));
    let at = |pred: &dyn Fn(&Value) -> bool, what: &str| {
        ev.iter()
            .position(pred)
            .unwrap_or_else(|| panic!("no {what}: {ev:?}"))
    };
    let verifying = at(
        &|e| e["event"] == "note" && e["id"] == FLAKY && e["level"] == "info",
        "verifying note of the quick cell",
    );
    let slow_done = at(
        &|e| e["event"] == "finished" && e["id"] == FAILS,
        "finished event of the slow cell",
    );
    assert!(
        verifying < slow_done,
        "the quick cell is verified while the slow one builds: {:?}",
        &ev[verifying.min(slow_done)..=verifying.max(slow_done)]
    );
    let accepting: Vec<&Value> = ev.iter().filter(|e| e["event"] == "accepting").collect();
    assert_eq!(accepting.len(), 1, "{accepting:?}");
    assert_eq!(accepting[0]["images"], 2);
    // both verified (the fake's verification fails: nothing is promoted)
    for id in [FAILS, FLAKY] {
        assert!(
            ev.iter()
                .any(|e| e["event"] == "note" && e["id"] == id && e["level"] == "info"),
            "{id} verified"
        );
    }
}
