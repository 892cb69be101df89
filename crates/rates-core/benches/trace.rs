//! What a trace costs per request: the events one attempt writes (the
//! requests in flight before and after, its span) with the clock read as
//! the fetch job reads it, and the hand-over to the file at the item's end.
//!
//! `cargo bench -p rates --bench trace`

use criterion::{Criterion, criterion_group, criterion_main};
use rates_core::trace::{self, Trace};

/// One item of one attempt, as the fetch job writes it.
fn one_request(trace: &Trace, track: trace::Track) {
    let _gates = (trace::now(), trace::now());
    trace.in_flight(1);
    let sent = trace::now();
    let end = trace::now();
    trace.request(track, sent, end, &"USD", 1, 200, 1234, None);
    trace.in_flight(-1);
    trace.flush_local();
}

fn write(c: &mut Criterion) {
    let dir = tempfile::tempdir().expect("temporary folder");
    let trace = Trace::create(dir.path().join("t.json"), "bench").expect("a trace");
    let track = trace.thread_track();
    c.bench_function("one_request", |b| b.iter(|| one_request(&trace, track)));

    trace.finish().expect("written");
}

criterion_group!(benches, write);
criterion_main!(benches);
