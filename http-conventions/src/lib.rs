//! # http-conventions
//!
//! The contract's "common conventions", implemented once for every service:
//! - [`problem`]: RFC 9457 `application/problem+json` errors with a stable machine `code`;
//! - [`extract`]: JSON bodies whose every rejection is a problem (400 malformed, 422 wrong shape,
//!   413 too large, 415 not JSON);
//! - [`idempotency`]: the `Idempotency-Key` header (1..=255 visible ASCII; a quoted sf-string and
//!   a bare token are the same key);
//! - [`request_id`]: `X-Request-Id`, echoed or generated, on every response and log line;
//! - [`serve`]: HTTP/1.1 connections with header-read, body-read and idle timeouts, a connection
//!   limit, `Connection: close` on early answers, and problem+json for unparsable requests;
//! - [`shutdown`]: the Ctrl-C / SIGTERM signal every service stops on;
//! - [`card`]: Luhn checks, brands, and the card summary (brand + last four) that is all a service
//!   may keep of a card; [`redact`] keeps card numbers out of any text that leaves.

pub mod card;
pub mod extract;
pub mod idempotency;
pub mod luhn;
pub mod problem;
pub mod redact;
pub mod request_id;
pub mod serve;
pub mod shutdown;

pub use card::{CardInput, CardSummary};
pub use extract::{JsonBody, OptionalJsonBody, Path, Query, parse_json};
pub use idempotency::IdempotencyKey;
pub use problem::{ErrorCode, FieldError, Problem};
pub use request_id::RequestId;

/// The largest integer every JSON client carries exactly (2^53 - 1): the most an amount may be.
pub const MAX_JSON_INTEGER: i64 = 9_007_199_254_740_991;
