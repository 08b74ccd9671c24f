//! The run's one decision-maker: it reacts to [`Event`]s from every process in turn, asks the
//! work source what to send, records results and drives the reporters.
//!
//! A run has three stages: the collector collects and the controller decides how many workers
//! it wants; the workers are forked (or spawned) together and run tests; the collector is told
//! to finish and the summary is printed. Every way a process can end is an event, and every
//! deadline (timeouts, kill grace periods) bounds the wait for the next one, so the loop always
//! ends: a test whose worker died is reported, never waited for.

mod collector;
mod estimate;
mod foreground;
mod run_once;
mod validate;
mod worker;

use std::{
    collections::HashMap,
    io::Read,
    os::unix::process::ExitStatusExt,
    path::{Path, PathBuf},
    process::{ExitStatus, Stdio},
    time::{Duration, Instant},
};

use crossbeam_channel::{Receiver, RecvTimeoutError, Sender};
use shoal_protocol::{
    CollectedItem, FromPython, Outcome, PytestSettings, Role, SessionExit, ToPython, Warning,
    WorkerIdentity, PROTOCOL_VERSION,
};

pub use self::validate::{drive_bookkeeping, MAX_SECONDS};
use self::{
    collector::{collector_end, Collection},
    estimate::Estimate,
    run_once::RunOnceFixtures,
    worker::{KillReason, Phase, Worker, WorkerEnd},
};
use crate::{
    connection::{self, ConnId, Event, Peer, Process},
    durations::DurationStore,
    options::{Dist, RunOptions, StartMethod},
    python::Interpreter,
    reporter::{events::EventLog, ReporterEvent, Reporters, RunEnd, Terminal},
    results::{crash_report, Results, StopReason, TestRecord},
    signals,
    work::{self, Command, Scheduler, WorkSource},
    ExitCode, RunError,
};

/// Everything one run needs to start its Python processes.
pub struct Launch {
    pub interpreter: Interpreter,
    pub plugin: PathBuf,
    pub socket: PathBuf,
    pub options: RunOptions,
}

impl Launch {
    /// A command that runs shoal's plugin in `role` with pytest's `args`.
    fn command(
        &self,
        role: Role,
        identity: Option<&WorkerIdentity>,
        args: &[String],
    ) -> std::process::Command {
        self.interpreter
            .plugin_command(&self.plugin, &self.socket, role, identity, args)
    }
}

/// The state of the test-running stage.
struct Run {
    items: Vec<CollectedItem>,
    settings: Box<PytestSettings>,
    start: StartMethod,
    /// Which test each worker runs next.
    work: Box<dyn WorkSource>,
    results: Results,
    estimate: Estimate,
    /// Failed phases so far, for `--maxfail`.
    failures: usize,
    stop: Option<StopReason>,
    /// Crashed workers that may still be replaced.
    restarts_left: usize,
    /// `--max-worker-restart`, for the line that says it was reached.
    max_restarts: usize,
    /// Workers that crashed so far.
    crashes: usize,
    /// Per test: the attempts that failed and will be retried or reported with the last one.
    failed_attempts: HashMap<usize, Vec<TestRecord>>,
    run_deadline: Option<Instant>,
    /// Since when shoal is suspended (Ctrl-Z): deadlines move by the time spent stopped.
    paused_since: Option<Instant>,
    interrupts: usize,
    run_once: RunOnceFixtures,
    /// The first `pytest.exit()` a worker reported: the run ends with its line and code.
    exit: Option<SessionExit>,
}

pub struct Dispatcher {
    launch: Launch,
    events: Receiver<Event>,
    sender: Sender<Event>,
    started: Instant,
    collector: Option<(ConnId, Peer)>,
    collector_pid: Option<u32>,
    collector_exit: Option<ExitStatus>,
    /// Whether shoal itself killed the collector ([`Dispatcher::kill_collector`]).
    collector_signalled: bool,
    conns: HashMap<ConnId, usize>,
    workers: Vec<Worker>,
    /// Whether pytest colours its output; spawned workers are told so explicitly.
    color: bool,
    /// Every reporter, from the moment the workers are planned.
    reporters: Option<Reporters>,
    /// What the collector's plugins print in pytest's terminal summary.
    plugin_summary: String,
    /// Warnings the collector raised after the collection, counted in the final line.
    collector_warnings: Vec<Warning>,
}

impl Dispatcher {
    pub fn new(launch: Launch, events: Receiver<Event>, sender: Sender<Event>) -> Self {
        Self {
            launch,
            events,
            sender,
            started: Instant::now(),
            collector: None,
            collector_pid: None,
            collector_exit: None,
            collector_signalled: false,
            conns: HashMap::new(),
            workers: Vec::new(),
            color: false,
            reporters: None,
            plugin_summary: String::new(),
            collector_warnings: Vec::new(),
        }
    }

    pub fn run(mut self) -> Result<ExitCode, RunError> {
        let collection = match self.collect()? {
            Ok(collection) => collection,
            Err(code) => return Ok(code),
        };
        if let Some(code) = self.debugger(&collection.settings)? {
            return Ok(code);
        }
        let mut run = self.plan(collection)?;
        while !self.workers.iter().all(Worker::finished) {
            let event = match self.next_event(&run) {
                Ok(event) => event,
                Err(RecvTimeoutError::Timeout) => {
                    self.on_deadline(&mut run);
                    continue;
                }
                Err(RecvTimeoutError::Disconnected) => break,
            };
            self.handle(event, &mut run)?;
            self.after_event(&mut run)?;
        }
        self.finish(run)
    }

    /// Waits for the next event, but no longer than the nearest deadline.
    fn next_event(&self, run: &Run) -> Result<Event, RecvTimeoutError> {
        if run.paused_since.is_some() {
            return self
                .events
                .recv()
                .map_err(|_| RecvTimeoutError::Disconnected);
        }
        let deadline = self
            .workers
            .iter()
            .filter_map(|w| {
                let test = w
                    .running
                    .and_then(|(index, since)| self.timeout_of(run, index).map(|t| since + t));
                test.into_iter().chain(w.kill_deadline()).min()
            })
            .chain(run.run_deadline)
            .min();
        match deadline {
            Some(at) => self
                .events
                .recv_timeout(at.saturating_duration_since(Instant::now())),
            None => self
                .events
                .recv()
                .map_err(|_| RecvTimeoutError::Disconnected),
        }
    }

    /// The test's timeout: its mark, else `--timeout`, else the ini `timeout`.
    fn timeout_of(&self, run: &Run, index: usize) -> Option<Duration> {
        run.items[index]
            .timeout
            .or(self.launch.options.timeout)
            .or(run.settings.timeout)
            .filter(|t| *t > 0.0)
            .and_then(|t| Duration::try_from_secs_f64(t).ok())
    }

    /// Decides workers, schedule and reporters once the collection is known, and starts the
    /// workers.
    fn plan(&mut self, collection: Collection) -> Result<Run, RunError> {
        let options = self.launch.options.clone();
        let settings = collection.settings;
        let resolved = options.resolve(&settings)?;
        self.color = settings.color;
        let units = work::units(resolved.dist, &collection.items, settings.loadscope_reorder);
        let requested = resolved
            .workers
            .resolve(resolved.maxprocesses, settings.auto_num_workers);
        let count = work::useful_workers(resolved.dist, units.len(), requested);
        let mut fork_unsafe = collection.fork_unsafe.clone();
        if let Some(place) = collection.identity_read.as_ref().filter(|_| requested > 0) {
            fork_unsafe.get_or_insert_with(|| format!("{place} before the workers exist"));
        }
        let start = match (options.start, &fork_unsafe) {
            (Some(StartMethod::Spawn), _) | (_, Some(_)) => StartMethod::Spawn,
            _ => StartMethod::Fork,
        };
        let max_restarts = resolved.max_worker_restart.unwrap_or(4 * count);
        let mut store = settings.cache_dir.as_ref().map(|dir| {
            let rootdir = settings.rootdir.as_deref().map(Path::new);
            DurationStore::load(DurationStore::path_in(Path::new(dir)), rootdir)
        });
        let estimate = Estimate::new(store.as_ref(), &collection.items, count);
        let store_problems = store.as_mut().map(DurationStore::take_problems);
        let runs_per_test = if resolved.dist == Dist::Each {
            count
        } else {
            1
        };
        let mut results = Results::new(collection.items.len(), runs_per_test);
        results.add_session_warnings(collection.warnings);
        results.add_collect_errors(collection.collect_errors, collection.collect_junit);
        let total = collection.items.len() * runs_per_test;
        let start_label = match (&start, &fork_unsafe) {
            (StartMethod::Fork, _) => "fork".to_owned(),
            (StartMethod::Spawn, Some(reason)) => format!("spawn: {reason}"),
            (StartMethod::Spawn, None) => "spawn".to_owned(),
        };
        let events_on_stdout = options.report_json.as_deref() == Some("-");
        let terminal = Terminal::new(
            (*settings).clone(),
            resolved.failure_output,
            events_on_stdout,
        );
        let events = options
            .report_json
            .as_deref()
            .map(EventLog::open)
            .transpose()?;
        self.reporters = Some(Reporters::new(
            terminal,
            events,
            settings.junit.clone(),
            settings.cache_dir.as_ref().map(PathBuf::from),
            store,
        ));
        for problem in store_problems.into_iter().flatten() {
            self.notice(&problem);
        }
        let testrunuid = settings
            .testrunuid
            .clone()
            .unwrap_or_else(|| uuid::Uuid::new_v4().simple().to_string());
        self.report(ReporterEvent::RunStarted {
            workers: count,
            tests: total,
            testrunuid: &testrunuid,
            start_method: &start_label,
            scheduler: resolved.dist.xdist_scheduler(),
        });
        let timeouts = options.timeout.is_some()
            || settings.timeout.is_some()
            || collection.items.iter().any(|i| i.timeout.is_some());
        let run_dir = self.launch.socket.parent().map(Path::to_path_buf);
        for n in 0..count {
            let workerid = format!("gw{n}");
            let identity = WorkerIdentity {
                stack_file: run_dir
                    .as_ref()
                    .map(|d| d.join(format!("stack-{workerid}")).display().to_string()),
                state_file: run_dir
                    .as_ref()
                    .map(|d| d.join(format!("state-{workerid}")).display().to_string()),
                workerid,
                workercount: count,
                testrunuid: testrunuid.clone(),
                mainargv: options.mainargv.clone(),
                distributed: requested > 0,
                basetemp: collection.basetemp.clone(),
                // `-vv` shows each test's node id as it starts.
                report_starts: timeouts || settings.verbose > 1,
                replay: collection.replay,
                steals: resolved.dist == Dist::WorkSteal,
                workerinput: collection.workerinput.clone(),
            };
            self.workers.push(Worker::new(identity));
        }
        let run = Run {
            estimate,
            work: {
                let scheduler = Scheduler::new(
                    resolved.dist,
                    units,
                    count,
                    work::Constraints::from_items(&collection.items),
                );
                Box::new(match start {
                    StartMethod::Fork => scheduler.in_worker_order(),
                    StartMethod::Spawn => scheduler,
                })
            },
            items: collection.items,
            settings,
            start,
            results,
            failures: 0,
            stop: None,
            restarts_left: max_restarts,
            max_restarts,
            crashes: 0,
            failed_attempts: HashMap::new(),
            run_deadline: options
                .run_timeout
                .map(|t| Instant::now() + Duration::from_secs_f64(t)),
            paused_since: None,
            interrupts: 0,
            run_once: RunOnceFixtures::default(),
            exit: None,
        };
        for w in 0..count {
            self.start_worker(w, start)?;
        }
        Ok(run)
    }

    fn handle(&mut self, event: Event, run: &mut Run) -> Result<(), RunError> {
        let commands = match event {
            Event::Connected { conn, hello, peer } => {
                self.introduce(conn, hello, peer)?;
                Vec::new()
            }
            Event::Message { conn, message } => match self.conns.get(&conn) {
                Some(&w) => {
                    match validate::worker_message(&message, w, run.work.as_ref(), &run.run_once) {
                        Ok(()) => self.worker_message(w, message, run)?,
                        Err(what) => {
                            self.protocol_violation(w, &what);
                            Vec::new()
                        }
                    }
                }
                None => {
                    self.collector_message(message)?;
                    Vec::new()
                }
            },
            Event::Closed { conn, error } => {
                if let Some(w) = self.conns.remove(&conn) {
                    if let Some(error) = error {
                        self.notice(&format!(
                            "shoal: failed to read from worker '{}': {}; stopping it",
                            self.workers[w].id(),
                            crate::error_chain(&error)
                        ));
                        self.workers[w].kill_now();
                    }
                    let worker = &mut self.workers[w];
                    worker.closed = true;
                    worker.peer = None;
                    worker.lost = run.work.worker_lost(w);
                }
                Vec::new()
            }
            Event::Output { worker, bytes } => {
                self.report(ReporterEvent::WorkerOutput {
                    worker: &worker,
                    bytes: &bytes,
                });
                if let Some(slot) = self.workers.iter_mut().find(|w| w.id() == worker) {
                    slot.remember_output(&bytes);
                }
                Vec::new()
            }
            Event::OutputClosed { worker } => {
                self.report(ReporterEvent::WorkerOutputClosed { worker: &worker });
                Vec::new()
            }
            Event::Exited {
                process: Process::Worker { id, pid },
                status,
            } => {
                self.worker_ended(&id, pid, WorkerEnd::from_status(status));
                Vec::new()
            }
            Event::Exited {
                process: Process::Collector,
                status,
            } => {
                self.collector_exit = Some(status);
                if run.start == StartMethod::Fork && !self.workers.iter().all(Worker::finished) {
                    self.notice(&format!(
                        "shoal: the collecting process, parent of the forked workers, ended ({}) while they ran",
                        collector_end(status)
                    ));
                } else if status.signal().is_some() {
                    self.notice(&format!(
                        "shoal: the collecting process ended ({}) while the tests ran",
                        collector_end(status)
                    ));
                }
                // Forked workers die with their parent; nothing more will say how.
                for worker in &mut self.workers {
                    if run.start == StartMethod::Fork {
                        worker.end.get_or_insert(WorkerEnd::Unknown);
                    }
                    if worker.peer.is_none() {
                        worker.closed = true;
                    }
                }
                Vec::new()
            }
            Event::Signal(signal) => self.on_signal(signal, run),
        };
        self.send(commands);
        Ok(())
    }

    /// Handles a message that [`validate::worker_message`] accepted.
    fn worker_message(
        &mut self,
        w: usize,
        message: FromPython,
        run: &mut Run,
    ) -> Result<Vec<Command>, RunError> {
        Ok(match message {
            FromPython::Ready { collection } => {
                if let Some(theirs) = collection {
                    self.check_collection(w, &run.items, &theirs)?;
                }
                run.work.worker_ready(w)
            }
            FromPython::TestStart { index } => {
                self.workers[w].running = Some((index, Instant::now()));
                self.report(ReporterEvent::TestStarted {
                    nodeid: &run.items[index].nodeid,
                });
                Vec::new()
            }
            FromPython::TestPartial { index, reports } => {
                self.workers[w].partial = Some((index, reports));
                Vec::new()
            }
            FromPython::TestDone {
                index,
                headline,
                reports,
                warnings,
                junit,
                exit,
                replay,
            } => {
                self.workers[w].running = None;
                self.workers[w].partial = None;
                self.workers[w].recent_output.clear();
                let record = TestRecord {
                    index,
                    nodeid: run.items[index].nodeid.clone(),
                    worker: self.workers[w].id().to_owned(),
                    headline,
                    reports,
                    warnings,
                    junit,
                    earlier_attempts: Vec::new(),
                    display: run.items[index].display.clone(),
                };
                let mut commands = run.work.test_done(w, index);
                if let Some(exit) = exit {
                    commands.extend(session_exit(run, exit));
                    if record.reports.iter().all(|r| r.category.is_empty()) {
                        // Stopped before any outcome pytest counts (in its setup or call): it
                        // did not run, and is counted so.
                        return Ok(commands);
                    }
                }
                commands.extend(self.finish_test(record, replay, w, run));
                commands
            }
            FromPython::Released { indices } => run.work.released(w, indices),
            FromPython::FixtureRequest { name } => {
                let replies = run.run_once.request(name, w);
                self.send_replies(replies);
                Vec::new()
            }
            FromPython::FixtureReady { name, value } => {
                let replies = run.run_once.ready(name, w, value);
                self.send_replies(replies);
                Vec::new()
            }
            FromPython::FixtureFailed { name, text, kind } => {
                let replies = run.run_once.failed(name, text, kind);
                self.send_replies(replies);
                Vec::new()
            }
            FromPython::FixtureDone { name } => {
                run.run_once.owner_done(name, w);
                Vec::new()
            }
            // -n 0's worker, plain pytest, shows what plugins print in its summary.
            FromPython::TerminalSummary { text, warnings } => {
                self.add_plugin_summary(text, warnings);
                Vec::new()
            }
            FromPython::InternalError => {
                let worker = self.workers[w].id().to_owned();
                if run.stop.is_none() {
                    run.stop = Some(StopReason::InternalError(worker));
                    return Ok(run.work.stop());
                }
                Vec::new()
            }
            FromPython::WorkerDone {
                workeroutput,
                junit_properties,
                warnings,
            } => {
                run.results.add_junit_properties(junit_properties);
                run.results.add_session_warnings(warnings);
                self.workers[w].done = true;
                self.node_down(w, Ok(workeroutput));
                Vec::new()
            }
            // validate::worker_message refused every other kind.
            _ => Vec::new(),
        })
    }

    /// A worker that breaks the protocol cannot be trusted with more tests: it is stopped, and
    /// replaced like a crashed one.
    fn protocol_violation(&mut self, w: usize, what: &str) {
        self.notice(&format!(
            "shoal: worker '{}' sent {what}; stopping it",
            self.workers[w].id()
        ));
        self.workers[w].kill_now();
    }

    /// Records a finished test, unless it failed and has retries left: then it runs again.
    /// Only the recorded attempt's report hook calls (`replay`) go to the collector, so its
    /// plugins count each test once, as the terminal does.
    fn finish_test(
        &mut self,
        mut record: TestRecord,
        replay: Option<Vec<serde_json::Value>>,
        w: usize,
        run: &mut Run,
    ) -> Vec<Command> {
        let index = record.index;
        let failed = record.failed();
        let previous = run.failed_attempts.get(&index).map_or(0, Vec::len);
        let retries = run.items[index]
            .reruns
            .unwrap_or(self.launch.options.retries);
        if failed && previous < retries && run.stop.is_none() {
            self.report(ReporterEvent::TestRetrying(&record));
            run.failed_attempts.entry(index).or_default().push(record);
            return run.work.retry(index, w);
        }
        record.earlier_attempts = run.failed_attempts.remove(&index).unwrap_or_default();
        if let (Some(events), Some((_, peer))) = (replay, self.collector.as_mut()) {
            let worker = record.worker.clone();
            let _ = peer.send(&ToPython::Replay { worker, events });
        }
        if failed {
            run.failures += record
                .reports
                .iter()
                .filter(|r| r.outcome == Outcome::Failed && r.wasxfail.is_none())
                .count();
        }
        self.report(ReporterEvent::TestFinished(&record));
        run.estimate.done(index);
        run.results.record(record);
        let maxfail = run.settings.maxfail;
        if maxfail > 0 && run.failures >= maxfail && run.stop.is_none() {
            run.stop = Some(StopReason::MaxFail(maxfail));
            return run.work.stop();
        }
        Vec::new()
    }

    /// Sends one message to a worker; a failure means it died, which its events report.
    fn send_to(&mut self, w: usize, message: &ToPython) {
        if let Some(peer) = self.workers[w].peer.as_mut() {
            let _ = peer.send(message);
        }
    }

    fn send_replies(&mut self, replies: run_once::Replies) {
        for (w, message) in replies {
            self.send_to(w, &message);
        }
    }

    /// Releases run-once owners once every other worker is done, and fails the waiters of a
    /// setup whose worker died.
    fn run_once_housekeeping(&mut self, run: &mut Run) {
        let workers = &self.workers;
        let replies = run.run_once.housekeeping(
            workers.len(),
            |w| workers[w].closed,
            |w| workers[w].done || workers[w].finished(),
            |w| workers[w].id().to_owned(),
        );
        self.send_replies(replies);
    }

    /// After every event: account for dead workers, replace them, show who runs what.
    fn after_event(&mut self, run: &mut Run) -> Result<(), RunError> {
        self.run_once_housekeeping(run);
        let now = Instant::now();
        for w in 0..self.workers.len() {
            self.workers[w].advance_kill(now);
            let accounted = self.workers[w].accounted;
            let commands = self.account_lost(w, run);
            self.send(commands);
            let worker = &self.workers[w];
            if !accounted && worker.accounted && !worker.done && run.stop.is_none() {
                self.tell_crash(w, run);
            }
        }
        while let Some(w) = run.work.needs_worker() {
            let worker = &self.workers[w];
            if !worker.finished() || self.collector_gone(run) {
                break;
            }
            let crashed = !worker.done;
            if crashed && run.restarts_left == 0 {
                break;
            }
            if crashed {
                run.restarts_left -= 1;
            }
            self.workers[w].restart();
            run.work.revive(w);
            self.start_worker(w, run.start)?;
        }
        for w in 0..self.workers.len() {
            let running = run.work.running(w);
            self.report(ReporterEvent::Running {
                worker: w,
                nodeid: running.map(|i| run.items[i].nodeid.as_str()),
            });
        }
        self.report(ReporterEvent::Progress {
            eta: run.estimate.left(),
        });
        Ok(())
    }

    fn collector_gone(&self, run: &Run) -> bool {
        run.start == StartMethod::Fork && self.collector_exit.is_some()
    }

    /// A deadline passed: a test overran its timeout, a kill step is due, or the run is over.
    fn on_deadline(&mut self, run: &mut Run) {
        let now = Instant::now();
        if run.run_deadline.is_some_and(|at| at <= now) {
            run.run_deadline = None;
            run.stop.get_or_insert(StopReason::RunTimeout);
            let commands = run.work.stop();
            self.send(commands);
            for worker in &mut self.workers {
                worker.begin_kill(KillReason::RunOver, now);
            }
        }
        for w in 0..self.workers.len() {
            if let Some((index, since)) = self.workers[w].running {
                if let Some(limit) = self.timeout_of(run, index) {
                    if since + limit <= now {
                        let seconds = limit.as_secs_f64();
                        self.workers[w].begin_kill(KillReason::Timeout { index, seconds }, now);
                    }
                }
            }
            self.workers[w].advance_kill(now);
        }
    }

    /// Ctrl-C / SIGTERM: stop scheduling and interrupt the tests as pytest would; a second
    /// one kills. Ctrl-Z: stop every process and the clocks; SIGCONT: resume them.
    fn on_signal(&mut self, signal: i32, run: &mut Run) -> Vec<Command> {
        match signal {
            signals::SIGINT | signals::SIGTERM => {
                run.interrupts += 1;
                run.stop = Some(StopReason::Interrupted);
                for worker in &mut self.workers {
                    match run.interrupts {
                        1 if !worker.finished() => worker.signal(signals::SIGINT),
                        _ => worker.kill_now(),
                    }
                }
                run.work.stop()
            }
            signals::SIGTSTP => {
                run.paused_since = Some(Instant::now());
                self.signal_all(signals::SIGSTOP);
                signals::stop_self();
                Vec::new()
            }
            signals::SIGCONT => {
                if let Some(since) = run.paused_since.take() {
                    let paused = since.elapsed();
                    for worker in &mut self.workers {
                        if let Some((_, started)) = worker.running.as_mut() {
                            *started += paused;
                        }
                    }
                    if let Some(at) = run.run_deadline.as_mut() {
                        *at += paused;
                    }
                }
                self.signal_all(signals::SIGCONT);
                Vec::new()
            }
            _ => Vec::new(),
        }
    }

    /// Sends a signal to the collector's process group and to every worker.
    fn signal_all(&self, signal: i32) {
        for worker in self.workers.iter().filter(|w| !w.finished()) {
            worker.signal(signal);
        }
        if let Some(pid) = self.collector_pid {
            signals::to_group(pid, signal);
        }
    }

    fn introduce(&mut self, conn: ConnId, hello: FromPython, peer: Peer) -> Result<(), RunError> {
        let FromPython::Hello {
            protocol,
            role,
            worker,
            pid,
        } = hello
        else {
            return Err(RunError::Unexpected {
                who: format!("connection {conn}"),
                message: format!("{hello:?} before hello"),
            });
        };
        if protocol != PROTOCOL_VERSION {
            return Err(RunError::ProtocolVersion { theirs: protocol });
        }
        match (role, worker) {
            (Role::Collector, _) => self.collector = Some((conn, peer)),
            (Role::Worker, Some(id)) => {
                let Some(w) = self.workers.iter().position(|x| x.id() == id) else {
                    return Err(RunError::Unexpected {
                        who: format!("connection {conn}"),
                        message: format!("hello from unknown worker {id:?}"),
                    });
                };
                self.conns.insert(conn, w);
                self.workers[w].peer = Some(peer);
                self.workers[w].process = Some(pid);
                self.report(ReporterEvent::WorkerStarted { worker: &id });
            }
            (Role::Worker | Role::Output, None) | (Role::Output, Some(_)) => {
                return Err(RunError::Unexpected {
                    who: format!("connection {conn}"),
                    message: "a worker hello without a worker id".into(),
                })
            }
        }
        Ok(())
    }

    fn worker_ended(&mut self, id: &str, pid: u32, end: WorkerEnd) {
        let Some(worker) = self.workers.iter_mut().find(|w| w.id() == id) else {
            return;
        };
        if worker.pid.is_some_and(|p| p != pid) {
            return; // an earlier process of a restarted slot
        }
        worker.end = Some(end);
        // Whatever its tests started dies with it; that also closes a connection a child
        // process may have inherited.
        signals::to_group(pid, signals::SIGKILL);
        if worker.peer.is_none() {
            worker.closed = true; // it never connected, or its connection is already gone
        }
        self.report(ReporterEvent::WorkerStopped {
            worker: id,
            end: &end.describe(),
        });
    }

    /// Once a dead worker is fully accounted for: the test it was running fails (crash or
    /// timeout) and the rest of its queue goes back to the scheduler.
    fn account_lost(&mut self, w: usize, run: &mut Run) -> Vec<Command> {
        let worker = &mut self.workers[w];
        let Some(end) = worker.end else {
            return Vec::new();
        };
        if !worker.closed || worker.accounted {
            return Vec::new();
        }
        worker.accounted = true;
        if !worker.done {
            let error = format!("worker '{}' crashed ({})", worker.id(), end.describe());
            self.node_down(w, Err(error));
        }
        let worker = &mut self.workers[w];
        // pytest's own ways for a session to end; anything else after it is worth a word.
        let pytest_end = matches!(end, WorkerEnd::Code(0 | 1 | 2 | 5))
            || run
                .exit
                .as_ref()
                .is_some_and(|exit| end == exit_status(exit));
        if worker.lost.is_empty() {
            if !worker.done && run.stop.is_none() {
                // Between tests or in session teardown: no test to blame, but not silent.
                run.results.add_session_error(format!(
                    "worker '{}' crashed outside any test ({})",
                    worker.id(),
                    end.describe()
                ));
            } else if worker.done && !pytest_end && worker.kill.is_none() && run.stop.is_none() {
                // Its session, teardown included, was over (`worker_done`) and every report
                // had arrived: nothing was lost, so the run's outcome stands.
                let note = format!(
                    "shoal: note: worker '{}' ended after its session finished ({}); nothing was lost",
                    worker.id(),
                    end.describe()
                );
                self.notice(&note);
            }
            // The others may now take the share this worker would have had.
            return run.work.requeue(w, Vec::new());
        }
        let mut lost = std::mem::take(&mut worker.lost);
        if worker.done || matches!(run.stop, Some(StopReason::Interrupted)) {
            // Its session ended normally, or the user interrupted the run: what it did not
            // run was discarded, not crashed on. The others may now take a larger share.
            return run.work.requeue(w, Vec::new());
        }
        let id = worker.id().to_owned();
        // A test that started is never run again (but for --retries): the crash is blamed on
        // the test it started last and had not reported. Without a state file to tell, that
        // is the first one it held.
        let started = match worker
            .identity
            .state_file
            .as_deref()
            .and_then(worker::read_phase)
        {
            None => Some((0, Phase::Call)),
            Some((_, Phase::Idle)) => None,
            // Not among the lost: that test's report arrived.
            Some((index, phase)) => lost.iter().position(|&i| i == index).map(|at| (at, phase)),
        };
        let Some((at, phase)) = started else {
            // Between two tests: nothing to blame; none of what it held had started, so it
            // all runs elsewhere.
            if worker.kill.is_none() {
                run.results.add_session_error(format!(
                    "worker '{id}' crashed between tests ({})",
                    end.describe()
                ));
            }
            return run.work.requeue(w, lost);
        };
        let running = lost.remove(at);
        let nodeid = run.items[running].nodeid.clone();
        let message = match worker.kill.map(|k| k.reason) {
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
        let replay = worker.identity.replay.then(|| {
            vec![serde_json::json!({"hook": "crash", "nodeid": nodeid, "message": message})]
        });
        let mut report = crash_report(message, phase.when());
        if !worker.recent_output.is_empty() {
            // What the worker wrote outside pytest's capture since its last test, a fatal
            // error's stack among it.
            let text = report.text.get_or_insert_with(String::new);
            text.push_str(&format!(
                "\n----- output of worker '{id}' before it ended -----\n"
            ));
            text.push_str(&String::from_utf8_lossy(
                worker.recent_output.make_contiguous(),
            ));
        }
        if let Some(stack) = worker
            .kill
            .and(worker.identity.stack_file.as_deref())
            .and_then(|path| std::fs::read_to_string(path).ok())
            .filter(|s| !s.is_empty())
        {
            let text = report.text.get_or_insert_with(String::new);
            text.push_str("\nStacks of every thread when the timeout fired:\n");
            text.push_str(&stack);
        }
        // A crash in the last test's teardown keeps what the test had reported before it.
        let mut reports = match worker.partial.take() {
            Some((index, earlier)) if index == running && phase == Phase::Teardown => earlier,
            _ => Vec::new(),
        };
        reports.push(report);
        let record = TestRecord {
            index: running,
            nodeid: nodeid.clone(),
            worker: id,
            headline: Some(nodeid.rsplit("::").next().unwrap_or("").to_owned()),
            reports,
            warnings: Vec::new(),
            junit: None,
            earlier_attempts: Vec::new(),
            display: run.items[running].display.clone(),
        };
        let mut commands = run.work.requeue(w, lost);
        commands.extend(self.finish_test(record, replay, w, run));
        commands
    }

    /// pytest-xdist's lines for a crashed worker: it is down, and it is replaced, or the
    /// restart limit is reached (said once; shoal's live workers still finish the run).
    fn tell_crash(&mut self, w: usize, run: &mut Run) {
        let id = self.workers[w].id().to_owned();
        self.report(ReporterEvent::WorkerLine(&format!(
            "[{id}] node down: Not properly terminated"
        )));
        run.crashes += 1;
        if run.crashes <= run.max_restarts {
            self.report(ReporterEvent::WorkerLine(&format!(
                "replacing crashed worker {id}"
            )));
        } else if run.crashes == run.max_restarts + 1 {
            self.report(ReporterEvent::RestartLimit(&match run.max_restarts {
                0 => format!("worker {id} crashed and worker restarting disabled"),
                n => format!("maximum crashed workers reached: {n}"),
            }));
        }
    }

    fn start_worker(&mut self, w: usize, start: StartMethod) -> Result<(), RunError> {
        let identity = self.workers[w].identity.clone();
        for path in identity.stack_file.iter().chain(&identity.state_file) {
            let _ = std::fs::remove_file(path);
        }
        match start {
            StartMethod::Fork => {
                let Some((_, collector)) = self.collector.as_mut() else {
                    return Ok(()); // the collector is gone: the slot stays empty
                };
                collector
                    .send(&ToPython::Fork { identity })
                    .map_err(|source| RunError::Protocol {
                        who: "the collector".into(),
                        source,
                    })
            }
            StartMethod::Spawn => self.spawn_worker(w, identity),
        }
    }

    fn spawn_worker(&mut self, w: usize, identity: WorkerIdentity) -> Result<(), RunError> {
        let mut args = self.launch.options.pytest_args.clone();
        if let (true, Some(base)) = (identity.distributed, &identity.basetemp) {
            args.push(format!("--basetemp={base}/popen-{}", identity.workerid));
        }
        if self.color {
            args.push("--color=yes".into()); // its output is a pipe, but ends on our terminal
        }
        let id = identity.workerid.clone();
        let mut command = self.launch.command(Role::Worker, Some(&identity), &args);
        if identity.distributed {
            // Set before Python starts: conftests read them at import time.
            command
                .env("PYTEST_XDIST_WORKER", &identity.workerid)
                .env(
                    "PYTEST_XDIST_WORKER_COUNT",
                    identity.workercount.to_string(),
                )
                .env("PYTEST_XDIST_TESTRUNUID", &identity.testrunuid);
        }
        let mut child = command
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|source| RunError::Spawn {
                python: self.launch.interpreter.path.clone(),
                source,
            })?;
        let pid = child.id();
        self.workers[w].pid = Some(pid);
        let stdout = child
            .stdout
            .take()
            .map(|s| Box::new(s) as Box<dyn Read + Send>);
        let stderr = child
            .stderr
            .take()
            .map(|s| Box::new(s) as Box<dyn Read + Send>);
        for stream in stdout.into_iter().chain(stderr) {
            let (worker, events) = (id.clone(), self.sender.clone());
            std::thread::spawn(move || connection::forward_output(stream, worker, &events));
        }
        connection::watch(child, Process::Worker { id, pid }, self.sender.clone());
        Ok(())
    }

    /// A spawned worker must have collected exactly what the collector did.
    fn check_collection(
        &self,
        w: usize,
        ours: &[CollectedItem],
        theirs: &[String],
    ) -> Result<(), RunError> {
        let ours: Vec<&str> = ours.iter().map(|i| i.nodeid.as_str()).collect();
        let theirs: Vec<&str> = theirs.iter().map(String::as_str).collect();
        if ours == theirs {
            return Ok(());
        }
        let only_ours = ours.iter().filter(|id| !theirs.contains(id));
        let only_theirs = theirs.iter().filter(|id| !ours.contains(id));
        let mut diff = String::new();
        for id in only_ours.take(10) {
            diff.push_str(&format!("\n  - {id}"));
        }
        for id in only_theirs.take(10) {
            diff.push_str(&format!("\n  + {id}"));
        }
        if diff.is_empty() {
            diff = "\n  (same node ids in a different order)".into();
        }
        Err(RunError::CollectionMismatch {
            worker: self.workers[w].id().to_owned(),
            diff,
        })
    }

    fn send(&mut self, commands: Vec<Command>) {
        for command in commands {
            let (worker, message) = match command {
                Command::Run { worker, indices } => (worker, ToPython::Run { indices }),
                Command::Shutdown { worker, discard } => (worker, ToPython::Shutdown { discard }),
                Command::Steal { worker, count } => (worker, ToPython::Steal { count }),
            };
            self.send_to(worker, &message);
        }
    }

    /// The run is over: finish the collector, write the reports, decide the exit code.
    fn finish(mut self, mut run: Run) -> Result<ExitCode, RunError> {
        if let Some(exit) = &run.exit {
            run.stop
                .get_or_insert_with(|| StopReason::Exit(exit.clone()));
        }
        if run.results.not_run() > 0 && run.stop.is_none() {
            run.stop = Some(StopReason::NoWorkers);
        }
        let status = run_status(&run);
        self.finish_collector(Some(status.code().into()))?;
        run.results
            .add_session_warnings(std::mem::take(&mut self.collector_warnings));
        let elapsed = self.started.elapsed();
        // A plugin can fail the run from the collector (pytest-cov's --cov-fail-under), or
        // raise in a hook there: pytest's internal error, as under xdist's controller.
        let collector_code = self.collector_exit.and_then(|s| s.code());
        let collector_failed = collector_code.is_some_and(|c| c != 0);
        let collector_broke = collector_code == Some(ExitCode::InternalError.code().into());
        // Killed by someone else: its end of the session (plugins' reports) is lost.
        let collector_killed =
            !self.collector_signalled && self.collector_exit.and_then(|s| s.signal()).is_some();
        let code = match (&run.stop, status) {
            (Some(StopReason::Interrupted), _) => ExitCode::Interrupted,
            _ if collector_killed || collector_broke => ExitCode::InternalError,
            (Some(StopReason::Exit(_)), _) => status,
            (_, ExitCode::Ok) if collector_failed => ExitCode::TestsFailed,
            _ => status,
        };
        if let Some(reporters) = self.reporters.take() {
            let end = RunEnd {
                stop: run.stop.as_ref(),
                plugin_summary: &self.plugin_summary,
                elapsed,
                code,
            };
            reporters.finish(&mut run.results, end)?;
        }
        if run.settings.usepdb && !matches!(run.stop, Some(StopReason::Interrupted)) {
            self.debug_failures(&run.results)?;
        }
        Ok(code)
    }

    /// Hands one event to every reporter (there are none before the workers are planned).
    fn report(&mut self, event: ReporterEvent<'_>) {
        if let Some(reporters) = self.reporters.as_mut() {
            reporters.report(event);
        }
    }

    /// One of shoal's own lines for stderr, through the reporters once they exist, so that it
    /// never tears the live view.
    fn notice(&mut self, text: &str) {
        match self.reporters.as_mut() {
            Some(reporters) => reporters.report(ReporterEvent::Notice(text)),
            None => eprintln!("{text}"),
        }
    }
}

/// How the run ends as its workers and the controller saw it, before the collector finishes
/// the session (which it is told, and which may still fail the run: see `Dispatcher::finish`).
fn run_status(run: &Run) -> ExitCode {
    match &run.stop {
        Some(StopReason::Interrupted) => ExitCode::Interrupted,
        Some(StopReason::InternalError(_)) => ExitCode::InternalError,
        Some(StopReason::Exit(exit)) => {
            ExitCode::from_pytest(exit.returncode.unwrap_or(PYTEST_EXIT_DEFAULT))
        }
        Some(StopReason::RunTimeout) => ExitCode::TestsFailed,
        _ if run.results.any_failed() || run.results.not_run() > 0 => ExitCode::TestsFailed,
        _ => ExitCode::Ok,
    }
}

/// pytest's exit status after `pytest.exit()` without a `returncode`: interrupted.
const PYTEST_EXIT_DEFAULT: i32 = 2;

/// A worker's `pytest.exit()` stops the run as pytest's stops, at once; one from the worker's
/// session teardown (its last test's teardown) comes, as in pytest, after every test, so the
/// other workers finish theirs.
fn session_exit(run: &mut Run, exit: SessionExit) -> Vec<Command> {
    let last_test = exit.last_test;
    run.exit.get_or_insert(exit.clone());
    if last_test || run.stop.is_some() {
        return Vec::new();
    }
    run.stop = Some(StopReason::Exit(exit));
    run.work.stop()
}

/// How a worker process ends after that `pytest.exit()` (a code of eight bits).
fn exit_status(exit: &SessionExit) -> WorkerEnd {
    WorkerEnd::Code(
        ExitCode::from_pytest(exit.returncode.unwrap_or(PYTEST_EXIT_DEFAULT))
            .code()
            .into(),
    )
}

/// A message's name, for errors: its `type` in the protocol.
fn message_kind(message: &FromPython) -> String {
    serde_json::to_value(message)
        .ok()
        .and_then(|v| v.get("type")?.as_str().map(str::to_owned))
        .unwrap_or_else(|| "?".into())
}
