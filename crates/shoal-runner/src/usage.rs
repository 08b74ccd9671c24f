//! The controller's own resource use: CPU time and peak resident memory, read from
//! `/proc/self` as a run ends and written into `--report-json`'s `run_end`. A benchmark
//! cannot get these from outside: the figures `wait4` gives a parent for shoal include every
//! child shoal reaped (the collector, so every worker), and the peak RSS of a process is
//! gone once it exits. Linux only; elsewhere there is nothing to read and the figures are
//! absent.

use serde::Serialize;

/// The controller process's figures so far (all its threads together).
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct ControllerUsage {
    /// CPU seconds in user mode.
    pub user: f64,
    /// CPU seconds in the kernel.
    pub system: f64,
    /// The most resident memory the process has had (`VmHWM`), in bytes.
    pub peak_rss: u64,
}

impl ControllerUsage {
    /// This process's figures, or `None` where `/proc/self` cannot be read or parsed.
    pub fn current() -> Option<Self> {
        let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
        let status = std::fs::read_to_string("/proc/self/status").ok()?;
        Self::parse(&stat, &status, rustix::param::clock_ticks_per_second())
    }

    /// Reads `utime` and `stime` (fields 14 and 15, in clock ticks) from a `stat` line and
    /// `VmHWM` from a `status` file.
    fn parse(stat: &str, status: &str, ticks_per_second: u64) -> Option<Self> {
        // Field 2, the command name, may hold spaces and parentheses: count after its last ')'.
        let mut fields = stat[stat.rfind(')')? + 1..].split_whitespace();
        // The first field after the name is field 3, so field 14 is the twelfth.
        let utime: u64 = fields.nth(11)?.parse().ok()?;
        let stime: u64 = fields.next()?.parse().ok()?;
        let peak_kib: u64 = status
            .lines()
            .find_map(|line| line.strip_prefix("VmHWM:"))?
            .trim()
            .strip_suffix("kB")?
            .trim()
            .parse()
            .ok()?;
        let ticks = ticks_per_second as f64;
        Some(Self {
            user: utime as f64 / ticks,
            system: stime as f64 / ticks,
            peak_rss: peak_kib * 1024,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::ControllerUsage;

    const STATUS: &str =
        "Name:\tshoal\nVmPeak:\t  20000 kB\nVmHWM:\t    7340 kB\nVmRSS:\t    7000 kB\n";

    #[test]
    fn reads_cpu_ticks_and_the_high_water_mark() {
        // A name with a space and a ')' in it, which a plain split would miscount.
        let stat = "4242 (sh oal)) S 1 4242 4242 0 -1 4194304 100 0 0 0 250 40 3 1 20 0 5 0";
        assert_eq!(
            ControllerUsage::parse(stat, STATUS, 100),
            Some(ControllerUsage {
                user: 2.5,
                system: 0.4,
                peak_rss: 7340 * 1024
            })
        );
    }

    #[test]
    fn missing_fields_give_none() {
        assert_eq!(
            ControllerUsage::parse("4242 (shoal) S 1", STATUS, 100),
            None
        );
        let stat = "1 (shoal) S 1 1 1 0 -1 0 0 0 0 0 5 5 0 0";
        assert_eq!(ControllerUsage::parse(stat, "Name:\tshoal\n", 100), None);
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn this_process_has_figures() {
        let usage = ControllerUsage::current().expect("/proc/self is readable on Linux");
        assert!(usage.peak_rss > 0);
    }
}
