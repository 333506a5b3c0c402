//! From flags to a started runtime: agent specs, the provider stack, prices, and the
//! run request. Shared by `run` and `batch`.

use std::sync::Arc;

use anyhow::{bail, Context as _};
use fanfare::agent::faults::{self, Faulty};
use fanfare::agent::spec::{self, AgentSpec};
use fanfare::provider::PriceTable;
use fanfare::provider::{
    endpoint_id, redact_url, AdmissionConfig, AnthropicConfig, AnthropicProvider, ApiKey,
    ExponentialBackoff, HedgeConfig, OpenAiConfig, OpenAiProvider, Provider, Redactor, SimConfig,
    SimProvider, Stack,
};
use fanfare::supervision::SupervisionConfig;
use fanfare::{Fanfare, FanfareBuilder};

use crate::args::{CommonArgs, ProviderKind, RunArgs, RuntimeArgs};
use crate::input::{read_bounded, MAX_TASK_BYTES};
use crate::limits::{self, store::Store};
use crate::plan::{load_specs, plan, spec_dir, Plan};
use crate::tools::Tools;

pub fn read_input(args: &RunArgs) -> anyhow::Result<String> {
    let text = match (&args.text, &args.file) {
        // A map over files needs no task text of its own.
        (None, None) if !args.each.is_empty() => return Ok("the documents".to_owned()),
        (Some(t), _) if t == "-" => read_bounded(
            std::io::stdin(),
            "the task on standard input",
            MAX_TASK_BYTES,
        )?,
        (Some(t), _) => t.clone(),
        (None, Some(f)) => read_bounded(
            std::fs::File::open(f).with_context(|| format!("reading {}", f.display()))?,
            &f.display().to_string(),
            MAX_TASK_BYTES,
        )?,
        (None, None) => bail!("no task given: pass TEXT, --file F, or - to read standard input"),
    };
    if text.trim().is_empty() {
        bail!("the task text is empty");
    }
    Ok(text)
}

/// A started runtime for `run` and `batch`, and what it runs.
pub struct Prepared {
    pub fanfare: Fanfare,
    pub plan: Plan,
    pub gate: Option<Learning>,
    /// The model the banner named (what a request naming none asks for).
    pub default_model: Option<String>,
    /// The provider is the simulator.
    pub simulated: bool,
}

/// An admission gate and the endpoint whose limits it learns: what it learned is
/// kept under that name when the command ends ([`finish_admission`]).
pub struct Learning {
    pub gate: Gate,
    pub endpoint: String,
}

pub async fn prepare(args: &CommonArgs) -> anyhow::Result<Prepared> {
    let options = spec::LoadOptions {
        allow_prompts_outside: args.runtime.allow_prompts_outside,
    };
    let (mut specs, source) = load_specs(args.runtime.agents.as_deref(), options)?;
    let plan = plan(args, &specs, &source)?;
    // Start only the agents the plan asks.
    // A set: with a spec per branch, looking each up in a list was quadratic
    // (10,000 specs, 10^8 comparisons).
    let needed: std::collections::HashSet<String> = plan.agents().into_iter().collect();
    specs.retain(|s| needed.contains(&s.name));
    let ready = runtime_builder(&args.runtime, specs, args.budget_usd.is_some(), Admit::Here)?;
    eprintln!(
        "fanfare: {}. {}; agents from {source}",
        ready.described,
        plan.describe()
    );
    let gate = match (ready.gate, ready.endpoint) {
        (Some(gate), Some(endpoint)) => {
            recall_limits(&gate, &endpoint);
            Some(Learning { gate, endpoint })
        }
        _ => None,
    };
    let fanfare = ready.builder.start().await?;
    Ok(Prepared {
        fanfare,
        plan,
        gate,
        default_model: ready.default_model,
        simulated: ready.simulated,
    })
}

/// Starts `gate` where the last run against `endpoint` left off (the user's
/// learned-limits store), saying so; a store that cannot be read is a warning.
fn recall_limits(gate: &Gate, endpoint: &str) {
    let Some(store) = Store::user() else { return };
    match store.recall(endpoint, std::time::SystemTime::now()) {
        Ok(learned) => {
            for (model, l) in learned {
                gate.remember(Some(&model), l);
                eprintln!(
                    "fanfare: admission: `{model}` starts at {} calls in flight, learned from this server's 429s (`fanfare limits clear` forgets it)",
                    l.cap
                );
            }
        }
        Err(e) => eprintln!("fanfare: warning: learned limits not used: {e:#}"),
    }
}

/// Where a runtime's model calls are admitted.
pub enum Admit {
    /// By this process's own gate.
    Here,
    /// By a cluster orchestrator's gate, leased as the worker node of this name.
    Leased(String),
}

/// A runtime ready to start: its builder (add a router, say), its gate and the
/// endpoint it learns about, and one line on its provider.
pub struct RuntimeBuilder {
    pub builder: FanfareBuilder,
    pub gate: Option<Gate>,
    pub endpoint: Option<String>,
    pub described: String,
    /// The provider's default model, for a real one.
    pub default_model: Option<String>,
    /// The provider is simulated.
    pub simulated: bool,
    /// Each spec's fingerprint, by name (what a cluster checks its workers by).
    pub fingerprints: std::collections::BTreeMap<String, String>,
}

/// The runtime with `specs` (faults from the flags applied) on the provider the
/// flags choose, not started yet. With `cost_cap`, every model the agents will use
/// must have a price.
pub fn runtime_builder(
    args: &RuntimeArgs,
    mut specs: Vec<AgentSpec>,
    cost_cap: bool,
    admit: Admit,
) -> anyhow::Result<RuntimeBuilder> {
    // Fault rolls follow --seed, like the simulator's latencies (they ignored it:
    // `--fault a:panic:0.5` fired on 11 of 11 seeds).
    for spec in &mut specs {
        spec.faults.seed ^= args.seed;
    }
    for flag in &args.faults {
        let fault = faults::parse_flag(flag).map_err(|e| anyhow::anyhow!("--fault {e}"))?;
        let Some(spec) = specs.iter_mut().find(|s| s.name == fault.agent) else {
            bail!("--fault {flag}: no agent named `{}`", fault.agent);
        };
        spec.faults
            .set(fault.kind, fault.trigger)
            .map_err(|e| anyhow::anyhow!("--fault {flag}: {e}"))?;
    }
    let mut tools = Tools::gather(args, spec_dir(args.agents.as_deref()).as_deref())?;
    tools.check(&specs)?;
    let Built {
        provider,
        gate,
        endpoint,
        mut described,
    } = build_provider(args, &specs, admit)?;
    if let Some(offered) = tools.describe() {
        described = format!("{described}; {offered}");
    }
    let mut prices = PriceTable::default();
    if let Some(path) = &args.prices {
        prices.merge_file(path)?;
    }
    if cost_cap {
        // A cost cap needs a price for every model it will pay for; find out now.
        for s in &specs {
            let model = s.model.as_deref().or(provider.default_model());
            let Some(model) = model else { continue };
            if prices.price(model).is_none() {
                bail!(
                    "--budget-usd: no price for model `{model}` (agent `{}`), so the cap could not be kept; \
add it with --prices FILE ([models.\"{model}\"] input_per_mtok = …, output_per_mtok = …)",
                    s.name
                );
            }
        }
    }
    let fingerprints = specs
        .iter()
        .map(|s| (s.name.clone(), s.fingerprint()))
        .collect();
    let simulated = provider.is_simulated();
    let agents = specs.into_iter().map(|s| {
        let faults = s.faults.clone();
        Faulty::new(s, faults)
    });
    let supervision = SupervisionConfig {
        strategy: args.strategy,
        ..SupervisionConfig::default()
    };
    let default_model = (!provider.is_simulated())
        .then(|| provider.default_model().map(str::to_owned))
        .flatten();
    let builder = tools.offer(
        Fanfare::builder(provider)
            .agents_from(agents)
            .supervision(supervision)
            .prices(prices)
            .redact(held_keys(args)),
    )?;
    Ok(RuntimeBuilder {
        builder,
        gate,
        endpoint,
        described,
        default_model,
        simulated,
        fingerprints,
    })
}

/// Every API key this process holds, whichever provider uses it: tools' answers
/// are cleaned of them (a `read_file` of a `.env` put the key in the journal).
fn held_keys(args: &RuntimeArgs) -> Redactor {
    let file = args
        .api_key_file
        .as_deref()
        .and_then(|path| ApiKey::from_file(path).ok());
    ["ANTHROPIC_API_KEY", "OPENAI_API_KEY"]
        .into_iter()
        .filter_map(ApiKey::from_env)
        .chain(file)
        .fold(Redactor::default(), |all, key| all.and(key.redactor()))
}

/// A note when every model that answered is another than the default the banner
/// named: a local server answers with the model it has loaded, whatever was asked.
pub fn answered_as(default_model: Option<&str>, report: &fanfare::RunReport) -> Option<String> {
    let default = default_model?;
    let mut answered: Vec<&str> = report
        .branches
        .iter()
        .filter_map(|b| b.outcome.output()?.model.as_deref())
        .chain(report.synthesis.as_ref().and_then(|s| s.model.as_deref()))
        .collect();
    answered.sort_unstable();
    answered.dedup();
    if answered.is_empty() || answered.contains(&default) {
        return None;
    }
    Some(format!(
        "fanfare: the server answered as {} (the default model named above, `{default}`, is what was asked for: a local server answers with the model it has loaded; --model names it)",
        answered
            .iter()
            .map(|m| format!("`{m}`"))
            .collect::<Vec<_>>()
            .join(", ")
    ))
}

/// Prints the gate's counters and keeps what it learned for the next run.
pub fn finish_admission(learning: Option<&Learning>) {
    let Some(Learning { gate, endpoint }) = learning else {
        return;
    };
    let m = gate.metrics();
    eprintln!(
        "fanfare: admission: {} calls, {} rate-limited (429), {} overloaded, max {} in flight, cap now {}",
        m.admitted, m.rate_limited, m.overloaded, m.max_in_flight, m.cap
    );
    let learned = gate.learned();
    if let (Some(store), false) = (Store::user(), learned.is_empty()) {
        if let Err(e) = store.keep(endpoint, &learned, std::time::SystemTime::now()) {
            eprintln!("fanfare: warning: the learned limits were not kept: {e:#}");
        }
    }
}

/// The provider to run with, its admission gate (real providers) and the endpoint
/// whose limits it learns, and a description.
pub struct Built {
    pub provider: Arc<dyn Provider>,
    pub gate: Option<Gate>,
    pub endpoint: Option<String>,
    pub described: String,
}

/// The admission gate in front of a real provider (for its metrics).
pub type Gate = Arc<fanfare::provider::Gate>;

pub fn build_provider(
    args: &RuntimeArgs,
    specs: &[AgentSpec],
    admit: Admit,
) -> anyhow::Result<Built> {
    let file_key = match &args.api_key_file {
        Some(path) => Some(
            ApiKey::from_file(path)
                .with_context(|| format!("reading the API key from {}", path.display()))?,
        ),
        None => None,
    };
    let kind = match args.provider {
        Some(kind) => kind,
        None if ApiKey::from_env("ANTHROPIC_API_KEY").is_some() => ProviderKind::Anthropic,
        None if ApiKey::from_env("OPENAI_API_KEY").is_some() => ProviderKind::Openai,
        None if file_key.is_some() => {
            bail!("--api-key-file needs --provider anthropic or --provider openai")
        }
        None => ProviderKind::Sim,
    };
    let mut stack = Stack::new().stream(args.stream).timeout(args.call_timeout);
    let (max_concurrency, files) = match args.max_concurrency {
        Some(max) => (max.max(1), None),
        None => limits::ceiling(),
    };
    let in_flight = match files {
        Some(files) => {
            format!("; at most {max_concurrency} calls in flight (the open-file limit is {files})")
        }
        None => String::new(),
    };
    stack = match admit {
        Admit::Here => stack.admission(AdmissionConfig {
            max_concurrency,
            rpm: args.rpm,
            tpm: args.tpm,
            ..AdmissionConfig::default()
        }),
        Admit::Leased(node) => stack
            .gate_with(move |inner| Arc::new(fanfare_cluster::gate::LeasedGate::new(inner, node))),
    };
    if let Some(delay) = args.hedge_after {
        stack = stack.hedge(HedgeConfig {
            delay,
            ..HedgeConfig::default()
        });
    }
    let stack = stack.retry(ExponentialBackoff::new(args.max_attempts));
    match kind {
        ProviderKind::Sim => {
            if args.base_url.is_some() || args.model.is_some() {
                bail!("--base-url and --model need --provider anthropic or --provider openai");
            }
            let sim = SimProvider::new(SimConfig {
                seed: args.seed,
                per_agent: spec::sim_profiles(specs),
                ..SimConfig::default()
            });
            let why = if args.provider.is_some() {
                "chosen with --provider"
            } else {
                "no ANTHROPIC_API_KEY or OPENAI_API_KEY set"
            };
            let described =
                format!("provider `sim` ({why}) — output is SIMULATED, no model is called");
            Ok(Built {
                provider: Arc::new(sim),
                gate: None,
                endpoint: None,
                described,
            })
        }
        ProviderKind::Anthropic => {
            let key = file_key
                .or_else(|| ApiKey::from_env("ANTHROPIC_API_KEY"))
                .context(
                "the anthropic provider needs a key: set ANTHROPIC_API_KEY or pass --api-key-file \
(local servers accept any value)",
            )?;
            let mut config =
                AnthropicConfig::from_env().unwrap_or_else(|| AnthropicConfig::new(key.clone()));
            config.api_key = key;
            if let Some(url) = &args.base_url {
                config.base_url = url.clone();
            }
            if let Some(model) = &args.model {
                config.default_model = model.clone();
            }
            config.timeout = args.call_timeout;
            let described = format!(
                "provider `anthropic` at {} (default model {}){in_flight}",
                redact_url(&config.base_url),
                config.default_model
            );
            let endpoint = endpoint_id(&config.base_url, Some(&config.api_key));
            let (provider, gate) =
                stack.build(AnthropicProvider::new(config).context("--provider anthropic")?);
            Ok(Built {
                provider,
                gate,
                endpoint: Some(endpoint),
                described,
            })
        }
        ProviderKind::Openai => {
            let mut config = OpenAiConfig::from_env();
            if file_key.is_some() {
                config.api_key = file_key;
            }
            if let Some(url) = &args.base_url {
                config.base_url = url.clone();
            }
            if let Some(model) = &args.model {
                config.default_model = model.clone();
            }
            config.timeout = args.call_timeout;
            let described = format!(
                "provider `openai` at {} (default model {}){in_flight}",
                redact_url(&config.base_url),
                config.default_model
            );
            let endpoint = endpoint_id(&config.base_url, config.api_key.as_ref());
            let (provider, gate) =
                stack.build(OpenAiProvider::new(config).context("--provider openai")?);
            Ok(Built {
                provider,
                gate,
                endpoint: Some(endpoint),
                described,
            })
        }
    }
}
