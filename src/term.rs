//! The one printer. Every line the tool writes goes through here: messages to stderr
//! (printed above the progress bars while they are live, so nothing tears them), and
//! results to stdout, where a closed pipe (`matrix plan | head`) is fine but any other
//! write error (a full disk) is reported, so that a truncated document never passes
//! for a whole one. Text from a matrix, a manifest or a catalogue reaches both, so
//! control characters are shown escaped (`\x1b`) rather than obeyed: an exclusion's
//! reason must not clear the screen or write the clipboard. Colour (SGR) sequences,
//! the reporter's own, stay.

use std::io::{self, Write};
use std::sync::Mutex;

use indicatif::MultiProgress;

static BARS: Mutex<Option<MultiProgress>> = Mutex::new(None);

/// What results are written into.
pub type Out = io::BufWriter<io::StdoutLock<'static>>;

/// Route stderr lines above these bars until [`detach`].
pub fn attach(multi: &MultiProgress) {
    if let Ok(mut b) = BARS.lock() {
        *b = Some(multi.clone());
    }
}

pub fn detach() {
    if let Ok(mut b) = BARS.lock() {
        *b = None;
    }
}

/// One message line on stderr. Errors writing to stderr are ignored: there is nowhere
/// left to report them.
pub fn line(text: &str) {
    let text = &*shown(text);
    let bars = BARS.lock().ok().and_then(|b| b.clone());
    if let Some(m) = bars {
        if m.println(text).is_ok() {
            return;
        }
    }
    let mut e = io::stderr().lock();
    let _ = writeln!(e, "{text}");
}

/// Results on stdout. A closed pipe ends output quietly; other errors are returned.
pub fn out(text: &str) -> io::Result<()> {
    let text = shown(text);
    out_with(|w| w.write_all(text.as_bytes()))
}

/// `text` with every control character but newline and tab escaped (`\x1b`, `\r`,
/// `\u{9b}`), except colour sequences (`ESC [ digits and ; m`). Borrowed when there is
/// nothing to escape, which is almost always.
pub fn shown(text: &str) -> std::borrow::Cow<'_, str> {
    let control = |c: char| c.is_control() && c != '\n' && c != '\t';
    // a byte scan first (a 10,000-cell plan table is megabytes): C0, DEL, and 0xC2,
    // which leads every C1 control (and a few printable characters) in UTF-8
    let suspect = |b: u8| (b < 0x20 && b != b'\n' && b != b'\t') || b == 0x7f || b == 0xc2;
    if !text.bytes().any(suspect) || !text.chars().any(control) {
        return std::borrow::Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len() + 16);
    let mut rest = text;
    while let Some(c) = rest.chars().next() {
        if c == '\x1b' {
            if let Some(sgr) = sgr_len(rest) {
                out.push_str(&rest[..sgr]);
                rest = &rest[sgr..];
                continue;
            }
        }
        if control(c) {
            match c {
                '\r' => out.push_str("\\r"),
                c if (c as u32) < 0x100 => out.push_str(&format!("\\x{:02x}", c as u32)),
                c => out.push_str(&format!("\\u{{{:x}}}", c as u32)),
            }
        } else {
            out.push(c);
        }
        rest = &rest[c.len_utf8()..];
    }
    std::borrow::Cow::Owned(out)
}

/// The length of the colour sequence `text` starts with (`ESC [ 1;31 m`), if it does.
fn sgr_len(text: &str) -> Option<usize> {
    let body = text.strip_prefix("\x1b[")?;
    let n = body
        .bytes()
        .take_while(|b| b.is_ascii_digit() || *b == b';')
        .count();
    (body.as_bytes().get(n) == Some(&b'm')).then_some(2 + n + 1)
}

/// Stream a large result to stdout through a buffer (a concrete writer, so that the
/// serializer's many small writes are not dynamic calls).
pub fn out_with(f: impl FnOnce(&mut Out) -> io::Result<()>) -> io::Result<()> {
    let mut o = io::BufWriter::with_capacity(1 << 16, io::stdout().lock());
    let r = f(&mut o).and_then(|()| o.flush());
    match r {
        Err(e) if e.kind() == io::ErrorKind::BrokenPipe => Ok(()),
        other => other,
    }
}

/// The width of the terminal on stderr, if it is one.
pub fn width() -> Option<usize> {
    let mut ws = std::mem::MaybeUninit::<libc::winsize>::zeroed();
    // SAFETY: TIOCGWINSZ fills a winsize struct; the pointer is valid for its size.
    let ok = unsafe { libc::ioctl(libc::STDERR_FILENO, libc::TIOCGWINSZ, ws.as_mut_ptr()) } == 0;
    if !ok {
        return None;
    }
    // SAFETY: the ioctl succeeded, so the struct is initialised.
    let ws = unsafe { ws.assume_init() };
    (ws.ws_col > 0).then_some(usize::from(ws.ws_col))
}

/// Cut a line to `width` characters, marking the cut with `…`.
pub fn cut(text: &str, width: usize) -> String {
    if text.chars().count() <= width {
        return text.to_string();
    }
    let mut s: String = text.chars().take(width.saturating_sub(1)).collect();
    s.push('…');
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_are_cut_to_the_width() {
        assert_eq!(cut("short", 10), "short");
        assert_eq!(cut("a long line of text", 8), "a long …");
        assert_eq!(cut("中文中文中文", 4), "中文中…");
    }
}

#[cfg(test)]
mod shown_tests {
    use super::shown;

    #[test]
    fn control_characters_are_shown_not_obeyed() {
        assert_eq!(
            shown("plain, with\ttab\nand newline"),
            "plain, with\ttab\nand newline"
        );
        assert_eq!(
            shown("old\x1b]52;c;ZXZpbA==\x07 base\r"),
            "old\\x1b]52;c;ZXZpbA==\\x07 base\\r"
        );
        assert_eq!(shown("numpy\x1b[2J<2"), "numpy\\x1b[2J<2");
        assert_eq!(shown("\u{9b}31m"), "\\x9b31m");
        // the reporter's colours stay
        assert_eq!(shown("\x1b[1;31mfailed\x1b[0m"), "\x1b[1;31mfailed\x1b[0m");
    }
}
