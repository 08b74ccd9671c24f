//! Serial tests and resource limits inside one parallel run: tests record when they ran, and
//! no serial test may overlap any other, nor two "redis" tests each other.

use crate::common::Project;
use serde_json::Value;

fn overlaps(a: &Value, b: &Value) -> bool {
    let (a0, a1) = (a["start"].as_f64().unwrap(), a["end"].as_f64().unwrap());
    let (b0, b1) = (b["start"].as_f64().unwrap(), b["end"].as_f64().unwrap());
    a0 < b1 && b0 < a1
}

/// Pairs of node ids that ran at the same time, where `which` says the pair matters.
fn overlapping(records: &[Value], which: impl Fn(&Value, &Value) -> bool) -> Vec<(String, String)> {
    let mut pairs = Vec::new();
    for (i, a) in records.iter().enumerate() {
        for b in &records[i + 1..] {
            if which(a, b) && overlaps(a, b) {
                pairs.push((a["nodeid"].to_string(), b["nodeid"].to_string()));
            }
        }
    }
    pairs
}

fn serial_pairs(a: &Value, b: &Value) -> bool {
    a["serial"] == true || b["serial"] == true
}

fn redis_pairs(a: &Value, b: &Value) -> bool {
    a["redis"] == true && b["redis"] == true
}

#[test]
fn serial_and_resource_tests_never_overlap_in_any_dist_mode() {
    let project = Project::new("serial_resources");
    for dist in ["load", "loadfile", "loadscope", "worksteal"] {
        let run = project.shoal(["-n", "3", "--dist", dist, "-q"]).run();
        run.assert_code(0);
        let records = project.take_records();
        assert_eq!(records.len(), 19, "--dist {dist}\n{}", run.context());
        assert_eq!(overlapping(&records, serial_pairs), vec![], "--dist {dist}");
        assert_eq!(overlapping(&records, redis_pairs), vec![], "--dist {dist}");
    }
}

#[test]
fn without_the_marks_the_same_tests_do_overlap() {
    // The negative control: the suite really runs in parallel, so the assertions above can
    // fail. The serial marker is renamed away, and the redis tests' limit is raised.
    let project = Project::new("serial_resources");
    let test = std::fs::read_to_string(project.path.join("test_s.py")).unwrap();
    project.write(
        "test_s.py",
        &test.replace(
            r#"resource("redis", limit=1)"#,
            r#"resource("redis", limit=3)"#,
        ),
    );
    let run = project
        .shoal(["-n", "3", "-q", "-o", "shoal_serial_marker=not_used"])
        .run();
    run.assert_code(0);
    let records = project.take_records();
    assert!(
        !overlapping(&records, serial_pairs).is_empty(),
        "{}",
        run.context()
    );
    assert!(
        !overlapping(&records, redis_pairs).is_empty(),
        "{}",
        run.context()
    );
}
