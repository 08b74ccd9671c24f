//! The durations store: how long each test took in past runs, kept under pytest's cache
//! directory so later runs can estimate time left (and, later, schedule and shard by it).
//!
//! The file is JSON with a `version`; a corrupt file or one from a newer shoal gives a
//! warning and is rebuilt, never an error. pytest-split's `.test_durations` (node id ->
//! seconds) seeds tests the store has not seen yet.

use std::{
    collections::BTreeMap,
    fs,
    path::{Path, PathBuf},
    time::{SystemTime, UNIX_EPOCH},
};

use serde::{Deserialize, Serialize};
use shoal_protocol::{CollectedItem, When};

use crate::results::Results;

/// The format this shoal reads and writes.
pub const STORE_VERSION: u32 = 1;

/// Weight of the newest run in the smoothed average.
const SMOOTHING: f64 = 0.3;

/// One test's history.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct TestDurations {
    pub setup: f64,
    pub call: f64,
    pub teardown: f64,
    /// Exponentially smoothed total (setup + call + teardown) over past runs.
    pub average: f64,
    /// Seconds since the Unix epoch of the last run that saw it.
    pub last_seen: u64,
}

#[derive(Debug, Serialize, Deserialize)]
struct StoreFile {
    version: u32,
    tests: BTreeMap<String, TestDurations>,
}

/// The store, loaded from disk.
#[derive(Debug, Default)]
pub struct DurationStore {
    path: PathBuf,
    tests: BTreeMap<String, TestDurations>,
    /// What was wrong with the files it read, one warning each, for the reporters to show.
    problems: Vec<String>,
}

/// The store could not be saved.
#[derive(Debug, thiserror::Error)]
#[error("save the durations store {path}")]
pub struct StoreError {
    path: PathBuf,
    source: std::io::Error,
}

impl DurationStore {
    /// Where the store lives inside pytest's cache directory.
    pub fn path_in(cache_dir: &Path) -> PathBuf {
        cache_dir.join("shoal").join("durations.json")
    }

    /// Loads the store at `path`, seeded from pytest-split's file in `rootdir` when present.
    pub fn load(path: PathBuf, rootdir: Option<&Path>) -> Self {
        let mut problems = Vec::new();
        let mut tests = match fs::read_to_string(&path) {
            Ok(text) => match serde_json::from_str::<StoreFile>(&text) {
                Ok(file) if file.version == STORE_VERSION => file.tests,
                Ok(file) => {
                    problems.push(format!(
                        "shoal: warning: {} has version {} (this shoal reads {STORE_VERSION}); rebuilding it",
                        path.display(),
                        file.version
                    ));
                    BTreeMap::new()
                }
                Err(e) => {
                    problems.push(format!(
                        "shoal: warning: {} is corrupt ({e}); rebuilding it",
                        path.display()
                    ));
                    BTreeMap::new()
                }
            },
            Err(_) => BTreeMap::new(),
        };
        if let Some(split) = rootdir.map(|d| d.join(".test_durations")) {
            for (nodeid, seconds) in read_pytest_split(&split, &mut problems) {
                tests.entry(nodeid).or_insert(TestDurations {
                    call: seconds,
                    average: seconds,
                    ..TestDurations::default()
                });
            }
        }
        Self {
            path,
            tests,
            problems,
        }
    }

    /// Only pytest-split's `.test_durations` in `rootdir`, for a run without pytest's cache
    /// (`-p no:cacheprovider`): read, never saved.
    pub fn from_pytest_split(rootdir: &Path) -> Self {
        Self::load(PathBuf::new(), Some(rootdir))
    }

    /// The warnings about what it read, once.
    pub fn take_problems(&mut self) -> Vec<String> {
        std::mem::take(&mut self.problems)
    }

    /// The expected duration of a test, when known.
    pub fn expected(&self, nodeid: &str) -> Option<f64> {
        self.tests.get(nodeid).map(|t| t.average)
    }

    /// Folds a run's results in and writes the store.
    pub fn update(&mut self, results: &Results) -> Result<(), StoreError> {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        for record in results.records() {
            let mut run = TestDurations {
                last_seen: now,
                ..TestDurations::default()
            };
            for report in &record.reports {
                match report.when {
                    When::Setup => run.setup = report.duration,
                    When::Call => run.call = report.duration,
                    When::Teardown => run.teardown = report.duration,
                    When::Collect => {}
                }
            }
            let total = run.setup + run.call + run.teardown;
            run.average = match self.tests.get(&record.nodeid) {
                Some(old) => SMOOTHING * total + (1.0 - SMOOTHING) * old.average,
                None => total,
            };
            self.tests.insert(record.nodeid.clone(), run);
        }
        let file = StoreFile {
            version: STORE_VERSION,
            tests: std::mem::take(&mut self.tests),
        };
        // Compact: read before every run starts and written after it ends, and at packaging's
        // 64,000 tests the indented form is a fifth larger (19 MB against 16).
        let text = serde_json::to_vec(&file).expect("JSON serializes");
        self.tests = file.tests;
        let error = |source| StoreError {
            path: self.path.clone(),
            source,
        };
        if let Some(parent) = self.path.parent() {
            fs::create_dir_all(parent).map_err(error)?;
        }
        // Write then rename, so a run killed mid-write never leaves a torn file.
        let tmp = self.path.with_extension("json.tmp");
        fs::write(&tmp, text).map_err(error)?;
        fs::rename(&tmp, &self.path).map_err(error)
    }
}

/// Every test's expected seconds, for the estimate of time left and the split into shards.
#[derive(Debug, Clone, PartialEq)]
pub struct Expected {
    /// Per collection index: its history, else the mean of the tests with history; with no
    /// history at all, one each.
    pub seconds: Vec<f64>,
    /// Per collection index: its setup's seconds in the last run that saw it (0 without one),
    /// where a module or class fixture's cost shows, charged to the first test using it.
    pub setup: Vec<f64>,
    /// How many tests had a history.
    pub known: usize,
}

impl Expected {
    pub fn new(store: Option<&DurationStore>, items: &[CollectedItem]) -> Self {
        let history: Vec<Option<f64>> = items
            .iter()
            .map(|item| {
                // The store is a file anyone may edit: a negative or endless history is none.
                store
                    .and_then(|s| s.expected(&item.nodeid))
                    .filter(|s| s.is_finite() && *s >= 0.0)
            })
            .collect();
        let known: Vec<f64> = history.iter().flatten().copied().collect();
        let fallback = match known.len() {
            0 => 1.0,
            n => known.iter().sum::<f64>() / n as f64,
        };
        let setup = items
            .iter()
            .map(|item| {
                store
                    .and_then(|s| s.tests.get(&item.nodeid))
                    .map(|t| t.setup)
                    .filter(|s| s.is_finite() && *s >= 0.0)
                    .unwrap_or(0.0)
            })
            .collect();
        Self {
            seconds: history.iter().map(|h| h.unwrap_or(fallback)).collect(),
            setup,
            known: known.len(),
        }
    }
}

/// Writes pytest-split's `.test_durations` at `path`: the tests it held, with each test of
/// `results` at its latest duration (setup to teardown), sorted by node id.
pub fn write_pytest_split(path: &Path, results: &Results) -> Result<(), StoreError> {
    let mut problems = Vec::new();
    let mut tests = read_pytest_split(path, &mut problems);
    for record in results.records() {
        let seconds = record.reports.iter().map(|r| r.duration).sum();
        tests.insert(record.nodeid.clone(), seconds);
    }
    let text = serde_json::to_string_pretty(&tests).expect("JSON serializes");
    fs::write(path, text + "\n").map_err(|source| StoreError {
        path: path.to_path_buf(),
        source,
    })
}

/// pytest-split's `.test_durations`: a JSON object of node id -> seconds; anything else is
/// ignored with a warning.
fn read_pytest_split(path: &Path, problems: &mut Vec<String>) -> BTreeMap<String, f64> {
    let Ok(text) = fs::read_to_string(path) else {
        return BTreeMap::new();
    };
    serde_json::from_str(&text).unwrap_or_else(|e| {
        problems.push(format!("shoal: warning: ignoring {}: {e}", path.display()));
        BTreeMap::new()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn corrupt_or_newer_files_are_rebuilt_not_fatal() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("durations.json");
        fs::write(&path, "{ not json").unwrap();
        let mut store = DurationStore::load(path.clone(), None);
        assert!(store.expected("a").is_none());
        store.update(&Results::new(0, 1)).unwrap();
        fs::write(&path, r#"{"version": 99, "tests": {"a": {}}}"#).unwrap();
        assert!(DurationStore::load(path.clone(), None)
            .expected("a")
            .is_none());
    }

    #[test]
    fn pytest_split_seeds_unknown_tests() {
        let dir = tempfile::tempdir().unwrap();
        fs::write(dir.path().join(".test_durations"), r#"{"t.py::a": 1.5}"#).unwrap();
        let store = DurationStore::load(dir.path().join("d.json"), Some(dir.path()));
        assert_eq!(store.expected("t.py::a"), Some(1.5));
    }
}
