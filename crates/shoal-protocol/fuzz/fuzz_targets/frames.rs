//! Whatever a worker sends, the controller's frame reader must answer with messages or an
//! error, never a panic. Run with `cargo +nightly fuzz run frames` from crates/shoal-protocol.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = shoal_protocol::decode_all(data);
});
