//! The bank as the gateway sees it: HTTP calls, and the one classification of every answer that
//! drives retries, the breaker and what the client is told.

use std::time::Duration;

use reqwest::StatusCode;
use resilience::Verdict;
use serde::Deserialize;
use serde::de::DeserializeOwned;
use serde_json::json;

use crate::model::CreatePayment;
pub use wire::{AuthorizationStatus, ChargeStatus};

/// A charge as the bank reports it.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct BankCharge {
    pub id: String,
    pub status: ChargeStatus,
    #[serde(default)]
    pub decline_code: Option<String>,
    #[serde(default)]
    pub refunded_amount: i64,
    #[serde(default)]
    pub refunds: Vec<BankRefund>,
}

/// An authorization (a hold) as the bank reports it.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct BankAuthorization {
    pub id: String,
    pub status: AuthorizationStatus,
    #[serde(default)]
    pub decline_code: Option<String>,
    #[serde(default)]
    pub captured_amount: i64,
    /// The charge its capture made.
    #[serde(default)]
    pub charge_id: Option<String>,
}

/// The operations on a hold whose outcome a status inquiry can find by their key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HoldOperation {
    Authorize,
    Capture,
    Void,
}

impl HoldOperation {
    fn inquiry_path(self) -> &'static str {
        match self {
            HoldOperation::Authorize => "/v1/authorizations",
            HoldOperation::Capture => "/v1/captures",
            HoldOperation::Void => "/v1/voids",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct BankRefund {
    pub id: String,
    pub amount: i64,
    pub idempotency_key: String,
}

/// What one HTTP exchange with the bank produced.
#[derive(Debug, Clone)]
pub enum BankReply {
    /// A complete HTTP answer: the bank has finished with this request.
    Answer { status: u16, body: bytes::Bytes, retry_after: Option<Duration> },
    /// The request never reached the bank (connection refused, no route).
    NotSent(String),
    /// Sent, but the answer was lost (connection reset, cut short): the bank may still be busy
    /// with it, or may have acted.
    Lost(String),
}

impl BankReply {
    pub fn status(&self) -> Option<u16> {
        match self {
            BankReply::Answer { status, .. } => Some(*status),
            _ => None,
        }
    }

    pub fn charge(&self) -> Option<BankCharge> {
        self.parsed()
    }

    pub fn authorization(&self) -> Option<BankAuthorization> {
        self.parsed()
    }

    fn parsed<T: DeserializeOwned>(&self) -> Option<T> {
        match self {
            BankReply::Answer { body, .. } => serde_json::from_slice(body).ok(),
            _ => None,
        }
    }

    /// The bank's problem `code`, if it answered with one.
    pub fn problem_code(&self) -> Option<String> {
        match self {
            BankReply::Answer { body, .. } => serde_json::from_slice::<serde_json::Value>(body)
                .ok()
                .and_then(|v| v.get("code").and_then(|c| c.as_str()).map(str::to_owned)),
            _ => None,
        }
    }
}

/// The classification: approved is success; a decline or any other 4xx is a definitive answer
/// (never retried, healthy for the breaker); 429 and 503 were refused before processing; 500 and
/// other 5xx, and a lost answer, may have been processed.
pub fn classify(reply: &BankReply) -> Verdict {
    match reply {
        BankReply::Answer { status, retry_after, .. } => match *status {
            200..=299 => Verdict::success(),
            429 | 503 => Verdict::not_processed().with_retry_after(*retry_after),
            400..=499 => Verdict::definitive(),
            _ => Verdict::ambiguous(),
        },
        BankReply::NotSent(_) => Verdict::not_processed(),
        BankReply::Lost(_) => Verdict::lost(),
    }
}

/// The metric label of a bank call attempt's result.
pub fn result_label(reply: &BankReply) -> &'static str {
    match reply {
        BankReply::Answer { status: 200..=299, .. } => "approved",
        BankReply::Answer { status: 402, .. } => "declined",
        BankReply::Answer { status: 429, .. } => "throttled",
        BankReply::Answer { status: 503, .. } => "unavailable",
        BankReply::Answer { status: 400..=499, .. } => "rejected",
        BankReply::Answer { .. } => "server_error",
        BankReply::NotSent(_) => "not_sent",
        BankReply::Lost(_) => "lost",
    }
}

/// The answer to "did you charge (or hold, capture, void) under this key?".
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Inquiry<T = BankCharge> {
    Found(T),
    NotFound,
    /// The bank could not tell (error, timeout, outage).
    Unknown(String),
}

impl<T> Inquiry<T> {
    /// What was found, read as something else.
    pub fn map<U>(self, read: impl FnOnce(T) -> U) -> Inquiry<U> {
        match self {
            Inquiry::Found(found) => Inquiry::Found(read(found)),
            Inquiry::NotFound => Inquiry::NotFound,
            Inquiry::Unknown(why) => Inquiry::Unknown(why),
        }
    }
}

#[derive(Debug, Clone)]
pub struct BankClient {
    http: reqwest::Client,
    base: String,
}

impl BankClient {
    pub fn new(base: &str) -> Result<Self, reqwest::Error> {
        let http = reqwest::Client::builder()
            .pool_max_idle_per_host(1_024)
            .pool_idle_timeout(Duration::from_secs(30))
            .tcp_nodelay(true)
            .connect_timeout(Duration::from_secs(1))
            .build()?;
        Ok(Self { http, base: base.trim_end_matches('/').to_owned() })
    }

    /// Charges under `bank_key` (the same on every attempt), or, for a payment made with
    /// `capture: false`, authorizes (holds the amount).
    pub async fn charge(&self, bank_key: &str, payment: &CreatePayment, request_id: &str) -> BankReply {
        let body = json!({
            "amount": payment.amount,
            "currency": payment.currency,
            "card": payment.card,
            "reference": bank_key,
        });
        let path = if payment.capture { "/v1/charges" } else { "/v1/authorizations" };
        let request = self
            .http
            .post(format!("{}{path}", self.base))
            .header("Idempotency-Key", bank_key)
            .header("X-Request-Id", request_id)
            .json(&body);
        exchange(request).await
    }

    /// Captures `amount` of the hold `authorization_id`, under `key`.
    pub async fn capture(&self, authorization_id: &str, key: &str, amount: i64, request_id: &str) -> BankReply {
        let request = self
            .http
            .post(format!("{}/v1/authorizations/{authorization_id}/capture", self.base))
            .header("Idempotency-Key", key)
            .header("X-Request-Id", request_id)
            .json(&json!({ "amount": amount }));
        exchange(request).await
    }

    /// Releases the hold `authorization_id`, under `key`.
    pub async fn void(&self, authorization_id: &str, key: &str, request_id: &str) -> BankReply {
        let request = self
            .http
            .post(format!("{}/v1/authorizations/{authorization_id}/void", self.base))
            .header("Idempotency-Key", key)
            .header("X-Request-Id", request_id);
        exchange(request).await
    }

    /// The hold as it stands, bounded by `timeout` (`None`: the bank could not tell).
    pub async fn get_authorization(
        &self,
        authorization_id: &str,
        request_id: &str,
        timeout: Duration,
    ) -> Option<BankAuthorization> {
        let request = self
            .http
            .get(format!("{}/v1/authorizations/{authorization_id}", self.base))
            .header("X-Request-Id", request_id);
        let reply = tokio::time::timeout(timeout, exchange(request)).await.ok()?;
        reply.status().filter(|&status| status == 200).and_then(|_| reply.authorization())
    }

    /// Refunds `amount` of `charge_id` under `refund_key`.
    pub async fn refund(&self, charge_id: &str, refund_key: &str, amount: i64, request_id: &str) -> BankReply {
        let request = self
            .http
            .post(format!("{}/v1/charges/{charge_id}/refunds", self.base))
            .header("Idempotency-Key", refund_key)
            .header("X-Request-Id", request_id)
            .json(&json!({ "amount": amount }));
        exchange(request).await
    }

    pub async fn get_charge(&self, charge_id: &str, request_id: &str) -> BankReply {
        let request = self.http.get(format!("{}/v1/charges/{charge_id}", self.base)).header("X-Request-Id", request_id);
        exchange(request).await
    }

    /// Status inquiry by the key the gateway charged under, bounded by `timeout`.
    pub async fn inquire(&self, bank_key: &str, request_id: &str, timeout: Duration) -> Inquiry {
        self.inquire_at("/v1/charges", bank_key, request_id, timeout).await
    }

    /// Status inquiry of an operation on a hold, by the key it was sent under.
    pub async fn inquire_hold(
        &self,
        operation: HoldOperation,
        key: &str,
        request_id: &str,
        timeout: Duration,
    ) -> Inquiry<BankAuthorization> {
        self.inquire_at(operation.inquiry_path(), key, request_id, timeout).await
    }

    async fn inquire_at<T: DeserializeOwned>(
        &self,
        path: &str,
        key: &str,
        request_id: &str,
        timeout: Duration,
    ) -> Inquiry<T> {
        let request = self
            .http
            .get(format!("{}{path}", self.base))
            .query(&[("idempotency_key", key)])
            .header("X-Request-Id", request_id);
        match tokio::time::timeout(timeout, exchange(request)).await {
            Err(_) => Inquiry::Unknown("status inquiry timed out".into()),
            Ok(reply) => match (reply.status(), reply.parsed()) {
                (Some(200), Some(found)) => Inquiry::Found(found),
                (Some(404), _) => Inquiry::NotFound,
                (Some(status), _) => Inquiry::Unknown(format!("status inquiry answered {status}")),
                (None, _) => Inquiry::Unknown(format!("status inquiry failed: {reply:?}")),
            },
        }
    }
}

async fn exchange(request: reqwest::RequestBuilder) -> BankReply {
    match request.send().await {
        Ok(response) => {
            let status = response.status();
            let retry_after = response
                .headers()
                .get(reqwest::header::RETRY_AFTER)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.trim().parse::<u64>().ok())
                .map(Duration::from_secs);
            match response.bytes().await {
                Ok(body) => BankReply::Answer { status: status.as_u16(), body, retry_after },
                // The status line arrived but the body was cut: for an error status nothing more
                // was coming of importance; for a success the answer is lost.
                Err(error) if status.is_server_error() || status == StatusCode::TOO_MANY_REQUESTS => {
                    tracing::debug!(%error, status = status.as_u16(), "bank error body was cut short");
                    BankReply::Answer { status: status.as_u16(), body: bytes::Bytes::new(), retry_after }
                }
                Err(error) => BankReply::Lost(error.to_string()),
            }
        }
        Err(error) if error.is_connect() => BankReply::NotSent(error.to_string()),
        Err(error) => BankReply::Lost(error.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use resilience::Outcome;

    use super::*;

    fn answer(status: u16) -> BankReply {
        BankReply::Answer { status, body: bytes::Bytes::new(), retry_after: None }
    }

    #[test]
    fn one_classification_for_every_answer() {
        assert_eq!(classify(&answer(201)).outcome, Outcome::Success);
        assert_eq!(classify(&answer(402)).outcome, Outcome::Definitive);
        assert_eq!(classify(&answer(422)).outcome, Outcome::Definitive);
        assert_eq!(classify(&answer(429)).outcome, Outcome::NotProcessed);
        assert_eq!(classify(&answer(503)).outcome, Outcome::NotProcessed);
        assert_eq!(classify(&answer(500)).outcome, Outcome::Ambiguous);
        assert_eq!(classify(&answer(502)).outcome, Outcome::Ambiguous);
        assert_eq!(classify(&BankReply::NotSent("refused".into())).outcome, Outcome::NotProcessed);
        assert_eq!(classify(&BankReply::Lost("reset".into())).outcome, Outcome::Ambiguous);
    }
}
