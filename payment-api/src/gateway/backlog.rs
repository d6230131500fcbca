//! Outcomes the store could not take. When the bank may have acted and the store then fails
//! (Redis stopped, the disk full), the outcome must not be lost: it is kept here, in this process,
//! and written by a background task as soon as the store answers again. Meanwhile the client is
//! told the truth (the outcome is unknown; retry the same key to learn it), and a retry finds the
//! key still in flight (409) until the outcome is written, then replays it.
//!
//! If this process dies with entries here, the reconciler settles those payments by status
//! inquiry once their lease runs out; if the store lost them too, the client's retry reaches the
//! bank under the same bank key, which answers with the charge it already made.

use std::collections::VecDeque;
use std::sync::Mutex;

use crate::model::{Change, Payment};

/// At most this many outcomes wait; past it the oldest is dropped (and logged), leaving it to the
/// reconciler and the client's retry.
pub const CAPACITY: usize = 100_000;

/// How the idempotency record goes with a change (see `Gateway::commit_change`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RecordPlan {
    /// Only the payment changes.
    Keep,
    /// Store the payment's own answer under its key.
    AnswerPayment { key: String, fingerprint: Option<String> },
    /// Free the key if the change failed the payment; else store its answer.
    ReleasePayment { key: String, owner: Option<String>, fingerprint: Option<String> },
    /// Store the refund's answer under its key.
    AnswerRefund { key: String, refund_id: String, fingerprint: Option<String> },
    /// Free the key unless the refund succeeded or is pending; then store its answer.
    ReleaseRefund { key: String, refund_id: String, owner: Option<String>, fingerprint: Option<String> },
}

/// A change waiting to be written.
#[derive(Debug, Clone)]
pub struct Unwritten {
    /// The payment as last seen; the change is applied to the stored one when it is written.
    pub payment: Payment,
    pub change: Change,
    pub plan: RecordPlan,
}

#[derive(Debug, Default)]
pub struct Backlog {
    waiting: Mutex<VecDeque<Unwritten>>,
}

impl Backlog {
    /// Keeps `unwritten` for later; returns what had to be dropped to make room, if anything.
    pub fn keep(&self, unwritten: Unwritten) -> Option<Unwritten> {
        let mut waiting = self.waiting.lock().unwrap_or_else(|p| p.into_inner());
        let dropped = if waiting.len() >= CAPACITY { waiting.pop_front() } else { None };
        waiting.push_back(unwritten);
        dropped
    }

    /// Everything waiting, oldest first; what cannot be written yet goes back with [`Backlog::keep`].
    pub fn take_all(&self) -> Vec<Unwritten> {
        self.waiting.lock().unwrap_or_else(|p| p.into_inner()).drain(..).collect()
    }

    pub fn len(&self) -> usize {
        self.waiting.lock().unwrap_or_else(|p| p.into_inner()).len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}
