//! A listing as a CycloneDX 1.5 JSON BOM: one component per package, each with its
//! package URL (`pkg:deb/debian/bash@5.2.15-2%2Bb13?arch=amd64&distro=debian-12`,
//! `pkg:conda/numpy@1.26.4?build=…`, `pkg:pypi/jupyterlab@4.2.5`) and its licence where
//! the image's metadata says one. Deterministic: the components are sorted, the serial
//! number is made from the content, and the one time in it is `metadata.timestamp`
//! (when the packages were listed).

use serde_json::Value;

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
    serde_json::to_value(bom(l, s, timestamp, notes)).unwrap_or_default()
}

/// [`document`] as the file holds it: pretty JSON and a newline. Written straight from
/// typed parts, with no [`Value`] tree between (a BOM of 700 packages is some 10,000
/// small allocations as a tree, which made an instant cell's SBOM cost more than the
/// rest of its build); the fields are declared in key order, so the bytes are those of
/// the tree's (the tests compare them).
pub fn text(
    l: &Listing,
    s: &Subject,
    timestamp: &str,
    notes: &[String],
) -> serde_json::Result<String> {
    let bom = bom(l, s, timestamp, notes);
    // about 300 bytes a component, pretty
    let mut out = Vec::with_capacity(4096 + 320 * bom.components.len());
    serde_json::to_writer_pretty(&mut out, &bom)?;
    out.push(b'\n');
    // serde_json writes UTF-8 only
    Ok(String::from_utf8(out).unwrap_or_default())
}

/// A BOM's parts, each struct's fields in the order of their JSON keys (a [`Value`]
/// object's order), so that serialising them gives the bytes the tree gave.
#[derive(serde::Serialize)]
struct Bom<'a> {
    #[serde(rename = "$schema")]
    schema: &'static str,
    #[serde(rename = "bomFormat")]
    bom_format: &'static str,
    components: Vec<Component<'a>>,
    metadata: Metadata<'a>,
    #[serde(rename = "serialNumber")]
    serial_number: String,
    #[serde(rename = "specVersion")]
    spec_version: &'static str,
    version: u32,
}

/// A package: `bom-ref`, `licenses` (when known), `name`, `purl`, `type`, `version`;
/// the package URL is both its reference and its `purl`.
struct Component<'a> {
    purl: String,
    licence: Option<&'a str>,
    name: &'a str,
    version: &'a str,
}

impl serde::Serialize for Component<'_> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeStruct;
        let mut m = s.serialize_struct("Component", 6)?;
        m.serialize_field("bom-ref", &self.purl)?;
        if let Some(name) = self.licence {
            m.serialize_field(
                "licenses",
                &[Licence {
                    license: Name { name },
                }],
            )?;
        }
        m.serialize_field("name", self.name)?;
        m.serialize_field("purl", &self.purl)?;
        m.serialize_field("type", "library")?;
        m.serialize_field("version", self.version)?;
        m.end()
    }
}

#[derive(serde::Serialize)]
struct Licence<'a> {
    license: Name<'a>,
}

#[derive(serde::Serialize)]
struct Name<'a> {
    name: &'a str,
}

#[derive(serde::Serialize)]
struct Metadata<'a> {
    component: Image<'a>,
    properties: Vec<Prop<'a>>,
    timestamp: &'a str,
    tools: Tools,
}

#[derive(serde::Serialize)]
struct Image<'a> {
    #[serde(rename = "bom-ref")]
    bom_ref: String,
    name: &'a str,
    #[serde(rename = "type")]
    kind: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    version: Option<&'a str>,
}

#[derive(serde::Serialize)]
struct Prop<'a> {
    name: std::borrow::Cow<'a, str>,
    value: std::borrow::Cow<'a, str>,
}

#[derive(serde::Serialize)]
struct Tools {
    components: [Tool; 1],
}

#[derive(serde::Serialize)]
struct Tool {
    name: &'static str,
    #[serde(rename = "type")]
    kind: &'static str,
    version: &'static str,
}

fn bom<'a>(l: &'a Listing, s: &'a Subject, timestamp: &'a str, notes: &'a [String]) -> Bom<'a> {
    use std::borrow::Cow;
    let mut components: Vec<Component> = Vec::new();
    let mut refs = std::collections::BTreeSet::new();
    for src in Source::ALL {
        for p in l
            .section(src)
            .map(|x| x.packages.as_slice())
            .unwrap_or_default()
        {
            let purl = purl(src, p, l.os.as_ref());
            // a package listed twice (two dist-info folders of one version) is one
            if !refs.contains(&purl) {
                refs.insert(purl.clone());
                components.push(Component {
                    purl,
                    licence: p.license.as_deref(),
                    name: &p.name,
                    version: &p.version,
                });
            }
        }
    }
    let prop = |name: Cow<'a, str>, value: Cow<'a, str>| Prop { name, value };
    let mut props = vec![
        prop("image-matrix:cell".into(), s.cell.into()),
        prop("image-matrix:platform".into(), s.platform.into()),
    ];
    if let Some(id) = s.image_id {
        props.push(prop("image-matrix:image-id".into(), id.into()));
    }
    for src in Source::ALL {
        props.push(prop(
            format!("image-matrix:packages:{}", src.as_str()).into(),
            l.count(src).to_string().into(),
        ));
    }
    for n in notes {
        props.push(prop("image-matrix:note".into(), n.as_str().into()));
    }
    let (name, version) = match s.tag.map(crate::reference::split) {
        Some((repo, tag, _)) => (repo, tag),
        None => (s.cell, None),
    };
    let serial_number = serial(components.iter().map(|c| c.purl.as_str()), s);
    Bom {
        schema: "http://cyclonedx.org/schema/bom-1.5.schema.json",
        bom_format: "CycloneDX",
        components,
        metadata: Metadata {
            component: Image {
                bom_ref: format!("image-matrix:image:{}", s.cell),
                name,
                kind: "container",
                version,
            },
            properties: props,
            timestamp,
            tools: Tools {
                components: [Tool {
                    name: "image-matrix",
                    kind: "application",
                    version: env!("CARGO_PKG_VERSION"),
                }],
            },
        },
        serial_number,
        spec_version: SPEC_VERSION,
        version: 1,
    }
}

/// A package URL (github.com/package-url/purl-spec): type, namespace, name, version,
/// qualifiers in key order, each part percent-encoded. (Made for every package of
/// every cell's BOM: written straight into one string, nothing cloned.)
pub fn purl(src: Source, p: &Package, os: Option<&(String, String)>) -> String {
    use std::borrow::Cow;
    let mut s = String::with_capacity(64 + p.name.len() + p.version.len());
    // the qualifiers: (key, parts of the value), in key order
    let mut q: [(&str, [&str; 3]); 2] = [("", [""; 3]); 2];
    let name: Cow<str> = match src {
        Source::Dpkg => {
            let (id, version) = os.map_or(("", ""), |(i, v)| (i.as_str(), v.as_str()));
            let id = if id.is_empty() { "debian" } else { id };
            s.push_str("pkg:deb/");
            encode_into(&mut s, &id.to_lowercase());
            s.push('/');
            if let Some(a) = &p.arch {
                q[0] = ("arch", [a, "", ""]);
            }
            if !version.is_empty() {
                q[1] = ("distro", [id, "-", version]);
            }
            Cow::Borrowed(&p.name)
        }
        Source::Conda => {
            s.push_str("pkg:conda/");
            if let Some(b) = &p.build {
                q[0] = ("build", [b, "", ""]);
            }
            if let Some(c) = &p.channel {
                q[1] = ("channel", [c, "", ""]);
            }
            Cow::Borrowed(&p.name)
        }
        // the purl spec: PyPI names lower case, `_` as `-`
        Source::Pip => {
            s.push_str("pkg:pypi/");
            Cow::Owned(p.name.to_lowercase().replace('_', "-"))
        }
    };
    encode_into(&mut s, &name);
    s.push('@');
    encode_into(&mut s, &p.version);
    let mut first = true;
    for (k, parts) in q.iter().filter(|(k, _)| !k.is_empty()) {
        s.push(if first { '?' } else { '&' });
        first = false;
        s.push_str(k);
        s.push('=');
        for part in parts {
            encode_into(&mut s, part);
        }
    }
    s
}

/// Percent-encoding of everything but the unreserved characters (`+` and `:` of Debian
/// versions included, as the purl spec asks), onto the end of `out`.
fn encode_into(out: &mut String, s: &str) {
    const HEX: &[u8; 16] = b"0123456789ABCDEF";
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b'_' | b'~') {
            out.push(b as char);
        } else {
            out.push('%');
            out.push(HEX[usize::from(b >> 4)] as char);
            out.push(HEX[usize::from(b & 15)] as char);
        }
    }
}

/// `urn:uuid:…` made from the content (a UUID of version 5's layout): the same image
/// and packages give the same serial number.
fn serial<'p>(purls: impl Iterator<Item = &'p str>, s: &Subject) -> String {
    use sha2::{Digest, Sha256};
    let mut h = Sha256::new();
    h.update(s.cell.as_bytes());
    h.update(s.image_id.unwrap_or_default().as_bytes());
    for p in purls {
        h.update(p.as_bytes());
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
    use serde_json::json;

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
        let a = serial(["pkg:pypi/a@1"].into_iter(), &s);
        assert_eq!(a, serial(["pkg:pypi/a@1"].into_iter(), &s));
        assert_ne!(a, serial(["pkg:pypi/a@2"].into_iter(), &s));
        let hex = a.strip_prefix("urn:uuid:").unwrap();
        assert_eq!(hex.len(), 36);
        assert_eq!(&hex[14..15], "5");
    }

    /// The BOM as a [`Value`] tree, made as it was before [`text`] wrote typed parts:
    /// the reference the bytes of [`text`] are checked against.
    fn reference_document(l: &Listing, s: &Subject, timestamp: &str, notes: &[String]) -> Value {
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
        let serial = serial(
            components
                .iter()
                .map(|c| c["purl"].as_str().unwrap_or_default()),
            s,
        );
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

    /// A listing with what a BOM can hold: every source, packages with and without
    /// licences, architectures and builds, a package listed twice, characters JSON
    /// escapes and names the purl spec rewrites.
    fn big_listing() -> Listing {
        let mut text = String::from("@image-matrix-packages 1\n@os ubuntu\t22.04\n@dpkg\n");
        for i in 0..300 {
            let arch = if i % 3 == 0 { "all" } else { "amd64" };
            text.push_str(&format!("ii \tlib{i}\t1:{i}.0-2+b{i}\t{arch}\n"));
        }
        text.push_str("ii \tlib7\t1:7.0-2+b7\tamd64\n");
        text.push_str("@conda /opt/conda\n");
        for i in 0..40 {
            text.push_str(&format!(
                "conda{i}\t{i}.1\tpy311h_{i}\thttps://repo.anaconda.com/pkgs/main/linux-64\tBSD-3-Clause\n"
            ));
        }
        text.push_str("@pip 3.11.9\n");
        for i in 0..80 {
            let licence = match i % 3 {
                0 => "",
                1 => "MIT \"quoted\" \\ licence é",
                _ => "Apache-2.0",
            };
            text.push_str(&format!("Jupyter_Pkg{i}\t{i}.0+cu121\tpip\t{licence}\n"));
        }
        text.push_str("@dpkg-licenses\nlib2\tGPL-3+\n@end\n");
        crate::sbom::parse::parse(&text)
    }

    #[test]
    fn the_text_is_the_trees_bytes() {
        let l = big_listing();
        let counts = Source::ALL.map(|s| l.count(s));
        assert!(counts.iter().all(|&n| n >= 40), "{counts:?}");
        let notes = ["pip: 1 entries could not be read (first: \"x\")".to_string()];
        let subjects = [
            Subject {
                cell: "py3.11-ubuntu22.04-amd64",
                tag: Some("registry.example/team/miniconda:py3.11-ubuntu22.04"),
                image_id: Some("sha256:abc"),
                platform: "linux/amd64",
            },
            Subject {
                cell: "c",
                tag: None,
                image_id: None,
                platform: "linux/arm64",
            },
        ];
        for s in &subjects {
            for (l, notes) in [(&l, &notes[..]), (&Listing::default(), &[][..])] {
                let tree = reference_document(l, s, "2026-12-07T21:00:00Z", notes);
                let want = serde_json::to_string_pretty(&tree).unwrap() + "\n";
                assert_eq!(text(l, s, "2026-12-07T21:00:00Z", notes).unwrap(), want);
                assert_eq!(document(l, s, "2026-12-07T21:00:00Z", notes), tree);
            }
        }
    }

    /// Package URLs as they were made before [`purl`] wrote them in one string.
    fn reference_purl(src: Source, p: &Package, os: Option<&(String, String)>) -> String {
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
            s.push_str(&reference_encode(&ns.to_lowercase()));
            s.push('/');
        }
        s.push_str(&reference_encode(&name));
        s.push('@');
        s.push_str(&reference_encode(&p.version));
        q.sort();
        for (i, (k, v)) in q.iter().enumerate() {
            s.push(if i == 0 { '?' } else { '&' });
            s.push_str(k);
            s.push('=');
            s.push_str(&reference_encode(v));
        }
        s
    }

    /// Percent-encoding of everything but the unreserved characters (`+` and `:` of Debian
    /// versions included, as the purl spec asks).
    fn reference_encode(s: &str) -> String {
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

    #[test]
    fn package_urls_are_those_made_before() {
        let l = big_listing();
        let odd = Package {
            name: "Odd_Name+x".into(),
            version: "1:2.0~rc1+b2 é".into(),
            arch: Some("amd64".into()),
            build: Some("py311h/0 x".into()),
            channel: Some("https://conda.example/a b".into()),
            license: None,
        };
        let oses = [
            None,
            Some(("ubuntu".to_string(), "22.04".to_string())),
            Some(("Debian".to_string(), "".to_string())),
            Some(("".to_string(), "12".to_string())),
        ];
        for os in &oses {
            for src in Source::ALL {
                let listed = l
                    .section(src)
                    .map(|x| x.packages.clone())
                    .unwrap_or_default();
                for p in listed.iter().chain([&odd, &Package::default()]) {
                    assert_eq!(
                        purl(src, p, os.as_ref()),
                        reference_purl(src, p, os.as_ref())
                    );
                }
            }
        }
    }
}
