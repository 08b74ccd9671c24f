//! The messages, one enum per direction. `docs/protocol.md` explains when each is sent.

use serde::{Deserialize, Serialize};

/// What a Python process is to the controller.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// Configures pytest and collects once; forks the workers.
    Collector,
    /// Runs tests.
    Worker,
    /// A forked worker's stdout and stderr: after `hello`, raw bytes, not frames.
    Output,
}

/// Messages a Python process sends to the controller.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum FromPython {
    /// First frame on every connection.
    Hello {
        protocol: u32,
        role: Role,
        worker: Option<String>,
        pid: u32,
    },
    /// The collector's collection and the pytest settings the controller needs.
    Collected {
        items: Vec<CollectedItem>,
        /// Why forking is not safe here; `None` when it is.
        fork_unsafe: Option<String>,
        /// Where the suite's own code first asked which worker it runs in (`PYTEST_XDIST_*`,
        /// `config.workerinput`, xdist's helpers) while the collector imported, configured or
        /// collected it, e.g. `conftest.py:12 asks for config.workerinput`; `None` when it
        /// did not. A fork would hand every worker the collector's answer, so distributed
        /// runs spawn workers that ask for themselves.
        #[serde(default)]
        identity_read: Option<String>,
        /// The run's base temporary directory; workers use `<basetemp>/popen-<id>`.
        basetemp: Option<String>,
        settings: Box<PytestSettings>,
        /// Warnings raised while collecting.
        #[serde(default)]
        warnings: Vec<Warning>,
        /// Entries plugins need in every worker's `config.workerinput` (pytest-cov's).
        #[serde(default)]
        workerinput: serde_json::Map<String, serde_json::Value>,
        /// Collection errors pytest carried on past (`--continue-on-collection-errors`).
        #[serde(default)]
        collect_errors: Vec<CollectError>,
        /// What junitxml recorded while collecting (those errors' testcases).
        #[serde(default)]
        junit: Option<JunitDelta>,
        /// Whether a plugin or conftest in the collector reads reports
        /// (`pytest_runtest_logreport`, `pytest_sessionfinish`...), and which: workers send
        /// those for the collector to replay.
        #[serde(default)]
        replay: Option<ReplayScope>,
    },
    /// The finished collector's plugins' terminal summary sections (a coverage table, say).
    TerminalSummary {
        text: String,
        /// Warnings the collector raised after the collection (its cache, session teardown),
        /// for the controller's warnings summary and final line.
        #[serde(default)]
        warnings: Vec<Warning>,
    },
    /// The collector forked a worker.
    Forked { worker: String, pid: u32 },
    /// A forked worker ended (sent by the collector, its parent).
    WorkerExited {
        worker: String,
        pid: u32,
        #[serde(default)]
        code: Option<i32>,
        #[serde(default)]
        signal: Option<i32>,
    },
    /// A worker is ready for tests; spawned workers include the node ids they collected.
    Ready { collection: Option<Vec<String>> },
    /// A worker is starting a test (sent only when the identity asks for it: timeouts).
    TestStart { index: usize },
    /// Before the teardown of a worker's last test (which also tears down its session): the
    /// reports so far, so that a crash in session teardown does not lose them.
    TestPartial {
        index: usize,
        reports: Vec<PhaseReport>,
    },
    /// A worker finished one test: every phase report it produced.
    TestDone {
        index: usize,
        #[serde(default)]
        headline: Option<String>,
        /// Where the reports are pytest's usual setup, call and teardown, a phase that
        /// passed plainly travels as its duration alone (see [`PhaseReport::plain_pass`]).
        #[serde(deserialize_with = "phases::deserialize")]
        reports: Vec<PhaseReport>,
        #[serde(default)]
        warnings: Vec<Warning>,
        /// What pytest's junitxml made of the test, when `--junitxml` is on.
        #[serde(default)]
        junit: Option<JunitDelta>,
        /// `pytest.exit()` was raised in the test (or a fixture of it) and ended the worker's
        /// session; `reports` are those made before it.
        #[serde(default)]
        exit: Option<SessionExit>,
        /// With the identity's `replay`: the test's report hook calls, in order, for the
        /// collector to make again (see [`ToPython::Replay`]).
        #[serde(default)]
        replay: Option<Vec<serde_json::Value>>,
        /// The test took the worker to one of the identity's limits: it runs nothing more
        /// that it holds, ends its session and exits, to be replaced by a fresh process.
        #[serde(default)]
        recycle: Option<Recycle>,
        /// With the identity's `detect_leaks`: the state the test left behind.
        #[serde(default)]
        leaks: Vec<Leak>,
    },
    /// The tests a worker gave up in answer to `steal`, none of them started.
    Released { indices: Vec<usize> },
    /// A worker needs a run-once fixture's value.
    FixtureRequest { name: String },
    /// The worker told to run a run-once fixture's setup finished it: its JSON value.
    FixtureReady {
        name: String,
        value: serde_json::Value,
    },
    /// The run-once setup did not produce a value: it raised (`text` is the traceback), its
    /// value is not JSON, or it skipped or xfailed (`text` is the reason).
    FixtureFailed {
        name: String,
        text: String,
        #[serde(default)]
        kind: SetupFailure,
    },
    /// The owner of a run-once fixture reached its teardown and waits for `fixture_release`.
    FixtureDone { name: String },
    /// A worker's pytest hit an internal error (its `INTERNALERROR>` lines went to its
    /// stderr); the run stops and exits 3, as pytest and xdist do.
    InternalError,
    /// A worker's session finished; `workeroutput` is `config.workeroutput`.
    WorkerDone {
        #[serde(default)]
        workeroutput: serde_json::Value,
        /// `record_testsuite_property` calls: (name, value).
        #[serde(default)]
        junit_properties: Vec<(String, String)>,
        /// Warnings raised outside any test (session teardown).
        #[serde(default)]
        warnings: Vec<Warning>,
    },
}

/// Messages the controller sends to a Python process.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ToPython {
    /// To the collector: fork one worker with this identity.
    Fork { identity: WorkerIdentity },
    /// To the collector: every worker is done; finish the session and exit. `exitstatus` is
    /// the run's, which the collector's `pytest_sessionfinish` receives.
    Stop {
        #[serde(default)]
        exitstatus: Option<i32>,
    },
    /// To the collector: one finished test's report hook calls, as a worker made them
    /// (`test_done`'s `replay`), to make again where plugins expect them.
    Replay {
        worker: String,
        events: Vec<serde_json::Value>,
    },
    /// To the collector: a worker finished its session (`workeroutput` is its
    /// `config.workeroutput`) or crashed (`error` says how, and there is no workeroutput),
    /// for xdist's `pytest_testnodedown` on the controlling side.
    NodeDown {
        worker: String,
        workeroutput: Option<serde_json::Value>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        error: Option<String>,
    },
    /// To a worker: append these collection indices to its queue.
    Run { indices: Vec<usize> },
    /// To a worker: no more tests will come; with `discard`, drop those not started.
    Shutdown { discard: bool },
    /// To a worker: give back up to `count` tests from the end of its queue.
    Steal { count: usize },
    /// To a worker: you are the first to need this run-once fixture; run its setup.
    FixtureRun { name: String },
    /// To a worker: the run-once fixture's value, set up by another worker.
    FixtureValue {
        name: String,
        value: serde_json::Value,
    },
    /// To a worker: the run-once fixture's setup failed elsewhere; fail (or skip, or xfail)
    /// the same way, with this text.
    FixtureError {
        name: String,
        text: String,
        #[serde(default)]
        kind: SetupFailure,
    },
    /// To the fixture's owner: every other worker is done; run the teardown.
    FixtureRelease { name: String },
}

/// A `pytest.exit()` that ended a worker's session.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SessionExit {
    /// What pytest prints between `!!!` separators: `_pytest.outcomes.Exit: <msg>`.
    pub message: String,
    /// Its `returncode`; without one pytest exits 2 (interrupted).
    #[serde(default)]
    pub returncode: Option<i32>,
    /// It came in the teardown of the worker's last test, which also tears the worker's
    /// session down: like pytest's session teardown, after every test (the others go on).
    #[serde(default)]
    pub last_test: bool,
    /// For a `KeyboardInterrupt` a test raised: where (`path:line: KeyboardInterrupt`), which
    /// pytest prints under the separator.
    #[serde(default)]
    pub location: Option<String>,
}

/// How a run-once fixture's setup failed, so that every worker's tests end the same way.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SetupFailure {
    /// It raised, or its value cannot be shared: the tests using it error.
    #[default]
    Error,
    /// `pytest.skip` in its setup: the tests using it are skipped.
    Skip,
    /// `pytest.xfail` in its setup: the tests using it xfail.
    Xfail,
}

/// A file or module that failed to collect.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CollectError {
    pub nodeid: String,
    pub headline: String,
    /// Its report, `when` being `collect`.
    pub report: PhaseReport,
}

/// One collected test and the keys the schedulers group by.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CollectedItem {
    pub nodeid: String,
    /// The file part of the node id (`--dist loadfile`).
    pub file: String,
    /// The module, or the class for methods (`--dist loadscope`).
    pub scope: String,
    /// The `xdist_group` mark's name (`--dist loadgroup`).
    pub group: Option<String>,
    /// `@pytest.mark.timeout(seconds)`.
    #[serde(default)]
    pub timeout: Option<f64>,
    /// `@pytest.mark.flaky(reruns=N)`.
    #[serde(default)]
    pub reruns: Option<usize>,
    /// Marked serial: nothing else may run at the same time.
    #[serde(default)]
    pub serial: bool,
    /// `@pytest.mark.resource(name, limit=N)` marks: (name, limit).
    #[serde(default)]
    pub resources: Vec<(String, usize)>,
    /// The node id as pytest shows it to the user (relative to the invocation directory),
    /// when that differs from `nodeid`.
    #[serde(default)]
    pub display: Option<String>,
}

/// pytest's view of the options the controller acts on, after addopts and ini files.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PytestSettings {
    /// `-n` as written (`"4"`, `"auto"`, `"logical"`), from addopts when the CLI had none.
    pub numprocesses: Option<String>,
    pub dist: Option<String>,
    pub maxprocesses: Option<usize>,
    pub verbose: i32,
    /// The resolved `-r` characters.
    pub reportchars: String,
    /// `--maxfail` (`-x` is 1); 0 when unlimited.
    pub maxfail: usize,
    pub tbstyle: String,
    pub color: bool,
    pub width: usize,
    /// Whether the short summary shows whole messages (CI, `-vv`) instead of trimming them.
    pub full_summary: bool,
    pub deselected: usize,
    /// `--durations`: how many slowest phases to list (0: all).
    #[serde(default)]
    pub durations: Option<usize>,
    #[serde(default)]
    pub durations_min: Option<f64>,
    #[serde(default)]
    pub rootdir: Option<String>,
    /// The ini `timeout`, in seconds.
    #[serde(default)]
    pub timeout: Option<f64>,
    /// `--max-worker-restart` from addopts, as written.
    #[serde(default)]
    pub maxworkerrestart: Option<String>,
    /// pytest's cache directory; `None` with `-p no:cacheprovider`.
    #[serde(default)]
    pub cache_dir: Option<String>,
    /// Set when `--junitxml` was given.
    #[serde(default)]
    pub junit: Option<JunitSettings>,
    /// `--pdb`: the controller runs failing tests again under pdb, on its terminal.
    #[serde(default)]
    pub usepdb: bool,
    /// `--trace`: the controller runs the selection under pdb, on its terminal.
    #[serde(default)]
    pub trace: bool,
    /// pytest-instafail's `--instafail`: failures are shown as they happen.
    #[serde(default)]
    pub instafail: bool,
    /// Whether pytest's terminal plugin is on (`-p no:terminal` turns it off: nothing is
    /// printed).
    #[serde(default = "yes")]
    pub terminal: bool,
    /// What a plugin's `pytest_xdist_auto_num_workers` returned: the worker count of
    /// `-n auto` / `-n logical`.
    #[serde(default)]
    pub auto_num_workers: Option<usize>,
    /// `--loadscope-reorder` (the default) or `--no-loadscope-reorder`: whether loadscope,
    /// loadfile and loadgroup hand out the largest units first.
    #[serde(default = "default_true")]
    pub loadscope_reorder: bool,
    /// `--testrunuid`: the run's uid (`testrun_uid`, `PYTEST_XDIST_TESTRUNUID`).
    #[serde(default)]
    pub testrunuid: Option<String>,
    /// pytest-randomly's seed, when that plugin is active: `--shuffle` shuffles with it too.
    #[serde(default)]
    pub randomly_seed: Option<u64>,
    /// The versions of Python and pytest that run the tests (`3.12.1`, `8.3.2`), which the
    /// run's record keeps so that a replay elsewhere can tell what differs.
    #[serde(default)]
    pub python_version: Option<String>,
    #[serde(default)]
    pub pytest_version: Option<String>,
}

fn default_true() -> bool {
    true
}

/// What the run's JUnit file needs from pytest's configuration.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct JunitSettings {
    /// Absolute path of the file to write.
    pub path: String,
    pub suite_name: String,
    /// When the session started, ISO 8601 with the local offset, as pytest writes it.
    pub timestamp: String,
    /// `--junitprefix`, prepended to class names.
    #[serde(default)]
    pub prefix: Option<String>,
    /// The `<testsuites>` element's `name` (pytest writes one since 8.4).
    #[serde(default)]
    pub suites_name: Option<String>,
}

/// The `<testcase>` elements pytest's junitxml built for one test, and its counter changes.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct JunitDelta {
    pub testcases: Vec<String>,
    /// Increments of junitxml's counters: passed, failure, skipped, error.
    #[serde(default)]
    pub stats: std::collections::BTreeMap<String, i64>,
    #[serde(default)]
    pub double_failures: i64,
}

/// One warning, rendered as pytest's warnings summary shows it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Warning {
    pub message: String,
    /// The node id, or `path:line`, it was raised at.
    pub location: Option<String>,
}

/// Who a worker is: what `config.workerinput` and the `PYTEST_XDIST_*` variables say.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WorkerIdentity {
    pub workerid: String,
    pub workercount: usize,
    pub testrunuid: String,
    pub mainargv: Vec<String>,
    /// False for `-n 0`: the worker then looks like plain pytest (`worker_id == "master"`).
    pub distributed: bool,
    pub basetemp: Option<String>,
    /// Send `test_start` before each test (the controller enforces timeouts).
    #[serde(default)]
    pub report_starts: bool,
    /// Where to dump every thread's stack on SIGUSR1.
    #[serde(default)]
    pub stack_file: Option<String>,
    /// A 16-byte file the worker keeps mapped and updates as tests go: the collection index
    /// (u64, little-endian) and phase (u8: 0 between tests, 1 setup, 2 call, 3 teardown) it
    /// is in, so that after a crash the controller knows what was running, at no message cost.
    #[serde(default)]
    pub state_file: Option<String>,
    /// Which report hook calls to add to each `test_done` (the collector asked, in
    /// `collected`).
    #[serde(default)]
    pub replay: Option<ReplayScope>,
    /// Read the controller's messages on a thread, to answer `steal` while a test runs
    /// (worksteal: the running test may wait for what the thief's last test holds).
    #[serde(default)]
    pub steals: bool,
    /// More `config.workerinput` entries, from the collector's plugins.
    #[serde(default)]
    pub workerinput: serde_json::Map<String, serde_json::Value>,
    /// `--max-worker-tests`: end the session after this many tests, to be replaced.
    #[serde(default)]
    pub max_tests: Option<usize>,
    /// `--max-worker-rss`: end the session after a test that leaves the process's resident
    /// memory above this many bytes, to be replaced.
    #[serde(default)]
    pub max_rss: Option<u64>,
    /// The width of the controller's terminal (the collector's `settings.width`): a worker's
    /// stdout is a pipe, and pytest would render its reports (captured output separators,
    /// traceback separators) 80 columns wide, out of line with the controller's own.
    #[serde(default)]
    pub width: Option<usize>,
    /// `--detect-leaks`: compare what each test leaves behind with what was there before
    /// its setup, and send the differences with its `test_done`.
    #[serde(default)]
    pub detect_leaks: bool,
}

/// State a test left behind (`--detect-leaks`): a warning, never a failure.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Leak {
    pub kind: LeakKind,
    /// What was left, by name only (an environment variable's value may be a secret):
    /// `HOME changed`, `pid 4242 (sleep) still running`.
    pub detail: String,
}

/// What kind of state a test left behind.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LeakKind {
    /// An environment variable added, changed or removed.
    Env,
    /// The current directory changed.
    Cwd,
    /// A non-daemon thread the test started is still alive.
    Thread,
    /// A child process of the worker the test started is still alive.
    Process,
    /// A function or class of a project module was replaced (a monkeypatch left on).
    Module,
    /// More file descriptors are open than before the test.
    Fd,
}

impl LeakKind {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Env => "env",
            Self::Cwd => "cwd",
            Self::Thread => "thread",
            Self::Process => "process",
            Self::Module => "module",
            Self::Fd => "fd",
        }
    }
}

/// Why a worker ends its session after a test to be replaced (`test_done`'s `recycle`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "reason", rename_all = "snake_case")]
pub enum Recycle {
    /// It ran the identity's `max_tests`.
    Tests,
    /// The test left its resident memory at `rss` bytes, above the identity's `max_rss`.
    Rss { rss: u64 },
}

/// The phase of a test a report is about: pytest's `report.when`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum When {
    /// A collection error's report.
    Collect,
    Setup,
    Call,
    Teardown,
}

impl When {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Collect => "collect",
            Self::Setup => "setup",
            Self::Call => "call",
            Self::Teardown => "teardown",
        }
    }
}

/// pytest's `report.outcome`. Plugins may set their own (pytest-rerunfailures' `rerun`),
/// which travel as they are. What the terminal shows (xfailed, error, a plugin's category) is
/// [`PhaseReport::category`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(from = "String", into = "String")]
pub enum Outcome {
    Passed,
    Failed,
    Skipped,
    /// A plugin's own outcome.
    Other(String),
}

impl Outcome {
    pub fn as_str(&self) -> &str {
        match self {
            Self::Passed => "passed",
            Self::Failed => "failed",
            Self::Skipped => "skipped",
            Self::Other(outcome) => outcome,
        }
    }
}

impl From<String> for Outcome {
    fn from(outcome: String) -> Self {
        match outcome.as_str() {
            "passed" => Self::Passed,
            "failed" => Self::Failed,
            "skipped" => Self::Skipped,
            _ => Self::Other(outcome),
        }
    }
}

impl From<Outcome> for String {
    fn from(outcome: Outcome) -> Self {
        match outcome {
            Outcome::Other(outcome) => outcome,
            known => known.as_str().to_owned(),
        }
    }
}

/// One phase (setup, call or teardown) of one test, as pytest reported it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PhaseReport {
    pub when: When,
    pub outcome: Outcome,
    pub duration: f64,
    /// `pytest_report_teststatus`'s answer: the stats category ("" for a quiet phase).
    pub category: String,
    /// The progress letter (".", "F", "s", ...), empty for none.
    pub letter: String,
    /// The verbose word (PASSED, FAILED, ...).
    pub word: String,
    #[serde(default)]
    pub wasxfail: Option<String>,
    /// For failures: the section body pytest prints under FAILURES or ERRORS.
    #[serde(default)]
    pub text: Option<String>,
    /// For failures: the crash message the short summary shows.
    #[serde(default)]
    pub message: Option<String>,
    /// The report's own section title where it differs from its test's (a subtest's
    /// `test_sub [check] (i='1')`).
    #[serde(default)]
    pub headline: Option<String>,
    /// For skips: (path, line, reason), line `None` where pytest folds per file.
    #[serde(default)]
    pub skip: Option<(String, Option<u32>, String)>,
    /// Captured output and log sections: (title, text).
    #[serde(default)]
    pub sections: Vec<(String, String)>,
}

impl PhaseReport {
    /// A phase that passed with nothing to show, as pytest's own `pytest_report_teststatus`
    /// answers for it: quiet for setup and teardown, `passed` `.` `PASSED` for the call. Most
    /// phases of most runs are these, so `test_done` carries them as their duration alone.
    pub fn plain_pass(when: When, duration: f64) -> Self {
        let (category, letter, word) = match when {
            When::Call => ("passed", ".", "PASSED"),
            _ => ("", "", ""),
        };
        Self {
            when,
            outcome: Outcome::Passed,
            duration,
            category: category.into(),
            letter: letter.into(),
            word: word.into(),
            wasxfail: None,
            text: None,
            message: None,
            headline: None,
            skip: None,
            sections: Vec::new(),
        }
    }
}

/// Which of a worker's report hook calls go to the collector to be made again there, where
/// plugins read a run's results (`collected.replay`, the identity's `replay`; none when no
/// plugin reads them).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ReplayScope {
    /// A plugin reads reports: every test's hook calls.
    All,
    /// The only readers read just the reports they marked themselves (Hypothesis' summary
    /// reads those carrying its statistics or failing examples): those reports alone.
    Marked,
}

/// `test_done.reports`: each element a phase report, or a plain pass's duration (a number)
/// where the reports are exactly setup, call and teardown, which then says its phase.
mod phases {
    use serde::de::{self, value::MapAccessDeserializer, Deserializer, SeqAccess, Visitor};
    use serde::Deserialize;

    use super::{PhaseReport, When};

    const USUAL: [When; 3] = [When::Setup, When::Call, When::Teardown];

    /// One element, read without serde's buffering of untagged enums (the per-test path);
    /// it lives only until it is placed in the list.
    #[allow(clippy::large_enum_variant)]
    enum Phase {
        Report(PhaseReport),
        PlainPass(f64),
    }

    impl<'de> Deserialize<'de> for Phase {
        fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
            struct PhaseVisitor;
            impl<'de> Visitor<'de> for PhaseVisitor {
                type Value = Phase;
                fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                    f.write_str("a phase report or a plain pass's duration")
                }
                fn visit_f64<E: de::Error>(self, v: f64) -> Result<Phase, E> {
                    Ok(Phase::PlainPass(v))
                }
                fn visit_u64<E: de::Error>(self, v: u64) -> Result<Phase, E> {
                    Ok(Phase::PlainPass(v as f64))
                }
                fn visit_i64<E: de::Error>(self, v: i64) -> Result<Phase, E> {
                    Ok(Phase::PlainPass(v as f64))
                }
                fn visit_map<A: de::MapAccess<'de>>(self, map: A) -> Result<Phase, A::Error> {
                    PhaseReport::deserialize(MapAccessDeserializer::new(map)).map(Phase::Report)
                }
            }
            deserializer.deserialize_any(PhaseVisitor)
        }
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(
        deserializer: D,
    ) -> Result<Vec<PhaseReport>, D::Error> {
        struct ListVisitor;
        impl<'de> Visitor<'de> for ListVisitor {
            type Value = Vec<PhaseReport>;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a list of phase reports")
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
                let mut reports = Vec::with_capacity(USUAL.len());
                let mut plain = false;
                while let Some(phase) = seq.next_element::<Phase>()? {
                    let usual = USUAL.get(reports.len()).copied();
                    reports.push(match phase {
                        Phase::Report(report) => report,
                        Phase::PlainPass(duration) => {
                            plain = true;
                            // A fourth is refused below; its `when` does not matter.
                            PhaseReport::plain_pass(usual.unwrap_or(When::Call), duration)
                        }
                    });
                }
                if plain && reports.len() != USUAL.len() {
                    return Err(de::Error::custom(
                        "a plain pass's duration among other than three reports",
                    ));
                }
                if let Some((report, usual)) = reports
                    .iter()
                    .zip(USUAL)
                    .find(|(report, usual)| plain && report.when != *usual)
                {
                    return Err(de::Error::custom(format!(
                        "a {} report where the {} report belongs",
                        report.when.as_str(),
                        usual.as_str()
                    )));
                }
                Ok(reports)
            }
        }
        deserializer.deserialize_seq(ListVisitor)
    }
}

/// serde's default for flags that are on unless a peer says otherwise.
fn yes() -> bool {
    true
}
