//! Hostile input: every contract fed malformed names, oversized payloads,
//! non-canonical ids and out-of-range numbers must answer a typed validation
//! error, never panic, and leave the store unchanged.

use std::sync::Arc;

use ff_core::contracts::*;
use ff_core::{
    AttemptId, CancelSource, EngineBackend, EngineError, ExecutionId, LaneId, LeaseFence, LeaseId, Namespace,
    WorkerId, WorkerInstanceId,
};
use proptest::prelude::*;
use proptest::test_runner::{Config, RngAlgorithm, TestCaseError, TestRng, TestRunner};
use uuid::Uuid;

use crate::{Case, Ctx, Group, Harness, case, untimed};

fn harness(ctx: &Ctx) -> Harness {
    Harness::new(&ctx.fixture)
}

/// Asserts a typed validation error and an unchanged store.
async fn refused(h: &Harness, what: &str, r: Result<impl std::fmt::Debug, EngineError>, before: &str) {
    match r {
        Ok(v) => panic!("{what}: accepted hostile input: {v:?}"),
        Err(EngineError::Validation { .. }) => {}
        Err(e) => panic!("{what}: expected a validation error, got {e:?}"),
    }
    assert_eq!(before, h.dump().await, "{what}: the store changed");
}

fn create(id: ExecutionId) -> CreateExecutionArgs {
    CreateExecutionArgs::new(id, "ns", LaneId::new("default"), "k")
}

fn claim_args(id: ExecutionId) -> ClaimExecutionArgs {
    ClaimExecutionArgs {
        execution_id: id,
        worker_id: WorkerId::new("w1"),
        worker_instance_id: WorkerInstanceId::new("w1-1"),
        lane_id: LaneId::new("default"),
        lease_id: LeaseId::from_uuid(Uuid::from_u64_pair(3, 1)),
        lease_ttl_ms: 1000,
        attempt_id: AttemptId::from_uuid(Uuid::from_u64_pair(3, 2)),
        attempt_policy_json: String::new(),
        attempt_timeout_ms: None,
        execution_deadline_at: None,
    }
}

async fn hostile_args_are_refused_without_writes(ctx: Ctx) {
    let mut h = harness(&ctx);
    h.create("e1").await;
    h.grant_claim("e1", "w1").await;
    h.create("e2").await;
    let e1 = h.id("e1");
    let e2 = h.id("e2");
    let fresh = ExecutionId::from_parts(1, Uuid::from_u64_pair(0xbad, 1));
    let before = h.dump().await;
    let b = h.b.clone();
    macro_rules! check {
        ($what:expr, $call:expr) => {
            refused(&h, $what, $call.await, &before).await
        };
    }
    // create: names, sizes, times, JSON, ids.
    check!(
        "empty lane",
        b.create_execution(CreateExecutionArgs { lane_id: LaneId::new(""), ..create(fresh.clone()) })
    );
    check!(
        "long lane",
        b.create_execution(CreateExecutionArgs {
            lane_id: LaneId::new("l".repeat(65)),
            ..create(fresh.clone())
        })
    );
    check!(
        "lane with newline",
        b.create_execution(CreateExecutionArgs { lane_id: LaneId::new("a\nb"), ..create(fresh.clone()) })
    );
    check!(
        "empty namespace",
        b.create_execution(CreateExecutionArgs { namespace: Namespace::new(""), ..create(fresh.clone()) })
    );
    check!(
        "control in namespace",
        b.create_execution(CreateExecutionArgs {
            namespace: Namespace::new("a\u{1}"),
            ..create(fresh.clone())
        })
    );
    check!(
        "NUL in kind",
        b.create_execution(CreateExecutionArgs { execution_kind: "a\0b".into(), ..create(fresh.clone()) })
    );
    check!(
        "long kind",
        b.create_execution(CreateExecutionArgs { execution_kind: "k".repeat(300), ..create(fresh.clone()) })
    );
    check!(
        "huge payload",
        b.create_execution(CreateExecutionArgs {
            input_payload: vec![7; PAYLOAD_BYTES_MAX + 1],
            ..create(fresh.clone())
        })
    );
    check!(
        "negative delay",
        b.create_execution(CreateExecutionArgs { delay_until: Some(-1), ..create(fresh.clone()) })
    );
    check!(
        "far deadline",
        b.create_execution(CreateExecutionArgs {
            execution_deadline_at: Some(i64::MAX),
            ..create(fresh.clone())
        })
    );
    check!(
        "policy not JSON",
        b.create_execution(CreateExecutionArgs { policy_json: "{nope".into(), ..create(fresh.clone()) })
    );
    check!(
        "policy too large",
        b.create_execution(CreateExecutionArgs {
            policy_json: format!("{{\"x\":\"{}\"}}", "y".repeat(POLICY_JSON_BYTES_MAX)),
            ..create(fresh.clone())
        })
    );
    let many_tags = (0..300).map(|i| (format!("t.{i}"), "v".to_owned())).collect();
    check!(
        "too many tags",
        b.create_execution(CreateExecutionArgs { tags: many_tags, ..create(fresh.clone()) })
    );
    let lenient = ExecutionId::parse(&format!(
        "{{fp:01}}:{}",
        Uuid::from_u64_pair(0xbad, 2).hyphenated().to_string().to_uppercase()
    ))
    .expect("lenient parse");
    check!("non-canonical id", b.create_execution(create(lenient)));
    let far = ExecutionId::from_parts(u16::MAX, Uuid::from_u64_pair(0xbad, 3));
    check!("partition out of range", b.create_execution(create(far)));
    // claim and grant bounds.
    check!(
        "zero lease ttl",
        b.claim_execution(ClaimExecutionArgs { lease_ttl_ms: 0, ..claim_args(e2.clone()) })
    );
    check!(
        "huge lease ttl",
        b.claim_execution(ClaimExecutionArgs {
            lease_ttl_ms: LEASE_TTL_MS_MAX + 1,
            ..claim_args(e2.clone())
        })
    );
    check!(
        "empty worker",
        b.claim_execution(ClaimExecutionArgs { worker_id: WorkerId::new(""), ..claim_args(e2.clone()) })
    );
    check!(
        "attempt policy array",
        b.claim_execution(ClaimExecutionArgs { attempt_policy_json: "[1]".into(), ..claim_args(e2.clone()) })
    );
    let grant = h.grant_args("e2", "w1", &[]);
    check!("zero grant ttl", b.issue_claim_grant(IssueClaimGrantArgs { grant_ttl_ms: 0, ..grant.clone() }));
    check!(
        "grant ttl over bound",
        b.issue_claim_grant(IssueClaimGrantArgs { grant_ttl_ms: GRANT_TTL_MS_MAX + 1, ..grant.clone() })
    );
    for token in ["", "a,b", "a b", "tab\t", "del\u{7f}"] {
        let caps = CapabilitySet::new([token]);
        check!(
            "malformed capability",
            b.issue_claim_grant(IssueClaimGrantArgs { worker_capabilities: caps, ..grant.clone() })
        );
    }
    // fenced ops.
    let fence = Some(h.fence("e1", None));
    check!(
        "zero renew ttl",
        b.renew_lease(RenewLeaseArgs {
            execution_id: e1.clone(),
            attempt_index: 0,
            fence: fence.clone(),
            lease_ttl_ms: 0,
            lease_history_grace_ms: 0
        })
    );
    check!(
        "missing fence",
        b.renew_lease(RenewLeaseArgs {
            execution_id: e1.clone(),
            attempt_index: 0,
            fence: None,
            lease_ttl_ms: 10,
            lease_history_grace_ms: 0
        })
    );
    check!(
        "long failure reason",
        b.fail_execution(FailExecutionArgs {
            execution_id: e1.clone(),
            fence: fence.clone(),
            failure_reason: "r".repeat(TEXT_BYTES_MAX + 1),
            failure_category: String::new(),
            retry_policy_json: None,
            source: CancelSource::LeaseHolder
        })
    );
    check!(
        "negative delay_until",
        b.delay_execution(DelayExecutionArgs {
            execution_id: e1.clone(),
            fence: fence.clone(),
            delay_until: -5,
            source: CancelSource::LeaseHolder
        })
    );
    check!(
        "huge result",
        b.complete_execution(CompleteExecutionArgs {
            execution_id: e1.clone(),
            fence: fence.clone(),
            result_payload: Some(vec![0; PAYLOAD_BYTES_MAX + 1]),
            source: CancelSource::LeaseHolder
        })
    );
    let c = h.last_claim("e1");
    check!(
        "progress over 100",
        b.update_progress(UpdateProgressArgs {
            execution_id: e1.clone(),
            lease_id: c.lease_id,
            lease_epoch: c.lease_epoch,
            progress_pct: Some(200),
            progress_message: None
        })
    );
    check!(
        "partial cancel fence",
        b.cancel_execution(CancelExecutionArgs {
            execution_id: e1.clone(),
            reason: String::new(),
            source: CancelSource::LeaseHolder,
            lease_id: Some(c.lease_id),
            lease_epoch: None
        })
    );
    check!(
        "bad tag key",
        b.set_execution_tags(SetExecutionTagsArgs {
            execution_id: e2.clone(),
            tags: vec![("NoDot".into(), "v".into())]
        })
    );
    check!("no tags", b.set_execution_tags(SetExecutionTagsArgs { execution_id: e2.clone(), tags: vec![] }));
    // registry.
    let reg = RegisterWorkerArgs {
        worker_id: WorkerId::new("w"),
        worker_instance_id: WorkerInstanceId::new("i"),
        namespace: Namespace::new("ns"),
        lanes: Default::default(),
        capabilities: CapabilitySet::default(),
        liveness_ttl_ms: 0,
    };
    check!("zero liveness ttl", b.register_worker(reg.clone()));
    check!(
        "bad lane in registration",
        b.register_worker(RegisterWorkerArgs {
            liveness_ttl_ms: 10,
            lanes: [LaneId::new("")].into_iter().collect(),
            ..reg.clone()
        })
    );
    check!(
        "dead reason with newline",
        b.mark_worker_dead(MarkWorkerDeadArgs {
            worker_instance_id: WorkerInstanceId::new("i"),
            namespace: Namespace::new("ns"),
            reason: "a\nb".into()
        })
    );
    check!(
        "grant-and-claim empty lane",
        b.issue_grant_and_claim(IssueGrantAndClaimArgs {
            execution_id: e2.clone(),
            lane_id: LaneId::new(""),
            lease_duration_ms: 10,
            lease_id: LeaseId::from_uuid(Uuid::nil()),
            attempt_id: AttemptId::from_uuid(Uuid::nil())
        })
    );
    let _: Option<LeaseFence> = None;
}

/// Arbitrary strings in every name field: a typed answer, and no writes on error.
async fn arbitrary_strings_get_typed_answers(ctx: Ctx) {
    let seed = ctx.options.seed;
    let cases = ctx.options.cases.max(1);
    let factory = ctx.factory.clone();
    let handle = tokio::runtime::Handle::current();
    let result = tokio::task::spawn_blocking(move || {
        let mut bytes = [0u8; 32];
        bytes[..8].copy_from_slice(&seed.wrapping_add(1).to_le_bytes());
        let rng = TestRng::from_seed(RngAlgorithm::ChaCha, &bytes);
        let config = Config { cases, failure_persistence: None, ..Config::default() };
        let mut runner = TestRunner::new_with_rng(config, rng);
        let strategy = (any::<String>(), any::<String>(), any::<String>(), any::<String>(), any::<u64>());
        runner
            .run(&strategy, |(lane, ns, kind, worker, ttl)| {
                let f = factory.clone();
                handle
                    .block_on(async move {
                        let fixture = f.make().await;
                        one_arbitrary(fixture.backend, lane, ns, kind, worker, ttl).await
                    })
                    .map_err(TestCaseError::fail)
            })
            .map_err(|e| format!("{e:?}"))
    })
    .await;
    match result {
        Ok(Ok(())) => {}
        Ok(Err(e)) => panic!("hostile strings (seed {seed}): {e}"),
        Err(e) => panic!("hostile strings runner crashed: {e}"),
    }
}

async fn one_arbitrary(
    b: Arc<dyn EngineBackend>,
    lane: String,
    ns: String,
    kind: String,
    worker: String,
    ttl: u64,
) -> Result<(), String> {
    let id = ExecutionId::from_parts(0, Uuid::from_u64_pair(0xa5, ttl));
    let parts = b.partition_config().num_flow_partitions.clamp(1, 8);
    let before = crate::snapshot::read_all(b.as_ref(), parts).await;
    let args = CreateExecutionArgs::new(id.clone(), Namespace::new(ns), LaneId::new(lane.clone()), kind);
    match b.create_execution(args).await {
        Ok(_) => {}
        Err(EngineError::Validation { .. }) => {
            if before != crate::snapshot::read_all(b.as_ref(), parts).await {
                return Err("a refused create wrote".into());
            }
            return Ok(());
        }
        Err(e) => return Err(format!("create answered {e:?}")),
    }
    let grant = IssueClaimGrantArgs {
        execution_id: id,
        worker_id: WorkerId::new(worker.clone()),
        worker_instance_id: WorkerInstanceId::new(worker),
        lane_id: LaneId::new(lane),
        capability_hash: String::new(),
        grant_ttl_ms: ttl,
        route_snapshot_json: String::new(),
        admission_summary: String::new(),
        worker_capabilities: CapabilitySet::default(),
    };
    match b.issue_claim_grant(grant).await {
        Ok(_) | Err(EngineError::Validation { .. }) => Ok(()),
        Err(e) => Err(format!("grant answered {e:?}")),
    }
}

async fn capability_flags_match_methods(ctx: Ctx) {
    let b = ctx.fixture.backend.clone();
    let s = b.capabilities().supports;
    let missing = ExecutionId::from_parts(0, Uuid::from_u64_pair(0xcafe, 1));
    let unavailable = |r: Result<(), EngineError>| matches!(r, Err(EngineError::Unavailable { .. }));
    let checks: Vec<(&str, bool, bool)> = vec![
        (
            "cancel_execution",
            s.cancel_execution,
            unavailable(
                b.cancel_execution(CancelExecutionArgs {
                    execution_id: missing.clone(),
                    reason: String::new(),
                    source: CancelSource::OperatorOverride,
                    lease_id: None,
                    lease_epoch: None,
                })
                .await
                .map(|_| ()),
            ),
        ),
        (
            "change_priority",
            s.change_priority,
            unavailable(
                b.change_priority(ChangePriorityArgs { execution_id: missing.clone(), new_priority: 1 })
                    .await
                    .map(|_| ()),
            ),
        ),
        ("replay_execution", s.replay_execution, unavailable(b.replay_execution(&missing).await.map(|_| ()))),
        (
            "revoke_lease",
            s.revoke_lease,
            unavailable(
                b.revoke_lease(RevokeLeaseArgs {
                    execution_id: missing.clone(),
                    expected_lease_id: None,
                    reason: String::new(),
                })
                .await
                .map(|_| ()),
            ),
        ),
        (
            "read_execution_state",
            s.read_execution_state,
            unavailable(b.read_execution_state(&missing).await.map(|_| ())),
        ),
        (
            "get_execution_result",
            s.get_execution_result,
            unavailable(b.get_execution_result(&missing).await.map(|_| ())),
        ),
        (
            "list_expired_leases",
            s.list_expired_leases,
            unavailable(
                b.list_expired_leases(ListExpiredLeasesArgs {
                    as_of: 0,
                    after: None,
                    limit: 10,
                    max_partitions_per_call: 1,
                })
                .await
                .map(|_| ()),
            ),
        ),
        (
            "list_workers",
            s.list_workers,
            unavailable(
                b.list_workers(ListWorkersArgs { namespace: Namespace::new("ns"), after: None, limit: 10 })
                    .await
                    .map(|_| ()),
            ),
        ),
        (
            "heartbeat_worker",
            s.heartbeat_worker,
            unavailable(
                b.heartbeat_worker(HeartbeatWorkerArgs {
                    worker_instance_id: WorkerInstanceId::new("i"),
                    namespace: Namespace::new("ns"),
                })
                .await
                .map(|_| ()),
            ),
        ),
        (
            "mark_worker_dead",
            s.mark_worker_dead,
            unavailable(
                b.mark_worker_dead(MarkWorkerDeadArgs {
                    worker_instance_id: WorkerInstanceId::new("i"),
                    namespace: Namespace::new("ns"),
                    reason: String::new(),
                })
                .await
                .map(|_| ()),
            ),
        ),
    ];
    let mut checks = checks;
    checks.push((
        "stream_durable_summary",
        s.stream_durable_summary,
        unavailable(b.read_summary(&missing, 0).await.map(|_| ())),
    ));
    checks.push((
        "stream_best_effort_live",
        s.stream_best_effort_live,
        unavailable(
            b.tail_stream(
                &missing,
                0,
                ff_core::stream::StreamCursor::from_beginning(),
                0,
                1,
                Default::default(),
            )
            .await
            .map(|_| ()),
        ),
    ));
    let budget = ff_core::BudgetId::from_uuid(Uuid::nil());
    let quota = ff_core::QuotaPolicyId::from_uuid(Uuid::nil());
    let budget_probe = unavailable(b.get_budget_status(&budget).await.map(|_| ()));
    let quota_probe = unavailable(b.read_quota_policy_limits(&quota).await.map(|_| ()));
    checks.push(("budget_admin", s.budget_admin, budget_probe));
    checks.push(("read_budget_usage_and_limits", s.read_budget_usage_and_limits, budget_probe));
    checks.push(("quota_admin", s.quota_admin, quota_probe));
    checks.push(("read_quota_policy_limits", s.read_quota_policy_limits, quota_probe));
    checks.push((
        "release_admission",
        s.release_admission,
        unavailable(b.release_admission(&quota, &missing).await),
    ));
    for (name, flag, is_unavailable) in checks {
        assert_eq!(
            flag, !is_unavailable,
            "supports.{name} = {flag} but the method answered Unavailable = {is_unavailable}"
        );
    }
    // Flags of methods the trait does not have yet must not be claimed.
    let absent =
        [("claim_for_worker", s.claim_for_worker), ("subscribe_instance_tags", s.subscribe_instance_tags)];
    for (name, flag) in absent {
        assert!(!flag, "supports.{name} is true but the method does not exist");
    }
}

/// The hostile-input and capability groups.
pub fn cases() -> Vec<Case> {
    vec![
        untimed(case!(Group::Hostile, hostile_args_are_refused_without_writes)),
        untimed(case!(Group::Hostile, arbitrary_strings_get_typed_answers)),
        untimed(case!(Group::Capabilities, capability_flags_match_methods)),
    ]
}
