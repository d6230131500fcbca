//! RFC 9457 problem details: the one shape every error of the bank takes on the wire.

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;

use crate::card::{Redact, redact_card_numbers};

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

/// An error answer: an HTTP status, a stable machine `code` and a human `detail`.
#[derive(Debug, Clone)]
pub struct Problem {
    pub status: StatusCode,
    pub code: &'static str,
    pub detail: String,
    pub errors: Vec<FieldError>,
    pub retry_after_s: Option<u64>,
}

impl Problem {
    pub fn new(status: StatusCode, code: &'static str, detail: impl Into<String>) -> Self {
        Self { status, code, detail: detail.into(), errors: Vec::new(), retry_after_s: None }
    }

    pub fn invalid_request(detail: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "invalid_request", detail)
    }

    pub fn not_found(detail: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, "not_found", detail)
    }

    /// 422 listing every invalid field at once, so a client fixes them in one round trip.
    pub fn validation(errors: Vec<FieldError>) -> Self {
        let detail = match errors.as_slice() {
            [one] => format!("{}: {}", one.field, one.message),
            many => format!("{} fields are invalid", many.len()),
        };
        Self { errors, ..Self::new(StatusCode::UNPROCESSABLE_ENTITY, "validation_failed", detail) }
    }

    pub fn with_retry_after(mut self, seconds: u64) -> Self {
        self.retry_after_s = Some(seconds);
        self
    }

    fn title(&self) -> &'static str {
        match self.code {
            "invalid_request" => "The request is malformed",
            "validation_failed" => "The request has invalid fields",
            "idempotency_key_missing" => "An Idempotency-Key header is required",
            "idempotency_key_reused" => "The Idempotency-Key was used with a different request",
            "idempotency_key_in_use" => "A request with this Idempotency-Key is still in progress",
            "unauthorized" => "Authentication required",
            "forbidden" => "Not allowed",
            "not_found" => "No such resource",
            "method_not_allowed" => "Method not allowed on this resource",
            "payload_too_large" => "The request body is too large",
            "unsupported_media_type" => "The request body must be JSON",
            "invalid_state" => "The resource is not in a state that allows this",
            "rate_limited" => "Too many requests",
            "bank_unavailable" => "The bank is unavailable",
            "circuit_open" => "The bank is failing; calls are paused by the circuit breaker",
            "overloaded" => "Too many bank calls in flight",
            "store_unavailable" => "The idempotency store is unavailable",
            "outcome_unknown" => "The outcome is not known yet; retry with the same Idempotency-Key",
            "internal_error" => "Internal error",
            "request_timeout" => "The request did not arrive in time",
            _ => "Error",
        }
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
            title: self.title(),
            status: self.status.as_u16(),
            detail: hide(&self.detail),
            code: self.code,
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
