//! `--pdb` and `--trace`: pytest on this terminal, where pdb reads its commands.

use shoal_protocol::PytestSettings;

use super::Dispatcher;
use crate::{connection::Event, results::Results, signals, ExitCode, RunError};

impl Dispatcher {
    /// `--pdb` after the parallel run: its failed tests run again, on this terminal, under
    /// pdb. The run's outcome stays the parallel run's.
    pub(super) fn debug_failures(&mut self, results: &Results) -> Result<(), RunError> {
        let mut failed: Vec<String> = Vec::new();
        for record in results.records().iter().filter(|r| r.failed()) {
            if !failed.contains(&record.nodeid) {
                failed.push(record.nodeid.clone());
            }
        }
        let tests = match failed.len() {
            0 => return Ok(()),
            1 => "the failed test".to_owned(),
            n => format!("the {n} failed tests"),
        };
        self.notice(&format!(
            "shoal: --pdb: running {tests} again in the foreground, under pdb"
        ));
        self.foreground(Some(&failed)).map(drop)
    }

    /// `--pdb` and `--trace` need a terminal, where pdb reads its commands: without one the run
    /// is refused before any test runs. `--trace` stops at the start of every test, so the
    /// selection runs one test at a time, on the terminal, instead of in parallel; `--pdb`
    /// runs in parallel and debugs the failures afterwards (see [`Self::debug_failures`]).
    pub(super) fn debugger(
        &mut self,
        settings: &PytestSettings,
    ) -> Result<Option<ExitCode>, RunError> {
        use std::io::IsTerminal;
        let option = match (settings.trace, settings.usepdb) {
            (true, _) => "--trace",
            (false, true) => "--pdb",
            (false, false) => return Ok(None),
        };
        let terminal = std::io::stdin().is_terminal();
        if terminal && !settings.trace {
            return Ok(None);
        }
        self.finish_collector(None)?;
        if !terminal {
            return Err(RunError::NoTerminal { option });
        }
        self.notice("shoal: --trace: running the tests one at a time in the foreground");
        self.foreground(None).map(Some)
    }

    /// Runs `nodeids` (every test pytest selects when `None`) in a pytest on this terminal and
    /// waits for it, stopping with it on Ctrl-Z; Ctrl-C reaches it from the terminal.
    fn foreground(&mut self, nodeids: Option<&[String]>) -> Result<ExitCode, RunError> {
        let launch = &self.launch;
        let mut command = launch.interpreter.foreground_command(
            &launch.plugin,
            &launch.socket,
            nodeids,
            &launch.options.pytest_args,
        );
        if launch.options.report_json.as_deref() == Some("-") {
            command.stdout(std::io::stderr()); // stdout carries the JSON events
        }
        let mut child = command.spawn().map_err(|source| RunError::Spawn {
            python: launch.interpreter.path.clone(),
            source,
        })?;
        let pid = child.id();
        let (exited, status) = crossbeam_channel::bounded(1);
        std::thread::spawn(move || {
            let _ = exited.send(child.wait());
        });
        loop {
            crossbeam_channel::select! {
                recv(status) -> status => {
                    let code = status.ok().and_then(Result::ok).and_then(|s| s.code());
                    return Ok(code.map_or(ExitCode::InternalError, ExitCode::from_pytest));
                }
                recv(self.events) -> event => match event {
                    // The terminal stopped pytest too; `fg` continues both.
                    Ok(Event::Signal(signals::SIGTSTP)) => signals::stop_self(),
                    Ok(Event::Signal(signals::SIGTERM)) => {
                        signals::to_process(pid, signals::SIGTERM)
                    }
                    _ => {}
                },
            }
        }
    }
}
