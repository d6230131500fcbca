//! What a person tunes: the chaos configuration (its type is the wire's, shared with the
//! dashboard), its validation and the named presets.

use http_conventions::problem::FieldError;
pub use wire::chaos::{ChaosConfig, Latency};

/// Upper bounds that keep a typo from hanging the bank for a day.
pub const MAX_DELAY_MS: u64 = 600_000;
pub const MAX_RETRY_AFTER_S: u64 = 3_600;

/// Every problem with a configuration, empty when it is usable.
pub fn validate(config: &ChaosConfig) -> Vec<FieldError> {
    let mut errors = Vec::new();
    let rates = [
        ("failure_rate", config.failure_rate),
        ("ambiguous_rate", config.ambiguous_rate),
        ("timeout_rate", config.timeout_rate),
        ("reset_rate", config.reset_rate),
        ("throttle_rate", config.throttle_rate),
        ("slow_rate", config.slow_rate),
    ];
    for (field, rate) in rates {
        if !(0.0..=1.0).contains(&rate) {
            errors.push(FieldError::new(field, "must be a fraction between 0 and 1"));
        }
    }
    let sum: f64 = config.fault_rates().iter().sum();
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
        ("hang_ms", config.hang_ms),
        ("slow_ms", config.slow_ms),
        ("latency.base_ms", config.latency.base_ms),
        ("latency.jitter_ms", config.latency.jitter_ms),
    ];
    for (field, ms) in delays {
        if ms > MAX_DELAY_MS {
            errors.push(FieldError::new(field, format!("must be at most {MAX_DELAY_MS} ms")));
        }
    }
    if config.retry_after_s > MAX_RETRY_AFTER_S {
        errors.push(FieldError::new("retry_after_s", format!("must be at most {MAX_RETRY_AFTER_S} s")));
    }
    errors
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
            assert_eq!(validate(&config), vec![], "preset {name}");
        }
        assert!(preset("nope").is_none());
    }

    #[test]
    fn rates_out_of_range_or_summing_past_one_are_rejected() {
        let bad = ChaosConfig { failure_rate: 1.5, ..ChaosConfig::default() };
        assert!(validate(&bad).iter().any(|e| e.field == "failure_rate"));
        let nan = ChaosConfig { slow_rate: f64::NAN, ..ChaosConfig::default() };
        assert!(validate(&nan).iter().any(|e| e.field == "slow_rate"));
        let sum = ChaosConfig { failure_rate: 0.6, reset_rate: 0.5, ..ChaosConfig::default() };
        assert_eq!(validate(&sum).len(), 1);
        let full = ChaosConfig { failure_rate: 0.5, reset_rate: 0.5, ..ChaosConfig::default() };
        assert!(validate(&full).is_empty());
    }
}
