//! The ECB's euro reference rates (`eurofxref-hist`), embedded in the binary
//! and parsed once into a compact table: one row per business day, one column
//! per currency, `NaN` where the ECB published nothing (`N/A`).
//!
//! The table answers the API's questions (`API.md`): which business day a
//! date falls back to, and the cross rates of any base, rounded to 6 decimal
//! places as the public service rounds them.

use std::collections::BTreeMap;
use std::io::Read;
use std::path::Path;
use std::sync::{Arc, OnceLock};

use chrono::NaiveDate;

use crate::api::{Rates, parse_date};
use crate::{Currency, names};

/// The zip the ECB publishes, as of the project's snapshot (see `data/SOURCE.md`).
static EMBEDDED_ZIP: &[u8] = include_bytes!("../../../data/eurofxref-hist.zip");

/// The table of daily euro reference rates.
#[derive(Debug, Clone, PartialEq)]
pub struct Dataset {
    /// Business days, oldest first.
    days: Vec<NaiveDate>,
    /// The column currencies (EUR is implicit: every value is per 1 EUR).
    currencies: Vec<Currency>,
    /// Row-major `days.len() × currencies.len()`; `NaN` for `N/A`.
    values: Vec<f64>,
}

/// A dataset file that cannot be read or parsed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DatasetError {
    /// The file could not be read.
    #[error("cannot read {path}: {source}")]
    Io {
        /// The file.
        path: String,
        /// Why.
        source: std::io::Error,
    },
    /// The zip archive is broken or holds no CSV.
    #[error("bad zip archive: {0}")]
    Zip(String),
    /// A line or field of the CSV is malformed.
    #[error("line {line}, field {field}: {problem}")]
    Malformed {
        /// 1-based line number in the CSV.
        line: usize,
        /// The column's header (`Date`, `USD`, ...) or its position.
        field: String,
        /// What is wrong, naming the bad value.
        problem: String,
    },
}

/// Why the dataset cannot answer a rates question. The server maps each to
/// its status code; the messages are the API's.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RatesError {
    /// The base is not a currency the dataset has ever had.
    #[error("Base currency '{0}' is not supported.")]
    UnknownBase(String),
    /// A symbol is not a currency the dataset has ever had.
    #[error("Currency '{0}' is not supported.")]
    UnknownSymbol(String),
    /// The currency is known but the ECB published no rate for it that day.
    #[error("Currency '{0}' has no rate on {1}.")]
    NotPublished(Currency, NaiveDate),
    /// The date is before the first day of the data.
    #[error("No rate data available for the specified date.")]
    NoData,
}

/// Reads the `.csv` member of a zip archive with `read`, given a reader of
/// its decompressed bytes; an error names the member.
fn read_csv_member<T>(
    bytes: &[u8],
    read: impl FnOnce(&mut zip::read::ZipFile<'_, std::io::Cursor<&[u8]>>) -> std::io::Result<T>,
) -> Result<T, DatasetError> {
    let zip_err = |e: zip::result::ZipError| DatasetError::Zip(e.to_string());
    let mut archive = zip::ZipArchive::new(std::io::Cursor::new(bytes)).map_err(zip_err)?;
    let name = archive
        .file_names()
        .find(|n| n.to_ascii_lowercase().ends_with(".csv"))
        .map(str::to_owned)
        .ok_or_else(|| DatasetError::Zip("no .csv member".into()))?;
    let mut member = archive.by_name(&name).map_err(zip_err)?;
    read(&mut member).map_err(|e| DatasetError::Zip(format!("{name}: {e}")))
}

/// The first line of the `.csv` member of a zip archive, decompressing
/// no more than it takes.
fn header_of_zip(bytes: &[u8]) -> Result<String, DatasetError> {
    use std::io::BufRead;
    read_csv_member(bytes, |member| {
        let mut line = String::new();
        std::io::BufReader::new(member).read_line(&mut line)?;
        Ok(line.trim_end().to_string())
    })
}

impl Dataset {
    /// The embedded snapshot, parsed on first use and shared afterwards.
    pub fn embedded() -> Arc<Dataset> {
        static CELL: OnceLock<Arc<Dataset>> = OnceLock::new();
        CELL.get_or_init(|| {
            // The snapshot is part of the source tree and covered by tests, so
            // failing here is a build defect, not an input error.
            Arc::new(Dataset::from_zip(EMBEDDED_ZIP).expect("the embedded ECB dataset parses"))
        })
        .clone()
    }

    /// The currencies the embedded snapshot has ever published, EUR
    /// included, read from its header line alone: what checking a code
    /// needs, without parsing the whole table (about 18 ms) when no
    /// embedded server is started.
    pub fn embedded_currencies() -> &'static [Currency] {
        static CELL: OnceLock<Vec<Currency>> = OnceLock::new();
        CELL.get_or_init(|| {
            // As for `embedded`: the snapshot is part of the build.
            let header = header_of_zip(EMBEDDED_ZIP).expect("the embedded ECB dataset has a header");
            let mut codes: Vec<Currency> = header.split(',').skip(1).filter_map(|c| c.trim().parse().ok()).collect();
            codes.push(Currency::EUR);
            codes.sort();
            codes.dedup();
            codes
        })
    }

    /// Parses the embedded snapshot afresh (for measuring the parse).
    pub fn parse_embedded() -> Result<Dataset, DatasetError> {
        Dataset::from_zip(EMBEDDED_ZIP)
    }

    /// Loads a `eurofxref-hist.csv` or `.zip` (recognised by content).
    pub fn load(path: &Path) -> Result<Dataset, DatasetError> {
        let bytes =
            std::fs::read(path).map_err(|source| DatasetError::Io { path: path.display().to_string(), source })?;
        if bytes.starts_with(b"PK\x03\x04") {
            Dataset::from_zip(&bytes)
        } else {
            let text = std::str::from_utf8(&bytes).map_err(|e| DatasetError::Malformed {
                line: 1 + bytes[..e.valid_up_to()].iter().filter(|&&b| b == b'\n').count(),
                field: "-".into(),
                problem: "not UTF-8 text".into(),
            })?;
            Dataset::parse_csv(text)
        }
    }

    /// Parses a zip archive holding one `.csv` member.
    pub fn from_zip(bytes: &[u8]) -> Result<Dataset, DatasetError> {
        let text = read_csv_member(bytes, |member| {
            let mut text = String::with_capacity(member.size() as usize);
            member.read_to_string(&mut text)?;
            Ok(text)
        })?;
        Dataset::parse_csv(&text)
    }

    /// Parses the ECB's CSV: a header `Date,USD,JPY,...,` (trailing comma
    /// allowed), then one line per day, `N/A` where there is no rate.
    pub fn parse_csv(text: &str) -> Result<Dataset, DatasetError> {
        let mut lines = text.lines().enumerate().map(|(i, l)| (i + 1, l.trim_end_matches('\r')));
        let (_, header) = lines.next().ok_or_else(|| malformed(1, "Date", "empty file"))?;
        let mut cols = header.split(',');
        match cols.next() {
            Some("Date") => {}
            other => {
                return Err(malformed(1, "1", format!("expected 'Date', found '{}'", other.unwrap_or(""))));
            }
        }
        let mut currencies = Vec::new();
        for (i, name) in cols.enumerate() {
            let name = name.trim();
            if name.is_empty() {
                continue; // the ECB's trailing comma
            }
            let c: Currency =
                name.parse().map_err(|_| malformed(1, &(i + 2).to_string(), format!("invalid currency '{name}'")))?;
            if c == Currency::EUR || currencies.contains(&c) {
                return Err(malformed(1, name, format!("unexpected column '{name}'")));
            }
            currencies.push(c);
        }
        if currencies.is_empty() {
            return Err(malformed(1, "Date", "no currency columns"));
        }

        let mut rows: Vec<(NaiveDate, usize)> = Vec::new(); // (day, offset into values)
        let mut values = Vec::with_capacity(8_000 * currencies.len());
        for (n, line) in lines {
            if line.trim().is_empty() {
                continue;
            }
            let mut fields = line.split(',');
            let date_field = fields.next().unwrap_or("");
            let day =
                parse_date(date_field).map_err(|_| malformed(n, "Date", format!("invalid date '{date_field}'")))?;
            rows.push((day, values.len()));
            for c in &currencies {
                let f = fields.next().ok_or_else(|| malformed(n, c.as_str(), "missing field"))?.trim();
                let v = if f == "N/A" || f.is_empty() {
                    f64::NAN
                } else {
                    match f.parse::<f64>() {
                        Ok(v) if v.is_finite() && v > 0.0 => v,
                        _ => return Err(malformed(n, c.as_str(), format!("invalid rate '{f}'"))),
                    }
                };
                values.push(v);
            }
            if fields.any(|f| !f.trim().is_empty()) {
                return Err(malformed(n, "-", "more fields than the header has"));
            }
        }
        if rows.is_empty() {
            return Err(malformed(2, "Date", "no data lines"));
        }

        // The ECB lists the newest day first; keep the table oldest first.
        rows.sort_unstable_by_key(|&(d, _)| d);
        if let Some(w) = rows.windows(2).find(|w| w[0].0 == w[1].0) {
            return Err(malformed(0, "Date", format!("day {} listed twice", w[0].0)));
        }
        let width = currencies.len();
        let mut sorted = Vec::with_capacity(values.len());
        for &(_, off) in &rows {
            sorted.extend_from_slice(&values[off..off + width]);
        }
        Ok(Dataset { days: rows.into_iter().map(|(d, _)| d).collect(), currencies, values: sorted })
    }

    /// The first business day in the data.
    pub fn first_day(&self) -> NaiveDate {
        self.days[0]
    }

    /// The last business day in the data.
    pub fn last_day(&self) -> NaiveDate {
        self.days[self.days.len() - 1]
    }

    /// Every business day, oldest first.
    pub fn days(&self) -> &[NaiveDate] {
        &self.days
    }

    /// Every currency the data has ever had, EUR included, sorted.
    pub fn currencies(&self) -> Vec<Currency> {
        let mut all = self.currencies.clone();
        all.push(Currency::EUR);
        all.sort();
        all
    }

    /// Whether the data has ever had this currency (EUR always).
    pub fn knows(&self, c: Currency) -> bool {
        c == Currency::EUR || self.currencies.contains(&c)
    }

    /// The business day a date answers with: the latest on or before it, the
    /// last day for a date after the data, `None` before the first day.
    pub fn business_day(&self, date: NaiveDate) -> Option<NaiveDate> {
        self.row_of(Some(date)).map(|r| self.days[r])
    }

    fn row_of(&self, date: Option<NaiveDate>) -> Option<usize> {
        match date {
            None => Some(self.days.len() - 1),
            Some(d) => self.days.partition_point(|&day| day <= d).checked_sub(1),
        }
    }

    /// Units of `c` per 1 EUR on `row`; `None` when not published.
    fn per_eur(&self, row: usize, c: Currency) -> Option<f64> {
        if c == Currency::EUR {
            return Some(1.0);
        }
        let col = self.currencies.iter().position(|&x| x == c)?;
        let v = self.values[row * self.currencies.len() + col];
        (!v.is_nan()).then_some(v)
    }

    /// The API's answer for `base`, `symbols` (all published that day when
    /// empty) and `date` (the latest day when `None`).
    pub fn rates(&self, base: Currency, symbols: &[Currency], date: Option<NaiveDate>) -> Result<Rates, RatesError> {
        if !self.knows(base) {
            return Err(RatesError::UnknownBase(base.to_string()));
        }
        if let Some(s) = symbols.iter().find(|s| !self.knows(**s)) {
            return Err(RatesError::UnknownSymbol(s.to_string()));
        }
        let row = self.row_of(date).ok_or(RatesError::NoData)?;
        let day = self.days[row];
        let base_rate = self.per_eur(row, base).ok_or(RatesError::NotPublished(base, day))?;

        let mut rates = BTreeMap::new();
        let mut put = |c: Currency, per_eur: f64| {
            let v = if c == base { 1.0 } else { round6(per_eur / base_rate) };
            rates.insert(c, v);
        };
        if symbols.is_empty() {
            put(Currency::EUR, 1.0);
            let row_values = &self.values[row * self.currencies.len()..][..self.currencies.len()];
            for (&c, &v) in self.currencies.iter().zip(row_values) {
                if !v.is_nan() {
                    put(c, v);
                }
            }
        } else {
            for &c in symbols {
                put(c, self.per_eur(row, c).ok_or(RatesError::NotPublished(c, day))?);
            }
        }
        Ok(Rates { date: day, base, rates })
    }

    /// The `/currencies` table: code → English name (the code itself when
    /// the name is unknown), for every currency.
    pub fn currency_names(&self) -> BTreeMap<Currency, String> {
        self.currencies()
            .into_iter()
            .map(|c| (c, names::name(c).map_or_else(|| c.to_string(), str::to_owned)))
            .collect()
    }
}

fn malformed(line: usize, field: &str, problem: impl Into<String>) -> DatasetError {
    DatasetError::Malformed { line, field: field.to_string(), problem: problem.into() }
}

/// Rounds to 6 decimal places exactly as Python's `round(x, 6)` does
/// (correctly rounded from the binary value), which is what the API serves.
pub fn round6(x: f64) -> f64 {
    // Fast path: `x·10⁶` carries a relative error of one ulp, far below the
    // distance to a tie unless the fraction is close to one half, and an
    // exact integer divided by 10⁶ is the double nearest that decimal.
    let scaled = x * 1e6;
    if scaled.is_finite() && scaled.abs() < 1e12 && (scaled.fract().abs() - 0.5).abs() > 1e-3 {
        return scaled.round() / 1e6;
    }
    // Near a tie: decide on the exact decimal expansion.
    let mut buf = String::with_capacity(24);
    use std::fmt::Write;
    let _ = write!(buf, "{x:.6}");
    buf.parse().unwrap_or(x)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_header_alone_gives_every_currency_the_table_knows() {
        let ds = Dataset::embedded();
        let codes = Dataset::embedded_currencies();
        assert!(codes.contains(&Currency::EUR));
        let mut known = ds.currencies();
        known.push(Currency::EUR);
        known.sort();
        known.dedup();
        assert_eq!(codes, known.as_slice());
    }

    fn c(s: &str) -> Currency {
        s.parse().expect("valid code")
    }
    fn d(s: &str) -> NaiveDate {
        parse_date(s).expect("valid date")
    }

    #[test]
    fn embedded_snapshot_has_the_documented_shape() {
        let ds = Dataset::embedded();
        assert_eq!(ds.days().len(), 7126);
        assert_eq!(ds.first_day(), d("1999-01-04"));
        assert_eq!(ds.last_day(), d("2026-10-30"));
        assert_eq!(ds.currencies().len(), 42);
        assert!(ds.knows(c("CYP")) && ds.knows(c("EUR")) && !ds.knows(c("XYZ")));
    }

    #[test]
    fn cross_rates_match_the_published_example() {
        let r =
            Dataset::embedded().rates(c("USD"), &[c("EUR"), c("PLN"), c("USD")], Some(d("2018-10-12"))).expect("rates");
        assert_eq!(r.rates[&c("EUR")], 0.864006);
        assert_eq!(r.rates[&c("PLN")], 3.709694);
        assert_eq!(r.rates[&c("USD")], 1.0);
    }

    #[test]
    fn weekends_fall_back_and_bounds_hold() {
        let ds = Dataset::embedded();
        assert_eq!(ds.business_day(d("2018-10-13")), Some(d("2018-10-12")));
        assert_eq!(ds.business_day(d("2030-01-01")), Some(ds.last_day()));
        assert_eq!(ds.business_day(d("1999-01-03")), None);
        assert_eq!(ds.rates(Currency::EUR, &[], Some(d("1998-12-31"))), Err(RatesError::NoData));
    }

    #[test]
    fn unpublished_currencies_are_absent_or_refused() {
        let ds = Dataset::embedded();
        let all = ds.rates(Currency::EUR, &[], Some(d("2020-01-02"))).expect("rates");
        assert!(!all.rates.contains_key(&c("CYP")));
        assert_eq!(all.rates[&Currency::EUR], 1.0);
        assert_eq!(
            ds.rates(c("CYP"), &[], Some(d("2020-01-02"))),
            Err(RatesError::NotPublished(c("CYP"), d("2020-01-02")))
        );
        assert_eq!(
            ds.rates(Currency::EUR, &[c("RUB")], Some(d("2024-01-02"))),
            Err(RatesError::NotPublished(c("RUB"), d("2024-01-02")))
        );
    }

    #[test]
    fn malformed_csv_names_line_and_field() {
        let head = "Date,USD,JPY,\n";
        let err = |body: &str| Dataset::parse_csv(&format!("{head}{body}")).expect_err("malformed").to_string();
        assert_eq!(err("2020-01-02,1.1,abc,\n"), "line 2, field JPY: invalid rate 'abc'");
        assert_eq!(err("2020-01-02,1.1,120,\n2020-13-01,1,1,\n"), "line 3, field Date: invalid date '2020-13-01'");
        assert_eq!(err("2020-01-02,1.1\n"), "line 2, field JPY: missing field");
        assert_eq!(err("2020-01-02,-1,1,\n"), "line 2, field USD: invalid rate '-1'");
        assert!(Dataset::parse_csv("Day,USD\n").is_err());
        let ok = Dataset::parse_csv(&format!("{head}2020-01-03,1.2,N/A,\n2020-01-02,1.1,120,\n")).expect("valid");
        assert_eq!(ok.first_day(), d("2020-01-02"));
        assert_eq!(
            ok.rates(c("JPY"), &[], Some(d("2020-01-03"))),
            Err(RatesError::NotPublished(c("JPY"), d("2020-01-03")))
        );
    }

    proptest::proptest! {
        #[test]
        fn round6_fast_path_agrees_with_exact_rounding(x in 1e-6f64..1e6) {
            let exact: f64 = format!("{x:.6}").parse().expect("a number");
            proptest::prop_assert_eq!(round6(x), exact);
        }
    }

    #[test]
    fn round6_is_pythons_round() {
        assert_eq!(round6(0.8640055), 0.864005); // 0.8640055 is slightly below the tie in binary
        assert_eq!(round6(3.7096944), 3.709694);
        assert_eq!(round6(1.0), 1.0);
    }
}
