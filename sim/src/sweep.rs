//! Seed sweeps over the turmoil simulation: the seed-independent workload flags, the command line
//! that replays one seed, and a report of every seed with the failures and their replays.

use std::fmt;
use std::ops::RangeInclusive;

use serde::Serialize;

use crate::turmoil_sim::{NetFaultRates, TurmoilConfig, TurmoilSummary, run_turmoil};

/// Seeds one sweep runs at most.
pub const SWEEP_SEEDS_MAX: u64 = 1_000_000;
/// Violations quoted per failing seed in a report (the JSON has them all).
const VIOLATIONS_QUOTED_MAX: usize = 3;

/// The fault plan of a turmoil run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, clap::ValueEnum)]
#[serde(rename_all = "snake_case")]
pub enum FaultPlan {
    /// No faults.
    None,
    /// The seed draws the rates (swarm testing).
    Swarm,
    /// Frequent partitions and holds of worker links.
    Partitions,
}

impl FaultPlan {
    fn flag(self) -> &'static str {
        match self {
            Self::None => "none",
            Self::Swarm => "swarm",
            Self::Partitions => "partitions",
        }
    }
}

/// Everything about a turmoil run but its seed.
#[derive(Debug, Clone, Serialize)]
pub struct TurmoilWorkload {
    /// Worker hosts.
    pub workers: usize,
    /// Executions.
    pub executions: usize,
    /// Fault plan.
    pub faults: FaultPlan,
    /// Length of the safety phase, in simulated ms.
    pub safety_ms: u64,
    /// Longest task, in simulated ms.
    pub task_ms_max: u64,
    /// Deliberately unfenced server.
    pub unfenced: bool,
}

impl Default for TurmoilWorkload {
    fn default() -> Self {
        let base = TurmoilConfig::default();
        Self {
            workers: base.workers,
            executions: base.executions,
            faults: FaultPlan::Swarm,
            safety_ms: base.safety_ms,
            task_ms_max: base.task_ms_max,
            unfenced: false,
        }
    }
}

impl TurmoilWorkload {
    /// The run of this workload under `seed`.
    pub fn config(&self, seed: u64) -> TurmoilConfig {
        let base = TurmoilConfig::default();
        let faults = match self.faults {
            FaultPlan::None => None,
            FaultPlan::Swarm => Some(NetFaultRates::swarm(seed, base.lease_ttl_ms)),
            FaultPlan::Partitions => Some(NetFaultRates::partitions(base.lease_ttl_ms)),
        };
        TurmoilConfig {
            seed,
            workers: self.workers,
            executions: self.executions,
            safety_ms: self.safety_ms,
            task_ms_max: self.task_ms_max.max(1),
            faults,
            unfenced: self.unfenced,
            ..base
        }
    }

    /// The workload's flags as `ff-sim` takes them (`--task-ms-max` only when not the default).
    pub fn flags(&self) -> String {
        let task = if self.task_ms_max == TurmoilConfig::default().task_ms_max {
            String::new()
        } else {
            format!(" --task-ms-max {}", self.task_ms_max)
        };
        format!(
            "--workers {} --executions {} --faults {} --safety-ms {}{task}{}",
            self.workers,
            self.executions,
            self.faults.flag(),
            self.safety_ms,
            if self.unfenced { " --unfenced" } else { "" }
        )
    }

    /// The command that replays `seed` and draws its timeline.
    pub fn replay_command(&self, seed: u64) -> String {
        format!("ff-sim replay --seed {seed} {} --timeline seed-{seed}.svg", self.flags())
    }
}

/// Parses `A..B` (B excluded), `A..=B` or a single seed `A`.
///
/// Errors: malformed numbers, an empty range, or more than [`SWEEP_SEEDS_MAX`] seeds, as text.
pub fn parse_seeds(text: &str) -> Result<RangeInclusive<u64>, String> {
    let number = |s: &str| s.trim().parse::<u64>().map_err(|e| format!("seed {s:?} in {text:?}: {e}"));
    let (first, last) = if let Some((a, b)) = text.split_once("..=") {
        (number(a)?, number(b)?)
    } else if let Some((a, b)) = text.split_once("..") {
        let end = number(b)?;
        let last = end.checked_sub(1).ok_or_else(|| format!("{text:?} is empty"))?;
        (number(a)?, last)
    } else {
        let seed = number(text)?;
        (seed, seed)
    };
    if first > last {
        return Err(format!("{text:?} is empty"));
    }
    if last - first >= SWEEP_SEEDS_MAX {
        return Err(format!("{text:?} has more than {SWEEP_SEEDS_MAX} seeds"));
    }
    Ok(first..=last)
}

/// One seed of a sweep.
#[derive(Debug, Clone, Serialize)]
pub struct SeedRun {
    /// The seed.
    pub seed: u64,
    /// Whether every invariant held and every execution finished.
    pub passed: bool,
    /// The run's summary (without its history); `None` when the run itself errored.
    pub summary: Option<TurmoilSummary>,
    /// The error that stopped the run, if any.
    pub error: Option<String>,
    /// The command that replays this seed.
    pub replay: String,
}

/// Every seed of a sweep.
#[derive(Debug, Clone, Serialize)]
pub struct SweepReport {
    /// First seed.
    pub first_seed: u64,
    /// Last seed (included).
    pub last_seed: u64,
    /// The workload every seed ran.
    pub workload: TurmoilWorkload,
    /// Seeds that failed.
    pub failed: usize,
    /// Every seed, in order.
    pub runs: Vec<SeedRun>,
}

impl SweepReport {
    /// Whether every seed passed.
    pub fn passed(&self) -> bool {
        self.failed == 0
    }

    /// The failing seeds, in order.
    pub fn failures(&self) -> impl Iterator<Item = &SeedRun> {
        self.runs.iter().filter(|r| !r.passed)
    }
}

impl fmt::Display for SweepReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let total = self.runs.len();
        write!(
            f,
            "swept seeds {}..={} ({}): {} passed, {} FAILED",
            self.first_seed,
            self.last_seed,
            self.workload.flags(),
            total - self.failed,
            self.failed
        )?;
        for run in self.failures() {
            write!(f, "\n  seed {}: ", run.seed)?;
            match (&run.error, &run.summary) {
                (Some(e), _) => write!(f, "error: {e}")?,
                (None, Some(s)) if s.violations.is_empty() => {
                    write!(f, "{} executions unfinished", s.unfinished)?
                }
                (None, Some(s)) => {
                    let quoted: Vec<&str> =
                        s.violations.iter().take(VIOLATIONS_QUOTED_MAX).map(String::as_str).collect();
                    write!(f, "{}", quoted.join("; "))?;
                    if s.violations.len() > VIOLATIONS_QUOTED_MAX {
                        write!(f, "; {} more", s.violations.len() - VIOLATIONS_QUOTED_MAX)?;
                    }
                }
                (None, None) => write!(f, "no summary")?,
            }
            write!(f, "\n    replay: {}", run.replay)?;
        }
        Ok(())
    }
}

/// Runs `workload` under every seed of `seeds`, calling `on_seed` after each; never stops early.
pub fn sweep(
    workload: &TurmoilWorkload,
    seeds: RangeInclusive<u64>,
    on_seed: &mut dyn FnMut(&SeedRun),
) -> SweepReport {
    let (first_seed, last_seed) = (*seeds.start(), *seeds.end());
    let mut runs = Vec::new();
    for seed in seeds {
        let replay = workload.replay_command(seed);
        let run = match run_turmoil(workload.config(seed)) {
            Ok(mut summary) => {
                summary.history = Default::default();
                SeedRun { seed, passed: summary.passed(), summary: Some(summary), error: None, replay }
            }
            Err(e) => SeedRun { seed, passed: false, summary: None, error: Some(e), replay },
        };
        on_seed(&run);
        runs.push(run);
    }
    let failed = runs.iter().filter(|r| !r.passed).count();
    SweepReport { first_seed, last_seed, workload: workload.clone(), failed, runs }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seed_ranges_parse_like_rust_ranges() {
        assert_eq!(parse_seeds("1..=50"), Ok(1..=50));
        assert_eq!(parse_seeds("1..50"), Ok(1..=49));
        assert_eq!(parse_seeds("7"), Ok(7..=7));
        assert!(parse_seeds("5..5").is_err());
        assert!(parse_seeds("9..=2").is_err());
        assert!(parse_seeds("a..3").is_err());
        assert!(parse_seeds("0..=2000000").is_err());
    }

    #[test]
    fn the_replay_command_carries_every_workload_flag() {
        let w =
            TurmoilWorkload { unfenced: true, faults: FaultPlan::Partitions, ..TurmoilWorkload::default() };
        let long = TurmoilWorkload { task_ms_max: 60_000, ..TurmoilWorkload::default() };
        assert!(long.flags().contains("--safety-ms 30000 --task-ms-max 60000"), "{}", long.flags());
        assert_eq!(
            w.replay_command(9),
            "ff-sim replay --seed 9 --workers 4 --executions 40 --faults partitions --safety-ms 30000 --unfenced --timeline seed-9.svg"
        );
    }
}
