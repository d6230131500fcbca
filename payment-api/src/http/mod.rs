//! The gateway's HTTP edge: routes, the middleware every request passes (request id, metrics and
//! logs, authentication, rate limits), and the one place a domain error becomes problem+json
//! ([`problem`]). Handlers parse, call the gateway, and answer.
//!
//! - [`payments`]: `/v1/payments…` (merchant key);
//! - [`webhooks`]: `/v1/events…` and `/v1/webhook_endpoints…` (merchant key);
//! - [`admin`]: `/admin/…` (admin key);
//! - [`operations`]: health, readiness, metrics;
//! - [`openapi`]: the OpenAPI document and its docs page.

pub mod admin;
pub mod openapi;
pub mod operations;
pub mod payments;
pub mod problem;
pub mod webhooks;

use std::sync::Arc;

use axum::Router;
use axum::extract::{DefaultBodyLimit, MatchedPath, Request, State};
use axum::http::{HeaderValue, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post, put};
use http_conventions::problem::{ErrorCode, Problem};
use http_conventions::request_id::{self, RequestId};
use tracing::Instrument;

use crate::app::App;
use crate::auth::{authorization, bearer, secret_matches};

use self::admin::{get_banks, get_breaker, put_bank_breaker, put_breaker, stream};
use self::operations::{healthz, metrics, readyz};
use self::payments::{cancel_payment, capture_payment, create_payment, create_refund, get_payment, list_payments};
use self::webhooks::{
    create_endpoint, delete_endpoint, get_event, list_deliveries, list_endpoints, list_events, redeliver,
};

/// How many items a list returns unless asked, and at most.
const DEFAULT_LIMIT: usize = 20;
const MAX_LIMIT: usize = 100;

/// A list's `limit` parameter: a whole number from 1 to [`MAX_LIMIT`].
fn page_limit(value: &str) -> Result<usize, Problem> {
    value
        .parse()
        .ok()
        .filter(|n| (1..=MAX_LIMIT).contains(n))
        .ok_or_else(|| Problem::invalid_request(format!("limit must be a whole number from 1 to {MAX_LIMIT}")))
}

/// Every route of the gateway, with its middleware, and the API documentation.
pub fn router(app: Arc<App>) -> Router {
    let merchant_routes = Router::new()
        .route("/v1/payments", post(create_payment).get(list_payments))
        .route("/v1/payments/{id}", get(get_payment))
        .route("/v1/payments/{id}/refunds", post(create_refund))
        .route("/v1/payments/{id}/capture", post(capture_payment))
        .route("/v1/payments/{id}/cancel", post(cancel_payment))
        .route("/v1/events", get(list_events))
        .route("/v1/events/{id}", get(get_event))
        .route("/v1/events/{id}/deliveries", get(list_deliveries))
        .route("/v1/events/{id}/redeliver", post(redeliver))
        .route("/v1/webhook_endpoints", post(create_endpoint).get(list_endpoints))
        .route("/v1/webhook_endpoints/{id}", delete(delete_endpoint))
        .route_layer(middleware::from_fn_with_state(Arc::clone(&app), authenticate));
    let admin_routes = Router::new()
        .route("/admin/breaker", get(get_breaker).put(put_breaker))
        .route("/admin/stream", get(stream))
        .route("/admin/banks", get(get_banks))
        .route("/admin/banks/{name}/breaker", put(put_bank_breaker))
        .route_layer(middleware::from_fn_with_state(Arc::clone(&app), authenticate_admin));
    let docs =
        utoipa_swagger_ui::SwaggerUi::new("/docs").url("/openapi.json", openapi::document(app.gateway.currencies()));
    Router::new()
        .merge(merchant_routes)
        .merge(admin_routes)
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .fallback(|| async { Problem::not_found("no such route") })
        .method_not_allowed_fallback(|| async {
            Problem::new(ErrorCode::MethodNotAllowed, "this route does not accept that method")
        })
        .layer(middleware::from_fn_with_state(Arc::clone(&app), observe))
        .layer(DefaultBodyLimit::max(app.max_body_bytes))
        .layer(middleware::from_fn(request_id::assign))
        .with_state(Arc::clone(&app))
        .merge(docs)
}

/// Every request: a span carrying its id (and, once known, merchant, payment and key), and its
/// count and latency in the metrics.
async fn observe(State(app): State<Arc<App>>, request: Request, next: Next) -> Response {
    let route = request.extensions().get::<MatchedPath>().map_or("unmatched", |p| p.as_str()).to_owned();
    let method = request.method().clone();
    let request_id = request.extensions().get::<RequestId>().map(|id| id.0.clone()).unwrap_or_default();
    let key = request.headers().get("idempotency-key").and_then(|v| v.to_str().ok()).map(str::to_owned);
    let span = tracing::info_span!(
        "request",
        request_id = %request_id,
        method = %method,
        route = %route,
        merchant = tracing::field::Empty,
        payment_id = tracing::field::Empty,
        idempotency_key = key.as_deref().unwrap_or_default(),
    );
    let started = tokio::time::Instant::now();
    let response = next.run(request).instrument(span.clone()).await;
    let status = response.status().as_u16();
    app.metrics.observe_request(&route, method.as_str(), status, started.elapsed());
    if status >= 500 || route.starts_with("/v1") {
        span.in_scope(|| {
            tracing::info!(status, latency_ms = started.elapsed().as_secs_f64() * 1_000.0, "request finished");
        });
    }
    response
}

/// Resolves the merchant from `Authorization: Bearer <secret>` (401 otherwise) and applies the
/// merchant's rate limit (429 past it).
async fn authenticate(State(app): State<Arc<App>>, mut request: Request, next: Next) -> Response {
    let header = match authorization(request.headers()) {
        Ok(header) => header,
        Err(problem) => return problem.into_response(),
    };
    let Some(merchant) = app.keys.authenticate(header) else {
        return unauthorized("send a valid API key as `Authorization: Bearer <secret>`");
    };
    tracing::Span::current().record("merchant", merchant.0.as_str());
    let decision = app.rate_limiter.check(&merchant.0);
    let mut response = if decision.allowed {
        request.extensions_mut().insert(merchant);
        next.run(request).await
    } else {
        app.metrics.rate_limited.inc(format!("merchant=\"{}\"", crate::metrics::label(&merchant.0)));
        app.metrics.payment(ErrorCode::RateLimited.as_str());
        let retry_after = decision.retry_after.as_secs_f64().ceil().max(1.0) as u64;
        Problem::new(ErrorCode::RateLimited, "too many requests for this merchant; slow down")
            .with_retry_after(retry_after)
            .into_response()
    };
    let headers = response.headers_mut();
    headers.insert("ratelimit-limit", HeaderValue::from(decision.limit));
    headers.insert("ratelimit-remaining", HeaderValue::from(decision.remaining));
    headers.insert("ratelimit-reset", HeaderValue::from(decision.reset_s));
    response
}

fn unauthorized(detail: &str) -> Response {
    let mut response = Problem::new(ErrorCode::Unauthorized, detail).into_response();
    response.headers_mut().insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
    response
}

/// Admin routes need `Authorization: Bearer <ADMIN_KEY>` (that scheme only); a merchant key is 403.
async fn authenticate_admin(State(app): State<Arc<App>>, request: Request, next: Next) -> Response {
    let header = match authorization(request.headers()) {
        Ok(header) => header,
        Err(problem) => return problem.into_response(),
    };
    let Some(token) = header.and_then(bearer) else {
        return unauthorized("send the admin key as `Authorization: Bearer <ADMIN_KEY>`");
    };
    match &app.admin_key {
        Some(admin) if secret_matches(admin, token) => next.run(request).await,
        Some(_) if app.keys.authenticate(header).is_some() => {
            Problem::new(ErrorCode::Forbidden, "this route needs the admin key, not a merchant key").into_response()
        }
        Some(_) => unauthorized("send the admin key as `Authorization: Bearer <ADMIN_KEY>`"),
        None => Problem::new(ErrorCode::Forbidden, "admin routes are disabled: ADMIN_KEY is not set").into_response(),
    }
}
