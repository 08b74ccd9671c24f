//! `--max-worker-tests` and `--max-worker-rss`: a worker process past its limit ends its
//! session after its test and a fresh process takes its slot, with the same id. The
//! `recycling` fixture's conftest records `{nodeid, worker, pid}` for every test and each
//! setup and teardown of a session fixture.

use std::collections::{BTreeMap, BTreeSet};

use serde_json::Value;

use crate::common::{assert_same_outcomes, collected_ids, field, Output, Project};

const FIXTURE: &str = "recycling";

/// The tests each process ran, by pid, with the worker id it had.
fn by_process(records: &[Value]) -> BTreeMap<u64, (String, Vec<String>)> {
    let mut processes: BTreeMap<u64, (String, Vec<String>)> = BTreeMap::new();
    for r in records.iter().filter(|r| r.get("nodeid").is_some()) {
        let entry = processes
            .entry(r["pid"].as_u64().unwrap())
            .or_insert_with(|| (field(r, "worker").to_owned(), Vec::new()));
        entry.1.push(field(r, "nodeid").to_owned());
    }
    processes
}

/// The pids that recorded the session fixture's `stage` (setup or teardown), each time.
fn session_fixture(records: &[Value], stage: &str) -> Vec<u64> {
    records
        .iter()
        .filter(|r| r.get("session").and_then(Value::as_str) == Some(stage))
        .map(|r| r["pid"].as_u64().unwrap())
        .collect()
}

/// No crash was reported or counted against --max-worker-restart.
#[track_caller]
fn assert_no_crash(out: &Output) {
    let all = out.all_output();
    assert!(
        !all.contains("crashed"),
        "a recycle read as a crash\n{}",
        out.context()
    );
    assert!(!all.contains("node down"), "{}", out.context());
}

#[test]
fn workers_are_replaced_every_n_tests_losing_nothing_and_running_nothing_twice() {
    let project = Project::new(FIXTURE);
    let args = ["-rA", "test_many.py"];
    let serial = project.serial(&args).run();
    project.take_records();
    let out = project
        .shoal_n2(&[
            "--max-worker-tests",
            "3",
            // Recycling is no crash: a budget of none must not stop it.
            "--max-worker-restart",
            "0",
            "-v",
            "--report-json",
            "events.jsonl",
            "-rA",
            "test_many.py",
        ])
        .run();
    out.assert_code(0);
    assert_same_outcomes(&serial, &out);
    assert_no_crash(&out);
    let records = project.take_records();

    let mut ran: Vec<String> = by_process(&records)
        .into_values()
        .flat_map(|(_, tests)| tests)
        .collect();
    ran.sort();
    let mut collected = collected_ids(&project, &["test_many.py"]);
    collected.sort();
    assert_eq!(
        ran,
        collected,
        "every test runs exactly once\n{}",
        out.context()
    );

    let processes = by_process(&records);
    for (pid, (worker, tests)) in &processes {
        assert!(
            tests.len() <= 3,
            "process {pid} ran {tests:?}\n{}",
            out.context()
        );
        assert!(["gw0", "gw1"].contains(&worker.as_str()), "{worker}");
    }
    assert!(
        processes.len() >= 7,
        "20 tests at 3 a process: {processes:?}"
    );

    // Each process set its session fixtures up once and tore them down at its end.
    let pids: BTreeSet<u64> = processes.keys().copied().collect();
    for stage in ["setup", "teardown"] {
        let mut seen = session_fixture(&records, stage);
        seen.sort();
        assert_eq!(
            seen,
            pids.iter().copied().collect::<Vec<_>>(),
            "one session {stage} per process\n{}",
            out.context()
        );
    }

    assert!(
        out.stdout.contains("] recycled after 3 tests"),
        "-v says when a worker is recycled\n{}",
        out.context()
    );
    let events = std::fs::read_to_string(project.path.join("events.jsonl")).unwrap();
    let recycled: Vec<Value> = events
        .lines()
        .map(|l| serde_json::from_str::<Value>(l).unwrap())
        .filter(|e| e["event"] == "worker_recycled")
        .collect();
    assert!(!recycled.is_empty(), "{events}");
    assert!(
        recycled
            .iter()
            .all(|e| e["reason"] == "tests" && e["tests"] == 3),
        "{recycled:?}"
    );
}

/// Tests the controller sent a worker just before it reported reaching its limit are not run
/// by that process (which would take it past the limit) but by its replacement, once each.
#[test]
fn tests_sent_as_a_worker_reaches_its_limit_go_to_its_replacement() {
    let project = Project::new(FIXTURE);
    let out = project
        .shoal(["-n", "1", "--max-worker-tests", "10", "test_refill.py"])
        .run();
    out.assert_code(0);
    assert_no_crash(&out);
    let processes = by_process(&project.take_records());
    let mut ran: Vec<String> = processes
        .values()
        .flat_map(|(_, tests)| tests.clone())
        .collect();
    ran.sort();
    let mut collected = collected_ids(&project, &["test_refill.py"]);
    collected.sort();
    assert_eq!(ran, collected, "every test runs once\n{}", out.context());
    assert!(
        project.path.join("refill-seen").exists(),
        "no worker was sent tests during its last one: the race was not tried\n{}",
        out.context()
    );
    for (pid, (_, tests)) in &processes {
        assert!(
            tests.len() <= 10,
            "process {pid} ran {} tests\n{}",
            tests.len(),
            out.context()
        );
    }
}

#[test]
fn a_test_that_leaves_the_worker_above_its_memory_limit_is_the_last_in_its_process() {
    let project = Project::new(FIXTURE);
    let out = project
        .shoal([
            "-n",
            "1",
            "--max-worker-rss",
            "100M",
            "-v",
            "test_memory.py",
        ])
        .run();
    out.assert_code(0);
    assert_no_crash(&out);
    let records = project.take_records();
    let pid_of = |test: &str| {
        let nodeid = format!("test_memory.py::{test}");
        let record = records.iter().find(|r| r["nodeid"] == nodeid.as_str());
        record.unwrap_or_else(|| panic!("{test} did not run\n{}", out.context()))["pid"].clone()
    };
    assert_ne!(
        pid_of("test_leaks"),
        pid_of("test_after_the_leak"),
        "the next test runs in a fresh process\n{}",
        out.context()
    );
    assert_eq!(
        pid_of("test_after_the_leak"),
        pid_of("test_later"),
        "a fresh process is under the limit\n{}",
        out.context()
    );
    assert!(
        out.stdout
            .contains("[gw0] recycled after 1 test: the last left it at"),
        "{}",
        out.context()
    );
}

#[test]
fn the_limits_can_be_set_in_pyproject() {
    let project = Project::new(FIXTURE);
    project.write("pyproject.toml", "[tool.shoal]\nmax-worker-tests = 2\n");
    let out = project.shoal(["-n", "2", "test_many.py"]).run();
    out.assert_code(0);
    let processes = by_process(&project.take_records());
    assert!(
        processes.values().all(|(_, tests)| tests.len() <= 2),
        "{processes:?}\n{}",
        out.context()
    );
    // 0 on the command line turns the project's limit off.
    let out = project
        .shoal(["-n", "1", "--max-worker-tests", "0", "test_many.py"])
        .run();
    out.assert_code(0);
    assert_eq!(
        by_process(&project.take_records()).len(),
        1,
        "{}",
        out.context()
    );
}

#[test]
fn bad_limits_exit_4_saying_what_is_wrong() {
    let project = Project::new(FIXTURE);
    for (args, expected) in [
        (&["--max-worker-rss", "12Q"][..], "such as 500M"),
        (&["--max-worker-tests", "many"][..], "--max-worker-tests"),
    ] {
        let out = project.shoal(args).run();
        out.assert_code(4);
        assert!(out.stderr.contains(expected), "{args:?}\n{}", out.context());
    }
    project.write("pyproject.toml", "[tool.shoal]\nmax-worker-rss = \"12Q\"\n");
    let out = project.shoal(["test_many.py"]).run();
    out.assert_code(4);
    assert!(
        out.stderr.contains("failed to parse [tool.shoal]")
            && out.stderr.contains("max-worker-rss: parse size \"12Q\""),
        "{}",
        out.context()
    );
}

#[test]
fn under_dist_each_every_slot_still_runs_every_test_once() {
    let project = Project::new(FIXTURE);
    let out = project
        .shoal_n2(&["--dist", "each", "--max-worker-tests", "8", "test_many.py"])
        .run();
    out.assert_code(0);
    assert_no_crash(&out);
    let records = project.take_records();
    let mut collected = collected_ids(&project, &["test_many.py"]);
    collected.sort();
    let mut by_slot: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for (worker, tests) in by_process(&records).into_values() {
        assert!(
            tests.len() <= 8,
            "{worker} ran {tests:?}\n{}",
            out.context()
        );
        by_slot.entry(worker).or_default().extend(tests);
    }
    assert_eq!(by_slot.len(), 2, "{}", out.context());
    for (worker, mut tests) in by_slot {
        tests.sort();
        assert_eq!(tests, collected, "{worker}\n{}", out.context());
    }
}
