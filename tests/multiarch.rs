//! Multi-platform tag groups with the fake docker (no daemon): planning, which engine
//! builds which platform and how, the refusals before anything is built, and the
//! image index push makes per tag group.

mod common;

use std::process::Command;

use common::cell;
use common::fake::Env;

const TWO_PLATFORMS: &str = "version: 1\nimage:\n  aliases: [\"{tag}-nightly\"]\nbases: [ubuntu:22.04]\npython: [\"3.11\"]\nplatforms: [linux/amd64, linux/arm64]\n";
const AMD: &str = "py3.11-ubuntu22.04-amd64";
const ARM: &str = "py3.11-ubuntu22.04-arm64";
const TAG: &str = "miniconda:conda3-python3.11-ubuntu22.04";

fn two_platforms(mark: u32) -> Env {
    let e = Env::new(mark);
    std::fs::write(e.path("matrix.yaml"), TWO_PLATFORMS).unwrap();
    e
}

/// An enabled QEMU aarch64 handler with the fix-binary flag, in the test's own
/// binfmt_misc directory.
fn emulate_arm64(e: &Env) {
    std::fs::create_dir_all(e.path("binfmt")).unwrap();
    std::fs::write(
        e.path("binfmt/qemu-aarch64"),
        "enabled\ninterpreter /usr/libexec/qemu-binfmt/aarch64-binfmt-P\nflags: PF\noffset 0\n",
    )
    .unwrap();
}

fn engines(e: &Env) -> Vec<String> {
    let sock = |n: &str| format!("unix://{}", e.path(&format!("{n}.sock")).display());
    vec![
        "--engine".into(),
        format!("amd={}", sock("amd")),
        "--engine".into(),
        format!("arm={},platform=linux/arm64", sock("arm")),
    ]
}

fn calls(e: &Env) -> String {
    std::fs::read_to_string(e.path("state/calls")).unwrap_or_default()
}

#[test]
fn plan_shows_one_tag_group_of_two_cells_and_bake_one_target_with_both_platforms() {
    let e = two_platforms(33001);
    let plan = |format: &str| {
        let out = Command::new(env!("CARGO_BIN_EXE_matrix"))
            .current_dir(e.dir.path())
            .env("IMAGE_MATRIX_DATA", "/nonexistent/image-matrix-data")
            .args(["plan", "--date", "20260101", "--format", format])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    };
    let table = plan("table");
    assert!(
        table.contains(&format!(
            "1 tag group (one tag, an image index over one image per platform):\n  conda3-python3.11-ubuntu22.04: 2 cells: {AMD} (linux/amd64), {ARM} (linux/arm64)"
        )),
        "{table}"
    );
    let json: serde_json::Value = serde_json::from_str(&plan("json")).unwrap();
    common::schema::check("plan", &json);
    let arm = cell(&json, ARM);
    assert_eq!(arm["tags"][0], TAG, "the group's cells share their tags");
    assert_eq!(arm["group"]["platform_tag"], format!("{TAG}-arm64"));
    assert_eq!(arm["group"]["members"].as_array().unwrap().len(), 2);
    assert!(arm["installer"]["file"]
        .as_str()
        .unwrap()
        .ends_with("Linux-aarch64.sh"));
    let bake: serde_json::Value = serde_json::from_str(&plan("bake")).unwrap();
    let targets = bake["target"].as_object().unwrap();
    assert_eq!(targets.len(), 1, "{bake}");
    let t = targets.values().next().unwrap();
    assert_eq!(
        t["platforms"],
        serde_json::json!(["linux/amd64", "linux/arm64"])
    );
    assert_eq!(t["tags"][0], TAG);
    let gha: serde_json::Value = serde_json::from_str(&plan("gha")).unwrap();
    let runners: Vec<&str> = gha["include"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["runner"].as_str().unwrap())
        .collect();
    assert_eq!(runners, ["ubuntu-24.04", "ubuntu-24.04-arm"]);
}

#[test]
fn a_platform_no_engine_builds_is_refused_before_anything_is_built() {
    let e = two_platforms(33002);
    let (code, err) = e.run(&["-j", "1"]);
    assert_eq!(code, 4, "{err}");
    assert!(
        err.contains("no engine builds linux/arm64") && err.contains("qemu-aarch64"),
        "{err}"
    );
    assert!(!calls(&e).contains("build "), "{}", calls(&e));
    // an engine on this host said to build arm64 without an emulator: refused too
    let mut flags = engines(&e);
    flags.push("-j".into());
    flags.push("1".into());
    let args: Vec<&str> = flags.iter().map(String::as_str).collect();
    let (code, err) = e.run(&args);
    assert_eq!(code, 4, "{err}");
    assert!(
        err.contains("engine arm") && err.contains("no enabled qemu-aarch64 binfmt handler"),
        "{err}"
    );
    assert!(!calls(&e).contains("build "));
}

#[test]
fn a_base_held_only_for_another_platform_is_refused_before_anything_is_built() {
    let e = two_platforms(33003);
    emulate_arm64(&e);
    // one engine emulates arm64, but its ubuntu:22.04 is the amd64 image
    let (code, err) = e.run(&["-j", "1"]);
    assert_eq!(code, 4, "{err}");
    assert!(
        err.contains(
            "engine default builds linux/amd64 (native), linux/arm64 (emulated (qemu-aarch64))"
        ),
        "{err}"
    );
    assert!(
        err.contains("base ubuntu:22.04 for linux/arm64")
            && err.contains("engine default holds it for linux/amd64"),
        "{err}"
    );
    assert!(!calls(&e).contains("build "));
}

#[test]
fn each_platform_builds_where_its_base_is_and_push_makes_one_index_per_tag() {
    let e = two_platforms(33004);
    emulate_arm64(&e);
    std::fs::write(e.path("state/arm-platform-ubuntu_22.04"), "linux/arm64").unwrap();
    let mut flags = engines(&e);
    flags.extend(["-j", "1", "--push"].map(String::from));
    let args: Vec<&str> = flags.iter().map(String::as_str).collect();
    let (code, err) = e.run(&args);
    assert_eq!(code, 0, "{err}");
    assert!(
        err.contains("engine arm builds linux/arm64 (emulated (qemu-aarch64))"),
        "{err}"
    );
    let m = e.manifest();
    let (amd, arm) = (cell(&m, AMD), cell(&m, ARM));
    assert_eq!(amd["engine"], "amd");
    assert_eq!(arm["engine"], "arm");
    assert_eq!(arm["emulated"], true);
    assert!(amd.get("emulated").is_none(), "amd64 is native on amd");
    assert_eq!(
        amd["input_hash"], arm["input_hash"],
        "a tag group's members share one identity"
    );
    // each image went out under its platform tag only, from its own engine
    let by_engine = std::fs::read_to_string(e.path("state/calls-by-engine")).unwrap();
    assert!(
        by_engine.contains(&format!("amd push {TAG}-amd64")),
        "{by_engine}"
    );
    assert!(
        by_engine.contains(&format!("arm push {TAG}-arm64")),
        "{by_engine}"
    );
    assert!(!by_engine.contains(&format!("push {TAG}\n")), "{by_engine}");
    // one index per shared tag, over the two pushed digests
    let idx = &m["indexes"][0];
    assert_eq!(idx["ok"], true, "{idx}");
    assert_eq!(
        idx["tags"],
        serde_json::json!([TAG, format!("{TAG}-nightly")])
    );
    let members =
        std::fs::read_to_string(e.path(&format!("state/index-{}", TAG.replace([':', '/'], "_"))))
            .unwrap();
    for (p, id) in [("linux/amd64", AMD), ("linux/arm64", ARM)] {
        let entry = idx["platforms"]
            .as_array()
            .unwrap()
            .iter()
            .find(|x| x["platform"] == p)
            .unwrap();
        assert_eq!(entry["cell"], id);
        let pushed = cell(&m, id)["pushed"][0]["digest"].as_str().unwrap();
        assert_eq!(entry["digest"], pushed);
        assert!(
            members.contains(&format!("miniconda@{pushed}")),
            "{members}"
        );
    }
    assert!(idx["digest"].as_str().unwrap().starts_with("sha256:"));
}

#[test]
fn a_group_with_a_platform_missing_gets_no_index_even_when_partial_is_allowed() {
    let e = two_platforms(33005);
    emulate_arm64(&e);
    std::fs::write(e.path("state/arm-platform-ubuntu_22.04"), "linux/arm64").unwrap();
    e.mode(ARM, "fail");
    let mut flags = engines(&e);
    flags.extend(["-j", "1"].map(String::from));
    let args: Vec<&str> = flags.iter().map(String::as_str).collect();
    let (code, _) = e.run(&args);
    assert_eq!(code, 1);
    // push reaches the engines the build's --engine flags named only when given them
    let on = &args[..4];
    let (code, err) = e.push(on);
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("publishing nothing"), "{err}");
    std::fs::write(e.path("state/calls"), "").unwrap();
    let (_, err) = e.push(&[on, &["--allow-partial"]].concat());
    assert!(
        err.contains("index conda3-python3.11-ubuntu22.04: not made: linux/arm64 not pushed"),
        "{err}"
    );
    let c = calls(&e);
    assert!(c.contains(&format!("push {TAG}-amd64")), "{c}");
    assert!(!c.contains("manifest create"), "{c}");
    let m = e.manifest();
    assert_eq!(m["indexes"][0]["ok"], false);
}

/// A tag group's context names neither its repository nor its tag: a new tag template
/// and repository retag the group (`plan --diff` names both) and the next build tags
/// each member's image, on its engine, with its new platform tag and runs no build.
#[test]
fn a_renamed_tag_group_is_retagged_not_rebuilt() {
    let e = two_platforms(33010);
    emulate_arm64(&e);
    std::fs::write(e.path("state/arm-platform-ubuntu_22.04"), "linux/arm64").unwrap();
    let flags = engines(&e);
    let args: Vec<&str> = flags.iter().map(String::as_str).collect();
    let (code, err) = e.run(&args);
    assert_eq!(code, 0, "{err}");
    let before = e.manifest();
    let renamed = TWO_PLATFORMS.replace(
        "image:\n",
        "image:\n  repository: registry.example/ml/miniconda\n  tag: \"py{python}-{base}\"\n",
    );
    std::fs::write(e.path("matrix.yaml"), renamed).unwrap();
    let diff = e.plan_diff();
    for id in [AMD, ARM] {
        let line = diff.lines().find(|l| l.starts_with(id)).unwrap();
        assert!(
            line.contains(" retag ")
                && line.contains("repository miniconda → registry.example/ml/miniconda")
                && line.contains("tag conda3-python3.11-ubuntu22.04 → py3.11-ubuntu22.04"),
            "{diff}"
        );
    }
    assert!(!diff.contains("Dockerfile template"), "{diff}");
    std::fs::write(e.path("state/calls"), "").unwrap();
    let (code, err) = e.run(&args);
    assert_eq!(code, 0, "{err}");
    let calls = calls(&e);
    assert!(
        !calls
            .lines()
            .any(|l| l.starts_with("build ") || l.starts_with("buildx build ")),
        "{calls}"
    );
    let after = e.manifest();
    for id in [AMD, ARM] {
        let (old, new) = (cell(&before, id), cell(&after, id));
        assert_eq!(new["status"], "up-to-date", "{new}");
        assert_eq!(old["image_id"], new["image_id"], "{new}");
        let arch = id.rsplit('-').next().unwrap();
        assert_eq!(
            new["platform_tag"],
            format!("registry.example/ml/miniconda:py3.11-ubuntu22.04-{arch}")
        );
    }
}
