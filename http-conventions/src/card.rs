//! Cards as the contract treats them: Luhn-checked, never logged, never stored whole. What is kept
//! of a card is its [`CardSummary`]: the brand and the last four digits.

use serde::{Deserialize, Serialize};

pub use crate::luhn::luhn_valid;
use crate::problem::FieldError;

/// A card as a client sends it. Its `Debug` output shows only the brand and last four digits, so
/// a stray `?card` in a log line cannot leak the number.
#[derive(Clone, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CardInput {
    /// 12 to 19 digits, passing the Luhn check.
    #[schema(pattern = r"^[0-9]{12,19}$")]
    pub number: String,
    /// 1 to 12.
    #[schema(minimum = 1, maximum = 12)]
    pub exp_month: u32,
    /// Four digits, 2000 to 2099.
    #[schema(minimum = 2000, maximum = 2099)]
    pub exp_year: i32,
    /// 3 or 4 digits.
    #[schema(pattern = r"^[0-9]{3,4}$")]
    pub cvc: String,
}

impl std::fmt::Debug for CardInput {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CardInput").field("card", &CardSummary::of(&self.number)).finish_non_exhaustive()
    }
}

impl CardInput {
    /// Adds a field error for everything wrong with the card.
    pub fn validate(&self, errors: &mut Vec<FieldError>) {
        let number = &self.number;
        if !(12..=19).contains(&number.len()) || !number.bytes().all(|b| b.is_ascii_digit()) {
            errors.push(FieldError::new("card.number", "must be 12 to 19 digits"));
        } else if !luhn_valid(number) {
            errors.push(FieldError::new("card.number", "is not a valid card number (Luhn check failed)"));
        }
        if !(1..=12).contains(&self.exp_month) {
            errors.push(FieldError::new("card.exp_month", "must be 1 to 12"));
        }
        if !(2000..=2099).contains(&self.exp_year) {
            errors.push(FieldError::new("card.exp_year", "must be a four-digit year from 2000 to 2099"));
        }
        if !(3..=4).contains(&self.cvc.len()) || !self.cvc.bytes().all(|b| b.is_ascii_digit()) {
            errors.push(FieldError::new("card.cvc", "must be 3 or 4 digits"));
        }
    }
}

/// What is kept of a card: enough to show a customer, never enough to charge it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct CardSummary {
    pub brand: String,
    pub last4: String,
}

impl CardSummary {
    pub fn of(number: &str) -> Self {
        let last4 = number.get(number.len().saturating_sub(4)..).unwrap_or_default().to_owned();
        Self { brand: brand_of(number).to_owned(), last4 }
    }
}

/// The card network, from the number's issuer prefix.
pub fn brand_of(number: &str) -> &'static str {
    let prefix2: u32 = number.get(..2).and_then(|p| p.parse().ok()).unwrap_or(0);
    let prefix4: u32 = number.get(..4).and_then(|p| p.parse().ok()).unwrap_or(0);
    if number.starts_with('4') {
        "visa"
    } else if (51..=55).contains(&prefix2) || (2221..=2720).contains(&prefix4) {
        "mastercard"
    } else if prefix2 == 34 || prefix2 == 37 {
        "amex"
    } else if number.starts_with("6011") || number.starts_with("65") {
        "discover"
    } else {
        "unknown"
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn luhn_accepts_real_test_numbers_and_rejects_a_typo() {
        for n in ["4242424242424242", "4000000000000002", "5555555555554444", "378282246310005"] {
            assert!(luhn_valid(n), "{n}");
        }
        assert!(!luhn_valid("4242424242424241"));
        assert!(!luhn_valid("4242 4242 4242 4242"));
        assert!(!luhn_valid(""));
    }

    #[test]
    fn summary_and_debug_keep_only_brand_and_last_four() {
        assert_eq!(
            CardSummary::of("5555555555554444"),
            CardSummary { brand: "mastercard".into(), last4: "4444".into() }
        );
        assert_eq!(brand_of("378282246310005"), "amex");
        let card = CardInput { number: "4242424242424242".into(), exp_month: 1, exp_year: 2030, cvc: "123".into() };
        let debug = format!("{card:?}");
        assert!(!debug.contains("4242424242424242") && !debug.contains("123\""), "{debug}");
    }
}
