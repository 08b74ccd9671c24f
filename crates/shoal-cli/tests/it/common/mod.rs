//! Shared helpers for shoal's integration tests.
//!
//! Every test copies a small pytest project from `tests/fixtures/<name>/` into a private temp
//! directory, runs the built `shoal` binary (or serial pytest, for comparison) in it, and looks
//! at the exit code, stdout and the JSON lines the fixture's conftest records.
//!
//! Each run is checked for orphans: once the command has exited, no process may be left whose
//! working directory, command line or environment points at the run's temp directory.
//!
//! The interpreter is `$SHOAL_TEST_PYTHON`, else `<repo>/.venv/bin/python`; if it is missing or
//! lacks pytest, the tests fail (they never pass silently).

use std::{
    collections::{BTreeMap, BTreeSet},
    ffi::{OsStr, OsString},
    fmt::Write as _,
    fs,
    os::unix::process::CommandExt,
    path::{Path, PathBuf},
    process::{Command, Stdio},
    sync::{
        atomic::{AtomicUsize, Ordering},
        mpsc, OnceLock,
    },
    time::Duration,
};

use serde_json::Value;

/// A run that takes longer than this is killed and fails its test.
pub const RUN_TIMEOUT: Duration = Duration::from_secs(240);

/// The environment variable that marks every process of one project's runs.
const MARKER_VAR: &str = "SHOAL_IT_MARKER";

/// Seconds a fixture's first test waits for a second worker to show up (see the conftests).
pub const RENDEZVOUS_SECONDS: &str = "60";

pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .canonicalize()
        .expect("the repository root exists")
}

pub fn shoal_bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_shoal"))
}

/// The Python with pytest that the tests use; panics with instructions if it is not usable.
pub fn python() -> PathBuf {
    static PYTHON: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    PYTHON
        .get_or_init(|| {
            let path = match std::env::var_os("SHOAL_TEST_PYTHON") {
                Some(p) => PathBuf::from(p),
                None => repo_root().join(".venv/bin/python"),
            };
            let hint = "set SHOAL_TEST_PYTHON to a Python that has pytest installed, or create \
                        <repo>/.venv with pytest, pytest-xdist and filelock";
            if !path.exists() {
                return Err(format!(
                    "shoal integration tests: Python interpreter {} does not exist; {hint}",
                    path.display()
                ));
            }
            let check = Command::new(&path)
                .args(["-c", "import pytest"])
                .output()
                .map_err(|e| format!("cannot run {}: {e}; {hint}", path.display()))?;
            if !check.status.success() {
                return Err(format!(
                    "shoal integration tests: {} cannot import pytest ({}); {hint}",
                    path.display(),
                    String::from_utf8_lossy(&check.stderr).trim()
                ));
            }
            Ok(path)
        })
        .clone()
        .unwrap_or_else(|message| panic!("{message}"))
}

/// A fixture project copied into a private temp directory.
pub struct Project {
    dir: tempfile::TempDir,
    /// The project root: the working directory of every run.
    pub path: PathBuf,
    /// `$SHOAL_RECORD` of every run: where the fixtures' conftests write JSON lines.
    pub record: PathBuf,
    runs: AtomicUsize,
}

impl Project {
    /// Copies `tests/fixtures/<fixture>` into a fresh temp directory.
    pub fn new(fixture: &str) -> Self {
        let source = repo_root().join("tests/fixtures").join(fixture);
        assert!(
            source.is_dir(),
            "fixture project {} does not exist",
            source.display()
        );
        let project = Self::blank(fixture);
        copy_tree(&source, &project.path);
        // The recording helpers the fixtures' conftests share.
        copy_tree(&repo_root().join("tests/fixtures/_shared"), &project.path);
        project
    }

    /// An empty project directory.
    pub fn empty() -> Self {
        Self::blank("empty")
    }

    fn blank(name: &str) -> Self {
        let _ = python(); // fail early and clearly without a usable interpreter
        let dir = tempfile::Builder::new()
            .prefix(&format!("shoal-it-{name}-"))
            .tempdir()
            .expect("create a temp dir");
        let path = dir.path().join("project");
        fs::create_dir(&path).expect("create the project dir");
        let record = dir.path().join("record.jsonl");
        Self {
            dir,
            path,
            record,
            runs: AtomicUsize::new(0),
        }
    }

    /// The temp directory that holds the project, the record file and the captured output.
    pub fn root(&self) -> &Path {
        self.dir.path()
    }

    pub fn write(&self, relative: &str, text: &str) {
        let path = self.path.join(relative);
        fs::create_dir_all(path.parent().unwrap()).unwrap();
        fs::write(path, text).unwrap();
    }

    /// `shoal --python <python> <args>`.
    pub fn shoal<I, S>(&self, args: I) -> Run<'_>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        let mut command = Command::new(shoal_bin());
        command.arg("--python").arg(python()).args(args);
        Run::new(self, command)
    }

    /// `shoal <args>` without an explicit `--python`.
    pub fn shoal_raw<I, S>(&self, args: I) -> Run<'_>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        let mut command = Command::new(shoal_bin());
        command.args(args);
        Run::new(self, command)
    }

    /// Serial pytest: `python -m pytest <args>`.
    pub fn pytest<I, S>(&self, args: I) -> Run<'_>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        let mut command = Command::new(python());
        command.args(["-m", "pytest"]).args(args);
        Run::new(self, command)
    }

    /// The serial reference of a comparison with shoal: pytest without pytest-xdist or the cache
    /// (neither run may see the other's `lastfailed`),
    /// `python -m pytest -p no:xdist -p no:cacheprovider <args>`.
    pub fn serial(&self, args: &[&str]) -> Run<'_> {
        self.pytest(joined(&["-p", "no:xdist", "-p", "no:cacheprovider"], args))
    }

    /// shoal's side of [`Project::serial`]: `shoal -n 2 -p no:cacheprovider <args>`.
    pub fn shoal_n2(&self, args: &[&str]) -> Run<'_> {
        self.shoal(joined(&["-n", "2", "-p", "no:cacheprovider"], args))
    }

    /// [`Project::serial`], then [`Project::shoal_n2`], with the same `args`: (serial, shoal).
    pub fn serial_and_shoal(&self, args: &[&str]) -> (Output, Output) {
        (self.serial(args).run(), self.shoal_n2(args).run())
    }

    /// `python <args>`: a script of the project's that drives a run (on a pseudo-terminal,
    /// say).
    pub fn python_script<I, S>(&self, args: I) -> Run<'_>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        let mut command = Command::new(python());
        command.args(args);
        Run::new(self, command)
    }

    /// The JSON lines recorded so far; removes the file, so the next run starts afresh.
    pub fn take_records(&self) -> Vec<Value> {
        let text = match fs::read_to_string(&self.record) {
            Ok(text) => text,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => String::new(),
            Err(e) => panic!("read {}: {e}", self.record.display()),
        };
        let _ = fs::remove_file(&self.record);
        text.lines()
            .filter(|l| !l.trim().is_empty())
            .map(|l| {
                serde_json::from_str(l).unwrap_or_else(|e| panic!("bad record line {l:?}: {e}"))
            })
            .collect()
    }
}

/// A command line from two lists: `first`, then `rest`.
pub fn joined<'a>(first: &[&'a str], rest: &[&'a str]) -> Vec<&'a str> {
    [first, rest].concat()
}

/// Copies a directory tree, leaving out Python's and pytest's caches.
pub fn copy_tree(from: &Path, to: &Path) {
    fs::create_dir_all(to).unwrap();
    for entry in fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let name = entry.file_name();
        if name == "__pycache__" || name == ".pytest_cache" {
            continue;
        }
        let target = to.join(&name);
        if entry.file_type().unwrap().is_dir() {
            copy_tree(&entry.path(), &target);
        } else {
            fs::copy(entry.path(), &target).unwrap();
        }
    }
}

/// One command about to run in a project.
pub struct Run<'p> {
    project: &'p Project,
    command: Command,
    timeout: Duration,
}

/// Every variable `--shard auto` reads.
pub const SHARD_VARIABLES: [&str; 12] = [
    "CI_NODE_INDEX",
    "CI_NODE_TOTAL",
    "CIRCLE_NODE_INDEX",
    "CIRCLE_NODE_TOTAL",
    "BUILDKITE_PARALLEL_JOB",
    "BUILDKITE_PARALLEL_JOB_COUNT",
    "TEST_SHARD_INDEX",
    "TEST_TOTAL_SHARDS",
    "TEST_SHARD_STATUS_FILE",
    "JOB_COMPLETION_INDEX",
    "SHOAL_SHARD_TOTAL",
    "SHOAL_SHARD",
];

impl<'p> Run<'p> {
    fn new(project: &'p Project, mut command: Command) -> Self {
        command
            .current_dir(&project.path)
            .stdin(Stdio::null())
            // A clean, predictable pytest environment.
            .env_remove("PYTEST_ADDOPTS")
            .env_remove("PYTEST_PLUGINS")
            .env_remove("PYTEST_XDIST_WORKER")
            .env_remove("PYTEST_XDIST_WORKER_COUNT")
            .env_remove("PYTEST_XDIST_TESTRUNUID")
            .env_remove("PYTEST_XDIST_AUTO_NUM_WORKERS")
            .env_remove("PYTEST_CURRENT_TEST")
            .env_remove("VIRTUAL_ENV")
            .env_remove("PY_COLORS")
            .env_remove("FORCE_COLOR")
            .env_remove("SHOAL_START")
            // A queue node, and the build it would join, only where a test asks.
            .env_remove("SHOAL_QUEUE")
            .env_remove("SHOAL_BUILD")
            .env_remove("SHOAL_RENDEZVOUS");
        // `--shard auto` reads these: a run in a sharded CI job must not see its own.
        for variable in SHARD_VARIABLES {
            command.env_remove(variable);
        }
        command
            .env("COLUMNS", "80")
            .env("LINES", "24")
            .env("PYTHONDONTWRITEBYTECODE", "1")
            .env("SHOAL_RECORD", &project.record)
            .env(MARKER_VAR, project.root())
            // Its own process group, so a run that hangs can be killed whole.
            .process_group(0);
        Self {
            project,
            command,
            timeout: RUN_TIMEOUT,
        }
    }

    /// Kills the run and fails the test after `timeout` instead of [`RUN_TIMEOUT`].
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// Runs in `dir` instead of the project root.
    pub fn current_dir(mut self, dir: &Path) -> Self {
        self.command.current_dir(dir);
        self
    }

    pub fn env(mut self, key: &str, value: impl AsRef<OsStr>) -> Self {
        self.command.env(key, value);
        self
    }

    pub fn env_remove(mut self, key: &str) -> Self {
        self.command.env_remove(key);
        self
    }

    /// Makes the first test of each process wait for another worker (see the conftests).
    pub fn rendezvous(self) -> Self {
        self.env("SHOAL_RENDEZVOUS", RENDEZVOUS_SECONDS)
    }

    /// Runs to the end, then checks that nothing of the run survives.
    pub fn run(self) -> Output {
        self.start().wait()
    }

    /// Starts the command; [`Running::wait`] finishes it.
    pub fn start(mut self) -> Running<'p> {
        let n = self.project.runs.fetch_add(1, Ordering::SeqCst);
        let out_path = self.project.root().join(format!("run{n}.stdout"));
        let err_path = self.project.root().join(format!("run{n}.stderr"));
        // Files, not pipes: a leftover process holding a pipe could not hang the test.
        self.command
            .stdout(fs::File::create(&out_path).unwrap())
            .stderr(fs::File::create(&err_path).unwrap());
        let description = describe(&self.command);
        let mut child = self
            .command
            .spawn()
            .unwrap_or_else(|e| panic!("start {description}: {e}"));
        let pid = child.id() as i32;
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            let _ = tx.send(child.wait());
        });
        Running {
            project: self.project,
            timeout: self.timeout,
            pid,
            exited: rx,
            out_path,
            err_path,
            description,
        }
    }
}

/// A command that was started and has not been waited for.
pub struct Running<'p> {
    project: &'p Project,
    timeout: Duration,
    pid: i32,
    exited: mpsc::Receiver<std::io::Result<std::process::ExitStatus>>,
    out_path: PathBuf,
    err_path: PathBuf,
    description: String,
}

impl Running<'_> {
    pub fn pid(&self) -> i32 {
        self.pid
    }

    /// Sends `signal` to the command's own process only (not its process group).
    pub fn signal(&self, signal: i32) {
        // SAFETY: kill has no memory-safety preconditions.
        unsafe { libc::kill(self.pid, signal) };
    }

    /// Waits up to its timeout ([`RUN_TIMEOUT`] unless set) for the command, then checks
    /// that nothing of the run survives it.
    pub fn wait(self) -> Output {
        let (status, timed_out) = match self.exited.recv_timeout(self.timeout) {
            Ok(status) => (status.expect("wait for the command"), false),
            Err(_) => {
                // SAFETY: kill has no memory-safety preconditions.
                unsafe { libc::kill(-self.pid, libc::SIGKILL) };
                (
                    self.exited.recv().unwrap().expect("wait for the command"),
                    true,
                )
            }
        };
        let output = Output {
            code: status.code(),
            signal: std::os::unix::process::ExitStatusExt::signal(&status),
            stdout: fs::read_to_string(&self.out_path).unwrap_or_default(),
            stderr: fs::read_to_string(&self.err_path).unwrap_or_default(),
            command: self.description,
        };
        if timed_out {
            kill_survivors(self.project.root());
            panic!(
                "command timed out after {:?} (hung?)\n{}",
                self.timeout,
                output.context()
            );
        }
        let survivors = survivors(self.project.root());
        if !survivors.is_empty() {
            kill_survivors(self.project.root());
            let mut list = String::new();
            for (pid, cmdline) in &survivors {
                let cmdline: String = cmdline.chars().take(300).collect();
                let _ = writeln!(list, "  pid {pid}: {cmdline}");
            }
            panic!(
                "processes of the run survived it (orphans):\n{list}{}",
                output.context()
            );
        }
        output
    }
}

fn describe(command: &Command) -> String {
    let mut text = command.get_program().to_string_lossy().into_owned();
    for arg in command.get_args() {
        let arg = arg.to_string_lossy();
        text.push(' ');
        if arg.contains(' ') || arg.is_empty() {
            let _ = write!(text, "{arg:?}");
        } else {
            text.push_str(&arg);
        }
    }
    text
}

/// Live processes (zombies excepted) that belong to runs in `root`: their working directory
/// lies under it, or their command line or environment names it.
pub fn survivors(root: &Path) -> Vec<(i32, String)> {
    let root_text = root.to_string_lossy().into_owned();
    let marker = format!("{MARKER_VAR}={root_text}\0");
    let me = std::process::id() as i32;
    let mut found = Vec::new();
    let Ok(entries) = fs::read_dir("/proc") else {
        return found;
    };
    for entry in entries.flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|s| s.parse::<i32>().ok())
        else {
            continue;
        };
        if pid == me {
            continue;
        }
        let dir = entry.path();
        let Ok(stat) = fs::read_to_string(dir.join("stat")) else {
            continue;
        };
        if dying(
            &stat,
            &fs::read_to_string(dir.join("status")).unwrap_or_default(),
        ) {
            continue;
        }
        let cmdline = fs::read(dir.join("cmdline")).unwrap_or_default();
        let cmdline = String::from_utf8_lossy(&cmdline).replace('\0', " ");
        let environ = fs::read(dir.join("environ")).unwrap_or_default();
        let in_env = environ
            .windows(marker.len())
            .any(|w| w == marker.as_bytes());
        let in_cwd = fs::read_link(dir.join("cwd"))
            .map(|cwd| cwd.starts_with(root))
            .unwrap_or(false);
        if in_env || in_cwd || cmdline.contains(&root_text) {
            found.push((pid, cmdline.trim().to_owned()));
        }
    }
    found
}

/// Whether a process is already on its way out: a zombie, exiting (PF_EXITING), or with a
/// SIGKILL pending (as `PR_SET_PDEATHSIG` delivers when its parent exits). Such a process is
/// gone without anyone's further help, so it does not count as a survivor.
fn dying(stat: &str, status: &str) -> bool {
    const PF_EXITING: u64 = 0x4;
    const SIGKILL_BIT: u64 = 1 << (9 - 1);
    let Some((_, rest)) = stat.rsplit_once(')') else {
        return true; // gone already
    };
    let fields: Vec<&str> = rest.split_whitespace().collect();
    if matches!(fields.first(), Some(&"Z") | Some(&"X") | Some(&"x") | None) {
        return true;
    }
    let flags: u64 = fields.get(6).and_then(|f| f.parse().ok()).unwrap_or(0);
    if flags & PF_EXITING != 0 {
        return true;
    }
    status.lines().any(|line| {
        let Some((key, value)) = line.split_once(':') else {
            return false;
        };
        matches!(key, "SigPnd" | "ShdPnd")
            && u64::from_str_radix(value.trim(), 16).is_ok_and(|mask| mask & SIGKILL_BIT != 0)
    })
}

fn kill_survivors(root: &Path) {
    for (pid, _) in survivors(root) {
        // SAFETY: kill has no memory-safety preconditions.
        unsafe { libc::kill(pid, libc::SIGKILL) };
    }
}

/// What a finished command left.
#[derive(Debug, Clone)]
pub struct Output {
    pub code: Option<i32>,
    pub signal: Option<i32>,
    pub stdout: String,
    pub stderr: String,
    pub command: String,
}

impl Output {
    /// The command, its exit status and its output, for assertion messages.
    pub fn context(&self) -> String {
        format!(
            "--- command: {}\n--- exit code: {:?} (signal {:?})\n--- stdout:\n{}\n--- stderr:\n{}\n---",
            self.command, self.code, self.signal, self.stdout, self.stderr
        )
    }

    pub fn code(&self) -> i32 {
        self.code
            .unwrap_or_else(|| panic!("the command was killed\n{}", self.context()))
    }

    #[track_caller]
    pub fn assert_code(&self, expected: i32) -> &Self {
        assert_eq!(
            self.code,
            Some(expected),
            "unexpected exit code\n{}",
            self.context()
        );
        self
    }

    #[track_caller]
    pub fn assert_stdout_contains(&self, needle: &str) -> &Self {
        self.assert_contains("stdout", &self.stdout, needle)
    }

    #[track_caller]
    pub fn assert_stderr_contains(&self, needle: &str) -> &Self {
        self.assert_contains("stderr", &self.stderr, needle)
    }

    #[track_caller]
    fn assert_contains(&self, stream: &str, text: &str, needle: &str) -> &Self {
        assert!(
            text.contains(needle),
            "{stream} lacks {needle:?}\n{}",
            self.context()
        );
        self
    }

    /// stdout and stderr together.
    pub fn all_output(&self) -> String {
        format!("{}\n{}", self.stdout, self.stderr)
    }

    /// The per-test lines of the (last) short test summary, sorted: `PASSED id`,
    /// `FAILED id - msg`, `ERROR ...`, `SKIPPED [n] ...`, `XFAIL ...`, `XPASS ...`.
    pub fn summary_lines(&self) -> Vec<String> {
        const WORDS: [&str; 6] = [
            "PASSED ", "FAILED ", "ERROR ", "SKIPPED ", "XFAIL ", "XPASS ",
        ];
        let lines: Vec<&str> = self.stdout.lines().collect();
        let Some(start) = lines
            .iter()
            .rposition(|l| l.contains(" short test summary info "))
        else {
            return Vec::new();
        };
        // A message can span lines (on CI pytest shows it whole): continuation lines belong to
        // the entry above them.
        let mut found: Vec<String> = Vec::new();
        for line in &lines[start + 1..] {
            if WORDS.iter().any(|w| line.starts_with(w)) {
                found.push(line.to_string());
            } else if line.starts_with('=') || line.starts_with('!') || parse_stats(line).is_some()
            {
                break;
            } else if let Some(last) = found.last_mut() {
                last.push('\n');
                last.push_str(line);
            } else {
                break;
            }
        }
        found.sort();
        found
    }

    /// The last line of stdout that is a stats line (`=== 1 failed, 2 passed in 0.1s ===`).
    pub fn stats_line(&self) -> Option<&str> {
        self.stdout.lines().rev().find(|l| parse_stats(l).is_some())
    }

    /// The counts of the final stats line, with singular/plural nouns made one key.
    #[track_caller]
    pub fn stats(&self) -> BTreeMap<String, usize> {
        self.stats_line()
            .and_then(parse_stats)
            .unwrap_or_else(|| panic!("no stats line in stdout\n{}", self.context()))
    }

    /// How many stats lines stdout holds.
    pub fn stats_line_count(&self) -> usize {
        self.stdout
            .lines()
            .filter(|l| parse_stats(l).is_some())
            .count()
    }
}

/// `1 failed, 2 passed, 3 errors in 0.12s` (with or without `=` around) into counts.
pub fn parse_stats(line: &str) -> Option<BTreeMap<String, usize>> {
    let inner = line.trim().trim_matches('=').trim();
    let (counts, duration) = inner.rsplit_once(" in ")?;
    let seconds = duration.split_whitespace().next()?.strip_suffix('s')?;
    seconds.parse::<f64>().ok()?;
    let mut map = BTreeMap::new();
    if counts == "no tests ran" {
        return Some(map);
    }
    for part in counts.split(", ") {
        let (n, word) = part.split_once(' ')?;
        let n: usize = n.parse().ok()?;
        let word = match word {
            "errors" => "error",
            "warning" => "warnings",
            other => other,
        };
        if word.contains(' ') && word != "not run" {
            return None;
        }
        map.insert(word.to_owned(), n);
    }
    Some(map)
}

/// Asserts that shoal's run reports the same outcomes as serial pytest's: the per-test lines
/// of the short summary (as sets), the final stats counts and the exit code.
#[track_caller]
pub fn assert_same_outcomes(serial: &Output, shoal: &Output) {
    let expected = serial.summary_lines();
    assert!(
        !expected.is_empty(),
        "serial pytest printed no short summary (run both with -rA)\n{}",
        serial.context()
    );
    let actual = shoal.summary_lines();
    let missing: Vec<&String> = expected.iter().filter(|l| !actual.contains(l)).collect();
    let extra: Vec<&String> = actual.iter().filter(|l| !expected.contains(l)).collect();
    assert!(
        missing.is_empty() && extra.is_empty() && expected.len() == actual.len(),
        "short test summaries differ\nonly in serial pytest: {missing:#?}\nonly in shoal: \
         {extra:#?}\n=== serial ===\n{}\n=== shoal ===\n{}",
        serial.context(),
        shoal.context()
    );
    assert_eq!(
        shoal.stats(),
        serial.stats(),
        "final stats lines differ\n=== serial ===\n{}\n=== shoal ===\n{}",
        serial.context(),
        shoal.context()
    );
    assert_eq!(
        shoal.code,
        serial.code,
        "exit codes differ\n=== serial ===\n{}\n=== shoal ===\n{}",
        serial.context(),
        shoal.context()
    );
}

/// The node ids serial pytest collects, in order (`--collect-only -q`).
pub fn collected_ids(project: &Project, args: &[&str]) -> Vec<String> {
    let mut all = vec!["-p", "no:cacheprovider", "--collect-only", "-q"];
    all.extend_from_slice(args);
    let out = project.pytest(all).run();
    out.assert_code(0);
    out.stdout
        .lines()
        .take_while(|l| !l.trim().is_empty())
        .map(str::to_owned)
        .collect()
}

/// `record[key]` as a string (panics with the record when it is missing).
pub fn field<'a>(record: &'a Value, key: &str) -> &'a str {
    record[key]
        .as_str()
        .unwrap_or_else(|| panic!("record lacks string {key:?}: {record}"))
}

/// Test records only (those with a node id), as (nodeid, worker) pairs.
pub fn placements(records: &[Value]) -> Vec<(String, String)> {
    records
        .iter()
        .filter(|r| r.get("nodeid").is_some())
        .map(|r| (field(r, "nodeid").to_owned(), field(r, "worker").to_owned()))
        .collect()
}

/// The workers that ran at least one test.
pub fn workers_used(records: &[Value]) -> BTreeSet<String> {
    placements(records).into_iter().map(|(_, w)| w).collect()
}

/// Fails if any record says a rendezvous timed out.
#[track_caller]
pub fn assert_no_rendezvous_timeout(records: &[Value], output: &Output) {
    assert!(
        !records
            .iter()
            .any(|r| r.get("rendezvous_timeout").is_some()),
        "a worker waited in vain for a second worker to run any test\n{}",
        output.context()
    );
}

/// `a.py::C::t` -> `a.py`.
pub fn file_of(nodeid: &str) -> &str {
    nodeid.split("::").next().unwrap()
}

/// The loadscope unit of a node id: the class for methods, else the module.
pub fn scope_of(nodeid: &str) -> String {
    let parts: Vec<&str> = nodeid.split("::").collect();
    if parts.len() > 2 {
        parts[..parts.len() - 1].join("::")
    } else {
        parts[0].to_owned()
    }
}

// ---------------------------------------------------------------------------------------------
// Added for reports.rs and terminal.rs (reports: JUnit, cache, durations, terminal, events).

impl Project {
    /// Any program, run like [`Project::shoal`] and [`Project::pytest`] runs are: in the project,
    /// with the same clean environment, output capture, timeout and orphan check.
    pub fn program<P, I, S>(&self, program: P, args: I) -> Run<'_>
    where
        P: AsRef<OsStr>,
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        let mut command = Command::new(program);
        command.args(args);
        Run::new(self, command)
    }

    /// The exact bytes the most recent finished-or-started command wrote to stdout
    /// ([`Output::stdout`] is empty when they are not UTF-8).
    pub fn last_stdout_bytes(&self) -> Vec<u8> {
        let runs = self.runs.load(Ordering::SeqCst);
        assert!(runs > 0, "no command has run in this project yet");
        let path = self.root().join(format!("run{}.stdout", runs - 1));
        fs::read(&path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()))
    }

    /// `shoal --python <python> <args>` in a pseudo-terminal [`TERMINAL_WIDTH`] columns wide
    /// (`_shared/pty_run.py`): stdout is what the terminal was sent, escapes and all (see
    /// [`screen`]), stderr is empty.
    pub fn shoal_in_terminal(&self, args: &[&str]) -> Run<'_> {
        let python = python();
        let mut all = vec![
            OsString::from("pty_run.py"),
            shoal_bin().into(),
            "--python".into(),
            python.clone().into(),
        ];
        all.extend(args.iter().map(OsString::from));
        self.program(&python, all)
            .env("TERM", "xterm-256color")
            .env_remove("COLUMNS")
    }
}

/// The columns of the pseudo-terminal of [`Project::shoal_in_terminal`].
pub const TERMINAL_WIDTH: usize = 100;

/// What a terminal [`TERMINAL_WIDTH`] columns wide shows, scrolled-off lines included, once
/// it has been sent `raw`: the cursor movements and erasures the live view draws with are
/// carried out, colours dropped, trailing blanks cut. So a test sees the final screen a
/// person sees, not the frames of the live view drawn and erased on the way.
pub fn screen(raw: &[u8]) -> String {
    let text = String::from_utf8_lossy(raw);
    let mut lines: Vec<Vec<char>> = vec![Vec::new()];
    let (mut row, mut col) = (0usize, 0usize);
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '\r' => col = 0,
            '\n' => row += 1,
            '\x08' => col = col.saturating_sub(1),
            '\x1b' => {
                if chars.next_if_eq(&'[').is_none() {
                    chars.next(); // a two-character escape
                    continue;
                }
                let mut params = String::new();
                let command = loop {
                    match chars.next() {
                        Some(c) if ('\x40'..='\x7e').contains(&c) => break c,
                        Some(c) => params.push(c),
                        None => break '\0',
                    }
                };
                let n = params.parse::<usize>().unwrap_or(1).max(1);
                match command {
                    'A' => row = row.saturating_sub(n),
                    'B' => row += n,
                    'C' => col += n,
                    'D' => col = col.saturating_sub(n),
                    'G' => col = n - 1,
                    'K' | 'J' => {
                        if lines.len() <= row {
                            lines.resize(row + 1, Vec::new());
                        }
                        let line = &mut lines[row];
                        match params.as_str() {
                            "2" => line.clear(),
                            "1" => line.iter_mut().take(col + 1).for_each(|c| *c = ' '),
                            _ => line.truncate(col),
                        }
                        if command == 'J' && params != "1" {
                            lines.truncate(row + 1);
                        }
                    }
                    _ => {} // colours, the cursor's visibility
                }
            }
            c if c.is_control() => {}
            c => {
                if col >= TERMINAL_WIDTH {
                    (row, col) = (row + 1, 0);
                }
                if lines.len() <= row {
                    lines.resize(row + 1, Vec::new());
                }
                let line = &mut lines[row];
                if line.len() <= col {
                    line.resize(col + 1, ' ');
                }
                line[col] = c;
                col += 1;
            }
        }
    }
    let mut shown: Vec<String> = lines
        .iter()
        .map(|l| l.iter().collect::<String>().trim_end().to_owned())
        .collect();
    while shown.last().is_some_and(String::is_empty) {
        shown.pop();
    }
    shown.join("\n")
}

// ---------------------------------------------------------------------------------------------
// Added for plugins.rs (third-party plugins installed in a venv of their own).

/// The Python modules that `requirements-plugins.txt` installs.
const PLUGIN_MODULES: &str = "pytest, pytest_randomly, pytest_rerunfailures, pytest_asyncio, \
                              hypothesis, pytest_timeout, django, pytest_django, \
                              syrupy, pytest_benchmark, pytest_html, pytest_jsonreport, \
                              pytest_reportlog, xdist";

/// The Python of the third-party plugin tests: `$SHOAL_TEST_PLUGINS_PYTHON`, else
/// `<repo>/.venv-plugins/bin/python`, which `scripts/setup` makes from
/// `requirements-plugins.txt`. A venv of its own, because pytest-randomly, once installed,
/// shuffles every run. Panics with instructions if it is missing or lacks a plugin.
pub fn plugins_python() -> PathBuf {
    static PYTHON: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    PYTHON
        .get_or_init(|| {
            let path = match std::env::var_os("SHOAL_TEST_PLUGINS_PYTHON") {
                Some(p) => PathBuf::from(p),
                None => repo_root().join(".venv-plugins/bin/python"),
            };
            let hint = "run scripts/setup (it creates <repo>/.venv-plugins from \
                        requirements-plugins.txt), or set SHOAL_TEST_PLUGINS_PYTHON to a Python \
                        with those packages installed";
            if !path.exists() {
                return Err(format!(
                    "shoal plugin tests: Python interpreter {} does not exist; {hint}",
                    path.display()
                ));
            }
            let check = Command::new(&path)
                .args(["-c", &format!("import {PLUGIN_MODULES}")])
                .output()
                .map_err(|e| format!("cannot run {}: {e}; {hint}", path.display()))?;
            if !check.status.success() {
                return Err(format!(
                    "shoal plugin tests: {} cannot import the plugins ({}); {hint}",
                    path.display(),
                    String::from_utf8_lossy(&check.stderr).trim()
                ));
            }
            Ok(path)
        })
        .clone()
        .unwrap_or_else(|message| panic!("{message}"))
}

/// `shoal --python <plugins python> <args>`: a run in the plugin tests' venv.
pub fn plugin_shoal<'p>(project: &'p Project, args: &[&str]) -> Run<'p> {
    let mut all: Vec<OsString> = vec!["--python".into(), plugins_python().into()];
    all.extend(args.iter().map(OsString::from));
    project.program(shoal_bin(), all)
}

/// Serial pytest in the plugin tests' venv: `<plugins python> -m pytest <args>`.
pub fn plugin_pytest<'p>(project: &'p Project, args: &[&str]) -> Run<'p> {
    let mut all: Vec<OsString> = vec!["-m".into(), "pytest".into()];
    all.extend(args.iter().map(OsString::from));
    project.program(plugins_python(), all)
}

/// The `created: N/N workers (...)` line of `-v`.
#[track_caller]
pub fn created_line(out: &Output) -> &str {
    out.stdout
        .lines()
        .find(|l| l.starts_with("created: "))
        .unwrap_or_else(|| panic!("no 'created:' line with -v\n{}", out.context()))
}

// ---------------------------------------------------------------------------------------------
// Added for interpreter.rs (which Python a run picks) and exit_codes.rs.

/// A new virtualenv at `dir` made from [`python`]'s, without pip: its `bin/python`. With
/// `pytest`, a `.pth` file puts [`python`]'s site-packages on its path, so pytest imports there;
/// without, nothing does (checked).
pub fn venv(dir: &Path, pytest: bool) -> PathBuf {
    let status = Command::new(python())
        .args(["-m", "venv", "--without-pip"])
        .arg(dir)
        .env_remove("VIRTUAL_ENV")
        .status()
        .expect("run python -m venv");
    assert!(
        status.success(),
        "python -m venv --without-pip {dir:?} failed"
    );
    let venv_python = dir.join("bin/python");
    let purelib = |python: &Path| {
        let out = Command::new(python)
            .args([
                "-c",
                "import sysconfig; print(sysconfig.get_paths()['purelib'])",
            ])
            .output()
            .expect("ask Python for its site-packages");
        PathBuf::from(String::from_utf8(out.stdout).unwrap().trim())
    };
    if pytest {
        let shared = purelib(&python());
        fs::write(
            purelib(&venv_python).join("shoal_it_pytest.pth"),
            format!("{}\n", shared.display()),
        )
        .unwrap();
    }
    let probe = Command::new(&venv_python)
        .args(["-c", "import pytest"])
        .output()
        .unwrap();
    assert_eq!(
        probe.status.success(),
        pytest,
        "pytest imports in {dir:?}: {}",
        String::from_utf8_lossy(&probe.stderr)
    );
    venv_python
}
