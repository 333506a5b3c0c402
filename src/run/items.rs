//! A map step's items, read from an upstream step's output.

use crate::agent::UpstreamOutput;

/// A map step's items from an upstream output: its items if it was a map; with a
/// `path`, the JSON array there; else a JSON array (strings as they are, anything
/// else as JSON), else its non-empty lines. A JSON object without a `path` is an
/// error (its lines would be pieces of the object), as is a `path` that does not
/// lead to an array.
pub(crate) fn items_of(
    upstream: &UpstreamOutput,
    path: Option<&str>,
) -> Result<Vec<String>, String> {
    use serde_json::Value;
    if !upstream.items.is_empty() && path.is_none() {
        return Ok(upstream.items.clone());
    }
    // A fenced answer (```json … ```) is JSON too.
    let json = super::code::unfenced(&upstream.text);
    let strings = |values: Vec<Value>| {
        values
            .into_iter()
            .map(|v| match v {
                Value::String(s) => s,
                other => other.to_string(),
            })
            .collect()
    };
    match (serde_json::from_str::<Value>(json), path) {
        (Ok(mut value), Some(path)) => match value.pointer_mut(path).map(Value::take) {
            Some(Value::Array(values)) => Ok(strings(values)),
            Some(other) => Err(format!(
                "has {} at `{path}`, not a list",
                kind_of(&other)
            )),
            None => Err(format!("has nothing at `{path}`")),
        },
        (Err(e), Some(path)) => Err(format!(
            "is not JSON ({e}), so it has no list at `{path}`"
        )),
        (Ok(Value::Array(values)), None) => Ok(strings(values)),
        (Ok(other @ Value::Object(_)), None) => Err(format!(
            "is {}, not a list: give the map a `path` to the list inside it (e.g. path = \"/items\")",
            kind_of(&other)
        )),
        _ => Ok(upstream
            .text
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty())
            .map(str::to_owned)
            .collect()),
    }
}

/// What a JSON value is, in a few words.
fn kind_of(value: &serde_json::Value) -> &'static str {
    match value {
        serde_json::Value::Null => "null",
        serde_json::Value::Bool(_) => "a boolean",
        serde_json::Value::Number(_) => "a number",
        serde_json::Value::String(_) => "a string",
        serde_json::Value::Array(_) => "a list",
        serde_json::Value::Object(_) => "a JSON object",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn output(text: &str) -> UpstreamOutput {
        UpstreamOutput {
            agent: "extract".to_owned(),
            text: text.to_owned(),
            items: Vec::new(),
        }
    }

    #[test]
    fn items_are_read_from_a_list_a_path_or_lines_and_an_object_without_a_path_is_refused() {
        // (output, path) → items, or the start of the problem.
        type Want = Result<&'static [&'static str], &'static str>;
        let cases: &[(&str, Option<&str>, Want)] = &[
            (r#"["a", "b"]"#, None, Ok(&["a", "b"])),
            (r#"[1, {"k": 2}]"#, None, Ok(&["1", r#"{"k":2}"#])),
            ("```json\n[\"a\"]\n```", None, Ok(&["a"])),
            ("first\n\n second \n", None, Ok(&["first", "second"])),
            // Regression: an object was mapped over line by line, its braces included.
            (
                r#"{"items": ["a"]}"#,
                None,
                Err("is a JSON object, not a list: give the map a `path`"),
            ),
            (r#"{"items": ["a", "b"]}"#, Some("/items"), Ok(&["a", "b"])),
            (
                r#"{"data": {"rows": ["x"]}}"#,
                Some("/data/rows"),
                Ok(&["x"]),
            ),
            (
                r#"{"items": "a"}"#,
                Some("/items"),
                Err("has a string at `/items`, not a list"),
            ),
            (
                r#"{"other": []}"#,
                Some("/items"),
                Err("has nothing at `/items`"),
            ),
            ("plain text", Some("/items"), Err("is not JSON (")),
        ];
        for (text, path, want) in cases {
            let got = items_of(&output(text), *path);
            match (got, want) {
                (Ok(items), Ok(want)) => assert_eq!(&items, want, "{text}"),
                (Err(problem), Err(want)) => {
                    assert!(problem.starts_with(want), "{text}: {problem}")
                }
                (got, want) => panic!("{text} {path:?}: got {got:?}, want {want:?}"),
            }
        }
    }

    #[test]
    fn a_maps_items_are_taken_as_they_are_unless_a_path_is_given() {
        let mut upstream = output("1\n2");
        upstream.items = vec!["one".to_owned(), "two".to_owned()];
        assert_eq!(items_of(&upstream, None).unwrap(), ["one", "two"]);
    }
}
