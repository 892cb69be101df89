//! The accept loop and the life of one connection: how the server protects
//! itself from clients that open connections and say nothing.
//!
//! - A new connection must deliver a whole request head within the header
//!   timeout of being accepted; between requests, a keep-alive connection may
//!   sit idle for the idle timeout, and once the next request's first byte
//!   arrives its head must be complete within the header timeout. Time spent
//!   answering (the fault injection's latency included) is never limited.
//! - At most `max_connections` connections are open. At the cap, a new
//!   connection makes room by closing the one that has waited longest for a
//!   request (a silent socket or an idle keep-alive connection), so silent
//!   sockets cannot starve real clients. Only a connection found waiting on
//!   its client (its last read found nothing more) is shed, silent ones
//!   before those with half a head, never one whose request is still unread
//!   in its socket or being answered. A connection that has not yet said
//!   anything is given [`FIRST_WORD`] from its accept before it may be shed
//!   to make room: a client opening thousands of connections at once writes
//!   each request a moment after its connection opens, and would otherwise
//!   lose them to each other. If no connection can be shed (every one is
//!   busy answering, or new), the server stops accepting until one
//!   finishes or becomes sheddable; the kernel's listen backlog holds the
//!   newcomers meanwhile.
//! - An accept error that is not about one connection (out of descriptors,
//!   EMFILE/ENFILE, or of memory) sheds a waiting connection the same way,
//!   to free a descriptor, and backs off before the next accept, so the
//!   loop neither spins nor stops listening.
//! - The automatic answers hyper gives to a request head it cannot parse
//!   (400 malformed, 431 too large, 414) are rewritten on their way out to
//!   carry the API's JSON `{"detail": ...}` body.
//!
//! Everything shed, timed out or refused is counted in [`Metrics`].

use std::collections::HashMap;
use std::convert::Infallible;
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed, Ordering::SeqCst};
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll, ready};
use std::time::Duration;

use axum::Router;
use axum::body::{Body, Bytes, HttpBody};
use axum::http::{Request, Response, StatusCode};
use concur::sync;
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::sync::{Notify, OwnedSemaphorePermit, Semaphore};
use tokio::time::Instant;

use crate::metrics::Closed;
use crate::{OptionError, Shared};

/// Limits on the connections a server keeps open.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConnLimits {
    /// A request head must arrive within this long: from accept for a new
    /// connection, from its first byte for the next request of a keep-alive
    /// connection.
    pub header_timeout: Duration,
    /// A keep-alive connection waiting for its next request is closed after
    /// this long without a byte.
    pub idle_timeout: Duration,
    /// The most connections open at once; see the module docs for what
    /// happens at the cap.
    pub max_connections: usize,
}

impl Default for ConnLimits {
    /// 10 s for a request head, 30 s idle between requests (longer than the
    /// head's limit so that clients pacing their requests keep their
    /// connection), 1024 connections.
    fn default() -> Self {
        ConnLimits {
            header_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(30),
            max_connections: 1024,
        }
    }
}

/// The most connections a server may be told to keep: the semaphore that
/// counts them takes a `u32` when it waits for all of them to close.
const MAX_CONNECTIONS: usize = 1 << 20;

impl ConnLimits {
    pub(crate) fn validate(&self) -> Result<(), OptionError> {
        let bad_time =
            |name, d: Duration| OptionError { name, value: format!("{d:?}"), expected: "a positive duration" };
        if self.header_timeout.is_zero() {
            return Err(bad_time("header timeout", self.header_timeout));
        }
        if self.idle_timeout.is_zero() {
            return Err(bad_time("idle timeout", self.idle_timeout));
        }
        if !(1..=MAX_CONNECTIONS).contains(&self.max_connections) {
            return Err(OptionError {
                name: "max connections",
                value: self.max_connections.to_string(),
                expected: "a number from 1 to 1048576",
            });
        }
        Ok(())
    }
}

/// The largest request head a connection buffers (hyper's read buffer);
/// past it the answer is 431. Bounds the memory a connection can hold.
const MAX_HEAD: usize = 64 * 1024;

/// How long a new connection may stay silent before it may be shed to make
/// room at the cap. A client that opens 2,000 connections at once writes
/// each request within a few milliseconds of its connection; silent
/// sockets held against the server delay a real client by this much per
/// cap's worth of them queued ahead of it. Out of descriptors, nothing is
/// spared.
pub(crate) const FIRST_WORD: Duration = Duration::from_millis(50);

/// The first and the longest back-off after an accept error.
const BACKOFF_MIN: Duration = Duration::from_millis(10);
const BACKOFF_MAX: Duration = Duration::from_secs(1);

/// Where connections come from: a TCP listener, or a fake in tests.
pub(crate) trait Accept: Send + 'static {
    type Io: AsyncRead + AsyncWrite + Unpin + Send + 'static;
    fn accept(&mut self) -> impl Future<Output = io::Result<(Self::Io, SocketAddr)>> + Send;
}

impl Accept for tokio::net::TcpListener {
    type Io = tokio::net::TcpStream;
    async fn accept(&mut self) -> io::Result<(Self::Io, SocketAddr)> {
        tokio::net::TcpListener::accept(self).await
    }
}

/// Errors about one connection only (its client gave up before it was
/// accepted): nothing to back off from.
fn is_per_connection(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::ConnectionAborted
            | io::ErrorKind::ConnectionReset
            | io::ErrorKind::ConnectionRefused
            | io::ErrorKind::Interrupted
    )
}

/// Accepts connections and serves `router` on each until `shutdown`
/// resolves, then lets open connections finish their requests for at most
/// `grace`.
pub(crate) async fn serve<A: Accept>(
    mut listener: A,
    shared: Arc<Shared>,
    shutdown: impl Future<Output = ()>,
    grace: Duration,
) {
    let routes = crate::app::routes(Arc::clone(&shared));
    let limits = shared.options.limits;
    let metrics = shared.metrics();
    let slots = Arc::new(Semaphore::new(limits.max_connections));
    let open = Arc::new(Registry::default());
    let mut backoff = BACKOFF_MIN;
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        let accepted = tokio::select! {
            biased;
            () = &mut shutdown => break,
            r = listener.accept() => r,
        };
        let (io, remote) = match accepted {
            Ok(a) => {
                backoff = BACKOFF_MIN;
                a
            }
            Err(e) => {
                metrics.accept_error();
                if is_per_connection(&e) {
                    continue;
                }
                // Most likely out of descriptors: free one by shedding the
                // longest-waiting connection, if there is one, and retry
                // soon; otherwise wait longer each time.
                let pause = if open.shed_one(Duration::ZERO).is_done() {
                    BACKOFF_MIN
                } else {
                    backoff = (backoff * 2).min(BACKOFF_MAX);
                    backoff
                };
                tokio::select! {
                    biased;
                    () = &mut shutdown => break,
                    () = tokio::time::sleep(pause) => continue,
                }
            }
        };
        // At the cap: shed a waiting connection and take its slot, or wait
        // for a slot or for a connection to become sheddable.
        let mut counted = false;
        let permit = loop {
            if let Ok(p) = Arc::clone(&slots).try_acquire_owned() {
                break Some(p);
            }
            // Asked before looking, so that a connection that becomes
            // sheddable after the look tells (see `Room`).
            open.room.wanted.store(true, SeqCst);
            let shed = open.shed_one(FIRST_WORD);
            if !shed.is_done() && !counted {
                metrics.cap_full();
                counted = true;
            }
            let ripe = match shed {
                Shed::NotBefore(at) => Some(at),
                Shed::Done | Shed::Nothing => None,
            };
            tokio::select! {
                biased;
                () = &mut shutdown => break None,
                p = Arc::clone(&slots).acquire_owned() => break p.ok(),
                () = open.room.notify.notified(), if !shed.is_done() => {}
                () = tokio::time::sleep_until(ripe.unwrap_or_else(Instant::now)), if ripe.is_some() => {}
            }
        };
        open.room.wanted.store(false, SeqCst);
        let Some(permit) = permit else { break };
        let conn = open.add(Instant::now(), limits, metrics);
        let task = Connection {
            conn,
            open: Arc::clone(&open),
            shared: Arc::clone(&shared),
            routes: routes.clone(),
            remote,
            _permit: permit,
        };
        tokio::spawn(task.run(io));
    }
    // Stop accepting, ask every connection to finish its request and close,
    // and wait until all have (each holds a slot) or the grace period ends.
    drop(listener);
    open.stop_all();
    let all = u32::try_from(limits.max_connections).unwrap_or(u32::MAX);
    let _ = tokio::time::timeout(grace, slots.acquire_many(all)).await;
}

/// What one connection is doing, shared by its I/O, its service and its
/// watchdog.
#[derive(Debug)]
struct Conn {
    id: u64,
    limits: ConnLimits,
    state: Mutex<State>,
    /// Wakes the watchdog when the connection must close sooner than the
    /// deadline it sleeps until.
    changed: Notify,
    /// Told once when the server stops. The connection's own, not one
    /// every connection shares (a `watch` channel): a task polling a shared
    /// `Notify` takes its waiter list's lock at every wake-up, a lock the
    /// runtime's threads would fight over for every request.
    stop: Notify,
    /// The registry's: told when this connection becomes sheddable.
    room: Arc<Room>,
}

#[derive(Debug)]
struct State {
    phase: Phase,
    /// When the watchdog wakes next (`None`: when told). Changes that leave
    /// the deadline later than this do not wake it; it finds them when it
    /// wakes, so a request costs no wake-up.
    armed: Option<Instant>,
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Phase {
    /// Waiting for a request since `since`. `head` is when its head started
    /// to count against the header timeout: at accept for a new connection,
    /// at the first byte for the next request of a keep-alive one.
    /// `found_silent` once a read found nothing more to read (or from the
    /// start of a keep-alive connection's idle time): only then may it be
    /// shed, never while a request it sent may be unread or unparsed.
    Waiting { since: Instant, head: Option<Instant>, got_bytes: bool, found_silent: bool },
    /// A request head was read; its answer is not yet written out. `done`
    /// once the answer's body has ended, with when the answer was made (the
    /// next flush ends the phase, and the idle time counts from then).
    Answering { done: Option<Instant> },
    /// Asked to close to make room.
    Shed,
}

impl Phase {
    /// When a connection that has not sent a byte since its accept was
    /// accepted; `None` once it has sent one, or between requests.
    fn silent_since(&self) -> Option<Instant> {
        match *self {
            Phase::Waiting { since, head: Some(head), got_bytes: false, .. } if head == since => Some(since),
            _ => None,
        }
    }

    /// When a connection in this phase must close, and why; `None` while
    /// answering (or if the limit is too far to count).
    fn deadline(&self, limits: &ConnLimits) -> Option<(Instant, Closed)> {
        match *self {
            Phase::Waiting { head: Some(t), .. } => {
                Some((t.checked_add(limits.header_timeout)?, Closed::HeaderTimeout))
            }
            Phase::Waiting { since, head: None, .. } => {
                Some((since.checked_add(limits.idle_timeout)?, Closed::IdleTimeout))
            }
            Phase::Answering { .. } => None,
            Phase::Shed => Some((Instant::now(), Closed::Shed)),
        }
    }
}

impl Conn {
    fn new(id: u64, now: Instant, limits: ConnLimits, room: Arc<Room>) -> Self {
        let phase = Phase::Waiting { since: now, head: Some(now), got_bytes: false, found_silent: false };
        Conn {
            id,
            limits,
            state: Mutex::new(State { phase, armed: None }),
            changed: Notify::new(),
            stop: Notify::new(),
            room,
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        sync::lock(&self.state)
    }

    /// Moves to phase `to`, waking the watchdog only if it must act sooner.
    fn set(&self, mut state: MutexGuard<'_, State>, to: Phase) {
        state.phase = to;
        let sooner = match (to.deadline(&self.limits), state.armed) {
            (Some((at, _)), Some(armed)) => at < armed,
            (Some(_), None) => true,
            (None, _) => false,
        };
        drop(state);
        if sooner {
            self.changed.notify_one();
        }
    }

    /// Bytes arrived: until a read finds nothing more, they may be a whole
    /// request about to be answered, so the connection may not be shed.
    fn on_read(&self) {
        let state = self.lock();
        if let Phase::Waiting { since, head, got_bytes, found_silent } = state.phase
            && (!got_bytes || found_silent)
        {
            let head = head.or_else(|| Some(Instant::now()));
            self.set(state, Phase::Waiting { since, head, got_bytes: true, found_silent: false });
        }
    }

    /// A read found nothing: the connection waits on its client. The
    /// accept loop is told it may shed it, except while it is a new
    /// connection spared at the cap: the loop's own timer covers that time,
    /// and a storm of new connections would wake it for each.
    fn on_empty_read(&self) {
        let mut state = self.lock();
        if let Phase::Waiting { found_silent: found @ false, .. } = &mut state.phase {
            *found = true;
            let spared = state.phase.silent_since().is_some_and(|since| Instant::now() < since + FIRST_WORD);
            drop(state);
            if !spared {
                self.room.tell();
            }
        }
    }

    /// A request head was parsed and is being answered: when its first
    /// byte came, if the connection read the clock then.
    fn on_request(&self) -> Option<Instant> {
        let state = self.lock();
        let head = match state.phase {
            // A new connection's head time is its accept (its `since` too),
            // which may be long before its first byte.
            Phase::Waiting { head: Some(head), since, .. } if head != since => Some(head),
            _ => None,
        };
        if state.phase != Phase::Shed {
            self.set(state, Phase::Answering { done: None });
        }
        head
    }

    /// The answer made at `made` has ended its body (or was dropped).
    fn on_answer_done(&self, made: Instant) {
        if let Phase::Answering { done } = &mut self.lock().phase {
            *done = Some(made);
        }
    }

    /// Everything written so far has been flushed: if that was the end of an
    /// answer, the connection now waits for its next request. An idle
    /// keep-alive connection may be shed at once (its client, if it sent
    /// more meanwhile, sees a closed keep-alive connection and may retry).
    fn on_flushed(&self) {
        let state = self.lock();
        if let Phase::Answering { done: Some(made) } = state.phase {
            // From when the answer was made rather than a clock read of its
            // own: the idle time is a few microseconds longer at most.
            let idle = Phase::Waiting { since: made, head: None, got_bytes: false, found_silent: true };
            self.set(state, idle);
            self.room.tell();
        }
    }

    /// True while no request is being answered (so an error answer hyper
    /// writes then is its own, to a head it could not parse).
    fn waiting(&self) -> bool {
        matches!(self.lock().phase, Phase::Waiting { .. })
    }

    /// Which connection to shed first: the smallest rank; `None` if it may
    /// not be shed (answering, or its request may be unread in its socket).
    fn shed_rank(&self) -> Option<(bool, Instant, u64)> {
        match self.lock().phase {
            Phase::Waiting { since, got_bytes, found_silent: true, .. } => Some((got_bytes, since, self.id)),
            Phase::Waiting { .. } | Phase::Answering { .. } | Phase::Shed => None,
        }
    }

    /// See [`Phase::silent_since`].
    fn silent_since(&self) -> Option<Instant> {
        self.lock().phase.silent_since()
    }

    fn shed(&self) {
        let state = self.lock();
        self.set(state, Phase::Shed);
    }

    /// Resolves when the connection must be closed, with the reason.
    ///
    /// It wakes at the deadline or one check period from now, whichever is
    /// sooner, and looks again. A request moves the deadline to at least a
    /// check period after the watchdog last looked (a head's header
    /// timeout, an answer's idle time), so it is never sooner than the
    /// armed wake-up and costs the watchdog no wake-up of its own: at most
    /// one a check period per connection.
    async fn watchdog(&self, shared: &Shared) -> Closed {
        let check = self.limits.header_timeout.min(self.limits.idle_timeout).max(MIN_CHECK);
        loop {
            let (deadline, wake, now) = {
                let mut state = self.lock();
                let deadline = state.phase.deadline(&self.limits);
                // Read after the deadline, which may be "now" (shed).
                let now = Instant::now();
                let wake = match (deadline, now.checked_add(check)) {
                    (Some((at, _)), Some(next)) => Some(at.min(next)),
                    (Some((at, _)), None) => Some(at),
                    (None, next) => next,
                };
                state.armed = wake;
                (deadline, wake, now)
            };
            match (deadline, wake) {
                (Some((at, why)), _) if at <= now => return why,
                (_, None) => self.changed.notified().await,
                (_, Some(at)) => {
                    tokio::select! {
                        () = shared.sleep_until(at) => {},
                        () = self.changed.notified() => {},
                    }
                }
            }
        }
    }
}

/// The shortest period a watchdog looks again at its connection, so that a
/// zero timeout cannot make it spin while an answer is being made.
const MIN_CHECK: Duration = Duration::from_millis(100);

/// One accepted connection's task.
struct Connection {
    conn: Arc<Conn>,
    open: Arc<Registry>,
    shared: Arc<Shared>,
    routes: Router,
    remote: SocketAddr,
    _permit: OwnedSemaphorePermit,
}

impl Connection {
    async fn run<I: AsyncRead + AsyncWrite + Unpin + Send + 'static>(self, io: I) {
        let io = TokioIo::new(Guarded { io, conn: Arc::clone(&self.conn), rewrite: None });
        let service = Service {
            routes: self.routes.clone(),
            shared: Arc::clone(&self.shared),
            conn: Arc::clone(&self.conn),
            remote: self.remote,
        };
        let served = hyper::server::conn::http1::Builder::new().max_buf_size(MAX_HEAD).serve_connection(io, service);
        let mut served = std::pin::pin!(served);
        let watchdog = self.conn.watchdog(&self.shared);
        let mut watchdog = std::pin::pin!(watchdog);
        let mut stopping = false;
        loop {
            tokio::select! {
                // Errors are the client's (a reset, a malformed head already
                // answered): nothing to do but close.
                _ = served.as_mut() => break,
                why = &mut watchdog => {
                    // Counted before the socket closes (dropped below), so a
                    // client that sees the close sees the count.
                    self.shared.metrics().closed(why);
                    break;
                }
                () = self.conn.stop.notified(), if !stopping => {
                    // Stopping: a connection waiting for a request closes
                    // now; one answering finishes its answer first.
                    if self.conn.waiting() {
                        break;
                    }
                    stopping = true;
                    served.as_mut().graceful_shutdown();
                }
            }
        }
    }
}

impl Drop for Connection {
    fn drop(&mut self) {
        self.open.lock().remove(&self.conn.id);
        self.shared.metrics().closed_conn();
    }
}

mod registry;
use registry::*;
mod wire;
use wire::*;

#[cfg(test)]
mod tests;
