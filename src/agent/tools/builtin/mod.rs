//! Built-in tools a runtime may offer (`FanfareBuilder::tool`), each confined by
//! what it is built with: [`read_file`] reads under one root directory and nowhere
//! else, [`http_get`] fetches only from hosts on its allow-list. A spec agent opts in
//! by naming them (`tools = ["read_file"]`); a runtime without them refuses such a
//! spec.
//!
//! Layout: one file per tool.

mod http_get;
mod read_file;

pub use http_get::{http_get, HttpGet};
pub use read_file::{read_file, ReadFile};

/// Why a built-in tool could not be built.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BuiltinError {
    /// `read_file`'s root is not a directory that can be read.
    #[error("read_file: the root `{root}` is not a readable directory: {reason}")]
    BadRoot {
        /// The root, as given.
        root: std::path::PathBuf,
        /// Why.
        reason: String,
    },
    /// An `http_get` allow-list entry is not a host name.
    #[error("http_get: `{0}` is not a host (`example.com`, `*.example.com`, `127.0.0.1:8080`)")]
    BadHost(String),
    /// `http_get` was given no host to fetch from.
    #[error("http_get: no allowed host (give at least one)")]
    NoHosts,
    /// The HTTP client could not be built.
    #[error("http_get: {0}")]
    Client(String),
}

#[cfg(test)]
mod tests;
