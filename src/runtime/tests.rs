use super::*;
use crate::agent::{AgentContext, AgentOutput, AgentReply, Task};
use crate::provider::Scripted;

struct Echo;

impl Agent for Echo {
    fn name(&self) -> &str {
        "echo"
    }

    async fn run(&self, _ctx: &AgentContext, task: Task) -> AgentReply {
        Ok(AgentOutput::text(&*task.input))
    }
}

async fn started() -> Fanfare {
    Fanfare::builder(Arc::new(Scripted::new()))
        .agent(Echo)
        .start()
        .await
        .unwrap()
}

/// Waits (real time, briefly) until `f` gives `Some`.
async fn until<T>(mut f: impl FnMut() -> Option<T>) -> T {
    for _ in 0..200 {
        if let Some(v) = f() {
            return v;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    panic!("not within a second");
}

async fn runs(fanfare: &Fanfare) -> bool {
    fanfare
        .run(RunRequest::fan_out("hi", ["echo"]))
        .await
        .is_ok_and(|r| r.status.is_success())
}

#[tokio::test]
async fn a_top_level_actor_that_dies_is_restarted_and_the_runtime_goes_on() {
    let fanfare = started().await;
    assert!(runs(&fanfare).await);
    for child in ["orchestrator", "synthesiser", "supervisor"] {
        let before = match child {
            "orchestrator" => fanfare.orchestrator.borrow().as_ref().map(|a| a.get_cell()),
            "synthesiser" => fanfare.synthesiser.borrow().as_ref().map(|a| a.get_cell()),
            _ => fanfare.supervisor.borrow().as_ref().map(|a| a.get_cell()),
        }
        .unwrap();
        let old = before.get_id();
        before.kill();
        until(|| {
            let now = match child {
                "orchestrator" => fanfare.orchestrator.borrow().as_ref().map(|a| a.get_id()),
                "synthesiser" => fanfare.synthesiser.borrow().as_ref().map(|a| a.get_id()),
                _ => fanfare.supervisor.borrow().as_ref().map(|a| a.get_id()),
            };
            now.filter(|id| *id != old)
        })
        .await;
        // A new supervisor starts the registered specialists again.
        until(|| {
            fanfare.roster.watch("echo").and_then(|w| {
                matches!(*w.borrow(), crate::supervision::Slot::Up { .. }).then_some(())
            })
        })
        .await;
        let request = RunRequest::fan_out("hi", ["echo"]).merge(crate::run::MergeStrategy::llm());
        let report = fanfare.run(request).await.unwrap();
        assert!(
            report.status.is_success(),
            "after the {child} restarted: {:?}",
            report.status
        );
    }
    let live = fanfare.live_actors();
    fanfare.shutdown().await;
    assert_eq!(live.get(), 0, "the shutdown left no actor behind");
}
