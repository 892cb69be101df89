/*!
`rates history`: a currency's rates over a range of days, one request per
weekday, with any concurrency model.

A multi-year range is thousands of independent requests, the workload the
chapter's models are for. Each weekday is asked for; a holiday answers the
business day before it (`docs/API.md`), which is dropped, so the output holds
exactly the business days of the range, in date order. A day that still
fails after retries is named on stderr and the exit code is 1, but every
row that arrived is written. Progress is a bar on stderr, hidden when
stderr is not a terminal. Against the public service, `--rate 2 --burst 4`
keeps within its limit.

Bad input is refused before any request for rates, with exit code 2: the
codes, checked against those the API accepts
([`crate::session::accepted_codes`]), and a range with no business day.
With the embedded server the dataset knows the business days, so a range
of weekends and holidays is refused at once. With `--api` only a range
without a weekday is refused at once (the API's calendar is its own);
weekdays that are all holidays are asked for, and when every one is
answered with an earlier day the run says so and exits with 2 as well,
writing no rows (the store remembers those days, so asking again costs
no request).

With an external API, the answers are kept in the local store
([`rates_core::store`]) as they arrive, and only the days the store lacks are
asked for: a stopped run resumes, a repeated one makes no request, and
`--offline` makes none at all. Days without data (failed, stopped, or not
stored) are named on stderr, and the chart's lines break at them.

On a queue (`--queue`), the run is a job of the queue whose id is said on
stderr when it starts and again if a signal stops it; `--resume JOB` takes
that job up within its time to live (`queue::RESUMABLE_FOR`): the days it
already has are not fetched again ([`crate::queue::run_job`]).
*/

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::{Arc, OnceLock};

use chrono::{Datelike, NaiveDate, Weekday};
use clap::{Args, ValueEnum};
use indicatif::{ProgressBar, ProgressStyle};
use rates_core::store::{Stored, Writer};
use rates_core::{Currency, Failure, Model, RateRequest, Rates, present};

use crate::cache::HistoryStore;
use crate::config::{Defaults, RunConfig};
use crate::flags::{ClientFlags, SimFlags, StoreFlags, TraceFlag};
use crate::output::OutFile;
use crate::queue::QueueJob;
use crate::session::{self, Ran, Session, parse_currencies};
use crate::{Usage, dataset, parse, plot};

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
    /// Requests in flight at once for the pooled and async models ("unlimited": all; auto: learnt from latency).
    #[arg(long, default_value = "8", value_parser = parse::workers)]
    pub workers: parse::WorkersArg,
    /// Output format.
    #[arg(long, value_enum, default_value = "csv")]
    pub format: HistoryFormat,
    /// Write the series to this file instead of stdout.
    #[arg(long, value_name = "FILE")]
    pub out: Option<PathBuf>,
    /// Also draw the series as a line chart in this SVG file.
    #[arg(long, value_name = "FILE")]
    pub plot: Option<PathBuf>,
    /// With --queue: resume the job of a stopped run (its id is said on stderr when a run starts and
    /// when it stops), with the same --base, --symbols, --from and --to: the days it already fetched
    /// are kept, and only the missing ones are fetched. A stopped run can be resumed for 60 s.
    #[arg(long, value_name = "JOB", requires = "queue")]
    pub resume: Option<String>,
    #[command(flatten)]
    pub client: ClientFlags,
    #[command(flatten)]
    pub sim: SimFlags,
    #[command(flatten)]
    pub store: StoreFlags,
    #[command(flatten)]
    pub trace: TraceFlag,
}

/// Every Monday to Friday from `from` to `to`, both included.
pub(crate) fn weekdays(from: NaiveDate, to: NaiveDate) -> Vec<NaiveDate> {
    from.iter_days().take_while(|d| *d <= to).filter(|d| !matches!(d.weekday(), Weekday::Sat | Weekday::Sun)).collect()
}

/// The validated request of a `history`: refused before any work if bad.
struct Plan {
    base: Currency,
    symbols: Vec<Currency>,
    /// The range asked for, clipped to the days that can have data.
    from: NaiveDate,
    to: NaiveDate,
    days: Vec<NaiveDate>,
    /// What the clipping changed, to say on stderr.
    notes: Vec<String>,
}

/// Checks the arguments and clips the range to the days that can have data:
/// from the dataset's first day to its last (with the embedded server) or
/// to today (with `--api`, whose data may be newer). A range with no such
/// day is refused; one that reaches beyond them is clipped and a note says
/// so, so that `--from 0001-01-01` means "from the start" and cannot ask
/// for millions of days. A range with no business day is refused too: with
/// the embedded server, by the dataset's business days; with `--api`, when
/// it has no weekday (one whose weekdays are all holidays is told by the
/// answers, see [`run`]). Whether the API accepts the codes is asked
/// after ([`session::accepted_codes`]).
fn plan(args: &HistoryArgs, ds: &rates_core::Dataset, remote: bool, today: NaiveDate) -> Result<Plan, Usage> {
    let base = match parse_currencies("base", &args.base)?[..] {
        [base] => base,
        _ => return Err(Usage(format!("--base: expected one currency, got '{}'", args.base))),
    };
    // Never empty: an empty list is refused as an invalid code.
    let symbols = parse_currencies("symbols", &args.symbols)?;
    let from = rates_core::parse_date(&args.from).map_err(|e| Usage(format!("--from: {e}")))?;
    let to = rates_core::parse_date(&args.to).map_err(|e| Usage(format!("--to: {e}")))?;
    if from > to {
        return Err(Usage(format!("--from {from} is after --to {to}")));
    }
    let first = ds.first_day();
    let last = if remote { today.max(ds.last_day()) } else { ds.last_day() };
    if to < first || from > last {
        return Err(Usage(format!(
            "--from {from} --to {to}: no data in this range (data runs from {first} to {last})"
        )));
    }
    let mut notes = Vec::new();
    if from < first {
        notes.push(format!("--from {from} is before the first day of data: starting at {first}"));
    }
    if to > last {
        notes.push(format!("--to {to} is after the last day of data: ending at {last}"));
    }
    let asked = (from, to);
    let (from, to) = (from.max(first), to.min(last));
    let days = weekdays(from, to);
    let span = format!("{} {from} to {} {to}", from.format("%A"), to.format("%A"));
    let none = if remote {
        days.is_empty().then(|| format!("{span} has no weekday"))
    } else {
        // The embedded server answers from this dataset: its business days.
        let business = ds.days();
        let at = business.partition_point(|d| *d < from);
        (business.get(at).is_none_or(|d| *d > to)).then(|| format!("the data has no rates from {span}"))
    };
    if let Some(why) = none {
        return Err(Usage(format!("--from {} --to {}: no business day in this range: {why}", asked.0, asked.1)));
    }
    Ok(Plan { base, symbols, from, to, days, notes })
}

/// `days` (in order) as ranges of consecutive entries, e.g.
/// `2020-03-02..2020-05-29 (65 days), 2020-07-01`: at most `max` ranges,
/// then how many more.
fn ranges(days: &[NaiveDate], all: &[NaiveDate], max: usize) -> String {
    let mut runs: Vec<(NaiveDate, NaiveDate, usize)> = Vec::new();
    let mut at = 0;
    for &d in days {
        // Consecutive in `all`: no asked day lies between this and the last.
        let next = all[at..].iter().position(|x| *x == d).map_or(at, |i| at + i);
        match runs.last_mut() {
            Some((_, end, n)) if next > 0 && all[next - 1] == *end => {
                *end = d;
                *n += 1;
            }
            _ => runs.push((d, d, 1)),
        }
        at = next;
    }
    let mut parts: Vec<String> = runs
        .iter()
        .take(max)
        .map(|&(a, b, n)| if n == 1 { a.to_string() } else { format!("{a}..{b} ({n} days)") })
        .collect();
    if runs.len() > max {
        parts.push(format!("and {} more ranges", runs.len() - max));
    }
    parts.join(", ")
}

/// What became of one day asked for.
enum Day<'a> {
    /// Its rates.
    Row(&'a Rates),
    /// Not a business day: the API answered with an earlier one.
    Closed,
    /// Failed or stopped.
    Failed(&'a Failure),
    /// `--offline`, and not in the store.
    NotStored,
}

pub(crate) fn run(args: HistoryArgs) -> anyhow::Result<ExitCode> {
    let ds = dataset(args.client.data.as_ref())?;
    let config = RunConfig::new(&args.client, &args.sim, args.workers, Defaults::FETCH)?;
    let plan = plan(&args, &ds, config.embedded().is_none(), chrono::Utc::now().date_naive())?;
    let store = HistoryStore::open(&args.store, &config.target)?;
    let trace = args.trace.open(if config.queue.is_some() { "queue" } else { args.model.name() })?;
    // Proven writable before any request: results are not fetched to be lost.
    let out_file = args.out.as_deref().map(|p| OutFile::create("--out", p)).transpose()?;
    let plot_file = args.plot.as_deref().map(|p| plot::svg_file("--plot", p)).transpose()?;
    // The last check, as it may ask the API (its /currencies, once a day).
    let offline = store.as_ref().is_some_and(|s| s.offline);
    let accepted = session::accepted_codes(&config, Some(&ds), store.as_ref().and_then(HistoryStore::store), offline);
    accepted.check("base", &[plan.base])?;
    accepted.check("symbols", &plan.symbols)?;
    for note in &plan.notes {
        eprintln!("rates: {note}");
    }

    // Only the days the store lacks are asked for.
    let stored = match &store {
        Some(s) => s.lookup(plan.base, &plan.symbols, &plan.days)?,
        None => vec![Stored::Missing; plan.days.len()],
    };
    // Each with its place in the whole range: its item number in a job.
    let (wanted_at, wanted): (Vec<u64>, Vec<NaiveDate>) = plan
        .days
        .iter()
        .zip(&stored)
        .enumerate()
        .filter(|(_, (_, s))| **s == Stored::Missing)
        .map(|(i, (d, _))| (i as u64, *d))
        .unzip();
    let writer = match store {
        Some(s) if !offline && !wanted.is_empty() => s.writer(&plan.symbols, wanted.len())?,
        _ => None,
    };
    let ran = if offline || wanted.is_empty() {
        // Nothing to ask: no server, no connection.
        None
    } else {
        Some(fetch(&args, ds, (&config, trace.clone()), &plan, (&wanted, wanted_at), writer.as_ref())?)
    };
    trace.as_ref().map(rates_core::Trace::finish).transpose()?;
    let job = ran.as_ref().and_then(|(_, job)| job.clone());
    let ran = ran.map(|(ran, _)| ran);
    let fetched: &[rates_core::Outcome] = ran.as_ref().map_or(&[], |r| &r.outcomes);

    // Every day asked, in date order, from the store or the run.
    let mut answers = wanted.iter().zip(fetched);
    let days: Vec<(NaiveDate, Day)> = plan
        .days
        .iter()
        .zip(&stored)
        .map(|(&day, s)| {
            let what = match s {
                Stored::Rates(r) => Day::Row(r),
                Stored::Closed(_) => Day::Closed,
                Stored::Missing => match answers.next() {
                    // A holiday answers an earlier business day: dropped,
                    // so each business day appears once.
                    Some((_, Ok(r))) if r.date == day => Day::Row(r),
                    Some((_, Ok(_))) => Day::Closed,
                    Some((_, Err(f))) => Day::Failed(f),
                    None => Day::NotStored,
                },
            };
            (day, what)
        })
        .collect();
    if let Some(writer) = writer {
        finish_store(writer, plan.base, &wanted, fetched);
    }

    // Weekdays that all answered an earlier day: holidays only, which the
    // answers told (the embedded server's were refused by the plan).
    if !days.is_empty() && days.iter().all(|(_, d)| matches!(d, Day::Closed)) {
        eprintln!(
            "rates: --from {} --to {}: no business day in this range: every weekday was answered with an earlier \
             day (holidays)",
            plan.from, plan.to
        );
        return Ok(crate::exit::code(crate::exit::USAGE));
    }
    let rows: Vec<&Rates> =
        days.iter().filter_map(|(_, d)| if let Day::Row(r) = d { Some(*r) } else { None }).collect();
    let missing: Vec<NaiveDate> =
        days.iter().filter(|(_, d)| matches!(d, Day::Failed(_) | Day::NotStored)).map(|(day, _)| *day).collect();
    let text = match args.format {
        HistoryFormat::Csv => present::series_csv(&rows, &plan.symbols),
        HistoryFormat::Json => present::json(&rows, &plan.symbols) + "\n",
    };
    match out_file {
        Some(file) => file.commit(text.as_bytes())?,
        None => {
            let mut out = std::io::stdout().lock();
            out.write_all(text.as_bytes())?;
            out.flush()?;
        }
    }
    if let Some(file) = plot_file {
        draw(file, &plan, &days, missing.len())?;
    }

    // Failed days are named one by one below; days a signal stopped, or
    // not in the store, are too many for that: their ranges are named, for
    // a new run to ask.
    let cancelled: Vec<NaiveDate> = days
        .iter()
        .filter(|(_, d)| matches!(d, Day::Failed(f) if f.error == rates_core::FetchError::Cancelled))
        .map(|(day, _)| *day)
        .collect();
    if !cancelled.is_empty() {
        eprintln!("rates: not fetched: {}", ranges(&cancelled, &plan.days, 20));
    }
    if let (Some(job), Some(_)) = (&job, ran.as_ref().and_then(|r| r.stopped)) {
        eprintln!(
            "rates: job {job} stopped: resume it within {} with --resume {job} (and the same --base, --symbols, \
             --from and --to)",
            crate::queue::RESUMABLE_FOR
        );
    }
    if offline {
        let absent: Vec<NaiveDate> =
            days.iter().filter(|(_, d)| matches!(d, Day::NotStored)).map(|(day, _)| *day).collect();
        if absent.is_empty() {
            return Ok(crate::exit::code(crate::exit::SUCCESS));
        }
        eprintln!("rates: not in the store: {}", ranges(&absent, &plan.days, 20));
        eprintln!("rates: {} ok, {} not in the store", rows.len(), absent.len());
        return Ok(crate::exit::code(crate::exit::FAILED));
    }
    let failures =
        days.iter().filter_map(|(day, d)| if let Day::Failed(f) = d { Some((day.to_string(), *f)) } else { None });
    Ok(session::report(rows.len(), failures, ran.as_ref().and_then(|r| r.stopped)))
}

/// Stores the days the API answered with an earlier one (holidays), so
/// they are not asked again, and waits for every answer to be stored. The
/// answers themselves were handed over as they arrived. A store that
/// failed costs the next run requests, not this run its output: a warning.
fn finish_store(writer: Writer, base: Currency, wanted: &[NaiveDate], fetched: &[rates_core::Outcome]) {
    let sink = writer.sink();
    for (day, outcome) in wanted.iter().zip(fetched) {
        if let Ok(r) = outcome
            && r.date < *day
        {
            sink.closed(base, *day, r.date);
        }
    }
    let written = writer.finish();
    if let Some(e) = written.error {
        eprintln!("rates: {e}: {} answers not stored", written.lost);
    }
}

/// What the job of a run on a queue is: its base, symbols and range
/// (which give its days), as text.
fn describe(plan: &Plan) -> String {
    let symbols: Vec<&str> = plan.symbols.iter().map(Currency::as_str).collect();
    format!("history of {} in {} from {} to {}", plan.base, symbols.join(","), plan.from, plan.to)
}

/// Asks for `wanted` (each with its place in the plan's days) with the
/// run's model, a progress bar on stderr, and each answer handed to
/// `writer` as it arrives. On a queue, the requests are a job that can be
/// resumed, whose id comes back with the run.
fn fetch(
    args: &HistoryArgs,
    ds: Arc<rates_core::Dataset>,
    (config, trace): (&RunConfig, Option<rates_core::Trace>),
    plan: &Plan,
    (wanted, wanted_at): (&[NaiveDate], Vec<u64>),
    writer: Option<&Writer>,
) -> anyhow::Result<(Ran, Option<String>)> {
    let requests: Vec<RateRequest> = wanted
        .iter()
        .map(|&day| RateRequest { base: plan.base, symbols: plan.symbols.clone(), date: Some(day) })
        .collect();
    let bar: ProgressBar = crate::logging::progress_bar(requests.len() as u64);
    bar.set_style(
        ProgressStyle::with_template("{spinner} {pos}/{len} days [{bar:40}] {per_sec:1}, {eta} left")
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            .progress_chars("=> "),
    );
    let tick = bar.clone();
    let sink = writer.map(Writer::sink);
    let progress: rates_core::Progress = Arc::new(move |outcome: &rates_core::Outcome| {
        tick.inc(1);
        if let (Some(sink), Ok(r)) = (&sink, outcome) {
            sink.answer(r);
        }
    });
    let job = config.queue.as_ref().map(|_| {
        Arc::new(QueueJob {
            resume: args.resume.clone(),
            about: describe(plan),
            items: wanted_at,
            progress: Some(Arc::clone(&progress)),
            id: OnceLock::new(),
        })
    });
    let mut session = Session::start(|| Ok(ds), config, Some(progress))?.with_trace(trace);
    if let Some(job) = &job {
        session = session.with_job(Arc::clone(job));
    }
    let ran = session.run(args.model, &requests)?;
    bar.finish_and_clear();
    ran.say_learnt();
    Ok((ran, job.and_then(|j| j.id.get().cloned())))
}

/// The chart: a panel per symbol, its line broken at every missing day,
/// under a title giving the range the rows cover.
fn draw(file: OutFile, plan: &Plan, days: &[(NaiveDate, Day)], missing: usize) -> anyhow::Result<()> {
    let series: Vec<plot::Series> = plan
        .symbols
        .iter()
        .map(|&s| {
            let points = days
                .iter()
                .filter_map(|(day, d)| match d {
                    Day::Row(r) => Some((r.date, r.get(s))),
                    Day::Closed => None,
                    Day::Failed(_) | Day::NotStored => Some((*day, None)),
                })
                .collect();
            plot::Series { name: s.to_string(), unit: format!("{s} per 1 {}", plan.base), points }
        })
        .collect();
    let names: Vec<&str> = plan.symbols.iter().map(Currency::as_str).collect();
    let rows: Vec<NaiveDate> =
        days.iter().filter_map(|(day, d)| if let Day::Row(_) = d { Some(*day) } else { None }).collect();
    let gaps = if missing == 0 { String::new() } else { format!(", {missing} days missing") };
    let covered = match (rows.first(), rows.last()) {
        (Some(first), Some(last)) => format!("{first} to {last} ({} business days{gaps})", rows.len()),
        _ => format!("no data from {} to {}", plan.from, plan.to),
    };
    plot::lines(file, &format!("{} per 1 {}, {covered}", names.join(", "), plan.base), &series)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn weekdays_skip_weekends_and_include_both_ends() {
        let d = |s| rates_core::parse_date(s).unwrap_or_default();
        // Friday 2018-10-12 to Monday 2018-10-15.
        assert_eq!(weekdays(d("2018-10-12"), d("2018-10-15")), [d("2018-10-12"), d("2018-10-15")]);
        assert!(weekdays(d("2018-10-13"), d("2018-10-14")).is_empty());
        assert_eq!(weekdays(d("2018-10-01"), d("2018-12-31")).len(), 66);
    }

    #[test]
    fn missing_days_are_named_as_ranges_of_the_days_asked() {
        let d = |s| rates_core::parse_date(s).unwrap_or_default();
        let all = weekdays(d("2020-03-02"), d("2020-03-31"));
        // Friday 6th and Monday 9th are consecutive days asked.
        let missing = [d("2020-03-05"), d("2020-03-06"), d("2020-03-09"), d("2020-03-11"), d("2020-03-31")];
        assert_eq!(ranges(&missing, &all, 20), "2020-03-05..2020-03-09 (3 days), 2020-03-11, 2020-03-31");
        assert_eq!(ranges(&missing, &all, 1), "2020-03-05..2020-03-09 (3 days), and 2 more ranges");
        assert_eq!(ranges(&[], &all, 20), "");
    }

    fn args(from: &str, to: &str, api: Option<&str>) -> HistoryArgs {
        use clap::Parser;
        let mut argv = vec!["rates", "history", "--base", "USD", "--symbols", "EUR", "--from", from, "--to", to];
        if let Some(api) = api {
            argv.extend(["--api", api]);
        }
        match crate::Cli::try_parse_from(argv).expect("valid arguments").command {
            crate::Command::History(a) => a,
            other => panic!("not history: {other:?}"),
        }
    }

    #[test]
    fn ranges_beyond_the_data_are_clipped_and_said_so() {
        let ds = rates_core::Dataset::embedded();
        let today = ds.last_day() + chrono::Days::new(30);
        let p = plan(&args("0001-01-01", "9999-12-31", None), &ds, false, today).expect("clipped");
        assert_eq!((p.from, p.to), (ds.first_day(), ds.last_day()));
        assert_eq!(p.notes.len(), 2, "{:?}", p.notes);
        assert!(p.notes[0].contains("0001-01-01") && p.notes[1].contains("9999-12-31"));
        // With --api the data may be newer than ours: up to today.
        let p = plan(&args("2026-01-01", "9999-12-31", Some("http://127.0.0.1:1")), &ds, true, today).expect("clipped");
        assert_eq!(p.to, today);
        let inside = plan(&args("2020-01-01", "2020-12-31", None), &ds, false, today).expect("valid");
        assert!(inside.notes.is_empty());
        let e = plan(&args("1990-01-01", "1998-12-31", None), &ds, false, today).err().expect("no data");
        assert!(e.0.contains("no data in this range"), "{e}");
    }
}
