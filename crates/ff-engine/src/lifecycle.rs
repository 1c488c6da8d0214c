//! Lifecycle contracts: cancel, delay, wait children, reclaim, expire, tags,
//! replay, resumed claim and operator grant-and-claim (spec 01 §6.4–6.6,
//! §6.8–6.10, §6.21, §6.23–6.24).

use ff_core::contracts::*;
use ff_core::error::{ConflictKind, ContentionKind, StateKind, ValidationKind};
use ff_core::handle::HandleKind;
use ff_core::policy;
use ff_core::state::{
    AttemptLifecycle, AttemptState, BlockingReason, EligibilityState, LifecyclePhase, OwnershipState,
    StateVector, TerminalOutcome,
};
use ff_core::{BackendTag, CancelSource, EngineError, ExecutionId, TimestampMs, WorkerId, WorkerInstanceId};

use crate::common::*;
use crate::execution::{
    FreshClaim, check_grant, end_attempt, enter_terminal_index, mint_handle, start_fresh_attempt,
};
use crate::records::{BlobKind, ExecCore, IndexKey, LaneIndex};
use crate::store::{Store, StoreResult};

/// Removes an execution from every lane index and every timeout index.
fn remove_everywhere(store: &mut dyn Store, core: &ExecCore) -> StoreResult<()> {
    let id = core.execution_id.as_str();
    let p = core.execution_id.partition_index();
    for kind in LaneIndex::ALL {
        if kind != LaneIndex::Terminal {
            store.index_remove(&lane_key(core, kind), id)?;
        }
    }
    for key in [
        IndexKey::LeaseExpiry(p),
        IndexKey::SuspensionTimeout(p),
        IndexKey::AttemptTimeout(p),
        IndexKey::ExecutionDeadline(p),
    ] {
        store.index_remove(&key, id)?;
    }
    if let Some(inst) = &core.current_worker_instance_id {
        store.index_remove(&IndexKey::WorkerLeases(p, inst.clone()), id)?;
    }
    Ok(())
}

/// Ends the current attempt of an execution leaving a non-terminal phase, if it has one
/// that is still open (running, or paused by a self-delay / wait / suspension).
fn end_open_attempt(
    store: &mut dyn Store,
    core: &ExecCore,
    lifecycle: AttemptLifecycle,
    reason: &str,
    stream_reason: &str,
    now: TimestampMs,
) -> StoreResult<bool> {
    let Some(idx) = core.current_attempt_index else { return Ok(false) };
    let open = match core.state.lifecycle_phase {
        LifecyclePhase::Active | LifecyclePhase::Suspended => true,
        LifecyclePhase::Runnable => core.state.attempt_state == AttemptState::AttemptInterrupted,
        _ => false,
    };
    if !open {
        return Ok(false);
    }
    end_attempt(store, core, lifecycle, Some((reason, "")), now)?;
    close_stream_meta(store, &core.execution_id, idx, stream_reason, now, true)?;
    Ok(true)
}

/// `ff_cancel_execution` (spec 01 §6.4, with the interrupted-attempt fix).
pub fn cancel_execution(
    store: &mut dyn Store,
    now: TimestampMs,
    args: &CancelExecutionArgs,
) -> StoreResult<CancelOutcome> {
    args.validate()?;
    let mut core = load(store, &args.execution_id)?;
    let phase = core.state.lifecycle_phase;
    if phase == LifecyclePhase::Terminal {
        return Err(not_active(&core));
    }
    if phase == LifecyclePhase::Active && !args.source.is_override() {
        if core.state.ownership_state == OwnershipState::LeaseRevoked {
            return Err(EngineError::State(StateKind::LeaseRevoked));
        }
        if let (Some(lease_id), Some(epoch)) = (args.lease_id, args.lease_epoch)
            && (core.current_lease_id != Some(lease_id) || core.current_lease_epoch != epoch)
        {
            return Err(EngineError::State(StateKind::StaleLease));
        }
    }
    let reason = format!("cancelled: {}", args.reason);
    let ended =
        end_open_attempt(store, &core, AttemptLifecycle::EndedCancelled, &reason, "attempt_cancelled", now)?;
    if phase == LifecyclePhase::Active {
        store.delete_lease(&args.execution_id)?;
        let fields = vec![
            ("lease_id", opt(core.current_lease_id)),
            ("lease_epoch", core.current_lease_epoch.to_string()),
            ("attempt_index", opt(core.current_attempt_index)),
            ("reason", "cancelled".to_owned()),
        ];
        store.append_lease_event(&args.execution_id, "released", now, fields)?;
    }
    if phase == LifecyclePhase::Suspended {
        crate::suspension::close_for_terminal(store, now, &args.execution_id, "cancelled", "cancelled")?;
    }
    remove_everywhere(store, &core)?;
    let attempt_state = if core.current_attempt_index.is_some() || ended {
        AttemptState::AttemptTerminal
    } else {
        core.state.attempt_state
    };
    transition(&mut core, StateVector::terminal(TerminalOutcome::Cancelled, attempt_state), now);
    core.cancellation_reason = Some(args.reason.clone());
    let source = args.source.as_str();
    core.cancelled_by =
        Some(if source.is_empty() { args.execution_id.to_string() } else { source.to_owned() });
    core.completed_at = Some(now);
    clear_lease_fields(&mut core);
    core.current_suspension_id = None;
    core.current_waitpoint_id = None;
    store.index_add(&lane_key(&core, LaneIndex::Terminal), args.execution_id.as_str(), now)?;
    if args.source != CancelSource::FlowCascade {
        publish_if_flow(store, &core, "cancelled", now)?;
    } else {
        store.put_exec(&core)?;
        crate::flow::cascade(store, now, &args.execution_id)?;
    }
    store.put_exec(&core)?;
    Ok(CancelOutcome::Cancelled { execution_id: args.execution_id.clone(), from_phase: phase })
}

fn load_fenced(
    store: &mut dyn Store,
    now: TimestampMs,
    id: &ExecutionId,
    fence: &Option<ff_core::LeaseFence>,
    source: &CancelSource,
) -> StoreResult<ExecCore> {
    let mut core = load(store, id)?;
    let fence = resolve_fence(&core, fence, source, true)?;
    validate_lease_and_mark(store, &mut core, fence.as_ref(), now)?;
    Ok(core)
}

/// Pauses the running attempt record under a self-pause id.
fn pause_attempt(
    store: &mut dyn Store,
    core: &ExecCore,
    pause_id: &str,
    now: TimestampMs,
) -> StoreResult<()> {
    let Some(idx) = core.current_attempt_index else { return Ok(()) };
    let Some(mut rec) = store.get_attempt(&core.execution_id, idx)? else { return Ok(()) };
    rec.attempt_state = AttemptLifecycle::Suspended;
    rec.suspended_at = Some(now);
    rec.suspension_id = Some(pause_id.to_owned());
    store.put_attempt(&rec)
}

/// `ff_delay_execution` (spec 01 §6.5).
pub fn delay_execution(
    store: &mut dyn Store,
    now: TimestampMs,
    args: &DelayExecutionArgs,
) -> StoreResult<TimestampMs> {
    args.validate()?;
    let mut core = load_fenced(store, now, &args.execution_id, &args.fence, &args.source)?;
    pause_attempt(store, &core, "worker_delay", now)?;
    release_lease(store, &mut core, "worker_delay", now, true)?;
    let state = StateVector::runnable(
        EligibilityState::NotEligibleUntilTime,
        BlockingReason::WaitingForDelay,
        format!("delayed until {}", args.delay_until),
        AttemptState::AttemptInterrupted,
    );
    transition(&mut core, state, now);
    core.delay_until = Some(args.delay_until);
    store.index_add(&lane_key(&core, LaneIndex::Delayed), args.execution_id.as_str(), args.delay_until)?;
    store.put_exec(&core)?;
    Ok(args.delay_until)
}

/// `ff_move_to_waiting_children` (spec 01 §6.6).
pub fn move_to_waiting_children(
    store: &mut dyn Store,
    now: TimestampMs,
    args: &MoveToWaitingChildrenArgs,
) -> StoreResult<()> {
    args.validate()?;
    let mut core = load_fenced(store, now, &args.execution_id, &args.fence, &args.source)?;
    pause_attempt(store, &core, "waiting_children", now)?;
    release_lease(store, &mut core, "waiting_children", now, true)?;
    let state = StateVector::runnable(
        EligibilityState::BlockedByDependencies,
        BlockingReason::WaitingForChildren,
        "waiting for child executions to complete".to_owned(),
        AttemptState::AttemptInterrupted,
    );
    transition(&mut core, state, now);
    let score = core.created_at;
    store.index_add(&lane_key(&core, LaneIndex::BlockedDependencies), args.execution_id.as_str(), score)?;
    store.put_exec(&core)
}

/// The reclaim cap: stored policy, else the caller's value, else 1000 (spec 01 §10).
fn reclaim_cap(store: &dyn Store, id: &ExecutionId, caller: Option<u32>) -> StoreResult<u32> {
    let stored = store
        .get_blob(id, BlobKind::Policy)?
        .and_then(|b| String::from_utf8(b).ok())
        .and_then(|json| policy::policy_u64(&json, "max_reclaim_count"))
        .map(|v| u32::try_from(v).unwrap_or(u32::MAX));
    Ok(stored.or(caller).unwrap_or(policy::MAX_RECLAIM_COUNT_DEFAULT))
}

/// `ff_reclaim_execution` (spec 01 §6.8, §10).
pub fn reclaim_execution(
    store: &mut dyn Store,
    now: TimestampMs,
    tag: BackendTag,
    args: &ReclaimExecutionArgs,
) -> StoreResult<ReclaimExecutionOutcome> {
    args.validate()?;
    let mut core = load(store, &args.execution_id)?;
    let id = args.execution_id.clone();
    if core.state.lifecycle_phase != LifecyclePhase::Active
        || !matches!(
            core.state.ownership_state,
            OwnershipState::LeaseExpiredReclaimable | OwnershipState::LeaseRevoked
        )
    {
        return Ok(ReclaimExecutionOutcome::NotReclaimable {
            execution_id: id,
            detail: "execution_not_reclaimable".into(),
        });
    }
    let cap = reclaim_cap(store, &id, args.max_reclaim_count)?;
    if core.lease_reclaim_count >= cap {
        reclaim_over_cap(store, &mut core, &args.worker_instance_id, now)?;
        return Ok(ReclaimExecutionOutcome::ReclaimCapExceeded { execution_id: id, reclaim_count: cap });
    }
    match check_grant(store, &id, &args.worker_id, now) {
        Ok(()) => {}
        Err(EngineError::Contention(ContentionKind::InvalidClaimGrant)) => {
            return Ok(ReclaimExecutionOutcome::GrantNotFound { execution_id: id });
        }
        Err(e) => return Err(e),
    }
    let claimed = reclaim_onto_new_attempt(store, &mut core, tag, args, now)?;
    Ok(ReclaimExecutionOutcome::Claimed(claimed))
}

/// T11: the reclaim cap is reached; terminally fail without publication.
fn reclaim_over_cap(
    store: &mut dyn Store,
    core: &mut ExecCore,
    reclaimer: &WorkerInstanceId,
    now: TimestampMs,
) -> StoreResult<()> {
    let id = core.execution_id.clone();
    let p = id.partition_index();
    store.delete_lease(&id)?;
    store.index_remove(&IndexKey::LeaseExpiry(p), id.as_str())?;
    store.index_remove(&IndexKey::WorkerLeases(p, reclaimer.clone()), id.as_str())?;
    if let Some(old) = &core.current_worker_instance_id {
        store.index_remove(&IndexKey::WorkerLeases(p, old.clone()), id.as_str())?;
    }
    store.index_remove(&lane_key(core, LaneIndex::Active), id.as_str())?;
    transition(core, StateVector::terminal(TerminalOutcome::Failed, AttemptState::AttemptTerminal), now);
    core.failure_reason = Some("max_reclaims_exceeded".to_owned());
    core.completed_at = Some(now);
    core.current_lease_id = None;
    core.current_worker_id = None;
    core.current_worker_instance_id = None;
    enter_terminal_index(store, core, now)?;
    store.put_exec(core)?;
    // No publication (reference), but the children are still resolved.
    crate::flow::cascade(store, now, &id).map(|_| ())
}

fn reclaim_onto_new_attempt(
    store: &mut dyn Store,
    core: &mut ExecCore,
    tag: BackendTag,
    args: &ReclaimExecutionArgs,
    now: TimestampMs,
) -> StoreResult<ClaimedExecution> {
    let id = core.execution_id.clone();
    let p = id.partition_index();
    let lost = format!("lease_{}", core.state.ownership_state.as_str());
    let old_index = core.current_attempt_index;
    let old_epoch = core.current_lease_epoch;
    if let Some(idx) = old_index {
        end_attempt(store, core, AttemptLifecycle::InterruptedReclaimed, Some((&lost, "")), now)?;
        close_stream_meta(store, &id, idx, "reclaimed", now, true)?;
    }
    if let Some(old) = core.current_worker_instance_id.clone()
        && old != args.worker_instance_id
    {
        store.index_remove(&IndexKey::WorkerLeases(p, old), id.as_str())?;
    }
    store.delete_grant(&id)?;
    let index = core.total_attempt_count;
    let mut rec = crate::execution::blank_attempt(
        core,
        args.attempt_id,
        args.lease_id,
        &args.worker_id,
        &args.worker_instance_id,
        index,
        now,
    );
    rec.attempt_type = ff_core::state::AttemptType::Reclaim;
    rec.reclaim_reason = Some(lost.clone());
    rec.previous_attempt_index = old_index;
    let acq = Acquisition {
        lease_id: args.lease_id,
        attempt_id: args.attempt_id,
        worker_id: &args.worker_id,
        worker_instance_id: &args.worker_instance_id,
        lease_ttl_ms: args.lease_ttl_ms,
        renew_before_ms: two_thirds(args.lease_ttl_ms),
    };
    let expires = acquire_lease(store, core, &acq, now)?;
    rec.lease_epoch = core.current_lease_epoch;
    store.put_attempt(&rec)?;
    store.index_add(&IndexKey::AttemptsOf(id.clone()), &index.to_string(), now)?;
    transition(core, StateVector::leased(), now);
    core.current_attempt_index = Some(index);
    core.total_attempt_count = index + 1;
    core.current_lane = args.lane_id.clone();
    core.lease_expired_at = None;
    core.lease_revoked_at = None;
    core.lease_revoke_reason = None;
    core.lease_reclaim_count += 1;
    let fields = vec![
        ("old_lease_epoch", old_epoch.to_string()),
        ("new_lease_id", args.lease_id.to_string()),
        ("new_lease_epoch", core.current_lease_epoch.to_string()),
        ("new_attempt_id", args.attempt_id.to_string()),
        ("new_attempt_index", index.to_string()),
        ("worker_id", args.worker_id.to_string()),
    ];
    store.append_lease_event(&id, "reclaimed", now, fields)?;
    store.put_exec(core)?;
    let handle = mint_handle(tag, HandleKind::Reclaimed, core, index, args.lease_ttl_ms, &args.lane_id);
    Ok(ClaimedExecution {
        execution_id: id,
        lease_id: args.lease_id,
        lease_epoch: core.current_lease_epoch,
        attempt_index: index,
        attempt_id: args.attempt_id,
        attempt_type: ff_core::state::AttemptType::Reclaim,
        lease_expires_at: expires,
        handle,
    })
}

/// `ff_expire_execution` (spec 01 §6.9, with its Spec lines).
pub fn expire_execution(
    store: &mut dyn Store,
    now: TimestampMs,
    id: &ExecutionId,
    phase: ExpirePhase,
) -> StoreResult<ExpireOutcome> {
    let p = id.partition_index();
    let Some(mut core) = store.get_exec(id)? else {
        store.index_remove(&IndexKey::AttemptTimeout(p), id.as_str())?;
        store.index_remove(&IndexKey::ExecutionDeadline(p), id.as_str())?;
        return Ok(ExpireOutcome::NotFoundCleaned);
    };
    let from = core.state.lifecycle_phase;
    if from == LifecyclePhase::Terminal {
        store.index_remove(&IndexKey::AttemptTimeout(p), id.as_str())?;
        store.index_remove(&IndexKey::ExecutionDeadline(p), id.as_str())?;
        return Ok(ExpireOutcome::AlreadyTerminal);
    }
    let reason = phase.as_str();
    end_open_attempt(store, &core, AttemptLifecycle::EndedFailure, reason, "expired", now)?;
    if from == LifecyclePhase::Active {
        store.delete_lease(id)?;
        let fields = vec![
            ("lease_id", opt(core.current_lease_id)),
            ("lease_epoch", core.current_lease_epoch.to_string()),
            ("attempt_index", opt(core.current_attempt_index)),
            ("reason", format!("expired:{reason}")),
        ];
        store.append_lease_event(id, "released", now, fields)?;
    }
    if from == LifecyclePhase::Suspended {
        crate::suspension::close_for_expiry(store, now, id, reason)?;
    }
    remove_everywhere(store, &core)?;
    let attempt_state = if core.current_attempt_index.is_some() {
        AttemptState::AttemptTerminal
    } else {
        core.state.attempt_state
    };
    transition(&mut core, StateVector::terminal(TerminalOutcome::Expired, attempt_state), now);
    core.failure_reason = Some(reason.to_owned());
    core.completed_at = Some(now);
    core.current_lease_id = None;
    core.current_worker_id = None;
    core.current_worker_instance_id = None;
    core.lease_expires_at = None;
    core.current_suspension_id = None;
    core.current_waitpoint_id = None;
    store.index_add(&lane_key(&core, LaneIndex::Terminal), id.as_str(), now)?;
    publish_if_flow(store, &core, "expired", now)?;
    store.put_exec(&core)?;
    Ok(ExpireOutcome::Expired { from_phase: from })
}

/// `ff_set_execution_tags` (spec 01 §6.10).
pub fn set_execution_tags(
    store: &mut dyn Store,
    now: TimestampMs,
    args: &SetExecutionTagsArgs,
) -> StoreResult<usize> {
    args.validate()?;
    let mut core = load(store, &args.execution_id)?;
    if let Some((bad, _)) = args.tags.iter().find(|(k, _)| !is_valid_tag_key(k)) {
        return Err(EngineError::validation(ValidationKind::InvalidTagKey, bad.clone()));
    }
    store.put_tags(&args.execution_id, &args.tags)?;
    core.last_mutation_at = now;
    store.put_exec(&core)?;
    Ok(args.tags.len())
}

/// `ff_replay_execution` (spec 01 §6.24).
pub fn replay_execution(
    store: &mut dyn Store,
    now: TimestampMs,
    id: &ExecutionId,
) -> StoreResult<ReplayOutcome> {
    let mut core = load(store, id)?;
    if core.state.lifecycle_phase != LifecyclePhase::Terminal {
        return Err(EngineError::State(StateKind::ExecutionNotTerminal));
    }
    let max = store
        .get_blob(id, BlobKind::Policy)?
        .and_then(|b| String::from_utf8(b).ok())
        .and_then(|json| policy::policy_u64(&json, "max_replay_count"))
        .unwrap_or(u64::from(policy::MAX_REPLAY_COUNT_DEFAULT));
    if u64::from(core.replay_count) >= max {
        return Err(EngineError::State(StateKind::MaxReplaysExhausted));
    }
    let skipped_member = core.state.terminal_outcome == TerminalOutcome::Skipped
        && core.flow_id.as_deref().is_some_and(|f| !f.is_empty());
    store.index_remove(&lane_key(&core, LaneIndex::Terminal), id.as_str())?;
    let replay_type = if skipped_member {
        let unsatisfied = crate::flow::reopen_skipped_member(store, now, id)?;
        let state = StateVector::runnable(
            EligibilityState::BlockedByDependencies,
            BlockingReason::WaitingForChildren,
            format!("{unsatisfied} dep(s) unsatisfied after replay"),
            AttemptState::PendingReplayAttempt,
        );
        transition(&mut core, state, now);
        let score = core.created_at;
        store.index_add(&lane_key(&core, LaneIndex::BlockedDependencies), id.as_str(), score)?;
        "skipped_flow_member"
    } else {
        let state = StateVector::runnable(
            EligibilityState::EligibleNow,
            BlockingReason::WaitingForWorker,
            String::new(),
            AttemptState::PendingReplayAttempt,
        );
        transition(&mut core, state, now);
        add_eligible(store, &core)?;
        "normal"
    };
    core.pending_replay_attempt = true;
    core.replay_count += 1;
    core.completed_at = None;
    let fields =
        vec![("replay_count", core.replay_count.to_string()), ("replay_type", replay_type.to_owned())];
    store.append_lease_event(id, "replay_initiated", now, fields)?;
    store.put_exec(&core)?;
    Ok(ReplayOutcome::Replayed { public_state: core.state.public_state })
}

/// Gives a new lease on the same (interrupted) attempt: the resumed body of
/// §6.21 and of the resumed branch of §6.23.
struct Resume<'a> {
    worker_id: &'a WorkerId,
    worker_instance_id: &'a WorkerInstanceId,
    lane_id: &'a ff_core::LaneId,
    lease_id: ff_core::LeaseId,
    lease_ttl_ms: u64,
    remaining_attempt_timeout_ms: Option<u64>,
    event_reason: &'static str,
}

fn resume_attempt(
    store: &mut dyn Store,
    core: &mut ExecCore,
    r: &Resume<'_>,
    now: TimestampMs,
) -> StoreResult<TimestampMs> {
    let id = core.execution_id.clone();
    let attempt_id = core.current_attempt_id.ok_or_else(|| EngineError::Bug {
        kind: ff_core::error::BugKind::InvariantViolation,
        detail: format!("{id}: interrupted attempt without an attempt id"),
    })?;
    store.delete_grant(&id)?;
    remove_from_runnable_indexes(store, core)?;
    let acq = Acquisition {
        lease_id: r.lease_id,
        attempt_id,
        worker_id: r.worker_id,
        worker_instance_id: r.worker_instance_id,
        lease_ttl_ms: r.lease_ttl_ms,
        renew_before_ms: two_thirds(r.lease_ttl_ms),
    };
    let expires = acquire_lease(store, core, &acq, now)?;
    if let Some(idx) = core.current_attempt_index
        && let Some(mut rec) = store.get_attempt(&id, idx)?
    {
        rec.attempt_state = AttemptLifecycle::Started;
        rec.resumed_at = Some(now);
        rec.lease_id = r.lease_id;
        rec.lease_epoch = core.current_lease_epoch;
        rec.worker_id = r.worker_id.clone();
        rec.worker_instance_id = r.worker_instance_id.clone();
        rec.suspended_at = None;
        rec.suspension_id = None;
        store.put_attempt(&rec)?;
    }
    transition(core, StateVector::leased(), now);
    core.current_lane = r.lane_id.clone();
    core.lease_expired_at = None;
    core.lease_revoked_at = None;
    core.lease_revoke_reason = None;
    if let Some(t) = r.remaining_attempt_timeout_ms.filter(|t| *t > 0) {
        let at = now.saturating_add(i64::try_from(t).unwrap_or(i64::MAX));
        store.index_add(&IndexKey::AttemptTimeout(id.partition_index()), id.as_str(), at)?;
    }
    let fields = vec![
        ("lease_id", r.lease_id.to_string()),
        ("lease_epoch", core.current_lease_epoch.to_string()),
        ("attempt_id", attempt_id.to_string()),
        ("attempt_index", opt(core.current_attempt_index)),
        ("worker_id", r.worker_id.to_string()),
        ("reason", r.event_reason.to_owned()),
    ];
    store.append_lease_event(&id, "acquired", now, fields)?;
    store.put_exec(core)?;
    Ok(expires)
}

/// `ff_claim_resumed_execution` (spec 01 §6.21).
pub fn claim_resumed_execution(
    store: &mut dyn Store,
    now: TimestampMs,
    tag: BackendTag,
    args: &ClaimResumedExecutionArgs,
) -> StoreResult<ClaimedExecution> {
    args.validate()?;
    let mut core = load(store, &args.execution_id)?;
    if core.state.lifecycle_phase != LifecyclePhase::Runnable {
        return Err(EngineError::Contention(ContentionKind::ExecutionNotLeaseable));
    }
    if core.state.attempt_state != AttemptState::AttemptInterrupted {
        return Err(EngineError::Contention(ContentionKind::NotAResumedExecution));
    }
    check_grant(store, &args.execution_id, &args.worker_id, now)?;
    let resume = Resume {
        worker_id: &args.worker_id,
        worker_instance_id: &args.worker_instance_id,
        lane_id: &args.lane_id,
        lease_id: args.lease_id,
        lease_ttl_ms: args.lease_ttl_ms,
        remaining_attempt_timeout_ms: args.remaining_attempt_timeout_ms,
        event_reason: "claim_resumed",
    };
    let expires = resume_attempt(store, &mut core, &resume, now)?;
    let index = core.current_attempt_index.unwrap_or(0);
    let attempt_type = store
        .get_attempt(&args.execution_id, index)?
        .map_or(ff_core::state::AttemptType::Initial, |a| a.attempt_type);
    let handle = mint_handle(tag, HandleKind::Resumed, &core, index, args.lease_ttl_ms, &args.lane_id);
    Ok(ClaimedExecution {
        execution_id: args.execution_id.clone(),
        lease_id: args.lease_id,
        lease_epoch: core.current_lease_epoch,
        attempt_index: index,
        attempt_id: core.current_attempt_id.unwrap_or_default(),
        attempt_type,
        lease_expires_at: expires,
        handle,
    })
}

/// `ff_issue_grant_and_claim` (spec 01 §6.23): operator identity, one atomic step.
pub fn issue_grant_and_claim(
    store: &mut dyn Store,
    now: TimestampMs,
    args: &IssueGrantAndClaimArgs,
) -> StoreResult<ClaimGrantOutcome> {
    args.validate()?;
    let mut core = load(store, &args.execution_id)?;
    let s = &core.state;
    if s.lifecycle_phase != LifecyclePhase::Runnable {
        return Err(EngineError::Contention(ContentionKind::ExecutionNotEligible));
    }
    if s.ownership_state != OwnershipState::Unowned {
        return Err(EngineError::Contention(ContentionKind::LeaseConflict));
    }
    if s.terminal_outcome != TerminalOutcome::None {
        return Err(EngineError::Contention(ContentionKind::ExecutionNotEligible));
    }
    if s.attempt_state == AttemptState::RunningAttempt {
        return Err(EngineError::Conflict(ConflictKind::ActiveAttemptExists));
    }
    if store.get_grant(&args.execution_id)?.is_some_and(|g| g.is_live(now)) {
        return Err(EngineError::State(StateKind::GrantAlreadyExists));
    }
    let operator_id = WorkerId::new("operator");
    let operator_inst = WorkerInstanceId::new("operator");
    if core.state.attempt_state == AttemptState::AttemptInterrupted {
        let resume = Resume {
            worker_id: &operator_id,
            worker_instance_id: &operator_inst,
            lane_id: &args.lane_id,
            lease_id: args.lease_id,
            lease_ttl_ms: args.lease_duration_ms,
            remaining_attempt_timeout_ms: None,
            event_reason: "issue_grant_and_claim_resumed",
        };
        resume_attempt(store, &mut core, &resume, now)?;
    } else {
        let eligible = lane_key(&core, LaneIndex::Eligible);
        if store.index_score(&eligible, args.execution_id.as_str())?.is_none() {
            return Err(EngineError::Contention(ContentionKind::ExecutionNotInEligibleSet));
        }
        if core.state.eligibility_state != EligibilityState::EligibleNow {
            return Err(EngineError::Contention(ContentionKind::ExecutionNotEligible));
        }
        let claim = FreshClaim {
            worker_id: &operator_id,
            worker_instance_id: &operator_inst,
            lane_id: &args.lane_id,
            lease_id: args.lease_id,
            attempt_id: args.attempt_id,
            lease_ttl_ms: args.lease_duration_ms,
            attempt_policy_json: "",
            attempt_timeout_ms: None,
            execution_deadline_at: None,
            event_reason: Some("issue_grant_and_claim"),
        };
        start_fresh_attempt(store, &mut core, &claim, now)?;
    }
    Ok(ClaimGrantOutcome {
        lease_id: args.lease_id,
        lease_epoch: core.current_lease_epoch,
        attempt_index: core.current_attempt_index.unwrap_or(0),
    })
}
