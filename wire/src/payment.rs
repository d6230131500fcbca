//! A payment's status, and the `payment` event of the gateway's live stream.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

/// Where a payment stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum PaymentStatus {
    /// The bank's outcome (of the charge, the authorization, a capture or a cancel) is not known
    /// yet; the reconciler settles it.
    Processing,
    /// Authorized: the amount is held on the card until it is captured or canceled.
    RequiresCapture,
    Succeeded,
    Declined,
    Failed,
    /// An authorization released: at the merchant's request, or because it expired.
    Canceled,
    Refunded,
    PartiallyRefunded,
}

impl PaymentStatus {
    pub const ALL: [PaymentStatus; 8] = [
        PaymentStatus::Processing,
        PaymentStatus::RequiresCapture,
        PaymentStatus::Succeeded,
        PaymentStatus::Declined,
        PaymentStatus::Failed,
        PaymentStatus::Canceled,
        PaymentStatus::Refunded,
        PaymentStatus::PartiallyRefunded,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            PaymentStatus::Processing => "processing",
            PaymentStatus::RequiresCapture => "requires_capture",
            PaymentStatus::Succeeded => "succeeded",
            PaymentStatus::Declined => "declined",
            PaymentStatus::Failed => "failed",
            PaymentStatus::Canceled => "canceled",
            PaymentStatus::Refunded => "refunded",
            PaymentStatus::PartiallyRefunded => "partially_refunded",
        }
    }

    pub fn parse(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|s| s.as_str() == name)
    }
}

/// Compares with the name on the wire, as a reader of JSON would.
impl PartialEq<&str> for PaymentStatus {
    fn eq(&self, other: &&str) -> bool {
        self.as_str() == *other
    }
}

impl PartialEq<str> for PaymentStatus {
    fn eq(&self, other: &str) -> bool {
        self.as_str() == other
    }
}

impl std::fmt::Display for PaymentStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A payment's state change, as the live stream carries it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PaymentEvent {
    pub payment_id: String,
    pub merchant_id: String,
    pub status: PaymentStatus,
    pub amount: i64,
    pub currency: String,
    pub attempts: u32,
    /// Time since the request arrived, for changes made while answering it.
    pub latency_ms: Option<f64>,
    pub decline_code: Option<String>,
    pub failure_reason: Option<String>,
    /// `false` for an authorization (captured or canceled later).
    #[serde(default = "charged_at_once")]
    pub capture: bool,
    /// What was charged: the amount of a one-step payment once it succeeded, what a capture took.
    #[serde(default)]
    pub amount_captured: i64,
    pub at: DateTime<Utc>,
    /// The event of the gateway's log this change was announced by (`evt_…`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub event_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub event_type: Option<crate::EventType>,
}

fn charged_at_once() -> bool {
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `ALL` drives parsing (of `?status=` filters, among others): a status missing from it could
    /// not be asked for. The match is exhaustive, so a new status does not compile until it is
    /// given its place here (and so in `ALL`).
    #[test]
    fn all_lists_every_status_once_and_each_name_reads_back() {
        let place = |status: PaymentStatus| match status {
            PaymentStatus::Processing => 0,
            PaymentStatus::RequiresCapture => 1,
            PaymentStatus::Succeeded => 2,
            PaymentStatus::Declined => 3,
            PaymentStatus::Failed => 4,
            PaymentStatus::Canceled => 5,
            PaymentStatus::Refunded => 6,
            PaymentStatus::PartiallyRefunded => 7,
        };
        for (index, status) in PaymentStatus::ALL.into_iter().enumerate() {
            assert_eq!(place(status), index, "{status}");
            assert_eq!(PaymentStatus::parse(status.as_str()), Some(status));
            assert_eq!(serde_json::to_value(status).ok(), Some(serde_json::Value::from(status.as_str())));
        }
    }
}
