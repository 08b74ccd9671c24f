//! The live view in a terminal: one line of totals and one line per worker naming the test it
//! is running. Only used when stdout is a TTY; logs and CI get plain lines instead.

use std::time::Duration;

use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};

/// Totals shown on the progress line.
#[derive(Debug, Default, Clone, Copy)]
pub struct Tally {
    pub passed: usize,
    pub failed: usize,
    pub skipped: usize,
}

pub struct Live {
    multi: MultiProgress,
    /// pytest's progress line as it fills, letter by letter, above the totals; the terminal
    /// prints it above the view once complete.
    letters: ProgressBar,
    main: ProgressBar,
    workers: Vec<ProgressBar>,
}

impl Live {
    pub fn new(total: usize, workers: &[String], to_stderr: bool) -> Self {
        let target = if to_stderr {
            ProgressDrawTarget::stderr()
        } else {
            ProgressDrawTarget::stdout()
        };
        let multi = MultiProgress::with_draw_target(target);
        let letters = multi.add(ProgressBar::new_spinner());
        letters.set_style(ProgressStyle::with_template("{msg}").expect("template is valid"));
        let main = multi.add(ProgressBar::new(total as u64));
        main.set_style(
            ProgressStyle::with_template("{elapsed:>4} [{bar:30}] {pos}/{len} {msg}")
                .expect("template is valid")
                .progress_chars("=> "),
        );
        main.enable_steady_tick(Duration::from_millis(250));
        let workers = workers
            .iter()
            .map(|id| {
                let bar = multi.add(ProgressBar::new_spinner());
                bar.set_style(
                    ProgressStyle::with_template(&format!("  [{id}] {{wide_msg}}"))
                        .expect("template is valid"),
                );
                bar
            })
            .collect();
        Self {
            multi,
            letters,
            main,
            workers,
        }
    }

    /// Prints a line above the live view.
    pub fn println(&self, text: &str) {
        let _ = self.multi.println(text);
    }

    /// Runs `f` (which prints) with the live view hidden, then draws it again.
    pub fn suspend(&self, f: impl FnOnce()) {
        self.multi.suspend(f);
    }

    /// The progress line's letters so far (with their colours).
    pub fn letters(&self, text: &str) {
        self.letters.set_message(text.to_owned());
    }

    pub fn update(&self, done: usize, tally: Tally, eta: Option<Duration>) {
        self.main.set_position(done as u64);
        let mut msg = format!(
            "{} passed, {} failed, {} skipped",
            tally.passed, tally.failed, tally.skipped
        );
        if let Some(eta) = eta {
            msg.push_str(&format!(", ~{}s left", eta.as_secs()));
        }
        self.main.set_message(msg);
    }

    pub fn running(&self, worker: usize, nodeid: Option<&str>) {
        if let Some(bar) = self.workers.get(worker) {
            bar.set_message(nodeid.unwrap_or("(idle)").to_owned());
        }
    }

    /// Removes the live view before the summary is printed.
    pub fn finish(&self) {
        for bar in &self.workers {
            bar.finish_and_clear();
        }
        self.letters.finish_and_clear();
        self.main.finish_and_clear();
        let _ = self.multi.clear();
    }
}
