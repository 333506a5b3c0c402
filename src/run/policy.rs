//! How a run treats a branch that does not succeed: [`Policy`], and its text form
//! (`fail-fast`, `partial`, `partial:K`).

use serde::{Deserialize, Serialize};

/// How the run treats a branch that does not succeed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Policy {
    /// The first branch that fails, times out or is unavailable ends the run; its
    /// siblings are cancelled and their model calls aborted (OTP one-for-all).
    FailFast,
    /// Keep collecting until every branch ends or the deadline passes; the run
    /// succeeds if at least `quorum` branches succeeded. It ends early, cancelling the
    /// rest, as soon as the quorum can no longer be met (OTP one-for-one).
    TolerantPartial {
        /// Successful branches needed (≥ 1).
        quorum: usize,
    },
}

impl std::fmt::Display for Policy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Policy::FailFast => f.write_str("fail-fast"),
            Policy::TolerantPartial { quorum } => write!(f, "partial:{quorum}"),
        }
    }
}

/// A policy that could not be parsed.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ParsePolicyError {
    /// Not `fail-fast`, `partial` or `partial:K`.
    #[error("unknown policy `{0}`: expected fail-fast, partial or partial:K")]
    Unknown(String),
    /// `partial:K` with a K that is not a whole number ≥ 1.
    #[error("bad quorum `{quorum}` in `{policy}`: expected a whole number ≥ 1")]
    BadQuorum {
        /// The whole text.
        policy: String,
        /// The part after `partial:`.
        quorum: String,
    },
}

impl std::str::FromStr for Policy {
    type Err = ParsePolicyError;

    /// Parses `fail-fast`, `partial` (quorum 1) or `partial:K`.
    fn from_str(s: &str) -> Result<Self, ParsePolicyError> {
        match s {
            "fail-fast" | "failfast" => Ok(Policy::FailFast),
            "partial" => Ok(Policy::TolerantPartial { quorum: 1 }),
            other => match other.strip_prefix("partial:") {
                Some(k) => match k.parse::<usize>() {
                    Ok(quorum) if quorum >= 1 => Ok(Policy::TolerantPartial { quorum }),
                    _ => Err(ParsePolicyError::BadQuorum {
                        policy: s.to_owned(),
                        quorum: k.to_owned(),
                    }),
                },
                None => Err(ParsePolicyError::Unknown(s.to_owned())),
            },
        }
    }
}
