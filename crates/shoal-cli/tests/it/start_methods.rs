//! How workers start: forked from the collector by default, spawned fresh with
//! `--start spawn` (each then collects for itself and must agree with the collector), and
//! spawned automatically when forking the collector is unsafe.

use crate::common::{assert_same_outcomes, created_line, Project};

#[test]
fn fork_is_the_default_start_method() {
    let project = Project::new("passing");
    let out = project
        .shoal(["-n", "2", "-v", "-p", "no:cacheprovider"])
        .run();
    out.assert_code(0);
    assert_eq!(
        created_line(&out),
        "created: 2/2 workers (fork)",
        "{}",
        out.context()
    );
}

#[test]
fn start_spawn_is_reported_with_v() {
    let project = Project::new("passing");
    let out = project
        .shoal([
            "-n",
            "2",
            "-v",
            "--start",
            "spawn",
            "-p",
            "no:cacheprovider",
        ])
        .run();
    out.assert_code(0);
    let line = created_line(&out);
    assert!(
        line.starts_with("created: 2/2 workers (spawn"),
        "{line:?}\n{}",
        out.context()
    );
}

#[test]
fn spawned_worker_collecting_other_tests_is_an_error_naming_it() {
    let project = Project::new("collection_differs");
    let out = project
        .shoal(["-n", "2", "--start", "spawn", "-p", "no:cacheprovider"])
        .run();
    out.assert_code(3);
    let all = out.all_output();
    assert!(
        all.contains("'gw1'"),
        "the error names worker gw1\n{}",
        out.context()
    );
    assert!(
        !all.contains("'gw0'"),
        "gw0 collected what the collector did\n{}",
        out.context()
    );
    assert!(
        all.contains("test_differs.py::test_differs[3]"),
        "the error names the differing test id\n{}",
        out.context()
    );
    assert!(
        !all.contains("test_stable"),
        "only differing ids are listed\n{}",
        out.context()
    );
}

#[test]
fn spawned_worker_collecting_another_order_is_an_error() {
    let project = Project::empty();
    project.write(
        "test_order.py",
        "import os\nimport pytest\n\nIDS = ['a', 'b', 'c']\n\
         if os.environ.get('PYTEST_XDIST_WORKER') == 'gw1':\n    IDS.reverse()\n\n\
         @pytest.mark.parametrize('x', IDS)\ndef test_order(x):\n    pass\n",
    );
    let out = project
        .shoal(["-n", "2", "--start", "spawn", "-p", "no:cacheprovider"])
        .run();
    out.assert_code(3);
    let all = out.all_output();
    assert!(
        all.contains("'gw1'"),
        "the error names worker gw1\n{}",
        out.context()
    );
    assert!(
        all.contains("order"),
        "the error says the order differs\n{}",
        out.context()
    );
}

#[test]
fn a_suite_reading_its_worker_id_at_import_is_spawned_and_checked() {
    // The collection depends on PYTEST_XDIST_WORKER, read at import: a fork of the collector
    // cannot give each worker its identity, so shoal spawns the workers, and their differing
    // collections stop the run, as they stop pytest-xdist.
    let project = Project::new("collection_differs");
    let out = project
        .shoal(["-n", "2", "-p", "no:cacheprovider", "-q"])
        .run();
    out.assert_code(3);
    assert!(
        out.all_output().contains("'gw1'") && out.all_output().contains("test_differs"),
        "{}",
        out.context()
    );
    // Undistributed, nothing reads an identity: the collector's fork runs it.
    let out = project
        .shoal(["-n", "0", "-p", "no:cacheprovider", "-q", "-v"])
        .run();
    out.assert_code(0);
}

#[test]
fn live_thread_in_the_collector_makes_shoal_spawn() {
    let project = Project::new("thread_at_collection");
    let serial = project
        .pytest(["-p", "no:cacheprovider", "-rA", "-q"])
        .run();
    let out = project
        .shoal(["-n", "2", "-v", "-p", "no:cacheprovider", "-rA"])
        .run();
    let line = created_line(&out);
    assert!(
        line.starts_with("created: 2/2 workers (spawn"),
        "a live thread must make shoal spawn: {line:?}\n{}",
        out.context()
    );
    assert!(
        line.contains("thread"),
        "the reason names the thread: {line:?}\n{}",
        out.context()
    );
    // test_thread_is_alive fails in a forked worker, which has no thread: outcomes show it.
    assert_same_outcomes(&serial, &out);
}

#[test]
fn live_thread_outcomes_match_with_loadfile_too() {
    let project = Project::new("thread_at_collection");
    let serial = project
        .pytest(["-p", "no:cacheprovider", "-rA", "-q"])
        .run();
    let out = project
        .shoal([
            "-n",
            "2",
            "--dist",
            "loadfile",
            "-p",
            "no:cacheprovider",
            "-rA",
            "-q",
        ])
        .run();
    assert_same_outcomes(&serial, &out);
}
