//! The LLM merge, made to fit the merge model's context window.
//!
//! The window comes from the caller's setting, from what a server's overflow error
//! said earlier (kept per model for the life of the runtime), or from the table of
//! known models; the smallest of the first two wins, the table only without them.
//! When the outputs fit, one call merges them all. When they do not, consecutive
//! outputs are packed into groups that fit, each group is condensed by one call (all
//! groups at once), and the condensed parts are merged the same way, level by level,
//! until one call takes them all. An output too long for a call on its own is cut,
//! and the report says so. With no window known, one call is tried; if the server
//! says the prompt was too long, its numbers are learned and the merge is planned
//! again. A merge never fails because its prompt was too long for a window that
//! can be known.

use std::borrow::Cow;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use super::fit::{groups, Estimator, Fit, MergeNode, MergeTree, WindowSource};
use super::prompt::{
    merge_prompt, part_prompt, Notes, Section, MERGE_SYSTEM_PROMPT, PART_SYSTEM_PROMPT,
};
use super::MergeBranch;
use crate::provider::context::{known_window, Overflow};
use crate::provider::{
    Completion, CompletionRequest, Provider, ProviderError, ProviderErrorKind, Usage,
};
use crate::run::outcome::{Synthesis, SynthesisError};

/// What overflow errors taught about a model: kept across runs by the synthesiser.
#[derive(Clone, Debug, Default)]
pub(crate) struct Learned(Arc<Mutex<HashMap<String, Knowledge>>>);

#[derive(Clone, Copy, Debug)]
struct Knowledge {
    window: u32,
    estimator: Option<Estimator>,
}

impl Learned {
    fn get(&self, model: &str) -> Option<Knowledge> {
        self.0
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(model)
            .copied()
    }

    fn set(&self, model: &str, k: Knowledge) {
        self.0
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(model.to_owned(), k);
    }
}

/// Partial-merge levels before a merge gives up (each level at least halves the
/// work, so this is far more than any real fan-in needs).
const MAX_LEVELS: usize = 8;

/// Overflow errors a merge plans again after before it fails.
const MAX_OVERFLOWS: u32 = 3;

/// One LLM merge's settings.
pub(crate) struct LlmMerge {
    pub provider: Arc<dyn Provider>,
    pub model: Option<String>,
    pub max_tokens: u32,
    pub context_window: Option<u32>,
    pub learned: Learned,
    /// Where the final merge call streams its text (partial merges stream nowhere).
    pub deltas: Option<crate::provider::DeltaSink>,
    /// When the run stops waiting for its merge, carried by every merge call.
    pub deadline: Option<tokio::time::Instant>,
}

/// Where a call's failure leaves the merge.
enum Failed {
    /// The prompt was too long: learned; plan again.
    Overflow,
    /// Anything else: the merge fails.
    Fatal(SynthesisError),
}

impl LlmMerge {
    /// The model's name as the learned windows key it.
    fn key(&self) -> String {
        self.model
            .clone()
            .or_else(|| self.provider.default_model().map(str::to_owned))
            .unwrap_or_default()
    }

    /// The window to plan for, and the estimator to plan with.
    fn window(&self, key: &str) -> (Option<(u32, WindowSource)>, Estimator) {
        let learned = self.learned.get(key);
        let estimator = learned.and_then(|k| k.estimator).unwrap_or_default();
        let chosen = [
            self.context_window.map(|w| (w, WindowSource::Setting)),
            learned.map(|k| (k.window, WindowSource::Learned)),
        ]
        .into_iter()
        .flatten()
        .min_by_key(|(w, _)| *w)
        .or_else(|| known_window(key).map(|w| (w, WindowSource::Table)));
        (chosen, estimator)
    }

    /// Merges `branches` (the outputs of the ones that succeeded) for `input`.
    pub(crate) async fn run(
        self,
        input: String,
        branches: &[MergeBranch],
    ) -> Result<Synthesis, SynthesisError> {
        let key = self.key();
        let notes = Notes::of(branches);
        let mut sections = sections(branches);
        let mut tree = MergeTree::default();
        let mut usage = Usage::default();
        loop {
            let (window, est) = self.window(&key);
            tree.window = window.map(|w| w.0);
            tree.window_source = window.map(|w| w.1);
            let Some((window, _)) = window else {
                // Unknown window: one call, as asked.
                let prompt = merge_prompt(&input, &sections, &notes);
                match self
                    .call(&key, MERGE_SYSTEM_PROMPT, prompt, self.max_tokens, None)
                    .await
                {
                    Ok(c) => return Ok(finish(c, usage, tree)),
                    Err(Failed::Overflow) => {
                        tree.overflows += 1;
                        if tree.overflows > MAX_OVERFLOWS {
                            return Err(SynthesisError::DoesNotFit {
                                tree: Box::new(tree),
                            });
                        }
                        continue;
                    }
                    Err(Failed::Fatal(e)) => return Err(e),
                }
            };
            let (task, task_cut) = cut(&input, est.bytes(window / 4));
            if task_cut && !tree.cut.iter().any(|c| c == "task") {
                tree.cut.push("task".to_owned());
            }
            let mut notes_text = String::new();
            notes.write_to(&mut notes_text);
            let overhead = est
                .tokens(MERGE_SYSTEM_PROMPT)
                .saturating_add(est.tokens(&task))
                .saturating_add(est.tokens(&notes_text))
                .saturating_add(16);
            let fit = match Fit::new(window, self.max_tokens, overhead) {
                Ok(f) => f,
                Err(needed) => return Err(SynthesisError::WindowTooSmall { window, needed }),
            };
            let sizes: Vec<u32> = sections.iter().map(|s| size_of(&est, s)).collect();
            let total: u64 = sizes.iter().map(|&s| u64::from(s)).sum();
            if total <= u64::from(fit.final_in) {
                let prompt = merge_prompt(&task, &sections, &notes);
                match self
                    .call(
                        &key,
                        MERGE_SYSTEM_PROMPT,
                        prompt,
                        fit.final_out,
                        Some(window),
                    )
                    .await
                {
                    Ok(c) => return Ok(finish(c, usage, tree)),
                    Err(Failed::Overflow) => {
                        tree.overflows += 1;
                        if tree.overflows > MAX_OVERFLOWS {
                            return Err(SynthesisError::DoesNotFit {
                                tree: Box::new(tree),
                            });
                        }
                        continue;
                    }
                    Err(Failed::Fatal(e)) => return Err(e),
                }
            }
            if tree.levels.len() >= MAX_LEVELS {
                return Err(SynthesisError::DoesNotFit {
                    tree: Box::new(tree),
                });
            }
            // One level of partial merges, all groups at once.
            let level = tree.levels.len();
            let mut sizes = sizes;
            if level > 0 {
                // Parts a model made longer than it was asked would stand alone and
                // never shrink: cut each to half a group, so that every group
                // merges at least two and each level halves the work.
                let half = fit.part_in / 2;
                for (section, size) in sections.iter_mut().zip(sizes.iter_mut()) {
                    if *size > half {
                        let room = est.bytes(
                            half.saturating_sub(est.tokens(&section.label).saturating_add(8)),
                        );
                        section.text = cut(&section.text, room).0.into();
                        tree.cut.push(section.label.clone());
                        *size = size_of(&est, section);
                    }
                }
            }
            let packed = groups(&sizes, fit.part_in);
            let mut nodes = Vec::with_capacity(packed.len());
            let mut calls = Vec::with_capacity(packed.len());
            for (n, range) in packed.into_iter().enumerate() {
                let mut group: Vec<Section> = sections[range.clone()].to_vec();
                if group.len() == 1 && sizes[range.start] > fit.part_in {
                    let room = est.bytes(
                        fit.part_in
                            .saturating_sub(est.tokens(&group[0].label).saturating_add(8)),
                    );
                    let (text, _) = cut(&group[0].text, room);
                    tree.cut.push(group[0].label.clone());
                    group[0].text = text.into();
                }
                let label = format!("part {}.{}", level + 1, n + 1);
                nodes.push(MergeNode {
                    label,
                    inputs: group.iter().map(|s| s.label.clone()).collect(),
                    tokens_in: sizes[range].iter().fold(0u32, |a, &b| a.saturating_add(b)),
                });
                let prompt = part_prompt(&task, &group);
                calls.push(self.call(&key, PART_SYSTEM_PROMPT, prompt, fit.part_out, Some(window)));
            }
            let results = futures::future::join_all(calls).await;
            let mut next = Vec::with_capacity(results.len());
            let mut overflowed = false;
            for (node, result) in nodes.iter().zip(results) {
                match result {
                    Ok(c) => {
                        usage += c.usage;
                        next.push(Section {
                            label: node.label.clone(),
                            text: c.text.into(),
                        });
                    }
                    Err(Failed::Overflow) => overflowed = true,
                    Err(Failed::Fatal(e)) => return Err(e),
                }
            }
            if overflowed {
                tree.overflows += 1;
                if tree.overflows > MAX_OVERFLOWS {
                    return Err(SynthesisError::DoesNotFit {
                        tree: Box::new(tree),
                    });
                }
                continue;
            }
            tree.levels.push(nodes);
            sections = next;
        }
    }

    /// One merge call. An overflow error is learned from before it is returned.
    async fn call(
        &self,
        key: &str,
        system: &str,
        user: String,
        max_tokens: u32,
        planned: Option<u32>,
    ) -> Result<Completion, Failed> {
        let bytes = system.len() + user.len();
        let mut req = CompletionRequest::new("synthesiser", system, user);
        req.model = self.model.clone();
        req.max_tokens = max_tokens;
        req.deadline = self.deadline;
        if system == MERGE_SYSTEM_PROMPT {
            req.deltas = self.deltas.clone();
        }
        match self.provider.complete(req).await {
            Ok(c) if c.text.trim().is_empty() => Err(Failed::Fatal(SynthesisError::EmptyAnswer)),
            Ok(c) => Ok(c),
            Err(e) => match &e.kind {
                ProviderErrorKind::ContextOverflow { overflow, .. } => {
                    self.learn(key, *overflow, bytes, planned);
                    Err(Failed::Overflow)
                }
                _ => Err(Failed::Fatal(provider_error(e))),
            },
        }
    }

    /// Keeps what an overflow error said: the window (or, when it gave none, three
    /// quarters of what was tried), and the bytes per token its count implies.
    fn learn(&self, key: &str, o: Overflow, prompt_bytes: usize, planned: Option<u32>) {
        let before = self.learned.get(key);
        let estimator = o
            .prompt_tokens
            .and_then(|t| Estimator::measured(prompt_bytes, t))
            .or(before.and_then(|k| k.estimator));
        let tried = planned
            .or(o.prompt_tokens)
            .unwrap_or_else(|| estimator.unwrap_or_default().tokens_for(prompt_bytes));
        let window = o.window.unwrap_or(tried / 4 * 3).max(1);
        tracing::info!(
            model = key,
            window,
            "learned the merge model's context window from its overflow error"
        );
        self.learned.set(key, Knowledge { window, estimator });
    }
}

/// The outputs to merge, labelled by step; a name several branches share (a
/// fan-out of one agent) is numbered (`reviewer #2`).
fn sections(branches: &[MergeBranch]) -> Vec<Section<'_>> {
    // Counted once: asking per branch how many share its name was quadratic (10^8
    // comparisons for a 10,000-branch merge).
    let mut count: HashMap<&str, usize> = HashMap::new();
    for b in branches {
        *count.entry(b.agent.as_str()).or_default() += 1;
    }
    let mut seen: HashMap<&str, usize> = HashMap::new();
    branches
        .iter()
        .filter_map(|b| {
            let n = seen.entry(b.agent.as_str()).or_default();
            *n += 1;
            let label = if count[b.agent.as_str()] > 1 {
                format!("{} #{n}", b.agent)
            } else {
                b.agent.clone()
            };
            b.text().map(|t| Section {
                label,
                text: Cow::Borrowed(t),
            })
        })
        .collect()
}

fn provider_error(e: ProviderError) -> SynthesisError {
    SynthesisError::Provider(Box::new(e))
}

fn finish(c: Completion, mut usage: Usage, tree: MergeTree) -> Synthesis {
    usage += c.usage;
    Synthesis {
        text: c.text,
        usage,
        model: Some(c.model),
        chosen: None,
        tree: Some(tree),
    }
}

/// A section's estimated tokens in a prompt: its label, its text and the markup.
fn size_of(est: &Estimator, s: &Section) -> u32 {
    est.tokens(&s.label)
        .saturating_add(est.tokens(&s.text))
        .saturating_add(4)
}

/// `text` cut to at most `bytes` (at a character boundary, with a note), and
/// whether it was cut.
fn cut(text: &str, bytes: usize) -> (String, bool) {
    const NOTE: &str = "\n[… cut to fit the merge model's context window]";
    if text.len() <= bytes {
        return (text.to_owned(), false);
    }
    let end = text.floor_char_boundary(bytes.saturating_sub(NOTE.len()));
    (format!("{}{NOTE}", &text[..end]), true)
}
