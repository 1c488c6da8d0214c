//! Typed read models from the raw records the read functions return.

use std::collections::{BTreeMap, HashMap};

use ferriskey::Value;
use ff_core::contracts::{ExecutionSnapshot, LeaseHistoryEntry, LeaseSummary};
use ff_core::state::{
    AttemptState, BlockingReason, EligibilityState, LifecyclePhase, OwnershipState, PublicState, StateVector,
    TerminalOutcome,
};
use ff_core::{AttemptId, EngineError, ExecutionId, LaneId, LeaseId, Namespace, WorkerInstanceId};

use crate::wire::{self, protocol};

/// One exec_core hash as read.
struct Core(HashMap<String, String>);

impl Core {
    fn opt(&self, f: &str) -> Option<&str> {
        self.0.get(f).map(String::as_str)
    }

    fn text(&self, f: &str) -> Result<&str, EngineError> {
        self.opt(f).ok_or_else(|| protocol(format!("exec_core has no {f}")))
    }

    fn num<T: std::str::FromStr>(&self, f: &str) -> Result<Option<T>, EngineError> {
        match self.opt(f) {
            None => Ok(None),
            Some(s) => {
                s.parse().map(Some).map_err(|_| protocol(format!("exec_core {f} is not a number: {s:?}")))
            }
        }
    }

    fn req<T: std::str::FromStr>(&self, f: &str) -> Result<T, EngineError> {
        self.num(f)?.ok_or_else(|| protocol(format!("exec_core has no {f}")))
    }

    fn wire<T>(&self, f: &str, parse: fn(&str) -> Option<T>) -> Result<T, EngineError> {
        let s = self.text(f)?;
        parse(s).ok_or_else(|| protocol(format!("exec_core {f} is not a known value: {s:?}")))
    }

    fn state(&self) -> Result<StateVector, EngineError> {
        Ok(StateVector {
            lifecycle_phase: self.wire("lifecycle_phase", LifecyclePhase::parse)?,
            ownership_state: self.wire("ownership_state", OwnershipState::parse)?,
            eligibility_state: self.wire("eligibility_state", EligibilityState::parse)?,
            blocking_reason: self.wire("blocking_reason", BlockingReason::parse)?,
            blocking_detail: self.opt("blocking_detail").unwrap_or_default().to_owned(),
            terminal_outcome: self.wire("terminal_outcome", TerminalOutcome::parse)?,
            attempt_state: self.wire("attempt_state", AttemptState::parse)?,
            public_state: self.wire("public_state", PublicState::parse)?,
        })
    }
}

fn parse_id<T>(
    what: &str,
    s: &str,
    parse: impl Fn(&str) -> Result<T, ff_core::ids::IdError>,
) -> Result<T, EngineError> {
    parse(s).map_err(|e| protocol(format!("{what} {s:?}: {e}")))
}

/// Builds the snapshot from `ff_describe_execution`'s `{core, lease, tags}` reply.
pub fn describe(reply: Value) -> Result<Option<ExecutionSnapshot>, EngineError> {
    let mut parts = wire::array(reply)?.into_iter();
    let (Some(core), Some(lease), Some(tags)) = (parts.next(), parts.next(), parts.next()) else {
        return Err(protocol("describe reply is not three lists"));
    };
    let core = Core(wire::pairs(core)?.into_iter().collect());
    if core.0.is_empty() {
        return Ok(None);
    }
    let lease: HashMap<String, String> = wire::pairs(lease)?.into_iter().collect();
    let tags: BTreeMap<String, String> = wire::pairs(tags)?.into_iter().collect();
    let state = core.state()?;
    let attempt_index: Option<u32> = core.num("current_attempt_index")?;
    let attempt_id = match core.opt("current_attempt_id") {
        Some(s) => Some(parse_id("attempt id", s, AttemptId::parse)?),
        None => None,
    };
    let current_lease = if state.ownership_state == OwnershipState::Leased && !lease.is_empty() {
        let field = |f: &str| lease.get(f).map(String::as_str).unwrap_or_default();
        let lease_expires: i64 =
            field("expires_at").parse().map_err(|_| protocol("lease expires_at is not a number"))?;
        Some(LeaseSummary {
            lease_id: parse_id("lease id", field("lease_id"), LeaseId::parse)?,
            lease_epoch: field("lease_epoch").parse().map_err(|_| protocol("lease epoch is not a number"))?,
            worker_instance_id: WorkerInstanceId::new(field("worker_instance_id")),
            expires_at: core.num("lease_expires_at")?.unwrap_or(lease_expires),
            attempt_index: attempt_index.unwrap_or(0),
        })
    } else {
        None
    };
    Ok(Some(ExecutionSnapshot {
        execution_id: parse_id("execution id", core.text("execution_id")?, ExecutionId::parse)?,
        namespace: Namespace::new(core.text("namespace")?),
        lane_id: LaneId::new(core.text("lane_id")?),
        execution_kind: core.text("execution_kind")?.to_owned(),
        public_state: state.public_state,
        priority: core.req("priority")?,
        current_attempt: attempt_index.map(|i| (i, attempt_id)),
        current_lease,
        lease_epoch: core.req("current_lease_epoch")?,
        total_attempt_count: core.req("total_attempt_count")?,
        retry_count: core.req("retry_count")?,
        replay_count: core.req("replay_count")?,
        lease_reclaim_count: core.req("lease_reclaim_count")?,
        created_at: core.req("created_at")?,
        started_at: core.num("started_at")?,
        completed_at: core.num("completed_at")?,
        last_mutation_at: core.req("last_mutation_at")?,
        delay_until: core.num("delay_until")?,
        failure_reason: core.opt("failure_reason").map(str::to_owned),
        progress_pct: core.num("progress_pct")?,
        progress_message: core.opt("progress_message").map(str::to_owned),
        tags,
        state,
        flow_id: core.opt("flow_id").map(str::to_owned),
        required_capabilities: csv_list(core.opt("required_capabilities")),
        budget_ids: csv_list(core.opt("budget_ids")),
        quota_policy_id: core.opt("quota_policy_id").filter(|q| !q.is_empty()).map(str::to_owned),
    }))
}

/// The tokens of a CSV field.
fn csv_list(csv: Option<&str>) -> Vec<String> {
    csv.unwrap_or("").split(',').filter(|t| !t.is_empty()).map(str::to_owned).collect()
}

/// Parses the JSON events of `ff_read_lease_history`.
pub fn lease_history(reply: Value) -> Result<Vec<LeaseHistoryEntry>, EngineError> {
    wire::texts(reply)?
        .into_iter()
        .map(|json| {
            let v: serde_json::Value =
                serde_json::from_str(&json).map_err(|e| protocol(format!("lease event {json}: {e}")))?;
            let text = |k: &str| v.get(k).and_then(serde_json::Value::as_str).unwrap_or_default().to_owned();
            let number =
                |k: &str| text(k).parse::<i64>().map_err(|_| protocol(format!("lease event {k}: {json}")));
            let fields = match v.get("fields") {
                Some(serde_json::Value::Object(m)) => {
                    m.iter().map(|(k, v)| (k.clone(), v.as_str().unwrap_or_default().to_owned())).collect()
                }
                _ => BTreeMap::new(),
            };
            Ok(LeaseHistoryEntry {
                seq: u64::try_from(number("seq")?).map_err(|_| protocol("negative lease event seq"))?,
                event: text("event"),
                ts: number("ts")?,
                fields,
            })
        })
        .collect()
}
