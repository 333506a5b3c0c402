//! A run's merge: asking the synthesiser, within what is left of the run's deadline,
//! and telling the run's listener when it starts and how it ended.

use ractor::rpc::CallResult;
use ractor::ActorRef;
use tokio::sync::{mpsc, watch};
use tokio::time::Instant;

use crate::agent::RunId;
use crate::run::event::RunEvent;
use crate::run::outcome::SynthesisError;
use crate::run::record::SynthesisRecord;
use crate::run::stream;
use crate::run::synthesis::{MergeBranch, MergeRequest, MergeStrategy, SynthesiserMsg};

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
}

impl Merge<'_> {
    /// Asks the synthesiser to merge `inputs` within what is left of the run deadline.
    pub(super) async fn synthesise(
        &self,
        strategy: MergeStrategy,
        inputs: Vec<MergeBranch>,
    ) -> SynthesisRecord {
        let start = self.started.elapsed();
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
