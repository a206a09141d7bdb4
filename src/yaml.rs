//! The one place that calls the YAML library.
//!
//! `matrix.yaml` is parsed into a tree whose every node knows its line and column, so
//! that validation can point at the exact spot of each problem. The backend
//! (`marked-yaml`, on `yaml-rust2`) keeps scalars as the text the user wrote, which is
//! what lets us tell an unquoted `3.10` (a YAML number) from a quoted `"3.10"`.

use crate::diag::Pos;
pub use marked_yaml::types::{MarkedMappingNode, MarkedScalarNode, MarkedSequenceNode};
pub use marked_yaml::Node;

/// Parse YAML text into a spanned tree. The error carries the position and message.
pub fn parse(text: &str) -> Result<Node, (Option<Pos>, String)> {
    let options = marked_yaml::LoaderOptions::default()
        .error_on_duplicate_keys(true)
        .prevent_coercion(true);
    marked_yaml::parse_yaml_with_options(0, text, options).map_err(|e| {
        use marked_yaml::LoadError as E;
        let (mark, msg) = match &e {
            E::TopLevelMustBeMapping(m) => {
                (Some(*m), "the top level must be a mapping".to_string())
            }
            E::TopLevelMustBeSequence(m) => {
                (Some(*m), "the top level must be a sequence".to_string())
            }
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
        (
            mark.map(|m| Pos {
                line: m.line(),
                col: m.column(),
            }),
            msg,
        )
    })
}

/// Where a node starts.
pub fn pos(node: &Node) -> Pos {
    node.span()
        .start()
        .map(|m| Pos {
            line: m.line(),
            col: m.column(),
        })
        .unwrap_or_default()
}

/// Where a scalar (typically a mapping key) starts.
pub fn scalar_pos(node: &MarkedScalarNode) -> Pos {
    node.span()
        .start()
        .map(|m| Pos {
            line: m.line(),
            col: m.column(),
        })
        .unwrap_or_default()
}
