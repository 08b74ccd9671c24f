//! The order in which units go out, from recorded durations.
//!
//! A run ends when its last worker does, so the long tests must start early: a long test that
//! comes last in collection order holds the run up while the other workers idle. With a
//! history, [`order`] puts the long poles first (longest processing time first) and leaves the
//! rest in collection order, which keeps neighbouring tests, which tend to share fixtures and
//! state, together as before; under the scope modes whole units go longest first. A module
//! whose fixture is expensive stays on one worker under `load`, where spreading it would pay
//! the fixture once per worker. A wrong or stale history only changes the order: every unit
//! stays whole and every test is handed out once.

use std::collections::BTreeMap;

use shoal_protocol::CollectedItem;

use crate::{durations::Expected, options::Dist};

/// The share of a worker's fair part of the run (total / workers) from which a unit is a long
/// pole, handed out first...
const LONG_POLE: f64 = 0.1;

/// ...if it also takes this many seconds: a short test that starts last delays the run by
/// little, and moving it would undo, for nothing, the order pytest's options (`--ff`, `--nf`)
/// or the suite's author chose.
const LONG_POLE_SECONDS: f64 = 0.25;

/// The share of a module's time its first test's extra setup (its module fixtures) must make
/// up for the module to stay on one worker under `load`...
const EXPENSIVE_SCOPE: f64 = 0.25;

/// ...and the seconds it must take: below that, paying the fixture once more on another worker
/// costs less than the noise in the timings it is read from (a busy machine makes the first
/// test of a module of tiny tests look expensive), and keeping the module together would move
/// its tests away from the order pytest's options (`--ff`, `--nf`) chose.
const EXPENSIVE_SCOPE_SECONDS: f64 = 0.1;

/// `units` (as [`super::units`] made them, for `dist`) in the order to hand them out, given
/// each test's expected seconds; without history (`expected.known == 0`) they stay as they
/// are. `reorder` is xdist's `--loadscope-reorder`: without it the scope modes keep
/// collection order.
pub fn order(
    dist: Dist,
    units: Vec<Vec<usize>>,
    items: &[CollectedItem],
    expected: &Expected,
    workers: usize,
    reorder: bool,
) -> Vec<Vec<usize>> {
    if expected.known == 0 {
        return units;
    }
    let seconds = |unit: &Vec<usize>| unit.iter().map(|&t| expected.seconds[t]).sum::<f64>();
    let total: f64 = units.iter().map(seconds).sum();
    let share = total / workers.max(1) as f64;
    match dist {
        Dist::Load => {
            let units = keep_expensive_modules(units, items, expected, share);
            let (mut long, rest): (Vec<_>, Vec<_>) = units
                .into_iter()
                .partition(|unit| seconds(unit) >= (LONG_POLE * share).max(LONG_POLE_SECONDS));
            long.sort_by(|a, b| seconds(b).total_cmp(&seconds(a)).then(a[0].cmp(&b[0])));
            long.extend(rest);
            long
        }
        Dist::LoadScope | Dist::LoadFile | Dist::LoadGroup if reorder => {
            let mut units = units;
            // Stable: equal times keep the order they came in.
            units.sort_by(|a, b| seconds(b).total_cmp(&seconds(a)));
            units
        }
        _ => units,
    }
}

/// Under `load`, the tests of each module whose fixtures are expensive (its first test's
/// setup takes more than [`EXPENSIVE_SCOPE`] of the module's time beyond the others'), as one
/// unit, where the module fits a worker's share; every other test stays a unit of its own.
fn keep_expensive_modules(
    units: Vec<Vec<usize>>,
    items: &[CollectedItem],
    expected: &Expected,
    share: f64,
) -> Vec<Vec<usize>> {
    let mut modules: BTreeMap<&str, Vec<usize>> = BTreeMap::new();
    for &test in units.iter().flatten() {
        modules
            .entry(items[test].file.as_str())
            .or_default()
            .push(test);
    }
    let whole: Vec<Vec<usize>> = modules
        .into_values()
        .filter(|tests| {
            let time: f64 = tests.iter().map(|&t| expected.seconds[t]).sum();
            let mut others: Vec<f64> = tests[1..].iter().map(|&t| expected.setup[t]).collect();
            others.sort_by(f64::total_cmp);
            let usual = others.get(others.len() / 2).copied().unwrap_or(0.0);
            let fixture = expected.setup[tests[0]] - usual;
            tests.len() > 1
                && time <= share
                && fixture >= (EXPENSIVE_SCOPE * time).max(EXPENSIVE_SCOPE_SECONDS)
        })
        .collect();
    let mut kept = vec![false; items.len()];
    for &test in whole.iter().flatten() {
        kept[test] = true;
    }
    let mut out: Vec<Vec<usize>> = units
        .into_iter()
        .filter(|unit| !unit.iter().any(|&t| kept[t]))
        .chain(whole)
        .collect();
    out.sort_by_key(|unit| unit[0]);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn items(files: &[(&str, usize)]) -> Vec<CollectedItem> {
        files
            .iter()
            .flat_map(|&(file, n)| (0..n).map(move |i| format!("{file}::test_{i}")))
            .map(|nodeid| {
                let file = nodeid.split("::").next().unwrap().to_owned();
                serde_json::from_value(serde_json::json!({
                    "nodeid": nodeid, "file": file, "scope": file, "group": null,
                }))
                .unwrap()
            })
            .collect()
    }

    fn expected(seconds: &[f64], setup: &[f64]) -> Expected {
        Expected {
            seconds: seconds.to_vec(),
            setup: setup.to_vec(),
            known: seconds.len(),
        }
    }

    fn singles(n: usize) -> Vec<Vec<usize>> {
        (0..n).map(|i| vec![i]).collect()
    }

    #[test]
    fn long_poles_go_first_and_the_rest_keeps_collection_order() {
        let items = items(&[("a.py", 6)]);
        let seconds = [0.1, 0.1, 5.0, 0.1, 3.0, 0.1];
        let order = order(
            Dist::Load,
            singles(6),
            &items,
            &expected(&seconds, &[0.0; 6]),
            2,
            true,
        );
        assert_eq!(order, [[2], [4], [0], [1], [3], [5]]);
    }

    #[test]
    fn without_history_nothing_moves() {
        let items = items(&[("a.py", 3)]);
        let none = Expected::new(None, &items);
        assert_eq!(
            order(Dist::Load, singles(3), &items, &none, 2, true),
            singles(3)
        );
    }

    #[test]
    fn a_module_with_an_expensive_fixture_stays_whole_under_load() {
        // b.py's first test sets up a 2 s module fixture; a.py's tests are alike.
        let items = items(&[("a.py", 3), ("b.py", 3)]);
        let seconds = [2.0, 2.0, 2.0, 2.1, 0.1, 0.1];
        let setup = [0.01, 0.01, 0.01, 2.0, 0.01, 0.01];
        let order = order(
            Dist::Load,
            singles(6),
            &items,
            &expected(&seconds, &setup),
            2,
            true,
        );
        assert_eq!(order, [vec![3, 4, 5], vec![0], vec![1], vec![2]]);
    }

    #[test]
    fn a_fixture_of_a_few_milliseconds_keeps_nothing_together() {
        // b.py's first test looks expensive next to its tiny neighbours, but its extra 20 ms
        // are noise: the tests keep their order (here --ff's, which put b.py's failures first).
        let items = items(&[("b.py", 2), ("a.py", 2), ("b.py", 1)]);
        let seconds = [0.03, 0.001, 0.001, 0.001, 0.001];
        let setup = [0.021, 0.0005, 0.0005, 0.0005, 0.0005];
        let order = order(
            Dist::Load,
            singles(5),
            &items,
            &expected(&seconds, &setup),
            1,
            true,
        );
        assert_eq!(order, singles(5));
    }

    #[test]
    fn a_module_longer_than_a_worker_s_share_is_spread_whatever_its_fixture() {
        let items = items(&[("a.py", 1), ("b.py", 3)]);
        let seconds = [0.1, 3.0, 1.0, 1.0];
        let setup = [0.0, 2.0, 0.0, 0.0];
        let order = order(
            Dist::Load,
            singles(4),
            &items,
            &expected(&seconds, &setup),
            2,
            true,
        );
        assert_eq!(order, [[1], [2], [3], [0]]);
    }

    #[test]
    fn scope_units_go_longest_first_unless_reorder_is_off() {
        let items = items(&[("a.py", 2), ("b.py", 1), ("c.py", 2)]);
        let units = vec![vec![0, 1], vec![2], vec![3, 4]];
        let history = expected(&[1.0, 1.0, 5.0, 0.5, 0.5], &[0.0; 5]);
        let ordered = order(Dist::LoadFile, units.clone(), &items, &history, 2, true);
        assert_eq!(ordered, [vec![2], vec![0, 1], vec![3, 4]]);
        let kept = order(Dist::LoadFile, units.clone(), &items, &history, 2, false);
        assert_eq!(kept, units);
    }

    #[test]
    fn every_test_is_handed_out_once_whatever_the_history() {
        let items = items(&[("a.py", 4), ("b.py", 4)]);
        for history in [
            expected(
                &[9.0, 0.0, 0.0, 1.0, 0.0, 7.0, 7.0, 7.0],
                &[9.0, 0.0, 0.0, 0.0, 5.0, 0.0, 0.0, 0.0],
            ),
            expected(&[0.0; 8], &[0.0; 8]),
        ] {
            for dist in [Dist::Load, Dist::LoadFile, Dist::WorkSteal] {
                let units = super::super::units(dist, &items, true);
                let mut out: Vec<usize> = order(dist, units, &items, &history, 3, true)
                    .into_iter()
                    .flatten()
                    .collect();
                out.sort_unstable();
                assert_eq!(out, (0..8).collect::<Vec<_>>(), "{dist:?}");
            }
        }
    }
}
