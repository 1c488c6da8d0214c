//! The backend against a real server without a simulated clock (Lua reads
//! `TIME`), plus the library, prefix and error-shape checks.

mod common;

use ff_core::contracts::*;
use ff_core::{
    AttemptId, CancelSource, EngineBackend, EngineError, ExecutionId, LaneId, LeaseId, PublicState, WorkerId,
    WorkerInstanceId,
};
use uuid::Uuid;

fn wall_ms() -> i64 {
    let d = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

fn id(n: u64) -> ExecutionId {
    ExecutionId::from_parts((n % 4) as u16, Uuid::from_u64_pair(0xabc, n))
}

async fn grant_and_claim(b: &dyn EngineBackend, id: &ExecutionId, ttl_ms: u64) -> ClaimedExecution {
    let grant = IssueClaimGrantArgs {
        execution_id: id.clone(),
        worker_id: WorkerId::new("w"),
        worker_instance_id: WorkerInstanceId::new("w-1"),
        lane_id: LaneId::new("default"),
        capability_hash: String::new(),
        grant_ttl_ms: 5_000,
        route_snapshot_json: String::new(),
        admission_summary: String::new(),
        worker_capabilities: CapabilitySet::default(),
    };
    b.issue_claim_grant(grant).await.unwrap();
    let claim = ClaimExecutionArgs {
        execution_id: id.clone(),
        worker_id: WorkerId::new("w"),
        worker_instance_id: WorkerInstanceId::new("w-1"),
        lane_id: LaneId::new("default"),
        lease_id: LeaseId::from_uuid(Uuid::from_u64_pair(1, 1)),
        lease_ttl_ms: ttl_ms,
        attempt_id: AttemptId::from_uuid(Uuid::from_u64_pair(2, 2)),
        attempt_policy_json: String::new(),
        attempt_timeout_ms: None,
        execution_deadline_at: None,
    };
    b.claim_execution(claim).await.unwrap()
}

#[tokio::test]
async fn server_time_drives_create_claim_and_complete() {
    let b = common::backend(None).await;
    assert!(!b.capabilities().simulated_clock);
    assert!(b.sim_clock().is_none());
    let before = wall_ms();
    let server = b.server_time_ms().await.unwrap();
    assert!((server - before).abs() < 60_000, "server time {server} far from wall time {before}");
    let e = id(1);
    let created = b.create_execution(CreateExecutionArgs::new(e.clone(), "ns", LaneId::new("default"), "k"));
    assert!(matches!(created.await.unwrap(), CreateExecutionOutcome::Created { .. }));
    let snap = b.describe_execution(&e).await.unwrap().unwrap();
    assert!(snap.created_at >= before - 1_000 && snap.created_at <= wall_ms() + 1_000, "{}", snap.created_at);
    let c = grant_and_claim(&b, &e, 30_000).await;
    assert!(c.lease_expires_at >= snap.created_at + 30_000, "expiry {} from server now", c.lease_expires_at);
    b.complete(&c.handle, Some(b"done".to_vec())).await.unwrap();
    assert_eq!(b.read_execution_state(&e).await.unwrap(), Some(PublicState::Completed));
    assert_eq!(b.get_execution_result(&e).await.unwrap(), Some(b"done".to_vec()));
    let history = b.read_lease_history(&e).await.unwrap();
    let events: Vec<&str> = history.iter().map(|h| h.event.as_str()).collect();
    assert_eq!(events, ["acquired", "released"]);
    assert_eq!(history[1].fields.get("reason").map(String::as_str), Some("completed"));
}

#[tokio::test]
async fn a_short_lease_expires_on_server_time() {
    let b = common::backend(None).await;
    let e = id(2);
    b.create_execution(CreateExecutionArgs::new(e.clone(), "ns", LaneId::new("default"), "k")).await.unwrap();
    let c = grant_and_claim(&b, &e, 1).await;
    // Poll (bounded) until the server clock has passed the 1 ms lease.
    let mut outcome = None;
    for _ in 0..5_000 {
        let out = b.mark_lease_expired_if_due(&e).await.unwrap();
        if out == MarkLeaseExpiredOutcome::MarkedExpired {
            outcome = Some(());
            break;
        }
        let pending = MarkLeaseExpiredOutcome::AlreadySatisfied { reason: "not_yet_expired".into() };
        assert_eq!(out, pending);
        tokio::task::yield_now().await;
    }
    assert!(outcome.is_some(), "lease of 1 ms never expired");
    let err = b.complete(&c.handle, None).await.unwrap_err();
    assert_eq!(err.code(), Some("lease_expired"));
}

#[tokio::test]
async fn prefixes_isolate_backends_on_one_server() {
    let a = common::backend(None).await;
    let b = common::backend(None).await;
    let e = id(3);
    a.create_execution(CreateExecutionArgs::new(e.clone(), "ns", LaneId::new("default"), "k")).await.unwrap();
    assert!(a.describe_execution(&e).await.unwrap().is_some());
    assert!(b.describe_execution(&e).await.unwrap().is_none());
    assert_eq!(a.list_executions(e.partition_index(), None, 10).await.unwrap(), vec![e.clone()]);
    assert!(b.list_executions(e.partition_index(), None, 10).await.unwrap().is_empty());
}

#[tokio::test]
async fn rejections_arrive_typed_with_their_details() {
    let b = common::backend(None).await;
    let missing = id(4);
    let err = b.replay_execution(&missing).await.unwrap_err();
    assert!(matches!(err, EngineError::NotFound { entity: "execution" }), "{err:?}");
    let e = id(5);
    let mut args = CreateExecutionArgs::new(e.clone(), "ns", LaneId::new("default"), "k");
    args.policy_json = r#"{"routing_requirements":{"required_capabilities":["gpu","cuda"]}}"#.into();
    b.create_execution(args).await.unwrap();
    let grant = IssueClaimGrantArgs {
        execution_id: e.clone(),
        worker_id: WorkerId::new("w"),
        worker_instance_id: WorkerInstanceId::new("w-1"),
        lane_id: LaneId::new("default"),
        capability_hash: String::new(),
        grant_ttl_ms: 5_000,
        route_snapshot_json: String::new(),
        admission_summary: String::new(),
        worker_capabilities: CapabilitySet::new(["gpu"]),
    };
    let err = b.issue_claim_grant(grant).await.unwrap_err();
    assert_eq!(err.code(), Some("capability_mismatch"));
    assert!(err.to_string().contains("cuda"), "{err}");
    let cancel = CancelExecutionArgs {
        execution_id: e.clone(),
        reason: "r".into(),
        source: CancelSource::OperatorOverride,
        lease_id: None,
        lease_epoch: None,
    };
    b.cancel_execution(cancel.clone()).await.unwrap();
    match b.cancel_execution(cancel).await.unwrap_err() {
        EngineError::Contention(ff_core::error::ContentionKind::ExecutionNotActive {
            terminal_outcome,
            lease_epoch,
            lifecycle_phase,
            attempt_id,
        }) => {
            assert_eq!((terminal_outcome.as_str(), lease_epoch.as_str()), ("cancelled", "0"));
            assert_eq!((lifecycle_phase.as_str(), attempt_id.as_str()), ("terminal", ""));
        }
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn every_family_is_claimed() {
    let b = common::backend(None).await;
    let caps = b.capabilities();
    for family in ff_backend_valkey::FAMILIES {
        assert!(caps.has(family), "{family:?} not claimed");
    }
    assert_eq!(ff_backend_valkey::FAMILIES.len(), 9);
}

/// A flow member's terminal transition publishes its completion, read back by cursor.
#[tokio::test]
async fn flow_completions_are_readable_by_cursor() {
    let b = common::backend(None).await;
    let cfg = b.config().partitions;
    let flow = (0..1000u64)
        .map(|i| ff_core::FlowId::from_uuid(Uuid::from_u64_pair(0xf1, i)))
        .find(|f| ff_core::partition::flow_partition(&f.uuid(), &cfg).index == 1)
        .expect("a flow id on partition 1");
    b.create_flow(ff_core::flow::CreateFlowArgs {
        flow_id: flow,
        flow_kind: "dag".into(),
        namespace: ff_core::Namespace::new("ns"),
    })
    .await
    .unwrap();
    let e = ExecutionId::from_parts(1, Uuid::from_u64_pair(0xf2, 1));
    b.create_execution(CreateExecutionArgs::new(e.clone(), "ns", LaneId::new("default"), "k")).await.unwrap();
    b.add_execution_to_flow(&flow, &e).await.unwrap();
    let before = b.read_completions(0, 100).await.unwrap().last().map_or(0, |c| c.event_id);
    let c = grant_and_claim(&b, &e, 30_000).await;
    b.complete(&c.handle, None).await.unwrap();
    let events = b.read_completions(before, 100).await.unwrap();
    assert_eq!(events.len(), 1, "{events:?}");
    assert_eq!((events[0].execution_id.clone(), events[0].outcome.as_str()), (e, "success"));
    assert_eq!(events[0].flow_id, flow.to_string());
    assert!(b.read_completions(events[0].event_id, 100).await.unwrap().is_empty());
}

const SECRET: &str = "000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f";

/// The token minted in Lua (HMAC-SHA1 over `redis.sha1hex`) is the reference's, byte for byte,
/// and a long (hashed) rotation secret mints the reference's token too.
#[tokio::test]
async fn lua_tokens_equal_the_reference_hmac() {
    use ff_core::Clock;
    use ff_core::hmac_token::HmacKeystore;
    let clock = ff_core::SimClock::default();
    let b = common::backend(Some(clock.clone())).await;
    b.seed_waitpoint_hmac_secret("k1", SECRET).await.unwrap();
    let long_secret = "ab".repeat(100);
    let e = id(10);
    b.create_execution(CreateExecutionArgs::new(e.clone(), "ns", LaneId::new("default"), "k")).await.unwrap();
    let c = grant_and_claim(&b, &e, 60_000).await;
    let mut reference = HmacKeystore::new();
    reference.seed("k1", SECRET).unwrap();
    for (n, key) in [(1u64, "approval"), (2, "k|with|bars"), (3, "")] {
        if n == 3 {
            b.rotate_waitpoint_hmac_secret_all("k2", &long_secret, 1_000).await.unwrap();
            reference.rotate("k2", &long_secret, 1_000, clock.now_ms()).unwrap();
        }
        let wp = ff_core::WaitpointId::from_uuid(Uuid::from_u64_pair(0x77, n));
        let created = b.create_waitpoint(&c.handle, wp, key, 60_000).await.unwrap();
        let expected = reference.mint(&wp, key, clock.now_ms()).unwrap();
        assert_eq!(created.hmac_token, expected.as_str(), "waitpoint key {key:?}");
        assert_eq!(b.read_waitpoint_token(&wp).await.unwrap().as_deref(), Some(expected.as_str()));
        clock.advance(7);
    }
}

/// Suspend, signal and resume under the server's clock.
#[tokio::test]
async fn server_time_drives_suspend_and_signal() {
    use ff_core::suspension::*;
    let b = common::backend(None).await;
    b.seed_waitpoint_hmac_secret("k1", SECRET).await.unwrap();
    let e = id(11);
    b.create_execution(CreateExecutionArgs::new(e.clone(), "ns", LaneId::new("default"), "k")).await.unwrap();
    let c = grant_and_claim(&b, &e, 60_000).await;
    let wp = ff_core::WaitpointId::from_uuid(Uuid::from_u64_pair(0x78, 1));
    let args = SuspendArgs::new(
        ff_core::SuspensionId::from_uuid(Uuid::from_u64_pair(0x79, 1)),
        WaitpointBinding::Fresh { waitpoint_id: wp, waitpoint_key: "go".into() },
        ResumeCondition::Single { waitpoint_key: "go".into(), matcher: SignalMatcher::Wildcard },
        SuspensionReasonCode::WaitingForSignal,
    )
    .with_timeout(wall_ms() + 600_000, TimeoutBehavior::Fail);
    let out = b.suspend(&c.handle, args).await.unwrap();
    let SuspendOutcome::Suspended { details, .. } = out else { panic!("{out:?}") };
    assert_eq!(b.read_execution_state(&e).await.unwrap(), Some(PublicState::Suspended));
    let (page, _) = b.list_suspended(e.partition_index(), None, 10).await.unwrap();
    assert!(page.iter().any(|s| s.execution_id == e), "{page:?}");
    let signal = DeliverSignalArgs {
        payload: Some(vec![0, 255, b'\n']),
        ..DeliverSignalArgs::new(
            e.clone(),
            wp,
            ff_core::SignalId::from_uuid(Uuid::from_u64_pair(0x7a, 1)),
            "done",
            details.primary.waitpoint_token,
        )
    };
    let r = b.deliver_signal(signal).await.unwrap();
    assert!(
        matches!(r, ff_core::suspension::DeliverSignalOutcome::Accepted { ref effect, .. }
        if effect == "resume_condition_satisfied"),
        "{r:?}"
    );
    assert_eq!(b.read_execution_state(&e).await.unwrap(), Some(PublicState::Waiting));
    let seen = b.observe_execution_signals(&e).await.unwrap();
    assert_eq!(seen.len(), 1);
    assert_eq!(seen[0].payload.as_deref(), Some(&[0, 255, b'\n'][..]));
}

#[tokio::test]
async fn the_loaded_library_has_this_clients_version() {
    let b = common::backend(None).await;
    b.check_library_version().await.unwrap();
    assert!(ff_backend_valkey::library_version().starts_with(env!("CARGO_PKG_VERSION")));
}

#[tokio::test]
async fn a_call_from_another_library_version_is_refused() {
    let b = common::backend(None).await;
    let client = ferriskey::ClientBuilder::new().host("127.0.0.1", common::port()).build().await.unwrap();
    let e = id(7);
    let core = format!("{}ff:exec:{}:{}:core", b.config().key_prefix, e.hash_tag(), e.as_str());
    let args = ["", b.config().key_prefix.as_str(), &e.hash_tag(), e.as_str(), "0.0.0+other"];
    let err = client.fcall::<ferriskey::Value>("ff_describe_execution", &[core], &args).await.unwrap_err();
    assert_eq!(err.code(), Some("library_version_mismatch"), "{err}");
}

#[tokio::test]
async fn context_and_tags_round_trip_binary_payloads() {
    let b = common::backend(None).await;
    let e = id(8);
    let mut args = CreateExecutionArgs::new(e.clone(), "ns", LaneId::new("default"), "kind-x");
    args.input_payload = vec![0, 159, 146, 150, b'\r', b'\n', 255];
    args.tags.insert("team.owner".into(), "ops".into());
    b.create_execution(args).await.unwrap();
    let ctx = b.read_execution_context(&e).await.unwrap();
    assert_eq!(ctx.input_payload, vec![0, 159, 146, 150, b'\r', b'\n', 255]);
    assert_eq!(ctx.execution_kind, "kind-x");
    assert_eq!(ctx.tags.get("team.owner").map(String::as_str), Some("ops"));
    b.set_execution_tag(&e, "team.region", "eu").await.unwrap();
    assert_eq!(b.get_execution_tag(&e, "team.region").await.unwrap().as_deref(), Some("eu"));
    assert_eq!(b.get_execution_tag(&e, "absent.key").await.unwrap(), None);
    let missing = b.read_execution_context(&id(9)).await.unwrap_err();
    assert_eq!(missing.code(), Some("invalid_input"));
}

/// The retention trimmer purges a terminal execution once its retention has passed,
/// with every key it owned (suspension, signals, streams included).
#[tokio::test]
async fn retention_purges_every_key_of_an_old_terminal_execution() {
    use ff_core::suspension::*;
    let clock = ff_core::SimClock::default();
    let b = common::backend(Some(clock.clone())).await;
    b.seed_waitpoint_hmac_secret("k1", SECRET).await.unwrap();
    let e = id(12);
    b.create_execution(CreateExecutionArgs::new(e.clone(), "ns", LaneId::new("default"), "k")).await.unwrap();
    let c = grant_and_claim(&b, &e, 60_000).await;
    let frame = ff_core::stream::Frame::new(b"line".to_vec(), ff_core::stream::FrameKind::Stdout);
    b.append_frame(&c.handle, frame).await.unwrap();
    let wp = ff_core::WaitpointId::from_uuid(Uuid::from_u64_pair(0x7b, 1));
    let pending = b.create_waitpoint(&c.handle, wp, "cb", 60_000).await.unwrap();
    let signal = DeliverSignalArgs {
        payload: Some(b"p".to_vec()),
        ..DeliverSignalArgs::new(
            e.clone(),
            wp,
            ff_core::SignalId::from_uuid(Uuid::from_u64_pair(0x7c, 1)),
            "done",
            pending.hmac_token,
        )
    };
    b.deliver_signal(signal).await.unwrap();
    b.complete(&c.handle, Some(b"r".to_vec())).await.unwrap();
    let own = |dump: &str| {
        dump.lines()
            .filter(|l| l.contains(&e.uuid().to_string()) || l.contains(":wp:") || l.contains(":signal:"))
            .count()
    };
    assert!(own(&common::raw_dump(&b.config().key_prefix)) > 5);
    let partition = e.partition_index();
    clock.advance(86_399_999);
    let r = b.run_scanner(ScannerKind::RetentionTrimmer, partition, 100).await.unwrap();
    assert_eq!(r.acted, 0, "not yet past retention");
    clock.advance(1);
    let r = b.run_scanner(ScannerKind::RetentionTrimmer, partition, 100).await.unwrap();
    assert_eq!(r.acted, 1);
    assert_eq!(b.describe_execution(&id(12)).await.unwrap(), None);
    let left = common::raw_dump(&b.config().key_prefix);
    assert_eq!(own(&left), 0, "keys left behind:\n{left}");
}
