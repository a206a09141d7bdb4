//! Configuration: `matrix.yaml` → [`raw::RawConfig`] (a plain mirror of the file, every
//! value with its position) → validated [`settings::Settings`] and engine specs.
//! Problems are collected as diagnostics, all at once, each with `file:line:col`.

pub mod engine;
pub mod raw;
pub mod requirement;
pub mod schema;
pub mod settings;
pub mod yaml;

use std::io::Read;
use std::path::Path;

use crate::error::Error;

/// Largest matrix file read (a generated 10,000-cell matrix is about 10 KB).
const MAX_BYTES: u64 = 16 << 20;

/// Read a matrix file: a regular file (a FIFO or device would block or never end),
/// UTF-8 (an invalid byte is reported with its line and column).
pub fn read_text(path: &Path) -> Result<String, Error> {
    let fail = |reason: String| Error::ReadMatrix {
        path: path.display().to_string(),
        reason,
    };
    let meta = std::fs::metadata(path).map_err(|e| fail(e.to_string()))?;
    if !meta.is_file() {
        return Err(fail(
            "it is not a regular file (a matrix is read from a file, not a pipe or device)".into(),
        ));
    }
    if meta.len() > MAX_BYTES {
        return Err(fail(format!(
            "it is {} bytes; a matrix file is at most {MAX_BYTES}",
            meta.len()
        )));
    }
    let mut bytes = Vec::new();
    std::fs::File::open(path)
        .and_then(|f| f.take(MAX_BYTES + 1).read_to_end(&mut bytes))
        .map_err(|e| fail(e.to_string()))?;
    String::from_utf8(bytes).map_err(|e| {
        let good = &e.as_bytes()[..e.utf8_error().valid_up_to()];
        let line = good.iter().filter(|b| **b == b'\n').count() + 1;
        let col = good.iter().rev().take_while(|b| **b != b'\n').count() + 1;
        Error::ReadMatrix {
            path: format!("{}:{line}:{col}", path.display()),
            reason: "not UTF-8 text (save the file as UTF-8)".into(),
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pipes_and_bad_bytes_are_refused_with_a_place() {
        let dir = tempfile::tempdir().unwrap();
        let bad = dir.path().join("m.yaml");
        std::fs::write(&bad, b"version: 1\nbases: [\xff]\n").unwrap();
        let e = read_text(&bad).unwrap_err().to_string();
        assert!(e.contains("m.yaml:2:9") && e.contains("UTF-8"), "{e}");
        let e = read_text(Path::new("/dev/null")).unwrap_err().to_string();
        assert!(e.contains("not a regular file"), "{e}");
    }
}
