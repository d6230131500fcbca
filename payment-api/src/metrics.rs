//! Prometheus metrics, kept per gateway instance (not in a process-global recorder), so several
//! gateways in one test process never mix their numbers. `GET /metrics` renders them as text.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::Duration;

use std::sync::Arc;

use http_conventions::problem::ErrorCode;
use resilience::{BreakerSnapshot, BreakerState, GuardStats};

/// What a payment request came to, as `gateway_payments_total{outcome}` counts it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PaymentOutcome {
    Succeeded,
    Processing,
    Declined,
    /// An answer given again for its key.
    Replayed,
    /// Refused, with this code.
    Refused(ErrorCode),
}

impl PaymentOutcome {
    /// The outcome of a payment answered with `status` (`replayed` for an answer given again).
    pub fn answered(status: u16, replayed: bool) -> Self {
        match (replayed, status) {
            (true, _) => PaymentOutcome::Replayed,
            (false, 201) => PaymentOutcome::Succeeded,
            (false, 202) => PaymentOutcome::Processing,
            (false, _) => PaymentOutcome::Declined,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            PaymentOutcome::Succeeded => "succeeded",
            PaymentOutcome::Processing => "processing",
            PaymentOutcome::Declined => "declined",
            PaymentOutcome::Replayed => "replayed",
            PaymentOutcome::Refused(code) => code.as_str(),
        }
    }

    /// A key conflict (in use, or reused with another request).
    pub fn is_conflict(self) -> bool {
        matches!(self, PaymentOutcome::Refused(ErrorCode::IdempotencyKeyInUse | ErrorCode::IdempotencyKeyReused))
    }

    /// Answered after the bank was (or could have been) asked: what the latency percentiles cover.
    pub fn took_the_bank_path(self) -> bool {
        matches!(
            self,
            PaymentOutcome::Succeeded
                | PaymentOutcome::Processing
                | PaymentOutcome::Declined
                | PaymentOutcome::Refused(
                    ErrorCode::BankUnavailable
                        | ErrorCode::CircuitOpen
                        | ErrorCode::Overloaded
                        | ErrorCode::OutcomeUnknown
                )
        )
    }
}

/// An open `/admin/stream`, counted until dropped.
#[derive(Debug)]
pub struct Subscriber(Arc<Metrics>);

impl Subscriber {
    pub fn new(metrics: Arc<Metrics>) -> Self {
        metrics.stream_subscribers.fetch_add(1, Relaxed);
        Self(metrics)
    }
}

impl Drop for Subscriber {
    fn drop(&mut self) {
        self.0.stream_subscribers.fetch_sub(1, Relaxed);
    }
}

/// Latency buckets in seconds, from 1 ms to 10 s.
const BUCKETS: [f64; 14] = [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 7.5, 10.0];

/// A cumulative histogram.
#[derive(Debug, Default)]
pub struct Histogram {
    counts: [AtomicU64; BUCKETS.len()],
    count: AtomicU64,
    sum_micros: AtomicU64,
}

impl Histogram {
    pub fn observe(&self, took: Duration) {
        let seconds = took.as_secs_f64();
        for (bound, count) in BUCKETS.iter().zip(&self.counts) {
            if seconds <= *bound {
                count.fetch_add(1, Relaxed);
            }
        }
        self.count.fetch_add(1, Relaxed);
        self.sum_micros.fetch_add(took.as_micros() as u64, Relaxed);
    }

    fn render(&self, out: &mut String, name: &str, labels: &str) {
        let sep = if labels.is_empty() { "" } else { "," };
        for (bound, count) in BUCKETS.iter().zip(&self.counts) {
            let _ = writeln!(out, "{name}_bucket{{{labels}{sep}le=\"{bound}\"}} {}", count.load(Relaxed));
        }
        let count = self.count.load(Relaxed);
        let _ = writeln!(out, "{name}_bucket{{{labels}{sep}le=\"+Inf\"}} {count}");
        let braced = if labels.is_empty() { String::new() } else { format!("{{{labels}}}") };
        let _ = writeln!(out, "{name}_sum{braced} {}", self.sum_micros.load(Relaxed) as f64 / 1e6);
        let _ = writeln!(out, "{name}_count{braced} {count}");
    }
}

/// Counters keyed by a label set, created on first use.
#[derive(Debug, Default)]
pub struct LabeledCounter {
    values: Mutex<BTreeMap<String, u64>>,
}

impl LabeledCounter {
    /// `labels` is the rendered label set, as in `route="/v1/payments",status="201"`.
    pub fn inc(&self, labels: String) {
        *self.values.lock().unwrap_or_else(|p| p.into_inner()).entry(labels).or_default() += 1;
    }

    fn render(&self, out: &mut String, name: &str) {
        for (labels, value) in self.values.lock().unwrap_or_else(|p| p.into_inner()).iter() {
            let _ = writeln!(out, "{name}{{{labels}}} {value}");
        }
    }
}

/// Escapes a label value.
pub fn label(value: &str) -> String {
    value.replace('\\', "\\\\").replace('"', "\\\"").replace('\n', "\\n")
}

/// One bank's live numbers, for the exposition.
#[derive(Debug, Clone)]
pub struct BankNumbers {
    pub name: String,
    pub breaker: BreakerSnapshot,
    pub success_rate: f64,
    pub routed: u64,
}

#[derive(Debug, Default)]
pub struct Metrics {
    pub http_requests: LabeledCounter,
    pub http_duration: Mutex<BTreeMap<String, Histogram>>,
    /// Payment requests by outcome.
    pub payments: Mutex<BTreeMap<String, u64>>,
    pub bank_calls: LabeledCounter,
    pub bank_call_duration: Histogram,
    pub breaker_transitions: LabeledCounter,
    pub idempotent_replays: AtomicU64,
    pub idempotency_conflicts: LabeledCounter,
    /// Charges moved on to the next bank, by from and to.
    pub failovers: LabeledCounter,
    /// Webhook delivery attempts by what came of the delivery: delivered, retrying, failed.
    pub webhook_attempts: LabeledCounter,
    pub rate_limited: LabeledCounter,
    pub reconciled: LabeledCounter,
    pub reconciler_backlog: AtomicU64,
    /// Outcomes waiting for the store to come back (see `backlog`).
    pub unwritten_outcomes: AtomicU64,
    pub store_duration: Mutex<BTreeMap<String, Histogram>>,
    pub stream_subscribers: AtomicU64,
}

fn observe_in(map: &Mutex<BTreeMap<String, Histogram>>, key: &str, took: Duration) {
    let mut map = map.lock().unwrap_or_else(|p| p.into_inner());
    if let Some(histogram) = map.get(key) {
        histogram.observe(took);
    } else {
        let histogram = Histogram::default();
        histogram.observe(took);
        map.insert(key.to_owned(), histogram);
    }
}

impl Metrics {
    pub fn observe_request(&self, route: &str, method: &str, status: u16, took: Duration) {
        self.http_requests.inc(format!("route=\"{}\",method=\"{method}\",status=\"{status}\"", label(route)));
        observe_in(&self.http_duration, route, took);
    }

    pub fn observe_store(&self, operation: &str, took: Duration) {
        observe_in(&self.store_duration, operation, took);
    }

    pub fn payment(&self, outcome: &str) {
        *self.payments.lock().unwrap_or_else(|p| p.into_inner()).entry(outcome.to_owned()).or_default() += 1;
    }

    /// Payment requests since start, by outcome.
    pub fn payment_totals(&self) -> BTreeMap<String, u64> {
        self.payments.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    pub fn bank_call(&self, bank: &str, result: &str, took: Duration) {
        self.bank_calls.inc(format!("bank=\"{}\",result=\"{result}\"", label(bank)));
        self.bank_call_duration.observe(took);
    }

    /// The Prometheus text exposition, with the guards' live numbers (summed over the banks), the
    /// primary bank's breaker, and each bank's own.
    pub fn render(
        &self,
        guard: &GuardStats,
        breaker: &BreakerSnapshot,
        banks: &[BankNumbers],
        in_flight: u64,
    ) -> String {
        let mut out = String::with_capacity(8 * 1024);
        let section = |out: &mut String, name: &str, kind: &str, help: &str| {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
        };
        section(&mut out, "gateway_http_requests_total", "counter", "HTTP requests by route, method and status.");
        self.http_requests.render(&mut out, "gateway_http_requests_total");
        section(&mut out, "gateway_http_request_duration_seconds", "histogram", "HTTP request latency by route.");
        for (route, histogram) in self.http_duration.lock().unwrap_or_else(|p| p.into_inner()).iter() {
            histogram.render(&mut out, "gateway_http_request_duration_seconds", &format!("route=\"{}\"", label(route)));
        }
        section(&mut out, "gateway_payments_total", "counter", "Payment requests by outcome.");
        for (outcome, count) in self.payment_totals() {
            let _ = writeln!(out, "gateway_payments_total{{outcome=\"{}\"}} {count}", label(&outcome));
        }
        section(&mut out, "gateway_payments_in_flight", "gauge", "Payments being processed now.");
        let _ = writeln!(out, "gateway_payments_in_flight {in_flight}");
        section(&mut out, "gateway_bank_calls_total", "counter", "Bank call attempts by result.");
        self.bank_calls.render(&mut out, "gateway_bank_calls_total");
        section(&mut out, "gateway_bank_call_duration_seconds", "histogram", "Bank call attempt latency.");
        self.bank_call_duration.render(&mut out, "gateway_bank_call_duration_seconds", "");
        let counters = [
            ("gateway_bank_retries_total", "Retries of bank calls.", guard.retries),
            ("gateway_bank_attempt_timeouts_total", "Bank call attempts that timed out.", guard.attempt_timeouts),
            ("gateway_retry_budget_refusals_total", "Retries refused by the retry budget.", guard.budget_refusals),
            ("gateway_breaker_rejections_total", "Calls refused by the circuit breaker.", guard.rejected_by_breaker),
            ("gateway_bulkhead_rejections_total", "Calls refused by the concurrency limit.", guard.rejected_overloaded),
            (
                "gateway_idempotent_replays_total",
                "Answers replayed under an idempotency key.",
                self.idempotent_replays.load(Relaxed),
            ),
        ];
        for (name, help, value) in counters {
            section(&mut out, name, "counter", help);
            let _ = writeln!(out, "{name} {value}");
        }
        section(&mut out, "gateway_breaker_state", "gauge", "1 for the circuit breaker's current state.");
        for state in [
            BreakerState::Closed,
            BreakerState::Open,
            BreakerState::HalfOpen,
            BreakerState::ForcedOpen,
            BreakerState::ForcedClosed,
        ] {
            let _ = writeln!(out, "gateway_breaker_state{{state=\"{state}\"}} {}", u8::from(breaker.state == state));
        }
        section(&mut out, "gateway_breaker_failure_rate", "gauge", "Failure rate over the breaker's window.");
        let _ = writeln!(out, "gateway_breaker_failure_rate {}", breaker.failure_rate);
        section(&mut out, "gateway_bank_breaker_state", "gauge", "1 for each bank's circuit breaker's current state.");
        for bank in banks {
            let _ = writeln!(
                out,
                "gateway_bank_breaker_state{{bank=\"{}\",state=\"{}\"}} 1",
                label(&bank.name),
                bank.breaker.state
            );
        }
        section(&mut out, "gateway_bank_success_rate", "gauge", "Each bank's recent authorization approval rate.");
        for bank in banks {
            let _ = writeln!(out, "gateway_bank_success_rate{{bank=\"{}\"}} {}", label(&bank.name), bank.success_rate);
        }
        section(&mut out, "gateway_bank_routed_total", "counter", "Payments routed to each bank first.");
        for bank in banks {
            let _ = writeln!(out, "gateway_bank_routed_total{{bank=\"{}\"}} {}", label(&bank.name), bank.routed);
        }
        section(
            &mut out,
            "gateway_breaker_transitions_total",
            "counter",
            "Circuit breaker transitions by target state.",
        );
        self.breaker_transitions.render(&mut out, "gateway_breaker_transitions_total");
        section(
            &mut out,
            "gateway_bank_failovers_total",
            "counter",
            "Charges moved on to the next bank (the one before surely did nothing, or soft-declined).",
        );
        self.failovers.render(&mut out, "gateway_bank_failovers_total");
        section(
            &mut out,
            "gateway_webhook_attempts_total",
            "counter",
            "Webhook delivery attempts, by what came of the delivery (delivered, retrying, failed).",
        );
        self.webhook_attempts.render(&mut out, "gateway_webhook_attempts_total");
        section(
            &mut out,
            "gateway_idempotency_conflicts_total",
            "counter",
            "Requests refused over their key (in_use, reused).",
        );
        self.idempotency_conflicts.render(&mut out, "gateway_idempotency_conflicts_total");
        section(&mut out, "gateway_rate_limited_total", "counter", "Requests refused by the per-merchant rate limit.");
        self.rate_limited.render(&mut out, "gateway_rate_limited_total");
        section(&mut out, "gateway_reconciled_total", "counter", "Payments the reconciler settled, by result.");
        self.reconciled.render(&mut out, "gateway_reconciled_total");
        section(
            &mut out,
            "gateway_reconciler_backlog",
            "gauge",
            "Processing payments due at the last reconciler pass.",
        );
        let _ = writeln!(out, "gateway_reconciler_backlog {}", self.reconciler_backlog.load(Relaxed));
        section(
            &mut out,
            "gateway_unwritten_outcomes",
            "gauge",
            "Bank outcomes kept in memory until the store answers again.",
        );
        let _ = writeln!(out, "gateway_unwritten_outcomes {}", self.unwritten_outcomes.load(Relaxed));
        section(&mut out, "gateway_store_operation_duration_seconds", "histogram", "Store latency by operation.");
        for (operation, histogram) in self.store_duration.lock().unwrap_or_else(|p| p.into_inner()).iter() {
            histogram.render(
                &mut out,
                "gateway_store_operation_duration_seconds",
                &format!("operation=\"{}\"", label(operation)),
            );
        }
        section(&mut out, "gateway_stream_subscribers", "gauge", "Open /admin/stream connections.");
        let _ = writeln!(out, "gateway_stream_subscribers {}", self.stream_subscribers.load(Relaxed));
        out
    }
}
