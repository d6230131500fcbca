//! `POST /v1/payments`: a payment charged exactly once per idempotency key.
//!
//! 1. Route: the banks that take the currency, in the router's order; the first whose breaker
//!    admits a call. While every breaker is open, answer from the key's record alone and write
//!    nothing (nothing could be charged).
//! 2. Claim the key together with a new `processing` payment at that bank (or take over the
//!    payment of a request that died, at its bank, or replay, or refuse).
//! 3. Charge through that bank's guard under the payment's bank key.
//! 4. Ask the settlement table what that comes to. If the bank surely did nothing, or declined with
//!    a code another bank may approve, record the move and charge at the next bank whose breaker
//!    admits a call: never after an outcome that is not known, which could charge twice.
//! 5. Commit the outcome with the key's record: the answer stored, or the key freed when no bank
//!    did anything. If the store fails after a bank may have acted, the outcome is kept for later
//!    and the client told `outcome_unknown`.

use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use resilience::Rejected;
use tracing::info;
use uuid::Uuid;

use super::backlog::{RecordPlan, Subject};
use super::commit::{Applied, CommitError, RecordOutcome};
use super::finish::Outcome;
use super::route::Acquirer;
use super::settle::{Inquired, NotDone, Rejection, Settlement};
use super::{Answer, Gateway};
use crate::bank::{
    AuthorizationStatus, BankAuthorization, BankCharge, BankReply, ChargeStatus, HoldOperation, Inquiry,
};
use crate::error::{Operation, PaymentError};
use crate::fingerprint::bank_key;
use crate::metrics::label;
use crate::model::{
    CancellationReason, CardSummary, Change, ChargeOutcome, CreatePayment, HoldClosed, Payment, PaymentStatus,
    events_for,
};
use crate::store::{Claim, ClaimRequest, KeyStatus, key_status, now_ms};
use http_conventions::problem::FieldError;

/// What one payment request carries through the charge.
#[derive(Debug)]
struct Attempt<'a> {
    key: &'a str,
    fingerprint: &'a str,
    owner: &'a str,
    request_id: &'a str,
}

/// What the bank said about a charge, as the payment keeps it.
fn outcome_of(charge: &BankCharge) -> ChargeOutcome {
    ChargeOutcome {
        id: charge.id.clone(),
        approved: charge.status == ChargeStatus::Approved,
        decline_code: charge.decline_code.clone(),
        closed: None,
    }
}

/// What the bank said about the authorization of a payment made with `capture: false`: approved
/// once held, and what became of the hold since, if it is closed (found so by a retry after the
/// store forgot the payment).
fn authorization_outcome(authorization: &BankAuthorization) -> ChargeOutcome {
    let closed = match authorization.status {
        AuthorizationStatus::Captured => Some(HoldClosed::Captured {
            amount: authorization.captured_amount,
            charge_id: authorization.charge_id.clone().unwrap_or_default(),
        }),
        AuthorizationStatus::Voided => Some(HoldClosed::Released(CancellationReason::Requested)),
        AuthorizationStatus::Expired => Some(HoldClosed::Released(CancellationReason::Expired)),
        AuthorizationStatus::Authorized | AuthorizationStatus::Declined => None,
    };
    ChargeOutcome {
        id: authorization.id.clone(),
        approved: authorization.status != AuthorizationStatus::Declined,
        decline_code: authorization.decline_code.clone(),
        closed,
    }
}

/// Reads the bank's answer to a charge (or an authorization, for `capture: false`).
fn read_charge_reply(capture: bool, reply: &BankReply) -> Result<ChargeOutcome, Rejection> {
    let outcome = match (reply.status(), capture) {
        (Some(200 | 201 | 402), true) => reply.charge().map(|charge| outcome_of(&charge)),
        (Some(200 | 201 | 402), false) => reply.authorization().map(|held| authorization_outcome(&held)),
        _ => None,
    };
    outcome.ok_or_else(|| Rejection { status: reply.status(), code: reply.problem_code() })
}

/// The error a bank call for `operation` that did nothing comes to.
pub(super) fn not_done(operation: Operation, why: &NotDone) -> PaymentError {
    match why {
        NotDone::CircuitOpen(rejected) => PaymentError::CircuitOpen { operation, retry_after: rejected.retry_after },
        NotDone::Overloaded => PaymentError::Overloaded { operation },
        NotDone::BankUnavailable | NotDone::NothingFound => PaymentError::BankUnavailable { operation },
    }
}

impl Gateway {
    /// Status inquiry of a payment's charge (or authorization) by its bank key.
    pub(super) async fn inquire_payment(&self, payment: &Payment, request_id: &str) -> Inquiry<ChargeOutcome> {
        let timeout = self.settings.inquiry_timeout;
        let bank = self.router.of(payment);
        if payment.capture {
            bank.client.inquire(payment.bank_key(), request_id, timeout).await.map(|charge| outcome_of(&charge))
        } else {
            let inquiry = bank.client.inquire_hold(HoldOperation::Authorize, payment.bank_key(), request_id, timeout);
            inquiry.await.map(|held| authorization_outcome(&held))
        }
    }

    pub(super) async fn answer_payment(
        &self,
        merchant: &str,
        idempotency_key: &str,
        request: CreatePayment,
        request_id: &str,
    ) -> Result<Answer, PaymentError> {
        request.validate(&self.settings.currencies).map_err(PaymentError::Invalid)?;
        let key = Operation::Payment.scoped_key(merchant, idempotency_key);
        let candidates = self.router.candidates(&request.currency);
        if candidates.is_empty() {
            let detail = format!("no bank takes {}", request.currency);
            return Err(PaymentError::Invalid(vec![FieldError::new("currency", detail)]));
        }
        // The first bank whose breaker lets a call through; with every breaker open, nothing is
        // written (see `answer_while_open`).
        let (bank, admission) = match admit_first(&candidates, &[]) {
            Ok(admitted) => admitted,
            Err(rejected) => return self.answer_while_open(&key, &request, rejected).await,
        };
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
            capture: request.capture,
            authorization_id: None,
            amount_captured: None,
            capture_before: (!request.capture).then(|| now + self.settings.authorization_ttl),
            canceled_at: None,
            cancellation_reason: None,
            pending: None,
            capture_key: None,
            cancel_key: None,
            acquirer: Some(bank.name.clone()),
            attempted_acquirers: vec![bank.name.clone()],
        };
        let routed = Arc::clone(&bank);
        let admitted = Some((bank, admission));
        let owner = self.owner(request_id);
        let claim = ClaimRequest {
            key: &key,
            fingerprint: &fingerprint,
            owner: &owner,
            resource_id: &payment.id,
            lease: self.settings.lease,
            retention: self.settings.retention,
            insert: Some(&payment),
            events: &events_for(None, &payment, now),
        };
        let claimed = self.timed("claim", self.store.claim(claim)).await?;
        tracing::Span::current().record("payment_id", payment.id.as_str());
        let attempt = Attempt { key: &key, fingerprint: &fingerprint, owner: &owner, request_id };
        match claimed {
            Claim::Fresh => {
                routed.count_routed();
                self.charge(payment, &request, &attempt, admitted, false).await
            }
            Claim::TakeOver { resource_id } => {
                // The request that died may have charged: from here on a store failure is
                // `outcome_unknown`, never "nothing was charged".
                let unknown = |_| PaymentError::OutcomeUnknown { operation: Operation::Payment };
                let existing = self.store.get_payment(&resource_id).await.map_err(unknown)?;
                let payment = match existing {
                    Some(existing) => existing,
                    None => self.locate_lost(Payment { id: resource_id, ..payment }, request_id).await,
                };
                info!(payment_id = %payment.id, idempotency_key, "taking over a payment whose request died");
                let resend = Change::Resend { at: Utc::now(), lease: self.lease() };
                if payment.is_settled() {
                    let plan = RecordPlan::answer(&key, Subject::Payment, Some(&fingerprint));
                    return match self.commit_change(payment, &resend, &plan).await {
                        Ok(Applied { record: RecordOutcome::Answered(response), .. }) => Ok(Answer::replay(response)),
                        Ok(_) | Err(CommitError::Refused(_)) => Err(self.key_in_use(Operation::Payment)),
                        Err(CommitError::Store(error)) => Err(unknown(error)),
                    };
                }
                // Recorded before the bank sees the charge again, so the reconciler's commit
                // window starts over.
                let applied = match self.timed("commit", self.commit_change(payment, &resend, &RecordPlan::Keep)).await
                {
                    Ok(applied) => applied,
                    Err(CommitError::Store(error)) => return Err(unknown(error)),
                    Err(CommitError::Refused(_)) => return Err(self.key_in_use(Operation::Payment)),
                };
                self.charge(applied.payment, &request, &attempt, admitted, true).await
            }
            Claim::Replay(response) => Ok(Answer::replay(response)),
            Claim::InUse { retry_after } => Err(PaymentError::KeyInUse { operation: Operation::Payment, retry_after }),
            Claim::Mismatch => Err(PaymentError::KeyReused),
        }
    }

    /// A payment the store lost while its key survived: the request that died may have charged
    /// it at any bank that takes its currency. Before anything is charged, each is asked by the
    /// bank key; the payment goes on at the bank that has the charge, else at the first that could
    /// not say (charging there again is deduplicated by the bank key), else where it was routed.
    async fn locate_lost(&self, payment: Payment, request_id: &str) -> Payment {
        let banks = self.router.candidates(&payment.currency);
        if banks.len() < 2 {
            return payment;
        }
        let mut unsure: Option<String> = None;
        for bank in banks.iter() {
            let probe = Payment { acquirer: Some(bank.name.clone()), ..payment.clone() };
            match self.inquire_payment(&probe, request_id).await {
                Inquiry::Found(_) => return at(payment, &bank.name),
                Inquiry::Unknown(_) if unsure.is_none() => unsure = Some(bank.name.clone()),
                _ => {}
            }
        }
        match unsure {
            Some(bank) => at(payment, &bank),
            None => payment,
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
    ) -> Result<Answer, PaymentError> {
        let record = self.timed("record", self.store.record(key)).await?;
        let circuit_open =
            || PaymentError::CircuitOpen { operation: Operation::Payment, retry_after: rejected.retry_after };
        // Nothing else is needed to refuse a key nobody has used: the fingerprint, the payment and
        // the claim are for keys with a record.
        let Some(record) = record else { return Err(circuit_open()) };
        let fingerprint = self.fingerprint(&request.canonical());
        match key_status(Some(&record), &fingerprint, now_ms()) {
            KeyStatus::Replay(response) => Ok(Answer::replay(response)),
            KeyStatus::InUse { retry_after } => {
                Err(PaymentError::KeyInUse { operation: Operation::Payment, retry_after })
            }
            KeyStatus::Mismatch => Err(PaymentError::KeyReused),
            KeyStatus::Free | KeyStatus::Abandoned { .. } => Err(circuit_open()),
        }
    }

    /// Charges through the guard of the payment's bank and settles the payment from what
    /// happened; moves on to the next bank only when this one surely did nothing, or declined
    /// with a code another bank may approve (`DECLINE_FAILOVER_CODES`). `admitted`: the bank the
    /// payment was routed to and the call its breaker admitted. `inherited`: the payment was
    /// taken over from a request that died, whose attempts may still commit.
    async fn charge(
        &self,
        mut payment: Payment,
        request: &CreatePayment,
        attempt: &Attempt<'_>,
        mut admitted: Option<(Arc<Acquirer>, resilience::Admission)>,
        mut inherited: bool,
    ) -> Result<Answer, PaymentError> {
        loop {
            let bank = Arc::clone(self.router.of(&payment));
            let admission = admitted.take().filter(|(at, _)| at.name == bank.name).map(|(_, admission)| admission);
            let bank_key = payment.bank_key().to_owned();
            let report =
                self.call_bank(&bank, admission, || bank.client.charge(&bank_key, request, attempt.request_id)).await;
            let attempts = report.attempts;
            let read = |reply: &BankReply| read_charge_reply(payment.capture, reply);
            let inquire = || async { Inquired::from(self.inquire_payment(&payment, attempt.request_id).await) };
            let settlement = self.settlement(report, inherited, read, inquire).await;
            // The bank's own answers count toward its approval rate; a call its breaker or
            // bulkhead refused, or an outcome not known, says nothing of it.
            match &settlement {
                Settlement::Settle(outcome) => bank.record(outcome.approved),
                Settlement::Rejected(_) | Settlement::NotDone(NotDone::BankUnavailable) => bank.record(false),
                _ => {}
            }
            // With several banks, a charge the bank answered 5xx and then did not find on inquiry
            // stays with it: it may still commit within its commit window, and a retry routed to
            // another bank would charge the card there too. The reconciler settles it.
            let settlement = match settlement {
                Settlement::NotDone(NotDone::NothingFound) if self.router.all().len() > 1 => Settlement::AwaitReconcile,
                other => other,
            };
            if let Some(reason) = failover_reason(&settlement, &self.settings.decline_failover_codes) {
                let candidates = self.router.candidates(&payment.currency);
                if let Ok((next, admission)) = admit_first(&candidates, &payment.attempted_acquirers) {
                    let change = Change::Failover {
                        from: bank.name.clone(),
                        to: next.name.clone(),
                        at: Utc::now(),
                        lease: self.lease(),
                        attempts,
                    };
                    // Recorded before the next bank is asked: a takeover or the reconciler asks it.
                    match self.timed("commit", self.commit_change(payment.clone(), &change, &RecordPlan::Keep)).await {
                        Ok(applied) => {
                            info!(payment_id = %applied.payment.id, from = %bank.name, to = %next.name, reason, "failing over to the next bank");
                            self.metrics.failovers.inc(format!(
                                "from=\"{}\",to=\"{}\"",
                                label(&bank.name),
                                label(&next.name)
                            ));
                            payment = applied.payment;
                            admitted = Some((next, admission));
                            inherited = false;
                            continue;
                        }
                        Err(CommitError::Refused(_)) => return Err(self.key_in_use(Operation::Payment)),
                        // Nothing was charged: this bank did nothing and the next was not asked.
                        Err(CommitError::Store(error)) => return Err(PaymentError::StoreUnavailable(error)),
                    }
                }
            }
            return self.settle_charge(payment, settlement, attempts, attempt).await;
        }
    }

    /// What a charge's settlement comes to: the change, the answer, and the commit.
    async fn settle_charge(
        &self,
        payment: Payment,
        settlement: Settlement<ChargeOutcome>,
        attempts: u32,
        attempt: &Attempt<'_>,
    ) -> Result<Answer, PaymentError> {
        let answer = RecordPlan::answer(attempt.key, Subject::Payment, Some(attempt.fingerprint));
        // The answer is this bank's: it changes nothing if the payment has moved on meanwhile.
        let at_bank = |change: Change| change.from_bank_of(&payment);
        let outcome = match settlement {
            // The request charged (or found its charge): it may revive the payment (`Change::Settle`).
            Settlement::Settle(outcome) => Outcome {
                change: at_bank(Change::Settle { outcome, attempts, revive: true }),
                plan: answer,
                refused: None,
                may_have_acted: true,
            },
            // Refused outright: a failed payment, answered 402 (the bank charged nothing).
            Settlement::Rejected(Rejection { status, code }) => {
                let code = code.unwrap_or_else(|| "unknown".into());
                let reason = format!("the bank rejected the charge ({}: {code})", status.unwrap_or(0));
                Outcome {
                    change: at_bank(Change::Fail { reason, attempts }),
                    plan: answer,
                    refused: None,
                    may_have_acted: false,
                }
            }
            Settlement::NotDone(why) => {
                let error = not_done(Operation::Payment, &why);
                Outcome {
                    change: at_bank(Change::Fail { reason: error.to_string(), attempts }),
                    plan: RecordPlan::answer_or_release(
                        attempt.key,
                        Subject::Payment,
                        Some(attempt.fingerprint),
                        Some(attempt.owner),
                    ),
                    refused: Some(error),
                    may_have_acted: false,
                }
            }
            Settlement::Inquire | Settlement::AwaitReconcile => Outcome {
                change: at_bank(Change::AwaitReconcile { at: Utc::now(), attempts }),
                plan: answer,
                refused: None,
                may_have_acted: true,
            },
        };
        let answered = self.finish(Operation::Payment, payment, outcome).await;
        if let Ok(Answer { status: 202, .. }) = &answered {
            info!(idempotency_key = attempt.key, "bank outcome unknown; payment left processing for the reconciler");
        }
        answered
    }
}

/// Why a charge may move on to the next bank: this one surely did nothing, or declined with a
/// code another bank may approve. `None`: it stays (approved, a final decline, an outcome not
/// known: a second bank could then charge the card twice).
fn failover_reason(settlement: &Settlement<ChargeOutcome>, codes: &[String]) -> Option<String> {
    match settlement {
        // Not after a 5xx the inquiry did not find: the bank may still commit it.
        Settlement::NotDone(NotDone::NothingFound) => None,
        Settlement::NotDone(why) => Some(format!("{why:?}")),
        Settlement::Settle(outcome) if !outcome.approved => {
            outcome.decline_code.as_ref().filter(|code| codes.contains(code)).map(|code| format!("declined {code}"))
        }
        _ => None,
    }
}

/// The first of `banks` not in `tried` whose breaker admits a call; or, when none does, the
/// refusal that ends soonest.
fn admit_first(banks: &[Arc<Acquirer>], tried: &[String]) -> Result<(Arc<Acquirer>, resilience::Admission), Rejected> {
    let mut refused: Option<Rejected> = None;
    for bank in banks.iter().filter(|b| !tried.contains(&b.name)) {
        match bank.guard.admit() {
            Ok(admission) => return Ok((Arc::clone(bank), admission)),
            Err(rejected) => {
                let sooner = refused.as_ref().is_none_or(|r| {
                    rejected.retry_after.unwrap_or(Duration::MAX) < r.retry_after.unwrap_or(Duration::MAX)
                });
                if sooner {
                    refused = Some(rejected);
                }
            }
        }
    }
    Err(refused.unwrap_or(Rejected { state: resilience::BreakerState::Open, retry_after: None }))
}

/// `payment`, placed at `bank` (before it is charged anywhere).
fn at(payment: Payment, bank: &str) -> Payment {
    Payment { acquirer: Some(bank.to_owned()), attempted_acquirers: vec![bank.to_owned()], ..payment }
}
