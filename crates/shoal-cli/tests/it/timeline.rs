//! `--timeline`: the run as a Chrome trace, checked for what a trace viewer relies on (valid
//! JSON, one track per worker, slices that nest and never overlap) and for what it must show
//! (every test with its outcome, a crashed worker's restart). Only the order of times is
//! checked, never their values.

use std::{collections::BTreeMap, fs};

use serde_json::Value;

use crate::common::{Output, Project};

/// The trace-event file a run wrote.
fn trace(project: &Project, out: &Output) -> Value {
    let text = fs::read_to_string(project.path.join("t.json"))
        .unwrap_or_else(|e| panic!("no t.json ({e})\n{}", out.context()));
    let trace: Value = serde_json::from_str(&text).expect("the timeline is JSON");
    assert_eq!(trace["displayTimeUnit"], "ms");
    trace
}

fn events<'v>(trace: &'v Value, ph: &str) -> Vec<&'v Value> {
    trace["traceEvents"]
        .as_array()
        .expect("traceEvents is a list")
        .iter()
        .filter(|e| e["ph"] == ph)
        .collect()
}

/// The complete slices of category `cat` (`test` or `phase`).
fn slices<'v>(trace: &'v Value, cat: &str) -> Vec<&'v Value> {
    events(trace, "X")
        .into_iter()
        .filter(|e| e["cat"] == cat)
        .collect()
}

fn number(event: &Value, key: &str) -> u64 {
    event[key]
        .as_u64()
        .unwrap_or_else(|| panic!("{key} of {event}"))
}

/// (start, end) in microseconds.
fn span(event: &Value) -> (u64, u64) {
    let ts = number(event, "ts");
    (ts, ts + number(event, "dur"))
}

/// Per track: its test slices in order of start, none overlapping the next.
fn tracks(trace: &Value) -> BTreeMap<u64, Vec<&Value>> {
    let mut tracks: BTreeMap<u64, Vec<&Value>> = BTreeMap::new();
    for slice in slices(trace, "test") {
        tracks.entry(number(slice, "tid")).or_default().push(slice);
    }
    for (tid, track) in &mut tracks {
        track.sort_by_key(|s| span(s));
        for pair in track.windows(2) {
            assert!(
                span(pair[0]).1 <= span(pair[1]).0,
                "slices overlap on track {tid}: {} and {}",
                pair[0],
                pair[1]
            );
        }
    }
    tracks
}

/// Track number -> its thread name.
fn thread_names(trace: &Value) -> BTreeMap<u64, String> {
    events(trace, "M")
        .into_iter()
        .filter(|e| e["name"] == "thread_name")
        .map(|e| {
            (
                number(e, "tid"),
                e["args"]["name"].as_str().unwrap().to_owned(),
            )
        })
        .collect()
}

/// (track, time, name, exit) of every worker start and stop, in order of time.
fn marks(trace: &Value) -> Vec<(u64, u64, String, Option<String>)> {
    let mut marks: Vec<_> = events(trace, "i")
        .into_iter()
        .map(|e| {
            assert_eq!(e["s"], "t", "{e}");
            (
                number(e, "tid"),
                number(e, "ts"),
                e["name"].as_str().unwrap().to_owned(),
                e["args"]["exit"].as_str().map(str::to_owned),
            )
        })
        .collect();
    marks.sort_by_key(|m| m.1);
    marks
}

#[test]
fn every_test_is_a_slice_on_its_worker_s_track_with_its_phases_inside() {
    let project = Project::new("timeline");
    let collected = crate::common::collected_ids(&project, &["test_suite.py"]);
    let out = project
        .shoal(["-n", "2", "--timeline", "t.json", "test_suite.py"])
        .run();
    out.assert_code(1);
    let trace = trace(&project, &out);

    let process: Vec<_> = events(&trace, "M")
        .into_iter()
        .filter(|e| e["name"] == "process_name")
        .map(|e| e["args"]["name"].clone())
        .collect();
    assert_eq!(process, ["shoal"]);
    let names = thread_names(&trace);
    assert_eq!(
        names,
        BTreeMap::from([(0, "gw0".to_owned()), (1, "gw1".to_owned())])
    );

    let tests = slices(&trace, "test");
    let mut ran: Vec<&str> = tests.iter().map(|s| s["name"].as_str().unwrap()).collect();
    ran.sort_unstable();
    let mut expected: Vec<&str> = collected.iter().map(String::as_str).collect();
    expected.sort_unstable();
    assert_eq!(ran, expected, "one slice per test\n{}", out.context());
    for slice in &tests {
        let nodeid = slice["name"].as_str().unwrap();
        let outcome = nodeid
            .strip_prefix("test_suite.py::test_")
            .and_then(|name| name.split(['_', '[']).next())
            .unwrap();
        assert_eq!(slice["args"]["outcome"], outcome, "{slice}");
        assert_eq!(slice["args"]["nodeid"], nodeid, "{slice}");
        let worker = &names[&number(slice, "tid")];
        assert_eq!(slice["args"]["worker"], worker.as_str(), "{slice}");
    }

    // Every phase lies inside its test's slice, on its track.
    let tracks = tracks(&trace);
    let mut phases_of: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
    for phase in slices(&trace, "phase") {
        let nodeid = phase["args"]["nodeid"].as_str().unwrap();
        let test = tests.iter().find(|t| t["name"] == nodeid).unwrap();
        assert_eq!(test["tid"], phase["tid"], "{phase}");
        let ((start, end), (test_start, test_end)) = (span(phase), span(test));
        assert!(
            test_start <= start && end <= test_end,
            "{phase} outside {test}"
        );
        phases_of
            .entry(nodeid)
            .or_default()
            .push(phase["name"].as_str().unwrap());
    }
    assert_eq!(
        phases_of["test_suite.py::test_passed_slow"],
        ["setup", "call", "teardown"]
    );
    // A skip by mark never calls the test, and a broken fixture ends it in setup.
    assert_eq!(
        phases_of["test_suite.py::test_skipped"],
        ["setup", "teardown"]
    );
    assert_eq!(
        phases_of["test_suite.py::test_error_in_setup"],
        ["setup", "teardown"]
    );

    // Both workers started, and stopped once their work was done.
    let marks = marks(&trace);
    for tid in [0, 1] {
        let of_track: Vec<_> = marks
            .iter()
            .filter(|m| m.0 == tid)
            .map(|m| (m.2.as_str(), m.3.is_some()))
            .collect();
        assert_eq!(
            of_track,
            [("worker started", false), ("worker stopped", true)],
            "track {tid}"
        );
        let stopped_at = marks.iter().rfind(|m| m.0 == tid).unwrap().1;
        assert!(tracks[&tid].iter().all(|s| span(s).1 <= stopped_at));
    }
    let busy = events(&trace, "C");
    assert!(
        busy.iter()
            .all(|c| c["args"]["busy"].as_u64().unwrap() <= 2),
        "{busy:?}"
    );
}

#[test]
fn a_crashed_worker_s_restart_shows_as_a_stop_and_a_start_on_its_track() {
    let project = Project::new("timeline");
    // Under `each` every worker runs every test: both crash, and each slot is restarted to
    // run the tests after the crash.
    let out = project
        .shoal([
            "-n",
            "2",
            "--dist",
            "each",
            "--timeline",
            "t.json",
            "test_crash.py",
        ])
        .run();
    out.assert_code(1);
    let trace = trace(&project, &out);
    let marks = marks(&trace);
    for (tid, track) in tracks(&trace) {
        let of_track: Vec<_> = marks.iter().filter(|m| m.0 == tid).collect();
        let names: Vec<_> = of_track
            .iter()
            .map(|m| (m.2.as_str(), m.3.as_deref()))
            .collect();
        assert_eq!(
            names[..3],
            [
                ("worker started", None),
                ("worker stopped", Some("exit code 3")),
                ("worker started", None),
            ],
            "track {tid}\n{}",
            out.context()
        );
        assert_eq!(names[3..].len(), 1, "the replacement stops once: {names:?}");
        let (crashed_at, restarted_at) = (of_track[1].1, of_track[2].1);
        let names: Vec<_> = track.iter().map(|s| s["name"].as_str().unwrap()).collect();
        assert_eq!(
            names,
            [
                "test_crash.py::test_crash",
                "test_crash.py::test_after_first",
                "test_crash.py::test_after_second"
            ]
        );
        assert_eq!(track[0]["args"]["outcome"], "failed");
        assert!(span(track[0]).1 <= crashed_at, "{}", track[0]);
        assert!(span(track[1]).0 >= restarted_at, "{}", track[1]);
    }
}

#[test]
fn a_timeline_that_cannot_be_written_is_a_warning() {
    let project = Project::new("timeline");
    let out = project
        .shoal([
            "-n",
            "2",
            "--timeline",
            "missing/t.json",
            "test_suite.py",
            "-k",
            "passed",
        ])
        .run();
    out.assert_code(0);
    assert!(
        out.stderr
            .contains("shoal: warning: failed to write the timeline to missing/t.json: "),
        "{}",
        out.context()
    );
}
