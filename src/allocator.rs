//! The C allocator's settings (glibc's malloc serves Rust's allocations and RocksDB's alike), and
//! handing the memory it holds free back to the system.

use std::time::Duration;

/// glibc raises its mmap threshold each time a large block is freed, after which such blocks come
/// from heaps that are rarely given back: each 19 MiB argon2 buffer then stays resident, and a few
/// hundred logins pin gigabytes. A fixed threshold keeps every block of 128 KiB or more (argon2's
/// buffers, RocksDB's memtable blocks, large responses) in its own mapping, returned to the system
/// when freed. Each thread that allocates would also get a heap of its own (up to eight per core),
/// each holding free fragments: two heaps save about 3 MiB under the benchmark's load at the same
/// send rate (a single heap cost a quarter of it).
///
/// Call before any other thread starts.
pub fn configure() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only sets allocator parameters; the caller runs it before other threads start.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 128 << 10);
        libc::mallopt(libc::M_ARENA_MAX, 2);
    }
}

/// How long freed memory may stay resident before it is handed back.
const RETURN_EVERY: Duration = Duration::from_secs(1);

/// Starts a thread that hands free heap pages back to the system every second. glibc gives back
/// only the free top of a heap; pages freed below blocks still in use stay resident until reused:
/// about 3 MiB after a burst of syncs and history pages, on a server whose steady state is a few
/// times that. `malloc_trim` returns every whole free page inside the heaps (the blocks stay
/// free, their pages are faulted in again when reused). It holds each heap's lock while it walks
/// that heap's free lists, which takes well under a millisecond at these sizes; a thread of its
/// own keeps even that off the request workers.
pub fn return_free_memory_periodically() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        let started = std::thread::Builder::new().name("myelin-trim".into()).spawn(|| {
            loop {
                std::thread::sleep(RETURN_EVERY);
                // SAFETY: malloc_trim only takes glibc's own locks; it is safe from any thread.
                unsafe { libc::malloc_trim(0) };
            }
        });
        if let Err(e) = started {
            tracing::warn!(error = %e, "cannot start the thread that returns free memory");
        }
    }
    #[cfg(not(all(target_os = "linux", target_env = "gnu")))]
    let _ = RETURN_EVERY;
}
