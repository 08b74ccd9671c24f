//! Helpers for the fault tests (`failures.rs`, `failures_random.rs`): a watchdog that bounds
//! a run more tightly than the shared helpers do, the `--report-json` events of a run, and
//! checks that every collected test ended exactly once.
//!
//! Built on `common`.

use std::{
    collections::BTreeMap,
    fs,
    path::Path,
    sync::{
        atomic::{AtomicBool, Ordering},
        mpsc, Arc,
    },
    thread,
    time::{Duration, Instant},
};

use serde_json::Value;

use crate::common::{Output, Project, Run};

/// The `--report-json` file each fault run writes, relative to the project directory.
pub const EVENTS: &str = "events.jsonl";

/// Kills a process with SIGKILL if it is still running after a time limit.
///
/// It holds a pidfd, so it can never signal another process that reused the pid.
pub struct Watchdog {
    stop: Option<mpsc::Sender<()>>,
    fired: Arc<AtomicBool>,
    thread: Option<thread::JoinHandle<()>>,
}

/// A pidfd for `pid`, or `None` if there is no such process.
pub fn pidfd_open(pid: i32) -> Option<i32> {
    // SAFETY: pidfd_open takes a pid and flags and returns a new descriptor or -1.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) };
    (fd >= 0).then_some(fd as i32)
}

/// Sends `signal` to the process a pidfd refers to; false if it is gone.
pub fn pidfd_kill(fd: i32, signal: i32) -> bool {
    // SAFETY: pidfd_send_signal with a null siginfo behaves as kill(2) on the pidfd's process.
    unsafe {
        libc::syscall(
            libc::SYS_pidfd_send_signal,
            fd,
            signal,
            std::ptr::null::<libc::siginfo_t>(),
            0,
        ) == 0
    }
}

impl Watchdog {
    pub fn new(pid: i32, limit: Duration) -> Self {
        let fired = Arc::new(AtomicBool::new(false));
        let (stop, stopped) = mpsc::channel::<()>();
        let fd = pidfd_open(pid);
        let flag = fired.clone();
        let thread = thread::spawn(move || {
            let Some(fd) = fd else { return };
            if let Err(mpsc::RecvTimeoutError::Timeout) = stopped.recv_timeout(limit) {
                flag.store(true, Ordering::SeqCst);
                pidfd_kill(fd, libc::SIGKILL);
            }
            // SAFETY: the descriptor is ours and closed once.
            unsafe { libc::close(fd) };
        });
        Self {
            stop: Some(stop),
            fired,
            thread: Some(thread),
        }
    }

    /// Stops watching; whether the limit had passed and the process was killed.
    pub fn disarm(mut self) -> bool {
        self.finish()
    }

    fn finish(&mut self) -> bool {
        drop(self.stop.take());
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        self.fired.load(Ordering::SeqCst)
    }
}

impl Drop for Watchdog {
    fn drop(&mut self) {
        self.finish();
    }
}

/// Runs to the end like [`Run::run`] (orphans checked), but kills shoal after `limit`, and
/// fails if it had to. Returns the output and how long the run took.
#[track_caller]
pub fn run_within(run: Run<'_>, limit: Duration) -> (Output, Duration) {
    let started = Instant::now();
    let running = run.start();
    let watchdog = Watchdog::new(running.pid(), limit);
    let out = running.wait();
    let elapsed = started.elapsed();
    assert!(
        !watchdog.disarm(),
        "shoal was still running after {limit:?} and was killed: the run did not end\n{}",
        out.context()
    );
    (out, elapsed)
}

/// The records the fixtures' tests wrote so far, without consuming them. A line still being
/// written (there should be none: each is one `write`) is skipped.
pub fn peek_records(project: &Project) -> Vec<Value> {
    fs::read_to_string(&project.record)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect()
}

/// Polls (every 10 ms, for at most `limit`) until the records satisfy `done`.
#[track_caller]
pub fn wait_for_records(
    project: &Project,
    limit: Duration,
    what: &str,
    done: impl Fn(&[Value]) -> bool,
) -> Vec<Value> {
    let deadline = Instant::now() + limit;
    loop {
        let records = peek_records(project);
        if done(&records) {
            return records;
        }
        assert!(
            Instant::now() < deadline,
            "waited {limit:?} in vain for {what}; records: {records:#?}"
        );
        thread::sleep(Duration::from_millis(10));
    }
}

/// The `--report-json` events of the last run in `project` (written to [`EVENTS`]).
#[track_caller]
pub fn events(project: &Project, out: &Output) -> Vec<Value> {
    let path = project.path.join(EVENTS);
    let text = fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("read {}: {e}\n{}", path.display(), out.context()));
    text.lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| {
            serde_json::from_str(l)
                .unwrap_or_else(|e| panic!("bad event line {l:?}: {e}\n{}", out.context()))
        })
        .collect()
}

/// The events named `name`.
pub fn of_kind<'a>(events: &'a [Value], name: &str) -> Vec<&'a Value> {
    events.iter().filter(|e| e["event"] == name).collect()
}

/// The `test` events per node id, in the order they were written: retried attempts first,
/// the final outcome last.
pub fn test_events(events: &[Value]) -> BTreeMap<String, Vec<&Value>> {
    let mut map: BTreeMap<String, Vec<&Value>> = BTreeMap::new();
    for e in of_kind(events, "test") {
        let nodeid = e["nodeid"]
            .as_str()
            .unwrap_or_else(|| panic!("test event without nodeid: {e}"));
        map.entry(nodeid.to_owned()).or_default().push(e);
    }
    map
}

/// The `run_end` event (exactly one).
#[track_caller]
pub fn run_end<'a>(events: &'a [Value], out: &Output) -> &'a Value {
    let ends = of_kind(events, "run_end");
    assert_eq!(ends.len(), 1, "run_end events: {ends:?}\n{}", out.context());
    ends[0]
}

/// A test event's crash message, if its worker died under it.
pub fn crash_message(event: &Value) -> Option<String> {
    event["phases"].as_array()?.iter().find_map(|p| {
        let text = p["message"].as_str()?;
        text.contains(" crashed while running ")
            .then(|| text.to_owned())
    })
}

/// All failure texts of a test event (every phase's `longrepr`).
pub fn longrepr(event: &Value) -> String {
    event["phases"]
        .as_array()
        .map(|phases| {
            phases
                .iter()
                .filter_map(|p| p["longrepr"].as_str())
                .collect::<Vec<_>>()
                .join("\n")
        })
        .unwrap_or_default()
}

/// Asserts the promise "every collected test ends with exactly one final outcome":
/// every node id of `collected` has `test` events, the earlier ones (at most `retries`) failed
/// attempts and the last one its outcome; no node id outside the collection has any; the
/// events of tests listed in `not_run` are absent instead. Returns the final events.
#[track_caller]
pub fn assert_one_final_outcome<'a>(
    events: &'a [Value],
    collected: &[String],
    retries: usize,
    out: &Output,
) -> BTreeMap<String, &'a Value> {
    let per_test = test_events(events);
    let end = run_end(events, out);
    let not_run = end["not_run"].as_u64().unwrap_or(u64::MAX) as usize;
    let mut finals = BTreeMap::new();
    for (nodeid, list) in &per_test {
        assert!(
            collected.contains(nodeid),
            "a test event for {nodeid:?}, which was not collected\n{}",
            out.context()
        );
        let (last, earlier) = list.split_last().unwrap();
        assert!(
            earlier.len() <= retries,
            "{nodeid}: {} test events with --retries {retries}: {list:#?}\n{}",
            list.len(),
            out.context()
        );
        for attempt in earlier {
            assert!(
                matches!(attempt["outcome"].as_str(), Some("failed" | "error")),
                "{nodeid}: an attempt that did not fail was retried: {attempt}\n{}",
                out.context()
            );
        }
        finals.insert(nodeid.clone(), *last);
    }
    assert_eq!(
        finals.len() + not_run,
        collected.len(),
        "tests with an outcome ({}) plus tests not run ({not_run}) must be the tests \
         collected ({}); without an outcome: {:?}\n{}",
        finals.len(),
        collected.len(),
        collected
            .iter()
            .filter(|id| !finals.contains_key(*id))
            .collect::<Vec<_>>(),
        out.context()
    );
    // The run's own counts agree with the events.
    let counted: u64 = end["counts"]
        .as_object()
        .map(|m| m.values().filter_map(Value::as_u64).sum())
        .unwrap_or(0);
    assert_eq!(
        counted as usize,
        finals.len(),
        "run_end counts {} tests, the events {}\n{}",
        end["counts"],
        finals.len(),
        out.context()
    );
    finals
}

/// Asserts that a test event is a crash of its worker: failed (or an error, for a crash in
/// setup or teardown), with the message `worker '<its worker>' crashed while running
/// '<nodeid>' (<how>...)`, where more detail (such as the phase) may follow `<how>`.
#[track_caller]
pub fn assert_crashed(event: &Value, how: &str, out: &Output) {
    let nodeid = event["nodeid"].as_str().unwrap_or("?");
    let worker = event["worker"].as_str().unwrap_or("?");
    assert!(
        matches!(event["outcome"].as_str(), Some("failed" | "error")),
        "{nodeid}: a crash must fail the test: {event}\n{}",
        out.context()
    );
    let expected = format!("worker '{worker}' crashed while running '{nodeid}' ({how}");
    let message = crash_message(event).unwrap_or_default();
    assert!(
        message
            .strip_prefix(&expected)
            .is_some_and(|rest| rest.starts_with(')') || rest.starts_with(',')),
        "{nodeid}: expected a message starting {expected:?}: {event}\n{}",
        out.context()
    );
}

/// Whether `pid` is a live process (not a zombie).
pub fn alive(pid: i64) -> bool {
    let Ok(stat) = fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return false;
    };
    let state = stat
        .rsplit_once(')')
        .and_then(|(_, rest)| rest.split_whitespace().next())
        .unwrap_or("X");
    !matches!(state, "Z" | "X" | "x")
}

/// The summary line for a test, if the short summary (`-rA` or `-rf`) has one.
pub fn summary_line<'a>(out: &'a Output, word: &str, nodeid: &str) -> Option<&'a str> {
    let prefix = format!("{word} {nodeid}");
    out.stdout.lines().find(|l| {
        l.strip_prefix(&prefix)
            .is_some_and(|rest| rest.is_empty() || rest.starts_with(' '))
    })
}

/// Reads a file written by a run (such as a JUnit report).
pub fn read(path: &Path) -> String {
    fs::read_to_string(path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()))
}

/// A number from the environment, decimal or `0x` hex (seeds, run counts).
pub fn env_u64(name: &str) -> Option<u64> {
    let text = std::env::var(name).ok()?;
    let text = text.trim();
    match text.strip_prefix("0x") {
        Some(hex) => u64::from_str_radix(hex, 16).ok(),
        None => text.parse().ok(),
    }
}

/// Every child process the fixture's tests recorded (`{"child": pid}`) is gone.
#[track_caller]
pub fn assert_children_gone(project: &Project, out: &Output) {
    for child in project
        .take_records()
        .iter()
        .filter_map(|r| r["child"].as_i64())
    {
        assert!(!alive(child), "child {child} survived\n{}", out.context());
    }
}
