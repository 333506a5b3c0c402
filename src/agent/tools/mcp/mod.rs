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
//! level under the target `fanfare::mcp`, and its last lines name why it exited. It
//! does not inherit this process's environment (where the model providers' API keys
//! are): only what a program needs to run (`PATH`, `HOME`, the locale, proxies and
//! certificates, `npm_config_*`), plus what its command line assigns
//! (`NAME=TOKEN=… npx …`, as a shell would) or [`McpServer::env`] gives.
//!
//! Layout: this file is the configuration; `actor` the supervised child; `link` what
//! the child shares with the tools (the connection and the tool list) and the tools;
//! `stdio` a stdio server's process and transport.

mod actor;
mod link;
mod stdio;

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
    dir: Option<std::path::PathBuf>,
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
        /// Variables set in its environment (beyond the few it inherits).
        env: Vec<(String, String)>,
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
                env: Vec::new(),
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
            dir: None,
        })
    }

    /// Parses `NAME=URL` (`http://` or `https://`) or `NAME=COMMAND [ARGS…]`, the
    /// command line split as a POSIX shell would split it (quotes and backslashes;
    /// nothing is expanded); words before the program of the form `VAR=VALUE` set
    /// variables of its environment, as in a shell.
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
        let assigned = words.iter().take_while(|w| is_assignment(w)).count();
        let env: Vec<(String, String)> = words
            .drain(..assigned)
            .filter_map(|w| w.split_once('=').map(|(k, v)| (k.to_owned(), v.to_owned())))
            .collect();
        if words.first().is_none_or(|w| w.is_empty()) {
            return Err(McpConfigError::Empty(name.to_owned()));
        }
        let program = words.remove(0);
        let mut server = Self::stdio(name, program, words)?;
        for (key, value) in env {
            server = server.env(key, value);
        }
        Ok(server)
    }

    /// Sets `key` to `value` in a stdio server's environment (nothing for a server
    /// reached over HTTP).
    pub fn env(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        if let McpTransport::Stdio { env, .. } = &mut self.transport {
            env.push((key.into(), value.into()));
        }
        self
    }

    /// Bounds the connection's handshake and first tool list (default 30 s).
    pub fn handshake_timeout(mut self, timeout: Duration) -> Self {
        self.handshake_timeout = timeout;
        self
    }

    /// Runs a stdio server in `dir` (default: this process's working directory), so
    /// the relative paths of its command line mean what they meant where it was
    /// written (a spec directory's `fanfare.toml`, say).
    pub fn current_dir(mut self, dir: impl Into<std::path::PathBuf>) -> Self {
        self.dir = Some(dir.into());
        self
    }

    /// The directory a stdio server runs in, if not this process's.
    pub fn dir(&self) -> Option<&std::path::Path> {
        self.dir.as_deref()
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
            McpTransport::Stdio { program, args, env } => {
                // Values set in its environment may be secrets: named, not shown.
                let assigned = env.iter().map(|(k, _)| format!("{k}=…"));
                let words = assigned.chain(
                    std::iter::once(program)
                        .chain(args)
                        .map(|w| shell_words::quote(w).into_owned()),
                );
                write!(f, "{}={}", self.name, words.collect::<Vec<_>>().join(" "))
            }
            McpTransport::Http { url } => write!(f, "{}={}", self.name, shown_url(url)),
        }
    }
}

/// An MCP server's URL as it may be shown: without credentials, and its query's
/// values hidden (`?token=…` is how many servers take a key).
pub(crate) fn shown_url(url: &str) -> String {
    match reqwest::Url::parse(url) {
        Ok(mut u) => {
            let _ = u.set_username("");
            let _ = u.set_password(None);
            let hidden: Vec<String> = u.query_pairs().map(|(k, _)| format!("{k}=…")).collect();
            u.set_query(None);
            if hidden.is_empty() {
                u.to_string()
            } else {
                format!("{u}?{}", hidden.join("&"))
            }
        }
        Err(_) => "(an MCP server URL that does not parse)".to_owned(),
    }
}

/// `text` (an error from the HTTP stack, say) with `url`'s secrets hidden: the URL
/// whole, its password and its query.
pub(crate) fn scrub_url(text: &str, url: &str) -> String {
    let shown = shown_url(url);
    let mut text = text.replace(url, &shown);
    if let Ok(u) = reqwest::Url::parse(url) {
        text = text.replace(u.as_str(), &shown);
        if let Some(query) = u.query().filter(|q| !q.is_empty()) {
            text = text.replace(query, "…");
        }
        if let Some(password) = u.password().filter(|p| !p.is_empty()) {
            text = text.replace(password, "…");
        }
    }
    text
}

/// Whether `word` is a shell's `VAR=VALUE` assignment.
fn is_assignment(word: &str) -> bool {
    word.split_once('=').is_some_and(|(k, _)| {
        k.chars()
            .next()
            .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
            && k.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
    })
}

/// Whether a variable of this process's environment is passed on to a stdio
/// server: what programs need to run, not what this process keeps (API keys).
pub(crate) fn inherited(key: &str) -> bool {
    const NAMES: &[&str] = &[
        "PATH",
        "HOME",
        "USER",
        "LOGNAME",
        "SHELL",
        "TERM",
        "LANG",
        "TZ",
        "TMPDIR",
        "HTTP_PROXY",
        "HTTPS_PROXY",
        "NO_PROXY",
        "http_proxy",
        "https_proxy",
        "no_proxy",
        "SSL_CERT_FILE",
        "SSL_CERT_DIR",
        "NODE_EXTRA_CA_CERTS",
    ];
    const PREFIXES: &[&str] = &["LC_", "XDG_", "npm_config_", "NPM_CONFIG_"];
    NAMES.contains(&key) || PREFIXES.iter().any(|p| key.starts_with(p))
}

impl std::str::FromStr for McpServer {
    type Err = McpConfigError;

    fn from_str(s: &str) -> Result<Self, McpConfigError> {
        Self::parse(s)
    }
}

#[cfg(test)]
mod tests;
