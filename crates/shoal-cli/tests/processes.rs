//! The processes of a run: none survives it, however it ends (normally, stopped early, on an
//! error, after a crashed worker, or interrupted), and a crashed worker is reported.
//!
//! Every run made through the helpers is checked for survivors already; the tests here make
//! the ways a run can end explicit.

mod common;

use std::time::{Duration, Instant};

use common::{survivors, Output, Project};

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
