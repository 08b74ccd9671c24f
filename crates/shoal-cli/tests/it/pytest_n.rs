//! `pytest -n N` hands the run to shoal through the wheel's pytest plugin (the `pytest11`
//! entry point `shoal`): same arguments, same interpreter, same exit code; without `-n`, with
//! `-p no:shoal`, where pytest-xdist owns `-n`, and inside shoal's own processes, pytest runs as
//! it always does.
//!
//! The plugin is installed here as a wheel installs it, but onto `PYTHONPATH`: its package and
//! a `dist-info` with the entry point, which pytest's plugin autoload finds. The test Python has
//! pytest-xdist, so `-p no:xdist` stands for "xdist is not installed" (the wheel check,
//! `scripts/wheel-check`, runs `pytest -n 2` in a venv that really lacks it).

use std::{fs, path::PathBuf};

use crate::common::{copy_tree, python, repo_root, shoal_bin, Output, Project, Run};

/// The plugin's package and its entry point, in a directory of the test's own.
struct InstalledPlugin {
    dir: tempfile::TempDir,
}

impl InstalledPlugin {
    fn new() -> Self {
        let dir = tempfile::tempdir().expect("create a temp dir");
        copy_tree(
            &repo_root().join("crates/shoal-cli/python/shoal"),
            &dir.path().join("shoal"),
        );
        let info = dir.path().join("shoal-0.0.0.dist-info");
        fs::create_dir(&info).unwrap();
        fs::write(
            info.join("METADATA"),
            "Metadata-Version: 2.1\nName: shoal\nVersion: 0.0.0\n",
        )
        .unwrap();
        fs::write(
            info.join("entry_points.txt"),
            "[pytest11]\nshoal = shoal.pytest_plugin\n",
        )
        .unwrap();
        Self { dir }
    }

    /// `python -m pytest <args>` with the plugin installed and the built shoal first on
    /// `PATH` (the test venv has no shoal of its own beside pytest).
    fn pytest<'p>(&self, project: &'p Project, args: &[&str]) -> Run<'p> {
        self.installed(project.pytest(args))
    }

    fn installed<'p>(&self, run: Run<'p>) -> Run<'p> {
        let bin = shoal_bin().parent().unwrap().to_owned();
        let path = std::env::join_paths(
            std::iter::once(bin).chain(std::env::split_paths(&std::env::var_os("PATH").unwrap())),
        )
        .unwrap();
        run.env("PYTHONPATH", self.dir.path()).env("PATH", path)
    }
}

/// The fixture: four passing tests, one failing, one that runs `pytest -n 2` inside itself
/// (which passes where the plugin is installed).
fn project() -> Project {
    Project::new("pytest_n")
}

/// `runner=...` of each test that printed one (with `-rA`, their captured output).
fn runners(out: &Output) -> Vec<String> {
    let mut found: Vec<String> = out
        .stdout
        .lines()
        .filter_map(|l| l.strip_prefix("runner="))
        .map(|l| l.split_whitespace().next().unwrap().to_owned())
        .collect();
    found.dedup();
    found
}

#[test]
fn pytest_n_runs_shoal_with_the_same_outcomes_and_exit_code() {
    let project = project();
    let plugin = InstalledPlugin::new();
    let handed = plugin
        .pytest(
            &project,
            &[
                "-p",
                "no:xdist",
                "-n",
                "2",
                "-rA",
                "-p",
                "no:cacheprovider",
                "-v",
            ],
        )
        .run();
    let shoal = plugin
        .installed(project.shoal(["-n", "2", "-rA", "-p", "no:cacheprovider", "-v"]))
        .run();
    handed.assert_code(1);
    crate::common::assert_same_outcomes(&shoal, &handed);
    assert_eq!(runners(&handed), ["shoal"], "{}", handed.context());
    // shoal's header, and the interpreter pytest was started with.
    handed.assert_stdout_contains("2 workers [6 items]");
    handed.assert_stdout_contains(&format!(
        "python: {} (given by --python",
        python().display()
    ));
}

#[test]
fn pytest_n_keeps_pytest_s_exit_codes() {
    let project = project();
    let plugin = InstalledPlugin::new();
    plugin
        .pytest(
            &project,
            &["-p", "no:xdist", "-n", "2", "-k", "no_such_test"],
        )
        .run()
        .assert_code(5);
    let out = plugin
        .pytest(&project, &["-p", "no:xdist", "-n", "2", "--no-such-option"])
        .run();
    out.assert_code(4);
    out.assert_stderr_contains("--no-such-option");
}

#[test]
fn pytest_without_n_stays_pytest() {
    let project = project();
    let plugin = InstalledPlugin::new();
    for args in [vec![], vec!["-n", "0"]] {
        let args = [
            &["-p", "no:xdist", "-rA", "-p", "no:cacheprovider"],
            &args[..],
        ]
        .concat();
        let out = plugin.pytest(&project, &args).run();
        out.assert_code(1);
        assert_eq!(runners(&out), ["pytest"], "{}", out.context());
        assert!(!out.stdout.contains("workers ["), "{}", out.context());
    }
}

#[test]
fn no_shoal_turns_the_plugin_off() {
    let project = project();
    let out = InstalledPlugin::new()
        .pytest(&project, &["-p", "no:xdist", "-p", "no:shoal", "-n", "2"])
        .run();
    out.assert_code(4);
    out.assert_stderr_contains("unrecognized arguments: -n");
}

#[test]
fn xdist_keeps_n_unless_the_project_opts_in() {
    let project = project();
    let plugin = InstalledPlugin::new();
    let args = ["-n", "2", "-rA", "-p", "no:cacheprovider"];
    let out = plugin.pytest(&project, &args).run();
    out.assert_code(1);
    assert_eq!(runners(&out), ["xdist"], "{}", out.context());

    project.write("pyproject.toml", "[tool.shoal]\npytest-n = true\n");
    let out = plugin.pytest(&project, &args).run();
    out.assert_code(1);
    assert_eq!(runners(&out), ["shoal"], "{}", out.context());

    // Off even without xdist.
    project.write("pyproject.toml", "[tool.shoal]\npytest-n = false\n");
    let out = plugin
        .pytest(&project, &[&["-p", "no:xdist"], &args[..]].concat())
        .run();
    assert_eq!(runners(&out), ["pytest"], "{}", out.context());
}

#[test]
fn a_pytest_n_that_is_not_true_or_false_is_a_usage_error() {
    let project = project();
    project.write("pyproject.toml", "[tool.shoal]\npytest-n = \"yes\"\n");
    let out = InstalledPlugin::new()
        .pytest(&project, &["-p", "no:xdist", "-n", "2"])
        .run();
    out.assert_code(4);
    out.assert_stderr_contains("pytest-n in [tool.shoal]")
        .assert_stderr_contains("'yes'");
    // shoal reads the same key, and refuses it the same way.
    let out = project.shoal(["-n", "2"]).run();
    out.assert_code(4);
    out.assert_stderr_contains("pytest-n: expected true or false");
}

#[test]
fn the_plugin_never_acts_inside_shoal_s_processes() {
    // Loaded in the collector or a worker, it would define -n a second time and the run would
    // not start; the nested pytest -n of the fixture would replace the worker.
    let project = project();
    let plugin = InstalledPlugin::new();
    let out = plugin
        .installed(project.shoal(["-n", "2", "-rA", "-p", "no:cacheprovider"]))
        .run();
    out.assert_code(1);
    assert_eq!(out.stats().get("passed"), Some(&5), "{}", out.context());
    assert_eq!(runners(&out), ["shoal"], "{}", out.context());
}

/// With no shoal beside the interpreter nor on `PATH`, the run stops with a usage error.
#[test]
fn without_a_shoal_to_hand_over_to_pytest_n_says_so() {
    let project = project();
    let plugin = InstalledPlugin::new();
    let empty: PathBuf = project.root().join("empty-path");
    fs::create_dir(&empty).unwrap();
    let out = plugin
        .pytest(&project, &["-p", "no:xdist", "-n", "2"])
        .env("PATH", &empty)
        .run();
    out.assert_code(4);
    out.assert_stderr_contains("failed to find the shoal executable");
}
