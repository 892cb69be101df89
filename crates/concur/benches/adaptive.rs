//! The adaptive limiters' cost per request, beside the fixed throttle's:
//! a token (`AdaptiveRate::try_acquire` and `record`) and a permit
//! (`AdaptiveConcurrency::try_acquire` and `Permit::success`), uncontended,
//! at rates and limits high enough that nothing is ever refused.
//!
//! `cargo bench -p concur --bench adaptive`

use std::time::Duration;

use concur::adaptive::{AdaptiveConcurrency, AdaptiveRate, ConcurrencyConfig, RateConfig, RateSignal};
use criterion::{Criterion, criterion_group, criterion_main};

fn per_request(c: &mut Criterion) {
    let mut g = c.benchmark_group("adaptive_per_request");
    g.sample_size(20).measurement_time(Duration::from_secs(3));

    let fixed = concur::Throttle::new(1e9, 1_000_000).expect("throttle");
    g.bench_function("Throttle::try_acquire", |b| b.iter(|| std::hint::black_box(fixed.try_acquire().is_ok())));

    let config = RateConfig { initial: 1e9, max: 1e9, burst: 1_000_000, ..RateConfig::default() };
    let rate = AdaptiveRate::new(config);
    g.bench_function("AdaptiveRate::try_acquire+record", |b| {
        b.iter(|| {
            let granted = rate.try_acquire().is_ok();
            rate.record(RateSignal::Success);
            std::hint::black_box(granted)
        })
    });

    let limiter = AdaptiveConcurrency::new(ConcurrencyConfig { initial: 64, min: 64, max: 64, ..Default::default() });
    g.bench_function("AdaptiveConcurrency::try_acquire+success", |b| {
        b.iter(|| {
            if let Some(permit) = limiter.try_acquire() {
                permit.success();
            }
        })
    });
    g.finish();
}

criterion_group!(benches, per_request);
criterion_main!(benches);
