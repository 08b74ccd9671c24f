//! Time spent suspended (Ctrl-Z, SIGTSTP) does not count against timeouts: shoal stops its
//! workers with itself and moves every deadline by the time it was stopped. The test needs
//! most of its running time after the suspension, so a deadline that counted the suspension
//! would kill it.

use std::{
    thread,
    time::{Duration, Instant},
};

use crate::common::Project;

#[test]
fn time_spent_suspended_does_not_count_against_the_timeout() {
    let project = Project::new("suspend");
    let started = project.root().join("started");
    let running = project
        .shoal(["-n", "1", "--timeout", "3", "-q"])
        .env("SHOAL_STARTED", &started)
        .env("SHOAL_PAUSE", project.root().join("pause"))
        .start();
    let deadline = Instant::now() + Duration::from_secs(60);
    while !started.exists() {
        assert!(Instant::now() < deadline, "the test never started");
        thread::sleep(Duration::from_millis(20));
    }
    running.signal(libc::SIGTSTP);
    // Suspended for longer than the timeout: were this time counted, the test would fail.
    thread::sleep(Duration::from_secs(4));
    running.signal(libc::SIGCONT);
    let out = running.wait();
    out.assert_code(0);
    assert!(out.all_output().contains("1 passed"), "{}", out.context());
    let pause: f64 = std::fs::read_to_string(project.root().join("pause"))
        .unwrap()
        .parse()
        .unwrap();
    assert!(
        pause >= 3.0,
        "the worker was not stopped with shoal (longest pause {pause}s)"
    );
}
