//! The API key: redacted in `Debug`, no `Display`, named by a fingerprint that does
//! not reveal it (what learned limits are kept under), and taken out of what a
//! server says back ([`Redactor`]).

use super::redact_url;
use crate::provider::ProviderError;

/// An API key. Its `Debug` never shows the secret and it has no `Display`, so it
/// cannot end up in logs, reports or error messages by accident.
#[derive(Clone, PartialEq, Eq)]
pub struct ApiKey(String);

impl ApiKey {
    /// Wraps a key (surrounding whitespace, as in a key file, is dropped).
    pub fn new(key: impl Into<String>) -> Self {
        Self(key.into().trim().to_owned())
    }

    /// Reads a key from `var`, if it is set and non-empty.
    pub fn from_env(var: &str) -> Option<Self> {
        std::env::var(var)
            .ok()
            .map(Self::new)
            .filter(|k| !k.0.is_empty())
    }

    /// Reads a key from a file.
    pub fn from_file(path: &std::path::Path) -> std::io::Result<Self> {
        let key = Self::new(std::fs::read_to_string(path)?);
        if key.0.is_empty() {
            return Err(std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                "the key file is empty",
            ));
        }
        Ok(key)
    }

    pub(crate) fn expose(&self) -> &str {
        &self.0
    }

    /// The key and the forms a server might echo it in (percent-encoded, base64),
    /// as a [`Redactor`]. A key under 8 characters (a placeholder for a local
    /// server) has none: redacting it would blank out ordinary words.
    pub fn redactor(&self) -> Redactor {
        let key = self.0.as_str();
        if key.chars().count() < 8 {
            return Redactor::default();
        }
        let mut forms = vec![
            key.to_owned(),
            percent_encoding::utf8_percent_encode(key, percent_encoding::NON_ALPHANUMERIC)
                .to_string(),
        ];
        let bytes = key.as_bytes();
        // Every byte escaped: `%XX`, hex, and JSON's `\u00XX`, in either case.
        for upper in [false, true] {
            let hex = |b: &u8| {
                if upper {
                    format!("{b:02X}")
                } else {
                    format!("{b:02x}")
                }
            };
            forms.push(bytes.iter().map(|b| format!("%{}", hex(b))).collect());
            forms.push(bytes.iter().map(hex).collect());
            forms.push(bytes.iter().map(|b| format!("\\u00{}", hex(b))).collect());
        }
        forms.extend(base64_cores(bytes));
        forms.sort_by_key(|f| std::cmp::Reverse(f.len()));
        forms.dedup();
        Redactor(forms.into())
    }

    /// A name for this key that does not reveal it: the first 16 hex digits of
    /// SHA-256 over a fanfare-specific prefix and the key. Two keys (two accounts,
    /// two rate limits) get two names; the name cannot be turned back into the key.
    /// What a gate learned about a server is kept under it, never under the key.
    pub fn fingerprint(&self) -> String {
        let mut input = b"fanfare key fingerprint\0".to_vec();
        input.extend_from_slice(self.0.as_bytes());
        let digest = ring::digest::digest(&ring::digest::SHA256, &input);
        digest.as_ref()[..8]
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect()
    }
}

/// What of the key's base64 is the same wherever the key sits in a longer text:
/// for each of the three places it can start within a 3-byte group, the characters
/// made of its bytes alone, in the standard and the URL-safe alphabets (a key that
/// did not start on a group's boundary passed in two cases of three).
fn base64_cores(key: &[u8]) -> Vec<String> {
    use base64::Engine as _;
    let engines = [
        base64::engine::general_purpose::STANDARD_NO_PAD,
        base64::engine::general_purpose::URL_SAFE_NO_PAD,
    ];
    let mut cores = Vec::new();
    for before in 0..3usize {
        let mut padded = vec![0u8; before];
        padded.extend_from_slice(key);
        // Characters that hold bits of the bytes before it, or after it.
        let skip = [0, 2, 3][before];
        let cut = usize::from(padded.len() % 3 != 0);
        for engine in &engines {
            let text = engine.encode(&padded);
            if let Some(core) = text.get(skip..text.len().saturating_sub(cut)) {
                cores.push(core.to_owned());
            }
        }
    }
    cores
}

/// Takes API keys out of text:/// Takes API keys out of text: an error body that echoes the key (some proxies and
/// servers do), or a tool's answer that read it (a `.env` file, a server's own
/// config), must not carry it into a report, the journal, an event stream or
/// another model's prompt. Made from a key ([`ApiKey::redactor`]); several are
/// joined with [`Redactor::and`]. The default redacts nothing.
#[derive(Clone, Default)]
pub struct Redactor(std::sync::Arc<[String]>);

/// Shows how many forms it holds, never them: they are the key.
impl std::fmt::Debug for Redactor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Redactor(<{} forms of the key>)", self.0.len())
    }
}

impl Redactor {
    /// What replaces the key.
    pub const MARK: &'static str = "[redacted key]";

    /// This and `other`: text is cleaned of the keys of both.
    pub fn and(self, other: Redactor) -> Redactor {
        if other.0.is_empty() {
            return self;
        }
        if self.0.is_empty() {
            return other;
        }
        let mut forms: Vec<String> = self.0.iter().chain(other.0.iter()).cloned().collect();
        // Longest first: a key that holds another is replaced whole.
        forms.sort_by_key(|f| std::cmp::Reverse(f.len()));
        forms.dedup();
        Redactor(forms.into())
    }

    /// Whether it redacts anything.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// `error` with every form of the key replaced by [`Redactor::MARK`].
    pub(crate) fn error(&self, mut error: ProviderError) -> ProviderError {
        if !self.0.is_empty() {
            error.redact(&|text: &mut String| self.text(text));
        }
        error
    }

    /// `text` with every form of every key replaced by [`Redactor::MARK`], also
    /// where whitespace splits one (base64 wrapped at 76 columns, say).
    pub fn text(&self, text: &mut String) {
        for form in self.0.iter() {
            if text.contains(form.as_str()) {
                *text = text.replace(form.as_str(), Self::MARK);
            }
        }
        if !self.0.is_empty() && text.bytes().any(|b| b.is_ascii_whitespace()) {
            self.split_by_whitespace(text);
        }
    }

    /// Replaces the forms that only the text's whitespace splits (each form is
    /// free of whitespace; the text read without it finds them).
    fn split_by_whitespace(&self, text: &mut String) {
        // Where each byte that is not whitespace sits in `text`.
        let at: Vec<usize> = text
            .bytes()
            .enumerate()
            .filter(|(_, b)| !b.is_ascii_whitespace())
            .map(|(i, _)| i)
            .collect();
        // Taking out single-byte characters leaves UTF-8 whole.
        let flat: String = text.chars().filter(|c| !c.is_ascii_whitespace()).collect();
        let mut spans: Vec<(usize, usize)> = Vec::new();
        for form in self.0.iter() {
            for (start, found) in flat.match_indices(form.as_str()) {
                spans.push((at[start], at[start + found.len() - 1] + 1));
            }
        }
        if spans.is_empty() {
            return;
        }
        spans.sort_unstable();
        let mut out = String::with_capacity(text.len());
        let mut from = 0;
        for (start, end) in spans {
            if start < from {
                // Overlaps one replaced already.
                from = from.max(end);
                continue;
            }
            out.push_str(&text[from..start]);
            out.push_str(Self::MARK);
            from = end;
        }
        out.push_str(&text[from..]);
        *text = out;
    }
}

/// The name under which what an admission gate learned about a server is kept:
/// the base URL without credentials, and the key's [`ApiKey::fingerprint`] (never
/// the key). Two keys on one server are two endpoints: each has its own limits.
pub fn endpoint_id(base_url: &str, key: Option<&ApiKey>) -> String {
    let base = redact_url(base_url.trim());
    let base = base.trim_end_matches('/');
    match key {
        Some(key) => format!("{base} key:{}", key.fingerprint()),
        None => format!("{base} no key"),
    }
}

impl std::fmt::Debug for ApiKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ApiKey(<redacted>)")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::provider::ProviderErrorKind;

    #[test]
    fn key_debug_is_redacted() {
        let key = ApiKey::new("sk-very-secret\n");
        assert_eq!(format!("{key:?}"), "ApiKey(<redacted>)");
        assert_eq!(key.expose(), "sk-very-secret");
    }

    #[test]
    fn an_error_body_that_echoes_the_key_in_any_form_keeps_none_of_them() {
        use base64::Engine as _;
        let key = "sk-ant-api03-very/secret+key";
        let forms = [
            key.to_owned(),
            "sk%2Dant%2Dapi03%2Dvery%2Fsecret%2Bkey".to_owned(),
            base64::engine::general_purpose::STANDARD.encode(key),
            base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(key),
        ];
        let kind = ProviderErrorKind::Status {
            status: 401,
            retry_after_ms: None,
            excerpt: format!(
                "invalid key {} / {} / {} / {}",
                forms[0], forms[1], forms[2], forms[3]
            ),
        };
        let mut error = ProviderError::new(
            "anthropic",
            "m",
            &crate::provider::CompletionRequest::new("a", "s", "u"),
            kind.clone(),
        );
        error.earlier = vec![ProviderErrorKind::Decode {
            message: format!("body: {key}"),
        }];
        let text = format!("{:?}", ApiKey::new(key).redactor().error(error));
        for form in &forms {
            assert!(!text.contains(form.as_str()), "{form} in {text}");
        }
        assert_eq!(text.matches(Redactor::MARK).count(), 5, "{text}");
        // A placeholder key for a local server redacts nothing.
        let mut short = ProviderError::new(
            "openai",
            "m",
            &crate::provider::CompletionRequest::new("a", "s", "u"),
            kind,
        );
        short = ApiKey::new("local").redactor().error(short);
        assert!(short.to_string().contains("invalid key"), "{short}");
    }

    #[test]
    fn regression_a_key_in_a_tools_answer_is_redacted_in_every_common_encoding() {
        // Base64 at two of three offsets, wrapped base64, %XX for every byte, JSON
        // escapes and hex all passed (probe 10, D4).
        use base64::Engine as _;
        let key = "sk-ant-api03-PROBE10SECRET-x9";
        let redactor = ApiKey::new(key).redactor();
        let env = format!("ANTHROPIC_API_KEY={key}\n");
        let b64 = |t: &str| base64::engine::general_purpose::STANDARD.encode(t);
        let wrapped: String = b64(&format!("# config\n{env}"))
            .as_bytes()
            .chunks(20)
            .map(|c| format!("{}\n", std::str::from_utf8(c).unwrap()))
            .collect();
        let every_byte = |f: &dyn Fn(&u8) -> String| key.bytes().map(|b| f(&b)).collect::<String>();
        let texts = [
            env.clone(),
            b64(&env),
            b64(&format!("x{env}")),
            b64(&format!("xy{env}")),
            base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(format!("xy{env}")),
            wrapped,
            every_byte(&|b| format!("%{b:02X}")),
            every_byte(&|b| format!("%{b:02x}")),
            every_byte(&|b| format!("\\u{:04x}", b)),
            every_byte(&|b| format!("{b:02x}")),
            every_byte(&|b| format!("{b:02X}")),
        ];
        for (k, original) in texts.iter().enumerate() {
            let mut text = original.clone();
            redactor.text(&mut text);
            assert!(
                text.contains(Redactor::MARK),
                "case {k}: {original} -> {text}"
            );
            // What is left does not give the key back in any of these forms.
            let decoded: String = text
                .split(|c: char| c.is_whitespace())
                .filter_map(|part| base64::engine::general_purpose::STANDARD.decode(part).ok())
                .map(|b| String::from_utf8_lossy(&b).into_owned())
                .collect();
            assert!(
                !text.contains(key) && !decoded.contains("PROBE10SECRET"),
                "case {k}: {text}"
            );
        }
        // Ordinary text is left alone.
        let mut plain = "the request was 200 OK".to_owned();
        redactor.text(&mut plain);
        assert_eq!(plain, "the request was 200 OK");
    }

    #[test]
    fn an_endpoint_is_named_by_its_url_and_the_keys_fingerprint_never_the_key() {
        let key = ApiKey::new("sk-very-secret");
        let print = key.fingerprint();
        assert_eq!(print.len(), 16);
        assert!(print.bytes().all(|b| b.is_ascii_hexdigit()), "{print}");
        assert_eq!(print, ApiKey::new(" sk-very-secret\n").fingerprint());
        assert_ne!(print, ApiKey::new("sk-very-secreT").fingerprint());
        let id = endpoint_id("https://user:pw@api.example.com/", Some(&key));
        assert_eq!(id, format!("https://api.example.com key:{print}"));
        assert!(!id.contains("secret") && !id.contains("pw"), "{id}");
        assert_eq!(
            endpoint_id("http://127.0.0.1:8080/v1", None),
            "http://127.0.0.1:8080/v1 no key"
        );
    }
}
