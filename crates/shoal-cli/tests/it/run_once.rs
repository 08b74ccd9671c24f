//! Run-once fixtures (`shoal_run_once` in a conftest): one setup per run whatever the number
//! of workers, the same value everywhere, one teardown after the last use, and a failing setup
//! failing every test that needs it.

use crate::common::Project;
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
    // Each of the four errors shows the setup's own error, not a later one of pytest's.
    let shown = run
        .stdout
        .matches("RuntimeError: the service cannot start")
        .count();
    assert!(shown >= 4, "{shown} errors show it\n{}", run.context());
}

/// Runs `-k <selection>` under shoal -n 2 with both workers meeting before any run-once setup
/// (so that one sets the fixture up and the other is told how it went), and under pytest.
fn on_two_workers(selection: &str) -> (crate::common::Output, crate::common::Output) {
    let project = Project::new("run_once_fixture");
    let args = ["-q", "-rsx", "-k", selection];
    let shoal = project.shoal_n2(&args).rendezvous().run();
    let workers: std::collections::BTreeSet<String> = project
        .take_records()
        .iter()
        .filter(|r| r["nodeid"] == "session start")
        .map(|r| r["worker"].to_string())
        .collect();
    assert_eq!(
        workers.len(),
        2,
        "both workers must take part\n{}",
        shoal.context()
    );
    let pytest = project.serial(&args).run();
    (shoal, pytest)
}

#[test]
fn a_run_once_value_that_is_not_json_errors_on_every_worker() {
    let (shoal, _) = on_two_workers("unshareable");
    shoal.assert_code(1);
    assert_eq!(shoal.stats().get("error"), Some(&4), "{}", shoal.context());
    assert!(!shoal.stats().contains_key("passed"), "{}", shoal.context());
    let message = "run-once fixture 'unshareable' returned a value of type 'object', which \
                   shoal cannot pass to other workers: it must be JSON-serializable";
    let failures = shoal.stdout.matches(message).count();
    assert!(
        failures >= 4,
        "every error names the fixture and the type ({failures} do)\n{}",
        shoal.context()
    );
}

#[test]
fn a_skip_in_a_run_once_setup_skips_its_tests_on_every_worker_as_pytest_does() {
    let (shoal, pytest) = on_two_workers("skipped_service");
    pytest.assert_code(0);
    shoal.assert_code(0);
    assert_eq!(shoal.stats(), pytest.stats(), "{}", shoal.context());
    let reasons = |out: &crate::common::Output| -> Vec<String> {
        out.stdout
            .lines()
            .filter(|l| l.starts_with("SKIPPED"))
            .map(|l| l.rsplit(": ").next().unwrap_or("").to_owned())
            .collect()
    };
    assert_eq!(reasons(&shoal), reasons(&pytest), "{}", shoal.context());
    assert_eq!(reasons(&shoal), vec!["no service on this machine"]);
}

#[test]
fn an_xfail_in_a_run_once_setup_xfails_its_tests_on_every_worker_as_pytest_does() {
    let (shoal, pytest) = on_two_workers("xfail_service");
    pytest.assert_code(0);
    shoal.assert_code(0);
    assert_eq!(shoal.stats(), pytest.stats(), "{}", shoal.context());
    assert_eq!(
        shoal.stats().get("xfailed"),
        Some(&4),
        "{}",
        shoal.context()
    );
}
