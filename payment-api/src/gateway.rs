//! The payment flow: claim the idempotency key, charge through the resilience guard, and answer
//! in a way that never charges twice and never loses a payment.
//!
//! | what happened | payment | answer | key |
//! |---|---|---|---|
//! | bank approved | succeeded | 201 | stored |
//! | bank declined (or rejected the request) | declined / failed | 402 | stored |
//! | every attempt surely unprocessed, breaker open, overloaded | failed | 503 | released |
//! | maybe processed, inquiry finds the charge | settled | 201 / 402 | stored |
//! | maybe processed, inquiry finds nothing, every attempt was answered | failed | 503 | released |
//! | maybe processed, still unknown | processing | 202 | stored; the reconciler settles it |
//!
//! "Inquiry finds nothing" only proves nothing was charged when the bank answered every attempt:
//! an attempt that timed out may still be running at the bank and commit later, so such a payment
//! stays processing until the reconciler finds the charge or the bank's commit window has passed.

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::time::Duration;

use axum::http::StatusCode;
use chrono::Utc;
use hmac::{Hmac, Mac};
use http_conventions::problem::{FieldError, Problem};
use resilience::{CallResult, Guard, Rejected, StopReason};
use serde::Serialize;
use sha2::Sha256;
use tracing::{info, warn};
use uuid::Uuid;

use crate::bank::{BankCharge, BankClient, BankReply, Inquiry, classify};
use crate::config::Config;
use crate::events::{Events, LatencyWindow, PaymentEvent};
use crate::metrics::Metrics;
use crate::model::{CardSummary, CreatePayment, Payment, PaymentStatus, Refund};
use crate::store::{Claim, ClaimRequest, Store, StoreError, StoredResponse, decide_claim, now_ms, scoped_key};

/// What an endpoint answers: a status and a JSON body, maybe replayed.
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

/// Settings the flow needs, taken from the configuration once.
#[derive(Debug, Clone)]
pub struct Settings {
    pub lease: Duration,
    pub retention: Duration,
    pub commit_window: Duration,
    pub inquiry_timeout: Duration,
    /// The bank call's overall deadline: attempts may be sent until then.
    pub bank_deadline: Duration,
    pub reconcile_interval: Duration,
    pub currencies: Vec<String>,
}

pub struct Gateway {
    pub store: Store,
    pub bank: BankClient,
    pub guard: Guard,
    pub settings: Settings,
    pub metrics: Arc<Metrics>,
    pub events: Arc<Events>,
    pub latency: LatencyWindow,
    /// Payment requests being answered now.
    pub in_flight: AtomicU64,
    fingerprint_key: Vec<u8>,
    /// Names this process in idempotency leases.
    instance: String,
}

impl std::fmt::Debug for Gateway {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Gateway").field("store", &self.store.kind()).field("instance", &self.instance).finish()
    }
}

pub fn store_problem(error: &StoreError) -> Problem {
    warn!(%error, "idempotency store unavailable; refusing to charge");
    Problem::new(
        StatusCode::SERVICE_UNAVAILABLE,
        "store_unavailable",
        "the idempotency store is unreachable; nothing was charged, retry later",
    )
    .with_retry_after(1)
}

fn stored(status: u16, payment: &Payment) -> StoredResponse {
    StoredResponse { status, body: payment.public_json() }
}

/// The answer a settled (or processing) payment gets.
fn response_for(payment: &Payment) -> StoredResponse {
    let status = match payment.status {
        PaymentStatus::Processing => 202,
        PaymentStatus::Declined | PaymentStatus::Failed => 402,
        PaymentStatus::Succeeded | PaymentStatus::Refunded | PaymentStatus::PartiallyRefunded => 201,
    };
    stored(status, payment)
}

/// Records what the bank says about the charge.
fn settle_from_charge(payment: &mut Payment, charge: &BankCharge) {
    payment.bank_charge_id = Some(charge.id.clone());
    payment.status = if charge.status == "approved" { PaymentStatus::Succeeded } else { PaymentStatus::Declined };
    payment.decline_code = charge.decline_code.clone();
    payment.reconcile_after = None;
    payment.updated_at = Utc::now();
}

fn fail(payment: &mut Payment, reason: impl Into<String>) {
    payment.status = PaymentStatus::Failed;
    payment.failure_reason = Some(reason.into());
    payment.reconcile_after = None;
    payment.updated_at = Utc::now();
}

/// 409: another request holds the key; retry once its lease may have ended (at most 5 s).
fn key_in_use(what: &str, retry_after: Duration) -> Problem {
    Problem::new(
        StatusCode::CONFLICT,
        "idempotency_key_in_use",
        format!("a {what} with this Idempotency-Key is still being processed; retry later"),
    )
    .with_retry_after(retry_after_secs(Some(retry_after)).min(5))
}

/// 422: the key was used with another request.
fn key_reused() -> Problem {
    Problem::new(
        StatusCode::UNPROCESSABLE_ENTITY,
        "idempotency_key_reused",
        "this Idempotency-Key was already used with a different request",
    )
}

/// 503 `circuit_open`: the breaker refused the bank call, so nothing was charged.
fn circuit_open(rejected: Rejected) -> Problem {
    Problem::new(
        StatusCode::SERVICE_UNAVAILABLE,
        "circuit_open",
        "the bank is failing and calls to it are paused; nothing was charged",
    )
    .with_retry_after(retry_after_secs(rejected.retry_after))
}

fn retry_after_secs(wait: Option<Duration>) -> u64 {
    wait.map_or(1, |d| d.as_secs_f64().ceil().max(1.0) as u64)
}

impl Gateway {
    pub fn new(config: &Config, store: Store, events: Arc<Events>) -> anyhow::Result<Self> {
        let fingerprint_key = match &config.fingerprint_key {
            Some(key) => key.as_bytes().to_vec(),
            None => Uuid::new_v4().as_bytes().to_vec(),
        };
        Ok(Self {
            store,
            bank: BankClient::new(&config.bank_url)?,
            guard: Guard::new(config.guard())?,
            settings: Settings {
                lease: config.lease(),
                retention: config.retention(),
                commit_window: config.commit_window(),
                inquiry_timeout: std::time::Duration::from_millis(config.attempt_timeout_ms),
                bank_deadline: std::time::Duration::from_millis(config.deadline_ms),
                reconcile_interval: std::time::Duration::from_millis(config.reconcile_interval_ms),
                currencies: config.currencies.clone(),
            },
            metrics: Arc::new(Metrics::default()),
            events,
            latency: LatencyWindow::default(),
            in_flight: AtomicU64::new(0),
            fingerprint_key,
            instance: format!("gw_{}", Uuid::new_v4().simple()),
        })
    }

    /// HMAC-SHA256 of the canonical request, hex: equal for equal requests, and no card number
    /// can be recovered from it without the key.
    pub fn fingerprint(&self, canonical: &impl Serialize) -> String {
        let bytes = serde_json::to_vec(canonical).unwrap_or_default();
        let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(&self.fingerprint_key)
            .unwrap_or_else(|_| unreachable!("HMAC accepts keys of any length"));
        mac.update(&bytes);
        mac.finalize().into_bytes().iter().map(|b| format!("{b:02x}")).collect()
    }

    fn owner(&self, request_id: &str) -> String {
        format!("{}/{request_id}", self.instance)
    }

    /// `POST /v1/payments`: answers, and counts what the answer was.
    pub async fn create_payment(
        &self,
        merchant: &str,
        idempotency_key: &str,
        request: CreatePayment,
        request_id: &str,
    ) -> Result<Answer, Problem> {
        let started = tokio::time::Instant::now();
        self.in_flight.fetch_add(1, Ordering::Relaxed);
        let result = self.answer_payment(merchant, idempotency_key, request, request_id, started).await;
        self.in_flight.fetch_sub(1, Ordering::Relaxed);
        let outcome = match &result {
            Ok(answer) if answer.replayed => {
                self.metrics.idempotent_replays.fetch_add(1, Ordering::Relaxed);
                "replayed"
            }
            Ok(answer) => match answer.status {
                201 => "succeeded",
                202 => "processing",
                _ => "declined",
            },
            Err(problem) => problem.code,
        };
        match outcome {
            "idempotency_key_in_use" | "idempotency_key_reused" => {
                self.metrics.idempotency_conflicts.inc(format!("kind=\"{outcome}\""));
            }
            "succeeded" | "processing" | "declined" | "bank_unavailable" | "circuit_open" | "overloaded" => {
                self.latency.record(started.elapsed());
            }
            _ => {}
        }
        self.metrics.payment(outcome);
        result
    }

    async fn answer_payment(
        &self,
        merchant: &str,
        idempotency_key: &str,
        request: CreatePayment,
        request_id: &str,
        started: tokio::time::Instant,
    ) -> Result<Answer, Problem> {
        request.validate(&self.settings.currencies)?;
        let key = scoped_key(merchant, "payment", idempotency_key);
        if let Some(rejected) = self.guard.breaker().refuse_if_open() {
            return self.answer_while_open(&key, &request, rejected).await;
        }
        let fingerprint = self.fingerprint(&request.canonical());
        let now = Utc::now();
        let payment = Payment {
            // Time-ordered (UUID v7): new payments land next to each other in the embedded store's
            // B-trees instead of dirtying a random page each, and ids sort by creation.
            id: format!("pay_{}", Uuid::now_v7()),
            status: PaymentStatus::Processing,
            amount: request.amount,
            currency: request.currency.clone(),
            order_id: request.order_id.clone(),
            description: request.description.clone(),
            metadata: request.metadata.clone(),
            card: CardSummary::of(&request.card.number),
            decline_code: None,
            failure_reason: None,
            bank_charge_id: None,
            attempts: 0,
            refunded_amount: 0,
            refunds: Vec::new(),
            created_at: now,
            updated_at: now,
            merchant_id: merchant.to_owned(),
            idempotency_key: idempotency_key.to_owned(),
            // If this request dies, the reconciler takes over once its lease has run out.
            reconcile_after: Some(now + self.settings.lease),
            last_attempt_at: Some(now),
        };
        let owner = self.owner(request_id);
        let claim = self
            .timed(
                "claim",
                self.store.claim(ClaimRequest {
                    key: &key,
                    fingerprint: &fingerprint,
                    owner: &owner,
                    resource_id: &payment.id,
                    lease: self.settings.lease,
                    retention: self.settings.retention,
                    insert: Some(&payment),
                }),
            )
            .await
            .map_err(|e| store_problem(&e))?;
        tracing::Span::current().record("payment_id", payment.id.as_str());
        match claim {
            Claim::Fresh => {
                self.emit(&payment, None);
                self.charge(payment, &request, &key, request_id, started, false).await
            }
            Claim::TakeOver { resource_id } => {
                let existing = self.store.get_payment(&resource_id).await.map_err(|e| store_problem(&e))?;
                let mut payment = existing.unwrap_or(Payment { id: resource_id, ..payment });
                info!(payment_id = %payment.id, idempotency_key, "taking over a payment whose request died");
                if payment.is_settled() {
                    let response = response_for(&payment);
                    self.finish(&key, &payment, &response, None).await?;
                    return Ok(Answer::replay(response));
                }
                // Recorded before the bank sees the charge again, so the reconciler's commit
                // window starts over.
                payment.last_attempt_at = Some(Utc::now());
                payment.reconcile_after = Some(Utc::now() + self.settings.lease);
                self.timed("put", self.store.put_payment(&payment)).await.map_err(|e| store_problem(&e))?;
                self.charge(payment, &request, &key, request_id, started, true).await
            }
            Claim::Replay(response) => Ok(Answer::replay(response)),
            Claim::InUse { retry_after } => Err(key_in_use("payment", retry_after)),
            Claim::Mismatch => Err(key_reused()),
        }
    }

    /// While the breaker refuses every bank call, a payment is answered from its key's record
    /// alone (a replay, 409 or 422, as the claim would) and otherwise refused with 503 before
    /// anything is built or written: nothing could be charged, so there is nothing to record.
    async fn answer_while_open(
        &self,
        key: &str,
        request: &CreatePayment,
        rejected: Rejected,
    ) -> Result<Answer, Problem> {
        let record = self.timed("record", self.store.record(key)).await.map_err(|e| store_problem(&e))?;
        // Nothing else is needed to refuse a key nobody has used: the fingerprint, the payment and
        // the claim are for keys with a record.
        let Some(record) = record else { return Err(circuit_open(rejected)) };
        let fingerprint = self.fingerprint(&request.canonical());
        let claim = ClaimRequest {
            key,
            fingerprint: &fingerprint,
            owner: "",
            resource_id: "",
            lease: self.settings.lease,
            retention: self.settings.retention,
            insert: None,
        };
        match decide_claim(Some(&record), &claim, now_ms()).0 {
            Claim::Replay(response) => Ok(Answer::replay(response)),
            Claim::InUse { retry_after } => Err(key_in_use("payment", retry_after)),
            Claim::Mismatch => Err(key_reused()),
            Claim::Fresh | Claim::TakeOver { .. } => Err(circuit_open(rejected)),
        }
    }

    /// Charges through the guard and settles the payment from what happened.
    /// `inherited`: the payment was taken over from a request that died, whose attempts may still
    /// commit at the bank; then nothing this call sees proves the bank did not charge.
    async fn charge(
        &self,
        mut payment: Payment,
        request: &CreatePayment,
        key: &str,
        request_id: &str,
        started: tokio::time::Instant,
        inherited: bool,
    ) -> Result<Answer, Problem> {
        let bank_key = payment.id.clone();
        let owner = self.owner(request_id);
        let replies = AtomicU32::new(0);
        let lost = AtomicU32::new(0);
        let report = self
            .guard
            .call(
                |_| async {
                    let attempt = tokio::time::Instant::now();
                    let reply = self.bank.charge(&bank_key, request, request_id).await;
                    self.metrics.bank_call(bank_result(&reply), attempt.elapsed());
                    replies.fetch_add(1, Ordering::Relaxed);
                    if !reply.is_complete() {
                        lost.fetch_add(1, Ordering::Relaxed);
                    }
                    reply
                },
                classify,
            )
            .await;
        payment.attempts += report.attempts;
        // Attempts that timed out, or whose answer was lost, may still commit at the bank.
        let unanswered = report.attempts - replies.load(Ordering::Relaxed) + lost.load(Ordering::Relaxed);

        match report.result {
            CallResult::Success(reply) | CallResult::Definitive(reply) => {
                self.settle_with_reply(&mut payment, &reply);
                let response = response_for(&payment);
                self.finish(key, &payment, &response, Some(started.elapsed())).await?;
                Ok(Answer::fresh(response))
            }
            CallResult::CircuitOpen(rejected) => {
                self.give_up(payment, key, &owner, circuit_open(rejected), started, inherited).await
            }
            CallResult::Overloaded(_) => {
                let problem = Problem::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "overloaded",
                    "too many bank calls in flight; nothing was charged",
                )
                .with_retry_after(1);
                self.give_up(payment, key, &owner, problem, started, inherited).await
            }
            CallResult::Failed { stop, .. } if !report.may_have_acted => {
                let problem = match stop {
                    StopReason::CircuitOpen(rejected) => circuit_open(rejected),
                    _ => bank_unavailable(),
                };
                self.give_up(payment, key, &owner, problem, started, inherited).await
            }
            CallResult::Failed { .. } => {
                match self.bank.inquire(&payment.id, request_id, self.settings.inquiry_timeout).await {
                    Inquiry::Found(charge) => {
                        settle_from_charge(&mut payment, &charge);
                        let response = response_for(&payment);
                        self.finish(key, &payment, &response, Some(started.elapsed())).await?;
                        Ok(Answer::fresh(response))
                    }
                    Inquiry::NotFound if unanswered == 0 => {
                        self.give_up(payment, key, &owner, bank_unavailable(), started, inherited).await
                    }
                    _ => self.leave_processing(payment, key, started).await,
                }
            }
        }
    }

    fn settle_with_reply(&self, payment: &mut Payment, reply: &BankReply) {
        match (reply.status(), reply.charge()) {
            (Some(201 | 200 | 402), Some(charge)) => settle_from_charge(payment, &charge),
            (status, _) => {
                let code = reply.problem_code().unwrap_or_else(|| "unknown".into());
                fail(payment, format!("the bank rejected the charge ({}: {code})", status.unwrap_or(0)));
            }
        }
    }

    async fn finish(
        &self,
        key: &str,
        payment: &Payment,
        response: &StoredResponse,
        latency: Option<Duration>,
    ) -> Result<(), Problem> {
        self.timed("finish", self.store.finish(key, &payment.id, response, self.settings.retention, Some(payment)))
            .await
            .map_err(|e| store_problem(&e))?;
        self.emit(payment, latency);
        Ok(())
    }

    /// The outcome is unknown: the payment stays processing (202) and the reconciler settles it.
    async fn leave_processing(
        &self,
        mut payment: Payment,
        key: &str,
        started: tokio::time::Instant,
    ) -> Result<Answer, Problem> {
        payment.reconcile_after = Some(Utc::now());
        payment.updated_at = Utc::now();
        let response = response_for(&payment);
        self.finish(key, &payment, &response, Some(started.elapsed())).await?;
        info!(payment_id = %payment.id, "bank outcome unknown; payment left processing for the reconciler");
        Ok(Answer::fresh(response))
    }

    /// This call surely did not get the bank to charge: the payment fails and the key is freed
    /// for a retry; unless the payment was inherited from a request that died, whose own attempts
    /// may still commit, in which case it is left processing for the reconciler.
    async fn give_up(
        &self,
        mut payment: Payment,
        key: &str,
        owner: &str,
        problem: Problem,
        started: tokio::time::Instant,
        inherited: bool,
    ) -> Result<Answer, Problem> {
        if inherited {
            return self.leave_processing(payment, key, started).await;
        }
        fail(&mut payment, problem.detail.clone());
        let released = self
            .timed("release", self.store.release(key, &payment.id, Some(owner), Some(&payment)))
            .await
            .map_err(|e| store_problem(&e))?;
        if released {
            self.emit(&payment, Some(started.elapsed()));
        }
        Err(problem)
    }

    /// Runs a store operation and records how long it took.
    async fn timed<T>(&self, operation: &str, work: impl Future<Output = T>) -> T {
        let started = tokio::time::Instant::now();
        let value = work.await;
        self.metrics.observe_store(operation, started.elapsed());
        value
    }

    /// Announces a payment's (new) state on the live stream.
    fn emit(&self, payment: &Payment, latency: Option<Duration>) {
        self.events.publish(
            "payment",
            &PaymentEvent {
                payment_id: payment.id.clone(),
                merchant_id: payment.merchant_id.clone(),
                status: payment.status.as_str().to_owned(),
                amount: payment.amount,
                currency: payment.currency.clone(),
                attempts: payment.attempts,
                latency_ms: latency.map(|d| d.as_secs_f64() * 1_000.0),
                decline_code: payment.decline_code.clone(),
                failure_reason: payment.failure_reason.clone(),
                at: Utc::now(),
            },
        );
    }

    /// `POST /v1/payments/{id}/refunds`.
    pub async fn refund(
        &self,
        merchant: &str,
        payment_id: &str,
        idempotency_key: &str,
        amount: Option<i64>,
        request_id: &str,
    ) -> Result<Answer, Problem> {
        let payment = self.payment(merchant, payment_id).await?;
        let key = scoped_key(merchant, "refund", idempotency_key);
        #[derive(Serialize)]
        struct RefundFingerprint<'a> {
            payment_id: &'a str,
            amount: Option<i64>,
        }
        let fingerprint = self.fingerprint(&RefundFingerprint { payment_id, amount });
        // The refund id is derived from the scoped key, so a retry after a release reaches the
        // bank under the same refund key and can never refund twice.
        let refund_id = format!("re_{}", Uuid::new_v5(&Uuid::NAMESPACE_OID, key.as_bytes()));

        let owner = self.owner(request_id);
        let claim = self
            .store
            .claim(ClaimRequest {
                key: &key,
                fingerprint: &fingerprint,
                owner: &owner,
                resource_id: &refund_id,
                lease: self.settings.lease,
                retention: self.settings.retention,
                insert: None,
            })
            .await
            .map_err(|e| store_problem(&e))?;
        match claim {
            Claim::Fresh | Claim::TakeOver { .. } => {}
            Claim::Replay(response) => return Ok(Answer::replay(response)),
            Claim::InUse { retry_after } => return Err(key_in_use("refund", retry_after)),
            Claim::Mismatch => return Err(key_reused()),
        }

        let release = |problem: Problem| async {
            self.store.release(&key, &refund_id, Some(&owner), None).await.map_err(|e| store_problem(&e))?;
            Err::<Answer, Problem>(problem)
        };
        let refundable = matches!(payment.status, PaymentStatus::Succeeded | PaymentStatus::PartiallyRefunded);
        let Some(charge_id) = payment.bank_charge_id.clone().filter(|_| refundable) else {
            return release(Problem::new(
                StatusCode::CONFLICT,
                "invalid_state",
                format!(
                    "payment {payment_id} is {}; only a succeeded payment can be refunded",
                    payment.status.as_str()
                ),
            ))
            .await;
        };
        let remaining = payment.amount - payment.refunded_amount;
        let amount = amount.unwrap_or(remaining);
        if amount <= 0 || amount > remaining {
            return release(Problem::validation(vec![FieldError::new(
                "amount",
                format!("must be between 1 and the {remaining} left to refund"),
            )]))
            .await;
        }

        let report = self.guard.call(|_| self.bank.refund(&charge_id, &refund_id, amount, request_id), classify).await;
        let refunded = match report.result {
            CallResult::Success(_) => true,
            CallResult::Definitive(reply) => {
                let problem = match reply.status() {
                    Some(409) => Problem::new(StatusCode::CONFLICT, "invalid_state", "the bank refused the refund"),
                    _ => Problem::validation(vec![FieldError::new("amount", "the bank refused the refund amount")]),
                };
                return release(problem).await;
            }
            CallResult::CircuitOpen(_) | CallResult::Overloaded(_) => return release(bank_unavailable()).await,
            CallResult::Failed { .. } if !report.may_have_acted => return release(bank_unavailable()).await,
            // Maybe refunded: ask the bank whether the charge carries this refund.
            CallResult::Failed { .. } => self
                .bank
                .get_charge(&charge_id, request_id)
                .await
                .charge()
                .is_some_and(|c| c.refunds.iter().any(|r| r.idempotency_key == refund_id)),
        };
        if !refunded {
            return release(bank_unavailable()).await;
        }
        let refund = Refund {
            id: refund_id.clone(),
            object: "refund".into(),
            payment_id: payment.id.clone(),
            amount,
            status: "succeeded".into(),
            bank_refund_id: None,
            created_at: Utc::now(),
        };
        let updated = self.store.apply_refund(&payment.id, &refund).await.map_err(|e| store_problem(&e))?;
        if let Some(updated) = &updated {
            self.emit(updated, None);
        }
        let body = serde_json::to_string(&refund).unwrap_or_default();
        let response = StoredResponse { status: 201, body };
        self.store
            .finish(&key, &refund_id, &response, self.settings.retention, updated.as_ref())
            .await
            .map_err(|e| store_problem(&e))?;
        info!(payment_id, refund_id, amount, "refund made");
        Ok(Answer::fresh(response))
    }

    /// A payment of this merchant, or 404 (another merchant's payment does not exist for you).
    pub async fn payment(&self, merchant: &str, payment_id: &str) -> Result<Payment, Problem> {
        match self.store.get_payment(payment_id).await.map_err(|e| store_problem(&e))? {
            Some(payment) if payment.merchant_id == merchant => Ok(payment),
            _ => Err(Problem::not_found(format!("no payment {payment_id}"))),
        }
    }

    /// One pass of the reconciler over the processing payments that are due. Returns how many
    /// it settled or released.
    pub async fn reconcile_due(&self) -> Result<usize, StoreError> {
        let due = self.store.due_payments(now_ms(), 100).await?;
        self.metrics.reconciler_backlog.store(due.len() as u64, Ordering::Relaxed);
        let mut settled = 0;
        for payment in due {
            if self.reconcile(payment).await? {
                settled += 1;
            }
        }
        Ok(settled)
    }

    /// Whether the bank can no longer commit any attempt of this payment: the commit window has
    /// passed since the last attempt could have been sent.
    fn commit_window_passed(&self, payment: &Payment) -> bool {
        let last_sent = payment.last_attempt_at.unwrap_or(payment.created_at);
        let quiet = (Utc::now() - last_sent).to_std().unwrap_or_default();
        quiet > self.settings.bank_deadline + self.settings.commit_window
    }

    async fn reconcile(&self, mut payment: Payment) -> Result<bool, StoreError> {
        let key = scoped_key(&payment.merchant_id, "payment", &payment.idempotency_key);
        match self.bank.inquire(&payment.id, "reconciler", self.settings.inquiry_timeout).await {
            Inquiry::Found(charge) => {
                settle_from_charge(&mut payment, &charge);
                let response = response_for(&payment);
                self.store.finish(&key, &payment.id, &response, self.settings.retention, Some(&payment)).await?;
                info!(payment_id = %payment.id, status = payment.status.as_str(), "reconciled payment");
                self.metrics.reconciled.inc(format!("result=\"{}\"", payment.status.as_str()));
                self.emit(&payment, None);
                Ok(true)
            }
            Inquiry::NotFound if self.commit_window_passed(&payment) => {
                fail(&mut payment, "the bank has no record of this charge");
                // Not from under a live request: a client's retry may have taken the payment over.
                if !self.store.release(&key, &payment.id, None, Some(&payment)).await? {
                    return Ok(false);
                }
                info!(payment_id = %payment.id, "reconciled payment: never charged; key released");
                self.metrics.reconciled.inc("result=\"released\"".to_owned());
                self.emit(&payment, None);
                Ok(true)
            }
            other => {
                if let Inquiry::Unknown(reason) = other {
                    warn!(payment_id = %payment.id, reason, "reconciler could not reach the bank");
                }
                payment.reconcile_after = Some(Utc::now() + self.settings.reconcile_interval * 2);
                self.store.put_payment(&payment).await?;
                Ok(false)
            }
        }
    }
}

/// The label of a bank call attempt's result.
fn bank_result(reply: &BankReply) -> &'static str {
    match reply {
        BankReply::Answer { status: 200..=299, .. } => "approved",
        BankReply::Answer { status: 402, .. } => "declined",
        BankReply::Answer { status: 429, .. } => "throttled",
        BankReply::Answer { status: 503, .. } => "unavailable",
        BankReply::Answer { status: 400..=499, .. } => "rejected",
        BankReply::Answer { .. } => "server_error",
        BankReply::NotSent(_) => "not_sent",
        BankReply::Lost(_) => "lost",
    }
}

fn bank_unavailable() -> Problem {
    Problem::new(
        StatusCode::SERVICE_UNAVAILABLE,
        "bank_unavailable",
        "the bank did not take the payment; nothing was charged",
    )
    .with_retry_after(1)
}
