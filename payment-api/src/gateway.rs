//! The payment flow: claim the idempotency key, charge through the resilience guard, and answer
//! in a way that never charges twice, never loses a payment, and never says something untrue.
//!
//! | what happened | payment | answer | key |
//! |---|---|---|---|
//! | bank approved | succeeded | 201 | stored |
//! | bank declined (or rejected the request) | declined / failed | 402 | stored |
//! | every attempt surely unprocessed, breaker open, overloaded | failed | 503 | released |
//! | maybe processed, inquiry finds the charge | settled | 201 / 402 | stored |
//! | maybe processed, inquiry finds nothing, every attempt was answered | failed | 503 | released |
//! | maybe processed, still unknown | processing | 202 | stored; the reconciler settles it |
//! | the bank may have acted, then the store failed | as above, written later | 503 `outcome_unknown` | written when the store returns |
//!
//! "Inquiry finds nothing" only proves nothing was charged when the bank answered every attempt:
//! an attempt that timed out may still be running at the bank and commit later, so such a payment
//! stays processing until the reconciler finds the charge or the bank's commit window has passed.
//!
//! Every change to a payment is a [`Change`] applied against the payment's stored version
//! ([`Gateway::commit_change`]): when two requests (two refunds, a request and the reconciler)
//! race on one payment, the loser applies its change again to the winner's payment, so no update
//! is ever lost. Refunds hold their amount on the payment before the bank is asked, so racing
//! refunds can never together refund more than was charged.
//!
//! The bank's idempotency key of a charge comes from the merchant, the client's key and the
//! request ([`bank_key`]), and a refund's from the charge's bank key and the refund's key
//! ([`refund_id`]): a retry reaches the bank as the same operation even when the store lost every
//! record of the first attempt.

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::time::Duration;

use axum::http::StatusCode;
use chrono::Utc;
use hmac::{Hmac, Mac};
use http_conventions::problem::{FieldError, Problem};
use resilience::{CallReport, CallResult, Guard, Rejected, StopReason};
use serde::Serialize;
use sha2::Sha256;
use tracing::{error, info, warn};
use uuid::Uuid;

use crate::backlog::{Backlog, RecordPlan, Unwritten};
use crate::bank::{BankCharge, BankClient, BankReply, Inquiry, classify};
use crate::config::Config;
use crate::events::{Events, LatencyWindow, PaymentEvent};
use crate::metrics::Metrics;
use crate::model::{
    CardSummary, Change, ChargeOutcome, CreatePayment, Payment, PaymentStatus, RefundRefusal, RefundStatus,
};
use crate::store::{
    Claim, ClaimRequest, Commit, Committed, RecordChange, Store, StoreError, StoredResponse, decide_claim, now_ms,
    scoped_key,
};

/// The namespace of the bank keys the gateway derives (UUID v5).
const BANK_KEY_NAMESPACE: Uuid = Uuid::from_u128(0x5f0c_7c1e_2b6d_4a4e_9d3e_8a61_c0de_ba4c);

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
    /// Outcomes the store could not take yet.
    pub backlog: Backlog,
    fingerprint_key: Vec<u8>,
    /// Names this process in idempotency leases.
    instance: String,
}

impl std::fmt::Debug for Gateway {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Gateway").field("store", &self.store.kind()).field("instance", &self.instance).finish()
    }
}

/// 503 `store_unavailable`: said only when nothing was sent to the bank (or the bank surely did
/// nothing), so "nothing was charged" is true.
pub fn store_problem(error: &StoreError) -> Problem {
    warn!(%error, "idempotency store unavailable; refusing to charge");
    Problem::new(
        StatusCode::SERVICE_UNAVAILABLE,
        "store_unavailable",
        "the idempotency store is unreachable; nothing was charged, retry later",
    )
    .with_retry_after(1)
}

/// 503 `outcome_unknown`: the bank may have acted, but its answer could not be recorded. Never
/// "nothing was charged": the client learns the outcome by retrying the same key.
fn outcome_unknown(what: &str) -> Problem {
    Problem::new(
        StatusCode::SERVICE_UNAVAILABLE,
        "outcome_unknown",
        format!(
            "the bank may have {what}, but the idempotency store is unreachable, so the outcome could not be \
             recorded yet; it will be. Retry with the same Idempotency-Key to learn it: it is never applied twice"
        ),
    )
    .with_retry_after(1)
}

/// The answer a settled (or processing) payment gets.
fn response_for(payment: &Payment) -> StoredResponse {
    let status = match payment.status {
        PaymentStatus::Processing => 202,
        PaymentStatus::Declined | PaymentStatus::Failed => 402,
        PaymentStatus::Succeeded | PaymentStatus::Refunded | PaymentStatus::PartiallyRefunded => 201,
    };
    StoredResponse { status, body: payment.public_json() }
}

/// The answer a refund gets: 201 once the bank refunded, 202 while its outcome is unknown.
fn refund_response(payment: &Payment, refund_id: &str) -> Option<StoredResponse> {
    let refund = payment.refund(refund_id)?;
    let status = match refund.status {
        RefundStatus::Succeeded => 201,
        RefundStatus::Pending => 202,
        RefundStatus::Failed => return None,
    };
    Some(StoredResponse { status, body: payment.refund_json(refund) })
}

/// What the bank's charge says about a payment.
fn outcome_of(charge: &BankCharge) -> ChargeOutcome {
    ChargeOutcome {
        charge_id: charge.id.clone(),
        approved: charge.status == "approved",
        decline_code: charge.decline_code.clone(),
    }
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

fn overloaded() -> Problem {
    Problem::new(StatusCode::SERVICE_UNAVAILABLE, "overloaded", "too many bank calls in flight; nothing was charged")
        .with_retry_after(1)
}

fn retry_after_secs(wait: Option<Duration>) -> u64 {
    wait.map_or(1, |d| d.as_secs_f64().ceil().max(1.0) as u64)
}

/// HMAC-SHA256 of the canonical request under the fingerprint key, hex: equal for equal requests,
/// and no card number can be recovered from it without the key.
pub fn fingerprint(key: &[u8], canonical: &impl Serialize) -> String {
    let bytes = serde_json::to_vec(canonical).unwrap_or_default();
    let mut mac =
        <Hmac<Sha256> as Mac>::new_from_slice(key).unwrap_or_else(|_| unreachable!("HMAC accepts keys of any length"));
    mac.update(&bytes);
    mac.finalize().into_bytes().iter().map(|b| format!("{b:02x}")).collect()
}

/// The bank key of a payment: the same for the same merchant, client key and request, so that a
/// retry after the store lost every record of the first attempt is still the same charge.
pub fn bank_key(merchant: &str, idempotency_key: &str, fingerprint: &str) -> String {
    let name = format!("charge\n{merchant}\n{idempotency_key}\n{fingerprint}");
    format!("pk_{}", Uuid::new_v5(&BANK_KEY_NAMESPACE, name.as_bytes()))
}

/// A refund's id, which is also its bank key: one per payment and refund key, so the same refund
/// key on another payment is another refund, and a retry is always the same one.
pub fn refund_id(merchant: &str, payment_bank_key: &str, idempotency_key: &str) -> String {
    let name = format!("refund\n{merchant}\n{payment_bank_key}\n{idempotency_key}");
    format!("re_{}", Uuid::new_v5(&BANK_KEY_NAMESPACE, name.as_bytes()))
}

/// How a commit went, once its change was applied to the payment as stored.
#[derive(Debug)]
struct Applied {
    /// The payment as written (or as found, when nothing was written).
    payment: Payment,
    /// What was done to the record, with the answer stored if one was.
    record: RecordOutcome,
}

#[derive(Debug, PartialEq, Eq)]
enum RecordOutcome {
    Kept,
    Answered(StoredResponse),
    Released,
    /// A live request holds the key: nothing was written.
    Refused,
    /// The key belongs to another payment or refund now: nothing was written.
    Superseded,
}

/// Why a change could not be committed.
#[derive(Debug)]
enum CommitError {
    Refused(RefundRefusal),
    Store(StoreError),
}

impl From<StoreError> for CommitError {
    fn from(error: StoreError) -> Self {
        CommitError::Store(error)
    }
}

/// Counts what the guard does not: attempts whose answer never came back.
#[derive(Debug, Default)]
struct Replies {
    answered: AtomicU32,
    lost: AtomicU32,
}

impl Replies {
    fn record(&self, reply: &BankReply) {
        self.answered.fetch_add(1, Ordering::Relaxed);
        if !reply.is_complete() {
            self.lost.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Attempts that timed out, or whose answer was lost: they may still commit at the bank.
    fn unanswered(&self, attempts: u32) -> u32 {
        attempts.saturating_sub(self.answered.load(Ordering::Relaxed)) + self.lost.load(Ordering::Relaxed)
    }
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
            backlog: Backlog::default(),
            fingerprint_key,
            instance: format!("gw_{}", Uuid::new_v4().simple()),
        })
    }

    pub fn fingerprint(&self, canonical: &impl Serialize) -> String {
        fingerprint(&self.fingerprint_key, canonical)
    }

    fn owner(&self, request_id: &str) -> String {
        format!("{}/{request_id}", self.instance)
    }

    fn lease(&self) -> chrono::Duration {
        chrono::Duration::from_std(self.settings.lease).unwrap_or(chrono::Duration::MAX)
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
            "succeeded" | "processing" | "declined" | "bank_unavailable" | "circuit_open" | "overloaded"
            | "outcome_unknown" => {
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
            version: 1,
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
            bank_key: Some(bank_key(merchant, idempotency_key, &fingerprint)),
            // If this request dies, the reconciler takes over once its lease has run out.
            reconcile_after: Some(now + self.lease()),
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
        let attempt = ChargeAttempt { key: &key, fingerprint: &fingerprint, owner: &owner, request_id, started };
        match claim {
            Claim::Fresh => {
                self.emit(&payment, None);
                self.charge(payment, &request, &attempt, false).await
            }
            Claim::TakeOver { resource_id } => {
                let existing = self.store.get_payment(&resource_id).await.map_err(|e| store_problem(&e))?;
                let payment = existing.unwrap_or(Payment { id: resource_id, ..payment });
                info!(payment_id = %payment.id, idempotency_key, "taking over a payment whose request died");
                if payment.is_settled() {
                    let plan = RecordPlan::AnswerPayment { key: key.clone(), fingerprint: Some(fingerprint.clone()) };
                    return match self
                        .commit_change(payment, &Change::Resend { at: now, lease: self.lease() }, &plan)
                        .await
                    {
                        Ok(Applied { record: RecordOutcome::Answered(response), .. }) => Ok(Answer::replay(response)),
                        Ok(_) => Err(key_in_use("payment", self.settings.lease)),
                        Err(CommitError::Store(e)) => Err(store_problem(&e)),
                        Err(CommitError::Refused(_)) => Err(key_in_use("payment", self.settings.lease)),
                    };
                }
                // Recorded before the bank sees the charge again, so the reconciler's commit
                // window starts over. Nothing was sent yet, so a store error here is harmless.
                let resend = Change::Resend { at: Utc::now(), lease: self.lease() };
                let applied = self
                    .timed("commit", self.commit_change(payment, &resend, &RecordPlan::Keep))
                    .await
                    .map_err(|e| match e {
                        CommitError::Store(e) => store_problem(&e),
                        CommitError::Refused(_) => key_in_use("payment", self.settings.lease),
                    })?;
                self.charge(applied.payment, &request, &attempt, true).await
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

    /// Runs one bank operation through the guard, counting each attempt's result, and reports
    /// how many attempts may still commit at the bank.
    async fn call_bank<F, Fut>(&self, operation: F) -> (CallReport<BankReply>, u32)
    where
        F: Fn() -> Fut,
        Fut: Future<Output = BankReply>,
    {
        let replies = Replies::default();
        let report = self
            .guard
            .call(
                |_| async {
                    let attempt = tokio::time::Instant::now();
                    let reply = operation().await;
                    self.metrics.bank_call(bank_result(&reply), attempt.elapsed());
                    replies.record(&reply);
                    reply
                },
                classify,
            )
            .await;
        let unanswered = replies.unanswered(report.attempts);
        (report, unanswered)
    }

    /// Charges through the guard and settles the payment from what happened.
    /// `inherited`: the payment was taken over from a request that died, whose attempts may still
    /// commit at the bank; then nothing this call sees proves the bank did not charge.
    async fn charge(
        &self,
        payment: Payment,
        request: &CreatePayment,
        attempt: &ChargeAttempt<'_>,
        inherited: bool,
    ) -> Result<Answer, Problem> {
        let bank_key = payment.bank_key().to_owned();
        let (report, unanswered) = self.call_bank(|| self.bank.charge(&bank_key, request, attempt.request_id)).await;
        let attempts = report.attempts;
        // Sure that this call did not charge: give up (unless the payment was inherited).
        let not_charged = |problem: Problem| Verdict::NotCharged { problem, attempts, inherited };
        let verdict = match report.result {
            CallResult::Success(reply) | CallResult::Definitive(reply) => match (reply.status(), reply.charge()) {
                (Some(201 | 200 | 402), Some(charge)) => {
                    Verdict::Change(Change::Settle { outcome: outcome_of(&charge), attempts, revive: true })
                }
                (status, _) => {
                    let code = reply.problem_code().unwrap_or_else(|| "unknown".into());
                    let reason = format!("the bank rejected the charge ({}: {code})", status.unwrap_or(0));
                    Verdict::Change(Change::Fail { reason, attempts })
                }
            },
            CallResult::CircuitOpen(rejected) => not_charged(circuit_open(rejected)),
            CallResult::Overloaded(_) => not_charged(overloaded()),
            CallResult::Failed { stop, .. } if !report.may_have_acted => not_charged(match stop {
                StopReason::CircuitOpen(rejected) => circuit_open(rejected),
                _ => bank_unavailable(),
            }),
            CallResult::Failed { .. } => {
                match self.bank.inquire(&bank_key, attempt.request_id, self.settings.inquiry_timeout).await {
                    Inquiry::Found(charge) => {
                        Verdict::Change(Change::Settle { outcome: outcome_of(&charge), attempts, revive: true })
                    }
                    Inquiry::NotFound if unanswered == 0 => not_charged(bank_unavailable()),
                    _ => Verdict::Change(Change::AwaitReconcile { at: Utc::now(), attempts }),
                }
            }
        };
        let answer = || RecordPlan::AnswerPayment {
            key: attempt.key.to_owned(),
            fingerprint: Some(attempt.fingerprint.to_owned()),
        };
        let (change, plan, problem) = match verdict {
            Verdict::Change(change) => (change, answer(), None),
            // Its own attempts may still commit: leave it to the reconciler.
            Verdict::NotCharged { attempts, inherited: true, .. } => {
                (Change::AwaitReconcile { at: Utc::now(), attempts }, answer(), None)
            }
            Verdict::NotCharged { problem, attempts, inherited: false } => (
                Change::Fail { reason: problem.detail.clone(), attempts },
                RecordPlan::ReleasePayment {
                    key: attempt.key.to_owned(),
                    owner: Some(attempt.owner.to_owned()),
                    fingerprint: Some(attempt.fingerprint.to_owned()),
                },
                Some(problem),
            ),
        };
        let may_have_charged = problem.is_none();
        match self.timed("commit", self.commit_change(payment.clone(), &change, &plan)).await {
            Ok(applied) => {
                self.emit(&applied.payment, Some(attempt.started.elapsed()));
                if applied.payment.status == PaymentStatus::Processing {
                    info!(payment_id = %applied.payment.id, "bank outcome unknown; payment left processing for the reconciler");
                }
                match applied.record {
                    RecordOutcome::Answered(response) => Ok(Answer::fresh(response)),
                    RecordOutcome::Released => Err(problem.unwrap_or_else(bank_unavailable)),
                    // A request that took the key over holds it now; it answers for the payment.
                    RecordOutcome::Refused | RecordOutcome::Kept => Err(key_in_use("payment", self.settings.lease)),
                    RecordOutcome::Superseded => self.replay_current(attempt.key).await,
                }
            }
            Err(CommitError::Store(error)) => {
                self.keep_for_later(Unwritten { payment, change, plan }, &error);
                if may_have_charged { Err(outcome_unknown("charged the card")) } else { Err(store_problem(&error)) }
            }
            Err(CommitError::Refused(_)) => Err(bank_unavailable()),
        }
    }

    /// The key now belongs to another payment (a retry made it after this one's record was
    /// lost): answer what it answers.
    async fn replay_current(&self, key: &str) -> Result<Answer, Problem> {
        match self.store.record(key).await.map_err(|e| store_problem(&e))? {
            Some(crate::store::IdempotencyRecord { state: crate::store::RecordState::Done { response }, .. }) => {
                Ok(Answer::replay(response))
            }
            _ => Err(key_in_use("payment", self.settings.lease)),
        }
    }

    /// Applies `change` to the payment as stored and writes it with `plan`'s record change, in one
    /// atomic step; when another change got there first, applies it again to that one.
    async fn commit_change(
        &self,
        mut payment: Payment,
        change: &Change,
        plan: &RecordPlan,
    ) -> Result<Applied, CommitError> {
        for _ in 0..64 {
            let next = payment.apply(change, Utc::now()).map_err(CommitError::Refused)?;
            let outcome = planned(&next, plan);
            let record = record_change(plan, &outcome, &next.id, self.settings.retention);
            match self.store.commit(Commit { payment: &next, record }).await? {
                Committed::Written => return Ok(Applied { payment: next, record: outcome }),
                Committed::Conflict(Some(current)) => payment = *current,
                Committed::Conflict(None) => {
                    return Err(StoreError::Corrupt(format!("payment {} changed and vanished", next.id)).into());
                }
                Committed::Refused => return Ok(Applied { payment, record: RecordOutcome::Refused }),
                Committed::Superseded => return Ok(Applied { payment, record: RecordOutcome::Superseded }),
            }
        }
        Err(StoreError::Unavailable(format!("payment {} kept changing; try again", payment.id)).into())
    }

    /// Keeps a change the store could not take, to write when it is back.
    fn keep_for_later(&self, unwritten: Unwritten, error: &StoreError) {
        warn!(%error, payment_id = %unwritten.payment.id, "store unavailable after the bank call; keeping the outcome to write later");
        let dropped = self.backlog.keep(unwritten);
        self.metrics.unwritten_outcomes.store(self.backlog.len() as u64, Ordering::Relaxed);
        if let Some(dropped) = dropped {
            error!(payment_id = %dropped.payment.id, "backlog of unwritten outcomes full; dropped the oldest (the reconciler will find it)");
        }
    }

    /// Writes what the store could not take before. Returns how many were written.
    pub async fn write_backlog(&self) -> usize {
        let mut written = 0;
        let mut waiting = self.backlog.take_all().into_iter();
        while let Some(unwritten) = waiting.next() {
            match self.commit_change(unwritten.payment.clone(), &unwritten.change, &unwritten.plan).await {
                Ok(applied) => {
                    written += 1;
                    info!(payment_id = %applied.payment.id, status = applied.payment.status.as_str(), "wrote an outcome the store could not take earlier");
                    self.emit(&applied.payment, None);
                }
                Err(CommitError::Refused(refusal)) => {
                    warn!(payment_id = %unwritten.payment.id, ?refusal, "an unwritten change no longer applies");
                }
                Err(CommitError::Store(_)) => {
                    // Still down: keep this one and the rest, in order, for the next pass.
                    self.backlog.keep(unwritten);
                    waiting.for_each(|rest| {
                        self.backlog.keep(rest);
                    });
                    break;
                }
            }
        }
        self.metrics.unwritten_outcomes.store(self.backlog.len() as u64, Ordering::Relaxed);
        written
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
        let refund_id = refund_id(merchant, payment.bank_key(), idempotency_key);

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
        let release = RecordPlan::ReleaseRefund {
            key: key.clone(),
            refund_id: refund_id.clone(),
            owner: Some(owner.clone()),
            fingerprint: Some(fingerprint.clone()),
        };

        // Hold the amount on the payment first: racing refunds see each other's holds.
        let reserve = Change::ReserveRefund {
            id: refund_id.clone(),
            amount,
            idempotency_key: idempotency_key.to_owned(),
            at: Utc::now(),
            lease: self.lease(),
        };
        let payment = match self.commit_change(payment.clone(), &reserve, &RecordPlan::Keep).await {
            Ok(applied) => applied.payment,
            Err(CommitError::Refused(refusal)) => {
                let problem = match refusal {
                    RefundRefusal::NotRefundable(status) => Problem::new(
                        StatusCode::CONFLICT,
                        "invalid_state",
                        format!(
                            "payment {payment_id} is {}; only a succeeded payment can be refunded",
                            status.as_str()
                        ),
                    ),
                    RefundRefusal::OverRefund { remaining } => Problem::validation(vec![FieldError::new(
                        "amount",
                        format!("must be between 1 and the {remaining} left to refund"),
                    )]),
                };
                return match self
                    .commit_change(payment, &Change::RefundFailed { id: refund_id.clone() }, &release)
                    .await
                {
                    Ok(_) => Err(problem),
                    Err(CommitError::Store(error)) => Err(store_problem(&error)),
                    Err(CommitError::Refused(_)) => Err(problem),
                };
            }
            Err(CommitError::Store(error)) => return Err(store_problem(&error)),
        };
        let Some(refund) = payment.refund(&refund_id).cloned() else {
            return Err(bank_unavailable());
        };
        if refund.status == RefundStatus::Succeeded {
            // A request that died after the bank refunded: answer what it would have.
            let plan = RecordPlan::AnswerRefund { key, refund_id, fingerprint: Some(fingerprint) };
            return self.settle_refund(payment, Change::RefundSucceeded { id: refund.id.clone() }, plan, true).await;
        }
        let charge_id = payment.bank_charge_id.clone().unwrap_or_default();

        let (report, unanswered) =
            self.call_bank(|| self.bank.refund(&charge_id, &refund_id, refund.amount, request_id)).await;
        let answered = |change| {
            (
                change,
                RecordPlan::AnswerRefund {
                    key: key.clone(),
                    refund_id: refund_id.clone(),
                    fingerprint: Some(fingerprint.clone()),
                },
            )
        };
        let failed =
            |problem: Problem| (Change::RefundFailed { id: refund_id.clone() }, release.clone(), Some(problem));
        let (change, plan, problem) = match report.result {
            CallResult::Success(_) => {
                let (change, plan) = answered(Change::RefundSucceeded { id: refund_id.clone() });
                (change, plan, None)
            }
            CallResult::Definitive(reply) => failed(match reply.status() {
                Some(409) => Problem::new(StatusCode::CONFLICT, "invalid_state", "the bank refused the refund"),
                _ => Problem::validation(vec![FieldError::new("amount", "the bank refused the refund amount")]),
            }),
            CallResult::CircuitOpen(_) | CallResult::Overloaded(_) => failed(bank_unavailable()),
            CallResult::Failed { .. } if !report.may_have_acted => failed(bank_unavailable()),
            // Maybe refunded: ask the bank whether the charge carries this refund.
            CallResult::Failed { .. } => match self.bank.get_charge(&charge_id, request_id).await.charge() {
                Some(charge) if charge.refunds.iter().any(|r| r.idempotency_key == refund_id) => {
                    let (change, plan) = answered(Change::RefundSucceeded { id: refund_id.clone() });
                    (change, plan, None)
                }
                Some(_) if unanswered == 0 => failed(bank_unavailable()),
                _ => {
                    let (change, plan) = answered(Change::RefundPending { id: refund_id.clone(), at: Utc::now() });
                    (change, plan, None)
                }
            },
        };
        let may_have_refunded = problem.is_none();
        match self.commit_change(payment.clone(), &change, &plan).await {
            Ok(applied) => {
                self.emit(&applied.payment, None);
                match applied.record {
                    RecordOutcome::Answered(response) => {
                        info!(
                            payment_id,
                            refund_id,
                            amount = refund.amount,
                            status = response.status,
                            "refund answered"
                        );
                        Ok(Answer::fresh(response))
                    }
                    RecordOutcome::Released => Err(problem.unwrap_or_else(bank_unavailable)),
                    RecordOutcome::Refused | RecordOutcome::Kept | RecordOutcome::Superseded => {
                        Err(key_in_use("refund", self.settings.lease))
                    }
                }
            }
            Err(CommitError::Store(error)) => {
                self.keep_for_later(Unwritten { payment, change, plan }, &error);
                if may_have_refunded { Err(outcome_unknown("refunded")) } else { Err(store_problem(&error)) }
            }
            Err(CommitError::Refused(_)) => Err(bank_unavailable()),
        }
    }

    /// Stores a refund's answer as it already stands on the payment.
    async fn settle_refund(
        &self,
        payment: Payment,
        change: Change,
        plan: RecordPlan,
        replayed: bool,
    ) -> Result<Answer, Problem> {
        match self.commit_change(payment, &change, &plan).await {
            Ok(Applied { record: RecordOutcome::Answered(response), .. }) if replayed => Ok(Answer::replay(response)),
            Ok(Applied { record: RecordOutcome::Answered(response), .. }) => Ok(Answer::fresh(response)),
            Ok(_) | Err(CommitError::Refused(_)) => Err(key_in_use("refund", self.settings.lease)),
            Err(CommitError::Store(error)) => Err(store_problem(&error)),
        }
    }

    /// A payment of this merchant, or 404 (another merchant's payment does not exist for you).
    pub async fn payment(&self, merchant: &str, payment_id: &str) -> Result<Payment, Problem> {
        match self.store.get_payment(payment_id).await.map_err(|e| store_problem(&e))? {
            Some(payment) if payment.merchant_id == merchant => Ok(payment),
            _ => Err(Problem::not_found(format!("no payment {payment_id}"))),
        }
    }

    /// One pass of the reconciler over the payments that are due: processing ones, and ones with
    /// a pending refund. Returns how many it settled or released.
    pub async fn reconcile_due(&self) -> Result<usize, StoreError> {
        let due = self.store.due_payments(now_ms(), 100).await?;
        self.metrics.reconciler_backlog.store(due.len() as u64, Ordering::Relaxed);
        let mut settled = 0;
        for payment in due {
            let done = if payment.status == PaymentStatus::Processing {
                self.reconcile(payment).await?
            } else {
                self.reconcile_refunds(payment).await?
            };
            if done {
                settled += 1;
            }
        }
        Ok(settled)
    }

    /// Whether the bank can no longer commit an operation last sent at `last_sent`.
    fn commit_window_passed(&self, last_sent: chrono::DateTime<Utc>) -> bool {
        let quiet = (Utc::now() - last_sent).to_std().unwrap_or_default();
        quiet > self.settings.bank_deadline + self.settings.commit_window
    }

    /// Commits a reconciler's change; a store error ends the pass (the next one tries again).
    async fn reconciler_commit(
        &self,
        payment: Payment,
        change: Change,
        plan: RecordPlan,
    ) -> Result<Applied, StoreError> {
        let committed = self.commit_change(payment, &change, &plan).await;
        match committed {
            Ok(applied) => Ok(applied),
            Err(CommitError::Store(error)) => Err(error),
            Err(CommitError::Refused(refusal)) => {
                Err(StoreError::Corrupt(format!("reconciler change refused: {refusal:?}")))
            }
        }
    }

    async fn reschedule(&self, payment: Payment) -> Result<(), StoreError> {
        let at = Utc::now() + self.settings.reconcile_interval * 2;
        let change = if payment.status == PaymentStatus::Processing {
            Change::AwaitReconcile { at, attempts: 0 }
        } else {
            let pending = payment.refunds.iter().find(|r| r.status == RefundStatus::Pending).map(|r| r.id.clone());
            let Some(id) = pending else { return Ok(()) };
            Change::RefundPending { id, at }
        };
        self.reconciler_commit(payment, change, RecordPlan::Keep).await.map(drop)
    }

    async fn reconcile(&self, payment: Payment) -> Result<bool, StoreError> {
        let key = scoped_key(&payment.merchant_id, "payment", &payment.idempotency_key);
        let last_sent = payment.last_attempt_at.unwrap_or(payment.created_at);
        match self.bank.inquire(payment.bank_key(), "reconciler", self.settings.inquiry_timeout).await {
            Inquiry::Found(charge) => {
                let change = Change::Settle { outcome: outcome_of(&charge), attempts: 0, revive: false };
                let plan = RecordPlan::AnswerPayment { key, fingerprint: None };
                let applied = self.reconciler_commit(payment.clone(), change, plan).await?;
                let settled = matches!(applied.payment.status, PaymentStatus::Succeeded | PaymentStatus::Declined);
                if applied.record == RecordOutcome::Superseded || !settled {
                    // Failed meanwhile (the charge is a newer payment's), or its key is another
                    // payment's: not this payment's charge to claim.
                    return self.reschedule(payment).await.map(|()| false);
                }
                info!(payment_id = %applied.payment.id, status = applied.payment.status.as_str(), "reconciled payment");
                self.metrics.reconciled.inc(format!("result=\"{}\"", applied.payment.status.as_str()));
                self.emit(&applied.payment, None);
                Ok(true)
            }
            Inquiry::NotFound if self.commit_window_passed(last_sent) => {
                let change = Change::Fail { reason: "the bank has no record of this charge".into(), attempts: 0 };
                // Not from under a live request: a client's retry may have taken the payment over.
                let plan = RecordPlan::ReleasePayment { key, owner: None, fingerprint: None };
                let applied = self.reconciler_commit(payment, change, plan).await?;
                if applied.record != RecordOutcome::Released {
                    return Ok(false);
                }
                info!(payment_id = %applied.payment.id, "reconciled payment: never charged; key released");
                self.metrics.reconciled.inc("result=\"released\"".to_owned());
                self.emit(&applied.payment, None);
                Ok(true)
            }
            other => {
                if let Inquiry::Unknown(reason) = other {
                    warn!(payment_id = %payment.id, reason, "reconciler could not reach the bank");
                }
                self.reschedule(payment).await.map(|()| false)
            }
        }
    }

    /// Settles the pending refunds of a payment from what the bank's charge carries.
    async fn reconcile_refunds(&self, payment: Payment) -> Result<bool, StoreError> {
        let charge_id = payment.bank_charge_id.clone().unwrap_or_default();
        let reply = tokio::time::timeout(self.settings.inquiry_timeout, self.bank.get_charge(&charge_id, "reconciler"));
        let Some(charge) = reply.await.ok().filter(|r| r.status() == Some(200)).and_then(|r| r.charge()) else {
            warn!(payment_id = %payment.id, "reconciler could not read the charge of a pending refund");
            return self.reschedule(payment).await.map(|()| false);
        };
        let pending: Vec<_> = payment.refunds.iter().filter(|r| r.status == RefundStatus::Pending).cloned().collect();
        let mut current = payment;
        let mut settled = false;
        for refund in pending {
            let key = scoped_key(&current.merchant_id, "refund", &refund.idempotency_key);
            let last_sent = refund.last_attempt_at.unwrap_or(refund.created_at);
            let (change, plan) = if charge.refunds.iter().any(|r| r.idempotency_key == refund.id) {
                let plan = RecordPlan::AnswerRefund { key, refund_id: refund.id.clone(), fingerprint: None };
                (Change::RefundSucceeded { id: refund.id.clone() }, plan)
            } else if self.commit_window_passed(last_sent) {
                let plan =
                    RecordPlan::ReleaseRefund { key, refund_id: refund.id.clone(), owner: None, fingerprint: None };
                (Change::RefundFailed { id: refund.id.clone() }, plan)
            } else {
                continue;
            };
            let applied = self.reconciler_commit(current.clone(), change, plan).await?;
            if applied.record == RecordOutcome::Refused {
                continue;
            }
            current = applied.payment;
            settled = true;
            info!(payment_id = %current.id, refund_id = %refund.id, "reconciled refund");
            self.metrics.reconciled.inc("result=\"refund\"".to_owned());
            self.emit(&current, None);
        }
        if current.has_pending_refunds() {
            self.reschedule(current).await?;
        }
        Ok(settled)
    }
}

/// What one payment request carries through the charge.
#[derive(Debug)]
struct ChargeAttempt<'a> {
    key: &'a str,
    fingerprint: &'a str,
    owner: &'a str,
    request_id: &'a str,
    started: tokio::time::Instant,
}

/// What the bank call showed.
enum Verdict {
    /// The bank may have acted (or answered): apply this.
    Change(Change),
    /// The bank surely did not charge under this call.
    NotCharged { problem: Problem, attempts: u32, inherited: bool },
}

/// What `plan` comes to for the payment as changed.
fn planned(next: &Payment, plan: &RecordPlan) -> RecordOutcome {
    match plan {
        RecordPlan::Keep => RecordOutcome::Kept,
        RecordPlan::AnswerPayment { .. } => RecordOutcome::Answered(response_for(next)),
        // Someone else settled it meanwhile: answer that instead of freeing the key.
        RecordPlan::ReleasePayment { .. } if next.status != PaymentStatus::Failed => {
            RecordOutcome::Answered(response_for(next))
        }
        RecordPlan::ReleasePayment { .. } => RecordOutcome::Released,
        RecordPlan::AnswerRefund { refund_id, .. } => {
            refund_response(next, refund_id).map_or(RecordOutcome::Kept, RecordOutcome::Answered)
        }
        RecordPlan::ReleaseRefund { refund_id, .. } => {
            refund_response(next, refund_id).map_or(RecordOutcome::Released, RecordOutcome::Answered)
        }
    }
}

/// The record change that carries out `outcome` under `plan`'s key.
fn record_change<'a>(
    plan: &'a RecordPlan,
    outcome: &'a RecordOutcome,
    payment_id: &'a str,
    retention: Duration,
) -> RecordChange<'a> {
    let (key, resource_id, fingerprint, owner) = match plan {
        RecordPlan::Keep => return RecordChange::Keep,
        RecordPlan::AnswerPayment { key, fingerprint } => (key, payment_id, fingerprint, None),
        RecordPlan::ReleasePayment { key, owner, fingerprint } => (key, payment_id, fingerprint, owner.as_deref()),
        RecordPlan::AnswerRefund { key, refund_id, fingerprint } => (key, refund_id.as_str(), fingerprint, None),
        RecordPlan::ReleaseRefund { key, refund_id, owner, fingerprint } => {
            (key, refund_id.as_str(), fingerprint, owner.as_deref())
        }
    };
    match outcome {
        RecordOutcome::Answered(response) => {
            RecordChange::Finish { key, resource_id, fingerprint: fingerprint.as_deref(), response, retention }
        }
        RecordOutcome::Released => RecordChange::Release { key, resource_id, owner },
        _ => RecordChange::Keep,
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
