//! Time left, for the live view.

use std::time::Duration;

use shoal_protocol::CollectedItem;

use crate::durations::DurationStore;

/// The expected seconds of unfinished tests, shared by the workers. Tests without history
/// count as the average of those with; with no history at all there is no estimate.
pub struct Estimate {
    /// Per test: its expected seconds while unfinished, `None` once done.
    unfinished: Vec<Option<f64>>,
    remaining: f64,
    workers: usize,
    known: bool,
}

impl Estimate {
    pub fn new(store: Option<&DurationStore>, items: &[CollectedItem], workers: usize) -> Self {
        let history: Vec<Option<f64>> = items
            .iter()
            .map(|item| store.and_then(|s| s.expected(&item.nodeid)))
            .collect();
        let known: Vec<f64> = history.iter().flatten().copied().collect();
        let fallback = known.iter().sum::<f64>() / known.len().max(1) as f64;
        let unfinished: Vec<Option<f64>> = history
            .into_iter()
            .map(|e| Some(e.unwrap_or(fallback)))
            .collect();
        Self {
            remaining: unfinished.iter().flatten().sum(),
            unfinished,
            workers: workers.max(1),
            known: !known.is_empty(),
        }
    }

    pub fn done(&mut self, index: usize) {
        if let Some(seconds) = self.unfinished.get_mut(index).and_then(Option::take) {
            self.remaining = (self.remaining - seconds).max(0.0);
        }
    }

    pub fn left(&self) -> Option<Duration> {
        // The store is a file anyone may edit: a negative or huge history shows no estimate.
        self.known
            .then(|| Duration::try_from_secs_f64(self.remaining / self.workers as f64).ok())
            .flatten()
    }
}
