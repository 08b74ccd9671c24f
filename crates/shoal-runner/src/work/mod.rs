//! Where the tests a worker runs come from.
//!
//! The dispatcher owns processes, messages and reports; a [`WorkSource`] owns the decision of
//! which test goes to which worker, and when. The dispatcher tells it what happened (a worker
//! is ready, a test is done, a worker gave tests back or died) and sends the [`Command`]s it
//! answers with; it never looks inside. [`Scheduler`] is the local source: every `--dist` mode
//! over this machine's workers. `docs/architecture.md` says how a CI shard, a queue shared by
//! several machines and a replay of one worker's sequence fit the same seam.
//!
//! Every source keeps the rule workers live by (`docs/protocol.md`): a worker runs a test only
//! once it knows the test's successor, so a source keeps at least two tests pending on every
//! worker that still has work, or tells it `Shutdown`.

pub mod fixed;
mod history;
mod scheduler;
mod shuffle;

use std::time::Instant;

use crate::{record::RunRecord, results::TestRecord, ExitCode};

pub use history::order;
pub use scheduler::{units, useful_workers, Constraints, Scheduler};
pub use shuffle::{new_seed, shuffle};

/// What the dispatcher must send.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    Run { worker: usize, indices: Vec<usize> },
    Shutdown { worker: usize, discard: bool },
    Steal { worker: usize, count: usize },
}

/// The dispatcher's questions and news about work, by worker slot and collection index.
pub trait WorkSource {
    /// `worker` said it is ready (since its slot was last revived).
    fn worker_ready(&mut self, worker: usize) -> Vec<Command>;

    /// `worker` finished test `index` (its last attempt, or one that will be retried).
    fn test_done(&mut self, worker: usize, index: usize) -> Vec<Command>;

    /// A victim answered `Steal`: what it released goes to the thief.
    fn released(&mut self, victim: usize, indices: Vec<usize>) -> Vec<Command>;

    /// A failed test runs again, on another worker than `failed_on` where one can take it;
    /// `None` when the source refuses (a shared queue's retry budget is spent), and the
    /// failure stands.
    fn retry(&mut self, failed: &TestRecord, failed_on: usize) -> Option<Vec<Command>>;

    /// How many attempts test `index` had before the one this run holds, where they ran
    /// elsewhere (a retry that came from another node of a shared queue).
    fn attempts_before(&self, _index: usize) -> usize {
        0
    }

    /// Test `record.index`'s final attempt is recorded.
    fn finished(&mut self, _record: &TestRecord) {}

    /// The worker is gone; returns the tests it had been sent and not finished, in order.
    fn worker_lost(&mut self, worker: usize) -> Vec<usize>;

    /// Tests that must go back to be run: those a dead worker had not finished (the
    /// dispatcher keeps the ones the crash is blamed on). Called with none as well: the others
    /// may then take a larger share.
    fn requeue(&mut self, worker: usize, tests: Vec<usize>) -> Vec<Command>;

    /// A slot whose tests need a new process: one with a share left, or any dead slot when
    /// tests remain and no live worker can take them.
    fn needs_worker(&self) -> Option<usize>;

    /// A new process took over the slot; it gets tests once ready.
    fn revive(&mut self, worker: usize);

    /// `worker` ends its session after the test it just finished, to be replaced by a fresh
    /// process (`--max-worker-tests`, `--max-worker-rss`): it gets nothing more, the tests it
    /// held come back through `requeue`, and its slot needs a worker while work remains.
    fn retire(&mut self, worker: usize);

    /// Stop handing out tests (`-x`, `--maxfail`): every worker drops what it has not started.
    fn stop(&mut self) -> Vec<Command>;

    /// Whether test `index` was sent to `worker` and not reported done.
    fn holds(&self, worker: usize, index: usize) -> bool;

    /// The test `worker` runs now (the first it holds), if any.
    fn running(&self, worker: usize) -> Option<usize>;

    /// Whether `worker` said it is ready (since its slot was last revived).
    fn is_ready(&self, worker: usize) -> bool;

    /// Whether `worker` was asked to give tests back and has not answered.
    fn steal_pending(&self, worker: usize) -> bool;

    /// When the source wants [`WorkSource::on_deadline`] called though nothing happened
    /// (a shared queue renews its leases and looks for work on a clock; under `load` a worker
    /// stops waiting for the answer to a steal).
    fn deadline(&self) -> Option<Instant> {
        None
    }

    fn on_deadline(&mut self) -> Vec<Command> {
        Vec::new()
    }

    /// Whether work may still come though no worker runs (a shared queue whose other nodes
    /// still hold units): the run goes on until it says no.
    fn waiting(&self) -> bool {
        false
    }

    /// A line for the end of the run about where the work came from, if there is more to
    /// say than the summary does.
    fn summary(&self) -> Option<String> {
        None
    }

    /// The run's exit code, where the source's verdict decides it rather than the tests'
    /// outcomes (a bisect, whose rounds fail on purpose).
    fn exit_code(&self) -> Option<ExitCode> {
        None
    }

    /// The run's record is complete: a source shared with other machines keeps it with them
    /// (a queue node's, in the build's Redis, for `shoal report --save-records`). Returns a
    /// warning when it cannot: the record is a debugging aid, never the run's verdict.
    fn keep_record(&mut self, _record: &RunRecord) -> Option<String> {
        None
    }

    /// Why the source can no longer work, once: the run stops with it.
    fn take_error(&mut self) -> Option<String> {
        None
    }
}
