//! The HTTP surface of the gateway: merchant routes under `/v1` (Bearer API key, rate-limited),
//! admin routes under `/admin` (admin key), health, metrics and the API documentation.

use std::collections::HashMap;
use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::{DefaultBodyLimit, MatchedPath, Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use futures_util::StreamExt;
use http_conventions::extract::{JsonBody, OptionalJsonBody, Path, Query};
use http_conventions::idempotency::IdempotencyKey;
use http_conventions::problem::Problem;
use http_conventions::request_id::{self, RequestId};
use resilience::Mode;
use serde::{Deserialize, Serialize};
use tokio_stream::wrappers::BroadcastStream;
use tokio_stream::wrappers::errors::BroadcastStreamRecvError;
use tracing::Instrument;

use crate::App;
use crate::auth::{Merchant, authorization, bearer, secret_matches};
use crate::events::BreakerView;
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
    let admin_routes = Router::new()
        .route("/admin/breaker", get(get_breaker).put(put_breaker))
        .route("/admin/stream", get(stream))
        .route_layer(middleware::from_fn_with_state(Arc::clone(&app), authenticate_admin));
    let docs = utoipa_swagger_ui::SwaggerUi::new("/docs")
        .url("/openapi.json", crate::openapi::document(&app.gateway.settings.currencies));
    Router::new()
        .merge(merchant_routes)
        .merge(admin_routes)
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .fallback(|| async { Problem::not_found("no such route") })
        .method_not_allowed_fallback(|| async {
            Problem::new(StatusCode::METHOD_NOT_ALLOWED, "method_not_allowed", "this route does not accept that method")
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
    app.gateway.metrics.observe_request(&route, method.as_str(), status, started.elapsed());
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
        app.gateway.metrics.rate_limited.inc(format!("merchant=\"{}\"", crate::metrics::label(&merchant.0)));
        app.gateway.metrics.payment("rate_limited");
        let retry_after = decision.retry_after.as_secs_f64().ceil().max(1.0) as u64;
        Problem::new(StatusCode::TOO_MANY_REQUESTS, "rate_limited", "too many requests for this merchant; slow down")
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
    let mut response = Problem::new(StatusCode::UNAUTHORIZED, "unauthorized", detail).into_response();
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
            Problem::new(StatusCode::FORBIDDEN, "forbidden", "this route needs the admin key, not a merchant key")
                .into_response()
        }
        Some(_) => unauthorized("send the admin key as `Authorization: Bearer <ADMIN_KEY>`"),
        None => Problem::new(StatusCode::FORBIDDEN, "forbidden", "admin routes are disabled: ADMIN_KEY is not set")
            .into_response(),
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

fn json<T: Serialize>(status: u16, value: &T) -> Response {
    json_response(Answer { status, body: serde_json::to_string(value).unwrap_or_default(), replayed: false })
}

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
) -> Result<Response, Problem> {
    let answer = app.gateway.create_payment(&merchant, &key, request, &request_id_of(&request_id)).await?;
    Ok(json_response(answer))
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
    Ok(json_response(Answer { status: 200, body: payment.public_json(), replayed: false }))
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
) -> Result<Response, Problem> {
    tracing::Span::current().record("payment_id", id.as_str());
    let answer = app.gateway.refund(&merchant, &id, &key, request.amount, &request_id_of(&request_id)).await?;
    Ok(json_response(answer))
}

/// The process is alive.
#[utoipa::path(get, path = "/healthz", tag = "operations", responses((status = 200, description = "`{\"status\":\"ok\"}`", content_type = "application/json")))]
pub async fn healthz() -> Response {
    json_response(Answer { status: 200, body: r#"{"status":"ok"}"#.into(), replayed: false })
}

/// Ready to take payments: the store answers.
#[utoipa::path(
    get, path = "/readyz", tag = "operations",
    responses((status = 200, description = "Ready: `{\"status\":\"ready\",\"store\":…}`", content_type = "application/json"), (status = 503, description = "The store is unreachable", body = http_conventions::problem::ProblemBody, content_type = "application/problem+json"))
)]
pub async fn readyz(State(app): State<Arc<App>>) -> Result<Response, Problem> {
    app.gateway.store.ping().await.map_err(|error| {
        Problem::new(StatusCode::SERVICE_UNAVAILABLE, "store_unavailable", format!("not ready: {error}"))
            .with_retry_after(1)
    })?;
    let body = format!(r#"{{"status":"ready","store":"{}"}}"#, app.gateway.store.kind());
    Ok(json_response(Answer { status: 200, body, replayed: false }))
}

/// Prometheus metrics.
#[utoipa::path(get, path = "/metrics", tag = "operations", responses((status = 200, description = "Prometheus text format", content_type = "text/plain")))]
pub async fn metrics(State(app): State<Arc<App>>) -> Response {
    let gateway = &app.gateway;
    let text = gateway.metrics.render(
        &gateway.guard.stats(),
        &gateway.guard.breaker().snapshot(),
        gateway.in_flight.load(std::sync::atomic::Ordering::Relaxed),
    );
    let mut response = text.into_response();
    response
        .headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"));
    response
}

/// The circuit breaker now.
#[utoipa::path(
    get, path = "/admin/breaker", tag = "admin",
    responses(
        (status = 200, description = "The breaker's state and numbers", body = BreakerView),
        (status = 400, description = "Two Authorization headers", body = http_conventions::problem::ProblemBody, content_type = "application/problem+json"),
        (status = 401, description = "No admin key", body = http_conventions::problem::ProblemBody, content_type = "application/problem+json"),
        (status = 403, description = "A merchant key, or admin routes disabled (no ADMIN_KEY)", body = http_conventions::problem::ProblemBody, content_type = "application/problem+json"),
    ),
    security(("admin_key" = []))
)]
pub async fn get_breaker(State(app): State<Arc<App>>) -> Response {
    json(200, &BreakerView::of(app.gateway.guard.breaker()))
}

/// `PUT /admin/breaker` body.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct BreakerMode {
    state: ModeName,
}

/// Force the breaker open or closed, or let its policy decide again.
#[derive(Debug, Clone, Copy, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum ModeName {
    ForcedOpen,
    ForcedClosed,
    Auto,
}

/// Force the breaker open or closed, or return it to automatic.
#[utoipa::path(
    put, path = "/admin/breaker", tag = "admin",
    request_body = BreakerMode,
    responses(
        (status = 200, description = "The breaker after the change", body = BreakerView),
        (status = 400, description = "Malformed JSON or two Authorization headers", body = http_conventions::problem::ProblemBody, content_type = "application/problem+json"),
        (status = 401, description = "No admin key", body = http_conventions::problem::ProblemBody, content_type = "application/problem+json"),
        (status = 403, description = "A merchant key, or admin routes disabled (no ADMIN_KEY)", body = http_conventions::problem::ProblemBody, content_type = "application/problem+json"),
        (status = 408, description = "The body did not arrive in time", body = http_conventions::problem::ProblemBody, content_type = "application/problem+json"),
        (status = 413, description = "Body over the size limit", body = http_conventions::problem::ProblemBody, content_type = "application/problem+json"),
        (status = 415, description = "The body is declared as something other than JSON", body = http_conventions::problem::ProblemBody, content_type = "application/problem+json"),
        (status = 422, description = "Not one of the modes", body = http_conventions::problem::ProblemBody, content_type = "application/problem+json"),
    ),
    security(("admin_key" = []))
)]
pub async fn put_breaker(
    State(app): State<Arc<App>>,
    JsonBody(body): JsonBody<BreakerMode>,
) -> Result<Response, Problem> {
    let mode = match body.state {
        ModeName::ForcedOpen => Mode::ForcedOpen,
        ModeName::ForcedClosed => Mode::ForcedClosed,
        ModeName::Auto => Mode::Auto,
    };
    app.gateway.guard.breaker().set_mode(mode);
    tracing::warn!(state = ?body.state, "operator set the circuit breaker");
    Ok(json(200, &BreakerView::of(app.gateway.guard.breaker())))
}

/// Server-Sent Events: `stats` every second, `breaker` transitions, `payment` state changes, `log`
/// records; `lagged` tells a slow reader how many events it missed.
#[utoipa::path(
    get, path = "/admin/stream", tag = "admin",
    responses(
        (status = 200, description = "An endless text/event-stream", content_type = "text/event-stream"),
        (status = 400, description = "Two Authorization headers", body = http_conventions::problem::ProblemBody, content_type = "application/problem+json"),
        (status = 401, description = "No admin key", body = http_conventions::problem::ProblemBody, content_type = "application/problem+json"),
        (status = 403, description = "A merchant key, or admin routes disabled (no ADMIN_KEY)", body = http_conventions::problem::ProblemBody, content_type = "application/problem+json"),
    ),
    security(("admin_key" = []))
)]
pub async fn stream(State(app): State<Arc<App>>) -> Sse<impl futures_util::Stream<Item = Result<Event, Infallible>>> {
    let subscribers = Arc::clone(&app.gateway.metrics);
    subscribers.stream_subscribers.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let counted = SubscriberCount(subscribers);
    let mut shutting_down = app.shutting_down.clone();
    let ended = async move {
        let _ = shutting_down.wait_for(|stopping| *stopping).await;
    };
    let events = BroadcastStream::new(app.gateway.events.subscribe())
        .map(move |item| {
            let _ = &counted;
            Ok(match item {
                Ok(envelope) => {
                    Event::default().id(envelope.id.to_string()).event(envelope.kind).data(envelope.data.as_str())
                }
                Err(BroadcastStreamRecvError::Lagged(missed)) => {
                    Event::default().event("lagged").data(format!("{{\"missed\":{missed}}}"))
                }
            })
        })
        .take_until(Box::pin(ended));
    Sse::new(events).keep_alive(KeepAlive::new().interval(Duration::from_secs(15)))
}

/// Counts an open stream until it is dropped.
struct SubscriberCount(Arc<crate::metrics::Metrics>);

impl Drop for SubscriberCount {
    fn drop(&mut self) {
        self.0.stream_subscribers.fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
    }
}
