//! Stopping on request: Ctrl-C (SIGINT) or SIGTERM cancels what is in flight (`run`
//! still prints the report of what had ended) and exits 130 or 143; a second signal
//! while that happens exits at once.

use std::fmt;

/// What asked the process to stop.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Signal {
    /// Ctrl-C.
    Interrupt,
    /// SIGTERM (a service manager, `kill`).
    Terminate,
}

impl Signal {
    /// The conventional exit code: 128 + the signal number.
    pub fn exit_code(self) -> u8 {
        match self {
            Signal::Interrupt => 130,
            Signal::Terminate => 143,
        }
    }
}

impl fmt::Display for Signal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Signal::Interrupt => "Ctrl-C",
            Signal::Terminate => "SIGTERM",
        })
    }
}

/// The command stopped because of a signal; `main` exits with its code.
#[derive(Debug, thiserror::Error)]
#[error("interrupted by {signal}; {what}")]
pub struct Interrupted {
    /// The signal.
    pub signal: Signal,
    /// What happened to the work in flight.
    pub what: String,
}

async fn next_signal() -> Signal {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        if let Ok(mut term) = signal(SignalKind::terminate()) {
            return tokio::select! {
                _ = tokio::signal::ctrl_c() => Signal::Interrupt,
                _ = term.recv() => Signal::Terminate,
            };
        }
    }
    let _ = tokio::signal::ctrl_c().await;
    Signal::Interrupt
}

/// Resolves at the first Ctrl-C or SIGTERM. From then on, a second one exits the
/// process at once (whatever is still being cleaned up).
pub async fn stop_requested() -> Signal {
    let first = next_signal().await;
    tokio::spawn(async move {
        let second = next_signal().await;
        eprintln!("fanfare: {second} again; exiting now");
        std::process::exit(i32::from(first.exit_code()));
    });
    first
}
