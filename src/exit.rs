//! Every exit code the tool uses, in one place (the README lists them).

/// Everything planned was done and every check passed.
pub const OK: i32 = 0;
/// The run finished but some cells failed, timed out or failed verification.
pub const FAILED: i32 = 1;
/// The command line was wrong (clap also uses 2).
pub const USAGE: i32 = 2;
/// The matrix file is invalid; nothing was started.
pub const INVALID_MATRIX: i32 = 3;
/// A precondition failed before any work: Docker unreachable, output not writable,
/// a manifest unreadable.
pub const PREFLIGHT: i32 = 4;
/// Interrupted by SIGINT (Ctrl-C): 128 + 2.
pub const INTERRUPTED: i32 = 130;
/// Stopped by SIGTERM: 128 + 15.
pub const TERMINATED: i32 = 143;
