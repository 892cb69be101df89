//! The work queue of the local pools and its shutdown, written once for
//! the thread pool (jobs, taken by worker threads) and the process pool
//! (chunks, taken by manager threads): closing it (queued work still
//! runs), draining it (queued work is dropped, so its callers hear
//! `Cancelled`) and joining the threads that take from it.

use std::sync::Mutex;
use std::thread::{self, JoinHandle};

use crossbeam_channel::{Receiver, Sender};

use crate::sync::lock;

/// A pool's queue of work items `J` and the threads that take them. Every
/// lock here is taken with [`lock`]: nothing panics while holding one, so
/// poison carries no broken invariant.
pub(crate) struct WorkQueue<J> {
    /// The sending side; `None` once closed. Sends happen under the lock
    /// so that a batch is queued wholly before or wholly after a close.
    sender: Mutex<Option<Sender<J>>>,
    /// A receiving side, kept so that [`drain`](Self::drain) can take
    /// queued work off the queue, and so that sending never fails.
    backlog: Receiver<J>,
    /// The threads that take from the queue.
    threads: Mutex<Vec<JoinHandle<()>>>,
}

impl<J> WorkQueue<J> {
    /// An open queue, for `threads` threads to come.
    pub(crate) fn new(threads: usize) -> Self {
        let (tx, rx) = crossbeam_channel::unbounded();
        WorkQueue { sender: Mutex::new(Some(tx)), backlog: rx, threads: Mutex::new(Vec::with_capacity(threads)) }
    }

    /// The receiving side, for a thread that takes work: it sees the queue
    /// disconnected once the queue is closed and empty.
    pub(crate) fn receiver(&self) -> Receiver<J> {
        self.backlog.clone()
    }

    /// Counts a thread that takes from the queue, for [`join`](Self::join).
    pub(crate) fn add_thread(&self, handle: JoinHandle<()>) {
        lock(&self.threads).push(handle);
    }

    /// Queues `items` all together and says how many, or hands them back
    /// if the queue is closed.
    pub(crate) fn send_all(&self, items: Vec<J>) -> Result<usize, Vec<J>> {
        let sender = lock(&self.sender);
        match sender.as_ref() {
            Some(tx) => {
                let n = items.len();
                for item in items {
                    // Cannot fail: `self.backlog` keeps the queue connected.
                    let _ = tx.send(item);
                }
                Ok(n)
            }
            None => Err(items),
        }
    }

    /// Whether the queue takes no more work.
    pub(crate) fn is_closed(&self) -> bool {
        lock(&self.sender).is_none()
    }

    /// Work queued and not yet taken.
    pub(crate) fn len(&self) -> usize {
        self.backlog.len()
    }

    /// Takes no more work; what is queued is still taken. Dropping the
    /// last sender lets the threads end once the queue is empty.
    /// Idempotent.
    pub(crate) fn close(&self) {
        lock(&self.sender).take();
    }

    /// Closes the queue and drops the work no thread has taken yet. The
    /// threads may take some of it first and run it; either way each item
    /// is run or dropped exactly once.
    pub(crate) fn drain(&self) {
        self.close();
        for item in self.backlog.try_iter() {
            drop(item);
        }
    }

    /// Closes the queue and waits for every thread that takes from it to
    /// end, except the calling thread if it is one of them (a job that
    /// joins its own pool).
    pub(crate) fn join(&self) {
        self.close();
        let handles = std::mem::take(&mut *lock(&self.threads));
        let me = thread::current().id();
        for handle in handles {
            if handle.thread().id() != me {
                // The threads catch every panic of the work they run;
                // there is nothing to report if one did panic.
                let _ = handle.join();
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};

    #[test]
    fn closed_work_is_handed_back_and_queued_work_is_drained_once() {
        let queue = WorkQueue::new(0);
        assert_eq!(queue.send_all(vec![1, 2, 3]), Ok(3));
        assert_eq!(queue.len(), 3);
        let taken = queue.receiver().recv().expect("an item");
        assert_eq!(taken, 1);
        queue.drain();
        assert!(queue.is_closed());
        assert_eq!(queue.len(), 0);
        assert_eq!(queue.send_all(vec![4]), Err(vec![4]));
    }

    #[test]
    fn join_lets_the_threads_finish_the_queued_work() {
        let queue = Arc::new(WorkQueue::new(2));
        let done = Arc::new(AtomicUsize::new(0));
        queue.send_all((0..10).collect()).expect("open");
        for _ in 0..2 {
            let (rx, done) = (queue.receiver(), Arc::clone(&done));
            queue.add_thread(thread::spawn(move || {
                for _ in rx.iter() {
                    done.fetch_add(1, Ordering::SeqCst);
                }
            }));
        }
        queue.join();
        assert_eq!(done.load(Ordering::SeqCst), 10);
        assert!(queue.is_closed());
    }
}
