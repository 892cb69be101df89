//! One thread that writes a run's answers to the store as they arrive.
//!
//! Answers complete on many threads (or tasks) at once; each hands its
//! answer to a [`Sink`], which only queues it. The writer thread gathers
//! what arrives within a tenth of a second and stores it in one
//! transaction, so a fast run costs a transaction per batch, not per
//! answer, and a run that is stopped writes everything that arrived before.

use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use chrono::NaiveDate;
use crossbeam_channel::{Receiver, Sender};

use super::{Entry, Store, StoreError, unix_now};
use crate::{Currency, Rates};

/// Entries stored in one transaction at most.
const MAX_BATCH: usize = 1000;
/// How long the writer gathers entries after the first of a batch: each
/// commit appends every page it touched to the log, so a fast run is far
/// cheaper in a few large transactions than in one per answer. A stopped
/// run loses none of it: stopping writes what was gathered at once.
const WINDOW: Duration = Duration::from_millis(100);

enum Msg {
    Entry(Entry, i64),
    Stop,
}

/// Where the threads of a run hand their answers: cheap to clone, never
/// blocks, and does nothing once the writer has finished.
#[derive(Clone)]
pub struct Sink {
    tx: Sender<Msg>,
}

impl std::fmt::Debug for Sink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sink").finish_non_exhaustive()
    }
}

impl Sink {
    /// Queues an answer of the API, stamped now.
    pub fn answer(&self, rates: &Rates) {
        let _ = self.tx.send(Msg::Entry(Entry::Answer(rates.clone()), unix_now()));
    }

    /// Queues that `day` was answered with the earlier `answered`.
    pub fn closed(&self, base: Currency, day: NaiveDate, answered: NaiveDate) {
        let _ = self.tx.send(Msg::Entry(Entry::Closed { base, day, answered }, unix_now()));
    }
}

/// What a writer stored.
#[derive(Debug, Default)]
pub struct Written {
    /// Entries stored.
    pub stored: usize,
    /// Entries not stored, after the first error.
    pub lost: usize,
    /// The first error; the writer stops writing after it.
    pub error: Option<StoreError>,
}

/// The thread that stores one API's answers; [`Writer::finish`] waits for
/// everything queued to be stored.
#[derive(Debug)]
pub struct Writer {
    sink: Sink,
    thread: Option<JoinHandle<Written>>,
}

impl Store {
    /// Starts a writer of the answers of `api`, asked for `symbols`, on a
    /// thread that owns this store.
    ///
    /// # Errors
    ///
    /// The thread could not be started.
    pub fn writer(self, api: &str, symbols: &[Currency]) -> std::io::Result<Writer> {
        let (tx, rx) = crossbeam_channel::unbounded();
        let (api, symbols) = (api.to_string(), symbols.to_vec());
        let thread =
            std::thread::Builder::new().name("rates-store".into()).spawn(move || run(self, &api, &symbols, &rx))?;
        Ok(Writer { sink: Sink { tx }, thread: Some(thread) })
    }
}

impl Writer {
    /// A handle for the threads of the run.
    pub fn sink(&self) -> Sink {
        self.sink.clone()
    }

    /// Stores everything queued so far, stops the thread and says what
    /// was stored. Answers queued after this are dropped.
    pub fn finish(mut self) -> Written {
        self.stop()
    }

    fn stop(&mut self) -> Written {
        let _ = self.sink.tx.send(Msg::Stop);
        match self.thread.take().map(JoinHandle::join) {
            Some(Ok(written)) => written,
            // Not started, or the thread panicked: nothing is known stored.
            _ => Written::default(),
        }
    }
}

impl Drop for Writer {
    fn drop(&mut self) {
        if self.thread.is_some() {
            self.stop();
        }
    }
}

fn run(mut store: Store, api: &str, symbols: &[Currency], rx: &Receiver<Msg>) -> Written {
    let mut written = Written::default();
    let mut batch = Vec::new();
    // The earliest fetch of the batch stamps it all: an answer is never
    // taken as fresher than it is.
    let mut oldest = i64::MAX;
    loop {
        // Blocks until something arrives, then gathers for a moment.
        let first = rx.recv();
        let deadline = Instant::now() + WINDOW;
        // All senders gone: nothing more can come.
        let mut stop = first.is_err();
        let mut next = first.ok();
        while let Some(msg) = next.take() {
            match msg {
                Msg::Entry(e, at) => {
                    batch.push(e);
                    oldest = oldest.min(at);
                }
                Msg::Stop => stop = true,
            }
            if !stop && batch.len() < MAX_BATCH {
                next = rx.recv_deadline(deadline).ok();
            }
        }
        if !batch.is_empty() {
            if written.error.is_some() {
                written.lost += batch.len();
            } else {
                match store.put(api, symbols, &batch, oldest) {
                    Ok(()) => written.stored += batch.len(),
                    Err(e) => {
                        written.lost += batch.len();
                        written.error = Some(e);
                    }
                }
            }
            batch.clear();
            oldest = i64::MAX;
        }
        if stop {
            return written;
        }
    }
}
