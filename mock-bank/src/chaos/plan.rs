//! The deterministic heart of the chaos engine: a configuration plus a seeded generator decide,
//! request by request, which fault (if any) to perform and how long to delay.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::config::ChaosConfig;

/// A fault kind, as named in `X-Chaos-Fault`, `/chaos/stats` and logs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FaultKind {
    None,
    Failure,
    Ambiguous,
    Timeout,
    Reset,
    Throttle,
}

impl FaultKind {
    pub fn parse(name: &str) -> Option<Self> {
        Some(match name.trim() {
            "none" => Self::None,
            "failure" => Self::Failure,
            "ambiguous" => Self::Ambiguous,
            "timeout" => Self::Timeout,
            "reset" => Self::Reset,
            "throttle" => Self::Throttle,
            _ => return None,
        })
    }
}

/// How an ambiguous fault loses the answer after committing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LostAnswer {
    ServerError,
    DroppedConnection,
}

/// What the bank does to one request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// Process normally.
    None,
    /// Answer `status` (503 or 500) without processing.
    Failure { status: u16 },
    /// Process and commit, then lose the answer.
    Ambiguous(LostAnswer),
    /// Wait `hang`, then process (the client has usually given up by then).
    Timeout { hang: Duration },
    /// Close the connection with a TCP reset and no response, without processing.
    Reset,
    /// 429 with `Retry-After`, without processing.
    Throttle { retry_after_s: u64 },
    /// The bank is down: 503 at once.
    Outage,
}

/// One request's fate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Decision {
    pub fault: Fault,
    /// Latency plus slow tail, applied before the fault (except in an outage).
    pub delay: Duration,
    /// The slow tail was added.
    pub slow: bool,
}

/// A chaos configuration and the seeded generator that draws from it.
///
/// Every decision draws exactly four numbers, whatever the outcome or override, so the n-th
/// request of a run sees the same draws for a given seed even when the configuration changes
/// between requests: that is what makes a seeded run reproducible.
#[derive(Debug, Clone)]
pub struct ChaosPlan {
    config: ChaosConfig,
    seed: u64,
    rng: SplitMix64,
}

impl ChaosPlan {
    pub fn new(mut config: ChaosConfig, seed: u64) -> Self {
        config.seed = Some(seed);
        Self { config, seed, rng: SplitMix64(seed) }
    }

    pub fn config(&self) -> &ChaosConfig {
        &self.config
    }

    /// Replaces the configuration. A `seed` in it restarts the sequence from that seed; without
    /// one the sequence goes on and the current seed is kept.
    pub fn set_config(&mut self, mut config: ChaosConfig) {
        match config.seed {
            Some(seed) => {
                self.seed = seed;
                self.rng = SplitMix64(seed);
            }
            None => config.seed = Some(self.seed),
        }
        self.config = config;
    }

    /// Decides the next request's fault. `forced` (from `X-Chaos-Fault`) replaces the drawn
    /// kind; an outage overrides everything.
    pub fn decide(&mut self, forced: Option<FaultKind>) -> Decision {
        let [kind_draw, detail_draw, jitter_draw, slow_draw] =
            [self.rng.unit(), self.rng.unit(), self.rng.unit(), self.rng.unit()];
        let c = &self.config;
        if c.outage {
            return Decision { fault: Fault::Outage, delay: Duration::ZERO, slow: false };
        }
        let kind = forced.unwrap_or_else(|| pick_kind(&c.fault_rates(), kind_draw));
        let fault = match kind {
            FaultKind::None => Fault::None,
            FaultKind::Failure => Fault::Failure { status: if detail_draw < 0.5 { 503 } else { 500 } },
            FaultKind::Ambiguous => Fault::Ambiguous(if detail_draw < 0.5 {
                LostAnswer::ServerError
            } else {
                LostAnswer::DroppedConnection
            }),
            FaultKind::Timeout => Fault::Timeout { hang: Duration::from_millis(c.hang_ms) },
            FaultKind::Reset => Fault::Reset,
            FaultKind::Throttle => Fault::Throttle { retry_after_s: c.retry_after_s },
        };
        let jitter = (jitter_draw * (c.latency.jitter_ms as f64 + 1.0)) as u64;
        let slow = slow_draw < c.slow_rate;
        let delay_ms = c.latency.base_ms + jitter.min(c.latency.jitter_ms) + if slow { c.slow_ms } else { 0 };
        Decision { fault, delay: Duration::from_millis(delay_ms), slow }
    }
}

/// Maps a uniform draw in `[0, 1)` onto the cumulative fault rates.
fn pick_kind(rates: &[f64; 5], draw: f64) -> FaultKind {
    const KINDS: [FaultKind; 5] =
        [FaultKind::Failure, FaultKind::Ambiguous, FaultKind::Timeout, FaultKind::Reset, FaultKind::Throttle];
    let mut threshold = 0.0;
    for (rate, kind) in rates.iter().zip(KINDS) {
        threshold += rate;
        if draw < threshold {
            return kind;
        }
    }
    FaultKind::None
}

/// SplitMix64 (Steele, Lea and Flood, 2014): tiny, fast and statistically sound for fault
/// injection. Written here rather than taken from a crate so that a seed gives the same fault
/// sequence forever, whatever a dependency upgrade changes in its generators.
#[derive(Debug, Clone)]
struct SplitMix64(u64);

impl SplitMix64 {
    fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `[0, 1)` with 53 bits of precision.
    fn unit(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 * (1.0 / (1u64 << 53) as f64)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn counts(plan: &mut ChaosPlan, n: usize) -> [usize; 6] {
        let mut counts = [0; 6];
        for _ in 0..n {
            let i = match plan.decide(None).fault {
                Fault::None => 0,
                Fault::Failure { .. } => 1,
                Fault::Ambiguous(_) => 2,
                Fault::Timeout { .. } => 3,
                Fault::Reset => 4,
                Fault::Throttle { .. } => 5,
                Fault::Outage => unreachable!("no outage configured"),
            };
            counts[i] += 1;
        }
        counts
    }

    #[test]
    fn same_seed_same_sequence() {
        let config = super::super::config::preset("chaos").unwrap_or_default();
        let mut a = ChaosPlan::new(config.clone(), 7);
        let mut b = ChaosPlan::new(config.clone(), 7);
        let mut c = ChaosPlan::new(config, 8);
        let (x, y, z) = (counts(&mut a, 5_000), counts(&mut b, 5_000), counts(&mut c, 5_000));
        assert_eq!(x, y);
        assert_ne!(x, z, "another seed should give another sequence");
    }

    #[test]
    fn rates_hold_over_many_draws() {
        let config = ChaosConfig { failure_rate: 0.2, reset_rate: 0.1, ..ChaosConfig::default() };
        let n = 100_000;
        let got = counts(&mut ChaosPlan::new(config, 42), n);
        let within = |count: usize, rate: f64| {
            let expected = n as f64 * rate;
            let sigma = (n as f64 * rate * (1.0 - rate)).sqrt();
            (count as f64 - expected).abs() < 5.0 * sigma
        };
        assert!(within(got[1], 0.2), "failures {}", got[1]);
        assert!(within(got[4], 0.1), "resets {}", got[4]);
        assert_eq!(got[2] + got[3] + got[5], 0);
    }

    #[test]
    fn outage_overrides_a_forced_fault_and_latency_stays_in_bounds() {
        let mut plan = ChaosPlan::new(ChaosConfig { outage: true, ..ChaosConfig::default() }, 1);
        assert_eq!(plan.decide(Some(FaultKind::None)).fault, Fault::Outage);
        let config = ChaosConfig {
            latency: super::super::config::Latency { base_ms: 10, jitter_ms: 5 },
            ..ChaosConfig::default()
        };
        let mut plan = ChaosPlan::new(config, 1);
        for _ in 0..1_000 {
            let d = plan.decide(None).delay;
            assert!((10..=15).contains(&d.as_millis()), "{d:?}");
        }
    }
}
