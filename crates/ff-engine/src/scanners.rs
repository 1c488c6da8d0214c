//! Background scanners as functions of `now` with a bounded batch (spec 01 §6.13,
//! §6.19, §6.9; cadence in chapter 03 §7). Each pass runs inside one atomic step.

use std::collections::{BTreeMap, BTreeSet};

use ff_core::contracts::{ExpirePhase, ScanReport, ScannerKind, UnblockExecutionArgs};
use ff_core::state::BlockingReason;
use ff_core::{
    BudgetId, EngineError, ExecutionId, LaneId, Namespace, QuotaPolicyId, TimestampMs, WorkerInstanceId,
};

use crate::records::{ExecCore, IndexKey, LaneIndex};
use crate::store::{Store, StoreResult};
use crate::{admission, flow, lease, lifecycle, scheduling};

/// Largest batch a single scanner pass may process.
pub const SCANNER_BATCH_MAX: usize = 10_000;
/// Most lanes one delayed-promoter pass visits per partition.
pub const LANES_PER_PASS_MAX: usize = 1024;

/// Runs one pass of a scanner over one partition.
pub fn run_pass(
    store: &mut dyn Store,
    now: TimestampMs,
    kind: ScannerKind,
    partition: u16,
    batch: usize,
) -> StoreResult<ScanReport> {
    let batch = batch.clamp(1, SCANNER_BATCH_MAX);
    match kind {
        ScannerKind::LeaseExpiry => lease_expiry(store, now, partition, batch),
        ScannerKind::DelayedPromoter => delayed(store, now, partition, batch),
        ScannerKind::AttemptTimeout => {
            expire_due(store, now, IndexKey::AttemptTimeout(partition), ExpirePhase::AttemptTimeout, batch)
        }
        ScannerKind::ExecutionDeadline => expire_due(
            store,
            now,
            IndexKey::ExecutionDeadline(partition),
            ExpirePhase::ExecutionDeadline,
            batch,
        ),
        ScannerKind::SuspensionTimeout => suspension_timeouts(store, now, partition, batch),
        ScannerKind::PendingWaitpointExpiry => pending_waitpoints(store, now, partition, batch),
        ScannerKind::DependencyReconciler => dependency_reconciler(store, now, partition, batch),
        ScannerKind::Unblock => unblock(store, now, partition, batch),
        ScannerKind::CancelReconciler => {
            let key = IndexKey::CancelBacklog(partition);
            per_member(store, key, now, batch, |s, m| flow::drain_cancel_backlog(s, now, m, partition))
        }
        ScannerKind::EdgeCancelDispatcher => {
            let key = IndexKey::PendingCancelGroups(partition);
            per_member(store, key, i64::MAX, batch, |s, m| {
                flow::dispatch_sibling_cancels(s, now, m, partition)
            })
        }
        ScannerKind::RetentionTrimmer => retention(store, now, partition, batch),
        _ if kind.is_global() && partition != 0 => Ok(ScanReport::default()),
        ScannerKind::BudgetReset => budget_resets(store, now, batch),
        ScannerKind::BudgetReconciler => {
            per_member(store, IndexKey::BudgetPolicies, i64::MAX, batch, |s, m| {
                let Ok(id) = BudgetId::parse(m) else {
                    s.index_remove(&IndexKey::BudgetPolicies, m)?;
                    return Ok(0);
                };
                Ok(u32::from(admission::reconcile_budget(s, now, &id)?))
            })
        }
        ScannerKind::QuotaReconciler => {
            per_member(store, IndexKey::QuotaPolicies, i64::MAX, batch, |s, m| {
                let Ok(id) = QuotaPolicyId::parse(m) else {
                    s.index_remove(&IndexKey::QuotaPolicies, m)?;
                    return Ok(0);
                };
                Ok(u32::from(admission::reconcile_quota(s, now, &id)?))
            })
        }
        _ => Err(EngineError::Unavailable { op: "run_scanner" }),
    }
}

/// Visits up to `batch` members of an index scored at or below `max_score`;
/// `visit` answers how many things it acted on.
fn per_member(
    store: &mut dyn Store,
    key: IndexKey,
    max_score: TimestampMs,
    batch: usize,
    mut visit: impl FnMut(&mut dyn Store, &str) -> StoreResult<u32>,
) -> StoreResult<ScanReport> {
    let mut report = ScanReport::default();
    for (_, member) in store.index_range(&key, None, max_score, batch)? {
        report.examined += 1;
        report.acted += visit(store, &member)?;
    }
    Ok(report)
}

/// The registered lanes (bounded).
fn lanes(store: &dyn Store) -> StoreResult<Vec<LaneId>> {
    let lanes = store.index_range(&IndexKey::Lanes, None, i64::MAX, LANES_PER_PASS_MAX)?;
    Ok(lanes.into_iter().map(|(_, l)| LaneId::new(l)).collect())
}

fn dependency_reconciler(
    store: &mut dyn Store,
    now: TimestampMs,
    partition: u16,
    batch: usize,
) -> StoreResult<ScanReport> {
    let mut report = ScanReport::default();
    for lane in lanes(store)? {
        let key = IndexKey::Lane { partition, lane, kind: LaneIndex::BlockedDependencies };
        for (_, member) in store.index_range(&key, None, i64::MAX, batch)? {
            report.examined += 1;
            let id = parse(&member)?;
            let before = store.get_exec(&id)?.map(|c| c.state.eligibility_state);
            let resolved = flow::reconcile_blocked_child(store, now, &id)?;
            let after = store.get_exec(&id)?.map(|c| c.state.eligibility_state);
            if resolved > 0 || before != after {
                report.acted += 1;
            }
        }
    }
    Ok(report)
}

/// Spec 03 §7.3.6: re-evaluates each execution blocked on budget, quota or route
/// and unblocks it once the cause is gone.
fn unblock(store: &mut dyn Store, now: TimestampMs, partition: u16, batch: usize) -> StoreResult<ScanReport> {
    let mut report = ScanReport::default();
    let mut route_caps: BTreeMap<Namespace, BTreeSet<String>> = BTreeMap::new();
    for lane in lanes(store)? {
        for (kind, reason) in [
            (LaneIndex::BlockedBudget, BlockingReason::WaitingForBudget),
            (LaneIndex::BlockedQuota, BlockingReason::WaitingForQuota),
            (LaneIndex::BlockedRoute, BlockingReason::WaitingForCapableWorker),
        ] {
            let key = IndexKey::Lane { partition, lane: lane.clone(), kind };
            for (_, member) in store.index_range(&key, None, i64::MAX, batch)? {
                report.examined += 1;
                let id = parse(&member)?;
                let Some(core) = store.get_exec(&id)? else { continue };
                if core.state.blocking_reason != reason {
                    continue;
                }
                let cleared = match reason {
                    BlockingReason::WaitingForBudget => !budget_still_blocked(store, &core)?,
                    BlockingReason::WaitingForQuota => match quota_of(&core) {
                        Some(q) => !admission::quota_still_blocked(store, now, &q)?,
                        None => true,
                    },
                    _ => route_satisfied(store, now, &core, &mut route_caps)?,
                };
                if cleared {
                    let args = UnblockExecutionArgs { execution_id: id, expected_reason: Some(reason) };
                    scheduling::unblock_execution(store, now, &args)?;
                    report.acted += 1;
                }
            }
        }
    }
    Ok(report)
}

fn budget_still_blocked(store: &dyn Store, core: &ExecCore) -> StoreResult<bool> {
    for id in core.budget_ids.as_deref().unwrap_or("").split(',').filter(|b| !b.is_empty()) {
        let Ok(id) = BudgetId::parse(id) else { continue };
        if admission::budget_hard_breach(store, &id)?.is_some() {
            return Ok(true);
        }
    }
    Ok(false)
}

fn quota_of(core: &ExecCore) -> Option<QuotaPolicyId> {
    core.quota_policy_id.as_deref().and_then(|q| QuotaPolicyId::parse(q).ok())
}

/// Whether the union of the capabilities of the namespace's live workers covers
/// the execution's requirement (computed once per namespace per pass).
fn route_satisfied(
    store: &dyn Store,
    now: TimestampMs,
    core: &ExecCore,
    cache: &mut BTreeMap<Namespace, BTreeSet<String>>,
) -> StoreResult<bool> {
    let required: Vec<&str> =
        core.required_capabilities.as_deref().unwrap_or("").split(',').filter(|t| !t.is_empty()).collect();
    if required.is_empty() {
        return Ok(true);
    }
    if !cache.contains_key(&core.namespace) {
        let mut union = BTreeSet::new();
        let mut after: Option<WorkerInstanceId> = None;
        loop {
            let page = store.list_worker_ids(&core.namespace, after.as_ref(), WORKER_PAGE)?;
            for inst in &page {
                if let Some(w) = store.get_worker(&core.namespace, inst)?
                    && w.is_live(now)
                {
                    union.extend(w.capabilities.0.iter().cloned());
                }
            }
            if page.len() < WORKER_PAGE {
                break;
            }
            after = page.last().cloned();
        }
        cache.insert(core.namespace.clone(), union);
    }
    let union = cache.get(&core.namespace);
    Ok(required.iter().all(|t| union.is_some_and(|u| u.contains(*t))))
}

/// Worker ids read per registry page by the unblock scanner.
const WORKER_PAGE: usize = 256;

fn budget_resets(store: &mut dyn Store, now: TimestampMs, batch: usize) -> StoreResult<ScanReport> {
    let mut report = ScanReport::default();
    for id in admission::due_budget_resets(store, now, batch)? {
        report.examined += 1;
        match admission::reset_budget(store, now, &id) {
            Ok(_) => report.acted += 1,
            Err(EngineError::NotFound { .. }) => {
                store.index_remove(&IndexKey::BudgetResets, &id.to_string())?;
            }
            Err(e) => return Err(e),
        }
    }
    Ok(report)
}

fn parse(member: &str) -> StoreResult<ExecutionId> {
    ExecutionId::parse(member)
        .map_err(|e| EngineError::protocol("engine", format!("index member {member}: {e}")))
}

fn lease_expiry(
    store: &mut dyn Store,
    now: TimestampMs,
    partition: u16,
    batch: usize,
) -> StoreResult<ScanReport> {
    let due = store.index_range(&IndexKey::LeaseExpiry(partition), None, now, batch)?;
    let mut report = ScanReport::default();
    for (_, member) in due {
        report.examined += 1;
        let id = parse(&member)?;
        if lease::mark_lease_expired_if_due(store, now, &id)?
            == ff_core::contracts::MarkLeaseExpiredOutcome::MarkedExpired
        {
            report.acted += 1;
        }
    }
    Ok(report)
}

fn delayed(store: &mut dyn Store, now: TimestampMs, partition: u16, batch: usize) -> StoreResult<ScanReport> {
    let lanes = store.index_range(&IndexKey::Lanes, None, i64::MAX, LANES_PER_PASS_MAX)?;
    let mut report = ScanReport::default();
    for (_, lane) in lanes {
        let lane = LaneId::new(lane);
        let key = IndexKey::Lane { partition, lane: lane.clone(), kind: LaneIndex::Delayed };
        for (_, member) in store.index_range(&key, None, now, batch)? {
            report.examined += 1;
            let id = parse(&member)?;
            let out = scheduling::promote_delayed(store, now, &lane, &id)?;
            if out == ff_core::contracts::PromoteOutcome::Promoted {
                report.acted += 1;
            }
        }
    }
    Ok(report)
}

fn expire_due(
    store: &mut dyn Store,
    now: TimestampMs,
    key: IndexKey,
    phase: ExpirePhase,
    batch: usize,
) -> StoreResult<ScanReport> {
    let due = store.index_range(&key, None, now, batch)?;
    let mut report = ScanReport::default();
    for (_, member) in due {
        report.examined += 1;
        let id = parse(&member)?;
        if matches!(
            lifecycle::expire_execution(store, now, &id, phase)?,
            ff_core::contracts::ExpireOutcome::Expired { .. }
        ) {
            report.acted += 1;
        }
    }
    Ok(report)
}

fn suspension_timeouts(
    store: &mut dyn Store,
    now: TimestampMs,
    partition: u16,
    batch: usize,
) -> StoreResult<ScanReport> {
    let due = store.index_range(&IndexKey::SuspensionTimeout(partition), None, now, batch)?;
    let mut report = ScanReport::default();
    for (_, member) in due {
        report.examined += 1;
        let id = parse(&member)?;
        if matches!(
            crate::suspension::expire_suspension(store, now, &id)?,
            ff_core::suspension::ExpireSuspensionOutcome::Expired { .. }
        ) {
            report.acted += 1;
        }
    }
    Ok(report)
}

fn pending_waitpoints(
    store: &mut dyn Store,
    now: TimestampMs,
    partition: u16,
    batch: usize,
) -> StoreResult<ScanReport> {
    let key = IndexKey::PendingWaitpointExpiry(partition);
    let due = store.index_range(&key, None, now, batch)?;
    let mut report = ScanReport::default();
    for (_, member) in due {
        report.examined += 1;
        let Ok(wp) = ff_core::WaitpointId::parse(&member) else {
            store.index_remove(&key, &member)?;
            continue;
        };
        // The owning execution only names the partition; any id of it will do.
        let owner = ExecutionId::from_parts(partition, wp.uuid());
        match crate::suspension::close_waitpoint(store, now, &owner, &wp, "never_committed") {
            Ok(true) => report.acted += 1,
            Ok(false) | Err(EngineError::Contention(_)) => {}
            Err(e) => return Err(e),
        }
    }
    Ok(report)
}

/// How long a terminal execution is kept by default (spec 03 §7.3.10).
pub const RETENTION_DEFAULT_MS: i64 = 86_400_000;

/// Index pages read while clearing an execution's own indexes.
const CLEAR_PAGE: usize = 1000;

/// Spec 03 §7.3.10: purges terminal executions whose terminal time is older than
/// the default retention; a per-execution `stream_policy.retention_ttl_ms` can
/// only lengthen it. Flow membership, budget ledgers and quota admissions stay.
fn retention(
    store: &mut dyn Store,
    now: TimestampMs,
    partition: u16,
    batch: usize,
) -> StoreResult<ScanReport> {
    let cutoff = now.saturating_sub(RETENTION_DEFAULT_MS);
    let mut report = ScanReport::default();
    for lane in lanes(store)? {
        let key = IndexKey::Lane { partition, lane, kind: LaneIndex::Terminal };
        for (_, member) in store.index_range(&key, None, cutoff, batch)? {
            report.examined += 1;
            let id = parse(&member)?;
            let Some(core) = store.get_exec(&id)? else {
                store.index_remove(&key, &member)?;
                continue;
            };
            let Some(done_at) = core.completed_at else {
                store.index_remove(&key, &member)?;
                continue;
            };
            if now.saturating_sub(done_at) < retention_of(store, &id)? {
                continue;
            }
            purge(store, &core)?;
            store.index_remove(&key, &member)?;
            report.acted += 1;
        }
    }
    Ok(report)
}

/// The execution's retention: the default, or a longer `stream_policy.retention_ttl_ms`.
fn retention_of(store: &dyn Store, id: &ExecutionId) -> StoreResult<i64> {
    let policy = store.get_blob(id, crate::records::BlobKind::Policy)?;
    let ttl = policy
        .and_then(|b| serde_json::from_slice::<serde_json::Value>(&b).ok())
        .and_then(|v| v.pointer("/stream_policy/retention_ttl_ms").and_then(serde_json::Value::as_i64))
        .unwrap_or(0);
    Ok(ttl.max(RETENTION_DEFAULT_MS))
}

/// Deletes everything an execution owns: waitpoints and their signals, its
/// signals, suspension and dependency records, its own indexes, then its rows.
fn purge(store: &mut dyn Store, core: &ExecCore) -> StoreResult<()> {
    use crate::records::RecordKind;
    let id = &core.execution_id;
    let p = id.partition_index();
    for wp in drain_index(store, &IndexKey::WaitpointsOf(id.clone()))? {
        for sid in drain_index(store, &IndexKey::WaitpointSignals(wp.clone()))? {
            store.delete_record(RecordKind::Signal, &sid)?;
        }
        store.index_remove(&IndexKey::PendingWaitpointExpiry(p), &wp)?;
        store.delete_record(RecordKind::Waitpoint, &wp)?;
    }
    for sid in drain_index(store, &IndexKey::SignalsOf(id.clone()))? {
        store.delete_record(RecordKind::Signal, &sid)?;
    }
    drain_index(store, &IndexKey::AttemptsOf(id.clone()))?;
    store.delete_record(RecordKind::Suspension, id.as_str())?;
    store.delete_record(RecordKind::Dependencies, id.as_str())?;
    for key in [
        IndexKey::AllExecutions(p),
        IndexKey::LeaseExpiry(p),
        IndexKey::AttemptTimeout(p),
        IndexKey::ExecutionDeadline(p),
        IndexKey::SuspensionTimeout(p),
    ] {
        store.index_remove(&key, id.as_str())?;
    }
    store.purge_execution(id)
}

/// Removes every member of an index and returns them.
fn drain_index(store: &mut dyn Store, key: &IndexKey) -> StoreResult<Vec<String>> {
    let mut all = Vec::new();
    loop {
        let page = store.index_range(key, None, i64::MAX, CLEAR_PAGE)?;
        if page.is_empty() {
            return Ok(all);
        }
        for (_, member) in page {
            store.index_remove(key, &member)?;
            all.push(member);
        }
    }
}
