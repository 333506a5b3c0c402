use std::sync::Arc;
use std::time::Duration;

use fanfare::provider::{SimProfile, SimProvider};
use fanfare::run::BranchError;
use fanfare::supervision::RestartIntensity;
use fanfare::{
    AgentError, AgentMsg, AgentOutput, BranchOutcome, Fanfare, Policy, RunRequest, Specialist,
};
use ractor::{Actor, ActorProcessingErr, ActorRef};

use crate::common::{eventually, TestAgent};

async fn restarts(fanfare: &Fanfare, name: &str) -> u32 {
    fanfare
        .status()
        .await
        .into_iter()
        .find(|s| s.name == name)
        .map(|s| s.restarts)
        .unwrap()
}

#[tokio::test(start_paused = true)]
async fn a_panicking_specialist_is_restarted_and_routing_follows_it() {
    let provider = Arc::new(SimProvider::with_profile(SimProfile::fixed(
        Duration::from_millis(50),
    )));
    let fanfare = Fanfare::builder(provider)
        .agent(TestAgent::new("steady"))
        .agent(TestAgent::panicking_every("flaky", 2))
        .start()
        .await
        .unwrap();
    let request = || {
        RunRequest::fan_out("t", ["steady", "flaky"]).policy(Policy::TolerantPartial { quorum: 1 })
    };

    let first = fanfare.run(request()).await.unwrap();
    assert_eq!(first.totals.ok, 2);

    // Task 2 panics: that branch fails, naming the panic; the run goes on.
    let second = fanfare.run(request()).await.unwrap();
    assert!(second.status.is_success());
    match &second.branches[1].outcome {
        BranchOutcome::Failed {
            error: BranchError::Agent(AgentError::Panicked { message }),
        } => {
            assert!(message.contains("flaky panics on task 2"), "{message}")
        }
        other => panic!("expected a panic failure, got {other:?}"),
    }
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(restarts(&fanfare, "flaky").await, 1);

    // The next run reaches the restarted actor.
    let third = fanfare.run(request()).await.unwrap();
    assert_eq!(third.totals.ok, 2, "{:?}", third.branches[1].outcome);
    fanfare.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn under_fail_fast_a_panic_ends_the_run_and_names_the_branch() {
    let provider = Arc::new(SimProvider::with_profile(SimProfile::fixed(
        Duration::from_millis(500),
    )));
    let fanfare = Fanfare::builder(provider.clone())
        .agent(TestAgent::new("steady"))
        .agent(TestAgent::panicking_every("flaky", 1))
        .start()
        .await
        .unwrap();
    let report = fanfare
        .run(RunRequest::fan_out("t", ["steady", "flaky"]))
        .await
        .unwrap();
    let fanfare::RunStatus::Failed { reason } = &report.status else {
        panic!()
    };
    let reason = reason.to_string();
    assert!(
        reason.contains("branch 1 (flaky)") && reason.contains("panicked"),
        "{reason}"
    );
    assert_eq!(report.branches[0].outcome.label(), "cancelled");
    eventually(Duration::from_secs(1), || provider.stats().aborted == 1).await;
    fanfare.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn restart_intensity_exceeded_marks_the_specialist_down() {
    let provider = Arc::new(SimProvider::with_profile(SimProfile::instant()));
    let fanfare = Fanfare::builder(provider)
        .agent(TestAgent::panicking_every("doomed", 1))
        .agent(TestAgent::new("steady"))
        .restart_intensity(RestartIntensity {
            max_restarts: 2,
            window: Duration::from_secs(60),
            cool_down: Duration::from_secs(600),
        })
        .start()
        .await
        .unwrap();
    let request = || {
        RunRequest::fan_out("t", ["doomed", "steady"]).policy(Policy::TolerantPartial { quorum: 1 })
    };
    for _ in 0..3 {
        let r = fanfare.run(request()).await.unwrap();
        assert_eq!(r.totals.failed, 1);
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let status = fanfare.status().await;
    let doomed = status.iter().find(|s| s.name == "doomed").unwrap();
    assert!(!doomed.is_up());
    assert_eq!(doomed.restarts, 2);
    let r = fanfare.run(request()).await.unwrap();
    match &r.branches[0].outcome {
        BranchOutcome::Failed {
            error: BranchError::SpecialistUnavailable { reason, .. },
        } => {
            assert!(
                reason.to_string().contains("circuit open")
                    && reason.to_string().contains("restart intensity"),
                "{reason}"
            )
        }
        other => panic!("expected unavailable, got {other:?}"),
    }
    assert!(r.branches[1].outcome.is_ok());
    fanfare.shutdown().await;
}

/// A specialist written directly as a ractor actor against the public protocol.
struct Echo;

impl Actor for Echo {
    type Msg = AgentMsg;
    type State = ();
    type Arguments = String;

    async fn pre_start(
        &self,
        _: ActorRef<AgentMsg>,
        _prefix: String,
    ) -> Result<(), ActorProcessingErr> {
        Ok(())
    }

    async fn handle(
        &self,
        _: ActorRef<AgentMsg>,
        msg: AgentMsg,
        _: &mut (),
    ) -> Result<(), ActorProcessingErr> {
        if let AgentMsg::Run { task, reply } = msg {
            let _ = reply.send(Ok(AgentOutput::text(format!("echo: {}", task.input))));
        }
        Ok(())
    }
}

#[tokio::test(start_paused = true)]
async fn a_raw_actor_specialist_is_routed_like_an_agent() {
    let provider = Arc::new(SimProvider::with_profile(SimProfile::instant()));
    let fanfare = Fanfare::builder(provider)
        .agent(TestAgent::new("agent"))
        .specialist(Specialist::actor("echo", || (Echo, "echo".to_owned())))
        .start()
        .await
        .unwrap();
    let report = fanfare
        .run(RunRequest::fan_out("hi", ["agent", "echo"]))
        .await
        .unwrap();
    assert_eq!(
        report.branches[1].outcome.output().unwrap().text,
        "echo: hi"
    );
    assert_eq!(report.totals.ok, 2);
    fanfare.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn duplicate_specialist_names_are_refused() {
    let provider = Arc::new(SimProvider::with_profile(SimProfile::instant()));
    let err = Fanfare::builder(provider)
        .agent(TestAgent::new("same"))
        .agent(TestAgent::new("same"))
        .start()
        .await
        .unwrap_err();
    assert!(
        err.to_string().contains("`same` is already registered"),
        "{err}"
    );
}
