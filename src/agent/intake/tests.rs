use super::*;

/// One step of a table: what happens, and what the book must say.
#[derive(Clone, Copy, Debug)]
enum Step {
    /// A task asks in; `Some(ticket)` expected, or `None` (refused).
    Enter(Option<usize>),
    /// A task panics (before it leaves).
    Panic(Say),
    /// The task holding this ticket ends.
    Leave(usize, Say),
    /// The actor goes; this many tasks are handed back to be aborted.
    Close(usize),
}

fn play(supervised: bool, steps: &[Step]) {
    let mut book: Book<()> = Book::new(supervised);
    for (i, step) in steps.iter().enumerate() {
        match *step {
            Step::Enter(want) => assert_eq!(book.enter(()), want, "step {i}: {step:?}"),
            Step::Panic(want) => assert_eq!(book.panicked(), want, "step {i}: {step:?}"),
            Step::Leave(t, want) => assert_eq!(book.leave(t), want, "step {i}: {step:?}"),
            Step::Close(n) => assert_eq!(book.close().len(), n, "step {i}: {step:?}"),
        }
    }
}

#[test]
fn the_book_admits_retires_and_closes_as_the_table_says() {
    use Say::*;
    use Step::*;
    let tables: &[(&str, bool, &[Step])] = &[
        (
            "serving: tasks come and go, nobody is told; a freed slot is reused",
            true,
            &[
                Enter(Some(0)),
                Enter(Some(1)),
                Leave(0, Nothing),
                Leave(1, Nothing),
                Enter(Some(1)),
                Enter(Some(0)),
                Enter(Some(2)),
            ],
        ),
        (
            "a panic retires; siblings finish; the last one out says retired",
            true,
            &[
                Enter(Some(0)),
                Enter(Some(1)),
                Panic(Retiring),
                Enter(None),
                Leave(0, Nothing),
                Leave(1, Retired),
                Enter(None),
            ],
        ),
        (
            "a lone task's panic: retiring, then retired as it leaves",
            true,
            &[Enter(Some(0)), Panic(Retiring), Leave(0, Retired)],
        ),
        (
            "a second panic while retiring says nothing more",
            true,
            &[
                Enter(Some(0)),
                Enter(Some(1)),
                Panic(Retiring),
                Panic(Nothing),
                Leave(1, Nothing),
                Leave(0, Retired),
            ],
        ),
        (
            "unsupervised: a panic is only logged, work goes on",
            false,
            &[
                Enter(Some(0)),
                Panic(Nothing),
                Leave(0, Nothing),
                Enter(Some(0)),
            ],
        ),
        (
            "closing hands back every task and admits no more",
            true,
            &[
                Enter(Some(0)),
                Enter(Some(1)),
                Close(2),
                Enter(None),
                Leave(0, Nothing),
            ],
        ),
        (
            "closed while retiring: the leaving tasks say nothing",
            true,
            &[Enter(Some(0)), Panic(Retiring), Close(1), Leave(0, Nothing)],
        ),
    ];
    for (name, supervised, steps) in tables {
        eprintln!("table: {name}");
        play(*supervised, steps);
    }
}

fn task() -> Task {
    crate::agent::task::test_task("the task")
}

/// Sets its flag when dropped.
struct Dropped(Arc<std::sync::atomic::AtomicBool>);

impl Drop for Dropped {
    fn drop(&mut self) {
        self.0.store(true, std::sync::atomic::Ordering::SeqCst);
    }
}

/// An intake whose agent signals `started` and then never answers; its work sets
/// the returned flag when it is dropped.
fn hanging(started: Arc<tokio::sync::Notify>) -> (Arc<Intake>, Arc<std::sync::atomic::AtomicBool>) {
    let dropped = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let flag = dropped.clone();
    let run: Box<RunFn> = Box::new(move |_task| {
        let (guard, started) = (Dropped(flag.clone()), started.clone());
        Box::pin(async move {
            let _guard = guard;
            started.notify_one();
            std::future::pending().await
        })
    });
    (Arc::new(Intake::new("hangs", run, None)), dropped)
}

#[tokio::test]
async fn closing_the_intake_aborts_the_work_it_admitted_and_admits_no_more() {
    let started = Arc::new(tokio::sync::Notify::new());
    let (intake, dropped) = hanging(started.clone());
    let ticket = intake.enter().expect("a serving intake admits");
    let running = tokio::spawn(ticket.run(task()));
    started.notified().await;
    assert_eq!(intake.in_flight(), 1);
    intake.close();
    let ran = tokio::time::timeout(std::time::Duration::from_secs(10), running)
        .await
        .expect("closing the intake ends the work it admitted")
        .expect("the branch's task ends");
    assert!(matches!(ran, Ran::Aborted), "got {ran:?}");
    assert!(
        dropped.load(std::sync::atomic::Ordering::SeqCst),
        "the work was dropped"
    );
    assert!(intake.enter().is_none(), "a closed intake admits nothing");
    assert_eq!(intake.in_flight(), 0);
}

#[tokio::test]
async fn a_branch_that_gives_up_drops_the_work_and_leaves_the_intake() {
    let started = Arc::new(tokio::sync::Notify::new());
    let (intake, dropped) = hanging(started.clone());
    let ticket = intake.enter().expect("a serving intake admits");
    let running = tokio::spawn(ticket.run(task()));
    started.notified().await;
    running.abort();
    assert!(running.await.unwrap_err().is_cancelled());
    assert!(
        dropped.load(std::sync::atomic::Ordering::SeqCst),
        "the work was dropped"
    );
    assert_eq!(intake.in_flight(), 0, "its ticket left the book");
    assert!(intake.enter().is_some(), "the intake still serves");
}

#[tokio::test]
async fn a_panicking_agent_is_answered_as_panicked_and_its_ticket_leaves() {
    let run: Box<RunFn> = Box::new(|_task| Box::pin(async { panic!("boom") }));
    let intake = Arc::new(Intake::new("panics", run, None));
    let ran = intake.enter().expect("admitted").run(task()).await;
    match ran {
        Ran::Replied(Err(AgentError::Panicked { message })) => assert_eq!(message, "boom"),
        other => panic!("expected a panic answered, got {other:?}"),
    }
    assert_eq!(intake.in_flight(), 0);
    // Unsupervised: nothing to retire to, so it carries on.
    assert!(intake.enter().is_some());
}

#[tokio::test]
async fn a_panic_hook_can_tell_a_panic_fanfare_will_catch_from_one_it_will_not() {
    // The CLI printed an agent's panic from its hook and again from the warning
    // that records it; its hook now leaves the caught ones to the warning.
    let run: Box<RunFn> = Box::new(|_task| {
        Box::pin(async {
            Ok(crate::agent::AgentOutput::text(
                panic_is_caught().to_string(),
            ))
        })
    });
    let intake = Arc::new(Intake::new("asks", run, None));
    match intake.enter().expect("admitted").run(task()).await {
        Ran::Replied(Ok(out)) => assert_eq!(out.text, "true", "inside an agent's work"),
        other => panic!("expected an answer, got {other:?}"),
    }
    assert!(!panic_is_caught(), "outside it");
}
