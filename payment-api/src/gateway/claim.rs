//! The start every operation on an existing payment shares (a refund, a capture, a cancel): the
//! claim of its key, what a store failure from then on comes to, and the error a refused change
//! is.

use super::{Answer, Gateway};
use crate::error::{Operation, PaymentError};
use crate::model::Refusal;
use crate::store::{Claim, ClaimRequest, StoreError};

/// What claiming an operation's key came to.
pub(super) enum Claimed {
    /// Go ahead; `inherited`: the key was taken over from a request that died, which may have
    /// acted.
    Go { inherited: bool },
    /// Answered before: this again.
    Replay(Answer),
}

/// What a store failure comes to once the key is claimed: when the key was inherited, the request
/// that died may have acted, so never "nothing was done".
pub(super) fn store_failed(operation: Operation, inherited: bool) -> impl Fn(StoreError) -> PaymentError {
    move |error| if inherited { PaymentError::OutcomeUnknown { operation } } else { PaymentError::from(error) }
}

/// The error a change the payment refused comes to, for `operation` on `payment_id`.
pub(super) fn refused(operation: Operation, payment_id: &str, refusal: Refusal) -> PaymentError {
    match refusal {
        Refusal::InvalidState(status) => {
            PaymentError::InvalidState { operation, payment_id: payment_id.to_owned(), status }
        }
        Refusal::OverAmount { remaining } => PaymentError::OverAmount { operation, remaining },
        Refusal::Expired => PaymentError::AuthorizationExpired { payment_id: payment_id.to_owned() },
    }
}

impl Gateway {
    /// Claims `key` (with the request's `fingerprint`, leased to `owner`) for `operation` on
    /// `resource_id`: go ahead, replay, or the 409 / 422 of a key in use or reused.
    pub(super) async fn claim_operation(
        &self,
        operation: Operation,
        key: &str,
        fingerprint: &str,
        owner: &str,
        resource_id: &str,
    ) -> Result<Claimed, PaymentError> {
        let claim = ClaimRequest {
            key,
            fingerprint,
            owner,
            resource_id,
            lease: self.settings.lease,
            retention: self.settings.retention,
            insert: None,
            events: &[],
        };
        match self.timed("claim", self.store.claim(claim)).await? {
            Claim::Fresh => Ok(Claimed::Go { inherited: false }),
            Claim::TakeOver { .. } => Ok(Claimed::Go { inherited: true }),
            Claim::Replay(response) => Ok(Claimed::Replay(Answer::replay(response))),
            Claim::InUse { retry_after } => Err(PaymentError::KeyInUse { operation, retry_after }),
            Claim::Mismatch => Err(PaymentError::KeyReused),
        }
    }
}
