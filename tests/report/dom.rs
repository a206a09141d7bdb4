//! A tiny reader of the HTML the report writes (and of the DOM Chromium dumps): start
//! tags with their attributes, in document order. Enough to check the report's
//! structure without an HTML crate; not a general HTML parser (no comments, no raw
//! text other than `<style>`, which the report's CSS keeps free of `<`).
#![allow(dead_code)]

/// A start tag: its lower-case name and attributes (values unescaped).
#[derive(Debug, Clone)]
pub struct Tag {
    pub name: String,
    pub attrs: Vec<(String, String)>,
    /// Byte offset of the `<` in the document.
    pub at: usize,
}

impl Tag {
    pub fn attr(&self, name: &str) -> Option<&str> {
        self.attrs
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }
}

/// `&lt;` and friends back to characters.
pub fn unescape(s: &str) -> String {
    s.replace("&lt;", "<")
        .replace("&gt;", ">")
        .replace("&quot;", "\"")
        .replace("&#39;", "'")
        .replace("&nbsp;", "\u{a0}")
        .replace("&amp;", "&")
}

/// Every start tag of a document, in order.
pub fn tags(html: &str) -> Vec<Tag> {
    let b = html.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < b.len() {
        if b[i] != b'<' || i + 1 >= b.len() || !b[i + 1].is_ascii_alphabetic() {
            i += 1;
            continue;
        }
        let at = i;
        i += 1;
        let start = i;
        while i < b.len() && !b[i].is_ascii_whitespace() && b[i] != b'>' && b[i] != b'/' {
            i += 1;
        }
        let name = html[start..i].to_ascii_lowercase();
        let mut attrs = Vec::new();
        loop {
            while i < b.len() && (b[i].is_ascii_whitespace() || b[i] == b'/') {
                i += 1;
            }
            if i >= b.len() || b[i] == b'>' {
                i += 1;
                break;
            }
            let k0 = i;
            while i < b.len() && !b"=>/ \t\n\r".contains(&b[i]) {
                i += 1;
            }
            let key = html[k0..i].to_ascii_lowercase();
            let mut value = String::new();
            if i < b.len() && b[i] == b'=' {
                i += 1;
                if i < b.len() && (b[i] == b'"' || b[i] == b'\'') {
                    let q = b[i];
                    let v0 = i + 1;
                    i = v0;
                    while i < b.len() && b[i] != q {
                        i += 1;
                    }
                    value = unescape(&html[v0..i.min(b.len())]);
                    i += 1;
                } else {
                    let v0 = i;
                    while i < b.len() && !b[i].is_ascii_whitespace() && b[i] != b'>' {
                        i += 1;
                    }
                    value = unescape(&html[v0..i]);
                }
            }
            attrs.push((key, value));
        }
        if name == "style" {
            // raw text: skip to its end tag
            i = html[i..].find("</style>").map_or(b.len(), |e| i + e);
        }
        out.push(Tag { name, attrs, at });
    }
    out
}

/// The `(data-cell, data-status)` of every element that has a `data-cell`.
pub fn cells(html: &str) -> Vec<(String, String)> {
    tags(html)
        .into_iter()
        .filter_map(|t| {
            let id = t.attr("data-cell")?.to_string();
            let status = t.attr("data-status").unwrap_or("").to_string();
            Some((id, status))
        })
        .collect()
}

/// The markup of the element that carries `data-cell="<id>"`, up to its end tag.
pub fn entry<'a>(html: &'a str, id: &str) -> &'a str {
    let t = tags(html)
        .into_iter()
        .find(|t| t.attr("data-cell") == Some(id))
        .unwrap_or_else(|| panic!("no element with data-cell={id:?}"));
    let end = format!("</{}>", t.name);
    let len = html[t.at..]
        .find(&end)
        .unwrap_or_else(|| panic!("element of {id:?} is not closed"));
    &html[t.at..t.at + len + end.len()]
}

/// Problems with keyboard access to the details: a `<details>` whose first element is
/// not a `<summary>` (the summary is what takes focus and toggles it), and anything
/// taken out of the tab order.
pub fn keyboard_problems(html: &str) -> Vec<String> {
    let all = tags(html);
    let mut problems = Vec::new();
    for (i, t) in all.iter().enumerate() {
        if t.name == "details" && all.get(i + 1).map(|n| n.name.as_str()) != Some("summary") {
            problems.push(format!(
                "details {:?} does not start with a summary",
                t.attr("id")
            ));
        }
        if t.attr("tabindex")
            .is_some_and(|v| v.trim().starts_with('-'))
        {
            problems.push(format!(
                "<{}> has tabindex {:?}",
                t.name,
                t.attr("tabindex")
            ));
        }
        if t.name == "a" && t.attr("data-cell").is_some() && t.attr("href").is_none() {
            problems.push(format!("grid entry {:?} has no href", t.attr("data-cell")));
        }
    }
    problems
}

/// References that would make a browser fetch something, or leave the page for
/// somewhere else: any `src`, `srcset`, `action`, `poster`, `data` or `xlink:href`, an
/// `href` that is not a fragment (on `<a>`, only one with a scheme or a host: a link
/// to a file beside the report, such as a cell's SBOM, is fetched only when clicked and
/// goes nowhere else), a `<link>`, `<script>` or `<iframe>`, and CSS `@import` or
/// `url(`.
pub fn fetches(html: &str) -> Vec<String> {
    let mut found = Vec::new();
    for t in tags(html) {
        if t.name == "link" || t.name == "script" || t.name == "iframe" {
            found.push(format!("<{}>", t.name));
        }
        for (k, v) in &t.attrs {
            let external = match k.as_str() {
                "src" | "srcset" | "action" | "poster" | "data" | "xlink:href" | "formaction" => {
                    true
                }
                "href" if t.name == "a" => {
                    v.starts_with("//") || v.contains(':') || v.starts_with('/')
                }
                "href" => !v.starts_with('#'),
                _ => false,
            };
            if external {
                found.push(format!("<{} {k}={v:?}>", t.name));
            }
        }
    }
    for css in styles(html) {
        let css = css.to_ascii_lowercase();
        for bad in ["@import", "url("] {
            if css.contains(bad) {
                found.push(format!("{bad} in CSS"));
            }
        }
    }
    found
}

/// The CSS of a document: `<style>` elements and `style` attributes.
pub fn styles(html: &str) -> Vec<String> {
    let mut out = Vec::new();
    for t in tags(html) {
        if let Some(s) = t.attr("style") {
            out.push(s.to_string());
        }
        if t.name == "style" {
            let body = &html[t.at..];
            let open = body.find('>').map_or(0, |i| i + 1);
            let close = body.find("</style>").unwrap_or(body.len());
            out.push(body[open..close].to_string());
        }
    }
    out
}
