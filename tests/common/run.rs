//! The one way the tests run the `matrix` binary: a small builder over
//! [`std::process::Command`] that starts it the way every test wants it (in a
//! directory, without colour, with the built-in catalogue whatever this machine's data
//! directory holds), then adds what a test needs.

use std::ffi::OsStr;
use std::path::Path;
use std::process::{Command, Output};

/// `matrix` to be run in a directory.
pub struct Matrix(Command);

impl Matrix {
    pub fn new(dir: &Path) -> Matrix {
        let mut c = Command::new(env!("CARGO_BIN_EXE_matrix"));
        c.current_dir(dir)
            .env("NO_COLOR", "1")
            .env("IMAGE_MATRIX_DATA", "/nonexistent/image-matrix-data");
        Matrix(c)
    }

    pub fn args<S: AsRef<OsStr>>(mut self, args: impl IntoIterator<Item = S>) -> Matrix {
        self.0.args(args);
        self
    }

    pub fn env(mut self, key: &str, value: impl AsRef<OsStr>) -> Matrix {
        self.0.env(key, value);
        self
    }

    /// The command itself, to spawn or to give its own stdio.
    pub fn command(self) -> Command {
        self.0
    }

    pub fn output(mut self) -> Output {
        self.0
            .output()
            .unwrap_or_else(|e| panic!("cannot run {:?}: {e}", self.0))
    }

    /// Run to the end: (exit code, -1 for a signal; stdout; stderr).
    pub fn run(self) -> (i32, String, String) {
        let out = self.output();
        (
            out.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    }
}
