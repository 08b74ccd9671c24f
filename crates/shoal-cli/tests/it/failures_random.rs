//! Workers killed at random moments: whatever the moment, every collected test ends with
//! exactly one final outcome, a test whose worker died names that worker, the exit code is 1
//! exactly when something crashed, the run ends, and no process of it survives.
//!
//! The runs are drawn from a fixed seed, printed with every run's parameters; set
//! `FAULTS_SEED` to replay a failure (and `FAULTS_RUNS` to change how many runs, and
//! `FAULTS_BUDGET` to change the seconds after which no more runs are started). `scripts/soak`
//! runs many more rounds over varying seeds, outside CI's time.

use std::{
    collections::BTreeSet,
    fs,
    time::{Duration, Instant},
};

use crate::common::{collected_ids, Project};
use crate::faults::{
    alive, assert_crashed, assert_one_final_outcome, crash_message, env_u64, events, peek_records,
    pidfd_kill, pidfd_open, run_end, Watchdog,
};

const DEFAULT_SEED: u64 = 0x005e_ed0f_fa17;
const DEFAULT_RUNS: u64 = 15;
/// Runs stop being started once this many seconds have passed (at least `MIN_RUNS` are made).
const DEFAULT_BUDGET: u64 = 240;
const MIN_RUNS: u64 = 5;
const RUN_LIMIT: Duration = Duration::from_secs(120);

/// splitmix64: small, good enough, and the same everywhere.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform in `low..=high`.
    fn range(&mut self, low: u64, high: u64) -> u64 {
        low + self.next() % (high - low + 1)
    }

    fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.next() as usize % items.len()]
    }
}

/// Whether `pid` is a process of this project's runs: its environment names the project.
fn belongs_to(pid: i64, project: &Project) -> bool {
    let marker = project.root().to_string_lossy().into_owned();
    fs::read(format!("/proc/{pid}/environ"))
        .map(|env| env.windows(marker.len()).any(|w| w == marker.as_bytes()))
        .unwrap_or(false)
}

/// Kills one live worker that has run a test, chosen at random; returns its (pid, worker).
fn kill_a_worker(project: &Project, rng: &mut Rng) -> Option<(i64, String)> {
    let mut candidates: Vec<(i64, String)> = peek_records(project)
        .iter()
        .filter_map(|r| Some((r["pid"].as_i64()?, r["worker"].as_str()?.to_owned())))
        .collect::<BTreeSet<_>>()
        .into_iter()
        .filter(|(pid, _)| alive(*pid))
        .collect();
    while !candidates.is_empty() {
        let at = rng.next() as usize % candidates.len();
        let (pid, worker) = candidates.swap_remove(at);
        // The pidfd pins the process: a recycled pid cannot be hit.
        let Some(fd) = pidfd_open(pid as i32) else {
            continue;
        };
        let killed = belongs_to(pid, project) && pidfd_kill(fd, libc::SIGKILL);
        // SAFETY: the descriptor is ours and closed once.
        unsafe { libc::close(fd) };
        if killed {
            return Some((pid, worker));
        }
    }
    None
}

#[test]
fn workers_killed_at_random_moments_leave_every_test_with_one_outcome() {
    let seed = env_u64("FAULTS_SEED").unwrap_or(DEFAULT_SEED);
    let runs = env_u64("FAULTS_RUNS").unwrap_or(DEFAULT_RUNS);
    let budget = Duration::from_secs(env_u64("FAULTS_BUDGET").unwrap_or(DEFAULT_BUDGET));
    println!("random worker kills: FAULTS_SEED={seed:#x} FAULTS_RUNS={runs}");
    let project = Project::new("faults_random");
    let collected = collected_ids(&project, &[]);
    assert_eq!(collected.len(), 40);
    let mut rng = Rng(seed);
    let began = Instant::now();
    let mut made = 0;
    let mut runs_with_crashes = 0;
    for run in 0..runs {
        if run >= MIN_RUNS && began.elapsed() > budget {
            println!("time budget spent after {run} runs");
            break;
        }
        let start = if rng.range(0, 4) == 0 {
            "spawn"
        } else {
            "fork"
        };
        let dist = *rng.pick(&["load", "worksteal", "loadfile", "loadscope"]);
        let kills = rng.range(1, 2);
        let triggers: Vec<u64> = (0..kills).map(|_| rng.range(1, 40)).collect();
        let delays: Vec<u64> = (0..kills).map(|_| rng.range(0, 15)).collect();
        let what = format!(
            "run {run} (FAULTS_SEED={seed:#x}): --start {start} --dist {dist}, kill a worker \
             once {triggers:?} tests have started, {delays:?} ms later"
        );
        println!("{what}");
        let running = project
            .shoal([
                "-n",
                "3",
                "--start",
                start,
                "--dist",
                dist,
                "-p",
                "no:cacheprovider",
                "--report-json=events.jsonl",
            ])
            .start();
        let watchdog = Watchdog::new(running.pid(), RUN_LIMIT);
        let mut killed: Vec<(i64, String)> = Vec::new();
        for (trigger, delay) in triggers.iter().zip(&delays) {
            // Wait (bounded) until that many tests have started, or the run is over.
            let deadline = Instant::now() + RUN_LIMIT;
            while peek_records(&project).len() < *trigger as usize
                && alive(running.pid() as i64)
                && Instant::now() < deadline
            {
                std::thread::sleep(Duration::from_millis(1));
            }
            std::thread::sleep(Duration::from_millis(*delay));
            if let Some(victim) = kill_a_worker(&project, &mut rng) {
                killed.push(victim);
            }
        }
        let out = running.wait();
        assert!(
            !watchdog.disarm(),
            "{what}: the run did not end\n{}",
            out.context()
        );
        let _ = project.take_records();
        println!(
            "  killed {killed:?}; {}",
            out.stats_line().unwrap_or("no stats line")
        );
        let context = || format!("{what}\nkilled {killed:?}\n{}", out.context());
        assert!(
            !out.all_output().contains("panicked"),
            "shoal panicked\n{}",
            context()
        );
        let events = events(&project, &out);
        let finals = assert_one_final_outcome(&events, &collected, 0, &out);
        assert_eq!(
            run_end(&events, &out)["not_run"],
            0,
            "a replacement worker runs what a killed one left\n{}",
            context()
        );
        let killed_workers: BTreeSet<&str> = killed.iter().map(|(_, w)| w.as_str()).collect();
        let mut crashed = 0;
        for event in finals.values() {
            if crash_message(event).is_some() {
                assert_crashed(event, "signal 9", &out);
                let worker = event["worker"].as_str().unwrap();
                assert!(
                    killed_workers.contains(worker),
                    "{worker} crashed but was not killed\n{}",
                    context()
                );
                crashed += 1;
            } else {
                assert_eq!(event["outcome"], "passed", "{event}\n{}", context());
            }
        }
        // A worker killed between tests, or after its last test and before the end of its
        // session, is a worker error ("crashed outside any test", "crashed between tests"),
        // blamed on no test. One killed after its session finished lost nothing: no error.
        let outside: Vec<&str> = out
            .stdout
            .lines()
            .filter(|l| {
                l.starts_with("worker '")
                    && l.contains("' crashed ")
                    && !l.contains(" crashed while running ")
            })
            .collect();
        for line in &outside {
            assert!(
                killed_workers
                    .iter()
                    .any(|w| line.contains(&format!("'{w}'"))),
                "{line}\n{}",
                context()
            );
            assert!(line.ends_with("(signal 9)"), "{line}\n{}", context());
        }
        let something_crashed = crashed > 0 || !outside.is_empty();
        assert_eq!(
            out.code(),
            if something_crashed { 1 } else { 0 },
            "exit code 1 exactly when something crashed\n{}",
            context()
        );
        if something_crashed {
            runs_with_crashes += 1;
        }
        made += 1;
    }
    println!("{runs_with_crashes} of {made} runs had a crash");
    // Most kills land while tests run; if none did, this test tested nothing.
    assert!(
        runs_with_crashes * 3 >= made,
        "only {runs_with_crashes} of {made} runs saw a crash (FAULTS_SEED={seed:#x})"
    );
}
