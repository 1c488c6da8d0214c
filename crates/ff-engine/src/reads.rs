//! Execution reads (spec 01 §16).

use ff_core::contracts::*;
use ff_core::state::OwnershipState;
use ff_core::{EngineError, ExecutionId, TimestampMs};

use crate::records::{BlobKind, IndexKey};
use crate::store::{Store, StoreResult};

/// `describe_execution`: the read model of an execution.
pub fn describe_execution(
    store: &mut dyn Store,
    _now: TimestampMs,
    id: &ExecutionId,
) -> StoreResult<Option<ExecutionSnapshot>> {
    let Some(core) = store.get_exec(id)? else { return Ok(None) };
    let lease = if core.state.ownership_state == OwnershipState::Leased {
        store.get_lease(id)?.map(|l| LeaseSummary {
            lease_id: l.lease_id,
            lease_epoch: l.lease_epoch,
            worker_instance_id: l.worker_instance_id,
            expires_at: core.lease_expires_at.unwrap_or(l.expires_at),
            attempt_index: core.current_attempt_index.unwrap_or(0),
        })
    } else {
        None
    };
    let tags = store.get_tags(id)?;
    Ok(Some(ExecutionSnapshot {
        execution_id: core.execution_id.clone(),
        namespace: core.namespace.clone(),
        lane_id: core.lane_id.clone(),
        execution_kind: core.execution_kind.clone(),
        public_state: core.state.public_state,
        priority: core.priority,
        current_attempt: core.current_attempt_index.map(|i| (i, core.current_attempt_id)),
        current_lease: lease,
        lease_epoch: core.current_lease_epoch,
        total_attempt_count: core.total_attempt_count,
        retry_count: core.retry_count,
        replay_count: core.replay_count,
        lease_reclaim_count: core.lease_reclaim_count,
        created_at: core.created_at,
        started_at: core.started_at,
        completed_at: core.completed_at,
        last_mutation_at: core.last_mutation_at,
        delay_until: core.delay_until,
        failure_reason: core.failure_reason.clone(),
        progress_pct: core.progress_pct,
        progress_message: core.progress_message.clone(),
        tags,
        flow_id: core.flow_id.clone(),
        required_capabilities: csv_list(core.required_capabilities.as_deref()),
        budget_ids: csv_list(core.budget_ids.as_deref()),
        quota_policy_id: core.quota_policy_id.clone().filter(|q| !q.is_empty()),
        state: core.state,
    }))
}

/// Splits a stored comma-separated list, dropping empty items.
fn csv_list(csv: Option<&str>) -> Vec<String> {
    csv.unwrap_or("").split(',').filter(|t| !t.is_empty()).map(str::to_owned).collect()
}

/// `read_execution_context`: payload, kind and tags; missing → `invalid_input`.
pub fn read_execution_context(store: &mut dyn Store, id: &ExecutionId) -> StoreResult<ExecutionContext> {
    let Some(core) = store.get_exec(id)? else {
        return Err(EngineError::invalid_input("execution_not_found"));
    };
    Ok(ExecutionContext {
        input_payload: store.get_blob(id, BlobKind::Payload)?.unwrap_or_default(),
        execution_kind: core.execution_kind,
        tags: store.get_tags(id)?,
    })
}

/// `get_execution_result`: the stored result payload.
pub fn get_execution_result(store: &mut dyn Store, id: &ExecutionId) -> StoreResult<Option<Vec<u8>>> {
    store.get_blob(id, BlobKind::Result)
}

/// `get_execution_tag`: one tag, `None` for a missing tag or execution.
pub fn get_execution_tag(store: &mut dyn Store, id: &ExecutionId, key: &str) -> StoreResult<Option<String>> {
    Ok(store.get_tags(id)?.remove(key))
}

/// `list_executions`: a partition's executions in id order after a cursor.
pub fn list_executions(
    store: &mut dyn Store,
    partition: u16,
    after: Option<&ExecutionId>,
    limit: usize,
) -> StoreResult<Vec<ExecutionId>> {
    let start = after.map(|a| (0, a.as_str()));
    store
        .index_range(&IndexKey::AllExecutions(partition), start, 0, limit)?
        .into_iter()
        .map(|(_, m)| {
            ExecutionId::parse(&m)
                .map_err(|e| EngineError::protocol("engine", format!("all_executions member {m}: {e}")))
        })
        .collect()
}
