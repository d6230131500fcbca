//! The changes a payment goes through, each a pure function of the payment as it is now. The store
//! writes a changed payment only over the version it was derived from; when another change got
//! there first, the change is applied again to that payment (see `store::decide_commit`).

use chrono::{DateTime, Utc};

use super::payment::{
    CancellationReason, HoldEnd, Payment, PaymentStatus, PendingKind, PendingOperation, Refund, RefundStatus,
};

/// What the bank said about a charge, or about the authorization of a payment made with
/// `capture: false`, as far as a payment needs it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChargeOutcome {
    /// The charge's id, or the authorization's.
    pub id: String,
    pub approved: bool,
    pub decline_code: Option<String>,
    /// For an authorization found already closed at the bank (a retry after the store forgot the
    /// payment whose hold was captured or released): what became of it.
    pub closed: Option<HoldClosed>,
}

/// What became of a hold the bank no longer holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HoldClosed {
    Captured { amount: i64, charge_id: String },
    Released(CancellationReason),
}

/// One change to a payment. The store applies changes against the payment's current version;
/// when another change won the race, this one is applied again to the winner's payment. So each
/// change is written to be applied to whatever state the payment is in by then: settling an
/// already settled payment, failing a succeeded one or finishing a refund twice changes nothing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    /// The gateway is about to send the charge (again): the commit window starts over, and the
    /// reconciler waits for the lease before looking.
    Resend { at: DateTime<Utc>, lease: chrono::Duration },
    /// The charge moves on from bank `from` to bank `to` (`from` surely did nothing, or declined in
    /// a way another bank may not): recorded before `to` is asked, so that the reconciler and a
    /// takeover ask `to`, and `to`'s commit window starts now. Refused unless the payment is still
    /// at `from` and `to` was never tried: two requests moving one payment on (a takeover beside
    /// the request it took over) can never send it to two banks.
    Failover { from: String, to: String, at: DateTime<Utc>, lease: chrono::Duration, attempts: u32 },
    /// `change`, from bank `bank`'s answer: applied only while the payment is at that bank. A late
    /// answer from a bank the payment has left (a request or the reconciler that read it before it
    /// moved on) changes nothing.
    AtBank { bank: String, change: Box<Change> },
    /// The bank's answer, after `attempts` more attempts. A failed payment is settled only with
    /// `revive`: the charges of one client key share a bank key, so a charge found under it may be
    /// a newer payment's (made after this one failed and freed the key). A request that charged
    /// revives its payment together with the key's record, which the store writes only while the
    /// key is still this payment's or gone (`store::decide_commit`); the reconciler never does.
    Settle { outcome: ChargeOutcome, attempts: u32, revive: bool },
    /// The bank surely did not charge under this request, or refused it outright.
    Fail { reason: String, attempts: u32 },
    /// The outcome is unknown: the reconciler looks at `at`.
    AwaitReconcile { at: DateTime<Utc>, attempts: u32 },
    /// Holds a refund's amount (`None`: all that is left) while the bank is asked, or, for a
    /// refund already pending under this id, records that it is sent again. `lease` is how long
    /// before the reconciler may look at it if the request dies.
    ReserveRefund {
        id: String,
        amount: Option<i64>,
        idempotency_key: String,
        at: DateTime<Utc>,
        lease: chrono::Duration,
    },
    /// The bank refunded.
    RefundSucceeded { id: String },
    /// The bank surely did not refund the sending made at `sent_at` (`None`: whatever was sent):
    /// the held amount is free again. A late write of it never fails a refund sent again since.
    RefundFailed { id: String, sent_at: Option<DateTime<Utc>> },
    /// The bank's answer about a refund is unknown: the reconciler looks at `at`.
    RefundPending { id: String, at: DateTime<Utc> },
    /// Starts the capture of `amount` (`None`: all) of an authorization, or, for the same capture
    /// (the same key) already pending, records that it is sent again. `lease` is how long before
    /// the reconciler may look at it if the request dies.
    BeginCapture { amount: Option<i64>, idempotency_key: String, at: DateTime<Utc>, lease: chrono::Duration },
    /// Starts the release of an authorization (a client's cancel, under its key, or the gateway's
    /// own at `capture_before`), or records that the same cancel (the same key) is sent again.
    /// Every cancel of a payment is one void at the bank; while one is pending, another is refused.
    BeginCancel {
        reason: CancellationReason,
        idempotency_key: Option<String>,
        at: DateTime<Utc>,
        lease: chrono::Duration,
    },
    /// The bank captured `amount`, as the charge `charge_id`.
    Captured { amount: i64, charge_id: String },
    /// The bank released the hold (voided, or expired).
    Canceled { reason: CancellationReason, at: DateTime<Utc> },
    /// The bank surely did not do the pending `end` begun under `idempotency_key` and sent at
    /// `sent_at`: the authorization stands as it was. Only that sending is undone: a late write of
    /// this change (from the backlog) never clears a newer one, sent again under the same key. The
    /// reconciler looks at the payment again at `capture_before`, or not before `retry_at` (an
    /// expiry whose release failed).
    OperationNotDone {
        end: HoldEnd,
        idempotency_key: Option<String>,
        sent_at: DateTime<Utc>,
        retry_at: Option<DateTime<Utc>>,
    },
    /// Changes nothing but the version: the record change that goes with it is written (the
    /// answer of an operation already done, for a retry of a request that died).
    Nothing,
    /// The outcome of the pending operation is unknown: the reconciler looks at `at`.
    OperationPending { at: DateTime<Utc> },
}

/// Why a change cannot be made to the payment as it stands: the operation it belongs to is
/// refused (as opposed to a change that no longer applies, which changes nothing).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    /// The payment's status (as clients see it) does not allow the operation: a refund of a
    /// declined payment, a capture of a canceled one, a cancel while a capture is pending.
    InvalidState(PaymentStatus),
    /// More than is left: of what can be refunded (once succeeded and pending refunds count), or
    /// of what is authorized.
    OverAmount { remaining: i64 },
    /// An authorization past its `capture_before`: the gateway cancels it.
    Expired,
}

impl Change {
    /// This change as the answer of the bank `payment` was at when it was read
    /// ([`Change::AtBank`]): it changes nothing if the payment has moved on to another bank since.
    pub fn from_bank_of(self, payment: &Payment) -> Change {
        match &payment.acquirer {
            Some(bank) => Change::AtBank { bank: bank.clone(), change: Box::new(self) },
            None => self,
        }
    }
}

impl Payment {
    /// The payment with `change` applied and its version bumped, or why a refund cannot be held.
    /// `now` stamps `updated_at` when something changed.
    pub fn apply(&self, change: &Change, now: DateTime<Utc>) -> Result<Payment, Refusal> {
        if let Change::AtBank { bank, change } = change {
            if self.acquirer.as_ref().is_some_and(|at| at != bank) {
                return Ok(self.clone().bumped(self, now));
            }
            return self.apply(change, now);
        }
        let mut next = self.clone();
        match change {
            Change::AtBank { .. } => unreachable!("applied above"),
            Change::Resend { at, lease } => {
                if self.is_settled() {
                    return Ok(next.bumped(self, now));
                }
                next.last_attempt_at = Some(*at);
                next.reconcile_after = Some(*at + *lease);
            }
            Change::Failover { from, to, at, lease, attempts } => {
                let moved_on = self.acquirer.as_ref().is_some_and(|at| at != from);
                if self.status != PaymentStatus::Processing || moved_on || self.attempted_acquirers.contains(to) {
                    return Err(Refusal::InvalidState(self.status));
                }
                next.attempts += attempts;
                next.acquirer = Some(to.clone());
                next.attempted_acquirers.push(to.clone());
                next.last_attempt_at = Some(*at);
                next.reconcile_after = Some(*at + *lease);
            }
            Change::Settle { outcome, attempts, revive } => {
                next.attempts += attempts;
                // A later answer never overturns an earlier one: the bank has one charge per key.
                if self.status == PaymentStatus::Processing || (*revive && self.status == PaymentStatus::Failed) {
                    next.decline_code = outcome.decline_code.clone();
                    next.failure_reason = None;
                    next.status = match (outcome.approved, self.capture) {
                        (false, _) => PaymentStatus::Declined,
                        (true, true) => PaymentStatus::Succeeded,
                        (true, false) => PaymentStatus::RequiresCapture,
                    };
                    if self.capture {
                        next.bank_charge_id = Some(outcome.id.clone());
                        next.amount_captured = outcome.approved.then_some(self.amount);
                    } else {
                        next.authorization_id = Some(outcome.id.clone());
                        match &outcome.closed {
                            Some(HoldClosed::Captured { amount, charge_id }) if outcome.approved => {
                                next.status = PaymentStatus::Succeeded;
                                next.amount_captured = Some(*amount);
                                next.bank_charge_id = Some(charge_id.clone());
                            }
                            Some(HoldClosed::Released(reason)) if outcome.approved => {
                                next.status = PaymentStatus::Canceled;
                                next.cancellation_reason = Some(*reason);
                                next.canceled_at = Some(now);
                                next.amount_captured = Some(0);
                            }
                            _ => {}
                        }
                    }
                }
                next.reconcile_after = next.next_due();
            }
            Change::Fail { reason, attempts } => {
                next.attempts += attempts;
                if self.status == PaymentStatus::Processing {
                    next.status = PaymentStatus::Failed;
                    next.failure_reason = Some(reason.clone());
                    next.reconcile_after = None;
                }
            }
            Change::AwaitReconcile { at, attempts } => {
                next.attempts += attempts;
                if self.status == PaymentStatus::Processing {
                    next.reconcile_after = Some(*at);
                }
            }
            Change::ReserveRefund { id, amount, idempotency_key, at, lease } => {
                match self.refund(id).map(|r| r.status) {
                    // Sent again by a request that took over: the commit window starts over.
                    Some(RefundStatus::Pending) => {
                        if let Some(refund) = next.refunds.iter_mut().find(|r| r.id == *id) {
                            refund.last_attempt_at = Some(*at);
                        }
                        next.reconcile_after =
                            Some(next.reconcile_after.map_or(*at + *lease, |due| due.min(*at + *lease)));
                    }
                    Some(RefundStatus::Succeeded) => {}
                    // Its earlier request surely refunded nothing: reserve it afresh.
                    Some(RefundStatus::Failed) | None => {
                        if !matches!(self.status, PaymentStatus::Succeeded | PaymentStatus::PartiallyRefunded) {
                            return Err(Refusal::InvalidState(self.status));
                        }
                        next.refunds.retain(|r| r.id != *id);
                        let remaining = next.refundable();
                        let amount = amount.unwrap_or(remaining);
                        if amount <= 0 || amount > remaining {
                            return Err(Refusal::OverAmount { remaining });
                        }
                        next.refunds.push(Refund {
                            id: id.clone(),
                            amount,
                            status: RefundStatus::Pending,
                            created_at: *at,
                            idempotency_key: idempotency_key.clone(),
                            last_attempt_at: Some(*at),
                        });
                        let due = *at + *lease;
                        next.reconcile_after = Some(next.reconcile_after.map_or(due, |d| d.min(due)));
                    }
                }
            }
            Change::BeginCapture { amount, idempotency_key, at, lease } => {
                if self.pending.as_ref().is_some_and(|p| p.is(HoldEnd::Capture, Some(idempotency_key))) {
                    next.resend_pending(*at, *lease);
                    return Ok(next.bumped(self, now));
                }
                // Captured by this very key (its request died after the bank captured): its
                // retry is answered with the capture.
                if self.capture_key.as_ref() == Some(idempotency_key) {
                    return Ok(next.bumped(self, now));
                }
                if self.status != PaymentStatus::RequiresCapture || self.pending.is_some() {
                    return Err(Refusal::InvalidState(self.shown_status()));
                }
                // Past `capture_before` the hold is the gateway's to cancel, not to capture.
                if self.capture_before.is_some_and(|before| *at >= before) {
                    return Err(Refusal::Expired);
                }
                let amount = amount.unwrap_or(self.amount);
                if amount <= 0 || amount > self.amount {
                    return Err(Refusal::OverAmount { remaining: self.amount });
                }
                next.begin(PendingKind::Capture { amount }, Some(idempotency_key.clone()), *at, *lease);
            }
            Change::BeginCancel { reason, idempotency_key, at, lease } => {
                if self.pending.as_ref().is_some_and(|p| p.is(HoldEnd::Cancel, idempotency_key.as_deref())) {
                    next.resend_pending(*at, *lease);
                    return Ok(next.bumped(self, now));
                }
                if idempotency_key.is_some() && self.cancel_key == *idempotency_key {
                    return Ok(next.bumped(self, now));
                }
                if self.status != PaymentStatus::RequiresCapture || self.pending.is_some() {
                    return Err(Refusal::InvalidState(self.shown_status()));
                }
                next.begin(PendingKind::Cancel { reason: *reason }, idempotency_key.clone(), *at, *lease);
            }
            Change::Captured { amount, charge_id } => {
                if self.status == PaymentStatus::RequiresCapture {
                    next.status = PaymentStatus::Succeeded;
                    next.amount_captured = Some(*amount);
                    next.bank_charge_id = Some(charge_id.clone()).filter(|id| !id.is_empty());
                    // The key of the capture that was sent, if one was (a cancel that found the
                    // hold captured is not its capture).
                    next.capture_key = self
                        .pending
                        .as_ref()
                        .filter(|p| p.kind.end() == HoldEnd::Capture)
                        .and_then(|p| p.idempotency_key.clone());
                    next.pending = None;
                    next.reconcile_after = None;
                }
            }
            Change::Canceled { reason, at } => {
                if self.status == PaymentStatus::RequiresCapture {
                    next.status = PaymentStatus::Canceled;
                    next.canceled_at = Some(*at);
                    // The reason of the cancel that was sent, when one was (a client's cancel that
                    // found the hold expired at the bank still says what happened: `expired`).
                    next.cancellation_reason = Some(*reason);
                    next.cancel_key = self
                        .pending
                        .as_ref()
                        .filter(|p| matches!(p.kind, PendingKind::Cancel { .. }))
                        .and_then(|p| p.idempotency_key.clone());
                    next.amount_captured = Some(0);
                    next.pending = None;
                    next.reconcile_after = None;
                }
            }
            Change::OperationNotDone { end, idempotency_key, sent_at, retry_at } => {
                let this_sending =
                    |p: &PendingOperation| p.is(*end, idempotency_key.as_deref()) && p.last_attempt_at == *sent_at;
                if self.pending.as_ref().is_some_and(this_sending) {
                    next.pending = None;
                    next.reconcile_after = match (next.next_due(), retry_at) {
                        (Some(due), Some(retry)) => Some(due.max(*retry)),
                        (due, _) => due,
                    };
                }
            }
            Change::Nothing => {}
            Change::OperationPending { at } => {
                if self.pending.is_some() {
                    next.reconcile_after = Some(*at);
                }
            }
            Change::RefundSucceeded { id } => next.set_refund_status(id, RefundStatus::Succeeded),
            Change::RefundFailed { id, sent_at } => {
                let sent_again =
                    sent_at.is_some_and(|at| self.refund(id).is_some_and(|r| r.last_attempt_at != Some(at)));
                if !sent_again {
                    next.set_refund_status(id, RefundStatus::Failed);
                }
            }
            Change::RefundPending { id, at } => {
                if self.refund(id).is_some_and(|r| r.status == RefundStatus::Pending) {
                    next.reconcile_after = Some(*at);
                }
            }
        }
        Ok(next.bumped(self, now))
    }

    /// This payment as the next version of `before`: written even when nothing changed, so that
    /// the record change that goes with it is too; `updated_at` moves only when something did.
    fn bumped(mut self, before: &Payment, now: DateTime<Utc>) -> Payment {
        if self != *before {
            self.updated_at = now;
        }
        self.version = before.version + 1;
        self
    }

    /// Starts a capture or a cancel.
    fn begin(
        &mut self,
        kind: PendingKind,
        idempotency_key: Option<String>,
        at: DateTime<Utc>,
        lease: chrono::Duration,
    ) {
        self.pending = Some(PendingOperation { kind, idempotency_key, last_attempt_at: at });
        self.reconcile_after = Some(at + lease);
    }

    /// The pending operation is sent again: the commit window starts over.
    fn resend_pending(&mut self, at: DateTime<Utc>, lease: chrono::Duration) {
        if let Some(pending) = &mut self.pending {
            pending.last_attempt_at = at;
        }
        let due = at + lease;
        self.reconcile_after = Some(self.reconcile_after.map_or(due, |d| d.min(due)));
    }

    /// Settles a pending refund (a settled one stays as it is) and recomputes the totals.
    fn set_refund_status(&mut self, id: &str, status: RefundStatus) {
        let Some(refund) = self.refunds.iter_mut().find(|r| r.id == id) else { return };
        if refund.status != RefundStatus::Pending {
            return;
        }
        refund.status = status;
        self.refunded_amount =
            self.refunds.iter().filter(|r| r.status == RefundStatus::Succeeded).map(|r| r.amount).sum();
        if self.refunded_amount > 0 {
            self.status = if self.refunded_amount >= self.captured() {
                PaymentStatus::Refunded
            } else {
                PaymentStatus::PartiallyRefunded
            };
        }
        self.reconcile_after = if self.has_pending_refunds() { self.reconcile_after } else { None };
    }

    /// When the reconciler should look at a payment that was just settled: while a refund, a
    /// capture or a cancel is pending, when it said; an authorization at `capture_before`, to cancel it if it was not
    /// captured by then; otherwise never.
    fn next_due(&self) -> Option<DateTime<Utc>> {
        if self.has_pending_refunds() || self.pending.is_some() {
            self.reconcile_after
        } else if self.status == PaymentStatus::RequiresCapture {
            Some(self.capture_before.unwrap_or(DateTime::<Utc>::UNIX_EPOCH))
        } else {
            None
        }
    }

    /// When the reconciler should look at this payment, if at all: while it is processing, while
    /// one of its refunds or a capture or cancel is pending, and while it is authorized (at
    /// `capture_before`).
    pub fn due_at(&self) -> Option<DateTime<Utc>> {
        let waiting = matches!(self.status, PaymentStatus::Processing | PaymentStatus::RequiresCapture)
            || self.has_pending_refunds();
        waiting.then(|| self.reconcile_after.unwrap_or(DateTime::<Utc>::UNIX_EPOCH))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn processing() -> Payment {
        serde_json::from_value(serde_json::json!({
            "id": "pay_1", "version": 3, "status": "processing", "amount": 1000, "currency": "USD",
            "order_id": null, "description": null, "metadata": {}, "card": {"brand": "visa", "last4": "4242"},
            "decline_code": null, "failure_reason": null, "bank_charge_id": null, "attempts": 1,
            "refunded_amount": 0, "created_at": "2026-01-01T00:00:00Z", "updated_at": "2026-01-01T00:00:00Z",
            "merchant_id": "m", "idempotency_key": "k", "reconcile_after": null
        }))
        .unwrap_or_else(|e| panic!("{e}"))
    }

    #[test]
    fn a_payment_moves_on_from_one_bank_once_and_a_left_bank_s_late_answer_changes_nothing() {
        let now = chrono::Utc::now();
        let at_a = Payment { acquirer: Some("a".into()), attempted_acquirers: vec!["a".into()], ..processing() };
        let failover = |from: &str, to: &str| Change::Failover {
            from: from.into(),
            to: to.into(),
            at: now,
            lease: chrono::Duration::seconds(30),
            attempts: 1,
        };
        let at_b = at_a.apply(&failover("a", "b"), now).unwrap_or_else(|e| panic!("{e:?}"));
        assert_eq!((at_b.acquirer.as_deref(), at_b.attempted_acquirers.len()), (Some("b"), 2));
        // A takeover that read the payment at `a` cannot send it to a third bank.
        assert!(at_b.apply(&failover("a", "c"), now).is_err());
        assert!(at_b.apply(&failover("b", "a"), now).is_err(), "never back to a bank tried");
        let declined = ChargeOutcome {
            id: "ch_a".into(),
            approved: false,
            decline_code: Some("processing_error".into()),
            closed: None,
        };
        let late = Change::AtBank {
            bank: "a".into(),
            change: Box::new(Change::Settle { outcome: declined, attempts: 0, revive: true }),
        };
        let unchanged = at_b.apply(&late, now).unwrap_or_else(|e| panic!("{e:?}"));
        assert_eq!(unchanged.status, PaymentStatus::Processing, "a's late decline does not settle the payment b holds");
        let ours = Change::AtBank { bank: "b".into(), change: Box::new(settle(true)) };
        assert_eq!(at_b.apply(&ours, now).unwrap_or_else(|e| panic!("{e:?}")).status, PaymentStatus::Succeeded);
    }

    fn settle(revive: bool) -> Change {
        let outcome = ChargeOutcome { id: "ch_1".into(), approved: true, decline_code: None, closed: None };
        Change::Settle { outcome, attempts: 0, revive }
    }

    fn apply(payment: &Payment, change: &Change) -> Payment {
        payment.apply(change, Utc::now()).unwrap_or_else(|e| panic!("{e:?}"))
    }

    #[test]
    fn every_change_bumps_the_version_and_settles_only_what_it_may() {
        let paid = apply(&processing(), &settle(false));
        assert_eq!((paid.status, paid.version), (PaymentStatus::Succeeded, 4));
        let failed = apply(&processing(), &Change::Fail { reason: "no".into(), attempts: 1 });
        assert_eq!((failed.status, failed.attempts), (PaymentStatus::Failed, 2));
        // A failed payment freed its key; a charge under the key may be a newer payment's.
        assert_eq!(apply(&failed, &settle(false)).status, PaymentStatus::Failed, "the reconciler never revives");
        assert_eq!(apply(&failed, &settle(true)).status, PaymentStatus::Succeeded, "the request that charged may");
        // Failing or settling a settled payment changes nothing but the version.
        let again = apply(&paid, &Change::Fail { reason: "late".into(), attempts: 0 });
        assert_eq!((again.status, again.version), (PaymentStatus::Succeeded, 5));
    }

    #[test]
    fn refund_holds_add_up_and_settle_once() {
        let paid = apply(&processing(), &settle(false));
        let reserve = |id: &str, amount: Option<i64>| Change::ReserveRefund {
            id: id.into(),
            amount,
            idempotency_key: format!("key-{id}"),
            at: Utc::now(),
            lease: chrono::Duration::seconds(30),
        };
        let held = apply(&apply(&paid, &reserve("re_1", Some(600))), &reserve("re_2", None));
        assert_eq!((held.refund("re_2").map(|r| r.amount), held.refundable()), (Some(400), 0));
        assert!(held.due_at().is_some(), "pending refunds are the reconciler's");
        assert_eq!(held.apply(&reserve("re_3", Some(1)), Utc::now()), Err(Refusal::OverAmount { remaining: 0 }));
        let one = apply(&held, &Change::RefundSucceeded { id: "re_1".into() });
        let both = apply(
            &apply(&one, &Change::RefundFailed { id: "re_2".into(), sent_at: None }),
            &Change::RefundSucceeded { id: "re_2".into() },
        );
        assert_eq!(
            (both.refunded_amount, both.status),
            (600, PaymentStatus::PartiallyRefunded),
            "a failed refund stays failed"
        );
        assert_eq!(both.due_at(), None);
        assert_eq!(both.refundable(), 400, "what a failed refund held is free again");
        let declined = Payment { status: PaymentStatus::Declined, ..processing() };
        assert_eq!(
            declined.apply(&reserve("re_9", None), Utc::now()),
            Err(Refusal::InvalidState(PaymentStatus::Declined))
        );
    }

    /// An authorization of 1000, held until `capture_before` an hour from now.
    fn authorized() -> Payment {
        let mut held = processing();
        held.capture = false;
        held.capture_before = Some(Utc::now() + chrono::Duration::hours(1));
        apply(&held, &settle(false))
    }

    fn begin_capture(key: &str, at: DateTime<Utc>) -> Change {
        Change::BeginCapture { amount: None, idempotency_key: key.into(), at, lease: chrono::Duration::seconds(30) }
    }

    #[test]
    fn an_authorization_is_captured_or_canceled_once_and_never_past_capture_before() {
        let held = authorized();
        assert_eq!((held.status, held.capturable(), held.captured()), (PaymentStatus::RequiresCapture, 1000, 0));
        assert_eq!(held.due_at(), held.capture_before, "the reconciler expires it then");
        let capturing = apply(&held, &begin_capture("k1", Utc::now()));
        assert_eq!((capturing.shown_status(), capturing.capturable()), (PaymentStatus::Processing, 0));
        let cancel = Change::BeginCancel {
            reason: CancellationReason::Requested,
            idempotency_key: Some("k2".into()),
            at: Utc::now(),
            lease: chrono::Duration::seconds(30),
        };
        assert_eq!(capturing.apply(&cancel, Utc::now()), Err(Refusal::InvalidState(PaymentStatus::Processing)));
        let captured = apply(&capturing, &Change::Captured { amount: 600, charge_id: "ch_9".into() });
        assert_eq!((captured.status, captured.captured(), captured.refundable()), (PaymentStatus::Succeeded, 600, 600));
        assert_eq!(captured.capture_key.as_deref(), Some("k1"));
        let late = held.capture_before.map(|before| before + chrono::Duration::seconds(1));
        assert_eq!(held.apply(&begin_capture("k3", late.unwrap_or_default()), Utc::now()), Err(Refusal::Expired));
    }

    #[test]
    fn a_late_not_done_never_undoes_a_newer_sending_of_the_same_operation() {
        let first = Utc::now();
        let capturing = apply(&authorized(), &begin_capture("k1", first));
        // The same key sent again (its request died and a retry took it over).
        let resent = apply(&capturing, &begin_capture("k1", first + chrono::Duration::seconds(5)));
        let stale = Change::OperationNotDone {
            end: HoldEnd::Capture,
            idempotency_key: Some("k1".into()),
            sent_at: first,
            retry_at: None,
        };
        assert_eq!(apply(&resent, &stale).pending, resent.pending, "the newer sending stands");
        assert_eq!(apply(&capturing, &stale).pending, None, "the sending it names is undone");
        // A refund sent again after a failed sending is not failed by the old answer.
        let paid = apply(&processing(), &settle(false));
        let reserve = |at| Change::ReserveRefund {
            id: "re_1".into(),
            amount: Some(100),
            idempotency_key: "rk".into(),
            at,
            lease: chrono::Duration::seconds(30),
        };
        let resent = apply(&apply(&paid, &reserve(first)), &reserve(first + chrono::Duration::seconds(5)));
        let old = apply(&resent, &Change::RefundFailed { id: "re_1".into(), sent_at: Some(first) });
        assert_eq!(old.refund("re_1").map(|r| r.status), Some(RefundStatus::Pending));
    }

    #[test]
    fn a_cancel_that_finds_the_hold_captured_is_not_recorded_as_its_capture() {
        let canceling = apply(
            &authorized(),
            &Change::BeginCancel {
                reason: CancellationReason::Requested,
                idempotency_key: Some("c1".into()),
                at: Utc::now(),
                lease: chrono::Duration::seconds(30),
            },
        );
        let captured = apply(&canceling, &Change::Captured { amount: 1000, charge_id: String::new() });
        assert_eq!(
            (captured.status, captured.capture_key, captured.bank_charge_id),
            (PaymentStatus::Succeeded, None, None)
        );
    }

    #[test]
    fn resending_a_settled_payment_is_a_new_version() {
        let paid = apply(&processing(), &settle(false));
        let resend = Change::Resend { at: Utc::now(), lease: chrono::Duration::seconds(30) };
        assert_eq!(apply(&paid, &resend).version, paid.version + 1, "else the store would refuse it for ever");
    }
}
