//! The worker's side: [`worker_main`], which recognises a process the
//! pool started and serves its tasks.
//!
//! A worker is recognised by a handshake that an unrelated environment
//! cannot carry: the pool opens a pipe, writes a random nonce into it, and
//! starts the worker with that pipe's read end open under a known number.
//! The [`WORKER_ENV`] variable names the pool's pid, that descriptor, the
//! pipe's inode and the nonce. The worker takes the role only if the
//! descriptor is that very pipe and holds that nonce. A variable inherited
//! without the pipe (a program a task starts, a shell that exported it) is
//! ignored with a one-line warning, and the program runs as usual.

use std::ffi::OsStr;
use std::io::{self, BufReader, Write};
use std::os::fd::RawFd;

use super::registry::Registry;
use super::{sys, wire};

/// Set in a worker's environment: `pid:fd:inode:nonce` (see the module
/// docs).
pub(super) const WORKER_ENV: &str = "CONCUR_WORKER";

/// Bytes of randomness in a nonce (sent as twice as many hex digits).
pub(super) const NONCE_BYTES: usize = 16;

/// What the pool tells a worker, through its environment.
#[derive(Debug, PartialEq, Eq)]
pub(super) struct Handshake {
    pub(super) pool: u32,
    pub(super) fd: RawFd,
    pub(super) inode: u64,
    pub(super) nonce: String,
}

impl Handshake {
    /// The variable's value.
    pub(super) fn to_env(&self) -> String {
        format!("{}:{}:{}:{}", self.pool, self.fd, self.inode, self.nonce)
    }

    fn parse(value: &OsStr) -> Option<Self> {
        let mut parts = value.to_str()?.split(':');
        let handshake = Handshake {
            pool: parts.next()?.parse().ok()?,
            fd: parts.next()?.parse().ok()?,
            inode: parts.next()?.parse().ok()?,
            nonce: parts.next()?.to_owned(),
        };
        let well_formed = parts.next().is_none()
            && handshake.nonce.len() == 2 * NONCE_BYTES
            && handshake.nonce.bytes().all(|b| b.is_ascii_hexdigit());
        well_formed.then_some(handshake)
    }
}

/// A fresh random nonce, in hex.
pub(super) fn new_nonce() -> io::Result<String> {
    let mut bytes = [0; NONCE_BYTES];
    getrandom::fill(&mut bytes).map_err(|e| io::Error::other(format!("no randomness for a nonce: {e}")))?;
    Ok(bytes.iter().map(|b| format!("{b:02x}")).collect())
}

/// Enters worker mode if this process was started as a
/// [`ProcessPool`](super::ProcessPool) worker, and otherwise returns at
/// once. Call it first thing in `main`, before anything is printed or any
/// thread is started, with every task type the program sends to a process
/// pool:
///
/// ```no_run
/// # use serde::{Deserialize, Serialize};
/// # #[derive(Serialize, Deserialize)]
/// # struct Square(u64);
/// # impl concur::Task for Square {
/// #     type Output = u64;
/// #     const NAME: &'static str = "square";
/// #     fn run(self) -> u64 { self.0 * self.0 }
/// # }
/// fn main() {
///     concur::worker_main(concur::Registry::new().register::<Square>());
///     // Only the pool's own process gets here.
/// }
/// ```
///
/// A worker serves tasks until the pool closes its stdin and then exits the
/// process: in a worker, this function never returns.
///
/// A worker is recognised by a handshake on a pipe that only the pool
/// opens for it, not by its environment alone: a program that inherits
/// the pool's variable without that pipe (one started by a task, say)
/// prints a one-line warning on stderr and runs as a normal program.
pub fn worker_main(registry: Registry) {
    let Some(value) = std::env::var_os(WORKER_ENV) else {
        return;
    };
    let Some(handshake) = Handshake::parse(&value) else {
        warn_ignored("it is not a worker handshake");
        return;
    };
    let mut nonce = [0; 2 * NONCE_BYTES + 1];
    match sys::take_handshake(handshake.fd, handshake.inode, &mut nonce) {
        Some(n) if nonce[..n] == *handshake.nonce.as_bytes() => {}
        Some(_) => {
            warn_ignored("the handshake pipe holds another nonce");
            return;
        }
        None => {
            warn_ignored("no handshake pipe was passed to this process");
            return;
        }
    }
    let code = match serve(&registry, handshake.pool) {
        Ok(()) => 0,
        Err(e) => {
            eprintln!("concur worker {}: {e}", std::process::id());
            3
        }
    };
    std::process::exit(code);
}

fn warn_ignored(why: &str) {
    eprintln!("warning: ignoring {WORKER_ENV} in the environment ({why}); running as a normal program");
}

/// A worker's life: take the protocol pipes, greet, then answer frames
/// until the pool closes stdin.
fn serve(registry: &Registry, pool: u32) -> io::Result<()> {
    sys::die_with_parent(pool)?;
    let (input, mut output) = sys::take_protocol_pipes()?;
    let mut input = BufReader::with_capacity(1 << 16, input);
    output.write_all(&wire::hello_frame())?;
    // Every answer is built in this one buffer.
    let mut answer = Vec::new();
    while let Some(frame) = wire::read_frame(&mut input)? {
        match wire::Request::parse(&frame)? {
            wire::Request::Init { name, payload } => {
                let reply = registry.run(name, payload);
                if wire::is_error(&reply) {
                    output.write_all(&reply)?;
                    return Err(io::Error::other(format!("initializer {name:?} failed")));
                }
                output.write_all(&wire::ready_frame())?;
            }
            wire::Request::Run { name, tasks } => {
                // Before running anything: a worker that dies before this
                // reaches the pool ran none of the chunk, so the chunk is
                // given to another worker instead of failed.
                output.write_all(&wire::ack_frame())?;
                let run = registry.runner(name);
                for payload in tasks {
                    let payload = payload?;
                    answer.clear();
                    match run {
                        Some(run) => run(payload, &mut answer),
                        None => answer = registry.unknown(name),
                    }
                    // One write per answer, as soon as it is ready: the
                    // pool learns exactly which tasks are done, and an
                    // answer written survives the worker's death.
                    output.write_all(&answer)?;
                }
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn handshakes_round_trip_and_junk_is_refused() {
        let handshake = Handshake { pool: 42, fd: 7, inode: 99, nonce: "0f".repeat(NONCE_BYTES) };
        assert_eq!(Handshake::parse(OsStr::new(&handshake.to_env())), Some(handshake));
        for junk in ["", "1234", "1:2:3", "1:2:3:xyz", "1:2:3:00", &format!("1:2:3:{}:4", "0".repeat(32))] {
            assert_eq!(Handshake::parse(OsStr::new(junk)), None, "{junk:?}");
        }
    }
}
