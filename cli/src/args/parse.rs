//! The value parsers the grammar uses: each says what it wanted when it refuses.

use std::time::Duration;

use fanfare::supervision::Strategy;
use fanfare::Policy;

pub fn parse_rate(s: &str) -> Result<f64, String> {
    match s.parse::<f64>() {
        Ok(r) if (0.0..=1.0).contains(&r) => Ok(r),
        _ => Err(format!("`{s}` is not a probability between 0 and 1")),
    }
}

pub fn at_least_one(s: &str) -> Result<usize, String> {
    match s.parse::<usize>() {
        Ok(n) if n >= 1 => Ok(n),
        _ => Err(format!("`{s}` is not a whole number ≥ 1")),
    }
}

pub fn parse_usd(s: &str) -> Result<f64, String> {
    match s.parse::<f64>() {
        Ok(x) if x.is_finite() && x >= 0.0 => Ok(x),
        _ => Err(format!(
            "`{s}` is not an amount of US dollars ≥ 0 (e.g. 0.50)"
        )),
    }
}

pub fn parse_strategy(s: &str) -> Result<Strategy, String> {
    s.parse()
        .map_err(|e: fanfare::supervision::UnknownStrategy| e.to_string())
}

pub fn parse_mcp(s: &str) -> Result<fanfare::agent::tools::mcp::McpServer, String> {
    fanfare::agent::tools::mcp::McpServer::parse(s).map_err(|e| e.to_string())
}

pub fn parse_policy(s: &str) -> Result<Policy, String> {
    s.parse()
        .map_err(|e: fanfare::run::ParsePolicyError| e.to_string())
}

pub fn parse_duration(s: &str) -> Result<Duration, String> {
    fanfare::run::parse_duration(s).map_err(|e| e.to_string())
}
