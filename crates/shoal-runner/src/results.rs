//! Every test's outcome as the workers reported it, and what the run's exit code follows from.

use shoal_protocol::{
    CollectError, JunitDelta, Leak, Outcome, PhaseReport, SessionExit, Warning, When,
};

use crate::replay::triage::{TriageReport, Verdict};

/// Why a run ended before every test ran.
#[derive(Debug, Clone)]
pub enum StopReason {
    MaxFail(usize),
    /// Every worker died and none could be started.
    NoWorkers,
    /// Ctrl-C or SIGTERM.
    Interrupted,
    /// `--run-timeout` passed.
    RunTimeout,
    /// A test called `pytest.exit()`.
    Exit(SessionExit),
    /// pytest hit an internal error in this worker.
    InternalError(String),
    /// The work source can no longer give work (a shared queue that cannot be reached).
    WorkLost(String),
}

impl StopReason {
    /// pytest reports an exit that asks for another code than 2 (interrupted) after the stats
    /// line, when it unconfigures; every other stop before it.
    pub(crate) fn after_stats(&self) -> bool {
        matches!(self, Self::Exit(exit) if exit.returncode.is_some_and(|c| c != 2))
    }
}

/// One test run on one worker.
#[derive(Debug, Clone)]
pub struct TestRecord {
    pub index: usize,
    pub nodeid: String,
    pub worker: String,
    /// pytest's failure headline (`TestClass.test_name`).
    pub headline: Option<String>,
    pub reports: Vec<PhaseReport>,
    pub warnings: Vec<Warning>,
    /// pytest's `<testcase>` for it; `None` when `--junitxml` is off or the test never reported.
    pub junit: Option<JunitDelta>,
    /// Earlier runs of the same test that failed and were retried (`--retries`).
    pub earlier_attempts: Vec<TestRecord>,
    /// How pytest shows the node id, when not as `nodeid` (relative to the invocation dir).
    pub display: Option<String>,
    /// What `--detect-leaks` found the test left behind.
    pub leaks: Vec<Leak>,
}

impl TestRecord {
    /// The node id as the terminal shows it.
    pub fn shown(&self) -> &str {
        self.display.as_deref().unwrap_or(&self.nodeid)
    }

    /// Whether pytest would count it failed: a failed phase that was not an expected failure.
    pub fn failed(&self) -> bool {
        self.reports
            .iter()
            .any(|r| r.outcome == Outcome::Failed && r.wasxfail.is_none())
    }

    /// Passed at once with nothing to show: no retries, no text, no captured output. Files
    /// that carry results elsewhere (a shard's manifest, a queue's results) keep only its
    /// duration.
    pub fn plain_pass(&self) -> bool {
        self.earlier_attempts.is_empty()
            && self.reports.iter().all(|r| {
                matches!(r.category.as_str(), "" | "passed")
                    && r.wasxfail.is_none()
                    && r.text.is_none()
                    && r.sections.is_empty()
            })
    }

    /// Seconds, setup to teardown.
    pub fn duration(&self) -> f64 {
        self.reports.iter().map(|r| r.duration).sum()
    }

    /// Failed at first, passed on a retry.
    pub fn flaky(&self) -> bool {
        !self.earlier_attempts.is_empty() && !self.failed()
    }

    /// The test's one final outcome: `error`, `failed`, `xpassed`, `xfailed`, `skipped` or
    /// `passed`, the first that any of its phases earned.
    pub fn outcome(&self) -> &'static str {
        const ORDER: [&str; 6] = ["error", "failed", "xpassed", "xfailed", "skipped", "passed"];
        ORDER
            .into_iter()
            .find(|o| self.reports.iter().any(|r| r.category == *o))
            .unwrap_or("passed")
    }
}

/// The run's results, in the order tests finished.
#[derive(Debug, Default)]
pub struct Results {
    records: Vec<TestRecord>,
    /// Per collection index: how many times it ran (more than once only under `--dist each`).
    runs: Vec<usize>,
    /// Per collection index: the runs expected, the worker count under `each`, else one (none
    /// for a test another CI shard runs).
    expected: Vec<usize>,
    /// Warnings raised outside tests: while collecting, in session teardown.
    session_warnings: Vec<Warning>,
    junit_properties: Vec<(String, String)>,
    /// Failures no test can be blamed for, such as a worker crashing in session teardown.
    session_errors: Vec<String>,
    /// Files that failed to collect, reported like tests (`--continue-on-collection-errors`).
    collect_errors: Vec<TestRecord>,
    /// What junitxml recorded for them.
    collect_junit: Option<JunitDelta>,
    /// `--triage`: why each failed test failed.
    triage: Option<TriageReport>,
}

impl Results {
    pub fn new(items: usize, runs_expected: usize) -> Self {
        Self {
            records: Vec::new(),
            runs: vec![0; items],
            expected: vec![runs_expected; items],
            session_warnings: Vec::new(),
            junit_properties: Vec::new(),
            session_errors: Vec::new(),
            collect_errors: Vec::new(),
            collect_junit: None,
            triage: None,
        }
    }

    /// Only the tests at `indices` are this run's to run (a CI shard's share).
    pub fn expect_only(&mut self, indices: &[usize]) {
        let runs = self.expected.iter().copied().max().unwrap_or(1);
        self.expected.fill(0);
        for &index in indices {
            self.expected[index] = runs;
        }
    }

    pub fn add_collect_errors(&mut self, errors: Vec<CollectError>, junit: Option<JunitDelta>) {
        self.collect_errors = errors
            .into_iter()
            .map(|e| TestRecord {
                index: usize::MAX, // not a collected test
                nodeid: e.nodeid,
                worker: String::new(),
                headline: Some(e.headline),
                reports: vec![e.report],
                warnings: Vec::new(),
                junit: None,
                earlier_attempts: Vec::new(),
                display: None,
                leaks: Vec::new(),
            })
            .collect();
        self.collect_junit = junit;
    }

    /// The files that failed to collect, as records of their own.
    pub fn collect_errors(&self) -> &[TestRecord] {
        &self.collect_errors
    }

    /// junitxml's record of the collection errors.
    pub fn collect_junit(&self) -> Option<&JunitDelta> {
        self.collect_junit.as_ref()
    }

    pub fn add_session_error(&mut self, message: String) {
        self.session_errors.push(message);
    }

    pub fn session_errors(&self) -> &[String] {
        &self.session_errors
    }

    pub fn add_session_warnings(&mut self, warnings: Vec<Warning>) {
        self.session_warnings.extend(warnings);
    }

    pub fn add_junit_properties(&mut self, properties: Vec<(String, String)>) {
        self.junit_properties.extend(properties);
    }

    pub fn junit_properties(&self) -> impl Iterator<Item = (&String, &String)> {
        self.junit_properties.iter().map(|(n, v)| (n, v))
    }

    /// Every warning, those raised in tests first, in the order they arrived.
    pub fn warnings(&self) -> impl Iterator<Item = &Warning> {
        self.records
            .iter()
            .flat_map(|r| r.warnings.iter())
            .chain(self.session_warnings.iter())
    }

    pub fn set_triage(&mut self, report: TriageReport) {
        self.triage = Some(report);
    }

    pub fn triage(&self) -> Option<&TriageReport> {
        self.triage.as_ref()
    }

    /// The triage verdict on the test at `index`, if it has one.
    pub fn verdict_of(&self, index: usize) -> Option<Verdict> {
        let report = self.triage.as_ref()?;
        let found = report.verdicts.iter().find(|v| v.index == index)?;
        Some(found.verdict)
    }

    pub fn record(&mut self, record: TestRecord) {
        self.runs[record.index] += 1;
        self.records.push(record);
    }

    pub fn records(&self) -> &[TestRecord] {
        &self.records
    }

    /// How many test runs were completed.
    pub fn done(&self) -> usize {
        self.records.len()
    }

    /// How many test runs were expected and never happened.
    pub fn not_run(&self) -> usize {
        self.runs
            .iter()
            .zip(&self.expected)
            .map(|(&ran, &expected)| expected.saturating_sub(ran))
            .sum()
    }

    /// Whether pytest would count a failure: a failed phase that is not an expected failure.
    pub fn any_failed(&self) -> bool {
        self.records.iter().any(TestRecord::failed)
            || !self.session_errors.is_empty()
            || !self.collect_errors.is_empty()
    }

    /// Every phase report with its test, collection errors first, then in finishing order.
    pub fn reports(&self) -> impl Iterator<Item = (&TestRecord, &PhaseReport)> {
        self.collect_errors
            .iter()
            .chain(&self.records)
            .flat_map(|rec| rec.reports.iter().map(move |r| (rec, r)))
    }

    /// Phase reports of one stats category (`failed`, `error`, `skipped`, ...).
    pub fn category<'a>(
        &'a self,
        category: &'a str,
    ) -> impl Iterator<Item = (&'a TestRecord, &'a PhaseReport)> + 'a {
        self.reports().filter(move |(_, r)| r.category == category)
    }
}

/// The call report of a test that passed in `duration` seconds, as pytest's terminal counts
/// it (a shard's manifest leaves these out).
pub fn passed_report(duration: f64) -> PhaseReport {
    PhaseReport::plain_pass(When::Call, duration)
}

/// The report standing in for a test whose worker died under it in phase `when`: a failure
/// in the call, an error in setup or teardown, as pytest counts them.
pub fn crash_report(message: String, when: When) -> PhaseReport {
    let (category, letter, word) = match when {
        When::Setup | When::Teardown => ("error", "E", "ERROR"),
        _ => ("failed", "F", "FAILED"),
    };
    PhaseReport {
        when,
        outcome: Outcome::Failed,
        duration: 0.0,
        category: category.into(),
        letter: letter.into(),
        word: word.into(),
        wasxfail: None,
        text: Some(format!("{message}\n")),
        message: Some(message),
        headline: None,
        skip: None,
        sections: Vec::new(),
    }
}
