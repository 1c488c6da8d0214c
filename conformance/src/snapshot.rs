//! Store snapshots and invariants read through the trait alone, for backends
//! that offer no deeper inspection.

use std::fmt::Write;

use ff_core::state::{EligibilityState, OwnershipState};
use ff_core::{EngineBackend, ExecutionId, PublicState};

/// Most executions one snapshot reads per partition.
pub const SNAPSHOT_EXECUTIONS_MAX: usize = 10_000;

/// Every execution of the first `partitions` partitions, with its read model,
/// lease history and result, in a deterministic text form.
pub async fn read_all(b: &dyn EngineBackend, partitions: u16) -> String {
    let mut out = String::new();
    for id in list_ids(b, partitions).await {
        let snap = b.describe_execution(&id).await;
        let history = b.read_lease_history(&id).await.map(|h| h.len());
        let result = b.get_execution_result(&id).await;
        let _ = writeln!(out, "{id} {snap:?} history={history:?} result={result:?}");
    }
    out
}

/// Execution ids of the first `partitions` partitions.
pub async fn list_ids(b: &dyn EngineBackend, partitions: u16) -> Vec<ExecutionId> {
    let mut ids = Vec::new();
    for p in 0..partitions {
        let mut after = None;
        while ids.len() < SNAPSHOT_EXECUTIONS_MAX {
            let Ok(page) = b.list_executions(p, after.clone(), 500).await else { break };
            let Some(last) = page.last().cloned() else { break };
            ids.extend(page);
            after = Some(last);
        }
    }
    ids
}

/// State invariants visible through the trait (spec 01 §4.4): violations as text.
pub async fn check_invariants(b: &dyn EngineBackend, ids: &[ExecutionId]) -> Vec<String> {
    let mut out = Vec::new();
    for id in ids {
        let Ok(Some(s)) = b.describe_execution(id).await else { continue };
        if let Some(v) = s.state.invariant_violation() {
            out.push(format!("{id}: {v}"));
        }
        let admission_block = s.public_state == PublicState::RateLimited
            && matches!(
                s.state.eligibility_state,
                EligibilityState::BlockedByRoute
                    | EligibilityState::BlockedByOperator
                    | EligibilityState::BlockedByLaneState
            );
        if !s.state.is_consistent() && !admission_block {
            out.push(format!("{id}: public state {} inconsistent", s.public_state));
        }
        let leased = s.state.ownership_state == OwnershipState::Leased;
        if leased != s.current_lease.is_some() {
            out.push(format!("{id}: leased={leased} but lease present={}", s.current_lease.is_some()));
        }
        if let Some(l) = &s.current_lease
            && l.lease_epoch != s.lease_epoch
        {
            out.push(format!("{id}: lease epoch {} != execution epoch {}", l.lease_epoch, s.lease_epoch));
        }
        if s.public_state.is_terminal() && s.completed_at.is_none() {
            out.push(format!("{id}: terminal without completed_at"));
        }
    }
    out
}
