//! The HTTP surface of the gateway.

use std::collections::HashMap;
use std::sync::Arc;

use axum::Router;
use axum::extract::{DefaultBodyLimit, Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use http_conventions::extract::{JsonBody, OptionalJsonBody, Path, Query};
use http_conventions::idempotency::IdempotencyKey;
use http_conventions::problem::Problem;
use http_conventions::request_id::{self, RequestId};
use serde::{Deserialize, Serialize};

use crate::App;
use crate::auth::Merchant;
use crate::gateway::{Answer, store_problem};
use crate::model::{CreatePayment, PaymentStatus, PublicPayment};
use crate::store::PaymentFilter;

pub const REPLAYED_HEADER: &str = "idempotent-replayed";
const DEFAULT_LIMIT: usize = 20;
const MAX_LIMIT: usize = 100;

pub fn router(app: Arc<App>) -> Router {
    let merchant_routes = Router::new()
        .route("/v1/payments", post(create_payment).get(list_payments))
        .route("/v1/payments/{id}", get(get_payment))
        .route("/v1/payments/{id}/refunds", post(create_refund))
        .route_layer(middleware::from_fn_with_state(Arc::clone(&app), authenticate));
    Router::new()
        .merge(merchant_routes)
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .fallback(|| async { Problem::not_found("no such route") })
        .method_not_allowed_fallback(|| async {
            Problem::new(StatusCode::METHOD_NOT_ALLOWED, "method_not_allowed", "this route does not accept that method")
        })
        .layer(DefaultBodyLimit::max(app.max_body_bytes))
        .layer(middleware::from_fn(request_id::assign))
        .with_state(app)
}

/// Resolves the merchant from `Authorization: Bearer <secret>`, or answers 401.
async fn authenticate(State(app): State<Arc<App>>, mut request: Request, next: Next) -> Response {
    let header = request.headers().get(header::AUTHORIZATION).and_then(|v| v.to_str().ok());
    match app.keys.authenticate(header) {
        Some(merchant) => {
            request.extensions_mut().insert(merchant);
            next.run(request).await
        }
        None => {
            let mut response = Problem::new(
                StatusCode::UNAUTHORIZED,
                "unauthorized",
                "send a valid API key as `Authorization: Bearer <secret>`",
            )
            .into_response();
            response.headers_mut().insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
            response
        }
    }
}

fn json_response(answer: Answer) -> Response {
    let status = StatusCode::from_u16(answer.status).unwrap_or(StatusCode::OK);
    let mut response = (status, answer.body).into_response();
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    if answer.replayed {
        headers.insert(REPLAYED_HEADER, HeaderValue::from_static("true"));
    }
    response
}

fn request_id_of(request_id: &Option<axum::Extension<RequestId>>) -> String {
    request_id.as_ref().map(|id| id.0.0.clone()).unwrap_or_default()
}

async fn create_payment(
    State(app): State<Arc<App>>,
    axum::Extension(Merchant(merchant)): axum::Extension<Merchant>,
    request_id: Option<axum::Extension<RequestId>>,
    IdempotencyKey(key): IdempotencyKey,
    JsonBody(request): JsonBody<CreatePayment>,
) -> Result<Response, Problem> {
    let answer = app.gateway.create_payment(&merchant, &key, request, &request_id_of(&request_id)).await?;
    Ok(json_response(answer))
}

async fn get_payment(
    State(app): State<Arc<App>>,
    axum::Extension(Merchant(merchant)): axum::Extension<Merchant>,
    Path(id): Path<String>,
) -> Result<Response, Problem> {
    let payment = app.gateway.payment(&merchant, &id).await?;
    Ok(json_response(Answer { status: 200, body: payment.public_json(), replayed: false }))
}

#[derive(Serialize)]
struct PaymentList<'a> {
    object: &'static str,
    data: Vec<PublicPayment<'a>>,
    has_more: bool,
}

async fn list_payments(
    State(app): State<Arc<App>>,
    axum::Extension(Merchant(merchant)): axum::Extension<Merchant>,
    Query(params): Query<HashMap<String, String>>,
) -> Result<Response, Problem> {
    let mut filter = PaymentFilter { limit: DEFAULT_LIMIT, ..PaymentFilter::default() };
    for (name, value) in params {
        match name.as_str() {
            "order_id" => filter.order_id = Some(value),
            "starting_after" => filter.starting_after = Some(value),
            "status" => {
                filter.status = Some(PaymentStatus::parse(&value).ok_or_else(|| {
                    Problem::invalid_request(format!(
                        "status must be one of processing, succeeded, declined, failed, refunded, partially_refunded; not `{value}`"
                    ))
                })?);
            }
            "limit" => {
                filter.limit = value.parse().ok().filter(|n| (1..=MAX_LIMIT).contains(n)).ok_or_else(|| {
                    Problem::invalid_request(format!("limit must be a whole number from 1 to {MAX_LIMIT}"))
                })?;
            }
            other => return Err(Problem::invalid_request(format!("unknown query parameter `{other}`"))),
        }
    }
    let page = app.gateway.store.list_payments(&merchant, &filter).await.map_err(|e| store_problem(&e))?;
    let list = PaymentList {
        object: "list",
        data: page.payments.iter().map(|p| p.public()).collect(),
        has_more: page.has_more,
    };
    Ok(json_response(Answer { status: 200, body: serde_json::to_string(&list).unwrap_or_default(), replayed: false }))
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct CreateRefund {
    #[serde(default)]
    amount: Option<i64>,
}

async fn create_refund(
    State(app): State<Arc<App>>,
    axum::Extension(Merchant(merchant)): axum::Extension<Merchant>,
    request_id: Option<axum::Extension<RequestId>>,
    Path(id): Path<String>,
    IdempotencyKey(key): IdempotencyKey,
    OptionalJsonBody(request): OptionalJsonBody<CreateRefund>,
) -> Result<Response, Problem> {
    let answer = app.gateway.refund(&merchant, &id, &key, request.amount, &request_id_of(&request_id)).await?;
    Ok(json_response(answer))
}

async fn healthz() -> Response {
    json_response(Answer { status: 200, body: r#"{"status":"ok"}"#.into(), replayed: false })
}

/// Ready when the store answers: without it the gateway refuses every payment.
async fn readyz(State(app): State<Arc<App>>) -> Result<Response, Problem> {
    app.gateway.store.ping().await.map_err(|error| {
        Problem::new(StatusCode::SERVICE_UNAVAILABLE, "store_unavailable", format!("not ready: {error}"))
            .with_retry_after(1)
    })?;
    let body = format!(r#"{{"status":"ready","store":"{}"}}"#, app.gateway.store.kind());
    Ok(json_response(Answer { status: 200, body, replayed: false }))
}
