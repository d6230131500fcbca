//! Exponential backoff with full jitter: the n-th retry waits a uniformly random time between zero
//! and `min(cap, base × multiplier^(n-1))`. Full jitter spreads retries of many clients that
//! failed together, so they do not hit the recovering service in synchronised waves.

use std::time::Duration;

use crate::error::{ConfigError, ensure};

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Backoff {
    base: Duration,
    multiplier: f64,
    cap: Duration,
}

impl Backoff {
    pub fn try_new(base: Duration, multiplier: f64, cap: Duration) -> Result<Self, ConfigError> {
        ensure(!base.is_zero(), "backoff base", "must be positive")?;
        ensure(multiplier.is_finite() && multiplier >= 1.0, "backoff multiplier", "must be at least 1")?;
        ensure(cap >= base, "backoff cap", "must be at least the base")?;
        Ok(Self { base, multiplier, cap })
    }

    /// The longest wait before retry number `retry` (1 for the first retry).
    pub fn ceiling(&self, retry: u32) -> Duration {
        let exponent = retry.saturating_sub(1).min(1_000) as i32;
        let grown = self.base.as_secs_f64() * self.multiplier.powi(exponent);
        if grown >= self.cap.as_secs_f64() { self.cap } else { Duration::from_secs_f64(grown) }
    }

    /// The wait before retry number `retry`, given a uniform random draw in `[0, 1)`.
    pub fn delay(&self, retry: u32, draw: f64) -> Duration {
        self.ceiling(retry).mul_f64(draw.clamp(0.0, 1.0))
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    #[test]
    fn grows_by_the_multiplier_up_to_the_cap() {
        let b = Backoff::try_new(Duration::from_millis(100), 2.0, Duration::from_secs(2)).unwrap();
        let ceilings: Vec<u128> = (1..=7).map(|n| b.ceiling(n).as_millis()).collect();
        assert_eq!(ceilings, [100, 200, 400, 800, 1_600, 2_000, 2_000]);
        assert!(Backoff::try_new(Duration::ZERO, 2.0, Duration::from_secs(1)).is_err());
        assert!(Backoff::try_new(Duration::from_secs(2), 2.0, Duration::from_secs(1)).is_err());
        assert!(Backoff::try_new(Duration::from_secs(1), 0.5, Duration::from_secs(1)).is_err());
    }

    proptest! {
        #[test]
        fn delays_stay_within_zero_and_a_monotone_capped_ceiling(
            base_ms in 1u64..5_000,
            multiplier in 1.0f64..10.0,
            extra_cap_ms in 0u64..100_000,
            retry in 1u32..200,
            draw in 0.0f64..1.0,
        ) {
            let cap = Duration::from_millis(base_ms + extra_cap_ms);
            let b = Backoff::try_new(Duration::from_millis(base_ms), multiplier, cap).unwrap();
            let delay = b.delay(retry, draw);
            prop_assert!(delay <= b.ceiling(retry));
            prop_assert!(b.ceiling(retry) <= cap);
            prop_assert!(b.ceiling(retry) >= Duration::from_millis(base_ms).min(cap));
            prop_assert!(b.ceiling(retry + 1) >= b.ceiling(retry));
        }
    }
}
