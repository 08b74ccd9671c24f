//! Everything a run leaves behind for people and tools: the terminal output and live view, the
//! `--report-json` event log, the `--timeline` trace, the JUnit XML file, pytest's cache, the
//! durations store and the run's record (for `shoal replay` and `shoal bisect`).
//!
//! The dispatcher says what happens as one stream of [`ReporterEvent`]s and ends with
//! [`Reporters::finish`]; [`Reporters`] hands each event to the reporters it concerns. No
//! reporter reaches back into scheduling, and nothing of a run prints except through here, so
//! lines never tear the live view. A report assembled from results that came from elsewhere
//! (shards merged, a queue's nodes) feeds the same reporters through the same two calls.

pub mod cache;
pub mod events;
pub mod junit;
pub mod live;
pub mod record;
pub mod terminal;
pub mod timeline;

use std::{
    path::PathBuf,
    time::{Duration, Instant},
};

use shoal_protocol::{JunitSettings, Recycle};

pub use terminal::Terminal;

use crate::{
    durations::DurationStore,
    python::Interpreter,
    results::{Results, StopReason, TestRecord},
    shard::{
        manifest::{Manifest, ShardRun},
        ShardStart,
    },
    ExitCode,
};
use events::{EventLog, EventsError};
use record::Recorder;
use timeline::Timeline;

/// What the terminal's first lines say as the workers are being started.
pub struct RunStart<'a> {
    pub workers: usize,
    pub tests: usize,
    /// How the workers start (`fork`, `spawn: why`).
    pub start_method: &'a str,
    /// The Python that runs the tests, and why that one (shown with `-v`).
    pub interpreter: &'a Interpreter,
    /// The xdist scheduler class the `--dist` mode stands for, shown with `-v`.
    pub scheduler: Option<&'a str>,
    /// `--shard`: which share of the collection this run is.
    pub shard: Option<ShardStart>,
    /// How many tests have a recorded duration, which orders the work.
    pub known_durations: usize,
    /// `--shuffle`: the seed the units were shuffled with (the order the history would give
    /// is not used). Also in `run_start`, for tools that record runs to repeat them.
    pub shuffle: Option<u64>,
}

/// One thing that happened in a run, in the order it happened.
pub enum ReporterEvent<'a> {
    /// The workers are being started.
    RunStarted {
        start: RunStart<'a>,
        testrunuid: &'a str,
    },
    /// Worker `worker` of slot `slot` connected (again, after a restart).
    WorkerStarted {
        slot: usize,
        worker: &'a str,
    },
    /// The process of slot `slot` ended, as `end` says.
    WorkerStopped {
        slot: usize,
        worker: &'a str,
        end: &'a str,
    },
    /// What a worker printed outside pytest's capture.
    WorkerOutput {
        worker: &'a str,
        bytes: &'a [u8],
    },
    WorkerOutputClosed {
        worker: &'a str,
    },
    /// One of pytest-xdist's lines about its workers (`replacing crashed worker gw0`).
    WorkerLine(&'a str),
    /// Crashed workers are no longer replaced; the text says why, now and in the summary.
    RestartLimit(&'a str),
    /// A worker process ended its session after `tests` tests, as `why` says, and a fresh one
    /// took its slot (`--max-worker-tests`, `--max-worker-rss` at `max_rss` bytes).
    WorkerRecycled {
        worker: &'a str,
        tests: usize,
        why: Recycle,
        max_rss: Option<u64>,
    },
    /// A worker started a test: reported with `-vv`, timeouts or `--timeline` only.
    TestStarted {
        worker: &'a str,
        nodeid: &'a str,
    },
    /// A failed attempt that will run again (`--retries`).
    TestRetrying(&'a TestRecord),
    /// A test's last attempt.
    TestFinished(&'a TestRecord),
    /// The test a worker slot runs now, or `None` when it is idle.
    Running {
        worker: usize,
        nodeid: Option<&'a str>,
    },
    /// The estimated time left, when history allows.
    Progress {
        eta: Option<Duration>,
    },
    /// One of shoal's own lines for stderr (a worker that broke the protocol, a note).
    Notice(&'a str),
}

/// How the run ended, for the reporters' last word.
pub struct RunEnd<'a> {
    pub stop: Option<&'a StopReason>,
    /// What the collector's plugins print in pytest's terminal summary.
    pub plugin_summary: &'a str,
    pub elapsed: Duration,
    pub code: ExitCode,
}

/// Every reporter of one run: the terminal, and the files it leaves behind (the event log is
/// dropped with a warning if it cannot be written).
pub struct Reporters {
    terminal: Terminal,
    outputs: Outputs,
    /// When [`Reporters::flush`] last wrote.
    flushed_at: Instant,
    /// A [`Reporters::flush_soon`] came too soon after the last write and was put off.
    flush_held: bool,
}

/// How often, at most, a run's progress is written out while tests are finishing. Each write
/// is a system call per output (and on a terminal or pipe, a wake-up of its reader): written
/// after every burst of tiny tests' results, as each worker's batch is read once a
/// millisecond, they cost the controller about a fifth of its time. Twenty times a second is
/// still as smooth as a terminal shows.
const FLUSH_EVERY: Duration = Duration::from_millis(50);

/// What a run leaves behind besides the terminal, each where asked for: a local run has any
/// of them, a merge or a queue's report the few that results from elsewhere allow.
#[derive(Default)]
pub struct Outputs {
    /// `--report-json`.
    pub events: Option<EventLog>,
    /// `--timeline`.
    pub timeline: Option<Timeline>,
    /// `--junitxml`.
    pub junit: Option<JunitSettings>,
    /// pytest's cache directory, for `lastfailed`.
    pub cache_dir: Option<PathBuf>,
    pub durations: Option<DurationStore>,
    /// `--shard`: the manifest the JUnit file carries.
    pub shard: Option<ShardRun>,
    /// The run's record, in pytest's cache directory.
    pub record: Option<Recorder>,
}

impl Reporters {
    pub fn new(terminal: Terminal, outputs: Outputs) -> Self {
        Self {
            terminal,
            outputs,
            flushed_at: Instant::now(),
            flush_held: false,
        }
    }

    pub fn report(&mut self, event: ReporterEvent<'_>) {
        if let Some(timeline) = self.outputs.timeline.as_mut() {
            timeline.record(&event, Instant::now());
        }
        if let Some(recorder) = self.outputs.record.as_mut() {
            recorder.record(&event);
        }
        let terminal = &mut self.terminal;
        match event {
            ReporterEvent::RunStarted { start, testrunuid } => {
                terminal.start(&start);
                self.log(|log| log.run_start(&start, testrunuid));
            }
            ReporterEvent::WorkerStarted { worker, .. } => self.log(|log| log.worker_start(worker)),
            ReporterEvent::WorkerStopped { worker, end, .. } => {
                self.log(|log| log.worker_stop(worker, end))
            }
            ReporterEvent::WorkerOutput { worker, bytes } => terminal.worker_output(worker, bytes),
            ReporterEvent::WorkerOutputClosed { worker } => terminal.output_closed(worker),
            ReporterEvent::WorkerLine(text) => terminal.worker_line(text),
            ReporterEvent::RestartLimit(text) => terminal.restart_limit(text.to_owned()),
            ReporterEvent::WorkerRecycled {
                worker,
                tests,
                why,
                max_rss,
            } => {
                terminal.recycled(worker, tests, why, max_rss);
                self.log(|log| log.worker_recycled(worker, tests, why));
            }
            ReporterEvent::TestStarted { nodeid, .. } => terminal.test_started(nodeid),
            ReporterEvent::TestRetrying(record) => {
                terminal.retrying(record);
                self.log(|log| log.test(record));
            }
            ReporterEvent::TestFinished(record) => {
                terminal.test_done(record);
                self.log(|log| log.test(record));
            }
            ReporterEvent::Running { worker, nodeid } => terminal.running(worker, nodeid),
            ReporterEvent::Progress { eta } => terminal.progress(eta),
            ReporterEvent::Notice(text) => terminal.notice(text),
        }
    }

    /// Writes what the terminal and the event log hold (see [`Terminal::flush`]).
    pub fn flush(&mut self) {
        self.terminal.flush();
        self.log(EventLog::flush);
        self.flushed_at = Instant::now();
        self.flush_held = false;
    }

    /// Flushes, unless the last write was less than [`FLUSH_EVERY`] ago: then the write waits
    /// for [`Reporters::flush_due`], or for a later call.
    pub fn flush_soon(&mut self) {
        if self.flushed_at.elapsed() >= FLUSH_EVERY {
            self.flush();
        } else {
            self.flush_held = true;
        }
    }

    /// When a held-back write is due, which the dispatcher waits for no longer than.
    pub fn flush_due(&self) -> Option<Instant> {
        self.flush_held.then(|| self.flushed_at + FLUSH_EVERY)
    }

    /// The run's record as it stands (none without pytest's cache), which `--triage` reads
    /// the failed tests' sequences from before the record is written.
    pub fn record(&self) -> Option<&crate::record::RunRecord> {
        self.outputs.record.as_ref().map(Recorder::run)
    }

    /// The run is over, however it ended. The files come first, because a cache that cannot be
    /// written is a warning that pytest counts in the stats line; then the terminal's summary;
    /// then the event log's last line.
    pub fn finish(
        mut self,
        results: &mut Results,
        end: RunEnd<'_>,
    ) -> Result<(), junit::JunitError> {
        if let Some(path) = &self.outputs.junit {
            let manifest = self
                .outputs
                .shard
                .as_ref()
                .map(|run| Manifest::new(run, results));
            junit::write(path, results, end.elapsed, manifest.as_ref())?;
        }
        if let Some(dir) = &self.outputs.cache_dir {
            if let Err(e) = cache::update_lastfailed(dir, results) {
                // pytest's own cache warns, and the warning counts, when it cannot write.
                results.add_session_warnings(vec![e.warning()]);
            }
        }
        if let Some(Err(e)) = self.outputs.durations.as_mut().map(|s| s.update(results)) {
            self.warn(&e);
        }
        if let Some(Err(e)) = self
            .outputs
            .timeline
            .take()
            .map(|t| t.write(Instant::now()))
        {
            self.warn(&e);
        }
        if let Some(Err(e)) = self.outputs.record.take().map(Recorder::write) {
            self.warn(&e);
        }
        self.terminal
            .summary(results, end.stop, end.plugin_summary, end.elapsed);
        for verdict in results.triage().iter().flat_map(|t| &t.verdicts) {
            self.log(|log| log.triage(verdict));
        }
        self.log(|log| log.run_end(results, end.code.code().into(), end.elapsed));
        self.log(EventLog::flush);
        Ok(())
    }

    /// Writes one JSON event; the first failure is reported and ends the event log.
    fn log(&mut self, write: impl FnOnce(&mut EventLog) -> Result<(), EventsError>) {
        if let Some(Err(e)) = self.outputs.events.as_mut().map(write) {
            self.warn(&e);
            self.outputs.events = None;
        }
    }

    /// A file that could not be written costs the run nothing but a line on stderr.
    fn warn(&mut self, error: &dyn std::error::Error) {
        self.terminal.notice(&format!(
            "shoal: warning: failed to {}",
            crate::error_chain(error)
        ));
    }
}
