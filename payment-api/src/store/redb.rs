//! The embedded backend: one redb file. Every change is committed with `Durability::Immediate`
//! (fsynced) before the gateway answers, so an acknowledged payment survives a kill -9 or a power
//! cut.
//!
//! Group commit: changes go to one writer thread, which applies every change waiting for it in
//! one write transaction and fsyncs once for all of them. Changes that arrive during an fsync wait
//! for the next, so under load one fsync serves many payments, and each change is still
//! acknowledged only once it is on disk. Within a batch the changes apply one after another, as
//! separate transactions would; if one of them fails, the batch is abandoned and each change is
//! applied again in its own transaction, so one bad change cannot sink the others. Reads run on
//! tokio's blocking pool.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition, WriteTransaction};
use tokio::sync::{mpsc, oneshot};

use super::outbox::{EventFilter, EventPage, EventPager, LogEntry, Saved, leased, may_save, seq_cursor};
use super::{
    Claim, ClaimRequest, Commit, Committed, IdempotencyRecord, IndexEntry, Pager, PaymentFilter, PaymentPage,
    RecordChange, RecordWrite, StoreError, created_micros, decide_claim, decide_commit, index_moves, now_ms,
};
use crate::model::webhook::{Delivery, Endpoint};
use crate::model::{Payment, StoredEvent};

const RECORDS: TableDefinition<&str, &str> = TableDefinition::new("idempotency_records");
const PAYMENTS: TableDefinition<&str, &str> = TableDefinition::new("payments");
/// `merchant \x1f created µs (20 digits) \x1f id` → ()
const BY_MERCHANT: TableDefinition<&str, ()> = TableDefinition::new("payments_by_merchant");
/// `due ms (20 digits) \x1f id` → ()
const DUE: TableDefinition<&str, ()> = TableDefinition::new("payments_due");
/// id → the payment's due time in ms, or `NOT_DUE`: what `put_payment` needs of the stored
/// payment, without reading its JSON. Payments written before this table have no entry.
const DUE_OF: TableDefinition<&str, i64> = TableDefinition::new("payments_due_of");
const NOT_DUE: i64 = i64::MIN;
/// id → the payment's version, so a commit checks it without reading the payment's JSON.
/// Payments written before this table have no entry; their JSON tells.
const VERSIONS: TableDefinition<&str, u64> = TableDefinition::new("payment_versions");

/// id → the event (`StoredEvent` as JSON).
const EVENTS: TableDefinition<&str, &str> = TableDefinition::new("events");
/// `merchant \x1f type ('' for every type) \x1f event id` → ()
const EVENT_INDEX: TableDefinition<&str, ()> = TableDefinition::new("events_by_merchant");
/// seq → event id: the log, in the order events were written.
const EVENT_LOG: TableDefinition<u64, &str> = TableDefinition::new("event_log");
/// `last_seq` (the log's end) and `fanned_out` (every event up to it is fanned out).
const META: TableDefinition<&str, u64> = TableDefinition::new("meta");
/// `merchant \x1f endpoint id` → the endpoint (JSON).
const ENDPOINTS: TableDefinition<&str, &str> = TableDefinition::new("webhook_endpoints");
/// `event id \x1f endpoint id` → the delivery (JSON).
const DELIVERIES: TableDefinition<&str, &str> = TableDefinition::new("webhook_deliveries");
/// `due ms (20 digits) \x1f event id \x1f endpoint id` → ()
const DELIVERIES_DUE: TableDefinition<&str, ()> = TableDefinition::new("webhook_deliveries_due");

/// The most changes one transaction takes.
const MAX_BATCH: usize = 256;
/// redb's page cache; the default grows to a large share of memory. The OS caches the file too:
/// 4, 8 and 16 MiB gave the same throughput in the bench, and peak RSS of 38, 49 and 62 MiB.
const CACHE_BYTES: usize = 8 * 1024 * 1024;

#[derive(Debug, Clone)]
pub struct RedbStore {
    db: Arc<Database>,
    writer: Arc<Writer>,
}

/// The writer thread's queue. Dropping the last store stops the thread and waits for it, so the
/// file is closed (and can be opened again) once the store is gone.
#[derive(Debug)]
struct Writer {
    jobs: Option<mpsc::UnboundedSender<Box<dyn WriteJob>>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Drop for Writer {
    fn drop(&mut self) {
        self.jobs.take();
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// A change waiting for the writer thread.
trait WriteJob: Send {
    /// Applies the change inside `txn`, keeping its result until the commit is known.
    fn apply(&mut self, txn: &WriteTransaction) -> Result<(), StoreError>;
    /// Hands over the kept result once the transaction committed, or the error.
    fn complete(self: Box<Self>, outcome: Result<(), StoreError>);
}

struct Pending<T, F> {
    work: F,
    staged: Option<T>,
    reply: oneshot::Sender<Result<T, StoreError>>,
}

impl<T, F> WriteJob for Pending<T, F>
where
    T: Send,
    F: Fn(&WriteTransaction) -> Result<T, StoreError> + Send,
{
    fn apply(&mut self, txn: &WriteTransaction) -> Result<(), StoreError> {
        self.staged = Some((self.work)(txn)?);
        Ok(())
    }

    fn complete(self: Box<Self>, outcome: Result<(), StoreError>) {
        let Pending { staged, reply, .. } = *self;
        let result = outcome.and_then(|()| staged.ok_or_else(|| unavailable("the change was not applied")));
        let _ = reply.send(result);
    }
}

/// The writer thread: takes every change waiting, commits them together, answers each.
fn write_changes(db: &Database, mut jobs: mpsc::UnboundedReceiver<Box<dyn WriteJob>>) {
    while let Some(first) = jobs.blocking_recv() {
        let mut batch = vec![first];
        while batch.len() < MAX_BATCH {
            match jobs.try_recv() {
                Ok(job) => batch.push(job),
                Err(_) => break,
            }
        }
        if batch.len() > 1 && commit(db, &mut batch).is_ok() {
            batch.into_iter().for_each(|job| job.complete(Ok(())));
            continue;
        }
        for mut job in batch {
            let outcome = commit(db, std::slice::from_mut(&mut job));
            job.complete(outcome);
        }
    }
}

/// Applies `jobs` in one transaction and commits it; nothing is kept when any of them fails.
fn commit(db: &Database, jobs: &mut [Box<dyn WriteJob>]) -> Result<(), StoreError> {
    let txn = db.begin_write().map_err(unavailable)?;
    for job in jobs.iter_mut() {
        if let Err(error) = job.apply(&txn) {
            let _ = txn.abort();
            return Err(error);
        }
    }
    txn.commit().map_err(unavailable)
}

fn unavailable(error: impl std::fmt::Display) -> StoreError {
    StoreError::Unavailable(error.to_string())
}

fn corrupt(error: impl std::fmt::Display) -> StoreError {
    StoreError::Corrupt(error.to_string())
}

fn merchant_key(merchant: &str, micros: i64, id: &str) -> String {
    // Offset so that negative times still sort correctly as text.
    format!("{merchant}\x1f{:020}\x1f{id}", (micros as i128 - i64::MIN as i128) as u128)
}

fn due_key(due_ms: i64, id: &str) -> String {
    format!("{:020}\x1f{id}", due_ms.max(0))
}

/// Writes a payment and keeps both indexes in step ([`index_moves`]), inside the caller's
/// transaction.
fn put_payment(txn: &WriteTransaction, payment: &Payment) -> Result<(), StoreError> {
    let json = serde_json::to_string(payment).map_err(corrupt)?;
    let mut due_of = txn.open_table(DUE_OF).map_err(unavailable)?;
    let known = due_of.get(payment.id.as_str()).map_err(unavailable)?.map(|due| due.value());
    let mut payments = txn.open_table(PAYMENTS).map_err(unavailable)?;
    // Where the stored payment stands: from the small table when it has the payment, else from
    // the payment itself (written before the table existed).
    let old = match known {
        Some(due) => Some(IndexEntry { created: created_micros(payment), due: (due != NOT_DUE).then_some(due) }),
        None => match payments.get(payment.id.as_str()).map_err(unavailable)? {
            Some(raw) => Some(IndexEntry::of(&serde_json::from_str::<Payment>(raw.value()).map_err(corrupt)?)),
            None => None,
        },
    };
    payments.insert(payment.id.as_str(), json.as_str()).map_err(unavailable)?;
    let new = IndexEntry::of(payment);
    let moves = index_moves(old, new);
    if moves.unschedule.is_some() || moves.schedule.is_some() {
        let mut due = txn.open_table(DUE).map_err(unavailable)?;
        if let Some(old_due) = moves.unschedule {
            due.remove(due_key(old_due, &payment.id).as_str()).map_err(unavailable)?;
        }
        if let Some(new_due) = moves.schedule {
            due.insert(due_key(new_due, &payment.id).as_str(), ()).map_err(unavailable)?;
        }
    }
    if known != Some(new.due.unwrap_or(NOT_DUE)) {
        due_of.insert(payment.id.as_str(), new.due.unwrap_or(NOT_DUE)).map_err(unavailable)?;
    }
    if let Some(created) = moves.list {
        let mut by_merchant = txn.open_table(BY_MERCHANT).map_err(unavailable)?;
        let key = merchant_key(&payment.merchant_id, created, &payment.id);
        by_merchant.insert(key.as_str(), ()).map_err(unavailable)?;
    }
    txn.open_table(VERSIONS).map_err(unavailable)?.insert(payment.id.as_str(), payment.version).map_err(unavailable)?;
    Ok(())
}

fn event_index_key(merchant: &str, kind: &str, id: &str) -> String {
    format!("{merchant}\x1f{kind}\x1f{id}")
}

/// Appends events to the log and indexes them, inside the caller's transaction.
fn put_events(txn: &WriteTransaction, events: &[StoredEvent]) -> Result<(), StoreError> {
    if events.is_empty() {
        return Ok(());
    }
    let mut meta = txn.open_table(META).map_err(unavailable)?;
    let mut seq = meta.get("last_seq").map_err(unavailable)?.map_or(0, |v| v.value());
    let mut table = txn.open_table(EVENTS).map_err(unavailable)?;
    let mut index = txn.open_table(EVENT_INDEX).map_err(unavailable)?;
    let mut log = txn.open_table(EVENT_LOG).map_err(unavailable)?;
    for event in events {
        seq += 1;
        let json = serde_json::to_string(event).map_err(corrupt)?;
        table.insert(event.id.as_str(), json.as_str()).map_err(unavailable)?;
        index.insert(event_index_key(&event.merchant_id, "", &event.id).as_str(), ()).map_err(unavailable)?;
        index
            .insert(event_index_key(&event.merchant_id, event.kind.as_str(), &event.id).as_str(), ())
            .map_err(unavailable)?;
        log.insert(seq, event.id.as_str()).map_err(unavailable)?;
    }
    meta.insert("last_seq", seq).map_err(unavailable)?;
    Ok(())
}

fn delivery_key(event_id: &str, endpoint_id: &str) -> String {
    format!("{event_id}\x1f{endpoint_id}")
}

fn delivery_due_key(due_ms: i64, event_id: &str, endpoint_id: &str) -> String {
    format!("{:020}\x1f{event_id}\x1f{endpoint_id}", due_ms.max(0))
}

fn read_delivery(txn: &WriteTransaction, event_id: &str, endpoint_id: &str) -> Result<Option<Delivery>, StoreError> {
    let table = txn.open_table(DELIVERIES).map_err(unavailable)?;
    let raw = table.get(delivery_key(event_id, endpoint_id).as_str()).map_err(unavailable)?;
    raw.map(|raw| serde_json::from_str(raw.value()).map_err(corrupt)).transpose()
}

/// Writes a delivery over `old` (the stored one), keeping the due index in step.
fn put_delivery(txn: &WriteTransaction, old: Option<&Delivery>, delivery: &Delivery) -> Result<(), StoreError> {
    let mut due = txn.open_table(DELIVERIES_DUE).map_err(unavailable)?;
    if let Some(at) = old.and_then(|d| d.due_ms) {
        due.remove(delivery_due_key(at, &delivery.event_id, &delivery.endpoint_id).as_str()).map_err(unavailable)?;
    }
    if let Some(at) = delivery.due_ms {
        due.insert(delivery_due_key(at, &delivery.event_id, &delivery.endpoint_id).as_str(), ())
            .map_err(unavailable)?;
    }
    let json = serde_json::to_string(delivery).map_err(corrupt)?;
    let mut table = txn.open_table(DELIVERIES).map_err(unavailable)?;
    table
        .insert(delivery_key(&delivery.event_id, &delivery.endpoint_id).as_str(), json.as_str())
        .map_err(unavailable)?;
    Ok(())
}

/// The log's entries after seq `after`, oldest first.
fn log_entries(txn: &redb::ReadTransaction, after: u64, limit: usize) -> Result<Vec<LogEntry>, StoreError> {
    let log = txn.open_table(EVENT_LOG).map_err(unavailable)?;
    let events = txn.open_table(EVENTS).map_err(unavailable)?;
    let mut found = Vec::new();
    for entry in log.range(after.saturating_add(1)..).map_err(unavailable)? {
        if found.len() == limit {
            break;
        }
        let (seq, id) = entry.map_err(unavailable)?;
        if let Some(raw) = events.get(id.value()).map_err(unavailable)? {
            match serde_json::from_str(raw.value()) {
                Ok(event) => found.push(LogEntry { cursor: seq_cursor(seq.value()), event }),
                // Written by a newer version (then downgraded): skipped, not a stall of the log.
                Err(error) => tracing::warn!(%error, seq = seq.value(), "skipping an event this version cannot read"),
            }
        }
    }
    Ok(found)
}

fn meta_value(txn: &redb::ReadTransaction, name: &str) -> Result<u64, StoreError> {
    let meta = txn.open_table(META).map_err(unavailable)?;
    Ok(meta.get(name).map_err(unavailable)?.map_or(0, |v| v.value()))
}

fn read_payment(txn: &WriteTransaction, id: &str) -> Result<Option<Payment>, StoreError> {
    let payments = txn.open_table(PAYMENTS).map_err(unavailable)?;
    let raw = payments.get(id).map_err(unavailable)?;
    raw.map(|raw| serde_json::from_str(raw.value()).map_err(corrupt)).transpose()
}

/// The stored payment's version, from the small table when it has the payment.
fn stored_version(txn: &WriteTransaction, id: &str) -> Result<Option<u64>, StoreError> {
    let known = txn.open_table(VERSIONS).map_err(unavailable)?.get(id).map_err(unavailable)?.map(|v| v.value());
    match known {
        Some(version) => Ok(Some(version)),
        None => Ok(read_payment(txn, id)?.map(|p| p.version)),
    }
}

fn read_record(txn: &WriteTransaction, key: &str) -> Result<Option<IdempotencyRecord>, StoreError> {
    let records = txn.open_table(RECORDS).map_err(unavailable)?;
    let raw = records.get(key).map_err(unavailable)?;
    raw.map(|raw| serde_json::from_str(raw.value()).map_err(corrupt)).transpose()
}

fn write_record(txn: &WriteTransaction, key: &str, record: &IdempotencyRecord) -> Result<(), StoreError> {
    let json = serde_json::to_string(record).map_err(corrupt)?;
    txn.open_table(RECORDS).map_err(unavailable)?.insert(key, json.as_str()).map_err(unavailable)?;
    Ok(())
}

impl RedbStore {
    pub async fn open(path: &str) -> Result<Self, StoreError> {
        if path.is_empty() {
            return Err(StoreError::InvalidUrl("redb: needs a file path, as in redb:data/payments.redb".into()));
        }
        let path = path.to_owned();
        let db = tokio::task::spawn_blocking(move || {
            if let Some(dir) = Path::new(&path).parent().filter(|d| !d.as_os_str().is_empty()) {
                std::fs::create_dir_all(dir).map_err(unavailable)?;
            }
            let db = redb::Builder::new().set_cache_size(CACHE_BYTES).create(&path).map_err(unavailable)?;
            let txn = db.begin_write().map_err(unavailable)?;
            txn.open_table(RECORDS).map_err(unavailable)?;
            txn.open_table(PAYMENTS).map_err(unavailable)?;
            txn.open_table(BY_MERCHANT).map_err(unavailable)?;
            txn.open_table(DUE).map_err(unavailable)?;
            txn.open_table(DUE_OF).map_err(unavailable)?;
            txn.open_table(VERSIONS).map_err(unavailable)?;
            txn.open_table(EVENTS).map_err(unavailable)?;
            txn.open_table(EVENT_INDEX).map_err(unavailable)?;
            txn.open_table(EVENT_LOG).map_err(unavailable)?;
            txn.open_table(META).map_err(unavailable)?;
            txn.open_table(ENDPOINTS).map_err(unavailable)?;
            txn.open_table(DELIVERIES).map_err(unavailable)?;
            txn.open_table(DELIVERIES_DUE).map_err(unavailable)?;
            txn.commit().map_err(unavailable)?;
            Ok(Arc::new(db))
        })
        .await
        .map_err(unavailable)??;
        let (writer, jobs) = mpsc::unbounded_channel();
        let db_for_writer = Arc::clone(&db);
        let thread = std::thread::Builder::new()
            .name("redb-writer".into())
            .spawn(move || write_changes(&db_for_writer, jobs))
            .map_err(unavailable)?;
        Ok(Self { db, writer: Arc::new(Writer { jobs: Some(writer), thread: Some(thread) }) })
    }

    /// Has the writer thread apply `work` and answers once it is durably committed. `work` may run
    /// twice (see the module docs), so it must not move what it captured.
    async fn write<T: Send + 'static>(
        &self,
        work: impl Fn(&WriteTransaction) -> Result<T, StoreError> + Send + 'static,
    ) -> Result<T, StoreError> {
        let (reply, answer) = oneshot::channel();
        let job = Box::new(Pending { work, staged: None, reply });
        let jobs = self.writer.jobs.as_ref().ok_or_else(|| unavailable("the store is closing"))?;
        jobs.send(job).map_err(|_| unavailable("the store's writer thread stopped"))?;
        answer.await.map_err(|_| unavailable("the store's writer thread stopped"))?
    }

    async fn read<T: Send + 'static>(
        &self,
        work: impl FnOnce(&redb::ReadTransaction) -> Result<T, StoreError> + Send + 'static,
    ) -> Result<T, StoreError> {
        let db = Arc::clone(&self.db);
        tokio::task::spawn_blocking(move || {
            let txn = db.begin_read().map_err(unavailable)?;
            work(&txn)
        })
        .await
        .map_err(unavailable)?
    }

    pub async fn claim(&self, request: ClaimRequest<'_>) -> Result<Claim, StoreError> {
        let key = request.key.to_owned();
        let fingerprint = request.fingerprint.to_owned();
        let owner = request.owner.to_owned();
        let resource_id = request.resource_id.to_owned();
        let (lease, retention) = (request.lease, request.retention);
        let insert = request.insert.cloned();
        let events = request.events.to_vec();
        self.write(move |txn| {
            let request = ClaimRequest {
                key: &key,
                fingerprint: &fingerprint,
                owner: &owner,
                resource_id: &resource_id,
                lease,
                retention,
                insert: insert.as_ref(),
                events: &events,
            };
            let existing = read_record(txn, &key)?;
            let (claim, record) = decide_claim(existing.as_ref(), &request, now_ms());
            if let Some(record) = record {
                write_record(txn, &key, &record)?;
            }
            if claim == Claim::Fresh
                && let Some(payment) = &insert
            {
                put_payment(txn, payment)?;
                put_events(txn, &events)?;
            }
            Ok(claim)
        })
        .await
    }

    pub async fn commit(&self, commit: Commit<'_>) -> Result<Committed, StoreError> {
        let payment = commit.payment.clone();
        let record_change = OwnedRecordChange::of(&commit.record);
        let events = commit.events.to_vec();
        self.write(move |txn| {
            let commit = Commit { payment: &payment, record: record_change.borrow(), events: &events };
            let record = match commit.record.key() {
                Some(key) => read_record(txn, key)?,
                None => None,
            };
            let plan = decide_commit(record.as_ref(), stored_version(txn, &payment.id)?, &commit, now_ms());
            if let Committed::Conflict(_) = plan.outcome {
                return Ok(Committed::Conflict(read_payment(txn, &payment.id)?.map(Box::new)));
            }
            match (&plan.record, commit.record) {
                (RecordWrite::Put(record), RecordChange::Finish { key, .. }) => write_record(txn, key, record)?,
                (RecordWrite::Delete, RecordChange::Release { key, .. }) => {
                    txn.open_table(RECORDS).map_err(unavailable)?.remove(key).map_err(unavailable)?;
                }
                _ => {}
            }
            if plan.write_payment {
                put_payment(txn, &payment)?;
                put_events(txn, &events)?;
            }
            Ok(plan.outcome)
        })
        .await
    }

    pub async fn get_payment(&self, id: &str) -> Result<Option<Payment>, StoreError> {
        let id = id.to_owned();
        self.read(move |txn| {
            let payments = txn.open_table(PAYMENTS).map_err(unavailable)?;
            let raw = payments.get(id.as_str()).map_err(unavailable)?;
            raw.map(|raw| serde_json::from_str(raw.value()).map_err(corrupt)).transpose()
        })
        .await
    }

    pub async fn list_payments(&self, merchant: &str, filter: &PaymentFilter) -> Result<PaymentPage, StoreError> {
        let (merchant, filter) = (merchant.to_owned(), filter.clone());
        self.read(move |txn| {
            let payments = txn.open_table(PAYMENTS).map_err(unavailable)?;
            let load = |id: &str| -> Result<Option<Payment>, StoreError> {
                let raw = payments.get(id).map_err(unavailable)?;
                raw.map(|raw| serde_json::from_str(raw.value()).map_err(corrupt)).transpose()
            };
            let cursor = match &filter.starting_after {
                Some(id) => load(id)?,
                None => None,
            };
            let Some((mut pager, from)) = Pager::start(&merchant, &filter, cursor.as_ref()) else {
                return Ok(PaymentPage::default());
            };
            let lower = format!("{merchant}\x1f");
            let upper = match from {
                Some(created) => merchant_key(&merchant, created.saturating_add(1), ""),
                None => format!("{merchant}\x1f\x7f"),
            };
            let index = txn.open_table(BY_MERCHANT).map_err(unavailable)?;
            for entry in index.range(lower.as_str()..upper.as_str()).map_err(unavailable)?.rev() {
                let (key, _) = entry.map_err(unavailable)?;
                let Some(id) = key.value().rsplit('\x1f').next().map(str::to_owned) else { continue };
                let Some(payment) = load(&id)? else { continue };
                if pager.offer(payment).is_break() {
                    break;
                }
            }
            Ok(pager.finish())
        })
        .await
    }

    pub async fn due_payments(&self, now_ms: i64, limit: usize) -> Result<Vec<Payment>, StoreError> {
        self.read(move |txn| {
            let due = txn.open_table(DUE).map_err(unavailable)?;
            let payments = txn.open_table(PAYMENTS).map_err(unavailable)?;
            let upper = due_key(now_ms.saturating_add(1), "");
            let mut found = Vec::new();
            for entry in due.range(..upper.as_str()).map_err(unavailable)? {
                if found.len() == limit {
                    break;
                }
                let (key, _) = entry.map_err(unavailable)?;
                let Some(id) = key.value().split('\x1f').nth(1).map(str::to_owned) else { continue };
                if let Some(raw) = payments.get(id.as_str()).map_err(unavailable)? {
                    found.push(serde_json::from_str(raw.value()).map_err(corrupt)?);
                }
            }
            Ok(found)
        })
        .await
    }

    pub async fn record(&self, key: &str) -> Result<Option<IdempotencyRecord>, StoreError> {
        let key = key.to_owned();
        self.read(move |txn| {
            let records = txn.open_table(RECORDS).map_err(unavailable)?;
            let raw = records.get(key.as_str()).map_err(unavailable)?;
            let record: Option<IdempotencyRecord> =
                raw.map(|raw| serde_json::from_str(raw.value()).map_err(corrupt)).transpose()?;
            Ok(record.filter(|r| r.expires_at_ms > now_ms()))
        })
        .await
    }

    pub async fn ping(&self) -> Result<(), StoreError> {
        self.read(|txn| txn.open_table(RECORDS).map(drop).map_err(unavailable)).await
    }

    pub async fn event(&self, id: &str) -> Result<Option<StoredEvent>, StoreError> {
        let id = id.to_owned();
        self.read(move |txn| {
            let events = txn.open_table(EVENTS).map_err(unavailable)?;
            let raw = events.get(id.as_str()).map_err(unavailable)?;
            raw.map(|raw| serde_json::from_str(raw.value()).map_err(corrupt)).transpose()
        })
        .await
    }

    pub async fn events(&self, merchant: &str, filter: &EventFilter) -> Result<EventPage, StoreError> {
        let (merchant, filter) = (merchant.to_owned(), filter.clone());
        self.read(move |txn| {
            let kind = filter.kind.map_or("", |k| k.as_str());
            let lower = event_index_key(&merchant, kind, "");
            let upper = event_index_key(&merchant, kind, filter.starting_after.as_deref().unwrap_or("\x7f"));
            let index = txn.open_table(EVENT_INDEX).map_err(unavailable)?;
            let events = txn.open_table(EVENTS).map_err(unavailable)?;
            let mut pager = EventPager::new(filter.limit);
            for entry in index.range(lower.as_str()..upper.as_str()).map_err(unavailable)?.rev() {
                let (key, _) = entry.map_err(unavailable)?;
                let Some(id) = key.value().rsplit('\x1f').next().map(str::to_owned) else { continue };
                let Some(raw) = events.get(id.as_str()).map_err(unavailable)? else { continue };
                if pager.offer(serde_json::from_str(raw.value()).map_err(corrupt)?).is_break() {
                    break;
                }
            }
            Ok(pager.finish())
        })
        .await
    }

    pub async fn log_after(&self, cursor: Option<&str>, limit: usize) -> Result<Vec<LogEntry>, StoreError> {
        let after = cursor.and_then(|c| c.parse::<u64>().ok()).unwrap_or(0);
        self.read(move |txn| log_entries(txn, after, limit)).await
    }

    pub async fn log_end(&self) -> Result<String, StoreError> {
        self.read(|txn| meta_value(txn, "last_seq").map(seq_cursor)).await
    }

    pub async fn outbox(&self, limit: usize) -> Result<Vec<LogEntry>, StoreError> {
        self.read(move |txn| log_entries(txn, meta_value(txn, "fanned_out")?, limit)).await
    }

    pub async fn fan_out(&self, ack: Option<&str>, deliveries: &[Delivery]) -> Result<(), StoreError> {
        let seq = ack.map(str::parse::<u64>).transpose().map_err(corrupt)?.unwrap_or(0);
        let deliveries = deliveries.to_vec();
        self.write(move |txn| {
            for delivery in &deliveries {
                if read_delivery(txn, &delivery.event_id, &delivery.endpoint_id)?.is_none() {
                    put_delivery(txn, None, delivery)?;
                }
            }
            let mut meta = txn.open_table(META).map_err(unavailable)?;
            let fanned = meta.get("fanned_out").map_err(unavailable)?.map_or(0, |v| v.value());
            meta.insert("fanned_out", fanned.max(seq)).map_err(unavailable)?;
            Ok(())
        })
        .await
    }

    pub async fn create_endpoint(&self, endpoint: &Endpoint) -> Result<Endpoint, StoreError> {
        let endpoint = endpoint.clone();
        self.write(move |txn| {
            let key = format!("{}\x1f{}", endpoint.merchant_id, endpoint.id);
            let mut table = txn.open_table(ENDPOINTS).map_err(unavailable)?;
            if let Some(raw) = table.get(key.as_str()).map_err(unavailable)? {
                return serde_json::from_str(raw.value()).map_err(corrupt);
            }
            let json = serde_json::to_string(&endpoint).map_err(corrupt)?;
            table.insert(key.as_str(), json.as_str()).map_err(unavailable)?;
            Ok(endpoint.clone())
        })
        .await
    }

    pub async fn save_endpoint(&self, endpoint: &Endpoint) -> Result<(), StoreError> {
        let endpoint = endpoint.clone();
        self.write(move |txn| {
            let key = format!("{}\x1f{}", endpoint.merchant_id, endpoint.id);
            let json = serde_json::to_string(&endpoint).map_err(corrupt)?;
            txn.open_table(ENDPOINTS).map_err(unavailable)?.insert(key.as_str(), json.as_str()).map_err(unavailable)?;
            Ok(())
        })
        .await
    }

    pub async fn endpoints(&self, merchant: &str) -> Result<Vec<Endpoint>, StoreError> {
        let (prefix, upper) = (format!("{merchant}\x1f"), format!("{merchant}\x1f\x7f"));
        self.read(move |txn| {
            let table = txn.open_table(ENDPOINTS).map_err(unavailable)?;
            let mut found = Vec::new();
            for entry in table.range(prefix.as_str()..upper.as_str()).map_err(unavailable)? {
                let (_, raw) = entry.map_err(unavailable)?;
                found.push(serde_json::from_str(raw.value()).map_err(corrupt)?);
            }
            Ok(found)
        })
        .await
    }

    pub async fn endpoint(&self, merchant: &str, id: &str) -> Result<Option<Endpoint>, StoreError> {
        let key = format!("{merchant}\x1f{id}");
        self.read(move |txn| {
            let table = txn.open_table(ENDPOINTS).map_err(unavailable)?;
            let raw = table.get(key.as_str()).map_err(unavailable)?;
            raw.map(|raw| serde_json::from_str(raw.value()).map_err(corrupt)).transpose()
        })
        .await
    }

    pub async fn deliveries(&self, event_id: &str) -> Result<Vec<Delivery>, StoreError> {
        let (lower, upper) = (format!("{event_id}\x1f"), format!("{event_id}\x1f\x7f"));
        self.read(move |txn| {
            let table = txn.open_table(DELIVERIES).map_err(unavailable)?;
            let mut found = Vec::new();
            for entry in table.range(lower.as_str()..upper.as_str()).map_err(unavailable)? {
                let (_, raw) = entry.map_err(unavailable)?;
                found.push(serde_json::from_str(raw.value()).map_err(corrupt)?);
            }
            Ok(found)
        })
        .await
    }

    pub async fn take_due_deliveries(
        &self,
        now_ms: i64,
        lease_ms: i64,
        limit: usize,
    ) -> Result<Vec<Delivery>, StoreError> {
        // Asked several times a second: a read finds out whether anything is due, so that an idle
        // gateway does not commit (and fsync) a write transaction each time.
        let upper = delivery_due_key(now_ms.saturating_add(1), "", "");
        let any_due = self
            .read(move |txn| {
                let table = txn.open_table(DELIVERIES_DUE).map_err(unavailable)?;
                Ok(table.range(..upper.as_str()).map_err(unavailable)?.next().is_some())
            })
            .await?;
        if !any_due {
            return Ok(Vec::new());
        }
        self.write(move |txn| {
            let upper = delivery_due_key(now_ms.saturating_add(1), "", "");
            let due: Vec<String> = {
                let table = txn.open_table(DELIVERIES_DUE).map_err(unavailable)?;
                let mut keys = Vec::new();
                for entry in table.range(..upper.as_str()).map_err(unavailable)?.take(limit) {
                    keys.push(entry.map_err(unavailable)?.0.value().to_owned());
                }
                keys
            };
            let mut taken = Vec::with_capacity(due.len());
            for key in due {
                let mut parts = key.split('\x1f').skip(1);
                let (Some(event_id), Some(endpoint_id)) = (parts.next(), parts.next()) else { continue };
                let Some(delivery) = read_delivery(txn, event_id, endpoint_id)? else {
                    txn.open_table(DELIVERIES_DUE).map_err(unavailable)?.remove(key.as_str()).map_err(unavailable)?;
                    continue;
                };
                let next = leased(&delivery, now_ms + lease_ms);
                put_delivery(txn, Some(&delivery), &next)?;
                taken.push(next);
            }
            Ok(taken)
        })
        .await
    }

    pub async fn save_delivery(&self, delivery: &Delivery) -> Result<Saved, StoreError> {
        let delivery = delivery.clone();
        self.write(move |txn| {
            let stored = read_delivery(txn, &delivery.event_id, &delivery.endpoint_id)?;
            if !may_save(stored.as_ref().map(|d| d.version), &delivery) {
                return Ok(Saved::Conflict(stored.map(Box::new)));
            }
            put_delivery(txn, stored.as_ref(), &delivery)?;
            Ok(Saved::Written)
        })
        .await
    }

    /// Forgets events created before `before_ms` (oldest first, at most a few thousand a call),
    /// with their index entries and deliveries.
    pub async fn prune(&self, before_ms: i64) -> Result<usize, StoreError> {
        self.write(move |txn| {
            let mut pruned = 0;
            let oldest: Vec<(u64, String)> = {
                let log = txn.open_table(EVENT_LOG).map_err(unavailable)?;
                let mut found = Vec::new();
                for entry in log.iter().map_err(unavailable)?.take(4_096) {
                    let (seq, id) = entry.map_err(unavailable)?;
                    found.push((seq.value(), id.value().to_owned()));
                }
                found
            };
            for (seq, id) in oldest {
                let event: Option<StoredEvent> = {
                    let events = txn.open_table(EVENTS).map_err(unavailable)?;
                    let raw = events.get(id.as_str()).map_err(unavailable)?;
                    raw.map(|raw| serde_json::from_str(raw.value()).map_err(corrupt)).transpose()?
                };
                if event.as_ref().is_some_and(|e| e.created_ms >= before_ms) {
                    break;
                }
                txn.open_table(EVENT_LOG).map_err(unavailable)?.remove(seq).map_err(unavailable)?;
                if let Some(event) = event {
                    txn.open_table(EVENTS).map_err(unavailable)?.remove(id.as_str()).map_err(unavailable)?;
                    let mut index = txn.open_table(EVENT_INDEX).map_err(unavailable)?;
                    index.remove(event_index_key(&event.merchant_id, "", &id).as_str()).map_err(unavailable)?;
                    index
                        .remove(event_index_key(&event.merchant_id, event.kind.as_str(), &id).as_str())
                        .map_err(unavailable)?;
                }
                let gone: Vec<Delivery> = {
                    let table = txn.open_table(DELIVERIES).map_err(unavailable)?;
                    let (lower, upper) = (format!("{id}\x1f"), format!("{id}\x1f\x7f"));
                    let mut found = Vec::new();
                    for entry in table.range(lower.as_str()..upper.as_str()).map_err(unavailable)? {
                        found.push(serde_json::from_str(entry.map_err(unavailable)?.1.value()).map_err(corrupt)?);
                    }
                    found
                };
                for delivery in gone {
                    if let Some(at) = delivery.due_ms {
                        let key = delivery_due_key(at, &id, &delivery.endpoint_id);
                        txn.open_table(DELIVERIES_DUE)
                            .map_err(unavailable)?
                            .remove(key.as_str())
                            .map_err(unavailable)?;
                    }
                    let key = delivery_key(&id, &delivery.endpoint_id);
                    txn.open_table(DELIVERIES).map_err(unavailable)?.remove(key.as_str()).map_err(unavailable)?;
                }
                pruned += 1;
            }
            Ok(pruned)
        })
        .await
    }
}

/// A [`RecordChange`] that the writer thread can own.
enum OwnedRecordChange {
    Keep,
    Finish {
        key: String,
        resource_id: String,
        fingerprint: Option<String>,
        response: super::StoredResponse,
        retention: Duration,
    },
    Release {
        key: String,
        resource_id: String,
        owner: Option<String>,
    },
}

impl OwnedRecordChange {
    fn of(change: &RecordChange<'_>) -> Self {
        match *change {
            RecordChange::Keep => Self::Keep,
            RecordChange::Finish { key, resource_id, fingerprint, response, retention } => Self::Finish {
                key: key.to_owned(),
                resource_id: resource_id.to_owned(),
                fingerprint: fingerprint.map(str::to_owned),
                response: response.clone(),
                retention,
            },
            RecordChange::Release { key, resource_id, owner } => Self::Release {
                key: key.to_owned(),
                resource_id: resource_id.to_owned(),
                owner: owner.map(str::to_owned),
            },
        }
    }

    fn borrow(&self) -> RecordChange<'_> {
        match self {
            Self::Keep => RecordChange::Keep,
            Self::Finish { key, resource_id, fingerprint, response, retention } => RecordChange::Finish {
                key,
                resource_id,
                fingerprint: fingerprint.as_deref(),
                response,
                retention: *retention,
            },
            Self::Release { key, resource_id, owner } => {
                RecordChange::Release { key, resource_id, owner: owner.as_deref() }
            }
        }
    }
}
