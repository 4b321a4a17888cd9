/// jemalloc rather than glibc's malloc: glibc keeps the memory a checkpoint frees (its
/// copy, image and verification, hundreds of megabytes each) in the writer thread's arena,
/// so the node's resident memory stayed ≈ 0.3 GiB higher between checkpoints at the same
/// throughput (perf-reports/2026-12-04-allocator.md).
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

fn main() -> std::process::ExitCode {
    tally::cli::run(std::env::args_os())
}
