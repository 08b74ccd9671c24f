//! Which worker runs which test, per `--dist` mode. The `distribution` fixture's conftest
//! records `{nodeid, worker, pid}` for every test it runs.

use std::{
    collections::{BTreeMap, BTreeSet},
    fs,
};

use crate::common::{
    assert_no_rendezvous_timeout, collected_ids, field, file_of, placements, scope_of,
    workers_used, Output, Project,
};
use serde_json::Value;

const FIXTURE: &str = "distribution";

/// Runs the fixture with `-n <n> --dist <dist>` and a rendezvous; returns the records.
fn run_dist(project: &Project, args: &[&str]) -> (Output, Vec<Value>) {
    let mut all = vec!["-p", "no:cacheprovider"];
    all.extend_from_slice(args);
    let out = project.shoal(&all).rendezvous().run();
    out.assert_code(0);
    let records = project.take_records();
    assert_no_rendezvous_timeout(&records, &out);
    (out, records)
}

/// Every collected test ran exactly once.
#[track_caller]
fn assert_each_test_once(project: &Project, records: &[Value], out: &Output) {
    let expected: BTreeSet<String> = collected_ids(project, &[]).into_iter().collect();
    let mut counts: BTreeMap<String, usize> = BTreeMap::new();
    for (nodeid, _) in placements(records) {
        *counts.entry(nodeid).or_default() += 1;
    }
    let ran: BTreeSet<String> = counts.keys().cloned().collect();
    assert_eq!(
        ran,
        expected,
        "the tests that ran differ from those collected\n{}",
        out.context()
    );
    let twice: Vec<_> = counts.iter().filter(|(_, &n)| n != 1).collect();
    assert!(
        twice.is_empty(),
        "tests ran more than once: {twice:?}\n{}",
        out.context()
    );
}

/// One process per worker name, and worker names are gw0..gw{n-1}.
#[track_caller]
fn assert_one_process_per_worker(records: &[Value], max_workers: usize, out: &Output) {
    let mut pids: BTreeMap<String, BTreeSet<u64>> = BTreeMap::new();
    for r in records.iter().filter(|r| r.get("nodeid").is_some()) {
        pids.entry(field(r, "worker").to_owned())
            .or_default()
            .insert(r["pid"].as_u64().unwrap());
    }
    let allowed: BTreeSet<String> = (0..max_workers).map(|n| format!("gw{n}")).collect();
    for (worker, set) in &pids {
        assert!(
            allowed.contains(worker),
            "unexpected worker {worker:?}\n{}",
            out.context()
        );
        assert_eq!(
            set.len(),
            1,
            "worker {worker} ran in several processes {set:?}"
        );
    }
    let all: BTreeSet<u64> = pids.values().flatten().copied().collect();
    assert_eq!(
        all.len(),
        pids.len(),
        "two workers share a process: {pids:?}"
    );
}

/// Every unit (as `key` computes it) ran on a single worker; returns units per worker.
#[track_caller]
fn assert_units_stay_together(
    records: &[Value],
    key: impl Fn(&str) -> Option<String>,
    out: &Output,
) -> BTreeMap<String, BTreeSet<String>> {
    let mut unit_workers: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for (nodeid, worker) in placements(records) {
        if let Some(unit) = key(&nodeid) {
            unit_workers.entry(unit).or_default().insert(worker);
        }
    }
    let split: Vec<_> = unit_workers.iter().filter(|(_, w)| w.len() > 1).collect();
    assert!(
        split.is_empty(),
        "units were split across workers: {split:#?}\n{}",
        out.context()
    );
    unit_workers
}

#[track_caller]
fn assert_several_workers(records: &[Value], out: &Output) {
    let used = workers_used(records);
    assert!(
        used.len() >= 2,
        "only {used:?} ran tests, though there was work for two\n{}",
        out.context()
    );
}

/// The xdist workers whose pytest session finished (the collector, "master", left out).
fn session_workers(records: &[Value]) -> BTreeSet<String> {
    records
        .iter()
        .filter(|r| r.get("sessionfinish").is_some())
        .map(|r| field(r, "worker").to_owned())
        .filter(|w| w != "master")
        .collect()
}

#[test]
fn load_runs_every_test_exactly_once_on_several_workers() {
    let project = Project::new(FIXTURE);
    let (out, records) = run_dist(&project, &["-n", "2"]);
    assert_each_test_once(&project, &records, &out);
    assert_one_process_per_worker(&records, 2, &out);
    assert_several_workers(&records, &out);
    assert!(
        out.stdout.contains("2 workers [29 items]"),
        "{}",
        out.context()
    );
}

#[test]
fn worksteal_runs_every_test_exactly_once_on_several_workers() {
    let project = Project::new(FIXTURE);
    let (out, records) = run_dist(&project, &["-n", "2", "--dist", "worksteal"]);
    assert_each_test_once(&project, &records, &out);
    assert_one_process_per_worker(&records, 2, &out);
    assert_several_workers(&records, &out);
}

#[test]
fn worksteal_with_more_workers_than_cores_runs_every_test_once() {
    let project = Project::new(FIXTURE);
    let (out, records) = run_dist(&project, &["-n", "3", "--dist=worksteal"]);
    assert_each_test_once(&project, &records, &out);
    assert_one_process_per_worker(&records, 3, &out);
    assert_several_workers(&records, &out);
}

#[test]
fn loadfile_keeps_each_file_on_one_worker() {
    let project = Project::new(FIXTURE);
    let (out, records) = run_dist(&project, &["-n", "2", "--dist", "loadfile"]);
    assert_each_test_once(&project, &records, &out);
    assert_one_process_per_worker(&records, 2, &out);
    let units = assert_units_stay_together(&records, |id| Some(file_of(id).to_owned()), &out);
    assert_eq!(units.len(), 4, "four files: {units:?}");
    assert_several_workers(&records, &out);
}

#[test]
fn loadscope_keeps_each_module_and_class_on_one_worker() {
    let project = Project::new(FIXTURE);
    let (out, records) = run_dist(&project, &["-n", "2", "--dist", "loadscope"]);
    assert_each_test_once(&project, &records, &out);
    assert_one_process_per_worker(&records, 2, &out);
    let units = assert_units_stay_together(&records, |id| Some(scope_of(id)), &out);
    assert!(
        units.contains_key("test_beta.py::TestBeta") && units.contains_key("test_beta.py"),
        "classes are their own scopes: {units:?}"
    );
    assert_several_workers(&records, &out);
}

#[test]
fn loadgroup_keeps_each_xdist_group_on_one_worker() {
    let project = Project::new(FIXTURE);
    let (out, records) = run_dist(&project, &["-n", "2", "--dist", "loadgroup"]);
    assert_each_test_once(&project, &records, &out);
    assert_one_process_per_worker(&records, 2, &out);
    // Group membership, as the fixture's marks declare it.
    let group = |id: &str| -> Option<String> {
        let name = id.rsplit("::").next().unwrap();
        let name = name.split('@').next().unwrap();
        match name {
            "test_a3" | "test_a4" | "test_c3" | "test_c6" => Some("red".into()),
            "test_g2" | "test_c1" | "test_c4" => Some("blue".into()),
            _ => None,
        }
    };
    let units = assert_units_stay_together(&records, group, &out);
    assert_eq!(units.len(), 2, "both groups ran: {units:?}");
    assert_several_workers(&records, &out);
}

#[test]
fn loadgroup_with_one_group_uses_one_worker() {
    let project = Project::new(FIXTURE);
    let out = project
        .shoal([
            "-n",
            "2",
            "--dist",
            "loadgroup",
            "-p",
            "no:cacheprovider",
            "-k",
            "test_a3 or test_a4 or test_c3 or test_c6",
        ])
        .run();
    out.assert_code(0);
    assert!(
        out.stdout.contains("1 worker [4 items]"),
        "one unit needs one worker\n{}",
        out.context()
    );
    let records = project.take_records();
    assert_eq!(placements(&records).len(), 4, "{}", out.context());
    assert_eq!(workers_used(&records).len(), 1, "{}", out.context());
}

#[test]
fn each_runs_every_test_on_every_worker() {
    let project = Project::new(FIXTURE);
    let (out, records) = run_dist(&project, &["-n", "2", "--dist", "each"]);
    assert_one_process_per_worker(&records, 2, &out);
    let expected: BTreeSet<String> = collected_ids(&project, &[]).into_iter().collect();
    let mut per_worker: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for (nodeid, worker) in placements(&records) {
        per_worker.entry(worker).or_default().push(nodeid);
    }
    assert_eq!(
        per_worker.keys().cloned().collect::<Vec<_>>(),
        ["gw0", "gw1"],
        "{}",
        out.context()
    );
    for (worker, ids) in &per_worker {
        let set: BTreeSet<String> = ids.iter().cloned().collect();
        assert_eq!(
            set,
            expected,
            "{worker} did not run every test\n{}",
            out.context()
        );
        assert_eq!(ids.len(), expected.len(), "{worker} ran a test twice");
    }
    assert_eq!(
        out.stats().get("passed"),
        Some(&(2 * expected.len())),
        "{}",
        out.context()
    );
}

#[test]
fn dist_no_runs_everything_on_one_worker_in_collection_order() {
    let project = Project::new(FIXTURE);
    let out = project
        .shoal(["-n", "2", "--dist", "no", "-p", "no:cacheprovider"])
        .run();
    out.assert_code(0);
    let records = project.take_records();
    let ran: Vec<String> = placements(&records).into_iter().map(|p| p.0).collect();
    assert_eq!(ran, collected_ids(&project, &[]), "{}", out.context());
    assert_eq!(workers_used(&records).len(), 1, "{}", out.context());
}

#[test]
fn n0_runs_everything_in_one_plain_process_in_collection_order() {
    let project = Project::new(FIXTURE);
    let out = project.shoal(["-n", "0", "-p", "no:cacheprovider"]).run();
    out.assert_code(0);
    let records = project.take_records();
    let ran: Vec<String> = placements(&records).into_iter().map(|p| p.0).collect();
    assert_eq!(ran, collected_ids(&project, &[]), "{}", out.context());
    assert_eq!(
        workers_used(&records),
        BTreeSet::from(["master".to_owned()]),
        "-n 0 runs no xdist worker\n{}",
        out.context()
    );
    let pids: BTreeSet<u64> = records
        .iter()
        .filter(|r| r.get("nodeid").is_some())
        .map(|r| r["pid"].as_u64().unwrap())
        .collect();
    assert_eq!(pids.len(), 1, "{}", out.context());
}

#[test]
fn never_more_workers_than_files_under_loadfile() {
    let project = Project::new(FIXTURE);
    let out = project
        .shoal([
            "-n",
            "4",
            "--dist",
            "loadfile",
            "-p",
            "no:cacheprovider",
            "test_alpha.py",
            "test_gamma.py",
        ])
        .rendezvous()
        .run();
    out.assert_code(0);
    assert!(
        out.stdout.contains("2 workers [12 items]"),
        "two files make two workers\n{}",
        out.context()
    );
    let records = project.take_records();
    assert_no_rendezvous_timeout(&records, &out);
    assert_eq!(placements(&records).len(), 12, "{}", out.context());
    let used = workers_used(&records);
    assert_eq!(
        used,
        BTreeSet::from(["gw0".into(), "gw1".into()]),
        "{}",
        out.context()
    );
    assert_units_stay_together(&records, |id| Some(file_of(id).to_owned()), &out);
    // No idle worker was started either: only gw0 and gw1 ever finished a pytest session.
    assert_eq!(
        session_workers(&records),
        BTreeSet::from(["gw0".into(), "gw1".into()]),
        "{}",
        out.context()
    );
}

#[test]
fn never_more_workers_than_tests_under_load() {
    let project = Project::new(FIXTURE);
    let out = project
        .shoal([
            "-n",
            "4",
            "-p",
            "no:cacheprovider",
            "test_alpha.py::test_a1",
            "test_alpha.py::test_a2",
        ])
        .run();
    out.assert_code(0);
    assert!(
        out.stdout.contains("2 workers [2 items]"),
        "two tests make at most two workers\n{}",
        out.context()
    );
    let records = project.take_records();
    assert_eq!(placements(&records).len(), 2, "{}", out.context());
    assert_eq!(
        session_workers(&records),
        BTreeSet::from(["gw0".into(), "gw1".into()]),
        "{}",
        out.context()
    );
}

/// A class that holds a lock for its whole life, as xdist's `TestLocking` tests do: whichever
/// worker takes it first, the other blocks in its first test's setup until it is released.
const LOCKED_CLASS: &str = r#"
import fcntl

class TestLocked:
    @classmethod
    def setup_class(cls):
        cls.lock = open("class.lock", "w")  # opened here: each process has its own
        fcntl.flock(cls.lock, fcntl.LOCK_EX)

    @classmethod
    def teardown_class(cls):
        fcntl.flock(cls.lock, fcntl.LOCK_UN)
        cls.lock.close()

    def test_1(self):
        pass

    def test_2(self):
        pass

    def test_3(self):
        pass
"#;

/// Under worksteal, the worker that holds the lock reaches its last test, whose successor
/// decides whether the class is torn down, and asks for more; the only tests left sit with the
/// worker blocked on the lock. That worker must give them up mid-test (as xdist's answer
/// steals on a thread) or both wait for each other forever. Each file is one worker's share.
/// (Without the fix the run only passes when one worker starts after the other is done.)
#[test]
fn worksteal_takes_tests_from_a_worker_blocked_in_a_test() {
    let project = Project::empty();
    project.write("test_first.py", LOCKED_CLASS);
    project.write("test_second.py", LOCKED_CLASS);
    // With the deadlock, the blocked setup times out instead of hanging the test.
    let out = project
        .shoal([
            "-n",
            "2",
            "--dist",
            "worksteal",
            "--timeout",
            "60",
            "-p",
            "no:cacheprovider",
        ])
        .run();
    out.assert_code(0);
    assert_eq!(out.stats().get("passed"), Some(&6), "{}", out.context());
}

/// Under `load`, one worker takes the 25 tests of `test_blocked.py` as its first chunk (a
/// quarter of a worker's part of 200 tests); its first test blocks until the other worker,
/// which meanwhile takes every chunk of the pool, runs its second-to-last test. Only then can
/// the blocked worker answer a steal, and the other worker must take tests queued behind the
/// blocked one rather than finish. Each test of that file records which worker ran it and how
/// many tests that process had run before.
const BLOCKED_BY_THE_POOL: &str = r#"
import os

import pytest


def test_0():
    with open("blocked-on", "w") as out:
        out.write(os.environ["PYTEST_XDIST_WORKER"])
    with open("signal.fifo") as fifo:  # waits for a writer
        assert fifo.read() == "go"


@pytest.mark.parametrize("n", range(1, 25))
def test_queued(n, ran_before):
    with open("placed", "a") as out:
        out.write(f"{os.environ['PYTEST_XDIST_WORKER']} {ran_before}\n")
"#;

const POOL: &str = r#"
import pytest


@pytest.mark.parametrize("n", range(175))
def test_fast(n):
    if n == 173:  # the second-to-last: its successor is known, no steal needs answering
        with open("signal.fifo", "w") as fifo:  # waits for test_0 to read
            fifo.write("go")
"#;

const RAN_BEFORE: &str = r#"
import os

import pytest

try:
    os.mkfifo("signal.fifo")
except FileExistsError:
    pass  # a spawned worker, importing this after the collector

_ran = 0


@pytest.fixture
def ran_before():
    """How many tests this process ran before this one."""
    return _ran


@pytest.fixture(autouse=True)
def _count():
    global _ran
    yield
    _ran += 1
"#;

#[test]
fn load_takes_tests_queued_on_a_busy_worker_once_the_pool_is_empty() {
    let project = Project::empty();
    project.write("conftest.py", RAN_BEFORE);
    project.write("test_blocked.py", BLOCKED_BY_THE_POOL);
    project.write("test_fast.py", POOL);
    let out = project
        .shoal(["-n", "2", "--timeout", "60", "-p", "no:cacheprovider"])
        .run();
    out.assert_code(0);
    assert_eq!(out.stats().get("passed"), Some(&200), "{}", out.context());
    let blocked_on = fs::read_to_string(project.path.join("blocked-on")).unwrap();
    let placed = fs::read_to_string(project.path.join("placed")).unwrap();
    let taken: Vec<&str> = placed
        .lines()
        .filter(|line| !line.starts_with(&format!("{blocked_on} ")))
        .collect();
    assert!(!taken.is_empty(), "{placed}\n{}", out.context());
    // Each was taken once the pool was empty, after the other worker's 175 tests; handed out
    // from the pool it would have run before them.
    for line in taken {
        let ran_before: usize = line.split(' ').nth(1).unwrap().parse().unwrap();
        assert!(ran_before >= 175, "{placed}\n{}", out.context());
    }
}

/// The other worker's last tests are a class that holds a lock until its teardown, which
/// comes only once its last test knows its successor; the blocked worker's first test waits
/// for that lock, so it cannot answer the steal that successor would come from. The thief
/// must stop waiting (after `STEAL_PATIENCE`) and finish, or both wait until the timeout.
const LOCKED_AT_THE_END: &str = r#"
import fcntl

import pytest


@pytest.mark.parametrize("n", range(172))
def test_fast(n):
    pass


class TestLocked:
    @classmethod
    def setup_class(cls):
        cls.lock = open("class.lock", "w")
        fcntl.flock(cls.lock, fcntl.LOCK_EX)
        with open("signal.fifo", "w") as fifo:  # the blocked test waits for the lock now
            fifo.write("go")

    @classmethod
    def teardown_class(cls):
        fcntl.flock(cls.lock, fcntl.LOCK_UN)
        cls.lock.close()

    def test_1(self):
        pass

    def test_2(self):
        pass

    def test_3(self):
        pass
"#;

const WAITS_FOR_THE_LOCK: &str = r#"
import fcntl

import pytest


def test_0():
    with open("signal.fifo") as fifo:
        assert fifo.read() == "go"
    with open("class.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)


@pytest.mark.parametrize("n", range(1, 25))
def test_queued(n):
    pass
"#;

#[test]
fn load_stops_waiting_for_a_worker_that_cannot_answer_a_steal() {
    let project = Project::empty();
    project.write("conftest.py", RAN_BEFORE);
    project.write("test_blocked.py", WAITS_FOR_THE_LOCK);
    project.write("test_fast.py", LOCKED_AT_THE_END);
    let started = std::time::Instant::now();
    let out = project
        .shoal(["-n", "2", "--timeout", "60", "-p", "no:cacheprovider"])
        .run();
    out.assert_code(0);
    assert_eq!(out.stats().get("passed"), Some(&200), "{}", out.context());
    // It did wait, which proves the steal was asked for while the lock was held.
    assert!(
        started.elapsed() >= std::time::Duration::from_secs(5),
        "{}",
        out.context()
    );
}

/// The first test each worker ran.
fn first_tests(records: &[Value]) -> BTreeMap<String, String> {
    let mut first = BTreeMap::new();
    for (nodeid, worker) in placements(records) {
        first.entry(worker).or_insert(nodeid);
    }
    first
}

#[test]
fn recorded_durations_start_a_long_test_that_comes_last() {
    let project = Project::new(FIXTURE);
    let last = "test_gamma.py::test_c6";
    let (plain, records) = run_dist(&project, &["-n", "2", "-v"]);
    plain.assert_stdout_contains("no recorded durations: tests go out in collection order");
    let firsts = first_tests(&records);
    assert!(
        !firsts.values().any(|t| t == last),
        "without history the last test does not start first: {firsts:?}"
    );
    project.write(
        ".test_durations",
        &serde_json::json!({ last: 100.0, "test_alpha.py::test_a1": 0.01 }).to_string(),
    );
    let (out, records) = run_dist(&project, &["-n", "2", "-v"]);
    out.assert_stdout_contains("recorded durations of 2 tests: the longest go out first");
    let firsts = first_tests(&records);
    assert!(
        firsts.values().any(|t| t == last),
        "the long test starts first on its worker: {firsts:?}\n{}",
        out.context()
    );
    assert_each_test_once(&project, &records, &out);
}
