//! Names derived from a request: its fingerprint (to tell the same request from another under one
//! idempotency key) and the bank's idempotency keys of its charge and refunds.
//!
//! The bank keys come from the merchant, the client's key and the request, never from a payment's
//! id: a retry reaches the bank as the same operation even when the store lost every record of the
//! first attempt, and the bank, which remembers its keys, answers with what it already did.

use hmac::{Hmac, Mac};
use serde::Serialize;
use sha2::Sha256;
use uuid::Uuid;

/// The namespace of the bank keys the gateway derives (UUID v5).
const BANK_KEY_NAMESPACE: Uuid = Uuid::from_u128(0x5f0c_7c1e_2b6d_4a4e_9d3e_8a61_c0de_ba4c);

/// HMAC-SHA256 of the canonical request under the fingerprint key, hex: equal for equal requests,
/// and no card number can be recovered from it without the key.
pub fn fingerprint(key: &[u8], canonical: &impl Serialize) -> String {
    let bytes = serde_json::to_vec(canonical).unwrap_or_default();
    let mut mac =
        <Hmac<Sha256> as Mac>::new_from_slice(key).unwrap_or_else(|_| unreachable!("HMAC accepts keys of any length"));
    mac.update(&bytes);
    mac.finalize().into_bytes().iter().map(|b| format!("{b:02x}")).collect()
}

/// The bank key of a payment: the same for the same merchant, client key and request, so that a
/// retry after the store lost every record of the first attempt is still the same charge.
pub fn bank_key(merchant: &str, idempotency_key: &str, fingerprint: &str) -> String {
    let name = format!("charge\n{merchant}\n{idempotency_key}\n{fingerprint}");
    format!("pk_{}", Uuid::new_v5(&BANK_KEY_NAMESPACE, name.as_bytes()))
}

/// A refund's id, which is also its bank key: one per charge and refund key, so the same refund
/// key on another payment is another refund, and a retry is always the same one.
pub fn refund_id(merchant: &str, payment_bank_key: &str, idempotency_key: &str) -> String {
    let name = format!("refund\n{merchant}\n{payment_bank_key}\n{idempotency_key}");
    format!("re_{}", Uuid::new_v5(&BANK_KEY_NAMESPACE, name.as_bytes()))
}

/// The bank key of a capture or a void of a payment's hold: one per payment and operation, so
/// every capture request, retry and take-over of a payment is one capture at the bank, and a
/// client's cancel and the gateway's own (at `capture_before`) are one void.
pub fn hold_operation_key(merchant: &str, payment_bank_key: &str, operation: &str) -> String {
    let name = format!("{operation}\n{merchant}\n{payment_bank_key}");
    format!("op_{}", Uuid::new_v5(&BANK_KEY_NAMESPACE, name.as_bytes()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_same_request_under_the_same_key_is_the_same_charge_and_nothing_else_is() {
        let fp = fingerprint(b"key", &("USD", 100));
        assert_eq!(fp, fingerprint(b"key", &("USD", 100)));
        assert_ne!(fp, fingerprint(b"other key", &("USD", 100)), "keyed");
        assert_ne!(fp, fingerprint(b"key", &("USD", 101)));
        let charge = bank_key("m", "k", &fp);
        assert_eq!(charge, bank_key("m", "k", &fp));
        assert_ne!(charge, bank_key("m2", "k", &fp), "scoped per merchant");
        assert_ne!(charge, bank_key("m", "k", &fingerprint(b"key", &("USD", 101))), "another request");
        assert_ne!(refund_id("m", &charge, "r"), refund_id("m", "pk_other", "r"), "per charge");
        let capture = hold_operation_key("m", &charge, "capture");
        assert_eq!(capture, hold_operation_key("m", &charge, "capture"));
        assert_ne!(capture, hold_operation_key("m", &charge, "void"), "per operation");
        assert_ne!(capture, hold_operation_key("m", "pk_other", "capture"), "per payment");
    }
}
