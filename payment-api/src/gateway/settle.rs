//! What a bank call comes to: the settlement table, as one pure function of what the guard
//! reported, what a status inquiry found, and whether the operation was inherited from a request
//! that died. Every flow (a charge, a refund) asks it; each row has a test below.
//!
//! | the guard reported | inquiry | inherited | what happens |
//! |---|---|---|---|
//! | an approval or a decline | — | either | settle from the answer |
//! | any other definitive answer (a 4xx) | — | either | rejected by the bank: the flow's own rule |
//! | refused before any attempt (breaker open, overloaded) | — | no | not done: give up, free the key |
//! | every attempt surely unprocessed | — | no | not done: give up, free the key |
//! | any "not done" row | — | yes | wait for the reconciler: the dead request's attempts may still commit |
//! | some attempt may have acted | not asked yet | either | ask the bank |
//! | … | found | either | settle from what was found |
//! | … | not found, every attempt answered | no | not done: give up, free the key |
//! | … | not found, every attempt answered | yes | wait for the reconciler |
//! | … | not found, some attempt unanswered | either | wait: an unanswered attempt may still commit |
//! | … | the bank could not tell | either | wait for the reconciler |

use resilience::{CallResult, Rejected, StopReason};

/// Why nothing was done.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NotDone {
    /// The breaker refused the call (or its retry): `retry_after` until it may let one through.
    CircuitOpen(Rejected),
    Overloaded,
    /// Every attempt was refused or throttled: the bank surely did nothing.
    BankUnavailable,
    /// An attempt was answered 5xx (the bank may have acted), and the bank had no record of it
    /// although it answered every attempt: nothing was charged as far as it knows now.
    NothingFound,
}

/// A request the bank refused outright: its status and problem code, as far as it said.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rejection {
    pub status: Option<u16>,
    pub code: Option<String>,
}

/// What the guard reported, reduced to what the table needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reported<T> {
    /// An approval or a decline: the bank's answer about the operation.
    Answered(T),
    /// Another definitive answer: the bank refused the request itself.
    Rejected(Rejection),
    /// Refused before any attempt.
    Refused(NotDone),
    /// Every attempt failed.
    Failed { may_have_acted: bool, stopped_by_breaker: Option<Rejected>, unanswered: u32 },
}

/// What a status inquiry found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Inquired<T> {
    Found(T),
    NotFound,
    /// The bank could not tell (an error, a timeout, an outage).
    Unknown,
}

impl<T> From<crate::bank::Inquiry<T>> for Inquired<T> {
    fn from(inquiry: crate::bank::Inquiry<T>) -> Self {
        match inquiry {
            crate::bank::Inquiry::Found(found) => Inquired::Found(found),
            crate::bank::Inquiry::NotFound => Inquired::NotFound,
            crate::bank::Inquiry::Unknown(_) => Inquired::Unknown,
        }
    }
}

/// What happens.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Settlement<T> {
    /// The bank's answer is known: record it.
    Settle(T),
    /// The bank refused the request outright.
    Rejected(Rejection),
    /// The bank surely did nothing: fail the operation and free its key.
    NotDone(NotDone),
    /// Ask the bank what it did, then decide again with what it says.
    Inquire,
    /// The outcome is unknown: leave it to the reconciler (202).
    AwaitReconcile,
}

/// The table.
pub fn settle<T: Clone>(reported: &Reported<T>, inquired: Option<&Inquired<T>>, inherited: bool) -> Settlement<T> {
    let not_done = |why: NotDone| if inherited { Settlement::AwaitReconcile } else { Settlement::NotDone(why) };
    match reported {
        Reported::Answered(answer) => Settlement::Settle(answer.clone()),
        Reported::Rejected(rejection) => Settlement::Rejected(rejection.clone()),
        Reported::Refused(why) => not_done(why.clone()),
        Reported::Failed { may_have_acted: false, stopped_by_breaker, .. } => not_done(match stopped_by_breaker {
            Some(rejected) => NotDone::CircuitOpen(rejected.clone()),
            None => NotDone::BankUnavailable,
        }),
        Reported::Failed { may_have_acted: true, unanswered, .. } => match inquired {
            None => Settlement::Inquire,
            Some(Inquired::Found(answer)) => Settlement::Settle(answer.clone()),
            Some(Inquired::NotFound) if *unanswered == 0 => not_done(NotDone::NothingFound),
            Some(Inquired::NotFound | Inquired::Unknown) => Settlement::AwaitReconcile,
        },
    }
}

/// Reduces the guard's report: `answer` reads the bank's reply (an approval or a decline, or the
/// rejection another definitive answer is).
pub fn reported<R, T>(
    result: CallResult<R>,
    may_have_acted: bool,
    unanswered: u32,
    answer: impl Fn(&R) -> Result<T, Rejection>,
) -> Reported<T> {
    match result {
        CallResult::Success(reply) | CallResult::Definitive(reply) => match answer(&reply) {
            Ok(answer) => Reported::Answered(answer),
            Err(rejection) => Reported::Rejected(rejection),
        },
        CallResult::CircuitOpen(rejected) => Reported::Refused(NotDone::CircuitOpen(rejected)),
        CallResult::Overloaded(_) => Reported::Refused(NotDone::Overloaded),
        CallResult::Failed { stop, .. } => Reported::Failed {
            may_have_acted,
            stopped_by_breaker: match stop {
                StopReason::CircuitOpen(rejected) => Some(rejected),
                _ => None,
            },
            unanswered,
        },
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use resilience::BreakerState;

    use super::*;

    const CHARGE: &str = "ch_1";

    fn failed(may_have_acted: bool, unanswered: u32) -> Reported<&'static str> {
        Reported::Failed { may_have_acted, stopped_by_breaker: None, unanswered }
    }

    fn rejected() -> Rejected {
        Rejected { state: BreakerState::Open, retry_after: Some(Duration::from_secs(3)) }
    }

    #[test]
    fn an_approval_or_decline_settles_inherited_or_not() {
        for inherited in [false, true] {
            assert_eq!(settle(&Reported::Answered(CHARGE), None, inherited), Settlement::Settle(CHARGE));
        }
    }

    #[test]
    fn another_definitive_answer_is_a_rejection() {
        let rejection = Rejection { status: Some(422), code: Some("idempotency_key_reused".into()) };
        let reported = Reported::<&str>::Rejected(rejection.clone());
        assert_eq!(settle(&reported, None, false), Settlement::Rejected(rejection));
    }

    #[test]
    fn refused_before_any_attempt_is_not_done() {
        let open = Reported::<&str>::Refused(NotDone::CircuitOpen(rejected()));
        assert_eq!(settle(&open, None, false), Settlement::NotDone(NotDone::CircuitOpen(rejected())));
        let overloaded = Reported::<&str>::Refused(NotDone::Overloaded);
        assert_eq!(settle(&overloaded, None, false), Settlement::NotDone(NotDone::Overloaded));
    }

    #[test]
    fn every_attempt_surely_unprocessed_is_not_done_and_says_why() {
        assert_eq!(settle(&failed(false, 0), None, false), Settlement::NotDone(NotDone::BankUnavailable));
        let stopped =
            Reported::<&str>::Failed { may_have_acted: false, stopped_by_breaker: Some(rejected()), unanswered: 0 };
        assert_eq!(settle(&stopped, None, false), Settlement::NotDone(NotDone::CircuitOpen(rejected())));
    }

    #[test]
    fn not_done_waits_for_the_reconciler_when_inherited() {
        assert_eq!(settle(&failed(false, 0), None, true), Settlement::AwaitReconcile);
        let open = Reported::<&str>::Refused(NotDone::CircuitOpen(rejected()));
        assert_eq!(settle(&open, None, true), Settlement::AwaitReconcile);
    }

    #[test]
    fn maybe_acted_asks_the_bank_first() {
        assert_eq!(settle(&failed(true, 1), None, false), Settlement::Inquire);
        assert_eq!(settle(&failed(true, 0), None, true), Settlement::Inquire);
    }

    #[test]
    fn what_the_inquiry_found_settles() {
        for inherited in [false, true] {
            assert_eq!(settle(&failed(true, 1), Some(&Inquired::Found(CHARGE)), inherited), Settlement::Settle(CHARGE));
        }
    }

    #[test]
    fn nothing_found_after_every_attempt_was_answered_is_not_done() {
        let found = settle(&failed(true, 0), Some(&Inquired::NotFound), false);
        assert_eq!(found, Settlement::NotDone(NotDone::NothingFound));
    }

    #[test]
    fn nothing_found_for_an_inherited_operation_waits() {
        assert_eq!(settle(&failed(true, 0), Some(&Inquired::NotFound), true), Settlement::AwaitReconcile);
    }

    #[test]
    fn nothing_found_while_an_attempt_was_unanswered_waits() {
        assert_eq!(settle(&failed(true, 2), Some(&Inquired::NotFound), false), Settlement::AwaitReconcile);
    }

    #[test]
    fn a_bank_that_cannot_tell_leaves_it_to_the_reconciler() {
        for inherited in [false, true] {
            assert_eq!(settle(&failed(true, 0), Some(&Inquired::Unknown), inherited), Settlement::AwaitReconcile);
        }
    }
}
