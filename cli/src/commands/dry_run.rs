//! `fanfare run --dry-run`: the plan and what it would cost, with no call made.

use fanfare::agent::spec::{AgentSpec, LoadOptions};
use fanfare::agent::{Agent, BranchId, RunId, Task};
use fanfare::provider::{estimate_tokens, AnthropicConfig, OpenAiConfig, PriceTable, Usage};
use fanfare::run::workflow::MapOver;
use fanfare::run::Action;

use crate::args::{ProviderKind, RunArgs};
use crate::output;
use crate::plan::{load_specs, plan, Plan};

/// The model a request naming none would go to, by the provider the flags choose.
fn default_model(args: &RunArgs) -> String {
    if let Some(m) = &args.common.runtime.model {
        return m.clone();
    }
    let anthropic = std::env::var("ANTHROPIC_API_KEY").is_ok_and(|k| !k.trim().is_empty());
    let openai = std::env::var("OPENAI_API_KEY").is_ok_and(|k| !k.trim().is_empty());
    match args.common.runtime.provider {
        Some(ProviderKind::Anthropic) => AnthropicConfig::DEFAULT_MODEL.to_owned(),
        Some(ProviderKind::Openai) => OpenAiConfig::DEFAULT_MODEL.to_owned(),
        Some(ProviderKind::Sim) => "sim-1".to_owned(),
        None if anthropic => AnthropicConfig::DEFAULT_MODEL.to_owned(),
        None if openai => OpenAiConfig::DEFAULT_MODEL.to_owned(),
        None => "sim-1".to_owned(),
    }
}

/// One line of the estimate.
struct Line {
    step: String,
    calls: String,
    model: String,
    tokens: u64,
    cost: Option<f64>,
}

pub fn dry_run(args: &RunArgs, input: &str, items: Option<Vec<String>>) -> anyhow::Result<()> {
    let common = &args.common;
    let options = LoadOptions {
        allow_prompts_outside: common.runtime.allow_prompts_outside,
    };
    let (specs, source) = load_specs(common.runtime.agents.as_deref(), options)?;
    let plan = plan(common, &specs, &source)?;
    let mut prices = PriceTable::default();
    if let Some(path) = &common.runtime.prices {
        prices.merge_file(path)?;
    }
    let default = default_model(args);
    let task = |text: &str| Task {
        branch: BranchId {
            run: RunId(0),
            index: 0,
            item: None,
        },
        input: text.into(),
        upstream: Vec::new().into(),
        model: None,
        templated: true,
        schema: None,
        deadline: None,
        deltas: None,
    };
    // One call of `agent` on `text`: model, tokens in + out at most.
    let call = |agent: &str, text: &str, model: Option<&str>| -> (String, u64) {
        let spec = specs.iter().find(|s| s.name == agent);
        let mut t = task(text);
        t.model = model.map(str::to_owned);
        match spec.and_then(|s: &AgentSpec| s.call_estimate(&t)) {
            Some(e) => (
                e.model.unwrap_or_else(|| default.clone()),
                e.input_tokens + e.max_output_tokens,
            ),
            None => (default.clone(), estimate_tokens(text) + 512),
        }
    };
    let mut lines = Vec::new();
    let mut out = String::new();
    match &plan {
        Plan::FanOut(names) => {
            out.push_str(&format!("plan: a fan-out to {}\n", names.join(", ")));
            for n in names {
                let (model, tokens) = call(n, input, None);
                lines.push(Line {
                    step: n.clone(),
                    calls: "1".to_owned(),
                    cost: prices.cost(
                        &model,
                        &Usage {
                            input_tokens: tokens,
                            ..Usage::default()
                        },
                    ),
                    model,
                    tokens,
                });
            }
        }
        Plan::Workflow(w) => {
            out.push_str(&crate::commands::workflows::render(w, &specs));
            for s in &w.steps {
                let Action::Agent(agent) = &s.action else {
                    lines.push(Line {
                        step: s.name.clone(),
                        calls: "code".to_owned(),
                        model: "-".to_owned(),
                        tokens: 0,
                        cost: Some(0.0),
                    });
                    continue;
                };
                // Upstream outputs are unknown before the run: count each as its
                // agent's whole max_tokens.
                let text = s.input.as_ref().map_or(input.to_owned(), |t| {
                    t.render(input, None, |name| {
                        let up = w.steps.iter().find(|u| u.name == name)?;
                        let max = match &up.action {
                            Action::Agent(a) => specs
                                .iter()
                                .find(|x| &x.name == a)
                                .map_or(512, |x| x.max_tokens),
                            Action::Code { .. } | Action::Workflow(_) => 512,
                        };
                        Some("word ".repeat((max as usize * 3) / 4))
                    })
                });
                let (model, tokens) = call(agent, &text, s.model.as_deref());
                let (calls, n) = match &s.map {
                    None => ("1".to_owned(), 1),
                    Some(m) => match (&m.over, &items) {
                        (MapOver::Given, Some(items)) => {
                            (items.len().to_string(), items.len() as u64)
                        }
                        _ => ("1 per item".to_owned(), 1),
                    },
                };
                let usage = Usage {
                    input_tokens: tokens * n,
                    ..Usage::default()
                };
                lines.push(Line {
                    step: s.name.clone(),
                    calls,
                    cost: prices.cost(&model, &usage),
                    model,
                    tokens: tokens * n,
                });
            }
        }
    }
    out.push_str("estimate (each call's prompt plus its whole max_tokens, priced as input):\n");
    let width = lines.iter().map(|l| l.step.len()).max().unwrap_or(4).max(4);
    let mut total = 0;
    let mut cost = Some(0.0);
    for l in &lines {
        total += l.tokens;
        cost = cost.zip(l.cost).map(|(a, b)| a + b);
        out.push_str(&format!(
            "  {:<width$}  {:>10} calls  {:<22} ≤ {:>7} tokens  {}\n",
            l.step,
            l.calls,
            l.model,
            l.tokens,
            l.cost.map_or("unpriced".to_owned(), |c| format!("${c:.4}"))
        ));
    }
    out.push_str(&format!(
        "  total ≤ {total} tokens, {} (before the merge); nothing was called\n",
        cost.map_or("cost unknown".to_owned(), |c| format!("≤ ${c:.4}"))
    ));
    output::stdout(&out)?;
    Ok(())
}
