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
    for (name, m) in &inputs {
        check_one(name, m)?;
    }
    let mut it = inputs.into_iter();
    let (first_name, mut out) = it.next().ok_or("nothing to merge")?;
    let mut engine_from: HashMap<String, String> = out
        .engines
        .iter()
        .map(|e| (e.name.clone(), first_name.clone()))
        .collect();
    let mut origin: HashMap<String, (String, usize)> = out
        .cells
        .iter()
        .enumerate()
        .map(|(i, c)| (c.id.clone(), (first_name.clone(), i)))
        .collect();
    for (name, m) in it {
        check_same_run(&first_name, &out, &name, &m)?;
        if m.date.is_some() && out.date.is_some() && m.date != out.date {
            return Err(format!(
                "{first_name} was built for {} but {name} for {}: shards of different nights; refusing to merge",
                out.date.as_deref().unwrap_or_default(),
                m.date.as_deref().unwrap_or_default()
            ));
        }
        out.date = out.date.take().or(m.date.clone());
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
        // Engines are named per shard run, and a cell records only the name: one name
        // must reach one engine in every shard, or push would ask the wrong one.
        for e in m.engines {
            match out.engines.iter().find(|x| x.name == e.name) {
                Some(x) if x.target != e.target => {
                    return Err(format!(
                        "engine {} is {} in {} but {} in {name}; one name must reach one engine in every shard (give them different names); refusing to merge",
                        e.name,
                        x.target,
                        engine_from.get(&e.name).map_or("", String::as_str),
                        e.target
                    ))
                }
                Some(_) => {}
                None => {
                    engine_from.insert(e.name.clone(), name.clone());
                    out.engines.push(e);
                }
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

/// One input on its own: each cell once, only cells its run planned (when it names
/// them), and every digest a digest. A manifest is an input like any other (CI passes
/// it between jobs); what push later trusts is checked here first.
fn check_one(name: &str, m: &Manifest) -> Result<(), String> {
    let mut seen = std::collections::HashSet::new();
    for c in &m.cells {
        if !seen.insert(c.id.as_str()) {
            return Err(format!(
                "{name} records cell {} twice; refusing to merge",
                c.id
            ));
        }
        let planned = m.planned.is_empty()
            || c.status == crate::manifest::Status::Excluded
            || m.planned.contains(&c.id);
        if !planned {
            return Err(format!(
                "{name} records cell {}, which its run did not plan (not in `planned`); refusing to merge",
                c.id
            ));
        }
        let digests = c
            .image_id
            .iter()
            .map(|d| ("image_id", d))
            .chain(c.parent_digest.iter().map(|d| ("parent_digest", d)))
            .chain(
                c.pushed
                    .iter()
                    .filter_map(|p| p.digest.as_ref())
                    .map(|d| ("pushed digest", d)),
            );
        for (what, d) in digests {
            if !is_digest(d) {
                return Err(format!(
                    "{name}: cell {}'s {what} {d:?} is not a digest (sha256: and 64 hex digits); refusing to merge",
                    c.id
                ));
            }
        }
    }
    for i in &m.indexes {
        let digests = i
            .digest
            .iter()
            .chain(i.platforms.iter().filter_map(|p| p.digest.as_ref()));
        for d in digests {
            if !is_digest(d) {
                return Err(format!(
                    "{name}: index {}'s digest {d:?} is not a digest (sha256: and 64 hex digits); refusing to merge",
                    i.group
                ));
            }
        }
    }
    Ok(())
}

/// `sha256:` and 64 lowercase hex digits.
pub fn is_digest(s: &str) -> bool {
    s.strip_prefix("sha256:")
        .is_some_and(|h| h.len() == 64 && h.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')))
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

    /// Issue 27 item 4: what a forged or damaged shard manifest could slip in.
    #[test]
    fn forged_shards_are_refused_by_name() {
        let planned: Vec<String> = ["a", "b"].iter().map(|s| s.to_string()).collect();
        let with = |cells: &[(&str, Status)]| {
            let mut m = shard("s", cells);
            m.planned.clone_from(&planned);
            m
        };
        let (a, b) = (with(&[("a", Status::Built)]), with(&[("b", Status::Built)]));
        // a cell the run never planned
        let extra = with(&[("b", Status::Built), ("evil", Status::Built)]);
        let e = merge(vec![("1".into(), a.clone()), ("2".into(), extra)], false).unwrap_err();
        assert!(
            e.contains("2 records cell evil, which its run did not plan"),
            "{e}"
        );
        // one cell twice in one manifest
        let twice = with(&[("b", Status::Built), ("b", Status::Built)]);
        let e = merge(vec![("1".into(), a.clone()), ("2".into(), twice)], false).unwrap_err();
        assert!(e.contains("2 records cell b twice"), "{e}");
        // a digest that is not one
        let mut bad = b.clone();
        bad.cells[0].image_id = Some("--help".into());
        let e = merge(vec![("1".into(), a.clone()), ("2".into(), bad)], false).unwrap_err();
        assert!(e.contains("image_id \"--help\" is not a digest"), "{e}");
        // one engine name, two targets
        let rec = |target: &str| crate::manifest::EngineRecord {
            name: "builder".into(),
            target: crate::config::engine::Target::Host(target.into()),
            jobs: 1,
            server: String::new(),
            down: None,
            platforms: Vec::new(),
            buildx_builder: None,
        };
        let (mut a2, mut b2) = (a.clone(), b.clone());
        a2.engines = vec![rec("ssh://ci@build-1")];
        b2.engines = vec![rec("tcp://attacker.example:2375")];
        let e = merge(vec![("1".into(), a2.clone()), ("2".into(), b2)], false).unwrap_err();
        assert!(
            e.contains(
                "engine builder is ssh://ci@build-1 in 1 but tcp://attacker.example:2375 in 2"
            ),
            "{e}"
        );
        // the honest pair merges
        let mut b3 = b.clone();
        b3.engines = vec![rec("ssh://ci@build-1")];
        b3.cells[0].image_id = Some(format!("sha256:{}", "ab".repeat(32)));
        assert!(merge(vec![("1".into(), a2), ("2".into(), b3)], false).is_ok());
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
