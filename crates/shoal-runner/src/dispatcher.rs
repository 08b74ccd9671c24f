//! The run's one decision-maker: it reacts to [`Event`]s from every process in turn, asks the
//! scheduler what to send, records results and drives the terminal.
//!
//! A run has three stages: the collector collects and the controller decides how many workers
//! it wants; the workers are forked (or spawned) together and run tests; the collector is told
//! to finish and the summary is printed. Every way a process can end is an event, so the loop
//! always ends: a test whose worker died is reported, never waited for.

use std::{
    collections::HashMap,
    io::Read,
    path::PathBuf,
    process::{ExitStatus, Stdio},
    time::Instant,
};

use crossbeam_channel::{Receiver, Sender};
use shoal_protocol::{
    CollectedItem, FromPython, PytestSettings, Role, ToPython, WorkerIdentity, PROTOCOL_VERSION,
};

use crate::{
    connection::{self, ConnId, Event, Peer, Process},
    durations::DurationStore,
    options::{Dist, RunOptions, StartMethod},
    python::{Interpreter, PYTEST_MISSING_EXIT},
    reporter::{cache, events::EventLog, junit, StopReason, Terminal},
    results::{crash_report, Results, TestRecord},
    scheduler::{self, Command, Scheduler},
    ExitCode, RunError,
};

/// How a worker process ended.
#[derive(Debug, Clone, Copy)]
enum WorkerEnd {
    Code(i32),
    Signal(i32),
    Unknown,
}

impl WorkerEnd {
    fn from_status(status: ExitStatus) -> Self {
        use std::os::unix::process::ExitStatusExt;
        match (status.code(), status.signal()) {
            (Some(code), _) => Self::Code(code),
            (None, Some(signal)) => Self::Signal(signal),
            _ => Self::Unknown,
        }
    }

    fn describe(self) -> String {
        match self {
            Self::Code(code) => format!("exit code {code}"),
            Self::Signal(signal) => format!("signal {signal}"),
            Self::Unknown => "exit status unknown".into(),
        }
    }
}

#[derive(Debug)]
struct Worker {
    id: String,
    peer: Option<Peer>,
    /// The connection closed; `lost` holds what it had not finished.
    closed: bool,
    /// Its pytest session finished normally (`worker_done`): unfinished tests were discarded,
    /// not crashed on.
    done: bool,
    lost: Vec<usize>,
    end: Option<WorkerEnd>,
}

impl Worker {
    fn finished(&self) -> bool {
        self.closed && self.end.is_some()
    }
}

/// Whether to draw the live view: stdout is an interactive terminal.
fn live_view() -> bool {
    use std::io::IsTerminal;
    std::io::stdout().is_terminal() && std::env::var("TERM").map_or(true, |t| t != "dumb")
}

/// Time left, from the durations store: the expected seconds of unfinished tests shared by
/// the workers. Tests without history count as the average of those with.
struct Estimate {
    expected: Vec<Option<f64>>,
    remaining: f64,
    workers: usize,
    known: bool,
}

impl Estimate {
    fn new(store: Option<&DurationStore>, items: &[CollectedItem], workers: usize) -> Self {
        let expected: Vec<Option<f64>> = items
            .iter()
            .map(|item| store.and_then(|s| s.expected(&item.nodeid)))
            .collect();
        let known: Vec<f64> = expected.iter().flatten().copied().collect();
        let fallback = known.iter().sum::<f64>() / known.len().max(1) as f64;
        let expected: Vec<Option<f64>> = expected
            .into_iter()
            .map(|e| Some(e.unwrap_or(fallback)))
            .collect();
        Self {
            remaining: expected.iter().flatten().sum(),
            expected,
            workers: workers.max(1),
            known: !known.is_empty(),
        }
    }

    fn done(&mut self, index: usize) {
        if let Some(e) = self.expected.get_mut(index).and_then(Option::take) {
            self.remaining = (self.remaining - e).max(0.0);
        }
    }

    fn left(&self) -> Option<std::time::Duration> {
        self.known
            .then(|| std::time::Duration::from_secs_f64(self.remaining / self.workers as f64))
    }
}

/// Everything one run needs to start its Python processes.
pub struct Launch {
    pub interpreter: Interpreter,
    pub plugin: PathBuf,
    pub socket: PathBuf,
    pub options: RunOptions,
}

pub struct Dispatcher {
    launch: Launch,
    events: Receiver<Event>,
    sender: Sender<Event>,
    started: Instant,
    collector: Option<(ConnId, Peer)>,
    collector_exit: Option<ExitStatus>,
    conns: HashMap<ConnId, usize>,
    workers: Vec<Worker>,
    /// Whether pytest colours its output; spawned workers are told so explicitly.
    color: bool,
    /// `--report-json`; dropped with a warning if it cannot be written.
    events_log: Option<EventLog>,
}

/// What the collector handed over.
struct Collection {
    items: Vec<CollectedItem>,
    fork_unsafe: Option<String>,
    basetemp: Option<String>,
    settings: Box<PytestSettings>,
    warnings: Vec<shoal_protocol::Warning>,
}

impl Dispatcher {
    pub fn new(launch: Launch, events: Receiver<Event>, sender: Sender<Event>) -> Self {
        Self {
            launch,
            events,
            sender,
            started: Instant::now(),
            collector: None,
            collector_exit: None,
            conns: HashMap::new(),
            workers: Vec::new(),
            color: false,
            events_log: None,
        }
    }

    /// Writes one JSON event; the first failure is reported and ends the event log.
    fn log_event(
        &mut self,
        write: impl FnOnce(&mut EventLog) -> Result<(), crate::reporter::events::EventsError>,
    ) {
        if let Some(Err(e)) = self.events_log.as_mut().map(write) {
            eprintln!("shoal: warning: failed to {}", crate::error_chain(&e));
            self.events_log = None;
        }
    }

    pub fn run(mut self) -> Result<ExitCode, RunError> {
        let collection = match self.collect()? {
            Ok(collection) => collection,
            Err(code) => return Ok(code),
        };
        let resolved = self.launch.options.resolve(&collection.settings)?;
        self.color = collection.settings.color;
        let units = scheduler::units(resolved.dist, &collection.items);
        let requested = resolved.workers.resolve(resolved.maxprocesses);
        let distributed = requested > 0;
        let count = scheduler::useful_workers(resolved.dist, units.len(), requested);
        let start = match (self.launch.options.start, &collection.fork_unsafe) {
            (Some(StartMethod::Spawn), _) | (_, Some(_)) => StartMethod::Spawn,
            _ => StartMethod::Fork,
        };
        let mut terminal = Terminal::new(
            (*collection.settings).clone(),
            self.launch.options.failure_output,
        );
        let mut store = collection.settings.cache_dir.as_ref().map(|dir| {
            let rootdir = collection
                .settings
                .rootdir
                .as_deref()
                .map(std::path::Path::new);
            DurationStore::load(DurationStore::path_in(std::path::Path::new(dir)), rootdir)
        });
        let mut estimate = Estimate::new(store.as_ref(), &collection.items, count);
        let runs_per_test = if resolved.dist == Dist::Each {
            count
        } else {
            1
        };
        let mut results = Results::new(collection.items.len(), runs_per_test);
        results.add_session_warnings(collection.warnings.clone());
        let total = collection.items.len() * runs_per_test;
        let start_label = match (&start, &collection.fork_unsafe) {
            (StartMethod::Fork, _) => "fork".to_owned(),
            (StartMethod::Spawn, Some(reason)) => format!("spawn: {reason}"),
            (StartMethod::Spawn, None) => "spawn".to_owned(),
        };
        let ids: Vec<String> = (0..count).map(|n| format!("gw{n}")).collect();
        terminal.start(&ids, total, &start_label, live_view());
        if let Some(target) = &self.launch.options.report_json {
            self.events_log = Some(EventLog::open(target)?);
        }
        let testrunuid = uuid::Uuid::new_v4().simple().to_string();
        self.log_event(|log| log.run_start(count, total, &testrunuid));
        self.start_workers(count, distributed, start, &collection, &testrunuid)?;

        let mut scheduler = Scheduler::new(resolved.dist, units, count);
        let maxfail = collection.settings.maxfail;
        let mut failures = 0;
        let mut stop: Option<StopReason> = None;
        while !self.workers.iter().all(Worker::finished) {
            let Ok(event) = self.events.recv() else { break };
            let commands = match event {
                Event::Connected { conn, hello, peer } => {
                    self.introduce(conn, hello, peer)?;
                    Vec::new()
                }
                Event::Message { conn, message } => {
                    let Some(&w) = self.conns.get(&conn) else {
                        self.collector_message(message);
                        continue;
                    };
                    match message {
                        FromPython::Ready { collection: theirs } => {
                            if let Some(theirs) = theirs {
                                self.check_collection(w, &collection.items, &theirs)?;
                            }
                            scheduler.worker_ready(w)
                        }
                        FromPython::TestDone {
                            index,
                            headline,
                            reports,
                            warnings,
                            junit,
                        } => {
                            failures += reports
                                .iter()
                                .filter(|r| r.outcome == "failed" && r.wasxfail.is_none())
                                .count();
                            let record = TestRecord {
                                index,
                                nodeid: collection.items[index].nodeid.clone(),
                                worker: self.workers[w].id.clone(),
                                headline,
                                reports,
                                warnings,
                                junit,
                            };
                            terminal.test_done(&record);
                            self.log_event(|log| log.test(&record));
                            estimate.done(index);
                            results.record(record);
                            let mut commands = scheduler.test_done(w, index);
                            if maxfail > 0 && failures >= maxfail && stop.is_none() {
                                stop = Some(StopReason::MaxFail(maxfail));
                                commands = scheduler.stop();
                            }
                            commands
                        }
                        FromPython::Released { indices } => scheduler.released(w, indices),
                        FromPython::WorkerDone {
                            junit_properties,
                            warnings,
                            ..
                        } => {
                            results.add_junit_properties(junit_properties);
                            results.add_session_warnings(warnings);
                            self.workers[w].done = true;
                            Vec::new()
                        }
                        other => {
                            return Err(RunError::Unexpected {
                                who: self.workers[w].id.clone(),
                                message: format!("{other:?}"),
                            })
                        }
                    }
                }
                Event::Closed { conn, error } => {
                    if let Some(&w) = self.conns.get(&conn) {
                        if let Some(error) = error {
                            eprintln!(
                                "shoal: failed to read from worker '{}': {error}",
                                self.workers[w].id
                            );
                        }
                        self.workers[w].closed = true;
                        self.workers[w].peer = None;
                        self.workers[w].lost = scheduler.worker_lost(w);
                    }
                    Vec::new()
                }
                Event::Output { worker, bytes } => {
                    terminal.worker_output(&worker, &bytes);
                    Vec::new()
                }
                Event::OutputClosed { worker } => {
                    terminal.output_closed(&worker);
                    Vec::new()
                }
                Event::Exited {
                    process: Process::Worker(id),
                    status,
                } => {
                    self.worker_ended(&id, WorkerEnd::from_status(status));
                    Vec::new()
                }
                Event::Exited {
                    process: Process::Collector,
                    status,
                } => {
                    self.collector_exit = Some(status);
                    // Forked workers die with their parent; nothing more will say how.
                    for worker in &mut self.workers {
                        worker.end.get_or_insert(WorkerEnd::Unknown);
                        if worker.peer.is_none() {
                            worker.closed = true;
                        }
                    }
                    Vec::new()
                }
            };
            self.send(commands);
            for w in 0..self.workers.len() {
                self.account_lost(w, &collection.items, &mut results, &mut terminal);
                let running = scheduler.pending(w).next();
                terminal.running(w, running.map(|i| collection.items[i].nodeid.as_str()));
            }
            terminal.progress(estimate.left());
        }
        if results.not_run() > 0 && stop.is_none() {
            stop = Some(StopReason::NoWorkers);
        }
        self.finish_collector();
        let elapsed = self.started.elapsed();
        let settings = &collection.settings;
        if let Some(junit) = &settings.junit {
            junit::write(junit, &results, elapsed)?;
        }
        if let Some(dir) = &settings.cache_dir {
            if let Err(e) = cache::update_lastfailed(std::path::Path::new(dir), &results) {
                eprintln!("shoal: warning: failed to {}", crate::error_chain(&e));
            }
        }
        if let Some(Err(e)) = store.as_mut().map(|s| s.update(&results)) {
            eprintln!("shoal: warning: failed to {}", crate::error_chain(&e));
        }
        terminal.summary(&results, stop.as_ref(), elapsed);
        let code = if results.any_failed() || results.not_run() > 0 {
            ExitCode::TestsFailed
        } else {
            ExitCode::Ok
        };
        self.log_event(|log| log.run_end(&results, code as i32, elapsed));
        Ok(code)
    }

    /// Starts the collector and waits for its collection; `Err(code)` when pytest finished by
    /// itself (collect-only, collection errors, nothing collected) and printed everything.
    fn collect(&mut self) -> Result<Result<Collection, ExitCode>, RunError> {
        let Launch {
            interpreter,
            plugin,
            socket,
            options,
        } = &self.launch;
        let mut command =
            interpreter.plugin_command(plugin, socket, Role::Collector, None, &options.pytest_args);
        if options.start == Some(StartMethod::Spawn) {
            command.env("SHOAL_START", "spawn");
        }
        let child = command.spawn().map_err(|source| RunError::Spawn {
            python: interpreter.path.clone(),
            source,
        })?;
        connection::watch(child, Process::Collector, self.sender.clone());
        loop {
            match self.events.recv().expect("the dispatcher holds a sender") {
                Event::Connected { conn, hello, peer } => self.introduce(conn, hello, peer)?,
                Event::Message {
                    message:
                        FromPython::Collected {
                            items,
                            fork_unsafe,
                            basetemp,
                            settings,
                            warnings,
                        },
                    ..
                } => {
                    return Ok(Ok(Collection {
                        items,
                        fork_unsafe,
                        basetemp,
                        settings,
                        warnings,
                    }))
                }
                Event::Message { message, .. } => {
                    return Err(RunError::Unexpected {
                        who: "the collector".into(),
                        message: format!("{message:?}"),
                    })
                }
                Event::Closed {
                    error: Some(source),
                    ..
                } => {
                    return Err(RunError::Protocol {
                        who: "the collector".into(),
                        source,
                    })
                }
                Event::Closed { error: None, .. }
                | Event::Output { .. }
                | Event::OutputClosed { .. } => {}
                Event::Exited { status, .. } => {
                    return match status.code() {
                        Some(PYTEST_MISSING_EXIT) => Err(RunError::PytestMissing {
                            python: self.launch.interpreter.path.clone(),
                        }),
                        Some(code) => Ok(Err(ExitCode::from_pytest(code))),
                        None => Err(RunError::CollectorDied {
                            status: WorkerEnd::from_status(status).describe(),
                        }),
                    }
                }
            }
        }
    }

    fn introduce(&mut self, conn: ConnId, hello: FromPython, peer: Peer) -> Result<(), RunError> {
        let FromPython::Hello {
            protocol,
            role,
            worker,
            ..
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
                let Some(w) = self.workers.iter().position(|x| x.id == id) else {
                    return Err(RunError::Unexpected {
                        who: format!("connection {conn}"),
                        message: format!("hello from unknown worker {id:?}"),
                    });
                };
                self.conns.insert(conn, w);
                self.workers[w].peer = Some(peer);
                self.log_event(|log| log.worker_start(&id));
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

    fn collector_message(&mut self, message: FromPython) {
        match message {
            FromPython::WorkerExited {
                worker,
                code,
                signal,
            } => {
                let end = match (code, signal) {
                    (_, Some(signal)) => WorkerEnd::Signal(signal),
                    (Some(code), None) => WorkerEnd::Code(code),
                    (None, None) => WorkerEnd::Unknown,
                };
                self.worker_ended(&worker, end);
            }
            FromPython::Forked { .. } => {}
            other => eprintln!("shoal: ignored unexpected message from the collector: {other:?}"),
        }
    }

    fn worker_ended(&mut self, id: &str, end: WorkerEnd) {
        self.log_event(|log| log.worker_stop(id, &end.describe()));
        if let Some(worker) = self.workers.iter_mut().find(|w| w.id == id) {
            worker.end = Some(end);
            if worker.peer.is_none() {
                // It never connected, or its connection is already gone.
                worker.closed = true;
            }
        }
    }

    /// Reports the test a dead worker was running as failed; the rest of its queue is lost.
    fn account_lost(
        &mut self,
        w: usize,
        items: &[CollectedItem],
        results: &mut Results,
        terminal: &mut Terminal,
    ) {
        let worker = &mut self.workers[w];
        let Some(end) = worker.end else { return };
        if worker.lost.is_empty() || !worker.closed {
            return;
        }
        if worker.done {
            worker.lost.clear(); // discarded after --maxfail: counted as not run
            return;
        }
        let running = worker.lost.remove(0);
        worker.lost.clear();
        let nodeid = items[running].nodeid.clone();
        let message = format!(
            "worker '{}' crashed while running '{nodeid}' ({})",
            worker.id,
            end.describe()
        );
        let record = TestRecord {
            index: running,
            nodeid,
            worker: worker.id.clone(),
            headline: Some(
                items[running]
                    .nodeid
                    .rsplit("::")
                    .next()
                    .unwrap_or("")
                    .to_owned(),
            ),
            reports: vec![crash_report(message)],
            warnings: Vec::new(),
            junit: None,
        };
        terminal.test_done(&record);
        self.log_event(|log| log.test(&record));
        results.record(record);
    }

    fn start_workers(
        &mut self,
        count: usize,
        distributed: bool,
        start: StartMethod,
        collection: &Collection,
        testrunuid: &str,
    ) -> Result<(), RunError> {
        for n in 0..count {
            let identity = WorkerIdentity {
                workerid: format!("gw{n}"),
                workercount: count,
                testrunuid: testrunuid.to_owned(),
                mainargv: self.launch.options.mainargv.clone(),
                distributed,
                basetemp: collection.basetemp.clone(),
            };
            self.workers.push(Worker {
                id: identity.workerid.clone(),
                peer: None,
                closed: false,
                done: false,
                lost: Vec::new(),
                end: None,
            });
            match start {
                StartMethod::Fork => {
                    let (_, collector) = self.collector.as_mut().expect("the collector connected");
                    collector
                        .send(&ToPython::Fork { identity })
                        .map_err(|source| RunError::Protocol {
                            who: "the collector".into(),
                            source,
                        })?;
                }
                StartMethod::Spawn => self.spawn_worker(identity)?,
            }
        }
        Ok(())
    }

    fn spawn_worker(&mut self, identity: WorkerIdentity) -> Result<(), RunError> {
        let Launch {
            interpreter,
            plugin,
            socket,
            options,
        } = &self.launch;
        let mut args = options.pytest_args.clone();
        if let (true, Some(base)) = (identity.distributed, &identity.basetemp) {
            args.push(format!("--basetemp={base}/popen-{}", identity.workerid));
        }
        if self.color {
            args.push("--color=yes".into()); // its output is a pipe, but ends on our terminal
        }
        let id = identity.workerid.clone();
        let mut child = interpreter
            .plugin_command(plugin, socket, Role::Worker, Some(&identity), &args)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|source| RunError::Spawn {
                python: interpreter.path.clone(),
                source,
            })?;
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
        connection::watch(child, Process::Worker(id), self.sender.clone());
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
        let only_ours: Vec<&str> = ours
            .iter()
            .filter(|id| !theirs.contains(id))
            .copied()
            .collect();
        let only_theirs: Vec<&str> = theirs
            .iter()
            .filter(|id| !ours.contains(id))
            .copied()
            .collect();
        let mut diff = String::new();
        for id in only_ours.iter().take(10) {
            diff.push_str(&format!("\n  - {id}"));
        }
        for id in only_theirs.iter().take(10) {
            diff.push_str(&format!("\n  + {id}"));
        }
        if diff.is_empty() {
            diff = "\n  (same node ids in a different order)".into();
        }
        Err(RunError::CollectionMismatch {
            worker: self.workers[w].id.clone(),
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
            if let Some(peer) = self.workers[worker].peer.as_mut() {
                // A failed send means the worker died; its Closed event does the accounting.
                let _ = peer.send(&message);
            }
        }
    }

    /// Tells the collector the run is over and waits for it to finish pytest's session.
    fn finish_collector(&mut self) {
        if let Some((_, peer)) = self.collector.as_mut() {
            let _ = peer.send(&ToPython::Stop);
        }
        while self.collector_exit.is_none() {
            match self.events.recv() {
                Ok(Event::Exited {
                    process: Process::Collector,
                    status,
                }) => self.collector_exit = Some(status),
                Ok(_) => {}
                Err(_) => break,
            }
        }
    }
}
