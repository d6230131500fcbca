//! Every change to a payment goes through [`Gateway::commit_change`]: the [`Change`] is applied to
//! the payment as stored and written over the version it was derived from, in one atomic step
//! with what its [`RecordPlan`] does to the idempotency record; when another change won the race,
//! it is applied again to the winner's payment. A change the store could not take after the bank
//! acted goes to the backlog and is written when the store answers again.

use std::sync::atomic::Ordering;
use std::time::Duration;

use chrono::Utc;
use tracing::{error, info, warn};

use super::Gateway;
use super::backlog::{RecordPlan, Unwritten};
use crate::model::{Change, Payment, PaymentStatus, RefundRefusal, RefundStatus};
use crate::store::{Commit, Committed, RecordChange, StoreError, StoredResponse};

/// How a commit went, once its change was applied to the payment as stored.
#[derive(Debug)]
pub(super) struct Applied {
    /// The payment as written (or as found, when nothing was written).
    pub payment: Payment,
    /// What was done to the record, with the answer stored if one was.
    pub record: RecordOutcome,
}

#[derive(Debug, PartialEq, Eq)]
pub(super) enum RecordOutcome {
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
pub(super) enum CommitError {
    Refused(RefundRefusal),
    Store(StoreError),
}

impl From<StoreError> for CommitError {
    fn from(error: StoreError) -> Self {
        CommitError::Store(error)
    }
}

/// The answer a settled (or processing) payment gets.
pub(super) fn response_for(payment: &Payment) -> StoredResponse {
    let status = match payment.status {
        PaymentStatus::Processing => 202,
        PaymentStatus::Declined | PaymentStatus::Failed => 402,
        PaymentStatus::Succeeded | PaymentStatus::Refunded | PaymentStatus::PartiallyRefunded => 201,
    };
    StoredResponse { status, body: payment.public_json() }
}

/// The answer a refund gets: 201 once the bank refunded, 202 while its outcome is unknown.
pub(super) fn refund_response(payment: &Payment, refund_id: &str) -> Option<StoredResponse> {
    let refund = payment.refund(refund_id)?;
    let status = match refund.status {
        RefundStatus::Succeeded => 201,
        RefundStatus::Pending => 202,
        RefundStatus::Failed => return None,
    };
    Some(StoredResponse { status, body: payment.refund_json(refund) })
}

impl Gateway {
    /// Applies `change` to the payment as stored and writes it with `plan`'s record change, in one
    /// atomic step; when another change got there first, applies it again to that one.
    pub(super) async fn commit_change(
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
    pub(super) fn keep_for_later(&self, unwritten: Unwritten, error: &StoreError) {
        warn!(%error, payment_id = %unwritten.payment.id, "store unavailable after the bank call; keeping the outcome to write later");
        let dropped = self.backlog.keep(unwritten);
        self.metrics.unwritten_outcomes.store(self.backlog.len() as u64, Ordering::Relaxed);
        if let Some(dropped) = dropped {
            error!(payment_id = %dropped.payment.id, "backlog of unwritten outcomes full; dropped the oldest (the reconciler will find it)");
        }
    }

    /// Writes what the store could not take before, in the order it was kept. Returns how many
    /// were written.
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
