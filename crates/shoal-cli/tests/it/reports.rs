//! Reports that CI and people rely on: the JUnit XML file, pytest's cache (`--lf`, `--ff`,
//! `--nf`), the durations store and `--durations`, and the `--report-json` event stream.
//!
//! Where pytest defines the report, shoal's is compared with serial pytest's on the same
//! fixture project (`tests/fixtures/reports_*`).

use std::{
    collections::{BTreeMap, BTreeSet},
    fs,
    path::Path,
};

use crate::common::{joined, Output, Project};
use serde_json::Value;

// ============================================================================================
// JUnit XML
// ============================================================================================

/// One XML element: enough of a DOM to compare two JUnit files.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub(super) struct Element {
    tag: String,
    attrs: BTreeMap<String, String>,
    text: String,
    children: Vec<Element>,
}

impl Element {
    fn new(tag: &str) -> Self {
        Self {
            tag: tag.to_owned(),
            attrs: BTreeMap::new(),
            text: String::new(),
            children: Vec::new(),
        }
    }

    fn attr(&self, name: &str) -> Option<&str> {
        self.attrs.get(name).map(String::as_str)
    }

    /// Every element below this one (depth first), itself included.
    fn descendants(&self) -> Vec<&Element> {
        let mut all = vec![self];
        for child in &self.children {
            all.extend(child.descendants());
        }
        all
    }

    /// The element without what legitimately differs between two runs: timings, the
    /// timestamp, the host, and object addresses in tracebacks (`<X object at 0x7f...>`).
    fn normalized(&self) -> Element {
        Element {
            tag: self.tag.clone(),
            attrs: self
                .attrs
                .iter()
                .filter(|(k, _)| !matches!(k.as_str(), "time" | "timestamp" | "hostname"))
                .map(|(k, v)| (k.clone(), without_addresses(v)))
                .collect(),
            text: without_addresses(&self.text),
            children: self.children.iter().map(Element::normalized).collect(),
        }
    }
}

/// `0x7f13d0a0a6d0` -> `0x?`.
fn without_addresses(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(at) = rest.find("0x") {
        out.push_str(&rest[..at + 2]);
        rest = &rest[at + 2..];
        let hex = rest
            .find(|c: char| !c.is_ascii_hexdigit())
            .unwrap_or(rest.len());
        if hex > 0 {
            out.push('?');
        }
        rest = &rest[hex..];
    }
    out.push_str(rest);
    out
}

fn parse_xml(text: &str, what: &str) -> Element {
    use quick_xml::{events::Event, Reader};

    fn element(start: &quick_xml::events::BytesStart, what: &str) -> Element {
        let mut el = Element::new(&String::from_utf8_lossy(start.name().as_ref()));
        for attr in start.attributes() {
            let attr = attr.unwrap_or_else(|e| panic!("{what}: bad attribute: {e}"));
            let key = String::from_utf8_lossy(attr.key.as_ref()).into_owned();
            let value = attr
                .unescape_value()
                .unwrap_or_else(|e| panic!("{what}: bad attribute value: {e}"))
                .into_owned();
            el.attrs.insert(key, value);
        }
        el
    }

    let mut reader = Reader::from_str(text);
    let mut stack = vec![Element::new("#document")];
    loop {
        let event = reader
            .read_event()
            .unwrap_or_else(|e| panic!("{what} is not well-formed XML: {e}\n{text}"));
        match event {
            Event::Start(start) => stack.push(element(&start, what)),
            Event::Empty(start) => {
                let el = element(&start, what);
                stack.last_mut().unwrap().children.push(el);
            }
            Event::End(_) => {
                let el = stack.pop().unwrap();
                stack
                    .last_mut()
                    .unwrap_or_else(|| panic!("{what}: unbalanced end tag"))
                    .children
                    .push(el);
            }
            Event::Text(t) => {
                let t = t
                    .unescape()
                    .unwrap_or_else(|e| panic!("{what}: bad text: {e}"));
                stack.last_mut().unwrap().text.push_str(&t);
            }
            Event::CData(c) => {
                let t = String::from_utf8_lossy(&c.into_inner()).into_owned();
                stack.last_mut().unwrap().text.push_str(&t);
            }
            Event::Eof => break,
            _ => {}
        }
    }
    assert_eq!(stack.len(), 1, "{what}: unclosed elements");
    let mut document = stack.pop().unwrap();
    assert_eq!(
        document.children.len(),
        1,
        "{what}: expected one root element"
    );
    document.children.pop().unwrap()
}

fn read_xml(project: &Project, name: &str, output: &Output) -> Element {
    let path = project.path.join(name);
    let text = fs::read_to_string(&path).unwrap_or_else(|e| {
        panic!(
            "the run wrote no {} ({e})\n{}",
            path.display(),
            output.context()
        )
    });
    parse_xml(&text, name)
}

/// The `<testsuite>` of a pytest JUnit file (pytest writes one, inside `<testsuites>`).
fn testsuite(root: &Element) -> &Element {
    assert_eq!(root.tag, "testsuites", "unexpected JUnit root: {root:#?}");
    assert_eq!(
        root.children.len(),
        1,
        "expected exactly one <testsuite>: {root:#?}"
    );
    let suite = &root.children[0];
    assert_eq!(suite.tag, "testsuite");
    suite
}

/// The testsuite's own attributes, without timings, with its non-testcase children sorted.
fn suite_summary(root: &Element) -> (BTreeMap<String, String>, Vec<Element>) {
    let suite = testsuite(root).normalized();
    let mut others: Vec<Element> = suite
        .children
        .iter()
        .filter(|c| c.tag != "testcase")
        .cloned()
        .map(|mut c| {
            c.children.sort();
            c
        })
        .collect();
    others.sort();
    (suite.attrs, others)
}

/// The testcases, normalized and sorted (the order of a parallel run is not pytest's).
fn testcases(root: &Element) -> Vec<Element> {
    let mut cases: Vec<Element> = testsuite(root)
        .children
        .iter()
        .filter(|c| c.tag == "testcase")
        .map(Element::normalized)
        .collect();
    cases.sort();
    cases
}

/// Runs serial pytest and `shoal -n 2` with `--junitxml` and `extra`; the two files must hold
/// the same testsuite (name, counts, properties) and the same testcases.
fn assert_same_junit(extra: &[&str]) -> Element {
    assert_same_junit_with(extra, &[])
}

/// [`assert_same_junit`] with `shoal_extra` given to shoal only.
fn assert_same_junit_with(extra: &[&str], shoal_extra: &[&str]) -> Element {
    assert_same_junit_in("reports_junit", extra, shoal_extra)
}

/// [`assert_same_junit_with`] on another fixture (whose runs must exit 1).
fn assert_same_junit_in(fixture: &str, extra: &[&str], shoal_extra: &[&str]) -> Element {
    let project = Project::new(fixture);
    let serial = project.serial(&joined(&["--junitxml=a.xml"], extra)).run();
    serial.assert_code(1);
    let mut shoal_args = vec!["-n", "2", "--junitxml=b.xml"];
    if shoal_extra.first() == Some(&"-n") {
        shoal_args.drain(..2);
    }
    shoal_args.extend_from_slice(shoal_extra);
    shoal_args.extend_from_slice(extra);
    let shoal = project.shoal(&shoal_args).run();
    shoal.assert_code(1);

    assert_same_junit_files(&project, ("a.xml", &serial), ("b.xml", &shoal))
}

/// Asserts that the JUnit file `actual` (written by shoal) holds what serial pytest's
/// `expected` holds: the same testsuite (name, counts, properties) and the same testcases,
/// timings aside. Returns serial pytest's file.
pub(super) fn assert_same_junit_files(
    project: &Project,
    (expected_name, serial): (&str, &Output),
    (actual_name, shoal): (&str, &Output),
) -> Element {
    let expected = read_xml(project, expected_name, serial);
    let actual = read_xml(project, actual_name, shoal);
    let context = || {
        format!(
            "=== serial ===\n{}\n=== shoal ===\n{}\n=== {expected_name} (serial) ===\n{}\n=== {actual_name} (shoal) ===\n{}",
            serial.context(),
            shoal.context(),
            fs::read_to_string(project.path.join(expected_name)).unwrap(),
            fs::read_to_string(project.path.join(actual_name)).unwrap()
        )
    };
    assert_eq!(
        actual.attrs,
        expected.attrs,
        "<testsuites> attributes differ\n{}",
        context()
    );
    assert_eq!(
        suite_summary(&actual),
        suite_summary(&expected),
        "<testsuite> attributes (name, tests, failures, errors, skipped) or properties differ\n{}",
        context()
    );
    let expected_cases = testcases(&expected);
    let actual_cases = testcases(&actual);
    let missing: Vec<&Element> = expected_cases
        .iter()
        .filter(|c| !actual_cases.contains(c))
        .collect();
    let extra_cases: Vec<&Element> = actual_cases
        .iter()
        .filter(|c| !expected_cases.contains(c))
        .collect();
    assert!(
        missing.is_empty() && extra_cases.is_empty() && expected_cases == actual_cases,
        "testcases differ\nonly in serial pytest's file: {missing:#?}\nonly in shoal's file: \
         {extra_cases:#?}\n{}",
        context()
    );
    expected
}

/// Asserts that the serial file really exercises what the comparison is meant to cover.
fn assert_fixture_covers(serial: &Element, tags: &[&str]) {
    let all = serial.descendants();
    for tag in tags {
        assert!(
            all.iter().any(|e| e.tag == *tag),
            "serial pytest's JUnit file has no <{tag}>: the fixture no longer covers it\n{serial:#?}"
        );
    }
    let suite = testsuite(serial);
    for count in ["tests", "failures", "errors", "skipped"] {
        assert_ne!(
            suite.attr(count),
            Some("0"),
            "fixture has no {count}: {:?}",
            suite.attrs
        );
    }
    let skip_types: BTreeSet<&str> = all
        .iter()
        .filter(|e| e.tag == "skipped")
        .filter_map(|e| e.attr("type"))
        .collect();
    assert!(
        skip_types.contains("pytest.skip") && skip_types.contains("pytest.xfail"),
        "fixture lacks skips or xfails: {skip_types:?}"
    );
    assert!(
        all.iter()
            .any(|e| e.tag == "testcase" && e.attr("classname") == Some("overridden.Class")),
        "record_xml_attribute did not reach the serial file"
    );
}

#[test]
fn junit_matches_serial_pytest() {
    let serial = assert_same_junit(&[]);
    assert_fixture_covers(
        &serial,
        &["failure", "error", "skipped", "properties", "property"],
    );
    // record_testsuite_property lands on the suite, not on a testcase.
    let suite_properties = testsuite(&serial)
        .children
        .iter()
        .find(|c| c.tag == "properties")
        .unwrap_or_else(|| panic!("no suite <properties>: {serial:#?}"));
    assert!(suite_properties
        .children
        .iter()
        .any(|p| p.attr("name") == Some("suite_key") && p.attr("value") == Some("suite value")));
}

/// With a plugin that reads reports, the collecting process replays them (skips included,
/// whose `longrepr` is a tuple), and the junit file is still the controller's, written once.
#[test]
fn junit_matches_serial_pytest_when_reports_are_replayed() {
    assert_same_junit(&["-p", "replay_reports"]);
}

#[test]
fn junit_matches_serial_pytest_with_xunit1() {
    let serial = assert_same_junit(&["-o", "junit_family=xunit1"]);
    assert_fixture_covers(&serial, &["failure", "error", "skipped", "property"]);
    // xunit1 adds file and line to every testcase.
    let suite = testsuite(&serial);
    assert!(
        suite
            .children
            .iter()
            .filter(|c| c.tag == "testcase")
            .all(|c| c.attr("file").is_some() && c.attr("line").is_some()),
        "xunit1 testcases lack file/line: {suite:#?}"
    );
}

// Captured output in the file: compared with one worker, because two forked workers mix up
// each other's captured output (`junit_captured_output_matches_with_two_workers`) and spawned
// workers write no testcases at all (`junit_matches_serial_pytest_with_spawned_workers`).

#[test]
fn junit_matches_serial_pytest_with_all_logging() {
    let serial = assert_same_junit_with(&["-o", "junit_logging=all"], &["-n", "1"]);
    assert_fixture_covers(&serial, &["failure", "error", "system-out", "system-err"]);
    let texts: String = serial
        .descendants()
        .iter()
        .filter(|e| e.tag == "system-out" || e.tag == "system-err")
        .map(|e| e.text.as_str())
        .collect();
    for needle in [
        "hello on stdout",
        "hello on stderr",
        "a log record",
        "stdout from setup",
    ] {
        assert!(
            texts.contains(needle),
            "serial file lacks captured {needle:?}"
        );
    }
}

#[test]
fn junit_matches_serial_pytest_with_xunit1_and_all_logging() {
    assert_same_junit_with(
        &["-o", "junit_family=xunit1", "-o", "junit_logging=all"],
        &["-n", "1"],
    );
}

#[test]
fn junit_matches_serial_pytest_with_out_err_and_passing_tests_unlogged() {
    assert_same_junit_with(
        &[
            "-o",
            "junit_logging=out-err",
            "-o",
            "junit_log_passing_tests=false",
        ],
        &["-n", "1"],
    );
}

/// Two forked workers (the default) must keep each test's captured output with that test.
#[test]
fn junit_captured_output_matches_with_two_workers() {
    // Tests that print, then take a moment to fail: the mix-up shows nearly every time.
    assert_same_junit_in("reports_capture_shared", &["-o", "junit_logging=all"], &[]);
    assert_same_junit(&["-o", "junit_logging=all"]);
}

#[test]
fn junit_matches_serial_pytest_with_spawned_workers() {
    assert_same_junit_with(&[], &["--start", "spawn"]);
}

#[test]
fn junit_matches_serial_pytest_with_prefix_and_suite_name() {
    let serial = assert_same_junit(&["--junit-prefix=pre", "-o", "junit_suite_name=my_suite"]);
    assert_eq!(testsuite(&serial).attr("name"), Some("my_suite"));
}

#[test]
fn junit_file_in_a_new_directory_is_created() {
    let project = Project::new("reports_junit");
    let out = project
        .shoal(["-n", "2", "--junitxml=out/deeper/junit.xml"])
        .run();
    out.assert_code(1);
    let root = read_xml(&project, "out/deeper/junit.xml", &out);
    assert_eq!(testcases(&root).len(), 30, "{}", out.context());
}

#[test]
fn junit_note_names_the_file_once() {
    let project = Project::new("reports_junit");
    let (serial, out) = project.serial_and_shoal(&["--junitxml=out/a.xml"]);
    out.assert_code(1);
    let notes = |o: &Output| -> Vec<String> {
        o.stdout
            .lines()
            .filter(|l| l.contains("generated xml file: "))
            .map(str::to_owned)
            .collect()
    };
    let expected = notes(&serial);
    assert_eq!(expected.len(), 1, "{}", serial.context());
    assert!(expected[0].contains(&project.path.join("out/a.xml").display().to_string()));
    assert_eq!(notes(&out), expected, "{}", out.context());
}

#[test]
fn junit_counts_collection_errors_like_pytest() {
    let project = Project::empty();
    project.write(
        "test_ok.py",
        "def test_ok():\n    pass\n\ndef test_ok2():\n    pass\n",
    );
    project.write(
        "test_broken.py",
        "import module_that_does_not_exist_xyz\n\ndef test_x():\n    pass\n",
    );
    let on = "--continue-on-collection-errors";
    let serial = project.serial(&[on, "--junitxml=a.xml"]).run();
    let shoal = project.shoal_n2(&[on, "--junitxml=b.xml"]).run();
    let expected = read_xml(&project, "a.xml", &serial);
    let actual = read_xml(&project, "b.xml", &shoal);
    assert_eq!(
        suite_summary(&actual),
        suite_summary(&expected),
        "testsuite counts differ\n=== serial ===\n{}\n=== shoal ===\n{}",
        serial.context(),
        shoal.context()
    );
    assert_eq!(testcases(&actual), testcases(&expected));
}

// ============================================================================================
// pytest's cache: lastfailed, --lf, --ff, --nf, --cache-clear
// ============================================================================================

/// The failures of `reports_cache` while `REPORTS_FIXED` is unset.
const CACHE_FAILURES: [&str; 3] = [
    "test_a.py::test_a2",
    "test_b.py::test_b2_setup_error",
    "test_b.py::test_b3",
];

fn cache_failures() -> BTreeSet<String> {
    CACHE_FAILURES.iter().map(|s| s.to_string()).collect()
}

/// The keys of `.pytest_cache/v/cache/lastfailed`, or `None` when the file does not exist.
fn lastfailed(project: &Project) -> Option<BTreeSet<String>> {
    let path = project.path.join(".pytest_cache/v/cache/lastfailed");
    let text = match fs::read_to_string(&path) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return None,
        Err(e) => panic!("read {}: {e}", path.display()),
    };
    let value: Value = serde_json::from_str(&text)
        .unwrap_or_else(|e| panic!("{} is not JSON ({e}): {text:?}", path.display()));
    let object = value
        .as_object()
        .unwrap_or_else(|| panic!("{} is not a JSON object: {text}", path.display()));
    for (key, v) in object {
        assert_eq!(v, &Value::Bool(true), "lastfailed[{key:?}] is not true");
    }
    Some(object.keys().cloned().collect())
}

#[track_caller]
fn assert_lastfailed(project: &Project, expected: &BTreeSet<String>, output: &Output) {
    let actual = lastfailed(project).unwrap_or_else(|| {
        panic!(
            "the run left no .pytest_cache/v/cache/lastfailed\n{}",
            output.context()
        )
    });
    assert_eq!(
        &actual,
        expected,
        "cache/lastfailed is not what pytest would have written\n{}",
        output.context()
    );
}

/// The node ids of shoal's `-v` lines (`[gw0] [ 50%] PASSED a.py::t`), in the order printed;
/// a test with several lines (a teardown error) appears once, at its first line.
fn shoal_verbose_order(output: &Output) -> Vec<String> {
    let mut seen = Vec::new();
    for (_, _, nodeid) in shoal_verbose_lines(&output.stdout) {
        if !seen.contains(&nodeid) {
            seen.push(nodeid);
        }
    }
    seen
}

/// `[gw0] [ 50%] PASSED a.py::t` -> (`gw0`, `PASSED`, `a.py::t`); other lines are skipped.
/// shoal marks errors outside the call as `a.py::t (setup)`; the suffix is dropped.
fn shoal_verbose_lines(stdout: &str) -> Vec<(String, String, String)> {
    let mut lines = Vec::new();
    for line in stdout.lines() {
        let Some(rest) = line.strip_prefix("[gw") else {
            continue;
        };
        let Some((number, rest)) = rest.split_once("] [") else {
            continue;
        };
        if number.parse::<u32>().is_err() {
            continue;
        }
        let Some((pct, rest)) = rest.split_once("%] ") else {
            continue;
        };
        if pct.trim().parse::<u32>().is_err() {
            continue;
        }
        let Some((word, nodeid)) = rest.split_once(' ') else {
            continue;
        };
        let nodeid = nodeid
            .trim_end()
            .trim_end_matches(" (setup)")
            .trim_end_matches(" (teardown)");
        lines.push((format!("gw{number}"), word.to_owned(), nodeid.to_owned()));
    }
    lines
}

/// The node ids of serial pytest's `-v` lines (`a.py::t PASSED   [ 50%]`), in order.
fn serial_verbose_order(output: &Output) -> Vec<String> {
    let mut seen = Vec::new();
    for line in output.stdout.lines() {
        let line = line.trim_end();
        if !line.ends_with("%]") || !line.contains("::") {
            continue;
        }
        let nodeid = line.split_whitespace().next().unwrap().to_owned();
        if !seen.contains(&nodeid) {
            seen.push(nodeid);
        }
    }
    seen
}

fn as_set(ids: &[String]) -> BTreeSet<String> {
    ids.iter().cloned().collect()
}

#[test]
fn lastfailed_lists_exactly_the_failures() {
    let project = Project::new("reports_cache");
    let out = project.shoal(["-n", "2"]).run();
    out.assert_code(1);
    assert_lastfailed(&project, &cache_failures(), &out);
}

/// The same runs, one project under serial pytest and a copy under shoal: after every run,
/// `cache/lastfailed` must be the same in both.
#[test]
fn lastfailed_evolves_like_serial_pytest() {
    let serial_project = Project::new("reports_cache");
    let shoal_project = Project::new("reports_cache");
    // (arguments, REPORTS_FIXED)
    let steps: [(&[&str], &str); 5] = [
        (&[], "0"),
        // Only test_a.py, fixed: test_a2 leaves the list; test_b's failures stay.
        (&["test_a.py"], "1"),
        // Still broken, only test_b3 runs: nothing changes.
        (&["test_b.py::test_b3"], "0"),
        // Everything that failed last, now fixed.
        (&["--lf"], "1"),
        // A full run, broken again.
        (&[], "0"),
    ];
    for (n, (args, fixed)) in steps.iter().enumerate() {
        let mut serial_args = vec!["-p", "no:xdist"];
        serial_args.extend_from_slice(args);
        let serial = serial_project
            .pytest(&serial_args)
            .env("REPORTS_FIXED", fixed)
            .run();
        let mut shoal_args = vec!["-n", "2"];
        shoal_args.extend_from_slice(args);
        let shoal = shoal_project
            .shoal(&shoal_args)
            .env("REPORTS_FIXED", fixed)
            .run();
        assert_eq!(
            shoal.code,
            serial.code,
            "step {n} ({args:?}): exit codes differ\n=== serial ===\n{}\n=== shoal ===\n{}",
            serial.context(),
            shoal.context()
        );
        assert_eq!(
            lastfailed(&shoal_project),
            lastfailed(&serial_project),
            "step {n} ({args:?}, REPORTS_FIXED={fixed}): cache/lastfailed differs from serial \
             pytest's\n=== serial ===\n{}\n=== shoal ===\n{}",
            serial.context(),
            shoal.context()
        );
    }
}

#[test]
fn lf_reruns_exactly_the_failures_under_shoal_and_pytest() {
    let project = Project::new("reports_cache");
    let first = project.shoal(["-n", "2"]).run();
    first.assert_code(1);

    let shoal = project.shoal(["-n", "2", "--lf", "-v"]).run();
    shoal.assert_code(1);
    assert_eq!(
        as_set(&shoal_verbose_order(&shoal)),
        cache_failures(),
        "shoal --lf did not rerun exactly the failures\n{}",
        shoal.context()
    );
    shoal.assert_stdout_contains("run-last-failure: rerun previous 3 failures");

    // pytest itself reads what shoal wrote.
    let serial = project.pytest(["-p", "no:xdist", "--lf", "-v"]).run();
    serial.assert_code(1);
    assert_eq!(
        as_set(&serial_verbose_order(&serial)),
        cache_failures(),
        "pytest --lf did not rerun exactly the failures shoal recorded\n{}",
        serial.context()
    );
    serial.assert_stdout_contains("run-last-failure: rerun previous 3 failures");
}

#[test]
fn lf_after_the_fix_passes_and_empties_lastfailed() {
    let project = Project::new("reports_cache");
    project.shoal(["-n", "2"]).run().assert_code(1);
    let fixed = project
        .shoal(["-n", "2", "--lf", "-v"])
        .env("REPORTS_FIXED", "1")
        .run();
    fixed.assert_code(0);
    assert_eq!(as_set(&shoal_verbose_order(&fixed)), cache_failures());
    assert_lastfailed(&project, &BTreeSet::new(), &fixed);

    // And a full run of the fixed suite keeps it empty.
    let full = project.shoal(["-n", "2"]).env("REPORTS_FIXED", "1").run();
    full.assert_code(0);
    assert_lastfailed(&project, &BTreeSet::new(), &full);
}

#[test]
fn ff_runs_the_failures_first() {
    let project = Project::new("reports_cache");
    project.shoal(["-n", "2"]).run().assert_code(1);
    let all = crate::common::collected_ids(&project, &[]);

    let out = project.shoal(["-n", "1", "--ff", "-v"]).run();
    out.assert_code(1);
    let order = shoal_verbose_order(&out);
    assert_eq!(
        as_set(&order),
        as_set(&all),
        "--ff must run every test\n{}",
        out.context()
    );
    assert_eq!(
        as_set(&order[..CACHE_FAILURES.len()]),
        cache_failures(),
        "--ff did not run the failures first\n{}",
        out.context()
    );

    // pytest's order for the same cache: the same.
    let serial = project.pytest(["-p", "no:xdist", "--ff", "-v"]).run();
    assert_eq!(
        order,
        serial_verbose_order(&serial),
        "shoal -n 1 --ff ran the tests in another order than pytest --ff\n=== serial ===\n{}\n=== shoal ===\n{}",
        serial.context(),
        out.context()
    );
}

#[test]
fn nf_runs_new_tests_first() {
    let project = Project::new("reports_cache");
    project
        .shoal(["-n", "2"])
        .env("REPORTS_FIXED", "1")
        .run()
        .assert_code(0);
    project.write(
        "test_new.py",
        "def test_new_1():\n    pass\n\ndef test_new_2():\n    pass\n",
    );
    let out = project
        .shoal(["-n", "1", "--nf", "-v"])
        .env("REPORTS_FIXED", "1")
        .run();
    out.assert_code(0);
    let order = shoal_verbose_order(&out);
    assert_eq!(
        order.len(),
        10,
        "expected 10 tests to run\n{}",
        out.context()
    );
    assert_eq!(
        as_set(&order[..2]),
        as_set(&[
            "test_new.py::test_new_1".into(),
            "test_new.py::test_new_2".into()
        ]),
        "--nf did not run the new tests first\n{}",
        out.context()
    );
}

#[test]
fn cache_clear_clears_the_cache_before_the_run() {
    let project = Project::new("reports_cache");
    project.shoal(["-n", "2"]).run().assert_code(1);
    assert_eq!(lastfailed(&project), Some(cache_failures()));
    let sentinel = project.path.join(".pytest_cache/v/reports/sentinel");
    fs::create_dir_all(sentinel.parent().unwrap()).unwrap();
    fs::write(&sentinel, "\"planted\"").unwrap();
    let store = project.path.join(".pytest_cache/shoal/durations.json");
    assert!(store.is_file(), "the first run wrote no durations store");

    // --lf together with --cache-clear: the failures are forgotten first, so all tests run.
    let out = project
        .shoal(["-n", "2", "--cache-clear", "--lf", "-v"])
        .env("REPORTS_FIXED", "1")
        .run();
    out.assert_code(0);
    assert_eq!(
        as_set(&shoal_verbose_order(&out)),
        as_set(&crate::common::collected_ids(&project, &[])),
        "after --cache-clear, --lf must run everything\n{}",
        out.context()
    );
    assert!(
        !sentinel.exists(),
        "--cache-clear left {} behind\n{}",
        sentinel.display(),
        out.context()
    );
    // Nothing failed in the run after the clear: the list is empty or absent, never stale.
    let after = lastfailed(&project).unwrap_or_default();
    assert!(
        after.is_empty(),
        "stale lastfailed after --cache-clear: {after:?}"
    );
}

#[test]
fn no_cacheprovider_writes_no_cache() {
    let project = Project::new("reports_cache");
    let out = project.shoal(["-n", "2", "-p", "no:cacheprovider"]).run();
    out.assert_code(1);
    let cache = project.path.join(".pytest_cache");
    assert!(
        !cache.exists(),
        "-p no:cacheprovider, yet {} exists: {:?}\n{}",
        cache.display(),
        list_files(&cache),
        out.context()
    );
}

#[test]
fn cache_dir_ini_option_is_honoured() {
    let project = Project::new("reports_cache");
    let out = project
        .shoal(["-n", "2", "-o", "cache_dir=elsewhere/cache"])
        .run();
    out.assert_code(1);
    assert!(
        !project.path.join(".pytest_cache").exists(),
        "the default cache dir was written despite cache_dir"
    );
    let text = fs::read_to_string(project.path.join("elsewhere/cache/v/cache/lastfailed"))
        .unwrap_or_else(|e| panic!("no lastfailed under cache_dir ({e})\n{}", out.context()));
    let keys: BTreeSet<String> = serde_json::from_str::<BTreeMap<String, Value>>(&text)
        .unwrap()
        .into_keys()
        .collect();
    assert_eq!(keys, cache_failures());
    assert!(project
        .path
        .join("elsewhere/cache/shoal/durations.json")
        .is_file());
}

fn list_files(dir: &Path) -> Vec<String> {
    let mut found = Vec::new();
    if let Ok(entries) = fs::read_dir(dir) {
        for entry in entries.flatten() {
            let path = entry.path();
            if path.is_dir() {
                found.extend(list_files(&path));
            } else {
                found.push(path.display().to_string());
            }
        }
    }
    found
}

// ============================================================================================
// Durations: --durations, --durations-min, the durations store, pytest-split's file
// ============================================================================================

const SLEEPERS: [(&str, f64); 3] = [
    ("test_durations.py::test_sleep_01", 0.1),
    ("test_durations.py::test_sleep_02", 0.2),
    ("test_durations.py::test_sleep_03", 0.3),
];

/// The lines of the `slowest ... durations` section (header excluded) up to the next `=` line.
fn durations_section<'a>(output: &'a Output, title: &str) -> Vec<&'a str> {
    let lines: Vec<&str> = output.stdout.lines().collect();
    let header = format!(" {title} ");
    let start = lines
        .iter()
        .position(|l| l.starts_with('=') && l.contains(&header))
        .unwrap_or_else(|| panic!("no {title:?} section\n{}", output.context()));
    assert!(
        lines[start].trim_matches('=').trim() == title,
        "bad durations header {:?}",
        lines[start]
    );
    lines[start + 1..]
        .iter()
        .take_while(|l| !l.starts_with('='))
        .copied()
        .collect()
}

/// `0.30s call     a.py::t` -> (0.30, `call`, `a.py::t`), checking pytest's exact layout.
fn duration_line(line: &str) -> Option<(f64, String, String)> {
    let (seconds, rest) = line.split_once("s ")?;
    let seconds: f64 = seconds.parse().ok()?;
    let when = rest.get(..8)?.trim_end().to_owned();
    let nodeid = rest.get(9..)?.to_owned();
    if !matches!(when.as_str(), "setup" | "call" | "teardown") {
        return None;
    }
    let rebuilt = format!("{seconds:.2}s {when:<8} {nodeid}");
    (rebuilt == line).then_some((seconds, when, nodeid))
}

#[track_caller]
fn assert_slowest_are_the_sleepers(entries: &[(f64, String, String)], output: &Output) {
    let names: BTreeSet<(String, String)> = entries
        .iter()
        .map(|(_, w, n)| (w.clone(), n.clone()))
        .collect();
    let expected: BTreeSet<(String, String)> = SLEEPERS
        .iter()
        .map(|(n, _)| ("call".to_owned(), n.to_string()))
        .collect();
    assert_eq!(
        names,
        expected,
        "the slowest phases are not the three sleeping calls\n{}",
        output.context()
    );
    for pair in entries.windows(2) {
        assert!(
            pair[0].0 >= pair[1].0,
            "durations not sorted slowest first: {entries:?}\n{}",
            output.context()
        );
    }
    for (seconds, _, nodeid) in entries {
        let slept = SLEEPERS.iter().find(|(n, _)| n == nodeid).unwrap().1;
        assert!(
            *seconds + 0.005 >= slept,
            "{nodeid} slept {slept}s but shows {seconds}s\n{}",
            output.context()
        );
    }
}

#[test]
fn durations_lists_the_slowest_phases_like_pytest() {
    let project = Project::new("reports_durations");
    let (serial, out) = project.serial_and_shoal(&["--durations=3"]);
    serial.assert_code(0);
    out.assert_code(0);
    // A conftest that reads reports makes the collecting process replay them: pytest's own
    // durations section must still print once, with or without workers.
    let replayed = Project::new("reports_durations");
    replayed.write(
        "conftest.py",
        "def pytest_runtest_logreport(report):\n    pass\n",
    );
    for workers in ["2", "0"] {
        let again = replayed
            .shoal(["-n", workers, "-p", "no:cacheprovider", "--durations=3"])
            .run();
        again.assert_code(0);
        assert_eq!(
            again.stdout.matches(" slowest 3 durations ").count(),
            1,
            "-n {workers}\n{}",
            again.context()
        );
    }
    for output in [&serial, &out] {
        let section = durations_section(output, "slowest 3 durations");
        let entries: Vec<(f64, String, String)> = section
            .iter()
            .map(|l| {
                duration_line(l).unwrap_or_else(|| {
                    panic!("not a pytest durations line: {l:?}\n{}", output.context())
                })
            })
            .collect();
        assert_eq!(entries.len(), 3, "{}", output.context());
        assert_slowest_are_the_sleepers(&entries, output);
    }
    // The section sits before the final line, as in pytest.
    let lines: Vec<&str> = out.stdout.lines().collect();
    let header = lines
        .iter()
        .position(|l| l.contains(" slowest 3 durations "))
        .unwrap();
    let stats = lines
        .iter()
        .rposition(|l| crate::common::parse_stats(l).is_some())
        .unwrap();
    assert!(
        header < stats,
        "durations after the stats line\n{}",
        out.context()
    );
}

#[test]
fn durations_min_hides_fast_phases_like_pytest() {
    let args = ["--durations=0", "--durations-min=0.09"];
    let project = Project::new("reports_durations");
    let (serial, out) = project.serial_and_shoal(&args);
    serial.assert_code(0);
    out.assert_code(0);

    let expected_section = durations_section(&serial, "slowest durations");
    let section = durations_section(&out, "slowest durations");
    // Three sleeping calls, a blank line, then how many were hidden: 6 tests x 3 phases - 3.
    assert_eq!(section.len(), 5, "{}", out.context());
    let entries: Vec<(f64, String, String)> = section[..3]
        .iter()
        .map(|l| duration_line(l).unwrap_or_else(|| panic!("bad line {l:?}\n{}", out.context())))
        .collect();
    assert_slowest_are_the_sleepers(&entries, &out);
    assert_eq!(section[3], "", "{}", out.context());
    assert_eq!(
        section[4],
        "(15 durations < 0.09s hidden.)",
        "{}",
        out.context()
    );
    assert_eq!(
        &section[3..],
        &expected_section[3..],
        "the hidden-durations note differs from pytest's\n=== serial ===\n{}\n=== shoal ===\n{}",
        serial.context(),
        out.context()
    );
}

#[test]
fn durations_default_minimum_says_how_to_see_the_rest() {
    let project = Project::new("reports_durations");
    let out = project
        .shoal(["-n", "2", "-p", "no:cacheprovider", "--durations=10"])
        .run();
    out.assert_code(0);
    let section = durations_section(&out, "slowest 10 durations");
    let shown = section.iter().take_while(|l| !l.is_empty()).count();
    assert!(shown >= 3, "{}", out.context());
    for line in &section[..shown] {
        assert!(
            duration_line(line).is_some(),
            "bad line {line:?}\n{}",
            out.context()
        );
    }
    let note = section
        .last()
        .unwrap_or_else(|| panic!("empty durations section\n{}", out.context()));
    let hidden: usize = note
        .strip_prefix('(')
        .and_then(|n| {
            n.strip_suffix(" durations < 0.005s hidden.  Use -vv to show these durations.)")
        })
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("unexpected note {note:?}\n{}", out.context()));
    assert_eq!(shown + hidden, 10, "{}", out.context());
}

fn store_path(project: &Project) -> std::path::PathBuf {
    project.path.join(".pytest_cache/shoal/durations.json")
}

/// Reads the durations store, checks its shape, and returns test -> call seconds.
#[track_caller]
fn read_store(project: &Project, output: &Output) -> BTreeMap<String, f64> {
    let path = store_path(project);
    let text = fs::read_to_string(&path).unwrap_or_else(|e| {
        panic!(
            "no durations store {} ({e})\n{}",
            path.display(),
            output.context()
        )
    });
    let store: Value = serde_json::from_str(&text)
        .unwrap_or_else(|e| panic!("the durations store is not JSON ({e}): {text}"));
    assert_eq!(store["version"], 1, "durations store version: {text}");
    let tests = store["tests"]
        .as_object()
        .unwrap_or_else(|| panic!("durations store has no tests object: {text}"));
    let mut calls = BTreeMap::new();
    for (nodeid, entry) in tests {
        for key in ["setup", "call", "teardown", "average"] {
            let seconds = entry[key]
                .as_f64()
                .unwrap_or_else(|| panic!("store entry {nodeid} lacks {key}: {entry}"));
            assert!(seconds >= 0.0, "negative {key} for {nodeid}: {entry}");
        }
        assert!(
            entry["last_seen"].is_u64(),
            "store entry {nodeid} lacks last_seen"
        );
        calls.insert(nodeid.clone(), entry["call"].as_f64().unwrap());
    }
    calls
}

#[test]
fn durations_store_records_every_test() {
    let project = Project::new("reports_durations");
    let out = project.shoal(["-n", "2"]).run();
    out.assert_code(0);
    let calls = read_store(&project, &out);
    let ids: BTreeSet<String> = calls.keys().cloned().collect();
    assert_eq!(ids, as_set(&crate::common::collected_ids(&project, &[])));
    for (nodeid, slept) in SLEEPERS {
        assert!(
            calls[nodeid] >= slept - 0.001,
            "{nodeid} slept {slept}s, store says {}",
            calls[nodeid]
        );
    }
}

/// A store shoal cannot use gives a warning, is rebuilt, and the run goes on.
fn assert_bad_store_is_rebuilt(content: &str) {
    let project = Project::new("reports_durations");
    let path = store_path(&project);
    fs::create_dir_all(path.parent().unwrap()).unwrap();
    fs::write(&path, content).unwrap();
    let out = project.shoal(["-n", "2"]).run();
    out.assert_code(0);
    assert_eq!(out.stats().get("passed"), Some(&6), "{}", out.context());
    let all = out.all_output();
    assert!(
        all.lines()
            .any(|l| l.contains("warning") && l.contains("durations.json")),
        "no warning about the unusable store\n{}",
        out.context()
    );
    let calls = read_store(&project, &out);
    assert_eq!(
        calls.keys().cloned().collect::<BTreeSet<_>>(),
        as_set(&crate::common::collected_ids(&project, &[])),
        "the store was not rebuilt with this run's tests"
    );
}

#[test]
fn corrupt_durations_store_is_rebuilt_with_a_warning() {
    assert_bad_store_is_rebuilt("{ this is not json");
}

#[test]
fn durations_store_from_a_newer_version_is_rebuilt_with_a_warning() {
    assert_bad_store_is_rebuilt(
        r#"{"version": 99, "tests": {"gone.py::test_old": {"setup": 0, "call": 1, "teardown": 0, "average": 1, "last_seen": 0}}}"#,
    );
}

#[test]
fn durations_store_of_another_shape_is_rebuilt_with_a_warning() {
    assert_bad_store_is_rebuilt(r#"{"version": 99, "tests": [1, 2, 3], "format": "new"}"#);
}

#[test]
fn pytest_split_durations_file_is_read_without_harm() {
    for content in [
        r#"{"test_durations.py::test_sleep_03": 0.3, "test_durations.py::test_fast_1": 0.001, "gone.py::test_x": 5.0}"#,
        "not json at all",
        "[1, 2, 3]",
    ] {
        let project = Project::new("reports_durations");
        project.write(".test_durations", content);
        let out = project.shoal(["-n", "2"]).run();
        out.assert_code(0);
        assert_eq!(
            out.stats().get("passed"),
            Some(&6),
            ".test_durations = {content:?}\n{}",
            out.context()
        );
        let calls = read_store(&project, &out);
        for (nodeid, slept) in SLEEPERS {
            assert!(
                calls[nodeid] >= slept - 0.001,
                "{nodeid}: {}",
                calls[nodeid]
            );
        }
    }
}

// ============================================================================================
// --report-json
// ============================================================================================

/// Test name -> the outcome its name announces (`test_failed_raise` -> `failed`).
fn announced_outcome(nodeid: &str) -> &'static str {
    let name = nodeid.rsplit("::").next().unwrap();
    for outcome in ["passed", "failed", "error", "skipped", "xfailed", "xpassed"] {
        if name.starts_with(&format!("test_{outcome}_")) {
            return outcome;
        }
    }
    panic!("test {nodeid} does not announce its outcome");
}

/// The `event` → documented field names, read from the table in docs/events.md; a field whose
/// note begins "only" (`shuffle_seed` (only with `--shuffle`: ...)) may be absent, and is left out.
fn documented_fields() -> BTreeMap<String, Vec<String>> {
    let docs = fs::read_to_string(crate::common::repo_root().join("docs/events.md")).unwrap();
    let mut events = BTreeMap::new();
    for line in docs.lines() {
        let cells: Vec<&str> = line.split('|').map(str::trim).collect();
        if cells.len() < 4 {
            continue;
        }
        let Some(event) = cells[1].strip_prefix('`').and_then(|c| c.strip_suffix('`')) else {
            continue;
        };
        // The field names are the backticked words outside parentheses, each with the note in
        // the parentheses after it.
        let mut fields: Vec<(String, String)> = Vec::new();
        let (mut depth, mut in_name) = (0, false);
        for c in cells[2].chars() {
            match c {
                '(' => depth += 1,
                ')' => depth -= 1,
                '`' if depth == 0 => {
                    in_name = !in_name;
                    if in_name {
                        fields.push(Default::default());
                    }
                }
                _ if depth == 0 && in_name => fields.last_mut().unwrap().0.push(c),
                _ if depth > 0 => {
                    if let Some((_, note)) = fields.last_mut() {
                        note.push(c);
                    }
                }
                _ => {}
            }
        }
        let fields: Vec<String> = fields
            .into_iter()
            .filter(|(_, note)| !note.starts_with("only"))
            .map(|(name, _)| name)
            .collect();
        events.insert(event.to_owned(), fields);
    }
    for event in [
        "run_start",
        "worker_start",
        "test",
        "worker_stop",
        "run_end",
    ] {
        assert!(
            events.contains_key(event),
            "docs/events.md does not document {event}"
        );
    }
    events
}

/// Checks a complete event stream of a `reports_events` run with 2 workers; with
/// `check_capture`, also that the failing test's phase carries its captured output (not with
/// forked workers, which mix captures up: see `junit_captured_output_matches_with_forked_workers`).
fn check_event_stream(
    events: &[Value],
    collected: &[String],
    output: &Output,
    check_capture: bool,
) {
    let context = || {
        let lines: Vec<String> = events.iter().map(Value::to_string).collect();
        format!("--- events:\n{}\n{}", lines.join("\n"), output.context())
    };
    let docs = documented_fields();
    for event in events {
        let name = event["event"]
            .as_str()
            .unwrap_or_else(|| panic!("event without a name: {event}\n{}", context()));
        let fields = docs
            .get(name)
            .unwrap_or_else(|| panic!("undocumented event {name}\n{}", context()));
        for field in fields {
            assert!(
                event.get(field).is_some(),
                "{name} event lacks documented field {field:?}: {event}"
            );
        }
    }
    let kind = |e: &Value| e["event"].as_str().unwrap().to_owned();
    let count = |name: &str| events.iter().filter(|e| kind(e) == name).count();
    assert_eq!(count("run_start"), 1, "{}", context());
    assert_eq!(count("run_end"), 1, "{}", context());
    assert_eq!(kind(&events[0]), "run_start", "{}", context());
    assert_eq!(kind(events.last().unwrap()), "run_end", "{}", context());

    let start = &events[0];
    assert_eq!(start["version"], 1);
    assert_eq!(start["workers"], 2);
    assert_eq!(start["tests"], collected.len(), "{}", context());
    assert!(
        start["testrunuid"].as_str().is_some_and(|u| !u.is_empty()),
        "{}",
        context()
    );

    // One test event per collected test, with the outcome its name announces.
    let tests: Vec<&Value> = events.iter().filter(|e| kind(e) == "test").collect();
    let ids: Vec<String> = tests
        .iter()
        .map(|e| e["nodeid"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(ids.len(), collected.len(), "{}", context());
    assert_eq!(as_set(&ids), as_set(collected), "{}", context());
    let mut counts: BTreeMap<String, u64> = BTreeMap::new();
    for test in &tests {
        let nodeid = test["nodeid"].as_str().unwrap();
        assert_eq!(
            test["outcome"].as_str(),
            Some(announced_outcome(nodeid)),
            "wrong outcome for {nodeid}: {test}"
        );
        *counts
            .entry(announced_outcome(nodeid).to_owned())
            .or_default() += 1;
        let phases = test["phases"].as_array().unwrap();
        assert!(!phases.is_empty(), "{test}");
        let mut sum = 0.0;
        for phase in phases {
            for field in [
                "when", "outcome", "category", "duration", "longrepr", "message", "sections",
            ] {
                assert!(phase.get(field).is_some(), "phase lacks {field}: {phase}");
            }
            assert!(matches!(
                phase["when"].as_str(),
                Some("setup" | "call" | "teardown")
            ));
            assert!(phase["sections"].is_array(), "{phase}");
            sum += phase["duration"].as_f64().unwrap();
        }
        let total = test["duration"].as_f64().unwrap();
        assert!(
            (total - sum).abs() < 1e-6,
            "duration {total} != sum of phases {sum}: {test}"
        );
    }
    let failing = tests
        .iter()
        .find(|t| {
            t["nodeid"]
                .as_str()
                .unwrap()
                .ends_with("::test_failed_assert")
        })
        .unwrap();
    let call = failing["phases"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["when"] == "call")
        .unwrap();
    assert_eq!(call["outcome"], "failed");
    assert!(
        call["longrepr"]
            .as_str()
            .is_some_and(|t| t.contains("one is not two")),
        "{call}"
    );
    assert!(
        call["message"]
            .as_str()
            .is_some_and(|t| t.contains("one is not two")),
        "{call}"
    );
    let sections = call["sections"].as_array().unwrap();
    for section in sections {
        let pair = section
            .as_array()
            .unwrap_or_else(|| panic!("section is not a pair: {section}"));
        assert!(
            pair.len() == 2 && pair[0].is_string() && pair[1].is_string(),
            "section is not a [title, text] pair: {section}"
        );
    }
    assert!(
        !check_capture
            || sections.iter().any(|s| s[0] == "Captured stdout call"
                && s[1]
                    .as_str()
                    .is_some_and(|t| t.contains("printed before failing"))),
        "captured stdout missing from {call}"
    );
    assert!(
        !check_capture
            || sections.iter().any(|s| s[0] == "Captured stderr call"
                && s[1]
                    .as_str()
                    .is_some_and(|t| t.contains("stderr before failing"))),
        "captured stderr missing from {call}"
    );

    // Each worker starts once before its tests and stops once after them.
    let workers: BTreeSet<String> = events
        .iter()
        .filter(|e| kind(e) == "worker_start")
        .map(|e| e["worker"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(
        workers,
        ["gw0".to_owned(), "gw1".to_owned()].into(),
        "{}",
        context()
    );
    for worker in &workers {
        let position = |name: &str| {
            let found: Vec<usize> = events
                .iter()
                .enumerate()
                .filter(|(_, e)| kind(e) == name && e["worker"] == worker.as_str())
                .map(|(i, _)| i)
                .collect();
            assert_eq!(
                found.len(),
                1,
                "{worker}: {name} events: {found:?}\n{}",
                context()
            );
            found[0]
        };
        let started = position("worker_start");
        let stopped = position("worker_stop");
        for (i, e) in events.iter().enumerate() {
            if kind(e) == "test" && e["worker"] == worker.as_str() {
                assert!(
                    started < i && i < stopped,
                    "{worker}'s test event outside its start/stop\n{}",
                    context()
                );
            }
        }
        let stop = &events[stopped];
        let exit = stop["exit"].as_str().unwrap();
        assert!(
            exit.starts_with("exit code ")
                || exit.starts_with("signal ")
                || exit == "exit status unknown",
            "{stop}"
        );
    }

    let end = events.last().unwrap();
    assert_eq!(end["exit_code"], output.code(), "{}", context());
    assert_eq!(end["not_run"], 0);
    assert!(end["duration"].as_f64().is_some_and(|d| d > 0.0));
    // The controller's own figures: CPU seconds and a resident peak of a real process.
    let controller = &end["controller"];
    for field in ["user", "system"] {
        assert!(
            controller[field].as_f64().is_some_and(|s| s >= 0.0),
            "{controller}"
        );
    }
    assert!(
        controller["peak_rss"].as_u64().is_some_and(|b| b > 1 << 20),
        "{controller}"
    );
    let end_counts: BTreeMap<String, u64> = end["counts"]
        .as_object()
        .unwrap()
        .iter()
        .map(|(k, v)| (k.clone(), v.as_u64().unwrap()))
        .collect();
    assert_eq!(end_counts, counts, "run_end counts\n{}", context());
}

fn parse_event_lines(text: &str, what: &str) -> Vec<Value> {
    text.lines()
        .map(|line| {
            let value: Value = serde_json::from_str(line)
                .unwrap_or_else(|e| panic!("{what}: line is not JSON ({e}): {line:?}\n{text}"));
            assert!(value.is_object(), "{what}: not an object: {line}");
            value
        })
        .collect()
}

#[test]
fn report_json_file_follows_docs_events_md() {
    let project = Project::new("reports_events");
    let collected = crate::common::collected_ids(&project, &[]);
    let out = project
        .shoal(["-n", "2", "--report-json=events.jsonl"])
        .run();
    out.assert_code(1);
    let text = fs::read_to_string(project.path.join("events.jsonl"))
        .unwrap_or_else(|e| panic!("no events.jsonl ({e})\n{}", out.context()));
    assert!(text.ends_with('\n'), "the last event line is unterminated");
    let events = parse_event_lines(&text, "events.jsonl");
    check_event_stream(&events, &collected, &out, false);
    // The terminal is unchanged: the events went to the file only.
    assert!(!out.stdout.contains("\"event\""), "{}", out.context());
}

#[test]
fn report_json_carries_captured_output() {
    let project = Project::new("reports_events");
    let collected = crate::common::collected_ids(&project, &[]);
    let out = project
        .shoal(["-n", "2", "--start", "spawn", "--report-json=events.jsonl"])
        .run();
    out.assert_code(1);
    let text = fs::read_to_string(project.path.join("events.jsonl"))
        .unwrap_or_else(|e| panic!("no events.jsonl ({e})\n{}", out.context()));
    check_event_stream(
        &parse_event_lines(&text, "events.jsonl"),
        &collected,
        &out,
        true,
    );
}

/// With `-v` every terminal line is whole, so the events interleave line by line.
#[test]
fn report_json_to_stdout_with_verbose_output() {
    let project = Project::new("reports_events");
    let collected = crate::common::collected_ids(&project, &[]);
    let out = project.shoal(["-n", "2", "-v", "--report-json=-"]).run();
    out.assert_code(1);
    let lines: Vec<&str> = out
        .stdout
        .lines()
        .filter(|l| l.starts_with("{\""))
        .collect();
    let events = parse_event_lines(&lines.join("\n"), "stdout");
    check_event_stream(&events, &collected, &out, false);
}

/// A tool reading `--report-json=-` line by line must find every event on a line of its own,
/// whatever else shoal prints to stdout (here pytest's default progress dots).
#[test]
fn report_json_to_stdout_puts_every_event_on_its_own_line() {
    let project = Project::new("reports_events");
    let collected = crate::common::collected_ids(&project, &[]);
    let out = project.shoal(["-n", "2", "--report-json=-"]).run();
    out.assert_code(1);
    let marker_lines = out
        .stdout
        .lines()
        .filter(|l| l.contains("{\"event\""))
        .count();
    let lines: Vec<&str> = out
        .stdout
        .lines()
        .filter(|l| l.starts_with("{\"event\""))
        .collect();
    assert_eq!(
        lines.len(),
        marker_lines,
        "some events do not start their line\n{}",
        out.context()
    );
    let events = parse_event_lines(&lines.join("\n"), "stdout");
    check_event_stream(&events, &collected, &out, false);
}

#[test]
fn report_json_to_an_unwritable_path_does_not_break_the_run() {
    let project = Project::new("reports_events");
    let out = project
        .shoal(["-n", "2", "--report-json=no/such/dir/events.jsonl"])
        .run();
    // Refused with a message, not a panic, a hang or a silent success.
    assert_ne!(out.code(), 0, "{}", out.context());
    assert!(!out.stderr.contains("panicked"), "{}", out.context());
    assert!(
        out.stderr.contains("events.jsonl"),
        "no message names the events file\n{}",
        out.context()
    );
}
