//! The package stack resolves for real on every Python the planner accepts. For each
//! Python from 3.8 to 3.14, pip resolves against the Python package index (wheels
//! only, for manylinux x86_64, without downloading them) the part of the list
//! image-matrix renders for that cell that depends on the Python (numpy with its
//! marker resolved, and TensorBoard, which needs it); for the oldest and the newest
//! Python the whole common list; and for 3.12 and 3.13 a variant's `pandas` under the
//! constraints the common stack's versions make. (Resolving the whole list takes pip
//! about 20 s per Python, so not every Python gets it.) Needs the package index
//! (reachable here and in CI); fails loudly without it.

use std::process::Command;

const PYTHONS: &[(&str, &str)] = &[
    ("3.8", "23.11.0-2"),
    ("3.9", "24.5.0-0"),
    ("3.10", "24.5.0-0"),
    ("3.11", "24.5.0-0"),
    ("3.12", "24.5.0-0"),
    ("3.13", "26.5.3-1"),
    ("3.14", "26.5.3-1"),
];

/// Resolve requirements for a target Python; the report's `name -> version`.
fn resolve(
    py: &str,
    reqs: &str,
    constraints: Option<&str>,
) -> std::collections::BTreeMap<String, String> {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("reqs.txt"), reqs).unwrap();
    let mut cmd = Command::new("python3");
    cmd.args([
        "-m",
        "pip",
        "install",
        "--dry-run",
        "--ignore-installed",
        "--quiet",
    ])
    .args([
        "--only-binary=:all:",
        "--implementation",
        "cp",
        "--python-version",
        py,
    ])
    .args([
        "--platform",
        "manylinux2014_x86_64",
        "--platform",
        "manylinux_2_28_x86_64",
    ])
    .arg("--target")
    .arg(dir.path().join("t"))
    .arg("--report")
    .arg(dir.path().join("report.json"))
    .arg("-r")
    .arg(dir.path().join("reqs.txt"));
    if let Some(c) = constraints {
        std::fs::write(dir.path().join("c.txt"), c).unwrap();
        cmd.arg("-c").arg(dir.path().join("c.txt"));
    }
    let out = cmd.output().expect("python3 -m pip runs");
    assert!(
        out.status.success(),
        "Python {py}: pip cannot resolve\n{reqs}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.path().join("report.json")).unwrap())
            .unwrap();
    report["install"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| {
            (
                i["metadata"]["name"].as_str().unwrap().to_lowercase(),
                i["metadata"]["version"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

#[test]
fn the_stack_resolves_on_every_python_from_3_8_to_3_14() {
    let dir = tempfile::tempdir().unwrap();
    let mut yaml = String::from(
        "version: 1\nimage: {tag: \"c{python}-{variant}\"}\nbases: [ubuntu:24.04]\npython:\n",
    );
    for (py, mc) in PYTHONS {
        yaml.push_str(&format!("  - {{version: \"{py}\", miniconda: \"{mc}\"}}\n"));
    }
    yaml.push_str("variants: [{name: data, pip: [pandas]}]\n");
    std::fs::write(dir.path().join("m.yaml"), yaml).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_matrix"))
        .current_dir(dir.path())
        .args(["-f", "m.yaml", "render", "-o", "ctx"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for (py, _) in PYTHONS {
        let ctx = dir
            .path()
            .join(format!("ctx/py{py}-ubuntu24.04-amd64-data"));
        let full = std::fs::read_to_string(ctx.join("conda/pip-packages.txt")).unwrap();
        let whole = matches!(*py, "3.8" | "3.14");
        let common: String = if whole {
            full.clone()
        } else {
            full.lines()
                .filter(|l| l.starts_with("numpy") || l.starts_with("tensorboard"))
                .map(|l| format!("{l}\n"))
                .collect()
        };
        let stack = resolve(py, &common, None);
        let numpy = &stack["numpy"];
        let major: u32 = numpy.split('.').next().unwrap().parse().unwrap();
        let pinned = common.lines().any(|l| l == "numpy<2.0");
        assert_eq!(major < 2, pinned, "Python {py}: numpy {numpy}");
        assert!(stack.contains_key("tensorboard"));
        assert_eq!(stack.contains_key("jupyterlab"), whole);
        if !matches!(*py, "3.12" | "3.13") {
            eprintln!(
                "Python {py}: numpy {numpy}, tensorboard {}",
                stack["tensorboard"]
            );
            continue;
        }
        // the variant resolves under the stack's versions, and numpy stays put
        let constraints: String = stack.iter().map(|(n, v)| format!("{n}=={v}\n")).collect();
        let variant = std::fs::read_to_string(ctx.join("variant/pip-packages.txt")).unwrap();
        let with_pandas = resolve(py, &format!("{common}{variant}"), Some(&constraints));
        assert_eq!(
            &with_pandas["numpy"], numpy,
            "Python {py}: pandas moved numpy"
        );
        assert!(with_pandas.contains_key("pandas"));
        eprintln!(
            "Python {py}: numpy {numpy}, tensorboard {}, pandas {}",
            stack["tensorboard"], with_pandas["pandas"]
        );
    }
}
