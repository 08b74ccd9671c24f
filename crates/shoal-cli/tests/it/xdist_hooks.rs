//! pytest-xdist's hooks in shoal's processes: a conftest implementing them loads, and
//! `pytest_testnodedown` hands each worker's `config.workeroutput` to the controlling side;
//! syrupy and pytest-benchmark, which rely on them, behave as under xdist (plugin venv).

use std::fs;

use crate::common::{plugin_pytest, plugin_shoal, Project};

/// The lines the fixture's controlling-side hooks wrote, each kind sorted by worker.
fn hook_events(project: &Project) -> Vec<String> {
    let text = fs::read_to_string(project.path.join("events.txt")).unwrap_or_default();
    let mut lines: Vec<String> = text.lines().map(str::to_owned).collect();
    // setupnodes, then every ready, then every down; workers in any order within each.
    lines.sort_by_key(|l| {
        let kind = ["setupnodes", "ready", "down"]
            .iter()
            .position(|k| l.starts_with(k));
        (kind, l.clone())
    });
    lines
}

#[test]
fn a_conftest_implementing_xdist_hooks_loads_and_its_hooks_are_called() {
    for workers in ["2", "0"] {
        let project = Project::new("xdist_hooks");
        let out = project.shoal(["-n", workers, "-q"]).run();
        out.assert_code(0);
        assert_eq!(out.stats().get("passed"), Some(&4), "{}", out.context());
        if workers == "0" {
            continue; // plain pytest: no nodes
        }
        let events = hook_events(&project);
        assert_eq!(events.len(), 5, "{events:?}\n{}", out.context());
        assert_eq!(events[..3], ["setupnodes", "ready gw0", "ready gw1"]);
        // Each worker's own pid came back through workeroutput.
        assert!(events[3].starts_with("down gw0 ") && events[4].starts_with("down gw1 "));
        assert!(events.iter().all(|l| !l.ends_with(" None")), "{events:?}");
    }
}

#[test]
fn pytest_testnodedown_hears_of_a_crashed_worker_with_an_error() {
    let project = Project::new("xdist_hooks");
    project.write(
        "test_crash.py",
        "import os\n\n\ndef test_crash():\n    os._exit(1)\n",
    );
    let out = project.shoal(["-n", "2", "-q"]).run();
    out.assert_code(1);
    let events = hook_events(&project);
    let crashed: Vec<&String> = events.iter().filter(|l| l.contains(" crashed ")).collect();
    assert_eq!(crashed.len(), 1, "{events:?}\n{}", out.context());
    // No workeroutput, and the error says how the worker ended.
    assert!(
        crashed[0].contains(" crashed False: worker 'gw") && crashed[0].contains("exit code 1"),
        "{events:?}"
    );
    // Every node that came up (a replacement, if one was needed) goes down once.
    let count = |kind: &str| events.iter().filter(|l| l.starts_with(kind)).count();
    assert_eq!(
        count("down "),
        count("ready "),
        "{events:?}\n{}",
        out.context()
    );
}

#[test]
fn pytest_xdist_auto_num_workers_decides_n_auto() {
    let project = Project::new("xdist_hooks");
    let out = project
        .shoal(["-n", "auto", "-q"])
        .env("AUTO_WORKERS", "3")
        .run();
    out.assert_code(0);
    let downs = hook_events(&project)
        .iter()
        .filter(|l| l.starts_with("down "))
        .count();
    assert_eq!(downs, 3, "{}", out.context());
}

fn snapshot_files(project: &Project) -> Vec<String> {
    let mut names: Vec<String> = fs::read_dir(project.path.join("tests/__snapshots__"))
        .map(|dir| {
            dir.filter_map(|e| e.ok()?.file_name().into_string().ok())
                .collect()
        })
        .unwrap_or_default();
    names.sort();
    names
}

/// The fixture has one snapshot file whose test is gone: serial pytest reports it unused
/// (exit 1), and --snapshot-update deletes that file alone. Under `-n 0` too, where the
/// collecting process must not judge every snapshot unused (and delete it) for having run
/// no test.
#[test]
fn syrupy_compares_keeps_used_snapshots_and_finds_the_unused_one() {
    let serial = plugin_pytest(&Project::new("plugin_syrupy"), &["-q", "-p", "no:randomly"]).run();
    serial.assert_code(1);
    for (workers, start) in [("2", "fork"), ("0", "fork"), ("0", "spawn")] {
        let project = Project::new("plugin_syrupy");
        let run = |extra: &[&str]| {
            let mut args = vec!["-n", workers, "--start", start, "-q"];
            args.extend_from_slice(extra);
            plugin_shoal(&project, &args).run()
        };
        let out = run(&[]);
        out.assert_code(1);
        assert!(
            out.all_output()
                .contains("3 snapshots passed. 1 snapshot unused."),
            "{}",
            out.context()
        );
        run(&["--snapshot-update"]).assert_code(0);
        assert_eq!(
            snapshot_files(&project),
            ["test_snap.ambr"],
            "-n {workers} --start {start}"
        );
        let clean = run(&[]);
        clean.assert_code(0);
        assert!(
            clean.all_output().contains("3 snapshots passed."),
            "{}",
            clean.context()
        );
        // A changed snapshot fails its test.
        let ambr = project.path.join("tests/__snapshots__/test_snap.ambr");
        let text = fs::read_to_string(&ambr)
            .unwrap()
            .replace("'two'", "'deux'");
        fs::write(&ambr, text).unwrap();
        let changed = run(&[]);
        changed.assert_code(1);
        assert_eq!(
            changed.stats().get("failed"),
            Some(&1),
            "{}",
            changed.context()
        );
    }
}

#[test]
fn pytest_benchmark_runs_under_n0_as_under_plain_pytest() {
    let project = Project::new("plugin_benchmark");
    let out = plugin_shoal(&project, &["-n", "0", "-q"]).run();
    out.assert_code(0);
    assert!(
        !out.all_output().contains("automatically disabled"),
        "{}",
        out.context()
    );
    // Its table, from the worker that ran the benchmarks, once, as plain pytest prints it.
    assert_eq!(
        out.stdout.matches("benchmark: 2 tests").count(),
        1,
        "{}",
        out.context()
    );
}

#[test]
fn pytest_benchmark_warns_once_that_it_is_disabled_under_n2() {
    let project = Project::new("plugin_benchmark");
    for start in ["fork", "spawn"] {
        let out = plugin_shoal(&project, &["-n", "2", "-q", "--start", start]).run();
        out.assert_code(0);
        let warnings = out
            .all_output()
            .matches("Benchmarks are automatically disabled because xdist plugin is active")
            .count();
        assert_eq!(warnings, 1, "--start {start}\n{}", out.context());
    }
}
