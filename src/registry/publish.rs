//! `matrix publish`: the public tags of a merged manifest made in the registry from the
//! digests its shard jobs staged (`build --stage`), with no Docker daemon.
//!
//! Order, so that a refused or killed publish leaves the public tags as they were or
//! merely behind: every staged image is checked first (the registry still holds it,
//! and it is the image the cell built: its config digest is the recorded image ID);
//! then its blobs are mounted into the public repository and a tag group's members are
//! stored by digest (neither moves a tag); then the primary tags, the aliases, and
//! last the indexes of tag groups. A tag already at its digest is left alone, so a
//! second publish changes nothing and a killed one finishes when run again.

use crate::manifest::{CellRecord, IndexEntry, IndexRecord, Manifest, Pushed, Status};
use crate::run::events::{Listen, Phase};
use crate::run::publish::{check_tags, Published};

use super::{blobs_of, index_body, Api, Fetched, Repo};

pub struct Options {
    /// Only cells whose verification passed.
    pub need_verified: bool,
    pub allow_partial: bool,
    /// Also tag each tag group member's image `REPO:TAG-ARCH` in the public repository.
    pub platform_tags: bool,
    /// Sign every published digest (each image and each index) with this key.
    pub signer: Option<p256::ecdsa::SigningKey>,
    /// The manifest's folder, where the cells' SBOMs are (`sbom/<cell>.json`): each is
    /// attached, signed, beside its image's provenance.
    pub sbom_dir: Option<std::path::PathBuf>,
}

/// A staged image, checked.
struct Source {
    cell: usize,
    staging: Repo,
    image: Fetched,
    blobs: Vec<String>,
}

/// Publish; returns what was done, or why nothing was. Writes no manifest.
pub fn publish(
    api: &dyn Api,
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
    let public = Repo::parse(man.repository.as_deref().unwrap_or_default())?;
    let eligible = eligible(man, opts)?;
    // every image checked before anything is written
    let sources = eligible
        .iter()
        .map(|&i| source(api, &public, man, i))
        .collect::<Result<Vec<Source>, String>>()
        .map_err(|e| format!("{e}; publishing nothing"))?;
    for s in &sources {
        bring_blobs(api, &public, s).map_err(|e| format!("{e}; no tag was moved"))?;
        if man.cells[s.cell].group.is_some() && api.manifest(&public, &s.image.digest)?.is_none() {
            api.put_manifest(&public, &s.image.digest, &s.image.body, &s.image.media_type)
                .map_err(|e| format!("{e}; no tag was moved"))?;
        }
    }
    let mut pushed: Vec<(usize, Pushed)> = Vec::new();
    for phase in 0..2 {
        for s in &sources {
            let c = &man.cells[s.cell];
            let tags: Vec<&String> = match (&c.platform_tag, phase) {
                (Some(t), 0) if opts.platform_tags => vec![t],
                (Some(_), _) => Vec::new(),
                (None, 0) => c.tags.iter().take(1).collect(),
                (None, _) => c.tags.iter().skip(1).collect(),
            };
            for t in tags {
                let p = move_tag(api, &public, t, &s.image);
                listen(&Phase::Pushed {
                    id: &c.id,
                    pushed: &p,
                });
                pushed.push((s.cell, p));
            }
        }
    }
    let (indexes, indexes_ok) = indexes(api, &public, man, &sources, listen);
    let (signatures, attestations) = match &opts.signer {
        Some(key) => evidence(
            api,
            &public,
            man,
            &sources,
            &indexes,
            (key, opts.sbom_dir.as_deref()),
            listen,
        ),
        None => (Vec::new(), Vec::new()),
    };
    let complete = indexes_ok
        && signatures.iter().chain(&attestations).all(|x| x.ok)
        && pushed.iter().all(|(_, p)| p.ok)
        && eligible.len()
            == man
                .cells
                .iter()
                .filter(|c| c.status != Status::Excluded)
                .count();
    Ok(Published {
        pushed,
        indexes,
        signatures,
        attestations,
        complete,
    })
}

/// Every published image and index signed; each image's provenance signed and stored
/// beside it.
fn evidence(
    api: &dyn Api,
    public: &Repo,
    man: &Manifest,
    sources: &[Source],
    indexes: &[IndexRecord],
    (key, sbom_dir): (&p256::ecdsa::SigningKey, Option<&std::path::Path>),
    listen: Listen,
) -> (
    Vec<crate::manifest::SignatureRecord>,
    Vec<crate::manifest::SignatureRecord>,
) {
    let mut subjects: Vec<&str> = sources.iter().map(|s| s.image.digest.as_str()).collect();
    subjects.extend(
        indexes
            .iter()
            .filter(|x| x.ok)
            .filter_map(|x| x.digest.as_deref()),
    );
    let signatures = super::sign::store_all(api, public, &subjects, key, listen);
    let attestations = sources
        .iter()
        .map(|s| {
            let cell = &man.cells[s.cell];
            let repo = public.to_string();
            let st = crate::provenance::statement(man, cell, &repo, &s.image.digest);
            let mut envelopes = vec![(
                crate::provenance::PREDICATE_TYPE,
                crate::provenance::envelope(&st, key),
            )];
            match sbom_dir
                .and_then(|d| crate::provenance::sbom_statement(d, cell, &repo, &s.image.digest))
            {
                Some(Ok(st)) => envelopes.push((
                    crate::provenance::SBOM_PREDICATE_TYPE,
                    crate::provenance::envelope(&st, key),
                )),
                Some(Err(why)) => listen(&Phase::Warning {
                    id: Some(&cell.id),
                    text: format!("attest: {why}"),
                }),
                None => {}
            }
            let rec = super::sign::store_attestations(api, public, &s.image.digest, &envelopes);
            let what = if envelopes.len() > 1 {
                "provenance and SBOM"
            } else {
                "provenance"
            };
            listen(&Phase::Info {
                id: Some(&cell.id),
                text: match (&rec.error, rec.unchanged) {
                    (Some(e), _) => format!("attest {}: failed: {e}", s.image.digest),
                    (None, true) => format!("attest {}: unchanged ({})", s.image.digest, rec.tag),
                    (None, false) => format!("attest {}: {what} ({})", s.image.digest, rec.tag),
                },
            });
            rec
        })
        .collect();
    (signatures, attestations)
}

/// The cells to publish; an error (publishing nothing) when one that should be cannot,
/// unless a partial publish is allowed.
fn eligible(man: &Manifest, opts: &Options) -> Result<Vec<usize>, String> {
    let mut out = Vec::new();
    let (mut unbuilt, mut unstaged) = (Vec::new(), Vec::new());
    for (i, c) in man.cells.iter().enumerate() {
        if c.status == Status::Excluded {
            continue;
        }
        let verified = c.verification.as_ref().is_some_and(|v| v.ok);
        if !c.status.succeeded() || (opts.need_verified && !verified) {
            unbuilt.push(c.id.as_str());
        } else if c.staged.is_none() {
            unstaged.push(c.id.as_str());
        } else {
            out.push(i);
        }
    }
    if (unbuilt.is_empty() && unstaged.is_empty()) || opts.allow_partial {
        return Ok(out);
    }
    let mut why = Vec::new();
    if !unbuilt.is_empty() {
        why.push(format!(
            "{} cells did not build{} ({})",
            unbuilt.len(),
            if opts.need_verified {
                " and verify"
            } else {
                ""
            },
            list(&unbuilt)
        ));
    }
    if !unstaged.is_empty() {
        why.push(format!(
            "{} cells were not staged in a registry ({}): build them with --stage REPOSITORY, or publish from their engines with `matrix push`",
            unstaged.len(),
            list(&unstaged)
        ));
    }
    Err(format!(
        "{}; publishing nothing (use --allow-partial to publish the rest)",
        why.join(" and ")
    ))
}

fn list(ids: &[&str]) -> String {
    let mut s = ids.iter().take(5).copied().collect::<Vec<_>>().join(", ");
    if ids.len() > 5 {
        s.push_str(&format!(" and {} more", ids.len() - 5));
    }
    s
}

/// A cell's staged image as the registry holds it, checked against the record.
fn source(api: &dyn Api, public: &Repo, man: &Manifest, i: usize) -> Result<Source, String> {
    let c: &CellRecord = &man.cells[i];
    let Some(st) = c.staged.as_ref() else {
        return Err(format!("cell {} was not staged", c.id));
    };
    let staging = Repo::parse(&st.repository)
        .map_err(|e| format!("cell {}: its staging repository: {e}", c.id))?;
    if staging.host != public.host {
        return Err(format!(
            "cell {} was staged on {}, not on {} where the matrix's repository is; publish does not copy images between registries",
            c.id, staging.host, public.host
        ));
    }
    for (what, d) in [("digest", &st.digest), ("config digest", &st.config)] {
        if !crate::manifest::merge::is_digest(d) {
            return Err(format!(
                "cell {}: the staged {what} {d:?} is not sha256: and 64 hex digits",
                c.id
            ));
        }
    }
    if c.image_id.as_deref().is_some_and(|id| id != st.config) {
        return Err(format!(
            "cell {}: the staged image's config {} is not the image the cell built ({})",
            c.id,
            st.config,
            c.image_id.as_deref().unwrap_or_default()
        ));
    }
    let Some(image) = api.manifest(&staging, &st.digest)? else {
        return Err(format!(
            "the registry no longer holds cell {}'s image ({staging}@{}); build its shard again",
            c.id, st.digest
        ));
    };
    if image.digest != st.digest
        || ![super::DOCKER_MANIFEST, super::OCI_MANIFEST].contains(&image.media_type.as_str())
    {
        return Err(format!(
            "cell {}: {staging}@{} is not one image's manifest (it is {})",
            c.id, st.digest, image.media_type
        ));
    }
    let (config, layers) = blobs_of(&image.body).map_err(|e| format!("cell {}: {e}", c.id))?;
    if config != st.config {
        return Err(format!(
            "cell {}: {staging}@{} holds the image {config}, not the one the cell built ({})",
            c.id, st.digest, st.config
        ));
    }
    let mut blobs = vec![config];
    blobs.extend(layers);
    Ok(Source {
        cell: i,
        staging,
        image,
        blobs,
    })
}

/// The image's blobs in the public repository (mounted from the staging one, which the
/// registry does without copying them).
fn bring_blobs(api: &dyn Api, public: &Repo, s: &Source) -> Result<(), String> {
    if &s.staging == public {
        return Ok(());
    }
    for b in &s.blobs {
        if api.blob_exists(public, b)? {
            continue;
        }
        api.mount_blob(public, &s.staging, b)?;
        if !api.blob_exists(public, b)? {
            return Err(format!(
                "{public}: the registry did not mount blob {b} from {}",
                s.staging
            ));
        }
    }
    Ok(())
}

/// [`super::move_tag`], as a push record.
fn move_tag(api: &dyn Api, public: &Repo, tag: &str, image: &Fetched) -> Pushed {
    let done = super::move_tag(api, public, tag, image);
    Pushed {
        tag: tag.to_string(),
        digest: Some(image.digest.clone()),
        ok: done.is_ok(),
        attempts: 1,
        unchanged: done.as_ref().is_ok_and(|u| *u),
        error: done.err(),
    }
}

/// One index per tag group whose members are all published, under each shared tag.
fn indexes(
    api: &dyn Api,
    public: &Repo,
    man: &Manifest,
    sources: &[Source],
    listen: Listen,
) -> (Vec<IndexRecord>, bool) {
    let mut out = Vec::new();
    let mut all_ok = true;
    for (name, members) in man.tag_groups() {
        let name = name.as_str();
        let found: Vec<Option<&Source>> = members
            .iter()
            .map(|i| sources.iter().find(|s| s.cell == *i))
            .collect();
        let tags = man.cells[members[0]].tags.clone();
        let mut rec = IndexRecord {
            group: name.to_string(),
            tags: tags.clone(),
            platforms: members
                .iter()
                .zip(&found)
                .map(|(&i, s)| IndexEntry {
                    platform: man.cells[i].coordinates.platform.clone(),
                    cell: man.cells[i].id.clone(),
                    digest: s.map(|s| s.image.digest.clone()),
                })
                .collect(),
            digest: None,
            ok: false,
            error: None,
            unchanged: false,
        };
        if found.iter().any(Option::is_none) {
            let missing: Vec<&str> = rec
                .platforms
                .iter()
                .filter(|e| e.digest.is_none())
                .map(|e| e.platform.as_str())
                .collect();
            let why = format!(
                "not made: {} not published; its tags stay where they were",
                missing.join(", ")
            );
            listen(&Phase::Index {
                group: name,
                tag: None,
                digest: None,
                error: Some(&why),
            });
            rec.error = Some(why);
            out.push(rec);
            continue;
        }
        let parts: Vec<(&str, &Fetched)> = members
            .iter()
            .zip(found.iter().flatten())
            .map(|(&i, s)| (man.cells[i].coordinates.platform.as_str(), &s.image))
            .collect();
        let (body, media_type) = index_body(&parts);
        let index = Fetched {
            digest: super::sha256_digest(&body),
            body,
            media_type: media_type.to_string(),
        };
        rec.digest = Some(index.digest.clone());
        rec.unchanged = true;
        for t in &tags {
            let p = move_tag(api, public, t, &index);
            rec.unchanged &= p.unchanged;
            listen(&Phase::Index {
                group: name,
                tag: Some(t),
                digest: p.error.is_none().then_some(index.digest.as_str()),
                error: p.error.as_deref(),
            });
            if let Some(e) = p.error {
                rec.error = Some(format!("{t}: {e}"));
                break;
            }
        }
        rec.ok = rec.error.is_none();
        all_ok &= rec.ok;
        out.push(rec);
    }
    (out, all_ok)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::manifest::{Staged, Verification};
    use crate::registry::fake::Fake;

    const REPO: &str = "reg.example:5000/ml/conda";
    const STAGING: &str = "reg.example:5000/ml/conda-staging";

    fn hex(d: &str) -> String {
        format!("sha256:{}", d.repeat(64))
    }

    /// Cell `solo` (tags `solo`, `solo-nightly`) and a tag group `g` of amd64 and
    /// arm64 members (tags `g`, `g-nightly`), each built, verified and staged.
    fn staged(reg: &Fake) -> Manifest {
        let mut m = Manifest::new("m.yaml", "0", None);
        m.repository = Some(REPO.into());
        for (id, platform, group, cfg) in [
            ("solo", "linux/amd64", None, "1"),
            ("g-amd64", "linux/amd64", Some("g"), "2"),
            ("g-arm64", "linux/arm64", Some("g"), "3"),
        ] {
            let mut c = crate::manifest::CellRecord::new(id, Default::default());
            c.coordinates.platform = platform.into();
            c.status = Status::Built;
            c.image_id = Some(hex(cfg));
            c.verification = Some(Verification {
                ok: true,
                ..Default::default()
            });
            let tag = group.unwrap_or(id);
            c.tags = vec![format!("{REPO}:{tag}"), format!("{REPO}:{tag}-nightly")];
            c.group = group.map(String::from);
            if group.is_some() {
                c.platform_tag = Some(format!("{REPO}:{id}"));
            }
            let digest = reg.image(STAGING, &hex(cfg), &hex(&format!("{cfg}f")[..1]));
            c.staged = Some(Staged {
                repository: STAGING.into(),
                tag: format!("{id}-x"),
                digest,
                config: hex(cfg),
            });
            m.cells.push(c);
        }
        m
    }

    fn opts() -> Options {
        Options {
            need_verified: true,
            allow_partial: false,
            platform_tags: false,
            signer: None,
            sbom_dir: None,
        }
    }

    fn run(reg: &Fake, m: &Manifest, o: &Options) -> Result<Published, String> {
        publish(reg, m, o, &|_| {})
    }

    #[test]
    fn tags_point_at_the_staged_digests_and_a_group_gets_one_index() {
        let reg = Fake::default();
        let m = staged(&reg);
        let p = run(&reg, &m, &opts()).unwrap();
        assert!(p.complete);
        let solo = m.cells[0].staged.as_ref().unwrap().digest.clone();
        assert_eq!(reg.tag_of(REPO, "solo"), Some(solo.clone()));
        assert_eq!(reg.tag_of(REPO, "solo-nightly"), Some(solo));
        let idx = reg.tag_of(REPO, "g").unwrap();
        assert_eq!(reg.tag_of(REPO, "g-nightly"), Some(idx.clone()));
        assert_eq!(p.indexes[0].digest.as_deref(), Some(idx.as_str()));
        let body = reg
            .manifest(&Repo::parse(REPO).unwrap(), &idx)
            .unwrap()
            .unwrap();
        let v: serde_json::Value = serde_json::from_slice(&body.body).unwrap();
        let archs: Vec<&str> = v["manifests"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e["platform"]["architecture"].as_str().unwrap())
            .collect();
        assert_eq!(archs, ["amd64", "arm64"]);
        // no platform tag in the public repository unless asked for
        assert_eq!(reg.tag_of(REPO, "g-arm64"), None);
        // blobs and members first, tags after, indexes last
        let writes = reg.writes.borrow().clone();
        let first_tag = writes
            .iter()
            .position(|w| w.ends_with(":solo") || w.ends_with(" solo"))
            .unwrap();
        assert!(
            writes[..first_tag]
                .iter()
                .all(|w| w.starts_with("mount ") || w.contains(" sha256:")),
            "{writes:?}"
        );
        assert!(writes.last().unwrap().ends_with(" g-nightly"), "{writes:?}");
    }

    #[test]
    fn a_second_publish_changes_nothing() {
        let reg = Fake::default();
        let m = staged(&reg);
        run(&reg, &m, &opts()).unwrap();
        let before = reg.writes.borrow().len();
        let p = run(&reg, &m, &opts()).unwrap();
        assert!(p.complete);
        assert_eq!(
            reg.writes.borrow().len(),
            before,
            "{:?}",
            reg.writes.borrow()
        );
        assert!(p.pushed.iter().all(|(_, x)| x.unchanged && x.ok));
        assert!(p.indexes.iter().all(|x| x.unchanged && x.ok));
    }

    #[test]
    fn a_publish_killed_between_two_tags_finishes_when_run_again() {
        let reg = Fake::default();
        let m = staged(&reg);
        *reg.fail_put_tag.borrow_mut() = Some(2);
        let p = run(&reg, &m, &opts()).unwrap();
        assert!(!p.complete);
        assert!(p.pushed.iter().any(|(_, x)| !x.ok));
        *reg.fail_put_tag.borrow_mut() = None;
        let p = run(&reg, &m, &opts()).unwrap();
        assert!(p.complete);
        assert!(p.pushed.iter().filter(|(_, x)| x.unchanged).count() >= 1);
        assert!(reg.tag_of(REPO, "solo-nightly").is_some() && reg.tag_of(REPO, "g").is_some());
    }

    #[test]
    fn a_digest_the_registry_lost_publishes_nothing() {
        let reg = Fake::default();
        let m = staged(&reg);
        reg.forget(STAGING, &m.cells[2].staged.as_ref().unwrap().digest);
        let e = run(&reg, &m, &opts()).unwrap_err();
        assert!(
            e.contains("no longer holds cell g-arm64") && e.contains("publishing nothing"),
            "{e}"
        );
        assert!(reg.writes.borrow().is_empty());
    }

    #[test]
    fn an_unverified_or_unstaged_cell_publishes_nothing_unless_partial() {
        let reg = Fake::default();
        let mut m = staged(&reg);
        m.cells[0].verification.as_mut().unwrap().ok = false;
        let e = run(&reg, &m, &opts()).unwrap_err();
        assert!(e.contains("did not build and verify (solo)"), "{e}");
        assert!(reg.writes.borrow().is_empty());
        m.cells[0].verification.as_mut().unwrap().ok = true;
        m.cells[1].staged = None;
        let e = run(&reg, &m, &opts()).unwrap_err();
        assert!(e.contains("not staged") && e.contains("g-amd64"), "{e}");
        assert!(reg.writes.borrow().is_empty());
        // partial: the rest goes out, the group with a member missing keeps its tags
        let p = run(
            &reg,
            &m,
            &Options {
                allow_partial: true,
                ..opts()
            },
        )
        .unwrap();
        assert!(!p.complete);
        assert!(reg.tag_of(REPO, "solo").is_some());
        assert_eq!(reg.tag_of(REPO, "g"), None);
        assert!(p.indexes[0]
            .error
            .as_deref()
            .unwrap()
            .contains("linux/amd64 not published"));
    }

    #[test]
    fn a_staged_image_that_is_not_the_one_built_is_refused() {
        let reg = Fake::default();
        let mut m = staged(&reg);
        // the staged record claims cell solo's config, but the digest is another image
        let other = reg.image(STAGING, &hex("9"), &hex("8"));
        m.cells[0].staged.as_mut().unwrap().digest = other;
        let e = run(&reg, &m, &opts()).unwrap_err();
        assert!(
            e.contains("holds the image") && e.contains("publishing nothing"),
            "{e}"
        );
        let mut m = staged(&reg);
        m.cells[0].image_id = Some(hex("7"));
        assert!(run(&reg, &m, &opts())
            .unwrap_err()
            .contains("not the image the cell built"));
        let mut m = staged(&reg);
        m.cells[0].staged.as_mut().unwrap().repository = "evil.example/x".into();
        assert!(run(&reg, &m, &opts())
            .unwrap_err()
            .contains("does not copy images between registries"));
        assert!(reg.writes.borrow().is_empty());
    }

    #[test]
    fn a_registry_that_refuses_publishes_nothing_and_says_why() {
        let reg = Fake::default();
        let m = staged(&reg);
        *reg.down.borrow_mut() =
            Some("reg.example:5000: the registry refused the credentials".into());
        let e = run(&reg, &m, &opts()).unwrap_err();
        assert!(
            e.contains("refused the credentials") && e.contains("publishing nothing"),
            "{e}"
        );
        assert!(reg.writes.borrow().is_empty());
    }

    #[test]
    fn platform_tags_only_when_asked() {
        let reg = Fake::default();
        let m = staged(&reg);
        run(
            &reg,
            &m,
            &Options {
                platform_tags: true,
                ..opts()
            },
        )
        .unwrap();
        assert_eq!(
            reg.tag_of(REPO, "g-arm64"),
            Some(m.cells[2].staged.as_ref().unwrap().digest.clone())
        );
    }

    #[test]
    fn every_published_digest_is_signed_once_and_checks() {
        let reg = Fake::default();
        let m = staged(&reg);
        let (sealed, public) = crate::signing::generate(b"pw").unwrap();
        let key = crate::signing::decrypt(&sealed, b"pw").unwrap();
        let o = Options {
            signer: Some(key),
            ..opts()
        };
        let p = run(&reg, &m, &o).unwrap();
        assert!(p.complete);
        // three images and one index
        assert_eq!(p.signatures.len(), 4, "{:?}", p.signatures);
        assert!(p.signatures.iter().all(|s| s.ok && !s.unchanged));
        let vk = crate::signing::load_public(&public).unwrap();
        let repo = Repo::parse(REPO).unwrap();
        for s in &p.signatures {
            assert_eq!(
                crate::registry::sign::check(&reg, &repo, &s.subject, &vk),
                Ok(1)
            );
        }
        // another key's check fails; a second publish signs nothing new
        let (_, other) = crate::signing::generate(b"").unwrap();
        let other = crate::signing::load_public(&other).unwrap();
        let e = crate::registry::sign::check(&reg, &repo, &p.signatures[0].subject, &other);
        assert!(e.unwrap_err().contains("not made by this key"));
        // each image's provenance, signed, names its matrix and base
        assert_eq!(p.attestations.len(), 3);
        for a in &p.attestations {
            let st = crate::registry::sign::attestations(&reg, &repo, &a.subject, &vk).unwrap();
            assert_eq!(st[0]["predicateType"], crate::provenance::PREDICATE_TYPE);
            assert!(crate::registry::sign::attestations(&reg, &repo, &a.subject, &other).is_err());
        }
        let again = run(&reg, &m, &o).unwrap();
        assert!(again.signatures.iter().all(|s| s.ok && s.unchanged));
        assert!(again.attestations.iter().all(|s| s.ok && s.unchanged));
    }
}
