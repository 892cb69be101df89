/*!
`rates history`: a currency's rates over a range of days, one request per
weekday, with any concurrency model.

A multi-year range is thousands of independent requests, the workload the
chapter's models are for. Each weekday is asked for; a holiday answers the
business day before it (`API.md`), which is dropped, so the output holds
exactly the business days of the range, in date order. A day that still
fails after retries is named on stderr and the exit code is 1, but every
row that arrived is written. Progress is a bar on stderr, hidden when
stderr is not a terminal. Against the public service, `--rate 2 --burst 4`
keeps within its limit.
*/

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use chrono::{Datelike, NaiveDate, Weekday};
use clap::{Args, ValueEnum};
use indicatif::{ProgressBar, ProgressStyle};
use rates::{Currency, Model, RateRequest, Rates, Workers, present};

use crate::session::{self, ClientArgs, Session, SimArgs, known_currencies};
use crate::{Usage, check_out_path, cli, dataset, plot, write_atomically};

/// How the series is written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum HistoryFormat {
    /// `date,SYM1,SYM2` rows.
    Csv,
    /// A JSON array of the API's answers.
    Json,
}

/// Options of `rates history`.
#[derive(Debug, Args)]
pub struct HistoryArgs {
    /// The currency the rates are expressed against.
    #[arg(long)]
    pub base: String,
    /// Currencies to follow, comma-separated.
    #[arg(long)]
    pub symbols: String,
    /// First day (YYYY-MM-DD).
    #[arg(long)]
    pub from: String,
    /// Last day (YYYY-MM-DD), included.
    #[arg(long)]
    pub to: String,
    /// The concurrency model: sync, thread-per-item, thread-pool, two-way-queues, process-pool, dummy-pool,
    /// async, async-executor.
    #[arg(long, default_value = "async")]
    pub model: Model,
    /// Requests in flight at once for the pooled and async models (0 or "unlimited": all).
    #[arg(long, default_value = "8", value_parser = cli::workers)]
    pub workers: Workers,
    /// Output format.
    #[arg(long, value_enum, default_value = "csv")]
    pub format: HistoryFormat,
    /// Write the series to this file instead of stdout.
    #[arg(long, value_name = "FILE")]
    pub out: Option<PathBuf>,
    /// Also draw the series as a line chart in this SVG file.
    #[arg(long, value_name = "FILE")]
    pub plot: Option<PathBuf>,
    #[command(flatten)]
    pub client: ClientArgs,
    #[command(flatten)]
    pub sim: SimArgs,
}

/// Every Monday to Friday from `from` to `to`, both included.
pub(crate) fn weekdays(from: NaiveDate, to: NaiveDate) -> Vec<NaiveDate> {
    from.iter_days().take_while(|d| *d <= to).filter(|d| !matches!(d.weekday(), Weekday::Sat | Weekday::Sun)).collect()
}

/// The validated request of a `history`: refused before any work if bad.
struct Plan {
    base: Currency,
    symbols: Vec<Currency>,
    days: Vec<NaiveDate>,
}

fn plan(args: &HistoryArgs, ds: &rates::Dataset) -> Result<Plan, Usage> {
    let base = match known_currencies(ds, "base", &args.base)?[..] {
        [base] => base,
        _ => return Err(Usage(format!("--base: expected one currency, got '{}'", args.base))),
    };
    // Never empty: an empty list is refused as an invalid code.
    let symbols = known_currencies(ds, "symbols", &args.symbols)?;
    let from = rates::parse_date(&args.from).map_err(|e| Usage(format!("--from: {e}")))?;
    let to = rates::parse_date(&args.to).map_err(|e| Usage(format!("--to: {e}")))?;
    if from > to {
        return Err(Usage(format!("--from {from} is after --to {to}")));
    }
    Ok(Plan { base, symbols, days: weekdays(from, to) })
}

/// The series as CSV: `date,SYM1,SYM2`, one row per day, an empty cell
/// where the answer has no rate.
fn csv(rows: &[&Rates], symbols: &[Currency]) -> String {
    let mut out = String::from("date");
    for s in symbols {
        out.push(',');
        out.push_str(s.as_str());
    }
    out.push('\n');
    for r in rows {
        out.push_str(&r.date.to_string());
        for &s in symbols {
            out.push(',');
            if let Some(v) = r.get(s) {
                out.push_str(&v.to_string());
            }
        }
        out.push('\n');
    }
    out
}

pub(crate) fn run(args: HistoryArgs) -> anyhow::Result<ExitCode> {
    let ds = dataset(args.client.data.as_ref())?;
    let plan = plan(&args, &ds)?;
    if let Some(p) = &args.out {
        check_out_path("--out", p)?;
    }
    if let Some(p) = &args.plot {
        plot::check_svg_path("--plot", p)?;
    }
    let requests: Vec<RateRequest> = plan
        .days
        .iter()
        .map(|&day| RateRequest { base: plan.base, symbols: plan.symbols.clone(), date: Some(day) })
        .collect();

    let bar = ProgressBar::new(requests.len() as u64);
    bar.set_style(
        ProgressStyle::with_template("{spinner} {pos}/{len} days [{bar:40}] {per_sec}, {eta} left")
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            .progress_chars("=> "),
    );
    let tick = bar.clone();
    let session = Session::start(ds, &args.client, &args.sim, Some(Arc::new(move |_| tick.inc(1))))?;
    let ran = session.run(args.model, &requests, args.workers)?;
    bar.finish_and_clear();

    // A holiday answers an earlier business day: keep only the answers for
    // the day asked, so each business day appears once, in date order.
    let mut rows = Vec::new();
    let mut failures = Vec::new();
    for (day, outcome) in plan.days.iter().zip(&ran.outcomes) {
        match outcome {
            Ok(r) if r.date == *day => rows.push(r),
            Ok(_) => {}
            Err(f) => failures.push((day.to_string(), f)),
        }
    }

    let text = match args.format {
        HistoryFormat::Csv => csv(&rows, &plan.symbols),
        HistoryFormat::Json => present::json(&rows, &plan.symbols) + "\n",
    };
    match &args.out {
        Some(path) => write_atomically(path, text.as_bytes())?,
        None => {
            let mut out = std::io::stdout().lock();
            out.write_all(text.as_bytes())?;
            out.flush()?;
        }
    }
    if let Some(path) = &args.plot {
        let series: Vec<plot::Series> = plan
            .symbols
            .iter()
            .map(|&s| (s.to_string(), rows.iter().filter_map(|r| r.get(s).map(|v| (r.date, v))).collect()))
            .collect();
        let names: Vec<&str> = plan.symbols.iter().map(Currency::as_str).collect();
        let title = format!(
            "{} per 1 {}, {} to {} ({} business days)",
            names.join(", "),
            plan.base,
            args.from,
            args.to,
            rows.len()
        );
        plot::lines(path, &title, &series)?;
    }

    Ok(session::report(rows.len(), failures, ran.interrupted))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn weekdays_skip_weekends_and_include_both_ends() {
        let d = |s| rates::parse_date(s).unwrap_or_default();
        // Friday 2018-10-12 to Monday 2018-10-15.
        assert_eq!(weekdays(d("2018-10-12"), d("2018-10-15")), [d("2018-10-12"), d("2018-10-15")]);
        assert!(weekdays(d("2018-10-13"), d("2018-10-14")).is_empty());
        assert_eq!(weekdays(d("2018-10-01"), d("2018-12-31")).len(), 66);
    }
}
