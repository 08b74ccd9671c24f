//! One worker slot: the process that fills it now, where it is in its life, how it ended, and
//! the stages of stopping it when a test overruns its timeout.

use std::{
    process::ExitStatus,
    time::{Duration, Instant},
};

use shoal_protocol::{PhaseReport, Recycle, ReplayScope, When, WorkerIdentity};

use crate::{connection::Peer, signals};

/// How much of a worker's recent output is kept to show with a crash.
const RECENT_OUTPUT: usize = 16 << 10;

/// How long a worker has to dump its stacks, then to exit after SIGTERM, before the next step.
const DUMP_GRACE: Duration = Duration::from_millis(500);
const TERM_GRACE: Duration = Duration::from_secs(2);

/// How a worker process ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WorkerEnd {
    Code(i32),
    Signal(i32),
    Unknown,
}

impl WorkerEnd {
    pub fn from_status(status: ExitStatus) -> Self {
        use std::os::unix::process::ExitStatusExt;
        match (status.code(), status.signal()) {
            (Some(code), _) => Self::Code(code),
            (None, Some(signal)) => Self::Signal(signal),
            _ => Self::Unknown,
        }
    }

    pub fn describe(self) -> String {
        match self {
            Self::Code(code) => format!("exit code {code}"),
            Self::Signal(signal) => format!("signal {signal}"),
            Self::Unknown => "exit status unknown".into(),
        }
    }
}

/// Where in a test a worker was, from its state file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    Idle,
    Setup,
    Call,
    Teardown,
    /// pytest is done with the test; the worker is sending its report.
    Reporting,
}

impl Phase {
    /// The pytest phase a crash in this one is reported in: after the test's teardown, the
    /// crash fails the test, as pytest-xdist reports it (between tests no test is blamed).
    pub fn when(self) -> When {
        match self {
            Phase::Setup => When::Setup,
            Phase::Idle | Phase::Call | Phase::Reporting => When::Call,
            Phase::Teardown => When::Teardown,
        }
    }

    /// Where the crash happened, for its message.
    pub fn describe(self) -> &'static str {
        match self {
            Phase::Reporting => "after its teardown, before its report was sent",
            Phase::Idle => "between tests",
            Phase::Setup => "during setup",
            Phase::Call => "during call",
            Phase::Teardown => "during teardown",
        }
    }
}

/// Reads a worker's state file (the protocol's `state_file`): the test index and its phase.
pub fn read_phase(path: &str) -> Option<(usize, Phase)> {
    let bytes = std::fs::read(path).ok()?;
    let index = u64::from_le_bytes(bytes.get(..8)?.try_into().ok()?);
    let phase = match bytes.get(8)? {
        0 => Phase::Idle,
        1 => Phase::Setup,
        2 => Phase::Call,
        3 => Phase::Teardown,
        4 => Phase::Reporting,
        _ => return None,
    };
    Some((usize::try_from(index).ok()?, phase))
}

/// Why the controller is ending a worker.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum KillReason {
    /// The test at this index overran this many seconds.
    Timeout { index: usize, seconds: f64 },
    /// `--run-timeout` or a second Ctrl-C.
    RunOver,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum KillStage {
    /// Asked for a stack dump (SIGUSR1).
    Dumping,
    /// Sent SIGTERM to the process group.
    Terminating,
    /// Sent SIGKILL to the process group: nothing left to do but wait.
    Killed,
}

#[derive(Debug, Clone, Copy)]
pub struct Kill {
    pub reason: KillReason,
    stage: KillStage,
    next: Instant,
}

/// Where a slot's process is in its life. A process ends by two events that come in either
/// order, its connection closing and its exit status; only when both have come is everything
/// it will ever say known, and the pool reports it lost ([`super::WorkerLost`]).
#[derive(Debug, Default)]
pub enum WorkerState {
    /// Forked or spawned (or about to be), not yet connected.
    #[default]
    Starting,
    /// Connected, taking tests. `session_done`: its pytest session finished normally
    /// (`worker_done`), so tests it did not run were discarded, not crashed on.
    Connected { session_done: bool },
    /// One of its two ends came: `lost` once the connection closed (the tests it had been sent
    /// and not finished), `end` once the process ended.
    Ending {
        session_done: bool,
        lost: Option<Vec<usize>>,
        end: Option<WorkerEnd>,
    },
    /// Both ends came and the dispatcher was told; the slot waits to be filled again.
    Gone { session_done: bool },
}

impl WorkerState {
    pub fn session_done(&self) -> bool {
        match *self {
            Self::Starting => false,
            Self::Connected { session_done }
            | Self::Ending { session_done, .. }
            | Self::Gone { session_done, .. } => session_done,
        }
    }
}

/// One `gwN` slot; a crashed worker's replacement takes over the same slot and id.
#[derive(Debug)]
pub struct Worker {
    pub identity: WorkerIdentity,
    pub state: WorkerState,
    pub peer: Option<Peer>,
    /// The worker's keeper, its parent, whose pid names the worker's process group (see the
    /// plugin's `keeper.start_worker_under_keeper`); known once forked or spawned.
    pub pid: Option<u32>,
    /// The worker process itself, as its `hello` says; signalled directly only while it is
    /// the keeper's child.
    process: Option<u32>,
    /// The test it is running and since when (only reported when timeouts are on).
    pub running: Option<(usize, Instant)>,
    kill: Option<Kill>,
    /// The end of what it printed since its last test finished.
    recent_output: std::collections::VecDeque<u8>,
    /// The last test's reports before its (session) teardown: `test_partial`.
    pub partial: Option<(usize, Vec<PhaseReport>)>,
    /// How many tests this process finished.
    tests_run: usize,
    /// Why this process ends its session to be replaced (`test_done.recycle`), if it does.
    recycle: Option<Recycle>,
}

/// A process that ended its session to be replaced by a fresh one (`--max-worker-tests`,
/// `--max-worker-rss`): why, and after how many tests.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Recycled {
    pub tests: usize,
    pub why: Recycle,
}

impl Worker {
    pub fn new(identity: WorkerIdentity) -> Self {
        Self {
            identity,
            state: WorkerState::Starting,
            peer: None,
            pid: None,
            process: None,
            running: None,
            kill: None,
            recent_output: std::collections::VecDeque::new(),
            partial: None,
            tests_run: 0,
            recycle: None,
        }
    }

    pub fn id(&self) -> &str {
        &self.identity.workerid
    }

    /// It said hello from process `process` over `peer`.
    pub fn connected(&mut self, peer: Peer, process: u32) {
        self.peer = Some(peer);
        self.process = Some(process);
        if let WorkerState::Starting = self.state {
            self.state = WorkerState::Connected {
                session_done: false,
            };
        }
    }

    /// Its pytest session finished normally.
    /// Its session finished (`worker_done`). Its exit may have been seen already, by the
    /// thread that watches the process, while this last message was still being read: a
    /// worker whose connection is open takes it in either state.
    pub fn session_done(&mut self) {
        match &mut self.state {
            WorkerState::Connected { session_done }
            | WorkerState::Ending {
                session_done,
                lost: None,
                ..
            } => *session_done = true,
            _ => {}
        }
    }

    /// Its connection closed while it held `lost`.
    pub fn closed(&mut self, lost: Vec<usize>) {
        self.peer = None;
        self.state = match std::mem::take(&mut self.state) {
            WorkerState::Connected { session_done } => WorkerState::Ending {
                session_done,
                lost: Some(lost),
                end: None,
            },
            WorkerState::Ending {
                session_done, end, ..
            } => WorkerState::Ending {
                session_done,
                lost: Some(lost),
                end,
            },
            other => other,
        };
    }

    /// Its process ended; without a connection (it never connected, or it is already gone),
    /// that is both of its ends.
    pub fn ended(&mut self, end: WorkerEnd) {
        self.set_end(|_| end);
    }

    /// The collector, parent of every forked worker, ended: a worker that has no other end yet
    /// ended with it, how is unknown.
    pub fn parent_gone(&mut self) {
        self.set_end(|known| known.unwrap_or(WorkerEnd::Unknown));
    }

    fn set_end(&mut self, end: impl FnOnce(Option<WorkerEnd>) -> WorkerEnd) {
        let session_done = self.state.session_done();
        self.state = match std::mem::take(&mut self.state) {
            WorkerState::Starting => WorkerState::Ending {
                session_done,
                lost: Some(Vec::new()),
                end: Some(end(None)),
            },
            WorkerState::Connected { .. } => WorkerState::Ending {
                session_done,
                lost: None,
                end: Some(end(None)),
            },
            WorkerState::Ending {
                lost, end: known, ..
            } => WorkerState::Ending {
                session_done,
                lost,
                end: Some(end(known)),
            },
            gone @ WorkerState::Gone { .. } => gone,
        };
    }

    /// The collector ended under `spawn`: a worker that never connected never will.
    pub fn never_connecting(&mut self) {
        if let WorkerState::Starting = self.state {
            self.state = WorkerState::Ending {
                session_done: false,
                lost: Some(Vec::new()),
                end: None,
            };
        }
    }

    /// The connection closed: no more messages come from it.
    pub fn is_closed(&self) -> bool {
        matches!(
            self.state,
            WorkerState::Ending { lost: Some(_), .. } | WorkerState::Gone { .. }
        )
    }

    /// The process is gone and every event about it has arrived.
    pub fn finished(&self) -> bool {
        matches!(
            self.state,
            WorkerState::Ending {
                lost: Some(_),
                end: Some(_),
                ..
            } | WorkerState::Gone { .. }
        )
    }

    /// Keeps the last [`RECENT_OUTPUT`] bytes the worker printed.
    pub fn remember_output(&mut self, bytes: &[u8]) {
        self.recent_output.extend(bytes);
        let excess = self.recent_output.len().saturating_sub(RECENT_OUTPUT);
        self.recent_output.drain(..excess);
    }

    /// A test finished: what it printed before belongs to that test.
    pub fn test_finished(&mut self) {
        self.tests_run += 1;
        self.running = None;
        self.partial = None;
        self.recent_output.clear();
    }

    /// It said it ends its session after its last test, to be replaced.
    pub fn recycling(&mut self, why: Recycle) {
        self.recycle = Some(why);
    }

    /// Whether this process ended, or is ending, to be replaced, and after how many tests.
    pub fn recycled(&self) -> Option<Recycled> {
        self.recycle.map(|why| Recycled {
            tests: self.tests_run,
            why,
        })
    }

    /// Once both of its ends came: the slot is gone, and what the dispatcher must know of
    /// its end is handed over.
    pub fn take_lost(&mut self, slot: usize) -> Option<super::WorkerLost> {
        let WorkerState::Ending {
            session_done,
            lost: Some(_),
            end: Some(end),
        } = self.state
        else {
            return None;
        };
        let WorkerState::Ending {
            lost: Some(tests), ..
        } = std::mem::replace(&mut self.state, WorkerState::Gone { session_done })
        else {
            unreachable!("matched above");
        };
        let kill = self.kill.map(|k| k.reason);
        let position = match self.identity.state_file.as_deref() {
            None => super::Position::Unknown,
            Some(path) => match read_phase(path) {
                None => super::Position::Unknown,
                Some((_, Phase::Idle)) => super::Position::BetweenTests,
                Some((index, phase)) => super::Position::InTest { index, phase },
            },
        };
        let stack = kill
            .and(self.identity.stack_file.as_deref())
            .and_then(|path| std::fs::read_to_string(path).ok())
            .filter(|s| !s.is_empty());
        Some(super::WorkerLost {
            slot,
            worker: self.id().to_owned(),
            end,
            session_done,
            tests,
            position,
            kill,
            output: String::from_utf8_lossy(self.recent_output.make_contiguous()).into_owned(),
            stack,
            partial: self.partial.take(),
            replay: self.identity.replay == Some(ReplayScope::All),
            recycled: self.recycle.is_some(),
        })
    }

    /// Resets the slot for a replacement process.
    pub fn restart(&mut self) {
        *self = Self::new(self.identity.clone());
    }

    /// Starts ending the worker: a stack dump first, then SIGTERM, then SIGKILL.
    pub fn begin_kill(&mut self, reason: KillReason, now: Instant) {
        if self.kill.is_some() || self.finished() {
            return;
        }
        if let Some(process) = self.process() {
            signals::to_process(process, signals::SIGUSR1);
        }
        self.kill = Some(Kill {
            reason,
            stage: KillStage::Dumping,
            next: now + DUMP_GRACE,
        });
    }

    /// Takes the next kill step if its time has come.
    pub fn advance_kill(&mut self, now: Instant) {
        let Some(kill) = self.kill else {
            return;
        };
        if self.pid.is_none() || now < kill.next || self.finished() {
            return;
        }
        let (signal, stage) = match kill.stage {
            KillStage::Dumping => (signals::SIGTERM, KillStage::Terminating),
            KillStage::Terminating => (signals::SIGKILL, KillStage::Killed),
            KillStage::Killed => return,
        };
        self.signal(signal);
        self.kill = Some(Kill {
            stage,
            next: now + TERM_GRACE,
            ..kill
        });
    }

    /// When the kill needs attention next.
    pub fn kill_deadline(&self) -> Option<Instant> {
        self.kill
            .filter(|k| k.stage != KillStage::Killed)
            .map(|k| k.next)
    }

    /// Ends the worker and everything its tests started at once.
    pub fn kill_now(&mut self) {
        if !self.finished() {
            self.signal(signals::SIGKILL);
        }
    }

    /// Sends `signal` to the worker's process group, and to the worker itself when a test
    /// took it out of the group (`os.setsid()`). What its tests started outside the group is
    /// the keeper's to end, once the worker is gone.
    pub fn signal(&self, signal: i32) {
        let Some(group) = self.pid else {
            return;
        };
        signals::to_group(group, signal);
        if let Some(process) = self.process() {
            if signals::group_of(process) != Some(group) {
                signals::to_process(process, signal);
            }
        }
    }

    /// The worker process, while it is still its keeper's child: a pid from Python is trusted
    /// no further (a bad one, or one reused after the worker ended, is never signalled).
    fn process(&self) -> Option<u32> {
        let (keeper, process) = (self.pid?, self.process?);
        (signals::parent_of(process) == Some(keeper)).then_some(process)
    }
}
