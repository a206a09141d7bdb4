//! pip requirements as the matrix may write them: `NAME[extras]` with version clauses,
//! optionally followed by a marker on the Python version
//! (`numpy<2.0; python_version < "3.13"`). The marker is evaluated by the planner for
//! each cell, so the rendered list says exactly what that cell installs; no URL,
//! option or other marker gets through.

use std::cmp::Ordering;

/// A comparison on a dotted numeric version.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Op {
    Lt,
    Le,
    Gt,
    Ge,
    Eq,
    Ne,
    Compatible,
}

impl Op {
    fn parse(s: &str) -> Option<Op> {
        Some(match s {
            "<" => Op::Lt,
            "<=" => Op::Le,
            ">" => Op::Gt,
            ">=" => Op::Ge,
            "==" | "===" => Op::Eq,
            "!=" => Op::Ne,
            "~=" => Op::Compatible,
            _ => return None,
        })
    }
}

/// One version clause: `<2.0`, `==1.*`, `~=1.26`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Clause {
    pub op: Op,
    pub version: String,
}

impl Clause {
    /// Whether a release version satisfies the clause (numeric components only;
    /// pre-releases and local versions are not considered).
    pub fn accepts(&self, v: &str) -> bool {
        let (pattern, wildcard) = match self.version.strip_suffix(".*") {
            Some(p) => (p, true),
            None => (self.version.as_str(), false),
        };
        let want = nums(pattern);
        let have = nums(v);
        if wildcard {
            let prefix = have.len() >= want.len() && have[..want.len()] == want[..];
            return match self.op {
                Op::Eq => prefix,
                Op::Ne => !prefix,
                _ => false,
            };
        }
        let ord = cmp(&have, &want);
        match self.op {
            Op::Lt => ord == Ordering::Less,
            Op::Le => ord != Ordering::Greater,
            Op::Gt => ord == Ordering::Greater,
            Op::Ge => ord != Ordering::Less,
            Op::Eq => ord == Ordering::Equal,
            Op::Ne => ord != Ordering::Equal,
            Op::Compatible => {
                let keep = want.len().saturating_sub(1).max(1);
                ord != Ordering::Less && have.len() >= keep && have[..keep] == want[..keep]
            }
        }
    }
}

fn nums(v: &str) -> Vec<u64> {
    v.split('.')
        .map(|p| {
            p.chars()
                .take_while(char::is_ascii_digit)
                .collect::<String>()
                .parse()
                .unwrap_or(0)
        })
        .collect()
}

fn cmp(a: &[u64], b: &[u64]) -> Ordering {
    let n = a.len().max(b.len());
    for i in 0..n {
        let (x, y) = (
            a.get(i).copied().unwrap_or(0),
            b.get(i).copied().unwrap_or(0),
        );
        match x.cmp(&y) {
            Ordering::Equal => {}
            o => return o,
        }
    }
    Ordering::Equal
}

/// `python_version OP "X.Y"` terms joined by `and` (all must hold) or `or` (one).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Marker {
    pub any: bool,
    pub terms: Vec<Clause>,
}

impl Marker {
    pub fn holds(&self, python: &str) -> bool {
        if self.any {
            self.terms.iter().any(|t| t.accepts(python))
        } else {
            self.terms.iter().all(|t| t.accepts(python))
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Requirement {
    /// As written.
    pub text: String,
    /// The distribution name, normalised (`jupyterlab-pygments`).
    pub name: String,
    /// The requirement without its marker (`numpy<2.0`).
    pub spec: String,
    pub clauses: Vec<Clause>,
    pub marker: Option<Marker>,
}

/// A distribution name as pip compares them: lowercase, runs of `-_.` as one `-`.
pub fn normalize(name: &str) -> String {
    let mut out = String::with_capacity(name.len());
    let mut sep = false;
    for c in name.chars() {
        if matches!(c, '-' | '_' | '.') {
            sep = true;
        } else {
            if sep && !out.is_empty() {
                out.push('-');
            }
            sep = false;
            out.push(c.to_ascii_lowercase());
        }
    }
    out
}

impl Requirement {
    pub fn parse(s: &str) -> Result<Requirement, String> {
        let bad = || {
            format!("`{s}` is not a plain pip requirement (NAME[extras] followed by clauses like >=1.0,<2, optionally `; python_version < \"3.13\"`; no URLs or options)")
        };
        let (spec, marker) = match s.split_once(';') {
            Some((a, m)) => (a.trim_end(), Some(parse_marker(m.trim()).ok_or_else(bad)?)),
            None => (s, None),
        };
        let name_end = spec
            .find(|c: char| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-')))
            .unwrap_or(spec.len());
        let (name, mut rest) = spec.split_at(name_end);
        if name.is_empty() || !name.as_bytes()[0].is_ascii_alphanumeric() {
            return Err(bad());
        }
        if let Some(r) = rest.strip_prefix('[') {
            let close = r.find(']').ok_or_else(bad)?;
            let extras_ok = r[..close].split(',').all(|e| {
                !e.is_empty()
                    && e.bytes()
                        .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'.' | b'_' | b'-'))
            });
            if !extras_ok {
                return Err(bad());
            }
            rest = &r[close + 1..];
        }
        let mut clauses = Vec::new();
        if !rest.is_empty() {
            for clause in rest.split(',') {
                clauses.push(parse_clause(clause).ok_or_else(bad)?);
            }
        }
        Ok(Requirement {
            text: s.to_string(),
            name: normalize(name),
            spec: spec.to_string(),
            clauses,
            marker,
        })
    }

    /// Whether it applies to a cell of this Python (`3.12`).
    pub fn applies_to(&self, python: &str) -> bool {
        self.marker.as_ref().is_none_or(|m| m.holds(python))
    }

    /// Whether some of these versions satisfy every clause.
    pub fn accepts_any(&self, versions: &[&str]) -> bool {
        versions
            .iter()
            .any(|v| self.clauses.iter().all(|c| c.accepts(v)))
    }
}

fn parse_clause(clause: &str) -> Option<Clause> {
    let op_len = clause
        .find(|c: char| !matches!(c, '<' | '>' | '=' | '!' | '~'))
        .unwrap_or(clause.len());
    let (op, ver) = clause.split_at(op_len);
    let op = Op::parse(op)?;
    let ver_ok = !ver.is_empty()
        && ver.bytes().all(|c| {
            c.is_ascii_alphanumeric() || matches!(c, b'.' | b'*' | b'+' | b'!' | b'-' | b'_')
        });
    ver_ok.then(|| Clause {
        op,
        version: ver.to_string(),
    })
}

/// `python_version < "3.13"`, with `and` / `or` (not both).
fn parse_marker(m: &str) -> Option<Marker> {
    let words: Vec<&str> = m.split_whitespace().collect();
    let joins: Vec<&&str> = words.iter().skip(3).step_by(4).collect();
    let any = joins.first().is_some_and(|j| **j == "or");
    if joins.iter().any(|j| **j != if any { "or" } else { "and" }) {
        return None;
    }
    let mut terms = Vec::new();
    for chunk in words.chunks(4) {
        let [var, op, value, ..] = chunk else {
            return None;
        };
        if *var != "python_version" {
            return None;
        }
        let v = value
            .strip_prefix('"')
            .and_then(|v| v.strip_suffix('"'))
            .or_else(|| value.strip_prefix('\'').and_then(|v| v.strip_suffix('\'')))?;
        if v.is_empty() || !v.bytes().all(|c| c.is_ascii_digit() || c == b'.') {
            return None;
        }
        terms.push(Clause {
            op: Op::parse(op)?,
            version: v.to_string(),
        });
    }
    (!terms.is_empty()).then_some(Marker { any, terms })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn markers_on_the_python_version_are_understood() {
        let r = Requirement::parse("numpy<2.0; python_version < \"3.13\"").unwrap();
        assert_eq!((r.name.as_str(), r.spec.as_str()), ("numpy", "numpy<2.0"));
        assert!(r.applies_to("3.12") && !r.applies_to("3.13"));
        let r =
            Requirement::parse("x; python_version >= '3.9' and python_version < '3.12'").unwrap();
        assert!(r.applies_to("3.11") && !r.applies_to("3.8") && !r.applies_to("3.12"));
        let r = Requirement::parse("x; python_version == \"3.8\" or python_version == \"3.14\"")
            .unwrap();
        assert!(r.applies_to("3.14") && !r.applies_to("3.10"));
        for bad in [
            "x; sys_platform == \"linux\"",
            "x; python_version < 3.13",
            "x; python_version < \"3.13\" and or",
            "x; python_version < \"3.13\"; rm -rf /",
            "x; python_version < \"$(id)\"",
        ] {
            assert!(Requirement::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn clauses_compare_versions_as_versions() {
        let r = Requirement::parse("numpy<2.0").unwrap();
        assert!(!r.accepts_any(&["2.1.0", "2.3.2"]));
        assert!(r.accepts_any(&["1.26.4"]));
        assert!(Requirement::parse("numpy>=1.20")
            .unwrap()
            .accepts_any(&["2.1.0"]));
        assert!(!Requirement::parse("numpy==1.*")
            .unwrap()
            .accepts_any(&["2.1.0"]));
        assert!(Requirement::parse("numpy~=2.1")
            .unwrap()
            .accepts_any(&["2.3.2"]));
        assert!(!Requirement::parse("numpy~=1.26.0")
            .unwrap()
            .accepts_any(&["1.27.0", "2.0"]));
        assert_eq!(normalize("JupyterLab_Pygments"), "jupyterlab-pygments");
    }
}
