//! The `Idempotency-Key` header: 1..=255 visible ASCII characters, where a quoted structured-field
//! string (`"abc"`, RFC 8941) and the bare token (`abc`) name the same key.

use axum::extract::FromRequestParts;
use axum::http::request::Parts;

use crate::problem::Problem;

pub const HEADER: &str = "idempotency-key";
/// Marks an answer given again for a key that was already answered.
pub const REPLAYED_HEADER: &str = "idempotent-replayed";
pub const MAX_LEN: usize = 255;

/// A validated, normalised idempotency key, extracted from the request headers.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct IdempotencyKey(pub String);

impl<S: Send + Sync> FromRequestParts<S> for IdempotencyKey {
    type Rejection = Problem;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        let Some(value) = parts.headers.get(HEADER) else {
            return Err(Problem::new(
                crate::problem::ErrorCode::IdempotencyKeyMissing,
                "send an Idempotency-Key header so that a retried request is never processed twice",
            ));
        };
        parse(value.as_bytes()).map(IdempotencyKey)
    }
}

/// Normalises a raw key (from a header or a query string) or explains what is wrong with it.
pub fn parse(raw: &[u8]) -> Result<String, Problem> {
    let key = unquote(raw)?;
    if key.is_empty() {
        return Err(Problem::invalid_request("the Idempotency-Key is empty"));
    }
    if key.len() > MAX_LEN {
        return Err(Problem::invalid_request(format!(
            "the Idempotency-Key is {} characters long; at most {MAX_LEN} are allowed",
            key.len()
        )));
    }
    if !key.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(Problem::invalid_request("the Idempotency-Key may contain only visible ASCII characters"));
    }
    Ok(key)
}

fn unquote(raw: &[u8]) -> Result<String, Problem> {
    let text =
        std::str::from_utf8(raw).map_err(|_| Problem::invalid_request("the Idempotency-Key is not ASCII"))?.trim();
    let Some(inner) = text.strip_prefix('"') else {
        return Ok(text.to_owned());
    };
    let Some(inner) = inner.strip_suffix('"') else {
        return Err(Problem::invalid_request("the quoted Idempotency-Key has no closing quote"));
    };
    let mut out = String::with_capacity(inner.len());
    let mut chars = inner.chars();
    while let Some(c) = chars.next() {
        match c {
            '\\' => match chars.next() {
                Some(escaped @ ('"' | '\\')) => out.push(escaped),
                _ => return Err(Problem::invalid_request("bad escape in the quoted Idempotency-Key")),
            },
            '"' => return Err(Problem::invalid_request("unescaped quote in the Idempotency-Key")),
            other => out.push(other),
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quoted_and_bare_forms_are_the_same_key() {
        assert_eq!(parse(b"abc-123").ok(), Some("abc-123".to_owned()));
        assert_eq!(parse(b"\"abc-123\"").ok(), Some("abc-123".to_owned()));
        assert_eq!(parse(br#""a\"b""#).ok(), Some("a\"b".to_owned()));
    }

    #[test]
    fn rejects_empty_long_and_invisible_keys() {
        assert!(parse(b"").is_err());
        assert!(parse(b"\"\"").is_err());
        assert!(parse("k".repeat(256).as_bytes()).is_err());
        assert!(parse("k".repeat(255).as_bytes()).is_ok());
        assert!(parse(b"has space").is_err());
        assert!(parse(b"\"unterminated").is_err());
    }
}
