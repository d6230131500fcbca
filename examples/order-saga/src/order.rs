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

use std::collections::BTreeMap;

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
    /// The payment the order goes on with: the first to be authorized.
    pub payment_id: Option<String>,
    /// Every payment made for the order, as the newest event told of each. There may be more
    /// than one: an authorization that failed with nothing charged frees its key, and the
    /// authorization sent again under it is a new payment.
    pub payments: BTreeMap<String, PaymentSeen>,
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

impl PaymentSeen {
    /// Whether it holds money, or took money that was not given back.
    fn holds_or_keeps_money(&self) -> bool {
        match self.status {
            PaymentStatus::RequiresCapture => true,
            PaymentStatus::Succeeded | PaymentStatus::PartiallyRefunded => self.amount_refunded < self.amount_captured,
            _ => false,
        }
    }

    /// Whether it ended with nothing held or kept.
    fn is_over(&self) -> bool {
        matches!(
            self.status,
            PaymentStatus::Declined | PaymentStatus::Failed | PaymentStatus::Canceled | PaymentStatus::Refunded
        )
    }

    /// What gives its money back: a cancel while it is held, a refund once taken.
    fn compensation(&self) -> Option<Step> {
        let payment_id = self.id.clone();
        match self.status {
            PaymentStatus::RequiresCapture => Some(Step::Cancel { payment_id }),
            _ if self.holds_or_keeps_money() => Some(Step::Refund { payment_id }),
            _ => None,
        }
    }
}

impl Order {
    /// Takes the payment an event tells of, if it is newer than what the order knows of that
    /// payment; then moves the order as its payments say. Returns whether anything changed.
    pub fn observe(&mut self, seen: PaymentSeen, now: DateTime<Utc>) -> bool {
        if self.payments.get(&seen.id).is_some_and(|known| !seen.is_newer_than(known)) {
            return false;
        }
        self.payments.insert(seen.id.clone(), seen);
        self.advance(now);
        self.updated_at = now;
        true
    }

    /// Ends the order: nothing is kept (what a payment holds or took is given back by
    /// [`Order::next_step`]).
    pub fn cancel(&mut self, reason: &str, now: DateTime<Utc>) {
        self.state = OrderState::Cancelled;
        self.reason.get_or_insert_with(|| reason.to_owned());
        self.stock_reserved = false;
        self.updated_at = now;
    }

    fn primary(&self) -> Option<&PaymentSeen> {
        self.payment_id.as_ref().and_then(|id| self.payments.get(id))
    }

    /// Follows the known payments as far as they go without asking anything.
    fn advance(&mut self, now: DateTime<Utc>) {
        if self.payment_id.is_none() && matches!(self.state, OrderState::Placed | OrderState::Authorizing) {
            self.payment_id = self.payments.values().find(|p| p.holds_or_keeps_money()).map(|p| p.id.clone());
        }
        let primary = self.primary().map(|p| p.status);
        match (self.state, primary) {
            (state, _) if state.is_final() => {}
            (OrderState::Placed | OrderState::Authorizing, None) => {
                // Every payment made so far ended without money: the order cannot be paid.
                let last = self.payments.values().filter(|p| p.is_over()).max_by_key(|p| p.updated_at);
                if let Some(last) = last.filter(|_| self.payments.values().all(PaymentSeen::is_over)) {
                    let reason = format!("payment {}", last.status);
                    self.cancel(&reason, now);
                } else if !self.payments.is_empty() {
                    self.state = OrderState::Authorizing;
                }
            }
            (_, Some(PaymentStatus::Declined | PaymentStatus::Failed | PaymentStatus::Canceled)) => {
                self.cancel("authorization released", now);
            }
            (_, Some(PaymentStatus::Refunded)) => self.cancel("payment refunded", now),
            (OrderState::Capturing, Some(PaymentStatus::Succeeded)) => self.state = OrderState::Confirmed,
            (OrderState::Placed | OrderState::Authorizing | OrderState::Cancelling, Some(PaymentStatus::Succeeded)) => {
                self.state = OrderState::Refunding;
            }
            (OrderState::Placed, Some(_)) => self.state = OrderState::Authorizing,
            _ => {}
        }
    }

    /// The next step, as the order and its payments stand. Any payment the order does not go on
    /// with (a cancelled order's, or a second authorization) is given back first.
    pub fn next_step(&self) -> Step {
        let kept = match self.state {
            OrderState::Authorizing | OrderState::Capturing | OrderState::Confirmed => self.payment_id.as_deref(),
            _ => None,
        };
        let stray = self.payments.values().filter(|p| Some(p.id.as_str()) != kept);
        let ended = matches!(self.state, OrderState::Cancelled | OrderState::Confirmed);
        // A cancelling or refunding order gives its own payment back in its own step below.
        if let Some(step) = stray
            .filter(|p| ended || Some(p.id.as_str()) != self.payment_id.as_deref())
            .find_map(PaymentSeen::compensation)
        {
            return step;
        }
        let primary = self.primary();
        let id = || primary.map(|p| p.id.clone()).unwrap_or_default();
        let status = primary.map(|p| p.status);
        match self.state {
            OrderState::Placed => Step::Authorize,
            OrderState::Authorizing => match status {
                Some(PaymentStatus::RequiresCapture) => Step::ReserveStock,
                // Asked again with the same key until the gateway has a payment for it: a lost
                // answer or a 503 leaves nothing behind.
                None if self.payments.is_empty() => Step::Authorize,
                _ => Step::Wait,
            },
            OrderState::Capturing if status == Some(PaymentStatus::RequiresCapture) => {
                Step::Capture { payment_id: id() }
            }
            OrderState::Cancelling if status == Some(PaymentStatus::RequiresCapture) => {
                Step::Cancel { payment_id: id() }
            }
            OrderState::Refunding if primary.is_some_and(PaymentSeen::holds_or_keeps_money) => {
                Step::Refund { payment_id: id() }
            }
            _ => Step::Wait,
        }
    }

    /// Whether nothing more will happen to it: final, with no money held or kept in vain.
    pub fn is_settled(&self) -> bool {
        self.state.is_final() && self.next_step() == Step::Wait
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
            payment_id: None,
            payments: BTreeMap::new(),
            created_at: now,
            updated_at: now,
        }
    }

    fn seen(status: PaymentStatus, at_ms: i64, captured: i64) -> PaymentSeen {
        seen_of("pay_1", status, at_ms, captured)
    }

    fn seen_of(id: &str, status: PaymentStatus, at_ms: i64, captured: i64) -> PaymentSeen {
        PaymentSeen {
            id: id.into(),
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
        backward.payment_id = Some("pay_1".into());
        assert!(backward.observe(seen(PaymentStatus::Succeeded, 2, 500), now));
        assert!(!backward.observe(seen(PaymentStatus::RequiresCapture, 1, 0), now), "an older event changes nothing");
        assert_eq!(backward.state, OrderState::Confirmed);
        assert!(!backward.observe(seen(PaymentStatus::Succeeded, 2, 500), now), "a duplicate changes nothing");
    }

    #[test]
    fn a_capture_that_lands_on_a_cancelled_order_is_refunded() {
        let now = Utc::now();
        let mut order = order();
        order.observe(seen(PaymentStatus::RequiresCapture, 4, 0), now);
        order.state = OrderState::Cancelling;
        assert_eq!(order.next_step(), Step::Cancel { payment_id: "pay_1".into() });
        order.observe(seen(PaymentStatus::Succeeded, 5, 500), now);
        assert_eq!(
            (order.state, order.next_step()),
            (OrderState::Refunding, Step::Refund { payment_id: "pay_1".into() })
        );
        let refunded = PaymentSeen { amount_refunded: 500, ..seen(PaymentStatus::Refunded, 6, 500) };
        order.observe(refunded, now);
        assert_eq!(order.state, OrderState::Cancelled);
        assert!(order.is_settled());
    }

    #[test]
    fn a_second_authorization_is_given_back_whatever_the_order_of_events() {
        let now = Utc::now();
        // The first authorization failed with nothing charged; the saga's retry made a second.
        let mut order = order();
        order.observe(seen_of("pay_a", PaymentStatus::Failed, 1, 0), now);
        assert_eq!(order.state, OrderState::Cancelled, "every payment so far failed");
        order.observe(seen_of("pay_b", PaymentStatus::RequiresCapture, 2, 0), now);
        assert_eq!(order.next_step(), Step::Cancel { payment_id: "pay_b".into() }, "its hold is released");
        assert!(!order.is_settled());
        order.observe(seen_of("pay_b", PaymentStatus::Canceled, 3, 0), now);
        assert!(order.is_settled());

        // The other way round: the second goes on, the first's failure changes nothing.
        let mut order = self::order();
        order.observe(seen_of("pay_b", PaymentStatus::RequiresCapture, 2, 0), now);
        order.observe(seen_of("pay_a", PaymentStatus::Failed, 1, 0), now);
        assert_eq!((order.state, order.next_step()), (OrderState::Authorizing, Step::ReserveStock));
        order.state = OrderState::Capturing;
        order.observe(seen_of("pay_b", PaymentStatus::Succeeded, 4, 500), now);
        assert_eq!(order.state, OrderState::Confirmed);
        // A third that shows up captured is refunded; the order stays confirmed.
        order.observe(seen_of("pay_c", PaymentStatus::Succeeded, 5, 500), now);
        assert_eq!(
            (order.state, order.next_step()),
            (OrderState::Confirmed, Step::Refund { payment_id: "pay_c".into() })
        );
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
