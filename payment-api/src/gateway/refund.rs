//! `POST /v1/payments/{id}/refunds`: a refund made exactly once per idempotency key.
//!
//! 1. Claim the refund's key (or take over the refund of a request that died, or replay).
//! 2. Hold the amount on the payment (`Change::ReserveRefund`), against its stored version: racing
//!    refunds see each other's holds, so together they never exceed what was charged, and an
//!    over-refund is the contract's 422 before the bank is asked.
//! 3. Refund at the bank under the refund's id (its bank key), through the guard.
//! 4. Ask the settlement table what that comes to; commit the refund's outcome with the key's
//!    record, or free both the hold and the key when the bank surely did nothing.

use chrono::Utc;
use serde::Serialize;
use tracing::info;

use super::backlog::{RecordPlan, Subject};
use super::claim::{Claimed, refused, store_failed};
use super::commit::{Applied, CommitError, RecordOutcome};
use super::finish::Outcome;
use super::settle::{Inquired, Rejection, Settlement};
use super::{Answer, Gateway};
use crate::error::{Operation, PaymentError};
use crate::fingerprint::refund_id;
use crate::model::{Change, RefundStatus};

/// What a refund's fingerprint covers: the payment, and the amount asked for.
#[derive(Serialize)]
struct RefundFingerprint<'a> {
    payment_id: &'a str,
    amount: Option<i64>,
}

impl Gateway {
    /// `POST /v1/payments/{id}/refunds` (see the module's steps).
    pub async fn refund(
        &self,
        merchant: &str,
        payment_id: &str,
        idempotency_key: &str,
        amount: Option<i64>,
        request_id: &str,
    ) -> Result<Answer, PaymentError> {
        let payment = self.payment(merchant, payment_id).await?;
        let key = Operation::Refund.scoped_key(merchant, idempotency_key);
        let fingerprint = self.fingerprint(&RefundFingerprint { payment_id, amount });
        let refund_id = refund_id(merchant, payment.bank_key(), idempotency_key);

        let owner = self.owner(request_id);
        let inherited = match self.claim_operation(Operation::Refund, &key, &fingerprint, &owner, &refund_id).await? {
            Claimed::Go { inherited } => inherited,
            Claimed::Replay(answer) => return Ok(answer),
        };
        let subject = Subject::Refund(refund_id.clone());
        let answer = RecordPlan::answer(&key, subject.clone(), Some(&fingerprint));
        let release = RecordPlan::answer_or_release(&key, subject, Some(&fingerprint), Some(&owner));
        let store_failed = store_failed(Operation::Refund, inherited);

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
                let error = refused(Operation::Refund, payment_id, refusal);
                // Nothing was held: free the key, so a corrected request may use it.
                return match self
                    .commit_change(payment, &Change::RefundFailed { id: refund_id, sent_at: None }, &release)
                    .await
                {
                    Err(CommitError::Store(store)) => Err(store_failed(store)),
                    Ok(_) | Err(CommitError::Refused(_)) => Err(error),
                };
            }
            Err(CommitError::Store(error)) => return Err(store_failed(error)),
        };
        let Some(refund) = payment.refund(&refund_id).cloned() else {
            return Err(PaymentError::BankUnavailable { operation: Operation::Refund });
        };
        if refund.status == RefundStatus::Succeeded {
            // A request that died after the bank refunded: answer what it would have.
            let settled = Change::RefundSucceeded { id: refund.id.clone() };
            return match self.commit_change(payment, &settled, &answer).await {
                Ok(Applied { record: RecordOutcome::Answered(response), .. }) => Ok(Answer::replay(response)),
                Ok(_) | Err(CommitError::Refused(_)) => Err(self.key_in_use(Operation::Refund)),
                Err(CommitError::Store(error)) => Err(store_failed(error)),
            };
        }
        let charge_id = payment.bank_charge_id.clone().unwrap_or_default();

        let bank = self.router.of(&payment);
        let report =
            self.call_bank(bank, None, || bank.client.refund(&charge_id, &refund_id, refund.amount, request_id)).await;
        let read = |reply: &crate::bank::BankReply| match reply.status() {
            Some(200..=299) => Ok(()),
            status => Err(Rejection { status, code: reply.problem_code() }),
        };
        // Maybe refunded: ask the bank whether the charge carries this refund.
        let inquire = || async {
            match bank.client.get_charge(&charge_id, request_id).await.charge() {
                Some(charge) if charge.refunds.iter().any(|r| r.idempotency_key == refund_id) => Inquired::Found(()),
                Some(_) => Inquired::NotFound,
                None => Inquired::Unknown,
            }
        };
        let settlement = self.settlement(report, inherited, read, inquire).await;
        let not_refunded = |error: PaymentError| Outcome {
            change: Change::RefundFailed { id: refund_id.clone(), sent_at: refund.last_attempt_at },
            plan: release.clone(),
            refused: Some(error),
            may_have_acted: false,
        };
        let outcome = match settlement {
            Settlement::Settle(()) => Outcome {
                change: Change::RefundSucceeded { id: refund_id.clone() },
                plan: answer,
                refused: None,
                may_have_acted: true,
            },
            Settlement::Rejected(rejection) => {
                not_refunded(PaymentError::BankRefusedRefund { conflict: rejection.status == Some(409) })
            }
            // Whatever stopped it (the breaker, the bulkhead, the bank), the refund was not made.
            Settlement::NotDone(why) => not_refunded(super::create::not_done(Operation::Refund, &why)),
            Settlement::Inquire | Settlement::AwaitReconcile => Outcome {
                change: Change::RefundPending { id: refund_id.clone(), at: Utc::now() },
                plan: answer,
                refused: None,
                may_have_acted: true,
            },
        };
        let answered = self.finish(Operation::Refund, payment, outcome).await;
        if let Ok(answer) = &answered {
            info!(payment_id, refund_id, amount = refund.amount, status = answer.status, "refund answered");
        }
        answered
    }
}
