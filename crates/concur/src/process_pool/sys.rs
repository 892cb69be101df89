//! The operating-system calls of the process pool, and nothing else: the
//! rest of the pool is plain Rust over these. Most go through `std` or
//! `nix`; the few that need `unsafe` say why each is sound.

use std::fs::File;
use std::io::{self, Write};
use std::os::fd::{AsFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::process::{Command, ExitStatus};
use std::time::{Duration, Instant};

use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
use nix::sys::signal::{SigSet, SigmaskHow, Signal, killpg, pthread_sigmask};
use nix::unistd::Pid;

/// Makes `fd`, which is close-on-exec in this process, open in the
/// program `command` starts, under the same number. Only that child gets
/// it: other children started meanwhile by other threads do not.
pub(super) fn inherit_fd(command: &mut Command, fd: RawFd) {
    // SAFETY: the closure runs in the child between fork and exec, where
    // only async-signal-safe calls are allowed; fcntl is one, and the
    // closure allocates nothing and takes no lock. `fd` is open in the
    // child because it was open in the parent when it forked (the caller
    // keeps it open until `spawn` returns).
    unsafe {
        command.pre_exec(move || {
            if libc::fcntl(fd, libc::F_SETFD, 0) == -1 {
                return Err(io::Error::last_os_error());
            }
            Ok(())
        });
    }
}

/// The inode of a pipe end: with the descriptor number, what names the
/// handshake pipe in a worker's environment.
pub(super) fn inode(fd: BorrowedFd<'_>) -> io::Result<u64> {
    let stat = nix::sys::stat::fstat(fd)?;
    #[allow(clippy::useless_conversion, reason = "ino_t is u32 on some platforms")]
    Ok(u64::from(stat.st_ino))
}

/// Reads the handshake from descriptor `fd` if it is the pipe whose inode
/// is `inode` and holds data now, then closes it. `None`, touching
/// nothing, if `fd` is not open or is any other file: an inherited
/// variable may name a descriptor that belongs to someone else.
pub(super) fn take_handshake(fd: RawFd, inode_wanted: u64, buf: &mut [u8]) -> Option<usize> {
    if fd <= 2 {
        return None;
    }
    // SAFETY: F_GETFD only reads the descriptor's flags; on a number that
    // is not open it fails with EBADF and has no effect.
    if unsafe { libc::fcntl(fd, libc::F_GETFD) } == -1 {
        return None;
    }
    // SAFETY: `fd` is open (checked just above) and stays open while it is
    // borrowed: this runs from `worker_main`, which is documented to be
    // called first thing in `main`, before the program has code of its
    // own that could close descriptors, and nothing here closes it.
    let borrowed = unsafe { BorrowedFd::borrow_raw(fd) };
    let stat = nix::sys::stat::fstat(borrowed).ok()?;
    let is_fifo = (stat.st_mode & libc::S_IFMT) == libc::S_IFIFO;
    #[allow(clippy::useless_conversion, reason = "ino_t is u32 on some platforms")]
    if !is_fifo || u64::from(stat.st_ino) != inode_wanted {
        return None;
    }
    // The pool wrote the handshake before starting us, so it is there now.
    if !readable_by(borrowed, Some(Instant::now())).unwrap_or(false) {
        return None;
    }
    let n = nix::unistd::read(borrowed, buf).ok()?;
    // SAFETY: this is the handshake pipe the pool opened for this process
    // (same inode), which nothing else in the process knows of: taking
    // ownership closes it, so programs this one starts do not inherit it.
    drop(unsafe { OwnedFd::from_raw_fd(fd) });
    Some(n)
}

/// Waits until `fd` is readable or at end of file: `Ok(false)` if
/// `deadline` passes first. `None` waits for as long as it takes.
pub(super) fn readable_by(fd: BorrowedFd<'_>, deadline: Option<Instant>) -> io::Result<bool> {
    loop {
        let timeout = match deadline {
            None => PollTimeout::NONE,
            Some(deadline) => {
                let left = deadline.saturating_duration_since(Instant::now());
                // Round up, so a wait does not end a little early and spin.
                let ms = left.as_micros().div_ceil(1000);
                PollTimeout::try_from(ms).unwrap_or(PollTimeout::MAX)
            }
        };
        let mut fds = [PollFd::new(fd, PollFlags::POLLIN)];
        match poll(&mut fds, timeout) {
            Ok(0) if deadline.is_some_and(|d| Instant::now() >= d) => return Ok(false),
            Ok(0) => {}
            Ok(_) => return Ok(true),
            Err(nix::errno::Errno::EINTR) => {}
            Err(e) => return Err(e.into()),
        }
    }
}

/// What woke an idle manager.
pub(super) struct Woken {
    pub(super) wake: bool,
    pub(super) worker: bool,
}

/// Waits until `wake` is readable, or `worker` (the idle worker's output)
/// is readable or closed: an idle worker that dies is noticed at once.
pub(super) fn wait_idle(wake: BorrowedFd<'_>, worker: Option<BorrowedFd<'_>>) -> io::Result<Woken> {
    let mut fds = vec![PollFd::new(wake, PollFlags::POLLIN)];
    if let Some(worker) = worker {
        fds.push(PollFd::new(worker, PollFlags::POLLIN));
    }
    loop {
        match poll(&mut fds, PollTimeout::NONE) {
            Ok(_) => {
                let ready = |fd: &PollFd<'_>| fd.revents().is_some_and(|r| !r.is_empty());
                return Ok(Woken { wake: ready(&fds[0]), worker: fds.get(1).is_some_and(ready) });
            }
            Err(nix::errno::Errno::EINTR) => {}
            Err(e) => return Err(e.into()),
        }
    }
}

/// Sends SIGKILL to every process in the group `pid` leads. The caller
/// must not have reaped the leader yet: until then its pid, and so the
/// group's id, cannot be reused. Fails only if the group is empty.
pub(super) fn kill_group(pid: u32) {
    if let Ok(pid) = i32::try_from(pid) {
        let _ = killpg(Pid::from_raw(pid), Signal::SIGKILL);
    }
}

/// Waits, until `deadline` at most, for the child `pid` to exit, without
/// reaping it (so its pid stays its own). Polls, with growing pauses: it is
/// only called once the child has closed its output, when it exits within
/// microseconds unless it misbehaves.
#[cfg(any(target_os = "linux", target_os = "android", target_os = "freebsd"))]
pub(super) fn await_exit(pid: u32, deadline: Instant) {
    use nix::sys::wait::{Id, WaitPidFlag, WaitStatus, waitid};

    let Ok(pid) = i32::try_from(pid) else {
        return;
    };
    let flags = WaitPidFlag::WEXITED | WaitPidFlag::WNOWAIT | WaitPidFlag::WNOHANG;
    let mut pause = Duration::from_micros(50);
    while let Ok(WaitStatus::StillAlive) = waitid(Id::Pid(Pid::from_raw(pid)), flags) {
        if Instant::now() >= deadline {
            return;
        }
        std::thread::sleep(pause);
        pause = (pause * 2).min(Duration::from_millis(10));
    }
}

/// Without `waitid`, a child that closed its output is taken to be gone.
#[cfg(not(any(target_os = "linux", target_os = "android", target_os = "freebsd")))]
pub(super) fn await_exit(_pid: u32, _deadline: Instant) {}

/// Makes writing to a dead worker's stdin an `EPIPE` error on this thread,
/// even in a program that does not ignore `SIGPIPE` (Rust programs do by
/// default), instead of a signal that would kill the whole process. Child
/// processes start with an empty signal mask whatever this thread's is.
pub(super) fn block_sigpipe() -> io::Result<()> {
    let mut set = SigSet::empty();
    set.add(Signal::SIGPIPE);
    pthread_sigmask(SigmaskHow::SIG_BLOCK, Some(&set), None)?;
    Ok(())
}

/// Makes sure this worker does not outlive the pool's process: the kernel
/// kills it when the pool's thread that started it ends.
#[cfg(target_os = "linux")]
pub(super) fn die_with_parent(pool: u32) -> io::Result<()> {
    nix::sys::prctl::set_pdeathsig(Signal::SIGKILL)?;
    // The pool may have died before the request: then we were adopted.
    if std::os::unix::process::parent_id() != pool {
        return Err(io::Error::other("the pool's process is gone"));
    }
    Ok(())
}

/// Elsewhere, end-of-file on stdin (the pool's process is gone) is what
/// makes a worker exit.
#[cfg(not(target_os = "linux"))]
pub(super) fn die_with_parent(pool: u32) -> io::Result<()> {
    if std::os::unix::process::parent_id() != pool {
        return Err(io::Error::other("the pool's process is gone"));
    }
    Ok(())
}

/// Moves the protocol pipes (fd 0 and 1) to private close-on-exec
/// descriptors and points fd 1 at stderr and fd 0 at `/dev/null`, so that
/// nothing a task prints or reads, nor a program it starts, can touch the
/// protocol.
pub(super) fn take_protocol_pipes() -> io::Result<(File, File)> {
    io::stdout().flush()?;
    let input = io::stdin().as_fd().try_clone_to_owned()?;
    let output = io::stdout().as_fd().try_clone_to_owned()?;
    let null = File::open("/dev/null")?;
    nix::unistd::dup2_stdout(io::stderr())?;
    nix::unistd::dup2_stdin(&null)?;
    Ok((File::from(input), File::from(output)))
}

/// Whether a process exited by itself (rather than by a signal).
pub(super) fn exited(status: ExitStatus) -> bool {
    status.signal().is_none()
}

/// `exited with status 3`, `killed by signal 9 (SIGKILL)`.
pub(super) fn describe_exit(status: ExitStatus) -> String {
    if let Some(signal) = status.signal() {
        match Signal::try_from(signal) {
            Ok(name) => format!("killed by signal {signal} ({})", name.as_str()),
            Err(_) => format!("killed by signal {signal}"),
        }
    } else if let Some(code) = status.code() {
        format!("exited with status {code}")
    } else {
        status.to_string()
    }
}

#[cfg(test)]
mod tests {
    use std::os::fd::{AsRawFd, IntoRawFd};

    use super::*;

    #[test]
    fn exit_statuses_are_described() {
        assert_eq!(describe_exit(ExitStatus::from_raw(libc::SIGKILL)), "killed by signal 9 (SIGKILL)");
        assert_eq!(describe_exit(ExitStatus::from_raw(libc::SIGABRT)), "killed by signal 6 (SIGABRT)");
        assert_eq!(describe_exit(ExitStatus::from_raw(3 << 8)), "exited with status 3");
    }

    #[test]
    fn a_handshake_is_taken_only_from_its_own_pipe() {
        let (reader, mut writer) = io::pipe().expect("a pipe");
        writer.write_all(b"nonce").expect("written");
        let fd = reader.as_raw_fd();
        let inode = inode(reader.as_fd()).expect("fstat");
        let mut buf = [0; 16];
        // Another inode: untouched, still open, still holding the bytes.
        assert_eq!(take_handshake(fd, inode + 1, &mut buf), None);
        // Not open at all.
        assert_eq!(take_handshake(1_000_000, inode, &mut buf), None);
        // Ours: read and closed (ownership moves to `take_handshake`).
        let fd = OwnedFd::from(reader).into_raw_fd();
        assert_eq!(take_handshake(fd, inode, &mut buf), Some(5));
        assert_eq!(&buf[..5], b"nonce");
    }
}
