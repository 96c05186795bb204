/// mimalloc instead of glibc's malloc: the proxy allocates and frees many
/// small buffers per request from two or more threads, where glibc's arenas
/// showed up as about 5 % of the CPU profile of the injecting proxy
/// (`perf record` during `benches/load.sh`). A kept library, not our code.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    tagproxy::cli::main()
}
