//! A retry budget: retries may be at most a share of recent calls plus a small floor per second,
//! so that when the service fails for everyone, clients add a bounded trickle of retries instead
//! of multiplying the load by the number of attempts (a retry storm).

use std::collections::VecDeque;
use std::sync::Mutex;
use std::time::Duration;

use tokio::time::Instant;

use crate::error::{ConfigError, ensure};

#[derive(Debug, Clone, PartialEq)]
pub struct BudgetConfig {
    /// Retries allowed per call made, over the window (0.2: one retry per five calls).
    pub retry_ratio: f64,
    /// Retries always allowed per second, so a quiet client can still retry.
    pub min_retries_per_sec: u32,
    /// How far back calls and retries are counted.
    pub window: Duration,
}

impl Default for BudgetConfig {
    fn default() -> Self {
        Self { retry_ratio: 0.2, min_retries_per_sec: 10, window: Duration::from_secs(10) }
    }
}

impl BudgetConfig {
    pub fn validate(&self) -> Result<(), ConfigError> {
        ensure(self.retry_ratio.is_finite() && self.retry_ratio >= 0.0, "retry_ratio", "must be at least 0")?;
        ensure(self.window >= Duration::from_secs(1), "budget window", "must be at least one second")?;
        Ok(())
    }
}

#[derive(Debug)]
pub struct RetryBudget {
    config: BudgetConfig,
    started: Instant,
    buckets: Mutex<VecDeque<Bucket>>,
}

/// Calls and retries in one second.
#[derive(Debug, Clone, Copy)]
struct Bucket {
    second: u64,
    calls: u64,
    retries: u64,
}

impl RetryBudget {
    pub fn new(config: BudgetConfig) -> Result<Self, ConfigError> {
        config.validate()?;
        Ok(Self { config, started: Instant::now(), buckets: Mutex::new(VecDeque::new()) })
    }

    /// Counts a first attempt: it earns `retry_ratio` retries.
    pub fn record_call(&self) {
        self.with_current(|bucket| bucket.calls += 1);
    }

    /// Takes one retry from the budget, or says no.
    pub fn try_withdraw(&self) -> bool {
        let floor = self.config.min_retries_per_sec as f64 * self.config.window.as_secs_f64();
        let mut allowed = false;
        self.with_buckets(|buckets| {
            let (calls, retries) = buckets.iter().fold((0, 0), |(c, r), b| (c + b.calls, r + b.retries));
            if (retries + 1) as f64 <= self.config.retry_ratio * calls as f64 + floor
                && let Some(current) = buckets.back_mut()
            {
                current.retries += 1;
                allowed = true;
            }
        });
        allowed
    }

    /// Calls and retries counted in the current window.
    pub fn totals(&self) -> (u64, u64) {
        let mut totals = (0, 0);
        self.with_buckets(|buckets| {
            totals = buckets.iter().fold((0, 0), |(c, r), b| (c + b.calls, r + b.retries));
        });
        totals
    }

    fn with_current(&self, update: impl FnOnce(&mut Bucket)) {
        self.with_buckets(|buckets| {
            if let Some(current) = buckets.back_mut() {
                update(current);
            }
        });
    }

    /// Runs `f` over the live buckets, the last one being the current second.
    fn with_buckets(&self, f: impl FnOnce(&mut VecDeque<Bucket>)) {
        let second = self.started.elapsed().as_secs();
        let window = self.config.window.as_secs().max(1);
        let mut buckets = self.buckets.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        while buckets.front().is_some_and(|b| b.second + window <= second) {
            buckets.pop_front();
        }
        if buckets.back().is_none_or(|b| b.second != second) {
            buckets.push_back(Bucket { second, calls: 0, retries: 0 });
        }
        f(&mut buckets);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn allows_a_share_of_calls_plus_a_floor_and_forgets_old_seconds() {
        let budget = RetryBudget::new(BudgetConfig {
            retry_ratio: 0.2,
            min_retries_per_sec: 1,
            window: Duration::from_secs(10),
        })
        .unwrap();
        for _ in 0..50 {
            budget.record_call();
        }
        // 0.2 × 50 + 1/s × 10 s = 20 retries.
        let granted = (0..100).filter(|_| budget.try_withdraw()).count();
        assert_eq!(granted, 20);
        assert_eq!(budget.totals(), (50, 20));

        tokio::time::advance(Duration::from_secs(11)).await;
        assert_eq!(budget.totals(), (0, 0), "the window moved past every bucket");
        let granted = (0..100).filter(|_| budget.try_withdraw()).count();
        assert_eq!(granted, 10, "only the floor remains");
    }

    #[test]
    fn zero_budget_refuses_every_retry() {
        let budget =
            RetryBudget::new(BudgetConfig { retry_ratio: 0.0, min_retries_per_sec: 0, ..BudgetConfig::default() })
                .unwrap();
        budget.record_call();
        assert!(!budget.try_withdraw());
    }
}
