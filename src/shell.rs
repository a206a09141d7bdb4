//! The one shell-quoting function: for the `*.env` files rendered into build contexts
//! and for the copy-pasteable command lines the tool prints.

/// Quote a word for a POSIX shell only when it needs it (`--progress=plain` stays bare).
pub fn word(w: &str) -> String {
    let plain = !w.is_empty()
        && w.bytes()
            .all(|c| c.is_ascii_alphanumeric() || b"_./:=@%+,-".contains(&c));
    if plain {
        w.to_string()
    } else {
        quoted(w)
    }
}

/// Always single-quote (env files quote every value, plain or not).
pub fn quoted(w: &str) -> String {
    format!("'{}'", w.replace('\'', r"'\''"))
}

/// A command line from words.
pub fn line<S: AsRef<str>>(words: &[S]) -> String {
    words
        .iter()
        .map(|w| word(w.as_ref()))
        .collect::<Vec<_>>()
        .join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn words_are_quoted_only_when_they_need_it() {
        assert_eq!(word("--progress=plain"), "--progress=plain");
        assert_eq!(word("a b"), "'a b'");
        assert_eq!(word("it's"), r"'it'\''s'");
        assert_eq!(word(""), "''");
        assert_eq!(quoted("plain"), "'plain'");
        assert_eq!(line(&["docker", "build", "a b"]), "docker build 'a b'");
    }
}
