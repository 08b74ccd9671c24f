//! Nobody else in: the run's private directory, the plugin package Python loads from it (its
//! directories and files), the socket and the workers' stack and state files belong to the
//! invoking user alone, whatever the umask says.
//!
//! The fixture test (`tests/fixtures/private_run_dir`) looks at the run directory from inside a
//! worker and records modes and owners; running as root, it also tries to get in as a second
//! user (uid 65534, through `setpriv`).

use std::{path::Path, process::Command};

use crate::common::{python, shoal_bin, Project, Run};
use serde_json::Value;

/// The second user's identity for `setpriv`: `nobody`'s ids on most systems (numeric, so it
/// needs no passwd entry).
const SECOND_USER: &str = r#"["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups"]"#;

/// `shoal --python <python> <args>` started under `umask 000`.
fn shoal_under_umask_000<'p>(project: &'p Project, args: &[&str]) -> Run<'p> {
    let mut all = vec![
        "-c".to_owned(),
        r#"umask 000; exec "$@""#.to_owned(),
        "sh".to_owned(),
        shoal_bin().display().to_string(),
        "--python".to_owned(),
        python().display().to_string(),
    ];
    all.extend(args.iter().map(|a| a.to_string()));
    project.program("sh", all)
}

/// Why the second-user part cannot run here, if it cannot.
fn second_user_unavailable() -> Option<&'static str> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        return Some("not running as root, so no second user can be taken on");
    }
    let found = Command::new("setpriv").arg("--version").output();
    if !found.is_ok_and(|o| o.status.success()) {
        return Some("setpriv is not installed");
    }
    None
}

/// The one record the fixture's test wrote.
fn inspection(project: &Project, out: &crate::common::Output) -> Value {
    let records = project.take_records();
    assert_eq!(records.len(), 1, "{records:?}\n{}", out.context());
    records.into_iter().next().unwrap()
}

fn assert_private(record: &Value, out: &crate::common::Output) {
    assert_eq!(
        record["umask"], 0,
        "the run did not inherit umask 000\n{record}"
    );
    let uid = &record["uid"];
    let entries = record["entries"].as_object().expect("entries");
    let worker = record["worker"].as_str().unwrap();
    // What the run dir must hold while a test runs.
    for name in [
        ".",
        record["package"].as_str().unwrap(),
        record["plugin"].as_str().unwrap(),
        record["socket"].as_str().unwrap(),
        &format!("stack-{worker}"),
        &format!("state-{worker}"),
    ] {
        assert!(
            entries.contains_key(name),
            "{name} missing from the run dir\n{record}\n{}",
            out.context()
        );
    }
    for (name, entry) in entries {
        let mode = entry["mode"].as_u64().unwrap();
        let expected = if entry["dir"] == true { 0o700 } else { 0o600 };
        assert_eq!(
            mode, expected,
            "{name} in the run dir has mode {mode:o}, not {expected:o}\n{record}"
        );
        assert_eq!(&entry["uid"], uid, "{name} is not the user's own\n{record}");
    }
    let run_dir = record["run_dir"].as_str().unwrap();
    assert!(
        !Path::new(run_dir).exists(),
        "the run dir {run_dir} outlived the run"
    );
}

#[test]
fn the_run_dir_and_its_files_are_private_under_umask_000() {
    let project = Project::new("private_run_dir");
    for start in ["fork", "spawn"] {
        let out = shoal_under_umask_000(
            &project,
            &["-n", "1", "--start", start, "-p", "no:cacheprovider"],
        )
        .run();
        out.assert_code(0);
        assert_private(&inspection(&project, &out), &out);
    }
}

#[test]
fn a_second_user_cannot_write_the_plugin_or_enter_the_run_dir() {
    if let Some(reason) = second_user_unavailable() {
        println!("skipped: {reason}");
        return;
    }
    let project = Project::new("private_run_dir");
    let out = shoal_under_umask_000(&project, &["-n", "1", "-p", "no:cacheprovider"])
        .env("SHOAL_SECOND_USER", SECOND_USER)
        .run();
    out.assert_code(0);
    let record = inspection(&project, &out);
    let other = &record["other_user"];
    assert_eq!(
        other["control"]["code"], 0,
        "the second user cannot run Python at all, so the test proves nothing\n{record}"
    );
    for attempt in ["append_to_plugin", "list_run_dir", "connect_to_socket"] {
        let code = other[attempt]["code"].as_i64().unwrap();
        assert_ne!(
            code,
            0,
            "the second user managed to {attempt}\n{record}\n{}",
            out.context()
        );
        let stderr = other[attempt]["stderr"].as_str().unwrap();
        assert!(
            stderr.contains("PermissionError"),
            "{attempt} failed, but not for lack of permission\n{record}"
        );
    }
}
