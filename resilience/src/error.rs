//! Configuration errors: every config struct is checked once, by the constructor that uses it.

/// Why a configuration was refused. The message names the field and the rule.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("invalid {field}: {rule}")]
pub struct ConfigError {
    pub field: &'static str,
    pub rule: &'static str,
}

impl ConfigError {
    pub(crate) fn new(field: &'static str, rule: &'static str) -> Self {
        Self { field, rule }
    }
}

/// Returns an error unless `ok`.
pub(crate) fn ensure(ok: bool, field: &'static str, rule: &'static str) -> Result<(), ConfigError> {
    if ok { Ok(()) } else { Err(ConfigError::new(field, rule)) }
}
