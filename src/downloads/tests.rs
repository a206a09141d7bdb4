//! The server against a small upstream on loopback that counts what it is asked.

use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::TcpListener;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use super::Cache;

fn sha(bytes: &[u8]) -> String {
    use sha2::Digest;
    crate::plan::hex(&sha2::Sha256::digest(bytes))
}

/// An upstream: path → body; every request counted; `slow` sends each body in two
/// halves a moment apart (so that requests overlap).
struct Upstream {
    base: String,
    hits: Arc<Mutex<HashMap<String, usize>>>,
}

fn upstream(routes: Vec<(&str, Vec<u8>)>, slow: bool) -> Upstream {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let base = format!("http://{}", l.local_addr().unwrap());
    let routes: Arc<HashMap<String, Vec<u8>>> = Arc::new(
        routes
            .into_iter()
            .map(|(p, b)| (p.to_string(), b))
            .collect(),
    );
    let hits = Arc::new(Mutex::new(HashMap::new()));
    let h = hits.clone();
    std::thread::spawn(move || {
        for c in l.incoming() {
            let (routes, hits) = (routes.clone(), h.clone());
            std::thread::spawn(move || {
                let mut c = c.unwrap();
                let mut head = Vec::new();
                let mut b = [0u8; 1024];
                while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                    let n = c.read(&mut b).unwrap();
                    if n == 0 {
                        return;
                    }
                    head.extend_from_slice(&b[..n]);
                }
                let text = String::from_utf8_lossy(&head).to_string();
                let path = text.split_whitespace().nth(1).unwrap().to_string();
                *hits.lock().unwrap().entry(path.clone()).or_default() += 1;
                match routes.get(&path) {
                    Some(body) => {
                        let kind = if path.ends_with('/') {
                            "text/html"
                        } else {
                            "application/octet-stream"
                        };
                        write!(
                            c,
                            "HTTP/1.1 200 OK\r\nContent-Type: {kind}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                            body.len()
                        )
                        .unwrap();
                        let half = if slow { body.len() / 2 } else { body.len() };
                        let _ = c.write_all(&body[..half]);
                        if slow {
                            std::thread::sleep(Duration::from_millis(400));
                        }
                        let _ = c.write_all(&body[half..]);
                    }
                    None => {
                        let _ = c.write_all(
                            b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
                        );
                    }
                }
            });
        }
    });
    Upstream { base, hits }
}

impl Upstream {
    fn hits(&self, path: &str) -> usize {
        self.hits.lock().unwrap().get(path).copied().unwrap_or(0)
    }
}

fn get(url: &str) -> Result<Vec<u8>, String> {
    let r = reqwest::blocking::get(url).map_err(|e| e.to_string())?;
    if !r.status().is_success() {
        return Err(format!("HTTP {}", r.status()));
    }
    r.bytes().map(|b| b.to_vec()).map_err(|e| e.to_string())
}

/// The first href of a page that goes to the cache.
fn routed_link(page: &str, base: &str) -> String {
    let at = page.find(&format!("{base}/file/")).unwrap();
    page[at..].split(['"', '#']).next().unwrap().to_string()
}

#[test]
fn a_file_is_fetched_once_and_served_from_the_cache_the_next_night() {
    let wheel = b"a wheel's bytes".repeat(1000);
    let s = sha(&wheel);
    let page = format!("<a href=\"../../files/demo-1.0-py3-none-any.whl#sha256={s}\">demo</a>");
    let up = upstream(
        vec![
            ("/simple/demo/", page.into_bytes()),
            ("/files/demo-1.0-py3-none-any.whl", wheel.clone()),
        ],
        false,
    );
    let dir = tempfile::tempdir().unwrap();
    for night in 0..2 {
        let cache = Cache::start(dir.path(), 0, None).unwrap();
        let index = cache.index_route(&format!("{}/simple/", up.base));
        let page = String::from_utf8(get(&format!("{index}demo/")).unwrap()).unwrap();
        // a second cell of the night asks again: the page this run fetched
        assert_eq!(get(&format!("{index}demo/")).unwrap(), page.as_bytes());
        let link = routed_link(&page, cache.base());
        assert!(
            link.ends_with(&format!("/file/{s}/demo-1.0-py3-none-any.whl")),
            "{page}"
        );
        assert_eq!(get(&link).unwrap(), wheel);
        assert_eq!(get(&link).unwrap(), wheel);
        let st = cache.stats();
        assert_eq!((st.pages, st.pages_reused), (1, 1));
        assert_eq!(st.files[&s].requests, 2);
        assert_eq!(st.files[&s].name, "demo-1.0-py3-none-any.whl");
        if night == 0 {
            assert_eq!(st.fetched.len(), 1, "{st:?}");
            assert_eq!(st.fetched[0].bytes, wheel.len() as u64);
            assert_eq!(st.from_cache, 1);
        } else {
            assert!(st.fetched.is_empty(), "{st:?}");
            assert_eq!(st.from_cache, 2);
            assert_eq!(st.from_cache_bytes, 2 * wheel.len() as u64);
        }
    }
    // the page once a night, the file once
    assert_eq!(up.hits("/simple/demo/"), 2);
    assert_eq!(up.hits("/files/demo-1.0-py3-none-any.whl"), 1);
    assert!(dir.path().join("files").join(&s).is_file());
}

#[test]
fn requests_at_once_share_one_download_streamed_to_each() {
    let installer = b"#!/bin/sh\n# a stand-in installer\n".repeat(20_000);
    let s = sha(&installer);
    let up = upstream(vec![("/m/Miniconda3-x.sh", installer.clone())], true);
    let dir = tempfile::tempdir().unwrap();
    let cache = Cache::start(dir.path(), 0, None).unwrap();
    let url = cache.installer_route(
        "Miniconda3-x.sh",
        &s,
        vec![
            format!("{}/gone/Miniconda3-x.sh", up.base),
            format!("{}/m/Miniconda3-x.sh", up.base),
        ],
    );
    let got: Vec<Vec<u8>> = std::thread::scope(|sc| {
        let hs: Vec<_> = (0..4).map(|_| sc.spawn(|| get(&url).unwrap())).collect();
        hs.into_iter().map(|h| h.join().unwrap()).collect()
    });
    assert!(got.iter().all(|g| *g == installer));
    // the first mirror said 404, the second delivered once for all four
    assert_eq!(up.hits("/gone/Miniconda3-x.sh"), 1);
    assert_eq!(up.hits("/m/Miniconda3-x.sh"), 1);
    let st = cache.stats();
    assert_eq!(st.fetched.len(), 1, "{st:?}");
    assert_eq!(st.joined + st.from_cache, 3, "{st:?}");
}

#[test]
fn a_file_that_is_not_the_planned_one_is_never_served_whole_nor_kept() {
    let planned = b"the planned installer".to_vec();
    let s = sha(&planned);
    let up = upstream(
        vec![("/m/inst.sh", b"a tampered installer!".to_vec())],
        false,
    );
    let dir = tempfile::tempdir().unwrap();
    let cache = Cache::start(dir.path(), 0, None).unwrap();
    let url = cache.installer_route("inst.sh", &s, vec![format!("{}/m/inst.sh", up.base)]);
    for _ in 0..2 {
        assert!(
            get(&url).is_err(),
            "a mismatching file must not arrive whole"
        );
    }
    // asked again each time: nothing was kept
    assert_eq!(up.hits("/m/inst.sh"), 2);
    assert!(!dir.path().join("installers").join(&s).exists());
    assert_eq!(
        std::fs::read_dir(dir.path().join("tmp")).unwrap().count(),
        0
    );
    let st = cache.stats();
    assert!(st.fetched.is_empty());
    assert_eq!(st.failed.len(), 2);
    assert!(st.failed[0].contains("SHA256 mismatch"), "{st:?}");
}

#[test]
fn what_no_page_or_mirror_named_is_not_fetched_and_unknown_routes_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let cache = Cache::start(dir.path(), 0, None).unwrap();
    let base = cache.base().to_string();
    let s = "ab".repeat(32);
    for path in [
        format!("/file/{s}/x.whl"),
        "/index/000000000000/numpy/".to_string(),
        "/file/not-a-sha/x.whl".to_string(),
        "/etc/passwd".to_string(),
    ] {
        let e = get(&format!("{base}{path}")).unwrap_err();
        assert!(e.contains("404"), "{path}: {e}");
    }
}

#[test]
fn a_taken_port_is_an_error_that_says_what_to_do() {
    let held = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = held.local_addr().unwrap().port();
    let dir = tempfile::tempdir().unwrap();
    let e = Cache::start(dir.path(), port, None).err().unwrap();
    assert!(e.contains("--download-cache-port"), "{e}");
    // and a stopped server frees its port
    let c = Cache::start(dir.path(), 0, None).unwrap();
    let p = c.port();
    drop(c);
    assert!(TcpListener::bind(("127.0.0.1", p)).is_ok());
}

/// Every step of a Miniconda, framework and family context asks the cache first, with
/// BuildKit's mounts or without; the installers' and indexes' routes come before the
/// places they route to; nothing else changes.
#[test]
fn every_step_is_routed_through_the_cache_and_nothing_else_changes() {
    use crate::plan::{plan_text, PlanOptions};
    let p = plan_text(
        "version: 1\nimage: {tag: \"{python}-{variant}-{base}\", pytorch_tag: \"{torch}-{python}-{variant}-{base}\"}\nbases: [\"debian:12\"]\npython: [\"3.11\"]\nvariants: [{name: default}, {name: data, pip: [polars]}]\npytorch: {versions: [\"2.5.1\"], extra_pip: [\"einops==0.8.0\"]}\nfamilies: [{name: tool, pip: [tqdm], tag: \"{python}-{variant}-{base}\"}]\nsources: {installer_mirrors: [\"https://m1.example/miniconda/\", \"https://m2.example/miniconda/\"]}\n",
        "m.yaml",
        std::path::Path::new("."),
        &PlanOptions {
            date: "20260101".into(),
        },
    )
    .unwrap();
    let r = crate::render::Renderer::new(&p.settings);
    let dir = tempfile::tempdir().unwrap();
    let cache = Cache::start(dir.path(), 0, None).unwrap();
    let base = cache.base().to_string();
    let pypi = cache.index_route(p.settings.sources.package_index());
    let text = |f: &crate::render::File| String::from_utf8_lossy(&f.bytes).into_owned();
    let (mut steps, mut installers, mut indexes, mut extras, mut apts) = (0, 0, 0, 0, 0);
    for c in &p.cells {
        for mounted in [false, true] {
            let plain = r.render(c);
            let sent = if mounted {
                crate::render::cache::mounted(r.render(c))
            } else {
                r.render(c)
            };
            let routed = super::route::routed(sent, &cache, p.settings.sources.package_index());
            assert_eq!(plain.files.len(), routed.files.len());
            for (a, b) in plain.files.iter().zip(&routed.files) {
                let (a_text, b_text) = (text(a), text(b));
                match a.path.as_ref() {
                    "Dockerfile" => {
                        for run in b_text.lines().filter(|l| l.starts_with("RUN ")) {
                            assert!(
                                run.contains(&format!(
                                    "PIP_INDEX_URL={pypi} bash /tmp/image-matrix/"
                                )),
                                "{run}"
                            );
                            assert_eq!(run.contains("--mount=type=cache"), mounted, "{run}");
                            steps += 1;
                        }
                    }
                    "conda/mirrors.txt" => {
                        installers += 1;
                        let lines: Vec<&str> = b_text.lines().collect();
                        let (file, sha) = {
                            let t = text(
                                plain
                                    .files
                                    .iter()
                                    .find(|f| f.path == "conda/installers.txt")
                                    .unwrap(),
                            );
                            let w: Vec<String> = t.split_whitespace().map(String::from).collect();
                            (w[1].clone(), w[2].clone())
                        };
                        assert_eq!(lines[0], format!("x86_64 {base}/installer/{sha}/{file}"));
                        assert_eq!(
                            lines[1..].join("\n") + "\n",
                            a_text,
                            "the mirrors follow in order"
                        );
                    }
                    q if q.ends_with("index-urls.txt") => {
                        indexes += 1;
                        let lines: Vec<&str> = b_text.lines().collect();
                        let plain: Vec<&str> = a_text.lines().collect();
                        assert_eq!(lines.len(), 2 * plain.len());
                        for (i, url) in plain.iter().enumerate() {
                            assert!(lines[2 * i].starts_with(&format!("{base}/index/")));
                            assert_eq!(lines[2 * i + 1], *url);
                        }
                    }
                    q if q.ends_with("requirements.txt")
                        && a_text.contains("--extra-index-url") =>
                    {
                        extras += 1;
                        assert!(
                            b_text.contains(&format!("--extra-index-url {pypi}\n")),
                            "{b_text}"
                        );
                        assert_eq!(
                            b_text.replace(&pypi, p.settings.sources.package_index()),
                            a_text
                        );
                    }
                    q if q.ends_with(".sh") && a_text.contains("apt-get ") && !mounted => {
                        apts += 1;
                        let proxy = format!("apt-get -o Acquire::http::Proxy={base}/ -o Acquire::http::Pipeline-Depth=0 ");
                        assert_eq!(b_text, a_text.replace("apt-get ", &proxy), "{q}");
                    }
                    _ if mounted => {}
                    _ => assert_eq!(a_text, b_text, "{}", a.path),
                }
            }
        }
    }
    assert_eq!(steps, 24, "12 steps, sent both ways");
    assert_eq!(installers, 4);
    assert!(indexes >= 4, "{indexes}");
    assert!(extras >= 2, "{extras}");
    // the system step and the final one of each Miniconda cell, and the family's
    assert_eq!(apts, 6, "{apts}");
}

#[test]
fn cells_asking_for_a_page_at_once_share_one_fetch() {
    let up = upstream(
        vec![("/simple/demo/", b"<a href=\"x-1.0.tar.gz\">x</a>".to_vec())],
        true,
    );
    let dir = tempfile::tempdir().unwrap();
    let cache = Cache::start(dir.path(), 0, None).unwrap();
    let index = cache.index_route(&format!("{}/simple/", up.base));
    let pages: Vec<Vec<u8>> = std::thread::scope(|sc| {
        let hs: Vec<_> = (0..4)
            .map(|_| sc.spawn(|| get(&format!("{index}demo/")).unwrap()))
            .collect();
        hs.into_iter().map(|h| h.join().unwrap()).collect()
    });
    assert!(pages.iter().all(|p| *p == pages[0]));
    assert_eq!(up.hits("/simple/demo/"), 1);
    let st = cache.stats();
    assert_eq!((st.pages, st.pages_reused), (1, 3));
}

#[test]
fn apt_takes_it_as_its_proxy_for_archives_only() {
    let deb = b"!<arch>\na Debian package".repeat(100);
    let up = upstream(
        vec![
            ("/debian/pool/main/x/x_1.0_amd64.deb", deb.clone()),
            ("/debian/dists/bookworm/InRelease", b"a suite".to_vec()),
            ("/secret", b"not for apt".to_vec()),
        ],
        false,
    );
    let dir = tempfile::tempdir().unwrap();
    let cache = Cache::start(dir.path(), 0, None).unwrap();
    let apt = reqwest::blocking::Client::builder()
        .proxy(reqwest::Proxy::http(cache.base()).unwrap())
        .build()
        .unwrap();
    let fetch = |path: &str| {
        let r = apt.get(format!("{}{path}", up.base)).send().unwrap();
        (r.status().as_u16(), r.bytes().unwrap().to_vec())
    };
    for _ in 0..2 {
        assert_eq!(
            fetch("/debian/pool/main/x/x_1.0_amd64.deb"),
            (200, deb.clone())
        );
        assert_eq!(fetch("/debian/dists/bookworm/InRelease").0, 200);
    }
    assert_eq!(fetch("/secret").0, 403);
    // the package once, the suite's index each time, the rest never
    assert_eq!(up.hits("/debian/pool/main/x/x_1.0_amd64.deb"), 1);
    assert_eq!(up.hits("/debian/dists/bookworm/InRelease"), 2);
    assert_eq!(up.hits("/secret"), 0);
    let st = cache.stats();
    assert_eq!((st.passed, st.fetched.len(), st.from_cache), (2, 1, 1));
}
