//! Whatever messages workers send, once checked as the dispatcher checks them, the scheduler
//! and the run-once bookkeeping never panic nor hand out a test outside the collection. The
//! first byte picks the `--dist` mode and the collection's size; every frame after it is one
//! message, from worker 0 or 1 in turn. Run with `cargo +nightly fuzz run worker_messages`.
#![no_main]

use libfuzzer_sys::fuzz_target;
use shoal_runner::{dispatcher::drive_bookkeeping, options::Dist};

fuzz_target!(|data: &[u8]| {
    let Some((&first, frames)) = data.split_first() else {
        return;
    };
    let dist = [Dist::Load, Dist::WorkSteal, Dist::LoadFile, Dist::Each][usize::from(first % 4)];
    let tests = 1 + usize::from(first >> 2);
    let messages = shoal_protocol::decode_all(frames)
        .into_iter()
        .map_while(Result::ok)
        .enumerate();
    drive_bookkeeping(dist, tests, 2, messages);
});
