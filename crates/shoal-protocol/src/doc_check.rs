//! `docs/protocol.md` against the types: its two message tables list every message `type`
//! and, in the fields column, every field of each, and nothing else; its `collected`,
//! `test_done` and `WorkerIdentity` sections have one top-level bullet per field.
//!
//! The message kinds come from serde itself (the variants it names when it refuses an unknown
//! `type`); the fields from serializing one example of each kind, written below as struct
//! literals, so that a new field does not compile until its example has it.

use std::collections::BTreeSet;

use serde::{de::DeserializeOwned, Serialize};
use serde_json::{json, Value};

use super::*;

const DOC: &str = include_str!("../../../docs/protocol.md");

fn from_json<T: DeserializeOwned>(value: Value) -> T {
    serde_json::from_value(value).expect("an example of a nested type")
}

fn identity() -> WorkerIdentity {
    WorkerIdentity {
        workerid: "gw0".into(),
        workercount: 2,
        testrunuid: "uid".into(),
        mainargv: Vec::new(),
        distributed: true,
        basetemp: None,
        report_starts: false,
        stack_file: None,
        state_file: None,
        replay: None,
        steals: false,
        workerinput: Default::default(),
        max_tests: None,
        max_rss: None,
        width: None,
        detect_leaks: false,
    }
}

/// One message of each kind Python sends.
fn from_python() -> Vec<FromPython> {
    let settings = json!({
        "numprocesses": null, "dist": null, "maxprocesses": null, "verbose": 0,
        "reportchars": "", "maxfail": 0, "tbstyle": "auto", "color": false, "width": 80,
        "full_summary": false, "deselected": 0,
    });
    vec![
        FromPython::Hello {
            protocol: PROTOCOL_VERSION,
            role: Role::Worker,
            worker: None,
            pid: 1,
        },
        FromPython::Collected {
            items: Vec::new(),
            fork_unsafe: None,
            identity_read: None,
            basetemp: None,
            settings: Box::new(from_json(settings)),
            warnings: Vec::new(),
            workerinput: Default::default(),
            collect_errors: Vec::new(),
            junit: None,
            replay: None,
        },
        FromPython::TerminalSummary {
            text: String::new(),
            warnings: Vec::new(),
        },
        FromPython::Forked {
            worker: "gw0".into(),
            pid: 1,
        },
        FromPython::WorkerExited {
            worker: "gw0".into(),
            pid: 1,
            code: None,
            signal: None,
        },
        FromPython::Ready { collection: None },
        FromPython::TestStart { index: 0 },
        FromPython::TestPartial {
            index: 0,
            reports: Vec::new(),
        },
        FromPython::TestDone {
            index: 0,
            headline: None,
            reports: Vec::new(),
            warnings: Vec::new(),
            junit: None,
            exit: None,
            replay: None,
            recycle: None,
            leaks: Vec::new(),
        },
        FromPython::Released {
            indices: Vec::new(),
        },
        FromPython::FixtureRequest { name: "f".into() },
        FromPython::FixtureReady {
            name: "f".into(),
            value: Value::Null,
        },
        FromPython::FixtureFailed {
            name: "f".into(),
            text: String::new(),
            kind: SetupFailure::Error,
        },
        FromPython::FixtureDone { name: "f".into() },
        FromPython::InternalError,
        FromPython::WorkerDone {
            workeroutput: Value::Null,
            junit_properties: Vec::new(),
            warnings: Vec::new(),
        },
    ]
}

/// One message of each kind the controller sends.
fn to_python() -> Vec<ToPython> {
    vec![
        ToPython::Fork {
            identity: identity(),
        },
        ToPython::Stop { exitstatus: None },
        ToPython::Replay {
            worker: "gw0".into(),
            events: Vec::new(),
        },
        ToPython::NodeDown {
            worker: "gw0".into(),
            workeroutput: None,
            // Left out of the frame when `None`.
            error: Some(String::new()),
        },
        ToPython::Run {
            indices: Vec::new(),
        },
        ToPython::Shutdown { discard: false },
        ToPython::Steal { count: 1 },
        ToPython::FixtureRun { name: "f".into() },
        ToPython::FixtureValue {
            name: "f".into(),
            value: Value::Null,
        },
        ToPython::FixtureError {
            name: "f".into(),
            text: String::new(),
            kind: SetupFailure::Error,
        },
        ToPython::FixtureRelease { name: "f".into() },
    ]
}

/// The `type` of every variant of `T`, as serde lists them when it refuses an unknown one.
fn kinds<T: DeserializeOwned + std::fmt::Debug>() -> BTreeSet<String> {
    let err = serde_json::from_str::<T>(r#"{"type": "?"}"#).unwrap_err();
    let text = err.to_string();
    let (_, list) = text
        .split_once("expected one of ")
        .unwrap_or_else(|| panic!("serde names no variants: {text}"));
    list.split('`')
        .skip(1)
        .step_by(2)
        .map(str::to_owned)
        .collect()
}

/// `type` → field names, from the examples.
fn fields<T: Serialize>(examples: &[T]) -> Vec<(String, BTreeSet<String>)> {
    examples
        .iter()
        .map(|example| {
            let Value::Object(map) = serde_json::to_value(example).unwrap() else {
                panic!("a message is an object");
            };
            let kind = map["type"].as_str().unwrap().to_owned();
            let names = map.keys().filter(|k| *k != "type").cloned().collect();
            (kind, names)
        })
        .collect()
}

fn keys<T: Serialize>(value: &T) -> BTreeSet<String> {
    match serde_json::to_value(value).unwrap() {
        Value::Object(map) => map.keys().cloned().collect(),
        other => panic!("not an object: {other}"),
    }
}

/// The lines of the section that `heading` opens, up to the next heading.
fn section(heading: &str) -> Vec<&'static str> {
    let mut lines = DOC.lines().skip_while(|l| *l != heading);
    assert!(
        lines.next().is_some(),
        "docs/protocol.md has no line {heading:?}"
    );
    lines.take_while(|l| !l.starts_with('#')).collect()
}

/// The rows of the message table under `heading`: `type` → the field names in its fields
/// column (the third).
fn table(heading: &str) -> Vec<(String, BTreeSet<String>)> {
    section(heading)
        .into_iter()
        .filter(|l| l.starts_with("| `") && !l.starts_with("| `type` |"))
        .map(|row| {
            let cells: Vec<&str> = row.split('|').map(str::trim).collect();
            assert!(cells.len() >= 5, "a message table row of four cells: {row}");
            let kind = cells[1].trim_matches('`').to_owned();
            (kind, field_names(cells[3], row))
        })
        .collect()
}

/// A fields cell: `none`, or a comma-separated list whose every item starts with the field's
/// name in backticks (what follows it, in parentheses, may hold commas of its own).
fn field_names(cell: &str, row: &str) -> BTreeSet<String> {
    if cell == "none" {
        return BTreeSet::new();
    }
    let mut items = vec![String::new()];
    let (mut depth, mut code) = (0i32, false);
    for c in cell.chars() {
        match c {
            '`' => code = !code,
            '(' | '[' | '{' if !code => depth += 1,
            ')' | ']' | '}' if !code => depth -= 1,
            ',' if !code && depth == 0 => {
                items.push(String::new());
                continue;
            }
            _ => {}
        }
        items.last_mut().unwrap().push(c);
    }
    items
        .iter()
        .map(|item| {
            let name = item
                .trim()
                .strip_prefix('`')
                .and_then(|rest| rest.split_once('`'))
                .map(|(name, _)| name.to_owned());
            name.unwrap_or_else(|| {
                panic!("a fields item that does not start with `name`: {item:?} in\n{row}")
            })
        })
        .collect()
}

/// The names of the top-level bullets (`` - `name`: ... ``) of the section under `heading`.
fn bullets(heading: &str) -> BTreeSet<String> {
    section(heading)
        .into_iter()
        .filter_map(|l| l.strip_prefix("- `"))
        .map(|rest| rest.split('`').next().unwrap().to_owned())
        .collect()
}

#[track_caller]
fn assert_table_matches<T: DeserializeOwned + Serialize + std::fmt::Debug>(
    heading: &str,
    examples: &[T],
) {
    let from_types = fields(examples);
    let kinds_of_examples: BTreeSet<String> = from_types.iter().map(|(k, _)| k.clone()).collect();
    assert_eq!(
        kinds_of_examples,
        kinds::<T>(),
        "doc_check.rs: the examples must have one message of each kind"
    );
    let from_doc = table(heading);
    let doc_kinds: BTreeSet<String> = from_doc.iter().map(|(k, _)| k.clone()).collect();
    assert_eq!(
        doc_kinds, kinds_of_examples,
        "docs/protocol.md, {heading:?}: the table's types differ from the messages'"
    );
    assert_eq!(from_doc.len(), doc_kinds.len(), "a type listed twice");
    for (kind, names) in &from_types {
        let documented = &from_doc.iter().find(|(k, _)| k == kind).unwrap().1;
        assert_eq!(
            documented, names,
            "docs/protocol.md, {heading:?}: the fields of `{kind}` differ from the type's"
        );
    }
}

#[test]
fn the_doc_lists_every_message_python_sends_with_its_fields() {
    assert_table_matches("## Messages from Python to the controller", &from_python());
}

#[test]
fn the_doc_lists_every_message_the_controller_sends_with_its_fields() {
    assert_table_matches("## Messages from the controller to Python", &to_python());
}

#[test]
fn the_docs_field_lists_name_every_field() {
    let messages = fields(&from_python());
    for kind in ["collected", "test_done"] {
        let heading = format!("### `{kind}`");
        let names = &messages.iter().find(|(k, _)| k == kind).unwrap().1;
        assert_eq!(
            &bullets(&heading),
            names,
            "docs/protocol.md, {heading:?}: one top-level bullet per field"
        );
    }
    assert_eq!(
        bullets("### `WorkerIdentity`"),
        keys(&identity()),
        "docs/protocol.md, WorkerIdentity: one top-level bullet per field"
    );
}
