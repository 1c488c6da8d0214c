//! Lease contracts: renew, mark expired, revoke, list expired (spec 01 §6.12–6.14, §8).
//!
//! Each function is validate → load → check → apply → index → reply. The only
//! write before a failing check is renew's expiry marking (spec 01 §5.6).

use ff_core::contracts::*;
use ff_core::error::{ContentionKind, StateKind};
use ff_core::state::{
    AttemptState, BlockingReason, LifecyclePhase, OwnershipState, PublicState, TerminalOutcome,
};
use ff_core::{AttemptIndex, EngineError, ExecutionId, LeaseFence, TimestampMs};

use crate::common::*;
use crate::records::{ExecCore, IndexKey};
use crate::store::{Store, StoreResult};

/// Revocation reason when the caller gives none (spec 01 §6.14).
const REVOKE_REASON_DEFAULT: &str = "operator";

/// A caller duration in ms as a timestamp offset (saturating).
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
    check_renewable(store, &mut core, args.attempt_index, fence, now)?;
    let expires = now.saturating_add(ms(args.lease_ttl_ms));
    let deadline = now.saturating_add(ms(two_thirds(args.lease_ttl_ms)));
    let record_expires = expires.saturating_add(ms(args.lease_history_grace_ms));
    if let Some(mut lease) = store.get_lease(&args.execution_id)? {
        lease.last_renewed_at = now;
        lease.renewal_deadline = deadline;
        lease.expires_at = expires;
        lease.record_expires_at = Some(record_expires);
        store.put_lease(&lease)?;
    }
    core.lease_last_renewed_at = Some(now);
    core.lease_renewal_deadline = Some(deadline);
    core.lease_expires_at = Some(expires);
    core.last_mutation_at = now;
    // Only `lease_expiry` is re-scored; the lane `active` score keeps the acquisition expiry.
    let p = args.execution_id.partition_index();
    store.index_add(&IndexKey::LeaseExpiry(p), args.execution_id.as_str(), expires)?;
    store.put_exec(&core)?;
    Ok(LeaseRenewal { expires_at_ms: expires, lease_epoch: core.current_lease_epoch })
}

/// Checks 5–11 of spec 01 §6.12 in order; an overdue lease is marked expired
/// (the intentional §5.6 write) before `lease_expired` is returned.
fn check_renewable(
    store: &mut dyn Store,
    core: &mut ExecCore,
    attempt_index: AttemptIndex,
    fence: &LeaseFence,
    now: TimestampMs,
) -> StoreResult<()> {
    if core.state.lifecycle_phase != LifecyclePhase::Active {
        return Err(not_active(core));
    }
    if core.state.ownership_state == OwnershipState::LeaseRevoked || core.lease_revoked_at.is_some() {
        return Err(EngineError::State(StateKind::LeaseRevoked));
    }
    if core.lease_expires_at.unwrap_or(0) <= now {
        mark_expired(store, core, now)?;
        store.put_exec(core)?;
        return Err(EngineError::State(StateKind::LeaseExpired));
    }
    if core.current_attempt_index != Some(attempt_index) {
        return Err(EngineError::State(StateKind::StaleLease));
    }
    // Rows 9–11: attempt id, lease id, epoch (all answer `stale_lease`).
    check_fence_identity(core, Some(fence))
}

fn satisfied(reason: &str) -> MarkLeaseExpiredOutcome {
    MarkLeaseExpiredOutcome::AlreadySatisfied { reason: reason.to_owned() }
}

/// `ff_mark_lease_expired_if_due` (spec 01 §6.13), the lease-expiry scanner hook.
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
        // Expired and revoked entries stay where they are: reclaim tooling reads them.
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

fn already(reason: &str) -> RevokeLeaseOutcome {
    RevokeLeaseOutcome::AlreadySatisfied { reason: reason.to_owned() }
}

/// `ff_revoke_lease` (spec 01 §6.14), operator revocation.
pub fn revoke_lease(
    store: &mut dyn Store,
    now: TimestampMs,
    args: &RevokeLeaseArgs,
) -> StoreResult<RevokeLeaseOutcome> {
    args.validate()?;
    let mut core = load(store, &args.execution_id)?;
    if let Some(done) = check_revocable(&core, args)? {
        return Ok(done);
    }
    let Some(lease_id) = core.current_lease_id else {
        return Err(EngineError::Contention(ContentionKind::NoActiveLease));
    };
    let lease_epoch = core.current_lease_epoch;
    let reason = if args.reason.is_empty() { REVOKE_REASON_DEFAULT } else { args.reason.as_str() };
    apply_revoke(store, &mut core, reason, now)?;
    Ok(RevokeLeaseOutcome::Revoked { lease_id, lease_epoch })
}

/// Checks 2–4 of spec 01 §6.14: `Ok(Some(_))` for the idempotent answers.
fn check_revocable(core: &ExecCore, args: &RevokeLeaseArgs) -> StoreResult<Option<RevokeLeaseOutcome>> {
    if core.state.lifecycle_phase != LifecyclePhase::Active {
        return Err(not_active(core));
    }
    match core.state.ownership_state {
        OwnershipState::LeaseRevoked => return Ok(Some(already("already_revoked"))),
        OwnershipState::LeaseExpiredReclaimable => return Ok(Some(already("already_expired"))),
        OwnershipState::Unowned => return Err(EngineError::Contention(ContentionKind::NoActiveLease)),
        OwnershipState::Leased => {}
    }
    if let Some(expected) = args.expected_lease_id
        && core.current_lease_id != Some(expected)
    {
        return Err(EngineError::State(StateKind::StaleLease));
    }
    // The expiry time is not consulted: an overdue but unmarked lease is revoked.
    Ok(None)
}

/// T9: ownership `lease_revoked`, lease record and lease indexes dropped, `revoked` event.
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
    core.state.terminal_outcome = TerminalOutcome::None;
    core.state.attempt_state = AttemptState::AttemptInterrupted;
    core.state.public_state = PublicState::Active;
    core.lease_revoked_at = Some(now);
    core.lease_revoke_reason = Some(reason.to_owned());
    core.last_mutation_at = now;
    // Holder fields and `lease_expires_at` keep their values; lane `active` is kept too.
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

/// `list_expired_leases` (spec 01 §8.5): `(expires_at_ms, id)` order over a window of partitions.
pub fn list_expired_leases(
    store: &mut dyn Store,
    _now: TimestampMs,
    args: &ListExpiredLeasesArgs,
) -> StoreResult<ExpiredLeasesPage> {
    args.validate()?;
    let candidates = expired_candidates(store, args)?;
    let more = candidates.len() > args.limit;
    let mut entries = Vec::with_capacity(args.limit.min(candidates.len()));
    let mut last_seen = None;
    for (expires, id) in candidates.into_iter().take(args.limit) {
        // The cursor follows candidates, not kept entries, so a page of skipped ones still advances.
        last_seen = Some((expires, id.clone()));
        if let Some(info) = expired_info(store, id, expires)? {
            entries.push(info);
        }
    }
    Ok(ExpiredLeasesPage { entries, cursor: if more { last_seen } else { None } })
}

/// The partitions one call reads: from the cursor's partition (0 without), wrapping.
fn partition_window(total: u16, args: &ListExpiredLeasesArgs) -> Vec<u16> {
    if total == 0 {
        return Vec::new();
    }
    let start = args.after.as_ref().map_or(0, |(_, id)| id.partition_index() % total);
    let count = args.max_partitions_per_call.min(total);
    (0..count)
        .map(|k| {
            let p = (u32::from(start) + u32::from(k)) % u32::from(total);
            u16::try_from(p).unwrap_or(0)
        })
        .collect()
}

/// Up to `limit + 1` due entries strictly after the cursor, merged in `(score, member)` order.
fn expired_candidates(
    store: &dyn Store,
    args: &ListExpiredLeasesArgs,
) -> StoreResult<Vec<(TimestampMs, ExecutionId)>> {
    let after = args.after.as_ref().map(|(t, id)| (*t, id.as_str()));
    let fetch = args.limit + 1;
    let mut merged: Vec<(i64, String)> = Vec::new();
    for p in partition_window(store.partition_config().num_flow_partitions, args) {
        merged.extend(store.index_range(&IndexKey::LeaseExpiry(p), after, args.as_of, fetch)?);
    }
    merged.sort();
    merged.retain(|(t, m)| after.is_none_or(|(at, aid)| (*t, m.as_str()) > (at, aid)));
    merged.truncate(fetch);
    merged
        .into_iter()
        .map(|(t, m)| {
            ExecutionId::parse(&m)
                .map(|id| (t, id))
                .map_err(|e| EngineError::protocol("engine", format!("lease_expiry member {m}: {e}")))
        })
        .collect()
}

/// The lease fields of one candidate; `None` when its lease id or holder is empty.
fn expired_info(
    store: &dyn Store,
    id: ExecutionId,
    expires: TimestampMs,
) -> StoreResult<Option<ExpiredLeaseInfo>> {
    let Some(core) = store.get_exec(&id)? else { return Ok(None) };
    let (Some(lease_id), Some(worker_instance_id)) = (core.current_lease_id, core.current_worker_instance_id)
    else {
        return Ok(None);
    };
    Ok(Some(ExpiredLeaseInfo {
        execution_id: id,
        lease_id,
        lease_epoch: core.current_lease_epoch,
        worker_instance_id,
        expires_at_ms: expires,
        attempt_index: core.current_attempt_index.unwrap_or(0),
    }))
}
