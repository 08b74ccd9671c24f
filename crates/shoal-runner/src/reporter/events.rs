//! `--report-json`: one JSON object per line for everything that happens in a run, for tools
//! that would otherwise scrape the terminal. The schema is `docs/events.md`; any change that
//! an existing consumer would misread bumps [`EVENTS_VERSION`].

use std::{
    fs::File,
    io::{self, BufWriter, Write},
    path::PathBuf,
    time::Duration,
};

use serde::Serialize;
use shoal_protocol::{Leak, Outcome, Recycle, When};

use super::RunStart;
use crate::{
    replay::triage::TriageVerdict,
    results::{Results, TestRecord},
    usage::ControllerUsage,
};

/// One line of the log; `docs/events.md` says what each field means.
#[derive(Serialize)]
#[serde(tag = "event", rename_all = "snake_case")]
enum Event<'a> {
    RunStart {
        version: u32,
        workers: usize,
        tests: usize,
        testrunuid: &'a str,
        /// `--shuffle`'s seed; left out of a run that was not shuffled.
        #[serde(skip_serializing_if = "Option::is_none")]
        shuffle_seed: Option<u64>,
    },
    WorkerStart {
        worker: &'a str,
    },
    WorkerStop {
        worker: &'a str,
        exit: &'a str,
    },
    WorkerRecycled {
        worker: &'a str,
        tests: usize,
        #[serde(flatten)]
        why: Recycle,
    },
    Test {
        nodeid: &'a str,
        worker: &'a str,
        outcome: &'static str,
        duration: f64,
        phases: Vec<Phase<'a>>,
        /// `--detect-leaks`' findings; left out where there are none.
        #[serde(skip_serializing_if = "<[_]>::is_empty")]
        leaks: &'a [Leak],
    },
    Triage {
        nodeid: &'a str,
        verdict: &'static str,
        reason: &'static str,
        bisect: Option<&'a str>,
    },
    RunEnd {
        exit_code: i32,
        duration: f64,
        counts: Counts,
        not_run: usize,
        #[serde(skip_serializing_if = "Option::is_none")]
        controller: Option<ControllerUsage>,
    },
}

/// Tests per outcome, an object whose keys come in the order the outcomes first occurred.
struct Counts(Vec<(&'static str, usize)>);

impl Serialize for Counts {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_map(self.0.iter().copied())
    }
}

/// One of a test's pytest reports.
#[derive(Serialize)]
struct Phase<'a> {
    when: When,
    outcome: &'a Outcome,
    category: &'a str,
    duration: f64,
    longrepr: Option<&'a str>,
    message: Option<&'a str>,
    sections: &'a [(String, String)],
}

/// The schema version, in every `run_start` event.
pub const EVENTS_VERSION: u32 = 1;

/// The events file could not be opened or written.
#[derive(Debug, thiserror::Error)]
#[error("write events to {target}")]
pub struct EventsError {
    target: String,
    source: io::Error,
}

/// Where events go, line by line.
pub struct EventLog {
    target: String,
    out: Box<dyn Write>,
}

impl EventLog {
    /// Opens `target`: a file path, or `-` for stdout.
    pub fn open(target: &str) -> Result<Self, EventsError> {
        let out: Box<dyn Write> = if target == "-" {
            Box::new(BufWriter::new(io::stdout()))
        } else {
            let file = File::create(PathBuf::from(target)).map_err(|source| EventsError {
                target: target.to_owned(),
                source,
            })?;
            Box::new(BufWriter::new(file))
        };
        Ok(Self {
            target: target.to_owned(),
            out,
        })
    }

    fn emit(&mut self, event: &Event<'_>) -> Result<(), EventsError> {
        let line = serde_json::to_string(event).expect("events serialize");
        writeln!(self.out, "{line}").map_err(|source| self.failed(source))
    }

    /// Writes the buffered lines: the dispatcher does whenever it has no event left to
    /// handle, so a reader following the file sees each burst of tests as it is handled.
    pub fn flush(&mut self) -> Result<(), EventsError> {
        self.out.flush().map_err(|source| self.failed(source))
    }

    fn failed(&self, source: io::Error) -> EventsError {
        EventsError {
            target: self.target.clone(),
            source,
        }
    }

    pub fn run_start(&mut self, start: &RunStart<'_>, testrunuid: &str) -> Result<(), EventsError> {
        self.emit(&Event::RunStart {
            version: EVENTS_VERSION,
            workers: start.workers,
            tests: start.tests,
            testrunuid,
            shuffle_seed: start.shuffle,
        })
    }

    pub fn worker_start(&mut self, worker: &str) -> Result<(), EventsError> {
        self.emit(&Event::WorkerStart { worker })
    }

    pub fn worker_stop(&mut self, worker: &str, exit: &str) -> Result<(), EventsError> {
        self.emit(&Event::WorkerStop { worker, exit })
    }

    pub fn worker_recycled(
        &mut self,
        worker: &str,
        tests: usize,
        why: Recycle,
    ) -> Result<(), EventsError> {
        self.emit(&Event::WorkerRecycled { worker, tests, why })
    }

    pub fn test(&mut self, record: &TestRecord) -> Result<(), EventsError> {
        let phases = record
            .reports
            .iter()
            .map(|r| Phase {
                when: r.when,
                outcome: &r.outcome,
                category: &r.category,
                duration: r.duration,
                longrepr: r.text.as_deref(),
                message: r.message.as_deref(),
                sections: &r.sections,
            })
            .collect();
        self.emit(&Event::Test {
            nodeid: &record.nodeid,
            worker: &record.worker,
            outcome: record.outcome(),
            duration: record.reports.iter().map(|r| r.duration).sum(),
            phases,
            leaks: &record.leaks,
        })
    }

    /// `--triage`'s verdict on one failed test.
    pub fn triage(&mut self, verdict: &TriageVerdict) -> Result<(), EventsError> {
        self.emit(&Event::Triage {
            nodeid: &verdict.nodeid,
            verdict: verdict.verdict.name(),
            reason: verdict.verdict.reason(),
            bisect: verdict.bisect.as_deref(),
        })
    }

    pub fn run_end(
        &mut self,
        results: &Results,
        exit_code: i32,
        elapsed: Duration,
    ) -> Result<(), EventsError> {
        let mut counts: Vec<(&'static str, usize)> = Vec::new();
        for outcome in results.records().iter().map(TestRecord::outcome) {
            match counts.iter_mut().find(|(o, _)| *o == outcome) {
                Some((_, n)) => *n += 1,
                None => counts.push((outcome, 1)),
            }
        }
        self.emit(&Event::RunEnd {
            exit_code,
            duration: elapsed.as_secs_f64(),
            counts: Counts(counts),
            not_run: results.not_run(),
            controller: ControllerUsage::current(),
        })
    }
}
