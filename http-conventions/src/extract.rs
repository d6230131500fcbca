//! Request extractors whose every rejection is a problem+json answer.

use axum::extract::{FromRequest, Request};
use axum::http::{StatusCode, header};
use bytes::Bytes;
use serde::de::DeserializeOwned;

use crate::problem::{ErrorCode, FieldError, Problem};
use crate::redact::{Redact, redact_card_numbers};

/// A parser's message about what the client sent, without any card number it may echo.
fn echoed(message: impl std::fmt::Display) -> String {
    redact_card_numbers(&message.to_string(), Redact::AllLongNumbers).into_owned()
}

/// A JSON request body. Syntax errors are 400, well-formed JSON of the wrong shape is 422, a body
/// over the limit is 413, and a declared non-JSON content type is 415.
#[derive(Debug)]
pub struct JsonBody<T>(pub T);

/// Like [`JsonBody`], but an empty body (or a bare JSON `null`) stands for `T::default()`.
#[derive(Debug)]
pub struct OptionalJsonBody<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequest<S> for JsonBody<T> {
    type Rejection = Problem;

    async fn from_request(request: Request, state: &S) -> Result<Self, Problem> {
        let bytes = read_json_bytes(request, state).await?;
        if bytes.is_empty() {
            return Err(Problem::invalid_request("the request body is empty; send a JSON object"));
        }
        parse_json(&bytes).map(JsonBody)
    }
}

impl<S: Send + Sync, T: DeserializeOwned + Default> FromRequest<S> for OptionalJsonBody<T> {
    type Rejection = Problem;

    async fn from_request(request: Request, state: &S) -> Result<Self, Problem> {
        let bytes = read_json_bytes(request, state).await?;
        if bytes.iter().all(u8::is_ascii_whitespace) || bytes.trim_ascii() == b"null" {
            return Ok(OptionalJsonBody(T::default()));
        }
        parse_json(&bytes).map(OptionalJsonBody)
    }
}

async fn read_json_bytes<S: Send + Sync>(request: Request, state: &S) -> Result<Bytes, Problem> {
    // JSON is read whatever the content type says when it is missing, a JSON type, or the
    // form type `curl -d` sends by default; another declared type (XML, say) is a client bug.
    if let Some(content_type) = request.headers().get(header::CONTENT_TYPE) {
        let essence = content_type.to_str().unwrap_or_default().split(';').next().unwrap_or_default().trim();
        let essence_lower = essence.to_ascii_lowercase();
        let accepted = essence_lower == "application/json"
            || essence_lower.ends_with("+json")
            || essence_lower == "application/x-www-form-urlencoded";
        if !accepted {
            return Err(Problem::new(
                ErrorCode::UnsupportedMediaType,
                format!("the body must be application/json, not `{essence}`"),
            ));
        }
    }
    Bytes::from_request(request, state).await.map_err(|rejection| {
        if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
            Problem::new(ErrorCode::PayloadTooLarge, "the request body is too large")
        } else {
            Problem::invalid_request(echoed(rejection.body_text()))
        }
    })
}

/// Parses JSON: malformed input is 400, a well-formed body of the wrong shape is 422.
pub fn parse_json<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, Problem> {
    serde_json::from_slice(bytes).map_err(|error| match error.classify() {
        serde_json::error::Category::Data => Problem::validation(vec![FieldError::new("body", echoed(&error))]),
        _ => Problem::invalid_request(format!("malformed JSON: {}", echoed(&error))),
    })
}

/// Query parameters; a malformed query string is a 400 problem.
#[derive(Debug)]
pub struct Query<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> axum::extract::FromRequestParts<S> for Query<T> {
    type Rejection = Problem;

    async fn from_request_parts(parts: &mut axum::http::request::Parts, state: &S) -> Result<Self, Problem> {
        axum::extract::Query::<T>::from_request_parts(parts, state)
            .await
            .map(|query| Query(query.0))
            .map_err(|rejection| Problem::invalid_request(echoed(rejection.body_text())))
    }
}

/// Path parameters; an undecodable segment is a 400 problem.
#[derive(Debug)]
pub struct Path<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned + Send> axum::extract::FromRequestParts<S> for Path<T> {
    type Rejection = Problem;

    async fn from_request_parts(parts: &mut axum::http::request::Parts, state: &S) -> Result<Self, Problem> {
        axum::extract::Path::<T>::from_request_parts(parts, state)
            .await
            .map(|path| Path(path.0))
            .map_err(|rejection| Problem::invalid_request(echoed(rejection.body_text())))
    }
}
