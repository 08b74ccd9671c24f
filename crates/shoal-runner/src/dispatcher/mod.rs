//! The run's one event loop: it reacts to [`Event`]s from every process in turn and routes
//! each to the part that owns it.
//!
//! A run has three stages: the collector collects and the controller decides how many workers
//! it wants ([`Dispatcher::plan`]); the workers are forked (or spawned) together and run tests;
//! the collector is told to finish and the summary is printed. The parts:
//!
//! - [`pool`] owns every worker process: starting, replacing, stopping in stages, and telling
//!   when one is gone ([`pool::WorkerLost`]);
//! - [`crate::work`] decides which test each worker runs next;
//! - [`run`] decides what a finished test or a lost worker means (records, retries,
//!   `--maxfail`, crashes blamed on a test) and the exit code;
//! - [`validate`] checks every message from Python before anything acts on it;
//! - the reporters ([`crate::reporter`]) hear everything worth showing or writing.
//!
//! Every way a process can end is an event, and every deadline (timeouts, kill grace periods)
//! bounds the wait for the next one, so the loop always ends: a test whose worker died is
//! reported, never waited for.

mod collector;
mod estimate;
mod foreground;
mod pool;
mod run;
mod run_once;
mod triage;
mod validate;

use std::{
    collections::HashMap,
    os::unix::process::ExitStatusExt,
    path::{Path, PathBuf},
    process::ExitStatus,
    time::{Duration, Instant},
};

use crossbeam_channel::{Receiver, RecvTimeoutError, Sender};
use shoal_protocol::{
    CollectedItem, FromPython, Role, ToPython, Warning, WorkerIdentity, PROTOCOL_VERSION,
};

pub use self::validate::{drive_bookkeeping, MAX_SECONDS};
use self::{
    collector::{collector_end, Collection},
    estimate::Estimate,
    pool::{Pool, Replacement, Starter, WorkerEnd},
    run::{Outlet, Run, TestDone},
    run_once::RunOnceFixtures,
};
use crate::{
    connection::{ConnId, Event, Peer, Process},
    durations::{DurationStore, Expected},
    options::{Dist, RunOptions, StartMethod},
    python::Interpreter,
    queue::{QueueSource, QueueSpec, QueueSpecError, Seat},
    record::{RunFacts, RunRecord},
    replay::{bisect::Bisect, Plan, Replay, ReplayArgs, ReplayError},
    reporter::{
        events::EventLog, record::Recorder, timeline::Timeline, Outputs, ReporterEvent, Reporters,
        RunEnd, RunStart, Terminal,
    },
    results::{Results, StopReason},
    shard::{manifest, ShardChoice, ShardSplit},
    signals,
    work::{
        self,
        fixed::{FixedSource, Rounds},
        Command, Scheduler,
    },
    ExitCode, RunError,
};

/// Everything one run needs to start its Python processes.
#[derive(Clone)]
pub struct Launch {
    pub interpreter: Interpreter,
    pub plugin: PathBuf,
    pub socket: PathBuf,
    pub options: RunOptions,
    /// `--shard`: this CI machine's share of the suite.
    pub shard: Option<ShardChoice>,
    /// `--queue`: the queue this node shares with the build's other nodes.
    pub queue: Option<QueueSpec>,
    /// `shoal replay` or `shoal bisect`: the recorded sequence to run again.
    pub replay: Option<ReplayArgs>,
}

impl Launch {
    /// A command that runs shoal's plugin in `role` with pytest's `args`.
    fn command(
        &self,
        role: Role,
        identity: Option<&WorkerIdentity>,
        args: &[String],
    ) -> std::process::Command {
        let mut command =
            self.interpreter
                .plugin_command(&self.plugin, &self.socket, role, identity, args);
        if let Some(choice) = &self.shard {
            // Conftests tell the shards of one CI run apart by it (a database per machine).
            command.env("SHOAL_SHARD", choice.shard.to_string());
        }
        command
    }
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
    /// Every worker; empty until they are planned.
    pool: Pool,
    /// Every reporter, from the moment the workers are planned.
    reporters: Option<Reporters>,
    /// What the collector's plugins print in pytest's terminal summary.
    plugin_summary: String,
    /// Warnings the collector raised after the collection, counted in the final line.
    collector_warnings: Vec<Warning>,
    /// `--triage`'s rounds run: they are not the run's, so the collector's plugins do not
    /// hear of them.
    triaging: bool,
}

impl Dispatcher {
    pub fn new(launch: Launch, events: Receiver<Event>, sender: Sender<Event>) -> Self {
        let starter = Starter {
            method: StartMethod::Fork,
            launch: launch.clone(),
            color: false,
            sender: sender.clone(),
        };
        Self {
            pool: Pool::new(Vec::new(), starter, 0),
            launch,
            events,
            sender,
            started: Instant::now(),
            collector: None,
            collector_pid: None,
            collector_exit: None,
            collector_signalled: false,
            reporters: None,
            plugin_summary: String::new(),
            collector_warnings: Vec::new(),
            triaging: false,
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
        self.drive(&mut run)?;
        self.triage(&mut run)?;
        self.finish(run)
    }

    /// Routes events until every worker is gone and the work source waits for nothing more.
    fn drive(&mut self, run: &mut Run) -> Result<(), RunError> {
        while !self.pool.all_finished() || run.work.waiting() {
            if self.events.is_empty() {
                // What the events handled so far reported shows before the wait for more, or
                // (at most FLUSH_EVERY later) while the wait goes on.
                if let Some(reporters) = self.reporters.as_mut() {
                    reporters.flush_soon();
                }
            }
            match self.next_event(run) {
                Ok(event) => self.handle(event, run)?,
                Err(RecvTimeoutError::Timeout) => self.on_deadline(run),
                Err(RecvTimeoutError::Disconnected) => break,
            }
            self.after_event(run)?;
        }
        Ok(())
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
            .pool
            .deadline(|index| run.timeout_of(index))
            .into_iter()
            .chain(run.run_deadline)
            .chain(run.work.deadline())
            .chain(self.reporters.as_ref().and_then(Reporters::flush_due))
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

    /// Decides workers, schedule and reporters once the collection is known, and starts the
    /// workers.
    fn plan(&mut self, collection: Collection) -> Result<Run, RunError> {
        let options = self.launch.options.clone();
        let settings = collection.settings;
        let resolved = options.resolve(Some(&settings))?;
        let dist = resolved.dist.value;
        let mut store = settings.cache_dir.as_ref().map(|dir| {
            let rootdir = settings.rootdir.as_deref().map(Path::new);
            DurationStore::load(DurationStore::path_in(Path::new(dir)), rootdir)
        });
        // Without pytest's cache, a committed .test_durations still informs the run.
        let seeded = match (&store, &settings.rootdir) {
            (None, Some(rootdir)) => Some(DurationStore::from_pytest_split(Path::new(rootdir))),
            _ => None,
        };
        let expected = Expected::new(store.as_ref().or(seeded.as_ref()), &collection.items);
        if let (Some(_), Dist::Each) = (&self.launch.queue, dist) {
            return Err(QueueSpecError::Dist("each").into());
        }
        let mut units = work::units(dist, &collection.items, settings.loadscope_reorder);
        let shard = match &self.launch.shard {
            Some(choice) => {
                let split = ShardSplit::new(choice, dist, &collection.items, &expected)?;
                split.keep_own(&mut units);
                Some(split)
            }
            None => None,
        };
        let requested = resolved
            .workers
            .value
            .resolve(resolved.maxprocesses.value, settings.auto_num_workers);
        let replay = self
            .launch
            .replay
            .as_ref()
            .map(|args| {
                let cache_dir = settings.cache_dir.as_deref().map(Path::new);
                Plan::resolve(args, cache_dir, &collection.items)
            })
            .transpose()?;
        let count = match (&shard, &replay) {
            (Some(split), _) if split.owned.is_empty() => 0,
            // A replay is one process's sequence; a bisect's rounds share the workers asked for.
            (_, Some(_)) => requested.max(1),
            _ => work::useful_workers(dist, units.len(), requested),
        };
        // A shuffle wins over the history's order: the user asked for it, to find what
        // depends on order. The history still sizes `load`'s chunks.
        let shuffle = options.shuffle_seed(settings.randomly_seed, work::new_seed)?;
        let units = match shuffle {
            Some(seed) => work::shuffle(units, seed),
            None => work::order(
                dist,
                units,
                &collection.items,
                &expected,
                count,
                settings.loadscope_reorder,
            ),
        };
        let mut fork_unsafe = collection.fork_unsafe.clone();
        if let Some(place) = collection.identity_read.as_ref().filter(|_| requested > 0) {
            fork_unsafe.get_or_insert_with(|| format!("{place} before the workers exist"));
        }
        let start = match (options.start, &fork_unsafe) {
            (Some(StartMethod::Spawn), _) | (_, Some(_)) => StartMethod::Spawn,
            _ => StartMethod::Fork,
        };
        let max_restarts = resolved.max_worker_restart.value.unwrap_or(4 * count);
        let starter = Starter {
            method: start,
            launch: self.launch.clone(),
            color: settings.color,
            sender: self.sender.clone(),
        };
        let mut estimate = Estimate::new(&expected, count);
        let store_problems = store.as_mut().map(DurationStore::take_problems);
        let runs_per_test = if dist == Dist::Each { count } else { 1 };
        let mut results = Results::new(collection.items.len(), runs_per_test);
        results.add_session_warnings(collection.warnings);
        results.add_collect_errors(collection.collect_errors, collection.collect_junit);
        let mut total = collection.items.len() * runs_per_test;
        if let Some(plan) = &replay {
            results.expect_only(match self.launch.replay.as_ref().and_then(|a| a.bisect) {
                Some(_) => &[], // its rounds run tests again and again, on purpose
                None => &plan.sequence,
            });
            for index in 0..collection.items.len() {
                estimate.done(index);
            }
            total = plan.sequence.len();
        }
        if let Some(split) = &shard {
            results.expect_only(&split.owned);
            for index in (0..collection.items.len()).filter(|&i| !split.owns(i)) {
                estimate.done(index);
            }
            total = split.owned.len();
        }
        let start_label = match (&start, &fork_unsafe) {
            (StartMethod::Fork, _) => "fork".to_owned(),
            (StartMethod::Spawn, Some(reason)) => format!("spawn: {reason}"),
            (StartMethod::Spawn, None) => "spawn".to_owned(),
        };
        let events_on_stdout = options.report_json.as_deref() == Some("-");
        let terminal = Terminal::new(
            (*settings).clone(),
            resolved.failure_output.value,
            events_on_stdout,
        );
        let events = options
            .report_json
            .as_deref()
            .map(EventLog::open)
            .transpose()?;
        // The nodes of one queue build are one run: they share its uid.
        let testrunuid = settings
            .testrunuid
            .clone()
            .or_else(|| self.launch.queue.as_ref().map(|q| q.testrunuid()))
            .unwrap_or_else(|| uuid::Uuid::new_v4().simple().to_string());
        // A replay re-runs part of a recorded run: it keeps neither a record, nor durations,
        // nor `lastfailed` of its own.
        let kept = replay.is_none();
        let store = store.filter(|_| kept);
        let record = settings.cache_dir.as_ref().filter(|_| kept).map(|dir| {
            let facts = RunFacts {
                testrunuid: &testrunuid,
                python_version: settings.python_version.clone(),
                pytest_version: settings.pytest_version.clone(),
                workerinput: &collection.workerinput,
                shuffle,
                dist: dist.to_string(),
                workers: count,
                distributed: requested > 0,
                argv: options.mainargv.clone(),
            };
            Recorder::new(Path::new(dir), RunRecord::new(facts))
        });
        let outputs = Outputs {
            events,
            timeline: options.timeline.clone().map(Timeline::new),
            junit: settings.junit.clone(),
            cache_dir: settings
                .cache_dir
                .as_ref()
                .filter(|_| kept)
                .map(PathBuf::from),
            durations: store,
            shard: shard
                .as_ref()
                .map(|split| split.manifest_base(&collection.items)),
            record,
        };
        self.reporters = Some(Reporters::new(terminal, outputs));
        for problem in store_problems.into_iter().flatten() {
            self.notice(&problem);
        }
        if let Some(split) = &shard {
            if settings.junit.is_none() {
                self.notice("shoal: note: --shard without --junitxml leaves nothing for `shoal merge` to read");
            }
            if split.owned.is_empty() {
                self.notice(&format!(
                    "shoal: shard {} has no tests: the split of {} left it empty, which is not an error",
                    split.shard, collection.items.len()
                ));
            }
        }
        let interpreter = self.launch.interpreter.clone();
        self.report(ReporterEvent::RunStarted {
            start: RunStart {
                workers: count,
                tests: total,
                start_method: &start_label,
                interpreter: &interpreter,
                scheduler: dist.xdist_scheduler(),
                shard: shard
                    .as_ref()
                    .map(|split| split.start(collection.items.len())),
                known_durations: expected.known,
                shuffle,
            },
            testrunuid: &testrunuid,
        });
        let timeouts = options.timeout.is_some()
            || settings.timeout.is_some()
            || collection.items.iter().any(|i| i.timeout.is_some());
        let run_dir = self.launch.socket.parent().map(Path::to_path_buf);
        let mut workerinput = collection.workerinput.clone();
        let (workercount, distributed) = match &replay {
            Some(plan) => {
                // A replay's order is the record's; only pytest-randomly's seed reseeds tests.
                if let Some(seed) = plan
                    .record
                    .seed
                    .as_ref()
                    .filter(|s| s.source == "pytest-randomly")
                {
                    workerinput.insert("randomly_seed".into(), seed.value.clone());
                }
                (plan.record.workers, plan.record.distributed)
            }
            None => (count, requested > 0),
        };
        let identities = (0..count).map(|n| {
            let workerid = match &replay {
                // One process: the recorded one's id.
                Some(plan) if count == 1 => plan.worker.clone(),
                _ => format!("gw{n}"),
            };
            WorkerIdentity {
                stack_file: run_dir
                    .as_ref()
                    .map(|d| d.join(format!("stack-{workerid}")).display().to_string()),
                state_file: run_dir
                    .as_ref()
                    .map(|d| d.join(format!("state-{workerid}")).display().to_string()),
                workerid,
                workercount,
                testrunuid: testrunuid.clone(),
                mainargv: options.mainargv.clone(),
                distributed,
                basetemp: collection.basetemp.clone(),
                // `-vv` shows each test's node id as it starts; the timeline draws it from
                // then.
                report_starts: timeouts || settings.verbose > 1 || options.timeline.is_some(),
                replay: collection.replay,
                steals: dist == Dist::WorkSteal,
                workerinput: workerinput.clone(),
                max_tests: options.max_worker_tests.filter(|&n| n > 0),
                max_rss: options.max_worker_rss.filter(|&n| n > 0),
                width: Some(settings.width),
                detect_leaks: options.detect_leaks(),
            }
        });
        let identities: Vec<WorkerIdentity> = identities.collect();
        let ids = identities.iter().map(|i| i.workerid.clone()).collect();
        self.pool = Pool::new(identities, starter, max_restarts);
        let constraints = work::Constraints::from_items(&collection.items);
        let history = (expected.known > 0).then_some(expected.seconds);
        let work: Box<dyn work::WorkSource> = match (self.launch.queue.clone(), &replay) {
            (_, Some(plan)) => {
                let rounds: Box<dyn Rounds> =
                    match self.launch.replay.as_ref().and_then(|a| a.bisect) {
                        Some(max_rounds) => {
                            Box::new(Bisect::new(plan, &collection.items, max_rounds).ok_or_else(
                                || ReplayError::NothingBefore {
                                    test: plan.target.clone().unwrap_or_default(),
                                    run: plan.record.run_id.clone(),
                                },
                            )?)
                        }
                        None => Box::new(Replay::new(plan)),
                    };
                Box::new(FixedSource::new(rounds, ids))
            }
            (Some(spec), None) => {
                // The queue hands out units one batch at a time: the local scheduler spreads
                // each batch as `load` does (worksteal's up-front split has nothing to split).
                let local_dist = match dist {
                    Dist::WorkSteal => Dist::Load,
                    dist => dist,
                };
                let mut local = Scheduler::new(local_dist, Vec::new(), count, constraints)
                    .with_modules(&collection.items);
                if let Some(seconds) = history {
                    local = local.with_history(seconds);
                }
                let (source, seat) = QueueSource::join(
                    spec,
                    node_name(),
                    dist,
                    &collection.items,
                    &units,
                    count,
                    local,
                    &settings,
                )?;
                let role = match seat {
                    Seat::Leader => format!("started it with {} units", units.len()),
                    Seat::Follower => "joined it".to_owned(),
                };
                self.notice(&format!(
                    "shoal: queue {} build {}: node {} {role}",
                    source.url(),
                    source.build(),
                    source.node()
                ));
                results.expect_only(&[]);
                for index in 0..collection.items.len() {
                    estimate.done(index);
                }
                Box::new(source)
            }
            (None, None) => {
                let mut scheduler =
                    Scheduler::new(dist, units, count, constraints).with_modules(&collection.items);
                if let Some(seconds) = history {
                    scheduler = scheduler.with_history(seconds);
                }
                if shuffle.is_some() {
                    scheduler = scheduler.reproducible();
                }
                Box::new(match start {
                    StartMethod::Fork => scheduler.in_worker_order(),
                    StartMethod::Spawn => scheduler,
                })
            }
        };
        let run = Run {
            estimate,
            work,
            items: collection.items,
            settings,
            results,
            retries: options.retries(),
            timeout: options.timeout,
            failures: 0,
            stop: None,
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
            let collector = self.collector.as_mut().map(|(_, peer)| peer);
            self.pool.start(w, collector)?;
        }
        Ok(run)
    }

    fn handle(&mut self, event: Event, run: &mut Run) -> Result<(), RunError> {
        let commands = match event {
            Event::Connected { conn, hello, peer } => {
                self.introduce(conn, hello, peer)?;
                Vec::new()
            }
            Event::Message { conn, message } => match self.pool.slot_of(conn) {
                Some(w) => {
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
                if let (Some(w), Some(error)) = (self.pool.slot_of(conn), error) {
                    self.notice(&format!(
                        "shoal: failed to read from worker '{}': {}; stopping it",
                        self.pool.worker(w).id(),
                        crate::error_chain(&error)
                    ));
                    self.pool.worker_mut(w).kill_now();
                }
                self.pool.closed(conn, |w| run.work.worker_lost(w));
                Vec::new()
            }
            Event::Output { worker, bytes } => {
                self.report(ReporterEvent::WorkerOutput {
                    worker: &worker,
                    bytes: &bytes,
                });
                self.pool.output(&worker, &bytes);
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
                if self.pool.method() == StartMethod::Fork && !self.pool.all_finished() {
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
                self.pool.collector_exited();
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
                let worker = self.pool.worker_mut(w);
                worker.running = Some((index, Instant::now()));
                let id = worker.id().to_owned();
                self.report(ReporterEvent::TestStarted {
                    worker: &id,
                    nodeid: &run.items[index].nodeid,
                });
                Vec::new()
            }
            FromPython::TestPartial { index, reports } => {
                self.pool.worker_mut(w).partial = Some((index, reports));
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
                recycle,
                leaks,
            } => {
                let worker = self.pool.worker_mut(w);
                worker.test_finished();
                if let Some(why) = recycle {
                    // Before the work source hears of the test, so it hands this worker nothing.
                    worker.recycling(why);
                    run.work.retire(w);
                }
                let id = worker.id().to_owned();
                let done = TestDone {
                    index,
                    headline,
                    reports,
                    warnings,
                    junit,
                    exit,
                    replay,
                    leaks,
                };
                run.test_done(w, &id, done, &mut self.outlet())
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
                let worker = self.pool.worker(w).id().to_owned();
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
                self.pool.worker_mut(w).session_done();
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
            self.pool.worker(w).id()
        ));
        self.pool.worker_mut(w).kill_now();
    }

    fn send_replies(&mut self, replies: run_once::Replies) {
        for (w, message) in replies {
            self.pool.send(w, &message);
        }
    }

    /// Releases run-once owners once every other worker is done, and fails the waiters of a
    /// setup whose worker died.
    fn run_once_housekeeping(&mut self, run: &mut Run) {
        let pool = &self.pool;
        let replies = run.run_once.housekeeping(
            pool.len(),
            |w| pool.worker(w).is_closed(),
            |w| pool.worker(w).state.session_done() || pool.worker(w).finished(),
            |w| pool.worker(w).id().to_owned(),
        );
        self.send_replies(replies);
    }

    /// After every event: account for dead workers, replace them, show who runs what.
    fn after_event(&mut self, run: &mut Run) -> Result<(), RunError> {
        if let Some(error) = run.work.take_error() {
            self.notice(&format!("shoal: {error}"));
            // After Ctrl-C or -x the run ends as they say; the work that was not given back
            // is the other nodes' once its leases expire.
            run.stop.get_or_insert(StopReason::WorkLost(error));
            let commands = run.work.stop();
            self.send(commands);
        }
        self.run_once_housekeeping(run);
        self.pool.advance_kills(Instant::now());
        for lost in self.pool.take_lost() {
            let (w, session_done) = (lost.slot, lost.session_done);
            if !session_done {
                let error = format!("worker '{}' crashed ({})", lost.worker, lost.end.describe());
                self.node_down(w, Err(error));
            }
            let commands = run.worker_lost(lost, &mut self.outlet());
            self.send(commands);
            if !session_done && run.stop.is_none() {
                self.tell_crash(w);
            }
        }
        while let Some(w) = run.work.needs_worker() {
            if !self.pool.worker(w).finished() {
                break; // its last process has not ended yet: after the event that says so
            }
            let gone = self.collector_gone();
            let recycled = self.pool.worker(w).recycled();
            let collector = self.collector.as_mut().map(|(_, peer)| peer);
            if gone || !self.pool.replace(w, collector)? {
                if run.work.waiting() {
                    // No worker can take this node's work (crashes spent the restart budget,
                    // or the collector is gone): it goes back to the shared queue.
                    run.stop.get_or_insert(StopReason::NoWorkers);
                    let commands = run.work.stop();
                    self.send(commands);
                }
                break;
            }
            if let Some(recycled) = recycled {
                let worker = self.pool.worker(w).id().to_owned();
                let max_rss = self.launch.options.max_worker_rss;
                self.report(ReporterEvent::WorkerRecycled {
                    worker: &worker,
                    tests: recycled.tests,
                    why: recycled.why,
                    max_rss,
                });
            }
            run.work.revive(w);
        }
        for w in 0..self.pool.len() {
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

    fn collector_gone(&self) -> bool {
        self.pool.method() == StartMethod::Fork && self.collector_exit.is_some()
    }

    /// A deadline passed: a test overran its timeout, a kill step is due, or the run is over.
    fn on_deadline(&mut self, run: &mut Run) {
        let now = Instant::now();
        if run.run_deadline.is_some_and(|at| at <= now) {
            run.run_deadline = None;
            run.stop.get_or_insert(StopReason::RunTimeout);
            let commands = run.work.stop();
            self.send(commands);
            self.pool.stop_all(now);
        }
        self.pool.on_deadline(now, |index| run.timeout_of(index));
        if run.work.deadline().is_some_and(|at| at <= now) {
            let commands = run.work.on_deadline();
            self.send(commands);
        }
    }

    /// Ctrl-C / SIGTERM: stop scheduling and interrupt the tests as pytest would; a second
    /// one kills. Ctrl-Z: stop every process and the clocks; SIGCONT: resume them.
    fn on_signal(&mut self, signal: i32, run: &mut Run) -> Vec<Command> {
        match signal {
            signals::SIGINT | signals::SIGTERM => {
                run.interrupts += 1;
                run.stop = Some(StopReason::Interrupted);
                self.pool.interrupt(run.interrupts);
                run.work.stop()
            }
            signals::SIGTSTP => {
                run.paused_since = Some(Instant::now());
                // The wait for SIGCONT has no deadline: what is held back shows now.
                if let Some(reporters) = self.reporters.as_mut() {
                    reporters.flush();
                }
                self.signal_all(signals::SIGSTOP);
                signals::stop_self();
                Vec::new()
            }
            signals::SIGCONT => {
                if let Some(since) = run.paused_since.take() {
                    let paused = since.elapsed();
                    self.pool.shift_clocks(paused);
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
        self.pool.signal_all(signal);
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
                let Some(slot) = self.pool.connected(conn, &id, peer, pid) else {
                    return Err(RunError::Unexpected {
                        who: format!("connection {conn}"),
                        message: format!("hello from unknown worker {id:?}"),
                    });
                };
                self.report(ReporterEvent::WorkerStarted { slot, worker: &id });
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
        if let Some(slot) = self.pool.exited(id, pid, end) {
            self.report(ReporterEvent::WorkerStopped {
                slot,
                worker: id,
                end: &end.describe(),
            });
        }
    }

    /// pytest-xdist's lines for a crashed worker: it is down, and it is replaced, or the
    /// restart limit is reached (said once; shoal's live workers still finish the run).
    fn tell_crash(&mut self, w: usize) {
        let id = self.pool.worker(w).id().to_owned();
        self.report(ReporterEvent::WorkerLine(&format!(
            "[{id}] node down: Not properly terminated"
        )));
        match self.pool.crashed() {
            Replacement::Replacing => self.report(ReporterEvent::WorkerLine(&format!(
                "replacing crashed worker {id}"
            ))),
            Replacement::LimitReached { max } => {
                self.report(ReporterEvent::RestartLimit(&match max {
                    0 => format!("worker {id} crashed and worker restarting disabled"),
                    n => format!("maximum crashed workers reached: {n}"),
                }))
            }
            Replacement::None => {}
        }
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
        Err(RunError::CollectionMismatch {
            worker: self.pool.worker(w).id().to_owned(),
            diff: manifest::nodeid_diff(&ours, &theirs),
        })
    }

    fn send(&mut self, commands: Vec<Command>) {
        for command in commands {
            let (worker, message) = match command {
                Command::Run { worker, indices } => (worker, ToPython::Run { indices }),
                Command::Shutdown { worker, discard } => (worker, ToPython::Shutdown { discard }),
                Command::Steal { worker, count } => (worker, ToPython::Steal { count }),
            };
            self.pool.send(worker, &message);
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
        if let Some(line) = run.work.summary() {
            self.notice(&line);
        }
        let kept = self.reporters.as_ref().and_then(Reporters::record);
        if let Some(warning) = kept.and_then(|record| run.work.keep_record(record)) {
            self.notice(&warning);
        }
        let status = run.status();
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
            (None, _) if run.work.exit_code().is_some() => run.work.exit_code().expect("checked"),
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

    /// Where the run's decisions go out (see [`run::Outlet`]).
    fn outlet(&mut self) -> DispatcherOutlet<'_> {
        DispatcherOutlet {
            reporters: &mut self.reporters,
            collector: self
                .collector
                .as_mut()
                .filter(|_| !self.triaging)
                .map(|(_, peer)| peer),
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

/// This node's name in a shared queue: the host and the process, unique per machine.
fn node_name() -> String {
    let host = rustix::system::uname();
    format!(
        "{}-{}",
        host.nodename().to_string_lossy(),
        std::process::id()
    )
}

/// A message's name, for errors: its `type` in the protocol.
fn message_kind(message: &FromPython) -> String {
    serde_json::to_value(message)
        .ok()
        .and_then(|v| v.get("type")?.as_str().map(str::to_owned))
        .unwrap_or_else(|| "?".into())
}

/// The reporters and the collector, as the run's decisions see them.
struct DispatcherOutlet<'a> {
    reporters: &'a mut Option<Reporters>,
    collector: Option<&'a mut Peer>,
}

impl Outlet for DispatcherOutlet<'_> {
    fn report(&mut self, event: ReporterEvent<'_>) {
        if let Some(reporters) = self.reporters.as_mut() {
            reporters.report(event);
        }
    }

    fn replay(&mut self, worker: &str, events: Vec<serde_json::Value>) {
        if let Some(peer) = self.collector.as_mut() {
            let worker = worker.to_owned();
            let _ = peer.send(&ToPython::Replay { worker, events });
        }
    }
}
