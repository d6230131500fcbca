use std::time::Duration;

use crate::error::{ConfigError, ensure};

/// Circuit-breaker settings. The defaults: the last 200 calls (at least 100), open at ≥ 50 %
/// failures or ≥ 80 % slow calls (> 1 s), open 5 s at first and twice as long on each repeated
/// trip up to 60 s, 10 probes when half-open.
///
/// Why so many calls: a breaker must not cut off a bank that fails steadily below its threshold.
/// Over a window of 20 calls, a bank failing 30 % of the time crosses 50 % in about one window in
/// twenty by chance alone, and 3 half-open probes fail together a fifth of the time, doubling the
/// open period. Over 200 calls (judged from 100 on), the same bank stays under the threshold for
/// hundreds of thousands of calls (about 5 standard deviations away), while a bank failing 60 %
/// still trips within a window. Ten probes are resilience4j's default, and a fair sample. (These
/// supersede the first contract's 20 / 10 / 3.)
#[derive(Debug, Clone, PartialEq)]
pub struct BreakerConfig {
    /// How many recent calls the failure and slow-call rates are computed over.
    pub window_size: usize,
    /// The breaker never opens on fewer calls than this.
    pub minimum_calls: usize,
    /// Open when this share of the window failed (0 < rate ≤ 1).
    pub failure_rate_threshold: f64,
    /// Open when this share of the window was slow (0 < rate ≤ 1).
    pub slow_call_rate_threshold: f64,
    /// A call slower than this is slow, whatever its result.
    pub slow_call_duration: Duration,
    /// How long the first trip keeps the breaker open.
    pub open_duration: Duration,
    /// Each repeated trip (a failed probe) multiplies the open duration by this.
    pub open_duration_multiplier: f64,
    /// The open duration never grows past this.
    pub max_open_duration: Duration,
    /// How many trial calls half-open admits; it closes when their failure rate (slow calls
    /// counted as failures) stays under `failure_rate_threshold`.
    pub half_open_probes: u32,
}

impl Default for BreakerConfig {
    fn default() -> Self {
        Self {
            window_size: 200,
            minimum_calls: 100,
            failure_rate_threshold: 0.5,
            slow_call_rate_threshold: 0.8,
            slow_call_duration: Duration::from_secs(1),
            open_duration: Duration::from_secs(5),
            open_duration_multiplier: 2.0,
            max_open_duration: Duration::from_secs(60),
            half_open_probes: 10,
        }
    }
}

impl BreakerConfig {
    pub fn validate(&self) -> Result<(), ConfigError> {
        ensure(self.window_size >= 1, "window_size", "must be at least 1")?;
        ensure(
            (1..=self.window_size).contains(&self.minimum_calls),
            "minimum_calls",
            "must be between 1 and window_size",
        )?;
        let rate = |r: f64| r > 0.0 && r <= 1.0;
        ensure(rate(self.failure_rate_threshold), "failure_rate_threshold", "must be in (0, 1]")?;
        ensure(rate(self.slow_call_rate_threshold), "slow_call_rate_threshold", "must be in (0, 1]")?;
        ensure(!self.open_duration.is_zero(), "open_duration", "must be positive")?;
        ensure(
            self.open_duration_multiplier.is_finite() && self.open_duration_multiplier >= 1.0,
            "open_duration_multiplier",
            "must be at least 1",
        )?;
        ensure(self.max_open_duration >= self.open_duration, "max_open_duration", "must be at least open_duration")?;
        ensure(self.half_open_probes >= 1, "half_open_probes", "must be at least 1")?;
        Ok(())
    }

    /// How long the `trip`-th consecutive trip (1-based) keeps the breaker open.
    pub fn open_duration_for(&self, trip: u32) -> Duration {
        let factor = self.open_duration_multiplier.powi(trip.saturating_sub(1).min(64) as i32);
        let millis = (self.open_duration.as_secs_f64() * factor * 1_000.0).round();
        let cap = self.max_open_duration.as_millis() as f64;
        Duration::from_millis(millis.min(cap) as u64)
    }
}
