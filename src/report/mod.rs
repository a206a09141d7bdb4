//! Reporting what a run did: while it runs, the listeners `--progress` picks (the
//! terminal reporter, the JSON event stream); afterwards, the documents people read:
//! an HTML page and a Markdown summary. [`Mode`] lives here, not beside one listener,
//! because both the listeners and the CLI read it.

pub mod html;
pub mod json;
pub mod markdown;
pub mod packages;
pub mod progress;
pub mod terminal;

use clap::ValueEnum;

/// `--progress`: how a run shows its progress (the names Docker uses).
#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// Bars on a terminal, plain lines elsewhere.
    Auto,
    /// Bars, even when stderr is not a terminal (a CI log that renders them).
    Tty,
    /// One line per event on stderr, no colour, no cursor movement.
    Plain,
    /// One JSON object per line on stdout (schema `image-matrix.events/1`); stderr keeps
    /// what `quiet` shows.
    Json,
    /// Only failures and the summary, on stderr.
    Quiet,
}

/// The reporter of a command that shows no progress (`matrix push`): each event of the
/// phases after the builds as its line on stderr.
pub fn phase_lines(ev: &crate::run::events::Phase) {
    if let Some(text) = ev.line() {
        crate::term::line(&text);
    }
}
