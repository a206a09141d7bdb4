//! Which foreign platforms this host runs under emulation: QEMU user-mode emulators
//! registered with the kernel's binfmt_misc. Only handlers with the `F` (fix binary)
//! flag count: the kernel opens their interpreter at registration, so it works inside
//! containers too, where the interpreter's path does not exist.

use std::path::{Path, PathBuf};

/// The binfmt_misc directory (`IMAGE_MATRIX_BINFMT_DIR` points tests elsewhere).
fn binfmt_dir() -> PathBuf {
    std::env::var_os("IMAGE_MATRIX_BINFMT_DIR")
        .map_or_else(|| PathBuf::from("/proc/sys/fs/binfmt_misc"), PathBuf::from)
}

/// One registered emulator: the platform it runs and its binfmt handler's name.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Emulator {
    pub platform: String,
    pub handler: String,
}

/// Emulators this host has, enabled and usable in containers.
pub fn emulators() -> Vec<Emulator> {
    emulators_in(&binfmt_dir())
}

fn emulators_in(dir: &Path) -> Vec<Emulator> {
    let mut out = Vec::new();
    for (platform, arch) in crate::coord::PLATFORMS {
        let handler = format!("qemu-{arch}");
        let Ok(text) = std::fs::read_to_string(dir.join(&handler)) else {
            continue;
        };
        let enabled = text.lines().next() == Some("enabled");
        let fixed = text
            .lines()
            .find_map(|l| l.strip_prefix("flags: "))
            .is_some_and(|f| f.contains('F'));
        if enabled && fixed {
            out.push(Emulator {
                platform: (*platform).to_string(),
                handler,
            });
        }
    }
    out
}

/// How to make a platform buildable here, for messages.
pub fn how_to_enable(platform: &str) -> String {
    let arch = crate::coord::installer_arch(platform).unwrap_or("ARCH");
    let dir = binfmt_dir();
    format!(
        "this host has no enabled qemu-{arch} binfmt handler with the F flag in {}; install Debian's qemu-user-static and binfmt-support (mount binfmt_misc first if {} is empty: mount -t binfmt_misc binfmt_misc {})",
        dir.display(),
        dir.display(),
        dir.display()
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_enabled_fix_binary_handlers_count() {
        let dir = tempfile::tempdir().unwrap();
        let w = |name: &str, text: &str| std::fs::write(dir.path().join(name), text).unwrap();
        w(
            "qemu-aarch64",
            "enabled\ninterpreter /usr/libexec/qemu-binfmt/aarch64-binfmt-P\nflags: PF\noffset 0\n",
        );
        w("qemu-s390x", "disabled\ninterpreter /x\nflags: PF\n");
        w("qemu-ppc64le", "enabled\ninterpreter /x\nflags: P\n");
        w(
            "python3.11",
            "enabled\ninterpreter /usr/bin/python3.11\nflags: \n",
        );
        assert_eq!(
            emulators_in(dir.path()),
            [Emulator {
                platform: "linux/arm64".into(),
                handler: "qemu-aarch64".into()
            }]
        );
        assert!(emulators_in(Path::new("/nonexistent")).is_empty());
    }
}
