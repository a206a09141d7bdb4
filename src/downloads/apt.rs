//! apt through the cache: the build steps' `apt-get` takes the server as its HTTP
//! proxy (`Acquire::http::Proxy`, for http:// sources only: an https source is asked
//! directly). Two kinds of file are kept:
//!
//! - a package of an archive's pool (`…/pool/…/NAME_VERSION_ARCH.deb`): an archive
//!   never publishes other bytes under a pool name, and apt checks each package
//!   against the signed indexes, so a cached one cannot change what is installed
//!   (a bad copy fails apt's check; removing the cache folder clears it);
//! - an index fetched by its hash (`…/by-hash/SHA256/HEX`), checked here too.
//!
//! Everything else (`InRelease`, indexes by name) passes through, fetched every time:
//! what a suite offers changes.

use std::io::Write;
use std::net::TcpStream;
use std::sync::Arc;

use super::lock;
use super::serve::{fetch_once, respond, State};

/// Answer a proxy request for `url` (an absolute http:// URL).
pub(super) fn proxied(state: &Arc<State>, conn: &mut TcpStream, url: &str) {
    let name = url.rsplit('/').next().unwrap_or(url).to_string();
    let key = match by_hash(url) {
        Some(hex) => Some((hex.clone(), Some(hex))),
        None if is_pool_package(url) => {
            use sha2::Digest;
            Some((
                crate::plan::hex(&sha2::Sha256::digest(url.as_bytes())),
                None,
            ))
        }
        None => None,
    };
    match key {
        Some((key, expect)) => {
            {
                let mut st = lock(&state.stats);
                let u = st.files.entry(key.clone()).or_default();
                u.name = name;
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
        None => pass_through(state, conn, url),
    }
}

/// `…/by-hash/SHA256/HEX`: the HEX.
fn by_hash(url: &str) -> Option<String> {
    let (_, hex) = url.rsplit_once("/by-hash/SHA256/")?;
    (hex.len() == 64 && hex.bytes().all(|b| b.is_ascii_hexdigit()))
        .then(|| hex.to_ascii_lowercase())
}

fn is_pool_package(url: &str) -> bool {
    url.contains("/pool/")
        && (url.ends_with(".deb") || url.ends_with(".udeb"))
        && !url.contains(['?', '#'])
}

/// A request the cache does not keep: fetched and streamed on.
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
    if let Err(e) = std::io::Read::read_to_end(&mut r, &mut body) {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pool_packages_and_hashed_indexes_are_kept_the_rest_is_not() {
        let hex = "AB".repeat(32);
        assert_eq!(
            by_hash(&format!(
                "http://deb.debian.org/debian/dists/bookworm/main/binary-amd64/by-hash/SHA256/{hex}"
            )),
            Some(hex.to_lowercase())
        );
        assert!(by_hash("http://deb.debian.org/debian/dists/bookworm/InRelease").is_none());
        assert!(is_pool_package(
            "http://deb.debian.org/debian/pool/main/o/openssh/openssh-server_9.2p1-2+deb12u3_amd64.deb"
        ));
        assert!(!is_pool_package(
            "http://deb.debian.org/debian/dists/bookworm/main/binary-amd64/Packages.xz"
        ));
        assert!(!is_pool_package("http://x.example/pool/a.deb?x=1"));
    }
}
