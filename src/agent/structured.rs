//! Structured answers: the JSON in a model's text, checked against a step's schema.
//!
//! Servers that enforce a schema (OpenAI's `response_format`, llama.cpp's grammar)
//! answer bare JSON; others wrap it in prose or a code fence, or ignore the schema.
//! [`check`] finds the JSON and validates it; the spec agent asks once more with the
//! problems when it fails.

use serde_json::Value;

use crate::provider::OutputSchema;

/// The most validation problems an error lists.
const SHOWN: usize = 3;

/// Why a schema cannot be used: it is not valid JSON Schema, or does not describe an
/// object (both wire formats take an object: Anthropic's tool input must be one).
pub fn usable(schema: &Value) -> Result<(), String> {
    if schema.get("type").and_then(Value::as_str) != Some("object") {
        return Err("must describe an object (`type = \"object\"`)".to_owned());
    }
    jsonschema::validator_for(schema)
        .map(|_| ())
        .map_err(|e| format!("is not a valid JSON schema: {e}"))
}

/// The JSON value in `text` if it satisfies `schema`, else what is wrong (the first
/// few problems, each with where in the answer it is).
pub fn check(schema: &OutputSchema, text: &str) -> Result<Value, String> {
    let value = extract(text).ok_or_else(|| {
        format!(
            "the answer is not JSON (it starts: {:?})",
            text.trim().chars().take(60).collect::<String>()
        )
    })?;
    let problems = problems(&schema.schema, &value, SHOWN + 1)
        .map_err(|e| format!("the schema `{}` is not valid: {e}", schema.name))?;
    if problems.is_empty() {
        return Ok(value);
    }
    let more = if problems.len() > SHOWN {
        "; and more"
    } else {
        ""
    };
    Err(format!(
        "the answer does not match the schema `{}`: {}{more}",
        schema.name,
        problems[..problems.len().min(SHOWN)].join("; ")
    ))
}

/// Up to `most` ways `value` fails `schema`, each with where in it (empty: it
/// fits), or why the schema cannot be used.
pub(crate) fn problems(schema: &Value, value: &Value, most: usize) -> Result<Vec<String>, String> {
    let validator = jsonschema::validator_for(schema).map_err(|e| e.to_string())?;
    Ok(validator
        .iter_errors(value)
        .take(most)
        .map(|e| {
            let at = e.instance_path().to_string();
            if at.is_empty() {
                e.to_string()
            } else {
                format!("at {at}: {e}")
            }
        })
        .collect())
}

/// The JSON in `text`: all of it, else the inside of a code fence, else from the
/// first `{` to the last `}`.
fn extract(text: &str) -> Option<Value> {
    let text = text.trim();
    if let Ok(v) = serde_json::from_str(text) {
        return Some(v);
    }
    if let Some(start) = text.find("```") {
        let body = &text[start + 3..];
        let body = body.strip_prefix("json").unwrap_or(body);
        if let Some(end) = body.find("```") {
            if let Ok(v) = serde_json::from_str(body[..end].trim()) {
                return Some(v);
            }
        }
    }
    let (start, end) = (text.find('{')?, text.rfind('}')?);
    (start < end)
        .then(|| serde_json::from_str(&text[start..=end]).ok())
        .flatten()
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

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

    #[test]
    fn finds_the_json_and_names_what_does_not_match() {
        let ok = json!({"risk": "high", "findings": ["logs"]});
        let cases: &[(&str, Result<Value, &str>)] = &[
            (r#"{"risk": "high", "findings": ["logs"]}"#, Ok(ok.clone())),
            (
                "Here you go:\n```json\n{\"risk\": \"high\", \"findings\": [\"logs\"]}\n```",
                Ok(ok.clone()),
            ),
            (
                "Sure! {\"risk\": \"high\", \"findings\": [\"logs\"]} Hope it helps.",
                Ok(ok),
            ),
            ("I think the risk is high.", Err("the answer is not JSON")),
            (
                r#"{"risk": "extreme", "findings": []}"#,
                Err(r#"at /risk: "extreme" is not one of"#),
            ),
            (
                r#"{"risk": "low"}"#,
                Err(r#""findings" is a required property"#),
            ),
            ("", Err("the answer is not JSON")),
        ];
        for (text, want) in cases {
            match (check(&risk(), text), want) {
                (Ok(v), Ok(w)) => assert_eq!(&v, w, "{text}"),
                (Err(e), Err(w)) => assert!(e.contains(w), "{text}: {e}"),
                (got, want) => panic!("{text}: got {got:?}, want {want:?}"),
            }
        }
    }

    #[test]
    fn a_schema_must_be_an_object_schema_and_valid() {
        assert!(usable(&risk().schema).is_ok());
        assert!(usable(&json!({"type": "array"}))
            .unwrap_err()
            .contains("must describe an object"));
        assert!(
            usable(&json!({"type": "object", "properties": {"a": {"type": 5}}}))
                .unwrap_err()
                .contains("not a valid JSON schema")
        );
    }
}
