//! The bank's chaos settings (`GET`/`PUT`/`PATCH /chaos`) and its fault counters (`/chaos/stats`):
//! what a person tunes, and what they see it did. The bank validates and applies them; the
//! dashboard reads and changes them as these types.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

/// Fixed latency plus a uniform random part, added to every banking request.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Latency {
    pub base_ms: u64,
    pub jitter_ms: u64,
}

/// The faults the bank injects, decided per HTTP request.
///
/// The five fault rates are mutually exclusive shares of requests (a request suffers at most one
/// fault), so they must add up to at most 1. Latency and the slow tail are added on top of
/// whatever fault, or none, was chosen.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ChaosConfig {
    /// 503 or 500 at once; the request is not processed.
    pub failure_rate: f64,
    /// The request is processed and committed, then the answer is lost: a 500 or a dropped
    /// connection.
    pub ambiguous_rate: f64,
    /// The request hangs for `hang_ms`, then is processed anyway (a late commit).
    pub timeout_rate: f64,
    pub hang_ms: u64,
    /// The TCP connection is reset with no HTTP response; the request is not processed.
    pub reset_rate: f64,
    /// 429 with `Retry-After: retry_after_s`; the request is not processed.
    pub throttle_rate: f64,
    pub retry_after_s: u64,
    pub latency: Latency,
    /// Share of requests that get `slow_ms` of extra latency: the slow tail.
    pub slow_rate: f64,
    pub slow_ms: u64,
    /// Every banking request is answered 503 at once.
    pub outage: bool,
    /// Seed of the fault generator. Setting it restarts the fault sequence; reading it tells
    /// which seed the current sequence started from.
    pub seed: Option<u64>,
}

impl Default for ChaosConfig {
    /// The healthy bank: no faults, no added latency.
    fn default() -> Self {
        Self {
            failure_rate: 0.0,
            ambiguous_rate: 0.0,
            timeout_rate: 0.0,
            hang_ms: 5_000,
            reset_rate: 0.0,
            throttle_rate: 0.0,
            retry_after_s: 1,
            latency: Latency::default(),
            slow_rate: 0.0,
            slow_ms: 1_500,
            outage: false,
            seed: None,
        }
    }
}

impl ChaosConfig {
    /// The fault rates in the order the bank's plan draws them.
    pub fn fault_rates(&self) -> [f64; 5] {
        [self.failure_rate, self.ambiguous_rate, self.timeout_rate, self.reset_rate, self.throttle_rate]
    }
}

/// How many banking requests saw each fault since `since`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChaosStats {
    pub since: DateTime<Utc>,
    pub requests: u64,
    pub injected: InjectedCounts,
    /// Requests whose fault kind came from the `X-Chaos-Fault` header.
    #[serde(default)]
    pub forced_by_header: u64,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct InjectedCounts {
    pub none: u64,
    pub failure: u64,
    pub ambiguous: u64,
    pub timeout: u64,
    pub reset: u64,
    pub throttle: u64,
    pub outage: u64,
    /// Requests that got the slow tail (counted on top of their fault kind).
    pub slow: u64,
}
