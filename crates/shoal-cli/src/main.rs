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
    let options = match cli::parse(argv) {
        Ok(options) => options,
        Err(err) => return usage(&err),
    };
    let options = match std::env::current_dir()
        .map_err(|e| e.to_string())
        .and_then(|dir| {
            options
                .with_project_config(&dir)
                .map_err(|e| shoal_runner::error_chain(&e))
        }) {
        Ok(options) => options,
        Err(message) => {
            eprintln!("shoal: error: failed to {message}");
            return ProcessExit::from(ExitCode::UsageError);
        }
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
