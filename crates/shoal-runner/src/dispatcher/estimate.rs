//! Time left, for the live view.

use std::time::Duration;

use crate::durations::Expected;

/// The expected seconds of unfinished tests, shared by the workers. Tests without history
/// count as the average of those with; with no history at all there is no estimate.
#[derive(Clone)]
pub struct Estimate {
    /// Per test: its expected seconds while unfinished, `None` once done.
    unfinished: Vec<Option<f64>>,
    remaining: f64,
    workers: usize,
    known: bool,
}

impl Estimate {
    pub fn new(expected: &Expected, workers: usize) -> Self {
        Self {
            remaining: expected.seconds.iter().sum(),
            unfinished: expected.seconds.iter().copied().map(Some).collect(),
            workers: workers.max(1),
            known: expected.known > 0,
        }
    }

    pub fn done(&mut self, index: usize) {
        if let Some(seconds) = self.unfinished.get_mut(index).and_then(Option::take) {
            self.remaining = (self.remaining - seconds).max(0.0);
        }
    }

    pub fn left(&self) -> Option<Duration> {
        // A huge history shows no estimate.
        self.known
            .then(|| Duration::try_from_secs_f64(self.remaining / self.workers as f64).ok())
            .flatten()
    }
}
