//! What `rates bench` reports: each run as the parent saw it, the medians
//! and spread of a model's runs, and the whole report (its JSON is the
//! `--json` output).

use serde::Serialize;

use super::Workload;
use super::child::Measured;

/// One run as the parent saw it: the child's measurement and the server's
/// counters (absent with `--api` and for CPU work).
#[derive(Debug, Clone, Serialize)]
pub(super) struct Run {
    #[serde(flatten)]
    pub(super) measured: Measured,
    /// Requests the server answered during the run, retries included.
    pub(super) requests: Option<u64>,
    /// Of those, answers other than 200.
    pub(super) failed_requests: Option<u64>,
    /// The most requests the server handled at once.
    pub(super) max_in_flight: Option<u64>,
    /// The server's mean time from a request's head to its answer, as it
    /// measured it: the latency the client could not have beaten.
    pub(super) served_latency_s: Option<f64>,
}

/// The medians of a model's runs.
#[derive(Debug, Clone, Serialize)]
pub(super) struct Summary {
    pub(super) wall_s: f64,
    pub(super) wall_min_s: f64,
    pub(super) wall_max_s: f64,
    pub(super) cpu_s: f64,
    pub(super) cpu_user_s: f64,
    pub(super) cpu_sys_s: f64,
    pub(super) peak_rss_bytes: u64,
    pub(super) items: usize,
    pub(super) ok: usize,
    pub(super) errors: usize,
    /// Items per second (requests per second for I/O).
    pub(super) items_per_s: f64,
    pub(super) requests: Option<u64>,
    pub(super) failed_requests: Option<u64>,
    pub(super) max_in_flight: Option<u64>,
    /// The model's lower bound on wall time (see the module docs).
    pub(super) ideal_s: Option<f64>,
    /// wall ÷ ideal.
    pub(super) ratio: Option<f64>,
    /// CPU time per item (per request for I/O), in microseconds.
    pub(super) cpu_per_item_us: f64,
    /// The runs' median of the server's measured service time.
    pub(super) served_latency_s: Option<f64>,
    /// The ideal counted from that measured time instead of the nominal
    /// latency: what is left of wall ÷ it is the client's own overhead.
    pub(super) served_ideal_s: Option<f64>,
    /// wall ÷ served ideal.
    pub(super) served_ratio: Option<f64>,
    pub(super) first_error: Option<String>,
    /// What the auto limits learnt in the last run.
    pub(super) learnt: Option<String>,
    /// The I/O workload: the runs' median latency percentiles.
    pub(super) latency_p50_s: Option<f64>,
    pub(super) latency_p99_s: Option<f64>,
    pub(super) runs: Vec<Run>,
}

/// One model's line of the report.
#[derive(Debug, Clone, Serialize)]
pub(super) struct ModelReport {
    pub(super) model: String,
    /// Items it may have in flight (or computing) at once.
    pub(super) concurrency: usize,
    /// Why it has no measurement, if it has none.
    pub(super) skipped: Option<String>,
    #[serde(flatten)]
    pub(super) summary: Option<Summary>,
}

/// The workload, as run.
#[derive(Debug, Clone, Serialize)]
pub(super) struct WorkloadInfo {
    pub(super) kind: Workload,
    pub(super) items: usize,
    pub(super) repeat: usize,
    /// `None`: unlimited.
    pub(super) workers: Option<usize>,
    pub(super) cores: usize,
    pub(super) api: Option<String>,
    pub(super) latency_s: Option<f64>,
    /// The latency was measured from the API (`--api`), not set.
    pub(super) latency_probed: bool,
    pub(super) jitter_s: Option<f64>,
    pub(super) fail_rate: Option<f64>,
    pub(super) rate: Option<f64>,
    pub(super) burst: u32,
    pub(super) retries: u32,
    /// CPU workload: rounds of the hash per item, and what one item takes.
    pub(super) rounds: Option<u64>,
    pub(super) item_ms: Option<f64>,
}

#[derive(Debug, Clone)]
pub(super) struct Report {
    pub(super) workload: WorkloadInfo,
    pub(super) models: Vec<ModelReport>,
}

/// The version of the `--json` layout, its first field: raised when a field
/// changes meaning or goes away (new fields do not raise it), so scripts
/// can refuse a layout they do not know.
pub(super) const SCHEMA: u32 = 1;

impl Serialize for Report {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeStruct;
        let mut r = s.serialize_struct("Report", 3)?;
        r.serialize_field("schema", &SCHEMA)?;
        r.serialize_field("workload", &self.workload)?;
        r.serialize_field("models", &self.models)?;
        r.end()
    }
}

/// The median of `values` (the lower middle one for an even count).
pub(super) fn median<T: Copy + PartialOrd>(values: impl IntoIterator<Item = T>) -> Option<T> {
    let mut v: Vec<T> = values.into_iter().collect();
    v.sort_by(|a, b| a.partial_cmp(b).unwrap_or(std::cmp::Ordering::Equal));
    v.get(v.len().saturating_sub(1) / 2).copied()
}

/// The medians of `runs` of `items` each, with the ideal bound `ideal_s`
/// and `bound_of`, the bound counted from a measured latency.
pub(super) fn summarise(
    runs: Vec<Run>,
    items: usize,
    ideal_s: Option<f64>,
    bound_of: impl Fn(f64) -> Option<f64>,
) -> Option<Summary> {
    let wall_s = median(runs.iter().map(|r| r.measured.wall_s))?;
    let cpu_s = median(runs.iter().map(|r| r.measured.cpu_user_s + r.measured.cpu_sys_s))?;
    let served_latency_s = median(runs.iter().filter_map(|r| r.served_latency_s));
    let served_ideal_s = served_latency_s.and_then(bound_of);
    let ratio_to = |ideal: Option<f64>| ideal.filter(|i| *i > 0.0).map(|i| wall_s / i);
    let opt = |f: fn(&Run) -> Option<u64>| median(runs.iter().filter_map(f));
    let cpu_user_s = median(runs.iter().map(|r| r.measured.cpu_user_s))?;
    let cpu_sys_s = median(runs.iter().map(|r| r.measured.cpu_sys_s))?;
    Some(Summary {
        wall_s,
        wall_min_s: runs.iter().map(|r| r.measured.wall_s).fold(f64::INFINITY, f64::min),
        wall_max_s: runs.iter().map(|r| r.measured.wall_s).fold(0.0, f64::max),
        cpu_s,
        cpu_user_s,
        cpu_sys_s,
        peak_rss_bytes: median(runs.iter().map(|r| r.measured.peak_rss_bytes))?,
        items,
        ok: median(runs.iter().map(|r| r.measured.ok))?,
        errors: median(runs.iter().map(|r| r.measured.errors))?,
        items_per_s: if wall_s > 0.0 { items as f64 / wall_s } else { 0.0 },
        requests: opt(|r| r.requests),
        failed_requests: opt(|r| r.failed_requests),
        max_in_flight: opt(|r| r.max_in_flight),
        ideal_s,
        ratio: ratio_to(ideal_s),
        cpu_per_item_us: if items > 0 { cpu_s / items as f64 * 1e6 } else { 0.0 },
        served_latency_s,
        served_ideal_s,
        served_ratio: ratio_to(served_ideal_s),
        first_error: runs.iter().find_map(|r| r.measured.first_error.clone()),
        learnt: runs.iter().rev().find_map(|r| r.measured.learnt.clone()),
        latency_p50_s: median(runs.iter().filter_map(|r| r.measured.latency_p50_s)),
        latency_p99_s: median(runs.iter().filter_map(|r| r.measured.latency_p99_s)),
        runs,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn medians() {
        assert_eq!(median([3.0, 1.0, 2.0]), Some(2.0));
        assert_eq!(median([4, 1, 3, 2]), Some(2));
        assert_eq!(median(Vec::<u64>::new()), None);
    }
}
