//! The payloads that travel between the orchestrator and specialists.
//!
//! Plain serde data, identified by ids rather than pointers, so that a specialist can
//! later live in another process (ractor_cluster) without changing these types.

use serde::{Deserialize, Serialize};

/// Identifies one run of the orchestrator. Unique within a process. In JSON it is
/// `"run-N"`, as `fanfare serve` names its runs (a bare number, as older reports
/// wrote it, reads back too).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RunId(pub u64);

impl Serialize for RunId {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for RunId {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<RunId, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Either {
            Number(u64),
            Text(String),
        }
        match Either::deserialize(d)? {
            Either::Number(n) => Ok(RunId(n)),
            Either::Text(t) => t
                .strip_prefix("run-")
                .filter(|n| !n.starts_with('+'))
                .and_then(|n| n.parse().ok())
                .map(RunId)
                .ok_or_else(|| serde::de::Error::custom(format!("`{t}` is not a run id (run-42)"))),
        }
    }
}

impl std::fmt::Display for RunId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "run-{}", self.0)
    }
}

/// Identifies one branch (one step) of one run.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct BranchId {
    /// The run.
    pub run: RunId,
    /// Position of the step in the run's request (input order).
    pub index: u32,
    /// For a map step: which item (from 0).
    #[serde(default)]
    pub item: Option<u32>,
}

impl std::fmt::Display for BranchId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.item {
            Some(item) => write!(f, "{}/branch-{}.{item}", self.run, self.index),
            None => write!(f, "{}/branch-{}", self.run, self.index),
        }
    }
}

/// What a specialist is asked to do.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Task {
    /// Which branch this is; echo it in logs, use it as the cancellation key.
    pub branch: BranchId,
    /// The task text, as the caller gave it. Shared: every branch of a fan-out holds
    /// the run's one copy of it, however long the document.
    pub input: std::sync::Arc<str>,
    /// Outputs of the steps this one depends on (empty in a plain fan-out). Shared:
    /// every item of a map step holds the same list, not a copy each.
    pub upstream: std::sync::Arc<[UpstreamOutput]>,
    /// The model the step asks for, if it names one (an agent that calls a model
    /// should prefer it to its own choice).
    #[serde(default)]
    pub model: Option<String>,
    /// Set when the step's input template already built `input` from the upstream
    /// outputs: then [`Task::prompt`] is the input alone.
    #[serde(default)]
    pub templated: bool,
    /// The shape the answer must have, if the step sets one: an agent that calls a
    /// model asks for it and checks the answer
    /// ([`structured::check`](crate::agent::structured::check)).
    #[serde(default)]
    pub schema: Option<std::sync::Arc<crate::provider::OutputSchema>>,
    /// Where the branch's tool turns are kept as they happen, when its run keeps
    /// them ([`tools::durable`](crate::agent::tools::durable)). Local to this
    /// process.
    #[serde(skip)]
    pub tool_journal: Option<crate::agent::tools::ToolKeeper>,
    /// Who decides the branch's tool calls that need a person's approval
    /// ([`tools::approval`](crate::agent::tools::approval)); none: such calls are
    /// rejected. Local to this process.
    #[serde(skip)]
    pub approvals: Option<crate::agent::tools::Approvals>,
    /// The branch's tool turns kept by an earlier attempt at its run: a tool loop
    /// answers them from here instead of asking again. Local to this process.
    #[serde(skip)]
    pub replay: std::sync::Arc<[crate::agent::tools::ToolTurn]>,
    /// The tokens the run's budget reserved for this branch, when the run has a
    /// budget: an agent that makes several model calls (a tool loop) does not send
    /// one that could take it past them.
    #[serde(default)]
    pub allowance: Option<u64>,
    /// Its run keeps its tool calls (a tool journal) or has them approved, where it
    /// was started: a process that has neither (a cluster worker, which gets the
    /// task without them) must not run its tool calls, or they would be neither
    /// kept nor approved. Travels with the task.
    #[serde(default)]
    pub tools_governed: bool,
    /// How deep its run is nested: 0 for a run started from outside, one more for
    /// each `run_workflow` between ([`tools::delegate`](crate::agent::tools::delegate)).
    #[serde(default)]
    pub depth: u32,
    /// What starts its tool calls' sub-runs, when its runtime has workflows. Local
    /// to this process.
    #[serde(skip)]
    pub delegator: Option<crate::agent::tools::Delegator>,
    /// Where an agent that makes several model calls (a tool loop) adds what each
    /// answered call used until its answer reports it: a branch cut by its deadline,
    /// or cancelled, still reports what it was paid for. Local to this process.
    #[serde(skip)]
    pub meter: Option<Meter>,
    /// When the branch stops waiting for this task. An agent that calls a model
    /// passes it on ([`CompletionRequest::deadline`](crate::provider::CompletionRequest::deadline)),
    /// so a call stopped by it says what it was doing. Local to this process; not
    /// serialised.
    #[serde(skip)]
    pub deadline: Option<tokio::time::Instant>,
    /// Where an agent that streams its model call sends the text as it comes
    /// ([`CompletionRequest::deltas`](crate::provider::CompletionRequest::deltas));
    /// set when someone watches the run's events. Local to this process.
    #[serde(skip)]
    pub deltas: Option<crate::provider::DeltaSink>,
}

/// What a branch's answered model calls used that no answer or error of its
/// agent has reported yet ([`Task::meter`]); cheap to clone, shared.
#[derive(Clone, Debug, Default)]
pub struct Meter(std::sync::Arc<std::sync::Mutex<(u32, crate::provider::Usage)>>);

impl Meter {
    /// One more answered call: its attempts and tokens.
    pub fn add(&self, attempts: u32, usage: crate::provider::Usage) {
        let mut m = self.0.lock().unwrap_or_else(|p| p.into_inner());
        m.0 = m.0.saturating_add(attempts);
        m.1 += usage;
    }

    /// What it holds, leaving it empty (an answer that reports the calls takes
    /// them back).
    pub fn take(&self) -> (u32, crate::provider::Usage) {
        std::mem::take(&mut *self.0.lock().unwrap_or_else(|p| p.into_inner()))
    }
}

impl PartialEq for Meter {
    /// The same meter.
    fn eq(&self, other: &Self) -> bool {
        std::sync::Arc::ptr_eq(&self.0, &other.0)
    }
}

/// No kept tool turns: one shared empty list (a task is made per branch; an empty
/// `Arc<[_]>` of its own would be an allocation each).
pub(crate) fn no_turns() -> std::sync::Arc<[crate::agent::tools::ToolTurn]> {
    static EMPTY: std::sync::OnceLock<std::sync::Arc<[crate::agent::tools::ToolTurn]>> =
        std::sync::OnceLock::new();
    EMPTY.get_or_init(|| std::sync::Arc::new([])).clone()
}

/// The output of a step that a later step depends on.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct UpstreamOutput {
    /// The step that produced it (in a fan-out, its agent).
    pub agent: String,
    /// What it said.
    pub text: String,
    /// For a map step: each item's output, in item order (`text` holds them all).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub items: Vec<String>,
}

impl Task {
    /// The input followed by any upstream outputs, labelled by agent: the user
    /// message an LLM-backed agent sends. When there is nothing to append (no upstream
    /// outputs, or a template already placed them) it is the input itself, shared, not
    /// a copy.
    pub fn prompt(&self) -> std::sync::Arc<str> {
        if self.upstream.is_empty() || self.templated {
            return self.input.clone();
        }
        let mut s = String::from(&*self.input);
        for up in self.upstream.iter() {
            s.push_str("\n\n[");
            s.push_str(&up.agent);
            s.push_str(" said]\n");
            s.push_str(&up.text);
        }
        s.into()
    }
}

/// A task of branch 0 of run 1 with `input` and nothing else, for tests.
#[cfg(test)]
pub(crate) fn test_task(input: &str) -> Task {
    Task {
        branch: BranchId {
            run: RunId(1),
            index: 0,
            item: None,
        },
        input: input.into(),
        upstream: std::sync::Arc::new([]),
        model: None,
        templated: false,
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
    }
}

#[cfg(test)]
mod tests {
    use super::RunId;

    #[test]
    fn a_run_id_is_run_n_in_json_and_reads_back_from_either_form() {
        assert_eq!(serde_json::to_string(&RunId(42)).unwrap(), r#""run-42""#);
        for (json, id) in [
            (r#""run-42""#, Some(42)),
            ("42", Some(42)),
            (r#""run-+4""#, None),
            (r#""42""#, None),
            (r#""run-""#, None),
            ("-1", None),
        ] {
            assert_eq!(
                serde_json::from_str::<RunId>(json).ok(),
                id.map(RunId),
                "{json}"
            );
        }
    }
}
