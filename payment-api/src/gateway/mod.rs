//! The gateway: the payment operations and what runs behind them, one module a job.
//!
//! - [`create`]: `POST /v1/payments`: claim the key, charge through the guard, settle.
//! - [`refund`]: `POST /v1/payments/{id}/refunds`: claim, hold the amount, refund, settle.
//! - [`hold`]: `POST /v1/payments/{id}/capture` and `/cancel`, the two ends of an authorization:
//!   claim, begin (so they never both happen), send, settle.
//! - [`settle`]: the settlement table every bank call's outcome goes through (a pure function);
//!   [`finish`]: the end every operation shares (settle, commit, answer truthfully).
//! - [`commit`]: every change to a payment, applied against its stored version together with its
//!   key's record; [`backlog`]: the outcomes the store could not take, written when it is back.
//! - [`reconcile`]: the background pass that settles what was left unknown.
//!
//! A new operation is a module beside these: it claims its key, calls the bank through
//! [`Gateway::call_bank`], asks [`settle::settle`] what the outcome comes to, and commits a
//! [`crate::model::Change`] with a [`RecordPlan`].
//!
//! [`Gateway`] keeps its parts private; the HTTP handlers and the background tasks call its
//! methods.

pub mod backlog;
mod claim;
mod commit;
mod create;
mod finish;
mod hold;
mod reconcile;
mod refund;
pub mod route;
pub mod settle;
pub mod webhooks;

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use chrono::Utc;
use resilience::{Admission, CallReport, GuardStats, Mode, Transition};
use serde::Serialize;
use tokio::sync::broadcast;
use uuid::Uuid;

use self::backlog::Backlog;
pub use self::backlog::RecordPlan;
use self::route::{Acquirer, Router};
use crate::bank::{BankReply, classify};
use crate::config::Config;
pub use crate::error::PaymentError;
use crate::events::{Envelope, Events, LatencyWindow};
use crate::metrics::{Metrics, PaymentOutcome};
use crate::model::{CreatePayment, Payment};
use crate::store::{PaymentFilter, PaymentPage, Store, StoreError, StoredResponse};
use crate::webhook::dispatch::{DispatchSettings, Dispatcher};

/// What an operation answers: the status and body stored for the key, given again (`replayed`)
/// to every retry of it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Answer {
    pub status: u16,
    pub body: String,
    pub replayed: bool,
}

impl Answer {
    fn fresh(response: StoredResponse) -> Self {
        Self { status: response.status, body: response.body, replayed: false }
    }

    fn replay(response: StoredResponse) -> Self {
        Self { status: response.status, body: response.body, replayed: true }
    }
}

/// Settings the flows need, taken from the configuration once.
#[derive(Debug, Clone)]
struct Settings {
    lease: Duration,
    retention: Duration,
    commit_window: Duration,
    inquiry_timeout: Duration,
    /// The bank call's overall deadline: attempts may be sent until then.
    bank_deadline: Duration,
    reconcile_interval: Duration,
    /// How long an authorization waits for its capture.
    authorization_ttl: chrono::Duration,
    currencies: Vec<String>,
    event_retention: Duration,
    /// Declines that may be tried at the next bank.
    decline_failover_codes: Vec<String>,
    /// Whether webhook URLs may point at private addresses.
    allow_private: bool,
}

pub struct Gateway {
    store: Store,
    /// The banks, each behind its own guard, and how a payment is routed among them.
    router: Router,
    settings: Settings,
    metrics: Arc<Metrics>,
    events: Arc<Events>,
    latency: LatencyWindow,
    /// Payment requests being answered now.
    in_flight: AtomicU64,
    /// Outcomes the store could not take yet.
    backlog: Backlog,
    fingerprint_key: Vec<u8>,
    /// Names this process in idempotency leases (and in the outbox's consumer group).
    instance: String,
    /// Sends events to webhook endpoints.
    dispatcher: Arc<Dispatcher>,
}

impl std::fmt::Debug for Gateway {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Gateway").field("store", &self.store.kind()).field("instance", &self.instance).finish()
    }
}

impl Gateway {
    pub fn new(config: &Config, store: Store, events: Arc<Events>, metrics: Arc<Metrics>) -> anyhow::Result<Self> {
        let fingerprint_key = match &config.fingerprint_key {
            Some(key) => key.as_bytes().to_vec(),
            None => Uuid::new_v4().as_bytes().to_vec(),
        };
        let instance = format!("gw_{}", Uuid::new_v4().simple());
        let dispatch = DispatchSettings {
            timeout: Duration::from_millis(config.webhook_timeout_ms),
            schedule: config.webhook_retry_schedule_s.clone(),
            lease: Duration::from_millis(config.webhook_lease_ms),
            allow_private: config.webhook_allow_private,
            max_in_flight: config.webhook_max_in_flight as usize,
            breaker_open: Duration::from_millis(config.webhook_breaker_open_ms),
        };
        let dispatcher = Arc::new(Dispatcher::new(store.clone(), dispatch, instance.clone(), Arc::clone(&metrics))?);
        Ok(Self {
            store,
            router: Router::new(config)?,
            settings: Settings {
                lease: config.lease(),
                retention: config.retention(),
                commit_window: config.commit_window(),
                inquiry_timeout: Duration::from_millis(config.attempt_timeout_ms),
                bank_deadline: Duration::from_millis(config.deadline_ms),
                reconcile_interval: Duration::from_millis(config.reconcile_interval_ms),
                authorization_ttl: chrono::Duration::from_std(config.authorization_ttl())?,
                currencies: config.currencies.clone(),
                event_retention: config.event_retention(),
                decline_failover_codes: config.decline_failover_codes.clone(),
                allow_private: config.webhook_allow_private,
            },
            metrics,
            events,
            latency: LatencyWindow::default(),
            in_flight: AtomicU64::new(0),
            backlog: Backlog::default(),
            fingerprint_key,
            instance,
            dispatcher,
        })
    }

    /// `POST /v1/payments`: answers, and counts what the answer was.
    pub async fn create_payment(
        &self,
        merchant: &str,
        idempotency_key: &str,
        request: CreatePayment,
        request_id: &str,
    ) -> Result<Answer, PaymentError> {
        let started = tokio::time::Instant::now();
        self.in_flight.fetch_add(1, Ordering::Relaxed);
        let result = self.answer_payment(merchant, idempotency_key, request, request_id).await;
        self.in_flight.fetch_sub(1, Ordering::Relaxed);
        let outcome = match &result {
            Ok(answer) => PaymentOutcome::answered(answer.status, answer.replayed),
            Err(error) => PaymentOutcome::Refused(error.code()),
        };
        if outcome.is_conflict() {
            self.metrics.idempotency_conflicts.inc(format!("kind=\"{}\"", outcome.as_str()));
        } else if outcome.took_the_bank_path() {
            self.latency.record(started.elapsed());
        }
        if outcome == PaymentOutcome::Replayed {
            self.metrics.idempotent_replays.fetch_add(1, Ordering::Relaxed);
        }
        self.metrics.payment(outcome.as_str());
        result
    }

    /// A payment of this merchant (another merchant's payment does not exist for you).
    pub async fn payment(&self, merchant: &str, payment_id: &str) -> Result<Payment, PaymentError> {
        match self.store.get_payment(payment_id).await? {
            Some(payment) if payment.merchant_id == merchant => Ok(payment),
            _ => Err(PaymentError::NotFound(payment_id.to_owned())),
        }
    }

    /// A page of this merchant's payments, newest first.
    pub async fn payments(&self, merchant: &str, filter: &PaymentFilter) -> Result<PaymentPage, PaymentError> {
        Ok(self.store.list_payments(merchant, filter).await?)
    }

    /// The currencies payments may be made in.
    pub fn currencies(&self) -> &[String] {
        &self.settings.currencies
    }

    /// Whether the store answers; its kind when it does.
    pub async fn ready(&self) -> Result<&'static str, StoreError> {
        self.store.ping().await.map(|()| self.store.kind())
    }

    pub fn store_kind(&self) -> &'static str {
        self.store.kind()
    }

    /// The primary bank's breaker as operators see it.
    pub fn breaker(&self) -> wire::BreakerView {
        crate::events::breaker_view(self.router.primary().guard.breaker())
    }

    /// Forces the primary bank's breaker open or closed, or returns it to its policy.
    pub fn set_breaker(&self, mode: Mode) -> wire::BreakerView {
        self.router.primary().guard.breaker().set_mode(mode);
        self.breaker()
    }

    /// The banks as operators see them.
    pub fn banks(&self) -> Vec<wire::BankView> {
        let banks = self.router.all();
        let routed: u64 = banks.iter().map(|b| b.routed()).sum();
        banks
            .iter()
            .map(|bank| wire::BankView {
                name: bank.name.clone(),
                url: bank.url.clone(),
                breaker: crate::events::breaker_view(bank.guard.breaker()),
                success_rate: bank.success_rate(),
                share: if routed == 0 { 0.0 } else { bank.routed() as f64 / routed as f64 },
                currencies: bank.currencies.clone(),
            })
            .collect()
    }

    /// Forces one bank's breaker open or closed, or returns it to its policy; `None` for a bank
    /// that does not exist.
    pub fn set_bank_breaker(&self, name: &str, mode: Mode) -> Option<wire::BreakerView> {
        let bank = self.router.by_name(name)?;
        bank.guard.breaker().set_mode(mode);
        Some(crate::events::breaker_view(bank.guard.breaker()))
    }

    /// Every breaker transition from now on, of each bank, with the bank's name.
    pub fn breaker_transitions(&self) -> Vec<(String, broadcast::Receiver<Transition>)> {
        self.router.all().iter().map(|bank| (bank.name.clone(), bank.guard.breaker().transitions())).collect()
    }

    /// The guards' counters, summed over the banks.
    fn guard_totals(&self) -> GuardStats {
        self.router.all().iter().map(|bank| bank.guard.stats()).fold(GuardStats::default(), |sum, s| GuardStats {
            calls: sum.calls + s.calls,
            attempts: sum.attempts + s.attempts,
            retries: sum.retries + s.retries,
            attempt_timeouts: sum.attempt_timeouts + s.attempt_timeouts,
            budget_refusals: sum.budget_refusals + s.budget_refusals,
            rejected_by_breaker: sum.rejected_by_breaker + s.rejected_by_breaker,
            rejected_overloaded: sum.rejected_overloaded + s.rejected_overloaded,
        })
    }

    /// The Prometheus text exposition.
    pub fn metrics_text(&self) -> String {
        let banks: Vec<crate::metrics::BankNumbers> = self
            .router
            .all()
            .iter()
            .map(|bank| crate::metrics::BankNumbers {
                name: bank.name.clone(),
                breaker: bank.guard.breaker().snapshot(),
                success_rate: bank.success_rate(),
                routed: bank.routed(),
            })
            .collect();
        self.metrics.render(
            &self.guard_totals(),
            &self.router.primary().guard.breaker().snapshot(),
            &banks,
            self.in_flight.load(Ordering::Relaxed),
        )
    }

    /// The live event stream, counted as a subscriber until the returned guard is dropped.
    pub fn subscribe(&self) -> (broadcast::Receiver<Arc<Envelope>>, crate::metrics::Subscriber) {
        (self.events.subscribe(), crate::metrics::Subscriber::new(Arc::clone(&self.metrics)))
    }

    /// Publishes an event on the live stream.
    pub fn publish(&self, kind: &'static str, data: &impl Serialize) {
        self.events.publish(kind, data);
    }

    /// Whether anyone watches the live stream.
    pub fn has_subscribers(&self) -> bool {
        self.events.has_subscribers()
    }

    /// Streams a payment event of the log as a `payment` event (refund events are announced by
    /// the payment event that accompanies them).
    pub fn announce(&self, event: &crate::model::StoredEvent) {
        if !event.kind.is_payment() {
            return;
        }
        let Ok(parsed) = serde_json::from_str::<wire::Event>(&event.body) else { return };
        let object = &parsed.data.object;
        let text = |name: &str| object.get(name).and_then(|v| v.as_str()).map(str::to_owned);
        let number = |name: &str| object.get(name).and_then(serde_json::Value::as_i64).unwrap_or(0);
        let Some(status) = text("status").and_then(|s| wire::PaymentStatus::parse(&s)) else { return };
        let created = text("created_at").and_then(|c| chrono::DateTime::parse_from_rfc3339(&c).ok());
        // From the payment's creation to this change: the request's latency, for the change
        // that answered it.
        let latency_ms = match status {
            wire::PaymentStatus::Processing => None,
            _ => created
                .map(|c| (parsed.created_at - c.with_timezone(&Utc)).num_microseconds().unwrap_or(0) as f64 / 1e3),
        };
        self.events.publish(
            "payment",
            &wire::PaymentEvent {
                payment_id: text("id").unwrap_or_default(),
                merchant_id: event.merchant_id.clone(),
                status,
                amount: number("amount"),
                currency: text("currency").unwrap_or_default(),
                attempts: number("attempts") as u32,
                latency_ms,
                decline_code: text("decline_code"),
                failure_reason: text("failure_reason"),
                capture: object.get("capture").and_then(serde_json::Value::as_bool).unwrap_or(true),
                amount_captured: number("amount_captured"),
                at: parsed.created_at,
                event_id: Some(event.id.clone()),
                event_type: Some(event.kind),
            },
        );
    }

    /// Announces a transition of `bank`'s breaker: counted, and streamed.
    pub fn breaker_moved(&self, bank: &str, transition: &Transition) {
        let event = wire::BreakerEvent { bank: Some(bank.to_owned()), ..crate::events::breaker_event(transition) };
        self.metrics.breaker_transitions.inc(format!("bank=\"{}\",to=\"{}\"", crate::metrics::label(bank), event.to));
        self.events.publish("breaker", &event);
    }

    /// The once-a-second `stats` event: totals since start, and their rates since `previous`.
    pub fn stats(&self, previous: &std::collections::BTreeMap<String, u64>, elapsed: Duration) -> wire::Stats {
        let totals = self.metrics.payment_totals();
        let seconds = elapsed.as_secs_f64().max(1e-3);
        let rates = totals
            .iter()
            .map(|(outcome, total)| {
                let before = previous.get(outcome).copied().unwrap_or(0);
                (outcome.clone(), (total - before.min(*total)) as f64 / seconds)
            })
            .collect();
        let [p50, p95, p99] = self.latency.percentiles();
        let guard = self.guard_totals();
        wire::Stats {
            at: Some(Utc::now()),
            totals,
            rates,
            latency_ms: wire::LatencyPercentiles { p50, p95, p99 },
            in_flight: self.in_flight.load(Ordering::Relaxed),
            retries: guard.retries,
            budget_refusals: guard.budget_refusals,
            attempt_timeouts: guard.attempt_timeouts,
            breaker: Some(self.breaker()),
        }
    }

    /// What sends webhooks.
    pub fn dispatcher(&self) -> &Arc<Dispatcher> {
        &self.dispatcher
    }

    /// How often the reconciler runs.
    pub fn reconcile_interval(&self) -> Duration {
        self.settings.reconcile_interval
    }

    /// Whether outcomes wait for the store to come back.
    pub fn has_backlog(&self) -> bool {
        !self.backlog.is_empty()
    }

    fn owner(&self, request_id: &str) -> String {
        format!("{}/{request_id}", self.instance)
    }

    fn lease(&self) -> chrono::Duration {
        chrono::Duration::from_std(self.settings.lease).unwrap_or(chrono::Duration::MAX)
    }

    fn fingerprint(&self, canonical: &impl Serialize) -> String {
        crate::fingerprint::fingerprint(&self.fingerprint_key, canonical)
    }

    /// Runs one bank operation through `bank`'s guard (under `admission` if one was taken),
    /// counting each attempt's result.
    async fn call_bank<F, Fut>(
        &self,
        bank: &Acquirer,
        admission: Option<Admission>,
        operation: F,
    ) -> CallReport<BankReply>
    where
        F: Fn() -> Fut,
        Fut: Future<Output = BankReply>,
    {
        let attempt = |_| async {
            let started = tokio::time::Instant::now();
            let reply = operation().await;
            self.metrics.bank_call(&bank.name, crate::bank::result_label(&reply), started.elapsed());
            reply
        };
        match admission {
            Some(admission) => bank.guard.call_admitted(admission, attempt, classify).await,
            None => bank.guard.call(attempt, classify).await,
        }
    }

    /// Runs a store operation and records how long it took.
    async fn timed<T>(&self, operation: &str, work: impl Future<Output = T>) -> T {
        let started = tokio::time::Instant::now();
        let value = work.await;
        self.metrics.observe_store(operation, started.elapsed());
        value
    }
}
