//! The JSON Schemas of what the tool reads and writes: `matrix.yaml`, the plan
//! document (`plan --format json`), the manifest and the progress events
//! (`--progress json`). The first three are generated from the Rust types; the events'
//! is written by hand (`schemas/events.schema.json`) and checked against real runs.
//! `schemas/` holds them all, as `matrix schema NAME` prints them.

use serde_json::Value;

/// The schemas, by name.
pub const NAMES: &[&str] = &["matrix", "plan", "manifest", "events"];

const EVENTS: &str = include_str!("../schemas/events.schema.json");

/// The schema called `name` (one of [`NAMES`]).
pub fn schema(name: &str) -> Option<Value> {
    let generated = match name {
        "matrix" => {
            // a key left out of matrix.yaml is absent, never null
            let mut v = schemars::schema_for!(crate::config::schema::Matrix).to_value();
            no_null(&mut v);
            return Some(with_id(v, name));
        }
        "plan" => schemars::schema_for!(crate::plan::output::PlanDoc<'static>),
        "manifest" => schemars::schema_for!(crate::manifest::Manifest),
        "events" => return serde_json::from_str(EVENTS).ok(),
        _ => return None,
    };
    Some(with_id(generated.to_value(), name))
}

fn with_id(mut v: Value, name: &str) -> Value {
    if let Some(o) = v.as_object_mut() {
        o.insert(
            "$id".into(),
            Value::String(format!(
                "https://github.com/matrix-dc/mlops-images/schemas/{name}.schema.json"
            )),
        );
    }
    v
}

/// Drop `null` from every `type` list and `anyOf` (what `Option` adds).
fn no_null(v: &mut Value) {
    match v {
        Value::Object(o) => {
            if let Some(Value::Array(types)) = o.get_mut("type") {
                types.retain(|t| t != "null");
                if types.len() == 1 {
                    let only = types.remove(0);
                    o.insert("type".into(), only);
                }
            }
            if let Some(Value::Array(any)) = o.get_mut("anyOf") {
                any.retain(|s| s.get("type").and_then(Value::as_str) != Some("null"));
                if any.len() == 1 {
                    if let Some(Value::Object(only)) = o
                        .remove("anyOf")
                        .and_then(|mut a| a.as_array_mut().and_then(|a| a.pop()))
                    {
                        o.extend(only);
                    }
                }
            }
            o.values_mut().for_each(no_null);
        }
        Value::Array(a) => a.iter_mut().for_each(no_null),
        _ => {}
    }
}

/// A schema as it is shipped: pretty JSON and a final newline.
pub fn text(name: &str) -> Option<String> {
    if name == "events" {
        // written by hand: printed as shipped
        return Some(EVENTS.to_string());
    }
    schema(name).and_then(|v| serde_json::to_string_pretty(&v).ok().map(|s| s + "\n"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::raw::keys;

    /// `schemas/*.schema.json` are what the types generate: run
    /// `for n in matrix plan manifest; do matrix schema $n > schemas/$n.schema.json; done`
    /// after changing them.
    #[test]
    fn the_shipped_schemas_are_the_generated_ones() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("schemas");
        for name in NAMES {
            let shipped = std::fs::read_to_string(dir.join(format!("{name}.schema.json")))
                .unwrap_or_else(|e| panic!("schemas/{name}.schema.json: {e}"));
            assert!(
                text(name).as_deref() == Some(shipped.as_str()),
                "schemas/{name}.schema.json is stale: regenerate it with `matrix schema {name}`"
            );
            // every schema parses, the events' too
            assert!(schema(name).is_some(), "{name}");
        }
    }

    fn props<'a>(root: &'a Value, def: Option<&str>) -> Vec<&'a str> {
        let obj = match def {
            None => root,
            Some(d) => &root["$defs"][d],
        };
        let mut k: Vec<&str> = obj["properties"]
            .as_object()
            .unwrap_or_else(|| panic!("{def:?} has no properties"))
            .keys()
            .map(String::as_str)
            .collect();
        k.sort_unstable();
        k
    }

    fn sorted(k: &[&'static str]) -> Vec<&'static str> {
        let mut k = k.to_vec();
        k.sort_unstable();
        k
    }

    /// The matrix.yaml schema names exactly the keys the walker accepts, mapping by
    /// mapping (a new key must be added to both, or this fails).
    #[test]
    fn the_matrix_schema_knows_every_key_the_walker_accepts() {
        let s = schema("matrix").unwrap();
        assert_eq!(props(&s, None), sorted(keys::TOP));
        for (def, want) in [
            ("Image", keys::IMAGE),
            ("OtherBase", keys::BASE),
            ("PythonRelease", keys::PYTHON),
            ("Variant", keys::VARIANT),
            ("Engine", keys::ENGINE),
            ("Installer", keys::INSTALLER),
            ("Sources", keys::SOURCES),
            ("Packages", keys::PACKAGES),
            ("Runtime", keys::RUNTIME),
            ("FixedPassword", keys::FIXED_PASSWORD),
            ("Build", keys::BUILD),
            ("Cache", keys::CACHE),
            ("Limits", keys::LIMITS),
            ("FrameworkLayer", keys::FRAMEWORK),
            ("Family", crate::config::raw::FAMILY_KEYS),
            ("FamilyService", crate::config::raw::SERVICE_KEYS),
            ("FamilyCheck", crate::config::raw::CHECK_KEYS),
        ] {
            assert_eq!(props(&s, Some(def)), sorted(want), "{def}");
        }
        let mut rule = crate::coord::Key::names(crate::coord::Key::RULE);
        rule.push("reason");
        assert_eq!(props(&s, Some("Rule")), sorted(&rule));
        assert_eq!(
            props(&s, Some("Include")),
            sorted(&crate::coord::Key::names(crate::coord::Key::INCLUDE))
        );
        let platforms: Vec<&str> = s["$defs"]["Platform"]["enum"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_str().unwrap())
            .collect();
        let known: Vec<&str> = crate::coord::PLATFORMS.iter().map(|(p, _)| *p).collect();
        assert_eq!(platforms, known);
    }
}
