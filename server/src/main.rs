fn main() -> std::process::ExitCode {
    tally::cli::run(std::env::args_os())
}
