//! Every change to a payment goes through [`Gateway::commit_change`]: the [`Change`] is applied to
//! the payment as stored and written over the version it was derived from, in one atomic step
//! with what its [`RecordPlan`] does to the idempotency record; when another change won the race,
//! it is applied again to the winner's payment. A change the store could not take after the bank
//! acted goes to the backlog and is written when the store answers again.

use std::sync::atomic::Ordering;
use std::time::Duration;

use chrono::Utc;
use tracing::{error, info, warn};

use super::backlog::{Answering, RecordPlan, Subject, Unwritten};
use super::{Answer, Gateway};
use crate::fingerprint::bank_key;
use crate::model::{Change, HoldEnd, Payment, PaymentStatus, RefundStatus, Refusal, events_for};
use crate::store::{Commit, Committed, RecordChange, RecordState, StoreError, StoredResponse};

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
    /// The key belongs to another payment or refund now (a retry made it after this one's record
    /// was lost): the payment was written without the record, and this is what its request is
    /// answered, if anything yet (see [`Gateway::superseded`]).
    Superseded(Option<Answer>),
}

/// Why a change could not be committed.
#[derive(Debug)]
pub(super) enum CommitError {
    Refused(Refusal),
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
        PaymentStatus::Succeeded
        | PaymentStatus::RequiresCapture
        | PaymentStatus::Canceled
        | PaymentStatus::Refunded
        | PaymentStatus::PartiallyRefunded => 201,
    };
    StoredResponse { status, body: payment.public_json() }
}

/// The answer a capture or cancel made under `key` gets: 200 once it is done, 202 while its
/// outcome is unknown; `None` when it was not done.
fn hold_operation_response(payment: &Payment, key: &str, end: HoldEnd) -> Option<StoredResponse> {
    let done = match end {
        HoldEnd::Capture => &payment.capture_key,
        HoldEnd::Cancel => &payment.cancel_key,
    };
    let pending = payment.pending.as_ref().is_some_and(|p| p.is(end, Some(key)));
    let status = if done.as_deref() == Some(key) {
        200
    } else if pending {
        202
    } else {
        return None;
    };
    Some(StoredResponse { status, body: payment.public_json() })
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
            let now = Utc::now();
            let next = payment.apply(change, now).map_err(CommitError::Refused)?;
            let outcome = planned(&next, plan);
            let record = record_change(plan, &outcome, &next.id, self.settings.retention);
            // The events are written with the change, or not at all.
            let events = events_for(Some(&payment), &next, now);
            match self.store.commit(Commit { payment: &next, record, events: &events }).await? {
                Committed::Written => return Ok(Applied { payment: next, record: outcome }),
                Committed::Conflict(Some(current)) => payment = *current,
                Committed::Conflict(None) => {
                    return Err(StoreError::Corrupt(format!("payment {} changed and vanished", next.id)).into());
                }
                Committed::Refused => return Ok(Applied { payment, record: RecordOutcome::Refused }),
                Committed::Superseded => {
                    let RecordPlan::Answer(answering) = plan else {
                        unreachable!("only a record change is superseded")
                    };
                    return self.superseded(payment, change, answering).await;
                }
            }
        }
        Err(StoreError::Unavailable(format!("payment {} kept changing; try again", payment.id)).into())
    }

    /// The change's key belongs to another payment or refund now. A refund's id is its own (it is
    /// derived from the charge and the key), so its change is written without the record, and its
    /// request answered with it. A payment is a ghost when the key's holder has the same bank key
    /// (the same request, retried after the store lost this one): the bank's charge is the
    /// holder's, so this payment is failed and its request given the holder's answer. Otherwise
    /// (the key reused for another request) the payment and its charge are its own.
    async fn superseded(
        &self,
        payment: Payment,
        change: &Change,
        answering: &Answering,
    ) -> Result<Applied, CommitError> {
        let holder = match answering.subject {
            Subject::Payment => self.store.record(&answering.key).await?,
            Subject::Refund(_) | Subject::Capture(_) | Subject::Cancel(_) => None,
        };
        let holder = holder.filter(|record| {
            let holder_key = bank_key(&payment.merchant_id, &payment.idempotency_key, &record.fingerprint);
            record.resource_id != payment.id && holder_key == payment.bank_key()
        });
        // The same bank key names the same charge only at the same bank: a holder at another bank
        // has a charge of its own, and this payment keeps its own too.
        let ghost_of = match holder {
            Some(record) => {
                let holder_bank = self.store.get_payment(&record.resource_id).await?.map(|p| p.acquirer);
                let same_bank = holder_bank.is_none_or(|bank| bank == payment.acquirer);
                same_bank.then_some(record)
            }
            None => None,
        };
        if let Some(holder) = ghost_of {
            let reason = format!(
                "superseded by payment {} (the same request, retried after this one's record was lost)",
                holder.resource_id
            );
            warn!(payment_id = %payment.id, holder = %holder.resource_id, "payment superseded by a retry of its request; failing it");
            let failed =
                Box::pin(self.commit_change(payment, &Change::Fail { reason, attempts: 0 }, &RecordPlan::Keep)).await?;
            let answer = match holder.state {
                RecordState::Done { response } => Some(Answer::replay(response)),
                RecordState::InFlight { .. } => None,
            };
            return Ok(Applied { payment: failed.payment, record: RecordOutcome::Superseded(answer) });
        }
        let applied = Box::pin(self.commit_change(payment, change, &RecordPlan::Keep)).await?;
        let own = subject_answer(&answering.subject, &applied.payment, false).map(Answer::fresh);
        Ok(Applied { payment: applied.payment, record: RecordOutcome::Superseded(own) })
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
                Ok(Applied { record: RecordOutcome::Refused, .. }) => {
                    // A retry took the key over: its request settles the payment, asking the bank.
                    info!(payment_id = %unwritten.payment.id, "an unwritten outcome is left to the request that holds its key now");
                }
                Ok(applied) => {
                    written += 1;
                    info!(payment_id = %applied.payment.id, status = applied.payment.status.as_str(), "wrote an outcome the store could not take earlier");
                }
                Err(CommitError::Refused(refusal)) => {
                    warn!(payment_id = %unwritten.payment.id, ?refusal, "an unwritten change no longer applies");
                }
                Err(CommitError::Store(StoreError::Corrupt(reason))) => {
                    // It can never be written: drop it rather than hold up the rest (the
                    // reconciler settles its payment by inquiry).
                    error!(payment_id = %unwritten.payment.id, reason, "an unwritten outcome cannot be written; dropped");
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

/// What `subject` answers as `payment` stands: `None` when the operation was not done. A payment
/// that failed answers 402 when its key is kept, and nothing when its key may be freed (its
/// request surely charged nothing, so the key is free for a retry).
fn subject_answer(subject: &Subject, payment: &Payment, releasing: bool) -> Option<StoredResponse> {
    match subject {
        Subject::Payment if releasing && payment.status == PaymentStatus::Failed => None,
        Subject::Payment => Some(response_for(payment)),
        Subject::Refund(id) => refund_response(payment, id),
        Subject::Capture(key) => hold_operation_response(payment, key, HoldEnd::Capture),
        Subject::Cancel(key) => hold_operation_response(payment, key, HoldEnd::Cancel),
    }
}

/// What `plan` comes to for the payment as changed.
fn planned(next: &Payment, plan: &RecordPlan) -> RecordOutcome {
    let RecordPlan::Answer(answering) = plan else { return RecordOutcome::Kept };
    match subject_answer(&answering.subject, next, answering.release.is_some()) {
        Some(response) => RecordOutcome::Answered(response),
        None if answering.release.is_some() => RecordOutcome::Released,
        None => RecordOutcome::Kept,
    }
}

/// The record change that carries out `outcome` under `plan`'s key.
fn record_change<'a>(
    plan: &'a RecordPlan,
    outcome: &'a RecordOutcome,
    payment_id: &'a str,
    retention: Duration,
) -> RecordChange<'a> {
    let RecordPlan::Answer(answering) = plan else { return RecordChange::Keep };
    let key = &answering.key;
    let resource_id = match &answering.subject {
        Subject::Payment | Subject::Capture(_) | Subject::Cancel(_) => payment_id,
        Subject::Refund(id) => id.as_str(),
    };
    match outcome {
        RecordOutcome::Answered(response) => RecordChange::Finish {
            key,
            resource_id,
            fingerprint: answering.fingerprint.as_deref(),
            response,
            retention,
        },
        RecordOutcome::Released => {
            RecordChange::Release { key, resource_id, owner: answering.release.as_ref().and_then(Option::as_deref) }
        }
        _ => RecordChange::Keep,
    }
}
