//! The run's record: which tests each worker process ran, in order, so that a failure that
//! depends on what ran before it in the same process can be replayed (`shoal replay`) and its
//! culprits found (`shoal bisect`), here or on another machine.
//!
//! A record is a small JSON file with a `version`; the last [`KEEP`] runs are kept under
//! pytest's cache directory (`shoal/runs/<run id>.json`), oldest removed first, and any record
//! file can be read from anywhere (a CI artifact). Unlike the durations store, a record that
//! cannot be read is an error: it is only ever read because someone asked to replay it.
//! `docs/debugging.md` describes every field.

use std::{
    fs, io,
    path::{Path, PathBuf},
    time::{SystemTime, UNIX_EPOCH},
};

use serde::{Deserialize, Serialize};

/// The format this shoal reads and writes.
pub const RECORD_VERSION: u32 = 1;

/// How many runs' records the cache keeps.
pub const KEEP: usize = 10;

/// One run, as its workers ran it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunRecord {
    pub version: u32,
    /// The file's name in the cache, without `.json`: the start time, then the run's uid.
    pub run_id: String,
    /// When the run started, in seconds since the Unix epoch.
    pub started: u64,
    pub shoal_version: String,
    pub python_version: Option<String>,
    pub pytest_version: Option<String>,
    /// The seed the tests ran with, if one was in use.
    pub seed: Option<Seed>,
    /// The `--dist` mode.
    pub dist: String,
    /// How many worker slots ran (`PYTEST_XDIST_WORKER_COUNT`).
    pub workers: usize,
    /// Whether the workers were xdist workers (not `-n 0`, which looks like plain pytest).
    pub distributed: bool,
    /// shoal's whole command line, and the directory it ran in.
    pub argv: Vec<String>,
    pub cwd: String,
    /// Every worker process, in the order each started (a crashed, timed-out or recycled
    /// worker's slot starts a new process with the same `worker` id).
    pub processes: Vec<ProcessRecord>,
}

/// What a run is, known once it is planned: everything in its record but the processes.
pub struct RunFacts<'a> {
    pub testrunuid: &'a str,
    pub python_version: Option<String>,
    pub pytest_version: Option<String>,
    /// The workers' `workerinput` extras, where pytest-randomly puts its seed.
    pub workerinput: &'a serde_json::Map<String, serde_json::Value>,
    /// `--shuffle`'s seed (pytest-randomly's too, where that plugin is active).
    pub shuffle: Option<u64>,
    pub dist: String,
    pub workers: usize,
    pub distributed: bool,
    pub argv: Vec<String>,
}

impl RunRecord {
    /// The record of a run starting now, before any worker ran.
    pub fn new(facts: RunFacts<'_>) -> Self {
        let since_epoch = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default();
        let uid: String = facts.testrunuid.chars().take(8).collect();
        let seed = facts
            .workerinput
            .get("randomly_seed")
            .filter(|value| !value.is_null())
            .map(|value| Seed {
                value: value.clone(),
                source: "pytest-randomly".into(),
            })
            // With pytest-randomly active, --shuffle's seed is its seed: one entry says both.
            .or_else(|| {
                facts.shuffle.map(|seed| Seed {
                    value: seed.into(),
                    source: "shoal".into(),
                })
            });
        Self {
            version: RECORD_VERSION,
            // Milliseconds, zero-padded: the ids sort as the runs started.
            run_id: format!("{:013}-{uid}", since_epoch.as_millis()),
            started: since_epoch.as_secs(),
            shoal_version: env!("CARGO_PKG_VERSION").to_owned(),
            python_version: facts.python_version,
            pytest_version: facts.pytest_version,
            seed,
            dist: facts.dist,
            workers: facts.workers,
            distributed: facts.distributed,
            argv: facts.argv,
            cwd: std::env::current_dir()
                .map(|dir| dir.display().to_string())
                .unwrap_or_default(),
            processes: Vec::new(),
        }
    }
}

/// A seed and who chose it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Seed {
    pub value: serde_json::Value,
    /// `pytest-randomly` (its `randomly_seed`, which `--shuffle` then shares), or `shoal`
    /// (`--shuffle`'s seed, without pytest-randomly).
    pub source: String,
}

/// What one worker process ran.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ProcessRecord {
    /// The worker id (`gw0`).
    pub worker: String,
    /// Which of its slot's processes this is, from 0.
    pub process: usize,
    /// How it ended (`exit code 0`, `killed by signal 9`), or `null` if the run ended first.
    pub end: Option<String>,
    pub tests: Vec<TestRun>,
}

/// One attempt of a test.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TestRun {
    pub nodeid: String,
    /// `passed`, `failed`, `error`, `skipped`, `xfailed` or `xpassed`.
    pub outcome: String,
    /// Seconds, setup to teardown.
    pub duration: f64,
    /// 1 for the first run of the test, 2 for its first retry, ...
    pub attempt: usize,
}

impl TestRun {
    /// Whether this attempt counts as failing (a failure or an error).
    pub fn failed(&self) -> bool {
        matches!(self.outcome.as_str(), "failed" | "error")
    }
}

/// A record could not be written, found or read.
#[derive(Debug, thiserror::Error)]
pub enum RecordError {
    #[error("write the run's record {}", path.display())]
    Write { path: PathBuf, source: io::Error },
    #[error("read the run's record {}", path.display())]
    Read { path: PathBuf, source: io::Error },
    #[error("read the run's record {}: it is not a shoal record", path.display())]
    Corrupt {
        path: PathBuf,
        source: serde_json::Error,
    },
    #[error(
        "read the run's record {}: it has version {found}, this shoal reads version {RECORD_VERSION}",
        path.display()
    )]
    Version { path: PathBuf, found: u64 },
    #[error("find run {id} in {}: the recorded runs are {known}", dir.display())]
    UnknownRun {
        id: String,
        dir: PathBuf,
        known: String,
    },
    #[error("find a recorded run in {}: run shoal once first, or name a record with --record", dir.display())]
    NoRuns { dir: PathBuf },
    #[error("find pytest's cache directory for the recorded runs (-p no:cacheprovider?): name a record with --record")]
    NoCache,
}

impl RecordError {
    /// Naming a run or file that is not there is a usage error; a file that is there and
    /// cannot be read is not.
    pub fn is_usage(&self) -> bool {
        matches!(
            self,
            Self::UnknownRun { .. } | Self::NoRuns { .. } | Self::NoCache
        ) || matches!(self, Self::Read { source, .. } if source.kind() == io::ErrorKind::NotFound)
    }
}

/// Where the records live inside pytest's cache directory.
pub fn runs_dir(cache_dir: &Path) -> PathBuf {
    cache_dir.join("shoal").join("runs")
}

/// Writes `record` among the kept runs in `dir`, and removes the oldest beyond [`KEEP`].
pub fn save(dir: &Path, record: &RunRecord) -> Result<PathBuf, RecordError> {
    let path = dir.join(format!("{}.json", record.run_id));
    let error = |source| RecordError::Write {
        path: path.clone(),
        source,
    };
    fs::create_dir_all(dir).map_err(error)?;
    // Compact: ten are kept, and at packaging's 64,000 tests one is 11 MB, indented 15.
    let text = serde_json::to_vec(record).expect("a record serializes");
    fs::write(&path, text).map_err(error)?;
    let ids = run_ids(dir).map_err(error)?;
    for old in ids.iter().take(ids.len().saturating_sub(KEEP)) {
        // Another run may have removed it first.
        let _ = fs::remove_file(dir.join(format!("{old}.json")));
    }
    Ok(path)
}

/// The ids of the runs kept in `dir`, oldest first (ids begin with the start time).
fn run_ids(dir: &Path) -> io::Result<Vec<String>> {
    let mut ids: Vec<String> = fs::read_dir(dir)?
        .filter_map(|entry| {
            let name = entry.ok()?.file_name().into_string().ok()?;
            name.strip_suffix(".json").map(str::to_owned)
        })
        .collect();
    ids.sort();
    Ok(ids)
}

/// Reads the record a replay or bisect names: the file `file`, else run `run` of the cache,
/// else the cache's latest run.
pub fn find(
    file: Option<&Path>,
    run: Option<&str>,
    cache_dir: Option<&Path>,
) -> Result<RunRecord, RecordError> {
    if let Some(file) = file {
        return read(file);
    }
    let dir = runs_dir(cache_dir.ok_or(RecordError::NoCache)?);
    let ids = match run_ids(&dir) {
        Ok(ids) => ids,
        Err(e) if e.kind() == io::ErrorKind::NotFound => Vec::new(),
        Err(source) => return Err(RecordError::Read { path: dir, source }),
    };
    let id = match run {
        Some(id) if ids.iter().any(|known| known == id) => id.to_owned(),
        Some(id) => {
            return Err(RecordError::UnknownRun {
                id: id.to_owned(),
                known: if ids.is_empty() {
                    "none".to_owned()
                } else {
                    ids.join(", ")
                },
                dir,
            })
        }
        None => ids
            .last()
            .cloned()
            .ok_or(RecordError::NoRuns { dir: dir.clone() })?,
    };
    read(&dir.join(format!("{id}.json")))
}

/// Reads one record file; its version is checked before the rest is trusted to parse.
pub fn read(path: &Path) -> Result<RunRecord, RecordError> {
    let text = fs::read_to_string(path).map_err(|source| RecordError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    let corrupt = |source| RecordError::Corrupt {
        path: path.to_path_buf(),
        source,
    };
    let value: serde_json::Value = serde_json::from_str(&text).map_err(corrupt)?;
    match value.get("version").and_then(serde_json::Value::as_u64) {
        Some(found) if found != u64::from(RECORD_VERSION) => Err(RecordError::Version {
            path: path.to_path_buf(),
            found,
        }),
        _ => serde_json::from_value(value).map_err(corrupt),
    }
}

/// A record of `processes` with every other field plain, for tests.
#[cfg(test)]
pub(crate) fn example(run_id: &str, processes: Vec<ProcessRecord>) -> RunRecord {
    RunRecord {
        version: RECORD_VERSION,
        run_id: run_id.to_owned(),
        started: 0,
        shoal_version: "0".into(),
        python_version: None,
        pytest_version: None,
        seed: None,
        dist: "load".into(),
        workers: 2,
        distributed: true,
        argv: Vec::new(),
        cwd: "/".into(),
        processes,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_oldest_runs_beyond_the_kept_ones_are_removed() {
        let dir = tempfile::tempdir().unwrap();
        for n in 0..KEEP + 2 {
            save(dir.path(), &example(&format!("run-{n:02}"), Vec::new())).unwrap();
        }
        let ids = run_ids(dir.path()).unwrap();
        assert_eq!(ids.len(), KEEP);
        assert_eq!(ids[0], "run-02");
        let latest = find(None, None, Some(dir.path().parent().unwrap()));
        // `find` looks under <cache>/shoal/runs, not in `dir` itself.
        assert!(matches!(latest, Err(RecordError::NoRuns { .. })));
    }

    #[test]
    fn a_newer_version_and_a_corrupt_file_are_errors() {
        let dir = tempfile::tempdir().unwrap();
        let newer = dir.path().join("newer.json");
        fs::write(&newer, r#"{"version": 2, "whatever": []}"#).unwrap();
        assert!(matches!(
            read(&newer),
            Err(RecordError::Version { found: 2, .. })
        ));
        let corrupt = dir.path().join("corrupt.json");
        fs::write(&corrupt, "{not json").unwrap();
        assert!(matches!(read(&corrupt), Err(RecordError::Corrupt { .. })));
    }

    #[test]
    fn the_seed_is_pytest_randomly_s_else_the_shuffle_s() {
        let seed = |randomly: Option<u64>, shuffle: Option<u64>| {
            let mut workerinput = serde_json::Map::new();
            if let Some(seed) = randomly {
                workerinput.insert("randomly_seed".into(), seed.into());
            }
            let facts = RunFacts {
                testrunuid: "uid",
                python_version: None,
                pytest_version: None,
                workerinput: &workerinput,
                shuffle,
                dist: "load".into(),
                workers: 2,
                distributed: true,
                argv: Vec::new(),
            };
            RunRecord::new(facts).seed.map(|s| (s.value, s.source))
        };
        assert_eq!(seed(None, None), None);
        assert_eq!(seed(None, Some(5)), Some((5.into(), "shoal".into())));
        // --shuffle with pytest-randomly shares its seed: the two are the same number.
        let both = Some((7.into(), "pytest-randomly".into()));
        assert_eq!(seed(Some(7), Some(7)), both);
        assert_eq!(seed(Some(7), None), both);
    }
}
