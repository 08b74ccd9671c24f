//! How many workers a run gets: `-n N`, `-n auto`, `-n logical`, capped by `--maxprocesses`.

use std::{fmt, num::NonZeroUsize, str::FromStr};

/// The environment variable pytest-xdist reads to override `auto` and `logical`.
pub const AUTO_WORKERS_ENV: &str = "PYTEST_XDIST_AUTO_NUM_WORKERS";

/// The `-n` argument as written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WorkerCount {
    /// An exact number; `0` means one worker that looks like plain pytest.
    Fixed(usize),
    /// The CPUs this process may use: affinity mask and cgroup CPU quota.
    Auto,
    /// Every logical CPU of the machine, ignoring affinity and quotas.
    Logical,
}

/// `-n` was not a number, `auto` or `logical`.
#[derive(Debug, thiserror::Error)]
#[error("parse -n value {value:?}: expected a number of workers (0 or more), 'auto' or 'logical'")]
pub struct WorkerCountError {
    value: String,
}

impl FromStr for WorkerCount {
    type Err = WorkerCountError;

    fn from_str(value: &str) -> Result<Self, Self::Err> {
        match value.trim() {
            "auto" => Ok(Self::Auto),
            "logical" => Ok(Self::Logical),
            n => n.parse().map(Self::Fixed).map_err(|_| WorkerCountError {
                value: value.to_owned(),
            }),
        }
    }
}

impl fmt::Display for WorkerCount {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Fixed(n) => write!(f, "{n}"),
            Self::Auto => f.write_str("auto"),
            Self::Logical => f.write_str("logical"),
        }
    }
}

impl WorkerCount {
    /// The number of workers asked for, before capping by the work available.
    ///
    /// `0` stays `0`: the caller runs one undistributed worker for it. `from_hook` is what a
    /// plugin's `pytest_xdist_auto_num_workers` returned: as under xdist, it decides `auto`
    /// and `logical` before the environment variable and the CPU count.
    pub fn resolve(self, maxprocesses: Option<usize>, from_hook: Option<usize>) -> usize {
        let wanted = match self {
            Self::Fixed(n) => return n.min(maxprocesses.unwrap_or(usize::MAX)),
            Self::Auto => from_hook.or_else(env_override).unwrap_or_else(usable_cpus),
            Self::Logical => from_hook.or_else(env_override).unwrap_or_else(logical_cpus),
        };
        wanted.clamp(1, maxprocesses.unwrap_or(usize::MAX).max(1))
    }
}

fn env_override() -> Option<usize> {
    std::env::var(AUTO_WORKERS_ENV).ok()?.trim().parse().ok()
}

/// The standard library already honours the affinity mask and the cgroup CPU quota here.
fn usable_cpus() -> usize {
    std::thread::available_parallelism().map_or(1, NonZeroUsize::get)
}

/// Every online CPU, whatever this process may use: the kernel's list of them (`0-3,8`).
fn logical_cpus() -> usize {
    std::fs::read_to_string("/sys/devices/system/cpu/online")
        .ok()
        .and_then(|list| cpu_list_len(list.trim()))
        .filter(|&n| n > 0)
        .unwrap_or_else(usable_cpus)
}

/// How many CPUs a kernel CPU list names (`0-3,8` is five).
fn cpu_list_len(list: &str) -> Option<usize> {
    list.split(',').try_fold(0, |count, range| {
        let (first, last) = range.split_once('-').unwrap_or((range, range));
        let (first, last): (usize, usize) = (first.parse().ok()?, last.parse().ok()?);
        Some(count + last.checked_sub(first)? + 1)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kernel_cpu_lists_count_every_cpu() {
        assert_eq!(cpu_list_len("0"), Some(1));
        assert_eq!(cpu_list_len("0-3,8"), Some(5));
        assert_eq!(cpu_list_len("0-1,4-5,7"), Some(5));
        assert_eq!(cpu_list_len("3-1"), None);
        assert_eq!(cpu_list_len(""), None);
    }

    #[test]
    fn parses_what_xdist_accepts() {
        assert_eq!("4".parse::<WorkerCount>().unwrap(), WorkerCount::Fixed(4));
        assert_eq!("0".parse::<WorkerCount>().unwrap(), WorkerCount::Fixed(0));
        assert_eq!("auto".parse::<WorkerCount>().unwrap(), WorkerCount::Auto);
        assert_eq!(
            "logical".parse::<WorkerCount>().unwrap(),
            WorkerCount::Logical
        );
        for bad in ["-3", "abc", "", "2.5"] {
            let err = bad.parse::<WorkerCount>().unwrap_err().to_string();
            assert!(err.contains("expected a number of workers"), "{bad}: {err}");
        }
    }

    #[test]
    fn maxprocesses_caps_every_form() {
        assert_eq!(WorkerCount::Fixed(8).resolve(Some(3), None), 3);
        assert_eq!(WorkerCount::Fixed(0).resolve(Some(3), None), 0);
        assert!(WorkerCount::Auto.resolve(Some(1), None) == 1);
        assert!(
            WorkerCount::Logical.resolve(None, None) >= WorkerCount::Auto.resolve(None, None),
            "logical counts every online CPU, auto only those this process may use"
        );
        assert_eq!(WorkerCount::Auto.resolve(None, Some(5)), 5);
        assert_eq!(WorkerCount::Logical.resolve(Some(2), Some(5)), 2);
        assert_eq!(WorkerCount::Fixed(3).resolve(None, Some(5)), 3);
    }
}
