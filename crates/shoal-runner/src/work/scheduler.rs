//! The local work source: every `--dist` mode over this machine's workers.
//!
//! The scheduler is pure bookkeeping: the dispatcher tells it what happened (a worker is ready,
//! a test is done, a worker gave tests back) and sends the [`Command`]s it answers with. That
//! keeps every `--dist` mode testable without processes.
//!
//! Workers run tests in the order they receive them and must always know a test's successor
//! before running it (pytest tears fixtures down by `nextitem`), so the scheduler keeps at least
//! two tests queued on every worker until it has nothing left, then says `Shutdown`.

use std::{
    collections::{HashMap, VecDeque},
    time::{Duration, Instant},
};

use shoal_protocol::CollectedItem;

use super::{Command, WorkSource};
use crate::{options::Dist, results::TestRecord};

/// Upper bound of tests sent in one `Run` under `--dist load`: large enough that tiny tests do
/// not wait on the controller, small enough that the tail of the run stays balanced.
const MAX_CHUNK: usize = 64;

/// Under `--dist load`, a worker that holds fewer tests than this (without history), or less
/// expected time than [`REFILL_SECONDS`] (with it), is sent its next chunk before it is down to
/// its last two. A chunk sent only then reaches it after it started the second-to-last, and a
/// worker running tiny tests then waits a round trip through the controller for it, once a
/// chunk (3% of a worker's time on 20,000 trivial tests).
const REFILL_TESTS: usize = 8;
const REFILL_SECONDS: f64 = 0.005;

/// Under `--dist load`, once the pool is empty, a worker that holds this many tests or fewer
/// asks a busier worker for some of its queued ones. It asks while it still has tests of its
/// own to run, because the busy worker answers only between tests.
const STEAL_AHEAD: usize = 3;

/// Under `--dist load`, how long a worker down to its last test waits for a busy worker to
/// answer its steal before it finishes without. A `load` worker is one thread, as plain pytest
/// is, and answers between tests; its current test may be waiting for what the thief's last
/// test holds (a class fixture's lock, kept until that test knows its successor, which is
/// what the thief waits for). Giving up ends that wait. The busy worker keeps what it
/// releases afterwards.
const STEAL_PATIENCE: Duration = Duration::from_secs(5);

/// What limits when a test may run beside others: `@pytest.mark.serial` (nothing else runs
/// at the same time) and `@pytest.mark.resource(name, limit=N)` (at most N tests holding that
/// resource run at once). Indexed by test.
#[derive(Debug, Clone, Default)]
pub struct Constraints {
    pub serial: Vec<bool>,
    pub resources: Vec<Vec<(String, usize)>>,
}

impl Constraints {
    pub fn from_items(items: &[CollectedItem]) -> Self {
        Self {
            serial: items.iter().map(|i| i.serial).collect(),
            resources: items.iter().map(|i| i.resources.clone()).collect(),
        }
    }

    fn serial(&self, test: usize) -> bool {
        self.serial.get(test).copied().unwrap_or(false)
    }

    fn constrained(&self, test: usize) -> bool {
        self.serial(test) || self.resources.get(test).is_some_and(|r| !r.is_empty())
    }

    fn resources(&self, test: usize) -> &[(String, usize)] {
        self.resources.get(test).map_or(&[], Vec::as_slice)
    }
}

/// Groups test indices into the units `dist` keeps on one worker, in collection order; with
/// `reorder` (xdist's `--loadscope-reorder`, its default) the largest units come first, so
/// the long ones do not start last and hold the run up (equal sizes keep collection order).
pub fn units(dist: Dist, items: &[CollectedItem], reorder: bool) -> Vec<Vec<usize>> {
    let key = |item: &CollectedItem| -> Option<String> {
        match dist {
            Dist::LoadScope => Some(item.scope.clone()),
            Dist::LoadFile => Some(item.file.clone()),
            Dist::LoadGroup => item.group.clone(),
            Dist::Load | Dist::WorkSteal | Dist::Each | Dist::No => None,
        }
    };
    let mut units: Vec<Vec<usize>> = Vec::new();
    let mut by_key: HashMap<String, usize> = HashMap::new();
    for (index, item) in items.iter().enumerate() {
        match key(item) {
            Some(k) => {
                let unit = *by_key.entry(k).or_insert_with(|| {
                    units.push(Vec::new());
                    units.len() - 1
                });
                units[unit].push(index);
            }
            None => units.push(vec![index]),
        }
    }
    if reorder && !by_key.is_empty() {
        units.sort_by_key(|unit| std::cmp::Reverse(unit.len()));
    }
    units
}

/// Takes the serial tests out of `units`: they run last, one by one, in collection order.
fn split_serial(
    units: Vec<Vec<usize>>,
    constraints: &Constraints,
) -> (VecDeque<Vec<usize>>, Vec<usize>) {
    let mut serial: Vec<usize> = units
        .iter()
        .flatten()
        .copied()
        .filter(|&t| constraints.serial(t))
        .collect();
    serial.sort_unstable(); // units may come largest first
    let units = units
        .into_iter()
        .map(|u| {
            u.into_iter()
                .filter(|&t| !constraints.serial(t))
                .collect::<Vec<_>>()
        })
        .filter(|u| !u.is_empty())
        .collect();
    (units, serial)
}

/// How many workers can be kept busy: never more than there are units (`each` excepted).
pub fn useful_workers(dist: Dist, units: usize, wanted: usize) -> usize {
    match dist {
        Dist::No => 1,
        Dist::Each => wanted.max(1),
        _ => wanted.clamp(1, units.max(1)),
    }
}

#[derive(Debug, Default)]
struct WorkerQueue {
    /// Sent and not yet reported done, in the order the worker runs them.
    pending: VecDeque<usize>,
    /// worksteal: this worker's share, not yet sent.
    share: VecDeque<usize>,
    ready: bool,
    /// Told that no more tests will come.
    shut: bool,
    /// Its process is gone (until the slot is revived).
    lost: bool,
    /// Its process ends to be replaced by a fresh one ([`WorkSource::retire`]).
    retired: bool,
    /// load and worksteal: waiting for a victim to release tests to it.
    awaiting_steal: bool,
    /// load: when it stops waiting for its victim (see [`STEAL_PATIENCE`]).
    steal_deadline: Option<Instant>,
    /// load: it waited in vain once, and asks no more.
    gave_up_stealing: bool,
    /// load and worksteal: the thief its current steal request serves.
    stolen_by: Option<usize>,
}

/// Hands tests to workers according to one `--dist` mode.
#[derive(Debug)]
pub struct Scheduler {
    dist: Dist,
    units: VecDeque<Vec<usize>>,
    remaining: usize,
    workers: Vec<WorkerQueue>,
    /// Retried tests and the worker each last failed on, to run them elsewhere if possible.
    avoid: HashMap<usize, usize>,
    constraints: Constraints,
    stopped: bool,
    /// Hand nothing out before every worker is ready (see [`Scheduler::in_worker_order`]).
    awaits_every_worker: bool,
    /// Each test's expected seconds, from history (see [`Scheduler::with_history`]).
    seconds: Option<Vec<f64>>,
    /// The expected seconds of the tests in `units`, with history.
    remaining_seconds: f64,
    /// Tests not pooled here that may still come (a shared queue's share for this node):
    /// chunks are sized as if they were pooled.
    elsewhere: usize,
    /// See [`STEAL_PATIENCE`].
    steal_patience: Duration,
    /// Each test's module, as an index (see [`Scheduler::with_modules`]).
    modules: Option<Vec<usize>>,
}

impl Scheduler {
    pub fn new(
        dist: Dist,
        units: Vec<Vec<usize>>,
        workers: usize,
        constraints: Constraints,
    ) -> Self {
        let all: Vec<usize> = units.iter().flatten().copied().collect();
        let mut queues: Vec<WorkerQueue> = (0..workers).map(|_| WorkerQueue::default()).collect();
        let pooled = !matches!(dist, Dist::Each | Dist::No);
        // Serial tests leave their units and run last, one by one, in collection order.
        let (mut units, serial) = if pooled {
            split_serial(units, &constraints)
        } else {
            (units.into(), Vec::new())
        };
        // Modes that decide up front give each worker a share; the others share one pool.
        match dist {
            Dist::WorkSteal => {
                // An even, contiguous split: neighbouring tests tend to share fixtures. Tests
                // with constraints stay in the pool, where they are handed out one at a time
                // and so never sit in a queue another worker could steal from.
                let (free, constrained): (Vec<usize>, Vec<usize>) =
                    all.iter().partition(|&&t| !constraints.constrained(t));
                let per = free.len().div_ceil(workers.max(1));
                for (queue, share) in queues.iter_mut().zip(free.chunks(per.max(1))) {
                    queue.share = share.iter().copied().collect();
                }
                units = constrained
                    .into_iter()
                    .filter(|&t| !constraints.serial(t))
                    .map(|t| vec![t])
                    .collect();
            }
            Dist::Each | Dist::No => {
                for queue in &mut queues {
                    queue.share = all.iter().copied().collect();
                }
                units.clear();
            }
            Dist::Load | Dist::LoadScope | Dist::LoadFile | Dist::LoadGroup => {}
        }
        units.extend(serial.into_iter().map(|t| vec![t]));
        let remaining = units.iter().map(Vec::len).sum();
        Self {
            dist,
            units,
            remaining,
            workers: queues,
            avoid: HashMap::new(),
            constraints,
            stopped: false,
            awaits_every_worker: false,
            seconds: None,
            remaining_seconds: 0.0,
            elsewhere: 0,
            steal_patience: STEAL_PATIENCE,
            modules: None,
        }
    }

    /// Knows each test's module, so that `load` without history ends a chunk where a module
    /// ends rather than inside it (up to [`MAX_CHUNK`] tests, and no more than a worker's part
    /// of what is left). The rest of a module sent to another worker would pay the module's
    /// fixtures again there (pytest tears them down when a worker's next test is in another
    /// module), and without history nothing says which fixtures are cheap; with it,
    /// [`super::order`] keeps the expensive modules whole instead. A larger chunk costs no
    /// balance at the end of the run: an idle worker takes tests back from a busy one.
    pub fn with_modules(mut self, items: &[CollectedItem]) -> Self {
        let mut ids: HashMap<&str, usize> = HashMap::new();
        let modules = items
            .iter()
            .map(|item| {
                let next = ids.len();
                *ids.entry(item.file.as_str()).or_insert(next)
            })
            .collect();
        self.modules = Some(modules);
        self
    }

    /// More units to hand out (a shared queue's next batch), after those already pooled;
    /// serial tests among them wait for the rest, as at the start.
    pub fn extend(&mut self, units: Vec<Vec<usize>>) -> Vec<Command> {
        let (units, serial) = split_serial(units, &self.constraints);
        for unit in units.into_iter().chain(serial.into_iter().map(|t| vec![t])) {
            self.remaining += unit.len();
            self.remaining_seconds += self.seconds_of(&unit);
            self.units.push_back(unit);
        }
        self.fill()
    }

    /// Test `index` failed on `worker` and comes back to be retried (by way of a shared
    /// queue): it goes to another worker while one can take it, as a local retry does.
    pub fn avoid(&mut self, index: usize, worker: usize) {
        self.avoid.insert(index, worker);
    }

    /// About how many more tests may come after the pooled ones (see `elsewhere`).
    pub fn expect_more(&mut self, tests: usize) {
        self.elsewhere = tests;
    }

    /// How many units are pooled: not yet handed to any worker.
    pub fn pooled(&self) -> usize {
        self.units.len()
    }

    /// Uses each test's expected seconds (from history): `load` sizes its chunks by expected
    /// time rather than by count, and `worksteal` splits its shares up front by time.
    pub fn with_history(mut self, seconds: Vec<f64>) -> Self {
        if self.dist == Dist::WorkSteal {
            let all: Vec<usize> = self
                .workers
                .iter_mut()
                .flat_map(|q| q.share.drain(..))
                .collect();
            let total: f64 = all.iter().map(|&t| seconds[t]).sum();
            let per = total / self.workers.len().max(1) as f64;
            let (mut worker, mut acc) = (0, 0.0);
            for test in all {
                // A new share once this one holds its part (the last takes what is left).
                if acc >= per * (worker + 1) as f64 && worker + 1 < self.workers.len() {
                    worker += 1;
                }
                acc += seconds[test];
                self.workers[worker].share.push_back(test);
            }
        }
        self.remaining_seconds = self.units.iter().flatten().map(|&t| seconds[t]).sum();
        self.seconds = Some(seconds);
        self
    }

    /// The expected seconds of `tests`, with history.
    fn seconds_of<'a>(&self, tests: impl IntoIterator<Item = &'a usize>) -> f64 {
        self.seconds
            .as_ref()
            .map_or(0.0, |s| tests.into_iter().map(|&t| s[t]).sum())
    }

    /// The first units go out once every worker is ready, in worker order, as xdist's do:
    /// under `loadscope`, `loadfile` and `loadgroup` gw0 takes the largest scope, gw1 the next,
    /// whichever process came up first. Only for forked workers, which are ready within
    /// milliseconds of each other; a worker lost before it was ready is not waited for.
    pub fn in_worker_order(mut self) -> Self {
        self.awaits_every_worker |= matches!(
            self.dist,
            Dist::LoadScope | Dist::LoadFile | Dist::LoadGroup
        );
        self
    }

    /// `--shuffle`: the first units go out once every worker is ready, in worker order, under
    /// every mode that pools them (forked or spawned), so that the same seed and worker count
    /// make the same first assignment whichever process came up first. What follows depends
    /// on which worker finishes first, as it must for the run to stay balanced.
    pub fn reproducible(mut self) -> Self {
        self.awaits_every_worker = !matches!(self.dist, Dist::Each | Dist::No);
        self
    }

    fn is_serial(&self, unit: &[usize]) -> bool {
        unit.iter().any(|&t| self.constraints.serial(t))
    }

    /// Whether `worker` may take `unit` now without breaking a serial or resource constraint.
    fn allowed(&self, worker: usize, unit: &[usize]) -> bool {
        let others = || {
            self.workers
                .iter()
                .enumerate()
                .filter(move |(w, q)| *w != worker && !q.lost)
                .map(|(_, q)| q)
        };
        if self.is_serial(unit) {
            // Only once everything else has run and every other worker is idle.
            return self.units.iter().all(|u| self.is_serial(u))
                && others().all(|q| q.pending.is_empty() && q.share.is_empty());
        }
        if others().any(|q| q.pending.iter().any(|&t| self.constraints.serial(t))) {
            return false;
        }
        unit.iter()
            .flat_map(|&t| self.constraints.resources(t))
            .all(|(name, limit)| {
                let holders = others()
                    .filter(|q| {
                        q.pending
                            .iter()
                            .any(|&t| self.constraints.resources(t).iter().any(|(n, _)| n == name))
                    })
                    .count();
                holders < *limit
            })
    }

    /// The worker that runs the serial tests: the first live one.
    fn serial_worker(&self) -> Option<usize> {
        self.workers.iter().position(|q| !q.lost && !q.shut)
    }
}

impl WorkSource for Scheduler {
    // Under `each`, `no` and `worksteal` they stay with that worker's slot, for its replacement.
    fn requeue(&mut self, worker: usize, tests: Vec<usize>) -> Vec<Command> {
        if self.stopped {
            return Vec::new();
        }
        let keeps_shares = matches!(self.dist, Dist::Each | Dist::No | Dist::WorkSteal);
        if keeps_shares {
            let share = &mut self.workers[worker].share;
            for test in tests.into_iter().rev() {
                share.push_front(test);
            }
        } else if !tests.is_empty() {
            self.remaining += tests.len();
            self.remaining_seconds += self.seconds_of(&tests);
            self.units.push_front(tests);
        }
        // Even with nothing given back, the others may now take a larger share.
        self.fill()
    }

    fn retry(&mut self, failed: &TestRecord, failed_on: usize) -> Option<Vec<Command>> {
        if self.stopped {
            return Some(Vec::new());
        }
        let index = failed.index;
        self.avoid(index, failed_on);
        self.remaining += 1;
        self.remaining_seconds += self.seconds_of(&[index]);
        self.units.push_back(vec![index]);
        Some(self.fill())
    }

    fn needs_worker(&self) -> Option<usize> {
        if self.stopped {
            return None;
        }
        // A recycled slot is filled again at once, not only once nobody else can take work.
        let pooled = !self.units.is_empty();
        if let Some(w) = self
            .workers
            .iter()
            .position(|q| q.lost && (!q.share.is_empty() || (q.retired && pooled)))
        {
            return Some(w);
        }
        let accepting = self.workers.iter().any(|q| !q.lost && !q.shut);
        if self.units.is_empty() || accepting {
            return None;
        }
        self.workers.iter().position(|q| q.lost)
    }

    fn revive(&mut self, worker: usize) {
        let queue = &mut self.workers[worker];
        queue.lost = false;
        queue.retired = false;
        queue.shut = false;
        queue.ready = false;
        queue.awaiting_steal = false;
        queue.steal_deadline = None;
        queue.gave_up_stealing = false;
        queue.stolen_by = None;
    }

    fn retire(&mut self, worker: usize) {
        let queue = &mut self.workers[worker];
        queue.retired = true;
        queue.shut = true;
    }

    fn holds(&self, worker: usize, index: usize) -> bool {
        self.workers[worker].pending.contains(&index)
    }

    fn running(&self, worker: usize) -> Option<usize> {
        self.workers[worker].pending.front().copied()
    }

    fn is_ready(&self, worker: usize) -> bool {
        self.workers[worker].ready
    }

    fn steal_pending(&self, worker: usize) -> bool {
        self.workers[worker].stolen_by.is_some()
    }

    fn worker_ready(&mut self, worker: usize) -> Vec<Command> {
        self.workers[worker].ready = true;
        if self.stopped {
            // It started after the run was stopped: it has nothing to do.
            self.workers[worker].shut = true;
            return vec![Command::Shutdown {
                worker,
                discard: true,
            }];
        }
        self.fill()
    }

    fn test_done(&mut self, worker: usize, index: usize) -> Vec<Command> {
        let pending = &mut self.workers[worker].pending;
        if let Some(at) = pending.iter().position(|&i| i == index) {
            pending.remove(at);
        }
        self.fill()
    }

    fn released(&mut self, victim: usize, indices: Vec<usize>) -> Vec<Command> {
        let thief = self.workers[victim].stolen_by.take();
        self.workers[victim]
            .pending
            .retain(|index| !indices.contains(index));
        let mut commands = Vec::new();
        if let Some(thief) = thief {
            let queue = &mut self.workers[thief];
            queue.awaiting_steal = false;
            queue.steal_deadline = None;
            // A thief that died and was replaced since it asked is a new process, not yet
            // ready for tests (a `run` sent now would be lost): the pool keeps them meanwhile.
            if !indices.is_empty() && queue.ready && !queue.lost && !queue.shut && !self.stopped {
                queue.pending.extend(&indices);
                commands.push(Command::Run {
                    worker: thief,
                    indices,
                });
            } else {
                self.units.extend(indices.into_iter().map(|i| vec![i]));
            }
        }
        commands.extend(self.fill());
        commands
    }

    fn worker_lost(&mut self, worker: usize) -> Vec<usize> {
        let queue = &mut self.workers[worker];
        queue.lost = true;
        if let Some(thief) = queue.stolen_by.take() {
            self.workers[thief].awaiting_steal = false;
            self.workers[thief].steal_deadline = None;
        }
        self.workers[worker].pending.drain(..).collect()
    }

    fn stop(&mut self) -> Vec<Command> {
        self.stopped = true;
        self.units.clear();
        self.remaining = 0;
        self.remaining_seconds = 0.0;
        let mut commands = Vec::new();
        for (worker, queue) in self.workers.iter_mut().enumerate() {
            queue.share.clear();
            if !queue.lost {
                queue.shut = true;
                commands.push(Command::Shutdown {
                    worker,
                    discard: true,
                });
            }
        }
        commands
    }

    fn deadline(&self) -> Option<Instant> {
        if self.stopped {
            return None;
        }
        self.workers.iter().filter_map(|q| q.steal_deadline).min()
    }

    /// A thief waited [`STEAL_PATIENCE`] in vain: it finishes with what it holds.
    fn on_deadline(&mut self) -> Vec<Command> {
        let now = Instant::now();
        for queue in &mut self.workers {
            if queue.steal_deadline.is_some_and(|at| at <= now) {
                queue.steal_deadline = None;
                queue.awaiting_steal = false;
                queue.gave_up_stealing = true;
            }
        }
        self.fill()
    }
}

impl Scheduler {
    /// Tops up every ready worker; shuts down those with nothing left to get. A pass can
    /// empty the pool after an earlier worker was looked at, so passes repeat until nothing
    /// changes.
    fn fill(&mut self) -> Vec<Command> {
        let mut commands = Vec::new();
        loop {
            let pass = self.fill_pass();
            if pass.is_empty() {
                return commands;
            }
            commands.extend(pass);
        }
    }

    fn fill_pass(&mut self) -> Vec<Command> {
        let mut commands = Vec::new();
        if self.stopped {
            return commands;
        }
        if self.awaits_every_worker {
            if self.workers.iter().any(|q| !q.ready && !q.lost) {
                return commands;
            }
            self.awaits_every_worker = false;
        }
        let live = self.workers.iter().filter(|q| !q.lost).count().max(1);
        for worker in 0..self.workers.len() {
            let queue = &self.workers[worker];
            if !queue.ready || queue.shut || queue.lost {
                continue;
            }
            let must = queue.pending.len() < 2;
            if must || self.runs_low(worker, live) {
                let mut batch: Vec<usize> = self.workers[worker].share.drain(..).collect();
                // A worker running low takes one more unit (a chunk).
                let hold = if must {
                    self.fair_hold()
                } else {
                    self.workers[worker].pending.len() + 1
                };
                while self.workers[worker].pending.len() + batch.len() < hold {
                    // What the worker holds counts: behind a long test, a single successor.
                    let queue = &self.workers[worker].pending;
                    let held = self.seconds_of(queue.iter().chain(&batch));
                    let Some(unit) = self.next_unit(worker, live, held) else {
                        break;
                    };
                    batch.extend(unit);
                }
                if !batch.is_empty() {
                    self.workers[worker].pending.extend(&batch);
                    commands.push(Command::Run {
                        worker,
                        indices: batch,
                    });
                }
            }
            let only_serial_left =
                !self.units.is_empty() && self.units.iter().all(|u| self.is_serial(u));
            let waits_for_serial = only_serial_left && self.serial_worker() == Some(worker);
            // Nothing in the pool this worker could take.
            let dry = self.units.is_empty() || (only_serial_left && !waits_for_serial);
            let queue = &self.workers[worker];
            if self.dist == Dist::Load
                && dry
                && queue.pending.len() <= STEAL_AHEAD
                && !queue.awaiting_steal
                && !queue.gave_up_stealing
            {
                commands.extend(self.steal_for(worker));
            }
            if self.workers[worker].pending.len() >= 2 || !dry {
                continue;
            }
            // Fewer than two in hand and the pool is empty: more must come, or the worker
            // must be told that none will, else it waits forever for its last test's successor.
            if self.workers[worker].awaiting_steal {
                continue;
            }
            if self.dist == Dist::WorkSteal {
                if let Some(command) = self.steal_for(worker) {
                    commands.push(command);
                    continue;
                }
                if self.steals_in_flight() {
                    continue; // released tests may still come back to the pool
                }
            }
            // (Under `load` a victim answers before it can run dry, so it is never shut
            // before then, and takes back what a thief that finished meanwhile cannot.)
            self.workers[worker].shut = true;
            commands.push(Command::Shutdown {
                worker,
                discard: false,
            });
        }
        commands
    }

    /// Under `load`, whether `worker`, which still holds its next test, runs low enough to be
    /// sent more now (see [`REFILL_TESTS`]); only while every slot takes work (one starting,
    /// replaced or recycled gets its share first) and the pool holds more than a few tests per
    /// worker, so that the end of the run still spreads over them all.
    fn runs_low(&self, worker: usize, live_workers: usize) -> bool {
        let steady = self.workers.iter().all(|q| q.ready && !q.shut && !q.lost);
        if self.dist != Dist::Load || !steady || self.units.len() < live_workers * REFILL_TESTS {
            return false;
        }
        let pending = &self.workers[worker].pending;
        match self.seconds {
            Some(_) => self.seconds_of(pending) < REFILL_SECONDS,
            None => pending.len() < REFILL_TESTS,
        }
    }

    /// How many tests a worker should hold: two (one running, its successor known), but near
    /// the end of the pool no more than a fair share of what is left, counting what workers
    /// already hold, so that a few remaining tests still spread over the workers (those still
    /// starting included).
    fn fair_hold(&self) -> usize {
        let accepting = self.workers.iter().filter(|q| !q.shut && !q.lost);
        let (count, held) = accepting.fold((0, 0), |(n, h), q| (n + 1, h + q.pending.len()));
        (self.units.len() + held).div_ceil(count.max(1)).clamp(1, 2)
    }

    /// The next unit for `worker`; under `load`, a chunk of single tests sized to what is
    /// left (with history, less the expected time of the `held_seconds` it holds already). A retried test waits for another worker while one can still take it.
    fn next_unit(
        &mut self,
        worker: usize,
        live_workers: usize,
        held_seconds: f64,
    ) -> Option<Vec<usize>> {
        let others_accept = self
            .workers
            .iter()
            .enumerate()
            .any(|(w, q)| w != worker && !q.lost && !q.shut);
        let acceptable = |unit: &Vec<usize>| {
            (!others_accept || unit.first().and_then(|t| self.avoid.get(t)) != Some(&worker))
                && self.allowed(worker, unit)
        };
        let at = self.units.iter().position(acceptable)?;
        let mut unit = self.units.remove(at)?;
        if self.dist == Dist::Load && !unit.iter().any(|&t| self.constraints.constrained(t)) {
            // A quarter of a worker's part of what is left, in tests or, with history, in
            // expected time: large chunks early, single tests at the end.
            let chunk =
                ((self.remaining + self.elsewhere) / (4 * live_workers)).clamp(1, MAX_CHUNK);
            let chunk_seconds = self.remaining_seconds / (4 * live_workers) as f64;
            let seconds = self.seconds.as_deref();
            let full = |unit: &Vec<usize>| match seconds {
                Some(s) => {
                    unit.len() >= MAX_CHUNK
                        || held_seconds + unit.iter().map(|&t| s[t]).sum::<f64>() >= chunk_seconds
                }
                None => unit.len() >= chunk,
            };
            while !full(&unit) && self.free_front().is_some() {
                unit.extend(self.units.pop_front().unwrap_or_default());
            }
            // (One worker runs every chunk in turn, which splits no module.)
            if seconds.is_none() && live_workers > 1 {
                // No further than a worker's part of what is left: a few remaining tests
                // still spread over the workers.
                let part = (self.remaining + self.elsewhere).div_ceil(live_workers);
                while unit.len() < part.min(MAX_CHUNK) && self.continues_module(&unit) {
                    unit.extend(self.units.pop_front().unwrap_or_default());
                }
            }
        }
        self.remaining = self.remaining.saturating_sub(unit.len());
        self.remaining_seconds = (self.remaining_seconds - self.seconds_of(&unit)).max(0.0);
        Some(unit)
    }

    /// The next pooled unit, if every test in it may go to any worker (see [`Self::movable`]):
    /// only such a unit may join a `load` chunk.
    fn free_front(&self) -> Option<&Vec<usize>> {
        self.units
            .front()
            .filter(|next| next.iter().all(|&t| self.movable(t)))
    }

    /// Whether the next pooled unit is free and of the module `chunk` ends in.
    fn continues_module(&self, chunk: &[usize]) -> bool {
        let (Some(modules), Some(&last)) = (&self.modules, chunk.last()) else {
            return false;
        };
        self.free_front()
            .is_some_and(|next| next.iter().all(|&t| modules[t] == modules[last]))
    }

    /// Whether test `t` may go to any worker: one with a serial or resource constraint, or a
    /// retry kept away from the worker it failed on, goes only where the scheduler places it.
    fn movable(&self, t: usize) -> bool {
        !self.constraints.constrained(t) && !self.avoid.contains_key(&t)
    }

    /// How many of `queue`'s pending tests a thief may take: its first is running and its
    /// second may be committed as the running test's `nextitem`, and a worker releases from
    /// the end of its queue, so only the movable tests after those two and after the last one
    /// that is not movable.
    fn stealable(&self, queue: &WorkerQueue) -> usize {
        let tail = queue.pending.iter().skip(2).rev();
        tail.take_while(|&&t| self.movable(t)).count()
    }

    /// Asks the worker that can give most to give `thief` half of what it can, but never so
    /// much that the thief ends up holding more than it: two workers near the end then do
    /// not pass tests back and forth.
    fn steal_for(&mut self, thief: usize) -> Option<Command> {
        let holds = self.workers[thief].pending.len();
        let (victim, count) = self
            .workers
            .iter()
            .enumerate()
            .filter(|(w, q)| *w != thief && !q.lost && !q.retired && q.stolen_by.is_none())
            .map(|(w, q)| {
                let balanced = q.pending.len().saturating_sub(holds) / 2;
                (w, self.stealable(q).div_ceil(2).min(balanced))
            })
            .max_by_key(|&(_, n)| n)?;
        if count == 0 {
            return None;
        }
        self.workers[victim].stolen_by = Some(thief);
        let queue = &mut self.workers[thief];
        queue.awaiting_steal = true;
        if self.dist == Dist::Load {
            queue.steal_deadline = Some(Instant::now() + self.steal_patience);
        }
        Some(Command::Steal {
            worker: victim,
            count,
        })
    }

    fn steals_in_flight(&self) -> bool {
        self.workers.iter().any(|q| q.stolen_by.is_some())
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;

    fn item(nodeid: &str, group: Option<&str>) -> CollectedItem {
        let file = nodeid.split("::").next().unwrap().to_owned();
        let parts: Vec<&str> = nodeid.split("::").collect();
        let scope = if parts.len() > 2 {
            parts[..parts.len() - 1].join("::")
        } else {
            file.clone()
        };
        CollectedItem {
            nodeid: nodeid.into(),
            file,
            scope,
            group: group.map(Into::into),
            timeout: None,
            reruns: None,
            serial: false,
            resources: Vec::new(),
            display: None,
        }
    }

    fn suite() -> Vec<CollectedItem> {
        vec![
            item("a.py::t1", Some("g")),
            item("a.py::C::t2", None),
            item("a.py::C::t3", None),
            item("b.py::t4", Some("g")),
            item("b.py::t5", None),
        ]
    }

    #[test]
    fn units_follow_the_dist_mode() {
        let items = suite();
        assert_eq!(
            units(Dist::LoadFile, &items, false),
            vec![vec![0, 1, 2], vec![3, 4]]
        );
        assert_eq!(
            units(Dist::LoadScope, &items, false),
            vec![vec![0], vec![1, 2], vec![3, 4]]
        );
        assert_eq!(
            units(Dist::LoadGroup, &items, false),
            vec![vec![0, 3], vec![1], vec![2], vec![4]]
        );
        assert_eq!(units(Dist::Load, &items, false).len(), 5);
    }

    #[test]
    fn reorder_hands_out_the_largest_units_first_and_keeps_ties_in_collection_order() {
        let items = suite();
        assert_eq!(
            units(Dist::LoadScope, &items, true),
            vec![vec![1, 2], vec![3, 4], vec![0]]
        );
        assert_eq!(
            units(Dist::LoadGroup, &items, true),
            vec![vec![0, 3], vec![1], vec![2], vec![4]]
        );
        assert_eq!(units(Dist::Load, &items, true).len(), 5);
        let reordered = units(Dist::LoadScope, &items, true);
        let mut s = Scheduler::new(Dist::LoadScope, reordered, 2, Constraints::default());
        let first = s.worker_ready(0);
        assert!(
            matches!(&first[..], [Command::Run { indices, .. }, ..] if indices[..2] == [1, 2]),
            "the largest scope goes out first: {first:?}"
        );
    }

    #[test]
    fn in_worker_order_gives_gw0_the_largest_scope_whoever_is_ready_first() {
        let items = suite();
        let mut s = Scheduler::new(
            Dist::LoadScope,
            units(Dist::LoadScope, &items, true),
            2,
            Constraints::default(),
        )
        .in_worker_order();
        assert!(
            s.worker_ready(1).is_empty(),
            "nothing goes out before gw0 is ready"
        );
        let commands = s.worker_ready(0);
        let first_of = |worker: usize| {
            commands.iter().find_map(|c| match c {
                Command::Run { worker: w, indices } if *w == worker => Some(indices[0]),
                _ => None,
            })
        };
        assert_eq!(
            first_of(0),
            Some(1),
            "gw0 takes the largest scope: {commands:?}"
        );
        assert_eq!(first_of(1), Some(3), "gw1 the next: {commands:?}");
    }

    /// The first `Run` of each worker, by worker, once `ready` (slots in that order) said
    /// they are ready.
    fn first_assignment(mut s: Scheduler, ready: &[usize]) -> BTreeMap<usize, Vec<usize>> {
        let mut first = BTreeMap::new();
        for &w in ready {
            for command in s.worker_ready(w) {
                if let Command::Run { worker, indices } = command {
                    first.entry(worker).or_insert(indices);
                }
            }
        }
        first
    }

    #[test]
    fn a_shuffled_run_makes_the_same_first_assignment_whichever_worker_is_ready_first() {
        let items: Vec<CollectedItem> = (0..40)
            .map(|i| item(&format!("f{}.py::t{i}", i % 8), None))
            .collect();
        for dist in [Dist::Load, Dist::LoadFile, Dist::WorkSteal] {
            let scheduler = |seed: u64, reproducible: bool| {
                let units = crate::work::shuffle(units(dist, &items, true), seed);
                let s = Scheduler::new(dist, units, 3, Constraints::default());
                if reproducible {
                    s.reproducible()
                } else {
                    s
                }
            };
            let seeded = first_assignment(scheduler(7, true), &[0, 1, 2]);
            assert_eq!(seeded.len(), 3, "{dist}: {seeded:?}");
            assert_eq!(
                seeded,
                first_assignment(scheduler(7, true), &[2, 0, 1]),
                "{dist}"
            );
            assert_ne!(
                seeded,
                first_assignment(scheduler(8, true), &[0, 1, 2]),
                "{dist}: another seed, another assignment"
            );
            if dist != Dist::WorkSteal {
                // The control: without waiting, the first worker ready takes the first units.
                assert_ne!(
                    first_assignment(scheduler(7, false), &[0, 1, 2]),
                    first_assignment(scheduler(7, false), &[2, 0, 1]),
                    "{dist}"
                );
            }
        }
    }

    #[test]
    fn serial_tests_still_go_last_in_collection_order_in_a_shuffled_run() {
        let items: Vec<CollectedItem> = (0..10)
            .map(|i| item(&format!("a.py::t{i}"), None))
            .collect();
        let constraints = Constraints {
            serial: (0..10).map(|i| i == 2 || i == 7).collect(),
            resources: vec![Vec::new(); 10],
        };
        let shuffled = crate::work::shuffle(units(Dist::Load, &items, true), 3);
        assert_ne!(shuffled, units(Dist::Load, &items, true));
        let s = Scheduler::new(Dist::Load, shuffled, 2, constraints);
        let last: Vec<&Vec<usize>> = s.units.iter().skip(8).collect();
        assert_eq!(last, [&vec![2], &vec![7]], "{:?}", s.units);
    }

    #[test]
    fn in_worker_order_does_not_wait_for_a_worker_lost_before_it_was_ready() {
        let items = suite();
        let mut s = Scheduler::new(
            Dist::LoadFile,
            units(Dist::LoadFile, &items, false),
            2,
            Constraints::default(),
        )
        .in_worker_order();
        assert!(s.worker_ready(0).is_empty());
        assert!(s.worker_lost(1).is_empty());
        assert!(
            matches!(
                &s.requeue(1, Vec::new())[..],
                [Command::Run { worker: 0, .. }, ..]
            ),
            "the ready worker starts once the other is gone"
        );
    }

    #[test]
    fn extended_units_go_out_after_the_pooled_ones_and_serial_tests_last() {
        let constraints = Constraints {
            serial: vec![false, true, false, false],
            resources: Vec::new(),
        };
        let mut s = Scheduler::new(Dist::Load, vec![vec![3]], 1, constraints);
        assert!(
            s.extend(vec![vec![0], vec![1], vec![2]]).is_empty(),
            "no one is ready"
        );
        assert_eq!(s.pooled(), 4);
        let mut ran = Vec::new();
        let mut commands: VecDeque<Command> = s.worker_ready(0).into();
        while let Some(command) = commands.pop_front() {
            if let Command::Run { indices, .. } = command {
                for index in indices {
                    ran.push(index);
                    commands.extend(s.test_done(0, index));
                }
            }
        }
        assert_eq!(ran, [3, 0, 2, 1]);
        assert_eq!(s.pooled(), 0);
    }

    #[test]
    fn units_that_arrive_after_every_worker_finished_need_a_new_worker() {
        let mut s = Scheduler::new(Dist::Load, Vec::new(), 2, Constraints::default());
        for w in 0..2 {
            let commands = s.worker_ready(w);
            assert!(
                matches!(&commands[..], [Command::Shutdown { discard: false, .. }]),
                "{commands:?}"
            );
            assert!(s.worker_lost(w).is_empty());
            assert!(s.requeue(w, Vec::new()).is_empty());
        }
        assert_eq!(s.needs_worker(), None);
        assert!(s.extend(vec![vec![0, 1]]).is_empty());
        let w = s.needs_worker().expect("a slot to revive for the new unit");
        s.revive(w);
        assert!(
            matches!(&s.worker_ready(w)[..], [Command::Run { indices, .. }] if indices == &[0, 1])
        );
    }

    #[test]
    fn workers_never_outnumber_units() {
        assert_eq!(useful_workers(Dist::LoadFile, 2, 8), 2);
        assert_eq!(useful_workers(Dist::Each, 2, 8), 8);
        assert_eq!(useful_workers(Dist::No, 50, 8), 1);
    }

    /// Hands `commands` to simulated workers, in order: a `Run` extends the worker's queue,
    /// a `Shutdown` marks it, a `Steal` releases the victim's last tests (it keeps at least
    /// `keeps`, its running test and the successor it may have committed to) and the
    /// scheduler's answer is handed on in turn.
    fn deliver(
        s: &mut Scheduler,
        commands: &mut VecDeque<Command>,
        queues: &mut [VecDeque<usize>],
        shut: &mut [bool],
        keeps: usize,
    ) {
        while let Some(c) = commands.pop_front() {
            match c {
                Command::Run { worker, indices } => queues[worker].extend(indices),
                Command::Shutdown { worker, .. } => shut[worker] = true,
                Command::Steal { worker, count } => {
                    let len = queues[worker].len();
                    let keep = len.saturating_sub(count).max(keeps).min(len);
                    let released: Vec<usize> = queues[worker].drain(keep..).collect();
                    commands.extend(s.released(worker, released));
                }
            }
        }
    }

    /// Drives a scheduler with workers that finish their tests in order, round-robin, and
    /// returns which worker ran which test.
    fn simulate(dist: Dist, workers: usize) -> Vec<Vec<usize>> {
        simulate_items(dist, workers, &suite())
    }

    fn simulate_items(dist: Dist, workers: usize, items: &[CollectedItem]) -> Vec<Vec<usize>> {
        simulate_with(dist, workers, items, Constraints::default()).0
    }

    /// Also returns the tests that ran in each round: those overlapped in time.
    fn simulate_with(
        dist: Dist,
        workers: usize,
        items: &[CollectedItem],
        constraints: Constraints,
    ) -> (Vec<Vec<usize>>, Vec<Vec<usize>>) {
        let mut s = Scheduler::new(dist, units(dist, items, false), workers, constraints)
            .with_modules(items);
        let mut queues: Vec<VecDeque<usize>> = vec![VecDeque::new(); workers];
        let mut shut = vec![false; workers];
        let mut ran = vec![Vec::new(); workers];
        let mut rounds = Vec::new();
        let mut commands: VecDeque<Command> =
            (0..workers).flat_map(|w| s.worker_ready(w)).collect();
        loop {
            deliver(&mut s, &mut commands, &mut queues, &mut shut, 1);
            let mut round = Vec::new();
            for w in 0..workers {
                if queues[w].len() >= 2 || (shut[w] && !queues[w].is_empty()) {
                    round.push((w, queues[w].pop_front().unwrap()));
                }
            }
            if round.is_empty() {
                assert!(
                    shut.iter().all(|&s| s),
                    "a worker waits forever: {queues:?}"
                );
                return (ran, rounds);
            }
            for &(w, index) in &round {
                ran[w].push(index);
                commands.extend(s.test_done(w, index));
            }
            rounds.push(round.into_iter().map(|(_, i)| i).collect());
        }
    }

    fn sorted(ran: &[Vec<usize>]) -> Vec<usize> {
        let mut all: Vec<usize> = ran.iter().flatten().copied().collect();
        all.sort();
        all
    }

    #[test]
    fn every_mode_runs_every_test_once_and_ends() {
        for dist in [
            Dist::Load,
            Dist::LoadScope,
            Dist::LoadFile,
            Dist::LoadGroup,
            Dist::WorkSteal,
        ] {
            for workers in 1..=3 {
                let ran = simulate(dist, workers);
                assert_eq!(sorted(&ran), vec![0, 1, 2, 3, 4], "{dist} -n {workers}");
            }
        }
    }

    #[test]
    fn a_lone_test_is_not_left_waiting_for_a_successor() {
        let one = vec![item("a.py::t", None)];
        let three = [
            item("a.py::t1", None),
            item("a.py::t2", None),
            item("a.py::t3", None),
        ];
        for dist in [
            Dist::Load,
            Dist::LoadFile,
            Dist::WorkSteal,
            Dist::Each,
            Dist::No,
        ] {
            assert_eq!(sorted(&simulate_items(dist, 1, &one)), vec![0], "{dist}");
            let workers = useful_workers(dist, units(dist, &three, false).len(), 2);
            let ran = simulate_items(dist, workers, &three);
            let expected = if dist == Dist::Each {
                vec![0, 0, 1, 1, 2, 2]
            } else {
                vec![0, 1, 2]
            };
            assert_eq!(sorted(&ran), expected, "{dist}");
        }
    }

    #[test]
    fn serial_tests_run_alone_and_resources_within_their_limit() {
        let items: Vec<CollectedItem> = (0..12)
            .map(|i| item(&format!("f{}.py::t{i}", i % 3), None))
            .collect();
        let mut constraints = Constraints {
            serial: vec![false; 12],
            resources: vec![Vec::new(); 12],
        };
        constraints.serial[1] = true;
        constraints.serial[7] = true;
        for t in [2, 3, 5, 8, 9] {
            constraints.resources[t] = vec![("redis".into(), 1)];
        }
        for dist in [Dist::Load, Dist::LoadFile, Dist::LoadScope, Dist::WorkSteal] {
            for workers in 1..=3 {
                let (ran, rounds) = simulate_with(dist, workers, &items, constraints.clone());
                assert_eq!(
                    sorted(&ran),
                    (0..12).collect::<Vec<_>>(),
                    "{dist} -n {workers}"
                );
                for round in &rounds {
                    if round.iter().any(|&t| constraints.serial[t]) {
                        assert_eq!(
                            round.len(),
                            1,
                            "{dist} -n {workers}: serial overlapped {round:?}"
                        );
                    }
                    let redis = round
                        .iter()
                        .filter(|&&t| !constraints.resources[t].is_empty());
                    assert!(
                        redis.count() <= 1,
                        "{dist} -n {workers}: redis overlapped {round:?}"
                    );
                }
            }
        }
    }

    #[test]
    fn requeueing_nothing_leaves_no_empty_unit() {
        let items = suite();
        let mut s = Scheduler::new(
            Dist::Load,
            units(Dist::Load, &items, false),
            2,
            Constraints::default(),
        );
        s.worker_ready(0);
        s.requeue(1, Vec::new());
        assert!(s.units.iter().all(|u| !u.is_empty()));
    }

    /// How many tests `worker` held when each `Run` for it came, as it finishes `tests` of
    /// them one by one (its running test first).
    fn held_at_each_run(s: &mut Scheduler, worker: usize, tests: usize) -> Vec<usize> {
        let mut held_at = Vec::new();
        for _ in 0..tests {
            let running = s.running(worker).expect("it holds tests");
            let held = s.workers[worker].pending.len() - 1;
            let commands = s.test_done(worker, running);
            if commands
                .iter()
                .any(|c| matches!(c, Command::Run { worker: w, .. } if *w == worker))
            {
                held_at.push(held);
            }
        }
        held_at
    }

    /// A scheduler of `dist` for two workers over `n` tests of one module.
    fn two_workers_over(dist: Dist, n: usize) -> Scheduler {
        let items: Vec<CollectedItem> =
            (0..n).map(|i| item(&format!("a.py::t{i}"), None)).collect();
        Scheduler::new(dist, units(dist, &items, false), 2, Constraints::default())
    }

    #[test]
    fn a_worker_running_low_gets_its_next_chunk_before_its_last_two() {
        let mut s = two_workers_over(Dist::Load, 400);
        s.worker_ready(0);
        // gw1 is still starting: gw0 gets more only once down to its last test.
        let first = s.workers[0].pending.len();
        assert_eq!(held_at_each_run(&mut s, 0, first - 1), [1]);
        s.worker_ready(1);
        // Both take work: the next chunk comes while a few tests are left, not at the last.
        let held = s.workers[0].pending.len();
        assert_eq!(
            held_at_each_run(&mut s, 0, held)[0],
            REFILL_TESTS - 1,
            "held {held}"
        );
        // Near the end of the pool the last tests still spread one by one.
        let mut ran = [0, 0];
        while let Some((w, running)) = (0..2).find_map(|w| s.running(w).map(|t| (w, t))) {
            ran[w] += 1;
            s.test_done(w, running);
        }
        assert!(s.units.is_empty());
        assert!(ran[1] > 0, "{ran:?}");
    }

    #[test]
    fn with_history_a_worker_runs_low_by_expected_time() {
        // 2 ms each: below REFILL_SECONDS once it holds two (the running one and one more).
        let mut s = two_workers_over(Dist::Load, 400).with_history(vec![0.002; 400]);
        s.worker_ready(0);
        s.worker_ready(1);
        let held = s.workers[0].pending.len();
        assert_eq!(held_at_each_run(&mut s, 0, held)[0], 2, "held {held}");
    }

    #[test]
    fn a_few_tests_spread_over_the_workers() {
        let two = [item("a.py::t1", None), item("b.py::t2", None)];
        for dist in [Dist::Load, Dist::LoadFile, Dist::LoadScope] {
            let ran = simulate_items(dist, 2, &two);
            assert_eq!(
                ran.iter().map(Vec::len).collect::<Vec<_>>(),
                vec![1, 1],
                "{dist}"
            );
        }
        // Under `load` also when they share a module: a chunk runs on to its module's end
        // only as far as a worker's part of what is left.
        let four: Vec<CollectedItem> = (0..4).map(|i| item(&format!("a.py::t{i}"), None)).collect();
        let ran = simulate_items(Dist::Load, 2, &four);
        assert_eq!(ran.iter().map(Vec::len).collect::<Vec<_>>(), [2, 2]);
    }

    #[test]
    fn grouped_modes_keep_units_together() {
        for (dist, together) in [
            (Dist::LoadFile, vec![0, 1, 2]),
            (Dist::LoadScope, vec![1, 2]),
            (Dist::LoadGroup, vec![0, 3]),
        ] {
            let ran = simulate(dist, 2);
            assert!(
                ran.iter().any(|r| together.iter().all(|i| r.contains(i))),
                "{dist}: {ran:?}"
            );
        }
    }

    #[test]
    fn each_runs_everything_everywhere() {
        let ran = simulate(Dist::Each, 3);
        assert!(ran.iter().all(|r| r == &vec![0, 1, 2, 3, 4]), "{ran:?}");
    }

    /// Runs `items` as workers do whose processes end after `max` tests each (as
    /// `--max-worker-tests` makes them), each slot filled again at once: what each process of
    /// each slot ran, in order.
    fn simulate_recycling(
        dist: Dist,
        workers: usize,
        items: &[CollectedItem],
        max: usize,
    ) -> Vec<Vec<Vec<usize>>> {
        let mut s = Scheduler::new(
            dist,
            units(dist, items, false),
            workers,
            Constraints::default(),
        );
        let mut queues: Vec<VecDeque<usize>> = vec![VecDeque::new(); workers];
        let mut shut = vec![false; workers];
        let mut ran = vec![vec![Vec::new()]; workers];
        let mut commands: VecDeque<Command> =
            (0..workers).flat_map(|w| s.worker_ready(w)).collect();
        loop {
            deliver(&mut s, &mut commands, &mut queues, &mut shut, 1);
            let Some(w) =
                (0..workers).find(|&w| queues[w].len() >= 2 || (shut[w] && !queues[w].is_empty()))
            else {
                assert!(shut.iter().all(|&s| s), "a worker waits: {queues:?}");
                return ran;
            };
            let index = queues[w].pop_front().unwrap();
            let process = ran[w].last_mut().unwrap();
            process.push(index);
            if process.len() < max {
                commands.extend(s.test_done(w, index));
                continue;
            }
            // The worker says it recycles with this test's report, and ends its session.
            s.retire(w);
            commands.extend(s.test_done(w, index));
            queues[w].clear();
            let held = s.worker_lost(w);
            commands.extend(s.requeue(w, held));
            while let Some(slot) = s.needs_worker() {
                s.revive(slot);
                ran[slot].push(Vec::new());
                shut[slot] = false;
                commands.extend(s.worker_ready(slot));
            }
        }
    }

    #[test]
    fn recycled_workers_lose_nothing_run_nothing_twice_and_stay_within_their_limit() {
        let items: Vec<CollectedItem> = (0..20)
            .map(|n| item(&format!("m{}.py::C::t{n}", n % 3), None))
            .collect();
        for dist in [
            Dist::Load,
            Dist::LoadScope,
            Dist::LoadFile,
            Dist::WorkSteal,
            Dist::Each,
            Dist::No,
        ] {
            for workers in 1..=3 {
                let ran = simulate_recycling(dist, workers, &items, 3);
                let context = format!("{dist} -n {workers}: {ran:?}");
                let processes = ran.iter().flatten();
                assert!(processes.clone().all(|p| p.len() <= 3), "{context}");
                if matches!(dist, Dist::Each | Dist::No) {
                    for slot in &ran {
                        let all: Vec<usize> = slot.iter().flatten().copied().collect();
                        assert_eq!(all, (0..20).collect::<Vec<_>>(), "{context}");
                    }
                } else {
                    let slots: Vec<Vec<usize>> = ran.iter().map(|s| s.concat()).collect();
                    assert_eq!(sorted(&slots), (0..20).collect::<Vec<_>>(), "{context}");
                }
            }
        }
    }

    #[test]
    fn a_recycled_slot_is_filled_again_while_another_worker_takes_work() {
        let mut s = two_workers_over(Dist::Load, 40);
        s.worker_ready(0);
        s.worker_ready(1);
        let first = s.running(0).unwrap();
        s.retire(0);
        let commands = s.test_done(0, first);
        assert!(
            !commands
                .iter()
                .any(|c| matches!(c, Command::Run { worker: 0, .. })),
            "a retiring worker gets nothing more: {commands:?}"
        );
        assert_eq!(s.needs_worker(), None, "its process is still ending");
        let held = s.worker_lost(0);
        assert!(!held.is_empty());
        s.requeue(0, held.clone());
        assert_eq!(
            s.needs_worker(),
            Some(0),
            "gw1 still accepts, gw0 is filled anyway"
        );
        s.revive(0);
        let commands = s.worker_ready(0);
        assert!(
            matches!(&commands[..], [Command::Run { worker: 0, indices }, ..] if indices[0] == held[0]),
            "what it held comes back first: {commands:?}"
        );
    }

    #[test]
    fn tests_released_to_a_thief_replaced_meanwhile_wait_until_it_is_ready() {
        let mut s = two_workers_over(Dist::WorkSteal, 8);
        s.worker_ready(0);
        s.worker_ready(1);
        let mine: Vec<usize> = s.workers[1].pending.iter().copied().collect();
        let commands: Vec<Command> = mine.iter().flat_map(|&t| s.test_done(1, t)).collect();
        assert!(
            commands
                .iter()
                .any(|c| matches!(c, Command::Steal { worker: 0, .. })),
            "{commands:?}"
        );
        // The thief dies before the victim answers; a new process takes its slot.
        let lost = s.worker_lost(1);
        s.requeue(1, lost);
        s.revive(1);
        let released = vec![*s.workers[0].pending.back().unwrap()];
        let commands = s.released(0, released.clone());
        assert!(
            !commands
                .iter()
                .any(|c| matches!(c, Command::Run { worker: 1, .. })),
            "a run for a process that is not ready is lost: {commands:?}"
        );
        let commands = s.worker_ready(1);
        assert!(
            commands.contains(&Command::Run {
                worker: 1,
                indices: released
            }),
            "{commands:?}"
        );
    }

    #[test]
    fn stop_discards_queued_work() {
        let items = suite();
        let mut s = Scheduler::new(
            Dist::Load,
            units(Dist::Load, &items, false),
            1,
            Constraints::default(),
        );
        s.worker_ready(0);
        assert_eq!(
            s.stop(),
            vec![Command::Shutdown {
                worker: 0,
                discard: true
            }]
        );
        assert!(s.test_done(0, 0).is_empty());
    }

    /// Runs `seconds.len()` tests of these durations (one file each) on `workers` workers in
    /// simulated time, each worker running what it was sent in order, and returns when the
    /// last one finished; with `history`, the run is ordered and chunked by the durations.
    fn makespan(dist: Dist, seconds: &[f64], workers: usize, history: bool) -> f64 {
        makespan_in(
            dist,
            seconds,
            &(0..seconds.len()).collect::<Vec<_>>(),
            workers,
            history,
        )
    }

    /// [`makespan`] with test `i` in file `files[i]`.
    fn makespan_in(
        dist: Dist,
        seconds: &[f64],
        files: &[usize],
        workers: usize,
        history: bool,
    ) -> f64 {
        makespan_with_fixtures(dist, seconds, files, 0.0, workers, history)
    }

    /// [`makespan_in`] where every file has a module fixture of `fixture` seconds, set up
    /// again each time a worker's test follows one from another file, as pytest does.
    fn makespan_with_fixtures(
        dist: Dist,
        seconds: &[f64],
        files: &[usize],
        fixture: f64,
        workers: usize,
        history: bool,
    ) -> f64 {
        let items: Vec<CollectedItem> = files
            .iter()
            .enumerate()
            .map(|(i, f)| item(&format!("t{f}.py::test_{i}"), None))
            .collect();
        let expected = crate::durations::Expected {
            seconds: seconds.to_vec(),
            setup: vec![0.0; seconds.len()],
            known: if history { seconds.len() } else { 0 },
        };
        let units = crate::work::order(
            dist,
            units(dist, &items, true),
            &items,
            &expected,
            workers,
            true,
        );
        let mut s =
            Scheduler::new(dist, units, workers, Constraints::default()).with_modules(&items);
        if history {
            s = s.with_history(seconds.to_vec());
        }
        let mut queues: Vec<VecDeque<usize>> = vec![VecDeque::new(); workers];
        let mut shut = vec![false; workers];
        // When each worker's running test ends, if it runs one.
        let mut ends: Vec<Option<f64>> = vec![None; workers];
        // The file of each worker's last test, whose fixture it holds.
        let mut holds: Vec<Option<usize>> = vec![None; workers];
        let mut now = 0.0_f64;
        let mut commands: VecDeque<Command> =
            (0..workers).flat_map(|w| s.worker_ready(w)).collect();
        loop {
            deliver(&mut s, &mut commands, &mut queues, &mut shut, 2);
            for w in 0..workers {
                if ends[w].is_none() {
                    if let Some(&t) = queues[w].front() {
                        let setup = if holds[w] == Some(files[t]) {
                            0.0
                        } else {
                            fixture
                        };
                        holds[w] = Some(files[t]);
                        ends[w] = Some(now + setup + seconds[t]);
                    }
                }
            }
            let Some((w, end)) = ends
                .iter()
                .enumerate()
                .filter_map(|(w, e)| e.map(|e| (w, e)))
                .min_by(|a, b| a.1.total_cmp(&b.1))
            else {
                return now;
            };
            now = end;
            ends[w] = None;
            let test = queues[w].pop_front().unwrap();
            commands.extend(s.test_done(w, test));
        }
    }

    #[test]
    fn with_history_a_long_test_last_in_collection_order_starts_first() {
        let mut seconds = vec![0.1; 20];
        seconds.push(5.0);
        let without = makespan(Dist::Load, &seconds, 2, false);
        let with = makespan(Dist::Load, &seconds, 2, true);
        assert!(without > 5.5, "{without}");
        // The long test's successor (a worker must know it) waits behind it: one short test.
        assert!(with <= 5.1 + 1e-9, "{with}");
    }

    #[test]
    fn with_history_load_chunks_by_time_so_workers_finish_together() {
        // Long tests early, many short ones after: chunks by count would hand one worker a
        // chunk of long tests at the end.
        let mut seconds = vec![1.0; 8];
        seconds.extend(vec![0.01; 400]);
        let total: f64 = seconds.iter().sum();
        let with = makespan(Dist::Load, &seconds, 4, true);
        assert!(with <= total / 4.0 * 1.05, "{with} vs {}", total / 4.0);
    }

    #[test]
    fn with_history_worksteal_shares_are_split_by_time() {
        let seconds: Vec<f64> = (0..8).map(|i| if i < 2 { 3.0 } else { 0.5 }).collect();
        let s = Scheduler::new(
            Dist::WorkSteal,
            (0..8).map(|i| vec![i]).collect(),
            2,
            Constraints::default(),
        )
        .with_history(seconds.clone());
        let share: Vec<f64> = s
            .workers
            .iter()
            .map(|q| q.share.iter().map(|&t| seconds[t]).sum())
            .collect();
        assert_eq!(share, [6.0, 3.0]);
        // By count it would be 4 + 4 tests: 7.0 s and 2.0 s.
    }

    #[test]
    fn with_history_scope_units_go_longest_first() {
        // Three files: two short, then one of two 2 s tests.
        let (seconds, files) = ([0.1, 0.1, 0.1, 0.1, 2.0, 2.0], [0, 0, 1, 1, 2, 2]);
        let without = makespan_in(Dist::LoadFile, &seconds, &files, 2, false);
        let with = makespan_in(Dist::LoadFile, &seconds, &files, 2, true);
        assert!(with <= 4.0 + 1e-9 && with < without, "{with} {without}");
    }

    #[test]
    fn without_history_an_idle_worker_takes_tests_queued_on_a_busy_one_under_load() {
        // A run of slow tests in the middle: without history they go out in one chunk, and
        // the workers that did not get it would idle once the fast tests after it are done.
        let mut seconds = vec![0.001; 1000];
        seconds.extend(vec![0.05; 100]);
        seconds.extend(vec![0.001; 1000]);
        let ideal = seconds.iter().sum::<f64>() / 4.0;
        let span = makespan(Dist::Load, &seconds, 4, false);
        // Without taking tests back: 3.46 s.
        assert!(span <= ideal * 1.01, "{span} vs {ideal}");
    }

    #[test]
    fn without_history_load_keeps_each_module_on_one_worker() {
        // The `scoped` synthetic suite: 40 modules of 10 quick tests behind a 0.2 s module
        // fixture. Chunks cut by count alone split a module at the end of each, and ever more
        // as they shrink near the end of the run: 1.31, 1.80 and 2.76 x ideal at 2, 4 and 8
        // workers. Once fewer than a module's tests per worker are left, the last modules are
        // still spread (nothing says their fixtures cost more than the balance gained): 1.00,
        // 1.16 and 1.33.
        let files: Vec<usize> = (0..400).map(|i| i / 10).collect();
        let seconds = vec![0.005; 400];
        for (workers, bound) in [(2, 1.01), (4, 1.2), (8, 1.4)] {
            let ideal = (40.0 * 0.2 + 400.0 * 0.005) / workers as f64;
            let span = makespan_with_fixtures(Dist::Load, &seconds, &files, 0.2, workers, false);
            assert!(
                span <= ideal * bound,
                "{workers} workers: {span} vs {ideal}"
            );
        }
    }

    #[test]
    fn a_chunk_runs_on_to_the_end_of_its_module_but_no_further_than_max_chunk() {
        let items: Vec<CollectedItem> = [("a.py", 5), ("b.py", 30), ("c.py", 200)]
            .iter()
            .flat_map(|&(file, n)| (0..n).map(move |i| item(&format!("{file}::t{i}"), None)))
            .collect();
        let mut s = Scheduler::new(
            Dist::Load,
            units(Dist::Load, &items, false),
            2,
            Constraints::default(),
        )
        .with_modules(&items);
        // 235 tests over 2 workers: a chunk of 29 would stop 6 tests short of b.py's end.
        let first = s.worker_ready(0);
        assert_eq!(
            first,
            [Command::Run {
                worker: 0,
                indices: (0..35).collect()
            }]
        );
        // 200 left: a chunk of 25 runs on into c.py, but only to MAX_CHUNK tests.
        let second = s.worker_ready(1);
        assert_eq!(
            second,
            [Command::Run {
                worker: 1,
                indices: (35..35 + MAX_CHUNK).collect()
            }]
        );
    }

    #[test]
    fn only_free_tests_at_the_end_of_a_queue_can_be_stolen() {
        let mut constraints = Constraints {
            serial: vec![false; 8],
            resources: vec![Vec::new(); 8],
        };
        constraints.resources[4] = vec![("db".into(), 1)];
        let mut s = Scheduler::new(Dist::Load, Vec::new(), 2, constraints);
        s.workers[0].pending = (0..8).collect();
        // Not the running test and its successor, and nothing from the constrained test on:
        // a thief holding it could run it beside the victim's other `db` test.
        assert_eq!(s.stealable(&s.workers[0]), 3);
        // A retry kept away from a worker stays where it was placed.
        s.avoid(7, 1);
        assert_eq!(s.stealable(&s.workers[0]), 0);
    }

    #[test]
    fn under_load_a_thief_waits_for_a_busy_worker_only_so_long() {
        let mut s = two_workers_over(Dist::Load, 40);
        s.steal_patience = Duration::ZERO;
        let mut commands = s.worker_ready(0);
        commands.extend(s.worker_ready(1));
        // Worker 0 is stuck in its first test; worker 1 runs everything else it gets.
        let mut ran = Vec::new();
        let asked = loop {
            if let Some(count) = commands.iter().find_map(|c| match c {
                Command::Steal { worker: 0, count } => Some(*count),
                _ => None,
            }) {
                break count;
            }
            let test = s.running(1).expect("worker 1 holds tests until it asks");
            ran.push(test);
            commands = s.test_done(1, test);
        };
        assert!(asked > 0 && s.units.is_empty());
        // Down to its last test it waits for the answer...
        while s.workers[1].pending.len() > 1 {
            let test = s.running(1).unwrap();
            ran.push(test);
            assert!(!s.test_done(1, test).contains(&Command::Shutdown {
                worker: 1,
                discard: false
            }));
        }
        assert!(s.deadline().is_some());
        // ...until the patience runs out: then it finishes with what it holds.
        assert_eq!(
            s.on_deadline(),
            [Command::Shutdown {
                worker: 1,
                discard: false
            }]
        );
        ran.push(s.running(1).unwrap());
        // The late answer goes back to the worker that gave it, once it needs tests.
        let released: Vec<usize> = s.workers[0]
            .pending
            .iter()
            .rev()
            .take(asked)
            .rev()
            .copied()
            .collect();
        assert!(s.released(0, released.clone()).is_empty());
        while let Some(test) = s.running(0) {
            ran.push(test);
            s.test_done(0, test);
        }
        ran.sort();
        assert_eq!(ran, (0..40).collect::<Vec<_>>());
        assert!(s.workers[0].shut && s.deadline().is_none());
    }
}
