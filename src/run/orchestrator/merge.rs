//! A run's merge: asking the synthesiser, within what is left of the run's deadline,
//! and telling the run's listener when it starts and how it ended.

use ractor::rpc::CallResult;
use ractor::ActorRef;
use tokio::sync::{mpsc, watch};
use tokio::time::Instant;

use crate::agent::RunId;
use crate::provider::estimate_tokens;
use crate::provider::{PriceTable, Usage};
use crate::run::budget::{Budget, Estimate, Ledger};
use crate::run::event::RunEvent;
use crate::run::outcome::BranchOutcome;
use crate::run::outcome::SynthesisError;
use crate::run::record::SynthesisRecord;
use crate::run::stream;
use crate::run::synthesis::{MergeBranch, MergeRequest, MergeState, MergeStrategy, SynthesiserMsg};

/// What a merge needs from its run.
pub(super) struct Merge<'a> {
    /// The synthesiser, as it is now (`None` while it restarts).
    pub synthesiser: &'a watch::Receiver<Option<ActorRef<SynthesiserMsg>>>,
    pub run: RunId,
    /// The run's task.
    pub input: &'a str,
    pub started: Instant,
    /// The run's deadline.
    pub deadline: Instant,
    pub events: Option<&'a mpsc::UnboundedSender<RunEvent>>,
    /// The run's budget, which an LLM merge reserves from like a branch.
    pub budget: Option<Budget>,
    pub prices: &'a PriceTable,
    /// The provider's default model (an LLM merge that names none asks it).
    pub default_model: Option<&'a str>,
}

/// What `outcomes` spent, in tokens and US dollars (answers priced by the model that
/// gave them, else the default model).
pub(super) fn spent<'o>(
    outcomes: impl Iterator<Item = &'o BranchOutcome>,
    prices: &PriceTable,
    default_model: Option<&str>,
) -> (u64, f64) {
    outcomes
        .filter_map(BranchOutcome::output)
        .fold((0, 0.0), |(tokens, usd), out| {
            let price = out
                .model
                .as_deref()
                .or(default_model)
                .and_then(|m| prices.price(m));
            (
                tokens.saturating_add(out.usage.total()),
                usd + price.map_or(0.0, |p| p.cost(&out.usage)),
            )
        })
}

impl Merge<'_> {
    /// Whether the run's budget, after `spent` by its branches, has room for an
    /// LLM merge of `inputs`: its prompt (the task and the answers) and the most it
    /// may write. Other merges call no model.
    fn fits_budget(
        &self,
        strategy: &MergeStrategy,
        inputs: &[MergeBranch],
        spent: (u64, f64),
    ) -> Result<(), SynthesisError> {
        let (
            Some(budget),
            MergeStrategy::Llm {
                model, max_tokens, ..
            },
        ) = (&self.budget, strategy)
        else {
            return Ok(());
        };
        let answers: u64 = inputs
            .iter()
            .map(|b| match &b.state {
                MergeState::Ok(text) => estimate_tokens(text),
                _ => 0,
            })
            .sum();
        // The merge's own instructions are a few hundred tokens.
        let prompt = estimate_tokens(self.input) + answers + 300;
        let model = model.as_deref().or(self.default_model);
        let usage = Usage {
            input_tokens: prompt,
            output_tokens: u64::from(*max_tokens),
            ..Usage::default()
        };
        let estimate = Estimate {
            tokens: usage.total(),
            model: model.map(str::to_owned),
            cost_usd: model
                .and_then(|m| self.prices.price(m))
                .map(|p| p.cost(&usage)),
        };
        Ledger::having_spent(spent.0, spent.1)
            .reserve(budget, (usize::MAX, None), &estimate)
            .map_err(|reason| SynthesisError::OverBudget {
                reason: reason.to_string(),
            })
    }

    /// Asks the synthesiser to merge `inputs` within what is left of the run deadline,
    /// if the run's budget has room for it after `spent` (tokens, US dollars).
    pub(super) async fn synthesise(
        &self,
        strategy: MergeStrategy,
        inputs: Vec<MergeBranch>,
        spent: (u64, f64),
    ) -> SynthesisRecord {
        let start = self.started.elapsed();
        if let Err(e) = self.fits_budget(&strategy, &inputs, spent) {
            tracing::info!(run = %self.run, %e, "merge refused by the run budget");
            return SynthesisRecord {
                strategy: strategy.label(),
                result: Err(e),
                start,
                end: start,
            };
        }
        if let Some(events) = self.events {
            let _ = events.send(RunEvent::SynthesisStarted {
                run: self.run,
                branches_ok: inputs.iter().filter(|b| b.is_ok()).count(),
                at: start,
            });
        }
        let label = strategy.label();
        let remaining = self.deadline.saturating_duration_since(Instant::now());
        let request = MergeRequest {
            run: self.run,
            input: self.input.to_owned(),
            branches: inputs,
            strategy,
            deltas: self
                .events
                .map(|events| stream::synthesis(events, self.run)),
            deadline: self.deadline,
        };
        let synthesiser = self.synthesiser.borrow().clone();
        let result = match synthesiser {
            None => Err(SynthesisError::SynthesiserGone),
            Some(synthesiser) => {
                let merged = synthesiser
                    .call(
                        |reply| SynthesiserMsg::Merge(Box::new(request), reply),
                        Some(remaining),
                    )
                    .await;
                match merged {
                    Ok(CallResult::Success(r)) => r,
                    Ok(CallResult::Timeout) => {
                        let _ = synthesiser.cast(SynthesiserMsg::Cancel(self.run));
                        Err(SynthesisError::TimedOut)
                    }
                    Ok(CallResult::SenderError) | Err(_) => Err(SynthesisError::SynthesiserGone),
                }
            }
        };
        let end = self.started.elapsed();
        if let Some(events) = self.events {
            let _ = events.send(RunEvent::SynthesisFinished {
                run: self.run,
                result: result
                    .as_ref()
                    .map(|s| s.text.clone())
                    .map_err(Clone::clone),
                at: end,
            });
        }
        SynthesisRecord {
            strategy: label,
            result,
            start,
            end,
        }
    }
}
