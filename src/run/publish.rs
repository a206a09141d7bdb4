//! Publishing a manifest's images: every tag checked first, then two phases — the
//! primary tag of every eligible cell, then the aliases — each image pushed from the
//! engine that holds it. Nothing is published while a cell that should be is not
//! built (or verified), or while its engine does not answer, unless the caller allows
//! a partial publish.

use std::collections::HashMap;
use std::time::Duration;

use crate::engine::{Fleet, ImageEngine};
use crate::engines::DEFAULT_ENGINE;
use crate::manifest::{CellRecord, Manifest, Pushed, Status};
use crate::reference;
use crate::run::events::{Listen, Phase};

pub struct Options {
    /// Only cells whose verification passed.
    pub need_verified: bool,
    pub allow_partial: bool,
    /// Re-tries per push.
    pub retries: u32,
    /// The wait before the first re-try; it doubles for each one after.
    pub backoff: Duration,
}

/// Every tag of the manifest against the Docker reference grammar and the matrix's
/// repository: a forged or damaged manifest must not make us push elsewhere.
pub fn check_tags(man: &Manifest) -> Result<(), String> {
    let Some(repo) = man.repository.as_deref() else {
        return Err("the manifest does not name its repository (it was written by an older image-matrix); build again to publish it".into());
    };
    reference::check_repository(repo).map_err(|e| format!("the manifest's repository: {e}"))?;
    for c in man.cells.iter().filter(|c| c.status != Status::Excluded) {
        for t in c.tags.iter().chain(&c.platform_tag) {
            let ok = t
                .strip_prefix(repo)
                .and_then(|r| r.strip_prefix(':'))
                .map(reference::check_tag);
            match ok {
                Some(Ok(())) => {}
                Some(Err(e)) => {
                    return Err(format!(
                        "cell {}: {e}; refusing to publish anything",
                        c.id
                    ))
                }
                None => {
                    return Err(format!(
                        "cell {}: tag `{t}` is not in the matrix's repository `{repo}`; refusing to publish anything",
                        c.id
                    ))
                }
            }
        }
    }
    Ok(())
}

/// What a publish did, for the manifest's recorder to apply: every push (by record
/// index, in the order made) and every image index.
#[derive(Debug, Default)]
pub struct Published {
    pub pushed: Vec<(usize, Pushed)>,
    pub indexes: Vec<crate::manifest::IndexRecord>,
    /// The signatures made (`publish --sign-key`).
    pub signatures: Vec<crate::manifest::SignatureRecord>,
    /// The signed provenance stored beside each image.
    pub attestations: Vec<crate::manifest::SignatureRecord>,
    /// Whether everything that should be published was.
    pub complete: bool,
}

impl Published {
    /// The pushes and indexes into the manifest they were made from.
    pub fn apply(self, man: &mut Manifest) {
        for (i, p) in self.pushed {
            man.cells[i].pushed.push(p);
        }
        man.indexes.extend(self.indexes);
        man.signatures.extend(self.signatures);
        man.attestations.extend(self.attestations);
    }

    /// As [`Published::apply`], each tag's and each group's record replacing the one an
    /// earlier publish left, so that the manifest says where every tag is now.
    pub fn apply_replacing(self, man: &mut Manifest) {
        for (i, p) in self.pushed {
            man.cells[i].pushed.retain(|q| q.tag != p.tag);
            man.cells[i].pushed.push(p);
        }
        for x in self.indexes {
            man.indexes.retain(|y| y.group != x.group);
            man.indexes.push(x);
        }
        for x in self.signatures {
            man.signatures.retain(|y| y.subject != x.subject);
            man.signatures.push(x);
        }
        for x in self.attestations {
            man.attestations.retain(|y| y.subject != x.subject);
            man.attestations.push(x);
        }
    }
}

/// Publish; returns what was pushed, or why nothing was. `listen` hears of every push,
/// re-try and index as it happens. It writes no manifest.
pub fn publish(
    engines: &dyn Fleet,
    man: &Manifest,
    opts: &Options,
    listen: Listen,
) -> Result<Published, String> {
    check_tags(man)?;
    if let Some(why) = man.incomplete().filter(|_| !opts.allow_partial) {
        return Err(format!(
            "{why}; publishing nothing (merge every shard first, or --allow-partial)"
        ));
    }
    let built = |c: &CellRecord| {
        c.status.succeeded()
            && (!opts.need_verified || c.verification.as_ref().is_some_and(|v| v.ok))
    };
    let selected: Vec<usize> = (0..man.cells.len())
        .filter(|i| man.cells[*i].status != Status::Excluded)
        .collect();
    // An image is pushed only from the engine that holds it; an engine that does not
    // answer now makes its cells ineligible before anything is published.
    let mut answers: HashMap<Option<String>, bool> = HashMap::new();
    for &i in &selected {
        let c = &man.cells[i];
        if built(c) && !answers.contains_key(&c.engine) {
            let up = engines
                .engine(c.engine.as_deref())
                .is_some_and(|d| d.alive(Duration::from_secs(10)).is_ok());
            answers.insert(c.engine.clone(), up);
        }
    }
    let reachable = |c: &CellRecord| answers.get(&c.engine).copied().unwrap_or(false);
    let not_built = selected.iter().filter(|i| !built(&man.cells[**i])).count();
    let mut away: Vec<&str> = selected
        .iter()
        .map(|i| &man.cells[*i])
        .filter(|c| built(c) && !reachable(c))
        .map(|c| c.engine.as_deref().unwrap_or(DEFAULT_ENGINE))
        .collect();
    let unreachable = away.len();
    away.sort_unstable();
    away.dedup();
    if not_built + unreachable > 0 && !opts.allow_partial {
        let mut why = Vec::new();
        if not_built > 0 {
            why.push(format!(
                "{not_built} of {} cells did not build{}",
                selected.len(),
                if opts.need_verified {
                    " and verify"
                } else {
                    ""
                }
            ));
        }
        if unreachable > 0 {
            why.push(format!(
                "{unreachable} are on engines that do not answer ({})",
                away.join(", ")
            ));
        }
        return Err(format!(
            "{}; publishing nothing (use --allow-partial to publish the rest)",
            why.join(" and ")
        ));
    }
    let eligible: Vec<usize> = selected
        .into_iter()
        .filter(|i| built(&man.cells[*i]) && reachable(&man.cells[*i]))
        .collect();
    // every image checked before the first push: a forged one stops the whole publish
    for &i in &eligible {
        let c = &man.cells[i];
        if let Some(why) = engines
            .engine(c.engine.as_deref())
            .and_then(|d| forged(d, c))
        {
            return Err(format!("{why}; publishing nothing"));
        }
    }
    let mut all_ok = true;
    let mut pushed: Vec<(usize, Pushed)> = Vec::new();
    for phase in 0..2 {
        for &i in &eligible {
            // a tag group's member goes out under its platform tag; its shared tags
            // become an image index once every platform is there
            let c = &man.cells[i];
            let tags: Vec<String> = match (&c.platform_tag, phase) {
                (Some(t), 0) => vec![t.clone()],
                (Some(_), _) => Vec::new(),
                (None, 0) => c.tags.iter().take(1).cloned().collect(),
                (None, _) => c.tags.iter().skip(1).cloned().collect(),
            };
            for t in tags {
                let p = push_one(engines, &man.cells[i], &t, opts, listen);
                all_ok &= p.ok;
                pushed.push((i, p));
            }
        }
    }
    let (indexes, indexes_ok) = publish_indexes(engines, man, &pushed, &eligible, listen);
    all_ok &= indexes_ok;
    Ok(Published {
        pushed,
        indexes,
        signatures: Vec::new(),
        attestations: Vec::new(),
        complete: all_ok,
    })
}

/// One image index per shared tag of every tag group whose platforms were all pushed.
/// A group with a platform missing (only with --allow-partial) gets none: its shared
/// tags stay where they were rather than lose a platform. Returns the indexes' records
/// and whether every index that could be made was. `new` are this publish's pushes
/// (newer than those the manifest records).
fn publish_indexes(
    engines: &dyn Fleet,
    man: &Manifest,
    new: &[(usize, Pushed)],
    eligible: &[usize],
    listen: Listen,
) -> (Vec<crate::manifest::IndexRecord>, bool) {
    let mut out = Vec::new();
    let mut this_run: HashMap<usize, Vec<&Pushed>> = HashMap::new();
    for (i, p) in new {
        this_run.entry(*i).or_default().push(p);
    }
    let mut all_ok = true;
    for (name, members) in man.tag_groups() {
        let pushed = |i: usize| {
            let c = &man.cells[i];
            let now = this_run.get(&i).map_or(&[][..], Vec::as_slice);
            now.iter()
                .rev()
                .copied()
                .chain(c.pushed.iter().rev())
                .find(|p| Some(&p.tag) == c.platform_tag.as_ref() && p.ok)
                .and_then(|p| p.digest.clone())
        };
        let platforms: Vec<crate::manifest::IndexEntry> = members
            .iter()
            .map(|&i| crate::manifest::IndexEntry {
                platform: man.cells[i].coordinates.platform.clone(),
                cell: man.cells[i].id.clone(),
                digest: pushed(i),
            })
            .collect();
        let tags = man.cells[members[0]].tags.clone();
        let mut rec = crate::manifest::IndexRecord {
            group: name.clone(),
            tags: tags.clone(),
            platforms,
            digest: None,
            ok: false,
            error: None,
            unchanged: false,
        };
        let missing: Vec<&str> = rec
            .platforms
            .iter()
            .zip(&members)
            .filter(|(e, i)| e.digest.is_none() || !eligible.contains(i))
            .map(|(e, _)| e.platform.as_str())
            .collect();
        if !missing.is_empty() {
            let why = format!(
                "not made: {} not pushed; its tags stay where they were",
                missing.join(", ")
            );
            listen(&Phase::Index {
                group: &name,
                tag: None,
                digest: None,
                error: Some(&why),
            });
            rec.error = Some(why);
            out.push(rec);
            continue;
        }
        let Some(docker) = engines.engine(man.cells[members[0]].engine.as_deref()) else {
            rec.error = Some("the engine of its first platform does not answer".into());
            out.push(rec);
            all_ok = false;
            continue;
        };
        let refs: Vec<String> = rec
            .platforms
            .iter()
            .map(|e| {
                let repo = reference::split(&tags[0]).0;
                format!("{repo}@{}", e.digest.as_deref().unwrap_or_default())
            })
            .collect();
        for t in &tags {
            match docker.push_index(t, &refs, reference::is_loopback(t)) {
                Ok(d) => {
                    listen(&Phase::Index {
                        group: &name,
                        tag: Some(t),
                        digest: d.as_deref(),
                        error: None,
                    });
                    rec.digest = rec.digest.take().or(d);
                }
                Err(e) => {
                    listen(&Phase::Index {
                        group: &name,
                        tag: Some(t),
                        digest: None,
                        error: Some(&e),
                    });
                    rec.error = Some(format!("{t}: {e}"));
                    break;
                }
            }
        }
        rec.ok = rec.error.is_none();
        all_ok &= rec.ok;
        out.push(rec);
    }
    (out, all_ok)
}

fn push_one(
    engines: &dyn Fleet,
    c: &CellRecord,
    tag: &str,
    opts: &Options,
    listen: Listen,
) -> Pushed {
    let mut attempts = 0;
    let result = loop {
        attempts += 1;
        let Some(docker) = engines.engine(c.engine.as_deref()) else {
            break Err("the engine that holds the image does not answer".to_string());
        };
        if let Err(e) = pin(docker, c, tag, listen) {
            break Err(e);
        }
        match docker.push(tag) {
            Ok(d) => break Ok(d),
            Err(e) if attempts <= opts.retries => {
                listen(&Phase::PushRetrying {
                    id: &c.id,
                    tag,
                    error: &e,
                });
                std::thread::sleep(opts.backoff * 2u32.pow(attempts - 1));
            }
            Err(e) => break Err(e),
        }
    };
    let pushed = Pushed {
        tag: tag.to_string(),
        ok: result.is_ok(),
        digest: result.as_ref().ok().cloned().flatten(),
        attempts,
        error: result.err(),
        unchanged: false,
    };
    listen(&Phase::Pushed {
        id: &c.id,
        pushed: &pushed,
    });
    pushed
}

/// Why the image a cell's record names is not the one the run built for it, if it is
/// not: an image ID (never a name a manifest could point anywhere) whose input-hash
/// label is the identity the record gives. A manifest is an input like any other: a
/// forged or damaged one must not make us publish another image under the matrix's
/// tags. An image that is gone from its engine is not forged (see [`pin`]).
fn forged(docker: &dyn ImageEngine, c: &CellRecord) -> Option<String> {
    let Some(want) = c.image_id.as_deref() else {
        return Some(format!("cell {} records no image ID", c.id));
    };
    if !crate::manifest::merge::is_digest(want) {
        return Some(format!(
            "cell {}: the manifest's image ID {want:?} is not an image ID (sha256: and 64 hex digits); refusing to push it",
            c.id
        ));
    }
    let Some(hash) = c.input_hash.as_deref() else {
        return Some(format!(
            "cell {} records no input hash, so its image cannot be told from another; refusing to push it",
            c.id
        ));
    };
    docker.image_id(want)?;
    let label = docker.label(want, crate::labels::INPUT_HASH);
    // An image that stayed current across an identity scheme keeps the label of the
    // scheme it was built under: this cell's own image still (its cell label says so).
    let earlier_scheme = c.status == Status::UpToDate
        && docker.label(want, crate::labels::CELL).as_deref() == Some(c.id.as_str());
    match label {
        Some(h) if h == hash => None,
        Some(_) if earlier_scheme => None,
        label => Some(format!(
            "cell {}: image {want} is not the one built for it (its {} label is {}, the manifest records {hash}); refusing to push it",
            c.id,
            crate::labels::INPUT_HASH,
            label.as_deref().unwrap_or("missing")
        )),
    }
}

/// Point `tag` at the image the manifest records before pushing it: a local tag may have
/// moved since the build (another run, a hand-made `docker tag`), and what goes out must
/// be what was built and verified.
fn pin(docker: &dyn ImageEngine, c: &CellRecord, tag: &str, listen: Listen) -> Result<(), String> {
    // every image was checked by `forged` before the first push
    let Some(want) = c.image_id.as_deref() else {
        return Err(format!("cell {} records no image ID", c.id));
    };
    let have = docker.image_id(tag);
    if have.as_deref() == Some(want) {
        return Ok(());
    }
    if docker.image_id(want).is_none() {
        return Err(format!(
            "the image cell {} built ({want}) is gone from its engine; build again",
            c.id
        ));
    }
    docker.tag(want, tag)?;
    listen(&Phase::Repinned {
        id: &c.id,
        tag,
        image: want,
        was: have.as_deref(),
    });
    Ok(())
}

/// The private tag a cell's image is pushed under in the staging repository: its id
/// and the start of its input hash, so that a rebuilt image never reuses a tag.
pub fn stage_tag(c: &CellRecord) -> String {
    let hash = c.input_hash.as_deref().unwrap_or("unknown");
    let hash = hash.strip_prefix("sha256:").unwrap_or(hash);
    let mut t = format!("{}-{}", c.id, &hash[..hash.len().min(16)]);
    t.truncate(128);
    t
}

/// `build --stage REPO`: push each cell that built (and passed verification) to the
/// staging repository by digest, from the engine that holds it, checked as `publish`
/// checks. Cells that did not pass are left out (the shard's manifest says why);
/// returns the staged records, or why nothing was staged.
pub fn stage(
    engines: &dyn Fleet,
    man: &Manifest,
    repo: &str,
    opts: &Options,
    listen: Listen,
) -> Result<(Vec<(usize, crate::manifest::Staged)>, bool), String> {
    reference::check_repository(repo).map_err(|e| format!("the staging repository: {e}"))?;
    // (that the staging repository is on the matrix's registry is checked before the
    // run starts: commands/build.rs)
    let passed = |c: &CellRecord| {
        c.status.succeeded()
            && (!opts.need_verified || c.verification.as_ref().is_some_and(|v| v.ok))
    };
    let eligible: Vec<usize> = (0..man.cells.len())
        .filter(|&i| passed(&man.cells[i]))
        .collect();
    for &i in &eligible {
        let c = &man.cells[i];
        let Some(d) = engines.engine(c.engine.as_deref()) else {
            return Err(format!(
                "the engine of cell {} does not answer; staging nothing",
                c.id
            ));
        };
        if let Some(why) = forged(d, c) {
            return Err(format!("{why}; staging nothing"));
        }
    }
    let mut out = Vec::new();
    let mut all_ok = true;
    for i in eligible {
        let c = &man.cells[i];
        let tag = format!("{repo}:{}", stage_tag(c));
        let p = push_one(engines, c, &tag, opts, listen);
        match (p.ok, p.digest, c.image_id.clone()) {
            (true, Some(digest), Some(config)) => out.push((
                i,
                crate::manifest::Staged {
                    repository: repo.to_string(),
                    tag,
                    digest,
                    config,
                },
            )),
            (true, None, _) => {
                all_ok = false;
                listen(&Phase::Warning {
                    id: Some(&c.id),
                    text: format!("stage: docker push {tag} reported no digest; not staged"),
                });
            }
            _ => all_ok = false,
        }
    }
    Ok((out, all_ok))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::manifest::CellRecord;

    fn man(tags: &[&str]) -> Manifest {
        let mut m = Manifest::new("m.yaml", "0", None);
        m.repository = Some("reg.example:5000/ml/conda".into());
        let mut c = CellRecord::new("x", Default::default());
        c.status = Status::Built;
        c.tags = tags.iter().map(|t| (*t).to_string()).collect();
        m.cells.push(c);
        m
    }

    #[test]
    fn forged_tags_are_refused_before_any_push() {
        assert!(check_tags(&man(&["reg.example:5000/ml/conda:conda3-python3.11"])).is_ok());
        for bad in [
            "evil.example:5000/steal:1",
            "--all-tags",
            "reg.example:5000/ml/conda:Bad Tag With Spaces",
            "reg.example:5000/ml/conda:-x",
            "reg.example:5000/ml/conda",
        ] {
            assert!(check_tags(&man(&[bad])).is_err(), "{bad}");
        }
        let mut m = man(&["reg.example:5000/ml/conda:a"]);
        m.repository = None;
        assert!(check_tags(&m).unwrap_err().contains("repository"));
    }

    /// The publishing rules on in-process engines.
    mod rules {
        use super::*;
        use crate::engine::fake::{digest_of, FakeEngine, FakeFleet};

        const REPO: &str = "reg.example:5000/ml/conda";

        /// The image ID made of one hex digit.
        fn iid(digit: &str) -> String {
            format!("sha256:{}", digit.repeat(64))
        }

        /// Cells `a` and `b`, built and verified as `iid("a")`/`iid("b")` (labelled with
        /// their input hash) on the engine each name gives, with a primary tag and an
        /// alias each.
        fn built(fleet: &FakeFleet, on: [&str; 2]) -> Manifest {
            let mut m = Manifest::new("m.yaml", "0", None);
            m.repository = Some(REPO.into());
            for (id, engine) in ["a", "b"].into_iter().zip(on) {
                let mut c = CellRecord::new(id, Default::default());
                c.status = Status::Built;
                c.image_id = Some(iid(id));
                c.input_hash = Some(format!("hash-{id}"));
                c.tags = vec![format!("{REPO}:{id}"), format!("{REPO}:{id}-nightly")];
                c.engine = (!engine.is_empty()).then(|| engine.to_string());
                c.verification = Some(crate::manifest::Verification {
                    ok: true,
                    ..Default::default()
                });
                let tags: Vec<&str> = c.tags.iter().map(String::as_str).collect();
                let e = fleet.get(engine);
                e.labelled_image(
                    &iid(id),
                    crate::labels::INPUT_HASH,
                    &format!("hash-{id}"),
                    1,
                );
                e.image(&iid(id), &tags);
                m.cells.push(c);
            }
            m
        }

        fn opts() -> Options {
            Options {
                need_verified: true,
                allow_partial: false,
                retries: 2,
                backoff: Duration::ZERO,
            }
        }

        /// Publish and apply what was done to the manifest, as the recorder does.
        fn publish_into(fleet: &FakeFleet, m: &mut Manifest, o: &Options) -> Result<bool, String> {
            publish(fleet, m, o, &|_| {}).map(|p| {
                let complete = p.complete;
                p.apply(m);
                complete
            })
        }

        fn pushes(e: &FakeEngine) -> Vec<String> {
            e.log()
                .into_iter()
                .filter(|l| l.starts_with("push"))
                .collect()
        }

        #[test]
        fn primary_tags_go_out_before_any_alias() {
            let fleet = FakeFleet::one();
            let mut m = built(&fleet, ["", ""]);
            assert_eq!(publish_into(&fleet, &mut m, &opts()), Ok(true));
            assert_eq!(
                pushes(fleet.first()),
                [
                    format!("push {REPO}:a"),
                    format!("push {REPO}:b"),
                    format!("push {REPO}:a-nightly"),
                    format!("push {REPO}:b-nightly"),
                ]
            );
            assert_eq!(
                fleet.first().in_registry(&format!("{REPO}:b-nightly")),
                Some(digest_of(&iid("b")))
            );
            assert!(m
                .cells
                .iter()
                .all(|c| c.pushed.len() == 2 && c.pushed[0].ok));
        }

        #[test]
        fn nothing_is_published_while_a_cell_failed_or_is_unverified() {
            for spoil in [
                |c: &mut CellRecord| c.status = Status::Failed,
                |c: &mut CellRecord| c.verification.as_mut().unwrap().ok = false,
                |c: &mut CellRecord| c.verification = None,
            ] {
                let fleet = FakeFleet::one();
                let mut m = built(&fleet, ["", ""]);
                spoil(&mut m.cells[1]);
                let err = publish_into(&fleet, &mut m, &opts()).unwrap_err();
                assert!(
                    err.contains("1 of 2 cells did not build and verify"),
                    "{err}"
                );
                assert!(pushes(fleet.first()).is_empty());
                // --allow-partial publishes the rest, and only the rest
                let partial = Options {
                    allow_partial: true,
                    ..opts()
                };
                assert_eq!(publish_into(&fleet, &mut m, &partial), Ok(true));
                assert_eq!(pushes(fleet.first()).len(), 2);
                assert!(fleet.first().in_registry(&format!("{REPO}:b")).is_none());
            }
        }

        #[test]
        fn nothing_is_published_while_an_engine_holding_a_cell_does_not_answer() {
            let fleet = FakeFleet(vec![
                ("one".into(), FakeEngine::default()),
                ("two".into(), FakeEngine::down()),
            ]);
            let mut m = built(&fleet, ["one", "two"]);
            let err = publish_into(&fleet, &mut m, &opts()).unwrap_err();
            assert!(err.contains("engines that do not answer (two)"), "{err}");
            assert!(pushes(fleet.get("one")).is_empty());
        }

        #[test]
        fn a_tag_moved_since_the_build_is_pointed_back_before_it_is_pushed() {
            let fleet = FakeFleet::one();
            let mut m = built(&fleet, ["", ""]);
            let e = fleet.first();
            e.image("sha256:someone-else", &[&format!("{REPO}:a")]);
            assert_eq!(publish_into(&fleet, &mut m, &opts()), Ok(true));
            assert_eq!(
                e.in_registry(&format!("{REPO}:a")),
                Some(digest_of(&iid("a")))
            );
            let log = e.log();
            let retag = log
                .iter()
                .position(|l| *l == format!("tag {} {REPO}:a", iid("a")))
                .expect("pointed back");
            let push = log
                .iter()
                .position(|l| *l == format!("push {REPO}:a"))
                .unwrap();
            assert!(retag < push, "{log:?}");
        }

        #[test]
        fn an_image_gone_from_its_engine_is_not_replaced_by_what_the_tag_names() {
            let fleet = FakeFleet::one();
            let mut m = built(&fleet, ["", ""]);
            m.cells[0].image_id = Some(iid("c"));
            assert_eq!(publish_into(&fleet, &mut m, &opts()), Ok(false));
            assert!(fleet.first().in_registry(&format!("{REPO}:a")).is_none());
            let p = &m.cells[0].pushed[0];
            assert!(
                !p.ok && p.error.as_deref().unwrap().contains("is gone"),
                "{p:?}"
            );
        }

        #[test]
        fn a_forged_image_id_in_the_manifest_is_never_tagged_or_pushed() {
            let refused = |m: &mut Manifest, fleet: &FakeFleet, why: &str| {
                let err = publish_into(fleet, m, &opts()).unwrap_err();
                assert!(
                    err.contains(why) && err.contains("publishing nothing"),
                    "{err}"
                );
                let log = fleet.first().log();
                assert!(
                    !log.iter()
                        .any(|l| l.starts_with("tag") || l.starts_with("push")),
                    "{log:?}"
                );
            };
            for forged in ["debian:12", "--help", "sha256:ABC"] {
                let fleet = FakeFleet::one();
                let mut m = built(&fleet, ["", ""]);
                // the forged cell is the second: the first is not pushed either
                m.cells[1].image_id = Some(forged.into());
                refused(&mut m, &fleet, "is not an image ID");
            }
            // a real image on the engine, but not the one built for the cell
            let fleet = FakeFleet::one();
            let mut m = built(&fleet, ["", ""]);
            fleet.first().image(&iid("d"), &[]);
            m.cells[1].image_id = Some(iid("d"));
            refused(&mut m, &fleet, "is not the one built for it");
            // an up-to-date image of this very cell, labelled by an earlier identity
            // scheme, is the cell's image still
            let fleet = FakeFleet::one();
            let mut m = built(&fleet, ["", ""]);
            m.cells[1].status = Status::UpToDate;
            m.cells[1].input_hash = Some("hash-of-the-current-scheme".into());
            let e = fleet.first();
            e.labelled_image(&iid("b"), crate::labels::CELL, "b", 1);
            assert_eq!(publish_into(&fleet, &mut m, &opts()), Ok(true));
            // …but not another cell's image
            let fleet = FakeFleet::one();
            let mut m = built(&fleet, ["", ""]);
            m.cells[1].status = Status::UpToDate;
            m.cells[1].image_id = Some(iid("a"));
            fleet
                .first()
                .labelled_image(&iid("a"), crate::labels::CELL, "a", 1);
            refused(&mut m, &fleet, "is not the one built for it");
            // nor one whose record lost its input hash
            let fleet = FakeFleet::one();
            let mut m = built(&fleet, ["", ""]);
            m.cells[1].input_hash = None;
            refused(&mut m, &fleet, "records no input hash");
        }

        #[test]
        fn a_failed_push_is_retried_and_its_attempts_recorded() {
            let fleet = FakeFleet::one();
            let mut m = built(&fleet, ["", ""]);
            fleet.first().failing_pushes(&format!("{REPO}:a"), 2);
            fleet.first().failing_pushes(&format!("{REPO}:b"), 3);
            assert_eq!(publish_into(&fleet, &mut m, &opts()), Ok(false));
            let (a, b) = (&m.cells[0].pushed[0], &m.cells[1].pushed[0]);
            assert!(a.ok && a.attempts == 3, "{a:?}");
            assert!(!b.ok && b.attempts == 3 && b.error.is_some(), "{b:?}");
        }

        #[test]
        fn a_tag_group_gets_its_index_only_when_every_platform_was_pushed() {
            for all_built in [true, false] {
                let fleet = FakeFleet::one();
                let mut m = built(&fleet, ["", ""]);
                for (c, arch) in m.cells.iter_mut().zip(["amd64", "arm64"]) {
                    c.group = Some("g".into());
                    c.coordinates.platform = format!("linux/{arch}");
                    c.platform_tag = Some(format!("{REPO}:{}-{arch}", c.id));
                    c.tags = vec![format!("{REPO}:shared"), format!("{REPO}:shared-nightly")];
                    let id = c.image_id.clone().unwrap();
                    fleet
                        .first()
                        .image(&id, &[c.platform_tag.as_deref().unwrap()]);
                }
                if !all_built {
                    m.cells[1].status = Status::Failed;
                }
                let o = Options {
                    allow_partial: !all_built,
                    ..opts()
                };
                assert_eq!(publish_into(&fleet, &mut m, &o), Ok(true));
                let e = fleet.first();
                let indexes: Vec<String> = e
                    .log()
                    .into_iter()
                    .filter(|l| l.starts_with("index"))
                    .collect();
                let idx = &m.indexes[0];
                if all_built {
                    assert_eq!(
                        indexes,
                        [
                            format!("index {REPO}:shared"),
                            format!("index {REPO}:shared-nightly")
                        ]
                    );
                    assert!(idx.ok && idx.digest.is_some(), "{idx:?}");
                    // the platforms went out under their own tags only
                    assert_eq!(pushes(e).len(), 2);
                } else {
                    assert!(indexes.is_empty(), "{indexes:?}");
                    assert!(!idx.ok);
                    assert!(
                        idx.error.as_deref().unwrap().contains("linux/arm64"),
                        "{idx:?}"
                    );
                    assert!(e.in_registry(&format!("{REPO}:shared")).is_none());
                }
            }
        }
    }
}
