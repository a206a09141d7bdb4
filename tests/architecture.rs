//! The shape of the code, checked: no import cycle between the top-level modules of
//! `src/` (each module only uses modules below it), and no function longer than 120
//! lines. Test code (`#[cfg(test)]` and below) is not counted.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

fn sources(dir: &Path, out: &mut Vec<PathBuf>) {
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            sources(&p, out);
        } else if p.extension().is_some_and(|x| x == "rs") {
            out.push(p);
        }
    }
}

/// Each source file's text without its tests, and its top-level module name.
fn files() -> Vec<(String, PathBuf, String)> {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut paths = Vec::new();
    sources(&src, &mut paths);
    paths.sort();
    paths
        .into_iter()
        .map(|p| {
            let text = std::fs::read_to_string(&p).unwrap();
            let body = text.split("#[cfg(test)]").next().unwrap_or("").to_string();
            let rel = p.strip_prefix(&src).unwrap();
            let first = rel.iter().next().unwrap().to_string_lossy().into_owned();
            let module = first.trim_end_matches(".rs").to_string();
            (module, p, body)
        })
        .collect()
}

/// `crate::NAME` references of a text.
fn uses(body: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    let mut rest = body;
    while let Some(i) = rest.find("crate::") {
        rest = &rest[i + "crate::".len()..];
        let name: String = rest
            .chars()
            .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
            .collect();
        if !name.is_empty() {
            out.insert(name);
        }
    }
    out
}

#[test]
fn no_module_imports_one_that_imports_it_back() {
    let mut graph: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for (module, _, body) in files() {
        let targets = uses(&body);
        let entry = graph.entry(module.clone()).or_default();
        entry.extend(targets.into_iter().filter(|t| *t != module));
    }
    assert!(graph.len() > 10, "found the modules: {:?}", graph.keys());
    // Depth-first search for a back edge.
    fn visit(
        m: &str,
        graph: &BTreeMap<String, BTreeSet<String>>,
        state: &mut BTreeMap<String, u8>,
        stack: &mut Vec<String>,
        cycles: &mut Vec<String>,
    ) {
        state.insert(m.to_string(), 1);
        stack.push(m.to_string());
        for n in graph.get(m).into_iter().flatten() {
            match state.get(n.as_str()) {
                Some(1) => {
                    let at = stack.iter().position(|x| x == n).unwrap_or(0);
                    let mut c = stack[at..].to_vec();
                    c.push(n.clone());
                    cycles.push(c.join(" -> "));
                }
                Some(_) => {}
                None => visit(n, graph, state, stack, cycles),
            }
        }
        stack.pop();
        state.insert(m.to_string(), 2);
    }
    let (mut state, mut cycles) = (BTreeMap::new(), Vec::new());
    for m in graph.keys() {
        if !state.contains_key(m.as_str()) {
            visit(m, &graph, &mut state, &mut Vec::new(), &mut cycles);
        }
    }
    assert!(cycles.is_empty(), "import cycles: {cycles:#?}");
}

#[test]
fn no_function_is_longer_than_120_lines() {
    let mut long = Vec::new();
    for (_, path, body) in files() {
        let lines: Vec<&str> = body.lines().collect();
        for (i, l) in lines.iter().enumerate() {
            let t = l.trim_start();
            let t = t
                .strip_prefix("pub(crate) ")
                .or_else(|| t.strip_prefix("pub "))
                .unwrap_or(t);
            if !t.starts_with("fn ") {
                continue;
            }
            let (mut depth, mut started) = (0i64, false);
            for (j, lj) in lines.iter().enumerate().skip(i) {
                depth += lj.matches('{').count() as i64 - lj.matches('}').count() as i64;
                started |= lj.contains('{');
                if started && depth <= 0 {
                    if j - i + 1 > 120 {
                        long.push(format!(
                            "{}:{} ({} lines)",
                            path.display(),
                            i + 1,
                            j - i + 1
                        ));
                    }
                    break;
                }
                if !started && lj.trim_end().ends_with(';') {
                    break;
                }
            }
        }
    }
    assert!(long.is_empty(), "functions over 120 lines: {long:#?}");
}
