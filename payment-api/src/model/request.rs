//! What a client sends to create a payment, its validation, and its canonical form.

use std::collections::BTreeMap;

pub use http_conventions::MAX_JSON_INTEGER as MAX_AMOUNT;
pub use http_conventions::card::{CardInput, CardSummary};
use http_conventions::problem::FieldError;
use serde::{Deserialize, Serialize};

const MAX_ORDER_ID: usize = 128;
const MAX_DESCRIPTION: usize = 1_000;
const MAX_METADATA_KEYS: usize = 20;
const MAX_METADATA_KEY: usize = 40;
const MAX_METADATA_VALUE: usize = 500;

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
    /// `false` authorizes only: the amount is held (201 `requires_capture`) until
    /// `POST /v1/payments/{id}/capture` takes it or `/cancel` (or `capture_before`) releases it.
    /// Default `true`: charged at once.
    #[serde(default = "at_once")]
    #[schema(default = true)]
    pub capture: bool,
}

fn at_once() -> bool {
    true
}

fn is_true(value: &bool) -> bool {
    *value
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
    /// Left out when `true`, so that requests made before two-step payments existed keep their
    /// fingerprints (and their bank keys).
    #[serde(skip_serializing_if = "is_true")]
    pub capture: bool,
}

impl CreatePayment {
    /// Checks every field and reports all problems at once.
    pub fn validate(&self, currencies: &[String]) -> Result<(), Vec<FieldError>> {
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
        if errors.is_empty() { Ok(()) } else { Err(errors) }
    }

    pub fn canonical(&self) -> Canonical<'_> {
        Canonical {
            amount: self.amount,
            currency: &self.currency,
            card: &self.card,
            order_id: self.order_id.as_deref(),
            description: self.description.as_deref(),
            metadata: &self.metadata,
            capture: self.capture,
        }
    }
}

fn printable(text: &str, min: usize, max: usize) -> bool {
    let count = text.chars().count();
    (min..=max).contains(&count) && !text.chars().any(char::is_control)
}
