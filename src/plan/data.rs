//! The data files the planner reads (the installer catalogue, the `nvidia/cuda` tag
//! list, the framework catalogues): where fresher copies live, which copy is read, and
//! the `# updated: YYYY-MM-DD from SOURCE` stamp each starts with.
//!
//! Every file is compiled into the binary from `data/`, so a plan never depends on the
//! network; `matrix catalogue update` writes fresher copies into a data directory
//! (`$IMAGE_MATRIX_DATA`, else `~/.local/share/image-matrix`), and a copy there with a
//! stamp is read instead of the built-in one. The catalogues take these from here, not
//! from one another.

use std::path::PathBuf;

/// Where `catalogue update` writes and where fresher copies are read from.
pub fn data_dir() -> Option<PathBuf> {
    if let Some(d) = std::env::var_os("IMAGE_MATRIX_DATA").filter(|d| !d.is_empty()) {
        return Some(PathBuf::from(d));
    }
    let home = std::env::var_os("XDG_DATA_HOME")
        .filter(|d| !d.is_empty())
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".local/share")))?;
    Some(home.join("image-matrix"))
}

/// A data file: the data directory's copy if it has one (with a stamp), else the
/// built-in one.
pub fn data_text(file: &str, builtin: &'static str) -> &'static str {
    let fresh = data_dir()
        .map(|d| d.join(file))
        .and_then(|p| std::fs::read_to_string(p).ok())
        .filter(|t| stamp(t).is_some());
    match fresh {
        // leaked once per process: the catalogue lives as long as the process
        Some(t) => Box::leak(t.into_boxed_str()),
        None => builtin,
    }
}

/// `# updated: YYYY-MM-DD from SOURCE` → (date, source).
pub fn stamp(text: &str) -> Option<(String, String)> {
    let rest = text.lines().next()?.strip_prefix("# updated: ")?;
    let (date, source) = rest.split_once(" from ").unwrap_or((rest, ""));
    let ok = date.len() == 10
        && date.bytes().enumerate().all(|(i, c)| {
            if i == 4 || i == 7 {
                c == b'-'
            } else {
                c.is_ascii_digit()
            }
        });
    ok.then(|| (date.to_string(), source.to_string()))
}

/// Days from `a` to `b` (`YYYY-MM-DD` each).
pub fn days_between(a: &str, b: &str) -> Option<i64> {
    fn days(d: &str) -> Option<i64> {
        let y: i64 = d.get(..4)?.parse().ok()?;
        let m: i64 = d.get(5..7)?.parse().ok()?;
        let dd: i64 = d.get(8..10)?.parse().ok()?;
        // days since the civil epoch (Howard Hinnant's algorithm)
        let y = if m <= 2 { y - 1 } else { y };
        let era = y.div_euclid(400);
        let yoe = y - era * 400;
        let mp = (m + 9) % 12;
        let doy = (153 * mp + 2) / 5 + dd - 1;
        let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
        Some(era * 146_097 + doe)
    }
    Some(days(b)? - days(a)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stamps_and_ages_are_read() {
        assert_eq!(
            stamp("# updated: 2026-11-27 from https://x\nrest"),
            Some(("2026-11-27".into(), "https://x".into()))
        );
        assert_eq!(stamp("# no stamp"), None);
        assert_eq!(days_between("2026-08-31", "2026-11-29"), Some(90));
        assert_eq!(days_between("2024-02-28", "2024-03-01"), Some(2));
    }
}
