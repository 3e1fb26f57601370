//! The one benchmark command; see `switchboard_bench::driver`.

fn main() -> std::process::ExitCode {
    switchboard_bench::driver::main()
}
