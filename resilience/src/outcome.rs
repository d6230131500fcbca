//! The one classification that decides everything about an attempt.
//!
//! The caller looks at each attempt's result and says what it means; from that single answer the
//! [`crate::Guard`] decides whether to retry, the breaker decides whether the service is failing,
//! and the caller finally learns whether the service may have acted.

use std::time::Duration;

/// What an attempt's result means.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Outcome {
    /// The service did what was asked (a charge approved).
    Success,
    /// A definitive business answer that is not a fault of the service (a decline, a 4xx): final,
    /// never retried, and counted as a healthy call by the breaker.
    Definitive,
    /// The service surely did not act (refused, throttled, 503 before processing, connection
    /// refused): safe to retry, and a failure for the breaker.
    NotProcessed,
    /// The service may have acted (timeout, 500, connection lost after sending): retry only with
    /// the same idempotency key; a failure for the breaker.
    Ambiguous,
}

impl Outcome {
    /// Whether the breaker should count the call as a failure.
    pub fn is_failure(self) -> bool {
        matches!(self, Outcome::NotProcessed | Outcome::Ambiguous)
    }

    /// Whether another attempt may help.
    pub fn is_retryable(self) -> bool {
        self.is_failure()
    }
}

/// The caller's classification of one attempt, with the service's `Retry-After` if it sent one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Verdict {
    pub outcome: Outcome,
    pub retry_after: Option<Duration>,
    /// The service's answer never came back whole (the connection was lost after sending): it may
    /// still be working on the request, and commit later, as a timed-out attempt may.
    pub unanswered: bool,
}

impl Verdict {
    pub fn success() -> Self {
        Self { outcome: Outcome::Success, retry_after: None, unanswered: false }
    }

    pub fn definitive() -> Self {
        Self { outcome: Outcome::Definitive, ..Self::success() }
    }

    pub fn not_processed() -> Self {
        Self { outcome: Outcome::NotProcessed, ..Self::success() }
    }

    /// The service answered, and may have acted (a 500).
    pub fn ambiguous() -> Self {
        Self { outcome: Outcome::Ambiguous, ..Self::success() }
    }

    /// The answer was lost on the way: ambiguous, and maybe still in progress.
    pub fn lost() -> Self {
        Self { unanswered: true, ..Self::ambiguous() }
    }

    pub fn with_retry_after(mut self, retry_after: Option<Duration>) -> Self {
        self.retry_after = retry_after;
        self
    }
}
