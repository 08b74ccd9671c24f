//! The run's record, `shoal replay` and `shoal bisect`, on the `pollution` fixture: known
//! polluters (an environment variable, a module-level cache, a function replaced by hand, a
//! file left in the working directory, a pair that only breaks their victim together), a test
//! that fails alone and a flaky one. Each file's tests share a worker (`--dist loadfile`), so
//! every polluter runs before its victim in the same process. Its conftest records `{nodeid,
//! worker, pid}` for every test, which says what each process really ran.

use std::{
    collections::BTreeMap,
    fs,
    path::{Path, PathBuf},
};

use serde_json::Value;

use crate::{
    common::{field, joined, plugin_shoal, plugins_python, python, shoal_bin, Output, Project},
    plugins::{by_nodeid, header_seed},
};

const FIXTURE: &str = "pollution";

/// Two workers, each file's tests on one of them.
const TWO_BY_FILE: [&str; 4] = ["-n", "2", "--dist", "loadfile"];

/// `shoal <subcommand> --python <python> <args>`.
pub(crate) fn sub(project: &Project, subcommand: &str, args: &[&str]) -> Output {
    let python = python();
    let mut argv = vec![subcommand, "--python", python.to_str().unwrap()];
    argv.extend(args);
    project.shoal_raw(argv).run()
}

fn runs_dir(project: &Project) -> PathBuf {
    project.path.join(".pytest_cache/shoal/runs")
}

/// The records kept, oldest first.
fn records(dir: &Path) -> Vec<(String, Value)> {
    let mut files: Vec<PathBuf> = match fs::read_dir(dir) {
        Ok(entries) => entries.map(|e| e.unwrap().path()).collect(),
        Err(_) => Vec::new(),
    };
    files.sort();
    files
        .into_iter()
        .map(|path| {
            let text = fs::read_to_string(&path).unwrap();
            let id = path.file_stem().unwrap().to_str().unwrap().to_owned();
            (id, serde_json::from_str(&text).expect("a record is JSON"))
        })
        .collect()
}

/// The one record a project's cache holds.
fn only_record(project: &Project) -> Value {
    let mut kept = records(&runs_dir(project));
    assert_eq!(kept.len(), 1, "one run, one record");
    kept.pop().unwrap().1
}

/// Each recorded process's node ids: (worker, nodeids).
pub(crate) fn processes(record: &Value) -> Vec<(String, Vec<String>)> {
    record["processes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| {
            let tests = p["tests"].as_array().unwrap();
            let ids = tests
                .iter()
                .map(|t| field(t, "nodeid").to_owned())
                .collect();
            (field(p, "worker").to_owned(), ids)
        })
        .collect()
}

/// What each process ran, from the conftest's records, by pid in order of first sight.
pub(crate) fn ran_by_process(records: &[Value]) -> Vec<(String, Vec<String>)> {
    let mut order: Vec<u64> = Vec::new();
    let mut by_pid: BTreeMap<u64, (String, Vec<String>)> = BTreeMap::new();
    for r in records.iter().filter(|r| r.get("nodeid").is_some()) {
        let pid = r["pid"].as_u64().unwrap();
        if !order.contains(&pid) {
            order.push(pid);
        }
        let entry = by_pid
            .entry(pid)
            .or_insert_with(|| (field(r, "worker").to_owned(), Vec::new()));
        entry.1.push(field(r, "nodeid").to_owned());
    }
    order
        .into_iter()
        .map(|pid| by_pid.remove(&pid).unwrap())
        .collect()
}

/// Records a run of the whole fixture on one worker (every test in one process, each file's in
/// order), which fails the victims.
fn record_one_worker(project: &Project) -> Value {
    let out = project.shoal(["-n", "1", "--dist", "loadfile"]).run();
    out.assert_code(1);
    project.take_records();
    only_record(project)
}

/// Per worker, the record's sequence is what --report-json says it ran, in order, with
/// outcomes, each worker in one process that exited; returns it.
#[track_caller]
fn assert_record_is_the_events(
    record: &Value,
    events: &Path,
    out: &Output,
) -> BTreeMap<String, Vec<(String, String)>> {
    let events = fs::read_to_string(events).unwrap();
    let mut reported: BTreeMap<String, Vec<(String, String)>> = BTreeMap::new();
    for line in events.lines() {
        let event: Value = serde_json::from_str(line).unwrap();
        if event["event"] == "test" {
            reported
                .entry(field(&event, "worker").to_owned())
                .or_default()
                .push((
                    field(&event, "nodeid").to_owned(),
                    field(&event, "outcome").to_owned(),
                ));
        }
    }
    let mut recorded: BTreeMap<String, Vec<(String, String)>> = BTreeMap::new();
    for process in record["processes"].as_array().unwrap() {
        assert_eq!(process["process"], 0, "no worker was restarted");
        assert!(field(process, "end").starts_with("exit code"), "{process}");
        for test in process["tests"].as_array().unwrap() {
            assert_eq!(test["attempt"], 1);
            assert!(test["duration"].as_f64().unwrap() >= 0.0);
            recorded
                .entry(field(process, "worker").to_owned())
                .or_default()
                .push((
                    field(test, "nodeid").to_owned(),
                    field(test, "outcome").to_owned(),
                ));
        }
    }
    assert_eq!(recorded, reported, "{}", out.context());
    recorded
}

#[test]
fn the_record_holds_what_each_worker_process_ran_in_order() {
    let project = Project::new(FIXTURE);
    let out = project
        .shoal(joined(&TWO_BY_FILE, &["--report-json=events.jsonl"]))
        .run();
    out.assert_code(1);
    let record = only_record(&project);
    assert_eq!(record["version"], 1);
    assert_eq!(record["dist"], "loadfile");
    assert_eq!(record["workers"], 2);
    assert_eq!(record["distributed"], true);
    assert_eq!(record["seed"], Value::Null, "no pytest-randomly here");
    assert!(record["python_version"].as_str().unwrap().starts_with('3'));
    assert!(!field(&record, "pytest_version").is_empty());
    assert_eq!(record["shoal_version"], env!("CARGO_PKG_VERSION"));
    assert_eq!(
        Path::new(field(&record, "cwd")).canonicalize().unwrap(),
        project.path.canonicalize().unwrap()
    );
    let argv: Vec<&str> = record["argv"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a.as_str().unwrap())
        .collect();
    assert!(argv.ends_with(&joined(&TWO_BY_FILE, &["--report-json=events.jsonl"])));
    let recorded = assert_record_is_the_events(&record, &project.path.join("events.jsonl"), &out);
    assert_eq!(recorded.len(), 2, "both workers ran tests");
    // And what each process really ran, by pid.
    let ran = ran_by_process(&project.take_records());
    let mut expected: Vec<(String, Vec<String>)> = processes(&record);
    let mut ran_sorted = ran.clone();
    expected.sort();
    ran_sorted.sort();
    assert_eq!(ran_sorted, expected);
}

#[test]
fn a_shard_records_what_it_ran() {
    let project = Project::new(FIXTURE);
    let out = project
        .shoal(joined(
            &TWO_BY_FILE,
            &["--shard", "1/2", "--report-json=events.jsonl"],
        ))
        .run();
    let record = only_record(&project);
    let recorded = assert_record_is_the_events(&record, &project.path.join("events.jsonl"), &out);
    let tests: usize = recorded.values().map(Vec::len).sum();
    assert!(tests > 0 && tests < 53, "about half of the suite: {tests}");
}

#[test]
fn a_recycled_worker_s_processes_are_recorded_apart() {
    let project = Project::new(FIXTURE);
    project
        .shoal(["-n", "1", "--dist", "loadfile", "--max-worker-tests", "7"])
        .run()
        .assert_code(1);
    let record = only_record(&project);
    let ran = ran_by_process(&project.take_records());
    assert!(ran.len() > 2, "recycled every 7 tests: {ran:?}");
    assert_eq!(processes(&record), ran);
    let numbers: Vec<u64> = record["processes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["process"].as_u64().unwrap())
        .collect();
    assert_eq!(numbers, (0..ran.len() as u64).collect::<Vec<_>>());
}

#[test]
fn the_last_ten_runs_are_kept_where_pytest_s_cache_is() {
    let project = Project::new(FIXTURE);
    for _ in 0..11 {
        project
            .shoal(["-n", "0", "test_patch.py"])
            .run()
            .assert_code(1);
    }
    let kept = records(&runs_dir(&project));
    assert_eq!(kept.len(), 10);
    // The ids sort as the runs started, and the oldest went.
    let started: Vec<u64> = kept
        .iter()
        .map(|(_, r)| r["started"].as_u64().unwrap())
        .collect();
    assert!(started.windows(2).all(|w| w[0] <= w[1]), "{started:?}");
    for (id, record) in &kept {
        assert_eq!(record["run_id"], id.as_str());
        assert_eq!(record["distributed"], false, "-n 0");
    }
    // Without pytest's cache nothing is kept; with another cache directory, there.
    let other = project.root().join("elsewhere");
    project
        .shoal(["-n", "0", "test_patch.py", "-p", "no:cacheprovider"])
        .run()
        .assert_code(1);
    let cache_dir = format!("cache_dir={}", other.display());
    project
        .shoal(["-n", "0", "test_patch.py", "-o", cache_dir.as_str()])
        .run()
        .assert_code(1);
    assert_eq!(records(&runs_dir(&project)).len(), 10);
    assert_eq!(records(&other.join("shoal/runs")).len(), 1);
}

#[test]
fn replay_runs_the_victim_s_process_again_up_to_it_and_it_fails_again() {
    let project = Project::new(FIXTURE);
    project.shoal(TWO_BY_FILE).run().assert_code(1);
    project.take_records();
    let record = only_record(&project);
    let victim = "test_env.py::test_env_victim";
    let (worker, sequence) = processes(&record)
        .into_iter()
        .find(|(_, ids)| ids.iter().any(|id| id == victim))
        .unwrap();
    let upto = sequence.iter().position(|id| id == victim).unwrap() + 1;

    let out = sub(&project, "replay", &["--test", victim]);
    out.assert_code(1);
    out.assert_stderr_contains(&format!("{victim} failed again: REPRODUCED"));
    let ran = ran_by_process(&project.take_records());
    // One process, with the recorded worker's id, ran the sequence up to the victim, no more.
    assert_eq!(
        ran,
        [(worker.clone(), sequence[..upto].to_vec())],
        "{}",
        out.context()
    );

    // The first failure is the default target; a passing target is not reproduced.
    let out = sub(&project, "replay", &["--worker", &worker]);
    out.assert_stderr_contains("REPRODUCED");
    project.take_records();
    let passing = &sequence[0];
    let out = sub(&project, "replay", &["--test", passing]);
    out.assert_code(0);
    out.assert_stderr_contains(&format!("{passing} passed: NOT REPRODUCED"));
    assert_eq!(
        ran_by_process(&project.take_records()),
        [(worker, vec![passing.clone()])]
    );

    // The same from a record file copied anywhere.
    let copy = project.root().join("artifact.json");
    let (id, _) = records(&runs_dir(&project)).pop().unwrap();
    fs::copy(runs_dir(&project).join(format!("{id}.json")), &copy).unwrap();
    fs::remove_dir_all(runs_dir(&project)).unwrap();
    let out = sub(
        &project,
        "replay",
        &["--record", copy.to_str().unwrap(), "--test", victim],
    );
    out.assert_code(1);
    out.assert_stderr_contains("REPRODUCED");
}

/// The rounds a bisect's verdict line says it took, and the tests it says ran before.
fn rounds_and_before(out: &Output) -> (usize, usize) {
    let line = out
        .stderr
        .lines()
        .find(|l| l.starts_with("shoal: bisect: POLLUTED"))
        .unwrap_or_else(|| panic!("no verdict\n{}", out.context()));
    let number_before = |marker: &str| -> usize {
        let head = &line[..line.find(marker).unwrap()];
        head.rsplit(' ')
            .next()
            .unwrap()
            .trim_start_matches('(')
            .parse()
            .unwrap()
    };
    (
        number_before(" rounds)"),
        number_before(" tests that ran before"),
    )
}

/// The culprits a bisect printed, and its reproduce command's words after `shoal`.
fn culprits_and_command(out: &Output) -> (Vec<String>, Vec<String>) {
    let culprits = out
        .stderr
        .lines()
        .skip_while(|l| !l.starts_with("shoal: bisect: POLLUTED"))
        .skip(1)
        .take_while(|l| l.starts_with("    "))
        .map(|l| l.trim().to_owned())
        .collect();
    let command = out
        .stderr
        .lines()
        .find_map(|l| l.strip_prefix("shoal: reproduce with: shoal "))
        .unwrap_or_else(|| panic!("no command\n{}", out.context()));
    (culprits, command.split(' ').map(str::to_owned).collect())
}

#[test]
fn bisect_finds_each_polluter_within_its_round_budget_and_a_command_that_fails() {
    let project = Project::new(FIXTURE);
    let record = record_one_worker(&project);
    // The reproducing runs below record runs of their own: the bisects stay with the first.
    let run = field(&record, "run_id");
    let cases: [(&str, &[&str], &[&str]); 5] = [
        (
            "test_env.py::test_env_victim",
            &["test_env.py::test_env_polluter"],
            &[],
        ),
        (
            "test_cache.py::test_cache_victim",
            &["test_cache.py::test_cache_polluter"],
            &[],
        ),
        (
            "test_patch.py::test_patch_victim",
            &["test_patch.py::test_patch_polluter"],
            &[],
        ),
        (
            "test_cwd.py::test_cwd_victim",
            &["test_cwd.py::test_cwd_polluter"],
            &[],
        ),
        // Rounds two at a time: the pair is found all the same.
        (
            "test_pair.py::test_pair_victim",
            &[
                "test_pair.py::test_pair_first",
                "test_pair.py::test_pair_second",
            ],
            &["-n", "2"],
        ),
    ];
    for (victim, expected, options) in cases {
        let mut args = vec![victim, "--run", run];
        args.extend(options);
        let out = sub(&project, "bisect", &args);
        out.assert_code(0);
        let (culprits, command) = culprits_and_command(&out);
        assert_eq!(culprits, expected, "{}", out.context());
        let (rounds, before) = rounds_and_before(&out);
        let log2 = (before as f64).log2().ceil() as usize;
        // Two pre-checks, then halving for one culprit; a pair costs more, within ddmin's bound.
        let budget = if expected.len() == 1 {
            2 + 2 * log2
        } else {
            2 + 4 * before
        };
        assert!(
            rounds <= budget,
            "{victim}: {rounds} rounds for {before} tests\n{}",
            out.context()
        );
        let mut words: Vec<&str> = vec!["-n", "0"];
        words.extend(expected);
        words.push(victim);
        assert_eq!(command, words);
        project.take_records();

        // The command fails the victim; the victim alone passes.
        let reproduced = project.shoal(&command).run();
        reproduced.assert_code(1);
        assert!(reproduced
            .summary_lines()
            .iter()
            .any(|l| l.starts_with(&format!("FAILED {victim}"))));
        project.shoal(["-n", "0", victim]).run().assert_code(0);
    }
}

#[test]
fn a_victim_that_fails_alone_is_no_pollution() {
    let project = Project::new(FIXTURE);
    record_one_worker(&project);
    let out = sub(&project, "bisect", &["test_flaky.py::test_alone_fails"]);
    out.assert_code(1);
    out.assert_stderr_contains(
        "FAILED: test_flaky.py::test_alone_fails fails when run alone, so it is not pollution",
    );
    assert!(!out.stderr.contains("reproduce with"), "{}", out.context());
}

#[test]
fn a_victim_that_no_longer_fails_is_called_flaky_with_the_tries() {
    let project = Project::new(FIXTURE);
    // Outside the project; the recorded run is the counter's third, which fails.
    let counter = project.root().join("flaky-counter");
    fs::write(&counter, "2").unwrap();
    project
        .shoal(["-n", "1", "--dist", "loadfile", "test_flaky.py"])
        .env("SHOAL_FLAKY_COUNTER", &counter)
        .run()
        .assert_code(1);
    let out = project
        .shoal_raw([
            "bisect",
            "test_flaky.py::test_flaky",
            "--python",
            python().to_str().unwrap(),
            "test_flaky.py",
        ])
        .env("SHOAL_FLAKY_COUNTER", &counter)
        .run();
    out.assert_code(1);
    out.assert_stderr_contains("FLAKY: test_flaky.py::test_flaky passed in each of the 2 runs");
    assert_eq!(
        fs::read_to_string(&counter).unwrap(),
        "5",
        "two tries, then it stopped"
    );
}

#[test]
fn records_and_selections_that_cannot_be_replayed_are_clear_errors() {
    let project = Project::new(FIXTURE);
    let no_runs = sub(&project, "replay", &[]);
    no_runs.assert_code(4);
    no_runs.assert_stderr_contains("failed to find a recorded run in");

    record_one_worker(&project);
    let bad = project.root().join("bad.json");
    let cases: [(&str, &[&str], i32, &str); 5] = [
        (
            "{\"version\": 1, \"processes\": [",
            &["--record"],
            3,
            "is not a shoal record",
        ),
        (
            "{\"version\": 2, \"processes\": []}",
            &["--record"],
            3,
            "it has version 2, this shoal reads version 1",
        ),
        (
            "",
            &["--run", "1234-nope"],
            4,
            "failed to find run 1234-nope in",
        ),
        (
            "",
            &["--test", "test_env.py::test_missing"],
            4,
            "failed to find test_env.py::test_missing in run",
        ),
        (
            "",
            &["--worker", "gw9"],
            4,
            "failed to find worker gw9 in run",
        ),
    ];
    for (text, args, code, message) in cases {
        let mut args = args.to_vec();
        let bad_path = bad.to_str().unwrap();
        if args == ["--record"] {
            fs::write(&bad, text).unwrap();
            args.push(bad_path);
        }
        let out = sub(&project, "replay", &args);
        out.assert_code(code);
        out.assert_stderr_contains(message);
        assert!(!out.all_output().contains("panicked"), "{}", out.context());
    }
    // A collection that lacks the recorded tests.
    let out = sub(
        &project,
        "replay",
        &["--test", "test_env.py::test_env_victim", "test_env.py"],
    );
    out.assert_code(3);
    out.assert_stderr_contains("tests in this collection");
    // The first test of its process has nothing before it to bisect.
    let first = processes(&only_record(&project))[0].1[0].clone();
    let out = sub(&project, "bisect", &[&first]);
    out.assert_code(3);
    out.assert_stderr_contains("it ran first in its worker process");
}

#[test]
fn a_replay_runs_with_the_recorded_pytest_randomly_seed() {
    let project = Project::new("plugin_randomly");
    let out = plugin_shoal(&project, &["-n", "2", "--randomly-seed=1234"])
        .rendezvous()
        .run();
    out.assert_code(0);
    let record = only_record(&project);
    assert_eq!(
        record["seed"],
        serde_json::json!({"value": 1234, "source": "pytest-randomly"})
    );
    let recorded = project.take_records();
    let (worker, sequence) = processes(&record).pop().unwrap();

    // No failure to aim at: the worker's process, whole. The collector draws a seed of its own.
    let python = plugins_python();
    let replay = project
        .program(
            shoal_bin(),
            [
                "replay",
                "--python",
                python.to_str().unwrap(),
                "--worker",
                &worker,
            ],
        )
        .run();
    replay.assert_code(0);
    assert_ne!(header_seed(&replay), 1234, "{}", replay.context());
    let replayed = project.take_records();
    assert!(replayed.iter().all(|r| field(r, "worker") == worker));
    // pytest-randomly reseeds `random` before each test from the seed: the recorded one.
    let values = by_nodeid(&replayed, "random");
    let expected: BTreeMap<String, Value> = by_nodeid(&recorded, "random")
        .into_iter()
        .filter(|(nodeid, _)| sequence.contains(nodeid))
        .collect();
    assert_eq!(values.len(), sequence.len(), "{}", replay.context());
    assert_eq!(values, expected, "{}", replay.context());
}
