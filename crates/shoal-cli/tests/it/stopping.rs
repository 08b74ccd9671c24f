//! `-x` and `--maxfail`: the run stops early, says so, and exits 1. The `maxfail` fixture has
//! three failing tests first and 300 passing ones after them.

use std::time::Duration;

use crate::common::{Output, Project};

const COLLECTED: usize = 303;

fn run_stopping(args: &[&str]) -> Output {
    let project = Project::new("maxfail");
    let mut all = vec!["-p", "no:cacheprovider"];
    all.extend_from_slice(args);
    let out = project.shoal(&all).run();
    out.assert_code(1);
    out
}

/// As [`run_stopping`] with two workers that are both running tests before the first failure
/// (see the fixture's conftest): the stop never comes before a worker has connected.
fn run_stopping_both_busy(args: &[&str]) -> Output {
    let project = Project::new("maxfail");
    let mut all = vec!["-n", "2", "-p", "no:cacheprovider"];
    all.extend_from_slice(args);
    let out = project.shoal(&all).rendezvous().run();
    out.assert_code(1);
    out
}

#[track_caller]
fn assert_stopped_early(out: &Output, at_least_failed: usize, message: &str) {
    let stats = out.stats();
    let failed = stats.get("failed").copied().unwrap_or(0);
    let passed = stats.get("passed").copied().unwrap_or(0);
    assert!(
        failed >= at_least_failed,
        "expected {at_least_failed}+ failures: {stats:?}\n{}",
        out.context()
    );
    assert!(
        failed + passed < COLLECTED,
        "every test ran ({failed} failed, {passed} passed), none was skipped by stopping\n{}",
        out.context()
    );
    assert!(
        out.stdout.contains(message),
        "no {message:?} in the output\n{}",
        out.context()
    );
    assert!(
        out.stdout.contains(&format!("{COLLECTED} items")),
        "the header counts the collected tests\n{}",
        out.context()
    );
}

#[test]
fn exitfirst_stops_after_the_first_failure() {
    let out = run_stopping_both_busy(&["-x"]);
    assert_stopped_early(&out, 1, "stopping after 1 failures");
}

#[test]
fn exitfirst_long_form_stops_too() {
    // One file: loadfile makes one worker of it, so there is no second worker to wait for.
    let out = run_stopping(&["-n", "2", "--exitfirst", "--dist", "loadfile"]);
    out.assert_stdout_contains("1 worker [303 items]");
    assert_stopped_early(&out, 1, "stopping after 1 failures");
}

#[test]
fn maxfail_two_stops_after_two_failures() {
    let out = run_stopping_both_busy(&["--maxfail=2"]);
    assert_stopped_early(&out, 2, "stopping after 2 failures");
}

#[test]
fn maxfail_two_stops_with_worksteal() {
    let out = run_stopping_both_busy(&["--maxfail", "2", "--dist", "worksteal"]);
    assert_stopped_early(&out, 2, "stopping after 2 failures");
}

#[test]
fn maxfail_with_one_worker_runs_exactly_up_to_the_limit() {
    // One worker runs in collection order and, like an xdist worker, must stop by itself once
    // its own session reaches --maxfail: exactly two tests run, both fail. The race shows only
    // in some runs, so try several.
    for _ in 0..8 {
        let out = run_stopping(&["-n", "1", "--maxfail=2"]);
        assert_stopped_early(&out, 2, "stopping after 2 failures");
        let stats = out.stats();
        assert_eq!(stats.get("failed"), Some(&2), "{}", out.context());
        assert_eq!(stats.get("passed"), None, "{}", out.context());
    }
}

#[test]
fn maxfail_with_one_worker_stops_within_its_first_batch() {
    let out = run_stopping(&["-n", "1", "--maxfail=2"]);
    assert_stopped_early(&out, 2, "stopping after 2 failures");
    let failed = out.stats().get("failed").copied().unwrap_or(0);
    assert!(failed <= 3, "{}", out.context());
}

#[test]
fn exitfirst_with_spawned_workers() {
    // A spawned worker that connects only after the stop hangs the run: see
    // stop_before_a_slow_spawned_worker_connects_still_ends_the_run.
    let out = run_stopping_both_busy(&["-x", "--start", "spawn"]);
    assert_stopped_early(&out, 1, "stopping after 1 failures");
}

#[test]
fn stopped_run_stats_line_has_only_pytest_categories() {
    // pytest: `1 failed in 0.05s`; pytest-xdist: `1 failed, 67 passed in 2.04s`.
    let out = run_stopping_both_busy(&["-x"]);
    let line = out.stats_line().unwrap_or_default().to_owned();
    for key in out.stats().keys() {
        assert!(
            [
                "failed",
                "passed",
                "skipped",
                "deselected",
                "xfailed",
                "xpassed",
                "warnings",
                "error"
            ]
            .contains(&key.as_str()),
            "{key:?} is not one of pytest's categories: {line:?}\n{}",
            out.context()
        );
    }
}

#[test]
fn stop_before_a_slow_spawned_worker_connects_still_ends_the_run() {
    // The fixture's sitecustomize.py holds spawned worker gw0 back until gw1's session has
    // finished, i.e. until -x has stopped the run. gw0 must then be told to finish too.
    let project = Project::new("slow_worker_start");
    let out = project
        .shoal([
            "-n",
            "2",
            "-x",
            "--start",
            "spawn",
            "-p",
            "no:cacheprovider",
        ])
        .env("PYTHONPATH", project.path.join("slowstart"))
        .timeout(Duration::from_secs(120))
        .run();
    out.assert_code(1);
    assert_eq!(out.stats().get("failed"), Some(&1), "{}", out.context());
    out.assert_stdout_contains("stopping after 1 failures");
}
