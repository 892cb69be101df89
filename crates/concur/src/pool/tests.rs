//! The pools' shared iterators and handles.

use std::sync::Arc;
use std::time::Duration;

use super::handle::State;
use super::*;
use crate::sync::lock;

#[test]
fn a_tally_gives_each_index_once_then_names_the_rest_cancelled() {
    let mut t = Tally::new(4);
    assert!(t.take(2) && !t.take(2), "a repeat is dropped");
    assert!(!t.take(9), "an index out of range is dropped");
    assert!(t.open());
    assert_eq!((t.next_cancelled(), t.next_cancelled()), (Some(0), Some(1)));
    assert!(!t.open());
    assert_eq!(t.next_cancelled(), Some(3), "2 was answered");
    assert_eq!((t.next_cancelled(), t.left(), t.len()), (None, 0, 4));
}

#[test]
fn in_order_reorders_and_keeps_everything() {
    let arrivals = vec![(2, Ok(20)), (0, Ok(0)), (3, Err(TaskError::Cancelled)), (1, Ok(10))];
    let got: Vec<_> = InOrder::new(arrivals.into_iter()).collect();
    assert_eq!(got, vec![Ok(0), Ok(10), Ok(20), Err(TaskError::Cancelled)]);
}

#[test]
fn in_order_survives_a_missing_index() {
    let arrivals = vec![(2, Ok(20)), (0, Ok(0))];
    let got: Vec<Result<i32, TaskError>> = InOrder::new(arrivals.into_iter()).collect();
    assert_eq!(got, vec![Ok(0), Ok(20)]);
}

#[test]
fn panic_messages() {
    let p: Box<dyn Any + Send> = Box::new("static");
    assert_eq!(panic_message(&*p), "static");
    let p: Box<dyn Any + Send> = Box::new(format!("owned {}", 1));
    assert_eq!(panic_message(&*p), "owned 1");
    let p: Box<dyn Any + Send> = Box::new(42_u8);
    assert_eq!(panic_message(&*p), "non-string panic payload");
}

#[test]
fn as_completed_gives_each_handle_once_in_finishing_order() {
    let (tx_a, a) = AsyncResult::<u8>::channel();
    let (tx_b, b) = AsyncResult::<u8>::channel();
    let (tx_c, c) = AsyncResult::<u8>::channel();
    let mut done = as_completed([a, b, c]);
    assert_eq!(done.size_hint(), (3, Some(3)));
    tx_c.complete(Ok(3));
    assert_eq!(done.next(), Some((2, Ok(3))));
    drop(tx_a); // never run
    assert_eq!(done.next(), Some((0, Err(TaskError::Cancelled))));
    tx_b.complete(Ok(2));
    assert_eq!(done.next(), Some((1, Ok(2))));
    assert_eq!(done.next(), None);
}

#[test]
fn as_completed_takes_handles_finished_before_it_first() {
    let (tx_a, a) = AsyncResult::<u8>::channel();
    let (tx_b, b) = AsyncResult::<u8>::channel();
    tx_b.complete(Ok(2));
    let mut done = as_completed([a, b, AsyncResult::ready(Ok(3))]);
    assert_eq!(done.next(), Some((1, Ok(2))));
    assert_eq!(done.next(), Some((2, Ok(3))));
    // Completed after `as_completed` registered it, from another
    // thread: its promise names it on the iterator's channel.
    let finisher = std::thread::spawn(move || tx_a.complete(Ok(1)));
    assert_eq!(done.next(), Some((0, Ok(1))));
    assert_eq!(done.next(), None);
    finisher.join().expect("no panic");
}

#[test]
fn a_parked_waiter_is_woken_by_the_result() {
    let (tx, handle) = AsyncResult::<u8>::channel();
    let slot = Arc::clone(&handle.slot);
    let (got_tx, got) = crossbeam_channel::bounded(1);
    let waiter = std::thread::spawn(move || got_tx.send(handle.wait()).expect("the test waits"));
    // Complete only once the waiter has parked, so that the wake-up is
    // what the test drives.
    let parked = || matches!(*lock(&slot.state), State::Pending { parked: true, .. });
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while !parked() {
        assert!(std::time::Instant::now() < deadline, "the waiter never parked");
        std::thread::sleep(Duration::from_millis(1));
    }
    tx.complete(Ok(5));
    assert_eq!(got.recv_timeout(Duration::from_secs(10)), Ok(Ok(5)));
    waiter.join().expect("no panic");
}

#[test]
fn the_first_result_stands() {
    let (tx, handle) = AsyncResult::<u8>::channel();
    tx.complete(Ok(1));
    tx.complete(Ok(2));
    drop(tx);
    assert_eq!(handle.wait(), Ok(1));
}

#[test]
fn async_result_resolves_and_times_out() {
    let (tx, handle) = AsyncResult::<u8>::channel();
    let handle = handle.wait_timeout(Duration::from_millis(1)).expect_err("nothing was sent yet");
    tx.complete(Ok(7));
    assert_eq!(handle.wait_timeout(Duration::from_secs(10)).ok(), Some(Ok(7)));

    let (tx, handle) = AsyncResult::<u8>::channel();
    drop(tx);
    assert_eq!(handle.wait(), Err(TaskError::Cancelled));

    assert_eq!(AsyncResult::ready(Ok(1)).wait(), Ok(1));
    assert_eq!(AsyncResult::ready(Ok(2)).wait_timeout(Duration::MAX).ok(), Some(Ok(2)));
}
