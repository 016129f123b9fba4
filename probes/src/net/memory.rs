//! Keeping a long-running agent's heap small. glibc gives threads that allocate at the same time
//! arenas of their own (up to 8 per core) and keeps what is freed in them: one agent of the
//! 50-agent bench had four arenas of about 4 MiB each, 30 to 37 MiB of RSS, against 24 MiB with
//! MALLOC_ARENA_MAX=1. Elsewhere (musl) these do nothing.

#![allow(unsafe_code)] // mallopt(3) and malloc_trim(3): glibc's own knobs, no safe wrapper exists.

/// At most two arenas from now on: call before the threads start.
pub fn few_arenas() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt takes two integers and changes only the allocator's settings.
    unsafe {
        libc::mallopt(libc::M_ARENA_MAX, 2);
    }
}

/// Hands the heap's free memory back to the kernel (after a burst, such as a mesh round).
pub fn give_back() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim only returns free pages; no pointer is touched.
    unsafe {
        libc::malloc_trim(0);
    }
}
