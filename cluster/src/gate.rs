//! One admission gate for the whole cluster. Provider limits are per account, not per
//! machine: the orchestrator's gate (its provider stack's [`Admission`]) admits every
//! model call in the cluster. A worker's call leases a permit from it
//! ([`LeasedGate`], in the worker's stack where its own gate would be), holds it while
//! in flight, and gives it back with how the call ended ([`CallEnd`]), so a 429 on a
//! worker cuts the one window. The [`GateHost`] keeps each lease under its node's
//! name; when a node is lost, its leases come back at once.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use fanfare::provider::{
    not_admitted, Admission, BoxFuture, CallEnd, Completion, CompletionRequest, Lease, NotAdmitted,
    Provider, ProviderError,
};
use ractor::rpc::CallResult;
use ractor::{Actor, ActorProcessingErr, ActorRef};
use tokio::time::Instant;

use crate::wire::{Frame, GateMsg, Granted, LeaseAsk, Released, GATE_GROUP};

/// The orchestrator's gate, as its provider stack built it.
pub type Gate = Admission<Arc<dyn Provider>>;

/// The leases held by workers' calls, by id, with their node.
#[derive(Default)]
pub struct Leases {
    next: AtomicU64,
    held: Mutex<HashMap<u64, (String, Lease)>>,
}

impl std::fmt::Debug for Leases {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Leases")
            .field("held", &self.held())
            .finish()
    }
}

impl Leases {
    fn table(&self) -> std::sync::MutexGuard<'_, HashMap<u64, (String, Lease)>> {
        self.held
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn insert(&self, node: String, lease: Lease) -> u64 {
        let id = self.next.fetch_add(1, Ordering::Relaxed) + 1;
        self.table().insert(id, (node, lease));
        id
    }

    fn release(&self, id: u64, end: CallEnd) {
        let found = self.table().remove(&id);
        if let Some((_, lease)) = found {
            lease.settle(end);
        }
    }

    /// Takes back every lease of `node` (lost); returns how many.
    pub fn drop_node(&self, node: &str) -> usize {
        let dropped: Vec<_> = {
            let mut table = self.table();
            let ids: Vec<u64> = table
                .iter()
                .filter(|(_, (n, _))| n == node)
                .map(|(id, _)| *id)
                .collect();
            ids.into_iter().filter_map(|id| table.remove(&id)).collect()
        };
        // Dropped outside the lock: each returns its permit to the gate.
        dropped.len()
    }

    /// Leases held now.
    pub fn held(&self) -> usize {
        self.table().len()
    }

    /// Leases held now by `node`'s calls.
    pub fn held_by(&self, node: &str) -> usize {
        self.table().values().filter(|(n, _)| n == node).count()
    }
}

/// Whether a node is still up, asked before a lease is handed over.
pub type IsUp = Arc<dyn Fn(&str) -> bool + Send + Sync>;

/// The orchestrator's gate actor (group [`GATE_GROUP`]).
pub struct GateHost;

/// What a [`GateHost`] starts with.
pub struct GateArgs {
    /// The gate (`None`: the orchestrator has none, so calls are not limited).
    pub gate: Option<Arc<Gate>>,
    /// Where leases are kept.
    pub leases: Arc<Leases>,
    /// Whether a node is up.
    pub is_up: IsUp,
}

impl Actor for GateHost {
    type Msg = GateMsg;
    type State = GateArgs;
    type Arguments = GateArgs;

    async fn pre_start(
        &self,
        myself: ActorRef<GateMsg>,
        args: GateArgs,
    ) -> Result<GateArgs, ActorProcessingErr> {
        ractor::pg::join(GATE_GROUP.to_owned(), vec![myself.get_cell()]);
        Ok(args)
    }

    async fn handle(
        &self,
        _myself: ActorRef<GateMsg>,
        message: GateMsg,
        state: &mut GateArgs,
    ) -> Result<(), ActorProcessingErr> {
        match message {
            GateMsg::Acquire(Frame(ask), reply) => {
                let ask = match ask {
                    Ok(ask) => ask,
                    Err(reason) => {
                        let _ =
                            reply.send(Frame::new(Err(NotAdmitted::GateUnreachable { reason })));
                        return Ok(());
                    }
                };
                let Some(gate) = state.gate.clone() else {
                    let granted = Granted {
                        lease: 0,
                        waited_ms: 0,
                    };
                    let _ = reply.send(Frame::new(Ok(granted)));
                    return Ok(());
                };
                let leases = state.leases.clone();
                let is_up = state.is_up.clone();
                // Waiting for a permit must not hold up the mailbox (releases).
                tokio::spawn(async move {
                    let deadline = ask
                        .wait_ms
                        .map(|ms| Instant::now() + Duration::from_millis(ms));
                    let answer = match gate
                        .lease(ask.model.as_deref(), ask.estimate, deadline)
                        .await
                    {
                        Err(reason) => Err(reason),
                        Ok(lease) if !is_up(&ask.node) => {
                            drop(lease);
                            Err(NotAdmitted::GateUnreachable {
                                reason: format!("node `{}` is no longer in the cluster", ask.node),
                            })
                        }
                        Ok(lease) => {
                            let waited_ms = lease.waited().as_millis() as u64;
                            let id = leases.insert(ask.node, lease);
                            Ok(Granted {
                                lease: id,
                                waited_ms,
                            })
                        }
                    };
                    let granted = answer.as_ref().ok().map(|g| g.lease);
                    if reply.send(Frame::new(answer)).is_err() {
                        if let Some(id) = granted {
                            leases.release(id, CallEnd::Failed);
                        }
                    }
                });
            }
            GateMsg::Release(Frame(Ok(Released { lease, end }))) => {
                state.leases.release(lease, end);
            }
            GateMsg::Release(Frame(Err(reason))) => {
                tracing::warn!(%reason, "a worker gave back a lease the gate could not read");
            }
        }
        Ok(())
    }
}

/// A worker's admission layer: each call leases its permit from the orchestrator's
/// gate. Put it where the worker's own gate would be
/// ([`Stack::gate_with`](fanfare::provider::Stack::gate_with)).
pub struct LeasedGate {
    inner: Arc<dyn Provider>,
    node: String,
}

impl LeasedGate {
    /// Wraps `inner` for the worker named `node`.
    pub fn new(inner: Arc<dyn Provider>, node: impl Into<String>) -> Self {
        Self {
            inner,
            node: node.into(),
        }
    }
}

/// The orchestrator's gate, as found in the process groups.
fn find_gate() -> Option<ActorRef<GateMsg>> {
    ractor::pg::get_members(&GATE_GROUP.to_owned())
        .into_iter()
        .find(|cell| !cell.get_id().is_local())
        .map(ActorRef::from)
}

/// Gives a lease back when dropped: with how the call ended, or as a failure if the
/// call was cancelled.
struct GiveBack {
    gate: ActorRef<GateMsg>,
    lease: u64,
    end: CallEnd,
}

impl Drop for GiveBack {
    fn drop(&mut self) {
        if self.lease != 0 {
            let released = Released {
                lease: self.lease,
                end: self.end,
            };
            let _ = self.gate.cast(GateMsg::Release(Frame::new(released)));
        }
    }
}

impl Provider for LeasedGate {
    fn name(&self) -> &str {
        self.inner.name()
    }

    fn is_simulated(&self) -> bool {
        self.inner.is_simulated()
    }

    fn default_model(&self) -> Option<&str> {
        self.inner.default_model()
    }

    fn complete(
        &self,
        request: CompletionRequest,
    ) -> BoxFuture<'_, Result<Completion, ProviderError>> {
        Box::pin(async move {
            let unreachable = |reason: String| NotAdmitted::GateUnreachable { reason };
            let Some(gate) = find_gate() else {
                let reason =
                    unreachable("no orchestrator in the cluster (not joined yet, or lost)".into());
                return Err(not_admitted(&self.inner, &request, reason));
            };
            let estimate = Gate::estimate(&request);
            let wait = request
                .deadline
                .map(|d| d.saturating_duration_since(Instant::now()));
            let ask = LeaseAsk {
                node: self.node.clone(),
                model: request
                    .model
                    .clone()
                    .or_else(|| self.inner.default_model().map(str::to_owned)),
                estimate,
                wait_ms: wait.map(|w| w.as_millis() as u64),
            };
            // The gate answers by the deadline; a little more for the way back.
            let limit = wait.unwrap_or(Duration::from_secs(600)) + Duration::from_secs(2);
            let answer = gate
                .call(
                    |reply| GateMsg::Acquire(Frame::new(ask), reply),
                    Some(limit),
                )
                .await;
            let refused = match answer {
                Ok(CallResult::Success(Frame(Ok(Ok(granted))))) => Ok(granted),
                Ok(CallResult::Success(Frame(Ok(Err(reason))))) => Err(reason),
                Ok(CallResult::Success(Frame(Err(reason)))) => Err(unreachable(reason)),
                Ok(CallResult::Timeout) => Err(unreachable(format!(
                    "no answer within {} ms",
                    limit.as_millis()
                ))),
                Ok(CallResult::SenderError) => {
                    Err(unreachable("the orchestrator's connection closed".into()))
                }
                Err(e) => Err(unreachable(e.to_string())),
            };
            let granted = match refused {
                Ok(granted) => granted,
                Err(reason) => return Err(not_admitted(&self.inner, &request, reason)),
            };
            let mut give_back = GiveBack {
                gate,
                lease: granted.lease,
                end: CallEnd::Failed,
            };
            let result = self.inner.complete(request).await;
            give_back.end = CallEnd::of(&result, estimate);
            drop(give_back);
            result.map(|mut completion| {
                completion.permit_wait_ms += granted.waited_ms;
                completion
            })
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use fanfare::provider::{AdmissionConfig, SimProfile, SimProvider};

    fn gate(max: usize) -> Arc<Gate> {
        let sim: Arc<dyn Provider> = Arc::new(SimProvider::with_profile(SimProfile::instant()));
        Arc::new(Admission::new(
            sim,
            AdmissionConfig {
                max_concurrency: max,
                adaptive: false,
                ..AdmissionConfig::default()
            },
        ))
    }

    #[tokio::test]
    async fn a_lost_nodes_leases_return_to_the_gate_and_a_429_on_a_lease_cuts_the_window() {
        let g = gate(2);
        let leases = Leases::default();
        for node in ["w1", "w1"] {
            let lease = g.lease(None, 10, None).await.unwrap();
            leases.insert(node.to_owned(), lease);
        }
        assert_eq!((g.metrics().in_flight, leases.held_by("w1")), (2, 2));
        assert_eq!(leases.drop_node("w1"), 2);
        assert_eq!((g.metrics().in_flight, leases.held()), (0, 0));

        // A lease given back with a 429 teaches the one gate, as a local call would.
        let adaptive = {
            let sim: Arc<dyn Provider> = Arc::new(SimProvider::with_profile(SimProfile::instant()));
            Arc::new(Admission::new(sim, AdmissionConfig::default()))
        };
        let id = leases.insert("w2".into(), adaptive.lease(None, 10, None).await.unwrap());
        leases.release(id, CallEnd::RateLimited { hold_ms: None });
        let m = adaptive.metrics();
        assert_eq!((m.rate_limited, m.in_flight, leases.held()), (1, 0, 0));
    }
}
