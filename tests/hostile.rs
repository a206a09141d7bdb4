//! What a hostile run found (issue 12), each as a process test against the fake
//! docker: device files as outputs, a full disk, SIGHUP, concurrent runs, runs stopped
//! before they start, forged and incomplete manifests, a resumed manifest whose
//! images are gone, an unbounded `-j`, a failing stdout, and the CI clean-up.

mod common;

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::fake::Env;

const A: &str = "py3.9-ubuntu22.04-amd64";
const B: &str = "py3.10-ubuntu22.04-amd64";
const C: &str = "py3.11-ubuntu22.04-amd64";

fn matrix_in(dir: &Path, args: &[&str]) -> std::process::Output {
    common::Matrix::new(dir).args(args).output()
}

fn signal(child: &std::process::Child, sig: i32) {
    // SAFETY: plain kill(2) on our own child.
    unsafe {
        libc::kill(child.id() as i32, sig);
    }
}

/// Wait until `cond` holds (or fail after 20 s).
fn wait_for(what: &str, cond: impl Fn() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn a_device_or_fifo_is_never_replaced_by_the_manifest() {
    use std::os::unix::fs::FileTypeExt;
    let e = Env::new(32001);
    // a null device of our own (the same device as /dev/null), so that a regression
    // clobbers this node and not the machine's /dev/null
    let dev = e.path("null");
    let c = std::ffi::CString::new(dev.to_str().unwrap()).unwrap();
    // SAFETY: mknod reads a valid NUL-terminated path; (1, 3) is the null device.
    let made = unsafe { libc::mknod(c.as_ptr(), libc::S_IFCHR | 0o666, libc::makedev(1, 3)) };
    assert_eq!(made, 0, "cannot make a device node (run as root)");
    let (code, err) = e.run(&["--manifest", "null"]);
    assert_eq!(code, 4, "{err}");
    assert!(
        err.contains("null") && err.contains("not a regular file"),
        "{err}"
    );
    let meta = std::fs::metadata(&dev).unwrap();
    assert!(
        meta.file_type().is_char_device(),
        "the device is still a device"
    );
    let fifo = e.path("fifo");
    let c = std::ffi::CString::new(fifo.to_str().unwrap()).unwrap();
    // SAFETY: mkfifo reads a valid NUL-terminated path.
    assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o644) }, 0);
    let (code, _) = e.run(&["--manifest", "fifo"]);
    assert_eq!(code, 4);
    assert!(std::fs::metadata(&fifo).unwrap().file_type().is_fifo());
    let calls = std::fs::read_to_string(e.path("state/calls")).unwrap_or_default();
    assert!(!calls.contains("build"), "nothing was built: {calls}");
}

/// A small tmpfs, unmounted when dropped.
struct SmallDisk(std::path::PathBuf);

impl SmallDisk {
    fn mount(at: &Path, size: &str) -> SmallDisk {
        // SAFETY: geteuid has no preconditions.
        let root = unsafe { libc::geteuid() } == 0;
        assert!(
            root,
            "this test mounts a small tmpfs to fill it up: run it as root"
        );
        std::fs::create_dir_all(at).unwrap();
        let ok = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(at)
            .status()
            .unwrap()
            .success();
        assert!(ok, "cannot mount a tmpfs at {}", at.display());
        SmallDisk(at.to_path_buf())
    }

    /// Fill it up: write until the disk says no.
    fn fill(&self) {
        use std::io::Write;
        let mut f = std::fs::File::create(self.0.join("filler")).unwrap();
        let block = vec![0u8; 4096];
        while f.write_all(&block).is_ok() {}
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.0).status();
    }
}

#[test]
fn a_manifest_that_cannot_be_written_fails_the_run_and_says_which_is_stale() {
    let e = Env::new(32002);
    let disk = SmallDisk::mount(&e.path("small"), "256k");
    for id in [A, B, C] {
        e.mode(id, "slow");
    }
    let child = e
        .cmd(&["-j", "1", "--manifest", "small/manifest.json"])
        .env("FAKE_SLOW", "1")
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    wait_for("the first manifest", || {
        e.path("small/manifest.json").exists()
    });
    disk.fill();
    let out = child.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(5), "the I/O exit code: {err}");
    let last = err.trim_end().lines().last().unwrap_or_default();
    assert!(
        last.contains("small/manifest.json") && last.contains("stale"),
        "the last line names the stale manifest: {last}"
    );
    // what is on disk is an earlier, complete manifest
    let text = std::fs::read_to_string(e.path("small/manifest.json")).unwrap();
    let m: serde_json::Value = serde_json::from_str(&text).expect("still whole JSON");
    common::schema::check("manifest", &m);
    assert!(m["finished"].is_null());
}

#[test]
fn sighup_stops_the_builds_like_sigterm_and_records_them() {
    let e = Env::new(32003);
    e.mode(A, "hang");
    let child = e
        .cmd(&["-j", "2", "--kill-grace", "1s"])
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    wait_for("the build", || !e.leftovers().is_empty());
    signal(&child, libc::SIGHUP);
    let status = child.wait_with_output().unwrap().status;
    assert_eq!(status.code(), Some(129));
    std::thread::sleep(Duration::from_millis(200));
    assert!(
        e.leftovers().is_empty(),
        "left running: {:?}",
        e.leftovers()
    );
    let m = e.manifest();
    assert_eq!(m["outcome"]["signal"], "SIGHUP");
    assert_eq!(e.status(A), "cancelled");
}

#[test]
fn a_second_run_in_the_same_directory_is_refused_with_the_holders_pid() {
    let e = Env::new(32004);
    e.mode(A, "hang");
    let first = e
        .cmd(&["-j", "1", "--kill-grace", "1s"])
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    wait_for("the first build", || !e.leftovers().is_empty());
    let builds_before = std::fs::read_to_string(e.path("state/calls"))
        .unwrap()
        .matches("build ")
        .count();
    let (code, err) = e.run(&["-j", "1"]);
    assert_eq!(code, 4, "{err}");
    assert!(
        err.contains(&format!("pid {}", first.id())) && err.contains("another --out"),
        "{err}"
    );
    let builds_after = std::fs::read_to_string(e.path("state/calls"))
        .unwrap()
        .matches("build ")
        .count();
    assert_eq!(builds_before, builds_after, "the second run built nothing");
    // another --out works alongside
    let (code, err) = e.run(&["-j", "1", "--filter", "python=3.11", "-o", "out2"]);
    assert_eq!(code, 0, "{err}");
    // …but not into the first one's manifest, nor its log folder (issue 27 item 8)
    for (flag, value, advice) in [
        ("--manifest", "out/manifest.json", "another --manifest"),
        ("--log-dir", "out/logs", "another --log-dir"),
    ] {
        let (code, err) = e.run(&["-j", "1", "-o", "out3", flag, value]);
        assert_eq!(code, 4, "{flag}: {err}");
        assert!(
            err.contains(&format!("pid {}", first.id())) && err.contains(advice),
            "{flag}: {err}"
        );
    }
    signal(&first, libc::SIGTERM);
    let _ = first.wait_with_output();
}

/// Two runs with their own output folders but one manifest, or one log folder given
/// apart from both: the second is refused, naming the first.
#[test]
fn two_runs_never_share_a_manifest_or_a_log_folder() {
    let e = Env::new(32015);
    e.mode(A, "hang");
    let first = e
        .cmd(&[
            "-j",
            "1",
            "--kill-grace",
            "1s",
            "--manifest",
            "shared/manifest.json",
            "--log-dir",
            "shared-logs",
        ])
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    wait_for("the first build", || !e.leftovers().is_empty());
    let (code, err) = e.run(&[
        "-j",
        "1",
        "-o",
        "other",
        "--manifest",
        "shared/manifest.json",
    ]);
    assert_eq!(code, 4, "{err}");
    assert!(
        err.contains(&format!("pid {}", first.id()))
            && err.contains("the manifest shared/manifest.json")
            && err.contains("another --manifest"),
        "{err}"
    );
    let (code, err) = e.run(&["-j", "1", "-o", "other", "--log-dir", "shared-logs"]);
    assert_eq!(code, 4, "{err}");
    assert!(
        err.contains("the log folder shared-logs") && err.contains("another --log-dir"),
        "{err}"
    );
    signal(&first, libc::SIGTERM);
    let _ = first.wait_with_output();
}

#[test]
fn a_run_stopped_before_it_starts_records_an_outcome_and_every_reason() {
    let e = Env::new(32005);
    // the first up-to-date check hangs, so the signal lands before any build starts
    let child = e
        .cmd(&["-j", "1"])
        .env("FAKE_INSPECT_SLEEP", "3")
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    wait_for("the first manifest", || {
        e.path("out/manifest.json").exists()
    });
    signal(&child, libc::SIGINT);
    let status = child.wait_with_output().unwrap().status;
    assert_eq!(status.code(), Some(130));
    let m = e.manifest();
    assert_eq!(m["outcome"]["result"], "interrupted");
    for c in m["cells"].as_array().unwrap() {
        assert_eq!(c["status"], "not-started", "{c}");
        assert_eq!(c["reason"], "interrupted by SIGINT", "{c}");
    }
}

#[test]
fn push_refuses_forged_tags_before_pushing_anything() {
    let e = Env::new(32006);
    let (code, _) = e.run(&["-j", "1"]);
    assert_eq!(code, 0);
    let mut m = e.manifest();
    for (i, bad) in [
        "evil.example:5000/steal:1",
        "--all-tags",
        "miniconda:Bad Tag With Spaces",
    ]
    .iter()
    .enumerate()
    {
        let mut forged = m.clone();
        forged["cells"][i]["tags"] = serde_json::json!([bad]);
        std::fs::write(e.path("out/manifest.json"), forged.to_string()).unwrap();
        std::fs::write(e.path("state/calls"), "").unwrap();
        let (code, err) = e.push(&[]);
        assert_eq!(code, 1, "{bad}: {err}");
        assert!(
            err.contains("refusing") || err.contains("not a"),
            "{bad}: {err}"
        );
        let calls = e.calls();
        assert!(!calls.contains("push"), "{bad}: pushed {calls}");
    }
    m["cells"][0]["tags"] = serde_json::json!(["miniconda:ok-tag"]);
    std::fs::write(e.path("out/manifest.json"), m.to_string()).unwrap();
    let (code, err) = e.push(&[]);
    assert_eq!(code, 0, "a valid tag of the repository is published: {err}");
}

/// Issue 27 item 2: the image a push publishes is the one the run built (an image ID
/// whose input-hash label is the record's), never a name the manifest gives.
#[test]
fn push_refuses_a_forged_image_and_tags_nothing() {
    let e = Env::new(32013);
    let (code, _) = e.run(&["-j", "1"]);
    assert_eq!(code, 0);
    let m = e.manifest();
    let built = m["cells"][0]["image_id"].as_str().unwrap().to_string();
    // a real image on the engine: another cell's
    let other = m["cells"][1]["image_id"].as_str().unwrap().to_string();
    assert_ne!(built, other);
    for forged in ["debian:12", "--help", other.as_str()] {
        let mut f = m.clone();
        f["cells"][0]["image_id"] = serde_json::json!(forged);
        std::fs::write(e.path("out/manifest.json"), f.to_string()).unwrap();
        std::fs::write(e.path("state/calls"), "").unwrap();
        let (code, err) = e.push(&[]);
        assert_eq!(code, 1, "{forged}: {err}");
        assert!(
            err.contains("refusing to push it") && err.contains("publishing nothing"),
            "{forged}: {err}"
        );
        let calls = e.calls();
        assert!(
            !calls
                .lines()
                .any(|l| l.starts_with("tag ") || l.starts_with("push ")),
            "{forged}: {calls}"
        );
    }
    let mut f = m.clone();
    f["cells"][0]["image_id"] = serde_json::json!(built);
    std::fs::write(e.path("out/manifest.json"), f.to_string()).unwrap();
    let (code, err) = e.push(&[]);
    assert_eq!(code, 0, "the image it built is published: {err}");
}

/// Issue 27 item 10: the staging folders a killed run left among the contexts go with
/// the next run; a context (a failed cell's reproduce folder) and a hidden file of
/// another shape stay.
#[test]
fn staging_folders_a_killed_run_left_are_removed_by_the_next() {
    let e = Env::new(32014);
    let (code, _) = e.run(&["-j", "1", "--filter", "python=3.9"]);
    assert_eq!(code, 0);
    let contexts = e.path("out/contexts");
    e.mode(A, "fail");
    for left in [
        ".py3.9-ubuntu22.04-amd64.a1B2c3",
        ".py3.10-ubuntu22.04-amd64.ZZ9x0q",
    ] {
        std::fs::create_dir_all(contexts.join(left).join("conda")).unwrap();
        std::fs::write(contexts.join(left).join("Dockerfile"), "FROM x\n").unwrap();
    }
    std::fs::write(contexts.join(".keep"), "").unwrap();
    let (code, err) = e.run(&["-j", "1", "--filter", "python=3.9", "--force"]);
    assert_eq!(code, 1, "{err}");
    let mut left: Vec<String> = std::fs::read_dir(&contexts)
        .unwrap()
        .map(|d| d.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    left.sort();
    assert_eq!(left, [".keep", "py3.9-ubuntu22.04-amd64"]);
}

/// Issue 27 item 1: the log a failed cell's record names is read only from the run's
/// log folder, as a regular file, bounded: a forged manifest cannot put another file
/// (nor the environment) into the report, nor make it read for ever or hang.
#[test]
fn a_report_reads_no_log_outside_the_runs_log_folder() {
    let e = Env::new(32016);
    e.mode(A, "fail");
    let (code, _) = e.run(&["-j", "1"]);
    assert_eq!(code, 1);
    let m = e.manifest();
    let i = m["cells"]
        .as_array()
        .unwrap()
        .iter()
        .position(|c| c["id"] == A)
        .unwrap();
    let fifo = e.path("out/logs/fifo.log");
    let c = std::ffi::CString::new(fifo.to_str().unwrap()).unwrap();
    // SAFETY: mkfifo on a path the test owns.
    assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
    for forged in [
        "/etc/passwd",
        "/proc/self/environ",
        "/dev/zero",
        fifo.to_str().unwrap(),
    ] {
        let mut f = m.clone();
        f["cells"][i]["log"] = serde_json::json!(forged);
        std::fs::write(e.path("out/manifest.json"), f.to_string()).unwrap();
        let t = Instant::now();
        let out = e
            .matrix(&["report", "out/manifest.json"])
            .env("CI_REGISTRY_PASSWORD", "s3cret-in-the-environment")
            .output()
            .unwrap();
        assert!(
            t.elapsed() < Duration::from_secs(10),
            "{forged}: {:?}",
            t.elapsed()
        );
        assert_eq!(out.status.code(), Some(0), "{forged}");
        let html = String::from_utf8_lossy(&out.stdout);
        assert!(
            !html.contains("root:"),
            "{forged}: /etc/passwd in the report"
        );
        assert!(
            !html.contains("s3cret"),
            "{forged}: the environment in the report"
        );
        assert!(html.len() < 2_000_000, "{forged}: {} bytes", html.len());
    }
    // the run's own log is shown
    std::fs::write(e.path("out/manifest.json"), m.to_string()).unwrap();
    let out = e.matrix(&["report", "out/manifest.json"]).output().unwrap();
    let html = String::from_utf8_lossy(&out.stdout);
    assert!(
        html.contains("E: something broke"),
        "the failure's own log: {html}"
    );
}

/// Issue 27 item 3: a target a forged manifest gives an engine passes the checks an
/// --engine flag would, before any docker call; the user can re-point the name.
#[test]
fn push_refuses_an_engine_target_the_flags_would_refuse() {
    let e = Env::new(32017);
    let (code, _) = e.run(&["-j", "1", "--filter", "python=3.9"]);
    assert_eq!(code, 0);
    let m = e.manifest();
    let name = m["engines"][0]["name"].as_str().unwrap().to_string();
    let mut f = m.clone();
    f["engines"][0]["target"] =
        serde_json::json!({"host": "ssh://-oProxyCommand=touch${IFS}pwned"});
    std::fs::write(e.path("out/manifest.json"), f.to_string()).unwrap();
    std::fs::write(e.path("state/calls"), "").unwrap();
    let (code, err) = e.push(&[]);
    assert_eq!(code, 2, "{err}");
    assert!(
        err.contains(&format!("the manifest's engine {name}"))
            && err.contains("may not start with `-`"),
        "{err}"
    );
    assert_eq!(e.calls(), "", "no docker call at all");
    // re-pointed, it is this engine again
    let (code, err) = e.push(&["--engine", &format!("{name}=unix:///fake/default.sock")]);
    assert_eq!(code, 0, "{err}");
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

/// Issue 27 item 3: a well-formed target a forged manifest gives an engine is not
/// trusted either. A push (and so the registry credentials) goes to no daemon the user
/// did not name: the manifest's engine must be re-pointed with --engine, or declared
/// with that target by the matrix the manifest was built from. Refused before any
/// docker call, and the error names the manifest, the engine, its target and the fix.
#[test]
fn push_refuses_an_engine_target_nothing_vouches_for_before_any_docker_call() {
    let e = Env::new(32019);
    let (code, _) = e.run(&["-j", "1", "--filter", "python=3.9"]);
    assert_eq!(code, 0);
    let m = e.manifest();
    assert_eq!(m["engines"][0]["name"], "default");
    assert_eq!(m["engines"][0]["target"], "default");
    let forge = |target: &str| {
        let mut f = m.clone();
        f["engines"][0]["target"] = serde_json::json!({ "host": target });
        std::fs::write(e.path("out/manifest.json"), f.to_string()).unwrap();
        std::fs::write(e.path("state/calls"), "").unwrap();
        std::fs::write(e.path("state/calls-by-engine"), "").unwrap();
    };
    forge("tcp://attacker.example:2375");
    let (code, err) = e.push(&[]);
    assert_eq!(code, 4, "{err}");
    assert!(
        err.contains("out/manifest.json records engine default at tcp://attacker.example:2375")
            && err.contains("matrix.yaml declares no engine default")
            && err.contains("nothing was contacted")
            && err.contains("--engine default=TARGET"),
        "{err}"
    );
    assert_eq!(e.calls(), "", "no docker call at all");
    // verify and prune read a manifest's engines the same way
    for cmd in [
        &["verify", "--manifest", "out/manifest.json"][..],
        &["prune", "--keep", "1", "--manifest", "out/manifest.json"],
    ] {
        let out = e.matrix(cmd).output().unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(4), "{cmd:?}: {err}");
        assert!(err.contains("nothing was contacted"), "{cmd:?}: {err}");
        assert_eq!(e.calls(), "", "{cmd:?}: no docker call at all");
    }
    // a password in the forged target is not repeated
    forge("ssh://ci:s3cret@attacker.example");
    let (code, err) = e.push(&[]);
    assert_eq!(code, 4, "{err}");
    assert!(!err.contains("s3cret"), "{err}");
    assert!(err.contains("ssh://ci:***@attacker.example"), "{err}");
    assert_eq!(e.calls(), "");
    // the user says where the images really are: the push goes there
    forge("tcp://attacker.example:2375");
    let (code, err) = e.push(&["--engine", "default=unix:///fake/default.sock"]);
    assert_eq!(code, 0, "{err}");
    let pushes: Vec<(String, String)> = calls_by_engine(&e)
        .into_iter()
        .filter(|(_, a)| a.starts_with("push "))
        .collect();
    assert!(!pushes.is_empty());
    assert!(pushes.iter().all(|(en, _)| en == "default"), "{pushes:?}");
}

/// Issue 27 item 3: the matrix vouches for the engine targets it declares, name and
/// target alike, when it is the matrix the manifest was built from (by SHA256); `-f`
/// names another file to check against.
#[test]
fn the_matrix_a_manifest_was_built_from_vouches_for_the_engines_it_declares() {
    let yaml = format!(
        "{}engines:\n  - name: fa\n    host: unix:///fake/fa.sock\n",
        common::fake::MATRIX
    );
    let e = Env::with_matrix(32020, &yaml);
    let (code, err) = e.run(&["-j", "1", "--filter", "python=3.9"]);
    assert_eq!(code, 0, "{err}");
    let m = e.manifest();
    assert_eq!(m["engines"][0]["name"], "fa");
    // declared by the matrix: accepted, pushed from there
    let (code, err) = e.push(&[]);
    assert_eq!(code, 0, "{err}");
    assert!(calls_by_engine(&e)
        .iter()
        .any(|(en, a)| en == "fa" && a.starts_with("push ")));
    // the name alone is not enough: the target must be the declared one
    let mut f = m.clone();
    f["engines"][0]["target"] = serde_json::json!({"host": "tcp://attacker.example:2375"});
    std::fs::write(e.path("out/manifest.json"), f.to_string()).unwrap();
    std::fs::write(e.path("state/calls"), "").unwrap();
    let (code, err) = e.push(&[]);
    assert_eq!(code, 4, "{err}");
    assert!(
        err.contains("engine fa at tcp://attacker.example:2375")
            && err.contains("matrix.yaml declares engine fa at unix:///fake/fa.sock"),
        "{err}"
    );
    assert_eq!(e.calls(), "");
    // a matrix changed since the build vouches for nothing, and says why
    std::fs::write(e.path("out/manifest.json"), m.to_string()).unwrap();
    std::fs::copy(e.path("matrix.yaml"), e.path("built.yaml")).unwrap();
    std::fs::write(e.path("matrix.yaml"), format!("{yaml}# edited\n")).unwrap();
    let (code, err) = e.push(&[]);
    assert_eq!(code, 4, "{err}");
    assert!(
        err.contains("engine fa at unix:///fake/fa.sock")
            && err.contains("matrix.yaml is not the matrix the manifest was built from")
            && err.contains("-f/--matrix"),
        "{err}"
    );
    assert_eq!(e.calls(), "");
    // the one it was built from, given with -f: accepted
    let (code, err) = e.push(&["-f", "built.yaml"]);
    assert_eq!(code, 0, "{err}");
}

/// Issue 27 item 7: text from a matrix reaches the terminal escaped, never obeyed: an
/// exclusion's reason with a clipboard write (OSC 52) and a carriage return, a pip entry
/// that clears the screen.
#[test]
fn control_characters_in_a_matrix_are_shown_escaped() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("matrix.yaml"),
        "version: 1\nbases: [ubuntu:22.04]\npython: [\"3.10\", \"3.11\"]\nexclude:\n  - {python: \"3.10\", reason: \"old\\e]52;c;ZXZpbA==\\a\\rfine\"}\n",
    )
    .unwrap();
    let out = matrix_in(dir.path(), &["plan"]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let all = [out.stdout, out.stderr].concat();
    let text = String::from_utf8_lossy(&all);
    assert!(
        !all.contains(&0x1b) && !all.contains(&b'\r') && !all.contains(&0x07),
        "{text:?}"
    );
    assert!(
        text.contains("old\\x1b]52;c;ZXZpbA==\\x07\\rfine"),
        "{text}"
    );
    std::fs::write(
        dir.path().join("matrix.yaml"),
        "version: 1\nbases: [ubuntu:22.04]\npython: [\"3.11\"]\npackages:\n  pip: [\"numpy\\e[2J<<2\"]\n",
    )
    .unwrap();
    let out = matrix_in(dir.path(), &["plan"]);
    assert_ne!(out.status.code(), Some(0));
    assert!(
        !out.stderr.contains(&0x1b),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn an_incomplete_set_of_shards_is_neither_merged_nor_pushed() {
    let e = Env::new(32007);
    // two bases, so that each of two shards gets one
    let two = common::fake::MATRIX.replace("[ubuntu:22.04]", "[ubuntu:22.04, ubuntu:24.04]");
    std::fs::write(e.path("matrix.yaml"), two).unwrap();
    let (code, err) = e.run(&["--shard", "1/2", "-o", "s1"]);
    assert_eq!(code, 0, "{err}");
    let out = matrix_in(
        e.dir.path(),
        &["manifest", "merge", "s1/manifest.json", "-o", "all.json"],
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(4), "{err}");
    assert!(err.contains("shards 2/2 are missing"), "{err}");
    assert!(!e.path("all.json").exists());
    // pushing the lone shard is refused too
    std::fs::create_dir_all(e.path("out")).unwrap();
    std::fs::copy(e.path("s1/manifest.json"), e.path("out/manifest.json")).unwrap();
    std::fs::write(e.path("state/calls"), "").unwrap();
    let (code, err) = e.push(&[]);
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("have no record"), "{err}");
    let calls = e.calls();
    assert!(!calls.contains("push "), "{calls}");
    // with both shards the merge is whole
    let (code, err) = e.run(&["--shard", "2/2", "-o", "s2"]);
    assert_eq!(code, 0, "{err}");
    let out = matrix_in(
        e.dir.path(),
        &[
            "manifest",
            "merge",
            "s1/manifest.json",
            "s2/manifest.json",
            "-o",
            "all.json",
        ],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stderr).contains("merged 2 manifests"));
}

#[test]
fn resume_checks_each_image_and_takes_no_path_from_the_old_manifest() {
    let e = Env::new(32008);
    let (code, _) = e.run(&["-j", "1"]);
    assert_eq!(code, 0);
    let mut m = e.manifest();
    m["cells"][0]["log"] = "../../../../etc/passwd".into();
    std::fs::write(e.path("previous.json"), m.to_string()).unwrap();
    // the images are gone since (the fake engine keeps one store per engine)
    let mut gone = 0;
    for store in std::fs::read_dir(e.path("state")).unwrap() {
        let store = store.unwrap().path();
        if !store.is_dir() {
            continue;
        }
        for f in std::fs::read_dir(&store).unwrap() {
            std::fs::remove_file(f.unwrap().path()).unwrap();
            gone += 1;
        }
    }
    assert!(gone > 0, "the fake engine stored no image to remove");
    std::fs::write(e.path("state/calls"), "").unwrap();
    let (code, err) = e.run(&["-j", "1", "--resume", "previous.json"]);
    assert_eq!(code, 0, "{err}");
    let calls = e.calls();
    // every image is built again: the shared stage and three cells (each then
    // relabelled with its versions in a quiet second build)
    assert_eq!(
        calls
            .lines()
            .filter(|l| l.starts_with("build --force-rm"))
            .count(),
        4,
        "{calls}"
    );
    for id in [A, B, C] {
        assert_eq!(e.status(id), "built");
    }
    let log = &e.manifest()["cells"][0]["log"];
    assert_eq!(log, &format!("out/logs/{A}.log"));
}

#[test]
fn jobs_are_bounded_like_an_engines_jobs() {
    let e = Env::new(32009);
    let (code, err) = e.run(&["-j", "10000"]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("expected 1 to 256"), "{err}");
    // 256 slots on 3 cells start at most 3 workers, and a signal still ends it at once
    e.mode(A, "hang");
    let child = e
        .cmd(&["-j", "256", "--kill-grace", "1s"])
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    wait_for("the build", || !e.leftovers().is_empty());
    let threads = std::fs::read_dir(format!("/proc/{}/task", child.id()))
        .unwrap()
        .count();
    assert!(threads < 32, "{threads} threads for 3 cells");
    let t = Instant::now();
    signal(&child, libc::SIGTERM);
    assert_eq!(child.wait_with_output().unwrap().status.code(), Some(143));
    assert!(
        t.elapsed() < Duration::from_secs(5),
        "took {:?}",
        t.elapsed()
    );
}

#[test]
fn a_plan_that_cannot_be_written_is_an_error_but_a_closed_pipe_is_not() {
    let e = Env::new(32010);
    for format in ["table", "json", "bake", "gha"] {
        let full = std::fs::File::options()
            .write(true)
            .open("/dev/full")
            .unwrap();
        let out = Command::new(env!("CARGO_BIN_EXE_matrix"))
            .current_dir(e.dir.path())
            .args(["plan", "--format", format])
            .stdout(full)
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(5), "{format}: {err}");
        assert!(err.contains("No space left"), "{format}: {err}");
    }
    let mut child = Command::new(env!("CARGO_BIN_EXE_matrix"))
        .current_dir(e.dir.path())
        .args(["plan", "--format", "json"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    drop(child.stdout.take());
    let out = child.wait_with_output().unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn ci_stops_only_the_daemon_it_started() {
    let root = tempfile::tempdir().unwrap();
    let data = root.path().join("docker");
    // a PID recorded by an earlier run, now reused by an unrelated process
    let mut unrelated = Command::new("sleep").arg("30").spawn().unwrap();
    std::fs::write(
        root.path().join("docker.started-by-image-matrix"),
        unrelated.id().to_string(),
    )
    .unwrap();
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/stop-dockerd.sh");
    let out = Command::new(&script)
        .arg(&data)
        .env_remove("IMAGE_MATRIX_DAEMON_OWNER")
        .output()
        .unwrap();
    assert!(out.status.success());
    assert!(
        unrelated.try_wait().unwrap().is_none(),
        "the unrelated process lives"
    );
    assert!(!root.path().join("docker.started-by-image-matrix").exists());
    // nothing recorded: nothing stopped
    let out = Command::new(&script)
        .arg(&data)
        .env_remove("IMAGE_MATRIX_DAEMON_OWNER")
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&out.stdout).contains("no daemon was started"));
    let _ = unrelated.kill();
    let _ = unrelated.wait();
}

/// Issue 27 item 13: a daemon the nightly script started (no owner) is not the CI
/// run's to stop, though it is a live dockerd; the one started for this run is.
#[test]
fn ci_leaves_running_the_daemon_another_script_started() {
    let root = tempfile::tempdir().unwrap();
    let data = root.path().join("docker");
    let mark = root.path().join("docker.started-by-image-matrix");
    // a process whose name is dockerd: `sleep` under that name
    let fake = root.path().join("dockerd");
    std::fs::copy(
        String::from_utf8(
            Command::new("sh")
                .args(["-c", "command -v sleep"])
                .output()
                .unwrap()
                .stdout,
        )
        .unwrap()
        .trim(),
        &fake,
    )
    .unwrap();
    let mut daemon = Command::new(&fake).arg("30").spawn().unwrap();
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/stop-dockerd.sh");
    std::fs::write(&mark, format!("{}\n\n", daemon.id())).unwrap();
    let out = Command::new(&script)
        .arg(&data)
        .env("IMAGE_MATRIX_DAEMON_OWNER", "ci-1-2")
        .output()
        .unwrap();
    assert!(out.status.success());
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(said.contains("leaving it running"), "{said}");
    assert!(
        daemon.try_wait().unwrap().is_none(),
        "the nightly's daemon lives"
    );
    assert!(mark.exists(), "its record stays for whoever started it");
    // started for this run: stopped (reaped as it ends, so the script sees it gone)
    std::fs::write(&mark, format!("{}\nci-1-2\n", daemon.id())).unwrap();
    let reaper = std::thread::spawn(move || daemon.wait().unwrap());
    let out = Command::new(&script)
        .arg(&data)
        .env("IMAGE_MATRIX_DAEMON_OWNER", "ci-1-2")
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&out.stdout).contains("stopped dockerd"));
    let status = reaper.join().unwrap();
    assert!(!status.success(), "killed: {status}");
    assert!(!mark.exists());
}

#[test]
fn build_containers_a_dead_engine_left_are_removed_once_it_answers_again() {
    let e = Env::with_matrix(
        32011,
        "version: 1\nbases: [ubuntu:22.04, ubuntu:24.04]\npython: [\"3.10\", \"3.11\"]\n",
    );
    let killed = "py3.10-ubuntu24.04-amd64";
    for id in [
        "py3.10-ubuntu22.04-amd64",
        "py3.11-ubuntu22.04-amd64",
        "py3.11-ubuntu24.04-amd64",
    ] {
        e.mode(id, "slow");
    }
    e.mode(killed, "kill-engine-once");
    let child = e
        .cmd(&[
            "--engine",
            "fa=unix:///fake/fa.sock,jobs=1",
            "--engine",
            "fb=unix:///fake/fb.sock,jobs=1",
        ])
        .env("FAKE_SLOW", "1")
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let down = || {
        ["fa", "fb"]
            .into_iter()
            .find(|n| e.path(&format!("state/down-{n}")).exists())
    };
    wait_for("an engine to die", || down().is_some());
    let dead = down().unwrap();
    // the daemon is restarted while the run goes on
    std::thread::sleep(Duration::from_millis(300));
    std::fs::remove_file(e.path(&format!("state/down-{dead}"))).unwrap();
    let out = child.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{err}");
    assert!(
        err.contains(&format!(
            "removed 1 stopped build container this run left on engine {dead}"
        )),
        "{err}"
    );
    let left: Vec<String> = std::fs::read_dir(e.path("state"))
        .unwrap()
        .map(|f| f.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with("leftover-"))
        .collect();
    assert!(
        !left.iter().any(|n| n.starts_with("leftover-c0ffee")),
        "{left:?}"
    );
    assert_eq!(
        left.len(),
        2,
        "an older one and a foreign one stay: {left:?}"
    );
}

/// Issue 27 item 6, through the command: `prune --keep 1` removes the images an older
/// run of this matrix recorded, keeps the last run's, and leaves an image no run of
/// this history recorded (another matrix's, under the same repository) alone.
#[test]
fn prune_removes_only_what_this_matrixs_older_runs_recorded() {
    let e = Env::new(32018);
    let (code, _) = e.run(&["-j", "1", "--filter", "python=3.9"]);
    assert_eq!(code, 0);
    let old = e.manifest()["cells"][0]["image_id"]
        .as_str()
        .unwrap()
        .to_string();
    let (code, _) = e.run(&["-j", "1", "--filter", "python=3.9", "--force"]);
    assert_eq!(code, 0);
    let new = e.manifest()["cells"][0]["image_id"]
        .as_str()
        .unwrap()
        .to_string();
    assert_ne!(old, new);
    // another matrix's image in the same engine, with the same repository label
    let other = format!("sha256:{}", "e".repeat(64));
    let store = e.path("state/store-default");
    std::fs::write(
        store.join(format!("label-sha256_{}", "e".repeat(64))),
        "h\n",
    )
    .unwrap();
    let (code, err) = e
        .matrix(&["prune", "--keep", "1"])
        .output()
        .map(|o| {
            (
                o.status.code().unwrap_or(-1),
                String::from_utf8_lossy(&o.stderr).into_owned(),
            )
        })
        .unwrap();
    assert_eq!(code, 0, "{err}");
    assert!(err.contains("removed 1 image of miniconda"), "{err}");
    let has = |id: &str| {
        store
            .join(format!("label-{}", id.replace(':', "_")))
            .exists()
    };
    assert!(!has(&old), "the older run's image went");
    assert!(has(&new), "the last run's image stays");
    assert!(has(&other), "another matrix's image stays");
}

/// Issue 27 item 12: an installer folder (for offline builds) that lacks an installer
/// a cell needs is said, not silently replaced by the network.
#[test]
fn an_installer_folder_without_the_installer_is_said() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("inst")).unwrap();
    std::fs::write(
        dir.path().join("matrix.yaml"),
        "version: 1\nbases: [ubuntu:22.04]\npython: [\"3.11\"]\nsources:\n  installer_dir: inst\n",
    )
    .unwrap();
    let out = matrix_in(dir.path(), &["plan"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{err}");
    assert!(
        err.contains("`sources.installer_dir`: ./inst has no Miniconda3-py311_24.5.0-0-Linux-x86_64.sh; its cells download it from the mirrors"),
        "{err}"
    );
    std::fs::write(
        dir.path()
            .join("inst/Miniconda3-py311_24.5.0-0-Linux-x86_64.sh"),
        "#!/bin/sh\n",
    )
    .unwrap();
    let out = matrix_in(dir.path(), &["plan"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!err.contains("installer_dir"), "{err}");
}

/// Issue 27 item 12: the framework image of an excluded Miniconda cell is listed as
/// excluded with it, saying why, rather than vanishing from the plan.
#[test]
fn a_framework_image_of_an_excluded_cell_is_listed_as_excluded() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("matrix.yaml"),
        "version: 1\nbases: [nvidia/cuda:12.1.1-cudnn8-devel-ubuntu22.04]\npython: [\"3.10\", \"3.11\"]\npytorch: [\"2.3.0\"]\nexclude:\n  - {python: \"3.11\", reason: \"not tonight\"}\n",
    )
    .unwrap();
    let out = matrix_in(dir.path(), &["plan"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        text.contains("py3.11-cuda12.1.1-cudnn8-devel-ubuntu22.04-amd64-torch2.3.0  (line 6) its Miniconda image py3.11-cuda12.1.1-cudnn8-devel-ubuntu22.04-amd64 is excluded"),
        "{text}"
    );
    assert!(text.contains("2 cells to build, 2 excluded"), "{text}");
}
