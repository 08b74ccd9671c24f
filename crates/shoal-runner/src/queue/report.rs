//! `shoal report`: the whole build's results, read back from the queue into one run.
//!
//! It waits until every unit is acknowledged (or `--timeout` passes: then it lists what never
//! was, with the node that last held it, and writes nothing), then feeds the results to the
//! reporters a local run uses: pytest's summary, one JUnit file, pytest's `lastfailed` cache
//! in the working directory (so `--lf` works after a queue run) and, with `--durations`, the
//! durations store.

use std::{
    collections::HashMap,
    path::{Path, PathBuf},
    thread,
    time::{Duration, Instant},
};

use super::{
    server::{Server, ServerError, Snapshot},
    stored::{BuildInfo, StoredTest, VERSION},
    QueueArgs, QueueSpecError,
};
use crate::{
    durations::{self, DurationStore},
    options::FailureOutput,
    replay::bisect::shell_word,
    reporter::{Outputs, Reporters, RunEnd, Terminal},
    results::{Results, TestRecord},
    shard::merge::on_this_terminal,
    ExitCode,
};

/// How often the report looks whether the build is done.
const POLL: Duration = Duration::from_millis(250);

/// What `shoal report` was asked to do.
#[derive(Debug, Clone)]
pub struct ReportOptions {
    pub queue: QueueArgs,
    pub junitxml: Option<PathBuf>,
    /// How long to wait for the build to finish.
    pub timeout: Duration,
    /// Update the durations store in the working directory.
    pub durations: bool,
    /// `--save-records DIR`: write each node's run record there, for `shoal replay`.
    pub save_records: Option<PathBuf>,
}

/// Why the report gave no result.
#[derive(Debug, thiserror::Error)]
pub enum ReportError {
    #[error(transparent)]
    Spec(#[from] QueueSpecError),
    #[error("find the queue: give --queue URL or set SHOAL_QUEUE")]
    NoQueue,
    #[error(transparent)]
    Server(#[from] ServerError),
    #[error("report build {build}: no node started it within {seconds:.0}s (is the build id the nodes use?)")]
    NoBuild { build: String, seconds: f64 },
    #[error("report build {build}: its description is not one this shoal reads: {problem}")]
    Info { build: String, problem: String },
    #[error("report build {build}: not every test was run within {seconds:.0}s:\n{missing}")]
    Unfinished {
        build: String,
        seconds: f64,
        missing: String,
    },
    #[error("write the results")]
    Junit(#[from] crate::reporter::junit::JunitError),
    #[error("write the durations")]
    Durations(#[from] durations::StoreError),
    #[error("save node {node}'s record as {}", path.display())]
    SaveRecord {
        node: String,
        path: PathBuf,
        source: std::io::Error,
    },
}

impl ReportError {
    /// Options that name no queue are the user's mistake (4); a build that did not finish, or
    /// a queue that cannot be read, is a failed CI run (3), never a pass.
    pub fn exit_code(&self) -> ExitCode {
        match self {
            Self::Spec(_) | Self::NoQueue => ExitCode::UsageError,
            _ => ExitCode::InternalError,
        }
    }
}

/// Waits for the build and reports it as `options` say; returns pytest's exit code for it.
pub fn report(options: &ReportOptions) -> Result<ExitCode, ReportError> {
    let spec = options
        .queue
        .spec(|name| std::env::var(name).ok())?
        .ok_or(ReportError::NoQueue)?;
    let mut server = Server::connect(&spec)?;
    let build = spec.build.clone();
    let deadline = Instant::now() + options.timeout;
    let seconds = options.timeout.as_secs_f64();
    let info = loop {
        if let Some((_, info)) = server.info()? {
            break info;
        }
        if Instant::now() >= deadline {
            return Err(ReportError::NoBuild { build, seconds });
        }
        thread::sleep(POLL);
    };
    let info: BuildInfo = serde_json::from_str(&info).map_err(|e| ReportError::Info {
        build: build.clone(),
        problem: e.to_string(),
    })?;
    if info.version != VERSION {
        return Err(ReportError::Info {
            build,
            problem: format!("version {} (this shoal reads {VERSION})", info.version),
        });
    }
    while server.progress()? != (0, 0) && Instant::now() < deadline {
        thread::sleep(POLL);
    }
    let snapshot = server.snapshot()?;
    let (mut results, missing) = results(&info, &snapshot);
    if !missing.is_empty() {
        return Err(ReportError::Unfinished {
            build,
            seconds,
            missing: missing.join("\n"),
        });
    }
    let nodes: std::collections::BTreeSet<&str> = results
        .records()
        .iter()
        .filter_map(|r| r.worker.split_once('@').map(|(_, node)| node))
        .collect();
    println!(
        "shoal report: build {build}: {} tests from {} nodes ({}); {} units taken over from stalled nodes, {} late results set aside",
        info.items.len(),
        nodes.len(),
        nodes.into_iter().collect::<Vec<_>>().join(", "),
        snapshot.takeovers,
        snapshot.duplicates.len(),
    );
    let saved = match &options.save_records {
        Some(dir) => save_records(&mut server, dir, deadline)?,
        None => HashMap::new(),
    };
    let elapsed = match server.times()? {
        (Some(created), Some(acknowledged)) => {
            Duration::from_millis(acknowledged.saturating_sub(created))
        }
        _ => Duration::ZERO,
    };
    let junit = options.junitxml.as_ref().map(|path| {
        let mut settings =
            info.settings
                .junit
                .clone()
                .unwrap_or_else(|| shoal_protocol::JunitSettings {
                    path: String::new(),
                    suite_name: "pytest".into(),
                    timestamp: String::new(),
                    prefix: None,
                    suites_name: None,
                });
        settings.path = path.display().to_string();
        settings
    });
    let cwd = Path::new(".");
    let cache_dir = cwd.join(".pytest_cache");
    let store = options
        .durations
        .then(|| DurationStore::load(DurationStore::path_in(&cache_dir), Some(cwd)));
    let code = if info.items.is_empty() {
        ExitCode::NoTestsCollected
    } else if results.any_failed() {
        ExitCode::TestsFailed
    } else {
        ExitCode::Ok
    };
    // pytest's settings as on the node that started the build, but for this terminal and
    // this report's JUnit file.
    let mut settings = on_this_terminal(info.settings.clone());
    settings.junit = junit.clone();
    let terminal = Terminal::new(settings, FailureOutput::End, false);
    let outputs = Outputs {
        junit,
        cache_dir: Some(cache_dir),
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
    let failed = results.records().iter().find(|r| r.failed());
    if let Some((test, path)) = failed.and_then(|test| {
        let (_, node) = test.worker.split_once('@')?;
        Some((test, saved.get(node)?))
    }) {
        println!(
            "shoal report: replay {} as worker {} ran it: shoal replay --record {} --test {}",
            test.nodeid,
            test.worker,
            shell_word(&path.display().to_string()),
            shell_word(&test.nodeid)
        );
    }
    Ok(code)
}

/// Writes every node's record into `dir` as `<node>.json`, once each node alive has kept
/// its record (a node keeps it as its run ends) or `deadline` passes; prints what it wrote,
/// and the nodes still alive at the deadline without one (a killed node is not alive, and
/// leaves none). Returns each node's file.
fn save_records(
    server: &mut Server,
    dir: &Path,
    deadline: Instant,
) -> Result<HashMap<String, PathBuf>, ReportError> {
    let (records, pending) = loop {
        let (records, pending) = server.records()?;
        if pending.is_empty() || Instant::now() >= deadline {
            break (records, pending);
        }
        thread::sleep(POLL);
    };
    let mut saved = HashMap::new();
    let mut nodes: Vec<(String, String)> = records.into_iter().collect();
    nodes.sort();
    for (node, record) in nodes {
        // A node is `HOST-PID`; whatever else Redis holds names no file outside `dir`.
        let name: String = node
            .chars()
            .map(|c| match c {
                'a'..='z' | 'A'..='Z' | '0'..='9' | '-' | '_' | '.' => c,
                _ => '_',
            })
            .collect();
        let path = dir.join(format!("{name}.json"));
        let error = |source| ReportError::SaveRecord {
            node: node.clone(),
            path: path.clone(),
            source,
        };
        std::fs::create_dir_all(dir).map_err(error)?;
        std::fs::write(&path, record).map_err(error)?;
        println!(
            "shoal report: saved node {node}'s record: {}",
            path.display()
        );
        saved.insert(node, path);
    }
    for node in pending {
        println!("shoal report: node {node} kept no record before the timeout");
    }
    Ok(saved)
}

/// The build's results in acknowledgement order, with the attempts that were retried; and
/// what keeps them from being whole, one line each.
fn results(info: &BuildInfo, snapshot: &Snapshot) -> (Results, Vec<String>) {
    let mut results = Results::new(info.items.len(), 1);
    let mut earlier: HashMap<usize, Vec<TestRecord>> = HashMap::new();
    for attempt in &snapshot.attempts {
        if let Ok(stored) = serde_json::from_str::<StoredTest>(attempt) {
            earlier
                .entry(stored.index)
                .or_default()
                .push(stored.into_record());
        }
    }
    let mut missing = Vec::new();
    for index in &snapshot.order {
        let stored = snapshot
            .results
            .get(index)
            .and_then(|json| serde_json::from_str::<StoredTest>(json).ok())
            .filter(|stored| stored.index < info.items.len());
        let Some(stored) = stored else {
            missing.push(format!("  the result of test {index} cannot be read"));
            continue;
        };
        let mut record = stored.into_record();
        record.earlier_attempts = earlier.remove(&record.index).unwrap_or_default();
        results.record(record);
    }
    let unit_tests = |id: &str| -> String {
        let tests = snapshot.units.get(id).map_or("", String::as_str);
        let names: Vec<&str> = tests
            .split(',')
            .filter_map(|t| t.parse::<usize>().ok())
            .filter_map(|t| info.items.get(t).map(|(nodeid, _)| nodeid.as_str()))
            .collect();
        names.join(" ")
    };
    for (id, node) in &snapshot.running {
        missing.push(format!(
            "  {} (leased by node {node}, never acknowledged)",
            unit_tests(id)
        ));
    }
    for id in &snapshot.queued {
        missing.push(format!("  {} (never leased)", unit_tests(id)));
    }
    if missing.is_empty() && results.not_run() > 0 {
        missing.push(format!(
            "  {} tests have no result though every unit was acknowledged",
            results.not_run()
        ));
    }
    (results, missing)
}
