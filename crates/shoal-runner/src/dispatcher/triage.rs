//! `--triage`: after the run's tests, before its report, the failed tests' rounds
//! ([`crate::replay::triage`]) run on the run's worker slots, forked from the collector that
//! is still up. The rounds are not the run's: they have a [`Run`] of their own, the reporters
//! are set aside while they run (no progress, no events, no record of them), and the
//! collector's plugins hear nothing of them. Only their verdicts join the run's results.

use std::collections::HashSet;

use super::{run::Run, Dispatcher};
use crate::{
    replay::triage::{failed_tests, Triage, TriageReport, MAX_TRIAGED},
    reporter::Reporters,
    results::StopReason,
    work::{fixed::FixedSource, WorkSource},
    RunError,
};

impl Dispatcher {
    /// Triages `run`'s failed tests when `--triage` asks for it and the run ended by itself
    /// (or by `--maxfail`); an interrupt during triage interrupts the run.
    pub(super) fn triage(&mut self, run: &mut Run) -> Result<(), RunError> {
        if !self.launch.options.triage()
            || self.launch.replay.is_some()
            || !matches!(run.stop, None | Some(StopReason::MaxFail(_)))
        {
            return Ok(());
        }
        let mut seen = HashSet::new();
        let failed: Vec<usize> = run
            .results
            .records()
            .iter()
            .filter(|r| r.failed() && seen.insert(r.index))
            .map(|r| r.index)
            .collect();
        if failed.is_empty() {
            return Ok(());
        }
        let record = match self.reporters.as_ref().and_then(Reporters::record) {
            _ if run.settings.usepdb => Err("--pdb debugs the failed tests instead"),
            None => Err(
                "the run kept no record of what its workers ran (pytest's cache provider is off)",
            ),
            // Its one worker is pytest's own session: its plugins would count the rounds.
            Some(record) if !record.distributed => Err(
                "-n 0 runs the tests in pytest's own session, whose plugins would count the rounds",
            ),
            Some(record) => Ok(record),
        };
        let record = match record {
            Ok(record) => record,
            Err(why) => {
                self.notice(&format!("shoal: note: --triage skipped: {why}"));
                return Ok(());
            }
        };
        let triaged = &failed[..failed.len().min(MAX_TRIAGED)];
        let (sender, verdicts) = crossbeam_channel::unbounded();
        let rounds = Triage::new(record, &run.items, triaged, sender)?;
        let ids = (0..self.pool.len())
            .map(|w| self.pool.worker(w).id().to_owned())
            .collect();
        let mut source = FixedSource::new(Box::new(rounds), ids);
        // Every slot's process ended with the run: the rounds start them again.
        for w in 0..self.pool.len() {
            source.worker_lost(w);
        }
        self.notice(&format!(
            "shoal: triage: running {} again, to tell flaky, polluted and failing alone apart",
            failed_tests(triaged.len())
        ));
        let mut rounds = run.for_triage(Box::new(source));
        let reporters = self.reporters.take();
        self.triaging = true;
        let driven = self
            .after_event(&mut rounds)
            .and_then(|()| self.drive(&mut rounds));
        self.triaging = false;
        self.reporters = reporters;
        driven?;
        if let Some(StopReason::Interrupted) = rounds.stop {
            run.stop = Some(StopReason::Interrupted);
        }
        // Dropping the rounds' work source drops the sender: the verdicts are all in.
        drop(rounds);
        let mut verdicts: Vec<_> = verdicts.iter().collect();
        verdicts.sort_by_key(|v| triaged.iter().position(|&i| i == v.index));
        run.results.set_triage(TriageReport {
            verdicts,
            untriaged: failed.len() - triaged.len(),
        });
        Ok(())
    }
}
