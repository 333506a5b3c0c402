//! Tool calls held for approval in `serve`. Each run driven here has an
//! [`Approver`] that parks its requests on the [`Desk`] until a client decides
//! them (`GET /v1/runs/{id}/approvals`, `POST /v1/runs/{id}/approvals/{approval}`).
//! The requests and decisions are told as `approval` events (journaled like every
//! event). A request whose branch stopped waiting (its deadline, a cancel, the
//! server stopping) is no longer listed; at a resume the branch asks again, under
//! the same id.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use fanfare::agent::tools::{ApprovalRequest, Approvals, Approver, Decision};
use futures::future::BoxFuture;
use tokio::sync::oneshot;

use crate::spec::ApprovalDefault;

/// The requests waiting, by run and id.
#[derive(Default)]
pub(crate) struct Desk {
    pending: Mutex<HashMap<i64, BTreeMap<String, Waiting>>>,
    /// How long a request waits before `default` decides it (`None`: as long as
    /// its branch does).
    timeout: Option<Duration>,
    default: ApprovalDefault,
}

/// The most calls of one run that wait for a decision at once; more are rejected
/// at once (each holds its arguments, up to 256 KiB: 40 turns of 32 calls took the
/// server to 354 MB, and a list of them to 154 MB an answer).
const MAX_PER_RUN: usize = 64;
/// The most calls of all runs that wait at once.
const MAX_WAITING: usize = 256;

struct Waiting {
    request: ApprovalRequest,
    answer: oneshot::Sender<Decision>,
}

/// Why a decision was not taken.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Undecided {
    /// No such request waits (never asked, decided already, or no longer waited
    /// for).
    NotWaiting,
}

impl Desk {
    /// A desk where a request waits at most `timeout`, then `default` decides.
    pub(crate) fn new(timeout: Option<Duration>, default: ApprovalDefault) -> Self {
        Self {
            pending: Mutex::default(),
            timeout,
            default,
        }
    }

    /// Run `run`'s approver.
    pub(crate) fn approver(self: &Arc<Self>, run: i64) -> Approvals {
        Approvals::new(RunDesk {
            desk: self.clone(),
            run,
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<i64, BTreeMap<String, Waiting>>> {
        self.pending.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Run `run`'s requests waiting for a decision, by id.
    pub(crate) fn waiting(&self, run: i64) -> Vec<ApprovalRequest> {
        let mut pending = self.lock();
        let Some(of_run) = pending.get_mut(&run) else {
            return Vec::new();
        };
        // A branch that stopped waiting dropped its end.
        of_run.retain(|_, w| !w.answer.is_closed());
        of_run.values().map(|w| w.request.clone()).collect()
    }

    /// Decides run `run`'s request `id`.
    pub(crate) fn decide(&self, run: i64, id: &str, decision: Decision) -> Result<(), Undecided> {
        let waiting = self
            .lock()
            .get_mut(&run)
            .and_then(|of_run| of_run.remove(id))
            .ok_or(Undecided::NotWaiting)?;
        waiting
            .answer
            .send(decision)
            .map_err(|_| Undecided::NotWaiting)
    }

    /// Run `run` ended: nothing of it waits any more.
    pub(crate) fn forget(&self, run: i64) {
        self.lock().remove(&run);
    }
}

struct RunDesk {
    desk: Arc<Desk>,
    run: i64,
}

impl Approver for RunDesk {
    fn decide(&self, request: ApprovalRequest) -> BoxFuture<'static, Decision> {
        let (answer, decided) = oneshot::channel();
        let (id, run) = (request.id.clone(), self.run);
        // A call asked for a reason of its own (a repair's call of unknown outcome)
        // is never approved by default: only a person runs it again (the timeout's
        // approve re-ran a charge whose first run may have gone through).
        let default = match request.why {
            Some(_) => ApprovalDefault::Reject,
            None => self.desk.default,
        };
        {
            let mut pending = self.desk.lock();
            for of_run in pending.values_mut() {
                of_run.retain(|_, w| !w.answer.is_closed());
            }
            let here = pending.get(&run).map_or(0, BTreeMap::len);
            let all: usize = pending.values().map(BTreeMap::len).sum();
            if here >= MAX_PER_RUN || all >= MAX_WAITING {
                return Box::pin(std::future::ready(Decision::Reject {
                    reason: Some(format!(
                        "too many calls wait for approval ({here} of this run, {all} in all; at most {MAX_PER_RUN} and {MAX_WAITING}): not run"
                    )),
                }));
            }
            pending
                .entry(run)
                .or_default()
                .insert(id.clone(), Waiting { request, answer });
        }
        let (desk, timeout) = (self.desk.clone(), self.desk.timeout);
        Box::pin(async move {
            let gone = || Decision::Reject {
                reason: Some("the run stopped waiting for a decision".to_owned()),
            };
            let Some(limit) = timeout else {
                return decided.await.unwrap_or_else(|_| gone());
            };
            match tokio::time::timeout(limit, decided).await {
                Ok(decision) => decision.unwrap_or_else(|_| gone()),
                Err(_) => {
                    // No one decided in time: no longer listed, and the default says.
                    if let Some(of_run) = desk.lock().get_mut(&run) {
                        of_run.remove(&id);
                    }
                    match default {
                        ApprovalDefault::Approve => Decision::Approve,
                        ApprovalDefault::Reject => Decision::Reject {
                            reason: Some(format!("no decision within {limit:?}")),
                        },
                    }
                }
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use fanfare::agent::{BranchId, RunId};

    fn request(id: &str) -> ApprovalRequest {
        ApprovalRequest {
            id: id.to_owned(),
            branch: BranchId {
                run: RunId(1),
                index: 0,
                item: None,
            },
            agent: "a".into(),
            turn: 1,
            call_id: "c1".into(),
            tool: "t".into(),
            input: serde_json::json!({}),
            why: None,
        }
    }

    #[tokio::test]
    async fn a_request_waits_until_decided_once_and_one_given_up_is_not_listed() {
        let desk = Arc::new(Desk::default());
        let approver = desk.approver(7);
        let first = tokio::spawn(approver.decide(request("0-1-0")));
        let second = approver.decide(request("1-1-0"));
        tokio::task::yield_now().await;
        let ids =
            |desk: &Desk| -> Vec<String> { desk.waiting(7).into_iter().map(|r| r.id).collect() };
        assert_eq!(ids(&desk), ["0-1-0", "1-1-0"]);
        assert_eq!(desk.decide(7, "0-1-0", Decision::Approve), Ok(()));
        assert_eq!(first.await.unwrap(), Decision::Approve);
        assert_eq!(
            desk.decide(7, "0-1-0", Decision::Approve),
            Err(Undecided::NotWaiting),
            "decided once"
        );
        assert_eq!(
            desk.decide(8, "1-1-0", Decision::Approve),
            Err(Undecided::NotWaiting),
            "another run's"
        );
        drop(second);
        assert!(ids(&desk).is_empty(), "given up");
    }

    #[tokio::test(start_paused = true)]
    async fn a_request_no_one_decides_in_time_takes_the_default_and_is_no_longer_listed() {
        for (default, want) in [
            (ApprovalDefault::Approve, true),
            (ApprovalDefault::Reject, false),
        ] {
            let desk = Arc::new(Desk::new(Some(Duration::from_secs(600)), default));
            let asked = tokio::spawn(desk.approver(1).decide(request("0-1-0")));
            tokio::time::sleep(Duration::from_secs(599)).await;
            assert_eq!(desk.waiting(1).len(), 1, "still waiting");
            let decision = asked.await.unwrap();
            assert_eq!(decision == Decision::Approve, want, "{decision:?}");
            assert!(desk.waiting(1).is_empty());
            if let Decision::Reject { reason } = decision {
                assert!(reason.unwrap().contains("no decision within 600s"));
            }
        }
    }

    #[tokio::test(start_paused = true)]
    async fn regression_a_call_of_unknown_outcome_is_never_approved_by_default() {
        // A repair's in-flight call was run again by `--approval-default approve`
        // with no person involved (probe 10, D3).
        let desk = Arc::new(Desk::new(
            Some(Duration::from_secs(2)),
            ApprovalDefault::Approve,
        ));
        let mut unsure = request("0-2-0");
        unsure.why = Some("it was in flight when the run this one repairs was interrupted".into());
        let decision = desk.approver(1).decide(unsure).await;
        assert!(
            matches!(&decision, Decision::Reject { reason: Some(r) } if r.contains("no decision within 2s")),
            "{decision:?}"
        );
    }

    #[tokio::test]
    async fn regression_no_more_than_64_calls_of_a_run_wait_and_the_rest_are_rejected_at_once() {
        let desk = Arc::new(Desk::default());
        let approver = desk.approver(3);
        let mut held = Vec::new();
        for k in 0..MAX_PER_RUN {
            held.push(approver.decide(request(&format!("0-1-{k}"))));
        }
        let over = approver.decide(request("0-1-999")).await;
        assert!(
            matches!(&over, Decision::Reject { reason: Some(r) } if r.contains("too many calls wait")),
            "{over:?}"
        );
        assert_eq!(desk.waiting(3).len(), MAX_PER_RUN);
        // Given up, they make room.
        held.clear();
        assert!(desk.waiting(3).is_empty());
    }
}
