//! The shared memory a worker's answers travel through: one ring buffer per
//! worker, written by the worker and read by its manager, so that a chunk
//! of many small tasks costs no system call per answer.
//!
//! The ring is a byte stream, like a pipe: the worker appends the frames of
//! its answers and then *commits* them by publishing how many bytes it has
//! written in all (`committed`); the manager copies what is committed into
//! its own buffer, parses frames there, and publishes how many bytes it has
//! taken (`consumed`), which frees room. A frame larger than the room left
//! goes in pieces, as through a pipe. Both counters only grow; a position
//! is a counter modulo the capacity.
//!
//! What a worker committed is in memory its manager keeps mapped, so it
//! survives the worker's death: when the worker's pipe closes, the manager
//! first takes what is committed, then treats the rest of the chunk as
//! lost.
//!
//! # Waking, without losing a wake-up
//!
//! Neither side spins. The manager, before it blocks on the worker's pipe,
//! sets `reader_waiting`, issues a `SeqCst` fence and looks at `committed`
//! once more; the worker, after it publishes `committed`, issues a `SeqCst`
//! fence and looks at `reader_waiting`, and only if it was set (it swaps it
//! back to 0) writes one wake-up byte on its pipe. The two fences are
//! ordered one way or the other, so at least one side sees the other's
//! store: either the manager sees the new answer and does not block, or
//! the worker sees the flag and wakes it. A wake-up may be spent on an
//! answer the manager already took; the manager ignores such bytes. A
//! manager that is busy taking answers has no flag set, so it costs the
//! worker no system call.
//!
//! Waiting for room is the same in reverse: the worker sets
//! `writer_waiting`, fences and looks at `consumed` again before it blocks
//! on its stdin; the manager, after publishing `consumed`, fences and, if
//! the flag was set, swaps it to 0 and writes a space frame to the
//! worker's stdin. A worker that finds room after all but lost the swap
//! reads the space frame owed to it at once, so none is left over.
//!
//! Atomics in memory shared between processes work as between threads on
//! every platform with lock-free atomics of these sizes: they act on the
//! physical memory, whatever address each process maps it at.
//!
//! # Trust
//!
//! The manager trusts nothing in the ring: a worker is a process that may
//! be broken or hostile. It keeps its own copy of `consumed`, refuses a
//! `committed` more than the capacity ahead of it, reads only within the
//! mapping, and parses frames from its private copy with the limits of
//! [`frames`](crate::codec::frames). Every `unsafe` of the pool's shared memory is in
//! this module.

use std::io;
use std::num::NonZeroUsize;
use std::os::fd::{AsFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::ptr::NonNull;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering, fence};

use nix::sys::mman::{MapFlags, ProtFlags, mmap, munmap};

/// Bytes of answers the ring holds: as much as a pipe's buffer.
pub(super) const CAPACITY: usize = 64 * 1024;

/// Where the bytes of answers start in the mapping: the header has a page
/// of its own.
const DATA: usize = 4096;

/// The size of the mapping.
const LEN: usize = DATA + CAPACITY;

/// A counter or flag alone on its cache line, so that the two sides do not
/// slow each other down by writing next to what the other reads.
#[repr(C, align(64))]
struct Line<T>(T);

/// The start of the mapping.
#[repr(C)]
struct Header {
    /// Bytes the worker has written and published, in all.
    committed: Line<AtomicU64>,
    /// Bytes the manager has taken, in all.
    consumed: Line<AtomicU64>,
    /// Set by a manager about to block: a [`Wake`] level, or 0.
    reader_waiting: Line<AtomicU32>,
    /// Set (to 1) by a worker about to block for room.
    writer_waiting: Line<AtomicU32>,
}

const _: () = assert!(size_of::<Header>() <= DATA && CAPACITY.is_power_of_two());

/// What a manager about to block wants to be woken for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Wake {
    /// A task's answer, or a piece of one: enough when no time limit runs,
    /// so that a chunk's acknowledgement costs no wake-up.
    Answer = 1,
    /// Anything committed, the acknowledgement included: a time limit
    /// starts when the worker takes its task.
    Any = 2,
}

/// A mapping of a ring.
struct Ring {
    base: NonNull<u8>,
}

// SAFETY: the mapping is plain memory owned by this value (unmapped only on
// drop); all access to it goes through atomics or copies of bytes, which
// any thread may do.
unsafe impl Send for Ring {}

impl Ring {
    /// Maps the ring in `fd`, which must be `LEN` bytes long.
    fn map(fd: BorrowedFd<'_>) -> io::Result<Ring> {
        let len = NonZeroUsize::new(LEN).ok_or_else(|| io::Error::other("an empty ring"))?;
        // SAFETY: a new shared mapping chosen by the kernel (no address is
        // asked for, so nothing existing is replaced), of a file that is
        // `LEN` bytes long (the creator sized it, the worker checks it), so
        // every byte of the mapping is backed.
        let base =
            unsafe { mmap(None, len, ProtFlags::PROT_READ | ProtFlags::PROT_WRITE, MapFlags::MAP_SHARED, fd, 0)? };
        Ok(Ring { base: base.cast() })
    }

    fn header(&self) -> &Header {
        // SAFETY: the mapping is page-aligned and at least `DATA` bytes
        // long, so a `Header` fits at its start, aligned. Every field is an
        // atomic, valid for any bits and meant to be changed by others
        // while borrowed (here, by the other process). It lives as long as
        // `self`, which this borrow cannot outlive.
        unsafe { self.base.cast::<Header>().as_ref() }
    }

    /// Copies `bytes` (at most [`CAPACITY`]; more is cut) into the ring at
    /// stream position `at`, wrapping around its end.
    fn write_at(&self, at: u64, bytes: &[u8]) {
        let bytes = &bytes[..bytes.len().min(CAPACITY)];
        let offset = (at % CAPACITY as u64) as usize;
        let first = bytes.len().min(CAPACITY - offset);
        // SAFETY: `offset + first <= CAPACITY` and `bytes.len() - first <=
        // CAPACITY`, so both copies stay within the data part of the
        // mapping, which is live while `self` is; a private `&[u8]` cannot
        // overlap shared memory. The bytes written are the ones the
        // manager has consumed (the caller keeps to the room left), so the
        // manager does not read them meanwhile.
        unsafe {
            let data = self.base.as_ptr().add(DATA);
            std::ptr::copy_nonoverlapping(bytes.as_ptr(), data.add(offset), first);
            std::ptr::copy_nonoverlapping(bytes.as_ptr().add(first), data, bytes.len() - first);
        }
    }

    /// Appends to `out` the `len` bytes (at most [`CAPACITY`]; more is
    /// cut) at stream position `at`.
    fn read_at(&self, at: u64, len: usize, out: &mut Vec<u8>) {
        let len = len.min(CAPACITY);
        let offset = (at % CAPACITY as u64) as usize;
        let first = len.min(CAPACITY - offset);
        out.reserve(len);
        // SAFETY: both copies read within the data part of the mapping
        // (`offset + first <= CAPACITY`, `len - first <= CAPACITY`), which
        // is live while `self` is, into the `len` bytes of spare capacity
        // just reserved, which are then initialised. The source is never
        // borrowed as a Rust reference: a worker that broke the protocol
        // and writes these bytes meanwhile can only make them arbitrary,
        // and any byte is a valid `u8` that the caller parses as untrusted.
        unsafe {
            let data = self.base.as_ptr().add(DATA);
            let end = out.as_mut_ptr().add(out.len());
            std::ptr::copy_nonoverlapping(data.add(offset), end, first);
            std::ptr::copy_nonoverlapping(data, end.add(first), len - first);
            out.set_len(out.len() + len);
        }
    }
}

impl Drop for Ring {
    fn drop(&mut self) {
        // SAFETY: `base` is the start of a mapping of `LEN` bytes made by
        // `map`, unmapped nowhere else; nothing borrows it any more (every
        // borrow of the header is tied to `&self`).
        let _ = unsafe { munmap(self.base.cast(), LEN) };
    }
}

/// A new, empty ring's memory: an anonymous file of `LEN` bytes, close on
/// exec (the pool passes it to one worker only, like the handshake pipe).
#[cfg(any(target_os = "linux", target_os = "android", target_os = "freebsd"))]
fn new_file() -> io::Result<OwnedFd> {
    use nix::sys::memfd::{MFdFlags, memfd_create};
    let fd = memfd_create("concur-answers", MFdFlags::MFD_CLOEXEC)?;
    sized(fd)
}

#[cfg(not(any(target_os = "linux", target_os = "android", target_os = "freebsd")))]
fn new_file() -> io::Result<OwnedFd> {
    new_posix_shm()
}

/// Where there is no `memfd_create`: a POSIX shared memory object under a
/// random name, unlinked at once so that only the descriptor holds it
/// (`shm_open` opens it close on exec).
#[cfg(any(test, not(any(target_os = "linux", target_os = "android", target_os = "freebsd"))))]
fn new_posix_shm() -> io::Result<OwnedFd> {
    use nix::fcntl::OFlag;
    use nix::sys::mman::{shm_open, shm_unlink};
    use nix::sys::stat::Mode;
    let mut random = [0; 8];
    getrandom::fill(&mut random).map_err(|e| io::Error::other(format!("no randomness for a name: {e}")))?;
    // Short: macOS allows 31 bytes.
    let name = format!("/concur-{:016x}", u64::from_le_bytes(random));
    let fd = shm_open(name.as_str(), OFlag::O_CREAT | OFlag::O_EXCL | OFlag::O_RDWR, Mode::S_IRUSR | Mode::S_IWUSR)?;
    shm_unlink(name.as_str())?;
    sized(fd)
}

fn sized(fd: OwnedFd) -> io::Result<OwnedFd> {
    let file = std::fs::File::from(fd);
    file.set_len(LEN as u64)?;
    Ok(OwnedFd::from(file))
}

/// The manager's side of a ring: takes what the worker committed.
pub(super) struct Reader {
    ring: Ring,
    /// Bytes taken, in all: the manager's own count, never read back from
    /// the shared memory.
    consumed: u64,
}

/// What [`Reader::take`] did.
pub(super) struct Took {
    /// Bytes appended.
    pub(super) bytes: usize,
    /// The worker waits for room, which there now is: send it a space
    /// frame.
    pub(super) wake_writer: bool,
}

impl Reader {
    /// A new ring, and the descriptor of its memory to hand to the worker.
    pub(super) fn create() -> io::Result<(Reader, OwnedFd)> {
        let fd = new_file()?;
        let ring = Ring::map(fd.as_fd())?;
        Ok((Reader { ring, consumed: 0 }, fd))
    }

    /// Appends to `out` every byte committed since the last call, and frees
    /// their room. An error if the worker's count is impossible (behind
    /// what was taken, or ahead by more than the ring holds): the worker
    /// broke the protocol.
    pub(super) fn take(&mut self, out: &mut Vec<u8>) -> io::Result<Took> {
        let header = self.ring.header();
        let committed = header.committed.0.load(Ordering::Acquire);
        let new = committed.wrapping_sub(self.consumed);
        if new > CAPACITY as u64 {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!("the answer ring claims {committed} bytes written when {} were taken", self.consumed),
            ));
        }
        if new == 0 {
            return Ok(Took { bytes: 0, wake_writer: false });
        }
        // At most CAPACITY, checked above.
        let bytes = new as usize;
        self.ring.read_at(self.consumed, bytes, out);
        self.consumed = committed;
        // Release: the copy above is done before the worker, seeing the
        // room, overwrites those bytes.
        header.consumed.0.store(committed, Ordering::Release);
        // Pairs with the worker's fence between announcing it waits for
        // room and looking at `consumed` again (module docs).
        fence(Ordering::SeqCst);
        let wake_writer = header.writer_waiting.0.load(Ordering::Relaxed) != 0
            && header.writer_waiting.0.swap(0, Ordering::SeqCst) != 0;
        Ok(Took { bytes, wake_writer })
    }

    /// Announces that the manager is about to block until woken for
    /// `wake`; `false` (and no announcement) if something was committed
    /// meanwhile, so it must not block but take it. A wake-up byte may
    /// come anyway: the caller ignores it.
    pub(super) fn may_block(&self, wake: Wake) -> bool {
        let header = self.ring.header();
        header.reader_waiting.0.store(wake as u32, Ordering::SeqCst);
        // Pairs with the worker's fence between committing and looking at
        // `reader_waiting` (module docs).
        fence(Ordering::SeqCst);
        if header.committed.0.load(Ordering::Relaxed) == self.consumed {
            return true;
        }
        self.awake();
        false
    }

    /// Withdraws the announcement of [`may_block`](Self::may_block): the
    /// manager is busy again and needs no wake-up.
    pub(super) fn awake(&self) {
        self.ring.header().reader_waiting.0.store(0, Ordering::SeqCst);
    }
}

/// The worker's side of a ring: appends and commits answers.
pub(super) struct Writer {
    ring: Ring,
    /// Bytes written, in all, committed or not.
    written: u64,
}

/// What a worker about to block for room should do.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Room {
    /// There is room now: write on.
    Free,
    /// Block until the manager's space frame comes. It is owed one even if
    /// room appeared meanwhile, when the manager took the flag first:
    /// reading it now leaves none over.
    AwaitSpace,
}

impl Writer {
    /// Maps the ring whose memory the pool passed as descriptor `fd`, and
    /// closes the descriptor (the mapping stays), so that programs a task
    /// starts do not inherit it. Refuses a descriptor that is not open or
    /// not a ring's file.
    pub(super) fn attach(fd: RawFd) -> io::Result<Writer> {
        if fd <= 2 {
            return Err(io::Error::other(format!("descriptor {fd} cannot be the answer ring")));
        }
        // SAFETY: F_GETFD only reads the descriptor's flags; on a number
        // that is not open it fails with EBADF and has no effect.
        if unsafe { libc::fcntl(fd, libc::F_GETFD) } == -1 {
            return Err(io::Error::other(format!("descriptor {fd} of the answer ring is not open")));
        }
        // SAFETY: `fd` is open (checked just above) and was named by the
        // pool's handshake, verified before this is called: it is the
        // ring's file, inherited by this process only, and nothing else in
        // the process knows of it, so taking ownership (and closing it when
        // done) takes it from no one.
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
        let stat = nix::sys::stat::fstat(fd.as_fd())?;
        let regular = (stat.st_mode & libc::S_IFMT) == libc::S_IFREG;
        if !regular || u64::try_from(stat.st_size).ok() != Some(LEN as u64) {
            return Err(io::Error::other("the descriptor passed as the answer ring is not one"));
        }
        Ok(Writer { ring: Ring::map(fd.as_fd())?, written: 0 })
    }

    /// A worker's side of the ring in `fd`, mapped in this process: the
    /// tests' stand-in for a worker.
    #[cfg(test)]
    pub(super) fn on(fd: BorrowedFd<'_>) -> io::Result<Writer> {
        Ok(Writer { ring: Ring::map(fd)?, written: 0 })
    }

    /// Whether the manager announced it blocks (for the tests).
    #[cfg(test)]
    pub(super) fn reader_waits(&self) -> bool {
        self.ring.header().reader_waiting.0.load(Ordering::SeqCst) != 0
    }

    /// Bytes that can be written now. An error if the manager's count is
    /// impossible.
    fn room(&self) -> io::Result<usize> {
        // Acquire: the manager's copy of those bytes is done before they
        // are overwritten.
        let consumed = self.ring.header().consumed.0.load(Ordering::Acquire);
        let used = self.written.wrapping_sub(consumed);
        if used > CAPACITY as u64 {
            return Err(io::Error::other("the answer ring's count of bytes taken is corrupt"));
        }
        // At most CAPACITY, checked above.
        Ok(CAPACITY - used as usize)
    }

    /// Writes as much of `bytes` as there is room for, without committing
    /// it; gives how much.
    pub(super) fn write(&mut self, bytes: &[u8]) -> io::Result<usize> {
        let n = bytes.len().min(self.room()?);
        self.ring.write_at(self.written, &bytes[..n]);
        self.written += n as u64;
        Ok(n)
    }

    /// Commits what was written, so the manager may take it, and whether
    /// it survives this process. `true` if the manager is blocked waiting
    /// for it (for `what`, or for anything): write it a wake-up byte.
    pub(super) fn commit(&mut self, what: Wake) -> bool {
        let header = self.ring.header();
        // Release: the bytes are in place before the count says so.
        header.committed.0.store(self.written, Ordering::Release);
        // Pairs with the manager's fence between announcing it blocks and
        // looking at `committed` again (module docs).
        fence(Ordering::SeqCst);
        let waiting = header.reader_waiting.0.load(Ordering::Relaxed);
        waiting >= what as u32 && header.reader_waiting.0.swap(0, Ordering::SeqCst) != 0
    }

    /// Announces that the worker is about to block until the manager
    /// frees room, unless there is room already.
    pub(super) fn await_room(&self) -> io::Result<Room> {
        let header = self.ring.header();
        header.writer_waiting.0.store(1, Ordering::SeqCst);
        // Pairs with the manager's fence between freeing room and looking
        // at `writer_waiting` (module docs).
        fence(Ordering::SeqCst);
        if self.room()? == 0 {
            return Ok(Room::AwaitSpace);
        }
        // Room after all: withdraw, unless the manager saw the flag first
        // and so sends a space frame.
        if header.writer_waiting.0.swap(0, Ordering::SeqCst) != 0 { Ok(Room::Free) } else { Ok(Room::AwaitSpace) }
    }
}

#[cfg(test)]
mod tests {
    use std::os::fd::{AsRawFd, IntoRawFd};

    use proptest::prelude::*;

    use super::*;

    /// A ring, and a worker's view of it through a second mapping, as two
    /// processes have them.
    fn pair() -> (Reader, Writer) {
        let (reader, fd) = Reader::create().expect("a ring");
        (reader, Writer::on(fd.as_fd()).expect("mapped again"))
    }

    fn take_all(reader: &mut Reader) -> Vec<u8> {
        let mut got = Vec::new();
        reader.take(&mut got).expect("a valid count");
        got
    }

    #[test]
    fn bytes_cross_in_order_around_the_end() {
        let (mut reader, mut writer) = pair();
        let (mut sent, mut got) = (Vec::new(), Vec::new());
        for round in 0..50_usize {
            let piece: Vec<u8> = (0..5_000 + round).map(|i| (i * 7 + round) as u8).collect();
            let mut rest = &piece[..];
            while !rest.is_empty() {
                let n = writer.write(rest).expect("room");
                assert!(!writer.commit(Wake::Answer), "nobody waits");
                rest = &rest[n..];
                reader.take(&mut got).expect("a valid count");
            }
            sent.extend_from_slice(&piece);
        }
        assert!(sent.len() > 3 * CAPACITY, "wrapped around");
        assert!(got == sent, "the bytes changed in transit");
    }

    #[test]
    fn a_full_ring_takes_no_more_and_its_reader_tells_the_waiting_writer() {
        let (mut reader, mut writer) = pair();
        assert_eq!(writer.write(&vec![1; CAPACITY + 10]).expect("room"), CAPACITY);
        writer.commit(Wake::Answer);
        assert_eq!(writer.write(&[2]).expect("a valid count"), 0);
        assert_eq!(writer.await_room().expect("a valid count"), Room::AwaitSpace);
        let mut got = Vec::new();
        let took = reader.take(&mut got).expect("a valid count");
        assert_eq!((took.bytes, took.wake_writer), (CAPACITY, true));
        assert_eq!(got, vec![1; CAPACITY]);
        // Told once only.
        assert!(!reader.take(&mut got).expect("a valid count").wake_writer);
        // Room at once: no space frame owed, and none sent.
        assert_eq!(writer.await_room().expect("a valid count"), Room::Free);
        assert_eq!(writer.write(&[2]).expect("room"), 1);
        writer.commit(Wake::Answer);
        let took = reader.take(&mut got).expect("a valid count");
        assert_eq!((took.bytes, took.wake_writer), (1, false));
    }

    #[test]
    fn a_waiting_reader_is_woken_once_and_only_for_what_it_waits_for() {
        let (mut reader, mut writer) = pair();
        assert!(reader.may_block(Wake::Answer));
        writer.write(&crate::codec::frames::ACK_FRAME).expect("room");
        assert!(!writer.commit(Wake::Any), "an acknowledgement does not wake a reader without a time limit");
        writer.write(b"answer").expect("room");
        assert!(writer.commit(Wake::Answer), "an answer does");
        writer.write(b"more").expect("room");
        assert!(!writer.commit(Wake::Answer), "once");
        // Something is committed: it must not block.
        assert!(!reader.may_block(Wake::Any));
        assert_eq!(take_all(&mut reader).len(), 5 + 6 + 4);
        assert!(!writer.commit(Wake::Answer), "the announcement was withdrawn");
        assert!(reader.may_block(Wake::Any));
        writer.write(b"A").expect("room");
        assert!(writer.commit(Wake::Any), "a reader with a time limit is woken by anything");
        reader.awake();
        writer.write(b"B").expect("room");
        assert!(!writer.commit(Wake::Answer), "an awake reader costs the writer nothing");
    }

    #[test]
    fn a_writer_refuses_an_impossible_count_of_bytes_taken() {
        let (_reader, mut writer) = pair();
        writer.ring.header().consumed.0.store(1, Ordering::SeqCst);
        assert!(writer.write(b"x").is_err());
        assert!(writer.await_room().is_err());
    }

    #[test]
    fn only_a_rings_file_is_attached() {
        let (_reader, fd) = Reader::create().expect("a ring");
        let copy = fd.try_clone().expect("dup").into_raw_fd();
        let mut writer = Writer::attach(copy).expect("the ring's file");
        assert_eq!(writer.write(b"x").expect("room"), 1);
        let (pipe, _) = io::pipe().expect("a pipe");
        assert!(Writer::attach(OwnedFd::from(pipe).into_raw_fd()).is_err());
        let short = std::fs::File::from(new_file().expect("a file"));
        short.set_len(10).expect("resized");
        assert!(Writer::attach(OwnedFd::from(short).into_raw_fd()).is_err());
        assert!(Writer::attach(1).is_err());
        assert!(Writer::attach(fd.as_raw_fd() + 1_000_000).is_err());
    }

    #[test]
    fn posix_shared_memory_serves_where_there_is_no_memfd() {
        let fd = new_posix_shm().expect("a shared memory object");
        let mut reader = Reader { ring: Ring::map(fd.as_fd()).expect("mapped"), consumed: 0 };
        let mut writer = Writer::on(fd.as_fd()).expect("mapped again");
        writer.write(b"hello").expect("room");
        writer.commit(Wake::Answer);
        assert_eq!(take_all(&mut reader), b"hello");
    }

    proptest! {
        /// Whatever count a broken or hostile worker publishes, the reader
        /// takes at most the ring's worth, exactly what the count says, or
        /// refuses it; it never panics.
        #[test]
        fn any_count_is_taken_within_the_ring_or_refused(
            consumed in any::<u64>(),
            ahead in prop_oneof![0..=CAPACITY as u64 + 2, any::<u64>()],
        ) {
            let (mut reader, writer) = pair();
            reader.consumed = consumed;
            writer.ring.header().committed.0.store(consumed.wrapping_add(ahead), Ordering::SeqCst);
            let mut got = Vec::new();
            match reader.take(&mut got) {
                Ok(took) => {
                    prop_assert!(ahead <= CAPACITY as u64);
                    prop_assert_eq!(took.bytes as u64, ahead);
                    prop_assert_eq!(got.len(), took.bytes);
                }
                Err(e) => {
                    prop_assert!(ahead > CAPACITY as u64);
                    prop_assert_eq!(e.kind(), io::ErrorKind::InvalidData);
                    prop_assert!(got.is_empty());
                }
            }
        }
    }
}
