//! The real `matrix` binary driven on temp dirs: plan output in every format, help,
//! rendering, the bad-input corpus, and the fake-docker process tests.

use std::path::{Path, PathBuf};

use assert_cmd::Command;

#[path = "common/schema.rs"]
mod schema;

fn matrix() -> Command {
    let mut c = Command::cargo_bin("matrix").expect("binary");
    // the built-in catalogue, whatever this machine's data directory holds
    c.env_remove("MATRIX_FILE")
        .env("NO_COLOR", "1")
        .env("IMAGE_MATRIX_DATA", "/nonexistent/image-matrix-data");
    c
}

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// Every `"KEY":"VALUE"` of a JSON text with VALUE replaced by `[KEY]`.
fn mask_json_value(text: &str, key: &str) -> String {
    let open = format!("\"{key}\":\"");
    let mut out = String::new();
    let mut rest = text;
    while let Some(i) = rest.find(&open) {
        out.push_str(&rest[..i + open.len()]);
        rest = &rest[i + open.len()..];
        let end = rest.find('"').unwrap_or(rest.len());
        out.push_str(&format!("[{key}]"));
        rest = &rest[end..];
    }
    out.push_str(rest);
    out
}

fn stdout_of(args: &[&str], dir: &Path) -> String {
    let out = matrix().current_dir(dir).args(args).output().expect("run");
    assert!(
        out.status.success(),
        "{args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).expect("utf-8");
    // every plan document the tests see is checked against the shipped schema
    let is_plan_json = args.first() == Some(&"plan") || args.get(2) == Some(&"plan");
    if is_plan_json
        && args.windows(2).any(|w| w == ["--format", "json"])
        && !args.contains(&"--diff")
    {
        schema::check("plan", &serde_json::from_str(&text).expect("plan JSON"));
    }
    text
}

#[test]
fn help_is_stable() {
    insta::assert_snapshot!("help", stdout_of(&["--help"], &root()));
    insta::assert_snapshot!("help_build", stdout_of(&["build", "--help"], &root()));
    insta::assert_snapshot!("help_plan", stdout_of(&["plan", "--help"], &root()));
}

#[test]
fn shipped_matrix_plans_in_every_format() {
    let r = root();
    insta::assert_snapshot!("plan_table", stdout_of(&["plan", "--date", "20260101"], &r));
    insta::assert_snapshot!(
        "plan_json",
        stdout_of(&["plan", "--date", "20260101", "--format", "json"], &r)
    );
    // no engine: bake labels that need the bases' digests are left out, and the ones
    // that move with the clock and the checkout are masked
    let bake = matrix()
        .current_dir(&r)
        .env("DOCKER", "/nonexistent/docker")
        .args([
            "plan",
            "--date",
            "20260101",
            "--format",
            "bake",
            "--filter",
            "python=3.10",
        ])
        .output()
        .expect("run");
    assert!(bake.status.success());
    let mut bake = String::from_utf8(bake.stdout).expect("utf-8");
    for label in [
        "org.opencontainers.image.created",
        "org.opencontainers.image.revision",
    ] {
        bake = mask_json_value(&bake, label);
    }
    insta::assert_snapshot!("plan_bake", bake);
    insta::assert_snapshot!(
        "plan_gha",
        stdout_of(
            &[
                "plan",
                "--date",
                "20260101",
                "--format",
                "gha",
                "--filter",
                "os=ubuntu24.04"
            ],
            &r
        )
    );
}

/// `--format gitlab`: a child pipeline with one build job per shard on a runner of its
/// platform, every job repeating the plan's matrix file, filters and date.
#[test]
fn plan_gitlab_is_a_child_pipeline() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("m.yaml"),
        "version: 1\nimage:\n  repository: registry.example/acme/miniconda\nbases: [ubuntu:22.04, ubuntu:24.04]\npython: [\"3.10\", \"3.11\"]\nplatforms: [linux/amd64, linux/arm64]\n",
    )
    .unwrap();
    insta::assert_snapshot!(
        "plan_gitlab",
        stdout_of(
            &[
                "-f",
                "m.yaml",
                "plan",
                "--date",
                "20260101",
                "--format",
                "gitlab",
                "--shards",
                "3",
                "--filter",
                "python=3.11"
            ],
            dir.path()
        )
    );
    let out = matrix()
        .current_dir(dir.path())
        .args(["-f", "m.yaml", "plan", "--format", "gitlab"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--format gitlab needs --shards N"));
}

/// The seed's own base is end-of-life, so it is built by examples/seed.yaml, not by the
/// shipped matrix.
#[test]
fn the_seed_cell_gets_the_seed_tag_and_installer() {
    let v: serde_json::Value = serde_json::from_str(&stdout_of(
        &[
            "-f",
            "examples/seed.yaml",
            "plan",
            "--format",
            "json",
            "--filter",
            "id=py3.10-cuda12.1.0-cudnn8-devel-ubuntu22.04-amd64",
        ],
        &root(),
    ))
    .unwrap();
    let cells = v["cells"].as_array().unwrap();
    assert_eq!(cells.len(), 1);
    assert_eq!(
        cells[0]["tags"][0],
        "miniconda:conda3-python3.10-cuda12.1.0-cudnn8-devel-ubuntu22.04"
    );
    assert_eq!(
        cells[0]["installer"]["file"],
        "Miniconda3-py310_24.5.0-0-Linux-x86_64.sh"
    );
    assert_eq!(
        cells[0]["installer"]["sha256"],
        "b3d73db6a05069fbdf20dc33fc9b6a29fa7198578f0d090c639f5ca0e84102bd"
    );
    assert_eq!(
        cells[0]["installer"]["urls"][0],
        "https://repo.anaconda.com/miniconda/Miniconda3-py310_24.5.0-0-Linux-x86_64.sh"
    );
    let cpu: serde_json::Value = serde_json::from_str(&stdout_of(
        &[
            "plan",
            "--format",
            "json",
            "--filter",
            "id=py3.10-ubuntu22.04-amd64",
        ],
        &root(),
    ))
    .unwrap();
    assert_eq!(
        cpu["cells"][0]["tags"][0],
        "miniconda:conda3-python3.10-ubuntu22.04"
    );
}

/// Issue 30 item 4: an end-of-life base is warned about with its successor, and a
/// Python past its end of life (on the plan's date) with the day it ended, each at its
/// file, line and key; the shipped matrix has no end-of-life base.
#[test]
fn plan_warns_about_eol_bases_and_pythons_on_stderr() {
    let plan = |args: &[&str]| {
        let out = matrix().current_dir(root()).args(args).output().unwrap();
        assert!(out.status.success());
        assert!(!String::from_utf8_lossy(&out.stdout).contains("warning"));
        String::from_utf8_lossy(&out.stderr).into_owned()
    };
    let err = plan(&["-f", "examples/seed.yaml", "plan", "--date", "20261207"]);
    // the catalogues' age notes move with the clock
    let warnings: Vec<&str> = err.lines().filter(|l| !l.starts_with("note:")).collect();
    insta::assert_snapshot!("plan_seed_warnings", warnings.join("\n"));
    assert!(
        err.contains("examples/seed.yaml:30:5: warning: `bases[0]`: nvidia/cuda:12.1.0-cudnn8-devel-ubuntu22.04 is end-of-life")
            && err.contains("its supported successor is `nvidia/cuda:12.1.1-cudnn8-devel-ubuntu22.04`"),
        "{err}"
    );
    assert!(
        err.contains("examples/seed.yaml:34:14: warning: `python[0]`: Python 3.8 reached its end of life on 2024-10-07"),
        "{err}"
    );
    // before Python 3.10's end of life, only 3.8 is past it
    let err = plan(&["-f", "examples/seed.yaml", "plan", "--date", "20260101"]);
    assert!(err.contains("Python 3.8 reached"), "{err}");
    assert!(!err.contains("Python 3.10 reached"), "{err}");
    let err = plan(&["plan", "--date", "20261207"]);
    assert!(!err.contains("is end-of-life"), "{err}");
    assert!(
        err.contains("matrix.yaml:33:5: warning: `python[0]`: Python 3.10 reached its end of life in 2026-10"),
        "{err}"
    );
}

#[test]
fn ids_do_not_depend_on_yaml_order() {
    let dir = tempfile::tempdir().unwrap();
    let a = "version: 1\nbases: [ubuntu:22.04, ubuntu:24.04]\npython: [\"3.10\", \"3.9\"]\n";
    let b = "version: 1\npython: [\"3.9\", \"3.10\"]\nbases: [ubuntu:24.04, ubuntu:22.04]\n";
    std::fs::write(dir.path().join("a.yaml"), a).unwrap();
    std::fs::write(dir.path().join("b.yaml"), b).unwrap();
    let ids = |f: &str| {
        let v: serde_json::Value = serde_json::from_str(&stdout_of(
            &["-f", f, "plan", "--format", "json"],
            dir.path(),
        ))
        .unwrap();
        v["cells"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| c["id"].as_str().unwrap().to_string())
            .collect::<Vec<_>>()
    };
    let ia = ids("a.yaml");
    assert_eq!(ia, ids("b.yaml"));
    // versions sort as versions: 3.9 before 3.10
    assert_eq!(
        ia,
        [
            "py3.9-ubuntu22.04-amd64",
            "py3.10-ubuntu22.04-amd64",
            "py3.9-ubuntu24.04-amd64",
            "py3.10-ubuntu24.04-amd64"
        ]
    );
}

#[test]
fn filters_select_and_bad_filters_are_refused() {
    let out = stdout_of(
        &[
            "plan",
            "--format",
            "gha",
            "--filter",
            "python=3.1*",
            "--filter",
            "cuda=12.4.1",
        ],
        &root(),
    );
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    let ids: Vec<&str> = v["include"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["id"].as_str().unwrap())
        .collect();
    assert_eq!(
        ids,
        [
            "py3.10-cuda12.4.1-cudnn-devel-ubuntu22.04-amd64",
            "py3.11-cuda12.4.1-cudnn-devel-ubuntu22.04-amd64",
            "py3.12-cuda12.4.1-cudnn-devel-ubuntu22.04-amd64"
        ]
    );
    matrix()
        .current_dir(root())
        .args(["plan", "--filter", "pyton=3.10"])
        .assert()
        .code(2)
        .stderr(predicates::str::contains("did you mean `python`?"));
}

/// Every file in tests/bad is refused with exit 3 and exactly the expected message.
/// Set UPDATE_EXPECT=1 to rewrite the .stderr files (then review them).
#[test]
fn bad_input_corpus() {
    let dir = root().join("tests/bad");
    let mut cases: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
        .collect();
    cases.sort();
    assert!(cases.len() >= 15);
    let mut failures = Vec::new();
    for case in &cases {
        let name = case.file_name().unwrap().to_str().unwrap();
        let out = matrix()
            .current_dir(&dir)
            // a fixed date: warnings about Pythons past their end of life move with it
            .args(["-f", name, "plan", "--date", "20260101"])
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr).to_string();
        assert!(!stderr.contains("panicked"), "{name} panicked: {stderr}");
        assert_eq!(out.status.code(), Some(3), "{name}: {stderr}");
        assert!(out.stdout.is_empty(), "{name} printed a plan");
        let expected_path = case.with_extension("stderr");
        if std::env::var_os("UPDATE_EXPECT").is_some() {
            std::fs::write(&expected_path, &stderr).unwrap();
            continue;
        }
        let expected = std::fs::read_to_string(&expected_path).unwrap_or_default();
        if expected != stderr {
            failures.push(format!("== {name}\nexpected:\n{expected}\ngot:\n{stderr}"));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn a_huge_matrix_is_refused_before_expansion() {
    let dir = tempfile::tempdir().unwrap();
    let bases: Vec<String> = (0..400)
        .map(|i| format!("  - {{image: \"reg.example/b{i}:x\", os: ubuntu22.04}}\n"))
        .collect();
    let yaml = format!(
        "version: 1\nbases:\n{}python: [\"3.9\", \"3.10\", \"3.11\"]\n",
        bases.concat()
    );
    std::fs::write(dir.path().join("m.yaml"), yaml).unwrap();
    matrix()
        .current_dir(dir.path())
        .args(["-f", "m.yaml", "plan"])
        .assert()
        .code(3)
        .stderr(predicates::str::contains("expands to 1200 cells (400 bases × 3 pythons × 1 variants × 1 platforms), over the cap of 1000"));
}

#[test]
fn a_missing_matrix_file_is_named() {
    matrix()
        .args(["-f", "/nonexistent/m.yaml", "plan"])
        .assert()
        .code(3)
        .stderr(predicates::str::contains("cannot read /nonexistent/m.yaml"));
}

fn rendered(filter: &str) -> String {
    let out = tempfile::tempdir().unwrap();
    matrix()
        .current_dir(root())
        .args(["render", "--filter", filter, "-o"])
        .arg(out.path())
        .assert()
        .success();
    let mut dirs: Vec<PathBuf> = std::fs::read_dir(out.path())
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    assert_eq!(dirs.len(), 1, "{filter} selects one cell");
    describe_context(&dirs.remove(0))
}

/// The per-cell files of a rendered context in full, then the list of all its files.
fn describe_context(dir: &Path) -> String {
    // Files rendered per cell, in full; static scripts are the same for every cell.
    let mut s = String::new();
    for f in [
        "Dockerfile",
        "system/system.env",
        "system/apt-packages.txt",
        "system/locale.sh",
        "conda/conda.env",
        "conda/mirrors.txt",
        "conda/pip-packages.txt",
        "conda/overrides.json",
        "image/init/etc/defaults.env",
    ] {
        s.push_str(&format!(
            "==> {f}\n{}\n",
            std::fs::read_to_string(dir.join(f)).unwrap()
        ));
    }
    let mut all: Vec<String> = walk(dir)
        .into_iter()
        .map(|p| p.strip_prefix(dir).unwrap().display().to_string())
        .collect();
    all.sort();
    s.push_str(&format!("==> files\n{}\n", all.join("\n")));
    s
}

fn walk(d: &Path) -> Vec<PathBuf> {
    let mut v = Vec::new();
    for e in std::fs::read_dir(d).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            v.extend(walk(&p));
        } else {
            v.push(p);
        }
    }
    v
}

#[test]
fn rendered_contexts_for_cuda_cpu_and_debian_cells() {
    insta::assert_snapshot!("render_cuda_ubuntu", rendered("id=py3.10-cuda12.1.1-*"));
    insta::assert_snapshot!("render_cpu_ubuntu", rendered("id=py3.11-ubuntu22.04-amd64"));
    let dir = tempfile::tempdir().unwrap();
    let yaml = "version: 1\nbases: [\"debian:bookworm\"]\npython: [\"3.11\"]\nruntime:\n  root_password: {fixed: \"123456\"}\n";
    std::fs::write(dir.path().join("m.yaml"), yaml).unwrap();
    let out = dir.path().join("ctx");
    let res = matrix()
        .current_dir(dir.path())
        .args(["-f", "m.yaml", "render", "-o"])
        .arg(&out)
        .output()
        .unwrap();
    assert!(res.status.success());
    assert!(String::from_utf8_lossy(&res.stderr)
        .contains("a fixed root password is the same in every container"));
    let ctx = out.join("py3.11-debian12-amd64");
    insta::assert_snapshot!("render_debian", describe_context(&ctx));
    let hash = std::fs::read_to_string(ctx.join("image/init/etc/root-password.hash")).unwrap();
    assert!(
        hash.starts_with("$6$") && !hash.contains("123456"),
        "{hash}"
    );
    // the plaintext reaches no file of the context
    for f in walk(&ctx) {
        assert!(
            !std::fs::read_to_string(&f)
                .unwrap_or_default()
                .contains("123456"),
            "{} holds the password",
            f.display()
        );
    }
}

#[test]
fn rendering_is_deterministic() {
    assert_eq!(
        rendered("id=py3.11-ubuntu22.04-amd64"),
        rendered("id=py3.11-ubuntu22.04-amd64")
    );
}

#[test]
fn gha_shards_group_cells_by_base() {
    let out = stdout_of(&["plan", "--format", "gha", "--shards", "3"], &root());
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    let shards = v["include"].as_array().unwrap();
    assert_eq!(shards.len(), 3);
    let total: u64 = shards.iter().map(|s| s["count"].as_u64().unwrap()).sum();
    assert_eq!(total, 35, "every planned cell of the shipped matrix");
    // each build job selects exactly its shard's cells
    for s in shards {
        let shard = s["shard"].as_str().unwrap();
        let plan: serde_json::Value = serde_json::from_str(&stdout_of(
            &["plan", "--format", "json", "--shard", shard],
            &root(),
        ))
        .unwrap();
        let ids: Vec<&str> = plan["cells"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| c["id"].as_str().unwrap())
            .collect();
        let want: Vec<&str> = s["ids"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| c.as_str().unwrap())
            .collect();
        assert_eq!(ids, want, "shard {shard}");
        let bases: std::collections::BTreeSet<&str> = plan["cells"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| c["base"].as_str().unwrap())
            .collect();
        for other in shards.iter().filter(|o| o["shard"] != s["shard"]) {
            let o: serde_json::Value = serde_json::from_str(&stdout_of(
                &[
                    "plan",
                    "--format",
                    "json",
                    "--shard",
                    other["shard"].as_str().unwrap(),
                ],
                &root(),
            ))
            .unwrap();
            assert!(
                o["cells"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .all(|c| !bases.contains(c["base"].as_str().unwrap())),
                "a base is split across shards"
            );
        }
    }
}

#[test]
fn plan_names_the_engines_of_the_matrix() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("matrix.yaml"),
        "version: 1\nbases: [ubuntu:22.04]\npython: [\"3.10\"]\nengines:\n  - {name: a, host: \"unix:///run/a.sock\", jobs: 3}\n  - {name: gpu, context: gpu-box}\n",
    )
    .unwrap();
    let out = stdout_of(&["plan"], dir.path());
    assert!(
        out.ends_with(
            "engines: a (unix:///run/a.sock, 3 builds), gpu (context gpu-box, -j builds)\n"
        ),
        "{out}"
    );
}

#[test]
fn a_byte_order_mark_is_legal_and_a_fifo_is_refused_at_once() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("m.yaml"),
        "\u{feff}version: 1\nbases: [ubuntu:22.04]\npython: [\"3.11\"]\n",
    )
    .unwrap();
    matrix()
        .current_dir(dir.path())
        .args(["-f", "m.yaml", "plan"])
        .assert()
        .success()
        .stdout(predicates::str::contains("py3.11-ubuntu22.04-amd64"));
    let fifo = dir.path().join("fifo.yaml");
    let c = std::ffi::CString::new(fifo.to_str().unwrap()).unwrap();
    // SAFETY: mkfifo reads a valid NUL-terminated path.
    assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o644) }, 0);
    matrix()
        .current_dir(dir.path())
        .args(["-f", "fifo.yaml", "plan"])
        .timeout(std::time::Duration::from_secs(10))
        .assert()
        .code(3)
        .stderr(predicates::str::contains("not a regular file"));
}

#[test]
fn options_are_checked_like_the_matrix_values_they_override() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("matrix.yaml"),
        "version: 1\nbases: [ubuntu:22.04]\npython: [\"3.11\"]\n",
    )
    .unwrap();
    matrix()
        .current_dir(dir.path())
        .args(["build", "--network", "host --privileged"])
        .assert()
        .code(2)
        .stderr(predicates::str::contains("not a valid network name"));
    matrix()
        .current_dir(dir.path())
        .args(["build", "-j", "0"])
        .assert()
        .code(2)
        .stderr(predicates::str::contains("expected 1 to 256"));
    matrix()
        .current_dir(dir.path())
        .args([
            "build",
            "--engine",
            "a=unix:///run/a.sock",
            "--engine",
            "a=unix:///run/b.sock",
        ])
        .assert()
        .code(2)
        .stderr(predicates::str::contains("--engine a is given twice"));
}

/// Candidates bash offers for the last word of `words`, through the completion
/// function `matrix completions bash` registers (found with `complete -p`, as bash
/// itself finds it when TAB is pressed).
fn bash_completes(script: &Path, words: &[&str]) -> Vec<String> {
    let prog = r#"
source "$1" || exit 90
spec=$(complete -p matrix) || exit 91
fn=${spec##*-F }; fn=${fn%% *}
shift
COMP_WORDS=("$@"); COMP_CWORD=$(( ${#COMP_WORDS[@]} - 1 ))
COMP_LINE="${COMP_WORDS[*]}"; COMP_POINT=${#COMP_LINE}
prev=""; [ "$COMP_CWORD" -gt 0 ] && prev=${COMP_WORDS[COMP_CWORD-1]}
"$fn" matrix "${COMP_WORDS[COMP_CWORD]}" "$prev"
printf '%s\n' "${COMPREPLY[@]}"
"#;
    let out = std::process::Command::new("bash")
        .args(["--norc", "--noprofile", "-c", prog, "bash"])
        .arg(script)
        .args(words)
        .output()
        .expect("bash runs");
    assert!(
        out.status.success(),
        "completion failed ({:?}): {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|l| !l.is_empty())
        .map(str::to_string)
        .collect()
}

#[test]
fn bash_completes_commands_and_option_values() {
    let dir = tempfile::tempdir().unwrap();
    let script = dir.path().join("matrix.bash");
    std::fs::write(&script, stdout_of(&["completions", "bash"], &root())).unwrap();
    assert_eq!(bash_completes(&script, &["matrix", "bu"]), ["build"]);
    assert_eq!(
        bash_completes(&script, &["matrix", "build", "--progress", ""]),
        ["auto", "tty", "plain", "json", "quiet"]
    );
    let shells = bash_completes(&script, &["matrix", "completions", ""]);
    for s in ["bash", "zsh", "fish"] {
        assert!(shells.iter().any(|c| c == s), "{shells:?}");
    }
}

/// What build.rs records for a directory: compiled and run as cargo would.
fn build_script_commit(dir: &Path) -> String {
    let bin_dir = tempfile::tempdir().unwrap();
    let bin = bin_dir.path().join("build-script");
    let rustc = std::env::var("RUSTC").unwrap_or_else(|_| "rustc".into());
    let status = std::process::Command::new(rustc)
        .args(["--edition", "2021", "-o"])
        .arg(&bin)
        .arg(root().join("build.rs"))
        .status()
        .expect("rustc runs");
    assert!(status.success());
    let out = std::process::Command::new(&bin)
        .env("CARGO_MANIFEST_DIR", dir)
        .output()
        .unwrap();
    assert!(out.status.success(), "the build script failed in {dir:?}");
    let text = String::from_utf8(out.stdout).unwrap();
    text.lines()
        .find_map(|l| l.strip_prefix("cargo:rustc-env=IMAGE_MATRIX_COMMIT="))
        .unwrap_or_else(|| panic!("no commit recorded: {text}"))
        .to_string()
}

fn git(dir: &Path, args: &[&str]) -> Option<String> {
    let out = std::process::Command::new("git")
        .arg("-C")
        .arg(dir)
        .args(args)
        .output()
        .ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).trim().to_string())
}

#[test]
fn version_names_the_commit_and_a_tarball_builds_without_git() {
    // this checkout (a tarball of it would say "unknown")
    let here = git(&root(), &["rev-parse", "--show-toplevel"])
        .filter(|top| Path::new(top).canonicalize().ok() == root().canonicalize().ok())
        .and_then(|_| git(&root(), &["rev-parse", "--short=12", "HEAD"]))
        .unwrap_or_else(|| "unknown".into());
    assert_eq!(
        stdout_of(&["--version"], &root()).trim(),
        format!("matrix {} ({here})", env!("CARGO_PKG_VERSION"))
    );
    // an unpacked tarball: no git at all
    let plain = tempfile::tempdir().unwrap();
    assert_eq!(build_script_commit(plain.path()), "unknown");
    // a tarball unpacked inside another repository does not take that one's commit
    let outer = tempfile::tempdir().unwrap();
    let o = outer.path();
    git(o, &["init", "-q"]).expect("git init");
    git(
        o,
        &[
            "-c",
            "user.name=t",
            "-c",
            "user.email=t@t",
            "commit",
            "-q",
            "--allow-empty",
            "-m",
            "x",
        ],
    )
    .expect("git commit");
    std::fs::create_dir(o.join("image-matrix-0.1.0")).unwrap();
    assert_eq!(
        build_script_commit(&o.join("image-matrix-0.1.0")),
        "unknown"
    );
    assert_ne!(
        build_script_commit(o),
        "unknown",
        "the repository's own top"
    );
    // a crate packaged by cargo: the commit it recorded
    std::fs::write(
        plain.path().join(".cargo_vcs_info.json"),
        "{\n  \"git\": {\n    \"sha1\": \"0123456789abcdef0123456789abcdef01234567\"\n  },\n  \"path_in_vcs\": \"\"\n}\n",
    )
    .unwrap();
    assert_eq!(build_script_commit(plain.path()), "0123456789ab");
}

#[test]
fn the_shipped_matrices_are_valid_against_the_shipped_schema() {
    let r = root();
    let mut files = vec![r.join("matrix.yaml")];
    for dir in ["examples", "tests/catalogue"] {
        if let Ok(entries) = std::fs::read_dir(r.join(dir)) {
            files.extend(
                entries
                    .map(|e| e.unwrap().path())
                    .filter(|p| p.extension().is_some_and(|e| e == "yaml")),
            );
        }
    }
    files.push(r.join("examples/local.yaml.tmpl"));
    let first = std::fs::read_to_string(r.join("matrix.yaml")).unwrap();
    assert!(
        first.starts_with("# yaml-language-server: $schema=schemas/matrix.schema.json"),
        "the shipped matrix names its schema for editors"
    );
    for f in &files {
        // the local nightly's template, as scripts/nightly-local.sh fills it in
        let text = std::fs::read_to_string(f)
            .unwrap()
            .replace("@PORT@", "38471")
            .replace("@SHA256@", &"0".repeat(64))
            .replace("@CA@", "/etc/ssl/certs/ca-certificates.crt");
        let doc: serde_json::Value =
            serde_yaml::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", f.display()));
        schema::check("matrix", &doc);
    }
    // and the schema is not a blank cheque: a misspelt key and an unquoted version fail
    let v: serde_json::Value = serde_yaml::from_str(&first).unwrap();
    for (key, bad) in [
        ("pyhton", serde_json::json!(["3.10"])),
        ("python", serde_json::json!([3.1])),
    ] {
        let mut broken = v.clone();
        broken[key] = bad;
        let r = std::panic::catch_unwind(|| schema::check("matrix", &broken));
        assert!(r.is_err(), "{key} should be refused");
    }
}

/// examples/pytorch.yaml: per PyTorch image, the three versions, the wheel variant
/// chosen for its base, the index URL and the parent cell.
#[test]
fn the_pytorch_example_plans_the_seed_family() {
    let text = stdout_of(
        &["-f", "examples/pytorch.yaml", "plan", "--format", "json"],
        &root(),
    );
    let doc: serde_json::Value = serde_json::from_str(&text).unwrap();
    let cells = doc["cells"].as_array().unwrap();
    let torch: Vec<&serde_json::Value> = cells
        .iter()
        .filter(|c| c["framework"].is_object())
        .collect();
    // 2 releases x (3 CUDA bases + 1 CPU base) x 3 Pythons
    assert_eq!((cells.len(), torch.len()), (36, 24));
    let find = |id: &str| {
        torch
            .iter()
            .find(|c| c["id"] == id)
            .unwrap_or_else(|| panic!("{id}"))
    };
    for (id, wheel, versions) in [
        (
            "py3.10-cuda12.1.1-cudnn8-devel-ubuntu22.04-amd64-torch2.3.0",
            "cu121",
            ["2.3.0", "0.18.0", "2.3.0"],
        ),
        (
            "py3.12-cuda12.4.1-cudnn-devel-ubuntu22.04-amd64-torch2.4.1",
            "cu124",
            ["2.4.1", "0.19.1", "2.4.1"],
        ),
        (
            "py3.11-cuda11.8.0-cudnn8-devel-ubuntu22.04-amd64-torch2.4.1",
            "cu118",
            ["2.4.1", "0.19.1", "2.4.1"],
        ),
        (
            "py3.11-ubuntu22.04-amd64-torch2.3.0",
            "cpu",
            ["2.3.0", "0.18.0", "2.3.0"],
        ),
    ] {
        let f = &find(id)["framework"];
        assert_eq!(f["wheel"], wheel, "{id}");
        let got: Vec<&str> = f["packages"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| p["version"].as_str().unwrap())
            .collect();
        assert_eq!(got, versions, "{id}");
        assert_eq!(
            f["index_urls"][0],
            format!("https://download.pytorch.org/whl/{wheel}"),
            "{id}"
        );
        let parent = id.rsplit_once("-torch").unwrap().0;
        assert_eq!(f["parent"], parent, "{id}");
        assert!(
            cells.iter().any(|c| c["id"] == parent),
            "{id}: parent planned"
        );
    }
}

/// examples/seed.yaml: exactly the seed's three images with the seed's tags, each
/// family in its own repository, plus the Python 3.8 Miniconda parent of its PyTorch
/// image; TensorFlow 2.15.0 (CUDA 12.2) on the 12.1.0 base with TensorRT beside it.
#[test]
fn the_seed_example_plans_the_seeds_images() {
    let r = root();
    let table = stdout_of(
        &["-f", "examples/seed.yaml", "plan", "--date", "20260101"],
        &r,
    );
    insta::assert_snapshot!("plan_seed", table);
    let text = stdout_of(
        &[
            "-f",
            "examples/seed.yaml",
            "plan",
            "--date",
            "20260101",
            "--format",
            "json",
        ],
        &r,
    );
    let doc: serde_json::Value = serde_json::from_str(&text).unwrap();
    let cells = doc["cells"].as_array().unwrap();
    let tags: Vec<&str> = cells
        .iter()
        .flat_map(|c| c["tags"].as_array().unwrap())
        .map(|t| t.as_str().unwrap())
        .collect();
    assert_eq!(
        tags,
        [
            "miniconda:conda3-python3.8-cuda12.1.0-cudnn8-devel-ubuntu22.04",
            "pytorch:2.3.0-python3.8-cuda12.1.0-cudnn8-devel-ubuntu22.04",
            "miniconda:conda3-python3.10-cuda12.1.0-cudnn8-devel-ubuntu22.04",
            "tensorflow:2.15.0-python3.10-cuda12.1.0-cudnn8-devel-ubuntu22.04",
        ]
    );
    let torch = &cells[1]["framework"];
    assert_eq!(
        torch["requirements"],
        serde_json::json!(["torch==2.3.0", "torchvision==0.18.0", "torchaudio==2.3.0"])
    );
    assert_eq!(
        torch["index_urls"][0],
        "https://download.pytorch.org/whl/cu121"
    );
    assert_eq!(torch["parent"], cells[0]["id"]);
    assert_eq!(
        cells[0]["installer"]["file"],
        "Miniconda3-py38_23.11.0-2-Linux-x86_64.sh"
    );
    assert_eq!(
        cells[2]["installer"]["file"],
        "Miniconda3-py310_24.5.0-0-Linux-x86_64.sh"
    );
    let tf = &cells[3]["framework"];
    assert_eq!(
        tf["requirements"],
        serde_json::json!(["tensorflow[and-cuda]==2.15.0", "tensorrt==8.6.1"])
    );
    assert_eq!(tf["extra_pip"], serde_json::json!(["tensorrt==8.6.1"]));
    assert_eq!(
        (tf["wheel"].as_str(), tf["parent"].as_str()),
        (Some("cu122"), cells[2]["id"].as_str())
    );
    for c in cells {
        assert_eq!(c["base"], "nvidia/cuda:12.1.0-cudnn8-devel-ubuntu22.04");
    }
}

/// `render --run-examples`: the Kubernetes Deployment and Service of every image pass
/// the official schemas (Kubernetes 1.31, strict; tests/k8s/README.md names the
/// source), with the three ports and a GPU limit exactly on CUDA images.
#[test]
fn run_examples_pass_the_kubernetes_schemas() {
    let out = tempfile::tempdir().unwrap();
    let o = out.path().to_str().unwrap();
    stdout_of(
        &[
            "-f",
            "examples/pytorch.yaml",
            "render",
            "--run-examples",
            "--filter",
            "python=3.11",
            "-o",
            o,
        ],
        &root(),
    );
    let schema = |kind: &str| {
        let text = std::fs::read_to_string(root().join(format!("tests/k8s/{kind}.json"))).unwrap();
        jsonschema::options()
            .build(&serde_json::from_str(&text).unwrap())
            .unwrap()
    };
    let (deployment, service) = (schema("deployment-apps-v1"), schema("service-v1"));
    let mut seen = 0;
    for entry in std::fs::read_dir(out.path()).unwrap() {
        let dir = entry.unwrap().path();
        let id = dir.file_name().unwrap().to_str().unwrap().to_string();
        let text = std::fs::read_to_string(dir.join("run/kubernetes.json")).unwrap();
        let list: serde_json::Value = serde_json::from_str(&text).unwrap();
        let items = list["items"].as_array().unwrap();
        assert_eq!(items.len(), 2, "{id}");
        for (item, v) in items.iter().zip([&deployment, &service]) {
            let errors: Vec<String> = v
                .iter_errors(item)
                .map(|e| format!("{e} at {}", e.instance_path()))
                .collect();
            assert!(errors.is_empty(), "{id} {}: {errors:?}", item["kind"]);
        }
        let container = &items[0]["spec"]["template"]["spec"]["containers"][0];
        let ports: Vec<u64> = container["ports"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| p["containerPort"].as_u64().unwrap())
            .collect();
        assert_eq!(ports, [22, 8888, 6006], "{id}");
        let gpu = &container["resources"]["limits"]["nvidia.com/gpu"];
        assert_eq!(gpu.is_number(), id.contains("cuda"), "{id}");
        let run = std::fs::read_to_string(dir.join("run/docker-run.sh")).unwrap();
        assert_eq!(run.contains("--gpus all"), id.contains("cuda"), "{id}");
        assert!(
            run.contains("-p 22:22")
                && run.contains("-p 8888:8888")
                && run.contains("-p 6006:6006"),
            "{run}"
        );
        seen += 1;
    }
    assert_eq!(seen, 12, "4 bases x (1 Miniconda + 2 PyTorch images)");
    // a broken Deployment is caught: the schemas are not vacuous
    let mut broken = serde_json::json!({"apiVersion": "apps/v1", "kind": "Deployment", "spec": {"replicas": "one"}});
    assert!(!deployment.is_valid(&broken));
    broken["spec"] = serde_json::json!({"selector": {}, "template": {}, "replicaz": 1});
    assert!(!deployment.is_valid(&broken));
}

/// The bake document links each framework image to its parent's target
/// (`contexts` with `target:`), and the GitHub Actions matrix names the parent.
#[test]
fn bake_and_gha_link_framework_images_to_their_parents() {
    let text = stdout_of(
        &["-f", "examples/pytorch.yaml", "plan", "--format", "bake"],
        &root(),
    );
    let bake: serde_json::Value = serde_json::from_str(&text).unwrap();
    let targets = bake["target"].as_object().unwrap();
    let child = &targets["py3_11-cuda12_1_1-cudnn8-devel-ubuntu22_04-amd64-torch2_4_1"];
    assert_eq!(child["args"]["PARENT"], "parent");
    let parent = child["contexts"]["parent"].as_str().unwrap();
    assert_eq!(
        parent,
        "target:py3_11-cuda12_1_1-cudnn8-devel-ubuntu22_04-amd64"
    );
    assert!(targets.contains_key(parent.trim_start_matches("target:")));
    assert!(targets["py3_11-cuda12_1_1-cudnn8-devel-ubuntu22_04-amd64"]["contexts"].is_null());
    let text = stdout_of(
        &["-f", "examples/pytorch.yaml", "plan", "--format", "gha"],
        &root(),
    );
    let gha: serde_json::Value = serde_json::from_str(&text).unwrap();
    let entry = gha["include"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["id"] == "py3.12-ubuntu22.04-amd64-torch2.3.0")
        .unwrap();
    assert_eq!(entry["parent"], "py3.12-ubuntu22.04-amd64");
}

#[test]
fn a_staging_repository_must_be_private_and_on_the_matrix_registry() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("matrix.yaml"),
        "version: 1\nimage:\n  repository: reg.example:5000/ml/conda\nbases: [ubuntu:22.04]\npython: [\"3.11\"]\n",
    )
    .unwrap();
    for (stage, why) in [
        ("other.example/x", "is on other.example"),
        (
            "reg.example:5000/ml/conda",
            "is the matrix's public repository",
        ),
    ] {
        let out = matrix()
            .current_dir(dir.path())
            .args(["build", "--verify", "--stage", stage])
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{err}");
        assert!(
            err.contains(why) && err.contains("reg.example:5000/ml/conda-staging"),
            "{err}"
        );
    }
}

/// examples/families.yaml: a tree three deep (Miniconda → vision → serve) on each
/// base, every image tagged in its family's repository, its plan JSON (checked against
/// the shipped schema) naming each layer's parent, services and checks; a bake file
/// builds each layer `FROM` its parent's target.
#[test]
fn the_families_example_plans_a_tree_of_families() {
    let r = root();
    let table = stdout_of(
        &["-f", "examples/families.yaml", "plan", "--date", "20260101"],
        &r,
    );
    insta::assert_snapshot!("plan_families", table);
    let text = stdout_of(
        &[
            "-f",
            "examples/families.yaml",
            "plan",
            "--date",
            "20260101",
            "--format",
            "json",
        ],
        &r,
    );
    let doc: serde_json::Value = serde_json::from_str(&text).unwrap();
    let cells = doc["cells"].as_array().unwrap();
    assert_eq!(cells.len(), 6);
    let serve = cells
        .iter()
        .find(|c| c["id"] == "py3.11-ubuntu22.04-amd64-vision11.0.0-serve0.1.0")
        .unwrap();
    let f = &serve["family"];
    assert_eq!(f["family"], "serve");
    assert_eq!(f["parent"], "py3.11-ubuntu22.04-amd64-vision11.0.0");
    assert_eq!(
        f["parent_tag"],
        "vision:pillow11.0.0-python3.11-ubuntu22.04"
    );
    assert_eq!(f["services"][0]["port_env"], "SERVE_PORT");
    assert_eq!(f["checks"][0]["expect"], "\"version\":\"0.1.0\"");
    assert_eq!(f["script"]["file"], "families/serve-setup.sh");
    let bake = stdout_of(
        &[
            "-f",
            "examples/families.yaml",
            "plan",
            "--date",
            "20260101",
            "--format",
            "bake",
        ],
        &r,
    );
    let bake: serde_json::Value = serde_json::from_str(&bake).unwrap();
    let t = &bake["target"]["py3_11-ubuntu22_04-amd64-vision11_0_0-serve0_1_0"];
    assert_eq!(
        t["contexts"]["parent"], "target:py3_11-ubuntu22_04-amd64-vision11_0_0",
        "{t}"
    );
}
