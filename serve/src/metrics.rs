//! What `GET /metrics` reports, in the Prometheus text format (through the
//! `prometheus-client` crate): runs by status and the run queue, each branch's
//! latency by step and outcome, tokens and cost by model, the provider's
//! admission gate (queue depth, calls in flight, the adaptive cap, 429s, permit
//! wait), and supervision (restarts, escalations).
//!
//! Counters and histograms are fed as runs go; gauges are read at scrape time.

use std::sync::atomic::AtomicU64;

use fanfare::provider::AdmissionMetrics;
use fanfare::supervision::SupervisorEvent;
use fanfare::RunReport;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;

use crate::journal::Status;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ToolLabels {
    /// The tool, as the model named it (`other` past [`MAX_TOOL_LABELS`]: a model
    /// can name any tool, and each name would be a series).
    tool: String,
    /// `ok` or `error`.
    outcome: String,
}

/// The most tool names the tool metrics keep apart.
const MAX_TOOL_LABELS: usize = 128;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct BranchLabels {
    /// The step's name (a fan-out's step is named after its agent; a workflow's
    /// steps have names of their own).
    step: String,
    outcome: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct TokenLabels {
    model: String,
    kind: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ModelLabels {
    model: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StatusLabels {
    status: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct SupervisionLabels {
    event: &'static str,
    agent: String,
}

fn branch_histogram() -> Histogram {
    // 10 ms to ~5.5 min.
    Histogram::new(exponential_buckets(0.01, 2.0, 16))
}

/// The server's metrics.
pub struct Metrics {
    registry: Registry,
    runs: Family<StatusLabels, Gauge>,
    queue_running: Gauge,
    queue_waiting: Gauge,
    branch_seconds: Family<BranchLabels, Histogram, fn() -> Histogram>,
    tool_seconds: Family<ToolLabels, Histogram, fn() -> Histogram>,
    tool_names: std::sync::Mutex<std::collections::HashSet<String>>,
    tokens: Family<TokenLabels, Counter>,
    cost_usd: Family<ModelLabels, Counter<f64, AtomicU64>>,
    supervision: Family<SupervisionLabels, Counter>,
    wasted_calls: Counter,
    wasted_rate_limited: Counter,
    admission_queued: Gauge,
    admission_in_flight: Gauge,
    admission_cap: Gauge,
    admission_admitted: Gauge,
    admission_rate_limited: Gauge,
    admission_overloaded: Gauge,
    admission_permit_wait: Gauge<f64, AtomicU64>,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Metrics")
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// Every metric, registered under `fanfare_`.
    pub fn new() -> Self {
        let mut r = Registry::with_prefix("fanfare");
        let m = Metrics {
            runs: Family::default(),
            queue_running: Gauge::default(),
            queue_waiting: Gauge::default(),
            branch_seconds: Family::new_with_constructor(branch_histogram),
            tool_seconds: Family::new_with_constructor(branch_histogram),
            tool_names: Default::default(),
            tokens: Family::default(),
            cost_usd: Family::default(),
            supervision: Family::default(),
            wasted_calls: Counter::default(),
            wasted_rate_limited: Counter::default(),
            admission_queued: Gauge::default(),
            admission_in_flight: Gauge::default(),
            admission_cap: Gauge::default(),
            admission_admitted: Gauge::default(),
            admission_rate_limited: Gauge::default(),
            admission_overloaded: Gauge::default(),
            admission_permit_wait: Gauge::default(),
            registry: Registry::default(),
        };
        r.register("runs", "Runs in the journal, by status", m.runs.clone());
        r.register(
            "runs_in_progress",
            "Runs being driven now",
            m.queue_running.clone(),
        );
        r.register(
            "runs_waiting",
            "Runs queued for a slot",
            m.queue_waiting.clone(),
        );
        r.register(
            "branch_duration_seconds",
            "Branch latency, dispatch to end, by step and outcome",
            m.branch_seconds.clone(),
        );
        r.register(
            "tool_call_duration_seconds",
            "Tool call latency, by tool and outcome (ok, error)",
            m.tool_seconds.clone(),
        );
        r.register(
            "tokens",
            "Tokens used, by model and kind (input, output, cache_read, cache_write)",
            m.tokens.clone(),
        );
        r.register(
            "cost_usd",
            "Cost of the calls whose model has a price, by model",
            m.cost_usd.clone(),
        );
        r.register(
            "supervision_events",
            "Specialist restarts, escalations and circuit closings",
            m.supervision.clone(),
        );
        r.register(
            "wasted_calls",
            "Model calls whose answer was not used (retried failures, hedges' losers, shaped answers asked again)",
            m.wasted_calls.clone(),
        );
        r.register(
            "wasted_rate_limited_calls",
            "Of the wasted calls, the ones refused for load (429 / 529)",
            m.wasted_rate_limited.clone(),
        );
        r.register(
            "admission_queued",
            "Model calls waiting for admission",
            m.admission_queued.clone(),
        );
        r.register(
            "admission_in_flight",
            "Model calls in flight",
            m.admission_in_flight.clone(),
        );
        r.register(
            "admission_cap",
            "The admission gate's adaptive concurrency cap",
            m.admission_cap.clone(),
        );
        r.register(
            "admission_admitted",
            "Model calls admitted since start",
            m.admission_admitted.clone(),
        );
        r.register(
            "admission_rate_limited",
            "429 answers seen since start",
            m.admission_rate_limited.clone(),
        );
        r.register(
            "admission_overloaded",
            "529 / overloaded answers seen since start",
            m.admission_overloaded.clone(),
        );
        r.register(
            "admission_permit_wait_seconds",
            "Total time model calls waited for admission since start",
            m.admission_permit_wait.clone(),
        );
        Metrics { registry: r, ..m }
    }

    /// A branch (or map item) of `agent` ended with `outcome` after `seconds`.
    pub fn branch(&self, step: &str, outcome: &str, seconds: f64) {
        self.branch_seconds
            .get_or_create(&BranchLabels {
                step: step.to_owned(),
                outcome: outcome.to_owned(),
            })
            .observe(seconds);
    }

    /// A tool call of `tool` ended, after `seconds`.
    pub fn tool(&self, tool: &str, ok: bool, seconds: f64) {
        // A name no tool can have (a model's invention: any length, any bytes) is
        // `other` too; it would be a series, and its bytes the exposition's.
        let named = fanfare::agent::tools::is_tool_name(tool);
        let tool = {
            let mut names = self.tool_names.lock().unwrap_or_else(|p| p.into_inner());
            if !named {
                "other".to_owned()
            } else if names.contains(tool) || names.len() < MAX_TOOL_LABELS {
                names.insert(tool.to_owned());
                tool.to_owned()
            } else {
                "other".to_owned()
            }
        };
        let outcome = if ok { "ok" } else { "error" }.to_owned();
        self.tool_seconds
            .get_or_create(&ToolLabels { tool, outcome })
            .observe(seconds);
    }

    /// A run ended with `report`: its tokens and costs, by model.
    pub fn report(&self, report: &RunReport) {
        let add = |model: Option<&str>, usage: &fanfare::provider::Usage, cost: Option<f64>| {
            let model = model.unwrap_or("unknown").to_owned();
            for (kind, n) in [
                ("input", usage.input_tokens),
                ("output", usage.output_tokens),
                ("cache_read", usage.cache_read_input_tokens),
                ("cache_write", usage.cache_creation_input_tokens),
            ] {
                if n > 0 {
                    self.tokens
                        .get_or_create(&TokenLabels {
                            model: model.clone(),
                            kind,
                        })
                        .inc_by(n);
                }
            }
            if let Some(c) = cost.filter(|c| *c > 0.0) {
                self.cost_usd
                    .get_or_create(&ModelLabels { model })
                    .inc_by(c);
            }
        };
        // A reused answer was paid for by the run it came from: counting it again
        // doubled the tokens of every repaired or resumed run.
        for b in &report.branches {
            if b.items.is_empty() && b.reused.is_none() {
                let model = b.outcome.model();
                add(model, &b.usage, b.cost_usd);
            }
            for i in b.items.iter().filter(|i| i.reused.is_none()) {
                let model = i.outcome.model();
                add(model, &i.usage, i.cost_usd);
            }
        }
        if let Some(s) = &report.synthesis {
            add(s.model.as_deref(), &s.usage, s.cost_usd);
        }
        self.wasted_calls.inc_by(report.totals.wasted_calls);
        self.wasted_rate_limited.inc_by(report.totals.rate_limited);
    }

    /// The supervisor did something.
    pub fn supervision(&self, event: &SupervisorEvent) {
        let (event, agent) = match event {
            SupervisorEvent::Restarted { agent, .. } => ("restarted", agent),
            SupervisorEvent::Escalated { agent, .. } => ("escalated", agent),
            SupervisorEvent::CircuitClosed { agent, .. } => ("circuit_closed", agent),
            SupervisorEvent::Stopped { agent, .. } => ("stopped", agent),
            _ => return,
        };
        self.supervision
            .get_or_create(&SupervisionLabels {
                event,
                agent: agent.clone(),
            })
            .inc();
    }

    /// The text to answer a scrape with, after setting the gauges from `runs` (the
    /// journal's counts by status), the queue, and the admission gate.
    pub fn render(
        &self,
        runs: &[(Status, i64)],
        (running, waiting): (usize, usize),
        admission: Option<AdmissionMetrics>,
    ) -> String {
        for status in Status::ALL {
            let n = runs
                .iter()
                .find(|(s, _)| *s == status)
                .map_or(0, |(_, n)| *n);
            self.runs
                .get_or_create(&StatusLabels {
                    status: status.as_str(),
                })
                .set(n);
        }
        self.queue_running.set(running as i64);
        self.queue_waiting.set(waiting as i64);
        if let Some(a) = admission {
            self.admission_queued.set(a.queued as i64);
            self.admission_in_flight.set(a.in_flight as i64);
            self.admission_cap.set(a.cap as i64);
            self.admission_admitted.set(a.admitted as i64);
            self.admission_rate_limited.set(a.rate_limited as i64);
            self.admission_overloaded.set(a.overloaded as i64);
            self.admission_permit_wait
                .set(a.permit_wait_ms as f64 / 1000.0);
        }
        let mut text = String::new();
        if let Err(e) = prometheus_client::encoding::text::encode(&mut text, &self.registry) {
            tracing::error!(error = %e, "encoding metrics");
        }
        text
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tool_calls_are_counted_by_tool_and_outcome_with_the_names_bounded() {
        let m = Metrics::new();
        m.tool("fs__read_file", true, 0.01);
        m.tool("fs__read_file", false, 0.02);
        // A model may name any tool: past the bound, names are `other`.
        for i in 0..MAX_TOOL_LABELS + 10 {
            m.tool(&format!("made_up_{i}"), false, 0.0);
        }
        let text = m.render(&[], (0, 0), None);
        assert!(
            text.contains(
                r#"fanfare_tool_call_duration_seconds_count{tool="fs__read_file",outcome="ok"} 1"#
            ),
            "{text}"
        );
        assert!(text.contains(r#"tool="other",outcome="error""#), "{text}");
        let series = text
            .lines()
            .filter(|l| l.starts_with("fanfare_tool_call_duration_seconds_count"))
            .count();
        assert!(series <= MAX_TOOL_LABELS + 2, "{series}");
    }

    #[test]
    fn regression_a_tool_name_no_tool_can_have_is_other_not_a_label() {
        let m = Metrics::new();
        m.tool("evil\"} 1\nfanfare_fake 9", false, 0.0);
        m.tool(&"x".repeat(10_000), false, 0.0);
        let text = m.render(&[], (0, 0), None);
        assert!(
            !text.contains("fanfare_fake") && !text.contains("xxxx"),
            "{text}"
        );
        assert!(
            text.contains(
                r#"fanfare_tool_call_duration_seconds_count{tool="other",outcome="error"} 2"#
            ),
            "{text}"
        );
    }
}
