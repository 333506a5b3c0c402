//! What the serve tests share: a server on 127.0.0.1:0 with agents whose calls can be
//! held, counted and seen to be aborted, and small HTTP helpers.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use fanfare::agent::{Agent, AgentContext, AgentOutput, AgentReply, Task};
use fanfare::provider::{SimConfig, SimProvider};
use fanfare::Fanfare;
use fanfare_serve::{Catalog, ServeConfig, Server, Stopped, Token};
use serde_json::Value;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

/// Counts of one agent's calls.
#[derive(Clone, Default)]
pub struct Calls {
    pub started: Arc<AtomicUsize>,
    pub finished: Arc<AtomicUsize>,
    pub aborted: Arc<AtomicUsize>,
}

/// Answers its input after `delay`; counts calls, and calls dropped unfinished.
struct Held {
    name: &'static str,
    delay: Duration,
    calls: Calls,
}

struct AbortGuard(Option<Arc<AtomicUsize>>);

impl Drop for AbortGuard {
    fn drop(&mut self) {
        if let Some(n) = self.0.take() {
            n.fetch_add(1, Ordering::SeqCst);
        }
    }
}

impl Agent for Held {
    fn name(&self) -> &str {
        self.name
    }

    async fn run(&self, _ctx: &AgentContext, task: Task) -> AgentReply {
        self.calls.started.fetch_add(1, Ordering::SeqCst);
        // A task that asks for it fails: a run whose policy is not met (`PLEASE
        // FAIL`: every agent at once; `fast fails`: that one, after its delay).
        if task.input.contains("PLEASE FAIL") {
            return Err(fanfare::AgentError::Rejected {
                reason: "asked to fail".to_owned(),
            });
        }
        let mut guard = AbortGuard(Some(self.calls.aborted.clone()));
        // Whoever watches sees the answer come in two pieces, the delay between.
        let send = |text: String| {
            if let Some(sink) = &task.deltas {
                sink.send(fanfare::provider::Delta::Text(text));
            }
        };
        send(format!("{} read: ", self.name));
        tokio::time::sleep(self.delay).await;
        if task.input.contains(&format!("{} fails", self.name)) {
            return Err(fanfare::AgentError::Rejected {
                reason: "asked to fail".to_owned(),
            });
        }
        send(task.input.to_string());
        guard.0 = None;
        self.calls.finished.fetch_add(1, Ordering::SeqCst);
        // Tokens and a priced model, as a provider's answer has: the page and the
        // run list show what a run cost.
        let mut out = AgentOutput::text(format!("{} read: {}", self.name, task.input));
        out.usage.input_tokens = 100 + task.input.len() as u64 / 4;
        out.usage.output_tokens = 25;
        out.model = Some("claude-haiku-4-5".to_owned());
        out.attempts = 1;
        Ok(out)
    }
}

/// A workflow `chain`: `fast`, then `slow` on its answer, and no merge (the answer
/// is `slow`'s); written beside the journal.
pub fn chain_workflow(db: &Path) -> fanfare::run::workflow::Workflow {
    let path = db.with_file_name("chain.toml");
    std::fs::write(
        &path,
        "name = \"chain\"\ndescription = \"fast, then slow; no merge\"\nmerge = \"none\"\n\
         [[steps]]\nname = \"first\"\nagent = \"fast\"\n\
         [[steps]]\nname = \"second\"\nagent = \"slow\"\nafter = [\"first\"]\ninput = \"{{step.first}}\"\n",
    )
    .unwrap();
    fanfare::run::workflow::Workflow::load(&path).unwrap()
}

/// A workflow `each`: `fast` over each given item (half must succeed), then `slow` on
/// what they said; no merge. Written beside the journal.
pub fn map_workflow(db: &Path) -> fanfare::run::workflow::Workflow {
    let path = db.with_file_name("each.toml");
    std::fs::write(
        &path,
        "name = \"each\"\nmerge = \"none\"\n\
         [[steps]]\nname = \"per\"\nagent = \"fast\"\ninput = \"{{item}}\"\n\
         map = { over = \"items\", policy = \"partial:1\" }\n\
         [[steps]]\nname = \"all\"\nagent = \"slow\"\nafter = [\"per\"]\ninput = \"{{step.per}} {{task}}\"\n",
    )
    .unwrap();
    fanfare::run::workflow::Workflow::load(&path).unwrap()
}

/// A workflow `pair`: both agents, merged by code; written beside the journal.
pub fn pair_workflow(db: &Path) -> fanfare::run::workflow::Workflow {
    let path = db.with_file_name("pair.toml");
    std::fs::write(
        &path,
        "name = \"pair\"\ndescription = \"both, merged by code\"\nmerge = \"code\"\n\
         [[steps]]\nname = \"fast\"\nagent = \"fast\"\n[[steps]]\nname = \"slow\"\nagent = \"slow\"\n",
    )
    .unwrap();
    fanfare::run::workflow::Workflow::load(&path).unwrap()
}

pub struct Running {
    pub base: String,
    pub journal: fanfare_serve::Journal,
    stop: Option<oneshot::Sender<()>>,
    task: JoinHandle<Stopped>,
    pub fast: Calls,
    pub slow: Calls,
}

impl Running {
    pub async fn stop(mut self) -> Stopped {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        self.task.await.unwrap()
    }
}

pub struct Options {
    pub max_running: usize,
    pub max_queued: usize,
    pub slow: Duration,
    pub token: Option<&'static str>,
    pub drain: Duration,
    pub allow_hosts: Vec<String>,
    pub max_streams: usize,
    pub header_timeout: Duration,
    pub max_connections: usize,
    pub min_free_disk: u64,
    pub body_limit: usize,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            max_running: 4,
            max_queued: 16,
            slow: Duration::from_millis(50),
            token: None,
            drain: Duration::from_secs(5),
            allow_hosts: Vec::new(),
            max_streams: 128,
            header_timeout: Duration::from_secs(30),
            max_connections: 1024,
            // Not the server's 1 GiB: a test must not depend on the machine's disk.
            min_free_disk: 0,
            body_limit: 4096,
        }
    }
}

impl Options {
    /// `slow` answers after a minute and a stop does not wait for it: a run that
    /// stays live for as long as a test looks at it.
    pub fn held() -> Self {
        Self {
            slow: Duration::from_secs(60),
            drain: Duration::ZERO,
            ..Self::default()
        }
    }
}

pub async fn start(db: &Path, o: Options) -> Running {
    let fast = Calls::default();
    let slow = Calls::default();
    let fanfare = Fanfare::builder(Arc::new(SimProvider::new(SimConfig::default())))
        .agent(Held {
            name: "fast",
            delay: Duration::from_millis(1),
            calls: fast.clone(),
        })
        .agent(Held {
            name: "slow",
            delay: o.slow,
            calls: slow.clone(),
        })
        .start()
        .await
        .unwrap();
    let mut running = start_on(db, o, fanfare).await;
    running.fast = fast;
    running.slow = slow;
    running
}

/// A server on `fanfare` (its agents as they are), on the journal `db`.
pub async fn start_on(db: &Path, o: Options, fanfare: Fanfare) -> Running {
    let catalog = Catalog {
        workflows: vec![pair_workflow(db), chain_workflow(db), map_workflow(db)],
        agents: fanfare.agents(),
    };
    let mut config = ServeConfig::new(db);
    config.listen = SocketAddr::from(([127, 0, 0, 1], 0));
    config.max_running = o.max_running;
    config.max_queued = o.max_queued;
    config.token = o.token.and_then(Token::new);
    config.drain = o.drain;
    config.allow_hosts = o.allow_hosts;
    config.max_streams = o.max_streams;
    config.header_timeout = o.header_timeout;
    config.max_connections = o.max_connections;
    config.min_free_disk = o.min_free_disk;
    config.body_limit = o.body_limit;
    let server = Server::start(fanfare, catalog, config).await.unwrap();
    let base = format!("http://{}", server.local_addr());
    let journal = server.journal();
    let (stop, stopped) = oneshot::channel::<()>();
    let task = tokio::spawn(async move {
        server
            .run(async {
                let _ = stopped.await;
            })
            .await
            .unwrap()
    });
    Running {
        base,
        journal,
        stop: Some(stop),
        task,
        fast: Calls::default(),
        slow: Calls::default(),
    }
}

/// Installs the TLS provider (the workspace builds reqwest without a default one).
pub fn tls() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}

pub fn client() -> reqwest::Client {
    tls();
    reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .build()
        .unwrap()
}

pub async fn submit(base: &str, body: Value) -> (u16, Value) {
    let r = client()
        .post(format!("{base}/v1/runs"))
        .json(&body)
        .send()
        .await
        .unwrap();
    let status = r.status().as_u16();
    (status, r.json().await.unwrap_or(Value::Null))
}

/// `POST /v1/runs/{id}/repair` (no body): its status and its JSON.
pub async fn repair(base: &str, id: &str) -> (u16, Value) {
    let r = client()
        .post(format!("{base}/v1/runs/{id}/repair"))
        .header("content-type", "application/json")
        .send()
        .await
        .unwrap();
    let status = r.status().as_u16();
    (status, r.json().await.unwrap_or(Value::Null))
}

/// GET `url` and its JSON.
pub async fn get_json(url: String) -> Value {
    client()
        .get(url)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
}

/// Run `id` as the API shows it.
pub async fn get(base: &str, id: &str) -> Value {
    get_json(format!("{base}/v1/runs/{id}")).await
}

/// Waits (real time, bounded) until run `id` has status `want`.
pub async fn until_status(base: &str, id: &str, want: &str) -> Value {
    for _ in 0..500 {
        let run = get(base, id).await;
        if run["status"] == want {
            return run;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("run {id} never became {want}: {}", get(base, id).await);
}

/// The events of a run's stream, read to its end, as (id, kind, data).
pub async fn events(base: &str, id: &str, last: Option<&str>) -> Vec<(String, String, Value)> {
    let mut request = client().get(format!("{base}/v1/runs/{id}/events"));
    if let Some(last) = last {
        request = request.header("Last-Event-ID", last);
    }
    let text = request.send().await.unwrap().text().await.unwrap();
    text.split("\n\n")
        .filter(|block| !block.trim().is_empty() && !block.starts_with(':'))
        .map(|block| {
            let field = |name: &str| {
                block
                    .lines()
                    .find_map(|l| l.strip_prefix(&format!("{name}: ")))
                    .unwrap_or("")
                    .to_owned()
            };
            (
                field("id"),
                field("event"),
                serde_json::from_str(&field("data")).unwrap_or(Value::Null),
            )
        })
        .collect()
}

/// Reads run `id`'s event stream until `text` appears in it.
pub async fn until_streamed(base: &str, id: &str, text: &str) {
    use futures::StreamExt as _;
    let response = client()
        .get(format!("{base}/v1/runs/{id}/events"))
        .send()
        .await
        .unwrap();
    let mut body = response.bytes_stream();
    let mut seen = String::new();
    while let Some(chunk) = body.next().await {
        seen.push_str(&String::from_utf8_lossy(&chunk.unwrap()));
        if seen.contains(text) {
            return;
        }
    }
    panic!("the stream of {id} ended without `{text}`: {seen}");
}
