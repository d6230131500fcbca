//! The Elm Architecture's view: draws a [`Model`] into a frame, and nothing else. Everything it
//! shows comes from the model, so any state can be rendered in a test.

use chrono::{DateTime, Utc};
use ratatui::Frame;
use ratatui::layout::{Alignment, Constraint, Layout, Rect};
use ratatui::style::{Color, Modifier, Style, Stylize};
use ratatui::symbols::Marker;
use ratatui::text::{Line, Span, Text};
use ratatui::widgets::{Axis, Block, Cell, Chart, Clear, Dataset, GraphType, Paragraph, Row, Table, Wrap};

use crate::model::{BreakerState, ChaosConfig, KEYS, Link, Model, PaymentStatus, RatePoint};

pub fn view(model: &Model, frame: &mut Frame) {
    let [top, middle, bottom, status] =
        Layout::vertical([Constraint::Length(9), Constraint::Length(13), Constraint::Min(6), Constraint::Length(1)])
            .areas(frame.area());
    let [breaker, chaos, traffic] =
        Layout::horizontal([Constraint::Percentage(30), Constraint::Percentage(40), Constraint::Percentage(30)])
            .areas(top);
    let [chart, side] = Layout::horizontal([Constraint::Percentage(60), Constraint::Percentage(40)]).areas(middle);
    let [transactions, logs] =
        Layout::horizontal([Constraint::Percentage(50), Constraint::Percentage(50)]).areas(bottom);

    draw_breaker(model, frame, breaker);
    draw_chaos(model, frame, chaos);
    draw_traffic(model, frame, traffic);
    draw_rates(model, frame, chart);
    draw_latency_and_transitions(model, frame, side);
    draw_transactions(model, frame, transactions);
    draw_logs(model, frame, logs);
    draw_status(model, frame, status);
    if model.show_help {
        draw_help(frame);
    }
}

pub fn state_color(state: BreakerState) -> Color {
    match state {
        BreakerState::Closed => Color::Green,
        BreakerState::Open => Color::Red,
        BreakerState::HalfOpen => Color::Yellow,
        BreakerState::ForcedOpen | BreakerState::ForcedClosed => Color::Magenta,
    }
}

pub fn status_color(status: PaymentStatus) -> Color {
    match status {
        PaymentStatus::Succeeded => Color::Green,
        PaymentStatus::Declined => Color::Yellow,
        PaymentStatus::Processing => Color::Cyan,
        PaymentStatus::RequiresCapture => Color::LightMagenta,
        PaymentStatus::Failed => Color::Red,
        PaymentStatus::Canceled => Color::Gray,
        PaymentStatus::Refunded | PaymentStatus::PartiallyRefunded => Color::Blue,
    }
}

fn seconds_between(from: DateTime<Utc>, to: DateTime<Utc>) -> f64 {
    (to - from).num_milliseconds() as f64 / 1_000.0
}

/// Minor units as major ones: 123456 → "1234.56".
fn money(minor: i64) -> String {
    let sign = if minor < 0 { "-" } else { "" };
    format!("{sign}{}.{:02}", minor.unsigned_abs() / 100, minor.unsigned_abs() % 100)
}

fn percent(rate: f64) -> String {
    format!("{:.0}%", rate * 100.0)
}

/// With several banks: a tile per bank (its breaker, failure rate, routing share and approval
/// rate), the one whose chaos the keys tune marked.
fn draw_banks(model: &Model, frame: &mut Frame, area: Rect) {
    let mut lines = Vec::new();
    for (i, bank) in model.banks.iter().enumerate() {
        let state = bank.breaker.state;
        let color = state_color(state);
        let marker = if i == model.chaos_bank { "▶" } else { " " };
        lines.push(Line::from(vec![
            Span::raw(format!("{marker}{:<9} ", bank.name.chars().take(9).collect::<String>())),
            Span::styled(
                format!(" {:<11} ", state.as_str().to_uppercase().replace('_', " ")),
                Style::new().fg(Color::Black).bg(color).add_modifier(Modifier::BOLD),
            ),
        ]));
        lines.push(Line::from(format!(
            "  fail {} · share {} · ok {}",
            percent(bank.breaker.failure_rate),
            percent(bank.share),
            percent(bank.success_rate)
        )));
    }
    let block = Block::bordered().title(" Circuit breakers, per bank ");
    frame.render_widget(Paragraph::new(lines).block(block), area);
}

fn draw_breaker(model: &Model, frame: &mut Frame, area: Rect) {
    if model.banks.len() > 1 {
        return draw_banks(model, frame, area);
    }
    let block = Block::bordered().title(" Circuit breaker ");
    let Some(breaker) = &model.breaker else {
        frame.render_widget(Paragraph::new("waiting for the gateway…").block(block), area);
        return;
    };
    let color = state_color(breaker.state);
    let mut lines = vec![
        Line::from(Span::styled(
            format!("  {}  ", breaker.state.as_str().to_uppercase().replace('_', " ")),
            Style::new().fg(Color::Black).bg(color).add_modifier(Modifier::BOLD),
        ))
        .alignment(Alignment::Center),
    ];
    let since = model.breaker_since.map(|since| seconds_between(since, model.now).max(0.0));
    let mut timing = since.map(|s| format!("for {s:.0}s")).unwrap_or_default();
    if let Some(until) = breaker.open_until
        && breaker.state == BreakerState::Open
    {
        let left = seconds_between(model.now, until);
        timing.push_str(&if left > 0.0 { format!(" · half-open in {left:.1}s") } else { " · probe due".to_owned() });
    }
    lines.push(Line::from(timing).alignment(Alignment::Center));
    let threshold = |rate: f64, limit: f64| {
        let style = if limit > 0.0 && rate >= limit { Style::new().fg(Color::Red).bold() } else { Style::new() };
        let limit = if limit > 0.0 { percent(limit) } else { "?".into() };
        Span::styled(format!("{:>4} / {limit}", percent(rate)), style)
    };
    lines.push(Line::from(vec![
        Span::raw("failures  "),
        threshold(breaker.failure_rate, breaker.failure_rate_threshold),
    ]));
    lines.push(Line::from(vec![
        Span::raw("slow      "),
        threshold(breaker.slow_call_rate, breaker.slow_call_rate_threshold),
    ]));
    lines.push(Line::from(format!(
        "window {} · rejected {} · trips {}",
        breaker.calls_in_window, breaker.rejected, breaker.trips
    )));
    frame.render_widget(Paragraph::new(lines).block(block.border_style(Style::new().fg(color))), area);
}

fn draw_chaos(model: &Model, frame: &mut Frame, area: Rect) {
    let title = match model.banks.get(model.chaos_bank).filter(|_| model.banks.len() > 1) {
        Some(bank) => format!(" Bank chaos: {} (n: next bank) ", bank.name),
        None => " Bank chaos ".to_owned(),
    };
    let block = Block::bordered().title(title);
    let Some(chaos) = &model.chaos else {
        frame.render_widget(Paragraph::new("waiting for the bank…").block(block), area);
        return;
    };
    let mut lines = vec![
        Line::from(vec![Span::raw(format!(
            "failure {}  ambiguous {}  timeout {}",
            percent(chaos.failure_rate),
            percent(chaos.ambiguous_rate),
            percent(chaos.timeout_rate)
        ))]),
        Line::from(format!(
            "reset {}  throttle {}  slow {} (+{} ms)",
            percent(chaos.reset_rate),
            percent(chaos.throttle_rate),
            percent(chaos.slow_rate),
            chaos.slow_ms
        )),
        Line::from(vec![
            Span::raw(format!(
                "latency {}±{} ms  hang {} ms  ",
                chaos.latency.base_ms, chaos.latency.jitter_ms, chaos.hang_ms
            )),
            if chaos.outage {
                Span::styled(" OUTAGE ", Style::new().fg(Color::White).bg(Color::Red).bold())
            } else {
                Span::styled("no outage", Style::new().fg(Color::Green))
            },
        ]),
    ];
    if let Some(stats) = &model.chaos_stats {
        let injected = &stats.injected;
        lines.push(Line::from(format!("requests {}  injected:", stats.requests)));
        lines.push(Line::from(format!(
            " failure {}  ambiguous {}  timeout {}  reset {}",
            injected.failure, injected.ambiguous, injected.timeout, injected.reset
        )));
        lines.push(Line::from(format!(
            " throttle {}  outage {}  slow {}",
            injected.throttle, injected.outage, injected.slow
        )));
    }
    frame.render_widget(Paragraph::new(lines).block(block), area);
}

fn link(name: &str, link: &Link) -> Line<'static> {
    match link {
        Link::Up => Line::from(vec![
            Span::raw(format!("{name:<8}")),
            Span::styled("● connected", Style::new().fg(Color::Green)),
        ]),
        Link::Connecting => Line::from(vec![
            Span::raw(format!("{name:<8}")),
            Span::styled("◌ connecting…", Style::new().fg(Color::Yellow)),
        ]),
        Link::Down(reason) => Line::from(vec![
            Span::raw(format!("{name:<8}")),
            Span::styled(format!("✖ unreachable, retrying ({reason})"), Style::new().fg(Color::Red).bold()),
        ]),
    }
}

fn draw_traffic(model: &Model, frame: &mut Frame, area: Rect) {
    let traffic = &model.traffic;
    let state = if !model.traffic_available {
        Span::styled("off (no --api-key)", Style::new().fg(Color::DarkGray))
    } else if traffic.running {
        Span::styled("▶ running", Style::new().fg(Color::Green).bold())
    } else {
        Span::styled("■ stopped", Style::new().fg(Color::DarkGray))
    };
    let report = &model.traffic_report;
    let paused = if model.paused {
        Span::styled(" · display paused (p)", Style::new().fg(Color::Yellow).bold())
    } else {
        Span::raw("")
    };
    let holds = &model.holds;
    let lines = vec![
        link("gateway", &model.api),
        link("bank", &model.bank),
        Line::from(vec![Span::raw("traffic "), state, paused]),
        Line::from(format!(
            "{}/s · {} dup · {} two-step",
            traffic.rate,
            percent(traffic.duplicate_share),
            percent(traffic.two_step_share)
        )),
        Line::from(format!("sent {} · answered {} · lost {}", report.sent, report.answered, report.transport_errors)),
        Line::from(vec![
            Span::styled(
                format!("held {}", holds.open.len()),
                Style::new().fg(status_color(PaymentStatus::RequiresCapture)),
            ),
            Span::raw(format!(" ({}) · ", money(holds.held()))),
            Span::styled(
                format!("captured {}", holds.captured),
                Style::new().fg(status_color(PaymentStatus::Succeeded)),
            ),
            Span::raw(format!(" ({})", money(holds.captured_amount))),
        ]),
        Line::from(vec![
            Span::styled(
                format!("canceled {}", holds.canceled),
                Style::new().fg(status_color(PaymentStatus::Canceled)),
            ),
            Span::raw(format!(" ({} released)", money(holds.released_amount))),
        ]),
    ];
    frame.render_widget(Paragraph::new(lines).block(Block::bordered().title(" Links & traffic ")), area);
}

/// A chart line: its legend, its colour, and how to read it from a point.
type Series = (&'static str, Color, fn(&RatePoint) -> f64);

fn draw_rates(model: &Model, frame: &mut Frame, area: Rect) {
    let series: [Series; 6] = [
        ("succeeded", Color::Green, |p| p.succeeded),
        ("declined", Color::Yellow, |p| p.declined),
        ("processing", Color::Cyan, |p| p.processing),
        ("failed", Color::Red, |p| p.failed),
        ("breaker", Color::Magenta, |p| p.rejected),
        ("rate-limited", Color::Blue, |p| p.rate_limited),
    ];
    let len = model.history.len();
    let points: Vec<Vec<(f64, f64)>> = series
        .iter()
        .map(|(_, _, pick)| {
            model.history.iter().enumerate().map(|(i, p)| ((i as f64) - (len as f64), pick(p))).collect()
        })
        .collect();
    let top = points.iter().flatten().map(|(_, y)| *y).fold(1.0_f64, f64::max).ceil();
    let datasets: Vec<Dataset> = series
        .iter()
        .zip(&points)
        .map(|((name, color, _), data)| {
            Dataset::default()
                .name(*name)
                .marker(Marker::Braille)
                .graph_type(GraphType::Line)
                .style(Style::new().fg(*color))
                .data(data)
        })
        .collect();
    let chart = Chart::new(datasets)
        .block(Block::bordered().title(" Outcomes per second, last 3 minutes "))
        .x_axis(Axis::default().bounds([-(crate::model::HISTORY_POINTS as f64), 0.0]).labels(["-3m", "-90s", "now"]))
        .y_axis(Axis::default().bounds([0.0, top]).labels(["0".to_owned(), format!("{top:.0}/s")]));
    frame.render_widget(chart, area);
}

fn draw_latency_and_transitions(model: &Model, frame: &mut Frame, area: Rect) {
    let mut lines = Vec::new();
    match &model.stats {
        Some(stats) => {
            let l = &stats.latency_ms;
            lines.push(Line::from(format!("latency p50 {:.1} ms · p95 {:.1} ms · p99 {:.1} ms", l.p50, l.p95, l.p99)));
            lines.push(Line::from(format!(
                "in flight {} · retries {} · budget refusals {} · timeouts {}",
                stats.in_flight, stats.retries, stats.budget_refusals, stats.attempt_timeouts
            )));
            let totals: Vec<String> = stats.totals.iter().map(|(k, v)| format!("{k} {v}")).collect();
            lines.push(Line::from(totals.join(" · ")).fg(Color::Gray));
        }
        None => lines.push(Line::from("waiting for stats…")),
    }
    if !model.webhooks.is_empty() {
        lines.push(Line::from("webhooks:".bold()));
    }
    for endpoint in &model.webhooks {
        let breaker = match endpoint.breaker.as_str() {
            "closed" => Color::Green,
            "half_open" => Color::Yellow,
            _ => Color::Red,
        };
        let host = endpoint.url.split("://").nth(1).unwrap_or(&endpoint.url);
        let url: String = host.chars().take(20).collect();
        let last: String = endpoint.last_result.as_deref().unwrap_or("-").chars().take(8).collect();
        lines.push(Line::from(vec![
            Span::styled(
                format!("{:<7}", endpoint.breaker.replace("half_open", "half")),
                Style::new().fg(breaker).bold(),
            ),
            Span::raw(format!(" {url} ")),
            Span::styled(format!("✔{}", endpoint.delivered), Style::new().fg(Color::Green)),
            Span::styled(format!(" ↻{}", endpoint.retrying), Style::new().fg(Color::Yellow)),
            Span::styled(format!(" ✖{}", endpoint.failed), Style::new().fg(Color::Red)),
            Span::raw(format!(" {last}")),
        ]));
    }
    lines.push(Line::from("transitions:".bold()));
    for t in &model.transitions {
        lines.push(Line::from(vec![
            Span::raw(format!("{} ", t.at.format("%H:%M:%S"))),
            Span::styled(t.to.as_str(), Style::new().fg(state_color(t.to)).bold()),
            Span::raw(format!(" ← {}: {}", t.from, t.reason)),
        ]));
    }
    let paragraph = Paragraph::new(lines)
        .wrap(Wrap { trim: true })
        .block(Block::bordered().title(" Latency, retries, webhooks, breaker timeline "));
    frame.render_widget(paragraph, area);
}

fn draw_transactions(model: &Model, frame: &mut Frame, area: Rect) {
    let header = Row::new(["time", "payment", "amount", "status", "tries", "ms"]).style(Style::new().bold());
    let rows = model.transactions.iter().map(|t| {
        // The last eight characters: ids are UUID v7s, whose first ones are the (shared) time.
        let short_id = t.id.get(t.id.len().saturating_sub(8)..).unwrap_or(&t.id);
        Row::new([
            Cell::from(t.at.format("%H:%M:%S").to_string()),
            Cell::from(short_id.to_owned()),
            Cell::from(format!("{} {}", money(t.amount), t.currency)),
            Cell::from(t.status.as_str()),
            Cell::from(t.attempts.to_string()),
            Cell::from(t.latency_ms.map(|l| format!("{l:.0}")).unwrap_or_default()),
        ])
        .style(Style::new().fg(status_color(t.status)))
    });
    let widths = [
        Constraint::Length(8),
        Constraint::Length(8),
        Constraint::Length(13),
        Constraint::Length(18),
        Constraint::Length(5),
        Constraint::Length(6),
    ];
    let table = Table::new(rows, widths)
        .header(header)
        .block(Block::bordered().title(format!(" Recent transactions ({}) ", model.transactions.len())));
    frame.render_widget(table, area);
}

fn draw_logs(model: &Model, frame: &mut Frame, area: Rect) {
    let visible: Vec<_> = model.visible_logs().collect();
    let height = area.height.saturating_sub(2) as usize;
    let lines: Vec<Line> = visible[visible.len().saturating_sub(height)..]
        .iter()
        .map(|log| {
            let color = match log.level.as_str() {
                "ERROR" => Color::Red,
                "WARN" => Color::Yellow,
                "INFO" => Color::Green,
                _ => Color::DarkGray,
            };
            let fields: Vec<String> = ["status", "reason", "error", "payment_id", "request_id"]
                .iter()
                .filter_map(|k| log.fields.get(*k).map(|v| format!("{k}={v}")))
                .collect();
            Line::from(vec![
                Span::raw(format!("{} ", log.at.format("%H:%M:%S"))),
                Span::styled(format!("{:<5} ", log.level), Style::new().fg(color)),
                Span::raw(log.message.clone()),
                Span::styled(format!(" {}", fields.join(" ")), Style::new().fg(Color::DarkGray)),
            ])
        })
        .collect();
    let filter = match (&model.input, model.log_filter.is_empty()) {
        (Some(typing), _) => format!(" /{typing}▏"),
        (None, false) => format!(" filter \"{}\"", model.log_filter),
        (None, true) => String::new(),
    };
    let title = format!(" Log [{}]{filter} ", model.log_level.label());
    frame.render_widget(Paragraph::new(lines).block(Block::bordered().title(title)), area);
}

fn draw_status(model: &Model, frame: &mut Frame, area: Rect) {
    let mut spans = vec![Span::styled(
        " q quit · ? help · 1-7 presets · t traffic · b/c/a breaker ",
        Style::new().fg(Color::DarkGray),
    )];
    if model.missed_events > 0 {
        spans.push(Span::styled(format!(" missed {} events ", model.missed_events), Style::new().fg(Color::Yellow)));
    }
    if let Some(notice) = &model.notice {
        spans.push(Span::styled(format!(" {notice} "), Style::new().fg(Color::Cyan).bold()));
    }
    frame.render_widget(Paragraph::new(Line::from(spans)), area);
}

fn draw_help(frame: &mut Frame) {
    let area = frame.area();
    let width = 76.min(area.width);
    let height = (KEYS.len() as u16 + 4).min(area.height);
    let popup = Rect { x: area.x + (area.width - width) / 2, y: area.y + (area.height - height) / 2, width, height };
    let lines: Vec<Line> = KEYS
        .iter()
        .map(|(key, what)| Line::from(vec![Span::styled(format!("{key:>8}  "), Style::new().bold()), Span::raw(*what)]))
        .collect();
    frame.render_widget(Clear, popup);
    frame.render_widget(
        Paragraph::new(Text::from(lines))
            .block(Block::bordered().title(" Keys (Esc or ? closes) ").border_style(Style::new().fg(Color::Cyan))),
        popup,
    );
}

/// The chaos configuration as one short line (for notices).
pub fn chaos_summary(chaos: &ChaosConfig) -> String {
    format!("failure {} latency {} ms outage {}", percent(chaos.failure_rate), chaos.latency.base_ms, chaos.outage)
}
