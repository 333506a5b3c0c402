//! `sim`: an in-process, deterministic simulated model.
//!
//! It lets `fanfare run` work on a machine with no API key, and gives tests and
//! examples a model whose latency, failures and token usage are chosen, not hoped for.
//! Latency is `latency + jitter` where the jitter is drawn from a seeded hash, so a
//! given seed, agent and call sequence always gives the same timings; it sleeps on
//! tokio's clock, so tests with paused time run instantly. Text is assembled from the
//! prompt and a fixed phrase bank: readable, repeatable, and plainly not a model.
//!
//! [`SimProvider::stats`] counts calls started, completed, failed and *aborted* (the
//! future was dropped before it finished), which is how tests prove that cancelling a
//! branch really stopped its model call.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::{
    estimate_tokens, BoxFuture, Completion, CompletionRequest, Provider, ProviderError,
    ProviderErrorKind, Usage,
};

/// Latency, failure and size profile of simulated calls.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SimProfile {
    /// Fixed latency of every call.
    #[serde(with = "millis", rename = "latency_ms")]
    pub latency: Duration,
    /// Uniform extra latency in `[0, jitter]`.
    #[serde(with = "millis", rename = "jitter_ms", default)]
    pub jitter: Duration,
    /// Probability in `[0, 1]` that a call fails with a simulated HTTP 500.
    #[serde(default)]
    pub failure_rate: f64,
    /// Roughly how many words a reply has (capped by the request's `max_tokens`).
    #[serde(default = "default_words")]
    pub words: u32,
}

fn default_words() -> u32 {
    60
}

impl Default for SimProfile {
    fn default() -> Self {
        Self {
            latency: Duration::from_millis(400),
            jitter: Duration::from_millis(300),
            failure_rate: 0.0,
            words: default_words(),
        }
    }
}

impl SimProfile {
    /// A profile with no latency and no failures: measures the runtime, not the model.
    pub fn instant() -> Self {
        Self {
            latency: Duration::ZERO,
            jitter: Duration::ZERO,
            failure_rate: 0.0,
            words: 12,
        }
    }

    /// A profile with a fixed latency and no jitter or failures.
    pub fn fixed(latency: Duration) -> Self {
        Self {
            latency,
            jitter: Duration::ZERO,
            ..Self::instant()
        }
    }
}

/// Configuration of a [`SimProvider`].
#[derive(Clone, Debug, Default)]
pub struct SimConfig {
    /// Seed for jitter, failures and wording.
    pub seed: u64,
    /// Profile for agents without their own.
    pub default: SimProfile,
    /// Per-agent profiles, keyed by the request's `agent`.
    pub per_agent: HashMap<String, SimProfile>,
}

/// Counters of a [`SimProvider`]'s calls.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SimStats {
    /// Calls begun.
    pub started: u64,
    /// Calls that returned a completion.
    pub completed: u64,
    /// Calls that returned a simulated failure.
    pub failed: u64,
    /// Calls whose future was dropped before they finished (cancelled or aborted).
    pub aborted: u64,
}

#[derive(Default)]
struct Counters {
    calls: AtomicU64,
    started: AtomicU64,
    completed: AtomicU64,
    failed: AtomicU64,
    aborted: AtomicU64,
}

/// The simulated provider. Cheap to clone; clones share counters.
#[derive(Clone)]
pub struct SimProvider {
    config: Arc<SimConfig>,
    counters: Arc<Counters>,
}

impl std::fmt::Debug for SimProvider {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SimProvider")
            .field("config", &self.config)
            .field("stats", &self.stats())
            .finish()
    }
}

impl SimProvider {
    /// A simulated provider with the given configuration.
    pub fn new(config: SimConfig) -> Self {
        Self {
            config: Arc::new(config),
            counters: Arc::default(),
        }
    }

    /// A simulated provider where every agent uses `profile`.
    pub fn with_profile(profile: SimProfile) -> Self {
        Self::new(SimConfig {
            default: profile,
            ..SimConfig::default()
        })
    }

    /// Call counters so far.
    pub fn stats(&self) -> SimStats {
        SimStats {
            started: self.counters.started.load(Ordering::Relaxed),
            completed: self.counters.completed.load(Ordering::Relaxed),
            failed: self.counters.failed.load(Ordering::Relaxed),
            aborted: self.counters.aborted.load(Ordering::Relaxed),
        }
    }

    fn profile(&self, agent: &str) -> &SimProfile {
        self.config
            .per_agent
            .get(agent)
            .unwrap_or(&self.config.default)
    }
}

/// Counts an abort when a call's future is dropped before it finished.
struct AbortWatch {
    counters: Arc<Counters>,
    done: bool,
}

impl Drop for AbortWatch {
    fn drop(&mut self) {
        if !self.done {
            self.counters.aborted.fetch_add(1, Ordering::Relaxed);
        }
    }
}

/// How many pieces a simulated answer is streamed in, to a caller with a sink.
const STREAM_PIECES: usize = 8;

impl Provider for SimProvider {
    fn name(&self) -> &str {
        "sim"
    }

    fn is_simulated(&self) -> bool {
        true
    }

    fn default_model(&self) -> Option<&str> {
        Some("sim-1")
    }

    fn complete(
        &self,
        request: CompletionRequest,
    ) -> BoxFuture<'_, Result<Completion, ProviderError>> {
        let call = self.counters.calls.fetch_add(1, Ordering::Relaxed);
        let profile = self.profile(&request.agent).clone();
        let seed = self.config.seed;
        let counters = self.counters.clone();
        Box::pin(async move {
            counters.started.fetch_add(1, Ordering::Relaxed);
            let mut watch = AbortWatch {
                counters: counters.clone(),
                done: false,
            };
            let model = request.model.clone().unwrap_or_else(|| "sim-1".to_owned());
            let key = mix(seed ^ hash_str(&request.agent), call);
            let jitter_nanos = profile.jitter.as_nanos() as u64;
            let jitter = if jitter_nanos == 0 {
                0
            } else {
                mix(key, 1) % (jitter_nanos + 1)
            };
            let delay = profile.latency + Duration::from_nanos(jitter);
            let roll = (mix(key, 2) >> 11) as f64 / (1u64 << 53) as f64;
            let fails = roll < profile.failure_rate;
            match &request.deltas {
                // A caller watching the text live gets it in pieces over the latency,
                // as a streamed answer would come.
                Some(sink) if !fails && request.schema.is_none() => {
                    let text = compose(&request, &profile, key);
                    let words: Vec<&str> = text.split_inclusive(' ').collect();
                    let pieces: Vec<String> = words
                        .chunks(words.len().div_ceil(STREAM_PIECES).max(1))
                        .map(|p| p.concat())
                        .collect();
                    // Piece i of n at i/n of the latency: the last one exactly at it.
                    let start = tokio::time::Instant::now();
                    let n = pieces.len().max(1) as u32;
                    for (i, piece) in (1u32..).zip(pieces) {
                        tokio::time::sleep_until(start + delay * i / n).await;
                        sink.send(super::Delta::Text(piece));
                    }
                    tokio::time::sleep_until(start + delay).await;
                }
                _ if !delay.is_zero() => tokio::time::sleep(delay).await,
                _ => {}
            }
            watch.done = true;
            if fails {
                counters.failed.fetch_add(1, Ordering::Relaxed);
                let kind = ProviderErrorKind::Status {
                    status: 500,
                    retry_after_ms: None,
                    excerpt: format!(
                        "simulated server error (failure_rate {})",
                        profile.failure_rate
                    ),
                };
                return Err(ProviderError::new("sim", &model, &request, kind));
            }
            // Offered tools and none called yet: call the first, with arguments of
            // its input's shape, so that tool loops run offline end to end.
            let called = request.messages.iter().any(|m| !m.tool_results.is_empty());
            // The tool the request names, else the first; none when it may call none.
            let chosen = match &request.tool_choice {
                super::ToolChoice::Never => None,
                super::ToolChoice::Tool(name) => request.tools.iter().find(|t| t.name == *name),
                _ => request.tools.first(),
            };
            if let (Some(tool), false) = (chosen, called) {
                let prose = compose(&request, &profile, key);
                let input = shaped(&required_only(&tool.input_schema), &prose, key);
                counters.completed.fetch_add(1, Ordering::Relaxed);
                return Ok(Completion {
                    model,
                    usage: Usage {
                        input_tokens: request.prompt_tokens(),
                        output_tokens: estimate_tokens(&input.to_string()),
                        ..Usage::default()
                    },
                    stop_reason: Some("tool_use".to_owned()),
                    attempts: 1,
                    tool_calls: vec![super::ToolCall {
                        id: format!("sim-call-{call}"),
                        name: tool.name.clone(),
                        input,
                        malformed: false,
                    }],
                    ..Completion::default()
                });
            }
            let text = match &request.schema {
                // A structured request gets an answer of the asked shape.
                Some(schema) => {
                    shaped(&schema.schema, &compose(&request, &profile, key), key).to_string()
                }
                None => compose(&request, &profile, key),
            };
            // After a tool answered, the answer quotes what it said.
            let text = match request
                .messages
                .iter()
                .rev()
                .find_map(|m| m.tool_results.first())
            {
                Some(result) if request.schema.is_none() => {
                    let quoted: String = result.content.chars().take(200).collect();
                    format!("{text}\n\nThe tool said: {quoted}")
                }
                _ => text,
            };
            // The whole prompt, the shared prefix (a fan-out's task) included.
            let input_tokens = request.prompt_tokens();
            let output_tokens = estimate_tokens(&text);
            counters.completed.fetch_add(1, Ordering::Relaxed);
            Ok(Completion {
                text,
                model,
                usage: Usage {
                    input_tokens,
                    output_tokens,
                    ..Usage::default()
                },
                stop_reason: Some("end_turn".to_owned()),
                attempts: 1,
                ..Completion::default()
            })
        })
    }
}

const OPENINGS: &[&str] = &[
    "The main point here is {a}.",
    "Read closely, the request turns on {a} and {b}.",
    "Two things stand out: {a} and {b}.",
    "The first question is how {a} is handled.",
];

const POINTS: &[&str] = &[
    "Pin down who owns {a} and review it before launch.",
    "Treat {a} as the largest exposure until there is evidence otherwise.",
    "Measure {a} against a stated target rather than assuming it scales.",
    "Write down how {a} interacts with {b}; that is where surprises hide.",
    "Keep {a} out of anything retained longer than it needs to be.",
    "A staged rollout limits the damage if {a} behaves differently in production.",
    "Document the assumptions behind {b} so they can be checked later.",
    "The cost of {b} grows with volume, so budget for the peak, not the average.",
];

const STOPWORDS: &[&str] = &[
    "about", "above", "after", "again", "being", "below", "between", "could", "every", "first",
    "their", "there", "these", "thing", "think", "those", "through", "under", "where", "which",
    "while", "would", "should", "other", "might", "shall", "still", "since", "until", "whose",
];

/// A value of the shape `schema` describes — an `enum`'s value, every property of
/// an object, one or two items of an array — with strings taken from `prose`.
/// `schema` with only its required properties: a tool's arguments as a careful
/// caller writes them (optional ones left to their defaults).
fn required_only(schema: &serde_json::Value) -> serde_json::Value {
    let mut schema = schema.clone();
    let required: Vec<String> = schema
        .get("required")
        .and_then(serde_json::Value::as_array)
        .map(|r| {
            r.iter()
                .filter_map(|v| v.as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default();
    if let Some(props) = schema
        .get_mut("properties")
        .and_then(serde_json::Value::as_object_mut)
    {
        props.retain(|name, _| required.contains(name));
    }
    schema
}

fn shaped(schema: &serde_json::Value, prose: &str, key: u64) -> serde_json::Value {
    use serde_json::Value;
    fn go(schema: &Value, sentences: &[&str], key: u64, depth: u32) -> Value {
        if let Some(values) = schema.get("enum").and_then(Value::as_array) {
            if !values.is_empty() {
                return values[(key % values.len() as u64) as usize].clone();
            }
        }
        // What the schema shows as its value: a tool's example path, say.
        if let Some(v) = schema
            .get("default")
            .or_else(|| schema.get("examples").and_then(|e| e.get(0)))
        {
            return v.clone();
        }
        if depth > 8 {
            return Value::Null;
        }
        match schema.get("type").and_then(Value::as_str) {
            Some("object") => Value::Object(
                schema
                    .get("properties")
                    .and_then(Value::as_object)
                    .into_iter()
                    .flatten()
                    .enumerate()
                    .map(|(i, (k, s))| (k.clone(), go(s, sentences, mix(key, i as u64), depth + 1)))
                    .collect(),
            ),
            Some("array") => {
                let item = schema.get("items").unwrap_or(&Value::Null);
                (0..1 + key % 2)
                    .map(|i| go(item, sentences, mix(key, 100 + i), depth + 1))
                    .collect()
            }
            Some("integer") => Value::from(key % 10),
            Some("number") => Value::from((key % 100) as f64 / 10.0),
            Some("boolean") => Value::from(key.is_multiple_of(2)),
            Some("null") => Value::Null,
            _ => Value::from(sentences[(key % sentences.len() as u64) as usize].trim()),
        }
    }
    let sentences: Vec<&str> = prose
        .split_inclusive(". ")
        .filter(|s| !s.trim().is_empty())
        .collect();
    let sentences = if sentences.is_empty() {
        vec!["ok"]
    } else {
        sentences
    };
    go(schema, &sentences, key, 0)
}

/// Builds a deterministic reply from the prompt's salient words and the phrase bank.
fn compose(request: &CompletionRequest, profile: &SimProfile, key: u64) -> String {
    // A fan-out branch's task is its shared prefix; otherwise the last message.
    let prompt = match request.shared_prefix.as_deref() {
        Some(prefix) => prefix,
        None => request
            .messages
            .last()
            .map(|m| m.content.as_str())
            .unwrap_or(""),
    };
    // A merge prompt lists perspectives under `## name` headings: take the topics
    // from the task part only, and name the perspectives being merged.
    let (task_part, merged): (&str, Vec<&str>) = match prompt.find("\n## ") {
        Some(at) => (
            &prompt[..at],
            prompt
                .lines()
                .filter_map(|l| l.strip_prefix("## "))
                .map(str::trim)
                .collect(),
        ),
        None => (prompt, Vec::new()),
    };
    // Words of 5 to 24 letters, the first 64 distinct: a task of one huge word was
    // quoted whole in every answer (a 1 MB input made ~95 MB of journal), and one of
    // many distinct words was compared word by word (quadratic).
    let mut topics: Vec<String> = Vec::new();
    for word in task_part.split(|c: char| !c.is_alphanumeric() && c != '-') {
        let w = word.trim_matches('-');
        if !(5..=24).contains(&w.chars().count()) {
            continue;
        }
        let w = w.to_lowercase();
        if !STOPWORDS.contains(&w.as_str()) && !topics.contains(&w) {
            topics.push(w);
            if topics.len() == 64 {
                break;
            }
        }
    }
    if topics.is_empty() {
        topics.push("the request".to_owned());
    }
    let pick = |n: u64| topics[(mix(key, n) % topics.len() as u64) as usize].clone();
    let fill = |t: &str, n: u64| t.replace("{a}", &pick(n)).replace("{b}", &pick(n + 7));
    let mut out = format!("[simulated {}] ", request.agent);
    if !merged.is_empty() {
        out.push_str(&format!("Merging the {} perspectives. ", merged.join(", ")));
    }
    out.push_str(&fill(
        OPENINGS[(mix(key, 3) % OPENINGS.len() as u64) as usize],
        10,
    ));
    let budget = profile
        .words
        .min(request.max_tokens.saturating_mul(3) / 4)
        .max(8) as usize;
    // Walk the phrase bank from a seeded start so no point repeats within a reply.
    let start = mix(key, 4) as usize;
    for i in 0..POINTS.len() {
        if out.split_whitespace().count() >= budget {
            break;
        }
        out.push(' ');
        out.push_str(&fill(POINTS[(start + i) % POINTS.len()], 30 + i as u64));
    }
    out
}

/// splitmix64 finaliser over two inputs.
fn mix(a: u64, b: u64) -> u64 {
    let mut z = a ^ b.wrapping_mul(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// FNV-1a, stable across runs and platforms (unlike `DefaultHasher`'s contract).
fn hash_str(s: &str) -> u64 {
    s.bytes().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ b as u64).wrapping_mul(0x0100_0000_01b3)
    })
}

mod millis {
    use serde::{Deserialize, Deserializer, Serializer};
    use std::time::Duration;

    pub fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_u64(d.as_millis() as u64)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        Ok(Duration::from_millis(u64::deserialize(d)?))
    }
}

#[cfg(test)]
mod tests;
