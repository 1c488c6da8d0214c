//! `claim_for_worker` against the memory backend on a simulated clock.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::Ordering;

use common::faulty::Faults;
use common::{Env, GRANT_TTL_MS, LANE, WORKER, must};
use ff_core::contracts::{CancelExecutionArgs, UnblockExecutionArgs};
use ff_core::error::ValidationKind;
use ff_core::partition::fnv1a_u16_mod;
use ff_core::{
    BlockingReason, CancelSource, Clock, EligibilityState, EngineError, ExecutionId, LaneId, PublicState,
    WorkerId, WorkerInstanceId,
};
use ff_scheduler::{ROUTE_BLOCK_DETAIL, SchedulerConfig};
use serde_json::json;

/// What one claim attempt should do to the single eligible execution.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Expect {
    Granted,
    Blocked(BlockingReason, String),
}

/// Submits one execution with `policy`, claims once with `caps`, checks the outcome and the state.
async fn check_one(env: &Env, id: &ExecutionId, caps: &[&str], expect: Expect) {
    let got = must(env.claim("inst-1", caps).await, "claim_for_worker");
    let state = env.state(id).await;
    match expect {
        Expect::Granted => {
            let grant = got.unwrap_or_else(|| panic!("no grant for {id}; state {state:?}"));
            assert_eq!(&grant.execution_id, id);
            assert_eq!(grant.partition_key, id.partition().key());
            assert_eq!(grant.grant_key, format!("ff:exec:{}:{}:claim_grant", id.hash_tag(), id.as_str()));
            let now = env.clock.now_ms();
            assert_eq!(grant.expires_at_ms, now + GRANT_TTL_MS as i64);
            assert_eq!(state.eligibility_state, EligibilityState::EligibleNow);
        }
        Expect::Blocked(reason, detail) => {
            assert_eq!(got, None, "blocked execution was granted");
            assert_eq!((state.blocking_reason, state.blocking_detail.as_str()), (reason, detail.as_str()));
            assert_eq!(state.public_state, PublicState::RateLimited);
            let expected = match reason {
                BlockingReason::WaitingForCapableWorker => EligibilityState::BlockedByRoute,
                BlockingReason::WaitingForBudget => EligibilityState::BlockedByBudget,
                _ => EligibilityState::BlockedByQuota,
            };
            assert_eq!(state.eligibility_state, expected);
        }
    }
}

fn route_block() -> Expect {
    Expect::Blocked(BlockingReason::WaitingForCapableWorker, ROUTE_BLOCK_DETAIL.to_owned())
}

#[tokio::test]
async fn capability_routing() {
    // (required capabilities, worker capabilities, expected)
    let cases: &[(&[&str], &[&str], Expect)] = &[
        (&["gpu"], &["cuda", "gpu"], Expect::Granted),
        (&["cuda", "gpu"], &["gpu", "cuda"], Expect::Granted),
        (&[], &[], Expect::Granted),
        (&[], &["anything"], Expect::Granted),
        (&["gpu", "tpu"], &["gpu"], route_block()),
        (&["gpu"], &[], route_block()),
        (&["GPU"], &["gpu"], route_block()),
    ];
    for (required, worker, expect) in cases {
        let env = Env::new(4);
        let policy = json!({"routing_requirements": {"required_capabilities": required}});
        let id = env.submit(2, policy).await;
        check_one(&env, &id, worker, expect.clone()).await;
    }
}

#[tokio::test]
async fn blocked_route_is_skipped_and_the_next_candidate_granted() {
    let env = Env::new(1);
    let gpu = env.submit(0, json!({"routing_requirements": {"required_capabilities": ["gpu"]}})).await;
    let plain = env.submit(0, json!({})).await;
    let grant = must(env.claim("inst-1", &["cpu"]).await, "claim");
    // One call blocks the head, then the partition is not probed again within the call.
    assert_eq!(grant, None);
    assert_eq!(env.state(&gpu).await.eligibility_state, EligibilityState::BlockedByRoute);
    let grant = must(env.claim("inst-1", &["cpu"]).await, "claim").map(|g| g.execution_id);
    assert_eq!(grant, Some(plain));
}

#[tokio::test]
async fn malformed_worker_input_is_rejected_with_nothing_changed() {
    let env = Env::new(4);
    env.submit(1, json!({"routing_requirements": {"required_capabilities": ["gpu"]}})).await;
    let before = env.dump();
    let too_many: Vec<String> = (0..257).map(|i| format!("t{i}")).collect();
    let too_long: Vec<String> = (0..200).map(|i| format!("{i:0>30}")).collect();
    let cases: Vec<(&str, Vec<String>)> = vec![
        ("empty token", vec!["gpu".into(), String::new()]),
        ("comma", vec!["gpu,cuda".into()]),
        ("space", vec!["g pu".into()]),
        ("control", vec!["gpu\n".into()]),
        ("too many tokens", too_many),
        ("csv too long", too_long),
    ];
    for (label, caps) in cases {
        let refs: Vec<&str> = caps.iter().map(String::as_str).collect();
        let got = env.claim("inst-1", &refs).await;
        assert!(
            matches!(got, Err(EngineError::Validation { kind: ValidationKind::InvalidInput, .. })),
            "{label}: {got:?}"
        );
    }
    for ttl in [0, 60_001] {
        let got = env
            .scheduler
            .claim_for_worker(
                &LaneId::new(LANE),
                &WorkerId::new(WORKER),
                &WorkerInstanceId::new("i"),
                &[],
                ttl,
            )
            .await;
        assert!(
            matches!(got, Err(EngineError::Validation { kind: ValidationKind::InvalidInput, .. })),
            "ttl {ttl}: {got:?}"
        );
    }
    assert_eq!(env.dump(), before, "a rejected call changed the store");
}

#[tokio::test]
async fn budget_hard_breach_blocks() {
    // (hard limit, usage, expected)
    let cases = [(10, 9, false), (10, 10, true), (0, 1_000, false)];
    for (limit, used, breached) in cases {
        let env = Env::new(4);
        let budget = env.budget("tokens", limit, used).await;
        let id = env.submit(3, json!({"budget_ids": [budget.to_string()]})).await;
        let expect = if breached {
            Expect::Blocked(
                BlockingReason::WaitingForBudget,
                format!("budget {budget}: tokens {used}/{limit}"),
            )
        } else {
            Expect::Granted
        };
        check_one(&env, &id, &[], expect).await;
    }
}

#[tokio::test]
async fn unknown_and_malformed_budgets_are_not_breached() {
    let env = Env::new(4);
    let unknown = env.uuid().to_string();
    let id = env.submit(0, json!({"budget_ids": ["not-a-uuid", unknown]})).await;
    check_one(&env, &id, &[], Expect::Granted).await;
}

#[tokio::test]
async fn quota_rate_limit_blocks_then_the_window_slides() {
    let env = Env::new(1);
    let quota = env.quota(10, 1, 0).await;
    let policy = json!({"quota_policy_id": quota.to_string()});
    let first = env.submit(0, policy.clone()).await;
    let second = env.submit(0, policy).await;
    assert_eq!(env.claim_and_lease("inst-1", &[]).await, Some(first));

    let detail = format!("quota {quota}: rate limit 1/1 per 10s window");
    check_one(&env, &second, &[], Expect::Blocked(BlockingReason::WaitingForQuota, detail.clone())).await;

    // Still inside the window: the unblock scanner leaves it blocked, and a forced
    // unblock is re-blocked by the next claim.
    env.clock.advance(9_000);
    assert_eq!(env.unblock_pass().await, 0);
    force_unblock(&env, &second, BlockingReason::WaitingForQuota).await;
    check_one(&env, &second, &[], Expect::Blocked(BlockingReason::WaitingForQuota, detail)).await;

    // The first admission leaves the window: the scanner re-admits, the scheduler grants.
    env.clock.advance(1_001);
    assert_eq!(env.unblock_pass().await, 1);
    check_one(&env, &second, &[], Expect::Granted).await;
}

async fn force_unblock(env: &Env, id: &ExecutionId, reason: BlockingReason) {
    let args = UnblockExecutionArgs { execution_id: id.clone(), expected_reason: Some(reason) };
    must(env.backend.unblock_execution(args).await, "unblock_execution");
}

#[tokio::test]
async fn route_block_lifts_after_a_capable_worker_registers() {
    let env = Env::new(4);
    let id = env.submit(1, json!({"routing_requirements": {"required_capabilities": ["gpu"]}})).await;
    check_one(&env, &id, &["cpu"], route_block()).await;

    env.register_worker("inst-cpu", &["cpu"]).await;
    assert_eq!(env.unblock_pass().await, 0);
    assert_eq!(env.state(&id).await.eligibility_state, EligibilityState::BlockedByRoute);

    env.register_worker("inst-gpu", &["gpu", "cuda"]).await;
    assert_eq!(env.unblock_pass().await, 1);
    assert_eq!(env.state(&id).await.eligibility_state, EligibilityState::EligibleNow);
    check_one(&env, &id, &["cuda", "gpu"], Expect::Granted).await;
}

#[tokio::test]
async fn budget_block_lifts_after_a_reset() {
    let env = Env::new(4);
    let budget = env.budget("tokens", 10, 10).await;
    let id = env.submit(0, json!({"budget_ids": [budget.to_string()]})).await;
    let detail = format!("budget {budget}: tokens 10/10");
    check_one(&env, &id, &[], Expect::Blocked(BlockingReason::WaitingForBudget, detail)).await;
    assert_eq!(env.unblock_pass().await, 0);

    must(env.backend.reset_budget(&budget).await, "reset_budget");
    assert_eq!(env.unblock_pass().await, 1);
    check_one(&env, &id, &[], Expect::Granted).await;
}

#[tokio::test]
async fn quota_concurrency_cap_blocks() {
    let env = Env::new(2);
    let quota = env.quota(60, 0, 1).await;
    let policy = json!({"quota_policy_id": quota.to_string()});
    let first = env.submit(0, policy.clone()).await;
    let second = env.submit(1, policy).await;
    let granted = env.claim_and_lease("inst-1", &[]).await;
    let other = if granted.as_ref() == Some(&first) { &second } else { &first };
    assert!(granted.is_some());
    let detail = format!("quota {quota}: concurrency cap 1");
    check_one(&env, other, &[], Expect::Blocked(BlockingReason::WaitingForQuota, detail)).await;
}

#[tokio::test]
async fn failed_grant_releases_the_quota_admission() {
    let base = Env::new(1);
    let faulty = Faults::wrap(base.backend.clone());
    let env = base.rewired(faulty.clone());
    let quota = env.quota(60, 0, 1).await;
    let policy = json!({"quota_policy_id": quota.to_string()});
    let first = env.submit(0, policy.clone()).await;

    faulty.layer().grants.store(true, Ordering::SeqCst);
    assert_eq!(must(env.claim("inst-1", &[]).await, "claim"), None);
    assert_eq!(faulty.layer().releases.load(Ordering::SeqCst), 1);
    faulty.layer().grants.store(false, Ordering::SeqCst);

    // Had the admission not been released, the cap of 1 would refuse the next execution.
    let cancel = CancelExecutionArgs {
        execution_id: first,
        reason: "test".into(),
        source: CancelSource::OperatorOverride,
        lease_id: None,
        lease_epoch: None,
    };
    must(env.backend.cancel_execution(cancel).await, "cancel_execution");
    let second = env.submit(0, policy).await;
    check_one(&env, &second, &[], Expect::Granted).await;
}

#[tokio::test]
async fn budget_read_failure_fails_closed() {
    let base = Env::new(4);
    let faulty = Faults::wrap(base.backend.clone());
    let env = base.rewired(faulty.clone());
    let budget = env.budget("tokens", 10, 0).await;
    let id = env.submit(1, json!({"budget_ids": [budget.to_string()]})).await;
    faulty.layer().budget_reads.store(true, Ordering::SeqCst);
    let before = env.dump();

    let got = env.claim("inst-1", &[]).await;
    assert!(matches!(got.as_ref().map_err(EngineError::root), Err(EngineError::Transport { .. })), "{got:?}");
    assert_eq!(env.dump(), before, "a fail-closed call wrote something");

    faulty.layer().budget_reads.store(false, Ordering::SeqCst);
    check_one(&env, &id, &[], Expect::Granted).await;
}

#[tokio::test]
async fn quota_read_failure_fails_closed() {
    let base = Env::new(4);
    let faulty = Faults::wrap(base.backend.clone());
    let env = base.rewired(faulty.clone());
    let quota = env.quota(60, 5, 0).await;
    env.submit(1, json!({"quota_policy_id": quota.to_string()})).await;
    faulty.layer().quota_reads.store(true, Ordering::SeqCst);
    let before = env.dump();
    let got = env.claim("inst-1", &[]).await;
    assert!(matches!(got.as_ref().map_err(EngineError::root), Err(EngineError::Transport { .. })), "{got:?}");
    assert_eq!(env.dump(), before);
}

#[tokio::test]
async fn fairness_every_partition_is_drained() {
    const PARTITIONS: u16 = 64;
    const PER_PARTITION: usize = 3;
    const CALLS_MAX: usize = 2_000;
    let env = Env::new(PARTITIONS);
    let mut remaining: BTreeMap<ExecutionId, u16> = BTreeMap::new();
    for p in 0..PARTITIONS {
        for _ in 0..PER_PARTITION {
            remaining.insert(env.submit(p, json!({})).await, p);
        }
    }
    let mut served: BTreeSet<u16> = BTreeSet::new();
    let (mut calls, mut empty_calls) = (0, 0);
    while !remaining.is_empty() && calls < CALLS_MAX {
        let instance = format!("inst-{}", calls % 8);
        match env.claim_and_lease(&instance, &[]).await {
            Some(id) => {
                let p = remaining.remove(&id).unwrap_or_else(|| panic!("{id} granted twice"));
                served.insert(p);
            }
            None => empty_calls += 1,
        }
        env.clock.advance(50);
        calls += 1;
    }
    assert!(remaining.is_empty(), "{} executions starved after {calls} calls", remaining.len());
    assert_eq!(served.len(), usize::from(PARTITIONS));
    // Only the last stragglers can fall outside a call's probe window.
    assert!(empty_calls <= usize::from(PARTITIONS / 8), "{empty_calls} empty calls");
}

#[tokio::test]
async fn a_busy_partition_does_not_starve_a_quiet_one() {
    const PARTITIONS: u16 = 64;
    const BUSY: usize = 100;
    const GRANTS_MAX: usize = 20;
    let env = Env::new(PARTITIONS);
    for _ in 0..BUSY {
        env.submit(0, json!({})).await;
    }
    let quiet = env.submit(40, json!({})).await;
    let mut granted_at = None;
    for call in 0..GRANTS_MAX {
        let instance = format!("inst-{}", call % 8);
        if env.claim_and_lease(&instance, &[]).await.as_ref() == Some(&quiet) {
            granted_at = Some(call);
            break;
        }
        env.clock.advance(50);
    }
    assert!(granted_at.is_some(), "quiet partition not served within {GRANTS_MAX} grants");
}

#[tokio::test]
async fn rotation_moves_the_probe_window_once_per_epoch() {
    const PARTITIONS: u16 = 64;
    const WINDOW: u16 = 8;
    let config = SchedulerConfig { max_partitions_per_scan: WINDOW, rotation_window_ms: 250 };
    let env = Env::with_config(PARTITIONS, config);
    let instance = "inst-rot";
    let start = fnv1a_u16_mod(instance, PARTITIONS);
    // The first epoch's cursor is one window ahead, so the partition just before it is
    // reached only after the cursor wraps: at the eighth epoch.
    let target = (start + WINDOW - 1) % PARTITIONS;
    let id = env.submit(target, json!({})).await;
    for epoch in 0..usize::from(PARTITIONS / WINDOW) - 1 {
        for _ in 0..3 {
            assert_eq!(must(env.claim(instance, &[]).await, "claim"), None, "found early at epoch {epoch}");
        }
        env.clock.advance(250);
    }
    let grant = must(env.claim(instance, &[]).await, "claim").map(|g| g.execution_id);
    assert_eq!(grant, Some(id));
}

#[tokio::test]
async fn other_lanes_are_invisible() {
    let env = Env::new(2);
    env.submit(0, json!({})).await;
    let got = env
        .scheduler
        .claim_for_worker(
            &LaneId::new("other"),
            &WorkerId::new(WORKER),
            &WorkerInstanceId::new("i"),
            &[],
            GRANT_TTL_MS,
        )
        .await;
    assert!(matches!(got, Ok(None)), "{got:?}");
}

#[tokio::test]
async fn a_live_grant_is_not_granted_twice() {
    let env = Env::new(1);
    let id = env.submit(0, json!({})).await;
    let first = must(env.claim("inst-1", &[]).await, "claim").map(|g| g.execution_id);
    assert_eq!(first, Some(id));
    assert_eq!(must(env.claim("inst-2", &[]).await, "claim"), None);
}

#[tokio::test]
async fn a_worker_without_the_capability_does_not_break_another_workers_grant() {
    let env = Env::new(1);
    let gpu = env.submit(0, json!({"routing_requirements": {"required_capabilities": ["gpu"]}})).await;
    let grant = must(env.claim("inst-gpu", &["gpu"]).await, "capable claim");
    let grant = grant.unwrap_or_else(|| panic!("the capable worker got no grant"));
    assert_eq!(grant.execution_id, gpu);
    // A worker lacking the capability scans the same head while the grant is live: the
    // route block is refused, so the execution stays eligible for the grant holder.
    assert_eq!(must(env.claim("inst-cpu", &["cpu"]).await, "incapable claim"), None);
    assert_eq!(env.state(&gpu).await.eligibility_state, EligibilityState::EligibleNow);
    env.lease(&grant, "inst-gpu").await;
    assert_eq!(env.state(&gpu).await.public_state, PublicState::Active);
}

#[tokio::test]
async fn a_lapsed_grant_no_longer_shields_the_execution_from_a_route_block() {
    let env = Env::new(1);
    let gpu = env.submit(0, json!({"routing_requirements": {"required_capabilities": ["gpu"]}})).await;
    assert!(must(env.claim("inst-gpu", &["gpu"]).await, "capable claim").is_some());
    env.clock.advance(GRANT_TTL_MS + 1);
    assert_eq!(must(env.claim("inst-cpu", &["cpu"]).await, "incapable claim"), None);
    check_one_state(&env, &gpu).await;
}

async fn check_one_state(env: &Env, id: &ExecutionId) {
    let state = env.state(id).await;
    assert_eq!(state.eligibility_state, EligibilityState::BlockedByRoute);
    assert_eq!(state.blocking_detail, ROUTE_BLOCK_DETAIL);
}
