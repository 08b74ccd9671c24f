//! `--pdb` and `--trace`: pdb needs a terminal, which workers do not have. With `--pdb` the
//! suite runs in parallel, then the failing tests run again in a pytest attached to the
//! terminal, under pdb; `--trace` runs the whole selection there. Without a terminal both are
//! refused (exit 4) before any test runs.
//!
//! The `stops_pdb` fixture: four passing tests and two failing ones, each failure with a local
//! `reached` that names it; `pty_driver.py` runs a command on a pseudo-terminal and answers pdb.

use crate::common::{python, shoal_bin, Output, Project};

const PROMPT: &str = "(Pdb) ";

#[test]
fn debugger_without_a_terminal_is_refused_before_any_test_runs() {
    // The tests' stdin is /dev/null.
    let project = Project::new("stops_pdb");
    for args in [
        ["-n", "2", "--pdb"],
        ["-n", "0", "--pdb"],
        ["-n", "2", "--trace"],
    ] {
        let out = project.shoal(args).run();
        out.assert_code(4);
        let option = args[2];
        assert!(
            out.stderr.contains(&format!(
                "shoal: error: failed to debug with {option}: stdin is not a terminal"
            )),
            "{}",
            out.context()
        );
        assert_eq!(out.stderr.lines().count(), 1, "{}", out.context());
        assert!(
            project.take_records().is_empty(),
            "tests ran\n{}",
            out.context()
        );
    }
}

/// shoal with `args` on a pseudo-terminal, answering pdb's prompts with `answers`.
fn on_a_terminal(project: &Project, args: &[&str], answers: &str) -> Output {
    let mut all = vec![
        "pty_driver.py".to_owned(),
        shoal_bin().display().to_string(),
        "--python".to_owned(),
        python().display().to_string(),
        "-p".to_owned(),
        "no:cacheprovider".to_owned(),
    ];
    all.extend(args.iter().map(|a| a.to_string()));
    project
        .python_script(all)
        .env("TERM", "dumb")
        .env("PDB_ANSWERS", answers)
        .run()
}

#[test]
fn pdb_runs_each_failing_test_again_under_pdb_after_the_parallel_run() {
    let project = Project::new("stops_pdb");
    let out = on_a_terminal(&project, &["-n", "2", "--pdb"], "p reached;c;q");
    out.assert_code(1); // the parallel run's code
    let (before, debugging) = out
        .stdout
        .split_once(PROMPT)
        .unwrap_or_else(|| panic!("pdb never prompted\n{}", out.context()));
    // First the parallel run, whole: nothing lost, nothing passed that failed.
    let parallel = before
        .lines()
        .find_map(crate::common::parse_stats)
        .unwrap_or_else(|| panic!("pdb came before the parallel summary\n{}", out.context()));
    assert_eq!(parallel.get("failed"), Some(&2), "{}", out.context());
    assert_eq!(parallel.get("passed"), Some(&4), "{}", out.context());
    // Then pdb, in the foreground, at each failure in turn: `p reached` shows the first
    // test's local, `c` goes on to the second, `q` quits.
    assert!(
        before.contains("test_debug.py(11)test_fails_first()"),
        "{}",
        out.context()
    );
    assert!(debugging.contains("'first failure'"), "{}", out.context());
    assert!(
        debugging.contains("test_debug.py(16)test_fails_second()"),
        "{}",
        out.context()
    );
    assert_eq!(out.stdout.matches(PROMPT).count(), 3, "{}", out.context());
    assert!(
        !debugging.contains("test_ok"),
        "a passing test ran again\n{}",
        out.context()
    );
}

#[test]
fn trace_runs_the_selection_in_the_foreground_stopping_at_every_test() {
    let project = Project::new("stops_pdb");
    let out = on_a_terminal(&project, &["-n", "2", "--trace"], "");
    // Every test stops at its start (six prompts, each answered `c`), then fails or passes
    // as pytest decides.
    assert_eq!(out.stdout.matches(PROMPT).count(), 6, "{}", out.context());
    out.assert_code(1);
    assert_eq!(out.stats().get("failed"), Some(&2), "{}", out.context());
    assert_eq!(out.stats().get("passed"), Some(&4), "{}", out.context());
}
