//! `/v1/payments…`: payments and refunds, for the merchant the API key names.

use std::collections::HashMap;
use std::sync::Arc;

use axum::extract::State;
use axum::response::{IntoResponse, Response};
use http_conventions::extract::{JsonBody, OptionalJsonBody, Path, Query};
use http_conventions::idempotency::IdempotencyKey;
use http_conventions::problem::Problem;
use http_conventions::request_id::RequestId;
use serde::{Deserialize, Serialize};

use super::problem::json;
use crate::app::App;
use crate::auth::Merchant;
use crate::error::PaymentError;
use crate::gateway::Answer;
use crate::model::{CreatePayment, PaymentStatus, PublicPayment};
use crate::store::PaymentFilter;

fn request_id_of(request_id: &Option<axum::Extension<RequestId>>) -> String {
    request_id.as_ref().map(|id| id.0.0.clone()).unwrap_or_default()
}

/// Create a payment, charged exactly once per `Idempotency-Key`.
#[utoipa::path(
    post, path = "/v1/payments", tag = "payments",
    request_body = CreatePayment,
    params(("Idempotency-Key" = String, Header, min_length = 1, max_length = 255, pattern = r"^[!#-~][!-~]{0,254}$", description = "1 to 255 visible ASCII characters (a quoted structured-field string names the same key); the same key never acts twice")),
    responses(
        (status = 201, description = "Succeeded (or a replay, with `Idempotent-Replayed: true`)", body = PublicPayment),
        (status = 202, description = "Processing: the bank's outcome is not known yet; the reconciler settles it", body = PublicPayment),
        (status = 402, description = "Declined by the bank (or refused by it)", body = PublicPayment),
        (status = 400, description = "Malformed request, a missing or invalid key, or two Authorization headers", body = http_conventions::problem::ProblemBody, content_type = "application/problem+json"),
        (status = 401, description = "No valid API key", body = http_conventions::problem::ProblemBody, content_type = "application/problem+json"),
        (status = 408, description = "The body did not arrive in time", body = http_conventions::problem::ProblemBody, content_type = "application/problem+json"),
        (status = 409, description = "A request with this key is in flight (`Retry-After`)", body = http_conventions::problem::ProblemBody, content_type = "application/problem+json"),
        (status = 413, description = "Body over the size limit (16 KiB by default)", body = http_conventions::problem::ProblemBody, content_type = "application/problem+json"),
        (status = 415, description = "The body is declared as something other than JSON", body = http_conventions::problem::ProblemBody, content_type = "application/problem+json"),
        (status = 422, description = "Invalid fields, or the key was used with another body", body = http_conventions::problem::ProblemBody, content_type = "application/problem+json"),
        (status = 429, description = "Rate limited (`Retry-After`)", body = http_conventions::problem::ProblemBody, content_type = "application/problem+json"),
        (status = 503, description = "Not charged (`bank_unavailable`, `circuit_open`, `overloaded`, `store_unavailable`), or the outcome not recorded yet (`outcome_unknown`: retry the same key); `Retry-After`", body = http_conventions::problem::ProblemBody, content_type = "application/problem+json"),
    ),
    security(("api_key" = []))
)]
pub async fn create_payment(
    State(app): State<Arc<App>>,
    axum::Extension(Merchant(merchant)): axum::Extension<Merchant>,
    request_id: Option<axum::Extension<RequestId>>,
    IdempotencyKey(key): IdempotencyKey,
    JsonBody(request): JsonBody<CreatePayment>,
) -> Result<Answer, PaymentError> {
    app.gateway.create_payment(&merchant, &key, request, &request_id_of(&request_id)).await
}

/// A payment of yours.
#[utoipa::path(
    get, path = "/v1/payments/{id}", tag = "payments",
    params(("id" = String, Path, description = "pay_<uuid>")),
    responses(
        (status = 200, description = "The payment", body = PublicPayment),
        (status = 400, description = "Malformed request or two Authorization headers", body = http_conventions::problem::ProblemBody, content_type = "application/problem+json"),
        (status = 401, description = "No valid API key", body = http_conventions::problem::ProblemBody, content_type = "application/problem+json"),
        (status = 404, description = "No such payment (another merchant's included)", body = http_conventions::problem::ProblemBody, content_type = "application/problem+json"),
        (status = 429, description = "Rate limited (`Retry-After`)", body = http_conventions::problem::ProblemBody, content_type = "application/problem+json"),
        (status = 503, description = "The store is unreachable (`Retry-After`)", body = http_conventions::problem::ProblemBody, content_type = "application/problem+json"),
    ),
    security(("api_key" = []))
)]
pub async fn get_payment(
    State(app): State<Arc<App>>,
    axum::Extension(Merchant(merchant)): axum::Extension<Merchant>,
    Path(id): Path<String>,
) -> Result<Response, Problem> {
    tracing::Span::current().record("payment_id", id.as_str());
    let payment = app.gateway.payment(&merchant, &id).await?;
    Ok(Answer { status: 200, body: payment.public_json(), replayed: false }.into_response())
}

/// A page of payments, newest first.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct PaymentList<'a> {
    /// Always `list`.
    object: &'static str,
    data: Vec<PublicPayment<'a>>,
    /// More pages follow: pass the last id as `starting_after`.
    has_more: bool,
}

/// Your payments, newest first, filtered and paginated.
#[utoipa::path(
    get, path = "/v1/payments", tag = "payments",
    params(
        ("order_id" = Option<String>, Query, description = "Only this order's payments"),
        ("status" = Option<PaymentStatus>, Query, description = "Only payments in this status"),
        ("limit" = Option<u32>, Query, minimum = 1, maximum = 100, description = "1 to 100, default 20"),
        ("starting_after" = Option<String>, Query, description = "A payment id: the page after it"),
    ),
    responses(
        (status = 200, description = "A page of payments", body = PaymentList),
        (status = 400, description = "An unknown parameter, a bad value, or two Authorization headers", body = http_conventions::problem::ProblemBody, content_type = "application/problem+json"),
        (status = 401, description = "No valid API key", body = http_conventions::problem::ProblemBody, content_type = "application/problem+json"),
        (status = 429, description = "Rate limited (`Retry-After`)", body = http_conventions::problem::ProblemBody, content_type = "application/problem+json"),
        (status = 503, description = "The store is unreachable (`Retry-After`)", body = http_conventions::problem::ProblemBody, content_type = "application/problem+json"),
    ),
    security(("api_key" = []))
)]
pub async fn list_payments(
    State(app): State<Arc<App>>,
    axum::Extension(Merchant(merchant)): axum::Extension<Merchant>,
    Query(params): Query<HashMap<String, String>>,
) -> Result<Response, Problem> {
    let mut filter = PaymentFilter { limit: super::DEFAULT_LIMIT, ..PaymentFilter::default() };
    for (name, value) in params {
        match name.as_str() {
            "order_id" => filter.order_id = Some(value),
            "starting_after" => filter.starting_after = Some(value),
            "status" => {
                filter.status = Some(PaymentStatus::parse(&value).ok_or_else(|| {
                    let known: Vec<&str> = PaymentStatus::ALL.iter().map(|s| s.as_str()).collect();
                    Problem::invalid_request(format!("status must be one of {}; not `{value}`", known.join(", ")))
                })?);
            }
            "limit" => filter.limit = super::page_limit(&value)?,
            other => return Err(Problem::invalid_request(format!("unknown query parameter `{other}`"))),
        }
    }
    let page = app.gateway.payments(&merchant, &filter).await?;
    let list = PaymentList {
        object: "list",
        data: page.payments.iter().map(|p| p.public()).collect(),
        has_more: page.has_more,
    };
    Ok(json(200, &list))
}

/// `POST /v1/payments/{id}/refunds` body.
#[derive(Debug, Default, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateRefund {
    /// Minor units; omitted: what is left to refund.
    #[serde(default)]
    #[schema(minimum = 1, maximum = 9_007_199_254_740_991_i64)]
    amount: Option<i64>,
}

/// Refund a succeeded payment (the compensation a saga calls), once per `Idempotency-Key`.
#[utoipa::path(
    post, path = "/v1/payments/{id}/refunds", tag = "payments",
    request_body(content = Option<CreateRefund>, description = "Optional; no amount refunds the rest"),
    params(
        ("id" = String, Path, description = "pay_<uuid>"),
        ("Idempotency-Key" = String, Header, min_length = 1, max_length = 255, pattern = r"^[!#-~][!-~]{0,254}$", description = "1 to 255 visible ASCII characters (a quoted structured-field string names the same key); the same key never acts twice"),
    ),
    responses(
        (status = 201, description = "Refunded (or a replay, with `Idempotent-Replayed: true`)", body = crate::model::PublicRefund),
        (status = 202, description = "Pending: the bank's answer is unknown; the reconciler settles it, and the same key then replays the final refund", body = crate::model::PublicRefund),
        (status = 400, description = "Malformed request, a missing or invalid key, or two Authorization headers", body = http_conventions::problem::ProblemBody, content_type = "application/problem+json"),
        (status = 401, description = "No valid API key", body = http_conventions::problem::ProblemBody, content_type = "application/problem+json"),
        (status = 404, description = "No such payment", body = http_conventions::problem::ProblemBody, content_type = "application/problem+json"),
        (status = 408, description = "The body did not arrive in time", body = http_conventions::problem::ProblemBody, content_type = "application/problem+json"),
        (status = 409, description = "The payment is not refundable (`invalid_state`), or the key is in use (`Retry-After`)", body = http_conventions::problem::ProblemBody, content_type = "application/problem+json"),
        (status = 413, description = "Body over the size limit", body = http_conventions::problem::ProblemBody, content_type = "application/problem+json"),
        (status = 415, description = "The body is declared as something other than JSON", body = http_conventions::problem::ProblemBody, content_type = "application/problem+json"),
        (status = 422, description = "Over-refund, invalid fields, or the key was used with another body", body = http_conventions::problem::ProblemBody, content_type = "application/problem+json"),
        (status = 429, description = "Rate limited (`Retry-After`)", body = http_conventions::problem::ProblemBody, content_type = "application/problem+json"),
        (status = 503, description = "Not refunded (`bank_unavailable`, `store_unavailable`), or the outcome not recorded yet (`outcome_unknown`: retry the same key); `Retry-After`", body = http_conventions::problem::ProblemBody, content_type = "application/problem+json"),
    ),
    security(("api_key" = []))
)]
pub async fn create_refund(
    State(app): State<Arc<App>>,
    axum::Extension(Merchant(merchant)): axum::Extension<Merchant>,
    request_id: Option<axum::Extension<RequestId>>,
    Path(id): Path<String>,
    IdempotencyKey(key): IdempotencyKey,
    OptionalJsonBody(request): OptionalJsonBody<CreateRefund>,
) -> Result<Answer, PaymentError> {
    tracing::Span::current().record("payment_id", id.as_str());
    app.gateway.refund(&merchant, &id, &key, request.amount, &request_id_of(&request_id)).await
}

/// `POST /v1/payments/{id}/capture` body.
#[derive(Debug, Default, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CapturePayment {
    /// Minor units, at most `amount_capturable`; omitted: all of it. The rest of the hold is
    /// released.
    #[serde(default)]
    #[schema(minimum = 1, maximum = 9_007_199_254_740_991_i64)]
    amount: Option<i64>,
}

/// Capture an authorization (`"capture": false`), once: all of it or part, the rest released.
#[utoipa::path(
    post, path = "/v1/payments/{id}/capture", tag = "payments",
    request_body(content = Option<CapturePayment>, description = "Optional; no amount captures all"),
    params(
        ("id" = String, Path, description = "pay_<uuid>"),
        ("Idempotency-Key" = String, Header, min_length = 1, max_length = 255, pattern = r"^[!#-~][!-~]{0,254}$", description = "1 to 255 visible ASCII characters (a quoted structured-field string names the same key); the same key never acts twice"),
    ),
    responses(
        (status = 200, description = "Captured: `succeeded`, with `amount_captured` (or a replay, with `Idempotent-Replayed: true`)", body = PublicPayment),
        (status = 202, description = "Processing: the bank's answer is unknown; the reconciler settles it, and the same key then replays the outcome", body = PublicPayment),
        (status = 400, description = "Malformed request, a missing or invalid key, or two Authorization headers", body = http_conventions::problem::ProblemBody, content_type = "application/problem+json"),
        (status = 401, description = "No valid API key", body = http_conventions::problem::ProblemBody, content_type = "application/problem+json"),
        (status = 404, description = "No such payment", body = http_conventions::problem::ProblemBody, content_type = "application/problem+json"),
        (status = 408, description = "The body did not arrive in time", body = http_conventions::problem::ProblemBody, content_type = "application/problem+json"),
        (status = 409, description = "Not `requires_capture` (captured, canceled, expired, declined, or a capture or cancel in progress): `invalid_state`; or the key is in use (`Retry-After`)", body = http_conventions::problem::ProblemBody, content_type = "application/problem+json"),
        (status = 413, description = "Body over the size limit", body = http_conventions::problem::ProblemBody, content_type = "application/problem+json"),
        (status = 415, description = "The body is declared as something other than JSON", body = http_conventions::problem::ProblemBody, content_type = "application/problem+json"),
        (status = 422, description = "An amount above `amount_capturable` or below 1, invalid fields, or the key was used with another body", body = http_conventions::problem::ProblemBody, content_type = "application/problem+json"),
        (status = 429, description = "Rate limited (`Retry-After`)", body = http_conventions::problem::ProblemBody, content_type = "application/problem+json"),
        (status = 503, description = "Not captured (`bank_unavailable`, `circuit_open`, `store_unavailable`), or the outcome not recorded yet (`outcome_unknown`: retry the same key); `Retry-After`", body = http_conventions::problem::ProblemBody, content_type = "application/problem+json"),
    ),
    security(("api_key" = []))
)]
pub async fn capture_payment(
    State(app): State<Arc<App>>,
    axum::Extension(Merchant(merchant)): axum::Extension<Merchant>,
    request_id: Option<axum::Extension<RequestId>>,
    Path(id): Path<String>,
    IdempotencyKey(key): IdempotencyKey,
    OptionalJsonBody(request): OptionalJsonBody<CapturePayment>,
) -> Result<Answer, PaymentError> {
    tracing::Span::current().record("payment_id", id.as_str());
    app.gateway.capture(&merchant, &id, &key, request.amount, &request_id_of(&request_id)).await
}

/// `POST /v1/payments/{id}/cancel` body: no fields.
#[derive(Debug, Default, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CancelPayment {}

/// Cancel an authorization, once: the hold is released (`canceled`, `cancellation_reason: requested`).
#[utoipa::path(
    post, path = "/v1/payments/{id}/cancel", tag = "payments",
    request_body(content = Option<CancelPayment>, description = "Optional and empty"),
    params(
        ("id" = String, Path, description = "pay_<uuid>"),
        ("Idempotency-Key" = String, Header, min_length = 1, max_length = 255, pattern = r"^[!#-~][!-~]{0,254}$", description = "1 to 255 visible ASCII characters (a quoted structured-field string names the same key); the same key never acts twice"),
    ),
    responses(
        (status = 200, description = "Canceled (or a replay, with `Idempotent-Replayed: true`)", body = PublicPayment),
        (status = 202, description = "Processing: the bank's answer is unknown; the reconciler settles it, and the same key then replays the outcome", body = PublicPayment),
        (status = 400, description = "Malformed request, a missing or invalid key, or two Authorization headers", body = http_conventions::problem::ProblemBody, content_type = "application/problem+json"),
        (status = 401, description = "No valid API key", body = http_conventions::problem::ProblemBody, content_type = "application/problem+json"),
        (status = 404, description = "No such payment", body = http_conventions::problem::ProblemBody, content_type = "application/problem+json"),
        (status = 408, description = "The body did not arrive in time", body = http_conventions::problem::ProblemBody, content_type = "application/problem+json"),
        (status = 409, description = "Not `requires_capture` (captured, canceled, declined, or a capture or cancel in progress): `invalid_state`; or the key is in use (`Retry-After`)", body = http_conventions::problem::ProblemBody, content_type = "application/problem+json"),
        (status = 413, description = "Body over the size limit", body = http_conventions::problem::ProblemBody, content_type = "application/problem+json"),
        (status = 415, description = "The body is declared as something other than JSON", body = http_conventions::problem::ProblemBody, content_type = "application/problem+json"),
        (status = 422, description = "A field was sent, or the key was used with another request", body = http_conventions::problem::ProblemBody, content_type = "application/problem+json"),
        (status = 429, description = "Rate limited (`Retry-After`)", body = http_conventions::problem::ProblemBody, content_type = "application/problem+json"),
        (status = 503, description = "Not canceled (`bank_unavailable`, `circuit_open`, `store_unavailable`), or the outcome not recorded yet (`outcome_unknown`: retry the same key); `Retry-After`", body = http_conventions::problem::ProblemBody, content_type = "application/problem+json"),
    ),
    security(("api_key" = []))
)]
pub async fn cancel_payment(
    State(app): State<Arc<App>>,
    axum::Extension(Merchant(merchant)): axum::Extension<Merchant>,
    request_id: Option<axum::Extension<RequestId>>,
    Path(id): Path<String>,
    IdempotencyKey(key): IdempotencyKey,
    OptionalJsonBody(CancelPayment {}): OptionalJsonBody<CancelPayment>,
) -> Result<Answer, PaymentError> {
    tracing::Span::current().record("payment_id", id.as_str());
    app.gateway.cancel(&merchant, &id, &key, &request_id_of(&request_id)).await
}
