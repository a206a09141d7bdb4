//! Reporting what a run did: while it runs, the listeners `--progress` picks (the
//! terminal reporter, the JSON event stream); afterwards, the documents people read:
//! an HTML page and a Markdown summary.

pub mod html;
pub mod json;
pub mod markdown;
pub mod progress;
pub mod terminal;
