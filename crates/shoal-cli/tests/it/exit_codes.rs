//! shoal exits with pytest's codes: 0 all passed, 1 tests failed, 2 interrupted (collection
//! errors), 3 internal error, 4 usage error, 5 no tests collected.

use crate::common::{collected_ids, Output, Project};

const NO_CACHE: [&str; 2] = ["-p", "no:cacheprovider"];

fn shoal(project: &Project, args: &[&str]) -> Output {
    let mut all = NO_CACHE.to_vec();
    all.extend_from_slice(args);
    project.shoal(&all).run()
}

fn serial(project: &Project, args: &[&str]) -> Output {
    let mut all = NO_CACHE.to_vec();
    all.extend_from_slice(args);
    project.pytest(&all).run()
}

#[track_caller]
fn assert_no_workers_started(out: &Output) {
    assert!(
        !out.stdout.contains(" workers [") && !out.stdout.contains(" worker ["),
        "workers were started\n{}",
        out.context()
    );
}

#[test]
fn all_passing_exits_0() {
    let project = Project::new("passing");
    shoal(&project, &["-n", "2"]).assert_code(0);
}

#[test]
fn failures_exit_1() {
    let project = Project::new("one_failure");
    shoal(&project, &["-n", "2"]).assert_code(1);
}

#[test]
fn collection_error_exits_2_like_pytest() {
    let project = Project::new("collect_error");
    let expected = serial(&project, &[]);
    expected.assert_code(2);
    let out = shoal(&project, &["-n", "2"]);
    out.assert_code(2);
    out.assert_stdout_contains("ERROR collecting test_broken.py");
    out.assert_stdout_contains("this module cannot be imported");
    out.assert_stdout_contains("Interrupted: 1 error during collection");
    assert_no_workers_started(&out);
}

#[test]
fn continue_on_collection_errors_runs_the_rest_and_reports_the_error() {
    let project = Project::new("collect_error");
    let expected = serial(&project, &["--continue-on-collection-errors", "-rA"]);
    expected.assert_code(1);
    let out = shoal(
        &project,
        &["-n", "2", "--continue-on-collection-errors", "-rA"],
    );
    assert_eq!(out.stats().get("passed"), Some(&2), "{}", out.context());
    assert_eq!(out.stats(), expected.stats(), "{}", out.context());
    out.assert_stdout_contains("ERROR test_broken.py");
    out.assert_code(1);
}

#[test]
fn continue_on_collection_errors_still_runs_the_other_tests() {
    let project = Project::new("collect_error");
    let out = shoal(
        &project,
        &["-n", "2", "--continue-on-collection-errors", "-rA"],
    );
    out.assert_stdout_contains("PASSED test_ok.py::test_fine");
    out.assert_stdout_contains("PASSED test_ok.py::test_also_fine");
    assert_eq!(out.stats().get("passed"), Some(&2), "{}", out.context());
}

#[test]
fn unknown_pytest_option_exits_4() {
    let project = Project::new("passing");
    let out = shoal(&project, &["-n", "2", "--no-such-option"]);
    out.assert_code(4);
    assert!(
        out.stderr.contains("--no-such-option"),
        "the error names the option\n{}",
        out.context()
    );
    assert_no_workers_started(&out);
}

#[test]
fn negative_worker_count_exits_4() {
    let project = Project::new("passing");
    let out = shoal(&project, &["-n", "-3"]);
    out.assert_code(4);
    assert!(out.stderr.contains("-3"), "{}", out.context());
    assert!(out.stdout.is_empty(), "{}", out.context());
}

#[test]
fn negative_worker_count_error_names_the_option() {
    let project = Project::new("passing");
    let out = shoal(&project, &["-n", "-3"]);
    out.assert_code(4);
    assert!(
        out.stderr.contains("invalid value") && out.stderr.contains("--numprocesses"),
        "the error should say -n got an invalid value\n{}",
        out.context()
    );
}

#[test]
fn non_numeric_worker_count_exits_4() {
    let project = Project::new("passing");
    for args in [&["-n", "abc"][..], &["-nabc"], &["--numprocesses=abc"]] {
        let out = shoal(&project, args);
        out.assert_code(4);
        assert!(out.stderr.contains("abc"), "{}", out.context());
        assert!(out.stdout.is_empty(), "{}", out.context());
    }
}

#[test]
fn unknown_dist_mode_exits_4() {
    let project = Project::new("passing");
    for args in [&["-n", "2", "--dist", "nope"][..], &["--dist=nope"]] {
        let out = shoal(&project, args);
        out.assert_code(4);
        assert!(out.stderr.contains("nope"), "{}", out.context());
        assert!(
            out.stderr.contains("loadfile"),
            "lists the modes\n{}",
            out.context()
        );
    }
}

/// As a bad `-n` there: a `--max-worker-restart` that pytest's addopts give must be a number,
/// not silently the default.
#[test]
fn bad_max_worker_restart_in_addopts_exits_4() {
    let project = Project::new("passing");
    project.write(
        "pytest.ini",
        "[pytest]\naddopts = --max-worker-restart=lots\n",
    );
    let out = shoal(&project, &["-n", "2"]);
    out.assert_code(4);
    assert!(
        out.stderr.contains("--max-worker-restart") && out.stderr.contains("\"lots\""),
        "the error names the option and the value\n{}",
        out.context()
    );
    assert_no_workers_started(&out);
}

#[test]
fn unknown_start_method_exits_4() {
    let project = Project::new("passing");
    let out = shoal(&project, &["-n", "2", "--start", "teleport"]);
    out.assert_code(4);
    assert!(out.stderr.contains("teleport"), "{}", out.context());
}

#[test]
fn missing_path_exits_4_like_pytest() {
    let project = Project::new("passing");
    serial(&project, &["does_not_exist.py"]).assert_code(4);
    let out = shoal(&project, &["-n", "2", "does_not_exist.py"]);
    out.assert_code(4);
    assert!(
        out.all_output().contains("does_not_exist.py"),
        "the error names the path\n{}",
        out.context()
    );
    assert_no_workers_started(&out);
}

#[test]
fn empty_directory_exits_5() {
    let project = Project::empty();
    serial(&project, &[]).assert_code(5);
    let out = shoal(&project, &["-n", "2"]);
    out.assert_code(5);
    assert_no_workers_started(&out);
}

#[test]
fn keyword_matching_nothing_exits_5() {
    let project = Project::new("passing");
    serial(&project, &["-k", "nothing_matches_this"]).assert_code(5);
    let out = shoal(&project, &["-n", "2", "-k", "nothing_matches_this"]);
    out.assert_code(5);
    out.assert_stdout_contains("5 deselected");
    assert_no_workers_started(&out);
}

#[test]
fn collect_only_lists_tests_and_starts_no_workers() {
    let project = Project::new("distribution");
    let expected = collected_ids(&project, &[]);
    assert_eq!(expected.len(), 29);
    project.take_records();
    let out = shoal(&project, &["-n", "2", "--collect-only", "-q"]);
    out.assert_code(0);
    assert_no_workers_started(&out);
    let listed: Vec<&str> = out
        .stdout
        .lines()
        .take_while(|l| !l.trim().is_empty())
        .collect();
    assert_eq!(listed, expected, "{}", out.context());
    out.assert_stdout_contains("29 tests collected");
    // The conftest records every pytest session that finishes: only the collector's did.
    let records = project.take_records();
    let sessions: Vec<_> = records
        .iter()
        .filter(|r| r.get("sessionfinish").is_some())
        .collect();
    assert_eq!(
        sessions.len(),
        1,
        "one pytest process ran: {records:?}\n{}",
        out.context()
    );
    assert!(
        records.iter().all(|r| r.get("nodeid").is_none()),
        "a test ran: {records:?}"
    );
}

#[test]
fn python_without_pytest_exits_4_with_one_line() {
    let project = Project::empty();
    project.write("test_x.py", "def test_x():\n    pass\n");
    let bare = crate::common::venv(&project.root().join("bare-venv"), false);
    let out = project
        .shoal_raw([
            "--python".as_ref(),
            bare.as_os_str(),
            "-n".as_ref(),
            "2".as_ref(),
        ])
        .run();
    out.assert_code(4);
    let lines: Vec<&str> = out
        .stderr
        .lines()
        .filter(|l| !l.trim().is_empty())
        .collect();
    assert_eq!(lines.len(), 1, "a one-line message\n{}", out.context());
    assert!(lines[0].contains("pytest"), "{}", out.context());
    assert!(out.stdout.trim().is_empty(), "{}", out.context());
}

/// The version check reads the `pytest.__version__` of the pytest that `import pytest` finds,
/// as the plugin would use it: a package of that name first on `PYTHONPATH` stands in for an
/// old install (creating a venv with pytest 6 would need the network in every run).
#[test]
fn a_pytest_older_than_supported_exits_4_naming_both_versions() {
    let project = Project::empty();
    project.write("test_x.py", "def test_x():\n    pass\n");
    project.write("old/pytest/__init__.py", "__version__ = \"6.2.5\"\n");
    let old = project.path.join("old");
    let out = project.shoal(["-n", "2"]).env("PYTHONPATH", &old).run();
    out.assert_code(4);
    let lines: Vec<&str> = out
        .stderr
        .lines()
        .filter(|l| !l.trim().is_empty())
        .collect();
    assert_eq!(
        lines.len(),
        2,
        "what was found, what is needed\n{}",
        out.context()
    );
    assert!(
        lines[0].starts_with("shoal: ") && lines[0].ends_with(" and pytest 6.2.5"),
        "{}",
        out.context()
    );
    assert!(
        lines[1].ends_with("shoal needs Python 3.9 or newer and pytest 8.0 or newer"),
        "{}",
        out.context()
    );
    assert!(out.stdout.trim().is_empty(), "{}", out.context());
}

#[test]
fn missing_python_exits_4() {
    let project = Project::new("passing");
    let missing = project.root().join("no/such/python");
    let out = project
        .shoal_raw([
            "--python".as_ref(),
            missing.as_os_str(),
            "-n".as_ref(),
            "2".as_ref(),
        ])
        .run();
    out.assert_code(4);
    assert!(
        out.stderr.contains("no/such/python"),
        "the error names the interpreter\n{}",
        out.context()
    );
}

#[test]
fn conftest_import_error_exits_like_pytest() {
    let project = Project::new("conftest_error");
    let expected = serial(&project, &[]);
    assert_ne!(expected.code, Some(0), "{}", expected.context());
    let out = shoal(&project, &["-n", "2"]);
    assert_eq!(
        out.code,
        expected.code,
        "exit code differs from serial pytest\n=== serial ===\n{}\n=== shoal ===\n{}",
        expected.context(),
        out.context()
    );
    assert!(
        out.all_output().contains("conftest is broken"),
        "the error is shown\n{}",
        out.context()
    );
    assert!(
        out.all_output().contains("conftest.py"),
        "the error names the conftest\n{}",
        out.context()
    );
    assert_no_workers_started(&out);
}

#[test]
fn help_exits_0_and_describes_shoal_options() {
    let project = Project::empty();
    for flag in ["--help", "-h"] {
        let out = project.shoal([flag]).run();
        out.assert_code(0);
        out.assert_stdout_contains("--numprocesses");
        out.assert_stdout_contains("--start");
        // shoal's own help, not pytest's, which says that pytest's arguments pass through.
        out.assert_stdout_contains("Usage: shoal [SHOAL OPTIONS] [PYTEST ARGS]...");
        out.assert_stdout_contains("Every other argument is passed to pytest");
    }
}

/// Writes an executable script into the project and returns its path.
fn script(project: &Project, name: &str, text: &str) -> std::path::PathBuf {
    use std::os::unix::fs::PermissionsExt;
    project.write(name, text);
    let path = project.path.join(name);
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
    path
}

fn shoal_with_python(project: &Project, python: &std::path::Path) -> Output {
    project
        .shoal_raw([
            "--python".as_ref(),
            python.as_os_str(),
            "-n".as_ref(),
            "2".as_ref(),
        ])
        .run()
}

#[test]
fn a_python_that_exits_0_without_running_the_plugin_is_a_usage_error() {
    let project = Project::new("passing");
    for python in [
        std::path::PathBuf::from("/bin/true"),
        script(&project, "fake-python", "#!/bin/sh\nexit 0\n"),
    ] {
        let out = shoal_with_python(&project, &python);
        out.assert_code(4);
        assert!(
            out.stderr.contains(&*python.to_string_lossy())
                && out.stderr.contains("shoal's protocol"),
            "the error names the interpreter and says it never ran shoal's plugin\n{}",
            out.context()
        );
    }
}

#[test]
fn a_python_too_old_for_the_plugin_is_a_usage_error_with_its_own_words() {
    let project = Project::new("passing");
    // What a Python 2 does with the bootstrap: it fails before the plugin starts.
    let python = script(
        &project,
        "python2",
        "#!/bin/sh\necho 'ImportError: No module named util' >&2\nexit 1\n",
    );
    let out = shoal_with_python(&project, &python);
    out.assert_code(4);
    assert!(
        out.stderr.contains("No module named util") && out.stderr.contains("exit code 1"),
        "its own error and how it ended are shown\n{}",
        out.context()
    );
}

#[test]
fn a_python_killed_before_it_speaks_the_protocol_exits_3() {
    let project = Project::new("passing");
    let python = script(&project, "doomed-python", "#!/bin/sh\nkill -9 $$\n");
    let out = shoal_with_python(&project, &python);
    out.assert_code(3);
    assert!(out.stderr.contains("SIGKILL"), "{}", out.context());
}

#[test]
fn conftest_sys_exit_passes_its_code_on_like_pytest() {
    let project = Project::new("conftest_exit");
    let expected = serial(&project, &[]);
    expected.assert_code(7);
    let out = shoal(&project, &["-n", "2"]);
    out.assert_code(7);
    assert!(
        out.stderr
            .contains("conftest: the test database is not configured"),
        "what the collector wrote is shown\n{}",
        out.context()
    );
    assert_no_workers_started(&out);
}

#[test]
fn no_terminal_plugin_runs_and_exits_like_pytest() {
    for (fixture, code) in [("passing", 0), ("one_failure", 1)] {
        let project = Project::new(fixture);
        for extra in [&[][..], &["--start", "spawn"]] {
            let mut args = vec!["-p", "no:terminal"];
            serial(&project, &args).assert_code(code);
            args.extend(["-n", "2"]);
            args.extend(extra);
            let out = shoal(&project, &args);
            out.assert_code(code);
            assert!(
                !out.all_output().contains("INTERNALERROR"),
                "{}",
                out.context()
            );
        }
    }
}

/// Waits (bounded) for `path` to appear, as the fixture's conftest writes it whole.
fn wait_for_file(path: &std::path::Path) -> String {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(120);
    loop {
        if let Ok(text) = std::fs::read_to_string(path) {
            return text;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "{} never appeared",
            path.display()
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
}

#[test]
fn collector_killed_during_collection_exits_3_naming_the_signal() {
    let project = Project::new("collector_killed");
    let running = project
        .shoal(["-n", "2", "-p", "no:cacheprovider"])
        .env("SHOAL_IT_BLOCK_COLLECTION", "1")
        .start();
    let pid: i32 = wait_for_file(&project.path.join("collector.pid"))
        .parse()
        .unwrap();
    // SAFETY: kill(2) on the pid the collecting process wrote; it is blocked until killed.
    assert_eq!(unsafe { libc::kill(pid, libc::SIGKILL) }, 0);
    let out = running.wait();
    out.assert_code(3);
    assert!(out.stderr.contains("SIGKILL"), "{}", out.context());
}

#[test]
fn collector_killed_while_tests_run_exits_3_naming_the_signal() {
    for start in ["fork", "spawn"] {
        let project = Project::new("collector_killed");
        let out = shoal(&project, &["-n", "2", "--start", start]);
        out.assert_code(3);
        assert!(out.stderr.contains("SIGKILL"), "{}", out.context());
    }
}

#[test]
fn python_that_is_not_executable_exits_4_saying_so() {
    use std::os::unix::fs::PermissionsExt;
    let project = Project::new("passing");
    project.write("python", "#!/bin/sh\nexit 0\n");
    let python = project.path.join("python");
    std::fs::set_permissions(&python, std::fs::Permissions::from_mode(0o644)).unwrap();
    let out = shoal_with_python(&project, &python);
    out.assert_code(4);
    assert!(
        out.stderr.contains("not executable") && out.stderr.contains(&*python.to_string_lossy()),
        "{}",
        out.context()
    );
    let out = shoal_with_python(&project, &project.path);
    out.assert_code(4);
    assert!(out.stderr.contains("not a file"), "{}", out.context());
    // A path that cannot be looked up says why, not "no such file".
    let out = shoal_with_python(&project, &python.join("python"));
    out.assert_code(4);
    assert!(out.stderr.contains("Not a directory"), "{}", out.context());
}

/// A conftest hook that raises outside any test is pytest's internal error: serial pytest
/// prints `INTERNALERROR>` lines and exits 3. In a worker (a report hook) the run stops and
/// exits 3 with the traceback shown; in the collector (xdist's `pytest_testnodedown`, which
/// only the controlling side calls) the same.
#[test]
fn an_internal_error_in_a_worker_or_the_collector_exits_3_with_its_traceback() {
    let project = Project::new("passing");
    project.write(
        "conftest.py",
        "def pytest_runtest_logreport(report):\n    \
             if report.when == 'call':\n        \
                 raise ValueError('boom in a report hook')\n",
    );
    let expected = serial(&project, &[]);
    expected.assert_code(3);
    for start in ["fork", "spawn"] {
        let out = shoal(&project, &["-n", "2", "--start", start]);
        out.assert_code(3);
        let text = out.all_output();
        assert!(
            text.contains("INTERNALERROR>") && text.contains("ValueError: boom in a report hook"),
            "--start {start}\n{}",
            out.context()
        );
        assert!(
            text.contains("internal error in worker gw"),
            "--start {start}\n{}",
            out.context()
        );
    }
    project.write(
        "conftest.py",
        "def pytest_testnodedown(node, error):\n    \
             raise ValueError('boom in testnodedown')\n",
    );
    let out = shoal(&project, &["-n", "2"]);
    out.assert_code(3);
    assert!(
        out.all_output()
            .contains("INTERNALERROR> ValueError: boom in testnodedown"),
        "{}",
        out.context()
    );
}
