//! The kit can fail: deliberately broken backends are caught.

use std::sync::Arc;

use ff_conformance::tamper::{Tamper, TamperMode};
use ff_conformance::{Fixture, Group, Options, Status, run};
use ff_core::{ContractFamily, EngineBackend};

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().expect("runtime")
}

fn broken(mode: TamperMode) -> impl Fn() -> std::future::Ready<Fixture> + Send + Sync + 'static {
    move || {
        let inner = ff_conformance::memory_fixture();
        let backend: Arc<dyn EngineBackend> = Arc::new(Tamper::new(inner.backend.clone(), mode));
        let mut f = Fixture::new(backend);
        f.clock = inner.clock.clone();
        std::future::ready(f)
    }
}

/// Runs `groups` against a broken backend; returns the names of failed cases.
fn failures(mode: TamperMode, groups: Vec<Group>) -> Vec<String> {
    let options = Options { groups, cases: 32, ..Options::default() };
    let report = rt().block_on(run(broken(mode), options));
    report
        .cases
        .iter()
        .filter(|c| matches!(c.status, Status::Failed(_)))
        .map(|c| format!("{}::{}", c.group, c.name))
        .collect()
}

#[test]
fn a_backend_without_epoch_fencing_is_caught() {
    let failed =
        failures(TamperMode::NoFencing, vec![Group::Golden, Group::Family(ContractFamily::Execution)]);
    assert!(
        failed.iter().any(|f| f == "golden::stale_epoch_can_never_complete_fail_or_renew"),
        "stale-epoch scenario did not fail: {failed:?}"
    );
    assert!(failed.iter().any(|f| f == "execution::terminal_style_ops_codes"), "{failed:?}");
}

#[test]
fn a_backend_that_double_delivers_claims_is_caught() {
    let failed = failures(TamperMode::DoubleDelivery, vec![Group::QueueAnomalies]);
    assert_eq!(failed, vec!["queue_anomalies::concurrent_claim_complete_has_no_anomalies".to_owned()]);
}

#[test]
fn a_backend_that_ignores_capabilities_is_caught() {
    let failed = failures(
        TamperMode::IgnoreCapabilities,
        vec![Group::Golden, Group::Family(ContractFamily::Scheduling)],
    );
    assert!(
        failed.iter().any(|f| f == "golden::capability_mismatch_blocks_route_until_capable_worker"),
        "{failed:?}"
    );
    assert!(failed.iter().any(|f| f == "scheduling::grant_priority_and_block_codes"), "{failed:?}");
}

#[test]
fn a_backend_that_ignores_hard_budgets_is_caught() {
    let failed =
        failures(TamperMode::IgnoreHardBudget, vec![Group::Golden, Group::Family(ContractFamily::Budgets)]);
    assert!(failed.iter().any(|f| f == "budgets::report_usage_outcomes"), "{failed:?}");
    assert!(failed.iter().any(|f| f == "golden::budget_hard_breach_during_running_attempt"), "{failed:?}");
}

#[test]
fn the_memory_backend_passes_the_whole_kit() {
    let report = rt().block_on(run(|| async { ff_conformance::memory_fixture() }, Options::default()));
    assert_eq!(report.failed, 0, "{}", report.table());
    assert!(report.passed >= 20, "{}", report.table());
    assert_eq!(report.skipped, 0, "{}", report.table());
    assert_eq!(report.clock, ff_conformance::ClockMode::Simulated);
    assert!(report.cases.iter().all(|c| !c.real_time), "a simulated run reported real-time cases");
}
