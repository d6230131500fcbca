//! `Authorization: Bearer <secret>` → the merchant. Secrets are compared in constant time, and
//! every configured key is compared, so timing tells nothing about which key nearly matched.

use axum::http::{HeaderMap, header};
use http_conventions::problem::{ErrorCode, Problem};
use subtle::ConstantTimeEq;

use crate::config::ApiKey;

#[derive(Clone)]
pub struct Keys {
    merchants: Vec<ApiKey>,
}

impl std::fmt::Debug for Keys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Keys").field("merchants", &self.merchants.len()).finish()
    }
}

/// The merchant a request acts for, put in its extensions by the auth middleware.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Merchant(pub String);

impl Keys {
    pub fn new(merchants: Vec<ApiKey>) -> Self {
        Self { merchants }
    }

    /// The merchant whose secret is in the `Authorization` header value, if any.
    pub fn authenticate(&self, header: Option<&str>) -> Option<Merchant> {
        let token = bearer(header?)?;
        let mut found = None;
        for key in &self.merchants {
            if bool::from(key.secret.as_bytes().ct_eq(token.as_bytes())) {
                found = Some(Merchant(key.merchant_id.clone()));
            }
        }
        found
    }
}

/// The request's one `Authorization` header value, if any. Two of them are refused (400): which
/// one would count is up to whoever reads them, so a proxy and this server could disagree.
pub fn authorization(headers: &HeaderMap) -> Result<Option<&str>, Problem> {
    let mut values = headers.get_all(header::AUTHORIZATION).iter();
    let first = values.next();
    if values.next().is_some() {
        return Err(Problem::new(ErrorCode::InvalidRequest, "send exactly one Authorization header"));
    }
    Ok(first.and_then(|v| v.to_str().ok()))
}

/// The token of `Bearer <token>` (the scheme in any case); any other scheme is no credential.
pub fn bearer(header: &str) -> Option<&str> {
    let (scheme, token) = header.trim().split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then(|| token.trim()).filter(|t| !t.is_empty())
}

/// Constant-time comparison of two secrets.
pub fn secret_matches(expected: &str, given: &str) -> bool {
    bool::from(expected.as_bytes().ct_eq(given.as_bytes()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_the_merchant_by_bearer_secret() {
        let keys = Keys::new(vec![
            ApiKey { merchant_id: "a".into(), secret: "secret-of-a-123".into() },
            ApiKey { merchant_id: "b".into(), secret: "secret-of-b-456".into() },
        ]);
        assert_eq!(keys.authenticate(Some("Bearer secret-of-b-456")), Some(Merchant("b".into())));
        assert_eq!(keys.authenticate(Some("bearer  secret-of-a-123 ")), Some(Merchant("a".into())));
        assert_eq!(keys.authenticate(Some("Bearer secret-of-a-12")), None);
        assert_eq!(keys.authenticate(Some("Basic secret-of-a-123")), None);
        assert_eq!(keys.authenticate(Some("Token secret-of-a-123")), None);
        assert_eq!(keys.authenticate(None), None);
        assert!(secret_matches("admin-key", "admin-key") && !secret_matches("admin-key", "admin-kez"));
    }
}
