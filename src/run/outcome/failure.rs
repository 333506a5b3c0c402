//! Why a run fails: [`RunFailure`].

use serde::{Deserialize, Serialize};

use super::{BranchOutcome, SynthesisError};

/// Why a run did not succeed.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
#[non_exhaustive]
pub enum RunFailure {
    /// Fail-fast: this branch did not succeed, so the run ended.
    Branch {
        /// Its index.
        index: u32,
        /// Its agent.
        agent: String,
        /// How it ended.
        outcome: Box<BranchOutcome>,
    },
    /// Tolerate-partial: too many branches failed for the quorum to be met.
    QuorumUnreachable {
        /// The quorum.
        quorum: usize,
        /// Branches that did not succeed.
        not_ok: usize,
        /// Branches in all.
        of: usize,
    },
    /// Tolerate-partial: every branch ended, too few succeeded.
    QuorumNotMet {
        /// The quorum.
        quorum: usize,
        /// Branches that succeeded.
        ok: usize,
        /// Branches in all.
        of: usize,
    },
    /// The branches met the policy but the merge failed.
    Synthesis(SynthesisError),
    /// Its caller stopped it ([`RunHandle::stop`](crate::RunHandle::stop)) before it
    /// ended: what had ended is kept, the rest is cancelled, and there is no merge.
    Stopped,
    /// The policy was met, but none of the steps whose outputs are the run's answer
    /// (its final steps, which the merge reads) succeeded: there is nothing to merge.
    NoAnswer {
        /// The final steps and why each did not succeed.
        steps: Vec<FinalStep>,
    },
}

/// A final step that did not succeed, as [`RunFailure::NoAnswer`] names it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct FinalStep {
    /// The step.
    pub step: String,
    /// Why it did not succeed.
    pub problem: String,
}

impl RunFailure {
    /// [`RunFailure::NoAnswer`] when none of `finals` — the final steps, each with
    /// its outcome — succeeded; `None` when one did (or there are none).
    pub fn no_answer<'a>(
        finals: impl IntoIterator<Item = (&'a str, &'a BranchOutcome)>,
    ) -> Option<RunFailure> {
        let mut steps = Vec::new();
        for (step, outcome) in finals {
            match outcome.problem() {
                None => return None,
                Some(problem) => steps.push(FinalStep {
                    step: step.to_owned(),
                    problem,
                }),
            }
        }
        (!steps.is_empty()).then_some(RunFailure::NoAnswer { steps })
    }
}

impl std::fmt::Display for RunFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            RunFailure::Branch {
                index,
                agent,
                outcome,
            } => write!(
                f,
                "branch {index} ({agent}) {}",
                outcome.problem().unwrap_or_default()
            ),
            RunFailure::QuorumUnreachable { quorum, not_ok, of } => write!(
                f,
                "quorum {quorum} unreachable: {not_ok} of {of} branches did not succeed"
            ),
            RunFailure::QuorumNotMet { quorum, ok, of } => {
                write!(
                    f,
                    "quorum {quorum} not met: {ok} of {of} branches succeeded"
                )
            }
            RunFailure::Synthesis(e) => write!(f, "synthesis failed: {e}"),
            RunFailure::Stopped => f.write_str("stopped before it ended"),
            RunFailure::NoAnswer { steps } => {
                let [only] = steps.as_slice() else {
                    f.write_str("no answer: none of the final steps succeeded (")?;
                    for (i, s) in steps.iter().enumerate() {
                        let sep = if i == 0 { "" } else { "; " };
                        write!(f, "{sep}`{}`: {}", s.step, s.problem)?;
                    }
                    return f.write_str(")");
                };
                write!(
                    f,
                    "no answer: the final step `{}` did not succeed ({})",
                    only.step, only.problem
                )
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::run::CancelReason;

    fn cancelled() -> BranchOutcome {
        BranchOutcome::Cancelled {
            reason: CancelReason::Stopped,
        }
    }

    #[test]
    fn no_answer_names_the_final_steps_that_did_not_succeed() {
        let ok = BranchOutcome::Ok(crate::agent::AgentOutput::text("fine"));
        let stopped = cancelled();
        // Regression: the README's `review` workflow, its last step cancelled, said
        // "no branch succeeded" though two had.
        type Finals<'a> = &'a [(&'a str, &'a BranchOutcome)];
        let cases: &[(Finals, Option<&str>)] = &[
            (&[], None),
            (&[("summary", &ok)], None),
            (&[("a", &stopped), ("b", &ok)], None),
            (
                &[("summary", &stopped)],
                Some("no answer: the final step `summary` did not succeed (cancelled: the run was stopped)"),
            ),
            (
                &[("a", &stopped), ("b", &stopped)],
                Some("no answer: none of the final steps succeeded (`a`: cancelled: the run was stopped; `b`: cancelled: the run was stopped)"),
            ),
        ];
        for (finals, said) in cases {
            let failure = RunFailure::no_answer(finals.iter().copied());
            assert_eq!(
                failure.map(|f| f.to_string()).as_deref(),
                *said,
                "{finals:?}"
            );
        }
    }
}
