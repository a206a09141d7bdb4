//! User-defined families on a real daemon, exactly as `examples/families.yaml` writes
//! them (only their repositories moved under the test's own prefix): the local Debian
//! base → a Miniconda cell (the stand-in installer from the loopback mirror) → the
//! yolo-like `vision` family (pip packages from the Python package index, an import
//! check) → the ollama-like `serve` family on top of it (an API server under the
//! image's supervisor, on a port `verify` moves with its variable). Every image passes
//! its own checks and its parents' (SSH, JupyterLab, TensorBoard still work in the
//! grandchild), then a change to the serve family's script rebuilds only the serve
//! image, and `matrix verify IMAGE` checks a family image from its labels alone.
//!
//! Needs the daemon and the local bases (`scripts/setup-test-env.sh`); fails without.

mod common;
use common::*;

const PARENT: &str = "py3.11-debian12-amd64";
const VISION: &str = "py3.11-debian12-amd64-vision11.0.0";
const SERVE: &str = "py3.11-debian12-amd64-vision11.0.0-serve0.1.0";

/// The `families:` block of the shipped example, with each `repository:` under `repo`.
fn example_families(repo: &str) -> String {
    let root = env!("CARGO_MANIFEST_DIR");
    let text = std::fs::read_to_string(format!("{root}/examples/families.yaml")).unwrap();
    let start = text
        .find("\nfamilies:\n")
        .expect("the example has a families block");
    text[start + 1..]
        .lines()
        .map(|l| match l.trim_start().strip_prefix("repository: ") {
            Some(name) => l.replace(
                &format!("repository: {name}"),
                &format!("repository: {repo}/{name}"),
            ),
            None => l.to_string(),
        })
        .collect::<Vec<_>>()
        .join("\n")
        + "\n"
}

fn check<'a>(c: &'a serde_json::Value, name: &str) -> &'a serde_json::Value {
    c["verification"]["checks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|x| x["name"] == name)
        .unwrap_or_else(|| panic!("no check {name}: {c}"))
}

#[test]
fn the_example_families_build_as_a_tree_and_pass_their_own_checks() {
    require_environment();
    let dir = tempfile::tempdir().unwrap();
    let mirror = Mirror::start(&dir.path().join("mirror"));
    let repo = format!("image-matrix-families-e2e-{}", std::process::id());
    let _cleanup = Cleanup(repo.clone());
    let families = example_families(&repo);
    assert!(families.contains("name: serve"), "{families}");
    let yaml = LocalMatrix::new(
        &format!("{repo}/miniconda"),
        "conda3-python{python}-{base_name}",
        &mirror,
    )
    .axes(&format!(
        "bases:\n  - {{image: \"{BASE}\", os: debian12}}\npython: [\"3.11\"]\n"
    ))
    .then(&families)
    .yaml();
    std::fs::write(dir.path().join("matrix.yaml"), yaml).unwrap();
    let examples = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/families");
    std::fs::create_dir(dir.path().join("families")).unwrap();
    for f in std::fs::read_dir(&examples).unwrap() {
        let f = f.unwrap().path();
        std::fs::copy(&f, dir.path().join("families").join(f.file_name().unwrap())).unwrap();
    }

    let (code, out, err) = matrix(dir.path(), &["plan", "--format", "json"]);
    assert_eq!(code, 0, "{err}");
    let plan: serde_json::Value = serde_json::from_str(&out).unwrap();
    let ids: Vec<&str> = plan["cells"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, [PARENT, VISION, SERVE]);
    assert_eq!(cell(&plan, SERVE)["family"]["parent"], VISION);

    let t0 = std::time::Instant::now();
    let (code, _, err) = matrix(dir.path(), &["build", "-j", "2", "--verify"]);
    assert_eq!(code, 0, "the tree must build and verify:\n{err}");
    let cold = t0.elapsed().as_secs_f64();
    let m = manifest(&dir.path().join("out/manifest.json"));
    let (parent, vision, serve) = (cell(&m, PARENT), cell(&m, VISION), cell(&m, SERVE));
    for c in [parent, vision, serve] {
        assert_eq!(c["status"], "built", "{c}");
        assert_eq!(c["verification"]["ok"], true, "{c}");
    }
    assert_eq!(vision["parent"], PARENT);
    assert_eq!(serve["parent"], VISION);
    assert_eq!(serve["coordinates"]["family"], "serve");
    assert_eq!(serve["coordinates"]["families"]["vision"], "11.0.0");
    // the family's own checks, and those of the families above it
    let import = check(vision, "vision run");
    assert!(
        import["detail"]
            .as_str()
            .unwrap()
            .contains("printed `11.0.0`"),
        "{import}"
    );
    let api = check(serve, "serve api");
    assert_eq!(api["ok"], true, "{api}");
    assert!(check(serve, "vision run")["ok"] == true, "{serve}");
    assert!(check(serve, "serve run")["ok"] == true, "{serve}");
    // the parent's services still serve in the grandchild
    for own in ["ssh-login", "jupyter-api", "tensorboard"] {
        let c = serve["verification"]["checks"]
            .as_array()
            .unwrap()
            .iter()
            .find(|x| x["name"].as_str().is_some_and(|n| n.starts_with(own)))
            .unwrap_or_else(|| panic!("no check {own}: {serve}"));
        assert_eq!(c["ok"], true, "{c}");
    }
    // the parent was checked as a Miniconda image, without the families' checks
    assert!(parent["verification"]["checks"]
        .as_array()
        .unwrap()
        .iter()
        .all(|c| !c["name"].as_str().unwrap().starts_with("vision")));
    assert_eq!(serve["versions"]["uvicorn"], "0.32.1", "{serve}");
    assert_eq!(vision["versions"]["pillow"], "11.0.0", "{vision}");

    // `matrix verify IMAGE`: the checks travel in the image's labels
    let tag = serve["tags"][0].as_str().unwrap();
    let (code, out, err) = matrix(dir.path(), &["verify", "--image", tag]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("serve api"), "{out}");

    // the serve family's script changes: only the serve image rebuilds
    let script = dir.path().join("families/serve-setup.sh");
    let text = std::fs::read_to_string(&script).unwrap();
    std::fs::write(&script, format!("{text}# changed\n")).unwrap();
    let t1 = std::time::Instant::now();
    let (code, _, err) = matrix(dir.path(), &["build", "--verify", "-o", "out2"]);
    assert_eq!(code, 0, "{err}");
    let again = t1.elapsed().as_secs_f64();
    let m2 = manifest(&dir.path().join("out2/manifest.json"));
    assert_eq!(cell(&m2, PARENT)["status"], "up-to-date", "{m2}");
    assert_eq!(cell(&m2, VISION)["status"], "up-to-date", "{m2}");
    assert_eq!(cell(&m2, SERVE)["status"], "built", "{m2}");
    eprintln!(
        "figures: cold tree {cold:.1}s (parent {}s, vision {}s, serve {}s; verify {}s / {}s / {}s); serve script changed: {again:.1}s",
        parent["duration_seconds"],
        vision["duration_seconds"],
        serve["duration_seconds"],
        parent["verification"]["seconds"],
        vision["verification"]["seconds"],
        serve["verification"]["seconds"],
    );
}
