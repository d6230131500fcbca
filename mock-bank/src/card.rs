//! Card numbers: Luhn validation, brand detection, and the deterministic test cards.
//!
//! The bank never keeps a card number: a charge records the brand and the last four digits, and
//! balances are kept under a keyed hash of the number (see [`crate::ledger`]).

use serde::Serialize;

/// Why the bank declined a charge. Serialised as the contract's `decline_code`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum DeclineCode {
    CardDeclined,
    InsufficientFunds,
    ExpiredCard,
    AmountLimitExceeded,
    /// The bank could not process it (a soft decline: another bank may).
    ProcessingError,
    /// The card's issuer did not answer the bank (a soft decline: another bank may).
    IssuerUnavailable,
}

/// Always approves, whatever the balance.
pub const APPROVE: &str = "4242424242424242";
/// Always declines with `card_declined`.
pub const DECLINE: &str = "4000000000000002";
/// Always declines with `insufficient_funds`.
pub const INSUFFICIENT_FUNDS: &str = "4000000000009995";
/// Always declines with `expired_card`.
pub const EXPIRED: &str = "4000000000000069";

/// Always declines with `processing_error`.
pub const PROCESSING_ERROR: &str = "4000000000000119";
/// Always declines with `issuer_unavailable`.
pub const ISSUER_UNAVAILABLE: &str = "4000000000000135";

/// The scripted outcome of a test card, if the number is one.
pub fn scripted_decline(number: &str) -> Option<DeclineCode> {
    match number {
        DECLINE => Some(DeclineCode::CardDeclined),
        INSUFFICIENT_FUNDS => Some(DeclineCode::InsufficientFunds),
        EXPIRED => Some(DeclineCode::ExpiredCard),
        PROCESSING_ERROR => Some(DeclineCode::ProcessingError),
        ISSUER_UNAVAILABLE => Some(DeclineCode::IssuerUnavailable),
        _ => None,
    }
}

pub use http_conventions::card::{CardSummary, brand_of, luhn_valid};

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_test_cards_are_valid_numbers_with_scripted_outcomes() {
        for n in [APPROVE, DECLINE, INSUFFICIENT_FUNDS, EXPIRED, PROCESSING_ERROR, ISSUER_UNAVAILABLE] {
            assert!(luhn_valid(n), "{n} should pass Luhn");
        }
        assert_eq!(scripted_decline(DECLINE), Some(DeclineCode::CardDeclined));
        assert_eq!(scripted_decline(APPROVE), None);
        assert_eq!(scripted_decline(PROCESSING_ERROR), Some(DeclineCode::ProcessingError));
        assert_eq!(scripted_decline(ISSUER_UNAVAILABLE), Some(DeclineCode::IssuerUnavailable));
    }
}
