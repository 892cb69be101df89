//! The local store with a 25-year series: reading one base's series for a
//! `history` (every weekday of the range), and writing the answers of a
//! whole run through the writer thread, as a run hands them over.
//!
//! `cargo bench -p rates --bench store`

use std::time::Duration;

use chrono::{Datelike, NaiveDate, Weekday};
use criterion::{Criterion, criterion_group, criterion_main};
use rates_core::store::{Query, Store, Stored, unix_now};
use rates_core::{Currency, Dataset, Rates};

/// The answers of a 25-year history of USD in two symbols, as the API
/// gives them: one per business day of the embedded data.
fn answers(symbols: &[Currency]) -> Vec<Rates> {
    let ds = Dataset::embedded();
    let usd: Currency = "USD".parse().expect("code");
    let from = ds.last_day() - chrono::Days::new(25 * 365);
    ds.days().iter().filter(|d| **d >= from).map(|d| ds.rates(usd, symbols, Some(*d)).expect("rates")).collect()
}

fn store(c: &mut Criterion) {
    let symbols: Vec<Currency> = Currency::parse_list("EUR,PLN").expect("codes");
    let answers = answers(&symbols);
    let api = "https://api.example";

    let dir = tempfile::tempdir().expect("temporary folder");
    let writer = Store::open(dir.path()).expect("store").writer(api, &symbols).expect("writer");
    c.bench_function(&format!("write_{}_answers", answers.len()), |b| {
        b.iter(|| {
            let dir = tempfile::tempdir().expect("temporary folder");
            let writer = Store::open(dir.path()).expect("store").writer(api, &symbols).expect("writer");
            let sink = writer.sink();
            for a in &answers {
                sink.answer(a);
            }
            assert_eq!(writer.finish().stored, answers.len());
        })
    });
    let sink = writer.sink();
    for a in &answers {
        sink.answer(a);
    }
    assert_eq!(writer.finish().stored, answers.len());

    let (from, to) = (answers[0].date, answers[answers.len() - 1].date);
    let days: Vec<NaiveDate> = from
        .iter_days()
        .take_while(|d| *d <= to)
        .filter(|d| !matches!(d.weekday(), Weekday::Sat | Weekday::Sun))
        .collect();
    let store = Store::open(dir.path()).expect("store");
    let usd: Currency = "USD".parse().expect("code");
    let q = Query { api, base: usd, symbols: &symbols, days: &days };
    c.bench_function(&format!("read_{}_weekdays", days.len()), |b| {
        b.iter(|| {
            let got = store.lookup(&q, unix_now(), Duration::from_secs(3600)).expect("read");
            assert!(got.iter().filter(|s| matches!(s, Stored::Rates(_))).count() == answers.len());
        })
    });
}

criterion_group! {
    name = benches;
    config = Criterion::default().sample_size(20);
    targets = store
}
criterion_main!(benches);
