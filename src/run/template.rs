//! [`Template`]: a step's input, built from the task and named upstream outputs.
//!
//! Placeholders are `{{task}}` (the run's input), `{{step.NAME}}` (the output of the
//! upstream step `NAME`), and, in a map step, `{{item}}` and `{{item_index}}` (the item
//! and its position, from 1). Anything else between `{{` and `}}` is an error at load,
//! as is an unclosed `{{`.

use serde::{Deserialize, Serialize};

/// One piece of a template.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Part {
    Text(String),
    Task,
    Item,
    ItemIndex,
    Step(String),
}

/// A parsed step input template; see the module docs.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Template {
    text: String,
    #[serde(skip)]
    parts: Vec<Part>,
}

/// What is wrong with a template.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum TemplateError {
    /// A `{{` with no `}}`.
    #[error("`{{{{` at byte {at} is never closed with `}}}}`")]
    Unclosed {
        /// Its byte offset.
        at: usize,
    },
    /// A placeholder that is none of `task`, `item`, `item_index`, `step.NAME`.
    #[error("unknown placeholder `{{{{{0}}}}}` (use {{{{task}}}}, {{{{step.NAME}}}}, {{{{item}}}} or {{{{item_index}}}})")]
    Unknown(String),
}

impl Template {
    /// Parses `text`.
    pub fn parse(text: &str) -> Result<Self, TemplateError> {
        let mut parts = Vec::new();
        let mut rest = text;
        let mut offset = 0;
        while let Some(open) = rest.find("{{") {
            if open > 0 {
                parts.push(Part::Text(rest[..open].to_owned()));
            }
            let after = &rest[open + 2..];
            let close = after
                .find("}}")
                .ok_or(TemplateError::Unclosed { at: offset + open })?;
            let name = after[..close].trim();
            parts.push(match name {
                "task" => Part::Task,
                "item" => Part::Item,
                "item_index" => Part::ItemIndex,
                other => match other.strip_prefix("step.") {
                    Some(step) if !step.is_empty() => Part::Step(step.to_owned()),
                    _ => return Err(TemplateError::Unknown(other.to_owned())),
                },
            });
            let consumed = open + 2 + close + 2;
            offset += consumed;
            rest = &rest[consumed..];
        }
        if !rest.is_empty() {
            parts.push(Part::Text(rest.to_owned()));
        }
        Ok(Self {
            text: text.to_owned(),
            parts,
        })
    }

    /// The text as written.
    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// The upstream steps it names, in order of appearance.
    pub fn steps(&self) -> impl Iterator<Item = &str> {
        self.parts.iter().filter_map(|p| match p {
            Part::Step(s) => Some(s.as_str()),
            _ => None,
        })
    }

    /// True if it uses `{{item}}` or `{{item_index}}`.
    pub fn uses_item(&self) -> bool {
        self.parts
            .iter()
            .any(|p| matches!(p, Part::Item | Part::ItemIndex))
    }

    /// Renders with the run's input, the item (its index from 0, and its text) and
    /// the upstream outputs by step name (a name with none renders empty).
    pub fn render(
        &self,
        task: &str,
        item: Option<(usize, &str)>,
        step: impl Fn(&str) -> Option<String>,
    ) -> String {
        self.render_within(task, item, step, usize::MAX)
            .unwrap_or_default()
    }

    /// [`Template::render`], refused (`Err` with the bytes it came to by then) once
    /// it would pass `limit` bytes: a template that names a large task or output many
    /// times must not build a prompt of a gigabyte.
    pub fn render_within(
        &self,
        task: &str,
        item: Option<(usize, &str)>,
        step: impl Fn(&str) -> Option<String>,
        limit: usize,
    ) -> Result<String, usize> {
        let mut out = String::new();
        for part in &self.parts {
            let piece: std::borrow::Cow<'_, str> = match part {
                Part::Text(t) => t.as_str().into(),
                Part::Task => task.into(),
                Part::Item => item.map(|(_, t)| t).unwrap_or_default().into(),
                Part::ItemIndex => match item {
                    Some((i, _)) => (i + 1).to_string().into(),
                    None => "".into(),
                },
                Part::Step(name) => step(name).unwrap_or_default().into(),
            };
            if out.len() + piece.len() > limit {
                return Err(out.len() + piece.len());
            }
            out.push_str(&piece);
        }
        Ok(out)
    }
}

#[cfg(test)]
mod render_tests {
    use super::*;

    #[test]
    fn regression_a_template_that_would_build_a_huge_prompt_is_refused() {
        // One template named a large task a thousand times: a 1 GB prompt.
        let t = Template::parse(&"{{task}} ".repeat(1_000)).unwrap();
        let task = "x".repeat(1_000);
        assert_eq!(
            t.render_within(&task, None, |_| None, 100_000),
            Err(100_099)
        );
        let fits = t.render_within(&task, None, |_| None, 2_000_000).unwrap();
        assert_eq!(fits.len(), 1_001_000);
    }
}

impl TryFrom<String> for Template {
    type Error = TemplateError;

    fn try_from(text: String) -> Result<Self, TemplateError> {
        Template::parse(&text)
    }
}

impl From<Template> for String {
    fn from(t: Template) -> String {
        t.text
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn placeholders_render_and_are_listed() {
        let t = Template::parse(
            "Task: {{task}}\n{{ step.web }} / {{step.papers}} #{{item_index}}: {{item}}",
        )
        .unwrap();
        assert_eq!(t.steps().collect::<Vec<_>>(), ["web", "papers"]);
        assert!(t.uses_item());
        let out = t.render("T", Some((1, "doc")), |s| Some(format!("<{s}>")));
        assert_eq!(out, "Task: T\n<web> / <papers> #2: doc");
    }

    #[test]
    fn mistakes_are_named() {
        assert_eq!(
            Template::parse("a {{task").unwrap_err(),
            TemplateError::Unclosed { at: 2 }
        );
        let e = Template::parse("{{tsk}}").unwrap_err().to_string();
        assert!(e.contains("unknown placeholder `{{tsk}}`"), "{e}");
        assert!(Template::parse("{{step.}}").is_err());
        assert_eq!(
            Template::parse("plain")
                .unwrap()
                .render("x", None, |_| None),
            "plain"
        );
    }
}
