//! What a run was asked to do, from three layers: the command line, `[tool.shoal]` in
//! `pyproject.toml`, and the xdist flags pytest itself parsed out of `addopts`.
//!
//! The first two are known before Python starts; the third only once the collector has read the
//! project's ini files, so [`RunOptions::resolve`] runs after collection.

use std::{
    fmt,
    path::{Path, PathBuf},
};

use clap::ValueEnum;

use serde::Deserialize;
use shoal_protocol::PytestSettings;

use crate::parallelism::{WorkerCount, WorkerCountError};

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
    /// `--retries`: how often a failing test runs again.
    pub retries: usize,
    /// `--max-worker-restart`: how many crashed workers may be replaced in all.
    pub max_worker_restart: Option<usize>,
    /// `--max-worker-tests`: a worker process is replaced after this many tests; 0 turns a
    /// `[tool.shoal]` limit off.
    pub max_worker_tests: Option<usize>,
    /// `--max-worker-rss`, in bytes: a worker process is replaced after a test that leaves
    /// its resident memory above this; 0 turns a `[tool.shoal]` limit off.
    pub max_worker_rss: Option<u64>,
    /// `--shard K/N` or `auto`: run only this CI machine's share of the suite.
    pub shard: Option<crate::shard::ShardSpec>,
    /// `--queue` and its settings: take tests from a queue shared by every CI node.
    pub queue: crate::queue::QueueArgs,
    /// Everything that is not shoal's, handed to pytest unchanged.
    pub pytest_args: Vec<String>,
    /// shoal's whole command line, for `config.workerinput["mainargv"]`.
    pub mainargv: Vec<String>,
}

/// The options a run goes with once pytest's own settings are known.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Resolved {
    pub workers: WorkerCount,
    pub dist: Dist,
    pub maxprocesses: Option<usize>,
    /// `--max-worker-restart`; `None`: xdist's default, four per worker.
    pub max_worker_restart: Option<usize>,
    /// `--failure-output`, else `immediate` under pytest-instafail's `--instafail`.
    pub failure_output: FailureOutput,
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
}

impl RunOptions {
    /// Fills what the command line left open from `[tool.shoal]` of the nearest
    /// `pyproject.toml` at or above `dir`.
    pub fn with_project_config(mut self, dir: &Path) -> Result<Self, OptionsError> {
        let Some((path, table)) = ProjectConfig::find(dir)? else {
            return Ok(self);
        };
        let invalid = |message: String| OptionsError::Project {
            path: path.clone(),
            message,
        };
        if self.workers.is_none() {
            self.workers = table
                .numprocesses
                .map(|v| v.to_string().trim_matches('"').parse())
                .transpose()
                .map_err(|e: WorkerCountError| invalid(e.to_string()))?;
        }
        if self.dist.is_none() {
            self.dist = table
                .dist
                .map(|v| choice("dist", &v))
                .transpose()
                .map_err(|e| invalid(e.to_string()))?;
        }
        if self.start.is_none() {
            self.start = table
                .start
                .map(|v| choice("start", &v))
                .transpose()
                .map_err(|e| invalid(e.to_string()))?;
        }
        self.maxprocesses = self.maxprocesses.or(table.maxprocesses);
        self.max_worker_tests = self.max_worker_tests.or(table.max_worker_tests);
        if self.max_worker_rss.is_none() {
            self.max_worker_rss = table
                .max_worker_rss
                .map(|v| match v {
                    toml::Value::String(text) => {
                        parse_size(&text).map_err(|e| format!("max-worker-rss: {e}"))
                    }
                    toml::Value::Integer(bytes) => u64::try_from(bytes)
                        .map_err(|_| format!("max-worker-rss: {bytes} is below 0 bytes")),
                    other => Err(format!(
                        "max-worker-rss: expected a size such as \"500M\" or a number of bytes, not {other}"
                    )),
                })
                .transpose()
                .map_err(invalid)?;
        }
        if self.python.is_none() {
            self.python = table.python.map(|p| path.parent().unwrap_or(dir).join(p));
        }
        Ok(self)
    }

    /// The final options: ours first, then the xdist flags from pytest's addopts, then the
    /// defaults (`-n auto --dist load`: someone who runs shoal wants parallelism).
    pub fn resolve(&self, pytest: &PytestSettings) -> Result<Resolved, OptionsError> {
        let workers = match (self.workers, &pytest.numprocesses) {
            (Some(workers), _) => workers,
            (None, Some(addopts)) => addopts.parse()?,
            (None, None) => WorkerCount::Auto,
        };
        let dist = match (self.dist, &pytest.dist) {
            (Some(dist), _) => dist,
            (None, Some(addopts)) => choice("dist", addopts)?,
            (None, None) => Dist::Load,
        };
        let max_worker_restart = match (self.max_worker_restart, &pytest.maxworkerrestart) {
            (Some(n), _) => Some(n),
            (None, Some(addopts)) => {
                Some(
                    addopts
                        .trim()
                        .parse()
                        .map_err(|_| OptionsError::MaxWorkerRestart {
                            value: addopts.clone(),
                        })?,
                )
            }
            (None, None) => None,
        };
        Ok(Resolved {
            workers,
            dist,
            maxprocesses: self.maxprocesses.or(pytest.maxprocesses),
            max_worker_restart,
            failure_output: self.failure_output.unwrap_or(if pytest.instafail {
                FailureOutput::Immediate
            } else {
                FailureOutput::End
            }),
        })
    }
}

/// `[tool.shoal]`: the same option names as the command line.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct ProjectConfig {
    numprocesses: Option<toml::Value>,
    dist: Option<String>,
    maxprocesses: Option<usize>,
    python: Option<PathBuf>,
    start: Option<String>,
    #[serde(rename = "max-worker-tests")]
    max_worker_tests: Option<usize>,
    #[serde(rename = "max-worker-rss")]
    max_worker_rss: Option<toml::Value>,
}

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
    shoal: Option<toml::Value>,
}

impl ProjectConfig {
    /// The nearest `pyproject.toml` and its `[tool.shoal]` table, if it has one.
    fn find(dir: &Path) -> Result<Option<(PathBuf, Self)>, OptionsError> {
        let Some(path) =
            nearest_holding(dir, &["pyproject.toml"]).map(|d| d.join("pyproject.toml"))
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
        let Some(table) = doc.tool.and_then(|t| t.shoal) else {
            return Ok(None);
        };
        let config = table
            .try_into()
            .map_err(|e: toml::de::Error| project(e.message().to_owned()))?;
        Ok(Some((path, config)))
    }
}

#[cfg(test)]
mod tests {
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
            testrunuid: None,
        }
    }

    #[test]
    fn command_line_beats_addopts_beats_defaults() {
        let cli = RunOptions {
            workers: Some(WorkerCount::Fixed(3)),
            ..Default::default()
        };
        let r = cli
            .resolve(&settings(Some("auto"), Some("loadfile")))
            .unwrap();
        assert_eq!((r.workers, r.dist), (WorkerCount::Fixed(3), Dist::LoadFile));
        let r = RunOptions::default()
            .resolve(&settings(None, None))
            .unwrap();
        assert_eq!((r.workers, r.dist), (WorkerCount::Auto, Dist::Load));
    }

    #[test]
    fn a_bad_addopts_value_is_an_error() {
        let err = RunOptions::default()
            .resolve(&settings(None, Some("loadfiles")))
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
        let dir = tempfile::tempdir().unwrap();
        let config = |table: &str| {
            std::fs::write(
                dir.path().join("pyproject.toml"),
                format!("[tool.shoal]\n{table}\n"),
            )
            .unwrap();
            RunOptions::default().with_project_config(dir.path())
        };
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
