//! Running one process and watching it: wall time, peak memory, and the time at which
//! each line of its build logs appeared.
//!
//! The legacy builder prints no times, so the bench reads the logs `matrix build`
//! writes while it runs (every 100 ms) and stamps each new line with the time it
//! first saw it. BuildKit's own `DONE x.ys` figures are used where the log has them
//! (see `stages`); the stamps still give each job's start and end.

use std::collections::BTreeMap;
use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Lines of each log file, each with the seconds since the process started.
pub type Stamped = BTreeMap<PathBuf, Vec<(f64, String)>>;

/// How often the logs (and the process's memory high-water mark) are read.
const POLL: Duration = Duration::from_millis(100);

/// One measured process.
pub struct Measured {
    pub wall: Duration,
    /// `ru_maxrss` from `wait4` on the one child: on Linux the largest of that process
    /// and the descendants it waited for (here the `docker` clients it ran), never
    /// the sum, and never any other child of the bench.
    pub rss_tree_mb: f64,
    pub status: ExitStatus,
}

/// Run a command to its end (stdin, stdout and stderr as the caller set them up).
/// `on_spawn` gets the child's pid and start instant and returns something kept
/// alive until the child has been reaped (a watcher).
// The child is reaped by wait4 below, which std's Child cannot express.
#[allow(clippy::zombie_processes)]
pub fn measured_with<T>(
    cmd: &mut Command,
    on_spawn: impl FnOnce(u32, Instant) -> T,
) -> (Measured, T) {
    use std::os::unix::process::ExitStatusExt;
    let t = Instant::now();
    let child = cmd
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"));
    let kept = on_spawn(child.id(), t);
    let mut status = 0;
    let mut ru = std::mem::MaybeUninit::<libc::rusage>::zeroed();
    let pid = i32::try_from(child.id()).expect("pid fits in i32");
    // SAFETY: wait4 on our own child's pid, with valid out-pointers.
    let got = unsafe { libc::wait4(pid, &mut status, 0, ru.as_mut_ptr()) };
    assert!(got > 0, "wait4 failed");
    let wall = t.elapsed();
    // SAFETY: wait4 succeeded, so the struct is filled.
    let ru = unsafe { ru.assume_init() };
    let m = Measured {
        wall,
        rss_tree_mb: ru.ru_maxrss as f64 / 1024.0,
        status: ExitStatus::from_raw(status),
    };
    (m, kept)
}

/// What the watcher saw.
pub struct Watched {
    pub logs: Stamped,
    /// The process's own peak RSS (`VmHWM`, read every 100 ms while it ran).
    pub rss_self_mb: f64,
}

/// A process run with its log directory watched.
pub fn watched(cmd: &mut Command, log_dir: &Path) -> (Measured, Watched) {
    let stop = Arc::new(AtomicBool::new(false));
    let (m, handle) = measured_with(cmd, |pid, t0| {
        let stop = Arc::clone(&stop);
        let dir = log_dir.to_path_buf();
        std::thread::spawn(move || watch(&dir, pid, t0, &stop))
    });
    stop.store(true, Ordering::SeqCst);
    let w = handle.join().expect("the log watcher panicked");
    (m, w)
}

/// Per file: bytes read so far, and an unfinished last line.
#[derive(Default)]
struct Cursor {
    offset: u64,
    partial: String,
}

fn watch(dir: &Path, pid: u32, t0: Instant, stop: &AtomicBool) -> Watched {
    let mut cursors: BTreeMap<PathBuf, Cursor> = BTreeMap::new();
    let mut logs = Stamped::new();
    let mut hwm_kib = 0u64;
    loop {
        // Read the flag before polling: the last round then sees everything written.
        let last = stop.load(Ordering::SeqCst);
        poll(dir, t0, &mut cursors, &mut logs);
        if let Some(k) = vm_hwm_kib(pid) {
            hwm_kib = hwm_kib.max(k);
        }
        if last {
            break;
        }
        std::thread::sleep(POLL);
    }
    let end = t0.elapsed().as_secs_f64();
    for (path, c) in cursors {
        if !c.partial.is_empty() {
            logs.entry(path).or_default().push((end, c.partial));
        }
    }
    Watched {
        logs,
        rss_self_mb: hwm_kib as f64 / 1024.0,
    }
}

fn poll(dir: &Path, t0: Instant, cursors: &mut BTreeMap<PathBuf, Cursor>, logs: &mut Stamped) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    let now = t0.elapsed().as_secs_f64();
    for e in entries.flatten() {
        let path = e.path();
        if path.extension().is_none_or(|x| x != "log") {
            continue;
        }
        let c = cursors.entry(path.clone()).or_default();
        let Ok(mut f) = std::fs::File::open(&path) else {
            continue;
        };
        if f.seek(SeekFrom::Start(c.offset)).is_err() {
            continue;
        }
        let mut buf = Vec::new();
        let Ok(n) = f.read_to_end(&mut buf) else {
            continue;
        };
        c.offset += n as u64;
        c.partial.push_str(&String::from_utf8_lossy(&buf));
        if let Some(cut) = c.partial.rfind('\n') {
            let rest = c.partial.split_off(cut + 1);
            let done = std::mem::replace(&mut c.partial, rest);
            let out = logs.entry(path).or_default();
            out.extend(done.lines().map(|l| (now, l.to_string())));
        }
    }
}

/// The peak resident set of a running process, from /proc (None once it has exited).
fn vm_hwm_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}
