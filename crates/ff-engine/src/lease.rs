//! Lease contracts: renew, mark expired, revoke, list expired (spec 01 §6.12–6.14, §8).

use ff_core::contracts::*;
use ff_core::error::{ContentionKind, StateKind};
use ff_core::state::{AttemptState, BlockingReason, LifecyclePhase, OwnershipState};
use ff_core::{EngineError, ExecutionId, TimestampMs};

use crate::common::*;
use crate::records::{ExecCore, IndexKey};
use crate::store::{Store, StoreResult};

fn ms(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

/// `ff_renew_lease` (spec 01 §6.12).
pub fn renew_lease(
    store: &mut dyn Store,
    now: TimestampMs,
    args: &RenewLeaseArgs,
) -> StoreResult<LeaseRenewal> {
    args.validate()?;
    let mut core = load(store, &args.execution_id)?;
    let Some(fence) = &args.fence else {
        return Err(EngineError::invalid_input("fence_required"));
    };
    if core.state.lifecycle_phase != LifecyclePhase::Active {
        return Err(not_active(&core));
    }
    if core.state.ownership_state == OwnershipState::LeaseRevoked || core.lease_revoked_at.is_some() {
        return Err(EngineError::State(StateKind::LeaseRevoked));
    }
    if core.lease_expires_at.unwrap_or(0) <= now {
        mark_expired(store, &mut core, now)?;
        store.put_exec(&core)?;
        return Err(EngineError::State(StateKind::LeaseExpired));
    }
    if core.current_attempt_index != Some(args.attempt_index) {
        return Err(EngineError::State(StateKind::StaleLease));
    }
    check_fence_identity(&core, Some(fence))?;
    let expires = now.saturating_add(ms(args.lease_ttl_ms));
    let deadline = now.saturating_add(ms(two_thirds(args.lease_ttl_ms)));
    if let Some(mut lease) = store.get_lease(&args.execution_id)? {
        lease.last_renewed_at = now;
        lease.renewal_deadline = deadline;
        lease.expires_at = expires;
        lease.record_expires_at = Some(expires.saturating_add(ms(args.lease_history_grace_ms)));
        store.put_lease(&lease)?;
    }
    core.lease_last_renewed_at = Some(now);
    core.lease_renewal_deadline = Some(deadline);
    core.lease_expires_at = Some(expires);
    core.last_mutation_at = now;
    let p = args.execution_id.partition_index();
    store.index_add(&IndexKey::LeaseExpiry(p), args.execution_id.as_str(), expires)?;
    store.put_exec(&core)?;
    Ok(LeaseRenewal { expires_at_ms: expires, lease_epoch: core.current_lease_epoch })
}

fn satisfied(reason: &str) -> MarkLeaseExpiredOutcome {
    MarkLeaseExpiredOutcome::AlreadySatisfied { reason: reason.to_owned() }
}

/// `ff_mark_lease_expired_if_due` (spec 01 §6.13).
pub fn mark_lease_expired_if_due(
    store: &mut dyn Store,
    now: TimestampMs,
    id: &ExecutionId,
) -> StoreResult<MarkLeaseExpiredOutcome> {
    let expiry = IndexKey::LeaseExpiry(id.partition_index());
    let Some(mut core) = store.get_exec(id)? else {
        store.index_remove(&expiry, id.as_str())?;
        return Ok(satisfied("execution_not_found"));
    };
    if core.state.lifecycle_phase != LifecyclePhase::Active {
        store.index_remove(&expiry, id.as_str())?;
        return Ok(satisfied("not_active"));
    }
    match core.state.ownership_state {
        OwnershipState::LeaseExpiredReclaimable => return Ok(satisfied("already_expired")),
        OwnershipState::LeaseRevoked => return Ok(satisfied("already_revoked")),
        OwnershipState::Unowned => {
            store.index_remove(&expiry, id.as_str())?;
            return Ok(satisfied("unowned"));
        }
        OwnershipState::Leased => {}
    }
    if core.lease_expires_at.unwrap_or(0) > now {
        return Ok(satisfied("not_yet_expired"));
    }
    mark_expired(store, &mut core, now)?;
    store.put_exec(&core)?;
    Ok(MarkLeaseExpiredOutcome::MarkedExpired)
}

/// `ff_revoke_lease` (spec 01 §6.14).
pub fn revoke_lease(
    store: &mut dyn Store,
    now: TimestampMs,
    args: &RevokeLeaseArgs,
) -> StoreResult<RevokeLeaseOutcome> {
    args.validate()?;
    let mut core = load(store, &args.execution_id)?;
    if core.state.lifecycle_phase != LifecyclePhase::Active {
        return Err(not_active(&core));
    }
    match core.state.ownership_state {
        OwnershipState::LeaseRevoked => {
            return Ok(RevokeLeaseOutcome::AlreadySatisfied { reason: "already_revoked".into() });
        }
        OwnershipState::LeaseExpiredReclaimable => {
            return Ok(RevokeLeaseOutcome::AlreadySatisfied { reason: "already_expired".into() });
        }
        OwnershipState::Unowned => return Err(EngineError::Contention(ContentionKind::NoActiveLease)),
        OwnershipState::Leased => {}
    }
    if let Some(expected) = args.expected_lease_id
        && core.current_lease_id != Some(expected)
    {
        return Err(EngineError::State(StateKind::StaleLease));
    }
    let (Some(lease_id), epoch) = (core.current_lease_id, core.current_lease_epoch) else {
        return Err(EngineError::Contention(ContentionKind::NoActiveLease));
    };
    let reason = if args.reason.is_empty() { "operator" } else { args.reason.as_str() };
    apply_revoke(store, &mut core, reason, now)?;
    Ok(RevokeLeaseOutcome::Revoked { lease_id, lease_epoch: epoch })
}

fn apply_revoke(
    store: &mut dyn Store,
    core: &mut ExecCore,
    reason: &str,
    now: TimestampMs,
) -> StoreResult<()> {
    let id = core.execution_id.clone();
    let p = id.partition_index();
    core.state.ownership_state = OwnershipState::LeaseRevoked;
    core.state.blocking_reason = BlockingReason::WaitingForWorker;
    core.state.blocking_detail = format!("lease revoked: {reason}");
    core.state.attempt_state = AttemptState::AttemptInterrupted;
    core.lease_revoked_at = Some(now);
    core.lease_revoke_reason = Some(reason.to_owned());
    core.last_mutation_at = now;
    store.delete_lease(&id)?;
    store.index_remove(&IndexKey::LeaseExpiry(p), id.as_str())?;
    if let Some(inst) = &core.current_worker_instance_id {
        store.index_remove(&IndexKey::WorkerLeases(p, inst.clone()), id.as_str())?;
    }
    let fields = vec![
        ("lease_id", opt(core.current_lease_id)),
        ("lease_epoch", core.current_lease_epoch.to_string()),
        ("attempt_index", opt(core.current_attempt_index)),
        ("attempt_id", opt(core.current_attempt_id)),
        ("worker_id", opt(core.current_worker_id.as_ref())),
        ("worker_instance_id", opt(core.current_worker_instance_id.as_ref())),
        ("reason", reason.to_owned()),
    ];
    store.append_lease_event(&id, "revoked", now, fields)?;
    store.put_exec(core)
}

/// `list_expired_leases` (spec 01 §8.5): every partition, `(expires_at_ms, id)` order.
pub fn list_expired_leases(
    store: &mut dyn Store,
    _now: TimestampMs,
    args: &ListExpiredLeasesArgs,
) -> StoreResult<ExpiredLeasesPage> {
    args.validate()?;
    let partitions = store.partition_config().num_flow_partitions;
    let after = args.after.as_ref().map(|(t, id)| (*t, id.as_str().to_owned()));
    let mut candidates: Vec<(i64, String)> = Vec::new();
    for p in 0..partitions {
        // Entries strictly after the cursor in (score, member) order form the next page.
        let start = after.as_ref().map(|(t, s)| (*t, s.as_str()));
        candidates.extend(store.index_range(&IndexKey::LeaseExpiry(p), start, args.as_of, args.limit + 1)?);
    }
    candidates.sort();
    let more = candidates.len() > args.limit;
    let mut entries = Vec::with_capacity(args.limit.min(candidates.len()));
    let mut last_seen = None;
    for (expires, member) in candidates.into_iter().take(args.limit) {
        let id = ExecutionId::parse(&member)
            .map_err(|e| EngineError::protocol("engine", format!("lease_expiry member {member}: {e}")))?;
        last_seen = Some((expires, id.clone()));
        let Some(core) = store.get_exec(&id)? else { continue };
        let (Some(lease_id), Some(inst)) = (core.current_lease_id, core.current_worker_instance_id.clone())
        else {
            continue;
        };
        entries.push(ExpiredLeaseInfo {
            execution_id: id,
            lease_id,
            lease_epoch: core.current_lease_epoch,
            worker_instance_id: inst,
            expires_at_ms: expires,
            attempt_index: core.current_attempt_index.unwrap_or(0),
        });
    }
    let cursor = if more { last_seen } else { None };
    Ok(ExpiredLeasesPage { entries, cursor })
}
