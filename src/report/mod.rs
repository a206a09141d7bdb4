//! Reporting what a run did: the terminal reporter (live, while it runs), and the
//! documents people read afterwards: an HTML page and a Markdown summary.

pub mod html;
pub mod markdown;
pub mod terminal;
