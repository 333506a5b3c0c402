//! Map steps: items within their concurrency, their policy, and the run's deadline.

use super::*;

fn mapped(concurrency: usize, policy: Policy) -> Vec<Step> {
    use crate::run::step::{Map, MapSource};
    vec![
        Step::agent("list"),
        Step::agent("each").after([0]).map(Map {
            over: MapSource::Step(0),
            concurrency,
            policy,
        }),
        Step::agent("digest").after([1]),
    ]
}

fn items_dispatched(cmds: &[Command]) -> Vec<usize> {
    cmds.iter()
        .filter_map(|c| match c {
            Command::Dispatch { item: Some(k), .. } => Some(*k),
            _ => None,
        })
        .collect()
}

#[test]
fn regression_map_items_share_one_upstream_list_instead_of_a_copy_each() {
    // Each item used to get its own copy of every upstream output — the whole list
    // it maps over included — so a map over n items copied n² items' text.
    let steps = mapped(3, Policy::FailFast);
    let mut s = Scheduler::new(&steps, Policy::FailFast, None, false);
    s.start(T);
    s.ended(0, None, ok("a\nb\nc"), 0, T);
    let out = s.expanded(1, 3, T);
    let lists: Vec<&Arc<[UpstreamOutput]>> = out
        .iter()
        .filter_map(|c| match c {
            Command::Dispatch {
                item: Some(_),
                upstream,
                ..
            } => Some(upstream),
            _ => None,
        })
        .collect();
    assert_eq!(lists.len(), 3);
    assert!(lists.iter().all(|l| Arc::ptr_eq(l, lists[0])));
    assert_eq!(lists[0][0].text, "a\nb\nc");
}

#[test]
fn a_map_step_runs_its_items_within_its_concurrency_then_its_dependents() {
    let steps = mapped(2, Policy::FailFast);
    let mut s = Scheduler::new(&steps, Policy::FailFast, None, false);
    s.start(T);
    let out = s.ended(0, None, ok("a\nb\nc\nd\ne"), 0, T);
    assert!(matches!(
        out[..],
        [Command::Finished { .. }, Command::Expand { index: 1, .. }]
    ));
    assert_eq!(items_dispatched(&s.expanded(1, 5, T)), [0, 1]);
    assert_eq!(items_dispatched(&s.ended(1, Some(1), ok("B"), 0, T)), [2]);
    assert_eq!(items_dispatched(&s.ended(1, Some(0), ok("A"), 0, T)), [3]);
    assert_eq!(items_dispatched(&s.ended(1, Some(3), ok("D"), 0, T)), [4]);
    s.ended(1, Some(2), ok("C"), 0, T);
    let out = s.ended(1, Some(4), ok("E"), 0, T);
    // The step ends with every item's output, in item order, and its dependent goes.
    let Some(Command::Dispatch {
        index: 2, upstream, ..
    }) = out.last()
    else {
        panic!("{out:?}")
    };
    assert_eq!(upstream[0].items, ["A", "B", "C", "D", "E"]);
    assert!(upstream[0]
        .text
        .starts_with("### each 1\nA\n\n### each 2\nB"));
    assert!(is_done(&s.ended(2, None, ok("digest"), 0, T)));
    let (records, failure) = s.into_verdict();
    assert_eq!((records[1].items.len(), failure), (5, None));
}

#[test]
fn regression_nothing_is_dispatched_after_the_runs_deadline() {
    // A map of 200,000 items past its deadline dispatched every one, each timing out
    // at once, until the run was given up with no report.
    let second = Duration::from_secs(1);
    let steps = mapped(2, Policy::TolerantPartial { quorum: 1 });
    let mut s = Scheduler::new(&steps, Policy::TolerantPartial { quorum: 1 }, None, false)
        .with_deadline(second);
    s.start(T);
    s.ended(0, None, ok("a\nb\nc\nd\ne"), 0, T);
    assert_eq!(items_dispatched(&s.expanded(1, 5, T)), [0, 1]);
    // Item 0 ends before the deadline: item 2 goes. Item 1 ends at it: nothing more
    // goes; the other items end timed out by the run's deadline, never started.
    assert_eq!(items_dispatched(&s.ended(1, Some(0), ok("A"), 0, T)), [2]);
    let out = s.ended(1, Some(1), ok("B"), 0, second);
    assert!(items_dispatched(&out).is_empty(), "{out:?}");
    let timed_out = BranchOutcome::TimedOut {
        deadline: DeadlineKind::Run,
        last_error: None,
        partial: None,
    };
    for k in [3, 4] {
        assert_eq!(recorded(&s, 1, Some(k)), &timed_out);
        assert!(!s.dispatched(1, Some(k)));
    }
    assert!(s.dispatched(1, Some(2)));
    // The running item ends; the map meets its quorum, and its dependent, past the
    // deadline, ends timed out without a dispatch.
    let out = s.ended(1, Some(2), ok("C"), 0, second);
    assert!(dispatched(&out).is_empty(), "{out:?}");
    assert!(is_done(&out), "{out:?}");
    assert_eq!(recorded(&s, 2, None), &timed_out);
    let (records, _) = s.into_verdict();
    assert_eq!(records[1].items.len(), 5);
}

#[test]
fn a_map_step_under_fail_fast_stops_its_other_items_at_the_first_failure() {
    let steps = mapped(2, Policy::FailFast);
    let mut s = Scheduler::new(&steps, Policy::TolerantPartial { quorum: 1 }, None, false);
    s.start(T);
    s.ended(0, None, ok("x"), 0, T);
    s.expanded(1, 4, T);
    let out = s.ended(1, Some(0), failed(), 0, T);
    assert!(
        out.contains(&Command::Abort { index: 1, item: 1 }),
        "{out:?}"
    );
    let items: Vec<_> = out
        .iter()
        .filter_map(|c| match c {
            Command::Finished {
                index,
                item: Some(k),
                ..
            } => Some((*k, recorded(&s, *index, Some(*k)).label())),
            _ => None,
        })
        .collect();
    assert_eq!(
        items,
        [
            (0, "failed"),
            (1, "cancelled"),
            (2, "cancelled"),
            (3, "cancelled")
        ]
    );
    assert_eq!(
        finished(&s, &out),
        [(1, "failed"), (2, "cancelled")],
        "and its dependent"
    );
    assert!(is_done(&out), "list ok meets quorum 1");
}

#[test]
fn a_partial_map_succeeds_with_its_quorum_and_an_empty_map_at_once() {
    let steps = mapped(3, Policy::TolerantPartial { quorum: 2 });
    let mut s = Scheduler::new(&steps, Policy::FailFast, None, false);
    s.start(T);
    s.ended(0, None, ok("x"), 0, T);
    s.expanded(1, 3, T);
    s.ended(1, Some(0), failed(), 0, T);
    s.ended(1, Some(1), ok("b"), 0, T);
    let out = s.ended(1, Some(2), ok("c"), 0, T);
    assert_eq!(finished(&s, &out), [(1, "ok")]);
    let Some(Command::Dispatch { upstream, .. }) = out.last() else {
        panic!()
    };
    assert_eq!(upstream[0].items, ["b", "c"], "failed items bring nothing");
    // No items: done at once, with an empty output.
    let mut s = Scheduler::new(&steps, Policy::FailFast, None, false);
    s.start(T);
    s.ended(0, None, ok(""), 0, T);
    let out = s.expanded(1, 0, T);
    assert_eq!(finished(&s, &out), [(1, "ok")]);
    assert_eq!(dispatched(&out), [2]);
}
