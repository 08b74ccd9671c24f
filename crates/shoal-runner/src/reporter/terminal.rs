//! The terminal: progress while tests run and pytest's summary at the end.
//!
//! The layout copies pytest and pytest-xdist line for line (separators, progress percentages,
//! the short summary, the final stats line), so people and log scrapers see what they know.
//! Failure sections arrive already rendered by pytest in the worker; this module places them.

use std::{
    collections::HashMap,
    io::{self, BufWriter, Write},
    time::Duration,
};

use anstyle::{AnsiColor, Reset, Style};
use shoal_protocol::{Outcome, PhaseReport, PytestSettings, Recycle, SessionExit, When};

use super::{
    live::{Live, Tally},
    RunStart,
};
use crate::{
    options::FailureOutput,
    replay::triage::{failed_tests, TriageReport, Verdict, MAX_TRIAGED},
    results::{Results, StopReason, TestRecord},
};

/// Categories in the order pytest's final line lists them.
const KNOWN_CATEGORIES: [&str; 8] = [
    "failed",
    "passed",
    "skipped",
    "deselected",
    "xfailed",
    "xpassed",
    "warnings",
    "error",
];

const PROGRESS_WIDTH: usize = " [100%]".len();

/// The colour pytest gives a category's letters, words and counts.
fn category_color(category: &str) -> AnsiColor {
    match category {
        "failed" | "error" => AnsiColor::Red,
        "passed" => AnsiColor::Green,
        _ => AnsiColor::Yellow,
    }
}

/// pytest's `TerminalWriter.markup`: one escape sequence per markup, the colour before bold
/// (red bold is `ESC[31m ESC[1m`, as pytest writes it), then a reset. Two styles rendered one
/// after the other, because anstyle renders one style's effects before its colour.
fn markup(text: &str, color: Option<AnsiColor>, bold: bool) -> String {
    let color = Style::new().fg_color(color.map(Into::into));
    let weight = if bold {
        Style::new().bold()
    } else {
        Style::new()
    };
    format!("{color}{weight}{text}{Reset}")
}

/// Writes the run's progress and summary to stdout.
pub struct Terminal {
    settings: PytestSettings,
    failure_output: FailureOutput,
    /// The live view, when stdout is a terminal.
    live: Option<Live>,
    tally: Tally,
    /// stdout, or stderr when stdout carries `--report-json=-`.
    out: Box<dyn Write>,
    to_stderr: bool,
    /// Characters on the current progress line.
    column: usize,
    /// The current progress line's letters, in the live view: it shows them on a line of
    /// its own, and prints the line above itself once the line is complete.
    letters: String,
    total: usize,
    done: usize,
    /// Per worker: output after its last newline.
    partial_output: HashMap<String, Vec<u8>>,
    /// Why workers stopped being replaced, for xdist's `xdist: ...` summary line.
    restart_limit: Option<String>,
}

impl Terminal {
    pub fn new(settings: PytestSettings, failure_output: FailureOutput, to_stderr: bool) -> Self {
        // `-p no:terminal`: pytest prints nothing, nor does shoal's terminal.
        // Buffered: the progress of a busy run goes out in one write per burst of tests (see
        // `flush`), not one per test.
        let out: Box<dyn Write> = match (settings.terminal, to_stderr) {
            (false, _) => Box::new(io::sink()),
            (true, true) => Box::new(BufWriter::new(io::stderr())),
            (true, false) => Box::new(BufWriter::new(io::stdout())),
        };
        Self {
            settings,
            failure_output,
            live: None,
            tally: Tally::default(),
            to_stderr,
            out,
            column: 0,
            letters: String::new(),
            total: 0,
            done: 0,
            partial_output: HashMap::new(),
            restart_limit: None,
        }
    }

    fn paint(&self, text: &str, color: Option<AnsiColor>, bold: bool) -> String {
        if !self.settings.color || (color.is_none() && !bold) {
            return text.to_owned();
        }
        markup(text, color, bold)
    }

    /// pytest's `TerminalWriter.sep`.
    fn sep(&self, sepchar: char, title: &str) -> String {
        let width = self.settings.width;
        let mut line = if title.is_empty() {
            sepchar.to_string().repeat(width)
        } else {
            let n = (width.saturating_sub(title.chars().count() + 2) / 2).max(1);
            let fill = sepchar.to_string().repeat(n);
            format!("{fill} {title} {fill}")
        };
        if line.chars().count() < width {
            line.push(sepchar);
        }
        line
    }

    fn line(&mut self, text: &str) {
        if let Some(live) = &self.live {
            live.println(text);
            return;
        }
        self.ensure_newline();
        let _ = writeln!(self.out, "{text}");
    }

    /// Adds `text`, `width` columns wide, to the progress line: on stdout, or in the live
    /// view, which keeps the line below what is printed above it.
    fn progress_piece(&mut self, text: &str, width: usize) {
        self.column += width;
        match &self.live {
            Some(live) => {
                self.letters.push_str(text);
                live.letters(&self.letters);
            }
            None => {
                let _ = write!(self.out, "{text}");
            }
        }
    }

    /// Ends a progress line that has letters with pytest's percentage, filling the space up
    /// to it (as pytest does after the last test), so that a line cut short by a worker's
    /// output (`-s`) reads as a whole one: output between progress lines, none in pieces.
    fn end_progress_line(&mut self) {
        if self.column == 0 {
            return;
        }
        let fill = self.settings.width.saturating_sub(self.column + 1);
        let msg = format!("{:>fill$}", self.percent().trim_start());
        self.finish_progress_line(&msg);
    }

    /// Writes `msg` (the percentage) at the end of the progress line and starts a new one:
    /// in the live view, the whole line goes above it, where it stays when the view ends.
    fn finish_progress_line(&mut self, msg: &str) {
        let msg = self.paint(msg, Some(self.progress_color()), false);
        match &self.live {
            Some(live) => {
                live.println(&format!("{}{msg}", self.letters));
                self.letters.clear();
                live.letters("");
                self.column = 0;
            }
            None => {
                let _ = write!(self.out, "{msg}");
                self.ensure_newline();
            }
        }
    }

    /// pytest's colour for the percentages: red once a test has failed.
    fn progress_color(&self) -> AnsiColor {
        if self.tally.failed > 0 {
            AnsiColor::Red
        } else {
            AnsiColor::Green
        }
    }

    fn ensure_newline(&mut self) {
        if self.column > 0 {
            let _ = writeln!(self.out);
            self.column = 0;
        }
    }

    /// The lines pytest-xdist prints while it brings its workers up (`created: 2/2 workers`,
    /// `2 workers [120 items]`; `bringing up nodes...` twice with `-q`), and with `-v` the
    /// scheduler it uses, after shoal's own: which Python runs the tests and why that one; in
    /// a terminal, the live view follows.
    pub fn start(&mut self, start: &RunStart<'_>) {
        let &RunStart {
            workers,
            tests: total,
            start_method,
            interpreter,
            scheduler,
            shard,
            known_durations,
            shuffle,
        } = start;
        self.total = total;
        let plural = if workers == 1 { "worker" } else { "workers" };
        if self.settings.verbose >= 0 {
            // The start method is shoal's own: xdist's line, with it added under `-v`.
            let method = match self.settings.verbose {
                0 => String::new(),
                _ => format!(" ({start_method})"),
            };
            self.line(&format!("created: {workers}/{workers} {plural}{method}"));
            let items = match shard {
                Some(s) => format!("{total} of {} items, shard {}", s.collected, s.shard),
                None if total == 1 => "1 item".to_owned(),
                None => format!("{total} items"),
            };
            self.line(&format!("{workers} {plural} [{items}]"));
        } else {
            self.line("bringing up nodes...");
            self.line("bringing up nodes...");
        }
        if let Some(seed) = shuffle {
            // Also under -q: without the seed a failing order cannot be had again.
            self.line(&format!("shuffle: seed {seed} (again: --shuffle={seed})"));
        }
        self.line("");
        if self.settings.verbose > 0 {
            self.line(&format!(
                "python: {} ({})",
                interpreter.path.display(),
                interpreter.describe()
            ));
        }
        if let Some(shard) = shard.filter(|_| self.settings.verbose > 0) {
            let from = match shard.from {
                Some(variables) => format!("read from {variables}"),
                None => "given by --shard".to_owned(),
            };
            let by = match shard.known {
                0 => "by test count (no recorded durations)".to_owned(),
                known => format!(
                    "by recorded durations ({known} of {} tests known)",
                    shard.collected
                ),
            };
            self.line(&format!("shard {} {from}, split {by}", shard.shard));
        }
        if let Some(scheduler) = scheduler.filter(|_| self.settings.verbose > 0) {
            self.line(&format!("scheduling tests via {scheduler}"));
            // Whether recorded durations order the work.
            self.line(&match (shuffle, known_durations) {
                (Some(seed), _) => format!("units go out shuffled with seed {seed}"),
                (None, 0) => "no recorded durations: tests go out in collection order".to_owned(),
                (None, n) => format!("recorded durations of {n} tests: the longest go out first"),
            });
        }
        if self.settings.verbose > 0 {
            self.line("");
        }
        let _ = self.out.flush();
        if live_view(self.to_stderr) && self.settings.terminal && self.settings.verbose >= -1 {
            let ids: Vec<String> = (0..workers).map(|n| format!("gw{n}")).collect();
            self.live = Some(Live::new(total, &ids, self.to_stderr));
        }
    }

    /// Writes what the terminal holds: the dispatcher calls this whenever it has no event
    /// left to handle, so a test's progress shows as soon as the burst it came in is handled.
    pub fn flush(&mut self) {
        let _ = self.out.flush();
    }

    /// One of shoal's own lines, on stderr, with the live view (if any) out of its way, and
    /// after what stdout holds.
    pub fn notice(&mut self, text: &str) {
        self.flush();
        match &self.live {
            Some(live) => live.suspend(|| eprintln!("{text}")),
            None => eprintln!("{text}"),
        }
    }

    /// A test started (`-vv`): its node id on a line of its own, as pytest-xdist shows it
    /// before the result.
    pub fn test_started(&mut self, nodeid: &str) {
        if self.settings.verbose > 1 && self.live.is_none() {
            self.line(&format!("{nodeid} "));
            let _ = self.out.flush();
        }
    }

    /// A line of pytest-xdist's about its workers (`replacing crashed worker gw0`), after an
    /// empty line, as xdist's `report_line` prints it.
    pub fn worker_line(&mut self, text: &str) {
        if self.settings.verbose >= 0 {
            self.line("");
            self.line(text);
            let _ = self.out.flush();
        }
    }

    /// With `-v`: a worker process was replaced by a fresh one after `tests` tests, as
    /// xdist's worker lines go.
    pub fn recycled(&mut self, worker: &str, tests: usize, why: Recycle, max_rss: Option<u64>) {
        if self.settings.verbose <= 0 {
            return;
        }
        let after = match tests {
            1 => "1 test".to_owned(),
            n => format!("{n} tests"),
        };
        self.worker_line(&match (why, max_rss) {
            (Recycle::Rss { rss }, Some(limit)) => format!(
                "[{worker}] recycled after {after}: the last left it at {} (limit {})",
                mebibytes(rss),
                mebibytes(limit)
            ),
            _ => format!("[{worker}] recycled after {after}"),
        });
    }

    /// Crashed workers are no longer replaced: `text` says why, now and in the summary.
    pub fn restart_limit(&mut self, text: String) {
        self.worker_line(&text);
        self.restart_limit = Some(text);
    }

    /// Which test each worker runs now (live view only).
    pub fn running(&self, worker: usize, nodeid: Option<&str>) {
        if let Some(live) = &self.live {
            live.running(worker, nodeid);
        }
    }

    /// Updates the live totals; `eta` is the estimated time left, when history allows.
    pub fn progress(&self, eta: Option<Duration>) {
        if let Some(live) = &self.live {
            live.update(self.done, self.tally, eta);
        }
    }

    /// What a worker printed (with `-s`, or outside pytest's capture): whole lines, each
    /// prefixed with the worker id, so output from many workers stays readable.
    pub fn worker_output(&mut self, worker: &str, bytes: &[u8]) {
        let buf = self.partial_output.entry(worker.to_owned()).or_default();
        buf.extend_from_slice(bytes);
        let Some(end) = buf.iter().rposition(|&b| b == b'\n') else {
            return;
        };
        let complete: Vec<u8> = buf.drain(..=end).collect();
        for line in complete[..complete.len() - 1].split(|&b| b == b'\n') {
            self.output_line(worker, line.strip_suffix(b"\r").unwrap_or(line));
        }
        let _ = self.out.flush();
    }

    /// The worker's output ended: show a last line that had no newline.
    pub fn output_closed(&mut self, worker: &str) {
        if let Some(rest) = self.partial_output.remove(worker).filter(|r| !r.is_empty()) {
            self.output_line(worker, &rest);
        }
    }

    /// One line a worker printed, as written: bytes that are not UTF-8 pass through, as
    /// pytest lets them (the live view can only show text).
    fn output_line(&mut self, worker: &str, line: &[u8]) {
        if let Some(live) = &self.live {
            live.println(&format!("[{worker}] {}", String::from_utf8_lossy(line)));
            return;
        }
        self.end_progress_line();
        let _ = write!(self.out, "[{worker}] ");
        let _ = self.out.write_all(line);
        let _ = writeln!(self.out);
    }

    fn percent(&self) -> String {
        let pct = (self.done * 100).checked_div(self.total).unwrap_or(100);
        format!(" [{pct:>3}%]")
    }

    /// A test failed and will run again (`--retries`): `R`, or a RETRY line with `-v`.
    pub fn retrying(&mut self, record: &TestRecord) {
        if self.settings.verbose > 0 {
            let word = self.paint("RETRY", Some(AnsiColor::Yellow), false);
            self.line(&format!("[{}] {word} {}", record.worker, record.shown()));
        } else {
            let letter = self.paint("R", Some(AnsiColor::Yellow), false);
            self.progress_piece(&letter, 1);
        }
    }

    /// One test finished: a letter per phase, or `-v` lines, with pytest's progress.
    pub fn test_done(&mut self, record: &TestRecord) {
        self.done += 1;
        for report in &record.reports {
            match report.category.as_str() {
                "passed" | "xpassed" => self.tally.passed += 1,
                "failed" | "error" => self.tally.failed += 1,
                "skipped" | "xfailed" => self.tally.skipped += 1,
                _ => {}
            }
        }
        if self.failure_output == FailureOutput::Immediate {
            self.record_sections(record, "error");
            self.record_sections(record, "failed");
        }
        if self.settings.verbose > 0 {
            for report in record.reports.iter().filter(|r| !r.word.is_empty()) {
                let color = category_color(&report.category);
                let progress = self.paint(
                    &format!("{} ", self.percent()),
                    Some(AnsiColor::Cyan),
                    false,
                );
                let word = self.paint(&report.word, Some(color), false);
                // As pytest-xdist prints it: `[gw0] [ 50%] ERROR path::test`, whatever the phase.
                let label = record.shown();
                self.line(&format!("[{}]{progress}{word} {label}", record.worker));
            }
        } else {
            for report in record.reports.iter().filter(|r| !r.letter.is_empty()) {
                let color = category_color(&report.category);
                let letter = self.paint(&report.letter, Some(color), false);
                self.progress_piece(&letter, report.letter.chars().count());
            }
            if self.done == self.total {
                self.end_progress_line();
            } else if self.column + PROGRESS_WIDTH + 1 >= self.settings.width {
                self.finish_progress_line(&self.percent());
            }
        }
    }

    /// The FAILURES/ERRORS sections, the short summary and the final stats line.
    pub fn summary(
        &mut self,
        results: &Results,
        stop: Option<&StopReason>,
        plugin_summary: &str,
        elapsed: Duration,
    ) {
        if let Some(live) = self.live.take() {
            live.finish();
            // A run stopped early leaves its last progress line unfinished, as pytest does.
            let _ = write!(self.out, "{}", std::mem::take(&mut self.letters));
        }
        self.ensure_newline();
        if self.settings.tbstyle != "no" && self.failure_output == FailureOutput::End {
            self.sections(results, "error", "ERRORS");
            self.sections(results, "failed", "FAILURES");
        }
        if !results.session_errors().is_empty() {
            let header = self.sep('=', "WORKER ERRORS");
            self.line(&header);
            for error in results.session_errors() {
                let line = self.paint(error, Some(AnsiColor::Red), false);
                self.line(&line);
            }
        }
        if self.settings.reportchars.contains('w') {
            self.warnings_summary(results);
        }
        self.leaks_summary(results);
        // pytest prints the passes after the warnings summary.
        if self.settings.tbstyle != "no" && self.settings.reportchars.contains('P') {
            self.passes(results);
        }
        self.durations(results);
        if let Some(junit) = &self.settings.junit {
            if self.settings.verbose >= 0 {
                let line = self.sep('-', &format!("generated xml file: {}", junit.path));
                self.line(&line);
            }
        }
        if let Some(why) = self
            .restart_limit
            .clone()
            .filter(|_| self.settings.verbose >= 0)
        {
            let line = self.sep('=', &format!("xdist: {why}"));
            self.line(&line);
        }
        if !plugin_summary.is_empty() {
            self.line(plugin_summary.strip_suffix('\n').unwrap_or(plugin_summary));
        }
        if self.settings.reportchars.contains('R') {
            self.rerun_summary(results);
        }
        self.short_summary(results);
        // Interrupted before any verdict, triage has nothing to show.
        if let Some(triage) = results
            .triage()
            .filter(|t| !t.verdicts.is_empty() || t.untriaged > 0)
        {
            self.triage_summary(triage);
        }
        let stop_after_stats = stop.filter(|s| s.after_stats());
        if let Some(stop) = stop.filter(|s| !s.after_stats()) {
            self.stop_line(results, stop);
        }
        self.stats_line(results, elapsed);
        if let Some(stop) = stop_after_stats {
            self.stop_line(results, stop);
        }
        let _ = self.out.flush();
    }

    /// Why the run stopped early, and how many tests that left out.
    fn stop_line(&mut self, results: &Results, stop: &StopReason) {
        let why = match stop {
            StopReason::MaxFail(n) => format!("stopping after {n} failures"),
            StopReason::NoWorkers => "no workers left to run the remaining tests".to_owned(),
            StopReason::Interrupted => "KeyboardInterrupt".to_owned(),
            StopReason::RunTimeout => "the run exceeded --run-timeout".to_owned(),
            StopReason::Exit(exit) => exit.message.clone(),
            StopReason::InternalError(worker) => format!("internal error in worker {worker}"),
            StopReason::WorkLost(why) => why.clone(),
        };
        // pytest's stats line has no place for tests that never ran: they are counted here.
        let title = match results.not_run() {
            0 => why,
            1 => format!("{why}: 1 test not run"),
            n => format!("{why}: {n} tests not run"),
        };
        let line = self.sep('!', &title);
        // pytest does not colour its exit line.
        let color = (!matches!(stop, StopReason::Exit(_))).then_some(AnsiColor::Red);
        let line = self.paint(&line, color, false);
        self.line(&line);
        if let StopReason::Exit(SessionExit {
            location: Some(location),
            ..
        }) = stop
        {
            self.line(location);
            let hint = "(to show a full traceback on KeyboardInterrupt use --full-trace)";
            let hint = self.paint(hint, Some(AnsiColor::Yellow), false);
            self.line(&hint);
        }
    }

    fn sections(&mut self, results: &Results, category: &str, title: &str) {
        let reports: Vec<(&TestRecord, &PhaseReport)> = results.category(category).collect();
        if reports.is_empty() {
            return;
        }
        let header = self.sep('=', title);
        self.line(&header);
        for (record, report) in reports {
            self.section(record, report, category);
        }
    }

    /// `-rR`: pytest-rerunfailures' summary of the reruns its workers made.
    fn rerun_summary(&mut self, results: &Results) {
        // As pytest-rerunfailures' show_rerun: every attempt of a rerun test but quiet phases.
        let reruns: Vec<String> = results
            .records()
            .iter()
            .filter(|record| record.reports.iter().any(|r| r.category == "rerun"))
            .flat_map(|record| {
                record
                    .reports
                    .iter()
                    .filter(|r| !(r.outcome == Outcome::Passed && r.when != When::Call))
                    .map(move |r| {
                        let word = if r.word.is_empty() {
                            r.outcome.as_str().to_uppercase()
                        } else {
                            r.word.clone()
                        };
                        format!("{word} {}", record.nodeid)
                    })
            })
            .collect();
        if reruns.is_empty() {
            return;
        }
        let header = self.sep('=', "rerun test summary info");
        self.line(&header);
        for line in reruns {
            self.line(&line);
        }
    }

    /// `-rP`: pytest's PASSES section, the captured output of passing tests.
    fn passes(&mut self, results: &Results) {
        let passed: Vec<(&TestRecord, &PhaseReport)> = results.category("passed").collect();
        if passed.is_empty() {
            return;
        }
        let header = self.sep('=', "PASSES");
        self.line(&header);
        for (record, report) in passed {
            let Some(text) = report.text.as_deref().filter(|t| !t.is_empty()) else {
                continue;
            };
            let sep = self.sep('_', headline_of(record, report));
            let sep = self.paint(&sep, Some(AnsiColor::Green), true);
            self.line(&sep);
            self.line(text.strip_suffix('\n').unwrap_or(text));
        }
    }

    /// `--failure-output immediate`: a failed test's sections, as soon as it ends.
    fn record_sections(&mut self, record: &TestRecord, category: &str) {
        if self.settings.tbstyle == "no" {
            return;
        }
        for report in record.reports.iter().filter(|r| r.category == category) {
            self.section(record, report, category);
        }
    }

    fn section(&mut self, record: &TestRecord, report: &PhaseReport, category: &str) {
        if self.settings.tbstyle != "line" {
            let headline = headline_of(record, report);
            let headline = if report.when == When::Collect {
                format!("ERROR collecting {headline}")
            } else if category == "error" {
                format!("ERROR at {} of {headline}", report.when.as_str())
            } else {
                headline.to_owned()
            };
            let sep = self.sep('_', &headline);
            let sep = self.paint(&sep, Some(AnsiColor::Red), true);
            self.line(&sep);
        }
        if let Some(text) = &report.text {
            self.line(text.strip_suffix('\n').unwrap_or(text));
        }
    }

    /// pytest's warnings summary: grouped by message, with where each arose.
    fn warnings_summary(&mut self, results: &Results) {
        let mut grouped: Vec<(&str, Vec<&str>)> = Vec::new();
        for warning in results.warnings() {
            let location = warning.location.as_deref();
            match grouped.iter_mut().find(|(m, _)| *m == warning.message) {
                Some((_, locations)) => locations.extend(location),
                None => grouped.push((&warning.message, location.into_iter().collect())),
            }
        }
        if grouped.is_empty() {
            return;
        }
        self.painted_header("warnings summary", AnsiColor::Yellow, false);
        for (message, locations) in grouped {
            if locations.is_empty() {
                self.line(message.trim_end());
            } else {
                self.line(&collapse_locations(&locations));
                let indented: Vec<String> = message.lines().map(|l| format!("  {l}")).collect();
                self.line(indented.join("\n").trim_end());
            }
            self.line("");
        }
        self.line("-- Docs: https://docs.pytest.org/en/stable/how-to/capture-warnings.html");
    }

    /// A `=` separator around `title`, in `color` (and bold), as pytest heads its summaries.
    fn painted_header(&mut self, title: &str, color: AnsiColor, bold: bool) {
        let header = self.sep('=', title);
        let header = self.paint(&header, Some(color), bold);
        self.line(&header);
    }

    /// `--detect-leaks`: what each test left behind, a block per test in finishing order, laid
    /// out as the warnings summary is. Shown whatever `-r` says: the user asked for it.
    fn leaks_summary(&mut self, results: &Results) {
        let leaky: Vec<&TestRecord> = results
            .records()
            .iter()
            .filter(|r| !r.leaks.is_empty())
            .collect();
        if leaky.is_empty() {
            return;
        }
        self.painted_header("leaks summary", AnsiColor::Yellow, false);
        for record in leaky {
            self.line(record.shown());
            for leak in &record.leaks {
                self.line(&format!("  {}: {}", leak.kind.as_str(), leak.detail));
            }
            self.line("");
        }
        self.line("-- state a test left behind can make later tests on its worker fail: see shoal's docs/leaks.md");
    }

    /// `--durations=N`: the slowest phases, as pytest lists them.
    fn durations(&mut self, results: &Results) {
        let Some(limit) = self.settings.durations else {
            return;
        };
        let explicit_min = self.settings.durations_min;
        let min = explicit_min.unwrap_or(if self.settings.verbose < 2 {
            0.005
        } else {
            0.0
        });
        let mut phases: Vec<(f64, &str, &str)> = results
            .reports()
            .map(|(record, r)| (r.duration, r.when.as_str(), record.nodeid.as_str()))
            .collect();
        if phases.is_empty() {
            return;
        }
        phases.sort_by(|a, b| b.0.total_cmp(&a.0));
        let title = if limit == 0 {
            "slowest durations".to_owned()
        } else {
            phases.truncate(limit);
            format!("slowest {limit} durations")
        };
        let header = self.sep('=', &title);
        self.line(&header);
        for (i, (duration, when, nodeid)) in phases.iter().enumerate() {
            if *duration < min {
                self.line("");
                let mut message = format!("({} durations < {min}s hidden.", phases.len() - i);
                if explicit_min.is_none() {
                    message.push_str("  Use -vv to show these durations.");
                }
                message.push(')');
                self.line(&message);
                break;
            }
            self.line(&format!("{duration:02.2}s {when:<8} {nodeid}"));
        }
    }

    fn short_summary(&mut self, results: &Results) {
        let mut lines = Vec::new();
        for char in self.settings.reportchars.clone().chars() {
            match char {
                'f' => self.simple_lines(results, "failed", &mut lines),
                'E' => self.simple_lines(results, "error", &mut lines),
                'p' => self.simple_lines(results, "passed", &mut lines),
                's' => self.skipped_lines(results, &mut lines),
                'x' => self.xfail_lines(results, "xfailed", &mut lines),
                'X' => self.xfail_lines(results, "xpassed", &mut lines),
                _ => {}
            }
        }
        for record in results.records().iter().filter(|r| r.flaky()) {
            let word = self.paint("FLAKY", Some(AnsiColor::Yellow), false);
            let tries = record.earlier_attempts.len() + 1;
            lines.push(format!("{word} {} - passed on try {tries}", record.shown()));
        }
        if lines.is_empty() {
            return;
        }
        self.painted_header("short test summary info", AnsiColor::Cyan, true);
        for line in lines {
            self.line(&line);
        }
    }

    /// `--triage`'s verdicts, a line per failed test, with the bisect to run for a polluted one.
    fn triage_summary(&mut self, triage: &TriageReport) {
        self.painted_header("triage", AnsiColor::Cyan, true);
        for verdict in &triage.verdicts {
            let color = match verdict.verdict {
                Verdict::Flaky | Verdict::Unknown => AnsiColor::Yellow,
                Verdict::Polluted => AnsiColor::Magenta,
                Verdict::Failed => AnsiColor::Red,
            };
            let word = self.paint(verdict.verdict.word(), Some(color), false);
            let bisect = verdict
                .bisect
                .as_deref()
                .map_or_else(String::new, |command| {
                    format!("; find what pollutes it: {command}")
                });
            let line = format!(
                "{word} {} - {}{bisect}",
                verdict.nodeid,
                verdict.verdict.reason()
            );
            self.line(&line);
        }
        if triage.untriaged > 0 {
            let line = format!(
                "triage: {} not triaged (at most {MAX_TRIAGED} are)",
                failed_tests(triage.untriaged)
            );
            self.line(&line);
        }
    }

    fn simple_lines(&self, results: &Results, category: &str, lines: &mut Vec<String>) {
        let color = category_color(category);
        for (record, report) in results.category(category) {
            let plain = format!("{} {}", report.word, record.shown());
            let mut line = format!(
                "{} {}",
                self.paint(&report.word, Some(color), false),
                record.shown()
            );
            if let Some(message) = &report.message {
                if self.settings.full_summary {
                    line.push_str(&format!(" - {message}"));
                } else if let Some(trimmed) = trim_message(
                    message,
                    self.settings.width.saturating_sub(plain.chars().count()),
                ) {
                    line.push_str(&trimmed);
                }
            }
            lines.push(line);
        }
    }

    fn skipped_lines(&self, results: &Results, lines: &mut Vec<String>) {
        // pytest folds identical skips: same file, line and reason.
        type SkipKey = (String, Option<u32>, String);
        let mut folded: Vec<(SkipKey, usize, String)> = Vec::new();
        for (_, report) in results.category("skipped") {
            let Some(key) = report.skip.clone() else {
                continue;
            };
            match folded.iter_mut().find(|(k, _, _)| *k == key) {
                Some(entry) => entry.1 += 1,
                None => folded.push((key, 1, report.word.clone())),
            }
        }
        for ((path, line, reason), count, word) in folded {
            let word = self.paint(&word, Some(AnsiColor::Yellow), false);
            let reason = reason.strip_prefix("Skipped: ").unwrap_or(&reason);
            lines.push(match line {
                Some(line) => format!("{word} [{count}] {path}:{line}: {reason}"),
                None => format!("{word} [{count}] {path}: {reason}"),
            });
        }
    }

    fn xfail_lines(&self, results: &Results, category: &str, lines: &mut Vec<String>) {
        for (record, report) in results.category(category) {
            let word = self.paint(&report.word, Some(AnsiColor::Yellow), false);
            let mut line = if report.when == When::Call || category == "xpassed" {
                format!("{word} {}", record.shown())
            } else {
                format!("{word} at {} of {}", report.when.as_str(), record.shown())
            };
            if let Some(reason) = report.wasxfail.as_deref().filter(|r| !r.is_empty()) {
                line.push_str(&format!(" - {reason}"));
            }
            lines.push(line);
        }
    }

    fn stats_line(&mut self, results: &Results, elapsed: Duration) {
        let mut counts: Vec<(String, usize)> = KNOWN_CATEGORIES
            .iter()
            .map(|c| (c.to_string(), 0))
            .collect();
        for (_, report) in results.reports() {
            if report.category.is_empty() {
                continue;
            }
            match counts.iter_mut().find(|(c, _)| *c == report.category) {
                Some(entry) => entry.1 += 1,
                None => counts.push((report.category.clone(), 1)),
            }
        }
        if let Some(entry) = counts.iter_mut().find(|(c, _)| c == "deselected") {
            entry.1 = self.settings.deselected;
        }
        if let Some(entry) = counts.iter_mut().find(|(c, _)| c == "warnings") {
            entry.1 = results.warnings().count();
        }
        let seen = |name: &str| counts.iter().any(|(c, n)| c == name && *n > 0);
        let unknown = counts
            .iter()
            .skip(KNOWN_CATEGORIES.len())
            .any(|(_, n)| *n > 0);
        let not_run = results.not_run();
        let flaky = results.records().iter().filter(|r| r.flaky()).count();
        let main = if seen("failed") || seen("error") || not_run > 0 {
            AnsiColor::Red
        } else if seen("warnings") || seen("xpassed") || unknown || flaky > 0 {
            AnsiColor::Yellow
        } else if seen("passed") {
            AnsiColor::Green
        } else {
            AnsiColor::Yellow
        };
        let mut parts: Vec<String> = counts
            .iter()
            .filter(|(_, n)| *n > 0)
            .map(|(category, n)| plural(*n, category))
            .collect();
        if flaky > 0 {
            parts.push(format!("{flaky} flaky"));
        }
        if parts.is_empty() {
            parts.push("no tests ran".into());
        }
        let text = format!("{} in {}", parts.join(", "), format_duration(elapsed));
        if self.settings.verbose < -1 {
            return;
        }
        let line = if self.settings.verbose >= 0 {
            self.sep('=', &text)
        } else {
            text
        };
        let line = self.paint(&line, Some(main), true);
        self.line(&line);
    }
}

/// pytest's `collapsed_location_report`: up to nine locations, else counts per file.
/// A report's section title: its own (a subtest's), else its test's.
/// Whether to draw the live view: the output goes to an interactive terminal.
fn live_view(to_stderr: bool) -> bool {
    use std::io::IsTerminal;
    let tty = if to_stderr {
        io::stderr().is_terminal()
    } else {
        io::stdout().is_terminal()
    };
    tty && std::env::var("TERM").map_or(true, |t| t != "dumb")
}

fn headline_of<'a>(record: &'a TestRecord, report: &'a PhaseReport) -> &'a str {
    report
        .headline
        .as_deref()
        .or(record.headline.as_deref())
        .unwrap_or("test session")
}

fn collapse_locations(locations: &[&str]) -> String {
    if locations.len() < 10 {
        return locations.join("\n");
    }
    let mut per_file: Vec<(&str, usize)> = Vec::new();
    for location in locations {
        let file = location.split("::").next().unwrap_or(location);
        match per_file.iter_mut().find(|(f, _)| *f == file) {
            Some(entry) => entry.1 += 1,
            None => per_file.push((file, 1)),
        }
    }
    per_file
        .iter()
        .map(|(file, n)| format!("{file}: {n} warning{}", if *n > 1 { "s" } else { "" }))
        .collect::<Vec<_>>()
        .join("\n")
}

/// A number of bytes as a memory limit is read: in MiB.
fn mebibytes(bytes: u64) -> String {
    format!("{:.1} MiB", bytes as f64 / f64::from(1 << 20))
}

/// pytest's `_make_plural`: only some nouns change.
fn plural(count: usize, category: &str) -> String {
    let noun = match category {
        "error" | "warnings" => {
            let singular = category.trim_end_matches('s');
            if count == 1 {
                singular.to_owned()
            } else {
                format!("{singular}s")
            }
        }
        other => other.to_owned(),
    };
    format!("{count} {noun}")
}

/// pytest's `_format_trimmed(" - {}", msg, available)`: the first line, cut to fit.
fn trim_message(message: &str, available: usize) -> Option<String> {
    let first = message.lines().next().unwrap_or("");
    const PREFIX: &str = " - ";
    const ELLIPSIS: &str = "...";
    if PREFIX.len() + ELLIPSIS.len() > available {
        return None;
    }
    if PREFIX.len() + first.chars().count() > available {
        let keep = available - ELLIPSIS.len() - PREFIX.len();
        let cut: String = first.chars().take(keep).collect();
        return Some(format!("{PREFIX}{cut}{ELLIPSIS}"));
    }
    Some(format!("{PREFIX}{first}"))
}

/// pytest's `format_session_duration`.
fn format_duration(elapsed: Duration) -> String {
    let seconds = elapsed.as_secs_f64();
    if seconds < 60.0 {
        return format!("{seconds:.2}s");
    }
    let whole = elapsed.as_secs();
    format!(
        "{seconds:.2}s ({}:{:02}:{:02})",
        whole / 3600,
        whole / 60 % 60,
        whole % 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_read_like_pytest() {
        assert_eq!(format_duration(Duration::from_millis(3210)), "3.21s");
        assert_eq!(
            format_duration(Duration::from_secs(3725)),
            "3725.00s (1:02:05)"
        );
    }

    #[test]
    fn plurals_read_like_pytest() {
        assert_eq!(plural(1, "error"), "1 error");
        assert_eq!(plural(2, "error"), "2 errors");
        assert_eq!(plural(1, "warnings"), "1 warning");
        assert_eq!(plural(3, "passed"), "3 passed");
    }

    #[test]
    fn colours_are_pytests_escape_sequences() {
        assert_eq!(
            markup("1 failed", Some(AnsiColor::Red), true),
            "\x1b[31m\x1b[1m1 failed\x1b[0m"
        );
        assert_eq!(
            markup("PASSED", Some(AnsiColor::Green), false),
            "\x1b[32mPASSED\x1b[0m"
        );
        assert_eq!(markup("title", None, true), "\x1b[1mtitle\x1b[0m");
    }

    #[test]
    fn messages_are_cut_to_the_line() {
        assert_eq!(trim_message("assert 0\nmore", 40).unwrap(), " - assert 0");
        assert_eq!(trim_message("abcdefghij", 10).unwrap(), " - abcd...");
        assert!(trim_message("abc", 4).is_none());
    }
}
