//! `fanfare serve`: a long-lived orchestrator process. Clients submit runs over HTTP,
//! follow them as Server-Sent Events, fetch their reports and cancel them; every
//! accepted run and every event is in a SQLite journal first, so a crash or a
//! restart loses nothing: unfinished runs resume at the next start.
//!
//! ```no_run
//! # async fn demo(fanfare: fanfare::Fanfare) -> Result<(), fanfare_serve::ServeError> {
//! use fanfare_serve::{Catalog, ServeConfig, Server};
//! let config = ServeConfig::new("fanfare.db");
//! let server = Server::start(fanfare, Catalog::default(), config).await?;
//! println!("listening on {}", server.local_addr());
//! let (_stop, stopped) = tokio::sync::oneshot::channel::<()>();
//! // Serves until `_stop` is used or dropped (a binary would wait for Ctrl-C).
//! server.run(async { let _ = stopped.await; }).await?;
//! # Ok(()) }
//! ```
//!
//! # Layout
//! - `spec`: what a client submits ([`RunSpec`]) and the runtime request it becomes;
//! - `queue`: runs in progress and waiting, a pure state machine;
//! - `journal/`: the SQLite journal and its migrations;
//! - `limits`: the admission gate's learned limits, kept in the journal across
//!   restarts;
//! - `runs`: the run manager (submit, drive, cancel, drain, resume);
//! - `metrics`: what `/metrics` reports;
//! - `api/`: the routes, the token check, the event streams, the OpenAI-compatible
//!   endpoint.
//!
//! The runtime ([`fanfare::Fanfare`]) is started by the caller with its agents and
//! provider and handed in; the server shuts it down last.

mod api;
pub mod journal;
mod limits;
mod metrics;
mod queue;
mod runs;
pub mod spec;

use std::future::Future;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use fanfare::Fanfare;

pub use journal::{Journal, JournalError, Status};
pub use spec::{ApprovalDefault, Catalog, Defaults, FieldError, RunSpec};

/// A bearer token clients must present. Its `Debug` does not show it.
#[derive(Clone, PartialEq, Eq)]
pub struct Token(String);

impl Token {
    /// A token; surrounding whitespace is dropped. `None` when empty.
    pub fn new(text: &str) -> Option<Token> {
        let t = text.trim();
        (!t.is_empty()).then(|| Token(t.to_owned()))
    }

    /// Reads a token from a file (its first line that is not blank).
    pub fn from_file(path: &Path) -> Result<Token, ServeError> {
        let text = std::fs::read_to_string(path).map_err(|source| ServeError::TokenFile {
            path: path.to_owned(),
            source,
        })?;
        // The first line with anything on it: a file that starts with a blank line
        // was called empty.
        let line = text.lines().find(|l| !l.trim().is_empty()).unwrap_or("");
        let token = Token::new(line).ok_or_else(|| ServeError::EmptyToken {
            path: path.to_owned(),
        })?;
        // As the cluster's cookie: one character was accepted, and guessed at once.
        if token.0.chars().count() < Token::MIN_CHARS {
            return Err(ServeError::ShortToken {
                path: path.to_owned(),
            });
        }
        Ok(token)
    }

    /// The fewest characters a token file's token may have.
    pub const MIN_CHARS: usize = 16;

    pub(crate) fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for Token {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Token(<redacted>)")
    }
}

/// How to serve.
#[derive(Clone, Debug)]
pub struct ServeConfig {
    /// Where to listen (default 127.0.0.1:7878; port 0 picks a free one).
    pub listen: SocketAddr,
    /// The journal file.
    pub db: PathBuf,
    /// The bearer token; required to listen on anything but loopback.
    pub token: Option<Token>,
    /// Most runs in progress at once.
    pub max_running: usize,
    /// Most runs waiting for a slot; more are refused with 429.
    pub max_queued: usize,
    /// How long a shutdown waits for runs in progress before interrupting them.
    pub drain: Duration,
    /// Largest request body, bytes.
    pub body_limit: usize,
    /// Most event streams open at once; more are answered 503 with `Retry-After`.
    pub max_streams: usize,
    /// A connection whose client has not read for this long while the server
    /// writes is closed (an event stream's events are then freed).
    pub write_stall: Duration,
    /// A request's headers must arrive within this (a client sending them a byte at
    /// a time held a connection for as long as it liked).
    pub header_timeout: Duration,
    /// Most connections open at once; more wait to be accepted. Keep it well under
    /// the process's open-file limit: the journal and the provider calls need files
    /// too.
    pub max_connections: usize,
    /// New runs are refused (503) while the journal's file system has less free
    /// than this, bytes: a run writes its answers several times over, and a full
    /// disk stops every run (0: no floor).
    pub min_free_disk: u64,
    /// What a submitted run gets for what it leaves out.
    pub defaults: Defaults,
    /// The provider's admission gate, for `/metrics` (`None`: the simulated
    /// provider, which has none).
    pub gate: Option<Arc<fanfare::provider::Gate>>,
    /// The endpoint the gate's calls go to ([`fanfare::provider::endpoint_id`]):
    /// what the gate learns about its limits is kept in the journal under it, and
    /// a restarted server starts from it (`None`: nothing is kept).
    pub endpoint: Option<String>,
    /// Host names a loopback-bound server answers besides `localhost`, `127.0.0.1`
    /// and `[::1]` (a browser names the host it asked in `Host`; a page whose name
    /// was rebound to 127.0.0.1 is refused by it).
    pub allow_hosts: Vec<String>,
    /// The cluster this server orchestrates, for `GET /v1/cluster` (`None`: not
    /// started with `--cluster-listen`).
    pub cluster: Option<fanfare_cluster::Cluster>,
}

impl ServeConfig {
    /// The defaults, with the journal at `db`.
    pub fn new(db: impl Into<PathBuf>) -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 7878)),
            db: db.into(),
            token: None,
            max_running: 16,
            max_queued: 256,
            drain: Duration::from_secs(30),
            body_limit: 1 << 20,
            max_streams: 128,
            write_stall: Duration::from_secs(30),
            header_timeout: Duration::from_secs(30),
            max_connections: 1024,
            min_free_disk: 1 << 30,
            defaults: Defaults::default(),
            gate: None,
            endpoint: None,
            allow_hosts: Vec::new(),
            cluster: None,
        }
    }
}

/// Why the server could not start or run.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ServeError {
    /// A non-loopback address without a token.
    #[error("refusing to listen on {0} without a bearer token: anyone who can reach it could spend your API budget; give --token-file, or listen on 127.0.0.1")]
    Unprotected(SocketAddr),
    /// The address could not be bound.
    #[error("cannot listen on {addr}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// The OS error.
        source: std::io::Error,
    },
    /// The token file could not be read.
    #[error("cannot read the token file {path}")]
    TokenFile {
        /// The file.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
    /// The token file is empty.
    #[error("the token file {path} is empty")]
    EmptyToken {
        /// The file.
        path: PathBuf,
    },
    /// The token file's token is too short to keep strangers out.
    #[error("the token in {path} is shorter than {} characters: anyone could guess it (try `openssl rand -hex 24 > {path}`)", Token::MIN_CHARS)]
    ShortToken {
        /// The file.
        path: PathBuf,
    },
    /// Another server has the journal open.
    #[error("the journal {path} is in use by another fanfare serve (two servers on one journal would both resume its runs); stop it, or give another --db")]
    JournalInUse {
        /// The journal.
        path: PathBuf,
    },
    /// The journal could not be opened to be locked.
    #[error("cannot open the journal {path} to lock it")]
    Lock {
        /// The journal.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
    /// The journal failed.
    #[error(transparent)]
    Journal(#[from] JournalError),
    /// Serving HTTP failed.
    #[error("serving HTTP")]
    Http(#[source] std::io::Error),
}

/// What a finished [`Server::run`] did at shutdown.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Stopped {
    /// Runs still in progress at the drain deadline, journaled `interrupted`.
    pub interrupted: usize,
}

/// Takes the journal's lock: an advisory lock (`flock`) on the journal file itself,
/// which the OS drops when the process dies, so a crash leaves nothing to clean up.
/// It is the file's lock, not its name's: a symbolic or hard link to the same
/// journal is the same file (a lock on `<db>.lock` let a link start a second server,
/// and every run was billed twice). SQLite's own locks are `fcntl` locks, which a
/// `flock` does not touch; the handle stays open until the server has stopped.
fn lock(db: &Path) -> Result<std::fs::File, ServeError> {
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .read(true)
        .write(true)
        .open(db)
        .map_err(|source| ServeError::Lock {
            path: db.to_owned(),
            source,
        })?;
    match file.try_lock() {
        Ok(()) => Ok(file),
        Err(std::fs::TryLockError::WouldBlock) => Err(ServeError::JournalInUse {
            path: db.to_owned(),
        }),
        Err(std::fs::TryLockError::Error(source)) => Err(ServeError::Lock {
            path: db.to_owned(),
            source,
        }),
    }
}

/// Binds `addr` with a deep accept queue: a burst of clients connecting at once (a
/// thousand submissions) must not overflow the default one, whose dropped SYNs cost
/// each unlucky client a retransmit of a second or more.
fn bind(addr: SocketAddr) -> std::io::Result<tokio::net::TcpListener> {
    let socket = if addr.is_ipv4() {
        tokio::net::TcpSocket::new_v4()?
    } else {
        tokio::net::TcpSocket::new_v6()?
    };
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(4096)
}

/// A bound server with its journal open and its unfinished runs resumed.
pub struct Server {
    listener: tokio::net::TcpListener,
    runs: Arc<runs::Runs>,
    fanfare: Fanfare,
    config: ServeConfig,
    resumed: usize,
    /// Counts supervision events for the metrics; stopped with the server.
    supervision: tokio::task::JoinHandle<()>,
    /// Keeps the gate's learned limits in the journal (with the task doing it).
    limits: Option<(limits::Limits, tokio::task::JoinHandle<()>)>,
    /// Held while the server lives: one server per journal.
    _lock: std::fs::File,
}

impl Server {
    /// Opens the journal, binds, and resumes the runs an earlier process left
    /// unfinished.
    pub async fn start(
        fanfare: Fanfare,
        catalog: Catalog,
        config: ServeConfig,
    ) -> Result<Server, ServeError> {
        if !config.listen.ip().is_loopback() && config.token.is_none() {
            return Err(ServeError::Unprotected(config.listen));
        }
        let lock = lock(&config.db)?;
        let db = config.db.clone();
        let journal = tokio::task::spawn_blocking(move || Journal::open(&db))
            .await
            .map_err(|_| JournalError::Task)??;
        let listener = bind(config.listen).map_err(|source| ServeError::Bind {
            addr: config.listen,
            source,
        })?;
        let limits = match (&config.gate, &config.endpoint) {
            (Some(gate), Some(endpoint)) => {
                let limits = limits::Limits {
                    journal: journal.clone(),
                    gate: gate.clone(),
                    endpoint: endpoint.clone(),
                };
                for (model, l) in limits.recall().await? {
                    tracing::info!(
                        model,
                        cap = l.cap,
                        "admission starts from the limit learned before the restart"
                    );
                }
                Some(limits)
            }
            _ => None,
        };
        let runs = runs::Runs::new(
            fanfare.clone(),
            journal,
            catalog,
            config.defaults.clone(),
            config.max_running,
            config.max_queued,
            config.min_free_disk,
        );
        let resumed = runs.resume().await?;
        let supervision = runs.watch_supervision();
        let limits = limits.map(|l| (l.clone(), l.keep_while_running()));
        Ok(Server {
            listener,
            runs,
            fanfare,
            config,
            resumed,
            supervision,
            limits,
            _lock: lock,
        })
    }

    /// The address it listens on.
    pub fn local_addr(&self) -> SocketAddr {
        self.listener.local_addr().unwrap_or(self.config.listen)
    }

    /// How many unfinished runs it took back from the journal at start.
    pub fn resumed(&self) -> usize {
        self.resumed
    }

    /// Its journal (to look at, or to test against: a write it refuses makes the
    /// runs wait and `/readyz` say so).
    pub fn journal(&self) -> Journal {
        self.runs.journal().clone()
    }

    /// Serves until `shutdown` completes; then stops accepting, ends the event
    /// streams, gives runs in progress up to the drain time, journals the rest as
    /// interrupted, and shuts the runtime down.
    pub async fn run(
        self,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> Result<Stopped, ServeError> {
        let Server {
            listener,
            runs,
            fanfare,
            config,
            supervision,
            limits,
            _lock: held,
            ..
        } = self;
        let app = api::App {
            runs: runs.clone(),
            token: config.token.map(Arc::new),
            gate: config.gate,
            cluster: config.cluster,
            streams: api::events::Streams::new(config.max_streams.max(1)),
            large: api::large::Large::new(api::large::BUDGET),
        };
        let guard = api::origin::Guard::new(config.listen, config.allow_hosts);
        let router = api::router(app, config.body_limit, guard);
        let closing = runs.clone();
        let listener = api::stall::Patient {
            inner: listener,
            stall: config.write_stall,
        };
        let taking = api::connections::Limits {
            header_timeout: config.header_timeout,
            connections: config.max_connections,
            linger: config.drain,
        };
        api::connections::serve(listener, router, taking, async move {
            shutdown.await;
            // Event streams watch this and end, so the graceful shutdown does
            // not wait on them.
            closing.begin_closing();
        })
        .await;
        let interrupted = runs.shut_down(config.drain).await;
        fanfare.shutdown_with_drain(Duration::ZERO).await;
        supervision.abort();
        if let Some((limits, keeping)) = limits {
            keeping.abort();
            limits.keep_now().await;
        }
        // Only now may another server take the journal.
        drop(held);
        Ok(Stopped { interrupted })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn regression_a_token_file_that_starts_with_a_blank_line_is_not_empty() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("token");
        std::fs::write(&path, "\n  \ns3cret-s3cret-s3cret\n").unwrap();
        assert_eq!(
            Token::from_file(&path).unwrap().expose(),
            "s3cret-s3cret-s3cret"
        );
        std::fs::write(&path, "\n \n").unwrap();
        assert!(matches!(
            Token::from_file(&path),
            Err(ServeError::EmptyToken { .. })
        ));
    }

    #[test]
    fn regression_a_token_anyone_could_guess_is_refused() {
        // The sixth probe: a one-character token file was accepted.
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("token");
        std::fs::write(&path, "a\n").unwrap();
        let refused = Token::from_file(&path).unwrap_err();
        assert!(matches!(refused, ServeError::ShortToken { .. }));
        assert!(refused.to_string().contains("16 characters"), "{refused}");
    }
}
