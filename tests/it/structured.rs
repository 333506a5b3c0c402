//! Structured outputs: a step's JSON schema is asked of the model on both wire
//! formats (plain and streamed), the answer is checked, an answer that does not fit
//! gets one more try with the problems, and shaped answers meet at a json-merge.

use std::sync::Arc;
use std::time::Duration;

use fanfare::agent::spec::AgentSpec;
use fanfare::provider::{
    AnthropicConfig, AnthropicProvider, ApiKey, Completion, OpenAiConfig, OpenAiProvider,
    OutputSchema, Role, Scripted, Streamed,
};
use fanfare::{AgentError, BranchOutcome, Fanfare, Provider, RunRequest, Step};
use fanfare_mock::{MockConfig, MockServer};
use serde_json::{json, Value};

fn risk() -> OutputSchema {
    OutputSchema {
        name: "risk".into(),
        schema: json!({
            "type": "object",
            "properties": {
                "risk": {"type": "string", "enum": ["low", "medium", "high"]},
                "findings": {"type": "array", "items": {"type": "string"}}
            },
            "required": ["risk", "findings"]
        }),
    }
}

async fn one_step(provider: Arc<dyn Provider>) -> fanfare::RunReport {
    let fanfare = Fanfare::builder(provider)
        .agent(AgentSpec::new("legal", "You review plans for legal risk."))
        .start()
        .await
        .unwrap();
    let mut request = RunRequest::fan_out("Plain text logs of user queries.", Vec::<String>::new());
    request.steps = vec![Step::agent("legal").schema(risk())];
    let report = fanfare.run(request).await.unwrap();
    fanfare.shutdown().await;
    report
}

fn shaped(report: &fanfare::RunReport) -> Value {
    let out = report.branches[0]
        .outcome
        .output()
        .unwrap_or_else(|| panic!("{}", report.render()));
    serde_json::from_str(&out.text).unwrap()
}

#[tokio::test]
async fn both_wire_formats_ask_for_the_schema_and_the_answer_has_its_shape() {
    let mock = MockServer::start(MockConfig {
        latency: Duration::from_millis(2),
        ..MockConfig::default()
    })
    .await
    .unwrap();
    let openai = || {
        let mut c = OpenAiConfig::new(None);
        c.base_url = format!("{}/v1", mock.url());
        OpenAiProvider::new(c).unwrap()
    };
    let anthropic = || {
        let mut c = AnthropicConfig::new(ApiKey::new("k"));
        c.base_url = mock.url();
        AnthropicProvider::new(c).unwrap()
    };
    let providers: Vec<(&str, Arc<dyn Provider>)> = vec![
        ("openai", Arc::new(openai())),
        ("openai streamed", Arc::new(Streamed(openai()))),
        ("anthropic", Arc::new(anthropic())),
        ("anthropic streamed", Arc::new(Streamed(anthropic()))),
    ];
    for (name, provider) in providers {
        let report = one_step(provider).await;
        assert!(report.status.is_success(), "{name}: {}", report.render());
        // The mock answers in the asked shape only when the request carried the
        // schema (OpenAI's response_format, Anthropic's forced tool), and the
        // Anthropic answer is a tool call's input.
        let value = shaped(&report);
        assert_eq!(value["risk"], "low", "{name}: {value}");
        assert!(value["findings"].is_array(), "{name}: {value}");
        assert_eq!(report.branches[0].outcome.output().unwrap().attempts, 1);
    }
}

fn answer(text: &str) -> Completion {
    Completion {
        text: text.to_owned(),
        model: "scripted-1".into(),
        attempts: 1,
        ..Completion::default()
    }
}

#[tokio::test]
async fn an_answer_that_does_not_fit_gets_one_more_try_with_the_problems() {
    let scripted = Scripted::new();
    scripted.push_completion(answer("The risk is high, mostly from logs."));
    scripted.push_completion(answer(
        "```json\n{\"risk\": \"high\", \"findings\": [\"logs\"]}\n```",
    ));
    let report = one_step(Arc::new(scripted.clone())).await;
    assert!(report.status.is_success(), "{}", report.render());
    assert_eq!(
        shaped(&report),
        json!({"risk": "high", "findings": ["logs"]})
    );
    let out = report.branches[0].outcome.output().unwrap();
    assert_eq!(out.attempts, 2);
    let requests = scripted.requests();
    assert_eq!(requests.len(), 2);
    assert!(requests[0].schema.is_some(), "the schema is asked for");
    assert!(
        requests[0].system.contains("\"enum\""),
        "{}",
        requests[0].system
    );
    // The second try shows the model its answer and what was wrong with it.
    let second = &requests[1].messages;
    assert_eq!(second.len(), 3);
    assert_eq!(second[1].role, Role::Assistant);
    assert!(
        second[2].content.contains("the answer is not JSON"),
        "{}",
        second[2].content
    );
}

#[tokio::test]
async fn two_answers_that_do_not_fit_fail_the_branch_saying_why() {
    let scripted = Scripted::new();
    scripted.push_completion(answer("{\"risk\": \"extreme\", \"findings\": []}"));
    scripted.push_completion(answer("{\"risk\": \"extreme\", \"findings\": []}"));
    let report = one_step(Arc::new(scripted.clone())).await;
    assert!(!report.status.is_success());
    let BranchOutcome::Failed { error, .. } = &report.branches[0].outcome else {
        panic!("{:?}", report.branches[0].outcome)
    };
    let fanfare::run::BranchError::Agent(AgentError::InvalidOutput { problem, tries }) = error
    else {
        panic!("{error:?}")
    };
    assert_eq!(*tries, 2);
    assert!(problem.contains("at /risk"), "{problem}");
    assert_eq!(scripted.requests().len(), 2);
}

#[tokio::test]
async fn shaped_answers_meet_at_a_json_merge() {
    let scripted = Scripted::answering(|request| {
        let risk = if request.agent == "legal" {
            "high"
        } else {
            "medium"
        };
        answer(&format!(
            "{{\"risk\": \"{risk}\", \"findings\": [\"{}\"]}}",
            request.agent
        ))
    });
    let fanfare = Fanfare::builder(Arc::new(scripted.clone()))
        .agent(AgentSpec::new("legal", "Legal."))
        .agent(AgentSpec::new("security", "Security."))
        .start()
        .await
        .unwrap();
    let request = |on_conflict: &str| {
        let mut request =
            RunRequest::fan_out("t", Vec::<String>::new()).merge(fanfare::MergeStrategy::llm());
        request.steps = vec![
            Step::agent("legal").schema(risk()),
            Step::agent("security").schema(risk()),
            Step::code(
                "json-merge",
                json!({"reduce": {"findings": "append"}, "on_conflict": on_conflict}),
            )
            .after([0, 1]),
        ];
        request
    };
    // A two-way tie has no majority: the merge step fails and names both sides.
    let report = fanfare.run(request("vote")).await.unwrap();
    let error = report.branches[2].error.as_deref().unwrap_or_default();
    assert!(
        error.contains(r#"legal says "high"; security says "medium""#),
        "{}",
        report.render()
    );
    // Resolved by a rule: the LLM merge is told about the conflict all the same.
    let report = fanfare.run(request("prefer:security")).await.unwrap();
    assert!(report.status.is_success(), "{}", report.render());
    let merged: Value =
        serde_json::from_str(&report.branches[2].outcome.output().unwrap().text).unwrap();
    assert_eq!(
        merged,
        json!({"risk": "medium", "findings": ["legal", "security"]})
    );
    let merge_prompt = scripted
        .requests()
        .into_iter()
        .rfind(|r| r.agent == "synthesiser")
        .unwrap()
        .messages[0]
        .content
        .clone();
    assert!(
        merge_prompt.contains("Conflicts between the steps")
            && merge_prompt.contains(r#"`risk`: legal says "high"; security says "medium" (resolved upstream: preferred `security`)"#),
        "{merge_prompt}"
    );
    fanfare.shutdown().await;
}

#[tokio::test]
async fn the_simulated_provider_answers_in_the_asked_shape() {
    use fanfare::provider::{SimProfile, SimProvider};
    let report = one_step(Arc::new(SimProvider::with_profile(SimProfile::instant()))).await;
    assert!(report.status.is_success(), "{}", report.render());
    let value = shaped(&report);
    assert!(
        ["low", "medium", "high"].contains(&value["risk"].as_str().unwrap()),
        "{value}"
    );
    assert!(value["findings"][0].is_string(), "{value}");
}
