//! Making an LLM merge fit its model's context window: pure arithmetic, no I/O.
//!
//! - [`Estimator`]: text → tokens, by bytes per token (a cautious 3 until a server's
//!   overflow error gives the real ratio);
//! - [`Fit`]: how a window splits between the fixed part of a prompt, its outputs
//!   and the answer, for the final merge and for partial merges;
//! - [`groups`]: consecutive outputs packed into groups that fit;
//! - [`MergeTree`]: what the report says about it.

use std::ops::Range;

use serde::{Deserialize, Serialize};

/// Where the window a merge planned for came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum WindowSource {
    /// Set by the caller (`--context-window`, a workflow's `context_window`).
    Setting,
    /// Read from the server's context-overflow error (kept for later merges).
    Learned,
    /// The built-in table of known models.
    Table,
}

/// How an LLM merge was made to fit, for the report.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct MergeTree {
    /// The window the merge planned for, in tokens (`None`: unknown, and one call
    /// fitted).
    pub window: Option<u32>,
    /// Where that window came from.
    pub window_source: Option<WindowSource>,
    /// The partial merges, level by level (empty: one call took every output).
    pub levels: Vec<Vec<MergeNode>>,
    /// What was cut to fit (`task`, or an output's label).
    pub cut: Vec<String>,
    /// Calls the server refused as too long, after which the merge was planned
    /// again with what it said.
    pub overflows: u32,
}

impl MergeTree {
    /// True when the merge took more than one call.
    pub fn is_hierarchical(&self) -> bool {
        !self.levels.is_empty()
    }
}

/// One partial merge.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct MergeNode {
    /// Its name in the next level (`part 3`).
    pub label: String,
    /// What it merged: steps, or parts of the level before.
    pub inputs: Vec<String>,
    /// The estimated tokens of those inputs.
    pub tokens_in: u32,
}

/// Text → tokens, by bytes per token.
#[derive(Clone, Copy, Debug, PartialEq)]
pub(crate) struct Estimator {
    bytes_per_token: f64,
}

impl Default for Estimator {
    /// Three bytes per token: more tokens than English text usually has (about
    /// four bytes each), so a plan errs on the side of fitting.
    fn default() -> Self {
        Self {
            bytes_per_token: 3.0,
        }
    }
}

impl Estimator {
    /// The ratio a server's count gives: `bytes` of prompt came to `tokens`, less 10%
    /// for safety. `None` for numbers that cannot be a ratio.
    pub(crate) fn measured(bytes: usize, tokens: u32) -> Option<Self> {
        if tokens == 0 || bytes == 0 {
            return None;
        }
        let ratio = bytes as f64 / f64::from(tokens) * 0.9;
        (ratio.is_finite() && ratio > 0.5).then_some(Self {
            bytes_per_token: ratio.min(8.0),
        })
    }

    /// Estimated tokens of `text`.
    pub(crate) fn tokens(&self, text: &str) -> u32 {
        self.tokens_for(text.len())
    }

    /// Estimated tokens of `bytes` bytes of text.
    pub(crate) fn tokens_for(&self, bytes: usize) -> u32 {
        let t = (bytes as f64 / self.bytes_per_token).ceil();
        if t >= f64::from(u32::MAX) {
            u32::MAX
        } else {
            t as u32
        }
    }

    /// About how many bytes `tokens` tokens hold.
    pub(crate) fn bytes(&self, tokens: u32) -> usize {
        (f64::from(tokens) * self.bytes_per_token) as usize
    }
}

/// How a window splits for the merge calls.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Fit {
    /// Answer cap of the final merge.
    pub final_out: u32,
    /// Tokens of outputs the final merge can take.
    pub final_in: u32,
    /// Answer cap of a partial merge.
    pub part_out: u32,
    /// Tokens of outputs a partial merge can take (at least three partial answers,
    /// so each level shrinks the work).
    pub part_in: u32,
}

/// Tokens kept free in every call for what an estimate misses (chat template,
/// role markers).
pub(crate) const MARGIN: u32 = 64;

/// The least a merge call needs for outputs and answer together.
pub(crate) const LEAST: u32 = 128;

impl Fit {
    /// The split of `window` for merges answering in at most `max_tokens`, when the
    /// fixed part of each prompt (system prompt, task, notes) is `overhead` tokens.
    /// `Err(needed)`: the window is too small for any merge (`needed` tokens would do).
    pub(crate) fn new(window: u32, max_tokens: u32, overhead: u32) -> Result<Self, u32> {
        let fixed = overhead.saturating_add(MARGIN);
        let free = window.saturating_sub(fixed);
        if free < LEAST {
            return Err(fixed.saturating_add(LEAST));
        }
        let max_tokens = max_tokens.max(1);
        let final_out = max_tokens.min(free / 2);
        let part_out = max_tokens.min(free / 4);
        Ok(Self {
            final_out,
            final_in: free - final_out,
            part_out,
            part_in: free - part_out,
        })
    }
}

/// Packs consecutive `sizes` into groups of at most `budget` each, in order. An item
/// larger than `budget` is a group of its own (its caller cuts it to fit).
pub(crate) fn groups(sizes: &[u32], budget: u32) -> Vec<Range<usize>> {
    let mut out = Vec::new();
    let mut start = 0;
    let mut used: u64 = 0;
    for (i, &size) in sizes.iter().enumerate() {
        let size = u64::from(size);
        if i > start && used + size > u64::from(budget) {
            out.push(start..i);
            start = i;
            used = 0;
        }
        used += size;
    }
    if start < sizes.len() {
        out.push(start..sizes.len());
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_window_splits_between_outputs_and_answer() {
        // (window, max_tokens, overhead) → Ok(final_out, final_in, part_out, part_in) | Err(needed)
        type Want = Result<(u32, u32, u32, u32), u32>;
        let cases: &[(u32, u32, u32, Want)] = &[
            // A llama.cpp slot of 1024 with a 1024-token merge: the answer gets half.
            (1024, 1024, 160, Ok((400, 400, 200, 600))),
            // A small answer cap stays as asked.
            (1024, 32, 160, Ok((32, 768, 32, 768))),
            // A large window: the cap is the limit.
            (200_000, 1024, 500, Ok((1024, 198_412, 1024, 198_412))),
            // Too small for anything.
            (256, 1024, 100, Err(292)),
            (0, 1024, 0, Err(192)),
            // max_tokens of zero is treated as one.
            (1024, 0, 0, Ok((1, 959, 1, 959))),
        ];
        for &(window, max_tokens, overhead, want) in cases {
            let got = Fit::new(window, max_tokens, overhead)
                .map(|f| (f.final_out, f.final_in, f.part_out, f.part_in));
            assert_eq!(
                got, want,
                "window {window}, max {max_tokens}, overhead {overhead}"
            );
            if let Ok(f) = Fit::new(window, max_tokens, overhead) {
                assert!(f.final_in + f.final_out + overhead + MARGIN <= window);
                assert!(f.part_in >= 3 * f.part_out, "a level must shrink the work");
            }
        }
    }

    #[test]
    fn groups_pack_in_order_and_an_oversized_item_stands_alone() {
        // (sizes, budget, groups as (start, end))
        type Case = (&'static [u32], u32, &'static [(usize, usize)]);
        let cases: &[Case] = &[
            (&[], 10, &[]),
            (&[3, 3, 3], 10, &[(0, 3)]),
            (&[4, 4, 4], 10, &[(0, 2), (2, 3)]),
            (&[10, 1], 10, &[(0, 1), (1, 2)]),
            (&[25, 3, 3], 10, &[(0, 1), (1, 3)]),
            (&[3, 25, 3], 10, &[(0, 1), (1, 2), (2, 3)]),
            (&[u32::MAX, u32::MAX], u32::MAX, &[(0, 1), (1, 2)]),
        ];
        for &(sizes, budget, want) in cases {
            let got: Vec<(usize, usize)> = groups(sizes, budget)
                .into_iter()
                .map(|r| (r.start, r.end))
                .collect();
            assert_eq!(got, want, "{sizes:?} in {budget}");
        }
    }

    #[test]
    fn the_estimate_errs_towards_more_tokens_until_measured() {
        let e = Estimator::default();
        assert_eq!(e.tokens(""), 0);
        assert_eq!(e.tokens("abcd"), 2);
        assert_eq!(e.bytes(100), 300);
        // llama.cpp said 1344 tokens for 5000 bytes: 3.72 bytes per token, less 10%.
        let m = Estimator::measured(5000, 1344).unwrap();
        assert_eq!(m.tokens(&"x".repeat(3348)), 1000);
        assert_eq!(Estimator::measured(0, 10), None);
        assert_eq!(Estimator::measured(10, 0), None);
        // Nonsense counts are not believed.
        assert_eq!(Estimator::measured(10, 1000), None);
    }
}
