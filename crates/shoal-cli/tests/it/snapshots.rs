//! Snapshots of the output only shoal prints, so that a change to it shows in review: a
//! crashed worker's report, WORKER ERRORS, FLAKY lines, the stop line and the `--report-json`
//! events. One worker (`-n 1`) keeps the order fixed; durations, the project's path, the
//! interpreter and the run's ids are redacted. The snapshots live in `snapshots/`; after an intended change,
//! `INSTA_UPDATE=always` (or `cargo insta review`) rewrites them.

use std::ffi::OsStr;

use crate::common::{Output, Project, Run};

/// `shoal -n 1 -p no:cacheprovider <args>`, with the layout pytest uses off CI (on CI it does
/// not cut the short summary's lines to the terminal's width).
fn shoal<'p, S: AsRef<OsStr>>(project: &'p Project, args: &[S]) -> Run<'p> {
    let mut all: Vec<&OsStr> = ["-n", "1", "-p", "no:cacheprovider"]
        .map(OsStr::new)
        .to_vec();
    all.extend(args.iter().map(AsRef::as_ref));
    project
        .shoal(all)
        .env_remove("CI")
        .env_remove("BUILD_NUMBER")
}

/// What changes from run to run, replaced by a fixed word.
fn redactions(project: &Project) -> Vec<(String, &'static str)> {
    vec![
        (
            regex::escape(&project.path.display().to_string()),
            "[PROJECT]",
        ),
        (r"\d+\.\d+s( \(\d+:\d+:\d+\))?".into(), "[TIME]s"),
        (r#""duration":[0-9.e-]+"#.into(), r#""duration":[D]"#),
        (
            r#""testrunuid":"[0-9a-f]+""#.into(),
            r#""testrunuid":"[UID]""#,
        ),
        (r"=+ ([^=]+) =+".into(), "== $1 =="),
        (
            r"Python \d+\.\d+\.\d+\S* /[^\s\\]+".into(),
            "Python [VERSION] [PYTHON]",
        ),
    ]
}

/// stdout from the line after the header (`created: ...`) to the end.
fn after_header(out: &Output) -> String {
    let start = out
        .stdout
        .find("created: ")
        .unwrap_or_else(|| panic!("no created: line\n{}", out.context()));
    out.stdout[start..].to_owned()
}

fn assert_output(name: &str, project: &Project, text: &str) {
    let filters: Vec<(String, &str)> = redactions(project);
    let filters: Vec<(&str, &str)> = filters.iter().map(|(f, r)| (f.as_str(), *r)).collect();
    insta::with_settings!({filters => filters, prepend_module_to_snapshot => false}, {
        insta::assert_snapshot!(name, text);
    });
}

#[test]
fn a_crashed_worker_s_report() {
    let project = Project::new("faults_crash");
    let out = shoal(
        &project,
        &[
            "-k",
            "sigkill_self or exit_in_setup or before and 0",
            "test_crash.py",
        ],
    )
    .run();
    out.assert_code(1);
    assert_output("crashed_worker", &project, &after_header(&out));
}

#[test]
fn worker_errors_outside_any_test() {
    let project = Project::new("faults_session_exit");
    let out = shoal::<&str>(&project, &[])
        .env("FAULTS_MODE", "sessionfinish")
        .run();
    out.assert_code(1);
    assert_output("worker_errors", &project, &after_header(&out));
}

#[test]
fn flaky_tests_in_the_summary() {
    let project = Project::new("faults_retry");
    let out = shoal(
        &project,
        &["-rA", "--retries", "2", "-k", "fails_twice or filler and 0"],
    )
    .run();
    out.assert_code(0);
    assert_output("flaky", &project, &after_header(&out));
}

#[test]
fn the_stop_line_after_maxfail() {
    let project = Project::new("maxfail");
    let out = shoal(&project, &["--maxfail", "2"]).run();
    out.assert_code(1);
    assert_output("maxfail", &project, &after_header(&out));
}

#[test]
fn report_json_events() {
    let project = Project::new("reports_events");
    let out = shoal(
        &project,
        &["--report-json", "-", "-k", "passed_plain or failed_assert"],
    )
    .run();
    out.assert_code(1);
    assert_output("report_json", &project, &out.stdout);
}
