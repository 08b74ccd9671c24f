//! `shoal merge`: the shards' JUnit files into one run, with proof that it is whole.
//!
//! The merge reads each file's [`Manifest`], checks that the files come from one collection,
//! that every shard 1..N is there once, and that every test the partition assigned has exactly
//! one result; any mismatch is listed and the merge fails (exit 3) without writing anything.
//! Then the shards' results become one [`Results`], fed to the same reporters a local run
//! uses: pytest's summary on the terminal, one JUnit file, and (`--durations`) the durations
//! store and pytest-split's `.test_durations` for the next split.

use std::{
    collections::{BTreeMap, BTreeSet},
    fs, io,
    path::{Path, PathBuf},
    time::Duration,
};

use quick_xml::{events::Event, Reader};
use shoal_protocol::{JunitDelta, JunitSettings, PhaseReport, PytestSettings};

use super::manifest::{Manifest, ShardTest, PROPERTY, VERSION};
use crate::{
    durations::{self, DurationStore},
    options::FailureOutput,
    reporter::{Outputs, Reporters, RunEnd, Terminal},
    results::{passed_report, Results, TestRecord},
    ExitCode,
};

/// What `shoal merge` was asked to do.
#[derive(Debug, Clone)]
pub struct MergeOptions {
    pub files: Vec<PathBuf>,
    /// Where to write the whole run's JUnit file.
    pub junitxml: Option<PathBuf>,
    /// Update the durations store and `.test_durations` in the working directory.
    pub durations: bool,
}

/// Why the merge gave no result.
#[derive(Debug, thiserror::Error)]
pub enum MergeError {
    #[error("read the shard file {path}")]
    Read { path: PathBuf, source: io::Error },
    #[error("read the shard file {path}: {problem}")]
    Parse { path: PathBuf, problem: String },
    #[error("merge the shards: the files do not make one whole run:\n{0}")]
    Incomplete(String),
    #[error("write the results")]
    Junit(#[from] crate::reporter::junit::JunitError),
    #[error("write the durations")]
    Durations(#[from] durations::StoreError),
}

impl MergeError {
    /// A file that cannot be read is the user's mistake (4); files that do not make a whole
    /// run are a failed CI run (3), never a pass.
    pub fn exit_code(&self) -> ExitCode {
        match self {
            Self::Read { .. } => ExitCode::UsageError,
            _ => ExitCode::InternalError,
        }
    }
}

/// One `<testcase>` element as written, and what pytest counts it as.
#[derive(Debug, Clone)]
struct Testcase {
    xml: String,
    failure: bool,
    error: bool,
    skipped: bool,
}

/// One shard's file.
#[derive(Debug)]
struct ShardFile {
    path: PathBuf,
    manifest: Manifest,
    suites_name: Option<String>,
    suite_name: String,
    timestamp: String,
    time: f64,
    properties: Vec<(String, String)>,
    testcases: Vec<Testcase>,
}

/// Merges the shards' files as `options` say and returns pytest's exit code for the run.
pub fn merge(options: &MergeOptions) -> Result<ExitCode, MergeError> {
    let mut files = Vec::new();
    for path in &options.files {
        let text = fs::read_to_string(path).map_err(|source| MergeError::Read {
            path: path.clone(),
            source,
        })?;
        files.push(parse(path, &text).map_err(|problem| MergeError::Parse {
            path: path.clone(),
            problem,
        })?);
    }
    let problems = check(&files);
    if !problems.is_empty() {
        return Err(MergeError::Incomplete(problems.join("\n")));
    }
    files.sort_by_key(|f| f.manifest.shard);
    let (mut results, collected) = results(&files);
    let elapsed = Duration::from_secs_f64(files.iter().map(|f| f.time).sum::<f64>().max(0.0));
    let first = &files[0];
    println!(
        "shoal merge: {} tests from {} shards ({})",
        collected,
        files.len(),
        files
            .iter()
            .map(|f| f.path.display().to_string())
            .collect::<Vec<_>>()
            .join(", ")
    );
    let junit = options.junitxml.as_ref().map(|path| JunitSettings {
        path: path.display().to_string(),
        suite_name: first.suite_name.clone(),
        timestamp: files
            .iter()
            .map(|f| f.timestamp.clone())
            .min()
            .unwrap_or_default(),
        prefix: None,
        suites_name: first.suites_name.clone(),
    });
    let store = options.durations.then(|| {
        let cwd = Path::new(".");
        DurationStore::load(
            DurationStore::path_in(&cwd.join(".pytest_cache")),
            Some(cwd),
        )
    });
    let code = if collected == 0 {
        ExitCode::NoTestsCollected
    } else if results.any_failed() {
        ExitCode::TestsFailed
    } else {
        ExitCode::Ok
    };
    let terminal = Terminal::new(terminal_settings(), FailureOutput::End, false);
    let outputs = Outputs {
        junit,
        durations: store,
        ..Outputs::default()
    };
    let reporters = Reporters::new(terminal, outputs);
    let end = RunEnd {
        stop: None,
        plugin_summary: "",
        elapsed,
        code,
    };
    reporters.finish(&mut results, end)?;
    if options.durations {
        durations::write_pytest_split(Path::new(".test_durations"), &results)?;
    }
    Ok(code)
}

/// Reads one shard's JUnit file: its suite, its properties (the manifest among them) and its
/// `<testcase>` elements as written.
fn parse(path: &Path, text: &str) -> Result<ShardFile, String> {
    let mut reader = Reader::from_str(text);
    let mut file = ShardFile {
        path: path.to_path_buf(),
        manifest: Manifest {
            version: 0,
            shard: 0,
            shards: 0,
            fingerprint: String::new(),
            split: String::new(),
            collected: 0,
            assigned: Vec::new(),
            collect_errors: Vec::new(),
            collect_testcases: 0,
            tests: Vec::new(),
            session_errors: Vec::new(),
        },
        suites_name: None,
        suite_name: "pytest".into(),
        timestamp: String::new(),
        time: 0.0,
        properties: Vec::new(),
        testcases: Vec::new(),
    };
    let mut manifest = None;
    let mut suites = 0;
    loop {
        let start = reader.buffer_position() as usize;
        let event = reader.read_event().map_err(|e| e.to_string())?;
        let (element, empty) = match &event {
            Event::Start(e) => (e, false),
            Event::Empty(e) => (e, true),
            Event::Eof => break,
            _ => continue,
        };
        let attribute = |name: &str| -> Result<Option<String>, String> {
            for attr in element.attributes() {
                let attr = attr.map_err(|e| e.to_string())?;
                if attr.key.as_ref() == name.as_bytes() {
                    let value = attr.unescape_value().map_err(|e| e.to_string())?;
                    return Ok(Some(value.into_owned()));
                }
            }
            Ok(None)
        };
        match element.name().as_ref() {
            b"testsuites" => file.suites_name = attribute("name")?,
            b"testsuite" => {
                suites += 1;
                file.suite_name = attribute("name")?.unwrap_or_default();
                file.timestamp = attribute("timestamp")?.unwrap_or_default();
                file.time = attribute("time")?
                    .and_then(|t| t.parse().ok())
                    .unwrap_or(0.0);
            }
            b"property" if file.testcases.is_empty() => {
                let name = attribute("name")?.unwrap_or_default();
                let value = attribute("value")?.unwrap_or_default();
                if name == PROPERTY {
                    manifest = Some(value);
                } else {
                    file.properties.push((name, value));
                }
            }
            b"testcase" => {
                let mut case = Testcase {
                    xml: String::new(),
                    failure: false,
                    error: false,
                    skipped: false,
                };
                if !empty {
                    read_children(&mut reader, &mut case)?;
                }
                let end = reader.buffer_position() as usize;
                case.xml = text[start..end].trim_start().to_owned();
                file.testcases.push(case);
            }
            _ => {}
        }
    }
    if suites != 1 {
        return Err(format!("expected one <testsuite>, found {suites}"));
    }
    let manifest = manifest.ok_or_else(|| {
        format!(
            "it has no {PROPERTY:?} property: was it written by `shoal --shard K/N --junitxml`?"
        )
    })?;
    file.manifest = serde_json::from_str(&manifest)
        .map_err(|e| format!("its {PROPERTY:?} property is not a shard manifest: {e}"))?;
    if file.manifest.version != VERSION {
        return Err(format!(
            "its manifest has version {} (this shoal reads {VERSION})",
            file.manifest.version
        ));
    }
    let described: usize = file.manifest.tests.iter().map(|t| t.testcases).sum();
    if described + file.manifest.collect_testcases != file.testcases.len() {
        return Err(format!(
            "its manifest describes {} <testcase> elements, the file holds {}",
            described + file.manifest.collect_testcases,
            file.testcases.len()
        ));
    }
    Ok(file)
}

/// Reads a `<testcase>`'s children up to its end: failure, error and skipped say how pytest
/// counts it.
fn read_children(reader: &mut Reader<&[u8]>, case: &mut Testcase) -> Result<(), String> {
    let mut depth = 0;
    loop {
        let (child, opens) = match reader.read_event().map_err(|e| e.to_string())? {
            Event::Start(child) => (child, true),
            Event::Empty(child) => (child, false),
            Event::End(_) if depth == 0 => return Ok(()),
            Event::End(_) => {
                depth -= 1;
                continue;
            }
            Event::Eof => return Err("a <testcase> is not closed".into()),
            _ => continue,
        };
        if depth == 0 {
            match child.name().as_ref() {
                b"failure" => case.failure = true,
                b"error" => case.error = true,
                b"skipped" => case.skipped = true,
                _ => {}
            }
        }
        depth += usize::from(opens);
    }
}

/// How many of a list are shown before "and N more".
const LISTED: usize = 10;

fn listed<'a>(what: &str, items: impl IntoIterator<Item = &'a str>) -> Option<String> {
    let items: Vec<&str> = items.into_iter().collect();
    if items.is_empty() {
        return None;
    }
    let mut text = format!("  {what} ({}):", items.len());
    for item in items.iter().take(LISTED) {
        text.push_str(&format!("\n    {item}"));
    }
    if items.len() > LISTED {
        text.push_str(&format!("\n    ... and {} more", items.len() - LISTED));
    }
    Some(text)
}

/// Everything that keeps the files from being one whole run, one paragraph each.
fn check(files: &[ShardFile]) -> Vec<String> {
    let mut problems = Vec::new();
    let Some(first) = files.first() else {
        return vec!["  no shard files were given".into()];
    };
    let fingerprints: BTreeSet<(&str, usize, usize)> = files
        .iter()
        .map(|f| {
            let m = &f.manifest;
            (m.fingerprint.as_str(), m.shards, m.collected)
        })
        .collect();
    if fingerprints.len() > 1 {
        let lines: Vec<String> = files
            .iter()
            .map(|f| {
                let m = &f.manifest;
                format!(
                    "{}: shard {}/{} of collection {} ({} tests)",
                    f.path.display(),
                    m.shard,
                    m.shards,
                    &m.fingerprint[..m.fingerprint.len().min(12)],
                    m.collected
                )
            })
            .collect();
        problems.extend(listed(
            "the files come from different collections (different commits, options or -k/-m)",
            lines.iter().map(String::as_str),
        ));
        return problems;
    }
    let splits: BTreeSet<&str> = files.iter().map(|f| f.manifest.split.as_str()).collect();
    if splits.len() > 1 {
        let lines: Vec<String> = files
            .iter()
            .map(|f| {
                let split = &f.manifest.split;
                format!(
                    "{}: split {}",
                    f.path.display(),
                    &split[..split.len().min(12)]
                )
            })
            .collect();
        problems.extend(listed(
            "the shards split the collection differently: their durations histories differ \
             (give every shard the same .test_durations or cache)",
            lines.iter().map(String::as_str),
        ));
        return problems;
    }
    let shards = first.manifest.shards;
    let mut by_shard: BTreeMap<usize, Vec<String>> = BTreeMap::new();
    for f in files {
        by_shard
            .entry(f.manifest.shard)
            .or_default()
            .push(f.path.display().to_string());
    }
    let missing: Vec<String> = (1..=shards)
        .filter(|k| !by_shard.contains_key(k))
        .map(|k| format!("shard {k}/{shards} (no file: did it crash or was it cancelled?)"))
        .collect();
    problems.extend(listed("missing shards", missing.iter().map(String::as_str)));
    let twice: Vec<String> = by_shard
        .iter()
        .filter(|(_, paths)| paths.len() > 1)
        .map(|(k, paths)| format!("shard {k}/{shards}: {}", paths.join(", ")))
        .collect();
    problems.extend(listed(
        "shards given more than once",
        twice.iter().map(String::as_str),
    ));
    // Only the first file of each shard counts from here on.
    let unique: Vec<&ShardFile> = by_shard
        .keys()
        .filter_map(|k| files.iter().find(|f| f.manifest.shard == *k))
        .collect();
    let mut assigned_to: BTreeMap<&str, Vec<usize>> = BTreeMap::new();
    for f in &unique {
        for nodeid in &f.manifest.assigned {
            assigned_to
                .entry(nodeid)
                .or_default()
                .push(f.manifest.shard);
        }
    }
    let in_two: Vec<String> = assigned_to
        .iter()
        .filter(|(_, shards)| shards.len() > 1)
        .map(|(id, shards)| format!("{id} (shards {shards:?})"))
        .collect();
    problems.extend(listed(
        "tests assigned to more than one shard",
        in_two.iter().map(String::as_str),
    ));
    if missing.is_empty() && assigned_to.len() != first.manifest.collected {
        problems.push(format!(
            "  the shards were assigned {} distinct tests of a collection of {}",
            assigned_to.len(),
            first.manifest.collected
        ));
    }
    let (mut unreported, mut doubled, mut foreign) = (Vec::new(), Vec::new(), Vec::new());
    for f in &unique {
        let mut count: BTreeMap<&str, usize> = BTreeMap::new();
        for test in &f.manifest.tests {
            *count.entry(&test.nodeid).or_default() += 1;
        }
        let label = |id: &str| format!("{id} (shard {}/{shards})", f.manifest.shard);
        for id in &f.manifest.assigned {
            match count.remove(id.as_str()) {
                None => unreported.push(label(id)),
                Some(1) => {}
                Some(n) => doubled.push(format!("{} {n} times", label(id))),
            }
        }
        foreign.extend(count.keys().map(|id| label(id)));
    }
    problems.extend(listed(
        "tests without a result",
        unreported.iter().map(String::as_str),
    ));
    problems.extend(listed(
        "tests with more than one result",
        doubled.iter().map(String::as_str),
    ));
    problems.extend(listed(
        "results for tests the shard was not assigned",
        foreign.iter().map(String::as_str),
    ));
    problems
}

/// The shards' results as one run's, in shard order, and the size of the collection.
fn results(files: &[ShardFile]) -> (Results, usize) {
    let tests: usize = files.iter().map(|f| f.manifest.tests.len()).sum();
    let mut results = Results::new(tests, 1);
    let first = &files[0];
    let collect_cases = &first.testcases[..first.manifest.collect_testcases];
    results.add_collect_errors(
        first.manifest.collect_errors.clone(),
        Some(delta(collect_cases)).filter(|d| !d.testcases.is_empty()),
    );
    let mut properties: Vec<(String, String)> = Vec::new();
    let mut index = 0;
    for f in files {
        for property in &f.properties {
            if !properties.contains(property) {
                properties.push(property.clone());
            }
        }
        for error in &f.manifest.session_errors {
            results.add_session_error(format!("shard {}: {error}", f.manifest.shard));
        }
        let mut cases = f.testcases[f.manifest.collect_testcases..]
            .iter()
            .as_slice();
        for test in &f.manifest.tests {
            let (mine, rest) = cases.split_at(test.testcases);
            cases = rest;
            results.record(record(index, test, mine));
            index += 1;
        }
    }
    results.add_junit_properties(properties);
    (results, first.manifest.collected)
}

/// pytest's counters for `<testcase>` elements as it wrote them.
fn delta(cases: &[Testcase]) -> JunitDelta {
    let mut stats: BTreeMap<String, i64> = BTreeMap::new();
    let mut double_failures = 0;
    for case in cases {
        let mut count = |key: &str| *stats.entry(key.to_owned()).or_default() += 1;
        if case.failure {
            count("failure");
        }
        if case.error {
            count("error");
        }
        if case.skipped {
            count("skipped");
        }
        if !(case.failure || case.error || case.skipped) {
            count("passed");
        }
        if case.failure && case.error {
            double_failures += 1;
        }
    }
    JunitDelta {
        testcases: cases.iter().map(|c| c.xml.clone()).collect(),
        stats,
        double_failures,
    }
}

fn record(index: usize, test: &ShardTest, cases: &[Testcase]) -> TestRecord {
    let reports = if test.reports.is_empty() {
        vec![passed_report(test.duration)]
    } else {
        test.reports.clone()
    };
    let attempt = |reports: &Vec<PhaseReport>| TestRecord {
        index,
        nodeid: test.nodeid.clone(),
        worker: test.worker.clone(),
        headline: test.headline.clone(),
        reports: reports.clone(),
        warnings: Vec::new(),
        junit: None,
        earlier_attempts: Vec::new(),
        display: test.display.clone(),
        leaks: Vec::new(),
    };
    TestRecord {
        reports,
        junit: Some(delta(cases)),
        earlier_attempts: test.earlier.iter().map(attempt).collect(),
        ..attempt(&Vec::new())
    }
}

/// pytest's defaults for the summary: `-rfE`, `--tb=auto`, colour on a terminal.
fn terminal_settings() -> PytestSettings {
    let defaults = serde_json::from_value(serde_json::json!({
        "numprocesses": null, "dist": null, "maxprocesses": null, "verbose": 0,
        "reportchars": "fE", "maxfail": 0, "tbstyle": "auto", "color": false,
        "width": 80, "full_summary": false, "deselected": 0,
    }))
    .expect("the settings are complete");
    on_this_terminal(defaults)
}

/// `settings` for a summary printed here, from results that came from elsewhere: colour and
/// width are this terminal's.
pub(crate) fn on_this_terminal(mut settings: PytestSettings) -> PytestSettings {
    use std::io::IsTerminal;
    settings.color = std::io::stdout().is_terminal() && std::env::var_os("NO_COLOR").is_none();
    settings.width = std::env::var("COLUMNS")
        .ok()
        .and_then(|c| c.parse().ok())
        .unwrap_or(80);
    settings
}
