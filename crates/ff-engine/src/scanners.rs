//! Background scanners as functions of `now` with a bounded batch (spec 01 §6.13,
//! §6.19, §6.9; cadence in chapter 03 §7). Each pass runs inside one atomic step.

use ff_core::contracts::{ExpirePhase, ScanReport, ScannerKind};
use ff_core::{EngineError, ExecutionId, LaneId, TimestampMs};

use crate::records::{IndexKey, LaneIndex};
use crate::store::{Store, StoreResult};
use crate::{lease, lifecycle, scheduling};

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
        _ => Err(EngineError::Unavailable { op: "run_scanner" }),
    }
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
