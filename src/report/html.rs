//! The HTML page of a run: one self-contained file that people open after a build.
//!
//! Invariants: nothing is fetched (inline `<style>`, no script, no external resource;
//! a Content-Security-Policy says so to the browser too); the page reads the same with
//! styles off, in print and without colour, because every status is written as a word
//! beside its colour; the grid holds exactly one element per manifest cell, carrying
//! `data-cell` and `data-status`; every string from the manifest (and from the logs it
//! names) goes through [`esc`], so a forged manifest cannot inject markup.
//!
//! The facts (status words, totals, grid, changes) come from [`super::markdown`], so
//! the page and the Markdown summary say the same thing.

use std::fmt::Write;
use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};

use super::markdown::{self as facts, Changes, Grid};
use super::packages;
use crate::manifest::{CellRecord, Manifest};

/// How many lines of a failed build's log the page shows.
const LOG_LINES: usize = 20;
/// How much of the end of a log is read to find them (logs can be huge).
const LOG_TAIL_BYTES: u64 = 64 * 1024;
/// Longer log lines are cut.
const LOG_LINE_CHARS: usize = 2000;

const STYLE: &str = r#"
:root{color-scheme:light;--fg:#1b1f24;--muted:#4a5560;--line:#b8c2cc;--bg:#fff;--focus:#1a4fd6}
*{box-sizing:border-box}
body{font:15px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,"DejaVu Sans",sans-serif;color:var(--fg);background:var(--bg);margin:0 auto;padding:1rem 1.5rem 3rem;max-width:120rem}
h1{font-size:1.6rem;margin:.3rem 0 .6rem}
h2{font-size:1.25rem;margin:2rem 0 .6rem;border-bottom:2px solid var(--line);padding-bottom:.2rem}
h3{font-size:1.05rem;margin:1.4rem 0 .4rem}
h4{font-size:.95rem;margin:.8rem 0 .3rem}
code,pre{font-family:ui-monospace,"DejaVu Sans Mono",Menlo,Consolas,monospace;font-size:.9em}
pre{background:#f3f5f7;border:1px solid var(--line);padding:.6rem .8rem;overflow-x:auto;white-space:pre-wrap;overflow-wrap:anywhere;margin:.3rem 0}
dl.facts{display:grid;grid-template-columns:max-content 1fr;gap:.2rem 1rem;margin:.5rem 0}
dl.facts dt{font-weight:600;color:var(--muted)}
dl.facts dd{margin:0;overflow-wrap:anywhere}
table{border-collapse:collapse;margin:.5rem 0}
caption{text-align:left;color:var(--muted);padding:.2rem 0}
th,td{border:1px solid var(--line);padding:.35rem .5rem;text-align:left;vertical-align:top}
thead th{background:#e9edf1}
th[scope=row]{background:#f5f7f9;max-width:24rem;overflow-wrap:anywhere}
.sub{display:block;font-weight:400;color:var(--muted);font-size:.85em}
.grid td{min-width:7.5rem}
.cell{display:block;color:inherit;text-decoration:none;border:1px solid;border-left-width:6px;border-radius:4px;padding:.3rem .45rem;margin:.15rem 0}
a.cell:hover .word{text-decoration:underline}
.word{font-weight:700;white-space:nowrap}
.vh{position:absolute;width:1px;height:1px;overflow:hidden;clip-path:inset(50%);white-space:nowrap}
.why{display:block;font-size:.85em;overflow-wrap:anywhere}
.badge{display:inline-block;padding:0 .45rem;border:1px solid;border-radius:3px;font-weight:700}
.s-built{background:#dcf5e3;color:#0c3d1b;border-color:#1f7a3a}
.s-up-to-date{background:#dce9fb;color:#0b2e5c;border-color:#2a5ea8}
.s-verify-failed{background:#fbe1f2;color:#5c0b45;border-color:#a3267f}
.s-failed{background:#fde2e1;color:#6a0c0a;border-color:#b42318}
.s-timed-out{background:#feebd0;color:#5a2c00;border-color:#b5560b}
.s-cancelled{background:#ececec;color:#2f2f2f;border-color:#6b6b6b}
.s-not-started{background:#f7f7f7;color:#3d3d3d;border-color:#767676;border-style:dashed}
.s-excluded{background:#fff;color:#444;border-color:#8a8a8a;border-style:dotted}
ul.totals{list-style:none;padding:0;display:flex;flex-wrap:wrap;gap:.5rem 1rem;margin:.4rem 0}
ul.plain{margin:.3rem 0;padding-left:1.3rem}
details.detail{border:1px solid var(--line);border-radius:6px;margin:.4rem 0;padding:0 .8rem}
details.detail[open]{padding-bottom:.6rem}
summary{cursor:pointer;padding:.45rem 0}
a{color:#0b4fb3}
a:focus-visible,summary:focus-visible{outline:3px solid var(--focus);outline-offset:2px}
:target{outline:3px solid var(--focus)}
.muted{color:var(--muted)}
.ok{color:#0c5a24;font-weight:700}
.fail{color:#a01610;font-weight:700}
nav ul{display:flex;flex-wrap:wrap;gap:1rem;list-style:none;padding:0;margin:.2rem 0}
@media print{nav{display:none}details.detail{break-inside:avoid}}
"#;

/// The page of a run; `previous` adds what changed since, and `path` is the manifest's
/// path. The failed builds' logs are read from the run's log folder beside it
/// (`logs/`); see [`page_with_logs`].
pub fn page(m: &Manifest, previous: Option<&Manifest>, path: &Path) -> String {
    page_with_logs(m, previous, path, &logs_beside(path), None)
}

/// The log folder of a run whose manifest is `manifest` and that had no `--log-dir`.
pub fn logs_beside(manifest: &Path) -> PathBuf {
    manifest
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."))
        .join("logs")
}

/// [`page`], with the failed builds' logs read from `logs` only: a manifest is an input
/// like any other, and the log paths it names must not make the report show another
/// file (`/etc/passwd`, `/proc/self/environ`) or hang on a FIFO. `packages`: what
/// changed in the cells' packages since `previous` (read from both runs' SBOMs).
pub fn page_with_logs(
    m: &Manifest,
    previous: Option<&Manifest>,
    path: &Path,
    logs: &Path,
    packages: Option<&crate::sbom::diff::Changes>,
) -> String {
    let grid = facts::grid(m);
    let mut h = String::with_capacity(16 * 1024 + m.cells.len() * 2048);
    head(&mut h, m);
    h.push_str("<body>\n<header>\n");
    let _ = writeln!(
        h,
        "<h1>image-matrix report: {}</h1>",
        esc(&facts::outcome(m))
    );
    h.push_str(
        "<nav aria-label=\"sections\"><ul><li><a href=\"#run\">Run</a></li>\
         <li><a href=\"#grid\">Grid</a></li><li><a href=\"#cells\">Cells</a></li></ul></nav>\n",
    );
    h.push_str("</header>\n<main>\n");
    run_section(&mut h, m, path);
    if let Some(p) = previous {
        changes_section(&mut h, &facts::changes(p, m));
    }
    if let Some(ch) = packages {
        package_changes_section(&mut h, m, ch);
    }
    grid_section(&mut h, &grid);
    indexes_section(&mut h, m);
    cells_section(&mut h, &grid, logs);
    h.push_str("</main>\n</body>\n</html>\n");
    h
}

/// A string from the manifest as HTML text or attribute value. Control characters
/// (terminal colours in logs) are dropped: they mean nothing on a page.
pub fn esc(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 16);
    for ch in s.chars() {
        match ch {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            '\n' | '\t' => out.push(ch),
            c if c.is_control() => {}
            c => out.push(c),
        }
    }
    out
}

/// The fragment id of a cell's details: `cell-<id>` when the id is made of safe
/// characters (they always are, from `matrix build`), else `cell_<hex of the id>`.
fn anchor(c: &CellRecord) -> String {
    let safe = !c.id.is_empty()
        && c.id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'-');
    if safe {
        format!("cell-{}", c.id)
    } else {
        let hex: String = c.id.bytes().map(|b| format!("{b:02x}")).collect();
        format!("cell_{hex}")
    }
}

fn head(h: &mut String, m: &Manifest) {
    h.push_str("<!doctype html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n");
    // The page is data, never code: say so to the browser as well, so that even an
    // escaping mistake could neither run script nor fetch anything.
    h.push_str(
        "<meta http-equiv=\"Content-Security-Policy\" content=\"default-src 'none'; \
         style-src 'unsafe-inline'\">\n",
    );
    h.push_str("<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n");
    let _ = writeln!(
        h,
        "<title>image-matrix report: {} ({})</title>",
        esc(&m.matrix),
        esc(&m.started)
    );
    let _ = writeln!(h, "<style>{STYLE}</style>\n</head>");
}

fn run_section(h: &mut String, m: &Manifest, path: &Path) {
    h.push_str("<section id=\"run\" aria-labelledby=\"run-h\">\n<h2 id=\"run-h\">Run</h2>\n");
    h.push_str("<ul class=\"totals\" aria-label=\"cells per status\">");
    for (w, n) in facts::totals(m) {
        let _ = write!(h, "<li><span class=\"badge s-{w}\">{w}</span> {n}</li>");
    }
    let _ = writeln!(h, "<li>of {} cells</li></ul>", m.cells.len());
    h.push_str("<dl class=\"facts\">\n");
    let mut fact = |k: &str, v: String| {
        let _ = writeln!(h, "<dt>{k}</dt><dd>{v}</dd>");
    };
    fact("Outcome", esc(&facts::outcome(m)));
    fact("Wall time", esc(&facts::wall_time(m)));
    fact("Matrix", format!("<code>{}</code>", esc(&m.matrix)));
    fact(
        "Matrix sha256",
        format!("<code>{}</code>", esc(&m.matrix_sha256)),
    );
    fact(
        "Manifest",
        format!("<code>{}</code>", esc(&path.display().to_string())),
    );
    if let Some(r) = &m.repository {
        fact("Repository", format!("<code>{}</code>", esc(r)));
    }
    fact("Tool", esc(&format!("{} {}", m.tool, m.tool_version)));
    if let Some(d) = &m.docker {
        fact(
            "Docker",
            esc(&format!(
                "client {}, server {}, builder {}",
                d.client, d.server, d.builder
            )),
        );
    }
    if let Some(cpu) = m.tool_cpu_seconds {
        fact("Tool CPU time", esc(&facts::duration(cpu)));
    }
    if !m.shards.is_empty() {
        fact("Shards", esc(&m.shards.join(", ")));
    }
    if let Some(why) = m.incomplete() {
        fact("Incomplete", format!("<strong>{}</strong>", esc(&why)));
    }
    h.push_str("</dl>\n");
    engines(h, m);
    h.push_str("</section>\n");
}

fn engines(h: &mut String, m: &Manifest) {
    if m.engines.is_empty() {
        return;
    }
    h.push_str(
        "<table class=\"engines\">\n<caption>Engines</caption>\n<thead><tr>\
         <th scope=\"col\">engine</th><th scope=\"col\">target</th><th scope=\"col\">jobs</th>\
         <th scope=\"col\">server</th><th scope=\"col\">state</th></tr></thead>\n<tbody>\n",
    );
    for e in &m.engines {
        let state = match &e.down {
            Some(why) => format!("<span class=\"fail\">down</span>: {}", esc(why)),
            None => "<span class=\"ok\">up</span>".to_string(),
        };
        let _ = writeln!(
            h,
            "<tr><th scope=\"row\">{}</th><td><code>{}</code></td><td>{}</td><td>{}</td><td>{state}</td></tr>",
            esc(&e.name),
            esc(&e.target.to_string()),
            e.jobs,
            esc(&e.server)
        );
    }
    h.push_str("</tbody>\n</table>\n");
}

fn changes_section(h: &mut String, ch: &Changes) {
    let _ = writeln!(
        h,
        "<section id=\"changes\" aria-labelledby=\"changes-h\">\n\
         <h2 id=\"changes-h\">Changes since the run of {}</h2>",
        esc(ch.since)
    );
    if ch.is_empty() {
        h.push_str("<p>Nothing changed.</p>\n</section>\n");
        return;
    }
    let link = |c: &CellRecord| format!("<a href=\"#{}\">{}</a>", anchor(c), esc(&c.id));
    let mut list = |title: &str, items: Vec<String>| {
        if items.is_empty() {
            return;
        }
        let _ = writeln!(
            h,
            "<h3>{title} ({})</h3>\n<ul class=\"plain\">",
            items.len()
        );
        for i in items {
            let _ = writeln!(h, "<li>{i}</li>");
        }
        h.push_str("</ul>\n");
    };
    list("New cells", ch.new.iter().map(|c| link(c)).collect());
    list(
        "Removed cells",
        ch.removed
            .iter()
            .map(|c| format!("<code>{}</code>", esc(&c.id)))
            .collect(),
    );
    for (title, moves) in [
        ("Status changes", &ch.status),
        ("Image changed", &ch.image),
        ("Base digest moved", &ch.base),
    ] {
        let items = moves
            .iter()
            .map(|mv| {
                format!(
                    "{}: <code>{}</code> → <code>{}</code>",
                    link(mv.cell),
                    esc(&mv.from),
                    esc(&mv.to)
                )
            })
            .collect();
        list(title, items);
    }
    let tags = ch
        .tags
        .iter()
        .map(|(c, tags)| {
            let t: Vec<String> = tags
                .iter()
                .map(|t| format!("<code>{}</code>", esc(t)))
                .collect();
            format!("{}: {}", link(c), t.join(", "))
        })
        .collect();
    list("Tags added", tags);
    h.push_str("</section>\n");
}

/// What changed in each cell's packages since the previous run, bounded per cell.
fn package_changes_section(h: &mut String, m: &Manifest, ch: &crate::sbom::diff::Changes) {
    h.push_str(
        "<section id=\"packages\" aria-labelledby=\"packages-h\">\n\
         <h2 id=\"packages-h\">Package changes (from the SBOMs)</h2>\n",
    );
    if ch.cells.is_empty() && ch.not_compared.is_empty() {
        h.push_str("<p>No package changed.</p>\n</section>\n");
        return;
    }
    let link = |id: &str| match m.cells.iter().find(|c| c.id == id) {
        Some(c) => format!("<a href=\"#{}\">{}</a>", anchor(c), esc(id)),
        None => format!("<code>{}</code>", esc(id)),
    };
    h.push_str("<ul class=\"plain\">\n");
    for c in &ch.cells {
        let _ = write!(h, "<li>{}<ul>", link(&c.cell));
        for (what, n, list) in packages::lines(c, facts::version_cmp) {
            let _ = write!(h, "<li>{what} ({n}): {}</li>", esc(&list));
        }
        h.push_str("</ul></li>\n");
    }
    for (id, why) in &ch.not_compared {
        let _ = writeln!(h, "<li>{}: not compared: {}</li>", link(id), esc(why));
    }
    h.push_str("</ul>\n</section>\n");
}

fn grid_section(h: &mut String, g: &Grid) {
    h.push_str("<section id=\"grid\" aria-labelledby=\"grid-h\">\n<h2 id=\"grid-h\">Grid</h2>\n");
    if g.rows.is_empty() {
        h.push_str("<p>No cells.</p>\n</section>\n");
        return;
    }
    h.push_str("<table class=\"grid\">\n<caption>Bases down, Python");
    if g.variants {
        h.push_str(" × variant");
    }
    h.push_str(" across; each entry links to the cell's details.</caption>\n<thead>\n");
    grid_header(h, g);
    h.push_str("</thead>\n<tbody>\n");
    for r in &g.rows {
        let k = &r.first.coordinates;
        let mut sub = k.os.clone();
        if let Some(cuda) = &k.cuda {
            let _ = write!(sub, " · CUDA {cuda}");
        }
        if g.platforms {
            let _ = write!(sub, " · {}", k.platform);
        }
        let _ = write!(
            h,
            "<tr><th scope=\"row\"><code>{}</code><span class=\"sub\">{}</span></th>",
            esc(&k.base),
            esc(&sub)
        );
        for slot in &r.slots {
            h.push_str("<td>");
            if slot.is_empty() {
                h.push_str("<span class=\"muted\">no cell</span>");
            }
            for c in slot {
                grid_entry(h, c, slot.len() > 1);
            }
            h.push_str("</td>");
        }
        h.push_str("</tr>\n");
    }
    h.push_str("</tbody>\n</table>\n</section>\n");
}

/// One or two header rows: Python versions (spanning their variants), then variants.
fn grid_header(h: &mut String, g: &Grid) {
    let rows = if g.variants { 2 } else { 1 };
    let _ = write!(h, "<tr><th scope=\"col\" rowspan=\"{rows}\">base</th>");
    let mut i = 0;
    while i < g.columns.len() {
        let py = g.columns[i].python;
        let span = g.columns[i..].iter().take_while(|c| c.python == py).count();
        if g.variants {
            let _ = write!(
                h,
                "<th scope=\"colgroup\" colspan=\"{span}\">Python {}</th>",
                esc(py)
            );
        } else {
            let _ = write!(h, "<th scope=\"col\">Python {}</th>", esc(py));
        }
        i += span;
    }
    h.push_str("</tr>\n");
    if g.variants {
        h.push_str("<tr>");
        for c in &g.columns {
            let _ = write!(h, "<th scope=\"col\">{}</th>", esc(c.variant));
        }
        h.push_str("</tr>\n");
    }
}

/// The one element of a cell in the grid: its status word (and colour), why it did
/// not build, and a link to its details.
fn grid_entry(h: &mut String, c: &CellRecord, several: bool) {
    let w = facts::word(c);
    let (id, to) = (esc(&c.id), anchor(c));
    // the id, hidden on screen, tells a screen reader which cell this link is
    let _ = write!(
        h,
        "<a class=\"cell s-{w}\" href=\"#{to}\" data-cell=\"{id}\" data-status=\"{w}\" \
         title=\"{id}\"><span class=\"vh\">{id}: </span><span class=\"word\">{w}</span>"
    );
    if several {
        let _ = write!(
            h,
            "<span class=\"why\">{}</span>",
            esc(&facts::layer_name(c))
        );
    }
    if w != "built" && w != "up-to-date" {
        if let Some(why) = facts::why(c) {
            let _ = write!(h, "<span class=\"why\">{}</span>", esc(&why));
        }
    }
    h.push_str("</a>");
}

fn cells_section(h: &mut String, g: &Grid, logs: &Path) {
    h.push_str(
        "<section id=\"cells\" aria-labelledby=\"cells-h\">\n<h2 id=\"cells-h\">Cells</h2>\n",
    );
    for r in &g.rows {
        let k = &r.first.coordinates;
        if g.platforms {
            let _ = writeln!(
                h,
                "<h3><code>{}</code> · {}</h3>",
                esc(&k.base),
                esc(&k.platform)
            );
        } else {
            let _ = writeln!(h, "<h3><code>{}</code></h3>", esc(&k.base));
        }
        for c in r.slots.iter().flatten() {
            cell_details(h, c, logs);
        }
    }
    h.push_str("</section>\n");
}

/// A cell's details: closed, except for failures, which are what people come for.
fn cell_details(h: &mut String, c: &CellRecord, logs: &Path) {
    let w = facts::word(c);
    let open = if facts::is_failure(w) { " open" } else { "" };
    let _ = writeln!(
        h,
        "<details class=\"detail\" id=\"{}\"{open}><summary><span class=\"badge s-{w}\">{w}</span> \
         <code>{}</code> <span class=\"muted\">{}</span></summary>",
        anchor(c),
        esc(&c.id),
        esc(&facts::duration(c.duration_seconds))
    );
    cell_facts(h, c);
    versions(h, c);
    verification(h, c);
    if facts::is_failure(w) || c.status == crate::manifest::Status::Cancelled {
        failure(h, c, logs);
    }
    h.push_str("</details>\n");
}

/// `Python 3.11, Miniconda 24.5.0-0, ubuntu22.04, linux/amd64, CUDA 12.4.1, variant default`.
fn coordinates(k: &crate::coord::Coordinate) -> String {
    let mut coords = format!(
        "Python {}, Miniconda {}, {}, {}",
        k.python, k.miniconda, k.os, k.platform
    );
    for (name, v) in [
        ("CUDA", &k.cuda),
        ("cuDNN", &k.cudnn),
        ("flavor", &k.flavor),
    ] {
        if let Some(v) = v {
            let _ = write!(coords, ", {name} {v}");
        }
    }
    let _ = write!(coords, ", variant {}", k.variant);
    coords
}

fn cell_facts(h: &mut String, c: &CellRecord) {
    let k = &c.coordinates;
    h.push_str("<dl class=\"facts\">\n");
    let mut fact = |name: &str, v: String| {
        let _ = writeln!(h, "<dt>{name}</dt><dd>{v}</dd>");
    };
    let code = |s: &str| format!("<code>{}</code>", esc(s));
    if let Some(why) = facts::why(c) {
        fact("Reason", esc(&why));
    }
    fact("Coordinates", esc(&coordinates(k)));
    if let Some(parent) = &c.parent {
        fact(
            "Layer",
            format!("{} on {}", esc(&facts::layer_name(c)), code(parent)),
        );
    }
    fact("Base", code(&k.base));
    fact(
        "Duration",
        esc(&format!(
            "{} ({} attempt{})",
            facts::duration(c.duration_seconds),
            c.attempts,
            if c.attempts == 1 { "" } else { "s" }
        )),
    );
    if let Some(exit) = c.exit_code {
        fact("Exit code", exit.to_string());
    }
    if let Some(b) = c.size_bytes {
        fact("Image size", esc(&facts::size(b)));
    }
    if let Some(id) = &c.image_id {
        fact(
            "Image",
            format!(
                "<code title=\"{}\">{}</code>",
                esc(id),
                esc(&facts::short_id(id))
            ),
        );
    }
    if let Some(cand) = &c.candidate {
        fact("Candidate (not promoted)", code(cand));
    }
    fact(
        "Engine",
        esc(&format!(
            "{}{}",
            c.engine.as_deref().unwrap_or("none"),
            if c.emulated {
                format!(" (built and verified under emulation of {})", k.platform)
            } else {
                String::new()
            }
        )),
    );
    if let (Some(g), Some(pt)) = (&c.group, &c.platform_tag) {
        fact(
            "Tag group",
            format!(
                "{}: its image is {}; its tags name the group's image index",
                esc(g),
                code(pt)
            ),
        );
    }
    for r in &c.requeued {
        fact(
            "Requeued",
            esc(&format!(
                "from {} after {}: {}",
                r.engine,
                facts::duration(r.seconds),
                r.reason
            )),
        );
    }
    if let Some(d) = &c.base_digest {
        fact("Base digest", code(d));
    }
    if !c.tags.is_empty() {
        fact("Tags", tag_list(&c.tags));
    }
    if !c.tags_added.is_empty() {
        fact("Tags moved here by this run", tag_list(&c.tags_added));
    }
    if let Some(st) = &c.staged {
        fact(
            "Staged (by digest)",
            code(&format!("{}@{}", st.repository, st.digest)),
        );
    }
    if let Some(sb) = &c.sbom {
        fact("Packages (SBOM)", sbom_fact(sb));
    }
    for p in &c.pushed {
        let state = match (p.ok, p.unchanged) {
            (true, true) => "pushed (already there)",
            (true, false) => "pushed",
            (false, _) => "push FAILED",
        };
        let extra = p.error.as_deref().or(p.digest.as_deref()).unwrap_or("");
        fact(state, format!("{} {}", code(&p.tag), esc(extra)));
    }
    h.push_str("</dl>\n");
}

/// A cell's SBOM: its counts, its file (a link when it is a plain file of the SBOM
/// folder) and its notes.
fn sbom_fact(sb: &crate::manifest::SbomRecord) -> String {
    let file = match (packages::link(sb), sb.path.as_deref()) {
        (Some(l), _) => format!(" · <a href=\"{}\">{}</a>", esc(l), esc(l)),
        (None, Some(p)) => format!(" · <code>{}</code>", esc(p)),
        (None, None) => " · no SBOM".to_string(),
    };
    let notes: String = sb
        .notes
        .iter()
        .map(|n| format!("<br><span class=\"muted\">{}</span>", esc(n)))
        .collect();
    format!("{}{file}{notes}", esc(&packages::counts(sb)))
}

/// The image indexes push made, one row per tag group.
fn indexes_section(h: &mut String, m: &Manifest) {
    if m.indexes.is_empty() {
        return;
    }
    h.push_str(
        "<section id=\"indexes\" aria-labelledby=\"indexes-h\">\n<h2 id=\"indexes-h\">Image indexes</h2>\n\
         <table class=\"indexes\">\n<thead><tr><th scope=\"col\">tag group</th><th scope=\"col\">result</th>\
         <th scope=\"col\">platforms</th><th scope=\"col\">tags</th></tr></thead>\n<tbody>\n",
    );
    for x in &m.indexes {
        let result = match (&x.digest, x.ok) {
            (Some(d), true) => format!("<span class=\"ok\">pushed</span> <code>{}</code>", esc(d)),
            _ => format!(
                "<span class=\"fail\">not pushed</span>: {}",
                esc(x.error.as_deref().unwrap_or(""))
            ),
        };
        let platforms: Vec<String> = x
            .platforms
            .iter()
            .map(|e| {
                format!(
                    "{} ({}) <code>{}</code>",
                    esc(&e.platform),
                    esc(&e.cell),
                    esc(e.digest.as_deref().unwrap_or("not pushed"))
                )
            })
            .collect();
        let _ = writeln!(
            h,
            "<tr><th scope=\"row\">{}</th><td>{result}</td><td>{}</td><td>{}</td></tr>",
            esc(&x.group),
            platforms.join("<br>"),
            tag_list(&x.tags)
        );
    }
    h.push_str("</tbody>\n</table>\n</section>\n");
}

fn tag_list(tags: &[String]) -> String {
    let items: Vec<String> = tags
        .iter()
        .map(|t| format!("<li><code>{}</code></li>", esc(t)))
        .collect();
    format!("<ul class=\"plain\">{}</ul>", items.join(""))
}

fn versions(h: &mut String, c: &CellRecord) {
    if c.versions.is_empty() {
        return;
    }
    h.push_str(
        "<table class=\"versions\">\n<caption>Versions in the image</caption>\n<thead><tr>\
         <th scope=\"col\">component</th><th scope=\"col\">version</th></tr></thead>\n<tbody>\n",
    );
    for (k, v) in &c.versions {
        let _ = writeln!(
            h,
            "<tr><th scope=\"row\">{}</th><td><code>{}</code></td></tr>",
            esc(k),
            esc(v)
        );
    }
    h.push_str("</tbody>\n</table>\n");
}

fn verification(h: &mut String, c: &CellRecord) {
    let Some(v) = &c.verification else {
        return;
    };
    let mut ready = v
        .ready_seconds
        .map(|s| format!(", ready after {}", facts::duration(s)))
        .unwrap_or_default();
    if let Some(t) = v.seconds {
        let _ = write!(ready, ", {} in all", facts::duration(t));
    }
    if v.emulated {
        ready.push_str(", under emulation");
    }
    let _ = writeln!(
        h,
        "<table class=\"checks\">\n<caption>Verification: {}{}</caption>\n<thead><tr>\
         <th scope=\"col\">check</th><th scope=\"col\">result</th><th scope=\"col\">detail</th>\
         </tr></thead>\n<tbody>",
        if v.ok { "passed" } else { "FAILED" },
        esc(&ready)
    );
    for k in &v.checks {
        let result = if k.ok {
            "<span class=\"ok\">ok</span>"
        } else {
            "<span class=\"fail\">FAIL</span>"
        };
        let _ = writeln!(
            h,
            "<tr><th scope=\"row\">{}</th><td>{result}</td><td>{}</td></tr>",
            esc(&k.name),
            esc(&k.detail)
        );
    }
    h.push_str("</tbody>\n</table>\n");
}

/// What someone fixing a failure needs: the end of its log and the command that
/// reproduces it.
fn failure(h: &mut String, c: &CellRecord, logs: &Path) {
    match &c.log {
        Some(log) => match log_tail(log, logs) {
            Ok((found, lines)) => {
                let _ = writeln!(
                    h,
                    "<h4>Last {} lines of <code>{}</code></h4>\n<pre>{}</pre>",
                    lines.len(),
                    esc(&found.display().to_string()),
                    esc(&lines.join("\n"))
                );
            }
            Err(e) => {
                let _ = writeln!(h, "<p class=\"muted\">{}</p>", esc(&e));
            }
        },
        None => h.push_str("<p class=\"muted\">No build log was recorded.</p>\n"),
    }
    if let Some(cmd) = &c.reproduce {
        let _ = writeln!(
            h,
            "<h4>Reproduce</h4>\n<pre><code>{}</code></pre>",
            esc(cmd)
        );
    }
}

/// The last lines of a log, read only from the run's log folder `logs`: the file of
/// that name there (`<id>.log`), a regular file (not a link, a device or a FIFO), and
/// no more than its last bytes.
fn log_tail(log: &str, logs: &Path) -> Result<(PathBuf, Vec<String>), String> {
    let name = Path::new(log)
        .file_name()
        .filter(|n| n.to_string_lossy().ends_with(".log"))
        .ok_or_else(|| {
            format!("The build log {log:?} is not a log of this run; it is not shown.")
        })?;
    let path = logs.join(name);
    let meta = std::fs::symlink_metadata(&path).map_err(|e| {
        format!(
            "The build log could not be read ({e}; looked at {}).",
            path.display()
        )
    })?;
    if !meta.file_type().is_file() {
        return Err(format!(
            "The build log {} is not a regular file; it is not shown.",
            path.display()
        ));
    }
    read_tail(&path)
        .map(|lines| (path.clone(), lines))
        .map_err(|e| {
            format!(
                "The build log could not be read ({e}; looked at {}).",
                path.display()
            )
        })
}

fn read_tail(path: &Path) -> std::io::Result<Vec<String>> {
    use std::os::unix::fs::OpenOptionsExt;
    // no blocking on a FIFO swapped in after the check, no following a link
    let mut f = std::fs::File::options()
        .read(true)
        .custom_flags(libc::O_NONBLOCK | libc::O_NOFOLLOW)
        .open(path)?;
    let len = f.metadata()?.len();
    let start = len.saturating_sub(LOG_TAIL_BYTES);
    f.seek(SeekFrom::Start(start))?;
    let mut buf = Vec::new();
    // bounded whatever the file claims its length is
    f.take(LOG_TAIL_BYTES).read_to_end(&mut buf)?;
    let text = String::from_utf8_lossy(&buf);
    let mut lines: Vec<&str> = text.lines().collect();
    if start > 0 && !lines.is_empty() {
        // the first line read is likely cut in the middle
        lines.remove(0);
    }
    let from = lines.len().saturating_sub(LOG_LINES);
    Ok(lines[from..]
        .iter()
        .map(|l| cut(l, LOG_LINE_CHARS))
        .collect())
}

/// A line cut to `max` characters (a progress line can be one huge line).
fn cut(line: &str, max: usize) -> String {
    match line.char_indices().nth(max) {
        Some((at, _)) => format!("{}…", &line[..at]),
        None => line.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn esc_leaves_no_markup() {
        assert_eq!(
            esc("<a href=\"x\">'&'</a>\u{1b}[31m"),
            "&lt;a href=&quot;x&quot;&gt;&#39;&amp;&#39;&lt;/a&gt;[31m"
        );
    }

    #[test]
    fn anchors_are_safe_fragments() {
        let mut c = CellRecord::new("py3.10-ubuntu22.04-amd64", Default::default());
        assert_eq!(anchor(&c), "cell-py3.10-ubuntu22.04-amd64");
        c.id = "a\"b".into();
        assert_eq!(anchor(&c), "cell_612262");
    }

    #[test]
    fn long_lines_are_cut() {
        assert_eq!(cut("héllo", 3), "hél…");
        assert_eq!(cut("hé", 3), "hé");
    }

    #[test]
    fn a_long_log_shows_its_last_lines() {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("x.log");
        let text: String = (1..=100_000).map(|i| format!("line {i}\n")).collect();
        std::fs::write(&log, text).unwrap();
        let lines = read_tail(&log).unwrap();
        assert_eq!(lines.len(), LOG_LINES);
        assert_eq!(lines.last().unwrap(), "line 100000");
        assert_eq!(lines[0], "line 99981");
    }

    #[test]
    fn logs_are_read_only_from_the_runs_log_folder() {
        let dir = tempfile::tempdir().unwrap();
        let logs = dir.path().join("out/logs");
        std::fs::create_dir_all(&logs).unwrap();
        std::fs::write(logs.join("c.log"), "one\ntwo\n").unwrap();
        let (found, lines) = log_tail("out/logs/c.log", &logs).unwrap();
        assert_eq!(found, logs.join("c.log"));
        assert_eq!(lines, ["one", "two"]);
        let e = log_tail("out/logs/missing.log", &logs).unwrap_err();
        assert!(e.contains("could not be read"), "{e}");
        // what a forged manifest could name instead
        for forged in [
            "/etc/passwd",
            "/proc/self/environ",
            "/dev/zero",
            "../../etc",
        ] {
            let e = log_tail(forged, &logs).unwrap_err();
            assert!(e.contains("not a log of this run"), "{forged}: {e}");
        }
        std::os::unix::fs::symlink("/etc/hostname", logs.join("link.log")).unwrap();
        let e = log_tail("link.log", &logs).unwrap_err();
        assert!(e.contains("not a regular file"), "{e}");
        let fifo = logs.join("fifo.log");
        let c = std::ffi::CString::new(fifo.to_str().unwrap()).unwrap();
        // SAFETY: mkfifo on a path we own.
        assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
        let e = log_tail("fifo.log", &logs).unwrap_err();
        assert!(e.contains("not a regular file"), "{e}");
    }
}
