//! The supervised child that keeps one MCP server connected.
//!
//! `pre_start` connects (spawning the server for stdio) and fetches the tool list,
//! within the server's handshake timeout; failing that, the spawn fails with the
//! reason and the supervisor treats it as any failed restart. A watcher task owns the
//! running connection and, when it ends, marks the link down and stops the actor with
//! the reason, which the supervisor sees as an exit to restart. The state's `Drop`
//! (which runs after a stop, a panic or a kill) ends the watcher, which closes the
//! connection, and kills a stdio server's process group.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};

use ractor::{Actor, ActorProcessingErr, ActorRef};
use rmcp::transport::StreamableHttpClientTransport;
use rmcp::ServiceExt as _;
use tokio::io::AsyncBufReadExt as _;

use super::{Link, McpServer, McpTransport};
use crate::agent::{AgentError, AgentMsg};

/// How many of a stdio server's last stderr lines are kept to say why it exited.
const STDERR_TAIL: usize = 6;
/// The longest stderr line kept.
const STDERR_LINE: usize = 400;

pub(crate) struct McpActor;

pub(crate) struct McpArgs {
    pub server: Arc<McpServer>,
    pub link: Arc<Link>,
}

pub(crate) struct McpState {
    link: Arc<Link>,
    generation: u64,
    watcher: tokio::task::JoinHandle<()>,
    _group: Option<Group>,
    /// A stdio server's process (killed when dropped).
    _child: Option<Box<dyn process_wrap::tokio::ChildWrapper>>,
}

impl Drop for McpState {
    fn drop(&mut self) {
        self.watcher.abort();
        self.link
            .down(self.generation, "it is restarting".to_owned());
    }
}

/// A stdio server's process group, killed when dropped.
struct Group(u32);

impl Drop for Group {
    fn drop(&mut self) {
        #[cfg(unix)]
        if let Ok(pgid) = libc::pid_t::try_from(self.0) {
            // SAFETY: killpg only sends a signal; the group was made for this server
            // (its leader is the process we spawned) and an exited group is ESRCH.
            unsafe {
                libc::killpg(pgid, libc::SIGKILL);
            }
        }
    }
}

/// The last lines a stdio server wrote to stderr.
type Tail = Arc<Mutex<VecDeque<String>>>;

fn last_words(tail: &Tail) -> String {
    let lines = tail.lock().unwrap_or_else(|e| e.into_inner());
    if lines.is_empty() {
        String::new()
    } else {
        format!(
            "; its last words on stderr: {}",
            Vec::from(lines.clone()).join(" | ")
        )
    }
}

/// Connects to the server (spawning it, for stdio) and fetches its tool list,
/// within its handshake timeout; the watcher of the connection is `myself`'s.
async fn connect(
    myself: ActorRef<AgentMsg>,
    args: McpArgs,
) -> Result<McpState, ActorProcessingErr> {
    let McpArgs { server, link } = args;
    let name = server.name().to_owned();
    let tail: Tail = Arc::default();
    let (service, group, child) = tokio::time::timeout(server.handshake_timeout, async {
        match server.transport() {
            McpTransport::Stdio { program, args, env } => {
                let mut command = process_wrap::tokio::CommandWrap::with_new(program, |c| {
                    c.args(args);
                    if let Some(dir) = server.dir() {
                        c.current_dir(dir);
                    }
                    // Not this process's environment (the API keys are there).
                    c.env_clear();
                    c.envs(
                        std::env::vars_os()
                            .filter(|(k, _)| k.to_str().is_some_and(super::inherited)),
                    );
                    c.envs(env.iter().map(|(k, v)| (k, v)));
                });
                command.wrap(process_wrap::tokio::ProcessGroup::leader());
                command.wrap(process_wrap::tokio::KillOnDrop);
                // Killed with this process, however it ends: after a `kill -9` of
                // `serve` its server lived on and finished the call in flight.
                #[cfg(target_os = "linux")]
                // SAFETY: the closure runs in the forked child before exec and only
                // makes async-signal-safe calls (prctl, getppid).
                unsafe {
                    let parent = std::process::id();
                    command.command_mut().pre_exec(move || {
                        if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) == -1 {
                            return Err(std::io::Error::last_os_error());
                        }
                        // The parent died before the call: no signal will come.
                        if u32::try_from(libc::getppid()).ok() != Some(parent) {
                            libc::_exit(1);
                        }
                        Ok(())
                    });
                }
                let (child, transport, stderr) = super::stdio::spawn(command, link.oversized())
                    .map_err(|e| format!("could not start `{program}`: {e}"))?;
                let group = child.id().map(Group);
                let reader = stderr
                    .map(|stderr| tokio::spawn(log_stderr(name.clone(), stderr, tail.clone())));
                let service = match ().serve(transport).await {
                    Ok(service) => service,
                    Err(e) => {
                        // A server that exited at once: its last words are on
                        // their way (the handshake's error can come first).
                        if let Some(reader) = reader {
                            let _ =
                                tokio::time::timeout(std::time::Duration::from_millis(500), reader)
                                    .await;
                        }
                        return Err(format!(
                            "`{program}` did not answer MCP's handshake: {e}{}",
                            last_words(&tail)
                        ));
                    }
                };
                Ok::<_, String>((service, group, Some(child)))
            }
            McpTransport::Http { url } => {
                // rmcp's client (same-origin redirects only) is built on the
                // reqwest this crate builds without a TLS provider of its own.
                let _ = rustls::crypto::ring::default_provider().install_default();
                let transport = StreamableHttpClientTransport::from_uri(url.as_str());
                let service = ().serve(transport).await.map_err(|e| {
                    format!(
                        "{} did not answer MCP's handshake: {}",
                        super::shown_url(url),
                        super::scrub_url(&e.to_string(), url)
                    )
                })?;
                Ok((service, None, None))
            }
        }
    })
    .await
    .map_err(|_| {
        format!(
            "no answer to MCP's handshake within {:?}{}",
            server.handshake_timeout,
            last_words(&tail)
        )
    })
    .and_then(|r| r)
    .map_err(|e| link.scrub(&format!("MCP server `{name}`: {e}")))?;
    let tools = tokio::time::timeout(server.handshake_timeout, listed(&name, service.peer()))
        .await
        .map_err(|_| {
            format!(
                "MCP server `{name}`: no tool list within {:?}",
                server.handshake_timeout
            )
        })?
        .map_err(|e| link.scrub(&format!("MCP server `{name}`: its tool list: {e}")))?;
    tracing::debug!(server = %name, tools = tools.len(), "MCP server connected");
    let generation = link.up(service.peer().clone(), tools);
    let (me, watched, watched_tail) = (myself.clone(), link.clone(), tail.clone());
    let watcher = tokio::spawn(async move {
        let quit = service.waiting().await;
        let why = watched.scrub(&format!(
            "the MCP server `{}` closed its connection ({}){}",
            watched.server(),
            match quit {
                Ok(reason) => format!("{reason:?}"),
                Err(e) => e.to_string(),
            },
            last_words(&watched_tail)
        ));
        tracing::warn!(server = %watched.server(), "{why}");
        watched.down(generation, why.clone());
        me.stop(Some(why));
    });
    Ok(McpState {
        link,
        generation,
        watcher,
        _group: group,
        _child: child,
    })
}

impl Actor for McpActor {
    type Msg = AgentMsg;
    type State = McpState;
    type Arguments = McpArgs;

    async fn pre_start(
        &self,
        myself: ActorRef<AgentMsg>,
        args: McpArgs,
    ) -> Result<McpState, ActorProcessingErr> {
        let link = args.link.clone();
        let started = connect(myself, args).await;
        if let Err(e) = &started {
            link.failed(&e.to_string());
        }
        started
    }

    async fn handle(
        &self,
        _myself: ActorRef<AgentMsg>,
        msg: AgentMsg,
        state: &mut McpState,
    ) -> Result<(), ActorProcessingErr> {
        if let AgentMsg::Run { reply, .. } = msg {
            let _ = reply.send(Err(AgentError::Rejected {
                reason: format!(
                    "`mcp:{}` is an MCP server, not an agent: name its tools in a spec (`tools = [\"{}.*\"]`)",
                    state.link.server(),
                    state.link.server()
                ),
            }));
        }
        Ok(())
    }
}

/// The most pages of a tool list read.
const MAX_PAGES: usize = 32;

/// A server's tool list, page by page: at most [`MAX_PAGES`] pages and
/// [`super::link::MAX_TOOLS`] tools (a server paging without end took this process
/// to gigabytes before the handshake's time ran out).
async fn listed(
    server: &str,
    peer: &rmcp::service::Peer<rmcp::service::RoleClient>,
) -> Result<Vec<rmcp::model::Tool>, rmcp::ServiceError> {
    let mut tools = Vec::new();
    let mut cursor = None;
    let mut cut = true;
    for _ in 0..MAX_PAGES {
        let page = peer
            .list_tools(Some(
                rmcp::model::PaginatedRequestParams::default().with_cursor(cursor),
            ))
            .await?;
        let room = super::link::MAX_TOOLS.saturating_sub(tools.len());
        let more = page.tools.len() > room;
        tools.extend(page.tools.into_iter().take(room));
        cursor = page.next_cursor;
        if cursor.is_none() && !more {
            cut = false;
            break;
        }
        if more || tools.len() >= super::link::MAX_TOOLS {
            break;
        }
    }
    if cut {
        tracing::warn!(
            target: "fanfare::mcp",
            server = %server,
            "the server lists more tools than are offered (at most {} tools, {MAX_PAGES} pages); only its first {} are offered",
            super::link::MAX_TOOLS,
            tools.len()
        );
    }
    Ok(tools)
}

/// Logs a stdio server's stderr at debug level, keeping its last lines.
/// A line is read up to [`STDERR_LINE`] bytes and the rest of it skipped: a server
/// writing without newlines once grew one line without bound.
async fn log_stderr(server: String, stderr: tokio::process::ChildStderr, tail: Tail) {
    let mut reader = tokio::io::BufReader::new(stderr);
    let mut line: Vec<u8> = Vec::new();
    let mut cut = false;
    let keep = |line: &mut Vec<u8>, cut: bool| {
        let mut text = String::from_utf8_lossy(line).into_owned();
        line.clear();
        if cut {
            text.push('…');
        }
        tracing::debug!(target: "fanfare::mcp", server = %server, "{text}");
        let mut kept = tail.lock().unwrap_or_else(|e| e.into_inner());
        if kept.len() == STDERR_TAIL {
            kept.pop_front();
        }
        kept.push_back(text);
    };
    loop {
        let buf = match reader.fill_buf().await {
            Ok(buf) if !buf.is_empty() => buf,
            _ => break,
        };
        let newline = buf.iter().position(|&b| b == b'\n');
        let piece = &buf[..newline.unwrap_or(buf.len())];
        let room = STDERR_LINE.saturating_sub(line.len());
        cut |= piece.len() > room;
        line.extend_from_slice(&piece[..piece.len().min(room)]);
        let used = newline.map_or(buf.len(), |i| i + 1);
        reader.consume(used);
        if newline.is_some() {
            keep(&mut line, std::mem::take(&mut cut));
        }
    }
    if !line.is_empty() || cut {
        keep(&mut line, cut);
    }
}
