//! `fanfare submit` and `fanfare watch`: a running `fanfare serve` used from the
//! terminal. `submit` sends a run and (unless `--detach`) follows it; `watch`
//! follows a run by id. Both show it live as `fanfare run` does and print the same
//! report at the end (or its JSON with `--json`); the exit code is `run`'s.

use std::time::Duration;

use anyhow::{bail, Context as _};
use serde_json::{json, Value};

use crate::args::{ClientArgs, SubmitArgs};
use crate::live::{Live, Progress};
use crate::output;

/// A client of one server (also `fanfare cluster status`'s).
pub(crate) struct Server {
    base: String,
    token: Option<String>,
    http: reqwest::Client,
}

impl Server {
    pub(crate) fn new(args: &ClientArgs) -> anyhow::Result<Server> {
        let token = match &args.token_file {
            Some(path) => Some(
                crate::input::read_bounded(
                    std::fs::File::open(path)
                        .with_context(|| format!("reading the token from {}", path.display()))?,
                    &format!("the token file {}", path.display()),
                    4096,
                )?
                .lines()
                .next()
                .unwrap_or("")
                .trim()
                .to_owned(),
            ),
            None => std::env::var("FANFARE_TOKEN")
                .ok()
                .filter(|t| !t.trim().is_empty()),
        };
        let _ = rustls::crypto::ring::default_provider().install_default();
        let http = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .connect_timeout(Duration::from_secs(10))
            // A server that stops sending: an event stream has a keep-alive every
            // 15 s, so a minute of silence is a server gone (watch hung forever).
            .read_timeout(Duration::from_secs(60))
            .build()
            .context("building the HTTP client")?;
        Ok(Server {
            base: args.server.trim_end_matches('/').to_owned(),
            token,
            http,
        })
    }

    pub(crate) fn request(&self, method: reqwest::Method, path: &str) -> reqwest::RequestBuilder {
        let r = self.http.request(method, format!("{}{path}", self.base));
        match &self.token {
            Some(t) => r.bearer_auth(t),
            None => r,
        }
    }

    /// The JSON answer, or the server's error message as the error.
    pub(crate) async fn json(&self, r: reqwest::RequestBuilder) -> anyhow::Result<Value> {
        let response = r
            .send()
            .await
            .with_context(|| format!("cannot reach fanfare serve at {}", self.base))?;
        let status = response.status();
        let body: Value =
            serde_json::from_slice(&self.read(response).await?).unwrap_or(Value::Null);
        if !status.is_success() {
            let message = body["error"]["message"].as_str().unwrap_or("no message");
            match body["error"]["field"].as_str() {
                Some(field) => bail!("the server answered {status}: {field}: {message}"),
                None => bail!("the server answered {status}: {message}"),
            }
        }
        Ok(body)
    }
}

/// The most bytes of a server's answer read (a run of 10,000 branches is ~10 MB):
/// a server answering without end took `submit` to 3.9 GB in 4 s.
const MAX_ANSWER: usize = 256 << 20;

/// The most bytes one event of a stream may have before it ends.
const MAX_EVENT: usize = 16 << 20;

impl Server {
    /// `response`'s body, of at most [`MAX_ANSWER`] bytes.
    async fn read(&self, mut response: reqwest::Response) -> anyhow::Result<Vec<u8>> {
        let mut body = Vec::new();
        while let Some(chunk) = response
            .chunk()
            .await
            .with_context(|| format!("reading the answer of {}", self.base))?
        {
            if body.len() + chunk.len() > MAX_ANSWER {
                bail!(
                    "{} answered more than {MAX_ANSWER} bytes; not read further (is it fanfare serve?)",
                    self.base
                );
            }
            body.extend_from_slice(&chunk);
        }
        Ok(body)
    }
}

pub async fn submit(args: SubmitArgs) -> anyhow::Result<bool> {
    let server = Server::new(&args.client)?;
    let input = match (&args.text, &args.file) {
        (Some(t), _) if t == "-" => crate::input::read_bounded(
            std::io::stdin(),
            "the task on standard input",
            crate::input::MAX_TASK_BYTES,
        )?,
        (Some(t), _) => t.clone(),
        (None, Some(f)) => crate::input::read_document(f)?,
        (None, None) => bail!("no task given: pass TEXT, --file F, or - to read standard input"),
    };
    let mut body = json!({ "input": input });
    let fields = [
        ("workflow", args.workflow.clone().map(Value::from)),
        (
            "agents",
            (!args.only.is_empty()).then(|| Value::from(args.only.clone())),
        ),
        ("policy", args.policy.clone().map(Value::from)),
        ("deadline", args.deadline.clone().map(Value::from)),
        (
            "branch_timeout",
            args.branch_timeout.clone().map(Value::from),
        ),
        ("merge", args.merge.clone().map(Value::from)),
        ("items", crate::plan::items(&args.each)?.map(Value::from)),
    ];
    for (name, value) in fields {
        if let Some(v) = value {
            body[name] = v;
        }
    }
    let mut request = server
        .request(reqwest::Method::POST, "/v1/runs")
        .json(&body);
    if let Some(key) = &args.idempotency_key {
        request = request.header("Idempotency-Key", key);
    }
    let answer = server.json(request).await?;
    let id = answer["id"]
        .as_str()
        .context("the server answered no run id")?
        .to_owned();
    if !is_run_id(&id) {
        bail!(
            "{} answered with `{}` for the run's id, which is not a run id (run-42): is it fanfare serve?",
            server.base,
            fanfare::report::printable(&id)
        );
    }
    if args.detach {
        output::stdout(&format!("{id}\n"))?;
        return Ok(true);
    }
    eprintln!("fanfare: {id} submitted to {}", server.base);
    follow(&server, &id, args.json).await
}

pub async fn watch(id: &str, json: bool, client: &ClientArgs) -> anyhow::Result<bool> {
    // The id goes into URLs: `../../x?y=` was sent as a path of its own.
    if !is_run_id(id) {
        bail!("`{id}` is not a run id (run ids look like run-42)");
    }
    let server = Server::new(client)?;
    follow(&server, id, json).await
}

/// Whether `id` is a run id (`run-42`): it goes into URLs and onto the terminal.
pub(crate) fn is_run_id(id: &str) -> bool {
    id.strip_prefix("run-")
        .is_some_and(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()))
}

/// How many event streams in a row may end with nothing new before `watch` gives up.
const MAX_IDLE_STREAMS: u32 = 20;

/// Shows run `id` live until it ends, then prints its report. Reconnects (with
/// `Last-Event-ID`) when the stream drops, as long as the server answers.
async fn follow(server: &Server, id: &str, json: bool) -> anyhow::Result<bool> {
    let mut live = Live::new(fanfare::provider::PriceTable::default());
    let mut last: u64 = 0;
    let mut failures = 0;
    // Streams in a row that ended with nothing new: a server that keeps closing the
    // stream was reconnected to twice a second without end (seventh probe).
    let mut idle_streams = 0;
    'stream: loop {
        let mut request = server.request(reqwest::Method::GET, &format!("/v1/runs/{id}/events"));
        if last > 0 {
            request = request.header("Last-Event-ID", last.to_string());
        }
        // A server that takes the connection and never answers is given up on.
        let sent = match tokio::time::timeout(Duration::from_secs(30), request.send()).await {
            Ok(sent) => sent,
            Err(_) => bail!(
                "{} took the connection but did not answer within 30 s",
                server.base
            ),
        };
        let mut response = match sent {
            Ok(r) if r.status().is_success() => r,
            Ok(r) => {
                let status = r.status();
                let body: Value =
                    serde_json::from_slice(&server.read(r).await?).unwrap_or(Value::Null);
                bail!(
                    "the server answered {status}: {}",
                    body["error"]["message"].as_str().unwrap_or("no message")
                );
            }
            Err(e) => {
                failures += 1;
                if failures == 1 {
                    // Said at once: `watch` of a server not there printed nothing.
                    eprintln!(
                        "fanfare: cannot reach {} ({e}); trying again for 30 s",
                        server.base
                    );
                }
                if failures > 30 {
                    return Err(e)
                        .with_context(|| format!("lost fanfare serve at {}", server.base));
                }
                tokio::time::sleep(Duration::from_secs(1)).await;
                continue;
            }
        };
        // An answer that is not an event stream (a web server, a proxy's page) was
        // asked again twice a second without end, silently.
        let kind = response
            .headers()
            .get(reqwest::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("no content type")
            .to_owned();
        if !kind.starts_with("text/event-stream") {
            bail!(
                "{} answered the events of {id} with `{kind}`, not an event stream: is it fanfare serve?",
                server.base
            );
        }
        failures = 0;
        let before = last;
        let mut buffer = String::new();
        loop {
            let chunk = match response.chunk().await {
                Ok(Some(c)) => c,
                // The stream ended (the server stopped): pick it up again.
                Ok(None) | Err(_) => break,
            };
            buffer.push_str(&String::from_utf8_lossy(&chunk).replace("\r\n", "\n"));

            while let Some(cut) = buffer.find("\n\n") {
                let block: String = buffer.drain(..cut + 2).collect();
                let (mut kind, mut data, mut seq) = ("message".to_owned(), String::new(), None);
                for line in block.lines() {
                    if let Some(v) = line.strip_prefix("id:") {
                        seq = v.trim().parse::<u64>().ok();
                    } else if let Some(v) = line.strip_prefix("event:") {
                        kind = v.trim().to_owned();
                    } else if let Some(v) = line.strip_prefix("data:") {
                        data.push_str(v.strip_prefix(' ').unwrap_or(v));
                    }
                }
                if let Some(n) = seq {
                    last = n;
                }
                let value: Value = serde_json::from_str(&data).unwrap_or(Value::Null);
                if kind == "done" {
                    break 'stream;
                }
                if kind == "status" {
                    if let Some(note) = value["note"].as_str() {
                        eprintln!("fanfare: {id}: {}", fanfare::report::one_line(note));
                    }
                }
                if let Some(p) = Progress::of_json(&kind, &value) {
                    live.show(p);
                }
            }
            // What is left is one event not yet whole.
            if buffer.len() > MAX_EVENT {
                bail!(
                    "{} sent an event of more than {MAX_EVENT} bytes; not read further",
                    server.base
                );
            }
        }
        if last == before {
            idle_streams += 1;
            // The run may have ended without the stream saying so: ask.
            let run = server
                .json(server.request(reqwest::Method::GET, &format!("/v1/runs/{id}")))
                .await?;
            let status = run["status"].as_str().unwrap_or("?");
            if !matches!(status, "queued" | "running") {
                break 'stream;
            }
            if idle_streams >= MAX_IDLE_STREAMS {
                bail!(
                    "{} closed the event stream of {id} {MAX_IDLE_STREAMS} times in a row without sending anything new (the run is {status}); giving up",
                    server.base
                );
            }
        } else {
            idle_streams = 0;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    live.finish();
    let run = server
        .json(server.request(reqwest::Method::GET, &format!("/v1/runs/{id}")))
        .await?;
    let status = run["status"].as_str().unwrap_or("?");
    match run.get("report").filter(|r| !r.is_null()) {
        Some(report) if json => {
            output::stdout(&format!("{}\n", serde_json::to_string_pretty(report)?))?;
        }
        Some(report) => {
            let report: fanfare::RunReport = serde_json::from_value(report.clone())
                .context("the server's report is not one this fanfare reads")?;
            output::stdout(&report.render())?;
        }
        None => {}
    }
    if status != "succeeded" {
        let why = run["error"].as_str().unwrap_or("no reason given");
        eprintln!(
            "fanfare: {id} {}: {}",
            fanfare::report::one_line(status),
            fanfare::report::printable(why)
        );
        return Ok(false);
    }
    Ok(true)
}
