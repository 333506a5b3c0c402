//! MCP servers as tools, through the official SDK (`rmcp`).
//!
//! An [`McpServer`] is a name and a way to reach it: a command run as a child process
//! speaking MCP on its stdin and stdout, or a streamable-HTTP URL. The runtime
//! (`FanfareBuilder::mcp`) puts each server under the same supervisor as the
//! specialists, as a child named `mcp:NAME`: its actor connects (the handshake and
//! the tool list are bounded by [`McpServer::handshake_timeout`]), and when the server
//! exits or its connection closes the actor stops with the reason, so the supervisor
//! restarts it with the specialists' intensity and backoff and opens its circuit when
//! it keeps dying. Every restart fetches the tool list again.
//!
//! A spec agent offers a server's tools by naming them `NAME.*` (all of them) or
//! `NAME.TOOL` (one). The model sees them as `NAME__TOOL` (the wires take only
//! letters, digits, `_` and `-` in a tool's name). A call is a tool call like any
//! other: checked against the tool's input schema, cut by the branch's deadline (the
//! server is sent `notifications/cancelled`), and a server that is down, restarting or
//! dies mid-call fails that call only, as a tool error the model reads.
//!
//! A stdio server runs in a process group of its own, which is killed when its actor
//! stops (so `npx …` takes its node process with it); its stderr is logged at debug
//! level under the target `fanfare::mcp`, and its last lines name why it exited.
//!
//! Layout: this file is the configuration; `actor` the supervised child; `link` what
//! the child shares with the tools (the connection and the tool list) and the tools.

mod actor;
mod link;

use std::time::Duration;

pub(crate) use link::Link;

/// The separator between a server's name and its tool's in the name the model sees.
pub const WIRE_SEPARATOR: &str = "__";

/// An MCP server the runtime's agents may call tools of.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct McpServer {
    name: String,
    transport: McpTransport,
    handshake_timeout: Duration,
}

/// How to reach an MCP server.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum McpTransport {
    /// A command run as a child process, speaking MCP on stdin and stdout.
    Stdio {
        /// The program.
        program: String,
        /// Its arguments.
        args: Vec<String>,
    },
    /// A streamable-HTTP endpoint.
    Http {
        /// Its URL (`http://` or `https://`).
        url: String,
    },
}

/// Why an MCP server's description was refused.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum McpConfigError {
    /// No `=` between the name and the command or URL.
    #[error("an MCP server is given as NAME=COMMAND [ARGS…] or NAME=URL, not `{0}`")]
    NoName(String),
    /// The name is not a short identifier.
    #[error(
        "MCP server name `{0}` must be 1 to 32 letters, digits, `_` or `-`, without `__` (tools are offered as NAME.TOOL)"
    )]
    BadName(String),
    /// Nothing after the `=`.
    #[error("MCP server `{0}`: no command or URL after `=`")]
    Empty(String),
    /// The command line's quoting is unbalanced.
    #[error("MCP server `{name}`: the command line {problem}")]
    BadCommand {
        /// The server.
        name: String,
        /// What is wrong.
        problem: String,
    },
}

impl McpServer {
    /// A server run as `program args…` (stdio).
    pub fn stdio(
        name: impl Into<String>,
        program: impl Into<String>,
        args: impl IntoIterator<Item = impl Into<String>>,
    ) -> Result<Self, McpConfigError> {
        Self::new(
            name.into(),
            McpTransport::Stdio {
                program: program.into(),
                args: args.into_iter().map(Into::into).collect(),
            },
        )
    }

    /// A server at a streamable-HTTP `url`.
    pub fn http(name: impl Into<String>, url: impl Into<String>) -> Result<Self, McpConfigError> {
        Self::new(name.into(), McpTransport::Http { url: url.into() })
    }

    fn new(name: String, transport: McpTransport) -> Result<Self, McpConfigError> {
        let good = (1..=32).contains(&name.len())
            && !name.contains(WIRE_SEPARATOR)
            && name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
        if !good {
            return Err(McpConfigError::BadName(name));
        }
        Ok(Self {
            name,
            transport,
            handshake_timeout: Duration::from_secs(30),
        })
    }

    /// Parses `NAME=URL` (`http://` or `https://`) or `NAME=COMMAND [ARGS…]`, the
    /// command line split as a POSIX shell would split it (quotes and backslashes;
    /// nothing is expanded).
    pub fn parse(text: &str) -> Result<Self, McpConfigError> {
        let (name, rest) = text
            .split_once('=')
            .ok_or_else(|| McpConfigError::NoName(text.to_owned()))?;
        let (name, rest) = (name.trim(), rest.trim());
        if rest.is_empty() {
            return Err(McpConfigError::Empty(name.to_owned()));
        }
        if rest.starts_with("http://") || rest.starts_with("https://") {
            return Self::http(name, rest);
        }
        let mut words = shell_words::split(rest).map_err(|e| McpConfigError::BadCommand {
            name: name.to_owned(),
            problem: e.to_string(),
        })?;
        if words.first().is_none_or(|w| w.is_empty()) {
            return Err(McpConfigError::Empty(name.to_owned()));
        }
        let program = words.remove(0);
        Self::stdio(name, program, words)
    }

    /// Bounds the connection's handshake and first tool list (default 30 s).
    pub fn handshake_timeout(mut self, timeout: Duration) -> Self {
        self.handshake_timeout = timeout;
        self
    }

    /// Its name (tools are named `NAME.TOOL` in specs).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// How it is reached.
    pub fn transport(&self) -> &McpTransport {
        &self.transport
    }

    /// The supervised child's name among the specialists.
    pub(crate) fn child_name(&self) -> String {
        format!("mcp:{}", self.name)
    }
}

/// The actor that keeps `server` connected, and its arguments; the runtime spawns
/// it as the specialist `mcp:NAME` (and again for every restart).
pub(crate) fn child(
    server: std::sync::Arc<McpServer>,
    link: std::sync::Arc<Link>,
) -> (actor::McpActor, actor::McpArgs) {
    (actor::McpActor, actor::McpArgs { server, link })
}

impl std::fmt::Display for McpServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.transport {
            McpTransport::Stdio { program, args } => {
                write!(
                    f,
                    "{}={}",
                    self.name,
                    shell_words::join(std::iter::once(program).chain(args))
                )
            }
            McpTransport::Http { url } => write!(f, "{}={url}", self.name),
        }
    }
}

impl std::str::FromStr for McpServer {
    type Err = McpConfigError;

    fn from_str(s: &str) -> Result<Self, McpConfigError> {
        Self::parse(s)
    }
}

#[cfg(test)]
mod tests;
