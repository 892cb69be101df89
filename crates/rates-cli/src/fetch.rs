//! `rates fetch`: the chapter's application. Fetch the rates of each base
//! with the chosen model, print the chapter's lines (or JSON, or CSV), and
//! report each failure once.

use std::io::Write;
use std::process::ExitCode;

use clap::{Args, ValueEnum};
use rates::{Currency, Model, RateRequest, present};

use crate::config::{Defaults, RunConfig};
use crate::flags::{ClientFlags, SimFlags};
use crate::session::{self, Session, known_currencies};
use crate::{Usage, cli, dataset};

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
    /// Requests in flight at once for the pooled and async models (0 or "unlimited": all; auto: learnt from latency).
    #[arg(long, default_value = "4", value_parser = cli::workers)]
    pub workers: cli::WorkersArg,
    /// Base currencies, comma-separated.
    #[arg(long, default_value = rates::CHAPTER_CURRENCIES)]
    pub bases: String,
    /// Currencies to show, comma-separated.
    #[arg(long, default_value = rates::CHAPTER_CURRENCIES)]
    pub symbols: String,
    /// The day (YYYY-MM-DD); the latest when omitted.
    #[arg(long)]
    pub date: Option<String>,
    /// Output format.
    #[arg(long, value_enum, default_value = "table")]
    pub format: Format,
    #[command(flatten)]
    pub client: ClientFlags,
    #[command(flatten)]
    pub sim: SimFlags,
}

/// The validated requests of a `fetch`: refused before any work if bad.
struct Plan {
    requests: Vec<RateRequest>,
    symbols: Vec<Currency>,
}

fn plan(args: &FetchArgs, known: impl Fn(Currency) -> bool + Copy) -> Result<Plan, Usage> {
    let bases = known_currencies(known, "bases", &args.bases)?;
    let symbols = known_currencies(known, "symbols", &args.symbols)?;
    let date = args.date.as_deref().map(rates::parse_date).transpose().map_err(|e| Usage(format!("--date: {e}")))?;
    let requests = bases.into_iter().map(|base| RateRequest { base, symbols: symbols.clone(), date }).collect();
    Ok(Plan { requests, symbols })
}

pub(crate) fn run(args: FetchArgs) -> anyhow::Result<ExitCode> {
    // With `--api` and the embedded data, the codes come from the data's
    // header alone: parsing the whole table would only slow the start.
    let ds = match (&args.client.api, &args.client.data) {
        (Some(_), None) => None,
        (_, data) => Some(dataset(data.as_ref())?),
    };
    let plan = match &ds {
        Some(ds) => plan(&args, |c| ds.knows(c))?,
        None => plan(&args, |c| rates::Dataset::embedded_currencies().contains(&c))?,
    };
    let config = RunConfig::new(&args.client, &args.sim, Defaults::FETCH)?;
    config.workers(args.workers)?;
    let data = args.client.data.clone();
    let session = Session::start(|| ds.map_or_else(|| dataset(data.as_ref()), Ok), &config, None)?;
    let ran = session.run(args.model, &plan.requests, args.workers)?;
    if let Some(learnt) = &ran.learnt {
        eprintln!("rates: {learnt}");
    }

    let answers: Vec<&rates::Rates> = ran.outcomes.iter().filter_map(|o| o.as_ref().ok()).collect();
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

    let cancelled: Vec<String> = plan
        .requests
        .iter()
        .zip(&ran.outcomes)
        .filter(|(_, o)| matches!(o, Err(f) if f.error == rates::FetchError::Cancelled))
        .map(|(req, _)| req.base.to_string())
        .collect();
    if !cancelled.is_empty() {
        eprintln!("rates: not fetched: {}", cancelled.join(", "));
    }
    let failures =
        plan.requests.iter().zip(&ran.outcomes).filter_map(|(req, o)| o.as_ref().err().map(|f| (req.to_string(), f)));
    Ok(session::report(answers.len(), failures, ran.stopped))
}
