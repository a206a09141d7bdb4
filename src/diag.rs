//! Diagnostics: every problem found in `matrix.yaml`, with its place in the file.
//!
//! Validation never stops at the first problem: the walker and the planner push
//! [`Diagnostic`]s into a list and the caller prints them all. Errors block the plan;
//! warnings are printed on stderr and the plan goes on.

use std::fmt;

/// A 1-based line and column in the matrix file.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord)]
pub struct Pos {
    pub line: usize,
    pub col: usize,
}

/// A value read from the matrix file together with where it stood.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Sp<T> {
    pub value: T,
    pub at: Pos,
}

impl<T> Sp<T> {
    pub fn new(value: T, at: Pos) -> Self {
        Sp { value, at }
    }
}

impl Sp<String> {
    pub fn as_str(&self) -> &str {
        &self.value
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Severity {
    Error,
    Warning,
}

/// One finding. `key` is the dotted path of the offending key (`python[2].miniconda`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Diagnostic {
    pub severity: Severity,
    pub file: String,
    pub at: Option<Pos>,
    pub key: String,
    pub message: String,
}

impl fmt::Display for Diagnostic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.file)?;
        if let Some(at) = self.at {
            write!(f, ":{}:{}", at.line, at.col)?;
        }
        if self.severity == Severity::Warning {
            write!(f, ": warning")?;
        }
        if self.key.is_empty() {
            write!(f, ": {}", self.message)
        } else {
            write!(f, ": `{}`: {}", self.key, self.message)
        }
    }
}

/// Collects diagnostics for one file.
#[derive(Debug)]
pub struct Diags {
    pub file: String,
    pub items: Vec<Diagnostic>,
}

impl Diags {
    pub fn new(file: impl Into<String>) -> Self {
        Diags {
            file: file.into(),
            items: Vec::new(),
        }
    }

    pub fn error(&mut self, at: Option<Pos>, key: impl Into<String>, message: impl Into<String>) {
        self.push(Severity::Error, at, key.into(), message.into());
    }

    pub fn warn(&mut self, at: Option<Pos>, key: impl Into<String>, message: impl Into<String>) {
        self.push(Severity::Warning, at, key.into(), message.into());
    }

    fn push(&mut self, severity: Severity, at: Option<Pos>, key: String, message: String) {
        self.items.push(Diagnostic {
            severity,
            file: self.file.clone(),
            at,
            key,
            message,
        });
    }

    pub fn has_errors(&self) -> bool {
        self.items.iter().any(|d| d.severity == Severity::Error)
    }

    /// Errors first, then warnings, each in file order.
    pub fn sorted(mut self) -> Vec<Diagnostic> {
        self.items
            .sort_by(|a, b| (a.severity, a.at, &a.key).cmp(&(b.severity, b.at, &b.key)));
        self.items
    }
}

/// Every diagnostic on its own line, then how many errors blocked the plan.
pub fn render(d: &[Diagnostic]) -> String {
    let errors = d.iter().filter(|x| x.severity == Severity::Error).count();
    let mut s: String = d.iter().map(|x| format!("{x}\n")).collect();
    s.push_str(&format!(
        "{errors} error{} in the matrix; nothing was built",
        if errors == 1 { "" } else { "s" }
    ));
    s
}

/// "did you mean" for a misspelt word, when one candidate is close enough.
pub fn did_you_mean<'a>(word: &str, candidates: &[&'a str]) -> Option<&'a str> {
    if word.len() >= 3 {
        if let Some(c) = candidates.iter().find(|c| c.starts_with(word)) {
            return Some(c);
        }
    }
    candidates
        .iter()
        .map(|c| (strsim::damerau_levenshtein(word, c), *c))
        .filter(|(d, c)| *d <= 2.max(c.len() / 3))
        .min_by_key(|(d, _)| *d)
        .map(|(_, c)| c)
}
