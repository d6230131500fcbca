//! The reconciler's pass: settles every payment whose outcome was left unknown (answered 202, or
//! a request that died), by status inquiry, every pending refund, by reading its charge, every
//! pending capture or cancel, and cancels the authorizations that reached `capture_before`
//! (those two in [`super::hold`]).
//! Several instances may run it against one store: an inquiry only reads, and every write it
//! leads to goes through the version check like any other change.

use std::sync::atomic::Ordering;

use chrono::Utc;
use tracing::{info, warn};

use super::Gateway;
use super::backlog::{RecordPlan, Subject};
use super::commit::{Applied, CommitError, RecordOutcome};
use crate::bank::Inquiry;
use crate::error::Operation;
use crate::model::{Change, Payment, PaymentStatus, RefundStatus};
use crate::store::{StoreError, now_ms};

impl Gateway {
    pub async fn reconcile_due(&self) -> Result<usize, StoreError> {
        let due = self.store.due_payments(now_ms(), 100).await?;
        self.metrics.reconciler_backlog.store(due.len() as u64, Ordering::Relaxed);
        let mut settled = 0;
        for payment in due {
            let done = match (payment.status, &payment.pending) {
                (PaymentStatus::Processing, _) => self.reconcile(payment).await?,
                (PaymentStatus::RequiresCapture, Some(_)) => self.reconcile_hold(payment).await?,
                (PaymentStatus::RequiresCapture, None) => self.expire(payment).await?,
                _ => self.reconcile_refunds(payment).await?,
            };
            if done {
                settled += 1;
            }
        }
        Ok(settled)
    }

    /// Whether the bank can no longer commit an operation last sent at `last_sent`.
    pub(super) fn commit_window_passed(&self, last_sent: chrono::DateTime<Utc>) -> bool {
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
        let key = Operation::Payment.scoped_key(&payment.merchant_id, &payment.idempotency_key);
        let last_sent = payment.last_attempt_at.unwrap_or(payment.created_at);
        match self.inquire_payment(&payment, "reconciler").await {
            Inquiry::Found(outcome) => {
                let change = Change::Settle { outcome, attempts: 0, revive: false }.from_bank_of(&payment);
                let plan = RecordPlan::answer(&key, Subject::Payment, None);
                let applied = self.reconciler_commit(payment.clone(), change, plan).await?;
                match applied.payment.status {
                    PaymentStatus::Processing => return self.reschedule(applied.payment).await.map(|()| false),
                    // Failed: meanwhile (the charge is a newer payment's, and the reconciler never
                    // revives), or now, as the ghost of a retry that holds its key and its charge.
                    PaymentStatus::Failed => return Ok(false),
                    PaymentStatus::Succeeded
                    | PaymentStatus::RequiresCapture
                    | PaymentStatus::Declined
                    | PaymentStatus::Canceled
                    | PaymentStatus::Refunded
                    | PaymentStatus::PartiallyRefunded => {}
                }
                info!(payment_id = %applied.payment.id, status = applied.payment.status.as_str(), "reconciled payment");
                self.metrics.reconciled.inc(format!("result=\"{}\"", applied.payment.status.as_str()));
                Ok(true)
            }
            Inquiry::NotFound if self.commit_window_passed(last_sent) => {
                let change = Change::Fail { reason: "the bank has no record of this charge".into(), attempts: 0 }
                    .from_bank_of(&payment);
                // Not from under a live request: a client's retry may have taken the payment over.
                let plan = RecordPlan::answer_or_release(&key, Subject::Payment, None, None);
                let applied = self.reconciler_commit(payment, change, plan).await?;
                if applied.record != RecordOutcome::Released {
                    return Ok(false);
                }
                info!(payment_id = %applied.payment.id, "reconciled payment: never charged; key released");
                self.metrics.reconciled.inc("result=\"released\"".to_owned());
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
        let bank = self.router.of(&payment);
        let reply =
            tokio::time::timeout(self.settings.inquiry_timeout, bank.client.get_charge(&charge_id, "reconciler"));
        let Some(charge) = reply.await.ok().filter(|r| r.status() == Some(200)).and_then(|r| r.charge()) else {
            warn!(payment_id = %payment.id, "reconciler could not read the charge of a pending refund");
            return self.reschedule(payment).await.map(|()| false);
        };
        let pending: Vec<_> = payment.refunds.iter().filter(|r| r.status == RefundStatus::Pending).cloned().collect();
        let mut current = payment;
        let mut settled = false;
        for refund in pending {
            let key = Operation::Refund.scoped_key(&current.merchant_id, &refund.idempotency_key);
            let last_sent = refund.last_attempt_at.unwrap_or(refund.created_at);
            let (change, plan) = if charge.refunds.iter().any(|r| r.idempotency_key == refund.id) {
                let plan = RecordPlan::answer(&key, Subject::Refund(refund.id.clone()), None);
                (Change::RefundSucceeded { id: refund.id.clone() }, plan)
            } else if self.commit_window_passed(last_sent) {
                let plan = RecordPlan::answer_or_release(&key, Subject::Refund(refund.id.clone()), None, None);
                (Change::RefundFailed { id: refund.id.clone(), sent_at: refund.last_attempt_at }, plan)
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
        }
        if current.has_pending_refunds() {
            self.reschedule(current).await?;
        }
        Ok(settled)
    }
}
