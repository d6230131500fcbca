//! `/v1/events…` and `/v1/webhook_endpoints…`: the event log and webhook subscriptions, for the
//! merchant the API key names.

use std::collections::HashMap;
use std::sync::Arc;

use axum::extract::State;
use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};
use http_conventions::extract::{JsonBody, Path, Query};
use http_conventions::idempotency::{IdempotencyKey, REPLAYED_HEADER};
use http_conventions::problem::Problem;
use serde::Serialize;
use serde_json::value::RawValue;

use super::problem::json;
use crate::app::App;
use crate::auth::Merchant;
use crate::error::PaymentError;
use crate::gateway::Answer;
use crate::gateway::webhooks::CreateEndpoint;
use crate::model::EventType;
use crate::store::outbox::EventFilter;
use crate::webhook::PublicDelivery;

/// An event: what changed, and the payment or refund as it was right after.
#[derive(Debug, Serialize, utoipa::ToSchema)]
#[schema(as = Event)]
pub struct EventSchema {
    /// `evt_…`; also the `webhook-id` of every delivery of it.
    id: String,
    /// Always `event`.
    object: String,
    #[serde(rename = "type")]
    kind: EventType,
    created_at: chrono::DateTime<chrono::Utc>,
    /// `{"object": <the payment or refund>}`
    #[schema(value_type = Object)]
    data: serde_json::Value,
}

/// A page of events, newest first.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct EventList {
    /// Always `list`.
    object: &'static str,
    #[schema(value_type = Vec<EventSchema>)]
    data: Vec<Box<RawValue>>,
    /// More pages follow: pass the last id as `starting_after`.
    has_more: bool,
}

/// A webhook endpoint (the `secret` only in the answer that created it).
#[derive(Debug, Serialize, utoipa::ToSchema)]
#[schema(as = WebhookEndpoint)]
pub struct EndpointSchema {
    /// `we_…`
    id: String,
    /// Always `webhook_endpoint`.
    object: String,
    url: String,
    enabled_events: Vec<String>,
    /// `whsec_<base64>`: verify deliveries with it. Shown once.
    secret: Option<String>,
    created_at: chrono::DateTime<chrono::Utc>,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct EndpointList {
    /// Always `list`.
    object: &'static str,
    #[schema(value_type = Vec<EndpointSchema>)]
    data: Vec<Box<RawValue>>,
    has_more: bool,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct DeliveryList<'a> {
    /// Always `list`.
    object: &'static str,
    data: Vec<PublicDelivery<'a>>,
    has_more: bool,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct DeletedEndpoint {
    id: String,
    /// Always `webhook_endpoint`.
    object: &'static str,
    deleted: bool,
}

fn raw(json: String) -> Box<RawValue> {
    RawValue::from_string(json).unwrap_or_else(|_| RawValue::from_string("null".to_owned()).unwrap_or_default())
}

/// Your events, newest first.
#[utoipa::path(
    get, path = "/v1/events", tag = "events",
    params(
        ("type" = Option<EventType>, Query, description = "Only events of this type"),
        ("limit" = Option<u32>, Query, minimum = 1, maximum = 100, description = "1 to 100, default 20"),
        ("starting_after" = Option<String>, Query, pattern = r"^evt_[0-9a-f]{32}$", description = "An event id: the page after it (older events)"),
    ),
    responses(
        (status = 200, description = "A page of events", body = EventList),
        (status = 400, description = "An unknown parameter, a bad value, or two Authorization headers", body = http_conventions::problem::ProblemBody, content_type = "application/problem+json"),
        (status = 401, description = "No valid API key", body = http_conventions::problem::ProblemBody, content_type = "application/problem+json"),
        (status = 429, description = "Rate limited (`Retry-After`)", body = http_conventions::problem::ProblemBody, content_type = "application/problem+json"),
        (status = 503, description = "The store is unreachable (`Retry-After`)", body = http_conventions::problem::ProblemBody, content_type = "application/problem+json"),
    ),
    security(("api_key" = []))
)]
pub async fn list_events(
    State(app): State<Arc<App>>,
    axum::Extension(Merchant(merchant)): axum::Extension<Merchant>,
    Query(params): Query<HashMap<String, String>>,
) -> Result<Response, Problem> {
    let mut filter = EventFilter { limit: super::DEFAULT_LIMIT, ..EventFilter::default() };
    for (name, value) in params {
        match name.as_str() {
            "starting_after" => {
                if !crate::store::outbox::is_event_id(&value) {
                    let shown: String = value.chars().take(64).collect();
                    return Err(Problem::invalid_request(format!(
                        "starting_after must be an event id (evt_…), not `{shown}`"
                    )));
                }
                filter.starting_after = Some(value);
            }
            "type" => {
                filter.kind = Some(EventType::parse(&value).ok_or_else(|| {
                    let known: Vec<&str> = EventType::ALL.iter().map(|t| t.as_str()).collect();
                    let shown: String = value.chars().take(64).collect();
                    Problem::invalid_request(format!("type must be one of {}; not `{shown}`", known.join(", ")))
                })?);
            }
            "limit" => filter.limit = super::page_limit(&value)?,
            other => return Err(Problem::invalid_request(format!("unknown query parameter `{other}`"))),
        }
    }
    let page = app.gateway.events(&merchant, &filter).await?;
    let list = EventList {
        object: "list",
        data: page.events.into_iter().map(|e| raw(e.body)).collect(),
        has_more: page.has_more,
    };
    Ok(json(200, &list))
}

/// One of your events.
#[utoipa::path(
    get, path = "/v1/events/{id}", tag = "events",
    params(("id" = String, Path, description = "evt_…")),
    responses(
        (status = 200, description = "The event", body = EventSchema),
        (status = 400, description = "Malformed request or two Authorization headers", body = http_conventions::problem::ProblemBody, content_type = "application/problem+json"),
        (status = 401, description = "No valid API key", body = http_conventions::problem::ProblemBody, content_type = "application/problem+json"),
        (status = 404, description = "No such event (another merchant's, or past its retention)", body = http_conventions::problem::ProblemBody, content_type = "application/problem+json"),
        (status = 429, description = "Rate limited (`Retry-After`)", body = http_conventions::problem::ProblemBody, content_type = "application/problem+json"),
        (status = 503, description = "The store is unreachable (`Retry-After`)", body = http_conventions::problem::ProblemBody, content_type = "application/problem+json"),
    ),
    security(("api_key" = []))
)]
pub async fn get_event(
    State(app): State<Arc<App>>,
    axum::Extension(Merchant(merchant)): axum::Extension<Merchant>,
    Path(id): Path<String>,
) -> Result<Response, Problem> {
    let event = app.gateway.event(&merchant, &id).await?;
    Ok(Answer { status: 200, body: event.body, replayed: false }.into_response())
}

/// The deliveries of one of your events: one per endpoint, with every attempt.
#[utoipa::path(
    get, path = "/v1/events/{id}/deliveries", tag = "events",
    params(("id" = String, Path, description = "evt_…")),
    responses(
        (status = 200, description = "The event's deliveries", body = DeliveryList),
        (status = 400, description = "Malformed request or two Authorization headers", body = http_conventions::problem::ProblemBody, content_type = "application/problem+json"),
        (status = 401, description = "No valid API key", body = http_conventions::problem::ProblemBody, content_type = "application/problem+json"),
        (status = 404, description = "No such event", body = http_conventions::problem::ProblemBody, content_type = "application/problem+json"),
        (status = 429, description = "Rate limited (`Retry-After`)", body = http_conventions::problem::ProblemBody, content_type = "application/problem+json"),
        (status = 503, description = "The store is unreachable (`Retry-After`)", body = http_conventions::problem::ProblemBody, content_type = "application/problem+json"),
    ),
    security(("api_key" = []))
)]
pub async fn list_deliveries(
    State(app): State<Arc<App>>,
    axum::Extension(Merchant(merchant)): axum::Extension<Merchant>,
    Path(id): Path<String>,
) -> Result<Response, Problem> {
    let deliveries = app.gateway.deliveries(&merchant, &id).await?;
    let list = DeliveryList { object: "list", data: deliveries.iter().map(|d| d.public()).collect(), has_more: false };
    Ok(json(200, &list))
}

/// Send an event again, now, to every endpoint that wants it (a new round of retries), once per
/// `Idempotency-Key`.
#[utoipa::path(
    post, path = "/v1/events/{id}/redeliver", tag = "events",
    params(
        ("id" = String, Path, description = "evt_…"),
        ("Idempotency-Key" = String, Header, min_length = 1, max_length = 255, pattern = r"^[!#-~][!-~]{0,254}$", description = "1 to 255 visible ASCII characters; a retry with the same key starts nothing new"),
    ),
    responses(
        (status = 202, description = "Redelivery started (or, with `Idempotent-Replayed: true`, started before under this key); the deliveries", body = DeliveryList),
        (status = 400, description = "Malformed request, a missing or invalid key, or two Authorization headers", body = http_conventions::problem::ProblemBody, content_type = "application/problem+json"),
        (status = 401, description = "No valid API key", body = http_conventions::problem::ProblemBody, content_type = "application/problem+json"),
        (status = 404, description = "No such event", body = http_conventions::problem::ProblemBody, content_type = "application/problem+json"),
        (status = 429, description = "Rate limited (`Retry-After`)", body = http_conventions::problem::ProblemBody, content_type = "application/problem+json"),
        (status = 503, description = "The store is unreachable (`Retry-After`)", body = http_conventions::problem::ProblemBody, content_type = "application/problem+json"),
    ),
    security(("api_key" = []))
)]
pub async fn redeliver(
    State(app): State<Arc<App>>,
    axum::Extension(Merchant(merchant)): axum::Extension<Merchant>,
    Path(id): Path<String>,
    IdempotencyKey(key): IdempotencyKey,
) -> Result<Response, Problem> {
    let (deliveries, replayed) = app.gateway.redeliver(&merchant, &id, &key).await?;
    let list = DeliveryList { object: "list", data: deliveries.iter().map(|d| d.public()).collect(), has_more: false };
    let mut response = json(202, &list);
    if replayed {
        response.headers_mut().insert(REPLAYED_HEADER, HeaderValue::from_static("true"));
    }
    Ok(response)
}

/// Subscribe a URL to events, once per `Idempotency-Key`. The answer holds the signing secret;
/// it is not shown again.
#[utoipa::path(
    post, path = "/v1/webhook_endpoints", tag = "webhooks",
    request_body = CreateEndpoint,
    params(("Idempotency-Key" = String, Header, min_length = 1, max_length = 255, pattern = r"^[!#-~][!-~]{0,254}$", description = "1 to 255 visible ASCII characters; the same key creates one endpoint")),
    responses(
        (status = 201, description = "Created (or a replay, with `Idempotent-Replayed: true`), with its `secret`", body = EndpointSchema),
        (status = 400, description = "Malformed request, a missing or invalid key, or two Authorization headers", body = http_conventions::problem::ProblemBody, content_type = "application/problem+json"),
        (status = 401, description = "No valid API key", body = http_conventions::problem::ProblemBody, content_type = "application/problem+json"),
        (status = 408, description = "The body did not arrive in time", body = http_conventions::problem::ProblemBody, content_type = "application/problem+json"),
        (status = 413, description = "Body over the size limit", body = http_conventions::problem::ProblemBody, content_type = "application/problem+json"),
        (status = 415, description = "The body is declared as something other than JSON", body = http_conventions::problem::ProblemBody, content_type = "application/problem+json"),
        (status = 422, description = "A URL that cannot be used, unknown event types, too many endpoints, or the key was used with another body", body = http_conventions::problem::ProblemBody, content_type = "application/problem+json"),
        (status = 429, description = "Rate limited (`Retry-After`)", body = http_conventions::problem::ProblemBody, content_type = "application/problem+json"),
        (status = 503, description = "The store is unreachable (`Retry-After`)", body = http_conventions::problem::ProblemBody, content_type = "application/problem+json"),
    ),
    security(("api_key" = []))
)]
pub async fn create_endpoint(
    State(app): State<Arc<App>>,
    axum::Extension(Merchant(merchant)): axum::Extension<Merchant>,
    IdempotencyKey(key): IdempotencyKey,
    JsonBody(request): JsonBody<CreateEndpoint>,
) -> Result<Response, PaymentError> {
    let mut response = app.gateway.create_endpoint(&merchant, &key, &request).await?.into_response();
    // It holds the signing secret.
    response.headers_mut().insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    Ok(response)
}

/// Your webhook endpoints (without secrets).
#[utoipa::path(
    get, path = "/v1/webhook_endpoints", tag = "webhooks",
    responses(
        (status = 200, description = "Your endpoints, newest first", body = EndpointList),
        (status = 400, description = "Malformed request or two Authorization headers", body = http_conventions::problem::ProblemBody, content_type = "application/problem+json"),
        (status = 401, description = "No valid API key", body = http_conventions::problem::ProblemBody, content_type = "application/problem+json"),
        (status = 429, description = "Rate limited (`Retry-After`)", body = http_conventions::problem::ProblemBody, content_type = "application/problem+json"),
        (status = 503, description = "The store is unreachable (`Retry-After`)", body = http_conventions::problem::ProblemBody, content_type = "application/problem+json"),
    ),
    security(("api_key" = []))
)]
pub async fn list_endpoints(
    State(app): State<Arc<App>>,
    axum::Extension(Merchant(merchant)): axum::Extension<Merchant>,
) -> Result<Response, Problem> {
    let endpoints = app.gateway.endpoints(&merchant).await?;
    let list = EndpointList {
        object: "list",
        data: endpoints.iter().map(|e| raw(e.public_json(false))).collect(),
        has_more: false,
    };
    Ok(json(200, &list))
}

/// Delete a webhook endpoint: nothing more is sent to it.
#[utoipa::path(
    delete, path = "/v1/webhook_endpoints/{id}", tag = "webhooks",
    params(("id" = String, Path, description = "we_…")),
    responses(
        (status = 200, description = "Deleted", body = DeletedEndpoint),
        (status = 400, description = "Malformed request or two Authorization headers", body = http_conventions::problem::ProblemBody, content_type = "application/problem+json"),
        (status = 401, description = "No valid API key", body = http_conventions::problem::ProblemBody, content_type = "application/problem+json"),
        (status = 404, description = "No such endpoint (or deleted already)", body = http_conventions::problem::ProblemBody, content_type = "application/problem+json"),
        (status = 429, description = "Rate limited (`Retry-After`)", body = http_conventions::problem::ProblemBody, content_type = "application/problem+json"),
        (status = 503, description = "The store is unreachable (`Retry-After`)", body = http_conventions::problem::ProblemBody, content_type = "application/problem+json"),
    ),
    security(("api_key" = []))
)]
pub async fn delete_endpoint(
    State(app): State<Arc<App>>,
    axum::Extension(Merchant(merchant)): axum::Extension<Merchant>,
    Path(id): Path<String>,
) -> Result<Response, Problem> {
    let deleted = app.gateway.delete_endpoint(&merchant, &id).await?;
    let body = DeletedEndpoint { id: deleted.id, object: "webhook_endpoint", deleted: true };
    Ok(json(200, &body))
}
