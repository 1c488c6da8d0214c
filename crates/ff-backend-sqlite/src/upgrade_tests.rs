//! Migration 4: a version-3 file (records in one JSON table) opens with the
//! current code and keeps every record; flow edges live in their own rows.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::sync::Arc;

use ff_core::flow::{EdgeDependencyPolicy, EdgeSnapshot, GroupState};
use ff_core::hmac_token::HmacKeystore;
use ff_core::suspension::WaitpointState;
use ff_core::{
    BudgetId, EdgeId, EngineError, ExecutionId, FlowId, Namespace, PartitionConfig, QuotaPolicyId, SignalId,
    SimClock, SuspensionId, WaitpointId,
};
use ff_engine::Store;
use ff_engine::admission::{BudgetRecord, QuotaRecord, UsageDedup};
use ff_engine::flow::{DepRecord, DepsRecord, EdgeGroup, FlowRecord};
use ff_engine::records::RecordKind;
use ff_engine::suspension::{SignalRecord, WaitpointRecord};
use rusqlite::{Connection, params};
use serde_json::json;
use uuid::Uuid;

use crate::{Durability, SqliteBackend, SqliteOptions, schema};

fn fresh(name: &str) -> PathBuf {
    let p = std::env::temp_dir().join(format!("ff-sqlite-upgrade-{}-{name}.db", std::process::id()));
    for suffix in ["", "-wal", "-shm"] {
        let _ = std::fs::remove_file(format!("{}{suffix}", p.display()));
    }
    p
}

fn open(path: &PathBuf) -> Result<SqliteBackend, crate::OpenError> {
    let options = SqliteOptions {
        partitions: PartitionConfig::default(),
        clock: Arc::new(SimClock::default()),
        durability: Durability::Normal,
    };
    crate::open(path, options)
}

fn eid(n: u64) -> ExecutionId {
    ExecutionId::from_parts(1, Uuid::from_u64_pair(0, n))
}

fn uuid(n: u64) -> Uuid {
    Uuid::from_u64_pair(7, n)
}

fn edge(flow: FlowId, id: EdgeId, up: &ExecutionId, down: &ExecutionId) -> EdgeSnapshot {
    EdgeSnapshot {
        edge_id: id,
        flow_id: flow,
        upstream_execution_id: up.clone(),
        downstream_execution_id: down.clone(),
        dependency_kind: "success_only".into(),
        satisfaction_condition: "all_required".into(),
        data_passing_ref: None,
        edge_state: "pending".into(),
        created_at: 10,
        created_by: "engine".into(),
    }
}

/// A flow a→b, a→c with members a, b, c and one edge group on b.
fn flow_record(flow: FlowId) -> FlowRecord {
    let (a, b, c) = (eid(1), eid(2), eid(3));
    let (e1, e2) = (EdgeId::from_uuid(uuid(1)), EdgeId::from_uuid(uuid(2)));
    let group = EdgeGroup {
        policy: EdgeDependencyPolicy::AllOf,
        n: 1,
        succeeded: 0,
        failed: 0,
        skipped: 0,
        state: GroupState::Pending,
        satisfied_at: None,
        cancel_siblings: Vec::new(),
        cancel_siblings_reason: None,
    };
    FlowRecord {
        flow_id: flow,
        flow_kind: "dag".into(),
        namespace: Namespace::new("ns"),
        graph_revision: 2,
        node_count: 3,
        edge_count: 2,
        public_flow_state: "open".into(),
        created_at: 1,
        last_mutation_at: 10,
        cancelled_at: None,
        cancel_reason: None,
        cancellation_policy: None,
        tags: BTreeMap::from([("team".to_owned(), "core".to_owned())]),
        members: BTreeSet::from([a.clone(), b.clone(), c.clone()]),
        edges: BTreeMap::from([(e1, edge(flow, e1, &a, &b)), (e2, edge(flow, e2, &a, &c))]),
        outgoing: BTreeMap::from([(a.clone(), BTreeSet::from([e1, e2]))]),
        incoming: BTreeMap::from([(b.clone(), BTreeSet::from([e1])), (c.clone(), BTreeSet::from([e2]))]),
        groups: BTreeMap::from([(b, group)]),
        pending_cancels: BTreeSet::from([c]),
        cancel_backlog_at: None,
    }
}

fn to_json<T: serde::Serialize>(v: &T) -> String {
    serde_json::to_string(v).expect("fixture encodes")
}

fn budget_record(budget: BudgetId, a: &ExecutionId) -> BudgetRecord {
    BudgetRecord {
        budget_id: budget,
        scope_type: "tenant".into(),
        scope_id: "acme".into(),
        enforcement_mode: "strict".into(),
        on_hard_limit: "fail".into(),
        on_soft_limit: "warn".into(),
        reset_interval_ms: 60_000,
        hard_limits: BTreeMap::from([("tokens".to_owned(), 100), ("calls".to_owned(), 0)]),
        soft_limits: BTreeMap::from([("tokens".to_owned(), 80)]),
        // u64::MAX checks that values past i64::MAX survive the integer columns.
        usage: BTreeMap::from([
            ("tokens".to_owned(), 7),
            ("_init".to_owned(), 0),
            ("huge".to_owned(), u64::MAX),
        ]),
        breach_count: 1,
        soft_breach_count: 0,
        reset_count: 0,
        last_breach_at: Some(4),
        last_breach_dim: Some("tokens".into()),
        last_reset_at: None,
        next_reset_at: Some(60_001),
        created_at: 1,
        last_updated_at: 4,
        ledgers: BTreeMap::from([(a.to_string(), BTreeMap::from([("tokens".to_owned(), 7)]))]),
        breached_at: None,
    }
}

fn quota_record(quota: QuotaPolicyId, a: &ExecutionId) -> QuotaRecord {
    QuotaRecord {
        quota_policy_id: quota,
        requests_per_window_seconds: 60,
        max_requests_per_window: 10,
        active_concurrency_cap: 2,
        created_at: Some(5),
        concurrency: 1,
        guards: BTreeMap::from([(a.to_string(), 1_000)]),
    }
}

fn deps_record(flow: FlowId, a: &ExecutionId) -> DepsRecord {
    DepsRecord {
        unsatisfied_required_count: 1,
        impossible_required_count: 0,
        flow_id: Some(flow),
        last_flow_graph_revision: 2,
        last_dependency_update_at: 9,
        deps: BTreeMap::from([(
            EdgeId::from_uuid(uuid(1)),
            DepRecord {
                upstream: a.clone(),
                state: "unsatisfied".into(),
                data_passing_ref: None,
                last_resolved_at: None,
            },
        )]),
    }
}

fn waitpoint_record(wp: WaitpointId, susp: SuspensionId, a: &ExecutionId) -> WaitpointRecord {
    WaitpointRecord {
        waitpoint_id: wp,
        execution_id: a.clone(),
        attempt_index: 0,
        suspension_id: Some(susp),
        waitpoint_key: "wk".into(),
        token: "kid1:00".into(),
        state: WaitpointState::Active,
        created_at: 3,
        activated_at: Some(3),
        expires_at: Some(500),
        satisfied_at: None,
        closed_at: None,
        close_reason: None,
        signal_count: 1,
        matched_signal_count: 0,
        last_signal_at: Some(4),
        log_seq: 1,
        condition_closed: false,
        condition_closed_reason: None,
    }
}

fn signal_record(sig: SignalId, wp: WaitpointId, a: &ExecutionId) -> SignalRecord {
    SignalRecord {
        signal_id: sig,
        execution_id: a.clone(),
        waitpoint_id: wp,
        signal_name: "approved".into(),
        signal_category: "user".into(),
        source_type: "api".into(),
        source_identity: "alice".into(),
        correlation_id: "c1".into(),
        idempotency_key: "idem-1|with-bar".into(),
        created_at: 4,
        accepted_at: 4,
        payload: Some(vec![1, 2, 3]),
        payload_encoding: "bytes".into(),
        observed_effect: "appended_to_waitpoint".into(),
    }
}

/// One record of every kind, as the engine writes them: `(kind, key, json)`.
fn fixtures() -> Vec<(RecordKind, String, String)> {
    let flow = FlowId::from_uuid(uuid(10));
    let budget = BudgetId::from_uuid(uuid(11));
    let quota = QuotaPolicyId::from_uuid(uuid(12));
    let wp = WaitpointId::from_uuid(uuid(13));
    let sig = SignalId::from_uuid(uuid(14));
    let susp = SuspensionId::from_uuid(uuid(15));
    let (a, b) = (eid(1), eid(2));
    // Suspensions and the two guards are stored whole: their JSON only needs the columns' fields.
    let suspension = json!({
        "suspension_id": susp, "execution_id": a, "attempt_index": 0, "waitpoint_id": wp,
        "timeout_at": 500, "reason_code": "waiting_for_signal", "satisfier_signals": []
    });
    let keystore = HmacKeystore {
        current_kid: Some("kid1".into()),
        secrets: BTreeMap::from([("kid1".to_owned(), "00ff".to_owned())]),
        ..HmacKeystore::default()
    };
    vec![
        (RecordKind::Flow, flow.to_string(), to_json(&flow_record(flow))),
        (RecordKind::Budget, budget.to_string(), to_json(&budget_record(budget, &a))),
        (RecordKind::UsageDedup, format!("{budget}|report-1"), to_json(&UsageDedup { expires_at: 55 })),
        (RecordKind::QuotaPolicy, quota.to_string(), to_json(&quota_record(quota, &a))),
        (RecordKind::Dependencies, b.to_string(), to_json(&deps_record(flow, &a))),
        (RecordKind::Waitpoint, wp.to_string(), to_json(&waitpoint_record(wp, susp, &a))),
        (RecordKind::Suspension, a.to_string(), suspension.to_string()),
        (RecordKind::Signal, sig.to_string(), to_json(&signal_record(sig, wp, &a))),
        (
            RecordKind::SignalDedup,
            format!("{wp}|idem-1|with-bar"),
            json!({"signal_id": sig, "expires_at": 99}).to_string(),
        ),
        (
            RecordKind::SuspendDedup,
            format!("{a}|suspend-1"),
            json!({"details": {"opaque": true}, "already_satisfied": false, "expires_at": 77}).to_string(),
        ),
        (RecordKind::HmacKeystore, "keystore".into(), to_json(&keystore)),
    ]
}

/// Builds a version-3 file holding `rows` in the legacy `records` table.
fn build_v3(path: &PathBuf, rows: &[(String, String, String)]) {
    let mut conn = Connection::open(path).expect("create the v3 file");
    schema::migrate_to(&mut conn, "v3", 3).expect("migrations 1-3");
    let version: i64 = conn.query_row("PRAGMA user_version", [], |r| r.get(0)).expect("user_version");
    assert_eq!(version, 3);
    for (kind, key, value) in rows {
        conn.execute("INSERT INTO records (kind, key, value) VALUES (?1, ?2, ?3)", params![kind, key, value])
            .expect("legacy record");
    }
}

fn read_back(b: &SqliteBackend, kind: RecordKind, key: &str) -> Result<Option<String>, EngineError> {
    let key = key.to_owned();
    b.runner().with_store_blocking(move |s| s.get_record(kind, &key))?
}

fn json_value(s: &str) -> serde_json::Value {
    serde_json::from_str(s).expect("stored JSON parses")
}

fn lines_of(dump: &str, table: &str) -> usize {
    dump.lines().filter(|l| l.starts_with(&format!("{table} "))).count()
}

#[test]
fn a_version_3_file_opens_and_keeps_every_record() {
    let path = fresh("v3");
    let records = fixtures();
    let kinds: BTreeSet<&str> = records.iter().map(|(k, _, _)| k.as_str()).collect();
    assert_eq!(kinds.len(), crate::records::KINDS.len(), "the fixture covers every record kind");
    let rows: Vec<_> =
        records.iter().map(|(k, key, v)| (k.as_str().to_owned(), key.clone(), v.clone())).collect();
    build_v3(&path, &rows);

    let b = open(&path).expect("a v3 file opens");
    for (kind, key, json) in &records {
        let got = read_back(&b, *kind, key).expect("read").unwrap_or_else(|| panic!("{kind:?} {key} lost"));
        assert_eq!(json_value(&got), json_value(json), "{kind:?} {key}");
    }
    let dump = b.runner().dump();
    assert_eq!(lines_of(&dump, "flow_edges"), 2, "{dump}");
    assert_eq!(lines_of(&dump, "flow_members"), 3, "{dump}");
    assert_eq!(lines_of(&dump, "budget_dimensions"), 4, "{dump}");
    assert_eq!(lines_of(&dump, "records"), 0, "{dump}");
    assert!(b.runner().invariant_violations().is_empty());

    let conn = Connection::open(&path).expect("inspect");
    let version: i64 = conn.query_row("PRAGMA user_version", [], |r| r.get(0)).expect("user_version");
    assert_eq!(version, 4);
    let legacy: i64 = conn
        .query_row("SELECT count(*) FROM sqlite_master WHERE name = 'records'", [], |r| r.get(0))
        .expect("sqlite_master");
    assert_eq!(legacy, 0, "the legacy table is dropped");
    let edges: Vec<(String, String)> = conn
        .prepare("SELECT upstream_execution_id, downstream_execution_id FROM flow_edges ORDER BY edge_id")
        .and_then(|mut s| s.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?.collect())
        .expect("edge rows");
    let (a, b2, c) = (eid(1).to_string(), eid(2).to_string(), eid(3).to_string());
    assert_eq!(edges, vec![(a.clone(), b2), (a, c)]);
    let dedup: (String, String) = conn
        .query_row("SELECT waitpoint_id, idempotency_key FROM signal_dedup", [], |r| {
            Ok((r.get(0)?, r.get(1)?))
        })
        .expect("dedup row");
    assert_eq!(dedup, (WaitpointId::from_uuid(uuid(13)).to_string(), "idem-1|with-bar".to_owned()));
}

#[test]
fn an_unreadable_legacy_record_refuses_the_open_and_leaves_the_file_at_version_3() {
    let path = fresh("v3-bad");
    build_v3(&path, &[("no_such_kind".into(), "k".into(), "{}".into())]);
    match open(&path) {
        Err(crate::OpenError::Corrupt { reason, .. }) => assert!(reason.contains("no_such_kind"), "{reason}"),
        Err(e) => panic!("unexpected error {e}"),
        Ok(_) => panic!("an unknown record kind was accepted"),
    }
    let conn = Connection::open(&path).expect("inspect");
    let version: i64 = conn.query_row("PRAGMA user_version", [], |r| r.get(0)).expect("user_version");
    assert_eq!(version, 3, "the failed migration rolled back");
    let kept: i64 = conn.query_row("SELECT count(*) FROM records", [], |r| r.get(0)).expect("records");
    assert_eq!(kept, 1);
}

#[test]
fn flow_edge_rows_follow_each_write_of_the_flow() {
    let path = fresh("edges");
    let b = open(&path).expect("open");
    let flow = FlowId::from_uuid(uuid(20));
    let key = flow.to_string();
    let full = flow_record(flow);
    let mut one_edge = full.clone();
    let e2 = EdgeId::from_uuid(uuid(2));
    one_edge.edges.remove(&e2);
    one_edge.outgoing.values_mut().for_each(|s| {
        s.remove(&e2);
    });
    one_edge.incoming.remove(&eid(3));
    let mut skewed = full.clone();
    skewed.outgoing.clear();

    let put = |rec: &FlowRecord| {
        let (key, json) = (key.clone(), to_json(rec));
        b.runner().with_store_blocking(move |s| s.put_record(RecordKind::Flow, &key, &json)).expect("runner")
    };
    put(&full).expect("put the full flow");
    assert_eq!(lines_of(&b.runner().dump(), "flow_edges"), 2);
    put(&one_edge).expect("put the flow without e2");
    assert_eq!(lines_of(&b.runner().dump(), "flow_edges"), 1);
    let got = read_back(&b, RecordKind::Flow, &key).expect("read").expect("present");
    assert_eq!(serde_json::from_str::<FlowRecord>(&got).expect("decodes"), one_edge);

    match put(&skewed) {
        Err(EngineError::Validation { .. }) => {}
        other => panic!("an adjacency that does not match the edges was stored: {other:?}"),
    }
    let got = read_back(&b, RecordKind::Flow, &key).expect("read").expect("present");
    assert_eq!(serde_json::from_str::<FlowRecord>(&got).expect("decodes"), one_edge);

    let delete = |key: String| {
        b.runner().with_store_blocking(move |s| s.delete_record(RecordKind::Flow, &key)).expect("runner")
    };
    assert!(delete(key.clone()).expect("delete"));
    assert!(!delete(key.clone()).expect("delete again"));
    assert_eq!(read_back(&b, RecordKind::Flow, &key).expect("read"), None);
    let dump = b.runner().dump();
    for table in ["flows", "flow_edges", "flow_members", "flow_edge_groups"] {
        assert_eq!(lines_of(&dump, table), 0, "{table}: {dump}");
    }
}
