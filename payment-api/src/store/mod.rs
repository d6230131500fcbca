//! Where idempotency records and payments live, behind one contract with three backends:
//! `memory` (tests), `redb:<path>` (embedded, durable: every commit is fsynced before the client
//! is answered) and `redis://` (shared by many gateway instances; every multi-key step is one
//! Lua script, so it is atomic).
//!
//! Two operations change things, and their rules are written once, here, as pure functions the
//! backends run inside their atomic step (Redis runs the same rules in Lua):
//! - [`Store::claim`] ([`decide_claim`]) atomically creates the key's record (in flight, leased to
//!   this request) and the new payment, or reports what is already there: a finished answer to
//!   replay, a different request (mismatch), a live lease (in use), or an expired lease, which the
//!   caller takes over to finish the crashed holder's payment under the same payment id (and so
//!   the same bank key).
//! - [`Store::commit`] ([`decide_commit`]) writes a changed payment over the version it was
//!   derived from, together with what happens to the idempotency record: the answer to replay
//!   stored, or the key released (only when the bank surely did nothing, and never from under a
//!   live request, [`decide_release`]). When another change won the race, nothing is written and
//!   the current payment comes back, so the caller applies its change to that one again: no change
//!   to a payment is ever lost, whichever order they land in.
//!
//! A store that lost its data (a Redis without persistence that restarted) loses records and
//! payments, never the bank's charges: a commit that finds its record and payment gone writes them
//! back, and a client's retry reaches the bank under the same bank key (see `Payment::bank_key`).

pub mod memory;
pub mod outbox;
pub mod redb;
pub mod redis;
pub mod rules;

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

use self::outbox::{EventFilter, EventPage, LogEntry, Saved};
use crate::model::webhook::{Delivery, Endpoint};
use crate::model::{Payment, PaymentStatus, StoredEvent};

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("the store is unavailable: {0}")]
    Unavailable(String),
    #[error("the store holds a record it cannot read: {0}")]
    Corrupt(String),
    #[error("invalid store location: {0}")]
    InvalidUrl(String),
}

/// An HTTP answer to replay under an idempotency key.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoredResponse {
    pub status: u16,
    pub body: String,
}

/// The record kept under an idempotency key.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IdempotencyRecord {
    pub fingerprint: String,
    /// The payment (or refund) this key created.
    pub resource_id: String,
    pub state: RecordState,
    pub expires_at_ms: i64,
}

impl IdempotencyRecord {
    /// A final answer is replayed forever; an in-flight record or a stored 202 ("processing")
    /// may still be released when the bank turns out not to have charged.
    pub fn is_final(&self) -> bool {
        matches!(&self.state, RecordState::Done { response } if response.status != 202)
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "state", rename_all = "snake_case")]
pub enum RecordState {
    InFlight { owner: String, lease_until_ms: i64 },
    Done { response: StoredResponse },
}

/// What a request asks of [`Store::claim`].
#[derive(Debug, Clone, Copy)]
pub struct ClaimRequest<'a> {
    /// The scoped key: merchant, kind and the client's key.
    pub key: &'a str,
    pub fingerprint: &'a str,
    /// Who holds the lease: this instance and request.
    pub owner: &'a str,
    pub resource_id: &'a str,
    pub lease: Duration,
    pub retention: Duration,
    /// The payment to create together with the record, for a new key.
    pub insert: Option<&'a Payment>,
    /// The events its creation produces, written with it.
    pub events: &'a [StoredEvent],
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Claim {
    /// A new key: the record and the payment were created; go ahead.
    Fresh,
    /// The previous holder's lease expired (it crashed or hung): finish its work.
    TakeOver { resource_id: String },
    /// Finished before: answer this again.
    Replay(StoredResponse),
    /// Another request holds the key right now.
    InUse { retry_after: Duration },
    /// The key was used with a different request.
    Mismatch,
}

/// A changed payment to write, and what happens to an idempotency record in the same step.
#[derive(Debug, Clone, Copy)]
pub struct Commit<'a> {
    /// The payment as changed; its `version` is one more than the version it was derived from,
    /// which must still be the stored one.
    pub payment: &'a Payment,
    pub record: RecordChange<'a>,
    /// The events the change produces: written exactly when the payment is.
    pub events: &'a [StoredEvent],
}

/// What a [`Commit`] does to an idempotency record.
#[derive(Debug, Clone, Copy)]
pub enum RecordChange<'a> {
    /// Nothing: only the payment changes.
    Keep,
    /// Store the answer to replay under `key`, if the record is still `resource_id`'s. A record
    /// that is gone (a store that lost its data) is written again from `fingerprint`, when the
    /// caller knows it (the reconciler does not).
    Finish {
        key: &'a str,
        resource_id: &'a str,
        fingerprint: Option<&'a str>,
        response: &'a StoredResponse,
        retention: Duration,
    },
    /// The bank surely did nothing: free `key` for a retry, following [`decide_release`]. `owner`
    /// is the lease holder asking (`None` for the reconciler).
    Release { key: &'a str, resource_id: &'a str, owner: Option<&'a str> },
}

impl RecordChange<'_> {
    pub fn key(&self) -> Option<&str> {
        match self {
            RecordChange::Keep => None,
            RecordChange::Finish { key, .. } | RecordChange::Release { key, .. } => Some(key),
        }
    }
}

/// What [`Store::commit`] did.
#[derive(Debug, Clone, PartialEq)]
pub enum Committed {
    /// The payment and the record change were written together.
    Written,
    /// The payment changed since it was read; nothing was written. Here it is as it is now
    /// (`None` if it is gone): apply the change to it again.
    Conflict(Option<Box<Payment>>),
    /// A live request holds the key, so it was not released; nothing was written.
    Refused,
    /// The key's record belongs to another payment or refund (a retry created it after this
    /// one's record was lost); nothing was written.
    Superseded,
}

/// What [`Store::release`]'s rule decides about an existing record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Release {
    /// Delete the record and store the payment.
    Delete,
    /// The record is not this resource's (or is gone): store the payment, leave the record.
    Keep,
    /// A live request holds the key (a takeover after a crash): change nothing; it will finish.
    Refuse,
}

/// The release rule: a record is deleted only by the request holding its lease, once its lease
/// has expired, or when it holds a stored 202; never from under a live request, which would let
/// a retry charge a second time.
pub fn decide_release(
    existing: Option<&IdempotencyRecord>,
    resource_id: &str,
    owner: Option<&str>,
    now_ms: i64,
) -> Release {
    match existing {
        Some(record) if record.resource_id == resource_id && !record.is_final() => match &record.state {
            RecordState::InFlight { owner: holder, lease_until_ms }
                if *lease_until_ms > now_ms && owner != Some(holder.as_str()) =>
            {
                Release::Refuse
            }
            _ => Release::Delete,
        },
        _ => Release::Keep,
    }
}

/// What a backend must do to carry out a commit.
#[derive(Debug, Clone, PartialEq)]
pub struct CommitPlan {
    pub outcome: Committed,
    pub record: RecordWrite,
    /// Write the payment (and keep its indexes in step).
    pub write_payment: bool,
}

/// The record's part of a [`CommitPlan`].
#[derive(Debug, Clone, PartialEq)]
pub enum RecordWrite {
    Leave,
    Put(IdempotencyRecord),
    Delete,
}

impl CommitPlan {
    fn nothing(outcome: Committed) -> Self {
        Self { outcome, record: RecordWrite::Leave, write_payment: false }
    }
}

/// The commit rule. `stored_version` is the stored payment's version (`None`: no such payment, as
/// after a store lost its data, and then the payment is written back). The record rule comes
/// first: a refused release or a record that belongs to another resource writes nothing. Then
/// the version: the payment is written only over the version it was derived from.
/// The caller fills in `Conflict`'s payment.
pub fn decide_commit(
    record: Option<&IdempotencyRecord>,
    stored_version: Option<u64>,
    commit: &Commit<'_>,
    now_ms: i64,
) -> CommitPlan {
    let record = record.filter(|r| r.expires_at_ms > now_ms);
    let record_write = match commit.record {
        RecordChange::Keep => RecordWrite::Leave,
        RecordChange::Finish { resource_id, fingerprint, response, retention, .. } => {
            if record.is_some_and(|r| r.resource_id != resource_id) {
                return CommitPlan::nothing(Committed::Superseded);
            }
            match record.map(|r| r.fingerprint.as_str()).or(fingerprint) {
                Some(fingerprint) => RecordWrite::Put(IdempotencyRecord {
                    fingerprint: fingerprint.to_owned(),
                    resource_id: resource_id.to_owned(),
                    state: RecordState::Done { response: response.clone() },
                    expires_at_ms: now_ms + retention.as_millis() as i64,
                }),
                None => RecordWrite::Leave,
            }
        }
        RecordChange::Release { resource_id, owner, .. } => match decide_release(record, resource_id, owner, now_ms) {
            Release::Refuse => return CommitPlan::nothing(Committed::Refused),
            Release::Delete => RecordWrite::Delete,
            Release::Keep => RecordWrite::Leave,
        },
    };
    match stored_version {
        Some(version) if version + 1 != commit.payment.version => CommitPlan::nothing(Committed::Conflict(None)),
        _ => CommitPlan { outcome: Committed::Written, record: record_write, write_payment: true },
    }
}

/// Filters of `GET /v1/payments`.
#[derive(Debug, Clone, Default)]
pub struct PaymentFilter {
    pub order_id: Option<String>,
    pub status: Option<PaymentStatus>,
    pub limit: usize,
    pub starting_after: Option<String>,
}

/// One page of payments, newest first.
#[derive(Debug, Clone, Default)]
pub struct PaymentPage {
    pub payments: Vec<Payment>,
    pub has_more: bool,
}

pub fn now_ms() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as i64)
}

/// Scoped idempotency key: keys of different merchants, and of payments and refunds, never meet.
pub fn scoped_key(merchant: &str, kind: &str, key: &str) -> String {
    format!("{merchant}:{kind}:{key}")
}

/// The claim rules. Returns the answer and, when the record must change, its new value.
pub fn decide_claim(
    existing: Option<&IdempotencyRecord>,
    request: &ClaimRequest<'_>,
    now_ms: i64,
) -> (Claim, Option<IdempotencyRecord>) {
    let lease_until_ms = now_ms + request.lease.as_millis() as i64;
    let in_flight = RecordState::InFlight { owner: request.owner.to_owned(), lease_until_ms };
    match key_status(existing, request.fingerprint, now_ms) {
        KeyStatus::Free => {
            let record = IdempotencyRecord {
                fingerprint: request.fingerprint.to_owned(),
                resource_id: request.resource_id.to_owned(),
                state: in_flight,
                expires_at_ms: now_ms + request.retention.as_millis() as i64,
            };
            (Claim::Fresh, Some(record))
        }
        KeyStatus::Mismatch => (Claim::Mismatch, None),
        KeyStatus::Replay(response) => (Claim::Replay(response), None),
        KeyStatus::InUse { retry_after } => (Claim::InUse { retry_after }, None),
        KeyStatus::Abandoned { resource_id } => {
            let taken = existing.map(|record| IdempotencyRecord { state: in_flight, ..record.clone() });
            (Claim::TakeOver { resource_id }, taken)
        }
    }
}

/// What a key's record says to a request with `fingerprint`, without claiming anything.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeyStatus {
    /// No live record: the key is free.
    Free,
    /// Used for another request.
    Mismatch,
    /// Answered: replay this.
    Replay(StoredResponse),
    /// A request holds it until its lease runs out.
    InUse { retry_after: Duration },
    /// Its request died (the lease ran out) without an answer: the key may be taken over.
    Abandoned { resource_id: String },
}

/// The one reading of a key's record, shared by the claim ([`decide_claim`]) and by answers that
/// must not claim (while the breaker is open, a request is answered from the record alone).
pub fn key_status(existing: Option<&IdempotencyRecord>, fingerprint: &str, now_ms: i64) -> KeyStatus {
    match existing.filter(|record| record.expires_at_ms > now_ms) {
        None => KeyStatus::Free,
        Some(record) if record.fingerprint != fingerprint => KeyStatus::Mismatch,
        Some(IdempotencyRecord { state: RecordState::Done { response }, .. }) => KeyStatus::Replay(response.clone()),
        Some(IdempotencyRecord { state: RecordState::InFlight { lease_until_ms: until, .. }, .. })
            if *until > now_ms =>
        {
            KeyStatus::InUse { retry_after: Duration::from_millis((*until - now_ms) as u64) }
        }
        Some(record) => KeyStatus::Abandoned { resource_id: record.resource_id.clone() },
    }
}

pub use rules::{IndexEntry, Pager, created_micros, due_ms, index_moves, matches};

/// The configured backend. An enum rather than a trait object: the set of backends is closed and
/// known here, each call is a plain match the compiler checks for every backend (a new operation
/// cannot be forgotten in one), async methods need no boxing, and the rules the backends share
/// live beside it as functions ([`key_status`], [`decide_claim`], [`decide_commit`], [`rules`]) rather than as
/// default methods of a trait.
#[derive(Debug, Clone)]
pub enum Store {
    Memory(memory::MemoryStore),
    Redb(redb::RedbStore),
    Redis(redis::RedisStore),
}

/// How long events (and their deliveries) are kept by default: 30 days.
pub const EVENT_RETENTION: Duration = Duration::from_secs(2_592_000);

impl Store {
    /// Opens `memory`, `redb:<path>` or `redis://host:port/db`, keeping events for 30 days.
    pub async fn open(location: &str) -> Result<Self, StoreError> {
        Self::open_with(location, EVENT_RETENTION).await
    }

    /// Opens the store, keeping events (and their deliveries) for `event_retention`.
    pub async fn open_with(location: &str, event_retention: Duration) -> Result<Self, StoreError> {
        if location == "memory" {
            Ok(Store::Memory(memory::MemoryStore::default()))
        } else if let Some(path) = location.strip_prefix("redb:") {
            Ok(Store::Redb(redb::RedbStore::open(path).await?))
        } else if location.starts_with("redis://") || location.starts_with("rediss://") {
            Ok(Store::Redis(redis::RedisStore::connect(location, event_retention).await?))
        } else {
            Err(StoreError::InvalidUrl(format!("`{location}`: expected memory, redb:<path> or redis://host:port/db")))
        }
    }

    pub fn kind(&self) -> &'static str {
        match self {
            Store::Memory(_) => "memory",
            Store::Redb(_) => "redb",
            Store::Redis(_) => "redis",
        }
    }

    pub async fn claim(&self, request: ClaimRequest<'_>) -> Result<Claim, StoreError> {
        match self {
            Store::Memory(s) => s.claim(request),
            Store::Redb(s) => s.claim(request).await,
            Store::Redis(s) => s.claim(request).await,
        }
    }

    /// Writes a changed payment and its record change in one atomic step, following
    /// [`decide_commit`].
    pub async fn commit(&self, commit: Commit<'_>) -> Result<Committed, StoreError> {
        match self {
            Store::Memory(s) => s.commit(commit),
            Store::Redb(s) => s.commit(commit).await,
            Store::Redis(s) => s.commit(commit).await,
        }
    }

    pub async fn get_payment(&self, id: &str) -> Result<Option<Payment>, StoreError> {
        match self {
            Store::Memory(s) => Ok(s.get_payment(id)),
            Store::Redb(s) => s.get_payment(id).await,
            Store::Redis(s) => s.get_payment(id).await,
        }
    }

    pub async fn list_payments(&self, merchant: &str, filter: &PaymentFilter) -> Result<PaymentPage, StoreError> {
        match self {
            Store::Memory(s) => Ok(s.list_payments(merchant, filter)),
            Store::Redb(s) => s.list_payments(merchant, filter).await,
            Store::Redis(s) => s.list_payments(merchant, filter).await,
        }
    }

    /// Payments due for the reconciler (processing, or with a pending refund) whose
    /// `reconcile_after` has passed, oldest due first.
    pub async fn due_payments(&self, now_ms: i64, limit: usize) -> Result<Vec<Payment>, StoreError> {
        match self {
            Store::Memory(s) => Ok(s.due_payments(now_ms, limit)),
            Store::Redb(s) => s.due_payments(now_ms, limit).await,
            Store::Redis(s) => s.due_payments(now_ms, limit).await,
        }
    }

    /// Reads the record under a key.
    pub async fn record(&self, key: &str) -> Result<Option<IdempotencyRecord>, StoreError> {
        match self {
            Store::Memory(s) => Ok(s.record(key)),
            Store::Redb(s) => s.record(key).await,
            Store::Redis(s) => s.record(key).await,
        }
    }

    pub async fn event(&self, id: &str) -> Result<Option<StoredEvent>, StoreError> {
        match self {
            Store::Memory(s) => Ok(s.event(id)),
            Store::Redb(s) => s.event(id).await,
            Store::Redis(s) => s.event(id).await,
        }
    }

    /// A page of a merchant's events, newest first.
    pub async fn events(&self, merchant: &str, filter: &EventFilter) -> Result<EventPage, StoreError> {
        match self {
            Store::Memory(s) => Ok(s.events(merchant, filter)),
            Store::Redb(s) => s.events(merchant, filter).await,
            Store::Redis(s) => s.events(merchant, filter).await,
        }
    }

    /// Events written after `cursor` (from the start: `None`), oldest first: the tail of the log.
    pub async fn log_after(&self, cursor: Option<&str>, limit: usize) -> Result<Vec<LogEntry>, StoreError> {
        match self {
            Store::Memory(s) => Ok(s.log_after(cursor, limit)),
            Store::Redb(s) => s.log_after(cursor, limit).await,
            Store::Redis(s) => s.log_after(cursor, limit).await,
        }
    }

    /// Where the log ends now: read on from here to see only what is written from now on.
    pub async fn log_end(&self) -> Result<String, StoreError> {
        match self {
            Store::Memory(s) => Ok(s.log_end()),
            Store::Redb(s) => s.log_end().await,
            Store::Redis(s) => s.log_end().await,
        }
    }

    /// Events not fanned out to their deliveries yet, oldest first. On Redis, entries are handed
    /// to `consumer` (each to one consumer of the group), and entries another consumer took more
    /// than `claim_idle` ago without finishing (it died) are taken over; elsewhere one
    /// dispatcher reads them in order.
    pub async fn outbox(
        &self,
        consumer: &str,
        limit: usize,
        claim_idle: Duration,
    ) -> Result<Vec<LogEntry>, StoreError> {
        match self {
            Store::Memory(s) => Ok(s.outbox(limit)),
            Store::Redb(s) => s.outbox(limit).await,
            Store::Redis(s) => s.outbox(consumer, limit, claim_idle).await,
        }
    }

    /// Creates the event's deliveries (those that do not exist yet) and, with `ack` (its outbox
    /// entry's cursor), marks it fanned out, in one atomic step.
    pub async fn fan_out(
        &self,
        event: &StoredEvent,
        ack: Option<&str>,
        deliveries: &[Delivery],
    ) -> Result<(), StoreError> {
        match self {
            Store::Memory(s) => {
                s.fan_out(ack, deliveries);
                Ok(())
            }
            Store::Redb(s) => s.fan_out(ack, deliveries).await,
            Store::Redis(s) => s.fan_out(event, ack, deliveries).await,
        }
    }

    /// Stores a new endpoint, unless one with its id exists: returns the one stored.
    pub async fn create_endpoint(&self, endpoint: &Endpoint) -> Result<Endpoint, StoreError> {
        match self {
            Store::Memory(s) => Ok(s.create_endpoint(endpoint)),
            Store::Redb(s) => s.create_endpoint(endpoint).await,
            Store::Redis(s) => s.create_endpoint(endpoint).await,
        }
    }

    /// Writes an endpoint over the stored one (to mark it deleted).
    pub async fn save_endpoint(&self, endpoint: &Endpoint) -> Result<(), StoreError> {
        match self {
            Store::Memory(s) => {
                s.save_endpoint(endpoint);
                Ok(())
            }
            Store::Redb(s) => s.save_endpoint(endpoint).await,
            Store::Redis(s) => s.save_endpoint(endpoint).await,
        }
    }

    /// A merchant's endpoints, deleted ones included.
    pub async fn endpoints(&self, merchant: &str) -> Result<Vec<Endpoint>, StoreError> {
        match self {
            Store::Memory(s) => Ok(s.endpoints(merchant)),
            Store::Redb(s) => s.endpoints(merchant).await,
            Store::Redis(s) => s.endpoints(merchant).await,
        }
    }

    /// One endpoint of a merchant's (deleted or not).
    pub async fn endpoint(&self, merchant: &str, id: &str) -> Result<Option<Endpoint>, StoreError> {
        match self {
            Store::Memory(s) => Ok(s.endpoint(merchant, id)),
            Store::Redb(s) => s.endpoint(merchant, id).await,
            Store::Redis(s) => s.endpoint(merchant, id).await,
        }
    }

    /// An event's deliveries, one per endpoint it was fanned out to.
    pub async fn deliveries(&self, event_id: &str) -> Result<Vec<Delivery>, StoreError> {
        match self {
            Store::Memory(s) => Ok(s.deliveries(event_id)),
            Store::Redb(s) => s.deliveries(event_id).await,
            Store::Redis(s) => s.deliveries(event_id).await,
        }
    }

    /// Deliveries due by `now_ms`, oldest due first, each leased to the caller for `lease_ms` (no
    /// other worker takes it meanwhile; anyone may once the lease ran out). Redis reads the time
    /// from its own clock, so instances with skewed clocks agree on leases.
    pub async fn take_due_deliveries(
        &self,
        now_ms: i64,
        lease_ms: i64,
        limit: usize,
    ) -> Result<Vec<Delivery>, StoreError> {
        match self {
            Store::Memory(s) => Ok(s.take_due_deliveries(now_ms, lease_ms, limit)),
            Store::Redb(s) => s.take_due_deliveries(now_ms, lease_ms, limit).await,
            Store::Redis(s) => s.take_due_deliveries(now_ms, lease_ms, limit).await,
        }
    }

    /// Writes a delivery over the version it was derived from (see [`outbox::Saved`]).
    pub async fn save_delivery(&self, delivery: &Delivery) -> Result<Saved, StoreError> {
        match self {
            Store::Memory(s) => Ok(s.save_delivery(delivery)),
            Store::Redb(s) => s.save_delivery(delivery).await,
            Store::Redis(s) => s.save_delivery(delivery).await,
        }
    }

    /// Forgets events created before `before_ms` and their deliveries (Redis expires them by
    /// itself). Returns how many were forgotten.
    pub async fn prune_events(&self, before_ms: i64) -> Result<usize, StoreError> {
        match self {
            Store::Memory(s) => Ok(s.prune(before_ms)),
            Store::Redb(s) => s.prune(before_ms).await,
            Store::Redis(_) => Ok(0),
        }
    }

    /// Whether the store answers.
    pub async fn ping(&self) -> Result<(), StoreError> {
        match self {
            Store::Memory(_) => Ok(()),
            Store::Redb(s) => s.ping().await,
            Store::Redis(s) => s.ping().await,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(resource: &str, state: RecordState) -> IdempotencyRecord {
        IdempotencyRecord { fingerprint: "fp".into(), resource_id: resource.into(), state, expires_at_ms: 10_000 }
    }

    fn payment(version: u64) -> Payment {
        serde_json::from_value(serde_json::json!({
            "id": "pay_1", "version": version, "status": "succeeded", "amount": 100, "currency": "USD",
            "order_id": null, "description": null, "metadata": {}, "card": {"brand": "visa", "last4": "4242"},
            "decline_code": null, "failure_reason": null, "bank_charge_id": null, "attempts": 1,
            "refunded_amount": 0, "created_at": "2026-01-01T00:00:00Z", "updated_at": "2026-01-01T00:00:00Z",
            "merchant_id": "m", "idempotency_key": "k", "reconcile_after": null
        }))
        .unwrap_or_else(|e| panic!("{e}"))
    }

    #[test]
    fn a_commit_writes_only_over_the_version_it_was_derived_from() {
        let next = payment(4);
        let commit = Commit { payment: &next, record: RecordChange::Keep, events: &[] };
        assert_eq!(decide_commit(None, Some(3), &commit, 0).outcome, Committed::Written);
        assert_eq!(decide_commit(None, Some(4), &commit, 0).outcome, Committed::Conflict(None), "a newer one won");
        assert_eq!(decide_commit(None, Some(2), &commit, 0).outcome, Committed::Conflict(None));
        assert!(decide_commit(None, None, &commit, 0).write_payment, "a lost payment is written back");
    }

    #[test]
    fn a_finish_writes_its_answer_even_over_a_lost_record_but_never_over_another_resource() {
        let next = payment(2);
        let response = StoredResponse { status: 201, body: "{}".into() };
        let finish = RecordChange::Finish {
            key: "k",
            resource_id: "pay_1",
            fingerprint: Some("fp-new"),
            response: &response,
            retention: Duration::from_secs(10),
        };
        let commit = Commit { payment: &next, record: finish, events: &[] };
        let ours = record("pay_1", RecordState::InFlight { owner: "o".into(), lease_until_ms: 5_000 });
        let plan = decide_commit(Some(&ours), Some(1), &commit, 0);
        assert!(matches!(&plan.record, RecordWrite::Put(r) if r.fingerprint == "fp" && r.is_final()));
        let plan = decide_commit(None, None, &commit, 0);
        assert!(matches!(&plan.record, RecordWrite::Put(r) if r.fingerprint == "fp-new"), "restored");
        let theirs = record("pay_2", RecordState::InFlight { owner: "o".into(), lease_until_ms: 5_000 });
        assert_eq!(decide_commit(Some(&theirs), Some(1), &commit, 0), CommitPlan::nothing(Committed::Superseded));
    }

    #[test]
    fn a_release_never_frees_a_key_under_a_live_lease_and_then_writes_nothing() {
        let next = payment(2);
        let release = RecordChange::Release { key: "k", resource_id: "pay_1", owner: None };
        let commit = Commit { payment: &next, record: release, events: &[] };
        let live = record("pay_1", RecordState::InFlight { owner: "o".into(), lease_until_ms: 5_000 });
        assert_eq!(decide_commit(Some(&live), Some(1), &commit, 0), CommitPlan::nothing(Committed::Refused));
        let plan = decide_commit(Some(&live), Some(1), &commit, 6_000);
        assert_eq!((plan.record, plan.write_payment), (RecordWrite::Delete, true), "once the lease ran out");
        let done = record("pay_1", RecordState::Done { response: StoredResponse { status: 201, body: "{}".into() } });
        assert_eq!(decide_commit(Some(&done), Some(1), &commit, 0).record, RecordWrite::Leave, "a final answer stays");
    }
}
