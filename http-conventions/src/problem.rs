//! RFC 9457 problem details: the one shape every error of the bank takes on the wire.

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;

use crate::redact::{Redact, redact_card_numbers};

/// One invalid field of a request, named by its JSON path (`card.number`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct FieldError {
    pub field: String,
    pub message: String,
}

impl FieldError {
    pub fn new(field: impl Into<String>, message: impl Into<String>) -> Self {
        Self { field: field.into(), message: message.into() }
    }
}

/// The stable machine codes of every error either service answers: what clients switch on. Each
/// has its usual status and a title; the enum is the one list of them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ErrorCode {
    InvalidRequest,
    ValidationFailed,
    IdempotencyKeyMissing,
    IdempotencyKeyReused,
    IdempotencyKeyInUse,
    Unauthorized,
    Forbidden,
    NotFound,
    MethodNotAllowed,
    RequestTimeout,
    PayloadTooLarge,
    UnsupportedMediaType,
    InvalidState,
    RateLimited,
    BankUnavailable,
    CircuitOpen,
    Overloaded,
    StoreUnavailable,
    OutcomeUnknown,
    InternalError,
}

impl ErrorCode {
    pub const ALL: [ErrorCode; 20] = [
        ErrorCode::InvalidRequest,
        ErrorCode::ValidationFailed,
        ErrorCode::IdempotencyKeyMissing,
        ErrorCode::IdempotencyKeyReused,
        ErrorCode::IdempotencyKeyInUse,
        ErrorCode::Unauthorized,
        ErrorCode::Forbidden,
        ErrorCode::NotFound,
        ErrorCode::MethodNotAllowed,
        ErrorCode::RequestTimeout,
        ErrorCode::PayloadTooLarge,
        ErrorCode::UnsupportedMediaType,
        ErrorCode::InvalidState,
        ErrorCode::RateLimited,
        ErrorCode::BankUnavailable,
        ErrorCode::CircuitOpen,
        ErrorCode::Overloaded,
        ErrorCode::StoreUnavailable,
        ErrorCode::OutcomeUnknown,
        ErrorCode::InternalError,
    ];

    /// The code on the wire.
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorCode::InvalidRequest => "invalid_request",
            ErrorCode::ValidationFailed => "validation_failed",
            ErrorCode::IdempotencyKeyMissing => "idempotency_key_missing",
            ErrorCode::IdempotencyKeyReused => "idempotency_key_reused",
            ErrorCode::IdempotencyKeyInUse => "idempotency_key_in_use",
            ErrorCode::Unauthorized => "unauthorized",
            ErrorCode::Forbidden => "forbidden",
            ErrorCode::NotFound => "not_found",
            ErrorCode::MethodNotAllowed => "method_not_allowed",
            ErrorCode::RequestTimeout => "request_timeout",
            ErrorCode::PayloadTooLarge => "payload_too_large",
            ErrorCode::UnsupportedMediaType => "unsupported_media_type",
            ErrorCode::InvalidState => "invalid_state",
            ErrorCode::RateLimited => "rate_limited",
            ErrorCode::BankUnavailable => "bank_unavailable",
            ErrorCode::CircuitOpen => "circuit_open",
            ErrorCode::Overloaded => "overloaded",
            ErrorCode::StoreUnavailable => "store_unavailable",
            ErrorCode::OutcomeUnknown => "outcome_unknown",
            ErrorCode::InternalError => "internal_error",
        }
    }

    /// The status this code is answered with.
    pub fn status(self) -> StatusCode {
        match self {
            ErrorCode::InvalidRequest | ErrorCode::IdempotencyKeyMissing => StatusCode::BAD_REQUEST,
            ErrorCode::ValidationFailed | ErrorCode::IdempotencyKeyReused => StatusCode::UNPROCESSABLE_ENTITY,
            ErrorCode::IdempotencyKeyInUse | ErrorCode::InvalidState => StatusCode::CONFLICT,
            ErrorCode::Unauthorized => StatusCode::UNAUTHORIZED,
            ErrorCode::Forbidden => StatusCode::FORBIDDEN,
            ErrorCode::NotFound => StatusCode::NOT_FOUND,
            ErrorCode::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            ErrorCode::RequestTimeout => StatusCode::REQUEST_TIMEOUT,
            ErrorCode::PayloadTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            ErrorCode::UnsupportedMediaType => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            ErrorCode::RateLimited => StatusCode::TOO_MANY_REQUESTS,
            ErrorCode::BankUnavailable
            | ErrorCode::CircuitOpen
            | ErrorCode::Overloaded
            | ErrorCode::StoreUnavailable
            | ErrorCode::OutcomeUnknown => StatusCode::SERVICE_UNAVAILABLE,
            ErrorCode::InternalError => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// A short human title, the same for every problem of this code.
    pub fn title(self) -> &'static str {
        match self {
            ErrorCode::InvalidRequest => "The request is malformed",
            ErrorCode::ValidationFailed => "The request has invalid fields",
            ErrorCode::IdempotencyKeyMissing => "An Idempotency-Key header is required",
            ErrorCode::IdempotencyKeyReused => "The Idempotency-Key was used with a different request",
            ErrorCode::IdempotencyKeyInUse => "A request with this Idempotency-Key is still in progress",
            ErrorCode::Unauthorized => "Authentication required",
            ErrorCode::Forbidden => "Not allowed",
            ErrorCode::NotFound => "No such resource",
            ErrorCode::MethodNotAllowed => "Method not allowed on this resource",
            ErrorCode::RequestTimeout => "The request did not arrive in time",
            ErrorCode::PayloadTooLarge => "The request body is too large",
            ErrorCode::UnsupportedMediaType => "The request body must be JSON",
            ErrorCode::InvalidState => "The resource is not in a state that allows this",
            ErrorCode::RateLimited => "Too many requests",
            ErrorCode::BankUnavailable => "The bank is unavailable",
            ErrorCode::CircuitOpen => "The bank is failing; calls are paused by the circuit breaker",
            ErrorCode::Overloaded => "Too many bank calls in flight",
            ErrorCode::StoreUnavailable => "The idempotency store is unavailable",
            ErrorCode::OutcomeUnknown => "The outcome is not known yet; retry with the same Idempotency-Key",
            ErrorCode::InternalError => "Internal error",
        }
    }
}

impl std::fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// An error answer: a stable machine `code`, its HTTP status (the code's own unless said
/// otherwise) and a human `detail`.
#[derive(Debug, Clone)]
pub struct Problem {
    pub status: StatusCode,
    pub code: ErrorCode,
    pub detail: String,
    pub errors: Vec<FieldError>,
    pub retry_after_s: Option<u64>,
}

impl Problem {
    pub fn new(code: ErrorCode, detail: impl Into<String>) -> Self {
        Self { status: code.status(), code, detail: detail.into(), errors: Vec::new(), retry_after_s: None }
    }

    pub fn invalid_request(detail: impl Into<String>) -> Self {
        Self::new(ErrorCode::InvalidRequest, detail)
    }

    pub fn not_found(detail: impl Into<String>) -> Self {
        Self::new(ErrorCode::NotFound, detail)
    }

    /// 422 listing every invalid field at once, so a client fixes them in one round trip.
    pub fn validation(errors: Vec<FieldError>) -> Self {
        let detail = match errors.as_slice() {
            [one] => format!("{}: {}", one.field, one.message),
            many => format!("{} fields are invalid", many.len()),
        };
        Self { errors, ..Self::new(ErrorCode::ValidationFailed, detail) }
    }

    pub fn with_retry_after(mut self, seconds: u64) -> Self {
        self.retry_after_s = Some(seconds);
        self
    }

    /// Answers with another status than the code's own (a malformed request's 414 or 431, say).
    pub fn with_status(mut self, status: StatusCode) -> Self {
        self.status = status;
        self
    }
}

/// The problem+json document (RFC 9457) every error answer carries.
#[derive(Debug, Serialize, utoipa::ToSchema)]
#[schema(as = Problem)]
pub struct ProblemBody<'a> {
    /// A URI naming the problem type.
    #[serde(rename = "type")]
    pub kind: String,
    pub title: &'a str,
    pub status: u16,
    pub detail: &'a str,
    /// A stable machine code, as `validation_failed` or `circuit_open`.
    pub code: &'a str,
    /// For `validation_failed`: every invalid field.
    #[serde(skip_serializing_if = "<[_]>::is_empty")]
    pub errors: &'a [FieldError],
}

/// The document of a problem as it goes on the wire.
#[derive(Debug, Serialize)]
pub struct OwnedProblemBody {
    #[serde(rename = "type")]
    kind: String,
    title: &'static str,
    status: u16,
    detail: String,
    code: &'static str,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    errors: Vec<FieldError>,
}

impl Problem {
    /// The problem+json document, with any card number hidden: whatever built this problem, no
    /// card number leaves in it.
    pub fn body(&self) -> OwnedProblemBody {
        let hide = |text: &str| redact_card_numbers(text, Redact::CardNumbers).into_owned();
        OwnedProblemBody {
            kind: format!("urn:resilient-pay:problem:{}", self.code),
            title: self.code.title(),
            status: self.status.as_u16(),
            detail: hide(&self.detail),
            code: self.code.as_str(),
            errors: self
                .errors
                .iter()
                .map(|e| FieldError { field: hide(&e.field), message: hide(&e.message) })
                .collect(),
        }
    }
}

impl IntoResponse for Problem {
    fn into_response(self) -> Response {
        let body = self.body();
        // Serialising a struct of strings and integers cannot fail; fall back to an empty body anyway.
        let bytes = serde_json::to_vec(&body).unwrap_or_default();
        let mut response = (self.status, bytes).into_response();
        let headers = response.headers_mut();
        headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/problem+json"));
        if let Some(seconds) = self.retry_after_s {
            headers.insert(header::RETRY_AFTER, HeaderValue::from(seconds));
        }
        response
    }
}
