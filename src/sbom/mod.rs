//! One software bill of materials per cell: the image's OS packages (dpkg), conda
//! packages and Python packages (pip), with versions and the licences the image's
//! metadata gives, written beside the manifest as `sbom/<cell>.json`.
//!
//! Format: **CycloneDX 1.5 JSON**. It describes exactly this (an inventory of
//! components, each identified by a package URL, with licences), in one flat list that
//! is simple to produce correctly and deterministically; the scanners a release
//! engineer runs on it (Trivy, Grype, Dependency-Track) read it. SPDX 2.3 would need a
//! unique document namespace and a relationship per package to say as much, and gains
//! nothing here. 1.5 rather than 1.6: nothing of 1.6 is used, and more consumers read
//! 1.5. The tests validate every SBOM against the official schema
//! (`schemas/vendor/cyclonedx/`).
//!
//! The packages are listed during acceptance with one process: a short shell script
//! ([`SCRIPT`]) run by `docker exec` in the container verification already started, or
//! by one `docker run --network none` when the cell is not verified. The script needs
//! nothing the image may lack: dpkg-query for Debian's packages, the image's own Python
//! for conda's (`conda-meta/*.json`, read directly: running `conda list` costs a second
//! of start-up and does not give licences) and pip's (`importlib.metadata`, which is
//! what `pip list`/`pip inspect` read, with licences). A package conda installed shows
//! in both; it is listed once, as conda's.

pub mod cyclonedx;
pub mod diff;
pub mod parse;

use std::path::Path;

use crate::manifest::{PackageCounts, SbomRecord};
use parse::Source;

/// The collection script, run as `sh -c SCRIPT` in a container of the image.
pub const SCRIPT: &str = include_str!("collect.sh");

/// The folder of the SBOMs, beside the manifest.
pub const FOLDER: &str = "sbom";

/// What listing an image's packages gave: the script's output (or why there is
/// none), and how long it took.
#[derive(Clone, Debug)]
pub struct Collected {
    pub output: Result<String, String>,
    pub seconds: f64,
}

/// How long listing the packages may take (the script reads a few hundred small files;
/// under emulation Python starts several times slower).
pub fn timeout(emulated: bool) -> std::time::Duration {
    std::time::Duration::from_secs(if emulated { 300 } else { 60 })
}

/// The file name of a cell's SBOM: its id, with anything but `[A-Za-z0-9._-]` as `_`.
pub fn file_name(cell: &str) -> String {
    let safe: String = cell
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_') {
                c
            } else {
                '_'
            }
        })
        .collect();
    format!("{}.json", safe.trim_start_matches('.'))
}

/// Make a cell's SBOM from what was collected and write it under `dir` (the manifest's
/// folder): the record says where, what it counts, and why a source lists nothing.
/// Never fails: a listing or a write that failed is said in the record's notes.
pub fn record(c: &Collected, subject: &cyclonedx::Subject, dir: &Path) -> SbomRecord {
    let at = crate::manifest::now();
    let mut rec = SbomRecord {
        format: cyclonedx::FORMAT.to_string(),
        seconds: Some((c.seconds * 10.0).round() / 10.0),
        ..SbomRecord::default()
    };
    let text = match &c.output {
        Ok(t) => t,
        Err(e) => {
            rec.notes
                .push(format!("no SBOM: the packages could not be listed: {e}"));
            return rec;
        }
    };
    let listing = parse::parse(text);
    rec.packages = PackageCounts {
        dpkg: listing.count(Source::Dpkg),
        conda: listing.count(Source::Conda),
        pip: listing.count(Source::Pip),
    };
    rec.notes = notes(&listing);
    let text = match cyclonedx::text(&listing, subject, &at, &rec.notes) {
        Ok(t) => t,
        Err(e) => {
            rec.notes.push(format!("no SBOM: {e}"));
            return rec;
        }
    };
    let name = file_name(subject.cell);
    let path = dir.join(FOLDER).join(&name);
    match crate::manifest::io::write_text_hashed(&path, &text) {
        Ok(()) => {
            rec.path = Some(format!("{FOLDER}/{name}"));
            rec.sha256 = Some(sha256_hex(text.as_bytes()));
            rec.collected_at = Some(at);
        }
        Err(e) => rec
            .notes
            .push(format!("no SBOM: cannot write {}: {e}", path.display())),
    }
    rec
}

/// Why a source lists nothing, entries skipped, a listing cut short.
fn notes(l: &parse::Listing) -> Vec<String> {
    let mut notes: Vec<String> = Source::ALL.iter().filter_map(|s| l.why_none(*s)).collect();
    for s in Source::ALL {
        if let Some(x) = l.section(s).filter(|x| !x.warnings.is_empty()) {
            notes.push(format!(
                "{}: {} entries could not be read (first: {})",
                s.as_str(),
                x.warnings.len(),
                x.warnings[0]
            ));
        }
    }
    if l.skipped > 0 {
        notes.push(format!(
            "{} lines of the listing were not understood",
            l.skipped
        ));
    }
    if !l.complete {
        notes.push("the listing stopped before its end".to_string());
    }
    notes
}

pub fn sha256_hex(bytes: &[u8]) -> String {
    use sha2::{Digest, Sha256};
    Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// A record of an SBOM still valid for `image`: the one `previous` made for the same
/// cell and image ID, when its file is still there unchanged under `dir` (an image
/// not rebuilt has the same packages; no container is needed to say so again).
pub fn carried(
    previous: Option<&crate::manifest::Manifest>,
    cell: &str,
    image: Option<&str>,
    dir: &Path,
) -> Option<SbomRecord> {
    let image = image?;
    let p = previous?
        .cells
        .iter()
        .find(|p| p.id == cell && p.image_id.as_deref() == Some(image))?;
    let rec = p.sbom.clone()?;
    let bytes = std::fs::read(dir.join(rec.path.as_deref()?)).ok()?;
    (rec.sha256.as_deref() == Some(sha256_hex(&bytes).as_str())).then_some(rec)
}

/// Validation against the official CycloneDX 1.5 schema (vendored under
/// `schemas/vendor/cyclonedx/`), for the tests.
#[cfg(test)]
pub mod schema_check {
    use std::path::Path;

    fn load(name: &str) -> serde_json::Value {
        let path = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("schemas/vendor/cyclonedx")
            .join(name);
        let text =
            std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        serde_json::from_str(&text).expect("a schema is JSON")
    }

    /// Panic, naming every violation, unless `doc` is a valid CycloneDX 1.5 BOM.
    pub fn validate(doc: &serde_json::Value) {
        let base = "http://cyclonedx.org/schema/";
        let registry = jsonschema::Registry::new()
            .add(
                format!("{base}spdx.SNAPSHOT.schema.json"),
                load("spdx.SNAPSHOT.schema.json"),
            )
            .and_then(|r| {
                r.add(
                    format!("{base}jsf-0.82.SNAPSHOT.schema.json"),
                    load("jsf-0.82.SNAPSHOT.schema.json"),
                )
            })
            .and_then(|r| r.prepare())
            .expect("the referenced schemas load");
        let schema = load("bom-1.5.SNAPSHOT.schema.json");
        let v = jsonschema::options()
            .should_validate_formats(true)
            .with_registry(&registry)
            .build(&schema)
            .expect("the CycloneDX schema compiles");
        let errors: Vec<String> = v
            .iter_errors(doc)
            .map(|e| format!("{e} (at {})", e.instance_path()))
            .collect();
        assert!(
            errors.is_empty(),
            "not a valid CycloneDX 1.5 BOM:\n{}",
            errors.join("\n")
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LISTING: &str = "@image-matrix-packages 1\n@os ubuntu\t22.04\n@dpkg\n\
ii \tbash\t5.1-6ubuntu1\tamd64\nii \tlibc6\t2.35-0ubuntu3.8\tamd64\nii \ttzdata\t2024a-0ubuntu0.22.04\tall\n\
@conda /opt/conda\nnumpy\t1.26.4\tpy311h_0\thttps://repo.anaconda.com/pkgs/main/linux-64\tBSD-3-Clause\n\
python\t3.11.9\th955ad1f_0\tpkgs/main\tPSF-2.0\n@pip 3.11.9\n\
jupyterlab\t4.2.5\tpip\tBSD-3-Clause\ntorch\t2.4.1+cu121\tpip\t\n\
@dpkg-licenses\nbash\tGPL-3+\n@end\n";

    fn subject() -> cyclonedx::Subject<'static> {
        cyclonedx::Subject {
            cell: "py3.11-ubuntu22.04-amd64",
            tag: Some("registry.example/team/miniconda:py3.11-ubuntu22.04"),
            image_id: Some("sha256:abc"),
            platform: "linux/amd64",
        }
    }

    #[test]
    fn a_record_writes_a_valid_deterministic_bom_beside_the_manifest() {
        let dir = tempfile::tempdir().unwrap();
        let c = Collected {
            output: Ok(LISTING.to_string()),
            seconds: 0.42,
        };
        let rec = record(&c, &subject(), dir.path());
        assert_eq!(
            rec.path.as_deref(),
            Some("sbom/py3.11-ubuntu22.04-amd64.json")
        );
        assert_eq!(
            rec.packages,
            PackageCounts {
                dpkg: 3,
                conda: 2,
                pip: 2
            }
        );
        assert_eq!(rec.seconds, Some(0.4));
        assert!(rec.notes.is_empty(), "{:?}", rec.notes);
        let bytes = std::fs::read(dir.path().join(rec.path.as_ref().unwrap())).unwrap();
        assert_eq!(rec.sha256.as_deref(), Some(sha256_hex(&bytes).as_str()));
        let doc: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
        schema_check::validate(&doc);
        let purls: Vec<&str> = doc["components"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| c["purl"].as_str().unwrap())
            .collect();
        assert!(purls.contains(&"pkg:deb/ubuntu/bash@5.1-6ubuntu1?arch=amd64&distro=ubuntu-22.04"));
        assert!(purls.contains(&"pkg:pypi/torch@2.4.1%2Bcu121"));
        assert_eq!(
            doc["metadata"]["component"]["name"],
            "registry.example/team/miniconda"
        );
        // no file left half-written, nothing else in the folder
        let names: Vec<String> = std::fs::read_dir(dir.path().join("sbom"))
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        assert_eq!(names, ["py3.11-ubuntu22.04-amd64.json"]);
        // the same listing again: the same document but for its one timestamp
        let again = record(&c, &subject(), dir.path());
        let doc2: serde_json::Value =
            serde_json::from_slice(&std::fs::read(dir.path().join(again.path.unwrap())).unwrap())
                .unwrap();
        let strip = |mut d: serde_json::Value| {
            d["metadata"]["timestamp"] = serde_json::Value::Null;
            d
        };
        assert_eq!(strip(doc), strip(doc2));
    }

    #[test]
    fn a_listing_that_failed_or_lists_little_is_said_never_fatal() {
        let dir = tempfile::tempdir().unwrap();
        let failed = Collected {
            output: Err("Error response from daemon: container is not running".into()),
            seconds: 0.1,
        };
        let rec = record(&failed, &subject(), dir.path());
        assert_eq!(rec.path, None);
        assert!(
            rec.notes[0].contains("container is not running"),
            "{:?}",
            rec.notes
        );
        assert!(!dir.path().join("sbom").exists());
        // the stand-in installer: no conda-meta, python's packages only
        let thin = Collected {
            output: Ok("@dpkg\nii \tbash\t5\tamd64\n@conda /opt/miniconda3\n\
@error no conda-meta folder in /opt/miniconda3 (not a conda environment)\n@pip 3.11\n\
pip\t23.0.1\tpip\tMIT\n@end\n"
                .into()),
            seconds: 0.1,
        };
        let rec = record(&thin, &subject(), dir.path());
        assert!(rec.path.is_some());
        assert_eq!(rec.packages.conda, 0);
        assert_eq!(
            rec.notes,
            ["conda: no conda-meta folder in /opt/miniconda3 (not a conda environment)"]
        );
        let doc: serde_json::Value =
            serde_json::from_slice(&std::fs::read(dir.path().join(rec.path.unwrap())).unwrap())
                .unwrap();
        schema_check::validate(&doc);
        // a cell id that is no file name is made one
        assert_eq!(file_name("../x/y"), "_x_y.json");
    }

    #[test]
    #[should_panic(expected = "not a valid CycloneDX 1.5 BOM")]
    fn the_schema_check_rejects_what_the_schema_does() {
        // a component type CycloneDX does not have, and a timestamp that is no date
        schema_check::validate(&serde_json::json!({
            "bomFormat": "CycloneDX",
            "specVersion": "1.5",
            "metadata": {"timestamp": "last night"},
            "components": [{"type": "wheel", "name": "x"}],
        }));
    }

    #[test]
    fn the_script_is_plain_sh() {
        // `sh -n` parses it without running it: a syntax slip must not reach an image
        let out = std::process::Command::new("sh")
            .args(["-n", "-c", SCRIPT])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}
