//! Locks that ignore poisoning, for the workspace's shared state.
//!
//! A standard lock is poisoned when a thread panics while holding it, and
//! every later `lock()` then returns an error. Here a panic is one task's
//! failure, reported as that task's error while the pool carries on, so a
//! poisoned lock must not spread that one failure to every thread that
//! touches the lock afterwards. That is sound only where no critical
//! section can leave the data half changed: each one here is a single
//! assignment, an insertion or removal, or a state the next holder checks
//! again. Use these functions only where that holds.
//!
//! ```
//! use std::sync::{Arc, Mutex};
//!
//! let counter = Arc::new(Mutex::new(0));
//! let c = Arc::clone(&counter);
//! let _ = std::thread::spawn(move || {
//!     let _held = c.lock();
//!     panic!("a task fails while holding the lock");
//! })
//! .join();
//! assert!(counter.is_poisoned());
//! *concur::sync::lock(&counter) += 1;
//! assert_eq!(*concur::sync::lock(&counter), 1);
//! ```

use std::sync::{
    Condvar, Mutex, MutexGuard, PoisonError, RwLock, RwLockReadGuard, RwLockWriteGuard, WaitTimeoutResult,
};
use std::time::Duration;

/// Locks `mutex`, whether or not a thread panicked while holding it.
pub fn lock<T: ?Sized>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Waits on `condvar` with `guard`, as [`Condvar::wait`], and takes the
/// lock back whether or not it was poisoned meanwhile.
pub fn wait<'a, T>(condvar: &Condvar, guard: MutexGuard<'a, T>) -> MutexGuard<'a, T> {
    condvar.wait(guard).unwrap_or_else(PoisonError::into_inner)
}

/// Waits on `condvar` with `guard` while `condition` holds, as
/// [`Condvar::wait_while`], and takes the lock back whether or not it was
/// poisoned meanwhile.
pub fn wait_while<'a, T>(
    condvar: &Condvar,
    guard: MutexGuard<'a, T>,
    condition: impl FnMut(&mut T) -> bool,
) -> MutexGuard<'a, T> {
    condvar.wait_while(guard, condition).unwrap_or_else(PoisonError::into_inner)
}

/// Waits on `condvar` with `guard` for at most `timeout`, as
/// [`Condvar::wait_timeout`], and takes the lock back whether or not it
/// was poisoned meanwhile.
pub fn wait_timeout<'a, T>(
    condvar: &Condvar,
    guard: MutexGuard<'a, T>,
    timeout: Duration,
) -> (MutexGuard<'a, T>, WaitTimeoutResult) {
    condvar.wait_timeout(guard, timeout).unwrap_or_else(PoisonError::into_inner)
}

/// Waits on `condvar` with `guard` while `condition` holds, for at most
/// `timeout`, as [`Condvar::wait_timeout_while`], and takes the lock back
/// whether or not it was poisoned meanwhile.
pub fn wait_timeout_while<'a, T>(
    condvar: &Condvar,
    guard: MutexGuard<'a, T>,
    timeout: Duration,
    condition: impl FnMut(&mut T) -> bool,
) -> (MutexGuard<'a, T>, WaitTimeoutResult) {
    condvar.wait_timeout_while(guard, timeout, condition).unwrap_or_else(PoisonError::into_inner)
}

/// Locks `lock` to read, whether or not a writer panicked while holding it.
pub fn read<T: ?Sized>(lock: &RwLock<T>) -> RwLockReadGuard<'_, T> {
    lock.read().unwrap_or_else(PoisonError::into_inner)
}

/// Locks `lock` to write, whether or not a writer panicked while holding it.
pub fn write<T: ?Sized>(lock: &RwLock<T>) -> RwLockWriteGuard<'_, T> {
    lock.write().unwrap_or_else(PoisonError::into_inner)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    fn poisoned<T: Send + Sync + 'static>(value: T) -> Arc<Mutex<T>> {
        let mutex = Arc::new(Mutex::new(value));
        let m = Arc::clone(&mutex);
        let _ = std::thread::spawn(move || {
            let _held = m.lock();
            panic!("poisons the lock");
        })
        .join();
        assert!(mutex.is_poisoned());
        mutex
    }

    #[test]
    fn a_poisoned_mutex_is_still_locked_and_waited_on() {
        let mutex = poisoned(1);
        assert_eq!(*lock(&mutex), 1);
        let condvar = Condvar::new();
        let (guard, timeout) = wait_timeout(&condvar, lock(&mutex), Duration::from_millis(1));
        assert!(timeout.timed_out());
        assert_eq!(*guard, 1);
    }

    #[test]
    fn a_poisoned_rwlock_is_still_read_and_written() {
        let rw = Arc::new(RwLock::new(1));
        let w = Arc::clone(&rw);
        let _ = std::thread::spawn(move || {
            let _held = w.write();
            panic!("poisons the lock");
        })
        .join();
        assert!(rw.is_poisoned());
        *write(&rw) += 1;
        assert_eq!(*read(&rw), 2);
    }
}
