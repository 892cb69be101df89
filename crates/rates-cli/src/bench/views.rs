//! What `rates bench` makes of its runs' traces: the merged trace
//! (`--trace`), the timelines (`--timeline`) and the HTML report
//! (`--html`). The runs are traced only when one of these asks, so a plain
//! bench measures untraced runs.
//!
//! Each run writes its trace to a file of its own in a temporary
//! directory; the timelines draw the last run of each row (the one that
//! failed, for a row that did not finish: what it did until it stopped).

use std::path::PathBuf;

use super::html::{self, Machine, Page};
use super::render::describe;
use super::stats::Report;
use super::timeline::{self, Panel};
use super::traces::{self, Labelled, RunTrace, TraceDir};
use super::{BenchArgs, Workload, render};
use crate::output::OutFile;
use crate::{Usage, plot};

/// The traces of one row's runs.
struct RowTraces {
    name: String,
    runs: Vec<PathBuf>,
    /// Why the row stopped, if it did.
    stopped: Option<String>,
}

/// The outputs drawn from traces, each checked writable before any run.
pub(super) struct Views {
    trace: Option<OutFile>,
    timeline: Option<OutFile>,
    html: Option<OutFile>,
    /// Where the runs write their traces; `None`: the runs are not traced.
    dir: Option<TraceDir>,
    rows: Vec<RowTraces>,
}

impl Views {
    /// The outputs `args` asks for, proven writable, and a directory for
    /// the runs' traces if any of them needs one.
    pub(super) fn new(args: &BenchArgs) -> anyhow::Result<Views> {
        let io = args.workload == Workload::Io;
        if !io && (args.trace.is_some() || args.timeline.is_some()) {
            let flag = if args.trace.is_some() { "--trace" } else { "--timeline" };
            return Err(Usage(format!("{flag}: the CPU workload makes no requests to trace; use --workload io")).into());
        }
        let trace = args.trace.as_deref().map(|p| OutFile::create("--trace", p)).transpose()?;
        let timeline = args.timeline.as_deref().map(|p| plot::svg_file("--timeline", p)).transpose()?;
        let html = args.html.as_deref().map(|p| OutFile::create("--html", p)).transpose()?;
        let dir = match io && (trace.is_some() || timeline.is_some() || html.is_some()) {
            true => Some(TraceDir::new().map_err(|e| anyhow::anyhow!("cannot make a directory for the traces: {e}"))?),
            false => None,
        };
        Ok(Views { trace, timeline, html, dir, rows: Vec::new() })
    }

    /// Where the next run of the row `name` writes its trace, or `None`
    /// when nothing asks for traces.
    pub(super) fn next_run(&mut self, name: &str) -> Option<PathBuf> {
        let dir = self.dir.as_ref()?;
        if self.rows.last().is_none_or(|r| r.name != name) {
            self.rows.push(RowTraces { name: name.to_owned(), runs: Vec::new(), stopped: None });
        }
        let index = self.rows.len() - 1;
        let row = self.rows.last_mut()?;
        let path = dir.run(index, row.runs.len() + 1);
        row.runs.push(path.clone());
        Some(path)
    }

    /// The row's last run failed: `why`.
    pub(super) fn stopped(&mut self, why: &str) {
        if let Some(row) = self.rows.last_mut() {
            row.stopped = Some(why.to_owned());
        }
    }

    /// Writes every output asked for: the merged trace, the timelines
    /// and the HTML report of `report`.
    pub(super) fn write(self, report: &Report) -> anyhow::Result<()> {
        if let Some(out) = self.trace {
            let runs: Vec<Labelled> = self
                .rows
                .iter()
                .flat_map(|row| {
                    row.runs
                        .iter()
                        .enumerate()
                        .map(|(k, path)| Labelled { label: format!("{} run {}", row.name, k + 1), path: path.clone() })
                })
                .collect();
            out.commit_with(|w| traces::merge(&runs, w).map(drop).map_err(anyhow::Error::from))?;
        }
        if self.timeline.is_none() && self.html.is_none() {
            return Ok(());
        }
        let panels: Vec<Panel> = self
            .rows
            .iter()
            .map(|row| Panel {
                model: row.name.clone(),
                trace: row.runs.last().map_or(Err("not run".to_owned()), |p| {
                    if p.exists() {
                        RunTrace::read(p).map_err(|e| e.to_string())
                    } else {
                        Err("no trace written".into())
                    }
                }),
                note: row.stopped.as_ref().map(|why| format!("stopped: {why}")),
            })
            .collect();
        let runs = if report.workload.repeat == 1 { "run" } else { "last run" };
        let title = format!("rates bench: each model's {runs}, request by request");
        let svg = timeline::svg(&title, &describe(&report.workload), &panels);
        if let Some(html_file) = self.html {
            let page = Page {
                command: html::command_line(std::env::args_os()),
                machine: Machine::this(report.workload.cores),
                date: chrono::Utc::now().format("%Y-%m-%d %H:%M UTC").to_string(),
                bars: render::bars_svg(report)?,
                timelines: match (&self.dir, panels.is_empty()) {
                    (None, _) => Err("the CPU workload makes no requests to draw".into()),
                    (Some(_), true) => Err("no model was run".into()),
                    (Some(_), false) => Ok(svg.clone()),
                },
            };
            html_file.commit(html::page(report, &page).as_bytes())?;
        }
        if let Some(file) = self.timeline {
            file.commit(svg.as_bytes())?;
        }
        Ok(())
    }
}
