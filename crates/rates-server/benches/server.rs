//! Server throughput on loopback: `GET /rates?base=USD` (every currency of
//! the last day) with keep-alive connections and no injected latency, from
//! the project's server and, in the same run, from a bare axum server that
//! answers the same bytes (no middleware, metrics, limits or faults): the
//! ratio of the two is what the server's own machinery costs.
//!
//! `cargo bench -p rates-server --bench server`
//!
//! An HTTP load generator gives the same comparison with more connections
//! (`examples/bare.rs` is the bare server on its own).

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use axum::body::Bytes;
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use rates_server::{ServerOptions, spawn};

/// Requests per client connection per measured batch.
const BATCH: u64 = 500;

/// A bare axum server answering `GET /rates` with `body`, on a runtime
/// thread like the project's embedded one; stopped when the sender drops.
fn bare(body: Bytes) -> (SocketAddr, tokio::sync::oneshot::Sender<()>, std::thread::JoinHandle<()>) {
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().expect("runtime");
    let listener = {
        let _in_runtime = rt.enter();
        rates_server::listen(SocketAddr::from(([127, 0, 0, 1], 0))).expect("listens")
    };
    let addr = listener.local_addr().expect("address");
    let app = axum::Router::new().route(
        "/rates",
        axum::routing::get(move || {
            let body = body.clone();
            async move { ([(axum::http::header::CONTENT_TYPE, "application/json")], body) }
        }),
    );
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let thread = std::thread::spawn(move || {
        rt.block_on(async {
            let _ = axum::serve(listener, app)
                .with_graceful_shutdown(async {
                    let _ = rx.await;
                })
                .await;
        });
    });
    (addr, tx, thread)
}

fn throughput(c: &mut Criterion) {
    let server = spawn(rates::Dataset::embedded(), ServerOptions::default()).expect("server starts");
    let url = format!("{}/rates?base=USD", server.url());
    let body = ureq::get(&url).call().expect("200").body_mut().read_to_vec().expect("body");
    let (bare_addr, stop_bare, bare_thread) = bare(Bytes::from(body));
    let bare_url = format!("http://{bare_addr}/rates?base=USD");
    let mut group = c.benchmark_group("server");
    group.measurement_time(Duration::from_secs(10));
    for clients in [1u64, 2, 4] {
        group.throughput(Throughput::Elements(BATCH * clients));
        for (name, url) in [("rates_usd", &url), ("bare_axum", &bare_url)] {
            group.bench_function(format!("{name}/{clients}_clients"), |b| {
                // One keep-alive agent per client thread, reused across batches.
                let agents: Vec<ureq::Agent> = (0..clients).map(|_| ureq::Agent::new_with_defaults()).collect();
                b.iter_custom(|iters| {
                    let start = Instant::now();
                    std::thread::scope(|s| {
                        for agent in &agents {
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
    }
    group.finish();
    drop(stop_bare);
    let _ = bare_thread.join();
}

criterion_group!(benches, throughput);
criterion_main!(benches);
