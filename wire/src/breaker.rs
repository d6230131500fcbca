//! The circuit breaker as operators and the dashboard see it.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

/// What state the breaker is in, and who decided it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum BreakerState {
    #[default]
    Closed,
    Open,
    HalfOpen,
    ForcedOpen,
    ForcedClosed,
}

impl BreakerState {
    pub fn as_str(self) -> &'static str {
        match self {
            BreakerState::Closed => "closed",
            BreakerState::Open => "open",
            BreakerState::HalfOpen => "half_open",
            BreakerState::ForcedOpen => "forced_open",
            BreakerState::ForcedClosed => "forced_closed",
        }
    }
}

/// Compares with the name on the wire, as a reader of JSON would.
impl PartialEq<&str> for BreakerState {
    fn eq(&self, other: &&str) -> bool {
        self.as_str() == *other
    }
}

impl PartialEq<str> for BreakerState {
    fn eq(&self, other: &str) -> bool {
        self.as_str() == other
    }
}

impl std::fmt::Display for BreakerState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The breaker at one moment, as `GET /admin/breaker` and the `stats` event show it.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[cfg_attr(feature = "openapi", schema(as = BreakerView))]
pub struct BreakerView {
    pub state: BreakerState,
    pub failure_rate: f64,
    pub slow_call_rate: f64,
    pub calls_in_window: usize,
    /// Calls refused since start.
    #[serde(default)]
    pub rejected: u64,
    pub opened_at: Option<DateTime<Utc>>,
    /// When the breaker lets the next probe through.
    pub open_until: Option<DateTime<Utc>>,
    /// Consecutive trips without closing.
    #[serde(default)]
    pub trips: u32,
    #[serde(default)]
    pub probes_in_flight: u32,
    #[serde(default)]
    pub probes_succeeded: u32,
    /// The failure rate that opens the breaker.
    #[serde(default)]
    pub failure_rate_threshold: f64,
    /// The slow-call rate that opens the breaker.
    #[serde(default)]
    pub slow_call_rate_threshold: f64,
}

/// A breaker transition, as the live stream carries it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BreakerEvent {
    pub from: BreakerState,
    pub to: BreakerState,
    /// Why, in words ("failure rate 55% ≥ 50% over the last 200 calls").
    pub reason: String,
    pub at: DateTime<Utc>,
    /// For a transition to open: how long it stays open.
    pub open_for_ms: Option<u64>,
    /// The bank whose breaker it is (the gateway has one per bank).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bank: Option<String>,
}

/// One bank of the gateway, as `GET /admin/banks` shows it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct BankView {
    pub name: String,
    pub url: String,
    /// Its own circuit breaker.
    pub breaker: BreakerView,
    /// The share of its recent authorizations that were approved (1 before any).
    pub success_rate: f64,
    /// The share of payments routed to it first, since the gateway started.
    pub share: f64,
    /// The currencies it takes (`null`: all the gateway takes).
    pub currencies: Option<Vec<String>>,
}
