//! `--shuffle[=SEED]`: the units in an order drawn from a seed.
//!
//! A test that passes alone and fails beside others is found by running it beside others in
//! many orders, and fixed once one of those orders can be had again. So the order comes from
//! a printed seed alone, through a generator of shoal's own (SplitMix64 and Fisher-Yates,
//! fixed here rather than taken from a crate whose algorithm may change between versions):
//! the same seed gives the same order on every machine and every shoal version. Only the
//! order of the units changes; the tests inside one (a file under `loadfile`, an
//! `xdist_group`) keep theirs, since they share fixtures and the `--dist` mode promised to
//! keep them together as they are.

/// SplitMix64 (Steele, Lea and Flood), the generator `java.util.SplittableRandom` and
/// xoshiro's seeding use: one word of state, every seed (0 included) a good stream.
struct SplitMix64(u64);

impl SplitMix64 {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// A number below `n` (Lemire's multiply-shift; its bias is below 2^-40 for any list of
    /// tests there could be, which no shuffle of a test suite can notice).
    fn below(&mut self, n: usize) -> usize {
        ((u128::from(self.next()) * n as u128) >> 64) as usize
    }
}

/// `units` in the order `seed` draws: a Fisher-Yates shuffle of the units, each kept whole.
pub fn shuffle(mut units: Vec<Vec<usize>>, seed: u64) -> Vec<Vec<usize>> {
    let mut random = SplitMix64(seed);
    for last in (1..units.len()).rev() {
        let other = random.below(last + 1);
        units.swap(last, other);
    }
    units
}

/// A seed for a run that was given none: 32 bits, as pytest-randomly draws them, short
/// enough to read off a log and type again.
pub fn new_seed() -> u64 {
    u64::from(uuid::Uuid::new_v4().as_u128() as u32)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn singles(n: usize) -> Vec<Vec<usize>> {
        (0..n).map(|i| vec![i]).collect()
    }

    #[test]
    fn the_same_seed_gives_the_same_order_and_another_seed_another() {
        let one = shuffle(singles(20), 12345);
        assert_eq!(one, shuffle(singles(20), 12345));
        assert_ne!(one, shuffle(singles(20), 54321));
        assert_ne!(one, singles(20), "a shuffle of 20 tests that moved none");
    }

    #[test]
    fn the_order_is_fixed_for_good_by_the_seed() {
        // A printed seed must reproduce a run with a later shoal too: this order is part of
        // shoal's promise, and a change to the generator breaks every recorded seed.
        let order: Vec<usize> = shuffle(singles(8), 1).into_iter().flatten().collect();
        assert_eq!(order, [0, 3, 7, 1, 2, 6, 5, 4]);
    }

    #[test]
    fn units_stay_whole_and_every_test_goes_out_once() {
        let units = vec![vec![0, 1, 2], vec![3], vec![4, 5], vec![6, 7, 8, 9]];
        for seed in 0..50 {
            let shuffled = shuffle(units.clone(), seed);
            assert_eq!(shuffled.len(), units.len());
            for unit in &units {
                assert!(shuffled.contains(unit), "seed {seed}: {unit:?} was split");
            }
        }
    }

    #[test]
    fn nothing_and_one_unit_shuffle_to_themselves() {
        assert!(shuffle(Vec::new(), 7).is_empty());
        assert_eq!(shuffle(vec![vec![3, 1]], 7), [vec![3, 1]]);
    }
}
