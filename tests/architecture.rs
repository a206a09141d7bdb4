//! The shape of the code, checked: no import cycle between the modules of one folder
//! of `src/` (the top-level modules of `src/`, and the modules of each folder such as
//! `src/plan/`: each only uses modules below it), no function longer than 120 lines,
//! and no module of a run's phases that writes the terminal itself. Test code
//! (`#[cfg(test)]` and below) is not counted.
//!
//! A reference is any `crate::…`, `super::…` or `self::…` path, `use` groups
//! (`use super::{a, b::C}`) included; a file depends on a sibling module when one of
//! its paths goes into it. What a path reaches through a re-export (`pub use`) counts
//! as the module that re-exports it, and an inline `mod x { … }` is read as its file.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// Cycles known today and allowed until they are broken: each the set of modules it
/// runs through. The test fails on any other cycle, and on an allowed one that is
/// gone, so that its line here is removed with it.
const ALLOWED_CYCLES: &[&[&str]] = &[];

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

/// Each source file's module path (`src/plan/catalogue.rs` is `plan::catalogue`,
/// `src/plan/mod.rs` is `plan`, `src/lib.rs` and `src/main.rs` the crate root), its
/// path and its text without its tests.
fn files() -> Vec<(Vec<String>, PathBuf, String)> {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut paths = Vec::new();
    sources(&src, &mut paths);
    paths.sort();
    paths
        .into_iter()
        .map(|p| {
            let text = std::fs::read_to_string(&p).unwrap();
            let body = text.split("#[cfg(test)]").next().unwrap_or("").to_string();
            let rel = p.strip_prefix(&src).unwrap().with_extension("");
            let mut module: Vec<String> = rel
                .iter()
                .map(|s| s.to_string_lossy().into_owned())
                .collect();
            if matches!(module.last().map(String::as_str), Some("mod")) {
                module.pop();
            }
            if matches!(module.as_slice(), [root] if root == "lib" || root == "main") {
                module.clear();
            }
            (module, p, body)
        })
        .collect()
}

fn is_ident(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '_'
}

/// The paths of a use tree at the start of `text`, each appended to `prefix`:
/// `a::b`, `a::{b, c::d}`, `a::{self, b as c}`, `a::*`.
fn tree(text: &str, prefix: &[String], out: &mut Vec<Vec<String>>) {
    let mut path = prefix.to_vec();
    let mut rest = text.trim_start();
    let mut first = true;
    loop {
        if let Some(group) = rest.strip_prefix('{') {
            // each item of the group, split at the commas of this level
            let (mut depth, mut start) = (0, 0);
            for (i, c) in group.char_indices() {
                match c {
                    '{' => depth += 1,
                    '}' if depth > 0 => depth -= 1,
                    ',' | '}' if depth == 0 => {
                        tree(&group[start..i], &path, out);
                        if c == '}' {
                            return;
                        }
                        start = i + 1;
                    }
                    _ => {}
                }
            }
            return;
        }
        if rest.starts_with('*') {
            out.push(path);
            return;
        }
        let name: String = rest.chars().take_while(|c| is_ident(*c)).collect();
        if name.is_empty() {
            break;
        }
        // `self` first in a group item is the group's own path
        if !(first && name == "self") {
            path.push(name.clone());
        }
        first = false;
        rest = rest[name.len()..].trim_start();
        match rest.strip_prefix("::") {
            Some(r) => rest = r.trim_start(),
            None => break,
        }
    }
    if !first {
        out.push(path);
    }
}

/// The code of a text: its comments gone (a doc link such as [`super::html`] is no
/// import) and its string and character literals emptied.
fn code(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(c) = rest.chars().next() {
        let raw = rest
            .strip_prefix('r')
            .map(|r| r.len() - r.trim_start_matches('#').len())
            .filter(|hashes| rest[1 + hashes..].starts_with('"'));
        // `r"…"`, `r#"…"#`, `br"…"`, not the end of a name such as `for"`
        let mut before = out.chars().rev();
        let before = match before.next() {
            Some('b') => before.next(),
            other => other,
        };
        if rest.starts_with("//") {
            rest = &rest[rest.find('\n').unwrap_or(rest.len())..];
        } else if rest.starts_with("/*") {
            rest = &rest[rest.find("*/").map_or(rest.len(), |i| i + 2)..];
        } else if let Some(hashes) = raw.filter(|_| !before.is_some_and(is_ident)) {
            let end = format!("\"{}", "#".repeat(hashes));
            let body = &rest[2 + hashes..];
            rest = &body[body.find(&end).map_or(body.len(), |i| i + end.len())..];
            out.push_str("\"\"");
        } else if c == '"' {
            let mut escaped = false;
            let end = rest[1..]
                .char_indices()
                .find(|&(_, c)| {
                    let close = c == '"' && !escaped;
                    escaped = c == '\\' && !escaped;
                    close
                })
                .map_or(rest.len(), |(i, _)| i + 2);
            rest = &rest[end..];
            out.push_str("\"\"");
        } else if let Some(len) = char_literal(rest) {
            rest = &rest[len..];
            out.push_str("' '");
        } else {
            out.push(c);
            rest = &rest[c.len_utf8()..];
        }
    }
    out
}

/// The length of the character literal at the start of `text` (`'x'`, `'\''`,
/// `'\u{e9}'`), if one is there and not a lifetime (`'a`).
fn char_literal(text: &str) -> Option<usize> {
    let inner = text.strip_prefix('\'')?;
    if let Some(escape) = inner.strip_prefix('\\') {
        // the escaped character, then the closing quote after it
        let skip = escape.chars().next()?.len_utf8();
        return Some(2 + skip + escape[skip..].find('\'')? + 1);
    }
    let c = inner.chars().next()?;
    inner[c.len_utf8()..]
        .starts_with('\'')
        .then(|| 2 + c.len_utf8())
}

/// Every module path a file of module `module` names, made absolute: `crate::a::b`,
/// `super::a`, `super::super::a`, `self::a` and the use groups of each.
fn references(module: &[String], body: &str) -> Vec<Vec<String>> {
    let body = &code(body);
    let mut out = Vec::new();
    for (i, _) in body.match_indices("::") {
        // the start of the path this `::` is the first separator of
        let head = &body[..i];
        let word_start = head
            .char_indices()
            .rev()
            .take_while(|(_, c)| is_ident(*c))
            .last()
            .map_or(i, |(j, _)| j);
        let word = &head[word_start..];
        let before = head[..word_start].chars().next_back();
        if before.is_some_and(|c| is_ident(c) || c == ':') {
            continue;
        }
        let mut rest = &body[i + 2..];
        let base: Vec<String> = match word {
            "crate" => Vec::new(),
            "self" => module.to_vec(),
            "super" => {
                let mut up = module.len().saturating_sub(1);
                while let Some(r) = rest.strip_prefix("super::") {
                    rest = r;
                    up = up.saturating_sub(1);
                }
                module[..up].to_vec()
            }
            _ => continue,
        };
        tree(rest, &base, &mut out);
    }
    out
}

/// For each folder (a module with modules of its own; the crate root is keyed ""), the
/// dependencies between its modules, by full path (`plan::catalogue`). A file's
/// reference counts in the folder where its module path and the referenced path part:
/// `plan::family` naming `crate::plan::frameworks::Wheel` makes the edge
/// `plan::family -> plan::frameworks` in `plan`; a reference to an item of a
/// parent (`super::Bytes`) or of a child is no edge between siblings.
type Graph = BTreeMap<String, BTreeSet<String>>;

fn folders() -> BTreeMap<String, Graph> {
    let files = files();
    let modules: BTreeSet<Vec<String>> = files.iter().map(|(m, _, _)| m.clone()).collect();
    let mut out: BTreeMap<String, Graph> = BTreeMap::new();
    for m in modules.iter().filter(|m| !m.is_empty()) {
        out.entry(m[..m.len() - 1].join("::"))
            .or_default()
            .entry(m.join("::"))
            .or_default();
    }
    for (module, _, body) in &files {
        for r in references(module, body) {
            let common = module.iter().zip(&r).take_while(|(a, b)| a == b).count();
            if common == module.len() || common == r.len() || !modules.contains(&r[..=common]) {
                continue;
            }
            let folder = out.entry(module[..common].join("::")).or_default();
            folder
                .entry(module[..=common].join("::"))
                .or_default()
                .insert(r[..=common].join("::"));
        }
    }
    out
}

/// The cycles of a graph: each strongly connected set of more than one module, with
/// one way round it (`a -> b -> a`).
fn cycles(graph: &Graph) -> Vec<(BTreeSet<String>, String)> {
    let reach = |from: &str| {
        let mut seen = BTreeSet::new();
        let mut todo = vec![from.to_string()];
        while let Some(n) = todo.pop() {
            for next in graph.get(&n).into_iter().flatten() {
                if seen.insert(next.clone()) {
                    todo.push(next.clone());
                }
            }
        }
        seen
    };
    let reached: BTreeMap<&String, BTreeSet<String>> =
        graph.keys().map(|n| (n, reach(n))).collect();
    let mut out: Vec<(BTreeSet<String>, String)> = Vec::new();
    for (n, from_n) in &reached {
        let members: BTreeSet<String> = from_n
            .iter()
            .filter(|m| reached.get(m).is_some_and(|r| r.contains(*n)))
            .cloned()
            .collect();
        if members.len() < 2 || out.iter().any(|(set, _)| *set == members) {
            continue;
        }
        // the shortest way from the first member back to itself, inside the set
        let first = members.iter().next().unwrap().clone();
        let mut back: BTreeMap<String, String> = BTreeMap::new();
        let mut queue = std::collections::VecDeque::from([first.clone()]);
        'search: while let Some(at) = queue.pop_front() {
            for next in graph.get(&at).into_iter().flatten() {
                if !members.contains(next) || back.contains_key(next) {
                    continue;
                }
                back.insert(next.clone(), at.clone());
                if *next == first {
                    break 'search;
                }
                queue.push_back(next.clone());
            }
        }
        let mut way = vec![first.clone()];
        let mut at = back[&first].clone();
        while at != first {
            way.push(at.clone());
            at = back[&at].clone();
        }
        way.push(first);
        way.reverse();
        out.push((members, way.join(" -> ")));
    }
    out
}

#[test]
fn no_module_imports_one_that_imports_it_back() {
    let folders = folders();
    let top = &folders[""];
    assert!(top.len() > 10, "found the modules: {:?}", top.keys());
    assert!(
        folders.get("plan").is_some_and(|p| p.len() > 10),
        "found the folders: {:?}",
        folders.keys()
    );
    let found: Vec<(BTreeSet<String>, String)> = folders.values().flat_map(cycles).collect();
    let allowed: Vec<BTreeSet<String>> = ALLOWED_CYCLES
        .iter()
        .map(|c| c.iter().map(|m| m.to_string()).collect())
        .collect();
    let unexpected: Vec<&String> = found
        .iter()
        .filter(|(set, _)| !allowed.contains(set))
        .map(|(_, way)| way)
        .collect();
    assert!(unexpected.is_empty(), "import cycles: {unexpected:#?}");
    let stale: Vec<&BTreeSet<String>> = allowed
        .iter()
        .filter(|a| !found.iter().any(|(set, _)| set == *a))
        .collect();
    assert!(
        stale.is_empty(),
        "these allowed cycles are gone; remove them from ALLOWED_CYCLES: {stale:?}"
    );
}

#[test]
fn references_are_read_in_every_form() {
    let module = ["plan", "frameworks"].map(String::from);
    let body = r##"
        use crate::plan::catalogue;
        use super::{version::PyVersion, axes as a, self};
        use super::super::coord::{self, Key};
        use crate::{term, run::{events::{Event, Outcome}, executor}};
        use self::inner::*;
        fn f() { super::family::with_parents(x); crate::docker::Docker::<T>::new(); }
        use my_crate::ignored; use image_matrix::plan::ignored; /* Self::ignored */
        /// [`super::ignored`]
        let q = ('"', "crate::ignored \" crate::ignored", r#"crate::"ignored"#, '\'');
        fn g<'a>(x: &'a str) -> &'a str { crate::term::line(x) }
    "##;
    let got: Vec<String> = references(&module, body)
        .iter()
        .map(|r| r.join("::"))
        .collect();
    assert_eq!(
        got,
        [
            "plan::catalogue",
            "plan::version::PyVersion",
            "plan::axes",
            "plan",
            "coord",
            "coord::Key",
            "term",
            "run::events::Event",
            "run::events::Outcome",
            "run::executor",
            "plan::frameworks::inner",
            "plan::family::with_parents",
            "docker::Docker",
            "term::line",
        ]
    );
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

/// A run's phases tell their listener (or the `say` hook their command gives them);
/// they never pick the terminal themselves: `term::`, `println!` and `eprintln!` stay
/// out of them.
#[test]
fn the_phases_of_a_run_do_not_write_the_terminal() {
    let phases = |m: &[String]| {
        matches!(
            m.first().map(String::as_str),
            Some("run" | "engine" | "engines" | "signals" | "prune" | "docker")
        )
    };
    let mut offenders = Vec::new();
    for (module, path, body) in files() {
        if !phases(&module) {
            continue;
        }
        let text = code(&body);
        for needle in ["term::", "println!", "eprintln!", "print!("] {
            if text.contains(needle) {
                offenders.push(format!("{} ({needle})", path.display()));
            }
        }
    }
    assert!(
        offenders.is_empty(),
        "these write the terminal instead of telling a listener: {offenders:#?}"
    );
}
