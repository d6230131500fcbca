//! The ledger: every charge, refund and authorization the bank ever made, the card accounts, and
//! the idempotency keys that make each operation exactly-once. Authorizations (holds, their
//! capture, void and expiry) are in [`holds`].
//!
//! All state sits behind one mutex and every operation is synchronous under it, so a charge is
//! either fully recorded or not at all, and two requests with the same key can never both charge.
//! Nothing here awaits, so a client that disconnects cannot leave half a charge behind.

use std::collections::HashMap;
use std::hash::{BuildHasher, RandomState};
use std::sync::{Arc, Mutex, MutexGuard};

use chrono::{DateTime, Datelike, Utc};
use serde::Serialize;
use uuid::Uuid;

use crate::card::{self, CardSummary, DeclineCode};

mod holds;

pub use holds::{Authorization, AuthorizationStatus, HoldOperation, HoldTotals};

/// A charge request that passed validation (see [`crate::api`]). Holds the card number only for
/// the duration of the request.
pub struct ChargeOrder {
    pub amount: i64,
    pub currency: String,
    pub card_number: String,
    pub exp_month: u32,
    pub exp_year: i32,
    pub cvc: String,
    pub reference: Option<String>,
}

impl std::fmt::Debug for ChargeOrder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ChargeOrder")
            .field("amount", &self.amount)
            .field("currency", &self.currency)
            .field("card", &CardSummary::of(&self.card_number))
            .field("reference", &self.reference)
            .finish_non_exhaustive()
    }
}

pub use wire::ChargeStatus;

#[derive(Debug, Clone, Serialize)]
pub struct Charge {
    pub id: String,
    pub object: &'static str,
    pub status: ChargeStatus,
    pub amount: i64,
    pub currency: String,
    pub decline_code: Option<DeclineCode>,
    pub card: CardSummary,
    pub reference: Option<String>,
    pub idempotency_key: String,
    pub refunded_amount: i64,
    pub refunds: Vec<Refund>,
    /// The authorization whose capture made this charge (`None` for a direct charge).
    pub authorization_id: Option<String>,
    pub created_at: DateTime<Utc>,
    #[serde(skip)]
    account: Option<u64>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Refund {
    pub id: String,
    pub object: &'static str,
    pub charge_id: String,
    pub amount: i64,
    pub status: &'static str,
    pub idempotency_key: String,
    pub created_at: DateTime<Utc>,
}

/// Whether an answer was made now or replayed from an earlier request with the same key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Freshness {
    New,
    Replayed,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LedgerError {
    #[error("this Idempotency-Key was already used with a different request")]
    KeyReused,
    #[error("no charge {0}")]
    NoSuchCharge(String),
    #[error("charge {0} was declined; there is nothing to refund")]
    NotRefundable(String),
    #[error("charge {0} is already fully refunded")]
    FullyRefunded(String),
    #[error("refund of {requested} exceeds the {remaining} left to refund")]
    OverRefund { requested: i64, remaining: i64 },
    #[error("a refund amount must be positive")]
    NonPositiveRefund,
    #[error("no authorization {0}")]
    NoSuchAuthorization(String),
    /// Captured, voided, expired or declined: nothing is held to capture or void.
    #[error("authorization {id} is {status}; only an authorized hold can be captured or voided")]
    NotHeld { id: String, status: AuthorizationStatus },
    #[error("a capture of {requested} must be positive and at most the {authorized} authorized")]
    CaptureAmount { requested: i64, authorized: i64 },
}

/// The decline rules that are configuration, not test-card scripting.
#[derive(Debug, Clone, Copy)]
pub struct Policy {
    pub max_amount: i64,
    pub default_balance: i64,
}

/// Totals per currency: what was charged, refunded, and what remains.
#[derive(Debug, Clone, Default, Serialize)]
pub struct CurrencyTotals {
    pub charged: i64,
    pub refunded: i64,
    pub net: i64,
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct LedgerTotals {
    pub charges: usize,
    pub approved: usize,
    pub declined: usize,
    pub refunds: usize,
    pub by_currency: std::collections::BTreeMap<String, CurrencyTotals>,
    pub authorizations: HoldTotals,
}

/// The audit view returned by `GET /v1/ledger`.
#[derive(Debug, Clone, Serialize)]
pub struct LedgerReport {
    pub charges: Vec<Arc<Charge>>,
    pub authorizations: Vec<Arc<Authorization>>,
    pub totals: LedgerTotals,
}

#[derive(Debug)]
pub struct Ledger {
    policy: Policy,
    /// How long an authorization holds its amount before it lapses.
    authorization_ttl: chrono::Duration,
    /// Keyed hashing: request fingerprints and card accounts are kept as 64-bit SipHash values
    /// under a key chosen at start-up, so no card number is stored, even as a guessable hash.
    hasher: RandomState,
    state: Mutex<State>,
}

#[derive(Debug, Default)]
struct State {
    /// Shared, so that answers and reports are serialised outside the lock without deep copies;
    /// a refund copies a charge on write only if an answer still holds the old version.
    charges: Vec<Arc<Charge>>,
    by_id: HashMap<String, usize>,
    charge_keys: HashMap<String, KeyedCharge>,
    refund_keys: HashMap<String, KeyedRefund>,
    balances: HashMap<u64, i64>,
    holds: holds::Holds,
}

#[derive(Debug)]
struct KeyedCharge {
    fingerprint: u64,
    index: usize,
}

#[derive(Debug)]
struct KeyedRefund {
    fingerprint: u64,
    charge: usize,
    refund: usize,
}

impl Ledger {
    pub fn new(policy: Policy, authorization_ttl: std::time::Duration) -> Self {
        Self {
            policy,
            authorization_ttl: chrono::Duration::from_std(authorization_ttl).unwrap_or(chrono::Duration::MAX),
            hasher: RandomState::new(),
            state: Mutex::new(State::default()),
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic while holding the lock cannot leave a half-written charge (every write is a
        // push or insert at the end), so a poisoned lock is still consistent.
        self.state.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Charges once per key: a new key decides and records the charge, a known key with the same
    /// request replays it, a known key with another request is refused.
    pub fn charge(&self, key: &str, order: &ChargeOrder) -> Result<(Arc<Charge>, Freshness), LedgerError> {
        let fingerprint = self.order_fingerprint(order);
        let now = Utc::now();
        let mut state = self.lock();
        if let Some(existing) = state.charge_keys.get(key) {
            if existing.fingerprint != fingerprint {
                return Err(LedgerError::KeyReused);
            }
            return Ok((Arc::clone(&state.charges[existing.index]), Freshness::Replayed));
        }

        let account = self.account_of(order);
        let decline = self.decide(&mut state, order, account, now);
        let charge = Arc::new(Charge {
            id: format!("ch_{}", Uuid::new_v4()),
            object: "charge",
            status: if decline.is_some() { ChargeStatus::Declined } else { ChargeStatus::Approved },
            amount: order.amount,
            currency: order.currency.clone(),
            decline_code: decline,
            card: CardSummary::of(&order.card_number),
            reference: order.reference.clone(),
            idempotency_key: key.to_owned(),
            refunded_amount: 0,
            refunds: Vec::new(),
            authorization_id: None,
            created_at: now,
            account,
        });
        let index = state.record_charge(Arc::clone(&charge));
        state.charge_keys.insert(key.to_owned(), KeyedCharge { fingerprint, index });
        Ok((charge, Freshness::New))
    }

    /// What tells one charge or authorization request from another under the same key.
    fn order_fingerprint(&self, order: &ChargeOrder) -> u64 {
        self.hasher.hash_one((
            order.amount,
            &order.currency,
            &order.card_number,
            order.exp_month,
            order.exp_year,
            &order.cvc,
            &order.reference,
        ))
    }

    /// The card's account (a keyed hash of its number), or `None` for a test card, whose outcome
    /// is scripted and which has no balance.
    fn account_of(&self, order: &ChargeOrder) -> Option<u64> {
        let scripted_card = order.card_number == card::APPROVE || card::scripted_decline(&order.card_number).is_some();
        (!scripted_card).then(|| self.hasher.hash_one(("account", &order.card_number)))
    }

    /// The decline rules, in order; debits the account when the charge (or hold) is approved.
    fn decide(
        &self,
        state: &mut State,
        order: &ChargeOrder,
        account: Option<u64>,
        now: DateTime<Utc>,
    ) -> Option<DeclineCode> {
        if order.amount > self.policy.max_amount {
            return Some(DeclineCode::AmountLimitExceeded);
        }
        if let Some(code) = card::scripted_decline(&order.card_number) {
            return Some(code);
        }
        // A card is valid through the last day of its expiry month.
        if (order.exp_year, order.exp_month) < (now.year(), now.month()) {
            return Some(DeclineCode::ExpiredCard);
        }
        let account = account?;
        let balance = state.balances.entry(account).or_insert(self.policy.default_balance);
        if *balance < order.amount {
            return Some(DeclineCode::InsufficientFunds);
        }
        *balance -= order.amount;
        None
    }

    /// Refunds part or all (`amount: None`) of what is left of an approved charge, once per key.
    pub fn refund(&self, charge_id: &str, key: &str, amount: Option<i64>) -> Result<(Refund, Freshness), LedgerError> {
        let fingerprint = self.hasher.hash_one((charge_id, amount));
        let now = Utc::now();
        let mut state = self.lock();
        if let Some(existing) = state.refund_keys.get(key) {
            if existing.fingerprint != fingerprint {
                return Err(LedgerError::KeyReused);
            }
            return Ok((state.charges[existing.charge].refunds[existing.refund].clone(), Freshness::Replayed));
        }
        let index = *state.by_id.get(charge_id).ok_or_else(|| LedgerError::NoSuchCharge(charge_id.to_owned()))?;
        let charge = &state.charges[index];
        if charge.status != ChargeStatus::Approved {
            return Err(LedgerError::NotRefundable(charge_id.to_owned()));
        }
        let remaining = charge.amount - charge.refunded_amount;
        if remaining == 0 {
            return Err(LedgerError::FullyRefunded(charge_id.to_owned()));
        }
        let requested = amount.unwrap_or(remaining);
        if requested <= 0 {
            return Err(LedgerError::NonPositiveRefund);
        }
        if requested > remaining {
            return Err(LedgerError::OverRefund { requested, remaining });
        }
        let refund = Refund {
            id: format!("re_{}", Uuid::new_v4()),
            object: "refund",
            charge_id: charge_id.to_owned(),
            amount: requested,
            status: "succeeded",
            idempotency_key: key.to_owned(),
            created_at: now,
        };
        let account = charge.account;
        let charge = Arc::make_mut(&mut state.charges[index]);
        charge.refunded_amount += requested;
        charge.refunds.push(refund.clone());
        let refund_index = charge.refunds.len() - 1;
        state.credit(account, requested, self.policy.default_balance);
        state.refund_keys.insert(key.to_owned(), KeyedRefund { fingerprint, charge: index, refund: refund_index });
        Ok((refund, Freshness::New))
    }

    pub fn get(&self, charge_id: &str) -> Option<Arc<Charge>> {
        let state = self.lock();
        state.by_id.get(charge_id).map(|&i| Arc::clone(&state.charges[i]))
    }

    /// Status inquiry: the charge made under an idempotency key, if any.
    pub fn find_by_key(&self, key: &str) -> Option<Arc<Charge>> {
        let state = self.lock();
        state.charge_keys.get(key).map(|k| Arc::clone(&state.charges[k.index]))
    }

    /// Every charge and authorization, oldest first, with totals.
    pub fn report(&self) -> LedgerReport {
        let (charges, authorizations) = {
            let mut state = self.lock();
            self.expire_due(&mut state, Utc::now());
            (state.charges.clone(), state.holds.all())
        };
        let mut totals = LedgerTotals {
            charges: charges.len(),
            authorizations: HoldTotals::of(&authorizations),
            ..LedgerTotals::default()
        };
        for charge in &charges {
            totals.refunds += charge.refunds.len();
            match charge.status {
                ChargeStatus::Declined => totals.declined += 1,
                ChargeStatus::Approved => {
                    totals.approved += 1;
                    let sums = totals.by_currency.entry(charge.currency.clone()).or_default();
                    sums.charged += charge.amount;
                    sums.refunded += charge.refunded_amount;
                    sums.net += charge.amount - charge.refunded_amount;
                }
            }
        }
        LedgerReport { charges, authorizations, totals }
    }
}

impl State {
    /// Appends a charge; returns its index.
    fn record_charge(&mut self, charge: Arc<Charge>) -> usize {
        let index = self.charges.len();
        self.by_id.insert(charge.id.clone(), index);
        self.charges.push(charge);
        index
    }

    /// Gives `amount` back to `account` (a refund, a released hold).
    fn credit(&mut self, account: Option<u64>, amount: i64, default_balance: i64) {
        if let Some(account) = account {
            *self.balances.entry(account).or_insert(default_balance) += amount;
        }
    }
}
