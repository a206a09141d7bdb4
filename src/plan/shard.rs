//! Shards: split a plan's cells into N groups for N CI runners.
//!
//! Cells that share a base stay in one shard, so each runner pulls each base once and
//! reuses its layers. Groups go, largest first, to the shard with the fewest cells so
//! far (ties to the lower shard): deterministic for a given plan and filter, so the
//! planning job and every build job compute the same assignment independently.

use std::collections::HashMap;

use crate::plan::Cell;

/// `I/N`, 1-based.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Shard {
    pub index: usize,
    pub count: usize,
}

/// GitHub Actions allows at most 256 jobs per matrix.
pub const MAX_SHARDS: usize = 256;

impl std::str::FromStr for Shard {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let bad = || {
            format!("`{s}` is not a shard: write I/N with 1 <= I <= N <= {MAX_SHARDS}, e.g. 2/4")
        };
        let (i, n) = s.split_once('/').ok_or_else(bad)?;
        let (index, count) = (
            i.parse::<usize>().map_err(|_| bad())?,
            n.parse::<usize>().map_err(|_| bad())?,
        );
        if index == 0 || count == 0 || index > count || count > MAX_SHARDS {
            return Err(bad());
        }
        Ok(Shard { index, count })
    }
}

impl std::fmt::Display for Shard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.index, self.count)
    }
}

/// The 0-based shard of each cell, in the order given.
pub fn assign(cells: &[&Cell], count: usize) -> Vec<usize> {
    let count = count.max(1);
    let mut groups: Vec<(String, Vec<usize>)> = Vec::new();
    let mut by_base: HashMap<&str, usize> = HashMap::new();
    for (i, c) in cells.iter().enumerate() {
        let g = *by_base.entry(c.base.reference.as_str()).or_insert_with(|| {
            groups.push((c.base.reference.clone(), Vec::new()));
            groups.len() - 1
        });
        groups[g].1.push(i);
    }
    // Largest group first; equal sizes keep plan order.
    let mut order: Vec<usize> = (0..groups.len()).collect();
    order.sort_by_key(|g| (std::cmp::Reverse(groups[*g].1.len()), *g));
    let mut load = vec![0usize; count];
    let mut out = vec![0usize; cells.len()];
    for g in order {
        let target = (0..count).min_by_key(|s| (load[*s], *s)).unwrap_or(0);
        load[target] += groups[g].1.len();
        for &i in &groups[g].1 {
            out[i] = target;
        }
    }
    out
}

/// The cells of one shard, in plan order.
pub fn select<'a>(cells: &[&'a Cell], shard: Shard) -> Vec<&'a Cell> {
    let a = assign(cells, shard.count);
    cells
        .iter()
        .zip(a)
        .filter(|(_, s)| *s == shard.index - 1)
        .map(|(c, _)| *c)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plan::{plan_text, PlanOptions};

    #[test]
    fn shards_keep_bases_together_and_balance_sizes() {
        let yaml = "version: 1\nbases: [ubuntu:20.04, ubuntu:22.04, ubuntu:24.04, \"debian:12\"]\npython: [\"3.9\", \"3.10\", \"3.11\"]\nexclude:\n  - {os: debian12, python: \"3.9\", reason: r}\n";
        let p = plan_text(
            yaml,
            "m.yaml",
            std::path::Path::new("."),
            &PlanOptions {
                date: "20260101".into(),
            },
        )
        .unwrap();
        let cells: Vec<&Cell> = p.cells.iter().collect();
        let a = assign(&cells, 2);
        for (c, s) in cells.iter().zip(&a) {
            for (d, t) in cells.iter().zip(&a) {
                if c.base.reference == d.base.reference {
                    assert_eq!(s, t, "cells of one base share a shard");
                }
            }
        }
        let sizes: Vec<usize> = (0..2)
            .map(|s| a.iter().filter(|x| **x == s).count())
            .collect();
        assert_eq!(sizes, [6, 5]);
        // every cell is in exactly one shard, and shards are stable
        let all: usize = (1..=2)
            .map(|i| select(&cells, Shard { index: i, count: 2 }).len())
            .sum();
        assert_eq!(all, cells.len());
        assert_eq!(a, assign(&cells, 2));
        // more shards than bases: the extra shards are empty
        let a = assign(&cells, 6);
        assert_eq!((0..6).filter(|s| a.contains(s)).count(), 4);
    }

    #[test]
    fn shard_specs_are_checked() {
        assert_eq!(
            "2/4".parse::<Shard>().unwrap(),
            Shard { index: 2, count: 4 }
        );
        for bad in ["0/4", "5/4", "1/0", "x/2", "2", "1/257"] {
            assert!(bad.parse::<Shard>().is_err(), "{bad}");
        }
    }
}
