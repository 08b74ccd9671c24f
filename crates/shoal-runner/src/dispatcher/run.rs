//! The run's decisions about tests, apart from any process: what a finished test means
//! (recorded, retried, `--maxfail` reached, `pytest.exit()`), what a lost worker means (a
//! crash or timeout blamed on the test it ran, tests to run elsewhere, a clean end), and the
//! exit code. The dispatcher feeds it what workers said and what the pool saw; the unit tests
//! below feed it the same by hand, with a fake work source.

use std::{
    collections::HashMap,
    time::{Duration, Instant},
};

use shoal_protocol::{
    CollectedItem, Leak, Outcome, PhaseReport, PytestSettings, SessionExit, Warning,
};

use super::{
    estimate::Estimate,
    pool::{KillReason, Phase, Position, WorkerEnd, WorkerLost},
    run_once::RunOnceFixtures,
};
use crate::{
    reporter::ReporterEvent,
    results::{crash_report, Results, StopReason, TestRecord},
    work::{Command, WorkSource},
    ExitCode,
};

/// Where the run's decisions go out: to the reporters, and to the collector's plugins.
pub(super) trait Outlet {
    fn report(&mut self, event: ReporterEvent<'_>);

    /// Hands the report hook calls of a test's recorded attempt to the collector, whose
    /// plugins read results as they do under xdist's controller.
    fn replay(&mut self, worker: &str, events: Vec<serde_json::Value>);
}

/// A test's `test_done`, as the worker sent it.
pub(super) struct TestDone {
    pub(super) index: usize,
    pub(super) headline: Option<String>,
    pub(super) reports: Vec<PhaseReport>,
    pub(super) warnings: Vec<Warning>,
    pub(super) junit: Option<shoal_protocol::JunitDelta>,
    pub(super) exit: Option<SessionExit>,
    pub(super) replay: Option<Vec<serde_json::Value>>,
    pub(super) leaks: Vec<Leak>,
}

/// The state of the test-running stage.
pub(super) struct Run {
    pub(super) items: Vec<CollectedItem>,
    pub(super) settings: Box<PytestSettings>,
    /// Which test each worker runs next.
    pub(super) work: Box<dyn WorkSource>,
    pub(super) results: Results,
    pub(super) estimate: Estimate,
    /// `--retries`, for tests without a `flaky` mark.
    pub(super) retries: usize,
    /// `--timeout`, over the ini's.
    pub(super) timeout: Option<f64>,
    /// Failed phases so far, for `--maxfail`.
    pub(super) failures: usize,
    pub(super) stop: Option<StopReason>,
    /// Per test: the attempts that failed and will be retried or reported with the last one.
    pub(super) failed_attempts: HashMap<usize, Vec<TestRecord>>,
    pub(super) run_deadline: Option<Instant>,
    /// Since when shoal is suspended (Ctrl-Z): deadlines move by the time spent stopped.
    pub(super) paused_since: Option<Instant>,
    pub(super) interrupts: usize,
    pub(super) run_once: RunOnceFixtures,
    /// The first `pytest.exit()` a worker reported: the run ends with its line and code.
    pub(super) exit: Option<SessionExit>,
}

impl Run {
    /// The test's timeout: its mark, else `--timeout`, else the ini `timeout`.
    pub(super) fn timeout_of(&self, index: usize) -> Option<Duration> {
        self.items[index]
            .timeout
            .or(self.timeout)
            .or(self.settings.timeout)
            .filter(|t| *t > 0.0)
            .and_then(|t| Duration::try_from_secs_f64(t).ok())
    }

    /// The state in which `--triage`'s rounds (`work`) run once this run's tests are done:
    /// results of their own, which the run's report never sees, no retries and no
    /// `--maxfail` (a round is about one test's outcome); the run's deadline still holds.
    pub(super) fn for_triage(&self, work: Box<dyn WorkSource>) -> Run {
        let mut settings = self.settings.clone();
        settings.maxfail = 0;
        let mut results = Results::new(self.items.len(), 1);
        results.expect_only(&[]);
        Run {
            items: self.items.clone(),
            settings,
            work,
            results,
            estimate: self.estimate.clone(),
            retries: 0,
            timeout: self.timeout,
            failures: 0,
            stop: None,
            failed_attempts: HashMap::new(),
            run_deadline: self.run_deadline,
            paused_since: None,
            interrupts: 0,
            run_once: RunOnceFixtures::default(),
            exit: None,
        }
    }

    /// Worker `w` (`worker`) finished a test.
    pub(super) fn test_done(
        &mut self,
        w: usize,
        worker: &str,
        done: TestDone,
        out: &mut dyn Outlet,
    ) -> Vec<Command> {
        let index = done.index;
        let record = TestRecord {
            index,
            nodeid: self.items[index].nodeid.clone(),
            worker: worker.to_owned(),
            headline: done.headline,
            reports: done.reports,
            warnings: done.warnings,
            junit: done.junit,
            earlier_attempts: Vec::new(),
            display: self.items[index].display.clone(),
            leaks: done.leaks,
        };
        let mut commands = self.work.test_done(w, index);
        if let Some(exit) = done.exit {
            commands.extend(self.session_exit(exit));
            if record.reports.iter().all(|r| r.category.is_empty()) {
                // Stopped before any outcome pytest counts (in its setup or call): it did not
                // run, and is counted so.
                return commands;
            }
        }
        commands.extend(self.finish_test(record, done.replay, w, out));
        commands
    }

    /// Records a finished test, unless it failed and has retries left: then it runs again.
    /// Only the recorded attempt's report hook calls (`replay`) go to the collector, so its
    /// plugins count each test once, as the terminal does.
    fn finish_test(
        &mut self,
        mut record: TestRecord,
        replay: Option<Vec<serde_json::Value>>,
        w: usize,
        out: &mut dyn Outlet,
    ) -> Vec<Command> {
        let index = record.index;
        let failed = record.failed();
        let here = self.failed_attempts.get(&index).map_or(0, Vec::len);
        let previous = here.max(self.work.attempts_before(index));
        let retries = self.items[index].reruns.unwrap_or(self.retries);
        if failed && previous < retries && self.stop.is_none() {
            if let Some(commands) = self.work.retry(&record, w) {
                out.report(ReporterEvent::TestRetrying(&record));
                self.failed_attempts.entry(index).or_default().push(record);
                return commands;
            }
        }
        record.earlier_attempts = self.failed_attempts.remove(&index).unwrap_or_default();
        if let Some(events) = replay {
            out.replay(&record.worker, events);
        }
        if failed {
            self.failures += record
                .reports
                .iter()
                .filter(|r| r.outcome == Outcome::Failed && r.wasxfail.is_none())
                .count();
        }
        out.report(ReporterEvent::TestFinished(&record));
        self.work.finished(&record);
        self.estimate.done(index);
        self.results.record(record);
        let maxfail = self.settings.maxfail;
        if maxfail > 0 && self.failures >= maxfail && self.stop.is_none() {
            self.stop = Some(StopReason::MaxFail(maxfail));
            return self.work.stop();
        }
        Vec::new()
    }

    /// A worker's `pytest.exit()` stops the run as pytest's stops, at once; one from the
    /// worker's session teardown (its last test's teardown) comes, as in pytest, after every
    /// test, so the other workers finish theirs.
    fn session_exit(&mut self, exit: SessionExit) -> Vec<Command> {
        let last_test = exit.last_test;
        self.exit.get_or_insert(exit.clone());
        if last_test || self.stop.is_some() {
            return Vec::new();
        }
        self.stop = Some(StopReason::Exit(exit));
        self.work.stop()
    }

    /// A worker is gone: the test it was running fails (crash or timeout) and the rest of what
    /// it held goes back to the work source.
    pub(super) fn worker_lost(&mut self, lost: WorkerLost, out: &mut dyn Outlet) -> Vec<Command> {
        let WorkerLost {
            slot: w,
            worker: id,
            end,
            session_done,
            tests: mut held,
            ..
        } = lost;
        // pytest's own ways for a session to end; anything else after it is worth a word.
        let pytest_end = matches!(end, WorkerEnd::Code(0 | 1 | 2 | 5))
            || self
                .exit
                .as_ref()
                .is_some_and(|exit| end == exit_status(exit));
        if held.is_empty() {
            if !session_done && self.stop.is_none() {
                // Between tests or in session teardown: no test to blame, but not silent.
                self.results.add_session_error(format!(
                    "worker '{id}' crashed outside any test ({})",
                    end.describe()
                ));
            } else if session_done && !pytest_end && lost.kill.is_none() && self.stop.is_none() {
                // Its session, teardown included, was over (`worker_done`) and every report
                // had arrived: nothing was lost, so the run's outcome stands.
                out.report(ReporterEvent::Notice(&format!(
                    "shoal: note: worker '{id}' ended after its session finished ({}); nothing was lost",
                    end.describe()
                )));
            }
            // The others may now take the share this worker would have had.
            return self.work.requeue(w, Vec::new());
        }
        if session_done && lost.recycled {
            // It ended its session to be replaced before starting these: its successor, or
            // another worker, runs them.
            return self.work.requeue(w, held);
        }
        if session_done || matches!(self.stop, Some(StopReason::Interrupted)) {
            // Its session ended normally, or the user interrupted the run: what it did not
            // run was discarded, not crashed on. The others may now take a larger share.
            return self.work.requeue(w, Vec::new());
        }
        // A test that started is never run again (but for --retries): the crash is blamed on
        // the test it started last and had not reported. Without a state file to tell, that
        // is the first one it held.
        let started = match lost.position {
            Position::Unknown => Some((0, Phase::Call)),
            Position::BetweenTests => None,
            // Not among the held: that test's report arrived.
            Position::InTest { index, phase } => {
                held.iter().position(|&i| i == index).map(|at| (at, phase))
            }
        };
        let Some((at, phase)) = started else {
            // Between two tests: nothing to blame; none of what it held had started, so it
            // all runs elsewhere.
            if lost.kill.is_none() {
                self.results.add_session_error(format!(
                    "worker '{id}' crashed between tests ({})",
                    end.describe()
                ));
            }
            return self.work.requeue(w, held);
        };
        let running = held.remove(at);
        let nodeid = self.items[running].nodeid.clone();
        let message = match lost.kill {
            Some(KillReason::Timeout { seconds, .. }) => format!(
                "Timeout: '{nodeid}' ran longer than {seconds}s; worker '{id}' was stopped ({})",
                end.describe()
            ),
            Some(KillReason::RunOver) => format!(
                "Timeout: the run exceeded --run-timeout while '{nodeid}' ran on worker '{id}'"
            ),
            None => format!(
                "worker '{id}' crashed while running '{nodeid}' ({}, {})",
                end.describe(),
                phase.describe()
            ),
        };
        // The collector's reporting plugins hear of it as xdist's controller tells them.
        let replay = lost.replay.then(|| {
            vec![serde_json::json!({"hook": "crash", "nodeid": nodeid, "message": message})]
        });
        let mut report = crash_report(message, phase.when());
        if !lost.output.is_empty() {
            // What the worker wrote outside pytest's capture since its last test, a fatal
            // error's stack among it.
            let text = report.text.get_or_insert_with(String::new);
            text.push_str(&format!(
                "\n----- output of worker '{id}' before it ended -----\n"
            ));
            text.push_str(&lost.output);
        }
        if let Some(stack) = &lost.stack {
            let text = report.text.get_or_insert_with(String::new);
            text.push_str("\nStacks of every thread when the timeout fired:\n");
            text.push_str(stack);
        }
        // A crash in the last test's teardown keeps what the test had reported before it.
        let mut reports = match lost.partial {
            Some((index, earlier)) if index == running && phase == Phase::Teardown => earlier,
            _ => Vec::new(),
        };
        reports.push(report);
        let record = TestRecord {
            index: running,
            headline: Some(nodeid.rsplit("::").next().unwrap_or("").to_owned()),
            nodeid,
            worker: id,
            reports,
            warnings: Vec::new(),
            junit: None,
            earlier_attempts: Vec::new(),
            display: self.items[running].display.clone(),
            leaks: Vec::new(),
        };
        let mut commands = self.work.requeue(w, held);
        commands.extend(self.finish_test(record, replay, w, out));
        commands
    }

    /// How the run ends as its workers and the controller saw it, before the collector
    /// finishes the session (which it is told, and which may still fail the run: see
    /// `Dispatcher::finish`).
    pub(super) fn status(&self) -> ExitCode {
        match &self.stop {
            Some(StopReason::Interrupted) => ExitCode::Interrupted,
            Some(StopReason::InternalError(_) | StopReason::WorkLost(_)) => ExitCode::InternalError,
            Some(StopReason::Exit(exit)) => {
                ExitCode::from_pytest(exit.returncode.unwrap_or(PYTEST_EXIT_DEFAULT))
            }
            // A queue node that gave its work back for want of workers ran less than its
            // share: never a pass, though none of its own tests is missing.
            Some(StopReason::RunTimeout | StopReason::NoWorkers) => ExitCode::TestsFailed,
            _ if self.results.any_failed() || self.results.not_run() > 0 => ExitCode::TestsFailed,
            _ => ExitCode::Ok,
        }
    }
}

/// pytest's exit status after `pytest.exit()` without a `returncode`: interrupted.
const PYTEST_EXIT_DEFAULT: i32 = 2;

/// How a worker process ends after that `pytest.exit()` (a code of eight bits).
fn exit_status(exit: &SessionExit) -> WorkerEnd {
    WorkerEnd::Code(
        ExitCode::from_pytest(exit.returncode.unwrap_or(PYTEST_EXIT_DEFAULT))
            .code()
            .into(),
    )
}

#[cfg(test)]
mod tests {
    use std::{cell::RefCell, rc::Rc};

    use shoal_protocol::When;

    use super::*;
    use crate::work::Command;

    /// What the run told its work source, in order.
    type Calls = Rc<RefCell<Vec<String>>>;

    /// A work source that records every call and hands out nothing but the shutdowns of
    /// `stop`, so a test sees exactly what the run decided to ask of it.
    struct FakeWork(Calls);

    impl FakeWork {
        fn log(&self, call: String) -> Vec<Command> {
            self.0.borrow_mut().push(call);
            Vec::new()
        }
    }

    impl WorkSource for FakeWork {
        fn worker_ready(&mut self, worker: usize) -> Vec<Command> {
            self.log(format!("ready {worker}"))
        }
        fn test_done(&mut self, worker: usize, index: usize) -> Vec<Command> {
            self.log(format!("done {worker} {index}"))
        }
        fn released(&mut self, victim: usize, indices: Vec<usize>) -> Vec<Command> {
            self.log(format!("released {victim} {indices:?}"))
        }
        fn retry(&mut self, failed: &TestRecord, failed_on: usize) -> Option<Vec<Command>> {
            Some(self.log(format!("retry {} not on {failed_on}", failed.index)))
        }
        fn worker_lost(&mut self, worker: usize) -> Vec<usize> {
            self.log(format!("lost {worker}"));
            Vec::new()
        }
        fn requeue(&mut self, worker: usize, tests: Vec<usize>) -> Vec<Command> {
            self.log(format!("requeue {worker} {tests:?}"))
        }
        fn needs_worker(&self) -> Option<usize> {
            None
        }
        fn revive(&mut self, worker: usize) {
            self.log(format!("revive {worker}"));
        }
        fn retire(&mut self, worker: usize) {
            self.log(format!("retire {worker}"));
        }
        fn stop(&mut self) -> Vec<Command> {
            self.log("stop".into());
            vec![Command::Shutdown {
                worker: 0,
                discard: true,
            }]
        }
        fn holds(&self, _: usize, _: usize) -> bool {
            false
        }
        fn running(&self, _: usize) -> Option<usize> {
            None
        }
        fn is_ready(&self, _: usize) -> bool {
            true
        }
        fn steal_pending(&self, _: usize) -> bool {
            false
        }
    }

    /// What went out to the reporters and the collector, one line each.
    #[derive(Default)]
    struct FakeOutlet(Vec<String>);

    impl Outlet for FakeOutlet {
        fn report(&mut self, event: ReporterEvent<'_>) {
            self.0.push(match event {
                ReporterEvent::TestRetrying(record) => format!("retrying {}", record.nodeid),
                ReporterEvent::TestFinished(record) => format!("finished {}", record.nodeid),
                ReporterEvent::Notice(text) => format!("notice {text}"),
                _ => "another event".into(),
            });
        }
        fn replay(&mut self, worker: &str, events: Vec<serde_json::Value>) {
            self.0
                .push(format!("replay {worker} {}", serde_json::json!(events)));
        }
    }

    /// A run over `tests` tests (`t.py::test_0`...) on fake work, with `--maxfail` and
    /// `--retries` as given.
    fn run(tests: usize, maxfail: usize, retries: usize) -> (Run, Calls) {
        let items: Vec<CollectedItem> = (0..tests)
            .map(|i| {
                serde_json::from_value(serde_json::json!({
                    "nodeid": format!("t.py::test_{i}"), "file": "t.py", "scope": "t.py",
                    "group": null,
                }))
                .unwrap()
            })
            .collect();
        let settings = serde_json::from_value(serde_json::json!({
            "numprocesses": null, "dist": null, "maxprocesses": null, "verbose": 0,
            "reportchars": "", "maxfail": maxfail, "tbstyle": "auto", "color": false,
            "width": 80, "full_summary": false, "deselected": 0,
        }))
        .unwrap();
        let calls = Calls::default();
        let run = Run {
            estimate: Estimate::new(&crate::durations::Expected::new(None, &items), 1),
            results: Results::new(items.len(), 1),
            items,
            settings: Box::new(settings),
            work: Box::new(FakeWork(calls.clone())),
            retries,
            timeout: None,
            failures: 0,
            stop: None,
            failed_attempts: HashMap::new(),
            run_deadline: None,
            paused_since: None,
            interrupts: 0,
            run_once: RunOnceFixtures::default(),
            exit: None,
        };
        (run, calls)
    }

    fn lost(tests: Vec<usize>, position: Position, end: WorkerEnd) -> WorkerLost {
        WorkerLost {
            slot: 0,
            worker: "gw0".into(),
            end,
            session_done: false,
            tests,
            position,
            kill: None,
            output: String::new(),
            stack: None,
            partial: None,
            replay: false,
            recycled: false,
        }
    }

    fn report(when: When, outcome: Outcome) -> PhaseReport {
        let mut report = crash_report("boom".into(), when);
        if outcome == Outcome::Passed {
            report.category = "passed".into();
        }
        report.outcome = outcome;
        report
    }

    fn done(index: usize, outcome: Outcome) -> TestDone {
        TestDone {
            index,
            headline: None,
            reports: vec![report(When::Call, outcome)],
            warnings: Vec::new(),
            junit: None,
            exit: None,
            replay: None,
            leaks: Vec::new(),
        }
    }

    fn calls(calls: &Calls) -> Vec<String> {
        calls.borrow().clone()
    }

    /// The one message of the record for test `index`.
    fn message_of(run: &Run, index: usize) -> String {
        let record = run.results.records().iter().find(|r| r.index == index);
        let report = record.and_then(|r| r.reports.last()).expect("a record");
        report.message.clone().unwrap_or_default()
    }

    #[test]
    fn a_crash_fails_the_test_its_state_file_names_and_requeues_the_rest() {
        let (mut run, work) = run(4, 0, 0);
        let mut out = FakeOutlet::default();
        let position = Position::InTest {
            index: 2,
            phase: Phase::Call,
        };
        let commands = run.worker_lost(lost(vec![2, 3], position, WorkerEnd::Signal(9)), &mut out);
        assert!(commands.is_empty());
        assert_eq!(calls(&work), ["requeue 0 [3]"]);
        assert_eq!(out.0, ["finished t.py::test_2"]);
        assert_eq!(
            message_of(&run, 2),
            "worker 'gw0' crashed while running 't.py::test_2' (signal 9, during call)"
        );
        assert_eq!(run.status(), ExitCode::TestsFailed);
    }

    #[test]
    fn without_a_state_file_the_first_test_held_is_blamed() {
        let (mut run, work) = run(4, 0, 0);
        let mut out = FakeOutlet::default();
        run.worker_lost(
            lost(vec![1, 3], Position::Unknown, WorkerEnd::Code(70)),
            &mut out,
        );
        assert_eq!(calls(&work), ["requeue 0 [3]"]);
        assert_eq!(
            message_of(&run, 1),
            "worker 'gw0' crashed while running 't.py::test_1' (exit code 70, during call)"
        );
    }

    #[test]
    fn a_crash_between_tests_blames_none_and_every_test_held_runs_elsewhere() {
        let (mut run, work) = run(4, 0, 0);
        let mut out = FakeOutlet::default();
        run.worker_lost(
            lost(vec![1, 2], Position::BetweenTests, WorkerEnd::Signal(9)),
            &mut out,
        );
        assert_eq!(calls(&work), ["requeue 0 [1, 2]"]);
        assert!(out.0.is_empty());
        assert!(run.results.records().is_empty());
        assert_eq!(
            run.results.session_errors(),
            ["worker 'gw0' crashed between tests (signal 9)"]
        );
    }

    #[test]
    fn a_reported_test_is_not_blamed_for_a_crash_after_it() {
        // The state file names test 1, whose report arrived: it is not among those held.
        let (mut run, work) = run(4, 0, 0);
        let position = Position::InTest {
            index: 1,
            phase: Phase::Reporting,
        };
        run.worker_lost(
            lost(vec![2, 3], position, WorkerEnd::Signal(9)),
            &mut FakeOutlet::default(),
        );
        assert_eq!(calls(&work), ["requeue 0 [2, 3]"]);
        assert!(run.results.records().is_empty());
    }

    #[test]
    fn a_timeout_reads_as_one_and_carries_the_stacks_and_output() {
        let (mut run, _) = run(2, 0, 0);
        let mut worker = lost(
            vec![0, 1],
            Position::InTest {
                index: 0,
                phase: Phase::Call,
            },
            WorkerEnd::Signal(15),
        );
        worker.kill = Some(KillReason::Timeout {
            index: 0,
            seconds: 1.5,
        });
        worker.stack = Some("Thread 0x1 (most recent call first):".into());
        worker.output = "fatal: something".into();
        run.worker_lost(worker, &mut FakeOutlet::default());
        assert_eq!(
            message_of(&run, 0),
            "Timeout: 't.py::test_0' ran longer than 1.5s; worker 'gw0' was stopped (signal 15)"
        );
        let text = run.results.records()[0].reports[0].text.clone().unwrap();
        assert!(
            text.contains("----- output of worker 'gw0' before it ended -----\nfatal: something")
        );
        assert!(text.contains("Stacks of every thread when the timeout fired:\nThread 0x1"));
    }

    #[test]
    fn a_crash_in_teardown_keeps_what_the_test_reported_before() {
        let (mut run, _) = run(2, 0, 0);
        let mut worker = lost(
            vec![1],
            Position::InTest {
                index: 1,
                phase: Phase::Teardown,
            },
            WorkerEnd::Signal(11),
        );
        worker.partial = Some((1, vec![report(When::Call, Outcome::Passed)]));
        run.worker_lost(worker, &mut FakeOutlet::default());
        let reports = &run.results.records()[0].reports;
        let phases: Vec<_> = reports
            .iter()
            .map(|r| (r.when, r.outcome.clone()))
            .collect();
        assert_eq!(
            phases,
            [
                (When::Call, Outcome::Passed),
                (When::Teardown, Outcome::Failed)
            ]
        );
    }

    #[test]
    fn after_a_normal_session_end_what_was_held_was_discarded_not_crashed_on() {
        let (mut run, work) = run(3, 0, 0);
        let mut worker = lost(vec![1, 2], Position::Unknown, WorkerEnd::Code(0));
        worker.session_done = true;
        run.worker_lost(worker, &mut FakeOutlet::default());
        assert_eq!(calls(&work), ["requeue 0 []"]);
        assert!(run.results.records().is_empty());
        assert!(run.results.session_errors().is_empty());
    }

    #[test]
    fn a_recycled_worker_s_unstarted_tests_go_back_to_be_run() {
        let (mut run, work) = run(3, 0, 0);
        let mut out = FakeOutlet::default();
        let mut worker = lost(vec![1, 2], Position::BetweenTests, WorkerEnd::Code(0));
        (worker.session_done, worker.recycled) = (true, true);
        run.worker_lost(worker, &mut out);
        assert_eq!(calls(&work), ["requeue 0 [1, 2]"]);
        assert!(out.0.is_empty(), "nothing crashed: {:?}", out.0);
        assert!(run.results.session_errors().is_empty());
    }

    #[test]
    fn an_odd_end_after_a_finished_session_is_noted_and_loses_nothing() {
        let (mut run, _) = run(1, 0, 0);
        let mut out = FakeOutlet::default();
        let mut worker = lost(Vec::new(), Position::BetweenTests, WorkerEnd::Signal(6));
        worker.session_done = true;
        run.worker_lost(worker, &mut out);
        assert_eq!(
            out.0,
            ["notice shoal: note: worker 'gw0' ended after its session finished (signal 6); nothing was lost"]
        );
        assert!(run.results.session_errors().is_empty());
    }

    #[test]
    fn a_crash_outside_any_test_is_a_session_error() {
        let (mut run, _) = run(1, 0, 0);
        run.worker_lost(
            lost(Vec::new(), Position::BetweenTests, WorkerEnd::Code(1)),
            &mut FakeOutlet::default(),
        );
        assert_eq!(
            run.results.session_errors(),
            ["worker 'gw0' crashed outside any test (exit code 1)"]
        );
    }

    #[test]
    fn after_an_interrupt_a_dead_worker_s_tests_are_discarded() {
        let (mut run, work) = run(3, 0, 0);
        run.stop = Some(StopReason::Interrupted);
        run.worker_lost(
            lost(vec![0, 1], Position::Unknown, WorkerEnd::Signal(2)),
            &mut FakeOutlet::default(),
        );
        assert_eq!(calls(&work), ["requeue 0 []"]);
        assert!(run.results.records().is_empty());
    }

    #[test]
    fn a_failed_test_with_a_retry_left_runs_again_and_keeps_its_failed_attempt() {
        let (mut run, work) = run(1, 0, 1);
        let mut out = FakeOutlet::default();
        run.test_done(0, "gw0", done(0, Outcome::Failed), &mut out);
        assert_eq!(calls(&work), ["done 0 0", "retry 0 not on 0"]);
        assert!(run.results.records().is_empty());
        run.test_done(1, "gw1", done(0, Outcome::Passed), &mut out);
        assert_eq!(out.0, ["retrying t.py::test_0", "finished t.py::test_0"]);
        let record = &run.results.records()[0];
        assert_eq!(record.worker, "gw1");
        assert_eq!(record.earlier_attempts.len(), 1);
        assert_eq!(record.earlier_attempts[0].worker, "gw0");
        assert_eq!(run.status(), ExitCode::Ok);
    }

    #[test]
    fn a_crash_with_a_retry_left_runs_the_test_again() {
        let (mut run, work) = run(2, 0, 1);
        let position = Position::InTest {
            index: 0,
            phase: Phase::Call,
        };
        run.worker_lost(
            lost(vec![0, 1], position, WorkerEnd::Signal(9)),
            &mut FakeOutlet::default(),
        );
        assert_eq!(calls(&work), ["requeue 0 [1]", "retry 0 not on 0"]);
        assert!(run.results.records().is_empty());
    }

    #[test]
    fn maxfail_stops_the_work_and_no_retry_follows() {
        let (mut run, work) = run(3, 1, 1);
        let mut out = FakeOutlet::default();
        // The first failure is retried; its second attempt's failure counts.
        run.test_done(0, "gw0", done(0, Outcome::Failed), &mut out);
        let commands = run.test_done(0, "gw0", done(0, Outcome::Failed), &mut out);
        assert_eq!(
            commands,
            [Command::Shutdown {
                worker: 0,
                discard: true
            }]
        );
        assert_eq!(
            calls(&work),
            ["done 0 0", "retry 0 not on 0", "done 0 0", "stop"]
        );
        assert!(matches!(run.stop, Some(StopReason::MaxFail(1))));
        // Stopped: a failure now is recorded, not retried.
        run.test_done(0, "gw0", done(1, Outcome::Failed), &mut out);
        assert_eq!(calls(&work).last().unwrap(), "done 0 1");
        assert_eq!(run.results.records().len(), 2);
    }

    #[test]
    fn pytest_exit_in_a_test_stops_at_once_and_in_the_last_teardown_does_not() {
        let exit = |last_test| {
            serde_json::from_value::<SessionExit>(serde_json::json!({
                "message": "bye", "returncode": 3, "last_test": last_test,
            }))
            .unwrap()
        };
        let (mut run, work) = run(2, 0, 0);
        let mut last = done(0, Outcome::Passed);
        last.exit = Some(exit(true));
        run.test_done(0, "gw0", last, &mut FakeOutlet::default());
        assert!(run.stop.is_none());
        assert!(!calls(&work).contains(&"stop".to_owned()));
        let mut early = done(1, Outcome::Passed);
        early.exit = Some(exit(false));
        early.reports[0].category.clear(); // stopped before any outcome pytest counts
        run.test_done(1, "gw1", early, &mut FakeOutlet::default());
        assert!(matches!(run.stop, Some(StopReason::Exit(_))));
        assert_eq!(calls(&work).last().unwrap(), "stop");
        // The test it stopped in did not run, and is not recorded.
        assert_eq!(run.results.records().len(), 1);
    }

    #[test]
    fn the_recorded_attempt_s_report_calls_go_to_the_collector() {
        let (mut run, _) = run(1, 0, 0);
        let mut out = FakeOutlet::default();
        let mut worker = lost(vec![0], Position::Unknown, WorkerEnd::Signal(9));
        worker.replay = true;
        run.worker_lost(worker, &mut out);
        assert_eq!(out.0.len(), 2);
        assert!(out.0[0].starts_with(r#"replay gw0 [{"hook":"crash""#));
    }
}
