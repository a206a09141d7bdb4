//! The buildx backend and the registry cache against the fake docker
//! (tests/fake/docker): the plugin missing, `auto` choosing buildx when it is there, a
//! named buildx builder, the cache flags reaching the builds, and the bake file's
//! input-hash labels matching what `build` computes. Real builds with buildx are in
//! tests/buildx_e2e.rs.

use std::path::Path;
use std::process::Command;

mod common;
use common::fake::Env;

const A: &str = "py3.9-ubuntu22.04-amd64";

fn calls(e: &Env) -> String {
    std::fs::read_to_string(e.path("state/calls")).unwrap_or_default()
}

/// Image builds of cells (not the version-label builds, `--quiet`).
fn builds(e: &Env) -> Vec<String> {
    calls(e)
        .lines()
        .filter(|l| l.contains("build ") && !l.contains(" --quiet ") && !l.contains("version"))
        .map(str::to_string)
        .collect()
}

#[test]
fn without_the_plugin_buildx_fails_before_building_and_says_how_to_install_it() {
    let e = Env::new(34001);
    for args in [
        vec!["--builder", "buildx"],
        // an engine that names a buildx builder needs the plugin too
        vec!["--engine", "e=unix:///run/fake-e.sock,buildx_builder=farm"],
    ] {
        let (code, err) = e.run(&args);
        assert_eq!(code, 4, "{args:?}: {err}");
        assert!(
            err.contains("needs the buildx plugin")
                && err.contains("apt-get install docker-buildx")
                && err.contains("cli-plugins"),
            "{args:?}: {err}"
        );
        assert!(builds(&e).is_empty(), "nothing was built: {}", calls(&e));
    }
    // auto without the plugin keeps the client's default builder
    let (code, err) = e.run(&["--filter", &format!("id={A}")]);
    assert_eq!(code, 0, "{err}");
    assert!(
        builds(&e)[0].starts_with("build --force-rm"),
        "{}",
        calls(&e)
    );
    assert_eq!(e.manifest()["docker"]["builder"], "auto");
}

#[test]
fn auto_builds_with_buildx_when_the_client_has_the_plugin() {
    let e = Env::new(34002);
    std::fs::write(e.path("state/buildx"), "").unwrap();
    let (code, err) = e.run(&["-j", "2"]);
    assert_eq!(code, 0, "{err}");
    let b = builds(&e);
    let (cells, stages): (Vec<&String>, Vec<&String>) = b.iter().partition(|l| l.contains(" -t "));
    assert_eq!(cells.len(), 3, "{b:#?}");
    assert!(
        cells
            .iter()
            .all(|l| l.starts_with("buildx build --progress=plain --load -t ")),
        "{b:#?}"
    );
    // the shared OS stage stays in the builder's cache: nothing to load
    assert_eq!(stages.len(), 1, "{b:#?}");
    assert!(
        stages[0].starts_with("buildx build --progress=plain --target system"),
        "{b:#?}"
    );
    let m = e.manifest();
    assert_eq!(m["docker"]["builder"], "buildx");
    let log = std::fs::read_to_string(e.path(&format!("out/logs/{A}.log"))).unwrap();
    assert!(
        log.contains(" buildx build --progress=plain --load "),
        "{log}"
    );
    assert_eq!(e.status(A), "built");
}

#[test]
fn a_named_buildx_builder_is_used_and_one_that_does_not_answer_is_refused() {
    let e = Env::new(34003);
    std::fs::write(e.path("state/buildx"), "").unwrap();
    let (code, err) = e.run(&["--buildx-builder", "farm"]);
    assert_eq!(code, 4, "{err}");
    assert!(
        err.contains("the buildx builder `farm` does not answer")
            && err.contains("docker buildx ls"),
        "{err}"
    );
    assert!(builds(&e).is_empty());
    std::fs::write(e.path("state/buildx-builder-farm"), "").unwrap();
    let (code, err) = e.run(&["--buildx-builder", "farm", "--filter", &format!("id={A}")]);
    assert_eq!(code, 0, "{err}");
    assert!(
        builds(&e)[0].starts_with("buildx build --progress=plain --builder farm --load"),
        "{}",
        calls(&e)
    );
    let m = e.manifest();
    assert_eq!(m["docker"]["builder"], "buildx");
    assert_eq!(m["engines"][0]["buildx_builder"], "farm");
    // a buildx builder with another builder is a contradiction, said before building
    let (code, err) = e.run(&["--builder", "legacy", "--buildx-builder", "farm"]);
    assert_eq!(code, 4, "{err}");
    assert!(err.contains("only builds with --builder buildx"), "{err}");
}

#[test]
fn the_registry_cache_reaches_every_build_and_needs_buildkit() {
    let e = Env::new(34004);
    let (code, err) = e.run(&["--cache-from", "registry"]);
    assert_eq!(code, 2, "{err}");
    assert!(
        err.contains("needs BuildKit") && err.contains("--builder buildx"),
        "{err}"
    );
    let (code, err) = e.run(&["--cache-from", "type=registry,ref=x"]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("expected `registry`"), "{err}");
    std::fs::write(e.path("state/buildx"), "").unwrap();
    let m = format!(
        "{}cache:\n  from: [registry, \"cache.example:5000/ml/cache:{{tag}}\"]\n",
        common::fake::MATRIX
    );
    std::fs::write(e.path("matrix.yaml"), m).unwrap();
    let (code, err) = e.run(&["--filter", &format!("id={A}")]);
    assert_eq!(code, 0, "{err}");
    let all = calls(&e);
    let b: Vec<&str> = all
        .lines()
        .filter(|l| l.starts_with("buildx build") && l.contains("io.image-matrix.input-hash"))
        .collect();
    assert!(
        b[0].contains("--cache-from type=registry,ref=miniconda:conda3-python3.9-ubuntu22.04 --cache-from type=registry,ref=cache.example:5000/ml/cache:conda3-python3.9-ubuntu22.04 --cache-to type=inline"),
        "{all}"
    );
    // the version labels come from a second, cached build of the same context (a
    // metadata build on top would drop the inline cache metadata)
    assert_eq!(b.len(), 2, "{all}");
    assert!(
        b[1].contains("--label io.image-matrix.version.python=3.11.2")
            && !b[1].contains("--cache-from"),
        "{all}"
    );
    assert!(
        !all.lines().any(|l| l.contains(" --quiet ")),
        "no metadata-only build: {all}"
    );
    let man = e.manifest();
    let cell = man["cells"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["id"] == A)
        .unwrap();
    assert_eq!(cell["versions"]["python"], "3.11.2");
}

#[test]
fn bake_targets_carry_the_input_hash_build_computes() {
    let e = Env::new(34005);
    let (code, err) = e.run(&["--filter", &format!("id={A}")]);
    assert_eq!(code, 0, "{err}");
    let built = e.manifest();
    let hash = built["cells"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["id"] == A)
        .unwrap()["input_hash"]
        .clone();
    let out = Command::new(env!("CARGO_BIN_EXE_matrix"))
        .current_dir(e.dir.path())
        .env("FAKE_DOCKER_STATE", e.path("state"))
        .env("IMAGE_MATRIX_DATA", "/nonexistent/image-matrix-data")
        .env("IMAGE_MATRIX_BINFMT_DIR", e.path("binfmt"))
        .env(
            "DOCKER",
            Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fake/docker"),
        )
        .args([
            "plan",
            "--format",
            "bake",
            "--pull",
            "--cache-from",
            "registry",
            "--cache-to",
            "inline",
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let bake: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let t = &bake["target"][A.replace('.', "_")];
    assert_eq!(t["labels"]["io.image-matrix.input-hash"], hash, "{t}");
    assert_eq!(t["labels"]["io.image-matrix.cell"], A);
    assert!(t["labels"]["io.image-matrix.base-digest"]
        .as_str()
        .unwrap()
        .starts_with("sha256:"));
    assert_eq!(t["pull"], true);
    assert_eq!(
        t["cache-from"],
        serde_json::json!(["type=registry,ref=miniconda:conda3-python3.9-ubuntu22.04"])
    );
    assert_eq!(t["cache-to"], serde_json::json!(["type=inline"]));
    // a base no engine holds: no identity yet, so no input-hash label, and it says so
    std::fs::write(e.path("state/no-base-ubuntu_22.04"), "").unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_matrix"))
        .current_dir(e.dir.path())
        .env("FAKE_DOCKER_STATE", e.path("state"))
        .env("IMAGE_MATRIX_DATA", "/nonexistent/image-matrix-data")
        .env(
            "DOCKER",
            Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fake/docker"),
        )
        .args(["plan", "--format", "bake"])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    assert!(
        err.contains("no engine holds ubuntu:22.04 (linux/amd64)"),
        "{err}"
    );
    let bake: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let t = &bake["target"][A.replace('.', "_")];
    assert!(
        t["labels"].get("io.image-matrix.input-hash").is_none(),
        "{t}"
    );
    assert_eq!(t["labels"]["io.image-matrix.cell"], A);
}
