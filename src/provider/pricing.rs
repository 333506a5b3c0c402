//! Cost of tokens: a per-model price table (US dollars per million tokens) with
//! built-in figures for common models that a config file can override or extend.
//!
//! Model names match exactly, or by the longest known prefix, so dated snapshots
//! (`claude-sonnet-4-5-20250929`) price like their family. Unknown models have no
//! cost (`None`), which the report shows as unknown rather than as zero.

use std::collections::BTreeMap;
use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::provider::Usage;

/// Prices of one model, per million tokens.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Price {
    /// Input (prompt) tokens.
    pub input_per_mtok: f64,
    /// Output (generated) tokens.
    pub output_per_mtok: f64,
    /// Prompt tokens written to a cache (default: 1.25 × input, as Anthropic bills).
    #[serde(default)]
    pub cache_write_per_mtok: Option<f64>,
    /// Prompt tokens read from a cache (default: 0.1 × input).
    #[serde(default)]
    pub cache_read_per_mtok: Option<f64>,
}

impl Price {
    const fn new(input_per_mtok: f64, output_per_mtok: f64) -> Self {
        Self {
            input_per_mtok,
            output_per_mtok,
            cache_write_per_mtok: None,
            cache_read_per_mtok: None,
        }
    }

    /// The cost of `usage` in US dollars.
    pub fn cost(&self, usage: &Usage) -> f64 {
        let write = self
            .cache_write_per_mtok
            .unwrap_or(self.input_per_mtok * 1.25);
        let read = self
            .cache_read_per_mtok
            .unwrap_or(self.input_per_mtok * 0.1);
        (usage.input_tokens as f64 * self.input_per_mtok
            + usage.output_tokens as f64 * self.output_per_mtok
            + usage.cache_creation_input_tokens as f64 * write
            + usage.cache_read_input_tokens as f64 * read)
            / 1_000_000.0
    }

    /// What the prompt-cache reads in `usage` saved against paying for them as
    /// plain input, in US dollars.
    pub fn cache_savings(&self, usage: &Usage) -> f64 {
        let read = self
            .cache_read_per_mtok
            .unwrap_or(self.input_per_mtok * 0.1);
        usage.cache_read_input_tokens as f64 * (self.input_per_mtok - read).max(0.0) / 1_000_000.0
    }
}

/// Model → price.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PriceTable {
    /// Prices by model name (or name prefix).
    pub models: BTreeMap<String, Price>,
}

impl Default for PriceTable {
    /// List prices of common models (USD per million tokens) and free local ones.
    fn default() -> Self {
        let known = [
            ("claude-opus-4", Price::new(15.0, 75.0)),
            ("claude-sonnet-4", Price::new(3.0, 15.0)),
            ("claude-haiku-4-5", Price::new(1.0, 5.0)),
            ("claude-3-5-haiku", Price::new(0.8, 4.0)),
            ("gpt-4o-mini", Price::new(0.15, 0.6)),
            ("gpt-4o", Price::new(2.5, 10.0)),
            ("gpt-4.1-mini", Price::new(0.4, 1.6)),
            ("gpt-4.1", Price::new(2.0, 8.0)),
            ("sim-", Price::new(0.0, 0.0)),
            ("smollm2", Price::new(0.0, 0.0)),
        ];
        Self {
            models: known.into_iter().map(|(m, p)| (m.to_owned(), p)).collect(),
        }
    }
}

/// Why a price file could not be used.
#[derive(Debug, thiserror::Error)]
pub enum PriceError {
    /// The file could not be read.
    #[error("{}: cannot read it", path.display())]
    Io {
        /// The file.
        path: std::path::PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The file is not a valid price table.
    #[error("{}: {message}", path.display())]
    Parse {
        /// The file.
        path: std::path::PathBuf,
        /// The parser's message (names the field).
        message: String,
    },
}

impl PriceTable {
    /// The price of `model`: exact match, else the longest matching prefix.
    pub fn price(&self, model: &str) -> Option<&Price> {
        self.models.get(model).or_else(|| {
            self.models
                .iter()
                .filter(|(k, _)| model.starts_with(k.as_str()))
                .max_by_key(|(k, _)| k.len())
                .map(|(_, p)| p)
        })
    }

    /// The cost of `usage` on `model`, if its price is known.
    pub fn cost(&self, model: &str, usage: &Usage) -> Option<f64> {
        self.price(model).map(|p| p.cost(usage))
    }

    /// What the cache reads in `usage` saved on `model`, if its price is known.
    pub fn cache_savings(&self, model: &str, usage: &Usage) -> Option<f64> {
        self.price(model).map(|p| p.cache_savings(usage))
    }

    /// Adds or replaces the prices in a TOML file of `[models."name"]` tables.
    pub fn merge_file(&mut self, path: &Path) -> Result<(), PriceError> {
        let text = std::fs::read_to_string(path).map_err(|source| PriceError::Io {
            path: path.to_owned(),
            source,
        })?;
        let extra: PriceTable = toml::from_str(&text).map_err(|e| PriceError::Parse {
            path: path.to_owned(),
            message: e.message().to_owned(),
        })?;
        for (model, price) in &extra.models {
            let rates = [
                ("input_per_mtok", Some(price.input_per_mtok)),
                ("output_per_mtok", Some(price.output_per_mtok)),
                ("cache_write_per_mtok", price.cache_write_per_mtok),
                ("cache_read_per_mtok", price.cache_read_per_mtok),
            ];
            for (field, rate) in rates {
                if rate.is_some_and(|r| !r.is_finite() || r < 0.0) {
                    return Err(PriceError::Parse {
                        path: path.to_owned(),
                        message: format!(
                            "models.\"{model}\".{field}: a price must be a finite number ≥ 0"
                        ),
                    });
                }
            }
        }
        self.models.extend(extra.models);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dated_models_price_like_their_family() {
        let t = PriceTable::default();
        let usage = Usage {
            input_tokens: 1_000_000,
            output_tokens: 1_000_000,
            ..Usage::default()
        };
        assert_eq!(t.cost("claude-sonnet-4-5-20250929", &usage), Some(18.0));
        assert_eq!(t.cost("gpt-4o-mini-2024-07-18", &usage), Some(0.75));
        assert_eq!(t.cost("gpt-4o", &usage), Some(12.5));
        assert_eq!(t.cost("mystery", &usage), None);
    }

    #[test]
    fn cache_tokens_are_billed_at_their_rates() {
        let p = Price::new(3.0, 15.0);
        let usage = Usage {
            cache_creation_input_tokens: 1_000_000,
            cache_read_input_tokens: 1_000_000,
            ..Usage::default()
        };
        assert!((p.cost(&usage) - (3.75 + 0.3)).abs() < 1e-9);
    }

    #[test]
    fn a_file_overrides_and_extends() {
        let dir = std::env::temp_dir().join(format!("fanfare-prices-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("prices.toml");
        std::fs::write(
            &path,
            "[models.\"gpt-4o\"]\ninput_per_mtok = 1.0\noutput_per_mtok = 2.0\n",
        )
        .unwrap();
        let mut t = PriceTable::default();
        t.merge_file(&path).unwrap();
        assert_eq!(t.price("gpt-4o").unwrap().input_per_mtok, 1.0);
        std::fs::write(&path, "[models.x]\ninput_per_mtok = 1.0\n").unwrap();
        let e = t.merge_file(&path).unwrap_err().to_string();
        assert!(e.contains("output_per_mtok"), "{e}");
        // Regression: negative and NaN prices were accepted (`cost: $NaN`).
        for bad in ["-1.0", "nan"] {
            std::fs::write(
                &path,
                format!("[models.x]\ninput_per_mtok = {bad}\noutput_per_mtok = 1.0\n"),
            )
            .unwrap();
            let e = t.merge_file(&path).unwrap_err().to_string();
            assert!(e.contains("models.\"x\".input_per_mtok"), "{bad}: {e}");
        }
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
