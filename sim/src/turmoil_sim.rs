//! `ff-sim turmoil`: one server host (ff-server's router plus the worker data plane on a memory
//! backend) and N worker hosts speaking HTTP over turmoil's simulated TCP, under a seeded swarm
//! fault plan (crashes and bounces, partitions, holds, link latency, clock jumps and drift, slow
//! workers), then a healed liveness phase. The same seed replays the same trace hash.
//!
//! Time mapping: before every turmoil step the driver advances the backend's [`SimClock`] by the
//! turmoil time that elapsed since the previous step (scaled by the injected drift), and adds any
//! injected forward jump. The server clock therefore moves in whole ticks, never runs behind
//! turmoil time by more than one tick without drift, and never goes backwards.
//!
//! Budgets: three are created with the executions, and a worker running an execution that
//! belongs to one (three in four do) reports usage to it over the REST route one to three
//! times before finishing, each report under a dedup key per (execution, attempt, step) that
//! its re-sends share. A report refused at the hard limit ends the task's work early: the worker
//! sends no further reports and completes it with what it has (the outcome it would have had). The
//! executions do not name their budget in `budget_ids`: the scheduler would then hold every
//! later execution of a spent budget blocked until a reset, and the run would never drain.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use ff_backend_memory::new_sim_backend;
use ff_core::admission::ReportUsageArgs;
use ff_core::contracts::{
    ClaimExecutionArgs, ClaimResumedExecutionArgs, ClaimedExecution, CreateExecutionArgs, ExecutionSnapshot,
    FailOutcome, LeaseRenewal, ReclaimExecutionArgs, ReclaimExecutionOutcome,
};
use ff_core::error::{ContentionKind, StateKind};
use ff_core::handle::HandlePayload;
use ff_core::suspension::{
    BoundWaitpoint, DeliverSignalArgs, DeliverSignalOutcome, ResumeCondition, SignalMatcher, SuspendArgs,
    SuspendOutcome, SuspensionReasonCode, WaitpointBinding,
};
use ff_core::{
    AttemptId, Clock, EngineBackend, EngineError, ExecutionId, LaneId, LeaseEpoch, LeaseId, PartitionConfig,
    PublicState, SignalId, SimClock, SuspensionId, TimestampMs, WaitpointId, WorkerId, WorkerInstanceId,
};
use ff_sdk::FlowFabricAdminClient;
use ff_sdk::wire::{ClaimForWorkerRequest, IssueReclaimGrantRequest};
use ff_server::ServerConfig;
use parking_lot::Mutex;
use serde::Serialize;

use crate::Rng;
use crate::budgets::{self, SimBudget, UsageReply, UsageReport, budget_violations};
use crate::history::{FaultKind, History, LeaseGrant, Release, SignalRecord};
use crate::turmoil_net::{
    PlaneClient, PlaneError, PlaneObserver, SERVER_HOST, SERVER_PORT, TurmoilConnector, data_plane,
    serve_router,
};

/// The waitpoint secret the simulated server boots with (not a real secret).
const SECRET_HEX: &str = "5151515151515151515151515151515151515151515151515151515151515151";
/// The lane every simulated execution runs on.
const LANE: &str = "default";
/// How often the driver draws fault events, in simulated ms.
const FAULT_TICK_MS: u64 = 1_000;
/// How often the driver checks whether every execution is terminal, in simulated ms.
const TERMINAL_CHECK_MS: u64 = 1_000;
/// Grant TTL the workers ask for, in ms.
const GRANT_TTL_MS: u64 = 5_000;
/// Times a worker re-sends a terminal operation whose outcome it could not learn.
const RESEND_MAX: usize = 3;
/// Scanner batch per partition and pass.
const SCAN_BATCH: usize = 64;
/// Accept backlog (and socket buffer) per worker host; turmoil panics when a backlog
/// overflows, and a released hold delivers every SYN it queued at once.
const TCP_BACKLOG_PER_WORKER: usize = 64;
/// Reclaims after which an execution fails terminally.
const RECLAIM_MAX: u32 = 50;
/// Retries after a failure the workload's policy allows.
const RETRIES_MAX: u32 = 2;

/// Parameters of one turmoil run.
#[derive(Debug, Clone)]
pub struct TurmoilConfig {
    /// Seed of every choice (turmoil's own generator included).
    pub seed: u64,
    /// Worker hosts.
    pub workers: usize,
    /// Executions created before the run.
    pub executions: usize,
    /// Lease TTL the workers claim with, in ms.
    pub lease_ttl_ms: u64,
    /// Turmoil tick, in simulated ms.
    pub tick_ms: u64,
    /// Longest task, in simulated ms.
    pub task_ms_max: u64,
    /// Percent of tasks that fail (and are retried per policy).
    pub fail_pct: u8,
    /// Percent of executions that suspend once on a waitpoint (the driver signals it).
    pub suspend_pct: u8,
    /// Flow partitions of the backend.
    pub partitions: u16,
    /// Length of the safety phase (faults on), in simulated ms.
    pub safety_ms: u64,
    /// Bound on the liveness phase: every execution must be terminal within it, in simulated ms.
    pub liveness_ms_max: u64,
    /// The fault plan's rates; `None` runs without faults.
    pub faults: Option<NetFaultRates>,
    /// Deliberately broken server: completes skip the lease fence (the checker must object).
    pub unfenced: bool,
}

impl Default for TurmoilConfig {
    fn default() -> Self {
        Self {
            seed: 1,
            workers: 4,
            executions: 40,
            lease_ttl_ms: 3_000,
            tick_ms: 20,
            task_ms_max: 2_000,
            fail_pct: 10,
            suspend_pct: 15,
            partitions: 4,
            safety_ms: 30_000,
            liveness_ms_max: 120_000,
            faults: None,
            unfenced: false,
        }
    }
}

/// Fault rates of a plan: per-worker (or global) chances per [`FAULT_TICK_MS`], in percent.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct NetFaultRates {
    /// A worker host crashes, then bounces after an outage.
    pub crash_pct: u8,
    /// A worker↔server link is partitioned (messages dropped), then repaired.
    pub partition_pct: u8,
    /// A worker↔server link is held (messages queued), then released.
    pub hold_pct: u8,
    /// The server clock jumps forward (global).
    pub clock_jump_pct: u8,
    /// A task stalls past its lease without renewing (drawn by the worker per task).
    pub slow_pct: u8,
    /// Longest outage (crash, partition, hold), in simulated ms.
    pub outage_ms_max: u64,
    /// Longest one-way message latency on a worker↔server link, in simulated ms.
    pub latency_ms_max: u64,
    /// Longest forward clock jump, in ms.
    pub clock_jump_ms_max: u64,
    /// Server clock drift during the safety phase, in parts per million (may be negative).
    pub drift_ppm: i64,
    /// A signal is delivered a second time with the same idempotency key (the duplicate must be
    /// deduplicated or harmless).
    pub dup_signal_pct: u8,
}

impl NetFaultRates {
    /// Swarm testing: the seed draws the rates, so seeds explore quiet, noisy and hostile runs.
    pub fn swarm(seed: u64, lease_ttl_ms: u64) -> Self {
        let mut rng = Rng::new(seed ^ 0x7e57_5a1d_0000_0009);
        let pick = |rng: &mut Rng, max: u64| u8::try_from(rng.below(max + 1)).unwrap_or(0);
        Self {
            crash_pct: pick(&mut rng, 6),
            partition_pct: pick(&mut rng, 8),
            hold_pct: pick(&mut rng, 6),
            clock_jump_pct: pick(&mut rng, 4),
            slow_pct: pick(&mut rng, 10),
            outage_ms_max: lease_ttl_ms + rng.below(3 * lease_ttl_ms),
            latency_ms_max: 1 + rng.below(200),
            clock_jump_ms_max: 1 + rng.below(2 * lease_ttl_ms),
            drift_ppm: i64::try_from(rng.below(100_001)).unwrap_or(0) - 50_000,
            dup_signal_pct: pick(&mut rng, 60),
        }
    }

    /// A plan that partitions and holds links often (and nothing else), so leases are lost and
    /// late completes must be fenced.
    pub fn partitions(lease_ttl_ms: u64) -> Self {
        Self {
            partition_pct: 10,
            hold_pct: 6,
            outage_ms_max: 3 * lease_ttl_ms,
            latency_ms_max: 20,
            dup_signal_pct: 30,
            ..Self::default()
        }
    }
}

/// What a turmoil run did and whether its invariants held.
#[derive(Debug, Clone, Default, Serialize)]
pub struct TurmoilSummary {
    /// Seed.
    pub seed: u64,
    /// Executions created.
    pub executions: usize,
    /// Completed at the end.
    pub completed: usize,
    /// Failed terminally at the end.
    pub failed: usize,
    /// Not terminal at the end.
    pub unfinished: usize,
    /// Claims committed (server side).
    pub claims: u64,
    /// Reclaims committed (server side).
    pub reclaims: u64,
    /// Completions acknowledged to a worker.
    pub acked_completions: u64,
    /// Completes or fails refused because the worker's lease was gone (late operations fenced).
    pub fenced_late_ops: u64,
    /// Of the fenced late ops, those whose execution had been reclaimed under a newer lease.
    pub fenced_after_reclaim: u64,
    /// Completes or fails the server refused for a lost lease, whether or not the worker heard.
    pub server_fenced: u64,
    /// Renewals refused: the worker learned it lost its lease.
    pub lost_leases: u64,
    /// Operations whose outcome a worker could not learn.
    pub unknown_outcomes: u64,
    /// Worker crashes injected.
    pub crashes: u64,
    /// Link partitions injected.
    pub partitions: u64,
    /// Link holds injected.
    pub holds: u64,
    /// Clock jumps injected.
    pub clock_jumps: u64,
    /// Tasks that stalled past their lease.
    pub slow_tasks: u64,
    /// Suspensions committed.
    pub suspensions: u64,
    /// Claims of resumed executions committed (counted apart from `claims`).
    pub resumed_claims: u64,
    /// Signals delivered, duplicates included.
    pub signals: u64,
    /// Duplicate deliveries (same idempotency key) injected.
    pub duplicate_signals: u64,
    /// Duplicates the server answered `Duplicate` (deduplicated by the idempotency key).
    pub duplicates_deduplicated: u64,
    /// Usage reports sent (re-sends of one report count once).
    pub usage_reports: u64,
    /// Usage reports refused at a hard limit (each failed its task).
    pub hard_breaches: u64,
    /// Usage reports answered `AlreadyApplied` (a re-send after a lost reply, or a resumed repeat).
    pub usage_deduplicated: u64,
    /// Simulated length of the safety phase, in ms.
    pub safety_ms: u64,
    /// Simulated length of the liveness phase, in ms.
    pub liveness_ms: u64,
    /// FNV-1a hash of the event trace (hex in JSON, as printed).
    #[serde(serialize_with = "hex_u64")]
    pub trace_hash: u64,
    /// Jepsen-style queue anomalies (all must be zero).
    pub anomalies: QueueAnomalies,
    /// Invariant violations found.
    pub violations: Vec<String>,
    /// Leases, faults and refused stale operations, in server-clock ms (not in the JSON summary).
    #[serde(skip)]
    pub history: History,
}

/// Queue anomalies in Jepsen's vocabulary, with creation as the enqueue and a committed terminal
/// outcome as the dequeue.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct QueueAnomalies {
    /// Created, but neither completed nor failed at the end.
    pub lost: usize,
    /// Completed more than once (two committed completes, or acknowledged under two leases).
    pub duplicated: usize,
    /// A completion committed or acknowledged for an execution never created.
    pub unexpected: usize,
    /// A complete the worker was definitely refused (no indeterminate try) that took effect anyway.
    pub recovered: usize,
}

impl QueueAnomalies {
    /// Whether every count is zero.
    pub fn none(&self) -> bool {
        *self == Self::default()
    }
}

impl TurmoilSummary {
    /// Whether every invariant held and every execution ended terminal.
    pub fn passed(&self) -> bool {
        self.violations.is_empty() && self.unfinished == 0
    }
}

impl fmt::Display for TurmoilSummary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "seed            {}", self.seed)?;
        writeln!(f, "executions      {}", self.executions)?;
        writeln!(f, "completed       {}", self.completed)?;
        writeln!(f, "failed          {}", self.failed)?;
        writeln!(f, "unfinished      {}", self.unfinished)?;
        writeln!(f, "claims          {} (+{} reclaims)", self.claims, self.reclaims)?;
        writeln!(f, "acked complete  {}", self.acked_completions)?;
        writeln!(
            f,
            "fenced late ops {} ({} after a reclaim; {} refused at the server)",
            self.fenced_late_ops, self.fenced_after_reclaim, self.server_fenced
        )?;
        writeln!(f, "lost leases     {}", self.lost_leases)?;
        writeln!(
            f,
            "suspensions     {} ({} resumed claims; {} signals, {} duplicates, {} deduplicated)",
            self.suspensions,
            self.resumed_claims,
            self.signals,
            self.duplicate_signals,
            self.duplicates_deduplicated
        )?;
        writeln!(f, "unknown outcome {}", self.unknown_outcomes)?;
        writeln!(
            f,
            "budgets         {} usage reports, {} refused at the hard limit, {} deduplicated",
            self.usage_reports, self.hard_breaches, self.usage_deduplicated
        )?;
        writeln!(
            f,
            "faults          {} crashes, {} partitions, {} holds, {} clock jumps, {} slow tasks",
            self.crashes, self.partitions, self.holds, self.clock_jumps, self.slow_tasks
        )?;
        writeln!(
            f,
            "simulated time  {:.1} s safety + {:.1} s liveness",
            ms_s(self.safety_ms),
            ms_s(self.liveness_ms)
        )?;
        writeln!(
            f,
            "history         {} leases, {} faults, {} stale ops refused",
            self.history.leases.len(),
            self.history.faults.len(),
            self.history.stale_ops.len()
        )?;
        let a = &self.anomalies;
        writeln!(
            f,
            "anomalies       lost {} duplicated {} unexpected {} recovered {}",
            a.lost, a.duplicated, a.unexpected, a.recovered
        )?;
        writeln!(f, "trace hash      {:016x}", self.trace_hash)?;
        if self.violations.is_empty() {
            write!(f, "invariants      held")
        } else {
            write!(f, "invariants      VIOLATED: {}", self.violations.join("; "))
        }
    }
}

fn hex_u64<S: serde::Serializer>(value: &u64, serializer: S) -> Result<S::Ok, S::Error> {
    serializer.serialize_str(&format!("{value:016x}"))
}

fn ms_s(ms: u64) -> f64 {
    ms as f64 / 1000.0
}

/// What every host and the driver record into; one lock, touched in simulation order.
#[derive(Default)]
struct Ledger {
    trace: u64,
    last_epoch: BTreeMap<ExecutionId, LeaseEpoch>,
    /// Lease epochs under which a worker was told its completion committed.
    acked: BTreeMap<ExecutionId, BTreeSet<LeaseEpoch>>,
    /// Each worker's in-flight claim, kept across a crash as a worker journal would keep it.
    journal: Vec<Option<ClaimedExecution>>,
    incarnations: Vec<u64>,
    faults_on: bool,
    /// Turmoil time at the last step, in ms: the timestamp of events the driver records.
    driver_ms: u64,
    /// Leases whose complete a worker was definitely refused (no try of it went unanswered).
    refused_completes: BTreeSet<(ExecutionId, LeaseEpoch)>,
    /// Executions that suspended (each suspends at most once).
    suspended: BTreeSet<ExecutionId>,
    /// Waitpoints the driver has yet to signal, in suspension order.
    to_signal: Vec<(ExecutionId, BoundWaitpoint)>,
    history: History,
    summary: TurmoilSummary,
}

/// The shared record of a run.
struct Shared {
    cfg: TurmoilConfig,
    /// The run's budgets.
    budgets: Vec<SimBudget>,
    /// The budget each budgeted execution reports to (index into `budgets`).
    budget_of: BTreeMap<ExecutionId, usize>,
    /// The server's clock: history timestamps are in its ms, the ones the lease fence uses.
    clock: SimClock,
    ledger: Mutex<Ledger>,
}

impl Shared {
    fn server_ms(&self) -> TimestampMs {
        self.clock.now_ms()
    }

    fn record(&self, event: &str) {
        let mut l = self.ledger.lock();
        let now = turmoil::sim_elapsed().map_or(u128::from(l.driver_ms), |d| d.as_millis());
        for b in format!("{now} {event}\n").bytes() {
            l.trace ^= u64::from(b);
            l.trace = l.trace.wrapping_mul(0x0100_0000_01b3);
        }
    }

    fn count(&self, f: impl FnOnce(&mut TurmoilSummary)) {
        f(&mut self.ledger.lock().summary);
    }

    fn violation(&self, what: String) {
        self.record(&format!("VIOLATION {what}"));
        self.ledger.lock().summary.violations.push(what);
    }

    fn faults_on(&self) -> bool {
        self.ledger.lock().faults_on
    }
}

impl PlaneObserver for Shared {
    fn leased(&self, claim: &ClaimedExecution, worker: &WorkerId, grant: LeaseGrant) {
        let (execution_id, epoch) = (&claim.execution_id, claim.lease_epoch);
        let now = self.server_ms();
        let stale = {
            let mut l = self.ledger.lock();
            l.history.granted(execution_id, worker.as_str(), epoch, grant, now, claim.lease_expires_at);
            match grant {
                LeaseGrant::Claim => l.summary.claims += 1,
                LeaseGrant::Reclaim => l.summary.reclaims += 1,
                LeaseGrant::Resume => l.summary.resumed_claims += 1,
            }
            let last = l.last_epoch.insert(execution_id.clone(), epoch);
            last.is_some_and(|last| epoch <= last)
        };
        let verb = match grant {
            LeaseGrant::Claim => "claimed",
            LeaseGrant::Reclaim => "reclaimed",
            LeaseGrant::Resume => "resumed",
        };
        self.record(&format!("{verb} {execution_id} e{epoch}"));
        if stale {
            self.violation(format!("lease epoch of {execution_id} not monotonic at e{epoch}"));
        }
    }

    fn suspended(&self, lease: &HandlePayload, waitpoint: &BoundWaitpoint) {
        let now = self.server_ms();
        {
            let mut l = self.ledger.lock();
            l.history.released(&lease.execution_id, lease.lease_epoch, now, Release::Suspend);
            l.suspended.insert(lease.execution_id.clone());
            l.to_signal.push((lease.execution_id.clone(), waitpoint.clone()));
            l.summary.suspensions += 1;
        }
        self.record(&format!("suspended {} e{}", lease.execution_id, lease.lease_epoch));
    }

    fn renewed(&self, lease: &HandlePayload, renewal: &LeaseRenewal) {
        let now = self.server_ms();
        self.ledger.lock().history.renewed(
            &lease.execution_id,
            lease.lease_epoch,
            now,
            renewal.expires_at_ms,
        );
    }

    fn released(&self, lease: &HandlePayload, how: Release) {
        let now = self.server_ms();
        self.ledger.lock().history.released(&lease.execution_id, lease.lease_epoch, now, how);
    }

    fn refused(&self, op: &'static str, lease: Option<&HandlePayload>, error: &EngineError) {
        let fenced = is_fenced(error);
        if let (true, Some(lease)) = (fenced, lease) {
            let now = self.server_ms();
            self.ledger.lock().history.refused(&lease.execution_id, lease.lease_epoch, op, now);
        }
        if op == "renew" {
            return;
        }
        if fenced {
            self.count(|s| s.server_fenced += 1);
        }
        self.record(&format!("server refused {op} {:?}", error.code()));
    }
}

fn worker_name(w: usize) -> String {
    format!("worker{w}")
}

/// Runs one turmoil simulation; call it outside any tokio runtime (turmoil runs its own).
///
/// Errors: setup failures and turmoil errors (a host that returned an error), as text.
pub fn run_turmoil(cfg: TurmoilConfig) -> Result<TurmoilSummary, String> {
    let partitions =
        PartitionConfig { num_flow_partitions: cfg.partitions.max(1), ..PartitionConfig::default() };
    let clock = SimClock::default();
    let memory = Arc::new(new_sim_backend(clock.clone(), partitions));
    let backend: Arc<dyn EngineBackend> = memory.clone();
    let rt = tokio::runtime::Builder::new_current_thread().build().map_err(|e| e.to_string())?;
    let mut seed_rng = Rng::new(cfg.seed);
    let ids =
        rt.block_on(create_all(&backend, &cfg, &partitions, &mut seed_rng)).map_err(|e| e.to_string())?;
    let (budgets, budget_of) =
        rt.block_on(create_budgets(&backend, &ids, cfg.seed)).map_err(|e| e.to_string())?;
    let server_config = ServerConfig { scanners: None, partitions, ..ServerConfig::new(SECRET_HEX) };
    let api = rt
        .block_on(ff_server::router_with_backend(&server_config, backend.clone()))
        .map_err(|e| e.to_string())?;
    let ledger = Ledger {
        trace: 0xcbf2_9ce4_8422_2325,
        journal: vec![None; cfg.workers.max(1)],
        incarnations: vec![0; cfg.workers.max(1)],
        history: History::starting_at(clock.now_ms()),
        faults_on: cfg.faults.is_some(),
        summary: TurmoilSummary { seed: cfg.seed, executions: cfg.executions, ..TurmoilSummary::default() },
        ..Ledger::default()
    };
    let shared = Arc::new(Shared {
        cfg: cfg.clone(),
        budgets,
        budget_of,
        clock: clock.clone(),
        ledger: Mutex::new(ledger),
    });
    let router =
        api.merge(data_plane(backend.clone(), shared.clone(), partitions.num_flow_partitions, cfg.unfenced));
    let total_ms = cfg.safety_ms + cfg.liveness_ms_max + 10 * FAULT_TICK_MS;
    let mut sim = turmoil::Builder::new()
        .simulation_duration(Duration::from_millis(total_ms))
        .tick_duration(Duration::from_millis(cfg.tick_ms.max(1)))
        .min_message_latency(Duration::from_millis(1))
        .max_message_latency(Duration::from_millis(5))
        .tcp_capacity(TCP_BACKLOG_PER_WORKER * cfg.workers.max(1))
        .rng_seed(cfg.seed)
        .build();
    let tick = Duration::from_millis(cfg.tick_ms.max(1));
    let scanned = backend.clone();
    sim.host(SERVER_HOST, move || server_host(router.clone(), scanned.clone(), tick));
    for w in 0..cfg.workers.max(1) {
        let shared = shared.clone();
        sim.host(worker_name(w), move || worker_host(shared.clone(), w));
    }
    let mut driver = Driver::new(&cfg, clock, shared.clone());
    driver.drive(&mut sim, &rt, &backend, &ids)?;
    let deep = memory.runner().invariant_violations();
    rt.block_on(finish(&shared, &backend, &ids, deep)).map_err(|e| e.to_string())?;
    let mut l = shared.ledger.lock();
    let mut summary = l.summary.clone();
    summary.trace_hash = l.trace;
    summary.history = std::mem::take(&mut l.history);
    Ok(summary)
}

async fn create_all(
    backend: &Arc<dyn EngineBackend>,
    cfg: &TurmoilConfig,
    partitions: &PartitionConfig,
    rng: &mut Rng,
) -> Result<Vec<ExecutionId>, EngineError> {
    let lane = LaneId::new(LANE);
    let policy = format!(
        r#"{{"retry_policy":{{"max_retries":{RETRIES_MAX},"backoff":{{"type":"fixed","delay_ms":500}}}}}}"#
    );
    let mut ids = Vec::with_capacity(cfg.executions);
    for i in 0..cfg.executions {
        let p = u16::try_from(i).unwrap_or(0) % partitions.num_flow_partitions;
        let id = ExecutionId::from_parts(p, rng.uuid());
        let mut args = CreateExecutionArgs::new(id.clone(), "sim", lane.clone(), "task");
        args.policy_json = policy.clone();
        args.priority = i32::try_from(rng.below(3)).unwrap_or(0);
        backend.create_execution(args).await?;
        ids.push(id);
    }
    Ok(ids)
}

/// Creates the run's budgets (from a generator of their own, so the executions' draws stay put);
/// execution `i` reports to budget `i % 4` when there is one.
async fn create_budgets(
    backend: &Arc<dyn EngineBackend>,
    ids: &[ExecutionId],
    seed: u64,
) -> Result<(Vec<SimBudget>, BTreeMap<ExecutionId, usize>), EngineError> {
    let mut attached = [0u64; 3];
    let mut budget_of = BTreeMap::new();
    for (i, id) in ids.iter().enumerate() {
        if let Some(n) = attached.get_mut(i % 4) {
            *n += 1;
            budget_of.insert(id.clone(), i % 4);
        }
    }
    let budgets = budgets::plan_budgets(&mut Rng::new(seed ^ 0xb0d9_e75e), attached);
    for budget in &budgets {
        backend.create_budget(budget.create_args()).await?;
    }
    Ok((budgets, budget_of))
}

/// The server host: scanners once per tick on the simulated clock, and the router per stream.
async fn server_host(
    router: axum::Router,
    backend: Arc<dyn EngineBackend>,
    tick: Duration,
) -> turmoil::Result {
    tokio::spawn(async move {
        loop {
            // A scanner error on the memory backend is a bug the final checks will surface.
            let _ = ff_scheduler::run_all_once(backend.as_ref(), SCAN_BATCH).await;
            tokio::time::sleep(tick).await;
        }
    });
    serve_router(router).await?;
    Ok(())
}

/// One incarnation of a worker host: finish a journaled claim, then claim and work forever.
async fn worker_host(shared: Arc<Shared>, w: usize) -> turmoil::Result {
    let incarnation = {
        let mut l = shared.ledger.lock();
        l.incarnations[w] += 1;
        l.incarnations[w]
    };
    shared.record(&format!("start w{w} i{incarnation}"));
    let base = format!("http://{SERVER_HOST}:{SERVER_PORT}");
    let admin = FlowFabricAdminClient::new(&base)?
        .with_connector(Arc::new(TurmoilConnector))
        .with_timeout(Duration::from_millis(shared.cfg.lease_ttl_ms));
    let mut worker = Worker {
        rng: Rng::new(shared.cfg.seed ^ ((w as u64) << 40) ^ incarnation.wrapping_mul(0x9e37_79b9)),
        plane: PlaneClient { admin },
        worker_id: WorkerId::new(worker_name(w)),
        instance: WorkerInstanceId::new(format!("{}-i{incarnation}", worker_name(w))),
        shared,
        w,
    };
    let journaled = worker.shared.ledger.lock().journal[w].clone();
    if let Some(claim) = journaled {
        // Recovered from the journal: finish the task late; fencing decides whether it counts.
        worker.shared.record(&format!("w{w} resumes {} e{}", claim.execution_id, claim.lease_epoch));
        // The crashed incarnation may have sent a complete already: the outcome is indeterminate.
        worker.finish(&claim, false, true).await;
    }
    loop {
        match worker.acquire().await {
            Some(claim) => worker.run_task(claim).await,
            None => tokio::time::sleep(Duration::from_millis(100 + worker.rng.below(200))).await,
        }
    }
}

struct Worker {
    rng: Rng,
    plane: PlaneClient,
    worker_id: WorkerId,
    instance: WorkerInstanceId,
    shared: Arc<Shared>,
    w: usize,
}

impl Worker {
    /// A fresh claim through the server's scheduler, else a reclaim of an expired lease.
    async fn acquire(&mut self) -> Option<ClaimedExecution> {
        let request = ClaimForWorkerRequest {
            worker_id: self.worker_id.as_str().to_owned(),
            lane_id: LANE.to_owned(),
            worker_instance_id: self.instance.as_str().to_owned(),
            capabilities: Vec::new(),
            grant_ttl_ms: GRANT_TTL_MS,
        };
        let grant = match self.plane.admin.claim_for_worker(request).await {
            Ok(Some(response)) => response.into_grant().ok()?,
            Ok(None) => return self.reclaim().await,
            Err(_) => return None,
        };
        let args = ClaimExecutionArgs {
            execution_id: grant.execution_id,
            worker_id: self.worker_id.clone(),
            worker_instance_id: self.instance.clone(),
            lane_id: LaneId::new(LANE),
            lease_id: LeaseId::from_uuid(self.rng.uuid()),
            lease_ttl_ms: self.shared.cfg.lease_ttl_ms,
            attempt_id: AttemptId::from_uuid(self.rng.uuid()),
            attempt_policy_json: String::new(),
            attempt_timeout_ms: None,
            execution_deadline_at: None,
        };
        match self.plane.claim(&args).await {
            Ok(claim) => Some(claim),
            Err(PlaneError::Transport) => {
                // Committed or not, an unknown claim is recovered by lease expiry and reclaim.
                self.unknown(&args.execution_id, "claim");
                None
            }
            Err(PlaneError::Rejected(e))
                if matches!(e.root(), EngineError::Contention(ContentionKind::UseClaimResumedExecution)) =>
            {
                self.claim_resumed(args).await
            }
            Err(PlaneError::Rejected(_)) => None,
        }
    }

    /// The grant was for a resumed execution: the suspended attempt continues under a new lease.
    async fn claim_resumed(&mut self, args: ClaimExecutionArgs) -> Option<ClaimedExecution> {
        let resumed = ClaimResumedExecutionArgs {
            execution_id: args.execution_id,
            worker_id: args.worker_id,
            worker_instance_id: args.worker_instance_id,
            lane_id: args.lane_id,
            lease_id: args.lease_id,
            lease_ttl_ms: args.lease_ttl_ms,
            remaining_attempt_timeout_ms: None,
        };
        match self.plane.claim_resumed(&resumed).await {
            Ok(claim) => Some(claim),
            Err(PlaneError::Transport) => {
                self.unknown(&resumed.execution_id, "claim-resumed");
                None
            }
            Err(PlaneError::Rejected(_)) => None,
        }
    }

    async fn reclaim(&mut self) -> Option<ClaimedExecution> {
        let expired = self.plane.expired().await.ok()?;
        if expired.is_empty() {
            return None;
        }
        let id = expired.get(self.rng.below(expired.len() as u64) as usize)?.clone();
        let request = IssueReclaimGrantRequest {
            worker_id: self.worker_id.as_str().to_owned(),
            worker_instance_id: self.instance.as_str().to_owned(),
            lane_id: LANE.to_owned(),
            capability_hash: None,
            grant_ttl_ms: GRANT_TTL_MS,
            route_snapshot_json: None,
            admission_summary: None,
            worker_capabilities: Vec::new(),
        };
        self.plane.admin.issue_reclaim_grant(&id, request).await.ok()?.into_grant().ok()?;
        let args = ReclaimExecutionArgs {
            execution_id: id.clone(),
            worker_id: self.worker_id.clone(),
            worker_instance_id: self.instance.clone(),
            lane_id: LaneId::new(LANE),
            lease_id: LeaseId::from_uuid(self.rng.uuid()),
            lease_ttl_ms: self.shared.cfg.lease_ttl_ms,
            attempt_id: AttemptId::from_uuid(self.rng.uuid()),
            attempt_policy_json: String::new(),
            max_reclaim_count: Some(RECLAIM_MAX),
        };
        match self.plane.reclaim(&args).await {
            Ok(ReclaimExecutionOutcome::Claimed(claim)) => Some(claim),
            Ok(ReclaimExecutionOutcome::ReclaimCapExceeded { .. }) => {
                self.shared.record(&format!("reclaim-cap {id}"));
                None
            }
            Ok(_) | Err(PlaneError::Rejected(_)) => None,
            Err(PlaneError::Transport) => {
                self.unknown(&id, "reclaim");
                None
            }
        }
    }

    /// Works on a claim: renews on a third of the TTL (unless the task stalls), then finishes.
    async fn run_task(&mut self, claim: ClaimedExecution) {
        let shared = self.shared.clone();
        let cfg = &shared.cfg;
        let ttl = cfg.lease_ttl_ms;
        self.shared.ledger.lock().journal[self.w] = Some(claim.clone());
        let slow_pct = if self.shared.faults_on() { cfg.faults.map_or(0, |f| f.slow_pct) } else { 0 };
        let fail = self.rng.chance(cfg.fail_pct);
        // Drawn every time so the generator's sequence does not depend on the ledger.
        let suspend = self.rng.chance(cfg.suspend_pct);
        // Read apart from the `if`: the ledger lock must not be held across the suspend's await.
        let suspended_before = self.shared.ledger.lock().suspended.contains(&claim.execution_id);
        if suspend && !suspended_before && self.suspend(&claim).await {
            self.shared.ledger.lock().journal[self.w] = None;
            return;
        }
        if self.rng.chance(slow_pct) {
            // A stall (GC pause, swapped-out process) that outlives the lease without renewing.
            self.shared.count(|s| s.slow_tasks += 1);
            self.shared.record(&format!("w{} stalls on {}", self.w, claim.execution_id));
            let stall_ms = ttl + 1 + self.rng.below(ttl);
            let start = self.shared.server_ms();
            let end = start.saturating_add(i64::try_from(stall_ms).unwrap_or(i64::MAX));
            self.shared.ledger.lock().history.fault_started(
                FaultKind::Stall,
                vec![worker_name(self.w)],
                start,
                Some(end),
            );
            tokio::time::sleep(Duration::from_millis(stall_ms)).await;
        } else {
            let mut left = 1 + self.rng.below(cfg.task_ms_max);
            while left > 0 {
                let nap = left.min(ttl / 3).max(1);
                tokio::time::sleep(Duration::from_millis(nap)).await;
                left -= nap;
                if left > 0 && !self.renew(&claim).await {
                    self.shared.ledger.lock().journal[self.w] = None;
                    return;
                }
            }
        }
        self.report_usage_steps(&claim).await;
        self.finish(&claim, fail, false).await;
    }

    /// Sends a budgeted task's usage reports, stopping at the first one refused at the hard limit.
    async fn report_usage_steps(&mut self, claim: &ClaimedExecution) {
        let Some(budget) = self.shared.budget_of.get(&claim.execution_id).copied() else {
            return;
        };
        let steps = 1 + self.rng.below(budgets::REPORTS_PER_ATTEMPT_MAX) as u32;
        for step in 0..steps {
            if self.report_usage(claim, budget, step).await {
                self.shared.record(&format!("w{} budget-stop {}", self.w, claim.execution_id));
                return;
            }
        }
    }

    /// Sends one usage report, re-sending under the same dedup key while the reply is lost; the
    /// history holds it as `Unknown` from before the first send. True on a hard breach.
    async fn report_usage(&mut self, claim: &ClaimedExecution, budget: usize, step: u32) -> bool {
        let Some(b) = self.shared.budgets.get(budget) else {
            return false;
        };
        let (id, attempt) = (&claim.execution_id, claim.attempt_index);
        let dedup_key = UsageReport::dedup_key(id, attempt, step);
        let deltas = budgets::report_deltas(b, &dedup_key);
        let args = ReportUsageArgs {
            budget_id: b.budget_id,
            dimensions: deltas.clone(),
            dedup_key: Some(dedup_key),
        };
        let report = UsageReport {
            budget,
            execution_id: id.clone(),
            attempt,
            step,
            deltas,
            sends: 0,
            reply: UsageReply::Unknown,
            at_ms: self.shared.server_ms(),
        };
        let index = self.shared.ledger.lock().history.usage_sent(report);
        let mut reply = UsageReply::Unknown;
        for send in 1..=(RESEND_MAX as u32 + 1) {
            reply = match self.plane.report_usage(&args).await {
                Ok(result) => UsageReply::of(&result),
                Err(PlaneError::Transport) => UsageReply::Unknown,
                Err(PlaneError::Rejected(e)) => {
                    self.shared.violation(format!("usage report of {id} refused: {e}"));
                    UsageReply::Unknown
                }
            };
            let now = self.shared.server_ms();
            self.shared.ledger.lock().history.usage_answered(index, send, reply.clone(), now);
            if reply != UsageReply::Unknown {
                break;
            }
            tokio::time::sleep(Duration::from_millis(200 + self.rng.below(300))).await;
        }
        if reply == UsageReply::Unknown {
            self.unknown(id, "usage");
        }
        self.shared.record(&format!("w{} usage {id} a{attempt} s{step} {}", self.w, reply.tag()));
        matches!(reply, UsageReply::HardBreach { .. })
    }

    /// Suspends on a fresh waitpoint the driver will signal; true when the task is over (parked, or
    /// the lease is lost), false to carry on (the outcome is unknown, or already satisfied).
    async fn suspend(&mut self, claim: &ClaimedExecution) -> bool {
        let waitpoint_key = format!("wpk:{}", claim.execution_id);
        let binding = WaitpointBinding::Fresh {
            waitpoint_id: WaitpointId::from_uuid(self.rng.uuid()),
            waitpoint_key: waitpoint_key.clone(),
        };
        let condition = ResumeCondition::Single { waitpoint_key, matcher: SignalMatcher::Wildcard };
        let suspension_id = SuspensionId::from_uuid(self.rng.uuid());
        let args =
            SuspendArgs::new(suspension_id, binding, condition, SuspensionReasonCode::WaitingForSignal);
        match self.plane.suspend(&claim.handle, args).await {
            Ok(SuspendOutcome::Suspended { .. }) => {
                self.shared.record(&format!("w{} parked {}", self.w, claim.execution_id));
                true
            }
            Ok(_) => false,
            Err(PlaneError::Transport) => {
                self.unknown(&claim.execution_id, "suspend");
                false
            }
            Err(PlaneError::Rejected(e)) => {
                self.shared.record(&format!(
                    "w{} suspend refused {} {:?}",
                    self.w,
                    claim.execution_id,
                    e.code()
                ));
                true
            }
        }
    }

    /// Renews; false when the lease is known lost (the task is abandoned).
    async fn renew(&mut self, claim: &ClaimedExecution) -> bool {
        match self.plane.renew(&claim.handle).await {
            Ok(_) | Err(PlaneError::Transport) => true,
            Err(PlaneError::Rejected(e)) => {
                self.shared.count(|s| s.lost_leases += 1);
                self.shared.record(&format!("w{} lost {} {:?}", self.w, claim.execution_id, e.code()));
                false
            }
        }
    }

    /// Completes or fails, re-sending while the outcome is unknown, and records what it learned;
    /// `resumed` says an earlier incarnation may already have sent it.
    async fn finish(&mut self, claim: &ClaimedExecution, fail: bool, resumed: bool) {
        let id = &claim.execution_id;
        let mut answer = Err(PlaneError::Transport);
        let mut indeterminate = resumed;
        for _ in 0..=RESEND_MAX {
            answer = if fail {
                self.plane.fail(&claim.handle).await.map(Some)
            } else {
                self.plane.complete(&claim.handle).await.map(|()| None)
            };
            if !matches!(answer, Err(PlaneError::Transport)) {
                break;
            }
            indeterminate = true;
            tokio::time::sleep(Duration::from_millis(200 + self.rng.below(300))).await;
        }
        {
            let mut l = self.shared.ledger.lock();
            l.journal[self.w] = None;
            if !fail && !indeterminate && matches!(answer, Err(PlaneError::Rejected(_))) {
                l.refused_completes.insert((id.clone(), claim.lease_epoch));
            }
        }
        match answer {
            Ok(None) => self.acked_complete(id, claim.lease_epoch),
            Ok(Some(FailOutcome::TerminalFailed)) => self.shared.record(&format!("failed {id}")),
            Ok(Some(_)) => self.shared.record(&format!("retry {id}")),
            Err(PlaneError::Transport) => self.unknown(id, if fail { "fail" } else { "complete" }),
            Err(PlaneError::Rejected(e)) => self.rejected(id, claim.lease_epoch, &e),
        }
    }

    /// Records an acknowledged completion. A committed completion makes the execution terminal,
    /// so no later lease can exist: the acking epoch must be the last one the server granted.
    fn acked_complete(&self, id: &ExecutionId, epoch: LeaseEpoch) {
        let (twice, current) = {
            let mut l = self.shared.ledger.lock();
            l.summary.acked_completions += 1;
            let current = l.last_epoch.get(id).copied();
            let epochs = l.acked.entry(id.clone()).or_default();
            epochs.insert(epoch);
            (epochs.len() > 1, current)
        };
        self.shared.record(&format!("w{} completed {id} e{epoch}", self.w));
        if twice {
            self.shared.violation(format!("{id} completed twice (under two leases)"));
        }
        if current != Some(epoch) {
            self.shared
                .violation(format!("stale completion of {id} accepted: e{epoch}, lease is {current:?}"));
        }
    }

    fn rejected(&self, id: &ExecutionId, epoch: LeaseEpoch, e: &EngineError) {
        self.shared.record(&format!("w{} refused {id} e{epoch} {:?}", self.w, e.code()));
        if !is_fenced(e) {
            self.shared.violation(format!("unexpected rejection of {id} e{epoch}: {e}"));
            return;
        }
        let mut l = self.shared.ledger.lock();
        l.summary.fenced_late_ops += 1;
        if l.last_epoch.get(id).is_some_and(|&last| last > epoch) {
            l.summary.fenced_after_reclaim += 1;
        }
    }

    fn unknown(&self, id: &ExecutionId, op: &str) {
        self.shared.count(|s| s.unknown_outcomes += 1);
        self.shared.record(&format!("w{} {op}-unknown {id}", self.w));
    }
}

/// Whether a refusal is the fence at work: the lease is gone, or someone else finished first.
fn is_fenced(e: &EngineError) -> bool {
    matches!(
        e.root(),
        EngineError::State(
            StateKind::StaleLease | StateKind::LeaseExpired | StateKind::LeaseRevoked | StateKind::Terminal
        ) | EngineError::Contention(_)
    )
}

/// A scheduled end of an injected fault.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Heal {
    Bounce(usize),
    Repair(usize),
    Release(usize),
}

/// The fault plan's state and the phase clock, driven between turmoil steps.
struct Driver {
    rng: Rng,
    rates: Option<NetFaultRates>,
    clock: SimClock,
    shared: Arc<Shared>,
    workers: usize,
    safety_ms: u64,
    liveness_ms_max: u64,
    /// Pending heals by due time (simulated ms); a worker has at most one fault at a time.
    heals: BTreeMap<u64, Vec<(Heal, usize)>>,
    faulted: BTreeSet<usize>,
    /// Duplicate signal deliveries by due time (simulated ms).
    duplicates: BTreeMap<u64, Vec<(ExecutionId, BoundWaitpoint)>>,
    elapsed_ms: u64,
}

impl Driver {
    fn new(cfg: &TurmoilConfig, clock: SimClock, shared: Arc<Shared>) -> Self {
        Self {
            rng: Rng::new(cfg.seed ^ 0xd21e_7e55),
            rates: cfg.faults,
            clock,
            shared,
            workers: cfg.workers.max(1),
            safety_ms: cfg.safety_ms,
            liveness_ms_max: cfg.liveness_ms_max,
            heals: BTreeMap::new(),
            faulted: BTreeSet::new(),
            duplicates: BTreeMap::new(),
            elapsed_ms: 0,
        }
    }

    /// Steps the simulation through the safety phase and then the liveness phase.
    fn drive(
        &mut self,
        sim: &mut turmoil::Sim<'_>,
        rt: &tokio::runtime::Runtime,
        backend: &Arc<dyn EngineBackend>,
        ids: &[ExecutionId],
    ) -> Result<(), String> {
        if let Some(rates) = self.rates {
            self.clock.set_drift_ppm(rates.drift_ppm);
            for w in 0..self.workers {
                let latency = 1 + self.rng.below(rates.latency_ms_max.max(1));
                sim.set_link_max_message_latency(worker_name(w), SERVER_HOST, Duration::from_millis(latency));
            }
        }
        let mut safety_end = None;
        let mut next_fault = FAULT_TICK_MS;
        let mut next_check = TERMINAL_CHECK_MS;
        loop {
            self.sync_clock(sim);
            let now = self.elapsed_ms;
            self.apply_due_heals(sim, now);
            if safety_end.is_none() && self.rates.is_some() && now >= next_fault {
                next_fault += FAULT_TICK_MS;
                self.draw_faults(sim, now);
            }
            if now >= next_check {
                next_check += TERMINAL_CHECK_MS;
                rt.block_on(self.deliver_signals(backend, now, safety_end.is_none()));
                let done = rt.block_on(all_terminal(backend, ids)).map_err(|e| e.to_string())?;
                match safety_end {
                    None if done || now >= self.safety_ms => {
                        self.heal_all(sim);
                        safety_end = Some(now);
                        if done {
                            break;
                        }
                    }
                    Some(_) if done => break,
                    Some(end) if now - end >= self.liveness_ms_max => break,
                    _ => {}
                }
            }
            sim.step().map_err(|e| e.to_string())?;
        }
        let end = safety_end.unwrap_or(self.elapsed_ms);
        self.shared.count(|s| {
            s.safety_ms = end;
            s.liveness_ms = self.elapsed_ms - end;
        });
        Ok(())
    }

    /// Signals every newly suspended execution once and, under the fault plan, schedules a
    /// duplicate delivery (same idempotency key) now or up to a few seconds later; delivers the
    /// duplicates that are due. A duplicate that resumes the execution again is a violation.
    async fn deliver_signals(&mut self, backend: &Arc<dyn EngineBackend>, now: u64, faults_on: bool) {
        let fresh = std::mem::take(&mut self.shared.ledger.lock().to_signal);
        let dup_pct = self.rates.map_or(0, |r| r.dup_signal_pct);
        for (id, waitpoint) in fresh {
            self.deliver(backend, &id, &waitpoint, false).await;
            if faults_on && self.rng.chance(dup_pct) {
                let due = now + self.rng.below(3 * TERMINAL_CHECK_MS);
                self.duplicates.entry(due).or_default().push((id, waitpoint));
            }
        }
        let later = self.duplicates.split_off(&(now + 1));
        let due = std::mem::replace(&mut self.duplicates, later);
        for (id, waitpoint) in due.into_values().flatten() {
            self.deliver(backend, &id, &waitpoint, true).await;
        }
    }

    async fn deliver(
        &mut self,
        backend: &Arc<dyn EngineBackend>,
        id: &ExecutionId,
        waitpoint: &BoundWaitpoint,
        duplicate: bool,
    ) {
        let args = DeliverSignalArgs {
            execution_id: id.clone(),
            waitpoint_id: waitpoint.waitpoint_id,
            signal_id: SignalId::from_uuid(self.rng.uuid()),
            signal_name: "go".to_owned(),
            signal_category: "sim".to_owned(),
            source_type: "sim".to_owned(),
            source_identity: "driver".to_owned(),
            payload: None,
            payload_encoding: None,
            correlation_id: None,
            idempotency_key: Some(format!("go:{}", waitpoint.waitpoint_id)),
            created_at: None,
            dedup_ttl_ms: None,
            resume_delay_ms: None,
            max_signals_per_execution: None,
            signal_maxlen: None,
            waitpoint_token: waitpoint.waitpoint_token.clone(),
        };
        let outcome = match backend.deliver_signal(args).await {
            Ok(DeliverSignalOutcome::Accepted { effect, .. }) => effect,
            Ok(DeliverSignalOutcome::Duplicate { .. }) => "duplicate".to_owned(),
            Ok(other) => format!("{other:?}"),
            Err(e) => e.root().code().unwrap_or("unclassified").to_owned(),
        };
        let at_ms = self.shared.server_ms();
        self.shared.record(&format!("signal {id} duplicate={duplicate} {outcome}"));
        let resumed = outcome == "resume_condition_satisfied";
        {
            let mut l = self.shared.ledger.lock();
            l.summary.signals += 1;
            l.summary.duplicate_signals += u64::from(duplicate);
            l.summary.duplicates_deduplicated += u64::from(duplicate && outcome == "duplicate");
            l.history.signals.push(SignalRecord {
                execution_id: id.clone(),
                duplicate,
                outcome: outcome.clone(),
                at_ms,
            });
        }
        if duplicate && resumed {
            self.shared.violation(format!("a duplicate signal resumed {id} a second time"));
        } else if !duplicate && !resumed {
            self.shared.violation(format!("the signal to suspended {id} did not resume it: {outcome}"));
        }
    }

    /// Advances the server clock by the turmoil time elapsed since the last step.
    fn sync_clock(&mut self, sim: &turmoil::Sim<'_>) {
        let now = u64::try_from(sim.elapsed().as_millis()).unwrap_or(u64::MAX);
        self.clock.advance(now.saturating_sub(self.elapsed_ms));
        self.elapsed_ms = now;
        self.shared.ledger.lock().driver_ms = now;
    }

    fn draw_faults(&mut self, sim: &mut turmoil::Sim<'_>, now: u64) {
        let Some(rates) = self.rates else { return };
        if self.rng.chance(rates.clock_jump_pct) {
            let jump = 1 + self.rng.below(rates.clock_jump_ms_max);
            let before = self.shared.server_ms();
            let after = self.clock.jump(i64::try_from(jump).unwrap_or(0));
            let hosts = vec![SERVER_HOST.to_owned()];
            self.shared.ledger.lock().history.fault_started(FaultKind::ClockJump, hosts, before, Some(after));
            self.shared.count(|s| s.clock_jumps += 1);
            self.shared.record(&format!("clock jumps {jump} ms"));
        }
        for w in 0..self.workers {
            if self.faulted.contains(&w) {
                continue;
            }
            let name = worker_name(w);
            let until = now + 1 + self.rng.below(rates.outage_ms_max.max(1));
            let heal = if self.rng.chance(rates.crash_pct) {
                sim.crash(name.as_str());
                self.shared.count(|s| s.crashes += 1);
                Heal::Bounce(w)
            } else if self.rng.chance(rates.partition_pct) {
                sim.partition(name.as_str(), SERVER_HOST);
                self.shared.count(|s| s.partitions += 1);
                Heal::Repair(w)
            } else if self.rng.chance(rates.hold_pct) {
                sim.hold(name.as_str(), SERVER_HOST);
                self.shared.count(|s| s.holds += 1);
                Heal::Release(w)
            } else {
                continue;
            };
            self.shared.record(&format!("fault {heal:?} until {until}"));
            let kind = match heal {
                Heal::Bounce(_) => FaultKind::Crash,
                Heal::Repair(_) => FaultKind::Partition,
                Heal::Release(_) => FaultKind::Hold,
            };
            let hosts = match kind {
                FaultKind::Crash => vec![name],
                _ => vec![name, SERVER_HOST.to_owned()],
            };
            let start = self.shared.server_ms();
            let index = self.shared.ledger.lock().history.fault_started(kind, hosts, start, None);
            self.faulted.insert(w);
            self.heals.entry(until).or_default().push((heal, index));
        }
    }

    fn apply_due_heals(&mut self, sim: &mut turmoil::Sim<'_>, now: u64) {
        let later = self.heals.split_off(&(now + 1));
        let due = std::mem::replace(&mut self.heals, later);
        for (heal, index) in due.into_values().flatten() {
            self.apply(sim, heal, index);
        }
    }

    fn apply(&mut self, sim: &mut turmoil::Sim<'_>, heal: Heal, fault_index: usize) {
        let now = self.shared.server_ms();
        self.shared.ledger.lock().history.fault_ended(fault_index, now);
        let w = match heal {
            Heal::Bounce(w) => {
                sim.bounce(worker_name(w).as_str());
                w
            }
            Heal::Repair(w) => {
                sim.repair(worker_name(w).as_str(), SERVER_HOST);
                w
            }
            Heal::Release(w) => {
                sim.release(worker_name(w).as_str(), SERVER_HOST);
                w
            }
        };
        self.shared.record(&format!("heal {heal:?}"));
        self.faulted.remove(&w);
    }

    /// Ends the safety phase: every pending heal now, no drift, low latency, no slow tasks.
    fn heal_all(&mut self, sim: &mut turmoil::Sim<'_>) {
        let due = std::mem::take(&mut self.heals);
        for (heal, index) in due.into_values().flatten() {
            self.apply(sim, heal, index);
        }
        self.clock.set_drift_ppm(0);
        if self.rates.is_some() {
            for w in 0..self.workers {
                sim.set_link_max_message_latency(worker_name(w), SERVER_HOST, Duration::from_millis(5));
            }
        }
        self.shared.ledger.lock().faults_on = false;
        self.shared.record("healed");
    }
}

async fn all_terminal(backend: &Arc<dyn EngineBackend>, ids: &[ExecutionId]) -> Result<bool, EngineError> {
    for id in ids {
        if !backend.read_execution_state(id).await?.is_some_and(|s| s.is_terminal()) {
            return Ok(false);
        }
    }
    Ok(true)
}

/// The end-of-run checks: terminal states, acknowledged completions visible, the lease history
/// (single ownership, attempts within the retry policy, attempts matching the store's count),
/// queue anomalies, and the store's own invariants.
async fn finish(
    shared: &Shared,
    backend: &Arc<dyn EngineBackend>,
    ids: &[ExecutionId],
    deep: Vec<String>,
) -> Result<(), EngineError> {
    let acked: Vec<ExecutionId> = shared.ledger.lock().acked.keys().cloned().collect();
    let mut states = BTreeMap::new();
    for id in ids {
        let snapshot = backend.describe_execution(id).await?;
        let state = snapshot.as_ref().map(|s| s.public_state);
        shared.record(&format!("end {id} {state:?}"));
        shared.count(|s| match state {
            Some(PublicState::Completed) => s.completed += 1,
            Some(PublicState::Failed) => s.failed += 1,
            Some(st) if st.is_terminal() => {}
            _ => s.unfinished += 1,
        });
        if let Some(snapshot) = &snapshot {
            check_attempts(shared, snapshot);
        }
        states.insert(id.clone(), state);
    }
    for id in &acked {
        if states.get(id).copied().flatten() != Some(PublicState::Completed) {
            shared.violation(format!("acknowledged completion of {id} not visible"));
        }
    }
    let history_violations = shared.ledger.lock().history.violations(RETRIES_MAX, RECLAIM_MAX);
    for v in history_violations {
        shared.violation(v);
    }
    check_budgets(shared, backend).await?;
    let anomalies = queue_anomalies(&shared.ledger.lock(), &states);
    shared.count(|s| s.anomalies = anomalies);
    if !anomalies.none() {
        shared.violation(format!("queue anomalies: {anomalies:?}"));
    }
    for v in deep {
        shared.violation(format!("store: {v}"));
    }
    Ok(())
}

/// Counts the usage reports and checks the budget invariants against the stored usage.
async fn check_budgets(shared: &Shared, backend: &Arc<dyn EngineBackend>) -> Result<(), EngineError> {
    let mut stored = BTreeMap::new();
    for (k, budget) in shared.budgets.iter().enumerate() {
        stored.insert(k, backend.get_budget_status(&budget.budget_id).await?.usage);
    }
    let reports = shared.ledger.lock().history.usage.clone();
    shared.count(|s| {
        s.usage_reports = reports.len() as u64;
        s.hard_breaches =
            reports.iter().filter(|r| matches!(r.reply, UsageReply::HardBreach { .. })).count() as u64;
        s.usage_deduplicated =
            reports.iter().filter(|r| r.reply == UsageReply::AlreadyApplied).count() as u64;
    });
    for v in budget_violations(&shared.budgets, &reports, &stored) {
        shared.violation(v);
    }
    Ok(())
}

/// The store's attempt counters against the retry policy and the recorded leases (each claim or
/// reclaim opens one attempt; a resumed claim continues the suspended one).
fn check_attempts(shared: &Shared, snapshot: &ExecutionSnapshot) {
    let id = &snapshot.execution_id;
    let attempts = shared.ledger.lock().history.attempt_count(id);
    if snapshot.retry_count > RETRIES_MAX {
        shared.violation(format!("{id}: {} retries past the policy's {RETRIES_MAX}", snapshot.retry_count));
    }
    if snapshot.lease_reclaim_count > RECLAIM_MAX {
        shared
            .violation(format!("{id}: {} reclaims past the cap {RECLAIM_MAX}", snapshot.lease_reclaim_count));
    }
    if snapshot.total_attempt_count as usize != attempts {
        shared.violation(format!(
            "{id}: the store counts {} attempts, the server's grants opened {attempts}",
            snapshot.total_attempt_count
        ));
    }
}

/// Lost, duplicated, unexpected and recovered completions (see [`QueueAnomalies`]).
fn queue_anomalies(l: &Ledger, states: &BTreeMap<ExecutionId, Option<PublicState>>) -> QueueAnomalies {
    let done = |s: &Option<PublicState>| matches!(s, Some(PublicState::Completed | PublicState::Failed));
    let mut completes = BTreeMap::<&ExecutionId, usize>::new();
    for lease in &l.history.leases {
        if matches!(lease.released, Some((_, Release::Complete))) {
            *completes.entry(&lease.execution_id).or_default() += 1;
        }
    }
    let acked_twice = l.acked.iter().filter(|(_, epochs)| epochs.len() > 1).map(|(id, _)| id);
    let duplicated: BTreeSet<&ExecutionId> =
        completes.iter().filter(|(_, n)| **n > 1).map(|(id, _)| *id).chain(acked_twice).collect();
    let unexpected: BTreeSet<&ExecutionId> =
        completes.keys().copied().chain(l.acked.keys()).filter(|id| !states.contains_key(*id)).collect();
    QueueAnomalies {
        lost: states.values().filter(|s| !done(s)).count(),
        duplicated: duplicated.len(),
        unexpected: unexpected.len(),
        recovered: l.refused_completes.iter().filter(|(id, e)| l.history.completed_under(id, *e)).count(),
    }
}
