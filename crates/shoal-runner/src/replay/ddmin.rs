//! Delta debugging (Zeller's ddmin) over the tests that ran before a victim: the smallest set
//! of them after which the victim still fails, apart from any process.
//!
//! The set is cut into `n` chunks; if the victim fails after one chunk alone, that chunk is
//! the new set (`n` back to 2); else if it fails after all but one chunk, that complement is
//! (`n` one less); else the chunks are cut finer, until they are single tests: then no test
//! can be left out, and the set is minimal. A single culprit is found in about `2 log2(n)`
//! runs (halving), a pair in which neither breaks the victim alone through the complements.
//!
//! The candidates of one step are independent, so several may run at once; the step is
//! decided by the first candidate, in order, that failed once every one before it is known to
//! have passed, so parallel runs find what a serial run would.

/// One test subset of the current step, by id.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Candidate {
    pub id: usize,
    /// Positions in the sequence before the victim, in their order.
    pub positions: Vec<usize>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// Each chunk alone.
    Chunks,
    /// All but each chunk.
    Complements,
}

/// The search; see the module docs.
#[derive(Debug)]
pub struct Ddmin {
    /// The smallest set known to make the victim fail.
    set: Vec<usize>,
    granularity: usize,
    phase: Phase,
    /// This step's candidates, and whether the victim failed after each (once known).
    batch: Vec<Vec<usize>>,
    results: Vec<Option<bool>>,
    /// The id of `batch[0]`: ids keep counting across steps, so late answers to an earlier
    /// step are told apart.
    base: usize,
    /// How many of the batch were handed out.
    handed: usize,
    minimal: bool,
}

impl Ddmin {
    /// A search over positions `0..len`, all of which together make the victim fail.
    pub fn new(len: usize) -> Self {
        let mut search = Self {
            set: (0..len).collect(),
            granularity: 2,
            phase: Phase::Chunks,
            batch: Vec::new(),
            results: Vec::new(),
            base: 0,
            handed: 0,
            minimal: false,
        };
        search.step(Phase::Chunks);
        search
    }

    /// The smallest failing set found so far.
    pub fn set(&self) -> &[usize] {
        &self.set
    }

    /// Whether no test of [`Ddmin::set`] can be left out.
    pub fn is_minimal(&self) -> bool {
        self.minimal
    }

    /// How many candidates could be handed out now.
    pub fn due(&self) -> usize {
        if self.minimal {
            0
        } else {
            self.batch.len() - self.handed
        }
    }

    /// The next candidate to run, if one is due.
    pub fn next_candidate(&mut self) -> Option<Candidate> {
        if self.due() == 0 {
            return None;
        }
        let at = self.handed;
        self.handed += 1;
        Some(Candidate {
            id: self.base + at,
            positions: self.batch[at].clone(),
        })
    }

    /// Whether the victim failed after candidate `id`; a run that never reached the victim
    /// (`None`) counts as not failing.
    pub fn answer(&mut self, id: usize, failed: Option<bool>) {
        let Some(at) = id
            .checked_sub(self.base)
            .filter(|&at| at < self.batch.len())
        else {
            return; // an earlier step's, already decided
        };
        self.results[at] = Some(failed.unwrap_or(false));
        self.decide();
    }

    /// Moves on once the answers in hand decide the step.
    fn decide(&mut self) {
        let mut chosen = None;
        for (at, result) in self.results.iter().enumerate() {
            match result {
                None => return, // an earlier candidate may still fail
                Some(true) => {
                    chosen = Some(at);
                    break;
                }
                Some(false) => {}
            }
        }
        match (chosen, self.phase) {
            (Some(at), Phase::Chunks) => {
                self.set = self.batch[at].clone();
                self.granularity = 2;
                self.step(Phase::Chunks);
            }
            (Some(at), Phase::Complements) => {
                self.set = self.batch[at].clone();
                self.granularity = (self.granularity - 1).max(2);
                self.step(Phase::Chunks);
            }
            // With two chunks, the complements are the chunks themselves.
            (None, Phase::Chunks) if self.granularity > 2 => self.step(Phase::Complements),
            (None, _) if self.granularity >= self.set.len() => self.minimal = true,
            (None, _) => {
                self.granularity = (self.granularity * 2).min(self.set.len());
                self.step(Phase::Chunks);
            }
        }
    }

    /// Starts a step over the current set.
    fn step(&mut self, phase: Phase) {
        self.base += self.batch.len();
        self.phase = phase;
        self.handed = 0;
        if self.set.len() <= 1 {
            // A failing set of one (or, in theory, none) cannot shrink.
            self.batch.clear();
            self.results.clear();
            self.minimal = true;
            return;
        }
        let chunks = chunks(&self.set, self.granularity);
        self.batch = match phase {
            Phase::Chunks => chunks,
            Phase::Complements => (0..chunks.len())
                .map(|left_out| {
                    chunks
                        .iter()
                        .enumerate()
                        .filter(|(at, _)| *at != left_out)
                        .flat_map(|(_, chunk)| chunk.iter().copied())
                        .collect()
                })
                .collect(),
        };
        self.results = vec![None; self.batch.len()];
    }
}

/// `set` cut into `n` chunks of nearly equal length, in order.
fn chunks(set: &[usize], n: usize) -> Vec<Vec<usize>> {
    let n = n.clamp(1, set.len());
    let mut out = Vec::with_capacity(n);
    let mut start = 0;
    for k in 0..n {
        let end = (k + 1) * set.len() / n;
        out.push(set[start..end].to_vec());
        start = end;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Runs the search serially against `fails` (whether the victim fails after a set of
    /// positions); returns the set found and how many runs it took.
    fn search(len: usize, fails: impl Fn(&[usize]) -> bool) -> (Vec<usize>, usize) {
        let mut ddmin = Ddmin::new(len);
        let mut runs = 0;
        while let Some(candidate) = ddmin.next_candidate() {
            runs += 1;
            assert!(runs < 1000, "the search does not end");
            ddmin.answer(candidate.id, Some(fails(&candidate.positions)));
        }
        assert!(ddmin.is_minimal());
        (ddmin.set().to_vec(), runs)
    }

    #[test]
    fn a_single_culprit_is_found_by_halving() {
        for len in [2, 5, 16, 33, 100] {
            for culprit in [0, len / 3, len - 1] {
                let (found, runs) = search(len, |set| set.contains(&culprit));
                assert_eq!(found, [culprit], "len {len}");
                let log2 = (len as f64).log2().ceil() as usize;
                assert!(runs <= 2 * log2, "len {len}: {runs} runs");
            }
        }
    }

    #[test]
    fn a_pair_where_neither_alone_fails_is_found_in_full() {
        for (len, a, b) in [(12, 3, 9), (12, 0, 1), (30, 4, 22), (7, 5, 6)] {
            let (found, runs) = search(len, |set| set.contains(&a) && set.contains(&b));
            assert_eq!(found, [a, b], "len {len}");
            assert!(runs <= 4 * len, "len {len}: {runs} runs");
        }
    }

    #[test]
    fn one_test_before_the_victim_is_the_culprit_without_a_run() {
        let mut ddmin = Ddmin::new(1);
        assert!(ddmin.is_minimal());
        assert_eq!(ddmin.next_candidate(), None);
        assert_eq!(ddmin.set(), [0]);
    }

    #[test]
    fn parallel_answers_in_any_order_decide_as_a_serial_search_would() {
        // Both halves of 0..8 fail (a culprit in each); the first is taken either way.
        let fails = |set: &[usize]| set.contains(&1) || set.contains(&6);
        let mut ddmin = Ddmin::new(8);
        let first = ddmin.next_candidate().unwrap();
        let second = ddmin.next_candidate().unwrap();
        assert_eq!(
            ddmin.next_candidate(),
            None,
            "a step hands out only its own candidates"
        );
        ddmin.answer(second.id, Some(fails(&second.positions)));
        assert_eq!(ddmin.set(), (0..8).collect::<Vec<_>>(), "undecided");
        ddmin.answer(first.id, Some(fails(&first.positions)));
        assert_eq!(ddmin.set(), [0, 1, 2, 3]);
        // A late answer to the decided step changes nothing.
        ddmin.answer(second.id, Some(true));
        assert_eq!(ddmin.set(), [0, 1, 2, 3]);
    }

    #[test]
    fn a_run_that_never_reached_the_victim_counts_as_passing() {
        let mut ddmin = Ddmin::new(4);
        let first = ddmin.next_candidate().unwrap();
        let second = ddmin.next_candidate().unwrap();
        ddmin.answer(first.id, None);
        ddmin.answer(second.id, Some(true));
        assert_eq!(ddmin.set(), second.positions);
    }
}
