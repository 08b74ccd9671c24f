//! Test outcomes under shoal equal serial pytest's: the per-test lines of the short summary
//! (`-rA`) and the counts of the final stats line, for every way of spreading the tests.

use crate::common::{assert_same_outcomes as assert_outcomes_equal, Output, Project};

const SERIAL: [&str; 4] = ["-p", "no:cacheprovider", "-rA", "-q"];

/// Runs `fixture` serially and with `shoal <shoal_args> -rA -q`; both must agree.
fn assert_same_outcomes(fixture: &str, shoal_args: &[&str]) -> (Output, Output) {
    let project = Project::new(fixture);
    let serial = project.pytest(SERIAL).run();
    let mut args: Vec<&str> = shoal_args.to_vec();
    args.extend(SERIAL);
    let shoal = project.shoal(&args).run();

    assert_outcomes_equal(&serial, &shoal);
    (serial, shoal)
}

#[test]
fn outcomes_match_serial_pytest_with_load() {
    let (serial, _) = assert_same_outcomes("outcomes", &["-n", "2"]);
    // The fixture has every kind of outcome; make sure serial pytest saw them all.
    let stats = serial.stats();
    for kind in ["passed", "failed", "error", "skipped", "xfailed", "xpassed"] {
        assert!(
            stats.get(kind).copied().unwrap_or(0) > 0,
            "fixture lacks {kind}\n{}",
            serial.context()
        );
    }
    serial.assert_code(1);
}

#[test]
fn outcomes_match_serial_pytest_with_loadscope() {
    assert_same_outcomes("outcomes", &["-n", "2", "--dist", "loadscope"]);
}

#[test]
fn outcomes_match_serial_pytest_with_loadfile() {
    assert_same_outcomes("outcomes", &["-n", "2", "--dist=loadfile"]);
}

#[test]
fn outcomes_match_serial_pytest_with_loadgroup() {
    assert_same_outcomes("outcomes", &["-n", "2", "--dist", "loadgroup"]);
}

#[test]
fn outcomes_match_serial_pytest_with_worksteal() {
    assert_same_outcomes("outcomes", &["-n", "2", "--dist", "worksteal"]);
}

#[test]
fn outcomes_match_serial_pytest_with_more_workers_than_cores() {
    assert_same_outcomes("outcomes", &["-n", "4"]);
}

#[test]
fn outcomes_match_serial_pytest_with_n0() {
    assert_same_outcomes("outcomes", &["-n", "0"]);
}

#[test]
fn outcomes_match_serial_pytest_with_dist_no() {
    assert_same_outcomes("outcomes", &["-n", "2", "--dist", "no"]);
}

#[test]
fn outcomes_match_serial_pytest_with_start_spawn() {
    assert_same_outcomes("outcomes", &["-n", "2", "--start", "spawn"]);
}

#[test]
fn all_passing_suite_matches_serial_pytest() {
    let (_, shoal) = assert_same_outcomes("passing", &["-n", "2"]);
    shoal.assert_code(0);
}

/// The terminal belongs to the controller: one session header, one summary, one stats line,
/// however the workers were started.
fn assert_single_report(args: &[&str]) {
    let project = Project::new("one_failure");
    let mut all = vec!["-n", "2", "-p", "no:cacheprovider"];
    all.extend_from_slice(args);
    let out = project.shoal(&all).run();
    out.assert_code(1);
    let headers = out.stdout.matches("test session starts").count();
    assert!(
        headers <= 1,
        "the session header is printed {headers} times (a worker's pytest printed to the \
         terminal)\n{}",
        out.context()
    );
    assert_eq!(
        out.stats_line_count(),
        1,
        "expected exactly one stats line\n{}",
        out.context()
    );
    assert_eq!(
        out.stdout.matches(" short test summary info ").count(),
        1,
        "expected exactly one short test summary\n{}",
        out.context()
    );
    assert_eq!(
        out.stdout.matches(" FAILURES ").count(),
        1,
        "expected exactly one FAILURES section\n{}",
        out.context()
    );
}

#[test]
fn forked_workers_print_nothing_of_their_own() {
    assert_single_report(&[]);
}

#[test]
fn spawned_workers_print_nothing_of_their_own() {
    assert_single_report(&["--start", "spawn"]);
}

#[test]
fn verbose_lines_name_the_worker_and_progress() {
    let project = Project::new("one_failure");
    let out = project
        .shoal(["-n", "2", "-v", "-p", "no:cacheprovider"])
        .run();
    out.assert_code(1);
    // `[gw0] [ 25%] PASSED test_one_failure.py::test_a`
    let mut seen = Vec::new();
    // Only the progress lines: each failure section also begins with its worker's
    // `[gw0] linux -- Python ...` line, as under xdist.
    let progress = out.stdout.lines().take_while(|l| !l.contains(" FAILURES "));
    for line in progress.filter(|l| l.starts_with("[gw")) {
        let (worker, rest) = line.split_once("] ").expect("[gwN] prefix");
        let n = worker.trim_start_matches("[gw");
        assert!(
            n.parse::<u32>().is_ok(),
            "bad worker in {line:?}\n{}",
            out.context()
        );
        let rest = rest
            .strip_prefix('[')
            .unwrap_or_else(|| panic!("no progress in {line:?}\n{}", out.context()));
        let (pct, rest) = rest.split_once("%] ").expect("progress");
        assert_eq!(pct.len(), 3, "progress is right-aligned to 3: {line:?}");
        let pct: u32 = pct.trim().parse().expect("a percentage");
        let (word, nodeid) = rest.split_once(' ').expect("word and node id");
        assert!(
            ["PASSED", "FAILED"].contains(&word),
            "bad word in {line:?}\n{}",
            out.context()
        );
        assert!(
            nodeid.starts_with("test_one_failure.py::test_"),
            "bad node id in {line:?}"
        );
        seen.push((pct, word.to_owned(), nodeid.to_owned()));
    }
    assert_eq!(seen.len(), 4, "expected four -v lines\n{}", out.context());
    let pcts: Vec<u32> = seen.iter().map(|s| s.0).collect();
    assert_eq!(pcts, [25, 50, 75, 100], "{}", out.context());
    assert!(seen
        .iter()
        .any(|s| s.1 == "FAILED" && s.2 == "test_one_failure.py::test_b"));
    assert!(
        out.stdout.contains("2 workers [4 items]"),
        "{}",
        out.context()
    );
}

#[test]
fn quiet_prints_dots_and_final_line_like_pytest() {
    let project = Project::new("one_failure");
    let serial = project.pytest(["-q", "-p", "no:cacheprovider"]).run();
    let out = project
        .shoal(["-n", "2", "-q", "-p", "no:cacheprovider"])
        .run();
    out.assert_code(1);
    let serial_progress = serial
        .stdout
        .lines()
        .find(|l| l.ends_with("[100%]"))
        .unwrap_or_else(|| panic!("no progress line\n{}", serial.context()));
    let progress = out
        .stdout
        .lines()
        .find(|l| l.ends_with("[100%]"))
        .unwrap_or_else(|| panic!("no progress line\n{}", out.context()));
    let letters = progress.trim_end_matches("[100%]").trim_end();
    let mut sorted: Vec<char> = letters.chars().collect();
    sorted.sort();
    assert_eq!(
        sorted,
        ['.', '.', '.', 'F'],
        "progress letters {letters:?}\n{}",
        out.context()
    );
    assert_eq!(
        progress.len(),
        serial_progress.len(),
        "progress line is not as wide as pytest's: {progress:?} vs {serial_progress:?}"
    );
    // -q: the stats line without separators, as pytest prints it.
    let last = out.stdout.lines().last().unwrap_or("");
    assert!(
        last.starts_with("1 failed, 3 passed in ") && last.ends_with('s'),
        "last line {last:?}\n{}",
        out.context()
    );
}

#[test]
fn final_line_looks_like_pytest() {
    let project = Project::new("one_failure");
    let serial = project.pytest(["-p", "no:cacheprovider"]).run();
    let out = project.shoal(["-n", "2", "-p", "no:cacheprovider"]).run();
    out.assert_code(1);
    let mask = |line: &str| -> String {
        // `in 0.12s` -> `in T`; separator widths are compared through the total length.
        let (head, _) = line.rsplit_once(" in ").expect("a stats line");
        format!("{head} in T")
    };
    let last = out.stdout.lines().last().unwrap_or("");
    let serial_last = serial.stdout.lines().last().unwrap_or("");
    assert!(
        last.starts_with("=") && last.ends_with("="),
        "last line {last:?}\n{}",
        out.context()
    );
    assert_eq!(
        last.trim_matches('=')
            .trim()
            .rsplit_once(" in ")
            .map(|p| p.0),
        Some("1 failed, 3 passed"),
        "{}",
        out.context()
    );
    assert_eq!(mask(last).len(), mask(serial_last).len());
    let fill = |l: &str| {
        let lead = l.len() - l.trim_start_matches('=').len();
        let trail = l.len() - l.trim_end_matches('=').len();
        (lead, trail)
    };
    let (lead, trail) = fill(last);
    assert!(
        lead >= 3 && trail >= 3 && lead.abs_diff(trail) <= 1,
        "separators unbalanced in {last:?}"
    );
    let duration = last.trim_matches('=').trim().rsplit_once(" in ").unwrap().1;
    let secs = duration.strip_suffix('s').expect("seconds");
    let (whole, frac) = secs.split_once('.').expect("two decimals");
    assert!(
        whole.parse::<u64>().is_ok() && frac.len() == 2,
        "{duration:?}"
    );
    assert!(
        (79..=80).contains(&last.len()),
        "stats line is {} wide, not pytest's 80: {last:?}",
        last.len()
    );
}
