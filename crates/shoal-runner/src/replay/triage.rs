//! `--triage`: once a run's tests are done, each failed test is run again to tell why it
//! failed, while the collector is still up and each round is a cheap fork.
//!
//! Two rounds at most per test, the first two steps of a bisect ([`super::bisect`]): the
//! sequence its worker process ran up to and including it (passing now: **FLAKY**), then the
//! test alone (passing alone: **POLLUTED**, with the `shoal bisect` command that finds by
//! what; failing alone: **FAILED**). The rounds of different tests are independent, so they
//! run side by side on the run's workers. The verdicts go out on a channel as they are
//! reached, because the rounds live boxed inside the work source until the dispatcher drops it.

use std::collections::HashSet;

use crossbeam_channel::Sender;
use shoal_protocol::CollectedItem;

use super::{bisect::shell_word, select, sequence, ReplayError};
use crate::{record::RunRecord, work::fixed::Rounds};

/// The most failed tests one run triages: each costs up to two rounds.
pub const MAX_TRIAGED: usize = 20;

/// `1 failed test`, `2 failed tests`: how the terminal counts them.
pub fn failed_tests(n: usize) -> String {
    let tests = if n == 1 { "test" } else { "tests" };
    format!("{n} failed {tests}")
}

/// Why a failed test failed, as far as two rounds tell.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// It passed when the same sequence ran again.
    Flaky,
    /// It failed again after the same sequence, and passes alone.
    Polluted,
    /// It fails alone too.
    Failed,
    /// A round ended without running it (its worker process died before it).
    Unknown,
}

impl Verdict {
    /// The word the terminal shows.
    pub fn word(self) -> &'static str {
        match self {
            Self::Flaky => "FLAKY",
            Self::Polluted => "POLLUTED",
            Self::Failed => "FAILED",
            Self::Unknown => "UNKNOWN",
        }
    }

    /// The value of JUnit's `shoal.triage` property and of the `triage` event's `verdict`.
    pub fn name(self) -> &'static str {
        match self {
            Self::Flaky => "flaky",
            Self::Polluted => "polluted",
            Self::Failed => "failed",
            Self::Unknown => "unknown",
        }
    }

    /// What the verdict rests on.
    pub fn reason(self) -> &'static str {
        match self {
            Self::Flaky => "failed once, passed when the same sequence ran again",
            Self::Polluted => "passes alone",
            Self::Failed => "fails alone",
            Self::Unknown => "its worker process ended before running it again",
        }
    }
}

/// One failed test's verdict.
#[derive(Debug, Clone, PartialEq)]
pub struct TriageVerdict {
    /// Its collection index.
    pub index: usize,
    pub nodeid: String,
    pub verdict: Verdict,
    /// For a POLLUTED test: the command that finds its polluters in this run's record.
    pub bisect: Option<String>,
}

/// What triage found, for the reporters.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct TriageReport {
    /// In the order the tests failed in the run.
    pub verdicts: Vec<TriageVerdict>,
    /// Failed tests left out by [`MAX_TRIAGED`].
    pub untriaged: usize,
}

enum Stage {
    /// Its recorded sequence runs again.
    Sequence,
    /// It runs alone.
    Alone,
    Done,
}

/// One failed test under triage.
struct Case {
    index: usize,
    nodeid: String,
    /// Collection indices its worker process ran, up to and including it.
    sequence: Vec<usize>,
    stage: Stage,
    /// Whether its current round is out.
    running: bool,
}

/// The rounds of every failed test; see the module docs.
pub struct Triage {
    cases: Vec<Case>,
    run_id: String,
    verdicts: Sender<TriageVerdict>,
}

impl Triage {
    /// Triage of `failed` (collection indices, in the order they failed, at most
    /// [`MAX_TRIAGED`]) from the sequences `record` holds.
    pub fn new(
        record: &RunRecord,
        items: &[CollectedItem],
        failed: &[usize],
        verdicts: Sender<TriageVerdict>,
    ) -> Result<Self, ReplayError> {
        let mut seen = HashSet::new();
        let cases = failed
            .iter()
            .filter(|&&index| seen.insert(index))
            .map(|&index| {
                let nodeid = items[index].nodeid.clone();
                let (process, at) = select(record, None, Some(&nodeid))?;
                let at = at.expect("a test named is found at a position");
                let tests = &record.processes[process].tests[..=at];
                Ok(Case {
                    index,
                    sequence: sequence(record, tests, items)?,
                    nodeid,
                    stage: Stage::Sequence,
                    running: false,
                })
            })
            .collect::<Result<_, ReplayError>>()?;
        Ok(Self {
            cases,
            run_id: record.run_id.clone(),
            verdicts,
        })
    }

    fn decide(&mut self, id: usize, verdict: Verdict) {
        let case = &mut self.cases[id];
        case.stage = Stage::Done;
        let bisect = (verdict == Verdict::Polluted).then(|| {
            ["shoal", "bisect", &case.nodeid, "--run", &self.run_id]
                .map(shell_word)
                .join(" ")
        });
        // The dispatcher holds the receiver until the rounds are dropped.
        let _ = self.verdicts.send(TriageVerdict {
            index: case.index,
            nodeid: case.nodeid.clone(),
            verdict,
            bisect,
        });
    }
}

impl Rounds for Triage {
    fn next(&mut self) -> Option<(usize, Vec<usize>)> {
        let (id, case) = self
            .cases
            .iter_mut()
            .enumerate()
            .find(|(_, c)| !c.running && !matches!(c.stage, Stage::Done))?;
        case.running = true;
        let sequence = match case.stage {
            Stage::Sequence => case.sequence.clone(),
            _ => vec![case.index],
        };
        Some((id, sequence))
    }

    fn due(&self) -> usize {
        self.cases
            .iter()
            .filter(|c| !c.running && !matches!(c.stage, Stage::Done))
            .count()
    }

    fn done(&mut self, id: usize, failed: Option<bool>) {
        let case = &mut self.cases[id];
        case.running = false;
        match (&case.stage, failed) {
            (Stage::Sequence, Some(true)) => case.stage = Stage::Alone,
            (Stage::Sequence, Some(false)) => self.decide(id, Verdict::Flaky),
            (Stage::Alone, Some(true)) => self.decide(id, Verdict::Failed),
            (Stage::Alone, Some(false)) => self.decide(id, Verdict::Polluted),
            (Stage::Sequence | Stage::Alone, None) => self.decide(id, Verdict::Unknown),
            (Stage::Done, _) => {}
        }
    }

    /// Ctrl-C: the tests not decided yet get no verdict.
    fn stop(&mut self) {
        for case in &mut self.cases {
            case.stage = Stage::Done;
        }
    }

    /// The verdicts are the summary's own section, not a line of the rounds.
    fn summary(&self) -> Option<String> {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::record::{self, ProcessRecord, TestRun};

    fn items(ids: &[&str]) -> Vec<CollectedItem> {
        ids.iter()
            .map(|id| {
                let item =
                    serde_json::json!({"nodeid": id, "file": id, "scope": id, "group": null});
                serde_json::from_value(item).unwrap()
            })
            .collect()
    }

    fn record() -> RunRecord {
        let run = |nodeid: &str, outcome: &str| TestRun {
            nodeid: nodeid.into(),
            outcome: outcome.into(),
            duration: 0.0,
            attempt: 1,
        };
        record::example(
            "r",
            vec![ProcessRecord {
                worker: "gw0".into(),
                process: 0,
                end: None,
                tests: vec![run("a", "passed"), run("b", "failed"), run("c", "failed")],
            }],
        )
    }

    #[test]
    fn each_pair_of_outcomes_is_its_verdict() {
        let items = items(&["a", "b", "c"]);
        let (sender, verdicts) = crossbeam_channel::unbounded();
        let mut triage = Triage::new(&record(), &items, &[1, 2, 1], sender).unwrap();
        assert_eq!(triage.due(), 2, "b once, c once");
        assert_eq!(triage.next(), Some((0, vec![0, 1])));
        assert_eq!(triage.next(), Some((1, vec![0, 1, 2])));
        assert_eq!(triage.next(), None);
        triage.done(0, Some(true));
        triage.done(1, Some(false));
        assert_eq!(triage.next(), Some((0, vec![1])), "b alone");
        triage.done(0, Some(false));
        let found: Vec<_> = verdicts
            .try_iter()
            .map(|v| (v.nodeid, v.verdict, v.bisect))
            .collect();
        assert_eq!(
            found,
            [
                ("c".into(), Verdict::Flaky, None),
                (
                    "b".into(),
                    Verdict::Polluted,
                    Some("shoal bisect b --run r".into())
                ),
            ]
        );
        assert_eq!(triage.due(), 0);
    }

    #[test]
    fn a_round_that_never_ran_its_test_decides_nothing_but_unknown() {
        let items = items(&["a", "b", "c"]);
        let (sender, verdicts) = crossbeam_channel::unbounded();
        let mut triage = Triage::new(&record(), &items, &[2], sender).unwrap();
        assert_eq!(triage.next(), Some((0, vec![0, 1, 2])));
        triage.done(0, None);
        let found: Vec<_> = verdicts.try_iter().map(|v| v.verdict).collect();
        assert_eq!(found, [Verdict::Unknown]);
        assert_eq!(triage.next(), None, "no round alone after it");
    }
}
