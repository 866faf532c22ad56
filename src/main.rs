use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    release_large_allocations_to_the_system();
    myelin::cli::run(myelin::cli::Cli::parse())
}

/// glibc raises its mmap threshold each time a large block is freed, after which such blocks come
/// from heaps that are rarely given back: each 19 MiB argon2 buffer then stays resident, and a few
/// hundred logins pin gigabytes. A fixed threshold keeps every block of 128 KiB or more (argon2's
/// buffers, RocksDB's memtable blocks, large responses) in its own mapping, returned to the system
/// when freed. Each thread that allocates would also get a heap of its own (up to eight per core),
/// each holding free fragments: two heaps save about 3 MiB under the benchmark's load at the same
/// send rate (a single heap cost a quarter of it).
fn release_large_allocations_to_the_system() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only sets allocator parameters; it is called before any other thread starts.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 128 << 10);
        libc::mallopt(libc::M_ARENA_MAX, 2);
    }
}
