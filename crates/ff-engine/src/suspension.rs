//! Suspension, waitpoints and signals (spec 02 §3, §6–§9): create and close
//! waitpoints, suspend, deliver (or buffer) signals, operator resume, the
//! suspension timeout, and the HMAC keystore.
//!
//! Every check runs before the first write (the spec's recommended order), so
//! a refused call writes nothing except the listed intentional writes:
//! lease expiry marking and `last_hmac_validation_failed_at`.

use std::collections::BTreeSet;

use ff_core::error::{ContentionKind, StateKind, ValidationKind};
use ff_core::handle::{HandleKind, HandlePayload};
use ff_core::hmac_token::{HmacKeystore, KidInfo, RotateOutcome, SeedKeystoreOutcome};
use ff_core::state::{
    AttemptLifecycle, AttemptState, BlockingReason, EligibilityState, LifecyclePhase, OwnershipState,
    PublicState, StateVector, TerminalOutcome,
};
use ff_core::suspension::*;
use ff_core::{BackendTag, EngineError, ExecutionId, SignalId, SuspensionId, TimestampMs, WaitpointId};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::common::*;
use crate::conditions::{self, Arrival, EFFECT_BUFFERED};
use crate::records::{ExecCore, IndexKey, LaneIndex, RecordKind};
use crate::store::{Store, StoreResult};

const KEYSTORE_KEY: &str = "keystore";

/// A waitpoint and its condition state (spec 02 §1.1–1.2).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WaitpointRecord {
    /// Id.
    pub waitpoint_id: WaitpointId,
    /// Owning execution.
    pub execution_id: ExecutionId,
    /// Owning attempt.
    pub attempt_index: u32,
    /// Owning suspension (when active).
    pub suspension_id: Option<SuspensionId>,
    /// Key (part of the MAC).
    pub waitpoint_key: String,
    /// Token `kid:40hex`, minted once.
    pub token: String,
    /// State.
    pub state: WaitpointState,
    /// Mint time (part of the MAC).
    pub created_at: TimestampMs,
    /// Activation time.
    pub activated_at: Option<TimestampMs>,
    /// Pending: the caller's deadline; active: the suspension timeout.
    pub expires_at: Option<TimestampMs>,
    /// When its condition was satisfied.
    pub satisfied_at: Option<TimestampMs>,
    /// When it closed.
    pub closed_at: Option<TimestampMs>,
    /// Why it closed.
    pub close_reason: Option<String>,
    /// Signals delivered.
    pub signal_count: u64,
    /// Signals that counted toward the condition.
    pub matched_signal_count: u64,
    /// Last delivery time.
    pub last_signal_at: Option<TimestampMs>,
    /// Arrival counter of the signal log.
    pub log_seq: u64,
    /// Whether its condition record is closed.
    pub condition_closed: bool,
    /// Why the condition closed.
    pub condition_closed_reason: Option<String>,
}

/// An execution's current suspension (spec 02 §1.3).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SuspensionRecord {
    /// Id.
    pub suspension_id: SuspensionId,
    /// Execution.
    pub execution_id: ExecutionId,
    /// Attempt.
    pub attempt_index: u32,
    /// Primary waitpoint.
    pub waitpoint_id: WaitpointId,
    /// Primary key.
    pub waitpoint_key: String,
    /// Extra bindings.
    pub additional: Vec<(WaitpointId, String)>,
    /// Why.
    pub reason_code: SuspensionReasonCode,
    /// Who.
    pub requested_by: SuspensionRequester,
    /// Creation time.
    pub created_at: TimestampMs,
    /// Deadline.
    pub timeout_at: Option<TimestampMs>,
    /// What happens at the deadline (`None` after escalation).
    pub timeout_behavior: Option<TimeoutBehavior>,
    /// The condition.
    pub condition: ResumeCondition,
    /// Stored only.
    pub policy: ResumePolicy,
    /// Opaque.
    pub continuation_metadata_pointer: Option<String>,
    /// Last delivery.
    pub last_signal_at: Option<TimestampMs>,
    /// Satisfaction time.
    pub satisfied_at: Option<TimestampMs>,
    /// Close time.
    pub closed_at: Option<TimestampMs>,
    /// Close reason.
    pub close_reason: Option<String>,
    /// Signal that closed a composite.
    pub closer_signal_id: Option<SignalId>,
    /// Signals that satisfied it.
    pub satisfier_signals: BTreeSet<String>,
    /// Composite satisfier tokens.
    pub tokens: BTreeSet<String>,
}

impl SuspensionRecord {
    fn is_open(&self) -> bool {
        self.closed_at.is_none()
    }

    fn waitpoint_ids(&self) -> Vec<WaitpointId> {
        std::iter::once(self.waitpoint_id).chain(self.additional.iter().map(|(id, _)| *id)).collect()
    }
}

/// A recorded signal (spec 02 §1.4).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SignalRecord {
    /// Id.
    pub signal_id: SignalId,
    /// Target execution.
    pub execution_id: ExecutionId,
    /// Target waitpoint.
    pub waitpoint_id: WaitpointId,
    /// Name.
    pub signal_name: String,
    /// Category.
    pub signal_category: String,
    /// Source type.
    pub source_type: String,
    /// Source identity.
    pub source_identity: String,
    /// Correlation id.
    pub correlation_id: String,
    /// Idempotency key.
    pub idempotency_key: String,
    /// Caller's creation time.
    pub created_at: TimestampMs,
    /// Acceptance time.
    pub accepted_at: TimestampMs,
    /// Payload.
    pub payload: Option<Vec<u8>>,
    /// Payload encoding.
    pub payload_encoding: String,
    /// Effect string.
    pub observed_effect: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct SignalDedup {
    signal_id: SignalId,
    expires_at: TimestampMs,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct SuspendDedup {
    details: SuspendOutcomeDetails,
    already_satisfied: bool,
    expires_at: TimestampMs,
}

fn get<T: DeserializeOwned>(store: &dyn Store, kind: RecordKind, key: &str) -> StoreResult<Option<T>> {
    match store.get_record(kind, key)? {
        None => Ok(None),
        Some(json) => serde_json::from_str(&json).map(Some).map_err(|e| {
            EngineError::validation(ValidationKind::Corruption, format!("{}: {key}: {e}", kind.as_str()))
        }),
    }
}

fn put<T: Serialize>(store: &mut dyn Store, kind: RecordKind, key: &str, v: &T) -> StoreResult<()> {
    let json = serde_json::to_string(v).map_err(|e| {
        EngineError::validation(ValidationKind::Corruption, format!("{}: {e}", kind.as_str()))
    })?;
    store.put_record(kind, key, &json)
}

fn waitpoint(store: &dyn Store, id: &WaitpointId) -> StoreResult<Option<WaitpointRecord>> {
    get(store, RecordKind::Waitpoint, &id.to_string())
}

fn put_waitpoint(store: &mut dyn Store, w: &WaitpointRecord) -> StoreResult<()> {
    put(store, RecordKind::Waitpoint, &w.waitpoint_id.to_string(), w)
}

fn suspension(store: &dyn Store, id: &ExecutionId) -> StoreResult<Option<SuspensionRecord>> {
    get(store, RecordKind::Suspension, id.as_str())
}

fn keystore(store: &dyn Store) -> StoreResult<HmacKeystore> {
    Ok(get(store, RecordKind::HmacKeystore, KEYSTORE_KEY)?.unwrap_or_default())
}

// ------------------------------------------------------------ HMAC keystore

/// `seed_waitpoint_hmac_secret` on the single keystore (spec 02 §2.9).
pub fn seed_hmac_secret(
    store: &mut dyn Store,
    kid: &str,
    secret_hex: &str,
) -> StoreResult<SeedKeystoreOutcome> {
    let mut ks = keystore(store)?;
    let out = ks.seed(kid, secret_hex)?;
    if out == SeedKeystoreOutcome::Installed {
        put(store, RecordKind::HmacKeystore, KEYSTORE_KEY, &ks)?;
    }
    Ok(out)
}

/// `rotate_waitpoint_hmac_secret` on the single keystore (spec 02 §2.6).
pub fn rotate_hmac_secret(
    store: &mut dyn Store,
    now: TimestampMs,
    new_kid: &str,
    new_secret_hex: &str,
    grace_ms: u64,
) -> StoreResult<RotateOutcome> {
    let mut ks = keystore(store)?;
    let before = ks.clone();
    let out = ks.rotate(new_kid, new_secret_hex, grace_ms, now)?;
    if ks != before {
        put(store, RecordKind::HmacKeystore, KEYSTORE_KEY, &ks)?;
    }
    Ok(out)
}

/// `ff_list_waitpoint_hmac_kids` (spec 02 §2.8): the current kid and the kids still verifying.
pub fn list_hmac_kids(
    store: &mut dyn Store,
    now: TimestampMs,
) -> StoreResult<(Option<String>, Vec<KidInfo>)> {
    let ks = keystore(store)?;
    Ok((ks.current_kid().map(str::to_owned), ks.kids(now)))
}

// ------------------------------------------------------------ waitpoints

/// `ff_create_pending_waitpoint` (spec 02 §3.2) with the full fence check.
pub fn create_pending_waitpoint(
    store: &mut dyn Store,
    now: TimestampMs,
    args: &CreateWaitpointArgs,
) -> StoreResult<PendingWaitpoint> {
    if args.waitpoint_key.len() > ff_core::contracts::NAME_BYTES_MAX {
        return Err(EngineError::invalid_input("waitpoint_key: longer than 256 bytes"));
    }
    let mut core = load(store, &args.execution_id)?;
    validate_lease_and_mark(store, &mut core, Some(&args.fence), now)?;
    if core.current_attempt_index != Some(args.attempt_index) {
        return Err(EngineError::State(StateKind::StaleLease));
    }
    if waitpoint(store, &args.waitpoint_id)?.is_some_and(|w| w.state != WaitpointState::Closed) {
        return Err(EngineError::Conflict(ff_core::error::ConflictKind::WaitpointAlreadyExists));
    }
    let token = keystore(store)?.mint(&args.waitpoint_id, &args.waitpoint_key, now)?;
    let expires_at = now.saturating_add(i64::try_from(args.expires_in_ms).unwrap_or(i64::MAX));
    let w = new_waitpoint(
        &core,
        args.waitpoint_id,
        &args.waitpoint_key,
        token.as_str(),
        now,
        WaitpointState::Pending,
    );
    let w = WaitpointRecord { expires_at: Some(expires_at), ..w };
    put_waitpoint(store, &w)?;
    let p = args.execution_id.partition_index();
    store.index_add(&IndexKey::PendingWaitpointExpiry(p), &args.waitpoint_id.to_string(), expires_at)?;
    store.index_add(&IndexKey::WaitpointsOf(args.execution_id.clone()), &args.waitpoint_id.to_string(), 0)?;
    Ok(PendingWaitpoint { waitpoint_id: args.waitpoint_id, hmac_token: token.as_str().to_owned() })
}

fn new_waitpoint(
    core: &ExecCore,
    id: WaitpointId,
    key: &str,
    token: &str,
    now: TimestampMs,
    state: WaitpointState,
) -> WaitpointRecord {
    WaitpointRecord {
        waitpoint_id: id,
        execution_id: core.execution_id.clone(),
        attempt_index: core.current_attempt_index.unwrap_or(0),
        suspension_id: None,
        waitpoint_key: key.to_owned(),
        token: token.to_owned(),
        state,
        created_at: now,
        activated_at: None,
        expires_at: None,
        satisfied_at: None,
        closed_at: None,
        close_reason: None,
        signal_count: 0,
        matched_signal_count: 0,
        last_signal_at: None,
        log_seq: 0,
        condition_closed: false,
        condition_closed_reason: None,
    }
}

/// Closes a waitpoint record and its condition.
fn close_record(
    w: &mut WaitpointRecord,
    reason: &str,
    condition_reason: &str,
    now: TimestampMs,
    satisfied: bool,
) {
    w.state = WaitpointState::Closed;
    w.closed_at = Some(now);
    w.close_reason = Some(reason.to_owned());
    if satisfied {
        w.satisfied_at = Some(now);
    }
    w.condition_closed = true;
    w.condition_closed_reason = Some(condition_reason.to_owned());
}

/// `ff_close_waitpoint` (spec 02 §3.4); closing an active waitpoint also closes its condition.
pub fn close_waitpoint(
    store: &mut dyn Store,
    now: TimestampMs,
    execution_id: &ExecutionId,
    waitpoint_id: &WaitpointId,
    reason: &str,
) -> StoreResult<bool> {
    let expiry = IndexKey::PendingWaitpointExpiry(execution_id.partition_index());
    let Some(mut w) = waitpoint(store, waitpoint_id)? else {
        store.index_remove(&expiry, &waitpoint_id.to_string())?;
        return Err(EngineError::Contention(ContentionKind::WaitpointNotFound));
    };
    if w.state == WaitpointState::Closed {
        return Ok(false);
    }
    let reason = if reason.is_empty() { "proactive_close" } else { reason };
    close_record(&mut w, reason, reason, now, false);
    put_waitpoint(store, &w)?;
    store.index_remove(&expiry, &waitpoint_id.to_string())?;
    Ok(true)
}

// ------------------------------------------------------------ suspend

/// The validated plan of a suspend, computed before any write.
struct Plan {
    primary: WaitpointRecord,
    extras: Vec<WaitpointRecord>,
    tokens: BTreeSet<String>,
    already_satisfied: bool,
}

/// `ff_suspend_execution` (spec 02 §6) fenced by an explicit triple.
pub fn suspend(
    store: &mut dyn Store,
    now: TimestampMs,
    tag: BackendTag,
    req: &SuspendByTripleArgs,
) -> StoreResult<SuspendOutcome> {
    let args = &req.args;
    args.validate(now)?;
    let dedup_key = args.idempotency_key.as_deref().filter(|k| !k.is_empty());
    if let Some(k) = dedup_key
        && let Some(d) =
            get::<SuspendDedup>(store, RecordKind::SuspendDedup, &format!("{}|{k}", req.execution_id))?
        && now <= d.expires_at
    {
        return Ok(replay_dedup(d, tag, req));
    }
    let Some(fence) = &req.fence else { return Err(EngineError::invalid_input("fence_required")) };
    let mut core = load(store, &req.execution_id)?;
    validate_lease_and_mark(store, &mut core, Some(fence), now)?;
    if core.current_attempt_index != Some(req.attempt_index) {
        return Err(EngineError::validation(ValidationKind::InvalidLeaseForSuspend, "attempt_index"));
    }
    if suspension(store, &req.execution_id)?.is_some_and(|s| s.is_open()) {
        return Err(EngineError::State(StateKind::AlreadySuspended));
    }
    let plan = plan_waitpoints(store, now, &core, args)?;
    let details = details_of(args, &plan);
    if plan.already_satisfied {
        let mut primary = plan.primary;
        close_record(&mut primary, "resumed", "satisfied", now, true);
        put_waitpoint(store, &primary)?;
        store.index_remove(
            &IndexKey::PendingWaitpointExpiry(core.execution_id.partition_index()),
            &primary.waitpoint_id.to_string(),
        )?;
        write_dedup(store, now, req, &details, true)?;
        return Ok(SuspendOutcome::AlreadySatisfied { details });
    }
    apply_suspend(store, now, &mut core, args, plan)?;
    write_dedup(store, now, req, &details, false)?;
    let handle = suspended_handle(tag, req, fence, core.lane_id.clone());
    Ok(SuspendOutcome::Suspended { details, handle: Some(handle) })
}

/// The handle a suspend returns to the fenced caller: the attempt it paused, on `lane_id`.
pub fn suspended_handle(
    tag: BackendTag,
    req: &SuspendByTripleArgs,
    fence: &ff_core::LeaseFence,
    lane_id: ff_core::LaneId,
) -> ff_core::Handle {
    let payload = HandlePayload {
        execution_id: req.execution_id.clone(),
        attempt_index: req.attempt_index,
        attempt_id: fence.attempt_id,
        lease_id: fence.lease_id,
        lease_epoch: fence.lease_epoch,
        lease_ttl_ms: 0,
        lane_id,
        worker_instance_id: ff_core::WorkerInstanceId::default(),
    };
    ff_core::Handle::mint(tag, HandleKind::Suspended, &payload)
}

fn details_of(args: &SuspendArgs, plan: &Plan) -> SuspendOutcomeDetails {
    let bound = |w: &WaitpointRecord| BoundWaitpoint {
        waitpoint_id: w.waitpoint_id,
        waitpoint_key: w.waitpoint_key.clone(),
        waitpoint_token: w.token.clone(),
    };
    SuspendOutcomeDetails {
        suspension_id: args.suspension_id,
        primary: bound(&plan.primary),
        additional_waitpoints: plan.extras.iter().map(bound).collect(),
    }
}

fn replay_dedup(d: SuspendDedup, tag: BackendTag, req: &SuspendByTripleArgs) -> SuspendOutcome {
    if d.already_satisfied {
        return SuspendOutcome::AlreadySatisfied { details: d.details };
    }
    let handle = req.fence.as_ref().map(|f| suspended_handle(tag, req, f, ff_core::LaneId::new("")));
    SuspendOutcome::Suspended { details: d.details, handle }
}

fn write_dedup(
    store: &mut dyn Store,
    now: TimestampMs,
    req: &SuspendByTripleArgs,
    details: &SuspendOutcomeDetails,
    already_satisfied: bool,
) -> StoreResult<()> {
    let Some(k) = req.args.idempotency_key.as_deref().filter(|k| !k.is_empty()) else { return Ok(()) };
    let ttl = match req.args.timeout_at {
        Some(t) => ((t - now).max(0) + SUSPEND_DEDUP_GRACE_MS).min(SUSPEND_DEDUP_TTL_MS_MAX),
        None => SUSPEND_DEDUP_TTL_MS_MAX,
    };
    let d = SuspendDedup { details: details.clone(), already_satisfied, expires_at: now.saturating_add(ttl) };
    put(store, RecordKind::SuspendDedup, &format!("{}|{k}", req.execution_id), &d)
}

/// Builds the primary and extra waitpoint records without writing (spec 02 §6.2 steps 8–9).
fn plan_waitpoints(
    store: &dyn Store,
    now: TimestampMs,
    core: &ExecCore,
    args: &SuspendArgs,
) -> StoreResult<Plan> {
    let ks = keystore(store)?;
    let mut tokens = BTreeSet::new();
    let (primary, already_satisfied) = match &args.waitpoints[0] {
        WaitpointBinding::Fresh { waitpoint_id, waitpoint_key } => {
            let token = ks.mint(waitpoint_id, waitpoint_key, now)?;
            (fresh_active(core, *waitpoint_id, waitpoint_key, token.as_str(), now, args), false)
        }
        WaitpointBinding::UsePending { waitpoint_id } => {
            activate_pending(store, now, core, args, *waitpoint_id, &mut tokens)?
        }
    };
    let mut extras = Vec::new();
    for b in args.waitpoints.iter().skip(1) {
        if let WaitpointBinding::Fresh { waitpoint_id, waitpoint_key } = b {
            let token = ks.mint(waitpoint_id, waitpoint_key, now)?;
            extras.push(fresh_active(core, *waitpoint_id, waitpoint_key, token.as_str(), now, args));
        }
    }
    Ok(Plan { primary, extras, tokens, already_satisfied })
}

fn fresh_active(
    core: &ExecCore,
    id: WaitpointId,
    key: &str,
    token: &str,
    now: TimestampMs,
    args: &SuspendArgs,
) -> WaitpointRecord {
    let mut w = new_waitpoint(core, id, key, token, now, WaitpointState::Active);
    w.suspension_id = Some(args.suspension_id);
    w.activated_at = Some(now);
    w.expires_at = args.timeout_at;
    w
}

/// Checks and activates a pending waitpoint, replaying its buffered signals (spec 02 §6.2 step 8a).
fn activate_pending(
    store: &dyn Store,
    now: TimestampMs,
    core: &ExecCore,
    args: &SuspendArgs,
    id: WaitpointId,
    tokens: &mut BTreeSet<String>,
) -> StoreResult<(WaitpointRecord, bool)> {
    let Some(mut w) = waitpoint(store, &id)? else {
        return Err(EngineError::Contention(ContentionKind::WaitpointNotFound));
    };
    if w.state != WaitpointState::Pending {
        return Err(EngineError::State(StateKind::WaitpointNotPending));
    }
    if w.execution_id != core.execution_id || Some(w.attempt_index) != core.current_attempt_index {
        return Err(EngineError::validation(ValidationKind::InvalidWaitpointForExecution, ""));
    }
    if w.expires_at.is_some_and(|e| e <= now) {
        return Err(EngineError::State(StateKind::PendingWaitpointExpired));
    }
    if w.token.is_empty() {
        return Err(EngineError::validation(ValidationKind::WaitpointNotTokenBound, ""));
    }
    w.suspension_id = Some(args.suspension_id);
    w.state = WaitpointState::Active;
    w.activated_at = Some(now);
    w.expires_at = args.timeout_at;
    let satisfied = replay_buffered(store, &w, &args.resume_condition, tokens)?;
    Ok((w, satisfied))
}

/// Feeds the buffered signals of a waitpoint, oldest first, to the evaluator.
fn replay_buffered(
    store: &dyn Store,
    w: &WaitpointRecord,
    condition: &ResumeCondition,
    tokens: &mut BTreeSet<String>,
) -> StoreResult<bool> {
    let log =
        store.index_range(&IndexKey::WaitpointSignals(w.waitpoint_id.to_string()), None, i64::MAX, 10_000)?;
    for (_, sid) in log {
        let Some(sig) = get::<SignalRecord>(store, RecordKind::Signal, &sid)? else { continue };
        let wid = w.waitpoint_id.to_string();
        let sid_text = sig.signal_id.to_string();
        let arrival = Arrival {
            waitpoint_id: &wid,
            waitpoint_key: &w.waitpoint_key,
            signal_id: &sid_text,
            signal_name: &sig.signal_name,
            source_type: &sig.source_type,
            source_identity: &sig.source_identity,
        };
        if conditions::evaluate(condition, tokens, &arrival).satisfied {
            return Ok(true);
        }
    }
    Ok(false)
}

/// Writes the suspension (spec 02 §6.2 steps 9–16) once every check passed.
fn apply_suspend(
    store: &mut dyn Store,
    now: TimestampMs,
    core: &mut ExecCore,
    args: &SuspendArgs,
    plan: Plan,
) -> StoreResult<()> {
    let id = core.execution_id.clone();
    let p = id.partition_index();
    if let Some(old) = suspension(store, &id)? {
        store.index_add(&IndexKey::WaitpointsOf(id.clone()), &old.waitpoint_id.to_string(), 0)?;
        store.delete_record(RecordKind::Suspension, id.as_str())?;
    }
    for w in std::iter::once(&plan.primary).chain(plan.extras.iter()) {
        put_waitpoint(store, w)?;
        store.index_add(&IndexKey::WaitpointsOf(id.clone()), &w.waitpoint_id.to_string(), 0)?;
    }
    store.index_remove(&IndexKey::PendingWaitpointExpiry(p), &plan.primary.waitpoint_id.to_string())?;
    if let Some(idx) = core.current_attempt_index
        && let Some(mut rec) = store.get_attempt(&id, idx)?
    {
        rec.attempt_state = AttemptLifecycle::Suspended;
        rec.suspended_at = Some(now);
        rec.suspension_id = Some(args.suspension_id.to_string());
        store.put_attempt(&rec)?;
    }
    release_lease(store, core, "suspend", now, true)?;
    let state = StateVector {
        lifecycle_phase: LifecyclePhase::Suspended,
        ownership_state: OwnershipState::Unowned,
        eligibility_state: EligibilityState::NotApplicable,
        blocking_reason: args.reason_code.blocking_reason(),
        blocking_detail: format!(
            "suspended: waitpoint {} awaiting {}",
            plan.primary.waitpoint_id,
            args.reason_code.as_str()
        ),
        terminal_outcome: TerminalOutcome::None,
        attempt_state: AttemptState::AttemptInterrupted,
        public_state: PublicState::Suspended,
    };
    transition(core, state, now);
    core.current_suspension_id = Some(args.suspension_id.to_string());
    core.current_waitpoint_id = Some(plan.primary.waitpoint_id.to_string());
    let record = SuspensionRecord {
        suspension_id: args.suspension_id,
        execution_id: id.clone(),
        attempt_index: core.current_attempt_index.unwrap_or(0),
        waitpoint_id: plan.primary.waitpoint_id,
        waitpoint_key: plan.primary.waitpoint_key.clone(),
        additional: plan.extras.iter().map(|w| (w.waitpoint_id, w.waitpoint_key.clone())).collect(),
        reason_code: args.reason_code,
        requested_by: args.requested_by,
        created_at: now,
        timeout_at: args.timeout_at,
        timeout_behavior: Some(args.timeout_behavior),
        condition: args.resume_condition.clone(),
        policy: args.resume_policy.clone(),
        continuation_metadata_pointer: args.continuation_metadata_pointer.clone(),
        last_signal_at: None,
        satisfied_at: None,
        closed_at: None,
        close_reason: None,
        closer_signal_id: None,
        satisfier_signals: BTreeSet::new(),
        tokens: plan.tokens,
    };
    put(store, RecordKind::Suspension, id.as_str(), &record)?;
    let score = args.timeout_at.unwrap_or(ff_core::suspension::SUSPENDED_NO_TIMEOUT_SCORE);
    store.index_add(&lane_key(core, LaneIndex::Suspended), id.as_str(), score)?;
    if let Some(t) = args.timeout_at {
        store.index_add(&IndexKey::SuspensionTimeout(p), id.as_str(), t)?;
    }
    store.put_exec(core)
}

// ------------------------------------------------------------ signals

/// `ff_deliver_signal` (spec 02 §7), routed to buffering for a pending waitpoint (§8).
pub fn deliver_signal(
    store: &mut dyn Store,
    now: TimestampMs,
    args: &DeliverSignalArgs,
) -> StoreResult<DeliverSignalOutcome> {
    args.validate()?;
    let mut core = load(store, &args.execution_id)?;
    let mut w = authenticate(store, now, &mut core, args)?;
    let pending = w.state == WaitpointState::Pending;
    // The dedup guard is checked right after authentication, so a retried
    // delivery that already resumed the execution answers Duplicate.
    let dedup_key = args.idempotency_key.as_deref().filter(|k| !k.is_empty());
    let dedup_ttl = args.dedup_ttl_ms.unwrap_or(SIGNAL_DEDUP_TTL_MS_DEFAULT);
    let guard_key = dedup_key.map(|k| format!("{}|{k}", args.waitpoint_id));
    if let Some(g) = &guard_key
        && dedup_ttl > 0
        && let Some(d) = get::<SignalDedup>(store, RecordKind::SignalDedup, g)?
        && now <= d.expires_at
    {
        return Ok(DeliverSignalOutcome::Duplicate { existing_signal_id: d.signal_id });
    }
    check_signalable(&core, &w)?;
    if !pending && w.condition_closed {
        return Err(EngineError::State(StateKind::WaitpointClosed));
    }
    let max = args.max_signals_per_execution.unwrap_or(SIGNALS_PER_EXECUTION_MAX_DEFAULT);
    if max > 0 && store.index_count(&IndexKey::SignalsOf(args.execution_id.clone()))? >= max {
        return Err(EngineError::validation(ValidationKind::SignalLimitExceeded, ""));
    }
    if let Some(g) = &guard_key
        && dedup_ttl > 0
    {
        let d = SignalDedup {
            signal_id: args.signal_id,
            expires_at: now.saturating_add(i64::try_from(dedup_ttl).unwrap_or(i64::MAX)),
        };
        put(store, RecordKind::SignalDedup, g, &d)?;
    }
    let effect = if pending {
        EFFECT_BUFFERED.to_owned()
    } else {
        evaluate_and_resume(store, now, &mut core, &mut w, args)?
    };
    record_signal(store, now, &mut w, args, &effect)?;
    Ok(DeliverSignalOutcome::Accepted { signal_id: args.signal_id, effect })
}

/// Step 2 of §7.3: the token must verify against the waitpoint before anything else.
fn authenticate(
    store: &mut dyn Store,
    now: TimestampMs,
    core: &mut ExecCore,
    args: &DeliverSignalArgs,
) -> StoreResult<WaitpointRecord> {
    let invalid = || EngineError::validation(ValidationKind::InvalidToken, "invalid_token");
    let w = waitpoint(store, &args.waitpoint_id)?;
    let verdict = match &w {
        None => Err(invalid()),
        Some(w) => keystore(store)?
            .verify(&args.waitpoint_token, &args.waitpoint_id, &w.waitpoint_key, w.created_at, now)
            .and_then(|()| if w.execution_id == args.execution_id { Ok(()) } else { Err(invalid()) }),
    };
    let failure = match (verdict, w) {
        (Ok(()), Some(w)) => return Ok(w),
        (Err(e), _) => e,
        (Ok(()), None) => invalid(),
    };
    core.last_hmac_validation_failed_at = Some(now);
    core.last_mutation_at = now;
    store.put_exec(core)?;
    Err(failure)
}

/// Step 3 of §7.3 (with the recommended suspension binding check).
fn check_signalable(core: &ExecCore, w: &WaitpointRecord) -> StoreResult<()> {
    match core.state.lifecycle_phase {
        LifecyclePhase::Terminal => Err(EngineError::State(StateKind::TargetNotSignalable)),
        LifecyclePhase::Suspended => {
            if w.state == WaitpointState::Pending {
                return Ok(());
            }
            let current = core.current_suspension_id.as_deref();
            if w.suspension_id.map(|s| s.to_string()).as_deref() != current
                || w.state != WaitpointState::Active
            {
                return Err(EngineError::State(StateKind::WaitpointClosed));
            }
            Ok(())
        }
        _ => match w.state {
            WaitpointState::Pending | WaitpointState::Active => Ok(()),
            WaitpointState::Closed => Err(EngineError::State(StateKind::TargetNotSignalable)),
        },
    }
}

/// Evaluates a delivered signal and resumes the execution when satisfied.
fn evaluate_and_resume(
    store: &mut dyn Store,
    now: TimestampMs,
    core: &mut ExecCore,
    w: &mut WaitpointRecord,
    args: &DeliverSignalArgs,
) -> StoreResult<String> {
    let Some(mut s) = suspension(store, &args.execution_id)?.filter(|s| s.is_open()) else {
        return Ok(conditions::EFFECT_NO_OP.to_owned());
    };
    let wid = w.waitpoint_id.to_string();
    let sid = args.signal_id.to_string();
    let arrival = Arrival {
        waitpoint_id: &wid,
        waitpoint_key: &w.waitpoint_key,
        signal_id: &sid,
        signal_name: &args.signal_name,
        source_type: &args.source_type,
        source_identity: &args.source_identity,
    };
    let eval = conditions::evaluate(&s.condition, &mut s.tokens, &arrival);
    if eval.matched && eval.effect != conditions::EFFECT_DUPLICATE {
        s.satisfier_signals.insert(sid.clone());
    }
    if eval.matched {
        w.matched_signal_count += 1;
    }
    s.last_signal_at = Some(now);
    if eval.satisfied {
        s.closer_signal_id = Some(args.signal_id);
        let delay = args.resume_delay_ms.unwrap_or(0);
        let detail = format!("resume delay {delay}ms after signal {}", args.signal_name);
        resume_core(store, now, core, delay, detail)?;
        close_suspension(store, now, &mut s, Some(w), "resumed", "satisfied", true)?;
    }
    put(store, RecordKind::Suspension, args.execution_id.as_str(), &s)?;
    Ok(eval.effect.to_owned())
}

/// Records the signal (record, logs, counters).
fn record_signal(
    store: &mut dyn Store,
    now: TimestampMs,
    w: &mut WaitpointRecord,
    args: &DeliverSignalArgs,
    effect: &str,
) -> StoreResult<()> {
    let rec = SignalRecord {
        signal_id: args.signal_id,
        execution_id: args.execution_id.clone(),
        waitpoint_id: args.waitpoint_id,
        signal_name: args.signal_name.clone(),
        signal_category: args.signal_category.clone(),
        source_type: args.source_type.clone(),
        source_identity: args.source_identity.clone(),
        correlation_id: args.correlation_id.clone().unwrap_or_default(),
        idempotency_key: args.idempotency_key.clone().unwrap_or_default(),
        created_at: args.created_at.unwrap_or(now),
        accepted_at: now,
        payload: args.payload.clone().filter(|p| !p.is_empty()),
        payload_encoding: args.payload_encoding.clone().unwrap_or_else(|| "json".into()),
        observed_effect: effect.to_owned(),
    };
    put(store, RecordKind::Signal, &args.signal_id.to_string(), &rec)?;
    let sid = args.signal_id.to_string();
    w.log_seq += 1;
    let log = IndexKey::WaitpointSignals(w.waitpoint_id.to_string());
    store.index_add(&log, &sid, i64::try_from(w.log_seq).unwrap_or(i64::MAX))?;
    let keep = args.signal_maxlen.unwrap_or(SIGNAL_LOG_LEN_DEFAULT);
    trim_log(store, &log, keep)?;
    store.index_add(&IndexKey::SignalsOf(args.execution_id.clone()), &sid, now)?;
    if effect != EFFECT_BUFFERED {
        w.signal_count += 1;
        w.last_signal_at = Some(now);
    }
    put_waitpoint(store, w)
}

fn trim_log(store: &mut dyn Store, log: &IndexKey, keep: u64) -> StoreResult<()> {
    let n = store.index_count(log)?;
    if keep == 0 || n <= keep {
        return Ok(());
    }
    for (_, m) in store.index_range(log, None, i64::MAX, usize::try_from(n - keep).unwrap_or(usize::MAX))? {
        store.index_remove(log, &m)?;
    }
    Ok(())
}

/// Moves a suspended execution to runnable (eligible, or delayed by `delay_ms`).
fn resume_core(
    store: &mut dyn Store,
    now: TimestampMs,
    core: &mut ExecCore,
    delay_ms: u64,
    detail: String,
) -> StoreResult<()> {
    if core.state.lifecycle_phase != LifecyclePhase::Suspended {
        return Ok(());
    }
    let id = core.execution_id.clone();
    store.index_remove(&lane_key(core, LaneIndex::Suspended), id.as_str())?;
    store.index_remove(&IndexKey::SuspensionTimeout(id.partition_index()), id.as_str())?;
    if delay_ms == 0 {
        let state = StateVector::runnable(
            EligibilityState::EligibleNow,
            BlockingReason::WaitingForWorker,
            String::new(),
            AttemptState::AttemptInterrupted,
        );
        transition(core, state, now);
        add_eligible(store, core)?;
    } else {
        let until = now.saturating_add(i64::try_from(delay_ms).unwrap_or(i64::MAX));
        let state = StateVector::runnable(
            EligibilityState::NotEligibleUntilTime,
            BlockingReason::WaitingForResumeDelay,
            detail,
            AttemptState::AttemptInterrupted,
        );
        transition(core, state, now);
        core.delay_until = Some(until);
        store.index_add(&lane_key(core, LaneIndex::Delayed), id.as_str(), until)?;
    }
    store.put_exec(core)
}

/// Closes a suspension and every waitpoint it bound (the recommended behaviour: primary,
/// extras and conditions all close).
fn close_suspension(
    store: &mut dyn Store,
    now: TimestampMs,
    s: &mut SuspensionRecord,
    arrived: Option<&mut WaitpointRecord>,
    reason: &str,
    condition_reason: &str,
    satisfied: bool,
) -> StoreResult<()> {
    if satisfied {
        s.satisfied_at = Some(now);
    }
    s.closed_at = Some(now);
    s.close_reason = Some(reason.to_owned());
    let arrived_id = arrived.as_ref().map(|w| w.waitpoint_id);
    if let Some(w) = arrived {
        close_record(w, reason, condition_reason, now, satisfied);
    }
    for id in s.waitpoint_ids() {
        if Some(id) == arrived_id {
            continue;
        }
        if let Some(mut w) = waitpoint(store, &id)?.filter(|w| w.state != WaitpointState::Closed) {
            close_record(&mut w, reason, condition_reason, now, satisfied);
            put_waitpoint(store, &w)?;
        }
    }
    Ok(())
}

// ------------------------------------------------------------ resume and timeout

/// `ff_resume_execution` (spec 02 §9.1): operator resume.
pub fn resume_execution(
    store: &mut dyn Store,
    now: TimestampMs,
    args: &ResumeExecutionArgs,
) -> StoreResult<ResumeOutcome> {
    if args.resume_delay_ms > ff_core::contracts::LEASE_TTL_MS_MAX {
        return Err(EngineError::invalid_input("resume_delay_ms: over 24 h"));
    }
    let mut core = load(store, &args.execution_id)?;
    let not_suspended = || EngineError::State(StateKind::ExecutionNotSuspended);
    if core.state.lifecycle_phase != LifecyclePhase::Suspended {
        return Err(not_suspended());
    }
    let mut s = suspension(store, &args.execution_id)?.filter(|s| s.is_open()).ok_or_else(not_suspended)?;
    let detail = format!("resume delay {}ms", args.resume_delay_ms);
    resume_core(store, now, &mut core, args.resume_delay_ms, detail)?;
    close_suspension(store, now, &mut s, None, "resumed", "resumed", true)?;
    put(store, RecordKind::Suspension, args.execution_id.as_str(), &s)?;
    Ok(ResumeOutcome { public_state: core.state.public_state })
}

/// `ff_expire_suspension` (spec 02 §9.2): the suspension-timeout hook.
pub fn expire_suspension(
    store: &mut dyn Store,
    now: TimestampMs,
    id: &ExecutionId,
) -> StoreResult<ExpireSuspensionOutcome> {
    let timeout_index = IndexKey::SuspensionTimeout(id.partition_index());
    let cleaned = |reason: &str| ExpireSuspensionOutcome::AlreadySatisfied { reason: reason.to_owned() };
    let Some(mut core) = store.get_exec(id)? else {
        store.index_remove(&timeout_index, id.as_str())?;
        return Ok(cleaned("not_found_cleaned"));
    };
    if core.state.lifecycle_phase != LifecyclePhase::Suspended {
        store.index_remove(&timeout_index, id.as_str())?;
        return Ok(cleaned("not_suspended_cleaned"));
    }
    let Some(mut s) = suspension(store, id)?.filter(|s| s.is_open()) else {
        store.index_remove(&timeout_index, id.as_str())?;
        return Ok(cleaned("no_active_suspension_cleaned"));
    };
    let (Some(at), Some(behavior)) = (s.timeout_at, s.timeout_behavior) else {
        return Ok(cleaned("not_yet_due"));
    };
    if at > now {
        return Ok(cleaned("not_yet_due"));
    }
    let public_state = match behavior {
        TimeoutBehavior::AutoResumeWithTimeoutSignal => {
            resume_core(store, now, &mut core, 0, String::new())?;
            close_suspension(
                store,
                now,
                &mut s,
                None,
                "timed_out_auto_resume",
                "timed_out_auto_resume",
                false,
            )?;
            PublicState::Waiting
        }
        TimeoutBehavior::Escalate => {
            core.state.blocking_reason = BlockingReason::PausedByOperator;
            core.state.blocking_detail = format!("suspension escalated: timeout at {at}");
            core.last_mutation_at = now;
            s.reason_code = SuspensionReasonCode::WaitingForOperatorReview;
            s.timeout_at = None;
            s.timeout_behavior = None;
            store.index_remove(&timeout_index, id.as_str())?;
            store.put_exec(&core)?;
            PublicState::Suspended
        }
        TimeoutBehavior::Fail | TimeoutBehavior::Cancel | TimeoutBehavior::Expire => {
            timeout_terminal(store, now, &mut core, &mut s, behavior)?
        }
    };
    put(store, RecordKind::Suspension, id.as_str(), &s)?;
    Ok(ExpireSuspensionOutcome::Expired { behavior_applied: behavior, public_state })
}

fn timeout_terminal(
    store: &mut dyn Store,
    now: TimestampMs,
    core: &mut ExecCore,
    s: &mut SuspensionRecord,
    behavior: TimeoutBehavior,
) -> StoreResult<PublicState> {
    let (outcome, attempt, reason, wire) = match behavior {
        TimeoutBehavior::Cancel => {
            (TerminalOutcome::Cancelled, AttemptLifecycle::EndedCancelled, "timed_out_cancel", "cancelled")
        }
        TimeoutBehavior::Expire => {
            (TerminalOutcome::Expired, AttemptLifecycle::EndedFailure, "timed_out_expire", "expired")
        }
        _ => (TerminalOutcome::Failed, AttemptLifecycle::EndedFailure, "timed_out_fail", "failed"),
    };
    let id = core.execution_id.clone();
    let failure = format!("suspension_timeout:{}", behavior.as_str());
    if let Some(idx) = core.current_attempt_index
        && let Some(mut rec) = store.get_attempt(&id, idx)?
    {
        rec.attempt_state = attempt;
        rec.ended_at = Some(now);
        rec.failure_reason = Some(failure.clone());
        rec.suspended_at = None;
        rec.suspension_id = None;
        store.put_attempt(&rec)?;
        close_stream_meta(store, &id, idx, "suspension_timeout", now, true)?;
    }
    close_suspension(store, now, s, None, reason, reason, false)?;
    store.index_remove(&IndexKey::SuspensionTimeout(id.partition_index()), id.as_str())?;
    store.index_remove(&lane_key(core, LaneIndex::Suspended), id.as_str())?;
    transition(core, StateVector::terminal(outcome, AttemptState::AttemptTerminal), now);
    core.failure_reason = Some(failure);
    core.completed_at = Some(now);
    core.current_suspension_id = None;
    core.current_waitpoint_id = None;
    crate::execution::enter_terminal_index(store, core, now)?;
    publish_if_flow(store, core, wire, now)?;
    store.put_exec(core)?;
    Ok(core.state.public_state)
}

/// Closes an open suspension when its execution leaves by cancel or expiry (spec 01 §6.4, §6.9).
pub fn close_for_terminal(
    store: &mut dyn Store,
    now: TimestampMs,
    id: &ExecutionId,
    reason: &str,
    condition_reason: &str,
) -> StoreResult<()> {
    let Some(mut s) = suspension(store, id)?.filter(|s| s.is_open()) else { return Ok(()) };
    close_suspension(store, now, &mut s, None, reason, condition_reason, false)?;
    put(store, RecordKind::Suspension, id.as_str(), &s)
}

/// Closes the open suspension of an execution that expires while suspended: its
/// waitpoints and conditions close `expired`, the suspension `expired:<reason>`.
pub fn close_for_expiry(
    store: &mut dyn Store,
    now: TimestampMs,
    id: &ExecutionId,
    reason: &str,
) -> StoreResult<()> {
    let Some(mut s) = suspension(store, id)?.filter(|s| s.is_open()) else { return Ok(()) };
    close_suspension(store, now, &mut s, None, "expired", "expired", false)?;
    s.close_reason = Some(format!("expired:{reason}"));
    put(store, RecordKind::Suspension, id.as_str(), &s)
}

/// `read_waitpoint_token`: the stored token, if any.
pub fn read_waitpoint_token(store: &mut dyn Store, id: &WaitpointId) -> StoreResult<Option<String>> {
    Ok(waitpoint(store, id)?.map(|w| w.token).filter(|t| !t.is_empty()))
}

/// `observe_signals` (spec 02 §11.1): the signals that satisfied the execution's last suspension.
pub fn observe_signals(store: &mut dyn Store, id: &ExecutionId) -> StoreResult<Vec<ResumeSignal>> {
    let Some(s) = suspension(store, id)? else { return Ok(Vec::new()) };
    let mut out = Vec::new();
    for sid in &s.satisfier_signals {
        let Some(r) = get::<SignalRecord>(store, RecordKind::Signal, sid)? else { continue };
        out.push(ResumeSignal {
            signal_id: r.signal_id,
            signal_name: r.signal_name,
            signal_category: r.signal_category,
            source_type: r.source_type,
            source_identity: r.source_identity,
            correlation_id: r.correlation_id,
            accepted_at: r.accepted_at,
            payload: r.payload,
        });
    }
    out.sort_by_key(|s| (s.accepted_at, s.signal_id));
    Ok(out)
}

/// `list_pending_waitpoints` (spec 02 §3.6): open waitpoints of an execution by id.
pub fn list_pending_waitpoints(
    store: &mut dyn Store,
    id: &ExecutionId,
    after: Option<&WaitpointId>,
    limit: usize,
) -> StoreResult<(Vec<PendingWaitpointInfo>, Option<WaitpointId>)> {
    load(store, id)?;
    let limit = limit.clamp(1, 1000);
    let after_text = after.map(|a| a.to_string());
    let start = after_text.as_deref().map(|a| (0, a));
    let ids = store.index_range(&IndexKey::WaitpointsOf(id.clone()), start, 0, limit + 1)?;
    let has_more = ids.len() > limit;
    let condition = suspension(store, id)?.map(|s| s.condition);
    let mut entries = Vec::new();
    for (_, wid) in ids.into_iter().take(limit) {
        let Ok(wid) = WaitpointId::parse(&wid) else { continue };
        let Some(w) = waitpoint(store, &wid)? else { continue };
        if w.state == WaitpointState::Closed || w.token.is_empty() {
            continue;
        }
        let names = match (&condition, w.state) {
            (
                Some(ResumeCondition::Single { matcher: SignalMatcher::ByName(n), .. }),
                WaitpointState::Active,
            ) => vec![n.clone()],
            _ => Vec::new(),
        };
        let (kid, digest) = w.token.split_once(':').unwrap_or(("", ""));
        entries.push(PendingWaitpointInfo {
            waitpoint_id: w.waitpoint_id,
            waitpoint_key: w.waitpoint_key.clone(),
            state: w.state,
            required_signal_names: names,
            created_at: w.created_at,
            activated_at: w.activated_at,
            expires_at: w.expires_at,
            execution_id: w.execution_id.clone(),
            token_kid: kid.to_owned(),
            token_fingerprint: digest.chars().take(16).collect(),
        });
    }
    let next = if has_more { entries.last().map(|e| e.waitpoint_id) } else { None };
    Ok((entries, next))
}

/// `list_suspended` (spec 02 §11.5): suspended executions of a partition by (score, id).
pub fn list_suspended(
    store: &mut dyn Store,
    partition: u16,
    after: Option<&ExecutionId>,
    limit: usize,
) -> StoreResult<(Vec<SuspendedExecutionEntry>, Option<ExecutionId>)> {
    if limit == 0 {
        return Ok((Vec::new(), None));
    }
    let lanes = store.index_range(&IndexKey::Lanes, None, i64::MAX, crate::scanners::LANES_PER_PASS_MAX)?;
    let mut all: Vec<(i64, String)> = Vec::new();
    for (_, lane) in lanes {
        let key = IndexKey::Lane { partition, lane: ff_core::LaneId::new(lane), kind: LaneIndex::Suspended };
        all.extend(store.index_range(&key, None, i64::MAX, ff_core::contracts::LIST_LIMIT_MAX)?);
    }
    all.sort();
    let skip = match after {
        None => 0,
        Some(a) => match all.iter().position(|(_, m)| m == a.as_str()) {
            Some(i) => i + 1,
            None => all.iter().position(|(_, m)| m.as_str() > a.as_str()).unwrap_or(all.len()),
        },
    };
    let mut rows = Vec::new();
    for (score, member) in all.into_iter().skip(skip) {
        let Ok(id) = ExecutionId::parse(&member) else { continue };
        let reason = suspension(store, &id)?.map(|s| s.reason_code.as_str().to_owned()).unwrap_or_default();
        rows.push(SuspendedExecutionEntry { execution_id: id, suspended_at_ms: score, reason });
        if rows.len() > limit {
            break;
        }
    }
    let more = rows.len() > limit;
    rows.truncate(limit);
    let next = if more { rows.last().map(|r| r.execution_id.clone()) } else { None };
    Ok((rows, next))
}
