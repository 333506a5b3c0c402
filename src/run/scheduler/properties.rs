//! Properties of the scheduler over random step graphs, outcomes, policies, budgets
//! and ending orders (proptest): every step ends exactly once, dependencies are
//! respected, the verdict matches the policy, and a budget is never exceeded by more
//! than what the branches used beyond their estimates.

use proptest::prelude::*;

use super::*;
use crate::agent::{AgentError, AgentOutput};
use crate::provider::Usage;
use crate::run::outcome::BranchError;

/// One random run: its steps, what each would return, the policy and the budget.
#[derive(Debug, Clone)]
struct Case {
    deps: Vec<Vec<usize>>,
    /// Per step: succeeds, tokens estimated, tokens used.
    plan: Vec<(bool, u64, u64)>,
    policy: Policy,
    token_cap: Option<u64>,
    /// Which running step ends next (an index into the running set, modulo).
    order: Vec<usize>,
}

fn case() -> impl Strategy<Value = Case> {
    (1usize..12).prop_flat_map(|n| {
        (
            proptest::collection::vec(
                proptest::collection::vec(any::<prop::sample::Index>(), 0..3),
                n,
            ),
            proptest::collection::vec((any::<bool>(), 1u64..200, 0u64..250), n),
            (any::<bool>(), 1usize..=n),
            proptest::option::of(50u64..2_000),
            proptest::collection::vec(any::<usize>(), 64),
        )
            .prop_map(
                move |(deps, plan, (fail_fast, quorum), token_cap, order)| Case {
                    deps: deps
                        .into_iter()
                        .enumerate()
                        .map(|(i, picks)| {
                            let mut d: Vec<usize> =
                                picks.iter().filter(|_| i > 0).map(|p| p.index(i)).collect();
                            d.sort_unstable();
                            d.dedup();
                            d
                        })
                        .collect(),
                    plan,
                    policy: if fail_fast {
                        Policy::FailFast
                    } else {
                        Policy::TolerantPartial { quorum }
                    },
                    token_cap,
                    order,
                },
            )
    })
}

fn outcome(ok: bool, used: u64) -> BranchOutcome {
    if ok {
        BranchOutcome::Ok(AgentOutput {
            usage: Usage {
                input_tokens: used,
                ..Usage::default()
            },
            ..AgentOutput::text("x")
        })
    } else {
        BranchOutcome::Failed {
            error: BranchError::Agent(AgentError::Rejected {
                reason: "no".into(),
            }),
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2_000))]

    #[test]
    fn every_step_ends_once_dependencies_hold_and_the_verdict_follows_the_policy(c in case()) {
        let n = c.deps.len();
        let steps: Vec<Step> = c
            .deps
            .iter()
            .enumerate()
            .map(|(i, d)| Step::agent(format!("s{i}")).after(d.iter().copied()))
            .collect();
        let prices = PriceTable::default();
        let plan = c.plan.clone();
        let budget = c.token_cap.map(|cap| BudgetPlan {
            budget: Budget { max_tokens: Some(cap), ..Budget::default() },
            estimate: Box::new(move |i, _, _| Estimate { tokens: plan[i].1, model: None, cost_usd: None }),
            prices: &prices,
        });
        let mut s = Scheduler::new(&steps, c.policy, budget, false);
        let mut finished: Vec<Option<BranchOutcome>> = vec![None; n];
        let mut dispatched = vec![false; n];
        let mut running: Vec<usize> = Vec::new();
        let mut done = false;
        let mut clock = 0u64;
        let mut pending = s.start(Duration::ZERO);
        let mut turn = 0;
        loop {
            for command in pending.drain(..) {
                prop_assert!(!done, "a command after Done: {command:?}");
                match command {
                    Command::Dispatch { index, item: None, .. } => {
                        prop_assert!(!dispatched[index], "step {index} dispatched twice");
                        for &d in &c.deps[index] {
                            prop_assert!(
                                finished[d].as_ref().is_some_and(BranchOutcome::is_ok),
                                "step {index} dispatched before its dependency {d} succeeded"
                            );
                        }
                        dispatched[index] = true;
                        running.push(index);
                    }
                    Command::Finished { index, item: None, .. } => {
                        let outcome = s.outcome(index, None).cloned();
                        prop_assert!(outcome.is_some(), "step {index} ended with no outcome");
                        let outcome = outcome.unwrap();
                        prop_assert!(finished[index].is_none(), "step {index} ended twice");
                        if matches!(outcome, BranchOutcome::Refused { .. }) {
                            prop_assert!(!dispatched[index], "a refused step was sent");
                        }
                        running.retain(|&r| r != index);
                        finished[index] = Some(outcome);
                    }
                    Command::Done => done = true,
                    other => prop_assert!(false, "no map or soft deadline here: {other:?}"),
                }
            }
            if done {
                break;
            }
            prop_assert!(!running.is_empty(), "not done, but nothing runs");
            let pick = running[c.order[turn % c.order.len()] % running.len()];
            turn += 1;
            clock += 1;
            let (ok, _, used) = c.plan[pick];
            pending = s.ended(pick, None, outcome(ok, used), 0, Duration::from_millis(clock));
        }
        prop_assert!(finished.iter().all(Option::is_some), "a step never ended");
        let (records, failure) = s.into_verdict();
        prop_assert_eq!(records.len(), n);
        let oks = finished.iter().flatten().filter(|o| o.is_ok()).count();
        let met = match c.policy {
            Policy::FailFast => oks == n,
            Policy::TolerantPartial { quorum } => oks >= quorum,
        };
        prop_assert_eq!(failure.is_none(), met, "{:?} with {} of {} ok: {:?}", c.policy, oks, n, failure);
        if let Some(cap) = c.token_cap {
            // What the steps that ran to the end used, against the cap plus what they
            // used beyond their own estimates.
            let mut used = 0;
            let mut overshoot = 0;
            for (i, o) in finished.iter().enumerate() {
                if let Some(BranchOutcome::Ok(_)) = o {
                    let (_, estimate, spent) = c.plan[i];
                    used += spent;
                    overshoot += spent.saturating_sub(estimate);
                }
            }
            prop_assert!(used <= cap + overshoot, "used {used} > cap {cap} + overshoot {overshoot}");
        }
    }
}
