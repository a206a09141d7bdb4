//! The one place that names the YAML library.
//!
//! `matrix.yaml` is parsed into this module's own small tree ([`Node`]), in which
//! every value knows its line and column, so that validation can point at the exact
//! spot of each problem, and so that swapping the YAML backend touches this file only.
//! The backend (`marked-yaml`, on `yaml-rust2`) keeps scalars as the text the user
//! wrote, which is what lets us tell an unquoted `3.10` (a YAML number) from a quoted
//! `"3.10"`.

use crate::diag::Pos;

/// A scalar as written, with whether it was plain (unquoted, so YAML may read it as a
/// number, a boolean or null).
#[derive(Clone, Debug)]
pub struct Scalar {
    pub text: String,
    pub plain: bool,
    pub at: Pos,
}

#[derive(Clone, Debug)]
pub enum Node {
    Scalar(Scalar),
    Map {
        at: Pos,
        entries: Vec<(Scalar, Node)>,
    },
    Seq {
        at: Pos,
        items: Vec<Node>,
    },
}

impl Node {
    pub fn at(&self) -> Pos {
        match self {
            Node::Scalar(s) => s.at,
            Node::Map { at, .. } | Node::Seq { at, .. } => *at,
        }
    }

    pub fn as_scalar(&self) -> Option<&Scalar> {
        match self {
            Node::Scalar(s) => Some(s),
            _ => None,
        }
    }

    pub fn entries(&self) -> Option<&[(Scalar, Node)]> {
        match self {
            Node::Map { entries, .. } => Some(entries),
            _ => None,
        }
    }

    pub fn items(&self) -> Option<&[Node]> {
        match self {
            Node::Seq { items, .. } => Some(items),
            _ => None,
        }
    }

    /// The value of a mapping's key.
    pub fn get(&self, key: &str) -> Option<&Node> {
        self.entries()?
            .iter()
            .find(|(k, _)| k.text == key)
            .map(|(_, v)| v)
    }

    /// An empty value or an explicit null (`~`, `null`).
    pub fn is_null(&self) -> bool {
        self.as_scalar().is_some_and(|s| {
            s.plain && matches!(s.text.as_str(), "" | "~" | "null" | "Null" | "NULL")
        })
    }

    pub fn kind(&self) -> &'static str {
        match self {
            Node::Scalar(_) => "a scalar",
            Node::Map { .. } => "a mapping",
            Node::Seq { .. } => "a list",
        }
    }
}

/// Parse YAML text into a spanned tree. The error carries the position and message.
/// A leading byte-order mark is legal YAML and skipped; a second document is refused
/// rather than silently ignored.
pub fn parse(text: &str) -> Result<Node, (Option<Pos>, String)> {
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    if let Some(line) = second_document(text) {
        return Err((
            Some(Pos { line, col: 1 }),
            "a second YAML document starts here; a matrix file holds exactly one".into(),
        ));
    }
    let options = marked_yaml::LoaderOptions::default()
        .error_on_duplicate_keys(true)
        .prevent_coercion(true);
    let root = marked_yaml::parse_yaml_with_options(0, text, options).map_err(load_error)?;
    Ok(convert(&root))
}

/// The line of a `---` that starts another document after the first one has content.
fn second_document(text: &str) -> Option<usize> {
    let mut content = false;
    for (i, l) in text.lines().enumerate() {
        let marker = l == "---" || l.starts_with("--- ") || l.starts_with("---\t");
        if marker && content {
            return Some(i + 1);
        }
        let body = l.trim();
        if !marker && !body.is_empty() && !body.starts_with('#') && !l.starts_with('%') {
            content = true;
        }
        if l.starts_with("...") {
            // the document ended; anything after it would be a new document
            content = true;
        }
    }
    None
}

fn pos_of(m: Option<&marked_yaml::Marker>) -> Pos {
    m.map(|m| Pos {
        line: m.line(),
        col: m.column(),
    })
    .unwrap_or_default()
}

fn scalar(s: &marked_yaml::types::MarkedScalarNode) -> Scalar {
    Scalar {
        text: s.as_str().to_string(),
        plain: s.may_coerce(),
        at: pos_of(s.span().start()),
    }
}

fn convert(n: &marked_yaml::Node) -> Node {
    use marked_yaml::Node as M;
    match n {
        M::Scalar(s) => Node::Scalar(scalar(s)),
        M::Mapping(m) => Node::Map {
            at: pos_of(m.span().start()),
            entries: m.iter().map(|(k, v)| (scalar(k), convert(v))).collect(),
        },
        M::Sequence(s) => Node::Seq {
            at: pos_of(s.span().start()),
            items: s.iter().map(convert).collect(),
        },
    }
}

fn load_error(e: marked_yaml::LoadError) -> (Option<Pos>, String) {
    use marked_yaml::LoadError as E;
    let (mark, msg) = match &e {
        E::TopLevelMustBeMapping(m) => (Some(*m), "the top level must be a mapping".to_string()),
        E::TopLevelMustBeSequence(m) => (Some(*m), "the top level must be a sequence".to_string()),
        E::UnexpectedAnchor(m) => (
            Some(*m),
            "anchors and aliases are not supported".to_string(),
        ),
        E::MappingKeyMustBeScalar(m) => {
            (Some(*m), "mapping keys must be plain strings".to_string())
        }
        E::UnexpectedTag(m) => (
            Some(*m),
            "explicit YAML tags (`!tag`) are not supported".to_string(),
        ),
        E::ScanError(m, s) => (Some(*m), format!("malformed YAML: {}", s.info())),
        E::DuplicateKey(d) => (
            d.key.span().start().copied(),
            format!(
                "duplicate key `{}` (first given at line {})",
                d.key.as_str(),
                d.prev_key
                    .span()
                    .start()
                    .map_or(0, marked_yaml::Marker::line)
            ),
        ),
    };
    (mark.map(|m| pos_of(Some(&m))), msg)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scalars_keep_their_text_and_quoting() {
        let n = parse("a: 3.10\nb: \"3.10\"\nc: [x, y]\n").unwrap();
        let a = n.get("a").unwrap().as_scalar().unwrap();
        assert_eq!((a.text.as_str(), a.plain, a.at.line), ("3.10", true, 1));
        assert!(!n.get("b").unwrap().as_scalar().unwrap().plain);
        assert_eq!(n.get("c").unwrap().items().unwrap().len(), 2);
    }

    #[test]
    fn a_bom_is_skipped_and_a_second_document_refused() {
        assert!(parse("\u{feff}version: 1\n")
            .unwrap()
            .get("version")
            .is_some());
        let (at, msg) = parse("# c\n---\nversion: 1\n---\nversion: 2\n").unwrap_err();
        assert_eq!(at.unwrap().line, 4);
        assert!(msg.contains("second YAML document"), "{msg}");
        assert!(parse("---\nversion: 1\n").is_ok());
    }
}
