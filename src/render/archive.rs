//! A context as a tar stream, for `docker build -` (and `docker buildx build -`): what
//! a build reads on its standard input instead of a folder on disk. Rendering writes
//! nothing to disk for a build; only a failed cell's reproduce folder and `matrix
//! render` do ([`super::write`]).
//!
//! The stream is deterministic: the same context is the same bytes. Entries come in
//! the context's path order, each folder before the first file in it, then the local
//! installers (`conda/local/…`, read from disk as they are sent); every entry is owned
//! by root (uid and gid 0, no names) and dated [`MTIME`]; folders are 0755, files 0755
//! when executable, else 0644, as [`super::write`] makes them on disk.

use std::io::{self, Write};
use std::path::Path;

use super::Context;

/// The date of every entry: the epoch. The builders' cache keys leave modification
/// times out, and a fixed one makes the files the image copies the same every night.
pub const MTIME: u64 = 0;

/// Write `ctx` to `w` as a tar archive (with its two closing zero blocks).
pub fn write(ctx: &Context, w: &mut dyn Write) -> io::Result<()> {
    let mut tar = tar::Builder::new(w);
    let mut dirs: Vec<&str> = Vec::new();
    for f in &ctx.files {
        folders(&mut tar, &mut dirs, &f.path)?;
        let mode = if f.executable { 0o755 } else { 0o644 };
        let mut h = header(tar::EntryType::Regular, mode, f.bytes.len() as u64);
        tar.append_data(&mut h, f.path.as_ref(), &f.bytes[..])?;
    }
    if !ctx.local_installers.is_empty() {
        folders(&mut tar, &mut dirs, "conda/local/x")?;
    }
    for src in &ctx.local_installers {
        let name = src.file_name().unwrap_or_default();
        let file = std::fs::File::open(src)?;
        let len = file.metadata()?.len();
        let mut h = header(tar::EntryType::Regular, 0o644, len);
        let path = Path::new("conda/local").join(name);
        // a file that shrank while it is sent would shift every later entry: take
        // exactly the length the header gives, and fail if fewer bytes come
        let mut data = io::Read::take(file, len);
        tar.append_data(&mut h, &path, &mut data)?;
        if data.limit() != 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                format!("{} shrank while it was sent", src.display()),
            ));
        }
    }
    tar.into_inner()?.flush()
}

/// The folders above `path` not sent yet, outermost first.
fn folders<'a, W: Write>(
    tar: &mut tar::Builder<W>,
    sent: &mut Vec<&'a str>,
    path: &'a str,
) -> io::Result<()> {
    for (i, _) in path.match_indices('/') {
        let dir = &path[..i];
        if sent.contains(&dir) {
            continue;
        }
        let mut h = header(tar::EntryType::Directory, 0o755, 0);
        tar.append_data(&mut h, format!("{dir}/"), io::empty())?;
        // a context has a dozen folders: a list is enough
        sent.push(dir);
    }
    Ok(())
}

fn header(kind: tar::EntryType, mode: u32, size: u64) -> tar::Header {
    let mut h = tar::Header::new_ustar();
    h.set_entry_type(kind);
    h.set_mode(mode);
    h.set_size(size);
    h.set_mtime(MTIME);
    h.set_uid(0);
    h.set_gid(0);
    h
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::render::{render, tests::group_plan};

    fn entries(bytes: &[u8]) -> Vec<(String, u32, u64, Vec<u8>)> {
        let mut a = tar::Archive::new(bytes);
        a.entries()
            .unwrap()
            .map(|e| {
                let mut e = e.unwrap();
                let h = e.header().clone();
                let mut data = Vec::new();
                io::Read::read_to_end(&mut e, &mut data).unwrap();
                (
                    e.path().unwrap().display().to_string(),
                    h.mode().unwrap(),
                    h.mtime().unwrap(),
                    data,
                )
            })
            .collect()
    }

    #[test]
    fn a_context_streams_as_the_same_bytes_with_its_folders_first() {
        let p = group_plan();
        let c = &p.cells[0];
        let ctx = render(&p.settings, c);
        let mut a = Vec::new();
        write(&ctx, &mut a).unwrap();
        let mut b = Vec::new();
        write(&render(&p.settings, c), &mut b).unwrap();
        assert_eq!(a, b, "the same context, the same stream");
        let got = entries(&a);
        let files: Vec<&(String, u32, u64, Vec<u8>)> =
            got.iter().filter(|e| !e.0.ends_with('/')).collect();
        assert_eq!(files.len(), ctx.files.len());
        for (e, f) in files.iter().zip(&ctx.files) {
            assert_eq!(e.0, f.path);
            assert_eq!(e.3, &f.bytes[..]);
            assert_eq!(e.1, if f.executable { 0o755 } else { 0o644 });
        }
        assert!(got.iter().all(|e| e.2 == MTIME));
        // every folder comes once, before anything in it
        let mut seen: Vec<&str> = Vec::new();
        for (path, ..) in &got {
            if let Some(d) = path.strip_suffix('/') {
                assert!(!seen.contains(&d), "{d} twice");
                seen.push(d);
            } else if let Some((d, _)) = path.rsplit_once('/') {
                assert!(seen.contains(&d), "{path} before its folder");
            }
        }
        assert!(seen.contains(&"image/init/bin"));
    }

    #[test]
    fn local_installers_are_sent_from_disk_under_conda_local() {
        let dir = tempfile::tempdir().unwrap();
        let inst = dir.path().join("Miniconda3-x.sh");
        std::fs::write(&inst, vec![7u8; 70_000]).unwrap();
        let p = group_plan();
        let mut ctx = render(&p.settings, &p.cells[0]);
        ctx.local_installers = vec![inst];
        let mut a = Vec::new();
        write(&ctx, &mut a).unwrap();
        let got = entries(&a);
        let last = got.last().unwrap();
        assert_eq!(last.0, "conda/local/Miniconda3-x.sh");
        assert_eq!(last.3.len(), 70_000);
        assert!(got.iter().any(|e| e.0 == "conda/local/"));
        ctx.local_installers = vec![dir.path().join("gone.sh")];
        assert!(write(&ctx, &mut Vec::new()).is_err());
    }
}
