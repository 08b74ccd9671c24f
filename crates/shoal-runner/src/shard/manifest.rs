//! What a shard's JUnit file says about its run, for `shoal merge`: one `<property>` of the
//! `<testsuite>`, named [`PROPERTY`], whose value is this JSON (schema: docs/sharding.md).
//!
//! It names the collection (a fingerprint of every selected node id, in order), the shard, the
//! tests the partition gave it, and each test it reported, in the order of the file's
//! `<testcase>` elements, with how many elements each has, so the merge can prove that every
//! test ran exactly once and rebuild the whole run's summary. Passing tests carry only their
//! node id and time; the others their phase reports, as the terminal shows them.

use std::collections::HashSet;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use shoal_protocol::{CollectError, CollectedItem, PhaseReport};

use super::Shard;
use crate::results::{Results, TestRecord};

/// The name of the `<property>` that holds the manifest.
pub const PROPERTY: &str = "shoal.shard";

/// The manifest's format; the merge refuses others.
pub const VERSION: u32 = 1;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Manifest {
    pub version: u32,
    /// This shard, counted from 1.
    pub shard: usize,
    pub shards: usize,
    /// [`fingerprint`] of the selected collection.
    pub fingerprint: String,
    /// [`split_digest`] of the partition every shard computed: shards that split with
    /// different durations histories disagree here.
    pub split: String,
    /// How many tests the selected collection holds, over every shard.
    pub collected: usize,
    /// The node ids the partition gave this shard, in collection order.
    pub assigned: Vec<String>,
    /// The files that failed to collect (`--continue-on-collection-errors`): every shard
    /// collects, so every shard reports them, and the merge keeps one copy.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub collect_errors: Vec<CollectError>,
    /// How many `<testcase>` elements at the start of the file stand for them.
    #[serde(default)]
    pub collect_testcases: usize,
    /// The tests this shard reported, in the order of their `<testcase>` elements.
    pub tests: Vec<ShardTest>,
    /// Failures no test could be blamed for (a worker that crashed between tests).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub session_errors: Vec<String>,
}

/// One test a shard reported.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ShardTest {
    pub nodeid: String,
    /// The node id as pytest showed it, where that differs (relative to the invocation).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub display: Option<String>,
    /// pytest's title for its failure section, where it has one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub headline: Option<String>,
    pub worker: String,
    /// How many `<testcase>` elements it wrote.
    pub testcases: usize,
    /// Seconds, setup to teardown.
    pub duration: f64,
    /// Its phase reports, unless it simply passed.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub reports: Vec<PhaseReport>,
    /// The phase reports of attempts that failed before (`--retries`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub earlier: Vec<Vec<PhaseReport>>,
}

/// A collection's identity: SHA-256 of its node ids in order, one per line, in hex. Node ids
/// are relative to the rootdir, so it is the same on every machine with the same checkout.
pub fn fingerprint(items: &[CollectedItem]) -> String {
    let mut hash = Sha256::new();
    for item in items {
        hash.update(item.nodeid.as_bytes());
        hash.update(b"\n");
    }
    hex(&hash.finalize())
}

/// How two collections differ, one line per node id (`- ` only in `ours`, `+ ` only in
/// `theirs`, ten of each at most), for errors that refuse to mix them.
pub fn nodeid_diff(ours: &[&str], theirs: &[&str]) -> String {
    let (mine, other): (HashSet<&str>, HashSet<&str>) = (
        ours.iter().copied().collect(),
        theirs.iter().copied().collect(),
    );
    let mut diff = String::new();
    for id in ours.iter().filter(|id| !other.contains(*id)).take(10) {
        diff.push_str(&format!("\n  - {id}"));
    }
    for id in theirs.iter().filter(|id| !mine.contains(*id)).take(10) {
        diff.push_str(&format!("\n  + {id}"));
    }
    if diff.is_empty() {
        diff = "\n  (same node ids in a different order)".into();
    }
    diff
}

/// A partition's identity: SHA-256 of each shard's collection indices, in hex.
pub fn split_digest(parts: &[Vec<usize>]) -> String {
    let mut hash = Sha256::new();
    for part in parts {
        for index in part {
            hash.update(index.to_le_bytes());
        }
        hash.update(b"/");
    }
    hex(&hash.finalize())
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|byte| format!("{byte:02x}")).collect()
}

/// What a shard knows of itself before its tests run.
#[derive(Debug, Clone)]
pub struct ShardRun {
    pub shard: Shard,
    pub fingerprint: String,
    pub split: String,
    pub collected: usize,
    pub assigned: Vec<String>,
}

impl Manifest {
    /// The manifest of a finished shard; the tests in the order [`crate::reporter::junit`]
    /// writes their `<testcase>` elements.
    pub fn new(run: &ShardRun, results: &Results) -> Self {
        Self {
            version: VERSION,
            shard: run.shard.index,
            shards: run.shard.total,
            fingerprint: run.fingerprint.clone(),
            split: run.split.clone(),
            collected: run.collected,
            assigned: run.assigned.clone(),
            collect_errors: results
                .collect_errors()
                .iter()
                .map(|record| CollectError {
                    nodeid: record.nodeid.clone(),
                    headline: record.headline.clone().unwrap_or_default(),
                    report: record.reports[0].clone(),
                })
                .collect(),
            collect_testcases: results.collect_junit().map_or(0, |j| j.testcases.len()),
            tests: results.records().iter().map(ShardTest::new).collect(),
            session_errors: results.session_errors().to_vec(),
        }
    }
}

impl ShardTest {
    fn new(record: &TestRecord) -> Self {
        let plain_pass = record.plain_pass();
        Self {
            nodeid: record.nodeid.clone(),
            display: record.display.clone(),
            headline: record.headline.clone().filter(|_| !plain_pass),
            worker: record.worker.clone(),
            // A test pytest never reported gets one element of shoal's.
            testcases: record.junit.as_ref().map_or(1, |j| j.testcases.len()),
            duration: record.duration(),
            reports: if plain_pass {
                Vec::new()
            } else {
                record.reports.clone()
            },
            earlier: record
                .earlier_attempts
                .iter()
                .map(|a| a.reports.clone())
                .collect(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_fingerprint_follows_node_ids_and_their_order_only() {
        let items = |ids: &[&str]| -> Vec<CollectedItem> {
            ids.iter()
                .map(|id| {
                    serde_json::from_value(serde_json::json!({
                        "nodeid": id, "file": "x", "scope": "y", "group": null,
                    }))
                    .unwrap()
                })
                .collect()
        };
        let ab = fingerprint(&items(&["a", "b"]));
        assert_eq!(ab.len(), 64);
        assert_eq!(ab, fingerprint(&items(&["a", "b"])));
        assert_ne!(ab, fingerprint(&items(&["b", "a"])));
    }
}
