//! The host's download cache: a loopback HTTP server the builds fetch through, for
//! any builder (the legacy one has no cache mounts) and across runs, cells and bases.
//!
//! While a run builds, the server answers on `127.0.0.1:PORT`, and each context is
//! sent routed through it ([`route`]): the Miniconda step asks it first for the
//! planned installer (then the mirrors, as before), and pip asks it for the package
//! index's and the framework indexes' pages. It fetches what it is asked for from the
//! upstream the context named, and keeps every installer and every file a page gives a
//! SHA256 for in `DIR/installers/` and `DIR/files/`, each under its SHA256, checked as
//! it arrives: a download that does not match is dropped and never served whole. The
//! steps' `apt-get` takes it as its proxy, and it keeps the packages of the archives'
//! pools in `DIR/apt/` ([`apt`] says why that is safe). Pages
//! are fetched fresh in every run (what a release offers may change; its files do
//! not), once per run however many cells ask, with their links pointing at the server. So the second base of a night, and the next
//! night, fetch nothing they fetched before; two builds asking for one file at once
//! share one download, streamed to both as it arrives.
//!
//! A cache never changes what is installed: the pins, SHA256 and links' hashes are the
//! ones the context names, and pip checks each file against its link's hash as it does
//! without the server. Nothing of it reaches an image's files or environment: the
//! routes are a step's environment and files the step deletes (the image's history
//! records each step's command line, a loopback route in it, as it records BuildKit's
//! mounts), and a cell's identity is the rendered context's, not the routed one.

mod apt;
mod page;
pub mod route;
mod serve;

use std::collections::HashMap;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::Serialize;

/// The port the server takes unless told otherwise: fixed, so that the routed steps
/// are the same from night to night and a builder's layer cache still matches them.
pub const DEFAULT_PORT: u16 = 38473;

/// What the server did in one run, written beside the manifest.
#[derive(Debug, Default, Clone, Serialize)]
pub struct Stats {
    /// Every file fetched from upstream (installers, wheels, sources).
    pub fetched: Vec<Fetched>,
    /// Requests answered from a file already in the cache, and their bytes.
    pub from_cache: u64,
    pub from_cache_bytes: u64,
    /// Requests that joined a download already under way (no second download).
    pub joined: u64,
    /// Index pages fetched (always from upstream) and their bytes as received.
    pub pages: u64,
    pub page_bytes: u64,
    /// Requests for a page this run had fetched already, answered without upstream.
    pub pages_reused: u64,
    /// apt's requests that are not kept (a suite's `InRelease`, indexes by name),
    /// passed through, and their bytes.
    pub passed: u64,
    pub passed_bytes: u64,
    /// Requests that failed: the upstream refused, or a file did not match its SHA256.
    pub failed: Vec<String>,
    /// Every file asked for, by SHA256: its name and how many times (one download
    /// serves them all).
    pub files: std::collections::BTreeMap<String, FileUse>,
}

#[derive(Debug, Default, Clone, Serialize)]
pub struct FileUse {
    pub name: String,
    pub requests: u64,
}

#[derive(Debug, Clone, Serialize)]
pub struct Fetched {
    pub url: String,
    pub sha256: String,
    pub bytes: u64,
    pub seconds: f64,
}

/// The running server. Dropping it stops it.
pub struct Cache {
    addr: SocketAddr,
    state: Arc<serve::State>,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

/// Where an upstream is reached: its root, and the SHA256s it may deliver.
#[derive(Default)]
pub(crate) struct Routes {
    /// Index route ids (the first 12 hex digits of the root's SHA256) → the root.
    indexes: HashMap<String, String>,
    /// An installer's SHA256 → the mirrors' URLs for it, in order.
    installers: HashMap<String, Vec<String>>,
    /// A file's SHA256 → the URL a page linked it at.
    files: HashMap<String, String>,
}

impl Cache {
    /// Serve the cache in `dir` on `127.0.0.1:port` (0: any free port). `extra_ca` is
    /// a PEM bundle trusted beside the system's (a proxy's), as the builds trust it.
    pub fn start(dir: &Path, port: u16, extra_ca: Option<&[u8]>) -> Result<Cache, String> {
        for sub in ["installers", "files", "apt", "tmp"] {
            std::fs::create_dir_all(dir.join(sub)).map_err(|e| {
                format!(
                    "cannot make the download cache {}: {e}",
                    dir.join(sub).display()
                )
            })?;
        }
        let listener = TcpListener::bind(("127.0.0.1", port)).map_err(|e| {
            format!(
                "cannot serve the download cache on 127.0.0.1:{port}: {e} (another run may hold it: give it another with --download-cache-port, or 0 for any free port)"
            )
        })?;
        let addr = listener
            .local_addr()
            .map_err(|e| format!("the download cache's address: {e}"))?;
        let mut http = reqwest::blocking::Client::builder()
            // per read of a response, not for the whole of a 2 GB wheel
            .timeout(Duration::from_secs(120))
            .connect_timeout(Duration::from_secs(30));
        if let Some(pem) = extra_ca {
            for cert in reqwest::Certificate::from_pem_bundle(pem)
                .map_err(|e| format!("the extra CA bundle is not PEM certificates: {e}"))?
            {
                http = http.add_root_certificate(cert);
            }
        }
        let http = http
            .build()
            .map_err(|e| format!("cannot start the download cache's HTTP client: {e}"))?;
        let state = Arc::new(serve::State::new(
            dir.to_path_buf(),
            format!("http://{addr}"),
            http,
        ));
        let stop = Arc::new(AtomicBool::new(false));
        let thread = {
            let (state, stop) = (state.clone(), stop.clone());
            std::thread::Builder::new()
                .name("download-cache".into())
                .spawn(move || {
                    for conn in listener.incoming() {
                        if stop.load(Ordering::SeqCst) {
                            break;
                        }
                        if let Ok(conn) = conn {
                            let state = state.clone();
                            let _ = std::thread::Builder::new()
                                .name("download-cache-conn".into())
                                .spawn(move || serve::connection(&state, conn));
                        }
                    }
                })
                .map_err(|e| format!("cannot start the download cache: {e}"))?
        };
        Ok(Cache {
            addr,
            state,
            stop,
            thread: Some(thread),
        })
    }

    /// `http://127.0.0.1:PORT`, without a trailing slash.
    pub fn base(&self) -> &str {
        &self.state.base
    }

    pub fn port(&self) -> u16 {
        self.addr.port()
    }

    /// What it did so far.
    pub fn stats(&self) -> Stats {
        lock(&self.state.stats).clone()
    }

    /// The route of an index root: `BASE/index/ID/`, the same for one root in every run.
    pub fn index_route(&self, root: &str) -> String {
        use sha2::Digest;
        let root = root.trim_end_matches('/');
        let id = crate::plan::hex(&sha2::Sha256::digest(root.as_bytes()))[..12].to_string();
        let url = format!("{}/index/{id}/", self.base());
        lock(&self.state.routes)
            .indexes
            .insert(id, root.to_string());
        url
    }

    /// The route of an installer (`BASE/installer/SHA256/FILE`), fetched from `mirrors`
    /// in order when the cache does not have it.
    pub fn installer_route(&self, file: &str, sha256: &str, mirrors: Vec<String>) -> String {
        let mut r = lock(&self.state.routes);
        let known = r.installers.entry(sha256.to_string()).or_default();
        for m in mirrors {
            if !known.contains(&m) {
                known.push(m);
            }
        }
        drop(r);
        format!("{}/installer/{sha256}/{file}", self.base())
    }
}

impl Drop for Cache {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        // wake the accepting thread, which then sees the flag
        let _ = TcpStream::connect_timeout(&self.addr, Duration::from_secs(1));
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

#[cfg(test)]
mod tests;

/// A lock that a panicking holder poisoned is still taken: the maps it guards stay
/// consistent between statements.
fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// Where a cached file of `kind` (`installers`, `files`) lives.
fn cached_path(dir: &Path, kind: &str, sha256: &str) -> PathBuf {
    dir.join(kind).join(sha256)
}
