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
        use base64::Engine as _;
        let key = self.0.as_str();
        if key.chars().count() < 8 {
            return Redactor::default();
        }
        let engines = [
            base64::engine::general_purpose::STANDARD,
            base64::engine::general_purpose::STANDARD_NO_PAD,
            base64::engine::general_purpose::URL_SAFE_NO_PAD,
        ];
        let mut forms = vec![
            key.to_owned(),
            percent_encoding::utf8_percent_encode(key, percent_encoding::NON_ALPHANUMERIC)
                .to_string(),
        ];
        forms.extend(engines.iter().map(|e| e.encode(key)));
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

/// Takes API keys out of text: an error body that echoes the key (some proxies and
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

    /// `text` with every form of every key replaced by [`Redactor::MARK`].
    pub fn text(&self, text: &mut String) {
        for form in self.0.iter() {
            if text.contains(form.as_str()) {
                *text = text.replace(form.as_str(), Self::MARK);
            }
        }
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
