//! The HTML report in a real browser: a realistic run of `matrix build` against the
//! fake docker (several bases, Pythons and variants; built, up-to-date, failed,
//! timed-out, excluded and verify-failed cells, and a previous run to compare with),
//! its page made by `matrix report`, then opened in Debian's headless Chromium: the
//! screenshot is not blank and shows the status colours, the DOM Chromium built has
//! one element per cell with the right `data-status`, and every `<details>` opens from
//! the keyboard. Chromium missing is a failure (scripts/setup-browser.sh installs it),
//! never a skip.

mod common;
#[path = "report/dom.rs"]
mod dom;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::fake::Env;

const CHROMIUM: &str = "/usr/bin/chromium";
const FLAGS: &[&str] = &[
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--hide-scrollbars",
    "--force-device-scale-factor=1",
];
/// A headless browser that takes longer than this is stuck.
const DEADLINE: Duration = Duration::from_secs(120);

const MATRIX: &str = r#"version: 1
image:
  tag: "conda3-python{python}-{base}-{variant}"
  aliases: ["{tag}-nightly"]
bases:
  - nvidia/cuda:12.4.1-cudnn-devel-ubuntu22.04
  - ubuntu:22.04
  - "debian:12"
python: ["3.10", {version: "3.8", miniconda: "23.11.0-2"}, "3.11"]
variants:
  - {name: default}
  - {name: data, pip: [pandas]}
exclude:
  - {python: "3.8", base: "debian*", reason: "Python 3.8 is not built on Debian"}
"#;

/// Ids of the fixture run's special cells.
const TIMED_OUT: &str = "py3.11-ubuntu22.04-amd64";
const FAILED: &str = "py3.8-cuda12.4.1-cudnn-devel-ubuntu22.04-amd64-data";
const VERIFY_FAILED: &str = "py3.10-debian12-amd64";
const VERIFIED: &str = "py3.10-debian12-amd64-data";

fn require_chromium() {
    assert!(
        Path::new(CHROMIUM).exists(),
        "{CHROMIUM} is missing: this test needs Debian's Chromium; run scripts/setup-browser.sh"
    );
}

/// Chromium with a fresh profile; its stdout. Panics (with stderr) on failure or hang.
fn chromium(args: &[&str]) -> String {
    require_chromium();
    let profile = tempfile::tempdir().unwrap();
    let out = tempfile::NamedTempFile::new().unwrap();
    let err = tempfile::NamedTempFile::new().unwrap();
    let mut child = Command::new(CHROMIUM)
        .args(FLAGS)
        .arg(format!("--user-data-dir={}", profile.path().display()))
        .args(args)
        .stdin(Stdio::null())
        .stdout(out.reopen().unwrap())
        .stderr(err.reopen().unwrap())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {CHROMIUM} (run scripts/setup-browser.sh): {e}"));
    let start = Instant::now();
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        if start.elapsed() > DEADLINE {
            let _ = child.kill();
            let _ = child.wait();
            panic!("chromium {args:?} did not finish in {DEADLINE:?}");
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let stderr = std::fs::read_to_string(err.path()).unwrap_or_default();
    assert!(
        status.success(),
        "chromium {args:?} failed ({status}):\n{stderr}"
    );
    std::fs::read_to_string(out.path()).unwrap()
}

/// Two nightly runs against the fake docker, the second compared with the first.
/// Returns the environment and the previous run's manifest.
fn realistic_run() -> (Env, PathBuf) {
    let e = Env::new(36001);
    std::fs::write(e.path("matrix.yaml"), MATRIX).unwrap();
    // the first night: Python 3.10 and 3.11 only, one build fails
    e.mode(TIMED_OUT, "fail");
    let (code, err) = e.run(&["-j", "4", "--filter", "python=3.1*"]);
    assert_eq!(code, 1, "the first run has one failure:\n{err}");
    let previous = e.path("previous.json");
    std::fs::copy(e.path("out/manifest.json"), &previous).unwrap();
    // the second night: every Python; the failed cell hangs past its timeout, one
    // new cell fails, the rest are built (3.8) or up to date
    e.mode(TIMED_OUT, "hang");
    e.mode(FAILED, "fail");
    let (code, err) = e.run(&["-j", "4", "--timeout", "1s", "--kill-grace", "1s"]);
    assert_eq!(code, 1, "the second run has failures:\n{err}");
    assert!(e.leftovers().is_empty(), "{:?}", e.leftovers());
    // `--verify` needs a real engine: record what it would have found
    let mut m = e.manifest();
    for c in m["cells"].as_array_mut().unwrap() {
        let bad = c["id"] == VERIFY_FAILED;
        if bad || c["id"] == VERIFIED {
            c["verification"] = serde_json::json!({
                "ok": !bad,
                "ready_seconds": 2.5,
                "checks": [
                    {"name": "ssh login", "ok": true, "detail": "root login answered"},
                    {"name": "jupyterlab answers", "ok": !bad,
                     "detail": if bad { "HTTP 502 on port 8888" } else { "HTTP 200" }},
                ],
            });
        }
    }
    let text = serde_json::to_string_pretty(&m).unwrap();
    std::fs::write(e.path("out/manifest.json"), text).unwrap();
    (e, previous)
}

/// What each cell's grid element must say, from the manifest.
fn expected(m: &serde_json::Value) -> Vec<(String, String)> {
    let mut v: Vec<(String, String)> = m["cells"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| {
            let status = c["status"].as_str().unwrap();
            let good = status == "built" || status == "up-to-date";
            let word = if good && c["verification"]["ok"] == false {
                "verify-failed"
            } else {
                status
            };
            (c["id"].as_str().unwrap().to_string(), word.to_string())
        })
        .collect();
    v.sort();
    v
}

/// Python 3 (stdlib only) decodes the PNG: `width height colours non-white`, then the
/// pixel count of each colour asked for. No image crate in the tree, and this is the
/// only place that needs one.
const PNG_STATS: &str = r#"
import sys, zlib, struct
from collections import Counter
data = open(sys.argv[1], "rb").read()
assert data[:8] == b"\x89PNG\r\n\x1a\n", "not a PNG"
pos, idat = 8, []
while pos < len(data):
    n, kind = struct.unpack(">I4s", data[pos:pos + 8])
    body = data[pos + 8:pos + 8 + n]
    if kind == b"IHDR":
        w, h, depth, ctype, _, _, interlace = struct.unpack(">IIBBBBB", body)
    elif kind == b"IDAT":
        idat.append(body)
    pos += 12 + n
assert depth == 8 and ctype in (2, 6) and interlace == 0, (depth, ctype, interlace)
bpp = 3 if ctype == 2 else 4
raw = zlib.decompress(b"".join(idat))
stride = w * bpp
prev = bytearray(stride)
counts = Counter()
i = 0
for y in range(h):
    f = raw[i]; line = bytearray(raw[i + 1:i + 1 + stride]); i += 1 + stride
    if f == 1:
        for x in range(bpp, stride): line[x] = (line[x] + line[x - bpp]) & 255
    elif f == 2:
        line = bytearray((a + b) & 255 for a, b in zip(line, prev))
    elif f == 3:
        for x in range(stride):
            left = line[x - bpp] if x >= bpp else 0
            line[x] = (line[x] + ((left + prev[x]) >> 1)) & 255
    elif f == 4:
        for x in range(stride):
            a = line[x - bpp] if x >= bpp else 0
            b = prev[x]; c = prev[x - bpp] if x >= bpp else 0
            p = a + b - c; pa = abs(p - a); pb = abs(p - b); pc = abs(p - c)
            line[x] = (line[x] + (a if pa <= pb and pa <= pc else b if pb <= pc else c)) & 255
    counts.update(zip(line[0::bpp], line[1::bpp], line[2::bpp]))
    prev = line
print(w, h, len(counts), w * h - counts[(255, 255, 255)])
for want in sys.argv[2:]:
    print(want, counts[tuple(bytes.fromhex(want))])
"#;

/// The background colours of the statuses the fixture has (src/report/html.rs).
const COLOURS: &[(&str, &str)] = &[
    ("built", "dcf5e3"),
    ("up-to-date", "dce9fb"),
    ("verify-failed", "fbe1f2"),
    ("failed", "fde2e1"),
    ("timed-out", "feebd0"),
];

struct Shot {
    width: u64,
    height: u64,
    colours: u64,
    non_white: u64,
    pixels: Vec<(String, u64)>,
}

fn png_stats(png: &Path) -> Shot {
    let mut args = vec![
        "-c".to_string(),
        PNG_STATS.to_string(),
        png.display().to_string(),
    ];
    args.extend(COLOURS.iter().map(|(_, hex)| hex.to_string()));
    let out = Command::new("python3")
        .args(&args)
        .output()
        .expect("python3 decodes the screenshot");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mut lines = text.lines();
    let head: Vec<u64> = lines
        .next()
        .unwrap()
        .split(' ')
        .map(|n| n.parse().unwrap())
        .collect();
    let pixels = lines
        .map(|l| {
            let (hex, n) = l.split_once(' ').unwrap();
            (hex.to_string(), n.parse().unwrap())
        })
        .collect();
    Shot {
        width: head[0],
        height: head[1],
        colours: head[2],
        non_white: head[3],
        pixels,
    }
}

#[test]
fn the_report_renders_in_chromium() {
    require_chromium();
    let t0 = Instant::now();
    let (e, previous) = realistic_run();
    let built = t0.elapsed();
    let m = e.manifest();
    let want = expected(&m);
    let words: std::collections::BTreeSet<&str> = want.iter().map(|(_, s)| s.as_str()).collect();
    for w in [
        "built",
        "up-to-date",
        "failed",
        "timed-out",
        "excluded",
        "verify-failed",
    ] {
        assert!(words.contains(w), "the fixture has a {w} cell: {want:?}");
    }
    // `matrix build` wrote its own report beside the manifest
    let own = std::fs::read_to_string(e.path("out/report.html")).unwrap();
    assert_eq!(dom::cells(&own).len(), want.len());

    let out = Command::new(env!("CARGO_BIN_EXE_matrix"))
        .current_dir(e.dir.path())
        .args([
            "report",
            "out/manifest.json",
            "-o",
            "report.html",
            "--previous",
        ])
        .arg(&previous)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let page = e.path("report.html");
    let html = std::fs::read_to_string(&page).unwrap();
    assert!(dom::fetches(&html).is_empty(), "{:?}", dom::fetches(&html));
    let changes = &html[html.find("id=\"changes\"").unwrap()..html.find("id=\"grid\"").unwrap()];
    assert!(
        changes.contains("<h3>New cells (4)</h3>"),
        "the 3.8 cells are new (the excluded ones were in the first run): {changes}"
    );
    assert!(html.contains(&format!(
        "{TIMED_OUT}</a>: <code>failed</code> → <code>timed-out</code>"
    )));
    assert!(
        html.contains("E: something broke"),
        "the failed build's log tail"
    );
    let url = format!("file://{}", page.display());

    // (b) the DOM Chromium built: one element per cell, with its status
    let t1 = Instant::now();
    let dumped = chromium(&["--dump-dom", &url]);
    let mut got = dom::cells(&dumped);
    assert_eq!(got.len(), want.len(), "one element per cell in the DOM");
    got.sort();
    assert_eq!(got, want);
    // (c) keyboard: every details opens from its summary; nothing leaves the tab order
    let problems = dom::keyboard_problems(&dumped);
    assert!(problems.is_empty(), "{problems:?}");
    let details = dom::tags(&dumped)
        .iter()
        .filter(|t| t.name == "details")
        .count();
    assert_eq!(details, want.len(), "a details element per cell");
    assert!(dumped.contains("<html lang=\"en\">"));

    // (a) the screenshot is a page, not a blank: many colours, ink, and the status colours
    let dir = tempfile::tempdir().unwrap();
    let png = dir.path().join("report.png");
    chromium(&[
        &format!("--screenshot={}", png.display()),
        "--window-size=1280,1400",
        &url,
    ]);
    let shot = png_stats(&png);
    let browser = t1.elapsed();
    assert_eq!((shot.width, shot.height), (1280, 1400));
    assert!(shot.colours > 50, "{} colours: blank?", shot.colours);
    let ink = shot.non_white as f64 / (shot.width * shot.height) as f64;
    assert!(
        ink > 0.05,
        "only {:.1}% of the page is not white",
        ink * 100.0
    );
    for ((word, _), (hex, n)) in COLOURS.iter().zip(&shot.pixels) {
        assert!(
            *n > 200,
            "the {word} colour #{hex} shows on {n} pixels only"
        );
    }
    eprintln!(
        "report_browser: fixture runs {built:?}, chromium + checks {browser:?}, \
         {} cells, {} colours",
        want.len(),
        shot.colours
    );
}
