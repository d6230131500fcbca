//! Webhook endpoints and the deliveries of events to them, as the store keeps them: an endpoint
//! (its URL, the events it wants, its signing secret), and a delivery of one event to one endpoint
//! with its attempts and the retry [`Schedule`] that places the next one. Sending them is
//! `webhook::dispatch`'s.

use std::time::Duration;

use base64::Engine;
use chrono::{DateTime, SecondsFormat, Utc};
use serde::{Deserialize, Serialize};
use wire::EventType;

/// A merchant's webhook endpoint, as stored. Deleting one keeps it (`deleted_at`), so that a retry
/// of its creation under the same `Idempotency-Key` still gets the same answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Endpoint {
    pub id: String,
    pub merchant_id: String,
    pub url: String,
    /// Event type names, or `*` for all.
    pub enabled_events: Vec<String>,
    /// `whsec_<base64 of 32 random bytes>`; shown only in the creation's answer.
    pub secret: String,
    pub created_at: DateTime<Utc>,
    /// The fingerprint of the creating request, so a key reused with another body is refused.
    pub fingerprint: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deleted_at: Option<DateTime<Utc>>,
}

impl Endpoint {
    pub fn wants(&self, kind: EventType) -> bool {
        self.deleted_at.is_none() && self.enabled_events.iter().any(|e| e == "*" || e == kind.as_str())
    }

    /// Whether `event` is sent here: of a type it wants, and no older than the endpoint (as
    /// Stripe does, an endpoint hears of what happens after it was created).
    pub fn wants_event(&self, event: &super::StoredEvent) -> bool {
        self.wants(event.kind) && event.created_ms >= self.created_at.timestamp_millis()
    }

    /// The endpoint as the API shows it; the secret only when `with_secret` (at creation).
    pub fn public_json(&self, with_secret: bool) -> String {
        #[derive(Serialize)]
        struct Public<'a> {
            id: &'a str,
            object: &'static str,
            url: &'a str,
            enabled_events: &'a [String],
            #[serde(skip_serializing_if = "Option::is_none")]
            secret: Option<&'a str>,
            created_at: String,
        }
        let public = Public {
            id: &self.id,
            object: "webhook_endpoint",
            url: &self.url,
            enabled_events: &self.enabled_events,
            secret: with_secret.then_some(self.secret.as_str()),
            created_at: self.created_at.to_rfc3339_opts(SecondsFormat::Secs, true),
        };
        serde_json::to_string(&public).unwrap_or_default()
    }
}

/// A new signing secret: 32 random bytes, base64, prefixed `whsec_` as Standard Webhooks does.
pub fn new_secret() -> String {
    let mut bytes = [0u8; 32];
    if getrandom::fill(&mut bytes).is_err() {
        // No OS randomness (never seen on Linux): two v4 UUIDs, 244 random bits.
        bytes[..16].copy_from_slice(uuid::Uuid::new_v4().as_bytes());
        bytes[16..].copy_from_slice(uuid::Uuid::new_v4().as_bytes());
    }
    format!("whsec_{}", base64::engine::general_purpose::STANDARD.encode(bytes))
}

/// How many redelivery keys a delivery remembers.
const MAX_REDELIVERY_KEYS: usize = 32;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum DeliveryStatus {
    /// Not delivered yet; `next_attempt_at` says when it is tried.
    Pending,
    /// An attempt was answered 2xx.
    Delivered,
    /// Every attempt of the schedule failed (a redelivery starts it again).
    Failed,
}

/// One try of a delivery.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Attempt {
    pub at: DateTime<Utc>,
    /// The endpoint's HTTP status, when it answered.
    pub status_code: Option<u16>,
    /// Why it failed without an answer (a timeout, a refused connection, …).
    pub error: Option<String>,
    pub duration_ms: u64,
}

impl Attempt {
    pub fn succeeded(&self) -> bool {
        self.status_code.is_some_and(|s| (200..300).contains(&s))
    }
}

/// An event's delivery to one endpoint.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Delivery {
    pub event_id: String,
    pub endpoint_id: String,
    pub merchant_id: String,
    pub status: DeliveryStatus,
    pub attempts: Vec<Attempt>,
    /// When it is tried next, while pending.
    pub next_attempt_at: Option<DateTime<Utc>>,
    /// When a worker picks it up: `next_attempt_at`, or the end of a worker's lease on it (a
    /// worker that died while sending leaves it to be picked up again then). `None` once final.
    pub due_ms: Option<i64>,
    /// The attempt the current round of the schedule began at (a redelivery starts a new round).
    pub round_start: usize,
    /// The `Idempotency-Key`s of the redeliveries that started rounds, so a retried redelivery
    /// starts none.
    #[serde(default)]
    pub redelivered_by: Vec<String>,
    /// Bumped by every write; a write lands only over the version it was derived from.
    pub version: u64,
}

impl Delivery {
    pub fn new(event_id: &str, endpoint_id: &str, merchant_id: &str, now: DateTime<Utc>) -> Self {
        Self {
            event_id: event_id.to_owned(),
            endpoint_id: endpoint_id.to_owned(),
            merchant_id: merchant_id.to_owned(),
            status: DeliveryStatus::Pending,
            attempts: Vec::new(),
            next_attempt_at: Some(now),
            due_ms: Some(now.timestamp_millis()),
            round_start: 0,
            redelivered_by: Vec::new(),
            version: 1,
        }
    }

    /// The delivery with `attempt` recorded, and scheduled again by `schedule` when it failed.
    pub fn after(&self, attempt: Attempt, schedule: &Schedule) -> Delivery {
        let mut next = self.clone();
        next.version += 1;
        let delivered = attempt.succeeded();
        let at = attempt.at;
        next.attempts.push(attempt);
        let failures_this_round = next.attempts.len() - next.round_start;
        match self.status {
            // Settled meanwhile (by another worker, or its endpoint was deleted): the attempt is
            // recorded, and a success still counts, but nothing is scheduled again.
            DeliveryStatus::Delivered => {}
            DeliveryStatus::Failed if !delivered => {}
            _ if delivered => {
                next.status = DeliveryStatus::Delivered;
                next.next_attempt_at = None;
                next.due_ms = None;
            }
            _ => match schedule.delay_after(failures_this_round) {
                Some(delay) => {
                    let when = at + chrono::Duration::from_std(delay).unwrap_or(chrono::Duration::MAX);
                    next.next_attempt_at = Some(when);
                    next.due_ms = Some(when.timestamp_millis());
                }
                None => {
                    next.status = DeliveryStatus::Failed;
                    next.next_attempt_at = None;
                    next.due_ms = None;
                }
            },
        }
        next
    }

    /// Put off without an attempt (the endpoint's breaker is open, or it has too many in flight).
    pub fn put_off(&self, until: DateTime<Utc>) -> Delivery {
        let mut next = self.clone();
        next.version += 1;
        if next.status == DeliveryStatus::Pending {
            next.next_attempt_at = Some(until);
            next.due_ms = Some(until.timestamp_millis());
        }
        next
    }

    /// Ends it without an attempt: its endpoint is gone.
    pub fn abandon(&self) -> Delivery {
        let mut next = self.clone();
        next.version += 1;
        if next.status == DeliveryStatus::Pending {
            next.status = DeliveryStatus::Failed;
        }
        next.next_attempt_at = None;
        next.due_ms = None;
        next
    }

    /// A new round, at once, for the redelivery made under `key` (none if that one already did).
    pub fn redeliver(&self, key: &str, now: DateTime<Utc>) -> Option<Delivery> {
        if self.redelivered_by.iter().any(|k| k == key) {
            return None;
        }
        let mut next = self.clone();
        next.version += 1;
        next.status = DeliveryStatus::Pending;
        next.round_start = next.attempts.len();
        next.next_attempt_at = Some(now);
        next.due_ms = Some(now.timestamp_millis());
        next.redelivered_by.push(key.to_owned());
        // The keys of the latest redeliveries are enough to recognise a client's retry.
        if next.redelivered_by.len() > MAX_REDELIVERY_KEYS {
            next.redelivered_by.remove(0);
        }
        Some(next)
    }

    /// The delivery as the API shows it.
    pub fn public(&self) -> PublicDelivery<'_> {
        PublicDelivery {
            object: "webhook_delivery",
            event_id: &self.event_id,
            endpoint_id: &self.endpoint_id,
            status: self.status,
            attempts: &self.attempts,
            next_attempt_at: self.next_attempt_at,
        }
    }
}

/// A delivery as `GET /v1/events/{id}/deliveries` lists it.
#[derive(Debug, Serialize, utoipa::ToSchema)]
#[schema(as = WebhookDelivery)]
pub struct PublicDelivery<'a> {
    /// Always `webhook_delivery`.
    pub object: &'static str,
    pub event_id: &'a str,
    pub endpoint_id: &'a str,
    pub status: DeliveryStatus,
    pub attempts: &'a [Attempt],
    pub next_attempt_at: Option<DateTime<Utc>>,
}

/// The waits between a delivery's failed attempts (`WEBHOOK_RETRY_SCHEDULE_S`), each stretched by
/// up to a fifth at random so that deliveries that failed together do not return together.
#[derive(Debug, Clone, PartialEq)]
pub struct Schedule {
    pub delays: Vec<Duration>,
}

impl Schedule {
    /// The wait after the `failures`-th failed attempt of a round; `None` when the schedule is
    /// spent.
    pub fn delay_after(&self, failures: usize) -> Option<Duration> {
        let base = *self.delays.get(failures.checked_sub(1)?)?;
        Some(base.mul_f64(1.0 + fastrand::f64() * 0.2))
    }

    /// Reads `5,300,1800` (seconds; fractions allowed, for tests that compress time).
    pub fn parse(text: &str) -> Result<Self, String> {
        let delays = text
            .split(',')
            .map(str::trim)
            .filter(|part| !part.is_empty())
            .map(|part| match part.parse::<f64>() {
                Ok(seconds) if seconds.is_finite() && (0.0..=86_400.0 * 7.0).contains(&seconds) => {
                    Ok(Duration::from_secs_f64(seconds))
                }
                _ => Err(format!("`{part}` is not a number of seconds between 0 and 604800")),
            })
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Self { delays })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn attempt(status: Option<u16>) -> Attempt {
        Attempt { at: Utc::now(), status_code: status, error: None, duration_ms: 1 }
    }

    #[test]
    fn a_failed_attempt_waits_its_turn_of_the_schedule_and_the_last_one_fails_the_delivery() {
        let schedule = Schedule::parse("1,10").unwrap();
        let first = Delivery::new("evt_1", "we_1", "m", Utc::now());
        let second = first.after(attempt(Some(500)), &schedule);
        assert_eq!(second.status, DeliveryStatus::Pending);
        let wait = second.next_attempt_at.unwrap() - second.attempts[0].at;
        assert!((1_000..=1_200).contains(&wait.num_milliseconds()), "{wait}");
        let third = second.after(attempt(None), &schedule);
        let wait = third.next_attempt_at.unwrap() - third.attempts[1].at;
        assert!((10_000..=12_000).contains(&wait.num_milliseconds()), "{wait}");
        let last = third.after(attempt(Some(404)), &schedule);
        assert_eq!((last.status, last.due_ms), (DeliveryStatus::Failed, None));
        let again = last.redeliver("k", Utc::now()).unwrap();
        assert_eq!((again.status, again.round_start), (DeliveryStatus::Pending, 3), "a new round");
        assert!(again.redeliver("k", Utc::now()).is_none(), "the same redelivery twice starts one round");
        let done = again.after(attempt(Some(204)), &schedule);
        assert_eq!((done.status, done.due_ms, done.version), (DeliveryStatus::Delivered, None, 6));
    }

    #[test]
    fn a_settled_delivery_is_never_scheduled_again_by_a_late_worker() {
        let schedule = Schedule::parse("1,1").unwrap();
        let delivered = Delivery::new("evt_1", "we_1", "m", Utc::now()).after(attempt(Some(200)), &schedule);
        let late = delivered.after(attempt(Some(500)), &schedule);
        assert_eq!((late.status, late.due_ms, late.attempts.len()), (DeliveryStatus::Delivered, None, 2));
        assert_eq!(delivered.put_off(Utc::now()).due_ms, None);
        let failed = Delivery::new("evt_1", "we_1", "m", Utc::now()).abandon();
        assert_eq!(failed.after(attempt(None), &schedule).due_ms, None, "a failed one stays failed");
        assert_eq!(
            failed.after(attempt(Some(204)), &schedule).status,
            DeliveryStatus::Delivered,
            "unless it got through"
        );
    }

    #[test]
    fn a_schedule_reads_seconds_and_refuses_anything_else() {
        assert_eq!(Schedule::parse("5, 0.5").unwrap().delays, [Duration::from_secs(5), Duration::from_millis(500)]);
        assert!(Schedule::parse("5,x").is_err());
        assert!(Schedule::parse("-1").is_err());
        assert!(Schedule::parse("").unwrap().delays.is_empty());
    }

    #[test]
    fn a_secret_is_32_bytes_of_base64_after_its_prefix() {
        let secret = new_secret();
        let raw = base64::engine::general_purpose::STANDARD.decode(secret.strip_prefix("whsec_").unwrap()).unwrap();
        assert_eq!(raw.len(), 32);
        assert_ne!(secret, new_secret());
    }
}
