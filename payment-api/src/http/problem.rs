//! The one place the gateway's answers and errors become HTTP: an [`Answer`] is its stored status
//! and body (with `Idempotent-Replayed` on a replay), a [`PaymentError`] its problem+json.

use std::time::Duration;

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use http_conventions::idempotency::REPLAYED_HEADER;
use http_conventions::problem::{ErrorCode, Problem};
use serde::Serialize;

use crate::error::PaymentError;
use crate::gateway::Answer;

impl From<PaymentError> for Problem {
    fn from(error: PaymentError) -> Self {
        let code = error.code();
        if let PaymentError::StoreUnavailable(cause) = &error {
            tracing::warn!(error = %cause, "idempotency store unavailable; refusing to charge");
        }
        let mut problem = Problem::new(code, error.to_string());
        problem.errors = error.field_errors();
        if let Some(wait) = error.retry_after() {
            let seconds = whole_seconds(wait);
            // A key in use is asked again within 5 s, whatever its lease says.
            let seconds = if code == ErrorCode::IdempotencyKeyInUse { seconds.min(5) } else { seconds };
            problem = problem.with_retry_after(seconds);
        }
        problem
    }
}

impl IntoResponse for PaymentError {
    fn into_response(self) -> Response {
        Problem::from(self).into_response()
    }
}

/// Rounded up, and at least a second: a client waits that long.
fn whole_seconds(wait: Duration) -> u64 {
    wait.as_secs_f64().ceil().max(1.0) as u64
}

impl IntoResponse for Answer {
    fn into_response(self) -> Response {
        let status = StatusCode::from_u16(self.status).unwrap_or(StatusCode::OK);
        let mut response = (status, self.body).into_response();
        let headers = response.headers_mut();
        headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
        if self.replayed {
            headers.insert(REPLAYED_HEADER, HeaderValue::from_static("true"));
        }
        response
    }
}

/// A JSON answer of `value`.
pub fn json<T: Serialize>(status: u16, value: &T) -> Response {
    Answer { status, body: serde_json::to_string(value).unwrap_or_default(), replayed: false }.into_response()
}
