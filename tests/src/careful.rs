//! A careful client of the gateway, as a well-behaved merchant integration is written: it sends a
//! payment under one idempotency key until it gets a final answer, retrying the same key on 409
//! (after `Retry-After`), 429, 503, 5xx and network errors with backoff, and polling a 202 until
//! the payment settles. Refunds, captures and cancels the same way (a 202 is retried under its key
//! until the replay is final). It is the load generator's payment session and the soak's client.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper::Request;
use serde::Deserialize;
use tokio::time::Instant;

use crate::loadgen::{Connection, Outcome, Reply, Session};

/// Where payments go.
#[derive(Debug, Clone)]
pub struct Targets {
    /// Gateway base URLs, used round-robin.
    pub gateways: Vec<String>,
    /// Every bank the gateways route to (their ledgers together are the audit truth).
    pub banks: Vec<String>,
    pub api_key: String,
}

/// What the clients saw, over every request they sent.
#[derive(Debug, Default)]
pub struct ClientTally {
    /// Answers by HTTP status.
    pub statuses: std::sync::Mutex<BTreeMap<u16, u64>>,
    pub sent: AtomicU64,
    pub retries: AtomicU64,
    pub server_errors: AtomicU64,
    pub transport_errors: AtomicU64,
}

/// The final answer a client got for a key.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Final {
    pub status: String,
    pub payment_id: String,
    pub amount: i64,
    /// The bank charge the payment names, once settled.
    pub charge_id: Option<String>,
    /// The bank authorization it names, for a two-step payment.
    pub authorization_id: Option<String>,
}

#[derive(Debug, Deserialize)]
struct PaymentView {
    id: String,
    status: String,
    #[serde(default)]
    bank_charge_id: Option<String>,
    #[serde(default)]
    bank_authorization_id: Option<String>,
}

impl PaymentView {
    fn into_final(self, amount: i64) -> Final {
        Final {
            status: self.status,
            payment_id: self.id,
            amount,
            charge_id: self.bank_charge_id,
            authorization_id: self.bank_authorization_id,
        }
    }
}

/// What polling a 202 came to.
enum Polled {
    Settled(Final),
    /// The payment is gone (404): the store lost its data.
    Forgotten,
    GaveUp,
}

/// The final answer to a refund: the refund made (201) or why not (the status and code).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RefundFinal {
    Refunded { id: String, amount: i64 },
    Refused { status: u16, code: String },
}

/// What the refunds of one payment came to, as its clients saw them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RefundTally {
    pub payment_id: String,
    /// The sum of the distinct refunds answered 201.
    pub refunded: i64,
    /// A refund key answered two different ways, or not at all.
    pub diverged: bool,
}

#[derive(Debug, Deserialize)]
struct RefundView {
    #[serde(default)]
    id: Option<String>,
    #[serde(default)]
    amount: Option<i64>,
}

/// The amount of logical payment `seq`.
pub fn amount_of(seq: u64) -> i64 {
    100 + (seq as i64 % 5_000)
}

/// The amount of the logical payment with this key (`load-<run>-<seq>`, or `hold-…`).
pub fn amount_of_key(key: &str) -> Option<i64> {
    key.rsplit('-').next()?.parse().ok().map(amount_of)
}

/// Whether logical payment `key` only authorizes (a two-step payment).
pub fn is_hold(key: &str) -> bool {
    key.starts_with("hold-")
}

/// The body of logical payment `key`; amounts ending in 0 use a card the bank declines, and a
/// `hold-…` key only authorizes.
pub fn payment_body(key: &str, amount: i64) -> Bytes {
    let card = if amount % 10 == 0 { "4000000000000002" } else { "4242424242424242" };
    let mut body = serde_json::json!({
        "amount": amount,
        "currency": "USD",
        "order_id": key,
        "card": {"number": card, "exp_month": 12, "exp_year": 2030, "cvc": "123"},
    });
    if is_hold(key) {
        body["capture"] = serde_json::Value::Bool(false);
    }
    Bytes::from(body.to_string())
}

/// The final answer to a capture or a cancel: done (200, with the payment's status and what was
/// captured), or refused (the status and code).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum VerbFinal {
    Done { status: String, amount_captured: i64 },
    Refused { status: u16, code: String },
}

/// What became of one two-step payment, as its clients saw it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HoldTally {
    pub key: String,
    pub payment_id: String,
    /// What a capture answered 200 said was captured.
    pub captured: Option<i64>,
    /// A cancel answered 200.
    pub canceled: bool,
    /// A verb's key answered two different ways, or a capture and a cancel both succeeded.
    pub diverged: bool,
    /// Some answer was 404: the store lost the payment (only when it may lose its data).
    pub forgotten: bool,
    /// The answers, when they diverged.
    pub detail: String,
}

/// What one round of a hold's fate was answered.
struct HoldAnswers {
    /// What each verb came to: done if either of its sendings was.
    capture: Option<VerbFinal>,
    cancel: Option<VerbFinal>,
    /// A verb key answered two ways.
    diverged: bool,
    /// Some answer was 404 (the payment is gone).
    forgotten: bool,
    detail: String,
}

/// What a two-step payment's clients do once it is authorized, chosen by its sequence number.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Fate {
    CaptureAll,
    CaptureHalf,
    Cancel,
    /// Both at once, from two clients: exactly one may win.
    Race,
    /// Nothing: the gateway cancels it at `capture_before`.
    Expire,
}

impl Fate {
    fn of(seq: u64) -> Self {
        match (seq / 7) % 10 {
            0..=2 => Fate::CaptureAll,
            3 | 4 => Fate::CaptureHalf,
            5 | 6 => Fate::Cancel,
            7 | 8 => Fate::Race,
            _ => Fate::Expire,
        }
    }
}

/// A payment answered 200 to a capture or a cancel.
#[derive(Debug, Deserialize)]
struct HoldView {
    status: String,
    #[serde(default)]
    amount_captured: Option<i64>,
}

/// One client: a keep-alive connection to each gateway.
#[derive(Debug)]
pub struct CarefulClient {
    gateways: Vec<(Connection, String)>,
    authorization: String,
    tally: Arc<ClientTally>,
    /// How long one request may take before the client gives up on it (and retries).
    request_timeout: Duration,
}

impl CarefulClient {
    pub fn new(targets: &Targets, tally: Arc<ClientTally>) -> anyhow::Result<Self> {
        let mut gateways = Vec::with_capacity(targets.gateways.len());
        for base in &targets.gateways {
            let host = base.trim_start_matches("http://").trim_end_matches('/').to_owned();
            gateways.push((Connection::to_base_url(base)?, host));
        }
        anyhow::ensure!(!gateways.is_empty(), "no gateway to send payments to");
        Ok(Self {
            gateways,
            authorization: format!("Bearer {}", targets.api_key),
            tally,
            request_timeout: Duration::from_secs(15),
        })
    }

    fn request(&self, host: &str, method: &str, path: &str, key: Option<&str>, body: Bytes) -> Request<Full<Bytes>> {
        let mut request = Request::builder()
            .method(method)
            .uri(path)
            .header("host", host)
            .header("authorization", &self.authorization)
            .header("content-type", "application/json");
        if let Some(key) = key {
            request = request.header("idempotency-key", key);
        }
        request.body(Full::new(body)).unwrap_or_default()
    }

    /// Sends payment `key` until it gets a final answer or `deadline` passes (`None`). `turn`
    /// picks the first gateway; each retry goes to the next.
    pub async fn pay(&mut self, key: &str, amount: i64, deadline: Duration, turn: usize) -> Option<Final> {
        let give_up = Instant::now() + deadline;
        let body = payment_body(key, amount);
        let mut attempt = 0u32;
        while Instant::now() < give_up {
            let (gateway, backoff, reply) = self.send(turn, &mut attempt, "/v1/payments", key, &body).await;
            let Some(reply) = reply else { continue };
            match reply.status {
                201 | 402 => return Some(view(&reply)?.into_final(amount)),
                202 => {
                    let id = view(&reply)?.id;
                    match self.poll_until_settled(gateway, &id, amount, give_up).await {
                        // The bank never charged it and the gateway freed the key: send the key again.
                        Polled::Settled(settled) if settled.status == "failed" => continue,
                        Polled::Settled(settled) => return Some(settled),
                        // A store that lost its data forgot the payment: the key tells again.
                        Polled::Forgotten => continue,
                        Polled::GaveUp => return None,
                    }
                }
                409 | 429 | 503 | 500..=599 => self.back_off(&reply, backoff).await,
                _ => return None,
            }
        }
        None
    }

    /// Sends one attempt of a keyed `POST`, to the gateway whose turn it is, and counts it.
    /// Returns the gateway, the backoff before the next attempt, and the reply (`None`: no answer,
    /// already waited for).
    async fn send(
        &mut self,
        turn: usize,
        attempt: &mut u32,
        path: &str,
        key: &str,
        body: &Bytes,
    ) -> (usize, Duration, Option<Reply>) {
        let gateway = (turn + *attempt as usize) % self.gateways.len();
        *attempt += 1;
        if *attempt > 1 {
            self.tally.retries.fetch_add(1, Ordering::Relaxed);
        }
        self.tally.sent.fetch_add(1, Ordering::Relaxed);
        let request = self.request(&self.gateways[gateway].1, "POST", path, Some(key), body.clone());
        let reply = self.gateways[gateway].0.send(request, self.request_timeout).await;
        let backoff = Duration::from_millis((20 * u64::from((*attempt).min(10))).min(500) + fastrand::u64(..50));
        match reply {
            Some(reply) => {
                *self.tally.statuses.lock().unwrap_or_else(|p| p.into_inner()).entry(reply.status).or_default() += 1;
                (gateway, backoff, Some(reply))
            }
            None => {
                self.tally.transport_errors.fetch_add(1, Ordering::Relaxed);
                tokio::time::sleep(backoff).await;
                (gateway, backoff, None)
            }
        }
    }

    /// Waits before the same key goes again: `Retry-After` (at most 2 s) or the backoff; a 5xx
    /// other than 503 is counted as a server error.
    async fn back_off(&self, reply: &Reply, backoff: Duration) {
        if reply.status >= 500 && reply.status != 503 {
            self.tally.server_errors.fetch_add(1, Ordering::Relaxed);
        }
        let retry_after = reply.retry_after.map(|s| Duration::from_secs(s.min(2)));
        tokio::time::sleep(retry_after.unwrap_or(backoff).max(backoff)).await;
    }

    async fn poll_until_settled(&mut self, gateway: usize, id: &str, amount: i64, give_up: Instant) -> Polled {
        let mut poll = tokio::time::interval(Duration::from_millis(100));
        poll.tick().await;
        let path = format!("/v1/payments/{id}");
        while Instant::now() < give_up {
            poll.tick().await;
            let request = self.request(&self.gateways[gateway].1, "GET", &path, None, Bytes::new());
            let Some(reply) = self.gateways[gateway].0.send(request, self.request_timeout).await else { continue };
            if reply.status == 404 {
                return Polled::Forgotten;
            }
            let Some(payment) = view(&reply) else { continue };
            if payment.status != "processing" {
                return Polled::Settled(payment.into_final(amount));
            }
        }
        Polled::GaveUp
    }

    /// Refunds `amount` (`None`: the rest) of `payment_id` under `key` until it gets a final
    /// answer or `deadline` passes (`None`).
    pub async fn refund(
        &mut self,
        payment_id: &str,
        key: &str,
        amount: Option<i64>,
        deadline: Duration,
        turn: usize,
    ) -> Option<RefundFinal> {
        let path = format!("/v1/payments/{payment_id}/refunds");
        let read = |reply: &Reply| {
            let view: RefundView = serde_json::from_slice(&reply.body).ok()?;
            Some((view.id?, view.amount?))
        };
        match self.until_final(&path, key, amount, deadline, turn, 201, read).await? {
            Ok((id, amount)) => Some(RefundFinal::Refunded { id, amount }),
            Err((status, code)) => Some(RefundFinal::Refused { status, code }),
        }
    }

    /// Sends a keyed `POST` (with `{"amount": n}`, or no body) until it gets a final answer or
    /// `deadline` passes (`None`): `done` (read by `read`), or a refusal (404, 422, 409
    /// `invalid_state`: the status and code). A 202 (pending), another 409 (in use), 429 and 5xx
    /// are retried under the same key.
    #[allow(clippy::too_many_arguments)]
    async fn until_final<T>(
        &mut self,
        path: &str,
        key: &str,
        amount: Option<i64>,
        deadline: Duration,
        turn: usize,
        done: u16,
        read: impl Fn(&Reply) -> Option<T>,
    ) -> Option<Result<T, (u16, String)>> {
        let give_up = Instant::now() + deadline;
        let body = match amount {
            Some(amount) => Bytes::from(serde_json::json!({ "amount": amount }).to_string()),
            None => Bytes::new(),
        };
        let mut attempt = 0u32;
        while Instant::now() < give_up {
            let (_, backoff, reply) = self.send(turn, &mut attempt, path, key, &body).await;
            let Some(reply) = reply else { continue };
            let code = serde_json::from_slice::<serde_json::Value>(&reply.body)
                .ok()
                .and_then(|v| v["code"].as_str().map(str::to_owned))
                .unwrap_or_default();
            match reply.status {
                status if status == done => return Some(Ok(read(&reply)?)),
                404 | 422 => return Some(Err((reply.status, code))),
                409 if code == "invalid_state" => return Some(Err((409, code))),
                202 | 409 | 429 | 500..=599 => self.back_off(&reply, backoff).await,
                _ => return None,
            }
        }
        None
    }
}

impl CarefulClient {
    /// Captures (`amount`, `None`: all) or cancels payment `payment_id` under `key` until it gets
    /// a final answer or `deadline` passes (`None`).
    pub async fn hold_verb(
        &mut self,
        payment_id: &str,
        verb: &str,
        key: &str,
        amount: Option<i64>,
        deadline: Duration,
        turn: usize,
    ) -> Option<VerbFinal> {
        let path = format!("/v1/payments/{payment_id}/{verb}");
        let read = |reply: &Reply| {
            let view: HoldView = serde_json::from_slice(&reply.body).ok()?;
            Some((view.status, view.amount_captured.unwrap_or(0)))
        };
        match self.until_final(&path, key, amount, deadline, turn, 200, read).await? {
            Ok((status, amount_captured)) => Some(VerbFinal::Done { status, amount_captured }),
            Err((status, code)) => Some(VerbFinal::Refused { status, code }),
        }
    }
}

fn view(reply: &Reply) -> Option<PaymentView> {
    serde_json::from_slice(&reply.body).ok()
}

/// The load generator's payment session: call `seq` is one logical payment with its own key,
/// made by a careful client. A share of payments is also sent by a twin client at the same time,
/// and once more afterwards, with the same key and body; all of them must see one payment.
#[derive(Debug)]
pub struct PaymentSession {
    main: CarefulClient,
    twin: CarefulClient,
    run_id: String,
    duplicate_share: f64,
    /// Share of succeeded payments then refunded: two partial refunds at once, the rest after, and
    /// the first again.
    refund_share: f64,
    /// Share of payments that only authorize, then are captured (all or half), canceled, both at
    /// once, or left to expire.
    two_step_share: f64,
    deadline: Duration,
    /// Each logical payment's key and the final answer its clients agreed on (`None`: none came).
    pub finals: Vec<(String, Option<Final>)>,
    pub refunds: Vec<RefundTally>,
    pub holds: Vec<HoldTally>,
}

impl PaymentSession {
    /// `run_id` prefixes every key, so that runs never share keys.
    pub fn new(
        targets: &Targets,
        tally: &Arc<ClientTally>,
        run_id: &str,
        duplicate_share: f64,
        deadline: Duration,
    ) -> anyhow::Result<Self> {
        Ok(Self {
            main: CarefulClient::new(targets, Arc::clone(tally))?,
            twin: CarefulClient::new(targets, Arc::clone(tally))?,
            run_id: run_id.to_owned(),
            duplicate_share,
            refund_share: 0.0,
            two_step_share: 0.0,
            deadline,
            finals: Vec::new(),
            refunds: Vec::new(),
            holds: Vec::new(),
        })
    }

    /// Also refunds this share of the succeeded payments.
    pub fn with_refunds(mut self, share: f64) -> Self {
        self.refund_share = share;
        self
    }

    /// Makes this share of the payments two-step.
    pub fn with_two_step(mut self, share: f64) -> Self {
        self.two_step_share = share;
        self
    }

    /// What the clients of an authorized payment do with it, and what they were told. A verb that
    /// finds the payment gone (404: the store lost its data) authorizes the key again (the bank
    /// answers with the same hold) and is sent again to the payment that names it now.
    async fn settle_hold(&mut self, key: &str, held: &Final, seq: u64, turn: usize) {
        let mut id = held.payment_id.clone();
        let (mut captured, mut canceled, mut diverged, mut forgotten) = (None, false, false, false);
        let mut detail = String::new();
        for _ in 0..3 {
            let answers = self.hold_fate(key, &id, held.amount, Fate::of(seq), turn).await;
            if let Some(VerbFinal::Done { amount_captured, .. }) = answers.capture {
                captured = captured.or(Some(amount_captured));
            }
            canceled |= matches!(answers.cancel, Some(VerbFinal::Done { .. }));
            if answers.diverged {
                detail.push_str(&answers.detail);
            }
            diverged |= answers.diverged;
            forgotten |= answers.forgotten;
            let gone = [&answers.capture, &answers.cancel]
                .into_iter()
                .any(|answer| matches!(answer, Some(VerbFinal::Refused { status: 404, .. })));
            if !gone {
                break;
            }
            match self.main.pay(key, held.amount, self.deadline, turn).await {
                Some(again) if again.status == "requires_capture" => id = again.payment_id,
                _ => break,
            }
        }
        diverged |= captured.is_some() && canceled;
        self.holds.push(HoldTally {
            key: key.to_owned(),
            payment_id: id.clone(),
            captured,
            canceled,
            diverged,
            forgotten,
            detail,
        });
        if let Some(amount) = captured
            && fastrand::f64() < self.refund_share
        {
            let paid = Final { status: "succeeded".into(), amount, payment_id: id.clone(), ..Final::default() };
            self.refund_all(key, &paid, turn).await;
        }
    }

    /// Two partial refunds at once (a third of the amount each, from both clients), then the rest,
    /// then the first key again, which must answer as it did.
    async fn refund_all(&mut self, key: &str, payment: &Final, turn: usize) {
        let third = Some(payment.amount / 3);
        let id = payment.payment_id.as_str();
        let [r1, r2, r3] = [1, 2, 3].map(|n| format!("{key}-r{n}"));
        let (first, second) = tokio::join!(
            self.main.refund(id, &r1, third, self.deadline, turn),
            self.twin.refund(id, &r2, third, self.deadline, turn + 1)
        );
        let rest = self.main.refund(id, &r3, None, self.deadline, turn).await;
        let again = self.twin.refund(id, &r1, third, self.deadline, turn).await;
        let diverged = again != first || [&first, &second, &rest].iter().any(|f| f.is_none());
        let mut refunded = 0;
        for answer in [first, second, rest].into_iter().flatten() {
            if let RefundFinal::Refunded { amount, .. } = answer {
                refunded += amount;
            }
        }
        self.refunds.push(RefundTally { payment_id: id.to_owned(), refunded, diverged });
    }

    /// `workers` sessions for one run.
    pub fn many(
        workers: usize,
        targets: &Targets,
        tally: &Arc<ClientTally>,
        duplicate_share: f64,
        deadline: Duration,
    ) -> anyhow::Result<Vec<Self>> {
        let run_id = uuid::Uuid::new_v4().simple().to_string();
        (0..workers.max(1)).map(|_| Self::new(targets, tally, &run_id, duplicate_share, deadline)).collect()
    }

    /// One round of a hold's fate on payment `id`, each verb key sent again by the other client.
    async fn hold_fate(&mut self, key: &str, id: &str, amount: i64, fate: Fate, turn: usize) -> HoldAnswers {
        let (capture_key, cancel_key) = (format!("{key}-capture"), format!("{key}-cancel"));
        let part = match fate {
            Fate::CaptureHalf => Some((amount / 2).max(1)),
            _ => None,
        };
        let deadline = self.deadline;
        let (capture, cancel) = match fate {
            Fate::CaptureAll | Fate::CaptureHalf => {
                (self.main.hold_verb(id, "capture", &capture_key, part, deadline, turn).await, None)
            }
            Fate::Cancel => (None, self.main.hold_verb(id, "cancel", &cancel_key, None, deadline, turn).await),
            Fate::Race => {
                tokio::join!(
                    self.main.hold_verb(id, "capture", &capture_key, None, deadline, turn),
                    self.twin.hold_verb(id, "cancel", &cancel_key, None, deadline, turn + 1)
                )
            }
            Fate::Expire => (None, None),
        };
        let capture_again = match &capture {
            Some(_) => self.twin.hold_verb(id, "capture", &capture_key, part, deadline, turn).await,
            None => None,
        };
        let cancel_again = match &cancel {
            Some(_) => self.twin.hold_verb(id, "cancel", &cancel_key, None, deadline, turn).await,
            None => None,
        };
        // A done verb's key must replay what it answered; a refused one was not stored, so its
        // retry may find the payment changed meanwhile (the gateway's own expiry failed, say).
        let replays = |first: &Option<VerbFinal>, again: &Option<VerbFinal>| {
            !matches!(first, Some(VerbFinal::Done { .. })) || first == again
        };
        let diverged = !replays(&capture, &capture_again) || !replays(&cancel, &cancel_again);
        let done = |first: Option<VerbFinal>, again: &Option<VerbFinal>| match first {
            Some(VerbFinal::Done { .. }) => first,
            _ => again.clone().filter(|a| matches!(a, VerbFinal::Done { .. })).or(first),
        };
        let forgotten = [&capture, &cancel, &capture_again, &cancel_again]
            .into_iter()
            .any(|answer| matches!(answer, Some(VerbFinal::Refused { status: 404, .. })));
        let detail = format!("capture {capture:?} then {capture_again:?}; cancel {cancel:?} then {cancel_again:?}");
        let (capture, cancel) = (done(capture, &capture_again), done(cancel, &cancel_again));
        HoldAnswers { capture, cancel, diverged, forgotten, detail }
    }
}

impl Session for PaymentSession {
    async fn call(&mut self, seq: u64) -> Outcome {
        let two_step = (seq.wrapping_mul(2_654_435_761) % 1_000) as f64 / 1_000.0 < self.two_step_share;
        let key = format!("{}-{}-{seq}", if two_step { "hold" } else { "load" }, self.run_id);
        let amount = amount_of(seq);
        let turn = seq as usize;
        let answer = if fastrand::f64() < self.duplicate_share {
            let (a, b) = tokio::join!(
                self.main.pay(&key, amount, self.deadline, turn),
                self.twin.pay(&key, amount, self.deadline, turn + 1)
            );
            // And once more, later: a replay.
            let again = self.main.pay(&key, amount, self.deadline, turn).await;
            let answers = [a, b, again];
            let settled: Vec<&Final> = answers.iter().flatten().collect();
            // The same payment; or, after a store lost its data, the same bank charge (or hold).
            let same = |x: &Final, y: &Final| {
                x.payment_id == y.payment_id
                    || (x.charge_id.is_some() && x.charge_id == y.charge_id)
                    || (x.authorization_id.is_some() && x.authorization_id == y.authorization_id)
            };
            if settled.windows(2).any(|w| !same(w[0], w[1])) {
                Some(Final { status: "DIVERGED".into(), amount, ..Final::default() })
            } else {
                answers.into_iter().flatten().next()
            }
        } else {
            self.main.pay(&key, amount, self.deadline, turn).await
        };
        if let Some(paid) = answer.as_ref().filter(|f| f.status == "succeeded")
            && fastrand::f64() < self.refund_share
        {
            let paid = paid.clone();
            self.refund_all(&key, &paid, turn).await;
        }
        if let Some(held) = answer.as_ref().filter(|f| f.status == "requires_capture") {
            let held = held.clone();
            self.settle_hold(&key, &held, seq, turn).await;
        }
        let outcome = match answer.as_ref().map(|f| f.status.as_str()) {
            Some("succeeded") => Outcome::Named("succeeded"),
            Some("requires_capture") => Outcome::Named("authorized"),
            Some("declined") => Outcome::Named("declined"),
            Some("failed") => Outcome::Named("failed"),
            Some("DIVERGED") => Outcome::Named("DIVERGED"),
            Some(_) => Outcome::Named("other"),
            None => Outcome::Named("gave up"),
        };
        self.finals.push((key, answer));
        outcome
    }
}
