//! `ScannerRuntime` and `run_all_once` against the memory backend on a simulated clock.

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::faulty::Faults;
use common::{Env, LEASE_TTL_MS, eventually, must};
use ff_core::contracts::{ScanReport, ScannerKind};
use ff_core::{Clock, EligibilityState, EngineBackend, ExecutionId, OwnershipState};
use ff_scheduler::{ScannerIntervals, ScannerRuntime, ScannerRuntimeConfig, run_all_once};
use serde_json::json;

/// Longest real time a test waits for a runtime pass to show, in ms.
const OBSERVE_MS_MAX: u64 = 5_000;
/// Longest real time `shutdown` may take, in ms.
const SHUTDOWN_MS_MAX: u64 = 1_000;

fn fast_config() -> ScannerRuntimeConfig {
    ScannerRuntimeConfig {
        intervals: ScannerIntervals::uniform(Duration::from_millis(100)),
        ..ScannerRuntimeConfig::default()
    }
}

/// Submits one execution and leases it; returns its id.
async fn leased(env: &Env, partition: u16) -> ExecutionId {
    let id = env.submit(partition, json!({})).await;
    // One partition probed per call would miss it; a whole-window scheduler finds it.
    let got = env.claim_and_lease("inst-1", &[]).await;
    assert_eq!(got.as_ref(), Some(&id));
    id
}

async fn ownership(backend: &Arc<dyn EngineBackend>, id: &ExecutionId) -> Option<OwnershipState> {
    backend.describe_execution(id).await.ok().flatten().map(|s| s.state.ownership_state)
}

async fn eligibility(backend: &Arc<dyn EngineBackend>, id: &ExecutionId) -> Option<EligibilityState> {
    backend.describe_execution(id).await.ok().flatten().map(|s| s.state.eligibility_state)
}

async fn stop(runtime: ScannerRuntime) {
    let stopped = tokio::time::timeout(Duration::from_millis(SHUTDOWN_MS_MAX), runtime.shutdown()).await;
    assert!(stopped.is_ok(), "shutdown took longer than {SHUTDOWN_MS_MAX} ms");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn runtime_marks_an_expired_lease() {
    let env = Env::new(4);
    let id = leased(&env, 2).await;
    let runtime = must(ScannerRuntime::start(env.backend.clone(), fast_config()), "start");
    env.clock.advance(LEASE_TTL_MS + 1);
    let backend = env.backend.clone();
    let marked = eventually(Duration::from_millis(OBSERVE_MS_MAX), || {
        let (backend, id) = (backend.clone(), id.clone());
        async move { ownership(&backend, &id).await == Some(OwnershipState::LeaseExpiredReclaimable) }
    })
    .await;
    assert!(marked, "lease never marked expired; state {:?}", env.state(&id).await);
    assert!(runtime.cycles_completed(ScannerKind::LeaseExpiry) >= 1);
    stop(runtime).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn runtime_promotes_a_due_delayed_execution() {
    let env = Env::new(4);
    let until = env.clock.now_ms() + 5_000;
    let id = env.submit_at(1, json!({}), Some(until)).await;
    assert_eq!(env.state(&id).await.eligibility_state, EligibilityState::NotEligibleUntilTime);
    let runtime = must(ScannerRuntime::start(env.backend.clone(), fast_config()), "start");
    env.clock.advance(5_001);
    let backend = env.backend.clone();
    let promoted = eventually(Duration::from_millis(OBSERVE_MS_MAX), || {
        let (backend, id) = (backend.clone(), id.clone());
        async move { eligibility(&backend, &id).await == Some(EligibilityState::EligibleNow) }
    })
    .await;
    assert!(promoted, "never promoted; state {:?}", env.state(&id).await);
    stop(runtime).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn runtime_keeps_going_past_a_failing_partition() {
    let base = Env::new(4);
    let faulty = Faults::wrap(base.backend.clone());
    let env = base.rewired(faulty.clone());
    faulty.layer().fail_scanner_partition(0);
    let id = leased(&env, 3).await;
    let runtime = must(ScannerRuntime::start(env.backend.clone(), fast_config()), "start");
    env.clock.advance(LEASE_TTL_MS + 1);
    let backend = env.backend.clone();
    let marked = eventually(Duration::from_millis(OBSERVE_MS_MAX), || {
        let (backend, id) = (backend.clone(), id.clone());
        async move { ownership(&backend, &id).await == Some(OwnershipState::LeaseExpiredReclaimable) }
    })
    .await;
    assert!(marked, "a failing partition stopped the pass");
    // The pass still completes (errors are logged), so the cycle counter moves on.
    let runtime_ref = &runtime;
    let cycled = eventually(Duration::from_millis(OBSERVE_MS_MAX), || async move {
        runtime_ref.cycles_completed(ScannerKind::LeaseExpiry) >= 2
    })
    .await;
    assert!(cycled);
    stop(runtime).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_interrupts_long_sleeps() {
    let env = Env::new(4);
    let config = ScannerRuntimeConfig {
        intervals: ScannerIntervals::uniform(Duration::from_secs(3_600)),
        ..ScannerRuntimeConfig::default()
    };
    let runtime = must(ScannerRuntime::start(env.backend.clone(), config), "start");
    let runtime_ref = &runtime;
    let first_pass = eventually(Duration::from_millis(OBSERVE_MS_MAX), || async move {
        ScannerKind::ALL.iter().all(|k| runtime_ref.cycles_completed(*k) >= 1)
    })
    .await;
    assert!(first_pass, "not every scanner finished its first pass");
    stop(runtime).await;
}

#[test]
fn start_outside_tokio_is_a_typed_error() {
    let env = Env::new(1);
    let got = ScannerRuntime::start(env.backend.clone(), ScannerRuntimeConfig::default());
    assert!(matches!(got, Err(ff_core::EngineError::Unavailable { .. })));
}

/// Builds the same world twice and returns each world's pass reports and final dump.
async fn scripted_run() -> (Vec<std::collections::BTreeMap<ScannerKind, ScanReport>>, String) {
    let env = Env::new(4);
    leased(&env, 2).await;
    let until = env.clock.now_ms() + 3_000;
    env.submit_at(3, json!({}), Some(until)).await;
    let mut reports = Vec::new();
    reports.push(must(run_all_once(env.backend.as_ref(), 50).await, "pass before"));
    env.clock.advance(5_000);
    reports.push(must(run_all_once(env.backend.as_ref(), 50).await, "pass due"));
    reports.push(must(run_all_once(env.backend.as_ref(), 50).await, "pass after"));
    (reports, env.dump())
}

#[tokio::test]
async fn run_all_once_is_one_deterministic_pass() {
    let (reports, dump) = scripted_run().await;
    let acted = |i: usize, k: ScannerKind| reports[i].get(&k).map(|r| r.acted);
    for kind in ScannerKind::ALL.iter().copied() {
        assert!(reports[0].contains_key(&kind), "{kind:?} missing from the report");
        assert_eq!(acted(0, kind), Some(0), "{kind:?} acted before anything was due");
        assert_eq!(acted(2, kind), Some(0), "{kind:?} acted twice");
    }
    assert_eq!(acted(1, ScannerKind::LeaseExpiry), Some(1));
    assert_eq!(acted(1, ScannerKind::DelayedPromoter), Some(1));

    let (again, dump_again) = scripted_run().await;
    assert_eq!(reports, again);
    assert_eq!(dump, dump_again);
}

#[tokio::test]
async fn run_all_once_reports_a_failing_partition() {
    let base = Env::new(4);
    let faulty = Faults::wrap(base.backend.clone());
    faulty.layer().fail_scanner_partition(1);
    let got = run_all_once(faulty.as_ref(), 50).await;
    assert!(got.is_err(), "{got:?}");
}
