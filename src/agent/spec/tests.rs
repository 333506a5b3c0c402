use super::*;

use crate::agent::{Agent as _, AgentOutput};

fn parse(text: &str) -> Result<AgentSpec, SpecError> {
    AgentSpec::parse(Path::new("specs/x.toml"), text, |_| {
        Ok("You are X.".to_owned())
    })
}

#[test]
fn missing_name_names_file_and_field() {
    let e = parse("prompt_file = \"x.md\"\n").unwrap_err().to_string();
    assert!(e.starts_with("specs/x.toml"), "{e}");
    assert!(e.contains("missing field `name`"), "{e}");
}

#[test]
fn unknown_field_is_an_error_with_line() {
    let e = parse("name = \"x\"\nprompt_file = \"x.md\"\nmax_token = 3\n")
        .unwrap_err()
        .to_string();
    assert!(e.contains("specs/x.toml:3:1"), "{e}");
    assert!(e.contains("max_token"), "{e}");
}

#[test]
fn wrong_type_names_line() {
    let e = parse("name = \"x\"\nprompt_file = \"x.md\"\nmax_tokens = \"lots\"\n")
        .unwrap_err()
        .to_string();
    assert!(e.contains("specs/x.toml:3:"), "{e}");
}

#[test]
fn bad_temperature_names_field() {
    let e = parse("name = \"x\"\nprompt = \"p\"\ntemperature = 9.0\n")
        .unwrap_err()
        .to_string();
    assert_eq!(
        e,
        "specs/x.toml: field `temperature`: must be between 0 and 2"
    );
}

#[test]
fn bad_fault_names_the_fault() {
    let e = parse("name = \"x\"\nprompt = \"p\"\n[faults]\npanic = { probability = 3.0 }\n")
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("field `faults`: faults.panic: probability 3 is not between 0 and 1"),
        "{e}"
    );
}

#[test]
fn regression_names_that_cannot_be_selected_are_refused() {
    for name in ["a,b", "a b", "", "x/y"] {
        let e = parse(&format!("name = {name:?}\nprompt = \"p\"\n"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("field `name`"), "{name:?}: {e}");
    }
    assert!(parse("name = \"legal-2.v1_x\"\nprompt = \"p\"\n").is_ok());
}

#[test]
fn regression_a_prompt_file_outside_the_spec_directory_is_refused() {
    let top = tempfile_dir("outside");
    let specs = top.join("specs");
    std::fs::create_dir_all(&specs).unwrap();
    std::fs::write(top.join("secret.md"), "not for the model").unwrap();
    std::fs::write(specs.join("inside.md"), "You are X.").unwrap();
    let spec = specs.join("x.toml");
    std::fs::write(&spec, "name = \"x\"\nprompt_file = \"../secret.md\"\n").unwrap();
    let e = AgentSpec::load(&spec).unwrap_err().to_string();
    assert!(
        e.contains("field `prompt_file`") && e.contains("outside"),
        "{e}"
    );
    let allowed = LoadOptions {
        allow_prompts_outside: true,
    };
    assert_eq!(
        AgentSpec::load_with(&spec, allowed).unwrap().prompt,
        "not for the model"
    );
    std::fs::write(&spec, "name = \"x\"\nprompt_file = \"inside.md\"\n").unwrap();
    assert_eq!(AgentSpec::load(&spec).unwrap().prompt, "You are X.");
    std::fs::remove_dir_all(&top).unwrap();
}

fn tempfile_dir(tag: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("fanfare-spec-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    dir
}

#[test]
fn good_spec_parses_with_defaults() {
    let s = parse("name = \"x\"\nprompt_file = \"x.md\"\n").unwrap();
    assert_eq!(
        (s.max_tokens, s.order, s.prompt.as_str()),
        (512, 100, "You are X.")
    );
}

#[test]
fn an_answer_the_model_stopped_at_max_tokens_is_flagged_as_cut() {
    // Nothing said an answer had been cut short by `max_tokens`.
    let completion = |stop: &str| crate::provider::Completion {
        stop_reason: Some(stop.to_owned()),
        text: "an answer that".to_owned(),
        ..crate::provider::Completion::default()
    };
    for (stop, cut) in [
        ("max_tokens", true),
        ("length", true),
        ("end_turn", false),
        ("stop", false),
    ] {
        assert_eq!(AgentOutput::from(completion(stop)).truncated, cut, "{stop}");
    }
}

#[test]
fn a_spec_names_its_tools_and_bounds_its_turns() {
    let spec = parse(
        "name = \"x\"\nprompt_file = \"x.md\"\ntools = [\"add\", \"clock\"]\nmax_turns = 6\n",
    )
    .unwrap();
    assert_eq!(
        (spec.tools.as_slice(), spec.max_turns),
        (&["add".to_owned(), "clock".to_owned()][..], 6)
    );
    assert_eq!(
        parse("name = \"x\"\nprompt_file = \"x.md\"\n")
            .unwrap()
            .max_turns,
        4
    );
    let e = parse("name = \"x\"\nprompt_file = \"x.md\"\nmax_turns = 0\n")
        .unwrap_err()
        .to_string();
    assert!(e.contains("max_turns"), "{e}");
}

#[test]
fn a_specs_tool_choice_is_auto_required_none_or_a_tool_it_names() {
    use crate::provider::ToolChoice;
    let choice = |extra: &str| {
        parse(&format!(
            "name = \"x\"\nprompt_file = \"x.md\"\ntools = [\"add\", \"fs.*\"]\n{extra}"
        ))
        .map(|s| s.tool_choice)
    };
    assert_eq!(choice("").unwrap(), ToolChoice::Auto);
    assert_eq!(
        choice("tool_choice = \"required\"\n").unwrap(),
        ToolChoice::Required
    );
    assert_eq!(
        choice("tool_choice = \"none\"\n").unwrap(),
        ToolChoice::Never
    );
    assert_eq!(
        choice("tool_choice = \"add\"\n").unwrap(),
        ToolChoice::Tool("add".into())
    );
    // A server's tool, as the model sees it.
    assert_eq!(
        choice("tool_choice = \"fs.read_file\"\n").unwrap(),
        ToolChoice::Tool("fs__read_file".into())
    );
    let e = choice("tool_choice = \"clock\"\n").unwrap_err().to_string();
    assert!(e.contains("tool_choice"), "{e}");
}

#[test]
fn an_agent_that_calls_tools_has_every_turn_reserved_by_a_budget() {
    // A loop of `max_turns` calls was reserved as one call: a budget could be spent
    // several times over before it was settled.
    let task = crate::agent::task::test_task("the plan");
    let mut spec = AgentSpec::new("calc", "You add.");
    spec.max_tokens = 100;
    let one = spec.call_estimate(&task).unwrap();
    spec.tools = vec!["add".into()];
    spec.max_turns = 3;
    let three = spec.call_estimate(&task).unwrap();
    assert_eq!(three.max_output_tokens, 3 * one.max_output_tokens);
    assert_eq!(three.input_tokens, 3 * one.input_tokens);
}

#[test]
fn regression_a_specs_fingerprint_covers_its_tools_and_approval() {
    // A worker whose spec offered other tools, or needed no approval, was taken as
    // the same specialist by a cluster's orchestrator.
    let plain = AgentSpec::new("a", "p");
    let mut tooled = plain.clone();
    tooled.tools = vec!["fs.*".into()];
    let mut other_tools = tooled.clone();
    other_tools.tools = vec!["web.*".into()];
    let mut approved = tooled.clone();
    approved.needs_approval = true;
    let mut longer = tooled.clone();
    longer.max_turns += 1;
    let prints: std::collections::HashSet<String> =
        [&plain, &tooled, &other_tools, &approved, &longer]
            .iter()
            .map(|s| s.fingerprint())
            .collect();
    assert_eq!(prints.len(), 5);
    // A spec without tools keeps the digest it had (max_turns does not matter).
    let mut idle = plain.clone();
    idle.max_turns += 1;
    assert_eq!(idle.fingerprint(), plain.fingerprint());
}
