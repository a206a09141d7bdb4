//! The server's requests: `GET /installer/SHA256/FILE`, `GET /file/SHA256/NAME` (both
//! from the cache, else downloaded once and streamed to everyone asking meanwhile) and
//! `GET /index/ID/PROJECT/` (a page, fetched and rewritten). One thread per
//! connection, one request per connection (`Connection: close`).

use std::collections::HashMap;
use std::fs::File;
use std::io::{Read, Write};
use std::net::{Shutdown, TcpStream};
use std::os::unix::fs::FileExt;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};

use super::{apt, cached_path, lock, page, Fetched, Routes, Stats};

/// A page as served: its content type and body.
type Page = (String, Arc<Vec<u8>>);

pub(crate) struct State {
    pub dir: PathBuf,
    /// `http://127.0.0.1:PORT`
    pub base: String,
    pub(super) http: reqwest::blocking::Client,
    pub routes: Mutex<Routes>,
    pub stats: Mutex<Stats>,
    /// Pages fetched in this run, rewritten, by upstream URL: a run asks for what a
    /// project offers once, however many cells install from it.
    pages: Mutex<HashMap<String, Page>>,
    /// A lock per page URL, held while it is fetched.
    page_fetches: Mutex<HashMap<String, Arc<Mutex<()>>>>,
    /// Downloads under way, by `KIND/SHA256`.
    inflight: Mutex<HashMap<String, Arc<Fill>>>,
    /// Temporary names: this process's id and a count.
    count: AtomicU64,
}

impl State {
    pub fn new(dir: PathBuf, base: String, http: reqwest::blocking::Client) -> State {
        State {
            dir,
            base,
            http,
            routes: Mutex::default(),
            stats: Mutex::default(),
            pages: Mutex::default(),
            page_fetches: Mutex::default(),
            inflight: Mutex::default(),
            count: AtomicU64::new(0),
        }
    }
}

/// One download: the file it is written to (and read from by those it is streamed
/// to, at their own offsets), and how far it got.
struct Fill {
    file: File,
    progress: Mutex<Progress>,
    moved: Condvar,
}

#[derive(Default)]
struct Progress {
    /// The upstream answered: the body is coming (its length, when it said).
    started: bool,
    length: Option<u64>,
    written: u64,
    /// Ok once the whole file is written and its SHA256 checked.
    done: Option<Result<(), String>>,
}

pub(crate) fn connection(state: &Arc<State>, mut conn: TcpStream) {
    let _ = conn.set_read_timeout(Some(Duration::from_secs(30)));
    let _ = conn.set_write_timeout(Some(Duration::from_secs(300)));
    let Some((method, path)) = request(&mut conn) else {
        return;
    };
    if method != "GET" {
        return respond(&mut conn, 405, "only GET is served");
    }
    if let Some(url) = path.strip_prefix("http://") {
        return proxied(state, &mut conn, &format!("http://{url}"));
    }
    let path = path.split(['?', '#']).next().unwrap_or("").to_string();
    let parts: Vec<&str> = path.trim_start_matches('/').splitn(3, '/').collect();
    match parts.as_slice() {
        ["installer" | "file", sha, name] if is_sha256(sha) => {
            let mut st = lock(&state.stats);
            let u = st.files.entry(sha.to_string()).or_default();
            u.name = name.to_string();
            u.requests += 1;
        }
        _ => {}
    }
    match parts.as_slice() {
        ["installer", sha, _] if is_sha256(sha) => {
            let urls = lock(&state.routes)
                .installers
                .get(*sha)
                .cloned()
                .unwrap_or_default();
            file(state, &mut conn, "installers", sha, urls);
        }
        ["file", sha, _] if is_sha256(sha) => {
            let urls = lock(&state.routes)
                .files
                .get(*sha)
                .cloned()
                .into_iter()
                .collect();
            file(state, &mut conn, "files", sha, urls);
        }
        ["index", id, project] => index_page(state, &mut conn, id, project),
        _ => respond(&mut conn, 404, "no such route"),
    }
}

/// The request line's method and path; the headers are read and ignored.
fn request(conn: &mut TcpStream) -> Option<(String, String)> {
    let mut head = Vec::new();
    let mut buf = [0u8; 2048];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
        let n = conn.read(&mut buf).ok().filter(|n| *n > 0)?;
        head.extend_from_slice(&buf[..n]);
        if head.len() > 64 * 1024 {
            return None;
        }
    }
    let text = String::from_utf8_lossy(&head);
    let mut first = text.lines().next()?.split_whitespace();
    Some((first.next()?.to_string(), first.next()?.to_string()))
}

fn respond(conn: &mut TcpStream, code: u16, text: &str) {
    let reason = match code {
        200 => "OK",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        _ => "Bad Gateway",
    };
    let _ = write!(
        conn,
        "HTTP/1.1 {code} {reason}\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{text}\n",
        text.len() + 1
    );
}

fn is_sha256(s: &str) -> bool {
    s.len() == 64 && s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

/// A file by its SHA256: from the cache, or from the download under way, or from a
/// new download of `urls` (tried in order until one answers).
pub(super) fn file(
    state: &Arc<State>,
    conn: &mut TcpStream,
    kind: &str,
    sha: &str,
    urls: Vec<String>,
) {
    fetch_once(state, conn, kind, sha, Some(sha), urls);
}

/// A file kept as `KIND/KEY`: from the cache, or from the download under way, or from
/// a new download of `urls` (tried in order until one answers), checked against
/// `expect` (its SHA256) when there is one.
fn fetch_once(
    state: &Arc<State>,
    conn: &mut TcpStream,
    kind: &str,
    sha: &str,
    expect: Option<&str>,
    urls: Vec<String>,
) {
    let path = cached_path(&state.dir, kind, sha);
    if from_cache(state, conn, &path) {
        return;
    }
    let key = format!("{kind}/{sha}");
    let fill = {
        let mut inflight = lock(&state.inflight);
        match inflight.get(&key) {
            Some(f) => {
                lock(&state.stats).joined += 1;
                f.clone()
            }
            None => {
                // it may have arrived between the look and the lock
                if path.is_file() {
                    drop(inflight);
                    from_cache(state, conn, &path);
                    return;
                }
                if urls.is_empty() {
                    drop(inflight);
                    return respond(
                        conn,
                        404,
                        "not in the download cache, and no page or mirror named it in this run",
                    );
                }
                let n = state.count.fetch_add(1, Ordering::Relaxed);
                let tmp = state
                    .dir
                    .join("tmp")
                    .join(format!("{sha}.{}.{n}", std::process::id()));
                let f = match File::options()
                    .read(true)
                    .write(true)
                    .create_new(true)
                    .open(&tmp)
                {
                    Ok(f) => f,
                    Err(e) => {
                        drop(inflight);
                        return respond(conn, 502, &format!("cannot write {}: {e}", tmp.display()));
                    }
                };
                let fill = Arc::new(Fill {
                    file: f,
                    progress: Mutex::default(),
                    moved: Condvar::new(),
                });
                inflight.insert(key.clone(), fill.clone());
                let job = Download {
                    key,
                    expect: expect.map(str::to_string),
                    urls,
                    tmp,
                    path,
                    fill: fill.clone(),
                };
                spawn_download(state, job);
                fill
            }
        }
    };
    follow(&fill, conn);
}

fn from_cache(state: &State, conn: &mut TcpStream, path: &std::path::Path) -> bool {
    let Ok(mut f) = File::open(path) else {
        return false;
    };
    let len = f.metadata().map(|m| m.len()).unwrap_or(0);
    {
        let mut s = lock(&state.stats);
        s.from_cache += 1;
        s.from_cache_bytes += len;
    }
    let _ = write!(
        conn,
        "HTTP/1.1 200 OK\r\nContent-Type: application/octet-stream\r\nContent-Length: {len}\r\nConnection: close\r\n\r\n"
    );
    let _ = std::io::copy(&mut f, conn);
    true
}

struct Download {
    key: String,
    expect: Option<String>,
    urls: Vec<String>,
    tmp: PathBuf,
    path: PathBuf,
    fill: Arc<Fill>,
}

/// Sets the download's end if it has none when dropped (a panic), so that no one
/// streaming it waits for ever.
struct Ends<'a>(&'a Fill);

impl Drop for Ends<'_> {
    fn drop(&mut self) {
        let mut p = lock(&self.0.progress);
        if p.done.is_none() {
            p.done = Some(Err("the download stopped".into()));
            self.0.moved.notify_all();
        }
    }
}

fn spawn_download(state: &Arc<State>, job: Download) {
    let fill = job.fill.clone();
    let key = job.key.clone();
    let spawned = {
        let state = state.clone();
        std::thread::Builder::new()
            .name("download-cache-fetch".into())
            .spawn(move || download(&state, job))
    };
    if let Err(e) = spawned {
        // the next request starts a download of its own rather than join this one
        lock(&state.inflight).remove(&key);
        let mut p = lock(&fill.progress);
        p.done = Some(Err(format!("cannot start a download: {e}")));
        fill.moved.notify_all();
    }
}

/// Fetch a file from the first of its URLs that answers, writing it to the temporary
/// file as it arrives; checked, it becomes the cache's. Everyone streaming it hears of
/// each piece and of the end.
fn download(state: &State, job: Download) {
    let ends = Ends(&job.fill);
    let started = Instant::now();
    let mut failures = Vec::new();
    let mut result = Err(String::new());
    let mut from = String::new();
    for url in &job.urls {
        match state.http.get(url).send() {
            Ok(r) if r.status().is_success() => {
                from = url.clone();
                result = receive(r, &job);
                break;
            }
            Ok(r) => failures.push(format!("{url}: HTTP {}", r.status())),
            Err(e) => failures.push(format!("{url}: {e}")),
        }
    }
    if from.is_empty() {
        result = Err(failures.join("; "));
    }
    if result.is_ok() {
        // a cache that cannot keep the file still served it
        let _ = std::fs::rename(&job.tmp, &job.path);
    }
    {
        let mut s = lock(&state.stats);
        match &result {
            Ok((bytes, sha256)) => s.fetched.push(Fetched {
                url: from,
                sha256: sha256.clone(),
                bytes: *bytes,
                seconds: started.elapsed().as_secs_f64(),
            }),
            Err(e) => s.failed.push(format!("{}: {e}", job.key)),
        }
    }
    if result.is_err() {
        let _ = std::fs::remove_file(&job.tmp);
    }
    lock(&state.inflight).remove(&job.key);
    {
        let mut p = lock(&job.fill.progress);
        p.done = Some(result.map(|_| ()));
        job.fill.moved.notify_all();
    }
    drop(ends);
}

/// The body, written and hashed piece by piece; its size when its SHA256 is the one
/// asked for.
fn receive(mut r: reqwest::blocking::Response, job: &Download) -> Result<(u64, String), String> {
    // asked now: once the body is read, what it says is what is left
    let length = r.content_length();
    {
        let mut p = lock(&job.fill.progress);
        p.started = true;
        p.length = length;
        job.fill.moved.notify_all();
    }
    let mut hash = Sha256::new();
    let mut buf = vec![0u8; 256 * 1024];
    let mut at = 0u64;
    loop {
        let n = match r.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(format!("{}: {e}", r.url())),
        };
        job.fill
            .file
            .write_all_at(&buf[..n], at)
            .map_err(|e| format!("cannot write {}: {e}", job.tmp.display()))?;
        hash.update(&buf[..n]);
        at += n as u64;
        let mut p = lock(&job.fill.progress);
        p.written = at;
        job.fill.moved.notify_all();
    }
    let got = crate::plan::hex(&hash.finalize());
    if let Some(want) = job.expect.as_ref().filter(|w| **w != got) {
        return Err(format!(
            "{}: SHA256 mismatch: expected {want}, got {got}",
            r.url()
        ));
    }
    if let Some(n) = length.filter(|n| *n != at) {
        return Err(format!("{}: {at} of {n} bytes arrived", r.url()));
    }
    Ok((at, got))
}

/// Stream a download to one client as it arrives. The last byte waits for the check:
/// a file that fails it is cut short, which the client sees (a short body, or no last
/// chunk).
fn follow(fill: &Fill, conn: &mut TcpStream) {
    let length = {
        let mut p = lock(&fill.progress);
        while !p.started && p.done.is_none() {
            p = fill.moved.wait(p).unwrap_or_else(|e| e.into_inner());
        }
        if !p.started {
            let why = match &p.done {
                Some(Err(e)) => e.clone(),
                _ => "no upstream answered".into(),
            };
            drop(p);
            return respond(conn, 502, &why);
        }
        p.length
    };
    let head = match length {
        Some(n) => format!("Content-Length: {n}"),
        None => "Transfer-Encoding: chunked".into(),
    };
    if write!(
        conn,
        "HTTP/1.1 200 OK\r\nContent-Type: application/octet-stream\r\n{head}\r\nConnection: close\r\n\r\n"
    )
    .is_err()
    {
        return;
    }
    let mut buf = vec![0u8; 256 * 1024];
    let mut sent = 0u64;
    loop {
        let (ready, done) = {
            let mut p = lock(&fill.progress);
            loop {
                let ready = match &p.done {
                    Some(Ok(())) => p.written,
                    Some(Err(_)) => sent,
                    None => p.written.saturating_sub(1),
                };
                if ready > sent || p.done.is_some() {
                    break (ready, p.done.clone());
                }
                p = fill.moved.wait(p).unwrap_or_else(|e| e.into_inner());
            }
        };
        while sent < ready {
            let n = (ready - sent).min(buf.len() as u64) as usize;
            if fill.file.read_exact_at(&mut buf[..n], sent).is_err()
                || send(conn, &buf[..n], length.is_none()).is_err()
            {
                let _ = conn.shutdown(Shutdown::Both);
                return;
            }
            sent += n as u64;
        }
        match done {
            Some(Ok(())) => {
                if length.is_none() {
                    let _ = conn.write_all(b"0\r\n\r\n");
                }
                return;
            }
            Some(Err(_)) => {
                let _ = conn.shutdown(Shutdown::Both);
                return;
            }
            None => {}
        }
    }
}

fn send(conn: &mut TcpStream, bytes: &[u8], chunked: bool) -> std::io::Result<()> {
    if chunked {
        write!(conn, "{:x}\r\n", bytes.len())?;
        conn.write_all(bytes)?;
        conn.write_all(b"\r\n")
    } else {
        conn.write_all(bytes)
    }
}

/// An index page, fetched from the route's root and rewritten; a page that is not
/// HTML (an index that answers JSON whatever it is asked) passes unchanged, its files
/// then fetched from upstream by pip.
fn index_page(state: &State, conn: &mut TcpStream, id: &str, project: &str) {
    let Some(root) = lock(&state.routes).indexes.get(id).cloned() else {
        return respond(conn, 404, "no index has this route in this run");
    };
    let url = format!("{root}/{project}");
    // one fetch of a page at a time: cells that start together ask for the same pages
    // at once, and the second waits for the first's
    let one = lock(&state.page_fetches)
        .entry(url.clone())
        .or_default()
        .clone();
    let _fetching = lock(&one);
    let known = lock(&state.pages).get(&url).cloned();
    let (kind, body) = match known {
        Some(page) => {
            lock(&state.stats).pages_reused += 1;
            page
        }
        None => match fetch_page(state, &url) {
            Ok(page) => {
                lock(&state.pages).insert(url, page.clone());
                page
            }
            Err((code, why)) => return respond(conn, code, &why),
        },
    };
    let _ = write!(
        conn,
        "HTTP/1.1 200 OK\r\nContent-Type: {kind}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    let _ = conn.write_all(&body);
}

/// A page from upstream, rewritten (HTML), or as it came; an error is the status to
/// answer and why.
fn fetch_page(state: &State, url: &str) -> Result<Page, (u16, String)> {
    let r = state
        .http
        .get(url)
        .header(reqwest::header::ACCEPT, "text/html")
        .send()
        .map_err(|e| (502, format!("{url}: {e}")))?;
    let status = r.status();
    if !status.is_success() {
        let code = if status.as_u16() == 404 { 404 } else { 502 };
        return Err((code, format!("{url}: HTTP {status}")));
    }
    let page_url = r.url().clone();
    let kind = r
        .headers()
        .get(reqwest::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("text/html")
        .to_string();
    let body = r.bytes().map_err(|e| (502, format!("{url}: {e}")))?;
    {
        let mut s = lock(&state.stats);
        s.pages += 1;
        s.page_bytes += body.len() as u64;
    }
    if !kind.contains("html") {
        return Ok((kind, Arc::new(body.to_vec())));
    }
    let r = page::rewrite(&String::from_utf8_lossy(&body), &page_url, &state.base);
    let mut routes = lock(&state.routes);
    for (sha, url) in r.files {
        routes.files.insert(sha, url);
    }
    Ok((
        "text/html; charset=utf-8".to_string(),
        Arc::new(r.html.into_bytes()),
    ))
}

/// A proxy request of apt's for `url` (an absolute http:// URL): kept ([`apt`] says
/// which), or passed through.
fn proxied(state: &Arc<State>, conn: &mut TcpStream, url: &str) {
    if !apt::is_archive(url) {
        return respond(
            conn,
            403,
            "the download cache is a proxy for apt archives only (…/dists/…, …/pool/…)",
        );
    }
    let Some((key, expect)) = apt::kept(url) else {
        return pass_through(state, conn, url);
    };
    {
        let mut st = lock(&state.stats);
        let u = st.files.entry(key.clone()).or_default();
        u.name = url.rsplit('/').next().unwrap_or(url).to_string();
        u.requests += 1;
    }
    fetch_once(
        state,
        conn,
        "apt",
        &key,
        expect.as_deref(),
        vec![url.to_string()],
    );
}

/// A request the cache does not keep: fetched, and passed on.
fn pass_through(state: &State, conn: &mut TcpStream, url: &str) {
    let mut r = match state.http.get(url).send() {
        Ok(r) => r,
        Err(e) => return respond(conn, 502, &format!("{url}: {e}")),
    };
    let status = r.status();
    if !status.is_success() {
        let code = if status.as_u16() == 404 { 404 } else { 502 };
        return respond(conn, code, &format!("{url}: HTTP {status}"));
    }
    let mut body = Vec::new();
    if let Err(e) = r.read_to_end(&mut body) {
        return respond(conn, 502, &format!("{url}: {e}"));
    }
    {
        let mut st = lock(&state.stats);
        st.passed += 1;
        st.passed_bytes += body.len() as u64;
    }
    let _ = write!(
        conn,
        "HTTP/1.1 200 OK\r\nContent-Type: application/octet-stream\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    let _ = conn.write_all(&body);
}
