//! An order and the saga that carries it, as pure decisions: what the order does next, given its
//! state and the newest payment the gateway has told of.
//!
//! ```text
//! placed ──authorize──▶ authorizing ──requires_capture──▶ reserve stock
//!                            │                              ├─ reserved ─▶ capturing ──succeeded──▶ confirmed
//!                            │                              └─ out of stock ─▶ cancelling ──canceled──▶ cancelled
//!                            └──declined / failed / canceled──────────────────────────────────────▶ cancelled
//! cancelling ──succeeded (captured after all)──▶ refunding ──refunded──▶ cancelled
//! ```
//!
//! Events may arrive in any order and more than once: the order keeps the newest payment it has
//! seen (by the payment's `updated_at`), so an older event changes nothing, and every step is a
//! request under its own idempotency key, so sending it again is harmless.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use wire::PaymentStatus;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OrderState {
    /// The authorization is to be asked for.
    Placed,
    /// Asked; waiting for the payment's outcome.
    Authorizing,
    /// Stock reserved: the payment is to be captured.
    Capturing,
    /// Stock could not be reserved: the authorization is to be canceled.
    Cancelling,
    /// Captured although the order was being cancelled: the capture is to be refunded.
    Refunding,
    /// Paid and stocked.
    Confirmed,
    /// Nothing kept: no stock, no money held or taken.
    Cancelled,
}

impl OrderState {
    pub fn is_final(self) -> bool {
        matches!(self, OrderState::Confirmed | OrderState::Cancelled)
    }

    pub fn as_str(self) -> &'static str {
        match self {
            OrderState::Placed => "placed",
            OrderState::Authorizing => "authorizing",
            OrderState::Capturing => "capturing",
            OrderState::Cancelling => "cancelling",
            OrderState::Refunding => "refunding",
            OrderState::Confirmed => "confirmed",
            OrderState::Cancelled => "cancelled",
        }
    }
}

/// The test cards an order may be paid with, by name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CardProfile {
    #[default]
    Approve,
    Decline,
    InsufficientFunds,
}

impl CardProfile {
    /// The mock bank's test card for this profile.
    pub fn number(self) -> &'static str {
        match self {
            CardProfile::Approve => "4242424242424242",
            CardProfile::Decline => "4000000000000002",
            CardProfile::InsufficientFunds => "4000000000009995",
        }
    }
}

/// The payment as the newest event told of it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PaymentSeen {
    pub id: String,
    pub status: PaymentStatus,
    pub updated_at: DateTime<Utc>,
    pub amount_captured: i64,
    pub amount_refunded: i64,
}

impl PaymentSeen {
    /// Whether this tells of a later moment than `other`. Two changes in the same microsecond are
    /// told apart by how far along a payment's life their status is.
    pub fn is_newer_than(&self, other: &PaymentSeen) -> bool {
        (self.updated_at, rank(self.status)) > (other.updated_at, rank(other.status))
    }
}

fn rank(status: PaymentStatus) -> u8 {
    match status {
        PaymentStatus::Processing => 0,
        PaymentStatus::RequiresCapture => 1,
        PaymentStatus::Succeeded => 2,
        PaymentStatus::PartiallyRefunded => 3,
        PaymentStatus::Declined | PaymentStatus::Failed | PaymentStatus::Canceled | PaymentStatus::Refunded => 4,
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Order {
    pub id: String,
    pub amount: i64,
    pub currency: String,
    /// Which test card pays (`approve`, `decline`, …): a name, never a card number, is stored.
    pub card: CardProfile,
    pub state: OrderState,
    /// Why it was cancelled.
    pub reason: Option<String>,
    /// Whether stock was reserved (and, for a cancelled order, released again).
    pub stock_reserved: bool,
    pub payment: Option<PaymentSeen>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

/// What the saga asks of the world next for an order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    Authorize,
    ReserveStock,
    Capture {
        payment_id: String,
    },
    Cancel {
        payment_id: String,
    },
    Refund {
        payment_id: String,
    },
    /// Nothing to do until an event arrives.
    Wait,
}

impl Order {
    /// Takes the payment an event tells of, if it is newer than what the order knows; then moves
    /// the order as that payment says. Returns whether anything changed.
    pub fn observe(&mut self, seen: PaymentSeen, now: DateTime<Utc>) -> bool {
        if self.payment.as_ref().is_some_and(|known| !seen.is_newer_than(known)) {
            return false;
        }
        self.payment = Some(seen);
        self.advance(now);
        self.updated_at = now;
        true
    }

    /// Follows the known payment as far as it goes without asking anything.
    fn advance(&mut self, now: DateTime<Utc>) {
        let Some(payment) = &self.payment else { return };
        let cancel = |order: &mut Order, reason: &str| {
            order.state = OrderState::Cancelled;
            order.reason.get_or_insert_with(|| reason.to_owned());
            order.stock_reserved = false;
            order.updated_at = now;
        };
        match (self.state, payment.status) {
            (state, _) if state.is_final() => {}
            (_, PaymentStatus::Declined) => cancel(self, "payment declined"),
            (_, PaymentStatus::Failed) => cancel(self, "payment failed"),
            (_, PaymentStatus::Canceled) => cancel(self, "authorization released"),
            (_, PaymentStatus::Refunded) => cancel(self, "payment refunded"),
            (OrderState::Capturing, PaymentStatus::Succeeded) => self.state = OrderState::Confirmed,
            (OrderState::Placed | OrderState::Authorizing | OrderState::Cancelling, PaymentStatus::Succeeded) => {
                self.state = OrderState::Refunding;
            }
            (OrderState::Placed, _) => self.state = OrderState::Authorizing,
            _ => {}
        }
    }

    /// The next step, as the order and its payment stand.
    pub fn next_step(&self) -> Step {
        let payment = self.payment.as_ref();
        let id = || payment.map(|p| p.id.clone()).unwrap_or_default();
        match self.state {
            OrderState::Placed => Step::Authorize,
            OrderState::Authorizing => match payment.map(|p| p.status) {
                Some(PaymentStatus::RequiresCapture) => Step::ReserveStock,
                // Asked again with the same key until the gateway has the payment: a lost answer
                // or a 503 leaves nothing behind.
                None => Step::Authorize,
                _ => Step::Wait,
            },
            OrderState::Capturing if payment.is_some_and(|p| p.status == PaymentStatus::RequiresCapture) => {
                Step::Capture { payment_id: id() }
            }
            OrderState::Cancelling if payment.is_some_and(|p| p.status == PaymentStatus::RequiresCapture) => {
                Step::Cancel { payment_id: id() }
            }
            OrderState::Refunding if payment.is_some_and(|p| p.amount_refunded < p.amount_captured) => {
                Step::Refund { payment_id: id() }
            }
            _ => Step::Wait,
        }
    }
}

/// Whether stock can be reserved for `order_id`: decided by the order id alone, so that asking
/// again (after a restart) gives the same answer.
pub fn stock_available(order_id: &str, failure_rate: f64) -> bool {
    use sha2::{Digest, Sha256};
    let digest = Sha256::digest(order_id.as_bytes());
    let roll =
        u64::from_be_bytes([digest[0], digest[1], digest[2], digest[3], digest[4], digest[5], digest[6], digest[7]]);
    (roll as f64 / u64::MAX as f64) >= failure_rate
}

#[cfg(test)]
mod tests {
    use super::*;

    fn order() -> Order {
        let now = Utc::now();
        Order {
            id: "ord_1".into(),
            amount: 500,
            currency: "USD".into(),
            card: CardProfile::Approve,
            state: OrderState::Authorizing,
            reason: None,
            stock_reserved: false,
            payment: None,
            created_at: now,
            updated_at: now,
        }
    }

    fn seen(status: PaymentStatus, at_ms: i64, captured: i64) -> PaymentSeen {
        PaymentSeen {
            id: "pay_1".into(),
            status,
            updated_at: DateTime::from_timestamp_millis(at_ms).unwrap_or_default(),
            amount_captured: captured,
            amount_refunded: 0,
        }
    }

    #[test]
    fn events_in_any_order_end_in_the_same_place() {
        let now = Utc::now();
        let mut forward = order();
        assert!(forward.observe(seen(PaymentStatus::RequiresCapture, 1, 0), now));
        assert_eq!(forward.next_step(), Step::ReserveStock);
        forward.state = OrderState::Capturing;
        assert_eq!(forward.next_step(), Step::Capture { payment_id: "pay_1".into() });
        assert!(forward.observe(seen(PaymentStatus::Succeeded, 2, 500), now));
        assert_eq!(forward.state, OrderState::Confirmed);

        let mut backward = order();
        backward.state = OrderState::Capturing;
        assert!(backward.observe(seen(PaymentStatus::Succeeded, 2, 500), now));
        assert!(!backward.observe(seen(PaymentStatus::RequiresCapture, 1, 0), now), "an older event changes nothing");
        assert_eq!(backward.state, OrderState::Confirmed);
        assert!(!backward.observe(seen(PaymentStatus::Succeeded, 2, 500), now), "a duplicate changes nothing");
    }

    #[test]
    fn a_capture_that_lands_on_a_cancelled_order_is_refunded() {
        let now = Utc::now();
        let mut order = order();
        order.state = OrderState::Cancelling;
        order.observe(seen(PaymentStatus::Succeeded, 5, 500), now);
        assert_eq!(
            (order.state, order.next_step()),
            (OrderState::Refunding, Step::Refund { payment_id: "pay_1".into() })
        );
        order.observe(seen(PaymentStatus::Refunded, 6, 500), now);
        assert_eq!(order.state, OrderState::Cancelled);
    }

    #[test]
    fn stock_is_decided_by_the_order_alone() {
        assert_eq!(stock_available("ord_x", 0.5), stock_available("ord_x", 0.5));
        assert!(stock_available("ord_x", 0.0));
        assert!(!stock_available("ord_x", 1.0));
        let out = (0..1_000).filter(|i| !stock_available(&format!("ord_{i}"), 0.2)).count();
        assert!((120..280).contains(&out), "{out}");
    }
}
