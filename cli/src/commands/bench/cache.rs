//! `bench cache`: what shared-prefix caching buys against a real server (llama.cpp's
//! prompt cache, say), side by side. Four specialists read one document:
//!
//! - `instructions-first`: the layout fanfare had before — each specialist's
//!   instructions lead the prompt and the document follows, so no two prompts share
//!   more than the chat template's first tokens;
//! - `document-first`: today's — the document leads (`shared_prefix`), the
//!   instructions follow, so every call after the first can read it from the cache;
//! - `fanfare --cache-warm`: the same through a whole run, the first branch alone
//!   until its answer starts.
//!
//! One call at a time, so that the server's single cache slot is the one each call
//! reads. One JSON line per call with its prompt and cached tokens as the server
//! counted them, then one line per case with the share of branches 2–4's prompts that
//! came from the cache.

use std::time::Duration;

use anyhow::{bail, Context as _};
use fanfare::agent::spec::AgentSpec;
use fanfare::provider::{
    AdmissionConfig, AnthropicConfig, AnthropicProvider, ApiKey, CompletionRequest, OpenAiConfig,
    OpenAiProvider, Provider, Stack, Usage,
};
use fanfare::{Fanfare, RunRequest};
use serde_json::json;

use crate::args::Wire;

fn provider(wire: Wire, base_url: &str, model: &str) -> anyhow::Result<Box<dyn Provider>> {
    Ok(match wire {
        Wire::Openai => {
            let mut c = OpenAiConfig::new(None);
            c.base_url = base_url.to_owned();
            c.default_model = model.to_owned();
            c.timeout = Duration::from_secs(300);
            Box::new(OpenAiProvider::new(c).context("--base-url")?)
        }
        Wire::Anthropic => {
            let mut c = AnthropicConfig::new(ApiKey::new("local-no-key-needed"));
            c.base_url = base_url.to_owned();
            c.default_model = model.to_owned();
            c.timeout = Duration::from_secs(300);
            Box::new(AnthropicProvider::new(c).context("--base-url")?)
        }
    })
}

/// A document of about `words` words.
fn document(words: usize) -> String {
    (0..words.div_ceil(12))
        .map(|i| format!("Entry {i}: the service stores each user query in plain text logs."))
        .collect::<Vec<_>>()
        .join(" ")
}

fn specialists() -> anyhow::Result<Vec<AgentSpec>> {
    Ok(fanfare_agents::perspectives()?
        .into_iter()
        .map(|mut s| {
            s.max_tokens = 8;
            s.temperature = Some(0.0);
            s
        })
        .collect())
}

/// Prints a case's line: the share of branches 2–4's prompts read from the cache.
fn summary(case: &str, usages: &[Usage]) -> anyhow::Result<()> {
    let later = &usages[1.min(usages.len())..];
    let prompt: u64 = later
        .iter()
        .map(|u| u.input_tokens + u.cache_read_input_tokens)
        .sum();
    let cached: u64 = later.iter().map(|u| u.cache_read_input_tokens).sum();
    crate::output::line(format_args!(
        "{}",
        json!({"case": case, "later_branches_prompt_tokens": prompt,
               "later_branches_cached_tokens": cached,
               "cached_share": if prompt == 0 { 0.0 } else { cached as f64 / prompt as f64 }})
    ))?;
    Ok(())
}

pub async fn cache(wire: Wire, base_url: &str, model: &str, words: usize) -> anyhow::Result<()> {
    if words == 0 {
        bail!("--words takes a count of at least 1");
    }
    let doc = document(words);
    let specs = specialists()?;
    let direct = provider(wire, base_url, model)?;
    for (case, shared) in [("instructions-first", false), ("document-first", true)] {
        let mut usages = Vec::new();
        for (i, s) in specs.iter().enumerate() {
            let mut request = if shared {
                let mut r = CompletionRequest::new(&s.name, &s.prompt, "Your findings:");
                r.shared_prefix = Some(doc.as_str().into());
                r
            } else {
                CompletionRequest::new(&s.name, &s.prompt, format!("{doc}\n\nYour findings:"))
            };
            request.max_tokens = s.max_tokens;
            request.temperature = s.temperature;
            let c = direct
                .complete(request)
                .await
                .with_context(|| format!("{case}: call {} to {base_url}", i + 1))?;
            crate::output::line(format_args!(
                "{}",
                json!({"case": case, "branch": i + 1, "agent": s.name,
                       "prompt_tokens": c.usage.input_tokens + c.usage.cache_read_input_tokens,
                       "cached_tokens": c.usage.cache_read_input_tokens})
            ))?;
            usages.push(c.usage);
        }
        summary(case, &usages)?;
    }
    // The same through a whole run, with the warm-up, streamed.
    let (stacked, _) = Stack::new()
        .stream(true)
        .admission(AdmissionConfig {
            max_concurrency: 1,
            adaptive: false,
            ..AdmissionConfig::default()
        })
        .build(provider(wire, base_url, model)?);
    let names: Vec<String> = specs.iter().map(|s| s.name.clone()).collect();
    let fanfare = Fanfare::builder(stacked).agents_from(specs).start().await?;
    let request = RunRequest::fan_out(doc, names)
        .deadline(Duration::from_secs(600))
        .branch_timeout(Duration::from_secs(300))
        .cache_warm(true);
    let report = fanfare.run(request).await?;
    fanfare.shutdown().await;
    let mut branches: Vec<_> = report.branches.iter().collect();
    // In the order the calls went out (the held branches start together and race for
    // the gate).
    branches.sort_by_key(|b| b.called_at());
    for (i, b) in branches.iter().enumerate() {
        crate::output::line(format_args!(
            "{}",
            json!({"case": "fanfare --cache-warm", "branch": i + 1, "agent": b.agent,
                   "prompt_tokens": b.usage.input_tokens + b.usage.cache_read_input_tokens,
                   "cached_tokens": b.usage.cache_read_input_tokens,
                   "error": b.error})
        ))?;
    }
    let usages: Vec<Usage> = branches.iter().map(|b| b.usage).collect();
    summary("fanfare --cache-warm", &usages)
}
