//! The gateway's events (`GET /v1/events`, webhook deliveries) and the delivery health the
//! dashboard shows.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

/// What an event says happened. On the wire: `payment.succeeded`, `refund.failed`, ….
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub enum EventType {
    #[serde(rename = "payment.processing")]
    PaymentProcessing,
    #[serde(rename = "payment.requires_capture")]
    PaymentRequiresCapture,
    #[serde(rename = "payment.succeeded")]
    PaymentSucceeded,
    #[serde(rename = "payment.declined")]
    PaymentDeclined,
    #[serde(rename = "payment.failed")]
    PaymentFailed,
    #[serde(rename = "payment.canceled")]
    PaymentCanceled,
    #[serde(rename = "payment.refunded")]
    PaymentRefunded,
    #[serde(rename = "payment.partially_refunded")]
    PaymentPartiallyRefunded,
    #[serde(rename = "refund.succeeded")]
    RefundSucceeded,
    #[serde(rename = "refund.failed")]
    RefundFailed,
}

impl EventType {
    pub const ALL: [EventType; 10] = [
        EventType::PaymentProcessing,
        EventType::PaymentRequiresCapture,
        EventType::PaymentSucceeded,
        EventType::PaymentDeclined,
        EventType::PaymentFailed,
        EventType::PaymentCanceled,
        EventType::PaymentRefunded,
        EventType::PaymentPartiallyRefunded,
        EventType::RefundSucceeded,
        EventType::RefundFailed,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            EventType::PaymentProcessing => "payment.processing",
            EventType::PaymentRequiresCapture => "payment.requires_capture",
            EventType::PaymentSucceeded => "payment.succeeded",
            EventType::PaymentDeclined => "payment.declined",
            EventType::PaymentFailed => "payment.failed",
            EventType::PaymentCanceled => "payment.canceled",
            EventType::PaymentRefunded => "payment.refunded",
            EventType::PaymentPartiallyRefunded => "payment.partially_refunded",
            EventType::RefundSucceeded => "refund.succeeded",
            EventType::RefundFailed => "refund.failed",
        }
    }

    pub fn parse(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|t| t.as_str() == name)
    }

    /// Whether the event's object is a payment (else a refund).
    pub fn is_payment(self) -> bool {
        !matches!(self, EventType::RefundSucceeded | EventType::RefundFailed)
    }
}

impl std::fmt::Display for EventType {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// An event as `GET /v1/events` and webhook deliveries carry it; `data.object` is the payment or
/// refund as it was right after the change.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Event {
    pub id: String,
    pub object: String,
    #[serde(rename = "type")]
    pub kind: EventType,
    pub created_at: DateTime<Utc>,
    pub data: EventData,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EventData {
    pub object: serde_json::Value,
}

/// One webhook endpoint's delivery health, as the `webhooks` event of the live stream carries it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EndpointHealth {
    pub endpoint_id: String,
    pub url: String,
    /// Deliveries answered 2xx (since this gateway started).
    pub delivered: u64,
    /// Attempts that failed and will be tried again.
    pub retrying: u64,
    /// Deliveries that ran out of attempts.
    pub failed: u64,
    /// The endpoint's circuit breaker: `closed`, `open` or `half_open`.
    pub breaker: String,
    /// The last attempt's HTTP status or error.
    pub last_result: Option<String>,
}
