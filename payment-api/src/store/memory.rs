//! The in-memory backend: the reference implementation of the store contract, for tests and demos.
//! Everything sits behind one mutex, so every operation is atomic.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::{Arc, Mutex, MutexGuard};

use super::outbox::{EventFilter, EventPage, EventPager, LogEntry, Saved, leased, may_save, seq_cursor};
use super::{
    Claim, ClaimRequest, Commit, Committed, IdempotencyRecord, IndexEntry, Pager, PaymentFilter, PaymentPage,
    RecordChange, RecordWrite, decide_claim, decide_commit, index_moves, now_ms,
};
use crate::model::webhook::{Delivery, Endpoint};
use crate::model::{Payment, StoredEvent};

#[derive(Debug, Clone, Default)]
pub struct MemoryStore {
    state: Arc<Mutex<State>>,
}

#[derive(Debug, Default)]
struct State {
    records: HashMap<String, IdempotencyRecord>,
    payments: HashMap<String, Payment>,
    /// (merchant, created µs, id)
    by_merchant: BTreeSet<(String, i64, String)>,
    /// (due ms, id)
    due: BTreeSet<(i64, String)>,
    events: HashMap<String, StoredEvent>,
    /// (merchant, type or "" for every type, event id)
    event_index: BTreeSet<(String, &'static str, String)>,
    /// The log, in the order events were written: seq → event id.
    log: BTreeMap<u64, String>,
    /// The last seq given (the log's end, even when pruning emptied it).
    last_seq: u64,
    /// Every event up to this seq is fanned out to its deliveries.
    fanned_out: u64,
    /// (merchant, endpoint id)
    endpoints: BTreeMap<(String, String), Endpoint>,
    /// (event id, endpoint id)
    deliveries: BTreeMap<(String, String), Delivery>,
    /// (due ms, event id, endpoint id)
    deliveries_due: BTreeSet<(i64, String, String)>,
}

impl State {
    fn put_payment(&mut self, payment: &Payment) {
        let old = self.payments.get(&payment.id).map(IndexEntry::of);
        let moves = index_moves(old, IndexEntry::of(payment));
        if let Some(created) = moves.list {
            self.by_merchant.insert((payment.merchant_id.clone(), created, payment.id.clone()));
        }
        if let Some(due) = moves.unschedule {
            self.due.remove(&(due, payment.id.clone()));
        }
        if let Some(due) = moves.schedule {
            self.due.insert((due, payment.id.clone()));
        }
        self.payments.insert(payment.id.clone(), payment.clone());
    }

    fn put_events(&mut self, events: &[StoredEvent]) {
        for event in events {
            self.last_seq += 1;
            self.log.insert(self.last_seq, event.id.clone());
            self.event_index.insert((event.merchant_id.clone(), "", event.id.clone()));
            self.event_index.insert((event.merchant_id.clone(), event.kind.as_str(), event.id.clone()));
            self.events.insert(event.id.clone(), event.clone());
        }
    }

    fn put_delivery(&mut self, delivery: &Delivery) {
        let key = (delivery.event_id.clone(), delivery.endpoint_id.clone());
        if let Some(old) = self.deliveries.get(&key).and_then(|d| d.due_ms) {
            self.deliveries_due.remove(&(old, key.0.clone(), key.1.clone()));
        }
        if let Some(due) = delivery.due_ms {
            self.deliveries_due.insert((due, key.0.clone(), key.1.clone()));
        }
        self.deliveries.insert(key, delivery.clone());
    }
}

impl MemoryStore {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    pub fn claim(&self, request: ClaimRequest<'_>) -> Result<Claim, super::StoreError> {
        let mut state = self.lock();
        let (claim, record) = decide_claim(state.records.get(request.key), &request, now_ms());
        if let Some(record) = record {
            state.records.insert(request.key.to_owned(), record);
        }
        if claim == Claim::Fresh
            && let Some(payment) = request.insert
        {
            state.put_payment(payment);
            state.put_events(request.events);
        }
        Ok(claim)
    }

    pub fn commit(&self, commit: Commit<'_>) -> Result<Committed, super::StoreError> {
        let mut state = self.lock();
        let key = commit.record.key();
        let record = key.and_then(|key| state.records.get(key));
        let stored = state.payments.get(&commit.payment.id);
        let plan = decide_commit(record, stored.map(|p| p.version), &commit, now_ms());
        if let Committed::Conflict(_) = plan.outcome {
            return Ok(Committed::Conflict(stored.cloned().map(Box::new)));
        }
        match (plan.record, commit.record) {
            (RecordWrite::Put(record), RecordChange::Finish { key, .. }) => {
                state.records.insert(key.to_owned(), record);
            }
            (RecordWrite::Delete, RecordChange::Release { key, .. }) => {
                state.records.remove(key);
            }
            _ => {}
        }
        if plan.write_payment {
            state.put_payment(commit.payment);
            state.put_events(commit.events);
        }
        Ok(plan.outcome)
    }

    pub fn get_payment(&self, id: &str) -> Option<Payment> {
        self.lock().payments.get(id).cloned()
    }

    pub fn list_payments(&self, merchant: &str, filter: &PaymentFilter) -> PaymentPage {
        let state = self.lock();
        let cursor = filter.starting_after.as_ref().and_then(|id| state.payments.get(id));
        let Some((mut pager, from)) = Pager::start(merchant, filter, cursor) else { return PaymentPage::default() };
        let lower = (merchant.to_owned(), i64::MIN, String::new());
        let upper = (merchant.to_owned(), from.map_or(i64::MAX, |created| created.saturating_add(1)), String::new());
        for (_, _, id) in state.by_merchant.range(lower..upper).rev() {
            let Some(payment) = state.payments.get(id) else { continue };
            if pager.offer(payment.clone()).is_break() {
                break;
            }
        }
        pager.finish()
    }

    pub fn due_payments(&self, now_ms: i64, limit: usize) -> Vec<Payment> {
        let state = self.lock();
        state
            .due
            .iter()
            .take_while(|(due, _)| *due <= now_ms)
            .filter_map(|(_, id)| state.payments.get(id).cloned())
            .take(limit)
            .collect()
    }

    pub fn record(&self, key: &str) -> Option<IdempotencyRecord> {
        self.lock().records.get(key).filter(|r| r.expires_at_ms > now_ms()).cloned()
    }

    pub fn event(&self, id: &str) -> Option<StoredEvent> {
        self.lock().events.get(id).cloned()
    }

    pub fn events(&self, merchant: &str, filter: &EventFilter) -> EventPage {
        let state = self.lock();
        let kind = filter.kind.map_or("", |k| k.as_str());
        let mut pager = EventPager::new(filter.limit);
        let lower = (merchant.to_owned(), kind, String::new());
        let upper = (merchant.to_owned(), kind, filter.starting_after.clone().unwrap_or_else(|| "\x7f".to_owned()));
        for (_, _, id) in state.event_index.range(lower..upper).rev() {
            let Some(event) = state.events.get(id) else { continue };
            if pager.offer(event.clone()).is_break() {
                break;
            }
        }
        pager.finish()
    }

    pub fn log_after(&self, cursor: Option<&str>, limit: usize) -> Vec<LogEntry> {
        let state = self.lock();
        let after = cursor.and_then(|c| c.parse::<u64>().ok()).unwrap_or(0);
        entries(&state, after, limit)
    }

    pub fn log_end(&self) -> String {
        seq_cursor(self.lock().last_seq)
    }

    pub fn outbox(&self, limit: usize) -> Vec<LogEntry> {
        let state = self.lock();
        entries(&state, state.fanned_out, limit)
    }

    pub fn fan_out(&self, ack: Option<&str>, deliveries: &[Delivery]) {
        let mut state = self.lock();
        for delivery in deliveries {
            if !state.deliveries.contains_key(&(delivery.event_id.clone(), delivery.endpoint_id.clone())) {
                state.put_delivery(delivery);
            }
        }
        let seq = ack.and_then(|c| c.parse::<u64>().ok()).unwrap_or(0);
        state.fanned_out = state.fanned_out.max(seq);
    }

    pub fn create_endpoint(&self, endpoint: &Endpoint) -> Endpoint {
        let mut state = self.lock();
        let key = (endpoint.merchant_id.clone(), endpoint.id.clone());
        state.endpoints.entry(key).or_insert_with(|| endpoint.clone()).clone()
    }

    pub fn save_endpoint(&self, endpoint: &Endpoint) {
        let key = (endpoint.merchant_id.clone(), endpoint.id.clone());
        self.lock().endpoints.insert(key, endpoint.clone());
    }

    pub fn endpoints(&self, merchant: &str) -> Vec<Endpoint> {
        let state = self.lock();
        let lower = (merchant.to_owned(), String::new());
        state.endpoints.range(lower..).take_while(|((m, _), _)| m == merchant).map(|(_, e)| e.clone()).collect()
    }

    pub fn endpoint(&self, merchant: &str, id: &str) -> Option<Endpoint> {
        self.lock().endpoints.get(&(merchant.to_owned(), id.to_owned())).cloned()
    }

    pub fn deliveries(&self, event_id: &str) -> Vec<Delivery> {
        deliveries_of(&self.lock(), event_id)
    }

    pub fn take_due_deliveries(&self, now_ms: i64, lease_ms: i64, limit: usize) -> Vec<Delivery> {
        let mut state = self.lock();
        let due: Vec<(i64, String, String)> =
            state.deliveries_due.iter().take_while(|(due, _, _)| *due <= now_ms).take(limit).cloned().collect();
        let mut taken = Vec::with_capacity(due.len());
        for (_, event, endpoint) in due {
            let Some(delivery) = state.deliveries.get(&(event, endpoint)) else { continue };
            let delivery = leased(delivery, now_ms + lease_ms);
            state.put_delivery(&delivery);
            taken.push(delivery);
        }
        taken
    }

    pub fn save_delivery(&self, delivery: &Delivery) -> Saved {
        let mut state = self.lock();
        let stored = state.deliveries.get(&(delivery.event_id.clone(), delivery.endpoint_id.clone()));
        if !may_save(stored.map(|d| d.version), delivery) {
            return Saved::Conflict(stored.cloned().map(Box::new));
        }
        state.put_delivery(delivery);
        Saved::Written
    }

    /// Forgets events created before `before_ms`, and their deliveries.
    pub fn prune(&self, before_ms: i64) -> usize {
        let mut state = self.lock();
        let mut pruned = 0;
        while let Some((&seq, id)) = state.log.first_key_value() {
            let id = id.clone();
            if state.events.get(&id).is_some_and(|e| e.created_ms >= before_ms) {
                break;
            }
            state.log.remove(&seq);
            if let Some(event) = state.events.remove(&id) {
                state.event_index.remove(&(event.merchant_id.clone(), "", id.clone()));
                state.event_index.remove(&(event.merchant_id.clone(), event.kind.as_str(), id.clone()));
            }
            for delivery in deliveries_of(&state, &id) {
                if let Some(due) = delivery.due_ms {
                    state.deliveries_due.remove(&(due, id.clone(), delivery.endpoint_id.clone()));
                }
                state.deliveries.remove(&(id.clone(), delivery.endpoint_id));
            }
            pruned += 1;
        }
        pruned
    }
}

/// An event's deliveries.
fn deliveries_of(state: &State, event_id: &str) -> Vec<Delivery> {
    let lower = (event_id.to_owned(), String::new());
    state.deliveries.range(lower..).take_while(|((e, _), _)| e == event_id).map(|(_, d)| d.clone()).collect()
}

/// The log's entries after seq `after`, oldest first.
fn entries(state: &State, after: u64, limit: usize) -> Vec<LogEntry> {
    state
        .log
        .range(after + 1..)
        .filter_map(|(seq, id)| {
            state.events.get(id).map(|event| LogEntry { cursor: seq_cursor(*seq), event: event.clone() })
        })
        .take(limit)
        .collect()
}
