//! One run per output directory: an advisory lock (`flock`) on `OUT/.matrix.lock`,
//! held for the life of the run and released by the kernel however the process ends,
//! so a killed run never leaves a stale lock behind. The file records the holder's
//! PID, so a second run can say who holds it.

use std::fs::File;
use std::io::{Read, Seek, Write};
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};

/// A held lock; released when dropped (or when the process ends).
pub struct Lock {
    file: File,
    path: PathBuf,
}

impl Lock {
    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for Lock {
    fn drop(&mut self) {
        // SAFETY: flock on a descriptor this struct owns.
        unsafe {
            libc::flock(self.file.as_raw_fd(), libc::LOCK_UN);
        }
    }
}

/// Take the lock of `dir`, or say who holds it.
pub fn acquire(dir: &Path) -> Result<Lock, String> {
    acquire_at(
        &dir.join(".matrix.lock"),
        &dir.display().to_string(),
        "give this run another --out",
    )
}

/// Take the lock of a log folder given apart from the output folder (`--log-dir`):
/// two runs must not write each other's logs.
pub fn acquire_logs(dir: &Path) -> Result<Lock, String> {
    acquire_at(
        &dir.join(".matrix.lock"),
        &format!("the log folder {}", dir.display()),
        "give this run another --log-dir",
    )
}

/// Take the lock of a manifest that may live outside the output folder
/// (`.NAME.lock` beside it): two runs with different `--out` must not both record into
/// one manifest.
pub fn acquire_manifest(manifest: &Path) -> Result<Lock, String> {
    let dir = manifest
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let name = manifest
        .file_name()
        .map_or_else(|| "manifest".into(), |n| n.to_string_lossy().into_owned());
    acquire_at(
        &dir.join(format!(".{name}.lock")),
        &format!("the manifest {}", manifest.display()),
        "give this run another --manifest",
    )
}

/// Take the lock at `path` (of `what`), or say who holds it and what to do (`advice`).
fn acquire_at(path: &Path, what: &str, advice: &str) -> Result<Lock, String> {
    let path = path.to_path_buf();
    let mut file = File::options()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(&path)
        .map_err(|e| format!("cannot open the lock {}: {e}", path.display()))?;
    // SAFETY: flock on a descriptor we own; LOCK_NB makes it return at once.
    let got = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } == 0;
    if !got {
        let mut holder = String::new();
        let _ = file.read_to_string(&mut holder);
        let pid = holder.trim();
        let who = if pid.is_empty() {
            "another matrix build".to_string()
        } else {
            format!("another matrix build (pid {pid})")
        };
        return Err(format!(
            "{who} is using {what}; wait for it to finish (e.g. `tail --pid={} -f /dev/null`) or {advice}",
            if pid.is_empty() { "PID" } else { pid }
        ));
    }
    let _ = file.set_len(0);
    let _ = file.rewind();
    let _ = writeln!(file, "{}", std::process::id());
    Ok(Lock { file, path })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_holder_is_refused_with_the_first_ones_pid() {
        let dir = tempfile::tempdir().unwrap();
        let first = acquire(dir.path()).unwrap();
        // flock locks belong to open file descriptions: a second open is a second holder
        let e = acquire(dir.path()).err().unwrap();
        assert!(e.contains(&format!("pid {}", std::process::id())), "{e}");
        assert!(e.contains("another --out"), "{e}");
        drop(first);
        assert!(acquire(dir.path()).is_ok(), "released when dropped");
    }
}
