//! Reporting what a run did: the terminal reporter (live), and later documents.

pub mod terminal;
