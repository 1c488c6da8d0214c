//! The scenario harness: named executions and workers, the fixture's clock, and
//! a transcript with ids and times normalised so it is backend-independent.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use ff_core::contracts::*;
use ff_core::error::ContentionKind;
use ff_core::{
    AttemptId, CancelSource, Clock, EngineBackend, EngineError, ExecutionId, LaneId, LeaseFence, LeaseId,
    SimClock, SystemClock, WorkerId, WorkerInstanceId,
};
use uuid::Uuid;

use crate::Fixture;

/// The lane every scenario uses unless told otherwise.
pub const LANE: &str = "default";

/// Real-TTL mode divides every duration a case waits past by this.
pub const REAL_TIME_SCALE_DIVISOR: u64 = 100;
/// Real-TTL mode stretches every duration that must *not* elapse during a case
/// to at least this, far longer than any plausible stall of a loaded machine.
pub const REAL_TIME_HOLD_MS_MIN: u64 = 60_000;
/// Longest gap between two reads of the backend's clock while waiting.
pub const REAL_TIME_POLL_MS_MAX: u64 = 5;
/// Slack past a wait's target before the backend's clock is declared stuck.
pub const REAL_TIME_STUCK_MS: u64 = 30_000;

/// Where a harness's time comes from.
#[derive(Debug, Clone)]
pub enum TimeSource {
    /// The simulated clock shared with the backend: `advance` moves it exactly.
    Simulated(SimClock),
    /// The backend's own real clock (`server_time_ms`): `advance` waits for it.
    Real,
}

/// A backend, its clock, and a transcript.
pub struct Harness {
    /// The backend under test.
    pub b: Arc<dyn EngineBackend>,
    /// Where time comes from.
    pub time: TimeSource,
    /// Lease TTL of the harness's claims, reclaims and resumed claims.
    pub lease_ttl_ms: u64,
    /// TTL of the harness's claim and reclaim grants.
    pub grant_ttl_ms: u64,
    t0: i64,
    next_uuid: u64,
    /// Named executions.
    pub ids: BTreeMap<String, ExecutionId>,
    names: Vec<(String, String)>,
    /// Every claim made per execution name, oldest first.
    pub claims: BTreeMap<String, Vec<ClaimedExecution>>,
    /// The transcript.
    pub log: Vec<String>,
    /// Put every execution on partition 0 (so eligible order is one index).
    pub one_partition: bool,
    /// Partitions used for ids and scans (at most 8 of the backend's).
    pub partitions: u16,
    inspect: Option<crate::Inspect>,
}

impl Harness {
    /// A harness over a fixture: on its simulated clock when it has one, else
    /// in real-TTL mode on the backend's own clock.
    pub fn new(fixture: &Fixture) -> Self {
        let (time, t0) = match &fixture.clock {
            Some(clock) => (TimeSource::Simulated(clock.clone()), clock.now_ms()),
            // Only a label origin for `t+N`; waits read the backend's clock.
            None => (TimeSource::Real, SystemClock.now_ms()),
        };
        let mut h = Self {
            b: fixture.backend.clone(),
            time,
            lease_ttl_ms: 0,
            grant_ttl_ms: 0,
            t0,
            next_uuid: 0,
            ids: BTreeMap::new(),
            names: Vec::new(),
            claims: BTreeMap::new(),
            log: Vec::new(),
            one_partition: false,
            partitions: fixture.backend.partition_config().num_flow_partitions.clamp(1, 8),
            inspect: fixture.inspect.clone(),
        };
        h.lease_ttl_ms = h.hold(10_000);
        h.grant_ttl_ms = h.hold(5_000);
        h
    }

    /// Asserts a stored timestamp was taken between two readings of the
    /// backend's clock around the call that wrote it (on a simulated clock the
    /// readings are equal, so this is exact).
    pub fn assert_stamp(&self, what: &str, at: i64, lo: i64, hi: i64) {
        assert!((lo..=hi).contains(&at), "{what} = {} outside [{}, {}]", self.t(at), self.t(lo), self.t(hi));
    }

    /// Whether time is real (no simulated clock).
    pub fn real_time(&self) -> bool {
        matches!(self.time, TimeSource::Real)
    }

    /// The scaling point of time-dependent cases: a duration the case waits
    /// past (a TTL meant to expire, a delay meant to pass). Identity on a
    /// simulated clock; divided by [`REAL_TIME_SCALE_DIVISOR`] (rounded up, so
    /// `a >= b` still gives `ms(a) >= ms(b)`) in real-TTL mode.
    pub fn ms(&self, ms: u64) -> u64 {
        match self.time {
            TimeSource::Simulated(_) => ms,
            TimeSource::Real => ms.div_ceil(REAL_TIME_SCALE_DIVISOR),
        }
    }

    /// As [`Harness::ms`], signed (for offsets added to timestamps).
    pub fn ms_i(&self, ms: u64) -> i64 {
        i64::try_from(self.ms(ms)).unwrap_or(i64::MAX)
    }

    /// A duration that must *not* elapse during the case (the "not yet
    /// expired" side). Identity on a simulated clock; at least
    /// [`REAL_TIME_HOLD_MS_MIN`] in real-TTL mode.
    pub fn hold(&self, ms: u64) -> u64 {
        match self.time {
            TimeSource::Simulated(_) => ms,
            TimeSource::Real => ms.max(REAL_TIME_HOLD_MS_MIN),
        }
    }

    /// As [`Harness::hold`], signed.
    pub fn hold_i(&self, ms: u64) -> i64 {
        i64::try_from(self.hold(ms)).unwrap_or(i64::MAX)
    }

    fn uuid(&mut self) -> Uuid {
        self.next_uuid += 1;
        Uuid::from_u64_pair(0xff, self.next_uuid)
    }

    fn name_uuid(&mut self, prefix: &str) -> Uuid {
        let u = self.uuid();
        let n = self.names.iter().filter(|(_, v)| v.starts_with(prefix)).count() + 1;
        self.names.push((u.to_string(), format!("{prefix}{n}")));
        u
    }

    /// Rewrites ids and times into stable names.
    pub fn norm(&self, s: &str) -> String {
        let mut out = s.to_owned();
        for (name, id) in &self.ids {
            out = out.replace(id.as_str(), name);
        }
        for (raw, name) in &self.names {
            out = out.replace(raw, name);
        }
        out
    }

    /// A time relative to the start.
    pub fn t(&self, ms: i64) -> String {
        format!("t+{}", ms - self.t0)
    }

    pub fn say(&mut self, line: String) {
        let line = self.norm(&line);
        self.log.push(line);
    }

    pub fn transcript(&self) -> String {
        self.log.join("\n")
    }

    pub fn id(&self, name: &str) -> ExecutionId {
        self.ids[name].clone()
    }

    pub fn last_claim(&self, name: &str) -> ClaimedExecution {
        self.claims[name].last().cloned().expect("claimed")
    }

    /// Formats an error as its code (with the reconciliation slots where present).
    pub fn err(&self, e: &EngineError) -> String {
        match e.root() {
            EngineError::Contention(ContentionKind::ExecutionNotActive {
                terminal_outcome,
                lease_epoch,
                lifecycle_phase,
                ..
            }) => format!(
                "error execution_not_active [{terminal_outcome} epoch={lease_epoch} {lifecycle_phase}]"
            ),
            EngineError::Validation { detail, .. } if !detail.is_empty() => {
                format!("error {} ({detail})", e.code().unwrap_or("?"))
            }
            _ => format!("error {}", e.code().unwrap_or("?")),
        }
    }

    /// Moves time on by `ms` (scaled by [`Harness::ms`]): exactly, on a
    /// simulated clock; in real-TTL mode by waiting until the backend's clock
    /// reads at least its reading at the call plus the scaled duration.
    pub async fn advance(&mut self, ms: u64) {
        let now = match &self.time {
            TimeSource::Simulated(clock) => clock.advance(ms),
            TimeSource::Real => self.wait_past(self.ms_i(ms)).await,
        };
        let line = format!("-- clock {}", self.t(now));
        self.say(line);
    }

    /// Waits (in short sleeps) until the backend's clock has passed its
    /// current reading by `ms`; returns the reading that passed it. This is
    /// waiting for time to pass, which is what the case is about.
    async fn wait_past(&self, ms: i64) -> i64 {
        let target = self.now().await.saturating_add(ms);
        let started = std::time::Instant::now();
        let stuck = Duration::from_millis(REAL_TIME_STUCK_MS.saturating_add(u64::try_from(ms).unwrap_or(0)));
        loop {
            let now = self.now().await;
            if now >= target {
                return now;
            }
            assert!(
                started.elapsed() < stuck,
                "the backend's clock did not reach {target} within {stuck:?} (it reads {now})"
            );
            let gap = u64::try_from(target - now).unwrap_or(1).clamp(1, REAL_TIME_POLL_MS_MAX);
            tokio::time::sleep(Duration::from_millis(gap)).await;
        }
    }

    /// Creates an execution named `name`, letting `f` adjust the args.
    pub async fn create_with(&mut self, name: &str, f: impl FnOnce(&mut CreateExecutionArgs)) {
        let u = self.uuid();
        let partition = if self.one_partition { 0 } else { self.ids.len() as u16 % self.partitions };
        let id = ExecutionId::from_parts(partition, u);
        self.ids.insert(name.to_owned(), id.clone());
        let mut args = CreateExecutionArgs::new(id, "ns", LaneId::new(LANE), "task");
        f(&mut args);
        let line = match self.b.create_execution(args).await {
            Ok(CreateExecutionOutcome::Created { public_state, .. }) => {
                format!("create {name} -> {public_state}")
            }
            Ok(other) => format!("create {name} -> {other:?}"),
            Err(e) => format!("create {name} -> {}", self.err(&e)),
        };
        self.say(line);
    }

    pub async fn create(&mut self, name: &str) {
        self.create_with(name, |_| {}).await;
    }

    pub fn worker(w: &str) -> (WorkerId, WorkerInstanceId) {
        (WorkerId::new(w), WorkerInstanceId::new(format!("{w}-1")))
    }

    pub fn grant_args(&self, name: &str, w: &str, caps: &[&str]) -> IssueClaimGrantArgs {
        let mut a = self.grant_args_for(self.id(name), w);
        a.worker_capabilities = CapabilitySet::new(caps.iter().copied());
        a
    }

    pub fn grant_args_for(&self, execution_id: ExecutionId, w: &str) -> IssueClaimGrantArgs {
        let caps: [&str; 0] = [];
        let (worker_id, worker_instance_id) = Self::worker(w);
        IssueClaimGrantArgs {
            execution_id,
            worker_id,
            worker_instance_id,
            lane_id: LaneId::new(LANE),
            capability_hash: String::new(),
            grant_ttl_ms: self.grant_ttl_ms,
            route_snapshot_json: String::new(),
            admission_summary: String::new(),
            worker_capabilities: CapabilitySet::new(caps.iter().copied()),
        }
    }

    pub async fn grant(&mut self, name: &str, w: &str, caps: &[&str]) -> Result<(), EngineError> {
        let args = self.grant_args(name, w, caps);
        let r = self.b.issue_claim_grant(args).await;
        let line = match &r {
            Ok(IssueClaimGrantOutcome::Granted(g)) => {
                format!("grant {name} to {w} -> granted until {}", self.t(g.expires_at_ms))
            }
            Ok(other) => format!("grant {name} to {w} -> {other:?}"),
            Err(e) => format!("grant {name} to {w} -> {}", self.err(e)),
        };
        self.say(line);
        r.map(|_| ())
    }

    fn record_claim(&mut self, name: &str, c: ClaimedExecution, verb: &str, w: &str) {
        let line = format!(
            "{verb} {name} by {w} -> attempt #{} ({}) epoch {} expires {}",
            c.attempt_index,
            c.attempt_type,
            c.lease_epoch,
            self.t(c.lease_expires_at)
        );
        self.claims.entry(name.to_owned()).or_default().push(c);
        self.say(line);
    }

    pub async fn claim(&mut self, name: &str, w: &str) -> Result<(), EngineError> {
        let (worker_id, worker_instance_id) = Self::worker(w);
        let lease_id = LeaseId::from_uuid(self.name_uuid("L"));
        let attempt_id = AttemptId::from_uuid(self.name_uuid("A"));
        let args = ClaimExecutionArgs {
            execution_id: self.id(name),
            worker_id,
            worker_instance_id,
            lane_id: LaneId::new(LANE),
            lease_id,
            lease_ttl_ms: self.lease_ttl_ms,
            attempt_id,
            attempt_policy_json: String::new(),
            attempt_timeout_ms: None,
            execution_deadline_at: None,
        };
        match self.b.claim_execution(args).await {
            Ok(c) => {
                self.record_claim(name, c, "claim", w);
                Ok(())
            }
            Err(e) => {
                let line = format!("claim {name} by {w} -> {}", self.err(&e));
                self.say(line);
                Err(e)
            }
        }
    }

    /// Grant then claim.
    pub async fn grant_claim(&mut self, name: &str, w: &str) {
        if self.grant(name, w, &[]).await.is_ok() {
            let _ = self.claim(name, w).await;
        }
    }

    pub async fn claim_resumed(&mut self, name: &str, w: &str) -> Result<(), EngineError> {
        let (worker_id, worker_instance_id) = Self::worker(w);
        let lease_id = LeaseId::from_uuid(self.name_uuid("L"));
        let args = ClaimResumedExecutionArgs {
            execution_id: self.id(name),
            worker_id,
            worker_instance_id,
            lane_id: LaneId::new(LANE),
            lease_id,
            lease_ttl_ms: self.lease_ttl_ms,
            remaining_attempt_timeout_ms: None,
        };
        match self.b.claim_resumed_execution(args).await {
            Ok(c) => {
                self.record_claim(name, c, "claim-resumed", w);
                Ok(())
            }
            Err(e) => {
                let line = format!("claim-resumed {name} by {w} -> {}", self.err(&e));
                self.say(line);
                Err(e)
            }
        }
    }

    /// In real-TTL mode, renews `name`'s latest lease down to `self.ms(ttl_ms)`
    /// so it can expire while the checks before it ran on a lease held for
    /// [`Harness::hold`]; `ttl_ms` is the TTL the claim was made with, so on a
    /// simulated clock (where the lease already has it) this does nothing.
    pub async fn shorten_lease(&mut self, name: &str, ttl_ms: u64) {
        if !self.real_time() {
            return;
        }
        let c = self.last_claim(name);
        let args = RenewLeaseArgs {
            execution_id: c.execution_id.clone(),
            attempt_index: c.attempt_index,
            fence: Some(self.fence(name, None)),
            lease_ttl_ms: self.ms(ttl_ms),
            lease_history_grace_ms: 0,
        };
        if let Err(e) = self.b.renew_lease(args).await {
            panic!("shortening the lease of {name}: {e}");
        }
    }

    pub fn fence(&self, name: &str, nth: Option<usize>) -> LeaseFence {
        let cs = &self.claims[name];
        let c = match nth {
            Some(i) => &cs[i],
            None => cs.last().expect("claim"),
        };
        LeaseFence { lease_id: c.lease_id, lease_epoch: c.lease_epoch, attempt_id: c.attempt_id }
    }

    /// Completes with the latest claim (or the `nth` claim for stale tests).
    pub async fn complete_nth(&mut self, name: &str, nth: Option<usize>) -> Result<(), EngineError> {
        let args = CompleteExecutionArgs {
            execution_id: self.id(name),
            fence: Some(self.fence(name, nth)),
            result_payload: Some(b"done".to_vec()),
            source: CancelSource::LeaseHolder,
        };
        let r = self.b.complete_execution(args).await;
        let tag = nth.map(|i| format!(" (lease #{i})")).unwrap_or_default();
        let line = match &r {
            Ok(_) => format!("complete {name}{tag} -> completed"),
            Err(e) => format!("complete {name}{tag} -> {}", self.err(e)),
        };
        self.say(line);
        r.map(|_| ())
    }

    pub async fn complete(&mut self, name: &str) -> Result<(), EngineError> {
        self.complete_nth(name, None).await
    }

    pub async fn fail_nth(
        &mut self,
        name: &str,
        nth: Option<usize>,
        policy: Option<&str>,
    ) -> Result<(), EngineError> {
        let args = FailExecutionArgs {
            execution_id: self.id(name),
            fence: Some(self.fence(name, nth)),
            failure_reason: "boom".into(),
            failure_category: "transient".into(),
            retry_policy_json: policy.map(str::to_owned),
            source: CancelSource::LeaseHolder,
        };
        let r = self.b.fail_execution(args).await;
        let tag = nth.map(|i| format!(" (lease #{i})")).unwrap_or_default();
        let line = match &r {
            Ok(FailOutcome::RetryScheduled { delay_until }) => {
                format!("fail {name}{tag} -> retry scheduled at {}", self.t(*delay_until))
            }
            Ok(o) => format!("fail {name}{tag} -> {o:?}"),
            Err(e) => format!("fail {name}{tag} -> {}", self.err(e)),
        };
        self.say(line);
        r.map(|_| ())
    }

    pub async fn fail(&mut self, name: &str) -> Result<(), EngineError> {
        self.fail_nth(name, None, None).await
    }

    pub async fn renew_nth(&mut self, name: &str, nth: Option<usize>) -> Result<(), EngineError> {
        let c = match nth {
            Some(i) => self.claims[name][i].clone(),
            None => self.last_claim(name),
        };
        let r = self.b.renew(&c.handle).await;
        let tag = nth.map(|i| format!(" (lease #{i})")).unwrap_or_default();
        let line = match &r {
            Ok(l) => format!("renew {name}{tag} -> expires {}", self.t(l.expires_at_ms)),
            Err(e) => format!("renew {name}{tag} -> {}", self.err(e)),
        };
        self.say(line);
        r.map(|_| ())
    }

    pub async fn cancel(&mut self, name: &str) -> Result<(), EngineError> {
        let args = CancelExecutionArgs {
            execution_id: self.id(name),
            reason: "operator".into(),
            source: CancelSource::OperatorOverride,
            lease_id: None,
            lease_epoch: None,
        };
        let r = self.b.cancel_execution(args).await;
        let line = match &r {
            Ok(CancelOutcome::Cancelled { from_phase, .. }) => {
                format!("cancel {name} -> cancelled from {from_phase}")
            }
            Ok(o) => format!("cancel {name} -> {o:?}"),
            Err(e) => format!("cancel {name} -> {}", self.err(e)),
        };
        self.say(line);
        r.map(|_| ())
    }

    pub async fn reclaim(&mut self, name: &str, w: &str, cap: Option<u32>) {
        let g = self.grant_args(name, w, &[]);
        let line = match self.b.issue_reclaim_grant(g).await {
            Ok(IssueReclaimGrantOutcome::Granted(g)) => {
                format!("reclaim-grant {name} to {w} -> granted until {}", self.t(g.expires_at_ms))
            }
            Ok(o) => format!("reclaim-grant {name} to {w} -> {o:?}"),
            Err(e) => format!("reclaim-grant {name} to {w} -> {}", self.err(&e)),
        };
        self.say(line);
        let (worker_id, worker_instance_id) = Self::worker(w);
        let args = ReclaimExecutionArgs {
            execution_id: self.id(name),
            worker_id,
            worker_instance_id,
            lane_id: LaneId::new(LANE),
            lease_id: LeaseId::from_uuid(self.name_uuid("L")),
            lease_ttl_ms: self.lease_ttl_ms,
            attempt_id: AttemptId::from_uuid(self.name_uuid("A")),
            attempt_policy_json: String::new(),
            max_reclaim_count: cap,
        };
        match self.b.reclaim_execution(args).await {
            Ok(ReclaimExecutionOutcome::Claimed(c)) => self.record_claim(name, c, "reclaim", w),
            Ok(o) => {
                let line = format!("reclaim {name} by {w} -> {o:?}");
                self.say(line);
            }
            Err(e) => {
                let line = format!("reclaim {name} by {w} -> {}", self.err(&e));
                self.say(line);
            }
        }
    }

    pub async fn scan(&mut self, kind: ScannerKind) {
        let mut total = ScanReport::default();
        for p in 0..self.partitions {
            let r = self.b.run_scanner(kind, p, 50).await.expect("scanner");
            total.examined += r.examined;
            total.acted += r.acted;
        }
        self.say(format!("scan {kind:?} -> examined {} acted {}", total.examined, total.acted));
    }

    /// Logs the state vector and counters of an execution.
    pub async fn show(&mut self, name: &str) {
        let snap = self.b.describe_execution(&self.id(name)).await.expect("describe");
        let line = match snap {
            None => format!("state {name}: missing"),
            Some(s) => format!(
                "state {name}: {} [{}/{}/{}/{}/{}/{}] epoch={} attempts={} retries={} reclaims={} started={} done={}",
                s.public_state,
                s.state.lifecycle_phase,
                s.state.ownership_state,
                s.state.eligibility_state,
                s.state.blocking_reason,
                s.state.terminal_outcome,
                s.state.attempt_state,
                s.lease_epoch,
                s.total_attempt_count,
                s.retry_count,
                s.lease_reclaim_count,
                s.started_at.map(|t| self.t(t)).unwrap_or_else(|| "-".into()),
                s.completed_at.map(|t| self.t(t)).unwrap_or_else(|| "-".into()),
            ),
        };
        self.say(line);
    }

    /// Logs the lane's eligible order on every partition, best first.
    pub async fn eligible(&mut self) {
        let mut all = Vec::new();
        for p in 0..self.partitions {
            let args = ScanEligibleArgs { lane_id: LaneId::new(LANE), partition: p, limit: 100 };
            all.extend(self.b.scan_eligible_executions(args).await.expect("scan"));
        }
        let names: Vec<String> = all.iter().map(|id| self.norm(id.as_str())).collect();
        self.say(format!("eligible: [{}]", names.join(", ")));
    }

    /// The backend's `now`: the simulated clock's, else `server_time_ms`.
    pub async fn now(&self) -> i64 {
        match &self.time {
            TimeSource::Simulated(clock) => clock.now_ms(),
            TimeSource::Real => match self.b.server_time_ms().await {
                Ok(t) => t,
                Err(e) => panic!("server_time_ms: {e}"),
            },
        }
    }
}

impl Harness {
    /// A deterministic dump of the store: the backend's own when it offers one,
    /// else everything readable through the trait.
    pub async fn dump(&self) -> String {
        match &self.inspect {
            Some(f) => f(),
            None => crate::snapshot::read_all(self.b.as_ref(), self.partitions).await,
        }
    }
}

/// Asserts a call fails with `code` and leaves the store unchanged.
#[macro_export]
macro_rules! rejects {
    ($h:expr, $call:expr, $code:expr) => {{
        let before = $h.dump().await;
        let r = $call.await;
        match &r {
            Ok(v) => panic!("expected {} from {}, got Ok({:?})", $code, stringify!($call), v),
            Err(e) => assert_eq!(e.code(), Some($code), "{} -> {e}", stringify!($call)),
        }
        assert_eq!(before, $h.dump().await, "{} wrote on error {}", stringify!($call), $code);
    }};
}

/// Asserts a call fails with `code` and changes the store (spec 01 §5.6 writes).
#[macro_export]
macro_rules! rejects_with_write {
    ($h:expr, $call:expr, $code:expr) => {{
        let before = $h.dump().await;
        let r = $call.await;
        match &r {
            Ok(v) => panic!("expected {} from {}, got Ok({:?})", $code, stringify!($call), v),
            Err(e) => assert_eq!(e.code(), Some($code), "{} -> {e}", stringify!($call)),
        }
        assert_ne!(before, $h.dump().await, "{} should have written", stringify!($call));
    }};
}
