//! The events a change produces: one per state change of a payment or of a refund, computed from
//! the payment before and after the change, so that they are written in the same atomic step as
//! the change itself (see `store::Commit::events`).
//!
//! A payment's event is named by the status clients see after the change (`payment.processing`
//! at creation and while a capture or cancel is pending), and is produced when that status
//! changes, or when a refund changes what was refunded (`payment.partially_refunded` once per
//! refund). A refund's event is produced when it settles: `refund.succeeded` or `refund.failed`.

use chrono::{DateTime, SecondsFormat, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;
pub use wire::EventType;

use super::{Payment, PaymentStatus, RefundStatus};

/// An event as the store keeps it: the public body ready to send, and what the store indexes it by.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoredEvent {
    pub id: String,
    pub merchant_id: String,
    #[serde(rename = "type")]
    pub kind: EventType,
    pub created_ms: i64,
    /// The event as the API shows it and webhooks send it (`{"id","object":"event",…}`).
    pub body: String,
}

impl StoredEvent {
    fn new(merchant_id: &str, kind: EventType, at: DateTime<Utc>, object_json: &str) -> Self {
        let id = format!("evt_{}", Uuid::now_v7().simple());
        let created_at = at.to_rfc3339_opts(SecondsFormat::Micros, true);
        let body = format!(
            r#"{{"id":"{id}","object":"event","type":"{kind}","created_at":"{created_at}","data":{{"object":{object_json}}}}}"#
        );
        Self { id, merchant_id: merchant_id.to_owned(), kind, created_ms: at.timestamp_millis(), body }
    }

    /// The time encoded in an event id (its first 48 bits: a UUID v7's milliseconds), for finding
    /// an event's place in a time index from its id alone; `None` for a string that is not an
    /// event id (`evt_` and 32 lower-case hex digits).
    pub fn id_ms(id: &str) -> Option<i64> {
        let hex = id.strip_prefix("evt_").filter(|hex| hex.len() == 32)?;
        if !hex.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')) {
            return None;
        }
        i64::from_str_radix(&hex[..12], 16).ok()
    }
}

/// The event type a payment's shown status is announced by.
fn payment_event(status: PaymentStatus) -> EventType {
    match status {
        PaymentStatus::Processing => EventType::PaymentProcessing,
        PaymentStatus::RequiresCapture => EventType::PaymentRequiresCapture,
        PaymentStatus::Succeeded => EventType::PaymentSucceeded,
        PaymentStatus::Declined => EventType::PaymentDeclined,
        PaymentStatus::Failed => EventType::PaymentFailed,
        PaymentStatus::Canceled => EventType::PaymentCanceled,
        PaymentStatus::Refunded => EventType::PaymentRefunded,
        PaymentStatus::PartiallyRefunded => EventType::PaymentPartiallyRefunded,
    }
}

/// The events that `before` becoming `after` produces (`before` is `None` for a new payment),
/// refunds first, then the payment.
pub fn events_for(before: Option<&Payment>, after: &Payment, at: DateTime<Utc>) -> Vec<StoredEvent> {
    let mut events = Vec::new();
    for refund in &after.refunds {
        let was = before.and_then(|b| b.refund(&refund.id)).map(|r| r.status);
        let kind = match refund.status {
            RefundStatus::Succeeded => EventType::RefundSucceeded,
            RefundStatus::Failed => EventType::RefundFailed,
            RefundStatus::Pending => continue,
        };
        if was != Some(refund.status) {
            events.push(StoredEvent::new(&after.merchant_id, kind, at, &after.refund_json(refund)));
        }
    }
    let shown = after.shown_status();
    let status_changed = before.map(Payment::shown_status) != Some(shown);
    let refunded_more = before.is_some_and(|b| b.refunded_amount != after.refunded_amount);
    if status_changed || refunded_more {
        events.push(StoredEvent::new(&after.merchant_id, payment_event(shown), at, &after.public_json()));
    }
    events
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{Change, ChargeOutcome};

    fn created() -> Payment {
        serde_json::from_value(serde_json::json!({
            "id": "pay_1", "version": 1, "status": "processing", "amount": 500, "currency": "USD",
            "order_id": null, "description": null, "metadata": {}, "card": {"brand": "visa", "last4": "4242"},
            "decline_code": null, "failure_reason": null, "bank_charge_id": null, "attempts": 0,
            "refunded_amount": 0, "created_at": "2026-01-01T00:00:00Z", "updated_at": "2026-01-01T00:00:00Z",
            "merchant_id": "m", "idempotency_key": "k", "reconcile_after": null
        }))
        .unwrap_or_else(|e| panic!("{e}"))
    }

    #[test]
    fn each_state_change_is_one_event_whose_body_is_the_public_event() {
        let now = Utc::now();
        let payment = created();
        let first = events_for(None, &payment, now);
        assert_eq!(first.iter().map(|e| e.kind).collect::<Vec<_>>(), [EventType::PaymentProcessing]);
        let outcome = ChargeOutcome { id: "ch_1".into(), approved: true, decline_code: None, closed: None };
        let paid = payment
            .apply(&Change::Settle { outcome, attempts: 1, revive: false }, now)
            .unwrap_or_else(|e| panic!("{e:?}"));
        let events = events_for(Some(&payment), &paid, now);
        assert_eq!(events.iter().map(|e| e.kind).collect::<Vec<_>>(), [EventType::PaymentSucceeded]);
        let parsed: wire::Event =
            serde_json::from_str(&events[0].body).unwrap_or_else(|e| panic!("{e}: {}", events[0].body));
        assert_eq!(
            (parsed.id.as_str(), parsed.object.as_str(), parsed.kind),
            (events[0].id.as_str(), "event", EventType::PaymentSucceeded)
        );
        assert_eq!(parsed.data.object["status"], "succeeded");
        assert!(events_for(Some(&paid), &paid, now).is_empty(), "no change, no event");
        assert!(StoredEvent::id_ms(&events[0].id).is_some_and(|ms| (ms - now.timestamp_millis()).abs() < 5_000));
        assert_eq!(StoredEvent::id_ms("evt_nope"), None);
        assert_eq!(StoredEvent::id_ms("evt_00000000000000000000000000000000"), Some(0), "any id of the form");
        assert_eq!(StoredEvent::id_ms("evt_01A232A16DBC75269765ECB42E123BD3"), None, "lower case only");
    }
}
