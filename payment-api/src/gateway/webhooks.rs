//! Events and webhooks as a merchant reaches them: the event log (`GET /v1/events`), webhook
//! endpoints, and the deliveries of an event (listed, and started again on request).

use chrono::Utc;
use http_conventions::problem::FieldError;
use serde::{Deserialize, Serialize};
use tracing::info;
use uuid::Uuid;

use super::{Answer, Gateway};
use crate::error::PaymentError;
use crate::model::{EventType, StoredEvent};
use crate::store::outbox::{EventFilter, EventPage, LogEntry, Saved};
use crate::webhook::{Delivery, Endpoint, address, new_secret};

/// The most live endpoints a merchant may have.
pub const MAX_ENDPOINTS: usize = 16;

/// `POST /v1/webhook_endpoints` body.
#[derive(Debug, Clone, Deserialize, Serialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateEndpoint {
    /// Where events are POSTed: any http(s) URL (with `WEBHOOK_ALLOW_PRIVATE=false`, no loopback
    /// or private address).
    #[schema(max_length = 2048, example = "https://example.com/webhooks")]
    pub url: String,
    /// Event types to send (`payment.succeeded`, …), or `["*"]` for all.
    #[schema(min_items = 1, max_items = 16)]
    pub enabled_events: Vec<String>,
}

impl CreateEndpoint {
    /// The event names, checked, without repeats; or what is wrong with them.
    fn validate(&self, allow_private: bool) -> Result<Vec<String>, Vec<FieldError>> {
        let mut errors = Vec::new();
        if let Err(reason) = address::check(&self.url, allow_private) {
            errors.push(FieldError::new("url", reason));
        }
        let mut names: Vec<String> = Vec::new();
        if self.enabled_events.is_empty() || self.enabled_events.len() > 16 {
            errors.push(FieldError::new("enabled_events", "must name 1 to 16 event types, or be [\"*\"]"));
        }
        for name in &self.enabled_events {
            if name != "*" && EventType::parse(name).is_none() {
                let known: Vec<&str> = EventType::ALL.iter().map(|t| t.as_str()).collect();
                let shown: String = name.chars().take(64).collect();
                errors.push(FieldError::new(
                    "enabled_events",
                    format!("`{shown}` is not an event type; use `*` or one of {}", known.join(", ")),
                ));
            } else if !names.contains(name) {
                names.push(name.clone());
            }
        }
        if errors.is_empty() { Ok(names) } else { Err(errors) }
    }
}

impl Gateway {
    /// An event of this merchant's.
    pub async fn event(&self, merchant: &str, id: &str) -> Result<StoredEvent, PaymentError> {
        match self.store.event(id).await? {
            Some(event) if event.merchant_id == merchant => Ok(event),
            _ => Err(PaymentError::NotFound(id.to_owned())),
        }
    }

    /// A page of this merchant's events, newest first.
    pub async fn events(&self, merchant: &str, filter: &EventFilter) -> Result<EventPage, PaymentError> {
        Ok(self.store.events(merchant, filter).await?)
    }

    /// The log's events after `cursor`, oldest first (for the live stream).
    pub async fn log_after(&self, cursor: &str, limit: usize) -> Result<Vec<LogEntry>, PaymentError> {
        Ok(self.store.log_after(Some(cursor), limit).await?)
    }

    pub async fn log_end(&self) -> Result<String, PaymentError> {
        Ok(self.store.log_end().await?)
    }

    /// Forgets events older than the retention period.
    pub async fn prune_events(&self) -> Result<usize, PaymentError> {
        let before = Utc::now() - chrono::Duration::from_std(self.settings.event_retention).unwrap_or_default();
        Ok(self.store.prune_events(before.timestamp_millis()).await?)
    }

    /// `POST /v1/webhook_endpoints`: creates the endpoint once per key. The answer carries the
    /// signing secret; a retry with the same key and body gets the same answer.
    pub async fn create_endpoint(
        &self,
        merchant: &str,
        idempotency_key: &str,
        request: &CreateEndpoint,
    ) -> Result<Answer, PaymentError> {
        let fingerprint = self.fingerprint(&("webhook_endpoint", merchant, request));
        let id = format!(
            "we_{}",
            Uuid::new_v5(&Uuid::NAMESPACE_OID, format!("{merchant}\u{1f}{idempotency_key}").as_bytes()).simple()
        );
        let existing = self.store.endpoints(merchant).await?;
        if let Some(found) = existing.iter().find(|e| e.id == id) {
            return replay_of(found, &fingerprint);
        }
        let enabled_events = request.validate(self.settings.allow_private).map_err(PaymentError::Invalid)?;
        if existing.iter().filter(|e| e.deleted_at.is_none()).count() >= MAX_ENDPOINTS {
            let message = format!("a merchant may have at most {MAX_ENDPOINTS} webhook endpoints; delete one first");
            return Err(PaymentError::Invalid(vec![FieldError::new("url", message)]));
        }
        let endpoint = Endpoint {
            id,
            merchant_id: merchant.to_owned(),
            url: request.url.clone(),
            enabled_events,
            secret: new_secret(),
            created_at: Utc::now(),
            fingerprint,
            deleted_at: None,
        };
        let stored = self.store.create_endpoint(&endpoint).await?;
        if stored.secret != endpoint.secret {
            // A concurrent request with the same key created it first.
            return replay_of(&stored, &endpoint.fingerprint);
        }
        info!(endpoint_id = %stored.id, url = %stored.url, "webhook endpoint created");
        Ok(Answer { status: 201, body: stored.public_json(true), replayed: false })
    }

    /// This merchant's live endpoints (no secrets).
    pub async fn endpoints(&self, merchant: &str) -> Result<Vec<Endpoint>, PaymentError> {
        let mut endpoints = self.store.endpoints(merchant).await?;
        endpoints.retain(|e| e.deleted_at.is_none());
        endpoints.sort_by(|a, b| b.created_at.cmp(&a.created_at).then_with(|| b.id.cmp(&a.id)));
        Ok(endpoints)
    }

    /// Deletes an endpoint: nothing more is sent to it (deliveries waiting for it end).
    pub async fn delete_endpoint(&self, merchant: &str, id: &str) -> Result<Endpoint, PaymentError> {
        let endpoints = self.store.endpoints(merchant).await?;
        let Some(endpoint) = endpoints.into_iter().find(|e| e.id == id && e.deleted_at.is_none()) else {
            return Err(PaymentError::NotFound(id.to_owned()));
        };
        let deleted = Endpoint { deleted_at: Some(Utc::now()), ..endpoint };
        self.store.save_endpoint(&deleted).await?;
        info!(endpoint_id = %deleted.id, "webhook endpoint deleted");
        Ok(deleted)
    }

    /// The deliveries of this merchant's event.
    pub async fn deliveries(&self, merchant: &str, event_id: &str) -> Result<Vec<Delivery>, PaymentError> {
        let event = self.event(merchant, event_id).await?;
        Ok(self.store.deliveries(&event.id).await?)
    }

    /// `POST /v1/events/{id}/redeliver`: a new round of attempts, at once, for every delivery of
    /// the event, and a first one to each endpoint that wants the event but has none. Once per
    /// key: a retry changes nothing and says so (`replayed`).
    pub async fn redeliver(
        &self,
        merchant: &str,
        event_id: &str,
        idempotency_key: &str,
    ) -> Result<(Vec<Delivery>, bool), PaymentError> {
        let event = self.event(merchant, event_id).await?;
        let mut deliveries = self.store.deliveries(&event.id).await?;
        let mut started = false;
        let endpoints = self.store.endpoints(merchant).await?;
        let missing: Vec<Delivery> = endpoints
            .iter()
            .filter(|e| e.wants_event(&event) && !deliveries.iter().any(|d| d.endpoint_id == e.id))
            .map(|e| Delivery {
                redelivered_by: vec![idempotency_key.to_owned()],
                ..Delivery::new(&event.id, &e.id, merchant, Utc::now())
            })
            .collect();
        if !missing.is_empty() {
            self.store.fan_out(&event, None, &missing).await?;
            started = true;
        }
        for delivery in &mut deliveries {
            for _ in 0..16 {
                let Some(next) = delivery.redeliver(idempotency_key, Utc::now()) else { break };
                match self.store.save_delivery(&next).await? {
                    Saved::Written => {
                        *delivery = next;
                        started = true;
                        break;
                    }
                    Saved::Conflict(Some(current)) => *delivery = *current,
                    Saved::Conflict(None) => break,
                }
            }
        }
        if started {
            info!(event_id = %event.id, "redelivery started");
        }
        let replayed = !started && deliveries.iter().any(|d| d.redelivered_by.iter().any(|k| k == idempotency_key));
        Ok((self.store.deliveries(&event.id).await?, replayed))
    }
}

/// The answer to a retry of an endpoint's creation: the same, unless the key came with another
/// body.
fn replay_of(endpoint: &Endpoint, fingerprint: &str) -> Result<Answer, PaymentError> {
    if endpoint.fingerprint != fingerprint {
        return Err(PaymentError::KeyReused);
    }
    Ok(Answer { status: 201, body: endpoint.public_json(true), replayed: true })
}
