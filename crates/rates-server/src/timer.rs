//! The server's own clock: the injected latency, due to a tenth of a
//! millisecond, and the connections' time limits.
//!
//! tokio's timer counts whole milliseconds and rounds a sleep up to the
//! next tick, so a 20 ms latency took 20–21 ms, 21.0 at the median: 5 %
//! on top of the latency a benchmark counts its bound from. This timer is
//! one thread with the due times in a heap: it waits on a condition
//! variable until the earliest is due (the kernel's futex wait, in
//! nanoseconds, with the thread's timer slack lowered from 50 µs), and then
//! wakes that request's task. Waiting costs no thread per request and no
//! polling. The connections' watchdogs wait on it too, so that tokio's
//! timer holds nothing while requests are served and the runtime's threads
//! park without a timeout (a kernel timer set and cancelled at every park).
//!
//! It follows the real clock, never tokio's paused one, so the server's
//! tests on a paused clock choose [`Timer::Runtime`].

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::Instant;

use concur::sync;
use tokio::sync::oneshot;

/// Which clock times the injected latency and the connections' limits.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Timer {
    /// A thread of the server's own, precise to about 0.1 ms (the default).
    #[default]
    Precise,
    /// tokio's timer: whole milliseconds, rounded up; it follows a paused
    /// test clock.
    Runtime,
}

/// The timer thread and its queue of due times. Dropping it stops the
/// thread; sleeps still pending then end at once.
#[derive(Debug)]
pub(crate) struct PreciseTimer {
    state: Arc<State>,
    thread: Option<JoinHandle<()>>,
}

#[derive(Debug, Default)]
struct State {
    queue: Mutex<Queue>,
    /// Signalled when a new earliest due time arrives or on stop.
    changed: Condvar,
}

#[derive(Debug, Default)]
struct Queue {
    due: BinaryHeap<Reverse<Entry>>,
    /// Orders entries due at the same instant, first asked first.
    next_seq: u64,
    /// At this many entries, those nobody waits for any more are dropped
    /// (a watchdog's wait ends early when its connection closes).
    prune_at: usize,
    stop: bool,
}

#[derive(Debug)]
struct Entry {
    at: Instant,
    seq: u64,
    wake: oneshot::Sender<()>,
}

impl PartialEq for Entry {
    fn eq(&self, other: &Self) -> bool {
        (self.at, self.seq) == (other.at, other.seq)
    }
}
impl Eq for Entry {}
impl PartialOrd for Entry {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Entry {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        (self.at, self.seq).cmp(&(other.at, other.seq))
    }
}

/// The fewest entries at which the queue is pruned: pruning is a pass over
/// them all, so it waits until the queue has doubled since the last one.
const PRUNE_MIN: usize = 1024;

impl State {
    fn lock(&self) -> MutexGuard<'_, Queue> {
        // The queue stays consistent whatever panicked while holding it.
        sync::lock(&self.queue)
    }
}

impl PreciseTimer {
    /// Starts the timer's thread.
    pub(crate) fn start() -> std::io::Result<PreciseTimer> {
        let state = Arc::new(State::default());
        let thread = std::thread::Builder::new().name("rates-timer".into()).spawn({
            let state = Arc::clone(&state);
            move || run(&state)
        })?;
        Ok(PreciseTimer { state, thread: Some(thread) })
    }

    /// Ends once `at` has passed (or the timer stopped). Dropping the
    /// future early is allowed: its entry then wakes nobody.
    pub(crate) fn sleep_until(&self, at: Instant) -> impl Future<Output = ()> + Send + 'static {
        let (wake, woken) = oneshot::channel();
        let mut q = self.state.lock();
        let earliest = q.due.peek().is_none_or(|Reverse(e)| at < e.at);
        let seq = q.next_seq;
        q.next_seq += 1;
        q.due.push(Reverse(Entry { at, seq, wake }));
        if q.due.len() >= q.prune_at {
            q.due.retain(|Reverse(e)| !e.wake.is_closed());
            q.prune_at = (q.due.len() * 2).max(PRUNE_MIN);
        }
        drop(q);
        if earliest {
            self.state.changed.notify_one();
        }
        async move {
            // An error only means the timer stopped: the wait is over too.
            let _ = woken.await;
        }
    }
}

impl Drop for PreciseTimer {
    fn drop(&mut self) {
        self.state.lock().stop = true;
        self.state.changed.notify_one();
        if let Some(thread) = self.thread.take() {
            // It panics only on a bug; the server goes on stopping either way.
            let _ = thread.join();
        }
    }
}

/// The timer thread: wake whatever is due, then wait for the next due time
/// or a new earlier one.
fn run(state: &State) {
    lower_timer_slack();
    let mut due_now = Vec::new();
    let mut q = state.lock();
    while !q.stop {
        let now = Instant::now();
        while q.due.peek().is_some_and(|Reverse(e)| e.at <= now) {
            if let Some(Reverse(e)) = q.due.pop() {
                due_now.push(e.wake);
            }
        }
        let next = q.due.peek().map(|Reverse(e)| e.at - now);
        if !due_now.is_empty() {
            // Wake the tasks outside the lock: a wake-up may be a system call.
            drop(q);
            for wake in due_now.drain(..) {
                // The request may have gone (its client hung up).
                let _ = wake.send(());
            }
            q = state.lock();
            continue;
        }
        q = match next {
            Some(wait) => sync::wait_timeout(&state.changed, q, wait).0,
            None => sync::wait(&state.changed, q),
        };
    }
}

/// A thread's timed waits may end up to its timer slack late, 50 µs by
/// default on Linux; 1 µs keeps answers within a tenth of a millisecond.
#[cfg(target_os = "linux")]
fn lower_timer_slack() {
    // Failing leaves the default slack: less precise, still correct.
    let _ = nix::sys::prctl::set_timerslack(1_000);
}

#[cfg(not(target_os = "linux"))]
fn lower_timer_slack() {}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[tokio::test]
    async fn sleeps_end_in_order_of_their_due_times_never_early() {
        let timer = PreciseTimer::start().expect("timer starts");
        let start = Instant::now();
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
        // Asked in another order than they are due.
        for ms in [30u64, 10, 20, 10] {
            let sleep = timer.sleep_until(start + Duration::from_millis(ms));
            let tx = tx.clone();
            tokio::spawn(async move {
                sleep.await;
                let _ = tx.send((ms, Instant::now()));
            });
        }
        drop(tx);
        let mut woken = Vec::new();
        while let Some(w) = tokio::time::timeout(Duration::from_secs(30), rx.recv()).await.expect("no hang") {
            woken.push(w);
        }
        let order: Vec<u64> = woken.iter().map(|(ms, _)| *ms).collect();
        assert_eq!(order, [10, 10, 20, 30]);
        for (ms, at) in woken {
            assert!(at >= start + Duration::from_millis(ms), "{ms} ms woke early");
        }
    }

    #[tokio::test]
    async fn a_dropped_sleep_wakes_nobody_and_stopping_ends_pending_ones() {
        let timer = PreciseTimer::start().expect("timer starts");
        // Its request gone (a client that hung up): waking it must not
        // stop the thread, so a later sleep still ends.
        drop(timer.sleep_until(Instant::now()));
        let later = timer.sleep_until(Instant::now() + Duration::from_millis(20));
        tokio::time::timeout(Duration::from_secs(30), later).await.expect("the timer still runs");
        let never = timer.sleep_until(Instant::now() + Duration::from_secs(3600));
        drop(timer);
        tokio::time::timeout(Duration::from_secs(30), never).await.expect("stopping ends the sleep");
    }

    #[test]
    fn waits_nobody_waits_for_are_pruned_as_the_queue_grows() {
        let timer = PreciseTimer::start().expect("the timer starts");
        let far = Instant::now() + std::time::Duration::from_secs(3600);
        // A connection's watchdog dropped before its deadline, many times.
        for _ in 0..10 * PRUNE_MIN {
            drop(timer.sleep_until(far));
        }
        let kept = timer.sleep_until(far);
        let len = timer.state.lock().due.len();
        assert!(len <= PRUNE_MIN, "{len} entries kept");
        drop(kept);
    }
}
