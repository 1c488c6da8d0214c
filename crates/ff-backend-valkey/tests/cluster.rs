//! The backend on a local three-master cluster (`scripts/valkey.sh cluster-start` on
//! `FF_VALKEY_CLUSTER_TEST_PORT`, default 7191, and the next two ports): a smoke run
//! across partitions whose slots live on different masters, then the conformance kit.
//! The tests start the cluster themselves and fail when it cannot be started.

mod common;

use std::sync::{Arc, OnceLock};

use ff_backend_valkey::raw::{self, ClusterPrimary, Conn, Resp};
use ff_backend_valkey::{Topology, ValkeyBackend, ValkeyConfig, key_hash_slot};
use ff_core::contracts::*;
use ff_core::suspension::*;
use ff_core::{
    AttemptId, Clock, EngineBackend, ExecutionId, FlowId, LaneId, LeaseId, PartitionConfig, PublicState,
    SimClock, WorkerId, WorkerInstanceId,
};
use uuid::Uuid;

/// Flow partitions of every backend here: 8 tags whose slots fall on all three masters.
const FLOW_PARTITIONS: u16 = 8;
const SECRET: &str = "000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f";

/// The first port of the test cluster (override with `FF_VALKEY_CLUSTER_TEST_PORT`).
fn cluster_port() -> u16 {
    std::env::var("FF_VALKEY_CLUSTER_TEST_PORT").ok().and_then(|p| p.parse().ok()).unwrap_or(7191)
}

/// Starts the cluster once per test binary and returns its primaries; panics (fails
/// the test) when it cannot be started.
fn primaries() -> &'static [ClusterPrimary] {
    static PRIMARIES: OnceLock<Result<Vec<ClusterPrimary>, String>> = OnceLock::new();
    let r = PRIMARIES.get_or_init(|| {
        raw::start_local_cluster(cluster_port())?;
        let primaries = raw::cluster_primaries("127.0.0.1", cluster_port()).map_err(|e| e.to_string())?;
        for p in &primaries {
            common::remove_stale_keys(p.port);
        }
        Ok(primaries)
    });
    match r {
        Ok(p) => p,
        Err(e) => panic!("{e}"),
    }
}

/// `(host, port)` of every primary.
fn primary_addrs() -> Vec<(String, u16)> {
    primaries().iter().map(|p| (p.host.clone(), p.port)).collect()
}

/// A backend on the cluster on a fresh prefix.
async fn cluster_backend(clock: Option<SimClock>) -> ValkeyBackend {
    primaries();
    let port = cluster_port();
    let cfg = ValkeyConfig {
        key_prefix: common::fresh_prefix(),
        partitions: PartitionConfig { num_flow_partitions: FLOW_PARTITIONS, ..PartitionConfig::default() },
        clock,
        ..ValkeyConfig::local(port)
    };
    let more_seeds = vec![("127.0.0.1".to_owned(), port + 1), ("127.0.0.1".to_owned(), port + 2)];
    match ValkeyBackend::connect_with(cfg, Topology::Cluster { more_seeds }).await {
        Ok(b) => b,
        Err(e) => panic!("cannot connect to the test cluster on port {port}: {e}"),
    }
}

/// The port of the primary owning a key's slot.
fn owner(key: &str) -> u16 {
    let slot = key_hash_slot(key);
    match primaries().iter().find(|p| p.owns(slot)) {
        Some(p) => p.port,
        None => panic!("no primary owns slot {slot} of {key}"),
    }
}

/// The lowest flow partition on each master, as `(partition, master port)`.
fn partition_per_master() -> Vec<(u16, u16)> {
    let mut picked: Vec<(u16, u16)> = Vec::new();
    for p in 0..FLOW_PARTITIONS {
        let port = owner(&format!("{{fp:{p}}}"));
        if !picked.iter().any(|(_, q)| *q == port) {
            picked.push((p, port));
        }
    }
    picked
}

/// Whether the node on `port` holds `key` itself (no redirect: `EXISTS` on the node).
fn node_has(port: u16, key: &str) -> bool {
    let reply = Conn::connect("127.0.0.1", port).and_then(|mut c| c.command(&[b"EXISTS", key.as_bytes()]));
    matches!(reply, Ok(Resp::Other(ref s)) if s == ":1")
}

/// Asserts that every key under `prefix`, on every primary, carries one of the backend's
/// hash tags (`{fp:N}`, `{b:N}`, `{q:N}`, `{w:<ns>}`, `{feed}`) and sits on the primary
/// owning its slot: no key of the backend is global. Returns how many keys each
/// primary holds.
fn assert_keys_tagged(prefix: &str) -> Vec<(u16, usize)> {
    let mut counts = Vec::new();
    for p in primaries() {
        let pattern = format!("{prefix}*");
        let reply =
            Conn::connect(&p.host, p.port).and_then(|mut c| c.command(&[b"KEYS", pattern.as_bytes()]));
        let Ok(Resp::Array(keys)) = reply else { panic!("KEYS on {}: {reply:?}", p.port) };
        for k in &keys {
            let Resp::Bulk(Some(k)) = k else { panic!("KEYS item {k:?}") };
            let key = String::from_utf8_lossy(k).into_owned();
            let rest = &key[prefix.len()..];
            let tag = rest
                .find('{')
                .and_then(|open| rest[open..].find('}').map(|close| &rest[open..open + close + 1]));
            let known = tag.is_some_and(|t| {
                ["{fp:", "{b:", "{q:", "{w:"].iter().any(|f| t.starts_with(f)) || t == "{feed}"
            });
            assert!(known, "key without a backend hash tag: {key}");
            assert!(p.owns(key_hash_slot(&key)), "{key} is on {} but its slot is not", p.port);
        }
        counts.push((p.port, keys.len()));
    }
    counts
}

fn worker() -> (WorkerId, WorkerInstanceId, LaneId) {
    (WorkerId::new("w"), WorkerInstanceId::new("w-1"), LaneId::new("default"))
}

async fn grant(b: &dyn EngineBackend, id: &ExecutionId) {
    let (worker_id, worker_instance_id, lane_id) = worker();
    let grant = IssueClaimGrantArgs {
        execution_id: id.clone(),
        worker_id,
        worker_instance_id,
        lane_id,
        capability_hash: String::new(),
        grant_ttl_ms: 5_000,
        route_snapshot_json: String::new(),
        admission_summary: String::new(),
        worker_capabilities: CapabilitySet::default(),
    };
    b.issue_claim_grant(grant).await.unwrap();
}

async fn grant_and_claim(b: &dyn EngineBackend, id: &ExecutionId, n: u64) -> ClaimedExecution {
    grant(b, id).await;
    let (worker_id, worker_instance_id, lane_id) = worker();
    let claim = ClaimExecutionArgs {
        execution_id: id.clone(),
        worker_id,
        worker_instance_id,
        lane_id,
        lease_id: LeaseId::from_uuid(Uuid::from_u64_pair(1, n)),
        lease_ttl_ms: 60_000,
        attempt_id: AttemptId::from_uuid(Uuid::from_u64_pair(2, n)),
        attempt_policy_json: String::new(),
        attempt_timeout_ms: None,
        execution_deadline_at: None,
    };
    b.claim_execution(claim).await.unwrap()
}

fn create_args(id: &ExecutionId) -> CreateExecutionArgs {
    CreateExecutionArgs::new(id.clone(), "ns", LaneId::new("default"), "job")
}

async fn state(b: &dyn EngineBackend, id: &ExecutionId) -> Option<PublicState> {
    b.read_execution_state(id).await.unwrap()
}

/// Suspends a claimed execution on a fresh waitpoint and delivers the signal that
/// resumes it; returns the execution to `waiting`.
async fn suspend_and_signal(b: &dyn EngineBackend, c: &ClaimedExecution, n: u64) {
    let e = &c.execution_id;
    let wp = ff_core::WaitpointId::from_uuid(Uuid::from_u64_pair(0x78, n));
    let args = SuspendArgs::new(
        ff_core::SuspensionId::from_uuid(Uuid::from_u64_pair(0x79, n)),
        WaitpointBinding::Fresh { waitpoint_id: wp, waitpoint_key: "go".into() },
        ResumeCondition::Single { waitpoint_key: "go".into(), matcher: SignalMatcher::Wildcard },
        SuspensionReasonCode::WaitingForSignal,
    );
    let out = b.suspend(&c.handle, args).await.unwrap();
    let SuspendOutcome::Suspended { details, .. } = out else { panic!("{out:?}") };
    assert_eq!(state(b, e).await, Some(PublicState::Suspended));
    let signal = DeliverSignalArgs {
        payload: Some(b"ok".to_vec()),
        ..DeliverSignalArgs::new(
            e.clone(),
            wp,
            ff_core::SignalId::from_uuid(Uuid::from_u64_pair(0x7a, n)),
            "done",
            details.primary.waitpoint_token,
        )
    };
    let r = b.deliver_signal(signal).await.unwrap();
    assert!(
        matches!(r, DeliverSignalOutcome::Accepted { ref effect, .. } if effect == "resume_condition_satisfied"),
        "{r:?}"
    );
    assert_eq!(state(b, e).await, Some(PublicState::Waiting));
}

/// Claims a resumed execution (grant, then the resumed claim) and completes it.
async fn resume_and_complete(b: &dyn EngineBackend, e: &ExecutionId, n: u64) {
    grant(b, e).await;
    let (worker_id, worker_instance_id, lane_id) = worker();
    let resumed = ClaimResumedExecutionArgs {
        execution_id: e.clone(),
        worker_id,
        worker_instance_id,
        lane_id,
        lease_id: LeaseId::from_uuid(Uuid::from_u64_pair(3, n)),
        lease_ttl_ms: 60_000,
        remaining_attempt_timeout_ms: None,
    };
    let c = b.claim_resumed_execution(resumed).await.unwrap();
    assert_eq!(state(b, e).await, Some(PublicState::Active));
    b.complete(&c.handle, Some(b"resumed".to_vec())).await.unwrap();
    assert_eq!(state(b, e).await, Some(PublicState::Completed));
}

#[test]
fn three_masters_cover_every_slot_and_the_partitions_span_them() {
    let primaries = primaries();
    assert_eq!(primaries.len(), 3, "{primaries:?}");
    let covered =
        (0..ff_backend_valkey::CLUSTER_SLOTS).all(|s| primaries.iter().filter(|p| p.owns(s)).count() == 1);
    assert!(covered, "every slot has exactly one owner: {primaries:?}");
    let picked = partition_per_master();
    assert_eq!(picked.len(), 3, "partitions 0..{FLOW_PARTITIONS} on three masters: {picked:?}");
}

/// Create, claim, complete, suspend, signal, resumed claim and complete on one
/// partition of each master, through one backend; each execution's records are on
/// the master that owns its partition's slot.
#[tokio::test]
async fn smoke_across_partitions_on_every_master() {
    let clock = SimClock::default();
    let b = cluster_backend(Some(clock.clone())).await;
    assert!(b.is_cluster());
    b.seed_waitpoint_hmac_secret("k1", SECRET).await.unwrap();
    let prefix = b.config().key_prefix.clone();
    let picked = partition_per_master();
    assert_eq!(picked.len(), 3, "{picked:?}");
    for (partition, master) in picked {
        let n = u64::from(partition);
        let done = ExecutionId::from_parts(partition, Uuid::from_u64_pair(0xd0, n));
        let created = b.create_execution(create_args(&done)).await.unwrap();
        assert!(matches!(created, CreateExecutionOutcome::Created { .. }), "{created:?}");
        let c = grant_and_claim(&b, &done, 10 + n).await;
        clock.advance(5);
        b.complete(&c.handle, Some(b"done".to_vec())).await.unwrap();
        assert_eq!(state(&b, &done).await, Some(PublicState::Completed));
        assert_eq!(b.get_execution_result(&done).await.unwrap(), Some(b"done".to_vec()));

        let waits = ExecutionId::from_parts(partition, Uuid::from_u64_pair(0xd1, n));
        b.create_execution(create_args(&waits)).await.unwrap();
        let c = grant_and_claim(&b, &waits, 20 + n).await;
        suspend_and_signal(&b, &c, n).await;
        resume_and_complete(&b, &waits, n).await;

        for e in [&done, &waits] {
            let core = format!("{prefix}ff:exec:{}:{}:core", e.hash_tag(), e.as_str());
            assert_eq!(owner(&core), master);
            assert!(node_has(master, &core), "{core} is not on master {master}");
        }
        let listed = b.list_executions(partition, None, 10).await.unwrap();
        assert_eq!(listed.len(), 2, "partition {partition}: {listed:?}");
    }
    let counts = assert_keys_tagged(&prefix);
    assert!(counts.iter().all(|(_, n)| *n > 0), "every master holds keys: {counts:?}");
}

/// The idempotency guard is one slot for every partition: a second create with the key
/// on a partition of another master is a duplicate, and a rejected create gives its
/// reservation back.
#[tokio::test]
async fn idempotency_holds_across_masters() {
    let b = cluster_backend(Some(SimClock::default())).await;
    let picked = partition_per_master();
    let ((p_a, m_a), (p_b, m_b)) = (picked[0], picked[1]);
    assert_ne!(m_a, m_b);
    let first = ExecutionId::from_parts(p_a, Uuid::from_u64_pair(0x1d, 1));
    let mut args = create_args(&first);
    args.idempotency_key = Some("order-1".into());
    assert!(matches!(
        b.create_execution(args.clone()).await.unwrap(),
        CreateExecutionOutcome::Created { .. }
    ));
    args.execution_id = ExecutionId::from_parts(p_b, Uuid::from_u64_pair(0x1d, 2));
    match b.create_execution(args.clone()).await.unwrap() {
        CreateExecutionOutcome::Duplicate { execution_id } => assert_eq!(execution_id, first),
        other => panic!("{other:?}"),
    }
    assert_eq!(state(&b, &args.execution_id).await, None);
    // A retry of the first create answers by id.
    args.execution_id = first.clone();
    match b.create_execution(args).await.unwrap() {
        CreateExecutionOutcome::Duplicate { execution_id } => assert_eq!(execution_id, first),
        other => panic!("{other:?}"),
    }
    // A create rejected after its reservation releases the guard.
    let rejected = ExecutionId::from_parts(p_a, Uuid::from_u64_pair(0x1d, 3));
    let mut bad = create_args(&rejected);
    bad.idempotency_key = Some("order-2".into());
    bad.policy_json = r#"{"routing_requirements":{"required_capabilities":"gpu"}}"#.into();
    let err = b.create_execution(bad).await.unwrap_err();
    assert_eq!(err.code(), Some("invalid_capabilities"), "{err:?}");
    let second = ExecutionId::from_parts(p_b, Uuid::from_u64_pair(0x1d, 4));
    let mut retry = create_args(&second);
    retry.idempotency_key = Some("order-2".into());
    assert!(matches!(b.create_execution(retry).await.unwrap(), CreateExecutionOutcome::Created { .. }));
    assert_keys_tagged(&b.config().key_prefix);
}

/// A flow on each master completes a member; the feed relays the three partitions'
/// outboxes into one cursor of contiguous event ids.
#[tokio::test]
async fn completions_from_every_master_are_read_by_one_cursor() {
    let b = cluster_backend(Some(SimClock::default())).await;
    let cfg = b.config().partitions;
    let mut members = Vec::new();
    for (partition, _) in partition_per_master() {
        let flow = (0..10_000u64)
            .map(|i| FlowId::from_uuid(Uuid::from_u64_pair(0xf1, i)))
            .find(|f| ff_core::partition::flow_partition(&f.uuid(), &cfg).index == partition)
            .expect("a flow id on the partition");
        let args = ff_core::flow::CreateFlowArgs {
            flow_id: flow,
            flow_kind: "dag".into(),
            namespace: ff_core::Namespace::new("ns"),
        };
        b.create_flow(args).await.unwrap();
        let e = ExecutionId::from_parts(partition, Uuid::from_u64_pair(0xf2, u64::from(partition)));
        b.create_execution(create_args(&e)).await.unwrap();
        b.add_execution_to_flow(&flow, &e).await.unwrap();
        let c = grant_and_claim(&b, &e, 30 + u64::from(partition)).await;
        b.complete(&c.handle, None).await.unwrap();
        members.push(e);
    }
    let first = b.read_completions(0, 1).await.unwrap();
    assert_eq!(first.len(), 1, "{first:?}");
    let events = b.read_completions(0, 100).await.unwrap();
    let ids: Vec<u64> = events.iter().map(|e| e.event_id).collect();
    assert_eq!(ids, [1, 2, 3], "{events:?}");
    assert_eq!(events[0], first[0]);
    let mut seen: Vec<ExecutionId> = events.iter().map(|e| e.execution_id.clone()).collect();
    seen.sort();
    members.sort();
    assert_eq!(seen, members);
    assert!(events.iter().all(|e| e.outcome == "success"));
    assert!(b.read_completions(3, 100).await.unwrap().is_empty());
    assert_keys_tagged(&b.config().key_prefix);
}

/// Partition scanners read their partition's own lane registry, and an idle poll
/// pipelines one scan per partition across the masters.
#[tokio::test]
async fn scanners_and_polls_run_on_every_master() {
    let clock = SimClock::default();
    let b = cluster_backend(Some(clock.clone())).await;
    let picked = partition_per_master();
    let mut delayed = Vec::new();
    for (partition, _) in &picked {
        let e = ExecutionId::from_parts(*partition, Uuid::from_u64_pair(0xde, u64::from(*partition)));
        let mut args = create_args(&e);
        args.delay_until = Some(clock.now_ms() + 1_000);
        b.create_execution(args).await.unwrap();
        delayed.push((*partition, e));
    }
    let lane = LaneId::new("default");
    let heads = b.scan_heads_pipelined(&lane, 0..FLOW_PARTITIONS).await.unwrap();
    assert!(heads.iter().all(Option::is_none), "{heads:?}");
    clock.advance(2_000);
    for (partition, e) in &delayed {
        let report = b.run_scanner(ScannerKind::DelayedPromoter, *partition, 100).await.unwrap();
        assert_eq!((report.examined, report.acted), (1, 1), "partition {partition}");
        assert_eq!(state(&b, e).await, Some(PublicState::Waiting));
    }
    let heads = b.scan_heads_pipelined(&lane, 0..FLOW_PARTITIONS).await.unwrap();
    let found: Vec<String> = heads.into_iter().flatten().collect();
    assert_eq!(found.len(), picked.len(), "{found:?}");
    assert_keys_tagged(&b.config().key_prefix);
}

/// The conformance kit's state dump on a cluster: every key under the prefix on every primary.
async fn cluster_fixture() -> ff_conformance::Fixture {
    let backend = cluster_backend(Some(SimClock::default())).await;
    let prefix = backend.config().key_prefix.clone();
    let nodes = primary_addrs();
    ff_conformance::Fixture::new(Arc::new(backend))
        .with_inspect(Arc::new(move || raw::dump_prefix_nodes(&nodes, &prefix)))
}

ff_conformance::suite!(|| async { cluster_fixture().await });
