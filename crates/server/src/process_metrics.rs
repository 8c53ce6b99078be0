//! Process metrics read from `/proc/self` at each scrape (prometheus-client
//! has no process collector of its own): resident and virtual memory, CPU
//! seconds, open file descriptors and the start time, under the names every
//! Prometheus client library uses.

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::MetricType;

/// Clock ticks per second of `/proc/<pid>/stat` times (`CLK_TCK`, 100 on Linux).
const TICKS_PER_SECOND: f64 = 100.0;

/// A figure set read from `/proc`.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct ProcessFigures {
    /// `VmRSS`, bytes.
    pub resident_memory_bytes: f64,
    /// `VmSize`, bytes.
    pub virtual_memory_bytes: f64,
    /// User plus system CPU time, seconds.
    pub cpu_seconds: f64,
    /// Entries of `/proc/self/fd`.
    pub open_fds: f64,
    /// Process start, seconds since the Unix epoch.
    pub start_time_seconds: f64,
}

impl ProcessFigures {
    /// Reads this process's figures; `None` off Linux or when `/proc` is unreadable.
    pub fn read() -> Option<ProcessFigures> {
        let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
        let status = std::fs::read_to_string("/proc/self/status").ok()?;
        let boot = std::fs::read_to_string("/proc/stat").ok()?;
        let mut f = parse(&stat, &status, &boot)?;
        f.open_fds = std::fs::read_dir("/proc/self/fd").ok()?.count() as f64;
        Some(f)
    }
}

/// Figures from the text of `/proc/self/stat`, `/proc/self/status` and `/proc/stat`.
pub fn parse(stat: &str, status: &str, proc_stat: &str) -> Option<ProcessFigures> {
    // Fields after the parenthesised command name (which may hold spaces).
    let after = &stat[stat.rfind(')')? + 2..];
    let fields: Vec<&str> = after.split_whitespace().collect();
    // `after` starts at field 3 (state); utime is field 14, stime 15, starttime 22.
    let field = |n: usize| -> Option<f64> { fields.get(n - 3)?.parse().ok() };
    let cpu_seconds = (field(14)? + field(15)?) / TICKS_PER_SECOND;
    let start_ticks = field(22)?;
    let btime: f64 = proc_stat
        .lines()
        .find_map(|l| l.strip_prefix("btime "))?
        .trim()
        .parse()
        .ok()?;
    let kib = |key: &str| -> Option<f64> {
        let line = status.lines().find(|l| l.starts_with(key))?;
        let v: f64 = line[key.len()..].split_whitespace().next()?.parse().ok()?;
        Some(v * 1024.0)
    };
    Some(ProcessFigures {
        resident_memory_bytes: kib("VmRSS:").unwrap_or(0.0),
        virtual_memory_bytes: kib("VmSize:").unwrap_or(0.0),
        cpu_seconds,
        open_fds: 0.0,
        start_time_seconds: btime + start_ticks / TICKS_PER_SECOND,
    })
}

/// The collector registered with the service's registry.
#[derive(Debug, Default)]
pub struct ProcessCollector;

impl Collector for ProcessCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let Some(f) = ProcessFigures::read() else {
            return Ok(());
        };
        let gauges = [
            (
                "process_resident_memory_bytes",
                "Resident memory size in bytes",
                f.resident_memory_bytes,
            ),
            (
                "process_virtual_memory_bytes",
                "Virtual memory size in bytes",
                f.virtual_memory_bytes,
            ),
            ("process_open_fds", "Open file descriptors", f.open_fds),
            (
                "process_start_time_seconds",
                "Start time of the process since the Unix epoch in seconds",
                f.start_time_seconds,
            ),
        ];
        for (name, help, value) in gauges {
            let metric = encoder.encode_descriptor(name, help, None, MetricType::Gauge)?;
            ConstGauge::new(value).encode(metric)?;
        }
        let metric = encoder.encode_descriptor(
            "process_cpu_seconds",
            "Total user and system CPU time spent in seconds",
            None,
            MetricType::Counter,
        )?;
        ConstCounter::new(f.cpu_seconds).encode(metric)?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_proc_text() {
        let stat = "4242 (my (odd) cmd) S 1 4242 4242 0 -1 4194560 500 0 0 0 150 50 0 0 20 0 8 0 12345 1000000 2000 18446744073709551615";
        let status = "Name:\tprewarm\nVmSize:\t  204800 kB\nVmRSS:\t   10240 kB\n";
        let f = parse(stat, status, "cpu  1 2 3\nbtime 1700000000\n").unwrap();
        assert_eq!(f.cpu_seconds, 2.0);
        assert_eq!(f.start_time_seconds, 1_700_000_123.45);
        assert_eq!(f.resident_memory_bytes, 10240.0 * 1024.0);
        assert_eq!(f.virtual_memory_bytes, 204800.0 * 1024.0);
    }

    #[test]
    fn reads_this_process() {
        let f = ProcessFigures::read().expect("/proc is readable");
        assert!(f.resident_memory_bytes > 0.0);
        assert!(f.open_fds >= 3.0);
        assert!(f.start_time_seconds > 1.6e9);
    }
}
