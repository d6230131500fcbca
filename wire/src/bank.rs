//! What the bank answers about a charge or an authorization, as far as the gateway reads it.

use serde::{Deserialize, Serialize};

/// A charge's outcome at the bank.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ChargeStatus {
    Approved,
    Declined,
}

/// Where an authorization (a hold) stands at the bank.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AuthorizationStatus {
    /// The amount is held.
    Authorized,
    /// Refused by the decline rules: nothing was held.
    Declined,
    /// Captured (all or part): the capture made a charge, and the rest was released.
    Captured,
    /// Released at the merchant's request.
    Voided,
    /// Released because it was not captured in time.
    Expired,
}

impl AuthorizationStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            AuthorizationStatus::Authorized => "authorized",
            AuthorizationStatus::Declined => "declined",
            AuthorizationStatus::Captured => "captured",
            AuthorizationStatus::Voided => "voided",
            AuthorizationStatus::Expired => "expired",
        }
    }
}

impl std::fmt::Display for AuthorizationStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}
