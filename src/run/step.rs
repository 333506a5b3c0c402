//! One step of a run: [`Step`] (an [`Action`], its dependencies, input, limits,
//! schema) and a map step's [`Map`] over a [`MapSource`].

use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::outcome::opt_secs;
use super::policy::Policy;
use super::template::Template;
use crate::provider::OutputSchema;

/// What a step does.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Action {
    /// Ask the specialist with this routing name.
    Agent(String),
    /// Run the code function registered under this name (see [`CodeFn`](crate::run::CodeFn)),
    /// with these options.
    Code {
        /// The function's name.
        function: String,
        /// Its options (a JSON object; what a function reads is its own business).
        #[serde(default)]
        options: serde_json::Value,
    },
}

/// Fanning one step out over a list: one branch per item.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Map {
    /// Where the items come from.
    pub over: MapSource,
    /// Most items in flight at once.
    pub concurrency: usize,
    /// How many items must succeed for the step to succeed (`FailFast`: all; the
    /// first failure cancels the rest).
    pub policy: Policy,
}

/// Where a map step's items come from.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MapSource {
    /// The output of this earlier step: a JSON array (of strings, or of anything,
    /// each item then its JSON), else one item per non-empty line.
    Step(usize),
    /// These items, as given (for instance, the text of each of a set of files).
    Items(Vec<String>),
}

/// One step of a run: a name, what it does, the steps whose outputs it needs first,
/// and how its input is built.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Step {
    /// Unique within the run; templates and reports name the step by it.
    pub name: String,
    /// What it does.
    pub action: Action,
    /// Indices of earlier steps this one waits for (empty in a fan-out).
    #[serde(default)]
    pub depends_on: Vec<usize>,
    /// Its input; without one, the run's input followed by its upstream outputs.
    #[serde(default)]
    pub input: Option<Template>,
    /// Its own branch timeout (else the run's).
    #[serde(default, with = "opt_secs")]
    pub timeout: Option<Duration>,
    /// Times a branch of this step that fails or times out is run again.
    #[serde(default)]
    pub retries: u32,
    /// The model its agent should ask (else the agent's own choice).
    #[serde(default)]
    pub model: Option<String>,
    /// Fan out over a list: one branch per item.
    #[serde(default)]
    pub map: Option<Map>,
    /// The JSON schema its answer must satisfy: asked of the model (a JSON-schema
    /// response format, or a forced tool call) and checked, with one more try on an
    /// answer that does not satisfy it.
    #[serde(default)]
    pub schema: Option<Arc<OutputSchema>>,
}

impl Step {
    /// A step that asks the specialist `agent` (and is named after it).
    pub fn agent(agent: impl Into<String>) -> Self {
        let agent = agent.into();
        Self {
            name: agent.clone(),
            action: Action::Agent(agent),
            depends_on: Vec::new(),
            input: None,
            timeout: None,
            retries: 0,
            model: None,
            map: None,
            schema: None,
        }
    }

    /// A step that runs the code function `function` with `options`.
    pub fn code(function: impl Into<String>, options: serde_json::Value) -> Self {
        let function = function.into();
        Self {
            name: function.clone(),
            action: Action::Code { function, options },
            ..Self::agent("")
        }
    }

    /// Names the step.
    pub fn named(mut self, name: impl Into<String>) -> Self {
        self.name = name.into();
        self
    }

    /// Waits for these earlier steps.
    pub fn after(mut self, steps: impl IntoIterator<Item = usize>) -> Self {
        self.depends_on = steps.into_iter().collect();
        self
    }

    /// Builds its input from `template`.
    pub fn input(mut self, template: Template) -> Self {
        self.input = Some(template);
        self
    }

    /// Fans it out over a list.
    pub fn map(mut self, map: Map) -> Self {
        self.map = Some(map);
        self
    }

    /// Asks for (and checks) an answer of this shape.
    pub fn schema(mut self, schema: OutputSchema) -> Self {
        self.schema = Some(Arc::new(schema));
        self
    }

    /// The specialist it asks, if it asks one.
    pub fn agent_name(&self) -> Option<&str> {
        match &self.action {
            Action::Agent(a) => Some(a),
            Action::Code { .. } => None,
        }
    }

    /// The agent's name, or `code:FUNCTION`.
    pub fn doer(&self) -> String {
        match &self.action {
            Action::Agent(a) => a.clone(),
            Action::Code { function, .. } => format!("code:{function}"),
        }
    }
}
