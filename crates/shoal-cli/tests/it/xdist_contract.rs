//! What pytest-xdist promises tests and plugins, and shoal must keep: the PYTEST_XDIST_*
//! environment, the `worker_id` and `testrun_uid` fixtures, `config.workerinput`, and one
//! shared base temp directory with a `popen-gwN` directory per worker.

use std::{collections::BTreeSet, path::Path};

use crate::common::{assert_no_rendezvous_timeout, field, Output, Project};
use serde_json::Value;

const FIXTURE: &str = "xdist_contract";
const TESTS: usize = 8;

fn is_hex32(text: &str) -> bool {
    text.len() == 32 && text.chars().all(|c| c.is_ascii_hexdigit())
}

fn run(extra: &[&str]) -> (Output, Vec<Value>, Vec<String>) {
    let project = Project::new(FIXTURE);
    let mut args = vec!["-n", "2", "-p", "no:cacheprovider"];
    args.extend_from_slice(extra);
    let out = project.shoal(&args).rendezvous().run();
    out.assert_code(0);
    let records = project.take_records();
    assert_no_rendezvous_timeout(&records, &out);
    assert_eq!(
        records.len(),
        TESTS,
        "one record per test\n{}",
        out.context()
    );
    let mut argv = vec![
        crate::common::shoal_bin().to_string_lossy().into_owned(),
        "--python".into(),
    ];
    argv.push(crate::common::python().to_string_lossy().into_owned());
    argv.extend(args.iter().map(|s| s.to_string()));
    (out, records, argv)
}

fn assert_distributed_contract(out: &Output, records: &[Value], argv: &[String]) {
    let ctx = || out.context();
    let mut workers = BTreeSet::new();
    let mut uids = BTreeSet::new();
    let mut parents = BTreeSet::new();
    for r in records {
        let worker = field(r, "env_worker");
        assert!(
            worker == "gw0" || worker == "gw1",
            "PYTEST_XDIST_WORKER is {worker:?}: {r}\n{}",
            ctx()
        );
        workers.insert(worker.to_owned());
        assert_eq!(field(r, "worker_id"), worker, "worker_id fixture: {r}");
        assert_eq!(field(r, "env_count"), "2", "PYTEST_XDIST_WORKER_COUNT: {r}");
        let uid = field(r, "env_uid");
        assert!(
            is_hex32(uid),
            "PYTEST_XDIST_TESTRUNUID {uid:?} is not 32 hex digits"
        );
        assert_eq!(field(r, "testrun_uid"), uid, "testrun_uid fixture: {r}");
        uids.insert(uid.to_owned());

        let input = &r["workerinput"];
        assert!(
            input.is_object(),
            "config.workerinput missing: {r}\n{}",
            ctx()
        );
        assert_eq!(input["workerid"].as_str(), Some(worker), "workerinput: {r}");
        assert_eq!(input["workercount"].as_u64(), Some(2), "workerinput: {r}");
        assert_eq!(input["testrunuid"].as_str(), Some(uid), "workerinput: {r}");
        let mainargv: Vec<String> = input["mainargv"]
            .as_array()
            .unwrap_or_else(|| panic!("workerinput[mainargv] is not a list: {r}"))
            .iter()
            .map(|v| v.as_str().expect("mainargv holds strings").to_owned())
            .collect();
        assert_eq!(
            mainargv, argv,
            "workerinput[mainargv] is shoal's command line"
        );
        assert_eq!(
            r["has_workeroutput"],
            Value::Bool(true),
            "config.workeroutput: {r}"
        );

        let basetemp = Path::new(field(r, "basetemp"));
        assert!(basetemp.is_absolute(), "{r}");
        assert_eq!(
            basetemp.file_name().and_then(|n| n.to_str()),
            Some(format!("popen-{worker}").as_str()),
            "getbasetemp() of {worker}: {r}\n{}",
            ctx()
        );
        parents.insert(basetemp.parent().unwrap().to_owned());
        let tmp_path = Path::new(field(r, "tmp_path"));
        assert!(
            tmp_path.starts_with(basetemp),
            "tmp_path {tmp_path:?} lies outside getbasetemp() {basetemp:?}"
        );
    }
    assert_eq!(
        workers.len(),
        2,
        "both workers ran tests: {workers:?}\n{}",
        ctx()
    );
    assert_eq!(
        uids.len(),
        1,
        "one testrunuid for the whole run: {uids:?}\n{}",
        ctx()
    );
    assert_eq!(
        parents.len(),
        1,
        "every worker's basetemp has the same parent: {parents:?}\n{}",
        ctx()
    );
}

#[test]
fn forked_workers_keep_the_xdist_contract() {
    let (out, records, argv) = run(&[]);
    assert_distributed_contract(&out, &records, &argv);
}

#[test]
fn spawned_workers_keep_the_xdist_contract() {
    let (out, records, argv) = run(&["--start", "spawn"]);
    assert_distributed_contract(&out, &records, &argv);
}

#[test]
fn each_workers_keep_the_xdist_contract() {
    let project = Project::new(FIXTURE);
    let out = project
        .shoal(["-n", "2", "--dist", "each", "-p", "no:cacheprovider"])
        .run();
    out.assert_code(0);
    let records = project.take_records();
    assert_eq!(records.len(), 2 * TESTS, "{}", out.context());
    let workers: BTreeSet<&str> = records.iter().map(|r| field(r, "env_worker")).collect();
    assert_eq!(workers, BTreeSet::from(["gw0", "gw1"]), "{}", out.context());
    let uids: BTreeSet<&str> = records.iter().map(|r| field(r, "testrun_uid")).collect();
    assert_eq!(uids.len(), 1, "{}", out.context());
}

#[test]
fn n0_looks_like_plain_pytest() {
    let project = Project::new(FIXTURE);
    let out = project.shoal(["-n", "0", "-p", "no:cacheprovider"]).run();
    out.assert_code(0);
    let records = project.take_records();
    assert_eq!(records.len(), TESTS, "{}", out.context());
    let mut uids = BTreeSet::new();
    for r in &records {
        assert_eq!(
            field(r, "worker_id"),
            "master",
            "worker_id with -n 0: {r}\n{}",
            out.context()
        );
        for var in ["env_worker", "env_count", "env_uid"] {
            assert!(
                r[var].is_null(),
                "{var} is set with -n 0: {r}\n{}",
                out.context()
            );
        }
        assert!(
            r["workerinput"].is_null(),
            "workerinput exists with -n 0: {r}"
        );
        assert_eq!(r["has_workeroutput"], Value::Bool(false), "{r}");
        let basetemp = field(r, "basetemp");
        assert!(
            !basetemp.contains("popen-gw"),
            "basetemp {basetemp:?} with -n 0"
        );
        let uid = field(r, "testrun_uid");
        assert!(is_hex32(uid), "testrun_uid {uid:?}");
        uids.insert(uid.to_owned());
    }
    assert_eq!(uids.len(), 1, "one testrun_uid per session: {uids:?}");
}

/// The same fixture under real pytest-xdist, as a reference for the checks above: if this
/// fails, the checks, not shoal, are wrong. Every test venv has pytest-xdist (the
/// requirements files pin it), so its absence is a failure, never a skip.
#[test]
fn reference_pytest_xdist_keeps_the_same_contract() {
    let project = Project::new(FIXTURE);
    let probe = project.pytest(["--version", "-p", "xdist"]).run();
    assert_eq!(
        probe.code,
        Some(0),
        "pytest-xdist is missing from the test venv\n{}",
        probe.context()
    );
    let out = project
        .pytest(["-n", "2", "-p", "no:cacheprovider"])
        .rendezvous()
        .run();
    out.assert_code(0);
    let records = project.take_records();
    assert_no_rendezvous_timeout(&records, &out);
    assert_eq!(records.len(), TESTS);
    let argv: Vec<String> = records[0]["workerinput"]["mainargv"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap().to_owned())
        .collect();
    assert_distributed_contract(&out, &records, &argv);
}
