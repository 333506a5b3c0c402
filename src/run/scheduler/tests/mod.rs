//! Table-driven tests of the scheduler: every policy, dependency and budget case.

use super::*;
use crate::agent::{AgentError, AgentOutput};
use crate::provider::Usage;
use crate::run::outcome::{BranchError, DeadlineKind, RefusalReason};

fn ok(text: &str) -> BranchOutcome {
    BranchOutcome::Ok(AgentOutput::text(text))
}

fn ok_using(tokens: u64) -> BranchOutcome {
    BranchOutcome::Ok(AgentOutput {
        usage: Usage {
            input_tokens: tokens,
            ..Usage::default()
        },
        ..AgentOutput::text("x")
    })
}

fn failed() -> BranchOutcome {
    BranchOutcome::Failed {
        error: BranchError::Agent(AgentError::Rejected {
            reason: "no".into(),
        }),
    }
}

fn steps(deps: &[&[usize]]) -> Vec<Step> {
    deps.iter()
        .enumerate()
        .map(|(i, d)| Step::agent(format!("s{i}")).after(d.iter().copied()))
        .collect()
}

fn fan_out(n: usize) -> Vec<Step> {
    steps(&vec![&[][..]; n])
}

fn dispatched(cmds: &[Command]) -> Vec<usize> {
    cmds.iter()
        .filter_map(|c| match c {
            Command::Dispatch { index, .. } => Some(*index),
            _ => None,
        })
        .collect()
}

/// The steps `cmds` say ended, each with its recorded outcome's label.
fn finished(s: &Scheduler<'_>, cmds: &[Command]) -> Vec<(usize, &'static str)> {
    cmds.iter()
        .filter_map(|c| match c {
            Command::Finished {
                index, item: None, ..
            } => Some((*index, recorded(s, *index, None).label())),
            _ => None,
        })
        .collect()
}

/// How step `index` (its item `item`) ended, as the scheduler recorded it.
fn recorded<'s>(s: &'s Scheduler<'_>, index: usize, item: Option<usize>) -> &'s BranchOutcome {
    s.outcome(index, item)
        .expect("a step the scheduler said ended has a recorded outcome")
}

fn is_done(cmds: &[Command]) -> bool {
    cmds.last() == Some(&Command::Done)
}

const T: Duration = Duration::ZERO;

/// Each policy against a sequence of endings of a 3-way fan-out: which ending
/// ends the run, and the verdict.
#[test]
fn policies_decide_when_a_fan_out_ends_and_how() {
    let quorum = |q| Policy::TolerantPartial { quorum: q };
    type Case = (Policy, &'static [bool], usize, Option<&'static str>);
    let table: &[Case] = &[
        // policy, endings (true = ok) in order, endings until Done, failure
        (Policy::FailFast, &[true, true, true], 3, None),
        (Policy::FailFast, &[true, false], 2, Some("branch 1 (s1)")),
        (Policy::FailFast, &[false], 1, Some("branch 0 (s0)")),
        (quorum(1), &[false, false, true], 3, None),
        (quorum(2), &[true, false, true], 3, None),
        (
            quorum(2),
            &[false, false],
            2,
            Some("quorum 2 unreachable: 2 of 3"),
        ),
        (
            quorum(3),
            &[true, false],
            2,
            Some("quorum 3 unreachable: 1 of 3"),
        ),
        (
            quorum(1),
            &[false, false, false],
            3,
            Some("quorum 1 unreachable"),
        ),
    ];
    for (policy, endings, until_done, failure) in table {
        let steps = fan_out(3);
        let mut s = Scheduler::new(&steps, *policy, None, false);
        assert_eq!(dispatched(&s.start(T)), [0, 1, 2], "{policy}");
        let mut seen = 0;
        let mut done = false;
        for (k, &good) in endings.iter().enumerate() {
            let out = s.ended(k, None, if good { ok("a") } else { failed() }, 0, T);
            seen += 1;
            if is_done(&out) {
                done = true;
                // Every step not ended yet is cancelled in the same breath.
                let cancelled = finished(&s, &out)
                    .iter()
                    .filter(|f| f.1 == "cancelled")
                    .count();
                assert_eq!(cancelled, 3 - seen, "{policy} {endings:?}");
                break;
            }
        }
        assert!(done, "{policy} {endings:?} never ended");
        assert_eq!(seen, *until_done, "{policy} {endings:?}");
        let (records, f) = s.into_verdict();
        assert_eq!(records.len(), 3);
        // A fail-fast failure carries the failed branch's outcome, and its record
        // keeps it too.
        if let Some(RunFailure::Branch { index, outcome, .. }) = &f {
            assert_eq!(**outcome, failed(), "{policy} {endings:?}");
            assert_eq!(
                records[*index as usize].outcome,
                failed(),
                "{policy} {endings:?}"
            );
        }
        match (failure, f) {
            (None, None) => {}
            (Some(want), Some(got)) => {
                assert!(got.to_string().starts_with(want), "{policy}: {got}")
            }
            (want, got) => panic!("{policy} {endings:?}: want {want:?}, got {got:?}"),
        }
    }
}

#[test]
fn fail_fast_cancels_siblings_naming_the_failed_branch() {
    let steps = fan_out(3);
    let mut s = Scheduler::new(&steps, Policy::FailFast, None, false);
    s.start(T);
    let out = s.ended(1, None, failed(), 0, T);
    let reasons: Vec<_> = out
        .iter()
        .filter_map(|c| match c {
            Command::Finished { index, item, .. } => match recorded(&s, *index, *item) {
                BranchOutcome::Cancelled { reason } => Some(reason.clone()),
                _ => None,
            },
            _ => None,
        })
        .collect();
    assert_eq!(
        reasons,
        vec![
            CancelReason::SiblingFailed {
                index: 1,
                agent: "s1".into()
            };
            2
        ]
    );
    assert!(
        s.ended(0, None, ok("late"), 0, T).is_empty(),
        "nothing after Done"
    );
}

#[test]
fn a_step_starts_the_moment_its_own_dependencies_are_done() {
    // 0 → 1 (a chain), 2 → 3 (another chain), 4 joins 1 and 3.
    let steps = steps(&[&[], &[0], &[], &[2], &[1, 3]]);
    let mut s = Scheduler::new(&steps, Policy::FailFast, None, false);
    assert_eq!(dispatched(&s.start(T)), [0, 2]);
    assert_eq!(
        dispatched(&s.ended(2, None, ok("c"), 0, T)),
        [3],
        "no rounds"
    );
    assert_eq!(
        dispatched(&s.ended(3, None, ok("d"), 0, T)),
        Vec::<usize>::new()
    );
    assert_eq!(dispatched(&s.ended(0, None, ok("a"), 0, T)), [1]);
    let out = s.ended(1, None, ok("b"), 0, T);
    assert_eq!(
        out[1],
        Command::Dispatch {
            index: 4,
            item: None,
            upstream: vec![
                UpstreamOutput {
                    agent: "s1".into(),
                    text: "b".into(),
                    items: Vec::new(),
                },
                UpstreamOutput {
                    agent: "s3".into(),
                    text: "d".into(),
                    items: Vec::new(),
                }
            ]
            .into()
        },
        "the join gets both outputs, in dependency order"
    );
    assert!(is_done(&s.ended(4, None, ok("e"), 0, T)));
}

#[test]
fn a_failure_cancels_its_dependents_only_and_independent_chains_go_on() {
    let steps = steps(&[&[], &[0], &[1], &[], &[3]]);
    let mut s = Scheduler::new(&steps, Policy::TolerantPartial { quorum: 2 }, None, false);
    assert_eq!(dispatched(&s.start(T)), [0, 3]);
    let out = s.ended(0, None, failed(), 0, T);
    assert_eq!(
        finished(&s, &out),
        [(0, "failed"), (1, "cancelled"), (2, "cancelled")]
    );
    assert!(!is_done(&out));
    assert_eq!(dispatched(&s.ended(3, None, ok("d"), 0, T)), [4]);
    assert!(is_done(&s.ended(4, None, ok("e"), 0, T)));
    let (records, failure) = s.into_verdict();
    assert_eq!(failure, None);
    assert_eq!(
        records[2].outcome,
        BranchOutcome::Cancelled {
            reason: CancelReason::UpstreamFailed { agent: "s0".into() }
        }
    );
    assert_eq!(records[2].started, None, "never dispatched");
}

#[test]
fn budgets_refuse_what_they_cannot_cover_and_settle_what_was_used() {
    let prices = PriceTable::default();
    let plan = |max_tokens| BudgetPlan {
        budget: Budget {
            max_tokens: Some(max_tokens),
            ..Budget::default()
        },
        estimate: Box::new(|_, _, _| Estimate {
            tokens: 100,
            model: None,
            cost_usd: None,
        }),
        prices: &prices,
    };
    // 250 tokens cover two estimates of 100, not three.
    let steps = fan_out(3);
    let mut s = Scheduler::new(
        &steps,
        Policy::TolerantPartial { quorum: 1 },
        Some(plan(250)),
        false,
    );
    let out = s.start(T);
    assert_eq!(dispatched(&out), [0, 1]);
    assert_eq!(finished(&s, &out), [(2, "refused")]);
    assert!(matches!(
        s.records[2].outcome,
        Some(BranchOutcome::Refused {
            reason: RefusalReason::TokenBudget {
                cap: 250,
                committed: 200,
                needed: 100
            }
        })
    ));
    // A chain: the dependent reserves after its upstream settles what it used.
    let steps = self::steps(&[&[], &[0]]);
    let mut s = Scheduler::new(&steps, Policy::FailFast, Some(plan(250)), false);
    assert_eq!(dispatched(&s.start(T)), [0]);
    assert_eq!(
        dispatched(&s.ended(0, None, ok_using(100), 0, T)),
        [1],
        "100 used + 100 reserved ≤ 250"
    );
    let mut s = Scheduler::new(&steps, Policy::FailFast, Some(plan(250)), false);
    s.start(T);
    let out = s.ended(0, None, ok_using(200), 0, T);
    assert_eq!(finished(&s, &out), [(0, "ok"), (1, "refused")]);
    assert!(is_done(&out), "fail-fast treats a refusal as a failure");
}

#[test]
fn a_soft_deadline_merges_once_the_quorum_is_met_and_marks_stragglers_late() {
    let steps = fan_out(3);
    let policy = Policy::TolerantPartial { quorum: 1 };
    let mut s = Scheduler::new(&steps, policy, None, true);
    s.start(T);
    assert!(s.soft_deadline_armed());
    // Passed before the quorum: nothing yet, and the timer is not re-armed.
    assert!(s.soft_deadline_passed(T).is_empty());
    assert!(!s.soft_deadline_armed());
    let out = s.ended(0, None, ok("a"), 0, T);
    let Some(Command::MergeNow(snapshot)) = out.last() else {
        panic!("{out:?}")
    };
    assert_eq!(snapshot.iter().filter(|(_, o)| o.is_none()).count(), 2);
    let out = s.ended(1, None, ok("b"), 0, T);
    assert!(matches!(out[0], Command::Finished { late: true, .. }));
    assert!(is_done(&s.ended(2, None, failed(), 0, T)));
    // Fail-fast has no soft deadline.
    let s = Scheduler::new(&steps, Policy::FailFast, None, true);
    assert!(!s.soft_deadline_armed());
}

#[test]
fn an_empty_run_is_done_at_once_and_unended_steps_are_caller_gone() {
    let mut s = Scheduler::new(&[], Policy::FailFast, None, false);
    assert_eq!(s.start(T), [Command::Done]);
    let steps = fan_out(2);
    let mut s = Scheduler::new(&steps, Policy::FailFast, None, false);
    s.start(T);
    let (records, _) = s.into_verdict();
    assert!(records.iter().all(|r| r.outcome
        == BranchOutcome::Cancelled {
            reason: CancelReason::CallerGone
        }));
}

#[test]
fn a_step_with_retries_is_dispatched_again_until_they_run_out() {
    let mut steps = fan_out(1);
    steps[0].retries = 2;
    let mut s = Scheduler::new(&steps, Policy::FailFast, None, false);
    s.start(T);
    assert_eq!(dispatched(&s.ended(0, None, failed(), 0, T)), [0]);
    assert_eq!(dispatched(&s.ended(0, None, failed(), 0, T)), [0]);
    let out = s.ended(0, None, failed(), 0, T);
    assert_eq!(finished(&s, &out), [(0, "failed")]);
    let (records, _) = s.into_verdict();
    assert_eq!(records[0].retries, 2);
    // A refusal or a cancellation is not retried.
    let mut steps = fan_out(1);
    steps[0].retries = 2;
    let prices = PriceTable::default();
    let plan = BudgetPlan {
        budget: Budget {
            max_tokens: Some(1),
            ..Budget::default()
        },
        estimate: Box::new(|_, _, _| Estimate {
            tokens: 100,
            model: None,
            cost_usd: None,
        }),
        prices: &prices,
    };
    let mut s = Scheduler::new(&steps, Policy::FailFast, Some(plan), false);
    let out = s.start(T);
    assert_eq!(finished(&s, &out), [(0, "refused")]);
}

mod maps;
