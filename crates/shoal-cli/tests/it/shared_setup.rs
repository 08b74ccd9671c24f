//! Setup shared by a whole run, and telling workers apart, the ways pytest-xdist users do it.
//!
//! - `runonce_filelock`: pytest-xdist's documented recipe for a session fixture whose expensive
//!   part runs once per run (a `filelock.FileLock` and a JSON cache in
//!   `tmp_path_factory.getbasetemp().parent`), unchanged. The expensive part appends a line to
//!   `$RUNONCE_COUNTER`; each test records the data it got.
//! - `runonce_worker_detection`: `PYTEST_XDIST_WORKER in os.environ` (at run time, in a
//!   test module at import, in a conftest at import), `worker_id` and
//!   `@pytest.mark.skipif(is_worker, ...)`, compared with pytest-xdist's outcomes.

use std::{collections::BTreeSet, fs, path::Path};

use crate::common::{assert_no_rendezvous_timeout, assert_same_outcomes, field, Output, Project};
use serde_json::Value;

// ---------------------------------------------------------------------------------------------
// Run-once setup with a file lock.

const RUNONCE_TESTS: usize = 12;

/// The lines the expensive part appended to `counter` (one per time it ran).
fn counter_lines(counter: &Path) -> Vec<String> {
    fs::read_to_string(counter)
        .unwrap_or_default()
        .lines()
        .map(str::to_owned)
        .collect()
}

/// Checks one run of runonce_filelock: everything passed, the expensive part ran exactly once,
/// every test saw the same data. Returns the records.
#[track_caller]
fn check_runonce(project: &Project, out: &Output, counter: &Path) -> Vec<Value> {
    out.assert_code(0);
    let records = project.take_records();
    assert_no_rendezvous_timeout(&records, out);
    let lines = counter_lines(counter);
    let ctx = || {
        format!(
            "counter: {lines:?}\nrecords: {records:#?}\n{}",
            out.context()
        )
    };
    assert_eq!(
        lines.len(),
        1,
        "the expensive part ran exactly once\n{}",
        ctx()
    );
    assert_eq!(
        records.len(),
        RUNONCE_TESTS,
        "one record per test\n{}",
        ctx()
    );
    let tokens: BTreeSet<&str> = records.iter().map(|r| field(&r["data"], "token")).collect();
    assert_eq!(tokens.len(), 1, "every test saw the same data\n{}", ctx());
    records
}

#[test]
fn filelock_recipe_runs_the_expensive_part_once_under_n4() {
    let project = Project::new("runonce_filelock");
    let counter = project.root().join("counter");
    let out = project
        .shoal(["-n", "4", "-p", "no:cacheprovider"])
        .env("RUNONCE_COUNTER", &counter)
        .rendezvous()
        .run();
    let records = check_runonce(&project, &out, &counter);
    let workers: BTreeSet<&str> = records.iter().map(|r| field(r, "worker")).collect();
    assert!(
        workers.len() >= 2 && workers.iter().all(|w| w.starts_with("gw")),
        "several workers used the data: {workers:?}\n{}",
        out.context()
    );
    // Every worker found the cache in the same directory, the parent of its own basetemp
    // (checked from inside the tests: pytest may prune an old basetemp once the run is over).
    let shared: BTreeSet<&str> = records.iter().map(|r| field(r, "shared_dir")).collect();
    assert_eq!(shared.len(), 1, "{shared:?}\n{}", out.context());
    let shared = Path::new(*shared.first().unwrap());
    for r in &records {
        assert_eq!(
            Path::new(field(r, "basetemp")),
            shared.join(format!("popen-{}", field(r, "worker"))),
            "{r}\n{}",
            out.context()
        );
        assert_eq!(r["cache_file_exists"], true, "{r}\n{}", out.context());
    }
}

#[test]
fn filelock_recipe_runs_the_expensive_part_once_under_n0() {
    let project = Project::new("runonce_filelock");
    let counter = project.root().join("counter");
    let out = project
        .shoal(["-n", "0", "-p", "no:cacheprovider"])
        .env("RUNONCE_COUNTER", &counter)
        .run();
    let records = check_runonce(&project, &out, &counter);
    assert!(
        records.iter().all(|r| field(r, "worker") == "master"),
        "{records:?}\n{}",
        out.context()
    );
    assert!(
        counter_lines(&counter)[0].ends_with(" master"),
        "no PYTEST_XDIST_WORKER under -n 0"
    );
}

#[test]
fn filelock_recipe_with_basetemp_runs_once_per_run() {
    // With --basetemp the shared directory is that one; each run starts it afresh (as
    // pytest-xdist's controller does), so a second run computes again, once.
    let project = Project::new("runonce_filelock");
    let basetemp = project.root().join("basetemp");
    let basetemp_arg = format!("--basetemp={}", basetemp.display());
    for run in 0..2 {
        let counter = project.root().join(format!("counter{run}"));
        let out = project
            .shoal(["-n", "3", "-p", "no:cacheprovider", &basetemp_arg])
            .env("RUNONCE_COUNTER", &counter)
            .rendezvous()
            .run();
        let records = check_runonce(&project, &out, &counter);
        for r in &records {
            assert_eq!(
                Path::new(field(r, "shared_dir")),
                basetemp,
                "run {run}: {r}\n{}",
                out.context()
            );
        }
    }
}

#[test]
fn filelock_recipe_runs_once_under_pytest_xdist_too() {
    // The fixture is right: pytest-xdist also computes once.
    let project = Project::new("runonce_filelock");
    let counter = project.root().join("counter");
    let out = project
        .pytest(["-n", "4", "-p", "no:cacheprovider"])
        .env("RUNONCE_COUNTER", &counter)
        .rendezvous()
        .run();
    check_runonce(&project, &out, &counter);
}

// ---------------------------------------------------------------------------------------------
// Worker detection, compared with pytest-xdist.

const DETECTION: &str = "runonce_worker_detection";

/// The same arguments under pytest-xdist (`python -m pytest`) and shoal; both outputs.
fn detection_runs(args: &[&str], shoal_extra: &[&str]) -> (Output, Output) {
    let project = Project::new(DETECTION);
    let mut all = vec!["-p", "no:cacheprovider", "-rA"];
    all.extend_from_slice(args);
    let xdist = project.pytest(&all).run();
    let _ = project.take_records();
    let mut shoal_args = all.clone();
    shoal_args.extend_from_slice(shoal_extra);
    let shoal = project.shoal(&shoal_args).run();
    let records = project.take_records();
    for r in &records {
        let expected = r["env"].as_str().unwrap_or("master");
        assert_eq!(field(r, "worker_id"), expected, "{r}\n{}", shoal.context());
    }
    (xdist, shoal)
}

#[test]
fn worker_detection_under_n0_is_plain_pytest() {
    let (xdist, shoal) = detection_runs(&["-n", "0"], &[]);
    xdist.assert_code(0);
    assert_same_outcomes(&xdist, &shoal);
    assert!(
        shoal
            .summary_lines()
            .contains(&"SKIPPED [1] test_at_import_time.py:26: in a worker only".to_owned()),
        "{}",
        shoal.context()
    );
}

#[test]
fn worker_detection_at_run_time_matches_xdist_under_n2() {
    let (xdist, shoal) = detection_runs(&["-n", "2", "test_at_run_time.py"], &[]);
    xdist.assert_code(0);
    assert_same_outcomes(&xdist, &shoal);
}

#[test]
fn worker_detection_at_import_time_matches_xdist_under_n2() {
    let (xdist, shoal) = detection_runs(&["-n", "2"], &[]);
    xdist.assert_code(0);
    assert_same_outcomes(&xdist, &shoal);
}

#[test]
fn worker_detection_at_import_time_matches_xdist_under_n2_spawn() {
    let (xdist, shoal) = detection_runs(&["-n", "2"], &["--start", "spawn"]);
    xdist.assert_code(0);
    assert_same_outcomes(&xdist, &shoal);
}

// ---------------------------------------------------------------------------------------------
// Found along the way.

/// pytest prints short-summary node ids relative to the directory it was started in
/// (`config.cwd_relative_nodeid`); run from a subdirectory of the rootdir, shoal prints them
/// relative to the rootdir.
#[test]
fn short_summary_ids_are_relative_to_the_invocation_dir() {
    let project = Project::empty();
    project.write("pytest.ini", "[pytest]\n");
    project.write("sub/test_x.py", "def test_x():\n    assert 0\n");
    let python = crate::common::python().display().to_string();
    let shoal = crate::common::shoal_bin().display().to_string();
    // `sh -c 'cd sub && exec "$@"' sh PROGRAM ARGS...`: the command, started in sub/.
    let in_sub = |command: &[&str]| {
        let mut args = vec!["-c", "cd sub && exec \"$@\"", "sh"];
        args.extend_from_slice(command);
        args.extend(["-p", "no:cacheprovider", "-rA"]);
        project.program("sh", args).run()
    };
    let serial = in_sub(&[&python, "-m", "pytest"]);
    serial.assert_stdout_contains("FAILED test_x.py::test_x");
    let parallel = in_sub(&[&shoal, "--python", &python, "-n", "2"]);
    assert_same_outcomes(&serial, &parallel);
}
