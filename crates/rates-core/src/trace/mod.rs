//! A trace of a run in the Chrome Trace Event format (the JSON array
//! form), which Perfetto's UI and other trace viewers open: one track per
//! worker (a thread, a worker process, an async task slot, a queue
//! worker), a span per attempt and per wait of the rate limits, instants
//! for 429s, retries, cancellations and respawned workers, and counters for
//! the requests in flight and the limits `auto` learns.
//!
//! Written by hand: `tracing-chrome` stamps its events from an instant of
//! its own and under one hard-coded pid, and `tracing-perfetto` writes
//! protobuf from spans of one process; neither writes counters, nor can
//! put an attempt made in a process-pool worker or a queue worker on that
//! worker's own track, on one clock shared by every process of the host.
//! Here every time is `CLOCK_MONOTONIC`, so the traces of several
//! processes of one host line up.
//!
//! The file is written as the run goes: `[`, then one event per line, each
//! followed by `,`. Each thread keeps the events of the item it works on
//! and hands them over when the item is done (one lock per item, not per
//! event), and the file is flushed at least every [`FLUSH_EVERY`]; a
//! normal end adds a last event and `]`. A killed run leaves a prefix that viewers
//! and [`read_events`] still read. Memory is flat in the number of events.

mod read;
mod write;

use std::collections::{BTreeSet, HashSet};
use std::fmt::{self, Display};
use std::fs::File;
use std::io::{self, BufWriter, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use concur::sync;

pub use read::{ReadError, read_events};
use write::{Event, Micros};

/// The longest an event waits in the buffer before it is in the file.
pub const FLUSH_EVERY: Duration = Duration::from_millis(100);

/// Waits shorter than this are not written: a run without limits writes none.
pub const MIN_WAIT: Duration = Duration::from_micros(50);

/// Now, in nanoseconds of `CLOCK_MONOTONIC`: the clock of every event, the
/// same in every process of the host.
pub fn now() -> u64 {
    use nix::time::{ClockId, clock_gettime};
    clock_gettime(ClockId::CLOCK_MONOTONIC)
        .map_or(0, |t| u64::try_from(t.tv_sec()).unwrap_or(0) * 1_000_000_000 + u64::try_from(t.tv_nsec()).unwrap_or(0))
}

/// Where events go: a process (`pid`) and a track in it (`tid`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Track {
    /// The process, as the trace viewer groups tracks.
    pub pid: u32,
    /// The track within the process: a thread, an async slot or a worker.
    pub tid: u32,
}

/// The recorder of one trace file; cheap to clone (all clones write to the
/// same file). The file is finished when [`finish`](Self::finish) is
/// called or the last clone is dropped.
#[derive(Clone)]
pub struct Trace(Arc<Inner>);

impl fmt::Debug for Trace {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Trace").field("path", &self.0.path).finish_non_exhaustive()
    }
}

struct Inner {
    /// Tells apart the traces of one process in a thread's track cache.
    id: u64,
    path: PathBuf,
    pid: u32,
    out: Mutex<Out>,
    /// What the tracks of threads are called: `thread-pool worker`, say.
    prefix: Mutex<Prefix>,
    /// The run is a process pool's of this many workers: attempts are
    /// drawn on the worker that made them.
    stamps: AtomicBool,
    pool: AtomicUsize,
    next_tid: AtomicU32,
    slots: Mutex<Slots>,
    in_flight: AtomicI64,
    /// The last rate (its bits), burst and concurrency limit written.
    last_rate: AtomicU64,
    last_burst: AtomicU32,
    last_limit: AtomicU64,
    /// Dropped with the trace: wakes the flusher, which then ends.
    _flusher: crossbeam_channel::Sender<()>,
}

struct Out {
    w: BufWriter<File>,
    /// `]` is written: nothing more goes to the file.
    done: bool,
    /// The first write error; the trace stops writing after it.
    error: Option<io::ErrorKind>,
    /// Processes whose name is written (worker processes).
    named: HashSet<u32>,
}

#[derive(Default)]
struct Slots {
    free: BTreeSet<u32>,
    next: u32,
}

/// How a thread's track is named.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Prefix {
    /// After the thread's own name.
    Thread,
    /// One track of this name (the `sync` model's thread).
    One(String),
    /// This, then the number the thread's name ends with (or its track's).
    Numbered(String),
}

/// Tracks of async task slots start here, clear of threads' numbers.
const SLOT_BASE: u32 = 1 << 20;

thread_local! {
    /// This thread's tracks: each trace's id and the track's tid there.
    static TRACKS: std::cell::RefCell<Vec<(u64, u32)>> = const { std::cell::RefCell::new(Vec::new()) };
}

static NEXT_ID: AtomicU64 = AtomicU64::new(1);

impl Trace {
    /// Starts a trace at `path` (created, or emptied), for the process
    /// called `process` (`thread-pool`, `rates fetch`, `worker HOST pid
    /// PID`).
    ///
    /// # Errors
    ///
    /// The file cannot be created or written.
    pub fn create(path: impl AsRef<Path>, process: &str) -> io::Result<Trace> {
        let path = path.as_ref().to_path_buf();
        let mut w = BufWriter::with_capacity(64 * 1024, File::create(&path)?);
        w.write_all(b"[\n")?;
        let pid = std::process::id();
        write_meta(&mut w, "process_name", pid, 0, process)?;
        w.flush()?;
        let (tx, rx) = crossbeam_channel::bounded::<()>(0);
        let inner = Arc::new(Inner {
            id: NEXT_ID.fetch_add(1, Ordering::Relaxed),
            path,
            pid,
            out: Mutex::new(Out { w, done: false, error: None, named: HashSet::new() }),
            prefix: Mutex::new(Prefix::Thread),
            stamps: AtomicBool::new(false),
            pool: AtomicUsize::new(0),
            next_tid: AtomicU32::new(1),
            slots: Mutex::new(Slots::default()),
            in_flight: AtomicI64::new(0),
            last_rate: AtomicU64::new(0),
            last_burst: AtomicU32::new(0),
            last_limit: AtomicU64::new(0),
            _flusher: tx,
        });
        let weak = Arc::downgrade(&inner);
        std::thread::Builder::new().name("trace-flush".into()).stack_size(64 * 1024).spawn(move || {
            while rx.recv_timeout(FLUSH_EVERY) == Err(crossbeam_channel::RecvTimeoutError::Timeout) {
                let Some(inner) = weak.upgrade() else { return };
                let mut out = inner.lock();
                if out.done {
                    return;
                }
                let flushed = out.w.flush();
                out.check(flushed);
            }
        })?;
        Ok(Trace(inner))
    }

    /// The file the trace is written to.
    pub fn path(&self) -> &Path {
        &self.0.path
    }

    /// This process's id, the `pid` of its tracks.
    pub fn pid(&self) -> u32 {
        self.0.pid
    }

    /// Names the tracks of threads that record from now on after the
    /// model that runs them: `sync`, `thread 17` (a thread per item),
    /// `thread-pool worker 3`, `async-executor thread 2`...; `workers`
    /// is the size of its pool.
    pub fn set_model(&self, model: crate::Model, workers: usize) {
        use crate::Model;
        self.0.stamps.store(model == Model::ProcessPool, Ordering::Relaxed);
        self.0.pool.store(workers, Ordering::Relaxed);
        let prefix = match model {
            Model::Sync => Prefix::One("sync".into()),
            Model::ThreadPerItem => Prefix::Numbered("thread".into()),
            Model::ProcessPool => Prefix::Numbered("process-pool dispatcher".into()),
            Model::AsyncExecutor => Prefix::Numbered("async-executor thread".into()),
            Model::Async => Prefix::Numbered("async thread".into()),
            m => Prefix::Numbered(format!("{} worker", m.name())),
        };
        *sync::lock(&self.0.prefix) = prefix;
    }

    /// Whether attempts are made in worker processes, which say when and
    /// where they ran (`process-pool`).
    pub fn stamps_workers(&self) -> bool {
        self.0.stamps.load(Ordering::Relaxed)
    }

    /// The size of the process pool whose workers are drawn: more worker
    /// processes seen than this were respawned.
    pub fn pool_size(&self) -> usize {
        self.0.pool.load(Ordering::Relaxed)
    }

    /// How many worker processes have a track.
    pub fn workers_seen(&self) -> usize {
        self.0.lock().named.len()
    }

    /// Names the tracks of threads that record from now on `prefix N`, N
    /// the number the thread's name ends with (or the track's own).
    pub fn set_thread_prefix(&self, prefix: impl Into<String>) {
        *sync::lock(&self.0.prefix) = Prefix::Numbered(prefix.into());
    }

    /// Writes what is buffered and ends the file with `]`; later events
    /// are dropped. Called again, does nothing.
    ///
    /// # Errors
    ///
    /// The first error met writing the file, if any.
    pub fn finish(&self) -> io::Result<()> {
        self.0.finish()
    }

    /// The track of the calling thread, named the first time it is used.
    pub fn thread_track(&self) -> Track {
        let id = self.0.id;
        let known = TRACKS.with(|t| t.borrow().iter().find(|(i, _)| *i == id).map(|&(_, tid)| tid));
        if let Some(tid) = known {
            return Track { pid: self.0.pid, tid };
        }
        let tid = self.0.next_tid.fetch_add(1, Ordering::Relaxed);
        TRACKS.with(|t| {
            let mut tracks = t.borrow_mut();
            // The traces of this process that this thread used last.
            if tracks.len() >= 8 {
                tracks.remove(0);
            }
            tracks.push((id, tid));
        });
        let thread = std::thread::current();
        let own = thread.name();
        let name = match &*sync::lock(&self.0.prefix) {
            Prefix::One(name) => name.clone(),
            Prefix::Numbered(prefix) => format!("{prefix} {}", own.and_then(trailing_number).unwrap_or(tid)),
            Prefix::Thread => own.map_or_else(|| format!("thread {tid}"), str::to_owned),
        };
        self.0.with_out(|w| write_meta(w, "thread_name", self.0.pid, tid, &name));
        Track { pid: self.0.pid, tid }
    }

    /// The lowest async task slot free now, the task's until the guard
    /// is dropped: slots never overlap.
    pub fn slot(&self) -> Slot {
        let mut slots = sync::lock(&self.0.slots);
        let n = match slots.free.pop_first() {
            Some(n) => n,
            None => {
                let n = slots.next;
                slots.next += 1;
                drop(slots);
                self.0
                    .with_out(|w| write_meta(w, "thread_name", self.0.pid, SLOT_BASE + n, &format!("async slot {n}")));
                n
            }
        };
        Slot { trace: self.clone(), n }
    }

    /// The track of a process-pool worker process, named the first time
    /// it is used; `true` with it if this is its first use.
    pub fn worker_track(&self, pid: u32) -> (Track, bool) {
        let track = Track { pid, tid: pid };
        let mut out = self.0.lock();
        let first = out.named.insert(pid);
        if first && out.writable() {
            let name = format!("process-pool worker pid {pid}");
            let written = write_meta(&mut out.w, "process_name", pid, 0, &name)
                .and_then(|()| write_meta(&mut out.w, "thread_name", pid, pid, &name));
            out.check(written);
        }
        (track, first)
    }

    /// An attempt at `item`, from `start` to `end` (see [`now`]): `status`
    /// 0 and an `error` when it got no HTTP answer.
    #[allow(clippy::too_many_arguments)]
    pub fn request(
        &self,
        track: Track,
        start: u64,
        end: u64,
        item: &dyn Display,
        attempt: u32,
        status: u16,
        bytes: u64,
        error: Option<&str>,
    ) {
        self.local(|w| {
            let mut e = Event(w);
            e.raw(r#"{"ph":"X","cat":"request","name":"GET "#);
            let name = e.display(item);
            e.raw(r#"","ts":"#).micros(start).raw(r#","dur":"#).micros(end.saturating_sub(start));
            e.raw(r#","pid":"#).int(track.pid).raw(r#","tid":"#).int(track.tid);
            e.raw(r#","args":{"item":""#).again(name);
            e.raw(r#"","attempt":"#).int(attempt).raw(r#","status":"#).int(status).raw(r#","bytes":"#).int(bytes);
            if let Some(why) = error {
                e.raw(r#","error":"#);
                serde_json::to_writer(&mut *e.0, why).map_err(io::Error::other)?;
            }
            e.raw("}},\n");
            Ok(())
        });
    }

    /// A wait called `name` (`throttle`, `rate`, `backoff`...) from
    /// `start` to `end`, if it took [`MIN_WAIT`] or more.
    pub fn wait(&self, track: Track, name: &str, start: u64, end: u64) {
        let dur = end.saturating_sub(start);
        if dur < MIN_WAIT.as_nanos() as u64 {
            return;
        }
        self.local(|w| {
            writeln!(
                w,
                r#"{{"ph":"X","cat":"wait","name":"{name}","ts":{},"dur":{},"pid":{},"tid":{}}},"#,
                Micros(start),
                Micros(dur),
                track.pid,
                track.tid
            )
        });
    }

    /// An instant called `name` (`429`, `retry`, `cancelled`, `respawn`)
    /// at `ts` on `track`; `args` is the inside of its `args` object
    /// (`"item":"USD","retry_after":1`).
    pub fn instant(&self, track: Track, ts: u64, name: &str, args: fmt::Arguments<'_>) {
        self.local(|w| {
            writeln!(
                w,
                r#"{{"ph":"i","s":"t","cat":"event","name":"{name}","ts":{},"pid":{},"tid":{},"args":{{{args}}}}},"#,
                Micros(ts),
                track.pid,
                track.tid
            )
        });
    }

    /// One more (`1`) or one less (`-1`) request in flight, now.
    pub fn in_flight(&self, delta: i64) {
        let n = self.0.in_flight.fetch_add(delta, Ordering::Relaxed) + delta;
        let ts = now();
        self.local(|w| {
            let mut e = Event(w);
            e.raw(r#"{"ph":"C","name":"in flight","pid":"#).int(self.0.pid).raw(r#","ts":"#).micros(ts);
            e.raw(r#","args":{"requests":"#).int(n).raw("}},\n");
            Ok(())
        });
    }

    /// The rate and burst the run paces itself by, if they changed.
    pub fn rate(&self, rate: f64, burst: u32) {
        let bits = rate.to_bits();
        let same_rate = self.0.last_rate.swap(bits, Ordering::Relaxed) == bits;
        let same_burst = self.0.last_burst.swap(burst, Ordering::Relaxed) == burst;
        if !(same_rate && same_burst) && rate.is_finite() {
            self.counter("rate", format_args!(r#""rate":{rate},"burst":{burst}"#));
        }
    }

    /// The bound on requests in flight, if it changed.
    pub fn concurrency_limit(&self, limit: usize) {
        let n = limit as u64;
        if self.0.last_limit.swap(n, Ordering::Relaxed) != n {
            self.counter("concurrency limit", format_args!(r#""limit":{n}"#));
        }
    }

    fn counter(&self, name: &str, args: fmt::Arguments<'_>) {
        let ts = now();
        self.local(|w| {
            writeln!(w, r#"{{"ph":"C","name":"{name}","pid":{},"ts":{},"args":{{{args}}}}},"#, self.0.pid, Micros(ts))
        });
    }

    /// Writes an event to this thread's buffer of this trace's events;
    /// past [`LOCAL_MAX`] bytes they go to the file.
    fn local(&self, write: impl FnOnce(&mut Vec<u8>) -> io::Result<()>) {
        LOCAL.with(|l| {
            let mut l = l.borrow_mut();
            if l.id != self.0.id {
                l.hand_over();
                l.id = self.0.id;
                l.owner = Arc::downgrade(&self.0);
            }
            // Writing to memory cannot fail.
            let _ = write(&mut l.buf);
            if l.buf.len() >= LOCAL_MAX {
                l.hand_over();
            }
        });
    }

    /// Hands the events the calling thread wrote over to the file (its
    /// buffer, then the flusher): the fetch job does at the end of each
    /// item, so a run takes the file's lock once per item, not per event.
    pub fn flush_local(&self) {
        LOCAL.with(|l| l.borrow_mut().hand_over());
    }
}

/// The events a thread wrote and has not handed over to the file yet.
struct Local {
    /// The trace they are of.
    id: u64,
    owner: std::sync::Weak<Inner>,
    buf: Vec<u8>,
}

/// A thread hands its events over once it holds this many bytes of them.
const LOCAL_MAX: usize = 16 * 1024;

thread_local! {
    static LOCAL: std::cell::RefCell<Local> =
        const { std::cell::RefCell::new(Local { id: 0, owner: std::sync::Weak::new(), buf: Vec::new() }) };
}

impl Local {
    fn hand_over(&mut self) {
        if self.buf.is_empty() {
            return;
        }
        if let Some(inner) = self.owner.upgrade() {
            inner.with_out(|w| w.write_all(&self.buf));
        }
        self.buf.clear();
    }
}

/// A thread that ends hands its events over.
impl Drop for Local {
    fn drop(&mut self) {
        self.hand_over();
    }
}

impl Inner {
    fn lock(&self) -> MutexGuard<'_, Out> {
        sync::lock(&self.out)
    }

    /// Runs `write` on the file unless it is finished or failed.
    fn with_out(&self, write: impl FnOnce(&mut BufWriter<File>) -> io::Result<()>) {
        let mut out = self.lock();
        if out.writable() {
            let written = write(&mut out.w);
            out.check(written);
        }
    }

    fn finish(&self) -> io::Result<()> {
        // The finishing thread's own events first (other threads hand theirs
        // over as their items end).
        let mine = LOCAL
            .try_with(|l| match l.try_borrow_mut() {
                Ok(mut l) if l.id == self.id => std::mem::take(&mut l.buf),
                _ => Vec::new(),
            })
            .unwrap_or_default();
        let mut out = self.lock();
        if !mine.is_empty() && out.writable() {
            let written = out.w.write_all(&mine);
            out.check(written);
        }
        if !out.done && out.error.is_none() {
            let n = self.in_flight.load(Ordering::Relaxed);
            // The last event, without a comma: the requests in flight at the end.
            let written = write!(
                out.w,
                "{{\"ph\":\"C\",\"name\":\"in flight\",\"pid\":{},\"ts\":{},\"args\":{{\"requests\":{n}}}}}\n]\n",
                self.pid,
                Micros(now())
            )
            .and_then(|()| out.w.flush());
            out.check(written);
        }
        out.done = true;
        match out.error {
            Some(kind) => Err(io::Error::new(kind, format!("cannot write the trace {}", self.path.display()))),
            None => Ok(()),
        }
    }
}

impl Drop for Inner {
    fn drop(&mut self) {
        let _ = self.finish();
    }
}

impl Out {
    fn writable(&self) -> bool {
        !self.done && self.error.is_none()
    }

    fn check(&mut self, written: io::Result<()>) {
        if let Err(e) = written {
            self.error.get_or_insert(e.kind());
        }
    }
}

/// An async task's slot, given back when dropped.
pub struct Slot {
    trace: Trace,
    n: u32,
}

impl Slot {
    /// The trace it is a slot of.
    pub fn trace(&self) -> &Trace {
        &self.trace
    }

    /// The slot's track.
    pub fn track(&self) -> Track {
        Track { pid: self.trace.0.pid, tid: SLOT_BASE + self.n }
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        sync::lock(&self.trace.0.slots).free.insert(self.n);
    }
}

/// A metadata event naming a process (`process_name`) or a track (`thread_name`).
fn write_meta(w: &mut impl Write, what: &str, pid: u32, tid: u32, name: &str) -> io::Result<()> {
    write!(w, r#"{{"ph":"M","name":"{what}","pid":{pid},"tid":{tid},"args":{{"name":"#)?;
    serde_json::to_writer(&mut *w, name).map_err(io::Error::other)?;
    w.write_all(b"}},\n")
}

/// The number a thread's name ends with: `concur-worker-3` is 3.
fn trailing_number(name: &str) -> Option<u32> {
    let digits = name.len() - name.trim_end_matches(|c: char| c.is_ascii_digit()).len();
    name[name.len() - digits..].parse().ok()
}

#[cfg(test)]
mod tests;
