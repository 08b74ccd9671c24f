//! The signals the controller handles itself, delivered to the dispatcher as events.
//!
//! Workers and the collector run in process groups of their own, so a Ctrl-C or Ctrl-Z at the
//! terminal reaches only the controller, which decides: interrupt the tests the way pytest
//! does, kill at the second Ctrl-C, or stop every process and the clocks together.

use std::thread;

use crossbeam_channel::Sender;
use rustix::process::{self, Pid, Signal};
use signal_hook::iterator::Signals;

use crate::connection::Event;

pub use signal_hook::consts::signal::{
    SIGCONT, SIGINT, SIGKILL, SIGSTOP, SIGTERM, SIGTSTP, SIGUSR1,
};

/// A signal as people know it: `SIGKILL (signal 9)`.
pub fn name(signal: i32) -> String {
    match signal_hook::low_level::signal_name(signal) {
        Some(name) => format!("{name} (signal {signal})"),
        None => format!("signal {signal}"),
    }
}

/// Forwards SIGINT, SIGTERM, SIGTSTP and SIGCONT to `events` for the rest of the process.
pub fn forward(events: Sender<Event>) -> std::io::Result<()> {
    let mut signals = Signals::new([SIGINT, SIGTERM, SIGTSTP, SIGCONT])?;
    thread::Builder::new()
        .name("shoal-signals".into())
        .spawn(move || {
            for signal in signals.forever() {
                if events.send(Event::Signal(signal)).is_err() {
                    break;
                }
            }
        })?;
    Ok(())
}

/// A process id as the kernel takes it; `None` for 0 and for what does not fit.
fn pid(pid: u32) -> Option<Pid> {
    Pid::from_raw(i32::try_from(pid).ok()?)
}

/// Sends `signal` to the process group led by `pid`; a group already gone is not an error.
pub fn to_group(group: u32, signal: i32) {
    if let (Some(group), Some(signal)) = (pid(group), Signal::from_named_raw(signal)) {
        let _ = process::kill_process_group(group, signal);
    }
}

/// Sends `signal` to one process; one already gone is not an error.
pub fn to_process(process: u32, signal: i32) {
    if let (Some(process), Some(signal)) = (pid(process), Signal::from_named_raw(signal)) {
        let _ = process::kill_process(process, signal);
    }
}

/// Stops this process until SIGCONT (after SIGTSTP was caught, the default is gone).
pub fn stop_self() {
    let _ = process::kill_process(process::getpid(), Signal::STOP);
}

/// The process group of `pid`, if it exists.
pub fn group_of(process: u32) -> Option<u32> {
    let group = process::getpgid(Some(pid(process)?)).ok()?;
    u32::try_from(group.as_raw_nonzero().get()).ok()
}

/// The parent of `pid`, if it exists (Linux: from `/proc`; elsewhere unknown).
pub fn parent_of(pid: u32) -> Option<u32> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // `pid (comm) state ppid ...`; comm may hold spaces and parentheses.
    let (_, rest) = stat.rsplit_once(')')?;
    rest.split_whitespace().nth(1)?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parent_and_group_of_this_process() {
        let me = std::process::id();
        let raw = |pid: Option<Pid>| pid.and_then(|p| u32::try_from(p.as_raw_nonzero().get()).ok());
        assert_eq!(parent_of(me), raw(process::getppid()));
        assert_eq!(group_of(me), raw(Some(process::getpgrp())));
    }

    #[test]
    fn a_process_that_does_not_exist_has_neither() {
        // Above the kernel's pid limit (4194304 at most), so never a process.
        assert_eq!(parent_of(u32::MAX >> 1), None);
        assert_eq!(group_of(u32::MAX >> 1), None);
        assert_eq!(parent_of(0), None);
    }
}
