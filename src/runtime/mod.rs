//! [`Fanfare`]: the handle that starts the actors, runs tasks, and shuts down.
//!
//! Start-up spawns the root actor (`root`), which spawns, links and restarts the
//! three top-level actors: the supervisor (which spawns and links every specialist),
//! the synthesiser and the orchestrator. Runs go to the orchestrator as messages.
//! [`Fanfare::shutdown`] stops the orchestrator first (aborting runs still in flight,
//! which cancels their branches), then the synthesiser, then the specialists and their
//! supervisor, then the root, waiting for each.

mod root;

use std::sync::Arc;
use std::time::Duration;

use ractor::rpc::CallResult;
use ractor::{Actor, ActorRef};
use tokio::sync::{broadcast, mpsc, oneshot, watch};

use crate::agent::{Agent, Task};
use crate::provider::{PriceTable, Provider};
use crate::report::{BranchesPart, RunReport};
use crate::run::{
    call_here, BranchCall, BranchOutcome, CodeError, CodeInput, CodeOutput, CodeRegistry,
    DeadlineKind, Known, Learned, OrchestratorArgs, OrchestratorMsg, Router, RunError, RunEvent,
    RunRequest,
};
use crate::supervision::{
    AddError, RestartIntensity, Roster, Specialist, SpecialistStatus, SupervisionConfig,
    SupervisorArgs, SupervisorEvent, SupervisorMsg,
};
use crate::tasks::LiveCount;
use root::{Current, Refs, Root, RootArgs, RootMsg};

/// Why the runtime could not start.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StartError {
    /// An actor failed to spawn.
    #[error("could not spawn the {what}")]
    Spawn {
        /// Which actor.
        what: &'static str,
        /// ractor's error.
        source: ractor::SpawnErr,
    },
    /// A specialist could not be registered.
    #[error(transparent)]
    Specialist(#[from] AddError),
    /// A tool could not be registered.
    #[error(transparent)]
    Tool(#[from] crate::agent::tools::ToolboxError),
}

/// Collects specialists before [`FanfareBuilder::start`].
pub struct FanfareBuilder {
    provider: Arc<dyn Provider>,
    specialists: Vec<Specialist>,
    supervision: SupervisionConfig,
    prices: PriceTable,
    code: CodeRegistry,
    router: Option<Arc<dyn Router>>,
    tools: Vec<Arc<dyn crate::agent::tools::Tool>>,
    secrets: crate::provider::Redactor,
    workflows: std::collections::BTreeMap<String, Arc<crate::run::SubWorkflow>>,
    #[cfg(feature = "mcp")]
    mcp: Vec<crate::agent::tools::mcp::McpServer>,
}

impl FanfareBuilder {
    /// Adds a tool its agents may call (a spec agent names the ones it offers in
    /// its spec's `tools`).
    pub fn tool(mut self, tool: impl crate::agent::tools::Tool) -> Self {
        self.tools.push(Arc::new(tool));
        self
    }

    /// Adds an MCP server whose tools its agents may call (a spec agent offers them
    /// as `NAME.*` or `NAME.TOOL`). The server is supervised like a specialist, as
    /// `mcp:NAME`; [`FanfareBuilder::start`] fails if it does not connect. See
    /// [`crate::agent::tools::mcp`].
    #[cfg(feature = "mcp")]
    pub fn mcp(mut self, server: crate::agent::tools::mcp::McpServer) -> Self {
        self.mcp.push(server);
        self
    }

    /// Takes the keys of `secrets` out of every tool's answer before it is kept,
    /// streamed, reported or sent to a model (a tool that reads a `.env` file would
    /// otherwise spread them). Give it every key the process holds, whichever
    /// provider uses it: `ApiKey::redactor`, joined with `Redactor::and`.
    pub fn redact(mut self, secrets: crate::provider::Redactor) -> Self {
        self.secrets = self.secrets.and(secrets);
        self
    }

    /// Adds a workflow its agents may hand sub-tasks to with the `run_workflow`
    /// tool (a spec agent offers it as `tools = ["run_workflow"]`): it runs as a
    /// child run of the branch, within its deadline and budget, nested at most
    /// [`MAX_DEPTH`](crate::agent::tools::delegate::MAX_DEPTH) deep. See
    /// [`crate::agent::tools::delegate`]. A second workflow of one name replaces the
    /// first.
    pub fn workflow(mut self, workflow: crate::run::SubWorkflow) -> Self {
        self.workflows
            .insert(workflow.name.clone(), Arc::new(workflow));
        self
    }

    /// Adds a specialist defined by an [`Agent`].
    pub fn agent(mut self, agent: impl Agent) -> Self {
        self.specialists.push(Specialist::agent(agent));
        self
    }

    /// Adds one specialist per agent (for example, every loaded spec).
    pub fn agents_from<A: Agent>(mut self, agents: impl IntoIterator<Item = A>) -> Self {
        self.specialists
            .extend(agents.into_iter().map(Specialist::agent));
        self
    }

    /// Adds any specialist (an agent or a raw actor).
    pub fn specialist(mut self, specialist: Specialist) -> Self {
        self.specialists.push(specialist);
        self
    }

    /// Sets the price table used for costs in reports (default: [`PriceTable::default`]).
    pub fn prices(mut self, prices: PriceTable) -> Self {
        self.prices = prices;
        self
    }

    /// Registers a code function that code steps may run by `name` (besides the
    /// built-in `concat`, `json-merge`, `vote` and `select-best`).
    pub fn code(
        mut self,
        name: impl Into<String>,
        f: impl Fn(&CodeInput<'_>) -> Result<CodeOutput, CodeError> + Send + Sync + 'static,
    ) -> Self {
        self.code.register(name, f);
        self
    }

    /// Sets the restart limit and circuit cool-down for every specialist.
    pub fn restart_intensity(mut self, intensity: RestartIntensity) -> Self {
        self.supervision.intensity = intensity;
        self
    }

    /// Sets the whole supervision policy: strategy, intensity, backoff.
    pub fn supervision(mut self, config: SupervisionConfig) -> Self {
        self.supervision = config;
        self
    }

    /// Places branches with `router` (a cluster's: here or on a worker node)
    /// instead of running them all here.
    pub fn router(mut self, router: Arc<dyn Router>) -> Self {
        self.router = Some(router);
        self
    }

    /// Spawns the actors.
    pub async fn start(self) -> Result<Fanfare, StartError> {
        let roster = Roster::default();
        let (supervision_events, _) = broadcast::channel(1024);
        let live = LiveCount::default();
        #[allow(unused_mut)]
        let mut own_tools = self.tools;
        if !self.workflows.is_empty() {
            let about = self
                .workflows
                .values()
                .map(|w| (w.name.clone(), w.about()))
                .collect();
            own_tools.push(Arc::new(crate::agent::tools::delegate::RunWorkflow::new(
                about,
            )));
        }
        let mut tools = crate::agent::tools::Toolbox::new(own_tools)?.redacting(self.secrets);
        // MCP servers start first, so that their tools are there for the first run.
        #[allow(unused_mut)]
        let mut children: Vec<Specialist> = Vec::new();
        #[cfg(feature = "mcp")]
        for server in self.mcp {
            use crate::agent::tools::mcp;
            let link = Arc::new(mcp::Link::for_server(&server));
            tools = tools.with_server(server.name(), Arc::new(link.clone()))?;
            let server = Arc::new(server);
            children.push(Specialist::actor(server.child_name(), move || {
                mcp::child(server.clone(), link.clone())
            }));
        }
        let prices = Arc::new(self.prices);
        let code = Arc::new(self.code);
        let (supervisor, supervisor_rx) = watch::channel(None);
        let (synthesiser, synthesiser_rx) = watch::channel(None);
        let (orchestrator, orchestrator_rx) = watch::channel(None);
        let args = RootArgs {
            supervisor: SupervisorArgs {
                roster: roster.clone(),
                context: crate::agent::AgentContext {
                    provider: self.provider.clone(),
                    tools: tools.clone(),
                },
                config: self.supervision,
                events: supervision_events.clone(),
                live: live.clone(),
            },
            provider: self.provider.clone(),
            orchestrator: OrchestratorArgs {
                roster: roster.clone(),
                synthesiser: synthesiser_rx.clone(),
                provider: self.provider.name().to_owned(),
                simulated: self.provider.is_simulated(),
                prices: prices.clone(),
                default_model: self.provider.default_model().map(str::to_owned),
                code: code.clone(),
                live: live.clone(),
                router: self.router,
                workflows: Arc::new(self.workflows),
            },
            refs: Refs {
                supervisor,
                synthesiser,
                orchestrator,
            },
            live: live.clone(),
            learned: Learned::default(),
        };
        let (root, _) =
            Actor::spawn(None, Root, args)
                .await
                .map_err(|source| StartError::Spawn {
                    what: "runtime's actors",
                    source,
                })?;
        let fanfare = Fanfare {
            code,
            root,
            orchestrator: orchestrator_rx,
            synthesiser: synthesiser_rx,
            supervisor: supervisor_rx,
            roster,
            supervision_events,
            live,
            prices,
            tools,
        };
        for specialist in children.into_iter().chain(self.specialists) {
            if let Err(e) = fanfare.add(specialist).await {
                fanfare.clone().shutdown().await;
                return Err(e);
            }
        }
        Ok(fanfare)
    }
}

/// A started runtime. Cheap to clone; every clone talks to the same actors.
#[derive(Clone)]
pub struct Fanfare {
    code: Arc<CodeRegistry>,
    root: ActorRef<RootMsg>,
    orchestrator: Current<OrchestratorMsg>,
    synthesiser: Current<crate::run::SynthesiserMsg>,
    supervisor: Current<SupervisorMsg>,
    roster: Roster,
    supervision_events: broadcast::Sender<SupervisorEvent>,
    live: LiveCount,
    prices: Arc<PriceTable>,
    tools: crate::agent::tools::Toolbox,
}

impl std::fmt::Debug for Fanfare {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Fanfare")
            .field("roster", &self.roster)
            .finish()
    }
}

/// A run in progress: its events in completion order, and its report at the end.
pub struct RunHandle {
    /// Branch events as they happen; closes after `RunFinished`.
    pub events: mpsc::UnboundedReceiver<RunEvent>,
    report: oneshot::Receiver<Result<RunReport, RunError>>,
    stop: tokio::sync::watch::Sender<bool>,
}

impl RunHandle {
    /// Stops the run but keeps its report: branches that had ended keep their
    /// outcomes, the rest are cancelled (reported `Cancelled`), no merge is made (or
    /// the one under way is dropped), and the report, still read with
    /// [`RunHandle::report`], fails with [`RunFailure::Stopped`](crate::run::RunFailure::Stopped).
    /// A run that had already ended is not changed. Dropping the handle instead
    /// abandons the run and its report.
    pub fn stop(&self) {
        self.stop.send_replace(true);
    }

    /// Waits for the report. Events not yet read stay readable.
    pub async fn report(&mut self) -> Result<RunReport, RunError> {
        (&mut self.report)
            .await
            .unwrap_or(Err(RunError::OrchestratorGone))
    }
}

impl Fanfare {
    /// Its MCP servers that are down with no reconnection under way (a restart
    /// failed; the supervisor tries again after its backoff or cool-down), each
    /// with why: their tools fail until they are back. A readiness check says so.
    pub fn tool_servers_down(&self) -> Vec<(String, String)> {
        self.tools.servers_down()
    }

    /// Starts building a runtime whose agents call `provider`.
    pub fn builder(provider: Arc<dyn Provider>) -> FanfareBuilder {
        FanfareBuilder {
            provider,
            specialists: Vec::new(),
            supervision: SupervisionConfig::default(),
            prices: PriceTable::default(),
            code: CodeRegistry::default(),
            router: None,
            tools: Vec::new(),
            secrets: crate::provider::Redactor::default(),
            workflows: std::collections::BTreeMap::new(),
            #[cfg(feature = "mcp")]
            mcp: Vec::new(),
        }
    }

    /// Registers and spawns one more specialist.
    pub async fn add(&self, specialist: Specialist) -> Result<(), StartError> {
        let name = specialist.name().to_owned();
        // A little longer than the supervisor waits, so that its answer says why.
        match self
            .root
            .call(
                |reply| RootMsg::Add(specialist, reply),
                Some(crate::supervision::START_TIMEOUT + Duration::from_secs(5)),
            )
            .await
        {
            Ok(CallResult::Success(Ok(()))) => Ok(()),
            Ok(CallResult::Success(Err(e))) => Err(StartError::Specialist(e)),
            Ok(CallResult::Timeout) => {
                Err(StartError::Specialist(AddError::StartTimedOut { name }))
            }
            _ => Err(StartError::Specialist(AddError::SupervisorGone)),
        }
    }

    /// Checks `request` as the orchestrator would before running it (agents known,
    /// dependencies, quorum, deadlines, budget), without running anything.
    pub fn validate(&self, request: &RunRequest) -> Result<(), crate::run::RequestError> {
        // Its MCP servers are specialists to the supervisor, not agents to run.
        let agents = agents_only(self.roster.names());
        let code = self.code.names();
        request.validate(&Known {
            agents: &agents,
            code: &code,
        })
    }

    /// Runs one task on this runtime's specialist `agent` as a run's branch would:
    /// waiting for a restarting specialist, retrying up to `crash_retries` times when
    /// it crashes under the task, ending at `deadline` (reported as `deadline_kind`).
    /// A cluster's worker node serves remote branches with it.
    pub async fn call_specialist(
        &self,
        agent: &str,
        task: Task,
        deadline: tokio::time::Instant,
        deadline_kind: DeadlineKind,
        crash_retries: u32,
    ) -> BranchOutcome {
        let mut call = BranchCall {
            agent: agent.to_owned(),
            slot: self.roster.watch(agent),
            task,
            deadline,
            deadline_kind,
            crash_retries,
        };
        let (outcome, _) = call_here(&mut call, 0).await;
        outcome
    }

    /// Runs `request` and waits for its report.
    pub async fn run(&self, request: RunRequest) -> Result<RunReport, RunError> {
        self.dispatch(request, None, None).await
    }

    /// Starts `request` and returns at once with a handle to its events and report.
    pub fn start_run(&self, request: RunRequest) -> RunHandle {
        let (events_tx, events) = mpsc::unbounded_channel();
        let (mut report_tx, report) = oneshot::channel();
        let (stop, stop_rx) = tokio::sync::watch::channel(false);
        let this = self.clone();
        tokio::spawn(async move {
            // Dropping the handle cancels the run: the call is abandoned, its reply
            // port closes, and the orchestrator cancels the branches.
            tokio::select! {
                result = this.dispatch(request, Some(events_tx), Some(stop_rx)) => {
                    let _ = report_tx.send(result);
                }
                () = report_tx.closed() => {}
            }
        });
        RunHandle {
            events,
            report,
            stop,
        }
    }

    async fn dispatch(
        &self,
        request: RunRequest,
        events: Option<mpsc::UnboundedSender<RunEvent>>,
        stop: Option<tokio::sync::watch::Receiver<bool>>,
    ) -> Result<RunReport, RunError> {
        // The run executes right here once the orchestrator admits it; dropping this
        // future (the caller gave up) drops the run, which cancels its branches.
        let (reply, admitted) = oneshot::channel();
        let orchestrator = self.orchestrator.borrow().clone();
        if orchestrator.is_none_or(|o| o.cast(OrchestratorMsg::Admit { reply }).is_err()) {
            return Err(RunError::OrchestratorGone);
        }
        // The run enforces its own deadline; the margin only guards against a wedged
        // orchestrator (or a run past its deadline), so that this call cannot hang
        // forever.
        let limit = request.deadline.saturating_add(Duration::from_secs(5));
        let run = async {
            let admitted = admitted.await.map_err(|_| RunError::OrchestratorGone)??;
            // The branches' part of the report is built as soon as they have
            // ended, before the merge answers.
            let settle = |ended| BranchesPart::new(ended, &self.prices);
            admitted
                .execute(request, events.as_ref(), stop, settle)
                .await
        };
        match tokio::time::timeout(limit, run).await {
            Ok(record) => Ok(RunReport::assemble(record?, &self.prices)),
            Err(_) => Err(RunError::OrchestratorGone),
        }
    }

    /// The count of this runtime's live actors (orchestrator, synthesiser,
    /// supervisor, agent-backed specialists). Keep it to check that a shutdown left
    /// nothing behind.
    pub fn live_actors(&self) -> LiveCount {
        self.live.clone()
    }

    /// What the supervisor does (restarts, escalations, circuits closing), from now on.
    pub fn supervision_events(&self) -> broadcast::Receiver<SupervisorEvent> {
        self.supervision_events.subscribe()
    }

    /// The prices its reports cost calls at.
    pub fn prices(&self) -> &PriceTable {
        &self.prices
    }

    /// Names of the registered agents, sorted (not its MCP servers' children,
    /// which are specialists to the supervisor, `mcp:NAME` in its status).
    pub fn agents(&self) -> Vec<String> {
        agents_only(self.roster.names())
    }

    /// Supervision status of every specialist, in registration order.
    pub async fn status(&self) -> Vec<SpecialistStatus> {
        let Some(supervisor) = self.supervisor.borrow().clone() else {
            return Vec::new();
        };
        match supervisor
            .call(SupervisorMsg::Status, Some(Duration::from_secs(10)))
            .await
        {
            Ok(CallResult::Success(s)) => s,
            _ => Vec::new(),
        }
    }

    /// [`Fanfare::shutdown_with_drain`] with a 10-second drain.
    pub async fn shutdown(self) {
        self.shutdown_with_drain(Duration::from_secs(10)).await;
    }

    /// Graceful shutdown. New runs are refused at once; runs in flight get up to
    /// `drain` to finish, then are aborted (their branches cancelled, their callers
    /// told the orchestrator is gone). Then the synthesiser stops, then the
    /// specialists in reverse start order, then their supervisor, each awaited.
    /// Returns how many runs had to be aborted.
    pub async fn shutdown_with_drain(self, drain: Duration) -> usize {
        let wait = Some(Duration::from_secs(10));
        // From now on the root restarts nothing; it must know before any child stops
        // (a cast raced the child's exit, which the root took for a crash: a spurious
        // `ERROR top-level actor exited` after about one clean run in ten).
        let _ = self.root.call(RootMsg::Stopping, wait).await;
        let orchestrator = self.orchestrator.borrow().clone();
        let synthesiser = self.synthesiser.borrow().clone();
        let supervisor = self.supervisor.borrow().clone();
        let mut aborted = 0;
        if let Some(orchestrator) = orchestrator {
            let drained = orchestrator
                .call(
                    |reply| OrchestratorMsg::Drain {
                        deadline: drain,
                        reply,
                    },
                    Some(drain.saturating_add(Duration::from_secs(10))),
                )
                .await;
            if let Ok(CallResult::Success(n)) = drained {
                aborted = n;
            }
            let _ = orchestrator.stop_and_wait(None, wait).await;
        }
        if let Some(synthesiser) = synthesiser {
            let _ = synthesiser.stop_and_wait(None, wait).await;
        }
        let children = match &supervisor {
            Some(s) => match s.call(SupervisorMsg::ShutDown, wait).await {
                Ok(CallResult::Success(children)) => children,
                _ => Vec::new(),
            },
            None => Vec::new(),
        };
        for (name, cell) in children.into_iter().rev() {
            if cell
                .stop_and_wait(Some("shutdown".to_owned()), wait)
                .await
                .is_err()
            {
                tracing::warn!(agent = %name, "specialist did not stop in time; killing it");
                cell.kill();
            }
        }
        if let Some(supervisor) = supervisor {
            let _ = supervisor.stop_and_wait(None, wait).await;
        }
        let _ = self.root.stop_and_wait(None, wait).await;
        aborted
    }
}

/// `names` without the MCP servers' children (`mcp:NAME`: no agent's name has a `:`).
fn agents_only(mut names: Vec<String>) -> Vec<String> {
    names.retain(|n| !n.starts_with("mcp:"));
    names
}

#[cfg(test)]
mod tests;
