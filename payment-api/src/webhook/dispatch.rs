//! Sends events to webhook endpoints, at least once, from any number of gateway instances.
//!
//! Two passes, each safe to run on every instance at once and to be cut off by a crash anywhere:
//! - **fan-out**: reads the store's outbox (on Redis, a consumer group over the outbox stream; an
//!   entry a dead instance took is claimed by another after `WEBHOOK_LEASE_MS`) and, for each
//!   event, creates one delivery per endpoint that wants it and acknowledges the entry, in one
//!   atomic step. Running it twice for an event creates nothing twice.
//! - **sending**: takes the deliveries that are due, each leased to this instance for
//!   `WEBHOOK_LEASE_MS` (so a delivery whose sender died is taken again once the lease runs out),
//!   sends each, and writes the attempt with the next try, over the version it took.
//!
//! Each endpoint has its own circuit breaker (from `resilience`) and at most
//! [`PER_ENDPOINT_IN_FLIGHT`] deliveries in flight, so an endpoint that is down or hangs is
//! put off without holding up the others.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::Utc;
use resilience::{Breaker, BreakerConfig};
use tokio::sync::Semaphore;
use tracing::{debug, info, warn};
use wire::EndpointHealth;

use super::{Attempt, Delivery, DeliveryStatus, Endpoint, Schedule, address};
use crate::model::StoredEvent;
use crate::store::outbox::{LogEntry, Saved};
use crate::store::{Store, StoreError};

/// The most deliveries one endpoint has in flight from one instance.
pub const PER_ENDPOINT_IN_FLIGHT: u64 = 8;
/// How many outbox entries one fan-out pass reads.
const FAN_OUT_BATCH: usize = 128;

#[derive(Debug, Clone)]
pub struct DispatchSettings {
    pub timeout: Duration,
    pub schedule: Schedule,
    pub lease: Duration,
    pub allow_private: bool,
    pub max_in_flight: usize,
    /// How long an endpoint's breaker stays open at first.
    pub breaker_open: Duration,
}

/// What one endpoint's deliveries from this instance came to, and its breaker.
#[derive(Debug)]
struct EndpointState {
    url: String,
    breaker: Breaker,
    in_flight: AtomicU64,
    delivered: AtomicU64,
    retrying: AtomicU64,
    failed: AtomicU64,
    last_result: Mutex<Option<String>>,
}

#[derive(Debug)]
pub struct Dispatcher {
    store: Store,
    client: reqwest::Client,
    settings: DispatchSettings,
    /// Names this instance in the outbox's consumer group.
    consumer: String,
    endpoints: Mutex<HashMap<String, Arc<EndpointState>>>,
    sending: Arc<Semaphore>,
    metrics: Arc<crate::metrics::Metrics>,
}

/// The breaker each endpoint gets: open after half of at least 5 recent attempts failed, for
/// `open` at first (`WEBHOOK_BREAKER_OPEN_MS`, 5 s), doubling with each failed probe up to 120
/// times that; one probe at a time.
fn endpoint_breaker(timeout: Duration, open: Duration) -> Breaker {
    let config = BreakerConfig {
        window_size: 20,
        minimum_calls: 5,
        failure_rate_threshold: 0.5,
        slow_call_rate_threshold: 1.0,
        slow_call_duration: timeout,
        open_duration: open,
        open_duration_multiplier: 2.0,
        max_open_duration: open * 120,
        half_open_probes: 1,
    };
    Breaker::new(config).unwrap_or_else(|_| Breaker::new(BreakerConfig::default()).unwrap_or_else(|e| panic!("{e}")))
}

impl Dispatcher {
    pub fn new(
        store: Store,
        settings: DispatchSettings,
        consumer: String,
        metrics: Arc<crate::metrics::Metrics>,
    ) -> anyhow::Result<Self> {
        let mut client = reqwest::Client::builder()
            .timeout(settings.timeout)
            .connect_timeout(settings.timeout.min(Duration::from_secs(5)))
            .redirect(reqwest::redirect::Policy::none())
            // A proxy would resolve names itself, past the check of private addresses.
            .no_proxy()
            .user_agent(concat!("resilient-pay-webhooks/", env!("CARGO_PKG_VERSION")))
            .pool_max_idle_per_host(PER_ENDPOINT_IN_FLIGHT as usize);
        if let Some(resolver) = address::resolver(settings.allow_private) {
            client = client.dns_resolver(resolver);
        }
        let sending = Arc::new(Semaphore::new(settings.max_in_flight));
        Ok(Self {
            store,
            client: client.build()?,
            settings,
            consumer,
            endpoints: Mutex::new(HashMap::new()),
            sending,
            metrics,
        })
    }

    pub fn settings(&self) -> &DispatchSettings {
        &self.settings
    }

    /// Fans out what the outbox holds. Returns how many events were fanned out.
    pub async fn fan_out(&self) -> Result<usize, StoreError> {
        let entries = self.store.outbox(&self.consumer, FAN_OUT_BATCH, self.settings.lease).await?;
        let mut endpoints_of: HashMap<String, Vec<Endpoint>> = HashMap::new();
        let mut done = 0;
        for entry in entries {
            let merchant = &entry.event.merchant_id;
            if !endpoints_of.contains_key(merchant) {
                let endpoints = self.store.endpoints(merchant).await?;
                endpoints_of.insert(merchant.clone(), endpoints);
            }
            let endpoints = endpoints_of.get(merchant).map_or(&[][..], Vec::as_slice);
            let deliveries = deliveries_for(&entry, endpoints);
            // In order: an entry left behind (the store failed) holds up the ones after it, so
            // none is skipped.
            self.store.fan_out(&entry.event, Some(&entry.cursor), &deliveries).await?;
            if !deliveries.is_empty() {
                debug!(event_id = %entry.event.id, deliveries = deliveries.len(), "fanned out an event");
            }
            done += 1;
        }
        Ok(done)
    }

    /// Starts sending the deliveries that are due, as many as there is room for. Returns how many
    /// were started.
    pub async fn send_due(self: &Arc<Self>) -> Result<usize, StoreError> {
        let room = self.sending.available_permits();
        if room == 0 {
            return Ok(0);
        }
        let lease_ms = self.settings.lease.as_millis() as i64;
        let due = self.store.take_due_deliveries(Utc::now().timestamp_millis(), lease_ms, room).await?;
        let started = due.len();
        for delivery in due {
            let Ok(permit) = Arc::clone(&self.sending).try_acquire_owned() else { break };
            let dispatcher = Arc::clone(self);
            tokio::spawn(async move {
                dispatcher.deliver(delivery).await;
                drop(permit);
            });
        }
        Ok(started)
    }

    fn endpoint_state(&self, endpoint: &Endpoint) -> Arc<EndpointState> {
        let mut states = self.endpoints.lock().unwrap_or_else(|p| p.into_inner());
        let state = states.entry(endpoint.id.clone()).or_insert_with(|| {
            Arc::new(EndpointState {
                url: endpoint.url.clone(),
                breaker: endpoint_breaker(self.settings.timeout, self.settings.breaker_open),
                in_flight: AtomicU64::new(0),
                delivered: AtomicU64::new(0),
                retrying: AtomicU64::new(0),
                failed: AtomicU64::new(0),
                last_result: Mutex::new(None),
            })
        });
        Arc::clone(state)
    }

    /// One delivery, taken and leased: send it (unless its endpoint is gone, or put off), then
    /// write what came of it.
    async fn deliver(&self, delivery: Delivery) {
        let (endpoint, event) = match self.sources(&delivery).await {
            Ok(found) => found,
            Err(error) => {
                // The lease runs out and the delivery is taken again.
                warn!(%error, event_id = %delivery.event_id, "store unavailable while sending a webhook");
                return;
            }
        };
        let (Some(endpoint), Some(event)) = (endpoint, event) else {
            info!(event_id = %delivery.event_id, endpoint_id = %delivery.endpoint_id, "endpoint or event gone; delivery ended");
            self.save(delivery, |current| current.abandon()).await;
            return;
        };
        let state = self.endpoint_state(&endpoint);
        let permit = match state.breaker.permit() {
            Ok(permit) => permit,
            Err(_) => {
                // Not sent, and counted as a failed attempt: the schedule alone bounds a
                // delivery's life (an endpoint that stays down fails its deliveries on time), and
                // the breaker only spares the calls meanwhile.
                let attempt = Attempt {
                    at: Utc::now(),
                    status_code: None,
                    error: Some("not sent: the endpoint's circuit breaker is open".to_owned()),
                    duration_ms: 0,
                };
                let schedule = self.settings.schedule.clone();
                *state.last_result.lock().unwrap_or_else(|p| p.into_inner()) = attempt.error.clone();
                let written = self.save(delivery, |current| current.after(attempt.clone(), &schedule)).await;
                self.count(&state, written.as_ref());
                return;
            }
        };
        if state.in_flight.fetch_add(1, Ordering::Relaxed) >= PER_ENDPOINT_IN_FLIGHT {
            state.in_flight.fetch_sub(1, Ordering::Relaxed);
            drop(permit);
            let until = Utc::now() + chrono::Duration::milliseconds(250 + fastrand::i64(0..250));
            self.save(delivery, |current| current.put_off(until)).await;
            return;
        }
        let attempt = self.send(&endpoint, &event).await;
        state.in_flight.fetch_sub(1, Ordering::Relaxed);
        permit.record(!attempt.succeeded());
        let result = match (attempt.status_code, &attempt.error) {
            (Some(code), _) => code.to_string(),
            (None, Some(error)) => error.clone(),
            (None, None) => "no answer".to_owned(),
        };
        *state.last_result.lock().unwrap_or_else(|p| p.into_inner()) = Some(result);
        let schedule = self.settings.schedule.clone();
        let taken = delivery.version;
        let written = self
            .save(delivery, |current| {
                let next = current.after(attempt.clone(), &schedule);
                // Changed since it was taken (a redelivery, or another worker whose lease began
                // after ours ran out): the attempt is recorded, and its schedule left as it is.
                let scheduled_by_another = current.version != taken
                    && next.status == DeliveryStatus::Pending
                    && current.due_ms.is_some_and(|due| due > Utc::now().timestamp_millis());
                if scheduled_by_another {
                    Delivery { due_ms: current.due_ms, next_attempt_at: current.next_attempt_at, ..next }
                } else {
                    next
                }
            })
            .await;
        self.count(&state, written.as_ref());
    }

    /// Counts what a written attempt came to.
    fn count(&self, state: &EndpointState, written: Option<&Delivery>) {
        let Some(written) = written else { return };
        let (counter, result) = match written.status {
            DeliveryStatus::Delivered => (&state.delivered, "delivered"),
            DeliveryStatus::Pending => (&state.retrying, "retrying"),
            DeliveryStatus::Failed => (&state.failed, "failed"),
        };
        counter.fetch_add(1, Ordering::Relaxed);
        self.metrics.webhook_attempts.inc(format!("result=\"{result}\""));
        if written.status == DeliveryStatus::Failed {
            warn!(event_id = %written.event_id, endpoint_id = %written.endpoint_id, attempts = written.attempts.len(), "webhook delivery failed for good");
        }
    }

    async fn sources(&self, delivery: &Delivery) -> Result<(Option<Endpoint>, Option<StoredEvent>), StoreError> {
        let endpoint = self.store.endpoint(&delivery.merchant_id, &delivery.endpoint_id).await?;
        let endpoint = endpoint.filter(|e| e.deleted_at.is_none());
        let event = self.store.event(&delivery.event_id).await?;
        Ok((endpoint, event))
    }

    /// One POST of the event, signed; what came of it.
    async fn send(&self, endpoint: &Endpoint, event: &StoredEvent) -> Attempt {
        let at = Utc::now();
        let started = tokio::time::Instant::now();
        let failed = |error: String| Attempt {
            at,
            status_code: None,
            error: Some(error),
            duration_ms: started.elapsed().as_millis() as u64,
        };
        if let Err(reason) = address::check(&endpoint.url, self.settings.allow_private) {
            return failed(reason);
        }
        let timestamp = at.timestamp();
        let signature = match standardwebhooks::Webhook::new(&endpoint.secret)
            .and_then(|signer| signer.sign(&event.id, timestamp, event.body.as_bytes()))
        {
            Ok(signature) => signature,
            Err(error) => return failed(format!("cannot sign: {error}")),
        };
        let sent = self
            .client
            .post(&endpoint.url)
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .header(standardwebhooks::HEADER_WEBHOOK_ID, &event.id)
            .header(standardwebhooks::HEADER_WEBHOOK_TIMESTAMP, timestamp.to_string())
            .header(standardwebhooks::HEADER_WEBHOOK_SIGNATURE, signature)
            .body(event.body.clone())
            .send()
            .await;
        match sent {
            Ok(response) => Attempt {
                at,
                status_code: Some(response.status().as_u16()),
                error: None,
                duration_ms: started.elapsed().as_millis() as u64,
            },
            Err(error) if error.is_timeout() => {
                failed(format!("no answer within {} ms", self.settings.timeout.as_millis()))
            }
            Err(error) if error.is_connect() => failed("connection refused or unreachable".to_owned()),
            Err(error) => failed(format!("request failed: {}", without_url(&error))),
        }
    }

    /// Writes `change` of the taken delivery; when it changed meanwhile (a redelivery), applies
    /// `change` to it as it is now. Returns what was written.
    async fn save(&self, taken: Delivery, change: impl Fn(&Delivery) -> Delivery) -> Option<Delivery> {
        let mut current = taken;
        for _ in 0..16 {
            let next = change(&current);
            match self.store.save_delivery(&next).await {
                Ok(Saved::Written) => return Some(next),
                Ok(Saved::Conflict(Some(now))) => current = *now,
                Ok(Saved::Conflict(None)) => return None,
                Err(error) => {
                    // The lease runs out and the delivery is sent again: at least once.
                    warn!(%error, event_id = %current.event_id, "could not record a webhook attempt");
                    return None;
                }
            }
        }
        None
    }

    /// Delivery health per endpoint this instance has sent to.
    pub fn health(&self) -> Vec<EndpointHealth> {
        let states = self.endpoints.lock().unwrap_or_else(|p| p.into_inner());
        let mut health: Vec<EndpointHealth> = states
            .iter()
            .map(|(id, state)| EndpointHealth {
                endpoint_id: id.clone(),
                url: state.url.clone(),
                delivered: state.delivered.load(Ordering::Relaxed),
                retrying: state.retrying.load(Ordering::Relaxed),
                failed: state.failed.load(Ordering::Relaxed),
                breaker: state.breaker.snapshot().state.as_str().to_owned(),
                last_result: state.last_result.lock().unwrap_or_else(|p| p.into_inner()).clone(),
            })
            .collect();
        health.sort_by(|a, b| a.endpoint_id.cmp(&b.endpoint_id));
        health
    }
}

/// The deliveries an event gets: one per endpoint that wants its type and existed when it
/// happened.
pub fn deliveries_for(entry: &LogEntry, endpoints: &[Endpoint]) -> Vec<Delivery> {
    let now = Utc::now();
    endpoints
        .iter()
        .filter(|endpoint| endpoint.wants_event(&entry.event))
        .map(|endpoint| Delivery::new(&entry.event.id, &endpoint.id, &endpoint.merchant_id, now))
        .collect()
}

/// A reqwest error's text without the URL (which may carry credentials).
fn without_url(error: &reqwest::Error) -> String {
    let mut text = error.to_string();
    if let Some(url) = error.url() {
        text = text.replace(url.as_str(), "<endpoint>");
    }
    text
}
