//! Fixture setup and teardown order on workers. The `module_teardown` fixture logs
//! session/module fixture setup and teardown and every test, one JSON line each, in order.

use std::collections::BTreeMap;

use crate::common::{field, file_of, Output, Project};
use serde_json::Value;

/// (event, what) in the order one worker logged them.
type Log = Vec<(String, String)>;

fn per_worker(records: &[Value]) -> BTreeMap<String, Log> {
    let mut logs: BTreeMap<String, Log> = BTreeMap::new();
    for r in records {
        logs.entry(field(r, "worker").to_owned())
            .or_default()
            .push((field(r, "event").to_owned(), field(r, "what").to_owned()));
    }
    logs
}

fn module_of_test(nodeid: &str) -> String {
    file_of(nodeid).trim_end_matches(".py").to_owned()
}

/// On each worker: the session fixture wraps everything; each module's fixture is set up
/// once, before the module's first test, and torn down once, right after its last test and
/// before anything of another module.
fn assert_module_blocks(out: &Output, logs: &BTreeMap<String, Log>) {
    let ctx = || format!("logs: {logs:#?}\n{}", out.context());
    let mut modules_seen: BTreeMap<String, String> = BTreeMap::new();
    for (worker, log) in logs {
        assert_eq!(
            log.first().map(|e| e.0.as_str()),
            Some("session_setup"),
            "{worker}: the session fixture comes first\n{}",
            ctx()
        );
        assert_eq!(
            log.last().map(|e| e.0.as_str()),
            Some("session_teardown"),
            "{worker}: the session fixture is torn down last\n{}",
            ctx()
        );
        let inner = &log[1..log.len() - 1];
        let mut open: Option<String> = None;
        for (event, what) in inner {
            match (event.as_str(), &open) {
                ("setup", None) => {
                    if let Some(other) = modules_seen.insert(what.clone(), worker.clone()) {
                        panic!(
                            "module {what} set up on {other} and again on {worker}\n{}",
                            ctx()
                        );
                    }
                    open = Some(what.clone());
                }
                ("test", Some(module)) => assert_eq!(
                    &module_of_test(what),
                    module,
                    "{worker}: test {what} ran while {module}'s fixture was up\n{}",
                    ctx()
                ),
                ("teardown", Some(module)) => {
                    assert_eq!(what, module, "{worker}: wrong teardown\n{}", ctx());
                    open = None;
                }
                _ => panic!(
                    "{worker}: unexpected {event} {what} (open module: {open:?})\n{}",
                    ctx()
                ),
            }
        }
        assert!(
            open.is_none(),
            "{worker}: {open:?} never torn down\n{}",
            ctx()
        );
    }
    assert_eq!(
        modules_seen.len(),
        3,
        "every module's fixture was set up: {modules_seen:?}\n{}",
        ctx()
    );
}

#[test]
fn loadfile_sets_up_and_tears_down_each_module_fixture_once() {
    let project = Project::new("module_teardown");
    let out = project
        .shoal(["-n", "2", "--dist", "loadfile", "-p", "no:cacheprovider"])
        .run();
    out.assert_code(0);
    let records = project.take_records();
    let tests = records
        .iter()
        .filter(|r| field(r, "event") == "test")
        .count();
    assert_eq!(tests, 15, "{}", out.context());
    assert_module_blocks(&out, &per_worker(&records));
}

#[test]
fn loadfile_on_one_worker_tears_down_each_module_before_the_next() {
    // All three modules on one worker: teardown must follow each module's last test.
    let project = Project::new("module_teardown");
    let out = project
        .shoal(["-n", "1", "--dist", "loadfile", "-p", "no:cacheprovider"])
        .run();
    out.assert_code(0);
    let logs = per_worker(&project.take_records());
    assert_eq!(logs.len(), 1, "{}", out.context());
    assert_module_blocks(&out, &logs);
}

#[test]
fn spawned_loadfile_workers_tear_down_in_order_too() {
    let project = Project::new("module_teardown");
    let out = project
        .shoal([
            "-n",
            "2",
            "--dist",
            "loadfile",
            "--start",
            "spawn",
            "-p",
            "no:cacheprovider",
        ])
        .run();
    out.assert_code(0);
    assert_module_blocks(&out, &per_worker(&project.take_records()));
}

#[test]
fn n0_orders_fixtures_like_serial_pytest() {
    let project = Project::new("module_teardown");
    let serial = project.pytest(["-p", "no:cacheprovider"]).run();
    serial.assert_code(0);
    let expected: Vec<(String, String)> = project
        .take_records()
        .iter()
        .map(|r| (field(r, "event").to_owned(), field(r, "what").to_owned()))
        .collect();
    let out = project.shoal(["-n", "0", "-p", "no:cacheprovider"]).run();
    out.assert_code(0);
    let actual: Vec<(String, String)> = project
        .take_records()
        .iter()
        .map(|r| (field(r, "event").to_owned(), field(r, "what").to_owned()))
        .collect();
    assert_eq!(actual, expected, "{}", out.context());
}
