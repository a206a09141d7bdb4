//! Shards: split a plan's cells into N groups for N CI runners.
//!
//! Cells that share a base and a platform stay in one shard, so each runner pulls each
//! base once and reuses its layers, and a shard holds one platform only: it can run on
//! a runner of that platform (an arm64 shard on a native arm64 runner). Groups go, largest first, to the shard with the fewest cells so
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
///
/// With at least as many shards as platforms, each platform gets shards of its own (one
/// each, the rest shared out by cell count) and every shard holds one platform; with
/// fewer, platforms share shards.
pub fn assign(cells: &[&Cell], count: usize) -> Vec<usize> {
    let count = count.max(1);
    // groups of one base and platform: (platform slot, cells)
    let mut platforms: Vec<&str> = Vec::new();
    let mut groups: Vec<(usize, Vec<usize>)> = Vec::new();
    let mut by_base: HashMap<(&str, &str), usize> = HashMap::new();
    for (i, c) in cells.iter().enumerate() {
        let p = match platforms.iter().position(|p| *p == c.platform()) {
            Some(p) => p,
            None => {
                platforms.push(c.platform());
                platforms.len() - 1
            }
        };
        let g = *by_base
            .entry((c.base.reference.as_str(), c.platform()))
            .or_insert_with(|| {
                groups.push((p, Vec::new()));
                groups.len() - 1
            });
        groups[g].1.push(i);
    }
    let ranges = platform_shards(&groups, platforms.len(), count);
    // Largest group first; equal sizes keep plan order.
    let mut order: Vec<usize> = (0..groups.len()).collect();
    order.sort_by_key(|g| (std::cmp::Reverse(groups[*g].1.len()), *g));
    let mut load = vec![0usize; count];
    let mut out = vec![0usize; cells.len()];
    for g in order {
        let range = ranges.as_ref().map_or(0..count, |r| r[groups[g].0].clone());
        let target = range.min_by_key(|s| (load[*s], *s)).unwrap_or(0);
        load[target] += groups[g].1.len();
        for &i in &groups[g].1 {
            out[i] = target;
        }
    }
    out
}

/// The shards each platform gets, when there are enough to give each its own: one
/// each, then one at a time to the platform with the most cells per shard.
fn platform_shards(
    groups: &[(usize, Vec<usize>)],
    platforms: usize,
    count: usize,
) -> Option<Vec<std::ops::Range<usize>>> {
    if platforms < 2 || count < platforms {
        return None;
    }
    let mut cells = vec![0usize; platforms];
    for (p, members) in groups {
        cells[*p] += members.len();
    }
    let mut shares = vec![1usize; platforms];
    for _ in platforms..count {
        let most = (0..platforms)
            .max_by(|a, b| {
                (cells[*a] * shares[*b])
                    .cmp(&(cells[*b] * shares[*a]))
                    .then(b.cmp(a))
            })
            .unwrap_or(0);
        shares[most] += 1;
    }
    let mut start = 0;
    Some(
        shares
            .iter()
            .map(|n| {
                start += n;
                start - n..start
            })
            .collect(),
    )
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
                if c.base.reference == d.base.reference && c.platform() == d.platform() {
                    assert_eq!(s, t, "cells of one base and platform share a shard");
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

    #[test]
    fn with_a_shard_per_platform_each_shard_holds_one_platform() {
        let yaml = "version: 1\nbases: [ubuntu:22.04, ubuntu:24.04]\npython: [\"3.10\", \"3.11\"]\nplatforms: [linux/amd64, linux/arm64]\n";
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
        for n in [2, 3, 4] {
            let a = assign(&cells, n);
            for s in 0..n {
                let mut platforms: Vec<&str> = cells
                    .iter()
                    .zip(&a)
                    .filter(|(_, x)| **x == s)
                    .map(|(c, _)| c.platform())
                    .collect();
                platforms.dedup();
                assert_eq!(
                    platforms.len(),
                    1,
                    "{n} shards: shard {s} holds {platforms:?}"
                );
            }
        }
        // one shard: everything in it
        assert!(assign(&cells, 1).iter().all(|s| *s == 0));
    }
}
