//! `fanfare run --dry-run`: the plan and what it would cost, with no call made.

use fanfare::agent::spec::{AgentSpec, LoadOptions};
use fanfare::agent::{Agent, BranchId, CallEstimate, RunId, Task};
use fanfare::provider::{estimate_tokens, AnthropicConfig, OpenAiConfig, PriceTable, Usage};
use fanfare::run::workflow::MapOver;
use fanfare::run::{Action, MergeStrategy};

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
    /// At most: every call's prompt in, its whole `max_tokens` out.
    usage: Usage,
    cost: Option<f64>,
    /// The most text it may give a merge that reads it (its calls' `max_tokens`).
    merged: u64,
}

/// About what an LLM merge's instructions add to the outputs it reads.
const MERGE_PROMPT_TOKENS: u64 = 300;

pub fn dry_run(args: &RunArgs, input: &str, items: Option<Vec<String>>) -> anyhow::Result<()> {
    let common = &args.common;
    let files = crate::plan::each_files(&args.each)?;
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
        allowance: None,
        tool_journal: None,
        approvals: None,
        replay: std::sync::Arc::new([]),
        tools_governed: false,
        depth: 0,
        delegator: None,
        meter: None,
        deadline: None,
        deltas: None,
    };
    // One call of `agent` on `text`: its model and what it may use at most, as the
    // run's budget reserves it.
    let call = |agent: &str, text: &str, model: Option<&str>| -> (String, Usage) {
        let spec = specs.iter().find(|s| s.name == agent);
        let mut t = task(text);
        t.model = model.map(str::to_owned);
        let estimate = spec
            .and_then(|s: &AgentSpec| s.call_estimate(&t))
            .unwrap_or_else(|| CallEstimate {
                model: None,
                input_tokens: estimate_tokens(text),
                max_output_tokens: 512,
            });
        (
            estimate.model.clone().unwrap_or_else(|| default.clone()),
            estimate.usage(),
        )
    };
    // The steps a merge reads: every branch of a fan-out, a workflow's final steps.
    let mut finals: Vec<String> = Vec::new();
    let mut lines = Vec::new();
    let mut out = String::new();
    match &plan {
        Plan::FanOut(names) => {
            out.push_str(&format!("plan: a fan-out to {}\n", names.join(", ")));
            for n in names {
                let (model, usage) = call(n, input, None);
                finals.push(n.clone());
                lines.push(Line {
                    step: n.clone(),
                    calls: "1".to_owned(),
                    cost: prices.cost(&model, &usage),
                    model,
                    merged: usage.output_tokens,
                    usage,
                });
            }
        }
        Plan::Workflow(w) => {
            out.push_str(&crate::commands::workflows::render(w, &specs));
            finals.extend(
                w.steps
                    .iter()
                    .filter(|s| !w.steps.iter().any(|d| d.after.contains(&s.name)))
                    .map(|s| s.name.clone()),
            );
            for s in &w.steps {
                let Action::Agent(agent) = &s.action else {
                    lines.push(Line {
                        step: s.name.clone(),
                        calls: "code".to_owned(),
                        model: "-".to_owned(),
                        usage: Usage::default(),
                        cost: Some(0.0),
                        // Its output is made of its inputs': count it as one answer.
                        merged: 512,
                    });
                    continue;
                };
                // Upstream outputs are unknown before the run: count each as its
                // agent's whole max_tokens.
                let text = |item: Option<(usize, &str)>| {
                    s.input.as_ref().map_or(input.to_owned(), |t| {
                        t.render(input, item, |name| {
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
                    })
                };
                let model = s.model.as_deref();
                let (calls, (model, usage)) = match (&s.map, &items) {
                    (None, _) => ("1".to_owned(), call(agent, &text(None), model)),
                    // Each item's own prompt, when the items are known.
                    (Some(m), Some(items)) if m.over == MapOver::Given => {
                        let mut sum = (default.clone(), Usage::default());
                        for (i, item) in items.iter().enumerate() {
                            let (m, u) = call(agent, &text(Some((i, item))), model);
                            sum.0 = m;
                            sum.1 += u;
                        }
                        (items.len().to_string(), sum)
                    }
                    (Some(_), _) => ("1 per item".to_owned(), call(agent, &text(None), model)),
                };
                lines.push(Line {
                    step: s.name.clone(),
                    calls,
                    cost: prices.cost(&model, &usage),
                    model,
                    merged: usage.output_tokens,
                    usage,
                });
            }
        }
    }
    let request = crate::plan::request_for(common, input.to_owned(), &plan, items)?;
    if let Some(MergeStrategy::Llm {
        model, max_tokens, ..
    }) = &request.merge
    {
        let read: u64 = lines
            .iter()
            .filter(|l| finals.contains(&l.step))
            .map(|l| l.merged)
            .sum();
        let usage = Usage {
            input_tokens: estimate_tokens(input) + MERGE_PROMPT_TOKENS + read,
            output_tokens: u64::from(*max_tokens),
            ..Usage::default()
        };
        let model = model.clone().unwrap_or_else(|| default.clone());
        lines.push(Line {
            step: "merge".to_owned(),
            calls: "1".to_owned(),
            cost: prices.cost(&model, &usage),
            model,
            merged: 0,
            usage,
        });
    }
    if !files.is_empty() {
        out.push_str(&format!("items (--each): {} files\n", files.len()));
        for f in files.iter().take(SHOWN_FILES) {
            out.push_str(&format!("  {}\n", f.display()));
        }
        if files.len() > SHOWN_FILES {
            out.push_str(&format!("  … and {} more\n", files.len() - SHOWN_FILES));
        }
    }
    out.push_str(
        "estimate (at most: each call's prompt in and its whole max_tokens out, as a budget reserves it):\n",
    );
    let width = lines.iter().map(|l| l.step.len()).max().unwrap_or(4).max(4);
    let mut total = 0;
    let mut cost = Some(0.0);
    for l in &lines {
        total += l.usage.total();
        cost = cost.zip(l.cost).map(|(a, b)| a + b);
        out.push_str(&format!(
            "  {:<width$}  {:>10} calls  {:<22} ≤ {:>7} in {:>7} out  {}\n",
            l.step,
            l.calls,
            l.model,
            l.usage.input_tokens,
            l.usage.output_tokens,
            l.cost.map_or("unpriced".to_owned(), |c| format!("${c:.4}"))
        ));
    }
    out.push_str(&format!(
        "  total ≤ {total} tokens, {}; nothing was called\n",
        cost.map_or("cost unknown".to_owned(), |c| format!("≤ ${c:.4}"))
    ));
    if let Some(MergeStrategy::Llm { .. }) = &request.merge {
        out.push_str(
            "  (the merge counted as one call: outputs too long for its model's window are condensed first, in more calls)\n",
        );
    }
    output::stdout(&out)?;
    Ok(())
}

/// The `--each` files listed by name.
const SHOWN_FILES: usize = 20;
