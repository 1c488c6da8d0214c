//! Worker registry: register, heartbeat, mark dead, list (spec 01 §6.18, §6.22, §14).

use ff_core::contracts::*;
use ff_core::{EngineError, TimestampMs};

use crate::records::WorkerRecord;
use crate::store::{Store, StoreResult};

fn until(now: TimestampMs, ttl_ms: u64) -> TimestampMs {
    now.saturating_add(i64::try_from(ttl_ms).unwrap_or(i64::MAX))
}

/// `ff_register_worker` with the spec's decisions (spec 01 §6.18, §14).
pub fn register_worker(
    store: &mut dyn Store,
    now: TimestampMs,
    args: &RegisterWorkerArgs,
) -> StoreResult<RegisterWorkerOutcome> {
    args.validate()?;
    let existing = store.get_worker(&args.namespace, &args.worker_instance_id)?.filter(|w| w.is_live(now));
    if let Some(w) = &existing
        && w.worker_id != args.worker_id
    {
        return Err(EngineError::invalid_input("instance_id reassigned"));
    }
    let registered_at_ms = existing.as_ref().map_or(now, |w| w.registered_at_ms);
    let rec = WorkerRecord {
        worker_id: args.worker_id.clone(),
        lanes: args.lanes.clone(),
        capabilities: args.capabilities.clone(),
        liveness_ttl_ms: args.liveness_ttl_ms,
        registered_at_ms,
        last_heartbeat_ms: now,
        alive_until_ms: until(now, args.liveness_ttl_ms),
    };
    store.put_worker(&args.namespace, &args.worker_instance_id, &rec)?;
    Ok(if existing.is_some() { RegisterWorkerOutcome::Refreshed } else { RegisterWorkerOutcome::Registered })
}

/// `ff_heartbeat_worker` (spec 01 §6.22): refreshes liveness and the record together.
pub fn heartbeat_worker(
    store: &mut dyn Store,
    now: TimestampMs,
    args: &HeartbeatWorkerArgs,
) -> StoreResult<HeartbeatOutcome> {
    let Some(mut rec) = store.get_worker(&args.namespace, &args.worker_instance_id)? else {
        return Ok(HeartbeatOutcome::NotRegistered);
    };
    if !rec.is_live(now) {
        return Ok(HeartbeatOutcome::NotRegistered);
    }
    rec.last_heartbeat_ms = now;
    rec.alive_until_ms = until(now, rec.liveness_ttl_ms);
    store.put_worker(&args.namespace, &args.worker_instance_id, &rec)?;
    Ok(HeartbeatOutcome::Refreshed { next_expiry_ms: rec.alive_until_ms })
}

/// `mark_worker_dead` (spec 01 §14), atomic.
pub fn mark_worker_dead(
    store: &mut dyn Store,
    _now: TimestampMs,
    args: &MarkWorkerDeadArgs,
) -> StoreResult<MarkWorkerDeadOutcome> {
    args.validate()?;
    Ok(if store.delete_worker(&args.namespace, &args.worker_instance_id)? {
        MarkWorkerDeadOutcome::Marked
    } else {
        MarkWorkerDeadOutcome::NotRegistered
    })
}

/// `list_workers` (spec 01 §14): live instances sorted by id, after a cursor.
pub fn list_workers(
    store: &mut dyn Store,
    now: TimestampMs,
    args: &ListWorkersArgs,
) -> StoreResult<WorkersPage> {
    let limit = args.limit.clamp(1, LIST_LIMIT_MAX);
    let mut after = args.after.clone();
    let mut workers = Vec::new();
    // Expired registrations are skipped, so read in pages until the page is full.
    loop {
        let ids = store.list_worker_ids(&args.namespace, after.as_ref(), limit + 1)?;
        let exhausted = ids.len() <= limit;
        for id in ids {
            after = Some(id.clone());
            let Some(rec) = store.get_worker(&args.namespace, &id)?.filter(|w| w.is_live(now)) else {
                continue;
            };
            if workers.len() == limit {
                let cursor = workers.last().map(|w: &WorkerInfo| w.worker_instance_id.clone());
                return Ok(WorkersPage { workers, cursor });
            }
            workers.push(WorkerInfo {
                worker_id: rec.worker_id,
                worker_instance_id: id,
                namespace: args.namespace.clone(),
                lanes: rec.lanes,
                capabilities: rec.capabilities,
                last_heartbeat_ms: rec.last_heartbeat_ms,
                liveness_ttl_ms: rec.liveness_ttl_ms,
                registered_at_ms: rec.registered_at_ms,
            });
        }
        if exhausted {
            return Ok(WorkersPage { workers, cursor: None });
        }
    }
}
