//! An index page (PEP 503's HTML), its links pointing at the server: each file the
//! page gives a SHA256 for becomes `BASE/file/SHA256/NAME#sha256=SHA256` (pip checks
//! the hash as before), every other link becomes absolute (the page now comes from
//! elsewhere). The metadata attributes (PEP 658/714) go: pip then takes a wheel's
//! metadata from the wheel, which the cache keeps, instead of from a file beside it.

use reqwest::Url;

pub struct Rewritten {
    pub html: String,
    /// (SHA256, upstream URL without its fragment) of every routed file.
    pub files: Vec<(String, String)>,
}

const DROPPED: &[&str] = &["data-dist-info-metadata", "data-core-metadata"];

pub fn rewrite(html: &str, page: &Url, base: &str) -> Rewritten {
    let mut html = html.to_string();
    for attr in DROPPED {
        html = drop_attribute(&html, attr);
    }
    let mut out = String::with_capacity(html.len());
    let mut files = Vec::new();
    let mut rest = html.as_str();
    while let Some(at) = find_attribute(rest, "href") {
        let (before, after) = rest.split_at(at);
        out.push_str(before);
        let value_start = "href=".len();
        let quote = after.as_bytes()[value_start] as char;
        let body = &after[value_start + 1..];
        let Some(end) = body.find(quote) else {
            out.push_str(after);
            rest = "";
            break;
        };
        let raw = body[..end].replace("&amp;", "&");
        let link = match page.join(&raw) {
            Ok(mut url) => match sha256_of(&url) {
                Some(sha) => {
                    url.set_fragment(None);
                    let name = url
                        .path_segments()
                        .and_then(|mut s| s.next_back())
                        .unwrap_or("file")
                        .to_string();
                    files.push((sha.clone(), url.to_string()));
                    format!("{base}/file/{sha}/{name}#sha256={sha}")
                }
                None => url.to_string(),
            },
            Err(_) => raw,
        };
        out.push_str("href=");
        out.push(quote);
        out.push_str(&link.replace('&', "&amp;"));
        out.push(quote);
        rest = &body[end + 1..];
    }
    out.push_str(rest);
    Rewritten { html: out, files }
}

/// Where `name="…"` or `name='…'` begins (at `name`), as an attribute: after space.
fn find_attribute(text: &str, name: &str) -> Option<usize> {
    let mut from = 0;
    while let Some(i) = text[from..].find(name) {
        let at = from + i;
        let before = text[..at].chars().next_back();
        let after = &text.as_bytes()[at + name.len()..];
        if before.is_some_and(char::is_whitespace)
            && after.len() > 1
            && after[0] == b'='
            && (after[1] == b'"' || after[1] == b'\'')
        {
            return Some(at);
        }
        from = at + name.len();
    }
    None
}

fn drop_attribute(text: &str, name: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(at) = find_attribute(rest, name) {
        let quote = rest.as_bytes()[at + name.len() + 1] as char;
        let value = at + name.len() + 2;
        let Some(end) = rest[value..].find(quote) else {
            break;
        };
        // the space before it goes too
        out.push_str(rest[..at].trim_end_matches([' ', '\t']));
        rest = &rest[value + end + 1..];
    }
    out.push_str(rest);
    out
}

/// The SHA256 a link's fragment names (`#sha256=HEX`).
fn sha256_of(url: &Url) -> Option<String> {
    let hex = url.fragment()?.strip_prefix("sha256=")?;
    (hex.len() == 64 && hex.bytes().all(|b| b.is_ascii_hexdigit()))
        .then(|| hex.to_ascii_lowercase())
}

#[cfg(test)]
mod tests {
    use super::*;

    const SHA: &str = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

    #[test]
    fn hashed_links_are_routed_others_made_absolute_and_metadata_dropped() {
        let page = Url::parse("https://download.example/whl/cu121/torch/").unwrap();
        let html = format!(
            "<html><body>\n<a href=\"/whl/cu121/torch-2.1.2%2Bcu121-cp311-cp311-linux_x86_64.whl#sha256={SHA}\" data-requires-python=\"&gt;=3.8\" data-dist-info-metadata=\"sha256={SHA}\" data-core-metadata=\"sha256={SHA}\">torch</a>\n<a href='../other.tar.gz#md5=abc'>o</a>\n<a href=\"https://files.example/p/x.whl?a=1&amp;b=2#sha256={}\">x</a>\n</body></html>",
            SHA.to_uppercase()
        );
        let r = rewrite(&html, &page, "http://127.0.0.1:9");
        assert_eq!(
            r.files,
            vec![
                (
                    SHA.to_string(),
                    "https://download.example/whl/cu121/torch-2.1.2%2Bcu121-cp311-cp311-linux_x86_64.whl".to_string()
                ),
                (SHA.to_string(), "https://files.example/p/x.whl?a=1&b=2".to_string()),
            ]
        );
        assert!(r.html.contains(&format!(
            "<a href=\"http://127.0.0.1:9/file/{SHA}/torch-2.1.2%2Bcu121-cp311-cp311-linux_x86_64.whl#sha256={SHA}\" data-requires-python=\"&gt;=3.8\">torch</a>"
        )), "{}", r.html);
        assert!(
            r.html.contains(
                "<a href='https://download.example/whl/cu121/other.tar.gz#md5=abc'>o</a>"
            ),
            "{}",
            r.html
        );
        assert!(r.html.contains(&format!(
            "href=\"http://127.0.0.1:9/file/{SHA}/x.whl#sha256={SHA}\">x</a>"
        )));
        assert!(!r.html.contains("metadata"), "{}", r.html);
    }

    #[test]
    fn text_that_only_looks_like_an_attribute_is_left() {
        let page = Url::parse("https://i.example/simple/p/").unwrap();
        let html = "<p>use href=\"x\" in text; xhref=\"y\"</p><a href=\"p-1.0.whl\">p</a>";
        let r = rewrite(html, &page, "http://127.0.0.1:9");
        // a space before href= makes it an attribute even in text; xhref is not one
        assert!(r.html.contains("xhref=\"y\""), "{}", r.html);
        assert!(r
            .html
            .contains("<a href=\"https://i.example/simple/p/p-1.0.whl\">p</a>"));
        assert!(r.files.is_empty());
    }
}
