//! The worker pool: every `gwN` slot and the process that fills it.
//!
//! The pool starts workers (forked by the collector or spawned), matches connections and exit
//! statuses to slots, stops workers in stages, keeps the restart budget and kills what a dead
//! worker's tests left behind. It decides nothing about tests: when a worker's process is gone
//! and everything it said has arrived, it hands the dispatcher one [`WorkerLost`], and the
//! dispatcher decides what the loss means (a crash to blame on a test, a clean end, tests to
//! run elsewhere).

mod slot;

use std::{
    collections::HashMap,
    io::Read,
    process::Stdio,
    time::{Duration, Instant},
};

use crossbeam_channel::Sender;
use shoal_protocol::{PhaseReport, Role, ToPython, WorkerIdentity};

pub use self::slot::{KillReason, Phase, Worker, WorkerEnd};
use super::Launch;
use crate::{
    connection::{self, ConnId, Event, Peer, Process},
    options::StartMethod,
    signals, RunError,
};

/// A worker's process is gone and every event about it has arrived.
#[derive(Debug)]
pub struct WorkerLost {
    pub slot: usize,
    pub worker: String,
    pub end: WorkerEnd,
    /// Its pytest session had finished normally (`worker_done`).
    pub session_done: bool,
    /// The tests it had been sent and not finished, in order.
    pub tests: Vec<usize>,
    /// Where its state file says it was.
    pub position: Position,
    /// Why the controller was ending it, if it was.
    pub kill: Option<KillReason>,
    /// What it printed outside pytest's capture since its last test finished.
    pub output: String,
    /// Its threads' stacks, dumped when a kill began.
    pub stack: Option<String>,
    /// The last test's reports before its teardown (`test_partial`).
    pub partial: Option<(usize, Vec<PhaseReport>)>,
    /// Whether the collector's plugins hear of each test's reports (the identity's `replay`
    /// is `all`), and so of a test its end failed.
    pub replay: bool,
    /// It ended its session to be replaced, before the tests it still held.
    pub recycled: bool,
}

/// Where a lost worker was when it ended, from its state file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Position {
    /// No state file, or one that cannot be read.
    Unknown,
    BetweenTests,
    InTest {
        index: usize,
        phase: Phase,
    },
}

/// What the pool says about a crash, as pytest-xdist's controller says it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Replacement {
    /// The worker is replaced.
    Replacing,
    /// This crash used up `--max-worker-restart` (said once).
    LimitReached { max: usize },
    /// Past the limit, already said.
    None,
}

/// How the pool starts a slot's process.
pub struct Starter {
    pub method: StartMethod,
    pub launch: Launch,
    /// Whether pytest colours its output; spawned workers are told so explicitly.
    pub color: bool,
    pub sender: Sender<Event>,
}

pub struct Pool {
    slots: Vec<Worker>,
    conns: HashMap<ConnId, usize>,
    starter: Starter,
    /// Crashed workers that may still be replaced.
    restarts_left: usize,
    /// `--max-worker-restart`.
    max_restarts: usize,
    /// Workers that crashed so far.
    crashes: usize,
}

impl Pool {
    pub fn new(identities: Vec<WorkerIdentity>, starter: Starter, max_restarts: usize) -> Self {
        Self {
            slots: identities.into_iter().map(Worker::new).collect(),
            conns: HashMap::new(),
            starter,
            restarts_left: max_restarts,
            max_restarts,
            crashes: 0,
        }
    }

    pub fn len(&self) -> usize {
        self.slots.len()
    }

    pub fn method(&self) -> StartMethod {
        self.starter.method
    }

    pub fn worker(&self, w: usize) -> &Worker {
        &self.slots[w]
    }

    pub fn worker_mut(&mut self, w: usize) -> &mut Worker {
        &mut self.slots[w]
    }

    fn by_id(&mut self, id: &str) -> Option<&mut Worker> {
        self.slots.iter_mut().find(|w| w.id() == id)
    }

    /// Every process is gone and accounted for.
    pub fn all_finished(&self) -> bool {
        self.slots.iter().all(Worker::finished)
    }

    /// The slot a connection belongs to; `None` for the collector's.
    pub fn slot_of(&self, conn: ConnId) -> Option<usize> {
        self.conns.get(&conn).copied()
    }

    /// Worker `id` said hello from process `pid`; `None` if no slot has that id.
    pub fn connected(&mut self, conn: ConnId, id: &str, peer: Peer, pid: u32) -> Option<usize> {
        let w = self.slots.iter().position(|x| x.id() == id)?;
        self.conns.insert(conn, w);
        self.slots[w].connected(peer, pid);
        Some(w)
    }

    /// A worker's connection closed; `lost` says which tests it still held. `None` for the
    /// collector's connection.
    pub fn closed(
        &mut self,
        conn: ConnId,
        lost: impl FnOnce(usize) -> Vec<usize>,
    ) -> Option<usize> {
        let w = self.conns.remove(&conn)?;
        let tests = lost(w);
        self.slots[w].closed(tests);
        Some(w)
    }

    /// The collector forked worker `id` as `pid` (its keeper).
    pub fn forked(&mut self, id: &str, pid: u32) {
        if let Some(slot) = self.by_id(id) {
            slot.pid = Some(pid);
        }
    }

    /// Worker `id`'s process `pid` ended. Whatever its tests started dies with it, which also
    /// closes a connection a child process may have inherited. Returns the slot when `pid` is
    /// its current process (an earlier process of a restarted slot is not).
    pub fn exited(&mut self, id: &str, pid: u32, end: WorkerEnd) -> Option<usize> {
        let w = self.slots.iter().position(|w| w.id() == id)?;
        let slot = &mut self.slots[w];
        if slot.pid.is_some_and(|p| p != pid) {
            return None;
        }
        slot.ended(end);
        signals::to_group(pid, signals::SIGKILL);
        Some(w)
    }

    /// Keeps what worker `id` printed, to show with a crash.
    pub fn output(&mut self, id: &str, bytes: &[u8]) {
        if let Some(slot) = self.by_id(id) {
            slot.remember_output(bytes);
        }
    }

    /// The collector ended: forked workers die with their parent, and nothing more will say
    /// how; a worker not connected by then never will be.
    pub fn collector_exited(&mut self) {
        let fork = self.starter.method == StartMethod::Fork;
        for slot in &mut self.slots {
            if fork {
                slot.parent_gone();
            } else {
                slot.never_connecting();
            }
        }
    }

    /// The workers whose process is now fully gone, once each.
    pub fn take_lost(&mut self) -> Vec<WorkerLost> {
        (0..self.slots.len())
            .filter_map(|w| self.slots[w].take_lost(w))
            .collect()
    }

    /// Counts a crash, and says whether it will be replaced.
    pub fn crashed(&mut self) -> Replacement {
        self.crashes += 1;
        match self.crashes.cmp(&(self.max_restarts + 1)) {
            std::cmp::Ordering::Less => Replacement::Replacing,
            std::cmp::Ordering::Equal => Replacement::LimitReached {
                max: self.max_restarts,
            },
            std::cmp::Ordering::Greater => Replacement::None,
        }
    }

    /// Starts a new process in slot `w`, whose last one is gone, if the restart budget allows
    /// (a worker whose session ended normally, recycled ones among them, costs none). Returns
    /// whether it did.
    pub fn replace(&mut self, w: usize, collector: Option<&mut Peer>) -> Result<bool, RunError> {
        let slot = &self.slots[w];
        if !slot.finished() {
            return Ok(false);
        }
        if !slot.state.session_done() {
            if self.restarts_left == 0 {
                return Ok(false);
            }
            self.restarts_left -= 1;
        }
        self.slots[w].restart();
        self.start(w, collector)?;
        Ok(true)
    }

    /// Starts slot `w`'s process: the collector forks it, or it is spawned. Without a
    /// collector to fork from, the slot stays empty.
    pub fn start(&mut self, w: usize, collector: Option<&mut Peer>) -> Result<(), RunError> {
        let identity = self.slots[w].identity.clone();
        for path in identity.stack_file.iter().chain(&identity.state_file) {
            let _ = std::fs::remove_file(path);
        }
        match self.starter.method {
            StartMethod::Fork => {
                let Some(collector) = collector else {
                    return Ok(());
                };
                collector
                    .send(&ToPython::Fork { identity })
                    .map_err(|source| RunError::Protocol {
                        who: "the collector".into(),
                        source,
                    })
            }
            StartMethod::Spawn => self.spawn(w, identity),
        }
    }

    fn spawn(&mut self, w: usize, identity: WorkerIdentity) -> Result<(), RunError> {
        let Starter {
            launch,
            color,
            sender,
            ..
        } = &self.starter;
        let mut args = launch.options.pytest_args.clone();
        if let (true, Some(base)) = (identity.distributed, &identity.basetemp) {
            args.push(format!("--basetemp={base}/popen-{}", identity.workerid));
        }
        if *color {
            args.push("--color=yes".into()); // its output is a pipe, but ends on our terminal
        }
        let id = identity.workerid.clone();
        let mut command = launch.command(Role::Worker, Some(&identity), &args);
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
                python: launch.interpreter.path.clone(),
                source,
            })?;
        let pid = child.id();
        self.slots[w].pid = Some(pid);
        let stdout = child
            .stdout
            .take()
            .map(|s| Box::new(s) as Box<dyn Read + Send>);
        let stderr = child
            .stderr
            .take()
            .map(|s| Box::new(s) as Box<dyn Read + Send>);
        for stream in stdout.into_iter().chain(stderr) {
            let (worker, events) = (id.clone(), sender.clone());
            std::thread::spawn(move || connection::forward_output(stream, worker, &events));
        }
        connection::watch(child, Process::Worker { id, pid }, sender.clone());
        Ok(())
    }

    /// Sends one message to a worker; a failure means it died, which its events report.
    pub fn send(&mut self, w: usize, message: &ToPython) {
        if let Some(peer) = self.slots[w].peer.as_mut() {
            let _ = peer.send(message);
        }
    }

    /// The nearest deadline of a running test (by `timeout_of` its index) or of a kill step.
    pub fn deadline(&self, timeout_of: impl Fn(usize) -> Option<Duration>) -> Option<Instant> {
        self.slots
            .iter()
            .filter_map(|w| {
                let test = w
                    .running
                    .and_then(|(index, since)| timeout_of(index).map(|t| since + t));
                test.into_iter().chain(w.kill_deadline()).min()
            })
            .min()
    }

    /// A deadline passed: every worker whose test overran its timeout starts being stopped,
    /// and every kill whose next step is due takes it.
    pub fn on_deadline(&mut self, now: Instant, timeout_of: impl Fn(usize) -> Option<Duration>) {
        for slot in &mut self.slots {
            if let Some((index, since)) = slot.running {
                if let Some(limit) = timeout_of(index) {
                    if since + limit <= now {
                        let seconds = limit.as_secs_f64();
                        slot.begin_kill(KillReason::Timeout { index, seconds }, now);
                    }
                }
            }
            slot.advance_kill(now);
        }
    }

    /// Takes every kill step that is due.
    pub fn advance_kills(&mut self, now: Instant) {
        for slot in &mut self.slots {
            slot.advance_kill(now);
        }
    }

    /// `--run-timeout`: every worker starts being stopped.
    pub fn stop_all(&mut self, now: Instant) {
        for slot in &mut self.slots {
            slot.begin_kill(KillReason::RunOver, now);
        }
    }

    /// Ctrl-C: the first one interrupts every live worker's test, as pytest's Ctrl-C does;
    /// the next ones kill.
    pub fn interrupt(&mut self, times: usize) {
        for slot in &mut self.slots {
            match times {
                1 if !slot.finished() => slot.signal(signals::SIGINT),
                _ => slot.kill_now(),
            }
        }
    }

    /// Sends `signal` to every live worker.
    pub fn signal_all(&self, signal: i32) {
        for slot in self.slots.iter().filter(|w| !w.finished()) {
            slot.signal(signal);
        }
    }

    /// The controller was stopped (Ctrl-Z) for `paused`: running tests' clocks move on by it.
    pub fn shift_clocks(&mut self, paused: Duration) {
        for slot in &mut self.slots {
            if let Some((_, started)) = slot.running.as_mut() {
                *started += paused;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::os::unix::net::UnixStream;

    use super::{slot::WorkerState, *};
    use crate::{
        options::RunOptions,
        python::{Interpreter, PassedOver, Source},
    };

    /// Above the kernel's pid limit: the group kill that follows an exit reaches nothing.
    const NO_PROCESS: u32 = u32::MAX >> 1;

    /// A pool of `workers` forked workers whose processes are never started: without a
    /// collector to fork from, starting a slot leaves it empty.
    fn pool(workers: usize, max_restarts: usize) -> Pool {
        let launch = Launch {
            interpreter: Interpreter {
                path: "python3".into(),
                source: Source::OnPath { name: "python3" },
                passed_over: PassedOver::default(),
            },
            plugin: "plugin".into(),
            socket: "socket".into(),
            options: RunOptions::default(),
            shard: None,
            queue: None,
            replay: None,
        };
        let starter = Starter {
            method: StartMethod::Fork,
            launch,
            color: false,
            sender: crossbeam_channel::unbounded().0,
        };
        let identities = (0..workers)
            .map(|n| {
                serde_json::from_value(serde_json::json!({
                    "workerid": format!("gw{n}"), "workercount": workers, "testrunuid": "x",
                    "mainargv": [], "distributed": true,
                }))
                .unwrap()
            })
            .collect();
        Pool::new(identities, starter, max_restarts)
    }

    /// Worker `w` says hello on connection `w`.
    fn connect(pool: &mut Pool, w: usize) {
        let (peer, _) = UnixStream::pair().unwrap();
        let id = format!("gw{w}");
        assert_eq!(
            pool.connected(w, &id, Peer::from(peer), NO_PROCESS),
            Some(w)
        );
        pool.forked(&id, NO_PROCESS);
    }

    #[test]
    fn a_worker_is_lost_once_both_its_ends_came_in_either_order() {
        let mut pool = pool(2, 0);
        connect(&mut pool, 0);
        connect(&mut pool, 1);
        // gw0: the connection closes first; gw1: the process ends first.
        assert_eq!(pool.closed(0, |_| vec![3, 4]), Some(0));
        assert_eq!(
            pool.exited("gw1", NO_PROCESS, WorkerEnd::Signal(9)),
            Some(1)
        );
        assert!(pool.take_lost().is_empty());
        assert!(!pool.all_finished());
        assert_eq!(pool.exited("gw0", NO_PROCESS, WorkerEnd::Code(1)), Some(0));
        assert_eq!(pool.closed(1, |_| Vec::new()), Some(1));
        let lost: Vec<_> = pool
            .take_lost()
            .into_iter()
            .map(|l| (l.worker, l.end, l.tests, l.session_done))
            .collect();
        assert_eq!(
            lost,
            [
                ("gw0".to_owned(), WorkerEnd::Code(1), vec![3, 4], false),
                ("gw1".to_owned(), WorkerEnd::Signal(9), Vec::new(), false)
            ]
        );
        assert!(pool.take_lost().is_empty(), "each loss is told once");
        assert!(pool.all_finished());
    }

    #[test]
    fn a_worker_that_never_connected_is_lost_when_its_process_ends() {
        let mut pool = pool(1, 0);
        pool.forked("gw0", NO_PROCESS);
        assert_eq!(pool.exited("gw0", NO_PROCESS, WorkerEnd::Code(4)), Some(0));
        let lost = pool.take_lost();
        assert_eq!(lost.len(), 1);
        assert_eq!(lost[0].position, Position::Unknown);
    }

    #[test]
    fn an_earlier_process_of_a_slot_and_an_unknown_worker_are_ignored() {
        let mut pool = pool(1, 0);
        connect(&mut pool, 0);
        assert_eq!(pool.exited("gw0", NO_PROCESS - 1, WorkerEnd::Code(0)), None);
        assert_eq!(pool.exited("gw7", NO_PROCESS, WorkerEnd::Code(0)), None);
        assert_eq!(
            pool.closed(99, |_| vec![1]),
            None,
            "not a worker's connection"
        );
        assert!(!pool.worker(0).is_closed());
    }

    #[test]
    fn a_finished_session_is_carried_to_the_loss_and_costs_no_restart() {
        let mut pool = pool(1, 0);
        connect(&mut pool, 0);
        pool.worker_mut(0).session_done();
        pool.closed(0, |_| Vec::new());
        pool.exited("gw0", NO_PROCESS, WorkerEnd::Code(0));
        assert!(pool.take_lost()[0].session_done);
        assert!(
            pool.replace(0, None).unwrap(),
            "a clean end needs no budget"
        );
        assert!(matches!(pool.worker(0).state, WorkerState::Starting));
    }

    #[test]
    fn a_finished_session_read_after_the_exit_still_counts() {
        let mut pool = pool(1, 0);
        connect(&mut pool, 0);
        pool.exited("gw0", NO_PROCESS, WorkerEnd::Signal(9));
        pool.worker_mut(0).session_done();
        pool.closed(0, |_| Vec::new());
        assert!(pool.take_lost()[0].session_done);
    }

    #[test]
    fn crashed_workers_are_replaced_within_the_budget_only() {
        let mut pool = pool(1, 1);
        for round in 0..2 {
            assert!(
                !pool.replace(0, None).unwrap(),
                "a live worker is not replaced"
            );
            connect(&mut pool, 0);
            pool.closed(0, |_| Vec::new());
            pool.exited("gw0", NO_PROCESS, WorkerEnd::Signal(9));
            pool.take_lost();
            assert_eq!(pool.replace(0, None).unwrap(), round == 0);
        }
        assert_eq!(pool.crashed(), Replacement::Replacing);
        assert_eq!(pool.crashed(), Replacement::LimitReached { max: 1 });
        assert_eq!(pool.crashed(), Replacement::None);
    }

    #[test]
    fn when_the_collector_ends_forked_workers_end_with_it() {
        let mut pool = pool(2, 0);
        connect(&mut pool, 0); // gw1 was never forked
        pool.collector_exited();
        let lost = pool.take_lost();
        assert_eq!(lost.len(), 1, "gw1 had neither process nor connection");
        assert_eq!(lost[0].worker, "gw1");
        assert_eq!(lost[0].end, WorkerEnd::Unknown);
        pool.closed(0, |_| vec![5]);
        let lost = pool.take_lost();
        assert_eq!(
            (lost[0].end, lost[0].tests.clone()),
            (WorkerEnd::Unknown, vec![5])
        );
        // Its real status, arriving late, changes nothing told.
        assert_eq!(
            pool.exited("gw0", NO_PROCESS, WorkerEnd::Signal(9)),
            Some(0)
        );
        assert!(pool.take_lost().is_empty());
    }

    #[test]
    fn a_test_past_its_timeout_starts_its_worker_s_kill() {
        let mut pool = pool(2, 0);
        connect(&mut pool, 0);
        connect(&mut pool, 1);
        let start = Instant::now();
        pool.worker_mut(0).running = Some((7, start));
        pool.worker_mut(1).running = Some((8, start));
        let timeout_of = |index| (index == 7).then_some(Duration::from_secs(1));
        assert_eq!(
            pool.deadline(timeout_of),
            Some(start + Duration::from_secs(1))
        );
        pool.on_deadline(start + Duration::from_secs(2), timeout_of);
        pool.closed(0, |_| vec![7]);
        pool.exited("gw0", NO_PROCESS, WorkerEnd::Signal(15));
        let lost = pool.take_lost();
        assert_eq!(
            lost[0].kill,
            Some(KillReason::Timeout {
                index: 7,
                seconds: 1.0
            })
        );
        assert!(pool.worker(1).kill_deadline().is_none());
    }
}
