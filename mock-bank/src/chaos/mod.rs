//! The chaos model: [`config`] is what a person tunes, [`plan`] decides each request's fault from
//! it deterministically, [`engine`] shares the plan live with counters ([`stats`]) and timelines
//! ([`scenario`]). The faults themselves are performed on the wire by [`crate::fault`].

pub mod config;
pub mod engine;
pub mod plan;
pub mod scenario;
pub mod stats;

pub use config::{ChaosConfig, Latency, PRESET_NAMES, preset};
pub use engine::ChaosEngine;
pub use plan::{ChaosPlan, Decision, Fault, FaultKind, LostAnswer};
pub use scenario::{Scenario, ScenarioStatus};
pub use stats::StatsSnapshot;
