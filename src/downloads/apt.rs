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

/// Whether `url` is one apt asks for: an archive's suites (`…/dists/…`) or pool
/// (`…/pool/…`). The server is apt's proxy for nothing else: it is not an open proxy
/// for whatever else runs on this machine.
pub(super) fn is_archive(url: &str) -> bool {
    let path = url
        .strip_prefix("http://")
        .and_then(|rest| rest.split_once('/'))
        .map_or("", |(_, p)| p);
    !path.contains("..")
        && (path.contains("/dists/")
            || path.contains("/pool/")
            || path.starts_with("dists/")
            || path.starts_with("pool/"))
}

/// How a proxy request for `url` is kept: under which key, checked against which
/// SHA256; None for one passed through.
pub(super) fn kept(url: &str) -> Option<(String, Option<String>)> {
    match by_hash(url) {
        Some(hex) => Some((hex.clone(), Some(hex))),
        None if is_pool_package(url) => {
            use sha2::Digest;
            Some((
                crate::plan::hex(&sha2::Sha256::digest(url.as_bytes())),
                None,
            ))
        }
        None => None,
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

    #[test]
    fn only_an_archive_is_proxied() {
        for ok in [
            "http://deb.debian.org/debian/dists/bookworm/InRelease",
            "http://archive.ubuntu.com/ubuntu/pool/main/c/curl/curl_8.5.0-2ubuntu10_amd64.deb",
            "http://mirror.example/dists/stable/Release",
        ] {
            assert!(is_archive(ok), "{ok}");
        }
        for refused in [
            "http://169.254.169.254/latest/meta-data/",
            "http://127.0.0.1:2375/containers/json",
            "http://x.example/",
            "http://x.example/a/../dists/x",
            "https://deb.debian.org/debian/dists/bookworm/InRelease",
        ] {
            assert!(!is_archive(refused), "{refused}");
        }
    }
}
