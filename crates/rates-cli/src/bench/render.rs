//! The report of `rates bench` as a table and as an SVG bar chart.

use std::fmt::Write as _;

use super::Workload;
use super::stats::{Report, WorkloadInfo};
use crate::plot;

/// A duration in seconds, to three significant digits or so.
pub(super) fn secs(s: f64) -> String {
    if s < 1.0 { format!("{:.0}ms", s * 1e3) } else { format!("{s:.2}s") }
}

/// A latency in milliseconds, with one decimal below 100 ms (the server's
/// latency is precise to a tenth of one).
pub(super) fn ms(s: f64) -> String {
    let ms = s * 1e3;
    if ms < 100.0 { format!("{ms:.1}ms") } else { format!("{ms:.0}ms") }
}

/// A short time in microseconds, whole above 10 µs.
fn micros(us: f64) -> String {
    if us < 10.0 { format!("{us:.1}µs") } else { format!("{us:.0}µs") }
}

pub(super) fn mib(bytes: u64) -> String {
    format!("{:.1} MiB", bytes as f64 / (1024.0 * 1024.0))
}

/// One line describing the workload, the title of the table and the chart.
pub(super) fn describe(w: &WorkloadInfo) -> String {
    let workers = w.workers.map_or("unlimited".to_string(), |n| n.to_string());
    let mut s = match w.kind {
        Workload::Io => format!("I/O-bound: {} requests, {workers} workers", w.items),
        Workload::Cpu => {
            format!(
                "CPU-bound: {} items of {:.1} ms, {workers} workers, {} cores",
                w.items,
                w.item_ms.unwrap_or(0.0),
                w.cores
            )
        }
    };
    if let Some(l) = w.latency_s {
        let probed = if w.latency_probed { " (probed)" } else { "" };
        let _ = write!(s, ", latency {}{probed}", secs(l));
    }
    if let Some(j) = w.jitter_s.filter(|j| *j > 0.0) {
        let _ = write!(s, " + jitter {}", secs(j));
    }
    if let Some(f) = w.fail_rate.filter(|f| *f > 0.0) {
        let _ = write!(s, ", fail rate {f}");
    }
    if let Some(r) = w.rate {
        let _ = write!(s, ", throttled to {r}/s (burst {})", w.burst);
    }
    if let Some(api) = &w.api {
        let _ = write!(s, ", against {api}");
    }
    let _ = write!(s, "; median of {} run{}", w.repeat, if w.repeat == 1 { "" } else { "s" });
    s
}

/// The cells of the report's table: the header, then a row of cells for
/// each model that was measured, or its name and why it was not.
pub(super) struct Cells {
    pub(super) header: Vec<&'static str>,
    pub(super) rows: Vec<Result<Vec<String>, (String, String)>>,
}

/// The report's table as cells, for the aligned table, Markdown and HTML.
pub(super) fn cells(report: &Report) -> Cells {
    let io = report.workload.kind == Workload::Io;
    let header = [
        "model",
        "wall",
        "spread",
        "cpu",
        if io { "cpu/req" } else { "cpu/item" },
        "peak mem",
        if io { "req/s" } else { "items/s" },
        "errors",
        "p50 lat",
        "requests",
        "in flight",
        "ideal",
        "ratio",
        "ratio served",
    ];
    let dash = || "-".to_string();
    // The auto rows' learnt limits, in a last column only when there are any.
    let learnt = report.models.iter().any(|m| m.summary.as_ref().is_some_and(|s| s.learnt.is_some()));
    let header: Vec<&str> = header.into_iter().chain(learnt.then_some("learnt")).collect();
    let mut rows = Vec::new();
    for m in &report.models {
        let Some(s) = &m.summary else {
            rows.push(Err((m.model.clone(), m.skipped.clone().unwrap_or_else(|| "not run".into()))));
            continue;
        };
        let spread = if s.wall_s > 0.0 { (s.wall_max_s - s.wall_min_s) / s.wall_s * 100.0 } else { 0.0 };
        rows.push(Ok(vec![
            m.model.clone(),
            secs(s.wall_s),
            format!("{spread:.1}%"),
            secs(s.cpu_s),
            micros(s.cpu_per_item_us),
            mib(s.peak_rss_bytes),
            format!("{:.1}", s.items_per_s),
            s.errors.to_string(),
            s.latency_p50_s.map_or_else(dash, ms),
            s.requests.map_or_else(dash, |r| r.to_string()),
            s.max_in_flight.map_or_else(dash, |r| r.to_string()),
            s.ideal_s.map_or_else(dash, secs),
            s.ratio.map_or_else(dash, |r| format!("{r:.3}")),
            s.served_ratio.map_or_else(dash, |r| format!("{r:.3}")),
        ]
        .into_iter()
        .chain(learnt.then(|| s.learnt.as_deref().map_or_else(dash, |l| l.trim_start_matches("learnt: ").to_owned())))
        .collect()));
    }
    Cells { header, rows }
}

/// The aligned table of `rates bench`.
pub(super) fn table(report: &Report) -> String {
    let Cells { header, rows } = cells(report);
    let header = Ok(header.iter().map(|h| h.to_string()).collect());
    let rows: Vec<&Result<Vec<String>, (String, String)>> = std::iter::once(&header).chain(&rows).collect();
    let width = |c: usize| {
        let cells = rows.iter().filter_map(|r| r.as_ref().ok()).map(|r| r[c].chars().count());
        let names = rows.iter().filter_map(|r| r.as_ref().err()).map(|(m, _)| if c == 0 { m.len() } else { 0 });
        cells.chain(names).max().unwrap_or(0)
    };
    let columns = header.as_ref().map_or(0, Vec::len);
    let widths: Vec<usize> = (0..columns).map(width).collect();
    let mut out = format!("{}\n", describe(&report.workload));
    for row in &rows {
        let line = match row {
            Ok(cells) => {
                let cells: Vec<String> = cells
                    .iter()
                    .zip(&widths)
                    .enumerate()
                    .map(|(c, (cell, &w))| if c == 0 { format!("{cell:<w$}") } else { format!("{cell:>w$}") })
                    .collect();
                cells.join("  ")
            }
            Err((model, why)) => format!("{model:<w$}  n/a: {why}", w = widths[0]),
        };
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}

/// The table as Markdown (`--markdown`): the workload in a line of its
/// own, then the table, numbers aligned right, for documents whose
/// figures are made by a command rather than typed.
pub(super) fn markdown(report: &Report) -> String {
    let Cells { header, rows } = cells(report);
    let cell = |s: &str| s.replace('|', "\\|");
    let mut out = format!("{}\n\n", cell(&describe(&report.workload)));
    let line = |cells: &mut dyn Iterator<Item = String>| format!("| {} |\n", cells.collect::<Vec<_>>().join(" | "));
    out.push_str(&line(&mut header.iter().map(|h| cell(h))));
    out.push_str(&line(&mut (0..header.len()).map(|c| if c == 0 { "---".into() } else { "---:".into() })));
    for row in &rows {
        out.push_str(&match row {
            Ok(cells) => line(&mut cells.iter().map(|c| cell(c))),
            Err((model, why)) => {
                let rest = (2..header.len()).map(|_| String::new());
                line(&mut [cell(model), cell(&format!("n/a: {why}"))].into_iter().chain(rest))
            }
        });
    }
    out
}

/// The bar chart of wall times (`--plot`) in `file`.
pub(super) fn draw(file: crate::output::OutFile, report: &Report) -> anyhow::Result<()> {
    file.commit(bars_svg(report)?.as_bytes())
}

/// The bar chart of wall times as the text of an SVG document.
pub(super) fn bars_svg(report: &Report) -> anyhow::Result<String> {
    let bars: Vec<plot::Bar> = report
        .models
        .iter()
        .map(|m| match &m.summary {
            Some(s) => {
                let mut note = format!("{} · cpu {} · {}", secs(s.wall_s), secs(s.cpu_s), mib(s.peak_rss_bytes));
                if let Some(r) = s.ratio {
                    let _ = write!(note, " · {r:.2}× ideal");
                }
                if s.errors > 0 {
                    let _ = write!(note, " · {} errors", s.errors);
                }
                plot::Bar { label: m.model.clone(), value: Some(s.wall_s), note }
            }
            None => plot::Bar {
                label: m.model.clone(),
                value: None,
                note: format!("n/a: {}", m.skipped.as_deref().unwrap_or("not run")),
            },
        })
        .collect();
    let title = format!("rates bench — {}", describe(&report.workload));
    plot::bars_svg(&title, "wall time, seconds (shorter is faster; green: fastest)", &bars)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn latencies_show_a_tenth_of_a_millisecond_below_100_ms() {
        assert_eq!(ms(0.020_06), "20.1ms");
        assert_eq!(ms(0.0042), "4.2ms");
        assert_eq!(ms(0.25), "250ms");
    }

    #[test]
    fn cpu_per_item_in_microseconds() {
        assert_eq!(micros(4.25), "4.2µs");
        assert_eq!(micros(31.6), "32µs");
    }
}
