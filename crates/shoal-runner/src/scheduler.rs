//! Which worker runs which test, and when.
//!
//! The scheduler is pure bookkeeping: the dispatcher tells it what happened (a worker is ready,
//! a test is done, a worker gave tests back) and sends the [`Command`]s it answers with. That
//! keeps every `--dist` mode testable without processes.
//!
//! Workers run tests in the order they receive them and must always know a test's successor
//! before running it (pytest tears fixtures down by `nextitem`), so the scheduler keeps at least
//! two tests queued on every worker until it has nothing left, then says `Shutdown`.

use std::collections::{HashMap, VecDeque};

use shoal_protocol::CollectedItem;

use crate::options::Dist;

/// Upper bound of tests sent in one `Run` under `--dist load`: large enough that tiny tests do
/// not wait on the controller, small enough that the tail of the run stays balanced.
const MAX_CHUNK: usize = 64;

/// What the dispatcher must send.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    Run { worker: usize, indices: Vec<usize> },
    Shutdown { worker: usize, discard: bool },
    Steal { worker: usize, count: usize },
}

/// Groups test indices into the units `dist` keeps on one worker, in collection order.
pub fn units(dist: Dist, items: &[CollectedItem]) -> Vec<Vec<usize>> {
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
    units
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
    /// worksteal: waiting for a victim to release tests to it.
    awaiting_steal: bool,
    /// worksteal: the thief its current steal request serves.
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
    stopped: bool,
}

impl Scheduler {
    pub fn new(dist: Dist, units: Vec<Vec<usize>>, workers: usize) -> Self {
        let all: Vec<usize> = units.iter().flatten().copied().collect();
        let mut queues: Vec<WorkerQueue> = (0..workers).map(|_| WorkerQueue::default()).collect();
        let mut units: VecDeque<Vec<usize>> = units.into();
        // Modes that decide up front give each worker a share; the others share one pool.
        match dist {
            Dist::WorkSteal => {
                // An even, contiguous split: neighbouring tests tend to share fixtures.
                let per = all.len().div_ceil(workers.max(1));
                for (queue, share) in queues.iter_mut().zip(all.chunks(per.max(1))) {
                    queue.share = share.iter().copied().collect();
                }
                units.clear();
            }
            Dist::Each | Dist::No => {
                for queue in &mut queues {
                    queue.share = all.iter().copied().collect();
                }
                units.clear();
            }
            Dist::Load | Dist::LoadScope | Dist::LoadFile | Dist::LoadGroup => {}
        }
        let remaining = units.iter().map(Vec::len).sum();
        Self {
            dist,
            units,
            remaining,
            workers: queues,
            avoid: HashMap::new(),
            stopped: false,
        }
    }

    /// Tests that must go back to be run: those a dead worker had not finished. Under `each`
    /// and `no` they stay with that worker's slot, for its replacement.
    pub fn requeue(&mut self, worker: usize, tests: Vec<usize>) -> Vec<Command> {
        if tests.is_empty() || self.stopped {
            return Vec::new();
        }
        if matches!(self.dist, Dist::Each | Dist::No | Dist::WorkSteal) {
            let share = &mut self.workers[worker].share;
            for test in tests.into_iter().rev() {
                share.push_front(test);
            }
        } else {
            self.remaining += tests.len();
            self.units.push_front(tests);
        }
        self.fill()
    }

    /// A failed test runs again, on another worker than `failed_on` where one can take it.
    pub fn retry(&mut self, index: usize, failed_on: usize) -> Vec<Command> {
        if self.stopped {
            return Vec::new();
        }
        self.avoid.insert(index, failed_on);
        self.remaining += 1;
        self.units.push_back(vec![index]);
        self.fill()
    }

    /// A slot whose tests need a new process: one with a share left, or any dead slot when
    /// the pool has tests and no live worker can take them.
    pub fn needs_worker(&self) -> Option<usize> {
        if self.stopped {
            return None;
        }
        if let Some(w) = self
            .workers
            .iter()
            .position(|q| q.lost && !q.share.is_empty())
        {
            return Some(w);
        }
        let accepting = self.workers.iter().any(|q| !q.lost && !q.shut);
        if self.units.is_empty() || accepting {
            return None;
        }
        self.workers.iter().position(|q| q.lost)
    }

    /// A new process took over the slot; it gets tests once ready.
    pub fn revive(&mut self, worker: usize) {
        let queue = &mut self.workers[worker];
        queue.lost = false;
        queue.shut = false;
        queue.ready = false;
        queue.awaiting_steal = false;
        queue.stolen_by = None;
    }

    /// The tests sent to `worker` and not reported done.
    pub fn pending(&self, worker: usize) -> impl Iterator<Item = usize> + '_ {
        self.workers[worker].pending.iter().copied()
    }

    pub fn worker_ready(&mut self, worker: usize) -> Vec<Command> {
        self.workers[worker].ready = true;
        self.fill()
    }

    pub fn test_done(&mut self, worker: usize, index: usize) -> Vec<Command> {
        let pending = &mut self.workers[worker].pending;
        if let Some(at) = pending.iter().position(|&i| i == index) {
            pending.remove(at);
        }
        self.fill()
    }

    /// A victim answered `Steal`: hand what it released to the thief.
    pub fn released(&mut self, victim: usize, indices: Vec<usize>) -> Vec<Command> {
        let thief = self.workers[victim].stolen_by.take();
        self.workers[victim]
            .pending
            .retain(|index| !indices.contains(index));
        let mut commands = Vec::new();
        if let Some(thief) = thief {
            let queue = &mut self.workers[thief];
            queue.awaiting_steal = false;
            if !indices.is_empty() && !queue.lost && !queue.shut && !self.stopped {
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

    /// The worker is gone; returns the tests it had been sent and not finished, in order.
    pub fn worker_lost(&mut self, worker: usize) -> Vec<usize> {
        let queue = &mut self.workers[worker];
        queue.lost = true;
        if let Some(thief) = queue.stolen_by.take() {
            self.workers[thief].awaiting_steal = false;
        }
        self.workers[worker].pending.drain(..).collect()
    }

    /// Stop handing out tests (`-x`, `--maxfail`): every worker drops what it has not started.
    pub fn stop(&mut self) -> Vec<Command> {
        self.stopped = true;
        self.units.clear();
        self.remaining = 0;
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

    /// Tops up every ready worker; shuts down those with nothing left to get.
    fn fill(&mut self) -> Vec<Command> {
        let mut commands = Vec::new();
        if self.stopped {
            return commands;
        }
        let live = self.workers.iter().filter(|q| !q.lost).count().max(1);
        for worker in 0..self.workers.len() {
            let queue = &self.workers[worker];
            if !queue.ready || queue.shut || queue.lost {
                continue;
            }
            if queue.pending.len() < 2 {
                let mut batch: Vec<usize> = self.workers[worker].share.drain(..).collect();
                while self.workers[worker].pending.len() + batch.len() < 2 {
                    let Some(unit) = self.next_unit(worker, live) else {
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
            if self.workers[worker].pending.len() >= 2 || !self.units.is_empty() {
                continue;
            }
            // Fewer than two in hand and the pool is empty: more must come, or the worker
            // must be told that none will, else it waits forever for its last test's successor.
            if self.dist == Dist::WorkSteal {
                if self.workers[worker].awaiting_steal {
                    continue;
                }
                if let Some(command) = self.steal_for(worker) {
                    commands.push(command);
                    continue;
                }
                if self.steals_in_flight() {
                    continue; // released tests may still come back to the pool
                }
            }
            self.workers[worker].shut = true;
            commands.push(Command::Shutdown {
                worker,
                discard: false,
            });
        }
        commands
    }

    /// The next unit for `worker`; under `load`, a chunk of single tests sized to what is
    /// left. A retried test waits for another worker while one can still take it.
    fn next_unit(&mut self, worker: usize, live_workers: usize) -> Option<Vec<usize>> {
        let others_accept = self
            .workers
            .iter()
            .enumerate()
            .any(|(w, q)| w != worker && !q.lost && !q.shut);
        let acceptable = |unit: &Vec<usize>| {
            !others_accept || unit.first().and_then(|t| self.avoid.get(t)) != Some(&worker)
        };
        let at = self.units.iter().position(acceptable)?;
        let mut unit = self.units.remove(at)?;
        if self.dist == Dist::Load {
            let chunk = (self.remaining / (4 * live_workers)).clamp(1, MAX_CHUNK);
            while unit.len() < chunk {
                match self.units.front() {
                    Some(next) if acceptable(next) => {
                        unit.extend(self.units.pop_front().unwrap_or_default())
                    }
                    _ => break,
                }
            }
        }
        self.remaining = self.remaining.saturating_sub(unit.len());
        Some(unit)
    }

    fn steal_for(&mut self, thief: usize) -> Option<Command> {
        // The victim's first pending test is running and its second may be committed as the
        // running test's `nextitem`; only the rest can move.
        let (victim, stealable) = self
            .workers
            .iter()
            .enumerate()
            .filter(|(w, q)| *w != thief && !q.lost && q.stolen_by.is_none())
            .map(|(w, q)| (w, q.pending.len().saturating_sub(2)))
            .max_by_key(|&(_, n)| n)?;
        if stealable == 0 {
            return None;
        }
        self.workers[victim].stolen_by = Some(thief);
        self.workers[thief].awaiting_steal = true;
        Some(Command::Steal {
            worker: victim,
            count: stealable.div_ceil(2),
        })
    }

    fn steals_in_flight(&self) -> bool {
        self.workers.iter().any(|q| q.stolen_by.is_some())
    }
}

#[cfg(test)]
mod tests {
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
            units(Dist::LoadFile, &items),
            vec![vec![0, 1, 2], vec![3, 4]]
        );
        assert_eq!(
            units(Dist::LoadScope, &items),
            vec![vec![0], vec![1, 2], vec![3, 4]]
        );
        assert_eq!(
            units(Dist::LoadGroup, &items),
            vec![vec![0, 3], vec![1], vec![2], vec![4]]
        );
        assert_eq!(units(Dist::Load, &items).len(), 5);
    }

    #[test]
    fn workers_never_outnumber_units() {
        assert_eq!(useful_workers(Dist::LoadFile, 2, 8), 2);
        assert_eq!(useful_workers(Dist::Each, 2, 8), 8);
        assert_eq!(useful_workers(Dist::No, 50, 8), 1);
    }

    /// Drives a scheduler with workers that finish their tests in order, round-robin, and
    /// returns which worker ran which test.
    fn simulate(dist: Dist, workers: usize) -> Vec<Vec<usize>> {
        simulate_items(dist, workers, &suite())
    }

    fn simulate_items(dist: Dist, workers: usize, items: &[CollectedItem]) -> Vec<Vec<usize>> {
        let mut s = Scheduler::new(dist, units(dist, items), workers);
        let mut queues: Vec<VecDeque<usize>> = vec![VecDeque::new(); workers];
        let mut shut = vec![false; workers];
        let mut ran = vec![Vec::new(); workers];
        let mut commands: VecDeque<Command> =
            (0..workers).flat_map(|w| s.worker_ready(w)).collect();
        loop {
            while let Some(c) = commands.pop_front() {
                match c {
                    Command::Run { worker, indices } => queues[worker].extend(indices),
                    Command::Shutdown { worker, .. } => shut[worker] = true,
                    Command::Steal { worker, count } => {
                        let keep = queues[worker].len().saturating_sub(count).max(1);
                        let released: Vec<usize> = queues[worker].drain(keep..).collect();
                        commands.extend(s.released(worker, released));
                    }
                }
            }
            let mut progressed = false;
            for w in 0..workers {
                if queues[w].len() >= 2 || (shut[w] && !queues[w].is_empty()) {
                    let index = queues[w].pop_front().unwrap();
                    ran[w].push(index);
                    commands.extend(s.test_done(w, index));
                    progressed = true;
                }
            }
            if !progressed {
                assert!(
                    shut.iter().all(|&s| s),
                    "a worker waits forever: {queues:?}"
                );
                return ran;
            }
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
            let workers = useful_workers(dist, units(dist, &three).len(), 2);
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

    #[test]
    fn stop_discards_queued_work() {
        let items = suite();
        let mut s = Scheduler::new(Dist::Load, units(Dist::Load, &items), 1);
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
}
