//! Faults: what shoal promises when tests misbehave. Every collected test ends with exactly
//! one final outcome, every run ends, the user is told why, and no process of the run
//! survives it.
//!
//! Crashes (segfault, `os._exit` in setup, call and teardown, SIGKILL, abort, a killed
//! collector, workers dying after their last test), timeouts (`--timeout`, the `timeout` mark
//! and ini option, `--run-timeout`), retries, signals to shoal itself (SIGINT once and twice,
//! SIGTERM, SIGKILL), garbage on a worker's connection, and processes tests leave behind.
//! Outcomes are read from `--report-json` (docs/events.md). Every run also goes through the
//! shared orphan check (`common::Running::wait`).
//!
//! Tests marked `#[ignore = "bug: ..."]` show a broken promise; they pass once it is kept.
//! The randomized worker-killing test is in `failures_random.rs`.

use std::time::{Duration, Instant};

use crate::common::{collected_ids, survivors, Output, Project};
use crate::faults::{
    alive, assert_children_gone, assert_crashed, assert_one_final_outcome, crash_message, events,
    longrepr, of_kind, run_end, run_within, summary_line, test_events, wait_for_records, Watchdog,
};
use serde_json::Value;

/// How long a run that should end by itself may take before the test calls it hung.
const RUN_LIMIT: Duration = Duration::from_secs(120);
const REPORT_JSON: &str = "--report-json=events.jsonl";

fn args<'a>(base: &[&'a str], extra: &[&'a str]) -> Vec<&'a str> {
    let mut all = vec!["-p", "no:cacheprovider", REPORT_JSON];
    all.extend_from_slice(base);
    all.extend_from_slice(extra);
    all
}

#[track_caller]
fn assert_no_panic(out: &Output) {
    assert!(
        !out.all_output().contains("panicked"),
        "shoal panicked\n{}",
        out.context()
    );
}

#[track_caller]
fn stat(out: &Output, key: &str) -> usize {
    if key == "not run" {
        return not_run(out);
    }
    out.stats().get(key).copied().unwrap_or(0)
}

/// Tests that never ran, from the `!!! <why>: N tests not run !!!` line (pytest's stats line
/// has no place for them).
fn not_run(out: &Output) -> usize {
    out.stdout
        .lines()
        .filter(|l| l.starts_with('!'))
        .find_map(|l| {
            let words: Vec<&str> = l.split_whitespace().collect();
            let at = words
                .windows(3)
                .position(|w| w[1].starts_with("test") && w[2] == "not")?;
            words[at].parse().ok()
        })
        .unwrap_or(0)
}

// ------------------------------------------------------------------------------------------
// Crashes
// ------------------------------------------------------------------------------------------

/// The crashing tests of `faults_crash/test_crash.py` and how each ends its worker.
const CRASHES: [(&str, &str); 6] = [
    ("test_crash.py::test_segfault", "signal 11"),
    ("test_crash.py::test_exit_in_setup", "exit code 3"),
    ("test_crash.py::test_exit_in_call", "exit code 3"),
    ("test_crash.py::test_exit_in_teardown", "exit code 3"),
    ("test_crash.py::test_sigkill_self", "signal 9"),
    ("test_crash.py::test_abort", "signal 6"),
];

/// Runs `faults_crash/test_crash.py` and checks: each crashing test failed once, naming its
/// worker and how the process ended; the ten others passed exactly once; exit code 1.
fn crash_suite(extra: &[&str]) {
    let project = Project::new("faults_crash");
    let collected = collected_ids(&project, &["test_crash.py"]);
    assert_eq!(collected.len(), 16);
    let (out, _) = run_within(
        project.shoal(args(&["-n", "2", "-rA", "test_crash.py"], extra)),
        RUN_LIMIT,
    );
    out.assert_code(1);
    assert_no_panic(&out);
    let events = events(&project, &out);
    let finals = assert_one_final_outcome(&events, &collected, 0, &out);
    assert_eq!(finals.len(), 16, "every test ran\n{}", out.context());
    for (nodeid, how) in CRASHES {
        let event = finals[nodeid];
        assert_crashed(event, how, &out);
        let line = summary_line(&out, "FAILED", nodeid)
            .or_else(|| summary_line(&out, "ERROR", nodeid))
            .unwrap_or_else(|| panic!("no FAILED line for {nodeid}\n{}", out.context()));
        assert!(line.contains("crashed"), "{line}\n{}", out.context());
        // The FAILURES (or ERRORS) section carries the whole message.
        out.assert_stdout_contains(&crash_message(event).unwrap());
    }
    for (nodeid, event) in &finals {
        if !CRASHES.iter().any(|(id, _)| id == nodeid) {
            assert_eq!(event["outcome"], "passed", "{nodeid}\n{}", out.context());
        }
    }
    // A crash in setup or teardown may count as an error, as pytest counts such failures.
    assert_eq!(
        stat(&out, "failed") + stat(&out, "error"),
        6,
        "{}",
        out.context()
    );
    assert_eq!(stat(&out, "passed"), 10, "{}", out.context());
    assert_eq!(stat(&out, "not run"), 0, "{}", out.context());
}

#[test]
fn crashes_fail_only_their_test_forked() {
    crash_suite(&["--start", "fork"]);
}

#[test]
fn crashes_fail_only_their_test_spawned() {
    crash_suite(&["--start", "spawn"]);
}

#[test]
fn crashes_fail_only_their_test_under_every_dist_mode() {
    // One module is one unit for loadscope/loadfile/no: a single worker crashes six times,
    // more than the default 4 restarts per worker allow.
    for dist in ["worksteal", "loadscope", "loadfile", "no"] {
        crash_suite(&["--dist", dist, "--max-worker-restart", "20"]);
    }
}

#[test]
fn without_restarts_crashing_tests_end_the_run_with_the_rest_not_run() {
    for start in ["fork", "spawn"] {
        let project = Project::new("faults_crash");
        let select = ["-k", "not before and not after", "test_crash.py"];
        let collected = collected_ids(&project, &select);
        assert_eq!(collected.len(), 6);
        let (out, _) = run_within(
            project.shoal(args(
                &["-n", "2", "--max-worker-restart", "0", "--start", start],
                &select,
            )),
            RUN_LIMIT,
        );
        out.assert_code(1);
        assert_no_panic(&out);
        // Each worker dies on its first test and may not be replaced.
        assert_eq!(
            stat(&out, "failed") + stat(&out, "error"),
            2,
            "{}",
            out.context()
        );
        assert_eq!(stat(&out, "not run"), 4, "{}", out.context());
        out.assert_stdout_contains("no workers left to run the remaining tests");
        let events = events(&project, &out);
        assert_eq!(run_end(&events, &out)["not_run"], 4, "{}", out.context());
        let finals = assert_one_final_outcome(&events, &collected, 0, &out);
        for (nodeid, how) in CRASHES {
            if let Some(event) = finals.get(nodeid) {
                assert_crashed(event, how, &out);
            }
        }
    }
}

#[test]
fn killing_the_collector_ends_the_run_and_accounts_for_every_test() {
    let project = Project::new("faults_crash");
    let collected = collected_ids(&project, &["test_collector.py"]);
    let (out, _) = run_within(
        project.shoal(args(
            &["-n", "2", "--start", "fork", "test_collector.py"],
            &[],
        )),
        RUN_LIMIT,
    );
    // A collecting process killed by a signal is an internal error (the README's code 3): its
    // end of the session (plugins' reports, --cov-fail-under) is lost with it.
    out.assert_code(3);
    assert!(out.stderr.contains("SIGKILL"), "{}", out.context());
    assert_no_panic(&out);
    let events = events(&project, &out);
    let finals = assert_one_final_outcome(&events, &collected, 0, &out);
    let killer = finals
        .get("test_collector.py::test_kill_collector")
        .unwrap_or_else(|| panic!("the collector's killer has no outcome\n{}", out.context()));
    assert!(
        crash_message(killer).is_some_and(|m| m.contains(&format!(
            "worker '{}' crashed",
            killer["worker"].as_str().unwrap()
        ))),
        "{killer}\n{}",
        out.context()
    );
    if stat(&out, "not run") > 0 {
        out.assert_stdout_contains("no workers left to run the remaining tests");
    }
}

/// Every collected test started exactly once (each records itself as it starts).
#[track_caller]
fn assert_each_ran_once(project: &Project, collected: &[String], out: &Output) {
    let records = project.take_records();
    for nodeid in collected {
        let runs = records
            .iter()
            .filter(|r| r["nodeid"] == nodeid.as_str())
            .count();
        assert_eq!(runs, 1, "{nodeid} ran {runs} times\n{}", out.context());
    }
}

/// `os.closerange(3, 1024)` in a test closes its worker's socket: the worker dies after the
/// test's body, before it can say the test is done. The test started, so it is never run again:
/// it fails once, blamed for the crash (as xdist reports it), and every other test passes once.
#[test]
fn a_crash_after_a_test_before_its_report_fails_that_test_once() {
    const CLOSER: &str = "test_closerange.py::test_closes_every_descriptor";
    for start in ["fork", "spawn"] {
        let project = Project::new("faults_closerange");
        let collected = collected_ids(&project, &[]);
        assert_eq!(collected.len(), 9);
        let _ = project.take_records();
        let (out, _) = run_within(
            project.shoal(args(&["-n", "2", "-rA", "--start", start], &[])),
            RUN_LIMIT,
        );
        assert_no_panic(&out);
        out.assert_code(1);
        assert_each_ran_once(&project, &collected, &out);
        let events = events(&project, &out);
        let finals = assert_one_final_outcome(&events, &collected, 0, &out);
        assert_eq!(run_end(&events, &out)["not_run"], 0, "{}", out.context());
        let message = crash_message(finals[CLOSER])
            .unwrap_or_else(|| panic!("{CLOSER} is not blamed for the crash\n{}", out.context()));
        assert!(message.contains(&format!("'{CLOSER}'")), "{message}");
        assert_eq!(finals[CLOSER]["outcome"], "failed", "{}", out.context());
        assert!(
            summary_line(&out, "FAILED", CLOSER).is_some(),
            "{}",
            out.context()
        );
        assert_eq!(stat(&out, "failed"), 1, "{}", out.context());
        assert_eq!(stat(&out, "passed"), 8, "{}", out.context());
        assert!(
            !out.stdout.contains("WORKER ERRORS"),
            "the crash is the test's, not a worker error\n{}",
            out.context()
        );
    }
}

// ------------------------------------------------------------------------------------------
// Reports larger than a frame
// ------------------------------------------------------------------------------------------

/// Tests printing 100 MiB and 34 MiB to captured stdout: more than a 64 MiB frame holds, over
/// its phases. Both pass exactly once, as under pytest, and where their output is shown (`-rP`,
/// JUnit's system-out) it is cut with a marker, keeping its beginning and its end.
#[test]
fn captured_output_larger_than_a_frame_is_cut_and_the_tests_pass_once() {
    let project = Project::new("faults_large_output");
    let collected = collected_ids(&project, &[]);
    assert_eq!(collected.len(), 2);
    let serial = project.pytest(["-p", "no:cacheprovider"]).run();
    serial.assert_code(0);
    let _ = project.take_records();
    let junit = ["-o", "junit_logging=system-out", "--junitxml=junit.xml"];
    let (out, _) = run_within(project.shoal(args(&["-n", "2", "-rP"], &junit)), RUN_LIMIT);
    assert_no_panic(&out);
    out.assert_code(0);
    assert_eq!(out.stats(), serial.stats(), "{}", out.context());
    assert_eq!(stat(&out, "passed"), 2, "{}", out.context());
    assert_each_ran_once(&project, &collected, &out);
    let events = events(&project, &out);
    assert_one_final_outcome(&events, &collected, 0, &out);
    let xml = crate::faults::read(&project.path.join("junit.xml"));
    for (name, mib) in [("100 MiB", 100), ("34 MiB", 34)] {
        for shown in [out.stdout.as_str(), xml.as_str()] {
            for line in [
                format!("first line of {name}"),
                format!("last line of {name}"),
            ] {
                assert!(
                    shown.contains(&line),
                    "{line:?} is not shown\n{}",
                    out.context()
                );
            }
        }
        // What was cut: at least the output beyond a frame, at most all of it.
        let cut = cut_bytes(&out.stdout, name);
        assert!(
            cut > (mib - 8) << 20 && cut < mib << 20,
            "{name}: {cut} bytes cut\n{}",
            out.context()
        );
        assert_eq!(
            cut_bytes(&xml, name),
            cut,
            "JUnit's system-out is cut alike"
        );
    }
    assert!(
        out.stdout.len() < 32 << 20,
        "{} bytes of output",
        out.stdout.len()
    );
}

/// The number in the first `[... N bytes cut ...]` marker after `first line of <name>`.
fn cut_bytes(shown: &str, name: &str) -> usize {
    let from = shown
        .find(&format!("first line of {name}"))
        .unwrap_or_else(|| panic!("no output of {name}"));
    let rest = &shown[from..];
    let at = rest
        .find("[... ")
        .unwrap_or_else(|| panic!("no cut marker after {name}'s output"));
    let number = rest[at + 5..].split(' ').next().unwrap_or("");
    assert!(
        rest[at + 5 + number.len()..].starts_with(" bytes cut ...]"),
        "a malformed marker: {:?}",
        rest[at..].chars().take(40).collect::<String>()
    );
    number
        .parse()
        .unwrap_or_else(|_| panic!("a marker without a number: {number:?}"))
}

// ------------------------------------------------------------------------------------------
// Workers dying after their last test
// ------------------------------------------------------------------------------------------

fn session_exit(mode: &str, start: &str) -> (Project, Output) {
    let project = Project::new("faults_session_exit");
    let (out, _) = run_within(
        project
            .shoal(args(&["-n", "2", "--start", start, "-rA"], &[]))
            .env("FAULTS_MODE", mode),
        RUN_LIMIT,
    );
    assert_no_panic(&out);
    (project, out)
}

#[test]
fn a_worker_dying_in_sessionfinish_is_a_worker_error_not_a_test_failure() {
    // Before or after shoal's own pytest_sessionfinish: the session did not finish either way.
    for (mode, start) in [
        ("sessionfinish", "fork"),
        ("sessionfinish", "spawn"),
        ("sessionfinish_last", "fork"),
    ] {
        let (project, out) = session_exit(mode, start);
        out.assert_code(1);
        assert_eq!(stat(&out, "passed"), 6, "{}", out.context());
        assert_eq!(stat(&out, "failed"), 0, "{}", out.context());
        out.assert_stdout_contains("WORKER ERRORS");
        let events = events(&project, &out);
        let collected = collected_ids(&project, &[]);
        assert_one_final_outcome(&events, &collected, 0, &out);
        for start in of_kind(&events, "worker_start") {
            let worker = start["worker"].as_str().unwrap();
            out.assert_stdout_contains(&format!(
                "worker '{worker}' crashed outside any test (exit code 7)"
            ));
        }
    }
}

#[test]
fn a_worker_dying_in_session_fixture_teardown_fails_no_passing_test() {
    // As pytest reports a session fixture whose teardown raises: every test passed, and an
    // error (at teardown of the last test) may be added.
    let (_, out) = session_exit("fixture", "fork");
    assert_eq!(stat(&out, "failed"), 0, "{}", out.context());
    assert_eq!(stat(&out, "passed"), 6, "{}", out.context());
    out.assert_stdout_contains("exit code 7");
    out.assert_code(1);
}

/// A worker killed once its session is over (SIGKILL in `pytest_unconfigure`, after
/// `worker_done`) loses nothing: every test passed, so the run passes, with a note.
#[test]
fn a_worker_killed_after_its_session_finished_does_not_fail_the_run() {
    for start in ["fork", "spawn"] {
        let (_, out) = session_exit("killed", start);
        out.assert_code(0);
        assert_eq!(stat(&out, "passed"), 6, "{}", out.context());
        assert_eq!(out.stats().len(), 1, "{}", out.context());
        assert!(!out.stdout.contains("WORKER ERRORS"), "{}", out.context());
        assert!(
            out.stderr
                .contains("ended after its session finished (signal 9); nothing was lost"),
            "no note of the kill\n{}",
            out.context()
        );
    }
}

#[test]
fn a_worker_exiting_non_zero_after_its_session_is_mentioned() {
    let (_, out) = session_exit("unconfigure", "fork");
    assert_eq!(stat(&out, "passed"), 6, "{}", out.context());
    assert!(
        out.all_output().contains("exit code 7"),
        "nothing tells that workers exited with code 7\n{}",
        out.context()
    );
}

// ------------------------------------------------------------------------------------------
// Timeouts
// ------------------------------------------------------------------------------------------

/// A timed-out test's final event: failed, the message names the limit and the worker, the
/// text holds the worker's Python stack with the test function in it.
#[track_caller]
fn assert_timed_out(event: &Value, seconds: &str, out: &Output) {
    let nodeid = event["nodeid"].as_str().unwrap();
    let worker = event["worker"].as_str().unwrap();
    let function = nodeid.rsplit("::").next().unwrap();
    assert_eq!(event["outcome"], "failed", "{event}\n{}", out.context());
    let text = longrepr(event);
    let expected =
        format!("Timeout: '{nodeid}' ran longer than {seconds}s; worker '{worker}' was stopped (");
    assert!(text.starts_with(&expected), "{text}\n{}", out.context());
    assert!(
        text.contains("Stacks of every thread") && text.contains(&format!(" in {function}\n")),
        "the failure lacks the stack of {function}: {text}\n{}",
        out.context()
    );
    let line = summary_line(out, "FAILED", nodeid)
        .unwrap_or_else(|| panic!("no FAILED line for {nodeid}\n{}", out.context()));
    assert!(line.contains("Timeout"), "{line}\n{}", out.context());
}

#[test]
fn timeouts_stop_hung_tests_with_their_stacks_and_their_children() {
    let project = Project::new("faults_timeout");
    let collected = collected_ids(&project, &[]);
    let (out, elapsed) = run_within(
        project.shoal(args(&["-n", "2", "--timeout", "2", "-rA"], &[])),
        RUN_LIMIT,
    );
    out.assert_code(1);
    assert_no_panic(&out);
    // Five tests hang for 600 s or forever; each is stopped within a few seconds.
    assert!(
        elapsed < Duration::from_secs(90),
        "took {elapsed:?}\n{}",
        out.context()
    );
    let events = events(&project, &out);
    let finals = assert_one_final_outcome(&events, &collected, 0, &out);
    for test in [
        "test_sleeps_long",
        "test_hangs_in_select",
        "test_child_then_hang",
        "test_ignores_sigterm",
    ] {
        assert_timed_out(finals[&format!("test_timeout.py::{test}")], "2", &out);
    }
    assert_timed_out(finals["test_timeout.py::test_marked_timeout"], "1", &out);
    // A test that ignores SIGTERM is killed.
    let stubborn = longrepr(finals["test_timeout.py::test_ignores_sigterm"]);
    assert!(
        stubborn.contains("(signal 9)"),
        "{stubborn}\n{}",
        out.context()
    );
    assert_eq!(stat(&out, "passed"), 6, "{}", out.context());
    assert_eq!(stat(&out, "failed"), 5, "{}", out.context());
    // The process the hung test started went with its worker.
    let records = project.take_records();
    let child = records
        .iter()
        .find_map(|r| r["child"].as_i64())
        .expect("the test recorded its child's pid");
    assert!(!alive(child), "child {child} outlived the timed-out test");
}

#[test]
fn timeouts_stop_spawned_workers_too() {
    let project = Project::new("faults_timeout");
    let select = ["-k", "sleeps_long or child_then_hang or quick"];
    let collected = collected_ids(&project, &select);
    let (out, elapsed) = run_within(
        project.shoal(args(
            &["-n", "2", "--start", "spawn", "--timeout", "2", "-rA"],
            &select,
        )),
        RUN_LIMIT,
    );
    out.assert_code(1);
    assert!(elapsed < Duration::from_secs(90), "took {elapsed:?}");
    let events = events(&project, &out);
    let finals = assert_one_final_outcome(&events, &collected, 0, &out);
    assert_timed_out(finals["test_timeout.py::test_sleeps_long"], "2", &out);
    assert_timed_out(finals["test_timeout.py::test_child_then_hang"], "2", &out);
    assert_eq!(stat(&out, "passed"), 6, "{}", out.context());
    let child = project
        .take_records()
        .iter()
        .find_map(|r| r["child"].as_i64())
        .expect("the test recorded its child's pid");
    assert!(!alive(child), "child {child} outlived the timed-out test");
}

#[test]
fn ini_timeout_stops_a_hung_test() {
    let project = Project::new("faults_timeout");
    project.write("pytest.ini", "[pytest]\ntimeout = 1\n");
    let select = ["-k", "sleeps_long or quick"];
    let collected = collected_ids(&project, &select);
    let (out, elapsed) = run_within(project.shoal(args(&["-n", "2", "-rA"], &select)), RUN_LIMIT);
    out.assert_code(1);
    assert!(elapsed < Duration::from_secs(90), "took {elapsed:?}");
    let events = events(&project, &out);
    let finals = assert_one_final_outcome(&events, &collected, 0, &out);
    assert_timed_out(finals["test_timeout.py::test_sleeps_long"], "1", &out);
    assert_eq!(stat(&out, "passed"), 6, "{}", out.context());
}

// ------------------------------------------------------------------------------------------
// --run-timeout
// ------------------------------------------------------------------------------------------

#[test]
fn run_timeout_ends_the_run_and_reports_the_tests_not_run() {
    // Ten tests of 2 s on two workers would take 10 s; the run is stopped after 3.
    let project = Project::new("faults_run_timeout");
    let collected = collected_ids(&project, &[]);
    let (out, elapsed) = run_within(
        project.shoal(args(&["-n", "2", "--run-timeout", "3"], &[])),
        RUN_LIMIT,
    );
    assert_no_panic(&out);
    assert_ne!(out.code(), 0, "{}", out.context());
    assert!(
        elapsed < Duration::from_secs(20),
        "took {elapsed:?}\n{}",
        out.context()
    );
    out.assert_stdout_contains("the run exceeded --run-timeout");
    assert!(stat(&out, "not run") > 0, "{}", out.context());
    let events = events(&project, &out);
    let finals = assert_one_final_outcome(&events, &collected, 0, &out);
    assert!(finals.len() < 10, "{}", out.context());
}

#[test]
fn run_timeout_stops_tests_that_are_still_running() {
    let project = Project::new("faults_run_timeout");
    let (out, elapsed) = run_within(
        project
            .shoal(args(&["-n", "2", "--run-timeout", "3"], &[]))
            .env("FAULTS_SLEEP", "600"),
        Duration::from_secs(60),
    );
    assert!(elapsed < Duration::from_secs(30), "took {elapsed:?}");
    assert_ne!(out.code(), 0, "{}", out.context());
}

#[test]
fn run_timeout_reports_the_running_tests_as_timed_out() {
    let project = Project::new("faults_run_timeout");
    let (out, _) = run_within(
        project
            .shoal(args(
                &["-n", "2", "--run-timeout", "3", "--timeout", "600"],
                &[],
            ))
            .env("FAULTS_SLEEP", "600"),
        Duration::from_secs(60),
    );
    out.assert_code(1);
    let events = events(&project, &out);
    let finals: Vec<&Value> = test_events(&events)
        .into_values()
        .filter_map(|v| v.last().copied())
        .collect();
    // Two tests were running, one on each worker.
    let timed_out = finals
        .iter()
        .filter(|e| e["outcome"] == "failed" && longrepr(e).contains("--run-timeout"))
        .count();
    assert_eq!(timed_out, 2, "{}", out.context());
    assert_eq!(stat(&out, "failed"), 2, "{}", out.context());
}

#[test]
fn run_timeout_stops_a_worker_hung_after_its_last_test() {
    let project = Project::new("faults_run_timeout");
    let (out, elapsed) = run_within(
        project
            .shoal(args(&["-n", "2", "--run-timeout", "3"], &[]))
            .env("FAULTS_SLEEP", "0")
            .env("FAULTS_HANG_AT_END", "1"),
        Duration::from_secs(60),
    );
    assert!(elapsed < Duration::from_secs(30), "took {elapsed:?}");
    assert_ne!(out.code(), 0, "{}", out.context());
}

// ------------------------------------------------------------------------------------------
// Retries
// ------------------------------------------------------------------------------------------

/// (attempt number, worker) of each attempt `test` recorded, in order.
fn attempts(project: &Project, test: &str) -> Vec<(i64, String)> {
    let mut found: Vec<(i64, String)> = project
        .take_records()
        .iter()
        .filter(|r| r["test"] == test)
        .map(|r| {
            (
                r["attempt"].as_i64().unwrap(),
                r["worker"].as_str().unwrap_or("").to_owned(),
            )
        })
        .collect();
    found.sort();
    found
}

fn retry_run(select: &str, extra: &[&str]) -> (Project, Output, Vec<Value>, Vec<String>) {
    let project = Project::new("faults_retry");
    let k = ["-k", select];
    let collected = collected_ids(&project, &k);
    let (out, _) = run_within(
        project.shoal(args(&["-n", "2", "-rA"], &[&k[..], extra].concat())),
        RUN_LIMIT,
    );
    assert_no_panic(&out);
    let events = events(&project, &out);
    (project, out, events, collected)
}

#[test]
fn a_test_passing_on_its_third_try_is_flaky_and_the_run_passes() {
    let (project, out, events, collected) =
        retry_run("fails_twice or test_filler", &["--retries", "2"]);
    out.assert_code(0);
    assert!(
        summary_line(&out, "FLAKY", "test_retry.py::test_fails_twice")
            .is_some_and(|l| l.ends_with("passed on try 3")),
        "{}",
        out.context()
    );
    assert_eq!(stat(&out, "flaky"), 1, "{}", out.context());
    assert_eq!(stat(&out, "passed"), 5, "{}", out.context());
    assert_eq!(stat(&out, "failed"), 0, "{}", out.context());
    let finals = assert_one_final_outcome(&events, &collected, 2, &out);
    assert_eq!(
        finals["test_retry.py::test_fails_twice"]["outcome"],
        "passed"
    );
    let outcomes: Vec<&Value> = test_events(&events)["test_retry.py::test_fails_twice"]
        .iter()
        .map(|e| &e["outcome"])
        .collect();
    assert_eq!(
        outcomes,
        ["failed", "failed", "passed"],
        "{}",
        out.context()
    );
    assert_eq!(attempts(&project, "fails_twice").len(), 3);
}

#[test]
fn a_test_that_always_fails_is_failed_with_its_reruns_in_junit() {
    let (project, out, events, collected) = retry_run(
        "always_fails or test_filler",
        &["--retries", "2", "--junitxml=junit.xml"],
    );
    out.assert_code(1);
    assert!(
        summary_line(&out, "FAILED", "test_retry.py::test_always_fails").is_some(),
        "{}",
        out.context()
    );
    assert!(!out.stdout.contains("FLAKY"), "{}", out.context());
    assert_eq!(stat(&out, "failed"), 1, "{}", out.context());
    assert_eq!(stat(&out, "flaky"), 0, "{}", out.context());
    assert_one_final_outcome(&events, &collected, 2, &out);
    assert_eq!(
        test_events(&events)["test_retry.py::test_always_fails"].len(),
        3,
        "{}",
        out.context()
    );
    assert_eq!(attempts(&project, "always_fails").len(), 3);
    let xml = crate::faults::read(&project.path.join("junit.xml"));
    let start = xml
        .find("name=\"test_always_fails\"")
        .unwrap_or_else(|| panic!("no testcase for test_always_fails in {xml}"));
    let case = &xml[start..];
    let case = &case[..case.find("</testcase>").expect("a closed testcase")];
    assert_eq!(case.matches("<failure").count(), 1, "{case}");
    assert_eq!(case.matches("<rerunFailure").count(), 2, "{case}");
}

#[test]
fn the_flaky_mark_retries_without_the_option() {
    let (project, out, events, collected) = retry_run("marked_flaky or test_filler", &[]);
    out.assert_code(0);
    assert!(
        summary_line(&out, "FLAKY", "test_retry.py::test_marked_flaky")
            .is_some_and(|l| l.ends_with("passed on try 2")),
        "{}",
        out.context()
    );
    assert_eq!(stat(&out, "flaky"), 1, "{}", out.context());
    assert_one_final_outcome(&events, &collected, 1, &out);
    assert_eq!(attempts(&project, "marked_flaky").len(), 2);
}

#[test]
fn a_crashed_test_is_retried() {
    let (_, out, events, collected) = retry_run("crashes_once or test_filler", &["--retries", "1"]);
    out.assert_code(0);
    assert!(
        summary_line(&out, "FLAKY", "test_retry.py::test_crashes_once").is_some(),
        "{}",
        out.context()
    );
    assert_one_final_outcome(&events, &collected, 1, &out);
    let tries = &test_events(&events)["test_retry.py::test_crashes_once"];
    assert_eq!(tries.len(), 2, "{}", out.context());
    assert_crashed(tries[0], "exit code 3", &out);
    assert_eq!(tries[1]["outcome"], "passed", "{}", out.context());
}

#[test]
fn a_retry_runs_on_another_worker() {
    // Twenty slow fillers keep the other worker taking tests while the retry waits for it.
    let (project, out, events, collected) =
        retry_run("fails_once_elsewhere or slow_filler", &["--retries", "1"]);
    out.assert_code(0);
    assert_one_final_outcome(&events, &collected, 1, &out);
    let tries = attempts(&project, "fails_once_elsewhere");
    assert_eq!(tries.len(), 2, "{tries:?}\n{}", out.context());
    assert_ne!(
        tries[0].1,
        tries[1].1,
        "both attempts ran on the same worker: {tries:?}\n{}",
        out.context()
    );
    let events_workers: Vec<&str> = test_events(&events)
        ["test_retry.py::test_fails_once_elsewhere"]
        .iter()
        .map(|e| e["worker"].as_str().unwrap())
        .collect();
    assert_eq!(
        events_workers,
        [tries[0].1.as_str(), tries[1].1.as_str()],
        "{}",
        out.context()
    );
}

// ------------------------------------------------------------------------------------------
// Signals to shoal
// ------------------------------------------------------------------------------------------

fn has(records: &[Value], key: &str) -> bool {
    records.iter().any(|r| r.get(key).is_some())
}

/// Starts `faults_signals` (the `test_sleep` tests), waits for the first test to finish, then
/// sends `signal` to shoal; checks exit code 2, the KeyboardInterrupt banner, the tests not
/// run, the session teardown of every worker that ran a test, and (in `wait`) no orphans.
fn interrupt_once(signal: i32, start: &str) {
    let project = Project::new("faults_signals");
    let running = project
        .shoal(args(
            &["-n", "2", "--start", start, "-k", "test_sleep"],
            &[],
        ))
        .start();
    let watchdog = Watchdog::new(running.pid(), RUN_LIMIT);
    wait_for_records(&project, RUN_LIMIT, "a finished test", |r| has(r, "done"));
    running.signal(signal);
    let out = running.wait();
    assert!(!watchdog.disarm(), "the run did not end\n{}", out.context());
    out.assert_code(2);
    assert_no_panic(&out);
    out.assert_stdout_contains("KeyboardInterrupt");
    out.assert_stdout_contains("not run");
    let records = project.take_records();
    let started: std::collections::BTreeSet<&str> = records
        .iter()
        .filter(|r| r.get("start").is_some())
        .filter_map(|r| r["worker"].as_str())
        .collect();
    let torn_down: std::collections::BTreeSet<&str> = records
        .iter()
        .filter(|r| r.get("teardown").is_some())
        .filter_map(|r| r["worker"].as_str())
        .collect();
    assert!(!started.is_empty());
    assert!(
        started.is_subset(&torn_down),
        "workers that ran tests: {started:?}, that tore down: {torn_down:?}\n{}",
        out.context()
    );
    let events = events(&project, &out);
    let collected = collected_ids(&project, &["-k", "test_sleep"]);
    assert_one_final_outcome(&events, &collected, 0, &out);
}

#[test]
fn sigint_stops_the_run_tears_down_and_exits_2_forked() {
    interrupt_once(libc::SIGINT, "fork");
}

#[test]
fn sigint_stops_the_run_tears_down_and_exits_2_spawned() {
    interrupt_once(libc::SIGINT, "spawn");
}

#[test]
fn sigterm_behaves_like_sigint_forked() {
    interrupt_once(libc::SIGTERM, "fork");
}

#[test]
fn sigterm_behaves_like_sigint_spawned() {
    interrupt_once(libc::SIGTERM, "spawn");
}

#[test]
fn a_second_sigint_ends_a_test_that_ignored_the_first() {
    for start in ["fork", "spawn"] {
        let project = Project::new("faults_signals");
        let running = project
            .shoal(args(&["-n", "2", "--start", start], &[]))
            .start();
        let watchdog = Watchdog::new(running.pid(), RUN_LIMIT);
        wait_for_records(&project, RUN_LIMIT, "the stubborn test", |r| {
            r.iter().any(|r| r["start"] == "stubborn")
        });
        running.signal(libc::SIGINT);
        wait_for_records(&project, RUN_LIMIT, "the first interrupt", |r| {
            has(r, "interrupted")
        });
        let second = Instant::now();
        running.signal(libc::SIGINT);
        let out = running.wait();
        assert!(!watchdog.disarm(), "the run did not end\n{}", out.context());
        // The stubborn test would sleep 600 s more.
        assert!(
            second.elapsed() < Duration::from_secs(60),
            "{:?} after the second SIGINT\n{}",
            second.elapsed(),
            out.context()
        );
        out.assert_code(2);
        assert_no_panic(&out);
        out.assert_stdout_contains("KeyboardInterrupt");
    }
}

#[test]
fn sigkill_to_shoal_takes_every_process_of_the_run_with_it() {
    for start in ["fork", "spawn"] {
        let project = Project::new("faults_signals");
        let running = project
            .shoal(args(
                &["-n", "2", "--start", start, "-k", "test_sleep"],
                &[],
            ))
            .start();
        let watchdog = Watchdog::new(running.pid(), RUN_LIMIT);
        // Both workers are inside a test.
        wait_for_records(&project, RUN_LIMIT, "two running tests", |r| {
            r.iter().filter(|r| r.get("start").is_some()).count() >= 2
        });
        running.signal(libc::SIGKILL);
        // Within a few seconds nothing of the run is left (PR_SET_PDEATHSIG).
        let deadline = Instant::now() + Duration::from_secs(10);
        let mut left = survivors(project.root());
        while !left.is_empty() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
            left = survivors(project.root());
        }
        let out = running.wait();
        assert!(!watchdog.disarm());
        assert_eq!(out.signal, Some(libc::SIGKILL), "{}", out.context());
        assert!(
            left.is_empty(),
            "{start}: 10 s after shoal was killed, processes of the run remain: {left:?}\n{}",
            out.context()
        );
    }
}

// ------------------------------------------------------------------------------------------
// Garbage on the wire
// ------------------------------------------------------------------------------------------

const GARBAGE: &str = "test_wire.py::test_garbage";

/// Runs `faults_wire` with the garbage test writing `mode` to shoal's socket.
fn wire_run(mode: &str, start: &str) -> (Project, Output, Vec<Value>, Vec<String>) {
    let project = Project::new("faults_wire");
    let collected = collected_ids(&project, &[]);
    let (out, _) = run_within(
        project
            .shoal(args(&["-n", "2", "--start", start, "-rA"], &[]))
            .env("FAULTS_WIRE", mode),
        RUN_LIMIT,
    );
    let events = events(&project, &out);
    (project, out, events, collected)
}

/// The worker that broke the protocol is stopped with a clear message naming it, its test is
/// reported crashed, and every other test runs exactly once.
fn assert_garbage_handled(mode: &str, start: &str, says: &str) {
    let (_, out, events, collected) = wire_run(mode, start);
    assert_no_panic(&out);
    out.assert_code(1);
    let finals = assert_one_final_outcome(&events, &collected, 0, &out);
    assert_eq!(finals.len(), 11, "every test ran\n{}", out.context());
    let garbage = finals[GARBAGE];
    assert_crashed(garbage, "signal 9", &out);
    let worker = garbage["worker"].as_str().unwrap();
    let complaint = out
        .stderr
        .lines()
        .find(|l| l.starts_with("shoal: ") && l.contains(&format!("worker '{worker}'")))
        .unwrap_or_else(|| panic!("{mode}: no error names worker {worker}\n{}", out.context()));
    assert!(
        complaint.contains(says) && complaint.ends_with("stopping it"),
        "{mode}: {complaint:?}\n{}",
        out.context()
    );
    assert_eq!(stat(&out, "passed"), 10, "{}", out.context());
}

#[test]
fn a_frame_that_is_not_json_stops_its_worker() {
    assert_garbage_handled("not_json", "fork", "decode a message");
}

#[test]
fn an_oversized_frame_stops_its_worker() {
    assert_garbage_handled("oversized", "fork", "frame of 4294967295 bytes");
    assert_garbage_handled("oversized", "spawn", "frame of 4294967295 bytes");
}

#[test]
fn a_message_of_unknown_type_stops_its_worker() {
    assert_garbage_handled("unknown_type", "fork", "unknown variant `bogus`");
}

#[test]
fn a_message_out_of_place_stops_its_worker() {
    assert_garbage_handled("second_hello", "fork", "unexpected message (hello)");
}

#[test]
fn a_test_done_out_of_range_does_not_panic() {
    let (_, out, events, collected) = wire_run("done_out_of_range", "fork");
    assert_no_panic(&out);
    out.assert_code(1);
    let finals = assert_one_final_outcome(&events, &collected, 0, &out);
    assert_eq!(finals[GARBAGE]["outcome"], "failed", "{}", out.context());
}

#[test]
fn a_test_start_out_of_range_does_not_panic() {
    let (_, out, events, collected) = wire_run("start_out_of_range", "fork");
    assert_no_panic(&out);
    out.assert_code(1);
    let finals = assert_one_final_outcome(&events, &collected, 0, &out);
    assert_eq!(finals[GARBAGE]["outcome"], "failed", "{}", out.context());
}

#[test]
fn a_test_done_for_another_test_gives_no_second_outcome() {
    let (_, out, events, collected) = wire_run("done_for_another_test", "fork");
    assert_no_panic(&out);
    let per_test = test_events(&events);
    assert_eq!(
        per_test["test_wire.py::test_before[0]"].len(),
        1,
        "{}",
        out.context()
    );
    assert_one_final_outcome(&events, &collected, 0, &out);
    assert_eq!(per_test[GARBAGE].last().unwrap()["outcome"], "failed");
}

// ------------------------------------------------------------------------------------------
// Processes a crashed test leaves behind
// ------------------------------------------------------------------------------------------

#[test]
fn a_crashed_tests_child_process_does_not_outlive_the_run() {
    let project = Project::new("faults_children");
    let run = project.shoal(args(
        &["-n", "2", "-k", "popen_child_then_crash or test_ok"],
        &[],
    ));
    // wait() fails the test if the child survives.
    let (out, _) = run_within(run, RUN_LIMIT);
    out.assert_code(1);
    assert_children_gone(&project, &out);
}

#[test]
fn a_crashed_tests_forked_child_does_not_hold_up_the_run() {
    let project = Project::new("faults_children");
    let run = project.shoal(args(
        &["-n", "2", "-k", "forked_child_then_crash or test_ok"],
        &[],
    ));
    let (out, elapsed) = run_within(run, Duration::from_secs(60));
    assert!(elapsed < Duration::from_secs(30), "took {elapsed:?}");
    out.assert_code(1);
    assert_eq!(stat(&out, "passed"), 4, "{}", out.context());
}

// ------------------------------------------------------------------------------------------
// Crashes after the run was stopped
// ------------------------------------------------------------------------------------------

#[test]
fn a_crash_after_exitfirst_stopped_the_run_is_reported() {
    let project = Project::new("faults_exitfirst");
    let (out, _) = run_within(
        project.shoal(args(&["-n", "2", "-x", "-rA"], &[])),
        RUN_LIMIT,
    );
    out.assert_code(1);
    // The test that crashed is not silently "not run".
    let events = events(&project, &out);
    let crashed = test_events(&events)
        .get("test_exitfirst.py::test_crashes_after_the_stop")
        .and_then(|list| list.last().copied())
        .cloned();
    assert!(
        crashed.as_ref().and_then(crash_message).is_some() || out.all_output().contains("crashed"),
        "the crash is not reported\n{}",
        out.context()
    );
}
