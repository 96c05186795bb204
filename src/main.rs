// jemalloc instead of glibc's malloc: under the collector's load glibc
// spent ~45 % of the process's CPU in malloc/free and in its arena locks
// (perf, `benches/collector.sh`), while jemalloc's per-thread caches take
// no lock on the hot path. Its settings (`_rjem_malloc_conf` below) keep
// memory near glibc's: two arenas and dirty pages returned after a second.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

/// jemalloc's start-up options (read once, before the first allocation):
/// two arenas for the whole process instead of four per core, dirty pages
/// purged after 1 s and muzzy ones at once, by jemalloc's own background
/// thread so the purge never runs on a request.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
#[allow(non_upper_case_globals)]
#[export_name = "_rjem_malloc_conf"]
pub static malloc_conf: &[u8] =
    b"narenas:2,background_thread:true,dirty_decay_ms:1000,muzzy_decay_ms:0\0";

fn main() -> std::process::ExitCode {
    tagproxy::cli::main()
}
