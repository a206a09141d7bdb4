//! Reading and writing manifests: the only code that writes one.
//!
//! A write goes to a temp file beside the target (buffered, fsynced), which is then
//! renamed over it, so a crash at any moment leaves the previous complete version. A
//! target that exists and is not a regular file (a device, a FIFO, a directory) is
//! refused: it is not ours to replace. Manifests get the same permissions as logs
//! (0666 less the umask), not the temp file's 0600.

use std::io::{BufWriter, Write};
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::time::{Duration, SystemTime};

use crate::manifest::{Manifest, SCHEMA};

const TEMP_PREFIX: &str = ".manifest.";
const TEMP_SUFFIX: &str = ".tmp";

/// Refuse to replace anything but a regular file (or nothing).
pub fn check_target(path: &Path) -> std::io::Result<()> {
    match std::fs::symlink_metadata(path) {
        Ok(m) if !m.is_file() => Err(std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            "it exists and is not a regular file; refusing to replace it (give a file path)",
        )),
        _ => Ok(()),
    }
}

/// Write atomically: temp file beside the target, fsync, rename, fsync the directory.
pub fn write(path: &Path, m: &Manifest) -> std::io::Result<()> {
    write_json(path, m)
}

/// A text document (a report), written the same way as a manifest.
pub fn write_text(path: &Path, text: &str) -> std::io::Result<()> {
    write_text_synced(path, text, true)
}

/// [`write_text`] without the fsync, for a file whose SHA-256 the manifest records
/// (a cell's SBOM): a crash still leaves the previous version or the new one whole,
/// and a power loss that tears it is found by its hash, which then no longer matches,
/// and the file is made again. A thousand cells write a thousand of these.
pub fn write_text_hashed(path: &Path, text: &str) -> std::io::Result<()> {
    write_text_synced(path, text, false)
}

fn write_text_synced(path: &Path, text: &str, sync: bool) -> std::io::Result<()> {
    check_target(path)?;
    let dir = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir)?;
    let mut tmp = tempfile::Builder::new()
        .prefix(".report.")
        .suffix(".tmp")
        .permissions(std::fs::Permissions::from_mode(0o666))
        .tempfile_in(dir)?;
    tmp.write_all(text.as_bytes())?;
    if sync {
        tmp.as_file().sync_all()?;
    }
    tmp.persist(path).map_err(|e| e.error)?;
    Ok(())
}

/// Any JSON document the tool records (manifests, reports' data), written the same way.
pub fn write_json<T: serde::Serialize>(path: &Path, value: &T) -> std::io::Result<()> {
    check_target(path)?;
    let dir = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir)?;
    let tmp = tempfile::Builder::new()
        .prefix(TEMP_PREFIX)
        .suffix(TEMP_SUFFIX)
        .permissions(std::fs::Permissions::from_mode(0o666))
        .tempfile_in(dir)?;
    let mut w = BufWriter::with_capacity(1 << 16, tmp);
    serde_json::to_writer_pretty(&mut w, value).map_err(std::io::Error::other)?;
    w.write_all(b"\n")?;
    let tmp = w.into_inner().map_err(|e| e.into_error())?;
    tmp.as_file().sync_all()?;
    tmp.persist(path).map_err(|e| e.error)?;
    if let Ok(d) = std::fs::File::open(dir) {
        let _ = d.sync_all();
    }
    Ok(())
}

/// Remove temp files an earlier, killed run left in `dir` (older than a minute, so a
/// write in progress elsewhere is never touched). Returns how many went.
pub fn clean_stale_temps(dir: &Path) -> usize {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return 0;
    };
    let old = SystemTime::now() - Duration::from_secs(60);
    let mut n = 0;
    for e in entries.flatten() {
        let name = e.file_name();
        let name = name.to_string_lossy();
        let stale = name.starts_with(TEMP_PREFIX)
            && name.ends_with(TEMP_SUFFIX)
            && e.metadata()
                .ok()
                .filter(std::fs::Metadata::is_file)
                .and_then(|m| m.modified().ok())
                .is_some_and(|t| t < old);
        if stale && std::fs::remove_file(e.path()).is_ok() {
            n += 1;
        }
    }
    n
}

pub fn read(path: &Path) -> Result<Manifest, String> {
    let meta = std::fs::metadata(path)
        .map_err(|e| format!("cannot read manifest {}: {e}", path.display()))?;
    if !meta.is_file() {
        return Err(format!(
            "cannot read manifest {}: it is not a regular file",
            path.display()
        ));
    }
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("cannot read manifest {}: {e}", path.display()))?;
    let m: Manifest = serde_json::from_str(&text).map_err(|e| {
        format!(
            "{}:{}:{}: not a manifest: {e}",
            path.display(),
            e.line(),
            e.column()
        )
    })?;
    if m.version != SCHEMA {
        return Err(format!(
            "{}: manifest version {} is not supported (expected {SCHEMA})",
            path.display(),
            m.version
        ));
    }
    Ok(m)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::FileTypeExt;

    #[test]
    fn devices_and_fifos_are_never_replaced() {
        let m = Manifest::new("m.yaml", "0", None);
        let e = write(Path::new("/dev/null"), &m).unwrap_err();
        assert!(e.to_string().contains("not a regular file"), "{e}");
        let dir = tempfile::tempdir().unwrap();
        let fifo = dir.path().join("fifo");
        let c = std::ffi::CString::new(fifo.to_str().unwrap()).unwrap();
        // SAFETY: mkfifo reads a valid NUL-terminated path.
        assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o644) }, 0);
        assert!(write(&fifo, &m).is_err());
        assert!(std::fs::metadata(&fifo).unwrap().file_type().is_fifo());
        assert!(read(&fifo).unwrap_err().contains("not a regular file"));
    }

    #[test]
    fn manifests_are_written_like_logs_and_read_back() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("manifest.json");
        let m = Manifest::new("m.yaml", "0", None);
        write(&p, &m).unwrap();
        let mode = std::fs::metadata(&p).unwrap().permissions().mode() & 0o777;
        assert_ne!(
            mode & 0o044,
            0,
            "readable like the logs, not 0600: {mode:o}"
        );
        assert_eq!(read(&p).unwrap(), m);
        let stale = dir.path().join(".manifest.abc.tmp");
        std::fs::write(&stale, "{").unwrap();
        let old = SystemTime::now() - Duration::from_secs(3600);
        std::fs::File::options()
            .write(true)
            .open(&stale)
            .unwrap()
            .set_modified(old)
            .unwrap();
        let fresh = dir.path().join(".manifest.def.tmp");
        std::fs::write(&fresh, "{").unwrap();
        assert_eq!(clean_stale_temps(dir.path()), 1);
        assert!(!stale.exists() && fresh.exists());
    }
}
