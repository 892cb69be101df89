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

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use axum::body::Bytes;
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use rates_server::{ServerOptions, Shared};

/// Requests per measured batch, shared out among the clients.
const BATCH: u64 = 2048;

/// A server on a runtime of its own like `rates serve`'s: its URL, and what
/// stops it (the sender) and waits for it (the thread).
struct Running {
    url: String,
    stop: tokio::sync::oneshot::Sender<()>,
    thread: std::thread::JoinHandle<()>,
}

impl Running {
    fn start<F, Fut>(serve: F) -> Running
    where
        F: FnOnce(tokio::net::TcpListener, tokio::sync::oneshot::Receiver<()>) -> Fut + Send + 'static,
        Fut: Future<Output = ()>,
    {
        let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build().expect("runtime");
        let listener = {
            let _in_runtime = rt.enter();
            rates_server::listen(SocketAddr::from(([127, 0, 0, 1], 0))).expect("listens")
        };
        let addr = listener.local_addr().expect("address");
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let thread = std::thread::spawn(move || rt.block_on(serve(listener, stopped)));
        Running { url: format!("http://{addr}/rates?base=USD"), stop, thread }
    }

    fn stop(self) {
        drop(self.stop);
        let _ = self.thread.join();
    }
}

/// The project's server, as `rates serve` runs it with no faults.
fn ours() -> Running {
    let shared = Shared::new(rates_core::Dataset::embedded(), ServerOptions::default()).expect("options");
    Running::start(move |listener, stopped| async move {
        let _ = rates_server::run(listener, shared, async {
            let _ = stopped.await;
        })
        .await;
    })
}

/// A bare axum server answering `GET /rates` with `body`.
fn bare(body: Bytes) -> Running {
    let app = axum::Router::new().route(
        "/rates",
        axum::routing::get(move || {
            let body = body.clone();
            async move { ([(axum::http::header::CONTENT_TYPE, "application/json")], body) }
        }),
    );
    Running::start(move |listener, stopped| async move {
        let _ = axum::serve(listener, app)
            .with_graceful_shutdown(async {
                let _ = stopped.await;
            })
            .await;
    })
}

fn throughput(c: &mut Criterion) {
    let ours = ours();
    let body = ureq::get(&ours.url).call().expect("200").body_mut().read_to_vec().expect("body");
    let bare = bare(Bytes::from(body));
    let mut group = c.benchmark_group("server");
    group.sample_size(20).measurement_time(Duration::from_secs(5)).throughput(Throughput::Elements(BATCH));
    for clients in [1u64, 4, 64] {
        for (name, url) in [("rates_usd", &ours.url), ("bare_axum", &bare.url)] {
            group.bench_function(format!("{name}/{clients}_connections"), |b| {
                // One keep-alive agent per client thread, reused across batches.
                let agents: Vec<ureq::Agent> = (0..clients).map(|_| ureq::Agent::new_with_defaults()).collect();
                b.iter_custom(|iters| {
                    let start = Instant::now();
                    std::thread::scope(|s| {
                        for agent in &agents {
                            s.spawn(move || {
                                for _ in 0..iters * BATCH / clients {
                                    let mut r = agent.get(url.as_str()).call().expect("200");
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
