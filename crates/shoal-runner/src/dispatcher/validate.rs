//! The one check of what Python processes send, between decoding and handling: a message
//! that passes may be acted on without further checks (its indices index the collection, its
//! durations fit a [`std::time::Duration`]); one that does not is a protocol violation. A
//! worker is then stopped and replaced, the collector ends the run: conftests and plugins run
//! inside those processes, so nothing they send may panic the controller.

use shoal_protocol::{CollectedItem, FromPython, PhaseReport, PytestSettings};

use super::run_once::RunOnceFixtures;
use crate::work::WorkSource;

/// The longest timeout accepted, in seconds (about 31 years): any longer could not be added
/// to the clock.
pub const MAX_SECONDS: f64 = 1e9;

/// The widest terminal accepted: separator lines are this long.
const MAX_WIDTH: usize = 1 << 16;

/// Checks a timeout as pytest-timeout reads it: 0 or less disables it; it must be a number
/// of seconds the clock can hold.
pub fn seconds(value: f64) -> Result<(), String> {
    if value.is_nan() || value > MAX_SECONDS {
        return Err(format!("{value:e} seconds (at most {MAX_SECONDS:e})"));
    }
    Ok(())
}

/// The collector's collection and settings.
pub fn collection(items: &[CollectedItem], settings: &PytestSettings) -> Result<(), String> {
    for item in items {
        let nodeid = &item.nodeid;
        if let Some(t) = item.timeout {
            seconds(t).map_err(|e| format!("test '{nodeid}' has a timeout of {e}"))?;
        }
        if let Some((name, limit)) = item.resources.iter().find(|(_, limit)| *limit < 1) {
            return Err(format!(
                "test '{nodeid}' holds resource '{name}' with limit {limit}: a limit is at least 1"
            ));
        }
    }
    if let Some(t) = settings.timeout {
        seconds(t).map_err(|e| format!("the ini timeout is {e}"))?;
    }
    if settings.width > MAX_WIDTH {
        return Err(format!(
            "a terminal width of {} (at most {MAX_WIDTH})",
            settings.width
        ));
    }
    Ok(())
}

/// A message from the collector once the collection is in: the pids it names are signalled.
pub fn collector_message(message: &FromPython) -> Result<(), String> {
    match message {
        FromPython::Forked { pid, .. } | FromPython::WorkerExited { pid, .. } => process_id(*pid),
        _ => Ok(()),
    }
}

/// A process group the controller may signal: never its own (0), init's (1), or one that
/// does not fit a pid.
fn process_id(pid: u32) -> Result<(), String> {
    if pid < 2 || i32::try_from(pid).is_err() {
        return Err(format!("{pid} as a worker's process id"));
    }
    Ok(())
}

/// A message from worker `w`, against what the controller sent it.
pub fn worker_message(
    message: &FromPython,
    w: usize,
    work: &dyn WorkSource,
    run_once: &RunOnceFixtures,
) -> Result<(), String> {
    let pending = |index: usize| work.holds(w, index);
    match message {
        FromPython::TestStart { index }
        | FromPython::TestDone { index, .. }
        | FromPython::TestPartial { index, .. }
            if !pending(*index) =>
        {
            Err(format!("a report for test {index}, which it was not sent"))
        }
        FromPython::TestDone { reports, .. } | FromPython::TestPartial { reports, .. } => {
            durations(reports)
        }
        FromPython::Released { indices } => {
            if !work.steal_pending(w) {
                return Err("tests it was not asked to release".into());
            }
            for (n, index) in indices.iter().enumerate() {
                if !pending(*index) {
                    return Err(format!(
                        "the release of test {index}, which it does not hold"
                    ));
                }
                if indices[..n].contains(index) {
                    return Err(format!("the release of test {index} twice"));
                }
            }
            Ok(())
        }
        FromPython::Ready { .. } if work.is_ready(w) => Err("a second ready".into()),
        FromPython::FixtureRequest { name } if run_once.waits(name, w) => Err(format!(
            "a second request for run-once fixture '{name}' while it waits for it"
        )),
        FromPython::FixtureReady { name, .. } | FromPython::FixtureFailed { name, .. }
            if run_once.setting_up(name) != Some(w) =>
        {
            Err(format!(
                "the outcome of run-once fixture '{name}', which it was not setting up"
            ))
        }
        FromPython::FixtureDone { name } if !run_once.owned_and_held(name, w) => Err(format!(
            "the teardown of run-once fixture '{name}', which it does not hold"
        )),
        FromPython::Ready { .. }
        | FromPython::TestStart { .. }
        | FromPython::FixtureRequest { .. }
        | FromPython::FixtureReady { .. }
        | FromPython::FixtureFailed { .. }
        | FromPython::FixtureDone { .. }
        | FromPython::InternalError
        | FromPython::TerminalSummary { .. }
        | FromPython::WorkerDone { .. } => Ok(()),
        FromPython::Hello { .. }
        | FromPython::Collected { .. }
        | FromPython::Forked { .. }
        | FromPython::WorkerExited { .. } => Err(format!(
            "an unexpected message ({})",
            super::message_kind(message)
        )),
    }
}

/// Phase durations are summed into estimates and the durations store.
fn durations(reports: &[PhaseReport]) -> Result<(), String> {
    match reports
        .iter()
        .find(|r| !(0.0..=MAX_SECONDS).contains(&r.duration))
    {
        Some(r) => Err(format!(
            "a {} phase of {} seconds",
            r.when.as_str(),
            r.duration
        )),
        None => Ok(()),
    }
}

/// Drives the local work source and the run-once bookkeeping with messages from fake workers
/// (`(worker, message)`, the worker taken modulo `workers`), each checked as the dispatcher
/// checks it and, if accepted, handled as the dispatcher hands it on; `worker_done` stands for
/// the worker's end and replacement. Panics if anything the scheduler hands out or gives back
/// is not a test of the collection: the property the fuzz target `worker_messages`
/// (crates/shoal-protocol/fuzz) and the seeded test below hold the controller to.
#[doc(hidden)]
pub fn drive_bookkeeping(
    dist: crate::options::Dist,
    tests: usize,
    workers: usize,
    messages: impl IntoIterator<Item = (usize, FromPython)>,
) {
    use crate::work::{self, Command, Constraints, Scheduler, WorkSource};

    let items: Vec<CollectedItem> = (0..tests)
        .map(|n| CollectedItem {
            nodeid: format!("t{}.py::t{n}", n % 3),
            file: format!("t{}.py", n % 3),
            scope: format!("t{}.py", n % 3),
            group: None,
            timeout: None,
            reruns: None,
            serial: n == 1,
            resources: if n % 4 == 2 {
                vec![("db".into(), 1)]
            } else {
                Vec::new()
            },
            display: None,
        })
        .collect();
    let workers = workers.max(1);
    let units = work::units(dist, &items, false);
    let mut scheduler =
        Scheduler::new(dist, units, workers, Constraints::from_items(&items)).with_modules(&items);
    let mut run_once = RunOnceFixtures::default();
    let check = |commands: Vec<Command>| {
        for command in commands {
            if let Command::Run { indices, .. } = command {
                assert!(indices.iter().all(|&i| i < tests), "ran {indices:?}");
            }
        }
    };
    for (w, message) in messages {
        let w = w % workers;
        if worker_message(&message, w, &scheduler, &run_once).is_err() {
            continue;
        }
        match message {
            FromPython::Ready { .. } => check(scheduler.worker_ready(w)),
            FromPython::TestDone { index, recycle, .. } => {
                if recycle.is_some() {
                    scheduler.retire(w);
                }
                check(scheduler.test_done(w, index))
            }
            FromPython::Released { indices } => check(scheduler.released(w, indices)),
            FromPython::FixtureRequest { name } => drop(run_once.request(name, w)),
            FromPython::FixtureReady { name, value } => drop(run_once.ready(name, w, value)),
            FromPython::FixtureFailed { name, text, kind } => {
                drop(run_once.failed(name, text, kind))
            }
            FromPython::FixtureDone { name } => run_once.owner_done(name, w),
            FromPython::WorkerDone { .. } => {
                let lost = scheduler.worker_lost(w);
                assert!(lost.iter().all(|&i| i < tests), "lost {lost:?}");
                check(scheduler.requeue(w, lost));
                scheduler.revive(w);
            }
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {

    use shoal_protocol::Recycle;

    use super::*;
    use crate::options::Dist;

    /// The fuzz target's property on seeded random message sequences: indices in and out of
    /// range, duplicates, releases nobody asked for, fixture messages out of turn.
    #[test]
    fn random_worker_messages_never_break_the_bookkeeping() {
        let mut state: u64 = 0x5eed_0bad_f4a3;
        let mut next = move |below: u64| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state % below
        };
        for case in 0..2_000 {
            let dist = [Dist::Load, Dist::WorkSteal, Dist::LoadFile, Dist::Each][case % 4];
            let tests = 1 + next(16) as usize;
            let ready = || FromPython::Ready { collection: None };
            let mut messages = vec![(0, ready()), (1, ready())];
            for _ in 0..next(200) {
                let index = next(tests as u64 + 3) as usize;
                let name = ["db", "web"][next(2) as usize].to_owned();
                // Mostly reports and releases: tests must finish for steals to happen.
                let message = match next(20) {
                    0 => FromPython::Ready { collection: None },
                    1 => FromPython::TestStart { index },
                    2..=9 => FromPython::TestDone {
                        index,
                        headline: None,
                        reports: vec![crate::results::passed_report(
                            [0.1, -1.0, 1e300][next(3) as usize],
                        )],
                        warnings: Vec::new(),
                        junit: None,
                        exit: None,
                        replay: None,
                        recycle: (next(8) == 0).then_some(Recycle::Tests),
                        leaks: Vec::new(),
                    },
                    10..=14 => FromPython::Released {
                        indices: (0..next(4))
                            .map(|_| next(tests as u64 + 3) as usize)
                            .collect(),
                    },
                    15 => FromPython::FixtureRequest { name },
                    16 => FromPython::FixtureReady {
                        name,
                        value: serde_json::Value::Null,
                    },
                    17 => FromPython::FixtureFailed {
                        name,
                        text: "x".into(),
                        kind: shoal_protocol::SetupFailure::Skip,
                    },
                    18 => FromPython::FixtureDone { name },
                    _ => FromPython::WorkerDone {
                        workeroutput: serde_json::Value::Null,
                        junit_properties: Vec::new(),
                        warnings: Vec::new(),
                    },
                };
                messages.push((next(3) as usize, message));
            }
            drive_bookkeeping(dist, tests, 2, messages);
        }
    }

    #[test]
    fn values_no_clock_or_signal_can_take_are_refused() {
        assert!(seconds(1e300).is_err());
        assert!(seconds(f64::NAN).is_err());
        assert!(seconds(-1.0).is_ok(), "0 or less disables a timeout");
        for pid in [0, 1, u32::MAX] {
            let forked = FromPython::Forked {
                worker: "gw0".into(),
                pid,
            };
            assert!(collector_message(&forked).is_err(), "pid {pid}");
        }
    }
}
