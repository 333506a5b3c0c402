//! [`Graph`]: a run's steps wired by name rather than by index.

use super::{RequestError, RunRequest};
use crate::run::step::Step;

/// A run's steps, each naming the steps it waits for; [`Graph::build`] turns the
/// names into the indices a [`RunRequest`] holds, or says which name is wrong.
///
/// ```
/// use fanfare::{RunRequest, Step};
///
/// let request = RunRequest::graph("Should we log user queries?")
///     .step(Step::agent("legal"))
///     .step(Step::agent("security"))
///     .step_after(
///         Step::code("concat", serde_json::Value::Null).named("joined"),
///         ["legal", "security"],
///     )
///     .build()
///     .unwrap();
/// assert_eq!(request.steps[2].depends_on, [0, 1]);
/// ```
#[derive(Clone, Debug)]
#[must_use = "a graph does nothing until it is built into a request"]
pub struct Graph {
    input: String,
    steps: Vec<(Step, Vec<String>)>,
}

/// Why a [`Graph`] cannot be built.
#[derive(Clone, Debug, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum GraphError {
    /// Two steps have one name.
    #[error("two steps are named `{0}`: a step's name must be its own")]
    Duplicate(String),
    /// A step waits for a name no step has.
    #[error("step `{step}` waits for `{after}`, which no step is named")]
    Unknown {
        /// The step.
        step: String,
        /// The name it gave.
        after: String,
    },
    /// A step waits for one added after it.
    #[error("step `{step}` waits for `{after}`, which is added after it: add a step after the ones it waits for")]
    Later {
        /// The step.
        step: String,
        /// The step it waits for.
        after: String,
    },
    /// The request the steps make is not valid.
    #[error(transparent)]
    Request(#[from] RequestError),
}

impl Graph {
    /// Adds a step that waits for nothing.
    pub fn step(self, step: Step) -> Self {
        self.step_after(step, std::iter::empty::<String>())
    }

    /// Adds a step that waits for the steps named `after` (added before it).
    pub fn step_after<S: Into<String>>(
        mut self,
        step: Step,
        after: impl IntoIterator<Item = S>,
    ) -> Self {
        self.steps
            .push((step, after.into_iter().map(Into::into).collect()));
        self
    }

    /// The request, its steps wired by index; its other settings are the
    /// [`RunRequest::fan_out`] defaults, to be set on the result.
    pub fn build(self) -> Result<RunRequest, GraphError> {
        let mut index = std::collections::HashMap::new();
        for (i, (step, _)) in self.steps.iter().enumerate() {
            if index.insert(step.name.clone(), i).is_some() {
                return Err(GraphError::Duplicate(step.name.clone()));
            }
        }
        let mut steps = Vec::with_capacity(self.steps.len());
        for (i, (step, after)) in self.steps.into_iter().enumerate() {
            let mut depends_on = Vec::with_capacity(after.len());
            for name in after {
                match index.get(&name) {
                    None => {
                        return Err(GraphError::Unknown {
                            step: step.name,
                            after: name,
                        })
                    }
                    Some(&d) if d >= i => {
                        return Err(GraphError::Later {
                            step: step.name,
                            after: name,
                        })
                    }
                    Some(&d) => depends_on.push(d),
                }
            }
            steps.push(step.after(depends_on));
        }
        if steps.is_empty() {
            return Err(RequestError::NoSteps.into());
        }
        let mut request = RunRequest::fan_out(self.input, Vec::<String>::new());
        request.steps = steps;
        Ok(request)
    }
}

impl RunRequest {
    /// A request whose steps are wired by name: see [`Graph`].
    pub fn graph(input: impl Into<String>) -> Graph {
        Graph {
            input: input.into(),
            steps: Vec::new(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn a() -> Step {
        Step::agent("a")
    }

    #[test]
    fn names_become_indices_or_the_wrong_name_is_said() {
        let built = RunRequest::graph("t")
            .step(a())
            .step_after(Step::agent("b"), ["a"])
            .step_after(Step::agent("x").named("c"), ["b", "a"])
            .build()
            .unwrap();
        let deps: Vec<&[usize]> = built.steps.iter().map(|s| &s.depends_on[..]).collect();
        assert_eq!(deps, [&[][..], &[0], &[1, 0]]);
        let cases = [
            (
                RunRequest::graph("t").step(a()).step(a()),
                GraphError::Duplicate("a".into()),
            ),
            (
                RunRequest::graph("t").step_after(a(), ["zz"]),
                GraphError::Unknown {
                    step: "a".into(),
                    after: "zz".into(),
                },
            ),
            (
                RunRequest::graph("t")
                    .step_after(a(), ["b"])
                    .step(Step::agent("b")),
                GraphError::Later {
                    step: "a".into(),
                    after: "b".into(),
                },
            ),
            (
                RunRequest::graph("t"),
                GraphError::Request(RequestError::NoSteps),
            ),
        ];
        for (graph, want) in cases {
            assert_eq!(graph.build().unwrap_err(), want);
        }
    }
}
