//! The shoal controller: runs one pytest suite across worker processes.
//!
//! Data flows one way: the collector collects ([`dispatcher`]), the [`scheduler`] hands tests
//! to workers, workers report over the [`connection`]s, and the [`reporter`] prints what the
//! [`results`] hold. [`python`] finds the interpreter and carries the plugin; [`options`] and
//! [`parallelism`] turn what the user asked into a plan.

pub mod connection;
pub mod dispatcher;
pub mod durations;
pub mod options;
pub mod parallelism;
pub mod python;
pub mod reporter;
pub mod results;
pub mod scheduler;
pub mod signals;

use std::path::PathBuf;

use shoal_protocol::FrameError;

pub use options::RunOptions;

/// pytest's exit codes, which shoal keeps.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExitCode {
    Ok = 0,
    TestsFailed = 1,
    Interrupted = 2,
    InternalError = 3,
    UsageError = 4,
    NoTestsCollected = 5,
}

impl ExitCode {
    /// pytest's own exit status, passed through when pytest finished by itself.
    pub fn from_pytest(code: i32) -> Self {
        match code {
            0 => Self::Ok,
            1 => Self::TestsFailed,
            2 => Self::Interrupted,
            4 => Self::UsageError,
            5 => Self::NoTestsCollected,
            _ => Self::InternalError,
        }
    }
}

/// A run could not be carried out. Messages read after "failed to".
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error(transparent)]
    Python(#[from] python::PythonError),
    #[error("import pytest with {python}: install pytest there, or choose another interpreter with --python")]
    PytestMissing { python: PathBuf },
    #[error(
        "run pytest with {python}: shoal needs Python {}.{} or newer and pytest {}.{} or newer",
        python::MIN_PYTHON.0,
        python::MIN_PYTHON.1,
        python::MIN_PYTEST.0,
        python::MIN_PYTEST.1
    )]
    VersionsUnsupported { python: PathBuf },
    #[error("start {python}")]
    Spawn {
        python: PathBuf,
        source: std::io::Error,
    },
    #[error("prepare the run directory")]
    RunDir(#[source] std::io::Error),
    #[error(transparent)]
    Options(#[from] options::OptionsError),
    #[error("talk to {who}")]
    Protocol { who: String, source: FrameError },
    #[error(
        "agree on a protocol version: the plugin speaks {theirs}, this shoal speaks {}",
        shoal_protocol::PROTOCOL_VERSION
    )]
    ProtocolVersion { theirs: u32 },
    #[error("understand {who}: unexpected message {message}")]
    Unexpected { who: String, message: String },
    /// A Python process sent something [`dispatcher`]'s validation refuses.
    #[error("accept what {who} sent: {problem}")]
    Invalid { who: String, problem: String },
    #[error("collect the tests: the collecting pytest process died ({status})")]
    CollectorDied { status: String },
    #[error(transparent)]
    Junit(#[from] reporter::junit::JunitError),
    #[error(transparent)]
    Events(#[from] reporter::events::EventsError),
    #[error("start worker '{worker}': it collected different tests than the collector (- only in the collector, + only in the worker):{diff}")]
    CollectionMismatch { worker: String, diff: String },
}

impl RunError {
    pub fn exit_code(&self) -> ExitCode {
        match self {
            Self::Python(_)
            | Self::PytestMissing { .. }
            | Self::VersionsUnsupported { .. }
            | Self::Options(_) => ExitCode::UsageError,
            _ => ExitCode::InternalError,
        }
    }
}

/// Runs the suite as `options` ask and returns pytest's exit code for it.
pub fn run(options: RunOptions) -> Result<ExitCode, RunError> {
    let interpreter = python::Interpreter::discover(options.python.as_deref())?;
    let dir = run_dir().map_err(RunError::RunDir)?;
    let plugin = dir.path().join("shoal_plugin.py");
    std::fs::write(&plugin, python::PLUGIN_SOURCE).map_err(RunError::RunDir)?;
    let socket = dir.path().join("s");
    let (sender, events) = crossbeam_channel::unbounded();
    connection::listen(&socket, sender.clone()).map_err(RunError::RunDir)?;
    signals::forward(sender.clone()).map_err(RunError::RunDir)?;
    let launch = dispatcher::Launch {
        interpreter,
        plugin,
        socket,
        options,
    };
    dispatcher::Dispatcher::new(launch, events, sender).run()
}

/// An error and its causes on one line (`a: b: c`), to print after "failed to".
pub fn error_chain(err: &dyn std::error::Error) -> String {
    let mut text = err.to_string();
    let mut source = err.source();
    while let Some(cause) = source {
        text.push_str(&format!(": {cause}"));
        source = cause.source();
    }
    text
}

/// A private directory for the plugin file and the socket. Unix socket paths are limited to
/// about 100 bytes, so a long `$TMPDIR` falls back to `/tmp`.
fn run_dir() -> std::io::Result<tempfile::TempDir> {
    let tmp = std::env::temp_dir();
    let base = if tmp.as_os_str().len() > 60 {
        PathBuf::from("/tmp")
    } else {
        tmp
    };
    tempfile::Builder::new().prefix("shoal-").tempdir_in(base)
}
