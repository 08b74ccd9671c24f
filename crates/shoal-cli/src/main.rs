//! `shoal`: the command-line entry point. It parses arguments, runs the suite and maps every
//! outcome to pytest's exit codes.

mod cli;

use std::process::ExitCode as ProcessExit;

use shoal_runner::ExitCode;

fn main() -> ProcessExit {
    let argv: Vec<String> = std::env::args().collect();
    if cli::is_merge(&argv) {
        return merge(&argv);
    }
    if cli::is_report(&argv) {
        return report(&argv);
    }
    if cli::is_replay(&argv) {
        return replay(cli::parse_replay(&argv));
    }
    if cli::is_bisect(&argv) {
        return replay(cli::parse_bisect(&argv));
    }
    let options = match cli::parse(argv) {
        Ok(options) => options,
        Err(err) => return usage(&err),
    };
    let options = match with_project_config(options) {
        Ok(options) => options,
        Err(exit) => return exit,
    };
    if options.show_config {
        print!(
            "{}",
            options.show_config(shoal_runner::python::describe_choice(&options))
        );
        return ProcessExit::from(ExitCode::Ok);
    }
    match shoal_runner::run(options) {
        Ok(code) => ProcessExit::from(code),
        Err(err) => failed(&err, err.exit_code()),
    }
}

/// `options` with what `[tool.shoal]` fills in, or the exit after saying why it cannot be read.
fn with_project_config(
    options: shoal_runner::RunOptions,
) -> Result<shoal_runner::RunOptions, ProcessExit> {
    std::env::current_dir()
        .map_err(|e| e.to_string())
        .and_then(|dir| {
            options
                .with_project_config(&dir)
                .map_err(|e| shoal_runner::error_chain(&e))
        })
        .map_err(|message| {
            eprintln!("shoal: error: failed to {message}");
            ProcessExit::from(ExitCode::UsageError)
        })
}

/// `shoal replay ...` and `shoal bisect ...`, parsed.
fn replay(
    parsed: Result<(shoal_runner::RunOptions, shoal_runner::replay::ReplayArgs), clap::Error>,
) -> ProcessExit {
    let (options, args) = match parsed {
        Ok(parsed) => parsed,
        Err(err) => return usage(&err),
    };
    let mut options = match with_project_config(options) {
        Ok(options) => options,
        Err(exit) => return exit,
    };
    // A recorded process ran its sequence in one process: a recycled worker would not.
    options.max_worker_tests = Some(0);
    options.max_worker_rss = Some(0);
    match shoal_runner::replay(options, args) {
        Ok(code) => ProcessExit::from(code),
        Err(err) => failed(&err, err.exit_code()),
    }
}

/// `shoal: error: failed to ...` with the error's causes, and the exit code.
fn failed(err: &dyn std::error::Error, code: ExitCode) -> ProcessExit {
    eprintln!("shoal: error: failed to {}", shoal_runner::error_chain(err));
    ProcessExit::from(code)
}

/// clap's error or help, and the exit code it stands for.
fn usage(err: &clap::Error) -> ProcessExit {
    let code = if err.use_stderr() {
        ExitCode::UsageError
    } else {
        ExitCode::Ok // --help, --version
    };
    let _ = err.print();
    ProcessExit::from(code)
}

/// `shoal merge FILE...`.
fn merge(argv: &[String]) -> ProcessExit {
    let options = match cli::parse_merge(argv) {
        Ok(options) => options,
        Err(err) => return usage(&err),
    };
    match shoal_runner::shard::merge::merge(&options) {
        Ok(code) => ProcessExit::from(code),
        Err(err) => failed(&err, err.exit_code()),
    }
}

/// `shoal report --queue URL --build ID`.
fn report(argv: &[String]) -> ProcessExit {
    let options = match cli::parse_report(argv) {
        Ok(options) => options,
        Err(err) => return usage(&err),
    };
    match shoal_runner::queue::report::report(&options) {
        Ok(code) => ProcessExit::from(code),
        Err(err) => failed(&err, err.exit_code()),
    }
}
