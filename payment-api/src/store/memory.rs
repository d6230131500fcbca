//! The in-memory backend: the reference implementation of the store contract, for tests and demos.
//! Everything sits behind one mutex, so every operation is atomic.

use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use super::{
    Claim, ClaimRequest, IdempotencyRecord, PaymentFilter, PaymentPage, RecordState, Release, StoredResponse,
    created_micros, decide_claim, decide_release, due_ms, matches, now_ms,
};
use crate::model::{Payment, Refund};

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
        if let Some(old) = self.payments.get(&payment.id)
            && let Some(due) = due_ms(old)
        {
            self.due.remove(&(due, old.id.clone()));
        }
        self.by_merchant.insert((payment.merchant_id.clone(), created_micros(payment), payment.id.clone()));
        if let Some(due) = due_ms(payment) {
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

    pub fn finish(
        &self,
        key: &str,
        resource_id: &str,
        response: &StoredResponse,
        retention: Duration,
        payment: Option<&Payment>,
    ) -> Result<(), super::StoreError> {
        let mut state = self.lock();
        if let Some(record) = state.records.get_mut(key)
            && record.resource_id == resource_id
        {
            record.state = RecordState::Done { response: response.clone() };
            record.expires_at_ms = now_ms() + retention.as_millis() as i64;
        }
        if let Some(payment) = payment {
            state.put_payment(payment);
        }
        Ok(())
    }

    pub fn release(
        &self,
        key: &str,
        resource_id: &str,
        owner: Option<&str>,
        payment: Option<&Payment>,
    ) -> Result<bool, super::StoreError> {
        let mut state = self.lock();
        match decide_release(state.records.get(key), resource_id, owner, now_ms()) {
            Release::Refuse => return Ok(false),
            Release::Delete => {
                state.records.remove(key);
            }
            Release::Keep => {}
        }
        if let Some(payment) = payment {
            state.put_payment(payment);
        }
        Ok(true)
    }

    pub fn put_payment(&self, payment: &Payment) -> Result<(), super::StoreError> {
        self.lock().put_payment(payment);
        Ok(())
    }

    pub fn get_payment(&self, id: &str) -> Option<Payment> {
        self.lock().payments.get(id).cloned()
    }

    pub fn list_payments(&self, merchant: &str, filter: &PaymentFilter) -> PaymentPage {
        let state = self.lock();
        let upper = match filter.starting_after.as_ref().and_then(|id| state.payments.get(id)) {
            Some(cursor) if cursor.merchant_id == merchant => {
                (merchant.to_owned(), created_micros(cursor), cursor.id.clone())
            }
            Some(_) => return PaymentPage::default(),
            None => (merchant.to_owned(), i64::MAX, String::new()),
        };
        let lower = (merchant.to_owned(), i64::MIN, String::new());
        let mut payments = Vec::new();
        let mut has_more = false;
        for (_, _, id) in state.by_merchant.range(lower..upper).rev() {
            let Some(payment) = state.payments.get(id) else { continue };
            if !matches(payment, filter) {
                continue;
            }
            if payments.len() == filter.limit {
                has_more = true;
                break;
            }
            payments.push(payment.clone());
        }
        PaymentPage { payments, has_more }
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

    pub fn apply_refund(&self, payment_id: &str, refund: &Refund) -> Option<Payment> {
        let mut state = self.lock();
        let mut payment = state.payments.get(payment_id)?.clone();
        payment.apply_refund(refund.clone());
        state.put_payment(&payment);
        Some(payment)
    }

    pub fn record(&self, key: &str) -> Option<IdempotencyRecord> {
        self.lock().records.get(key).filter(|r| r.expires_at_ms > now_ms()).cloned()
    }
}
