//! `--shard K/N` and `shoal merge`: shards run as separate processes on one machine add up to
//! serial pytest's run, node by node, and the merge refuses files that do not make one whole
//! run.

use std::{collections::BTreeSet, fs};

use serde_json::Value;

use crate::{
    common::{Output, Project},
    reports::assert_same_junit_files,
};

/// Runs shard `k` of `n` with `-n 2` and `args`, writing `shard-k.xml`. Without pytest's
/// cache, as on N machines: each shard's durations would change the next one's split.
fn shard(project: &Project, k: usize, n: usize, args: &[&str]) -> Output {
    let junit = format!("--junitxml=shard-{k}.xml");
    let spec = format!("{k}/{n}");
    let mut all = vec![
        "-n",
        "2",
        "-p",
        "no:cacheprovider",
        "--shard",
        spec.as_str(),
        junit.as_str(),
    ];
    all.extend_from_slice(args);
    project.shoal(&all).run()
}

/// `shoal merge` of the given shard files (by number), writing `all.xml`.
fn merge(project: &Project, shards: &[usize], extra: &[&str]) -> Output {
    let mut args: Vec<String> = vec!["merge".into()];
    args.extend(shards.iter().map(|k| format!("shard-{k}.xml")));
    args.push("--junitxml=all.xml".into());
    args.extend(extra.iter().map(|a| a.to_string()));
    project.shoal_raw(&args).run()
}

/// The manifest a shard's JUnit file carries.
fn manifest(project: &Project, k: usize) -> Value {
    let text = fs::read_to_string(project.path.join(format!("shard-{k}.xml"))).unwrap();
    let re = regex::Regex::new(r#"<property name="shoal.shard" value="([^"]*)""#).unwrap();
    let value = &re.captures(&text).expect("a shard manifest")[1];
    let value = quick_xml::escape::unescape(value).unwrap();
    serde_json::from_str(&value).unwrap()
}

fn assigned(manifest: &Value) -> Vec<String> {
    manifest["assigned"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap().to_owned())
        .collect()
}

/// Runs every shard of `n` on the project; each must exit `code`.
fn all_shards(project: &Project, n: usize, args: &[&str], code: i32) {
    for k in 1..=n {
        shard(project, k, n, args).assert_code(code);
    }
}

#[test]
fn three_shards_add_up_to_serial_pytest_node_by_node() {
    let project = Project::new("outcomes");
    let serial = project
        .pytest(["-p", "no:cacheprovider", "--junitxml=serial.xml"])
        .run();
    serial.assert_code(1);
    let mut seen = BTreeSet::new();
    for k in 1..=3 {
        let out = shard(&project, k, 3, &[]);
        out.assert_code(1);
        for nodeid in assigned(&manifest(&project, k)) {
            assert!(seen.insert(nodeid.clone()), "{nodeid} in two shards");
        }
    }
    let merged = merge(&project, &[1, 2, 3], &[]);
    merged.assert_code(1);
    assert_same_junit_files(&project, ("serial.xml", &serial), ("all.xml", &merged));
    // pytest's summary of the whole run: its failures, with their tracebacks, and its counts.
    merged.assert_stdout_contains("= FAILURES =");
    merged.assert_stdout_contains("one is not two");
    let mut expected = serial.stats();
    expected.remove("warnings");
    assert_eq!(merged.stats(), expected, "{}", merged.context());
    assert_eq!(seen.len(), manifest(&project, 1)["collected"]);
}

#[test]
fn the_tests_see_their_shard_in_shoal_shard() {
    let project = Project::empty();
    project.write(
        "test_env.py",
        "import os\n\ndef test_env():\n    assert os.environ['SHOAL_SHARD'] == '1/1'\n",
    );
    shard(&project, 1, 1, &[]).assert_code(0);
    shard(&project, 1, 1, &["--start", "spawn"]).assert_code(0);
    project.shoal(["-n", "2"]).run().assert_code(1);
}

#[test]
fn a_missing_shard_fails_the_merge_and_names_it() {
    let project = Project::new("distribution");
    all_shards(&project, 3, &[], 0);
    let out = merge(&project, &[1, 3], &[]);
    out.assert_code(3);
    assert!(
        out.stderr.contains("missing shards (1):\n    shard 2/3"),
        "{}",
        out.context()
    );
    assert!(!project.path.join("all.xml").exists(), "nothing is written");
    merge(&project, &[1, 2, 3], &[]).assert_code(0);
}

#[test]
fn a_shard_given_twice_fails_the_merge() {
    let project = Project::new("distribution");
    all_shards(&project, 2, &[], 0);
    let out = merge(&project, &[1, 2, 2], &[]);
    out.assert_code(3);
    assert!(
        out.stderr
            .contains("shards given more than once (1):\n    shard 2/2: shard-2.xml, shard-2.xml"),
        "{}",
        out.context()
    );
}

#[test]
fn files_from_two_collections_fail_the_merge() {
    let project = Project::new("distribution");
    shard(&project, 1, 2, &[]).assert_code(0);
    project.write("test_new.py", "def test_new():\n    pass\n");
    shard(&project, 2, 2, &[]).assert_code(0);
    let out = merge(&project, &[1, 2], &[]);
    out.assert_code(3);
    assert!(
        out.stderr
            .contains("the files come from different collections"),
        "{}",
        out.context()
    );
}

#[test]
fn shards_split_with_different_histories_fail_the_merge() {
    let project = Project::new("distribution");
    shard(&project, 1, 2, &[]).assert_code(0);
    // Shard 1 split by test count; shard 2 sees a long test and a short one in two files.
    let durations = serde_json::json!({
        "test_alpha.py::test_a1": 100.0, "test_gamma.py::test_c1": 0.01,
    });
    project.write(
        ".test_durations",
        &serde_json::to_string(&durations).unwrap(),
    );
    shard(&project, 2, 2, &[]).assert_code(0);
    let out = merge(&project, &[1, 2], &[]);
    out.assert_code(3);
    assert!(
        out.stderr
            .contains("the shards split the collection differently"),
        "{}",
        out.context()
    );
}

#[test]
fn a_file_that_is_no_shard_s_is_refused() {
    let project = Project::new("distribution");
    shard(&project, 1, 1, &[]).assert_code(0);
    project
        .shoal(["-n", "2", "--junitxml=plain.xml"])
        .run()
        .assert_code(0);
    let out = project.shoal_raw(["merge", "plain.xml"]).run();
    out.assert_code(3);
    assert!(
        out.stderr
            .contains("plain.xml: it has no \"shoal.shard\" property"),
        "{}",
        out.context()
    );
    let missing = project.shoal_raw(["merge", "nope.xml"]).run();
    missing.assert_code(4);
}

#[test]
fn an_empty_shard_exits_0_says_so_and_still_counts_in_the_merge() {
    let project = Project::empty();
    project.write(
        "test_two.py",
        "def test_a():\n    pass\n\ndef test_b():\n    pass\n",
    );
    for k in 1..=3 {
        let out = shard(&project, k, 3, &[]);
        out.assert_code(0);
        if k == 3 {
            assert!(
                out.stderr.contains("shoal: shard 3/3 has no tests"),
                "{}",
                out.context()
            );
        }
    }
    assert!(assigned(&manifest(&project, 3)).is_empty());
    let merged = merge(&project, &[1, 2, 3], &[]);
    merged.assert_code(0);
    assert_eq!(merged.stats().get("passed"), Some(&2));
}

#[test]
fn loadfile_never_splits_a_file_over_shards() {
    let project = Project::new("distribution");
    let mut owner = std::collections::BTreeMap::new();
    for k in 1..=3 {
        shard(&project, k, 3, &["--dist", "loadfile"]).assert_code(0);
        for nodeid in assigned(&manifest(&project, k)) {
            let file = nodeid.split("::").next().unwrap().to_owned();
            let previous = owner.insert(file.clone(), k);
            assert!(
                previous.is_none() || previous == Some(k),
                "{file} is in shards {previous:?} and {k}"
            );
        }
    }
    assert_eq!(owner.len(), 4, "{owner:?}");
}

#[test]
fn the_split_is_the_same_from_another_directory_and_hash_seed() {
    let project = Project::new("distribution");
    fs::create_dir(project.path.join("sub")).unwrap();
    let plain = shard(&project, 1, 2, &[]);
    plain.assert_code(0);
    let first = assigned(&manifest(&project, 1));
    let junit = format!("--junitxml={}", project.path.join("shard-1.xml").display());
    let elsewhere = project
        .shoal([
            "-n",
            "2",
            "-p",
            "no:cacheprovider",
            "--shard",
            "1/2",
            junit.as_str(),
            "..",
        ])
        .current_dir(&project.path.join("sub"))
        .env("PYTHONHASHSEED", "12345")
        .run();
    elsewhere.assert_code(0);
    assert_eq!(assigned(&manifest(&project, 1)), first);
    assert!(!first.is_empty());
}

#[test]
fn shard_auto_reads_the_ci_s_variables_and_refuses_to_guess() {
    let project = Project::new("distribution");
    let out = project
        .shoal(["-n", "2", "-v", "--shard", "auto"])
        .env("CIRCLE_NODE_INDEX", "1")
        .env("CIRCLE_NODE_TOTAL", "2")
        .run();
    out.assert_code(0);
    out.assert_stdout_contains("shard 2/2]");
    out.assert_stdout_contains("shard 2/2 read from CIRCLE_NODE_INDEX/CIRCLE_NODE_TOTAL");
    let none = project.shoal(["-n", "2", "--shard", "auto"]).run();
    none.assert_code(4);
    assert!(
        none.stderr.contains("none of CI_NODE_INDEX (GitLab)"),
        "{}",
        none.context()
    );
    let status = project.root().join("bazel-status");
    project
        .shoal(["-n", "2", "--shard", "auto"])
        .env("TEST_SHARD_INDEX", "0")
        .env("TEST_TOTAL_SHARDS", "2")
        .env("TEST_SHARD_STATUS_FILE", &status)
        .run()
        .assert_code(0);
    assert!(status.exists(), "Bazel's status file is touched");
}

#[test]
fn bad_shards_and_unshardable_modes_are_usage_errors() {
    let project = Project::new("distribution");
    for args in [
        &["--shard", "0/2", "-n", "2"][..],
        &["--shard", "3/2", "-n", "2"],
        &["--shard", "1/2", "--dist=each"],
        &["--shard", "1/2", "--dist=no"],
    ] {
        let out = project.shoal(args).run();
        out.assert_code(4);
    }
}

#[test]
fn merged_durations_balance_the_next_split() {
    let project = Project::new("distribution");
    all_shards(&project, 2, &[], 0);
    merge(&project, &[1, 2], &["--durations"]).assert_code(0);
    let durations: serde_json::Map<String, Value> =
        serde_json::from_str(&fs::read_to_string(project.path.join(".test_durations")).unwrap())
            .unwrap();
    let collected = manifest(&project, 1)["collected"].as_u64().unwrap() as usize;
    assert_eq!(durations.len(), collected);
    let out = project
        .shoal(["-n", "2", "-v", "--shard", "1/2", "-p", "no:cacheprovider"])
        .run();
    out.assert_code(0);
    out.assert_stdout_contains(&format!(
        "split by recorded durations ({collected} of {collected} tests known)"
    ));
}
