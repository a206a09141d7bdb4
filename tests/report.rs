//! The HTML page and the Markdown summary of a run, from manifests built in code:
//! one grid element per cell with its status, reasons, verification, failure details,
//! escaping of hostile strings, changes since a previous run, nothing fetched; and the
//! real binary writing both formats. No Docker, no browser (`tests/report_browser.rs`
//! opens the page in Chromium).

#[path = "report/dom.rs"]
mod dom;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use image_matrix::config::engine::Target;
use image_matrix::coord::Coordinate;
use image_matrix::manifest::{
    CellRecord, CheckResult, EngineRecord, IndexEntry, IndexRecord, Manifest, RunOutcome, Status,
    Verification,
};
use image_matrix::report::{html, markdown};

const CUDA: &str = "nvidia/cuda:12.4.1-cudnn-devel-ubuntu22.04";

fn coord(python: &str, base: &str, variant: &str, platform: &str) -> Coordinate {
    let (os, cuda) = match base {
        "ubuntu:22.04" => ("ubuntu22.04", None),
        "debian:12" => ("debian12", None),
        _ => ("ubuntu22.04", Some("12.4.1")),
    };
    Coordinate {
        python: python.into(),
        miniconda: "24.5.0-0".into(),
        base: base.into(),
        os: os.into(),
        cuda: cuda.map(Into::into),
        cudnn: cuda.map(|_| "cudnn".into()),
        flavor: cuda.map(|_| "devel".into()),
        platform: platform.into(),
        variant: variant.into(),
        ..Coordinate::default()
    }
}

fn cell(id: &str, python: &str, base: &str, variant: &str, status: Status) -> CellRecord {
    let mut c = CellRecord::new(id, coord(python, base, variant, "linux/amd64"));
    c.status = status;
    c.tags = vec![format!("miniconda:{id}")];
    if status.succeeded() {
        c.image_id = Some(format!("sha256:{:0>64}", id.len()));
        c.size_bytes = Some(1_234_567_890);
        c.duration_seconds = 252.4;
        c.engine = Some("default".into());
        c.versions = BTreeMap::from([
            ("python".to_string(), format!("{python}.4")),
            ("jupyterlab".to_string(), "4.2.5".to_string()),
        ]);
    }
    c
}

fn verified(ok: bool) -> Verification {
    Verification {
        ok,
        ready_seconds: Some(3.2),
        checks: vec![
            CheckResult {
                name: "ssh login".into(),
                ok: true,
                detail: "root@container answered".into(),
                seconds: Some(1.5),
            },
            CheckResult {
                name: "jupyterlab answers".into(),
                ok,
                detail: if ok {
                    "HTTP 200"
                } else {
                    "HTTP 502 on port 8888"
                }
                .into(),
                seconds: Some(0.4),
            },
        ],
        ..Verification::default()
    }
}

/// A run of every status: two bases × three Pythons (listed out of version order) ×
/// two variants, one verify-failed image, one excluded pair.
fn run() -> Manifest {
    let mut m = Manifest::new("matrix.yaml", &"ab".repeat(32), None);
    m.finished = Some("2099-01-01T00:04:12Z".into());
    m.started = "2099-01-01T00:00:00Z".into();
    m.outcome = Some(RunOutcome::Completed);
    m.engines = vec![
        EngineRecord {
            name: "default".into(),
            target: Target::Default,
            jobs: 2,
            server: "27.0.1".into(),
            down: None,
            platforms: vec!["linux/amd64".into()],
            buildx_builder: None,
        },
        EngineRecord {
            name: "b".into(),
            target: Target::Host("ssh://ci@build-b".into()),
            jobs: 4,
            server: "26.1.0".into(),
            down: Some("lost at 00:03:00: connection refused".into()),
            platforms: vec!["linux/amd64".into(), "linux/arm64".into()],
            buildx_builder: None,
        },
    ];
    let statuses = [
        Status::Built,
        Status::UpToDate,
        Status::Failed,
        Status::TimedOut,
        Status::Cancelled,
        Status::NotStarted,
    ];
    let mut n = 0;
    for base in ["ubuntu:22.04", CUDA] {
        for python in ["3.10", "3.8", "3.9"] {
            for variant in ["default", "data"] {
                let slug = if base == CUDA {
                    "cuda12.4.1"
                } else {
                    "ubuntu22.04"
                };
                let id = format!("py{python}-{slug}-amd64-{variant}");
                let status = statuses[n % statuses.len()];
                n += 1;
                let mut c = cell(&id, python, base, variant, status);
                if matches!(status, Status::Failed | Status::TimedOut) {
                    c.reason = Some(format!("docker build exited with {n}"));
                    c.log = Some(format!("out/logs/{id}.log"));
                    c.reproduce = Some(format!("cd out/contexts/{id} && docker build ."));
                }
                m.cells.push(c);
            }
        }
    }
    m.cells[0].verification = Some(verified(false));
    m.cells[1].verification = Some(verified(true));
    for variant in ["default", "data"] {
        let mut c = cell(
            &format!("py3.8-debian12-amd64-{variant}"),
            "3.8",
            "debian:12",
            variant,
            Status::Excluded,
        );
        c.reason = Some("no Python 3.8 on Debian 12".into());
        m.cells.push(c);
    }
    m
}

fn expected(m: &Manifest) -> Vec<(String, String)> {
    let mut v: Vec<(String, String)> = m
        .cells
        .iter()
        .map(|c| {
            let bad = c.verification.as_ref().is_some_and(|v| !v.ok);
            let s = if c.status.succeeded() && bad {
                "verify-failed"
            } else {
                c.status.as_str()
            };
            (c.id.clone(), s.to_string())
        })
        .collect();
    v.sort();
    v
}

fn page(m: &Manifest) -> String {
    html::page(m, None, Path::new("out/manifest.json"))
}

#[test]
fn one_grid_element_per_cell_with_its_status() {
    let m = run();
    let html = page(&m);
    let mut got = dom::cells(&html);
    assert_eq!(got.len(), m.cells.len(), "one element per cell");
    got.sort();
    assert_eq!(got, expected(&m));
    for (id, status) in &got {
        // the word is printed, not only coloured
        let e = dom::entry(&html, id);
        assert!(e.contains(&format!(">{status}<")), "{id}: {e}");
    }
}

#[test]
fn the_grid_is_a_table_bases_down_pythons_across_in_version_order() {
    let html = page(&run());
    let pythons: Vec<usize> = ["Python 3.8<", "Python 3.9<", "Python 3.10<"]
        .iter()
        .map(|p| html.find(p).unwrap_or_else(|| panic!("no {p} header")))
        .collect();
    assert!(pythons.windows(2).all(|w| w[0] < w[1]), "{pythons:?}");
    assert!(html.contains("<th scope=\"colgroup\" colspan=\"2\">Python 3.8</th>"));
    assert!(html.contains("<th scope=\"col\">default</th><th scope=\"col\">data</th>"));
    let row = html
        .find("<th scope=\"row\"><code>ubuntu:22.04</code>")
        .unwrap();
    let cuda = html
        .find(&format!("<th scope=\"row\"><code>{CUDA}</code>"))
        .unwrap();
    assert!(row < cuda, "CPU bases come first");
    assert!(html.contains("ubuntu22.04 · CUDA 12.4.1"));
    assert!(
        !html.contains("linux/amd64</span>"),
        "one platform: rows not split"
    );
}

#[test]
fn several_platforms_split_the_rows() {
    let mut m = run();
    let mut arm = m.cells[0].clone();
    arm.id = "py3.10-ubuntu22.04-arm64-default".into();
    arm.coordinates.platform = "linux/arm64".into();
    m.cells.push(arm);
    let html = page(&m);
    assert!(html.contains("ubuntu22.04 · linux/arm64</span>"), "{html}");
    assert!(html.contains("ubuntu22.04 · linux/amd64</span>"));
    assert_eq!(dom::cells(&html).len(), m.cells.len());
}

#[test]
fn a_tag_groups_index_and_its_emulated_platform_are_reported() {
    let mut m = run();
    let mut arm = m.cells[0].clone();
    arm.id = "py3.10-ubuntu22.04-arm64-default".into();
    arm.coordinates.platform = "linux/arm64".into();
    arm.emulated = true;
    arm.group = Some("conda3-python3.10-ubuntu22.04".into());
    arm.platform_tag = Some("r/m:conda3-python3.10-ubuntu22.04-arm64".into());
    arm.verification = Some(Verification {
        emulated: true,
        seconds: Some(81.5),
        ..verified(true)
    });
    m.cells.push(arm.clone());
    m.indexes = vec![IndexRecord {
        group: "conda3-python3.10-ubuntu22.04".into(),
        tags: vec!["r/m:conda3-python3.10-ubuntu22.04".into()],
        platforms: vec![
            IndexEntry {
                platform: "linux/amd64".into(),
                cell: m.cells[0].id.clone(),
                digest: Some("sha256:aaa1".into()),
            },
            IndexEntry {
                platform: "linux/arm64".into(),
                cell: arm.id.clone(),
                digest: Some("sha256:bbb2".into()),
            },
        ],
        digest: Some("sha256:ccc3".into()),
        ok: true,
        error: None,
        unchanged: false,
    }];
    let html = page(&m);
    let idx = &html[html
        .find("<section id=\"indexes\"")
        .expect("an indexes section")..];
    let idx = &idx[..idx.find("</section>").unwrap()];
    for needed in [
        "conda3-python3.10-ubuntu22.04",
        "sha256:ccc3",
        "linux/amd64",
        "sha256:aaa1",
        "linux/arm64",
        "sha256:bbb2",
    ] {
        assert!(idx.contains(needed), "{needed} missing: {idx}");
    }
    let d = details(&html, &arm.id);
    assert!(d.contains("under emulation of linux/arm64"), "{d}");
    assert!(d.contains("r/m:conda3-python3.10-ubuntu22.04-arm64"), "{d}");
    assert!(
        d.contains(&format!(
            "{} in all, under emulation",
            markdown::duration(81.5)
        )),
        "{d}"
    );
    let md = markdown::summary(&m, None);
    assert!(md.contains("### Image indexes"), "{md}");
    assert!(
        md.contains("| conda3-python3.10-ubuntu22.04 | ✅ pushed `sha256:ccc3` | linux/amd64 `sha256:aaa1`<br>linux/arm64 `sha256:bbb2` |"),
        "{md}"
    );
    // a group left without its index says why
    m.indexes[0].ok = false;
    m.indexes[0].digest = None;
    m.indexes[0].error = Some("not made: linux/arm64 not pushed".into());
    assert!(markdown::summary(&m, None).contains("❌ not made: linux/arm64 not pushed"));
    assert!(page(&m).contains("not pushed</span>: not made: linux/arm64 not pushed"));
}

#[test]
fn excluded_cells_show_their_reason() {
    let html = page(&run());
    let e = dom::entry(&html, "py3.8-debian12-amd64-data");
    assert!(e.contains("data-status=\"excluded\""), "{e}");
    assert!(e.contains("no Python 3.8 on Debian 12"), "{e}");
}

#[test]
fn a_verify_failure_is_its_own_status_with_its_checks() {
    let html = page(&run());
    let e = dom::entry(&html, "py3.10-ubuntu22.04-amd64-default");
    assert!(e.contains(">verify-failed<"), "{e}");
    assert!(
        e.contains("jupyterlab answers: HTTP 502 on port 8888"),
        "{e}"
    );
    let d = details(&html, "py3.10-ubuntu22.04-amd64-default");
    assert!(
        d.starts_with(
            "<details class=\"detail\" id=\"cell-py3.10-ubuntu22.04-amd64-default\" open>"
        ),
        "{d}"
    );
    assert!(d.contains("<th scope=\"row\">jupyterlab answers</th><td><span class=\"fail\">FAIL</span></td><td>HTTP 502 on port 8888</td>"), "{d}");
    assert!(d.contains("<th scope=\"row\">ssh login</th><td><span class=\"ok\">ok</span></td>"));
    let ok = details(&html, "py3.10-ubuntu22.04-amd64-data");
    assert!(
        ok.contains("Verification: passed, ready after 3.2s"),
        "{ok}"
    );
}

/// The `<details>` of a cell.
fn details<'a>(html: &'a str, id: &str) -> &'a str {
    let start = html
        .find(&format!("<details class=\"detail\" id=\"cell-{id}\""))
        .unwrap_or_else(|| panic!("no details for {id}"));
    let len = html[start..].find("</details>").unwrap();
    &html[start..start + len]
}

#[test]
fn details_give_size_image_versions_tags_and_engine() {
    let mut m = run();
    m.cells[1].tags_added = vec!["miniconda:latest".into()];
    let html = page(&m);
    let d = details(&html, "py3.10-ubuntu22.04-amd64-data");
    for want in [
        "<summary>",
        "1.2 GB",
        "4m 12s (0 attempts)",
        ">000000000000<",
        "<dt>Engine</dt><dd>default</dd>",
        "<code>miniconda:py3.10-ubuntu22.04-amd64-data</code>",
        "Tags moved here by this run",
        "<code>miniconda:latest</code>",
        "<th scope=\"row\">jupyterlab</th><td><code>4.2.5</code></td>",
        "<th scope=\"row\">python</th><td><code>3.10.4</code></td>",
    ] {
        assert!(d.contains(want), "{want:?} missing from {d}");
    }
    assert!(!d.contains(" open>"), "a good cell's details start closed");
}

#[test]
fn failures_show_the_end_of_their_log_and_how_to_reproduce() {
    let dir = tempfile::tempdir().unwrap();
    let m = run();
    let failed = m.cells.iter().find(|c| c.status == Status::Failed).unwrap();
    std::fs::create_dir_all(dir.path().join("out/logs")).unwrap();
    let log: String = (1..=50).map(|i| format!("log line {i}\n")).collect();
    std::fs::write(dir.path().join(failed.log.as_ref().unwrap()), log).unwrap();
    // the current directory is not the build's: the log is found beside out/
    let html = html::page(&m, None, &dir.path().join("out/manifest.json"));
    let d = details(&html, &failed.id);
    assert!(d.contains(" open>"), "failures start open");
    assert!(d.contains("Last 20 lines of"), "{d}");
    assert!(d.contains("log line 31\nlog line 32") && d.contains("log line 50"));
    assert!(!d.contains("log line 30\n"), "{d}");
    assert!(d.contains(&format!(
        "<pre><code>cd out/contexts/{} &amp;&amp; docker build .</code></pre>",
        failed.id
    )));
    assert!(d.contains("docker build exited with"), "the reason: {d}");
    // a log that is gone is said, and the page still renders
    let timed_out = m
        .cells
        .iter()
        .find(|c| c.status == Status::TimedOut)
        .unwrap();
    let d = details(&html, &timed_out.id);
    assert!(d.contains("The build log could not be read"), "{d}");
}

#[test]
fn the_header_states_totals_outcome_wall_time_engines_and_matrix() {
    let mut m = run();
    m.outcome = Some(RunOutcome::Interrupted {
        signal: "SIGTERM".into(),
    });
    let html = page(&m);
    for want in [
        "<html lang=\"en\">",
        "<h1>image-matrix report: interrupted by SIGTERM</h1>",
        "<span class=\"badge s-built\">built</span> 1</li>",
        "<span class=\"badge s-verify-failed\">verify-failed</span> 1</li>",
        "<span class=\"badge s-excluded\">excluded</span> 2</li>",
        "<li>of 14 cells</li>",
        "2099-01-01T00:00:00Z → 2099-01-01T00:04:12Z (4m 12s)",
        &"ab".repeat(32),
        "<code>matrix.yaml</code>",
        &format!("image-matrix {}", env!("CARGO_PKG_VERSION")),
        "<code>ssh://ci@build-b</code>",
        "<span class=\"fail\">down</span>: lost at 00:03:00: connection refused",
    ] {
        assert!(html.contains(want), "{want:?} missing");
    }
    for (outcome, words) in [
        (RunOutcome::FailedFast, "failed fast"),
        (RunOutcome::EnginesLost, "engines lost"),
    ] {
        m.outcome = Some(outcome);
        assert!(page(&m).contains(words), "{words}");
    }
}

#[test]
fn hostile_strings_stay_text() {
    let mut m = run();
    let evil = "\"><script>alert(1)</script><img src=x onerror=alert(2)>";
    m.matrix = format!("m{evil}.yaml");
    m.cells[2].id = format!("py{evil}");
    m.cells[2].reason = Some(format!("reason {evil}\nsecond line"));
    m.cells[2].reproduce = Some(format!("docker build '{evil}'"));
    m.cells[2].coordinates.variant = format!("v{evil}");
    m.cells[3].coordinates.base = format!("b{evil}");
    m.cells[0].versions.insert(format!("k{evil}"), evil.into());
    m.cells[0].verification.as_mut().unwrap().checks[1].detail = evil.into();
    m.engines[1].down = Some(evil.into());
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("out/logs")).unwrap();
    m.cells[2].log = Some("out/logs/evil.log".into());
    std::fs::write(
        dir.path().join("out/logs/evil.log"),
        format!("</pre>{evil}\n"),
    )
    .unwrap();
    let html = html::page(&m, Some(&run()), &dir.path().join("out/manifest.json"));
    let lower = html.to_ascii_lowercase();
    assert!(!lower.contains("<script"), "a script tag got through");
    assert!(!lower.contains("<img"), "an img tag got through");
    let names: std::collections::BTreeSet<String> =
        dom::tags(&html).into_iter().map(|t| t.name).collect();
    let allowed = [
        "html", "head", "meta", "title", "style", "body", "header", "nav", "ul", "li", "a", "main",
        "section", "h1", "h2", "h3", "h4", "dl", "dt", "dd", "code", "strong", "table", "caption",
        "thead", "tbody", "tr", "th", "td", "span", "details", "summary", "pre", "p",
    ];
    for n in &names {
        assert!(allowed.contains(&n.as_str()), "unexpected element <{n}>");
    }
    for t in dom::tags(&html) {
        for (k, _) in &t.attrs {
            assert!(
                !k.starts_with("on"),
                "an event handler attribute {k} on <{}>",
                t.name
            );
        }
    }
    // the hostile id survives as data, intact
    let got: Vec<(String, String)> = dom::cells(&html);
    assert!(
        got.contains(&(format!("py{evil}"), "failed".into())),
        "{got:?}"
    );
    assert_eq!(got.len(), m.cells.len());
    assert!(dom::fetches(&html).is_empty(), "{:?}", dom::fetches(&html));
}

#[test]
fn nothing_is_fetched_and_no_script_is_needed() {
    let html = page(&run());
    assert!(dom::fetches(&html).is_empty(), "{:?}", dom::fetches(&html));
    assert!(!html.contains("http://") && !html.contains("https://"));
    assert!(!html.to_ascii_lowercase().contains("<script"));
    assert!(html.contains("Content-Security-Policy\" content=\"default-src 'none';"));
    assert!(
        dom::keyboard_problems(&html).is_empty(),
        "{:?}",
        dom::keyboard_problems(&html)
    );
    let details = html.matches("<details").count();
    assert_eq!(details, run().cells.len(), "a details element per cell");
}

fn previous_of(m: &Manifest) -> Manifest {
    let mut p = m.clone();
    p.started = "2098-12-31T00:00:00Z".into();
    p.cells.retain(|c| c.id != "py3.9-cuda12.4.1-amd64-data");
    let mut gone = p.cells[0].clone();
    gone.id = "py3.7-ubuntu22.04-amd64-default".into();
    p.cells.push(gone);
    let c = &mut p.cells[1];
    c.status = Status::Failed;
    c.image_id = Some("sha256:1111111111111111".into());
    c.tags.clear();
    p.cells[0].base_digest = Some("sha256:aaaaaaaaaaaaaaaa".into());
    // rebuilt tonight, up to date now: the same good image, not a status change
    p.cells[7].status = Status::Built;
    p
}

#[test]
fn changes_since_the_previous_run() {
    let mut m = run();
    m.cells[0].base_digest = Some("sha256:bbbbbbbbbbbbbbbb".into());
    let p = previous_of(&m);
    m.cells[0].tags_added = vec!["miniconda:nightly".into()];
    let html = html::page(&m, Some(&p), Path::new("out/manifest.json"));
    let start = html
        .find("<section id=\"changes\"")
        .expect("a changes section");
    let end = start + html[start..].find("</section>").unwrap();
    let ch = &html[start..end];
    for want in [
        "Changes since the run of 2098-12-31T00:00:00Z",
        "<h3>New cells (1)</h3>",
        "<a href=\"#cell-py3.9-cuda12.4.1-amd64-data\">py3.9-cuda12.4.1-amd64-data</a>",
        "<h3>Removed cells (1)</h3>",
        "<code>py3.7-ubuntu22.04-amd64-default</code>",
        "<h3>Status changes (1)</h3>",
        "py3.10-ubuntu22.04-amd64-data</a>: <code>failed</code> → <code>up-to-date</code>",
        "<h3>Image changed (1)</h3>",
        "<code>111111111111</code> → <code>000000000000</code>",
        "<h3>Base digest moved (1)</h3>",
        "<code>aaaaaaaaaaaa</code> → <code>bbbbbbbbbbbb</code>",
        "<h3>Tags added (2)</h3>",
        "<code>miniconda:nightly</code>",
        "py3.10-ubuntu22.04-amd64-data</a>: <code>miniconda:py3.10-ubuntu22.04-amd64-data</code>",
    ] {
        assert!(ch.contains(want), "{want:?} missing from {ch}");
    }
    assert!(
        !ch.contains(&format!("{}</a>: <code>built", m.cells[7].id)),
        "{ch}"
    );
    let same = html::page(&m, Some(&m), Path::new("out/manifest.json"));
    assert!(same.contains("<p>Nothing changed.</p>"));
    let md = markdown::summary(&m, Some(&p));
    for want in [
        "### Changes since the run of 2098-12-31T00:00:00Z",
        "- new cells: py3.9-cuda12.4.1-amd64-data",
        "- removed cells: py3.7-ubuntu22.04-amd64-default",
        "- status: py3.10-ubuntu22.04-amd64-data failed → up-to-date",
        "- image changed: py3.10-ubuntu22.04-amd64-data 111111111111 → 000000000000",
        "- base digest moved: py3.10-ubuntu22.04-amd64-default aaaaaaaaaaaa → bbbbbbbbbbbb",
        "- tags added: py3.10-ubuntu22.04-amd64-default: miniconda:nightly",
    ] {
        assert!(md.contains(want), "{want:?} missing from {md}");
    }
    assert!(!html::page(&m, None, Path::new("x")).contains("id=\"changes\""));
}

#[test]
fn markdown_summary_states_the_run() {
    let m = run();
    let md = markdown::summary(&m, None);
    for want in [
        "## image-matrix run: completed",
        "**✅ 1 built · ☑️ 2 up-to-date · ⚠️ 1 verify-failed · ❌ 2 failed · ⏱️ 2 timed-out · 🚫 2 cancelled · ⏸️ 2 not-started · ➖ 2 excluded** of 14 cells",
        "wall time 2099-01-01T00:00:00Z → 2099-01-01T00:04:12Z (4m 12s)",
        "- engine b (ssh://ci@build-b): ⚠️ **down**: lost at 00:03:00: connection refused",
        "| base | 3.8 · default | 3.8 · data | 3.9 · default | 3.9 · data | 3.10 · default | 3.10 · data |",
        "| ubuntu:22.04 | ❌ failed | ⏱️ timed-out | 🚫 cancelled | ⏸️ not-started | ⚠️ verify-failed | ☑️ up-to-date |",
        "| py3.8-debian12-amd64-data | ➖ excluded | no Python 3.8 on Debian 12 |",
        "| py3.10-ubuntu22.04-amd64-default | ⚠️ verify-failed | verification failed: jupyterlab answers: HTTP 502 on port 8888 |",
        "### Failures",
    ] {
        assert!(md.contains(want), "{want:?} missing from\n{md}");
    }
    let failed = m.cells.iter().find(|c| c.status == Status::Failed).unwrap();
    assert!(md.contains(&format!(
        "```sh\ncd out/contexts/{} && docker build .\n```",
        failed.id
    )));
    // every grid row has as many cells as the header
    let table: Vec<&str> = md
        .lines()
        .skip_while(|l| !l.starts_with("| base |"))
        .take_while(|l| l.starts_with('|'))
        .collect();
    let width = table[0].matches(" |").count();
    assert_eq!(table[1], format!("|---|{}", "---|".repeat(width - 1)));
    assert!(
        table[2..].iter().all(|l| l.matches(" |").count() == width),
        "{table:?}"
    );
    assert!(md.contains("| debian:12 | ➖ excluded | ➖ excluded | — | — | — | — |"));
}

#[test]
fn markdown_table_cells_escape_pipes_newlines_and_markup() {
    let mut m = run();
    m.cells[2].reason = Some("a | b\nc <b>d</b> `e`".into());
    m.cells[2].reproduce = Some("echo ``` done".into());
    let md = markdown::summary(&m, None);
    let row = md
        .lines()
        .find(|l| l.contains(&format!("| {} |", m.cells[2].id)))
        .unwrap_or_else(|| panic!("no row for {}: {md}", m.cells[2].id));
    assert!(
        row.ends_with(r"| a \| b<br>c &lt;b&gt;d&lt;/b&gt; \`e\` |"),
        "{row}"
    );
    // three cells: the escaped pipe does not count
    assert_eq!(row.replace(r"\|", "").matches('|').count(), 4, "{row}");
    assert!(md.contains("````sh\necho ``` done\n````"), "{md}");
}

fn matrix(dir: &Path, args: &[&str]) -> (i32, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_matrix"))
        .current_dir(dir)
        .env("NO_COLOR", "1")
        .args(args)
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn write_manifest(path: &Path, m: &Manifest) -> PathBuf {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, serde_json::to_string_pretty(m).unwrap()).unwrap();
    path.to_path_buf()
}

#[test]
fn the_binary_writes_the_page_and_the_summary() {
    let dir = tempfile::tempdir().unwrap();
    let m = run();
    write_manifest(&dir.path().join("out/manifest.json"), &m);
    write_manifest(&dir.path().join("last.json"), &previous_of(&m));
    let (code, _, err) = matrix(
        dir.path(),
        &[
            "report",
            "out/manifest.json",
            "-o",
            "out.html",
            "--previous",
            "last.json",
        ],
    );
    assert_eq!(code, 0, "{err}");
    assert!(err.contains("report: out.html"), "{err}");
    let page = std::fs::read_to_string(dir.path().join("out.html")).unwrap();
    let mut got = dom::cells(&page);
    got.sort();
    assert_eq!(got, expected(&m));
    assert!(page.contains("Changes since the run of 2098-12-31T00:00:00Z"));

    let (code, md, err) = matrix(
        dir.path(),
        &["report", "out/manifest.json", "--format", "markdown"],
    );
    assert_eq!(code, 0, "{err}");
    assert!(md.starts_with("## image-matrix run: completed\n"), "{md}");
    assert!(md.contains("| py3.8-debian12-amd64-data | ➖ excluded | no Python 3.8 on Debian 12 |"));

    // -o FILE.md picks Markdown by itself
    let (code, _, err) = matrix(
        dir.path(),
        &["report", "out/manifest.json", "-o", "summary.md"],
    );
    assert_eq!(code, 0, "{err}");
    let file = std::fs::read_to_string(dir.path().join("summary.md")).unwrap();
    assert_eq!(file, md);

    let (code, _, err) = matrix(dir.path(), &["report", "missing.json"]);
    assert_ne!(code, 0);
    assert!(err.contains("missing.json"), "{err}");
}

#[test]
fn the_fetch_check_tells_a_link_to_a_file_beside_the_report_from_one_that_leaves_it() {
    for leaves in [
        "<a href=\"https://evil.example/x\">x</a>",
        "<a href=\"//evil.example/x\">x</a>",
        "<a href=\"/etc/passwd\">x</a>",
        "<a href=\"javascript:alert(1)\">x</a>",
        "<img src=\"sbom/x.json\">",
        "<link href=\"sbom/x.json\">",
    ] {
        assert!(!dom::fetches(leaves).is_empty(), "{leaves} not flagged");
    }
    for stays in [
        "<a href=\"sbom/py3.11-debian12-amd64.json\">x</a>",
        "<a href=\"#cell\">x</a>",
    ] {
        assert!(dom::fetches(stays).is_empty(), "{stays} flagged");
    }
}
