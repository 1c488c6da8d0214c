//! Hot paths per backend, grouped `backend/operation/size`:
//! the eligible scan over 256 partitions (idle and loaded, 1k and 100k
//! executions; one call per partition, and one batched `scan_eligible_heads`), grant + claim, claim → complete, renew, deliver a signal to a
//! suspended execution, and append a frame (the last two only on backends
//! that claim the family; skipped ones are printed).
//!
//! Backends: `FF_BENCH_BACKENDS` (default `memory,sqlite,valkey`). SQLite runs
//! on a file in WAL mode; Valkey on a loopback server this bench starts with
//! `scripts/valkey.sh` on `FF_BENCH_VALKEY_PORT` (default 6417), failing loudly
//! when it cannot.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use criterion::{BenchmarkId, Criterion};
use ff_backend_memory::new_sim_backend;
use ff_backend_sqlite::{Durability, SqliteOptions};
use ff_benches::backends::{BENCH_VALKEY_PORT_DEFAULT, connect_valkey, purge_prefix, start_local_valkey};
use ff_core::contracts::*;
use ff_core::stream::{DURABLE_RETENTION_SENT, FRAME_PAYLOAD_BYTES_DEFAULT, Frame, FrameKind};
use ff_core::suspension::*;
use ff_core::{
    AttemptId, CancelSource, ContractFamily, EngineBackend, ExecutionId, LaneId, LeaseFence, LeaseId,
    PartitionConfig, SignalId, SimClock, SuspensionId, WaitpointId, WorkerId, WorkerInstanceId,
};
use uuid::Uuid;

const PARTITIONS: u16 = 256;
/// Store sizes of the scan groups.
const SCAN_SIZES: [(&str, u64); 2] = [("1k", 1_000), ("100k", 100_000)];
/// SQLite's large scan size unless `FF_BENCH_LARGE` is set: populating 100k executions one
/// transaction each takes about a minute on a 2-core machine.
const SQLITE_SCAN_LARGE_DEFAULT: (&str, u64) = ("10k", 10_000);
/// Concurrent creates while populating a Valkey store.
const VALKEY_POPULATE_CONCURRENCY: u64 = 64;

type Backend = Arc<dyn EngineBackend>;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Memory,
    Sqlite,
    Valkey,
}

impl Kind {
    fn name(self) -> &'static str {
        match self {
            Self::Memory => "memory",
            Self::Sqlite => "sqlite",
            Self::Valkey => "valkey",
        }
    }
}

/// Whether a bench operation runs: `FF_BENCH_ONLY` (comma-separated substrings of
/// operation names, e.g. `claim_complete,renew`) skips the setup of the others too; an
/// `a|b` operation runs when either name is wanted.
fn wanted(operation: &str) -> bool {
    match std::env::var("FF_BENCH_ONLY") {
        Ok(only) => only
            .split(',')
            .map(str::trim)
            .filter(|o| !o.is_empty())
            .any(|o| operation.split('|').any(|name| name.contains(o))),
        Err(_) => true,
    }
}

/// The backends to bench, from `FF_BENCH_BACKENDS`.
fn kinds() -> Vec<Kind> {
    let list = std::env::var("FF_BENCH_BACKENDS").unwrap_or_else(|_| "memory,sqlite,valkey".into());
    list.split(',')
        .filter_map(|k| match k.trim() {
            "memory" => Some(Kind::Memory),
            "sqlite" => Some(Kind::Sqlite),
            "valkey" => Some(Kind::Valkey),
            "" => None,
            other => panic!("FF_BENCH_BACKENDS: unknown backend {other:?}"),
        })
        .collect()
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().expect("bench runtime")
}

fn valkey_port() -> u16 {
    std::env::var("FF_BENCH_VALKEY_PORT")
        .ok()
        .and_then(|p| p.parse().ok())
        .unwrap_or(BENCH_VALKEY_PORT_DEFAULT)
}

/// The root of every key prefix this process uses on Valkey (purged at exit).
fn valkey_root() -> String {
    format!("ffbench-hot-{}-", std::process::id())
}

fn next_store() -> u64 {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    NEXT.fetch_add(1, Ordering::Relaxed)
}

/// A fresh, empty store. SQLite uses `durability`; memory and SQLite run on a simulated clock,
/// Valkey on the server's `TIME`.
fn backend(rt: &tokio::runtime::Runtime, kind: Kind, durability: Durability) -> Backend {
    let cfg = PartitionConfig { num_flow_partitions: PARTITIONS, ..PartitionConfig::default() };
    let n = next_store();
    match kind {
        Kind::Memory => Arc::new(new_sim_backend(SimClock::new(1_000_000), cfg)),
        Kind::Sqlite => {
            let dir = sqlite_dir();
            std::fs::create_dir_all(&dir).expect("bench dir");
            let path = dir.join(format!("b-{}-{n}.db", std::process::id()));
            ff_benches::backends::remove_sqlite_files(&path);
            let options =
                SqliteOptions { partitions: cfg, clock: Arc::new(SimClock::new(1_000_000)), durability };
            Arc::new(ff_backend_sqlite::open(&path, options).expect("open sqlite"))
        }
        Kind::Valkey => {
            static STARTED: std::sync::OnceLock<Result<(), String>> = std::sync::OnceLock::new();
            let started =
                STARTED.get_or_init(|| start_local_valkey(valkey_port()).map_err(|e| e.to_string()));
            if let Err(e) = started {
                panic!("the Valkey benches need a server: {e}");
            }
            let prefix = format!("{}{n}:", valkey_root());
            let b = rt.block_on(connect_valkey("127.0.0.1", valkey_port(), &prefix, cfg, None));
            Arc::new(b.unwrap_or_else(|e| panic!("{e}")))
        }
    }
}

/// Where the SQLite stores live (emptied at start and end).
fn sqlite_dir() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("bench-sqlite")
}

fn id(n: u64) -> ExecutionId {
    ExecutionId::from_parts((n % u64::from(PARTITIONS)) as u16, Uuid::from_u64_pair(7, n))
}

fn lane() -> LaneId {
    LaneId::new("bench")
}

/// Creates executions `from..from + count` on `lane` (concurrently on Valkey, whose round
/// trips dominate; in order elsewhere).
async fn populate(b: &Backend, lane: &LaneId, from: u64, count: u64) {
    let create = |m: u64| CreateExecutionArgs::new(id(m), "bench", lane.clone(), "task");
    if b.capabilities().identity.family != "valkey" {
        for m in from..from + count {
            b.create_execution(create(m)).await.expect("create");
        }
        return;
    }
    let mut n = from;
    while n < from + count {
        let end = (n + VALKEY_POPULATE_CONCURRENCY).min(from + count);
        let mut set = tokio::task::JoinSet::new();
        for m in n..end {
            let (b, args) = (b.clone(), create(m));
            set.spawn(async move { b.create_execution(args).await });
        }
        while let Some(r) = set.join_next().await {
            r.expect("create task").expect("create");
        }
        n = end;
    }
}

/// One pass of an idle or loaded worker's poll: the head of `lane` on every partition.
async fn scan_all(b: &Backend, lane: &LaneId) -> usize {
    let mut found = 0;
    for partition in 0..PARTITIONS {
        let args = ScanEligibleArgs { lane_id: lane.clone(), partition, limit: 1 };
        found += b.scan_eligible_executions(args).await.expect("scan").len();
    }
    found
}

/// The same poll as one `scan_eligible_heads` call over every partition (one round trip on
/// backends that batch it).
async fn scan_heads(b: &Backend, lane: &LaneId) -> usize {
    b.scan_eligible_heads(lane, 0..PARTITIONS).await.expect("scan heads").len()
}

/// `{b}/eligible_scan_idle/N` polls an empty lane of a store holding N eligible executions on
/// another lane; `{b}/eligible_scan_loaded/N` polls the lane holding them.
fn eligible_scan(c: &mut Criterion, rt: &tokio::runtime::Runtime, kind: Kind) {
    for (label, size) in SCAN_SIZES {
        let (label, size) = match kind {
            Kind::Sqlite if size > 10_000 && std::env::var_os("FF_BENCH_LARGE").is_none() => {
                SQLITE_SCAN_LARGE_DEFAULT
            }
            _ => (label, size),
        };
        // Scans are reads: SQLite's commit durability does not change them, and populating
        // 100k executions one fsync each would take minutes.
        let b = backend(rt, kind, Durability::Normal);
        let t0 = Instant::now();
        rt.block_on(populate(&b, &lane(), 0, size));
        eprintln!("{}: populated {size} executions in {:.1?}", kind.name(), t0.elapsed());
        for (operation, lane, expected, batched) in [
            ("eligible_scan_idle", LaneId::new("idle"), 0, false),
            ("eligible_scan_loaded", lane(), usize::from(PARTITIONS), false),
            ("eligible_heads_idle", LaneId::new("idle"), 0, true),
            ("eligible_heads_loaded", lane(), usize::from(PARTITIONS), true),
        ] {
            if !wanted(operation) {
                continue;
            }
            let mut group = c.benchmark_group(format!("{}/{operation}", kind.name()));
            group.bench_function(BenchmarkId::from_parameter(label), |bench| {
                bench.iter(|| {
                    let found = match batched {
                        false => rt.block_on(scan_all(&b, &lane)),
                        true => rt.block_on(scan_heads(&b, &lane)),
                    };
                    assert_eq!(found, expected)
                })
            });
            group.finish();
        }
    }
}

fn grant_args(eid: &ExecutionId) -> IssueClaimGrantArgs {
    IssueClaimGrantArgs {
        execution_id: eid.clone(),
        worker_id: WorkerId::new("w"),
        worker_instance_id: WorkerInstanceId::new("w-1"),
        lane_id: lane(),
        capability_hash: String::new(),
        grant_ttl_ms: 5_000,
        route_snapshot_json: String::new(),
        admission_summary: String::new(),
        worker_capabilities: CapabilitySet::default(),
    }
}

/// Grant + claim; returns the claim and its fence.
async fn grant_claim(b: &Backend, eid: &ExecutionId, n: u64) -> (ClaimedExecution, LeaseFence) {
    b.issue_claim_grant(grant_args(eid)).await.expect("grant");
    let lease_id = LeaseId::from_uuid(Uuid::from_u64_pair(1, n));
    let attempt_id = AttemptId::from_uuid(Uuid::from_u64_pair(2, n));
    let claim = ClaimExecutionArgs {
        execution_id: eid.clone(),
        worker_id: WorkerId::new("w"),
        worker_instance_id: WorkerInstanceId::new("w-1"),
        lane_id: lane(),
        lease_id,
        lease_ttl_ms: 30_000,
        attempt_id,
        attempt_policy_json: String::new(),
        attempt_timeout_ms: None,
        execution_deadline_at: None,
    };
    let claimed = b.claim_execution(claim).await.expect("claim");
    let fence = LeaseFence { lease_id, lease_epoch: claimed.lease_epoch, attempt_id };
    (claimed, fence)
}

async fn complete(b: &Backend, eid: ExecutionId, fence: LeaseFence) {
    let args = CompleteExecutionArgs {
        execution_id: eid,
        fence: Some(fence),
        result_payload: None,
        source: CancelSource::LeaseHolder,
    };
    b.complete_execution(args).await.expect("complete");
}

/// Times `op` on `iters` executions of a fresh store, after `prepare` ran on each untimed.
/// A fresh store per sample keeps samples independent of what earlier ones left behind.
fn per_execution<P, O, T>(rt: &tokio::runtime::Runtime, kind: Kind, iters: u64, prepare: P, op: O) -> Duration
where
    P: AsyncFn(&Backend, u64) -> T,
    O: AsyncFn(&Backend, u64, T),
{
    let b = backend(rt, kind, Durability::Full);
    rt.block_on(async {
        populate(&b, &lane(), 0, iters).await;
        let mut prepared = Vec::with_capacity(usize::try_from(iters).unwrap_or(0));
        for n in 0..iters {
            prepared.push(prepare(&b, n).await);
        }
        let start = Instant::now();
        for (n, p) in (0..iters).zip(prepared) {
            op(&b, n, p).await;
        }
        start.elapsed()
    })
}

/// `{b}/grant_claim/1`: issue a claim grant and claim (new attempt and lease).
fn grant_claim_bench(c: &mut Criterion, rt: &tokio::runtime::Runtime, kind: Kind) {
    let mut group = c.benchmark_group(format!("{}/grant_claim", kind.name()));
    group.bench_function(BenchmarkId::from_parameter("1"), |bench| {
        bench.iter_custom(|iters| {
            per_execution(
                rt,
                kind,
                iters,
                async |_, _| (),
                async |b, n, ()| {
                    grant_claim(b, &id(n), n).await;
                },
            )
        })
    });
    group.finish();
}

/// `{b}/claim_complete/1`: grant → claim → complete, three contracts.
fn claim_complete(c: &mut Criterion, rt: &tokio::runtime::Runtime, kind: Kind) {
    let mut group = c.benchmark_group(format!("{}/claim_complete", kind.name()));
    group.bench_function(BenchmarkId::from_parameter("1"), |bench| {
        bench.iter_custom(|iters| {
            per_execution(
                rt,
                kind,
                iters,
                async |_, _| (),
                async |b, n, ()| {
                    let (_, fence) = grant_claim(b, &id(n), n).await;
                    complete(b, id(n), fence).await;
                },
            )
        })
    });
    group.finish();
}

/// A fresh durable store holding one execution leased to a worker.
fn held_lease(rt: &tokio::runtime::Runtime, kind: Kind) -> (Backend, ClaimedExecution, LeaseFence) {
    let b = backend(rt, kind, Durability::Full);
    let (claimed, fence) = rt.block_on(async {
        populate(&b, &lane(), 0, 1).await;
        grant_claim(&b, &id(0), 0).await
    });
    (b, claimed, fence)
}

/// `{b}/renew/1`: renew one held lease.
fn renew(c: &mut Criterion, rt: &tokio::runtime::Runtime, kind: Kind) {
    let (b, claimed, fence) = held_lease(rt, kind);
    let args = RenewLeaseArgs {
        execution_id: id(0),
        attempt_index: claimed.attempt_index,
        fence: Some(fence),
        lease_ttl_ms: 30_000,
        lease_history_grace_ms: 5_000,
    };
    let mut group = c.benchmark_group(format!("{}/renew", kind.name()));
    group.bench_function(BenchmarkId::from_parameter("1"), |bench| {
        bench.iter(|| rt.block_on(b.renew_lease(args.clone())).expect("renew"))
    });
    group.finish();
}

/// Claims execution `n` and suspends it on a fresh waitpoint; returns the delivery args.
async fn suspended(b: &Backend, n: u64) -> DeliverSignalArgs {
    let (claimed, fence) = grant_claim(b, &id(n), n).await;
    let waitpoint_id = WaitpointId::from_uuid(Uuid::from_u64_pair(3, n));
    let key = format!("wpk-{n}");
    let binding = WaitpointBinding::Fresh { waitpoint_id, waitpoint_key: key.clone() };
    let condition = ResumeCondition::Single { waitpoint_key: key, matcher: SignalMatcher::Wildcard };
    let suspend = SuspendArgs::new(
        SuspensionId::from_uuid(Uuid::from_u64_pair(4, n)),
        binding,
        condition,
        SuspensionReasonCode::WaitingForSignal,
    );
    let args = SuspendByTripleArgs {
        execution_id: id(n),
        attempt_index: claimed.attempt_index,
        fence: Some(fence),
        args: suspend,
    };
    let SuspendOutcome::Suspended { details, .. } = b.suspend_by_triple(args).await.expect("suspend") else {
        panic!("execution {n} did not suspend");
    };
    DeliverSignalArgs {
        signal_category: "bench".into(),
        source_type: "bench".into(),
        source_identity: "bench".into(),
        ..DeliverSignalArgs::new(
            id(n),
            waitpoint_id,
            SignalId::from_uuid(Uuid::from_u64_pair(5, n)),
            "go",
            details.primary.waitpoint_token,
        )
    }
}

/// `{b}/deliver_signal/1`: a signal that satisfies a suspended execution's condition.
fn deliver_signal(c: &mut Criterion, rt: &tokio::runtime::Runtime, kind: Kind) {
    let mut group = c.benchmark_group(format!("{}/deliver_signal", kind.name()));
    group.bench_function(BenchmarkId::from_parameter("1"), |bench| {
        bench.iter_custom(|iters| {
            let prepare = async |b: &Backend, n: u64| {
                if n == 0 {
                    b.seed_waitpoint_hmac_secret("k1", &"5eed".repeat(16)).await.expect("seed hmac");
                }
                suspended(b, n).await
            };
            per_execution(rt, kind, iters, prepare, async |b, _, args| {
                b.deliver_signal(args).await.expect("deliver");
            })
        })
    });
    group.finish();
}

/// `{b}/append_frame/1`: one 64-byte durable frame to a held attempt's stream.
fn append_frame(c: &mut Criterion, rt: &tokio::runtime::Runtime, kind: Kind) {
    let (b, claimed, fence) = held_lease(rt, kind);
    let args = AppendFrameArgs {
        execution_id: id(0),
        attempt_index: claimed.attempt_index,
        lease_id: fence.lease_id,
        lease_epoch: fence.lease_epoch,
        attempt_id: Some(fence.attempt_id),
        frame: Frame::new(vec![b'x'; 64], FrameKind::Event),
        retention_maxlen: DURABLE_RETENTION_SENT,
        max_payload_bytes: FRAME_PAYLOAD_BYTES_DEFAULT,
    };
    let mut group = c.benchmark_group(format!("{}/append_frame", kind.name()));
    group.bench_function(BenchmarkId::from_parameter("1"), |bench| {
        bench.iter(|| rt.block_on(b.append_stream_frame(args.clone())).expect("append"))
    });
    group.finish();
}

fn main() {
    let mut c = Criterion::default()
        .measurement_time(Duration::from_secs(3))
        .warm_up_time(Duration::from_secs(1))
        .sample_size(20)
        .configure_from_args();
    let rt = runtime();
    let _ = std::fs::remove_dir_all(sqlite_dir());
    for kind in kinds() {
        let families = backend(&rt, kind, Durability::Normal).capabilities();
        type Bench = fn(&mut Criterion, &tokio::runtime::Runtime, Kind);
        let benches: [(&str, Option<ContractFamily>, Bench); 6] = [
            ("eligible_scan|eligible_heads", None, eligible_scan),
            ("grant_claim", None, grant_claim_bench),
            ("claim_complete", None, claim_complete),
            ("renew", None, renew),
            ("deliver_signal", Some(ContractFamily::Suspension), deliver_signal),
            ("append_frame", Some(ContractFamily::Streams), append_frame),
        ];
        for (operation, family, bench) in benches.into_iter().filter(|(o, ..)| wanted(o)) {
            match family {
                Some(f) if !families.has(f) => {
                    eprintln!(
                        "{}: skipped {operation}: the backend does not claim {}",
                        kind.name(),
                        f.as_str()
                    );
                }
                _ => bench(&mut c, &rt, kind),
            }
        }
    }
    if kinds().contains(&Kind::Valkey) {
        let purged = rt.block_on(purge_prefix("127.0.0.1", valkey_port(), &valkey_root()));
        if let Err(e) = purged {
            eprintln!("valkey: could not purge {}*: {e}", valkey_root());
        }
    }
    let _ = std::fs::remove_dir_all(sqlite_dir());
    c.final_summary();
}
