//! `-x` and `--maxfail`: the run stops early, says so, and exits 1. The `maxfail` fixture has
//! three failing tests first and 300 passing ones after them.

mod common;

use common::{Output, Project};

const COLLECTED: usize = 303;

fn run_stopping(args: &[&str]) -> Output {
    let project = Project::new("maxfail");
    let mut all = vec!["-p", "no:cacheprovider"];
    all.extend_from_slice(args);
    let out = project.shoal(&all).run();
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
    let out = run_stopping(&["-n", "2", "-x"]);
    assert_stopped_early(&out, 1, "stopping after 1 failures");
}

#[test]
fn exitfirst_long_form_stops_too() {
    let out = run_stopping(&["-n", "2", "--exitfirst", "--dist", "loadfile"]);
    assert_stopped_early(&out, 1, "stopping after 1 failures");
}

#[test]
fn maxfail_two_stops_after_two_failures() {
    let out = run_stopping(&["-n", "2", "--maxfail=2"]);
    assert_stopped_early(&out, 2, "stopping after 2 failures");
}

#[test]
fn maxfail_two_stops_with_worksteal() {
    let out = run_stopping(&["-n", "2", "--maxfail", "2", "--dist", "worksteal"]);
    assert_stopped_early(&out, 2, "stopping after 2 failures");
}

#[test]
#[ignore = "bug: with -n 1 --maxfail=2 a third failing test often runs; workers ignore session.shouldfail (xdist workers stop by themselves)"]
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
    let out = run_stopping(&["-n", "2", "-x", "--start", "spawn"]);
    assert_stopped_early(&out, 1, "stopping after 1 failures");
}

#[test]
#[ignore = "bug: after -x/--maxfail the stats line adds 'N not run', a count pytest and pytest-xdist never print"]
fn stopped_run_stats_line_has_only_pytest_categories() {
    // pytest: `1 failed in 0.05s`; pytest-xdist: `1 failed, 67 passed in 2.04s`.
    let out = run_stopping(&["-n", "2", "-x"]);
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
