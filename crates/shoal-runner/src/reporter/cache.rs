//! pytest's cache, written as pytest would have written it after the same run, so that
//! `pytest --lf` and `shoal --lf` both rerun exactly the failures.
//!
//! The collector's own cacheprovider still selects tests (`--lf`, `--ff`, `--nf`), clears the
//! cache (`--cache-clear`) and records `cache/nodeids`; only `cache/lastfailed` depends on
//! outcomes, and only the controller has seen them all.

use std::{
    fs,
    path::{Path, PathBuf},
};

use serde_json::{Map, Value};
use shoal_protocol::{Outcome, Warning, When};

use crate::results::Results;

/// `cache/lastfailed` could not be updated.
#[derive(Debug, thiserror::Error)]
#[error("update {path}")]
pub struct CacheError {
    path: PathBuf,
    source: std::io::Error,
}

impl CacheError {
    /// The warning pytest's cache gives when it cannot write a value.
    pub fn warning(&self) -> Warning {
        Warning {
            message: format!(
                "PytestCacheWarning: could not create cache path {}: {}",
                self.path.display(),
                self.source
            ),
            location: None,
        }
    }
}

/// Applies the run's outcomes to `cache/lastfailed` under `cache_dir`, with pytest's rule:
/// a passed call or any skip clears a test, any failed phase records it.
pub fn update_lastfailed(cache_dir: &Path, results: &Results) -> Result<(), CacheError> {
    let path = cache_dir.join("v").join("cache").join("lastfailed");
    let saved = read_object(&path);
    let mut lastfailed = saved.clone().unwrap_or_default();
    for (record, report) in results.reports() {
        if (report.when == When::Call && report.outcome == Outcome::Passed)
            || report.outcome == Outcome::Skipped
        {
            lastfailed.remove(&record.nodeid);
        } else if report.outcome == Outcome::Failed {
            lastfailed.insert(record.nodeid.clone(), Value::Bool(true));
        }
    }
    if saved.unwrap_or_default() == lastfailed {
        return Ok(()); // pytest writes only what changed
    }
    let error = |source| CacheError {
        path: path.clone(),
        source,
    };
    if let Some(parent) = path.parent() {
        fs::create_dir_all(parent).map_err(error)?;
    }
    let text = serde_json::to_string_pretty(&Value::Object(lastfailed)).expect("JSON serializes");
    fs::write(&path, text).map_err(error)
}

/// The cached object, or `None` when absent; a corrupt file is treated as absent, as pytest
/// does, and a warning says so.
fn read_object(path: &Path) -> Option<Map<String, Value>> {
    let text = fs::read_to_string(path).ok()?;
    match serde_json::from_str(&text) {
        Ok(Value::Object(map)) => Some(map),
        _ => {
            eprintln!(
                "shoal: warning: {} is not a JSON object; starting it afresh",
                path.display()
            );
            None
        }
    }
}
