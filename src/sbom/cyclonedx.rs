//! A listing as a CycloneDX 1.5 JSON BOM: one component per package, each with its
//! package URL (`pkg:deb/debian/bash@5.2.15-2%2Bb13?arch=amd64&distro=debian-12`,
//! `pkg:conda/numpy@1.26.4?build=…`, `pkg:pypi/jupyterlab@4.2.5`) and its licence where
//! the image's metadata says one. Deterministic: the components are sorted, the serial
//! number is made from the content, and the one time in it is `metadata.timestamp`
//! (when the packages were listed).

use serde_json::{json, Value};

use super::parse::{Listing, Package, Source};

pub const SPEC_VERSION: &str = "1.5";
pub const FORMAT: &str = "CycloneDX 1.5 JSON";

/// The image a BOM describes.
pub struct Subject<'a> {
    pub cell: &'a str,
    /// The local tag it was listed under (`repo:tag`), if any.
    pub tag: Option<&'a str>,
    pub image_id: Option<&'a str>,
    pub platform: &'a str,
}

/// The BOM of `l`, listed at `timestamp` (RFC 3339). `notes` are said as properties of
/// the image (why a source lists nothing).
pub fn document(l: &Listing, s: &Subject, timestamp: &str, notes: &[String]) -> Value {
    let mut components: Vec<Value> = Vec::new();
    let mut refs = std::collections::BTreeSet::new();
    for src in Source::ALL {
        for p in l
            .section(src)
            .map(|x| x.packages.as_slice())
            .unwrap_or_default()
        {
            let purl = purl(src, p, l.os.as_ref());
            // a package listed twice (two dist-info folders of one version) is one
            if refs.insert(purl.clone()) {
                components.push(component(p, &purl));
            }
        }
    }
    let mut props = vec![
        prop("image-matrix:cell", s.cell),
        prop("image-matrix:platform", s.platform),
    ];
    if let Some(id) = s.image_id {
        props.push(prop("image-matrix:image-id", id));
    }
    for src in Source::ALL {
        props.push(prop(
            &format!("image-matrix:packages:{}", src.as_str()),
            &l.count(src).to_string(),
        ));
    }
    for n in notes {
        props.push(prop("image-matrix:note", n));
    }
    let (name, version) = match s.tag.map(crate::reference::split) {
        Some((repo, tag, _)) => (repo.to_string(), tag.map(str::to_string)),
        None => (s.cell.to_string(), None),
    };
    let mut image = json!({
        "type": "container",
        "bom-ref": format!("image-matrix:image:{}", s.cell),
        "name": name,
    });
    if let Some(v) = version {
        image["version"] = json!(v);
    }
    let serial = serial(&components, s);
    json!({
        "$schema": "http://cyclonedx.org/schema/bom-1.5.schema.json",
        "bomFormat": "CycloneDX",
        "specVersion": SPEC_VERSION,
        "serialNumber": serial,
        "version": 1,
        "metadata": {
            "timestamp": timestamp,
            "tools": {"components": [{
                "type": "application",
                "name": "image-matrix",
                "version": env!("CARGO_PKG_VERSION"),
            }]},
            "component": image,
            "properties": props,
        },
        "components": components,
    })
}

fn prop(name: &str, value: &str) -> Value {
    json!({"name": name, "value": value})
}

fn component(p: &Package, purl: &str) -> Value {
    let mut c = json!({
        "type": "library",
        "bom-ref": purl,
        "name": p.name,
        "version": p.version,
        "purl": purl,
    });
    if let Some(l) = &p.license {
        c["licenses"] = json!([{"license": {"name": l}}]);
    }
    c
}

/// A package URL (github.com/package-url/purl-spec): type, namespace, name, version,
/// qualifiers in key order, each part percent-encoded.
pub fn purl(src: Source, p: &Package, os: Option<&(String, String)>) -> String {
    let mut q: Vec<(&str, String)> = Vec::new();
    let (kind, namespace, name) = match src {
        Source::Dpkg => {
            let (id, version) = os.cloned().unwrap_or_default();
            let id = if id.is_empty() {
                "debian".to_string()
            } else {
                id
            };
            if let Some(a) = &p.arch {
                q.push(("arch", a.clone()));
            }
            if !version.is_empty() {
                q.push(("distro", format!("{id}-{version}")));
            }
            ("deb", Some(id), p.name.clone())
        }
        Source::Conda => {
            if let Some(b) = &p.build {
                q.push(("build", b.clone()));
            }
            if let Some(c) = &p.channel {
                q.push(("channel", c.clone()));
            }
            ("conda", None, p.name.clone())
        }
        // the purl spec: PyPI names lower case, `_` as `-`
        Source::Pip => ("pypi", None, p.name.to_lowercase().replace('_', "-")),
    };
    let mut s = format!("pkg:{kind}/");
    if let Some(ns) = namespace {
        s.push_str(&encode(&ns.to_lowercase()));
        s.push('/');
    }
    s.push_str(&encode(&name));
    s.push('@');
    s.push_str(&encode(&p.version));
    q.sort();
    for (i, (k, v)) in q.iter().enumerate() {
        s.push(if i == 0 { '?' } else { '&' });
        s.push_str(k);
        s.push('=');
        s.push_str(&encode(v));
    }
    s
}

/// Percent-encoding of everything but the unreserved characters (`+` and `:` of Debian
/// versions included, as the purl spec asks).
fn encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b'_' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// `urn:uuid:…` made from the content (a UUID of version 5's layout): the same image
/// and packages give the same serial number.
fn serial(components: &[Value], s: &Subject) -> String {
    use sha2::{Digest, Sha256};
    let mut h = Sha256::new();
    h.update(s.cell.as_bytes());
    h.update(s.image_id.unwrap_or_default().as_bytes());
    for c in components {
        h.update(c["purl"].as_str().unwrap_or_default().as_bytes());
        h.update(b"\n");
    }
    let mut b: Vec<u8> = h.finalize()[..16].to_vec();
    b[6] = (b[6] & 0x0f) | 0x50;
    b[8] = (b[8] & 0x3f) | 0x80;
    let x: String = b.iter().map(|v| format!("{v:02x}")).collect();
    format!(
        "urn:uuid:{}-{}-{}-{}-{}",
        &x[..8],
        &x[8..12],
        &x[12..16],
        &x[16..20],
        &x[20..]
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pkg(name: &str, version: &str) -> Package {
        Package {
            name: name.into(),
            version: version.into(),
            ..Package::default()
        }
    }

    #[test]
    fn package_urls_follow_the_spec() {
        let os = ("debian".to_string(), "12".to_string());
        let bash = Package {
            arch: Some("amd64".into()),
            ..pkg("bash", "5.2.15-2+b13")
        };
        assert_eq!(
            purl(Source::Dpkg, &bash, Some(&os)),
            "pkg:deb/debian/bash@5.2.15-2%2Bb13?arch=amd64&distro=debian-12"
        );
        assert_eq!(
            purl(Source::Dpkg, &pkg("libc6", "1:2.36"), None),
            "pkg:deb/debian/libc6@1%3A2.36"
        );
        assert_eq!(
            purl(Source::Pip, &pkg("Jupyter_Server", "2.14.2"), None),
            "pkg:pypi/jupyter-server@2.14.2"
        );
        let numpy = Package {
            build: Some("py311h_0".into()),
            channel: Some("pkgs/main".into()),
            ..pkg("numpy", "1.26.4")
        };
        assert_eq!(
            purl(Source::Conda, &numpy, None),
            "pkg:conda/numpy@1.26.4?build=py311h_0&channel=pkgs%2Fmain"
        );
    }

    #[test]
    fn the_serial_number_is_a_uuid_made_from_the_content() {
        let s = Subject {
            cell: "c",
            tag: None,
            image_id: Some("sha256:1"),
            platform: "linux/amd64",
        };
        let a = serial(&[json!({"purl": "pkg:pypi/a@1"})], &s);
        assert_eq!(a, serial(&[json!({"purl": "pkg:pypi/a@1"})], &s));
        assert_ne!(a, serial(&[json!({"purl": "pkg:pypi/a@2"})], &s));
        let hex = a.strip_prefix("urn:uuid:").unwrap();
        assert_eq!(hex.len(), 36);
        assert_eq!(&hex[14..15], "5");
    }
}
