//! `--shuffle[=SEED]`: the `shuffle` fixture has four files of three tests; under
//! `-n 4 --dist loadfile` each worker takes one file, so which file each worker ran is the
//! whole assignment, read from `--report-json`. The scheduler's own tests (process-free) show
//! the same for `load` and `worksteal`.

use std::collections::{BTreeMap, BTreeSet};

use crate::{
    common::{field, file_of, joined, plugin_shoal, Output, Project},
    faults::{events, of_kind, EVENTS},
};

const FIXTURE: &str = "shuffle";

/// Four workers, one file each.
const LOADFILE: [&str; 6] = ["-n", "4", "--dist", "loadfile", "-p", "no:cacheprovider"];

/// `shoal -n 4 --dist loadfile --report-json=... <args>`.
fn loadfile(project: &Project, args: &[&str]) -> Output {
    let report = format!("--report-json={EVENTS}");
    let out = project
        .shoal(joined(&LOADFILE, &joined(&[&report], args)))
        .run();
    out.assert_code(0);
    out
}

/// The files each worker ran, in order, checking that every file stayed on one worker.
fn assignment(project: &Project, out: &Output) -> BTreeMap<String, Vec<String>> {
    let mut by_worker: BTreeMap<String, Vec<String>> = BTreeMap::new();
    let mut worker_of: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for test in of_kind(&events(project, out), "test") {
        let (worker, file) = (field(test, "worker"), file_of(field(test, "nodeid")));
        worker_of
            .entry(file.to_owned())
            .or_default()
            .insert(worker.to_owned());
        let files = by_worker.entry(worker.to_owned()).or_default();
        if files.last().map(String::as_str) != Some(file) {
            files.push(file.to_owned());
        }
    }
    for (file, workers) in &worker_of {
        assert_eq!(
            workers.len(),
            1,
            "{file} was split: {workers:?}\n{}",
            out.context()
        );
    }
    assert_eq!(worker_of.len(), 4, "{}", out.context());
    by_worker
}

/// The `run_start` event's `shuffle_seed`.
fn recorded_seed(project: &Project, out: &Output) -> Option<u64> {
    of_kind(&events(project, out), "run_start")[0]["shuffle_seed"].as_u64()
}

#[test]
fn the_same_seed_makes_the_same_assignment_and_another_seed_another() {
    let project = Project::new(FIXTURE);
    let first = loadfile(&project, &["--shuffle=1"]);
    first.assert_stdout_contains("shuffle: seed 1 (again: --shuffle=1)");
    assert_eq!(recorded_seed(&project, &first), Some(1));
    let one = assignment(&project, &first);
    let again = loadfile(&project, &["--shuffle=1"]);
    assert_eq!(one, assignment(&project, &again), "{}", again.context());
    // Seed 3 draws another order of the four files (the generator is fixed: see shuffle.rs).
    let other = loadfile(&project, &["--shuffle=3"]);
    assert_ne!(one, assignment(&project, &other), "{}", other.context());
}

#[test]
fn a_new_seed_is_printed_and_reproduces_the_run() {
    let project = Project::new(FIXTURE);
    let first = loadfile(&project, &["--shuffle"]);
    let seed = recorded_seed(&project, &first).expect("a shuffled run records its seed");
    first.assert_stdout_contains(&format!("shuffle: seed {seed}"));
    let one = assignment(&project, &first);
    // Also under -q, which leaves out the rest of the header.
    let again = loadfile(&project, &[&format!("--shuffle={seed}"), "-q"]);
    again.assert_stdout_contains(&format!("shuffle: seed {seed}"));
    assert_eq!(one, assignment(&project, &again), "{}", again.context());
}

#[test]
fn without_shuffle_no_seed_is_printed_or_recorded() {
    let project = Project::new(FIXTURE);
    let out = loadfile(&project, &[]);
    assert!(!out.stdout.contains("shuffle:"), "{}", out.context());
    assert_eq!(recorded_seed(&project, &out), None);
    // Collection order, largest first: gw0 takes test_a.py, as without history it always does.
    assert_eq!(assignment(&project, &out)["gw0"], ["test_a.py"]);
}

#[test]
fn shuffle_in_tool_shoal_is_shown_by_show_config() {
    let project = Project::new(FIXTURE);
    project.write(
        "pyproject.toml",
        "[tool.shoal]\nshuffle = 3\ndetect-leaks = true\n",
    );
    let out = project.shoal(["--show-config"]).run();
    out.assert_code(0);
    let line = |key: &str| {
        out.stdout
            .lines()
            .find(|l| l.trim_start().starts_with(key))
            .unwrap_or_else(|| panic!("no {key} in\n{}", out.context()))
            .to_owned()
    };
    assert!(line("shuffle").contains("seed 3"), "{}", line("shuffle"));
    assert!(
        line("shuffle").contains("[tool.shoal]"),
        "{}",
        line("shuffle")
    );
    assert!(
        line("detect-leaks").contains("true"),
        "{}",
        line("detect-leaks")
    );
    let out = loadfile(&project, &[]);
    out.assert_stdout_contains("shuffle: seed 3");
}

#[test]
fn pytest_randomly_and_shuffle_share_one_seed() {
    let project = Project::new(FIXTURE);
    let run = |args: &[&str]| {
        let base = ["-n", "2", "-p", "no:cacheprovider"];
        plugin_shoal(&project, &[&base[..], args].concat()).run()
    };
    // --shuffle takes pytest-randomly's seed...
    let out = run(&["--shuffle", "--randomly-seed=77"]);
    out.assert_code(0);
    out.assert_stdout_contains("shuffle: seed 77");
    // ...and --shuffle=SEED gives pytest-randomly its own.
    let out = run(&["--shuffle=5"]);
    out.assert_code(0);
    out.assert_stdout_contains("Using --randomly-seed=5");
    out.assert_stdout_contains("shuffle: seed 5");
    // Two seeds given that differ: no run could be repeated from one of them.
    let out = run(&["--shuffle=5", "--randomly-seed=7"]);
    out.assert_code(4);
    assert!(
        out.stderr.contains(
            "shoal: error: failed to choose a shuffle seed: --shuffle=5 and pytest-randomly's seed 7 differ"
        ),
        "{}",
        out.context()
    );
    // The variable that carried the seed is the collector's, not the tests'.
    project.write(
        "test_env.py",
        "import os\n\ndef test_no_seed_variable():\n    assert 'SHOAL_SHUFFLE_SEED' not in os.environ\n",
    );
    run(&["--shuffle=5"]).assert_code(0);
}
