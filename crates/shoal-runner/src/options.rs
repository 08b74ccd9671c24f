//! What a run was asked to do, from three layers: the command line, `[tool.shoal]` in
//! `pyproject.toml`, and the xdist flags pytest itself parsed out of `addopts`.
//!
//! The first two are known before Python starts; the third only once the collector has read the
//! project's ini files, so [`RunOptions::resolve`] runs after collection.

use std::{
    fmt,
    path::{Path, PathBuf},
    time::Duration,
};

use clap::ValueEnum;

use serde::Deserialize;
use shoal_protocol::PytestSettings;

use crate::{
    parallelism::{WorkerCount, WorkerCountError},
    queue::{DEFAULT_LEASE, DEFAULT_REQUEUE_TOLERANCE},
};

/// How tests are spread over workers (`--dist`), with pytest-xdist's names.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Dist {
    /// Dynamic: idle workers pull more tests.
    #[value(name = "load")]
    Load,
    /// A module (a class, for methods) stays on one worker.
    #[value(name = "loadscope")]
    LoadScope,
    /// A file stays on one worker.
    #[value(name = "loadfile")]
    LoadFile,
    /// Tests sharing an `xdist_group` name stay on one worker; others as `Load`.
    #[value(name = "loadgroup")]
    LoadGroup,
    /// Even split up front; an idle worker steals half of a busy worker's queue.
    #[value(name = "worksteal")]
    WorkSteal,
    /// Every test on every worker.
    #[value(name = "each")]
    Each,
    /// One worker, collection order.
    #[value(name = "no")]
    No,
}

impl Dist {
    /// The name of pytest-xdist's scheduler class for this mode, which xdist prints with `-v`
    /// (`scheduling tests via LoadScheduling`); `None` for `no`, which xdist does not distribute.
    pub fn xdist_scheduler(self) -> Option<&'static str> {
        match self {
            Dist::Load => Some("LoadScheduling"),
            Dist::LoadScope => Some("LoadScopeScheduling"),
            Dist::LoadFile => Some("LoadFileScheduling"),
            Dist::LoadGroup => Some("LoadGroupScheduling"),
            Dist::WorkSteal => Some("WorkStealingScheduling"),
            Dist::Each => Some("EachScheduling"),
            Dist::No => None,
        }
    }
}

/// How worker processes come to be.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, ValueEnum)]
pub enum StartMethod {
    /// Forked from the collector after collection (falls back to spawn where unsafe).
    #[default]
    Fork,
    /// Started fresh; each worker collects for itself.
    Spawn,
}

/// When failure details are printed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, ValueEnum)]
pub enum FailureOutput {
    /// As each failing test ends.
    Immediate,
    /// In the FAILURES section at the end, as pytest does.
    #[default]
    End,
}

/// A value read from pytest's addopts or `[tool.shoal]` names none of an option's choices.
#[derive(Debug, thiserror::Error)]
#[error("parse --{option} value {value:?}: expected one of {expected}")]
pub struct ChoiceError {
    option: &'static str,
    value: String,
    expected: String,
}

/// `value` as one of `T`'s choices, named as on the command line (`--{option}`), where it
/// comes from elsewhere than the command line, which clap parses.
pub fn choice<T: ValueEnum>(option: &'static str, value: &str) -> Result<T, ChoiceError> {
    T::from_str(value, false).map_err(|_| ChoiceError {
        option,
        value: value.to_owned(),
        expected: T::value_variants()
            .iter()
            .filter_map(|v| v.to_possible_value())
            .map(|v| v.get_name().to_owned())
            .collect::<Vec<_>>()
            .join(", "),
    })
}

/// A size that names no number of bytes.
#[derive(Debug, thiserror::Error)]
#[error(
    "parse size {text:?}: expected a number of bytes, or a number with K, M, G or T \
     (powers of 1024, as are KB and KiB), such as 500M or 1.5GiB"
)]
pub struct SizeError {
    text: String,
}

/// A size as people write one (`500M`, `2G`, `1.5GiB`, `1048576`), in bytes. Every unit is a
/// power of 1024, whether written `M`, `MB` or `MiB`, as `ulimit` and most tools that limit
/// memory read them: nobody means 10^6 when they cap a process at `500M`.
pub fn parse_size(text: &str) -> Result<u64, SizeError> {
    let error = || SizeError {
        text: text.to_owned(),
    };
    let text = text.trim();
    let digits = text
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(digits);
    let number: f64 = number.parse().map_err(|_| error())?;
    let power = match unit.trim_start().to_ascii_lowercase().as_str() {
        "" | "b" => 0,
        "k" | "kb" | "kib" => 1,
        "m" | "mb" | "mib" => 2,
        "g" | "gb" | "gib" => 3,
        "t" | "tb" | "tib" => 4,
        _ => return Err(error()),
    };
    let bytes = number * 1024f64.powi(power);
    // `as` saturates: the bound keeps a size too large to count from passing as u64::MAX.
    (bytes < u64::MAX as f64)
        .then_some(bytes as u64)
        .ok_or_else(error)
}

impl fmt::Display for Dist {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let value = self.to_possible_value().expect("every mode has a name");
        f.write_str(value.get_name())
    }
}

/// `--shuffle[=SEED]`: whether units go out in a seeded random order, and with which seed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Shuffle {
    /// `shuffle = false` in `[tool.shoal]`: the usual order (history, else collection).
    Off,
    /// `--shuffle`: pytest-randomly's seed where that plugin is active, else a new one.
    AnySeed,
    /// `--shuffle=SEED`.
    Seed(u64),
}

impl fmt::Display for Shuffle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Off => f.write_str("off"),
            Self::AnySeed => f.write_str("on (new seed)"),
            Self::Seed(seed) => write!(f, "seed {seed}"),
        }
    }
}

/// shoal's own options, as far as the command line and `[tool.shoal]` set them.
#[derive(Debug, Clone, Default)]
pub struct RunOptions {
    pub python: Option<PathBuf>,
    pub workers: Option<WorkerCount>,
    pub dist: Option<Dist>,
    pub maxprocesses: Option<usize>,
    pub start: Option<StartMethod>,
    /// `--failure-output`; without it, `immediate` when pytest-instafail's `--instafail` is
    /// given (shoal's terminal does that plugin's job), else `end`.
    pub failure_output: Option<FailureOutput>,
    /// `--report-json`: a file for JSON events, or `-` for stdout.
    pub report_json: Option<String>,
    /// `--timeline`: a file for the run as a Chrome trace (command line only: it is per run).
    pub timeline: Option<PathBuf>,
    /// `--timeout`: seconds a test may run before its worker is stopped.
    pub timeout: Option<f64>,
    /// `--run-timeout`: seconds the whole run may take.
    pub run_timeout: Option<f64>,
    /// `--retries`: how often a failing test runs again; see [`RunOptions::retries`].
    pub retries: Option<usize>,
    /// `--max-worker-restart`: how many crashed workers may be replaced in all.
    pub max_worker_restart: Option<usize>,
    /// `--max-worker-tests`: a worker process is replaced after this many tests; 0 turns a
    /// `[tool.shoal]` limit off.
    pub max_worker_tests: Option<usize>,
    /// `--max-worker-rss`, in bytes: a worker process is replaced after a test that leaves
    /// its resident memory above this; 0 turns a `[tool.shoal]` limit off.
    pub max_worker_rss: Option<u64>,
    /// `--detect-leaks`: report the state each test leaves behind (environment, cwd, threads,
    /// child processes, patched project modules, file descriptors).
    pub detect_leaks: Option<bool>,
    /// `--shuffle[=SEED]`: hand the units out in a seeded random order.
    pub shuffle: Option<Shuffle>,
    /// `--shard K/N` or `auto`: run only this CI machine's share of the suite.
    pub shard: Option<crate::shard::ShardSpec>,
    /// `--queue` and its settings: take tests from a queue shared by every CI node.
    pub queue: crate::queue::QueueArgs,
    /// `--triage` (or `triage = true`): after the run, classify each failed test as flaky,
    /// polluted or failing alone by running it again (`docs/debugging.md`).
    pub triage: Option<bool>,
    /// `pytest-n` of `[tool.shoal]`: whether `pytest -n` hands the run to shoal (the wheel's
    /// pytest plugin reads it; the controller only checks it and shows it). `None`: only where
    /// pytest-xdist is not installed.
    pub pytest_n: Option<bool>,
    /// Everything that is not shoal's, handed to pytest unchanged.
    pub pytest_args: Vec<String>,
    /// shoal's whole command line, for `config.workerinput["mainargv"]`.
    pub mainargv: Vec<String>,
    /// `--show-config`: print the options and where each came from instead of running.
    pub show_config: bool,
    /// The `[tool.shoal]` that filled what the command line left open, if one did.
    pub project: Option<ProjectLayer>,
}

/// Which options a `[tool.shoal]` table set: kept so that `--show-config` can say where each
/// value came from without a second copy of the layering.
#[derive(Debug, Clone)]
pub struct ProjectLayer {
    /// The `pyproject.toml` the table is in.
    pub path: PathBuf,
    /// The keys it set that the command line had not.
    pub keys: Vec<&'static str>,
}

/// Where an option's value came from, highest precedence first.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Origin {
    CommandLine,
    /// `[tool.shoal]` in `pyproject.toml`.
    Project,
    /// The xdist flags pytest parsed out of its `addopts` (or `PYTEST_ADDOPTS`).
    Addopts,
    Default,
    /// The default as far as shoal knows before Python starts: pytest's addopts, which only
    /// the collector reads, may still set it.
    DefaultUnlessAddopts,
}

/// A value and the layer it came from.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Sourced<T> {
    pub value: T,
    pub origin: Origin,
}

/// The options that pytest's addopts may set too, once pytest's own settings are known.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Resolved {
    pub workers: Sourced<WorkerCount>,
    pub dist: Sourced<Dist>,
    pub maxprocesses: Sourced<Option<usize>>,
    /// `--max-worker-restart`; `None`: xdist's default, four per worker.
    pub max_worker_restart: Sourced<Option<usize>>,
    /// `--failure-output`, else `immediate` under pytest-instafail's `--instafail`.
    pub failure_output: Sourced<FailureOutput>,
}

/// A setting read from pytest's addopts or from `[tool.shoal]` is invalid.
#[derive(Debug, thiserror::Error)]
pub enum OptionsError {
    #[error("read {path}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("parse [tool.shoal] in {path}: {message}")]
    Project { path: PathBuf, message: String },
    #[error(transparent)]
    WorkerCount(#[from] WorkerCountError),
    #[error(transparent)]
    Choice(#[from] ChoiceError),
    #[error("read --max-worker-restart from pytest's options: {value:?} is not a whole number")]
    MaxWorkerRestart { value: String },
    #[error(
        "choose a shuffle seed: --shuffle={given} and pytest-randomly's seed {randomly} differ; \
         give one of them (--shuffle alone takes pytest-randomly's)"
    )]
    ShuffleSeed { given: u64, randomly: u64 },
}

impl RunOptions {
    /// Fills what the command line left open from `[tool.shoal]` of the nearest
    /// `pyproject.toml` at or above `dir`, and remembers which keys did. Every key is checked,
    /// also those the command line overrides: a mistake in the file is one on every run.
    pub fn with_project_config(mut self, dir: &Path) -> Result<Self, OptionsError> {
        let Some((path, table)) = project_table(dir)? else {
            return Ok(self);
        };
        let mut keys = Vec::new();
        for (key, value) in table {
            let invalid = |message: String| OptionsError::Project {
                path: path.clone(),
                message,
            };
            let Some(&key) = PROJECT_KEYS.iter().find(|k| **k == key) else {
                return Err(invalid(format!(
                    "unknown key `{key}`, expected one of {}",
                    PROJECT_KEYS.join(", ")
                )));
            };
            let base = path.parent().unwrap_or(dir);
            if self
                .set_from_project(key, value, base)
                .map_err(|message| invalid(format!("{key}: {message}")))?
            {
                keys.push(key);
            }
        }
        self.project = Some(ProjectLayer { path, keys });
        Ok(self)
    }

    /// Sets the option `key` of `[tool.shoal]` to `value` unless the command line set it;
    /// whether it did. Relative paths are taken from `base`, the file's directory.
    fn set_from_project(
        &mut self,
        key: &'static str,
        value: toml::Value,
        base: &Path,
    ) -> Result<bool, String> {
        /// Fills `slot` with `value` if it is empty, once `value` has been checked.
        fn fill<T>(slot: &mut Option<T>, value: Result<T, String>) -> Result<bool, String> {
            let value = value?;
            let empty = slot.is_none();
            if empty {
                *slot = Some(value);
            }
            Ok(empty)
        }
        match key {
            "numprocesses" => fill(
                &mut self.workers,
                match value {
                    toml::Value::Integer(n) => n.to_string(),
                    other => text(other)?,
                }
                .parse()
                .map_err(|e: WorkerCountError| e.to_string()),
            ),
            "dist" => fill(&mut self.dist, named(key, value)),
            "maxprocesses" => fill(&mut self.maxprocesses, whole(value)),
            "python" => fill(&mut self.python, text(value).map(|p| base.join(p))),
            "start" => fill(&mut self.start, named(key, value)),
            "failure-output" => fill(&mut self.failure_output, named(key, value)),
            "timeout" => fill(&mut self.timeout, number(value).and_then(seconds)),
            "run-timeout" => fill(&mut self.run_timeout, number(value).and_then(seconds)),
            "retries" => fill(&mut self.retries, whole(value)),
            "max-worker-restart" => fill(&mut self.max_worker_restart, whole(value)),
            "max-worker-tests" => fill(&mut self.max_worker_tests, whole(value)),
            "detect-leaks" => fill(&mut self.detect_leaks, boolean(value)),
            "shuffle" => fill(
                &mut self.shuffle,
                match value {
                    toml::Value::Boolean(true) => Ok(Shuffle::AnySeed),
                    toml::Value::Boolean(false) => Ok(Shuffle::Off),
                    toml::Value::Integer(seed) => u64::try_from(seed)
                        .map(Shuffle::Seed)
                        .map_err(|_| format!("{seed} is below 0")),
                    other => Err(format!("expected true, false or a seed, not {other}")),
                },
            ),
            "max-worker-rss" => fill(
                &mut self.max_worker_rss,
                match value {
                    toml::Value::String(text) => parse_size(&text).map_err(|e| e.to_string()),
                    toml::Value::Integer(bytes) => {
                        u64::try_from(bytes).map_err(|_| format!("{bytes} is below 0 bytes"))
                    }
                    other => Err(format!(
                        "expected a size such as \"500M\" or a number of bytes, not {other}"
                    )),
                },
            ),
            "lease-timeout" => fill(
                &mut self.queue.lease_timeout,
                number(value)
                    .and_then(positive_seconds)
                    .map(Duration::from_secs_f64),
            ),
            "requeue-tolerance" => fill(
                &mut self.queue.requeue_tolerance,
                number(value).and_then(ratio),
            ),
            "triage" => fill(&mut self.triage, boolean(value)),
            "pytest-n" => fill(&mut self.pytest_n, boolean(value)),
            _ => unreachable!("every key of PROJECT_KEYS is handled"),
        }
    }

    /// Where an option that is set got its value: `[tool.shoal]` if it filled it, else the
    /// command line.
    fn origin_of(&self, key: &str) -> Origin {
        match &self.project {
            Some(project) if project.keys.contains(&key) => Origin::Project,
            _ => Origin::CommandLine,
        }
    }

    /// Whether the run's failed tests are triaged once it is over.
    pub fn triage(&self) -> bool {
        self.triage.unwrap_or(false)
    }

    /// How often a failing test runs again.
    pub fn retries(&self) -> usize {
        self.retries.unwrap_or(0)
    }

    /// Whether the workers look for state tests leave behind.
    pub fn detect_leaks(&self) -> bool {
        self.detect_leaks.unwrap_or(false)
    }

    /// The seed the units are shuffled with, if they are: `--shuffle=SEED`, else
    /// pytest-randomly's seed (`randomly`, where it is active), else `new()`. An explicit seed
    /// must agree with pytest-randomly's: the two orders come from one seed, or the run could
    /// not be reproduced from the one that is printed. (With `--shuffle=SEED` the collector
    /// hands that seed to pytest-randomly, so they differ only where `--randomly-seed` was
    /// given too.)
    pub fn shuffle_seed(
        &self,
        randomly: Option<u64>,
        new: impl FnOnce() -> u64,
    ) -> Result<Option<u64>, OptionsError> {
        match (self.shuffle, randomly) {
            (None | Some(Shuffle::Off), _) => Ok(None),
            (Some(Shuffle::Seed(given)), Some(randomly)) if given != randomly => {
                Err(OptionsError::ShuffleSeed { given, randomly })
            }
            (Some(Shuffle::Seed(given)), _) => Ok(Some(given)),
            (Some(Shuffle::AnySeed), Some(randomly)) => Ok(Some(randomly)),
            (Some(Shuffle::AnySeed), None) => Ok(Some(new())),
        }
    }

    /// The final options: ours first (the command line, then `[tool.shoal]`), then the xdist
    /// flags from pytest's addopts, then the defaults (`-n auto --dist load`: someone who runs
    /// shoal wants parallelism). `pytest` is `None` before the collector has read pytest's
    /// configuration: then nothing can be invalid, and a default may still give way to addopts.
    pub fn resolve(&self, pytest: Option<&PytestSettings>) -> Result<Resolved, OptionsError> {
        Ok(Resolved {
            workers: self.layer(
                "numprocesses",
                self.workers,
                pytest,
                |p| Ok(p.numprocesses.as_deref().map(str::parse).transpose()?),
                WorkerCount::Auto,
            )?,
            dist: self.layer(
                "dist",
                self.dist,
                pytest,
                |p| Ok(p.dist.as_deref().map(|d| choice("dist", d)).transpose()?),
                Dist::Load,
            )?,
            maxprocesses: self.layer(
                "maxprocesses",
                self.maxprocesses.map(Some),
                pytest,
                |p| Ok(p.maxprocesses.map(Some)),
                None,
            )?,
            max_worker_restart: self.layer(
                "max-worker-restart",
                self.max_worker_restart.map(Some),
                pytest,
                |p| {
                    p.maxworkerrestart
                        .as_deref()
                        .map(|text| {
                            text.trim().parse().map(Some).map_err(|_| {
                                OptionsError::MaxWorkerRestart {
                                    value: text.to_owned(),
                                }
                            })
                        })
                        .transpose()
                },
                None,
            )?,
            failure_output: self.layer(
                "failure-output",
                self.failure_output,
                pytest,
                |p| Ok(p.instafail.then_some(FailureOutput::Immediate)),
                FailureOutput::End,
            )?,
        })
    }

    /// The first layer that sets one option: `ours`, then what `addopts` reads from pytest's
    /// settings, then `default`.
    fn layer<T>(
        &self,
        key: &'static str,
        ours: Option<T>,
        pytest: Option<&PytestSettings>,
        addopts: impl FnOnce(&PytestSettings) -> Result<Option<T>, OptionsError>,
        default: T,
    ) -> Result<Sourced<T>, OptionsError> {
        if let Some(value) = ours {
            return Ok(Sourced {
                value,
                origin: self.origin_of(key),
            });
        }
        let Some(pytest) = pytest else {
            return Ok(Sourced {
                value: default,
                origin: Origin::DefaultUnlessAddopts,
            });
        };
        Ok(match addopts(pytest)? {
            Some(value) => Sourced {
                value,
                origin: Origin::Addopts,
            },
            None => Sourced {
                value: default,
                origin: Origin::Default,
            },
        })
    }

    /// Every option with its value and where it came from, as far as it is known before
    /// Python starts (pytest's addopts are not); `python` describes the interpreter the run
    /// would use.
    pub fn settings(&self, python: String) -> Vec<(&'static str, Sourced<String>)> {
        let resolved = self
            .resolve(None)
            .expect("without pytest's settings nothing is invalid");
        let own = |key, value: Option<String>, default: String| match value {
            Some(value) => Sourced {
                value,
                origin: self.origin_of(key),
            },
            None => Sourced {
                value: default,
                origin: Origin::Default,
            },
        };
        let count = |n: Option<usize>| n.map(|n| n.to_string());
        let seconds = |s: Option<f64>| s.map(|s| format!("{s}s"));
        let none = || "none".to_owned();
        vec![
            ("numprocesses", resolved.workers.map(|w| w.to_string())),
            ("dist", resolved.dist.map(|d| d.to_string())),
            (
                "maxprocesses",
                resolved.maxprocesses.map(|n| count(n).unwrap_or_else(none)),
            ),
            (
                "python",
                own(
                    "python",
                    self.python.as_ref().map(|_| python.clone()),
                    python,
                ),
            ),
            (
                "start",
                own(
                    "start",
                    self.start.map(|s| value_name(&s)),
                    value_name(&StartMethod::default()),
                ),
            ),
            (
                "failure-output",
                resolved.failure_output.map(|f| value_name(&f)),
            ),
            ("timeout", own("timeout", seconds(self.timeout), none())),
            (
                "run-timeout",
                own("run-timeout", seconds(self.run_timeout), none()),
            ),
            (
                "retries",
                own("retries", count(self.retries), self.retries().to_string()),
            ),
            (
                "max-worker-restart",
                resolved
                    .max_worker_restart
                    .map(|n| count(n).unwrap_or_else(|| "4 per worker".to_owned())),
            ),
            (
                "max-worker-tests",
                own("max-worker-tests", count(self.max_worker_tests), none()),
            ),
            (
                "max-worker-rss",
                own(
                    "max-worker-rss",
                    self.max_worker_rss.map(|n| format!("{n} bytes")),
                    none(),
                ),
            ),
            (
                "detect-leaks",
                own(
                    "detect-leaks",
                    self.detect_leaks.map(|on| on.to_string()),
                    false.to_string(),
                ),
            ),
            (
                "shuffle",
                own(
                    "shuffle",
                    self.shuffle.map(|s| s.to_string()),
                    Shuffle::Off.to_string(),
                ),
            ),
            (
                "lease-timeout",
                own(
                    "lease-timeout",
                    seconds(self.queue.lease_timeout.map(|d| d.as_secs_f64())),
                    format!("{}s", DEFAULT_LEASE.as_secs_f64()),
                ),
            ),
            (
                "requeue-tolerance",
                own(
                    "requeue-tolerance",
                    self.queue.requeue_tolerance.map(|r| r.to_string()),
                    DEFAULT_REQUEUE_TOLERANCE.to_string(),
                ),
            ),
            (
                "triage",
                own(
                    "triage",
                    self.triage.map(|choice| choice.to_string()),
                    "false".to_owned(),
                ),
            ),
            (
                "pytest-n",
                own(
                    "pytest-n",
                    self.pytest_n.map(|choice| choice.to_string()),
                    "where pytest-xdist is not installed".to_owned(),
                ),
            ),
        ]
    }

    /// `--show-config`: [`RunOptions::settings`] as a table, a line per option.
    pub fn show_config(&self, python: String) -> String {
        let project = self.project.as_ref().map(|p| p.path.display());
        let mut text = String::from(
            "shoal's options (command line > [tool.shoal] > pytest addopts > default):\n",
        );
        for (key, setting) in self.settings(python) {
            let origin = match (setting.origin, &project) {
                (Origin::CommandLine, _) => "command line".to_owned(),
                (Origin::Project, Some(path)) => format!("[tool.shoal] in {path}"),
                (Origin::Project, None) => unreachable!("only a project layer sets options"),
                (Origin::Addopts, _) => "pytest addopts".to_owned(),
                (Origin::Default, _) => "default".to_owned(),
                (Origin::DefaultUnlessAddopts, _) => {
                    "default, unless pytest addopts set it (read when the run starts)".to_owned()
                }
            };
            text.push_str(&format!("  {key:<20} {:<12} {origin}\n", setting.value));
        }
        text
    }
}

impl<T> Sourced<T> {
    fn map<U>(self, f: impl FnOnce(T) -> U) -> Sourced<U> {
        Sourced {
            value: f(self.value),
            origin: self.origin,
        }
    }
}

/// An option's value as it is written on the command line.
fn value_name<T: ValueEnum>(value: &T) -> String {
    let value = value.to_possible_value().expect("every value has a name");
    value.get_name().to_owned()
}

/// A `[tool.shoal]` string.
fn text(value: toml::Value) -> Result<String, String> {
    match value {
        toml::Value::String(text) => Ok(text),
        other => Err(format!("expected a string, not {other}")),
    }
}

/// A `[tool.shoal]` string that names one of `T`'s choices.
fn named<T: ValueEnum>(key: &'static str, value: toml::Value) -> Result<T, String> {
    choice(key, &text(value)?).map_err(|e| e.to_string())
}

/// A `[tool.shoal]` whole number, 0 or more.
fn whole(value: toml::Value) -> Result<usize, String> {
    match value {
        toml::Value::Integer(n) => usize::try_from(n).map_err(|_| format!("{n} is below 0")),
        other => Err(format!("expected a whole number, not {other}")),
    }
}

/// A `[tool.shoal]` `true` or `false`.
fn boolean(value: toml::Value) -> Result<bool, String> {
    match value {
        toml::Value::Boolean(choice) => Ok(choice),
        other => Err(format!("expected true or false, not {other}")),
    }
}

/// A `[tool.shoal]` number, whole or not.
fn number(value: toml::Value) -> Result<f64, String> {
    match value {
        toml::Value::Integer(n) => Ok(n as f64),
        toml::Value::Float(n) => Ok(n),
        other => Err(format!("expected a number, not {other}")),
    }
}

/// A number of seconds the clock can count to.
pub fn seconds(value: f64) -> Result<f64, String> {
    let max = crate::dispatcher::MAX_SECONDS;
    Some(value)
        .filter(|s| (0.0..=max).contains(s))
        .ok_or_else(|| format!("expected a number of seconds from 0 to {max:e}"))
}

/// More than no time at all.
pub fn positive_seconds(value: f64) -> Result<f64, String> {
    Some(seconds(value)?)
        .filter(|s| *s > 0.0)
        .ok_or_else(|| "expected a number of seconds above 0".to_owned())
}

/// A share, from 0 to 1.
pub fn ratio(value: f64) -> Result<f64, String> {
    Some(value)
        .filter(|r| (0.0..=1.0).contains(r))
        .ok_or_else(|| "expected a number from 0 to 1".to_owned())
}

/// The keys `[tool.shoal]` may set: the long option names of what is the same on every run
/// of a project (not `--queue` or `--build`, which belong to one CI run), in the order
/// `--show-config` lists them.
const PROJECT_KEYS: [&str; 18] = [
    "numprocesses",
    "dist",
    "maxprocesses",
    "python",
    "start",
    "failure-output",
    "timeout",
    "run-timeout",
    "retries",
    "max-worker-restart",
    "max-worker-tests",
    "max-worker-rss",
    "detect-leaks",
    "shuffle",
    "lease-timeout",
    "requeue-tolerance",
    "triage",
    "pytest-n",
];

/// The files that make a directory a project root for pytest: its ini files.
const PROJECT_FILES: [&str; 5] = [
    "pytest.ini",
    ".pytest.ini",
    "pyproject.toml",
    "tox.ini",
    "setup.cfg",
];

/// The project `dir` lies in: the nearest directory at or above it that holds one of pytest's
/// ini files, else `dir` itself (pytest would then take its rootdir from the arguments, which
/// shoal does not read before Python starts).
pub fn project_root(dir: &Path) -> &Path {
    nearest_holding(dir, &PROJECT_FILES).unwrap_or(dir)
}

/// The nearest directory at or above `dir` that holds a file named one of `names`.
fn nearest_holding<'d>(dir: &'d Path, names: &[&str]) -> Option<&'d Path> {
    dir.ancestors()
        .find(|d| names.iter().any(|name| d.join(name).is_file()))
}

#[derive(Deserialize)]
struct PyProject {
    tool: Option<Tools>,
}

#[derive(Deserialize)]
struct Tools {
    shoal: Option<toml::Table>,
}

/// The nearest `pyproject.toml` at or above `dir` and its `[tool.shoal]` table, if it has one.
fn project_table(dir: &Path) -> Result<Option<(PathBuf, toml::Table)>, OptionsError> {
    let Some(path) = nearest_holding(dir, &["pyproject.toml"]).map(|d| d.join("pyproject.toml"))
    else {
        return Ok(None);
    };
    let text = std::fs::read_to_string(&path).map_err(|source| OptionsError::Read {
        path: path.clone(),
        source,
    })?;
    let project = |message: String| OptionsError::Project {
        path: path.clone(),
        message,
    };
    let doc: PyProject = toml::from_str(&text).map_err(|e| project(e.message().to_owned()))?;
    Ok(doc.tool.and_then(|t| t.shoal).map(|table| (path, table)))
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;

    fn settings(numprocesses: Option<&str>, dist: Option<&str>) -> PytestSettings {
        PytestSettings {
            numprocesses: numprocesses.map(str::to_owned),
            dist: dist.map(str::to_owned),
            maxprocesses: None,
            verbose: 0,
            reportchars: "fE".into(),
            maxfail: 0,
            tbstyle: "auto".into(),
            color: false,
            width: 80,
            full_summary: false,
            deselected: 0,
            durations: None,
            durations_min: None,
            rootdir: None,
            timeout: None,
            maxworkerrestart: None,
            cache_dir: None,
            junit: None,
            usepdb: false,
            trace: false,
            instafail: false,
            terminal: true,
            auto_num_workers: None,
            loadscope_reorder: true,
            python_version: None,
            pytest_version: None,
            testrunuid: None,
            randomly_seed: None,
        }
    }

    #[test]
    fn command_line_beats_addopts_beats_defaults() {
        let cli = RunOptions {
            workers: Some(WorkerCount::Fixed(3)),
            ..Default::default()
        };
        let r = cli
            .resolve(Some(&settings(Some("auto"), Some("loadfile"))))
            .unwrap();
        assert_eq!(
            (r.workers, r.dist),
            (
                Sourced {
                    value: WorkerCount::Fixed(3),
                    origin: Origin::CommandLine
                },
                Sourced {
                    value: Dist::LoadFile,
                    origin: Origin::Addopts
                }
            )
        );
        let r = RunOptions::default()
            .resolve(Some(&settings(None, None)))
            .unwrap();
        assert_eq!(
            (r.workers.value, r.dist.value),
            (WorkerCount::Auto, Dist::Load)
        );
        assert_eq!(r.dist.origin, Origin::Default);
        // Before the collector has read pytest's configuration, a default is provisional.
        let r = RunOptions::default().resolve(None).unwrap();
        assert_eq!(r.dist.origin, Origin::DefaultUnlessAddopts);
    }

    #[test]
    fn a_bad_addopts_value_is_an_error() {
        let err = RunOptions::default()
            .resolve(Some(&settings(None, Some("loadfiles"))))
            .unwrap_err();
        assert!(err.to_string().contains("expected one of load"), "{err}");
    }

    #[test]
    fn project_config_fills_gaps_only() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("pyproject.toml"),
            "[tool.shoal]\nnumprocesses = 3\ndist = \"loadscope\"\n",
        )
        .unwrap();
        let sub = dir.path().join("tests");
        std::fs::create_dir(&sub).unwrap();
        let cli = RunOptions {
            dist: Some(Dist::Each),
            ..Default::default()
        };
        let merged = cli.with_project_config(&sub).unwrap();
        assert_eq!(merged.workers, Some(WorkerCount::Fixed(3)));
        assert_eq!(merged.dist, Some(Dist::Each));
        let r = merged
            .resolve(Some(&settings(Some("5"), Some("loadfile"))))
            .unwrap();
        assert_eq!(
            r.workers.origin,
            Origin::Project,
            "[tool.shoal] beats addopts"
        );
        assert_eq!(r.dist.origin, Origin::CommandLine);
    }

    /// A `pyproject.toml` with `table` as its `[tool.shoal]` in a fresh directory, read.
    fn project(table: &str) -> Result<RunOptions, OptionsError> {
        project_under(RunOptions::default(), table)
    }

    fn project_under(cli: RunOptions, table: &str) -> Result<RunOptions, OptionsError> {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("pyproject.toml"),
            format!("[tool.shoal]\n{table}\n"),
        )
        .unwrap();
        cli.with_project_config(dir.path())
    }

    #[test]
    fn project_config_sets_every_per_project_option() {
        let options = project(
            "timeout = 30\nrun-timeout = 600.5\nretries = 2\nmax-worker-restart = 1\n\
             failure-output = \"immediate\"\nstart = \"spawn\"\nmaxprocesses = 4\n\
             lease-timeout = 60\nrequeue-tolerance = 0.1\npython = \"venv/bin/python\"",
        )
        .unwrap();
        assert_eq!(options.timeout, Some(30.0));
        assert_eq!(options.run_timeout, Some(600.5));
        assert_eq!(options.retries(), 2);
        assert_eq!(options.max_worker_restart, Some(1));
        assert_eq!(options.failure_output, Some(FailureOutput::Immediate));
        assert_eq!(options.start, Some(StartMethod::Spawn));
        assert_eq!(options.maxprocesses, Some(4));
        assert_eq!(options.queue.lease_timeout, Some(Duration::from_secs(60)));
        assert_eq!(options.queue.requeue_tolerance, Some(0.1));
        assert!(options.python.unwrap().ends_with("venv/bin/python"));
    }

    #[test]
    fn bad_project_values_name_their_key() {
        for (table, expected) in [
            (
                "timeout = -1",
                "timeout: expected a number of seconds from 0",
            ),
            (
                "run-timeout = \"long\"",
                "run-timeout: expected a number, not \"long\"",
            ),
            ("retries = \"2\"", "retries: expected a whole number"),
            (
                "max-worker-restart = -1",
                "max-worker-restart: -1 is below 0",
            ),
            (
                "failure-output = \"soon\"",
                "failure-output: parse --failure-output value",
            ),
            (
                "lease-timeout = 0",
                "lease-timeout: expected a number of seconds above 0",
            ),
            (
                "requeue-tolerance = 2",
                "requeue-tolerance: expected a number from 0 to 1",
            ),
            ("numprocesses = \"many\"", "numprocesses: "),
            ("detect-leaks = 1", "detect-leaks: expected true or false"),
            ("shuffle = -3", "shuffle: -3 is below 0"),
            (
                "shuffle = \"yes\"",
                "shuffle: expected true, false or a seed",
            ),
            ("queue = \"redis://x\"", "unknown key `queue`"),
        ] {
            let err = crate::error_chain(&project(table).unwrap_err());
            assert!(
                err.starts_with("parse [tool.shoal] in ") && err.contains(expected),
                "{table}: {err}"
            );
        }
        // A bad value is an error even where the command line overrides it.
        let cli = RunOptions {
            retries: Some(1),
            ..Default::default()
        };
        assert!(project_under(cli, "retries = -1").is_err());
    }

    #[test]
    fn settings_say_where_each_value_came_from() {
        let cli = RunOptions {
            retries: Some(3),
            ..Default::default()
        };
        let options = project_under(cli, "retries = 1\ntimeout = 5\ndist = \"loadfile\"").unwrap();
        let settings: HashMap<_, _> = options
            .settings("/usr/bin/python3".to_owned())
            .into_iter()
            .map(|(key, s)| (key, (s.value, s.origin)))
            .collect();
        let setting = |key: &str| settings[key].clone();
        assert_eq!(setting("retries"), ("3".to_owned(), Origin::CommandLine));
        assert_eq!(setting("timeout"), ("5s".to_owned(), Origin::Project));
        assert_eq!(setting("dist"), ("loadfile".to_owned(), Origin::Project));
        assert_eq!(
            setting("numprocesses"),
            ("auto".to_owned(), Origin::DefaultUnlessAddopts)
        );
        assert_eq!(setting("run-timeout"), ("none".to_owned(), Origin::Default));
        assert_eq!(
            setting("python"),
            ("/usr/bin/python3".to_owned(), Origin::Default)
        );
        assert_eq!(
            settings.len(),
            PROJECT_KEYS.len(),
            "every key [tool.shoal] sets is shown"
        );
    }

    #[test]
    fn detect_leaks_and_shuffle_come_from_the_project_unless_the_command_line_set_them() {
        let options = project_under(
            RunOptions::default(),
            "detect-leaks = true\nshuffle = 12345",
        )
        .unwrap();
        assert!(options.detect_leaks());
        assert_eq!(options.shuffle, Some(Shuffle::Seed(12345)));
        let cli = RunOptions {
            shuffle: Some(Shuffle::Seed(7)),
            ..Default::default()
        };
        let options = project_under(cli, "shuffle = false\ndetect-leaks = false").unwrap();
        assert_eq!(options.shuffle, Some(Shuffle::Seed(7)));
        assert!(!options.detect_leaks());
        let off = project_under(RunOptions::default(), "shuffle = false").unwrap();
        assert_eq!(off.shuffle_seed(Some(9), || 1).unwrap(), None);
        let any = project_under(RunOptions::default(), "shuffle = true").unwrap();
        assert_eq!(any.shuffle, Some(Shuffle::AnySeed));
    }

    #[test]
    fn the_shuffle_seed_agrees_with_pytest_randomly_s() {
        let with = |shuffle| RunOptions {
            shuffle,
            ..Default::default()
        };
        let new = || 42;
        assert_eq!(with(None).shuffle_seed(Some(9), new).unwrap(), None);
        let any = with(Some(Shuffle::AnySeed));
        assert_eq!(any.shuffle_seed(None, new).unwrap(), Some(42));
        assert_eq!(any.shuffle_seed(Some(9), new).unwrap(), Some(9));
        let given = with(Some(Shuffle::Seed(5)));
        assert_eq!(given.shuffle_seed(None, new).unwrap(), Some(5));
        assert_eq!(given.shuffle_seed(Some(5), new).unwrap(), Some(5));
        let err = given.shuffle_seed(Some(9), new).unwrap_err().to_string();
        assert!(
            err.contains("--shuffle=5 and pytest-randomly's seed 9 differ"),
            "{err}"
        );
    }

    #[test]
    fn unknown_project_keys_are_reported() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("pyproject.toml"),
            "[tool.shoal]\nworkers = 3\n",
        )
        .unwrap();
        let err = RunOptions::default()
            .with_project_config(dir.path())
            .unwrap_err();
        assert!(err.to_string().contains("tool.shoal"), "{err}");
    }

    #[test]
    fn sizes_read_as_people_write_them() {
        for (text, bytes) in [
            ("1048576", 1 << 20),
            ("500M", 500 << 20),
            ("500 MB", 500 << 20),
            ("2G", 2 << 30),
            ("1.5GiB", 3 << 29),
            ("64k", 64 << 10),
            ("0", 0),
        ] {
            assert_eq!(parse_size(text).unwrap(), bytes, "{text}");
        }
        for text in ["12Q", "", "M", "-5M", "1.2.3G", "99999999999T"] {
            let err = parse_size(text).unwrap_err().to_string();
            assert!(err.contains("such as 500M"), "{text}: {err}");
        }
    }

    #[test]
    fn project_config_sets_the_recycling_limits() {
        let config = project;
        let options = config("max-worker-tests = 100\nmax-worker-rss = \"1.5G\"").unwrap();
        assert_eq!(options.max_worker_tests, Some(100));
        assert_eq!(options.max_worker_rss, Some(3 << 29));
        let options = config("max-worker-rss = 4096").unwrap();
        assert_eq!(options.max_worker_rss, Some(4096));
        let err = config("max-worker-rss = \"12Q\"").unwrap_err().to_string();
        assert!(
            err.contains("tool.shoal") && err.contains("\"12Q\""),
            "{err}"
        );
    }

    #[test]
    fn project_config_says_who_owns_pytest_n() {
        assert_eq!(project("pytest-n = true").unwrap().pytest_n, Some(true));
        assert_eq!(project("").unwrap().pytest_n, None);
        let err = project("pytest-n = \"yes\"").unwrap_err().to_string();
        assert!(err.contains("pytest-n: expected true or false"), "{err}");
    }

    #[test]
    fn the_project_root_is_the_nearest_directory_with_an_ini_file() {
        let dir = tempfile::tempdir().unwrap();
        let (root, tests) = (dir.path().join("app"), dir.path().join("app/tests/unit"));
        std::fs::create_dir_all(&tests).unwrap();
        assert_eq!(
            project_root(&tests),
            tests,
            "without an ini file, the directory itself"
        );
        std::fs::write(root.join("tox.ini"), "").unwrap();
        assert_eq!(project_root(&tests), root);
        assert_eq!(project_root(&root), root);
    }
}
