//! shoal's integration tests, one binary: each module runs the built `shoal` on small pytest
//! projects (`tests/fixtures/`) and checks outcomes, exit codes, reports and what each worker
//! ran. `common` holds the shared helpers, `faults` those of the fault tests.

mod common;
mod faults;

mod bad_input;
mod config;
mod debugger;
mod distribution;
mod exit_codes;
mod failures;
mod failures_random;
mod fork_state;
mod interpreter;
mod leaks;
mod outcomes;
mod plugins;
mod postgres;
mod privacy;
mod processes;
mod pytest_n;
mod queue;
mod recycling;
mod replay;
mod reports;
mod run_once;
mod serial;
mod session_exit;
mod sharding;
mod shared_setup;
mod shuffle;
mod snapshots;
mod start_methods;
mod stopping;
mod suspend;
mod teardown;
mod terminal;
mod timeline;
mod triage;
mod xdist_contract;
mod xdist_flags;
mod xdist_hooks;
