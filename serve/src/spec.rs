//! What a client submits (`POST /v1/runs`), how it is checked, and the runtime's
//! [`RunRequest`] it becomes. Every problem is a [`FieldError`] naming the field, so
//! the API can answer a 422 a client can act on.

use std::time::Duration;

use fanfare::run::workflow::Workflow;
use fanfare::run::{parse_duration, Budget, Scorer};
use fanfare::{MergeStrategy, Policy, RunRequest};
use serde::{Deserialize, Serialize};

/// A run as submitted. Unknown fields are refused (a misspelt `deadline` must not
/// silently run with the default).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RunSpec {
    /// The task text.
    pub input: String,
    /// A workflow by name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub workflow: Option<String>,
    /// Or a plain fan-out to these agents.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub agents: Option<Vec<String>>,
    /// The items a workflow's map over given items fans out over.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub items: Option<Vec<String>>,
    /// `fail-fast`, `partial` or `partial:K`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub policy: Option<String>,
    /// The run's deadline, e.g. `"90s"`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deadline: Option<String>,
    /// Each branch's deadline.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub branch_timeout: Option<String>,
    /// Caps on tokens and cost.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub budget: Option<BudgetSpec>,
    /// `llm`, `code`, `best` or `none`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub merge: Option<String>,
    /// Retries of a branch whose specialist crashed under it (or whose cluster node
    /// was lost), at most 10 [default: the server's].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub crash_retries: Option<u32>,
    /// Warm the provider's prompt cache with the first branch before the others.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cache_warm: Option<bool>,
    /// Repair an earlier run (`run-N`) of the same request: its successful branches
    /// are reused, not called again; only the others run, then the merge.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub repair_of: Option<String>,
    /// The most tokens the answer (an LLM merge's text) may have; the OpenAI face's
    /// `max_tokens`. A run whose answer no model writes cannot keep it: refused.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub answer_tokens: Option<u32>,
}

/// A run's caps.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BudgetSpec {
    /// Most tokens, input and output.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tokens: Option<u64>,
    /// Most US dollars.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub usd: Option<f64>,
}

/// A problem with one field of a submitted run.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, thiserror::Error)]
#[error("{field}: {message}")]
pub struct FieldError {
    /// The field, as a path (`budget.usd`, `agents[2]`); empty for the body as a whole.
    pub field: String,
    /// What is wrong with it.
    pub message: String,
}

impl FieldError {
    fn new(field: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            field: field.into(),
            message: message.into(),
        }
    }
}

/// Parses a request body, naming the field a problem is in.
pub fn parse(body: &[u8]) -> Result<RunSpec, FieldError> {
    let value: serde_json::Value =
        serde_json::from_slice(body).map_err(|e| FieldError::new("", format!("not JSON: {e}")))?;
    if !value.is_object() {
        return Err(FieldError::new("", "the body must be a JSON object"));
    }
    serde_path_to_error::deserialize(value).map_err(|e| {
        let field = e.path().to_string();
        let field = if field == "." { String::new() } else { field };
        FieldError::new(field, e.into_inner().to_string())
    })
}

/// What the server can run: its workflows and agents.
#[derive(Clone, Debug, Default)]
pub struct Catalog {
    /// The workflows a run may name.
    pub workflows: Vec<Workflow>,
    /// The agents a plain fan-out may name (the runtime's specialists).
    pub agents: Vec<String>,
}

/// What a submitted run gets for what it leaves out (the server's flags).
#[derive(Clone, Debug, PartialEq)]
pub struct Defaults {
    /// The run deadline.
    pub deadline: Duration,
    /// Each branch's deadline.
    pub branch_timeout: Duration,
    /// Retries of a branch whose specialist crashed.
    pub crash_retries: u32,
    /// The workflow of a run that names neither a workflow nor agents.
    pub workflow: String,
    /// The most branches one run may ask for: agents in a fan-out, or items of a
    /// map (one POST of 10,000 agents was 10,000 paid calls).
    pub max_branches: usize,
    /// How long a tool call waits for a person's approval before `approval_default`
    /// decides it (`None`: until the branch's deadline).
    pub approval_timeout: Option<Duration>,
    /// What decides a call no one decided within `approval_timeout`.
    pub approval_default: ApprovalDefault,
}

/// What decides a tool call no one decided in time.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum ApprovalDefault {
    /// It is not run; the model is told.
    #[default]
    Reject,
    /// It runs as the model asked.
    Approve,
}

impl Default for Defaults {
    fn default() -> Self {
        Self {
            deadline: RunRequest::DEFAULT_DEADLINE,
            branch_timeout: RunRequest::DEFAULT_BRANCH_TIMEOUT,
            crash_retries: 0,
            workflow: "perspectives".to_owned(),
            max_branches: 10_000,
            approval_timeout: None,
            approval_default: ApprovalDefault::Reject,
        }
    }
}

fn duration(field: &str, text: &str) -> Result<Duration, FieldError> {
    parse_duration(text).map_err(|e| FieldError::new(field, e.to_string()))
}

impl RunSpec {
    /// The runtime request for this run, or the first problem found.
    pub fn request(
        &self,
        catalog: &Catalog,
        defaults: &Defaults,
    ) -> Result<RunRequest, FieldError> {
        if self.input.trim().is_empty() {
            return Err(FieldError::new("input", "the task text is empty"));
        }
        if self.items.as_ref().is_some_and(Vec::is_empty) {
            // It would pay for the steps after the map over nothing.
            return Err(FieldError::new(
                "items",
                "is empty: a map needs at least one item",
            ));
        }
        if let Some(items) = self
            .items
            .as_ref()
            .filter(|i| i.len() > defaults.max_branches)
        {
            return Err(FieldError::new(
                "items",
                format!(
                    "{} items, more than this server's limit of {} branches per run (--max-branches)",
                    items.len(),
                    defaults.max_branches
                ),
            ));
        }
        let mut request = match (&self.workflow, &self.agents) {
            (Some(_), Some(_)) => {
                return Err(FieldError::new(
                    "agents",
                    "give `workflow` or `agents`, not both",
                ))
            }
            (Some(name), None) => self.workflow_request(catalog, name, "workflow")?,
            (None, Some(agents)) => {
                if agents.is_empty() {
                    return Err(FieldError::new("agents", "the list is empty"));
                }
                if agents.len() > defaults.max_branches {
                    return Err(FieldError::new(
                        "agents",
                        format!(
                            "{} branches, more than this server's limit of {} per run (--max-branches)",
                            agents.len(),
                            defaults.max_branches
                        ),
                    ));
                }
                let known: std::collections::HashSet<&str> =
                    catalog.agents.iter().map(String::as_str).collect();
                for (i, a) in agents.iter().enumerate() {
                    if !known.contains(a.as_str()) {
                        return Err(FieldError::new(
                            format!("agents[{i}]"),
                            format!(
                                "no agent named `{a}` (known: {})",
                                catalog.agents.join(", ")
                            ),
                        ));
                    }
                }
                if self.items.is_some() {
                    return Err(FieldError::new(
                        "items",
                        "items need a workflow with a map step",
                    ));
                }
                RunRequest::fan_out(self.input.clone(), agents.iter().cloned())
                    .merge(MergeStrategy::llm())
            }
            (None, None) => self.workflow_request(catalog, &defaults.workflow, "workflow")?,
        };
        request = request
            .deadline(defaults.deadline)
            .branch_timeout(defaults.branch_timeout)
            .crash_retries(defaults.crash_retries)
            // A map over a model's answer is as wide as the answer: the task can
            // steer it, so it is held to the same limit (100,000 paid calls came of
            // one POST).
            .max_items(defaults.max_branches);
        if let Some(p) = &self.policy {
            request.policy = p
                .parse::<Policy>()
                .map_err(|e| FieldError::new("policy", e.to_string()))?;
        }
        if let Some(n) = self.crash_retries {
            if n > 10 {
                return Err(FieldError::new("crash_retries", "at most 10"));
            }
            request.crash_retries = n;
        }
        if let Some(d) = &self.deadline {
            request.deadline = duration("deadline", d)?;
        }
        if let Some(d) = &self.branch_timeout {
            request.branch_timeout = duration("branch_timeout", d)?;
        }
        if let Some(b) = self.budget {
            if let Some(usd) = b.usd {
                if !usd.is_finite() || usd < 0.0 {
                    return Err(FieldError::new(
                        "budget.usd",
                        "not an amount of US dollars ≥ 0",
                    ));
                }
            }
            request = request.budget(Budget {
                max_tokens: b.tokens,
                max_cost_usd: b.usd,
                ..Budget::default()
            });
        }
        if let Some(on) = self.cache_warm {
            request = request.cache_warm(on);
        }
        if let Some(m) = &self.merge {
            request.merge = match m.as_str() {
                "llm" => Some(MergeStrategy::llm()),
                "code" => Some(MergeStrategy::Code),
                "best" => Some(MergeStrategy::SelectBest(Scorer::distinct_words())),
                "none" => None,
                other => {
                    return Err(FieldError::new(
                        "merge",
                        format!("`{other}` is not one of llm, code, best, none"),
                    ))
                }
            };
        }
        if let Some(cap) = self.answer_tokens {
            match &mut request.merge {
                _ if cap == 0 => {
                    return Err(FieldError::new("answer_tokens", "must be at least 1"))
                }
                Some(MergeStrategy::Llm { max_tokens, .. }) => {
                    *max_tokens = (*max_tokens).min(cap);
                }
                _ => {
                    return Err(FieldError::new(
                        "answer_tokens",
                        "this run's answer is not written by a model (its merge is not `llm`), so its length cannot be capped",
                    ))
                }
            }
        }
        Ok(request)
    }

    fn workflow_request(
        &self,
        catalog: &Catalog,
        name: &str,
        field: &str,
    ) -> Result<RunRequest, FieldError> {
        let Some(w) = catalog.workflows.iter().find(|w| w.name == name) else {
            let known: Vec<&str> = catalog.workflows.iter().map(|w| w.name.as_str()).collect();
            return Err(FieldError::new(
                field,
                format!("no workflow named `{name}` (known: {})", known.join(", ")),
            ));
        };
        w.request(&self.input, self.items.clone()).map_err(|e| {
            FieldError::new(
                if self.items.is_some() { "items" } else { field },
                e.to_string(),
            )
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn catalog() -> Catalog {
        Catalog {
            workflows: Vec::new(),
            agents: vec!["a".into(), "b".into()],
        }
    }

    fn problem(body: &str) -> FieldError {
        match parse(body.as_bytes()) {
            Err(e) => e,
            Ok(spec) => spec
                .request(&catalog(), &Defaults::default())
                .expect_err("a problem"),
        }
    }

    #[test]
    fn regression_a_run_wider_than_the_servers_limit_is_refused_before_anything_runs() {
        // One POST of 10,000 agents was 10,000 paid calls, with no limit.
        let defaults = Defaults {
            max_branches: 3,
            ..Defaults::default()
        };
        let wide = parse(br#"{"input": "x", "agents": ["a", "b", "a", "b"]}"#).unwrap();
        let e = wide.request(&catalog(), &defaults).unwrap_err();
        assert_eq!(e.field, "agents");
        assert!(e.message.contains("limit of 3"), "{}", e.message);
        // An agent may be named more than once (each is a branch; a cluster's
        // fan-out of one agent to 1,000 branches is one): the limit bounds it.
        let fits = parse(br#"{"input": "x", "agents": ["a", "b", "a"]}"#).unwrap();
        assert!(fits.request(&catalog(), &defaults).is_ok());
        let items = parse(br#"{"input": "x", "items": ["1", "2", "3", "4"]}"#).unwrap();
        let e = items.request(&catalog(), &defaults).unwrap_err();
        assert_eq!(e.field, "items");
        assert!(e.message.contains("limit of 3"), "{}", e.message);
    }

    #[test]
    fn regression_an_answer_cap_is_the_llm_merges_max_tokens_or_refused() {
        // The OpenAI face's `max_tokens` was ignored: 5 asked, 424 answered.
        let capped = parse(br#"{"input": "x", "agents": ["a"], "answer_tokens": 5}"#).unwrap();
        let request = capped.request(&catalog(), &Defaults::default()).unwrap();
        assert!(
            matches!(
                request.merge,
                Some(MergeStrategy::Llm { max_tokens: 5, .. })
            ),
            "{:?}",
            request.merge
        );
        let coded =
            parse(br#"{"input": "x", "agents": ["a"], "merge": "code", "answer_tokens": 5}"#)
                .unwrap();
        let e = coded.request(&catalog(), &Defaults::default()).unwrap_err();
        assert_eq!(e.field, "answer_tokens");
        assert!(
            e.message.contains("not written by a model"),
            "{}",
            e.message
        );
    }

    #[test]
    fn regression_an_empty_item_list_is_refused() {
        // It was accepted, and paid a digest of zero documents.
        let empty = parse(br#"{"input": "x", "items": []}"#).unwrap();
        let e = empty.request(&catalog(), &Defaults::default()).unwrap_err();
        assert_eq!(
            (e.field.as_str(), e.message.as_str()),
            ("items", "is empty: a map needs at least one item")
        );
    }

    #[test]
    fn each_bad_field_is_named() {
        let table = [
            (r#"{"agents": ["a"]}"#, "", "missing field `input`"),
            (
                r#"{"input": "x", "agents": ["a"], "deadlin": "3s"}"#,
                "deadlin",
                "unknown field",
            ),
            (r#"{"input": 3}"#, "input", "invalid type"),
            (r#"{"input": " ", "agents": ["a"]}"#, "input", "empty"),
            (
                r#"{"input": "x", "agents": ["a", "zz"]}"#,
                "agents[1]",
                "no agent named `zz`",
            ),
            (r#"{"input": "x", "agents": []}"#, "agents", "empty"),
            (
                r#"{"input": "x", "agents": ["a"], "workflow": "w"}"#,
                "agents",
                "not both",
            ),
            (
                r#"{"input": "x", "workflow": "w"}"#,
                "workflow",
                "no workflow named `w`",
            ),
            (
                r#"{"input": "x"}"#,
                "workflow",
                "no workflow named `perspectives`",
            ),
            (
                r#"{"input": "x", "agents": ["a"], "policy": "most"}"#,
                "policy",
                "",
            ),
            (
                r#"{"input": "x", "agents": ["a"], "deadline": "soon"}"#,
                "deadline",
                "",
            ),
            (
                r#"{"input": "x", "agents": ["a"], "branch_timeout": "0s"}"#,
                "branch_timeout",
                "",
            ),
            (
                r#"{"input": "x", "agents": ["a"], "budget": {"usd": -1}}"#,
                "budget.usd",
                "≥ 0",
            ),
            (
                r#"{"input": "x", "agents": ["a"], "budget": {"usds": 1}}"#,
                "budget.usds",
                "unknown field",
            ),
            (
                r#"{"input": "x", "agents": ["a"], "merge": "vote"}"#,
                "merge",
                "not one of",
            ),
            (
                r#"{"input": "x", "agents": ["a"], "items": ["i"]}"#,
                "items",
                "map step",
            ),
            ("[1, 2]", "", "JSON object"),
            ("{", "", "not JSON"),
        ];
        for (body, field, message) in table {
            let e = problem(body);
            assert_eq!(e.field, field, "{body}: {e}");
            assert!(e.message.contains(message), "{body}: {e}");
        }
    }

    #[test]
    fn a_fan_out_takes_the_given_settings() {
        let spec = parse(
            br#"{"input": "x", "agents": ["b", "a"], "policy": "partial:1", "deadline": "9s",
                 "branch_timeout": "2s", "budget": {"tokens": 500}, "merge": "code"}"#,
        )
        .unwrap();
        let r = spec.request(&catalog(), &Defaults::default()).unwrap();
        assert_eq!(r.policy, Policy::TolerantPartial { quorum: 1 });
        assert_eq!(r.deadline, Duration::from_secs(9));
        assert_eq!(r.branch_timeout, Duration::from_secs(2));
        assert_eq!(r.budget.and_then(|b| b.max_tokens), Some(500));
        assert!(matches!(r.merge, Some(MergeStrategy::Code)));
        let names: Vec<&str> = r.steps.iter().map(|s| s.name.as_str()).collect();
        assert_eq!(names, ["b", "a"]);
    }
}
