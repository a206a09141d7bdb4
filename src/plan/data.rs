//! The data files the planner reads (the installer catalogue, the `nvidia/cuda` tag
//! list, the framework catalogues): where fresher copies live, which copy is read, and
//! the `# updated: YYYY-MM-DD from SOURCE` stamp each starts with.
//!
//! Every file is compiled into the binary from `data/`, so a plan never depends on the
//! network; `matrix catalogue update` writes fresher copies into a data directory
//! (`$IMAGE_MATRIX_DATA`, else `~/.local/share/image-matrix`), and a copy there with a
//! stamp is read instead of the built-in one, unless it fails [`check_data_file`]
//! (its stamp, its columns, each row's grammar). The catalogues take these from here,
//! not from one another.

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

/// A data file: the data directory's copy if it has one that passes
/// [`check_data_file`], else the built-in one. A copy that fails
/// is remembered for [`refused`] (a plan says so) and not read.
pub fn data_text(file: &str, builtin: &'static str) -> &'static str {
    let Some(path) = data_dir().map(|d| d.join(file)) else {
        return builtin;
    };
    let Ok(text) = std::fs::read_to_string(&path) else {
        return builtin;
    };
    let problems = check_data_file(file, &text);
    if let Some(first) = problems.first() {
        let mut r = REFUSED
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        r.push(format!(
            "note: ignored {}: {first}{}; the built-in copy is used",
            path.display(),
            match problems.len() {
                1 => String::new(),
                n => format!(" (and {} more problems)", n - 1),
            }
        ));
        return builtin;
    }
    // leaked once per process: the catalogue lives as long as the process
    Box::leak(text.into_boxed_str())
}

static REFUSED: std::sync::Mutex<Vec<String>> = std::sync::Mutex::new(Vec::new());

/// Notes about fresher copies that were not read (see [`data_text`]).
pub fn refused() -> Vec<String> {
    REFUSED
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .clone()
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

/// The problems of a data file (`data/NAME` or a fresher copy of it): a first line
/// `# updated: YYYY-MM-DD from SOURCE` naming a source, a `# col<TAB>col…` line naming
/// the columns right before the rows, and every row with that many fields, each of the
/// file's grammar (installer names and SHA256s, CUDA tags and statuses, dates). Empty
/// when the file is sound; a copy with problems is not read.
pub fn check_data_file(name: &str, text: &str) -> Vec<String> {
    let mut problems = Vec::new();
    match stamp(text) {
        Some((_, source)) if source.trim().is_empty() => {
            problems
                .push("line 1: the `# updated:` stamp names no source (`… from SOURCE`)".into());
        }
        Some(_) => {}
        None => problems.push("line 1: no `# updated: YYYY-MM-DD from SOURCE` stamp".into()),
    }
    let mut columns: Option<usize> = None;
    let mut seen = std::collections::BTreeSet::new();
    for (i, line) in text.lines().enumerate() {
        let n = i + 1;
        if let Some(c) = line.strip_prefix("# ") {
            if c.contains('\t') {
                columns = Some(c.split('\t').count());
            }
            continue;
        }
        if line.starts_with('#') || line.trim().is_empty() {
            continue;
        }
        let fields: Vec<&str> = line.split('\t').collect();
        let Some(want) = columns else {
            problems.push(format!(
                "line {n}: a row before the `# column<TAB>column` line"
            ));
            break;
        };
        if fields.len() != want {
            problems.push(format!(
                "line {n}: {} fields, the columns name {want}",
                fields.len()
            ));
            continue;
        }
        if let Err(e) = check_row(name, &fields) {
            problems.push(format!("line {n}: {e}"));
        }
        let keyed = matches!(
            name,
            "miniconda-installers.tsv" | "nvidia-cuda-tags.tsv" | "python-releases.tsv"
        );
        if keyed && !seen.insert(fields[0]) {
            problems.push(format!("line {n}: `{}` is listed twice", fields[0]));
        }
    }
    if columns.is_none() {
        problems.push("no `# column<TAB>column` line names the columns".into());
    }
    problems
}

fn is_date(s: &str, month_only: bool) -> bool {
    let ok = |s: &str| stamp(&format!("# updated: {s}")).is_some();
    ok(s) || (month_only && s.len() == 7 && ok(&format!("{s}-01")))
}

fn check_row(name: &str, f: &[&str]) -> Result<(), String> {
    match (name, f) {
        ("miniconda-installers.tsv", [file, sha]) => {
            if !crate::plan::listing::keep(file, sha) {
                return Err(format!("`{file}` with `{sha}` is not a Linux installer name with a SHA256 (64 hex digits)"));
            }
            if sha.bytes().any(|c| c.is_ascii_uppercase()) {
                return Err(format!("the SHA256 of `{file}` is not lowercase"));
            }
        }
        ("nvidia-cuda-tags.tsv", [tag, status]) => {
            if !crate::plan::listing::looks_like_cuda_tag(tag) {
                return Err(format!("`{tag}` is not an nvidia/cuda ubuntu tag"));
            }
            if !matches!(*status, "supported" | "eol") {
                return Err(format!(
                    "status `{status}` of `{tag}` is not `supported` or `eol`"
                ));
            }
        }
        ("python-releases.tsv", [py, first, eol]) => {
            crate::plan::version::PyVersion::parse(py)?;
            if !is_date(first, false) || !is_date(eol, true) {
                return Err(format!("Python {py}: `{first}` and `{eol}` must be dates (YYYY-MM-DD; an end of life may be YYYY-MM)"));
            }
        }
        _ => {}
    }
    Ok(())
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
