//! A payment as the gateway stores it, its refunds, and the objects the API shows of them.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
pub use http_conventions::card::CardSummary;
use serde::{Deserialize, Serialize};
pub use wire::PaymentStatus;

/// Where a refund stands. `pending` holds its amount against the payment while the bank's answer
/// is unknown, so that racing refunds can never together exceed what was charged.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum RefundStatus {
    Pending,
    Succeeded,
    Failed,
}

impl RefundStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            RefundStatus::Pending => "pending",
            RefundStatus::Succeeded => "succeeded",
            RefundStatus::Failed => "failed",
        }
    }
}

/// Why an authorization was released.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum CancellationReason {
    /// `POST /v1/payments/{id}/cancel`.
    Requested,
    /// Not captured by `capture_before`: the gateway released it.
    Expired,
}

/// A capture or a cancel sent to the bank whose outcome is not recorded yet. While it stands, the
/// payment shows `processing` and no other capture or cancel may start.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PendingOperation {
    pub kind: PendingKind,
    /// The client's `Idempotency-Key` (`None`: the gateway's own cancel of an expired hold), so
    /// the reconciler can update the answer stored under it.
    pub idempotency_key: Option<String>,
    /// When the gateway last started sending it to the bank: the bank's commit window runs from
    /// then.
    pub last_attempt_at: DateTime<Utc>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "operation", rename_all = "snake_case")]
pub enum PendingKind {
    Capture { amount: i64 },
    Cancel { reason: CancellationReason },
}

/// Which end of an authorization an operation is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HoldEnd {
    Capture,
    Cancel,
}

impl PendingKind {
    pub fn end(self) -> HoldEnd {
        match self {
            PendingKind::Capture { .. } => HoldEnd::Capture,
            PendingKind::Cancel { .. } => HoldEnd::Cancel,
        }
    }
}

impl PendingOperation {
    /// Whether this is the `end` begun under `idempotency_key`.
    pub fn is(&self, end: HoldEnd, idempotency_key: Option<&str>) -> bool {
        self.kind.end() == end && self.idempotency_key.as_deref() == idempotency_key
    }
}

/// A refund as stored inside its payment. Its id is also the bank's idempotency key for it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Refund {
    pub id: String,
    pub amount: i64,
    pub status: RefundStatus,
    pub created_at: DateTime<Utc>,
    /// The client's `Idempotency-Key`, so the reconciler can update the answer stored under it.
    #[serde(default)]
    pub idempotency_key: String,
    /// When the gateway last started sending it to the bank: the bank's commit window for it
    /// runs from then.
    #[serde(default)]
    pub last_attempt_at: Option<DateTime<Utc>>,
}

/// The refund object of the API.
#[derive(Debug, Serialize, utoipa::ToSchema)]
#[schema(as = Refund)]
pub struct PublicRefund<'a> {
    pub id: &'a str,
    /// Always `refund`.
    pub object: &'static str,
    pub payment_id: &'a str,
    pub amount: i64,
    /// `succeeded`, or `pending` while the bank's answer is unknown (answered 202; the
    /// reconciler settles it, and a retry with the same key returns the settled refund).
    pub status: RefundStatus,
    pub bank_refund_id: Option<&'a str>,
    pub created_at: DateTime<Utc>,
}

/// A payment as stored (the fields of two-step payments only when they say something, so that a
/// one-step payment costs the store no more than it did before). Its public fields are what
/// clients see; `merchant_id`,
/// `idempotency_key`, `bank_key`, `version`, `reconcile_after`, `pending` and the operation keys
/// are the gateway's own bookkeeping.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Payment {
    pub id: String,
    /// Bumped by every write. A store writes a payment only over the version it was derived from,
    /// so two changes racing on one payment can never overwrite each other: the loser re-applies
    /// its change to the winner's payment (see [`Change`]).
    #[serde(default)]
    pub version: u64,
    pub status: PaymentStatus,
    pub amount: i64,
    pub currency: String,
    pub order_id: Option<String>,
    pub description: Option<String>,
    pub metadata: BTreeMap<String, String>,
    pub card: CardSummary,
    pub decline_code: Option<String>,
    pub failure_reason: Option<String>,
    pub bank_charge_id: Option<String>,
    pub attempts: u32,
    /// The sum of the succeeded refunds.
    pub refunded_amount: i64,
    #[serde(default)]
    pub refunds: Vec<Refund>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    pub merchant_id: String,
    pub idempotency_key: String,
    /// The idempotency key the bank is charged under: derived from the merchant, the client's key
    /// and the request, never from this payment's id, so that even a store that lost this payment
    /// sends a retry to the bank as the same charge. `None` in payments written before it existed,
    /// which were charged under their id.
    #[serde(default)]
    pub bank_key: Option<String>,
    /// While `processing`, or while a refund is pending: when the reconciler should look at it
    /// (at once after a 202, after the lease for a request that may still be running).
    pub reconcile_after: Option<DateTime<Utc>>,
    /// When the gateway last started sending this charge to the bank: the bank's commit window
    /// runs from then, not from the payment's creation (a takeover may charge much later).
    #[serde(default)]
    pub last_attempt_at: Option<DateTime<Utc>>,
    /// `false`: authorize only; the amount is held until it is captured or canceled.
    #[serde(default = "charged_at_once", skip_serializing_if = "is_charged_at_once")]
    pub capture: bool,
    /// The bank's authorization (its hold), for a payment made with `capture: false`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub authorization_id: Option<String>,
    /// What was captured; `None` in payments written before two-step payments, whose charge is
    /// their whole amount (see [`Payment::captured`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub amount_captured: Option<i64>,
    /// An authorization not captured by then is canceled by the gateway.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub capture_before: Option<DateTime<Utc>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub canceled_at: Option<DateTime<Utc>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cancellation_reason: Option<CancellationReason>,
    /// A capture or cancel whose outcome is not recorded yet.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pending: Option<PendingOperation>,
    /// The client keys the capture and the cancel were made under, so that a retry of a request
    /// that died after the bank acted is answered with what was done.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub capture_key: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cancel_key: Option<String>,
    /// The bank that holds the payment (its charge or hold): its captures, cancels, refunds and
    /// inquiries go there. `None` in payments written before several banks: the primary.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub acquirer: Option<String>,
    /// Every bank the charge was sent to, in order (the last is `acquirer`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub attempted_acquirers: Vec<String>,
}

fn charged_at_once() -> bool {
    true
}

fn is_charged_at_once(capture: &bool) -> bool {
    *capture
}

/// The payment object of the API.
#[derive(Debug, Serialize, utoipa::ToSchema)]
#[schema(as = Payment)]
pub struct PublicPayment<'a> {
    pub id: &'a str,
    pub object: &'static str,
    pub status: PaymentStatus,
    pub amount: i64,
    pub currency: &'a str,
    pub order_id: Option<&'a str>,
    pub description: Option<&'a str>,
    pub metadata: &'a BTreeMap<String, String>,
    pub card: &'a CardSummary,
    pub decline_code: Option<&'a str>,
    pub failure_reason: Option<&'a str>,
    pub bank_charge_id: Option<&'a str>,
    /// The bank's authorization (its hold), for a payment made with `capture: false`.
    pub bank_authorization_id: Option<&'a str>,
    pub attempts: u32,
    /// `false`: an authorization, captured or canceled later.
    pub capture: bool,
    /// What a capture may take now: the amount while `requires_capture`, else 0.
    pub amount_capturable: i64,
    /// What was charged: the amount of a one-step payment, or what the capture took.
    pub amount_captured: i64,
    /// What was refunded of it (the same as `refunded_amount`).
    pub amount_refunded: i64,
    pub refunded_amount: i64,
    /// An authorization not captured by then is canceled (`cancellation_reason: expired`).
    pub capture_before: Option<DateTime<Utc>>,
    pub canceled_at: Option<DateTime<Utc>>,
    pub cancellation_reason: Option<CancellationReason>,
    /// The bank that holds the payment.
    pub acquirer: Option<&'a str>,
    /// Every bank the charge was sent to, in order.
    pub attempted_acquirers: &'a [String],
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

impl Payment {
    pub fn public(&self) -> PublicPayment<'_> {
        PublicPayment {
            id: &self.id,
            object: "payment",
            status: self.shown_status(),
            amount: self.amount,
            currency: &self.currency,
            order_id: self.order_id.as_deref(),
            description: self.description.as_deref(),
            metadata: &self.metadata,
            card: &self.card,
            decline_code: self.decline_code.as_deref(),
            failure_reason: self.failure_reason.as_deref(),
            bank_charge_id: self.bank_charge_id.as_deref(),
            bank_authorization_id: self.authorization_id.as_deref(),
            attempts: self.attempts,
            capture: self.capture,
            amount_capturable: self.capturable(),
            amount_captured: self.captured(),
            amount_refunded: self.refunded_amount,
            refunded_amount: self.refunded_amount,
            capture_before: self.capture_before,
            canceled_at: self.canceled_at,
            cancellation_reason: self.cancellation_reason,
            acquirer: self.acquirer.as_deref(),
            attempted_acquirers: &self.attempted_acquirers,
            created_at: self.created_at,
            updated_at: self.updated_at,
        }
    }

    pub fn public_json(&self) -> String {
        serde_json::to_string(&self.public()).unwrap_or_default()
    }

    pub fn is_settled(&self) -> bool {
        self.status != PaymentStatus::Processing
    }

    /// The status clients see: `processing` also while a capture or cancel is pending (stored, the
    /// payment stays `requires_capture`, so that no late change about its charge applies to it).
    pub fn shown_status(&self) -> PaymentStatus {
        if self.pending.is_some() { PaymentStatus::Processing } else { self.status }
    }

    /// What was charged: all of a one-step payment, what its capture took of an authorization.
    pub fn captured(&self) -> i64 {
        let charged = matches!(
            self.status,
            PaymentStatus::Succeeded | PaymentStatus::PartiallyRefunded | PaymentStatus::Refunded
        );
        match self.amount_captured {
            Some(amount) => amount,
            None if charged => self.amount,
            None => 0,
        }
    }

    /// What a capture may take now.
    pub fn capturable(&self) -> i64 {
        if self.status == PaymentStatus::RequiresCapture && self.pending.is_none() { self.amount } else { 0 }
    }

    /// The key the bank knows this payment's charge by.
    pub fn bank_key(&self) -> &str {
        self.bank_key.as_deref().unwrap_or(&self.id)
    }

    pub fn refund(&self, id: &str) -> Option<&Refund> {
        self.refunds.iter().find(|r| r.id == id)
    }

    pub fn has_pending_refunds(&self) -> bool {
        self.refunds.iter().any(|r| r.status == RefundStatus::Pending)
    }

    /// What can still be refunded: what was captured less succeeded and pending refunds.
    pub fn refundable(&self) -> i64 {
        let held: i64 = self.refunds.iter().filter(|r| r.status != RefundStatus::Failed).map(|r| r.amount).sum();
        self.captured() - held
    }

    /// The refund as the API shows it.
    pub fn refund_json(&self, refund: &Refund) -> String {
        let public = PublicRefund {
            id: &refund.id,
            object: "refund",
            payment_id: &self.id,
            amount: refund.amount,
            status: refund.status,
            bank_refund_id: None,
            created_at: refund.created_at,
        };
        serde_json::to_string(&public).unwrap_or_default()
    }
}
