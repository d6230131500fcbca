//! Authorizations: an amount held on a card account, then captured (once, all or part of it, the
//! rest released), voided, or left to expire. Each operation is exactly-once per idempotency key,
//! like a charge, and every change happens under the ledger's one lock, so a capture and a void
//! racing on one hold never both commit.
//!
//! Expiry is lazy: every operation and report first lapses the holds whose time has come, from an
//! index ordered by expiry, so no timer is needed and no read ever sees a hold past its time.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::hash::BuildHasher;
use std::sync::Arc;

use chrono::{DateTime, Utc};
use serde::Serialize;
use uuid::Uuid;

use super::{Charge, ChargeOrder, ChargeStatus, Freshness, Ledger, LedgerError, State};
use crate::card::{CardSummary, DeclineCode};

pub use wire::AuthorizationStatus;

#[derive(Debug, Clone, Serialize)]
pub struct Authorization {
    pub id: String,
    pub object: &'static str,
    pub status: AuthorizationStatus,
    pub amount: i64,
    pub captured_amount: i64,
    pub currency: String,
    pub decline_code: Option<DeclineCode>,
    pub card: CardSummary,
    pub reference: Option<String>,
    pub idempotency_key: String,
    /// The charge its capture made.
    pub charge_id: Option<String>,
    /// The keys it was captured or voided under.
    pub capture_key: Option<String>,
    pub void_key: Option<String>,
    /// When the hold lapses if it is neither captured nor voided.
    pub expires_at: DateTime<Utc>,
    pub created_at: DateTime<Utc>,
    /// When it was captured, voided or expired.
    pub closed_at: Option<DateTime<Utc>>,
    #[serde(skip)]
    account: Option<u64>,
}

/// How many authorizations are in each state, and what is held now, per currency.
#[derive(Debug, Clone, Default, Serialize)]
pub struct HoldTotals {
    pub authorized: usize,
    pub declined: usize,
    pub captured: usize,
    pub voided: usize,
    pub expired: usize,
    pub held: BTreeMap<String, i64>,
}

impl HoldTotals {
    pub fn of(authorizations: &[Arc<Authorization>]) -> Self {
        let mut totals = HoldTotals::default();
        for authorization in authorizations {
            let count = match authorization.status {
                AuthorizationStatus::Authorized => &mut totals.authorized,
                AuthorizationStatus::Declined => &mut totals.declined,
                AuthorizationStatus::Captured => &mut totals.captured,
                AuthorizationStatus::Voided => &mut totals.voided,
                AuthorizationStatus::Expired => &mut totals.expired,
            };
            *count += 1;
            if authorization.status == AuthorizationStatus::Authorized {
                *totals.held.entry(authorization.currency.clone()).or_default() += authorization.amount;
            }
        }
        totals
    }
}

/// The operation whose idempotency key a status inquiry names.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum HoldOperation {
    Authorize,
    Capture,
    Void,
}

#[derive(Debug, Default)]
pub(super) struct Holds {
    /// Shared, as charges are: answers are serialised outside the lock.
    list: Vec<Arc<Authorization>>,
    by_id: HashMap<String, usize>,
    keys: HashMap<HoldOperation, HashMap<String, Keyed>>,
    /// The holds still held, by expiry.
    live: BTreeSet<(DateTime<Utc>, usize)>,
}

#[derive(Debug)]
struct Keyed {
    fingerprint: u64,
    index: usize,
}

impl Holds {
    pub(super) fn all(&self) -> Vec<Arc<Authorization>> {
        self.list.clone()
    }

    /// The answer already given under `key` to `operation`, if any: a replay, or a refusal when
    /// the key was used for another request.
    fn replay(
        &self,
        operation: HoldOperation,
        key: &str,
        fingerprint: u64,
    ) -> Option<Result<(Arc<Authorization>, Freshness), LedgerError>> {
        let keyed = self.keys.get(&operation)?.get(key)?;
        if keyed.fingerprint != fingerprint {
            return Some(Err(LedgerError::KeyReused));
        }
        Some(Ok((Arc::clone(&self.list[keyed.index]), Freshness::Replayed)))
    }

    fn remember(&mut self, operation: HoldOperation, key: &str, fingerprint: u64, index: usize) {
        self.keys.entry(operation).or_default().insert(key.to_owned(), Keyed { fingerprint, index });
    }

    fn index_of(&self, id: &str) -> Result<usize, LedgerError> {
        self.by_id.get(id).copied().ok_or_else(|| LedgerError::NoSuchAuthorization(id.to_owned()))
    }

    /// The authorization at `index`, if it still holds its amount.
    fn held(&self, index: usize) -> Result<Arc<Authorization>, LedgerError> {
        let authorization = &self.list[index];
        match authorization.status {
            AuthorizationStatus::Authorized => Ok(Arc::clone(authorization)),
            status => Err(LedgerError::NotHeld { id: authorization.id.clone(), status }),
        }
    }

    /// Ends the hold at `index` with `close`; returns the authorization as it is now.
    fn close(&mut self, index: usize, close: impl FnOnce(&mut Authorization)) -> Arc<Authorization> {
        self.live.remove(&(self.list[index].expires_at, index));
        close(Arc::make_mut(&mut self.list[index]));
        Arc::clone(&self.list[index])
    }
}

impl Ledger {
    /// Holds `order.amount` on the card once per key, by the same decline rules as a charge.
    pub fn authorize(&self, key: &str, order: &ChargeOrder) -> Result<(Arc<Authorization>, Freshness), LedgerError> {
        let fingerprint = self.order_fingerprint(order);
        let now = Utc::now();
        let mut state = self.lock();
        self.expire_due(&mut state, now);
        if let Some(replay) = state.holds.replay(HoldOperation::Authorize, key, fingerprint) {
            return replay;
        }
        let account = self.account_of(order);
        let decline = self.decide(&mut state, order, account, now);
        let expires_at = now.checked_add_signed(self.authorization_ttl).unwrap_or(DateTime::<Utc>::MAX_UTC);
        let authorization = Arc::new(Authorization {
            id: format!("au_{}", Uuid::new_v4()),
            object: "authorization",
            status: if decline.is_some() { AuthorizationStatus::Declined } else { AuthorizationStatus::Authorized },
            amount: order.amount,
            captured_amount: 0,
            currency: order.currency.clone(),
            decline_code: decline,
            card: CardSummary::of(&order.card_number),
            reference: order.reference.clone(),
            idempotency_key: key.to_owned(),
            charge_id: None,
            capture_key: None,
            void_key: None,
            expires_at,
            created_at: now,
            closed_at: None,
            account,
        });
        let holds = &mut state.holds;
        let index = holds.list.len();
        holds.by_id.insert(authorization.id.clone(), index);
        holds.list.push(Arc::clone(&authorization));
        holds.remember(HoldOperation::Authorize, key, fingerprint, index);
        if decline.is_none() {
            holds.live.insert((expires_at, index));
        }
        Ok((authorization, Freshness::New))
    }

    /// Captures `amount` (default: all) of a hold once: a charge of that amount is made, and the
    /// rest of the hold is released.
    pub fn capture(
        &self,
        authorization_id: &str,
        key: &str,
        amount: Option<i64>,
    ) -> Result<(Arc<Authorization>, Freshness), LedgerError> {
        let fingerprint = self.hasher.hash_one(("capture", authorization_id, amount));
        let now = Utc::now();
        let mut state = self.lock();
        self.expire_due(&mut state, now);
        if let Some(replay) = state.holds.replay(HoldOperation::Capture, key, fingerprint) {
            return replay;
        }
        let index = state.holds.index_of(authorization_id)?;
        let held = state.holds.held(index)?;
        let requested = amount.unwrap_or(held.amount);
        if requested <= 0 || requested > held.amount {
            return Err(LedgerError::CaptureAmount { requested, authorized: held.amount });
        }
        let charge = Arc::new(Charge {
            id: format!("ch_{}", Uuid::new_v4()),
            object: "charge",
            status: ChargeStatus::Approved,
            amount: requested,
            currency: held.currency.clone(),
            decline_code: None,
            card: held.card.clone(),
            reference: held.reference.clone(),
            idempotency_key: key.to_owned(),
            refunded_amount: 0,
            refunds: Vec::new(),
            authorization_id: Some(held.id.clone()),
            created_at: now,
            account: held.account,
        });
        let charge_id = charge.id.clone();
        state.record_charge(charge);
        state.credit(held.account, held.amount - requested, self.policy.default_balance);
        let captured = state.holds.close(index, |authorization| {
            authorization.status = AuthorizationStatus::Captured;
            authorization.captured_amount = requested;
            authorization.charge_id = Some(charge_id);
            authorization.capture_key = Some(key.to_owned());
            authorization.closed_at = Some(now);
        });
        state.holds.remember(HoldOperation::Capture, key, fingerprint, index);
        Ok((captured, Freshness::New))
    }

    /// Releases a hold once, at the merchant's request.
    pub fn void(&self, authorization_id: &str, key: &str) -> Result<(Arc<Authorization>, Freshness), LedgerError> {
        let fingerprint = self.hasher.hash_one(("void", authorization_id));
        let now = Utc::now();
        let mut state = self.lock();
        self.expire_due(&mut state, now);
        if let Some(replay) = state.holds.replay(HoldOperation::Void, key, fingerprint) {
            return replay;
        }
        let index = state.holds.index_of(authorization_id)?;
        let held = state.holds.held(index)?;
        state.credit(held.account, held.amount, self.policy.default_balance);
        let voided = state.holds.close(index, |authorization| {
            authorization.status = AuthorizationStatus::Voided;
            authorization.void_key = Some(key.to_owned());
            authorization.closed_at = Some(now);
        });
        state.holds.remember(HoldOperation::Void, key, fingerprint, index);
        Ok((voided, Freshness::New))
    }

    pub fn get_authorization(&self, id: &str) -> Option<Arc<Authorization>> {
        let mut state = self.lock();
        self.expire_due(&mut state, Utc::now());
        state.holds.by_id.get(id).map(|&index| Arc::clone(&state.holds.list[index]))
    }

    /// Status inquiry: the authorization that `operation` was done to under `key`, if any.
    pub fn find_authorization(&self, operation: HoldOperation, key: &str) -> Option<Arc<Authorization>> {
        let mut state = self.lock();
        self.expire_due(&mut state, Utc::now());
        let index = state.holds.keys.get(&operation)?.get(key)?.index;
        Some(Arc::clone(&state.holds.list[index]))
    }

    /// Lapses every hold whose time has come, oldest first, giving its amount back.
    pub(super) fn expire_due(&self, state: &mut State, now: DateTime<Utc>) {
        while let Some(&(at, index)) = state.holds.live.first() {
            if at > now {
                break;
            }
            let held = Arc::clone(&state.holds.list[index]);
            state.credit(held.account, held.amount, self.policy.default_balance);
            state.holds.close(index, |authorization| {
                authorization.status = AuthorizationStatus::Expired;
                authorization.closed_at = Some(at);
            });
        }
    }
}
