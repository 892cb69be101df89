//! The types of the rates API (`docs/API.md`): what a client asks for, what a
//! server answers, and the strict date syntax both sides share.

use std::collections::BTreeMap;
use std::fmt;

use chrono::NaiveDate;
use serde::{Deserialize, Serialize};

use crate::Currency;

/// One answer of `GET /rates`: the rates of `date` expressed against `base`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Rates {
    /// The business day the rates are from (a weekend asks fall back to the
    /// Friday before).
    pub date: NaiveDate,
    /// The currency the rates are expressed against.
    pub base: Currency,
    /// Units of each currency for one unit of `base`.
    pub rates: BTreeMap<Currency, f64>,
}

impl Rates {
    /// The rate of `symbol`, with the base's own rate always 1.0 (the
    /// chapter's program sets it explicitly, whatever the server sent).
    pub fn get(&self, symbol: Currency) -> Option<f64> {
        if symbol == self.base { Some(1.0) } else { self.rates.get(&symbol).copied() }
    }
}

/// One request of `GET /rates`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct RateRequest {
    /// `base`: the currency the rates are expressed against.
    pub base: Currency,
    /// `symbols`: which currencies to return; all when empty.
    pub symbols: Vec<Currency>,
    /// `date`: the day; the latest when `None`.
    pub date: Option<NaiveDate>,
}

impl RateRequest {
    /// The query string for this request, without the leading `?`.
    pub fn query(&self) -> String {
        let mut q = format!("base={}", self.base);
        if !self.symbols.is_empty() {
            q.push_str("&symbols=");
            let list: Vec<&str> = self.symbols.iter().map(Currency::as_str).collect();
            q.push_str(&list.join(","));
        }
        if let Some(d) = self.date {
            q.push_str(&format!("&date={d}"));
        }
        q
    }
}

impl fmt::Display for RateRequest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.date {
            Some(d) => write!(f, "{} on {d}", self.base),
            None => write!(f, "{}", self.base),
        }
    }
}

/// A `date` parameter that is not a strict `YYYY-MM-DD` calendar day.
///
/// The messages are the API's own (`docs/API.md`), so the server can answer with
/// them and the CLI can refuse the same input before sending it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DateError {
    /// Not of the shape `YYYY-MM-DD`.
    #[error("Invalid date format: '{0}'. Expected format: YYYY-MM-DD")]
    Format(String),
    /// The right shape, but no such day (`2024-02-30`).
    #[error("Invalid date: '{0}'. Expected a valid date in YYYY-MM-DD format.")]
    Invalid(String),
}

/// Parses a strict `YYYY-MM-DD` date: exactly ten characters, digits and two
/// dashes, and a real calendar day.
pub fn parse_date(s: &str) -> Result<NaiveDate, DateError> {
    let b = s.as_bytes();
    let shape_ok = b.len() == 10
        && b[4] == b'-'
        && b[7] == b'-'
        && b.iter().enumerate().all(|(i, c)| i == 4 || i == 7 || c.is_ascii_digit());
    if !shape_ok {
        return Err(DateError::Format(s.to_string()));
    }
    let num = |r: std::ops::Range<usize>| s[r].parse::<u32>().unwrap_or(0);
    NaiveDate::from_ymd_opt(num(0..4) as i32, num(5..7), num(8..10)).ok_or_else(|| DateError::Invalid(s.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strict_dates() {
        assert_eq!(parse_date("2018-10-12"), Ok(NaiveDate::from_ymd_opt(2018, 10, 12).expect("date")));
        for bad in ["2024", "2024-01", "abc", "2024-1-01", "2024-01-011", " 2024-01-01", "2024/01/01", "+024-01-01"] {
            assert_eq!(parse_date(bad), Err(DateError::Format(bad.into())), "{bad}");
        }
        for bad in ["2024-02-30", "2023-02-29", "2024-13-01", "2024-00-10", "2024-01-00"] {
            assert_eq!(parse_date(bad), Err(DateError::Invalid(bad.into())), "{bad}");
        }
        assert!(parse_date("2024-02-29").is_ok());
    }

    #[test]
    fn query_strings() {
        let r = RateRequest {
            base: "USD".parse().expect("code"),
            symbols: Currency::parse_list("EUR,PLN").expect("codes"),
            date: parse_date("2018-10-12").ok(),
        };
        assert_eq!(r.query(), "base=USD&symbols=EUR,PLN&date=2018-10-12");
    }

    #[test]
    fn json_shape_is_the_apis() {
        let json = r#"{"date": "2018-10-12", "base": "USD", "rates": {"EUR": 0.864006, "PLN": 3.709694, "USD": 1.0}}"#;
        let r: Rates = serde_json::from_str(json).expect("valid");
        assert_eq!(r.get("PLN".parse().expect("code")), Some(3.709694));
        let back: serde_json::Value = serde_json::from_str(&serde_json::to_string(&r).expect("ser")).expect("json");
        assert_eq!(back["date"], "2018-10-12");
        assert_eq!(back["rates"]["EUR"], 0.864006);
    }
}
