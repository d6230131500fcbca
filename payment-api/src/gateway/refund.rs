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

use super::backlog::{RecordPlan, Unwritten};
use super::commit::{Applied, CommitError, RecordOutcome};
use super::settle::{self, Inquired, Rejection, Settlement};
use super::{Answer, Gateway};
use crate::error::{Operation, PaymentError};
use crate::fingerprint::refund_id;
use crate::model::{Change, RefundRefusal, RefundStatus};
use crate::store::{Claim, ClaimRequest, scoped_key};

/// What a refund's fingerprint covers: the payment, and the amount asked for.
#[derive(Serialize)]
struct RefundFingerprint<'a> {
    payment_id: &'a str,
    amount: Option<i64>,
}

impl Gateway {
    pub(super) async fn answer_refund(
        &self,
        merchant: &str,
        payment_id: &str,
        idempotency_key: &str,
        amount: Option<i64>,
        request_id: &str,
    ) -> Result<Answer, PaymentError> {
        let payment = self.payment(merchant, payment_id).await?;
        let key = scoped_key(merchant, "refund", idempotency_key);
        let fingerprint = self.fingerprint(&RefundFingerprint { payment_id, amount });
        let refund_id = refund_id(merchant, payment.bank_key(), idempotency_key);

        let owner = self.owner(request_id);
        let claim = ClaimRequest {
            key: &key,
            fingerprint: &fingerprint,
            owner: &owner,
            resource_id: &refund_id,
            lease: self.settings.lease,
            retention: self.settings.retention,
            insert: None,
        };
        let inherited = match self.store.claim(claim).await? {
            Claim::Fresh => false,
            Claim::TakeOver { .. } => true,
            Claim::Replay(response) => return Ok(Answer::replay(response)),
            Claim::InUse { retry_after } => {
                return Err(PaymentError::KeyInUse { operation: Operation::Refund, retry_after });
            }
            Claim::Mismatch => return Err(PaymentError::KeyReused),
        };
        let answer = || RecordPlan::AnswerRefund {
            key: key.clone(),
            refund_id: refund_id.clone(),
            fingerprint: Some(fingerprint.clone()),
        };
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
                let error = match refusal {
                    RefundRefusal::NotRefundable(status) => {
                        PaymentError::NotRefundable { payment_id: payment_id.to_owned(), status }
                    }
                    RefundRefusal::OverRefund { remaining } => PaymentError::OverRefund { remaining },
                };
                // Nothing was held: free the key, so a corrected request may use it.
                return match self.commit_change(payment, &Change::RefundFailed { id: refund_id }, &release).await {
                    Err(CommitError::Store(store)) => Err(store.into()),
                    Ok(_) | Err(CommitError::Refused(_)) => Err(error),
                };
            }
            Err(CommitError::Store(error)) => return Err(error.into()),
        };
        let Some(refund) = payment.refund(&refund_id).cloned() else {
            return Err(PaymentError::BankUnavailable);
        };
        if refund.status == RefundStatus::Succeeded {
            // A request that died after the bank refunded: answer what it would have.
            let settled = Change::RefundSucceeded { id: refund.id.clone() };
            return match self.commit_change(payment, &settled, &answer()).await {
                Ok(Applied { record: RecordOutcome::Answered(response), .. }) => Ok(Answer::replay(response)),
                Ok(_) | Err(CommitError::Refused(_)) => Err(self.key_in_use(Operation::Refund)),
                Err(CommitError::Store(error)) => Err(error.into()),
            };
        }
        let charge_id = payment.bank_charge_id.clone().unwrap_or_default();

        let report = self.call_bank(None, || self.bank.refund(&charge_id, &refund_id, refund.amount, request_id)).await;
        let reported =
            settle::reported(report.result, report.may_have_acted, report.unanswered, |reply| match reply.status() {
                Some(200..=299) => Ok(()),
                status => Err(Rejection { status, code: reply.problem_code() }),
            });
        let mut settlement = settle::settle(&reported, None, inherited);
        if settlement == Settlement::Inquire {
            // Maybe refunded: ask the bank whether the charge carries this refund.
            let found = match self.bank.get_charge(&charge_id, request_id).await.charge() {
                Some(charge) if charge.refunds.iter().any(|r| r.idempotency_key == refund_id) => Inquired::Found(()),
                Some(_) => Inquired::NotFound,
                None => Inquired::Unknown,
            };
            settlement = settle::settle(&reported, Some(&found), inherited);
        }
        let failed =
            |error: PaymentError| (Change::RefundFailed { id: refund_id.clone() }, release.clone(), Some(error));
        let (change, plan, refused) = match settlement {
            Settlement::Settle(()) => (Change::RefundSucceeded { id: refund_id.clone() }, answer(), None),
            Settlement::Rejected(rejection) => {
                failed(PaymentError::BankRefusedRefund { conflict: rejection.status == Some(409) })
            }
            // Whatever stopped it (the breaker, the bulkhead, the bank), the refund was not made.
            Settlement::NotDone(_) => failed(PaymentError::BankUnavailable),
            Settlement::Inquire | Settlement::AwaitReconcile => {
                (Change::RefundPending { id: refund_id.clone(), at: Utc::now() }, answer(), None)
            }
        };
        let may_have_refunded = refused.is_none();
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
                    RecordOutcome::Released => Err(refused.unwrap_or(PaymentError::BankUnavailable)),
                    RecordOutcome::Refused | RecordOutcome::Kept | RecordOutcome::Superseded => {
                        Err(self.key_in_use(Operation::Refund))
                    }
                }
            }
            Err(CommitError::Store(error)) => {
                self.keep_for_later(Unwritten { payment, change, plan }, &error);
                if may_have_refunded {
                    Err(PaymentError::OutcomeUnknown { operation: Operation::Refund })
                } else {
                    Err(PaymentError::StoreUnavailable(error))
                }
            }
            Err(CommitError::Refused(_)) => Err(PaymentError::BankUnavailable),
        }
    }
}
