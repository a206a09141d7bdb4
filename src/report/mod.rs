//! Reporting what a run did: while it runs, the listeners `--progress` picks (the
//! terminal reporter, the JSON event stream); afterwards, the documents people read:
//! an HTML page and a Markdown summary.

pub mod html;
pub mod json;
pub mod markdown;
pub mod progress;
pub mod terminal;

/// The reporter of a command that shows no progress (`matrix push`): each event of the
/// phases after the builds as its line on stderr.
pub fn phase_lines(ev: &crate::run::events::Phase) {
    if let Some(text) = ev.line() {
        crate::term::line(&text);
    }
}
