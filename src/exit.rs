//! Every exit code the tool uses, in one place (the README and `--help` list them).

/// Everything planned was done and every check passed.
pub const OK: i32 = 0;
/// The run finished but some cells failed, timed out, were not started or failed
/// verification, or a publish was refused.
pub const FAILED: i32 = 1;
/// The command line was wrong, or the selection matched nothing (clap also uses 2).
pub const USAGE: i32 = 2;
/// The matrix file is invalid; nothing was started.
pub const INVALID_MATRIX: i32 = 3;
/// A precondition failed before any work: Docker unreachable, output directory not
/// writable or locked by another run, an input manifest unreadable or incomplete.
pub const PREFLIGHT: i32 = 4;
/// An output could not be written (manifest, plan, report): a full disk, a closed
/// file system. What is on disk is stale, and the last line says which file.
pub const IO: i32 = 5;
/// Stopped by SIGHUP (the terminal or SSH session went away): 128 + 1.
pub const HANGUP: i32 = 129;
/// Interrupted by SIGINT (Ctrl-C): 128 + 2.
pub const INTERRUPTED: i32 = 130;
/// Stopped by SIGTERM: 128 + 15.
pub const TERMINATED: i32 = 143;
