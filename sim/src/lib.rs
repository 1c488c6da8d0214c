//! A deterministic driver: N executions, M simulated workers, one memory
//! backend, one simulated clock. Workers claim, renew, complete, fail and
//! crash; crashed workers come back and try stale operations; expired leases
//! are reclaimed. Every choice comes from one seeded generator, so a seed
//! replays the same run and the same trace hash.

use std::collections::BTreeMap;
use std::fmt;

use ff_backend_memory::{MemoryBackend, new_sim_backend};
use ff_core::contracts::*;
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
        }
    }
}

/// What a run did and whether its invariants held.
#[derive(Debug, Clone, Default)]
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

#[derive(Debug, Clone)]
enum WorkerState {
    Idle,
    Busy { claim: Box<ClaimedExecution>, finish_at: i64, renew_at: i64, plan: Plan },
    Down { until: i64, stale: Option<Box<ClaimedExecution>> },
}

struct Sim {
    cfg: SimConfig,
    rng: Rng,
    clock: SimClock,
    backend: MemoryBackend,
    lane: LaneId,
    workers: Vec<WorkerState>,
    acked_completions: BTreeMap<ExecutionId, u32>,
    last_epoch: BTreeMap<ExecutionId, u64>,
    summary: Summary,
    trace: u64,
}

/// Runs one simulation to completion.
pub async fn run(cfg: SimConfig) -> Result<Summary, EngineError> {
    let clock = SimClock::default();
    let parts = PartitionConfig { num_flow_partitions: cfg.partitions.max(1), ..PartitionConfig::default() };
    let backend = new_sim_backend(clock.clone(), parts);
    let mut sim = Sim {
        rng: Rng::new(cfg.seed),
        workers: vec![WorkerState::Idle; cfg.workers.max(1)],
        lane: LaneId::new("default"),
        clock,
        backend,
        acked_completions: BTreeMap::new(),
        last_epoch: BTreeMap::new(),
        summary: Summary { seed: cfg.seed, executions: cfg.executions, ..Summary::default() },
        trace: 0xcbf2_9ce4_8422_2325,
        cfg,
    };
    sim.create_all().await?;
    let start = sim.clock.now_ms();
    let deadline = start + SIM_TIME_MS_MAX as i64;
    while sim.clock.now_ms() < deadline && !sim.all_terminal() {
        sim.tick().await?;
    }
    sim.finish(start).await?;
    Ok(sim.summary)
}

impl Sim {
    fn record(&mut self, event: &str) {
        for b in event.bytes().chain(std::iter::once(b'\n')) {
            self.trace ^= u64::from(b);
            self.trace = self.trace.wrapping_mul(0x0100_0000_01b3);
        }
    }

    fn all_terminal(&self) -> bool {
        self.summary.completed + self.summary.failed >= self.cfg.executions
    }

    async fn create_all(&mut self) -> Result<(), EngineError> {
        let parts =
            PartitionConfig { num_flow_partitions: self.cfg.partitions.max(1), ..PartitionConfig::default() };
        let policy = r#"{"retry_policy":{"max_retries":2,"backoff":{"type":"fixed","delay_ms":500}}}"#;
        for i in 0..self.cfg.executions {
            let id = ExecutionId::solo(&self.lane, &parts, self.rng.uuid());
            let id = ExecutionId::from_parts((i as u16) % parts.num_flow_partitions, id.uuid());
            let mut args = CreateExecutionArgs::new(id, "sim", self.lane.clone(), "task");
            args.policy_json = policy.to_owned();
            args.priority = i32::try_from(self.rng.below(3)).unwrap_or(0);
            if self.rng.chance(10) {
                args.delay_until = Some(self.clock.now_ms() + self.rng.below(5_000) as i64);
            }
            self.backend.create_execution(args).await?;
        }
        Ok(())
    }

    async fn tick(&mut self) -> Result<(), EngineError> {
        self.clock.advance(self.cfg.tick_ms);
        for p in 0..self.cfg.partitions.max(1) {
            self.backend.run_scanner(ScannerKind::LeaseExpiry, p, 50).await?;
            self.backend.run_scanner(ScannerKind::DelayedPromoter, p, 50).await?;
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
        let page = self.backend.list_expired_leases(args).await?;
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
        match self.backend.reclaim_execution(args).await? {
            ReclaimExecutionOutcome::Claimed(claim) => {
                self.summary.reclaims += 1;
                self.record(&format!("reclaim {} e{}", id, claim.lease_epoch));
                self.start_task(w, claim);
            }
            ReclaimExecutionOutcome::ReclaimCapExceeded { .. } => {
                self.summary.failed += 1;
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
        self.workers[w] = WorkerState::Busy { claim: Box::new(claim), finish_at, renew_at, plan };
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
            WorkerState::Busy { claim, finish_at, renew_at, plan } => {
                if now >= finish_at {
                    return self.finish_task(w, *claim, plan).await;
                }
                if now >= renew_at {
                    self.backend.renew(&claim.handle).await?;
                    let next = now + (self.cfg.lease_ttl_ms / 3) as i64;
                    self.workers[w] = WorkerState::Busy { claim, finish_at, renew_at: next, plan };
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
        let claimed = self.backend.claim(&self.lane, &caps, policy, self.cfg.partitions.max(1)).await?;
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
            Plan::Complete => match self.backend.complete(&claim.handle, Some(b"ok".to_vec())).await {
                Ok(()) => self.acked_complete(&id),
                Err(e) => self.rejected(&id, &e)?,
            },
            Plan::Fail => {
                let reason = FailureReason::new("simulated failure");
                match self.backend.fail(&claim.handle, reason, FailureClass::Transient).await {
                    Ok(FailOutcome::TerminalFailed) => {
                        self.summary.failed += 1;
                        self.record(&format!("failed {id}"));
                    }
                    Ok(_) => {
                        self.summary.retries += 1;
                        self.record(&format!("retry {id}"));
                    }
                    Err(e) => self.rejected(&id, &e)?,
                }
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
        self.summary.completed += 1;
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
            _ => Err(EngineError::invalid_input(format!("unexpected rejection of {id}: {e}"))),
        }
    }

    async fn finish(&mut self, start: i64) -> Result<(), EngineError> {
        self.summary.sim_ms = self.clock.now_ms() - start;
        let mut unfinished = 0;
        let ids: Vec<ExecutionId> = self.list_all().await?;
        for id in &ids {
            let state = self.backend.read_execution_state(id).await?;
            match state {
                Some(s) if s.is_terminal() => {}
                _ => unfinished += 1,
            }
            if self.acked_completions.contains_key(id) && state != Some(PublicState::Completed) {
                self.summary.violations.push(format!("acknowledged completion of {id} not visible"));
            }
        }
        self.summary.unfinished = unfinished;
        self.summary.violations.extend(self.backend.runner().invariant_violations());
        self.summary.trace_hash = self.trace;
        Ok(())
    }

    async fn list_all(&self) -> Result<Vec<ExecutionId>, EngineError> {
        let mut out = Vec::new();
        for p in 0..self.cfg.partitions.max(1) {
            let mut after = None;
            loop {
                let page = self.backend.list_executions(p, after.clone(), 1000).await?;
                let Some(last) = page.last().cloned() else { break };
                out.extend(page);
                after = Some(last);
            }
        }
        Ok(out)
    }
}
