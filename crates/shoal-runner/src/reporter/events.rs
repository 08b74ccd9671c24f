//! `--report-json`: one JSON object per line for everything that happens in a run, for tools
//! that would otherwise scrape the terminal. The schema is `docs/events.md`; any change that
//! an existing consumer would misread bumps [`EVENTS_VERSION`].

use std::{
    fs::File,
    io::{self, BufWriter, Write},
    path::PathBuf,
    time::Duration,
};

use serde_json::{json, Value};

use crate::results::{Results, TestRecord};

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
            Box::new(io::stdout())
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

    fn emit(&mut self, event: Value) -> Result<(), EventsError> {
        let line = serde_json::to_string(&event).expect("JSON serializes");
        writeln!(self.out, "{line}")
            .and_then(|()| self.out.flush())
            .map_err(|source| EventsError {
                target: self.target.clone(),
                source,
            })
    }

    pub fn run_start(
        &mut self,
        workers: usize,
        total: usize,
        testrunuid: &str,
    ) -> Result<(), EventsError> {
        self.emit(json!({
            "event": "run_start",
            "version": EVENTS_VERSION,
            "workers": workers,
            "tests": total,
            "testrunuid": testrunuid,
        }))
    }

    pub fn worker_start(&mut self, worker: &str) -> Result<(), EventsError> {
        self.emit(json!({"event": "worker_start", "worker": worker}))
    }

    pub fn worker_stop(&mut self, worker: &str, exit: &str) -> Result<(), EventsError> {
        self.emit(json!({"event": "worker_stop", "worker": worker, "exit": exit}))
    }

    pub fn test(&mut self, record: &TestRecord) -> Result<(), EventsError> {
        let phases: Vec<Value> = record
            .reports
            .iter()
            .map(|r| {
                json!({
                    "when": r.when,
                    "outcome": r.outcome,
                    "category": r.category,
                    "duration": r.duration,
                    "longrepr": r.text,
                    "message": r.message,
                    "sections": r.sections,
                })
            })
            .collect();
        self.emit(json!({
            "event": "test",
            "nodeid": record.nodeid,
            "worker": record.worker,
            "outcome": record.outcome(),
            "duration": record.reports.iter().map(|r| r.duration).sum::<f64>(),
            "phases": phases,
        }))
    }

    pub fn run_end(
        &mut self,
        results: &Results,
        exit_code: i32,
        elapsed: Duration,
    ) -> Result<(), EventsError> {
        let mut counts = serde_json::Map::new();
        for record in results.records() {
            let entry = counts.entry(record.outcome()).or_insert(json!(0));
            *entry = json!(entry.as_u64().unwrap_or(0) + 1);
        }
        self.emit(json!({
            "event": "run_end",
            "exit_code": exit_code,
            "duration": elapsed.as_secs_f64(),
            "counts": counts,
            "not_run": results.not_run(),
        }))
    }
}
