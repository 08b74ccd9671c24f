//! What a build keeps in Redis besides the queue itself, as JSON: the leader's description of
//! the build, and each test's result with where and when it ran. Nothing in it is code.

use serde::{Deserialize, Serialize};
use shoal_protocol::{JunitDelta, PhaseReport, PytestSettings, Warning};

use crate::results::{passed_report, TestRecord};

/// The version of [`BuildInfo`] and [`StoredTest`]; a report refuses a build of another.
pub const VERSION: u32 = 1;

/// What the leader says of the build, for the other nodes and for `shoal report`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct BuildInfo {
    pub version: u32,
    /// Every collected node id, in collection order, with how pytest shows it when it differs.
    pub items: Vec<(String, Option<String>)>,
    /// The `--dist` mode whose units the queue holds.
    pub dist: String,
    /// The leader's pytest settings: the report's verbosity, `-r`, JUnit suite name.
    pub settings: PytestSettings,
    /// Units pushed at the start (retries add more).
    pub units: usize,
}

/// One test's result as a node acknowledged it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct StoredTest {
    pub index: usize,
    pub nodeid: String,
    /// The node and the worker on it that ran the test.
    pub node: String,
    pub worker: String,
    /// Its place in the worker's sequence (1 for the worker's first test).
    pub position: usize,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub headline: Option<String>,
    /// Seconds, setup to teardown.
    pub duration: f64,
    /// Its phase reports, unless it simply passed ([`TestRecord::plain_pass`]).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub reports: Vec<PhaseReport>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub warnings: Vec<Warning>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub junit: Option<JunitDelta>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub display: Option<String>,
}

impl StoredTest {
    /// `record` as run on `node`; the attempts before it are stored on their own.
    pub fn new(record: &TestRecord, node: &str, position: usize) -> Self {
        let plain_pass = record.plain_pass();
        Self {
            index: record.index,
            nodeid: record.nodeid.clone(),
            node: node.to_owned(),
            worker: record.worker.clone(),
            position,
            headline: record.headline.clone().filter(|_| !plain_pass),
            duration: record.duration(),
            reports: if plain_pass {
                Vec::new()
            } else {
                record.reports.clone()
            },
            warnings: record.warnings.clone(),
            junit: record.junit.clone(),
            display: record.display.clone(),
        }
    }

    pub fn to_json(&self) -> String {
        serde_json::to_string(self).expect("a stored test serialises")
    }

    /// The record the reporters take: the worker shown as `gw1@node`.
    pub fn into_record(self) -> TestRecord {
        TestRecord {
            index: self.index,
            nodeid: self.nodeid,
            worker: format!("{}@{}", self.worker, self.node),
            headline: self.headline,
            reports: if self.reports.is_empty() {
                vec![passed_report(self.duration)]
            } else {
                self.reports
            },
            warnings: self.warnings,
            junit: self.junit,
            earlier_attempts: Vec::new(),
            display: self.display,
            leaks: Vec::new(),
        }
    }
}
