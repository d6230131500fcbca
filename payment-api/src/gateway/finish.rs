//! The end every operation shares, once its bank call is over: decide what the call came to
//! (asking the bank when it may have acted), commit the change with the key's record, and answer
//! the client truthfully, keeping the outcome for later if the store fails.

use std::future::Future;

use resilience::CallReport;

use super::Gateway;
use super::backlog::{RecordPlan, Unwritten};
use super::commit::{CommitError, RecordOutcome};
use super::settle::{self, Inquired, Rejection, Reported, Settlement};
use super::{Answer, PaymentError};
use crate::bank::BankReply;
use crate::error::Operation;
use crate::model::{Change, Payment};

/// What a settled bank call comes to for the payment: the change to commit, how its key's record
/// goes, and, when the operation was not done, the error to answer.
#[derive(Debug)]
pub(super) struct Outcome {
    pub change: Change,
    pub plan: RecordPlan,
    /// `Some` when the bank surely did nothing (the key is freed), or refused outright.
    pub refused: Option<PaymentError>,
    /// Whether the bank may have acted: a store failure then is `outcome_unknown`, never
    /// "nothing was done".
    pub may_have_acted: bool,
}

impl Gateway {
    /// The settlement of a bank call: the table, asked again with what `inquire` finds when the
    /// call may have acted. `answer` reads the bank's reply.
    pub(super) async fn settlement<T: Clone, Fut>(
        &self,
        report: CallReport<BankReply>,
        inherited: bool,
        answer: impl Fn(&BankReply) -> Result<T, Rejection>,
        inquire: impl FnOnce() -> Fut,
    ) -> Settlement<T>
    where
        Fut: Future<Output = Inquired<T>>,
    {
        let reported: Reported<T> = settle::reported(report.result, report.may_have_acted, report.unanswered, answer);
        match settle::settle(&reported, None, inherited) {
            Settlement::Inquire => {
                let found = tokio::time::timeout(self.settings.inquiry_timeout, inquire()).await;
                settle::settle(&reported, Some(&found.unwrap_or(Inquired::Unknown)), inherited)
            }
            decided => decided,
        }
    }

    /// Commits `outcome` and answers: the stored answer, or the error it comes to. If the store
    /// fails, the outcome is kept for later and the client told the truth about the bank.
    pub(super) async fn finish(
        &self,
        operation: Operation,
        payment: Payment,
        outcome: Outcome,
    ) -> Result<Answer, PaymentError> {
        let Outcome { change, plan, refused, may_have_acted } = outcome;
        match self.timed("commit", self.commit_change(payment.clone(), &change, &plan)).await {
            Ok(applied) => {
                match applied.record {
                    RecordOutcome::Answered(response) => Ok(Answer::fresh(response)),
                    RecordOutcome::Released => Err(refused.unwrap_or(PaymentError::BankUnavailable { operation })),
                    // A request that took the key over holds it now; it answers for the operation.
                    RecordOutcome::Refused | RecordOutcome::Kept => Err(self.key_in_use(operation)),
                    RecordOutcome::Superseded(Some(answer)) => Ok(answer),
                    RecordOutcome::Superseded(None) => Err(refused.unwrap_or_else(|| self.key_in_use(operation))),
                }
            }
            Err(CommitError::Store(error)) => {
                self.keep_for_later(Unwritten { payment, change, plan }, &error);
                if may_have_acted {
                    Err(PaymentError::OutcomeUnknown { operation })
                } else {
                    Err(PaymentError::StoreUnavailable(error))
                }
            }
            Err(CommitError::Refused(_)) => Err(PaymentError::BankUnavailable { operation }),
        }
    }

    /// 409 for a key that a request holds, retried once its lease may have ended.
    pub(super) fn key_in_use(&self, operation: Operation) -> PaymentError {
        PaymentError::KeyInUse { operation, retry_after: self.settings.lease }
    }
}
