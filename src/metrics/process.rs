//! The standard `process_*` metrics (client_golang's names), read from `/proc/self` on each
//! scrape: CPU seconds, resident and virtual memory, open and maximum file descriptors, and the
//! start time. Elsewhere than Linux nothing is exported.

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;

/// Linux's USER_HZ: `/proc` reports CPU time in these ticks (100 on every architecture Linux
/// exports to user space).
const TICKS_PER_SECOND: f64 = 100.0;

#[derive(Debug)]
pub(super) struct ProcessCollector;

/// What `/proc/self` says now.
#[derive(Debug, Default, PartialEq)]
pub(super) struct ProcessFacts {
    pub cpu_seconds: f64,
    pub resident_bytes: f64,
    pub virtual_bytes: f64,
    pub open_fds: f64,
    pub max_fds: f64,
    pub start_time_seconds: f64,
}

impl ProcessFacts {
    pub(super) fn read() -> Option<Self> {
        let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
        let status = std::fs::read_to_string("/proc/self/status").ok()?;
        let limits = std::fs::read_to_string("/proc/self/limits").unwrap_or_default();
        let boot = std::fs::read_to_string("/proc/stat").unwrap_or_default();
        let open_fds = std::fs::read_dir("/proc/self/fd").map_or(0, Iterator::count);
        Self::parse(&stat, &status, &limits, &boot, open_fds)
    }

    /// From the texts of `/proc/self/stat`, `/proc/self/status`, `/proc/self/limits` and
    /// `/proc/stat`.
    pub(super) fn parse(
        stat: &str,
        status: &str,
        limits: &str,
        boot: &str,
        open_fds: usize,
    ) -> Option<Self> {
        // The command name (field 2) is in parentheses and may hold spaces: count after it.
        let fields: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
        let field = |n: usize| -> Option<f64> { fields.get(n - 3)?.parse().ok() };
        let kib = |key: &str| -> Option<f64> {
            let line = status.lines().find(|l| l.starts_with(key))?;
            Some(line.split_whitespace().nth(1)?.parse::<f64>().ok()? * 1024.0)
        };
        let max_fds = limits
            .lines()
            .find(|l| l.starts_with("Max open files"))
            .and_then(|l| l.split_whitespace().nth(3))
            .and_then(|v| v.parse().ok())
            .unwrap_or(0.0);
        let btime: f64 = boot
            .lines()
            .find_map(|l| l.strip_prefix("btime "))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or(0.0);
        Some(Self {
            cpu_seconds: (field(14)? + field(15)?) / TICKS_PER_SECOND,
            resident_bytes: kib("VmRSS:").unwrap_or(0.0),
            virtual_bytes: kib("VmSize:").unwrap_or(0.0),
            open_fds: open_fds as f64,
            max_fds,
            start_time_seconds: btime + field(22)? / TICKS_PER_SECOND,
        })
    }
}

impl Collector for ProcessCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let Some(facts) = ProcessFacts::read() else {
            return Ok(());
        };
        let cpu = ConstCounter::new(facts.cpu_seconds);
        cpu.encode(encoder.encode_descriptor(
            "process_cpu_seconds",
            "Total user and system CPU time spent in seconds",
            None,
            cpu.metric_type(),
        )?)?;
        for (name, help, value) in [
            (
                "process_resident_memory_bytes",
                "Resident memory size in bytes",
                facts.resident_bytes,
            ),
            (
                "process_virtual_memory_bytes",
                "Virtual memory size in bytes",
                facts.virtual_bytes,
            ),
            (
                "process_open_fds",
                "Number of open file descriptors",
                facts.open_fds,
            ),
            (
                "process_max_fds",
                "Maximum number of open file descriptors",
                facts.max_fds,
            ),
            (
                "process_start_time_seconds",
                "Start time of the process since unix epoch in seconds",
                facts.start_time_seconds,
            ),
        ] {
            let gauge = ConstGauge::new(value);
            gauge.encode(encoder.encode_descriptor(name, help, None, gauge.metric_type())?)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_proc_texts() {
        let stat = "4242 (vpc cni (x)) S 1 4242 4242 0 -1 4194560 2000 0 0 0 250 50 0 0 20 0 \
                    9 0 1000 123456789 5000 18446744073709551615";
        let status = "Name:\tvpc-cni-tuner\nVmSize:\t  200000 kB\nVmRSS:\t   40960 kB\n";
        let limits = "Limit                     Soft Limit           Hard Limit           Units\n\
                      Max open files            1048576              1048576              files\n";
        let facts = ProcessFacts::parse(stat, status, limits, "cpu 1 2 3\nbtime 1700000000\n", 12)
            .expect("parsed");
        assert_eq!(facts.cpu_seconds, 3.0);
        assert_eq!(facts.resident_bytes, 40960.0 * 1024.0);
        assert_eq!(facts.virtual_bytes, 200000.0 * 1024.0);
        assert_eq!(facts.open_fds, 12.0);
        assert_eq!(facts.max_fds, 1048576.0);
        assert_eq!(facts.start_time_seconds, 1700000010.0);
        assert_eq!(ProcessFacts::parse("garbage", "", "", "", 0), None);
    }

    #[test]
    fn this_process_reads_on_linux() {
        if cfg!(target_os = "linux") {
            let facts = ProcessFacts::read().expect("/proc/self");
            assert!(
                facts.resident_bytes > 0.0 && facts.open_fds > 0.0,
                "{facts:?}"
            );
        }
    }
}
