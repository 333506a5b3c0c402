//! The LLM merge always fits its model's context window: against the mock server
//! refusing long prompts with the errors real servers give (llama.cpp's on the
//! OpenAI route, Anthropic's on its own), through the real wire providers.

use std::sync::Arc;
use std::time::Duration;

use fanfare::agent::spec::AgentSpec;
use fanfare::provider::{
    AnthropicConfig, AnthropicProvider, ApiKey, OpenAiConfig, OpenAiProvider, SimProfile,
    SimProvider,
};
use fanfare::run::WindowSource;
use fanfare::{
    Agent, AgentContext, AgentOutput, AgentReply, Fanfare, MergeStrategy, Policy, Provider,
    RunRequest, Task,
};
use fanfare_mock::{MockConfig, MockServer};

async fn mock(window: u64) -> MockServer {
    MockServer::start(MockConfig {
        latency: Duration::from_millis(2),
        context_window: Some(window),
        ..MockConfig::default()
    })
    .await
    .unwrap()
}

fn openai(mock: &MockServer) -> OpenAiProvider {
    let mut c = OpenAiConfig::new(None);
    c.base_url = format!("{}/v1", mock.url());
    c.default_model = "local-model".into();
    OpenAiProvider::new(c).unwrap()
}

fn anthropic(mock: &MockServer) -> AnthropicProvider {
    let mut c = AnthropicConfig::new(ApiKey::new("k"));
    c.base_url = mock.url();
    c.default_model = "claude-haiku-4-5".into();
    AnthropicProvider::new(c).unwrap()
}

fn merge(context_window: Option<u32>) -> MergeStrategy {
    MergeStrategy::Llm {
        model: None,
        max_tokens: 256,
        context_window,
    }
}

/// A runtime with one short-answer agent.
async fn start(provider: Arc<dyn Provider>) -> Fanfare {
    let mut agent = AgentSpec::new("reviewer", "You review plans.");
    agent.max_tokens = 48;
    let fanfare = Fanfare::builder(provider)
        .agent(agent)
        .start()
        .await
        .unwrap();
    fanfare
}

/// `n` branches of that agent, merged with `strategy`.
fn request(n: usize, strategy: MergeStrategy) -> RunRequest {
    RunRequest::fan_out("Should we keep plain text logs?", vec!["reviewer"; n])
        .policy(Policy::TolerantPartial { quorum: 1 })
        .merge(strategy)
}

fn status_count(mock: &MockServer, status: u16) -> u64 {
    mock.stats().by_status.get(&status).copied().unwrap_or(0)
}

#[tokio::test]
async fn a_32_branch_merge_over_a_1024_token_llama_window_learns_it_and_merges_in_levels() {
    let mock = mock(1024).await;
    let fanfare = start(Arc::new(openai(&mock))).await;
    let report = fanfare.run(request(32, merge(None))).await.unwrap();
    assert!(report.status.is_success(), "{}", report.render());
    assert_eq!(report.totals.ok, 32);
    let synthesis = report.synthesis.as_ref().unwrap();
    assert!(synthesis.error.is_none(), "{:?}", synthesis.error);
    let tree = synthesis.tree.as_ref().unwrap();
    // The first try was refused; the window came from the error.
    assert_eq!(tree.overflows, 1);
    assert_eq!(status_count(&mock, 400), 1);
    assert_eq!(tree.window, Some(1024));
    assert_eq!(tree.window_source, Some(WindowSource::Learned));
    assert!(tree.is_hierarchical(), "{tree:?}");
    // Every branch went into exactly one first-level part, in order.
    let inputs: Vec<String> = tree.levels[0]
        .iter()
        .flat_map(|n| n.inputs.iter().cloned())
        .collect();
    let want: Vec<String> = (1..=32).map(|i| format!("reviewer #{i}")).collect();
    assert_eq!(inputs, want);
    let text = report.render();
    assert!(text.contains("merge tree:"), "{text}");
    assert!(
        text.contains("learned from the server's overflow error"),
        "{text}"
    );

    // The window is kept: the next run plans for it and is never refused.
    let again = fanfare.run(request(32, merge(None))).await.unwrap();
    assert!(again.status.is_success(), "{}", again.render());
    let tree = again.synthesis.as_ref().unwrap().tree.as_ref().unwrap();
    assert_eq!(tree.overflows, 0);
    assert!(tree.is_hierarchical());
    assert_eq!(status_count(&mock, 400), 1);
    fanfare.shutdown().await;
}

#[tokio::test]
async fn anthropics_prompt_too_long_error_is_learned_over_the_table() {
    // The table says 200k for claude models; this server has 600.
    let mock = mock(600).await;
    let fanfare = start(Arc::new(anthropic(&mock))).await;
    let report = fanfare.run(request(16, merge(None))).await.unwrap();
    assert!(report.status.is_success(), "{}", report.render());
    let tree = report.synthesis.as_ref().unwrap().tree.clone().unwrap();
    assert_eq!(tree.window, Some(600));
    assert_eq!(tree.window_source, Some(WindowSource::Learned));
    assert!(tree.overflows >= 1);
    assert!(tree.is_hierarchical());
    fanfare.shutdown().await;
}

#[tokio::test]
async fn a_window_set_by_the_caller_is_planned_for_and_never_overflows() {
    let mock = mock(1024).await;
    let fanfare = start(Arc::new(openai(&mock))).await;
    let report = fanfare.run(request(32, merge(Some(1024)))).await.unwrap();
    assert!(report.status.is_success(), "{}", report.render());
    let tree = report.synthesis.as_ref().unwrap().tree.clone().unwrap();
    assert_eq!(tree.window_source, Some(WindowSource::Setting));
    assert_eq!(tree.overflows, 0);
    assert_eq!(status_count(&mock, 400), 0);
    assert!(tree.is_hierarchical());
    fanfare.shutdown().await;
}

#[tokio::test]
async fn outputs_that_fit_are_merged_in_one_call() {
    let mock = mock(100_000).await;
    let fanfare = start(Arc::new(openai(&mock))).await;
    let before = mock.stats().requests;
    let report = fanfare.run(request(4, merge(Some(100_000)))).await.unwrap();
    assert!(report.status.is_success(), "{}", report.render());
    let tree = report.synthesis.as_ref().unwrap().tree.clone().unwrap();
    assert!(!tree.is_hierarchical());
    assert_eq!(mock.stats().requests - before, 5, "4 branches and 1 merge");
    assert!(!report.render().contains("merge tree:"));
    fanfare.shutdown().await;
}

#[tokio::test]
async fn a_window_too_small_for_any_merge_is_a_clear_error() {
    let mock = mock(100_000).await;
    let fanfare = start(Arc::new(openai(&mock))).await;
    let report = fanfare.run(request(2, merge(Some(100)))).await.unwrap();
    assert!(!report.status.is_success());
    let error = report.synthesis.as_ref().unwrap().error.clone().unwrap();
    assert!(
        error.contains("context window (100 tokens) is too small for a merge"),
        "{error}"
    );
    fanfare.shutdown().await;
}

/// Answers with a long text at once.
struct Verbose;

impl Agent for Verbose {
    fn name(&self) -> &str {
        "verbose"
    }

    async fn run(&self, _ctx: &AgentContext, _task: Task) -> AgentReply {
        Ok(AgentOutput::text("All work and no play. ".repeat(1000)))
    }
}

#[tokio::test]
async fn an_output_longer_than_the_window_is_cut_and_the_report_says_so() {
    let mock = mock(1024).await;
    let fanfare = Fanfare::builder(Arc::new(openai(&mock)))
        .agent(Verbose)
        .start()
        .await
        .unwrap();
    let report = fanfare
        .run(RunRequest::fan_out("t", vec!["verbose"; 2]).merge(merge(None)))
        .await
        .unwrap();
    assert!(report.status.is_success(), "{}", report.render());
    let tree = report.synthesis.as_ref().unwrap().tree.clone().unwrap();
    assert_eq!(tree.cut, vec!["verbose #1", "verbose #2"]);
    assert!(report
        .render()
        .contains("cut to fit: verbose #1, verbose #2"));
    fanfare.shutdown().await;
}

#[tokio::test]
async fn the_simulated_provider_has_no_window_and_merges_in_one_call() {
    let provider = Arc::new(SimProvider::with_profile(SimProfile::instant()));
    let fanfare = start(provider).await;
    let report = fanfare.run(request(8, merge(None))).await.unwrap();
    assert!(report.status.is_success());
    let tree = report.synthesis.as_ref().unwrap().tree.clone().unwrap();
    assert_eq!(tree.window, None);
    assert!(!tree.is_hierarchical());
    fanfare.shutdown().await;
}

#[tokio::test]
async fn partial_merges_longer_than_asked_are_cut_so_each_level_still_halves_the_work() {
    // The simulated model writes more tokens (as estimated) than a partial merge
    // asks for: without a cut, each part would stand alone at every level.
    let provider = Arc::new(SimProvider::with_profile(SimProfile {
        words: 90,
        ..SimProfile::instant()
    }));
    let mut agent = AgentSpec::new("reviewer", "You review plans.");
    agent.max_tokens = 600;
    let fanfare = Fanfare::builder(provider)
        .agent(agent)
        .start()
        .await
        .unwrap();
    let report = fanfare.run(request(4, merge(Some(500)))).await.unwrap();
    assert!(report.status.is_success(), "{}", report.render());
    let tree = report.synthesis.as_ref().unwrap().tree.clone().unwrap();
    assert!(tree.is_hierarchical());
    for pair in tree.levels.windows(2) {
        assert!(pair[1].len() <= pair[0].len().div_ceil(2), "{tree:?}");
    }
    assert!(tree.levels.len() <= 4, "{tree:?}");
    fanfare.shutdown().await;
}
