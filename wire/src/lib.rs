//! # wire
//!
//! The types the services and the dashboard exchange over HTTP, defined once. Each is what one
//! side serialises and the other reads, so neither re-declares the other's shapes with strings:
//!
//! - [`payment`]: a payment's status and the `payment` events of the gateway's live stream;
//! - [`breaker`]: the circuit breaker as `GET /admin/breaker` shows it, and its `breaker` events;
//! - [`stats`]: the gateway's once-a-second `stats` event, and the `log` events;
//! - [`chaos`]: the bank's chaos configuration and its fault counters (`/chaos`, `/chaos/stats`);
//! - [`bank`]: what the bank answers about a charge;
//! - [`event`]: the gateway's events (`GET /v1/events`, webhooks) and webhook delivery health.
//!
//! It depends on serde, serde_json and chrono only (utoipa with the `openapi` feature), so a client as small
//! as the dashboard can use it.

pub mod bank;
pub mod breaker;
pub mod chaos;
pub mod event;
pub mod payment;
pub mod stats;

pub use bank::{AuthorizationStatus, ChargeStatus};
pub use breaker::{BankView, BreakerEvent, BreakerState, BreakerView};
pub use chaos::{ChaosConfig, ChaosStats, InjectedCounts, Latency};
pub use event::{EndpointHealth, Event, EventData, EventType};
pub use payment::{PaymentEvent, PaymentStatus};
pub use stats::{LatencyPercentiles, LogRecord, Stats};
