//! Where idempotency records and payments live, behind one contract with three backends:
//! `memory` (tests), `redb:<path>` (embedded, durable: every commit is fsynced before the client
//! is answered) and `redis://` (shared by many gateway instances; every multi-key step is one
//! Lua script, so it is atomic).
//!
//! The idempotency protocol:
//! - [`Store::claim`] atomically creates the key's record (in flight, leased to this request) and
//!   the new payment, or reports what is already there: a finished answer to replay, a different
//!   request (mismatch), a live lease (in use), or an expired lease, which the caller takes over
//!   to finish the crashed holder's payment under the same payment id (and so the same bank key).
//! - [`Store::finish`] stores the answer to replay and the updated payment together.
//! - [`Store::release`] deletes the record when the bank surely did not charge, so the client
//!   may retry with the same key, and stores the failed payment.

pub mod memory;
pub mod redb;
pub mod redis;

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

use crate::model::{Payment, PaymentStatus, Refund};

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

/// What [`Store::release`] decides about an existing record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Release {
    /// Delete the record and store the payment.
    Delete,
    /// The record is not this resource's (or is gone): store the payment, leave the record.
    Keep,
    /// A live request holds the key (a takeover after a crash): change nothing; it will finish.
    Refuse,
}

/// The release rule, shared by the backends that run it in Rust (Redis runs it in Lua): a record
/// is deleted only by the request holding its lease, once its lease has expired, or when it holds
/// a stored 202; never from under a live request, which would let a retry charge a second time.
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

/// The claim rules, shared by the backends that run them in Rust (Redis runs the same rules in
/// Lua). Returns the answer and, when the record must change, its new value.
pub fn decide_claim(
    existing: Option<&IdempotencyRecord>,
    request: &ClaimRequest<'_>,
    now_ms: i64,
) -> (Claim, Option<IdempotencyRecord>) {
    let lease_until_ms = now_ms + request.lease.as_millis() as i64;
    let in_flight = RecordState::InFlight { owner: request.owner.to_owned(), lease_until_ms };
    match existing.filter(|record| record.expires_at_ms > now_ms) {
        None => {
            let record = IdempotencyRecord {
                fingerprint: request.fingerprint.to_owned(),
                resource_id: request.resource_id.to_owned(),
                state: in_flight,
                expires_at_ms: now_ms + request.retention.as_millis() as i64,
            };
            (Claim::Fresh, Some(record))
        }
        Some(record) if record.fingerprint != request.fingerprint => (Claim::Mismatch, None),
        Some(IdempotencyRecord { state: RecordState::Done { response }, .. }) => {
            (Claim::Replay(response.clone()), None)
        }
        Some(IdempotencyRecord { state: RecordState::InFlight { lease_until_ms: until, .. }, .. })
            if *until > now_ms =>
        {
            (Claim::InUse { retry_after: Duration::from_millis((*until - now_ms) as u64) }, None)
        }
        Some(record) => {
            let taken = IdempotencyRecord { state: in_flight, ..record.clone() };
            (Claim::TakeOver { resource_id: record.resource_id.clone() }, Some(taken))
        }
    }
}

/// Sort key of a payment in its merchant's list: creation time in microseconds.
pub fn created_micros(payment: &Payment) -> i64 {
    payment.created_at.timestamp_micros()
}

/// When a processing payment is due for the reconciler, in milliseconds since the epoch.
pub fn due_ms(payment: &Payment) -> Option<i64> {
    (payment.status == PaymentStatus::Processing).then(|| payment.reconcile_after.map_or(0, |at| at.timestamp_millis()))
}

fn matches(payment: &Payment, filter: &PaymentFilter) -> bool {
    filter.order_id.as_ref().is_none_or(|order| payment.order_id.as_ref() == Some(order))
        && filter.status.is_none_or(|status| payment.status == status)
}

/// The configured backend.
#[derive(Debug, Clone)]
pub enum Store {
    Memory(memory::MemoryStore),
    Redb(redb::RedbStore),
    Redis(redis::RedisStore),
}

impl Store {
    /// Opens `memory`, `redb:<path>` or `redis://host:port/db`.
    pub async fn open(location: &str) -> Result<Self, StoreError> {
        if location == "memory" {
            Ok(Store::Memory(memory::MemoryStore::default()))
        } else if let Some(path) = location.strip_prefix("redb:") {
            Ok(Store::Redb(redb::RedbStore::open(path).await?))
        } else if location.starts_with("redis://") || location.starts_with("rediss://") {
            Ok(Store::Redis(redis::RedisStore::connect(location).await?))
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

    /// Stores the answer under `key` (if the record still belongs to `resource_id`) and the payment.
    pub async fn finish(
        &self,
        key: &str,
        resource_id: &str,
        response: &StoredResponse,
        retention: Duration,
        payment: Option<&Payment>,
    ) -> Result<(), StoreError> {
        match self {
            Store::Memory(s) => s.finish(key, resource_id, response, retention, payment),
            Store::Redb(s) => s.finish(key, resource_id, response, retention, payment).await,
            Store::Redis(s) => s.finish(key, resource_id, response, retention, payment).await,
        }
    }

    /// Frees `key` when the bank surely did not charge, and stores the (failed) payment, following
    /// [`decide_release`]: `owner` is the lease holder asking (`None` for the reconciler). Returns
    /// false, changing nothing, when a live request holds the key.
    pub async fn release(
        &self,
        key: &str,
        resource_id: &str,
        owner: Option<&str>,
        payment: Option<&Payment>,
    ) -> Result<bool, StoreError> {
        match self {
            Store::Memory(s) => s.release(key, resource_id, owner, payment),
            Store::Redb(s) => s.release(key, resource_id, owner, payment).await,
            Store::Redis(s) => s.release(key, resource_id, owner, payment).await,
        }
    }

    pub async fn put_payment(&self, payment: &Payment) -> Result<(), StoreError> {
        match self {
            Store::Memory(s) => s.put_payment(payment),
            Store::Redb(s) => s.put_payment(payment).await,
            Store::Redis(s) => s.put_payment(payment).await,
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

    /// Processing payments whose `reconcile_after` has passed, oldest due first.
    pub async fn due_payments(&self, now_ms: i64, limit: usize) -> Result<Vec<Payment>, StoreError> {
        match self {
            Store::Memory(s) => Ok(s.due_payments(now_ms, limit)),
            Store::Redb(s) => s.due_payments(now_ms, limit).await,
            Store::Redis(s) => s.due_payments(now_ms, limit).await,
        }
    }

    /// Adds a refund to a payment atomically (once per refund id); returns the updated payment.
    pub async fn apply_refund(&self, payment_id: &str, refund: &Refund) -> Result<Option<Payment>, StoreError> {
        match self {
            Store::Memory(s) => Ok(s.apply_refund(payment_id, refund)),
            Store::Redb(s) => s.apply_refund(payment_id, refund).await,
            Store::Redis(s) => s.apply_refund(payment_id, refund).await,
        }
    }

    /// Reads the record under a key (for tests and diagnostics).
    pub async fn record(&self, key: &str) -> Result<Option<IdempotencyRecord>, StoreError> {
        match self {
            Store::Memory(s) => Ok(s.record(key)),
            Store::Redb(s) => s.record(key).await,
            Store::Redis(s) => s.record(key).await,
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
