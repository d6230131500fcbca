//! Start-up configuration. Every flag has an environment variable; secrets (API keys, the admin
//! key, the fingerprint key) come only from here, never from the code.

use std::net::SocketAddr;
use std::time::Duration;

use clap::{Parser, ValueEnum};
use resilience::{BreakerConfig, BudgetConfig, GuardConfig, RetryConfig};

/// The resilient payment gateway: charges a card exactly once through an unreliable bank.
#[derive(Clone, Parser)]
#[command(name = "payment-api", version, about, long_about = None)]
pub struct Config {
    /// Address to listen on.
    #[arg(long, env = "API_LISTEN", default_value = "127.0.0.1:8080")]
    pub listen: SocketAddr,

    /// Base URL of the bank (one bank, named `default`; see BANKS for several).
    #[arg(long, env = "BANK_URL", default_value = "http://127.0.0.1:8081")]
    pub bank_url: String,

    /// Several banks, `name=url,…`, the first the primary (`BANK_URL` alone means one bank named
    /// `default`). A bank's currencies may be limited with `BANK_CURRENCIES_<NAME>=USD,EUR`.
    #[arg(long, env = "BANKS", value_parser = parse_bank, value_delimiter = ',')]
    pub banks: Vec<BankSpec>,

    /// How a payment's bank is chosen: `priority` (in order), `weighted` (ROUTING_WEIGHTS) or
    /// `success_rate` (the best recent authorization rate, exploring the others now and then).
    #[arg(long, env = "ROUTING", value_enum, default_value_t = Routing::Priority)]
    pub routing: Routing,

    /// The split of `weighted` routing, `name=70,name=30`.
    #[arg(long, env = "ROUTING_WEIGHTS", value_parser = parse_weight, value_delimiter = ',')]
    pub routing_weights: Vec<(String, u32)>,

    /// Declines that may be tried at the next bank (all others are final).
    #[arg(
        long,
        env = "DECLINE_FAILOVER_CODES",
        value_delimiter = ',',
        default_value = "processing_error,issuer_unavailable"
    )]
    pub decline_failover_codes: Vec<String>,

    /// Idempotency and payment store: `memory`, `redb:<path>` (embedded, durable) or
    /// `redis://host:port/db` (shared by several gateway instances).
    #[arg(long = "store", env = "STORE_URL", default_value = "redb:data/payments.redb")]
    pub store_url: String,

    /// Merchant API keys, `merchant_id:secret,...`; clients send `Authorization: Bearer <secret>`.
    #[arg(long, env = "API_KEYS", value_parser = parse_api_key, value_delimiter = ',', required = true)]
    pub api_keys: Vec<ApiKey>,

    /// Key of the admin routes (`/admin/...`).
    #[arg(long, env = "ADMIN_KEY")]
    pub admin_key: Option<String>,

    /// Secret for request fingerprints (an HMAC, so no card number can be guessed from a stored
    /// fingerprint). Required with a persistent store, so fingerprints survive restarts and agree
    /// across instances; random for `memory`.
    #[arg(long, env = "FINGERPRINT_KEY")]
    pub fingerprint_key: Option<String>,

    /// Accepted ISO 4217 currencies, comma-separated.
    #[arg(long, env = "CURRENCIES", value_delimiter = ',', default_value = "TRY,USD,EUR,GBP")]
    pub currencies: Vec<String>,

    /// How long an idempotency key keeps its answer, in seconds.
    #[arg(long, env = "IDEMPOTENCY_RETENTION_S", default_value_t = 86_400)]
    pub idempotency_retention_s: u64,

    /// How long a request holds its key before another instance may take over its payment (ms).
    /// Must exceed the bank deadline plus one attempt timeout.
    #[arg(long, env = "IDEMPOTENCY_LEASE_MS", default_value_t = 30_000)]
    pub lease_ms: u64,

    /// How long the bank may still commit a request that timed out (ms), counted from the end of
    /// the gateway's last bank call for the payment. Past it, a processing payment the bank has no
    /// record of is failed and its key freed.
    #[arg(long, env = "BANK_COMMIT_WINDOW_MS", default_value_t = 60_000)]
    pub commit_window_ms: u64,

    /// How long an authorization (`"capture": false`) may wait for its capture, in seconds: at
    /// `capture_before` the gateway cancels it (`cancellation_reason: expired`). At most a year.
    #[arg(long, env = "AUTHORIZATION_TTL_S", default_value_t = 604_800,
          value_parser = clap::value_parser!(u64).range(1..=31_536_000))]
    pub authorization_ttl_s: u64,

    /// How long events (`GET /v1/events`) and their deliveries are kept, in seconds.
    #[arg(long, env = "EVENT_RETENTION_S", default_value_t = 2_592_000,
          value_parser = clap::value_parser!(u64).range(1..=31_536_000))]
    pub event_retention_s: u64,

    /// How long a webhook endpoint has to answer a delivery (ms); past it the attempt failed.
    #[arg(long, env = "WEBHOOK_TIMEOUT_MS", default_value_t = 10_000,
          value_parser = clap::value_parser!(u64).range(1..=120_000))]
    pub webhook_timeout_ms: u64,

    /// The waits between a delivery's failed attempts, in seconds (fractions allowed), each
    /// stretched by up to a fifth at random; after the last the delivery is `failed`.
    #[arg(long, env = "WEBHOOK_RETRY_SCHEDULE_S", default_value = "5,300,1800,7200,18000,36000,36000",
          value_parser = crate::model::webhook::Schedule::parse)]
    pub webhook_retry_schedule_s: crate::model::webhook::Schedule,

    /// Whether webhook URLs may point at loopback and private addresses (true suits this
    /// simulator, where receivers run on the same machine; set false when exposed to others).
    #[arg(long, env = "WEBHOOK_ALLOW_PRIVATE", default_value_t = true, action = clap::ArgAction::Set)]
    pub webhook_allow_private: bool,

    /// How long a gateway instance holds a delivery (or an event it is fanning out) before
    /// another instance may take it over, as after a crash (ms). Longer than WEBHOOK_TIMEOUT_MS.
    #[arg(long, env = "WEBHOOK_LEASE_MS", default_value_t = 30_000)]
    pub webhook_lease_ms: u64,

    /// How long an endpoint's circuit breaker stays open at first (ms); it doubles while probes
    /// fail, up to 120 times this. Open, it spares the endpoint calls (each refused one counts
    /// as a failed attempt of the delivery's schedule).
    #[arg(long, env = "WEBHOOK_BREAKER_OPEN_MS", default_value_t = 5_000,
          value_parser = clap::value_parser!(u64).range(1..=3_600_000))]
    pub webhook_breaker_open_ms: u64,

    /// How many webhook deliveries one instance sends at once.
    #[arg(long, env = "WEBHOOK_MAX_IN_FLIGHT", default_value_t = 64,
          value_parser = clap::value_parser!(u64).range(1..=10_000))]
    pub webhook_max_in_flight: u64,

    /// How often the reconciler looks for processing payments (ms).
    #[arg(long, env = "RECONCILE_INTERVAL_MS", default_value_t = 1_000)]
    pub reconcile_interval_ms: u64,

    /// Largest request body accepted, in bytes; larger bodies get 413.
    #[arg(long, env = "API_MAX_BODY_BYTES", default_value_t = 16 * 1024)]
    pub max_body_bytes: usize,

    /// Per-attempt timeout of a bank call (ms).
    #[arg(long, env = "BANK_ATTEMPT_TIMEOUT_MS", default_value_t = 2_000)]
    pub attempt_timeout_ms: u64,
    /// Attempts per bank call, the first included.
    #[arg(long, env = "BANK_MAX_ATTEMPTS", default_value_t = 3)]
    pub max_attempts: u32,
    /// Overall deadline of a bank call, retries and waits included (ms).
    #[arg(long, env = "BANK_DEADLINE_MS", default_value_t = 8_000)]
    pub deadline_ms: u64,
    /// First backoff ceiling (ms); full jitter picks a wait between 0 and the ceiling.
    #[arg(long, env = "BANK_BACKOFF_BASE_MS", default_value_t = 100)]
    pub backoff_base_ms: u64,
    /// Largest backoff ceiling (ms).
    #[arg(long, env = "BANK_BACKOFF_MAX_MS", default_value_t = 2_000)]
    pub backoff_max_ms: u64,
    /// Backoff growth per retry.
    #[arg(long, env = "BANK_BACKOFF_MULTIPLIER", default_value_t = 2.0)]
    pub backoff_multiplier: f64,
    /// Retries allowed as a share of calls.
    #[arg(long, env = "RETRY_BUDGET_RATIO", default_value_t = 0.2)]
    pub retry_budget_ratio: f64,
    /// Retries always allowed per second.
    #[arg(long, env = "RETRY_BUDGET_MIN_PER_SEC", default_value_t = 10)]
    pub retry_budget_min_per_sec: u32,
    /// Calls the breaker judges over (large enough that a bank failing steadily below the
    /// threshold is never cut off by chance).
    #[arg(long, env = "BREAKER_WINDOW", default_value_t = 200)]
    pub breaker_window: usize,
    /// Fewest calls before the breaker may open.
    #[arg(long, env = "BREAKER_MIN_CALLS", default_value_t = 100)]
    pub breaker_min_calls: usize,
    /// Failure rate that opens the breaker.
    #[arg(long, env = "BREAKER_FAILURE_RATE", default_value_t = 0.5)]
    pub breaker_failure_rate: f64,
    /// Slow-call rate that opens the breaker.
    #[arg(long, env = "BREAKER_SLOW_CALL_RATE", default_value_t = 0.8)]
    pub breaker_slow_call_rate: f64,
    /// A call slower than this is slow (ms).
    #[arg(long, env = "BREAKER_SLOW_CALL_MS", default_value_t = 1_000)]
    pub breaker_slow_call_ms: u64,
    /// How long the breaker stays open after its first trip (ms); doubled on each repeated trip.
    #[arg(long, env = "BREAKER_OPEN_MS", default_value_t = 5_000)]
    pub breaker_open_ms: u64,
    /// Longest open period (ms).
    #[arg(long, env = "BREAKER_OPEN_MAX_MS", default_value_t = 60_000)]
    pub breaker_open_max_ms: u64,
    /// Probes admitted while half-open.
    #[arg(long, env = "BREAKER_HALF_OPEN_PROBES", default_value_t = 10)]
    pub breaker_half_open_probes: u32,
    /// Bank calls in flight at once; more are refused with 503 `overloaded`.
    #[arg(long, env = "BANK_MAX_CONCURRENCY", default_value_t = 512)]
    pub bank_max_concurrency: usize,

    /// Requests per second each merchant may send (token bucket refill rate).
    #[arg(long, env = "RATE_LIMIT_PER_SEC", default_value_t = 100.0)]
    pub rate_limit_per_sec: f64,
    /// Requests a merchant may send at once (token bucket size).
    #[arg(long, env = "RATE_LIMIT_BURST", default_value_t = 200)]
    pub rate_limit_burst: u32,

    /// Events buffered per `/admin/stream` subscriber; a slower one misses the oldest.
    #[arg(long, env = "STREAM_BUFFER", default_value_t = 1_024)]
    pub stream_buffer: usize,

    /// On SIGTERM or Ctrl-C, how long in-flight requests may take to finish (ms).
    #[arg(long, env = "SHUTDOWN_TIMEOUT_MS", default_value_t = 10_000)]
    pub shutdown_timeout_ms: u64,

    /// Directory of the daily-rolling JSON log files (`payment-api.log.YYYY-MM-DD`); none when unset.
    #[arg(long, env = "LOG_DIR")]
    pub log_dir: Option<std::path::PathBuf>,

    /// Log filter, in `tracing` env-filter syntax.
    #[arg(long, env = "API_LOG", default_value = "info")]
    pub log: String,
    /// Log line format on stdout.
    #[arg(long, env = "API_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,

    #[command(flatten)]
    pub connections: http_conventions::serve::ConnectionFlags,

    /// The currencies each bank is limited to, when set here (tests); else read from the
    /// `BANK_CURRENCIES_<NAME>` variables.
    #[arg(skip)]
    pub bank_currency_limits: Option<Vec<(String, Vec<String>)>>,
}

/// How the router orders the banks for a payment.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Routing {
    /// In the configured order; the next on failover.
    Priority,
    /// The first bank drawn by ROUTING_WEIGHTS, then the others in order.
    Weighted,
    /// The best recent authorization rate first (a tenth of payments explore another first).
    SuccessRate,
}

/// One bank of `BANKS`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BankSpec {
    pub name: String,
    pub url: String,
}

fn parse_bank(text: &str) -> Result<BankSpec, String> {
    let (name, url) = text.split_once('=').ok_or_else(|| format!("`{text}`: expected name=url"))?;
    let name = name.trim();
    if name.is_empty() || !name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_') {
        return Err(format!("`{name}`: a bank's name is letters, digits, - and _"));
    }
    Ok(BankSpec { name: name.to_owned(), url: url.trim().to_owned() })
}

fn parse_weight(text: &str) -> Result<(String, u32), String> {
    let (name, weight) = text.split_once('=').ok_or_else(|| format!("`{text}`: expected name=weight"))?;
    let weight = weight.trim().parse().map_err(|_| format!("`{weight}`: a weight is a whole number"))?;
    Ok((name.trim().to_owned(), weight))
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}

/// One merchant's credentials.
#[derive(Clone)]
pub struct ApiKey {
    pub merchant_id: String,
    pub secret: String,
}

impl std::fmt::Debug for ApiKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ApiKey").field("merchant_id", &self.merchant_id).field("secret", &"<redacted>").finish()
    }
}

impl std::fmt::Debug for Config {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Config")
            .field("listen", &self.listen)
            .field("bank_url", &self.bank_url)
            .field("store_url", &self.store_url)
            .field("api_keys", &self.api_keys)
            .field("admin_key", &self.admin_key.as_ref().map(|_| "<redacted>"))
            .finish_non_exhaustive()
    }
}

pub const MIN_SECRET_LEN: usize = 12;

fn parse_api_key(raw: &str) -> Result<ApiKey, String> {
    let (merchant, secret) = raw.trim().split_once(':').ok_or("expected merchant_id:secret")?;
    let merchant_ok = (1..=64).contains(&merchant.len())
        && merchant.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
    if !merchant_ok {
        return Err(format!("merchant id `{merchant}` must be 1 to 64 letters, digits, `_` or `-`"));
    }
    if secret.len() < MIN_SECRET_LEN || !secret.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(format!("the secret of `{merchant}` must be at least {MIN_SECRET_LEN} visible characters"));
    }
    Ok(ApiKey { merchant_id: merchant.to_owned(), secret: secret.to_owned() })
}

impl Config {
    /// A configuration for tests: the command line's defaults, the given store and API keys,
    /// without reading the environment.
    pub fn for_tests(bank_url: &str, store_url: &str, api_keys: &[(&str, &str)]) -> Self {
        let mut args: Vec<String> = vec!["payment-api".into()];
        args.extend(["--bank-url".into(), bank_url.into(), "--store".into(), store_url.into()]);
        let keys: Vec<String> = api_keys.iter().map(|(m, s)| format!("{m}:{s}")).collect();
        args.extend(["--api-keys".into(), keys.join(",")]);
        let mut config = Self::try_parse_from(args).unwrap_or_else(|e| panic!("test config: {e}"));
        config.fingerprint_key = Some("test-fingerprint-key".into());
        config.admin_key = Some("test-admin-key-0123456789".into());
        config
    }

    pub fn lease(&self) -> Duration {
        Duration::from_millis(self.lease_ms)
    }

    pub fn retention(&self) -> Duration {
        Duration::from_secs(self.idempotency_retention_s)
    }

    pub fn commit_window(&self) -> Duration {
        Duration::from_millis(self.commit_window_ms)
    }

    pub fn authorization_ttl(&self) -> Duration {
        Duration::from_secs(self.authorization_ttl_s)
    }

    pub fn guard(&self) -> GuardConfig {
        GuardConfig {
            retry: RetryConfig {
                max_attempts: self.max_attempts,
                attempt_timeout: Duration::from_millis(self.attempt_timeout_ms),
                deadline: Duration::from_millis(self.deadline_ms),
                backoff_base: Duration::from_millis(self.backoff_base_ms),
                backoff_multiplier: self.backoff_multiplier,
                backoff_cap: Duration::from_millis(self.backoff_max_ms),
            },
            breaker: BreakerConfig {
                window_size: self.breaker_window,
                minimum_calls: self.breaker_min_calls,
                failure_rate_threshold: self.breaker_failure_rate,
                slow_call_rate_threshold: self.breaker_slow_call_rate,
                slow_call_duration: Duration::from_millis(self.breaker_slow_call_ms),
                open_duration: Duration::from_millis(self.breaker_open_ms),
                open_duration_multiplier: 2.0,
                max_open_duration: Duration::from_millis(self.breaker_open_max_ms),
                half_open_probes: self.breaker_half_open_probes,
            },
            budget: BudgetConfig {
                retry_ratio: self.retry_budget_ratio,
                min_retries_per_sec: self.retry_budget_min_per_sec,
                window: Duration::from_secs(10),
            },
            max_concurrent_calls: self.bank_max_concurrency,
        }
    }

    /// Checks what clap cannot: relations between settings.
    pub fn validate(&self) -> Result<(), String> {
        if self.api_keys.is_empty() {
            return Err("at least one API key is required (--api-keys / API_KEYS)".into());
        }
        if self.lease_ms < self.deadline_ms + self.attempt_timeout_ms {
            return Err(format!(
                "IDEMPOTENCY_LEASE_MS ({}) must be at least BANK_DEADLINE_MS + BANK_ATTEMPT_TIMEOUT_MS ({})",
                self.lease_ms,
                self.deadline_ms + self.attempt_timeout_ms
            ));
        }
        if self.store_url != "memory" && self.fingerprint_key.as_ref().is_none_or(|k| k.len() < MIN_SECRET_LEN) {
            return Err(format!(
                "a persistent store needs FINGERPRINT_KEY (at least {MIN_SECRET_LEN} characters) so that \
                 replays survive restarts"
            ));
        }
        if !(self.rate_limit_per_sec.is_finite() && self.rate_limit_per_sec > 0.0) || self.rate_limit_burst == 0 {
            return Err("RATE_LIMIT_PER_SEC and RATE_LIMIT_BURST must be positive".into());
        }
        if self.admin_key.as_ref().is_some_and(|k| k.len() < MIN_SECRET_LEN) {
            return Err(format!("ADMIN_KEY must be at least {MIN_SECRET_LEN} characters"));
        }
        if self.currencies.iter().any(|c| c.len() != 3 || !c.bytes().all(|b| b.is_ascii_uppercase())) {
            return Err("CURRENCIES must be three-letter upper-case ISO 4217 codes".into());
        }
        let banks = self.bank_list();
        for (i, bank) in banks.iter().enumerate() {
            if banks[..i].iter().any(|b| b.name == bank.name) {
                return Err(format!("BANKS names `{}` twice", bank.name));
            }
        }
        for bank in &banks {
            if let Some(list) = self.currencies_of(&bank.name)
                && let Some(wrong) = list.iter().find(|c| !self.currencies.contains(c))
            {
                return Err(format!(
                    "BANK_CURRENCIES_{}: `{wrong}` is not one of CURRENCIES ({})",
                    bank.name.to_ascii_uppercase().replace('-', "_"),
                    self.currencies.join(",")
                ));
            }
        }
        if let Some((name, _)) = self.routing_weights.iter().find(|(name, _)| !banks.iter().any(|b| &b.name == name)) {
            return Err(format!("ROUTING_WEIGHTS names `{name}`, which is not a bank of BANKS"));
        }
        if self.routing == Routing::Weighted && self.routing_weights.iter().all(|(_, w)| *w == 0) {
            return Err("ROUTING=weighted needs ROUTING_WEIGHTS with a positive weight".into());
        }
        if self.webhook_lease_ms <= self.webhook_timeout_ms {
            return Err(format!(
                "WEBHOOK_LEASE_MS ({}) must be longer than WEBHOOK_TIMEOUT_MS ({})",
                self.webhook_lease_ms, self.webhook_timeout_ms
            ));
        }
        resilience::Guard::new(self.guard()).map(drop).map_err(|e| e.to_string())
    }

    /// The banks, in priority order: `BANKS`, or `BANK_URL` as one bank named `default`.
    pub fn bank_list(&self) -> Vec<BankSpec> {
        if self.banks.is_empty() {
            vec![BankSpec { name: "default".to_owned(), url: self.bank_url.clone() }]
        } else {
            self.banks.clone()
        }
    }

    /// The currencies a bank is limited to, if it is: from `bank_currency_limits`, else from
    /// `BANK_CURRENCIES_<NAME>` (its name upper-cased, `-` as `_`).
    pub fn currencies_of(&self, name: &str) -> Option<Vec<String>> {
        match &self.bank_currency_limits {
            Some(limits) => limits.iter().find(|(bank, _)| bank == name).map(|(_, list)| list.clone()),
            None => Self::bank_currencies(name),
        }
    }

    fn bank_currencies(name: &str) -> Option<Vec<String>> {
        let variable = format!("BANK_CURRENCIES_{}", name.to_ascii_uppercase().replace('-', "_"));
        let value = std::env::var(variable).ok()?;
        Some(value.split(',').map(|c| c.trim().to_owned()).filter(|c| !c.is_empty()).collect())
    }

    pub fn event_retention(&self) -> Duration {
        Duration::from_secs(self.event_retention_s)
    }
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    use super::*;

    #[test]
    fn every_flag_has_an_environment_variable_and_help() {
        for arg in Config::command().get_arguments() {
            let id = arg.get_id().as_str();
            if matches!(id, "help" | "version") {
                continue;
            }
            assert!(arg.get_env().is_some(), "--{id}: env");
            assert!(arg.get_help().is_some(), "--{id}: help");
        }
    }

    #[test]
    fn refuses_to_start_without_keys_or_with_weak_ones() {
        assert!(Config::try_parse_from(["payment-api"]).is_err(), "API keys are required");
        assert!(Config::try_parse_from(["payment-api", "--api-keys", "shop:short"]).is_err());
        assert!(Config::try_parse_from(["payment-api", "--api-keys", "bad id:0123456789abcdef"]).is_err());
        let config =
            Config::try_parse_from(["payment-api", "--api-keys", "shop:0123456789abcdef", "--store", "memory"]);
        let config = config.map_err(|e| e.to_string()).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(config.validate(), Ok(()));
        let persistent = Config { store_url: "redb:x.redb".into(), ..config };
        assert!(persistent.validate().is_err(), "a persistent store needs a fingerprint key");
    }

    #[test]
    fn several_banks_are_checked_before_the_gateway_starts() {
        let parse = |extra: &[&str]| {
            let mut args = vec!["payment-api", "--api-keys", "shop:0123456789abcdef", "--store", "memory"];
            args.extend_from_slice(extra);
            Config::try_parse_from(args)
        };
        let two = ["--banks", "a=http://127.0.0.1:1,b=http://127.0.0.1:2"];
        let config = parse(&two).map_err(|e| e.to_string()).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(config.validate(), Ok(()));
        assert_eq!(config.bank_list().len(), 2);
        assert!(
            parse(&["--banks", "a=http://x,a=http://y"]).map(|c| c.validate().is_err()).unwrap_or(true),
            "a name twice"
        );
        assert!(parse(&["--banks", "bad name=http://x"]).is_err());
        let weighted = parse(&[two[0], two[1], "--routing", "weighted", "--routing-weights", "c=10"]);
        assert!(weighted.map(|c| c.validate().is_err()).unwrap_or(true), "a weight for no bank");
        let limited = Config { bank_currency_limits: Some(vec![("a".into(), vec!["XYZ".into()])]), ..config };
        assert!(limited.validate().is_err(), "a bank limited to a currency the gateway does not take");
    }
}
