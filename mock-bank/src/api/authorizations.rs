//! `/v1/authorizations`: hold an amount, then capture it (once, all or part) or void it; each by
//! `Idempotency-Key`, each found again by its key (status inquiry), all behind the fault injector
//! like charges.
//!
//! - `POST /v1/authorizations` (a charge's body): 201 `authorized`, or 402 `declined`.
//! - `GET /v1/authorizations?idempotency_key=K`, `GET /v1/authorizations/{id}`.
//! - `POST /v1/authorizations/{id}/capture` `{"amount": n?}`: 200 `captured`, with the charge it
//!   made (`charge_id`); 409 once it is captured, voided or expired; 422 above the amount held.
//! - `POST /v1/authorizations/{id}/void`: 200 `voided`; 409 once captured or expired.
//! - `GET /v1/captures?idempotency_key=K`, `GET /v1/voids?idempotency_key=K`: the authorization
//!   captured or voided under K, or 404 when the bank surely did neither under it.

use std::collections::HashMap;
use std::sync::Arc;

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Deserialize;
use tracing::debug;

use super::{ChargeRequest, key_query, ledger_problem, with_freshness};
use crate::Bank;
use crate::ledger::{Authorization, AuthorizationStatus, Freshness, HoldOperation};
use http_conventions::extract::{JsonBody, OptionalJsonBody, Path, Query};
use http_conventions::idempotency::IdempotencyKey;
use http_conventions::problem::Problem;

pub fn routes() -> Router<Arc<Bank>> {
    Router::new()
        .route("/v1/authorizations", post(authorize).get(find_authorization))
        .route("/v1/authorizations/{id}", get(get_authorization))
        .route("/v1/authorizations/{id}/capture", post(capture))
        .route("/v1/authorizations/{id}/void", post(void))
        .route("/v1/captures", get(find_capture))
        .route("/v1/voids", get(find_void))
}

async fn authorize(
    State(bank): State<Arc<Bank>>,
    IdempotencyKey(key): IdempotencyKey,
    JsonBody(request): JsonBody<ChargeRequest>,
) -> Result<Response, Problem> {
    let order = request.validate(&bank.config.currencies)?;
    let (authorization, freshness) = bank.ledger.authorize(&key, &order).map_err(ledger_problem)?;
    debug!(
        authorization_id = %authorization.id,
        idempotency_key = %key,
        status = %authorization.status,
        amount = authorization.amount,
        replayed = freshness == Freshness::Replayed,
        "authorization"
    );
    let status = match authorization.status {
        AuthorizationStatus::Declined => StatusCode::PAYMENT_REQUIRED,
        _ => StatusCode::CREATED,
    };
    Ok(answer(status, authorization, freshness))
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct CaptureRequest {
    #[serde(default)]
    amount: Option<i64>,
}

async fn capture(
    State(bank): State<Arc<Bank>>,
    Path(id): Path<String>,
    IdempotencyKey(key): IdempotencyKey,
    OptionalJsonBody(request): OptionalJsonBody<CaptureRequest>,
) -> Result<Response, Problem> {
    let (authorization, freshness) = bank.ledger.capture(&id, &key, request.amount).map_err(ledger_problem)?;
    debug!(authorization_id = %id, idempotency_key = %key, amount = authorization.captured_amount, "capture");
    Ok(answer(StatusCode::OK, authorization, freshness))
}

/// A void takes no fields; an empty body or `{}`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct VoidRequest {}

async fn void(
    State(bank): State<Arc<Bank>>,
    Path(id): Path<String>,
    IdempotencyKey(key): IdempotencyKey,
    OptionalJsonBody(VoidRequest {}): OptionalJsonBody<VoidRequest>,
) -> Result<Response, Problem> {
    let (authorization, freshness) = bank.ledger.void(&id, &key).map_err(ledger_problem)?;
    debug!(authorization_id = %id, idempotency_key = %key, "void");
    Ok(answer(StatusCode::OK, authorization, freshness))
}

fn answer(status: StatusCode, authorization: Arc<Authorization>, freshness: Freshness) -> Response {
    with_freshness((status, Json(authorization)).into_response(), freshness)
}

async fn get_authorization(
    State(bank): State<Arc<Bank>>,
    Path(id): Path<String>,
) -> Result<Json<Arc<Authorization>>, Problem> {
    bank.ledger.get_authorization(&id).map(Json).ok_or_else(|| Problem::not_found(format!("no authorization {id}")))
}

async fn find_authorization(
    State(bank): State<Arc<Bank>>,
    Query(params): Query<HashMap<String, String>>,
) -> Result<Json<Arc<Authorization>>, Problem> {
    find(&bank, HoldOperation::Authorize, &params)
}

async fn find_capture(
    State(bank): State<Arc<Bank>>,
    Query(params): Query<HashMap<String, String>>,
) -> Result<Json<Arc<Authorization>>, Problem> {
    find(&bank, HoldOperation::Capture, &params)
}

async fn find_void(
    State(bank): State<Arc<Bank>>,
    Query(params): Query<HashMap<String, String>>,
) -> Result<Json<Arc<Authorization>>, Problem> {
    find(&bank, HoldOperation::Void, &params)
}

fn find(
    bank: &Bank,
    operation: HoldOperation,
    params: &HashMap<String, String>,
) -> Result<Json<Arc<Authorization>>, Problem> {
    let what = match operation {
        HoldOperation::Authorize => "authorization",
        HoldOperation::Capture => "capture",
        HoldOperation::Void => "void",
    };
    let key = key_query(params, what)?;
    bank.ledger
        .find_authorization(operation, &key)
        .map(Json)
        .ok_or_else(|| Problem::not_found(format!("no {what} under key {key}")))
}
