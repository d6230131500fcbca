//! Start-up configuration: every flag has an environment variable, parsed once by clap.

use std::net::SocketAddr;

use clap::{Parser, ValueEnum};

pub const DEFAULT_LISTEN: &str = "127.0.0.1:8081";
pub const DEFAULT_MAX_AMOUNT: i64 = 1_000_000;
pub const DEFAULT_BALANCE: i64 = 100_000_000;
pub const DEFAULT_CURRENCIES: &str = "TRY,USD,EUR,GBP";
pub const DEFAULT_MAX_BODY_BYTES: usize = 64 * 1024;
/// Seven days, as card networks commonly hold an authorization.
pub const DEFAULT_AUTHORIZATION_TTL_S: u64 = 604_800;

/// The fault-injecting bank simulator.
///
/// Charges cards, keeps a ledger, and injects faults (errors, latency, hangs, connection resets,
/// throttling, ambiguous "charged but the answer was lost", outages) that you tune live through
/// the `/chaos` endpoints.
#[derive(Debug, Clone, Parser)]
#[command(name = "mock-bank", version, about, long_about = None)]
pub struct Config {
    /// Address to listen on.
    #[arg(long, env = "BANK_LISTEN", default_value = DEFAULT_LISTEN)]
    pub listen: SocketAddr,

    /// Seed of the chaos random generator: the same seed and the same request sequence give the
    /// same faults. Random when unset.
    #[arg(long, env = "BANK_SEED")]
    pub seed: Option<u64>,

    /// Chaos preset applied at start-up and restored by `POST /chaos/reset`.
    #[arg(long, env = "BANK_PRESET", default_value = "healthy")]
    pub preset: String,

    /// Largest amount, in minor units, the bank approves; above it a charge declines with
    /// `amount_limit_exceeded`.
    #[arg(long, env = "BANK_MAX_AMOUNT", default_value_t = DEFAULT_MAX_AMOUNT)]
    pub max_amount: i64,

    /// Opening balance, in minor units, of every card account that is not a test card.
    #[arg(long, env = "BANK_DEFAULT_BALANCE", default_value_t = DEFAULT_BALANCE)]
    pub default_balance: i64,

    /// How long an authorization holds its amount, in seconds, before it expires and the amount is
    /// released (at most a year).
    #[arg(long, env = "BANK_AUTHORIZATION_TTL_S", default_value_t = DEFAULT_AUTHORIZATION_TTL_S,
          value_parser = clap::value_parser!(u64).range(1..=31_536_000))]
    pub authorization_ttl_s: u64,

    /// Accepted ISO 4217 currencies, comma-separated.
    #[arg(long, env = "BANK_CURRENCIES", value_delimiter = ',', default_value = DEFAULT_CURRENCIES,
          value_parser = parse_currency)]
    pub currencies: Vec<String>,

    /// Honour the per-request `X-Chaos-Fault` header (`none|failure|ambiguous|timeout|reset|throttle`).
    #[arg(long, env = "BANK_CHAOS_HEADER", default_value_t = true, action = clap::ArgAction::Set)]
    pub chaos_header: bool,

    /// Largest request body accepted, in bytes; larger bodies get 413.
    #[arg(long, env = "BANK_MAX_BODY_BYTES", default_value_t = DEFAULT_MAX_BODY_BYTES)]
    pub max_body_bytes: usize,

    /// Log filter, in `tracing` env-filter syntax (`info`, `mock_bank=debug`, ...).
    #[arg(long, env = "BANK_LOG", default_value = "info")]
    pub log: String,

    /// Log line format.
    #[arg(long, env = "BANK_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,

    #[command(flatten)]
    pub connections: http_conventions::serve::ConnectionFlags,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}

impl Default for Config {
    /// The same values as the command line's defaults, without reading the environment: what
    /// tests start from.
    fn default() -> Self {
        Self {
            listen: DEFAULT_LISTEN.parse().unwrap_or_else(|_| SocketAddr::from(([127, 0, 0, 1], 8081))),
            seed: None,
            preset: "healthy".to_owned(),
            max_amount: DEFAULT_MAX_AMOUNT,
            default_balance: DEFAULT_BALANCE,
            authorization_ttl_s: DEFAULT_AUTHORIZATION_TTL_S,
            currencies: DEFAULT_CURRENCIES.split(',').map(str::to_owned).collect(),
            chaos_header: true,
            max_body_bytes: DEFAULT_MAX_BODY_BYTES,
            log: "info".to_owned(),
            log_format: LogFormat::Text,
            connections: http_conventions::serve::ConnectionFlags::default(),
        }
    }
}

fn parse_currency(raw: &str) -> Result<String, String> {
    let code = raw.trim();
    if code.len() == 3 && code.bytes().all(|b| b.is_ascii_uppercase()) {
        Ok(code.to_owned())
    } else {
        Err(format!("`{code}` is not an ISO 4217 code (three upper-case letters)"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_match_the_command_line() {
        let parsed = Config::try_parse_from(["mock-bank"]).map_err(|e| e.to_string());
        let parsed = parsed.unwrap_or_else(|e| panic!("{e}"));
        let default = Config::default();
        assert_eq!(parsed.listen, default.listen);
        assert_eq!(parsed.currencies, default.currencies);
        assert_eq!(parsed.max_amount, default.max_amount);
        assert_eq!(parsed.authorization_ttl_s, default.authorization_ttl_s);
        assert_eq!(parsed.max_body_bytes, default.max_body_bytes);
        assert_eq!(parsed.connections, default.connections);
    }

    #[test]
    fn every_flag_has_an_environment_variable_and_help() {
        use clap::CommandFactory;
        let command = Config::command();
        for arg in command.get_arguments() {
            let id = arg.get_id().as_str();
            if matches!(id, "help" | "version") {
                continue;
            }
            // The connection limits are the same flags on every service (`HTTP_…`).
            let env = arg.get_env().map(|env| env.to_string_lossy().into_owned()).unwrap_or_default();
            assert!(env.starts_with("BANK_") || env.starts_with("HTTP_"), "--{id}: env");
            assert!(arg.get_help().is_some(), "--{id}: help");
        }
    }

    #[test]
    fn rejects_a_lower_case_currency() {
        assert!(Config::try_parse_from(["mock-bank", "--currencies", "usd"]).is_err());
    }
}
