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
    /// Store under `key` what `subject` answers, as the payment stands after the change.
    Answer(Answering),
}

/// The record of one operation's key, and what goes into it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Answering {
    pub key: String,
    /// Whose answer the key replays.
    pub subject: Subject,
    /// The request's fingerprint, to write the record again if the store lost it (`None`: not
    /// known here, as in the reconciler; then a lost record stays lost).
    pub fingerprint: Option<String>,
    /// When the operation turns out not done (the subject answers nothing), free the key as this
    /// lease holder (`Some(None)`: as the reconciler, never from under a live request); `None`:
    /// keep it.
    pub release: Option<Option<String>>,
}

/// What an operation's key names, and so answers with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Subject {
    /// The payment itself (`POST /v1/payments`).
    Payment,
    /// One of its refunds.
    Refund(String),
    /// Its capture, made under this client key.
    Capture(String),
    /// Its cancel, made under this client key.
    Cancel(String),
}

impl RecordPlan {
    /// Answer `subject` under `key`, keeping the key whatever happens.
    pub fn answer(key: &str, subject: Subject, fingerprint: Option<&str>) -> Self {
        RecordPlan::Answer(Answering {
            key: key.to_owned(),
            subject,
            fingerprint: fingerprint.map(str::to_owned),
            release: None,
        })
    }

    /// Answer `subject` under `key`, or free the key (as `owner`) if it answers nothing.
    pub fn answer_or_release(key: &str, subject: Subject, fingerprint: Option<&str>, owner: Option<&str>) -> Self {
        RecordPlan::Answer(Answering {
            key: key.to_owned(),
            subject,
            fingerprint: fingerprint.map(str::to_owned),
            release: Some(owner.map(str::to_owned)),
        })
    }
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
