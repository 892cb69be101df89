use super::*;

fn events(trace: &Trace) -> Vec<serde_json::Value> {
    let text = std::fs::read_to_string(trace.path()).expect("the trace");
    read_events(&text).expect("a trace")
}

#[test]
fn a_finished_trace_is_valid_json_with_every_kind_of_event() {
    let dir = tempfile::tempdir().expect("a folder");
    let trace = Trace::create(dir.path().join("t.json"), "test \"run\"").expect("a trace");
    trace.set_model(crate::Model::ThreadPool, 4);
    let track = std::thread::Builder::new()
        .name("concur-worker-3".into())
        .spawn({
            let trace = trace.clone();
            move || trace.thread_track()
        })
        .expect("a thread")
        .join()
        .expect("joined");
    trace.request(track, 1_000_000, 3_500_250, &"USD", 1, 200, 123, None);
    trace.request(track, 4_000_000, 5_000_000, &"2024-01-02", 2, 0, 0, Some("timed out \"x\""));
    trace.wait(track, "throttle", 0, 1_000_000);
    trace.wait(track, "throttle", 0, 10_000);
    trace.instant(track, 3_500_250, "429", format_args!(r#""item":"USD","retry_after":1"#));
    trace.in_flight(1);
    trace.rate(2.5, 4);
    trace.rate(2.5, 4);
    trace.concurrency_limit(8);
    trace.worker_track(4242);
    trace.worker_track(4242);
    trace.finish().expect("written");
    trace.finish().expect("still fine");
    trace.in_flight(-1);

    let text = std::fs::read_to_string(trace.path()).expect("the trace");
    let all: Vec<serde_json::Value> = serde_json::from_str(&text).expect("valid JSON");
    assert_eq!(all, events(&trace));
    let named = |ph: &str, name: &str| all.iter().filter(|e| e["ph"] == ph && e["name"] == name).count();
    assert_eq!(all[0]["args"]["name"], "test \"run\"");
    assert!(all.iter().any(|e| e["name"] == "thread_name" && e["args"]["name"] == "thread-pool worker 3"));
    let spans: Vec<_> = all.iter().filter(|e| e["cat"] == "request").collect();
    assert_eq!(spans[0]["ts"].as_f64(), Some(1000.0));
    assert_eq!(spans[0]["dur"].as_f64(), Some(2500.25));
    assert_eq!(spans[0]["args"]["bytes"], 123);
    assert_eq!(spans[1]["args"]["error"], "timed out \"x\"");
    assert_eq!(spans[1]["args"]["item"], "2024-01-02");
    // The short wait is left out; the rate written once.
    assert_eq!(all.iter().filter(|e| e["cat"] == "wait").count(), 1);
    assert_eq!(named("C", "rate"), 1);
    assert_eq!(named("C", "concurrency limit"), 1);
    assert_eq!(named("i", "429"), 1);
    // The worker's process and track, named once; the last event is the
    // count in flight at the end, and nothing after `finish`.
    assert_eq!(named("M", "process_name"), 2);
    assert_eq!(all.last().map(|e| e["args"]["requests"].clone()), Some(serde_json::json!(1)));
}

#[test]
fn slots_are_handed_out_lowest_free_first() {
    let dir = tempfile::tempdir().expect("a folder");
    let trace = Trace::create(dir.path().join("t.json"), "slots").expect("a trace");
    let (a, b, c) = (trace.slot(), trace.slot(), trace.slot());
    assert_eq!([a.n, b.n, c.n], [0, 1, 2]);
    drop(b);
    drop(a);
    assert_eq!(trace.slot().n, 0);
    assert_eq!(trace.slot().n, 0);
    let d = trace.slot();
    let e = trace.slot();
    assert_eq!([d.n, e.n], [0, 1]);
    drop((c, d, e));
    drop(trace);
    // Three slots, each named once.
    let text = std::fs::read_to_string(dir.path().join("t.json")).expect("the trace");
    let all: Vec<serde_json::Value> = serde_json::from_str(&text).expect("finished when dropped");
    assert_eq!(all.iter().filter(|e| e["name"] == "thread_name").count(), 3);
}

#[test]
fn each_thread_has_a_track_of_its_own_per_trace() {
    let dir = tempfile::tempdir().expect("a folder");
    let one = Trace::create(dir.path().join("1.json"), "one").expect("a trace");
    let two = Trace::create(dir.path().join("2.json"), "two").expect("a trace");
    one.set_model(crate::Model::Sync, 1);
    assert_eq!(one.thread_track(), one.thread_track());
    let other = std::thread::spawn({
        let one = one.clone();
        move || one.thread_track()
    })
    .join()
    .expect("joined");
    assert_ne!(other, one.thread_track());
    assert_eq!(two.thread_track().tid, 1);
    assert_eq!(one.thread_track().tid, 1);
    one.finish().expect("written");
    let names: Vec<_> = events(&one).into_iter().filter(|e| e["name"] == "thread_name").collect();
    assert!(names.iter().all(|e| e["args"]["name"] == "sync"), "{names:?}");
}

#[test]
fn events_reach_the_file_while_the_run_goes() {
    let dir = tempfile::tempdir().expect("a folder");
    let trace = Trace::create(dir.path().join("t.json"), "live").expect("a trace");
    trace.in_flight(1);
    trace.flush_local();
    // Not finished, yet the event gets there: the flusher writes it.
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while !events(&trace).iter().any(|e| e["ph"] == "C") {
        assert!(std::time::Instant::now() < deadline, "never flushed");
        std::thread::sleep(FLUSH_EVERY);
    }
}

#[test]
fn numbers_are_read_off_thread_names() {
    assert_eq!(trailing_number("concur-worker-12"), Some(12));
    assert_eq!(trailing_number("item-0"), Some(0));
    assert_eq!(trailing_number("main"), None);
    assert_eq!(Micros(1_234_567).to_string(), "1234.567");
    assert_eq!(Micros(5).to_string(), "0.005");
}

#[test]
fn the_request_writer_writes_what_fmt_would() {
    for ns in [0, 5, 999, 1_000, 1_234_567, 10_050, u64::MAX] {
        let mut buf = Vec::new();
        Event(&mut buf).micros(ns);
        assert_eq!(String::from_utf8(buf).expect("UTF-8"), Micros(ns).to_string(), "{ns}");
    }
    let mut buf = Vec::new();
    let mut e = Event(&mut buf);
    e.raw("[");
    let name = e.display(&"USD 2024-01-02");
    e.raw("|").again(name).raw("|").int(-3i64).raw("|").int(u32::MAX);
    assert_eq!(String::from_utf8(buf).expect("UTF-8"), "[USD 2024-01-02|USD 2024-01-02|-3|4294967295");
}

#[test]
fn a_path_that_cannot_be_written_is_an_error() {
    assert!(Trace::create("/nonexistent-folder/t.json", "x").is_err());
}
