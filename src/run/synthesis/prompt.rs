//! What the merges say: the LLM merge prompts (final and partial) and the merges
//! that call no model (code, select-best).

use std::borrow::Cow;

use super::{MergeBranch, Scorer};
use crate::provider::Usage;
use crate::run::outcome::{Synthesis, SynthesisError};

/// The system prompt of LLM merges.
pub const MERGE_SYSTEM_PROMPT: &str = "You are the synthesiser of a panel of specialists. \
Merge their analyses below into one answer: where they agree, where they conflict, and a \
recommendation. Attribute each point to the perspective it comes from. If a perspective \
is missing, say so and do not invent it.";

/// The system prompt of a partial merge (one group of a merge too large for one call).
pub(crate) const PART_SYSTEM_PROMPT: &str = "You condense part of a panel's analyses; \
another step merges your result with the other parts. Keep every distinct point, every \
disagreement and which perspective said what; drop repetition. Be brief.";

/// One output going into a merge call: under whose name, and the text (a branch's
/// output borrowed, a cut or a partial merge's result owned).
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Section<'a> {
    /// The step, or for a partial merge's result, `part N (a, b, …)`.
    pub label: String,
    /// The text.
    pub text: Cow<'a, str>,
}

/// What a final merge prompt adds after the outputs.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct Notes {
    /// Branches without an output, each `name (why)`.
    pub missing: Vec<String>,
    /// Disagreements a code step found upstream, each `key: a says …; b says …`.
    pub conflicts: Vec<String>,
}

impl Notes {
    /// What `branches` bring besides their outputs.
    pub(crate) fn of(branches: &[MergeBranch]) -> Self {
        Self {
            missing: branches
                .iter()
                .filter_map(|b| b.gap().map(|e| format!("{} ({e})", b.agent)))
                .collect(),
            conflicts: branches
                .iter()
                .flat_map(|b| &b.conflicts)
                .map(|c| match &c.resolved {
                    Some(how) => format!("{c} (resolved upstream: {how})"),
                    None => c.to_string(),
                })
                .collect(),
        }
    }

    /// Appends the conflicts and the missing branches to `s`.
    pub(crate) fn write_to(&self, s: &mut String) {
        if !self.conflicts.is_empty() {
            s.push_str("\nConflicts between the steps (weigh them; do not hide them):\n");
            for c in &self.conflicts {
                s.push_str(&format!("- {c}\n"));
            }
        }
        if !self.missing.is_empty() {
            s.push_str(&format!(
                "\nMissing perspectives: {}.\n",
                self.missing.join("; ")
            ));
        }
    }
}

/// The user message of a final LLM merge: the task, each output under its label,
/// then the conflicts and the missing branches with their reasons.
pub(crate) fn merge_prompt(input: &str, sections: &[Section], notes: &Notes) -> String {
    let mut s = format!("Task:\n{input}\n");
    push_sections(&mut s, sections);
    notes.write_to(&mut s);
    s
}

/// Appends each section under its label, sized once (a 10,000-branch merge prompt
/// is megabytes: no copy per section, no regrowth).
fn push_sections(s: &mut String, sections: &[Section]) {
    s.reserve(
        sections
            .iter()
            .map(|x| x.label.len() + x.text.len() + 6)
            .sum(),
    );
    for sec in sections {
        s.push_str("\n## ");
        s.push_str(&sec.label);
        s.push('\n');
        s.push_str(sec.text.trim());
        s.push('\n');
    }
}

/// The user message of a partial merge: the task and this group's outputs.
pub(crate) fn part_prompt(input: &str, sections: &[Section]) -> String {
    let mut s = format!("Task:\n{input}\n\nThe analyses of this part:\n");
    push_sections(&mut s, sections);
    s
}

/// The deterministic merge: each output under its step's name, in input order.
pub(crate) fn code_merge(branches: &[MergeBranch]) -> String {
    let mut s = String::new();
    for b in branches {
        match (b.text(), b.gap()) {
            (Some(text), _) => s.push_str(&format!("## {}\n{}\n\n", b.agent, text.trim())),
            (None, gap) => s.push_str(&format!(
                "## {}\n(no output: {})\n\n",
                b.agent,
                gap.unwrap_or_default()
            )),
        }
    }
    s.trim_end().to_owned()
}

/// The output `scorer` rates highest. The scorer is user code run inside the actor:
/// a panic in it fails this merge, not the synthesiser.
pub(crate) fn select_best(
    scorer: &Scorer,
    branches: &[MergeBranch],
) -> Result<Synthesis, SynthesisError> {
    let pick = crate::agent::caught_now(|| {
        std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            let mut best: Option<(&MergeBranch, &str, f64)> = None;
            for b in branches {
                if let Some(text) = b.text() {
                    let score = (scorer.0)(&b.agent, text);
                    if best.is_none_or(|(_, _, s)| score > s) {
                        best = Some((b, text, score));
                    }
                }
            }
            best.map(|(b, text, _)| (b.agent.clone(), text.to_owned()))
        }))
    });
    match pick {
        Err(_) => Err(SynthesisError::ScorerPanicked),
        Ok(None) => Err(SynthesisError::NothingToMerge),
        Ok(Some((agent, text))) => Ok(Synthesis {
            text,
            usage: Usage::default(),
            model: None,
            chosen: Some(agent),
            tree: None,
        }),
    }
}
