//! A map whose function and items may borrow from the caller: the work
//! queue of the chapter's thread pool on threads scoped to one call (as
//! `std::thread::scope` and `rayon::scope` are), so callers need not clone
//! `Arc`s to satisfy a pool's `'static` bound.
//!
//! A [`ThreadPool`](crate::ThreadPool)'s threads outlive any one call, so
//! what they run must be `'static`; these threads end before
//! [`scoped_map`] returns, which is what lets them borrow.

use crate::pool::TaskError;
use crate::thread_pool::run_caught;

/// Applies `f` to every item on `workers` threads that end before this
/// returns, and gives the results in input order. `f` and the items may
/// borrow from the caller. A panic is that item's
/// [`TaskError::Panicked`]; the other items are unaffected.
///
/// ```
/// use concur::scoped_map;
///
/// let words = vec!["a".to_string(), "bb".into(), "ccc".into()];
/// let suffix = String::from("!"); // borrowed, not cloned into an Arc
/// let shouted = scoped_map(2, |w: &String| format!("{w}{suffix}"), &words);
/// assert_eq!(shouted, [Ok("a!".to_string()), Ok("bb!".into()), Ok("ccc!".into())]);
/// ```
///
/// With `workers` of 0 it uses one thread. If no thread can be started,
/// the items run on the calling thread.
pub fn scoped_map<T, R, F>(workers: usize, f: F, items: impl IntoIterator<Item = T>) -> Vec<Result<R, TaskError>>
where
    T: Send,
    R: Send,
    F: Fn(T) -> R + Sync,
{
    let items: Vec<T> = items.into_iter().collect();
    let n = items.len();
    let (work_tx, work_rx) = crossbeam_channel::unbounded::<(usize, T)>();
    for item in items.into_iter().enumerate() {
        // Cannot fail: the receiver is alive.
        let _ = work_tx.send(item);
    }
    drop(work_tx);

    let mut slots: Vec<Option<Result<R, TaskError>>> = (0..n).map(|_| None).collect();
    let (result_tx, result_rx) = crossbeam_channel::unbounded::<(usize, Result<R, TaskError>)>();
    std::thread::scope(|s| {
        let mut started = 0;
        for k in 0..workers.clamp(1, n.max(1)) {
            let (work_rx, result_tx, f) = (work_rx.clone(), result_tx.clone(), &f);
            let spawned = std::thread::Builder::new().name(format!("scoped-{k}")).spawn_scoped(s, move || {
                for (i, item) in work_rx {
                    if result_tx.send((i, run_caught(|| f(item)))).is_err() {
                        break;
                    }
                }
            });
            started += usize::from(spawned.is_ok());
        }
        if started == 0 {
            // No thread at all: the caller does the work rather than lose it.
            for (i, item) in work_rx.try_iter() {
                let _ = result_tx.send((i, run_caught(|| f(item))));
            }
        }
        drop(result_tx);
        for (i, result) in result_rx {
            slots[i] = Some(result);
        }
    });
    // Every item was sent to the queue and each worker catches panics, so
    // every slot is filled; an empty one would be a bug, reported as such.
    slots.into_iter().map(|s| s.unwrap_or_else(|| Err(TaskError::Failed("item lost".into())))).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    #[test]
    fn borrows_keep_order_and_run_in_parallel_threads() {
        let counter = AtomicUsize::new(0); // borrowed by every worker
        let data: Vec<u64> = (0..100).collect();
        let out = scoped_map(
            4,
            |x: &u64| {
                counter.fetch_add(1, Ordering::Relaxed);
                x * 2
            },
            &data,
        );
        assert_eq!(out, (0..100).map(|x| Ok(x * 2)).collect::<Vec<_>>());
        assert_eq!(counter.load(Ordering::Relaxed), 100);
    }

    #[test]
    fn a_panic_is_that_items_error_only() {
        let out = scoped_map(2, |x: i32| if x == 2 { panic!("two") } else { x }, [1, 2, 3]);
        assert_eq!(out, [Ok(1), Err(TaskError::Panicked("two".into())), Ok(3)]);
    }

    #[test]
    fn no_items_and_zero_workers() {
        assert!(scoped_map(0, |x: u8| x, Vec::new()).is_empty());
        assert_eq!(scoped_map(0, |x: u8| x + 1, [1]), [Ok(2)]);
    }
}
