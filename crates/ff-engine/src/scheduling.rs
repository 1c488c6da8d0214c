//! Scheduling contracts: grants, priority, progress, promotion, admission blocks,
//! eligible scan (spec 01 §6.15–6.17, §6.19–6.20, §6.25–6.26, §9, §11).
//!
//! Each function is validate → load → check → apply → index → reply. The only
//! write before a failing check is the capability-mismatch stamp (spec 01 §5.6).

use std::collections::BTreeSet;

use ff_core::contracts::*;
use ff_core::error::{ContentionKind, StateKind, ValidationKind};
use ff_core::state::{
    AttemptState, BlockingReason, EligibilityState, LifecyclePhase, OwnershipState, PublicState, StateVector,
};
use ff_core::{EngineError, ExecutionId, LaneId, TimestampMs};

use crate::common::*;
use crate::records::{ExecCore, GrantRecord, IndexKey, LaneIndex};
use crate::store::{Store, StoreResult};

// ---------------------------------------------------------------- grants

/// Parses a capability CSV within the spec 01 §9.4 bounds (inclusive maxima).
fn parse_caps<'a>(side: &str, csv: &'a str) -> StoreResult<BTreeSet<&'a str>> {
    let bound =
        |what: &str| EngineError::validation(ValidationKind::InvalidCapabilities, format!("{side}:{what}"));
    if csv.len() > CAPS_CSV_BYTES_MAX {
        return Err(bound("too_many_bytes"));
    }
    let tokens: Vec<&str> = csv.split(',').filter(|t| !t.is_empty()).collect();
    if tokens.len() > CAPS_TOKENS_MAX {
        return Err(bound("too_many_tokens"));
    }
    Ok(tokens.into_iter().collect())
}

/// Rows 6–8 of spec 01 §6.15: bounds of both sides, then the subset check.
/// `Ok(Some(missing))` is the sorted CSV of required tokens the worker lacks.
fn missing_capabilities(core: &ExecCore, worker: &CapabilitySet) -> StoreResult<Option<String>> {
    let required = parse_caps("required", core.required_capabilities.as_deref().unwrap_or(""))?;
    let worker_csv = worker.to_csv();
    let have = parse_caps("worker", &worker_csv)?;
    // BTreeSet difference iterates in sorted order.
    let missing: Vec<&str> = required.difference(&have).copied().collect();
    Ok(if missing.is_empty() { None } else { Some(missing.join(",")) })
}

/// The capability gate shared by both grant functions: on a mismatch it stamps
/// `last_capability_mismatch_at` (the intentional §5.6 write) and returns the missing CSV.
fn capability_gate(
    store: &mut dyn Store,
    core: &mut ExecCore,
    worker: &CapabilitySet,
    now: TimestampMs,
) -> StoreResult<Option<String>> {
    let Some(missing) = missing_capabilities(core, worker)? else { return Ok(None) };
    core.last_capability_mismatch_at = Some(now);
    core.last_mutation_at = now;
    store.put_exec(core)?;
    Ok(Some(missing))
}

/// Whether a grant exists; a lapsed grant counts as absent (spec 01 §9.2).
fn live_grant_exists(store: &dyn Store, id: &ExecutionId, now: TimestampMs) -> StoreResult<bool> {
    Ok(store.get_grant(id)?.is_some_and(|g| g.is_live(now)))
}

/// Writes the grant record (spec 01 §3.9); returns `grant_expires_at`.
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

/// The grant record's Valkey key, `ff:exec:T:E:claim_grant`.
fn grant_key(id: &ExecutionId) -> String {
    format!("ff:exec:{}:{}:claim_grant", id.hash_tag(), id)
}

/// `ff_issue_claim_grant` (spec 01 §6.15).
pub fn issue_claim_grant(
    store: &mut dyn Store,
    now: TimestampMs,
    args: &IssueClaimGrantArgs,
) -> StoreResult<IssueClaimGrantOutcome> {
    args.validate()?;
    let id = &args.execution_id;
    let mut core = load(store, id)?;
    if core.state.lifecycle_phase != LifecyclePhase::Runnable
        || core.state.eligibility_state != EligibilityState::EligibleNow
    {
        return Err(EngineError::Contention(ContentionKind::ExecutionNotEligible));
    }
    if live_grant_exists(store, id, now)? {
        return Err(EngineError::State(StateKind::GrantAlreadyExists));
    }
    if store.index_score(&lane_key(&core, LaneIndex::Eligible), id.as_str())?.is_none() {
        return Err(EngineError::Contention(ContentionKind::ExecutionNotInEligibleSet));
    }
    if let Some(missing) = capability_gate(store, &mut core, &args.worker_capabilities, now)? {
        return Err(EngineError::validation(ValidationKind::CapabilityMismatch, missing));
    }
    // The execution stays in the eligible index: an unconsumed grant simply lapses.
    let expires = write_grant(store, now, args)?;
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
    let id = &args.execution_id;
    let mut core = load(store, id)?;
    let not_reclaimable =
        |detail: String| IssueReclaimGrantOutcome::NotReclaimable { execution_id: id.clone(), detail };
    let reclaimable = core.state.lifecycle_phase == LifecyclePhase::Active
        && matches!(
            core.state.ownership_state,
            OwnershipState::LeaseExpiredReclaimable | OwnershipState::LeaseRevoked
        );
    if !reclaimable {
        return Ok(not_reclaimable("execution_not_reclaimable".to_owned()));
    }
    if live_grant_exists(store, id, now)? {
        return Err(EngineError::State(StateKind::GrantAlreadyExists));
    }
    if let Some(missing) = capability_gate(store, &mut core, &args.worker_capabilities, now)? {
        return Ok(not_reclaimable(format!("capability_mismatch: {missing}")));
    }
    // The reclaim cap is not checked here (spec 01 §6.8 enforces it).
    let expires = write_grant(store, now, args)?;
    Ok(IssueReclaimGrantOutcome::Granted(LaneGrant {
        execution_id: id.clone(),
        partition_key: id.partition().key(),
        grant_key: grant_key(id),
        expires_at_ms: expires,
        lane_id: core.lane_id.clone(),
    }))
}

// ---------------------------------------------------------------- priority and progress

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
    let old_priority = core.priority;
    core.priority = clamp_priority(args.new_priority);
    core.last_mutation_at = now;
    // Add or re-score: membership is not required.
    add_eligible(store, &core)?;
    store.put_exec(&core)?;
    Ok(PriorityChange { old_priority, new_priority: core.priority })
}

/// `ff_update_progress` (spec 01 §6.17).
pub fn update_progress(
    store: &mut dyn Store,
    now: TimestampMs,
    args: &UpdateProgressArgs,
) -> StoreResult<()> {
    args.validate()?;
    let mut core = load(store, &args.execution_id)?;
    check_progress_lease(&core, args, now)?;
    if let Some(pct) = args.progress_pct {
        core.progress_pct = Some(pct);
    }
    // An empty message is the wire's "leave unchanged", like `None`.
    if let Some(msg) = args.progress_message.as_ref().filter(|m| !m.is_empty()) {
        core.progress_message = Some(msg.clone());
    }
    core.progress_updated_at = Some(now);
    core.last_mutation_at = now;
    store.put_exec(&core)
}

/// The lease checks of `update_progress` (spec 01 §6.11): expiry is not marked, attempt id not compared.
fn check_progress_lease(core: &ExecCore, args: &UpdateProgressArgs, now: TimestampMs) -> StoreResult<()> {
    if core.state.lifecycle_phase != LifecyclePhase::Active {
        return Err(not_active(core));
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
    Ok(())
}

// ---------------------------------------------------------------- promotion and admission blocks

/// `ff_promote_delayed` (spec 01 §6.19), the delayed-promoter hook.
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
    let cleaned = if core.state.lifecycle_phase != LifecyclePhase::Runnable {
        Some(PromoteOutcome::NotRunnableCleaned)
    } else if core.state.eligibility_state != EligibilityState::NotEligibleUntilTime {
        Some(PromoteOutcome::NotDelayedCleaned)
    } else {
        None
    };
    if let Some(outcome) = cleaned {
        store.index_remove(&delayed, id.as_str())?;
        return Ok(outcome);
    }
    // Spec 01 §12 Spec (a): an empty `delay_until` counts as 0, i.e. due.
    if core.delay_until.unwrap_or(0) > now {
        return Ok(PromoteOutcome::NotYetDue);
    }
    // T3 keeps `attempt_state`, which routes the next claim (fresh, retry, replay or resumed).
    let state = StateVector::runnable(
        EligibilityState::EligibleNow,
        BlockingReason::WaitingForWorker,
        String::new(),
        core.state.attempt_state,
    );
    transition(&mut core, state, now);
    core.delay_until = None;
    store.index_remove(&delayed, id.as_str())?;
    store.index_remove(&lane_key(&core, LaneIndex::Delayed), id.as_str())?;
    add_eligible(store, &core)?;
    store.put_exec(&core)?;
    Ok(PromoteOutcome::Promoted)
}

/// The eligibility state and lane index of an admission block reason (spec 01 §6.26 table).
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
        // `blocked_by_lane_state` has no index (spec 01 §4.7).
        BlockingReason::PausedByPolicy => (EligibilityState::BlockedByLaneState, None),
        _ => return None,
    })
}

/// An attempt state kept across a block or unblock, `pending_first_attempt` if none.
fn kept_attempt_state(s: AttemptState) -> AttemptState {
    match s {
        AttemptState::None => AttemptState::PendingFirstAttempt,
        other => other,
    }
}

/// `ff_block_execution_for_admission` (spec 01 §6.26).
pub fn block_execution_for_admission(
    store: &mut dyn Store,
    now: TimestampMs,
    args: &BlockExecutionArgs,
) -> StoreResult<()> {
    args.validate()?;
    let id = &args.execution_id;
    let mut core = load(store, id)?;
    match core.state.lifecycle_phase {
        LifecyclePhase::Terminal => return Err(not_active(&core)),
        LifecyclePhase::Runnable => {}
        _ => return Err(EngineError::Contention(ContentionKind::ExecutionNotEligible)),
    }
    let Some((eligibility, index)) = block_target(args.reason) else {
        return Err(EngineError::validation(ValidationKind::InvalidBlockingReason, args.reason.as_str()));
    };
    let attempt_state = kept_attempt_state(core.state.attempt_state);
    let mut state = StateVector::runnable(eligibility, args.reason, args.detail.clone(), attempt_state);
    // Spec 01 §4.2 Spec: the stored public state is `rate_limited` for every admission block.
    state.public_state = PublicState::RateLimited;
    // Spec 01 §6.26 Spec: leave no stale delayed/blocked entry behind.
    remove_from_runnable_indexes(store, &core)?;
    transition(&mut core, state, now);
    if let Some(index) = index {
        store.index_add(&lane_key(&core, index), id.as_str(), now)?;
    }
    store.put_exec(&core)
}

/// `ff_unblock_execution` (spec 01 §6.25).
pub fn unblock_execution(
    store: &mut dyn Store,
    now: TimestampMs,
    args: &UnblockExecutionArgs,
) -> StoreResult<()> {
    let id = &args.execution_id;
    let mut core = load(store, id)?;
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
    let state = StateVector::runnable(
        EligibilityState::EligibleNow,
        BlockingReason::WaitingForWorker,
        String::new(),
        kept_attempt_state(core.state.attempt_state),
    );
    transition(&mut core, state, now);
    store.index_remove(&lane_key(&core, source), id.as_str())?;
    add_eligible(store, &core)?;
    store.put_exec(&core)
}

// ---------------------------------------------------------------- eligible index

/// `scan_eligible_executions` (spec 01 §11.3): the head of a lane's eligible index on one partition.
pub fn scan_eligible(store: &mut dyn Store, args: &ScanEligibleArgs) -> StoreResult<Vec<ExecutionId>> {
    let limit = args.limit.min(LIST_LIMIT_MAX);
    if limit == 0 {
        return Ok(Vec::new());
    }
    let key =
        IndexKey::Lane { partition: args.partition, lane: args.lane_id.clone(), kind: LaneIndex::Eligible };
    store
        .index_range(&key, None, i64::MAX, limit)?
        .into_iter()
        .map(|(_, m)| {
            ExecutionId::parse(&m)
                .map_err(|e| EngineError::protocol("engine", format!("eligible member {m}: {e}")))
        })
        .collect()
}
