//! The signals the controller handles itself, delivered to the dispatcher as events.
//!
//! Workers and the collector run in process groups of their own, so a Ctrl-C or Ctrl-Z at the
//! terminal reaches only the controller, which decides: interrupt the tests the way pytest
//! does, kill at the second Ctrl-C, or stop every process and the clocks together.

use std::thread;

use crossbeam_channel::Sender;
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

/// Sends `signal` to the process group led by `pid`; a group already gone is not an error.
pub fn to_group(pid: u32, signal: i32) {
    // SAFETY: killpg has no memory-safety preconditions.
    unsafe {
        libc::killpg(pid as libc::pid_t, signal);
    }
}

/// Sends `signal` to one process.
pub fn to_process(pid: u32, signal: i32) {
    // SAFETY: kill has no memory-safety preconditions.
    unsafe {
        libc::kill(pid as libc::pid_t, signal);
    }
}

/// Stops this process until SIGCONT (after SIGTSTP was caught, the default is gone).
pub fn stop_self() {
    // SAFETY: raise has no memory-safety preconditions.
    unsafe {
        libc::raise(SIGSTOP);
    }
}

/// The process group of `pid`, if it exists.
pub fn group_of(pid: u32) -> Option<u32> {
    // SAFETY: getpgid has no memory-safety preconditions.
    let group = unsafe { libc::getpgid(pid as libc::pid_t) };
    u32::try_from(group).ok()
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
        // SAFETY: getppid and getpgrp have no preconditions.
        let (parent, group) = unsafe { (libc::getppid(), libc::getpgrp()) };
        assert_eq!(parent_of(me), u32::try_from(parent).ok());
        assert_eq!(group_of(me), u32::try_from(group).ok());
    }

    #[test]
    fn a_process_that_does_not_exist_has_neither() {
        // Above the kernel's pid limit (4194304 at most), so never a process.
        assert_eq!(parent_of(u32::MAX >> 1), None);
        assert_eq!(group_of(u32::MAX >> 1), None);
        assert_eq!(parent_of(0), None);
    }
}
