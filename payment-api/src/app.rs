//! What every handler reaches: the gateway, and the HTTP edge's own parts (API keys, rate
//! limits, metrics), built once from the configuration.

use std::sync::Arc;

use anyhow::Context;

use crate::config::Config;
use crate::gateway::Gateway;
use crate::{auth, events, metrics, ratelimit, store};

/// What every handler can reach.
#[derive(Debug)]
pub struct App {
    pub gateway: Arc<Gateway>,
    /// The HTTP edge's own numbers (requests by route, rate limiting); the gateway shares them.
    pub metrics: Arc<metrics::Metrics>,
    pub keys: auth::Keys,
    pub admin_key: Option<String>,
    pub rate_limiter: ratelimit::RateLimiter,
    pub max_body_bytes: usize,
    /// Turns true when shutdown begins, so endless responses (the event stream) end.
    pub shutting_down: tokio::sync::watch::Receiver<bool>,
}

impl App {
    pub async fn new(config: &Config, shutting_down: tokio::sync::watch::Receiver<bool>) -> anyhow::Result<Self> {
        config.validate().map_err(anyhow::Error::msg)?;
        let store = store::Store::open_with(&config.store_url, config.event_retention())
            .await
            .with_context(|| format!("cannot open the store `{}`", config.store_url))?;
        let events = Arc::new(events::Events::new(config.stream_buffer));
        let metrics = Arc::new(metrics::Metrics::default());
        Ok(Self {
            gateway: Arc::new(Gateway::new(config, store, events, Arc::clone(&metrics))?),
            metrics,
            keys: auth::Keys::new(config.api_keys.clone()),
            admin_key: config.admin_key.clone(),
            rate_limiter: ratelimit::RateLimiter::new(config.rate_limit_per_sec, config.rate_limit_burst),
            max_body_bytes: config.max_body_bytes,
            shutting_down,
        })
    }
}
