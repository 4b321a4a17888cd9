/// jemalloc rather than glibc's malloc: with glibc the node's resident memory stayed
/// 0.4–0.7 GiB higher between checkpoints at the same throughput, most likely the memory
/// a checkpoint frees (its copy, image and verification, hundreds of megabytes each) kept
/// in the writer thread's arena (perf-reports/2026-12-04-allocator.md).
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

/// jemalloc's options, read when it starts: freed pages go back to the system after about
/// a second (`dirty_decay_ms`; jemalloc's default keeps them ten seconds, which spans a
/// checkpoint), and background threads do that returning, not the pipeline's threads
/// as they allocate. `_RJEM_MALLOC_CONF` in the environment overrides them.
static MALLOC_CONF: &[u8] = b"background_thread:true,dirty_decay_ms:1000,muzzy_decay_ms:0\0";

/// The C string jemalloc looks for under this name (a `const char *`).
#[unsafe(export_name = "_rjem_malloc_conf")]
static MALLOC_CONF_POINTER: &u8 = &MALLOC_CONF[0];

fn main() -> std::process::ExitCode {
    tally::cli::run(std::env::args_os())
}
