//! Snapshots of what shoal prints, so that a change to it shows in review: the terminal's
//! output of typical runs (passing, failures, `-v`, `-s`, a crash, a timeout, FLAKY, `-x`),
//! each both through a pipe and as a pseudo-terminal 100 columns wide shows it once the
//! live view is gone (`*_tty`); WORKER ERRORS, the stop line, `--triage`'s section and the
//! `--report-json` events.
//! One worker (`-n 1`) keeps the order fixed; durations, the project's path, the interpreter,
//! a timed-out test's stacks, the run's ids and the controller's own CPU and memory are redacted. The snapshots live in
//! `snapshots/`; after an intended change, `INSTA_UPDATE=always` (or `cargo insta review`)
//! rewrites them.

use crate::common::{screen, Output, Project, Run};

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
            r#""controller":\{[^}]*\}"#.into(),
            r#""controller":[USAGE]"#,
        ),
        (
            r#""testrunuid":"[0-9a-f]+""#.into(),
            r#""testrunuid":"[UID]""#,
        ),
        (r"=+ ([^=]+) =+".into(), "== $1 =="),
        (
            r"Python \d+\.\d+\.\d+\S* /[^\s\\]+".into(),
            "Python [VERSION] [PYTHON]",
        ),
        (r"python: /\S+ \(".into(), "python: [PYTHON] ("),
        (r"--run \d+-[0-9a-f]+".into(), "--run [RUN]"),
        // A timed-out test's stacks: pytest's and pluggy's frames, as their versions have them.
        (
            r"(?s)(when the timeout fired:\n).*?\n(== short test summary info ==)".into(),
            "$1[STACKS]\n$2",
        ),
    ]
}

/// `text` from the line after the header (`created: ...`) to the end.
fn after_header(text: &str, out: &Output) -> String {
    let start = text
        .find("created: ")
        .unwrap_or_else(|| panic!("no created: line\n{}", out.context()));
    text[start..].to_owned()
}

fn assert_output(name: &str, project: &Project, text: &str) {
    let filters: Vec<(String, &str)> = redactions(project);
    let filters: Vec<(&str, &str)> = filters.iter().map(|(f, r)| (f.as_str(), *r)).collect();
    insta::with_settings!({filters => filters, prepend_module_to_snapshot => false}, {
        insta::assert_snapshot!(name, text);
    });
}

/// Runs `shoal -n 1 -p no:cacheprovider <args>` on `fixture` (with `env` set), checks the
/// exit code and compares its stdout, from the `created:` line on (all of it with
/// `--report-json -`), with the snapshot `name`. pytest's layout is the one it uses off CI
/// (on CI it does not cut the short summary's lines to the terminal's width).
fn assert_run(name: &str, fixture: &str, args: &[&str], env: &[(&str, &str)], code: i32) {
    assert_run_of(name, fixture, &shoal_args(args), env, code);
}

/// [`assert_run`] with the whole command line `args`.
fn assert_run_of(name: &str, fixture: &str, args: &[&str], env: &[(&str, &str)], code: i32) {
    let project = Project::new(fixture);
    let mut run = off_ci(project.shoal(args));
    for (key, value) in env {
        run = run.env(key, value);
    }
    let out = run.run();
    out.assert_code(code);
    let text = if args.contains(&"--report-json") {
        out.stdout.clone()
    } else {
        after_header(&out.stdout, &out)
    };
    assert_output(name, &project, &text);
}

/// [`assert_run`] twice: through a pipe, compared with the snapshot `name`, and in a
/// pseudo-terminal, where what the screen shows at the end is compared with `name_tty`.
fn assert_screens(name: &str, fixture: &str, args: &[&str], code: i32) {
    assert_screens_of(name, fixture, &shoal_args(args), code);
}

/// [`assert_screens`] with the whole command line `args`.
fn assert_screens_of(name: &str, fixture: &str, args: &[&str], code: i32) {
    assert_run_of(name, fixture, args, &[], code);
    let project = Project::new(fixture);
    let out = off_ci(project.shoal_in_terminal(args)).run();
    out.assert_code(code);
    let shown = screen(&project.last_stdout_bytes());
    assert_output(
        &format!("{name}_tty"),
        &project,
        &after_header(&shown, &out),
    );
}

/// `-n 1 -p no:cacheprovider <args>`.
fn shoal_args<'a>(args: &[&'a str]) -> Vec<&'a str> {
    crate::common::joined(&["-n", "1", "-p", "no:cacheprovider"], args)
}

/// A run that gets pytest's layout off CI.
fn off_ci(run: Run<'_>) -> Run<'_> {
    run.env_remove("CI").env_remove("BUILD_NUMBER")
}

#[test]
fn a_passing_run() {
    assert_screens("passing", "reports_terminal", &["-k", "pass"], 0);
}

#[test]
fn failures() {
    assert_screens("failures", "reports_terminal", &[], 1);
}

#[test]
fn verbose() {
    assert_screens("verbose", "reports_terminal", &["-v"], 1);
}

#[test]
fn output_outside_capture() {
    assert_screens("dash_s", "reports_dash_s", &["-s"], 1);
}

#[test]
fn a_timeout() {
    let args = ["--timeout", "1", "-k", "marked_timeout or quick"];
    assert_screens("timeout", "faults_timeout", &args, 1);
}

#[test]
fn exitfirst() {
    assert_screens("exitfirst", "maxfail", &["-x"], 1);
}

#[test]
fn a_crashed_worker_s_report() {
    let args = [
        "-k",
        "sigkill_self or exit_in_setup or before and 0",
        "test_crash.py",
    ];
    assert_screens("crashed_worker", "faults_crash", &args, 1);
}

#[test]
fn worker_errors_outside_any_test() {
    let env = [("FAULTS_MODE", "sessionfinish")];
    assert_run("worker_errors", "faults_session_exit", &[], &env, 1);
}

#[test]
fn flaky_tests_in_the_summary() {
    let args = ["-rA", "--retries", "2", "-k", "fails_twice or filler and 0"];
    assert_screens("flaky", "faults_retry", &args, 0);
}

#[test]
fn the_stop_line_after_maxfail() {
    assert_run("maxfail", "maxfail", &["--maxfail", "2"], &[], 1);
}

#[test]
fn report_json_events() {
    let args = ["--report-json", "-", "-k", "passed_plain or failed_assert"];
    assert_run("report_json", "reports_events", &args, &[], 1);
}

#[test]
fn the_triage_section() {
    // With pytest's cache, where the run's record is: triage reads its sequences.
    let args = [
        "-n",
        "1",
        "--dist",
        "loadfile",
        "--triage",
        "--tb=no",
        "test_env.py",
        "test_flaky.py::test_alone_fails",
    ];
    assert_screens_of("triage", "pollution", &args, 1);
}
