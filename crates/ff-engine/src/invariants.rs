//! Store-level invariants of spec 01 §4.4–4.5, checked through the `Store`
//! trait so every store-backed backend gets the same deep check.

use ff_core::ExecutionId;

use crate::records::{ExecCore, IndexKey};
use crate::store::Store;

fn in_index(store: &dyn Store, key: &IndexKey, member: &str) -> bool {
    matches!(store.index_score(key, member), Ok(Some(_)))
}

/// Checks spec 01 §4.4 (1–7) and the lane-index membership of §4.5 over every
/// execution of the store; violations as text.
pub fn check_store(store: &dyn Store) -> Vec<String> {
    let mut out = Vec::new();
    for p in 0..store.partition_config().num_flow_partitions {
        let mut after: Option<String> = None;
        loop {
            let start = after.as_deref().map(|a| (0, a));
            let Ok(page) = store.index_range(&IndexKey::AllExecutions(p), start, 0, 1000) else {
                out.push(format!("partition {p}: all_executions unreadable"));
                break;
            };
            let Some((_, last)) = page.last().cloned() else { break };
            for (_, member) in page {
                match ExecutionId::parse(&member).ok().and_then(|id| store.get_exec(&id).ok().flatten()) {
                    Some(core) => check_exec(store, &core, &mut out),
                    None => out.push(format!("{member}: indexed but unreadable")),
                }
            }
            after = Some(last);
        }
    }
    out
}

fn check_exec(store: &dyn Store, core: &ExecCore, out: &mut Vec<String>) {
    use crate::records::LaneIndex as L;
    use ff_core::state::{EligibilityState as E, LifecyclePhase as P, OwnershipState as O};
    let id = core.execution_id.as_str();
    let mut bad = |what: &str| out.push(format!("{id}: {what}"));
    let s = &core.state;
    if let Some(v) = s.invariant_violation() {
        bad(v);
    }
    let rate_limited_block = s.public_state == ff_core::PublicState::RateLimited
        && matches!(s.eligibility_state, E::BlockedByRoute | E::BlockedByOperator | E::BlockedByLaneState);
    let open_suspension = store
        .get_record(crate::records::RecordKind::Suspension, id)
        .ok()
        .flatten()
        .and_then(|json| serde_json::from_str::<crate::suspension::SuspensionRecord>(&json).ok())
        .filter(|r| r.closed_at.is_none());
    let suspended = s.lifecycle_phase == P::Suspended;
    if suspended != open_suspension.is_some() {
        bad("suspended iff an open suspension record exists");
    }
    if let Some(r) = &open_suspension
        && core.current_suspension_id.as_deref() != Some(r.suspension_id.to_string().as_str())
    {
        bad("open suspension is not the current one");
    }
    for v in signal_count_violations(store, &core.execution_id) {
        bad(&v);
    }
    if !s.is_consistent() && !rate_limited_block {
        bad("public state inconsistent with dimensions");
    }
    let attempts = (0..core.total_attempt_count)
        .filter(|i| matches!(store.get_attempt(&core.execution_id, *i), Ok(Some(_))))
        .count();
    if attempts as u32 != core.total_attempt_count {
        bad("attempt records do not match total_attempt_count");
    }
    let p = core.execution_id.partition_index();
    let lane = |k| IndexKey::lane(&core.execution_id, &core.lane_id, k);
    let expected: Option<L> = match s.lifecycle_phase {
        P::Runnable => crate::common::runnable_index(s.eligibility_state),
        P::Active => Some(L::Active),
        P::Suspended => Some(L::Suspended),
        P::Terminal => Some(L::Terminal),
        P::Submitted => None,
    };
    for k in L::ALL {
        let member = in_index(store, &lane(k), id);
        if member != (Some(k) == expected) {
            bad(&format!("lane index {k:?} membership is {member}"));
        }
    }
    let in_expiry = in_index(store, &IndexKey::LeaseExpiry(p), id);
    match (s.lifecycle_phase, s.ownership_state) {
        (P::Active, O::Leased) => {
            let lease = store.get_lease(&core.execution_id).ok().flatten();
            let matches = lease.is_some_and(|l| {
                Some(l.lease_id) == core.current_lease_id
                    && l.lease_epoch == core.current_lease_epoch
                    && Some(l.attempt_id) == core.current_attempt_id
            });
            if !matches {
                bad("leased without a matching lease record");
            }
            if !in_expiry {
                bad("leased but not in lease_expiry");
            }
            let in_worker = core
                .current_worker_instance_id
                .as_ref()
                .is_some_and(|w| in_index(store, &IndexKey::WorkerLeases(p, w.clone()), id));
            if !in_worker {
                bad("leased but not in the holder's worker set");
            }
        }
        (P::Active, O::LeaseExpiredReclaimable) => {
            if !in_expiry {
                bad("expired lease dropped from lease_expiry");
            }
        }
        (P::Active, O::LeaseRevoked) => {
            if in_expiry {
                bad("revoked lease still in lease_expiry");
            }
        }
        _ => {
            if in_expiry {
                bad("not active but in lease_expiry");
            }
            if matches!(store.get_lease(&core.execution_id), Ok(Some(_))) {
                bad("lease record without an active phase");
            }
        }
    }
    if s.lifecycle_phase == P::Terminal
        && (in_index(store, &IndexKey::AttemptTimeout(p), id)
            || in_index(store, &IndexKey::ExecutionDeadline(p), id))
    {
        bad("terminal but still in a timeout index");
    }
}

/// Each waitpoint's delivered-signal counter equals the non-buffered signals in
/// its log (while the log is untrimmed), and matched never exceeds delivered.
fn signal_count_violations(store: &dyn Store, id: &ExecutionId) -> Vec<String> {
    use crate::records::RecordKind;
    use crate::suspension::{SignalRecord, WaitpointRecord};
    let mut out = Vec::new();
    let waitpoints =
        store.index_range(&IndexKey::WaitpointsOf(id.clone()), None, 0, 1000).unwrap_or_default();
    for (_, wid) in waitpoints {
        let Some(w) = store
            .get_record(RecordKind::Waitpoint, &wid)
            .ok()
            .flatten()
            .and_then(|j| serde_json::from_str::<WaitpointRecord>(&j).ok())
        else {
            continue;
        };
        if w.matched_signal_count > w.signal_count {
            out.push(format!(
                "waitpoint {wid}: matched {} > delivered {}",
                w.matched_signal_count, w.signal_count
            ));
        }
        let log = store
            .index_range(&IndexKey::WaitpointSignals(wid.clone()), None, i64::MAX, 1000)
            .unwrap_or_default();
        if log.len() as u64 != w.log_seq || log.len() >= 1000 {
            continue;
        }
        let delivered = log
            .iter()
            .filter_map(|(_, sid)| store.get_record(RecordKind::Signal, sid).ok().flatten())
            .filter_map(|j| serde_json::from_str::<SignalRecord>(&j).ok())
            .filter(|r| r.observed_effect != crate::conditions::EFFECT_BUFFERED)
            .count() as u64;
        if delivered != w.signal_count {
            out.push(format!(
                "waitpoint {wid}: counter {} but {delivered} delivered signals logged",
                w.signal_count
            ));
        }
    }
    out
}
