//! The `fanfare` command line: `fanfare run …`, `fanfare agents list`.

mod cli;

fn main() -> std::process::ExitCode {
    cli::main()
}
