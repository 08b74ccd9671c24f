//! `shoal bisect NODEID`: which of the tests that ran before a victim in its worker process
//! make it fail.
//!
//! First the recorded sequence runs again, to see that the victim still fails after it (a
//! victim that passes [`FLAKY_TRIES`] times is flaky, not polluted), then the victim alone (one
//! that fails alone is no pollution); then [`Ddmin`] shrinks the tests before it, each
//! candidate a round of its own: a fresh worker process running the candidate, then the
//! victim. The verdict prints with the command that reproduces it with only the culprits.

use super::{ddmin::Ddmin, Plan};
use crate::{record::Seed, work::fixed::Rounds, ExitCode};

/// How often the recorded sequence runs before a victim that keeps passing is called flaky.
pub const FLAKY_TRIES: usize = 2;

/// The rounds a bisect may run unless `--max-rounds` says otherwise.
pub const DEFAULT_MAX_ROUNDS: usize = 100;

enum Stage {
    /// The recorded sequence, `tries` times so far.
    Full {
        tries: usize,
    },
    /// The victim alone.
    Alone,
    Search(Ddmin),
    Done(Verdict),
}

enum Verdict {
    /// The victim fails after these positions of `before` (`minimal`: none can be left out;
    /// else the round cap stopped the search).
    Polluted {
        positions: Vec<usize>,
        minimal: bool,
    },
    FailsAlone,
    Flaky {
        tries: usize,
    },
    /// Interrupted, `-x`: no verdict.
    Stopped,
}

/// The bisect's rounds; see the module docs.
pub struct Bisect {
    /// Collection indices and node ids of the tests before the victim, in their order.
    before: Vec<usize>,
    before_ids: Vec<String>,
    victim: usize,
    victim_id: String,
    /// Where the victim ran, for the verdict.
    place: String,
    /// `--randomly-seed` and its like, for the command that reproduces.
    seed_args: Vec<String>,
    stage: Stage,
    /// Whether a pre-check's round is out.
    checking: bool,
    rounds: usize,
    max_rounds: usize,
    in_flight: usize,
}

impl Bisect {
    /// `plan`'s target is the victim; `None` when no test ran before it.
    pub fn new(
        plan: &Plan,
        items: &[shoal_protocol::CollectedItem],
        max_rounds: usize,
    ) -> Option<Self> {
        let (&victim, before) = plan.sequence.split_last()?;
        if before.is_empty() {
            return None;
        }
        Some(Self {
            before: before.to_vec(),
            before_ids: before.iter().map(|&i| items[i].nodeid.clone()).collect(),
            victim,
            victim_id: items[victim].nodeid.clone(),
            place: format!(
                "worker {}'s process {} in run {}",
                plan.worker, plan.process, plan.record.run_id
            ),
            seed_args: seed_args(plan.record.seed.as_ref()),
            stage: Stage::Full { tries: 0 },
            checking: false,
            rounds: 0,
            max_rounds: max_rounds.max(2),
            in_flight: 0,
        })
    }

    fn round(&mut self, positions: impl IntoIterator<Item = usize>) -> Vec<usize> {
        self.rounds += 1;
        self.in_flight += 1;
        let mut sequence: Vec<usize> = positions.into_iter().map(|p| self.before[p]).collect();
        sequence.push(self.victim);
        sequence
    }

    /// The search is over once it is minimal, or once the cap leaves no round to decide it.
    fn settle(&mut self) {
        if let Stage::Search(ddmin) = &self.stage {
            let capped = self.rounds >= self.max_rounds && self.in_flight == 0;
            if ddmin.is_minimal() || capped {
                self.stage = Stage::Done(Verdict::Polluted {
                    positions: ddmin.set().to_vec(),
                    minimal: ddmin.is_minimal(),
                });
            }
        }
    }

    /// `shoal -n 0 <culprits> <victim>`, each word quoted for a POSIX shell where needed.
    fn command(&self, positions: &[usize]) -> String {
        let words = ["shoal", "-n", "0"]
            .into_iter()
            .map(str::to_owned)
            .chain(self.seed_args.iter().cloned())
            .chain(positions.iter().map(|&p| self.before_ids[p].clone()))
            .chain(std::iter::once(self.victim_id.clone()));
        words.map(|w| shell_word(&w)).collect::<Vec<_>>().join(" ")
    }
}

impl Rounds for Bisect {
    fn next(&mut self) -> Option<(usize, Vec<usize>)> {
        if self.due() == 0 {
            return None;
        }
        match &mut self.stage {
            Stage::Full { .. } => {
                self.checking = true;
                Some((0, self.round(0..self.before.len())))
            }
            Stage::Alone => {
                self.checking = true;
                Some((0, self.round([])))
            }
            Stage::Search(ddmin) => {
                let candidate = ddmin.next_candidate()?;
                Some((candidate.id, self.round(candidate.positions)))
            }
            Stage::Done(_) => None,
        }
    }

    fn due(&self) -> usize {
        if self.rounds >= self.max_rounds {
            return 0;
        }
        match &self.stage {
            Stage::Full { .. } | Stage::Alone => usize::from(!self.checking),
            Stage::Search(ddmin) => ddmin.due().min(self.max_rounds - self.rounds),
            Stage::Done(_) => 0,
        }
    }

    fn done(&mut self, id: usize, failed: Option<bool>) {
        self.in_flight = self.in_flight.saturating_sub(1);
        self.checking = false;
        let failed_now = failed == Some(true);
        self.stage = match std::mem::replace(&mut self.stage, Stage::Done(Verdict::Stopped)) {
            Stage::Full { .. } if failed_now => Stage::Alone,
            Stage::Full { tries } if tries + 1 >= FLAKY_TRIES => {
                Stage::Done(Verdict::Flaky { tries: tries + 1 })
            }
            Stage::Full { tries } => Stage::Full { tries: tries + 1 },
            Stage::Alone if failed_now => Stage::Done(Verdict::FailsAlone),
            Stage::Alone => Stage::Search(Ddmin::new(self.before.len())),
            Stage::Search(mut ddmin) => {
                ddmin.answer(id, failed);
                Stage::Search(ddmin)
            }
            done @ Stage::Done(_) => done,
        };
        self.settle();
    }

    fn stop(&mut self) {
        if !matches!(self.stage, Stage::Done(_)) {
            self.stage = Stage::Done(Verdict::Stopped);
        }
    }

    fn summary(&self) -> Option<String> {
        let victim = &self.victim_id;
        let rounds = self.rounds;
        let Stage::Done(verdict) = &self.stage else {
            return Some(format!(
                "shoal: bisect of {victim} ended after {rounds} rounds without a verdict"
            ));
        };
        Some(match verdict {
            Verdict::Polluted { positions, minimal } => {
                let found = if *minimal {
                    format!("POLLUTED: {victim} fails after these {} of the {} tests that ran before it in {} ({rounds} rounds):", positions.len(), self.before.len(), self.place)
                } else {
                    format!("the round cap ({}) stopped the search before it was minimal; {victim} still fails after these {} of the {} tests that ran before it in {}:", self.max_rounds, positions.len(), self.before.len(), self.place)
                };
                let culprits: String = positions
                    .iter()
                    .map(|&p| format!("\n    {}", self.before_ids[p]))
                    .collect();
                format!(
                    "shoal: bisect: {found}{culprits}\nshoal: reproduce with: {}",
                    self.command(positions)
                )
            }
            Verdict::FailsAlone => format!(
                "shoal: bisect: FAILED: {victim} fails when run alone, so it is not pollution by the tests before it ({rounds} rounds)"
            ),
            Verdict::Flaky { tries } => format!(
                "shoal: bisect: FLAKY: {victim} passed in each of the {tries} runs of the sequence recorded for it in {}, so there is nothing to bisect",
                self.place
            ),
            Verdict::Stopped => format!("shoal: bisect of {victim} stopped after {rounds} rounds"),
        })
    }

    /// 0 when the culprits are found; 1 when the victim is not polluted after all, or the
    /// cap stopped the search.
    fn exit_code(&self) -> Option<ExitCode> {
        match &self.stage {
            Stage::Done(Verdict::Polluted { minimal: true, .. }) => Some(ExitCode::Ok),
            Stage::Done(Verdict::Stopped) => None,
            _ => Some(ExitCode::TestsFailed),
        }
    }
}

/// The options that give a run the recorded seed.
fn seed_args(seed: Option<&Seed>) -> Vec<String> {
    match seed {
        // pytest-randomly's order would put the victim before its culprits.
        Some(seed) if seed.source == "pytest-randomly" => vec![
            format!("--randomly-seed={}", seed.value),
            "--randomly-dont-reorganize".to_owned(),
        ],
        _ => Vec::new(),
    }
}

/// `word` as one word of a POSIX shell command.
pub(crate) fn shell_word(word: &str) -> String {
    let plain = |c: char| c.is_ascii_alphanumeric() || "_-./:=,+@%".contains(c);
    if !word.is_empty() && word.chars().all(plain) {
        word.to_owned()
    } else {
        format!("'{}'", word.replace('\'', r"'\''"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn node_ids_with_brackets_or_spaces_are_quoted() {
        assert_eq!(shell_word("tests/a.py::test_x"), "tests/a.py::test_x");
        assert_eq!(shell_word("t.py::test[a b]"), "'t.py::test[a b]'");
        assert_eq!(shell_word("it's"), r"'it'\''s'");
    }
}
