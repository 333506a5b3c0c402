//! What a run streams while it goes on ([`RunEvent`]), in completion order.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::outcome::{secs, BranchOutcome, SynthesisError};
use super::record::SubRun;
use crate::agent::RunId;

/// What a run reports while it goes on, in completion order.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "event", rename_all = "snake_case")]
#[non_exhaustive]
pub enum RunEvent {
    /// A branch was dispatched (for a map step, one event per item).
    BranchStarted {
        /// The run.
        run: RunId,
        /// The branch's position in the request.
        index: u32,
        /// For a map step: which item (`None`: the step itself).
        #[serde(default)]
        item: Option<u32>,
        /// Its step's name.
        agent: String,
        /// When, since the run started.
        #[serde(with = "secs")]
        at: Duration,
    },
    /// More text of a branch's answer, as its model streams it (a live preview:
    /// only for a caller that reads events, and from providers that stream; the
    /// branch's answer is the text in its `BranchFinished`).
    BranchDelta {
        /// The run.
        run: RunId,
        /// The branch's position in the request.
        index: u32,
        /// For a map step: which item.
        #[serde(default)]
        item: Option<u32>,
        /// Its step's name.
        agent: String,
        /// The model call's attempt this text belongs to: when it goes up, the call
        /// was retried and the text of earlier attempts is void.
        attempt: u32,
        /// The new text.
        text: String,
    },
    /// A branch's model call failed and will be tried again after `wait`: what a
    /// person watching needs to know why nothing seems to happen.
    BranchRetrying {
        /// The run.
        run: RunId,
        /// The branch's position in the request.
        index: u32,
        /// For a map step: which item.
        #[serde(default)]
        item: Option<u32>,
        /// Its step's name.
        agent: String,
        /// The attempt that failed (1 for the first).
        attempt: u32,
        /// Attempts in all, when the retry policy has a fixed number.
        of: Option<u32>,
        /// Why it failed, in a few words (`HTTP 500`, `connection refused`).
        error: String,
        /// The wait before the next attempt.
        #[serde(with = "secs")]
        wait: Duration,
    },
    /// A branch's model asked for a tool call, which began.
    ToolStarted {
        /// The run.
        run: RunId,
        /// The branch's position in the request.
        index: u32,
        /// For a map step: which item.
        #[serde(default)]
        item: Option<u32>,
        /// Its step's name.
        agent: String,
        /// The model's id for the call.
        call_id: String,
        /// The tool.
        tool: String,
    },
    /// A branch's tool call waits for a person's approval, or was decided
    /// (`state`); see [`crate::agent::tools::approval`].
    Approval {
        /// The run.
        run: RunId,
        /// The branch's position in the request.
        index: u32,
        /// For a map step: which item.
        #[serde(default)]
        item: Option<u32>,
        /// Its step's name.
        agent: String,
        /// The approval's id (unique in the run).
        id: String,
        /// The model's id for the call.
        call_id: String,
        /// The tool.
        tool: String,
        /// Where it stands.
        state: crate::agent::tools::ApprovalState,
    },
    /// A branch's tool call ended, after `took`; `error` says why it failed.
    ToolFinished {
        /// The run.
        run: RunId,
        /// The branch's position in the request.
        index: u32,
        /// For a map step: which item.
        #[serde(default)]
        item: Option<u32>,
        /// Its step's name.
        agent: String,
        /// The model's id for the call.
        call_id: String,
        /// The tool.
        tool: String,
        /// How long it ran.
        #[serde(with = "secs")]
        took: Duration,
        /// Why it failed, if it did.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        error: Option<String>,
    },
    /// A branch reached its terminal state.
    BranchFinished {
        /// The run.
        run: RunId,
        /// The branch's position in the request.
        index: u32,
        /// For a map step: which item ended (`None`: the step itself).
        #[serde(default)]
        item: Option<u32>,
        /// Its step's name (in a fan-out, its agent).
        agent: String,
        /// How it ended.
        outcome: BranchOutcome,
        /// When, since the run started.
        #[serde(with = "secs")]
        at: Duration,
        /// It ended after the run had merged without it (soft deadline).
        late: bool,
        /// The run it made, if its step runs a workflow whole: its own report is
        /// [`SubRun::report`]. Not serialised (in JSON, the outcome says enough).
        #[serde(skip)]
        sub_run: Option<SubRun>,
    },
    /// Synthesis began, with this many successful branches.
    SynthesisStarted {
        /// The run.
        run: RunId,
        /// Inputs to the merge.
        branches_ok: usize,
        /// When, since the run started (0 in journals of older versions).
        #[serde(default, with = "secs")]
        at: Duration,
    },
    /// More text of the final merge call's answer, as it streams (a live preview).
    SynthesisDelta {
        /// The run.
        run: RunId,
        /// The call's attempt this text belongs to (see `BranchDelta`).
        attempt: u32,
        /// The new text.
        text: String,
    },
    /// Synthesis ended, with the merged text or why not. With a soft deadline this
    /// comes before the stragglers' late `BranchFinished` events.
    SynthesisFinished {
        /// The run.
        run: RunId,
        /// The merged text, or why there is none: `{"text": …}` or `{"error": …}`
        /// in JSON (journals of older versions hold `{"Ok": …}` / `{"Err": …}`,
        /// which read back the same).
        #[serde(with = "merged")]
        result: Result<String, SynthesisError>,
        /// When, since the run started (0 in journals of older versions).
        #[serde(default, with = "secs")]
        at: Duration,
    },
    /// The run is over; the report follows on the reply.
    RunFinished {
        /// The run.
        run: RunId,
        /// Whether it succeeded.
        succeeded: bool,
    },
}

/// The JSON of a merge's result: `{"text": …}` or `{"error": …}` (it was Rust's own
/// `{"Ok": …}`, which every client had to know; that still reads).
mod merged {
    use serde::{Deserialize, Deserializer, Serialize, Serializer};

    use crate::run::outcome::SynthesisError;

    #[derive(Serialize, Deserialize)]
    #[serde(rename_all = "snake_case")]
    enum Merged<T, E> {
        #[serde(alias = "Ok")]
        Text(T),
        #[serde(alias = "Err")]
        Error(E),
    }

    pub(super) fn serialize<S: Serializer>(
        result: &Result<String, SynthesisError>,
        s: S,
    ) -> Result<S::Ok, S::Error> {
        match result {
            Ok(text) => Merged::<&String, &SynthesisError>::Text(text),
            Err(e) => Merged::Error(e),
        }
        .serialize(s)
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(
        d: D,
    ) -> Result<Result<String, SynthesisError>, D::Error> {
        Ok(match Merged::<String, SynthesisError>::deserialize(d)? {
            Merged::Text(text) => Ok(text),
            Merged::Error(e) => Err(e),
        })
    }

    #[cfg(test)]
    mod tests {
        use crate::agent::RunId;
        use crate::run::event::RunEvent;

        #[test]
        fn a_merge_result_reads_as_text_or_error_and_old_journals_still_read() {
            let event = RunEvent::SynthesisFinished {
                run: RunId(1),
                result: Ok("merged".into()),
                at: std::time::Duration::ZERO,
            };
            let json = serde_json::to_value(&event).unwrap();
            assert_eq!(json["result"], serde_json::json!({"text": "merged"}));
            let old = r#"{"event": "synthesis_finished", "run": 1, "result": {"Ok": "merged"}}"#;
            assert_eq!(serde_json::from_str::<RunEvent>(old).unwrap(), event);
        }
    }
}
