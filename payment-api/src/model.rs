//! The payment domain: what a client sends, what the gateway stores, and what it answers.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
pub use http_conventions::card::{CardInput, CardSummary};
use http_conventions::problem::{FieldError, Problem};
use serde::{Deserialize, Serialize};

/// The largest integer a JSON number carries exactly in every client (2^53 - 1).
pub const MAX_AMOUNT: i64 = 9_007_199_254_740_991;
const MAX_ORDER_ID: usize = 128;
const MAX_DESCRIPTION: usize = 1_000;
const MAX_METADATA_KEYS: usize = 20;
const MAX_METADATA_KEY: usize = 40;
const MAX_METADATA_VALUE: usize = 500;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum PaymentStatus {
    Processing,
    Succeeded,
    Declined,
    Failed,
    Refunded,
    PartiallyRefunded,
}

impl PaymentStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            PaymentStatus::Processing => "processing",
            PaymentStatus::Succeeded => "succeeded",
            PaymentStatus::Declined => "declined",
            PaymentStatus::Failed => "failed",
            PaymentStatus::Refunded => "refunded",
            PaymentStatus::PartiallyRefunded => "partially_refunded",
        }
    }

    pub fn parse(name: &str) -> Option<Self> {
        [
            PaymentStatus::Processing,
            PaymentStatus::Succeeded,
            PaymentStatus::Declined,
            PaymentStatus::Failed,
            PaymentStatus::Refunded,
            PaymentStatus::PartiallyRefunded,
        ]
        .into_iter()
        .find(|s| s.as_str() == name)
    }
}

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

/// A payment as stored. Its public fields are what clients see; `merchant_id`,
/// `idempotency_key`, `bank_key`, `version` and `reconcile_after` are the gateway's own
/// bookkeeping.
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
    pub attempts: u32,
    pub refunded_amount: i64,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

/// What the bank said about a charge, as far as a payment needs it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChargeOutcome {
    pub charge_id: String,
    pub approved: bool,
    pub decline_code: Option<String>,
}

/// One change to a payment. The store applies changes against the payment's current version;
/// when another change won the race, this one is applied again to the winner's payment. So each
/// change is written to be applied to whatever state the payment is in by then: settling an
/// already settled payment, failing a succeeded one or finishing a refund twice changes nothing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    /// The gateway is about to send the charge (again): the commit window starts over, and the
    /// reconciler waits for the lease before looking.
    Resend { at: DateTime<Utc>, lease: chrono::Duration },
    /// The bank's answer, after `attempts` more attempts. A failed payment is settled only with
    /// `revive`: the charges of one client key share a bank key, so a charge found under it may be
    /// a newer payment's (made after this one failed and freed the key). A request that charged
    /// revives its payment together with the key's record, which the store writes only while the
    /// key is still this payment's or gone (`store::decide_commit`); the reconciler never does.
    Settle { outcome: ChargeOutcome, attempts: u32, revive: bool },
    /// The bank surely did not charge under this request, or refused it outright.
    Fail { reason: String, attempts: u32 },
    /// The outcome is unknown: the reconciler looks at `at`.
    AwaitReconcile { at: DateTime<Utc>, attempts: u32 },
    /// Holds a refund's amount (`None`: all that is left) while the bank is asked, or, for a
    /// refund already pending under this id, records that it is sent again. `lease` is how long
    /// before the reconciler may look at it if the request dies.
    ReserveRefund {
        id: String,
        amount: Option<i64>,
        idempotency_key: String,
        at: DateTime<Utc>,
        lease: chrono::Duration,
    },
    /// The bank refunded.
    RefundSucceeded { id: String },
    /// The bank surely did not refund: the held amount is free again.
    RefundFailed { id: String },
    /// The bank's answer about a refund is unknown: the reconciler looks at `at`.
    RefundPending { id: String, at: DateTime<Utc> },
}

/// Why a refund cannot be reserved.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RefundRefusal {
    /// Only a succeeded (or partly refunded) payment can be refunded.
    NotRefundable(PaymentStatus),
    /// More than is left once succeeded and pending refunds are counted.
    OverRefund { remaining: i64 },
}

impl Payment {
    pub fn public(&self) -> PublicPayment<'_> {
        PublicPayment {
            id: &self.id,
            object: "payment",
            status: self.status,
            amount: self.amount,
            currency: &self.currency,
            order_id: self.order_id.as_deref(),
            description: self.description.as_deref(),
            metadata: &self.metadata,
            card: &self.card,
            decline_code: self.decline_code.as_deref(),
            failure_reason: self.failure_reason.as_deref(),
            bank_charge_id: self.bank_charge_id.as_deref(),
            attempts: self.attempts,
            refunded_amount: self.refunded_amount,
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

    /// What can still be refunded: the amount less succeeded and pending refunds.
    pub fn refundable(&self) -> i64 {
        let held: i64 = self.refunds.iter().filter(|r| r.status != RefundStatus::Failed).map(|r| r.amount).sum();
        self.amount - held
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

    /// The payment with `change` applied and its version bumped, or why a refund cannot be held.
    /// `now` stamps `updated_at` when something changed.
    pub fn apply(&self, change: &Change, now: DateTime<Utc>) -> Result<Payment, RefundRefusal> {
        let mut next = self.clone();
        match change {
            Change::Resend { at, lease } => {
                if self.is_settled() {
                    return Ok(next);
                }
                next.last_attempt_at = Some(*at);
                next.reconcile_after = Some(*at + *lease);
            }
            Change::Settle { outcome, attempts, revive } => {
                next.attempts += attempts;
                // A later answer never overturns an earlier one: the bank has one charge per key.
                if self.status == PaymentStatus::Processing || (*revive && self.status == PaymentStatus::Failed) {
                    next.bank_charge_id = Some(outcome.charge_id.clone());
                    next.status = if outcome.approved { PaymentStatus::Succeeded } else { PaymentStatus::Declined };
                    next.decline_code = outcome.decline_code.clone();
                    next.failure_reason = None;
                }
                next.reconcile_after = next.due_for_refunds();
            }
            Change::Fail { reason, attempts } => {
                next.attempts += attempts;
                if self.status == PaymentStatus::Processing {
                    next.status = PaymentStatus::Failed;
                    next.failure_reason = Some(reason.clone());
                    next.reconcile_after = None;
                }
            }
            Change::AwaitReconcile { at, attempts } => {
                next.attempts += attempts;
                if self.status == PaymentStatus::Processing {
                    next.reconcile_after = Some(*at);
                }
            }
            Change::ReserveRefund { id, amount, idempotency_key, at, lease } => {
                match self.refund(id).map(|r| r.status) {
                    // Sent again by a request that took over: the commit window starts over.
                    Some(RefundStatus::Pending) => {
                        if let Some(refund) = next.refunds.iter_mut().find(|r| r.id == *id) {
                            refund.last_attempt_at = Some(*at);
                        }
                        next.reconcile_after =
                            Some(next.reconcile_after.map_or(*at + *lease, |due| due.min(*at + *lease)));
                    }
                    Some(RefundStatus::Succeeded) => {}
                    // Its earlier request surely refunded nothing: reserve it afresh.
                    Some(RefundStatus::Failed) | None => {
                        if !matches!(self.status, PaymentStatus::Succeeded | PaymentStatus::PartiallyRefunded) {
                            return Err(RefundRefusal::NotRefundable(self.status));
                        }
                        next.refunds.retain(|r| r.id != *id);
                        let remaining = next.refundable();
                        let amount = amount.unwrap_or(remaining);
                        if amount <= 0 || amount > remaining {
                            return Err(RefundRefusal::OverRefund { remaining });
                        }
                        next.refunds.push(Refund {
                            id: id.clone(),
                            amount,
                            status: RefundStatus::Pending,
                            created_at: *at,
                            idempotency_key: idempotency_key.clone(),
                            last_attempt_at: Some(*at),
                        });
                        let due = *at + *lease;
                        next.reconcile_after = Some(next.reconcile_after.map_or(due, |d| d.min(due)));
                    }
                }
            }
            Change::RefundSucceeded { id } => next.set_refund_status(id, RefundStatus::Succeeded),
            Change::RefundFailed { id } => next.set_refund_status(id, RefundStatus::Failed),
            Change::RefundPending { id, at } => {
                if self.refund(id).is_some_and(|r| r.status == RefundStatus::Pending) {
                    next.reconcile_after = Some(*at);
                }
            }
        }
        if next != *self {
            next.updated_at = now;
        }
        // Written even when nothing changed, so the record change that goes with it is too.
        next.version = self.version + 1;
        Ok(next)
    }

    /// Settles a pending refund (a settled one stays as it is) and recomputes the totals.
    fn set_refund_status(&mut self, id: &str, status: RefundStatus) {
        let Some(refund) = self.refunds.iter_mut().find(|r| r.id == id) else { return };
        if refund.status != RefundStatus::Pending {
            return;
        }
        refund.status = status;
        self.refunded_amount =
            self.refunds.iter().filter(|r| r.status == RefundStatus::Succeeded).map(|r| r.amount).sum();
        if self.refunded_amount > 0 {
            self.status = if self.refunded_amount >= self.amount {
                PaymentStatus::Refunded
            } else {
                PaymentStatus::PartiallyRefunded
            };
        }
        self.reconcile_after = if self.has_pending_refunds() { self.reconcile_after } else { None };
    }

    /// While a refund is pending, the reconciler keeps looking at the payment.
    fn due_for_refunds(&self) -> Option<DateTime<Utc>> {
        if self.has_pending_refunds() { self.reconcile_after } else { None }
    }

    /// When the reconciler should look at this payment, if at all: while it is processing, or
    /// while one of its refunds is pending.
    pub fn due_at(&self) -> Option<DateTime<Utc>> {
        let waiting = self.status == PaymentStatus::Processing || self.has_pending_refunds();
        waiting.then(|| self.reconcile_after.unwrap_or(DateTime::<Utc>::UNIX_EPOCH))
    }
}

/// `POST /v1/payments` body.
#[derive(Deserialize, utoipa::ToSchema)]
#[schema(example = json!({
    "amount": 1999, "currency": "USD", "order_id": "order-42",
    "card": {"number": "4242424242424242", "exp_month": 12, "exp_year": 2030, "cvc": "123"}
}))]
#[serde(deny_unknown_fields)]
pub struct CreatePayment {
    /// Minor units (1999 = 19.99), at least 1.
    #[schema(minimum = 1, maximum = 9_007_199_254_740_991_i64)]
    pub amount: i64,
    /// One of the configured currencies (ISO 4217).
    #[schema(pattern = r"^[A-Z]{3}$")]
    pub currency: String,
    pub card: CardInput,
    /// 1 to 128 characters, none of them control characters.
    #[serde(default)]
    #[schema(min_length = 1, max_length = 128, pattern = r"^[^\u0000-\u001F\u007F-\u009F]*$")]
    pub order_id: Option<String>,
    /// At most 1,000 characters, none of them control characters.
    #[serde(default)]
    #[schema(max_length = 1000, pattern = r"^[^\u0000-\u001F\u007F-\u009F]*$")]
    pub description: Option<String>,
    /// At most 20 keys of 1 to 40 characters, each with a value of at most 500; no control
    /// characters.
    #[serde(default)]
    #[schema(schema_with = metadata_schema)]
    pub metadata: BTreeMap<String, String>,
}

/// The schema of `metadata`, with the limits `CreatePayment::validate` enforces.
fn metadata_schema() -> utoipa::openapi::Object {
    use utoipa::openapi::{ObjectBuilder, Type};
    let printable = r"^[^\u0000-\u001F\u007F-\u009F]*$";
    ObjectBuilder::new()
        .schema_type(Type::Object)
        .max_properties(Some(MAX_METADATA_KEYS))
        .property_names(Some(
            ObjectBuilder::new()
                .schema_type(Type::String)
                .min_length(Some(1))
                .max_length(Some(MAX_METADATA_KEY))
                .pattern(Some(printable)),
        ))
        .additional_properties(Some(
            ObjectBuilder::new()
                .schema_type(Type::String)
                .max_length(Some(MAX_METADATA_VALUE))
                .pattern(Some(printable)),
        ))
        .build()
}

impl std::fmt::Debug for CreatePayment {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CreatePayment")
            .field("amount", &self.amount)
            .field("currency", &self.currency)
            .field("card", &self.card)
            .field("order_id", &self.order_id)
            .finish_non_exhaustive()
    }
}

/// The canonical form of a request, used for its fingerprint: field order and metadata order
/// fixed, so the same request always hashes the same.
#[derive(Debug, Serialize)]
pub struct Canonical<'a> {
    pub amount: i64,
    pub currency: &'a str,
    pub card: &'a CardInput,
    pub order_id: Option<&'a str>,
    pub description: Option<&'a str>,
    pub metadata: &'a BTreeMap<String, String>,
}

impl CreatePayment {
    /// Checks every field and reports all problems at once.
    pub fn validate(&self, currencies: &[String]) -> Result<(), Problem> {
        let mut errors = Vec::new();
        if self.amount <= 0 {
            errors.push(FieldError::new("amount", "must be a positive integer of minor units"));
        } else if self.amount > MAX_AMOUNT {
            errors.push(FieldError::new("amount", format!("must be at most {MAX_AMOUNT}")));
        }
        if !currencies.contains(&self.currency) {
            errors.push(FieldError::new("currency", format!("must be one of {}", currencies.join(", "))));
        }
        self.card.validate(&mut errors);
        if let Some(order_id) = &self.order_id
            && !printable(order_id, 1, MAX_ORDER_ID)
        {
            errors.push(FieldError::new("order_id", format!("must be 1 to {MAX_ORDER_ID} printable characters")));
        }
        if let Some(description) = &self.description
            && !printable(description, 0, MAX_DESCRIPTION)
        {
            errors.push(FieldError::new(
                "description",
                format!("must be at most {MAX_DESCRIPTION} printable characters"),
            ));
        }
        if self.metadata.len() > MAX_METADATA_KEYS {
            errors.push(FieldError::new("metadata", format!("may hold at most {MAX_METADATA_KEYS} keys")));
        }
        for (key, value) in &self.metadata {
            if !printable(key, 1, MAX_METADATA_KEY) {
                errors.push(FieldError::new(
                    "metadata",
                    format!("keys must be 1 to {MAX_METADATA_KEY} printable characters"),
                ));
            }
            if !printable(value, 0, MAX_METADATA_VALUE) {
                errors.push(FieldError::new(
                    format!("metadata.{key}"),
                    format!("must be at most {MAX_METADATA_VALUE} printable characters"),
                ));
            }
        }
        if errors.is_empty() { Ok(()) } else { Err(Problem::validation(errors)) }
    }

    pub fn canonical(&self) -> Canonical<'_> {
        Canonical {
            amount: self.amount,
            currency: &self.currency,
            card: &self.card,
            order_id: self.order_id.as_deref(),
            description: self.description.as_deref(),
            metadata: &self.metadata,
        }
    }
}

fn printable(text: &str, min: usize, max: usize) -> bool {
    let count = text.chars().count();
    (min..=max).contains(&count) && !text.chars().any(char::is_control)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn processing() -> Payment {
        serde_json::from_value(serde_json::json!({
            "id": "pay_1", "version": 3, "status": "processing", "amount": 1000, "currency": "USD",
            "order_id": null, "description": null, "metadata": {}, "card": {"brand": "visa", "last4": "4242"},
            "decline_code": null, "failure_reason": null, "bank_charge_id": null, "attempts": 1,
            "refunded_amount": 0, "created_at": "2026-01-01T00:00:00Z", "updated_at": "2026-01-01T00:00:00Z",
            "merchant_id": "m", "idempotency_key": "k", "reconcile_after": null
        }))
        .unwrap_or_else(|e| panic!("{e}"))
    }

    fn settle(revive: bool) -> Change {
        let outcome = ChargeOutcome { charge_id: "ch_1".into(), approved: true, decline_code: None };
        Change::Settle { outcome, attempts: 0, revive }
    }

    fn apply(payment: &Payment, change: &Change) -> Payment {
        payment.apply(change, Utc::now()).unwrap_or_else(|e| panic!("{e:?}"))
    }

    #[test]
    fn every_change_bumps_the_version_and_settles_only_what_it_may() {
        let paid = apply(&processing(), &settle(false));
        assert_eq!((paid.status, paid.version), (PaymentStatus::Succeeded, 4));
        let failed = apply(&processing(), &Change::Fail { reason: "no".into(), attempts: 1 });
        assert_eq!((failed.status, failed.attempts), (PaymentStatus::Failed, 2));
        // A failed payment freed its key; a charge under the key may be a newer payment's.
        assert_eq!(apply(&failed, &settle(false)).status, PaymentStatus::Failed, "the reconciler never revives");
        assert_eq!(apply(&failed, &settle(true)).status, PaymentStatus::Succeeded, "the request that charged may");
        // Failing or settling a settled payment changes nothing but the version.
        let again = apply(&paid, &Change::Fail { reason: "late".into(), attempts: 0 });
        assert_eq!((again.status, again.version), (PaymentStatus::Succeeded, 5));
    }

    #[test]
    fn refund_holds_add_up_and_settle_once() {
        let paid = apply(&processing(), &settle(false));
        let reserve = |id: &str, amount: Option<i64>| Change::ReserveRefund {
            id: id.into(),
            amount,
            idempotency_key: format!("key-{id}"),
            at: Utc::now(),
            lease: chrono::Duration::seconds(30),
        };
        let held = apply(&apply(&paid, &reserve("re_1", Some(600))), &reserve("re_2", None));
        assert_eq!((held.refund("re_2").map(|r| r.amount), held.refundable()), (Some(400), 0));
        assert!(held.due_at().is_some(), "pending refunds are the reconciler's");
        assert_eq!(held.apply(&reserve("re_3", Some(1)), Utc::now()), Err(RefundRefusal::OverRefund { remaining: 0 }));
        let one = apply(&held, &Change::RefundSucceeded { id: "re_1".into() });
        let both = apply(
            &apply(&one, &Change::RefundFailed { id: "re_2".into() }),
            &Change::RefundSucceeded { id: "re_2".into() },
        );
        assert_eq!(
            (both.refunded_amount, both.status),
            (600, PaymentStatus::PartiallyRefunded),
            "a failed refund stays failed"
        );
        assert_eq!(both.due_at(), None);
        assert_eq!(both.refundable(), 400, "what a failed refund held is free again");
        let declined = Payment { status: PaymentStatus::Declined, ..processing() };
        assert_eq!(
            declined.apply(&reserve("re_9", None), Utc::now()),
            Err(RefundRefusal::NotRefundable(PaymentStatus::Declined))
        );
    }
}
