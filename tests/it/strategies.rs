//! Supervision strategies, restart types, backoff, circuits, crash retries, faults.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use fanfare::agent::faults::{Faults, Faulty, Trigger};
use fanfare::provider::{SimProfile, SimProvider};
use fanfare::run::DeadlineKind;
use fanfare::supervision::RestartIntensity;
use fanfare::supervision::{Backoff, RestartType, Strategy, SupervisionConfig, SupervisorEvent};
use fanfare::{AgentMsg, AgentOutput, BranchOutcome, Fanfare, Policy, RunRequest, Specialist};
use ractor::{Actor, ActorProcessingErr, ActorRef};
use tokio::sync::broadcast;

use crate::common::{eventually, TestAgent};

fn sim() -> Arc<SimProvider> {
    Arc::new(SimProvider::with_profile(SimProfile::fixed(
        Duration::from_millis(20),
    )))
}

fn restarted(events: &mut broadcast::Receiver<SupervisorEvent>) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    while let Ok(e) = events.try_recv() {
        if let SupervisorEvent::Restarted { agent, .. } = e {
            out.insert(agent);
        }
    }
    out
}

async fn crash_b_under(strategy: Strategy) -> BTreeSet<String> {
    let fanfare = Fanfare::builder(sim())
        .agent(TestAgent::new("a"))
        .agent(TestAgent::panicking_every("b", 2))
        .agent(TestAgent::new("c"))
        .supervision(SupervisionConfig {
            strategy,
            ..SupervisionConfig::default()
        })
        .start()
        .await
        .unwrap();
    let mut events = fanfare.supervision_events();
    let request =
        || RunRequest::fan_out("t", ["a", "b", "c"]).policy(Policy::TolerantPartial { quorum: 1 });
    assert_eq!(fanfare.run(request()).await.unwrap().totals.ok, 3);
    let second = fanfare.run(request()).await.unwrap();
    assert_eq!(second.branches[1].outcome.label(), "failed");
    tokio::time::sleep(Duration::from_millis(500)).await;
    let third = fanfare.run(request()).await.unwrap();
    assert_eq!(
        third.totals.ok, 3,
        "everything is routable again after the restarts"
    );
    let set = restarted(&mut events);
    fanfare.shutdown().await;
    set
}

fn set(names: &[&str]) -> BTreeSet<String> {
    names.iter().map(|s| s.to_string()).collect()
}

#[tokio::test(start_paused = true)]
async fn one_for_one_restarts_only_the_crashed_specialist() {
    assert_eq!(crash_b_under(Strategy::OneForOne).await, set(&["b"]));
}

#[tokio::test(start_paused = true)]
async fn one_for_all_restarts_every_specialist() {
    assert_eq!(
        crash_b_under(Strategy::OneForAll).await,
        set(&["a", "b", "c"])
    );
}

#[tokio::test(start_paused = true)]
async fn rest_for_one_restarts_the_crashed_one_and_those_started_after_it() {
    assert_eq!(crash_b_under(Strategy::RestForOne).await, set(&["b", "c"]));
}

#[tokio::test(start_paused = true)]
async fn a_temporary_specialist_is_not_restarted() {
    let fanfare = Fanfare::builder(sim())
        .specialist(
            Specialist::agent(TestAgent::panicking_every("once", 1))
                .restart(RestartType::Temporary),
        )
        .agent(TestAgent::new("steady"))
        .start()
        .await
        .unwrap();
    let request = || {
        RunRequest::fan_out("t", ["once", "steady"]).policy(Policy::TolerantPartial { quorum: 1 })
    };
    fanfare.run(request()).await.unwrap();
    tokio::time::sleep(Duration::from_millis(100)).await;
    let status = fanfare.status().await;
    assert_eq!(status[0].restarts, 0);
    assert!(status[0]
        .down
        .as_ref()
        .unwrap()
        .to_string()
        .contains("temporary specialist exited"));
    let r = fanfare.run(request()).await.unwrap();
    assert!(
        r.branches[0]
            .error
            .as_deref()
            .unwrap()
            .contains("unavailable"),
        "{:?}",
        r.branches[0].error
    );
    fanfare.shutdown().await;
}

/// Stops itself (a normal exit) when the task says "stop".
struct Quitter;

impl Actor for Quitter {
    type Msg = AgentMsg;
    type State = ();
    type Arguments = ();

    async fn pre_start(&self, _: ActorRef<AgentMsg>, _: ()) -> Result<(), ActorProcessingErr> {
        Ok(())
    }

    async fn handle(
        &self,
        me: ActorRef<AgentMsg>,
        msg: AgentMsg,
        _: &mut (),
    ) -> Result<(), ActorProcessingErr> {
        if let AgentMsg::Run { task, reply } = msg {
            let _ = reply.send(Ok(AgentOutput::text("bye")));
            if &*task.input == "stop" {
                me.stop(Some("asked to stop".into()));
            }
        }
        Ok(())
    }
}

#[tokio::test(start_paused = true)]
async fn transient_specialists_stay_stopped_after_a_normal_exit_and_permanent_ones_restart() {
    let fanfare = Fanfare::builder(sim())
        .specialist(
            Specialist::actor("transient", || (Quitter, ())).restart(RestartType::Transient),
        )
        .specialist(Specialist::actor("permanent", || (Quitter, ())))
        .start()
        .await
        .unwrap();
    let r = fanfare
        .run(RunRequest::fan_out("stop", ["transient", "permanent"]))
        .await
        .unwrap();
    assert_eq!(r.totals.ok, 2);
    tokio::time::sleep(Duration::from_millis(100)).await;
    let status = fanfare.status().await;
    assert!(
        !status[0].is_up()
            && status[0]
                .down
                .as_ref()
                .unwrap()
                .to_string()
                .contains("asked to stop")
    );
    assert!(status[1].is_up());
    assert_eq!(status[1].restarts, 1);
    fanfare.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn branches_wait_out_the_restart_backoff_instead_of_failing() {
    // A raw actor that panics in `handle` fails outright, so its restart is backed off
    // (an agent task's panic retires the specialist instead; see the next test).
    let calls = Arc::new(std::sync::atomic::AtomicU32::new(0));
    let fanfare = Fanfare::builder(sim())
        .specialist(Specialist::actor("flaky", move || {
            (Crasher(calls.clone()), ())
        }))
        .supervision(SupervisionConfig {
            backoff: Backoff {
                base: Duration::from_secs(2),
                cap: Duration::from_secs(2),
            },
            ..SupervisionConfig::default()
        })
        .start()
        .await
        .unwrap();
    let request =
        || RunRequest::fan_out("t", ["flaky"]).policy(Policy::TolerantPartial { quorum: 1 });
    fanfare.run(request()).await.unwrap();
    assert!(
        fanfare.run(request()).await.unwrap().branches[0]
            .outcome
            .label()
            == "failed"
    );
    // The restart is 2 s away; this run waits for it rather than failing.
    let r = fanfare.run(request()).await.unwrap();
    assert!(r.branches[0].outcome.is_ok(), "{:?}", r.branches[0].outcome);
    assert!(r.wall >= Duration::from_millis(1900), "{:?}", r.wall);
    fanfare.shutdown().await;
}

/// Panics inside `handle` on every 2nd task it is given (counting across restarts).
struct Crasher(Arc<std::sync::atomic::AtomicU32>);

impl Actor for Crasher {
    type Msg = AgentMsg;
    type State = ();
    type Arguments = ();

    async fn pre_start(&self, _: ActorRef<AgentMsg>, _: ()) -> Result<(), ActorProcessingErr> {
        Ok(())
    }

    async fn handle(
        &self,
        _: ActorRef<AgentMsg>,
        msg: AgentMsg,
        _: &mut (),
    ) -> Result<(), ActorProcessingErr> {
        if let AgentMsg::Run { reply, .. } = msg {
            let n = self.0.fetch_add(1, std::sync::atomic::Ordering::SeqCst) + 1;
            if n.is_multiple_of(2) {
                panic!("crasher fails on task {n}");
            }
            let _ = reply.send(Ok(AgentOutput::text("fine")));
        }
        Ok(())
    }
}

#[tokio::test(start_paused = true)]
async fn a_panicking_agent_task_retires_its_specialist_without_costing_its_siblings() {
    // Two tasks in flight on one specialist; one panics. Only that branch fails, and
    // the next run goes to the replacement at once (no backoff: nothing crash-looped).
    let fanfare = Fanfare::builder(sim())
        .agent(Faulty::new(
            TestAgent::new("twice"),
            Faults {
                panic: Some(Trigger::every(2)),
                ..Faults::default()
            },
        ))
        .supervision(SupervisionConfig {
            backoff: Backoff {
                base: Duration::from_secs(2),
                cap: Duration::from_secs(2),
            },
            ..SupervisionConfig::default()
        })
        .start()
        .await
        .unwrap();
    let live = fanfare.live_actors();
    let actors = live.get();
    let request = RunRequest::fan_out("t", ["twice", "twice", "twice"])
        .policy(Policy::TolerantPartial { quorum: 1 });
    let r = fanfare.run(request).await.unwrap();
    let labels: Vec<&str> = r.branches.iter().map(|b| b.outcome.label()).collect();
    assert_eq!(labels, ["ok", "failed", "ok"], "one panic costs one branch");
    tokio::time::sleep(Duration::from_millis(10)).await;
    assert_eq!(fanfare.status().await[0].restarts, 1);
    // The retired actor heard its siblings' tasks end (it hears no task's end while
    // it serves) and stopped by itself: the replacement took its place, no more.
    assert_eq!(live.get(), actors, "the retired actor drained and stopped");
    let r = fanfare
        .run(RunRequest::fan_out("t", ["twice"]))
        .await
        .unwrap();
    assert!(r.wall < Duration::from_millis(100), "{:?}", r.wall);
    fanfare.shutdown().await;
    assert_eq!(live.get(), 0, "the retired actor is gone too");
}

#[tokio::test(start_paused = true)]
async fn exceeding_restart_intensity_opens_the_circuit_until_the_cool_down_passes() {
    let fanfare = Fanfare::builder(sim())
        .agent(Faulty::new(
            TestAgent::new("meltdown"),
            Faults {
                panic: Some(Trigger::every(1)),
                ..Faults::default()
            },
        ))
        .agent(TestAgent::new("steady"))
        .restart_intensity(RestartIntensity {
            max_restarts: 2,
            window: Duration::from_secs(60),
            cool_down: Duration::from_secs(5),
        })
        .start()
        .await
        .unwrap();
    let mut events = fanfare.supervision_events();
    let request = || {
        RunRequest::fan_out("t", ["meltdown", "steady"])
            .policy(Policy::TolerantPartial { quorum: 1 })
    };
    for _ in 0..3 {
        fanfare.run(request()).await.unwrap();
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let mut escalated = false;
    while let Ok(e) = events.try_recv() {
        escalated |=
            matches!(e, SupervisorEvent::Escalated { ref agent, .. } if agent == "meltdown");
    }
    assert!(escalated);
    // Circuit open: the branch fails at once, naming why.
    let r = fanfare.run(request()).await.unwrap();
    assert!(
        r.branches[0]
            .error
            .as_deref()
            .unwrap()
            .contains("circuit open"),
        "{:?}",
        r.branches[0].error
    );
    assert!(r.branches[0].end < Duration::from_millis(5));
    assert_eq!(fanfare.status().await[0].escalations, 1);
    // After the cool-down it is started afresh (and crashes again on its next task).
    tokio::time::sleep(Duration::from_secs(5)).await;
    eventually(Duration::from_secs(1), || {
        matches!(events.try_recv(), Ok(SupervisorEvent::CircuitClosed { .. }))
    })
    .await;
    assert!(fanfare.status().await[0].is_up());
    fanfare.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn crash_retries_rerun_the_branch_on_the_restarted_specialist() {
    let fanfare = Fanfare::builder(sim())
        .agent(TestAgent::panicking_every("flaky", 2))
        .start()
        .await
        .unwrap();
    let request = || RunRequest::fan_out("t", ["flaky"]).crash_retries(1);
    assert!(fanfare.run(request()).await.unwrap().status.is_success());
    // Task 2 panics; the branch runs again as task 3 on the new actor.
    let r = fanfare.run(request()).await.unwrap();
    assert!(r.status.is_success(), "{:?}", r.status);
    assert_eq!(r.branches[0].retries, 1);
    assert_eq!(fanfare.status().await[0].restarts, 1);
    fanfare.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn injected_faults_show_up_as_the_outcomes_they_imitate() {
    let every = |n| Some(Trigger::every(n));
    let fanfare = Fanfare::builder(sim())
        .agent(Faulty::new(
            TestAgent::new("five-hundred"),
            Faults {
                provider_500: every(1),
                ..Faults::default()
            },
        ))
        .agent(Faulty::new(
            TestAgent::new("rate-limited"),
            Faults {
                provider_429: every(1),
                ..Faults::default()
            },
        ))
        .agent(Faulty::new(
            TestAgent::new("garbage"),
            Faults {
                garbage: every(1),
                ..Faults::default()
            },
        ))
        .agent(Faulty::new(
            TestAgent::new("hangs"),
            Faults {
                hang: every(1),
                ..Faults::default()
            },
        ))
        .agent(Faulty::new(
            TestAgent::new("slow"),
            Faults {
                slow: Some(Trigger {
                    extra_ms: Some(3000),
                    ..Trigger::every(1)
                }),
                ..Faults::default()
            },
        ))
        .start()
        .await
        .unwrap();
    let request = RunRequest::fan_out(
        "t",
        ["five-hundred", "rate-limited", "garbage", "hangs", "slow"],
    )
    .policy(Policy::TolerantPartial { quorum: 1 })
    .branch_timeout(Duration::from_secs(10));
    let r = fanfare.run(request).await.unwrap();
    let errors: Vec<String> = r
        .branches
        .iter()
        .map(|b| b.error.clone().unwrap_or_default())
        .collect();
    assert!(errors[0].contains("HTTP 500"), "{}", errors[0]);
    assert!(errors[1].contains("rate limited"), "{}", errors[1]);
    assert!(errors[2].contains("undecodable"), "{}", errors[2]);
    assert_eq!(
        r.branches[3].outcome,
        BranchOutcome::TimedOut {
            deadline: DeadlineKind::Branch,
            last_error: None,
            partial: None,
        }
    );
    assert!(r.branches[4].outcome.is_ok() && r.branches[4].duration() >= Duration::from_secs(3));
    fanfare.shutdown().await;
}
