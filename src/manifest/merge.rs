//! `matrix manifest merge`: the manifests of shards joined into one.

use std::collections::HashMap;

use crate::manifest::io::read;
use crate::manifest::Manifest;
use crate::plan::axes::short;

/// Merge shard manifests: one matrix (same SHA256) and one selection, each cell once.
/// A cell present in several inputs must be recorded identically in all of them
/// (excluded cells are); otherwise the merge is refused, naming the cell and the
/// files. A set that does not cover the whole selection (a shard missing) is refused
/// unless `allow_partial`.
pub fn merge(inputs: Vec<(String, Manifest)>, allow_partial: bool) -> Result<Manifest, String> {
    let mut it = inputs.into_iter();
    let (first_name, mut out) = it.next().ok_or("nothing to merge")?;
    let mut origin: HashMap<String, (String, usize)> = out
        .cells
        .iter()
        .enumerate()
        .map(|(i, c)| (c.id.clone(), (first_name.clone(), i)))
        .collect();
    for (name, m) in it {
        check_same_run(&first_name, &out, &name, &m)?;
        out.started = out.started.clone().min(m.started.clone());
        out.finished = match (out.finished.take(), m.finished.clone()) {
            (Some(a), Some(b)) => Some(a.max(b)),
            _ => None,
        };
        out.tool_cpu_seconds = match (out.tool_cpu_seconds, m.tool_cpu_seconds) {
            (Some(a), Some(b)) => Some(a + b),
            (a, b) => a.or(b),
        };
        for s in m.shards {
            if !out.shards.contains(&s) {
                out.shards.push(s);
            }
        }
        // Engines are named per shard run; keep each name once (the first shard's
        // target), since a cell records only the name.
        for e in m.engines {
            if !out.engines.iter().any(|x| x.name == e.name) {
                out.engines.push(e);
            }
        }
        for c in m.cells {
            match origin.get(&c.id) {
                Some((_, i)) if out.cells[*i] == c => {}
                Some((from, _)) => {
                    return Err(format!(
                        "cell {} differs between {from} and {name}; refusing to merge",
                        c.id
                    ))
                }
                None => {
                    origin.insert(c.id.clone(), (name.clone(), out.cells.len()));
                    out.cells.push(c);
                }
            }
        }
    }
    out.shards.sort_by_key(|s| {
        s.split_once('/')
            .and_then(|(i, _)| i.parse::<usize>().ok())
            .unwrap_or(0)
    });
    if let Some(why) = out.incomplete().filter(|_| !allow_partial) {
        return Err(format!(
            "{why}; refusing to merge an incomplete set (give every shard's manifest, or --allow-partial)"
        ));
    }
    Ok(out)
}

fn check_same_run(
    first_name: &str,
    first: &Manifest,
    name: &str,
    m: &Manifest,
) -> Result<(), String> {
    if m.matrix_sha256 != first.matrix_sha256 {
        return Err(format!(
            "{name} was built from another matrix (sha256 {}…) than {first_name} ({}…)",
            short(&m.matrix_sha256),
            short(&first.matrix_sha256)
        ));
    }
    if m.planned != first.planned {
        return Err(format!(
            "{name} planned another selection of cells than {first_name} (other --filter or date); shards of one run plan the same cells"
        ));
    }
    if m.repository != first.repository {
        return Err(format!(
            "{name} publishes to another repository than {first_name}"
        ));
    }
    Ok(())
}

pub fn merge_files(paths: &[std::path::PathBuf], allow_partial: bool) -> Result<Manifest, String> {
    let mut inputs = Vec::new();
    for p in paths {
        inputs.push((p.display().to_string(), read(p)?));
    }
    merge(inputs, allow_partial)
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
        let m = merge(vec![("a.json".into(), a), ("b.json".into(), b)], false).unwrap();
        let ids: Vec<&str> = m.cells.iter().map(|c| c.id.as_str()).collect();
        assert_eq!(ids, ["a", "x", "b"]);
    }

    #[test]
    fn conflicts_and_other_matrices_are_refused_by_name() {
        let a = shard("s", &[("a", Status::Built)]);
        let a2 = shard("s", &[("a", Status::Failed)]);
        let e = merge(
            vec![("1.json".into(), a.clone()), ("2.json".into(), a2)],
            false,
        )
        .unwrap_err();
        assert_eq!(
            e,
            "cell a differs between 1.json and 2.json; refusing to merge"
        );
        let other = shard("t", &[("b", Status::Built)]);
        let e = merge(vec![("1.json".into(), a), ("3.json".into(), other)], false).unwrap_err();
        assert!(e.contains("3.json was built from another matrix"), "{e}");
        assert!(merge(Vec::new(), false).is_err());
    }

    #[test]
    fn an_incomplete_set_of_shards_is_refused_unless_allowed() {
        let planned: Vec<String> = ["a", "b", "c", "d"].iter().map(|s| s.to_string()).collect();
        let mut s1 = shard("s", &[("a", Status::Built), ("b", Status::Built)]);
        s1.planned.clone_from(&planned);
        s1.shards = vec!["1/3".into()];
        let mut s3 = shard("s", &[("d", Status::Built)]);
        s3.planned.clone_from(&planned);
        s3.shards = vec!["3/3".into()];
        let e = merge(
            vec![("1".into(), s1.clone()), ("3".into(), s3.clone())],
            false,
        )
        .unwrap_err();
        assert!(
            e.starts_with("1 of the 4 planned cells have no record (shards 2/3 are missing)"),
            "{e}"
        );
        let m = merge(vec![("1".into(), s1.clone()), ("3".into(), s3)], true).unwrap();
        assert_eq!(m.shards, ["1/3", "3/3"]);
        assert!(
            m.incomplete().is_some(),
            "a partial merge stays marked incomplete"
        );
        let mut other = shard("s", &[("c", Status::Built)]);
        other.planned = vec!["c".into()];
        let e = merge(vec![("1".into(), s1), ("x".into(), other)], true).unwrap_err();
        assert!(e.contains("another selection"), "{e}");
    }
}
