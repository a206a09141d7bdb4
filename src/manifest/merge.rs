//! `matrix manifest merge`: the manifests of shards joined into one.

use crate::manifest::io::read;
use crate::manifest::Manifest;

/// Merge shard manifests: one matrix (same SHA256), each cell once. A cell present in
/// several inputs must be recorded identically in all of them (excluded cells are);
/// otherwise the merge is refused, naming the cell and the files.
pub fn merge(inputs: Vec<(String, Manifest)>) -> Result<Manifest, String> {
    let mut it = inputs.into_iter();
    let (first_name, mut out) = it.next().ok_or("nothing to merge")?;
    let mut origin: std::collections::HashMap<String, String> = out
        .cells
        .iter()
        .map(|c| (c.id.clone(), first_name.clone()))
        .collect();
    for (name, m) in it {
        if m.matrix_sha256 != out.matrix_sha256 {
            return Err(format!(
                "{name} was built from another matrix (sha256 {}…) than {first_name} ({}…)",
                &m.matrix_sha256[..12.min(m.matrix_sha256.len())],
                &out.matrix_sha256[..12.min(out.matrix_sha256.len())]
            ));
        }
        out.started = out.started.clone().min(m.started.clone());
        out.finished = match (out.finished.take(), m.finished.clone()) {
            (Some(a), Some(b)) => Some(a.max(b)),
            _ => None,
        };
        out.tool_cpu_seconds = match (out.tool_cpu_seconds, m.tool_cpu_seconds) {
            (Some(a), Some(b)) => Some(a + b),
            (a, b) => a.or(b),
        };
        // Engines are named per shard run; keep each name once (the first shard's
        // target), since a cell records only the name.
        for e in m.engines {
            if !out.engines.iter().any(|x| x.name == e.name) {
                out.engines.push(e);
            }
        }
        for c in m.cells {
            match out.cells.iter().find(|x| x.id == c.id) {
                Some(existing) if *existing == c => {}
                Some(_) => {
                    return Err(format!(
                        "cell {} differs between {} and {name}; refusing to merge",
                        c.id, origin[&c.id]
                    ))
                }
                None => {
                    origin.insert(c.id.clone(), name.clone());
                    out.cells.push(c);
                }
            }
        }
    }
    Ok(out)
}

pub fn merge_files(paths: &[std::path::PathBuf]) -> Result<Manifest, String> {
    let mut inputs = Vec::new();
    for p in paths {
        inputs.push((p.display().to_string(), read(p)?));
    }
    merge(inputs)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::coord::Coordinate;
    use crate::manifest::{CellRecord, Status};

    fn shard(sha: &str, cells: &[(&str, Status)]) -> Manifest {
        let mut m = Manifest::new("m.yaml", sha, None);
        m.cells = cells
            .iter()
            .map(|(id, s)| CellRecord {
                status: *s,
                ..CellRecord::new(id, Coordinate::default())
            })
            .collect();
        m
    }

    #[test]
    fn shards_join_and_shared_exclusions_count_once() {
        let a = shard("s", &[("a", Status::Built), ("x", Status::Excluded)]);
        let b = shard("s", &[("b", Status::Failed), ("x", Status::Excluded)]);
        let m = merge(vec![("a.json".into(), a), ("b.json".into(), b)]).unwrap();
        let ids: Vec<&str> = m.cells.iter().map(|c| c.id.as_str()).collect();
        assert_eq!(ids, ["a", "x", "b"]);
    }

    #[test]
    fn conflicts_and_other_matrices_are_refused_by_name() {
        let a = shard("s", &[("a", Status::Built)]);
        let a2 = shard("s", &[("a", Status::Failed)]);
        let e = merge(vec![("1.json".into(), a.clone()), ("2.json".into(), a2)]).unwrap_err();
        assert_eq!(
            e,
            "cell a differs between 1.json and 2.json; refusing to merge"
        );
        let other = shard("t", &[("b", Status::Built)]);
        let e = merge(vec![("1.json".into(), a), ("3.json".into(), other)]).unwrap_err();
        assert!(e.contains("3.json was built from another matrix"), "{e}");
        assert!(merge(Vec::new()).is_err());
    }
}
