//! `--detect-leaks`: the `leaks` fixture's `test_leaky.py` has one test per kind of state left
//! behind (an environment variable, the cwd, a non-daemon thread, a child process, a function
//! of a project module replaced by hand, an open file); `test_clean.py` changes the same
//! things and puts them back, by hand or through `monkeypatch`, or through session- and
//! module-scoped fixtures that restore in their own teardown: it must report nothing. The
//! conftest ends what the leaky tests left at session end, so the harness's orphan check
//! holds. Findings are read from `--report-json`, the terminal and the JUnit file.

use std::{collections::BTreeMap, fs};

use serde_json::Value;

use crate::{
    common::{field, Output, Project},
    faults::{events, of_kind, EVENTS},
};

const FIXTURE: &str = "leaks";

/// The value `test_env` gives its leaked variable: it must appear nowhere.
const SECRET: &str = "s3cret-value";

/// Each test's findings from the `test` events: node id -> [(kind, detail)], for every test.
fn findings(project: &Project, out: &Output) -> BTreeMap<String, Vec<(String, String)>> {
    of_kind(&events(project, out), "test")
        .into_iter()
        .map(|e| {
            let leaks = e.get("leaks").and_then(Value::as_array);
            let leaks = leaks.into_iter().flatten();
            let leaks = leaks.map(|l| (field(l, "kind").to_owned(), field(l, "detail").to_owned()));
            (field(e, "nodeid").to_owned(), leaks.collect())
        })
        .collect()
}

/// The `<testcase>` element of test `name` in the JUnit file's text.
fn testcase<'a>(junit: &'a str, name: &str) -> &'a str {
    let needle = format!("name=\"{name}\"");
    junit
        .split("<testcase ")
        .find(|case| case.contains(&needle))
        .unwrap_or_else(|| panic!("no testcase {name} in\n{junit}"))
}

#[test]
fn each_leak_names_its_test_and_kind_and_clean_tests_report_none() {
    // Forked workers, spawned ones (each collects for itself), and -n 0's plain pytest.
    for how in [["-n", "2"], ["--start", "spawn"], ["-n", "0"]] {
        let project = Project::new(FIXTURE);
        let out = project
            .shoal([
                how[0],
                how[1],
                "-p",
                "no:cacheprovider",
                "--detect-leaks",
                &format!("--report-json={EVENTS}"),
                "--junitxml=junit.xml",
            ])
            .run();
        out.assert_code(0); // warnings, not failures
        let found = findings(&project, &out);
        let kinds: BTreeMap<&str, Vec<&str>> = found
            .iter()
            .map(|(test, leaks)| {
                (
                    test.as_str(),
                    leaks.iter().map(|(k, _)| k.as_str()).collect(),
                )
            })
            .collect();
        let expected: BTreeMap<&str, Vec<&str>> = [
            ("test_leaky.py::test_env", vec!["env"]),
            ("test_leaky.py::test_cwd", vec!["cwd"]),
            ("test_leaky.py::test_thread", vec!["thread"]),
            ("test_leaky.py::test_process", vec!["process"]),
            ("test_leaky.py::test_module", vec!["module"]),
            ("test_leaky.py::test_fd", vec!["fd"]),
            ("test_clean.py::test_monkeypatch", vec![]),
            ("test_clean.py::test_joined_thread_and_waited_child", vec![]),
            ("test_clean.py::test_daemon_thread_is_no_leak", vec![]),
            ("test_clean.py::test_wider_fixtures", vec![]),
            ("test_clean.py::test_wider_fixtures_again", vec![]),
            ("test_clean.py::test_plain", vec![]),
        ]
        .into_iter()
        .collect();
        assert_eq!(kinds, expected, "{how:?}\n{}", out.context());
        let detail = |test: &str| found[test][0].1.as_str();
        assert_eq!(detail("test_leaky.py::test_env"), "SHOAL_LEAKED_VAR added");
        assert_eq!(
            detail("test_leaky.py::test_module"),
            "pkg.util.greet replaced"
        );
        assert!(detail("test_leaky.py::test_thread").contains("'left-running'"));
        assert!(detail("test_leaky.py::test_process").ends_with("still running"));

        // The summary has a section of its own, a block per leaky test.
        let summary = out
            .stdout
            .split_once("= leaks summary =")
            .unwrap_or_else(|| panic!("no leaks summary\n{}", out.context()))
            .1;
        for test in expected
            .iter()
            .filter(|(_, k)| !k.is_empty())
            .map(|(t, _)| t)
        {
            assert!(summary.contains(test), "{test} not in\n{summary}");
        }
        assert!(
            summary.contains("  env: SHOAL_LEAKED_VAR added"),
            "{summary}"
        );
        assert!(!summary.contains("test_clean.py"), "{summary}");

        // JUnit: a property of the testcase.
        let junit = fs::read_to_string(project.path.join("junit.xml")).unwrap();
        let env_case = testcase(&junit, "test_env");
        assert!(
            env_case
                .contains(r#"<property name="shoal_leak" value="env: SHOAL_LEAKED_VAR added" />"#),
            "{env_case}"
        );
        assert!(!testcase(&junit, "test_monkeypatch").contains("shoal_leak"));

        // Names only: the value of an environment variable may be a secret.
        let log = fs::read_to_string(project.path.join(EVENTS)).unwrap();
        for (what, text) in [
            ("output", out.all_output()),
            ("events", log),
            ("junit", junit),
        ] {
            assert!(!text.contains(SECRET), "the leaked value is in the {what}");
        }
    }
}

#[test]
fn without_the_option_nothing_is_looked_for() {
    let project = Project::new(FIXTURE);
    let out = project
        .shoal_n2(&[&format!("--report-json={EVENTS}"), "--junitxml=junit.xml"])
        .run();
    out.assert_code(0);
    assert!(!out.stdout.contains("leaks summary"), "{}", out.context());
    let found = findings(&project, &out);
    assert_eq!(found.len(), 12, "{}", out.context());
    assert!(found.values().all(Vec::is_empty), "{found:?}");
    let junit = fs::read_to_string(project.path.join("junit.xml")).unwrap();
    assert!(!junit.contains("shoal_leak"));
}

#[test]
fn detect_leaks_in_tool_shoal_turns_it_on() {
    let project = Project::new(FIXTURE);
    project.write("pyproject.toml", "[tool.shoal]\ndetect-leaks = true\n");
    let out = project.shoal_n2(&["test_leaky.py::test_env"]).run();
    out.assert_code(0);
    out.assert_stdout_contains("  env: SHOAL_LEAKED_VAR added");
}
