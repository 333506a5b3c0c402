//! Checking a [`RunRequest`] before anything is dispatched: every step's agent, code
//! function and dependencies exist, the graph has no cycle, the policy and the
//! durations make sense, reused outputs name real steps.

use super::{Limit, RequestError, RunRequest, StepProblem};
use crate::run::policy::Policy;
use crate::run::step::{Action, MapSource};

/// What a runtime has, for checking a request: its specialists and code functions.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Known<'a> {
    pub agents: &'a [String],
    pub code: &'a [String],
}

impl RunRequest {
    /// Checks the request against the agents known to the runtime, before anything
    /// is dispatched.
    pub(crate) fn validate(&self, known: &Known<'_>) -> Result<(), RequestError> {
        if self.steps.is_empty() {
            return Err(RequestError::NoSteps);
        }
        // Names may repeat (a fan-out may ask one agent many times), but not the ones
        // a template refers to.
        let mut names: std::collections::HashMap<&str, Vec<usize>> = Default::default();
        for (i, step) in self.steps.iter().enumerate() {
            names.entry(step.name.as_str()).or_default().push(i);
        }
        // A set: with a specialist per branch, looking each step's agent up in the
        // list was quadratic (10,000 of each: 10^8 comparisons per run).
        let agents: std::collections::HashSet<&str> =
            known.agents.iter().map(String::as_str).collect();
        for (i, step) in self.steps.iter().enumerate() {
            let bad = |problem| RequestError::BadStep {
                step: i,
                name: step.name.clone(),
                problem,
            };
            match &step.action {
                Action::Agent(agent) if !agents.contains(agent.as_str()) => {
                    return Err(RequestError::UnknownAgent {
                        step: i,
                        agent: agent.clone(),
                        known: known.agents.to_vec(),
                    });
                }
                Action::Code { function, .. } if !known.code.iter().any(|k| k == function) => {
                    return Err(bad(StepProblem::UnknownCode {
                        function: function.clone(),
                        known: known.code.to_vec(),
                    }));
                }
                Action::Workflow(flow) => {
                    let inner = Self::for_branch(flow, String::new(), self.branch_timeout);
                    if let Err(problem) = inner.validate(known) {
                        return Err(bad(StepProblem::Workflow {
                            workflow: flow.name.clone(),
                            problem: Box::new(problem),
                        }));
                    }
                }
                _ => {}
            }
            if let Some(&d) = step.depends_on.iter().find(|&&d| d >= i) {
                return Err(RequestError::BadDependency { step: i, on: d });
            }
            if let Some(template) = &step.input {
                for upstream in template.steps() {
                    match names.get(upstream).map(Vec::as_slice) {
                        Some([u]) if self.is_ancestor(*u, i) => {}
                        Some([first, ..]) if names[upstream].len() > 1 => {
                            return Err(bad(StepProblem::DuplicateName {
                                name: upstream.to_owned(),
                                first: *first,
                            }));
                        }
                        _ => return Err(bad(StepProblem::NotUpstream(upstream.to_owned()))),
                    }
                }
                if template.uses_item() && step.map.is_none() {
                    return Err(bad(StepProblem::ItemOutsideMap));
                }
            }
            if let Some(map) = &step.map {
                if map.concurrency == 0 {
                    return Err(bad(StepProblem::MapConcurrency));
                }
                if let MapSource::Step(from) | MapSource::Within { step: from, .. } = map.over {
                    if !step.depends_on.contains(&from) {
                        return Err(bad(StepProblem::MapNotUpstream(from)));
                    }
                }
                if let Policy::TolerantPartial { quorum: 0 } = map.policy {
                    return Err(bad(StepProblem::MapQuorum));
                }
            }
            if step
                .timeout
                .is_some_and(|d| d.is_zero() || d > Self::LONGEST)
            {
                return Err(bad(StepProblem::Timeout));
            }
            if step.retries > crate::run::step::MAX_RETRIES {
                return Err(bad(StepProblem::TooManyRetries {
                    retries: step.retries,
                    max: crate::run::step::MAX_RETRIES,
                }));
            }
        }
        if let Policy::TolerantPartial { quorum } = self.policy {
            if quorum == 0 || quorum > self.steps.len() {
                return Err(RequestError::BadQuorum {
                    quorum,
                    steps: self.steps.len(),
                });
            }
        }
        if self.deadline.is_zero() {
            return Err(RequestError::ZeroDeadline);
        }
        if self.soft_deadline.is_some() && (self.merge.is_none() || self.policy == Policy::FailFast)
        {
            return Err(RequestError::SoftDeadlineUnused);
        }
        if let Some(cap) = self.budget.and_then(|b| b.max_cost_usd) {
            if !cap.is_finite() || cap < 0.0 {
                return Err(RequestError::BadCostCap(cap));
            }
        }
        for (what, d) in [
            (Limit::Deadline, Some(self.deadline)),
            (Limit::BranchTimeout, Some(self.branch_timeout)),
            (Limit::SoftDeadline, self.soft_deadline),
        ] {
            if d.is_some_and(|d| d > Self::LONGEST) {
                return Err(RequestError::TooLong {
                    what,
                    max_days: Self::LONGEST.as_secs() / 86_400,
                });
            }
        }
        for r in &self.reuse {
            let step = self.steps.get(r.index as usize);
            let fits = step.is_some_and(|s| s.map.is_some() == r.item.is_some());
            if !fits {
                return Err(RequestError::BadReuse {
                    index: r.index,
                    item: r.item,
                });
            }
        }
        Ok(())
    }

    /// True if step `a` is among step `b`'s transitive dependencies.
    fn is_ancestor(&self, a: usize, b: usize) -> bool {
        let mut stack = self.steps[b].depends_on.clone();
        let mut seen = vec![false; self.steps.len()];
        while let Some(s) = stack.pop() {
            if s == a {
                return true;
            }
            if s < seen.len() && !seen[s] {
                seen[s] = true;
                stack.extend(self.steps[s].depends_on.iter().copied());
            }
        }
        false
    }
}
