//! Docker image references: the ASCII grammar of tags and repositories, checked by
//! hand with byte classes (a Unicode-aware `\w` would let non-ASCII through).

/// `[A-Za-z0-9_][A-Za-z0-9._-]{0,127}`
pub fn check_tag(tag: &str) -> Result<(), String> {
    let b = tag.as_bytes();
    if b.is_empty() {
        return Err("a tag cannot be empty".into());
    }
    if b.len() > 128 {
        return Err(format!(
            "tag is {} bytes long; Docker allows at most 128",
            b.len()
        ));
    }
    if !(b[0].is_ascii_alphanumeric() || b[0] == b'_') {
        return Err(format!(
            "tag `{tag}` must start with a letter, digit or `_`"
        ));
    }
    if let Some(c) = tag
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-')))
    {
        return Err(format!("tag `{tag}` contains `{c}`; a tag may hold only ASCII letters, digits, `.`, `_` and `-`"));
    }
    Ok(())
}

fn check_component(c: &str) -> bool {
    // [a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*
    let b = c.as_bytes();
    if b.is_empty() || !b[0].is_ascii_alphanumeric() || !b[b.len() - 1].is_ascii_alphanumeric() {
        return false;
    }
    let mut i = 0;
    while i < b.len() {
        let ch = b[i];
        if ch.is_ascii_digit() || ch.is_ascii_lowercase() {
            i += 1;
            continue;
        }
        // a separator run: ".", "_", "__" or one or more "-"
        let start = i;
        while i < b.len() && matches!(b[i], b'.' | b'_' | b'-') {
            i += 1;
        }
        let sep = &c[start..i];
        if sep.is_empty() {
            return false; // neither a name character nor a separator
        }
        let ok = sep == "." || sep == "_" || sep == "__" || sep.bytes().all(|x| x == b'-');
        if !ok {
            return false;
        }
    }
    true
}

fn looks_like_host(first: &str) -> bool {
    first.contains('.') || first.contains(':') || first == "localhost"
}

fn check_host(h: &str) -> bool {
    let (name, port) = match h.rsplit_once(':') {
        Some((n, p)) => (n, Some(p)),
        None => (h, None),
    };
    // DNS labels: letters, digits and inner hyphens, joined by single dots.
    let label_ok = |l: &str| {
        !l.is_empty()
            && l.len() <= 63
            && l.bytes().all(|c| c.is_ascii_alphanumeric() || c == b'-')
            && !l.starts_with('-')
            && !l.ends_with('-')
    };
    !name.is_empty()
        && name.split('.').all(label_ok)
        && port
            .is_none_or(|p| !p.is_empty() && p.len() <= 5 && p.bytes().all(|c| c.is_ascii_digit()))
}

/// `[host[:port]/]component(/component)*` with lowercase components.
pub fn check_repository(repo: &str) -> Result<(), String> {
    if repo.is_empty() {
        return Err("repository cannot be empty".into());
    }
    let mut parts: Vec<&str> = repo.split('/').collect();
    if parts.len() > 1 && looks_like_host(parts[0]) {
        let host = parts.remove(0);
        if !check_host(host) {
            return Err(format!("`{host}` is not a valid registry host[:port]"));
        }
    }
    for p in &parts {
        if !check_component(p) {
            let hint = if p.bytes().any(|c| c.is_ascii_uppercase()) {
                " (repository names must be lowercase)"
            } else {
                ""
            };
            return Err(format!(
                "`{p}` in repository `{repo}` is not a valid path component{hint}; use lowercase letters and digits separated by `.`, `_`, `__` or `-`"
            ));
        }
    }
    if repo.len() > 255 {
        return Err(format!("repository `{repo}` is longer than 255 bytes"));
    }
    Ok(())
}

/// Split `name[:tag][@digest]` into (name, tag, digest).
pub fn split(reference: &str) -> (&str, Option<&str>, Option<&str>) {
    let (rest, digest) = match reference.split_once('@') {
        Some((r, d)) => (r, Some(d)),
        None => (reference, None),
    };
    let slash = rest.rfind('/').map_or(0, |i| i + 1);
    match rest[slash..].rfind(':') {
        Some(i) => (&rest[..slash + i], Some(&rest[slash + i + 1..]), digest),
        None => (rest, None, digest),
    }
}

/// Whether a reference's registry is on loopback (`localhost:5000/…`,
/// `127.0.0.1:5000/…`, `[::1]:5000/…`), where Docker itself allows plain HTTP.
pub fn is_loopback(reference: &str) -> bool {
    let Some((first, _)) = reference.split_once('/') else {
        return false;
    };
    let host = match first.strip_prefix('[') {
        Some(v6) => v6.split(']').next().unwrap_or(""),
        None => first.split(':').next().unwrap_or(""),
    };
    host == "localhost" || host == "::1" || host.starts_with("127.")
}

/// The one spelling of a reference: Docker Hub's implicit host and `library/` dropped,
/// `:latest` added when neither tag nor digest is given. `ubuntu:22.04`,
/// `library/ubuntu:22.04` and `docker.io/library/ubuntu:22.04` are one image.
pub fn normalize(reference: &str) -> String {
    let (name, tag, digest) = split(reference);
    let mut name = name;
    for hub in ["docker.io/", "index.docker.io/", "registry-1.docker.io/"] {
        if let Some(rest) = name.strip_prefix(hub) {
            name = rest;
        }
    }
    if let Some(rest) = name.strip_prefix("library/") {
        if !rest.contains('/') {
            name = rest;
        }
    }
    let mut out = name.to_string();
    match (tag, digest) {
        (Some(t), _) => {
            out.push(':');
            out.push_str(t);
        }
        (None, None) => out.push_str(":latest"),
        (None, Some(_)) => {}
    }
    if let Some(d) = digest {
        out.push('@');
        out.push_str(d);
    }
    out
}

/// Check a full base reference (`name[:tag][@sha256:…]`).
pub fn check_reference(reference: &str) -> Result<(), String> {
    let (name, tag, digest) = split(reference);
    check_repository(name)?;
    if let Some(t) = tag {
        check_tag(t)?;
    }
    if let Some(d) = digest {
        let hex = d.strip_prefix("sha256:").unwrap_or("");
        if hex.len() != 64
            || !hex
                .bytes()
                .all(|c| c.is_ascii_hexdigit() && !c.is_ascii_uppercase())
        {
            return Err(format!(
                "digest `{d}` must be sha256: followed by 64 lowercase hex digits"
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tags() {
        assert!(check_tag("conda3-python3.10-cuda12.1.0-cudnn8-devel-ubuntu22.04").is_ok());
        assert!(check_tag("_x").is_ok());
        assert!(check_tag(".x").is_err());
        assert!(check_tag("a b").is_err());
        assert!(check_tag("中文").is_err());
        assert!(check_tag(&"a".repeat(128)).is_ok());
        assert!(check_tag(&"a".repeat(129)).unwrap_err().contains("129"));
    }

    #[test]
    fn repositories() {
        for ok in [
            "miniconda",
            "nvidia/cuda",
            "nvcr.io/nvidia/cuda",
            "localhost:5000/a/b",
            "a__b",
            "a--b",
            "registry.example.com:443/ml/conda",
        ] {
            assert!(check_repository(ok).is_ok(), "{ok}");
        }
        for bad in [
            "Miniconda",
            "a/",
            "-a",
            "a..b",
            "a_-b",
            "a___b",
            "bad host:x/y",
            "..",
            "-.-",
            "../x",
            "../nvidia/cuda",
            "a.-b.io/x",
        ] {
            assert!(check_repository(bad).is_err(), "{bad}");
        }
        assert!(check_repository("ML/conda")
            .unwrap_err()
            .contains("lowercase"));
    }

    #[test]
    fn one_image_has_one_spelling() {
        for same in [
            "ubuntu:22.04",
            "library/ubuntu:22.04",
            "docker.io/library/ubuntu:22.04",
            "index.docker.io/library/ubuntu:22.04",
        ] {
            assert_eq!(normalize(same), "ubuntu:22.04", "{same}");
        }
        assert_eq!(normalize("ubuntu"), "ubuntu:latest");
        assert_eq!(
            normalize("docker.io/nvidia/cuda:12.4.1-base-ubuntu22.04"),
            "nvidia/cuda:12.4.1-base-ubuntu22.04"
        );
        assert_ne!(normalize("ghcr.io/library/ubuntu:22.04"), "ubuntu:22.04");
    }

    #[test]
    fn split_references() {
        assert_eq!(
            split("nvidia/cuda:12.1.0-devel-ubuntu22.04"),
            ("nvidia/cuda", Some("12.1.0-devel-ubuntu22.04"), None)
        );
        assert_eq!(
            split("localhost:5000/debian"),
            ("localhost:5000/debian", None, None)
        );
        assert_eq!(
            split("localhost:5000/debian:12"),
            ("localhost:5000/debian", Some("12"), None)
        );
        assert_eq!(split("a@sha256:x"), ("a", None, Some("sha256:x")));
    }
}
