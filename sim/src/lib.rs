//! A deterministic driver: N executions, M simulated workers, one memory
//! backend, one simulated clock. Workers claim, renew, complete, fail and
//! crash; crashed workers come back and try stale operations; expired leases
//! are reclaimed. Every choice comes from one seeded generator, so a seed
//! replays the same run and the same trace hash.
//!
//! Three budgets are created first and three executions in four name one of
//! them in their policy (`budget_ids`). A worker running such a task reports
//! usage one to three times (`tokens`, and `calls` on the second budget), each
//! report with a dedup key per (execution, attempt, step) that its re-sends
//! share. A report refused at the hard limit stops the task: the worker fails
//! it (category `permanent`), and the retry policy decides as for any failure.
//! Workers claim with the backend's plain `claim`, which does not consult
//! budgets (the scheduler's admission does), so a spent budget's later
//! executions are still claimed, refused at their first report and failed.
//! Every report and its reply is recorded and checked by [`budgets`].

pub mod budgets;
pub mod faults;
pub mod history;
pub mod sweep;
pub mod timeline;
pub mod turmoil_net;
pub mod turmoil_sim;

pub use budgets::{SimBudget, UsageReply, UsageReport, budget_violations};
pub use history::{History, LeaseEnd, LeaseRecord};
pub use turmoil_sim::{NetFaultRates, QueueAnomalies, TurmoilConfig, TurmoilSummary, run_turmoil};

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::sync::Arc;

use ff_backend_memory::new_sim_backend;
use ff_core::admission::ReportUsageArgs;
use ff_core::contracts::*;
use ff_core::layer::Layered;
use ff_core::{
    AttemptId, Clock, EngineBackend, EngineError, ExecutionId, LaneId, LeaseId, PartitionConfig, PublicState,
    SimClock, WorkerId, WorkerInstanceId,
};
use uuid::Uuid;

/// Most simulated time a run may take before it is declared stuck, in ms.
pub const SIM_TIME_MS_MAX: u64 = 6 * 3_600_000;

/// A run's parameters.
#[derive(Debug, Clone)]
pub struct SimConfig {
    /// Seed of every choice.
    pub seed: u64,
    /// Workers.
    pub workers: usize,
    /// Executions.
    pub executions: usize,
    /// Percent of tasks during which the worker crashes.
    pub crash_pct: u8,
    /// Percent of tasks that fail.
    pub fail_pct: u8,
    /// Lease TTL in ms.
    pub lease_ttl_ms: u64,
    /// Simulated time per tick in ms.
    pub tick_ms: u64,
    /// Longest task in ms.
    pub task_ms_max: u64,
    /// Flow partitions.
    pub partitions: u16,
    /// Faults injected between workers and the backend; `None` runs without.
    pub faults: Option<faults::FaultRates>,
}

impl Default for SimConfig {
    fn default() -> Self {
        Self {
            seed: 1,
            workers: 8,
            executions: 1000,
            crash_pct: 5,
            fail_pct: 10,
            lease_ttl_ms: 10_000,
            tick_ms: 250,
            task_ms_max: 4_000,
            partitions: 16,
            faults: None,
        }
    }
}

/// What a run did and whether its invariants held.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct Summary {
    /// Seed.
    pub seed: u64,
    /// Executions created.
    pub executions: usize,
    /// Completed.
    pub completed: usize,
    /// Failed terminally.
    pub failed: usize,
    /// Retries scheduled.
    pub retries: usize,
    /// Reclaims performed.
    pub reclaims: usize,
    /// Worker crashes injected.
    pub crashes: usize,
    /// Stale operations rejected by fencing.
    pub stale_rejections: usize,
    /// Claims made.
    pub claims: usize,
    /// Executions not terminal at the end.
    pub unfinished: usize,
    /// Simulated time taken, in ms.
    pub sim_ms: i64,
    /// FNV-1a hash of the event trace.
    pub trace_hash: u64,
    /// Invariant violations found.
    pub violations: Vec<String>,
    /// Faults injected (all zero without a fault plan).
    pub faults: faults::FaultStats,
    /// Operations whose outcome a worker could not learn (transport faults).
    pub unknown_outcomes: usize,
    /// Usage reports sent (re-sends of one report count once).
    pub usage_reports: usize,
    /// Usage reports refused at a hard limit (each stopped its task).
    pub hard_breaches: usize,
    /// Usage reports whose re-send was answered `AlreadyApplied` (a lost reply after commit).
    pub usage_deduplicated: usize,
}

impl fmt::Display for Summary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "seed            {}", self.seed)?;
        writeln!(f, "executions      {}", self.executions)?;
        writeln!(f, "completed       {}", self.completed)?;
        writeln!(f, "failed          {}", self.failed)?;
        writeln!(f, "unfinished      {}", self.unfinished)?;
        writeln!(f, "claims          {}", self.claims)?;
        writeln!(f, "retries         {}", self.retries)?;
        writeln!(f, "reclaims        {}", self.reclaims)?;
        writeln!(f, "crashes         {}", self.crashes)?;
        writeln!(f, "stale rejected  {}", self.stale_rejections)?;
        writeln!(
            f,
            "faults          {} failed before commit, {} acks lost, {} delayed; {} outcomes unknown",
            self.faults.failed_before, self.faults.acks_lost, self.faults.delayed, self.unknown_outcomes
        )?;
        writeln!(
            f,
            "budgets         {} usage reports, {} refused at the hard limit, {} re-sends deduplicated",
            self.usage_reports, self.hard_breaches, self.usage_deduplicated
        )?;
        writeln!(f, "simulated time  {:.1} s", self.sim_ms as f64 / 1000.0)?;
        writeln!(f, "trace hash      {:016x}", self.trace_hash)?;
        if self.violations.is_empty() {
            write!(f, "invariants      held")
        } else {
            write!(f, "invariants      VIOLATED: {}", self.violations.join("; "))
        }
    }
}

/// SplitMix64: a small, seedable, portable generator.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    /// A generator for a seed.
    pub fn new(seed: u64) -> Self {
        Self(seed)
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform in `0..n` (0 when n = 0).
    pub fn below(&mut self, n: u64) -> u64 {
        if n == 0 { 0 } else { self.next_u64() % n }
    }

    /// True with probability `pct` percent.
    pub fn chance(&mut self, pct: u8) -> bool {
        self.below(100) < u64::from(pct)
    }

    /// A random UUID.
    pub fn uuid(&mut self) -> Uuid {
        Uuid::from_u64_pair(self.next_u64(), self.next_u64())
    }
}

/// What the current task will do when its time comes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Plan {
    Complete,
    Fail,
    Crash,
}

/// The usage reports a budgeted task still has to send.
#[derive(Debug, Clone, Copy)]
struct UsagePlan {
    budget: usize,
    steps: u32,
    step: u32,
    interval_ms: i64,
    next_at: i64,
}

#[derive(Debug, Clone)]
enum WorkerState {
    Idle,
    Busy { claim: Box<ClaimedExecution>, finish_at: i64, renew_at: i64, plan: Plan, usage: Option<UsagePlan> },
    Down { until: i64, stale: Option<Box<ClaimedExecution>> },
}

/// A store-level invariant check of the backend under test.
pub type DeepCheck = Arc<dyn Fn() -> Vec<String> + Send + Sync>;

/// Workers re-send an operation whose reply was lost at most this many times.
const RESEND_MAX: usize = 4;

/// Executions per budget cycle: execution `i` names budget `i % BUDGET_CYCLE` when that is
/// below [`BUDGETS`], none otherwise.
const BUDGET_CYCLE: usize = 4;

/// Budgets per run.
const BUDGETS: usize = 3;

/// Ticks between two budget checks during the run.
const BUDGET_CHECK_TICKS: u64 = 20;

struct Sim {
    cfg: SimConfig,
    rng: Rng,
    clock: SimClock,
    /// What workers talk to (behind the fault layer when there is one).
    backend: Arc<dyn EngineBackend>,
    /// The backend itself: scanners, setup and the final check.
    raw: Arc<dyn EngineBackend>,
    layer: Option<Arc<faults::FaultLayer>>,
    deep_check: Option<DeepCheck>,
    ids: Vec<ExecutionId>,
    lane: LaneId,
    workers: Vec<WorkerState>,
    acked_completions: BTreeMap<ExecutionId, u32>,
    last_epoch: BTreeMap<ExecutionId, u64>,
    budgets: Vec<SimBudget>,
    budget_of: BTreeMap<ExecutionId, usize>,
    usage: Vec<UsageReport>,
    /// Budget violation texts already reported (checks repeat over the run).
    budget_violations_seen: BTreeSet<String>,
    summary: Summary,
    trace: u64,
}

/// The partition layout of a run.
pub fn partitions_of(cfg: &SimConfig) -> PartitionConfig {
    PartitionConfig { num_flow_partitions: cfg.partitions.max(1), ..PartitionConfig::default() }
}

/// Runs one simulation to completion on a fresh memory backend.
pub async fn run(cfg: SimConfig) -> Result<Summary, EngineError> {
    let clock = SimClock::default();
    let backend = Arc::new(new_sim_backend(clock.clone(), partitions_of(&cfg)));
    let check = backend.clone();
    let deep: DeepCheck = Arc::new(move || check.runner().invariant_violations());
    run_on(cfg, backend, clock, Some(deep)).await
}

/// Runs one simulation on any backend built on `clock` (and with the layout of
/// [`partitions_of`]). With a fault plan, a safety phase runs with faults
/// injected between workers and the backend until every execution is terminal
/// or half the time budget is spent; a liveness phase then runs healed until
/// every execution is terminal or the budget is spent.
pub async fn run_on(
    cfg: SimConfig,
    raw: Arc<dyn EngineBackend>,
    clock: SimClock,
    deep_check: Option<DeepCheck>,
) -> Result<Summary, EngineError> {
    let layer =
        cfg.faults.map(|rates| Arc::new(faults::FaultLayer::new(cfg.seed, rates, Some(clock.clone()))));
    let backend: Arc<dyn EngineBackend> = match &layer {
        Some(l) => Arc::new(Layered::new(raw.clone(), l.clone())),
        None => raw.clone(),
    };
    let mut sim = Sim {
        rng: Rng::new(cfg.seed),
        workers: vec![WorkerState::Idle; cfg.workers.max(1)],
        lane: LaneId::new("default"),
        clock,
        backend,
        raw,
        layer,
        deep_check,
        ids: Vec::new(),
        acked_completions: BTreeMap::new(),
        last_epoch: BTreeMap::new(),
        budgets: Vec::new(),
        budget_of: BTreeMap::new(),
        usage: Vec::new(),
        budget_violations_seen: BTreeSet::new(),
        summary: Summary { seed: cfg.seed, executions: cfg.executions, ..Summary::default() },
        trace: 0xcbf2_9ce4_8422_2325,
        cfg,
    };
    sim.create_all().await?;
    let start = sim.clock.now_ms();
    let deadline = start + SIM_TIME_MS_MAX as i64;
    let safety_end = start + (SIM_TIME_MS_MAX / 2) as i64;
    let mut ticks = 0u64;
    let mut healed = sim.layer.is_none();
    loop {
        let now = sim.clock.now_ms();
        if now >= deadline {
            break;
        }
        if !healed && now >= safety_end {
            healed = true;
            sim.heal();
            sim.check_budgets("after the safety phase").await?;
        }
        sim.tick().await?;
        ticks += 1;
        if ticks.is_multiple_of(BUDGET_CHECK_TICKS) && sim.budget_violations_seen.is_empty() {
            sim.check_budgets("during the run").await?;
        }
        if ticks.is_multiple_of(20) && sim.all_terminal().await? {
            break;
        }
    }
    if !healed {
        sim.heal();
        sim.check_budgets("after the safety phase").await?;
    }
    sim.finish(start).await?;
    sim.check_budgets("at the end of the run").await?;
    Ok(sim.summary)
}

impl Sim {
    fn record(&mut self, event: &str) {
        for b in event.bytes().chain(std::iter::once(b'\n')) {
            self.trace ^= u64::from(b);
            self.trace = self.trace.wrapping_mul(0x0100_0000_01b3);
        }
    }

    /// Ends the safety phase: no more faults.
    fn heal(&mut self) {
        if let Some(l) = &self.layer {
            l.set_enabled(false);
            self.summary.faults = l.stats();
        }
    }

    /// Whether every execution is terminal, read from the backend itself.
    async fn all_terminal(&self) -> Result<bool, EngineError> {
        for id in &self.ids {
            if !self.raw.read_execution_state(id).await?.is_some_and(|s| s.is_terminal()) {
                return Ok(false);
            }
        }
        Ok(true)
    }

    /// Creates the run's budgets (on the backend itself, like the executions).
    async fn create_budgets(&mut self) -> Result<(), EngineError> {
        let mut attached = [0u64; BUDGETS];
        for i in 0..self.cfg.executions {
            if let Some(n) = attached.get_mut(i % BUDGET_CYCLE) {
                *n += 1;
            }
        }
        self.budgets = budgets::plan_budgets(&mut self.rng, attached);
        for budget in &self.budgets {
            self.raw.create_budget(budget.create_args()).await?;
        }
        Ok(())
    }

    async fn create_all(&mut self) -> Result<(), EngineError> {
        self.create_budgets().await?;
        let parts =
            PartitionConfig { num_flow_partitions: self.cfg.partitions.max(1), ..PartitionConfig::default() };
        let retry = r#""retry_policy":{"max_retries":2,"backoff":{"type":"fixed","delay_ms":500}}"#;
        for i in 0..self.cfg.executions {
            let id = ExecutionId::solo(&self.lane, &parts, self.rng.uuid());
            let id = ExecutionId::from_parts((i as u16) % parts.num_flow_partitions, id.uuid());
            let mut args = CreateExecutionArgs::new(id, "sim", self.lane.clone(), "task");
            let budget = i % BUDGET_CYCLE;
            args.policy_json = match self.budgets.get(budget) {
                Some(b) => {
                    self.budget_of.insert(args.execution_id.clone(), budget);
                    format!(r#"{{{retry},"budget_ids":["{}"]}}"#, b.budget_id)
                }
                None => format!("{{{retry}}}"),
            };
            args.priority = i32::try_from(self.rng.below(3)).unwrap_or(0);
            if self.rng.chance(10) {
                args.delay_until = Some(self.clock.now_ms() + self.rng.below(5_000) as i64);
            }
            self.ids.push(args.execution_id.clone());
            self.raw.create_execution(args).await?;
        }
        Ok(())
    }

    async fn tick(&mut self) -> Result<(), EngineError> {
        self.clock.advance(self.cfg.tick_ms);
        for p in 0..self.cfg.partitions.max(1) {
            self.raw.run_scanner(ScannerKind::LeaseExpiry, p, 50).await?;
            self.raw.run_scanner(ScannerKind::DelayedPromoter, p, 50).await?;
        }
        self.reclaim_expired().await?;
        for w in 0..self.workers.len() {
            self.step_worker(w).await?;
        }
        Ok(())
    }

    fn worker_ids(w: usize) -> (WorkerId, WorkerInstanceId) {
        (WorkerId::new(format!("w{w}")), WorkerInstanceId::new(format!("w{w}-i")))
    }

    async fn reclaim_expired(&mut self) -> Result<(), EngineError> {
        let args = ListExpiredLeasesArgs {
            as_of: self.clock.now_ms(),
            after: None,
            limit: 100,
            max_partitions_per_call: self.cfg.partitions.max(1),
        };
        let page = match self.backend.list_expired_leases(args).await {
            Ok(page) => page,
            Err(e) if faults::is_transport(&e) => return Ok(()),
            Err(e) => return Err(e),
        };
        for info in page.entries {
            let Some(w) = self.workers.iter().position(|s| matches!(s, WorkerState::Idle)) else {
                return Ok(());
            };
            self.reclaim_one(w, &info.execution_id).await?;
        }
        Ok(())
    }

    async fn reclaim_one(&mut self, w: usize, id: &ExecutionId) -> Result<(), EngineError> {
        let (worker_id, inst) = Self::worker_ids(w);
        let grant = IssueReclaimGrantArgs {
            execution_id: id.clone(),
            worker_id: worker_id.clone(),
            worker_instance_id: inst.clone(),
            lane_id: self.lane.clone(),
            capability_hash: String::new(),
            grant_ttl_ms: 5_000,
            route_snapshot_json: String::new(),
            admission_summary: String::new(),
            worker_capabilities: CapabilitySet::default(),
        };
        match self.backend.issue_reclaim_grant(grant).await {
            Ok(IssueReclaimGrantOutcome::Granted(_)) => {}
            Ok(_) | Err(_) => return Ok(()),
        }
        let args = ReclaimExecutionArgs {
            execution_id: id.clone(),
            worker_id,
            worker_instance_id: inst,
            lane_id: self.lane.clone(),
            lease_id: LeaseId::from_uuid(self.rng.uuid()),
            lease_ttl_ms: self.cfg.lease_ttl_ms,
            attempt_id: AttemptId::from_uuid(self.rng.uuid()),
            attempt_policy_json: String::new(),
            max_reclaim_count: Some(20),
        };
        let outcome = match self.backend.reclaim_execution(args).await {
            Ok(o) => o,
            Err(e) if faults::is_transport(&e) => {
                // Committed or not, an unknown reclaim is recovered by the next lease expiry.
                self.summary.unknown_outcomes += 1;
                self.record(&format!("reclaim-unknown {id}"));
                return Ok(());
            }
            Err(e) => return Err(e),
        };
        match outcome {
            ReclaimExecutionOutcome::Claimed(claim) => {
                self.summary.reclaims += 1;
                self.record(&format!("reclaim {} e{}", id, claim.lease_epoch));
                self.start_task(w, claim);
            }
            ReclaimExecutionOutcome::ReclaimCapExceeded { .. } => {
                self.record(&format!("reclaim-cap {id}"));
            }
            _ => {}
        }
        Ok(())
    }

    fn start_task(&mut self, w: usize, claim: ClaimedExecution) {
        let now = self.clock.now_ms();
        let epoch = self.last_epoch.entry(claim.execution_id.clone()).or_insert(0);
        if claim.lease_epoch <= *epoch {
            self.summary.violations.push(format!("epoch not monotonic on {}", claim.execution_id));
        }
        *epoch = claim.lease_epoch;
        let plan = if self.rng.chance(self.cfg.crash_pct) {
            Plan::Crash
        } else if self.rng.chance(self.cfg.fail_pct) {
            Plan::Fail
        } else {
            Plan::Complete
        };
        let finish_at = now + 1 + self.rng.below(self.cfg.task_ms_max) as i64;
        let renew_at = now + (self.cfg.lease_ttl_ms / 3) as i64;
        let usage = self.budget_of.get(&claim.execution_id).copied().map(|budget| {
            let steps = 1 + self.rng.below(budgets::REPORTS_PER_ATTEMPT_MAX) as u32;
            let interval_ms = ((finish_at - now) / i64::from(steps + 1)).max(1);
            UsagePlan { budget, steps, step: 0, interval_ms, next_at: now + interval_ms }
        });
        self.workers[w] = WorkerState::Busy { claim: Box::new(claim), finish_at, renew_at, plan, usage };
    }

    async fn step_worker(&mut self, w: usize) -> Result<(), EngineError> {
        let now = self.clock.now_ms();
        match self.workers[w].clone() {
            WorkerState::Idle => self.try_claim(w).await,
            WorkerState::Down { until, stale } if now >= until => {
                self.workers[w] = WorkerState::Idle;
                if let Some(claim) = stale {
                    self.late_complete(&claim).await?;
                }
                Ok(())
            }
            WorkerState::Down { .. } => Ok(()),
            WorkerState::Busy { claim, finish_at, renew_at, plan, usage } => {
                // Reports come first, one per tick: a task sends all of them before it ends.
                if let Some(u) = usage.filter(|u| u.step < u.steps && now >= u.next_at) {
                    return self.report_step(w, claim, u).await;
                }
                if now >= finish_at {
                    return self.finish_task(w, *claim, plan).await;
                }
                if now >= renew_at {
                    match self.backend.renew(&claim.handle).await {
                        Ok(_) => {}
                        Err(e) if faults::is_transport(&e) => {}
                        Err(e) => {
                            // The lease is gone (expired or reclaimed meanwhile): drop the task.
                            let id = claim.execution_id.clone();
                            self.workers[w] = WorkerState::Idle;
                            return self.rejected(&id, &e);
                        }
                    }
                    let next = now + (self.cfg.lease_ttl_ms / 3) as i64;
                    self.workers[w] = WorkerState::Busy { claim, finish_at, renew_at: next, plan, usage };
                }
                Ok(())
            }
        }
    }

    async fn try_claim(&mut self, w: usize) -> Result<(), EngineError> {
        let (worker_id, worker_instance_id) = Self::worker_ids(w);
        let policy = ClaimPolicy {
            worker_id,
            worker_instance_id,
            lease_ttl_ms: u32::try_from(self.cfg.lease_ttl_ms).unwrap_or(u32::MAX),
            lease_id: LeaseId::from_uuid(self.rng.uuid()),
            attempt_id: AttemptId::from_uuid(self.rng.uuid()),
        };
        let caps = CapabilitySet::default();
        let claimed = match self.backend.claim(&self.lane, &caps, policy, self.cfg.partitions.max(1)).await {
            Ok(c) => c,
            Err(e) if faults::is_transport(&e) => {
                // A claim whose reply was lost holds a lease nobody works; expiry recovers it.
                self.summary.unknown_outcomes += 1;
                self.record(&format!("claim-unknown w{w}"));
                None
            }
            Err(e) => return Err(e),
        };
        if let Some(claim) = claimed {
            self.summary.claims += 1;
            self.record(&format!("claim w{w} {} e{}", claim.execution_id, claim.lease_epoch));
            self.start_task(w, claim);
        }
        Ok(())
    }

    async fn finish_task(
        &mut self,
        w: usize,
        claim: ClaimedExecution,
        plan: Plan,
    ) -> Result<(), EngineError> {
        self.workers[w] = WorkerState::Idle;
        let id = claim.execution_id.clone();
        match plan {
            Plan::Crash => {
                self.summary.crashes += 1;
                self.record(&format!("crash w{w} {id}"));
                let until = self.clock.now_ms() + (self.cfg.lease_ttl_ms * 2) as i64;
                self.workers[w] = WorkerState::Down { until, stale: Some(Box::new(claim)) };
            }
            Plan::Complete => {
                let mut answer = self.backend.complete(&claim.handle, Some(b"ok".to_vec())).await;
                for _ in 0..RESEND_MAX {
                    match &answer {
                        Err(e) if faults::is_transport(e) => {
                            // Re-send: a committed first try answers as already done by this lease.
                            answer = self.backend.complete(&claim.handle, Some(b"ok".to_vec())).await;
                        }
                        _ => break,
                    }
                }
                match answer {
                    Ok(()) => self.acked_complete(&id),
                    Err(e) => self.rejected(&id, &e)?,
                }
            }
            Plan::Fail => self.send_fail(&claim, "simulated failure", FailureClass::Transient).await?,
        }
        Ok(())
    }

    /// Fails a task under its lease, re-sending while the reply is lost.
    async fn send_fail(
        &mut self,
        claim: &ClaimedExecution,
        message: &str,
        class: FailureClass,
    ) -> Result<(), EngineError> {
        let id = &claim.execution_id;
        let mut answer = Err(EngineError::invalid_input("not sent"));
        for _ in 0..=RESEND_MAX {
            answer = self.backend.fail(&claim.handle, FailureReason::new(message), class).await;
            if !matches!(&answer, Err(e) if faults::is_transport(e)) {
                break;
            }
        }
        match answer {
            Ok(FailOutcome::TerminalFailed) => self.record(&format!("failed {id}")),
            Ok(_) => {
                self.summary.retries += 1;
                self.record(&format!("retry {id}"));
            }
            Err(e) => self.rejected(id, &e)?,
        }
        Ok(())
    }

    /// Sends a busy task's next usage report; a hard breach stops the task with a failure.
    async fn report_step(
        &mut self,
        w: usize,
        claim: Box<ClaimedExecution>,
        mut usage: UsagePlan,
    ) -> Result<(), EngineError> {
        let reply = self.report_usage(&claim, &usage).await?;
        if matches!(reply, UsageReply::HardBreach { .. }) {
            self.workers[w] = WorkerState::Idle;
            self.record(&format!("budget-stop w{w} {}", claim.execution_id));
            return self.send_fail(&claim, "budget hard limit reached", FailureClass::Permanent).await;
        }
        usage.step += 1;
        usage.next_at = self.clock.now_ms() + usage.interval_ms;
        if let WorkerState::Busy { usage: current, .. } = &mut self.workers[w] {
            *current = Some(usage);
        }
        Ok(())
    }

    /// Sends one usage report (re-sending, under the same dedup key, while the reply is lost)
    /// and records it with its final reply.
    async fn report_usage(
        &mut self,
        claim: &ClaimedExecution,
        usage: &UsagePlan,
    ) -> Result<UsageReply, EngineError> {
        let Some(budget) = self.budgets.get(usage.budget) else {
            return Err(EngineError::invalid_input(format!("no budget #{}", usage.budget)));
        };
        let budget_id = budget.budget_id;
        let (id, attempt) = (claim.execution_id.clone(), claim.attempt_index);
        let dedup_key = UsageReport::dedup_key(&id, attempt, usage.step);
        let deltas = budgets::report_deltas(budget, &dedup_key);
        let tokens = deltas.first().map_or(0, |(_, v)| *v);
        let args = ReportUsageArgs { budget_id, dimensions: deltas.clone(), dedup_key: Some(dedup_key) };
        let mut sends = 0u32;
        let answer = loop {
            sends += 1;
            match self.backend.report_usage_and_check(args.clone()).await {
                Err(e) if faults::is_transport(&e) && (sends as usize) <= RESEND_MAX => {}
                answer => break answer,
            }
        };
        let mut reply = match answer {
            Ok(result) => UsageReply::of(&result),
            Err(e) if faults::is_transport(&e) => {
                self.summary.unknown_outcomes += 1;
                UsageReply::Unknown
            }
            Err(e) => return Err(e),
        };
        if let UsageReply::HardBreach { dimension, stored_after, .. } = &mut reply {
            // Nothing ran since the reply: the stored usage is what the refusal left.
            let status = self.raw.get_budget_status(&budget_id).await?;
            *stored_after = Some(status.usage.get(dimension.as_str()).copied().unwrap_or(0));
            self.summary.hard_breaches += 1;
        }
        self.summary.usage_reports += 1;
        if reply == UsageReply::AlreadyApplied {
            self.summary.usage_deduplicated += 1;
        }
        self.record(&format!(
            "usage {id} a{attempt} s{} b{} {tokens} {}",
            usage.step,
            usage.budget,
            reply.tag()
        ));
        self.usage.push(UsageReport {
            budget: usage.budget,
            execution_id: id,
            attempt,
            step: usage.step,
            deltas,
            sends,
            reply: reply.clone(),
            at_ms: self.clock.now_ms(),
        });
        Ok(reply)
    }

    /// Reads every budget's stored usage and checks the budget invariants over the reports
    /// so far; violations not reported before are added, prefixed with `phase`.
    async fn check_budgets(&mut self, phase: &str) -> Result<(), EngineError> {
        let mut stored = BTreeMap::new();
        for (k, budget) in self.budgets.iter().enumerate() {
            stored.insert(k, self.raw.get_budget_status(&budget.budget_id).await?.usage);
        }
        for v in budget_violations(&self.budgets, &self.usage, &stored) {
            if self.budget_violations_seen.insert(v.clone()) {
                self.summary.violations.push(format!("{phase}: {v}"));
            }
        }
        Ok(())
    }

    /// A crashed worker comes back and tries to complete with its old handle.
    async fn late_complete(&mut self, claim: &ClaimedExecution) -> Result<(), EngineError> {
        let id = claim.execution_id.clone();
        match self.backend.complete(&claim.handle, None).await {
            Ok(()) => self.acked_complete(&id),
            Err(e) => self.rejected(&id, &e)?,
        }
        Ok(())
    }

    fn acked_complete(&mut self, id: &ExecutionId) {
        let n = self.acked_completions.entry(id.clone()).or_insert(0);
        *n += 1;
        if *n > 1 {
            self.summary.violations.push(format!("{id} completed twice"));
        }
        self.record(&format!("completed {id}"));
    }

    fn rejected(&mut self, id: &ExecutionId, e: &EngineError) -> Result<(), EngineError> {
        use ff_core::error::StateKind;
        match e.root() {
            EngineError::State(StateKind::StaleLease | StateKind::LeaseExpired | StateKind::LeaseRevoked)
            | EngineError::Contention(_) => {
                self.summary.stale_rejections += 1;
                self.record(&format!("stale {id} {:?}", e.code()));
                Ok(())
            }
            EngineError::Transport { .. } => {
                self.summary.unknown_outcomes += 1;
                self.record(&format!("unknown {id}"));
                Ok(())
            }
            _ => Err(EngineError::invalid_input(format!("unexpected rejection of {id}: {e}"))),
        }
    }

    async fn finish(&mut self, start: i64) -> Result<(), EngineError> {
        self.summary.sim_ms = self.clock.now_ms() - start;
        let mut unfinished = 0;
        let ids: Vec<ExecutionId> = self.list_all().await?;
        if ids.len() != self.ids.len() {
            self.summary.violations.push(format!(
                "{} executions listed, {} created",
                ids.len(),
                self.ids.len()
            ));
        }
        for id in &ids {
            let state = self.raw.read_execution_state(id).await?;
            match state {
                Some(PublicState::Completed) => self.summary.completed += 1,
                Some(PublicState::Failed) => self.summary.failed += 1,
                Some(s) if s.is_terminal() => {}
                _ => unfinished += 1,
            }
            if self.acked_completions.contains_key(id) && state != Some(PublicState::Completed) {
                self.summary.violations.push(format!("acknowledged completion of {id} not visible"));
            }
        }
        self.summary.unfinished = unfinished;
        if let Some(check) = &self.deep_check {
            self.summary.violations.extend(check());
        }
        self.summary.trace_hash = self.trace;
        Ok(())
    }

    async fn list_all(&self) -> Result<Vec<ExecutionId>, EngineError> {
        let mut out = Vec::new();
        for p in 0..self.cfg.partitions.max(1) {
            let mut after = None;
            loop {
                let page = self.raw.list_executions(p, after.clone(), 1000).await?;
                let Some(last) = page.last().cloned() else { break };
                out.extend(page);
                after = Some(last);
            }
        }
        Ok(out)
    }
}
