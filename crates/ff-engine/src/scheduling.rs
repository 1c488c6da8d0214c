//! Scheduling contracts: grants, priority, progress, promotion, admission blocks,
//! eligible scan (spec 01 §6.15–6.17, §6.19–6.20, §6.25–6.26, §9, §11).

use ff_core::contracts::*;
use ff_core::error::{ContentionKind, StateKind, ValidationKind};
use ff_core::state::{
    AttemptState, BlockingReason, EligibilityState, LifecyclePhase, OwnershipState, PublicState,
};
use ff_core::{EngineError, ExecutionId, LaneId, TimestampMs};

use crate::common::*;
use crate::records::{ExecCore, GrantRecord, IndexKey, LaneIndex};
use crate::store::{Store, StoreResult};

/// Parses a capability CSV within bounds: `Err(detail)` names the bound.
fn parse_csv<'a>(side: &str, csv: &'a str) -> Result<Vec<&'a str>, String> {
    if csv.len() > CAPS_CSV_BYTES_MAX {
        return Err(format!("{side}:too_many_bytes"));
    }
    let tokens: Vec<&str> = csv.split(',').filter(|t| !t.is_empty()).collect();
    if tokens.len() > CAPS_TOKENS_MAX {
        return Err(format!("{side}:too_many_tokens"));
    }
    Ok(tokens)
}

/// The capability check of grant issuance (spec 01 §6.15 rows 6–8): `Ok(None)`
/// when the worker matches, `Ok(Some(missing))` on a mismatch.
fn missing_capabilities(core: &ExecCore, worker: &CapabilitySet) -> StoreResult<Option<String>> {
    let required_csv = core.required_capabilities.clone().unwrap_or_default();
    let required = parse_csv("required", &required_csv)
        .map_err(|d| EngineError::validation(ValidationKind::InvalidCapabilities, d))?;
    let worker_csv = worker.to_csv();
    let have = parse_csv("worker", &worker_csv)
        .map_err(|d| EngineError::validation(ValidationKind::InvalidCapabilities, d))?;
    let mut missing: Vec<&str> = required.into_iter().filter(|t| !have.contains(t)).collect();
    if missing.is_empty() {
        return Ok(None);
    }
    missing.sort_unstable();
    missing.dedup();
    Ok(Some(missing.join(",")))
}

fn stamp_mismatch(store: &mut dyn Store, core: &mut ExecCore, now: TimestampMs) -> StoreResult<()> {
    core.last_capability_mismatch_at = Some(now);
    core.last_mutation_at = now;
    store.put_exec(core)
}

fn live_grant_exists(store: &dyn Store, id: &ExecutionId, now: TimestampMs) -> StoreResult<bool> {
    Ok(store.get_grant(id)?.is_some_and(|g| g.is_live(now)))
}

fn write_grant(
    store: &mut dyn Store,
    now: TimestampMs,
    args: &IssueClaimGrantArgs,
) -> StoreResult<TimestampMs> {
    let expires = now.saturating_add(i64::try_from(args.grant_ttl_ms).unwrap_or(i64::MAX));
    let rec = GrantRecord {
        worker_id: args.worker_id.clone(),
        worker_instance_id: args.worker_instance_id.clone(),
        lane_id: args.lane_id.clone(),
        capability_hash: args.capability_hash.clone(),
        route_snapshot_json: args.route_snapshot_json.clone(),
        admission_summary: args.admission_summary.clone(),
        created_at: now,
        grant_expires_at: expires,
    };
    store.put_grant(&args.execution_id, &rec)?;
    Ok(expires)
}

fn grant_key(id: &ExecutionId) -> String {
    ff_core::keys::ExecKeys::new(&id.hash_tag(), id.as_str()).claim_grant()
}

/// `ff_issue_claim_grant` (spec 01 §6.15).
pub fn issue_claim_grant(
    store: &mut dyn Store,
    now: TimestampMs,
    args: &IssueClaimGrantArgs,
) -> StoreResult<IssueClaimGrantOutcome> {
    args.validate()?;
    let mut core = load(store, &args.execution_id)?;
    if core.state.lifecycle_phase != LifecyclePhase::Runnable
        || core.state.eligibility_state != EligibilityState::EligibleNow
    {
        return Err(EngineError::Contention(ContentionKind::ExecutionNotEligible));
    }
    if live_grant_exists(store, &args.execution_id, now)? {
        return Err(EngineError::State(StateKind::GrantAlreadyExists));
    }
    let eligible = lane_key(&core, LaneIndex::Eligible);
    if store.index_score(&eligible, args.execution_id.as_str())?.is_none() {
        return Err(EngineError::Contention(ContentionKind::ExecutionNotInEligibleSet));
    }
    if let Some(missing) = missing_capabilities(&core, &args.worker_capabilities)? {
        stamp_mismatch(store, &mut core, now)?;
        return Err(EngineError::validation(ValidationKind::CapabilityMismatch, missing));
    }
    let expires = write_grant(store, now, args)?;
    let id = &args.execution_id;
    Ok(IssueClaimGrantOutcome::Granted(ClaimGrant {
        execution_id: id.clone(),
        partition_key: id.partition().key(),
        grant_key: grant_key(id),
        expires_at_ms: expires,
    }))
}

/// `ff_issue_reclaim_grant` (spec 01 §6.20).
pub fn issue_reclaim_grant(
    store: &mut dyn Store,
    now: TimestampMs,
    args: &IssueReclaimGrantArgs,
) -> StoreResult<IssueReclaimGrantOutcome> {
    args.validate()?;
    let mut core = load(store, &args.execution_id)?;
    let not_reclaimable = || IssueReclaimGrantOutcome::NotReclaimable {
        execution_id: args.execution_id.clone(),
        detail: "execution_not_reclaimable".into(),
    };
    if core.state.lifecycle_phase != LifecyclePhase::Active
        || !matches!(
            core.state.ownership_state,
            OwnershipState::LeaseExpiredReclaimable | OwnershipState::LeaseRevoked
        )
    {
        return Ok(not_reclaimable());
    }
    if live_grant_exists(store, &args.execution_id, now)? {
        return Err(EngineError::State(StateKind::GrantAlreadyExists));
    }
    if let Some(missing) = missing_capabilities(&core, &args.worker_capabilities)? {
        stamp_mismatch(store, &mut core, now)?;
        return Ok(IssueReclaimGrantOutcome::NotReclaimable {
            execution_id: args.execution_id.clone(),
            detail: format!("capability_mismatch: {missing}"),
        });
    }
    let expires = write_grant(store, now, args)?;
    let id = &args.execution_id;
    Ok(IssueReclaimGrantOutcome::Granted(LaneGrant {
        execution_id: id.clone(),
        partition_key: id.partition().key(),
        grant_key: grant_key(id),
        expires_at_ms: expires,
        lane_id: core.lane_id.clone(),
    }))
}

/// `ff_change_priority` (spec 01 §6.16).
pub fn change_priority(
    store: &mut dyn Store,
    now: TimestampMs,
    args: &ChangePriorityArgs,
) -> StoreResult<PriorityChange> {
    let mut core = load(store, &args.execution_id)?;
    if core.state.lifecycle_phase != LifecyclePhase::Runnable
        || core.state.eligibility_state != EligibilityState::EligibleNow
    {
        return Err(EngineError::Contention(ContentionKind::ExecutionNotEligible));
    }
    let old = core.priority;
    core.priority = clamp_priority(args.new_priority);
    core.last_mutation_at = now;
    add_eligible(store, &core)?;
    store.put_exec(&core)?;
    Ok(PriorityChange { old_priority: old, new_priority: core.priority })
}

/// `ff_update_progress` (spec 01 §6.17).
pub fn update_progress(
    store: &mut dyn Store,
    now: TimestampMs,
    args: &UpdateProgressArgs,
) -> StoreResult<()> {
    args.validate()?;
    let mut core = load(store, &args.execution_id)?;
    if core.state.lifecycle_phase != LifecyclePhase::Active {
        return Err(not_active(&core));
    }
    if core.state.ownership_state == OwnershipState::LeaseRevoked {
        return Err(EngineError::State(StateKind::LeaseRevoked));
    }
    if core.lease_expires_at.unwrap_or(0) <= now {
        return Err(EngineError::State(StateKind::LeaseExpired));
    }
    if core.current_lease_id != Some(args.lease_id) || core.current_lease_epoch != args.lease_epoch {
        return Err(EngineError::State(StateKind::StaleLease));
    }
    if let Some(p) = args.progress_pct {
        core.progress_pct = Some(p);
    }
    if let Some(m) = &args.progress_message {
        core.progress_message = Some(m.clone());
    }
    core.progress_updated_at = Some(now);
    core.last_mutation_at = now;
    store.put_exec(&core)
}

/// `ff_promote_delayed` (spec 01 §6.19).
pub fn promote_delayed(
    store: &mut dyn Store,
    now: TimestampMs,
    lane: &LaneId,
    id: &ExecutionId,
) -> StoreResult<PromoteOutcome> {
    let delayed = lane_key_of(id, lane, LaneIndex::Delayed);
    let Some(mut core) = store.get_exec(id)? else {
        store.index_remove(&delayed, id.as_str())?;
        return Ok(PromoteOutcome::NotFoundCleaned);
    };
    if core.state.lifecycle_phase != LifecyclePhase::Runnable {
        store.index_remove(&delayed, id.as_str())?;
        return Ok(PromoteOutcome::NotRunnableCleaned);
    }
    if core.state.eligibility_state != EligibilityState::NotEligibleUntilTime {
        store.index_remove(&delayed, id.as_str())?;
        return Ok(PromoteOutcome::NotDelayedCleaned);
    }
    if core.delay_until.unwrap_or(0) > now {
        return Ok(PromoteOutcome::NotYetDue);
    }
    let attempt_state = core.state.attempt_state;
    let state = ff_core::StateVector::runnable(
        EligibilityState::EligibleNow,
        BlockingReason::WaitingForWorker,
        String::new(),
        attempt_state,
    );
    transition(&mut core, state, now);
    core.delay_until = None;
    store.index_remove(&lane_key(&core, LaneIndex::Delayed), id.as_str())?;
    add_eligible(store, &core)?;
    store.put_exec(&core)?;
    Ok(PromoteOutcome::Promoted)
}

/// The eligibility state and index of an admission block reason (spec 01 §6.26).
fn block_target(reason: BlockingReason) -> Option<(EligibilityState, Option<LaneIndex>)> {
    Some(match reason {
        BlockingReason::WaitingForBudget => {
            (EligibilityState::BlockedByBudget, Some(LaneIndex::BlockedBudget))
        }
        BlockingReason::WaitingForQuota => (EligibilityState::BlockedByQuota, Some(LaneIndex::BlockedQuota)),
        BlockingReason::WaitingForCapableWorker => {
            (EligibilityState::BlockedByRoute, Some(LaneIndex::BlockedRoute))
        }
        BlockingReason::PausedByOperator => {
            (EligibilityState::BlockedByOperator, Some(LaneIndex::BlockedOperator))
        }
        BlockingReason::PausedByPolicy => (EligibilityState::BlockedByLaneState, None),
        _ => return None,
    })
}

/// `ff_block_execution_for_admission` (spec 01 §6.26).
pub fn block_execution_for_admission(
    store: &mut dyn Store,
    now: TimestampMs,
    args: &BlockExecutionArgs,
) -> StoreResult<()> {
    args.validate()?;
    let mut core = load(store, &args.execution_id)?;
    match core.state.lifecycle_phase {
        LifecyclePhase::Terminal => return Err(not_active(&core)),
        LifecyclePhase::Runnable => {}
        _ => return Err(EngineError::Contention(ContentionKind::ExecutionNotEligible)),
    }
    let Some((eligibility, index)) = block_target(args.reason) else {
        return Err(EngineError::validation(ValidationKind::InvalidBlockingReason, args.reason.as_str()));
    };
    // A live grant belongs to a worker that passed admission; parking the execution now
    // would make that worker's claim fail (decision: the reference blocks regardless).
    if live_grant_exists(store, &args.execution_id, now)? {
        return Err(EngineError::State(StateKind::GrantAlreadyExists));
    }
    let attempt_state = match core.state.attempt_state {
        AttemptState::None => AttemptState::PendingFirstAttempt,
        other => other,
    };
    let mut state =
        ff_core::StateVector::runnable(eligibility, args.reason, args.detail.clone(), attempt_state);
    // The stored public state is `rate_limited` for every admission block (spec 01 §4.2).
    state.public_state = PublicState::RateLimited;
    remove_from_runnable_indexes(store, &core)?;
    transition(&mut core, state, now);
    if let Some(index) = index {
        store.index_add(&lane_key(&core, index), args.execution_id.as_str(), now)?;
    }
    store.put_exec(&core)
}

/// `ff_unblock_execution` (spec 01 §6.25).
pub fn unblock_execution(
    store: &mut dyn Store,
    now: TimestampMs,
    args: &UnblockExecutionArgs,
) -> StoreResult<()> {
    let mut core = load(store, &args.execution_id)?;
    let not_eligible = || EngineError::Contention(ContentionKind::ExecutionNotEligible);
    if core.state.lifecycle_phase != LifecyclePhase::Runnable {
        return Err(not_eligible());
    }
    let source = match core.state.eligibility_state {
        EligibilityState::BlockedByBudget => LaneIndex::BlockedBudget,
        EligibilityState::BlockedByQuota => LaneIndex::BlockedQuota,
        EligibilityState::BlockedByRoute => LaneIndex::BlockedRoute,
        EligibilityState::BlockedByOperator => LaneIndex::BlockedOperator,
        _ => return Err(not_eligible()),
    };
    if args.expected_reason.is_some_and(|r| r != core.state.blocking_reason) {
        return Err(not_eligible());
    }
    let attempt_state = match core.state.attempt_state {
        AttemptState::None => AttemptState::PendingFirstAttempt,
        other => other,
    };
    let state = ff_core::StateVector::runnable(
        EligibilityState::EligibleNow,
        BlockingReason::WaitingForWorker,
        String::new(),
        attempt_state,
    );
    transition(&mut core, state, now);
    store.index_remove(&lane_key(&core, source), args.execution_id.as_str())?;
    add_eligible(store, &core)?;
    store.put_exec(&core)
}

/// `scan_eligible_executions` (spec 01 §11.3): the head of a lane's eligible index.
pub fn scan_eligible(store: &mut dyn Store, args: &ScanEligibleArgs) -> StoreResult<Vec<ExecutionId>> {
    let key =
        IndexKey::Lane { partition: args.partition, lane: args.lane_id.clone(), kind: LaneIndex::Eligible };
    let limit = args.limit.clamp(1, LIST_LIMIT_MAX);
    store
        .index_range(&key, None, i64::MAX, limit)?
        .into_iter()
        .map(|(_, m)| {
            ExecutionId::parse(&m)
                .map_err(|e| EngineError::protocol("engine", format!("eligible member {m}: {e}")))
        })
        .collect()
}
