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
        got_cuda == want_cuda,
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
}
