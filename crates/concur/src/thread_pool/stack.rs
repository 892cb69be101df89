//! The size of the calling thread's stack, asked of the platform's thread
//! library: the one place the thread pool needs unsafe code.

/// The size of the calling thread's stack, in bytes: for a pool's worker,
/// what [`ThreadPoolBuilder::stack_size`](crate::ThreadPoolBuilder::stack_size) asked for, plus the room the
/// platform adds for thread-local storage, rounded up to a page. `None`
/// where the platform does not say (outside Linux).
pub fn current_stack_size() -> Option<usize> {
    #[cfg(target_os = "linux")]
    {
        let mut attr = std::mem::MaybeUninit::<libc::pthread_attr_t>::uninit();
        // SAFETY: `pthread_getattr_np` initialises `attr` for the calling
        // thread, which is alive, or fails and leaves it untouched.
        if unsafe { libc::pthread_getattr_np(libc::pthread_self(), attr.as_mut_ptr()) } != 0 {
            return None;
        }
        let mut size = 0;
        // SAFETY: `attr` was initialised above and is destroyed once, after
        // its last read.
        let got = unsafe {
            let got = libc::pthread_attr_getstacksize(attr.as_ptr(), &mut size);
            libc::pthread_attr_destroy(attr.as_mut_ptr());
            got
        };
        (got == 0).then_some(size)
    }
    #[cfg(not(target_os = "linux"))]
    None
}
