//! What a fork of the collector cannot give its workers, and how shoal stays correct: spawned
//! workers when configure-time code asks which worker it runs in (`tests/fixtures/
//! worker_configure`, a database named per worker), and when the collector holds an object
//! that must not be shared by forked processes (`tests/fixtures/fork_state`: a module-level
//! filelock or connected sqlite3 database; PostgreSQL is in `postgres.rs`). Outcomes and the
//! per-worker configuration match pytest-xdist's; `-v` says why the workers were spawned.
//! And the collector keeps its objects in its garbage collector's sight (`tests/fixtures/
//! collector_gc`), for the plugins whose terminal summaries it runs.

use crate::common::{created_line, field, Output, Project};

/// Every (worker, db_name) pair the tests recorded.
fn db_names(project: &Project, out: &Output) -> Vec<(String, String)> {
    let records = project.take_records();
    crate::common::assert_no_rendezvous_timeout(&records, out);
    records
        .iter()
        .filter(|r| r.get("nodeid").is_some())
        .map(|r| {
            (
                field(r, "worker").to_owned(),
                field(r, "db_name").to_owned(),
            )
        })
        .collect()
}

/// The forms of "which worker am I" the fixture's conftest knows, each asked in `hook`.
const FORMS: [&str; 7] = [
    "hasattr",
    "getattr",
    "try",
    "is_xdist_worker",
    "get_xdist_worker_id",
    "environ",
    "environ_get",
];

fn check_per_worker_configuration(hook: &str) {
    let project = Project::new("worker_configure");
    for form in FORMS {
        let out = project
            .shoal(["-n", "2", "-v", "-p", "no:cacheprovider"])
            .env("DB_FORM", form)
            .env("DB_HOOK", hook)
            .rendezvous()
            .run();
        out.assert_code(0);
        let line = created_line(&out);
        assert!(
            line.starts_with("created: 2/2 workers (spawn: ") && line.contains("conftest.py"),
            "{form} in {hook}: the reason names the conftest: {line:?}\n{}",
            out.context()
        );
        let names = db_names(&project, &out);
        assert_eq!(names.len(), 4, "{form} in {hook}\n{}", out.context());
        let workers: std::collections::BTreeSet<_> = names.iter().map(|(w, _)| w).collect();
        assert_eq!(workers.len(), 2, "{form} in {hook}: both workers ran tests");
        for (worker, db_name) in &names {
            assert_eq!(
                db_name,
                &format!("test_db_{worker}"),
                "{form} in {hook}: each worker configures its own database\n{}",
                out.context()
            );
        }
        let out = project
            .shoal(["-n", "0", "-p", "no:cacheprovider"])
            .env("DB_FORM", form)
            .env("DB_HOOK", hook)
            .run();
        out.assert_code(0);
        let names = db_names(&project, &out);
        assert_eq!(names.len(), 4, "{form} in {hook} under -n 0");
        assert!(
            names.iter().all(|(_, db)| db == "test_db_main"),
            "{form} in {hook}: -n 0 is plain pytest: {names:?}"
        );
    }
}

#[test]
fn configure_asking_for_its_worker_gets_a_worker_of_its_own() {
    check_per_worker_configuration("configure");
}

#[test]
fn sessionstart_asking_for_its_worker_gets_a_worker_of_its_own() {
    check_per_worker_configuration("sessionstart");
}

#[test]
fn configure_asking_nothing_still_forks() {
    let project = Project::new("worker_configure");
    let out = project
        .shoal(["-n", "2", "-v", "-p", "no:cacheprovider"])
        .env("DB_FORM", "none")
        .run();
    out.assert_code(0);
    assert_eq!(created_line(&out), "created: 2/2 workers (fork)");
}

/// Runs `tests/fixtures/fork_state` with `$FORK_STATE=kind` under shoal `-n 2 -v` and under
/// shoal `-n 0`, checks both pass as under pytest-xdist, and returns the `created:` line.
fn run_fork_state(kind: &str) -> String {
    run_fork_state_frozen(kind, false)
}

/// [`run_fork_state`], the suite freezing its objects after collecting when `freeze`.
fn run_fork_state_frozen(kind: &str, freeze: bool) -> String {
    let project = Project::new("fork_state");
    let freeze = if freeze { "1" } else { "" };
    let out = project
        .shoal(["-n", "2", "-v", "-p", "no:cacheprovider"])
        .env("FORK_STATE", kind)
        .env("FORK_STATE_FREEZE", freeze)
        .run();
    out.assert_code(0);
    assert_eq!(out.stats().get("passed"), Some(&4), "{}", out.context());
    let line = created_line(&out).to_owned();
    let out = project
        .shoal(["-n", "0", "-p", "no:cacheprovider"])
        .env("FORK_STATE", kind)
        .env("FORK_STATE_FREEZE", freeze)
        .run();
    out.assert_code(0);
    assert_eq!(out.stats().get("passed"), Some(&4), "{}", out.context());
    line
}

#[test]
fn module_level_filelock_makes_shoal_spawn_and_names_it() {
    let line = run_fork_state("filelock");
    assert!(
        line.starts_with("created: 2/2 workers (spawn: ")
            && line.contains("test_state.FILE_LOCK")
            && line.contains("filelock"),
        "{line:?}"
    );
}

#[test]
fn filelock_is_found_among_objects_the_suite_froze() {
    let line = run_fork_state_frozen("filelock", true);
    assert!(line.contains("test_state.FILE_LOCK"), "{line:?}");
}

#[test]
fn module_level_sqlite3_connection_makes_shoal_spawn_and_names_it() {
    let line = run_fork_state("sqlite");
    assert!(
        line.starts_with("created: 2/2 workers (spawn: ")
            && line.contains("test_state.DB")
            && line.contains("sqlite3.Connection"),
        "{line:?}"
    );
}

#[test]
fn nothing_fork_hostile_still_forks() {
    assert_eq!(run_fork_state("none"), "created: 2/2 workers (fork)");
}

/// The collector runs plugins' terminal summaries once the workers are done, and what they ask
/// of the garbage collector must see the objects made while collecting, as under pytest:
/// hypothesis' summary imports hypothesis there, whose `register_random` (trio registers a
/// generator made while jinja2's suite collects) warns when `gc.get_referrers` finds nothing,
/// and jinja2 makes the warning an error. A collector that froze its objects with
/// `gc.freeze()` to spare its own garbage collector printed `none` here (and jinja2 exited 3).
#[test]
fn collectors_terminal_summary_sees_referrers_of_collected_objects() {
    let project = Project::new("collector_gc");
    for workers in ["2", "0"] {
        let out = project
            .shoal(["-n", workers, "-p", "no:cacheprovider"])
            .run();
        out.assert_code(0);
        out.assert_stdout_contains("referrers of an object made while collecting: found");
    }
}
