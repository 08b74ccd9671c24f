//! The work source of `shoal replay` and `shoal bisect`: fixed sequences of tests, each run
//! from the start to its last test (the target) by one fresh worker process, in that order.
//!
//! What a process ran before a test is exactly what a replay must reproduce, so a process
//! never runs more than one sequence: it is sent the whole sequence and `Shutdown` at once (as
//! under `--dist no`), and the next sequence waits for its slot's next process, forked again
//! from the one collection. Which sequences run, and what their targets' outcomes mean, is a
//! [`Rounds`]' business (one replay; a bisect's pre-checks and delta debugging); this source
//! only hands them to slots and tells it how each target ended.

use std::collections::VecDeque;

use super::{Command, WorkSource};
use crate::{results::TestRecord, ExitCode};

/// Whoever decides which sequences run.
pub trait Rounds {
    /// The next sequence to run, with an id for [`Rounds::done`]; `None` when none is due
    /// until more rounds have ended.
    fn next(&mut self) -> Option<(usize, Vec<usize>)>;

    /// How many rounds could start now (for slots that need a process).
    fn due(&self) -> usize;

    /// Round `id` ended: its target failed (`Some(true)`), passed, or never ran (`None`).
    fn done(&mut self, id: usize, failed: Option<bool>);

    /// No more rounds (`-x`, Ctrl-C).
    fn stop(&mut self);

    /// What the rounds found, for the end of the run.
    fn summary(&self) -> Option<String>;

    /// The run's exit code, where the rounds' verdict decides it rather than the tests'.
    fn exit_code(&self) -> Option<ExitCode> {
        None
    }
}

/// One worker slot.
#[derive(Default)]
struct Slot {
    /// The round its process runs: its id and target.
    round: Option<(usize, usize)>,
    /// What it was sent and has not reported.
    pending: VecDeque<usize>,
    ready: bool,
    /// Its process is gone (or was never started by this source).
    lost: bool,
    /// Its process ran, or was told it will run, nothing more.
    shut: bool,
}

/// Fixed sequences over `slots` worker slots; see the module docs.
pub struct FixedSource {
    rounds: Box<dyn Rounds>,
    slots: Vec<Slot>,
    /// The worker ids, for telling which slot a finished test came from.
    ids: Vec<String>,
}

impl FixedSource {
    pub fn new(rounds: Box<dyn Rounds>, ids: Vec<String>) -> Self {
        Self {
            rounds,
            slots: ids.iter().map(|_| Slot::default()).collect(),
            ids,
        }
    }

    /// Round of slot `worker` is over, with its target's outcome.
    fn end_round(&mut self, worker: usize, failed: Option<bool>) {
        if let Some((id, _)) = self.slots[worker].round.take() {
            self.rounds.done(id, failed);
        }
    }
}

impl WorkSource for FixedSource {
    fn worker_ready(&mut self, worker: usize) -> Vec<Command> {
        let slot = &mut self.slots[worker];
        slot.ready = true;
        slot.shut = true;
        match self.rounds.next() {
            Some((id, indices)) => {
                let target = *indices.last().expect("a round runs its target");
                slot.round = Some((id, target));
                slot.pending = indices.iter().copied().collect();
                vec![
                    Command::Run { worker, indices },
                    Command::Shutdown {
                        worker,
                        discard: false,
                    },
                ]
            }
            // Another slot took the round this one was started for.
            None => vec![Command::Shutdown {
                worker,
                discard: true,
            }],
        }
    }

    fn test_done(&mut self, worker: usize, index: usize) -> Vec<Command> {
        let pending = &mut self.slots[worker].pending;
        if let Some(at) = pending.iter().position(|&i| i == index) {
            pending.remove(at);
        }
        Vec::new()
    }

    fn released(&mut self, _victim: usize, _indices: Vec<usize>) -> Vec<Command> {
        Vec::new() // nothing is ever stolen
    }

    /// A replayed test runs once: its outcome is what the round is about.
    fn retry(&mut self, _failed: &TestRecord, _failed_on: usize) -> Option<Vec<Command>> {
        None
    }

    fn finished(&mut self, record: &TestRecord) {
        let Some(worker) = self.ids.iter().position(|id| *id == record.worker) else {
            return;
        };
        if self.slots[worker]
            .round
            .is_some_and(|(_, target)| target == record.index)
        {
            self.end_round(worker, Some(record.failed()));
        }
    }

    fn worker_lost(&mut self, worker: usize) -> Vec<usize> {
        let slot = &mut self.slots[worker];
        slot.lost = true;
        slot.pending.drain(..).collect()
    }

    /// What a lost process did not run is dropped: a sequence is never continued in another
    /// process. A target among it never ran; one not among it was the test the loss is
    /// blamed on, whose record comes next ([`WorkSource::finished`]).
    fn requeue(&mut self, worker: usize, tests: Vec<usize>) -> Vec<Command> {
        let target = self.slots[worker].round.map(|(_, target)| target);
        if target.is_some_and(|t| tests.contains(&t)) {
            self.end_round(worker, None);
        }
        Vec::new()
    }

    fn needs_worker(&self) -> Option<usize> {
        let starting = self.slots.iter().filter(|s| !s.lost && !s.shut).count();
        if self.rounds.due() <= starting {
            return None;
        }
        self.slots.iter().position(|s| s.lost)
    }

    fn revive(&mut self, worker: usize) {
        self.slots[worker] = Slot::default();
    }

    fn retire(&mut self, worker: usize) {
        self.slots[worker].shut = true;
    }

    fn stop(&mut self) -> Vec<Command> {
        self.rounds.stop();
        let mut commands = Vec::new();
        for (worker, slot) in self.slots.iter_mut().enumerate() {
            if !slot.lost {
                slot.shut = true;
                commands.push(Command::Shutdown {
                    worker,
                    discard: true,
                });
            }
        }
        commands
    }

    fn holds(&self, worker: usize, index: usize) -> bool {
        self.slots[worker].pending.contains(&index)
    }

    fn running(&self, worker: usize) -> Option<usize> {
        self.slots[worker].pending.front().copied()
    }

    fn is_ready(&self, worker: usize) -> bool {
        self.slots[worker].ready
    }

    fn steal_pending(&self, _worker: usize) -> bool {
        false
    }

    fn summary(&self) -> Option<String> {
        self.rounds.summary()
    }

    fn exit_code(&self) -> Option<ExitCode> {
        self.rounds.exit_code()
    }
}
