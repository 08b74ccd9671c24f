//! `pytest.exit()` stops the whole run as it stops pytest: every worker stops, what ran is
//! reported, what did not is counted, pytest's `!!! _pytest.outcomes.Exit: msg !!!` line is
//! printed where pytest prints it and the run exits with pytest's code (2, or `returncode`).
//!
//! The `stops_exit` fixture has two files: `test_exits.py` (3 tests, the second exits) and
//! `test_waits.py` (6 tests, the first holds its worker until the stop has reached it); see its
//! conftest for the places `$EXIT_AT` names.

use crate::common::{Output, Project};

const COLLECTED: usize = 9;
const EXIT_MESSAGE: &str = "_pytest.outcomes.Exit: bye now";

/// shoal on the fixture with `$EXIT_AT=exit_at` (and `$EXIT_RETURNCODE`), then serial pytest.
fn run_both(
    exit_at: &str,
    returncode: Option<&str>,
    args: &[&str],
    rendezvous: bool,
) -> (Output, Output) {
    let project = Project::new("stops_exit");
    let mut shoal = project
        .shoal(["-p", "no:cacheprovider"].iter().chain(args))
        .env("EXIT_AT", exit_at);
    let mut pytest = project
        .pytest(["-p", "no:cacheprovider"])
        .env("EXIT_AT", exit_at);
    if let Some(code) = returncode {
        shoal = shoal.env("EXIT_RETURNCODE", code);
        pytest = pytest.env("EXIT_RETURNCODE", code);
    }
    if rendezvous {
        shoal = shoal.rendezvous();
    }
    (shoal.run(), pytest.run())
}

/// The two workers of a parallel run: one file each, both busy when the exit comes.
const PARALLEL: &[&str] = &["-n", "2", "--dist", "loadfile"];

/// The line of stdout that reports the exit, and whether it comes right before the stats line
/// (pytest's place for it when the run exits 2) rather than right after it (other codes).
#[track_caller]
fn exit_line(out: &Output) -> (String, bool) {
    let lines: Vec<&str> = out.stdout.lines().collect();
    let at = lines
        .iter()
        .position(|l| l.starts_with("!!!") && l.contains(EXIT_MESSAGE))
        .unwrap_or_else(|| panic!("no {EXIT_MESSAGE:?} line\n{}", out.context()));
    let stats = out.stats_line().unwrap_or_default();
    let before = lines.get(at + 1) == Some(&stats);
    let after = at > 0 && lines[at - 1] == stats;
    assert!(
        before || after,
        "the exit line is not next to the stats line\n{}",
        out.context()
    );
    (
        lines[at].trim_matches(|c| c == '!' || c == ' ').to_owned(),
        before,
    )
}

/// How many tests the exit line counts as not run.
fn not_run(line: &str) -> usize {
    match line.strip_prefix(EXIT_MESSAGE) {
        Some("") => 0,
        Some(": 1 test not run") => 1,
        Some(rest) => rest
            .strip_prefix(": ")
            .and_then(|r| r.strip_suffix(" tests not run"))
            .and_then(|n| n.parse().ok())
            .unwrap_or_else(|| panic!("unexpected exit line {line:?}")),
        None => panic!("unexpected exit line {line:?}"),
    }
}

/// Every collected test is reported once or counted as not run.
#[track_caller]
fn assert_accounted(out: &Output, not_run: usize) {
    let reported: usize = out.stats().values().sum();
    assert_eq!(
        reported + not_run,
        COLLECTED,
        "tests vanished\n{}",
        out.context()
    );
}

#[test]
fn exit_in_a_test_stops_every_worker_and_exits_2() {
    let (out, serial) = run_both("call", None, PARALLEL, true);
    serial.assert_code(2);
    out.assert_code(2);
    let (line, before_stats) = exit_line(&out);
    assert!(
        before_stats,
        "pytest prints it before the stats line\n{}",
        out.context()
    );
    // gw0 ran test_first, gw1 test_wait (held until the stop reached it); test_exits itself
    // never finished, and both workers' queues were dropped.
    assert_eq!(not_run(&line), 7, "{}", out.context());
    assert_eq!(out.stats().get("passed"), Some(&2), "{}", out.context());
    assert_accounted(&out, 7);
    assert_eq!(exit_line(&serial).1, before_stats, "{}", serial.context());
}

#[test]
fn exit_with_a_returncode_exits_with_it() {
    let (out, serial) = run_both("call", Some("9"), PARALLEL, true);
    serial.assert_code(9);
    out.assert_code(9);
    let (line, before_stats) = exit_line(&out);
    assert!(
        !before_stats,
        "pytest prints it after the stats line\n{}",
        out.context()
    );
    assert_eq!(exit_line(&serial).1, before_stats, "{}", serial.context());
    assert_eq!(not_run(&line), 7, "{}", out.context());
    assert_accounted(&out, 7);
}

#[test]
fn exit_in_a_fixture_setup_leaves_its_test_not_run() {
    let (out, serial) = run_both("setup", None, PARALLEL, true);
    serial.assert_code(2);
    out.assert_code(2);
    let (line, _) = exit_line(&out);
    assert_eq!(not_run(&line), 7, "{}", out.context());
    assert_eq!(out.stats().get("passed"), Some(&2), "{}", out.context());
    assert_accounted(&out, 7);
}

#[test]
fn exit_in_a_fixture_teardown_keeps_its_passed_test() {
    // pytest counts the test: its call passed before the teardown exited.
    let (out, serial) = run_both("teardown", None, PARALLEL, true);
    serial.assert_code(2);
    assert_eq!(
        serial.stats().get("passed"),
        Some(&2),
        "{}",
        serial.context()
    );
    out.assert_code(2);
    let (line, _) = exit_line(&out);
    assert_eq!(not_run(&line), 6, "{}", out.context());
    assert_eq!(out.stats().get("passed"), Some(&3), "{}", out.context());
    assert_accounted(&out, 6);
}

#[test]
fn exit_in_session_teardown_comes_after_every_test_as_in_pytest() {
    // pytest tears the session down after the last test: everything ran. Each worker tears
    // its own session down after its own last test, so the other goes on meanwhile.
    let (out, serial) = run_both("session_teardown", None, PARALLEL, false);
    serial.assert_code(2);
    out.assert_code(2);
    assert_eq!(out.stats(), serial.stats(), "{}", out.context());
    let (line, before_stats) = exit_line(&out);
    assert_eq!(line, EXIT_MESSAGE, "{}", out.context());
    assert!(before_stats, "{}", out.context());
    assert_accounted(&out, 0);
}

#[test]
fn exit_without_workers_reports_as_pytest_does() {
    let (out, serial) = run_both("call", None, &["-n", "0"], false);
    serial.assert_code(2);
    out.assert_code(2);
    assert_eq!(out.stats(), serial.stats(), "{}", out.context());
    let (line, before_stats) = exit_line(&out);
    assert!(before_stats, "{}", out.context());
    assert_eq!(not_run(&line), 8, "{}", out.context());
}

#[test]
fn exit_in_a_spawned_worker_stops_the_run_too() {
    let mut args = PARALLEL.to_vec();
    args.extend(["--start", "spawn"]);
    let (out, _) = run_both("call", Some("9"), &args, true);
    out.assert_code(9);
    let (line, _) = exit_line(&out);
    assert_eq!(not_run(&line), 7, "{}", out.context());
    assert_accounted(&out, 7);
}
