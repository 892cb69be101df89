//! The table, its parsing and its cross rates.

use super::decimal::*;
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
    let r = Dataset::embedded().rates(c("USD"), &[c("EUR"), c("PLN"), c("USD")], Some(d("2018-10-12"))).expect("rates");
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
    let (_, some) = ds.rates_in_order(c("USD"), &[], Some(d("2005-01-03")), |x| x.as_str() != "CYP").expect("rates");
    assert_eq!(some.len(), all.len() - 1);
    let (_, two) =
        ds.rates_in_order(c("USD"), &[c("PLN"), c("EUR"), c("PLN")], Some(d("2005-01-03")), |_| true).expect("rates");
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
