//! Execution contracts: create, claim, complete, fail (spec 01 §6.1–6.3, §6.7).
//!
//! Each function is validate → load → check → apply → index → reply, and
//! writes nothing before its last check except where spec 01 §5.6 says so.

use std::collections::BTreeMap;

use ff_core::contracts::*;
use ff_core::error::{ConflictKind, ContentionKind, ValidationKind};
use ff_core::handle::{Handle, HandleKind, HandlePayload};
use ff_core::policy::{self, RetryDecision};
use ff_core::state::{
    AttemptLifecycle, AttemptState, AttemptType, BlockingReason, EligibilityState, LifecyclePhase,
    OwnershipState, StateVector, TerminalOutcome,
};
use ff_core::{BackendTag, EngineError, TimestampMs};
use serde_json::Value;

use crate::common::*;
use crate::records::{AttemptRecord, BlobKind, ExecCore, IndexKey, LaneIndex};
use crate::store::{Store, StoreResult};

/// `ff_create_execution` (spec 01 §6.1).
pub fn create_execution(
    store: &mut dyn Store,
    now: TimestampMs,
    args: &CreateExecutionArgs,
) -> StoreResult<CreateExecutionOutcome> {
    args.validate()?;
    let partitions = store.partition_config().num_flow_partitions;
    if args.execution_id.partition_index() >= partitions {
        return Err(EngineError::invalid_input(format!(
            "execution_id: partition {} not below {partitions}",
            args.execution_id.partition_index()
        )));
    }
    let idem_key = args.idempotency_key.as_deref().filter(|k| !k.is_empty());
    if let Some(key) = idem_key
        && let Some((stored, expires_at)) = store.get_idem(&args.namespace, key)?
        && now <= expires_at
    {
        return Ok(CreateExecutionOutcome::Duplicate { execution_id: stored });
    }
    if store.get_exec(&args.execution_id)?.is_some() {
        return Ok(CreateExecutionOutcome::Duplicate { execution_id: args.execution_id.clone() });
    }
    let required = required_capabilities(&args.policy_json)?;
    let admission = admission_attachment(&args.policy_json);
    let delayed = args.delay_until.is_some_and(|d| d > now);
    let detail =
        if delayed { format!("delayed until {}", args.delay_until.unwrap_or(0)) } else { String::new() };
    let core = ExecCore {
        execution_id: args.execution_id.clone(),
        namespace: args.namespace.clone(),
        lane_id: args.lane_id.clone(),
        current_lane: args.lane_id.clone(),
        execution_kind: args.execution_kind.clone(),
        priority: clamp_priority(args.priority),
        creator_identity: args.creator_identity.clone(),
        flow_id: None,
        required_capabilities: required,
        state: StateVector::created(delayed, detail),
        total_attempt_count: 0,
        current_attempt_index: None,
        current_attempt_id: None,
        current_lease_id: None,
        current_lease_epoch: 0,
        current_worker_id: None,
        current_worker_instance_id: None,
        retry_count: 0,
        replay_count: 0,
        lease_reclaim_count: 0,
        created_at: now,
        started_at: None,
        completed_at: None,
        last_transition_at: now,
        last_mutation_at: now,
        lease_acquired_at: None,
        lease_expires_at: None,
        lease_last_renewed_at: None,
        lease_renewal_deadline: None,
        lease_expired_at: None,
        lease_revoked_at: None,
        lease_revoke_reason: None,
        delay_until: if delayed { args.delay_until } else { None },
        current_suspension_id: None,
        current_waitpoint_id: None,
        pending_retry_reason: None,
        pending_replay_reason: None,
        pending_replay_requested_by: None,
        pending_previous_attempt_index: None,
        progress_pct: None,
        progress_message: None,
        progress_updated_at: None,
        failure_reason: None,
        cancellation_reason: None,
        cancelled_by: None,
        pending_replay_attempt: false,
        last_capability_mismatch_at: None,
        last_hmac_validation_failed_at: None,
        budget_ids: admission.0,
        quota_policy_id: admission.1,
    };
    let id = &args.execution_id;
    store.put_exec(&core)?;
    if !args.input_payload.is_empty() {
        store.put_blob(id, BlobKind::Payload, &args.input_payload)?;
    }
    if !args.policy_json.is_empty() {
        store.put_blob(id, BlobKind::Policy, args.policy_json.as_bytes())?;
    }
    if !args.tags.is_empty() {
        let pairs: Vec<(String, String)> = args.tags.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
        store.put_tags(id, &pairs)?;
    }
    if delayed {
        let until = args.delay_until.unwrap_or(now);
        store.index_add(&lane_key(&core, LaneIndex::Delayed), id.as_str(), until)?;
    } else {
        add_eligible(store, &core)?;
    }
    let p = id.partition_index();
    store.index_add(&IndexKey::AllExecutions(p), id.as_str(), 0)?;
    store.index_add(&IndexKey::Lanes, args.lane_id.as_str(), 0)?;
    if let Some(deadline) = args.execution_deadline_at.filter(|d| *d > 0) {
        store.index_add(&IndexKey::ExecutionDeadline(p), id.as_str(), deadline)?;
    }
    if let Some(key) = idem_key {
        let window = policy::policy_u64(&args.policy_json, "dedup_window_ms")
            .unwrap_or(policy::DEDUP_WINDOW_MS_DEFAULT);
        let expires = now.saturating_add(i64::try_from(window).unwrap_or(i64::MAX));
        store.put_idem(&args.namespace, key, id, expires)?;
    }
    Ok(CreateExecutionOutcome::Created { execution_id: id.clone(), public_state: core.state.public_state })
}

fn policy_err(detail: &str) -> EngineError {
    EngineError::validation(ValidationKind::InvalidPolicyJson, detail)
}

fn caps_err(detail: &str) -> EngineError {
    EngineError::validation(ValidationKind::InvalidCapabilities, detail)
}

/// Validates the policy's routing requirements; returns the sorted CSV (spec 01 §6.1 step 4).
pub fn required_capabilities(policy_json: &str) -> StoreResult<Option<String>> {
    if policy_json.is_empty() || policy_json == "{}" {
        return Ok(None);
    }
    let value: Value = serde_json::from_str(policy_json).map_err(|_| policy_err("malformed"))?;
    let Value::Object(obj) = value else { return Ok(None) };
    let Some(routing) = obj.get("routing_requirements") else { return Ok(None) };
    let Value::Object(routing) = routing else {
        return Err(policy_err("routing_requirements:not_object"));
    };
    let Some(req) = routing.get("required_capabilities") else { return Ok(None) };
    let Value::Array(items) = req else { return Err(caps_err("required:not_array")) };
    let mut tokens = Vec::with_capacity(items.len());
    for item in items {
        let Value::String(t) = item else { return Err(caps_err("required:non_string_token")) };
        if t.is_empty() {
            return Err(caps_err("required:empty_token"));
        }
        if t.contains(',') {
            return Err(caps_err("required:comma_in_token"));
        }
        if t.bytes().any(|b| b <= 0x20 || b == 0x7f) {
            return Err(caps_err("required:control_or_whitespace"));
        }
        tokens.push(t.clone());
    }
    if tokens.len() > CAPS_TOKENS_MAX {
        return Err(caps_err("required:too_many_tokens"));
    }
    tokens.sort();
    let csv = tokens.join(",");
    if csv.len() > CAPS_CSV_BYTES_MAX {
        return Err(caps_err("required:too_many_bytes"));
    }
    Ok(if csv.is_empty() { None } else { Some(csv) })
}

/// Budget ids and quota policy id named by the policy (chapter 03 §3.1).
fn admission_attachment(policy_json: &str) -> (Option<String>, Option<String>) {
    let Ok(Value::Object(obj)) = serde_json::from_str::<Value>(policy_json) else {
        return (None, None);
    };
    let budgets = obj
        .get("budget_ids")
        .and_then(Value::as_array)
        .map(|a| a.iter().filter_map(Value::as_str).collect::<Vec<_>>().join(","));
    let quota = obj.get("quota_policy_id").and_then(Value::as_str).map(str::to_owned);
    (budgets.filter(|b| !b.is_empty()), quota.filter(|q| !q.is_empty()))
}

/// Checks a grant for a claimant: present, live and for this worker (spec 01 §9.2).
pub fn check_grant(
    store: &dyn Store,
    id: &ff_core::ExecutionId,
    worker_id: &ff_core::WorkerId,
    now: TimestampMs,
) -> StoreResult<()> {
    match store.get_grant(id)? {
        Some(g) if g.is_live(now) && g.worker_id == *worker_id => Ok(()),
        _ => Err(EngineError::Contention(ContentionKind::InvalidClaimGrant)),
    }
}

/// Mints the handle for a new lease.
pub fn mint_handle(
    tag: BackendTag,
    kind: HandleKind,
    core: &ExecCore,
    attempt_index: u32,
    lease_ttl_ms: u64,
    lane: &ff_core::LaneId,
) -> Handle {
    let payload = HandlePayload {
        execution_id: core.execution_id.clone(),
        attempt_index,
        attempt_id: core.current_attempt_id.unwrap_or_default(),
        lease_id: core.current_lease_id.unwrap_or_default(),
        lease_epoch: core.current_lease_epoch,
        lease_ttl_ms,
        lane_id: lane.clone(),
        worker_instance_id: core.current_worker_instance_id.clone().unwrap_or_default(),
    };
    Handle::mint(tag, kind, &payload)
}

/// Flattens an attempt policy JSON object to string fields.
fn flatten_policy(json: &str) -> BTreeMap<String, String> {
    let Ok(Value::Object(obj)) = serde_json::from_str::<Value>(json) else {
        return BTreeMap::new();
    };
    obj.into_iter()
        .map(|(k, v)| {
            let s = match v {
                Value::String(s) => s,
                other => other.to_string(),
            };
            (k, s)
        })
        .collect()
}

/// Parameters of a fresh attempt (claim and the fresh branch of grant-and-claim).
pub struct FreshClaim<'a> {
    /// Claiming worker.
    pub worker_id: &'a ff_core::WorkerId,
    /// Claiming instance.
    pub worker_instance_id: &'a ff_core::WorkerInstanceId,
    /// Lane stored as `current_lane`.
    pub lane_id: &'a ff_core::LaneId,
    /// New lease id.
    pub lease_id: ff_core::LeaseId,
    /// New attempt id.
    pub attempt_id: ff_core::AttemptId,
    /// Lease TTL.
    pub lease_ttl_ms: u64,
    /// Attempt policy JSON.
    pub attempt_policy_json: &'a str,
    /// Attempt timeout.
    pub attempt_timeout_ms: Option<u64>,
    /// Execution deadline.
    pub execution_deadline_at: Option<TimestampMs>,
    /// `acquired` event reason, if any.
    pub event_reason: Option<&'static str>,
}

/// Creates a new attempt and lease on a runnable execution (spec 01 §6.2 effects).
pub fn start_fresh_attempt(
    store: &mut dyn Store,
    core: &mut ExecCore,
    c: &FreshClaim<'_>,
    now: TimestampMs,
) -> StoreResult<(TimestampMs, AttemptType)> {
    let id = core.execution_id.clone();
    let index = core.total_attempt_count;
    let (attempt_type, mut rec) = new_attempt_record(core, c, index, now);
    rec.policy = flatten_policy(c.attempt_policy_json);
    store.delete_grant(&id)?;
    let acq = Acquisition {
        lease_id: c.lease_id,
        attempt_id: c.attempt_id,
        worker_id: c.worker_id,
        worker_instance_id: c.worker_instance_id,
        lease_ttl_ms: c.lease_ttl_ms,
        renew_before_ms: two_thirds(c.lease_ttl_ms),
    };
    remove_from_runnable_indexes(store, core)?;
    let expires = acquire_lease(store, core, &acq, now)?;
    rec.lease_epoch = core.current_lease_epoch;
    store.put_attempt(&rec)?;
    store.index_add(&IndexKey::AttemptsOf(id.clone()), &index.to_string(), now)?;
    transition(core, StateVector::leased(), now);
    core.current_attempt_index = Some(index);
    core.total_attempt_count = index + 1;
    core.current_lane = c.lane_id.clone();
    core.started_at.get_or_insert(now);
    core.pending_retry_reason = None;
    core.pending_replay_reason = None;
    core.pending_replay_requested_by = None;
    core.pending_previous_attempt_index = None;
    core.pending_replay_attempt = false;
    let p = id.partition_index();
    if let Some(t) = c.attempt_timeout_ms.filter(|t| *t > 0) {
        let at = now.saturating_add(i64::try_from(t).unwrap_or(i64::MAX));
        store.index_add(&IndexKey::AttemptTimeout(p), id.as_str(), at)?;
    }
    if let Some(d) = c.execution_deadline_at.filter(|d| *d > 0) {
        store.index_add(&IndexKey::ExecutionDeadline(p), id.as_str(), d)?;
    }
    let mut fields = vec![
        ("lease_id", c.lease_id.to_string()),
        ("lease_epoch", core.current_lease_epoch.to_string()),
        ("attempt_id", c.attempt_id.to_string()),
        ("attempt_index", index.to_string()),
        ("worker_id", c.worker_id.to_string()),
    ];
    if let Some(r) = c.event_reason {
        fields.push(("reason", r.to_owned()));
    }
    store.append_lease_event(&id, "acquired", now, fields)?;
    store.put_exec(core)?;
    Ok((expires, attempt_type))
}

/// A started attempt record with no lineage.
pub fn blank_attempt(
    core: &ExecCore,
    attempt_id: ff_core::AttemptId,
    lease_id: ff_core::LeaseId,
    worker_id: &ff_core::WorkerId,
    worker_instance_id: &ff_core::WorkerInstanceId,
    index: u32,
    now: TimestampMs,
) -> AttemptRecord {
    AttemptRecord {
        attempt_id,
        execution_id: core.execution_id.clone(),
        attempt_index: index,
        attempt_type: AttemptType::Initial,
        attempt_state: AttemptLifecycle::Started,
        created_at: now,
        started_at: now,
        lease_id,
        lease_epoch: core.current_lease_epoch + 1,
        worker_id: worker_id.clone(),
        worker_instance_id: worker_instance_id.clone(),
        retry_reason: None,
        previous_attempt_index: None,
        replay_reason: None,
        replay_requested_by: None,
        replayed_from_attempt_index: None,
        reclaim_reason: None,
        ended_at: None,
        failure_reason: None,
        failure_category: None,
        suspended_at: None,
        suspension_id: None,
        resumed_at: None,
        policy: BTreeMap::new(),
        usage: BTreeMap::from([("last_usage_report_seq".to_owned(), 0)]),
    }
}

fn new_attempt_record(
    core: &ExecCore,
    c: &FreshClaim<'_>,
    index: u32,
    now: TimestampMs,
) -> (AttemptType, AttemptRecord) {
    let attempt_type = match core.state.attempt_state {
        AttemptState::PendingRetryAttempt => AttemptType::Retry,
        AttemptState::PendingReplayAttempt => AttemptType::Replay,
        _ => AttemptType::Initial,
    };
    let mut rec =
        blank_attempt(core, c.attempt_id, c.lease_id, c.worker_id, c.worker_instance_id, index, now);
    rec.attempt_type = attempt_type;
    match attempt_type {
        AttemptType::Retry => {
            rec.retry_reason = core.pending_retry_reason.clone();
            rec.previous_attempt_index = core.pending_previous_attempt_index;
        }
        AttemptType::Replay => {
            rec.replay_reason = core.pending_replay_reason.clone();
            rec.replay_requested_by = core.pending_replay_requested_by.clone();
            rec.replayed_from_attempt_index = core.pending_previous_attempt_index;
        }
        _ => {}
    }
    (attempt_type, rec)
}

/// `ff_claim_execution` (spec 01 §6.2).
pub fn claim_execution(
    store: &mut dyn Store,
    now: TimestampMs,
    tag: BackendTag,
    args: &ClaimExecutionArgs,
) -> StoreResult<ClaimedExecution> {
    args.validate()?;
    let mut core = load(store, &args.execution_id)?;
    let s = &core.state;
    if s.lifecycle_phase != LifecyclePhase::Runnable {
        return Err(EngineError::Contention(ContentionKind::ExecutionNotLeaseable));
    }
    if s.ownership_state != OwnershipState::Unowned {
        return Err(EngineError::Contention(ContentionKind::LeaseConflict));
    }
    if s.eligibility_state != EligibilityState::EligibleNow || s.terminal_outcome != TerminalOutcome::None {
        return Err(EngineError::Contention(ContentionKind::ExecutionNotLeaseable));
    }
    match s.attempt_state {
        AttemptState::RunningAttempt => {
            return Err(EngineError::Conflict(ConflictKind::ActiveAttemptExists));
        }
        AttemptState::AttemptInterrupted => {
            return Err(EngineError::Contention(ContentionKind::UseClaimResumedExecution));
        }
        _ => {}
    }
    check_grant(store, &args.execution_id, &args.worker_id, now)?;
    let claim = FreshClaim {
        worker_id: &args.worker_id,
        worker_instance_id: &args.worker_instance_id,
        lane_id: &args.lane_id,
        lease_id: args.lease_id,
        attempt_id: args.attempt_id,
        lease_ttl_ms: args.lease_ttl_ms,
        attempt_policy_json: &args.attempt_policy_json,
        attempt_timeout_ms: args.attempt_timeout_ms,
        execution_deadline_at: args.execution_deadline_at,
        event_reason: None,
    };
    let (expires, attempt_type) = start_fresh_attempt(store, &mut core, &claim, now)?;
    let index = core.total_attempt_count - 1;
    let handle = mint_handle(tag, HandleKind::Fresh, &core, index, args.lease_ttl_ms, &args.lane_id);
    Ok(ClaimedExecution {
        execution_id: args.execution_id.clone(),
        lease_id: args.lease_id,
        lease_epoch: core.current_lease_epoch,
        attempt_index: index,
        attempt_id: args.attempt_id,
        attempt_type,
        lease_expires_at: expires,
        handle,
    })
}

/// Loads, resolves the fence and validates the lease of a terminal-style op.
fn load_fenced(
    store: &mut dyn Store,
    now: TimestampMs,
    id: &ff_core::ExecutionId,
    fence: &Option<ff_core::LeaseFence>,
    source: &ff_core::CancelSource,
) -> StoreResult<ExecCore> {
    let mut core = load(store, id)?;
    let fence = resolve_fence(&core, fence, source, true)?;
    validate_lease_and_mark(store, &mut core, fence.as_ref(), now)?;
    Ok(core)
}

/// Ends the current attempt record with a lifecycle and optional failure.
pub fn end_attempt(
    store: &mut dyn Store,
    core: &ExecCore,
    state: AttemptLifecycle,
    failure: Option<(&str, &str)>,
    now: TimestampMs,
) -> StoreResult<()> {
    let Some(idx) = core.current_attempt_index else { return Ok(()) };
    let Some(mut rec) = store.get_attempt(&core.execution_id, idx)? else { return Ok(()) };
    rec.attempt_state = state;
    rec.ended_at = Some(now);
    if let Some((reason, category)) = failure {
        rec.failure_reason = Some(reason.to_owned());
        if !category.is_empty() {
            rec.failure_category = Some(category.to_owned());
        }
    }
    store.put_attempt(&rec)
}

/// Moves an execution to its lane's terminal index and drops timeout entries.
pub fn enter_terminal_index(store: &mut dyn Store, core: &ExecCore, now: TimestampMs) -> StoreResult<()> {
    let id = core.execution_id.as_str();
    let p = core.execution_id.partition_index();
    store.index_remove(&IndexKey::ExecutionDeadline(p), id)?;
    store.index_remove(&IndexKey::AttemptTimeout(p), id)?;
    store.index_add(&lane_key(core, LaneIndex::Terminal), id, now)
}

/// `ff_complete_execution` (spec 01 §6.3).
pub fn complete_execution(
    store: &mut dyn Store,
    now: TimestampMs,
    args: &CompleteExecutionArgs,
) -> StoreResult<CompleteOutcome> {
    args.validate()?;
    let mut core = load_fenced(store, now, &args.execution_id, &args.fence, &args.source)?;
    end_attempt(store, &core, AttemptLifecycle::EndedSuccess, None, now)?;
    if let Some(idx) = core.current_attempt_index {
        close_stream_meta(store, &core.execution_id, idx, "attempt_success", now, true)?;
    }
    if let Some(result) = args.result_payload.as_ref().filter(|r| !r.is_empty()) {
        store.put_blob(&args.execution_id, BlobKind::Result, result)?;
    }
    release_lease(store, &mut core, "completed", now, false)?;
    transition(
        &mut core,
        StateVector::terminal(TerminalOutcome::Success, AttemptState::AttemptTerminal),
        now,
    );
    core.completed_at = Some(now);
    core.lease_expired_at = None;
    core.lease_revoked_at = None;
    core.lease_revoke_reason = None;
    enter_terminal_index(store, &core, now)?;
    publish_if_flow(store, &core, "success", now)?;
    store.put_exec(&core)?;
    Ok(CompleteOutcome::Completed { execution_id: args.execution_id.clone() })
}

/// The stored policy's `retry_policy` member as JSON (`""` when absent or invalid).
fn stored_retry_policy(store: &dyn Store, id: &ff_core::ExecutionId) -> StoreResult<String> {
    let Some(bytes) = store.get_blob(id, BlobKind::Policy)? else { return Ok(String::new()) };
    let Ok(Value::Object(obj)) = serde_json::from_slice::<Value>(&bytes) else {
        return Ok(String::new());
    };
    Ok(obj.get("retry_policy").filter(|v| !v.is_null()).map(Value::to_string).unwrap_or_default())
}

/// `ff_fail_execution` (spec 01 §6.7, retry §7).
pub fn fail_execution(
    store: &mut dyn Store,
    now: TimestampMs,
    args: &FailExecutionArgs,
) -> StoreResult<FailOutcome> {
    args.validate()?;
    let retry_json = match &args.retry_policy_json {
        Some(j) => j.clone(),
        None => stored_retry_policy(store, &args.execution_id)?,
    };
    let mut core = load_fenced(store, now, &args.execution_id, &args.fence, &args.source)?;
    let failure = (args.failure_reason.as_str(), args.failure_category.as_str());
    end_attempt(store, &core, AttemptLifecycle::EndedFailure, Some(failure), now)?;
    if let Some(idx) = core.current_attempt_index {
        close_stream_meta(store, &core.execution_id, idx, "attempt_failure", now, true)?;
    }
    core.failure_reason = Some(args.failure_reason.clone());
    match policy::retry_decision(&retry_json, core.retry_count) {
        RetryDecision::Retry { backoff_ms } => {
            let until = policy::delay_until(now, backoff_ms);
            let idx = core.current_attempt_index.unwrap_or(0);
            release_lease(store, &mut core, "failed_retry_scheduled", now, false)?;
            let detail =
                format!("retry backoff until {until} (attempt {idx} failed: {})", args.failure_reason);
            let state = StateVector::runnable(
                EligibilityState::NotEligibleUntilTime,
                BlockingReason::WaitingForRetryBackoff,
                detail,
                AttemptState::PendingRetryAttempt,
            );
            transition(&mut core, state, now);
            core.pending_retry_reason = Some(args.failure_reason.clone());
            core.pending_previous_attempt_index = Some(idx);
            core.retry_count += 1;
            core.current_attempt_id = None;
            core.delay_until = Some(until);
            store.index_add(&lane_key(&core, LaneIndex::Delayed), args.execution_id.as_str(), until)?;
            store.put_exec(&core)?;
            Ok(FailOutcome::RetryScheduled { delay_until: until })
        }
        RetryDecision::Terminal => {
            release_lease(store, &mut core, "failed_terminal", now, false)?;
            let state = StateVector::terminal(TerminalOutcome::Failed, AttemptState::AttemptTerminal);
            transition(&mut core, state, now);
            core.completed_at = Some(now);
            enter_terminal_index(store, &core, now)?;
            publish_if_flow(store, &core, "failed", now)?;
            store.put_exec(&core)?;
            Ok(FailOutcome::TerminalFailed)
        }
    }
}
