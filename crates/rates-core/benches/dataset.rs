//! Cold parse of the embedded ECB dataset (unzip + CSV → table), and one
//! cross-rates answer over it.
//!
//! `cargo bench -p rates --bench dataset`

use criterion::{Criterion, criterion_group, criterion_main};
use rates_core::{Currency, Dataset};

fn dataset(c: &mut Criterion) {
    c.bench_function("parse_embedded", |b| b.iter(|| Dataset::parse_embedded().expect("parses")));
    let ds = Dataset::embedded();
    let usd: Currency = "USD".parse().expect("code");
    c.bench_function("rates_usd_all_symbols", |b| b.iter(|| ds.rates(usd, &[], None).expect("rates")));
}

criterion_group!(benches, dataset);
criterion_main!(benches);
