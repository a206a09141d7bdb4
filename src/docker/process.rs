//! Process handling: how the docker module runs a child, waits for it and stops it.
//! The only file of the crate that names duct; it knows no docker argv (a
//! [`Command`] from [`super::command`] says what to run) and parses nothing.
//!
//! Every child runs in a process group of its own, so that the tool decides when it
//! gets a signal (a terminal's Ctrl-C reaches only the tool), and every running group
//! is registered so that a second Ctrl-C can kill them all before the tool exits
//! ([`kill_all_groups`]). A child the tool waits on has a deadline and dies with a
//! stopped run ([`wait_within`]); a build's output is handed over line by line while
//! it runs ([`stream`]). [`run_program`] runs any other program (ssh, sshpass, curl,
//! git) the same way.

use std::collections::HashSet;
use std::io::{BufRead, BufReader};
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use super::command::Command;
use super::{Exit, Input, Stop};

/// Process groups of running children, for the emergency stop.
fn groups() -> &'static Mutex<HashSet<i32>> {
    static G: OnceLock<Mutex<HashSet<i32>>> = OnceLock::new();
    G.get_or_init(|| Mutex::new(HashSet::new()))
}

/// SIGKILL every registered process group (second Ctrl-C).
pub fn kill_all_groups() {
    if let Ok(g) = groups().lock() {
        for pgid in g.iter().filter(|p| **p > 0) {
            // SAFETY: killpg has no memory-safety preconditions.
            unsafe {
                libc::killpg(*pgid, libc::SIGKILL);
            }
        }
    }
}

pub fn signal_group(pgid: i32, sig: i32) {
    // 0 or less would signal the tool's own group (or every process it may signal)
    if pgid <= 0 {
        return;
    }
    // SAFETY: killpg has no memory-safety preconditions.
    unsafe {
        libc::killpg(pgid, sig);
    }
}

/// A [`Command`] as duct runs it: its program, argv, environment and input; its
/// output left to the caller.
fn expression(cmd: &Command) -> duct::Expression {
    let mut e = duct::cmd(cmd.program.as_os_str(), &cmd.args);
    for (k, v) in &cmd.env {
        e = match v {
            Some(v) => e.env(k, v),
            None => e.env_remove(k),
        };
    }
    match &cmd.stdin {
        Some(b) => e.stdin_bytes(b.clone()),
        None => e,
    }
}

/// Run `cmd` to its end with stdout and stderr captured apart, whatever its status;
/// `Ok(None)` when it did not end within `timeout` (see [`wait_within`]).
pub(super) fn output_within(
    cmd: &Command,
    timeout: Duration,
) -> std::io::Result<Option<std::process::Output>> {
    let e = expression(cmd)
        .stdout_capture()
        .stderr_capture()
        .unchecked();
    wait_within(e, timeout)
}

/// Like [`output_within`], with stderr joined to stdout (a build's log).
pub(super) fn joined_output_within(
    cmd: &Command,
    timeout: Duration,
) -> std::io::Result<Option<std::process::Output>> {
    let e = expression(cmd)
        .stdout_capture()
        .stderr_to_stdout()
        .unchecked();
    wait_within(e, timeout)
}

/// Run `cmd` to its end, with no deadline, stderr joined to stdout (a container's
/// logs).
pub(super) fn joined_output(cmd: &Command) -> std::io::Result<std::process::Output> {
    expression(cmd)
        .stderr_to_stdout()
        .stdout_capture()
        .unchecked()
        .run()
}

/// The write end of a child's standard input, and the read end until the child is
/// spawned with it.
type StdinPipe = (Arc<Mutex<Option<os_pipe::PipeReader>>>, os_pipe::PipeWriter);

/// A pipe for the child's standard input: the read end goes to the child when it is
/// spawned (the command that holds it is dropped right after, so this process keeps
/// only the write end, and a child that dies makes the writer's next write fail with
/// a broken pipe rather than block). Both ends are close-on-exec: a build started
/// meanwhile on another thread inherits neither.
fn stdin_pipe(e: duct::Expression) -> std::io::Result<(duct::Expression, StdinPipe)> {
    let (read, write) = os_pipe::pipe()?;
    let slot = Arc::new(Mutex::new(Some(read)));
    let hook = slot.clone();
    let e = e.before_spawn(move |cmd| {
        let read = hook.lock().ok().and_then(|mut r| r.take());
        let read = read.ok_or_else(|| std::io::Error::other("the input was already used"))?;
        cmd.stdin(read);
        Ok(())
    });
    Ok((e, (slot, write)))
}

/// Run `cmd` (a build) in a process group of its own, handing each output line
/// (stderr joined to stdout) to `on_line`. `stop` is polled; when it says so the
/// group gets SIGTERM, then SIGKILL after `grace`. With `input`, the child's standard
/// input is what `input` writes, on a thread of its own while the output is read (a
/// child that stops reading cannot block the tool; one killed ends the writing with a
/// broken pipe). An input that fails otherwise fails the build, with a line that says
/// why.
pub(super) fn stream(
    cmd: &Command,
    input: Option<Input>,
    on_line: &mut dyn FnMut(&str),
    stop: &(dyn Fn() -> Option<Stop> + Sync),
    grace: Duration,
) -> std::io::Result<(Exit, Option<Stop>)> {
    let e = expression(cmd).stderr_to_stdout().unchecked();
    // SAFETY-free: process_group is a safe std API, run in the child before exec.
    let e = e.before_spawn(|cmd| {
        cmd.process_group(0);
        Ok(())
    });
    let (e, pipe) = match input {
        Some(_) => {
            let (e, pipe) = stdin_pipe(e)?;
            (e, Some(pipe))
        }
        None => (e, None),
    };
    let reader = e.reader()?;
    // the read end is the child's alone now
    let pipe = pipe.map(|(slot, write)| {
        drop(slot);
        write
    });
    let pid = reader.pids().first().copied().unwrap_or(0) as i32;
    if let Ok(mut g) = groups().lock() {
        g.insert(pid);
    }
    let stopped: Mutex<Option<Stop>> = Mutex::new(None);
    let done = std::sync::atomic::AtomicBool::new(false);
    let mut sent: std::io::Result<()> = Ok(());
    let result = std::thread::scope(|s| {
        let writer = input.zip(pipe).map(|(input, mut w)| {
            s.spawn(move || {
                // a client that exits (or is killed) before reading it all is no error
                // of the input's: its exit status says what happened
                match input(&mut w) {
                    Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => Err(e),
                    _ => Ok(()),
                }
            })
        });
        let watcher = s.spawn(|| {
            let mut since: Option<Instant> = None;
            while !done.load(std::sync::atomic::Ordering::Acquire) {
                if since.is_none() {
                    if let Some(why) = stop() {
                        if let Ok(mut st) = stopped.lock() {
                            *st = Some(why);
                        }
                        signal_group(pid, libc::SIGTERM);
                        since = Some(Instant::now());
                    }
                } else if since.is_some_and(|t| t.elapsed() >= grace) {
                    signal_group(pid, libc::SIGKILL);
                    since = Some(Instant::now() + Duration::from_secs(3600));
                }
                // woken early when the build ends, so a short build is not held
                // up by this period
                std::thread::park_timeout(Duration::from_millis(50));
            }
        });
        let mut buf = BufReader::new(&reader);
        let mut line = Vec::new();
        loop {
            line.clear();
            match buf.read_until(b'\n', &mut line) {
                Ok(0) | Err(_) => break,
                Ok(_) => on_line(String::from_utf8_lossy(&line).trim_end_matches(['\n', '\r'])),
            }
        }
        let status = reader.try_wait();
        // The pipe closes when the client exits; make sure the group is gone too (and
        // with it the last reader of its input: the writer returns).
        signal_group(pid, libc::SIGKILL);
        done.store(true, std::sync::atomic::Ordering::Release);
        watcher.thread().unpark();
        if let Some(w) = writer {
            sent = w
                .join()
                .unwrap_or_else(|_| Err(std::io::Error::other("the input's writer panicked")));
        }
        status.map(|o| o.map(|o| o.status))
    });
    if let Ok(mut g) = groups().lock() {
        g.remove(&pid);
    }
    let status = result?
        .ok_or_else(|| std::io::Error::other("docker build did not report an exit status"))?;
    let exit = match status.code() {
        Some(c) => Exit::Code(c),
        None => Exit::Signal(std::os::unix::process::ExitStatusExt::signal(&status).unwrap_or(0)),
    };
    let exit = match sent {
        Ok(()) => exit,
        Err(e) => {
            on_line(&format!("image-matrix: cannot send the build's input: {e}"));
            // a cut-short context makes the client fail; should it not, the build does
            if exit == Exit::Code(0) {
                Exit::Code(1)
            } else {
                exit
            }
        }
    };
    let why = stopped.lock().ok().and_then(|s| *s);
    Ok((exit, why))
}

/// Run any non-docker program (ssh, sshpass, curl, git) with an argv and optional
/// stdin.
pub fn run_program(
    program: &Path,
    args: &[String],
    stdin: Option<&[u8]>,
    timeout: Duration,
) -> Result<(i32, Vec<u8>, Vec<u8>), String> {
    let mut e = duct::cmd(program.as_os_str(), args)
        .stdout_capture()
        .stderr_capture()
        .unchecked();
    e = match stdin {
        Some(b) => e.stdin_bytes(b.to_vec()),
        None => e.stdin_null(),
    };
    match wait_within(e, timeout) {
        Ok(Some(o)) => Ok((o.status.code().unwrap_or(-1), o.stdout, o.stderr)),
        Ok(None) => Err(format!(
            "{} did not finish within {}s",
            program.display(),
            timeout.as_secs()
        )),
        Err(err) => Err(format!("cannot run {}: {err}", program.display())),
    }
}

/// Run an expression to its end, or kill it after `timeout` (then `Ok(None)`). The
/// child runs in a process group of its own, registered for the emergency stop, and
/// the whole group is killed on the deadline, and also when the run is stopped (the
/// process's cancel flag set while it runs: then an `Interrupted` error), so that
/// neither a hung client nor what it started outlives the tool. A child started after
/// the stop runs to its end: the record of a stopped run still needs a few queries.
fn wait_within(
    e: duct::Expression,
    timeout: Duration,
) -> std::io::Result<Option<std::process::Output>> {
    let cancel = crate::signals::process();
    let stopped_before = cancel.is_set();
    let handle = e
        .before_spawn(|cmd| {
            cmd.process_group(0);
            Ok(())
        })
        .start()?;
    let pgid = handle.pids().first().copied().unwrap_or(0) as i32;
    if let Ok(mut g) = groups().lock() {
        g.insert(pgid);
    }
    let deadline = Instant::now() + timeout;
    // A thread blocks in wait() while this one waits on the channel: a query that
    // takes 3 ms costs 3 ms, not a polling period (the slices only bound how late a
    // stop is noticed). duct's own wait_timeout registers a SIGCHLD handler per call,
    // far dearer at this rate.
    let result = std::thread::scope(|s| {
        let (tx, rx) = std::sync::mpsc::channel();
        let h = &handle;
        s.spawn(move || {
            let _ = tx.send(h.wait().cloned());
        });
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match rx.recv_timeout(left.min(Duration::from_millis(50))) {
                Ok(r) => return r.map(Some),
                Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => {
                    return Err(std::io::Error::other("the waiting thread ended"))
                }
                Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {}
            }
            let stopped = !stopped_before && cancel.is_set();
            if stopped || Instant::now() >= deadline {
                // the waiting thread returns once the child is gone
                signal_group(pgid, libc::SIGKILL);
                let _ = handle.kill();
                return if stopped {
                    Err(std::io::Error::new(
                        std::io::ErrorKind::Interrupted,
                        cancel
                            .reason()
                            .map_or_else(|| "stopped".into(), |r| r.describe()),
                    ))
                } else {
                    Ok(None)
                };
            }
        }
    });
    if let Ok(mut g) = groups().lock() {
        g.remove(&pgid);
    }
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sh(script: &str) -> Command {
        Command {
            program: "sh".into(),
            args: vec!["-c".into(), script.into()],
            env: Vec::new(),
            stdin: None,
        }
    }

    fn run(script: &str, input: Input) -> (Exit, Vec<String>) {
        let mut lines = Vec::new();
        let (exit, stop) = stream(
            &sh(script),
            Some(input),
            &mut |l| lines.push(l.to_string()),
            &|| None,
            Duration::from_secs(1),
        )
        .unwrap();
        assert_eq!(stop, None);
        (exit, lines)
    }

    const MB: usize = 1 << 20;

    #[test]
    fn the_input_reaches_the_child_whole_while_its_output_is_read() {
        let input = |w: &mut dyn std::io::Write| w.write_all(&vec![b'x'; 3 * MB]);
        // the child prints while it reads: neither side waits on the other
        let (exit, lines) = run("head -c 1000 >/dev/null; echo started; wc -c", &input);
        assert_eq!(exit, Exit::Code(0));
        assert_eq!(lines, ["started", &(3 * MB - 1000).to_string()]);
    }

    #[test]
    fn a_child_that_does_not_read_its_input_is_no_error_and_no_wait() {
        let input = |w: &mut dyn std::io::Write| w.write_all(&vec![b'x'; 3 * MB]);
        let (exit, lines) = run("echo done", &input);
        assert_eq!(exit, Exit::Code(0));
        assert_eq!(lines, ["done"]);
    }

    #[test]
    fn an_input_that_fails_fails_the_build_and_says_why() {
        let input = |w: &mut dyn std::io::Write| {
            w.write_all(b"partial")?;
            Err(std::io::Error::other("the installer is gone"))
        };
        let (exit, lines) = run("cat >/dev/null", &input);
        assert_eq!(exit, Exit::Code(1));
        assert_eq!(
            lines,
            ["image-matrix: cannot send the build's input: the installer is gone"]
        );
    }

    #[test]
    fn a_stopped_child_ends_the_writer_that_it_left_blocked() {
        let input = |w: &mut dyn std::io::Write| w.write_all(&vec![b'x'; 8 * MB]);
        let asked = std::sync::atomic::AtomicBool::new(false);
        let stop = || {
            if asked.swap(true, std::sync::atomic::Ordering::SeqCst) {
                Some(Stop::Cancelled)
            } else {
                None
            }
        };
        let t = Instant::now();
        let (exit, why) = stream(
            &sh("exec sleep 30"),
            Some(&input),
            &mut |_| {},
            &stop,
            Duration::from_millis(200),
        )
        .unwrap();
        assert!(t.elapsed() < Duration::from_secs(5), "{:?}", t.elapsed());
        assert_eq!(why, Some(Stop::Cancelled));
        assert_eq!(exit, Exit::Signal(libc::SIGTERM));
    }
}
