//! `[tool.shoal]` for every per-project option, and `--show-config`, which prints the options
//! with where each came from and runs nothing.

use crate::common::Project;

/// A project whose `[tool.shoal]` sets some options, whose pytest addopts set `--dist`, and
/// whose only test module leaves a file behind when it is imported.
fn configured() -> Project {
    let project = Project::empty();
    project.write(
        "pyproject.toml",
        "[tool.shoal]\nnumprocesses = 3\ntimeout = 30\nretries = 2\n\
         failure-output = \"immediate\"\n\n\
         [tool.pytest.ini_options]\naddopts = \"--dist loadfile\"\n",
    );
    project.write(
        "test_imported.py",
        "open('imported', 'w').close()\n\ndef test_ok():\n    pass\n",
    );
    project
}

/// The origin `--show-config` prints for `key`, after its value.
pub fn origin<'a>(stdout: &'a str, key: &str, value: &str) -> Option<&'a str> {
    stdout.lines().find_map(|line| {
        let mut words = line.split_whitespace();
        (words.next() == Some(key) && words.next() == Some(value))
            .then(|| line.split_once(value).unwrap().1.trim())
    })
}

#[test]
fn show_config_says_where_each_option_came_from_and_runs_nothing() {
    let project = configured();
    let out = project
        .shoal(["--show-config", "--retries", "1", "-k", "ok"])
        .run();
    out.assert_code(0);
    let pyproject = project.path.join("pyproject.toml");
    let from_project = format!("[tool.shoal] in {}", pyproject.display());
    for (key, value, expected) in [
        ("numprocesses", "3", from_project.as_str()),
        ("timeout", "30s", &from_project),
        ("failure-output", "immediate", &from_project),
        ("retries", "1", "command line"),
        ("run-timeout", "none", "default"),
        (
            "dist",
            "load",
            "default, unless pytest addopts set it (read when the run starts)",
        ),
    ] {
        assert_eq!(
            origin(&out.stdout, key, value),
            Some(expected),
            "{key}\n{}",
            out.context()
        );
    }
    assert!(
        !project.path.join("imported").exists(),
        "--show-config imported the tests\n{}",
        out.context()
    );
}

#[test]
fn project_options_apply_to_the_run() {
    let project = configured();
    project.write(
        "test_imported.py",
        "import os\n\ndef test_fails_once():\n    \
         if not os.path.exists('tried'):\n        open('tried', 'w').close()\n        \
         assert False\n",
    );
    let out = project.shoal(["-rA"]).run();
    out.assert_code(0);
    assert!(
        out.stdout
            .contains("FLAKY test_imported.py::test_fails_once"),
        "retries = 2 from [tool.shoal]\n{}",
        out.context()
    );
}

#[test]
fn a_bad_project_value_exits_4_naming_its_key() {
    let project = Project::empty();
    project.write("pyproject.toml", "[tool.shoal]\nrun-timeout = \"soon\"\n");
    let out = project.shoal(["--show-config"]).run();
    out.assert_code(4);
    assert!(
        out.stderr.contains("failed to parse [tool.shoal] in ")
            && out
                .stderr
                .contains("run-timeout: expected a number, not \"soon\""),
        "{}",
        out.context()
    );
}
