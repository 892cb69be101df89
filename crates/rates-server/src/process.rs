//! The standard `process_*` metrics every Prometheus client exports (CPU
//! seconds, resident and virtual memory, open and maximum descriptors, start
//! time), read from `/proc/self` at each scrape. Linux only: elsewhere they
//! are left out, as the official clients do.

use prometheus_client::collector::Collector;
use prometheus_client::encoding::DescriptorEncoder;

/// Encodes the process metrics at each scrape.
#[derive(Debug)]
pub(crate) struct ProcessCollector;

/// One reading of the process metrics; a figure that could not be read is
/// `None` and left out.
#[derive(Debug, Default, Clone, PartialEq)]
pub(crate) struct Process {
    pub cpu_seconds: Option<f64>,
    pub resident_bytes: Option<u64>,
    pub virtual_bytes: Option<u64>,
    pub open_fds: Option<u64>,
    pub max_fds: Option<u64>,
    pub start_time_seconds: Option<f64>,
}

impl Collector for ProcessCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        use prometheus_client::encoding::EncodeMetric;
        use prometheus_client::metrics::counter::ConstCounter;
        use prometheus_client::metrics::gauge::ConstGauge;

        let p = Process::read();
        if let Some(v) = p.cpu_seconds {
            let m = ConstCounter::new(v);
            m.encode(encoder.encode_descriptor(
                "process_cpu_seconds",
                "Total user and system CPU time spent in seconds.",
                None,
                m.metric_type(),
            )?)?;
        }
        let gauges = [
            ("process_resident_memory_bytes", "Resident memory size in bytes.", p.resident_bytes.map(|v| v as f64)),
            ("process_virtual_memory_bytes", "Virtual memory size in bytes.", p.virtual_bytes.map(|v| v as f64)),
            ("process_open_fds", "Number of open file descriptors.", p.open_fds.map(|v| v as f64)),
            ("process_max_fds", "Maximum number of open file descriptors.", p.max_fds.map(|v| v as f64)),
            (
                "process_start_time_seconds",
                "Start time of the process since unix epoch in seconds.",
                p.start_time_seconds,
            ),
        ];
        for (name, help, v) in gauges {
            if let Some(v) = v {
                let m = ConstGauge::new(v);
                m.encode(encoder.encode_descriptor(name, help, None, m.metric_type())?)?;
            }
        }
        Ok(())
    }
}

impl Process {
    /// The figures of this process now.
    #[cfg(target_os = "linux")]
    pub(crate) fn read() -> Process {
        use nix::unistd::{SysconfVar, sysconf};
        let ticks = sysconf(SysconfVar::CLK_TCK).ok().flatten().filter(|&t| t > 0).map(|t| t as f64);
        let page = sysconf(SysconfVar::PAGE_SIZE).ok().flatten().filter(|&p| p > 0).map(|p| p as u64);
        let stat = std::fs::read_to_string("/proc/self/stat").ok();
        let stat = stat.as_deref().and_then(Stat::parse);
        let boot = std::fs::read_to_string("/proc/stat").ok().and_then(|s| boot_time(&s));
        let open_fds = std::fs::read_dir("/proc/self/fd").ok().map(|d| d.count() as u64);
        let max_fds = std::fs::read_to_string("/proc/self/limits").ok().and_then(|s| max_open_files(&s));
        Process {
            cpu_seconds: stat.zip(ticks).map(|(s, t)| (s.utime + s.stime) as f64 / t),
            resident_bytes: stat.zip(page).map(|(s, p)| s.rss_pages * p),
            virtual_bytes: stat.map(|s| s.vsize),
            // The directory's own descriptor, open while it is read, is not
            // one of the process's.
            open_fds: open_fds.map(|n| n.saturating_sub(1)),
            max_fds,
            start_time_seconds: stat.zip(ticks).zip(boot).map(|((s, t), b)| b as f64 + s.starttime as f64 / t),
        }
    }

    /// Not on this platform.
    #[cfg(not(target_os = "linux"))]
    pub(crate) fn read() -> Process {
        Process::default()
    }
}

/// The fields of `/proc/self/stat` the metrics need (see proc(5)).
#[derive(Debug, Clone, Copy, PartialEq)]
struct Stat {
    utime: u64,
    stime: u64,
    starttime: u64,
    vsize: u64,
    rss_pages: u64,
}

impl Stat {
    /// Parses the line; the command name (field 2) is in parentheses and
    /// may hold spaces and parentheses itself, so fields count from the last `)`.
    fn parse(line: &str) -> Option<Stat> {
        let rest = &line[line.rfind(')')? + 1..];
        // `rest` starts at field 3 (state).
        let fields: Vec<&str> = rest.split_whitespace().collect();
        let field = |n: usize| fields.get(n - 3)?.parse::<u64>().ok();
        Some(Stat {
            utime: field(14)?,
            stime: field(15)?,
            starttime: field(22)?,
            vsize: field(23)?,
            rss_pages: field(24)?,
        })
    }
}

/// The boot time, in seconds since the epoch, from `/proc/stat`.
fn boot_time(stat: &str) -> Option<u64> {
    stat.lines().find_map(|l| l.strip_prefix("btime "))?.trim().parse().ok()
}

/// The soft limit on open files from `/proc/self/limits`.
fn max_open_files(limits: &str) -> Option<u64> {
    let line = limits.lines().find(|l| l.starts_with("Max open files"))?;
    line["Max open files".len()..].split_whitespace().next()?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_stat_with_an_awkward_command_name() {
        let line = "4242 (rates (x) y) S 1 4242 4242 0 -1 4194560 500 0 0 0 250 75 0 0 20 0 \
                    9 0 123456 987654321 2048 18446744073709551615 1 1 0 0 0 0 0 0 0 0 0 0 17 1 0 0 0 0 0";
        let s = Stat::parse(line).expect("parses");
        assert_eq!(s, Stat { utime: 250, stime: 75, starttime: 123456, vsize: 987654321, rss_pages: 2048 });
        assert_eq!(Stat::parse("garbage"), None);
    }

    #[test]
    fn reads_boot_time_and_fd_limit() {
        assert_eq!(boot_time("cpu  1 2 3\nbtime 1700000000\nprocesses 5\n"), Some(1_700_000_000));
        let limits = "Limit                     Soft Limit           Hard Limit           Units\n\
                      Max open files            1024                 524288               files\n";
        assert_eq!(max_open_files(limits), Some(1024));
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn reads_this_process() {
        let p = Process::read();
        assert!(p.cpu_seconds.is_some_and(|s| s >= 0.0), "{p:?}");
        assert!(p.resident_bytes.is_some_and(|b| b > 0), "{p:?}");
        assert!(p.open_fds.is_some_and(|n| n >= 3), "{p:?}");
        let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).expect("after 1970").as_secs_f64();
        // Started before now, and not before the machine booted a year ago.
        assert!(p.start_time_seconds.is_some_and(|t| t <= now + 1.0 && t > now - 365.0 * 86400.0), "{p:?}");
    }
}
