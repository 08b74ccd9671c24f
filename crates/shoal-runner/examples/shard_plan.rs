//! Prints the partition `--shard` computes, for `bench/shard_balance.py`: reads from stdin
//! `{"dist": "load", "shards": [2, 4], "items": [{"nodeid", "file", "scope", "group"}],
//! "durations": {nodeid: seconds}}` and writes `{"2": [[index, ...], [...]], "4": ...}`,
//! each shard's collection indices. The split is shoal's own code, with the durations given
//! as pytest-split's `.test_durations`.

use std::{collections::BTreeMap, io::Read};

use serde::Deserialize;
use shoal_protocol::CollectedItem;
use shoal_runner::{
    durations::{DurationStore, Expected},
    options, shard,
};

#[derive(Deserialize)]
struct Input {
    dist: String,
    shards: Vec<usize>,
    items: Vec<CollectedItem>,
    durations: BTreeMap<String, f64>,
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut text = String::new();
    std::io::stdin().read_to_string(&mut text)?;
    let input: Input = serde_json::from_str(&text)?;
    let dir = tempfile::tempdir()?;
    std::fs::write(
        dir.path().join(".test_durations"),
        serde_json::to_string(&input.durations)?,
    )?;
    let store = DurationStore::from_pytest_split(dir.path());
    let units = shard::units(options::choice("dist", &input.dist)?, &input.items)?;
    let costs = Expected::new(Some(&store), &input.items).seconds;
    let plans: BTreeMap<String, Vec<Vec<usize>>> = input
        .shards
        .iter()
        .map(|&n| (n.to_string(), shard::partition(&units, &costs, n)))
        .collect();
    println!("{}", serde_json::to_string(&plans)?);
    Ok(())
}
