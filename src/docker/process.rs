//! Process handling: how the docker module runs a child, waits for it and stops it.
//! It knows no docker argv (a [`Command`] from [`super::command`] says what to run)
//! and parses nothing.
//!
//! Every child runs in a process group of its own, so that the tool decides when it
//! gets a signal (a terminal's Ctrl-C reaches only the tool), and every running group
//! is registered so that a second Ctrl-C can kill them all before the tool exits
//! ([`kill_all_groups`]). A child the tool waits on has a deadline and dies with a
//! stopped run ([`collect_within`]); a build's output is handed over line by line while
//! it runs ([`stream`]). [`run_program`] runs any other program (ssh, sshpass, curl,
//! git) the same way.
//!
//! A run of a thousand cells makes thousands of queries, so a query costs one process
//! and no thread: its pipes are polled on the calling thread, and a build has one
//! thread of its own only when it has an input to write. duct runs what has no
//! deadline (a container's logs).

use std::collections::HashSet;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::sync::{Mutex, OnceLock};
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
/// `Ok(None)` when it did not end within `timeout` (see [`collect_within`]).
pub(super) fn output_within(
    cmd: &Command,
    timeout: Duration,
) -> std::io::Result<Option<std::process::Output>> {
    collect_within(std_command(cmd), cmd.stdin.as_deref(), false, timeout)
}

/// Like [`output_within`], with stderr joined to stdout (a build's log).
pub(super) fn joined_output_within(
    cmd: &Command,
    timeout: Duration,
) -> std::io::Result<Option<std::process::Output>> {
    collect_within(std_command(cmd), cmd.stdin.as_deref(), true, timeout)
}

/// A [`Command`] as the standard library runs it (its input left to the caller).
fn std_command(cmd: &Command) -> std::process::Command {
    let mut c = std::process::Command::new(&cmd.program);
    c.args(&cmd.args);
    for (k, v) in &cmd.env {
        match v {
            Some(v) => c.env(k, v),
            None => c.env_remove(k),
        };
    }
    c
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

/// Run `cmd` (a build) in a process group of its own, handing each output line
/// (stderr joined to stdout) to `on_line`. `stop` is asked about while the build
/// runs (at least every 50 ms); when it says so the group gets SIGTERM, then SIGKILL
/// after `grace`. With `input`, the child's standard input is what `input` writes, on
/// a thread of its own while this one reads the output (a child that stops reading
/// cannot block the tool; one killed ends the writing with a broken pipe). An input
/// that fails otherwise fails the build, with a line that says why.
pub(super) fn stream(
    cmd: &Command,
    input: Option<Input>,
    on_line: &mut dyn FnMut(&str),
    stop: &(dyn Fn() -> Option<Stop> + Sync),
    grace: Duration,
) -> std::io::Result<(Exit, Option<Stop>)> {
    let bytes = cmd.stdin.as_deref();
    let given = |w: &mut dyn std::io::Write| w.write_all(bytes.unwrap_or_default());
    let input: Option<Input> = input.or(bytes.map(|_| &given as Input));
    let mut c = std_command(cmd);
    let (out, out_write) = os_pipe::pipe()?;
    c.stderr(out_write.try_clone()?);
    c.stdout(out_write);
    if input.is_some() {
        c.stdin(std::process::Stdio::piped());
    }
    c.process_group(0);
    let mut child = c.spawn()?;
    // the output's write ends are the child's alone now (the command held them)
    drop(c);
    let pid = child.id() as i32;
    if let Ok(mut g) = groups().lock() {
        g.insert(pid);
    }
    let stdin = child.stdin.take();
    let mut stopped: Option<Stop> = None;
    let result = std::thread::scope(|s| {
        let writer = input.zip(stdin).map(|(input, mut w)| {
            s.spawn(move || {
                // a client that exits (or is killed) before reading it all is no error
                // of the input's: its exit status says what happened
                match input(&mut w) {
                    Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => Err(e),
                    _ => Ok(()),
                }
            })
        });
        let mut since: Option<Instant> = None;
        let mut watch = || {
            if since.is_none() {
                if let Some(why) = stop() {
                    stopped = Some(why);
                    signal_group(pid, libc::SIGTERM);
                    since = Some(Instant::now());
                }
            } else if since.is_some_and(|t| t.elapsed() >= grace) {
                signal_group(pid, libc::SIGKILL);
                since = Some(Instant::now() + Duration::from_secs(3600));
            }
        };
        let read = read_lines(&out, on_line, &mut watch);
        // the output ends when the client exits: reap it, still minding a stop
        let status = read.and_then(|()| loop {
            if let Some(st) = child.try_wait()? {
                break Ok(st);
            }
            watch();
            std::thread::sleep(Duration::from_millis(5));
        });
        // make sure the group is gone too (and with it the last reader of the
        // input: the writer returns)
        signal_group(pid, libc::SIGKILL);
        if status.is_err() {
            let _ = child.kill();
            let _ = child.wait();
        }
        let sent = match writer {
            Some(w) => w
                .join()
                .unwrap_or_else(|_| Err(std::io::Error::other("the input's writer panicked"))),
            None => Ok(()),
        };
        status.map(|st| (st, sent))
    });
    if let Ok(mut g) = groups().lock() {
        g.remove(&pid);
    }
    let (status, sent) = result?;
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
    Ok((exit, stopped))
}

/// Read `out` to its end, handing each line (without its line ending) to `on_line`,
/// and calling `watch` at least every 50 ms while waiting for more.
fn read_lines(
    out: &os_pipe::PipeReader,
    on_line: &mut dyn FnMut(&str),
    watch: &mut dyn FnMut(),
) -> std::io::Result<()> {
    use std::io::Read;
    use std::os::fd::AsRawFd;
    let mut pending: Vec<u8> = Vec::new();
    let mut chunk = vec![0u8; 64 * 1024];
    let mut hand_over = |line: &[u8]| {
        let line = line.strip_suffix(b"\n").unwrap_or(line);
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        on_line(&String::from_utf8_lossy(line));
    };
    loop {
        watch();
        let mut fd = libc::pollfd {
            fd: out.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        };
        // SAFETY: one live pollfd for the whole call.
        let n = unsafe { libc::poll(&mut fd, 1, 50) };
        if n < 0 {
            let e = std::io::Error::last_os_error();
            if e.kind() == std::io::ErrorKind::Interrupted {
                continue;
            }
            return Err(e);
        }
        if n == 0 {
            continue;
        }
        let got = match (&*out).read(&mut chunk) {
            Ok(0) => break,
            Ok(got) => got,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            // an output that cannot be read ends like one at its end: the status says
            Err(_) => break,
        };
        pending.extend_from_slice(&chunk[..got]);
        let mut from = 0;
        while let Some(i) = pending[from..].iter().position(|b| *b == b'\n') {
            let end = from + i + 1;
            hand_over(&pending[from..end]);
            from = end;
        }
        pending.drain(..from);
    }
    if !pending.is_empty() {
        hand_over(&pending);
    }
    Ok(())
}

/// Run any non-docker program (ssh, sshpass, curl, git) with an argv and optional
/// stdin.
pub fn run_program(
    program: &Path,
    args: &[String],
    stdin: Option<&[u8]>,
    timeout: Duration,
) -> Result<(i32, Vec<u8>, Vec<u8>), String> {
    let mut c = std::process::Command::new(program);
    c.args(args);
    if stdin.is_none() {
        c.stdin(std::process::Stdio::null());
    }
    match collect_within(c, stdin, false, timeout) {
        Ok(Some(o)) => Ok((o.status.code().unwrap_or(-1), o.stdout, o.stderr)),
        Ok(None) => Err(format!(
            "{} did not finish within {}s",
            program.display(),
            timeout.as_secs()
        )),
        Err(err) => Err(format!("cannot run {}: {err}", program.display())),
    }
}

/// Run `c` to its end, or kill it after `timeout` (then `Ok(None)`): `input` written
/// to its standard input (else it keeps the tool's own, unless `c` says otherwise), its
/// stdout and stderr read apart, or as one stream when `joined`. The child runs in a
/// process group of its own, registered for the emergency stop, and the whole group
/// is killed on the deadline, and also when the run is stopped (the process's cancel
/// flag set while it runs: then an `Interrupted` error), so that neither a hung client
/// nor what it started outlives the tool. A child started after the stop runs to its
/// end: the record of a stopped run still needs a few queries.
///
/// All on the calling thread: the pipes are non-blocking and polled, so a query costs
/// one process and no thread (thousands of cells make thousands of queries); the
/// poll's period only bounds how late a stop or deadline is noticed.
fn collect_within(
    mut c: std::process::Command,
    input: Option<&[u8]>,
    joined: bool,
    timeout: Duration,
) -> std::io::Result<Option<std::process::Output>> {
    use std::process::Stdio;
    let cancel = crate::signals::process();
    let stopped_before = cancel.is_set();
    let (out_read, out_write) = os_pipe::pipe()?;
    let err_read = if joined {
        c.stderr(out_write.try_clone()?);
        None
    } else {
        let (r, w) = os_pipe::pipe()?;
        c.stderr(w);
        Some(r)
    };
    c.stdout(out_write);
    if input.is_some() {
        c.stdin(Stdio::piped());
    }
    c.process_group(0);
    let mut child = c.spawn()?;
    // the write ends are the child's alone now (the command held them)
    drop(c);
    let pgid = child.id() as i32;
    if let Ok(mut g) = groups().lock() {
        g.insert(pgid);
    }
    let deadline = Instant::now() + timeout;
    if let Some(w) = &child.stdin {
        set_nonblocking(std::os::fd::AsRawFd::as_raw_fd(w));
    }
    let mut pipes = Pipes {
        input: child.stdin.take().zip(input),
        out: Some(out_read),
        err: err_read,
        stdout: Vec::new(),
        stderr: Vec::new(),
    };
    let result = (|| {
        let mut pause = Duration::from_micros(200);
        loop {
            let open = pipes.open();
            if open {
                pipes.step(deadline, Duration::from_millis(50))?;
            }
            if !open || pipes.drained() {
                if let Some(status) = child.try_wait()? {
                    if pipes.drained() {
                        return Ok(Some(status));
                    }
                } else if !pipes.open() {
                    // the outputs are closed and the child is still exiting
                    std::thread::sleep(pause);
                    pause = (pause * 2).min(Duration::from_millis(50));
                }
            }
            let stopped = !stopped_before && cancel.is_set();
            if stopped || Instant::now() >= deadline {
                signal_group(pgid, libc::SIGKILL);
                let _ = child.kill();
                let _ = child.wait();
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
    })();
    if let Ok(mut g) = groups().lock() {
        g.remove(&pgid);
    }
    if result.is_err() {
        // an error of the tool's own (a failed poll): the child must not outlive it
        signal_group(pgid, libc::SIGKILL);
        let _ = child.wait();
    }
    Ok(result?.map(|status| std::process::Output {
        status,
        stdout: pipes.stdout,
        stderr: pipes.stderr,
    }))
}

/// The pipes of a child run by [`collect_within`]: its input still to write, and its
/// two outputs until each reaches its end.
struct Pipes<'a> {
    input: Option<(std::process::ChildStdin, &'a [u8])>,
    out: Option<os_pipe::PipeReader>,
    err: Option<os_pipe::PipeReader>,
    stdout: Vec<u8>,
    stderr: Vec<u8>,
}

impl Pipes<'_> {
    /// Any pipe still to write or read.
    fn open(&self) -> bool {
        self.input.is_some() || self.out.is_some() || self.err.is_some()
    }

    /// Both outputs at their end.
    fn drained(&self) -> bool {
        self.out.is_none() && self.err.is_none()
    }

    /// Wait until a pipe is ready (at most `slice`, and not past `deadline`), then
    /// write what the input pipe takes and read what the outputs hold.
    fn step(&mut self, deadline: Instant, slice: Duration) -> std::io::Result<()> {
        use std::io::{Read, Write};
        use std::os::fd::AsRawFd;
        let mut fds = Vec::with_capacity(3);
        if let Some((w, _)) = &self.input {
            fds.push(libc::pollfd {
                fd: w.as_raw_fd(),
                events: libc::POLLOUT,
                revents: 0,
            });
        }
        for r in [&self.out, &self.err].into_iter().flatten() {
            fds.push(libc::pollfd {
                fd: r.as_raw_fd(),
                events: libc::POLLIN,
                revents: 0,
            });
        }
        let wait = deadline
            .saturating_duration_since(Instant::now())
            .min(slice)
            .as_millis() as libc::c_int;
        // SAFETY: fds is a live, correctly sized array of pollfd for the whole call.
        let n = unsafe { libc::poll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, wait) };
        if n < 0 {
            let e = std::io::Error::last_os_error();
            return match e.kind() {
                std::io::ErrorKind::Interrupted => Ok(()),
                _ => Err(e),
            };
        }
        let ready = |fd: i32| fds.iter().any(|p| p.fd == fd && p.revents != 0);
        if let Some((w, rest)) = &mut self.input {
            if ready(w.as_raw_fd()) {
                match w.write(rest) {
                    Ok(n) => *rest = &rest[n..],
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
                    // a child that exits before reading it all: its status says why
                    Err(_) => *rest = &[],
                }
                if rest.is_empty() {
                    // closed: the child sees the end of its input
                    self.input = None;
                }
            }
        }
        for (pipe, buf) in [
            (&mut self.out, &mut self.stdout),
            (&mut self.err, &mut self.stderr),
        ] {
            let Some(r) = pipe else { continue };
            if !ready(r.as_raw_fd()) {
                continue;
            }
            let mut chunk = [0u8; 64 * 1024];
            match r.read(&mut chunk) {
                Ok(0) => *pipe = None,
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }
}

/// Make a pipe's writes return rather than block when it is full.
fn set_nonblocking(fd: i32) {
    // SAFETY: fcntl on a descriptor this process owns; no memory is touched.
    unsafe {
        let flags = libc::fcntl(fd, libc::F_GETFL);
        if flags >= 0 && flags & libc::O_NONBLOCK == 0 {
            libc::fcntl(fd, libc::F_SETFL, flags | libc::O_NONBLOCK);
        }
    }
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

    fn with_input(script: &str, input: &[u8]) -> Command {
        Command {
            stdin: Some(input.to_vec()),
            ..sh(script)
        }
    }

    #[test]
    fn a_query_gets_its_input_whole_and_both_outputs_apart() {
        // more than a pipe holds each way, and the child writes both outputs while it
        // still reads: nothing may wait on anything else
        let c = with_input(
            "head -c 100000 | wc -c; head -c 300000 /dev/zero; echo oops >&2; wc -c; exit 3",
            &vec![b'x'; 3 * MB],
        );
        let o = output_within(&c, Duration::from_secs(20)).unwrap().unwrap();
        assert_eq!(o.status.code(), Some(3));
        assert_eq!(
            o.stdout.len(),
            "100000\n".len() + 300000 + (3 * MB - 100000).to_string().len() + 1
        );
        assert!(o.stdout.starts_with(b"100000\n"));
        assert!(o
            .stdout
            .ends_with(format!("{}\n", 3 * MB - 100000).as_bytes()));
        assert_eq!(o.stderr, b"oops\n");
    }

    #[test]
    fn a_joined_query_keeps_the_order_of_its_lines() {
        let c = sh("echo one; echo two >&2; echo three");
        let o = joined_output_within(&c, Duration::from_secs(20))
            .unwrap()
            .unwrap();
        assert!(o.status.success());
        assert_eq!(o.stdout, b"one\ntwo\nthree\n");
        assert!(o.stderr.is_empty());
    }

    #[test]
    fn a_query_that_does_not_read_its_input_ends_with_its_own_status() {
        let c = with_input("echo early; exit 4", &vec![b'x'; 3 * MB]);
        let o = output_within(&c, Duration::from_secs(20)).unwrap().unwrap();
        assert_eq!(o.status.code(), Some(4));
        assert_eq!(o.stdout, b"early\n");
    }

    #[test]
    fn a_query_past_its_deadline_is_killed_with_its_group() {
        let dir = tempfile::tempdir().unwrap();
        let mark = dir.path().join("mark");
        // the shell's own child would keep the output open; the group goes with it
        let c = sh(&format!("(sleep 2; touch {}) & sleep 30", mark.display()));
        let t = Instant::now();
        let o = output_within(&c, Duration::from_millis(300)).unwrap();
        assert!(o.is_none());
        assert!(t.elapsed() < Duration::from_secs(2), "{:?}", t.elapsed());
        std::thread::sleep(Duration::from_millis(2500));
        assert!(!mark.exists(), "a child of the query outlived its deadline");
    }

    #[test]
    fn a_program_without_input_reads_nothing_of_the_tools_own() {
        let (code, out, _) = run_program(
            Path::new("sh"),
            &["-c".into(), "wc -c".into()],
            None,
            Duration::from_secs(20),
        )
        .unwrap();
        assert_eq!((code, out), (0, b"0\n".to_vec()));
    }

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
