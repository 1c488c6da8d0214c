//! Mechanics shared by the transitions (spec 01 §5): loading, fencing, lease
//! release, expiry marking, stream closing, publication and scoring.

use ff_core::error::{ContentionKind, StateKind};
use ff_core::state::{
    AttemptState, BlockingReason, EligibilityState, LifecyclePhase, OwnershipState, PublicState,
};
use ff_core::{AttemptIndex, CancelSource, EngineError, ExecutionId, LaneId, LeaseFence, TimestampMs};

use crate::records::{ExecCore, IndexKey, LaneIndex, LeaseRecord};
use crate::store::{Store, StoreResult};

/// Score multiplier per priority step (spec 01 §11.1).
pub const PRIORITY_SCORE_STEP_MS: i64 = 1_000_000_000_000;
/// Suspended-index score when there is no timeout.
pub const SUSPENDED_NO_TIMEOUT_SCORE: i64 = 9_999_999_999_999;
/// Lease-history events kept per execution.
pub const LEASE_HISTORY_LEN_MAX: usize = 1000;

/// The eligible-index score: higher priority first, then FIFO.
pub fn priority_score(priority: i32, created_at: TimestampMs) -> i64 {
    created_at - i64::from(priority) * PRIORITY_SCORE_STEP_MS
}

/// Clamps a priority to `[0, 9000]`.
pub fn clamp_priority(p: i32) -> i32 {
    p.clamp(ff_core::contracts::PRIORITY_MIN, ff_core::contracts::PRIORITY_MAX)
}

/// Loads an execution or fails with `execution_not_found`.
pub fn load(store: &dyn Store, id: &ExecutionId) -> StoreResult<ExecCore> {
    store.get_exec(id)?.ok_or_else(EngineError::execution_not_found)
}

/// The `execution_not_active` error carrying the four reconciliation slots.
pub fn not_active(core: &ExecCore) -> EngineError {
    EngineError::Contention(ContentionKind::ExecutionNotActive {
        terminal_outcome: core.state.terminal_outcome.as_str().to_owned(),
        lease_epoch: core.current_lease_epoch.to_string(),
        lifecycle_phase: core.state.lifecycle_phase.as_str().to_owned(),
        attempt_id: core.current_attempt_id.map(|a| a.to_string()).unwrap_or_default(),
    })
}

/// A lane index key of the execution's submission lane.
pub fn lane_key(core: &ExecCore, kind: LaneIndex) -> IndexKey {
    IndexKey::lane(&core.execution_id, &core.lane_id, kind)
}

/// A lane index key for an id and lane.
pub fn lane_key_of(id: &ExecutionId, lane: &LaneId, kind: LaneIndex) -> IndexKey {
    IndexKey::lane(id, lane, kind)
}

/// Sets the state vector and both timestamps.
pub fn transition(core: &mut ExecCore, state: ff_core::StateVector, now: TimestampMs) {
    core.state = state;
    core.last_transition_at = now;
    core.last_mutation_at = now;
}

/// Resolves the caller's fence per spec 01 §5.3 (terminal-style ops allow the override).
pub fn resolve_fence(
    core: &ExecCore,
    fence: &Option<LeaseFence>,
    source: &CancelSource,
    allow_override: bool,
) -> Result<Option<LeaseFence>, EngineError> {
    match fence {
        Some(f) => Ok(Some(f.clone())),
        None if allow_override && source.is_override() => {
            // The operator stands in for the holder: compare the stored triple with itself.
            Ok(match (core.current_lease_id, core.current_attempt_id) {
                (Some(lease_id), Some(attempt_id)) => {
                    Some(LeaseFence { lease_id, lease_epoch: core.current_lease_epoch, attempt_id })
                }
                _ => None,
            })
        }
        None => Err(EngineError::invalid_input("fence_required")),
    }
}

/// Lease validation with expiry marking (spec 01 §5.3). An expired lease is
/// marked (written) before `lease_expired` is returned.
pub fn validate_lease_and_mark(
    store: &mut dyn Store,
    core: &mut ExecCore,
    fence: Option<&LeaseFence>,
    now: TimestampMs,
) -> StoreResult<()> {
    if core.state.lifecycle_phase != LifecyclePhase::Active {
        return Err(not_active(core));
    }
    if core.state.ownership_state == OwnershipState::LeaseRevoked {
        return Err(EngineError::State(StateKind::LeaseRevoked));
    }
    if core.lease_expires_at.unwrap_or(0) <= now {
        mark_expired(store, core, now)?;
        store.put_exec(core)?;
        return Err(EngineError::State(StateKind::LeaseExpired));
    }
    check_fence_identity(core, fence)
}

/// Steps 4–6 of lease validation: lease id, epoch, attempt id.
pub fn check_fence_identity(core: &ExecCore, fence: Option<&LeaseFence>) -> StoreResult<()> {
    let Some(f) = fence else {
        // Operator override on an execution without a stored triple.
        return Err(EngineError::State(StateKind::StaleLease));
    };
    if core.current_lease_id != Some(f.lease_id)
        || core.current_lease_epoch != f.lease_epoch
        || core.current_attempt_id != Some(f.attempt_id)
    {
        return Err(EngineError::State(StateKind::StaleLease));
    }
    Ok(())
}

/// Marks a lease expired (spec 01 §5.4); the caller writes `core`.
pub fn mark_expired(store: &mut dyn Store, core: &mut ExecCore, now: TimestampMs) -> StoreResult<()> {
    if core.state.ownership_state == OwnershipState::LeaseExpiredReclaimable {
        return Ok(());
    }
    core.state.ownership_state = OwnershipState::LeaseExpiredReclaimable;
    core.state.blocking_reason = BlockingReason::WaitingForWorker;
    core.state.blocking_detail = "lease expired, awaiting reclaim".to_owned();
    core.state.attempt_state = AttemptState::AttemptInterrupted;
    core.state.public_state = PublicState::Active;
    core.lease_expired_at = Some(now);
    core.last_mutation_at = now;
    let fields = vec![
        ("lease_id", opt(core.current_lease_id)),
        ("lease_epoch", core.current_lease_epoch.to_string()),
        ("attempt_index", opt(core.current_attempt_index)),
        ("attempt_id", opt(core.current_attempt_id)),
        ("worker_id", opt(core.current_worker_id.as_ref())),
        ("worker_instance_id", opt(core.current_worker_instance_id.as_ref())),
    ];
    store.append_lease_event(&core.execution_id, "expired", now, fields)?;
    if let Some(idx) = core.current_attempt_index {
        close_stream_meta(store, &core.execution_id, idx, "lease_expired", now, false)?;
    }
    Ok(())
}

/// Renders an optional value as its string, or `""`.
pub fn opt<T: ToString>(v: Option<T>) -> String {
    v.map(|x| x.to_string()).unwrap_or_default()
}

/// Closes an attempt's stream meta if it exists (spec 01 §5.7).
pub fn close_stream_meta(
    store: &mut dyn Store,
    id: &ExecutionId,
    index: AttemptIndex,
    reason: &str,
    now: TimestampMs,
    overwrite: bool,
) -> StoreResult<()> {
    let Some(mut meta) = store.get_stream_meta(id, index)? else {
        return Ok(());
    };
    if meta.closed_at.is_some() && !overwrite {
        return Ok(());
    }
    meta.closed_at = Some(now);
    meta.closed_reason = Some(reason.to_owned());
    store.put_stream_meta(id, index, &meta)
}

/// Releases the lease (spec 01 §5.1): record, indexes, core fields, `released` event.
pub fn release_lease(
    store: &mut dyn Store,
    core: &mut ExecCore,
    reason: &str,
    now: TimestampMs,
    with_attempt_id: bool,
) -> StoreResult<()> {
    let id = core.execution_id.clone();
    let p = id.partition_index();
    store.delete_lease(&id)?;
    store.index_remove(&IndexKey::LeaseExpiry(p), id.as_str())?;
    if let Some(inst) = &core.current_worker_instance_id {
        store.index_remove(&IndexKey::WorkerLeases(p, inst.clone()), id.as_str())?;
    }
    store.index_remove(&lane_key(core, LaneIndex::Active), id.as_str())?;
    store.index_remove(&IndexKey::AttemptTimeout(p), id.as_str())?;
    let mut fields = vec![
        ("lease_id", opt(core.current_lease_id)),
        ("lease_epoch", core.current_lease_epoch.to_string()),
        ("attempt_index", opt(core.current_attempt_index)),
    ];
    if with_attempt_id {
        fields.push(("attempt_id", opt(core.current_attempt_id)));
    }
    fields.push(("reason", reason.to_owned()));
    store.append_lease_event(&id, "released", now, fields)?;
    clear_lease_fields(core);
    Ok(())
}

/// Clears the holder and lease-timing fields on the core.
pub fn clear_lease_fields(core: &mut ExecCore) {
    core.current_lease_id = None;
    core.current_worker_id = None;
    core.current_worker_instance_id = None;
    core.lease_expires_at = None;
    core.lease_last_renewed_at = None;
    core.lease_renewal_deadline = None;
}

/// Publishes a completion event for a flow member that just became terminal
/// (spec 01 §5.5) and runs the completion cascade in the same step, so its
/// children are promoted or skipped at once (spec 03 §2.5).
pub fn publish_if_flow(
    store: &mut dyn Store,
    core: &ExecCore,
    outcome: &str,
    now: TimestampMs,
) -> StoreResult<()> {
    match &core.flow_id {
        Some(flow) if !flow.is_empty() => {
            store.publish_completion(&core.execution_id, flow, outcome, now)?;
            // The cascade reads the upstream's stored terminal state.
            store.put_exec(core)?;
            crate::flow::cascade(store, now, &core.execution_id).map(|_| ())
        }
        _ => Ok(()),
    }
}

/// Removes the execution from every runnable lane index of its lane.
pub fn remove_from_runnable_indexes(store: &mut dyn Store, core: &ExecCore) -> StoreResult<()> {
    for kind in LaneIndex::RUNNABLE {
        store.index_remove(&lane_key(core, kind), core.execution_id.as_str())?;
    }
    Ok(())
}

/// The lane index a runnable eligibility state lives in.
pub fn runnable_index(e: EligibilityState) -> Option<LaneIndex> {
    Some(match e {
        EligibilityState::EligibleNow => LaneIndex::Eligible,
        EligibilityState::NotEligibleUntilTime => LaneIndex::Delayed,
        EligibilityState::BlockedByDependencies => LaneIndex::BlockedDependencies,
        EligibilityState::BlockedByBudget => LaneIndex::BlockedBudget,
        EligibilityState::BlockedByQuota => LaneIndex::BlockedQuota,
        EligibilityState::BlockedByRoute => LaneIndex::BlockedRoute,
        EligibilityState::BlockedByOperator => LaneIndex::BlockedOperator,
        EligibilityState::BlockedByLaneState | EligibilityState::NotApplicable => return None,
    })
}

/// Adds the execution to its lane's eligible index with its priority score.
pub fn add_eligible(store: &mut dyn Store, core: &ExecCore) -> StoreResult<()> {
    let score = priority_score(core.priority, core.created_at);
    store.index_add(&lane_key(core, LaneIndex::Eligible), core.execution_id.as_str(), score)
}

/// The new lease record of an acquisition.
pub struct Acquisition<'a> {
    /// Lease id.
    pub lease_id: ff_core::LeaseId,
    /// Attempt id the lease runs.
    pub attempt_id: ff_core::AttemptId,
    /// Holder.
    pub worker_id: &'a ff_core::WorkerId,
    /// Holder instance.
    pub worker_instance_id: &'a ff_core::WorkerInstanceId,
    /// TTL.
    pub lease_ttl_ms: u64,
    /// Renewal deadline offset.
    pub renew_before_ms: u64,
}

/// Writes a new lease (record, core fields, lease indexes) at epoch + 1; returns the expiry.
pub fn acquire_lease(
    store: &mut dyn Store,
    core: &mut ExecCore,
    a: &Acquisition<'_>,
    now: TimestampMs,
) -> StoreResult<TimestampMs> {
    let id = core.execution_id.clone();
    let p = id.partition_index();
    let epoch = core.current_lease_epoch + 1;
    let expires = now.saturating_add(i64::try_from(a.lease_ttl_ms).unwrap_or(i64::MAX));
    let deadline = now.saturating_add(i64::try_from(a.renew_before_ms).unwrap_or(i64::MAX));
    store.put_lease(&LeaseRecord {
        lease_id: a.lease_id,
        lease_epoch: epoch,
        execution_id: id.clone(),
        attempt_id: a.attempt_id,
        worker_id: a.worker_id.clone(),
        worker_instance_id: a.worker_instance_id.clone(),
        acquired_at: now,
        expires_at: expires,
        last_renewed_at: now,
        renewal_deadline: deadline,
        record_expires_at: None,
    })?;
    core.current_lease_id = Some(a.lease_id);
    core.current_lease_epoch = epoch;
    core.current_attempt_id = Some(a.attempt_id);
    core.current_worker_id = Some(a.worker_id.clone());
    core.current_worker_instance_id = Some(a.worker_instance_id.clone());
    core.lease_acquired_at = Some(now);
    core.lease_last_renewed_at = Some(now);
    core.lease_expires_at = Some(expires);
    core.lease_renewal_deadline = Some(deadline);
    store.index_add(&IndexKey::LeaseExpiry(p), id.as_str(), expires)?;
    store.index_add(&IndexKey::WorkerLeases(p, a.worker_instance_id.clone()), id.as_str(), 0)?;
    store.index_add(&lane_key(core, LaneIndex::Active), id.as_str(), expires)?;
    Ok(expires)
}

/// `floor(ttl × 2 / 3)`: the renewal deadline offset.
pub fn two_thirds(ttl_ms: u64) -> u64 {
    ttl_ms / 3 * 2 + (ttl_ms % 3) * 2 / 3
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn score_orders_priority_then_fifo() {
        assert!(priority_score(5, 2000) < priority_score(0, 1000));
        assert!(priority_score(0, 1000) < priority_score(0, 2000));
        assert_eq!(priority_score(9000, 0), -9_000_000_000_000_000);
    }

    #[test]
    fn two_thirds_floors() {
        for ttl in [0u64, 1, 2, 3, 10, 30_000, 29_999, 100] {
            assert_eq!(two_thirds(ttl), ttl * 2 / 3, "{ttl}");
        }
    }

    #[test]
    fn clamp() {
        assert_eq!(clamp_priority(-5), 0);
        assert_eq!(clamp_priority(9001), 9000);
        assert_eq!(clamp_priority(42), 42);
    }
}
