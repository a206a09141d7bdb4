//! Records the commit the tool is built from, for `matrix --version` and the events'
//! `tool_version`: `git rev-parse --short HEAD` in a checkout of this repository, the
//! `sha1` cargo wrote into `.cargo_vcs_info.json` of a packaged crate, otherwise
//! "unknown". It never fails the build: a tarball without git builds the same.

use std::path::{Path, PathBuf};
use std::process::Command;

fn git(dir: &Path, args: &[&str]) -> Option<String> {
    let out = Command::new("git")
        .arg("-C")
        .arg(dir)
        .args(args)
        .output()
        .ok()?;
    let text = String::from_utf8(out.stdout).ok()?;
    let text = text.trim();
    (out.status.success() && !text.is_empty()).then(|| text.to_string())
}

/// The short commit, when `dir` is the top of a git checkout (not a tarball unpacked
/// inside some other repository).
fn from_git(dir: &Path) -> Option<String> {
    let top = PathBuf::from(git(dir, &["rev-parse", "--show-toplevel"])?);
    let same = match (top.canonicalize(), dir.canonicalize()) {
        (Ok(a), Ok(b)) => a == b,
        _ => false,
    };
    if !same {
        return None;
    }
    // rebuild when HEAD moves: HEAD itself (a checkout) and the branch it names (a
    // commit); --git-path finds both in a linked worktree too. A path that does not
    // exist is left out: cargo would rerun the script (and rebuild) every time.
    let mut watch = vec!["HEAD".to_string(), "packed-refs".to_string()];
    watch.extend(git(dir, &["symbolic-ref", "-q", "HEAD"]));
    for p in watch {
        if let Some(f) = git(dir, &["rev-parse", "--git-path", &p]) {
            let f = dir.join(f);
            if f.exists() {
                println!("cargo:rerun-if-changed={}", f.display());
            }
        }
    }
    git(dir, &["rev-parse", "--short=12", "HEAD"])
}

/// `"sha1": "…"` of the `.cargo_vcs_info.json` that `cargo package` writes.
fn from_package(dir: &Path) -> Option<String> {
    let text = std::fs::read_to_string(dir.join(".cargo_vcs_info.json")).ok()?;
    let rest = &text[text.find("\"sha1\"")? + "\"sha1\"".len()..];
    let start = rest.find('"')? + 1;
    let sha: String = rest[start..]
        .chars()
        .take_while(char::is_ascii_hexdigit)
        .take(12)
        .collect();
    (sha.len() == 12).then_some(sha)
}

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    let dir = PathBuf::from(std::env::var_os("CARGO_MANIFEST_DIR").unwrap_or_default());
    let commit = from_git(&dir)
        .or_else(|| from_package(&dir))
        .unwrap_or_else(|| "unknown".to_string());
    println!("cargo:rustc-env=IMAGE_MATRIX_COMMIT={commit}");
}
