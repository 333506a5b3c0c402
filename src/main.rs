//! The `fanfare` command line: `run`, `batch`, `mock-llm`, `bench`, `agents list`.

mod bench;
mod cli;

fn main() -> std::process::ExitCode {
    cli::main()
}
