fn main() -> std::process::ExitCode {
    tagproxy::cli::main()
}
