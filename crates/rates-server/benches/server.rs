//! Server throughput on loopback: `GET /rates?base=USD` (every currency of
//! the last day) with keep-alive connections and no injected latency.
//!
//! `cargo bench -p rates-server --bench server`

use std::time::{Duration, Instant};

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use rates_server::{ServerOptions, spawn};

/// Requests per client connection per measured batch.
const BATCH: u64 = 500;

fn throughput(c: &mut Criterion) {
    let server = spawn(rates::Dataset::embedded(), ServerOptions::default()).expect("server starts");
    let url = format!("{}/rates?base=USD", server.url());
    let mut group = c.benchmark_group("server");
    group.measurement_time(Duration::from_secs(10));
    for clients in [1u64, 2, 4] {
        group.throughput(Throughput::Elements(BATCH * clients));
        group.bench_function(format!("rates_usd/{clients}_clients"), |b| {
            // One keep-alive agent per client thread, reused across batches.
            let agents: Vec<ureq::Agent> = (0..clients).map(|_| ureq::Agent::new_with_defaults()).collect();
            b.iter_custom(|iters| {
                let start = Instant::now();
                std::thread::scope(|s| {
                    for agent in &agents {
                        let url = &url;
                        s.spawn(move || {
                            for _ in 0..iters * BATCH {
                                let mut r = agent.get(url).call().expect("200");
                                let _ = r.body_mut().read_to_vec().expect("body");
                            }
                        });
                    }
                });
                start.elapsed()
            });
        });
    }
    group.finish();
}

criterion_group!(benches, throughput);
criterion_main!(benches);
