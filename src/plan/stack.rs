//! The Python package stack of each cell: the common list (`packages.pip`) with its
//! markers resolved for the cell's Python, the variant's packages, and the variant's
//! deliberate overrides of the common pins. Combinations known not to install (a
//! requirement with no wheel for the cell's Python) are refused at plan time, with
//! the fix in the message.

use std::collections::BTreeSet;

use crate::config::raw::RawConfig;
use crate::config::requirement::Requirement;
use crate::diag::{Diags, Pos};
use crate::plan::{Cell, PyVersion};

/// Releases of a package that have wheels for a Python, and from which version of
/// that package on. Checked on 2026-11-29 against the Python package index:
/// `pip download 'numpy<2.0' --python-version 3.13 --only-binary=:all:` finds only 2.1
/// and later (1.26.4 is the last release with cp312 wheels); for 3.14 the first is 2.3.2.
const WHEELS: &[(&str, &str, &[&str])] = &[
    (
        "numpy",
        "3.13",
        &[
            "2.1.0", "2.1.3", "2.2.6", "2.3.2", "2.3.5", "2.4.6", "2.5.5",
        ],
    ),
    ("numpy", "3.14", &["2.3.2", "2.3.5", "2.4.6", "2.5.5"]),
];

/// The requirements one cell installs: the common stack (markers resolved, minus the
/// names the variant overrides), then the variant's own and its overrides.
pub fn common_for(common: &[String], python: &str, overridden: &[String]) -> Vec<String> {
    common
        .iter()
        .filter_map(|t| Requirement::parse(t).ok())
        .filter(|r| r.applies_to(python) && !overridden.contains(&r.name))
        .map(|r| r.spec)
        .collect()
}

/// The variant's requirements that apply to a Python, without their markers.
pub fn variant_for(list: &[String], python: &str) -> Vec<String> {
    list.iter()
        .filter_map(|t| Requirement::parse(t).ok())
        .filter(|r| r.applies_to(python))
        .map(|r| r.spec)
        .collect()
}

/// Normalised names a variant's overrides replace in the common stack.
pub fn overridden(overrides: &[String]) -> Vec<String> {
    overrides
        .iter()
        .filter_map(|t| Requirement::parse(t).ok())
        .map(|r| r.name)
        .collect()
}

/// Refuse requirements that cannot install on a cell's Python.
pub fn check(cells: &[Cell], common: &[String], raw: &RawConfig, d: &mut Diags) {
    let mut seen: BTreeSet<(String, String)> = BTreeSet::new();
    // what is checked depends on the Python and the variant only: each pair once
    // (the first cell of a pair is the one messages name, as before)
    let mut checked: std::collections::HashSet<(PyVersion, *const crate::plan::Variant)> =
        std::collections::HashSet::new();
    // the common stack parsed once, not once per (Python, variant)
    let common_parsed: Vec<Option<Requirement>> =
        common.iter().map(|t| Requirement::parse(t).ok()).collect();
    for c in cells {
        if !checked.insert((c.python, std::sync::Arc::as_ptr(&c.variant))) {
            continue;
        }
        let py = c.python.to_string();
        let over = overridden(&c.variant.overrides);
        // (text, where, key, its index in the common stack)
        let mut texts: Vec<(&String, Option<Pos>, String, Option<usize>)> = Vec::new();
        for (i, t) in common.iter().enumerate() {
            let at = raw
                .packages
                .pip
                .as_ref()
                .and_then(|l| l.get(i))
                .map(|p| p.at);
            texts.push((t, at, "packages.pip".into(), Some(i)));
        }
        let rv = raw.variants.iter().find(|v| v.name.value == c.variant.name);
        for (list, field) in [(&c.variant.pip, "pip"), (&c.variant.overrides, "override")] {
            for (i, t) in list.iter().enumerate() {
                let at = rv.and_then(|v| {
                    let l = if field == "pip" { &v.pip } else { &v.overrides };
                    l.get(i).map(|p| p.at)
                });
                let key = rv.map_or_else(String::new, |v| format!("{}.{field}", v.key));
                texts.push((t, at, key, None));
            }
        }
        let common_names: Vec<&str> = common_parsed
            .iter()
            .flatten()
            .filter(|r| r.applies_to(&py))
            .map(|r| r.name.as_str())
            .collect();
        for (text, at, key, in_common) in texts {
            let own;
            let r = match in_common {
                Some(i) => common_parsed[i].as_ref(),
                None => {
                    own = Requirement::parse(text).ok();
                    own.as_ref()
                }
            };
            let Some(r) = r else {
                continue;
            };
            if key.ends_with(".pip")
                && key != "packages.pip"
                && common_names.contains(&r.name.as_str())
                && seen.insert((format!("dup {text}"), key.clone()))
            {
                d.error(
                    at,
                    key.clone(),
                    format!(
                        "`{text}` changes `{}`, which the common stack (packages.pip) installs; a variant installs under the stack's versions, so write it under `override:` to replace the common pin on purpose",
                        r.name
                    ),
                );
                continue;
            }
            let replaced = key == "packages.pip" && over.contains(&r.name);
            if replaced || !r.applies_to(&py) || !seen.insert((text.clone(), py.clone())) {
                continue;
            }
            for (name, wheel_py, have) in WHEELS {
                if r.name == *name && *wheel_py == py && !r.accepts_any(have) {
                    d.error(
                        at,
                        key.clone(),
                        format!(
                            "`{text}` cannot install on Python {py} (cell {}): no release it allows has a wheel for CPython {py} (the first that does is {}); keep the pin where it installs with `{}; python_version < \"{py}\"`",
                            c.id, have[0], r.spec
                        ),
                    );
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use crate::plan::{plan_text, PlanOptions};

    fn rendered_pip(yaml: &str) -> Result<Vec<(String, String)>, String> {
        rendered(yaml, "conda/pip-packages.txt")
    }

    fn rendered(yaml: &str, file: &str) -> Result<Vec<(String, String)>, String> {
        let p = plan_text(
            yaml,
            "m.yaml",
            std::path::Path::new("."),
            &PlanOptions {
                date: "20260101".into(),
            },
        )
        .map_err(|e| e.to_string())?;
        Ok(p.cells
            .iter()
            .map(|c| {
                let ctx = crate::render::render(&p.settings, c);
                let f = ctx.files.iter().find(|f| f.path == file).unwrap();
                (
                    c.python.to_string(),
                    String::from_utf8_lossy(&f.bytes).into_owned(),
                )
            })
            .collect())
    }

    #[test]
    fn the_default_stack_plans_on_every_python_from_3_8_to_3_14() {
        let yaml = "version: 1\nbases: [ubuntu:24.04]\npython:\n  - {version: \"3.8\", miniconda: \"23.11.0-2\"}\n  - \"3.9\"\n  - \"3.10\"\n  - \"3.11\"\n  - \"3.12\"\n  - {version: \"3.13\", miniconda: \"26.5.3-1\"}\n  - {version: \"3.14\", miniconda: \"26.5.3-1\"}\n";
        let cells = rendered_pip(yaml).unwrap();
        assert_eq!(cells.len(), 7);
        for (py, list) in cells {
            let pinned = list.lines().any(|l| l == "numpy<2.0");
            let old = matches!(py.as_str(), "3.8" | "3.9" | "3.10" | "3.11" | "3.12");
            assert_eq!(pinned, old, "Python {py}: {list}");
            assert!(list.contains("tensorboard") && list.contains("jupyterlab"));
            assert!(
                !list.contains("python_version"),
                "markers are resolved: {list}"
            );
        }
    }

    #[test]
    fn a_pin_with_no_wheel_for_the_python_is_refused_with_the_fix() {
        let e = rendered_pip("version: 1\nbases: [ubuntu:24.04]\npython: [{version: \"3.13\", miniconda: \"26.5.3-1\"}]\npackages: {pip: [\"numpy<2.0\", tensorboard]}\n")
            .unwrap_err();
        assert!(
            e.contains("m.yaml:4:18: `packages.pip`: `numpy<2.0` cannot install on Python 3.13"),
            "{e}"
        );
        assert!(e.contains("numpy<2.0; python_version < \"3.13\""), "{e}");
        // a variant that says it wants numpy 2 gets it, and the common pin goes
        // (the shared Miniconda layer keeps the common stack; the variant's layer
        // installs its override with numpy left out of its constraints)
        let np2 = "version: 1\nbases: [ubuntu:24.04]\npython: [\"3.12\"]\nvariants: [{name: np2, override: [\"numpy>=2.0\"]}]\n";
        assert_eq!(
            rendered(np2, "variant/pip-packages.txt").unwrap()[0].1,
            "numpy>=2.0\n"
        );
        assert_eq!(
            rendered(np2, "variant/unpinned.txt").unwrap()[0].1,
            "numpy\n"
        );
        // one that changes a common package without saying so is refused
        let e = rendered_pip("version: 1\nbases: [ubuntu:24.04]\npython: [\"3.12\"]\nvariants: [{name: np2, pip: [\"numpy>=2.0\"]}]\n").unwrap_err();
        assert!(
            e.contains("`variants[0].pip`: `numpy>=2.0` changes `numpy`")
                && e.contains("override:"),
            "{e}"
        );
    }
}
