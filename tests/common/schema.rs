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
