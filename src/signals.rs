//! Why work stops, and the signal handler that records it.
//!
//! The first SIGINT, SIGTERM or SIGHUP (an SSH session closing) cancels: running builds
//! get SIGTERM, then SIGKILL after the grace period, and the run still writes its
//! manifest and report. A second signal makes it urgent: every build group is killed
//! at once and verify containers are removed, and the record is still written. Only a
//! third signal exits on the spot, for a tool that no longer answers at all.

use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU8, Ordering};
use std::sync::{Arc, OnceLock};

use crate::exit;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Signal {
    Hangup,
    Interrupt,
    Terminate,
}

impl Signal {
    pub fn name(self) -> &'static str {
        match self {
            Signal::Hangup => "SIGHUP",
            Signal::Interrupt => "SIGINT",
            Signal::Terminate => "SIGTERM",
        }
    }

    pub fn exit_code(self) -> i32 {
        match self {
            Signal::Hangup => exit::HANGUP,
            Signal::Interrupt => exit::INTERRUPTED,
            Signal::Terminate => exit::TERMINATED,
        }
    }

    /// What the handler says when this is the first signal: the run stops.
    pub fn first_message(self) -> String {
        format!(
            "{}: stopping; running builds get SIGTERM, then SIGKILL after the grace period, and the manifest is still written (signal again to kill them at once)",
            self.name()
        )
    }

    /// What the handler says when this is the second signal: the run hurries.
    pub fn urgent_message(self) -> String {
        format!(
            "{}: killing every build now; writing the manifest (a third signal exits without it)",
            self.name()
        )
    }
}

/// Why a run stops early.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Reason {
    /// `--fail-fast` after the first failure.
    FailFast,
    Signal(Signal),
}

impl Reason {
    /// One line for the manifest's run outcome and the cells it stopped.
    pub fn describe(self) -> String {
        match self {
            Reason::FailFast => "stopped by --fail-fast after a failure".into(),
            Reason::Signal(s) => format!("interrupted by {}", s.name()),
        }
    }

    fn encode(self) -> u8 {
        match self {
            Reason::FailFast => 1,
            Reason::Signal(Signal::Hangup) => 2,
            Reason::Signal(Signal::Interrupt) => 3,
            Reason::Signal(Signal::Terminate) => 4,
        }
    }

    fn decode(v: u8) -> Option<Reason> {
        Some(match v {
            1 => Reason::FailFast,
            2 => Reason::Signal(Signal::Hangup),
            3 => Reason::Signal(Signal::Interrupt),
            4 => Reason::Signal(Signal::Terminate),
            _ => return None,
        })
    }
}

/// Shared by the signal handler, the scheduler's workers and every child's stop check.
#[derive(Clone, Default)]
pub struct Cancel(Arc<Inner>);

#[derive(Default)]
struct Inner {
    reason: AtomicU8,
    urgent: AtomicBool,
}

impl Cancel {
    /// Record why work stops. The first reason wins, except that a signal replaces
    /// fail-fast: after `--fail-fast` stopped the run, Ctrl-C must still exit 130.
    pub fn set(&self, why: Reason) {
        let new = why.encode();
        let _ = self
            .0
            .reason
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |cur| {
                let replace = cur == 0 || (cur == Reason::FailFast.encode() && new > cur);
                replace.then_some(new)
            });
    }

    pub fn reason(&self) -> Option<Reason> {
        Reason::decode(self.0.reason.load(Ordering::SeqCst))
    }

    pub fn is_set(&self) -> bool {
        self.0.reason.load(Ordering::SeqCst) != 0
    }

    pub fn signal(&self) -> Option<Signal> {
        match self.reason() {
            Some(Reason::Signal(s)) => Some(s),
            _ => None,
        }
    }

    /// A second signal: no more grace periods.
    pub fn hurry(&self) {
        self.0.urgent.store(true, Ordering::SeqCst);
    }

    pub fn is_urgent(&self) -> bool {
        self.0.urgent.load(Ordering::SeqCst)
    }
}

/// The process's cancel flag: the one the signal handler sets, and the one every child
/// process the tool waits on watches (a query still running when it is set is killed,
/// so that a hung `docker` client cannot hold a stopped run).
pub fn process() -> &'static Cancel {
    static C: OnceLock<Cancel> = OnceLock::new();
    C.get_or_init(Cancel::default)
}

/// Handle SIGINT, SIGTERM and SIGHUP for the rest of the process, from the first thing
/// a long command does (before its first `docker` query: until then a signal would
/// take its default action, or be lost where the parent shell ignores it): the first
/// cancels [`process`], the second hurries (and calls `on_urgent`, which kills what
/// runs), the third exits. `say` tells people what each signal does (the handler runs
/// on a thread of its own, beside whatever reporter the command has, so the command
/// picks where those lines go). Installing again changes nothing; the flag is returned.
pub fn install(on_urgent: fn(), say: fn(&str)) -> Cancel {
    static ONCE: std::sync::Once = std::sync::Once::new();
    let cancel = process().clone();
    ONCE.call_once(|| spawn_handler(cancel.clone(), on_urgent, say));
    cancel
}

fn spawn_handler(cancel: Cancel, on_urgent: fn(), say: fn(&str)) {
    use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM};
    // signal-hook installs its own handler over any disposition, SIG_IGN included: a
    // SIGINT sent to a background job of a script (which starts with SIGINT ignored)
    // is a request to stop like any other.
    let Ok(mut signals) = signal_hook::iterator::Signals::new([SIGINT, SIGTERM, SIGHUP]) else {
        return;
    };
    let count = AtomicU32::new(0);
    std::thread::spawn(move || {
        for sig in signals.forever() {
            let s = match sig {
                SIGHUP => Signal::Hangup,
                SIGTERM => Signal::Terminate,
                _ => Signal::Interrupt,
            };
            let n = count.fetch_add(1, Ordering::SeqCst) + 1;
            cancel.set(Reason::Signal(s));
            match n {
                1 => say(&s.first_message()),
                2 => {
                    cancel.hurry();
                    say(&s.urgent_message());
                    on_urgent();
                }
                _ => {
                    on_urgent();
                    std::process::exit(cancel.signal().unwrap_or(s).exit_code());
                }
            }
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The handler's lines, as people and the process tests read them.
    #[test]
    fn the_handler_says_what_each_signal_does() {
        assert_eq!(
            Signal::Terminate.first_message(),
            "SIGTERM: stopping; running builds get SIGTERM, then SIGKILL after the grace period, and the manifest is still written (signal again to kill them at once)"
        );
        assert_eq!(
            Signal::Interrupt.urgent_message(),
            "SIGINT: killing every build now; writing the manifest (a third signal exits without it)"
        );
    }

    #[test]
    fn a_signal_overrides_fail_fast_but_not_another_signal() {
        let c = Cancel::default();
        assert!(!c.is_set());
        c.set(Reason::FailFast);
        assert_eq!(c.reason(), Some(Reason::FailFast));
        c.set(Reason::Signal(Signal::Interrupt));
        assert_eq!(c.signal(), Some(Signal::Interrupt));
        c.set(Reason::Signal(Signal::Terminate));
        assert_eq!(c.signal(), Some(Signal::Interrupt));
        c.set(Reason::FailFast);
        assert_eq!(c.signal(), Some(Signal::Interrupt));
        assert!(!c.is_urgent());
        c.hurry();
        assert!(c.is_urgent());
    }
}
