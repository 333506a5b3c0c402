use std::collections::HashMap;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::time::Duration;

use fanfare::provider::CompletionRequest;
use fanfare::provider::{SimConfig, SimProfile, SimProvider};
use fanfare::{
    Agent, AgentContext, AgentOutput, AgentReply, Fanfare, FanfareBuilder, Provider, Task,
};

/// An agent that asks the provider, optionally panicking on every `panic_every`-th task.
pub struct TestAgent {
    pub name: String,
    pub panic_every: Option<u32>,
    pub calls: Arc<AtomicU32>,
}

impl TestAgent {
    pub fn new(name: &str) -> Self {
        Self {
            name: name.to_owned(),
            panic_every: None,
            calls: Arc::default(),
        }
    }

    pub fn panicking_every(name: &str, n: u32) -> Self {
        Self {
            panic_every: Some(n),
            ..Self::new(name)
        }
    }
}

impl Agent for TestAgent {
    fn name(&self) -> &str {
        &self.name
    }

    async fn run(&self, ctx: &AgentContext, task: Task) -> AgentReply {
        let call = self.calls.fetch_add(1, Ordering::SeqCst) + 1;
        if self.panic_every.is_some_and(|n| call.is_multiple_of(n)) {
            panic!("{} panics on task {call}", self.name);
        }
        let mut request =
            CompletionRequest::new(self.name.clone(), "system", task.prompt().to_string());
        // Whoever watches the run sees the answer as it streams.
        request.deltas = task.deltas.clone();
        let c = ctx.provider.complete(request).await?;
        Ok(AgentOutput::from(c))
    }
}

/// A sim provider where each named agent has a fixed latency (and failure rate).
pub fn sim(profiles: &[(&str, u64, f64)]) -> SimProvider {
    let per_agent: HashMap<String, SimProfile> = profiles
        .iter()
        .map(|(name, ms, fail)| {
            (
                name.to_string(),
                SimProfile {
                    failure_rate: *fail,
                    ..SimProfile::fixed(Duration::from_millis(*ms))
                },
            )
        })
        .collect();
    SimProvider::new(SimConfig {
        seed: 7,
        default: SimProfile::instant(),
        per_agent,
    })
}

/// A runtime with a `TestAgent` agent per profile.
pub async fn runtime(provider: &SimProvider, profiles: &[(&str, u64, f64)]) -> Fanfare {
    builder(provider, profiles).start().await.unwrap()
}

pub fn builder(provider: &SimProvider, profiles: &[(&str, u64, f64)]) -> FanfareBuilder {
    let mut b = Fanfare::builder(Arc::new(provider.clone()));
    for (name, _, _) in profiles {
        b = b.agent(TestAgent::new(name));
    }
    b
}

/// Waits (on tokio's clock) until `cond` holds, failing after `limit`.
pub async fn eventually(limit: Duration, mut cond: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + limit;
    while !cond() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "condition not met within {limit:?}"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// Keeps injected panics (the experiment) from flooding the output with backtraces.
pub fn quiet_injected_panics() {
    fanfare::agent::faults::silence_injected_panics();
}
