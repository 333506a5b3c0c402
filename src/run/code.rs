//! Code steps: deterministic Rust functions registered by name, run on the blocking
//! pool (so a CPU-heavy one never stalls the branches' I/O).
//!
//! Built in:
//! - `concat`: the upstream outputs, one section per step (`separator` option);
//! - `json-merge`: merges upstream JSON objects key by key with a reducer per key
//!   (`reduce = { KEY = "append" | "union" | "keep-one" }`, default `keep-one`). Two
//!   steps giving different values to a `keep-one` key is a **conflict**: reported with
//!   both values and which step gave each, never resolved silently; `on_conflict`
//!   decides what the merged value is: `"fail"` (the default: the step fails, naming
//!   the conflicts), `"vote"` (the value most steps gave; a tie fails), or
//!   `"prefer:STEP"` (that step's value);
//! - `vote`: the answer most upstream steps gave (trimmed, case-insensitive); a tie
//!   fails;
//! - `select-best`: the upstream output with the most distinct words.

use std::collections::BTreeMap;
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use serde_json::{Map as JsonMap, Value};

use crate::agent::UpstreamOutput;

/// What a code function gets.
#[derive(Debug)]
pub struct CodeInput<'a> {
    /// The run's input.
    pub task: &'a str,
    /// The outputs of the steps it depends on, in dependency order, each under its
    /// step's name.
    pub upstream: &'a [UpstreamOutput],
    /// The step's options.
    pub options: &'a Value,
}

/// What a code function made.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CodeOutput {
    /// Its output.
    pub text: String,
    /// Disagreements it found between upstream steps.
    pub conflicts: Vec<Conflict>,
}

/// Two or more upstream steps gave different values for one key.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Conflict {
    /// The key.
    pub key: String,
    /// Each step's value, in dependency order.
    pub values: Vec<(String, Value)>,
    /// How it was resolved (`None`: it was not).
    pub resolved: Option<String>,
}

impl std::fmt::Display for Conflict {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let values: Vec<String> = self
            .values
            .iter()
            .map(|(step, v)| format!("{step} says {v}"))
            .collect();
        write!(f, "`{}`: {}", self.key, values.join("; "))
    }
}

/// Why a code function failed.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error, Serialize, Deserialize)]
#[non_exhaustive]
pub enum CodeError {
    /// An option it needs is missing or wrong.
    #[error("option `{option}`: {problem}")]
    BadOption {
        /// The option.
        option: String,
        /// What is wrong.
        problem: String,
    },
    /// An upstream output is not what it needs.
    #[error("the output of `{step}` {problem}")]
    BadInput {
        /// The upstream step.
        step: String,
        /// What is wrong.
        problem: String,
    },
    /// Conflicts it was told not to resolve.
    #[error("{} conflict(s): {}", .0.len(), .0.iter().map(|c| c.to_string()).collect::<Vec<_>>().join(" | "))]
    Conflicts(Vec<Conflict>),
    /// A vote without a majority.
    #[error("no majority: {0}")]
    Tie(String),
    /// The function panicked.
    #[error("the code function panicked: {0}")]
    Panicked(String),
    /// Its inputs or its output came to more than a branch may carry.
    #[error("{what} came to {bytes} bytes, more than the limit of {limit} on one step's text")]
    TooLarge {
        /// `its inputs` or `its output`.
        what: String,
        /// The size.
        bytes: usize,
        /// The limit.
        limit: usize,
    },
}

/// A code function: deterministic, synchronous, run off the async workers.
pub type CodeFn = Arc<dyn Fn(&CodeInput<'_>) -> Result<CodeOutput, CodeError> + Send + Sync>;

/// Code functions by name; starts with the built-ins.
#[derive(Clone)]
pub struct CodeRegistry {
    functions: BTreeMap<String, CodeFn>,
}

impl std::fmt::Debug for CodeRegistry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list().entries(self.functions.keys()).finish()
    }
}

impl Default for CodeRegistry {
    fn default() -> Self {
        let mut r = Self {
            functions: BTreeMap::new(),
        };
        r.register("concat", concat);
        r.register("json-merge", json_merge);
        r.register("vote", vote);
        r.register("select-best", select_best);
        r
    }
}

impl CodeRegistry {
    /// Adds (or replaces) `name`.
    pub fn register(
        &mut self,
        name: impl Into<String>,
        f: impl Fn(&CodeInput<'_>) -> Result<CodeOutput, CodeError> + Send + Sync + 'static,
    ) {
        self.functions.insert(name.into(), Arc::new(f));
    }

    /// The function registered as `name`.
    pub fn get(&self, name: &str) -> Option<CodeFn> {
        self.functions.get(name).cloned()
    }

    /// The names, sorted.
    pub fn names(&self) -> Vec<String> {
        self.functions.keys().cloned().collect()
    }
}

/// Checks the options of the built-in `function` (taking the outputs of the steps
/// `inputs`) before a run, so a typo fails at load rather than after the model calls
/// it waits for; a function that is not built in is not checked.
pub fn check_builtin_options(
    function: &str,
    options: &Value,
    inputs: &[String],
) -> Result<(), CodeError> {
    if function != "json-merge" {
        return Ok(());
    }
    reducers(options)?;
    if let OnConflict::Prefer(step) = on_conflict(options)? {
        if !inputs.contains(&step) {
            return Err(CodeError::BadOption {
                option: "on_conflict".to_owned(),
                problem: format!(
                    "`prefer:{step}`: `{step}` is not one of this step's inputs ({})",
                    inputs.join(", ")
                ),
            });
        }
    }
    Ok(())
}

fn text(text: String) -> Result<CodeOutput, CodeError> {
    Ok(CodeOutput {
        text,
        conflicts: Vec::new(),
    })
}

fn concat(input: &CodeInput<'_>) -> Result<CodeOutput, CodeError> {
    let separator = input
        .options
        .get("separator")
        .and_then(Value::as_str)
        .unwrap_or("\n\n");
    let parts: Vec<String> = input
        .upstream
        .iter()
        .map(|u| format!("## {}\n{}", u.agent, u.text.trim()))
        .collect();
    text(parts.join(separator))
}

/// `text` without a Markdown code fence around it (```json … ```), trimmed: how
/// models often wrap the JSON they are asked for.
pub(crate) fn unfenced(text: &str) -> &str {
    let t = text.trim();
    t.strip_prefix("```json")
        .or_else(|| t.strip_prefix("```"))
        .and_then(|t| t.strip_suffix("```"))
        .unwrap_or(t)
        .trim()
}

/// A JSON object in `u`'s output, possibly inside a ```json fence.
fn object(u: &UpstreamOutput) -> Result<JsonMap<String, Value>, CodeError> {
    match serde_json::from_str::<Value>(unfenced(&u.text)) {
        Ok(Value::Object(o)) => Ok(o),
        Ok(_) => Err(CodeError::BadInput {
            step: u.agent.clone(),
            problem: "is JSON but not an object".to_owned(),
        }),
        Err(e) => Err(CodeError::BadInput {
            step: u.agent.clone(),
            problem: format!("is not JSON: {e}"),
        }),
    }
}

/// How `json-merge` combines one key.
#[derive(Clone, Copy, PartialEq)]
enum Reducer {
    Append,
    Union,
    KeepOne,
}

fn reducers(options: &Value) -> Result<BTreeMap<String, Reducer>, CodeError> {
    let mut out = BTreeMap::new();
    let Some(reduce) = options.get("reduce") else {
        return Ok(out);
    };
    let bad = |problem: String| CodeError::BadOption {
        option: "reduce".to_owned(),
        problem,
    };
    let reduce = reduce
        .as_object()
        .ok_or_else(|| bad("must be a table of KEY = reducer".to_owned()))?;
    for (key, r) in reduce {
        let r = match r.as_str() {
            Some("append") => Reducer::Append,
            Some("union") => Reducer::Union,
            Some("keep-one") => Reducer::KeepOne,
            _ => return Err(bad(format!("`{key}`: use append, union or keep-one"))),
        };
        out.insert(key.clone(), r);
    }
    Ok(out)
}

/// How a `keep-one` conflict is settled.
enum OnConflict {
    Fail,
    Vote,
    Prefer(String),
}

fn on_conflict(options: &Value) -> Result<OnConflict, CodeError> {
    match options.get("on_conflict").and_then(Value::as_str) {
        None | Some("fail") => Ok(OnConflict::Fail),
        Some("vote") => Ok(OnConflict::Vote),
        Some(other) => match other.strip_prefix("prefer:") {
            Some(step) => Ok(OnConflict::Prefer(step.to_owned())),
            None => Err(CodeError::BadOption {
                option: "on_conflict".to_owned(),
                problem: format!("`{other}`: use fail, vote or prefer:STEP"),
            }),
        },
    }
}

fn as_list(v: &Value) -> Vec<Value> {
    match v {
        Value::Array(a) => a.clone(),
        other => vec![other.clone()],
    }
}

fn json_merge(input: &CodeInput<'_>) -> Result<CodeOutput, CodeError> {
    let reducers = reducers(input.options)?;
    let rule = on_conflict(input.options)?;
    // Key → each step's value, in dependency order.
    let mut by_key: BTreeMap<String, Vec<(String, Value)>> = BTreeMap::new();
    for u in input.upstream {
        for (key, value) in object(u)? {
            by_key
                .entry(key)
                .or_default()
                .push((u.agent.clone(), value));
        }
    }
    let mut merged = JsonMap::new();
    let mut conflicts = Vec::new();
    let mut unresolved = Vec::new();
    for (key, values) in by_key {
        let reducer = reducers.get(&key).copied().unwrap_or(Reducer::KeepOne);
        let value = match reducer {
            Reducer::Append => Value::Array(values.iter().flat_map(|(_, v)| as_list(v)).collect()),
            Reducer::Union => {
                let mut all: Vec<Value> = Vec::new();
                for v in values.iter().flat_map(|(_, v)| as_list(v)) {
                    if !all.contains(&v) {
                        all.push(v);
                    }
                }
                Value::Array(all)
            }
            Reducer::KeepOne => {
                let first = values[0].1.clone();
                if values.iter().all(|(_, v)| *v == first) {
                    first
                } else {
                    let mut conflict = Conflict {
                        key: key.clone(),
                        values: values.clone(),
                        resolved: None,
                    };
                    let chosen = match &rule {
                        OnConflict::Fail => None,
                        OnConflict::Prefer(step) => values
                            .iter()
                            .find(|(s, _)| s == step)
                            .map(|(_, v)| (v.clone(), format!("preferred `{step}`"))),
                        OnConflict::Vote => majority(&values)
                            .map(|(v, n)| (v, format!("vote, {n} of {}", values.len()))),
                    };
                    match chosen {
                        Some((v, how)) => {
                            conflict.resolved = Some(how);
                            conflicts.push(conflict);
                            v
                        }
                        None => {
                            unresolved.push(conflict);
                            continue;
                        }
                    }
                }
            }
        };
        merged.insert(key, value);
    }
    if !unresolved.is_empty() {
        return Err(CodeError::Conflicts(unresolved));
    }
    let text = serde_json::to_string_pretty(&Value::Object(merged)).unwrap_or_default();
    Ok(CodeOutput { text, conflicts })
}

/// The value given most often, and how often, if no other value was given as often.
fn majority(values: &[(String, Value)]) -> Option<(Value, usize)> {
    let mut counts: Vec<(Value, usize)> = Vec::new();
    for (_, v) in values {
        match counts.iter_mut().find(|(c, _)| c == v) {
            Some((_, n)) => *n += 1,
            None => counts.push((v.clone(), 1)),
        }
    }
    counts.sort_by_key(|(_, n)| std::cmp::Reverse(*n));
    match counts.as_slice() {
        [(v, n), rest @ ..] if rest.first().is_none_or(|(_, m)| m < n) => Some((v.clone(), *n)),
        _ => None,
    }
}

fn vote(input: &CodeInput<'_>) -> Result<CodeOutput, CodeError> {
    let values: Vec<(String, Value)> = input
        .upstream
        .iter()
        .map(|u| (u.agent.clone(), Value::String(u.text.trim().to_lowercase())))
        .collect();
    match majority(&values) {
        Some((_, n)) => {
            // Answer with the first step's own wording of the winning answer.
            let winner = input
                .upstream
                .iter()
                .zip(&values)
                .filter(|(_, (_, v))| values.iter().filter(|(_, w)| w == v).count() == n)
                .map(|(u, _)| u.text.trim().to_owned())
                .next()
                .unwrap_or_default();
            text(winner)
        }
        None => Err(CodeError::Tie(
            input
                .upstream
                .iter()
                .map(|u| format!("{}: {}", u.agent, u.text.trim()))
                .collect::<Vec<_>>()
                .join("; "),
        )),
    }
}

fn select_best(input: &CodeInput<'_>) -> Result<CodeOutput, CodeError> {
    let best = input.upstream.iter().max_by_key(|u| {
        let mut words: Vec<String> = u.text.split_whitespace().map(str::to_lowercase).collect();
        words.sort();
        words.dedup();
        words.len()
    });
    text(best.map(|u| u.text.clone()).unwrap_or_default())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn up(pairs: &[(&str, &str)]) -> Vec<UpstreamOutput> {
        pairs
            .iter()
            .map(|(a, t)| UpstreamOutput {
                agent: (*a).to_owned(),
                text: (*t).to_owned(),
                items: Vec::new(),
            })
            .collect()
    }

    fn run(f: &str, upstream: &[UpstreamOutput], options: Value) -> Result<CodeOutput, CodeError> {
        let r = CodeRegistry::default();
        let f = r.get(f).unwrap();
        f(&CodeInput {
            task: "t",
            upstream,
            options: &options,
        })
    }

    #[test]
    fn json_merge_reduces_each_key_and_reports_conflicts_with_provenance() {
        let upstream = up(&[
            ("legal", r#"{"risk": "high", "findings": ["logs"], "tags": ["pii"]}"#),
            ("security", "```json\n{\"risk\": \"medium\", \"findings\": [\"tls\"], \"tags\": [\"pii\", \"keys\"]}\n```"),
        ]);
        let options = json!({"reduce": {"findings": "append", "tags": "union"}});
        // Unresolved by default: the step fails, naming both sides.
        let e = run("json-merge", &upstream, options.clone()).unwrap_err();
        let CodeError::Conflicts(c) = &e else {
            panic!("{e}")
        };
        assert_eq!(c[0].key, "risk");
        assert_eq!(
            c[0].values,
            vec![
                ("legal".to_owned(), json!("high")),
                ("security".to_owned(), json!("medium"))
            ]
        );
        assert!(
            e.to_string()
                .contains("legal says \"high\"; security says \"medium\""),
            "{e}"
        );
        // Resolved by a declared rule: reported, with how.
        let mut o = options.clone();
        o["on_conflict"] = json!("prefer:security");
        let out = run("json-merge", &upstream, o).unwrap();
        let merged: Value = serde_json::from_str(&out.text).unwrap();
        assert_eq!(merged["risk"], "medium");
        assert_eq!(merged["findings"], json!(["logs", "tls"]));
        assert_eq!(merged["tags"], json!(["pii", "keys"]));
        assert_eq!(out.conflicts.len(), 1);
        assert_eq!(
            out.conflicts[0].resolved.as_deref(),
            Some("preferred `security`")
        );
    }

    #[test]
    fn votes_need_a_majority() {
        let three = up(&[("a", "Yes"), ("b", "no"), ("c", "yes ")]);
        assert_eq!(run("vote", &three, Value::Null).unwrap().text, "Yes");
        let tie = up(&[("a", "yes"), ("b", "no")]);
        assert!(matches!(
            run("vote", &tie, Value::Null),
            Err(CodeError::Tie(_))
        ));
        let mut o = json!({"on_conflict": "vote"});
        let split = up(&[
            ("a", r#"{"k": 1}"#),
            ("b", r#"{"k": 2}"#),
            ("c", r#"{"k": 2}"#),
        ]);
        let out = run("json-merge", &split, o.take()).unwrap();
        assert_eq!(serde_json::from_str::<Value>(&out.text).unwrap()["k"], 2);
    }

    #[test]
    fn concat_select_best_and_bad_inputs() {
        let two = up(&[("a", "one two"), ("b", "three four five")]);
        assert_eq!(
            run("concat", &two, Value::Null).unwrap().text,
            "## a\none two\n\n## b\nthree four five"
        );
        assert_eq!(
            run("select-best", &two, Value::Null).unwrap().text,
            "three four five"
        );
        let e = run("json-merge", &up(&[("a", "not json")]), Value::Null).unwrap_err();
        assert!(
            e.to_string().starts_with("the output of `a` is not JSON"),
            "{e}"
        );
        let e = run("json-merge", &two, json!({"reduce": {"k": "sum"}})).unwrap_err();
        assert!(
            e.to_string().contains("use append, union or keep-one"),
            "{e}"
        );
    }
}
