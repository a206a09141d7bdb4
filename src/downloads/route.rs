//! A context as it is sent while the download cache serves: every build step asks the
//! cache first. Like BuildKit's cache mounts, this is how a context is sent, not what
//! it is (a cell's identity is the rendered context's), and nothing of it stays in the
//! image's files or environment (its history records the steps' command lines):
//!
//! - each step (`RUN … bash /tmp/image-matrix/…`) runs with `PIP_INDEX_URL` on the
//!   route of the package index, which pip prefers to the `pip.conf` the image keeps
//!   (that one still names the real index);
//! - `conda/mirrors.txt` gets the cache's route of each planned installer before the
//!   mirrors, which stay behind it in their order;
//! - a framework's or family's `index-urls.txt` gets each index's route before it, so
//!   an index the cache cannot reach is still asked directly;
//! - a `--extra-index-url` line of a requirements file goes through the cache;
//! - each `apt-get` of a step script takes the cache as its HTTP proxy (one request
//!   per connection: no pipelining).
//!
//! Each rewrite finds lines the renderer writes; a test fails when one no longer does.

use super::Cache;
use crate::render::{Bytes, Context};

/// apt as the step scripts call it.
const APT: &str = "apt-get ";

/// How every build step the tool renders runs its script.
const STEP: &str = "bash /tmp/image-matrix/";

/// The context, routed through `cache`; `pip_index` is the package index the plan
/// builds from.
pub fn routed(mut ctx: Context, cache: &Cache, pip_index: &str) -> Context {
    let pip = cache.index_route(pip_index);
    let installers: Vec<(String, String, String)> = ctx
        .files
        .iter()
        .find(|f| f.path == "conda/installers.txt")
        .map(|f| {
            String::from_utf8_lossy(&f.bytes)
                .lines()
                .filter_map(|l| {
                    let mut w = l.split_whitespace();
                    Some((
                        w.next()?.to_string(),
                        w.next()?.to_string(),
                        w.next()?.to_string(),
                    ))
                })
                .collect()
        })
        .unwrap_or_default();
    for f in &mut ctx.files {
        let text = String::from_utf8_lossy(&f.bytes);
        let new = match f.path.as_ref() {
            "Dockerfile" => Some(dockerfile(&text, &pip)),
            "conda/mirrors.txt" => Some(mirrors(&text, &installers, cache)),
            p if p.ends_with("index-urls.txt") => Some(index_urls(&text, cache)),
            p if p.ends_with("requirements.txt") => extra_indexes(&text, cache),
            p if p.ends_with(".sh") && text.contains(APT) => Some(text.replace(
                APT,
                &format!(
                    "{APT}-o Acquire::http::Proxy={}/ -o Acquire::http::Pipeline-Depth=0 ",
                    cache.base()
                ),
            )),
            _ => None,
        };
        if let Some(new) = new {
            f.bytes = Bytes::Owned(new.into_bytes());
        }
    }
    ctx
}

fn dockerfile(text: &str, pip: &str) -> String {
    let mut out = String::with_capacity(text.len() + 256);
    for line in text.split_inclusive('\n') {
        if line.starts_with("RUN ") && line.contains(STEP) {
            out.push_str(&line.replacen(STEP, &format!("PIP_INDEX_URL={pip} {STEP}"), 1));
        } else {
            out.push_str(line);
        }
    }
    out
}

/// `ARCH URL` lines: the cache's route of each installer first, then the mirrors.
fn mirrors(text: &str, installers: &[(String, String, String)], cache: &Cache) -> String {
    let mut out = String::new();
    for (arch, file, sha) in installers {
        let urls: Vec<String> = text
            .lines()
            .filter_map(|l| l.split_once(' '))
            .filter(|(a, _)| a == arch)
            .map(|(_, u)| u.trim().to_string())
            .collect();
        out.push_str(&format!(
            "{arch} {}\n",
            cache.installer_route(file, sha, urls)
        ));
    }
    out.push_str(text);
    out
}

/// Each index's route, then the index itself.
fn index_urls(text: &str, cache: &Cache) -> String {
    let mut out = String::new();
    for url in text.lines().map(str::trim).filter(|l| !l.is_empty()) {
        out.push_str(&cache.index_route(url));
        out.push('\n');
        out.push_str(url);
        out.push('\n');
    }
    out
}

fn extra_indexes(text: &str, cache: &Cache) -> Option<String> {
    const EXTRA: &str = "--extra-index-url ";
    if !text.lines().any(|l| l.starts_with(EXTRA)) {
        return None;
    }
    let mut out = String::new();
    for line in text.split_inclusive('\n') {
        match line.strip_prefix(EXTRA) {
            Some(url) => {
                out.push_str(EXTRA);
                out.push_str(&cache.index_route(url.trim()));
                out.push('\n');
            }
            None => out.push_str(line),
        }
    }
    Some(out)
}
