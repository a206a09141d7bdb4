//! `matrix catalogue update` against local copies of the upstream listings (a
//! directory, and the same served over HTTP on loopback): a new Miniconda release and
//! a new CUDA tag get in, a tag moves to end-of-life, and plans read the result.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use common::Matrix;

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/catalogue")
}

fn matrix(data: &Path, dir: &Path, args: &[&str]) -> (i32, String, String) {
    Matrix::new(dir)
        .env("IMAGE_MATRIX_DATA", data)
        .args(args)
        .run()
}

const NEW: &str = "version: 1\nbases: [nvidia/cuda:13.1.0-cudnn-devel-ubuntu24.04]\npython: [{version: \"3.14\", miniconda: \"26.9.1-0\"}]\n";

#[test]
fn an_update_from_a_local_copy_adds_a_release_and_plans_use_it() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    std::fs::write(tmp.path().join("m.yaml"), NEW).unwrap();
    // before: neither the release nor the tag is known
    let (code, _, err) = matrix(&data, tmp.path(), &["-f", "m.yaml", "plan"]);
    assert_eq!(code, 3, "{err}");
    assert!(
        err.contains("Miniconda3-py314_26.9.1-0-Linux-x86_64.sh is not in the catalogue"),
        "{err}"
    );
    let from = fixtures();
    let (code, _, err) = matrix(
        &data,
        tmp.path(),
        &["catalogue", "update", "--from", from.to_str().unwrap()],
    );
    assert_eq!(code, 0, "{err}");
    assert!(err.contains("installers: 4 new"), "{err}");
    assert!(err.contains("nvidia/cuda tags: 3 new"), "{err}");
    assert!(!err.contains("changed SHA256"), "{err}");
    let tags = std::fs::read_to_string(data.join("nvidia-cuda-tags.tsv")).unwrap();
    assert!(
        tags.contains("12.9.1-cudnn-devel-ubuntu24.04\teol"),
        "moved to the unsupported list"
    );
    assert!(tags.contains("13.1.0-cudnn-devel-ubuntu24.04\tsupported"));
    assert!(
        tags.contains("11.8.0-cudnn8-devel-ubuntu22.04"),
        "old tags are kept"
    );
    // after: the plan has the new installer with its checksum, and no unknown-tag warning
    let (code, out, err) = matrix(
        &data,
        tmp.path(),
        &["-f", "m.yaml", "plan", "--format", "json"],
    );
    assert_eq!(code, 0, "{err}");
    let doc: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(
        doc["cells"][0]["installer"]["file"],
        "Miniconda3-py314_26.9.1-0-Linux-x86_64.sh"
    );
    assert!(!err.contains("not in the shipped tag list"), "{err}");
    // the shipped matrix still plans with the updated files
    let (code, _, err) = matrix(
        &data,
        Path::new(env!("CARGO_MANIFEST_DIR")),
        &["plan", "--format", "json"],
    );
    assert_eq!(code, 0, "{err}");
}

#[test]
fn an_update_over_http_works_and_old_catalogues_are_flagged() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let mut server = Command::new("python3")
        .args([
            "-m",
            "http.server",
            "--bind",
            "127.0.0.1",
            &port.to_string(),
        ])
        .arg("--directory")
        .arg(fixtures())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let url = format!("http://127.0.0.1:{port}");
    let mut result = (0, String::new(), String::new());
    for _ in 0..50 {
        result = matrix(&data, tmp.path(), &["catalogue", "update", "--from", &url]);
        if result.0 == 0 {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    let _ = server.kill();
    let _ = server.wait();
    assert_eq!(result.0, 0, "{}", result.2);
    assert!(result.2.contains("installers: 4 new"), "{}", result.2);
    // a catalogue from long ago is named by plan
    let old = std::fs::read_to_string(data.join("miniconda-installers.tsv"))
        .unwrap()
        .replacen("# updated: ", "# updated: 2025-01-01 was ", 1);
    let old = old.replacen(
        "# updated: 2025-01-01 was ",
        "# updated: 2025-01-01 from old copy\n# was ",
        1,
    );
    std::fs::write(data.join("miniconda-installers.tsv"), old).unwrap();
    std::fs::write(tmp.path().join("m.yaml"), NEW).unwrap();
    let (code, _, err) = matrix(&data, tmp.path(), &["-f", "m.yaml", "plan"]);
    assert_eq!(code, 0, "{err}");
    assert!(
        err.contains("note: the Miniconda installer catalogue is from 2025-01-01"),
        "{err}"
    );
}
