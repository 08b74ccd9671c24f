//! The processes of a run: none survives it, however it ends (normally, stopped early, on an
//! error, after a crashed worker, or interrupted), and a crashed worker is reported.
//!
//! Every run made through the helpers is checked for survivors already; the tests here make
//! the ways a run can end explicit.

use std::time::{Duration, Instant};

use crate::common::{assert_same_outcomes, survivors, Output, Project};
use crate::faults::{alive, assert_children_gone};

#[track_caller]
fn assert_nothing_survives(project: &Project, out: &Output) {
    let left = survivors(project.root());
    assert!(left.is_empty(), "survivors: {left:?}\n{}", out.context());
}

#[test]
fn nothing_survives_normal_runs() {
    let project = Project::new("outcomes");
    for args in [
        &["-n", "2"][..],
        &["-n", "2", "--start", "spawn"],
        &["-n", "0"],
        &["-n", "3", "--dist", "each"],
        &["-n", "2", "--dist", "worksteal"],
    ] {
        let mut all = vec!["-p", "no:cacheprovider", "-q"];
        all.extend_from_slice(args);
        let out = project.shoal(&all).run();
        out.assert_code(1);
        assert_nothing_survives(&project, &out);
    }
}

#[test]
fn nothing_survives_a_run_stopped_by_maxfail() {
    let project = Project::new("maxfail");
    for start in ["fork", "spawn"] {
        project.take_records();
        // Both workers busy before the stop (a late spawned worker hangs the run, see
        // stopping.rs).
        let out = project
            .shoal(["-n", "2", "-x", "--start", start, "-p", "no:cacheprovider"])
            .rendezvous()
            .run();
        out.assert_code(1);
        assert_nothing_survives(&project, &out);
    }
}

#[test]
fn nothing_survives_a_collection_mismatch() {
    let project = Project::new("collection_differs");
    let out = project
        .shoal(["-n", "3", "--start", "spawn", "-p", "no:cacheprovider"])
        .run();
    out.assert_code(3);
    assert_nothing_survives(&project, &out);
}

fn crash_run(start: &str) -> Output {
    let project = Project::new("worker_crash");
    let out = project
        .shoal(["-n", "2", "--start", start, "-p", "no:cacheprovider", "-rA"])
        .run();
    out.assert_code(1);
    let crashed = out
        .summary_lines()
        .into_iter()
        .find(|l| l.starts_with("FAILED test_crash.py::test_crash"))
        .unwrap_or_else(|| {
            panic!(
                "the crashing test is not reported failed\n{}",
                out.context()
            )
        });
    assert!(
        crashed.contains("crashed"),
        "{crashed:?}\n{}",
        out.context()
    );
    out.assert_stdout_contains("signal 9");
    assert_eq!(out.stats().get("failed"), Some(&1), "{}", out.context());
    assert_nothing_survives(&project, &out);
    out
}

#[test]
fn crashed_forked_worker_is_reported_and_the_run_ends() {
    crash_run("fork");
}

#[test]
fn crashed_spawned_worker_is_reported_and_the_run_ends() {
    crash_run("spawn");
}

#[test]
fn tests_queued_on_a_crashed_worker_run_elsewhere() {
    let out = crash_run("fork");
    // xdist reschedules what the dead worker had not run: 20 passes, 1 failure.
    assert_eq!(out.stats().get("passed"), Some(&20), "{}", out.context());
    assert!(!out.stdout.contains("not run"), "{}", out.context());
    assert!(!out.stdout.contains("no workers left"), "{}", out.context());
}

/// Starts the `hang` fixture, waits until two tests are running, then signals shoal itself.
fn interrupt(signal: i32, start: &str) -> Output {
    let project = Project::new("hang");
    let running = project
        .shoal(["-n", "2", "--start", start, "-p", "no:cacheprovider"])
        .start();
    // Wait (bounded) for both workers to be inside a test.
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let started = std::fs::read_to_string(&project.record)
            .map(|t| t.lines().count())
            .unwrap_or(0);
        if started >= 2 {
            break;
        }
        assert!(Instant::now() < deadline, "the hanging tests never started");
        std::thread::sleep(Duration::from_millis(20));
    }
    running.signal(signal);
    // wait() fails the test if any process of the run is left behind.
    running.wait()
}

#[test]
fn sigint_ends_every_process_and_exits_2() {
    let out = interrupt(libc::SIGINT, "fork");
    out.assert_code(2);
}

#[test]
fn sigterm_ends_every_process() {
    let _ = interrupt(libc::SIGTERM, "fork");
}

#[test]
fn sigterm_ends_every_spawned_process() {
    let _ = interrupt(libc::SIGTERM, "spawn");
}

// ------------------------------------------------------------------------------------------
// Sessions of their own (os.setsid) and children the suite waits for itself
// ------------------------------------------------------------------------------------------

const START_METHODS: [&str; 2] = ["fork", "spawn"];

#[test]
fn tests_may_call_setsid_as_under_xdist() {
    let project = Project::new("setsid");
    let args = ["-p", "no:cacheprovider", "-n", "2", "-rA", "test_setsid.py"];
    // xdist's workers lead no process group, so setsid works in them (under serial pytest
    // started from a shell it does not: pytest leads the shell's job).
    let xdist = project.pytest(["-p", "xdist"].iter().chain(&args)).run();
    xdist.assert_code(0);
    for start in START_METHODS {
        let out = project.shoal(["--start", start].iter().chain(&args)).run();
        assert_same_outcomes(&xdist, &out);
    }
}

#[test]
fn a_daemon_a_test_started_does_not_outlive_the_run() {
    let project = Project::new("setsid");
    for start in START_METHODS {
        // wait() fails the test if the daemon survives.
        let out = project
            .shoal([
                "-p",
                "no:cacheprovider",
                "-n",
                "2",
                "--start",
                start,
                "test_daemon.py",
            ])
            .run();
        out.assert_code(0);
        let daemons: Vec<i64> = project
            .take_records()
            .iter()
            .filter_map(|r| r["daemon"].as_i64())
            .collect();
        assert_eq!(daemons.len(), 1, "{}", out.context());
        assert!(!alive(daemons[0]), "the daemon survived\n{}", out.context());
    }
}

#[test]
fn a_timeout_ends_a_test_that_left_the_workers_process_group() {
    let project = Project::new("setsid");
    for start in START_METHODS {
        let started = Instant::now();
        let out = project
            .shoal([
                "-p",
                "no:cacheprovider",
                "-n",
                "2",
                "--start",
                start,
                "-rA",
                "test_setsid_timeout.py",
            ])
            .timeout(Duration::from_secs(120))
            .run();
        out.assert_code(1);
        let failed = out
            .summary_lines()
            .into_iter()
            .find(|l| l.starts_with("FAILED test_setsid_timeout.py::test_setsid_then_hang"))
            .unwrap_or_else(|| panic!("the hung test is not failed\n{}", out.context()));
        assert!(failed.contains("Timeout"), "{failed}\n{}", out.context());
        assert_eq!(out.stats().get("passed"), Some(&1), "{}", out.context());
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "{}",
            out.context()
        );
        assert_children_gone(&project, &out);
    }
}

#[test]
fn children_the_suite_started_are_left_for_it_to_wait_for() {
    let project = Project::new("collector_children");
    let serial = project.serial(&["-rA"]).run();
    serial.assert_code(0);
    let expected = project.take_records();
    for start in START_METHODS {
        let out = project.shoal_n2(&["--start", start, "-rA"]).run();
        assert_same_outcomes(&serial, &out);
        let records = project.take_records();
        // Serial pytest: one process waits for both. shoal: the collector (and, spawned,
        // every worker) for the conftest's child; each worker that ran a test for its own.
        for record in expected.iter().chain(&records) {
            let (key, code) = record.as_object().unwrap().iter().next().unwrap();
            let want = if key == "conftest_child" { 7 } else { 5 };
            assert_eq!(code, want, "{key} in {record}\n{}", out.context());
        }
        let conftest = records
            .iter()
            .filter(|r| r.get("conftest_child").is_some())
            .count();
        assert!(conftest >= 1, "{records:?}\n{}", out.context());
    }
}
