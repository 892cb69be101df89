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

/// The zip the ECB publishes, as of the project's snapshot (see `data/SOURCE.md`).
static EMBEDDED_ZIP: &[u8] = include_bytes!("../../../data/eurofxref-hist.zip");

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

/// An ECB value as printed: `mantissa · 10^-scale`, packed as
/// `mantissa << 5 | scale` (a mantissa below 10^17, a scale up to 31), so a
/// row of the table stays a row of words.
type Dec = u64;

/// No value (`N/A`): a printed value is never zero.
const NONE: Dec = 0;

/// 1, the euro's value per euro.
const ONE: Dec = 1 << SCALE_BITS;

/// The low bits of a [`Dec`] that hold its scale.
const SCALE_BITS: u32 = 5;

/// Up to this many significant digits, a printed decimal survives the trip
/// through a binary float and back unchanged: it is then exactly the value
/// the public service holds (`str(float(text))` in Python).
const EXACT_DIGITS: u32 = 15;

/// The most significant digits a packed value has: a float's shortest
/// representation needs at most 17.
const MAX_DIGITS: u32 = 17;

/// The largest scale a packed value has (its low [`SCALE_BITS`] bits).
const MAX_SCALE: usize = 31;

/// `10^n`, saturating past 10^38 (the most a `u128` holds).
const fn pow10(n: u32) -> u128 {
    match 10u128.checked_pow(n) {
        Some(p) => p,
        None => u128::MAX,
    }
}

/// Parses a printed rate into the decimal the public service computes
/// with: the text itself when it is `DIGITS[.DIGITS]` with at most
/// [`EXACT_DIGITS`] significant digits (the ECB's have 7), otherwise the
/// shortest decimal of the float it reads as, as Python's `str(float(text))`
/// gives. `None` if it is no positive number, or needs more than
/// [`MAX_DIGITS`] digits or [`MAX_SCALE`] places.
fn parse_dec(text: &str) -> Option<Dec> {
    match plain_dec(text) {
        Some((d, digits)) if digits <= EXACT_DIGITS => Some(d),
        _ => {
            let x: f64 = text.parse().ok().filter(|x: &f64| x.is_finite() && *x > 0.0)?;
            // Display gives the shortest digits that read back as `x`, as repr does.
            plain_dec(&x.to_string()).map(|(d, _)| d)
        }
    }
}

/// `DIGITS[.DIGITS]` exactly, with its count of significant digits.
fn plain_dec(text: &str) -> Option<(Dec, u32)> {
    let (int, frac) = text.split_once('.').unwrap_or((text, ""));
    let digits_only = |s: &str| s.bytes().all(|b| b.is_ascii_digit());
    if int.is_empty() || !digits_only(int) || !digits_only(frac) || text.ends_with('.') || frac.len() > MAX_SCALE {
        return None;
    }
    let mut mantissa: u64 = 0;
    let mut count = 0;
    for b in int.bytes().chain(frac.bytes()).skip_while(|&b| b == b'0') {
        count += 1;
        if count > MAX_DIGITS {
            return None;
        }
        mantissa = mantissa * 10 + u64::from(b - b'0');
    }
    // Below 10^17 and at most 31: both fit their bits.
    (mantissa > 0).then_some((mantissa << SCALE_BITS | frac.len() as u64, count))
}

/// The mantissa and scale of a packed value.
fn unpack(d: Dec) -> (u128, u32) {
    (u128::from(d >> SCALE_BITS), (d & ((1 << SCALE_BITS) - 1)) as u32)
}

/// The value as a float: the double nearest the decimal, as Python's
/// `float(text)` gives (both operands exact, the division correctly rounded).
fn to_f64(d: Dec) -> f64 {
    let (m, s) = unpack(d);
    if m < 1 << 53 {
        m as f64 / pow10(s) as f64
    } else {
        // A 16- or 17-digit mantissa is not exact as a float: read the text.
        format!("{m}e-{s}").parse().unwrap_or(f64::NAN)
    }
}

/// Significant digits of Python's default decimal context.
const PRECISION: u32 = 28;

/// `round(Decimal(a) / Decimal(b), 6)` as Python computes it, as a float:
/// the exact quotient is first rounded to [`PRECISION`] significant digits
/// half-to-even (the division), then that half-to-even to 6 places (the
/// `round`), in integers. The two roundings differ from one when the first
/// lands exactly on a half of the sixth place.
fn cross(a: Dec, b: Dec) -> f64 {
    let ((am, as_), (bm, bs)) = (unpack(a), unpack(b));
    // a/b · 10^6 = (am · 10^(bs+6)) / (bm · 10^as). Kept below 10^37, so
    // that twice a remainder fits too; beyond (values of 17 digits or 20
    // places, never the ECB's) the binary path, close enough there.
    let scaled = |m: u128, s: u32| m.checked_mul(pow10(s)).filter(|&x| x < pow10(37));
    let (Some(num), Some(den)) = (scaled(am, bs + 6), scaled(bm, as_)) else {
        return round6(to_f64(a) / to_f64(b));
    };
    let (q, r) = (num / den, num % den);
    let rounded = if r == 0 {
        q
    } else {
        // Digits the division keeps past the sixth place.
        let kept = if q == 0 {
            // The significant digits start after the leading zeros of r/den.
            let mut zeros = 0;
            while r * pow10(zeros + 1) < den {
                zeros += 1;
            }
            PRECISION + zeros
        } else {
            match PRECISION.checked_sub(q.ilog10() + 1) {
                Some(k) => k,
                // A quotient of 10^22 or more, which 15-digit rates cannot
                // make in practice: the binary path, close enough there.
                None => return round6(to_f64(a) / to_f64(b)),
            }
        };
        let above_half = (2 * r).cmp(&den);
        let off = (2 * r).abs_diff(den);
        // Whether the division's rounding leaves exactly half a unit of the
        // sixth place: the fraction is within half a kept digit of 1/2, or
        // exactly that far and 1/2 is the even neighbour (5·10^(kept-1) is
        // even from two kept digits on).
        // (Past 10^38 the product overflows, and is then far above `den`.)
        let tie = off == 0
            || (kept > 0 && off.checked_mul(pow10(kept.min(38))).is_some_and(|x| x < den || (x == den && kept >= 2)));
        match (tie, above_half) {
            (true, _) => q + (q & 1),
            (false, std::cmp::Ordering::Greater) => q + 1,
            (false, _) => q,
        }
    };
    if rounded < 1 << 53 {
        // Both exact: one correctly rounded division, as float(Decimal) is.
        rounded as f64 / 1e6
    } else {
        format!("{}.{:06}", rounded / 1_000_000, rounded % 1_000_000).parse().unwrap_or(f64::NAN)
    }
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
    fn unpublished_symbols_are_absent_and_an_unpublished_base_refused() {
        let ds = Dataset::embedded();
        let all = ds.rates(Currency::EUR, &[], Some(d("2020-01-02"))).expect("rates");
        assert!(!all.rates.contains_key(&c("CYP")));
        assert_eq!(all.rates[&Currency::EUR], 1.0);
        let err = ds.rates(c("CYP"), &[], Some(d("2020-01-02")));
        assert_eq!(err, Err(RatesError::NotPublished(c("CYP"), d("2020-01-02"))));
        assert_eq!(
            err.map(|_| ()).expect_err("refused").to_string(),
            "Base currency 'CYP' not available in current rates data"
        );
        let r = ds.rates(Currency::EUR, &[c("RUB"), c("USD")], Some(d("2024-01-02"))).expect("rates");
        assert_eq!(r.rates.keys().map(Currency::as_str).collect::<Vec<_>>(), ["USD"]);
        // Retired codes stay readable here, where the API refuses them.
        assert!(ds.rates(c("CYP"), &[c("USD")], Some(d("2005-01-03"))).is_ok());
    }

    #[test]
    fn rates_come_in_the_apis_order_filtered_by_listed() {
        let ds = Dataset::embedded();
        let (day, all) = ds.rates_in_order(c("USD"), &[], Some(d("2005-01-03")), |_| true).expect("rates");
        assert_eq!(day, d("2005-01-03"));
        let codes: Vec<&str> = all.iter().map(|(c, _)| c.as_str()).collect();
        assert_eq!(codes[..5], ["EUR", "USD", "JPY", "BGN", "CYP"], "EUR, then the file's columns");
        let (_, some) =
            ds.rates_in_order(c("USD"), &[], Some(d("2005-01-03")), |x| x.as_str() != "CYP").expect("rates");
        assert_eq!(some.len(), all.len() - 1);
        let (_, two) = ds
            .rates_in_order(c("USD"), &[c("PLN"), c("EUR"), c("PLN")], Some(d("2005-01-03")), |_| true)
            .expect("rates");
        assert_eq!(two.iter().map(|(c, _)| c.as_str()).collect::<Vec<_>>(), ["EUR", "PLN"]);
    }

    /// The exact decimal quotient, with Python's two roundings, where a
    /// binary division rounds the other way.
    #[test]
    fn cross_rates_are_decimal_not_binary() {
        let dec = |s: &str| parse_dec(s).expect("a rate");
        // 2026-07-08, NOK→CHF: the binary quotient rounds up, the decimal one down.
        let ds = Dataset::embedded();
        let r = ds.rates(c("NOK"), &[c("CHF")], Some(d("2026-07-08"))).expect("rates");
        assert_eq!(r.rates[&c("CHF")], 0.082812);
        // An exact half of the sixth place goes to the even neighbour.
        assert_eq!(cross(dec("0.0000125"), dec("1")), 0.000012);
        assert_eq!(cross(dec("0.0000135"), dec("1")), 0.000014);
        assert_eq!(cross(dec("1"), dec("8")), 0.125);
        // 1/3 to 28 digits, then 6 places.
        assert_eq!(cross(dec("1"), dec("3")), 0.333333);
        assert_eq!(cross(dec("2"), dec("3")), 0.666667);
        // A tiny quotient: all 28 digits lie past the sixth place.
        assert_eq!(cross(dec("0.4"), dec("1651000")), 0.0);
        assert_eq!(cross(dec("1"), dec("1651000")), 0.000001);
        assert_eq!(cross(dec("4.4"), dec("1.12")), 3.928571);
        assert_eq!(cross(dec("136"), dec("136.0")), 1.0);
    }

    /// The division's rounding to 28 digits can land on an exact half of
    /// the sixth place that the exact quotient is just past: Python then
    /// rounds to even where one exact rounding goes up.
    #[test]
    // The expected values are Python's decimal strings, digit for digit.
    #[allow(clippy::excessive_precision)]
    fn a_half_made_by_the_division_rounds_to_even() {
        let dec = |s: &str| parse_dec(s).expect("a rate");
        // 500000000 / 0.999999999999999 = 500000000.0000005000000000000005...,
        // 500000000.0000005000000000000 to 28 digits: 500000000.000000.
        assert_eq!(cross(dec("500000000"), dec("0.999999999999999")), 500000000.0);
        // The same past 2^53 millionths (the float made from the decimal text):
        // Python answers 271604944444444.444444, the exact quotient rounds to ...445.
        assert_eq!(cross(dec("271604944444442"), dec("0.999999999999991")), 271604944444444.444444);
        // A half the exact quotient already is goes to the even neighbour too,
        // and one just past it but not within the 28 digits goes up.
        assert_eq!(cross(dec("777777833333331"), dec("0.999999999999997")), 777777833333333.333334);
        assert_eq!(cross(dec("1.0000005"), dec("1")), 1.0);
        assert_eq!(cross(dec("1.0000015"), dec("1")), 1.000002);
        assert_eq!(cross(dec("1.00000050001"), dec("1")), 1.000001);
    }

    #[test]
    fn printed_rates_parse_exactly_or_not_at_all() {
        assert_eq!(unpack(parse_dec("1.1172").expect("rate")), (11172, 4));
        assert_eq!(unpack(parse_dec("0.58230").expect("rate")), (58230, 5));
        assert_eq!(unpack(parse_dec("136").expect("rate")), (136, 0));
        assert_eq!(to_f64(parse_dec("10.312").expect("rate")), 10.312);
        for bad in ["", "0", "0.000", "-1", "1.2.3", "abc", "inf", "NaN", "1e30", "1e-40"] {
            assert_eq!(parse_dec(bad), None, "{bad:?}");
        }
        assert!(parse_dec("123456789012345").is_some(), "15 digits");
        // Otherwise what Python holds: str(float(text)).
        assert_eq!(unpack(parse_dec("1.1300000000000001").expect("rate")), (11300000000000001, 16));
        assert_eq!(to_f64(parse_dec("1.1300000000000001").expect("rate")), 1.1300000000000001);
        assert_eq!(unpack(parse_dec("0.10000000000000001").expect("rate")), (1, 1), "str(float()) is 0.1");
        assert_eq!(unpack(parse_dec("1e3").expect("rate")), (1000, 0));
        assert_eq!(unpack(parse_dec("1.").expect("rate")), (1, 0));
        assert_eq!(unpack(parse_dec(".5").expect("rate")), (5, 1));
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
