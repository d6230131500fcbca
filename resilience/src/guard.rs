//! The guard around every call to the unreliable service: a concurrency slot, then attempts, each
//! behind the circuit breaker and bounded by a per-attempt timeout, retried with exponential
//! backoff and full jitter while attempts, the overall deadline and the retry budget allow.
//!
//! The caller's classification of each attempt ([`Verdict`]) drives all of it, and the
//! [`CallReport`] tells the caller whether the service may have acted, which is what decides
//! between "safe to tell the client it failed" and "ask the service what happened".

use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::Duration;

use tokio::time::Instant;
use tracing::debug;

use crate::backoff::Backoff;
use crate::breaker::{Breaker, BreakerConfig, Permit, Rejected};
use crate::budget::{BudgetConfig, RetryBudget};
use crate::bulkhead::{Bulkhead, Overloaded};
use crate::error::{ConfigError, ensure};
use crate::outcome::{Outcome, Verdict};

/// Retry settings. Defaults are the contract's: 3 attempts of at most 2 s each, backoff from
/// 100 ms doubling to 2 s with full jitter, everything within 8 s.
#[derive(Debug, Clone, PartialEq)]
pub struct RetryConfig {
    /// Attempts in all, the first included.
    pub max_attempts: u32,
    pub attempt_timeout: Duration,
    /// The whole call, attempts and waits, ends by then.
    pub deadline: Duration,
    pub backoff_base: Duration,
    pub backoff_multiplier: f64,
    pub backoff_cap: Duration,
}

impl Default for RetryConfig {
    fn default() -> Self {
        Self {
            max_attempts: 3,
            attempt_timeout: Duration::from_secs(2),
            deadline: Duration::from_secs(8),
            backoff_base: Duration::from_millis(100),
            backoff_multiplier: 2.0,
            backoff_cap: Duration::from_secs(2),
        }
    }
}

/// Everything the guard needs; see each part's defaults.
#[derive(Debug, Clone, PartialEq)]
pub struct GuardConfig {
    pub retry: RetryConfig,
    pub breaker: BreakerConfig,
    pub budget: BudgetConfig,
    /// Calls in flight at once; more are refused as overloaded.
    pub max_concurrent_calls: usize,
}

impl Default for GuardConfig {
    fn default() -> Self {
        Self {
            retry: RetryConfig::default(),
            breaker: BreakerConfig::default(),
            budget: BudgetConfig::default(),
            max_concurrent_calls: 512,
        }
    }
}

/// What the operation is told about its attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AttemptInfo {
    /// 1 for the first attempt.
    pub number: u32,
    /// How long this attempt may take before it is abandoned.
    pub timeout: Duration,
}

/// Why the guard stopped trying.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StopReason {
    AttemptsExhausted,
    /// Another wait and attempt would end past the deadline (a `Retry-After` included).
    DeadlineExceeded,
    /// The retry budget refused a retry.
    BudgetExhausted,
    /// The breaker refused a retry.
    CircuitOpen(Rejected),
}

/// How the call ended.
#[derive(Debug)]
pub enum CallResult<R> {
    /// An attempt succeeded.
    Success(R),
    /// An attempt got a definitive business answer (a decline).
    Definitive(R),
    /// Every attempt that ran failed. `last` is the last attempt's result, `None` if it timed out.
    Failed { last: Option<R>, last_outcome: Outcome, stop: StopReason },
    /// Refused before any attempt: the service was not contacted.
    CircuitOpen(Rejected),
    /// Refused before any attempt: too many calls in flight.
    Overloaded(Overloaded),
}

/// The call's result plus what the caller must know to answer its own client.
#[derive(Debug)]
pub struct CallReport<R> {
    pub result: CallResult<R>,
    pub attempts: u32,
    /// True when some attempt may have been acted on (succeeded, got a definitive answer, timed
    /// out or was ambiguous). False means the service surely did nothing.
    pub may_have_acted: bool,
    /// Attempts with no whole answer (timed out, or lost on the way): the service may still be
    /// working on them, so "it has no record of the request" proves nothing until they are over.
    pub unanswered: u32,
    pub elapsed: Duration,
}

/// A breaker permit taken before the call's other work, so that a caller asks the breaker once:
/// refused, it turns the work away before doing any of it; admitted, the call's first attempt
/// goes under this permit. Dropped unused, it frees a half-open probe slot without judging.
#[derive(Debug)]
pub struct Admission {
    permit: Permit,
}

/// Counters since start, for metrics.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct GuardStats {
    pub calls: u64,
    pub attempts: u64,
    pub retries: u64,
    pub attempt_timeouts: u64,
    pub budget_refusals: u64,
    pub rejected_by_breaker: u64,
    pub rejected_overloaded: u64,
}

#[derive(Debug, Default)]
struct Counters {
    calls: AtomicU64,
    attempts: AtomicU64,
    retries: AtomicU64,
    attempt_timeouts: AtomicU64,
    budget_refusals: AtomicU64,
    rejected_by_breaker: AtomicU64,
    rejected_overloaded: AtomicU64,
}

#[derive(Debug)]
pub struct Guard {
    retry: RetryConfig,
    backoff: Backoff,
    breaker: Breaker,
    budget: RetryBudget,
    bulkhead: Bulkhead,
    counters: Counters,
}

impl Guard {
    pub fn new(config: GuardConfig) -> Result<Self, ConfigError> {
        let retry = config.retry;
        ensure(retry.max_attempts >= 1, "max_attempts", "must be at least 1")?;
        ensure(!retry.attempt_timeout.is_zero(), "attempt_timeout", "must be positive")?;
        ensure(retry.deadline >= retry.attempt_timeout, "deadline", "must be at least attempt_timeout")?;
        let backoff = Backoff::try_new(retry.backoff_base, retry.backoff_multiplier, retry.backoff_cap)?;
        Ok(Self {
            retry,
            backoff,
            breaker: Breaker::new(config.breaker)?,
            budget: RetryBudget::new(config.budget)?,
            bulkhead: Bulkhead::new(config.max_concurrent_calls)?,
            counters: Counters::default(),
        })
    }

    pub fn breaker(&self) -> &Breaker {
        &self.breaker
    }

    pub fn bulkhead(&self) -> &Bulkhead {
        &self.bulkhead
    }

    pub fn retry_config(&self) -> &RetryConfig {
        &self.retry
    }

    pub fn stats(&self) -> GuardStats {
        let c = &self.counters;
        GuardStats {
            calls: c.calls.load(Relaxed),
            attempts: c.attempts.load(Relaxed),
            retries: c.retries.load(Relaxed),
            attempt_timeouts: c.attempt_timeouts.load(Relaxed),
            budget_refusals: c.budget_refusals.load(Relaxed),
            rejected_by_breaker: c.rejected_by_breaker.load(Relaxed),
            rejected_overloaded: c.rejected_overloaded.load(Relaxed),
        }
    }

    /// Asks the breaker for the call's first attempt now, before the caller does anything else.
    pub fn admit(&self) -> Result<Admission, Rejected> {
        self.breaker.permit().map(|permit| Admission { permit }).inspect_err(|_| {
            self.counters.rejected_by_breaker.fetch_add(1, Relaxed);
        })
    }

    /// Runs `operation` with every protection, classifying each attempt's result with `classify`.
    ///
    /// Cancel-safe: dropping the returned future frees its concurrency slot and its breaker permit
    /// (a half-open probe slot included) without judging the service.
    pub async fn call<R, Op, Fut, Classify>(&self, operation: Op, classify: Classify) -> CallReport<R>
    where
        Op: FnMut(AttemptInfo) -> Fut,
        Fut: Future<Output = R>,
        Classify: Fn(&R) -> Verdict,
    {
        let admission = self.breaker.permit().map(|permit| Admission { permit });
        self.call_with(admission, operation, classify).await
    }

    /// [`Guard::call`] for a call already admitted by [`Guard::admit`].
    pub async fn call_admitted<R, Op, Fut, Classify>(
        &self,
        admission: Admission,
        operation: Op,
        classify: Classify,
    ) -> CallReport<R>
    where
        Op: FnMut(AttemptInfo) -> Fut,
        Fut: Future<Output = R>,
        Classify: Fn(&R) -> Verdict,
    {
        self.call_with(Ok(admission), operation, classify).await
    }

    async fn call_with<R, Op, Fut, Classify>(
        &self,
        first: Result<Admission, Rejected>,
        mut operation: Op,
        classify: Classify,
    ) -> CallReport<R>
    where
        Op: FnMut(AttemptInfo) -> Fut,
        Fut: Future<Output = R>,
        Classify: Fn(&R) -> Verdict,
    {
        let started = Instant::now();
        let deadline = started + self.retry.deadline;
        self.counters.calls.fetch_add(1, Relaxed);
        let mut unanswered = 0;
        let report = |result, attempts, may_have_acted, unanswered| CallReport {
            result,
            attempts,
            may_have_acted,
            unanswered,
            elapsed: started.elapsed(),
        };

        let _slot = match self.bulkhead.try_acquire() {
            Ok(slot) => slot,
            Err(overloaded) => {
                self.counters.rejected_overloaded.fetch_add(1, Relaxed);
                return report(CallResult::Overloaded(overloaded), 0, false, 0);
            }
        };
        self.budget.record_call();

        let mut attempts = 0;
        let mut may_have_acted = false;
        let mut last: Option<(Option<R>, Outcome)> = None;
        let mut first = Some(first);
        loop {
            let next = match first.take() {
                Some(admitted) => admitted.map(|admission| admission.permit),
                None => self.breaker.permit(),
            };
            let mut permit = match next {
                Ok(permit) => permit,
                Err(rejected) => {
                    self.counters.rejected_by_breaker.fetch_add(1, Relaxed);
                    let result = match last {
                        // A retry refused by the breaker ends the call with what the attempts showed.
                        Some((last, last_outcome)) => {
                            CallResult::Failed { last, last_outcome, stop: StopReason::CircuitOpen(rejected) }
                        }
                        None => CallResult::CircuitOpen(rejected),
                    };
                    return report(result, attempts, may_have_acted, unanswered);
                }
            };
            // A slow call is timed from its attempt, not from an admission taken earlier.
            permit.restart_clock();
            attempts += 1;
            self.counters.attempts.fetch_add(1, Relaxed);
            if attempts > 1 {
                self.counters.retries.fetch_add(1, Relaxed);
            }

            // The timeout is inside the permit's scope, so a hung attempt is recorded as a
            // failure instead of vanishing with a future dropped from outside.
            let timeout = self.retry.attempt_timeout.min(deadline.saturating_duration_since(Instant::now()));
            let info = AttemptInfo { number: attempts, timeout };
            let (verdict, result) = match tokio::time::timeout(timeout, operation(info)).await {
                Ok(result) => (classify(&result), Some(result)),
                Err(_elapsed) => {
                    self.counters.attempt_timeouts.fetch_add(1, Relaxed);
                    (Verdict::lost(), None)
                }
            };
            if verdict.unanswered {
                unanswered += 1;
            }
            permit.record(verdict.outcome.is_failure());
            debug!(attempt = attempts, outcome = ?verdict.outcome, timed_out = result.is_none(), "attempt finished");

            match (verdict.outcome, result) {
                (Outcome::Success, Some(result)) => {
                    return report(CallResult::Success(result), attempts, true, unanswered);
                }
                (Outcome::Definitive, Some(result)) => {
                    return report(CallResult::Definitive(result), attempts, true, unanswered);
                }
                (outcome, result) => {
                    may_have_acted |= outcome != Outcome::NotProcessed;
                    last = Some((result, outcome));
                }
            }

            let stop = if attempts >= self.retry.max_attempts {
                Some(StopReason::AttemptsExhausted)
            } else {
                let jittered = self.backoff.delay(attempts, fastrand::f64());
                let wait = jittered.max(verdict.retry_after.unwrap_or_default());
                if Instant::now() + wait >= deadline {
                    Some(StopReason::DeadlineExceeded)
                } else if !self.budget.try_withdraw() {
                    self.counters.budget_refusals.fetch_add(1, Relaxed);
                    Some(StopReason::BudgetExhausted)
                } else {
                    tokio::time::sleep(wait).await;
                    None
                }
            };
            if let Some(stop) = stop
                && let Some((last, last_outcome)) = last
            {
                return report(CallResult::Failed { last, last_outcome, stop }, attempts, may_have_acted, unanswered);
            }
        }
    }
}
