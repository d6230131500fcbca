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

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Refund {
    pub id: String,
    pub object: String,
    pub payment_id: String,
    pub amount: i64,
    pub status: String,
    pub bank_refund_id: Option<String>,
    pub created_at: DateTime<Utc>,
}

/// A payment as stored. Its public fields are what clients see; `merchant_id`,
/// `idempotency_key` and `reconcile_after` are the gateway's own bookkeeping.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Payment {
    pub id: String,
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
    pub refunded_amount: i64,
    #[serde(default)]
    pub refunds: Vec<Refund>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    pub merchant_id: String,
    pub idempotency_key: String,
    /// While `processing`: when the reconciler should look at it (at once after a 202, after the
    /// lease for a payment whose request may still be running).
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

    /// Applies a refund once (by id) and recomputes the refunded amount and status.
    pub fn apply_refund(&mut self, refund: Refund) {
        if self.refunds.iter().any(|r| r.id == refund.id) {
            return;
        }
        self.refunds.push(refund);
        self.refunded_amount = self.refunds.iter().map(|r| r.amount).sum();
        self.status = if self.refunded_amount >= self.amount {
            PaymentStatus::Refunded
        } else {
            PaymentStatus::PartiallyRefunded
        };
        self.updated_at = Utc::now();
    }
}

/// `POST /v1/payments` body.
#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreatePayment {
    /// Minor units (1999 = 19.99), at least 1.
    pub amount: i64,
    pub currency: String,
    pub card: CardInput,
    #[serde(default)]
    pub order_id: Option<String>,
    #[serde(default)]
    pub description: Option<String>,
    #[serde(default)]
    pub metadata: BTreeMap<String, String>,
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
