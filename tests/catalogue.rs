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

/// A few lines of NVIDIA's list as this repository shipped it in August 2025, before
/// NVIDIA moved 13.0.0 to its unsupported list (2025-09-10).
const AUGUST_2025_TAGS: &str = "# updated: 2025-08-31 from https://gitlab.com/nvidia/container-images/cuda (doc/supported-tags.md, doc/unsupported-tags.md)\n# tag\tstatus\n11.8.0-cudnn8-devel-ubuntu22.04\tsupported\n12.1.0-cudnn8-devel-ubuntu22.04\teol\n12.9.1-cudnn-devel-ubuntu24.04\tsupported\n13.0.0-base-ubuntu24.04\tsupported\n13.0.0-cudnn-devel-ubuntu24.04\tsupported\n";

/// A base newer than the August list and an (invented) Miniconda release newer than the
/// shipped catalogue.
const NEW: &str = "version: 1\nbases: [nvidia/cuda:13.0.2-cudnn-devel-ubuntu24.04]\npython: [{version: \"3.14\", miniconda: \"26.9.1-0\"}]\n";
/// The base the August list still called supported.
const OLD_BASE: &str = "version: 1\nbases: [nvidia/cuda:13.0.0-cudnn-devel-ubuntu24.04]\nminiconda: \"26.7.1-1\"\npython: [\"3.14\"]\n";

/// Issue 30 item 4: the stored copies of NVIDIA's real documents (December 2025) update
/// the August 2025 list the way NVIDIA did: 13.0.0 moves to end-of-life, 13.0.2 and
/// 13.1.0 come in, and a plan on 13.0.0 then names 13.0.2 as its successor.
#[test]
fn an_update_from_a_local_copy_adds_a_release_and_plans_use_it() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    std::fs::create_dir_all(&data).unwrap();
    std::fs::write(data.join("nvidia-cuda-tags.tsv"), AUGUST_2025_TAGS).unwrap();
    std::fs::write(tmp.path().join("m.yaml"), NEW).unwrap();
    std::fs::write(tmp.path().join("old.yaml"), OLD_BASE).unwrap();
    // before: neither the release nor the tag is known, and 13.0.0 looks supported
    let (code, _, err) = matrix(&data, tmp.path(), &["-f", "m.yaml", "plan"]);
    assert_eq!(code, 3, "{err}");
    assert!(
        err.contains("Miniconda3-py314_26.9.1-0-Linux-x86_64.sh is not in the catalogue"),
        "{err}"
    );
    assert!(
        err.contains("13.0.2-cudnn-devel-ubuntu24.04 is not in the shipped tag list"),
        "{err}"
    );
    let (code, _, err) = matrix(&data, tmp.path(), &["-f", "old.yaml", "plan"]);
    assert_eq!(code, 0, "{err}");
    assert!(!err.contains("end-of-life"), "{err}");

    let from = fixtures();
    let (code, _, err) = matrix(
        &data,
        tmp.path(),
        &["catalogue", "update", "--from", from.to_str().unwrap()],
    );
    assert_eq!(code, 0, "{err}");
    assert!(err.contains("installers: 4 new"), "{err}");
    assert!(err.contains("nvidia/cuda tags: 31 new"), "{err}");
    assert!(
        err.contains("2 changed status (13.0.0-base-ubuntu24.04: supported → eol, 13.0.0-cudnn-devel-ubuntu24.04: supported → eol)"),
        "{err}"
    );
    assert!(
        !err.contains("changed SHA256"),
        "real rows keep their checksum: {err}"
    );
    let tags = std::fs::read_to_string(data.join("nvidia-cuda-tags.tsv")).unwrap();
    for line in [
        "13.0.0-cudnn-devel-ubuntu24.04\teol",
        "13.0.1-cudnn-devel-ubuntu24.04\teol",
        "13.0.2-cudnn-devel-ubuntu24.04\tsupported",
        "13.1.0-base-ubuntu24.04\tsupported",
        "11.8.0-cudnn8-devel-ubuntu22.04\tsupported",
        // on neither list any more: kept, as eol
        "12.1.0-cudnn8-devel-ubuntu22.04\teol",
    ] {
        assert!(tags.contains(&format!("{line}\n")), "{line}\n{tags}");
    }
    // after: the plan has the new installer with its checksum, and the tag is known
    let (code, out, err) = matrix(
        &data,
        tmp.path(),
        &["-f", "m.yaml", "plan", "--format", "json"],
    );
    assert_eq!(code, 0, "{err}");
    assert!(
        !err.contains("note: ignored"),
        "the written files pass the checks: {err}"
    );
    let doc: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(
        doc["cells"][0]["installer"]["file"],
        "Miniconda3-py314_26.9.1-0-Linux-x86_64.sh"
    );
    assert!(!err.contains("not in the shipped tag list"), "{err}");
    let (code, _, err) = matrix(&data, tmp.path(), &["-f", "old.yaml", "plan"]);
    assert_eq!(code, 0, "{err}");
    assert!(
        err.contains("old.yaml:2:9: warning: `bases[0]`: nvidia/cuda:13.0.0-cudnn-devel-ubuntu24.04 is end-of-life")
            && err.contains("its supported successor is `nvidia/cuda:13.0.2-cudnn-devel-ubuntu24.04`"),
        "{err}"
    );
    // the shipped matrix still plans with the updated files
    let (code, _, err) = matrix(
        &data,
        Path::new(env!("CARGO_MANIFEST_DIR")),
        &["plan", "--format", "json"],
    );
    assert_eq!(code, 0, "{err}");
}

/// Anaconda's HTML index page (read when there is no `.files.json`) gives the same
/// installers as the JSON listing.
#[test]
fn an_update_reads_anacondas_html_index_page() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let up = copy_fixtures(tmp.path());
    std::fs::remove_file(up.join("miniconda/.files.json")).unwrap();
    let (code, _, err) = matrix(
        &data,
        tmp.path(),
        &[
            "catalogue",
            "update",
            "--dry-run",
            "--from",
            up.to_str().unwrap(),
        ],
    );
    assert_eq!(code, 0, "{err}");
    assert!(err.contains("installers: 4 new (Miniconda3-py313_26.9.1-0-Linux-aarch64.sh, Miniconda3-py313_26.9.1-0-Linux-x86_64.sh, Miniconda3-py314_26.9.1-0-Linux-aarch64.sh, Miniconda3-py314_26.9.1-0-Linux-x86_64.sh)"), "{err}");
    assert!(!err.contains("changed SHA256"), "{err}");
    let page = std::fs::read_to_string(fixtures().join("miniconda/index.html")).unwrap();
    let json = std::fs::read_to_string(fixtures().join("miniconda/.files.json")).unwrap();
    assert_eq!(
        image_matrix::plan::listing::installers_from_html(&page),
        image_matrix::plan::listing::installers_from_json(&json).unwrap(),
        "the two stored copies list the same installers"
    );
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

/// A copy of the fixtures in `dir`, to change.
fn copy_fixtures(dir: &Path) -> PathBuf {
    let to = dir.join("upstream");
    for sub in ["miniconda", "cuda"] {
        std::fs::create_dir_all(to.join(sub)).unwrap();
        for f in std::fs::read_dir(fixtures().join(sub)).unwrap() {
            let f = f.unwrap();
            std::fs::copy(f.path(), to.join(sub).join(f.file_name())).unwrap();
        }
    }
    to
}

/// Issue 27 item 5: a hostile source. `--from` is never an option to curl, a listing
/// that is a device or a FIFO is refused at once, and a published installer whose
/// checksum changed fails the update (the catalogue keeps the old one).
#[test]
fn a_hostile_source_is_refused_and_a_changed_checksum_fails_the_update() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let curlrc = tmp.path().join("curlrc");
    std::fs::write(
        &curlrc,
        format!(
            "output = {}\n",
            tmp.path().join("written-by-curl").display()
        ),
    )
    .unwrap();
    let from = format!("-K{}://x", curlrc.display());
    let (code, _, err) = matrix(
        &data,
        tmp.path(),
        &[
            "catalogue",
            "update",
            "--dry-run",
            &format!("--from={from}"),
        ],
    );
    assert_ne!(code, 0, "{err}");
    assert!(
        err.contains("takes an http:// or https:// URL or a folder"),
        "{err}"
    );
    assert!(
        !tmp.path().join("written-by-curl").exists(),
        "curl read the option"
    );

    let up = copy_fixtures(tmp.path());
    let listing = up.join("miniconda/.files.json");
    let dry_run = || {
        matrix(
            &data,
            tmp.path(),
            &[
                "catalogue",
                "update",
                "--dry-run",
                "--from",
                up.to_str().unwrap(),
            ],
        )
    };
    // without the HTML page to fall back on, the listing is the only source
    std::fs::remove_file(up.join("miniconda/index.html")).unwrap();
    std::fs::remove_file(&listing).unwrap();
    std::os::unix::fs::symlink("/dev/zero", &listing).unwrap();
    let t = std::time::Instant::now();
    let (code, _, err) = dry_run();
    assert!(
        t.elapsed() < std::time::Duration::from_secs(10),
        "{:?}",
        t.elapsed()
    );
    assert_ne!(code, 0, "{err}");
    assert!(err.contains("not a regular file"), "{err}");

    // a FIFO in its place: refused, not waited on
    std::fs::remove_file(&listing).unwrap();
    let c = std::ffi::CString::new(listing.to_str().unwrap()).unwrap();
    // SAFETY: mkfifo on a path the test owns.
    assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
    let (code, _, err) = dry_run();
    assert_ne!(code, 0, "{err}");
    assert!(err.contains("not a regular file"), "{err}");

    // a known installer with another checksum upstream
    std::fs::remove_file(&listing).unwrap();
    let mut files: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(fixtures().join("miniconda/.files.json")).unwrap(),
    )
    .unwrap();
    files["Miniconda3-py311_24.5.0-0-Linux-x86_64.sh"]["sha256"] =
        serde_json::json!("b".repeat(64));
    std::fs::write(&listing, files.to_string()).unwrap();
    let (code, _, err) = matrix(
        &data,
        tmp.path(),
        &["catalogue", "update", "--from", up.to_str().unwrap()],
    );
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("keeps the old checksums"), "{err}");
    let tsv = std::fs::read_to_string(data.join("miniconda-installers.tsv")).unwrap();
    assert!(
        !tsv.contains(&"b".repeat(64)),
        "the changed checksum was not taken"
    );
}

fn data_files() -> Vec<(String, String)> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("data");
    let mut files: Vec<(String, String)> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "tsv"))
        .map(|p| {
            let name = p.file_name().unwrap().to_str().unwrap().to_string();
            (name, std::fs::read_to_string(&p).unwrap())
        })
        .collect();
    files.sort();
    files
}

/// Issue 30 item 4: every shipped data file says where it comes from and when (its
/// stamp names a URL; a `# Parts:` block gives each part its source and date), and
/// every row has the file's shape (an installer name with a 64-digit lowercase SHA256, a
/// CUDA tag with a status, a Python with dates, the right number of columns).
#[test]
fn every_data_file_names_its_sources_and_every_row_has_its_shape() {
    let files = data_files();
    let names: Vec<&str> = files.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(
        names,
        [
            "miniconda-installers.tsv",
            "nvidia-cuda-tags.tsv",
            "python-releases.tsv",
            "pytorch.tsv",
            "tensorflow.tsv"
        ]
    );
    for (name, text) in &files {
        let problems = image_matrix::plan::data::check_data_file(name, text);
        assert!(problems.is_empty(), "data/{name}: {problems:#?}");
        let (date, source) = image_matrix::plan::data::stamp(text).unwrap();
        assert!(date.as_str() <= "2026-12-07", "data/{name}: {date}");
        assert!(source.contains("https://"), "data/{name}: {source}");
        let header: Vec<&str> = text.lines().take_while(|l| l.starts_with('#')).collect();
        assert!(
            header.iter().any(|l| l.starts_with("# Parts")),
            "data/{name} says where each part comes from"
        );
        // an unconfirmed row is marked right above it, never left unmarked
        for (i, l) in text.lines().enumerate() {
            if l.starts_with("# unconfirmed:") {
                let next = text.lines().nth(i + 1).unwrap_or("");
                assert!(
                    !next.starts_with('#'),
                    "data/{name}:{}: marks no row",
                    i + 1
                );
            }
        }
    }
}

/// A copy with a wrong SHA256 (short, not hex, upper case), a stamp without its source,
/// a row of the wrong shape: each is named by the check with its line, and a data
/// directory's copy like that is not read (the plan says so and uses the built-in one).
#[test]
fn a_wrong_sha256_or_a_missing_source_fails_the_check_and_the_copy_is_refused() {
    use image_matrix::plan::data::check_data_file;
    let shipped = data_files()
        .into_iter()
        .find(|(n, _)| n == "miniconda-installers.tsv")
        .unwrap()
        .1;
    let good = "Miniconda3-py312_26.7.1-1-Linux-x86_64.sh\tb27f60ab63e77eeab50a5417c989120f767e863df32400190d4c7262369f8695";
    assert!(shipped.contains(good));
    let line = shipped.lines().position(|l| l == good).unwrap() + 1;
    let file = "miniconda-installers.tsv";
    for (bad, why) in [
        (
            good.replace("f8695", "f869"),
            "is not a Linux installer name with a SHA256",
        ),
        (
            good.replace("b27f60", "g27f60"),
            "is not a Linux installer name with a SHA256",
        ),
        (good.replace("b27f60", "B27F60"), "is not lowercase"),
        (format!("{good}\textra"), "3 fields, the columns name 2"),
    ] {
        let problems = check_data_file(file, &shipped.replace(good, &bad));
        assert!(
            problems
                .iter()
                .any(|p| p.starts_with(&format!("line {line}: ")) && p.contains(why)),
            "{bad}: {problems:?}"
        );
    }
    let unsourced = shipped.replacen(shipped.lines().next().unwrap(), "# updated: 2026-12-07", 1);
    assert_eq!(
        check_data_file(file, &unsourced),
        ["line 1: the `# updated:` stamp names no source (`… from SOURCE`)"]
    );
    let tags = "# updated: 2026-12-07 from https://x\n# tag\tstatus\n13.0.2-cudnn-devel-ubuntu24.04\tmaybe\n";
    assert_eq!(
        check_data_file("nvidia-cuda-tags.tsv", tags),
        ["line 3: status `maybe` of `13.0.2-cudnn-devel-ubuntu24.04` is not `supported` or `eol`"]
    );

    // a data directory's corrupted copy is refused; the plan keeps the built-in checksum
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    std::fs::create_dir_all(&data).unwrap();
    let wrong = good.replace("b27f60ab", "00000000");
    let corrupted = shipped
        .replace(good, &wrong)
        .replacen("f8695\n", "f869\n", 1);
    std::fs::write(data.join(file), &corrupted).unwrap();
    std::fs::write(
        tmp.path().join("m.yaml"),
        "version: 1\nbases: [ubuntu:24.04]\nminiconda: \"26.7.1-1\"\npython: [\"3.12\"]\n",
    )
    .unwrap();
    let (code, out, err) = matrix(
        &data,
        tmp.path(),
        &["-f", "m.yaml", "plan", "--format", "json"],
    );
    assert_eq!(code, 0, "{err}");
    assert!(
        err.contains(&format!(
            "note: ignored {}: line {line}: ",
            data.join(file).display()
        )) && err.contains("the built-in copy is used"),
        "{err}"
    );
    let doc: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(
        doc["cells"][0]["installer"]["sha256"],
        "b27f60ab63e77eeab50a5417c989120f767e863df32400190d4c7262369f8695"
    );
}
