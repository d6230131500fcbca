//! Logs through `tracing`: human-readable lines on stdout, JSON lines in daily-rolling files
//! (`LOG_DIR`, written by a non-blocking background writer), and a feed of every record for the
//! live event stream. Request spans carry `request_id`, `merchant`, `payment_id` and
//! `idempotency_key`, so every line of a request names them; card numbers are never logged.

use std::collections::BTreeMap;
use std::io::IsTerminal;
use std::path::Path;
use std::sync::{Arc, OnceLock};

use serde::Serialize;
use tokio::sync::broadcast;
use tracing::field::{Field, Visit};
use tracing::{Event, Subscriber};
use tracing_appender::non_blocking::WorkerGuard;
use tracing_subscriber::EnvFilter;
use tracing_subscriber::layer::{Context, SubscriberExt};
use tracing_subscriber::registry::LookupSpan;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{Layer, fmt};

use crate::config::LogFormat;

/// A log record as the event stream carries it.
#[derive(Debug, Clone, Serialize)]
pub struct LogRecord {
    pub at: chrono::DateTime<chrono::Utc>,
    pub level: String,
    pub target: String,
    pub message: String,
    /// The event's fields, then those of its spans (request id, merchant, payment id, ...).
    pub fields: BTreeMap<String, String>,
}

fn feed() -> &'static broadcast::Sender<Arc<LogRecord>> {
    static FEED: OnceLock<broadcast::Sender<Arc<LogRecord>>> = OnceLock::new();
    FEED.get_or_init(|| broadcast::channel(1_024).0)
}

/// Every log record from now on (nothing unless [`init`] installed the feed layer).
pub fn log_feed() -> broadcast::Receiver<Arc<LogRecord>> {
    feed().subscribe()
}

/// Keeps the file writer flushing; drop it last (at process exit) to flush what is buffered.
#[derive(Debug)]
pub struct LogGuard(#[allow(dead_code)] Option<WorkerGuard>);

pub fn init(filter: &str, format: LogFormat, log_dir: Option<&Path>) -> anyhow::Result<LogGuard> {
    let filter = EnvFilter::try_new(filter).map_err(|e| anyhow::anyhow!("invalid log filter `{filter}`: {e}"))?;
    let ansi = std::io::stdout().is_terminal();
    let stdout = match format {
        LogFormat::Text => fmt::layer().with_target(false).with_ansi(ansi).boxed(),
        LogFormat::Json => {
            fmt::layer().json().flatten_event(true).with_current_span(true).with_span_list(false).boxed()
        }
    };
    let (files, guard) = match log_dir {
        Some(dir) => {
            std::fs::create_dir_all(dir).map_err(|e| anyhow::anyhow!("cannot create {}: {e}", dir.display()))?;
            let appender = tracing_appender::rolling::daily(dir, "payment-api.log");
            let (writer, guard) = tracing_appender::non_blocking(appender);
            let layer = fmt::layer()
                .json()
                .flatten_event(true)
                .with_current_span(true)
                .with_span_list(false)
                .with_writer(writer)
                .with_ansi(false);
            (Some(layer), Some(guard))
        }
        None => (None, None),
    };
    tracing_subscriber::registry()
        .with(filter)
        .with(stdout)
        .with(files)
        .with(FeedLayer)
        .try_init()
        .map_err(|e| anyhow::anyhow!("could not install the log subscriber: {e}"))?;
    Ok(LogGuard(guard))
}

/// Publishes every enabled event to the log feed; sending never waits.
struct FeedLayer;

#[derive(Default)]
struct Fields(BTreeMap<String, String>, String);

impl Visit for Fields {
    fn record_str(&mut self, field: &Field, value: &str) {
        if field.name() == "message" {
            self.1 = value.to_owned();
        } else {
            self.0.insert(field.name().to_owned(), value.to_owned());
        }
    }

    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        if field.name() == "message" {
            self.1 = format!("{value:?}");
        } else {
            self.0.insert(field.name().to_owned(), format!("{value:?}"));
        }
    }
}

/// The span fields recorded so far, kept in the span's extensions.
struct SpanFields(BTreeMap<String, String>);

impl<S: Subscriber + for<'a> LookupSpan<'a>> Layer<S> for FeedLayer {
    fn on_new_span(&self, attrs: &tracing::span::Attributes<'_>, id: &tracing::span::Id, ctx: Context<'_, S>) {
        let mut fields = Fields::default();
        attrs.record(&mut fields);
        if let Some(span) = ctx.span(id) {
            span.extensions_mut().insert(SpanFields(fields.0));
        }
    }

    fn on_record(&self, id: &tracing::span::Id, values: &tracing::span::Record<'_>, ctx: Context<'_, S>) {
        let mut fields = Fields::default();
        values.record(&mut fields);
        if let Some(span) = ctx.span(id)
            && let Some(existing) = span.extensions_mut().get_mut::<SpanFields>()
        {
            existing.0.extend(fields.0);
        }
    }

    fn on_event(&self, event: &Event<'_>, ctx: Context<'_, S>) {
        let sender = feed();
        if sender.receiver_count() == 0 {
            return;
        }
        let mut fields = Fields::default();
        event.record(&mut fields);
        if let Some(scope) = ctx.event_scope(event) {
            for span in scope {
                if let Some(span_fields) = span.extensions().get::<SpanFields>() {
                    for (name, value) in &span_fields.0 {
                        fields.0.entry(name.clone()).or_insert_with(|| value.clone());
                    }
                }
            }
        }
        let metadata = event.metadata();
        let _ = sender.send(Arc::new(LogRecord {
            at: chrono::Utc::now(),
            level: metadata.level().to_string(),
            target: metadata.target().to_owned(),
            message: fields.1,
            fields: fields.0,
        }));
    }
}
