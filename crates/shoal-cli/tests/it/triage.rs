//! `--triage` on the `pollution` fixture: after the run, each failed test runs again after its
//! worker process's sequence, then alone, and is called FLAKY, POLLUTED or FAILED in the
//! summary, the JUnit file and the events. One worker, each file's tests in order (`-n 1
//! --dist loadfile`), so every round runs alone and every verdict is the same on every run.

use std::{collections::BTreeMap, fs, time::Duration};

use serde_json::Value;

use crate::{
    common::{field, python, Output, Project},
    config::origin,
    faults::{wait_for_records, Watchdog},
};

const FIXTURE: &str = "pollution";

const ONE_BY_FILE: [&str; 4] = ["-n", "1", "--dist", "loadfile"];

/// The flaky test's counter, outside the project, set so that the next run is its third: the
/// run fails it, and the next two runs of it pass.
fn flaky_counter(project: &Project) -> std::path::PathBuf {
    let counter = project.root().join("flaky-counter");
    fs::write(&counter, "2").unwrap();
    counter
}

/// The triage section's lines: node id -> the rest of its line.
fn triage_lines(out: &Output) -> BTreeMap<String, String> {
    let lines: Vec<&str> = out.stdout.lines().collect();
    let Some(start) = lines.iter().position(|l| l.contains("= triage =")) else {
        return BTreeMap::new();
    };
    lines[start + 1..]
        .iter()
        .take_while(|l| !l.starts_with('='))
        .filter_map(|l| {
            let (word, rest) = l.split_once(' ')?;
            let (nodeid, why) = rest.split_once(" - ")?;
            Some((nodeid.to_owned(), format!("{word} - {why}")))
        })
        .collect()
}

/// How often each test ran, in the run and its rounds, from the conftest's records.
fn runs_per_test(project: &Project) -> BTreeMap<String, usize> {
    let mut runs = BTreeMap::new();
    for record in project.take_records() {
        *runs.entry(field(&record, "nodeid").to_owned()).or_default() += 1;
    }
    runs
}

/// The `shoal.triage` property of each testcase that has one: `file::name` -> value.
fn junit_verdicts(path: &std::path::Path) -> BTreeMap<String, String> {
    let xml = fs::read_to_string(path).unwrap();
    let mut found = BTreeMap::new();
    for case in xml.split("<testcase ").skip(1) {
        let attribute = |name: &str| {
            let key = format!(" {name}=\"");
            let start = format!(" {case}").find(&key).unwrap() + key.len() - 1;
            case[start..][..case[start..].find('"').unwrap()].to_owned()
        };
        let end = case.find("</testcase>").unwrap_or(case.len());
        let marker = r#"<property name="shoal.triage" value=""#;
        if let Some(at) = case[..end].find(marker) {
            let value = &case[at + marker.len()..];
            let value = &value[..value.find('"').unwrap()];
            let key = format!("{}::{}", attribute("classname"), attribute("name"));
            found.insert(key, value.to_owned());
        }
    }
    found
}

#[test]
fn each_failed_test_is_classified_and_the_run_still_fails() {
    let project = Project::new(FIXTURE);
    let counter = flaky_counter(&project);
    let junit = project.root().join("junit.xml");
    let events = project.root().join("events.jsonl");
    let mut args: Vec<String> = ONE_BY_FILE.map(String::from).to_vec();
    args.extend([
        "--triage".into(),
        format!("--junitxml={}", junit.display()),
        "--report-json".into(),
        events.display().to_string(),
        "test_flaky.py".into(),
        "test_env.py".into(),
    ]);
    let out = project
        .shoal(&args)
        .env("SHOAL_FLAKY_COUNTER", &counter)
        .run();
    // A test that failed failed the run, whatever triage found.
    out.assert_code(1);
    assert_eq!(
        out.summary_lines()
            .iter()
            .filter(|l| l.starts_with("FAILED "))
            .count(),
        3,
        "{}",
        out.context()
    );
    let stats = out.stats();
    assert_eq!(stats.get("failed"), Some(&3), "{}", out.context());

    let record = runs_dir_record(&project);
    let run_id = field(&record, "run_id");
    let bisect = format!("shoal bisect test_env.py::test_env_victim --run {run_id}");
    let expected: BTreeMap<String, String> = [
        (
            "test_flaky.py::test_flaky",
            "FLAKY - failed once, passed when the same sequence ran again".to_owned(),
        ),
        (
            "test_flaky.py::test_alone_fails",
            "FAILED - fails alone".to_owned(),
        ),
        (
            "test_env.py::test_env_victim",
            format!("POLLUTED - passes alone; find what pollutes it: {bisect}"),
        ),
    ]
    .map(|(k, v)| (k.to_owned(), v))
    .into();
    assert_eq!(triage_lines(&out), expected, "{}", out.context());

    // Each failed test's round ran its process's sequence up to it, and those that failed
    // again ran alone: each test ran once in the run, plus once per sequence it is in, plus
    // once alone.
    let ran: Vec<&str> = record["processes"][0]["tests"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| field(t, "nodeid"))
        .collect();
    let mut expected_runs: BTreeMap<String, usize> =
        ran.iter().map(|id| ((*id).to_owned(), 1)).collect();
    for (failed, line) in &expected {
        let upto = ran.iter().position(|id| id == failed).unwrap();
        for id in &ran[..=upto] {
            *expected_runs.get_mut(*id).unwrap() += 1;
        }
        if !line.starts_with("FLAKY") {
            *expected_runs.get_mut(failed).unwrap() += 1;
        }
    }
    assert_eq!(runs_per_test(&project), expected_runs);

    // The rounds are not the run's: the record holds only the run's one process.
    let processes = record["processes"].as_array().unwrap();
    assert_eq!(processes.len(), 1, "{record}");

    let verdicts: BTreeMap<String, String> = [
        ("test_flaky::test_flaky", "flaky"),
        ("test_flaky::test_alone_fails", "failed"),
        ("test_env::test_env_victim", "polluted"),
    ]
    .map(|(k, v)| (k.to_owned(), v.to_owned()))
    .into();
    assert_eq!(junit_verdicts(&junit), verdicts);

    let lines: Vec<Value> = fs::read_to_string(&events)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let tests = lines.iter().filter(|e| e["event"] == "test").count();
    assert_eq!(tests, ran.len(), "the run's tests only, once each");
    let mut triage: Vec<(&str, &str, &Value)> = lines
        .iter()
        .filter(|e| e["event"] == "triage")
        .map(|e| (field(e, "nodeid"), field(e, "verdict"), &e["bisect"]))
        .collect();
    triage.sort_by_key(|(nodeid, ..)| *nodeid);
    assert_eq!(
        triage,
        [
            (
                "test_env.py::test_env_victim",
                "polluted",
                &Value::String(bisect.clone())
            ),
            ("test_flaky.py::test_alone_fails", "failed", &Value::Null),
            ("test_flaky.py::test_flaky", "flaky", &Value::Null),
        ]
    );
    assert_eq!(lines.last().unwrap()["event"], "run_end");
    assert_eq!(lines.last().unwrap()["exit_code"], 1);

    // The command it printed finds the polluter.
    let words: Vec<&str> = bisect.split(' ').collect();
    let python = python();
    let mut argv = vec![words[1], "--python", python.to_str().unwrap()];
    argv.extend(&words[2..]);
    let found = project
        .shoal_raw(argv)
        .env("SHOAL_FLAKY_COUNTER", &counter)
        .run();
    found.assert_code(0);
    found.assert_stderr_contains("POLLUTED: test_env.py::test_env_victim fails after these 1");
    found.assert_stderr_contains("\n    test_env.py::test_env_polluter\n");
}

/// The one record the project's cache holds.
fn runs_dir_record(project: &Project) -> Value {
    let dir = project.path.join(".pytest_cache/shoal/runs");
    let mut files: Vec<_> = fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    assert_eq!(files.len(), 1, "one run, one record: {files:?}");
    serde_json::from_str(&fs::read_to_string(files.pop().unwrap()).unwrap()).unwrap()
}

#[test]
fn a_passing_run_is_not_triaged_and_a_run_without_the_flag_is_not_either() {
    let project = Project::new(FIXTURE);
    let out = project
        .shoal(["-n", "1", "--triage", "test_env.py::test_env_victim"])
        .run();
    out.assert_code(0);
    assert!(!out.all_output().contains("triage"), "{}", out.context());
    project.take_records();

    // Negative control: the same failures without --triage run once each.
    let plain = project
        .shoal(ONE_BY_FILE.iter().chain(&["test_flaky.py"]))
        .run();
    plain.assert_code(1);
    assert!(
        !plain.all_output().contains("triage"),
        "{}",
        plain.context()
    );
    assert!(runs_per_test(&project).values().all(|&n| n == 1));
}

#[test]
fn triage_from_tool_shoal_and_where_it_cannot_run() {
    let project = Project::new(FIXTURE);
    project.write("pyproject.toml", "[tool.shoal]\ntriage = true\n");
    let config = project.shoal(["--show-config"]).run();
    config.assert_code(0);
    let origin = origin(&config.stdout, "triage", "true");
    assert!(
        origin.is_some_and(|o| o.starts_with("[tool.shoal]")),
        "{}",
        config.context()
    );
    let out = project
        .shoal(["-n", "1", "test_flaky.py::test_alone_fails"])
        .run();
    out.assert_code(1);
    assert_eq!(
        triage_lines(&out)
            .get("test_flaky.py::test_alone_fails")
            .map(String::as_str),
        Some("FAILED - fails alone"),
        "{}",
        out.context()
    );
    project.take_records();

    // Under -n 0 the one worker is pytest's own session: triage says it is skipped.
    let serial = project
        .shoal(["-n", "0", "test_flaky.py::test_alone_fails"])
        .run();
    serial.assert_code(1);
    serial.assert_stderr_contains("shoal: note: --triage skipped: -n 0 runs the tests");
    assert_eq!(
        runs_per_test(&project)["test_flaky.py::test_alone_fails"],
        1
    );

    // A queue node refuses it before it starts anything.
    let queue = project
        .shoal(["--queue", "redis://127.0.0.1:1", "--build", "b", "-n", "1"])
        .run();
    queue.assert_code(4);
    queue.assert_stderr_contains("failed to use --queue with --triage");
}

#[test]
fn at_most_twenty_failed_tests_are_triaged_and_the_rest_is_counted() {
    let project = Project::empty();
    project.write(
        "test_many.py",
        "import pytest\n\n\n@pytest.mark.parametrize('n', range(21))\ndef test_fails(n):\n    assert n < 0\n",
    );
    let out = project.shoal(["-n", "2", "--triage"]).run();
    out.assert_code(1);
    let verdicts = triage_lines(&out);
    assert_eq!(verdicts.len(), 20, "{}", out.context());
    assert!(verdicts.values().all(|v| v == "FAILED - fails alone"));
    assert!(
        out.stdout
            .contains("\ntriage: 1 failed test not triaged (at most 20 are)\n"),
        "{}",
        out.context()
    );
}

#[test]
fn ctrl_c_during_triage_interrupts_the_run() {
    let project = Project::empty();
    // Fails in the run; its triage round, the second run of it, waits to be interrupted.
    project.write(
        "test_hang.py",
        "import json, os, time\n\n\ndef test_hangs_when_run_again():\n    path = os.environ['SHOAL_RECORD']\n    again = os.path.exists(path)\n    with open(path, 'a') as f:\n        f.write(json.dumps({'pid': os.getpid()}) + '\\n')\n    if again:\n        time.sleep(600)\n    assert False\n",
    );
    let running = project
        .shoal(["-n", "1", "--triage", "--report-json", "events.jsonl"])
        .start();
    let watchdog = Watchdog::new(running.pid(), Duration::from_secs(120));
    wait_for_records(&project, Duration::from_secs(60), "the triage round", |r| {
        r.len() == 2
    });
    running.signal(libc::SIGINT);
    let out = running.wait();
    assert!(!watchdog.disarm(), "the run did not end\n{}", out.context());
    out.assert_code(2);
    out.assert_stdout_contains("KeyboardInterrupt");
    assert!(!out.stdout.contains("= triage ="), "{}", out.context());
    let events = fs::read_to_string(project.path.join("events.jsonl")).unwrap();
    let last: Value = serde_json::from_str(events.lines().last().unwrap()).unwrap();
    assert_eq!(last["event"], "run_end");
    assert_eq!(last["counts"]["failed"], 1, "the run's one failure: {last}");
}
