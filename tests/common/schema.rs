//! Every plan and manifest the tests produce is checked against the schema the tool
//! ships (`schemas/NAME.schema.json`), so the schemas cannot drift from the output.

use std::path::Path;

/// Panic, naming every violation, unless `doc` is valid against schema `name`.
pub fn check(name: &str, doc: &serde_json::Value) {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join(format!("schemas/{name}.schema.json"));
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let schema: serde_json::Value = serde_json::from_str(&text).expect("the schema is JSON");
    let validator = jsonschema::options()
        .build(&schema)
        .unwrap_or_else(|e| panic!("{} does not compile: {e}", path.display()));
    let errors: Vec<String> = validator
        .iter_errors(doc)
        .map(|e| format!("{e} (at {})", e.instance_path()))
        .collect();
    assert!(
        errors.is_empty(),
        "not a valid {name} document ({}):\n{}",
        path.display(),
        errors.join("\n")
    );
}

/// Panic, naming every violation, unless `doc` is a valid CycloneDX 1.5 BOM (the
/// official schema, vendored under `schemas/vendor/cyclonedx/`).
#[allow(dead_code)] // only the binaries that read SBOMs use it
pub fn check_cyclonedx(doc: &serde_json::Value) {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("schemas/vendor/cyclonedx");
    let load = |name: &str| -> serde_json::Value {
        let text =
            std::fs::read_to_string(dir.join(name)).unwrap_or_else(|e| panic!("{name}: {e}"));
        serde_json::from_str(&text).expect("a schema is JSON")
    };
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
    let v = jsonschema::options()
        .should_validate_formats(true)
        .with_registry(&registry)
        .build(&load("bom-1.5.SNAPSHOT.schema.json"))
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
