//! The Markdown summary of a run (for `$GITHUB_STEP_SUMMARY`).

use std::fmt::Write;

use crate::manifest::{Manifest, Status};

pub fn summary(m: &Manifest, _previous: Option<&Manifest>) -> String {
    let mut s = String::from("## image-matrix run\n\n| cell | status | reason |\n|---|---|---|\n");
    for c in &m.cells {
        let _ = writeln!(
            s,
            "| {} | {} | {} |",
            c.id,
            c.status.as_str(),
            c.reason.as_deref().unwrap_or("")
        );
    }
    let built = m.count(Status::Built);
    let _ = writeln!(s, "\n{built} built of {} cells", m.cells.len());
    s
}
