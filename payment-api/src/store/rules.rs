//! The rules of listing and indexing, written once; each backend walks and stores, and follows
//! them (Redis's scripts follow the index rule in Lua, and say so).
//!
//! - Pagination ([`Pager`]): a page starts at the newest payment, or just after the payment its
//!   cursor names, if that payment is the merchant's (else the page is empty); it skips what the
//!   filter does not match, and says whether more follow.
//! - Index upkeep ([`IndexEntry`], [`index_moves`]): a payment is listed under its merchant by
//!   creation time from its first write on, and is on the reconciler's due list, by due time,
//!   exactly while it is due.

use std::ops::ControlFlow;

use super::{PaymentFilter, PaymentPage};
use crate::model::{Payment, PaymentStatus};

/// Sort key of a payment in its merchant's list: creation time in microseconds.
pub fn created_micros(payment: &Payment) -> i64 {
    payment.created_at.timestamp_micros()
}

/// When a payment is due for the reconciler, in milliseconds since the epoch (see
/// `Payment::due_at`).
pub fn due_ms(payment: &Payment) -> Option<i64> {
    payment.due_at().map(|at| at.timestamp_millis())
}

/// Whether `payment` passes the listing's filters (by the status clients see).
pub fn matches(payment: &Payment, filter: &PaymentFilter) -> bool {
    filter.order_id.as_ref().is_none_or(|order| payment.order_id.as_ref() == Some(order))
        && filter.status.is_none_or(|status: PaymentStatus| payment.shown_status() == status)
}

/// Fills one page from a walk of a merchant's payments, newest first.
#[derive(Debug)]
pub struct Pager<'a> {
    filter: &'a PaymentFilter,
    /// Until the walk has passed the cursor, it is skipped and so is everything before it.
    after: Option<String>,
    page: PaymentPage,
}

impl<'a> Pager<'a> {
    /// Where the walk of `merchant`'s payments starts: `None` for an empty page (a cursor that is
    /// no payment of this merchant); else the pager and the creation time to walk down from
    /// (`None`: the newest), including every payment created at that very time.
    /// `cursor` is the stored payment that `filter.starting_after` names, if any.
    pub fn start(merchant: &str, filter: &'a PaymentFilter, cursor: Option<&Payment>) -> Option<(Self, Option<i64>)> {
        let pager = |after| Self { filter, after, page: PaymentPage::default() };
        match (&filter.starting_after, cursor) {
            (None, _) => Some((pager(None), None)),
            (Some(id), Some(cursor)) if cursor.merchant_id == merchant && cursor.id == *id => {
                Some((pager(Some(id.clone())), Some(created_micros(cursor))))
            }
            (Some(_), _) => None,
        }
    }

    /// Takes the walk's next payment (newest first, ties by id, descending); `Break` once the page
    /// is full and another match has shown that more follow.
    pub fn offer(&mut self, payment: Payment) -> ControlFlow<()> {
        if let Some(after) = &self.after {
            if payment.id == *after {
                self.after = None;
            }
            return ControlFlow::Continue(());
        }
        if !matches(&payment, self.filter) {
            return ControlFlow::Continue(());
        }
        if self.page.payments.len() == self.filter.limit {
            self.page.has_more = true;
            return ControlFlow::Break(());
        }
        self.page.payments.push(payment);
        ControlFlow::Continue(())
    }

    pub fn finish(self) -> PaymentPage {
        self.page
    }
}

/// Where a payment stands in the indexes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IndexEntry {
    /// Its place in its merchant's list.
    pub created: i64,
    /// Its place in the reconciler's due list, while it is due.
    pub due: Option<i64>,
}

impl IndexEntry {
    pub fn of(payment: &Payment) -> Self {
        Self { created: created_micros(payment), due: due_ms(payment) }
    }
}

/// What writing a payment does to the indexes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct IndexMoves {
    /// List it under its merchant at this time (its first write).
    pub list: Option<i64>,
    /// Take it off the due list at this time.
    pub unschedule: Option<i64>,
    /// Put it on the due list at this time.
    pub schedule: Option<i64>,
}

/// The index rule: `old` is where the stored payment stands (`None`: no stored payment).
pub fn index_moves(old: Option<IndexEntry>, new: IndexEntry) -> IndexMoves {
    let old_due = old.and_then(|o| o.due);
    let due_moved = old_due != new.due;
    IndexMoves {
        list: old.is_none().then_some(new.created),
        unschedule: old_due.filter(|_| due_moved),
        schedule: new.due.filter(|_| due_moved),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_payment_is_listed_once_and_scheduled_while_due() {
        let due = |due| IndexEntry { created: 10, due };
        assert_eq!(index_moves(None, due(Some(5))), IndexMoves { list: Some(10), unschedule: None, schedule: Some(5) });
        assert_eq!(
            index_moves(Some(due(Some(5))), due(Some(9))),
            IndexMoves { list: None, unschedule: Some(5), schedule: Some(9) }
        );
        assert_eq!(
            index_moves(Some(due(Some(5))), due(None)),
            IndexMoves { list: None, unschedule: Some(5), schedule: None }
        );
        assert_eq!(index_moves(Some(due(None)), due(None)), IndexMoves::default());
        assert_eq!(index_moves(Some(due(Some(5))), due(Some(5))), IndexMoves::default(), "nothing moved");
    }
}
