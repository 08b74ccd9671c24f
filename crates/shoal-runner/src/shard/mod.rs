//! CI shards: one run's share of a suite split over N machines (`--shard K/N`), and the
//! merge of their results (`shoal merge`, in [`merge`]).
//!
//! Every shard collects the whole suite and computes the same partition from the collection
//! and the durations history alone: nothing here depends on hash seeds, the working
//! directory, map order or time, so N machines given the same collection and history agree on
//! who runs what without talking to each other. Each shard's JUnit file carries a
//! [`manifest::Manifest`] that lets the merge prove every test ran exactly once.

pub mod manifest;
pub mod merge;

use std::{collections::BTreeMap, fmt, path::PathBuf, str::FromStr};

use shoal_protocol::CollectedItem;

use crate::{durations::Expected, options::Dist};

/// Shard `index` of `total`, counted from 1 as users say it (`--shard 2/4`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Shard {
    pub index: usize,
    pub total: usize,
}

impl fmt::Display for Shard {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.index, self.total)
    }
}

/// `--shard`: given, or to be read from the CI's variables.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ShardSpec {
    Given(Shard),
    Auto,
}

/// A shard could not be determined.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ShardError {
    #[error(
        "parse --shard value {value:?}: expected K/N with 1 <= K <= N (such as 2/4), or 'auto'"
    )]
    Syntax { value: String },
    #[error("read the shard from {variables}: {problem}")]
    Variable {
        variables: &'static str,
        problem: String,
    },
    #[error("find the shard for --shard auto: none of CI_NODE_INDEX (GitLab), CIRCLE_NODE_INDEX (CircleCI), BUILDKITE_PARALLEL_JOB (Buildkite), TEST_SHARD_INDEX (Bazel), JOB_COMPLETION_INDEX with SHOAL_SHARD_TOTAL (Kubernetes) or SHOAL_SHARD is set")]
    NoVariables,
    #[error("shard a run with --dist {dist}: every shard would run {what}; use load, loadscope, loadfile, loadgroup or worksteal")]
    Dist { dist: Dist, what: &'static str },
}

impl FromStr for ShardSpec {
    type Err = ShardError;

    fn from_str(value: &str) -> Result<Self, Self::Err> {
        if value == "auto" {
            return Ok(Self::Auto);
        }
        Shard::parse(value, 1)
            .map(Self::Given)
            .ok_or_else(|| ShardError::Syntax {
                value: value.to_owned(),
            })
    }
}

impl Shard {
    /// `K/N` with K counted from `base` (0 or 1).
    fn parse(text: &str, base: usize) -> Option<Self> {
        let (index, total) = text.split_once('/')?;
        Self::from_parts(index, total, base)
    }

    fn from_parts(index: &str, total: &str, base: usize) -> Option<Self> {
        let index: usize = index.trim().parse().ok()?;
        let total: usize = total.trim().parse().ok()?;
        let index = (index + 1).checked_sub(base)?;
        (1..=total)
            .contains(&index)
            .then_some(Self { index, total })
    }
}

/// The shard a run takes, and where it was read from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ShardChoice {
    pub shard: Shard,
    /// The CI variables it came from (`--shard auto`), for `-v` and the header.
    pub from: Option<&'static str>,
    /// Bazel's `TEST_SHARD_STATUS_FILE`: touched to say this runner shards.
    pub status_file: Option<PathBuf>,
}

/// The CIs `--shard auto` knows, in the order it asks them: the variables holding the index
/// and the total, and what the index counts from.
const CI_VARIABLES: [(&str, &str, &str, usize); 5] = [
    (
        "CI_NODE_INDEX/CI_NODE_TOTAL",
        "CI_NODE_INDEX",
        "CI_NODE_TOTAL",
        1,
    ),
    (
        "CIRCLE_NODE_INDEX/CIRCLE_NODE_TOTAL",
        "CIRCLE_NODE_INDEX",
        "CIRCLE_NODE_TOTAL",
        0,
    ),
    (
        "BUILDKITE_PARALLEL_JOB/BUILDKITE_PARALLEL_JOB_COUNT",
        "BUILDKITE_PARALLEL_JOB",
        "BUILDKITE_PARALLEL_JOB_COUNT",
        0,
    ),
    (
        "TEST_SHARD_INDEX/TEST_TOTAL_SHARDS",
        "TEST_SHARD_INDEX",
        "TEST_TOTAL_SHARDS",
        0,
    ),
    (
        "JOB_COMPLETION_INDEX/SHOAL_SHARD_TOTAL",
        "JOB_COMPLETION_INDEX",
        "SHOAL_SHARD_TOTAL",
        0,
    ),
];

impl ShardSpec {
    /// The shard to run, reading the CI's variables through `var` for `auto`.
    pub fn choose(self, var: impl Fn(&str) -> Option<String>) -> Result<ShardChoice, ShardError> {
        let shard = match self {
            Self::Given(shard) => {
                return Ok(ShardChoice {
                    shard,
                    from: None,
                    status_file: None,
                })
            }
            Self::Auto => Self::detect(&var)?,
        };
        let status_file = (shard.1 == CI_VARIABLES[3].0)
            .then(|| var("TEST_SHARD_STATUS_FILE"))
            .flatten()
            .filter(|path| !path.is_empty())
            .map(PathBuf::from);
        Ok(ShardChoice {
            shard: shard.0,
            from: Some(shard.1),
            status_file,
        })
    }

    fn detect(var: &impl Fn(&str) -> Option<String>) -> Result<(Shard, &'static str), ShardError> {
        for (variables, index_var, total_var, base) in CI_VARIABLES {
            let Some(index) = var(index_var) else {
                continue;
            };
            let problem = |problem: String| ShardError::Variable { variables, problem };
            let total = var(total_var)
                .ok_or_else(|| problem(format!("{index_var} is set, {total_var} is not")))?;
            let first = if base == 0 { "0" } else { "1" };
            return Shard::from_parts(&index, &total, base)
                .map(|shard| (shard, variables))
                .ok_or_else(|| {
                    problem(format!(
                        "{index:?} of {total:?} is not a shard (the index counts from {first})"
                    ))
                });
        }
        match var("SHOAL_SHARD") {
            Some(value) => Shard::parse(&value, 1)
                .map(|shard| (shard, "SHOAL_SHARD"))
                .ok_or_else(|| ShardError::Variable {
                    variables: "SHOAL_SHARD",
                    problem: format!("{value:?} is not K/N with 1 <= K <= N"),
                }),
            None => Err(ShardError::NoVariables),
        }
    }
}

/// This run's share of the suite, as the partition gave it.
#[derive(Debug, Clone)]
pub struct ShardSplit {
    pub shard: Shard,
    /// The CI variables the shard was read from.
    pub from: Option<&'static str>,
    /// This shard's tests, by collection index, in order.
    pub owned: Vec<usize>,
    /// How many tests of the collection had a recorded duration.
    pub known: usize,
    /// [`manifest::split_digest`] of the whole partition, the same on every shard that split
    /// with the same history.
    pub split: String,
}

impl ShardSplit {
    /// Splits the collection as every shard splits it and keeps `choice`'s part.
    pub fn new(
        choice: &ShardChoice,
        dist: Dist,
        items: &[CollectedItem],
        expected: &Expected,
    ) -> Result<Self, ShardError> {
        let units = units(dist, items)?;
        let mut parts = partition(&units, &expected.seconds, choice.shard.total);
        Ok(Self {
            shard: choice.shard,
            from: choice.from,
            split: manifest::split_digest(&parts),
            owned: parts.swap_remove(choice.shard.index - 1),
            known: expected.known,
        })
    }

    pub fn owns(&self, index: usize) -> bool {
        self.owned.binary_search(&index).is_ok()
    }

    /// Keeps of the scheduler's units only this shard's tests.
    pub fn keep_own(&self, units: &mut Vec<Vec<usize>>) {
        for unit in units.iter_mut() {
            unit.retain(|&index| self.owns(index));
        }
        units.retain(|unit| !unit.is_empty());
    }

    /// What the shard's JUnit file will say about it.
    pub fn manifest_base(&self, items: &[CollectedItem]) -> manifest::ShardRun {
        manifest::ShardRun {
            shard: self.shard,
            fingerprint: manifest::fingerprint(items),
            split: self.split.clone(),
            collected: items.len(),
            assigned: self
                .owned
                .iter()
                .map(|&i| items[i].nodeid.clone())
                .collect(),
        }
    }

    /// What the terminal says of it as the run starts.
    pub fn start(&self, collected: usize) -> ShardStart {
        ShardStart {
            shard: self.shard,
            from: self.from,
            collected,
            known: self.known,
        }
    }
}

/// A shard as the run starts: shown in the header, and with `-v` how it was split.
#[derive(Debug, Clone, Copy)]
pub struct ShardStart {
    pub shard: Shard,
    pub from: Option<&'static str>,
    /// Tests in the whole collection.
    pub collected: usize,
    /// Of those, how many had a recorded duration.
    pub known: usize,
}

/// What a shard keeps together: a unit is never split over shards unless `splittable`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unit {
    pub tests: Vec<usize>,
    /// Under `load` a module's tests stay together only while that costs little balance.
    pub splittable: bool,
}

/// The units `dist` keeps on one shard, in collection order: a scope, a file or a group
/// under the scope modes; a module, splittable, under `load` and `worksteal` (its module
/// fixtures are paid once per shard that runs it). Every serial-marked test goes to one
/// shard, with the whole unit of each under the scope modes.
pub fn units(dist: Dist, items: &[CollectedItem]) -> Result<Vec<Unit>, ShardError> {
    let key = |item: &CollectedItem| -> (String, bool) {
        match (dist, &item.group) {
            (Dist::LoadScope, _) => (format!("scope {}", item.scope), false),
            (Dist::LoadFile, _) => (format!("file {}", item.file), false),
            (Dist::LoadGroup, Some(group)) => (format!("group {group}"), false),
            _ => (format!("file {}", item.file), true),
        }
    };
    match dist {
        Dist::Each => {
            return Err(ShardError::Dist {
                dist,
                what: "every test once per worker",
            })
        }
        Dist::No => {
            return Err(ShardError::Dist {
                dist,
                what: "the whole suite",
            })
        }
        _ => {}
    }
    let mut units: Vec<Unit> = Vec::new();
    let mut by_key: BTreeMap<String, usize> = BTreeMap::new();
    let mut serial = Unit {
        tests: Vec::new(),
        splittable: false,
    };
    for (index, item) in items.iter().enumerate() {
        let (key, splittable) = key(item);
        if item.serial && splittable {
            serial.tests.push(index);
            continue;
        }
        let at = *by_key.entry(key).or_insert_with(|| {
            units.push(Unit {
                tests: Vec::new(),
                splittable,
            });
            units.len() - 1
        });
        units[at].tests.push(index);
    }
    // Under the scope modes, a unit holding a serial test joins the serial unit whole.
    let (with_serial, mut units): (Vec<Unit>, Vec<Unit>) = units
        .into_iter()
        .partition(|unit| !unit.splittable && unit.tests.iter().any(|&i| items[i].serial));
    for unit in with_serial {
        serial.tests.extend(unit.tests);
    }
    if !serial.tests.is_empty() {
        serial.tests.sort_unstable();
        units.push(serial);
        units.sort_by_key(|unit| unit.tests[0]);
    }
    Ok(units)
}

/// How much above a perfect share a shard may grow to keep a splittable unit whole.
const WHOLE_UNIT_SLACK: f64 = 0.02;

/// How much longer its longest shard may be than a split test by test for a split that keeps
/// modules whole to be preferred.
const KEEP_TOGETHER_TOLERANCE: f64 = 0.005;

/// Splits `units` over `shards` by longest processing time first (see [`assign`]), twice
/// when some units are splittable: keeping modules whole where that costs little, and test by
/// test. The first wins unless its longest shard is more than [`KEEP_TOGETHER_TOLERANCE`]
/// longer. Returns each shard's test indices in collection order.
pub fn partition(units: &[Unit], cost: &[f64], shards: usize) -> Vec<Vec<usize>> {
    let whole = assign(units, cost, shards);
    if units.iter().all(|u| !u.splittable || u.tests.len() == 1) {
        return whole;
    }
    let singles: Vec<Unit> = units
        .iter()
        .flat_map(|unit| match unit.splittable {
            true => unit
                .tests
                .iter()
                .map(|&t| Unit {
                    tests: vec![t],
                    splittable: false,
                })
                .collect(),
            false => vec![unit.clone()],
        })
        .collect();
    let fine = assign(&singles, cost, shards);
    let longest = |parts: &[Vec<usize>]| {
        parts
            .iter()
            .map(|p| p.iter().map(|&i| cost[i]).sum::<f64>())
            .fold(0.0, f64::max)
    };
    if longest(&whole) <= longest(&fine) * (1.0 + KEEP_TOGETHER_TOLERANCE) {
        whole
    } else {
        fine
    }
}

/// Each unit, the longest first (ties in collection order), goes to the shard with the least
/// expected time so far (ties to the lowest shard). A splittable unit that would push its
/// shard past a perfect share (plus [`WHOLE_UNIT_SLACK`]) is split, its tests placed one by
/// one the same way.
fn assign(units: &[Unit], cost: &[f64], shards: usize) -> Vec<Vec<usize>> {
    let shards = shards.max(1);
    let unit_cost = |unit: &Unit| unit.tests.iter().map(|&i| cost[i]).sum::<f64>();
    let total: f64 = units.iter().map(unit_cost).sum();
    let share = total / shards as f64 * (1.0 + WHOLE_UNIT_SLACK);
    let mut order: Vec<(f64, &Unit)> = units.iter().map(|u| (unit_cost(u), u)).collect();
    order.sort_by(|a, b| b.0.total_cmp(&a.0).then(a.1.tests[0].cmp(&b.1.tests[0])));
    let mut loads = vec![0.0_f64; shards];
    let mut parts: Vec<Vec<usize>> = vec![Vec::new(); shards];
    let least = |loads: &[f64]| {
        (0..loads.len())
            .min_by(|&a, &b| loads[a].total_cmp(&loads[b]).then(a.cmp(&b)))
            .expect("at least one shard")
    };
    for (seconds, unit) in order {
        let to = least(&loads);
        if !unit.splittable || unit.tests.len() == 1 || loads[to] + seconds <= share {
            loads[to] += seconds;
            parts[to].extend(&unit.tests);
            continue;
        }
        let mut tests = unit.tests.clone();
        tests.sort_by(|&a, &b| cost[b].total_cmp(&cost[a]).then(a.cmp(&b)));
        for test in tests {
            let to = least(&loads);
            loads[to] += cost[test];
            parts[to].push(test);
        }
    }
    for part in &mut parts {
        part.sort_unstable();
    }
    parts
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::durations::DurationStore;

    fn item(nodeid: &str) -> CollectedItem {
        let file = nodeid.split("::").next().unwrap().to_owned();
        serde_json::from_value(serde_json::json!({
            "nodeid": nodeid, "file": file, "scope": file, "group": null,
        }))
        .unwrap()
    }

    fn env<'a>(vars: &'a [(&'a str, &'a str)]) -> impl Fn(&str) -> Option<String> + 'a {
        move |name| {
            vars.iter()
                .find(|(n, _)| *n == name)
                .map(|(_, v)| v.to_string())
        }
    }

    fn auto(vars: &[(&str, &str)]) -> Result<ShardChoice, ShardError> {
        ShardSpec::Auto.choose(env(vars))
    }

    #[test]
    fn k_of_n_parses_from_one_and_rejects_the_rest() {
        assert_eq!(
            "2/4".parse(),
            Ok(ShardSpec::Given(Shard { index: 2, total: 4 }))
        );
        assert_eq!("auto".parse(), Ok(ShardSpec::Auto));
        for bad in ["0/4", "5/4", "1/0", "2", "a/b", "-1/2", "1/2/3", ""] {
            assert!(bad.parse::<ShardSpec>().is_err(), "{bad}");
        }
    }

    #[test]
    fn every_ci_s_variables_map_to_the_same_shard() {
        let second_of_four = Shard { index: 2, total: 4 };
        let cases: [(&[(&str, &str)], &str); 6] = [
            (
                &[("CI_NODE_INDEX", "2"), ("CI_NODE_TOTAL", "4")],
                "CI_NODE_INDEX/CI_NODE_TOTAL",
            ),
            (
                &[("CIRCLE_NODE_INDEX", "1"), ("CIRCLE_NODE_TOTAL", "4")],
                "CIRCLE_NODE_INDEX/CIRCLE_NODE_TOTAL",
            ),
            (
                &[
                    ("BUILDKITE_PARALLEL_JOB", "1"),
                    ("BUILDKITE_PARALLEL_JOB_COUNT", "4"),
                ],
                "BUILDKITE_PARALLEL_JOB/BUILDKITE_PARALLEL_JOB_COUNT",
            ),
            (
                &[("TEST_SHARD_INDEX", "1"), ("TEST_TOTAL_SHARDS", "4")],
                "TEST_SHARD_INDEX/TEST_TOTAL_SHARDS",
            ),
            (
                &[("JOB_COMPLETION_INDEX", "1"), ("SHOAL_SHARD_TOTAL", "4")],
                "JOB_COMPLETION_INDEX/SHOAL_SHARD_TOTAL",
            ),
            (&[("SHOAL_SHARD", "2/4")], "SHOAL_SHARD"),
        ];
        for (vars, from) in cases {
            let choice = auto(vars).unwrap();
            assert_eq!((choice.shard, choice.from), (second_of_four, Some(from)));
        }
    }

    #[test]
    fn the_first_ci_in_order_wins_and_bazel_s_status_file_is_kept() {
        let choice = auto(&[
            ("SHOAL_SHARD", "1/2"),
            ("TEST_SHARD_INDEX", "0"),
            ("TEST_TOTAL_SHARDS", "3"),
            ("TEST_SHARD_STATUS_FILE", "/tmp/status"),
        ])
        .unwrap();
        assert_eq!(choice.shard, Shard { index: 1, total: 3 });
        assert_eq!(choice.status_file, Some(PathBuf::from("/tmp/status")));
        let gitlab = auto(&[
            ("CI_NODE_INDEX", "1"),
            ("CI_NODE_TOTAL", "2"),
            ("TEST_SHARD_STATUS_FILE", "/tmp/status"),
        ]);
        assert_eq!(gitlab.unwrap().status_file, None);
    }

    #[test]
    fn missing_or_bad_variables_are_errors_never_a_full_run() {
        assert_eq!(auto(&[]), Err(ShardError::NoVariables));
        let half = auto(&[("CIRCLE_NODE_INDEX", "0")]).unwrap_err().to_string();
        assert!(
            half.contains("CIRCLE_NODE_INDEX is set, CIRCLE_NODE_TOTAL is not"),
            "{half}"
        );
        // GitLab counts from 1: 0 is no shard; CircleCI counts from 0: 4 of 4 is none.
        assert!(auto(&[("CI_NODE_INDEX", "0"), ("CI_NODE_TOTAL", "4")]).is_err());
        let past = auto(&[("CIRCLE_NODE_INDEX", "4"), ("CIRCLE_NODE_TOTAL", "4")]);
        assert!(past.unwrap_err().to_string().contains("counts from 0"));
        assert!(auto(&[("SHOAL_SHARD", "3")]).is_err());
    }

    /// Which shard each test went to.
    fn owners(parts: &[Vec<usize>], tests: usize) -> Vec<usize> {
        let mut owner = vec![usize::MAX; tests];
        for (shard, part) in parts.iter().enumerate() {
            for &test in part {
                assert_eq!(owner[test], usize::MAX, "test {test} in two shards");
                owner[test] = shard;
            }
        }
        assert!(owner.iter().all(|&o| o != usize::MAX), "a test in no shard");
        owner
    }

    fn suite(files: usize, per_file: usize) -> Vec<CollectedItem> {
        (0..files * per_file)
            .map(|i| item(&format!("t{}.py::test_{i}", i / per_file)))
            .collect()
    }

    #[test]
    fn without_history_shards_balance_by_count_and_modules_stay_whole() {
        let items = suite(12, 5);
        let units = units(Dist::Load, &items).unwrap();
        let parts = partition(&units, &Expected::new(None, &items).seconds, 4);
        assert_eq!(
            parts.iter().map(Vec::len).collect::<Vec<_>>(),
            [15, 15, 15, 15]
        );
        let owner = owners(&parts, items.len());
        // 60 tests in files of 5 over 4 shards of 15: no file needs splitting.
        for file in owner.chunks(5) {
            assert!(file.iter().all(|&o| o == file[0]), "{file:?}");
        }
    }

    #[test]
    fn a_module_too_long_for_one_shard_is_split_under_load_only() {
        let items = suite(2, 10);
        let mut cost = vec![1.0; 20];
        cost[..10].fill(10.0); // t0.py: 100 s, t1.py: 10 s
        let load = partition(&units(Dist::Load, &items).unwrap(), &cost, 2);
        let loads: Vec<f64> = load
            .iter()
            .map(|p| p.iter().map(|&i| cost[i]).sum())
            .collect();
        assert_eq!(loads, [55.0, 55.0]);
        let file = partition(&units(Dist::LoadFile, &items).unwrap(), &cost, 2);
        assert_eq!(file, [(0..10).collect::<Vec<_>>(), (10..20).collect()]);
    }

    #[test]
    fn history_balances_by_time_and_new_tests_count_the_mean() {
        let items = suite(8, 1);
        let dir = tempfile::tempdir().unwrap();
        let durations: serde_json::Map<String, serde_json::Value> = (0..7)
            .map(|i| {
                (
                    format!("t{i}.py::test_{i}"),
                    serde_json::json!(i as f64 + 1.0),
                )
            })
            .collect();
        std::fs::write(
            dir.path().join(".test_durations"),
            serde_json::to_string(&durations).unwrap(),
        )
        .unwrap();
        let store = DurationStore::from_pytest_split(dir.path());
        let cost = Expected::new(Some(&store), &items).seconds;
        assert_eq!(cost[7], 4.0, "the mean of 1..=7");
        let parts = partition(&units(Dist::Load, &items).unwrap(), &cost, 2);
        let loads: Vec<f64> = parts
            .iter()
            .map(|p| p.iter().map(|&i| cost[i]).sum())
            .collect();
        assert_eq!(loads, [16.0, 16.0]);
    }

    #[test]
    fn serial_tests_go_to_one_shard_with_their_units_under_the_scope_modes() {
        let mut items = suite(6, 2);
        items[1].serial = true;
        items[9].serial = true;
        let load = partition(&units(Dist::Load, &items).unwrap(), &[1.0; 12], 3);
        let owner = owners(&load, 12);
        assert_eq!(owner[1], owner[9]);
        let file = partition(&units(Dist::LoadFile, &items).unwrap(), &[1.0; 12], 3);
        let owner = owners(&file, 12);
        assert!([0, 1, 8, 9].iter().all(|&i| owner[i] == owner[1]));
    }

    #[test]
    fn groups_stay_whole_and_the_rest_splits_like_load() {
        let mut items = suite(1, 6);
        for i in [0, 3, 5] {
            items[i].group = Some("db".into());
        }
        let parts = partition(&units(Dist::LoadGroup, &items).unwrap(), &[1.0; 6], 2);
        let owner = owners(&parts, 6);
        assert!(owner[0] == owner[3] && owner[3] == owner[5]);
        assert_eq!(parts.iter().map(Vec::len).collect::<Vec<_>>(), [3, 3]);
    }

    #[test]
    fn each_and_no_cannot_be_sharded() {
        let items = suite(1, 2);
        assert!(units(Dist::Each, &items).is_err());
        assert!(units(Dist::No, &items).is_err());
    }

    #[test]
    fn more_shards_than_tests_leaves_some_empty() {
        let items = suite(1, 2);
        let parts = partition(&units(Dist::Load, &items).unwrap(), &[1.0; 2], 3);
        assert_eq!(parts, [vec![0], vec![1], vec![]]);
    }

    #[test]
    fn keeping_modules_whole_never_costs_more_than_the_tolerance() {
        // Pseudo-random suites: module sizes and test times from a fixed generator.
        let mut state = 0x2545_f491_4f6c_dd1d_u64;
        let mut next = move |n: u64| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state % n
        };
        for _ in 0..50 {
            let mut items = Vec::new();
            for module in 0..(2 + next(30)) {
                for test in 0..(1 + next(40)) {
                    items.push(item(&format!("m{module}.py::t{test}")));
                }
            }
            let cost: Vec<f64> = (0..items.len())
                .map(|_| [0.001, 0.01, 0.1, 1.0][next(4) as usize] * (1 + next(9)) as f64)
                .collect();
            let units = units(Dist::Load, &items).unwrap();
            let singles: Vec<Unit> = (0..items.len())
                .map(|t| Unit {
                    tests: vec![t],
                    splittable: false,
                })
                .collect();
            for shards in [2, 3, 4, 8] {
                let longest = |parts: &[Vec<usize>]| {
                    parts
                        .iter()
                        .map(|p| p.iter().map(|&i| cost[i]).sum::<f64>())
                        .fold(0.0, f64::max)
                };
                let ours = longest(&partition(&units, &cost, shards));
                let by_test = longest(&assign(&singles, &cost, shards));
                assert!(ours <= by_test * (1.0 + KEEP_TOGETHER_TOLERANCE) + 1e-9);
                owners(&partition(&units, &cost, shards), items.len());
            }
        }
    }
}
