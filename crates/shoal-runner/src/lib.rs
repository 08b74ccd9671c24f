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
pub mod queue;
pub mod record;
pub mod replay;
pub mod reporter;
pub mod results;
pub mod shard;
pub mod signals;
pub mod usage;
pub mod work;

use std::{
    fs,
    io::Write,
    os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt},
    path::{Path, PathBuf},
};

use shoal_protocol::FrameError;

pub use options::RunOptions;

/// pytest's exit codes, which shoal keeps.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExitCode {
    Ok,
    TestsFailed,
    Interrupted,
    InternalError,
    UsageError,
    NoTestsCollected,
    /// Any other status pytest ended with (`pytest.exit(returncode=N)`, a conftest's
    /// `sys.exit(N)`): serial pytest exits with it, so shoal passes it on unchanged.
    Other(u8),
}

impl ExitCode {
    /// pytest's own exit status (or the code `pytest.exit(returncode=...)` asked for), as a
    /// process exits with it: its low eight bits.
    pub fn from_pytest(code: i32) -> Self {
        match code as u8 {
            0 => Self::Ok,
            1 => Self::TestsFailed,
            2 => Self::Interrupted,
            3 => Self::InternalError,
            4 => Self::UsageError,
            5 => Self::NoTestsCollected,
            other => Self::Other(other),
        }
    }

    /// The process exit status.
    pub fn code(self) -> u8 {
        match self {
            Self::Ok => 0,
            Self::TestsFailed => 1,
            Self::Interrupted => 2,
            Self::InternalError => 3,
            Self::UsageError => 4,
            Self::NoTestsCollected => 5,
            Self::Other(code) => code,
        }
    }
}

impl From<ExitCode> for std::process::ExitCode {
    fn from(code: ExitCode) -> Self {
        Self::from(code.code())
    }
}

/// A run could not be carried out. Messages read after "failed to".
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error(transparent)]
    Python(#[from] python::PythonError),
    /// `found` says where the interpreter was found and what was passed over before it.
    #[error("import pytest with {python} ({found}): install pytest there, or choose another interpreter with --python")]
    PytestMissing { python: PathBuf, found: String },
    #[error(
        "run pytest with {python}: shoal needs Python {}.{} or newer and pytest {}.{} or newer",
        python::MIN_PYTHON.0,
        python::MIN_PYTHON.1,
        python::MIN_PYTEST.0,
        python::MIN_PYTEST.1
    )]
    VersionsUnsupported { python: PathBuf },
    #[error("start {python}{}", spawn_hint(source))]
    Spawn {
        python: PathBuf,
        source: std::io::Error,
    },
    #[error("prepare the run directory")]
    RunDir(#[source] std::io::Error),
    #[error(transparent)]
    Options(#[from] options::OptionsError),
    #[error(transparent)]
    Shard(#[from] shard::ShardError),
    #[error("touch Bazel's TEST_SHARD_STATUS_FILE {path}")]
    ShardStatus {
        path: PathBuf,
        source: std::io::Error,
    },
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
    #[error("collect the tests: the collecting pytest process ended: {status}")]
    CollectorDied { status: String },
    #[error("start shoal's plugin with {python}: it ended ({status}) without speaking shoal's protocol; --python must name a Python 3 interpreter with pytest installed")]
    NotPython { python: PathBuf, status: String },
    /// The bootstrap found a file of the plugin, or its directory, open to other users.
    #[error("load shoal's plugin: Python refused it because the run directory is not private to this user (its reason is above)")]
    PluginUntrusted,
    #[error(transparent)]
    Junit(#[from] reporter::junit::JunitError),
    #[error(transparent)]
    Events(#[from] reporter::events::EventsError),
    #[error("debug with {option}: stdin is not a terminal, and pdb reads its commands from one (run shoal in a terminal, or without {option})")]
    NoTerminal { option: &'static str },
    #[error("start worker '{worker}': it collected different tests than the collector (- only in the collector, + only in the worker):{diff}")]
    CollectionMismatch { worker: String, diff: String },
    #[error(transparent)]
    QueueSpec(#[from] queue::QueueSpecError),
    #[error(transparent)]
    Queue(#[from] queue::QueueError),
    #[error(transparent)]
    Replay(#[from] replay::ReplayError),
}

impl RunError {
    pub fn exit_code(&self) -> ExitCode {
        match self {
            Self::Python(_)
            | Self::PytestMissing { .. }
            | Self::NotPython { .. }
            | Self::NoTerminal { .. }
            | Self::VersionsUnsupported { .. }
            | Self::Options(_)
            | Self::QueueSpec(_)
            | Self::Shard(_) => ExitCode::UsageError,
            // The interpreter itself cannot be executed: the user's choice of it is at fault.
            Self::Spawn { source, .. }
                if matches!(
                    source.kind(),
                    std::io::ErrorKind::PermissionDenied | std::io::ErrorKind::NotFound
                ) =>
            {
                ExitCode::UsageError
            }
            Self::Replay(e) => e.exit_code(),
            _ => ExitCode::InternalError,
        }
    }
}

/// Runs the suite as `options` ask and returns pytest's exit code for it.
pub fn run(options: RunOptions) -> Result<ExitCode, RunError> {
    run_with(options, None)
}

/// Runs a recorded sequence again as `replay` asks (`shoal replay`, `shoal bisect`), with the
/// collection `options` give.
pub fn replay(options: RunOptions, replay: replay::ReplayArgs) -> Result<ExitCode, RunError> {
    run_with(options, Some(replay))
}

fn run_with(options: RunOptions, replay: Option<replay::ReplayArgs>) -> Result<ExitCode, RunError> {
    let shard = options
        .shard
        .map(|spec| spec.choose(|name| std::env::var(name).ok()))
        .transpose()?;
    if let Some(path) = shard.as_ref().and_then(|s| s.status_file.as_ref()) {
        // Bazel asks a test runner that shards to say so by touching this file.
        fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .map_err(|source| RunError::ShardStatus {
                path: path.clone(),
                source,
            })?;
    }
    let queue = options.queue.spec(|name| std::env::var(name).ok())?;
    if queue.is_some() && shard.is_some() {
        return Err(queue::QueueSpecError::Shard.into());
    }
    if queue.is_some() && options.triage() {
        return Err(queue::QueueSpecError::Triage.into());
    }
    let interpreter = python::Interpreter::discover(options.python.as_deref())?;
    let dir = run_dir().map_err(RunError::RunDir)?;
    let plugin = write_plugin(dir.path()).map_err(RunError::RunDir)?;
    let socket = dir.path().join("s");
    let (sender, events) = crossbeam_channel::unbounded();
    connection::listen(&socket, sender.clone()).map_err(RunError::RunDir)?;
    fs::set_permissions(&socket, fs::Permissions::from_mode(PRIVATE_FILE))
        .map_err(RunError::RunDir)?;
    signals::forward(sender.clone()).map_err(RunError::RunDir)?;
    let launch = dispatcher::Launch {
        interpreter,
        plugin,
        socket,
        options,
        shard,
        queue,
        replay,
    };
    dispatcher::Dispatcher::new(launch, events, sender).run()
}

/// What starting an existing interpreter failed with does not say: exec(2) reports a missing
/// `#!` interpreter (or ELF loader) as the file itself being missing.
fn spawn_hint(source: &std::io::Error) -> &'static str {
    match source.kind() {
        std::io::ErrorKind::NotFound => {
            " (the interpreter its #! line names, or its loader, is missing)"
        }
        _ => "",
    }
}

/// An error and its causes on one line (`a: b: c`), to print after "failed to".
pub fn error_chain(err: &dyn std::error::Error) -> String {
    let mut text = err.to_string();
    let mut source = err.source();
    while let Some(cause) = source {
        // Some errors print their cause themselves (the Redis client's do): once is enough.
        let cause_text = cause.to_string();
        if !text.ends_with(&cause_text) {
            text.push_str(&format!(": {cause_text}"));
        }
        source = cause.source();
    }
    text
}

/// The modes of the run directory and of every directory and file in it: the invoking user's
/// alone. They are set explicitly after creation, never left to the umask: the plugin's files
/// run as the user, so another user who could write one could run code as them.
const PRIVATE_DIR: u32 = 0o700;
const PRIVATE_FILE: u32 = 0o600;

/// A private directory for the plugin package, the socket and the workers' stack and state files
/// (the plugin's bootstrap refuses to load from a directory that is not). Unix socket paths
/// are limited to about 100 bytes, so a long `$TMPDIR` falls back to `/tmp`.
fn run_dir() -> std::io::Result<tempfile::TempDir> {
    let tmp = std::env::temp_dir();
    let base = if tmp.as_os_str().len() > 60 {
        PathBuf::from("/tmp")
    } else {
        tmp
    };
    let dir = tempfile::Builder::new()
        .prefix("shoal-")
        .permissions(fs::Permissions::from_mode(PRIVATE_DIR))
        .tempdir_in(base)?;
    fs::set_permissions(dir.path(), fs::Permissions::from_mode(PRIVATE_DIR))?;
    Ok(dir)
}

/// Writes the plugin package into the run directory `dir`, its directories and files private
/// like the rest of the run directory; returns the package directory, which the bootstrap
/// loads (and checks) file by file.
fn write_plugin(dir: &Path) -> std::io::Result<PathBuf> {
    for (path, source) in python::PLUGIN_FILES {
        let path = dir.join(path);
        let mut parents: Vec<&Path> = path
            .ancestors()
            .skip(1)
            .take_while(|parent| *parent != dir)
            .collect();
        parents.reverse();
        for parent in parents {
            if !parent.exists() {
                create_private_dir(parent)?;
            }
        }
        write_private(&path, source.as_bytes())?;
    }
    Ok(dir.join(python::PLUGIN_PACKAGE))
}

/// Makes a new directory that only the user can enter, read and write.
fn create_private_dir(path: &Path) -> std::io::Result<()> {
    fs::DirBuilder::new().mode(PRIVATE_DIR).create(path)?;
    fs::set_permissions(path, fs::Permissions::from_mode(PRIVATE_DIR))
}

/// Writes a new file that only the user can read and write.
fn write_private(path: &Path, contents: &[u8]) -> std::io::Result<()> {
    let mut file = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(PRIVATE_FILE)
        .open(path)?;
    file.set_permissions(fs::Permissions::from_mode(PRIVATE_FILE))?;
    file.write_all(contents)
}

#[cfg(test)]
mod tests {
    use super::ExitCode;

    #[test]
    fn every_pytest_exit_status_is_passed_on_unchanged() {
        for status in 0..=255 {
            assert_eq!(i32::from(ExitCode::from_pytest(status).code()), status);
        }
        assert_eq!(ExitCode::from_pytest(1), ExitCode::TestsFailed);
        assert_eq!(ExitCode::from_pytest(7), ExitCode::Other(7));
    }
}
