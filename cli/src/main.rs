//! The `fanfare` command line: `run`, `batch`, `serve`, `submit`, `watch`, `worker`,
//! `cluster status`, `mock-llm`, `bench`, `agents list`, `workflows list|show`,
//! `limits list|clear`.
//!
//! # Layout
//! - `args/`: the grammar (clap), help text and value parsers;
//! - `live`: a run shown live while it goes on;
//! - `setup`: from flags to a started runtime (specs, provider stack, prices, request);
//! - `limits`: the default ceiling on calls in flight, and the learned limits kept
//!   between runs;
//! - `commands/`: one module per command.
//!
//! Exit codes: 0 success, 1 the run did not succeed, 2 bad input or configuration.

mod approve;
mod args;
mod commands;
mod input;
mod limits;
mod live;
mod output;
mod plan;
mod setup;
mod signals;
mod tools;

use std::process::ExitCode;

/// With the `mimalloc` feature (on by default), the binary allocates with mimalloc:
/// at 10,000 branches it halves the overhead (BENCHMARKS.md). It is built without
/// transparent huge pages (see `cli/Cargo.toml`).
#[cfg(feature = "mimalloc")]
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Makes the allocator give freed memory back to the OS at once rather than after
/// a delay: a long-lived `serve` went from 19 to 537 MB resident under a burst of
/// short requests and stayed there, the pages kept for reuse (BENCHMARKS.md, "A
/// long-lived server returns memory"). Short-lived commands keep the default, which
/// costs fewer system calls on a fan-out's churn.
fn return_memory_promptly() {
    #[cfg(feature = "mimalloc")]
    {
        /// `mi_option_purge_delay` in mimalloc's `mi_option_t` (libmimalloc-sys
        /// declares `mi_option_set` but not this option's constant).
        const MI_OPTION_PURGE_DELAY: libmimalloc_sys::mi_option_t = 15;
        // SAFETY: setting an option is allowed at any time; the value (0: purge
        // freed memory at once) is one mimalloc documents for it.
        unsafe { libmimalloc_sys::mi_option_set(MI_OPTION_PURGE_DELAY, 0) };
    }
}

use args::{AgentsCommand, Cli, ClusterCommand, Command, LimitsCommand, WorkflowsCommand};
use clap::Parser as _;

/// Parses arguments, runs the command, and maps the result to an exit code:
/// 0 success, 1 the run did not succeed, 2 bad input or configuration, 130/143
/// interrupted by Ctrl-C / SIGTERM.
fn main() -> ExitCode {
    let cli = Cli::parse();
    // A panicking agent is caught and recorded as a failed branch, with a warning
    // that says so: the hook leaves those to it (it printed them a second time).
    // Any other panic is told in one line, through the live view if one is drawn.
    std::panic::set_hook(Box::new(|info| {
        if fanfare::agent::panic_is_caught() {
            return;
        }
        let what = info.payload_as_str().unwrap_or("non-string panic payload");
        let at = info
            .location()
            .map(|l| format!(" at {}:{}", l.file(), l.line()))
            .unwrap_or_default();
        live::console::write(format!("fanfare: panicked{at}: {what}\n").as_bytes());
    }));
    // Benchmarks provoke what other commands warn about (panics, restarts): quieter.
    let default_level = if matches!(cli.command, Command::Bench { .. }) {
        "error"
    } else {
        "warn"
    };
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default_level)),
        )
        // Through the live view while one is drawn, so that a line does not tear it.
        .with_writer(live::console::Lines)
        // Colour codes only on a terminal, never into a log file.
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("fanfare: cannot start the async runtime: {e}");
            return ExitCode::from(2);
        }
    };
    if matches!(cli.command, Command::Serve(_) | Command::Worker(_)) {
        return_memory_promptly();
    }
    let result = runtime.block_on(async {
        match cli.command {
            Command::Run(args) => commands::run::run(*args).await,
            Command::Serve(args) => commands::serve::serve(*args).await,
            Command::Submit(args) => commands::submit::submit(*args).await,
            Command::Worker(args) => commands::worker::worker(*args).await,
            Command::Cluster { command } => match command {
                ClusterCommand::Status { json, client } => {
                    commands::cluster::status(json, &client).await
                }
            },
            Command::Approvals { command } => commands::approvals::approvals(command).await,
            Command::Watch { id, json, client } => {
                commands::submit::watch(&id, json, &client).await
            }
            Command::MockLlm(args) => commands::mock_llm::mock_llm(args).await,
            Command::Batch(args) => commands::batch::batch(*args).await,
            Command::Bench { command } => commands::bench::bench(command).await.map(|()| true),
            Command::Agents {
                command:
                    AgentsCommand::List {
                        agents,
                        allow_prompts_outside,
                    },
            } => commands::agents::list_agents(agents.as_deref(), allow_prompts_outside)
                .map(|()| true),
            Command::Workflows { command } => match command {
                WorkflowsCommand::List => commands::workflows::list(),
                WorkflowsCommand::Show { name, agents } => {
                    commands::workflows::show(&name, agents.as_deref())
                }
            }
            .map(|()| true),
            Command::Limits { command } => match command {
                LimitsCommand::List { json } => commands::limits::list(json),
                LimitsCommand::Clear => commands::limits::clear(),
            }
            .map(|()| true),
        }
    });
    match result {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::from(1),
        Err(e) => {
            eprintln!("fanfare: {e:#}");
            match e.downcast_ref::<signals::Interrupted>() {
                Some(i) => ExitCode::from(i.signal.exit_code()),
                None => ExitCode::from(2),
            }
        }
    }
}
