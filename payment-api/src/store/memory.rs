//! The in-memory backend: the reference implementation of the store contract, for tests and demos.
//! Everything sits behind one mutex, so every operation is atomic.

use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, Mutex, MutexGuard};

use super::{
    Claim, ClaimRequest, Commit, Committed, IdempotencyRecord, IndexEntry, Pager, PaymentFilter, PaymentPage,
    RecordChange, RecordWrite, decide_claim, decide_commit, index_moves, now_ms,
};
use crate::model::Payment;

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
}
