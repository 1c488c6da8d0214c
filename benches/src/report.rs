//! One JSON line per measured run, in FlowFabric's bench report schema
//! (`benches/harness/src/report.rs` upstream): scenario, system, git sha,
//! server version, host, config, throughput and latency percentiles. Fields
//! after `latency_ms` are ours; readers of the upstream schema ignore them.

use std::process::Command;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::Serialize;

/// `system` of a run through this engine.
pub const SYSTEM_ENGINE: &str = "ff-engine-kit";
/// `system` of the raw-Valkey baseline (no engine: lists and blocking pops).
pub const SYSTEM_BASELINE: &str = "raw-valkey-baseline";
/// Longest command output read while probing the host, in bytes.
const PROBE_OUTPUT_BYTES_MAX: usize = 4_096;

/// One report line.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    /// Scenario name (`submit_claim_complete`, `suspend_signal_resume`, …).
    pub scenario: String,
    /// [`SYSTEM_ENGINE`] or [`SYSTEM_BASELINE`].
    pub system: String,
    /// Short sha of `HEAD`, `unknown` outside a checkout.
    pub git_sha: String,
    /// The Valkey server's version, `n/a` for in-process backends.
    pub valkey_version: String,
    /// The machine.
    pub host: HostInfo,
    /// Always false: loopback standalone server only.
    pub cluster: bool,
    /// Second-precision UTC time the line was written.
    pub timestamp_utc: String,
    /// Scenario parameters.
    pub config: serde_json::Value,
    /// Operations per second over the timed phase (the scenario defines an operation).
    pub throughput_ops_per_sec: f64,
    /// Per-operation latency percentiles, in ms.
    pub latency_ms: LatencyMs,
    /// `memory`, `sqlite` or `valkey`.
    pub backend: String,
    /// Operations the scenario finished (less than configured when it hit its deadline).
    pub completed_ops: u64,
    /// Engine throughput over the same-run baseline's, on engine lines of Valkey runs.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ratio_to_baseline: Option<f64>,
    /// Free text: what was skipped or cut short, and why.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub notes: Option<String>,
}

/// The machine a report was measured on.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct HostInfo {
    /// CPU model name.
    pub cpu: String,
    /// Cores available to this process.
    pub cores: usize,
    /// Total memory, in GiB.
    pub mem_gb: u64,
}

/// Latency percentiles, in ms.
#[derive(Debug, Clone, Copy, Default, Serialize, PartialEq)]
pub struct LatencyMs {
    /// Median.
    pub p50: f64,
    /// 95th percentile.
    pub p95: f64,
    /// 99th percentile.
    pub p99: f64,
}

impl LatencyMs {
    /// Nearest-rank percentiles of `samples` (sorted in place); zeros when empty.
    pub fn from_samples(samples: &mut [Duration]) -> Self {
        if samples.is_empty() {
            return Self::default();
        }
        samples.sort_unstable();
        let at = |q: f64| {
            // Nearest rank on (n - 1) · q; `q` is in 0..=1 so the index is in range.
            let index = ((samples.len() - 1) as f64 * q).round() as usize;
            samples[index.min(samples.len() - 1)].as_secs_f64() * 1_000.0
        };
        Self { p50: at(0.50), p95: at(0.95), p99: at(0.99) }
    }
}

/// What a scenario measured, before the environment is filled in.
#[derive(Debug, Clone)]
pub struct Measured {
    /// Operations finished in the timed phase.
    pub completed_ops: u64,
    /// Wall time of the timed phase.
    pub wall: Duration,
    /// One latency sample per operation.
    pub latencies: Vec<Duration>,
    /// What was cut short, if anything.
    pub notes: Option<String>,
}

impl Measured {
    /// Operations per second over the wall time (0 for an empty phase).
    pub fn throughput(&self) -> f64 {
        let secs = self.wall.as_secs_f64();
        if secs > 0.0 { self.completed_ops as f64 / secs } else { 0.0 }
    }
}

/// The run-wide fields every line repeats.
#[derive(Debug, Clone)]
pub struct Environment {
    /// Short sha of `HEAD`.
    pub git_sha: String,
    /// Server version or `n/a`.
    pub valkey_version: String,
    /// The machine.
    pub host: HostInfo,
    /// `memory`, `sqlite` or `valkey`.
    pub backend: String,
}

impl Environment {
    /// Probes git and the host; the caller supplies the backend and server version.
    pub fn probe(backend: &str, valkey_version: String) -> Self {
        Self { git_sha: git_sha(), valkey_version, host: host_info(), backend: backend.to_owned() }
    }

    /// A report line for one measured run.
    pub fn report(&self, scenario: &str, system: &str, config: serde_json::Value, m: Measured) -> Report {
        let throughput_ops_per_sec = m.throughput();
        let mut latencies = m.latencies;
        Report {
            scenario: scenario.to_owned(),
            system: system.to_owned(),
            git_sha: self.git_sha.clone(),
            valkey_version: self.valkey_version.clone(),
            host: self.host.clone(),
            cluster: false,
            timestamp_utc: iso8601_utc(SystemTime::now()),
            config,
            throughput_ops_per_sec,
            latency_ms: LatencyMs::from_samples(&mut latencies),
            backend: self.backend.clone(),
            completed_ops: m.completed_ops,
            ratio_to_baseline: None,
            notes: m.notes,
        }
    }
}

/// Short sha of the checkout's `HEAD`, or `unknown`.
pub fn git_sha() -> String {
    let out = Command::new("git").args(["rev-parse", "--short", "HEAD"]).output();
    match out {
        Ok(o) if o.status.success() && o.stdout.len() <= PROBE_OUTPUT_BYTES_MAX => {
            String::from_utf8_lossy(&o.stdout).trim().to_owned()
        }
        _ => "unknown".to_owned(),
    }
}

/// CPU model, available cores and total memory, from `/proc` (zeros and `unknown` elsewhere).
pub fn host_info() -> HostInfo {
    let cores = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1);
    let cpu = proc_field("/proc/cpuinfo", "model name").unwrap_or_else(|| "unknown".to_owned());
    let mem_gb = proc_field("/proc/meminfo", "MemTotal")
        .and_then(|v| v.split_whitespace().next().and_then(|kb| kb.parse::<u64>().ok()))
        .map_or(0, |kb| kb / 1_024 / 1_024);
    HostInfo { cpu, cores, mem_gb }
}

/// The value of the first `key: value` line of a `/proc` file.
fn proc_field(path: &str, key: &str) -> Option<String> {
    let text = std::fs::read_to_string(path).ok()?;
    text.lines().find_map(|line| {
        let (k, v) = line.split_once(':')?;
        (k.trim() == key).then(|| v.trim().to_owned())
    })
}

/// `YYYY-MM-DDTHH:MM:SSZ` of a time (proleptic Gregorian, UTC).
pub fn iso8601_utc(at: SystemTime) -> String {
    let secs = at.duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0);
    let (days, rem) = (secs / 86_400, secs % 86_400);
    let (year, month, day) = civil_from_days(days);
    format!("{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z", rem / 3_600, rem % 3_600 / 60, rem % 60)
}

/// Year, month, day of a count of days since 1970-01-01 (Howard Hinnant's algorithm).
fn civil_from_days(days: u64) -> (u64, u64, u64) {
    let z = days + 719_468;
    let era = z / 146_097;
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + u64::from(month <= 2);
    (year, month, day)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_are_nearest_rank() {
        let mut samples: Vec<Duration> = (1..=100).map(Duration::from_micros).collect();
        let p = LatencyMs::from_samples(&mut samples);
        assert!((p.p50 - 0.051).abs() < 1e-9 && (p.p95 - 0.095).abs() < 1e-9 && (p.p99 - 0.099).abs() < 1e-9);
        assert_eq!(LatencyMs::from_samples(&mut []), LatencyMs::default());
    }

    #[test]
    fn timestamps_are_utc_calendar_dates() {
        assert_eq!(iso8601_utc(UNIX_EPOCH), "1970-01-01T00:00:00Z");
        let leap_day = UNIX_EPOCH + Duration::from_secs(1_709_164_800 + 3_661);
        assert_eq!(iso8601_utc(leap_day), "2024-02-29T01:01:01Z");
    }
}
