//! Third-party pytest plugins that xdist users rely on, installed for real in the test venv.

mod common;

use std::fs;

use common::Project;

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
    let args = [
        "--cov=pkg",
        "--cov-report=term-missing",
        "-p",
        "no:cacheprovider",
    ];
    let serial = project.pytest(["-p", "no:xdist"].iter().chain(&args)).run();
    serial.assert_code(0);
    let expected = coverage_rows(&serial.all_output());
    assert!(
        expected.iter().any(|row| row.ends_with(" 15")),
        "the fixture must leave line 15 uncovered\n{}",
        serial.context()
    );
    for start in ["fork", "spawn"] {
        let shoal = project
            .shoal(["-n", "2", "--start", start].iter().chain(&args))
            .run();
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
