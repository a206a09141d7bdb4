//! `matrix prune --registry --keep-dated N`: the date-alias tags of this matrix's
//! repository older than the last N nights go, through the registry's API.
//!
//! A dated tag is one of the latest run's tags with the run's date (`{date}`) in it,
//! under any other date: `conda3-python3.11-ubuntu22.04-20261129` is the same alias
//! of an older night. The nights kept are the N newest dates found (the latest run's
//! among them); a tag the latest run published is never deleted.
//!
//! The registry deletes an image by digest, and every tag on it goes with it. A dated
//! tag whose image a kept tag still names (a cell that did not change since) can only
//! go alone, which OCI distribution 1.1 allows (DELETE by tag) and distribution 2.x
//! does not: there it is left, and the listing says why.

use std::collections::{BTreeSet, HashMap, HashSet};

use crate::manifest::{Manifest, Status};

use super::{Api, Repo};

/// How a doomed tag goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum By {
    /// Its image, which no kept tag names (any other doomed tag on it goes too).
    Digest(String),
    /// The tag alone: a kept tag names the same image.
    Tag,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Doomed {
    pub tag: String,
    pub date: String,
    pub by: By,
}

#[derive(Debug, Default)]
pub struct Plan {
    pub repo: Option<Repo>,
    /// The nights kept, newest first.
    pub kept: Vec<String>,
    pub doomed: Vec<Doomed>,
}

/// The `(prefix, suffix)` around the date in each of the run's tags that holds it.
fn patterns(man: &Manifest, date: &str) -> Vec<(String, String)> {
    let mut out: Vec<(String, String)> = Vec::new();
    let tags = man
        .cells
        .iter()
        .filter(|c| c.status != Status::Excluded)
        .flat_map(|c| c.tags.iter().chain(&c.platform_tag));
    for t in tags {
        let Some(name) = crate::reference::split(t).1 else {
            continue;
        };
        if let Some(at) = name.find(date) {
            let p = (name[..at].to_string(), name[at + date.len()..].to_string());
            if !out.contains(&p) {
                out.push(p);
            }
        }
    }
    out
}

/// `YYYYMMDD` of a real day.
fn is_date(s: &str) -> bool {
    s.len() == 8
        && s.bytes().all(|b| b.is_ascii_digit())
        && (1..=12).contains(&s[4..6].parse::<u32>().unwrap_or(0))
        && (1..=31).contains(&s[6..8].parse::<u32>().unwrap_or(0))
}

fn date_of<'a>(tag: &'a str, patterns: &[(String, String)]) -> Option<&'a str> {
    patterns.iter().find_map(|(p, s)| {
        let d = tag.strip_prefix(p.as_str())?.strip_suffix(s.as_str())?;
        is_date(d).then_some(d)
    })
}

/// The digests an image index lists (none for an image).
fn members(body: &[u8]) -> Vec<String> {
    serde_json::from_slice::<serde_json::Value>(body)
        .ok()
        .and_then(|v| {
            v.get("manifests")?.as_array().map(|a| {
                a.iter()
                    .filter_map(|m| m.get("digest")?.as_str().map(String::from))
                    .collect()
            })
        })
        .unwrap_or_default()
}

/// What a prune would delete, reading the registry only.
pub fn plan(api: &dyn Api, man: &Manifest, keep: usize) -> Result<Plan, String> {
    let repo =
        Repo::parse(man.repository.as_deref().ok_or(
            "the manifest does not name its repository (written by an older image-matrix)",
        )?)?;
    let date = man.date.as_deref().ok_or(
        "the manifest records no date (written by an older image-matrix): build again first",
    )?;
    let patterns = patterns(man, date);
    if patterns.is_empty() {
        return Ok(Plan {
            repo: Some(repo),
            kept: vec![date.to_string()],
            doomed: Vec::new(),
        });
    }
    let published: HashSet<&str> = man
        .cells
        .iter()
        .flat_map(|c| c.tags.iter().chain(&c.platform_tag))
        .filter_map(|t| crate::reference::split(t).1)
        .collect();
    let tags = api.list_tags(&repo)?;
    let dated: Vec<(&str, &str)> = tags
        .iter()
        .filter(|t| !published.contains(t.as_str()))
        .filter_map(|t| date_of(t, &patterns).map(|d| (t.as_str(), d)))
        .collect();
    let mut nights: BTreeSet<&str> = dated.iter().map(|(_, d)| *d).collect();
    nights.insert(date);
    let kept: Vec<String> = nights
        .iter()
        .rev()
        .take(keep)
        .map(|d| d.to_string())
        .collect();
    let mut going: Vec<(&str, &str)> = dated
        .into_iter()
        .filter(|(_, d)| !kept.iter().any(|k| k == d))
        .collect();
    going.sort_by_key(|(t, d)| (*d, *t));
    if going.is_empty() {
        return Ok(Plan {
            repo: Some(repo),
            kept,
            doomed: Vec::new(),
        });
    }
    // which image every tag names: a doomed tag's image goes only if no kept tag names it
    let doomed_names: HashSet<&str> = going.iter().map(|(t, _)| *t).collect();
    // (an index's members count as named by its tags: deleting one would break it)
    let mut digest_of: HashMap<&str, String> = HashMap::new();
    let mut members_of: HashMap<&str, Vec<String>> = HashMap::new();
    for t in &tags {
        if let Some(f) = api.manifest(&repo, t)? {
            members_of.insert(t.as_str(), members(&f.body));
            digest_of.insert(t.as_str(), f.digest);
        }
    }
    let kept_images: HashSet<&String> = digest_of
        .iter()
        .filter(|(t, _)| !doomed_names.contains(*t))
        .flat_map(|(t, d)| std::iter::once(d).chain(members_of.get(t).into_iter().flatten()))
        .collect();
    let doomed = going
        .into_iter()
        .filter_map(|(t, d)| {
            let digest = digest_of.get(t)?;
            Some(Doomed {
                tag: t.to_string(),
                date: d.to_string(),
                by: if kept_images.contains(digest) {
                    By::Tag
                } else {
                    By::Digest(digest.clone())
                },
            })
        })
        .collect();
    Ok(Plan {
        repo: Some(repo),
        kept,
        doomed,
    })
}

/// Delete what `plan` found; one result per tag, said as it happens: `Ok(true)`
/// deleted, `Ok(false)` left because the registry cannot delete it alone (not an
/// error), `Err` what went wrong.
pub fn apply(
    api: &dyn Api,
    plan: &Plan,
    say: &dyn Fn(&str),
) -> Vec<(String, Result<bool, String>)> {
    let Some(repo) = plan.repo.as_ref() else {
        return Vec::new();
    };
    let mut gone: HashSet<String> = HashSet::new();
    let mut out = Vec::new();
    for d in &plan.doomed {
        let r = match &d.by {
            By::Digest(digest) if gone.contains(digest) => Ok(true),
            By::Digest(digest) => api.delete(repo, digest).and_then(|ok| {
                gone.insert(digest.clone());
                if ok {
                    Ok(true)
                } else {
                    Err("the registry does not delete images".to_string())
                }
            }),
            By::Tag => api.delete(repo, &d.tag),
        };
        say(&match &r {
            Ok(true) => format!("prune: deleted {repo}:{} (night {})", d.tag, d.date),
            Ok(false) => format!(
                "prune: left {repo}:{}: a kept tag names the same image, and this registry deletes a tag only with its image",
                d.tag
            ),
            Err(e) => format!("prune: {repo}:{}: {e}", d.tag),
        });
        out.push((d.tag.clone(), r));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::registry::fake::Fake;

    const REPO: &str = "reg.example:5000/ml/conda";

    fn hex(d: &str) -> String {
        format!("sha256:{}", d.repeat(64))
    }

    /// The latest run (night 20261205): cell `a` tagged `a` and `a-20261205`.
    fn latest() -> Manifest {
        let mut m = Manifest::new("m.yaml", "0", None);
        m.repository = Some(REPO.into());
        m.date = Some("20261205".into());
        let mut c = crate::manifest::CellRecord::new("a", Default::default());
        c.status = Status::Built;
        c.tags = vec![format!("{REPO}:a"), format!("{REPO}:a-20261205")];
        m.cells.push(c);
        m
    }

    /// Nights 1–5 of December in the registry, each its own image, except night 4,
    /// which is the same image as night 5 (nothing changed that night).
    fn registry(deletes_tags: bool) -> Fake {
        let reg = Fake::default();
        reg.deletes_tags.set(deletes_tags);
        for n in 1..=5 {
            let cfg = if n == 4 { 5 } else { n };
            let d = reg.image(REPO, &hex(&cfg.to_string()), &hex("f"));
            reg.set_tag(REPO, &format!("a-2026120{n}"), &d);
            if n == 5 {
                reg.set_tag(REPO, "a", &d);
            }
        }
        // a tag of another shape is not ours to judge
        let d = reg.image(REPO, &hex("e"), &hex("f"));
        reg.set_tag(REPO, "hand-made-20250101", &d);
        reg
    }

    #[test]
    fn the_last_n_nights_stay_and_older_dated_tags_go() {
        let reg = registry(false);
        let p = plan(&reg, &latest(), 3).unwrap();
        assert_eq!(p.kept, ["20261205", "20261204", "20261203"]);
        let tags: Vec<&str> = p.doomed.iter().map(|d| d.tag.as_str()).collect();
        assert_eq!(tags, ["a-20261201", "a-20261202"]);
        assert!(p.doomed.iter().all(|d| matches!(d.by, By::Digest(_))));
        // planning deletes nothing
        assert!(reg.writes.borrow().is_empty());
        let done = apply(&reg, &p, &|_| {});
        assert!(done.iter().all(|(_, r)| r == &Ok(true)), "{done:?}");
        assert_eq!(reg.tag_of(REPO, "a-20261201"), None);
        assert!(reg.tag_of(REPO, "a-20261203").is_some());
        assert!(
            reg.tag_of(REPO, "a").is_some() && reg.tag_of(REPO, "hand-made-20250101").is_some()
        );
    }

    #[test]
    fn a_dated_tag_on_a_kept_image_goes_alone_or_stays() {
        // keep 1: night 4 names night 5's image, which the latest tags name
        let reg = registry(false);
        let p = plan(&reg, &latest(), 1).unwrap();
        let four = p.doomed.iter().find(|d| d.tag == "a-20261204").unwrap();
        assert_eq!(four.by, By::Tag);
        let done = apply(&reg, &p, &|_| {});
        let r = &done.iter().find(|(t, _)| t == "a-20261204").unwrap().1;
        assert_eq!(r, &Ok(false));
        // the image the latest run published is still there under its tags
        assert!(reg.tag_of(REPO, "a-20261205").is_some() && reg.tag_of(REPO, "a").is_some());
        assert!(reg.tag_of(REPO, "a-20261204").is_some());
        // a registry that deletes tags alone removes just that tag
        let reg = registry(true);
        let p = plan(&reg, &latest(), 1).unwrap();
        apply(&reg, &p, &|_| {});
        assert_eq!(reg.tag_of(REPO, "a-20261204"), None);
        assert!(reg.tag_of(REPO, "a-20261205").is_some() && reg.tag_of(REPO, "a").is_some());
    }

    #[test]
    fn a_tag_the_latest_run_published_is_never_deleted() {
        // the latest run was given an older date than nights already in the registry
        let reg = registry(false);
        let mut m = latest();
        m.date = Some("20261201".into());
        m.cells[0].tags[1] = format!("{REPO}:a-20261201");
        let p = plan(&reg, &m, 1).unwrap();
        assert!(
            p.doomed.iter().all(|d| d.tag != "a-20261201"),
            "{:?}",
            p.doomed
        );
    }

    #[test]
    fn an_image_a_kept_index_lists_is_not_deleted_with_an_old_tag() {
        let reg = registry(false);
        let member = reg.tag_of(REPO, "a-20261201").unwrap();
        let f = reg
            .manifest(&Repo::parse(REPO).unwrap(), &member)
            .unwrap()
            .unwrap();
        let (body, media_type) = crate::registry::index_body(&[("linux/amd64", &f)]);
        crate::registry::Api::put_manifest(
            &reg,
            &Repo::parse(REPO).unwrap(),
            "a",
            &body,
            media_type,
        )
        .unwrap();
        let p = plan(&reg, &latest(), 1).unwrap();
        let one = p.doomed.iter().find(|d| d.tag == "a-20261201").unwrap();
        assert_eq!(one.by, By::Tag, "a member of the kept index `a`");
    }

    #[test]
    fn dates_are_real_days() {
        assert!(
            is_date("20261231")
                && !is_date("20261331")
                && !is_date("2026123")
                && !is_date("2026123x")
        );
    }
}
