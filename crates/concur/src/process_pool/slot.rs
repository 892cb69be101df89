//! A manager's slot: the worker process it owns, shared with the pool so
//! that the pool can list and kill workers and wake an idle manager.

use std::io::{self, PipeReader, PipeWriter, Write};
use std::process::Child;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};

use super::{lock, sys};

/// A manager's place in the pool: its worker, and how the pool wakes it
/// while it waits for work.
pub(super) struct Slot {
    /// The live worker, if any. The manager reaps it; others may only
    /// signal it, which is safe while it is here (not reaped, so neither
    /// its pid nor its process group's id can have been reused).
    pub(super) child: Mutex<Option<Child>>,
    /// Set while the manager waits for work; whoever clears it writes to
    /// `waker` once.
    pub(super) idle: AtomicBool,
    waker: PipeWriter,
}

impl Slot {
    /// A slot, and the end of its wake-up pipe its manager waits on.
    pub(super) fn new() -> io::Result<(Slot, PipeReader)> {
        let (wake, waker) = io::pipe()?;
        Ok((Slot { child: Mutex::new(None), idle: AtomicBool::new(false), waker }, wake))
    }

    pub(super) fn pid(&self) -> Option<u32> {
        lock(&self.child).as_ref().map(Child::id)
    }

    /// Wakes the manager if it is waiting for work; says whether it was.
    pub(super) fn wake(&self) -> bool {
        if !self.idle.swap(false, Ordering::SeqCst) {
            return false;
        }
        // One byte per wake-up, so the pipe cannot fill; a failure would
        // mean the manager is gone, and then there is no one to wake.
        let _ = (&self.waker).write(&[1]);
        true
    }

    /// Kills the worker and everything in its process group.
    pub(super) fn kill(&self) {
        if let Some(child) = lock(&self.child).as_ref() {
            sys::kill_group(child.id());
        }
    }
}
