//! The nightly, night after night, on a real daemon: a second night builds nothing; a
//! night where only the date moved adds the date tags and builds nothing; a base
//! re-imported with one changed file rebuilds exactly its cells (and `plan --diff`
//! says why); a build that fails verification, or whose verification is interrupted,
//! leaves the public tags on the previous image; `prune --keep 1` removes only this
//! matrix's old images. And a Python 3.13 cell on Debian trixie, with numpy 2 and
//! TensorBoard working, and a variant that asks for another numpy.
//!
//! Needs the daemon and the local bases (`scripts/setup-test-env.sh`); fails without.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};

mod common;
use common::*;

/// The cell of the matrix on base `{repo}/base:NAME`.
fn on_base<'a>(m: &'a serde_json::Value, name: &str) -> &'a serde_json::Value {
    m["cells"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| {
            c["coordinates"]["base"]
                .as_str()
                .unwrap()
                .ends_with(&format!("/base:{name}"))
        })
        .unwrap_or_else(|| panic!("no cell on base {name}"))
}

/// The local matrix on two bases (copies of the local Debian base under this test's
/// own names), one cell each.
fn nightly_yaml(repo: &str, mirror: &Mirror, extra: &str) -> String {
    LocalMatrix::new(
        &format!("{repo}/miniconda"),
        "conda3-python{python}-{base_name}-{variant}",
        mirror,
    )
    .image(r#"aliases: ["{tag}-{date}"]"#)
    .axes(&format!(
        r#"bases:
  - {{image: "{repo}/base:a", os: debian12}}
  - {{image: "{repo}/base:b", os: debian12}}
python: ["3.11"]
variants: [{{name: base}}]
"#
    ))
    .then(extra)
    .yaml()
}

fn id_of(image: &str) -> String {
    let (code, out, err) = docker(&["image", "inspect", "--format", "{{.Id}}", image]);
    assert_eq!(code, 0, "{image}: {err}");
    out.trim().to_string()
}

fn cells_with(m: &serde_json::Value, status: &str) -> usize {
    m["cells"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|c| c["status"] == status)
        .count()
}

#[test]
fn night_after_night_only_what_changed_moves() {
    require_environment();
    let dir = tempfile::tempdir().unwrap();
    let mirror = Mirror::start(&dir.path().join("mirror"));
    let repo = format!("image-matrix-nightly-{}", std::process::id());
    let _cleanup = Cleanup(repo.clone());
    for b in ["a", "b"] {
        assert_eq!(docker(&["tag", BASE, &format!("{repo}/base:{b}")]).0, 0);
    }
    let write = |extra: &str| {
        std::fs::write(
            dir.path().join("matrix.yaml"),
            nightly_yaml(&repo, &mirror, extra),
        )
        .unwrap()
    };
    write("");
    let manifest_path = dir.path().join("out/manifest.json");
    let tag_a = format!("{repo}/miniconda:conda3-python3.11-base-a-base");

    // Night 1: both cells build, verify, and only then get their public tags.
    let (code, out, err) = matrix(
        dir.path(),
        &["build", "-j", "2", "--verify", "--date", "20261201"],
    );
    assert_eq!(code, 0, "{out}\n{err}");
    let m = manifest(&manifest_path);
    assert_eq!(cells_with(&m, "built"), 2);
    let first = on_base(&m, "a")["image_id"].as_str().unwrap().to_string();
    assert_eq!(id_of(&tag_a), first, "the public tag is the verified image");
    for b in ["a", "b"] {
        let d = on_base(&m, b)["base_digest"].as_str().unwrap();
        assert!(
            d.starts_with("sha256:"),
            "the base resolved to its image: {d}"
        );
    }
    let versions = &on_base(&m, "a")["versions"];
    assert!(
        versions["numpy"].as_str().unwrap().starts_with("1.26"),
        "{versions}"
    );
    assert!(
        versions["tensorboard"].is_string()
            && versions["python"].as_str().unwrap().starts_with("3.11")
    );
    let (_, label, _) = docker(&[
        "image",
        "inspect",
        "--format",
        "{{index .Config.Labels \"io.image-matrix.version.numpy\"}}",
        &tag_a,
    ]);
    assert_eq!(label.trim(), versions["numpy"].as_str().unwrap());

    // Night 2, same date: nothing is built, nothing is tagged.
    let t = std::time::Instant::now();
    let (code, _, err) = matrix(
        dir.path(),
        &["build", "-j", "2", "--verify", "--date", "20261201"],
    );
    assert_eq!(code, 0, "{err}");
    let m = manifest(&manifest_path);
    assert_eq!(cells_with(&m, "up-to-date"), 2, "{err}");
    assert!(m["cells"]
        .as_array()
        .unwrap()
        .iter()
        .all(|c| c["tags_added"].is_null()));
    eprintln!("second night: {:.1}s", t.elapsed().as_secs_f64());

    // Night 3, a new date: nothing built; tonight's date tags are added.
    let (code, _, err) = matrix(dir.path(), &["build", "-j", "2", "--date", "20261202"]);
    assert_eq!(code, 0, "{err}");
    let m = manifest(&manifest_path);
    assert_eq!(cells_with(&m, "up-to-date"), 2, "{err}");
    let dated = format!("{tag_a}-20261202");
    assert_eq!(on_base(&m, "a")["tags_added"], serde_json::json!([dated]));
    assert_eq!(id_of(&dated), first);

    // The base of cells on b is re-imported with one changed file.
    let (code, cid, err) = docker(&["create", &format!("{repo}/base:b"), "true"]);
    assert_eq!(code, 0, "{err}");
    let cid = cid.trim().to_string();
    std::fs::write(dir.path().join("changed"), "one changed file\n").unwrap();
    let changed = dir.path().join("changed");
    assert_eq!(
        docker(&[
            "cp",
            changed.to_str().unwrap(),
            &format!("{cid}:/etc/image-matrix-changed")
        ])
        .0,
        0
    );
    assert_eq!(docker(&["commit", &cid, &format!("{repo}/base:b")]).0, 0);
    let _ = docker(&["rm", &cid]);
    let (code, diff, err) = matrix(
        dir.path(),
        &["plan", "--diff", "out/manifest.json", "--date", "20261202"],
    );
    assert_eq!(code, 0, "{err}");
    let changed_lines: Vec<&str> = diff.lines().filter(|l| l.contains(" changed ")).collect();
    assert_eq!(
        changed_lines.len(),
        1,
        "exactly the cell on b changes:\n{diff}"
    );
    assert!(changed_lines[0].contains("base digest moved"), "{diff}");
    let b_id = on_base(&manifest(&manifest_path), "b")["id"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(changed_lines[0].starts_with(&b_id), "the cell on b: {diff}");
    let (code, _, err) = matrix(dir.path(), &["build", "-j", "2", "--date", "20261202"]);
    assert_eq!(code, 0, "{err}");
    let m = manifest(&manifest_path);
    assert_eq!(
        (cells_with(&m, "built"), cells_with(&m, "up-to-date")),
        (1, 1),
        "{err}"
    );

    // A build that fails verification leaves the public tag where it was.
    let before = id_of(&tag_a);
    write("runtime: {locale: en_US.UTF-8}\n");
    let (code, _, err) = matrix(
        dir.path(),
        &[
            "build",
            "-j",
            "2",
            "--verify",
            "--date",
            "20261202",
            "--filter",
            "base=*base:a",
        ],
    );
    assert_eq!(code, 1, "{err}");
    let m = manifest(&manifest_path);
    let a = on_base(&m, "a");
    assert_eq!(a["verification"]["ok"], false);
    assert!(a["candidate"].is_string(), "{a}");
    assert!(
        a["reason"].as_str().unwrap().contains("public tags left"),
        "{a}"
    );
    assert_eq!(id_of(&tag_a), before, "the public tag did not move");

    // So does one whose verification is interrupted.
    write("runtime: {timezone: UTC}\n");
    let mut child = Command::new(env!("CARGO_BIN_EXE_matrix"))
        .current_dir(dir.path())
        .env("IMAGE_MATRIX_DATA", "/nonexistent/image-matrix-data")
        .args([
            "build",
            "--verify",
            "--date",
            "20261202",
            "--filter",
            "base=*base:a",
        ])
        .stderr(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    let stderr = child.stderr.take().unwrap();
    for line in BufReader::new(stderr).lines() {
        if line.unwrap().starts_with("verifying") {
            // SAFETY: plain kill(2) on our own child.
            unsafe {
                libc::kill(child.id() as i32, libc::SIGINT);
            }
            break;
        }
    }
    assert_eq!(child.wait().unwrap().code(), Some(130));
    assert_eq!(
        id_of(&tag_a),
        before,
        "an interrupted verification moves no tag"
    );

    // Housekeeping: only this matrix's images that the last run did not use go.
    write("");
    let (code, _, err) = matrix(dir.path(), &["build", "-j", "2", "--date", "20261202"]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(docker(&["tag", BASE, &format!("{repo}/foreign:kept")]).0, 0);
    let (code, _, err) = matrix(dir.path(), &["prune", "--keep", "1"]);
    assert_eq!(code, 0, "{err}");
    assert!(
        err.contains("prune: engine default: removed") && err.contains("MB"),
        "{err}"
    );
    let removed: usize = err
        .split("removed ")
        .nth(1)
        .and_then(|r| r.split(' ').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or(0);
    assert!(removed >= 1, "{err}");
    assert_eq!(
        docker(&["image", "inspect", &format!("{repo}/foreign:kept")]).0,
        0
    );
    let m = manifest(&manifest_path);
    for c in m["cells"].as_array().unwrap() {
        let id = c["image_id"].as_str().unwrap();
        assert_eq!(
            docker(&["image", "inspect", id]).0,
            0,
            "the last run's images stay"
        );
    }
    let _ = docker(&["rmi", &format!("{repo}/foreign:kept")]);
}

#[test]
fn python_3_13_on_debian_trixie_with_numpy_2_and_a_variant_of_its_own() {
    require_environment();
    let (code, _, _) = docker(&["image", "inspect", TRIXIE]);
    assert_eq!(
        code, 0,
        "{TRIXIE} is missing: run scripts/setup-test-env.sh"
    );
    let dir = tempfile::tempdir().unwrap();
    let mirror = Mirror::start_with(
        &dir.path().join("mirror"),
        &["Miniconda3-py313_26.5.3-1-Linux-x86_64.sh"],
    );
    let repo = format!("image-matrix-py313-{}", std::process::id());
    let _cleanup = Cleanup(repo.clone());
    let yaml = LocalMatrix::new(
        &format!("{repo}/miniconda"),
        "conda3-python{python}-{base}-{variant}",
        &mirror,
    )
    .axes(&format!(
        r#"bases:
  - {{image: "{TRIXIE}", os: debian13}}
python:
  - {{version: "3.13", miniconda: "26.5.3-1"}}
variants:
  - name: base
  - name: np22
    override: ["numpy==2.2.6"]
"#
    ))
    .installers(&["Miniconda3-py313_26.5.3-1-Linux-x86_64.sh"])
    .yaml();
    std::fs::write(dir.path().join("matrix.yaml"), yaml).unwrap();
    let (code, out, err) = matrix(dir.path(), &["build", "-j", "2", "--verify"]);
    assert_eq!(code, 0, "{out}\n{err}");
    let m = manifest(&dir.path().join("out/manifest.json"));
    let base = cell(&m, "py3.13-debian13-amd64-base");
    assert_eq!(base["verification"]["ok"], true, "{base}");
    let v = &base["versions"];
    assert!(v["python"].as_str().unwrap().starts_with("3.13"), "{v}");
    assert!(
        v["numpy"].as_str().unwrap().starts_with("2."),
        "numpy 2 on 3.13: {v}"
    );
    assert!(v["tensorboard"].is_string(), "{v}");
    // TensorBoard serves with numpy 2 (verify's tensorboard check), and imports it
    let tag = base["tags"][0].as_str().unwrap();
    let (code, out, err) = docker(&[
        "run",
        "--rm",
        "--network",
        "none",
        "--entrypoint",
        "/opt/miniconda3/bin/python",
        tag,
        "-c",
        "import numpy, tensorboard; print(numpy.__version__, tensorboard.__version__)",
    ]);
    assert_eq!(code, 0, "{err}");
    assert!(out.starts_with("2."), "{out}");
    let np22 = cell(&m, "py3.13-debian13-amd64-np22");
    assert_eq!(
        np22["versions"]["numpy"], "2.2.6",
        "the variant's own numpy"
    );
    assert_eq!(np22["verification"]["ok"], true);
}
