//! What a server's supervised child shares with its tools: the live connection (a
//! `Peer`, while there is one), the tool list of the last connection, and why there
//! is no connection when there is none. The tools ([`McpTool`]) are made from the
//! list each time an agent's turn asks for them, so a restart's new list is what the
//! next turn offers.

use std::sync::{Arc, RwLock};

use futures::future::BoxFuture;
use rmcp::model::{CallToolRequestParams, CallToolResult, ContentBlock, ResourceContents};
use rmcp::service::{Peer, RoleClient};

use super::WIRE_SEPARATOR;
use crate::agent::tools::{Tool, ToolContext, ToolError, ToolSource};

/// The most tools of one server offered (the rest are not: a server listing
/// thousands would make every request of megabytes).
pub(crate) const MAX_TOOLS: usize = 256;

/// The most bytes of a tool's description passed on to the model.
const MAX_DESCRIPTION: usize = 4096;

/// One server's connection and tools, shared by its actor and its tools.
pub(crate) struct Link {
    server: String,
    /// A streamable-HTTP server's URL, hidden from every error text passed on.
    url: Option<String>,
    state: RwLock<State>,
    /// Moves when a connection comes up, for calls waiting on a restart.
    connected: tokio::sync::watch::Sender<u64>,
    /// Moves when a stdio server sends a message too long to read (dropped):
    /// the calls in flight fail, since one of them will never be answered.
    oversized: tokio::sync::watch::Sender<u64>,
}

/// The longest a call waits for its server to come back (a restart in progress),
/// within the branch's deadline: a model told at once that the server is down spent
/// its turns on instant errors (10 paid turns in 20 ms).
const WAIT_FOR_RESTART: std::time::Duration = std::time::Duration::from_secs(10);

struct State {
    peer: Option<Peer<RoleClient>>,
    tools: Arc<Vec<rmcp::model::Tool>>,
    why_not: String,
    /// Its last restart failed: nothing will connect before the supervisor's next
    /// try (after its backoff, or its circuit's cool-down).
    failed: bool,
    /// Counts connections, so that an old connection's end (its actor's state is
    /// dropped after the next one may have started) cannot mark the new one down.
    generation: u64,
}

impl Link {
    /// The link of `server`.
    pub(crate) fn for_server(server: &super::McpServer) -> Self {
        let mut link = Self::new(server.name().to_owned());
        if let super::McpTransport::Http { url } = server.transport() {
            link.url = Some(url.clone());
        }
        link
    }

    pub(crate) fn new(server: String) -> Self {
        Self {
            server,
            url: None,
            state: RwLock::new(State {
                peer: None,
                tools: Arc::default(),
                why_not: "it has not connected yet".to_owned(),
                failed: false,
                generation: 0,
            }),
            connected: tokio::sync::watch::channel(0).0,
            oversized: tokio::sync::watch::channel(0).0,
        }
    }

    /// A link that lists `tools` and is not connected, for tests.
    #[cfg(test)]
    pub(crate) fn listing(server: &str, tools: Vec<rmcp::model::Tool>) -> Arc<Self> {
        let link = Arc::new(Self::new(server.to_owned()));
        link.write().tools = Arc::new(tools);
        link
    }

    /// The server's name.
    pub(crate) fn server(&self) -> &str {
        &self.server
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, State> {
        self.state.write().unwrap_or_else(|e| e.into_inner())
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, State> {
        self.state.read().unwrap_or_else(|e| e.into_inner())
    }

    /// Connected, with `tools`; answers the connection's generation.
    pub(crate) fn up(&self, peer: Peer<RoleClient>, tools: Vec<rmcp::model::Tool>) -> u64 {
        let generation = {
            let mut state = self.write();
            state.peer = Some(peer);
            state.failed = false;
            state.tools = Arc::new(tools);
            state.generation += 1;
            state.generation
        };
        self.connected.send_replace(generation);
        generation
    }

    /// The connection `generation` ended, because `why` (unless a newer one is up
    /// already); the last tool list stays (offered, failing until the server is
    /// back).
    pub(crate) fn down(&self, generation: u64, why: String) {
        let why = self.scrub(&why);
        let mut state = self.write();
        if state.generation == generation {
            state.peer = None;
            state.why_not = why;
        }
    }

    /// A restart failed, because `why`: calls fail at once, saying so, until a
    /// connection is up again (a call waited on a restart that was not coming, and
    /// was told the server "is restarting").
    pub(crate) fn failed(&self, why: &str) {
        let why = self.scrub(why);
        let mut state = self.write();
        if state.peer.is_none() {
            state.failed = true;
            state.why_not = format!(
                "it is down: its restart failed ({why}); the supervisor tries again later, and its tools fail until then"
            );
        }
    }

    /// Where a stdio server's transport counts the messages it dropped as too long.
    pub(crate) fn oversized(&self) -> tokio::sync::watch::Sender<u64> {
        self.oversized.clone()
    }

    /// Why it is down, when its last restart failed.
    pub(crate) fn down_since_failed(&self) -> Option<String> {
        let state = self.read();
        (state.failed && state.peer.is_none()).then(|| state.why_not.clone())
    }

    /// `text` with an HTTP server's URL secrets hidden (see [`super::scrub_url`]).
    pub(crate) fn scrub(&self, text: &str) -> String {
        match &self.url {
            Some(url) => super::scrub_url(text, url),
            None => text.to_owned(),
        }
    }

    /// Its tools as of the last connection: by the server's name for each, and as
    /// the model sees them.
    fn listed(self: &Arc<Self>) -> Vec<(String, Arc<dyn Tool>)> {
        let tools = self.read().tools.clone();
        let mut taken = std::collections::HashSet::new();
        (0..tools.len().min(MAX_TOOLS))
            .map(|index| {
                let t = &tools[index];
                // Two names the wires make one (`a.b`, `a_b`) are told apart.
                let mut name = wire_name(&self.server, &t.name);
                let mut n = 1;
                while !taken.insert(name.clone()) {
                    n += 1;
                    let suffix = format!("_{n}");
                    name = wire_name(&self.server, &t.name);
                    name.truncate(64 - suffix.len());
                    name.push_str(&suffix);
                }
                let description = t
                    .description
                    .as_deref()
                    .or(t.title.as_deref())
                    .unwrap_or("");
                let tool = Arc::new(McpTool {
                    wire_name: name,
                    description: description[..description.floor_char_boundary(MAX_DESCRIPTION)]
                        .to_owned(),
                    tools: tools.clone(),
                    index,
                    link: self.clone(),
                });
                (t.name.to_string(), tool as Arc<dyn Tool>)
            })
            .collect()
    }

    /// The connection, or why there is none.
    fn peer(&self) -> Result<Peer<RoleClient>, String> {
        let state = self.read();
        state.peer.clone().ok_or_else(|| state.why_not.clone())
    }

    /// The connection; when there is none, the next one if it comes within
    /// [`WAIT_FOR_RESTART`] and before `deadline` (a restart in progress), else why
    /// there is none.
    async fn peer_within(
        &self,
        deadline: Option<tokio::time::Instant>,
    ) -> Result<Peer<RoleClient>, String> {
        let mut connected = self.connected.subscribe();
        if let Ok(peer) = self.peer() {
            return Ok(peer);
        }
        if let Some(why) = self.down_since_failed() {
            // No restart is under way to wait for.
            return Err(why);
        }
        let limit = tokio::time::Instant::now() + WAIT_FOR_RESTART;
        let until = deadline.map_or(limit, |d| d.min(limit));
        // Whether it came or the time ran out, the state now says.
        let _ = tokio::time::timeout_at(until, connected.changed()).await;
        self.peer()
    }
}

impl ToolSource for Arc<Link> {
    fn tools(&self) -> Vec<(String, Arc<dyn Tool>)> {
        self.listed()
    }

    fn down(&self) -> Option<String> {
        self.down_since_failed()
    }
}

/// `SERVER__TOOL`, with what the wires refuse in a tool's name (MCP allows `.` and
/// `/`) made `_`, and cut at the wires' 64 bytes.
fn wire_name(server: &str, tool: &str) -> String {
    let mut name: String = format!("{server}{WIRE_SEPARATOR}{tool}")
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '_' || c == '-' {
                c
            } else {
                '_'
            }
        })
        .collect();
    name.truncate(64);
    name
}

/// One tool of one server.
struct McpTool {
    wire_name: String,
    description: String,
    tools: Arc<Vec<rmcp::model::Tool>>,
    index: usize,
    link: Arc<Link>,
}

impl Tool for McpTool {
    fn name(&self) -> &str {
        &self.wire_name
    }

    fn description(&self) -> &str {
        &self.description
    }

    fn input_schema(&self) -> serde_json::Value {
        serde_json::Value::Object((*self.tools[self.index].input_schema).clone())
    }

    /// As the server's annotations say: read-only, or idempotent.
    fn is_idempotent(&self) -> bool {
        self.tools[self.index]
            .annotations
            .as_ref()
            .is_some_and(|a| a.read_only_hint == Some(true) || a.idempotent_hint == Some(true))
    }

    fn call(
        &self,
        ctx: ToolContext,
        input: serde_json::Value,
    ) -> BoxFuture<'_, Result<String, ToolError>> {
        Box::pin(async move {
            let server = self.link.server();
            let peer = self.link.peer_within(ctx.deadline).await.map_err(|why| {
                ToolError(format!("the MCP server `{server}` is not connected: {why}"))
            })?;
            let mut params = CallToolRequestParams::new(self.tools[self.index].name.clone());
            params.arguments = match input {
                serde_json::Value::Object(map) => Some(map),
                serde_json::Value::Null => None,
                other => {
                    return Err(ToolError(format!(
                        "the arguments must be an object, not {other}"
                    )))
                }
            };
            // Dropping this future (the branch's deadline, a cancelled run) sends
            // the server `notifications/cancelled` for the request. A message too
            // long to read was dropped: it may be this call's answer, which would
            // then never come.
            let mut oversized = self.link.oversized.subscribe();
            let answered = tokio::select! {
                answered = peer.call_tool(params) => answered,
                _ = oversized.changed() => {
                    return Err(ToolError(format!(
                        "the MCP server `{server}` sent a message of more than {} bytes, which was dropped unread; it may have been this call's answer, so the call is given up",
                        super::stdio::MAX_MESSAGE
                    )));
                }
            };
            let result = answered.map_err(|e| {
                ToolError(
                    self.link
                        .scrub(&format!("the MCP server `{server}` failed the call: {e}")),
                )
            })?;
            answer(result).map_err(|e| ToolError(self.link.scrub(&e.0)))
        })
    }
}

/// A call's result as text for the model: its text blocks in order, other blocks
/// described, the structured content when there is nothing else; an error result is
/// a tool error.
fn answer(result: CallToolResult) -> Result<String, ToolError> {
    let mut parts: Vec<String> = result.content.iter().map(describe).collect();
    if parts.is_empty() {
        if let Some(structured) = &result.structured_content {
            parts.push(structured.to_string());
        }
    }
    let text = parts.join("\n");
    if result.is_error == Some(true) {
        Err(ToolError(if text.is_empty() {
            "the tool reported an error and said nothing more".to_owned()
        } else {
            text
        }))
    } else {
        Ok(text)
    }
}

fn describe(block: &ContentBlock) -> String {
    // Base64 holds 3 bytes in 4 characters.
    let bytes = |data: &str| data.len() / 4 * 3;
    match block {
        ContentBlock::Text(t) => t.text.clone(),
        ContentBlock::Image(i) => format!("[image: {}, {} bytes]", i.mime_type, bytes(&i.data)),
        ContentBlock::Audio(a) => format!("[audio: {}, {} bytes]", a.mime_type, bytes(&a.data)),
        ContentBlock::Resource(r) => match &r.resource {
            ResourceContents::TextResourceContents { uri, text, .. } => {
                format!("[resource {uri}]\n{text}")
            }
            ResourceContents::BlobResourceContents {
                uri,
                mime_type,
                blob,
                ..
            } => format!(
                "[resource {uri}: {}, {} bytes]",
                mime_type.as_deref().unwrap_or("binary"),
                bytes(blob)
            ),
            _ => "[a resource of a kind this client does not know]".to_owned(),
        },
        ContentBlock::ResourceLink(r) => format!("[resource link: {} ({})]", r.uri, r.name),
        _ => "[content of a kind this client does not know]".to_owned(),
    }
}

#[cfg(test)]
pub(super) fn answer_for_tests(result: CallToolResult) -> Result<String, ToolError> {
    answer(result)
}
