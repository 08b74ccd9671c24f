//! [`QueueSource`]: a node's work source, the local [`Scheduler`] over what this node leased.
//!
//! The dispatcher asks it for tests as it asks the local scheduler; behind that, the source
//! keeps the scheduler's pool topped up from Redis in batches, renews its leases on a clock of
//! its own (the dispatcher wakes it at [`WorkSource::deadline`]), acknowledges each unit with
//! its tests' results once all of them are recorded, and sends failed tests back to the queue
//! for another node. When the queue is empty but other nodes still hold units, the node's
//! workers finish and it waits, polling: an expired lease it takes over revives its workers.

use std::{
    collections::HashMap,
    time::{Duration, Instant},
};

use shoal_protocol::{CollectedItem, PytestSettings};

use super::{
    server::{Exchange, Server, ServerError},
    stored::{BuildInfo, StoredTest, VERSION},
    QueueSpec,
};
use crate::{
    options::Dist,
    record::RunRecord,
    results::TestRecord,
    shard::manifest,
    work::{Command, Scheduler, WorkSource},
};

/// Acknowledgements wait for a batch of this many units, or [`ACK_DELAY`], or the next lease.
const ACK_BATCH: usize = 32;
const ACK_DELAY: Duration = Duration::from_secs(1);
/// Units leased in one batch, at most this many per worker; fewer near the queue's end.
const MAX_BATCH_PER_WORKER: usize = 64;

/// Whether this node pushed the build's work or joined it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Seat {
    Leader,
    Follower,
}

/// Why a node cannot take part in the build.
#[derive(Debug, thiserror::Error)]
pub enum QueueError {
    #[error(transparent)]
    Server(#[from] ServerError),
    #[error("join build {build}: this node collected other tests than the node that started it (- only here, + only there); every node must run the same commit and selection:{diff}")]
    Mismatch { build: String, diff: String },
    #[error("join build {build}: {problem}")]
    Info { build: String, problem: String },
}

/// A unit this node holds the lease on.
#[derive(Debug, Default)]
struct Leased {
    /// Its tests not yet recorded.
    left: usize,
    /// The results of those that are.
    results: Vec<(usize, String)>,
}

/// A node's work source.
pub struct QueueSource {
    local: Scheduler,
    server: Server,
    spec: QueueSpec,
    node: String,
    workers: usize,
    collected: usize,
    leased: HashMap<String, Leased>,
    /// The unit each leased test belongs to.
    unit_of: HashMap<usize, String>,
    /// Per retried test: the attempts it had before the one this node leased.
    attempts: HashMap<usize, usize>,
    /// Tests this node sent back to be retried, and the worker they failed on: a retry this
    /// node takes itself (it is the only one) goes to another of its workers.
    failed_here: HashMap<usize, usize>,
    /// Finished units waiting to be acknowledged, and since when the oldest waits.
    acks: Vec<(String, Vec<(usize, String)>)>,
    acks_since: Option<Instant>,
    /// Per worker: how many tests it has finished, for each result's position.
    positions: HashMap<String, usize>,
    /// The build's retry budget.
    budget: usize,
    next_heartbeat: Instant,
    /// The queue was found empty while other nodes held units: when to look again.
    next_poll: Option<Instant>,
    /// What the last exchange said of the queue.
    last: Exchange,
    build_done: bool,
    stopped: bool,
    error: Option<ServerError>,
    /// A call to Redis failed for good: the end of the run does not wait on it again.
    lost: bool,
    /// For the node's last line: tests it acknowledged, units it took over from others.
    acknowledged: usize,
    taken_over: usize,
}

impl QueueSource {
    /// Connects, claims the build (pushing `units` in this order) or checks that the node that
    /// claimed it collected the same tests, and returns the source with this node's seat.
    #[allow(clippy::too_many_arguments)]
    pub fn join(
        spec: QueueSpec,
        node: String,
        dist: Dist,
        items: &[CollectedItem],
        units: &[Vec<usize>],
        workers: usize,
        local: Scheduler,
        settings: &PytestSettings,
    ) -> Result<(Self, Seat), QueueError> {
        let mut server = Server::connect(&spec)?;
        let info = BuildInfo {
            version: VERSION,
            items: items
                .iter()
                .map(|i| (i.nodeid.clone(), i.display.clone()))
                .collect(),
            dist: dist.to_string(),
            settings: settings.clone(),
            units: units.len(),
        };
        let info = serde_json::to_string(&info).expect("the build info serialises");
        let pushed: Vec<(String, String)> = units
            .iter()
            .enumerate()
            .map(|(id, tests)| (id.to_string(), join_indices(tests)))
            .collect();
        let fingerprint = manifest::fingerprint(items);
        let claim = server.claim(&node, &fingerprint, &info, &pushed)?;
        if claim.fingerprint != fingerprint {
            let theirs: BuildInfo =
                serde_json::from_str(&claim.info).map_err(|e| QueueError::Info {
                    build: spec.build.clone(),
                    problem: format!("its description in Redis is not shoal's: {e}"),
                })?;
            let theirs: Vec<&str> = theirs.items.iter().map(|(id, _)| id.as_str()).collect();
            let ours: Vec<&str> = items.iter().map(|i| i.nodeid.as_str()).collect();
            return Err(QueueError::Mismatch {
                build: spec.build.clone(),
                diff: manifest::nodeid_diff(&ours, &theirs),
            });
        }
        let seat = if claim.leader {
            Seat::Leader
        } else {
            Seat::Follower
        };
        let budget = (spec.requeue_tolerance * items.len() as f64).ceil() as usize;
        let source = Self {
            local,
            server,
            node,
            workers: workers.max(1),
            collected: items.len(),
            leased: HashMap::new(),
            unit_of: HashMap::new(),
            attempts: HashMap::new(),
            failed_here: HashMap::new(),
            acks: Vec::new(),
            acks_since: None,
            positions: HashMap::new(),
            budget,
            next_heartbeat: Instant::now() + spec.lease / 3,
            next_poll: None,
            last: Exchange::default(),
            build_done: false,
            stopped: false,
            error: None,
            lost: false,
            acknowledged: 0,
            taken_over: 0,
            spec,
        };
        Ok((source, seat))
    }

    /// This node's name in the build.
    pub fn node(&self) -> &str {
        &self.node
    }

    pub fn build(&self) -> &str {
        &self.spec.build
    }

    /// The queue's URL as it may be printed.
    pub fn url(&self) -> &str {
        self.server.url()
    }

    /// The units this node holds, for the server to renew.
    fn held(&self) -> Vec<String> {
        self.leased.keys().cloned().collect()
    }

    /// Leases more units when the local pool runs low, and sends acknowledgements that are
    /// due; what arrives goes to the local scheduler, whose commands are returned.
    fn top_up(&mut self) -> Vec<Command> {
        if self.stopped || self.build_done {
            return Vec::new();
        }
        let low = self.local.pooled() < self.workers;
        let waiting = self.next_poll.is_some();
        let acks_due = self.acks.len() >= ACK_BATCH
            || self.acks_since.is_some_and(|t| t.elapsed() >= ACK_DELAY)
            || (self.leased.is_empty() && !self.acks.is_empty());
        if (low && !waiting) || acks_due || Instant::now() >= self.next_heartbeat {
            self.exchange(if low { self.batch() } else { 0 })
        } else {
            Vec::new()
        }
    }

    /// How many units to lease: enough for a while, a fair share of what is left near the end.
    fn batch(&self) -> usize {
        let nodes = self.last.nodes.max(1);
        let share = self.last.queued / (4 * nodes);
        share.clamp(2 * self.workers, MAX_BATCH_PER_WORKER * self.workers)
    }

    /// One round trip: renew, acknowledge, lease `want`.
    fn exchange(&mut self, want: usize) -> Vec<Command> {
        let acks = std::mem::take(&mut self.acks);
        self.acks_since = None;
        let held = self.held();
        let mut answer = match self.server.exchange(&self.node, &held, &acks, want) {
            Ok(answer) => answer,
            Err(error) => return self.fail(error),
        };
        self.next_heartbeat = Instant::now() + self.spec.lease / 3;
        let mut units = Vec::new();
        // Only the queue's counts are kept of the answer (in `last`), not the units it leased.
        for (id, tests, from) in std::mem::take(&mut answer.units) {
            if self.leased.contains_key(&id) {
                continue; // still ours: this node stalled past its lease and took it back
            }
            self.taken_over += usize::from(!from.is_empty());
            let Some(tests) = self.parse_tests(&tests) else {
                let problem = format!("unit {id} names tests {tests:?}, not of this collection");
                return self.fail(self.server.corrupt(problem));
            };
            if let Some(attempt) = id.strip_prefix('r').and_then(|r| r.split_once('.')) {
                let earlier = attempt.1.parse().unwrap_or(1);
                for &test in &tests {
                    self.attempts.insert(test, earlier);
                    if let Some(worker) = self.failed_here.remove(&test) {
                        self.local.avoid(test, worker);
                    }
                }
            }
            for &test in &tests {
                self.unit_of.insert(test, id.clone());
            }
            self.leased.insert(
                id,
                Leased {
                    left: tests.len(),
                    results: Vec::new(),
                },
            );
            units.push(tests);
        }
        let got_none = units.is_empty();
        self.last = answer;
        // This node's part of what is queued: the local chunks stay large while it lasts.
        self.local
            .expect_more(self.last.queued / self.last.nodes.max(1));
        if self.last.build_done() && self.leased.is_empty() && self.acks.is_empty() {
            self.build_done = true;
            self.next_poll = None;
            return self.leave(Vec::new());
        }
        // Nothing to run here while other nodes hold the rest: look again in a while.
        self.next_poll = (got_none && want > 0 && self.local.pooled() == 0)
            .then(|| Instant::now() + self.poll_interval());
        self.local.extend(units)
    }

    fn poll_interval(&self) -> Duration {
        (self.spec.lease / 10).clamp(Duration::from_millis(100), Duration::from_millis(500))
    }

    fn parse_tests(&self, tests: &str) -> Option<Vec<usize>> {
        tests
            .split(',')
            .map(|t| t.parse().ok().filter(|&i| i < self.collected))
            .collect()
    }

    /// The queue cannot be reached: nothing more is leased or acknowledged, and the
    /// dispatcher stops the run with the error ([`WorkSource::take_error`]).
    fn fail(&mut self, error: ServerError) -> Vec<Command> {
        self.error = Some(error);
        self.lost = true;
        self.stopped = true;
        self.next_poll = None;
        Vec::new()
    }

    /// Leaves the build: what this node still holds goes back to the queue at once.
    fn leave(&mut self, commands: Vec<Command>) -> Vec<Command> {
        if let Err(error) = self.server.release(&self.node) {
            self.lost = true;
            self.error.get_or_insert(error);
        }
        self.leased.clear();
        commands
    }

    /// `record` ends its test here: the unit is acknowledged once all its tests are.
    fn record_done(&mut self, index: usize, result: Option<String>) {
        let Some(id) = self.unit_of.remove(&index) else {
            return;
        };
        let Some(unit) = self.leased.get_mut(&id) else {
            return;
        };
        unit.left = unit.left.saturating_sub(1);
        unit.results.extend(result.map(|r| (index, r)));
        if unit.left == 0 {
            let unit = self.leased.remove(&id).unwrap_or_default();
            self.acknowledged += unit.results.len();
            self.acks.push((id, unit.results));
            self.acks_since.get_or_insert_with(Instant::now);
        }
    }

    fn position(&mut self, worker: &str) -> usize {
        let position = self.positions.entry(worker.to_owned()).or_default();
        *position += 1;
        *position
    }
}

fn join_indices(tests: &[usize]) -> String {
    tests
        .iter()
        .map(usize::to_string)
        .collect::<Vec<_>>()
        .join(",")
}

impl WorkSource for QueueSource {
    fn worker_ready(&mut self, worker: usize) -> Vec<Command> {
        let mut commands = self.top_up();
        commands.extend(self.local.worker_ready(worker));
        commands
    }

    fn test_done(&mut self, worker: usize, index: usize) -> Vec<Command> {
        let mut commands = self.top_up();
        commands.extend(self.local.test_done(worker, index));
        commands
    }

    fn released(&mut self, victim: usize, indices: Vec<usize>) -> Vec<Command> {
        self.local.released(victim, indices)
    }

    fn retry(&mut self, failed: &TestRecord, failed_on: usize) -> Option<Vec<Command>> {
        if self.stopped {
            return None;
        }
        let attempt = self.attempts.get(&failed.index).copied().unwrap_or(0) + 1;
        let position = self.position(&failed.worker);
        let record = StoredTest::new(failed, &self.node, position).to_json();
        let held = self.held();
        let requeue = self.server.requeue(
            &self.node,
            &held,
            failed.index,
            attempt,
            &record,
            self.budget,
        );
        match requeue {
            Ok(true) => {
                // Its result comes with the retry's unit, on whichever node runs it.
                self.record_done(failed.index, None);
                self.failed_here.insert(failed.index, failed_on);
                Some(self.top_up())
            }
            Ok(false) => None,
            Err(error) => {
                self.fail(error);
                None
            }
        }
    }

    fn attempts_before(&self, index: usize) -> usize {
        self.attempts.get(&index).copied().unwrap_or(0)
    }

    fn finished(&mut self, record: &TestRecord) {
        let position = self.position(&record.worker);
        let stored = StoredTest::new(record, &self.node, position).to_json();
        self.record_done(record.index, Some(stored));
    }

    fn worker_lost(&mut self, worker: usize) -> Vec<usize> {
        self.local.worker_lost(worker)
    }

    fn requeue(&mut self, worker: usize, tests: Vec<usize>) -> Vec<Command> {
        self.local.requeue(worker, tests)
    }

    fn needs_worker(&self) -> Option<usize> {
        self.local.needs_worker()
    }

    fn revive(&mut self, worker: usize) {
        self.local.revive(worker)
    }

    fn retire(&mut self, worker: usize) {
        self.local.retire(worker)
    }

    /// `-x`, `--maxfail`, Ctrl-C, a lost queue: what is finished is acknowledged, the rest
    /// goes back to the queue at once for the other nodes.
    fn stop(&mut self) -> Vec<Command> {
        let commands = self.local.stop();
        if self.stopped || self.build_done {
            return commands;
        }
        self.stopped = true;
        self.next_poll = None;
        if !self.acks.is_empty() {
            let acks = std::mem::take(&mut self.acks);
            let held = self.held();
            if let Err(error) = self.server.exchange(&self.node, &held, &acks, 0) {
                self.fail(error);
                return commands;
            }
        }
        self.leave(commands)
    }

    fn holds(&self, worker: usize, index: usize) -> bool {
        self.local.holds(worker, index)
    }

    fn running(&self, worker: usize) -> Option<usize> {
        self.local.running(worker)
    }

    fn is_ready(&self, worker: usize) -> bool {
        self.local.is_ready(worker)
    }

    fn steal_pending(&self, worker: usize) -> bool {
        self.local.steal_pending(worker)
    }

    fn deadline(&self) -> Option<Instant> {
        if self.stopped || self.build_done {
            return None;
        }
        let acks = self.acks_since.map(|t| t + ACK_DELAY);
        [
            Some(self.next_heartbeat),
            self.next_poll,
            acks,
            self.local.deadline(),
        ]
        .into_iter()
        .flatten()
        .min()
    }

    fn on_deadline(&mut self) -> Vec<Command> {
        if self.next_poll.is_some_and(|t| t <= Instant::now()) {
            self.next_poll = None;
        }
        let mut commands = self.top_up();
        if self.local.deadline().is_some_and(|t| t <= Instant::now()) {
            commands.extend(self.local.on_deadline());
        }
        commands
    }

    fn waiting(&self) -> bool {
        !(self.stopped || self.build_done)
    }

    fn summary(&self) -> Option<String> {
        let trips = self.server.round_trips();
        Some(format!(
            "shoal: queue build {}: node {} ran {} tests ({} taken over from other nodes) in {trips} round trips to Redis ({:.3} per test)",
            self.spec.build,
            self.node,
            self.acknowledged,
            self.taken_over,
            trips as f64 / self.acknowledged.max(1) as f64,
        ))
    }

    fn keep_record(&mut self, record: &RunRecord) -> Option<String> {
        if self.lost {
            return None;
        }
        let json = serde_json::to_string(record).expect("a record serializes");
        let error = self.server.keep_record(&self.node, &json).err()?;
        Some(format!(
            "shoal: warning: failed to {}",
            crate::error_chain(&error)
        ))
    }

    fn take_error(&mut self) -> Option<String> {
        self.error
            .take()
            .map(|e| format!("failed to {}", crate::error_chain(&e)))
    }
}
