//! The CI examples are valid and do what they say: examples/github-workflow.yml,
//! examples/github-workflow-self-hosted.yml and examples/gitlab-ci.yml, and the child
//! pipeline `matrix plan --format gitlab` writes, validated against the schemas GitHub's
//! and GitLab's editors use (check-jsonschema's `vendor.github-workflows` and
//! `vendor.gitlab-ci`; a broken copy is rejected, so the check can fail); and every
//! `matrix …` line of the hosted workflow and of the GitLab pipelines run as written,
//! job by job, each build job on a fake docker of its own (a runner thrown away
//! after its job), an arm64 shard on an arm64 one. The fake cannot verify an image, so
//! no shard stages anything, and `matrix publish` refuses at the point it must:
//! "publishing nothing", after the merge and the login worked. (The self-hosted
//! workflow's commands run in tests/fake_docker.rs; publishing to a real registry in
//! tests/multiarch_e2e.rs.)
//!
//! check-jsonschema and jq come from scripts/setup-ci-check.sh (scripts/test.sh runs
//! it); without them these tests fail and say so.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use serde_yaml::Value;

const SETUP: &str = "run scripts/setup-ci-check.sh (scripts/test.sh does)";

/// Two platforms, two bases: with 4 shards, one cell per shard, two of them arm64.
const MATRIX: &str = "version: 1\nimage:\n  repository: registry.example/acme/miniconda\nbases: [ubuntu:22.04, ubuntu:24.04]\npython: [\"3.11\"]\nplatforms: [linux/amd64, linux/arm64]\n";
const REGISTRY: &str = "registry.example";
const STAGING: &str = "registry.example/acme/miniconda-staging";

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn check_jsonschema() -> PathBuf {
    let installed = std::env::var_os("IMAGE_MATRIX_CHECK_JSONSCHEMA_VENV")
        .map_or_else(
            || PathBuf::from("/usr/local/lib/image-matrix/check-jsonschema"),
            PathBuf::from,
        )
        .join("bin/check-jsonschema");
    let found = [installed, PathBuf::from("check-jsonschema")]
        .into_iter()
        .find(|p| {
            Command::new(p)
                .arg("--version")
                .output()
                .is_ok_and(|o| o.status.success())
        });
    found.unwrap_or_else(|| panic!("check-jsonschema is not installed: {SETUP}"))
}

/// check-jsonschema with a built-in schema on `files`: (passed, its output).
fn validate(schema: &str, files: &[&Path]) -> (bool, String) {
    let out = Command::new(check_jsonschema())
        .args(["--builtin-schema", schema])
        .args(files)
        .output()
        .unwrap();
    (
        out.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

fn yaml(path: &Path) -> Value {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_yaml::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn s(v: &Value) -> &str {
    v.as_str().unwrap_or_default()
}

/// Whether a shell line runs `matrix` (first, or after a pipe).
fn runs_matrix(line: &str) -> bool {
    line.trim_start().starts_with("matrix ") || line.contains("| matrix ")
}

/// A place where CI jobs run: a checkout with the test matrix, `matrix` on PATH, and
/// the fake docker.
struct Ci {
    dir: tempfile::TempDir,
    /// The variables every job gets.
    env: BTreeMap<String, String>,
}

/// What a step did.
struct Ran {
    code: i32,
    stderr: String,
}

impl Ci {
    fn new() -> Ci {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("matrix.yaml"), MATRIX).unwrap();
        let bin = dir.path().join("bin");
        std::fs::create_dir(&bin).unwrap();
        std::os::unix::fs::symlink(env!("CARGO_BIN_EXE_matrix"), bin.join("matrix")).unwrap();
        let path = format!(
            "{}:{}",
            bin.display(),
            std::env::var("PATH").unwrap_or_default()
        );
        let mut env = BTreeMap::new();
        for (k, v) in [
            ("PATH", path.as_str()),
            ("NO_COLOR", "1"),
            ("IMAGE_MATRIX_DATA", "/nonexistent/image-matrix-data"),
            (
                "DOCKER",
                &root().join("tests/fake/docker").display().to_string(),
            ),
            (
                "IMAGE_MATRIX_BINFMT_DIR",
                &dir.path().join("binfmt").display().to_string(),
            ),
        ] {
            env.insert(k.to_string(), v.to_string());
        }
        Ci { dir, env }
    }

    fn path(&self, p: &str) -> PathBuf {
        self.dir.path().join(p)
    }

    /// A fresh runner: its own docker (state) and docker config, of `arch`.
    fn runner(&self, name: &str, arch: &str) -> BTreeMap<String, String> {
        let state = self.path(&format!("runners/{name}/docker"));
        let config = self.path(&format!("runners/{name}/docker-config"));
        std::fs::create_dir_all(&state).unwrap();
        std::fs::create_dir_all(&config).unwrap();
        // the fake's local engine is `default`: its architecture, and its bases'
        std::fs::write(state.join("arch-default"), arch).unwrap();
        for base in ["ubuntu:22.04", "ubuntu:24.04"] {
            let key = base.replace(['/', ':', '@'], "_");
            std::fs::write(
                state.join(format!("default-platform-{key}")),
                format!("linux/{arch}"),
            )
            .unwrap();
        }
        let mut env = self.env.clone();
        env.insert("FAKE_DOCKER_STATE".into(), state.display().to_string());
        env.insert("DOCKER_CONFIG".into(), config.display().to_string());
        env
    }

    /// A step's shell text, as written, under bash -e (as both CI systems run it).
    fn run(&self, script: &str, env: &BTreeMap<String, String>) -> Ran {
        let out = Command::new("bash")
            .args(["-e", "-o", "pipefail", "-c", script])
            .current_dir(self.dir.path())
            .env_clear()
            .envs(env)
            .output()
            .unwrap();
        Ran {
            code: out.status.code().unwrap_or(-1),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        }
    }

    fn read_json(&self, p: &str) -> serde_json::Value {
        let text = std::fs::read_to_string(self.path(p)).unwrap_or_else(|e| panic!("{p}: {e}"));
        serde_json::from_str(&text).unwrap_or_else(|e| panic!("{p}: {e}"))
    }
}

/// A shard's manifest after the fake: every cell built, none verified (the fake runs no
/// container), none staged.
fn assert_built_not_staged(m: &serde_json::Value, what: &str) {
    let cells = m["cells"].as_array().unwrap();
    let built: Vec<&serde_json::Value> = cells.iter().filter(|c| c["status"] == "built").collect();
    assert!(!built.is_empty(), "{what}: nothing built: {m}");
    for c in built {
        assert_eq!(c["verification"]["ok"], false, "{what}: {c}");
        assert!(
            c["staged"].is_null(),
            "{what}: staged without verification: {c}"
        );
    }
}

/// The login wrote what docker login would, for the registry.
fn assert_logged_in(config_dir: &str, user: &str, secret: &str) {
    let config: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(Path::new(config_dir).join("config.json")).unwrap(),
    )
    .unwrap();
    let auth = config["auths"][REGISTRY]["auth"]
        .as_str()
        .unwrap_or_default();
    let expected = base64(&format!("{user}:{secret}"));
    assert_eq!(auth, expected, "{config}");
}

fn base64(s: &str) -> String {
    const T: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for chunk in s.as_bytes().chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(T[(n >> (18 - 6 * i) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

#[test]
fn the_examples_and_a_generated_child_pipeline_are_valid_for_github_and_gitlab() {
    let r = root();
    let (ok, out) = validate(
        "vendor.github-workflows",
        &[
            &r.join("examples/github-workflow.yml"),
            &r.join("examples/github-workflow-self-hosted.yml"),
        ],
    );
    assert!(ok, "{out}");
    let ci = Ci::new();
    let ran = ci.run(
        "matrix plan --format gitlab --shards 4 > child.yml",
        &ci.env,
    );
    assert_eq!(ran.code, 0, "{}", ran.stderr);
    let (ok, out) = validate(
        "vendor.gitlab-ci",
        &[&r.join("examples/gitlab-ci.yml"), &ci.path("child.yml")],
    );
    assert!(ok, "{out}");
}

#[test]
fn a_broken_workflow_or_pipeline_is_rejected() {
    let ci = Ci::new();
    // a typo'd key in a job, a step with neither `run` nor `uses`
    let wf = std::fs::read_to_string(root().join("examples/github-workflow.yml")).unwrap();
    let broken = wf.replacen(
        "    runs-on: ubuntu-24.04\n",
        "    runs_on: ubuntu-24.04\n",
        1,
    );
    assert_ne!(broken, wf);
    std::fs::write(ci.path("broken-workflow.yml"), broken).unwrap();
    let (ok, out) = validate(
        "vendor.github-workflows",
        &[&ci.path("broken-workflow.yml")],
    );
    assert!(!ok, "a job without runs-on passed:\n{out}");
    assert!(out.contains("runs_on") || out.contains("runs-on"), "{out}");

    let ran = ci.run(
        "matrix plan --format gitlab --shards 2 > child.yml",
        &ci.env,
    );
    assert_eq!(ran.code, 0, "{}", ran.stderr);
    let child = std::fs::read_to_string(ci.path("child.yml")).unwrap();
    // the publish job's own `when` (a hidden job's keys are not checked)
    let broken = child.replacen("\n  when: always\n", "\n  when: sometimes\n", 1);
    assert_ne!(broken, child);
    std::fs::write(ci.path("broken-child.yml"), broken).unwrap();
    let (ok, out) = validate("vendor.gitlab-ci", &[&ci.path("broken-child.yml")]);
    assert!(!ok, "`when: sometimes` passed:\n{out}");
    assert!(out.contains("sometimes"), "{out}");
}

/// The `run` texts of a GitHub job's steps that run `matrix`, with their step env.
fn matrix_steps(job: &Value) -> Vec<(String, BTreeMap<String, String>)> {
    job["steps"]
        .as_sequence()
        .unwrap()
        .iter()
        .filter(|st| s(&st["run"]).lines().any(runs_matrix))
        .map(|st| {
            let env = st["env"]
                .as_mapping()
                .map(|m| {
                    m.iter()
                        .map(|(k, v)| (s(k).to_string(), s(v).to_string()))
                        .collect()
                })
                .unwrap_or_default();
            (s(&st["run"]).to_string(), env)
        })
        .collect()
}

#[test]
fn the_hosted_workflow_runs_as_written_and_publishes_without_docker() {
    let wf = yaml(&root().join("examples/github-workflow.yml"));
    let jobs = &wf["jobs"];
    let text = std::fs::read_to_string(root().join("examples/github-workflow.yml")).unwrap();
    assert!(
        !text.contains("self-hosted\"") && !text.contains("[self-hosted"),
        "hosted runners only"
    );
    assert!(
        !text.contains("ssh://") && !text.contains("qemu"),
        "no SSH, no emulation"
    );
    assert_eq!(s(&jobs["build"]["runs-on"]), "${{ matrix.runner }}");
    assert_eq!(s(&jobs["publish"]["runs-on"]), "ubuntu-24.04");
    // the publish job uses no Docker at all
    for st in jobs["publish"]["steps"].as_sequence().unwrap() {
        let step = serde_yaml::to_string(st).unwrap();
        assert!(
            !step.to_lowercase().contains("docker"),
            "publish job uses Docker: {step}"
        );
    }

    let ci = Ci::new();
    // what the secrets and variables give
    let mut base = ci.env.clone();
    for (k, v) in [
        ("REGISTRY", REGISTRY),
        ("STAGING_REPOSITORY", STAGING),
        (
            "GITHUB_OUTPUT",
            &ci.path("github-output").display().to_string(),
        ),
        (
            "GITHUB_STEP_SUMMARY",
            &ci.path("summary.md").display().to_string(),
        ),
    ] {
        base.insert(k.into(), v.into());
    }
    let secrets = [("REGISTRY_USER", "ci-bot"), ("REGISTRY_TOKEN", "s3cret")];
    let expand = |env: &BTreeMap<String, String>| -> BTreeMap<String, String> {
        env.iter()
            .map(|(k, v)| {
                let v = secrets
                    .iter()
                    .find(|(name, _)| v == &format!("${{{{ secrets.{name} }}}}"))
                    .map_or(v.clone(), |(_, value)| (*value).to_string());
                (k.clone(), v)
            })
            .collect()
    };

    // plan
    let plan = matrix_steps(&jobs["plan"]);
    assert_eq!(plan.len(), 1);
    let mut env = base.clone();
    env.extend(ci.runner("plan", "amd64"));
    let ran = ci.run(&plan[0].0, &env);
    assert_eq!(ran.code, 0, "{}", ran.stderr);
    let outputs: BTreeMap<String, String> = std::fs::read_to_string(ci.path("github-output"))
        .unwrap()
        .lines()
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    let shards: serde_json::Value = serde_json::from_str(&outputs["shards"]).unwrap();
    let shards = shards["include"].as_array().unwrap();
    assert_eq!(shards.len(), 4, "{shards:?}");
    assert_eq!(outputs["date"].len(), 8);

    // one build job per shard, each on a runner of its own
    let build = matrix_steps(&jobs["build"]);
    assert_eq!(build.len(), 1);
    assert!(
        build[0].0.contains("--verify") && build[0].0.contains("--stage"),
        "{}",
        build[0].0
    );
    for (i, shard) in shards.iter().enumerate() {
        let platforms = shard["platforms"].as_array().unwrap();
        assert_eq!(platforms.len(), 1, "{shard}");
        let arch = s_json(&platforms[0])
            .trim_start_matches("linux/")
            .to_string();
        let runner = if arch == "arm64" {
            "ubuntu-24.04-arm"
        } else {
            "ubuntu-24.04"
        };
        assert_eq!(shard["runner"], runner, "{shard}");
        let mut env = base.clone();
        env.extend(ci.runner(&format!("build-{i}"), &arch));
        env.insert("SHARD".into(), s_json(&shard["shard"]).into());
        env.insert("DATE".into(), outputs["date"].clone());
        let ran = ci.run(&build[0].0, &env);
        // built; the fake cannot verify, so nothing passes and nothing is staged
        assert_eq!(ran.code, 1, "{}", ran.stderr);
        let m = ci.read_json("out/manifest.json");
        assert_built_not_staged(&m, &format!("shard {}", shard["shard"]));
        for c in m["cells"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|c| c["status"] == "built")
        {
            assert!(s_json(&c["id"]).ends_with(&arch), "{c}");
        }
        // upload-artifact + download-artifact
        let to = ci.path(&format!("shards/manifest-{i}"));
        std::fs::create_dir_all(&to).unwrap();
        std::fs::rename(ci.path("out/manifest.json"), to.join("manifest.json")).unwrap();
        std::fs::remove_dir_all(ci.path("out")).unwrap();
    }

    // publish: merge, login, publish (refused), the reports
    let publish = matrix_steps(&jobs["publish"]);
    let mut env = base.clone();
    env.extend(ci.runner("publish", "amd64"));
    let mut seen = Vec::new();
    for (script, step_env) in &publish {
        let mut env = env.clone();
        env.extend(expand(step_env));
        let ran = ci.run(script, &env);
        if script.contains("matrix publish") {
            assert_eq!(ran.code, 1, "{script}: {}", ran.stderr);
            assert!(
                ran.stderr.contains("did not build and verify")
                    && ran.stderr.contains("publishing nothing"),
                "{script}: {}",
                ran.stderr
            );
            seen.push("publish");
        } else {
            assert_eq!(ran.code, 0, "{script}: {}", ran.stderr);
            seen.push(if script.contains("matrix login") {
                assert_logged_in(&env["DOCKER_CONFIG"], "ci-bot", "s3cret");
                "login"
            } else if script.contains("manifest merge") {
                "merge"
            } else {
                "report"
            });
        }
    }
    assert_eq!(seen, ["merge", "login", "publish", "report", "report"]);
    let summary = std::fs::read_to_string(ci.path("summary.md")).unwrap();
    assert!(summary.contains("py3.11-ubuntu22.04-arm64"), "{summary}");
    assert!(ci.path("report.html").exists());
    let all = ci.read_json("all.json");
    assert_eq!(all["cells"].as_array().unwrap().len(), 4);
}

fn s_json(v: &serde_json::Value) -> &str {
    v.as_str().unwrap_or_default()
}

/// A GitLab job's script lines (`script`, or another key such as `after_script`).
fn lines(job: &Value, key: &str) -> Vec<String> {
    job[key]
        .as_sequence()
        .map(|l| l.iter().map(|x| s(x).to_string()).collect())
        .unwrap_or_default()
}

#[test]
fn the_gitlab_pipeline_and_its_child_run_as_written() {
    let parent = yaml(&root().join("examples/gitlab-ci.yml"));
    let ci = Ci::new();
    let mut base = ci.env.clone();
    for (k, v) in [
        ("CI_REGISTRY", REGISTRY),
        ("CI_REGISTRY_USER", "gitlab-ci-token"),
        ("CI_REGISTRY_PASSWORD", "job-token"),
        ("MATRIX_STAGING", STAGING),
    ] {
        base.insert(k.into(), v.into());
    }

    // the plan job writes the child pipeline the trigger job includes
    let plan = lines(&parent["plan"], "script");
    assert_eq!(plan.len(), 1);
    assert!(plan[0].contains("--format gitlab"), "{plan:?}");
    let mut env = base.clone();
    env.extend(ci.runner("plan", "amd64"));
    let ran = ci.run(&plan[0], &env);
    assert_eq!(ran.code, 0, "{}", ran.stderr);
    let artifact = s(&parent["plan"]["artifacts"]["paths"][0]).to_string();
    let include = &parent["images"]["trigger"]["include"][0];
    assert_eq!(s(&include["artifact"]), artifact);
    assert_eq!(s(&include["job"]), "plan");
    let child = yaml(&ci.path(&artifact));
    let (ok, out) = validate("vendor.gitlab-ci", &[&ci.path(&artifact)]);
    assert!(ok, "{out}");

    let template = &child[".matrix-build"];
    assert!(
        lines(template, "before_script")
            .iter()
            .any(|l| l.contains("docker login")),
        "build jobs log in to the registry: {template:?}"
    );
    let builds: Vec<(String, &Value)> = child
        .as_mapping()
        .unwrap()
        .iter()
        .filter(|(_, j)| s(&j["extends"]) == ".matrix-build")
        .map(|(k, j)| (s(k).to_string(), j))
        .collect();
    assert_eq!(builds.len(), 4);
    for (name, job) in &builds {
        let tag = s(&job["tags"][0]);
        let arch = if name.ends_with("linux/arm64") {
            "arm64"
        } else {
            "amd64"
        };
        assert_eq!(tag, format!("saas-linux-medium-{arch}"), "{name}");
        let script = lines(job, "script");
        assert!(script.iter().all(|l| runs_matrix(l)), "{script:?}");
        let mut env = base.clone();
        env.extend(ci.runner(&name.replace(['/', ' '], "-"), arch));
        for line in &script {
            let ran = ci.run(line, &env);
            assert_eq!(ran.code, 1, "{line}: {}", ran.stderr);
            let out = line.split(" -o ").nth(1).unwrap();
            let m = ci.read_json(&format!("{out}/manifest.json"));
            assert_built_not_staged(&m, name);
        }
    }

    let publish = &child["publish"];
    assert_eq!(s(&publish["when"]), "always");
    let needs: Vec<&str> = publish["needs"]
        .as_sequence()
        .unwrap()
        .iter()
        .map(|n| s(&n["job"]))
        .collect();
    let names: Vec<&str> = builds.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(needs, names);
    let script = lines(publish, "script");
    assert!(
        script
            .iter()
            .chain(&lines(publish, "after_script"))
            .all(|l| !l.contains("docker")),
        "the publish job uses no Docker: {script:?}"
    );
    let mut env = base.clone();
    env.extend(ci.runner("publish", "amd64"));
    for line in &script {
        let ran = ci.run(line, &env);
        if line.contains("matrix publish") {
            assert_eq!(ran.code, 1, "{line}: {}", ran.stderr);
            assert!(ran.stderr.contains("publishing nothing"), "{}", ran.stderr);
        } else {
            assert_eq!(ran.code, 0, "{line}: {}", ran.stderr);
        }
    }
    assert_logged_in(&env["DOCKER_CONFIG"], "gitlab-ci-token", "job-token");
    for line in lines(publish, "after_script") {
        let ran = ci.run(&line, &env);
        assert_eq!(ran.code, 0, "{line}: {}", ran.stderr);
    }
    assert!(ci.path("report.html").exists());
    assert_eq!(
        ci.read_json("all.json")["cells"].as_array().unwrap().len(),
        4
    );
}
