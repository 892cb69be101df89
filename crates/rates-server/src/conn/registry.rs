//! The connections open now, and how the accept loop sheds one at the cap.

#![allow(clippy::wildcard_imports)]

use super::*;

/// The connections open now, so that one can be shed at the cap.
#[derive(Debug, Default)]
pub(super) struct Registry {
    next_id: AtomicU64,
    conns: Mutex<HashMap<u64, Arc<Conn>>>,
    /// Where connections tell the accept loop they became sheddable.
    pub(super) room: Arc<Room>,
}

/// Wakes an accept loop waiting at the cap when a connection becomes
/// sheddable. Connections tell only while the loop wants to know: a
/// notification per request on one `Notify` that every connection shares
/// would bounce its cache line between the runtime's threads. The loop
/// sets `wanted` before it looks for a connection to shed; a connection
/// changes its phase under its lock and then reads `wanted`, so either the
/// loop's look finds it sheddable or the connection sees `wanted` and
/// tells.
#[derive(Debug, Default)]
pub(super) struct Room {
    pub(super) wanted: AtomicBool,
    pub(super) notify: Notify,
}

impl Room {
    pub(super) fn tell(&self) {
        if self.wanted.load(SeqCst) {
            self.notify.notify_one();
        }
    }
}

impl Registry {
    pub(super) fn lock(&self) -> MutexGuard<'_, HashMap<u64, Arc<Conn>>> {
        sync::lock(&self.conns)
    }

    pub(super) fn add(&self, now: Instant, limits: ConnLimits, metrics: &crate::Metrics) -> Arc<Conn> {
        let id = self.next_id.fetch_add(1, Relaxed);
        let conn = Arc::new(Conn::new(id, now, limits, Arc::clone(&self.room)));
        self.lock().insert(id, Arc::clone(&conn));
        metrics.opened();
        conn
    }

    /// Tells every connection the server stops. A connection whose task
    /// has not yet waited for it finds the stored permit when it does.
    pub(super) fn stop_all(&self) {
        for c in self.lock().values() {
            c.stop.notify_one();
        }
    }

    /// Asks the connection that has waited longest for a request (silent
    /// ones before those that have sent part of a head) to close, sparing
    /// connections accepted less than `spare` ago that have sent nothing.
    pub(super) fn shed_one(&self, spare: Duration) -> Shed {
        let now = Instant::now();
        let conns = self.lock();
        let mut oldest = None;
        let mut ripe: Option<Instant> = None;
        for c in conns.values() {
            // Spared whether or not a read has found it silent yet: it may
            // not be shed before then either way.
            if let Some(at) = c.silent_since().and_then(|since| since.checked_add(spare)).filter(|&at| at > now) {
                ripe = Some(ripe.map_or(at, |r| r.min(at)));
                continue;
            }
            if let Some(rank) = c.shed_rank()
                && oldest.as_ref().is_none_or(|(best, _)| rank < *best)
            {
                oldest = Some((rank, c));
            }
        }
        match (oldest, ripe) {
            (Some((_, c)), _) => {
                c.shed();
                Shed::Done
            }
            (None, Some(at)) => Shed::NotBefore(at),
            (None, None) => Shed::Nothing,
        }
    }
}

/// What [`Registry::shed_one`] did.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(super) enum Shed {
    /// A connection was asked to close.
    Done,
    /// None yet: the first new connection it spared may be shed from then.
    NotBefore(Instant),
    /// None can be shed.
    Nothing,
}

impl Shed {
    pub(super) fn is_done(self) -> bool {
        self == Shed::Done
    }
}
