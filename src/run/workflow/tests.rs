//! The workflow loader: what it accepts, and each mistake it names.

use std::path::Path;

use super::*;

fn parse(text: &str) -> Result<Workflow, WorkflowError> {
    Workflow::parse(Path::new("flows/w.toml"), text)
}

const CHAINS: &str = r#"
name = "chains"
merge = "none"

[[steps]]
name = "e"
agent = "join"
after = ["b", "d"]
input = "{{step.b}} + {{step.d}}"

[[steps]]
name = "a"
agent = "x"

[[steps]]
name = "b"
agent = "slow"
after = ["a"]

[[steps]]
name = "c"
agent = "x"

[[steps]]
name = "d"
agent = "x"
after = ["c"]
"#;

#[test]
fn steps_are_ordered_after_what_they_wait_for_and_compiled_into_a_request() {
    let w = parse(CHAINS).unwrap();
    let order: Vec<&str> = w.steps.iter().map(|s| s.name.as_str()).collect();
    assert_eq!(order, ["a", "b", "c", "d", "e"]);
    assert_eq!(w.levels(), [vec!["a", "c"], vec!["b", "d"], vec!["e"]]);
    let (path, _) = w.critical_path(|s| if s.name == "b" { 10.0 } else { 1.0 });
    assert_eq!(path, ["a", "b", "e"]);
    let r = w.request("task", None).unwrap();
    assert_eq!(r.steps[4].depends_on, [1, 3]);
    assert!(r.merge.is_none());
    assert_eq!(w.agents(), ["x", "slow", "join"]);
}

#[test]
fn each_mistake_names_the_file_the_line_and_the_step() {
    let table: &[(&str, &str)] = &[
        (
            "name = \"w\"\n[[steps]]\nname = \"a\"\nagent = \"x\"\nafter = [\"b\"]\n[[steps]]\nname = \"b\"\nagent = \"x\"\nafter = [\"a\"]\n",
            "flows/w.toml:2: step `a`: a cycle: a → b → a",
        ),
        (
            "name = \"w\"\n[[steps]]\nname = \"a\"\nagent = \"x\"\nafter = [\"nope\"]\n",
            "flows/w.toml:2: step `a`: `after` names `nope`, which is no step here (steps: a)",
        ),
        // Regression (sixth probe): a map over an unknown step was blamed on `after`.
        (
            "name = \"w\"\n[[steps]]\nname = \"a\"\nagent = \"x\"\nmap = { over = \"nope\" }\n",
            "flows/w.toml:2: step `a`: `map.over` names `nope`, which is no step here (steps: a)",
        ),
        (
            "name = \"w\"\n[[steps]]\nname = \"a\"\nagent = \"x\"\n[[steps]]\nname = \"b\"\nagent = \"x\"\ninput = \"{{step.a}}\"\n",
            "flows/w.toml:5: step `b`: its input uses {{step.a}}, but `a` is not upstream of it (add it to `after`)",
        ),
        (
            "name = \"w\"\n[[steps]]\nname = \"a\"\nagent = \"x\"\n[[steps]]\nname = \"a\"\nagent = \"y\"\n",
            "flows/w.toml:5: step `a`: the name is also used on line 2",
        ),
        (
            "name = \"w\"\n[[steps]]\nname = \"a\"\nagent = \"x\"\ninput = \"{{item}}\"\n",
            "flows/w.toml:2: step `a`: its input uses {{item}}, but it has no `map`",
        ),
        (
            "name = \"w\"\n[[steps]]\nname = \"a\"\nagent = \"x\"\ncode = \"concat\"\n",
            "flows/w.toml:2: step `a`: field `agent`: give `agent` or `code`, exactly one",
        ),
        (
            "name = \"w\"\n[[steps]]\nname = \"a\"\nagnet = \"x\"\n",
            "flows/w.toml:4: unknown field `agnet`",
        ),
        (
            "name = \"w\"\n[[steps]]\nname = \"a\"\nagent = \"x\"\ntimeout = \"soon\"\n",
            "flows/w.toml:2: step `a`: field `timeout`",
        ),
        (
            "name = \"w\"\n[[steps]]\nname = \"a\"\nagent = \"x\"\nschema = { type = \"array\" }\n",
            "flows/w.toml:2: step `a`: field `schema`: must describe an object",
        ),
        (
            "name = \"w\"\n[[steps]]\nname = \"a\"\ncode = \"concat\"\nschema = { type = \"object\" }\n",
            "flows/w.toml:2: step `a`: field `schema`: only an agent step",
        ),
        (
            "name = \"w\"\n[[steps]]\nname = \"a\"\nagent = \"x\"\nmap = { over = \"items\", path = \"/x\" }\ninput = \"{{item}}\"\n",
            "flows/w.toml:2: step `a`: field `map.path`: is for a map over a step's output",
        ),
        (
            "name = \"w\"\n[[steps]]\nname = \"a\"\nagent = \"x\"\n[[steps]]\nname = \"b\"\nagent = \"x\"\nafter = [\"a\"]\nmap = { over = \"a\", path = \"items\" }\n",
            "flows/w.toml:5: step `b`: field `map.path`: `items` is not a JSON pointer",
        ),
        // Regression: a json-merge option naming no input failed only after the
        // model calls it waited for had been paid.
        (
            "name = \"w\"\n[[steps]]\nname = \"a\"\nagent = \"x\"\n[[steps]]\nname = \"j\"\ncode = \"json-merge\"\nafter = [\"a\"]\noptions = { on_conflict = \"prefer:zzz\" }\n",
            "flows/w.toml:5: step `j`: field `options`: option `on_conflict`: `prefer:zzz`: `zzz` is not one of this step's inputs (a)",
        ),
        (
            "name = \"w\"\n[[steps]]\nname = \"j\"\ncode = \"json-merge\"\noptions = { reduce = { k = \"sum\" } }\n",
            "flows/w.toml:2: step `j`: field `options`: option `reduce`: `k`: use append, union or keep-one",
        ),
    ];
    for (text, want) in table {
        let e = parse(text).unwrap_err().to_string();
        assert!(e.starts_with(want), "\n got: {e}\nwant: {want}");
    }
    // A step that waits for a cycle can never run, and says which.
    let e = parse("name = \"w\"\n[[steps]]\nname = \"late\"\nagent = \"x\"\nafter = [\"a\"]\n[[steps]]\nname = \"a\"\nagent = \"x\"\nafter = [\"b\"]\n[[steps]]\nname = \"b\"\nagent = \"x\"\nafter = [\"a\"]\n")
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("step `late`: it can never run: it waits for the cycle through"),
        "{e}"
    );
}

#[test]
fn maps_over_a_step_or_the_given_items() {
    let w = parse(
        "name = \"s\"\nmerge = \"none\"\n[[steps]]\nname = \"each\"\nagent = \"sum\"\nmap = { over = \"items\", concurrency = 3, policy = \"partial:1\" }\ninput = \"{{item}}\"\n[[steps]]\nname = \"all\"\ncode = \"concat\"\nafter = [\"each\"]\n",
    )
    .unwrap();
    let e = w.request("t", None).unwrap_err().to_string();
    assert!(
        e.contains("step `each`: it maps over the run's items (`--each` on the command line"),
        "{e}"
    );
    let r = w
        .request("t", Some(vec!["d1".into(), "d2".into()]))
        .unwrap();
    let map = r.steps[0].map.as_ref().unwrap();
    assert_eq!(
        (map.concurrency, map.policy),
        (3, Policy::TolerantPartial { quorum: 1 })
    );
    assert_eq!(map.over, MapSource::Items(vec!["d1".into(), "d2".into()]));
    // Over a step: it is waited for even when `after` does not say so.
    let w = parse("name = \"m\"\n[[steps]]\nname = \"list\"\nagent = \"x\"\n[[steps]]\nname = \"each\"\nagent = \"x\"\nmap = { over = \"list\" }\n").unwrap();
    assert_eq!(w.steps[1].after, ["list"]);
    let r = w.request("t", None).unwrap();
    assert_eq!(r.steps[1].map.as_ref().unwrap().over, MapSource::Step(0));
    // With a path: the list inside the step's JSON.
    let w = parse("name = \"m\"\n[[steps]]\nname = \"list\"\nagent = \"x\"\n[[steps]]\nname = \"each\"\nagent = \"x\"\nmap = { over = \"list\", path = \"/items\" }\n").unwrap();
    let r = w.request("t", None).unwrap();
    assert_eq!(
        r.steps[1].map.as_ref().unwrap().over,
        MapSource::Within {
            step: 0,
            path: "/items".into()
        }
    );
    assert!(
        w.request("t", Some(vec!["x".into()])).is_err(),
        "items nobody maps over"
    );
}

#[test]
fn a_schema_is_carried_to_the_step_under_the_step_name() {
    let w = parse(
        "name = \"s\"\n[[steps]]\nname = \"legal view\"\nagent = \"legal\"\nschema = { type = \"object\", properties = { risk = { type = \"string\" } }, required = [\"risk\"] }\n",
    )
    .unwrap();
    let request = w.request("t", None).unwrap();
    let schema = request.steps[0].schema.as_deref().unwrap();
    assert_eq!(schema.name, "legal_view");
    assert_eq!(schema.schema["required"], serde_json::json!(["risk"]));
}

/// A chain of `n` steps, each after the one before and reading its output.
fn chain(n: usize) -> String {
    let mut text = "name = \"chain\"\nmerge = \"none\"\n".to_owned();
    for i in 0..n {
        text.push_str(&format!("[[steps]]\nname = \"s{i}\"\nagent = \"x\"\n"));
        if i > 0 {
            text.push_str(&format!(
                "after = [\"s{}\"]\ninput = \"{{{{step.s{}}}}}\"\n",
                i - 1,
                i - 1
            ));
        }
    }
    text
}

#[test]
fn regression_a_workflow_is_bounded_in_steps_and_a_long_chain_loads() {
    // A 50,000-step file took 11 s to `show` (quadratic checks and ends); now the
    // checks are linear for direct references and a file holds at most MAX_STEPS.
    let e = parse(&chain(MAX_STEPS + 1)).unwrap_err();
    assert!(
        matches!(*e.problem, WorkflowProblem::TooManySteps { steps, max } if steps == MAX_STEPS + 1 && max == MAX_STEPS),
        "{e}"
    );
    let w = parse(&chain(MAX_STEPS)).unwrap();
    assert_eq!(w.steps.len(), MAX_STEPS);
    assert_eq!(w.ends(), [format!("s{}", MAX_STEPS - 1).as_str()]);
    // A reference that is not upstream is still refused.
    let mut bad = chain(3);
    bad.push_str(
        "[[steps]]\nname = \"t\"\nagent = \"x\"\nafter = [\"s0\"]\ninput = \"{{step.s2}}\"\n",
    );
    assert!(matches!(
        *parse(&bad).unwrap_err().problem,
        WorkflowProblem::NotUpstream(ref s) if s == "s2"
    ));
}

#[test]
fn ends_are_the_steps_nothing_depends_on_in_order() {
    let w = parse(CHAINS).unwrap();
    assert_eq!(w.ends(), ["e"]);
}
