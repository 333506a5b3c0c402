//! Where a running `fanfare serve` is, for its clients (`submit`, `watch`,
//! `cluster status`).

use std::path::PathBuf;

/// Where the server is.
#[derive(clap::Args)]
pub struct ClientArgs {
    /// The server's address.
    #[arg(
        long,
        env = "FANFARE_SERVER",
        default_value = "http://127.0.0.1:7878",
        value_name = "URL"
    )]
    pub server: String,
    /// File holding the server's bearer token [default: $FANFARE_TOKEN].
    #[arg(long, value_name = "F")]
    pub token_file: Option<PathBuf>,
}
