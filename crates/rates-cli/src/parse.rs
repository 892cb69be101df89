//! Parsers of the command line's values (`50ms`, `1.5s`, `0.3`, `2/s`,
//! worker counts, capacities), each a clap `value_parser`: a bad value is
//! refused while the arguments are parsed, with an error that names it and
//! shows the expected form.

use std::num::NonZeroUsize;
use std::time::Duration;

use concur::throttle::Quota;

/// Parses a duration such as `50ms`, `1.5s`, `2m`, `1h`, `250us` or `0`.
pub fn duration(s: &str) -> Result<Duration, String> {
    let bad = || format!("invalid duration '{s}': expected a number with a unit, e.g. 50ms, 1.5s, 2m");
    let t = s.trim();
    if t == "0" {
        return Ok(Duration::ZERO);
    }
    let split = t.find(|c: char| c.is_ascii_alphabetic()).ok_or_else(bad)?;
    let (num, unit) = t.split_at(split);
    let n: f64 = num.trim().parse().map_err(|_| bad())?;
    let secs = match unit {
        "us" | "µs" => n / 1e6,
        "ms" => n / 1e3,
        "s" => n,
        "m" | "min" => n * 60.0,
        "h" => n * 3600.0,
        _ => return Err(bad()),
    };
    if !(0.0..=1e9).contains(&secs) {
        return Err(bad());
    }
    Ok(Duration::from_secs_f64(secs))
}

/// Parses a fraction between 0 and 1, e.g. a failure rate: `0.3` or `30%`.
pub fn fraction(s: &str) -> Result<f64, String> {
    let bad = || format!("invalid fraction '{s}': expected a number from 0 to 1, e.g. 0.3 or 30%");
    let v = match s.trim().strip_suffix('%') {
        Some(p) => p.trim().parse::<f64>().map_err(|_| bad())? / 100.0,
        None => s.trim().parse::<f64>().map_err(|_| bad())?,
    };
    if (0.0..=1.0).contains(&v) { Ok(v) } else { Err(bad()) }
}

/// Parses a rate, e.g. requests per second: `20`, `0.5`, `2/s`; at least
/// one a day, as any [`Quota`]'s.
pub fn rate(s: &str) -> Result<f64, String> {
    let t = s.trim();
    let t = t.strip_suffix("/s").unwrap_or(t);
    let v: f64 =
        t.parse().map_err(|_| format!("invalid rate '{s}': expected a positive number per second, e.g. 20 or 2/s"))?;
    Quota::check_rate(v).map_err(|e| format!("invalid rate '{s}': {}", e.expected()))
}

/// A `--rate` value: a fixed rate, or `auto`, learnt from the server's
/// answers (429s, `Retry-After`, rate-limit headers).
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum RateArg {
    /// At most this many requests per second.
    Fixed(f64),
    /// Learnt while the run goes.
    Auto,
}

/// Parses `--rate`: a rate ([`rate`]) or `auto`.
pub fn rate_or_auto(s: &str) -> Result<RateArg, String> {
    match s.trim() {
        "auto" => Ok(RateArg::Auto),
        _ => rate(s).map(RateArg::Fixed).map_err(|e| format!("{e}, or auto")),
    }
}

/// The longest time limit of one request accepted.
pub const MAX_TIMEOUT: Duration = Duration::from_secs(3600);

/// Parses a request's time limit: a duration above 0 and at most an hour.
pub fn timeout(s: &str) -> Result<Duration, String> {
    let d = duration(s)?;
    if d.is_zero() || d > MAX_TIMEOUT {
        return Err(format!("invalid timeout '{s}': expected more than 0 and at most 1h, e.g. 10s"));
    }
    Ok(d)
}

/// A `--workers` value: a fixed bound on the requests in flight, or `auto`,
/// a bound learnt from the latency of the answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WorkersArg {
    /// This many (or as many as there are items).
    Fixed(rates_core::Workers),
    /// Learnt while the run goes.
    Auto,
}

/// The most requests in flight a `--workers` number may ask for.
pub const MAX_WORKERS: usize = 100_000;

/// Parses a worker count: a number from 1 to [`MAX_WORKERS`],
/// `unlimited` for as many as there are items, or `auto`. Zero workers
/// is refused, as everywhere.
pub fn workers(s: &str) -> Result<WorkersArg, String> {
    match s.trim() {
        "unlimited" => Ok(WorkersArg::Fixed(rates_core::Workers::Unlimited)),
        "auto" => Ok(WorkersArg::Auto),
        t => match t.parse::<usize>().ok().filter(|n| *n <= MAX_WORKERS).and_then(rates_core::Workers::bounded) {
            Some(w) => Ok(WorkersArg::Fixed(w)),
            None => Err(format!(
                "invalid worker count '{s}': expected a number from 1 to {MAX_WORKERS}, unlimited, or auto"
            )),
        },
    }
}

/// Parses a number of tasks run at once: 1 or more.
pub fn concurrency(s: &str) -> Result<NonZeroUsize, String> {
    s.trim().parse().map_err(|_| format!("invalid concurrency '{s}': expected a number of tasks, at least 1"))
}

/// Parses a server's capacity: a number of requests from 1 to the most a
/// server allows ([`rates_server::MAX_CAPACITY`]).
pub fn capacity(s: &str) -> Result<usize, String> {
    match s.trim().parse::<usize>() {
        Ok(n) if (1..=rates_server::MAX_CAPACITY).contains(&n) => Ok(n),
        _ => Err(format!(
            "invalid capacity '{s}': expected a number of requests from 1 to {}",
            rates_server::MAX_CAPACITY
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(duration("50ms"), Ok(Duration::from_millis(50)));
        assert_eq!(duration("1.5s"), Ok(Duration::from_millis(1500)));
        assert_eq!(duration("2m"), Ok(Duration::from_secs(120)));
        assert_eq!(duration("250us"), Ok(Duration::from_micros(250)));
        assert_eq!(duration("0"), Ok(Duration::ZERO));
        for bad in ["", "5", "5x", "ms", "-1s", "1e400s"] {
            let e = duration(bad).expect_err(bad);
            assert!(e.contains(&format!("'{bad}'")), "{e}");
        }
    }

    #[test]
    fn worker_counts() {
        assert_eq!(workers("8"), Ok(WorkersArg::Fixed(rates_core::Workers::bounded(8).expect("not zero"))));
        assert_eq!(workers("unlimited"), Ok(WorkersArg::Fixed(rates_core::Workers::Unlimited)));
        assert_eq!(workers("auto"), Ok(WorkersArg::Auto));
        assert!(workers("-1").is_err_and(|e| e.contains("'-1'")));
        // Zero workers is an error, as in every pool; `unlimited` says all.
        assert!(workers("0").is_err_and(|e| e.contains("'0'") && e.contains("unlimited")));
        assert_eq!(
            workers("100000"),
            Ok(WorkersArg::Fixed(rates_core::Workers::bounded(MAX_WORKERS).expect("not zero")))
        );
        assert!(workers("100001").is_err());
        assert_eq!(concurrency("8").map(NonZeroUsize::get), Ok(8));
        for bad in ["0", "-1", "x"] {
            assert!(concurrency(bad).is_err_and(|e| e.contains(&format!("'{bad}'"))), "{bad}");
        }
    }

    #[test]
    fn capacities() {
        assert_eq!(capacity("8"), Ok(8));
        assert_eq!(capacity("1048576"), Ok(rates_server::MAX_CAPACITY));
        for bad in ["0", "x", "-3", "1048577"] {
            assert!(capacity(bad).is_err_and(|e| e.contains(&format!("'{bad}'")) && e.contains("capacity")), "{bad}");
        }
    }

    #[test]
    fn fractions_and_rates() {
        assert_eq!(fraction("0.3"), Ok(0.3));
        assert_eq!(fraction("25%"), Ok(0.25));
        assert!(fraction("1.5").is_err() && fraction("x").is_err());
        assert_eq!(rate("2/s"), Ok(2.0));
        assert_eq!(rate("0.5"), Ok(0.5));
        assert_eq!(rate_or_auto("auto"), Ok(RateArg::Auto));
        assert_eq!(rate_or_auto("2/s"), Ok(RateArg::Fixed(2.0)));
        assert!(rate_or_auto("fast").is_err_and(|e| e.contains("'fast'") && e.contains("auto")));
        assert!(rate("0").is_err() && rate("-1").is_err() && rate("inf").is_err());
        // A day per request is the slowest; slower would wait beyond a day.
        assert!(rate("0.0000116").is_ok());
        for slow in ["1e-300", "0.00001"] {
            assert!(rate(slow).is_err_and(|e| e.contains(&format!("'{slow}'")) && e.contains("a day")), "{slow}");
        }
    }

    #[test]
    fn timeouts() {
        assert_eq!(timeout("10s"), Ok(Duration::from_secs(10)));
        assert_eq!(timeout("1h"), Ok(MAX_TIMEOUT));
        assert_eq!(timeout("60m"), Ok(MAX_TIMEOUT));
        for bad in ["0", "0s", "61m", "1e9s"] {
            assert!(timeout(bad).is_err_and(|e| e.contains(&format!("'{bad}'"))), "{bad}");
        }
    }
}
