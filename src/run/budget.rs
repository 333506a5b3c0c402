//! The run's budget ledger: what a run has spent, and what its branches in flight
//! have reserved. Pure bookkeeping; the scheduler asks it before each dispatch.
//!
//! Before dispatch a branch reserves an estimate; a branch the remaining budget cannot
//! cover is refused (never sent). When it ends, its reservation is replaced by what it
//! used. So a run overspends by at most what its calls in flight use beyond their
//! estimates.

use std::collections::HashMap;

use super::outcome::{BranchOutcome, RefusalReason};
use super::request::Budget;
use crate::provider::PriceTable;

/// What a run has spent and has reserved for branches in flight.
#[derive(Debug, Default)]
pub(crate) struct Ledger {
    spent_tokens: u64,
    spent_cost: f64,
    reserved_tokens: u64,
    reserved_cost: f64,
    /// Per running step: its reservation.
    held: HashMap<usize, (u64, f64)>,
}

impl Ledger {
    /// Reserves step `i`'s estimate of `tokens`, or says why the budget cannot cover it.
    pub(crate) fn reserve(
        &mut self,
        budget: &Budget,
        i: usize,
        tokens: u64,
    ) -> Result<(), RefusalReason> {
        // Cost per token seen so far prices the estimate; before any answer it is
        // unknown (0), so the first wave goes out and the overspend is bounded by the
        // calls in flight.
        let per_token = if self.spent_tokens > 0 {
            self.spent_cost / self.spent_tokens as f64
        } else {
            0.0
        };
        let cost = tokens as f64 * per_token;
        if let Some(cap) = budget.max_tokens {
            let committed = self.spent_tokens + self.reserved_tokens;
            if committed.saturating_add(tokens) > cap {
                return Err(RefusalReason::TokenBudget {
                    cap,
                    committed,
                    needed: tokens,
                });
            }
        }
        if let Some(cap) = budget.max_cost_usd {
            let committed = self.spent_cost + self.reserved_cost;
            if committed >= cap || committed + cost > cap {
                return Err(RefusalReason::CostBudget {
                    cap_usd: cap,
                    committed_usd: committed,
                });
            }
        }
        self.reserved_tokens += tokens;
        self.reserved_cost += cost;
        self.held.insert(i, (tokens, cost));
        Ok(())
    }

    /// Releases step `i`'s reservation and books what it actually used.
    pub(crate) fn settle(&mut self, i: usize, outcome: &BranchOutcome, prices: &PriceTable) {
        if let Some((tokens, cost)) = self.held.remove(&i) {
            self.reserved_tokens -= tokens;
            self.reserved_cost -= cost;
        }
        if let Some(out) = outcome.output() {
            self.spent_tokens += out.usage.total();
            if let Some(c) = out
                .model
                .as_deref()
                .and_then(|m| prices.cost(m, &out.usage))
            {
                self.spent_cost += c;
            }
        }
    }
}
