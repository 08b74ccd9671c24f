//! shoal's command line: its own few options, told apart from pytest's, which pass through.
//!
//! pytest accepts hundreds of options, plugins add more, and shoal must not need to know them.
//! So shoal picks out only the options it defines (by name, in the forms argparse accepts:
//! `-n 4`, `-n4`, `--dist=load`, `--dist load`) and leaves every other argument, in order,
//! for pytest. The options are defined once, below, with their help text.

use std::{path::PathBuf, time::Duration};

use clap::{ArgAction, Command, CommandFactory, FromArgMatches, Parser};
use shoal_runner::{
    options::{self, parse_size, Dist, FailureOutput, Shuffle, StartMethod},
    parallelism::WorkerCount,
    queue::{report::ReportOptions, QueueArgs},
    replay::ReplayArgs,
    shard::{merge::MergeOptions, ShardSpec},
    RunOptions,
};

/// Run a pytest suite in parallel, as `pytest -n N` (pytest-xdist) does.
///
/// Every argument shoal does not define below goes to pytest unchanged, in order: paths, -k,
/// -m, -x, -v, -p, --tb and every plugin's options. shoal's options can also be set in
/// `[tool.shoal]` of pyproject.toml; the xdist flags in pytest's `addopts` are honoured.
//
// The usage line says so too: clap's own (`shoal [OPTIONS]`) would read as if shoal took
// nothing else, since pytest's arguments never reach clap (see `split`).
#[derive(Debug, Parser)]
#[command(name = "shoal", version, disable_help_subcommand = true)]
#[command(override_usage = "shoal [SHOAL OPTIONS] [PYTEST ARGS]...")]
#[command(after_help = "Every other argument is passed to pytest: see `python -m pytest --help`.")]
pub struct Cli {
    /// Number of workers: a number, 'auto' (usable CPUs) or 'logical' (all logical CPUs).
    /// 0 runs one worker that looks like plain pytest. [default: auto]
    #[arg(
        short = 'n',
        long = "numprocesses",
        value_name = "N",
        allow_hyphen_values = true
    )]
    pub numprocesses: Option<WorkerCount>,

    /// How tests are spread: load, loadscope, loadfile, loadgroup, worksteal, each, no.
    /// [default: load]
    #[arg(long, value_name = "MODE")]
    pub dist: Option<Dist>,

    /// Upper limit on the number of workers.
    #[arg(long, value_name = "N")]
    pub maxprocesses: Option<usize>,

    /// The Python interpreter to run pytest with. [default: $VIRTUAL_ENV's; else, where pytest
    /// is installed, the virtualenv shoal is installed in, then .venv in the project root; else
    /// python3 on PATH; -v says which]
    #[arg(long, value_name = "PATH")]
    pub python: Option<PathBuf>,

    /// How workers start: 'fork' them from the collecting process (falls back to spawn where
    /// unsafe) or 'spawn' fresh ones that each collect. [default: fork]
    #[arg(long, value_name = "METHOD")]
    pub start: Option<StartMethod>,

    /// When to print failure details: 'end' (in FAILURES, as pytest) or 'immediate' (as each
    /// failing test ends). [default: end]
    #[arg(long, value_name = "WHEN")]
    pub failure_output: Option<FailureOutput>,

    /// Write one JSON object per line for every run, worker and test event to PATH ('-' for
    /// stdout), as it happens: each has an `event` (run_start, worker_start, test,
    /// worker_stop, worker_recycled, run_end) and its fields; unknown fields are to be ignored.
    /// Every field is described in docs/events.md of shoal's source.
    #[arg(long, value_name = "PATH")]
    pub report_json: Option<String>,

    /// Write the run as a Chrome trace to FILE: a track per worker, a slice per test with its
    /// phases, worker starts and stops. Open it in ui.perfetto.dev or chrome://tracing (more
    /// in docs/timeline.md of shoal's source).
    #[arg(long, value_name = "FILE")]
    pub timeline: Option<PathBuf>,

    /// Fail a test that runs longer than SECONDS: its worker dumps every thread's stack and is
    /// stopped with all its child processes, then replaced. Also ini `timeout` and
    /// `@pytest.mark.timeout(seconds)`.
    #[arg(long, value_name = "SECONDS", value_parser = seconds)]
    pub timeout: Option<f64>,

    /// Stop the whole run after SECONDS, reporting running tests as timed out.
    #[arg(long, value_name = "SECONDS", value_parser = seconds)]
    pub run_timeout: Option<f64>,

    /// Run a failing test up to N more times (on another worker where there is one); one that
    /// then passes is reported FLAKY. Also `@pytest.mark.flaky(reruns=N)`.
    /// [default: 0]
    #[arg(long, value_name = "N")]
    pub retries: Option<usize>,

    /// How many crashed workers may be replaced in all. [default: 4 per worker]
    #[arg(long, value_name = "N")]
    pub max_worker_restart: Option<usize>,

    /// Replace a worker by a fresh process once it has run N tests (for suites that leak
    /// memory or state): it finishes its test, its session fixtures are torn down, and the
    /// new process, forked again with the same gwN id, sets them up again. Costs none of
    /// --max-worker-restart. 0: off. Also `max-worker-tests` in [tool.shoal].
    #[arg(long, value_name = "N")]
    pub max_worker_tests: Option<usize>,

    /// Replace a worker, as --max-worker-tests does, after a test that leaves its resident
    /// memory above SIZE: bytes, or with K, M, G, T (powers of 1024), e.g. 500M, 1.5GiB.
    /// 0: off. Also `max-worker-rss` in [tool.shoal].
    #[arg(long, value_name = "SIZE", value_parser = parse_size)]
    pub max_worker_rss: Option<u64>,

    /// After each test, look for state it left behind (environment variables, the current
    /// directory, non-daemon threads, child processes, replaced functions of project modules,
    /// open file descriptors) and report each finding as a warning naming the test; outcomes
    /// and the exit code are unchanged. Also `detect-leaks` in [tool.shoal].
    #[arg(long)]
    pub detect_leaks: bool,

    /// Hand the --dist mode's units out in a random order from SEED (a new one without; give
    /// it as --shuffle=SEED), printed in the header. Units stay whole and serial tests serial;
    /// the same seed and worker count make the same first assignment. With pytest-randomly
    /// active its seed is shoal's. Also `shuffle` in [tool.shoal].
    #[arg(long, value_name = "SEED", num_args = 0..=1, require_equals = true)]
    pub shuffle: Option<Option<u64>>,

    /// Run only share K of N of the suite (one CI machine of N), balanced by recorded
    /// durations; 'auto' reads K and N from the CI's variables. Merge the shards' JUnit files
    /// with `shoal merge`.
    #[arg(long, value_name = "K/N|auto")]
    pub shard: Option<ShardSpec>,

    /// After the run, classify each failed test (at most 20) by running it again: FLAKY (its
    /// worker's sequence passes when run again), POLLUTED (it passes alone: with the `shoal
    /// bisect` command to run) or FAILED (it fails alone). Also `triage = true` in
    /// [tool.shoal].
    #[arg(long)]
    pub triage: bool,

    /// Print the options a run would go with and where each came from (command line,
    /// [tool.shoal], pytest addopts, default), and exit without running tests.
    #[arg(long)]
    pub show_config: bool,

    #[command(flatten)]
    pub queue: QueueCli,
}

/// The shared queue's options, for a node (`shoal --queue`) and for `shoal report`.
#[derive(Debug, clap::Args)]
#[command(next_help_heading = "Shared queue (every CI node takes tests from one Redis)")]
pub struct QueueCli {
    /// Take tests from the Redis queue at URL, shared by every node of the build
    /// (redis://[[user]:password@]host[:port][/db], rediss:// for TLS). Also SHOAL_QUEUE.
    #[arg(long, value_name = "URL")]
    pub queue: Option<String>,

    /// The build the nodes share: the same on every node of one CI run. [default: SHOAL_BUILD,
    /// else the CI's run id: GITHUB_RUN_ID-GITHUB_RUN_ATTEMPT, CI_PIPELINE_ID,
    /// BUILDKITE_BUILD_ID, CIRCLE_WORKFLOW_ID, BUILD_BUILDID, TRAVIS_BUILD_ID, BUILD_TAG]
    #[arg(long, value_name = "ID")]
    pub build: Option<String>,

    /// How long a node's lease on its tests lasts unrenewed before another node takes them
    /// over (renewed every third of it). [default: 30]
    #[arg(long, value_name = "SECONDS", value_parser = positive_seconds)]
    pub lease_timeout: Option<f64>,

    /// How long the build's keys stay in Redis after their last use. [default: 28800]
    #[arg(long, value_name = "SECONDS", value_parser = positive_seconds)]
    pub queue_ttl: Option<f64>,

    /// The share of the build's tests that --retries may send to other nodes in all, so a
    /// broken build does not retry everything. [default: 0.05]
    #[arg(long, value_name = "RATIO", value_parser = ratio)]
    pub requeue_tolerance: Option<f64>,
}

impl QueueCli {
    fn into_args(self) -> QueueArgs {
        QueueArgs {
            url: self.queue,
            build: self.build,
            lease_timeout: self.lease_timeout.map(Duration::from_secs_f64),
            ttl: self.queue_ttl.map(Duration::from_secs_f64),
            requeue_tolerance: self.requeue_tolerance,
        }
    }
}

/// Print the results of a whole queue build: `shoal report --queue URL --build ID`.
///
/// Waits until every test of the build is acknowledged, then prints pytest's summary for the
/// whole build, writes one JUnit file and pytest's --lf cache in the working directory, and
/// exits with pytest's code for the build (3 when tests were never run, listing them).
#[derive(Debug, Parser)]
#[command(name = "shoal report", version)]
pub struct ReportCli {
    #[command(flatten)]
    pub queue: QueueCli,

    /// Write the whole build's JUnit file here.
    #[arg(long, value_name = "PATH")]
    pub junitxml: Option<PathBuf>,

    /// How long to wait for the build to finish.
    #[arg(long, value_name = "SECONDS", value_parser = positive_seconds, default_value_t = 3600.0)]
    pub timeout: f64,

    /// Fold the build's test durations into the durations store (.pytest_cache/shoal/).
    #[arg(long)]
    pub durations: bool,

    /// Write each node's run record as DIR/<node>.json, for `shoal replay --record` and
    /// `shoal bisect --record`.
    #[arg(long, value_name = "DIR")]
    pub save_records: Option<PathBuf>,
}

/// Merge the JUnit files of `shoal --shard K/N` runs into one run: `shoal merge FILE...`.
///
/// Checks that the files come from one collection, that every shard is there once and that
/// every test has exactly one result (else lists what is wrong and exits 3); then prints
/// pytest's summary for the whole run and exits with pytest's code for it.
#[derive(Debug, Parser)]
#[command(name = "shoal merge", version)]
pub struct MergeCli {
    /// The shards' JUnit files.
    #[arg(required = true, value_name = "FILE")]
    pub files: Vec<PathBuf>,

    /// Write the whole run's JUnit file here.
    #[arg(long, value_name = "PATH")]
    pub junitxml: Option<PathBuf>,

    /// Fold the shards' test durations into the durations store (.pytest_cache/shoal/) and
    /// pytest-split's .test_durations in the working directory, for the next split.
    #[arg(long)]
    pub durations: bool,
}

/// Where a replayed sequence comes from: a run kept in pytest's cache, or a record file.
#[derive(Debug, clap::Args)]
pub struct RecordCli {
    /// One of the runs kept in .pytest_cache/shoal/runs/ (the file name without .json).
    /// [default: the latest]
    #[arg(long, value_name = "ID", conflicts_with = "record")]
    pub run: Option<String>,

    /// A record file from anywhere (a CI artifact).
    #[arg(long, value_name = "FILE")]
    pub record: Option<PathBuf>,

    /// The worker whose process to take (gw0, gw1, ...).
    #[arg(long, value_name = "gwN")]
    pub worker: Option<String>,

    /// The Python interpreter to run pytest with (as for a run).
    #[arg(long, value_name = "PATH")]
    pub python: Option<PathBuf>,

    /// Write the JSON events of what ran to PATH ('-' for stdout), as for a run.
    #[arg(long, value_name = "PATH")]
    pub report_json: Option<String>,
}

/// Run again exactly what one worker process ran in a recorded run, in order, in one worker
/// with the same worker id, worker count and seed, stopping after the target test:
/// `shoal replay [--run ID | --record FILE] [--worker gwN | --test NODEID] [PYTEST ARGS]...`.
///
/// The target is --test (in the process where it failed, else where it ran), else the first
/// failure (of --worker's processes, when given). Prints whether the target failed again
/// (REPRODUCED) and exits as pytest would for the tests it ran. Every other argument goes to
/// pytest, which collects as for a run.
#[derive(Debug, Parser)]
#[command(name = "shoal replay", version)]
#[command(
    override_usage = "shoal replay [--run ID | --record FILE] [--worker gwN | --test NODEID] [PYTEST ARGS]..."
)]
pub struct ReplayCli {
    #[command(flatten)]
    pub source: RecordCli,

    /// The target test.
    #[arg(long, value_name = "NODEID")]
    pub test: Option<String>,
}

/// Find which of the tests that ran before NODEID in its worker process make it fail:
/// `shoal bisect NODEID [--run ID | --record FILE] [PYTEST ARGS]...`.
///
/// Runs the recorded sequence again (twice at most: a victim that passes both times is
/// FLAKY), then NODEID alone (one that fails alone is no pollution), then shrinks the tests
/// before it by delta debugging, each round a fresh worker process forked from one
/// collection. Prints the culprits and the command that reproduces the failure with only them.
/// Exits 0 when it found them, 1 when the test is not polluted (or --max-rounds stopped it).
#[derive(Debug, Parser)]
#[command(name = "shoal bisect", version)]
#[command(override_usage = "shoal bisect NODEID [--run ID | --record FILE] [PYTEST ARGS]...")]
pub struct BisectCli {
    /// The test that fails after others (the victim).
    #[arg(value_name = "NODEID")]
    pub nodeid: String,

    #[command(flatten)]
    pub source: RecordCli,

    /// How many rounds may run at once, each in a worker of its own (their PYTEST_XDIST_WORKER
    /// is then gw0, gw1, ... rather than the recorded one's). [default: 1]
    #[arg(short = 'n', long = "numprocesses", value_name = "N")]
    pub numprocesses: Option<usize>,

    /// Stop after this many rounds, with the smallest failing set found so far.
    #[arg(long, value_name = "N", default_value_t = shoal_runner::replay::bisect::DEFAULT_MAX_ROUNDS)]
    pub max_rounds: usize,
}

/// The command line asks for `shoal replay`.
pub fn is_replay(argv: &[String]) -> bool {
    argv.get(1).is_some_and(|arg| arg == "replay")
}

/// The command line asks for `shoal bisect`.
pub fn is_bisect(argv: &[String]) -> bool {
    argv.get(1).is_some_and(|arg| arg == "bisect")
}

/// A replay's or bisect's own arguments parsed as `T`, and pytest's: shoal picks out its
/// options by name as for a run, and a bisect's NODEID is the first of the other words (before
/// any of pytest's options).
fn parse_fixed<T: Parser>(
    argv: &[String],
    name: &str,
    positional: bool,
) -> Result<(T, Vec<String>), clap::Error> {
    let mut command = T::command();
    command.build();
    let (ours, mut pytest_args) = split(&argv[2.min(argv.len())..], &command);
    let nodeid = match pytest_args.first() {
        Some(first) if positional && !first.starts_with('-') => Some(pytest_args.remove(0)),
        _ => None,
    };
    let matches =
        command.try_get_matches_from(std::iter::once(name.to_owned()).chain(nodeid).chain(ours))?;
    Ok((T::from_arg_matches(&matches)?, pytest_args))
}

/// The run options of a replay or bisect, and what it replays.
fn fixed_options(
    argv: &[String],
    source: RecordCli,
    test: Option<String>,
    workers: usize,
    pytest_args: Vec<String>,
    bisect: Option<usize>,
) -> (RunOptions, ReplayArgs) {
    let options = RunOptions {
        python: source.python,
        workers: Some(WorkerCount::Fixed(workers)),
        report_json: source.report_json,
        pytest_args,
        mainargv: argv.to_vec(),
        ..RunOptions::default()
    };
    let args = ReplayArgs {
        record: source.record,
        run: source.run,
        worker: source.worker,
        test,
        bisect,
    };
    (options, args)
}

/// Parses `shoal replay ...`; the error is clap's, ready to print.
pub fn parse_replay(argv: &[String]) -> Result<(RunOptions, ReplayArgs), clap::Error> {
    let (cli, pytest_args) = parse_fixed::<ReplayCli>(argv, "shoal replay", false)?;
    Ok(fixed_options(
        argv,
        cli.source,
        cli.test,
        1,
        pytest_args,
        None,
    ))
}

/// Parses `shoal bisect ...`; the error is clap's, ready to print.
pub fn parse_bisect(argv: &[String]) -> Result<(RunOptions, ReplayArgs), clap::Error> {
    let (cli, mut pytest_args) = parse_fixed::<BisectCli>(argv, "shoal bisect", true)?;
    // Each round fails the victim on purpose: its traceback once per round says nothing new
    // (a later --tb of the user's wins).
    pytest_args.insert(0, "--tb=no".to_owned());
    let workers = cli.numprocesses.unwrap_or(1).max(1);
    Ok(fixed_options(
        argv,
        cli.source,
        Some(cli.nodeid),
        workers,
        pytest_args,
        Some(cli.max_rounds),
    ))
}

/// The command line asks for `shoal merge` (a pytest path named `merge` is `./merge`).
pub fn is_merge(argv: &[String]) -> bool {
    argv.get(1).is_some_and(|arg| arg == "merge")
}

/// The command line asks for `shoal report`.
pub fn is_report(argv: &[String]) -> bool {
    argv.get(1).is_some_and(|arg| arg == "report")
}

/// Parses `shoal report ...`; the error is clap's, ready to print.
pub fn parse_report(argv: &[String]) -> Result<ReportOptions, clap::Error> {
    let cli = ReportCli::try_parse_from(
        std::iter::once("shoal report".to_owned()).chain(argv[2..].iter().cloned()),
    )?;
    Ok(ReportOptions {
        queue: cli.queue.into_args(),
        junitxml: cli.junitxml,
        timeout: Duration::from_secs_f64(cli.timeout),
        durations: cli.durations,
        save_records: cli.save_records,
    })
}

/// Parses `shoal merge ...`; the error is clap's, ready to print.
pub fn parse_merge(argv: &[String]) -> Result<MergeOptions, clap::Error> {
    let cli = MergeCli::try_parse_from(
        std::iter::once("shoal merge".to_owned()).chain(argv[2..].iter().cloned()),
    )?;
    Ok(MergeOptions {
        files: cli.files,
        junitxml: cli.junitxml,
        durations: cli.durations,
    })
}

/// Splits `argv` (without the program name) into shoal's arguments and pytest's.
fn split(argv: &[String], command: &Command) -> (Vec<String>, Vec<String>) {
    // (name, whether it takes a value)
    let mut long: Vec<(String, bool)> = Vec::new();
    let mut short: Vec<(char, bool)> = Vec::new();
    for arg in command.get_arguments() {
        // An optional value must be attached (`--shuffle=SEED`): the next word is pytest's.
        let takes_value = matches!(arg.get_action(), ArgAction::Set | ArgAction::Append)
            && !arg.is_require_equals_set();
        if let Some(name) = arg.get_long() {
            long.push((format!("--{name}"), takes_value));
        }
        if let Some(c) = arg.get_short() {
            short.push((c, takes_value));
        }
    }
    let mut ours = Vec::new();
    let mut theirs = Vec::new();
    let mut args = argv.iter();
    while let Some(arg) = args.next() {
        if arg == "--" {
            theirs.push(arg.clone());
            theirs.extend(args.by_ref().cloned());
            break;
        }
        let name = arg.split_once('=').map_or(arg.as_str(), |(n, _)| n);
        if let Some((_, takes)) = long.iter().find(|(n, _)| n == name) {
            ours.push(arg.clone());
            if *takes && !arg.contains('=') {
                ours.extend(args.next().cloned());
            }
            continue;
        }
        let mut chars = arg.chars();
        if let (Some('-'), Some(c)) = (chars.next(), chars.next()) {
            if let Some((_, takes)) = short.iter().find(|(s, _)| *s == c) {
                ours.push(arg.clone());
                if *takes && arg.len() == 2 {
                    ours.extend(args.next().cloned());
                }
                continue;
            }
        }
        theirs.push(arg.clone());
    }
    (ours, theirs)
}

/// A number of seconds the clock can count to.
fn seconds(text: &str) -> Result<f64, String> {
    options::seconds(number(text)?)
}

/// More than no time at all.
fn positive_seconds(text: &str) -> Result<f64, String> {
    options::positive_seconds(number(text)?)
}

/// A share, from 0 to 1.
fn ratio(text: &str) -> Result<f64, String> {
    options::ratio(number(text)?)
}

/// `text` as a number, for the checks that `[tool.shoal]` shares.
fn number(text: &str) -> Result<f64, String> {
    text.parse()
        .map_err(|_| format!("expected a number, not {text:?}"))
}

/// Parses shoal's command line; the error is clap's, ready to print.
pub fn parse(argv: Vec<String>) -> Result<RunOptions, clap::Error> {
    let mut command = Cli::command();
    command.build(); // adds --help and --version, which are shoal's, not pytest's
    let (ours, pytest_args) = split(&argv[1.min(argv.len())..], &command);
    let matches = command.try_get_matches_from(std::iter::once(argv[0].clone()).chain(ours))?;
    let cli = Cli::from_arg_matches(&matches)?;
    Ok(RunOptions {
        python: cli.python,
        workers: cli.numprocesses,
        dist: cli.dist,
        maxprocesses: cli.maxprocesses,
        start: cli.start,
        failure_output: cli.failure_output,
        report_json: cli.report_json,
        timeline: cli.timeline,
        timeout: cli.timeout,
        run_timeout: cli.run_timeout,
        retries: cli.retries,
        max_worker_restart: cli.max_worker_restart,
        max_worker_tests: cli.max_worker_tests,
        max_worker_rss: cli.max_worker_rss,
        detect_leaks: cli.detect_leaks.then_some(true),
        shuffle: cli
            .shuffle
            .map(|seed| seed.map_or(Shuffle::AnySeed, Shuffle::Seed)),
        shard: cli.shard,
        queue: cli.queue.into_args(),
        triage: cli.triage.then_some(true),
        pytest_n: None,
        pytest_args,
        mainargv: argv,
        show_config: cli.show_config,
        project: None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse_ok(args: &[&str]) -> RunOptions {
        let argv = std::iter::once("shoal")
            .chain(args.iter().copied())
            .map(String::from)
            .collect();
        parse(argv).unwrap()
    }

    #[test]
    fn pytest_arguments_pass_through_in_order() {
        let o = parse_ok(&[
            "-n",
            "4",
            "-k",
            "not slow",
            "--dist=loadfile",
            "tests/",
            "-v",
            "-p",
            "no:cacheprovider",
        ]);
        assert_eq!(o.workers, Some(WorkerCount::Fixed(4)));
        assert_eq!(o.dist, Some(Dist::LoadFile));
        assert_eq!(
            o.pytest_args,
            ["-k", "not slow", "tests/", "-v", "-p", "no:cacheprovider"]
        );
    }

    #[test]
    fn every_argparse_form_is_recognised() {
        assert_eq!(parse_ok(&["-n3"]).workers, Some(WorkerCount::Fixed(3)));
        assert_eq!(parse_ok(&["-nauto"]).workers, Some(WorkerCount::Auto));
        assert_eq!(
            parse_ok(&["--numprocesses=logical"]).workers,
            Some(WorkerCount::Logical)
        );
        assert_eq!(parse_ok(&["--dist", "each"]).dist, Some(Dist::Each));
    }

    #[test]
    fn shuffle_takes_its_seed_only_after_an_equals_sign() {
        let bare = parse_ok(&["--shuffle", "tests/", "--detect-leaks"]);
        assert_eq!(bare.shuffle, Some(Shuffle::AnySeed));
        assert_eq!(bare.detect_leaks, Some(true));
        assert_eq!(bare.pytest_args, ["tests/"]);
        let seeded = parse_ok(&["--shuffle=12345", "-x"]);
        assert_eq!(seeded.shuffle, Some(Shuffle::Seed(12345)));
        assert_eq!(seeded.pytest_args, ["-x"]);
        let neither = parse_ok(&["tests/"]);
        assert_eq!((neither.shuffle, neither.detect_leaks), (None, None));
        let argv = ["shoal", "--shuffle=seven"].map(String::from).to_vec();
        let err = parse(argv).unwrap_err().to_string();
        assert!(err.contains("invalid value"), "{err}");
    }

    #[test]
    fn help_and_version_are_shoal_s() {
        for flag in ["--help", "-h", "--version"] {
            let argv = vec!["shoal".to_owned(), flag.to_owned()];
            let err = parse(argv).unwrap_err();
            assert!(!err.use_stderr(), "{flag}: {err}");
        }
    }

    #[test]
    fn everything_after_double_dash_is_pytest_s() {
        let o = parse_ok(&["--", "-n", "2"]);
        assert_eq!(o.workers, None);
        assert_eq!(o.pytest_args, ["--", "-n", "2"]);
    }

    fn argv(args: &[&str]) -> Vec<String> {
        std::iter::once("shoal")
            .chain(args.iter().copied())
            .map(String::from)
            .collect()
    }

    #[test]
    fn a_bisect_s_nodeid_may_come_before_or_after_its_options() {
        for args in [
            &[
                "bisect",
                "t.py::test_v",
                "--run",
                "r1",
                "-n",
                "2",
                "-p",
                "no:x",
            ][..],
            &[
                "bisect",
                "--run",
                "r1",
                "-n",
                "2",
                "t.py::test_v",
                "-p",
                "no:x",
            ][..],
        ] {
            let (options, replay) = parse_bisect(&argv(args)).unwrap();
            assert_eq!(replay.test.as_deref(), Some("t.py::test_v"));
            assert_eq!(replay.run.as_deref(), Some("r1"));
            assert_eq!(options.workers, Some(WorkerCount::Fixed(2)));
            assert_eq!(options.pytest_args, ["--tb=no", "-p", "no:x"]);
        }
        assert!(parse_bisect(&argv(&["bisect", "--run", "r1"])).is_err());
    }

    #[test]
    fn a_replay_is_one_worker_and_passes_pytest_s_arguments_on() {
        let (options, replay) =
            parse_replay(&argv(&["replay", "--worker", "gw1", "-k", "env", "tests/"])).unwrap();
        assert_eq!(replay.worker.as_deref(), Some("gw1"));
        assert_eq!(replay.bisect, None);
        assert_eq!(options.workers, Some(WorkerCount::Fixed(1)));
        assert_eq!(options.pytest_args, ["-k", "env", "tests/"]);
    }

    #[test]
    fn bad_values_are_errors() {
        for args in [
            ["-n", "-3"],
            ["-n", "abc"],
            ["--dist", "nope"],
            ["--max-worker-tests", "many"],
            ["--max-worker-rss", "12Q"],
        ] {
            let argv = std::iter::once("shoal")
                .chain(args)
                .map(String::from)
                .collect();
            let err = parse(argv).unwrap_err().to_string();
            assert!(err.contains("invalid value"), "{args:?}: {err}");
        }
    }
}
