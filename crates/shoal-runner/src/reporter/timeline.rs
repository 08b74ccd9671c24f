//! `--timeline`: the run as a Chrome trace (the trace-event "JSON Object Format"), which
//! Perfetto and chrome://tracing draw as one track per worker slot with a slice per test
//! attempt, its phases nested inside, and the workers' starts and stops as instants. A long
//! test started late, or a worker idling, shows at a glance. `docs/timeline.md` says what is
//! drawn.
//!
//! Times are the controller's: a test starts when its worker's `test_start` is handled (with
//! `--timeline` every worker reports starts) and ends when its `test_done` is, or when its
//! worker's process ended under it. Messages of one connection are handled in the order they
//! were sent, so a worker's slices never overlap. Inside a slice the phases are laid end to
//! end from its start with pytest's own durations, cut at its end.

use std::{
    collections::BTreeMap,
    fs, io,
    path::PathBuf,
    time::{Duration, Instant},
};

use serde::Serialize;
use shoal_protocol::{Outcome, PhaseReport, When};

use super::ReporterEvent;
use crate::results::TestRecord;

/// Every event belongs to one process, the run.
const PID: u32 = 1;

/// The outcome of a test still running when its worker stopped for good or the run ended.
const UNFINISHED: &str = "unfinished";

/// The trace file could not be written.
#[derive(Debug, thiserror::Error)]
#[error("write the timeline to {}", path.display())]
pub struct TimelineError {
    path: PathBuf,
    source: io::Error,
}

/// What the timeline keeps of a run until it is written at its end.
pub struct Timeline {
    path: PathBuf,
    /// Time zero: when the workers were being planned.
    origin: Instant,
    /// Per worker id.
    tracks: BTreeMap<String, Track>,
    slices: Vec<Slice>,
    marks: Vec<Mark>,
}

/// One worker slot's row.
struct Track {
    slot: usize,
    /// The test it runs now, and when it started.
    running: Option<(String, Duration)>,
    /// When its process ended, until the next one connects: a test it ran ends there.
    stopped: Option<Duration>,
    /// Where its last slice ended; a test without a known start begins no earlier.
    free_from: Duration,
}

/// One test attempt on one worker.
struct Slice {
    slot: usize,
    nodeid: String,
    worker: String,
    outcome: &'static str,
    start: Duration,
    end: Duration,
    phases: Vec<Span>,
}

/// One phase of a test, inside its slice.
struct Span {
    when: When,
    outcome: Outcome,
    start: Duration,
    end: Duration,
}

/// A worker process that connected or ended.
struct Mark {
    slot: usize,
    at: Duration,
    worker: String,
    /// How it ended; `None` for a start.
    exit: Option<String>,
}

impl Timeline {
    pub fn new(path: PathBuf) -> Self {
        Self {
            path,
            origin: Instant::now(),
            tracks: BTreeMap::new(),
            slices: Vec::new(),
            marks: Vec::new(),
        }
    }

    /// Takes note of what `event`, which happened `at`, adds to the picture.
    pub fn record(&mut self, event: &ReporterEvent<'_>, at: Instant) {
        let at = at.saturating_duration_since(self.origin);
        match event {
            ReporterEvent::WorkerStarted { slot, worker } => {
                let track = self.track(*slot, worker);
                // What the slot's last process never finished ended with it.
                let unfinished = track.unfinished(worker, at);
                track.stopped = None;
                self.slices.extend(unfinished);
                self.marks.push(Mark {
                    slot: *slot,
                    at,
                    worker: (*worker).to_owned(),
                    exit: None,
                });
            }
            ReporterEvent::WorkerStopped { slot, worker, end } => {
                self.track(*slot, worker).stopped = Some(at);
                self.marks.push(Mark {
                    slot: *slot,
                    at,
                    worker: (*worker).to_owned(),
                    exit: Some((*end).to_owned()),
                });
            }
            ReporterEvent::TestStarted { worker, nodeid } => {
                if let Some(track) = self.tracks.get_mut(*worker) {
                    track.running = Some(((*nodeid).to_owned(), at));
                }
            }
            ReporterEvent::TestRetrying(record) | ReporterEvent::TestFinished(record) => {
                self.finished(record, at)
            }
            _ => {}
        }
    }

    /// The track of worker `worker`, slot `slot`, made on first sight.
    fn track(&mut self, slot: usize, worker: &str) -> &mut Track {
        self.tracks
            .entry(worker.to_owned())
            .or_insert_with(|| Track {
                slot,
                running: None,
                stopped: None,
                free_from: Duration::ZERO,
            })
    }

    /// One attempt of a test ended `at`: its slice, from its start (else as long before its end
    /// as its phases took) to its end or its worker's.
    fn finished(&mut self, record: &TestRecord, at: Duration) {
        let Some(track) = self.tracks.get_mut(&record.worker) else {
            return;
        };
        let end = track.stopped.unwrap_or(at);
        let took = record.reports.iter().map(|r| seconds(r.duration)).sum();
        let start = track
            .running
            .take()
            .map_or_else(|| end.saturating_sub(took), |(_, start)| start)
            .max(track.free_from)
            .min(end);
        track.free_from = end;
        self.slices.push(Slice {
            slot: track.slot,
            nodeid: record.nodeid.clone(),
            worker: record.worker.clone(),
            outcome: record.outcome(),
            start,
            end,
            phases: lay_out(start, end, &record.reports),
        });
    }

    /// Writes the trace; `at` is the end of the run, where tests still running are cut off.
    pub fn write(mut self, at: Instant) -> Result<(), TimelineError> {
        let at = at.saturating_duration_since(self.origin);
        let unfinished = self
            .tracks
            .iter_mut()
            .filter_map(|(worker, track)| track.unfinished(worker, at));
        self.slices.extend(unfinished);
        let json = serde_json::to_vec(&self.trace()).expect("a trace serializes");
        fs::write(&self.path, json).map_err(|source| TimelineError {
            path: self.path.clone(),
            source,
        })
    }

    /// The trace file's one object.
    fn trace(&self) -> Trace<'_> {
        let mut events = vec![TraceEvent::Metadata {
            name: "process_name",
            pid: PID,
            tid: 0,
            args: MetaArgs::Name { name: "shoal" },
        }];
        for (worker, track) in &self.tracks {
            events.push(TraceEvent::Metadata {
                name: "thread_name",
                pid: PID,
                tid: track.slot,
                args: MetaArgs::Name { name: worker },
            });
            events.push(TraceEvent::Metadata {
                name: "thread_sort_index",
                pid: PID,
                tid: track.slot,
                args: MetaArgs::SortIndex {
                    sort_index: track.slot,
                },
            });
        }
        for slice in &self.slices {
            events.push(TraceEvent::Complete {
                name: &slice.nodeid,
                cat: "test",
                pid: PID,
                tid: slice.slot,
                ts: micros(slice.start),
                dur: length(slice.start, slice.end),
                cname: Some(colour(slice.outcome)),
                args: SliceArgs::Test {
                    outcome: slice.outcome,
                    worker: &slice.worker,
                    nodeid: &slice.nodeid,
                },
            });
            events.extend(slice.phases.iter().map(|span| TraceEvent::Complete {
                name: span.when.as_str(),
                cat: "phase",
                pid: PID,
                tid: slice.slot,
                ts: micros(span.start),
                dur: length(span.start, span.end),
                cname: None,
                args: SliceArgs::Phase {
                    outcome: span.outcome.as_str(),
                    nodeid: &slice.nodeid,
                },
            }));
        }
        events.extend(self.marks.iter().map(|mark| TraceEvent::Instant {
            name: match mark.exit {
                None => "worker started",
                Some(_) => "worker stopped",
            },
            cat: "worker",
            s: "t",
            pid: PID,
            tid: mark.slot,
            ts: micros(mark.at),
            args: MarkArgs {
                worker: &mark.worker,
                exit: mark.exit.as_deref(),
            },
        }));
        events.extend(self.busy_workers());
        Trace {
            trace_events: events,
            display_time_unit: "ms",
        }
    }

    /// The counter of workers running a test, at every change.
    fn busy_workers(&self) -> Vec<TraceEvent<'_>> {
        // At one instant, a test's end comes before the next one's start.
        let mut changes: Vec<(Duration, i64)> = self
            .slices
            .iter()
            .flat_map(|s| [(s.start, 1), (s.end, -1)])
            .collect();
        changes.sort();
        let mut busy = 0;
        let mut counter: Vec<TraceEvent<'_>> = Vec::new();
        for (at, change) in changes {
            busy += change;
            let ts = micros(at);
            if let Some(TraceEvent::Counter { ts: last, args, .. }) = counter.last_mut() {
                if *last == ts {
                    args.busy = busy;
                    continue;
                }
            }
            counter.push(TraceEvent::Counter {
                name: "busy workers",
                pid: PID,
                ts,
                args: Busy { busy },
            });
        }
        counter
    }
}

impl Track {
    /// The test running here, if any, as an unfinished slice up to `at` (or its process's end).
    fn unfinished(&mut self, worker: &str, at: Duration) -> Option<Slice> {
        let (nodeid, start) = self.running.take()?;
        let end = self.stopped.unwrap_or(at).max(start);
        self.free_from = end;
        Some(Slice {
            slot: self.slot,
            nodeid,
            worker: worker.to_owned(),
            outcome: UNFINISHED,
            start,
            end,
            phases: Vec::new(),
        })
    }
}

/// A test's phases end to end from `start`, each as long as pytest measured it, none past `end`.
fn lay_out(start: Duration, end: Duration, reports: &[PhaseReport]) -> Vec<Span> {
    let mut at = start;
    reports
        .iter()
        .map(|report| {
            let from = at;
            at = (at + seconds(report.duration)).min(end);
            Span {
                when: report.when,
                outcome: report.outcome.clone(),
                start: from,
                end: at,
            }
        })
        .collect()
}

/// A phase's duration; a value the clock cannot hold (negative, not a number) is none.
fn seconds(value: f64) -> Duration {
    Duration::try_from_secs_f64(value).unwrap_or_default()
}

fn micros(at: Duration) -> u64 {
    u64::try_from(at.as_micros()).unwrap_or(u64::MAX)
}

/// Microseconds from `start` to `end`, each rounded down as its `ts` is, so that a phase
/// still ends within its test.
fn length(start: Duration, end: Duration) -> u64 {
    micros(end) - micros(start)
}

/// chrome://tracing's reserved colour for a test's outcome (Perfetto colours by name).
fn colour(outcome: &str) -> &'static str {
    match outcome {
        "passed" => "good",
        "failed" | "error" => "terrible",
        "xpassed" | UNFINISHED => "yellow",
        _ => "grey",
    }
}

/// The trace-event "JSON Object Format".
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Trace<'a> {
    trace_events: Vec<TraceEvent<'a>>,
    display_time_unit: &'static str,
}

/// One trace event, by its phase (`ph`); `ts` and `dur` are microseconds.
#[derive(Serialize)]
#[serde(tag = "ph")]
enum TraceEvent<'a> {
    #[serde(rename = "M")]
    Metadata {
        name: &'static str,
        pid: u32,
        tid: usize,
        args: MetaArgs<'a>,
    },
    #[serde(rename = "X")]
    Complete {
        name: &'a str,
        cat: &'static str,
        pid: u32,
        tid: usize,
        ts: u64,
        dur: u64,
        #[serde(skip_serializing_if = "Option::is_none")]
        cname: Option<&'static str>,
        args: SliceArgs<'a>,
    },
    #[serde(rename = "i")]
    Instant {
        name: &'static str,
        cat: &'static str,
        /// The instant's scope: its thread.
        s: &'static str,
        pid: u32,
        tid: usize,
        ts: u64,
        args: MarkArgs<'a>,
    },
    #[serde(rename = "C")]
    Counter {
        name: &'static str,
        pid: u32,
        ts: u64,
        args: Busy,
    },
}

#[derive(Serialize)]
#[serde(untagged)]
enum MetaArgs<'a> {
    Name { name: &'a str },
    SortIndex { sort_index: usize },
}

#[derive(Serialize)]
#[serde(untagged)]
enum SliceArgs<'a> {
    Test {
        outcome: &'static str,
        worker: &'a str,
        nodeid: &'a str,
    },
    Phase {
        outcome: &'a str,
        nodeid: &'a str,
    },
}

#[derive(Serialize)]
struct MarkArgs<'a> {
    worker: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    exit: Option<&'a str>,
}

#[derive(Serialize)]
struct Busy {
    busy: i64,
}

#[cfg(test)]
mod tests {
    use serde_json::{json, Value};

    use super::*;
    use crate::results::crash_report;

    fn phase(when: When, outcome: Outcome, category: &str, seconds: f64) -> PhaseReport {
        PhaseReport {
            outcome,
            category: category.into(),
            duration: seconds,
            ..crash_report(String::new(), when)
        }
    }

    /// A test of `seconds` per phase (setup, call, teardown) that ended as `category` says.
    fn record(nodeid: &str, worker: &str, category: &str, seconds: [f64; 3]) -> TestRecord {
        let outcome = match category {
            "failed" => Outcome::Failed,
            _ => Outcome::Passed,
        };
        TestRecord {
            index: 0,
            nodeid: nodeid.into(),
            worker: worker.into(),
            headline: None,
            reports: vec![
                phase(When::Setup, Outcome::Passed, "", seconds[0]),
                phase(When::Call, outcome, category, seconds[1]),
                phase(When::Teardown, Outcome::Passed, "", seconds[2]),
            ],
            warnings: Vec::new(),
            junit: None,
            earlier_attempts: Vec::new(),
            display: None,
            leaks: Vec::new(),
        }
    }

    struct Clock {
        timeline: Timeline,
        _dir: tempfile::TempDir,
    }

    impl Clock {
        fn new() -> Self {
            let dir = tempfile::tempdir().unwrap();
            Self {
                timeline: Timeline::new(dir.path().join("t.json")),
                _dir: dir,
            }
        }

        /// `event`, `ms` milliseconds into the run.
        fn at(&mut self, ms: u64, event: ReporterEvent<'_>) {
            let at = self.timeline.origin + Duration::from_millis(ms);
            self.timeline.record(&event, at);
        }

        /// The trace written at `ms`.
        fn written(self, ms: u64) -> Value {
            let path = self.timeline.path.clone();
            let at = self.timeline.origin + Duration::from_millis(ms);
            self.timeline.write(at).unwrap();
            serde_json::from_slice(&fs::read(path).unwrap()).unwrap()
        }
    }

    fn events<'v>(trace: &'v Value, ph: &str) -> Vec<&'v Value> {
        trace["traceEvents"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|e| e["ph"] == ph)
            .collect()
    }

    /// The test slices, and the phase slices, of the trace, in the order written.
    fn slices<'v>(trace: &'v Value, cat: &str) -> Vec<&'v Value> {
        events(trace, "X")
            .into_iter()
            .filter(|e| e["cat"] == cat)
            .collect()
    }

    #[test]
    fn a_test_is_a_slice_from_its_start_to_its_end_with_its_phases_inside() {
        let mut clock = Clock::new();
        clock.at(
            1,
            ReporterEvent::WorkerStarted {
                slot: 1,
                worker: "gw1",
            },
        );
        let test = record("t.py::test_a", "gw1", "failed", [0.001, 0.005, 0.002]);
        clock.at(
            10,
            ReporterEvent::TestStarted {
                worker: "gw1",
                nodeid: "t.py::test_a",
            },
        );
        clock.at(20, ReporterEvent::TestFinished(&test));
        let trace = clock.written(30);

        assert_eq!(trace["displayTimeUnit"], "ms");
        assert_eq!(
            events(&trace, "M"),
            [
                &json!({"ph": "M", "name": "process_name", "pid": 1, "tid": 0, "args": {"name": "shoal"}}),
                &json!({"ph": "M", "name": "thread_name", "pid": 1, "tid": 1, "args": {"name": "gw1"}}),
                &json!({"ph": "M", "name": "thread_sort_index", "pid": 1, "tid": 1, "args": {"sort_index": 1}}),
            ]
        );
        assert_eq!(
            slices(&trace, "test"),
            [&json!({
                "ph": "X", "cat": "test", "name": "t.py::test_a", "pid": 1, "tid": 1,
                "ts": 10_000, "dur": 10_000, "cname": "terrible",
                "args": {"outcome": "failed", "worker": "gw1", "nodeid": "t.py::test_a"},
            })]
        );
        let phases: Vec<_> = slices(&trace, "phase")
            .iter()
            .map(|p| {
                (
                    p["name"].clone(),
                    p["ts"].clone(),
                    p["dur"].clone(),
                    p["args"].clone(),
                )
            })
            .collect();
        assert_eq!(
            phases,
            [
                (
                    json!("setup"),
                    json!(10_000),
                    json!(1_000),
                    json!({"outcome": "passed", "nodeid": "t.py::test_a"})
                ),
                (
                    json!("call"),
                    json!(11_000),
                    json!(5_000),
                    json!({"outcome": "failed", "nodeid": "t.py::test_a"})
                ),
                (
                    json!("teardown"),
                    json!(16_000),
                    json!(2_000),
                    json!({"outcome": "passed", "nodeid": "t.py::test_a"})
                ),
            ]
        );
    }

    #[test]
    fn phases_longer_than_the_slice_are_cut_at_its_end() {
        let start = Duration::from_millis(100);
        let end = Duration::from_millis(104);
        let test = record("t.py::test_a", "gw0", "passed", [0.003, 0.003, 0.003]);
        let spans: Vec<_> = lay_out(start, end, &test.reports)
            .into_iter()
            .map(|s| (s.when, s.start.as_millis(), s.end.as_millis()))
            .collect();
        assert_eq!(
            spans,
            [
                (When::Setup, 100, 103),
                (When::Call, 103, 104),
                (When::Teardown, 104, 104)
            ]
        );
    }

    #[test]
    fn without_a_start_a_test_begins_as_long_before_its_end_as_its_phases_took() {
        let mut clock = Clock::new();
        clock.at(
            0,
            ReporterEvent::WorkerStarted {
                slot: 0,
                worker: "gw0",
            },
        );
        let first = record("t.py::test_a", "gw0", "passed", [0.0, 0.030, 0.0]);
        clock.at(50, ReporterEvent::TestFinished(&first));
        // Longer than the time since the last one ended: it starts there.
        let second = record("t.py::test_b", "gw0", "passed", [0.0, 0.030, 0.0]);
        clock.at(60, ReporterEvent::TestFinished(&second));
        let trace = clock.written(60);
        let spans: Vec<_> = slices(&trace, "test")
            .iter()
            .map(|s| (s["ts"].clone(), s["dur"].clone()))
            .collect();
        assert_eq!(
            spans,
            [
                (json!(20_000), json!(30_000)),
                (json!(50_000), json!(10_000))
            ]
        );
    }

    #[test]
    fn a_crash_ends_the_test_at_its_worker_s_stop_and_the_restart_is_marked() {
        let mut clock = Clock::new();
        clock.at(
            0,
            ReporterEvent::WorkerStarted {
                slot: 0,
                worker: "gw0",
            },
        );
        clock.at(
            5,
            ReporterEvent::TestStarted {
                worker: "gw0",
                nodeid: "t.py::test_crash",
            },
        );
        clock.at(
            9,
            ReporterEvent::WorkerStopped {
                slot: 0,
                worker: "gw0",
                end: "exit code 3",
            },
        );
        let mut crash = record("t.py::test_crash", "gw0", "failed", [0.0; 3]);
        crash.reports = vec![crash_report("crashed".into(), When::Call)];
        clock.at(12, ReporterEvent::TestFinished(&crash));
        clock.at(
            40,
            ReporterEvent::WorkerStarted {
                slot: 0,
                worker: "gw0",
            },
        );
        let trace = clock.written(50);

        let test = slices(&trace, "test");
        assert_eq!(
            (&test[0]["ts"], &test[0]["dur"]),
            (&json!(5_000), &json!(4_000))
        );
        assert_eq!(
            events(&trace, "i"),
            [
                &json!({"ph": "i", "s": "t", "cat": "worker", "name": "worker started", "pid": 1, "tid": 0, "ts": 0, "args": {"worker": "gw0"}}),
                &json!({"ph": "i", "s": "t", "cat": "worker", "name": "worker stopped", "pid": 1, "tid": 0, "ts": 9_000, "args": {"worker": "gw0", "exit": "exit code 3"}}),
                &json!({"ph": "i", "s": "t", "cat": "worker", "name": "worker started", "pid": 1, "tid": 0, "ts": 40_000, "args": {"worker": "gw0"}}),
            ]
        );
    }

    #[test]
    fn a_test_still_running_at_the_end_is_drawn_unfinished() {
        let mut clock = Clock::new();
        clock.at(
            0,
            ReporterEvent::WorkerStarted {
                slot: 0,
                worker: "gw0",
            },
        );
        clock.at(
            5,
            ReporterEvent::TestStarted {
                worker: "gw0",
                nodeid: "t.py::test_hang",
            },
        );
        let trace = clock.written(25);
        assert_eq!(
            slices(&trace, "test"),
            [&json!({
                "ph": "X", "cat": "test", "name": "t.py::test_hang", "pid": 1, "tid": 0,
                "ts": 5_000, "dur": 20_000, "cname": "yellow",
                "args": {"outcome": "unfinished", "worker": "gw0", "nodeid": "t.py::test_hang"},
            })]
        );
    }

    #[test]
    fn the_counter_follows_the_busy_workers() {
        let mut clock = Clock::new();
        for (slot, worker) in ["gw0", "gw1"].into_iter().enumerate() {
            clock.at(0, ReporterEvent::WorkerStarted { slot, worker });
        }
        clock.at(
            0,
            ReporterEvent::TestStarted {
                worker: "gw0",
                nodeid: "a",
            },
        );
        clock.at(
            10,
            ReporterEvent::TestStarted {
                worker: "gw1",
                nodeid: "b",
            },
        );
        clock.at(
            20,
            ReporterEvent::TestFinished(&record("a", "gw0", "passed", [0.0; 3])),
        );
        clock.at(
            20,
            ReporterEvent::TestStarted {
                worker: "gw0",
                nodeid: "c",
            },
        );
        clock.at(
            30,
            ReporterEvent::TestFinished(&record("b", "gw1", "passed", [0.0; 3])),
        );
        clock.at(
            40,
            ReporterEvent::TestFinished(&record("c", "gw0", "passed", [0.0; 3])),
        );
        let trace = clock.written(40);
        let counter: Vec<_> = events(&trace, "C")
            .iter()
            .map(|c| {
                (
                    c["name"].clone(),
                    c["ts"].clone(),
                    c["args"]["busy"].clone(),
                )
            })
            .collect();
        let busy = json!("busy workers");
        assert_eq!(
            counter,
            [
                (busy.clone(), json!(0), json!(1)),
                (busy.clone(), json!(10_000), json!(2)),
                (busy.clone(), json!(20_000), json!(2)),
                (busy.clone(), json!(30_000), json!(1)),
                (busy, json!(40_000), json!(0)),
            ]
        );
    }

    #[test]
    fn a_file_that_cannot_be_written_is_an_error_naming_it() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("missing/t.json");
        let err = Timeline::new(path.clone())
            .write(Instant::now())
            .unwrap_err();
        assert_eq!(
            err.to_string(),
            format!("write the timeline to {}", path.display())
        );
    }
}
