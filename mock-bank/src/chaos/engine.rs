//! The live chaos engine shared by every request: the current plan, the fault counters, and the
//! scenario timeline that may be changing the plan in the background.

use std::sync::{Arc, Mutex, MutexGuard};

use chrono::Utc;
use serde_json::Value;
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tracing::info;

use super::config::{ChaosConfig, preset};
use super::plan::{ChaosPlan, Decision, FaultKind};
use super::scenario::{Scenario, ScenarioStatus};
use super::stats::{FaultStats, StatsSnapshot};
use http_conventions::problem::{FieldError, Problem};

#[derive(Debug)]
pub struct ChaosEngine {
    plan: Mutex<ChaosPlan>,
    stats: FaultStats,
    /// What `POST /chaos/reset` returns to: the start-up configuration and seed.
    startup: (ChaosConfig, u64),
    scenario: Mutex<ScenarioSlot>,
}

#[derive(Debug, Default)]
struct ScenarioSlot {
    /// Bumped by every change of scenario or manual change of configuration, so that a timeline
    /// task that lost the race never applies a step over a person's change.
    generation: u64,
    task: Option<JoinHandle<()>>,
    status: Option<ScenarioStatus>,
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    // Every critical section here is a plain assignment, so a poisoned lock is still consistent.
    mutex.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl ChaosEngine {
    pub fn new(config: ChaosConfig, seed: u64) -> Arc<Self> {
        Arc::new(Self {
            plan: Mutex::new(ChaosPlan::new(config.clone(), seed)),
            stats: FaultStats::default(),
            startup: (config, seed),
            scenario: Mutex::new(ScenarioSlot::default()),
        })
    }

    /// Decides and counts one banking request's fault.
    pub fn decide(&self, forced: Option<FaultKind>) -> Decision {
        let decision = lock(&self.plan).decide(forced);
        self.stats.record(&decision, forced.is_some());
        decision
    }

    pub fn config(&self) -> ChaosConfig {
        lock(&self.plan).config().clone()
    }

    pub fn stats(&self) -> StatsSnapshot {
        self.stats.snapshot()
    }

    /// `PUT /chaos`: a whole configuration; missing fields take their healthy defaults.
    pub fn replace(&self, body: Value) -> Result<ChaosConfig, Problem> {
        let config = parse_config(body)?;
        self.set_by_hand(config.clone(), "replaced");
        Ok(self.config())
    }

    /// `PATCH /chaos`: a JSON merge patch (RFC 7396) over the current configuration.
    pub fn patch(&self, patch: Value) -> Result<ChaosConfig, Problem> {
        if !patch.is_object() {
            return Err(Problem::validation(vec![FieldError::new("", "a merge patch must be a JSON object")]));
        }
        let mut current = serde_json::to_value(self.config()).unwrap_or(Value::Null);
        // The current seed is shown for reproduction, but only a patch that names a seed restarts
        // the sequence.
        if let Value::Object(object) = &mut current {
            object.insert("seed".into(), Value::Null);
        }
        merge(&mut current, patch);
        let config = parse_config(current)?;
        self.set_by_hand(config, "patched");
        Ok(self.config())
    }

    /// `POST /chaos/presets/{name}`.
    pub fn apply_preset(&self, name: &str) -> Option<ChaosConfig> {
        let config = preset(name)?;
        self.set_by_hand(config, name);
        Some(self.config())
    }

    /// `POST /chaos/reset`: the start-up configuration and seed, zeroed counters, no scenario.
    pub fn reset(&self) -> ChaosConfig {
        let (config, seed) = self.startup.clone();
        self.stop_scenario();
        *lock(&self.plan) = ChaosPlan::new(config, seed);
        self.stats.clear();
        info!(seed, "chaos reset to start-up configuration");
        self.config()
    }

    fn set_by_hand(&self, config: ChaosConfig, how: &str) {
        self.stop_scenario();
        lock(&self.plan).set_config(config);
        let c = self.config();
        info!(
            change = how,
            failure_rate = c.failure_rate,
            ambiguous_rate = c.ambiguous_rate,
            timeout_rate = c.timeout_rate,
            reset_rate = c.reset_rate,
            throttle_rate = c.throttle_rate,
            outage = c.outage,
            latency_ms = c.latency.base_ms,
            seed = c.seed,
            "chaos configuration changed"
        );
    }

    /// Starts a timeline, replacing any running one. Its first step applies at once if its
    /// offset is zero.
    pub fn start_scenario(self: &Arc<Self>, scenario: Scenario) -> ScenarioStatus {
        let mut slot = lock(&self.scenario);
        if let Some(task) = slot.task.take() {
            task.abort();
        }
        slot.generation += 1;
        let status = ScenarioStatus {
            active: true,
            started_at: Some(Utc::now()),
            current_step: None,
            cycle: 0,
            repeat_after_s: scenario.repeat_after.map(|d| d.as_secs_f64()),
            steps: scenario.steps.iter().map(|s| s.source.clone()).collect(),
        };
        slot.status = Some(status.clone());
        let engine = Arc::clone(self);
        let generation = slot.generation;
        slot.task = Some(tokio::spawn(async move { engine.run_scenario(generation, scenario).await }));
        info!(generation, "chaos scenario started");
        status
    }

    /// Applies each step at its offset from the start of its cycle. Never loops faster than the
    /// steps are due: when the task falls behind (a starved runtime, a paused machine), steps
    /// already overtaken by a later due step are skipped, and so are whole cycles that ended
    /// meanwhile; the timeline resumes at the step in effect now.
    async fn run_scenario(self: Arc<Self>, generation: u64, scenario: Scenario) {
        let started = Instant::now();
        let steps = &scenario.steps;
        let mut cycle: u32 = 0;
        loop {
            let cycle_start = started + scenario.repeat_after.unwrap_or_default() * cycle;
            let mut index = 0;
            while index < steps.len() {
                let now = Instant::now();
                while index + 1 < steps.len() && cycle_start + steps[index + 1].after <= now {
                    index += 1;
                }
                tokio::time::sleep_until(cycle_start + steps[index].after).await;
                if !self.apply_step(generation, index, steps[index].config.clone()) {
                    return;
                }
                index += 1;
            }
            let Some(period) = scenario.repeat_after else { break };
            let elapsed = Instant::now().saturating_duration_since(started);
            let current = u32::try_from(elapsed.as_nanos() / period.as_nanos().max(1)).unwrap_or(u32::MAX);
            cycle = (cycle + 1).max(current);
            tokio::time::sleep_until(started + period * cycle).await;
            let mut slot = lock(&self.scenario);
            if slot.generation != generation {
                return;
            }
            if let Some(status) = slot.status.as_mut() {
                status.cycle = u64::from(cycle);
            }
        }
        let mut slot = lock(&self.scenario);
        if slot.generation == generation
            && let Some(status) = slot.status.as_mut()
        {
            status.active = false;
        }
    }

    /// Applies a timeline step unless the timeline was replaced or stopped meanwhile.
    fn apply_step(&self, generation: u64, index: usize, config: ChaosConfig) -> bool {
        let mut slot = lock(&self.scenario);
        if slot.generation != generation {
            return false;
        }
        lock(&self.plan).set_config(config);
        if let Some(status) = slot.status.as_mut() {
            status.current_step = Some(index);
        }
        info!(step = index, "chaos scenario step applied");
        true
    }

    /// Stops the running timeline, leaving the configuration it last applied in effect.
    pub fn stop_scenario(&self) -> bool {
        let mut slot = lock(&self.scenario);
        slot.generation += 1;
        let was_running = slot.status.as_ref().is_some_and(|s| s.active);
        if let Some(task) = slot.task.take() {
            task.abort();
        }
        if let Some(status) = slot.status.as_mut() {
            status.active = false;
        }
        was_running
    }

    pub fn scenario_status(&self) -> ScenarioStatus {
        lock(&self.scenario).status.clone().unwrap_or(ScenarioStatus {
            active: false,
            started_at: None,
            current_step: None,
            cycle: 0,
            repeat_after_s: None,
            steps: Vec::new(),
        })
    }
}

/// Parses and validates a whole configuration from JSON.
pub fn parse_config(body: Value) -> Result<ChaosConfig, Problem> {
    let config: ChaosConfig =
        serde_json::from_value(body).map_err(|e| Problem::validation(vec![FieldError::new("", e.to_string())]))?;
    let errors = super::config::validate(&config);
    if errors.is_empty() { Ok(config) } else { Err(Problem::validation(errors)) }
}

/// RFC 7396 JSON merge patch.
fn merge(target: &mut Value, patch: Value) {
    match patch {
        Value::Object(fields) => {
            if !target.is_object() {
                *target = Value::Object(serde_json::Map::new());
            }
            if let Value::Object(object) = target {
                for (key, value) in fields {
                    if value.is_null() {
                        object.remove(&key);
                    } else {
                        merge(object.entry(key).or_insert(Value::Null), value);
                    }
                }
            }
        }
        other => *target = other,
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use serde_json::json;

    use super::*;

    #[tokio::test(start_paused = true)]
    async fn scenario_applies_steps_on_time_and_repeats() {
        let engine = ChaosEngine::new(ChaosConfig::default(), 1);
        let scenario = Scenario::from_json(json!({
            "steps": [{"after_s": 0, "preset": "healthy"}, {"after_s": 10, "preset": "outage"}],
            "repeat_after_s": 20
        }));
        let Ok(scenario) = scenario else { panic!("valid scenario refused") };
        engine.start_scenario(scenario);

        tokio::time::sleep(Duration::from_secs(1)).await;
        assert!(!engine.config().outage);
        tokio::time::sleep(Duration::from_secs(10)).await; // t = 11
        assert!(engine.config().outage);
        tokio::time::sleep(Duration::from_secs(10)).await; // t = 21: second cycle, healthy again
        assert!(!engine.config().outage);
        assert_eq!(engine.scenario_status().cycle, 1);

        // A person's change stops the timeline: the outage step never comes.
        engine.patch(json!({"failure_rate": 0.25})).map_err(|p| p.detail).unwrap_or_else(|e| panic!("{e}"));
        tokio::time::sleep(Duration::from_secs(30)).await;
        let config = engine.config();
        assert!(!config.outage);
        assert!((config.failure_rate - 0.25).abs() < f64::EPSILON);
        assert!(!engine.scenario_status().active);
    }

    /// A timeline that fell far behind (here: a clock jumping a day ahead at once) resumes at the
    /// step in effect now instead of replaying every missed cycle, and never busy-loops.
    #[tokio::test(start_paused = true)]
    async fn a_timeline_that_fell_behind_skips_to_the_step_in_effect_now() {
        let engine = ChaosEngine::new(ChaosConfig::default(), 1);
        let scenario = Scenario::from_json(json!({
            "steps": [{"after_s": 0, "preset": "healthy"}, {"after_s": 1, "preset": "outage"}],
            "repeat_after_s": 2
        }));
        let Ok(scenario) = scenario else { panic!("valid scenario refused") };
        engine.start_scenario(scenario);
        tokio::task::yield_now().await;
        let applied_before = engine.scenario_status().current_step;
        assert_eq!(applied_before, Some(0));

        // One jump of a day and a half-second: 43,200 cycles missed, in the first half of one.
        tokio::time::advance(Duration::from_millis(86_400_500)).await;
        for _ in 0..10 {
            tokio::task::yield_now().await;
        }
        let status = engine.scenario_status();
        assert_eq!(status.cycle, 43_200, "the missed cycles are skipped, not replayed");
        assert_eq!(status.current_step, Some(0));
        assert!(!engine.config().outage);
        tokio::time::sleep(Duration::from_millis(600)).await; // 1.1 s into the cycle
        assert!(engine.config().outage, "and it goes on from there");
    }

    #[test]
    fn patch_merges_and_keeps_the_sequence_unless_a_seed_is_given() {
        let engine = ChaosEngine::new(ChaosConfig::default(), 99);
        let patched = engine.patch(json!({"latency": {"base_ms": 7}})).map_err(|p| p.detail);
        let patched = patched.unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(patched.latency.base_ms, 7);
        assert_eq!(patched.seed, Some(99));
        assert!(engine.patch(json!({"failure_rate": 0.7, "reset_rate": 0.7})).is_err());
        assert!(engine.patch(json!({"no_such_field": 1})).is_err());
        assert_eq!(engine.config().latency.base_ms, 7, "a refused patch changes nothing");
        let reseeded = engine.patch(json!({"seed": 5})).map_err(|p| p.detail);
        assert_eq!(reseeded.ok().and_then(|c| c.seed), Some(5));
    }
}
