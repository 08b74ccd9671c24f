//! Run-once fixtures (`shoal_run_once` in a conftest): one setup per run whatever the number
//! of workers, the same value everywhere, one teardown after the last use, and a failing setup
//! failing every test that needs it.

mod common;

use common::Project;
use serde_json::Value;

fn events<'a>(records: &'a [Value], event: &str) -> Vec<&'a Value> {
    records.iter().filter(|r| r["event"] == event).collect()
}

#[test]
fn a_run_once_fixture_is_set_up_once_and_torn_down_after_its_last_use() {
    let project = Project::new("run_once_fixture");
    for workers in ["3", "0"] {
        let run = project
            .shoal(["-n", workers, "-q", "-k", "uses_service"])
            .run();
        run.assert_code(0);
        let records = project.take_records();
        let setups = events(&records, "setup");
        let teardowns = events(&records, "teardown");
        let uses = events(&records, "use");
        assert_eq!(setups.len(), 1, "-n {workers}: {records:?}");
        assert_eq!(teardowns.len(), 1, "-n {workers}: {records:?}");
        assert_eq!(uses.len(), 9, "-n {workers}: {records:?}");
        let owner = &setups[0]["pid"];
        assert!(uses.iter().all(|u| &u["owner"] == owner), "{records:?}");
        let last_use = uses
            .iter()
            .map(|u| u["at"].as_f64().unwrap())
            .fold(0.0, f64::max);
        assert!(
            teardowns[0]["at"].as_f64().unwrap() >= last_use,
            "{records:?}"
        );
        if workers == "3" {
            let used_by: std::collections::BTreeSet<_> =
                uses.iter().map(|u| u["worker"].to_string()).collect();
            assert!(
                used_by.len() > 1,
                "the value must reach other workers: {records:?}"
            );
        }
    }
}

#[test]
fn without_shoal_it_is_a_plain_session_fixture() {
    let project = Project::new("run_once_fixture");
    project
        .pytest(["-p", "no:xdist", "-q", "-k", "uses_service"])
        .run()
        .assert_code(0);
    assert_eq!(events(&project.take_records(), "setup").len(), 1);
}

#[test]
fn a_failing_run_once_setup_errors_every_test_that_needs_it() {
    let project = Project::new("run_once_fixture");
    let run = project.shoal(["-n", "2", "-q", "-k", "broken"]).run();
    run.assert_code(1);
    assert_eq!(run.stats().get("error"), Some(&4), "{}", run.context());
    assert!(
        run.all_output().contains("the service cannot start"),
        "{}",
        run.context()
    );
}
