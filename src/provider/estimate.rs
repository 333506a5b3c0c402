//! The one estimate of tokens made before (or instead of) a provider's own count:
//! budgets reserve by it, the gate's token limits and the merge's context plan count
//! by it. It errs high (see [`estimate_tokens`]).

/// [`thirds`] of a shared text. Every branch of a fan-out holds the same `Arc` of
/// the task and it is estimated for every branch (the budget) and every call (the
/// gate), so a long one (a 20 KB document read by 10,000 branches) was counted each
/// time; each thread remembers the last long one.
/// Sound because the remembered `Weak` keeps the allocation: no other text can have
/// its address while it is remembered, and an `Arc<str>` never changes.
pub(super) fn shared_thirds(prefix: &std::sync::Arc<str>) -> u64 {
    use std::cell::RefCell;
    use std::sync::{Arc, Weak};
    /// Shorter prefixes are counted each time (cheaper than remembering).
    const REMEMBER_FROM: usize = 1024;
    thread_local! {
        static LAST: RefCell<Option<(Weak<str>, u64)>> = const { RefCell::new(None) };
    }
    if prefix.len() < REMEMBER_FROM {
        return thirds(prefix);
    }
    LAST.with(|last| {
        let mut last = last.borrow_mut();
        if let Some((seen, counted)) = &*last {
            if std::ptr::addr_eq(seen.as_ptr(), Arc::as_ptr(prefix)) {
                return *counted;
            }
        }
        let count = thirds(prefix);
        *last = Some((Arc::downgrade(prefix), count));
        count
    })
}

/// [`estimate_tokens`] of a shared text, counted once per thread however many
/// branches hold it (see `shared_thirds`).
pub(crate) fn estimate_shared_tokens(text: &std::sync::Arc<str>) -> u64 {
    shared_thirds(text).div_ceil(3)
}

/// The one estimate of tokens used wherever a count is needed before (or instead
/// of) a provider's own: four tokens for every three words, as English text goes;
/// a run of more than 16 characters without a space (code, minified JSON,
/// base64, a URL) one token for every 2.5 of them, and a character of a script
/// written without spaces (Chinese, Japanese, …) a token and a half. It errs high
/// rather than low: a budget is kept by it before a call's real count is known (a
/// count by words alone took 277 KB of minified JSON, or 90 KB of Chinese, for 90
/// tokens, and let a run cost 20–40× its cap).
pub fn estimate_tokens(text: &str) -> u64 {
    thirds(text).div_ceil(3)
}

/// Longer runs without a space are not words of a language written with spaces.
const LONG_WORD: u64 = 16;

/// A word's estimate, in thirds of a token: `chars` characters, `wide` of them of
/// scripts written without spaces (U+0800 and above: CJK, Thai, …).
fn word_thirds(chars: u64, wide: u64) -> u64 {
    if chars <= LONG_WORD && wide == 0 {
        return 4;
    }
    // (chars − wide) / 2.5 tokens, and 1.5 a wide character, in thirds.
    ((chars - wide) * 6 / 5 + wide * 9 / 2).max(4)
}

/// [`estimate_tokens`] in thirds of a token, summed exactly. ASCII text (prompts
/// mostly are; a merge prompt of 1,000 branches' answers is counted on the way to
/// its call) is read byte by byte, without decoding characters.
pub(super) fn thirds(text: &str) -> u64 {
    if !text.is_ascii() {
        return text
            .split_whitespace()
            .map(|w| {
                let (chars, wide) = w.chars().fold((0u64, 0u64), |(n, wide), c| {
                    (n + 1, wide + u64::from(c as u32 >= 0x800))
                });
                word_thirds(chars, wide)
            })
            .sum();
    }
    // The ASCII characters `char::is_whitespace` accepts (`u8::is_ascii_whitespace`
    // leaves out the vertical tab).
    let space = |b: &u8| matches!(b, b' ' | b'\t' | b'\n' | b'\x0b' | b'\x0c' | b'\r');
    let mut total = 0;
    let mut run = 0u64;
    for b in text.as_bytes() {
        if space(b) {
            if run > 0 {
                total += word_thirds(run, 0);
            }
            run = 0;
        } else {
            run += 1;
        }
    }
    if run > 0 {
        total += word_thirds(run, 0);
    }
    total
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        /// The ASCII fast path counts exactly what the words `split_whitespace`
        /// finds count, on any mix of words (short and long) and every ASCII space.
        #[test]
        fn the_ascii_count_is_the_sum_over_split_whitespace_words(
            text in "([a-z]{1,5}|[a-z0-9{}:,]{15,40}|[ \t\n\r\x0b\x0c]{1,3}){0,40}"
        ) {
            prop_assert_eq!(thirds(&text), reference(&text), "{:?}", text);
        }

        /// And so does the path for other text (with non-ASCII spaces and letters).
        #[test]
        fn the_count_is_the_sum_over_split_whitespace_words_on_any_text(
            text in "([a-z]{1,5}|[ \t\n]{1,3}|é|\u{a0}|\u{3000}|中文){0,40}"
        ) {
            prop_assert_eq!(thirds(&text), reference(&text), "{:?}", text);
        }
    }

    /// What [`thirds`] must count: each word of `split_whitespace`, by its
    /// characters.
    fn reference(text: &str) -> u64 {
        text.split_whitespace()
            .map(|w| {
                let wide = w.chars().filter(|c| *c as u32 >= 0x800).count() as u64;
                word_thirds(w.chars().count() as u64, wide)
            })
            .sum()
    }

    #[test]
    fn regression_text_without_spaces_is_not_a_few_tokens() {
        // The probe's cases: counted by words, each was a handful of tokens.
        let json = format!(
            "{{{}}}",
            (0..20_000)
                .map(|i| format!("\"k{i}\":{i}"))
                .collect::<Vec<_>>()
                .join(",")
        );
        assert!(
            estimate_tokens(&json) >= json.len() as u64 / 3,
            "{}",
            estimate_tokens(&json)
        );
        let chinese: String = (0..30_000)
            .map(|i| char::from_u32(0x4e00 + (i % 20_000)).unwrap())
            .collect();
        assert_eq!(estimate_tokens(&chinese), 45_000);
        let base64 = "QUJD".repeat(10_000);
        assert_eq!(estimate_tokens(&base64), 16_000);
        // English is counted as before: four tokens for three words.
        assert_eq!(
            estimate_tokens("We will store all user queries in logs."),
            11
        );
    }
}
