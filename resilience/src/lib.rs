//! # resilience
//!
//! What the gateway wraps every bank call in, written to be read and learned from.
//!
//! - [`outcome`]: the caller classifies each attempt once ([`Outcome`]: success, definitive
//!   business failure, not processed, ambiguous); that one answer drives everything below.
//! - [`breaker`]: a circuit breaker built on `failsafe`'s state machine, with a count-based
//!   sliding window (failure rate and slow-call rate, minimum calls), growing open periods,
//!   limited half-open probes, operator overrides, and a live snapshot and transition stream.
//! - [`backoff`]: exponential backoff with full jitter; [`budget`]: a retry budget so a failing
//!   service never sees a retry storm; [`bulkhead`]: a fail-fast concurrency limit.
//! - [`guard`]: puts them together around one call: a slot, then attempts behind the breaker,
//!   each with a timeout, retried within the attempt limit, the deadline and the budget, honouring
//!   `Retry-After`, and a report of whether the service may have acted.
//!
//! All time is `tokio::time`, so tests drive every timer with a paused clock.

pub mod backoff;
pub mod breaker;
pub mod budget;
pub mod bulkhead;
pub mod error;
pub mod guard;
pub mod outcome;

pub use backoff::Backoff;
pub use breaker::{
    Breaker, BreakerConfig, BreakerSnapshot, BreakerState, Mode, Permit, Rejected, Transition, TransitionReason,
};
pub use budget::{BudgetConfig, RetryBudget};
pub use bulkhead::{Bulkhead, Overloaded};
pub use error::ConfigError;
pub use guard::{
    Admission, AttemptInfo, CallReport, CallResult, Guard, GuardConfig, GuardStats, RetryConfig, StopReason,
};
pub use outcome::{Outcome, Verdict};
