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
        /// The merged text, or why there is none.
        result: Result<String, SynthesisError>,
    },
    /// The run is over; the report follows on the reply.
    RunFinished {
        /// The run.
        run: RunId,
        /// Whether it succeeded.
        succeeded: bool,
    },
}
