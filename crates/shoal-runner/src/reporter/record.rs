//! The run's record ([`crate::record`]), kept from the reporter stream: a worker that connects
//! starts a process of its slot, each attempt a worker reports goes to that worker's current
//! process, and a worker's stop says how that process ended. Messages of one connection are
//! handled in the order they were sent, so each process's tests are in the order it ran them;
//! a test blamed for a crash is reported after its process stopped and before the slot's next
//! process connects, so it lands in the process that died under it.

use std::{
    collections::HashMap,
    path::{Path, PathBuf},
};

use super::ReporterEvent;
use crate::{
    record::{self, ProcessRecord, RecordError, RunRecord, TestRun},
    results::TestRecord,
};

/// What the record keeps of a run until the run ends.
pub struct Recorder {
    /// Where the record goes: the cache's `shoal/runs`.
    dir: PathBuf,
    record: RunRecord,
    /// Per worker id: its current process, an index into `record.processes`.
    current: HashMap<String, usize>,
    /// Per node id: attempts reported so far that will be retried.
    retried: HashMap<String, usize>,
}

impl Recorder {
    /// A recorder for the run `record` describes (its `processes` empty), kept in pytest's
    /// cache directory `cache_dir`.
    pub fn new(cache_dir: &Path, record: RunRecord) -> Self {
        Self {
            dir: record::runs_dir(cache_dir),
            record,
            current: HashMap::new(),
            retried: HashMap::new(),
        }
    }

    pub fn record(&mut self, event: &ReporterEvent<'_>) {
        match event {
            ReporterEvent::WorkerStarted { worker, .. } => {
                let process = self
                    .record
                    .processes
                    .iter()
                    .filter(|p| p.worker == *worker)
                    .count();
                self.current
                    .insert((*worker).to_owned(), self.record.processes.len());
                self.record.processes.push(ProcessRecord {
                    worker: (*worker).to_owned(),
                    process,
                    end: None,
                    tests: Vec::new(),
                });
            }
            ReporterEvent::WorkerStopped { worker, end, .. } => {
                if let Some(process) = self.process(worker) {
                    process.end = Some((*end).to_owned());
                }
            }
            ReporterEvent::TestRetrying(test) => {
                let attempt = self.retried.entry(test.nodeid.clone()).or_default();
                *attempt += 1;
                let attempt = *attempt;
                self.attempt(test, attempt);
            }
            ReporterEvent::TestFinished(test) => {
                let attempt = self.retried.remove(&test.nodeid).unwrap_or(0) + 1;
                self.attempt(test, attempt);
            }
            _ => {}
        }
    }

    fn process(&mut self, worker: &str) -> Option<&mut ProcessRecord> {
        let at = *self.current.get(worker)?;
        self.record.processes.get_mut(at)
    }

    fn attempt(&mut self, test: &TestRecord, attempt: usize) {
        let run = TestRun {
            nodeid: test.nodeid.clone(),
            outcome: test.outcome().to_owned(),
            duration: test.duration(),
            attempt,
        };
        if let Some(process) = self.process(&test.worker) {
            process.tests.push(run);
        }
    }

    /// The record so far: every process, with what it ran.
    pub fn run(&self) -> &RunRecord {
        &self.record
    }

    /// Writes the record among the kept runs.
    pub fn write(self) -> Result<PathBuf, RecordError> {
        record::save(&self.dir, &self.record)
    }
}
