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
use std::time::Duration;

use anyhow::Context;
use chrono::{Datelike, NaiveDate, Weekday};
use clap::{Args, ValueEnum};
use concur::Throttle;
use indicatif::{ProgressBar, ProgressStyle};
use rates::{ClientConfig, Currency, Fetcher, Model, RateRequest, Rates, RetryPolicy, Workers, present};
use rates_server::{RateLimit, ServerOptions};

use crate::{Usage, cli, dataset, plot};

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
    /// At most this many requests per second, across all workers.
    #[arg(long, value_parser = cli::rate, value_name = "R")]
    pub rate: Option<f64>,
    /// With --rate: requests allowed at once after a quiet spell.
    #[arg(long, default_value_t = 1, requires = "rate", value_name = "B")]
    pub burst: u32,
    /// Retries per request on 5xx, 429, timeouts and connection errors.
    #[arg(long, default_value_t = 3)]
    pub retries: u32,
    /// Time limit of one request.
    #[arg(long, value_parser = cli::duration, default_value = "10s")]
    pub timeout: Duration,
    /// The API's base URL; without it an embedded server over the ECB data is started.
    #[arg(long, env = "RATES_API")]
    pub api: Option<String>,
    /// A newer eurofxref-hist.csv or .zip for the embedded server and for checking codes.
    #[arg(long, value_name = "PATH")]
    pub data: Option<PathBuf>,
    /// Output format.
    #[arg(long, value_enum, default_value = "csv")]
    pub format: HistoryFormat,
    /// Write the series to this file instead of stdout.
    #[arg(long, value_name = "FILE")]
    pub out: Option<PathBuf>,
    /// Also draw the series as a line chart in this SVG file.
    #[arg(long, value_name = "FILE")]
    pub plot: Option<PathBuf>,
    /// Embedded server: latency of every answer.
    #[arg(long, value_parser = cli::duration, default_value = "100ms", conflicts_with = "api")]
    pub sim_latency: Duration,
    /// Embedded server: random extra latency up to this much.
    #[arg(long, value_parser = cli::duration, default_value = "0", conflicts_with = "api")]
    pub sim_jitter: Duration,
    /// Embedded server: fraction of requests that fail with 500.
    #[arg(long, value_parser = cli::fraction, default_value = "0", conflicts_with = "api")]
    pub sim_fail_rate: f64,
    /// Embedded server: requests per second allowed per client; over it, 429.
    #[arg(long, value_parser = cli::rate, value_name = "R", conflicts_with = "api")]
    pub sim_rate_limit: Option<f64>,
    /// Embedded server: burst of --sim-rate-limit.
    #[arg(long, default_value_t = 1, requires = "sim_rate_limit", value_name = "B")]
    pub sim_burst: u32,
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
    let known = |what: &str, c: Currency| {
        if ds.knows(c) { Ok(c) } else { Err(Usage(format!("--{what}: unknown currency '{c}'"))) }
    };
    let base = args.base.trim().parse::<Currency>().map_err(|e| Usage(format!("--base: {e}")))?;
    let base = known("base", base)?;
    let symbols = Currency::parse_list(&args.symbols).map_err(|e| Usage(format!("--symbols: {e}")))?;
    for &s in &symbols {
        known("symbols", s)?;
    }
    if symbols.is_empty() {
        return Err(Usage("--symbols: expected at least one currency".into()));
    }
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
    let ds = dataset(args.data.as_ref())?;
    let plan = plan(&args, &ds)?;
    let throttle = args
        .rate
        .map(|r| Throttle::new(r, args.burst).map(Arc::new))
        .transpose()
        .map_err(|e| Usage(format!("--rate/--burst: {e}")))?;
    let sim = ServerOptions {
        latency: args.sim_latency,
        jitter: args.sim_jitter,
        fail_rate: args.sim_fail_rate,
        rate_limit: args.sim_rate_limit.map(|rate| RateLimit { rate, burst: args.sim_burst }),
    };
    sim.validate().map_err(|e| Usage(e.to_string()))?;
    if let Some(api) = &args.api {
        rates::parse_api_url(api).map_err(|e| Usage(e.to_string()))?;
    }
    if let Some(p) = &args.plot {
        plot::check_svg_path("--plot", p)?;
    }

    let server = match &args.api {
        Some(_) => None,
        None => Some(rates_server::spawn(Arc::clone(&ds), sim).context("cannot start the embedded server")?),
    };
    let api = args.api.as_deref().or(server.as_ref().map(|s| s.url())).unwrap_or_default();
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
    let config = ClientConfig { timeout: args.timeout, ..ClientConfig::default() };
    let retry = RetryPolicy { retries: args.retries, ..RetryPolicy::default() };
    let fetcher = Arc::new(
        Fetcher::new(api, config)
            .map_err(|e| Usage(e.to_string()))?
            .with_retry(retry)
            .with_throttle(throttle)
            .with_progress(Arc::new(move |_| tick.inc(1))),
    );

    // As in `fetch`: Ctrl-C cancels the run, and what arrived is written.
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    let cancel = fetcher.cancel().clone();
    rt.spawn(async move {
        if tokio::signal::ctrl_c().await.is_ok() {
            cancel.cancel();
        }
    });
    let outcomes = rt.block_on(rates::models::run_async(args.model, &fetcher, &requests, args.workers));
    let interrupted = fetcher.cancel().is_cancelled();
    rt.shutdown_background();
    bar.finish_and_clear();
    drop(server);

    // A holiday answers an earlier business day: keep only the answers for
    // the day asked, so each business day appears once, in date order.
    let mut rows = Vec::new();
    let mut failed = Vec::new();
    let mut n_cancelled = 0;
    for (day, outcome) in plan.days.iter().zip(&outcomes) {
        match outcome {
            Ok(r) if r.date == *day => rows.push(r),
            Ok(_) => {}
            Err(f) if f.error == rates::FetchError::Cancelled => n_cancelled += 1,
            Err(f) => failed.push((day, f)),
        }
    }

    let text = match args.format {
        HistoryFormat::Csv => csv(&rows, &plan.symbols),
        HistoryFormat::Json => present::json(&rows, &plan.symbols) + "\n",
    };
    match &args.out {
        Some(path) => std::fs::write(path, text).with_context(|| format!("cannot write {}", path.display()))?,
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

    for (day, failure) in &failed {
        eprintln!("rates: {day}: {failure}");
    }
    if interrupted {
        eprintln!("rates: interrupted: {} days written, {} failed, {n_cancelled} cancelled", rows.len(), failed.len());
        // 128 + SIGINT, as a shell reports a command stopped by Ctrl-C.
        return Ok(ExitCode::from(130));
    }
    if failed.is_empty() {
        return Ok(ExitCode::SUCCESS);
    }
    eprintln!("rates: {} days written, {} failed", rows.len(), failed.len());
    Ok(ExitCode::FAILURE)
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
