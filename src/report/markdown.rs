//! The Markdown summary of a run (for `$GITHUB_STEP_SUMMARY`), and the facts about a
//! run that both documents state: the status word of a cell (`verify-failed` for an
//! image that built but failed its verification), totals, the outcome, the wall time,
//! the grid of bases × Python × variant, and what changed since a previous manifest.
//! The HTML page ([`super::html`]) takes these facts from here, so the two documents
//! never disagree.
//!
//! Every string from the manifest reaches the Markdown through [`text`] or [`fenced`]:
//! a `|` or a newline in a reason cannot break a table, and markup in it stays text.

use std::cmp::Ordering;
use std::fmt::Write;
use std::time::Duration;

use crate::manifest::{CellRecord, Manifest, RunOutcome};

/// Every status word a cell can show, in the order totals list them.
pub const WORDS: &[&str] = &[
    "built",
    "up-to-date",
    "verify-failed",
    "failed",
    "timed-out",
    "cancelled",
    "not-started",
    "excluded",
];

/// The status word of a cell: its status, except that an image which built (or was
/// up to date) but failed verification is `verify-failed`, since it was not published.
pub fn word(c: &CellRecord) -> &'static str {
    if c.status.succeeded() && c.verification.as_ref().is_some_and(|v| !v.ok) {
        "verify-failed"
    } else {
        c.status.as_str()
    }
}

/// Whether a status word is a failure someone has to look at.
pub fn is_failure(word: &str) -> bool {
    matches!(word, "failed" | "timed-out" | "verify-failed")
}

/// Why a cell did not end well, in one line: its reason, or the checks that failed.
pub fn why(c: &CellRecord) -> Option<String> {
    if let Some(r) = &c.reason {
        return Some(r.clone());
    }
    let v = c.verification.as_ref().filter(|v| !v.ok)?;
    let failed: Vec<String> = v
        .checks
        .iter()
        .filter(|k| !k.ok)
        .map(|k| format!("{}: {}", k.name, k.detail))
        .collect();
    Some(if failed.is_empty() {
        "verification failed".to_string()
    } else {
        format!("verification failed: {}", failed.join("; "))
    })
}

/// How many cells show each status word (words with none left out), in [`WORDS`] order.
pub fn totals(m: &Manifest) -> Vec<(&'static str, usize)> {
    WORDS
        .iter()
        .map(|w| (*w, m.cells.iter().filter(|c| word(c) == *w).count()))
        .filter(|(_, n)| *n > 0)
        .collect()
}

/// How the run ended, in words.
pub fn outcome(m: &Manifest) -> String {
    match &m.outcome {
        Some(RunOutcome::Completed) => "completed".into(),
        Some(RunOutcome::Interrupted { signal }) => format!("interrupted by {signal}"),
        Some(RunOutcome::FailedFast) => "failed fast (stopped after the first failure)".into(),
        Some(RunOutcome::EnginesLost) => "engines lost (every engine went down)".into(),
        None => "unfinished (no outcome recorded: still running, or killed)".into(),
    }
}

/// `STARTED → FINISHED (4m 12s)`, or what is known of it.
pub fn wall_time(m: &Manifest) -> String {
    let Some(finished) = &m.finished else {
        return format!("{} → not finished", m.started);
    };
    let took = humantime::parse_rfc3339_weak(&m.started)
        .ok()
        .zip(humantime::parse_rfc3339_weak(finished).ok())
        .and_then(|(a, b)| b.duration_since(a).ok());
    match took {
        Some(d) => format!("{} → {finished} ({})", m.started, duration(d.as_secs_f64())),
        None => format!("{} → {finished}", m.started),
    }
}

/// `12.3s` under a minute, else `4m 12s`.
pub fn duration(seconds: f64) -> String {
    let s = if seconds.is_finite() {
        seconds.max(0.0)
    } else {
        0.0
    };
    if s < 60.0 {
        format!("{s:.1}s")
    } else {
        humantime::format_duration(Duration::from_secs(s.round() as u64)).to_string()
    }
}

/// `1.2 GB`: decimal units, as `docker image ls` prints them.
pub fn size(bytes: u64) -> String {
    const UNITS: &[&str] = &["kB", "MB", "GB", "TB", "PB"];
    if bytes < 1000 {
        return format!("{bytes} B");
    }
    let mut v = bytes as f64 / 1000.0;
    let mut unit = UNITS[0];
    for u in &UNITS[1..] {
        if v < 1000.0 {
            break;
        }
        v /= 1000.0;
        unit = u;
    }
    format!("{v:.1} {unit}")
}

/// What an image of a tree is, told apart from the others of its grid slot: its
/// family and release (`serve 0.1.0`), its framework (`torch 2.5.1`), or its Miniconda
/// (`Miniconda 24.5.0-0`).
pub fn layer_name(c: &CellRecord) -> String {
    let k = &c.coordinates;
    if let Some(f) = &k.family {
        return match k.families.get(f).filter(|v| !v.is_empty()) {
            Some(v) => format!("{f} {v}"),
            None => f.clone(),
        };
    }
    match (&k.torch, &k.tf) {
        (Some(v), _) => format!("torch {v}"),
        (None, Some(v)) => format!("tf {v}"),
        (None, None) => format!("Miniconda {}", k.miniconda),
    }
}

/// An image ID as `docker image ls` shows it: 12 hex digits, without `sha256:`.
pub fn short_id(id: &str) -> String {
    id.strip_prefix("sha256:")
        .unwrap_or(id)
        .chars()
        .take(12)
        .collect()
}

/// Versions in numeric order (`3.8` < `3.10`); non-numeric parts compare as text.
pub fn version_cmp(a: &str, b: &str) -> Ordering {
    let parts = |s: &'_ str| -> Vec<String> {
        s.split(['.', '-', '_'])
            .map(str::to_string)
            .collect::<Vec<_>>()
    };
    let (pa, pb) = (parts(a), parts(b));
    for (x, y) in pa.iter().zip(&pb) {
        let o = match (x.parse::<u64>(), y.parse::<u64>()) {
            (Ok(i), Ok(j)) => i.cmp(&j),
            (Ok(_), Err(_)) => Ordering::Less,
            (Err(_), Ok(_)) => Ordering::Greater,
            (Err(_), Err(_)) => x.cmp(y),
        };
        if o != Ordering::Equal {
            return o;
        }
    }
    pa.len().cmp(&pb.len()).then_with(|| a.cmp(b))
}

/// One column of the grid.
pub struct Column<'a> {
    pub python: &'a str,
    pub variant: &'a str,
}

/// One row of the grid: a base (and a platform, when the run has several), with the
/// cells of each column (usually one; several when only the Miniconda release differs).
pub struct Row<'a> {
    /// The row's first cell: its base, os, cuda and platform name the row.
    pub first: &'a CellRecord,
    pub slots: Vec<Vec<&'a CellRecord>>,
}

/// Bases (× platforms) down, Python × variant across, each manifest cell in exactly one slot.
pub struct Grid<'a> {
    pub columns: Vec<Column<'a>>,
    /// More than one variant: the header names them under each Python.
    pub variants: bool,
    /// More than one platform: rows are split by platform.
    pub platforms: bool,
    pub rows: Vec<Row<'a>>,
}

/// The grid of a manifest: CPU bases, then CUDA bases (by OS and CUDA version), down;
/// Pythons sorted as versions, variants `default` first, then as they first appear.
pub fn grid(m: &Manifest) -> Grid<'_> {
    let mut variants: Vec<&str> = Vec::new();
    let mut platforms: Vec<&str> = Vec::new();
    let mut columns: Vec<Column> = Vec::new();
    for c in &m.cells {
        let k = &c.coordinates;
        if !variants.contains(&k.variant.as_str()) {
            variants.push(&k.variant);
        }
        if !platforms.contains(&k.platform.as_str()) {
            platforms.push(&k.platform);
        }
        if !columns
            .iter()
            .any(|col| col.python == k.python && col.variant == k.variant)
        {
            columns.push(Column {
                python: &k.python,
                variant: &k.variant,
            });
        }
    }
    // `default` first (the image without extras), the others as they come
    let rank = |v: &str| {
        (
            v != "default",
            variants.iter().position(|x| *x == v).unwrap_or(usize::MAX),
        )
    };
    columns.sort_by(|a, b| {
        version_cmp(a.python, b.python).then_with(|| rank(a.variant).cmp(&rank(b.variant)))
    });
    let split = platforms.len() > 1;
    let mut rows: Vec<Row> = Vec::new();
    for c in &m.cells {
        let k = &c.coordinates;
        let same = |r: &&mut Row| {
            let f = &r.first.coordinates;
            f.base == k.base && (!split || f.platform == k.platform)
        };
        let col = columns
            .iter()
            .position(|x| x.python == k.python && x.variant == k.variant)
            .unwrap_or(0);
        if let Some(r) = rows.iter_mut().find(same) {
            r.slots[col].push(c);
        } else {
            let mut slots = vec![Vec::new(); columns.len()];
            slots[col].push(c);
            rows.push(Row { first: c, slots });
        }
    }
    // CPU bases before CUDA ones, each by OS, then CUDA version, reference, platform
    rows.sort_by(|a, b| {
        let (x, y) = (&a.first.coordinates, &b.first.coordinates);
        let cuda = |k: &crate::coord::Coordinate| k.cuda.clone().unwrap_or_default();
        x.cuda
            .is_some()
            .cmp(&y.cuda.is_some())
            .then_with(|| version_cmp(&x.os, &y.os))
            .then_with(|| version_cmp(&cuda(x), &cuda(y)))
            .then_with(|| x.base.cmp(&y.base))
            .then_with(|| x.platform.cmp(&y.platform))
    });
    Grid {
        columns,
        variants: variants.len() > 1,
        platforms: split,
        rows,
    }
}

/// A cell whose value moved since the previous run: `from` → `to`.
pub struct Moved<'a> {
    pub cell: &'a CellRecord,
    pub from: String,
    pub to: String,
}

/// What changed between a previous manifest and this one.
pub struct Changes<'a> {
    /// When the previous run started.
    pub since: &'a str,
    pub new: Vec<&'a CellRecord>,
    pub removed: Vec<&'a CellRecord>,
    /// Status words that changed (`built` ↔ `up-to-date` does not count).
    pub status: Vec<Moved<'a>>,
    /// The cell's image is another one (a rebuild, or a first image).
    pub image: Vec<Moved<'a>>,
    /// The base reference resolved to another digest.
    pub base: Vec<Moved<'a>>,
    /// Tags the cell has now and did not have, and tags this run moved to it (unless
    /// the previous run moved the same ones).
    pub tags: Vec<(&'a CellRecord, Vec<&'a str>)>,
}

impl Changes<'_> {
    pub fn is_empty(&self) -> bool {
        self.new.is_empty()
            && self.removed.is_empty()
            && self.status.is_empty()
            && self.image.is_empty()
            && self.base.is_empty()
            && self.tags.is_empty()
    }
}

/// What changed since `previous`, cell by cell (matched by id).
pub fn changes<'a>(previous: &'a Manifest, m: &'a Manifest) -> Changes<'a> {
    let find = |id: &str| previous.cells.iter().find(|p| p.id == id);
    let mut ch = Changes {
        since: &previous.started,
        new: Vec::new(),
        removed: previous
            .cells
            .iter()
            .filter(|p| !m.cells.iter().any(|c| c.id == p.id))
            .collect(),
        status: Vec::new(),
        image: Vec::new(),
        base: Vec::new(),
        tags: Vec::new(),
    };
    let moved = |cell, from: &str, to: &str| Moved {
        cell,
        from: from.to_string(),
        to: to.to_string(),
    };
    for c in &m.cells {
        let Some(p) = find(&c.id) else {
            ch.new.push(c);
            continue;
        };
        // built ↔ up-to-date is the same good image, rebuilt or not: not news (a
        // rebuild shows as a changed image)
        let good = |w: &str| matches!(w, "built" | "up-to-date");
        if word(p) != word(c) && !(good(word(p)) && good(word(c))) {
            ch.status.push(moved(c, word(p), word(c)));
        }
        if let Some(now) = c.image_id.as_deref().filter(|_| c.image_id != p.image_id) {
            let before = p.image_id.as_deref().map_or("none".into(), short_id);
            ch.image.push(moved(c, &before, &short_id(now)));
        }
        if let (Some(a), Some(b)) = (&p.base_digest, &c.base_digest) {
            if a != b {
                ch.base.push(moved(c, &short_id(a), &short_id(b)));
            }
        }
        let mut added: Vec<&str> = c
            .tags
            .iter()
            .filter(|t| !p.tags.contains(t))
            .map(String::as_str)
            .collect();
        for t in &c.tags_added {
            if !added.contains(&t.as_str()) && !p.tags_added.contains(t) {
                added.push(t);
            }
        }
        if !added.is_empty() {
            ch.tags.push((c, added));
        }
    }
    ch
}

/// A string from the manifest as Markdown text: punctuation that would format is
/// backslash-escaped, `<`/`>`/`&` become entities (no raw HTML), and a newline becomes
/// `<br>`, so that it cannot end a table row.
pub fn text(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 8);
    for ch in s.chars() {
        match ch {
            '\r' => {}
            '\n' => out.push_str("<br>"),
            '\\' | '`' | '*' | '_' | '[' | ']' | '|' | '#' | '~' | '!' | '{' | '}' => {
                out.push('\\');
                out.push(ch);
            }
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '&' => out.push_str("&amp;"),
            c if c.is_control() => out.push(' '),
            c => out.push(c),
        }
    }
    out
}

/// A fenced code block around `s` whose fence is longer than any run of backticks in
/// it, so nothing inside can close it.
pub fn fenced(s: &str, lang: &str) -> String {
    let clean: String = s
        .chars()
        .filter(|c| *c == '\n' || *c == '\t' || !c.is_control())
        .collect();
    let mut longest = 0;
    let mut run = 0;
    for c in clean.chars() {
        run = if c == '`' { run + 1 } else { 0 };
        longest = longest.max(run);
    }
    let fence = "`".repeat((longest + 1).max(3));
    format!("{fence}{lang}\n{}\n{fence}\n", clean.trim_end_matches('\n'))
}

fn emoji(word: &str) -> &'static str {
    match word {
        "built" => "✅",
        "up-to-date" => "☑️",
        "verify-failed" => "⚠️",
        "failed" => "❌",
        "timed-out" => "⏱️",
        "cancelled" => "🚫",
        "not-started" => "⏸️",
        _ => "➖",
    }
}

/// The summary of a run in GitHub-flavoured Markdown.
pub fn summary(m: &Manifest, previous: Option<&Manifest>) -> String {
    summary_with(m, previous, None)
}

/// [`summary`], with what changed in the cells' packages since `previous` (read from
/// both runs' SBOMs).
pub fn summary_with(
    m: &Manifest,
    previous: Option<&Manifest>,
    packages: Option<&crate::sbom::diff::Changes>,
) -> String {
    let mut s = String::new();
    head(&mut s, m);
    if let Some(p) = previous {
        changes_since(&mut s, &changes(p, m));
    }
    if let Some(ch) = packages {
        package_changes(&mut s, ch);
    }
    grid_table(&mut s, &grid(m));
    sbom_table(&mut s, m);
    indexes(&mut s, m);
    not_built(&mut s, m);
    failures(&mut s, m);
    s
}

/// What changed in each cell's packages, bounded per cell.
fn package_changes(s: &mut String, ch: &crate::sbom::diff::Changes) {
    s.push_str("### Package changes (from the SBOMs)\n\n");
    if ch.cells.is_empty() && ch.not_compared.is_empty() {
        s.push_str("No package changed.\n\n");
        return;
    }
    for c in &ch.cells {
        let _ = writeln!(s, "- **{}**", text(&c.cell));
        for (what, n, list) in super::packages::lines(c, version_cmp) {
            let _ = writeln!(s, "  - {what} ({n}): {}", text(&list));
        }
    }
    for (id, why) in &ch.not_compared {
        let _ = writeln!(s, "- {}: not compared: {}", text(id), text(why));
    }
    s.push('\n');
}

/// Each cell's SBOM: its package counts and file, or why there is none.
fn sbom_table(s: &mut String, m: &Manifest) {
    if !m.cells.iter().any(|c| c.sbom.is_some()) {
        return;
    }
    s.push_str("### Packages (SBOM)\n\n| cell | dpkg | conda | pip | SBOM | notes |\n|---|---|---|---|---|---|\n");
    for c in &m.cells {
        let Some(sb) = &c.sbom else { continue };
        let p = &sb.packages;
        let file = match (super::packages::link(sb), sb.path.as_deref()) {
            (Some(l), _) => format!("[{}]({l})", text(l)),
            (None, Some(x)) => text(x),
            (None, None) => "none".to_string(),
        };
        let notes: Vec<String> = sb.notes.iter().map(|n| text(n)).collect();
        let _ = writeln!(
            s,
            "| {} | {} | {} | {} | {file} | {} |",
            text(&c.id),
            p.dpkg,
            p.conda,
            p.pip,
            notes.join("<br>")
        );
    }
    s.push('\n');
}

/// The image indexes push made (multi-platform tag groups).
fn indexes(s: &mut String, m: &Manifest) {
    if m.indexes.is_empty() {
        return;
    }
    s.push_str("### Image indexes\n\n| tag group | result | platforms |\n|---|---|---|\n");
    for x in &m.indexes {
        let result = match (&x.digest, x.ok) {
            (Some(d), true) => format!("✅ pushed `{}`", text(d)),
            _ => format!("❌ {}", text(x.error.as_deref().unwrap_or("not pushed"))),
        };
        let platforms: Vec<String> = x
            .platforms
            .iter()
            .map(|e| {
                format!(
                    "{} `{}`",
                    text(&e.platform),
                    text(e.digest.as_deref().unwrap_or("not pushed"))
                )
            })
            .collect();
        let _ = writeln!(
            s,
            "| {} | {result} | {} |",
            text(&x.group),
            platforms.join("<br>")
        );
    }
    s.push('\n');
}

fn head(s: &mut String, m: &Manifest) {
    let _ = writeln!(s, "## image-matrix run: {}\n", text(&outcome(m)));
    let totals: Vec<String> = totals(m)
        .iter()
        .map(|(w, n)| format!("{} {n} {w}", emoji(w)))
        .collect();
    let _ = writeln!(
        s,
        "**{}** of {} cells · wall time {}\n",
        totals.join(" · "),
        m.cells.len(),
        text(&wall_time(m))
    );
    let _ = writeln!(
        s,
        "matrix {} (sha256 {}) · {} {}\n",
        text(&m.matrix),
        text(&short_id(&m.matrix_sha256)),
        text(&m.tool),
        text(&m.tool_version)
    );
    for e in &m.engines {
        let state = e
            .down
            .as_deref()
            .map_or("up".to_string(), |d| format!("⚠️ **down**: {}", text(d)));
        let _ = writeln!(
            s,
            "- engine {} ({}): {state}",
            text(&e.name),
            text(&e.target.to_string())
        );
    }
    if !m.engines.is_empty() {
        s.push('\n');
    }
    if let Some(why) = m.incomplete() {
        let _ = writeln!(s, "> ⚠️ incomplete: {}\n", text(&why));
    }
}

fn changes_since(s: &mut String, ch: &Changes) {
    let _ = writeln!(s, "### Changes since the run of {}\n", text(ch.since));
    if ch.is_empty() {
        s.push_str("Nothing changed.\n\n");
        return;
    }
    let ids = |cells: &[&CellRecord]| -> String {
        cells
            .iter()
            .map(|c| text(&c.id))
            .collect::<Vec<_>>()
            .join(", ")
    };
    if !ch.new.is_empty() {
        let _ = writeln!(s, "- new cells: {}", ids(&ch.new));
    }
    if !ch.removed.is_empty() {
        let _ = writeln!(s, "- removed cells: {}", ids(&ch.removed));
    }
    for (what, list) in [
        ("status", &ch.status),
        ("image changed", &ch.image),
        ("base digest moved", &ch.base),
    ] {
        for mv in list {
            let _ = writeln!(
                s,
                "- {what}: {} {} → {}",
                text(&mv.cell.id),
                text(&mv.from),
                text(&mv.to)
            );
        }
    }
    for (c, tags) in &ch.tags {
        let tags: Vec<String> = tags.iter().map(|t| text(t)).collect();
        let _ = writeln!(s, "- tags added: {}: {}", text(&c.id), tags.join(", "));
    }
    s.push('\n');
}

fn grid_table(s: &mut String, g: &Grid) {
    if g.rows.is_empty() {
        s.push_str("No cells.\n\n");
        return;
    }
    s.push_str("### Cells\n\n| base |");
    for col in &g.columns {
        if g.variants {
            let _ = write!(s, " {} · {} |", text(col.python), text(col.variant));
        } else {
            let _ = write!(s, " {} |", text(col.python));
        }
    }
    s.push_str("\n|---|");
    s.push_str(&"---|".repeat(g.columns.len()));
    s.push('\n');
    for r in &g.rows {
        let k = &r.first.coordinates;
        let mut label = text(&k.base);
        if g.platforms {
            let _ = write!(label, " ({})", text(&k.platform));
        }
        let _ = write!(s, "| {label} |");
        for slot in &r.slots {
            let words: Vec<String> = slot
                .iter()
                .map(|c| {
                    let w = word(c);
                    if slot.len() > 1 {
                        format!("{} {w} ({})", emoji(w), text(&layer_name(c)))
                    } else {
                        format!("{} {w}", emoji(w))
                    }
                })
                .collect();
            if words.is_empty() {
                s.push_str(" — |");
            } else {
                let _ = write!(s, " {} |", words.join("<br>"));
            }
        }
        s.push('\n');
    }
    s.push('\n');
}

/// Every cell that did not end with a good image, with why.
fn not_built(s: &mut String, m: &Manifest) {
    let cells: Vec<&CellRecord> = m
        .cells
        .iter()
        .filter(|c| !matches!(word(c), "built" | "up-to-date"))
        .collect();
    if cells.is_empty() {
        return;
    }
    s.push_str("### Not built\n\n| cell | status | reason |\n|---|---|---|\n");
    for c in cells {
        let w = word(c);
        let _ = writeln!(
            s,
            "| {} | {} {w} | {} |",
            text(&c.id),
            emoji(w),
            text(&why(c).unwrap_or_default())
        );
    }
    s.push('\n');
}

/// Failed cells: why, and the command that reproduces each.
fn failures(s: &mut String, m: &Manifest) {
    let failed: Vec<&CellRecord> = m.cells.iter().filter(|c| is_failure(word(c))).collect();
    if failed.is_empty() {
        return;
    }
    s.push_str("### Failures\n\n");
    for c in failed {
        let w = word(c);
        let _ = writeln!(s, "#### {} {}: {w}\n", emoji(w), text(&c.id));
        if let Some(r) = why(c) {
            let _ = writeln!(s, "{}\n", text(&r));
        }
        if let Some(log) = &c.log {
            let _ = writeln!(s, "log: {}\n", text(log));
        }
        if let Some(cmd) = &c.reproduce {
            s.push_str("reproduce:\n\n");
            s.push_str(&fenced(cmd, "sh"));
            s.push('\n');
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// In a grid slot of several images, each is named by its layer.
    #[test]
    fn an_image_of_a_tree_is_named_by_its_layer() {
        use crate::coord::Coordinate;
        let root = Coordinate {
            miniconda: "24.5.0-0".into(),
            ..Coordinate::default()
        };
        let torch = Coordinate {
            torch: Some("2.5.1".into()),
            framework: Some("pytorch".into()),
            ..root.clone()
        };
        let mut serve = Coordinate {
            family: Some("serve".into()),
            ..torch.clone()
        };
        serve.families.insert("vision".into(), "11.0.0".into());
        serve.families.insert("serve".into(), "0.1.0".into());
        let mut tool = Coordinate {
            family: Some("tool".into()),
            ..root.clone()
        };
        tool.families.insert("tool".into(), String::new());
        let name = |k: &Coordinate| layer_name(&CellRecord::new("x", k.clone()));
        assert_eq!(name(&root), "Miniconda 24.5.0-0");
        assert_eq!(name(&torch), "torch 2.5.1");
        assert_eq!(name(&serve), "serve 0.1.0");
        assert_eq!(name(&tool), "tool");
    }

    #[test]
    fn versions_sort_as_numbers() {
        let mut v = vec!["3.10", "3.8", "3.9", "3.13", "3.11"];
        v.sort_by(|a, b| version_cmp(a, b));
        assert_eq!(v, ["3.8", "3.9", "3.10", "3.11", "3.13"]);
    }

    #[test]
    fn sizes_and_durations_read_like_docker() {
        assert_eq!(size(999), "999 B");
        assert_eq!(size(4242), "4.2 kB");
        assert_eq!(size(1_234_567_890), "1.2 GB");
        assert_eq!(duration(12.34), "12.3s");
        assert_eq!(duration(252.4), "4m 12s");
        assert_eq!(short_id("sha256:0123456789abcdef"), "0123456789ab");
    }

    #[test]
    fn text_cannot_break_a_table_or_add_markup() {
        assert_eq!(text("a|b\nc"), r"a\|b<br>c");
        assert_eq!(text("<script>"), "&lt;script&gt;");
        assert_eq!(text("[x](y)"), r"\[x\](y)");
    }

    #[test]
    fn fences_outlast_the_backticks_inside() {
        let f = fenced("echo ```` done", "sh");
        assert!(f.starts_with("`````sh\n"), "{f}");
        assert!(f.ends_with("\n`````\n"), "{f}");
    }
}
