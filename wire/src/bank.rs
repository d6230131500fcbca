//! What the bank answers about a charge, as far as the gateway reads it.

use serde::{Deserialize, Serialize};

/// A charge's outcome at the bank.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ChargeStatus {
    Approved,
    Declined,
}
