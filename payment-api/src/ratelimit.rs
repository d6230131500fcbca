//! Per-merchant rate limiting with a token bucket: `burst` requests at once, refilled at `rate`
//! per second. A merchant over its limit gets 429 with `Retry-After`; every answer carries the
//! `RateLimit-*` headers so a client can pace itself before it is refused.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use tokio::time::Instant;

#[derive(Debug)]
pub struct RateLimiter {
    rate: f64,
    burst: f64,
    buckets: Mutex<HashMap<String, Bucket>>,
}

#[derive(Debug, Clone, Copy)]
struct Bucket {
    tokens: f64,
    updated: Instant,
}

/// What the limiter decided, with what the headers report.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Decision {
    pub allowed: bool,
    pub limit: u64,
    pub remaining: u64,
    /// Seconds until the bucket is full again.
    pub reset_s: u64,
    /// When refused: how long until one request is allowed.
    pub retry_after: Duration,
}

impl RateLimiter {
    pub fn new(rate: f64, burst: u32) -> Self {
        Self { rate, burst: f64::from(burst), buckets: Mutex::new(HashMap::new()) }
    }

    pub fn check(&self, merchant: &str) -> Decision {
        let now = Instant::now();
        let mut buckets = self.buckets.lock().unwrap_or_else(|p| p.into_inner());
        let bucket = buckets.entry(merchant.to_owned()).or_insert(Bucket { tokens: self.burst, updated: now });
        let elapsed = now.saturating_duration_since(bucket.updated).as_secs_f64();
        bucket.tokens = (bucket.tokens + elapsed * self.rate).min(self.burst);
        bucket.updated = now;
        let allowed = bucket.tokens >= 1.0;
        if allowed {
            bucket.tokens -= 1.0;
        }
        let missing = (1.0 - bucket.tokens).max(0.0);
        Decision {
            allowed,
            limit: self.burst as u64,
            remaining: bucket.tokens.floor() as u64,
            reset_s: ((self.burst - bucket.tokens) / self.rate).ceil() as u64,
            retry_after: Duration::from_secs_f64(missing / self.rate),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn allows_the_burst_then_the_rate() {
        let limiter = RateLimiter::new(10.0, 5);
        for i in 0..5 {
            let decision = limiter.check("m");
            assert!(decision.allowed, "request {i} is within the burst");
            assert_eq!(decision.remaining, 4 - i);
        }
        let refused = limiter.check("m");
        assert!(!refused.allowed);
        assert_eq!(refused.retry_after, Duration::from_millis(100));
        assert!(limiter.check("other").allowed, "merchants have their own buckets");
        tokio::time::advance(Duration::from_millis(100)).await;
        assert!(limiter.check("m").allowed, "one token refilled after 1/rate");
        assert!(!limiter.check("m").allowed);
    }
}
