//! Housekeeping: every build keeps its manifest in `history/` beside the manifest;
//! `matrix prune --keep N` removes this matrix's images (found by their repository
//! label, so nothing else is ever touched) that none of the last N runs produced or
//! tagged, and says how much disk that freed. Build caches are left alone.

use std::collections::HashSet;
use std::path::{Path, PathBuf};

use crate::engine::ImageEngine;
use crate::labels;
use crate::manifest::{io, Manifest};

/// How many run manifests `history/` keeps.
const HISTORY: usize = 60;

/// The history directory of a manifest path.
pub fn history_dir(manifest: &Path) -> PathBuf {
    manifest
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."))
        .join("history")
}

/// Keep a copy of a finished run's manifest (named by when it started), and drop the
/// oldest beyond what history keeps.
pub fn archive(m: &Manifest, manifest: &Path) -> std::io::Result<()> {
    let dir = history_dir(manifest);
    std::fs::create_dir_all(&dir)?;
    let name: String = m
        .started
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '-' })
        .collect();
    // two runs that started in the same second keep a file each
    let mut path = dir.join(format!("{name}.json"));
    let mut n = 1;
    while path.exists() {
        n += 1;
        path = dir.join(format!("{name}-{n}.json"));
    }
    io::write(&path, m)?;
    let mut runs = runs(&dir);
    while runs.len() > HISTORY {
        let _ = std::fs::remove_file(runs.remove(0));
    }
    Ok(())
}

/// The archived run manifests, oldest first.
fn runs(dir: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(dir)
        .map(|d| {
            d.flatten()
                .map(|e| e.path())
                .filter(|p| p.extension().is_some_and(|x| x == "json"))
                .collect()
        })
        .unwrap_or_default();
    // by start time, then by the number a second run of the same second got
    v.sort_by_cached_key(|p| {
        let stem = p
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_default();
        match stem.rsplit_once("Z-") {
            Some((when, n)) if n.bytes().all(|b| b.is_ascii_digit()) => {
                (format!("{when}Z"), n.parse::<u64>().unwrap_or(0))
            }
            _ => (stem, 1),
        }
    });
    v
}

/// What a matrix's history says about its images.
#[derive(Debug, Default)]
pub struct Kept {
    /// Every image ID the last `keep` runs recorded (built, up to date, or a candidate
    /// kept after a failed verification): these stay.
    pub ids: HashSet<String>,
    /// Every image ID any run in the history recorded: only these are this matrix's to
    /// remove (another matrix may share the repository, and its label).
    pub ours: HashSet<String>,
    /// How many runs the kept IDs come from.
    pub runs: usize,
}

/// What the last `keep` runs hold on to, and what the history knows to be ours. One of
/// those last runs that cannot be read is an error: counting the runs behind it instead
/// would remove images it recorded. An older one that cannot be read only makes fewer
/// images ours.
pub fn kept(history: &Path, keep: usize) -> Result<Kept, String> {
    let mut k = Kept::default();
    for (n, path) in runs(history).iter().rev().enumerate() {
        let ids = match io::read(path) {
            Ok(m) => m.cells.into_iter().filter_map(|c| c.image_id),
            Err(e) if n < keep => {
                return Err(format!(
                    "cannot read {}, one of the last {keep} runs ({e}); nothing removed, since its images could not be told apart",
                    path.display()
                ))
            }
            Err(_) => continue,
        };
        for id in ids {
            if n < keep {
                k.ids.insert(id.clone());
            }
            k.ours.insert(id);
        }
        if n < keep {
            k.runs += 1;
        }
    }
    Ok(k)
}

/// What a prune did on one engine.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Pruned {
    pub removed: usize,
    pub kept: usize,
    /// Bytes of image storage freed (from `docker system df`, so shared layers are
    /// counted once).
    pub freed: u64,
}

/// Remove the images of `repository` on this engine that this matrix's history
/// recorded (`kept.ours`) and its last runs did not (`kept.ids`).
pub fn prune(engine: &dyn ImageEngine, repository: &str, kept: &Kept) -> Result<Pruned, String> {
    let before = engine.images_size()?;
    let mut out = Pruned::default();
    for id in engine.images_labelled(labels::REPOSITORY, repository)? {
        if kept.ids.contains(&id) || !kept.ours.contains(&id) {
            out.kept += 1;
            continue;
        }
        // our image may carry several of our tags; the history says it is ours
        if engine.remove_image(&id).is_ok() {
            out.removed += 1;
        }
    }
    out.freed = before.saturating_sub(engine.images_size()?);
    Ok(out)
}

/// What pruning one engine came to.
#[derive(Debug)]
pub struct EnginePruned {
    pub engine: String,
    pub result: Result<Pruned, String>,
}

impl EnginePruned {
    /// The line people read for it (`runs`: how many runs' images were kept).
    pub fn line(&self, repository: &str, runs: usize) -> String {
        match &self.result {
            Ok(p) => format!(
                "prune: engine {}: removed {} image{} of {repository} that none of the last {} run{} used, kept {}; freed {:.1} MB (build caches left alone)",
                self.engine,
                p.removed,
                if p.removed == 1 { "" } else { "s" },
                runs,
                if runs == 1 { "" } else { "s" },
                p.kept,
                p.freed as f64 / 1e6
            ),
            Err(err) => format!("prune: engine {}: {err}", self.engine),
        }
    }
}

/// Prune every engine to what the last `keep` runs beside `manifest` recorded: how many
/// runs that is and each engine's result, or why nothing was pruned (an unreadable
/// history). No history yet is zero runs and nothing pruned.
pub fn prune_engines(
    engines: &crate::engines::Engines,
    repository: &str,
    manifest: &Path,
    keep: usize,
) -> Result<(usize, Vec<EnginePruned>), String> {
    let kept = kept(&history_dir(manifest), keep)?;
    if kept.runs == 0 {
        return Ok((0, Vec::new()));
    }
    let done = engines
        .iter()
        .map(|e| EnginePruned {
            engine: e.name.clone(),
            result: prune(e, repository, &kept),
        })
        .collect();
    Ok((kept.runs, done))
}

/// The line for a prune that found no run history.
pub fn no_history(manifest: &Path) -> String {
    format!(
        "prune: no run history beside {} yet; nothing removed",
        manifest.display()
    )
}

/// [`prune_engines`], a line each to `say`. False when an engine could not be pruned.
pub fn prune_all(
    engines: &crate::engines::Engines,
    repository: &str,
    manifest: &Path,
    keep: usize,
    say: &dyn Fn(&str),
) -> bool {
    match prune_engines(engines, repository, manifest, keep) {
        Err(e) => {
            say(&format!("prune: {e}"));
            false
        }
        Ok((0, _)) => {
            say(&no_history(manifest));
            true
        }
        Ok((runs, done)) => {
            for d in &done {
                say(&d.line(repository, runs));
            }
            done.iter().all(|d| d.result.is_ok())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn docker_sizes_are_read() {
        use crate::docker::bytes;
        assert_eq!(bytes("2.5GB"), 2_500_000_000);
        assert_eq!(bytes("853.2MB"), 853_200_000);
        assert_eq!(bytes("0B"), 0);
    }

    #[test]
    fn two_runs_of_one_second_keep_a_history_file_each_in_order() {
        let dir = tempfile::tempdir().unwrap();
        let manifest = dir.path().join("manifest.json");
        for (n, id) in ["sha256:first", "sha256:second", "sha256:third"]
            .iter()
            .enumerate()
        {
            let mut m = Manifest::new("m.yaml", "0", None);
            m.started = "2026-11-01T00:00:00Z".into();
            let mut c = crate::manifest::CellRecord::new("a", Default::default());
            c.image_id = Some((*id).into());
            m.cells.push(c);
            archive(&m, &manifest).unwrap();
            assert_eq!(runs(&history_dir(&manifest)).len(), n + 1);
        }
        let k = kept(&history_dir(&manifest), 1).unwrap();
        assert!(k.ids.contains("sha256:third") && k.ids.len() == 1, "{k:?}");
        assert_eq!(k.ours.len(), 3);
    }

    /// The prune rule on an in-process engine: only images this matrix's history
    /// recorded, of its repository, that no kept run recorded go, whatever else the
    /// engine holds (another matrix's images under the same repository among them).
    #[test]
    fn only_this_repositorys_images_that_no_kept_run_used_go() {
        use crate::engine::fake::FakeEngine;
        let e = FakeEngine::default();
        e.labelled_image("sha256:last-night", labels::REPOSITORY, "ml/conda", 100);
        e.labelled_image("sha256:a-week-ago", labels::REPOSITORY, "ml/conda", 200);
        e.labelled_image("sha256:other-matrix", labels::REPOSITORY, "ml/other", 400);
        e.image("sha256:not-ours", &["debian:12"]);
        // another matrix that shares the repository: its image carries the same label
        e.labelled_image("sha256:matrix-b", labels::REPOSITORY, "ml/conda", 800);
        let kept = Kept {
            ids: ["sha256:last-night".to_string()].into(),
            ours: ["sha256:last-night", "sha256:a-week-ago"]
                .map(String::from)
                .into(),
            runs: 1,
        };
        let p = prune(&e, "ml/conda", &kept).unwrap();
        assert_eq!(
            p,
            Pruned {
                removed: 1,
                kept: 2,
                freed: 200
            }
        );
        for still in [
            "sha256:last-night",
            "sha256:other-matrix",
            "sha256:not-ours",
        ] {
            assert!(e.image_id(still).is_some(), "{still} was removed");
        }
        assert!(e.image_id("sha256:a-week-ago").is_none());
    }

    #[test]
    fn history_keeps_the_newest_runs() {
        let dir = tempfile::tempdir().unwrap();
        let manifest = dir.path().join("manifest.json");
        for day in 1..=3 {
            let mut m = Manifest::new("m.yaml", "0", None);
            m.started = format!("2026-11-0{day}T00:00:00Z");
            let mut c = crate::manifest::CellRecord::new("a", Default::default());
            c.image_id = Some(format!("sha256:{day}"));
            m.cells.push(c);
            archive(&m, &manifest).unwrap();
        }
        let k = kept(&history_dir(&manifest), 2).unwrap();
        assert_eq!(k.runs, 2);
        let ids = &k.ids;
        assert!(ids.contains("sha256:3") && ids.contains("sha256:2") && !ids.contains("sha256:1"));
        assert_eq!(k.ours.len(), 3);
        // the newest run unreadable: nothing can be told apart
        let newest = runs(&history_dir(&manifest)).pop().unwrap();
        std::fs::write(&newest, "{ not json").unwrap();
        let err = kept(&history_dir(&manifest), 2).unwrap_err();
        assert!(err.contains("one of the last 2 runs"), "{err}");
        // an older one unreadable only makes its images not ours
        let k = kept(&history_dir(&manifest), 0).unwrap();
        assert!(k.ids.is_empty() && k.ours.contains("sha256:1"), "{k:?}");
    }
}
