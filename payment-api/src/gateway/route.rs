//! The banks a payment may go to, and the order it tries them in.
//!
//! Each bank (an [`Acquirer`]) has its own client and its own guard (breaker, retry budget,
//! bulkhead), so one bank's trouble never trips another's breaker. For a payment, the [`Router`]
//! lists the banks that take its currency, in the order of the strategy (`ROUTING`): `priority`
//! keeps the configured order; `weighted` draws the first by `ROUTING_WEIGHTS` and keeps the rest
//! in order; `success_rate` puts the best recent authorization rate first, except for a tenth of
//! payments, which explore another bank first so that a recovered bank is noticed.
//!
//! Which bank a payment may move on to is the charge's business (`create`): only after an answer
//! that proves the bank did nothing, or a decline of `DECLINE_FAILOVER_CODES`.

use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use resilience::Guard;

use crate::bank::BankClient;
use crate::config::{Config, Routing};
use crate::model::Payment;

/// How many recent authorizations a bank's success rate is measured over: short enough that a
/// bank that recovered wins its place back after a few dozen exploring payments.
const RATE_WINDOW: usize = 50;
/// Success rates this close count as equal (the configured order decides).
const RATE_TOLERANCE: f64 = 0.05;
/// The share of payments `success_rate` routing sends first to another bank than the best.
const EXPLORE: f64 = 0.1;

/// One bank, behind its own guard.
#[derive(Debug)]
pub struct Acquirer {
    pub name: String,
    pub url: String,
    pub client: BankClient,
    pub guard: Guard,
    /// The currencies it takes (`None`: all the gateway takes).
    pub currencies: Option<Vec<String>>,
    /// Recent authorization outcomes: approved or not.
    outcomes: Mutex<VecDeque<bool>>,
    /// Payments routed here first.
    routed: AtomicU64,
    weight: u32,
}

impl Acquirer {
    /// The share of recent authorizations it approved (1 while it has seen none).
    pub fn success_rate(&self) -> f64 {
        let outcomes = self.outcomes.lock().unwrap_or_else(|p| p.into_inner());
        if outcomes.is_empty() {
            return 1.0;
        }
        outcomes.iter().filter(|approved| **approved).count() as f64 / outcomes.len() as f64
    }

    /// Counts an authorization's outcome: approved, or declined or refused.
    pub fn record(&self, approved: bool) {
        let mut outcomes = self.outcomes.lock().unwrap_or_else(|p| p.into_inner());
        if outcomes.len() == RATE_WINDOW {
            outcomes.pop_front();
        }
        outcomes.push_back(approved);
    }

    pub fn routed(&self) -> u64 {
        self.routed.load(Ordering::Relaxed)
    }

    /// Counts a payment sent here first.
    pub fn count_routed(&self) {
        self.routed.fetch_add(1, Ordering::Relaxed);
    }

    fn takes(&self, currency: &str) -> bool {
        self.currencies.as_ref().is_none_or(|list| list.iter().any(|c| c == currency))
    }
}

#[derive(Debug)]
pub struct Router {
    acquirers: Vec<Arc<Acquirer>>,
    strategy: Routing,
}

impl Router {
    pub fn new(config: &Config) -> anyhow::Result<Self> {
        let acquirers = config
            .bank_list()
            .into_iter()
            .map(|bank| {
                let weight = config.routing_weights.iter().find(|(name, _)| *name == bank.name).map_or(0, |(_, w)| *w);
                Ok(Arc::new(Acquirer {
                    client: BankClient::new(&bank.url)?,
                    guard: Guard::new(config.guard())?,
                    currencies: config.currencies_of(&bank.name),
                    outcomes: Mutex::new(VecDeque::with_capacity(RATE_WINDOW)),
                    routed: AtomicU64::new(0),
                    weight,
                    name: bank.name,
                    url: bank.url,
                }))
            })
            .collect::<anyhow::Result<Vec<_>>>()?;
        Ok(Self { acquirers, strategy: config.routing })
    }

    pub fn all(&self) -> &[Arc<Acquirer>] {
        &self.acquirers
    }

    /// The first bank: the one `/admin/breaker` shows, and the one of payments written before
    /// payments named their bank.
    pub fn primary(&self) -> &Arc<Acquirer> {
        &self.acquirers[0]
    }

    pub fn by_name(&self, name: &str) -> Option<&Arc<Acquirer>> {
        self.acquirers.iter().find(|a| a.name == name)
    }

    /// The bank that holds `payment` (its charge or hold): captures, cancels, refunds and
    /// inquiries go there. A bank no longer configured falls back to the primary.
    pub fn of(&self, payment: &Payment) -> &Arc<Acquirer> {
        payment.acquirer.as_deref().and_then(|name| self.by_name(name)).unwrap_or_else(|| self.primary())
    }

    /// The banks that take `currency`, in the order a payment tries them.
    pub fn candidates(&self, currency: &str) -> Vec<Arc<Acquirer>> {
        let mut banks: Vec<Arc<Acquirer>> = self.acquirers.iter().filter(|a| a.takes(currency)).cloned().collect();
        if banks.len() < 2 {
            return banks;
        }
        match self.strategy {
            Routing::Priority => {}
            Routing::Weighted => {
                let total: u64 = banks.iter().map(|a| u64::from(a.weight)).sum();
                if total > 0 {
                    let mut draw = fastrand::u64(0..total);
                    let first = banks.iter().position(|a| {
                        let weight = u64::from(a.weight);
                        if draw < weight {
                            return true;
                        }
                        draw -= weight;
                        false
                    });
                    if let Some(first) = first {
                        let chosen = banks.remove(first);
                        banks.insert(0, chosen);
                    }
                }
            }
            Routing::SuccessRate => {
                // The best rate first; rates within the tolerance of the best keep the configured
                // order among them.
                let best = banks.iter().map(|a| a.success_rate()).fold(0.0, f64::max);
                banks.sort_by_cached_key(|a| a.success_rate() < best - RATE_TOLERANCE);
                if fastrand::f64() < EXPLORE {
                    let other = 1 + fastrand::usize(0..banks.len() - 1);
                    banks.swap(0, other);
                }
            }
        }
        banks
    }
}
