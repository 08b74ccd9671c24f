//! One worker slot: the process that fills it now, how it ended, and the stages of stopping
//! it when a test overruns its timeout.

use std::{
    process::ExitStatus,
    time::{Duration, Instant},
};

use shoal_protocol::{When, WorkerIdentity};

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

/// One `gwN` slot; a crashed worker's replacement takes over the same slot and id.
#[derive(Debug)]
pub struct Worker {
    pub identity: WorkerIdentity,
    pub peer: Option<Peer>,
    /// The worker's keeper, its parent, whose pid names the worker's process group (see the
    /// plugin's `_start_worker_under_keeper`); known once forked or spawned.
    pub pid: Option<u32>,
    /// The worker process itself, as its `hello` says; signalled directly only while it is
    /// the keeper's child.
    pub process: Option<u32>,
    /// The connection closed.
    pub closed: bool,
    /// Its pytest session finished normally (`worker_done`): tests it did not run were
    /// discarded, not crashed on.
    pub done: bool,
    /// Tests it had been sent and not finished, when its connection closed.
    pub lost: Vec<usize>,
    pub end: Option<WorkerEnd>,
    /// The test it is running and since when (only reported when timeouts are on).
    pub running: Option<(usize, Instant)>,
    pub kill: Option<Kill>,
    /// Its end has been reported (crash, timeout or clean exit).
    pub accounted: bool,
    /// The end of what it printed since its last test finished.
    pub recent_output: std::collections::VecDeque<u8>,
    /// The last test's reports before its (session) teardown: `test_partial`.
    pub partial: Option<(usize, Vec<shoal_protocol::PhaseReport>)>,
}

impl Worker {
    pub fn new(identity: WorkerIdentity) -> Self {
        Self {
            identity,
            peer: None,
            pid: None,
            process: None,
            closed: false,
            done: false,
            lost: Vec::new(),
            end: None,
            running: None,
            kill: None,
            accounted: false,
            recent_output: std::collections::VecDeque::new(),
            partial: None,
        }
    }

    pub fn id(&self) -> &str {
        &self.identity.workerid
    }

    /// Keeps the last [`RECENT_OUTPUT`] bytes the worker printed.
    pub fn remember_output(&mut self, bytes: &[u8]) {
        self.recent_output.extend(bytes);
        let excess = self.recent_output.len().saturating_sub(RECENT_OUTPUT);
        self.recent_output.drain(..excess);
    }

    /// The process is gone and every event about it has arrived.
    pub fn finished(&self) -> bool {
        self.closed && self.end.is_some()
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
