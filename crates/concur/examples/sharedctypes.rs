//! Listing 14, "sharedctypes": a number and an array in memory that two
//! processes share.
//!
//! Python's `Value('d', 0.0)` and `Array('i', range(10))` live in shared
//! memory. Here that memory is an anonymous `MAP_SHARED` mapping made
//! before `fork()`: unlike the rest of the parent's memory, which the child
//! gets a copy of (see the `forks` example), a shared mapping is the same
//! pages in both processes. The child sets the number to 3.1415927 and
//! negates every element; the parent waits for the child and prints what
//! the child wrote:
//!
//! ```text
//! 3.1415927
//! [0, -1, -2, -3, -4, -5, -6, -7, -8, -9]
//! ```
//!
//! Run it with:
//!
//! ```text
//! cargo run -p concur --example sharedctypes
//! ```

use std::io::Write;
use std::num::NonZeroUsize;
use std::sync::atomic::{AtomicI32, AtomicU64, Ordering};

use nix::sys::mman::{MapFlags, ProtFlags, mmap_anonymous, munmap};
use nix::sys::wait::waitpid;
use nix::unistd::{ForkResult, fork};

/// What the two processes share: an `f64` (as its bits) and ten `i32`s.
/// Atomics, like the lock Python's `Value` and `Array` carry, because two
/// processes may touch them; atomics of these sizes are lock-free, so they
/// work across processes as across threads.
#[repr(C)]
struct Shared {
    num: AtomicU64,
    arr: [AtomicI32; 10],
}

/// The value the listing stores: the float nearest 3.1415927, not π.
#[expect(clippy::approx_constant, reason = "the listing's own value")]
const VALUE: f64 = 3.1415927;

/// The child's work: Python's `f(n, a)`.
fn f(n: &AtomicU64, a: &[AtomicI32]) {
    n.store(VALUE.to_bits(), Ordering::Relaxed);
    for x in a {
        x.store(-x.load(Ordering::Relaxed), Ordering::Relaxed);
    }
}

fn main() {
    let len = NonZeroUsize::new(size_of::<Shared>()).expect("Shared is not empty");
    // SAFETY: a new mapping at an address of the kernel's choosing
    // overlaps nothing of ours.
    let memory =
        unsafe { mmap_anonymous(None, len, ProtFlags::PROT_READ | ProtFlags::PROT_WRITE, MapFlags::MAP_SHARED) }
            .expect("shared memory is mapped");
    // SAFETY: the mapping is page-aligned (enough for `Shared`), at least
    // `size_of::<Shared>()` bytes, and zero-filled, which is a valid
    // `Shared` (all atomics 0). It stays mapped until the `munmap` below,
    // after the last use of `shared`; only shared references are made, and
    // all access is atomic.
    let shared: &Shared = unsafe { memory.cast::<Shared>().as_ref() };
    shared.num.store(0.0_f64.to_bits(), Ordering::Relaxed);
    for (x, i) in shared.arr.iter().zip(0..) {
        x.store(i, Ordering::Relaxed);
    }

    std::io::stdout().flush().expect("stdout flushed");
    // SAFETY: this program has one thread, so the child's copy of it holds
    // no lock that another thread could have taken.
    match unsafe { fork() }.expect("fork") {
        ForkResult::Child => {
            f(&shared.num, &shared.arr);
            // Leave without running anything else of the parent's program.
            std::process::exit(0);
        }
        ForkResult::Parent { child } => {
            // The child's writes are all done before it exits, and waitpid
            // returns only after that: every store happens before the loads
            // below.
            waitpid(child, None).expect("the child is reaped");
            println!("{}", f64::from_bits(shared.num.load(Ordering::Relaxed)));
            let arr: Vec<i32> = shared.arr.iter().map(|x| x.load(Ordering::Relaxed)).collect();
            println!("{arr:?}");
            // SAFETY: `shared` is not used after this; the child is gone.
            unsafe { munmap(memory, len.get()) }.expect("shared memory is unmapped");
        }
    }
}
