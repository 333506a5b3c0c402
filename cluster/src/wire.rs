//! The typed run protocol that crosses the wire, and the process groups where each
//! side finds the other's actors. Payloads are JSON inside ractor_cluster's frames.
//!
//! Three actors speak across nodes:
//! - a worker's **host**, one per specialist (group [`agent_group`]): runs a branch
//!   ([`HostMsg::Run`], an RPC whose timeout is the branch deadline) and cancels one;
//! - the orchestrator's **gate** (group [`GATE_GROUP`]): leases an admission permit
//!   to a worker's model call and takes it back with how the call ended;
//! - a worker's **control** actor (group [`WORKER_GROUP`]): answers the heartbeat with
//!   the worker's status.

use fanfare::agent::BranchId;
use fanfare::provider::{CallEnd, NotAdmitted};
use fanfare::run::DeadlineKind;
use fanfare::{BranchOutcome, Task};
use ractor::RpcReplyPort;
use ractor_cluster::{BytesConvertable, RactorClusterMessage};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

/// The version of this protocol; a worker speaking another is not given work.
pub const PROTOCOL: u32 = 1;

/// The group of the orchestrator's gate.
pub const GATE_GROUP: &str = "fanfare.gate";

/// The group of the workers' control actors.
pub const WORKER_GROUP: &str = "fanfare.workers";

/// The group of the hosts of specialist `agent`.
pub fn agent_group(agent: &str) -> String {
    format!("fanfare.agent.{agent}")
}

/// One payload. ractor's `BytesConvertable` cannot fail, so a payload that does not
/// decode is kept as its error, for the receiver to refuse with a reason rather than
/// panic on a peer's bad bytes.
#[derive(Debug)]
pub struct Frame<T>(pub Result<T, String>);

impl<T> Frame<T> {
    /// A frame carrying `value`.
    pub fn new(value: T) -> Self {
        Frame(Ok(value))
    }
}

impl<T: Serialize + DeserializeOwned> BytesConvertable for Frame<T> {
    fn into_bytes(self) -> Vec<u8> {
        // An undecodable frame is forwarded as nothing, which does not decode either.
        self.0
            .ok()
            .and_then(|value| serde_json::to_vec(&value).ok())
            .unwrap_or_default()
    }

    fn from_bytes(bytes: Vec<u8>) -> Self {
        Frame(serde_json::from_slice(&bytes).map_err(|e| {
            format!(
                "undecodable {} frame ({} bytes): {e}",
                std::any::type_name::<T>(),
                bytes.len()
            )
        }))
    }
}

/// A branch for a worker's specialist.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Job {
    /// The task, as the specialist receives it (boxed: the message's other
    /// variant is small; the wire form is the task's own).
    pub task: Box<Task>,
    /// Time left until the branch deadline, in milliseconds, when it was sent.
    pub time_left_ms: u64,
    /// Which deadline that is, for a timed-out outcome.
    pub deadline_kind: DeadlineKind,
    /// Retries on the worker when the specialist crashes under the task.
    pub crash_retries: u32,
}

/// What a worker's specialist host does.
#[derive(RactorClusterMessage)]
pub enum HostMsg {
    /// Run a branch and answer how it ended.
    #[rpc]
    Run(Frame<Job>, RpcReplyPort<Frame<BranchOutcome>>),
    /// Stop a branch (the orchestrator no longer waits for it).
    Cancel(Frame<BranchId>),
}

/// A worker's request for one admission permit.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct LeaseAsk {
    /// The worker's node name (its leases come back if it is lost).
    pub node: String,
    /// The model the call goes to (`None`: the orchestrator provider's default).
    pub model: Option<String>,
    /// Tokens the call is expected to use.
    pub estimate: u64,
    /// How long it may wait for admission, in milliseconds (`None`: no deadline).
    pub wait_ms: Option<u64>,
}

/// A granted lease, or why not.
pub type LeaseAnswer = Result<Granted, NotAdmitted>;

/// A granted lease.
#[derive(Clone, Copy, Debug, Serialize, Deserialize)]
pub struct Granted {
    /// Its id, to give back.
    pub lease: u64,
    /// How long it waited at the gate, in milliseconds.
    pub waited_ms: u64,
}

/// A lease given back, with how its call ended.
#[derive(Clone, Copy, Debug, Serialize, Deserialize)]
pub struct Released {
    /// Its id.
    pub lease: u64,
    /// How the call ended.
    pub end: CallEnd,
}

/// What the orchestrator's gate does.
#[derive(RactorClusterMessage)]
pub enum GateMsg {
    /// Wait for a permit and lease it.
    #[rpc]
    Acquire(Frame<LeaseAsk>, RpcReplyPort<Frame<LeaseAnswer>>),
    /// Give a lease back.
    Release(Frame<Released>),
}

/// A worker's answer to the heartbeat.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct WorkerStatus {
    /// Its node name.
    pub node: String,
    /// The protocol it speaks.
    pub protocol: u32,
    /// The specialists it hosts.
    pub specialists: Vec<String>,
    /// Branches it is running now.
    pub running: usize,
    /// Branches it takes at once before the orchestrator prefers another node.
    pub capacity: usize,
    /// Each spec-defined specialist's fingerprint (`AgentSpec::fingerprint`): the
    /// orchestrator sends a worker only the specialists whose fingerprint is its
    /// own (a worker whose `legal` asked for 9,999 tokens where the orchestrator's
    /// budget reserved 600 was used without a word).
    #[serde(default)]
    pub fingerprints: std::collections::BTreeMap<String, String>,
    /// Its provider is simulated: an orchestrator on a real one sends it nothing.
    #[serde(default)]
    pub simulated: bool,
}

/// What a worker's control actor does.
#[derive(RactorClusterMessage)]
pub enum WorkerMsg {
    /// The heartbeat: answer the status.
    #[rpc]
    Status(RpcReplyPort<Frame<WorkerStatus>>),
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_frame_round_trips_and_bad_bytes_become_an_error_not_a_panic() {
        let ask = LeaseAsk {
            node: "w1".into(),
            model: Some("m".into()),
            estimate: 120,
            wait_ms: Some(5),
        };
        let back = Frame::<LeaseAsk>::from_bytes(Frame::new(ask).into_bytes());
        let back = back.0.unwrap();
        assert_eq!((back.node.as_str(), back.estimate), ("w1", 120));
        let bad = Frame::<LeaseAsk>::from_bytes(b"{\"node\": 3".to_vec());
        let error = bad.0.unwrap_err();
        assert!(error.contains("LeaseAsk"), "{error}");
        let forwarded =
            Frame::<LeaseAsk>::from_bytes(Frame::<LeaseAsk>(Err("x".into())).into_bytes());
        assert!(forwarded.0.is_err());
    }
}
