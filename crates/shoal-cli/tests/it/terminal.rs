//! What shoal prints: plain text (no escapes) when stdout is a pipe, the live view in a
//! terminal, `-v` lines with the worker id, `--failure-output immediate`, output under `-s`
//! prefixed with the worker id, the warnings summary and the `-r` short summary, compared with
//! serial pytest (and with pytest-xdist where shoal follows xdist's layout).

use std::collections::{BTreeMap, BTreeSet};

use crate::common::{parse_stats, screen, Output, Project, TERMINAL_WIDTH};

// ============================================================================================
// Helpers
// ============================================================================================

/// `[gw0] [ 50%] PASSED a.py::t` -> (`gw0`, 50, `PASSED`, `a.py::t`).
fn verbose_line(line: &str) -> Option<(String, u32, String, String)> {
    let rest = line.strip_prefix("[gw")?;
    let (number, rest) = rest.split_once("] [")?;
    number.parse::<u32>().ok()?;
    let (pct, rest) = rest.split_once("%] ")?;
    let pct: u32 = pct.trim().parse().ok()?;
    let (word, nodeid) = rest.split_once(' ')?;
    Some((
        format!("gw{number}"),
        pct,
        word.to_owned(),
        nodeid.trim_end().to_owned(),
    ))
}

/// The block of a failure or error section: from its `____ title ____` line up to the next
/// section header (`___`/`===` line), without the trailing line break.
fn section_block(stdout: &str, title: &str) -> Option<String> {
    let lines: Vec<&str> = stdout.lines().collect();
    let start = lines
        .iter()
        .position(|l| l.starts_with('_') && l.trim_matches('_').trim() == title)?;
    let end = lines[start + 1..]
        .iter()
        .position(|l| l.starts_with("___") || l.starts_with("==="))
        .map_or(lines.len(), |n| start + 1 + n);
    Some(lines[start..end].join("\n"))
}

/// A section block without the `[gw0] linux -- Python 3.11.7 /path/python` line that shoal
/// puts first, as pytest-xdist does, for comparison with serial pytest's.
fn without_worker_line(block: &str) -> String {
    block
        .lines()
        .filter(|l| !(l.starts_with("[gw") && l.contains("] linux -- Python ")))
        .collect::<Vec<_>>()
        .join("\n")
}

/// Removes ANSI escape sequences (CSI `ESC [ ... final`, and two-byte `ESC x`).
fn strip_ansi(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        if c != '\x1b' {
            out.push(c);
            continue;
        }
        if chars.next() == Some('[') {
            for c in chars.by_ref() {
                if ('\x40'..='\x7e').contains(&c) {
                    break;
                }
            }
        }
    }
    out
}

/// The short summary: its lines (after the header, before the final line), or `None` when
/// there is no short summary.
fn short_summary(output: &Output) -> Option<Vec<String>> {
    let lines: Vec<&str> = output.stdout.lines().collect();
    let start = lines
        .iter()
        .rposition(|l| l.starts_with('=') && l.contains(" short test summary info "))?;
    // On CI pytest shows whole messages, which can span lines: a line that does not start
    // with a status word belongs to the entry above it.
    const WORDS: [&str; 8] = [
        "PASSED", "FAILED", "ERROR", "SKIPPED", "XFAIL", "XPASS", "RERUN", "FLAKY",
    ];
    let mut entries: Vec<String> = Vec::new();
    for line in lines[start + 1..]
        .iter()
        .take_while(|l| parse_stats(l).is_none() && !l.starts_with("==="))
    {
        let word = line.split(' ').next().unwrap_or("");
        match entries.last_mut() {
            Some(last) if !WORDS.contains(&word) => {
                last.push('\n');
                last.push_str(line);
            }
            _ => entries.push(line.to_string()),
        }
    }
    Some(entries)
}

/// The groups of a short summary in order (`PASSED`, `SKIPPED`, ...): consecutive lines with
/// the same first word are one group.
fn summary_groups(lines: &[String]) -> Vec<String> {
    let mut groups: Vec<String> = Vec::new();
    for line in lines {
        let word = line.split(' ').next().unwrap_or("").to_owned();
        if groups.last() != Some(&word) {
            groups.push(word);
        }
    }
    groups
}

fn sorted(lines: &[String]) -> Vec<String> {
    let mut lines = lines.to_vec();
    lines.sort();
    lines
}

/// The warnings summary as message -> locations, checking each message appears once.
fn warnings_summary(output: &Output) -> Option<BTreeMap<String, Vec<String>>> {
    let lines: Vec<&str> = output.stdout.lines().collect();
    let start = lines
        .iter()
        .position(|l| l.starts_with('=') && l.contains(" warnings summary "))?;
    let end = start
        + lines[start..]
            .iter()
            .position(|l| l.starts_with("-- Docs: "))
            .unwrap_or_else(|| {
                panic!(
                    "warnings summary without its Docs line\n{}",
                    output.context()
                )
            });
    let mut groups: BTreeMap<String, Vec<String>> = BTreeMap::new();
    let mut locations: Vec<String> = Vec::new();
    let mut message: Vec<String> = Vec::new();
    let mut flush = |locations: &mut Vec<String>, message: &mut Vec<String>| {
        if locations.is_empty() && message.is_empty() {
            return;
        }
        let text = message.join("\n");
        assert!(
            !groups.contains_key(&text),
            "warning {text:?} appears twice in the summary\n{}",
            output.context()
        );
        locations.sort();
        groups.insert(text, std::mem::take(locations));
        message.clear();
    };
    for line in &lines[start + 1..end] {
        if line.is_empty() {
            flush(&mut locations, &mut message);
        } else if line.starts_with("  ") {
            message.push(line.to_string());
        } else {
            assert!(
                message.is_empty(),
                "unexpected line {line:?}\n{}",
                output.context()
            );
            locations.push(line.to_string());
        }
    }
    flush(&mut locations, &mut message);
    Some(groups)
}

// ============================================================================================
// Not a terminal
// ============================================================================================

#[test]
fn piped_output_has_no_escape_sequences() {
    let project = Project::new("reports_terminal");
    for args in [
        vec!["-n", "2"],
        vec!["-n", "2", "-v"],
        vec!["-n", "2", "-rA", "--durations=2"],
    ] {
        let out = project.shoal(&args).run();
        out.assert_code(1);
        assert!(
            !out.stdout.contains('\x1b') && !out.stderr.contains('\x1b'),
            "escape characters in piped output of {args:?}\n{}",
            out.context()
        );
    }
}

#[test]
fn color_yes_adds_escape_sequences() {
    let project = Project::new("reports_terminal");
    let out = project.shoal(["-n", "2", "--color=yes"]).run();
    out.assert_code(1);
    assert!(
        out.stdout.contains("\x1b["),
        "--color=yes printed no escape sequence\n{}",
        out.context()
    );
    // The final line is colored (red: a test failed) and otherwise pytest's.
    let last = out.stdout.lines().last().unwrap_or("");
    assert!(
        last.contains("\x1b[31m") || last.contains(";31m"),
        "{last:?}"
    );
    let plain = strip_ansi(last);
    let stats = parse_stats(&plain).unwrap_or_else(|| panic!("not a stats line: {plain:?}"));
    assert_eq!(stats.get("failed"), Some(&1));

    let plain_run = project.shoal(["-n", "2", "--color=no"]).run();
    assert!(
        !plain_run.stdout.contains('\x1b'),
        "{}",
        plain_run.context()
    );
}

/// The last line is pytest's `==== N passed in X.XXs ====`, 80 columns wide.
#[track_caller]
fn assert_final_line(output: &Output, expected: &[(&str, usize)]) {
    let last = output
        .stdout
        .lines()
        .last()
        .unwrap_or_else(|| panic!("no output\n{}", output.context()));
    assert!(
        last.starts_with("= ") || last.starts_with("=="),
        "the last line is not pytest's final line: {last:?}\n{}",
        output.context()
    );
    assert_eq!(last.chars().count(), 80, "final line not 80 wide: {last:?}");
    let inner = last.trim_matches('=').trim();
    let (counts, duration) = inner.rsplit_once(" in ").unwrap();
    let expected_text: Vec<String> = expected.iter().map(|(w, n)| format!("{n} {w}")).collect();
    assert_eq!(counts, expected_text.join(", "), "{last:?}");
    let seconds = duration.strip_suffix('s').unwrap();
    let (whole, fraction) = seconds.split_once('.').unwrap();
    assert!(
        whole.parse::<u64>().is_ok() && fraction.len() == 2 && fraction.parse::<u64>().is_ok(),
        "duration not like pytest's: {duration:?}"
    );
}

#[test]
fn final_line_is_pytests() {
    let project = Project::new("reports_terminal");
    let out = project
        .shoal([
            "-n",
            "2",
            "test_terminal.py::test_pass_1",
            "test_terminal.py::test_pass_2",
        ])
        .run();
    out.assert_code(0);
    assert_final_line(&out, &[("passed", 2)]);

    let all = project.shoal(["-n", "2"]).run();
    all.assert_code(1);
    assert_final_line(&all, &[("failed", 1), ("passed", 3), ("skipped", 1)]);
    let serial = project.pytest(["-p", "no:cacheprovider"]).run();
    assert_final_line(&serial, &[("failed", 1), ("passed", 3), ("skipped", 1)]);
}

#[test]
fn verbose_lines_carry_the_worker_id_like_xdist() {
    let project = Project::new("reports_junit");
    let out = project
        .shoal(["-n", "2", "-v", "-p", "no:cacheprovider"])
        .run();
    out.assert_code(1);
    let xdist = project
        .pytest(["-n", "2", "-v", "-p", "no:cacheprovider"])
        .run();
    xdist.assert_code(1);

    let parsed: Vec<(String, u32, String, String)> = out
        .stdout
        .lines()
        .filter(|l| l.starts_with("[gw") && l.contains("%] "))
        .map(|l| {
            verbose_line(l).unwrap_or_else(|| panic!("malformed -v line {l:?}\n{}", out.context()))
        })
        .collect();
    assert!(!parsed.is_empty(), "no -v lines\n{}", out.context());
    let workers: BTreeSet<&str> = parsed.iter().map(|(w, ..)| w.as_str()).collect();
    assert!(
        workers.iter().all(|w| *w == "gw0" || *w == "gw1"),
        "unexpected workers {workers:?}"
    );
    let percents: Vec<u32> = parsed.iter().map(|(_, p, ..)| *p).collect();
    assert!(
        percents.windows(2).all(|w| w[0] <= w[1]) && percents.last() == Some(&100),
        "progress not rising to 100%: {percents:?}\n{}",
        out.context()
    );
    for (_, _, _, nodeid) in &parsed {
        assert!(nodeid.contains("::"), "no node id in -v line: {nodeid:?}");
    }

    // The same words for the same tests as pytest-xdist prints. (shoal adds ` (setup)` or
    // ` (teardown)` to errors outside the call; xdist does not.)
    let words = |lines: Vec<(String, String)>| -> Vec<(String, String)> {
        let mut lines: Vec<(String, String)> = lines
            .into_iter()
            .map(|(w, n)| {
                let n = n
                    .trim_end_matches(" (setup)")
                    .trim_end_matches(" (teardown)")
                    .to_owned();
                (w, n)
            })
            .collect();
        lines.sort();
        lines
    };
    let shoal_words = words(
        parsed
            .iter()
            .map(|(_, _, w, n)| (w.clone(), n.clone()))
            .collect(),
    );
    let xdist_words = words(
        xdist
            .stdout
            .lines()
            .filter_map(verbose_line)
            .map(|(_, _, w, n)| (w, n))
            .collect(),
    );
    assert_eq!(
        shoal_words,
        xdist_words,
        "-v lines differ from pytest-xdist's\n=== xdist ===\n{}\n=== shoal ===\n{}",
        xdist.context(),
        out.context()
    );
}

#[test]
fn failure_output_immediate_prints_each_failure_once_before_the_summary() {
    let project = Project::new("reports_terminal");
    // One worker: the failing test runs first, so its traceback must come before the lines
    // of the tests that run after it.
    let out = project
        .shoal(["-n", "1", "-v", "--failure-output", "immediate"])
        .run();
    out.assert_code(1);
    let lines: Vec<&str> = out.stdout.lines().collect();
    let header = |l: &&str| l.starts_with('_') && l.trim_matches('_').trim() == "test_first_fails";
    assert_eq!(
        lines.iter().filter(|l| header(l)).count(),
        1,
        "the failure's section must be printed exactly once\n{}",
        out.context()
    );
    assert_eq!(
        out.stdout
            .matches("E       AssertionError: first fails")
            .count(),
        1,
        "{}",
        out.context()
    );
    assert!(
        !lines
            .iter()
            .any(|l| l.starts_with('=') && l.contains(" FAILURES ")),
        "immediate output must not repeat the failure in a FAILURES section\n{}",
        out.context()
    );
    let at = lines.iter().position(header).unwrap();
    let later_test = lines
        .iter()
        .position(|l| l.contains("PASSED test_terminal.py::test_pass_3"))
        .unwrap_or_else(|| panic!("no -v line for test_pass_3\n{}", out.context()));
    let summary = lines
        .iter()
        .position(|l| l.contains(" short test summary info "))
        .unwrap();
    let stats = lines
        .iter()
        .rposition(|l| parse_stats(l).is_some())
        .unwrap();
    assert!(
        at < later_test && at < summary && summary < stats,
        "the traceback was not printed as the test failed\n{}",
        out.context()
    );

    // Without -v and with two workers: still once, before the summary.
    let out = project
        .shoal(["-n", "2", "--failure-output=immediate"])
        .run();
    out.assert_code(1);
    let lines: Vec<&str> = out.stdout.lines().collect();
    assert_eq!(
        lines.iter().filter(|l| header(l)).count(),
        1,
        "{}",
        out.context()
    );
    let at = lines.iter().position(header).unwrap();
    let stats = lines
        .iter()
        .rposition(|l| parse_stats(l).is_some())
        .unwrap();
    assert!(at < stats, "{}", out.context());
    assert_eq!(out.stats().get("failed"), Some(&1));
}

/// With spawned workers: forked ones mix up captured output (see
/// `captured_output_stays_with_its_test_with_forked_workers`).
#[test]
fn failure_output_end_shows_failures_like_pytest() {
    let project = Project::new("reports_terminal");
    let serial = project.pytest(["-p", "no:cacheprovider"]).run();
    let out = project.shoal(["-n", "2", "--start", "spawn"]).run();
    out.assert_code(1);
    let expected = section_block(&serial.stdout, "test_first_fails")
        .unwrap_or_else(|| panic!("{}", serial.context()));
    let actual = section_block(&out.stdout, "test_first_fails")
        .unwrap_or_else(|| panic!("no failure section\n{}", out.context()));
    let actual = without_worker_line(&actual);
    assert_eq!(actual, expected, "{}", out.context());
}

/// The header lists the plugins as pytest does with pytest-xdist switched off, as shoal runs
/// it: without `xdist-3.8.0`, which would say xdist runs the workers.
#[test]
fn the_header_lists_the_plugins_without_xdist_like_pytest() {
    let project = Project::new("passing");
    let plugins = |o: &Output| {
        o.stdout
            .lines()
            .find(|l| l.starts_with("plugins: "))
            .map(str::to_owned)
    };
    let with_xdist = project.pytest(["-p", "no:cacheprovider"]).run();
    assert!(
        plugins(&with_xdist).is_some_and(|l| l.contains("xdist-")),
        "pytest-xdist is not installed\n{}",
        with_xdist.context()
    );
    let out = project.shoal_n2(&[]).run();
    out.assert_code(0);
    let serial = project.serial(&["-p", "no:xdist.looponfail"]).run();
    assert_eq!(plugins(&out), plugins(&serial), "{}", out.context());
}

// ============================================================================================
// A terminal
// ============================================================================================

#[test]
fn live_view_in_a_terminal() {
    let project = Project::new("reports_tty");
    let out = project
        .shoal_in_terminal(&["-n", "2", "-p", "no:cacheprovider"])
        .run();
    out.assert_code(1);
    let raw = String::from_utf8_lossy(&project.last_stdout_bytes()).into_owned();
    let text = strip_ansi(&raw);
    // Every piece the terminal may have been shown: split at line breaks and carriage returns.
    let pieces: Vec<&str> = text.split(['\n', '\r']).map(str::trim_end).collect();
    let context = || format!("--- terminal (escapes removed):\n{text}\n{}", out.context());

    let totals: Vec<&&str> = pieces
        .iter()
        .filter(|p| {
            p.contains("/21 ")
                && p.contains(" passed, ")
                && p.contains(" failed, ")
                && p.contains(" skipped")
        })
        .collect();
    assert!(!totals.is_empty(), "no live totals line\n{}", context());
    for worker in ["[gw0]", "[gw1]"] {
        assert!(
            pieces.iter().any(|p| p.trim_start().starts_with(worker)),
            "no live line for {worker}\n{}",
            context()
        );
    }
    assert!(
        pieces.iter().any(|p| {
            let p = p.trim_start();
            (p.starts_with("[gw0] ") || p.starts_with("[gw1] "))
                && p.contains("test_tty.py::test_sleepy[")
        }),
        "no worker line shows the test it runs\n{}",
        context()
    );

    // The live view is gone at the end: the summary is pytest's and the last line its final
    // line.
    let last = pieces
        .iter()
        .rev()
        .find(|p| !p.trim().is_empty())
        .unwrap_or_else(|| panic!("no output\n{}", context()));
    let stats = parse_stats(last).unwrap_or_else(|| {
        panic!(
            "the last line is not the final stats line: {last:?}\n{}",
            context()
        )
    });
    assert_eq!(
        stats,
        [
            ("failed".to_owned(), 1),
            ("passed".to_owned(), 19),
            ("skipped".to_owned(), 1)
        ]
        .into(),
        "{}",
        context()
    );
    assert!(
        pieces.contains(&"FAILED test_tty.py::test_sleepy[7] - AssertionError: number seven fails"),
        "no short summary line for the failure\n{}",
        context()
    );
    assert!(
        text.contains("E       AssertionError: number seven fails"),
        "no traceback\n{}",
        context()
    );
}

/// The output from its `created:` line on, with the run's duration as `[TIME]`.
fn after_created(text: &str) -> String {
    let start = text.find("created: ").unwrap_or(0);
    let time = regex::Regex::new(r" in \d+\.\d+s ").unwrap();
    time.replace_all(text[start..].trim_end(), " in [TIME] ")
        .into_owned()
}

/// Once the live view is gone, a terminal reads as pytest's does, and as a pipe is sent: the
/// progress line under `1 worker [5 items]`, then the sections, every separator as wide as
/// the terminal (those of captured output too, which the worker renders).
#[test]
fn the_final_screen_in_a_terminal_is_the_piped_output() {
    let project = Project::new("reports_terminal");
    let args = ["-n", "1", "-p", "no:cacheprovider", "-rA"];
    let piped = project
        .shoal(args)
        .env("COLUMNS", TERMINAL_WIDTH.to_string())
        .run();
    piped.assert_code(1);
    let out = project.shoal_in_terminal(&args).run();
    out.assert_code(1);
    let shown = screen(&project.last_stdout_bytes());
    let context = || format!("--- screen:\n{shown}\n{}", out.context());
    assert_eq!(
        after_created(&shown),
        after_created(&piped.stdout),
        "{}",
        context()
    );
    let captured = shown
        .lines()
        .find(|l| l.contains(" Captured stdout call "))
        .unwrap_or_else(|| panic!("no captured output\n{}", context()));
    assert!(
        captured.len() >= TERMINAL_WIDTH - 1,
        "{captured:?} is narrower than the terminal\n{}",
        context()
    );
}

// ============================================================================================
// -s: output outside capture
// ============================================================================================

/// Lines of a `-s` run of `reports_capture`, decoded lossily.
fn capture_run(project: &Project) -> (Output, Vec<u8>) {
    let out = project
        .shoal(["-n", "2", "-s", "-p", "no:cacheprovider"])
        .run();
    let raw = project.last_stdout_bytes();
    (out, raw)
}

/// `[gw1] gw1 text` -> (`gw1`, `text`), checking the prefix names the worker that printed
/// (each test prints its own worker id first). A line may begin with the unterminated
/// `tail-without-newline` that the same worker printed before.
fn worker_line(line: &str) -> Option<(String, String)> {
    let rest = line.strip_prefix("[gw")?;
    let (number, rest) = rest.split_once("] ")?;
    number.parse::<u32>().ok()?;
    let worker = format!("gw{number}");
    let own = format!("{worker} ");
    let rest = rest
        .strip_prefix(&format!("{worker} tail-without-newline"))
        .unwrap_or(rest);
    let text = rest.strip_prefix(&own)?;
    Some((worker, text.to_owned()))
}

#[test]
fn dash_s_output_is_prefixed_with_the_worker_and_complete() {
    let project = Project::new("reports_capture");
    let (out, raw) = capture_run(&project);
    let stdout = String::from_utf8_lossy(&raw).into_owned();
    let context = || {
        format!(
            "{}\n--- stdout (lossy, first 4000 chars):\n{}",
            out.context(),
            &stdout.chars().take(4000).collect::<String>()
        )
    };
    out.assert_code(0);
    assert_eq!(
        parse_stats(stdout.lines().last().unwrap_or("")).and_then(|s| s.get("passed").copied()),
        Some(6),
        "{}",
        context()
    );

    let mut many: BTreeMap<&str, BTreeMap<u32, usize>> = BTreeMap::new();
    let mut many_workers: BTreeMap<&str, BTreeSet<String>> = BTreeMap::new();
    let mut found: BTreeSet<&str> = BTreeSet::new();
    let stderr_seen = out
        .stderr
        .lines()
        .chain(stdout.lines())
        .any(|l| worker_line(l).is_some_and(|(_, t)| t == "on-stderr"));
    for line in stdout.lines() {
        if line.contains(" many-") {
            let (worker, text) =
                worker_line(line).unwrap_or_else(|| panic!("mangled line {line:?}\n{}", context()));
            let (kind, n) = text
                .split_once(' ')
                .unwrap_or_else(|| panic!("mangled line {line:?}"));
            let kind: &str = match kind {
                "many-a" => "a",
                "many-b" => "b",
                _ => panic!("mangled line {line:?}\n{}", context()),
            };
            let n: u32 = n
                .parse()
                .unwrap_or_else(|_| panic!("mangled line {line:?}"));
            *many.entry(kind).or_default().entry(n).or_default() += 1;
            many_workers.entry(kind).or_default().insert(worker);
            continue;
        }
        if let Some((_, text)) = worker_line(line) {
            if text == "partial-joined" {
                found.insert("partial");
            }
            if text.starts_with("binary ") && text.ends_with(" end") {
                found.insert("binary");
            }
        }
        if line.starts_with("[gw") && line.contains(" tail-without-newline") {
            let worker = &line[1..line.find(']').unwrap()];
            assert!(
                line.starts_with(&format!("[{worker}] {worker} tail-without-newline")),
                "{line:?}"
            );
            found.insert("tail");
        }
    }
    for kind in ["a", "b"] {
        let counts = many.get(kind).cloned().unwrap_or_default();
        let lost: Vec<u32> = (0..20000)
            .filter(|n| !counts.contains_key(n))
            .take(10)
            .collect();
        let doubled: Vec<(&u32, &usize)> =
            counts.iter().filter(|(_, c)| **c != 1).take(10).collect();
        assert!(
            counts.len() == 20000 && lost.is_empty() && doubled.is_empty(),
            "many-{kind}: {} distinct lines of 20000; lost (first 10) {lost:?}; repeated {doubled:?}\n{}",
            counts.len(),
            out.context()
        );
        assert_eq!(
            many_workers[kind].len(),
            1,
            "one test's lines carry several worker ids: {:?}",
            many_workers[kind]
        );
    }
    for piece in ["partial", "tail", "binary"] {
        assert!(found.contains(piece), "no {piece} line\n{}", context());
    }
    assert!(stderr_seen, "the stderr line is missing\n{}", context());
}

#[test]
fn dash_s_passes_bytes_through_unchanged() {
    let project = Project::new("reports_capture");
    let (out, raw) = capture_run(&project);
    out.assert_code(0);
    // The worker's line may start with an earlier write that had no newline, as under pytest.
    // The printing worker names itself: `[gwN] ... gwN binary <bytes> end`.
    let found = raw.split(|&b| b == b'\n').any(|line| {
        ["gw0", "gw1"].iter().any(|w| {
            let needle = [w.as_bytes(), b" binary \xff\xfe\x00\x01 end"].concat();
            line.starts_with(format!("[{w}] ").as_bytes()) && line.ends_with(&needle)
        })
    });
    assert!(
        found,
        "the bytes b'\\xff\\xfe\\x00\\x01' did not reach stdout unchanged\n--- stdout lines with 'binary':\n{:?}",
        String::from_utf8_lossy(&raw)
            .lines()
            .filter(|l| l.contains("binary"))
            .collect::<Vec<_>>()
    );
}

/// With spawned workers: forked ones mix up captured output (see
/// `captured_output_stays_with_its_test_with_forked_workers`).
#[test]
fn captured_output_of_a_failure_is_shown_like_pytest() {
    let project = Project::new("reports_junit");
    let serial = project.serial(&[]).run();
    let out = project.shoal_n2(&["--start", "spawn"]).run();
    out.assert_code(1);
    let expected = section_block(&serial.stdout, "test_output_fail")
        .unwrap_or_else(|| panic!("{}", serial.context()));
    for title in [
        "Captured stdout setup",
        "Captured stdout call",
        "Captured stderr call",
        "Captured log call",
        "Captured stdout teardown",
    ] {
        assert!(
            expected.contains(title),
            "serial pytest shows no {title:?}: fixture changed?"
        );
    }
    let actual = section_block(&out.stdout, "test_output_fail")
        .unwrap_or_else(|| panic!("no section for test_output_fail\n{}", out.context()));
    let actual = without_worker_line(&actual);
    assert_eq!(actual, expected, "{}", out.context());
    // The captured text appears in that section only: nothing leaked to the terminal.
    assert_eq!(
        out.stdout
            .lines()
            .filter(|l| *l == "stdout before failing")
            .count(),
        1,
        "{}",
        out.context()
    );
    assert!(
        !out.stdout.contains("hello on stdout"),
        "a passing test's capture leaked\n{}",
        out.context()
    );
}

/// Each failing test of `reports_capture_shared` prints its own token: its section must show
/// that token, and only it.
fn assert_captures_stay_with_their_tests(shoal_args: &[&str]) {
    let project = Project::new("reports_capture_shared");
    let mut args = vec!["-n", "2", "-p", "no:cacheprovider"];
    args.extend_from_slice(shoal_args);
    let out = project.shoal(&args).run();
    out.assert_code(1);
    let mut wrong = Vec::new();
    for n in 0..20 {
        let title = format!("test_prints_then_fails[{n}]");
        let block = section_block(&out.stdout, &title)
            .unwrap_or_else(|| panic!("no failure section for {title}\n{}", out.context()));
        let tokens: Vec<&str> = block.lines().filter(|l| l.starts_with("token-")).collect();
        let expected = [format!("token-{n:02}-out"), format!("token-{n:02}-err")];
        if tokens != expected {
            wrong.push(format!("{title}: {tokens:?}"));
        }
    }
    assert!(
        wrong.is_empty(),
        "captured output under the wrong test or lost:\n{}\n{}",
        wrong.join("\n"),
        out.context()
    );
}

#[test]
fn captured_output_stays_with_its_test_with_spawned_workers() {
    assert_captures_stay_with_their_tests(&["--start", "spawn"]);
}

#[test]
fn captured_output_stays_with_its_test_with_forked_workers() {
    assert_captures_stay_with_their_tests(&[]);
}

// ============================================================================================
// Warnings
// ============================================================================================

#[test]
fn same_warning_from_both_workers_is_listed_once_like_pytest() {
    let project = Project::new("reports_warnings");
    let serial = project.serial(&[]).run();
    serial.assert_code(0);
    project.take_records();
    let out = project.shoal_n2(&[]).rendezvous().run();
    out.assert_code(0);
    let records = project.take_records();
    crate::common::assert_no_rendezvous_timeout(&records, &out);

    let expected = warnings_summary(&serial).unwrap_or_else(|| panic!("{}", serial.context()));
    let actual =
        warnings_summary(&out).unwrap_or_else(|| panic!("no warnings summary\n{}", out.context()));
    assert_eq!(
        actual,
        expected,
        "warnings summaries differ\n=== serial ===\n{}\n=== shoal ===\n{}",
        serial.context(),
        out.context()
    );
    // The shared warning's tests ran on both workers, and it is still one entry.
    let shared = actual
        .iter()
        .find(|(m, _)| m.contains("the same warning everywhere"))
        .map(|(_, l)| l.clone())
        .unwrap_or_else(|| panic!("shared warning missing\n{}", out.context()));
    let placements: BTreeMap<String, String> =
        crate::common::placements(&records).into_iter().collect();
    let workers: BTreeSet<&String> = shared.iter().filter_map(|id| placements.get(id)).collect();
    assert_eq!(
        workers.len(),
        2,
        "the warning came from {workers:?} only\n{}",
        out.context()
    );
    assert!(
        !out.stdout.contains("caught, never reported"),
        "{}",
        out.context()
    );

    assert_eq!(
        out.stats(),
        serial.stats(),
        "final lines differ\n{}",
        out.context()
    );
    assert_eq!(out.stats().get("warnings"), Some(&7));
}

#[test]
fn disable_warnings_hides_the_summary_but_keeps_the_count_like_pytest() {
    let project = Project::new("reports_warnings");
    let (serial, out) = project.serial_and_shoal(&["--disable-warnings"]);
    out.assert_code(0);
    assert!(warnings_summary(&serial).is_none(), "{}", serial.context());
    assert!(warnings_summary(&out).is_none(), "{}", out.context());
    assert_eq!(out.stats(), serial.stats(), "{}", out.context());
}

#[test]
fn collection_warnings_are_counted_like_pytest() {
    let project = Project::new("reports_warnings");
    project.write(
        "test_import_warning.py",
        "import warnings\n\nwarnings.warn(\"warning at import time\", UserWarning)\n\n\ndef test_after_import_warning():\n    pass\n",
    );
    let (serial, out) = project.serial_and_shoal(&[]);
    serial.assert_code(0);
    out.assert_code(0);
    assert_eq!(
        warnings_summary(&out),
        warnings_summary(&serial),
        "{}",
        out.context()
    );
    assert_eq!(
        out.stats(),
        serial.stats(),
        "final lines differ\n=== serial ===\n{}\n=== shoal ===\n{}",
        serial.context(),
        out.context()
    );
}

#[test]
fn cache_warnings_are_counted_like_pytest() {
    // A cache directory that cannot be created: pytest warns when it saves `cache/nodeids`
    // (the collecting process does that) and `cache/lastfailed` (shoal's controller does).
    let project = Project::new("one_failure");
    project.write("blocker", "");
    let cache = "cache_dir=blocker/cache";
    let serial = project.pytest(["-p", "no:xdist", "-o", cache]).run();
    serial.assert_code(1);
    assert_eq!(
        serial.stats().get("warnings"),
        Some(&2),
        "{}",
        serial.context()
    );
    let out = project.shoal(["-n", "2", "-o", cache]).run();
    out.assert_code(1);
    assert_eq!(
        out.stats(),
        serial.stats(),
        "final lines differ\n=== serial ===\n{}\n=== shoal ===\n{}",
        serial.context(),
        out.context()
    );
    assert!(warnings_summary(&out).is_some(), "{}", out.context());
    for key in ["cache/nodeids", "cache/lastfailed"] {
        assert_eq!(
            out.stdout
                .matches(&format!(
                    "could not create cache path {}",
                    project.path.join("blocker/cache/v").join(key).display()
                ))
                .count(),
            1,
            "one warning for {key}\n{}",
            out.context()
        );
    }
}

// ============================================================================================
// -r: the short test summary
// ============================================================================================

#[track_caller]
fn assert_same_short_summary(chars: &str) {
    let project = Project::new("reports_junit");
    let (serial, out) = project.serial_and_shoal(&[chars]);
    serial.assert_code(1);
    out.assert_code(1);
    let context = || {
        format!(
            "{chars}\n=== serial ===\n{}\n=== shoal ===\n{}",
            serial.context(),
            out.context()
        )
    };
    match (short_summary(&serial), short_summary(&out)) {
        (None, None) => {}
        (Some(expected), Some(actual)) => {
            assert_eq!(
                sorted(&actual),
                sorted(&expected),
                "short summary lines differ\n{}",
                context()
            );
            assert_eq!(
                summary_groups(&actual),
                summary_groups(&expected),
                "short summary sections in another order\n{}",
                context()
            );
        }
        (expected, actual) => panic!(
            "only one has a short summary: serial {:?}, shoal {:?}\n{}",
            expected.is_some(),
            actual.is_some(),
            context()
        ),
    }
    assert_eq!(out.stats(), serial.stats(), "{}", context());
}

#[test]
fn short_summary_ra_upper_matches_pytest() {
    assert_same_short_summary("-rA");
}

#[test]
fn short_summary_rfe_matches_pytest() {
    assert_same_short_summary("-rfE");
}

#[test]
fn short_summary_rs_matches_pytest() {
    assert_same_short_summary("-rs");
}

#[test]
fn short_summary_rxx_matches_pytest() {
    assert_same_short_summary("-rxX");
}

#[test]
fn short_summary_rn_shows_none_like_pytest() {
    assert_same_short_summary("-rN");
    let project = Project::new("reports_junit");
    let out = project
        .shoal(["-n", "2", "-p", "no:cacheprovider", "-rN"])
        .run();
    assert!(
        short_summary(&out).is_none(),
        "-rN printed a short summary\n{}",
        out.context()
    );
}

#[test]
fn short_summary_ra_lower_and_rp_match_pytest() {
    assert_same_short_summary("-ra");
    assert_same_short_summary("-rp");
}

/// `-rA` (and `-rP`) also print pytest's PASSES section: the captured output of passing tests.
#[test]
fn passes_section_with_ra_matches_pytest() {
    let project = Project::new("reports_junit");
    let (serial, out) = project.serial_and_shoal(&["-rA"]);
    for title in ["test_output_pass", "TestNested.test_nested_pass"] {
        let expected = section_block(&serial.stdout, title).unwrap_or_else(|| {
            panic!(
                "serial pytest has no PASSES entry {title}\n{}",
                serial.context()
            )
        });
        let actual = section_block(&out.stdout, title)
            .unwrap_or_else(|| panic!("no PASSES entry for {title}\n{}", out.context()));
        let actual = without_worker_line(&actual);
        assert_eq!(actual, expected, "{}", out.context());
    }
    assert!(
        out.stdout
            .lines()
            .any(|l| l.starts_with('=') && l.contains(" PASSES ")),
        "{}",
        out.context()
    );
}

// ============================================================================================
// pytest-xdist's words, where shoal prints an equivalent
// ============================================================================================

/// pytest-xdist on the same project: `python -m pytest -n 2 -p xdist`.
fn xdist(project: &Project, args: &[&str]) -> Output {
    let mut all = vec!["-n", "2", "-p", "xdist", "-p", "no:cacheprovider"];
    all.extend_from_slice(args);
    project.pytest(all).run()
}

/// The lines xdist prints while bringing its workers up and about crashed workers (`node
/// down` lines without the progress characters before them), in order,
/// with worker ids as `gw?` (which worker crashes first is a race) and shoal's ` (fork)`
/// cut from `created:` under `-v`.
fn xdist_lines(output: &Output) -> Vec<String> {
    const STARTS: [&str; 6] = [
        "created: ",
        "bringing up nodes...",
        "scheduling tests via ",
        "replacing crashed worker ",
        "maximum crashed workers reached: ",
        "worker gw",
    ];
    output
        .stdout
        .lines()
        .filter(|l| {
            STARTS.iter().any(|s| l.starts_with(s))
                || l.contains(" workers [")
                || l.contains("] node down: ")
        })
        // xdist prints `[gw0] node down: ...` after the progress characters of its line.
        .map(|l| {
            l.find("] node down: ")
                .map_or(l, |at| &l[l[..at].rfind('[').unwrap_or(0)..])
        })
        .map(|l| without_worker_ids(l.strip_suffix(" (fork)").unwrap_or(l)))
        .collect()
}

/// `gw0`, `gw12` -> `gw?`.
fn without_worker_ids(line: &str) -> String {
    let mut out = String::new();
    let mut rest = line;
    while let Some(at) = rest.find("gw") {
        out.push_str(&rest[..at + 2]);
        rest = rest[at + 2..].trim_start_matches(|c: char| c.is_ascii_digit());
        out.push('?');
    }
    out.push_str(rest);
    out
}

#[test]
fn startup_lines_are_xdists_at_every_verbosity() {
    let project = Project::new("xdist_words");
    for args in [
        &["test_words.py"][..],
        &["test_words.py", "-q"],
        &["test_words.py", "-v"],
    ] {
        let expected = xdist(&project, args);
        let out = project.shoal_n2(args).run();
        let lines = xdist_lines(&expected);
        assert!(
            !lines.is_empty(),
            "xdist printed none\n{}",
            expected.context()
        );
        assert_eq!(xdist_lines(&out), lines, "{args:?}\n{}", out.context());
    }
}

/// `-v` names xdist's scheduler class for each `--dist`.
#[test]
fn verbose_names_xdists_scheduler() {
    let project = Project::new("xdist_words");
    for dist in [
        "load",
        "loadscope",
        "loadfile",
        "loadgroup",
        "worksteal",
        "each",
    ] {
        let args = ["test_words.py::test_pass", "-v", "--dist", dist];
        let out = project.shoal_n2(&args).run();
        out.assert_code(0);
        let expected = xdist(&project, &args);
        let scheduling = |o: &Output| {
            o.stdout
                .lines()
                .find(|l| l.starts_with("scheduling tests via "))
                .map(str::to_owned)
        };
        assert!(scheduling(&expected).is_some(), "{}", expected.context());
        assert_eq!(scheduling(&out), scheduling(&expected), "{}", out.context());
    }
}

/// xdist's lines as crashed workers are replaced, and when the limit stops that. After the
/// limit xdist shuts down while shoal's live workers finish the run, so there the lines are
/// fixed text rather than xdist's (whose second worker may crash too, or not).
#[test]
fn crashed_worker_lines_are_xdists() {
    let project = Project::new("xdist_words");
    let summary = |o: &Output| {
        o.stdout
            .lines()
            .find(|l| l.starts_with('=') && l.contains(" xdist: "))
            .map(|l| without_worker_ids(l.trim_matches('=').trim()))
    };
    for args in [&["crash"][..], &["crash", "--max-worker-restart", "1"]] {
        let expected = xdist(&project, args);
        let out = project.shoal_n2(args).run();
        out.assert_code(1);
        let lines = xdist_lines(&expected);
        assert!(
            lines.iter().any(|l| l.contains("crash")),
            "xdist said nothing of the crash\n{}",
            expected.context()
        );
        assert_eq!(xdist_lines(&out), lines, "{args:?}\n{}", out.context());
        // xdist repeats the limit in the summary.
        assert_eq!(summary(&out), summary(&expected), "{}", out.context());
    }
    let out = project
        .shoal_n2(&["crash", "--max-worker-restart", "0"])
        .run();
    out.assert_code(1);
    let disabled = "worker gw? crashed and worker restarting disabled";
    let lines = xdist_lines(&out);
    let down = "[gw?] node down: Not properly terminated";
    // Whether the second worker reaches a crashing test too is the scheduler's race.
    assert_eq!(lines[2], down, "{}", out.context());
    let other: Vec<&String> = lines.iter().filter(|l| *l != down).collect();
    assert_eq!(
        other,
        ["created: 2/2 workers", "2 workers [10 items]", disabled],
        "{}",
        out.context()
    );
    assert_eq!(
        summary(&out),
        Some(format!("xdist: {disabled}")),
        "{}",
        out.context()
    );
}

#[test]
fn failure_sections_name_the_worker_like_xdist() {
    let project = Project::new("xdist_words");
    let expected = xdist(&project, &["test_words.py"]);
    let out = project.shoal_n2(&["test_words.py"]).run();
    out.assert_code(1);
    let block = |o: &Output| {
        section_block(&o.stdout, "test_fail")
            .map(|b| without_worker_ids(&b))
            .unwrap_or_else(|| panic!("no section for test_fail\n{}", o.context()))
    };
    let want = block(&expected);
    assert!(
        want.lines().nth(1).is_some_and(|l| l.starts_with("[gw?] ")),
        "{want}"
    );
    assert_eq!(block(&out), want, "{}", out.context());
}

/// Section titles of FAILURES and PASSES, in order.
fn section_titles(output: &Output) -> Vec<String> {
    output
        .stdout
        .lines()
        .filter(|l| l.starts_with("_ ") || l.starts_with("__"))
        .map(|l| l.trim_matches('_').trim().to_owned())
        .collect()
}

/// pytest's `subtests` fixture and unittest's `subTest`: each failing subtest has its own
/// section, titled with its label (as serial pytest does; xdist shows its keyword values as
/// strings after sending them between processes: `(i='1')`).
#[test]
fn subtest_sections_keep_their_labels_like_pytest() {
    let project = Project::new("xdist_words");
    let (serial, out) = project.serial_and_shoal(&["test_words.py"]);
    out.assert_code(1);
    let mut want = section_titles(&serial);
    assert!(
        want.iter().any(|t| t == "test_subtests [check] (i=1)"),
        "{}",
        serial.context()
    );
    let mut got = section_titles(&out);
    want.sort();
    got.sort();
    assert_eq!(got, want, "{}", out.context());
}

/// `-rA`: pytest prints the PASSES section after the warnings summary.
#[test]
fn passes_section_follows_the_warnings_summary_like_pytest() {
    let project = Project::new("xdist_words");
    let headers = |o: &Output| -> Vec<String> {
        o.stdout
            .lines()
            .filter(|l| l.starts_with("===") && parse_stats(l).is_none())
            .map(|l| l.trim_matches('=').trim().to_owned())
            .collect()
    };
    let (serial, out) = project.serial_and_shoal(&["-rA", "test_words.py"]);
    let want = headers(&serial);
    assert!(want.contains(&"PASSES".to_owned()), "{}", serial.context());
    assert_eq!(headers(&out)[1..], want[1..], "{}", out.context());
}

/// `-vv`: each test's node id on a line of its own as it starts, before its result line, as
/// pytest-xdist shows it.
#[test]
fn very_verbose_shows_each_node_id_before_its_result_like_xdist() {
    let project = Project::new("xdist_words");
    let starts = |o: &Output| -> Vec<String> {
        let lines: Vec<&str> = o.stdout.lines().collect();
        let mut starts: Vec<String> = Vec::new();
        for (at, line) in lines.iter().enumerate() {
            let Some((_, _, _, nodeid)) = verbose_line(line) else {
                continue;
            };
            let started = format!("{nodeid} ");
            let before = lines[..at].iter().position(|l| *l == started);
            assert!(before.is_some(), "{nodeid}: no start line\n{}", o.stdout);
            starts.push(nodeid);
        }
        starts.sort();
        starts.dedup();
        starts
    };
    let args = [
        "-vv",
        "test_words.py::test_pass",
        "test_words.py::test_param",
    ];
    let expected = xdist(&project, &args);
    let out = project.shoal_n2(&args).run();
    out.assert_code(0);
    let want = starts(&expected);
    assert_eq!(want.len(), 3, "{}", expected.context());
    assert_eq!(starts(&out), want, "{}", out.context());
}

/// A `KeyboardInterrupt` raised inside a test stops the run with exit status 2 and pytest's
/// lines: the `!!! KeyboardInterrupt !!!` separator, where it was raised, the hint.
#[test]
fn keyboard_interrupt_in_a_test_stops_the_run_like_pytest() {
    let project = Project::new("xdist_words");
    let after_separator = |o: &Output| -> Vec<String> {
        let lines: Vec<&str> = o.stdout.lines().collect();
        let at = lines
            .iter()
            .position(|l| {
                l.starts_with("!!!") && l.trim_matches('!').trim().starts_with("KeyboardInterrupt")
            })
            .unwrap_or_else(|| panic!("no KeyboardInterrupt line\n{}", o.context()));
        lines[at + 1..at + 3]
            .iter()
            .map(|l| l.to_string())
            .collect()
    };
    let serial = project.serial(&["interrupt"]).run();
    serial.assert_code(2);
    let want = after_separator(&serial);
    assert!(
        want[0].ends_with("test_interrupt.py:9: KeyboardInterrupt"),
        "{}",
        serial.context()
    );
    let out = project.shoal_n2(&["interrupt"]).run();
    out.assert_code(2);
    assert_eq!(after_separator(&out), want, "{}", out.context());
}

/// `-p no:terminal` prints nothing under pytest, and nothing under shoal; the exit code
/// still tells the outcome (pytest-xdist's `test_without_terminal_plugin`).
#[test]
fn no_terminal_plugin_prints_nothing() {
    for (fixture, code) in [("passing", 0), ("one_failure", 1)] {
        let project = Project::new(fixture);
        let out = project
            .shoal(["-p", "no:terminal", "-p", "no:cacheprovider", "-n", "2"])
            .run();
        out.assert_code(code);
        assert_eq!(
            (out.stdout.as_str(), out.stderr.as_str()),
            ("", ""),
            "{}",
            out.context()
        );
    }
}
