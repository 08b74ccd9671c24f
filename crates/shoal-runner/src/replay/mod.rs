//! `shoal replay` and `shoal bisect`: a recorded worker process's sequence run again.
//!
//! A test that fails only in a parallel run usually fails because of what ran before it in the
//! same worker process. The run's record ([`crate::record`]) says what that was; a replay runs
//! that sequence again, in one worker with the same worker id, count and seed, up to the
//! target test ([`Replay`]); a bisect runs parts of it to find the tests that make the target
//! fail ([`bisect::Bisect`]). Both are [`crate::work::fixed::Rounds`] behind the fixed work
//! source, so the collection, the pool and the reporters are a normal run's. The record is
//! read once the collection is known, since pytest's cache directory (where the kept runs
//! are) is pytest's to say. `docs/debugging.md` is the user's guide.

pub mod bisect;
pub mod ddmin;
pub mod triage;

use std::{collections::HashMap, path::PathBuf};

use shoal_protocol::CollectedItem;

use crate::{
    record::{self, ProcessRecord, RecordError, RunRecord, TestRun},
    work::fixed::Rounds,
    ExitCode,
};

/// What `shoal replay` or `shoal bisect` was asked for.
#[derive(Debug, Clone, Default)]
pub struct ReplayArgs {
    /// `--record FILE`: a record from anywhere.
    pub record: Option<PathBuf>,
    /// `--run ID`: one of the runs kept in the cache (default: the latest).
    pub run: Option<String>,
    /// `--worker gwN`: the process of that worker.
    pub worker: Option<String>,
    /// `--test NODEID` (bisect's NODEID): the target.
    pub test: Option<String>,
    /// `Some` for a bisect: at most this many rounds.
    pub bisect: Option<usize>,
}

/// The record does not hold what was asked for, or the collection no longer has its tests.
#[derive(Debug, thiserror::Error)]
pub enum ReplayError {
    #[error(transparent)]
    Record(#[from] RecordError),
    #[error("find worker {worker} in run {run}: its workers are {known}")]
    UnknownWorker {
        worker: String,
        run: String,
        known: String,
    },
    #[error("find {test} in run {run}{on}: no recorded worker process ran it")]
    TestNotInRecord {
        test: String,
        run: String,
        on: String,
    },
    #[error("choose a test to replay: no test failed in run {run}; name one with --test or a worker with --worker")]
    NoFailure { run: String },
    #[error("bisect {test}: it ran first in its worker process (run {run}), so no test before it could have changed what it sees")]
    NothingBefore { test: String, run: String },
    #[error("find {count} of run {run}'s tests in this collection (it changed, or other pytest arguments select less): {missing}")]
    NotCollected {
        run: String,
        count: usize,
        missing: String,
    },
}

impl ReplayError {
    pub fn exit_code(&self) -> ExitCode {
        match self {
            Self::Record(e) if !e.is_usage() => ExitCode::InternalError,
            Self::Record(_)
            | Self::UnknownWorker { .. }
            | Self::TestNotInRecord { .. }
            | Self::NoFailure { .. } => ExitCode::UsageError,
            Self::NothingBefore { .. } | Self::NotCollected { .. } => ExitCode::InternalError,
        }
    }
}

/// The recorded sequence a replay or bisect runs, resolved against this collection.
pub struct Plan {
    pub record: RunRecord,
    /// The worker id the process had (`gw1`).
    pub worker: String,
    /// Collection indices of what the process ran, up to and including the target.
    pub sequence: Vec<usize>,
    /// The target, the sequence's last test, when there is one.
    pub target: Option<String>,
    /// Which of its worker's processes it was, and how many tests it ran in all.
    pub process: usize,
    pub ran: usize,
}

impl Plan {
    /// Reads the record `args` name (the cache's runs are under `cache_dir`) and finds the
    /// process and target to replay in it.
    pub fn resolve(
        args: &ReplayArgs,
        cache_dir: Option<&std::path::Path>,
        items: &[CollectedItem],
    ) -> Result<Self, ReplayError> {
        let record = record::find(args.record.as_deref(), args.run.as_deref(), cache_dir)?;
        let (process, target) = select(&record, args.worker.as_deref(), args.test.as_deref())?;
        let process = &record.processes[process];
        let end = target.map_or(process.tests.len(), |at| at + 1);
        let sequence = sequence(&record, &process.tests[..end], items)?;
        Ok(Self {
            worker: process.worker.clone(),
            sequence,
            target: target.map(|at| process.tests[at].nodeid.clone()),
            process: process.process,
            ran: process.tests.len(),
            record,
        })
    }

    /// What the replay's one line says it ran.
    fn describe(&self) -> String {
        format!(
            "{} tests of worker {}'s process {} (of the {} it ran) in run {}",
            self.sequence.len(),
            self.worker,
            self.process,
            self.ran,
            self.record.run_id
        )
    }
}

/// The collection indices of `tests`, a stretch of one of `record`'s processes.
fn sequence(
    record: &RunRecord,
    tests: &[TestRun],
    items: &[CollectedItem],
) -> Result<Vec<usize>, ReplayError> {
    let by_id: HashMap<&str, usize> = items
        .iter()
        .enumerate()
        .map(|(index, item)| (item.nodeid.as_str(), index))
        .collect();
    let missing: Vec<&str> = tests
        .iter()
        .map(|t| t.nodeid.as_str())
        .filter(|id| !by_id.contains_key(id))
        .collect();
    if !missing.is_empty() {
        return Err(ReplayError::NotCollected {
            run: record.run_id.clone(),
            count: missing.len(),
            missing: listed(&missing),
        });
    }
    Ok(tests.iter().map(|t| by_id[t.nodeid.as_str()]).collect())
}

/// The first few of `nodeids`, for an error that would otherwise list a whole suite.
fn listed(nodeids: &[&str]) -> String {
    const SHOWN: usize = 5;
    let mut text = nodeids[..nodeids.len().min(SHOWN)].join(", ");
    if nodeids.len() > SHOWN {
        text.push_str(&format!(" and {} more", nodeids.len() - SHOWN));
    }
    text
}

/// The process to replay, by position in `record.processes`, and the position of the target
/// in it (`None`: the whole process).
fn select(
    record: &RunRecord,
    worker: Option<&str>,
    test: Option<&str>,
) -> Result<(usize, Option<usize>), ReplayError> {
    let run = || record.run_id.clone();
    let on_worker = |p: &ProcessRecord| worker.is_none_or(|w| p.worker == w);
    if let Some(worker) = worker.filter(|w| !record.processes.iter().any(|p| p.worker == *w)) {
        let mut known: Vec<&str> = record.processes.iter().map(|p| p.worker.as_str()).collect();
        known.dedup();
        return Err(ReplayError::UnknownWorker {
            worker: worker.to_owned(),
            run: run(),
            known: known.join(", "),
        });
    }
    // Every (process, position) considered, in the record's order.
    let entries = || {
        record
            .processes
            .iter()
            .enumerate()
            .filter(|(_, p)| on_worker(p))
            .flat_map(|(at, p)| {
                p.tests
                    .iter()
                    .enumerate()
                    .map(move |(t, test)| (at, t, test))
            })
    };
    let first_failure = |wanted: Option<&str>| {
        entries()
            .filter(|(_, _, t)| wanted.is_none_or(|w| t.nodeid == w))
            .find(|(_, _, t)| t.failed())
            .map(|(p, t, _)| (p, Some(t)))
    };
    match test {
        Some(test) => first_failure(Some(test))
            .or_else(|| {
                entries()
                    .find(|(_, _, t)| t.nodeid == test)
                    .map(|(p, t, _)| (p, Some(t)))
            })
            .ok_or_else(|| ReplayError::TestNotInRecord {
                test: test.to_owned(),
                run: run(),
                on: worker.map_or_else(String::new, |w| format!(" on worker {w}")),
            }),
        None => match (first_failure(None), worker) {
            (Some(found), _) => Ok(found),
            (None, Some(_)) => Ok((
                record
                    .processes
                    .iter()
                    .position(on_worker)
                    .expect("the worker is known"),
                None,
            )),
            (None, None) => Err(ReplayError::NoFailure { run: run() }),
        },
    }
}

/// One round: the recorded sequence, then a verdict on its target.
pub struct Replay {
    plan_line: String,
    sequence: Option<Vec<usize>>,
    target: Option<String>,
    /// How the target ended, once it did.
    outcome: Option<Option<bool>>,
}

impl Replay {
    pub fn new(plan: &Plan) -> Self {
        Self {
            plan_line: plan.describe(),
            sequence: Some(plan.sequence.clone()),
            target: plan.target.clone(),
            outcome: None,
        }
    }
}

impl Rounds for Replay {
    fn next(&mut self) -> Option<(usize, Vec<usize>)> {
        self.sequence.take().map(|sequence| (0, sequence))
    }

    fn due(&self) -> usize {
        usize::from(self.sequence.is_some())
    }

    fn done(&mut self, _id: usize, failed: Option<bool>) {
        self.outcome = Some(failed);
    }

    fn stop(&mut self) {
        self.sequence = None;
    }

    fn summary(&self) -> Option<String> {
        let verdict = match (&self.target, self.outcome) {
            (None, _) => String::new(),
            (Some(target), Some(Some(true))) => format!(": {target} failed again: REPRODUCED"),
            (Some(target), Some(Some(false))) => {
                format!(": {target} passed: NOT REPRODUCED")
            }
            (Some(target), _) => format!(": {target} never ran: NOT REPRODUCED"),
        };
        Some(format!("shoal: replayed {}{verdict}", self.plan_line))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn process(worker: &str, n: usize, tests: &[(&str, &str)]) -> ProcessRecord {
        ProcessRecord {
            worker: worker.into(),
            process: n,
            end: None,
            tests: tests
                .iter()
                .map(|(nodeid, outcome)| TestRun {
                    nodeid: (*nodeid).into(),
                    outcome: (*outcome).into(),
                    duration: 0.0,
                    attempt: 1,
                })
                .collect(),
        }
    }

    fn record() -> RunRecord {
        record::example(
            "r",
            vec![
                process("gw0", 0, &[("a", "passed"), ("b", "passed")]),
                process(
                    "gw1",
                    0,
                    &[("c", "passed"), ("d", "failed"), ("e", "passed")],
                ),
                process("gw0", 1, &[("f", "passed"), ("b", "failed")]),
            ],
        )
    }

    #[test]
    fn the_first_failure_is_the_default_target() {
        assert_eq!(select(&record(), None, None).unwrap(), (1, Some(1)));
    }

    #[test]
    fn a_named_test_is_taken_where_it_failed() {
        assert_eq!(select(&record(), None, Some("b")).unwrap(), (2, Some(1)));
        assert_eq!(select(&record(), None, Some("a")).unwrap(), (0, Some(0)));
    }

    #[test]
    fn a_worker_alone_means_its_first_failure_or_its_first_process() {
        assert_eq!(select(&record(), Some("gw0"), None).unwrap(), (2, Some(1)));
        let mut clean = record();
        clean.processes.truncate(2);
        assert_eq!(select(&clean, Some("gw0"), None).unwrap(), (0, None));
    }

    #[test]
    fn what_the_record_lacks_is_an_error() {
        assert!(matches!(
            select(&record(), Some("gw7"), None),
            Err(ReplayError::UnknownWorker { .. })
        ));
        assert!(matches!(
            select(&record(), Some("gw1"), Some("a")),
            Err(ReplayError::TestNotInRecord { .. })
        ));
        let mut clean = record();
        clean.processes.truncate(1);
        assert!(matches!(
            select(&clean, None, None),
            Err(ReplayError::NoFailure { .. })
        ));
    }
}
