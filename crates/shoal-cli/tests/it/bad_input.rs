//! Whatever a conftest or plugin inside a Python process sends on shoal's channel, the
//! controller never panics and every collected test still ends with exactly one outcome: a
//! worker that breaks the protocol is stopped and replaced, a collector that sends values no
//! run can use ends the run with a clear error (exit 3).
//!
//! The random runs are drawn from a fixed seed, printed with each run; set `BAD_FRAMES_SEED`
//! to replay one (and `BAD_FRAMES_RUNS` to change how many runs).

use std::time::Duration;

use crate::common::{collected_ids, Output, Project};
use crate::faults::{assert_one_final_outcome, env_u64, events, run_within};

const DEFAULT_SEED: u64 = 0x0bad_f4a3;
const DEFAULT_RUNS: u64 = 12;
const RUN_LIMIT: Duration = Duration::from_secs(60);

/// The controller did not panic: Rust's panic status is 101 and its message says so.
#[track_caller]
fn assert_no_panic(out: &Output) {
    assert_ne!(out.code, Some(101), "shoal panicked\n{}", out.context());
    assert!(
        !out.stderr.contains("panicked"),
        "shoal panicked\n{}",
        out.context()
    );
}

#[test]
fn a_release_of_tests_never_sent_stops_the_worker_not_the_controller() {
    let project = Project::new("bad_frames");
    let collected = collected_ids(&project, &[]);
    let (out, _) = run_within(
        project
            .shoal([
                "-n",
                "2",
                "--dist",
                "worksteal",
                "-p",
                "no:cacheprovider",
                "--report-json=events.jsonl",
            ])
            .env("BAD_FRAMES_RELEASE", "[999, 3]")
            .env("BAD_FRAMES_HOLD", "1")
            // gw0 must not finish its share before gw1 holds its own: no steal then.
            .rendezvous(),
        RUN_LIMIT,
    );
    assert_no_panic(&out);
    assert!(
        out.stderr
            .contains("sent the release of test 999, which it does not hold; stopping it"),
        "{}",
        out.context()
    );
    let events = events(&project, &out);
    assert_one_final_outcome(&events, &collected, 0, &out);
}

#[test]
fn random_messages_from_a_worker_never_panic_the_controller() {
    let seed = env_u64("BAD_FRAMES_SEED").unwrap_or(DEFAULT_SEED);
    let runs = env_u64("BAD_FRAMES_RUNS").unwrap_or(DEFAULT_RUNS);
    println!("random worker messages: BAD_FRAMES_SEED={seed:#x} BAD_FRAMES_RUNS={runs}");
    let project = Project::new("bad_frames");
    let collected = collected_ids(&project, &[]);
    for run in 0..runs {
        let run_seed = seed.wrapping_add(run);
        let dist = ["load", "worksteal", "loadfile"][run as usize % 3];
        println!("run {run}: BAD_FRAMES_SEED={run_seed:#x} --dist {dist}");
        let (out, _) = run_within(
            project
                .shoal([
                    "-n",
                    "2",
                    "--dist",
                    dist,
                    "-p",
                    "no:cacheprovider",
                    "--report-json=events.jsonl",
                ])
                .env("BAD_FRAMES_SEED", run_seed.to_string()),
            RUN_LIMIT,
        );
        assert_no_panic(&out);
        assert!(
            matches!(out.code, Some(0 | 1)),
            "run {run}: a misbehaving worker fails tests, not the run\n{}",
            out.context()
        );
        let events = events(&project, &out);
        assert_one_final_outcome(&events, &collected, 0, &out);
    }
}

/// A collection the controller cannot act on: `test_bad.py`'s marks as written to `conftest.py`.
fn bad_collection(mark: &str) -> Project {
    let project = Project::empty();
    project.write(
        "test_bad.py",
        &format!(
            "import pytest\n\n\n{mark}\ndef test_one():\n    pass\n\n\ndef test_two():\n    pass\n"
        ),
    );
    project
}

#[test]
fn a_collection_with_unusable_values_is_a_clear_error() {
    for (mark, message) in [
        (
            "@pytest.mark.timeout(1e300)",
            "failed to accept what the collector sent: test 'test_bad.py::test_one' has a timeout of 1e300 seconds",
        ),
        (
            "@pytest.mark.resource('db', limit=0)",
            "failed to accept what the collector sent: test 'test_bad.py::test_one' holds resource 'db' with limit 0",
        ),
    ] {
        let project = bad_collection(mark);
        let (out, _) = run_within(project.shoal(["-n", "2", "-p", "no:cacheprovider"]), RUN_LIMIT);
        assert_no_panic(&out);
        out.assert_code(3);
        assert!(out.stderr.contains(message), "{mark}\n{}", out.context());
    }
}
