//! Checks of a framework image (PyTorch, TensorFlow), run in the verification's
//! container: the packages import, their versions are the planned ones, the build's
//! CUDA is the planned wheel variant's (`None` for a CPU build), a forward and backward
//! pass works on the CPU, and on an engine with GPUs the GPU is seen and computes. What
//! was planned comes from the image's labels, so `matrix verify IMAGE` checks any
//! framework image the tool built.

use crate::docker::Docker;
use crate::labels;
use crate::plan::frameworks::Wheel;

const SCRIPT: &str = include_str!("framework.py");

/// Packages whose planned version a framework image's labels carry.
const PACKAGES: &[&str] = &["torch", "torchvision", "torchaudio", "tensorflow"];

/// What a framework image was planned with, read from its labels.
pub struct Expect {
    pub name: String,
    pub wheel: String,
    pub packages: Vec<(String, String)>,
}

impl Expect {
    /// What the plan says of a framework image (what its labels carry).
    #[cfg(test)]
    fn planned(f: &crate::plan::family::Framework) -> Expect {
        Expect {
            name: f.name.name().to_string(),
            wheel: f.wheel.clone(),
            packages: f
                .packages
                .iter()
                .filter(|p| PACKAGES.contains(&p.name.as_str()))
                .map(|p| (p.name.clone(), p.version.clone()))
                .collect(),
        }
    }

    pub fn of(docker: &Docker, image: &str) -> Option<Expect> {
        let name = docker.label(image, labels::FRAMEWORK)?;
        let wheel = docker
            .label(image, labels::FRAMEWORK_WHEEL)
            .unwrap_or_default();
        let packages = PACKAGES
            .iter()
            .filter_map(|p| {
                let v = docker.label(image, &format!("{}{p}", labels::FRAMEWORK_VERSION_PREFIX))?;
                Some(((*p).to_string(), v))
            })
            .collect();
        Some(Expect {
            name,
            wheel,
            packages,
        })
    }
}

/// (name, ok, detail) of each check, from the script's output.
pub fn judge(e: &Expect, out: &str) -> Vec<(String, bool, String)> {
    let mut res = Vec::new();
    let v: serde_json::Value = match serde_json::from_str(out.lines().last().unwrap_or("")) {
        Ok(v) => v,
        Err(_) => {
            res.push((
                format!("{} import", e.name),
                false,
                format!("the check script printed no result: {}", out.trim()),
            ));
            return res;
        }
    };
    let error = v["error"].as_str().map(str::to_string);
    res.push((
        format!("{} import", e.name),
        error.is_none(),
        error
            .clone()
            .unwrap_or_else(|| format!("{} imports", e.name)),
    ));
    let wrong: Vec<String> = e
        .packages
        .iter()
        .filter_map(|(p, want)| {
            let got = v["versions"][p].as_str();
            // a variant index's local version (`2.3.0+cu121`) is the planned release
            let same = got.is_some_and(|g| g.split('+').next() == Some(want.as_str()));
            (!same).then(|| format!("{p} {} (planned {want})", got.unwrap_or("missing")))
        })
        .collect();
    let planned: Vec<String> = e.packages.iter().map(|(p, v)| format!("{p} {v}")).collect();
    res.push((
        format!("{} versions", e.name),
        wrong.is_empty(),
        if wrong.is_empty() {
            planned.join(", ")
        } else {
            wrong.join(", ")
        },
    ));
    if error.is_some() {
        return res;
    }
    let want_cuda = Wheel::parse(&e.wheel).and_then(Wheel::cuda);
    let got_cuda = v["cuda"].as_str().map(str::to_string);
    res.push((
        format!("{} cuda", e.name),
        cuda_line(got_cuda.as_deref()) == want_cuda,
        format!(
            "the build reports CUDA {}, planned wheel {} ({})",
            got_cuda.as_deref().unwrap_or("None"),
            e.wheel,
            want_cuda.as_deref().unwrap_or("None")
        ),
    ));
    let train = v["train"].as_bool() == Some(true);
    res.push((
        format!("{} train step", e.name),
        train,
        if train {
            "a forward and backward pass on the CPU gives finite loss and gradients".into()
        } else {
            "the forward and backward pass on the CPU failed".into()
        },
    ));
    if v["gpu"].as_bool() == Some(true) {
        let ok = v["gpu_matmul"].as_bool() == Some(true);
        res.push((
            format!("{} gpu", e.name),
            ok,
            if ok {
                "a GPU is available and a matmul on it matches the CPU".into()
            } else {
                "a GPU is available but the matmul on it failed".into()
            },
        ));
    }
    res
}

/// The CUDA line (`12.5`) of what a build reports: `torch.version.cuda` says `12.1`,
/// TensorFlow's build info `12.5.1` for the CUDA 12.5 build (a wheel variant names
/// the major and minor only).
fn cuda_line(reported: Option<&str>) -> Option<String> {
    let r = reported?;
    let mut parts = r.split('.');
    match (parts.next(), parts.next()) {
        (Some(a), Some(b)) => Some(format!("{a}.{b}")),
        _ => Some(r.to_string()),
    }
}

/// Run the script in the container.
pub fn run(docker: &Docker, container: &str, e: &Expect) -> String {
    let names: Vec<&str> = e.packages.iter().map(|(p, _)| p.as_str()).collect();
    let joined = names.join(",");
    let argv = [
        "/opt/miniconda3/bin/python",
        "-c",
        SCRIPT,
        e.name.as_str(),
        joined.as_str(),
    ];
    docker
        .exec(container, &argv)
        .unwrap_or_else(|err| format!("error: {err}"))
}

/// Whether the engine can give containers GPUs (an NVIDIA runtime is configured).
pub fn engine_has_gpus(docker: &Docker) -> bool {
    docker
        .capture(&["info", "--format", "{{json .Runtimes}}"])
        .is_ok_and(|s| s.contains("nvidia"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn expect(wheel: &str) -> Expect {
        Expect {
            name: "pytorch".into(),
            wheel: wheel.into(),
            packages: vec![
                ("torch".into(), "2.5.1".into()),
                ("torchvision".into(), "0.20.1".into()),
            ],
        }
    }

    #[test]
    fn planned_versions_and_cuda_are_compared() {
        let ok = r#"{"versions": {"torch": "2.5.1+cu121", "torchvision": "0.20.1"}, "cuda": "12.1", "train": true, "gpu": false}"#;
        let r = judge(&expect("cu121"), ok);
        assert!(r.iter().all(|c| c.1), "{r:?}");
        assert_eq!(r.len(), 4, "no GPU check without a GPU: {r:?}");
        let r = judge(&expect("cpu"), ok);
        let cuda = r.iter().find(|c| c.0 == "pytorch cuda").unwrap();
        assert!(
            !cuda.1
                && cuda
                    .2
                    .contains("reports CUDA 12.1, planned wheel cpu (None)"),
            "{r:?}"
        );
        let wrong = r#"{"versions": {"torch": "2.4.0", "torchvision": null}, "cuda": null, "train": false, "gpu": true, "gpu_matmul": false}"#;
        let r = judge(&expect("cpu"), wrong);
        let fails: Vec<&str> = r.iter().filter(|c| !c.1).map(|c| c.0.as_str()).collect();
        assert_eq!(
            fails,
            ["pytorch versions", "pytorch train step", "pytorch gpu"],
            "{r:?}"
        );
        assert!(r[1]
            .2
            .contains("torch 2.4.0 (planned 2.5.1), torchvision missing"));
        let broken = judge(
            &expect("cpu"),
            r#"{"versions": {}, "error": "ModuleNotFoundError('torch')"}"#,
        );
        assert!(!broken[0].1 && broken[0].2.contains("ModuleNotFoundError"));
        assert!(!judge(&expect("cpu"), "Traceback ...")[0].1);
    }

    /// The planner and the check agree on every kind of base: for each framework image
    /// the planner makes, what its real build reports (`torch.version.cuda`,
    /// TensorFlow's `get_build_info()["cuda_version"]`, as read from the wheels named in
    /// data/pytorch.tsv and data/tensorflow.tsv) passes the check; a build of another
    /// kind fails it.
    #[test]
    fn the_planner_and_the_check_agree_on_every_kind_of_base() {
        let yaml = "version: 1
bases: [nvidia/cuda:12.1.0-cudnn8-devel-ubuntu22.04, nvidia/cuda:12.4.1-cudnn-devel-ubuntu22.04, nvidia/cuda:11.8.0-cudnn8-devel-ubuntu22.04, \"debian:12\"]
platforms: [linux/amd64, linux/arm64]
python: [\"3.11\"]
pytorch: [\"2.3.0\"]
tensorflow: [\"2.13.1\", \"2.15.0\", \"2.21.0\"]
exclude:
  - {platform: linux/arm64, cuda: \"12.1\", reason: no aarch64 CUDA wheels}
  - {platform: linux/arm64, cuda: \"12.4\", reason: no aarch64 CUDA wheels}
  - {platform: linux/arm64, cuda: \"11.8\", reason: no aarch64 CUDA wheels}
  - {tf: \"2.21.0\", cuda: \"11.8\", reason: another CUDA major}
  - {tf: \"2.15.0\", cuda: \"11.8\", reason: another CUDA major}
  - {tf: \"2.13.1\", cuda: \"12.1\", reason: another CUDA major}
  - {tf: \"2.13.1\", cuda: \"12.4\", reason: another CUDA major}
";
        let plan = |text: &str| {
            crate::plan::plan_text(
                text,
                "m.yaml",
                std::path::Path::new("."),
                &crate::plan::PlanOptions {
                    date: "20260101".into(),
                },
            )
            .unwrap_or_else(|e| panic!("{e:?}"))
        };
        // (cell id, the wheel planned, what the real build reports)
        let cases: &[(&str, &str, Option<&str>)] = &[
            (
                "py3.11-cuda12.1.0-cudnn8-devel-ubuntu22.04-amd64-torch2.3.0",
                "cu121",
                Some("12.1"),
            ),
            (
                "py3.11-cuda12.4.1-cudnn-devel-ubuntu22.04-amd64-torch2.3.0",
                "cu121",
                Some("12.1"),
            ),
            (
                "py3.11-cuda11.8.0-cudnn8-devel-ubuntu22.04-amd64-torch2.3.0",
                "cu118",
                Some("11.8"),
            ),
            // PyTorch's cpu index on a CPU base: a CPU build
            ("py3.11-debian12-amd64-torch2.3.0", "cpu", None),
            ("py3.11-debian12-arm64-torch2.3.0", "cpu", None),
            // TensorFlow on CUDA bases: the build's own CUDA (12.2 on a 12.1 base)
            (
                "py3.11-cuda12.1.0-cudnn8-devel-ubuntu22.04-amd64-tf2.15.0",
                "cu122",
                Some("12.2"),
            ),
            (
                "py3.11-cuda12.4.1-cudnn-devel-ubuntu22.04-amd64-tf2.21.0",
                "cu125",
                Some("12.5.1"),
            ),
            (
                "py3.11-cuda11.8.0-cudnn8-devel-ubuntu22.04-amd64-tf2.13.1",
                "cu118",
                Some("11.8"),
            ),
            // TensorFlow on an x86_64 CPU base: the same CUDA build, run on the CPU
            ("py3.11-debian12-amd64-tf2.21.0", "cu125", Some("12.5.1")),
            ("py3.11-debian12-amd64-tf2.13.1", "cu118", Some("11.8")),
            // aarch64: CPU builds (build info without cuda_version)
            ("py3.11-debian12-arm64-tf2.21.0", "cpu", None),
            ("py3.11-debian12-arm64-tf2.13.1", "cpu", None),
        ];
        let p = plan(yaml);
        let torch_pypi = plan("version: 1\nbases: [\"debian:12\"]\npython: [\"3.11\"]\npytorch: [\"2.3.0\"]\nsources: {pytorch_index: pypi}\n");
        let find = |p: &'_ crate::plan::Plan, id: &str| {
            p.cells
                .iter()
                .find(|c| c.id == id)
                .and_then(|c| c.framework.as_deref().cloned())
                .unwrap_or_else(|| panic!("{id} not planned"))
        };
        let pypi_cpu = find(&torch_pypi, "py3.11-debian12-amd64-torch2.3.0");
        let mut all: Vec<(String, crate::plan::family::Framework, Option<&str>)> = cases
            .iter()
            .map(|(id, wheel, reports)| {
                let f = find(&p, id);
                assert_eq!(f.wheel, *wheel, "{id}");
                ((*id).to_string(), f, *reports)
            })
            .collect();
        // the package index's torch on a CPU base: its CUDA build (cu121 for 2.3.0)
        assert_eq!(pypi_cpu.wheel, "cu121");
        all.push(("pypi torch on debian12".into(), pypi_cpu, Some("12.1")));
        for (id, f, reports) in &all {
            let e = Expect::planned(f);
            let versions: serde_json::Map<String, serde_json::Value> = f
                .packages
                .iter()
                .map(|p| (p.name.clone(), format!("{}+local", p.version).into()))
                .collect();
            let out = |cuda: Option<&str>| {
                serde_json::json!({"versions": versions, "cuda": cuda, "train": true, "gpu": false})
                    .to_string()
            };
            let r = judge(&e, &out(*reports));
            assert!(r.iter().all(|c| c.1), "{id}: {r:?}");
            // another kind of build fails the cuda check
            let other = if reports.is_some() {
                None
            } else {
                Some("12.4")
            };
            let r = judge(&e, &out(other));
            let cuda = r.iter().find(|c| c.0.ends_with(" cuda")).unwrap();
            assert!(!cuda.1, "{id}: {r:?}");
        }
    }
}
