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
}

/// Always approves, whatever the balance.
pub const APPROVE: &str = "4242424242424242";
/// Always declines with `card_declined`.
pub const DECLINE: &str = "4000000000000002";
/// Always declines with `insufficient_funds`.
pub const INSUFFICIENT_FUNDS: &str = "4000000000009995";
/// Always declines with `expired_card`.
pub const EXPIRED: &str = "4000000000000069";

/// The scripted outcome of a test card, if the number is one.
pub fn scripted_decline(number: &str) -> Option<DeclineCode> {
    match number {
        DECLINE => Some(DeclineCode::CardDeclined),
        INSUFFICIENT_FUNDS => Some(DeclineCode::InsufficientFunds),
        EXPIRED => Some(DeclineCode::ExpiredCard),
        _ => None,
    }
}

/// True when `number` is all ASCII digits and passes the Luhn (mod 10) check.
pub fn luhn_valid(number: &str) -> bool {
    if number.is_empty() || !number.bytes().all(|b| b.is_ascii_digit()) {
        return false;
    }
    let sum: u32 = number
        .bytes()
        .rev()
        .enumerate()
        .map(|(i, b)| {
            let d = u32::from(b - b'0');
            if i % 2 == 1 {
                let doubled = d * 2;
                if doubled > 9 { doubled - 9 } else { doubled }
            } else {
                d
            }
        })
        .sum();
    sum.is_multiple_of(10)
}

/// What the bank keeps of a card: enough to show a customer, never enough to charge it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct CardSummary {
    pub brand: &'static str,
    pub last4: String,
}

impl CardSummary {
    pub fn of(number: &str) -> Self {
        let last4 = number.get(number.len().saturating_sub(4)..).unwrap_or_default().to_owned();
        Self { brand: brand_of(number), last4 }
    }
}

/// The card network, from the number's issuer prefix.
pub fn brand_of(number: &str) -> &'static str {
    let prefix2: u32 = number.get(..2).and_then(|p| p.parse().ok()).unwrap_or(0);
    let prefix4: u32 = number.get(..4).and_then(|p| p.parse().ok()).unwrap_or(0);
    match () {
        _ if number.starts_with('4') => "visa",
        _ if (51..=55).contains(&prefix2) || (2221..=2720).contains(&prefix4) => "mastercard",
        _ if prefix2 == 34 || prefix2 == 37 => "amex",
        _ if number.starts_with("6011") || number.starts_with("65") => "discover",
        _ => "unknown",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn luhn_accepts_the_test_cards_and_rejects_a_typo() {
        for n in [APPROVE, DECLINE, INSUFFICIENT_FUNDS, EXPIRED, "5555555555554444", "378282246310005"] {
            assert!(luhn_valid(n), "{n} should pass Luhn");
        }
        assert!(!luhn_valid("4242424242424241"));
        assert!(!luhn_valid("4242 4242 4242 4242"));
        assert!(!luhn_valid(""));
    }

    #[test]
    fn summary_keeps_brand_and_last_four_only() {
        let s = CardSummary::of("5555555555554444");
        assert_eq!(s, CardSummary { brand: "mastercard", last4: "4444".into() });
        assert_eq!(brand_of("378282246310005"), "amex");
        assert_eq!(brand_of(APPROVE), "visa");
    }
}
