//! The one error type. An `Err` means a command could not plan, could not start or
//! could not record what it did; failed builds are outcomes, not errors. Each variant
//! carries its context and knows its exit code; `main` prints it and exits with it.

use std::path::PathBuf;

use crate::diag::Diagnostic;
use crate::exit;
use crate::signals::Signal;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The command line was wrong, or the selection matched no cell.
    #[error("{0}")]
    Usage(String),
    /// The matrix file could not be read at all.
    #[error("cannot read {path}: {reason}")]
    ReadMatrix { path: String, reason: String },
    /// The matrix was read and is invalid: every problem, with its position.
    #[error("{}", crate::diag::render(.0))]
    InvalidMatrix(Vec<Diagnostic>),
    /// A precondition failed before any work started.
    #[error("{0}")]
    Preflight(String),
    /// A file the command produces could not be written.
    #[error("cannot write {}: {source}", path.display())]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
    /// The run happened, but its manifest could not be recorded: the file on disk
    /// is stale (it says nothing of how this run ended).
    #[error("cannot write {}: {source}; the manifest on disk is stale (it does not record this run's end)", path.display())]
    StaleManifest {
        path: PathBuf,
        source: std::io::Error,
    },
    /// A result could not be written to stdout (not a closed pipe: that is fine).
    #[error("cannot write {what} to stdout: {source}")]
    Output {
        what: &'static str,
        source: std::io::Error,
    },
}

impl Error {
    pub fn exit_code(&self) -> i32 {
        match self {
            Error::Usage(_) => exit::USAGE,
            Error::ReadMatrix { .. } | Error::InvalidMatrix(_) => exit::INVALID_MATRIX,
            Error::Preflight(_) => exit::PREFLIGHT,
            Error::Write { .. } | Error::StaleManifest { .. } | Error::Output { .. } => exit::IO,
        }
    }

    /// What `main` prints: diagnostics as they are (each names its file and line),
    /// everything else as one `error:` line.
    pub fn report(&self) -> String {
        match self {
            Error::InvalidMatrix(_) => self.to_string(),
            _ => format!("error: {self}"),
        }
    }

    pub fn write(path: impl Into<PathBuf>, source: std::io::Error) -> Error {
        Error::Write {
            path: path.into(),
            source,
        }
    }
}

/// How a command that ran ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Exit {
    /// Everything planned was done and every check passed.
    Success,
    /// Something failed; the output says what.
    Failed,
    /// Stopped by a signal.
    Stopped(Signal),
}

impl Exit {
    pub fn code(self) -> i32 {
        match self {
            Exit::Success => exit::OK,
            Exit::Failed => exit::FAILED,
            Exit::Stopped(s) => s.exit_code(),
        }
    }

    pub fn from_ok(ok: bool) -> Exit {
        if ok {
            Exit::Success
        } else {
            Exit::Failed
        }
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_error_knows_its_exit_code() {
        let io = || std::io::Error::other("disk full");
        assert_eq!(Error::Usage("x".into()).exit_code(), exit::USAGE);
        assert_eq!(
            Error::InvalidMatrix(Vec::new()).exit_code(),
            exit::INVALID_MATRIX
        );
        assert_eq!(Error::Preflight("x".into()).exit_code(), exit::PREFLIGHT);
        let stale = Error::StaleManifest {
            path: "out/manifest.json".into(),
            source: io(),
        };
        assert_eq!(stale.exit_code(), exit::IO);
        assert!(stale.report().contains("out/manifest.json"));
        assert!(stale.report().contains("stale"));
        assert_eq!(Exit::Stopped(Signal::Hangup).code(), exit::HANGUP);
    }
}
