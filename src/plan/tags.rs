//! Tags and ids: tag templates checked and expanded per cell, collisions refused, and
//! readable cell ids made unique from their coordinates.

use std::borrow::Cow;

use crate::plan::fast::{self, FastMap};

use sha2::{Digest, Sha256};

use crate::config::raw::{RawConfig, RawRule};
use crate::config::settings::Settings;
use crate::coord::{Key, Subject};
use crate::diag::{Diags, Pos, Sp};
use crate::plan::base::Base;
use crate::plan::family::Kind;
use crate::plan::{hex, rule_matches, Cell, GroupMember, TagGroup, Variant};
use crate::reference;

/// Every placeholder an `image.tag` (and, with `{tag}`, an alias) may use: the
/// coordinates, `{py}` (`py310`) after `{python}`, `{base_name}` (the base image's
/// own name and tag, `base-a` for `registry/team/base:a`, which tells apart two bases
/// of one OS) and `{date}`.
pub fn template_keys(alias: bool) -> Vec<&'static str> {
    let mut k: Vec<&'static str> = Key::names(Key::TEMPLATE)
        .into_iter()
        .filter(|n| Key::parse(n).is_none_or(|k| !Key::FRAMEWORK.contains(&k)))
        .collect();
    k.insert(1, "py");
    k.insert(4, "base_name");
    k.push("date");
    if alias {
        k.push("tag");
    }
    k
}

/// Check the matrix's tag templates: known placeholders, balanced braces.
pub fn check_templates(raw: &RawConfig, s: &Settings, d: &mut Diags) {
    check_template(
        raw.image.tag.as_ref(),
        &s.tag_template,
        "image.tag",
        &template_keys(false),
        d,
    );
    let mut framework_keys = template_keys(false);
    framework_keys.extend(Key::names(Key::FRAMEWORK));
    for (at, template, key) in [
        (
            raw.image.pytorch_tag.as_ref(),
            &s.pytorch_tag,
            "image.pytorch_tag",
        ),
        (
            raw.image.tensorflow_tag.as_ref(),
            &s.tensorflow_tag,
            "image.tensorflow_tag",
        ),
    ] {
        check_template(at, template, key, &framework_keys, d);
    }
    let alias_keys = template_keys(true);
    for (i, a) in raw.image.aliases.iter().enumerate() {
        let key = format!("image.aliases[{i}]");
        check_template(Some(a), &a.value, &key, &alias_keys, d);
        if a.value == "{tag}" || a.value == s.tag_template {
            d.error(
                Some(a.at),
                key,
                "this alias is the primary tag itself; an alias must add something (e.g. \"{tag}-{date}\")",
            );
        }
    }
}

pub fn check_template(
    at: Option<&Sp<String>>,
    template: &str,
    key: &str,
    allowed: &[&str],
    d: &mut Diags,
) {
    let pos = at.map(|a| a.at);
    let mut rest = template;
    while let Some(open) = rest.find('{') {
        let Some(close) = rest[open..].find('}') else {
            d.error(pos, key, format!("unclosed `{{` in `{template}`"));
            return;
        };
        let name = &rest[open + 1..open + close];
        if !allowed.contains(&name) {
            let hint = crate::diag::did_you_mean(name, allowed)
                .map(|s| format!("did you mean `{{{s}}}`? "))
                .unwrap_or_default();
            d.error(
                pos,
                key,
                format!(
                    "unknown placeholder `{{{name}}}` ({hint}expected one of: {})",
                    allowed
                        .iter()
                        .map(|a| format!("{{{a}}}"))
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
            );
        }
        rest = &rest[open + close + 1..];
    }
    if rest.contains('}') {
        d.error(pos, key, format!("unmatched `}}` in `{template}`"));
    }
}

/// Fill a template's `{placeholders}`.
pub fn expand<'a>(template: &str, values: &dyn Fn(&str) -> Cow<'a, str>) -> String {
    let mut out = String::with_capacity(template.len() + 32);
    let mut rest = template;
    while let Some(open) = rest.find('{') {
        out.push_str(&rest[..open]);
        match rest[open..].find('}') {
            Some(close) => {
                out.push_str(&values(&rest[open + 1..open + close]));
                rest = &rest[open + close + 1..];
            }
            None => {
                out.push_str(&rest[open..]);
                rest = "";
            }
        }
    }
    out.push_str(rest);
    out
}

/// `registry/team/base:a` → `base-a`: characters a tag may hold.
pub fn base_name(reference: &str) -> String {
    let (name, tag, _) = reference::split(reference);
    let last = name.rsplit('/').next().unwrap_or(name);
    let s = match tag {
        Some(t) => format!("{last}-{t}"),
        None => last.to_string(),
    };
    s.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '.' || c == '-' || c == '_' {
                c
            } else {
                '-'
            }
        })
        .collect()
}

/// A placeholder's value for one cell; `slug` is its base's `{base}` (worked out once
/// per base).
fn tag_value<'a>(c: &'a Cell, key: &str, date: &'a str, slug: &'a str) -> Cow<'a, str> {
    match key {
        "py" => Cow::Owned(c.python.tag()),
        "date" => Cow::Borrowed(date),
        "base_name" => Cow::Owned(base_name(&c.base.reference)),
        "base" => Cow::Borrowed(slug),
        "version" => c
            .custom
            .as_ref()
            .and_then(|l| l.version.as_deref())
            .map_or(Cow::Borrowed(""), Cow::Borrowed),
        other => match Key::parse(other) {
            Some(k) => c.coord.template_text(k),
            // an ancestor family's release
            None => c
                .coord
                .families
                .get(other)
                .map_or(Cow::Borrowed(""), |v| Cow::Borrowed(v.as_str())),
        },
    }
}

/// One cell's tags as its templates make them, or why they cannot be.
struct Expanded {
    /// The primary tag and aliases (full references), or why the primary tag is not a
    /// valid tag.
    tags: Result<Vec<String>, String>,
    /// Aliases that cannot be: (index in `image.aliases`, why).
    alias_errors: Vec<(usize, String)>,
}

fn expand_cell(c: &Cell, s: &Settings, date: &str, slug: &str) -> Expanded {
    let template = template_of(c, s);
    let tag = expand(template, &|k| tag_value(c, k, date, slug));
    if let Err(e) = reference::check_tag(&tag) {
        return Expanded {
            tags: Err(format!("cell {}: {e}", c.id)),
            alias_errors: Vec::new(),
        };
    }
    let repository = repository_of(c, s);
    let mut tags = vec![format!("{repository}:{tag}")];
    let mut alias_errors = Vec::new();
    for (i, a) in s.alias_templates.iter().enumerate() {
        let alias = expand(a, &|k| {
            if k == "tag" {
                Cow::Borrowed(tag.as_str())
            } else {
                tag_value(c, k, date, slug)
            }
        });
        // an alias that is the primary tag by its very template is reported once,
        // by check_templates
        let literal = a == "{tag}" || *a == s.tag_template;
        match reference::check_tag(&alias) {
            Ok(()) if alias == tag && literal => {}
            Ok(()) if alias == tag => alias_errors.push((
                i,
                format!(
                    "cell {}: the alias `{alias}` is the primary tag itself",
                    c.id
                ),
            )),
            Ok(()) => tags.push(format!("{repository}:{alias}")),
            Err(e) => alias_errors.push((i, format!("cell {}: {e}", c.id))),
        }
    }
    Expanded {
        tags: Ok(tags),
        alias_errors,
    }
}

/// Expand the primary tag and aliases of every cell; refuse invalid and colliding
/// tags, naming the two cells and the line of the template. Each cell's expansion is
/// its own (they run in parallel); the checks across cells follow, in cell order.
pub fn assign(cells: &mut [Cell], s: &Settings, raw: &RawConfig, date: &str, d: &mut Diags) {
    use rayon::prelude::*;
    let tag_at = raw.image.tag.as_ref().map(|t| t.at);
    let mut slugs: FastMap<&str, String> = FastMap::default();
    for c in cells.iter() {
        if !slugs.contains_key(c.base.reference.as_str()) {
            slugs.insert(&c.base.reference, c.coord.base_slug());
        }
    }
    let expanded: Vec<Expanded> = cells
        .par_iter()
        .map(|c| expand_cell(c, s, date, &slugs[c.base.reference.as_str()]))
        .collect();
    drop(slugs);
    let mut owners: FastMap<&str, usize> = fast::map_with_capacity(cells.len());
    let mut reported = 0;
    for (i, e) in expanded.iter().enumerate() {
        let c = &cells[i];
        let tag_at = match (c.framework.as_ref().map(|f| f.name), &c.custom) {
            (_, Some(l)) => l.tag_at().or(tag_at),
            (None, None) => tag_at,
            (Some(Kind::Pytorch), None) => raw.image.pytorch_tag.as_ref().map(|t| t.at),
            (Some(Kind::Tensorflow), None) => raw.image.tensorflow_tag.as_ref().map(|t| t.at),
        };
        let tags = match &e.tags {
            Ok(tags) => tags,
            Err(msg) => {
                if reported < 5 {
                    d.error(tag_at, "image.tag", msg.as_str());
                }
                reported += 1;
                continue;
            }
        };
        for (a, msg) in &e.alias_errors {
            let alias_at = raw.image.aliases.get(*a).map(|a| a.at);
            d.error(alias_at, format!("image.aliases[{a}]"), msg.as_str());
        }
        for t in tags {
            match owners.get(t.as_str()).copied() {
                // cells that differ only in platform share their tags: a tag group
                Some(other) if other != i && !only_platform_differs(&cells[other], c) => {
                    // the template that made it: the primary tag's, or an alias's
                    let alias = (t != &tags[0])
                        .then(|| alias_index(c, s, date, t))
                        .flatten();
                    let field = alias.map_or_else(
                        || "image.tag".to_string(),
                        |k| format!("image.aliases[{k}]"),
                    );
                    let (at, msg) = collision(t, &cells[other], c, raw, &field);
                    let template_at = match alias {
                        Some(k) => raw.image.aliases.get(k).map(|a| a.at),
                        None => tag_at,
                    };
                    d.error(template_at.or(at), field, msg);
                }
                Some(_) => {}
                None => {
                    owners.insert(t, i);
                }
            }
        }
    }
    let latest_owner = owners
        .get(format!("{}:latest", s.repository).as_str())
        .copied();
    drop(owners);
    for (c, e) in cells.iter_mut().zip(expanded) {
        if let Ok(tags) = e.tags {
            c.tags = tags;
        }
    }
    group(cells, d, tag_at);
    if reported > 5 {
        d.error(
            tag_at,
            "image.tag",
            format!("…and {} more cells with an invalid tag", reported - 5),
        );
    }
    if let Some(rule) = &raw.image.latest {
        latest(cells, s, rule, latest_owner, d);
    }
}

/// The wheel variant follows from the platform (for one release, base and Python: the
/// package index's x86_64 TensorFlow is its CUDA build, its aarch64 one a CPU build), so
/// it is not a difference of its own.
fn only_platform_differs(a: &Cell, b: &Cell) -> bool {
    let rest = |c: &Cell| crate::coord::Coordinate {
        platform: String::new(),
        cuda_wheel: None,
        ..c.coord.clone()
    };
    a.coord.platform != b.coord.platform && rest(a) == rest(b)
}

/// Tag groups: cells with one primary tag (they differ only in platform). Each member
/// gets its platform tag (`REPO:TAG-arm64`) and knows every member.
fn group(cells: &mut [Cell], d: &mut Diags, tag_at: Option<Pos>) {
    // members differ in platform: with one platform there are none to look for
    if cells.iter().all(|c| c.platform() == cells[0].platform()) {
        return;
    }
    let mut by_tag: Vec<Vec<usize>> = Vec::new();
    let mut index: FastMap<&str, usize> = fast::map_with_capacity(cells.len());
    for (i, c) in cells.iter().enumerate() {
        if let Some(t) = c.tags.first() {
            let n = by_tag.len();
            let g = *index.entry(t).or_insert(n);
            if g == n {
                by_tag.push(Vec::new());
            }
            by_tag[g].push(i);
        }
    }
    drop(index);
    // only groups of two or more platforms are tag groups (most matrices have none)
    let groups: Vec<(String, Vec<usize>)> = by_tag
        .into_iter()
        .filter(|m| m.len() > 1)
        .map(|m| (cells[m[0]].tags[0].clone(), m))
        .collect();
    if groups.is_empty() {
        return;
    }
    let all_tags: fast::FastSet<String> =
        cells.iter().flat_map(|c| c.tags.iter().cloned()).collect();
    for (primary, members) in &groups {
        let first = &cells[members[0]];
        if let Some(&odd) = members[1..].iter().find(|&&m| cells[m].tags != first.tags) {
            d.error(
                tag_at,
                "image.tag",
                format!(
                    "cells {} and {} share the tag `{primary}` but not all their tags; a tag group's platforms share every tag (use `{{arch}}` in all of `image.tag` and `image.aliases` or in none)",
                    first.id, cells[odd].id
                ),
            );
            continue;
        }
        let name = primary
            .rsplit_once(':')
            .map_or(primary.as_str(), |(_, t)| t);
        let group_members: Vec<GroupMember> = members
            .iter()
            .map(|&m| GroupMember {
                id: cells[m].id.clone(),
                platform: cells[m].platform().to_string(),
                arch: cells[m].arch().to_string(),
                installer: (*cells[m].installer).clone(),
            })
            .collect();
        for &m in members {
            let c = &mut cells[m];
            let arch = c.platform().rsplit('/').next().unwrap_or("").to_string();
            let pt = format!("{primary}-{arch}");
            let valid = pt.rsplit_once(':').map(|(_, t)| reference::check_tag(t));
            if !matches!(valid, Some(Ok(()))) {
                d.error(
                    tag_at,
                    "image.tag",
                    format!(
                        "cell {}: its platform tag `{pt}` is not a valid tag (at most 128 characters); shorten `image.tag`",
                        c.id
                    ),
                );
            } else if all_tags.contains(&pt) {
                d.error(
                    tag_at,
                    "image.tag",
                    format!(
                        "cell {}: its platform tag `{pt}` is also another cell's tag; change `image.tag` so that no tag ends in a platform's `-{arch}`",
                        c.id
                    ),
                );
            }
            c.group = Some(TagGroup {
                name: name.to_string(),
                platform_tag: pt,
                members: group_members.clone(),
            });
        }
    }
}

/// Two cells make one tag: say how they differ, which placeholder tells them apart,
/// and where that axis is written (the template's own line when the file has one).
/// Which alias template made `tag` for cell `c` (collisions are rare: worked out again
/// only for them).
fn alias_index(c: &Cell, s: &Settings, date: &str, tag: &str) -> Option<usize> {
    let slug = c.coord.base_slug();
    let template = template_of(c, s);
    let primary = expand(template, &|k| tag_value(c, k, date, &slug));
    s.alias_templates.iter().position(|a| {
        let alias = expand(a, &|k| {
            if k == "tag" {
                Cow::Borrowed(primary.as_str())
            } else {
                tag_value(c, k, date, &slug)
            }
        });
        format!("{}:{alias}", repository_of(c, s)) == tag
    })
}

/// The repository of a cell's tags: a framework image's own (`image.pytorch_repository`)
/// where it has one, else the matrix's.
pub fn repository_of<'a>(c: &'a Cell, s: &'a Settings) -> &'a str {
    if let Some(l) = &c.custom {
        return l.repository();
    }
    let own = match c.framework.as_ref().map(|f| f.name) {
        None => None,
        Some(Kind::Pytorch) => s.pytorch_repository.as_deref(),
        Some(Kind::Tensorflow) => s.tensorflow_repository.as_deref(),
    };
    own.unwrap_or(&s.repository)
}

/// The tag template of a cell: its family's, its framework's, or the matrix's.
fn template_of<'a>(c: &'a Cell, s: &'a Settings) -> &'a str {
    if let Some(l) = &c.custom {
        return l.tag_template();
    }
    match c.framework.as_ref().map(|f| f.name) {
        None => &s.tag_template,
        Some(Kind::Pytorch) => &s.pytorch_tag,
        Some(Kind::Tensorflow) => &s.tensorflow_tag,
    }
}

fn collision(tag: &str, a: &Cell, b: &Cell, raw: &RawConfig, field: &str) -> (Option<Pos>, String) {
    let axes = [
        (Key::Variant, "{variant}"),
        (Key::Platform, "{arch}"),
        (Key::Miniconda, "{miniconda}"),
        (Key::Base, "{base}"),
        (Key::Python, "{python}"),
    ];
    // the axes on which they differ in a way a placeholder would show
    let differ: Vec<&(Key, &str)> = axes
        .iter()
        .filter(|(k, _)| match k {
            Key::Base => a.coord.base_slug() != b.coord.base_slug(),
            k => a.coord.value(*k) != b.coord.value(*k),
        })
        .collect();
    let Some((key, placeholder)) = differ.first().copied() else {
        let hint = if a.coord.base != b.coord.base {
            format!(
                ", whose bases ({} and {}) name the same OS; add {{base_name}} to `{field}`",
                a.coord.base, b.coord.base
            )
        } else {
            "; add a placeholder that tells them apart".to_string()
        };
        // the second base of the two names the same OS: point at it
        let at = raw
            .bases
            .iter()
            .find(|x| x.image.value == b.coord.base)
            .map(|x| x.image.at);
        return (
            at,
            format!(
                "tag `{tag}` is made by both cell {} and cell {}{hint}",
                a.id, b.id
            ),
        );
    };
    let (va, vb) = (
        a.coord.value(*key).unwrap_or_default(),
        b.coord.value(*key).unwrap_or_default(),
    );
    let at = match key {
        Key::Variant => raw
            .variants
            .iter()
            .find(|v| v.name.value == vb)
            .map(|v| v.name.at),
        Key::Platform => raw.platforms.iter().find(|p| p.value == vb).map(|p| p.at),
        Key::Base => raw
            .bases
            .iter()
            .find(|x| x.image.value == vb)
            .map(|x| x.image.at),
        _ => raw
            .python
            .iter()
            .find(|p| p.version.value == b.coord.python)
            .map(|p| p.version.at),
    };
    (
        at,
        format!(
            "tag `{tag}` is made by both cell {} and cell {}, which differ {}in {} ({va} and {vb}); add {placeholder} to `{field}`",
            a.id,
            b.id,
            if differ.len() == 1 { "only " } else { "" },
            key.name()
        ),
    )
}

fn latest(
    cells: &mut [Cell],
    s: &Settings,
    rule: &RawRule,
    latest_owner: Option<usize>,
    d: &mut Diags,
) {
    let hits: Vec<usize> = cells
        .iter()
        .enumerate()
        .filter(|(_, c)| rule_matches(rule, c.coordinate()))
        .map(|(i, _)| i)
        .collect();
    match hits.as_slice() {
        [one] => {
            let t = format!("{}:latest", repository_of(&cells[*one], s));
            if let Some(other) = latest_owner {
                d.error(
                    Some(rule.at),
                    "image.latest",
                    format!("`latest` is already made by cell {}", cells[other].id),
                );
            }
            cells[*one].tags.push(t);
        }
        [] => d.error(
            Some(rule.at),
            "image.latest",
            "this selector matches no cell; `latest` must name exactly one",
        ),
        many => d.error(
            Some(rule.at),
            "image.latest",
            format!(
                "this selector matches {} cells ({}); `latest` must name exactly one",
                many.len(),
                many.iter()
                    .map(|i| cells[*i].id.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        ),
    }
}

/// `py3.10-cuda12.1.0-cudnn8-devel-ubuntu22.04-amd64`, plus `-VARIANT` for named variants.
pub fn cell_id(py: &str, base: &Base, variant: &Variant, platform: &str) -> String {
    let arch = platform.rsplit('/').next().unwrap_or(platform);
    let slug = base.slug();
    let mut id = String::with_capacity(4 + py.len() + slug.len() + arch.len() + variant.name.len());
    for part in ["py", py, "-", slug, "-", arch] {
        id.push_str(part);
    }
    if variant.name != "default" {
        id.push('-');
        id.push_str(&variant.name);
    }
    id
}

/// Cells whose readable ids collide (same Python, OS slug, arch and variant) get the
/// Miniconda release and, if still needed, a short hash of the base reference: both
/// are coordinates, so ids stay independent of the order of the YAML.
pub fn disambiguate_ids(cells: &mut [Cell]) {
    for round in 0..2 {
        let mut count: FastMap<&str, usize> = fast::map_with_capacity(cells.len());
        for c in cells.iter() {
            *count.entry(&c.id).or_default() += 1;
        }
        let shared: Vec<bool> = cells.iter().map(|c| count[c.id.as_str()] > 1).collect();
        drop(count);
        if !shared.contains(&true) {
            return;
        }
        for (c, _) in cells.iter_mut().zip(shared).filter(|(_, s)| *s) {
            if round == 0 {
                c.id = format!("{}-conda{}", c.id, c.miniconda);
            } else {
                let h = hex(&Sha256::digest(c.base.reference.as_bytes()));
                c.id = format!("{}-{}", c.id, &h[..6]);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base_names_tell_bases_of_one_os_apart() {
        assert_eq!(base_name("registry.corp:5000/team/base:a"), "base-a");
        assert_eq!(
            base_name("nvidia/cuda:12.4.1-cudnn-devel-ubuntu22.04"),
            "cuda-12.4.1-cudnn-devel-ubuntu22.04"
        );
        assert_eq!(base_name("local/base"), "base");
    }

    #[test]
    fn templates_expand_known_placeholders() {
        let v = |k: &str| match k {
            "python" => Cow::Borrowed("3.10"),
            _ => Cow::Borrowed(""),
        };
        assert_eq!(expand("py{python}-x", &v), "py3.10-x");
        assert_eq!(expand("no braces", &v), "no braces");
        assert_eq!(expand("open {python", &v), "open {python");
    }
}
