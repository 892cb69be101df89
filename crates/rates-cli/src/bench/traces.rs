//! The traces of `rates bench`'s runs: each measured child writes one
//! (Chrome's Trace Event format, one event a line), and the bench reads
//! them back here, to merge them into one file for a trace viewer
//! (`--trace`, [`merge`]) and to draw what each model did
//! (`--timeline`, [`RunTrace`]).
//!
//! A run stopped before its end leaves a prefix whose last line may be
//! cut: that line is ignored, so a stalled model's trace still shows what
//! it did until it was stopped.

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};

use serde_json::{Map, Value};

/// Why a trace cannot be read.
#[derive(Debug, thiserror::Error)]
pub(super) enum TraceError {
    #[error("cannot read the trace {0}: {1}")]
    Io(PathBuf, std::io::Error),
    #[error("the trace {path} has a bad event on line {line}: {why}")]
    Bad { path: PathBuf, line: usize, why: String },
}

/// Calls `each` with every event of the trace at `path`, in file order:
/// the lines of a JSON array written one event a line (a cut last line is
/// left out), or, for a file in another layout, the whole JSON array.
fn for_each_event(path: &Path, mut each: impl FnMut(Map<String, Value>)) -> Result<(), TraceError> {
    let io = |e| TraceError::Io(path.to_path_buf(), e);
    let file = std::fs::File::open(path).map_err(io)?;
    let lines = BufReader::new(file).lines().enumerate();
    // A line that does not parse is an error unless it is the last: the
    // one a killed run may have cut.
    let mut bad: Option<(usize, String)> = None;
    let mut first = true;
    for (n, line) in lines {
        let line = line.map_err(io)?;
        let text = line.trim();
        if first && !text.is_empty() && text != "[" {
            // Not one event a line: the whole file is one array.
            let all = std::fs::read_to_string(path).map_err(io)?;
            let events: Vec<Map<String, Value>> = serde_json::from_str(&all).map_err(|e| TraceError::Bad {
                path: path.to_path_buf(),
                line: e.line(),
                why: e.to_string(),
            })?;
            events.into_iter().for_each(each);
            return Ok(());
        }
        first = first && text.is_empty();
        let text = text.trim_end_matches(',').trim_end_matches(']').trim_end().trim_end_matches(',');
        if text.is_empty() || text == "[" {
            continue;
        }
        if let Some((line, why)) = bad.take() {
            return Err(TraceError::Bad { path: path.to_path_buf(), line, why });
        }
        match serde_json::from_str::<Map<String, Value>>(text) {
            Ok(event) => each(event),
            Err(e) => bad = Some((n + 1, e.to_string())),
        }
    }
    Ok(())
}

fn str_of<'a>(event: &'a Map<String, Value>, key: &str) -> &'a str {
    event.get(key).and_then(Value::as_str).unwrap_or("")
}

fn num_of(event: &Map<String, Value>, key: &str) -> Option<f64> {
    event.get(key).and_then(Value::as_f64)
}

/// A track's key: (pid, tid) as the trace writes them.
type TrackId = (i64, i64);

fn track_of(event: &Map<String, Value>) -> TrackId {
    let id = |k| event.get(k).and_then(Value::as_i64).unwrap_or(0);
    (id("pid"), id("tid"))
}

/// What a bar of a timeline is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub(super) enum Kind {
    /// A wait before a request: throttle, limiter, `Retry-After`, backoff.
    Wait,
    /// A request answered (any status below 400 and no error).
    Answered,
    /// A request that failed: an error status other than 429, or no answer.
    Failed,
    /// A request answered 429 Too Many Requests.
    TooMany,
}

/// A bar: from `start` to `end`, in µs from the run's first event.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(super) struct Span {
    pub(super) start: f64,
    pub(super) end: f64,
    pub(super) kind: Kind,
}

/// An instant: a 429 or a worker's respawn or cancellation, in µs from
/// the run's first event.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(super) struct Mark {
    pub(super) at: f64,
    pub(super) too_many: bool,
}

/// One track of a run (a thread, a worker process, an async slot) that
/// made requests or waited.
#[derive(Debug, Clone, Default)]
pub(super) struct Track {
    pub(super) name: String,
    pub(super) spans: Vec<Span>,
    pub(super) marks: Vec<Mark>,
}

impl Track {
    fn first_use(&self) -> f64 {
        self.spans.iter().map(|s| s.start).fold(f64::INFINITY, f64::min)
    }
}

/// What a timeline shows of one run: the tracks that did something, in
/// the order of their first use, and the run's length, all in µs from
/// its first event.
#[derive(Debug, Clone, Default)]
pub(super) struct RunTrace {
    pub(super) tracks: Vec<Track>,
    pub(super) length: f64,
}

impl RunTrace {
    /// The spans and instants of the trace at `path`.
    pub(super) fn read(path: &Path) -> Result<RunTrace, TraceError> {
        let mut thread_names: HashMap<TrackId, String> = HashMap::new();
        let mut process_names: HashMap<i64, String> = HashMap::new();
        let mut tracks: HashMap<TrackId, Track> = HashMap::new();
        let (mut origin, mut end) = (f64::INFINITY, f64::NEG_INFINITY);
        for_each_event(path, |e| {
            let ph = str_of(&e, "ph");
            let name = str_of(&e, "name");
            let id = track_of(&e);
            if ph == "M" {
                let named = e.get("args").and_then(|a| a.get("name")).and_then(Value::as_str);
                match (name, named) {
                    ("thread_name", Some(n)) => drop(thread_names.insert(id, n.to_owned())),
                    ("process_name", Some(n)) => drop(process_names.insert(id.0, n.to_owned())),
                    _ => {}
                }
                return;
            }
            let Some(ts) = num_of(&e, "ts") else { return };
            let dur = num_of(&e, "dur").unwrap_or(0.0).max(0.0);
            origin = origin.min(ts);
            end = end.max(ts + dur);
            match ph {
                "X" => {
                    let kind = match str_of(&e, "cat") {
                        "request" => request_kind(e.get("args")),
                        "wait" => Kind::Wait,
                        _ => return,
                    };
                    tracks.entry(id).or_default().spans.push(Span { start: ts, end: ts + dur, kind });
                }
                "i" | "I" if matches!(name, "429" | "respawn" | "cancelled") => {
                    tracks.entry(id).or_default().marks.push(Mark { at: ts, too_many: name == "429" });
                }
                _ => {}
            }
        })?;
        if !origin.is_finite() {
            return Ok(RunTrace::default());
        }
        let mut tracks: Vec<(TrackId, Track)> = tracks.into_iter().filter(|(_, t)| !t.spans.is_empty()).collect();
        for ((pid, tid), track) in &mut tracks {
            track.name = thread_names
                .get(&(*pid, *tid))
                .or_else(|| process_names.get(pid))
                .cloned()
                .unwrap_or_else(|| format!("pid {pid} tid {tid}"));
            track.spans.iter_mut().for_each(|s| (s.start, s.end) = (s.start - origin, s.end - origin));
            track.marks.iter_mut().for_each(|m| m.at -= origin);
        }
        tracks.sort_by(|a, b| a.1.first_use().total_cmp(&b.1.first_use()).then(a.0.cmp(&b.0)));
        Ok(RunTrace { tracks: tracks.into_iter().map(|(_, t)| t).collect(), length: end - origin })
    }
}

/// A request attempt's bar colour, from its `args`: 429, another failure
/// (a status of 400 or more, or an error), or answered.
fn request_kind(args: Option<&Value>) -> Kind {
    let status = args.and_then(|a| a.get("status")).and_then(Value::as_u64);
    let error = args.and_then(|a| a.get("error")).is_some_and(|e| !e.is_null());
    match status {
        Some(429) => Kind::TooMany,
        Some(s) if s >= 400 => Kind::Failed,
        _ if error => Kind::Failed,
        _ => Kind::Answered,
    }
}

/// One run's trace, to be merged under `label` (e.g. `thread-pool run 2`).
#[derive(Debug, Clone)]
pub(super) struct Labelled {
    pub(super) label: String,
    pub(super) path: PathBuf,
}

/// Writes the events of `runs` to `out` as one JSON array: each run's
/// times from its own first event (so the runs line up from 0), its
/// processes renumbered so no two runs share one, the first named after
/// the run and any other (a process pool's workers) after the run and
/// its own name, all sorted in the order of `runs`, and the tracks of a
/// run in the order of their first use. Returns the number of
/// events written. A run whose trace is missing is left out.
pub(super) fn merge(runs: &[Labelled], out: &mut dyn Write) -> Result<usize, MergeError> {
    out.write_all(b"[\n")?;
    let mut written = 0;
    let mut next_pid = 1_i64;
    let mut put = |out: &mut dyn Write, event: &Value| -> Result<(), MergeError> {
        if written > 0 {
            out.write_all(b",\n")?;
        }
        serde_json::to_writer(&mut *out, event).map_err(std::io::Error::from)?;
        written += 1;
        Ok(())
    };
    for run in runs.iter().filter(|r| r.path.exists()) {
        // First pass: the run's processes, their names, its first event and
        // each track's first span.
        let mut pids: Vec<i64> = Vec::new();
        let mut names: HashMap<i64, String> = HashMap::new();
        let mut first_use: HashMap<TrackId, f64> = HashMap::new();
        let mut origin = f64::INFINITY;
        for_each_event(&run.path, |e| {
            let (pid, tid) = track_of(&e);
            if !pids.contains(&pid) {
                pids.push(pid);
            }
            if let ("X", Some(ts)) = (str_of(&e, "ph"), num_of(&e, "ts")) {
                let first = first_use.entry((pid, tid)).or_insert(ts);
                *first = first.min(ts);
            }
            match str_of(&e, "ph") {
                "M" if str_of(&e, "name") == "process_name" => {
                    if let Some(n) = e.get("args").and_then(|a| a.get("name")).and_then(Value::as_str) {
                        names.insert(pid, n.to_owned());
                    }
                }
                "M" => {}
                _ => origin = origin.min(num_of(&e, "ts").unwrap_or(f64::INFINITY)),
            }
        })?;
        let origin = if origin.is_finite() { origin } else { 0.0 };
        let mut renumbered: HashMap<i64, i64> = HashMap::new();
        for (i, pid) in pids.iter().enumerate() {
            let new = next_pid;
            next_pid += 1;
            renumbered.insert(*pid, new);
            let name = match (i, names.get(pid)) {
                (0, _) => run.label.clone(),
                (_, Some(n)) => format!("{} · {n}", run.label),
                (_, None) => format!("{} · pid {pid}", run.label),
            };
            put(out, &meta(new, "process_name", serde_json::json!({ "name": name })))?;
            put(out, &meta(new, "process_sort_index", serde_json::json!({ "sort_index": new })))?;
        }
        // A process's tracks in the order of their first use, as the timelines draw them.
        let mut tracks: Vec<(TrackId, f64)> = first_use.into_iter().collect();
        tracks.sort_by(|a, b| a.1.total_cmp(&b.1).then(a.0.cmp(&b.0)));
        for (i, ((pid, tid), _)) in tracks.into_iter().enumerate() {
            let mut sort = meta(
                renumbered.get(&pid).copied().unwrap_or(pid),
                "thread_sort_index",
                serde_json::json!({ "sort_index": i }),
            );
            sort["tid"] = tid.into();
            put(out, &sort)?;
        }
        // Second pass: every other event, moved to its new process and time.
        let mut failed = None;
        for_each_event(&run.path, |mut e| {
            if failed.is_some() {
                return;
            }
            let meta = str_of(&e, "ph") == "M";
            if meta && matches!(str_of(&e, "name"), "process_name" | "process_sort_index" | "thread_sort_index") {
                return;
            }
            let (pid, _) = track_of(&e);
            e.insert("pid".into(), renumbered.get(&pid).copied().unwrap_or(pid).into());
            if !meta && let Some(ts) = num_of(&e, "ts") {
                // To the nanosecond, as written: no float noise from the shift.
                e.insert("ts".into(), Value::from(((ts - origin) * 1e3).round() / 1e3));
            }
            if let Err(err) = put(out, &Value::Object(e)) {
                failed = Some(err);
            }
        })?;
        if let Some(err) = failed {
            return Err(err);
        }
    }
    out.write_all(b"\n]\n")?;
    Ok(written)
}

fn meta(pid: i64, name: &str, args: Value) -> Value {
    serde_json::json!({ "ph": "M", "name": name, "pid": pid, "tid": 0, "args": args })
}

/// Why the runs' traces cannot be merged.
#[derive(Debug, thiserror::Error)]
pub(super) enum MergeError {
    #[error(transparent)]
    Read(#[from] TraceError),
    #[error("cannot write the merged trace: {0}")]
    Write(#[from] std::io::Error),
}

/// A directory of its own for the runs' traces, removed with everything
/// in it when dropped.
#[derive(Debug)]
pub(super) struct TraceDir(PathBuf);

impl TraceDir {
    /// A new directory under the system's temporary directory, readable
    /// by this user only.
    pub(super) fn new() -> std::io::Result<TraceDir> {
        use std::os::unix::fs::DirBuilderExt;
        let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.subsec_nanos());
        let dir = std::env::temp_dir().join(format!("rates-bench-{}-{nanos:09}", std::process::id()));
        // `create` fails if the name is taken: never a directory someone else made.
        std::fs::DirBuilder::new().mode(0o700).create(&dir)?;
        Ok(TraceDir(dir))
    }

    /// The trace file of a row's `k`-th run.
    pub(super) fn run(&self, row: usize, k: usize) -> PathBuf {
        self.0.join(format!("row{row}-run{k}.json"))
    }
}

impl Drop for TraceDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;

    /// A trace file written as the runs write theirs.
    pub(in super::super) fn write_trace(dir: &Path, name: &str, events: &[Value], end: bool) -> PathBuf {
        let path = dir.join(name);
        let mut text = String::from("[\n");
        for e in events {
            text.push_str(&e.to_string());
            text.push_str(",\n");
        }
        if end {
            let last = events.iter().filter_map(|e| e["ts"].as_f64()).fold(0.0, f64::max);
            let pid = events.first().map_or(Value::from(1), |e| e["pid"].clone());
            let end = serde_json::json!({"ph": "i", "s": "t", "cat": "event", "name": "end", "pid": pid, "tid": 1, "ts": last});
            text.push_str(&format!("{end}\n]\n"));
        }
        std::fs::write(&path, text).expect("a trace written");
        path
    }

    pub(in super::super) fn request(pid: i64, tid: i64, ts: f64, dur: f64, status: u64) -> Value {
        serde_json::json!({"ph": "X", "cat": "request", "name": "GET EUR", "ts": ts, "dur": dur, "pid": pid,
            "tid": tid, "args": {"item": "EUR", "attempt": 1, "status": status, "bytes": 100}})
    }

    fn thread_name(pid: i64, tid: i64, name: &str) -> Value {
        serde_json::json!({"ph": "M", "name": "thread_name", "pid": pid, "tid": tid, "args": {"name": name}})
    }

    fn dir(name: &str) -> tempfile::TempDir {
        tempfile::Builder::new().prefix(&format!("rates-traces-{name}")).tempdir().expect("a temporary directory")
    }

    #[test]
    fn a_run_reads_as_tracks_in_order_of_first_use_from_its_first_event() {
        let d = dir("read");
        let wait = serde_json::json!({"ph": "X", "cat": "wait", "name": "throttle", "ts": 1000.0, "dur": 500.0,
            "pid": 7, "tid": 2});
        let events = [
            thread_name(7, 1, "thread-pool worker 1"),
            thread_name(7, 2, "thread-pool worker 2"),
            request(7, 1, 2000.0, 100.0, 200),
            wait,
            request(7, 2, 1500.0, 100.0, 429),
            request(7, 2, 1700.0, 100.0, 503),
            serde_json::json!({"ph": "i", "s": "t", "cat": "event", "name": "429", "ts": 1600.0, "pid": 7, "tid": 2}),
            serde_json::json!({"ph": "C", "name": "in flight", "ts": 900.0, "pid": 7, "args": {"n": 1}}),
        ];
        let t = RunTrace::read(&write_trace(d.path(), "a.json", &events, false)).expect("read");
        let names: Vec<&str> = t.tracks.iter().map(|t| t.name.as_str()).collect();
        assert_eq!(names, ["thread-pool worker 2", "thread-pool worker 1"]);
        // The counter at 900 µs is the first event: 0.
        assert_eq!(t.tracks[0].spans[0], Span { start: 100.0, end: 600.0, kind: Kind::Wait });
        let kinds: Vec<Kind> = t.tracks[0].spans.iter().map(|s| s.kind).collect();
        assert_eq!(kinds, [Kind::Wait, Kind::TooMany, Kind::Failed]);
        assert_eq!(t.tracks[0].marks, [Mark { at: 700.0, too_many: true }]);
        assert_eq!(t.length, 1200.0);
    }

    #[test]
    fn a_cut_last_line_is_left_out_and_a_bad_line_before_it_is_an_error() {
        let d = dir("cut");
        let path = write_trace(d.path(), "cut.json", &[request(1, 1, 0.0, 10.0, 200)], false);
        let mut text = std::fs::read_to_string(&path).expect("read");
        text.push_str("{\"ph\":\"X\",\"cat\":\"req");
        std::fs::write(&path, &text).expect("written");
        assert_eq!(RunTrace::read(&path).expect("a prefix reads").tracks.len(), 1);
        text.push_str("\n{\"ph\":\"X\"}\n");
        std::fs::write(&path, &text).expect("written");
        assert!(matches!(RunTrace::read(&path), Err(TraceError::Bad { line: 3, .. })), "{:?}", RunTrace::read(&path));
    }

    #[test]
    fn a_whole_array_reads_too() {
        let d = dir("array");
        let path = d.path().join("array.json");
        let events = serde_json::json!([request(1, 1, 5.0, 10.0, 200), request(1, 2, 8.0, 10.0, 200)]);
        std::fs::write(&path, events.to_string()).expect("written");
        let t = RunTrace::read(&path).expect("read");
        assert_eq!((t.tracks.len(), t.length), (2, 13.0));
    }

    #[test]
    fn merged_runs_start_at_zero_in_processes_of_their_own() {
        let d = dir("merge");
        let pool = serde_json::json!({"ph": "M", "name": "process_name", "pid": 9, "tid": 0,
            "args": {"name": "process-pool worker pid 9"}});
        let a = write_trace(
            d.path(),
            "a.json",
            &[request(5, 1, 100.0, 10.0, 200), pool, request(9, 9, 120.0, 10.0, 200)],
            true,
        );
        let b = write_trace(d.path(), "b.json", &[thread_name(5, 1, "sync"), request(5, 1, 900.0, 10.0, 200)], false);
        let runs = [
            Labelled { label: "process-pool run 1".into(), path: a },
            Labelled { label: "sync run 1".into(), path: b },
            Labelled { label: "gone".into(), path: d.path().join("none.json") },
        ];
        let mut out = Vec::new();
        let n = merge(&runs, &mut out).expect("merged");
        let all: Vec<Value> = serde_json::from_slice(&out).expect("one JSON array");
        assert_eq!(all.len(), n);
        let named = |pid: i64| {
            all.iter()
                .find(|e| e["name"] == "process_name" && e["pid"] == pid)
                .and_then(|e| e["args"]["name"].as_str())
                .map(str::to_owned)
        };
        assert_eq!(named(1).as_deref(), Some("process-pool run 1"));
        assert_eq!(named(2).as_deref(), Some("process-pool run 1 · process-pool worker pid 9"));
        assert_eq!(named(3).as_deref(), Some("sync run 1"));
        let starts: Vec<(i64, f64)> = all
            .iter()
            .filter(|e| e["cat"] == "request")
            .map(|e| (e["pid"].as_i64().unwrap_or(0), e["ts"].as_f64().unwrap_or(-1.0)))
            .collect();
        assert_eq!(starts, [(1, 0.0), (2, 20.0), (3, 0.0)]);
        // One process_name per process: the runs' own are replaced.
        assert_eq!(all.iter().filter(|e| e["name"] == "process_name").count(), 3);
        // The worker process's track was used after the first process's.
        let sorted: Vec<(i64, i64, u64)> = all
            .iter()
            .filter(|e| e["name"] == "thread_sort_index")
            .map(|e| {
                (
                    e["pid"].as_i64().unwrap_or(0),
                    e["tid"].as_i64().unwrap_or(0),
                    e["args"]["sort_index"].as_u64().unwrap_or(9),
                )
            })
            .collect();
        assert_eq!(sorted, [(1, 1, 0), (2, 9, 1), (3, 1, 0)]);
    }
}
