//! Server throughput on loopback: `GET /rates?base=USD` (every currency of
//! the last day) with keep-alive connections and no injected latency, from
//! the project's server and, in the same run, from a bare axum server that
//! answers the same bytes (no middleware, metrics, limits or faults): the
//! ratio of the two is what the server's own machinery costs. Both run on
//! the runtime `rates serve` uses (tokio's multi-thread default, a thread
//! per core), loaded by 1, 4 and 64 client threads, each with its own
//! keep-alive connection.
//!
//! `cargo bench -p rates-server --bench server`
//!
//! An HTTP load generator gives the same comparison from outside the
//! process (`examples/bare.rs` is the bare server on its own).

use std::time::{Duration, Instant};

use criterion::{Criterion, Throughput, criterion_group, criterion_main};

#[path = "../examples/side_by_side/mod.rs"]
mod side_by_side;

/// Requests per measured batch, shared out among the clients.
const BATCH: u64 = 2048;

fn throughput(c: &mut Criterion) {
    let ours = side_by_side::ours().expect("our server starts");
    let bare = side_by_side::bare(side_by_side::body_of(&ours).expect("its answer")).expect("bare axum starts");
    let mut group = c.benchmark_group("server");
    group.sample_size(20).measurement_time(Duration::from_secs(5)).throughput(Throughput::Elements(BATCH));
    for clients in [1u64, 4, 64] {
        for server in [&ours, &bare] {
            // The same request as `side_by_side::REQUEST`.
            let url = format!("http://{}/rates?base=USD", server.addr);
            let url = url.as_str();
            group.bench_function(format!("{}/{clients}_connections", server.name), |b| {
                // One keep-alive agent per client thread, reused across batches.
                let agents: Vec<ureq::Agent> = (0..clients).map(|_| ureq::Agent::new_with_defaults()).collect();
                b.iter_custom(|iters| {
                    let start = Instant::now();
                    std::thread::scope(|s| {
                        for agent in &agents {
                            s.spawn(move || {
                                for _ in 0..iters * BATCH / clients {
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
    }
    group.finish();
    ours.stop();
    bare.stop();
}

criterion_group!(benches, throughput);
criterion_main!(benches);
