//! `rates fetch`: the chapter's application. Fetch the rates of each base
//! with the chosen model, print the chapter's lines (or JSON, or CSV), and
//! report each failure once.
//!
//! Before any request for rates, the codes are checked against those the
//! API accepts ([`session::accepted_codes`]: the supported codes with the
//! embedded server, the API's own `/currencies` with `--api`) and a
//! `--date` before the first day of the data is refused. A `--date` that is
//! answered with another day (a weekend, a holiday, after the data) is said
//! once on stderr; stdout holds the answers as they are.

use std::io::Write;
use std::process::ExitCode;

use chrono::{Datelike, NaiveDate, Weekday};
use clap::{Args, ValueEnum};
use rates_core::{Currency, Model, RateRequest, present};

use crate::config::{Defaults, RunConfig, Target};
use crate::flags::{CacheFlag, ClientFlags, SimFlags, TraceFlag};
use crate::session::{self, Session, parse_currencies};
use crate::{Usage, cache, dataset, parse};

/// How results are printed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Format {
    /// The chapter's lines and the elapsed time.
    Table,
    /// A JSON array of the API's answers.
    Json,
    /// `date,base,SYM,...` rows.
    Csv,
}

/// Options of `rates fetch`.
#[derive(Debug, Args)]
pub struct FetchArgs {
    /// The concurrency model: sync, thread-per-item, thread-pool, two-way-queues, process-pool, dummy-pool,
    /// async, async-executor.
    #[arg(long, default_value = "sync")]
    pub model: Model,
    /// Requests in flight at once for the pooled and async models ("unlimited": all; auto: learnt from latency).
    #[arg(long, default_value = "4", value_parser = parse::workers)]
    pub workers: parse::WorkersArg,
    /// Base currencies, comma-separated.
    #[arg(long, default_value = rates_core::CHAPTER_CURRENCIES)]
    pub bases: String,
    /// Currencies to show, comma-separated.
    #[arg(long, default_value = rates_core::CHAPTER_CURRENCIES)]
    pub symbols: String,
    /// The day (YYYY-MM-DD); the latest when omitted.
    #[arg(long)]
    pub date: Option<String>,
    /// Output format.
    #[arg(long, value_enum, default_value = "table")]
    pub format: Format,
    /// How requests are made: the API, timeouts, retries, limits.
    #[command(flatten)]
    pub client: ClientFlags,
    /// The embedded server's simulated latency and faults.
    #[command(flatten)]
    pub sim: SimFlags,
    /// The store's folder: with --api, the codes the API accepts are kept
    /// there for a day.
    #[command(flatten)]
    pub cache: CacheFlag,
    /// Where the run's trace is written.
    #[command(flatten)]
    pub trace: TraceFlag,
}

/// The validated requests of a `fetch`: refused before any work if bad.
struct Plan {
    requests: Vec<RateRequest>,
    symbols: Vec<Currency>,
    date: Option<NaiveDate>,
}

/// The first day of the API's data (`docs/API.md`): it answers an earlier date
/// with a 404.
const API_FIRST_DAY: NaiveDate = match NaiveDate::from_ymd_opt(1999, 1, 4) {
    Some(d) => d,
    None => NaiveDate::MIN,
};

/// Checks the codes' syntax and the date, before anything is asked: a
/// date before `first` (the first day of the data) has no answer.
fn plan(args: &FetchArgs, first: NaiveDate) -> Result<Plan, Usage> {
    let bases = parse_currencies("bases", &args.bases)?;
    let symbols = parse_currencies("symbols", &args.symbols)?;
    let date =
        args.date.as_deref().map(rates_core::parse_date).transpose().map_err(|e| Usage(format!("--date: {e}")))?;
    if let Some(d) = date.filter(|d| *d < first) {
        return Err(Usage(format!("--date {d}: before the first day of data, {first}: no rates")));
    }
    let requests = bases.into_iter().map(|base| RateRequest { base, symbols: symbols.clone(), date }).collect();
    Ok(Plan { requests, symbols, date })
}

/// What stderr says when the day answered (`answered`) is not the day
/// asked: a weekend or a holiday answers the business day before it, a
/// date after the data or in the future the latest day published. `today`
/// is the UTC date; `data_ends` the last day of the embedded server's data.
fn date_note(asked: NaiveDate, answered: NaiveDate, today: NaiveDate, data_ends: Option<NaiveDate>) -> Option<String> {
    if answered >= asked {
        // The day itself, or a later one (a wrong answer, reported as such).
        return None;
    }
    let day = asked.format("%A");
    let weekend = matches!(asked.weekday(), Weekday::Sat | Weekday::Sun);
    let (why, which) = match data_ends {
        _ if asked > today => (format!("{asked} ({day}) is in the future"), "the latest day published"),
        Some(end) if asked > end => {
            (format!("no rates for {asked} ({day}): the data ends on {end}"), "the latest day published")
        }
        _ if weekend => (format!("no rates for {asked} ({day})"), "the business day before"),
        // An API's latest day may be published late: yesterday may still
        // be missing today.
        None if asked >= today - chrono::Days::new(1) => {
            (format!("no rates for {asked} ({day}): a holiday, or not published yet"), "the latest day published")
        }
        _ => (format!("no rates for {asked} ({day}, a holiday)"), "the business day before"),
    };
    Some(format!("note: {why}; the answer is of {answered}, {which}"))
}

pub(crate) fn run(args: FetchArgs) -> anyhow::Result<ExitCode> {
    let config = RunConfig::new(&args.client, &args.sim, args.workers, Defaults::FETCH)?;
    let trace = args.trace.open(if config.queue.is_some() { "queue" } else { args.model.name() })?;
    // With `--api` and the embedded data, nothing needs the table: parsing
    // it would only slow the start.
    let ds = match (&config.target, &args.client.data) {
        (Target::Remote(_), None) => None,
        (_, data) => Some(dataset(data.as_ref())?),
    };
    let embedded = ds.as_ref().filter(|_| config.embedded().is_some());
    let plan = plan(&args, embedded.map_or(API_FIRST_DAY, |ds| ds.first_day()))?;
    let store = match &config.target {
        Target::Remote(_) => cache::codes_store(&args.cache),
        Target::Embedded(_) => None,
    };
    let accepted = session::accepted_codes(&config, embedded.map(|ds| &**ds), store.as_ref(), false);
    drop(store);
    let bases: Vec<Currency> = plan.requests.iter().map(|r| r.base).collect();
    accepted.check("bases", &bases)?;
    accepted.check("symbols", &plan.symbols)?;
    let data_ends = embedded.map(|ds| ds.last_day());
    let data = args.client.data.clone();
    let session = Session::start(|| ds.map_or_else(|| dataset(data.as_ref()), Ok), &config, None)?;
    let ran = session.with_trace(trace.clone()).run(args.model, &plan.requests)?;
    trace.as_ref().map(rates_core::Trace::finish).transpose()?;
    ran.say_learnt();

    let answers: Vec<&rates_core::Rates> = ran.outcomes.iter().filter_map(|o| o.as_ref().ok()).collect();
    let mut out = std::io::stdout().lock();
    match args.format {
        Format::Table => {
            for r in &answers {
                writeln!(out, "{}", present::chapter_line(r, &plan.symbols))?;
            }
            writeln!(out, "\n{}", present::elapsed_line(ran.elapsed))?;
        }
        Format::Json => writeln!(out, "{}", present::json(&answers, &plan.symbols))?,
        Format::Csv => write!(out, "{}", present::csv(&answers, &plan.symbols))?,
    }
    out.flush()?;
    if let Some(asked) = plan.date {
        let today = chrono::Utc::now().date_naive();
        if let Some(note) = answers.iter().find_map(|r| date_note(asked, r.date, today, data_ends)) {
            eprintln!("rates: {note}");
        }
    }

    let cancelled: Vec<String> = plan
        .requests
        .iter()
        .zip(&ran.outcomes)
        .filter(|(_, o)| matches!(o, Err(f) if f.error == rates_core::FetchError::Cancelled))
        .map(|(req, _)| req.base.to_string())
        .collect();
    if !cancelled.is_empty() {
        eprintln!("rates: not fetched: {}", cancelled.join(", "));
    }
    let failures =
        plan.requests.iter().zip(&ran.outcomes).filter_map(|(req, o)| o.as_ref().err().map(|f| (req.to_string(), f)));
    Ok(session::report(answers.len(), failures, ran.stopped))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn d(s: &str) -> NaiveDate {
        rates_core::parse_date(s).unwrap_or_default()
    }

    #[test]
    fn a_day_answered_for_another_says_why() {
        let today = d("2026-12-15");
        let note = |asked, answered, ends| date_note(d(asked), d(answered), today, ends);
        assert_eq!(note("2024-03-28", "2024-03-28", None), None);
        assert_eq!(
            note("2024-03-30", "2024-03-28", None).as_deref(),
            Some("note: no rates for 2024-03-30 (Saturday); the answer is of 2024-03-28, the business day before")
        );
        assert_eq!(
            note("2024-03-29", "2024-03-28", None).as_deref(),
            Some(
                "note: no rates for 2024-03-29 (Friday, a holiday); the answer is of 2024-03-28, the business day before"
            )
        );
        assert_eq!(
            note("2030-01-01", "2026-12-14", None).as_deref(),
            Some("note: 2030-01-01 (Tuesday) is in the future; the answer is of 2026-12-14, the latest day published")
        );
        let after = note("2026-11-03", "2026-10-30", Some(d("2026-10-30"))).unwrap_or_default();
        assert!(
            after.contains("the data ends on 2026-10-30") && after.ends_with("the latest day published"),
            "{after}"
        );
        // Yesterday, with an API: perhaps not published yet.
        let late = note("2026-12-14", "2026-12-11", None).unwrap_or_default();
        assert!(late.contains("not published yet") && late.ends_with("the latest day published"), "{late}");
        assert!(note("2026-12-14", "2026-12-11", Some(d("2026-12-31"))).unwrap_or_default().contains("a holiday)"));
    }
}
