//! The Elm Architecture's model and update: everything the dashboard shows is in [`Model`], every
//! input is a [`Msg`], and [`update`] is the only place the model changes. What must touch the
//! network or the disk comes back as [`Command`]s for the runtime to perform.

use std::collections::{BTreeMap, VecDeque};

use chrono::{DateTime, Utc};
use ratatui::crossterm::event::{KeyCode, KeyEvent, KeyModifiers};
use serde_json::{Value, json};

pub const HISTORY_POINTS: usize = 180;
pub const MAX_TRANSACTIONS: usize = 100;
pub const MAX_LOGS: usize = 500;
pub const MAX_TRANSITIONS: usize = 20;

/// The chaos presets, on the number keys in this order.
pub const PRESETS: [&str; 7] = ["healthy", "flaky", "degraded", "throttled", "brownout", "outage", "chaos"];

/// Every key and what it does, as the help screen lists them.
pub const KEYS: [(&str, &str); 20] = [
    ("1-7", "presets: healthy flaky degraded throttled brownout outage chaos"),
    ("f / F", "bank failure rate +5% / -5%"),
    ("l / L", "bank latency +50 ms / -50 ms"),
    ("o", "toggle bank outage"),
    ("n", "tune the next bank's chaos (with several banks)"),
    ("b", "force the breaker open (the selected bank's, with several)"),
    ("c", "force the breaker closed"),
    ("a", "breaker back to automatic"),
    ("t", "start / stop the traffic generator"),
    ("+ / -", "traffic rate up / down"),
    ("d / D", "duplicate keys +10% / -10%"),
    ("w / W", "two-step payments (authorize, then capture or cancel) +10% / -10%"),
    ("p", "pause / resume the display"),
    ("e", "export the transactions shown to CSV"),
    ("/", "filter the log by text (Enter applies, Esc clears)"),
    ("v", "cycle the log level filter"),
    ("?", "this help"),
    ("Esc", "close help / cancel input"),
    ("q", "quit"),
    ("Ctrl-C", "quit"),
];

pub use wire::{
    BankView, BreakerEvent as Transition, BreakerState, BreakerView as BreakerInfo, ChaosConfig, ChaosStats,
    EndpointHealth, LatencyPercentiles as Latency, LogRecord as LogEvent, PaymentEvent, PaymentStatus, Stats,
};

/// What arrives on the gateway's event stream.
#[derive(Debug, Clone, PartialEq)]
pub enum StreamItem {
    Stats(Box<Stats>),
    Breaker(Transition),
    Payment(PaymentEvent),
    Log(LogEvent),
    /// Webhook delivery health, per endpoint.
    Webhooks(Vec<EndpointHealth>),
    Lagged(u64),
}

/// Whether a service answers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Link {
    Connecting,
    Up,
    Down(String),
}

/// What the traffic generator reports once a second.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TrafficReport {
    pub sent: u64,
    pub answered: u64,
    pub transport_errors: u64,
}

/// Every input of the dashboard.
#[derive(Debug, Clone, PartialEq)]
pub enum Msg {
    Key(KeyEvent),
    Tick(DateTime<Utc>),
    Stream(StreamItem),
    BreakerPolled(BreakerInfo),
    /// The gateway's banks (`/admin/banks`).
    BanksPolled(Vec<BankView>),
    ChaosPolled {
        config: ChaosConfig,
        stats: ChaosStats,
    },
    Api(Link),
    Bank(Link),
    Traffic(TrafficReport),
    /// The outcome of a command, shown on the status line.
    Notice(String),
}

/// The traffic generator's settings.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct TrafficSettings {
    pub running: bool,
    /// Payments per second.
    pub rate: u32,
    /// Share of payments that reuse a recent key with the same body.
    pub duplicate_share: f64,
    /// Share of new payments that only authorize, then are captured (all or part), canceled, or
    /// left to expire.
    pub two_step_share: f64,
}

/// Two-step payments as the dashboard saw them: the holds open now, and what became of the others.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HoldTally {
    /// Authorizations not captured or canceled yet: their amounts, by payment.
    pub open: BTreeMap<String, i64>,
    pub captured: u64,
    /// What the captures took, in minor units.
    pub captured_amount: i64,
    pub canceled: u64,
    /// What the cancels released, in minor units.
    pub released_amount: i64,
}

impl HoldTally {
    /// Counts what a payment event says happened to an authorization it saw open.
    fn see(&mut self, event: &PaymentEvent) {
        if event.capture {
            return;
        }
        match event.status {
            PaymentStatus::RequiresCapture => {
                self.open.insert(event.payment_id.clone(), event.amount);
            }
            PaymentStatus::Succeeded | PaymentStatus::PartiallyRefunded | PaymentStatus::Refunded => {
                if self.open.remove(&event.payment_id).is_some() {
                    self.captured += 1;
                    self.captured_amount += event.amount_captured;
                }
            }
            PaymentStatus::Canceled => {
                if let Some(amount) = self.open.remove(&event.payment_id) {
                    self.canceled += 1;
                    self.released_amount += amount;
                }
            }
            PaymentStatus::Declined | PaymentStatus::Failed => {
                self.open.remove(&event.payment_id);
            }
            // A capture or cancel under way: still held.
            PaymentStatus::Processing => {}
        }
    }

    /// What the open holds hold, in minor units.
    pub fn held(&self) -> i64 {
        self.open.values().sum()
    }
}

/// What the model asks the runtime to do.
#[derive(Debug, Clone, PartialEq)]
pub enum Command {
    ApplyPreset(&'static str),
    PatchChaos(Value),
    /// Force a breaker: the selected bank's (by name) when the gateway has several, else the
    /// gateway's (the primary's).
    SetBreaker(&'static str, Option<String>),
    Traffic(TrafficSettings),
    /// Write this CSV text to a file.
    ExportCsv(String),
    /// Tune this bank's chaos from now on (its URL).
    SelectBank(String),
}

/// One row of the transactions table.
#[derive(Debug, Clone, PartialEq)]
pub struct Transaction {
    pub at: DateTime<Utc>,
    pub id: String,
    pub amount: i64,
    pub currency: String,
    pub status: PaymentStatus,
    pub attempts: u32,
    pub latency_ms: Option<f64>,
}

/// Per-second outcome rates at one moment, for the charts.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct RatePoint {
    pub succeeded: f64,
    pub declined: f64,
    pub processing: f64,
    pub failed: f64,
    pub rejected: f64,
    pub rate_limited: f64,
}

impl RatePoint {
    fn from_rates(rates: &BTreeMap<String, f64>) -> Self {
        let get = |key: &str| rates.get(key).copied().unwrap_or(0.0);
        Self {
            succeeded: get("succeeded"),
            declined: get("declined"),
            processing: get("processing"),
            failed: get("bank_unavailable") + get("overloaded") + get("store_unavailable"),
            rejected: get("circuit_open"),
            rate_limited: get("rate_limited"),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogLevel {
    All,
    Info,
    Warn,
    Error,
}

impl LogLevel {
    fn next(self) -> Self {
        match self {
            LogLevel::All => LogLevel::Info,
            LogLevel::Info => LogLevel::Warn,
            LogLevel::Warn => LogLevel::Error,
            LogLevel::Error => LogLevel::All,
        }
    }

    pub fn label(self) -> &'static str {
        match self {
            LogLevel::All => "all",
            LogLevel::Info => "info+",
            LogLevel::Warn => "warn+",
            LogLevel::Error => "error",
        }
    }

    pub fn admits(self, level: &str) -> bool {
        let rank = |l: &str| match l {
            "ERROR" => 4,
            "WARN" => 3,
            "INFO" => 2,
            _ => 1,
        };
        let floor = match self {
            LogLevel::All => 0,
            LogLevel::Info => 2,
            LogLevel::Warn => 3,
            LogLevel::Error => 4,
        };
        rank(level) >= floor
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct Model {
    pub now: DateTime<Utc>,
    pub api: Link,
    pub bank: Link,
    pub breaker: Option<BreakerInfo>,
    /// When the breaker entered its current state (as far as the dashboard saw).
    pub breaker_since: Option<DateTime<Utc>>,
    pub transitions: VecDeque<Transition>,
    pub stats: Option<Stats>,
    /// Oldest first, one point per `stats` event.
    pub history: VecDeque<RatePoint>,
    /// Newest first.
    pub transactions: VecDeque<Transaction>,
    /// Oldest first.
    pub logs: VecDeque<LogEvent>,
    pub log_level: LogLevel,
    pub log_filter: String,
    /// The filter being typed after `/`.
    pub input: Option<String>,
    pub chaos: Option<ChaosConfig>,
    pub chaos_stats: Option<ChaosStats>,
    pub traffic: TrafficSettings,
    pub traffic_report: TrafficReport,
    pub holds: HoldTally,
    /// Webhook delivery health per endpoint, as the gateway last reported it.
    pub webhooks: Vec<EndpointHealth>,
    /// The gateway's banks, in priority order, as last polled.
    pub banks: Vec<BankView>,
    /// The bank the chaos keys tune (an index into `banks`; the primary at first).
    pub chaos_bank: usize,
    /// Whether the traffic generator can run (it needs a merchant API key).
    pub traffic_available: bool,
    pub missed_events: u64,
    pub paused: bool,
    pub show_help: bool,
    pub notice: Option<String>,
    pub quit: bool,
}

impl Model {
    /// The bank the keys steer, by name, when the gateway has several.
    pub fn selected_bank(&self) -> Option<String> {
        (self.banks.len() > 1).then(|| self.banks.get(self.chaos_bank).map(|b| b.name.clone())).flatten()
    }

    pub fn new(now: DateTime<Utc>, traffic_available: bool) -> Self {
        Self {
            now,
            api: Link::Connecting,
            bank: Link::Connecting,
            breaker: None,
            breaker_since: None,
            transitions: VecDeque::new(),
            stats: None,
            history: VecDeque::new(),
            transactions: VecDeque::new(),
            logs: VecDeque::new(),
            log_level: LogLevel::All,
            log_filter: String::new(),
            input: None,
            chaos: None,
            chaos_stats: None,
            traffic: TrafficSettings { running: false, rate: 20, duplicate_share: 0.1, two_step_share: 0.3 },
            traffic_report: TrafficReport::default(),
            holds: HoldTally::default(),
            webhooks: Vec::new(),
            banks: Vec::new(),
            chaos_bank: 0,
            traffic_available,
            missed_events: 0,
            paused: false,
            show_help: false,
            notice: None,
            quit: false,
        }
    }

    /// The log lines that pass the level and text filters, oldest first.
    pub fn visible_logs(&self) -> impl Iterator<Item = &LogEvent> {
        let needle = self.log_filter.to_lowercase();
        self.logs.iter().filter(move |log| {
            self.log_level.admits(&log.level)
                && (needle.is_empty()
                    || log.message.to_lowercase().contains(&needle)
                    || log.fields.values().any(|v| v.to_lowercase().contains(&needle)))
        })
    }

    /// The transactions shown, as CSV (the audit export).
    pub fn transactions_csv(&self) -> String {
        let mut csv = String::from("time,payment_id,amount,currency,status,attempts,latency_ms\n");
        for t in &self.transactions {
            let latency = t.latency_ms.map(|l| format!("{l:.1}")).unwrap_or_default();
            csv.push_str(&format!(
                "{},{},{},{},{},{},{}\n",
                t.at.to_rfc3339(),
                t.id,
                t.amount,
                t.currency,
                t.status,
                t.attempts,
                latency
            ));
        }
        csv
    }

    fn set_breaker(&mut self, breaker: BreakerInfo) {
        if self.breaker.as_ref().map(|b| b.state) != Some(breaker.state) {
            self.breaker_since = Some(self.now);
        }
        // The stream's snapshot has no thresholds; keep the ones polled from /admin/breaker.
        let thresholds = self.breaker.as_ref().map(|b| (b.failure_rate_threshold, b.slow_call_rate_threshold));
        let mut breaker = breaker;
        if breaker.failure_rate_threshold == 0.0
            && let Some((failure, slow)) = thresholds
        {
            breaker.failure_rate_threshold = failure;
            breaker.slow_call_rate_threshold = slow;
        }
        self.breaker = Some(breaker);
    }

    /// The bank's chaos settings, or the healthy ones until the bank has been heard from.
    fn chaos(&self) -> ChaosConfig {
        self.chaos.clone().unwrap_or_default()
    }
}

/// Applies one input; returns what the runtime must do.
pub fn update(model: &mut Model, msg: Msg) -> Vec<Command> {
    match msg {
        Msg::Key(key) => on_key(model, key),
        Msg::Tick(now) => {
            model.now = now;
            Vec::new()
        }
        Msg::Api(link) => {
            model.api = link;
            Vec::new()
        }
        Msg::Bank(link) => {
            model.bank = link;
            Vec::new()
        }
        Msg::Notice(text) => {
            model.notice = Some(text);
            Vec::new()
        }
        Msg::Traffic(report) => {
            model.traffic_report = report;
            Vec::new()
        }
        // A paused display keeps its picture.
        _ if model.paused => Vec::new(),
        Msg::BreakerPolled(breaker) => {
            model.set_breaker(breaker);
            Vec::new()
        }
        Msg::BanksPolled(banks) => {
            model.banks = banks;
            if model.chaos_bank >= model.banks.len() {
                model.chaos_bank = 0;
            }
            Vec::new()
        }
        Msg::ChaosPolled { config, stats } => {
            model.chaos = Some(config);
            model.chaos_stats = Some(stats);
            Vec::new()
        }
        Msg::Stream(item) => {
            on_stream(model, item);
            Vec::new()
        }
    }
}

fn on_stream(model: &mut Model, item: StreamItem) {
    match item {
        StreamItem::Stats(stats) => {
            model.history.push_back(RatePoint::from_rates(&stats.rates));
            while model.history.len() > HISTORY_POINTS {
                model.history.pop_front();
            }
            if let Some(breaker) = stats.breaker.clone() {
                model.set_breaker(breaker);
            }
            model.stats = Some(*stats);
        }
        StreamItem::Breaker(transition) => {
            if let Some(breaker) = model.breaker.as_mut() {
                breaker.state = transition.to;
            }
            model.breaker_since = Some(transition.at);
            model.transitions.push_front(transition);
            model.transitions.truncate(MAX_TRANSITIONS);
        }
        StreamItem::Payment(event) => {
            model.holds.see(&event);
            let row = Transaction {
                at: event.at,
                id: event.payment_id,
                amount: event.amount,
                currency: event.currency,
                status: event.status,
                attempts: event.attempts,
                latency_ms: event.latency_ms,
            };
            match model.transactions.iter_mut().find(|t| t.id == row.id) {
                Some(existing) => {
                    *existing = Transaction { latency_ms: row.latency_ms.or(existing.latency_ms), ..row };
                }
                None => {
                    model.transactions.push_front(row);
                    model.transactions.truncate(MAX_TRANSACTIONS);
                }
            }
        }
        StreamItem::Log(log) => {
            model.logs.push_back(log);
            while model.logs.len() > MAX_LOGS {
                model.logs.pop_front();
            }
        }
        StreamItem::Webhooks(health) => model.webhooks = health,
        StreamItem::Lagged(missed) => model.missed_events += missed,
    }
}

fn on_key(model: &mut Model, key: KeyEvent) -> Vec<Command> {
    if key.modifiers.contains(KeyModifiers::CONTROL) && key.code == KeyCode::Char('c') {
        model.quit = true;
        return Vec::new();
    }
    if let Some(input) = model.input.as_mut() {
        match key.code {
            KeyCode::Enter => {
                model.log_filter = model.input.take().unwrap_or_default();
            }
            KeyCode::Esc => {
                model.input = None;
                model.log_filter.clear();
            }
            KeyCode::Backspace => {
                input.pop();
            }
            KeyCode::Char(c) => input.push(c),
            _ => {}
        }
        return Vec::new();
    }
    if model.show_help {
        if matches!(key.code, KeyCode::Esc | KeyCode::Char('?')) {
            model.show_help = false;
        } else if key.code == KeyCode::Char('q') {
            model.quit = true;
        }
        return Vec::new();
    }
    let mut traffic = model.traffic;
    let commands = match key.code {
        KeyCode::Char('q') => {
            model.quit = true;
            Vec::new()
        }
        KeyCode::Char('?') => {
            model.show_help = true;
            Vec::new()
        }
        KeyCode::Esc => {
            model.notice = None;
            Vec::new()
        }
        KeyCode::Char(digit @ '1'..='7') => {
            let preset = PRESETS[digit as usize - '1' as usize];
            vec![Command::ApplyPreset(preset)]
        }
        KeyCode::Char(c @ ('f' | 'F')) => {
            let chaos = model.chaos();
            let others = chaos.ambiguous_rate + chaos.timeout_rate + chaos.reset_rate + chaos.throttle_rate;
            let step = if c == 'f' { 0.05 } else { -0.05 };
            let rate = ((chaos.failure_rate + step).clamp(0.0, (1.0 - others).max(0.0)) * 100.0).round() / 100.0;
            vec![Command::PatchChaos(json!({ "failure_rate": rate }))]
        }
        KeyCode::Char(c @ ('l' | 'L')) => {
            let step = if c == 'l' { 50.0 } else { -50.0 };
            let base = (model.chaos().latency.base_ms as f64 + step).clamp(0.0, 60_000.0) as u64;
            vec![Command::PatchChaos(json!({ "latency": { "base_ms": base } }))]
        }
        KeyCode::Char('o') => {
            let outage = model.chaos().outage;
            vec![Command::PatchChaos(json!({ "outage": !outage }))]
        }
        KeyCode::Char('n') if model.banks.len() > 1 => {
            model.chaos_bank = (model.chaos_bank + 1) % model.banks.len();
            let bank = &model.banks[model.chaos_bank];
            model.notice = Some(format!("chaos keys now tune the bank `{}`", bank.name));
            model.chaos = None;
            vec![Command::SelectBank(bank.url.clone())]
        }
        KeyCode::Char('b') => vec![Command::SetBreaker("forced_open", model.selected_bank())],
        KeyCode::Char('c') => vec![Command::SetBreaker("forced_closed", model.selected_bank())],
        KeyCode::Char('a') => vec![Command::SetBreaker("auto", model.selected_bank())],
        KeyCode::Char('t') if model.traffic_available => {
            traffic.running = !traffic.running;
            vec![Command::Traffic(traffic)]
        }
        KeyCode::Char('t') => {
            model.notice = Some("traffic needs a merchant key: start with --api-key".into());
            Vec::new()
        }
        KeyCode::Char('+' | '=') => {
            traffic.rate = (traffic.rate * 2).clamp(1, 2_000);
            vec![Command::Traffic(traffic)]
        }
        KeyCode::Char('-') => {
            traffic.rate = (traffic.rate / 2).max(1);
            vec![Command::Traffic(traffic)]
        }
        KeyCode::Char(c @ ('d' | 'D')) => {
            let step = if c == 'd' { 0.1 } else { -0.1 };
            traffic.duplicate_share = ((traffic.duplicate_share + step).clamp(0.0, 0.9) * 10.0).round() / 10.0;
            vec![Command::Traffic(traffic)]
        }
        KeyCode::Char(c @ ('w' | 'W')) => {
            let step = if c == 'w' { 0.1 } else { -0.1 };
            traffic.two_step_share = ((traffic.two_step_share + step).clamp(0.0, 1.0) * 10.0).round() / 10.0;
            vec![Command::Traffic(traffic)]
        }
        KeyCode::Char('p') => {
            model.paused = !model.paused;
            Vec::new()
        }
        KeyCode::Char('e') => vec![Command::ExportCsv(model.transactions_csv())],
        KeyCode::Char('/') => {
            model.input = Some(String::new());
            Vec::new()
        }
        KeyCode::Char('v') => {
            model.log_level = model.log_level.next();
            Vec::new()
        }
        _ => Vec::new(),
    };
    model.traffic = traffic;
    commands
}

#[cfg(test)]
mod tests {
    use ratatui::crossterm::event::KeyEvent;

    use super::*;

    fn at(seconds: i64) -> DateTime<Utc> {
        DateTime::from_timestamp(1_795_000_000 + seconds, 0).unwrap_or_default()
    }

    /// Chaos settings from the JSON the bank would answer (missing fields take the defaults).
    fn config(json: Value) -> ChaosConfig {
        serde_json::from_value(json).unwrap_or_else(|e| panic!("{e}"))
    }

    fn model() -> Model {
        let mut model = Model::new(at(0), true);
        model.chaos = Some(config(json!({
            "failure_rate": 0.1, "ambiguous_rate": 0.2, "timeout_rate": 0.0, "reset_rate": 0.0,
            "throttle_rate": 0.0, "latency": {"base_ms": 100, "jitter_ms": 0}, "outage": false,
        })));
        model
    }

    fn press(model: &mut Model, code: KeyCode) -> Vec<Command> {
        update(model, Msg::Key(KeyEvent::new(code, KeyModifiers::NONE)))
    }

    fn char(model: &mut Model, c: char) -> Vec<Command> {
        press(model, KeyCode::Char(c))
    }

    #[test]
    fn number_keys_apply_the_presets_in_order() {
        let mut m = model();
        for (i, preset) in PRESETS.iter().enumerate() {
            let key = char::from_digit(i as u32 + 1, 10).unwrap_or('0');
            assert_eq!(char(&mut m, key), vec![Command::ApplyPreset(preset)]);
        }
        assert_eq!(char(&mut m, '8'), vec![]);
    }

    #[test]
    fn f_raises_and_lowers_the_failure_rate_within_what_the_other_rates_leave() {
        let mut m = model();
        assert_eq!(char(&mut m, 'f'), vec![Command::PatchChaos(json!({"failure_rate": 0.15}))]);
        assert_eq!(char(&mut m, 'F'), vec![Command::PatchChaos(json!({"failure_rate": 0.05}))]);
        m.chaos = Some(config(json!({"failure_rate": 0.78, "ambiguous_rate": 0.2})));
        assert_eq!(char(&mut m, 'f'), vec![Command::PatchChaos(json!({"failure_rate": 0.8}))], "capped at 1 - others");
        m.chaos = Some(config(json!({"failure_rate": 0.0})));
        assert_eq!(char(&mut m, 'F'), vec![Command::PatchChaos(json!({"failure_rate": 0.0}))]);
    }

    #[test]
    fn l_changes_the_latency_and_o_toggles_the_outage() {
        let mut m = model();
        assert_eq!(char(&mut m, 'l'), vec![Command::PatchChaos(json!({"latency": {"base_ms": 150}}))]);
        assert_eq!(char(&mut m, 'L'), vec![Command::PatchChaos(json!({"latency": {"base_ms": 50}}))]);
        assert_eq!(char(&mut m, 'o'), vec![Command::PatchChaos(json!({"outage": true}))]);
        m.chaos = Some(config(json!({"outage": true})));
        assert_eq!(char(&mut m, 'o'), vec![Command::PatchChaos(json!({"outage": false}))]);
    }

    #[test]
    fn b_c_a_set_the_breaker() {
        let mut m = model();
        assert_eq!(char(&mut m, 'b'), vec![Command::SetBreaker("forced_open", None)]);
        assert_eq!(char(&mut m, 'c'), vec![Command::SetBreaker("forced_closed", None)]);
        assert_eq!(char(&mut m, 'a'), vec![Command::SetBreaker("auto", None)]);
    }

    #[test]
    fn traffic_keys_start_stop_pace_and_duplicate() {
        let mut m = model();
        let on = TrafficSettings { running: true, rate: 20, duplicate_share: 0.1, two_step_share: 0.3 };
        assert_eq!(char(&mut m, 't'), vec![Command::Traffic(on)]);
        assert_eq!(char(&mut m, '+'), vec![Command::Traffic(TrafficSettings { rate: 40, ..on })]);
        assert_eq!(char(&mut m, '-'), vec![Command::Traffic(TrafficSettings { rate: 20, ..on })]);
        assert_eq!(char(&mut m, 'd'), vec![Command::Traffic(TrafficSettings { duplicate_share: 0.2, ..on })]);
        assert_eq!(char(&mut m, 'D'), vec![Command::Traffic(TrafficSettings { duplicate_share: 0.1, ..on })]);
        assert_eq!(char(&mut m, 'w'), vec![Command::Traffic(TrafficSettings { two_step_share: 0.4, ..on })]);
        assert_eq!(char(&mut m, 'W'), vec![Command::Traffic(TrafficSettings { two_step_share: 0.3, ..on })]);
        assert_eq!(char(&mut m, 't'), vec![Command::Traffic(TrafficSettings { running: false, ..on })]);
        for _ in 0..20 {
            char(&mut m, '-');
        }
        assert_eq!(m.traffic.rate, 1, "never below one per second");

        let mut without_key = Model::new(at(0), false);
        assert_eq!(char(&mut without_key, 't'), vec![]);
        assert!(without_key.notice.as_deref().is_some_and(|n| n.contains("--api-key")));
    }

    #[test]
    fn p_pauses_the_display_but_not_the_links() {
        let mut m = model();
        char(&mut m, 'p');
        assert!(m.paused);
        update(&mut m, Msg::Stream(StreamItem::Lagged(3)));
        update(&mut m, Msg::Api(Link::Up));
        assert_eq!((m.missed_events, m.api.clone()), (0, Link::Up));
        char(&mut m, 'p');
        update(&mut m, Msg::Stream(StreamItem::Lagged(3)));
        assert_eq!(m.missed_events, 3);
    }

    #[test]
    fn e_exports_the_transactions_as_csv() {
        let mut m = model();
        update(
            &mut m,
            Msg::Stream(StreamItem::Payment(PaymentEvent {
                payment_id: "pay_1".into(),
                merchant_id: "shop".into(),
                status: PaymentStatus::Succeeded,
                decline_code: None,
                failure_reason: None,
                capture: true,
                amount_captured: 0,
                amount: 1999,
                currency: "USD".into(),
                attempts: 2,
                latency_ms: Some(12.34),
                at: at(5),
                event_id: None,
                event_type: None,
            })),
        );
        let commands = char(&mut m, 'e');
        let [Command::ExportCsv(csv)] = commands.as_slice() else { panic!("{commands:?}") };
        let lines: Vec<&str> = csv.lines().collect();
        assert_eq!(lines[0], "time,payment_id,amount,currency,status,attempts,latency_ms");
        assert_eq!(lines[1], format!("{},pay_1,1999,USD,succeeded,2,12.3", at(5).to_rfc3339()));
    }

    #[test]
    fn slash_types_a_log_filter_and_v_cycles_the_level() {
        let mut m = model();
        for (level, message) in [("INFO", "payment ok"), ("WARN", "breaker opened"), ("ERROR", "store down")] {
            update(
                &mut m,
                Msg::Stream(StreamItem::Log(LogEvent {
                    at: at(1),
                    target: "payment_api".into(),
                    level: level.into(),
                    message: message.into(),
                    fields: BTreeMap::new(),
                })),
            );
        }
        char(&mut m, '/');
        for c in "BREAK".chars() {
            char(&mut m, c);
        }
        press(&mut m, KeyCode::Backspace);
        assert_eq!(m.input.as_deref(), Some("BREA"));
        assert_eq!(char(&mut m, 'q'), vec![], "typing q does not quit");
        assert!(!m.quit);
        press(&mut m, KeyCode::Backspace);
        press(&mut m, KeyCode::Enter);
        assert_eq!(m.log_filter, "BREA");
        assert_eq!(m.visible_logs().map(|l| l.message.as_str()).collect::<Vec<_>>(), ["breaker opened"]);
        char(&mut m, '/');
        press(&mut m, KeyCode::Esc);
        assert_eq!(m.log_filter, "", "Esc clears the filter");

        char(&mut m, 'v');
        char(&mut m, 'v');
        assert_eq!(m.log_level, LogLevel::Warn);
        assert_eq!(m.visible_logs().count(), 2);
        char(&mut m, 'v');
        assert_eq!(m.visible_logs().count(), 1);
        char(&mut m, 'v');
        assert_eq!(m.log_level, LogLevel::All);
    }

    #[test]
    fn question_mark_shows_help_and_q_or_ctrl_c_quit() {
        let mut m = model();
        char(&mut m, '?');
        assert!(m.show_help);
        assert_eq!(char(&mut m, '1'), vec![], "keys are inert under the help");
        press(&mut m, KeyCode::Esc);
        assert!(!m.show_help);
        char(&mut m, 'q');
        assert!(m.quit);
        let mut m = model();
        update(&mut m, Msg::Key(KeyEvent::new(KeyCode::Char('c'), KeyModifiers::CONTROL)));
        assert!(m.quit);
    }

    #[test]
    fn stream_events_update_breaker_history_transactions_and_logs() {
        let mut m = model();
        let stats = Stats {
            rates: BTreeMap::from([("succeeded".to_owned(), 5.0), ("circuit_open".to_owned(), 2.0)]),
            breaker: Some(BreakerInfo { state: BreakerState::Closed, ..BreakerInfo::default() }),
            ..Stats::default()
        };
        update(&mut m, Msg::Stream(StreamItem::Stats(Box::new(stats))));
        assert_eq!(m.history.back().map(|p| (p.succeeded, p.rejected)), Some((5.0, 2.0)));
        update(&mut m, Msg::Tick(at(10)));
        let transition = Transition {
            from: BreakerState::Closed,
            to: BreakerState::Open,
            reason: "failure rate".into(),
            at: at(10),
            open_for_ms: Some(5_000),
            bank: None,
        };
        update(&mut m, Msg::Stream(StreamItem::Breaker(transition)));
        assert_eq!(m.breaker.as_ref().map(|b| b.state.as_str()), Some("open"));
        assert_eq!(m.breaker_since, Some(at(10)));
        for _ in 0..(HISTORY_POINTS + 5) {
            update(&mut m, Msg::Stream(StreamItem::Stats(Box::default())));
        }
        assert_eq!(m.history.len(), HISTORY_POINTS);
        let payment = |status: &str, latency| PaymentEvent {
            payment_id: "pay_x".into(),
            merchant_id: "shop".into(),
            status: PaymentStatus::parse(status).unwrap_or(PaymentStatus::Failed),
            decline_code: None,
            failure_reason: None,
            capture: true,
            amount_captured: 0,
            amount: 1,
            currency: "USD".into(),
            attempts: 1,
            latency_ms: latency,
            at: at(11),
            event_id: None,
            event_type: None,
        };
        update(&mut m, Msg::Stream(StreamItem::Payment(payment("processing", None))));
        update(&mut m, Msg::Stream(StreamItem::Payment(payment("succeeded", Some(9.0)))));
        assert_eq!(m.transactions.len(), 1, "a payment's state changes update its row");
        assert_eq!(m.transactions[0].status, "succeeded");
        assert_eq!(m.holds, HoldTally::default(), "a one-step payment is no hold");
    }

    #[test]
    fn authorizations_are_tallied_open_captured_or_canceled_once() {
        let mut m = model();
        let event = |id: &str, status: PaymentStatus, amount_captured| PaymentEvent {
            payment_id: id.into(),
            merchant_id: "shop".into(),
            status,
            decline_code: None,
            failure_reason: None,
            capture: false,
            amount_captured,
            amount: 1_000,
            currency: "USD".into(),
            attempts: 1,
            latency_ms: None,
            at: at(1),
            event_id: None,
            event_type: None,
        };
        for id in ["a", "b", "c", "d"] {
            update(&mut m, Msg::Stream(StreamItem::Payment(event(id, PaymentStatus::RequiresCapture, 0))));
        }
        assert_eq!((m.holds.open.len(), m.holds.held()), (4, 4_000));
        for (id, status, captured) in [
            ("a", PaymentStatus::Processing, 0),
            ("a", PaymentStatus::Succeeded, 600),
            ("a", PaymentStatus::PartiallyRefunded, 600),
            ("b", PaymentStatus::Canceled, 0),
            ("b", PaymentStatus::Canceled, 0),
        ] {
            update(&mut m, Msg::Stream(StreamItem::Payment(event(id, status, captured))));
        }
        let holds = &m.holds;
        assert_eq!((holds.captured, holds.captured_amount, holds.canceled, holds.released_amount), (1, 600, 1, 1_000));
        assert_eq!((holds.open.len(), holds.held()), (2, 2_000), "counted once each");
    }
}
