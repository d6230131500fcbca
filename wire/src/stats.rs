//! The gateway's `stats` event (every second) and `log` events.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::breaker::BreakerView;

/// Payment latency percentiles over the last minute, in ms.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct LatencyPercentiles {
    pub p50: f64,
    pub p95: f64,
    pub p99: f64,
}

/// The `stats` event.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Stats {
    pub at: Option<DateTime<Utc>>,
    /// Payment requests since start, by outcome.
    #[serde(default)]
    pub totals: BTreeMap<String, u64>,
    /// The same, per second over the last tick.
    #[serde(default)]
    pub rates: BTreeMap<String, f64>,
    #[serde(default)]
    pub latency_ms: LatencyPercentiles,
    #[serde(default)]
    pub in_flight: u64,
    #[serde(default)]
    pub retries: u64,
    #[serde(default)]
    pub budget_refusals: u64,
    #[serde(default)]
    pub attempt_timeouts: u64,
    pub breaker: Option<BreakerView>,
}

/// A log record, as the `log` event carries it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LogRecord {
    pub at: DateTime<Utc>,
    pub level: String,
    #[serde(default)]
    pub target: String,
    pub message: String,
    /// The event's fields, then those of its spans (request id, merchant, payment id, ...).
    #[serde(default)]
    pub fields: BTreeMap<String, String>,
}
