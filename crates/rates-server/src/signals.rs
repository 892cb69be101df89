//! Ctrl-C and SIGTERM, the signals that stop a program of this workspace:
//! [`Signals`] hears them, [`watch`] acts on the first and the second on a
//! thread of its own, and [`shutdown_signal`](crate::shutdown_signal) is
//! the server's graceful stop. The handlers are installed when these are
//! made, so a signal that arrives before anyone waits is heard, not fatal.
//! What a stop means (a drain, an exit code) is the caller's to say.

use std::sync::{Arc, OnceLock};
use std::thread::JoinHandle;

/// A signal that stops a program.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stop {
    /// SIGINT: Ctrl-C.
    Interrupt,
    /// SIGTERM: what service managers and `timeout` send.
    Terminate,
}

impl Stop {
    /// What the program was, in a line of its own: `interrupted`, `terminated`.
    pub fn name(self) -> &'static str {
        match self {
            Stop::Interrupt => "interrupted",
            Stop::Terminate => "terminated",
        }
    }

    /// The signal's name: `SIGINT`, `SIGTERM`.
    pub fn signal(self) -> &'static str {
        match self {
            Stop::Interrupt => "SIGINT",
            Stop::Terminate => "SIGTERM",
        }
    }
}

/// SIGINT and SIGTERM (Ctrl-C alone off Unix), their handlers installed
/// when made.
#[derive(Debug)]
pub struct Signals {
    #[cfg(unix)]
    int: tokio::signal::unix::Signal,
    #[cfg(unix)]
    term: tokio::signal::unix::Signal,
}

impl Signals {
    /// Installs the handlers. Call it inside a tokio runtime.
    ///
    /// # Errors
    ///
    /// A handler that cannot be installed.
    pub fn install() -> std::io::Result<Signals> {
        #[cfg(unix)]
        {
            use tokio::signal::unix::{SignalKind, signal};
            Ok(Signals { int: signal(SignalKind::interrupt())?, term: signal(SignalKind::terminate())? })
        }
        #[cfg(not(unix))]
        Ok(Signals {})
    }

    /// The next signal.
    pub async fn next(&mut self) -> Stop {
        #[cfg(unix)]
        {
            tokio::select! {
                Some(()) = self.int.recv() => Stop::Interrupt,
                Some(()) = self.term.recv() => Stop::Terminate,
                else => std::future::pending().await,
            }
        }
        #[cfg(not(unix))]
        {
            match tokio::signal::ctrl_c().await {
                Ok(()) => Stop::Interrupt,
                Err(_) => std::future::pending().await,
            }
        }
    }
}

/// A thread that hears the signals of the process while it lives (see
/// [`watch`]); dropping it ends the thread.
#[derive(Debug)]
pub struct Watch {
    first: Arc<OnceLock<Stop>>,
    done: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

impl Watch {
    /// The first signal, if one came.
    pub fn stopped(&self) -> Option<Stop> {
        self.first.get().copied()
    }
}

impl Drop for Watch {
    fn drop(&mut self) {
        drop(self.done.take());
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// Hears SIGINT and SIGTERM on a thread of its own, from now until the
/// [`Watch`] is dropped: `first` is called on the first signal (to stop
/// the work gently), `second` on the next (to end the process at once).
///
/// # Errors
///
/// The thread's runtime or a handler that cannot be made.
pub fn watch(
    first: impl FnOnce(Stop) + Send + 'static,
    second: impl FnOnce(Stop) + Send + 'static,
) -> std::io::Result<Watch> {
    let rt = tokio::runtime::Builder::new_current_thread().enable_io().build()?;
    let mut signals = {
        let _in_runtime = rt.enter();
        Signals::install()?
    };
    let (done, mut ended) = tokio::sync::oneshot::channel::<()>();
    let heard = Arc::new(OnceLock::new());
    let thread = std::thread::Builder::new().name("signals".into()).spawn({
        let heard = Arc::clone(&heard);
        move || {
            rt.block_on(async move {
                let stop = tokio::select! {
                    stop = signals.next() => stop,
                    _ = &mut ended => return,
                };
                let _ = heard.set(stop);
                first(stop);
                tokio::select! {
                    stop = signals.next() => second(stop),
                    _ = &mut ended => {}
                }
            });
        }
    })?;
    Ok(Watch { first: heard, done: Some(done), thread: Some(thread) })
}

#[cfg(all(test, unix))]
mod tests {
    use super::*;
    use std::sync::mpsc;
    use std::time::Duration;

    /// One test, not two: a signal raised here reaches every watch alive in
    /// this process.
    #[test]
    fn the_first_signal_and_the_second_each_reach_their_callback_until_dropped() {
        let quiet = watch(|_| {}, |_| {}).expect("a watch");
        assert_eq!(quiet.stopped(), None);
        // Joins the thread: a watch that did not end would hang here.
        drop(quiet);

        let (tx, rx) = mpsc::channel();
        let tx2 = tx.clone();
        let w = watch(move |s| tx.send(("first", s)).unwrap_or(()), move |s| tx2.send(("second", s)).unwrap_or(()))
            .expect("a watch");
        let raise = |sig| nix::sys::signal::raise(sig).expect("raised");
        raise(nix::sys::signal::Signal::SIGTERM);
        assert_eq!(rx.recv_timeout(Duration::from_secs(10)), Ok(("first", Stop::Terminate)));
        assert_eq!(w.stopped(), Some(Stop::Terminate));
        raise(nix::sys::signal::Signal::SIGINT);
        assert_eq!(rx.recv_timeout(Duration::from_secs(10)), Ok(("second", Stop::Interrupt)));
        drop(w);
    }
}
