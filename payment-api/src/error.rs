//! What can go wrong with a payment operation, in the payment domain's words. Each error knows its
//! stable machine code; the HTTP edge turns it into problem+json in one place (`http::problem`).

use std::time::Duration;

use http_conventions::problem::{ErrorCode, FieldError};

use crate::model::PaymentStatus;
use crate::store::StoreError;

/// The operation an error, a key or an outcome belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Operation {
    Payment,
    Refund,
    Capture,
    Cancel,
}

impl Operation {
    pub fn noun(self) -> &'static str {
        match self {
            Operation::Payment => "payment",
            Operation::Refund => "refund",
            Operation::Capture => "capture",
            Operation::Cancel => "cancel",
        }
    }

    /// What is true when the bank surely did nothing.
    pub fn nothing_done(self) -> &'static str {
        match self {
            Operation::Payment => "nothing was charged",
            Operation::Refund => "nothing was refunded",
            Operation::Capture => "nothing was captured",
            Operation::Cancel => "the hold was not released",
        }
    }

    /// What a payment must be for the operation, in an `invalid_state` error.
    fn allowed_from(self) -> &'static str {
        match self {
            Operation::Payment => "a new payment",
            Operation::Refund => "only a succeeded payment can be refunded",
            Operation::Capture => "only a requires_capture payment can be captured",
            Operation::Cancel => "only a requires_capture payment can be canceled",
        }
    }

    /// The operation's idempotency key as stored: scoped to the merchant and the operation, so the
    /// same client key on a payment and on a refund are two keys. (Stored keys use the noun, which
    /// therefore never changes.)
    pub fn scoped_key(self, merchant: &str, key: &str) -> String {
        crate::store::scoped_key(merchant, self.noun(), key)
    }

    /// What the bank may have done, when nobody knows yet.
    pub fn may_have(self) -> &'static str {
        match self {
            Operation::Payment => "charged the card",
            Operation::Refund => "refunded",
            Operation::Capture => "captured the payment",
            Operation::Cancel => "released the hold",
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum PaymentError {
    /// The request's fields: every problem at once.
    #[error("{}", invalid_detail(.0))]
    Invalid(Vec<FieldError>),
    #[error("no payment {0}")]
    NotFound(String),
    /// Another request holds the key; it may be retried after `retry_after`.
    #[error("a {} with this Idempotency-Key is still being processed; retry later", .operation.noun())]
    KeyInUse { operation: Operation, retry_after: Duration },
    #[error("this Idempotency-Key was already used with a different request")]
    KeyReused,
    /// The payment's status does not allow the operation.
    #[error("payment {payment_id} is {status}; {}", .operation.allowed_from())]
    InvalidState { operation: Operation, payment_id: String, status: PaymentStatus },
    /// An authorization past its `capture_before`: the gateway cancels it; it cannot be captured.
    #[error("the authorization of payment {payment_id} passed its capture_before; it is canceled, not captured")]
    AuthorizationExpired { payment_id: String },
    /// More than can be refunded, or captured.
    #[error("amount: {}", over_amount(*.operation, *.remaining))]
    OverAmount { operation: Operation, remaining: i64 },
    /// The bank refused a refund outright: the charge cannot take it (`conflict`), or not this amount.
    #[error("{}", if *.conflict { "the bank refused the refund" } else { "amount: the bank refused the refund amount" })]
    BankRefusedRefund { conflict: bool },
    /// The breaker refused the bank call: nothing was done.
    #[error("the bank is failing and calls to it are paused; {}", .operation.nothing_done())]
    CircuitOpen { operation: Operation, retry_after: Option<Duration> },
    /// The bank surely did not act.
    #[error("the bank did not take the {}; {}", .operation.noun(), .operation.nothing_done())]
    BankUnavailable { operation: Operation },
    #[error("too many bank calls in flight; {}", .operation.nothing_done())]
    Overloaded { operation: Operation },
    /// The store failed before the bank was asked (or when it surely did nothing).
    #[error("the idempotency store is unreachable; nothing was charged, retry later")]
    StoreUnavailable(#[source] StoreError),
    /// The bank may have acted, and the store could not record it yet: never "nothing was done".
    #[error(
        "the bank may have {}, but the idempotency store is unreachable, so the outcome could not be \
         recorded yet; it will be. Retry with the same Idempotency-Key to learn it: it is never applied twice",
        .operation.may_have()
    )]
    OutcomeUnknown { operation: Operation },
}

fn over_amount(operation: Operation, remaining: i64) -> String {
    match operation {
        Operation::Capture => format!("must be between 1 and the {remaining} authorized"),
        _ => format!("must be between 1 and the {remaining} left to refund"),
    }
}

fn invalid_detail(errors: &[FieldError]) -> String {
    match errors {
        [one] => format!("{}: {}", one.field, one.message),
        many => format!("{} fields are invalid", many.len()),
    }
}

impl PaymentError {
    pub fn code(&self) -> ErrorCode {
        match self {
            PaymentError::Invalid(_) | PaymentError::OverAmount { .. } => ErrorCode::ValidationFailed,
            PaymentError::BankRefusedRefund { conflict: false } => ErrorCode::ValidationFailed,
            PaymentError::BankRefusedRefund { conflict: true }
            | PaymentError::InvalidState { .. }
            | PaymentError::AuthorizationExpired { .. } => ErrorCode::InvalidState,
            PaymentError::NotFound(_) => ErrorCode::NotFound,
            PaymentError::KeyInUse { .. } => ErrorCode::IdempotencyKeyInUse,
            PaymentError::KeyReused => ErrorCode::IdempotencyKeyReused,
            PaymentError::CircuitOpen { .. } => ErrorCode::CircuitOpen,
            PaymentError::BankUnavailable { .. } => ErrorCode::BankUnavailable,
            PaymentError::Overloaded { .. } => ErrorCode::Overloaded,
            PaymentError::StoreUnavailable(_) => ErrorCode::StoreUnavailable,
            PaymentError::OutcomeUnknown { .. } => ErrorCode::OutcomeUnknown,
        }
    }

    /// When to try again, for the errors that a retry of the same key may cure.
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            PaymentError::KeyInUse { retry_after, .. } => Some(*retry_after),
            PaymentError::CircuitOpen { retry_after, .. } => Some(retry_after.unwrap_or(Duration::from_secs(1))),
            PaymentError::BankUnavailable { .. }
            | PaymentError::Overloaded { .. }
            | PaymentError::StoreUnavailable(_)
            | PaymentError::OutcomeUnknown { .. } => Some(Duration::from_secs(1)),
            _ => None,
        }
    }

    /// The invalid fields, for a validation error.
    pub fn field_errors(&self) -> Vec<FieldError> {
        match self {
            PaymentError::Invalid(errors) => errors.clone(),
            PaymentError::OverAmount { operation, remaining } => {
                vec![FieldError::new("amount", over_amount(*operation, *remaining))]
            }
            PaymentError::BankRefusedRefund { conflict: false } => {
                vec![FieldError::new("amount", "the bank refused the refund amount")]
            }
            _ => Vec::new(),
        }
    }
}

impl From<StoreError> for PaymentError {
    fn from(error: StoreError) -> Self {
        PaymentError::StoreUnavailable(error)
    }
}
