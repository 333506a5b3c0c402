//! What the CLI says about the model that answered.

use super::{fanfare, repo, TASK};

/// `fanfare run` against a mock that answers as `answer_model`, with `--model`.
fn run_against(answer_model: &str, model: Option<&str>) -> String {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let mock = rt
        .block_on(fanfare_mock::MockServer::start(fanfare_mock::MockConfig {
            latency: std::time::Duration::from_millis(1),
            answer_model: Some(answer_model.to_owned()),
            ..Default::default()
        }))
        .unwrap();
    let mut args = vec!["run", "--provider", "openai", "--only", "legal"];
    if let Some(m) = model {
        args.extend(["--model", m]);
    }
    let url = format!("{}/v1", mock.url());
    args.extend(["--base-url", &url, TASK]);
    let out = fanfare(&args, repo());
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(out.status.success(), "{stderr}");
    stderr
}

#[test]
fn a_server_answering_as_another_model_than_the_banner_named_is_said() {
    // Regression: the banner named the default model (gpt-4o-mini) while a local
    // server answered as the one it had loaded, and nothing said so.
    let stderr = run_against("smollm2-135m", None);
    assert!(
        stderr.contains("the server answered as `smollm2-135m`")
            && stderr.contains("`gpt-4o-mini`"),
        "{stderr}"
    );
    let stderr = run_against("smollm2-135m", Some("smollm2-135m"));
    assert!(!stderr.contains("answered as"), "{stderr}");
}
