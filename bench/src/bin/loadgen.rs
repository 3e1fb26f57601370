//! The load generator; see `switchboard_bench::loadgen`.

fn main() -> std::process::ExitCode {
    switchboard_bench::loadgen::main()
}
