//! The ECB's euro reference rates (`eurofxref-hist`), embedded in the binary
//! and parsed once into a compact table: one row per business day, one column
//! per currency, each value the exact decimal the ECB printed (nothing where
//! it published `N/A`).
//!
//! The table answers the API's questions (`docs/API.md`): which business day
//! a date falls back to, and the cross rates of any base, computed as the
//! public service computes them: the decimal quotient of the two printed
//! values, to 28 significant digits, then rounded half-to-even to 6 places
//! (Python's `round(Decimal(a) / Decimal(b), 6)`), never through binary
//! floating point, which differs from it in about 1 pair in 26,000.

use std::collections::BTreeMap;
use std::io::Read;
use std::path::Path;
use std::sync::{Arc, OnceLock};

use chrono::NaiveDate;

use crate::api::{Rates, parse_date};
use crate::{Currency, names};

mod decimal;
#[cfg(test)]
mod tests;

pub use decimal::round6;
use decimal::{Dec, NONE, ONE, cross, parse_dec, to_f64};

/// The zip the ECB publishes, as of the project's snapshot (see `data/SOURCE.md`).
static EMBEDDED_ZIP: &[u8] = include_bytes!("../../../../data/eurofxref-hist.zip");

/// The table of daily euro reference rates.
#[derive(Debug, Clone, PartialEq)]
pub struct Dataset {
    /// Business days, oldest first.
    days: Vec<NaiveDate>,
    /// The column currencies (EUR is implicit: every value is per 1 EUR).
    currencies: Vec<Currency>,
    /// Row-major `days.len() × currencies.len()`; [`NONE`] for `N/A`.
    values: Vec<Dec>,
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
    /// The base is known but the ECB published no rate for it that day.
    #[error("Base currency '{0}' not available in current rates data")]
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
    /// needs, without parsing the whole table when no
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
                    NONE
                } else {
                    parse_dec(f).ok_or_else(|| malformed(n, c.as_str(), format!("invalid rate '{f}'")))?
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

    /// The value of `c` per 1 EUR on `row`; `None` when not published
    /// (or never a column).
    fn per_eur(&self, row: usize, c: Currency) -> Option<Dec> {
        if c == Currency::EUR {
            return Some(ONE);
        }
        let col = self.currencies.iter().position(|&x| x == c)?;
        Some(self.values[row * self.currencies.len() + col]).filter(|&v| v != NONE)
    }

    /// The API's answer for `base`, `symbols` (all published that day when
    /// empty) and `date` (the latest day when `None`). A symbol the ECB did
    /// not publish that day is left out, as the API leaves it out.
    pub fn rates(&self, base: Currency, symbols: &[Currency], date: Option<NaiveDate>) -> Result<Rates, RatesError> {
        if !self.knows(base) {
            return Err(RatesError::UnknownBase(base.to_string()));
        }
        if let Some(s) = symbols.iter().find(|s| !self.knows(**s)) {
            return Err(RatesError::UnknownSymbol(s.to_string()));
        }
        let (date, listed) = self.rates_in_order(base, symbols, date, |_| true)?;
        Ok(Rates { date, base, rates: listed.into_iter().collect() })
    }

    /// The rates of `base` on the day `date` falls back to (the latest day
    /// when `None`), in the API's order: EUR first, then the ECB file's
    /// columns. Listed are the currencies published that day for which
    /// `listed` holds (EUR always), narrowed to `symbols` unless it is
    /// empty; a code that is not a column is simply never listed. Each is
    /// worth units per 1 `base`: with base EUR the ECB's values as they are,
    /// otherwise the decimal cross rate rounded to 6 places (see the module
    /// docs), the base itself 1.0.
    pub fn rates_in_order(
        &self,
        base: Currency,
        symbols: &[Currency],
        date: Option<NaiveDate>,
        listed: impl Fn(Currency) -> bool,
    ) -> Result<(NaiveDate, Vec<(Currency, f64)>), RatesError> {
        let row = self.row_of(date).ok_or(RatesError::NoData)?;
        let day = self.days[row];
        let base_rate = self.per_eur(row, base).ok_or(RatesError::NotPublished(base, day))?;
        let wanted = |c: Currency| symbols.is_empty() || symbols.contains(&c);
        let value = |v: Dec| if base == Currency::EUR { to_f64(v) } else { cross(v, base_rate) };
        let width = self.currencies.len();
        let mut out = Vec::with_capacity(if symbols.is_empty() { width + 1 } else { symbols.len() });
        if wanted(Currency::EUR) {
            out.push((Currency::EUR, value(ONE)));
        }
        for (&c, &v) in self.currencies.iter().zip(&self.values[row * width..][..width]) {
            if v != NONE && wanted(c) && listed(c) {
                out.push((c, value(v)));
            }
        }
        Ok((day, out))
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
