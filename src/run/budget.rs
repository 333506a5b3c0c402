//! The run's budget ledger: what a run has spent, and what its branches in flight
//! have reserved. Pure bookkeeping; the scheduler asks it before each dispatch.
//!
//! Before dispatch a branch reserves its [`Estimate`]: its prompt plus the most it may
//! generate (the agent's `max_tokens`), priced with its model's price. A branch the
//! remaining budget cannot cover is refused (never sent); so is any branch under a cost
//! cap whose model has no price, since the cap could not be kept. When a branch ends,
//! its reservation is replaced by what it used, priced by the model that answered (or,
//! if that one has no price, by the model asked for). A branch cut off while its call
//! was in flight (timed out, cancelled) may have been billed for what it generated, so
//! it keeps its whole reservation. So a run overspends by at most what its calls in
//! flight use beyond their estimates.

use std::collections::HashMap;

use serde::{Deserialize, Serialize};

use super::outcome::{BranchError, BranchOutcome, RefusalReason};
use crate::agent::AgentError;
use crate::provider::PriceTable;

/// Per-run caps. Before dispatch each branch reserves an estimate (its prompt's
/// tokens plus `branch_tokens`); a branch the remaining budget cannot cover ends
/// `Refused` and is never sent. After it ends, the reservation is replaced by what
/// it used. So a run overspends by at most what its calls in flight use beyond
/// their estimates.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct Budget {
    /// Most tokens (input + output) the run may use.
    pub max_tokens: Option<u64>,
    /// Most the run may cost, USD (priced with the runtime's price table).
    pub max_cost_usd: Option<f64>,
    /// Output tokens to reserve per branch, on top of its prompt.
    pub branch_tokens: u64,
}

impl Default for Budget {
    fn default() -> Self {
        Self {
            max_tokens: None,
            max_cost_usd: None,
            branch_tokens: 512,
        }
    }
}

impl Budget {
    /// Whether it caps anything (tokens or cost).
    pub fn caps(&self) -> bool {
        self.max_tokens.is_some() || self.max_cost_usd.is_some()
    }
}

/// Which branch: a step, and an item of a map step.
pub(crate) type BranchKey = (usize, Option<usize>);

/// What one branch may use at most.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct Estimate {
    /// Prompt plus the most it may generate.
    pub tokens: u64,
    /// The model it will ask (the provider's default when the agent names none).
    pub model: Option<String>,
    /// What `tokens` cost on `model` (`None`: no price known).
    pub cost_usd: Option<f64>,
}

/// What a run has spent and has reserved for branches in flight.
#[derive(Debug, Default)]
pub(crate) struct Ledger {
    spent_tokens: u64,
    spent_cost: f64,
    reserved_tokens: u64,
    reserved_cost: f64,
    /// Per running step: its reservation.
    held: HashMap<BranchKey, Estimate>,
}

impl Ledger {
    /// Reserves branch `i`'s estimate, or says why the budget cannot cover it.
    pub(crate) fn reserve(
        &mut self,
        budget: &Budget,
        i: BranchKey,
        estimate: &Estimate,
    ) -> Result<(), RefusalReason> {
        if let Some(cap) = budget.max_tokens {
            let committed = self.spent_tokens.saturating_add(self.reserved_tokens);
            if committed.saturating_add(estimate.tokens) > cap {
                return Err(RefusalReason::TokenBudget {
                    cap,
                    committed,
                    needed: estimate.tokens,
                });
            }
        }
        let cost = estimate.cost_usd.unwrap_or(0.0);
        if let Some(cap) = budget.max_cost_usd {
            let Some(needed) = estimate.cost_usd else {
                return Err(RefusalReason::Unpriced {
                    model: estimate
                        .model
                        .clone()
                        .unwrap_or_else(|| "the provider's default model".to_owned()),
                });
            };
            let committed = self.spent_cost + self.reserved_cost;
            if committed + needed > cap {
                return Err(RefusalReason::CostBudget {
                    cap_usd: cap,
                    committed_usd: committed,
                    needed_usd: needed,
                });
            }
        }
        self.reserved_tokens = self.reserved_tokens.saturating_add(estimate.tokens);
        self.reserved_cost += cost;
        self.held.insert(i, estimate.clone());
        Ok(())
    }

    /// Releases branch `i`'s reservation and books what it used (see the module docs).
    pub(crate) fn settle(&mut self, i: BranchKey, outcome: &BranchOutcome, prices: &PriceTable) {
        let Some(held) = self.held.remove(&i) else {
            return;
        };
        self.reserved_tokens = self.reserved_tokens.saturating_sub(held.tokens);
        self.reserved_cost = (self.reserved_cost - held.cost_usd.unwrap_or(0.0)).max(0.0);
        let asked = held.model.as_deref().and_then(|m| prices.price(m));
        match outcome {
            BranchOutcome::Ok(out) => {
                self.spent_tokens = self.spent_tokens.saturating_add(out.usage.total());
                let answered = out.model.as_deref().and_then(|m| prices.price(m));
                let cost = match answered.or(asked) {
                    Some(price) => price.cost(&out.usage),
                    None => held.cost_usd.unwrap_or(0.0),
                };
                self.spent_cost += cost;
            }
            // Its calls were answered before it failed (a tool loop): what they used.
            // Once such a branch booked nothing, however many turns it had paid for.
            BranchOutcome::Failed {
                error: BranchError::Agent(AgentError::Spent { usage, .. }),
            } => {
                self.spent_tokens = self.spent_tokens.saturating_add(usage.total());
                self.spent_cost += match asked {
                    Some(price) => price.cost(usage),
                    None => held.cost_usd.unwrap_or(0.0),
                };
            }
            BranchOutcome::TimedOut { .. } | BranchOutcome::Cancelled { .. } => {
                self.spent_tokens = self.spent_tokens.saturating_add(held.tokens);
                self.spent_cost += held.cost_usd.unwrap_or(0.0);
            }
            // A model answered, and its answer was refused (empty, or not of the
            // asked shape): it was billed. Once such calls cost nothing here, and a
            // step's retries spent 36× the cap.
            BranchOutcome::Failed {
                error:
                    BranchError::Agent(
                        AgentError::EmptyAnswer { .. } | AgentError::InvalidOutput { .. },
                    ),
            } => {
                self.spent_tokens = self.spent_tokens.saturating_add(held.tokens);
                self.spent_cost += held.cost_usd.unwrap_or(0.0);
            }
            BranchOutcome::Failed { .. } | BranchOutcome::Refused { .. } => {}
        }
    }

    /// What branch `i` may use in all, now that it is reserved: its own reservation
    /// and what the budget has left beyond every reservation, in tokens (a cost cap
    /// converted at the branch's own price). A tool loop's turns are bounded by it:
    /// by the run's budget, not by one call's estimate (which knows nothing of the
    /// tools' schemas and results, and failed every tool agent under any budget).
    /// `None` when nothing caps it.
    pub(crate) fn headroom(&self, budget: &Budget, i: BranchKey) -> Option<u64> {
        let held = self.held.get(&i)?;
        let by_tokens = budget.max_tokens.map(|cap| {
            cap.saturating_sub(self.spent_tokens.saturating_add(self.reserved_tokens))
                .saturating_add(held.tokens)
        });
        let by_cost = budget.max_cost_usd.and_then(|cap| {
            let cost = held.cost_usd.filter(|c| *c > 0.0)?;
            let left = (cap - self.spent_cost - self.reserved_cost).max(0.0) + cost;
            Some((left / cost * held.tokens as f64).floor() as u64)
        });
        match (by_tokens, by_cost) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// A ledger that starts having spent `tokens` and `usd` (a merge's check, after
    /// the branches).
    pub(crate) fn having_spent(tokens: u64, usd: f64) -> Self {
        Self {
            spent_tokens: tokens,
            spent_cost: usd,
            ..Self::default()
        }
    }

    /// What the run has spent so far: tokens and US dollars (as the ledger counts).
    #[cfg(test)]
    pub(crate) fn spent(&self) -> (u64, f64) {
        (self.spent_tokens, self.spent_cost)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::agent::AgentOutput;
    use crate::provider::Usage;
    use crate::run::outcome::{CancelReason, DeadlineKind};

    fn usd(cap: f64) -> Budget {
        Budget {
            max_cost_usd: Some(cap),
            ..Budget::default()
        }
    }

    fn est(tokens: u64, model: Option<&str>, cost: Option<f64>) -> Estimate {
        Estimate {
            tokens,
            model: model.map(str::to_owned),
            cost_usd: cost,
        }
    }

    fn answered(model: &str, input: u64, output: u64) -> BranchOutcome {
        BranchOutcome::Ok(AgentOutput {
            usage: Usage {
                input_tokens: input,
                output_tokens: output,
                ..Usage::default()
            },
            model: Some(model.to_owned()),
            ..AgentOutput::text("x")
        })
    }

    #[test]
    fn regression_a_cost_cap_holds_before_any_answer_is_priced() {
        // Once, the first wave was priced at $0 and every branch went out.
        let mut l = Ledger::default();
        let e = est(1_000, Some("claude-sonnet-4"), Some(0.004));
        let granted = (0..500)
            .filter(|&i| l.reserve(&usd(0.01), (i, None), &e).is_ok())
            .count();
        assert_eq!(
            granted, 2,
            "two estimates of $0.004 fit under $0.01, not three"
        );
    }

    #[test]
    fn regression_a_refused_answer_keeps_its_reservation_and_a_provider_error_does_not() {
        // The seventh probe: empty answers under a step's retries cost nothing here,
        // and 51 billed calls went out against a 5,000-token budget.
        let budget = Budget {
            max_tokens: Some(1_000),
            ..Budget::default()
        };
        let e = est(400, Some("m"), None);
        let prices = PriceTable::default();
        let empty = BranchOutcome::Failed {
            error: BranchError::Agent(AgentError::EmptyAnswer {
                model: "m".into(),
                stop_reason: None,
            }),
        };
        let mut l = Ledger::default();
        for i in 0..2 {
            l.reserve(&budget, (i, None), &e).unwrap();
            l.settle((i, None), &empty, &prices);
        }
        assert_eq!(l.spent().0, 800);
        assert!(
            l.reserve(&budget, (2, None), &e).is_err(),
            "a third would pass the cap"
        );
        let refused = BranchOutcome::Failed {
            error: BranchError::Agent(AgentError::Rejected {
                reason: "no".into(),
            }),
        };
        let mut l = Ledger::default();
        l.reserve(&budget, (0, None), &e).unwrap();
        l.settle((0, None), &refused, &prices);
        assert_eq!(l.spent().0, 0, "no model answered");
    }

    #[test]
    fn regression_a_cost_cap_refuses_a_model_without_a_price() {
        let mut l = Ledger::default();
        let e = est(10, Some("mystery"), None);
        assert_eq!(
            l.reserve(&usd(1.0), (0, None), &e),
            Err(RefusalReason::Unpriced {
                model: "mystery".into()
            })
        );
        assert!(
            l.reserve(&Budget::default(), (0, None), &e).is_ok(),
            "no cost cap, no need"
        );
    }

    #[test]
    fn regression_an_answer_from_an_unknown_model_is_priced_as_the_model_asked() {
        let prices = PriceTable::default();
        let mut l = Ledger::default();
        let e = est(2_000, Some("claude-sonnet-4"), Some(0.02));
        l.reserve(&usd(1.0), (0, None), &e).unwrap();
        l.settle(
            (0, None),
            &answered("renamed-by-the-server", 1_000_000, 0),
            &prices,
        );
        let (_, cost) = l.spent();
        assert!(
            (cost - 3.0).abs() < 1e-9,
            "priced at sonnet's input rate: {cost}"
        );
    }

    #[test]
    fn settling_books_what_was_used_and_keeps_the_reservation_of_cut_calls() {
        let prices = PriceTable::default();
        let table: [(BranchOutcome, u64); 4] = [
            (answered("claude-sonnet-4", 100, 50), 150),
            (
                BranchOutcome::TimedOut {
                    deadline: DeadlineKind::Branch,
                    last_error: None,
                    partial: None,
                },
                1_000,
            ),
            (
                BranchOutcome::Cancelled {
                    reason: CancelReason::QuorumUnreachable,
                },
                1_000,
            ),
            (
                BranchOutcome::Failed {
                    error: crate::run::outcome::BranchError::SpecialistDied { agent: "a".into() },
                },
                0,
            ),
        ];
        for (outcome, spent) in table {
            let mut l = Ledger::default();
            l.reserve(
                &Budget::default(),
                (0, None),
                &est(1_000, Some("claude-sonnet-4"), Some(0.01)),
            )
            .unwrap();
            l.settle((0, None), &outcome, &prices);
            assert_eq!(l.spent().0, spent, "{}", outcome.label());
            assert_eq!((l.reserved_tokens, l.held.len()), (0, 0));
        }
    }

    #[test]
    fn regression_a_tool_loop_that_failed_after_paid_turns_books_what_they_used() {
        let prices = PriceTable::default();
        let mut l = Ledger::default();
        let budget = Budget {
            max_tokens: Some(10_000),
            ..Budget::default()
        };
        l.reserve(&budget, (0, None), &est(4_000, None, None))
            .unwrap();
        let spent = BranchOutcome::Failed {
            error: BranchError::Agent(AgentError::Spent {
                cause: Box::new(AgentError::Rejected {
                    reason: "still calling tools".into(),
                }),
                usage: Usage {
                    input_tokens: 2_500,
                    output_tokens: 300,
                    ..Usage::default()
                },
                attempts: 3,
                model: None,
            }),
        };
        l.settle((0, None), &spent, &prices);
        assert_eq!(l.spent().0, 2_800, "its turns were paid for");
    }

    #[test]
    fn regression_a_branchs_headroom_is_what_the_budget_has_left_not_one_calls_estimate() {
        // Tool loops were held to their one-call estimate and failed under any budget.
        let mut l = Ledger::default();
        let budget = Budget {
            max_tokens: Some(10_000),
            ..Budget::default()
        };
        l.reserve(&budget, (0, None), &est(1_000, None, None))
            .unwrap();
        l.reserve(&budget, (1, None), &est(2_000, None, None))
            .unwrap();
        // 10,000 - 3,000 reserved, plus its own 1,000.
        assert_eq!(l.headroom(&budget, (0, None)), Some(8_000));
        let usd = Budget {
            max_cost_usd: Some(1.0),
            ..Budget::default()
        };
        let mut l = Ledger::default();
        l.reserve(&usd, (0, None), &est(1_000, Some("m"), Some(0.125)))
            .unwrap();
        // $1 left in all at $0.125 a thousand tokens.
        assert_eq!(l.headroom(&usd, (0, None)), Some(8_000));
        assert_eq!(l.headroom(&Budget::default(), (0, None)), None);
    }
}
