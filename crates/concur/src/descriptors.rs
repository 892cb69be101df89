//! The process's table of file descriptors, grown once before a storm of
//! connections rather than doubling during it.
//!
//! Every connection the chapter's unbounded models open (`async` with
//! `gather`, a thread per item) takes a descriptor. Linux keeps them in
//! a table it grows by doubling, and in a process with more than one
//! thread each doubling waits out a kernel grace period (a few
//! milliseconds) while the thread that asked for a descriptor stands
//! still, and every other thread opening one waits behind it. A fresh
//! process opening 2,000 connections goes through five doublings, each
//! stalling every thread that opens one. The table never shrinks, so
//! growing it once, at start-up while the process has one thread, costs
//! one table.

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

/// Grows the descriptor table to hold at least `count` descriptors (fewer
/// if the open-files limit is lower: the table is never grown past what
/// the process may open). Returns the size reserved.
///
/// Call it early in `main`, before any thread starts: the kernel only
/// waits for other threads when there are some. Called later, it still
/// replaces several waits with one.
pub fn reserve(count: usize) -> io::Result<usize> {
    let want = count.min(open_files_limit()?);
    if want <= 3 {
        // Standard input, output and error fit in any table.
        return Ok(want);
    }
    // Any open descriptor will do as the one to copy: the copy only
    // exists to make the kernel grow the table to its number.
    let probe = std::os::unix::net::UnixDatagram::unbound()?;
    let highest = libc::c_int::try_from(want - 1).unwrap_or(libc::c_int::MAX);
    // SAFETY: F_DUPFD_CLOEXEC only reads its integer arguments; `probe`
    // is open for the duration of the call.
    let copy = unsafe { libc::fcntl(probe.as_raw_fd(), libc::F_DUPFD_CLOEXEC, highest) };
    if copy < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `copy` was just returned by F_DUPFD, so it is open and
    // nothing else owns it; dropping the OwnedFd closes it.
    drop(unsafe { OwnedFd::from_raw_fd(copy) });
    Ok(want)
}

/// The soft limit on open files, as a count.
fn open_files_limit() -> io::Result<usize> {
    let mut limit = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: getrlimit writes one rlimit through a valid pointer.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(usize::try_from(limit.rlim_cur).unwrap_or(usize::MAX))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The highest descriptor the process can be given without growing
    /// its table, read back from the kernel: `/proc/self/status`'s
    /// `FDSize`.
    fn table_size() -> usize {
        let status = std::fs::read_to_string("/proc/self/status").expect("read /proc/self/status");
        status
            .lines()
            .find_map(|l| l.strip_prefix("FDSize:"))
            .and_then(|v| v.trim().parse().ok())
            .expect("FDSize in /proc/self/status")
    }

    #[test]
    fn the_table_grows_to_the_count_asked_and_no_descriptor_is_left_open() {
        let limit = open_files_limit().expect("the open-files limit");
        let count = limit.min(3000);
        let reserved = reserve(count).expect("reserve");
        assert_eq!(reserved, count);
        assert!(table_size() >= count, "table of {} after reserving {count}", table_size());
        // The copy that grew the table went to the number asked, and is closed.
        assert!(!std::path::Path::new(&format!("/proc/self/fd/{}", count - 1)).exists());
    }

    #[test]
    fn a_count_past_the_limit_reserves_the_limit() {
        // Unclamped, the kernel would refuse the copy's number (F_DUPFD
        // fails at or past the limit). The limit may be large: the table
        // costs 8 bytes a descriptor, in this test process only.
        let limit = open_files_limit().expect("the open-files limit");
        assert_eq!(reserve(limit.saturating_add(1)).expect("reserve past the limit"), limit);
        assert!(table_size() >= limit);
    }
}
