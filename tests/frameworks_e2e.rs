//! An image tree on a real daemon: the local Debian base → a Miniconda cell (the
//! stand-in installer from the loopback mirror) → a PyTorch cell installing real torch,
//! torchvision and torchaudio from the Python package index through the HTTPS proxy
//! (its CA via `sources.ca_bundle`, trusted during the build only). The package index
//! serves one build of each torch release for Linux x86_64, a CUDA build the framework
//! catalogue names (cu121 for 2.1.2); the cell is planned as that, not as `cpu`, and
//! verified with the torch checks (versions, `torch.version.cuda` = 12.1, a training
//! step on the CPU). Then the PyTorch layer is rebuilt on its warm parent, and its wall
//! time printed beside the parent's (the layers every framework image shares).
//! A TensorFlow 2.21.0 image grows on the same parent: the package index's x86_64
//! wheel is its CUDA 12.5 build, planned as `cu125` and verified as such on this CPU
//! base (2026-12-07: 117.5 s, 2,850 MB, built beside the PyTorch layer with `-j 2`; the
//! whole test 457 s; the layer moved the parent's numpy 1.26.4 to 2.4.6, recorded in
//! the child's versions).
//!
//! A second base, the same Debian published again, maps to the same torch wheel: the
//! tree is built through the download cache (`--download-cache`), which the test
//! shows fetched that wheel at most once for both images (not at all when an earlier
//! run on this machine kept it, in /var/tmp/image-matrix-test-downloads or
//! IMAGE_MATRIX_TEST_DOWNLOADS).
//!
//! Needs the daemon and the local bases (`scripts/setup-test-env.sh`); fails without.

mod common;
use common::*;

/// The id of the planned cell on `base` of `framework` (None: the Miniconda image):
/// two bases of one OS give ids with a suffix of their own.
fn id_of(plan: &serde_json::Value, base: &str, framework: Option<&str>) -> String {
    plan["cells"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["base"] == base && c["framework"]["name"].as_str() == framework)
        .unwrap_or_else(|| panic!("no cell on {base} of {framework:?}: {plan}"))["id"]
        .as_str()
        .unwrap()
        .to_string()
}

#[test]
fn a_pytorch_image_builds_on_its_miniconda_parent_and_passes_the_torch_checks() {
    require_environment();
    let dir = tempfile::tempdir().unwrap();
    let mirror = Mirror::start(&dir.path().join("mirror"));
    let repo = format!("image-matrix-frameworks-e2e-{}", std::process::id());
    let _cleanup = Cleanup(repo.clone());
    // a second base: the same Debian published again (another image ID), so that two
    // bases map to the same torch wheel (cu121 for Python 3.11)
    let copy = format!("{repo}/base:bookworm");
    republish(BASE, &copy, &format!("{repo}-republish"), 0);
    // the download cache of this machine's test runs: a clean clone's CI on the same
    // machine finds what the last one fetched (wheels of several GB)
    let downloads = std::env::var("IMAGE_MATRIX_TEST_DOWNLOADS")
        .unwrap_or_else(|_| "/var/tmp/image-matrix-test-downloads".into());
    let yaml = LocalMatrix::new(
        &format!("{repo}/miniconda"),
        "conda3-python{python}-{base_name}",
        &mirror,
    )
    .image(r#"pytorch_tag: "pytorch{torch}-{cuda_wheel}-python{python}-{base_name}""#)
    .image(r#"tensorflow_tag: "tensorflow{tf}-{cuda_wheel}-python{python}-{base_name}""#)
    .axes(&format!(
        r#"bases:
  - {{image: "{BASE}", os: debian12}}
  - {{image: "{copy}", os: debian12}}
python: ["3.11"]
pytorch: ["2.1.2"]
tensorflow: ["2.21.0"]
exclude:
  - {{base: "{copy}", framework: tensorflow, reason: "one TensorFlow image shows it"}}
"#
    ))
    .source("pytorch_index: pypi")
    .yaml();
    std::fs::write(dir.path().join("matrix.yaml"), yaml).unwrap();

    // the plan: the package index's build, named by the catalogue
    let (code, out, err) = matrix(dir.path(), &["plan", "--format", "json"]);
    assert_eq!(code, 0, "{err}");
    let plan: serde_json::Value = serde_json::from_str(&out).unwrap();
    let (parent_id, child_id) = (
        id_of(&plan, BASE, None),
        id_of(&plan, BASE, Some("pytorch")),
    );
    let tf_id = id_of(&plan, BASE, Some("tensorflow"));
    let copy_child = id_of(&plan, &copy, Some("pytorch"));
    let f = &cell(&plan, child_id.as_str())["framework"];
    assert_eq!(f["wheel"], "cu121", "{f}");
    assert_eq!(f["source"], "package-index");
    assert_eq!(f["index_urls"][0], "https://pypi.org/simple");
    assert_eq!(f["parent"], parent_id.as_str());
    // TensorFlow on a CPU base: the package index's wheel is its CUDA 12.5 build
    let tf = &cell(&plan, tf_id.as_str())["framework"];
    assert_eq!(tf["wheel"], "cu125", "{tf}");
    assert_eq!(tf["requirements"][0], "tensorflow==2.21.0", "{tf}");

    // the tree, cold: the parent first, then the PyTorch image FROM it, verified
    // one port for both runs: the routed steps are then the same, and the second run's
    // builder takes the PyTorch layer from its layer cache as it would without the cache
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
        .to_string();
    let cached = [
        "--network",
        "host",
        "--download-cache",
        &downloads,
        "--download-cache-port",
        &port,
    ];
    let (code, _, err) = matrix(
        dir.path(),
        &[&["build", "-j", "2", "--verify"][..], &cached].concat(),
    );
    assert_eq!(code, 0, "the tree must build and verify:\n{err}");
    // both PyTorch images took the same wheels through the download cache, which
    // fetched each at most once (not at all when an earlier run on this machine did)
    let dl: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(dir.path().join("out/downloads.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(
        dl["failed"].as_array().unwrap().len(),
        0,
        "{}",
        dl["failed"]
    );
    let files = dl["files"].as_object().unwrap();
    let torch: Vec<(&String, &serde_json::Value)> = files
        .iter()
        .filter(|(_, u)| u["name"].as_str().unwrap().starts_with("torch-2.1.2-cp311"))
        .collect();
    assert_eq!(torch.len(), 1, "one torch wheel for both bases: {files:?}");
    let (torch_sha, torch_use) = torch[0];
    assert_eq!(
        torch_use["requests"], 2,
        "each PyTorch image asked for it: {torch_use}"
    );
    let fetched = dl["fetched"].as_array().unwrap();
    let times = fetched
        .iter()
        .filter(|f| f["sha256"] == **torch_sha)
        .count();
    assert!(
        times <= 1,
        "the torch wheel was downloaded {times} times: {fetched:?}"
    );
    assert!(std::path::Path::new(&downloads)
        .join("files")
        .join(torch_sha)
        .is_file());
    let installer = files
        .values()
        .filter(|u| u["name"] == "Miniconda3-py311_24.5.0-0-Linux-x86_64.sh")
        .count();
    assert_eq!(installer, 1, "{files:?}");
    let mb = |k: &str| dl[k].as_u64().unwrap() as f64 / 1e6;
    eprintln!(
        "figures: download cache: {} files fetched ({:.1} MB) in {} requests; {} served from the cache ({:.1} MB), {} joined a download; {} pages ({:.1} MB); torch wheel {} times for 2 images",
        fetched.len(),
        fetched.iter().map(|f| f["bytes"].as_u64().unwrap()).sum::<u64>() as f64 / 1e6,
        files.values().map(|u| u["requests"].as_u64().unwrap()).sum::<u64>(),
        dl["from_cache"],
        mb("from_cache_bytes"),
        dl["joined"],
        dl["pages"],
        mb("page_bytes"),
        times
    );
    let m = manifest(&dir.path().join("out/manifest.json"));
    let (parent, child) = (cell(&m, parent_id.as_str()), cell(&m, child_id.as_str()));
    assert_eq!(parent["status"], "built", "{parent}");
    assert_eq!(child["status"], "built", "{child}");
    assert_eq!(child["parent"], parent_id.as_str());
    assert!(
        child["parent_digest"]
            .as_str()
            .is_some_and(|d| d.starts_with("sha256:")),
        "{child}"
    );
    let checks = child["verification"]["checks"].as_array().unwrap();
    for want in [
        "pytorch import",
        "pytorch versions",
        "pytorch cuda",
        "pytorch train step",
        "ssh-login",
    ] {
        let c = checks
            .iter()
            .find(|c| c["name"] == want)
            .unwrap_or_else(|| panic!("no check {want}: {checks:?}"));
        assert_eq!(c["ok"], true, "{c}");
    }
    let cuda = checks.iter().find(|c| c["name"] == "pytorch cuda").unwrap();
    assert!(
        cuda["detail"]
            .as_str()
            .unwrap()
            .contains("reports CUDA 12.1, planned wheel cu121"),
        "{cuda}"
    );
    assert_eq!(child["verification"]["ok"], true, "{child}");
    assert_eq!(child["versions"]["torch"], "2.1.2", "{child}");
    assert_eq!(child["versions"]["torchvision"], "0.16.2", "{child}");
    // the same wheels on the second base: built and verified too
    let twin = cell(&m, &copy_child);
    assert_eq!(twin["status"], "built", "{twin}");
    assert_eq!(twin["verification"]["ok"], true, "{twin}");
    assert_eq!(twin["versions"]["torch"], "2.1.2", "{twin}");
    // the TensorFlow image on the same parent: built, and its checks agree with the plan
    let tf = cell(&m, tf_id.as_str());
    assert_eq!(tf["status"], "built", "{tf}");
    assert_eq!(tf["verification"]["ok"], true, "{tf}");
    let tf_checks = tf["verification"]["checks"].as_array().unwrap();
    for want in [
        "tensorflow import",
        "tensorflow versions",
        "tensorflow cuda",
        "tensorflow train step",
    ] {
        let c = tf_checks
            .iter()
            .find(|c| c["name"] == want)
            .unwrap_or_else(|| panic!("no check {want}: {tf_checks:?}"));
        assert_eq!(c["ok"], true, "{c}");
    }
    assert_eq!(tf["versions"]["tensorflow"], "2.21.0", "{tf}");
    // the parent's packages the layer moved say their new version in the child
    let moved: Vec<String> = ["numpy", "tensorboard", "jupyterlab", "pandas"]
        .iter()
        .filter(|p| parent["versions"][**p] != tf["versions"][**p])
        .map(|p| format!("{p} {} -> {}", parent["versions"][*p], tf["versions"][*p]))
        .collect();
    eprintln!("figures: the TensorFlow layer moved: {moved:?}");
    // the parent was verified once, as a Miniconda image (no torch checks)
    let parent_checks = parent["verification"]["checks"].as_array().unwrap();
    assert!(parent_checks
        .iter()
        .all(|c| !c["name"].as_str().unwrap().starts_with("pytorch")));

    // the framework layer again, on its warm parent (which is up to date)
    let (code, _, err) = matrix(
        dir.path(),
        &[
            &[
                "build",
                "--force",
                "--filter",
                &format!("id={child_id}"),
                "-o",
                "out2",
            ][..],
            &cached,
        ]
        .concat(),
    );
    assert_eq!(code, 0, "{err}");
    let m2 = manifest(&dir.path().join("out2/manifest.json"));
    let (p2, c2) = (cell(&m2, parent_id.as_str()), cell(&m2, child_id.as_str()));
    assert_eq!(c2["status"], "built", "{c2}");
    // the wheels were kept: the rebuild fetched no torch
    let dl2: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(dir.path().join("out2/downloads.json")).unwrap(),
    )
    .unwrap();
    assert!(
        !dl2["fetched"]
            .as_array()
            .unwrap()
            .iter()
            .any(|f| f["sha256"] == **torch_sha),
        "{}",
        dl2["fetched"]
    );
    let size = |c: &serde_json::Value| c["size_bytes"].as_u64().unwrap_or(0) / 1_000_000;
    eprintln!(
        "figures: tensorflow layer {}s, {} MB",
        tf["duration_seconds"],
        size(tf)
    );
    eprintln!(
        "figures: cold tree: parent {}s + pytorch layer {}s; warm parent (status {}): pytorch layer {}s; sizes: parent {} MB, pytorch image {} MB (shares the parent's layers)",
        parent["duration_seconds"],
        child["duration_seconds"],
        p2["status"],
        c2["duration_seconds"],
        size(parent),
        size(child)
    );
}
