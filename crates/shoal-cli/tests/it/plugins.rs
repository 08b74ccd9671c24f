//! Third-party pytest plugins that xdist users rely on, installed for real: pytest-cov in the
//! test venv; pytest-randomly, pytest-rerunfailures, pytest-asyncio, hypothesis, pytest-django
//! and pytest-timeout in a venv of their own (`.venv-plugins`, see `common::plugins_python`),
//! because pytest-randomly shuffles every run in the venv it is installed in.

use std::{
    collections::{BTreeMap, BTreeSet},
    fs,
    path::Path,
    time::{Duration, Instant},
};

use crate::common::{
    assert_no_rendezvous_timeout, assert_same_outcomes, field, joined, plugin_pytest, plugin_shoal,
    workers_used, Output, Project, Run,
};
use serde_json::Value;

/// The "Missing" column and the totals of pytest-cov's term-missing table.
fn coverage_rows(output: &str) -> Vec<String> {
    output
        .lines()
        .filter(|l| l.starts_with("pkg/") || l.starts_with("TOTAL"))
        .map(|l| l.split_whitespace().collect::<Vec<_>>().join(" "))
        .collect()
}

fn stray_coverage_files(project: &Project) -> Vec<String> {
    fs::read_dir(&project.path)
        .unwrap()
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .filter(|name| name.starts_with(".coverage."))
        .collect()
}

#[test]
fn pytest_cov_reports_the_same_lines_as_serial_pytest() {
    let project = Project::new("plugin_cov");
    let args = ["--cov=pkg", "--cov-report=term-missing"];
    let serial = project.serial(&args).run();
    serial.assert_code(0);
    let expected = coverage_rows(&serial.all_output());
    assert!(
        expected.iter().any(|row| row.ends_with(" 15")),
        "the fixture must leave line 15 uncovered\n{}",
        serial.context()
    );
    for start in ["fork", "spawn"] {
        let shoal = project.shoal_n2(&joined(&["--start", start], &args)).run();
        shoal.assert_code(0);
        assert_eq!(
            coverage_rows(&shoal.all_output()),
            expected,
            "--start {start}\n{}",
            shoal.context()
        );
        assert!(
            stray_coverage_files(&project).is_empty(),
            "--start {start} left {:?}",
            stray_coverage_files(&project)
        );
    }
}

#[test]
fn pytest_cov_writes_one_combined_xml_report() {
    let project = Project::new("plugin_cov");
    project
        .shoal(["-n", "2", "--cov=pkg", "--cov-report=xml:cov.xml", "-q"])
        .run()
        .assert_code(0);
    let xml = fs::read_to_string(project.path.join("cov.xml")).expect("cov.xml written");
    // 8 statements, 7 covered: the XML carries the combined counts of both workers.
    assert!(xml.contains(r#"lines-valid="8""#), "{xml}");
    assert!(xml.contains(r#"lines-covered="7""#), "{xml}");
    assert!(stray_coverage_files(&project).is_empty());
}

#[test]
fn pytest_cov_fail_under_fails_the_run() {
    let project = Project::new("plugin_cov");
    let run = project
        .shoal(["-n", "2", "--cov=pkg", "--cov-fail-under=95", "-q"])
        .run();
    run.assert_code(1);
    assert!(
        run.all_output()
            .contains("Required test coverage of 95% not reached"),
        "{}",
        run.context()
    );
}

// ---------------------------------------------------------------------------------------------
// pytest-randomly, pytest-rerunfailures, pytest-asyncio, hypothesis, pytest-django and
// pytest-timeout. They live in a venv of their own (`.venv-plugins`, see
// `common::plugins_python`): pytest-randomly shuffles every run in the venv it is installed in.

/// The test records (those with a node id and `key`), as node id -> `record[key]`.
#[track_caller]
pub(crate) fn by_nodeid(records: &[Value], key: &str) -> BTreeMap<String, Value> {
    let mut map = BTreeMap::new();
    for record in records.iter().filter(|r| r.get(key).is_some()) {
        let previous = map.insert(field(record, "nodeid").to_owned(), record[key].clone());
        assert!(previous.is_none(), "a test ran twice: {record}");
    }
    map
}

/// The lines that pytest-randomly adds to the header.
fn seed_lines(out: &Output) -> Vec<&str> {
    out.stdout
        .lines()
        .filter(|l| l.starts_with("Using --randomly-seed="))
        .collect()
}

/// The one seed the header shows.
#[track_caller]
pub(crate) fn header_seed(out: &Output) -> u64 {
    let lines = seed_lines(out);
    assert_eq!(
        lines.len(),
        1,
        "the seed must be shown exactly once\n{}",
        out.context()
    );
    lines[0]
        .trim_start_matches("Using --randomly-seed=")
        .trim()
        .parse()
        .unwrap_or_else(|e| panic!("bad seed line {:?}: {e}\n{}", lines[0], out.context()))
}

/// `random.random()` as each test saw it under serial pytest with this seed.
fn serial_randoms(project: &Project, seed: &str) -> BTreeMap<String, Value> {
    let serial = plugin_pytest(
        project,
        &["-p", "no:cacheprovider", &format!("--randomly-seed={seed}")],
    )
    .run();
    serial.assert_code(0);
    assert_eq!(header_seed(&serial).to_string(), seed);
    let values = by_nodeid(&project.take_records(), "random");
    assert_eq!(values.len(), 15, "{}", serial.context());
    values
}

#[test]
fn pytest_randomly_every_worker_uses_the_seed_shown_once_in_the_header() {
    let project = Project::new("plugin_randomly");
    let expected = serial_randoms(&project, "1234");
    // pytest-randomly reseeds `random` before each test with the seed plus a checksum of the
    // node id: the same value for a node id in every process that uses the same seed.
    assert_ne!(
        serial_randoms(&project, "4321"),
        expected,
        "another seed must give other values"
    );
    for (start, repeat) in [("fork", 1), ("fork", 2), ("spawn", 1), ("spawn", 2)] {
        let out = plugin_shoal(
            &project,
            &[
                "-n",
                "2",
                "--start",
                start,
                "-p",
                "no:cacheprovider",
                "--randomly-seed=1234",
            ],
        )
        .rendezvous()
        .run();
        out.assert_code(0);
        assert_eq!(
            header_seed(&out),
            1234,
            "--start {start}\n{}",
            out.context()
        );
        let records = project.take_records();
        assert_no_rendezvous_timeout(&records, &out);
        assert_eq!(
            workers_used(&records),
            BTreeSet::from(["gw0".to_owned(), "gw1".to_owned()]),
            "--start {start}\n{}",
            out.context()
        );
        assert_eq!(
            by_nodeid(&records, "random"),
            expected,
            "--start {start}, run {repeat}: random.random() per node id differs from serial \
             pytest --randomly-seed=1234\n{}",
            out.context()
        );
    }
}

#[test]
fn pytest_randomly_default_seed_reaches_spawned_workers() {
    let project = Project::new("plugin_randomly");
    // Without --randomly-seed the collector draws a seed. Spawned workers collect for
    // themselves: with seeds of their own they would shuffle differently than the collector
    // (a collection mismatch) and reseed tests differently.
    let out = plugin_shoal(
        &project,
        &["-n", "2", "--start", "spawn", "-p", "no:cacheprovider"],
    )
    .rendezvous()
    .run();
    out.assert_code(0);
    let seed = header_seed(&out).to_string();
    let records = project.take_records();
    assert_no_rendezvous_timeout(&records, &out);
    assert_eq!(workers_used(&records).len(), 2, "{}", out.context());
    assert_eq!(
        by_nodeid(&records, "random"),
        serial_randoms(&project, &seed),
        "workers did not use the seed the header shows ({seed})\n{}",
        out.context()
    );
    // -n 0 has no xdist worker, whose workerinput would carry the seed.
    let out = plugin_shoal(
        &project,
        &["-n", "0", "--start", "spawn", "-p", "no:cacheprovider"],
    )
    .run();
    out.assert_code(0);
    let seed = header_seed(&out).to_string();
    assert_eq!(
        by_nodeid(&project.take_records(), "random"),
        serial_randoms(&project, &seed),
        "-n 0: the worker did not use the seed the header shows ({seed})\n{}",
        out.context()
    );
}

/// The node ids in the order a run's tests recorded themselves.
fn run_order(records: &[Value]) -> Vec<String> {
    records
        .iter()
        .filter(|r| r.get("random").is_some())
        .map(|r| field(r, "nodeid").to_owned())
        .collect()
}

#[test]
fn pytest_randomly_shuffles_like_serial_pytest_and_p_no_randomly_turns_it_off() {
    let project = Project::new("plugin_randomly");
    let collect = plugin_pytest(
        &project,
        &[
            "-p",
            "no:cacheprovider",
            "-p",
            "no:randomly",
            "--collect-only",
            "-q",
        ],
    )
    .run();
    collect.assert_code(0);
    let file_order: Vec<String> = collect
        .stdout
        .lines()
        .take_while(|l| !l.trim().is_empty())
        .map(str::to_owned)
        .collect();
    assert_eq!(file_order.len(), 15, "{}", collect.context());

    // With the plugin on, one undistributed worker runs the tests in serial pytest's shuffled
    // order.
    plugin_pytest(
        &project,
        &["-p", "no:cacheprovider", "--randomly-seed=1234"],
    )
    .run()
    .assert_code(0);
    let shuffled = run_order(&project.take_records());
    assert_ne!(shuffled, file_order, "seed 1234 must shuffle the fixture");
    let out = plugin_shoal(
        &project,
        &["-n", "0", "-p", "no:cacheprovider", "--randomly-seed=1234"],
    )
    .run();
    out.assert_code(0);
    assert_eq!(
        run_order(&project.take_records()),
        shuffled,
        "{}",
        out.context()
    );

    // -p no:randomly: file order, no seed in the header, in each mode.
    let off = ["-p", "no:cacheprovider", "-p", "no:randomly"];
    for mode in [
        &["-n", "0"][..],
        &["-n", "2"],
        &["-n", "2", "--start", "spawn"],
    ] {
        let out = plugin_shoal(&project, &joined(mode, &off)).run();
        out.assert_code(0);
        assert!(seed_lines(&out).is_empty(), "{mode:?}\n{}", out.context());
        let records = project.take_records();
        // Each worker runs its share in collection order.
        for worker in workers_used(&records) {
            let mine: Vec<Value> = records
                .iter()
                .filter(|r| r["worker"] == worker.as_str())
                .cloned()
                .collect();
            let order = run_order(&mine);
            let expected: Vec<String> = file_order
                .iter()
                .filter(|id| order.contains(id))
                .cloned()
                .collect();
            assert_eq!(order, expected, "{mode:?}, {worker}\n{}", out.context());
        }
        assert_eq!(run_order(&records).len(), 15, "{mode:?}\n{}", out.context());
        if mode == ["-n", "0"] {
            assert_eq!(run_order(&records), file_order, "{}", out.context());
        }
    }
}

// ---------------------------------------------------------------------------------------------
// pytest-rerunfailures

const RERUN_ARGS: [&str; 5] = ["--reruns", "2", "-rA", "-p", "no:cacheprovider"];

/// Serial `pytest --reruns 2 -rA`: one test fails once and passes on its rerun, one fails all
/// three attempts, one passes.
fn serial_reruns(project: &Project) -> Output {
    let serial = plugin_pytest(project, &RERUN_ARGS).run();
    serial.assert_code(1);
    assert_eq!(
        serial.stats(),
        BTreeMap::from([
            ("failed".to_owned(), 1),
            ("passed".to_owned(), 2),
            ("rerun".to_owned(), 3)
        ]),
        "{}",
        serial.context()
    );
    serial
}

/// `shoal <mode> --reruns 2 -rA`.
fn shoal_reruns(project: &Project, mode: &[&str]) -> Output {
    plugin_shoal(project, &joined(mode, &RERUN_ARGS)).run()
}

#[test]
fn pytest_rerunfailures_reruns_a_failing_test_until_it_passes() {
    let project = Project::new("plugin_rerunfailures");
    let serial = serial_reruns(&project);
    let without_reruns = |out: &Output| {
        let mut stats = out.stats();
        stats.remove("rerun");
        stats
    };
    for start in ["fork", "spawn"] {
        let shoal = shoal_reruns(&project, &["-n", "2", "--start", start]);
        shoal.assert_code(1);
        // The test that passed on its rerun is PASSED, the other FAILED after its last attempt.
        assert_eq!(
            shoal.summary_lines(),
            serial.summary_lines(),
            "--start {start}\n{}",
            shoal.context()
        );
        assert_eq!(
            without_reruns(&shoal),
            without_reruns(&serial),
            "--start {start}\n{}",
            shoal.context()
        );
    }
    // Undistributed, the worker is no xdist worker to pytest-rerunfailures either: the final
    // line counts the reruns, `1 failed, 2 passed, 3 rerun`, as pytest's does.
    assert_same_outcomes(&serial, &shoal_reruns(&project, &["-n", "0"]));
}

/// pytest-rerunfailures logs a failed attempt (outcome "rerun") in an xdist worker only if
/// `importlib.metadata.distribution("pytest-xdist")` is installed and at least 1.20 (its
/// `works_with_current_xdist()`); otherwise it keeps it to itself. shoal's workers look like
/// xdist workers (`config.workerinput`), and this venv has no pytest-xdist: shoal must still
/// get the reruns reported (`R` in the progress, `RERUN` lines with `-v`, `3 rerun` in the
/// final line), as it once did not.
#[test]
fn pytest_rerunfailures_reports_reruns_like_serial_pytest() {
    let project = Project::new("plugin_rerunfailures");
    let serial = serial_reruns(&project);
    for start in ["fork", "spawn"] {
        let shoal = shoal_reruns(&project, &["-n", "2", "--start", start]);
        // `1 failed, 2 passed, 3 rerun`.
        assert_same_outcomes(&serial, &shoal);
    }
}

/// The lines of pytest-rerunfailures' `rerun test summary info` section (`-rR`), sorted.
fn rerun_summary(out: &Output) -> Vec<String> {
    let lines: Vec<&str> = out.stdout.lines().collect();
    let Some(start) = lines
        .iter()
        .position(|l| l.contains(" rerun test summary info "))
    else {
        return Vec::new();
    };
    let mut found: Vec<String> = lines[start + 1..]
        .iter()
        .take_while(|l| !l.starts_with('='))
        .map(|l| l.to_string())
        .collect();
    found.sort();
    found
}

/// pytest-rerunfailures writes its `rerun test summary info` section (`-rR`) in
/// `pytest_terminal_summary`, from the terminal reporter's stats; in shoal it runs in the
/// finished collector, whose own stats hold none of the workers' reports (the section was once
/// missing).
#[test]
fn pytest_rerunfailures_rerun_summary_with_r_r() {
    let project = Project::new("plugin_rerunfailures");
    let args = ["--reruns", "2", "-rR", "-p", "no:cacheprovider"];
    let serial = plugin_pytest(&project, &args).run();
    let expected = rerun_summary(&serial);
    assert_eq!(expected.len(), 5, "{}", serial.context());
    let shoal = plugin_shoal(&project, &joined(&["-n", "2"], &args)).run();
    shoal.assert_code(1);
    assert_eq!(
        rerun_summary(&shoal),
        expected,
        "=== serial ===\n{}\n=== shoal ===\n{}",
        serial.context(),
        shoal.context()
    );
}

/// `shoal -n 2 --start <start> <args>` in the plugins' venv, each process's first test waiting
/// for another worker (so both take tests): it must report what `serial` did. Its output and
/// its records.
#[track_caller]
fn shoal_like_serial(
    project: &Project,
    start: &str,
    args: &[&str],
    serial: &Output,
) -> (Output, Vec<Value>) {
    let shoal = plugin_shoal(project, &joined(&["-n", "2", "--start", start], args))
        .rendezvous()
        .run();
    assert_same_outcomes(serial, &shoal);
    let records = project.take_records();
    assert_no_rendezvous_timeout(&records, &shoal);
    (shoal, records)
}

// ---------------------------------------------------------------------------------------------
// pytest-asyncio

#[test]
fn pytest_asyncio_tests_and_async_fixtures_pass() {
    let project = Project::new("plugin_asyncio");
    let args = ["-rA", "-p", "no:cacheprovider", "-p", "no:randomly"];
    let serial = plugin_pytest(&project, &args).run();
    serial.assert_code(0);
    assert_eq!(
        serial.stats().get("passed"),
        Some(&9),
        "{}",
        serial.context()
    );
    project.take_records();
    for start in ["fork", "spawn"] {
        let (shoal, records) = shoal_like_serial(&project, start, &args, &serial);
        assert_eq!(workers_used(&records).len(), 2, "{}", shoal.context());
    }
}

// ---------------------------------------------------------------------------------------------
// hypothesis

fn examples_saved(project: &Project) -> usize {
    fn count(dir: &Path) -> usize {
        fs::read_dir(dir)
            .map(|entries| {
                entries
                    .flatten()
                    .map(|e| {
                        if e.path().is_dir() {
                            count(&e.path())
                        } else {
                            1
                        }
                    })
                    .sum()
            })
            .unwrap_or(0)
    }
    count(&project.path.join(".hypothesis/examples"))
}

#[test]
fn hypothesis_property_tests_and_example_database_across_workers() {
    // Serial pytest in a project of its own, so shoal's first run starts without a database.
    let serial_project = Project::new("plugin_hypothesis");
    let args = ["-rA", "-p", "no:cacheprovider", "-p", "no:randomly"];
    let serial = plugin_pytest(&serial_project, &args).run();
    serial.assert_code(1);
    assert!(serial.stdout.contains("x=1000,"), "{}", serial.context());

    let project = Project::new("plugin_hypothesis");
    // Twice forked (the second replays the saved counterexample, from whichever worker saved
    // it), then spawned: the workers share .hypothesis/ each time.
    for (run, start) in ["fork", "fork", "spawn"].into_iter().enumerate() {
        let (shoal, records) = shoal_like_serial(&project, start, &args, &serial);
        assert!(
            shoal.stdout.contains("x=1000,"),
            "run {run}: the shrunk counterexample\n{}",
            shoal.context()
        );
        assert_eq!(workers_used(&records).len(), 2, "{}", shoal.context());
        assert!(
            examples_saved(&project) > 0,
            "run {run}: nothing in .hypothesis/examples\n{}",
            shoal.context()
        );
    }
}

/// The reports the collector rebuilt from workers' (`node id when` lines, sorted), which
/// `plugin_hypothesis_replay`'s conftest lists.
fn replayed_reports(project: &Project) -> Vec<String> {
    let mut lines: Vec<String> = fs::read_to_string(project.root().join("replayed.txt"))
        .unwrap_or_default()
        .lines()
        .map(str::to_owned)
        .collect();
    lines.sort();
    lines
}

/// The `test_mixed.py::...:` headings of Hypothesis's statistics section.
fn statistics_headings(out: &Output) -> BTreeSet<String> {
    out.stdout
        .lines()
        .filter(|l| l.starts_with("test_mixed.py::") && l.ends_with(':'))
        .map(str::to_owned)
        .collect()
}

#[test]
fn hypothesis_alone_has_only_the_reports_it_marked_replayed() {
    // Hypothesis's summary reads reports in the controlling process, but only those it marked
    // with statistics: the plain tests' reports never leave their workers, and its statistics
    // section is serial pytest's. The other installed plugins that read reports are off.
    let project = Project::new("plugin_hypothesis_replay");
    let args = [
        "-p",
        "no:cacheprovider",
        "-p",
        "no:randomly",
        "-p",
        "no:rerunfailures",
        "-p",
        "no:syrupy",
        "-p",
        "no:benchmark",
        "--hypothesis-show-statistics",
        "test_mixed.py",
    ];
    let replayed = project.root().join("replayed.txt");
    let serial = plugin_pytest(&project, &args)
        .env("REPLAYED", &replayed)
        .run();
    serial.assert_code(0);
    let expected = statistics_headings(&serial);
    assert_eq!(expected.len(), 2, "{}", serial.context());
    let _ = fs::remove_file(&replayed);

    let shoal = plugin_shoal(&project, &joined(&["-n", "2"], &args))
        .env("REPLAYED", &replayed)
        .run();
    shoal.assert_code(0);
    assert_eq!(statistics_headings(&shoal), expected, "{}", shoal.context());
    assert_eq!(
        replayed_reports(&project),
        [
            "test_mixed.py::test_other_property teardown",
            "test_mixed.py::test_property teardown"
        ],
        "{}",
        shoal.context()
    );

    // The negative control: one more reader of every report, and every report is replayed.
    let _ = fs::remove_file(&replayed);
    let shoal = plugin_shoal(&project, &joined(&["-n", "2"], &args))
        .env("REPLAYED", &replayed)
        .env("READ_EVERY_REPORT", "1")
        .run();
    shoal.assert_code(0);
    assert_eq!(statistics_headings(&shoal), expected, "{}", shoal.context());
    assert_eq!(
        replayed_reports(&project).len(),
        6 * 3,
        "{}",
        shoal.context()
    );
}

#[test]
fn hypothesis_is_never_imported_in_a_suite_that_does_not_use_it() {
    // Hypothesis's plugin imports Hypothesis for its terminal summary; the collector's summary
    // prints every worker's statistics, and a worker's own would print to nothing. Without
    // statistics asked for or failing examples, the collector's would print nothing either.
    let project = Project::new("plugin_hypothesis_replay");
    let imports = project.root().join("imports.txt");
    let shoal = plugin_shoal(
        &project,
        &["-n", "2", "-p", "no:cacheprovider", "test_plain_only.py"],
    )
    .env("REPLAYED", project.root().join("replayed.txt"))
    .env("IMPORTS", &imports)
    .run();
    shoal.assert_code(0);
    let mut lines: Vec<String> = fs::read_to_string(&imports)
        .unwrap_or_default()
        .lines()
        .map(str::to_owned)
        .collect();
    lines.sort();
    assert_eq!(
        lines,
        ["controller False", "gw0 False", "gw1 False"],
        "{}",
        shoal.context()
    );
}

// ---------------------------------------------------------------------------------------------
// pytest-django

/// worker -> the file names of the test databases its tests saw (`default`, and `other` where
/// a test used it).
fn databases_by_worker(records: &[Value]) -> BTreeMap<String, BTreeSet<String>> {
    let name = |v: &Value| {
        Path::new(v.as_str().expect("a database name"))
            .file_name()
            .unwrap()
            .to_string_lossy()
            .into_owned()
    };
    let mut map: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for record in records.iter().filter(|r| r.get("database").is_some()) {
        let names = map.entry(field(record, "worker").to_owned()).or_default();
        names.insert(name(&record["database"]));
        if let Some(other) = record.get("other") {
            names.insert(name(other));
        }
    }
    map
}

fn leftover_databases(project: &Project) -> Vec<String> {
    fs::read_dir(&project.path)
        .unwrap()
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .filter(|name| name.contains("sqlite3"))
        .collect()
}

#[test]
fn pytest_django_each_worker_gets_its_own_test_database() {
    let project = Project::new("plugin_django");
    let args = ["-rA", "-p", "no:cacheprovider", "-p", "no:randomly"];
    let serial = plugin_pytest(&project, &args).run();
    serial.assert_code(0);
    assert_eq!(
        serial.stats().get("passed"),
        Some(&7),
        "{}",
        serial.context()
    );
    let databases =
        |names: &[&str]| -> BTreeSet<String> { names.iter().map(|n| n.to_string()).collect() };
    assert_eq!(
        databases_by_worker(&project.take_records()),
        BTreeMap::from([(
            "master".to_owned(),
            databases(&["test_db.sqlite3", "test_other.sqlite3"])
        )]),
        "{}",
        serial.context()
    );

    for start in ["fork", "spawn"] {
        let (shoal, records) = shoal_like_serial(&project, start, &args, &serial);
        let seen = databases_by_worker(&records);
        assert_eq!(
            seen.keys().collect::<Vec<_>>(),
            ["gw0", "gw1"],
            "--start {start}\n{}",
            shoal.context()
        );
        // pytest-django appends `_<workerid>` to each test database's name.
        for (worker, names) in &seen {
            let default = format!("test_db.sqlite3_{worker}");
            let other = format!("test_other.sqlite3_{worker}");
            assert!(
                names.contains(&default) && names.iter().all(|n| *n == default || *n == other),
                "--start {start}: {worker} saw {names:?}\n{}",
                shoal.context()
            );
        }
        assert!(seen["gw0"].is_disjoint(&seen["gw1"]));
        assert!(
            leftover_databases(&project).is_empty(),
            "--start {start}: test databases left behind: {:?}",
            leftover_databases(&project)
        );
    }

    // -n 0 looks like plain pytest: no worker id, no suffix.
    let shoal = plugin_shoal(
        &project,
        &["-n", "0", "-p", "no:cacheprovider", "-p", "no:randomly"],
    )
    .run();
    shoal.assert_code(0);
    assert_eq!(
        databases_by_worker(&project.take_records()),
        BTreeMap::from([(
            "master".to_owned(),
            databases(&["test_db.sqlite3", "test_other.sqlite3"])
        )]),
        "{}",
        shoal.context()
    );
}

// ---------------------------------------------------------------------------------------------
// pytest-timeout
//
// With pytest-timeout installed, the ini option `timeout` (and `@pytest.mark.timeout`) is read
// by both: pytest-timeout arms SIGALRM in the worker when the test starts and fails the test
// in-process ("Failed: Timeout (>1.0s) from pytest-timeout"), leaving the worker alive;
// shoal's controller starts its own clock when the worker reports the test started and, when
// that runs out, dumps the worker's stacks and stops the worker ("Timeout: '<id>' ran longer
// than 1.0s; worker 'gwN' was stopped"). With equal limits pytest-timeout normally fires first
// (its clock starts a little earlier); shoal's is the backstop for a test that pytest-timeout
// cannot interrupt.

const PYTEST_TIMEOUT_MESSAGE: &str = "Timeout (>1.0s) from pytest-timeout";
const SHOAL_TIMEOUT_MESSAGE: &str = "Timeout: 'test_timeout.py::test_hangs' ran longer than 1";

/// pytest-timeout's limit, 1 s, as the ini option `timeout`.
const TIMEOUT_1S: [&str; 6] = [
    "-p",
    "no:cacheprovider",
    "-p",
    "no:randomly",
    "-o",
    "timeout=1",
];

/// `shoal -n 2` with [`TIMEOUT_1S`] on one file of the fixture.
fn shoal_timeout_1s<'p>(project: &'p Project, file: &str) -> Run<'p> {
    plugin_shoal(project, &[&["-n", "2"], &TIMEOUT_1S[..], &[file]].concat())
}

#[test]
fn pytest_timeout_ini_timeout_fails_a_hanging_test() {
    let project = Project::new("plugin_timeout");
    let started = Instant::now();
    let out = shoal_timeout_1s(&project, "test_timeout.py").run();
    let elapsed = started.elapsed();
    out.assert_code(1);
    out.assert_stdout_contains("timeout: 1.0s"); // pytest-timeout's header line
    assert_eq!(
        out.stats(),
        BTreeMap::from([("failed".to_owned(), 1), ("passed".to_owned(), 2)]),
        "{}",
        out.context()
    );
    assert!(
        out.stdout.contains("FAILED test_timeout.py::test_hangs"),
        "{}",
        out.context()
    );
    // Whichever clock ran out first (see above), the test failed long before its 60 s sleep.
    assert!(
        out.stdout.contains(PYTEST_TIMEOUT_MESSAGE) || out.stdout.contains(SHOAL_TIMEOUT_MESSAGE),
        "{}",
        out.context()
    );
    assert!(elapsed < Duration::from_secs(40), "took {elapsed:?}");
}

#[test]
fn pytest_timeout_fires_in_process_before_a_longer_shoal_timeout() {
    let project = Project::new("plugin_timeout");
    let args = [&["-rA"], &TIMEOUT_1S[..], &["test_timeout.py"]].concat();
    let serial = plugin_pytest(&project, &args).run();
    serial.assert_code(1);
    serial.assert_stdout_contains(PYTEST_TIMEOUT_MESSAGE);
    // shoal takes --timeout for itself: its controller waits 5 s, pytest-timeout 1 s.
    let shoal = plugin_shoal(&project, &joined(&["-n", "2", "--timeout", "5"], &args)).run();
    assert_same_outcomes(&serial, &shoal);
    shoal.assert_stdout_contains(PYTEST_TIMEOUT_MESSAGE);
    assert!(
        !shoal.stdout.contains("ran longer than"),
        "{}",
        shoal.context()
    );
}

#[test]
fn shoal_timeout_is_the_backstop_when_pytest_timeout_cannot_fire() {
    let project = Project::new("plugin_timeout");
    let started = Instant::now();
    let out = shoal_timeout_1s(&project, "test_backstop.py").run();
    let elapsed = started.elapsed();
    out.assert_code(1);
    out.assert_stdout_contains("FAILED test_backstop.py::test_blocks_alarm");
    out.assert_stdout_contains("Timeout: 'test_backstop.py::test_blocks_alarm' ran longer than 1");
    assert!(
        !out.stdout.contains(PYTEST_TIMEOUT_MESSAGE),
        "{}",
        out.context()
    );
    assert!(elapsed < Duration::from_secs(40), "took {elapsed:?}");
}

/// `gc.get_referrers` does not look into the generation `gc.freeze()` makes: a collector that
/// froze its objects before forking (as shoal's once did) leaves forked workers in which
/// objects made at import time seem to have no referrers. `hypothesis.register_random` then
/// warns that the generator it is given is about to be garbage collected; with
/// `filterwarnings = error` that is a failure. jinja2's suite met it at the end of the run:
/// hypothesis' terminal summary imports hypothesis, trio's entry point registers its
/// module-level generator, and worker and collector died in `pytest_sessionfinish`, so shoal
/// exited 1 although all 909 tests passed. Serial pytest and pytest-xdist pass.
#[test]
fn gc_get_referrers_sees_import_time_objects_in_forked_workers() {
    let project = Project::new("plugin_hypothesis_gc");
    let args = ["-rA", "-p", "no:cacheprovider", "-p", "no:randomly"];
    let serial = plugin_pytest(&project, &args).run();
    serial.assert_code(0);
    for mode in [
        &["-n", "2"][..],
        &["-n", "0"],
        &["-n", "2", "--start", "spawn"],
    ] {
        assert_same_outcomes(&serial, &plugin_shoal(&project, &joined(mode, &args)).run());
    }
}

// ---------------------------------------------------------------------------------------------
// Reporting plugins and a project's own hooks, which read reports in the controlling process:
// under shoal, the collector replays every worker's reports there, as pytest-xdist's controller.

/// How the `reporting` fixture runs: serially, under pytest-xdist, and under shoal.
const REPORTING_RUNS: [(&str, bool, &[&str]); 4] = [
    ("serial pytest", false, &[]),
    ("pytest-xdist -n 2", false, &["-n", "2"]),
    ("shoal -n 2", true, &["-n", "2"]),
    (
        "shoal -n 2 --start spawn",
        true,
        &["-n", "2", "--start", "spawn"],
    ),
];

/// Runs the `reporting` fixture each way of [`REPORTING_RUNS`] (and `extra_runs`) with
/// `args`, and asserts that `read` makes the same of what each run left.
#[track_caller]
fn assert_same_report(
    args: &[&str],
    extra_runs: &[(&str, bool, &[&str])],
    read: impl Fn(&Project, &Output) -> Value,
) {
    let project = Project::new("reporting");
    let mut expected: Option<(String, Value)> = None;
    for (name, shoal, run_args) in REPORTING_RUNS.iter().chain(extra_runs) {
        let all: Vec<&str> = ["-p", "no:randomly", "-p", "no:cacheprovider"]
            .iter()
            .chain(run_args.iter())
            .chain(args)
            .copied()
            .collect();
        let output = if *shoal {
            plugin_shoal(&project, &all).run()
        } else {
            plugin_pytest(&project, &all).run()
        };
        output.assert_code(1);
        let report = read(&project, &output);
        match &expected {
            None => expected = Some((name.to_string(), report)),
            Some((first, want)) => assert_eq!(
                &report,
                want,
                "{name}'s report differs from {first}'s\n{}",
                output.context()
            ),
        }
    }
}

fn read_json(path: &Path) -> Value {
    let text = fs::read_to_string(path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}\n{text}", path.display()))
}

#[test]
fn pytest_json_report_counts_every_test_as_serial_pytest_and_xdist() {
    assert_same_report(
        &["--json-report", "--json-report-file=report.json"],
        &[("shoal -n 0", true, &["-n", "0"])],
        |project, _| {
            let report = read_json(&project.path.join("report.json"));
            let tests: BTreeMap<String, Value> = report["tests"]
                .as_array()
                .expect("tests")
                .iter()
                .map(|t| {
                    let phases: Vec<&Value> = ["setup", "call", "teardown"]
                        .iter()
                        .map(|when| &t[when]["outcome"])
                        .collect();
                    (
                        field(t, "nodeid").to_owned(),
                        serde_json::json!([t["outcome"], phases]),
                    )
                })
                .collect();
            assert_eq!(tests.len(), 14, "every test is in the report: {tests:?}");
            serde_json::json!({
                "summary": report["summary"],
                "exitcode": report["exitcode"],
                "tests": tests,
            })
        },
    );
}

#[test]
fn pytest_reportlog_logs_every_phase_as_serial_pytest_and_xdist() {
    assert_same_report(&["--report-log=log.jsonl"], &[], |project, _| {
        let text = fs::read_to_string(project.path.join("log.jsonl")).unwrap();
        let mut phases = BTreeMap::new();
        let mut kinds: BTreeMap<String, usize> = BTreeMap::new();
        let mut exitstatus = Value::Null;
        for line in text.lines() {
            let record: Value = serde_json::from_str(line).unwrap();
            let kind = field(&record, "$report_type").to_owned();
            match kind.as_str() {
                "TestReport" => {
                    let key = format!("{} {}", field(&record, "nodeid"), field(&record, "when"));
                    phases.insert(key, record["outcome"].clone());
                }
                "SessionFinish" => exitstatus = record["exitstatus"].clone(),
                _ => {}
            }
            // xdist's controller sees only the collection reports that failed.
            if kind != "CollectReport" {
                *kinds.entry(kind).or_default() += 1;
            }
        }
        // Three phases each, but test_error, whose setup fails, has no call.
        assert_eq!(
            phases.len(),
            14 * 3 - 1,
            "every phase is logged: {phases:?}"
        );
        serde_json::json!({"phases": phases, "records": kinds, "exitstatus": exitstatus})
    });
}

/// pytest-html's results, from the JSON it embeds in the page: node id -> results.
fn html_results(page: &str) -> Value {
    let start = page.find("data-jsonblob=\"").expect("pytest-html's data") + 15;
    let end = start + page[start..].find('"').unwrap();
    let blob = page[start..end]
        .replace("&#34;", "\"")
        .replace("&#39;", "'")
        .replace("&lt;", "<")
        .replace("&gt;", ">")
        .replace("&amp;", "&");
    let data: Value = serde_json::from_str(&blob).unwrap();
    let tests: BTreeMap<&String, Vec<&Value>> = data["tests"]
        .as_object()
        .expect("tests")
        .iter()
        .map(|(id, runs)| {
            (
                id,
                runs.as_array()
                    .unwrap()
                    .iter()
                    .map(|r| &r["result"])
                    .collect(),
            )
        })
        .collect();
    assert_eq!(tests.len(), 14, "every test is in the page: {tests:?}");
    serde_json::json!(tests)
}

#[test]
fn pytest_html_shows_every_test_as_serial_pytest_and_xdist() {
    assert_same_report(
        &["--html=report.html", "--self-contained-html"],
        &[],
        |project, _| html_results(&fs::read_to_string(project.path.join("report.html")).unwrap()),
    );
}

/// The line the fixture's `pytest_terminal_summary` prints: `terminalreporter.stats` counts.
fn conftest_stats(output: &Output) -> Value {
    let text = output.all_output();
    let lines: Vec<&str> = text
        .lines()
        .filter_map(|l| l.strip_prefix("conftest stats: "))
        .collect();
    assert_eq!(lines.len(), 1, "printed once\n{}", output.context());
    serde_json::from_str(lines[0]).unwrap()
}

#[test]
fn a_conftest_reads_the_runs_results_in_its_session_hooks() {
    assert_same_report(
        &[],
        &[("shoal -n 0", true, &["-n", "0"])],
        |project, output| {
            let session = read_json(&project.path.join("session.json"));
            assert_eq!(session["testsfailed"], 3, "{}", output.context());
            serde_json::json!({"session": session, "stats": conftest_stats(output)})
        },
    );
}

#[test]
fn a_conftests_sessionfinish_receives_the_exit_status_of_pytest_exit() {
    let project = Project::new("reporting");
    for args in [&["-n", "2"][..], &["-n", "0"]] {
        let all: Vec<&str> = [
            "-p",
            "no:randomly",
            "-p",
            "no:cacheprovider",
            "test_exit.py",
        ]
        .iter()
        .chain(args)
        .copied()
        .collect();
        let output = plugin_shoal(&project, &all)
            .env("REPORTING_EXIT", "1")
            .run();
        output.assert_code(7);
        assert_eq!(
            read_json(&project.path.join("session.json")),
            serde_json::json!({"testsfailed": 0, "exitstatus": 7}),
            "{args:?}\n{}",
            output.context()
        );
    }
}

#[test]
fn pytest_split_stores_the_durations_of_every_test_as_serial_pytest_and_xdist() {
    // pytest-split reads the reports where the session ends (xdist's controller).
    assert_same_report(
        &["--store-durations", "--durations-path=durations.json"],
        &[("shoal -n 0", true, &["-n", "0"])],
        |project, _| {
            let stored = read_json(&project.path.join("durations.json"));
            let nodeids: BTreeSet<&String> = stored.as_object().unwrap().keys().collect();
            serde_json::json!(nodeids)
        },
    );
}

/// pytest-sugar (active in a terminal, or with `--force-sugar`) gives every phase a category
/// for its own reporter; shoal's terminal, which replaces that reporter, counts as pytest.
#[test]
fn pytest_sugar_leaves_shoals_counts_as_serial_pytests() {
    let project = Project::new("reporting");
    let quiet = ["-p", "no:randomly", "-p", "no:cacheprovider"];
    let serial = plugin_pytest(&project, &[&quiet[..], &["-p", "no:sugar"]].concat()).run();
    serial.assert_code(1);
    for start in ["fork", "spawn"] {
        let args = [&quiet[..], &["-n", "2", "--start", start, "--force-sugar"]].concat();
        let out = plugin_shoal(&project, &args).run();
        out.assert_code(1);
        assert_eq!(out.stats(), serial.stats(), "{}", out.context());
        assert!(out.stdout.contains("= FAILURES ="), "{}", out.context());
    }
}

/// pytest-instafail's `--instafail` is shoal's `--failure-output immediate`: each failure is
/// shown as its test ends, and no FAILURES section comes at the end; `--failure-output`
/// given on the command line wins.
#[test]
fn pytest_instafail_shows_failures_as_they_happen() {
    let project = Project::new("reporting");
    let quiet = ["-p", "no:randomly", "-p", "no:cacheprovider", "-n", "2"];
    let out = plugin_shoal(&project, &[&quiet[..], &["--instafail"]].concat()).run();
    out.assert_code(1);
    let text = &out.stdout;
    let shown = text
        .find("assert 1 == 2")
        .unwrap_or_else(|| panic!("{}", out.context()));
    let summary = text
        .find("short test summary info")
        .unwrap_or_else(|| panic!("{}", out.context()));
    assert!(shown < summary, "{}", out.context());
    assert!(!text.contains("= FAILURES ="), "{}", out.context());
    let end = [&quiet[..], &["--instafail", "--failure-output", "end"]].concat();
    let out = plugin_shoal(&project, &end).run();
    out.assert_code(1);
    assert!(out.stdout.contains("= FAILURES ="), "{}", out.context());
}

/// A test whose worker crashed is in pytest-json-report's report as under pytest-xdist (whose
/// controller logs a failed report for it), and counts in the summary.
#[test]
fn pytest_json_report_lists_a_crashed_test_as_xdist_does() {
    let project = Project::new("reporting");
    project.write(
        "test_crash.py",
        "import os\n\n\ndef test_crash():\n    os._exit(1)\n",
    );
    let read = |output: &Output| {
        let report = read_json(&project.path.join("report.json"));
        let outcomes: BTreeMap<String, Value> = report["tests"]
            .as_array()
            .unwrap_or_else(|| panic!("no tests\n{}", output.context()))
            .iter()
            .map(|t| (field(t, "nodeid").to_owned(), t["outcome"].clone()))
            .collect();
        serde_json::json!({"summary": report["summary"], "outcomes": outcomes})
    };
    let args = [
        "-p",
        "no:randomly",
        "-p",
        "no:cacheprovider",
        "-n",
        "2",
        "--json-report",
        "--json-report-file=report.json",
    ];
    let xdist = plugin_pytest(&project, &args).run();
    xdist.assert_code(1);
    let expected = read(&xdist);
    assert_eq!(
        expected["outcomes"]["test_crash.py::test_crash"],
        "failed",
        "{}",
        xdist.context()
    );
    let shoal = plugin_shoal(&project, &args).run();
    shoal.assert_code(1);
    assert_eq!(read(&shoal), expected, "{}", shoal.context());
}
