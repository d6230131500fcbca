//! `POST /v1/payments/{id}/capture` and `/cancel`: the two ends of an authorization, each made
//! exactly once per idempotency key, and never both.
//!
//! 1. Claim the operation's key (or take over the operation of a request that died, or replay).
//! 2. Begin it on the payment (`Change::BeginCapture` / `BeginCancel`), against its stored
//!    version: a capture and a cancel racing on one payment see each other, so exactly one begins
//!    and the other is 409 before the bank is asked.
//! 3. Send it to the bank under a key derived from the payment and the operation, so that
//!    retries, take-overs and the reconciler are one operation there (and a client's cancel and
//!    the gateway's own at `capture_before` are one void).
//! 4. Ask the settlement table what that comes to; commit it with the key's record, or free the
//!    key when the bank surely did nothing. A 409 from the bank (nothing held) is answered by what
//!    became of the hold: captured, voided, or expired.
//!
//! The reconciler settles a pending capture or cancel by status inquiry ([`Gateway::reconcile_hold`])
//! and cancels an authorization that reached `capture_before` ([`Gateway::expire`]).

use chrono::Utc;
use serde::Serialize;
use tracing::{info, warn};

use super::backlog::{RecordPlan, Subject, Unwritten};
use super::claim::{Claimed, refused, store_failed};
use super::commit::{Applied, CommitError, RecordOutcome};
use super::create::not_done;
use super::finish::Outcome;
use super::settle::{Inquired, Rejection, Settlement};
use super::{Answer, Gateway};
use crate::bank::{AuthorizationStatus, BankAuthorization, BankReply, HoldOperation, Inquiry};
use crate::error::{Operation, PaymentError};
use crate::fingerprint::hold_operation_key;
use crate::model::{CancellationReason, Change, HoldEnd, MAX_AMOUNT, Payment, PaymentStatus, PendingKind};
use crate::store::StoreError;

/// A capture (of `amount`, `None`: all) or a cancel, as a client or the gateway asks for it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum HoldOp {
    Capture { amount: Option<i64> },
    Cancel { reason: CancellationReason },
}

impl HoldOp {
    fn end(self) -> HoldEnd {
        match self {
            HoldOp::Capture { .. } => HoldEnd::Capture,
            HoldOp::Cancel { .. } => HoldEnd::Cancel,
        }
    }

    fn of(kind: PendingKind) -> Self {
        match kind {
            PendingKind::Capture { amount } => HoldOp::Capture { amount: Some(amount) },
            PendingKind::Cancel { reason } => HoldOp::Cancel { reason },
        }
    }

    fn begin(self, idempotency_key: Option<&str>, lease: chrono::Duration) -> Change {
        let at = Utc::now();
        match (self, idempotency_key) {
            (HoldOp::Capture { amount }, Some(key)) => {
                Change::BeginCapture { amount, idempotency_key: key.to_owned(), at, lease }
            }
            // Only the gateway cancels without a key; it never captures.
            (HoldOp::Capture { .. }, None) | (HoldOp::Cancel { .. }, _) => Change::BeginCancel {
                reason: self.reason(),
                idempotency_key: idempotency_key.map(str::to_owned),
                at,
                lease,
            },
        }
    }

    fn reason(self) -> CancellationReason {
        match self {
            HoldOp::Cancel { reason } => reason,
            HoldOp::Capture { .. } => CancellationReason::Requested,
        }
    }
}

fn operation_of(end: HoldEnd) -> Operation {
    match end {
        HoldEnd::Capture => Operation::Capture,
        HoldEnd::Cancel => Operation::Cancel,
    }
}

fn bank_operation(end: HoldEnd) -> HoldOperation {
    match end {
        HoldEnd::Capture => HoldOperation::Capture,
        HoldEnd::Cancel => HoldOperation::Void,
    }
}

/// The bank key of a payment's capture or void.
fn bank_key_of(payment: &Payment, end: HoldEnd) -> String {
    let noun = match end {
        HoldEnd::Capture => "capture",
        HoldEnd::Cancel => "void",
    };
    hold_operation_key(&payment.merchant_id, payment.bank_key(), noun)
}

/// What a capture's or cancel's fingerprint covers.
#[derive(Serialize)]
struct HoldFingerprint<'a> {
    payment_id: &'a str,
    operation: &'a str,
    amount: Option<i64>,
}

/// What the bank's authorization says became of the hold, as a change to the payment; `None`
/// while it is still held (or never was).
fn hold_change(authorization: &BankAuthorization, reason: CancellationReason) -> Option<Change> {
    let at = Utc::now();
    match authorization.status {
        AuthorizationStatus::Captured => Some(Change::Captured {
            amount: authorization.captured_amount,
            charge_id: authorization.charge_id.clone().unwrap_or_default(),
        }),
        AuthorizationStatus::Voided => Some(Change::Canceled { reason, at }),
        AuthorizationStatus::Expired => Some(Change::Canceled { reason: CancellationReason::Expired, at }),
        AuthorizationStatus::Authorized | AuthorizationStatus::Declined => None,
    }
}

/// How the key's record goes with each outcome of a hold operation.
struct Plans {
    /// The operation was done (or may have been): store its answer.
    answer: RecordPlan,
    /// It surely was not: free the key (or, for the gateway's own cancel, keep nothing).
    release: RecordPlan,
    /// For the gateway's own cancel: when to try again after a failure.
    retry_at: Option<chrono::DateTime<Utc>>,
}

impl Gateway {
    /// `POST /v1/payments/{id}/capture`: captures `amount` (`None`: all) of an authorization.
    pub async fn capture(
        &self,
        merchant: &str,
        payment_id: &str,
        idempotency_key: &str,
        amount: Option<i64>,
        request_id: &str,
    ) -> Result<Answer, PaymentError> {
        if let Some(amount) = amount
            && !(1..=MAX_AMOUNT).contains(&amount)
        {
            let field =
                http_conventions::problem::FieldError::new("amount", "must be a positive integer of minor units");
            return Err(PaymentError::Invalid(vec![field]));
        }
        self.hold_operation(merchant, payment_id, idempotency_key, HoldOp::Capture { amount }, request_id).await
    }

    /// `POST /v1/payments/{id}/cancel`: releases an authorization.
    pub async fn cancel(
        &self,
        merchant: &str,
        payment_id: &str,
        idempotency_key: &str,
        request_id: &str,
    ) -> Result<Answer, PaymentError> {
        let cancel = HoldOp::Cancel { reason: CancellationReason::Requested };
        self.hold_operation(merchant, payment_id, idempotency_key, cancel, request_id).await
    }

    async fn hold_operation(
        &self,
        merchant: &str,
        payment_id: &str,
        idempotency_key: &str,
        op: HoldOp,
        request_id: &str,
    ) -> Result<Answer, PaymentError> {
        let end = op.end();
        let operation = operation_of(end);
        let payment = self.payment(merchant, payment_id).await?;
        let key = operation.scoped_key(merchant, idempotency_key);
        let amount = match op {
            HoldOp::Capture { amount } => amount,
            HoldOp::Cancel { .. } => None,
        };
        let fingerprint = self.fingerprint(&HoldFingerprint { payment_id, operation: operation.noun(), amount });
        let owner = self.owner(request_id);
        let inherited = match self.claim_operation(operation, &key, &fingerprint, &owner, payment_id).await? {
            Claimed::Go { inherited } => inherited,
            Claimed::Replay(answer) => return Ok(answer),
        };
        let subject = match end {
            HoldEnd::Capture => Subject::Capture(idempotency_key.to_owned()),
            HoldEnd::Cancel => Subject::Cancel(idempotency_key.to_owned()),
        };
        let plans = Plans {
            answer: RecordPlan::answer(&key, subject.clone(), Some(&fingerprint)),
            release: RecordPlan::answer_or_release(&key, subject, Some(&fingerprint), Some(&owner)),
            retry_at: None,
        };
        let store_failed = store_failed(operation, inherited);

        // Begin it on the payment first: a capture and a cancel racing see each other here.
        let begin = op.begin(Some(idempotency_key), self.lease());
        let payment = match self.commit_change(payment.clone(), &begin, &RecordPlan::Keep).await {
            Ok(applied) => applied.payment,
            Err(CommitError::Refused(refusal)) => {
                let error = refused(operation, payment_id, refusal);
                // Nothing was begun: free the key, so a corrected request may use it.
                return match self.commit_change(payment, &Change::Nothing, &plans.release).await {
                    Err(CommitError::Store(store)) => Err(store_failed(store)),
                    Ok(_) | Err(CommitError::Refused(_)) => Err(error),
                };
            }
            Err(CommitError::Store(error)) => return Err(store_failed(error)),
        };
        if !payment.pending.as_ref().is_some_and(|p| p.is(end, Some(idempotency_key))) {
            // Done already under this key (a request that died after the bank acted): answer it.
            return match self.commit_change(payment, &Change::Nothing, &plans.answer).await {
                Ok(Applied { record: RecordOutcome::Answered(response), .. }) => Ok(Answer::replay(response)),
                Ok(_) | Err(CommitError::Refused(_)) => Err(self.key_in_use(operation)),
                Err(CommitError::Store(error)) => Err(store_failed(error)),
            };
        }
        let outcome = self.send_hold_operation(&payment, request_id, inherited, plans).await;
        let answered = self.finish(operation, payment, outcome).await;
        if let Ok(answer) = &answered {
            info!(payment_id, operation = operation.noun(), status = answer.status, "hold operation answered");
        }
        answered
    }

    /// Sends the payment's pending capture or cancel to the bank and says what it comes to.
    async fn send_hold_operation(&self, payment: &Payment, request_id: &str, inherited: bool, plans: Plans) -> Outcome {
        let Some(pending) = payment.pending.clone() else {
            unreachable!("a hold operation is sent only once begun");
        };
        let end = pending.kind.end();
        let op = HoldOp::of(pending.kind);
        let operation = operation_of(end);
        let authorization_id = payment.authorization_id.clone().unwrap_or_default();
        let bank_key = bank_key_of(payment, end);
        let bank = self.router.of(payment);
        let report = self
            .call_bank(bank, None, || async {
                match pending.kind {
                    PendingKind::Capture { amount } => {
                        bank.client.capture(&authorization_id, &bank_key, amount, request_id).await
                    }
                    PendingKind::Cancel { .. } => bank.client.void(&authorization_id, &bank_key, request_id).await,
                }
            })
            .await;
        let read = |reply: &BankReply| match (reply.status(), reply.authorization()) {
            (Some(200..=299), Some(authorization)) => Ok(authorization),
            (status, _) => Err(Rejection { status, code: reply.problem_code() }),
        };
        let inquire = || async {
            let timeout = self.settings.inquiry_timeout;
            Inquired::from(bank.client.inquire_hold(bank_operation(end), &bank_key, request_id, timeout).await)
        };
        let key = pending.idempotency_key.clone();
        let undone = |error: PaymentError| Outcome {
            change: Change::OperationNotDone {
                end,
                idempotency_key: key.clone(),
                sent_at: pending.last_attempt_at,
                retry_at: plans.retry_at,
            },
            plan: plans.release.clone(),
            refused: Some(error),
            may_have_acted: false,
        };
        match self.settlement(report, inherited, read, inquire).await {
            Settlement::Settle(authorization) => match hold_change(&authorization, op.reason()) {
                Some(change) => Outcome { change, plan: plans.answer, refused: None, may_have_acted: true },
                None => undone(PaymentError::BankUnavailable { operation }),
            },
            Settlement::Rejected(rejection) => {
                // A 409: the bank holds nothing to capture or void. What became of the hold says
                // what to record (it expired, most likely).
                let found = match rejection.status {
                    Some(409) => {
                        let timeout = self.settings.inquiry_timeout;
                        bank.client.get_authorization(&authorization_id, request_id, timeout).await
                    }
                    _ => None,
                };
                match found.as_ref().and_then(|held| hold_change(held, op.reason())) {
                    Some(change) => {
                        let status = match change {
                            Change::Captured { .. } => PaymentStatus::Succeeded,
                            _ => PaymentStatus::Canceled,
                        };
                        let error = PaymentError::InvalidState { operation, payment_id: payment.id.clone(), status };
                        Outcome { change, plan: plans.release, refused: Some(error), may_have_acted: true }
                    }
                    None => {
                        warn!(payment_id = %payment.id, status = ?rejection.status, code = ?rejection.code, "the bank refused a hold operation");
                        undone(PaymentError::BankUnavailable { operation })
                    }
                }
            }
            Settlement::NotDone(why) => undone(not_done(operation, &why)),
            Settlement::Inquire | Settlement::AwaitReconcile => Outcome {
                change: Change::OperationPending { at: Utc::now() },
                plan: plans.answer,
                refused: None,
                may_have_acted: true,
            },
        }
    }

    /// Cancels an authorization that reached `capture_before` (`cancellation_reason: expired`),
    /// under the same bank key as a client's cancel. Returns whether it was released.
    pub(super) async fn expire(&self, payment: Payment) -> Result<bool, StoreError> {
        let op = HoldOp::Cancel { reason: CancellationReason::Expired };
        let payment = match self.commit_change(payment, &op.begin(None, self.lease()), &RecordPlan::Keep).await {
            Ok(applied) => applied.payment,
            // A client's capture or cancel got there first; it settles the payment.
            Err(CommitError::Refused(_)) => return Ok(false),
            Err(CommitError::Store(error)) => return Err(error),
        };
        if !payment.pending.as_ref().is_some_and(|p| p.is(HoldEnd::Cancel, None)) {
            return Ok(false);
        }
        let retry_at = Some(Utc::now() + self.settings.reconcile_interval * 2);
        let plans = Plans { answer: RecordPlan::Keep, release: RecordPlan::Keep, retry_at };
        let outcome = self.send_hold_operation(&payment, "reconciler", false, plans).await;
        self.reconciler_settle(payment, outcome.change, outcome.plan, outcome.may_have_acted).await
    }

    /// Settles a pending capture or cancel by status inquiry: what the bank did under its key, or,
    /// once the bank can no longer commit it, that it was not done. Returns whether it settled.
    pub(super) async fn reconcile_hold(&self, payment: Payment) -> Result<bool, StoreError> {
        let Some(pending) = payment.pending.clone() else { return Ok(false) };
        let end = pending.kind.end();
        let op = HoldOp::of(pending.kind);
        let (answer, release) = match &pending.idempotency_key {
            Some(key) => {
                let scoped = operation_of(end).scoped_key(&payment.merchant_id, key);
                let subject = match end {
                    HoldEnd::Capture => Subject::Capture(key.clone()),
                    HoldEnd::Cancel => Subject::Cancel(key.clone()),
                };
                // Never from under a live request: a client's retry may have taken it over.
                (
                    RecordPlan::answer(&scoped, subject.clone(), None),
                    RecordPlan::answer_or_release(&scoped, subject, None, None),
                )
            }
            None => (RecordPlan::Keep, RecordPlan::Keep),
        };
        let timeout = self.settings.inquiry_timeout;
        let bank_key = bank_key_of(&payment, end);
        let bank = self.router.of(&payment);
        match bank.client.inquire_hold(bank_operation(end), &bank_key, "reconciler", timeout).await {
            Inquiry::Found(authorization) => match hold_change(&authorization, op.reason()) {
                Some(change) => self.reconciler_settle(payment, change, answer, true).await,
                None => self.reschedule_hold(payment).await,
            },
            Inquiry::NotFound if self.commit_window_passed(pending.last_attempt_at) => {
                let retry_at =
                    pending.idempotency_key.is_none().then(|| Utc::now() + self.settings.reconcile_interval * 2);
                let change = Change::OperationNotDone {
                    end,
                    idempotency_key: pending.idempotency_key.clone(),
                    sent_at: pending.last_attempt_at,
                    retry_at,
                };
                self.reconciler_settle(payment, change, release, false).await
            }
            other => {
                if let Inquiry::Unknown(reason) = other {
                    warn!(payment_id = %payment.id, reason, "reconciler could not reach the bank");
                }
                self.reschedule_hold(payment).await
            }
        }
    }

    async fn reschedule_hold(&self, payment: Payment) -> Result<bool, StoreError> {
        let at = Utc::now() + self.settings.reconcile_interval * 2;
        match self.commit_change(payment, &Change::OperationPending { at }, &RecordPlan::Keep).await {
            Ok(_) | Err(CommitError::Refused(_)) => Ok(false),
            Err(CommitError::Store(error)) => Err(error),
        }
    }

    /// Commits what the reconciler found out about a hold; keeps it for later if the store fails
    /// after the bank may have acted. Returns whether the payment settled.
    async fn reconciler_settle(
        &self,
        payment: Payment,
        change: Change,
        plan: RecordPlan,
        may_have_acted: bool,
    ) -> Result<bool, StoreError> {
        match self.commit_change(payment.clone(), &change, &plan).await {
            Ok(applied) => {
                let settled = applied.payment.pending.is_none();
                if settled {
                    info!(payment_id = %applied.payment.id, status = applied.payment.shown_status().as_str(), "reconciled authorization");
                    self.metrics.reconciled.inc(format!("result=\"{}\"", applied.payment.shown_status().as_str()));
                }
                Ok(settled)
            }
            Err(CommitError::Refused(_)) => Ok(false),
            Err(CommitError::Store(error)) => {
                if may_have_acted {
                    self.keep_for_later(Unwritten { payment, change, plan }, &error);
                }
                Err(error)
            }
        }
    }
}
