//! What a person tunes: the chaos configuration, its validation and the named presets.

use serde::{Deserialize, Serialize};

use http_conventions::problem::FieldError;

/// Upper bounds that keep a typo from hanging the bank for a day.
pub const MAX_DELAY_MS: u64 = 600_000;
pub const MAX_RETRY_AFTER_S: u64 = 3_600;

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
    /// The fault rates in the order [`super::ChaosPlan`] draws them.
    pub fn fault_rates(&self) -> [f64; 5] {
        [self.failure_rate, self.ambiguous_rate, self.timeout_rate, self.reset_rate, self.throttle_rate]
    }

    /// Every problem with this configuration, empty when it is usable.
    pub fn validate(&self) -> Vec<FieldError> {
        let mut errors = Vec::new();
        let rates = [
            ("failure_rate", self.failure_rate),
            ("ambiguous_rate", self.ambiguous_rate),
            ("timeout_rate", self.timeout_rate),
            ("reset_rate", self.reset_rate),
            ("throttle_rate", self.throttle_rate),
            ("slow_rate", self.slow_rate),
        ];
        for (field, rate) in rates {
            if !(0.0..=1.0).contains(&rate) {
                errors.push(FieldError::new(field, "must be a fraction between 0 and 1"));
            }
        }
        let sum: f64 = self.fault_rates().iter().sum();
        if sum > 1.0 + 1e-9 {
            errors.push(FieldError::new(
                "failure_rate",
                format!(
                    "failure_rate + ambiguous_rate + timeout_rate + reset_rate + throttle_rate is {sum:.4}; \
                     a request suffers at most one fault, so the sum must be at most 1"
                ),
            ));
        }
        let delays = [
            ("hang_ms", self.hang_ms),
            ("slow_ms", self.slow_ms),
            ("latency.base_ms", self.latency.base_ms),
            ("latency.jitter_ms", self.latency.jitter_ms),
        ];
        for (field, ms) in delays {
            if ms > MAX_DELAY_MS {
                errors.push(FieldError::new(field, format!("must be at most {MAX_DELAY_MS} ms")));
            }
        }
        if self.retry_after_s > MAX_RETRY_AFTER_S {
            errors.push(FieldError::new("retry_after_s", format!("must be at most {MAX_RETRY_AFTER_S} s")));
        }
        errors
    }
}

/// The named presets, in the order `GET /chaos/presets` lists them.
pub const PRESET_NAMES: [&str; 7] = ["healthy", "flaky", "degraded", "throttled", "brownout", "outage", "chaos"];

/// A named configuration, or `None` for an unknown name.
pub fn preset(name: &str) -> Option<ChaosConfig> {
    let healthy = ChaosConfig::default();
    let config = match name {
        "healthy" => healthy,
        // Occasional errors of every recoverable kind, quick answers.
        "flaky" => ChaosConfig {
            failure_rate: 0.10,
            ambiguous_rate: 0.02,
            timeout_rate: 0.02,
            reset_rate: 0.03,
            hang_ms: 3_000,
            latency: Latency { base_ms: 20, jitter_ms: 30 },
            ..healthy
        },
        // Slow and sometimes timing out: what trips a slow-call-rate breaker.
        "degraded" => ChaosConfig {
            failure_rate: 0.05,
            timeout_rate: 0.05,
            hang_ms: 3_000,
            latency: Latency { base_ms: 200, jitter_ms: 300 },
            slow_rate: 0.30,
            slow_ms: 1_500,
            ..healthy
        },
        // The bank sheds load: half the requests are told to come back later.
        "throttled" => ChaosConfig { throttle_rate: 0.5, retry_after_s: 1, ..healthy },
        // Mostly failing, partly hanging: a breaker should open.
        "brownout" => ChaosConfig {
            failure_rate: 0.50,
            timeout_rate: 0.10,
            ambiguous_rate: 0.05,
            hang_ms: 3_000,
            latency: Latency { base_ms: 50, jitter_ms: 100 },
            ..healthy
        },
        "outage" => ChaosConfig { outage: true, ..healthy },
        // Every fault kind at once, 30 % in all: the soak test's default.
        "chaos" => ChaosConfig {
            failure_rate: 0.10,
            ambiguous_rate: 0.05,
            timeout_rate: 0.05,
            reset_rate: 0.05,
            throttle_rate: 0.05,
            hang_ms: 3_000,
            latency: Latency { base_ms: 5, jitter_ms: 20 },
            slow_rate: 0.05,
            slow_ms: 1_200,
            ..healthy
        },
        _ => return None,
    };
    Some(config)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_preset_is_valid() {
        for name in PRESET_NAMES {
            let config = preset(name).unwrap_or_else(|| panic!("preset {name} missing"));
            assert_eq!(config.validate(), vec![], "preset {name}");
        }
        assert!(preset("nope").is_none());
    }

    #[test]
    fn rates_out_of_range_or_summing_past_one_are_rejected() {
        let bad = ChaosConfig { failure_rate: 1.5, ..ChaosConfig::default() };
        assert!(bad.validate().iter().any(|e| e.field == "failure_rate"));
        let nan = ChaosConfig { slow_rate: f64::NAN, ..ChaosConfig::default() };
        assert!(nan.validate().iter().any(|e| e.field == "slow_rate"));
        let sum = ChaosConfig { failure_rate: 0.6, reset_rate: 0.5, ..ChaosConfig::default() };
        assert_eq!(sum.validate().len(), 1);
        let full = ChaosConfig { failure_rate: 0.5, reset_rate: 0.5, ..ChaosConfig::default() };
        assert!(full.validate().is_empty());
    }
}
