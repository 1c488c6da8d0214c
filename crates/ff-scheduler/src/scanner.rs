//! Background scanners (spec 03 §7.1): one tokio task per [`ScannerKind`] that
//! walks partitions `0..num_flow_partitions` (only partition 0 for a global
//! scanner, [`ScannerKind::is_global`]) through `run_scanner`, then sleeps
//! `max(interval, 100 ms) − elapsed`. Shutdown is checked between partitions and
//! during the sleep. A panicking task is restarted after 5 s.
//!
//! [`run_all_once`] is the same walk without timers: a simulation advances its
//! clock, then drives every scanner exactly once, deterministically.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use ff_core::contracts::{ScanReport, ScannerKind};
use ff_core::{EngineBackend, EngineError};
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tracing::{debug, error, info, warn};

/// Shortest period between the starts of two passes of one scanner, in ms.
pub const SCANNER_INTERVAL_MS_MIN: u64 = 100;
/// Interval of a scanner kind the inventory does not name, in ms.
pub const SCANNER_INTERVAL_MS_FALLBACK: u64 = 5_000;
/// Entries one `run_scanner` call may process per partition, by default.
pub const SCANNER_BATCH_DEFAULT: usize = 50;
/// Delay before a panicked scanner task is restarted, in ms.
const PANIC_RESTART_DELAY_MS: u64 = 5_000;

/// Default intervals by scanner wire name, in ms (spec 03 §7.2).
const DEFAULT_INTERVALS_MS: &[(&str, u64)] = &[
    ("lease_expiry", 1_500),
    ("delayed_promoter", 750),
    ("index_reconciler", 45_000),
    ("attempt_timeout", 2_000),
    ("suspension_timeout", 2_000),
    ("pending_waitpoint_expiry", 5_000),
    ("pending_wp_expiry", 5_000),
    ("retention_trimmer", 60_000),
    ("budget_reset", 15_000),
    ("budget_reconciler", 30_000),
    ("unblock", 5_000),
    ("dependency_reconciler", 15_000),
    ("quota_reconciler", 30_000),
    ("flow_projector", 15_000),
    ("cancel_reconciler", 15_000),
    ("edge_cancel_dispatcher", 1_000),
    ("edge_cancel_reconciler", 10_000),
    ("execution_deadline", 5_000),
];

/// The scanner's wire name (`lease_expiry`, …), or its debug form if it has none.
pub fn scanner_name(kind: ScannerKind) -> String {
    match serde_json::to_value(kind) {
        Ok(serde_json::Value::String(name)) => name,
        _ => format!("{kind:?}"),
    }
}

/// The inventory's default interval of a scanner; 5 s for a kind it does not name.
pub fn default_interval(kind: ScannerKind) -> Duration {
    let name = scanner_name(kind);
    let ms = DEFAULT_INTERVALS_MS
        .iter()
        .find(|(n, _)| *n == name)
        .map_or(SCANNER_INTERVAL_MS_FALLBACK, |(_, ms)| *ms);
    Duration::from_millis(ms)
}

/// Per-kind interval overrides over the inventory defaults.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ScannerIntervals {
    overrides: BTreeMap<ScannerKind, Duration>,
}

impl ScannerIntervals {
    /// The same interval for every known kind.
    pub fn uniform(interval: Duration) -> Self {
        Self { overrides: ScannerKind::ALL.iter().map(|k| (*k, interval)).collect() }
    }

    /// Overrides one kind's interval.
    pub fn with(mut self, kind: ScannerKind, interval: Duration) -> Self {
        self.overrides.insert(kind, interval);
        self
    }

    /// The interval a kind runs at (override, else default).
    pub fn interval(&self, kind: ScannerKind) -> Duration {
        self.overrides.get(&kind).copied().unwrap_or_else(|| default_interval(kind))
    }
}

/// Settings of a [`ScannerRuntime`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScannerRuntimeConfig {
    /// Interval per kind.
    pub intervals: ScannerIntervals,
    /// Batch passed to every `run_scanner` call.
    pub batch: usize,
}

impl Default for ScannerRuntimeConfig {
    fn default() -> Self {
        Self { intervals: ScannerIntervals::default(), batch: SCANNER_BATCH_DEFAULT }
    }
}

/// Running scanner tasks; stop them with [`ScannerRuntime::shutdown`].
#[derive(Debug)]
pub struct ScannerRuntime {
    stop: watch::Sender<bool>,
    tasks: Vec<JoinHandle<()>>,
    cycles: Arc<BTreeMap<ScannerKind, AtomicU64>>,
}

/// How one pass over the partitions ended.
enum PassEnd {
    Completed,
    Shutdown,
    /// The backend does not implement this kind.
    Unavailable,
}

/// What one task needs.
#[derive(Clone)]
struct Task {
    backend: Arc<dyn EngineBackend>,
    kind: ScannerKind,
    period: Duration,
    batch: usize,
    cycles: Arc<BTreeMap<ScannerKind, AtomicU64>>,
}

impl ScannerRuntime {
    /// Spawns one supervised task per [`ScannerKind::ALL`] entry on the current tokio runtime.
    ///
    /// Errors: `Unavailable` when called outside a tokio runtime.
    pub fn start(backend: Arc<dyn EngineBackend>, config: ScannerRuntimeConfig) -> Result<Self, EngineError> {
        let handle = tokio::runtime::Handle::try_current()
            .map_err(|_| EngineError::Unavailable { op: "scanner_runtime_without_tokio" })?;
        let (stop, stop_rx) = watch::channel(false);
        let cycles: Arc<BTreeMap<ScannerKind, AtomicU64>> =
            Arc::new(ScannerKind::ALL.iter().map(|k| (*k, AtomicU64::new(0))).collect());
        let floor = Duration::from_millis(SCANNER_INTERVAL_MS_MIN);
        let tasks = ScannerKind::ALL
            .iter()
            .map(|kind| {
                let task = Task {
                    backend: backend.clone(),
                    kind: *kind,
                    period: config.intervals.interval(*kind).max(floor),
                    batch: config.batch,
                    cycles: cycles.clone(),
                };
                handle.spawn(supervise(task, stop_rx.clone()))
            })
            .collect();
        Ok(Self { stop, tasks, cycles })
    }

    /// Full passes a kind has completed since start.
    pub fn cycles_completed(&self, kind: ScannerKind) -> u64 {
        self.cycles.get(&kind).map_or(0, |c| c.load(Ordering::Acquire))
    }

    /// Signals every task to stop and waits for all of them.
    pub async fn shutdown(self) {
        // `send_replace` stores the value even when every receiver is gone.
        self.stop.send_replace(true);
        for task in self.tasks {
            if let Err(e) = task.await {
                warn!(error = %e, "scanner supervisor ended abnormally");
            }
        }
    }
}

/// Runs a scanner task, restarting it after a panic until shutdown.
async fn supervise(task: Task, mut stop: watch::Receiver<bool>) {
    let name = scanner_name(task.kind);
    loop {
        let run = tokio::spawn(scan_loop(task.clone(), stop.clone()));
        match run.await {
            Ok(()) => return,
            Err(e) if e.is_panic() => {
                error!(scanner = %name, "scanner task panicked; restarting in 5 s");
                if wait_or_stop(&mut stop, Duration::from_millis(PANIC_RESTART_DELAY_MS)).await {
                    return;
                }
            }
            Err(_) => return,
        }
    }
}

/// Passes over every partition, each followed by the rest of the period, until shutdown.
async fn scan_loop(task: Task, mut stop: watch::Receiver<bool>) {
    let name = scanner_name(task.kind);
    loop {
        let started = tokio::time::Instant::now();
        match pass(&task, &stop, &name).await {
            PassEnd::Completed => {
                if let Some(c) = task.cycles.get(&task.kind) {
                    c.fetch_add(1, Ordering::AcqRel);
                }
            }
            PassEnd::Shutdown => return,
            PassEnd::Unavailable => {
                info!(scanner = %name, "scanner not implemented by this backend; stopping it");
                return;
            }
        }
        let rest = task.period.saturating_sub(started.elapsed());
        if wait_or_stop(&mut stop, rest).await {
            return;
        }
    }
}

/// One pass of a kind over its partitions; errors are logged.
async fn pass(task: &Task, stop: &watch::Receiver<bool>, name: &str) -> PassEnd {
    for partition in 0..partitions_of(task.backend.as_ref(), task.kind) {
        if *stop.borrow() {
            return PassEnd::Shutdown;
        }
        match task.backend.run_scanner(task.kind, partition, task.batch).await {
            Ok(report) if report.acted > 0 || report.examined > 0 => {
                debug!(scanner = name, partition, examined = report.examined, acted = report.acted, "scan");
            }
            Ok(_) => {}
            Err(e) if is_unavailable(&e) => return PassEnd::Unavailable,
            Err(e) => warn!(scanner = name, partition, error = %e, "scanner pass failed"),
        }
    }
    PassEnd::Completed
}

/// Sleeps `duration` unless shutdown comes first; true when shutting down.
async fn wait_or_stop(stop: &mut watch::Receiver<bool>, duration: Duration) -> bool {
    if *stop.borrow() {
        return true;
    }
    let stopped = async {
        // A dropped sender (runtime dropped without shutdown) also stops the task.
        let _ = stop.wait_for(|stopped| *stopped).await;
    };
    tokio::select! {
        () = tokio::time::sleep(duration) => false,
        () = stopped => true,
    }
}

/// Partitions a kind walks: flow partitions, or only partition 0 for a global scanner.
fn partitions_of(backend: &dyn EngineBackend, kind: ScannerKind) -> u16 {
    if kind.is_global() { 1 } else { backend.partition_config().num_flow_partitions }
}

fn is_unavailable(e: &EngineError) -> bool {
    matches!(e.root(), EngineError::Unavailable { .. })
}

/// One pass of every [`ScannerKind::ALL`] entry over its partitions, in order, without timers.
///
/// Reports are summed per kind; a kind the backend does not implement (`Unavailable`)
/// is left out of the map. Errors: the first other `run_scanner` error, with context.
pub async fn run_all_once(
    backend: &dyn EngineBackend,
    batch: usize,
) -> Result<BTreeMap<ScannerKind, ScanReport>, EngineError> {
    let mut reports = BTreeMap::new();
    'kinds: for kind in ScannerKind::ALL.iter().copied() {
        let mut total = ScanReport::default();
        for partition in 0..partitions_of(backend, kind) {
            match backend.run_scanner(kind, partition, batch).await {
                Ok(r) => {
                    total.examined = total.examined.saturating_add(r.examined);
                    total.acted = total.acted.saturating_add(r.acted);
                }
                Err(e) if is_unavailable(&e) => continue 'kinds,
                Err(e) => {
                    let name = scanner_name(kind);
                    return Err(e.backend_context(format!("run_all_once: {name} on partition {partition}")));
                }
            }
        }
        reports.insert(kind, total);
    }
    Ok(reports)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_follow_the_inventory() {
        assert_eq!(default_interval(ScannerKind::LeaseExpiry), Duration::from_millis(1_500));
        assert_eq!(default_interval(ScannerKind::DelayedPromoter), Duration::from_millis(750));
        assert_eq!(default_interval(ScannerKind::ExecutionDeadline), Duration::from_millis(5_000));
        for kind in ScannerKind::ALL.iter().copied() {
            assert!(default_interval(kind) >= Duration::from_millis(SCANNER_INTERVAL_MS_MIN));
        }
    }

    #[test]
    fn overrides_win() {
        let i = ScannerIntervals::default().with(ScannerKind::LeaseExpiry, Duration::from_millis(7));
        assert_eq!(i.interval(ScannerKind::LeaseExpiry), Duration::from_millis(7));
        assert_eq!(i.interval(ScannerKind::DelayedPromoter), Duration::from_millis(750));
        let u = ScannerIntervals::uniform(Duration::from_millis(9));
        assert!(ScannerKind::ALL.iter().all(|k| u.interval(*k) == Duration::from_millis(9)));
    }

    #[test]
    fn names_are_wire_names() {
        assert_eq!(scanner_name(ScannerKind::LeaseExpiry), "lease_expiry");
        assert_eq!(scanner_name(ScannerKind::PendingWaitpointExpiry), "pending_waitpoint_expiry");
    }
}
