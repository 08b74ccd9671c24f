//! The collecting process: starting it, its collection, its messages once the tests run, and
//! its end (told to stop, waited for, or killed).

use std::{
    process::ExitStatus,
    time::{Duration, Instant},
};

use shoal_protocol::{CollectedItem, FromPython, PytestSettings, Role, ToPython, Warning};

use super::{pool::WorkerEnd, validate, Dispatcher};
use crate::{
    connection::{self, Event, Process},
    options::{Shuffle, StartMethod},
    python::{PLUGIN_UNTRUSTED_EXIT, PYTEST_MISSING_EXIT, VERSIONS_UNSUPPORTED_EXIT},
    signals, ExitCode, RunError,
};

/// How long [`Dispatcher::await_late_hello`] waits.
const LATE_HELLO: Duration = Duration::from_secs(2);

/// What the collector handed over.
pub(super) struct Collection {
    pub(super) items: Vec<CollectedItem>,
    pub(super) fork_unsafe: Option<String>,
    pub(super) identity_read: Option<String>,
    pub(super) basetemp: Option<String>,
    pub(super) settings: Box<PytestSettings>,
    pub(super) warnings: Vec<Warning>,
    pub(super) workerinput: serde_json::Map<String, serde_json::Value>,
    pub(super) collect_errors: Vec<shoal_protocol::CollectError>,
    pub(super) collect_junit: Option<shoal_protocol::JunitDelta>,
    pub(super) replay: Option<shoal_protocol::ReplayScope>,
}

impl Dispatcher {
    /// Starts the collector and waits for its collection; `Err(code)` when pytest finished by
    /// itself (collect-only, collection errors, nothing collected) and printed everything.
    pub(super) fn collect(&mut self) -> Result<Result<Collection, ExitCode>, RunError> {
        let options = &self.launch.options;
        let mut command = self
            .launch
            .command(Role::Collector, None, &options.pytest_args);
        if options.start == Some(StartMethod::Spawn) {
            command.env("SHOAL_START", "spawn");
        }
        if let Some(workers) = options.workers {
            // `-n` from shoal's command line: the collector shows plugins xdist's `--dist`.
            command.env("SHOAL_NUMPROCESSES", workers.to_string());
        }
        if let Some(Shuffle::Seed(seed)) = options.shuffle {
            // pytest-randomly, where active, orders the tests with the same seed.
            command.env("SHOAL_SHUFFLE_SEED", seed.to_string());
        }
        if options.report_json.as_deref() == Some("-") {
            command.stdout(std::io::stderr()); // stdout carries the JSON events
        }
        let child = command.spawn().map_err(|source| RunError::Spawn {
            python: self.launch.interpreter.path.clone(),
            source,
        })?;
        self.collector_pid = Some(child.id());
        connection::watch(child, Process::Collector, self.sender.clone());
        let mut interrupts = 0;
        loop {
            match self.events.recv().expect("the dispatcher holds a sender") {
                Event::Connected { conn, hello, peer } => self.introduce(conn, hello, peer)?,
                Event::Message {
                    message:
                        FromPython::Collected {
                            items,
                            fork_unsafe,
                            identity_read,
                            basetemp,
                            settings,
                            warnings,
                            workerinput,
                            collect_errors,
                            junit,
                            replay,
                        },
                    ..
                } => {
                    validate::collection(&items, &settings).map_err(|problem| {
                        RunError::Invalid {
                            who: "the collector".into(),
                            problem,
                        }
                    })?;
                    return Ok(Ok(Collection {
                        replay,
                        collect_errors,
                        collect_junit: junit,
                        items,
                        fork_unsafe,
                        identity_read,
                        basetemp,
                        settings,
                        warnings,
                        workerinput,
                    }));
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
                Event::Signal(signals::SIGINT | signals::SIGTERM) => {
                    // pytest stops collecting at KeyboardInterrupt and reports it; again: kill.
                    interrupts += 1;
                    let signal = if interrupts == 1 {
                        signals::SIGINT
                    } else {
                        signals::SIGKILL
                    };
                    if let Some(pid) = self.collector_pid {
                        signals::to_group(pid, signal);
                    }
                }
                Event::Closed { error: None, .. }
                | Event::Output { .. }
                | Event::OutputClosed { .. }
                | Event::Signal(_) => {}
                Event::Exited { status, .. } => {
                    return self.collector_ended(status, interrupts > 0)
                }
            }
        }
    }

    /// The collector ended before it handed over a collection. Having said hello, it ran
    /// pytest, which finished by itself (collect-only, collection errors, nothing collected, a
    /// conftest's `sys.exit`) and printed why: its exit code is passed on. Without a hello it
    /// never ran shoal's plugin: whatever `--python` names is no usable Python.
    fn collector_ended(
        &mut self,
        status: ExitStatus,
        interrupted: bool,
    ) -> Result<Result<Collection, ExitCode>, RunError> {
        if self.collector.is_none() {
            self.await_late_hello()?;
        }
        let said_hello = self.collector.is_some();
        let python = || self.launch.interpreter.path.clone();
        match status.code() {
            Some(PYTEST_MISSING_EXIT) if !said_hello => Err(RunError::PytestMissing {
                python: python(),
                found: self.launch.interpreter.describe(),
            }),
            Some(PLUGIN_UNTRUSTED_EXIT) if !said_hello => Err(RunError::PluginUntrusted),
            Some(VERSIONS_UNSUPPORTED_EXIT) if !said_hello => {
                Err(RunError::VersionsUnsupported { python: python() })
            }
            Some(code) if said_hello => {
                let code = ExitCode::from_pytest(code);
                if matches!(code, ExitCode::Other(_)) {
                    // Not one of pytest's own: something in the suite ended it (sys.exit).
                    self.notice(&format!(
                        "shoal: the collecting pytest process ended ({}) before it had collected",
                        collector_end(status)
                    ));
                }
                Ok(Err(code))
            }
            Some(_) => Err(RunError::NotPython {
                python: python(),
                status: collector_end(status),
            }),
            None if interrupted => Ok(Err(ExitCode::Interrupted)),
            None => Err(RunError::CollectorDied {
                status: collector_end(status),
            }),
        }
    }

    /// A collector that connected and exited at once may have its hello still in flight: the
    /// connections' reader reports it moments after the exit, but on a thread of its own. A
    /// process that never connected costs this wait, once, on its way to an error.
    fn await_late_hello(&mut self) -> Result<(), RunError> {
        let deadline = Instant::now() + LATE_HELLO;
        while self.collector.is_none() {
            match self.events.recv_deadline(deadline) {
                Ok(Event::Connected { conn, hello, peer }) => self.introduce(conn, hello, peer)?,
                Ok(_) => {}
                Err(_) => break,
            }
        }
        Ok(())
    }

    /// Handles a message from the collector after its collection; one that
    /// [`validate::collector_message`] refuses ends the run.
    pub(super) fn collector_message(&mut self, message: FromPython) -> Result<(), RunError> {
        validate::collector_message(&message).map_err(|problem| RunError::Invalid {
            who: "the collector".into(),
            problem,
        })?;
        match message {
            FromPython::WorkerExited {
                worker,
                pid,
                code,
                signal,
            } => {
                let end = match (code, signal) {
                    (_, Some(signal)) => WorkerEnd::Signal(signal),
                    (Some(code), None) => WorkerEnd::Code(code),
                    (None, None) => WorkerEnd::Unknown,
                };
                self.worker_ended(&worker, pid, end);
            }
            FromPython::TerminalSummary { text, warnings } => {
                self.add_plugin_summary(text, warnings)
            }
            FromPython::Forked { worker, pid } => {
                self.pool.forked(&worker, pid);
            }
            other => self.notice(&format!(
                "shoal: ignored unexpected message from the collector: {other:?}"
            )),
        }
        Ok(())
    }

    /// What plugins printed in a terminal summary (the collector's, or the `-n 0` worker's),
    /// printed where pytest prints it, and the warnings raised there.
    pub(super) fn add_plugin_summary(&mut self, text: String, warnings: Vec<Warning>) {
        self.plugin_summary.push_str(&text);
        self.collector_warnings.extend(warnings);
    }

    /// Hands a finished worker's `config.workeroutput`, or how a crashed one ended, to the
    /// collector, which calls xdist's `pytest_testnodedown` with it (plugins such as syrupy
    /// merge their workers' results there). A collector already gone has no one to tell.
    pub(super) fn node_down(&mut self, w: usize, end: Result<serde_json::Value, String>) {
        if self.triaging {
            return; // the run's workers went down already: triage's rounds are no nodes of it
        }
        if let Some((_, peer)) = self.collector.as_mut() {
            let worker = self.pool.worker(w).id().to_owned();
            let (workeroutput, error) = match end {
                Ok(workeroutput) => (Some(workeroutput), None),
                Err(error) => (None, Some(error)),
            };
            let _ = peer.send(&ToPython::NodeDown {
                worker,
                workeroutput,
                error,
            });
        }
    }

    /// Tells the collector the run is over (and how it ends, when that is known) and waits
    /// for it to finish pytest's session.
    pub(super) fn finish_collector(&mut self, exitstatus: Option<i32>) -> Result<(), RunError> {
        if let Some((_, peer)) = self.collector.as_mut() {
            let _ = peer.send(&ToPython::Stop { exitstatus });
        }
        while self.collector_exit.is_none() {
            match self.events.recv() {
                Ok(Event::Exited {
                    process: Process::Collector,
                    status,
                }) => self.collector_exit = Some(status),
                Ok(Event::Message { message, .. }) => self.collector_message(message)?,
                Ok(Event::Signal(signals::SIGINT | signals::SIGTERM)) => self.kill_collector(),
                Ok(_) => {}
                Err(_) => break,
            }
        }
        Ok(())
    }

    /// Kills the collector's process group. Its death by a signal is then shoal's doing, not
    /// the internal error (exit 3) that an outside kill is.
    pub(super) fn kill_collector(&mut self) {
        if let Some(pid) = self.collector_pid {
            signals::to_group(pid, signals::SIGKILL);
            self.collector_signalled = true;
        }
    }
}

/// How the collecting process ended, for messages: its exit code, or the signal by name.
pub(super) fn collector_end(status: ExitStatus) -> String {
    match WorkerEnd::from_status(status) {
        WorkerEnd::Signal(signal) => format!("killed by {}", signals::name(signal)),
        end => end.describe(),
    }
}
