use super::*;
use crate::agent::AgentError;
use crate::provider::{ProviderError, ProviderErrorKind};
use crate::supervision::DownReason;

/// Every kind of failure, nested as deep as they nest.
fn failures() -> Vec<BranchOutcome> {
    let provider = ProviderError {
        provider: "anthropic".into(),
        model: "m".into(),
        agent: "legal".into(),
        attempts: 3,
        kind: ProviderErrorKind::Status {
            status: 500,
            retry_after_ms: None,
            excerpt: "boom".into(),
        },
        earlier: vec![ProviderErrorKind::RateLimited {
            retry_after_ms: Some(10),
            excerpt: String::new(),
        }],
        gave_up: None,
    };
    let failed = |error| BranchOutcome::Failed { error };
    vec![
        failed(BranchError::Agent(AgentError::Provider(Box::new(
            provider.clone(),
        )))),
        failed(BranchError::Agent(AgentError::Rejected {
            reason: "no".into(),
        })),
        failed(BranchError::Agent(AgentError::Panicked {
            message: "p".into(),
        })),
        failed(BranchError::SpecialistDied { agent: "a".into() }),
        failed(BranchError::InputTooLarge {
            step: "s".into(),
            bytes: 20,
            limit: 10,
        }),
        failed(BranchError::Items {
            ok: 1,
            of: 3,
            quorum: 2,
        }),
        failed(BranchError::Code(Box::new(CodeError::Tie("a or b".into())))),
        failed(BranchError::Code(Box::new(CodeError::BadOption {
            option: "o".into(),
            problem: "p".into(),
        }))),
        failed(BranchError::SpecialistUnavailable {
            agent: "a".into(),
            reason: Unavailable::Down(DownReason::RestartFailed { error: "e".into() }),
        }),
        failed(BranchError::SpecialistUnavailable {
            agent: "a".into(),
            reason: Unavailable::UnknownName,
        }),
        BranchOutcome::TimedOut {
            deadline: DeadlineKind::Branch,
            last_error: Some(Box::new(provider)),
            partial: None,
        },
        BranchOutcome::Cancelled {
            reason: CancelReason::UpstreamFailed { agent: "a".into() },
        },
    ]
}

#[test]
fn regression_a_failed_branch_serialises_without_duplicate_keys_and_reads_back() {
    // `--json` once wrote `"kind"` three times in one object (a branch error
    // wrapping an agent error wrapping a provider error), which no strict JSON
    // reader accepts — `run --repair` could not read its own report.
    for outcome in failures() {
        let text = serde_json::to_string(&outcome).unwrap();
        let back: BranchOutcome =
            serde_json::from_str(&text).unwrap_or_else(|e| panic!("{e}: {text}"));
        assert_eq!(back, outcome, "{text}");
    }
}
