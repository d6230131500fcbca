//! Scenario timelines: a list of chaos configurations, each applied at an offset from the start,
//! optionally repeating, so a demo or a soak can take the bank down and bring it back unattended.

use std::time::Duration;

use serde::Serialize;
use serde_json::Value;

use super::config::{ChaosConfig, preset};
use http_conventions::problem::{FieldError, Problem};

pub const MAX_STEPS: usize = 100;
pub const MAX_OFFSET_S: f64 = 86_400.0;
/// The shortest period a timeline may repeat with: shorter ones would only spin the timeline.
pub const MIN_REPEAT_S: f64 = 1.0;

#[derive(Debug, Clone)]
pub struct Scenario {
    pub steps: Vec<ScenarioStep>,
    /// When set, the timeline starts over this long after its start.
    pub repeat_after: Option<Duration>,
}

#[derive(Debug, Clone)]
pub struct ScenarioStep {
    pub after: Duration,
    pub config: ChaosConfig,
    /// The step as the client sent it, shown back by `GET /chaos/scenario`.
    pub source: Value,
}

/// What `GET /chaos/scenario` shows.
#[derive(Debug, Clone, Serialize)]
pub struct ScenarioStatus {
    pub active: bool,
    pub started_at: Option<chrono::DateTime<chrono::Utc>>,
    /// Index of the step in effect, if one has been applied.
    pub current_step: Option<usize>,
    /// How many times the timeline has started over.
    pub cycle: u64,
    pub repeat_after_s: Option<f64>,
    pub steps: Vec<Value>,
}

impl Scenario {
    /// Parses either a bare array of steps or `{"steps": [...], "repeat_after_s": n}`; each step is
    /// `{"after_s": n, "preset": "name"}` or `{"after_s": n, "config": {...}}`.
    pub fn from_json(body: Value) -> Result<Self, Problem> {
        let (steps, repeat_after_s) = match body {
            Value::Array(steps) => (steps, None),
            Value::Object(mut object) => {
                let steps = match object.remove("steps") {
                    Some(Value::Array(steps)) => steps,
                    _ => return Err(Problem::validation(vec![FieldError::new("steps", "must be an array of steps")])),
                };
                let repeat = object.remove("repeat_after_s");
                if let Some(unknown) = object.keys().next() {
                    return Err(Problem::validation(vec![FieldError::new(unknown.clone(), "unknown field")]));
                }
                (steps, repeat)
            }
            _ => return Err(Problem::validation(vec![FieldError::new("steps", "must be an array of steps")])),
        };

        let mut errors = Vec::new();
        if steps.is_empty() || steps.len() > MAX_STEPS {
            errors.push(FieldError::new("steps", format!("must hold 1 to {MAX_STEPS} steps")));
        }
        let mut parsed = Vec::with_capacity(steps.len());
        let mut previous = 0.0;
        for (i, step) in steps.into_iter().enumerate() {
            let (after_s, config) = parse_step(i, &step, &mut errors);
            if let Some(after_s) = after_s {
                if after_s < previous {
                    errors.push(FieldError::new(format!("steps[{i}].after_s"), "offsets must not decrease"));
                }
                previous = after_s;
                if let Some(config) = config {
                    parsed.push(ScenarioStep { after: Duration::from_secs_f64(after_s), config, source: step });
                }
            }
        }
        let repeat_after = match repeat_after_s {
            None | Some(Value::Null) => None,
            Some(value) => match value.as_f64() {
                Some(s) if s.is_finite() && s > previous && (MIN_REPEAT_S..=MAX_OFFSET_S).contains(&s) => {
                    Some(Duration::from_secs_f64(s))
                }
                _ => {
                    errors.push(FieldError::new(
                        "repeat_after_s",
                        format!(
                            "must be a number of seconds after the last step, from {MIN_REPEAT_S} to {MAX_OFFSET_S}"
                        ),
                    ));
                    None
                }
            },
        };
        if errors.is_empty() { Ok(Self { steps: parsed, repeat_after }) } else { Err(Problem::validation(errors)) }
    }
}

/// Parses one step, adding what is wrong with it to `errors`.
fn parse_step(i: usize, step: &Value, errors: &mut Vec<FieldError>) -> (Option<f64>, Option<ChaosConfig>) {
    let field = |name: &str| format!("steps[{i}].{name}");
    let Value::Object(object) = step else {
        errors.push(FieldError::new(format!("steps[{i}]"), "must be an object"));
        return (None, None);
    };
    for key in object.keys() {
        if !matches!(key.as_str(), "after_s" | "preset" | "config") {
            errors.push(FieldError::new(field(key), "unknown field"));
        }
    }
    let after_s = match object.get("after_s").and_then(Value::as_f64) {
        Some(s) if s.is_finite() && (0.0..=MAX_OFFSET_S).contains(&s) => Some(s),
        _ => {
            errors.push(FieldError::new(field("after_s"), "must be a number of seconds from 0 to 86400"));
            None
        }
    };
    let config = match (object.get("preset"), object.get("config")) {
        (Some(name), None) => match name.as_str().and_then(preset) {
            Some(config) => Some(config),
            None => {
                errors.push(FieldError::new(field("preset"), "is not a known preset (see GET /chaos/presets)"));
                None
            }
        },
        (None, Some(inline)) => match serde_json::from_value::<ChaosConfig>(inline.clone()) {
            Ok(config) => {
                errors.extend(
                    super::config::validate(&config)
                        .into_iter()
                        .map(|e| FieldError::new(field(&format!("config.{}", e.field)), e.message)),
                );
                Some(config)
            }
            Err(e) => {
                errors.push(FieldError::new(field("config"), e.to_string()));
                None
            }
        },
        _ => {
            errors.push(FieldError::new(format!("steps[{i}]"), "needs exactly one of `preset` or `config`"));
            None
        }
    };
    (after_s, config)
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn accepts_both_shapes() {
        let bare = json!([{"after_s": 0, "preset": "healthy"}, {"after_s": 1.5, "config": {"failure_rate": 0.5}}]);
        let scenario = Scenario::from_json(bare).map_err(|p| p.detail);
        let scenario = scenario.unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(scenario.steps.len(), 2);
        assert_eq!(scenario.steps[1].after, Duration::from_millis(1_500));
        assert!((scenario.steps[1].config.failure_rate - 0.5).abs() < f64::EPSILON);

        let wrapped = json!({"steps": [{"after_s": 0, "preset": "outage"}], "repeat_after_s": 10});
        let scenario = Scenario::from_json(wrapped).map_err(|p| p.detail);
        assert_eq!(scenario.ok().and_then(|s| s.repeat_after), Some(Duration::from_secs(10)));
    }

    #[test]
    fn a_repeat_period_too_short_to_be_a_timeline_is_refused() {
        for period in [1e-9, 0.0, 0.5, -1.0] {
            let body = json!({"steps": [{"after_s": 0, "preset": "flaky"}], "repeat_after_s": period});
            let Err(problem) = Scenario::from_json(body) else { panic!("accepted repeat_after_s {period}") };
            assert_eq!(problem.errors[0].field, "repeat_after_s");
        }
        let body = json!({"steps": [{"after_s": 0, "preset": "flaky"}], "repeat_after_s": 1});
        assert!(Scenario::from_json(body).is_ok());
    }

    #[test]
    fn reports_every_bad_step() {
        let body = json!([
            {"after_s": 5, "preset": "healthy"},
            {"after_s": 1, "preset": "nope"},
            {"after_s": -1, "config": {"failure_rate": 2}},
            {"preset": "healthy", "config": {}},
        ]);
        let Err(problem) = Scenario::from_json(body) else { panic!("accepted a bad scenario") };
        let fields: Vec<_> = problem.errors.iter().map(|e| e.field.as_str()).collect();
        assert!(fields.contains(&"steps[1].after_s"), "{fields:?}");
        assert!(fields.contains(&"steps[1].preset"), "{fields:?}");
        assert!(fields.contains(&"steps[2].after_s"), "{fields:?}");
        assert!(fields.contains(&"steps[2].config.failure_rate"), "{fields:?}");
        assert!(fields.contains(&"steps[3]"), "{fields:?}");
    }
}
