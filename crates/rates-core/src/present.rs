//! Presenting fetched rates: the chapter's lines (`1 USD =     1.0 USD, ...`),
//! byte for byte, plus JSON and CSV for other programs.
//!
//! The chapter formats each rate with Python's `{:7.03}`; [`py_format`]
//! reproduces that rule exactly so the output matches the book's.

use std::fmt::Write;

use crate::{Currency, Rates};

/// Python's `format(x, "{width}.{precision}")` for a float: the "general"
/// presentation with no type letter.
///
/// With `p` significant digits, let `exp` be the decimal exponent of `x`
/// rounded to `p` digits. If `-4 <= exp < p - 1` the value is written in
/// fixed notation with `p - 1 - exp` decimals, trailing zeros removed but at
/// least one digit kept after the point; otherwise in exponent notation with
/// trailing zeros (and a bare point) removed and a two-digit exponent at
/// least. The result is right-aligned in `width`.
pub fn py_format(x: f64, width: usize, precision: usize) -> String {
    format!("{:>width$}", py_general(x, precision.max(1)))
}

fn py_general(x: f64, p: usize) -> String {
    if x.is_nan() {
        return "nan".into();
    }
    if x.is_infinite() {
        return if x > 0.0 { "inf" } else { "-inf" }.into();
    }
    if x == 0.0 {
        return if x.is_sign_negative() { "-0.0" } else { "0.0" }.into();
    }
    // Rust's `{:e}` rounds correctly from the binary value, as Python does.
    let sci = format!("{:.*e}", p - 1, x);
    let (mantissa, exp) = sci.split_once('e').unwrap_or((&sci, "0"));
    let exp: i32 = exp.parse().unwrap_or(0);
    if (-4..p as i32 - 1).contains(&exp) {
        let fixed = format!("{:.*}", (p as i32 - 1 - exp) as usize, x);
        let trimmed = fixed.trim_end_matches('0');
        if trimmed.ends_with('.') { format!("{trimmed}0") } else { trimmed.to_string() }
    } else {
        let m = if mantissa.contains('.') { mantissa.trim_end_matches('0').trim_end_matches('.') } else { mantissa };
        let sign = if exp < 0 { '-' } else { '+' };
        format!("{m}e{sign}{:02}", exp.unsigned_abs())
    }
}

/// One line of the chapter's output for `rates`:
/// `1 USD =     1.0 USD,   0.895 EUR, ...`. A symbol the answer lacks is
/// shown as `n/a`.
pub fn chapter_line(rates: &Rates, symbols: &[Currency]) -> String {
    let cells: Vec<String> = symbols
        .iter()
        .map(|&s| match rates.get(s) {
            Some(v) => format!("{} {s}", py_format(v, 7, 3)),
            None => format!("{:>7} {s}", "n/a"),
        })
        .collect();
    format!("1 {} = {}", rates.base, cells.join(", "))
}

/// The chapter's closing line, `time elapsed: 0.53s`.
pub fn elapsed_line(elapsed: std::time::Duration) -> String {
    format!("time elapsed: {:.2}s", elapsed.as_secs_f64())
}

/// The successful answers as a JSON array of the API's objects, limited to
/// `symbols`, in input order.
pub fn json(answers: &[&Rates], symbols: &[Currency]) -> String {
    let objects: Vec<serde_json::Value> = answers
        .iter()
        .map(|r| {
            let rates: serde_json::Map<String, serde_json::Value> =
                symbols.iter().filter_map(|&s| r.get(s).map(|v| (s.to_string(), v.into()))).collect();
            serde_json::json!({"date": r.date.to_string(), "base": r.base, "rates": rates})
        })
        .collect();
    serde_json::to_string_pretty(&objects).unwrap_or_default()
}

/// The successful answers as CSV: `date,base,SYM1,SYM2,...`, one row per
/// answer, empty cells where the answer has no rate.
pub fn csv(answers: &[&Rates], symbols: &[Currency]) -> String {
    write_csv(answers, symbols, true)
}

/// One base's series as CSV: `date,SYM1,SYM2,...`, one row per day, empty
/// cells where the answer has no rate.
pub fn series_csv(rows: &[&Rates], symbols: &[Currency]) -> String {
    write_csv(rows, symbols, false)
}

fn write_csv(rows: &[&Rates], symbols: &[Currency], with_base: bool) -> String {
    let mut out = String::from(if with_base { "date,base" } else { "date" });
    for s in symbols {
        let _ = write!(out, ",{s}");
    }
    out.push('\n');
    for r in rows {
        let _ = write!(out, "{}", r.date);
        if with_base {
            let _ = write!(out, ",{}", r.base);
        }
        for &s in symbols {
            out.push(',');
            if let Some(v) = r.get(s) {
                let _ = write!(out, "{v}");
            }
        }
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn f(x: f64) -> String {
        py_format(x, 7, 3)
    }

    #[test]
    fn the_chapters_examples() {
        assert_eq!(f(1.0), "    1.0");
        assert_eq!(f(0.864006), "  0.864");
        assert_eq!(f(26.0), "   26.0");
        assert_eq!(f(99.94), "   99.9");
        assert_eq!(f(99.95), "  1e+02");
        assert_eq!(f(123.0), "1.23e+02");
        assert_eq!(f(1491.76), "1.49e+03");
        assert_eq!(f(0.0001), " 0.0001");
        assert_eq!(f(1.234e-05), "1.23e-05");
        // The sample output's cells.
        assert_eq!(f(0.895), "  0.895");
        assert_eq!(f(3.94), "   3.94");
        assert_eq!(f(21.8), "   21.8");
        assert_eq!(f(0.0459), " 0.0459");
        assert_eq!(f(0.097), "  0.097");
    }

    #[test]
    fn edge_cases_checked_against_python() {
        // Values printed by CPython 3.11's format(x, "7.03").
        let cases = [
            (0.0, "    0.0"),
            (-1.5, "   -1.5"),
            (9.995, "   9.99"), // 9.995 is below the tie in binary
            (9.9951, "   10.0"),
            (0.00009996, "0.0001"),
            (0.000099949, "9.99e-05"),
            (1e22, "1e+22"),
            (1.5e-300, "1.5e-300"),
            (f64::INFINITY, "    inf"),
            (f64::NAN, "    nan"),
            (12345678.0, "1.23e+07"),
            (0.1, "    0.1"),
            (10.0, "   10.0"),
        ];
        for (x, want) in cases {
            assert_eq!(f(x), format!("{want:>7}"), "{x}");
        }
    }

    /// The rule restated independently: round to 3 significant digits with
    /// exact decimal arithmetic on the printed digits, then choose notation.
    fn reference(x: f64) -> String {
        let digits = format!("{:.2e}", x); // d.dde±x, correctly rounded
        let (m, e) = digits.split_once('e').expect("exponent");
        let e: i32 = e.parse().expect("int");
        let ds: String = m.chars().filter(char::is_ascii_digit).collect();
        if (-4..2).contains(&e) {
            // Place the point: value = 0.ds × 10^(e+1).
            let s = if e >= 0 {
                let (int, frac) = ds.split_at((e + 1) as usize);
                format!("{int}.{frac}")
            } else {
                format!("0.{}{ds}", "0".repeat((-e - 1) as usize))
            };
            let t = s.trim_end_matches('0');
            if t.ends_with('.') { format!("{t}0") } else { t.to_string() }
        } else {
            let t = ds.trim_end_matches('0');
            let m = if t.len() > 1 { format!("{}.{}", &t[..1], &t[1..]) } else { t.to_string() };
            format!("{m}e{}{:02}", if e < 0 { '-' } else { '+' }, e.abs())
        }
    }

    proptest! {
        #[test]
        fn matches_the_rule(x in 1e-9f64..1e9) {
            prop_assert_eq!(f(x).trim_start().to_string(), reference(x));
            prop_assert!(f(x).len() >= 7);
        }

        #[test]
        fn negative_is_a_sign(x in 1e-9f64..1e9) {
            prop_assert_eq!(py_general(-x, 3), format!("-{}", py_general(x, 3)));
        }
    }

    #[test]
    fn chapter_line_shape() {
        let r: Rates = serde_json::from_str(
            r#"{"date":"2026-10-30","base":"USD","rates":{"EUR":0.895095,"PLN":3.941791,"NOK":9.230219,"CZK":21.798246}}"#,
        )
        .expect("valid");
        let syms = Currency::parse_list("USD,EUR,PLN,NOK,CZK").expect("codes");
        assert_eq!(chapter_line(&r, &syms), "1 USD =     1.0 USD,   0.895 EUR,    3.94 PLN,    9.23 NOK,    21.8 CZK");
        assert_eq!(elapsed_line(std::time::Duration::from_millis(534)), "time elapsed: 0.53s");
        let c = csv(&[&r], &syms);
        assert_eq!(c, "date,base,USD,EUR,PLN,NOK,CZK\n2026-10-30,USD,1,0.895095,3.941791,9.230219,21.798246\n");
    }
}
