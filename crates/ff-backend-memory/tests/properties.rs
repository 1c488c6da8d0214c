//! Property: random sequences of the execution-core contracts under random clock
//! advances never violate the state invariants (one owner, epoch monotonic,
//! public state consistent, indexes consistent with states) and never surface
//! an untyped error. A failure prints the seed and the shrunk sequence.

use std::collections::BTreeMap;
use std::sync::Arc;

use ff_backend_memory::{MemoryBackend, new_sim_backend};
use ff_core::contracts::*;
use ff_core::state::BlockingReason;
use ff_core::{
    AttemptId, CancelSource, Clock, EngineBackend, EngineError, ExecutionId, LaneId, LeaseId,
    PartitionConfig, SimClock, WorkerId, WorkerInstanceId,
};
use proptest::prelude::*;
use proptest::test_runner::{Config, RngAlgorithm, TestCaseError, TestRng, TestRunner};
use uuid::Uuid;

const SLOTS: usize = 5;

#[derive(Debug, Clone)]
enum Op {
    Create { slot: usize, delay_ms: Option<u64>, retries: u8 },
    GrantClaim { slot: usize, worker: u8 },
    Complete { slot: usize, back: usize },
    Fail { slot: usize, back: usize },
    Renew { slot: usize, back: usize },
    Cancel { slot: usize },
    Delay { slot: usize, ms: u64 },
    WaitChildren { slot: usize },
    Revoke { slot: usize },
    Reclaim { slot: usize, worker: u8 },
    ClaimResumed { slot: usize, worker: u8 },
    Replay { slot: usize },
    Block { slot: usize },
    Unblock { slot: usize },
    Priority { slot: usize, p: i32 },
    Expire { slot: usize, deadline: bool },
    Advance { ms: u64 },
    Scan { kind: u8 },
}

fn op() -> impl Strategy<Value = Op> {
    let slot = 0..SLOTS;
    prop_oneof![
        (slot.clone(), proptest::option::of(0u64..3000), 0u8..3)
            .prop_map(|(slot, delay_ms, retries)| Op::Create { slot, delay_ms, retries }),
        (slot.clone(), 0u8..3).prop_map(|(slot, worker)| Op::GrantClaim { slot, worker }),
        (slot.clone(), 0usize..3).prop_map(|(slot, back)| Op::Complete { slot, back }),
        (slot.clone(), 0usize..3).prop_map(|(slot, back)| Op::Fail { slot, back }),
        (slot.clone(), 0usize..3).prop_map(|(slot, back)| Op::Renew { slot, back }),
        slot.clone().prop_map(|slot| Op::Cancel { slot }),
        (slot.clone(), prop_oneof![Just(0u64), 0u64..3000]).prop_map(|(slot, ms)| Op::Delay { slot, ms }),
        slot.clone().prop_map(|slot| Op::WaitChildren { slot }),
        slot.clone().prop_map(|slot| Op::Revoke { slot }),
        (slot.clone(), 0u8..3).prop_map(|(slot, worker)| Op::Reclaim { slot, worker }),
        (slot.clone(), 0u8..3).prop_map(|(slot, worker)| Op::ClaimResumed { slot, worker }),
        (slot.clone(), 0u8..3).prop_map(|(slot, worker)| Op::ClaimResumed { slot, worker }),
        slot.clone().prop_map(|slot| Op::Replay { slot }),
        slot.clone().prop_map(|slot| Op::Block { slot }),
        slot.clone().prop_map(|slot| Op::Unblock { slot }),
        (slot.clone(), -10i32..10_000).prop_map(|(slot, p)| Op::Priority { slot, p }),
        (slot.clone(), any::<bool>()).prop_map(|(slot, deadline)| Op::Expire { slot, deadline }),
        (0u64..15_000).prop_map(|ms| Op::Advance { ms }),
        (0u8..4).prop_map(|kind| Op::Scan { kind }),
    ]
}

struct Model {
    b: Arc<MemoryBackend>,
    clock: SimClock,
    ids: Vec<ExecutionId>,
    claims: BTreeMap<usize, Vec<ClaimedExecution>>,
    epochs: BTreeMap<usize, u64>,
    next: u64,
}

impl Model {
    fn new() -> Self {
        let clock = SimClock::default();
        let cfg = PartitionConfig { num_flow_partitions: 4, ..PartitionConfig::default() };
        let b = Arc::new(new_sim_backend(clock.clone(), cfg));
        let ids = (0..SLOTS)
            .map(|i| ExecutionId::from_parts((i % 4) as u16, Uuid::from_u64_pair(9, i as u64)))
            .collect();
        Self { b, clock, ids, claims: BTreeMap::new(), epochs: BTreeMap::new(), next: 0 }
    }

    fn uuid(&mut self) -> Uuid {
        self.next += 1;
        Uuid::from_u64_pair(1, self.next)
    }

    fn worker(w: u8) -> (WorkerId, WorkerInstanceId) {
        (WorkerId::new(format!("w{w}")), WorkerInstanceId::new(format!("w{w}-1")))
    }

    fn claim_at(&self, slot: usize, back: usize) -> Option<ClaimedExecution> {
        let cs = self.claims.get(&slot)?;
        cs.len().checked_sub(1 + back).map(|i| cs[i].clone())
    }

    async fn apply(&mut self, op: &Op) -> Result<(), EngineError> {
        let lane = LaneId::new("default");
        match *op {
            Op::Create { slot, delay_ms, retries } => {
                let mut a = CreateExecutionArgs::new(self.ids[slot].clone(), "ns", lane, "k");
                a.delay_until = delay_ms.map(|d| self.clock.now_ms() + d as i64);
                a.policy_json = format!(
                    r#"{{"retry_policy":{{"max_retries":{retries},"backoff":{{"type":"fixed","delay_ms":700}}}},"max_reclaim_count":3}}"#
                );
                a.execution_deadline_at = Some(self.clock.now_ms() + 60_000);
                self.b.create_execution(a).await.map(|_| ())
            }
            Op::GrantClaim { slot, worker } => {
                let (worker_id, worker_instance_id) = Self::worker(worker);
                let g = IssueClaimGrantArgs {
                    execution_id: self.ids[slot].clone(),
                    worker_id: worker_id.clone(),
                    worker_instance_id: worker_instance_id.clone(),
                    lane_id: lane.clone(),
                    capability_hash: String::new(),
                    grant_ttl_ms: 1000,
                    route_snapshot_json: String::new(),
                    admission_summary: String::new(),
                    worker_capabilities: CapabilitySet::default(),
                };
                self.b.issue_claim_grant(g).await?;
                let a = ClaimExecutionArgs {
                    execution_id: self.ids[slot].clone(),
                    worker_id,
                    worker_instance_id,
                    lane_id: lane,
                    lease_id: LeaseId::from_uuid(self.uuid()),
                    lease_ttl_ms: 5_000,
                    attempt_id: AttemptId::from_uuid(self.uuid()),
                    attempt_policy_json: String::new(),
                    attempt_timeout_ms: Some(20_000),
                    execution_deadline_at: None,
                };
                let c = self.b.claim_execution(a).await?;
                self.record(slot, c)
            }
            Op::Complete { slot, back } => match self.claim_at(slot, back) {
                Some(c) => self.b.complete(&c.handle, None).await,
                None => Ok(()),
            },
            Op::Fail { slot, back } => match self.claim_at(slot, back) {
                Some(c) => {
                    self.b.fail(&c.handle, FailureReason::new("x"), FailureClass::Transient).await.map(|_| ())
                }
                None => Ok(()),
            },
            Op::Renew { slot, back } => match self.claim_at(slot, back) {
                Some(c) => self.b.renew(&c.handle).await.map(|_| ()),
                None => Ok(()),
            },
            Op::Cancel { slot } => {
                let a = CancelExecutionArgs {
                    execution_id: self.ids[slot].clone(),
                    reason: "r".into(),
                    source: CancelSource::OperatorOverride,
                    lease_id: None,
                    lease_epoch: None,
                };
                self.b.cancel_execution(a).await.map(|_| ())
            }
            Op::Delay { slot, ms } => match self.claim_at(slot, 0) {
                Some(c) => self.b.delay(&c.handle, self.clock.now_ms() + ms as i64).await,
                None => Ok(()),
            },
            Op::WaitChildren { slot } => match self.claim_at(slot, 0) {
                Some(c) => self.b.wait_children(&c.handle).await,
                None => Ok(()),
            },
            Op::Revoke { slot } => {
                let a = RevokeLeaseArgs {
                    execution_id: self.ids[slot].clone(),
                    expected_lease_id: None,
                    reason: String::new(),
                };
                self.b.revoke_lease(a).await.map(|_| ())
            }
            Op::Reclaim { slot, worker } => self.reclaim(slot, worker).await,
            Op::ClaimResumed { slot, worker } => self.claim_resumed(slot, worker).await,
            Op::Replay { slot } => self.b.replay_execution(&self.ids[slot]).await.map(|_| ()),
            Op::Block { slot } => {
                let a = BlockExecutionArgs {
                    execution_id: self.ids[slot].clone(),
                    reason: BlockingReason::WaitingForBudget,
                    detail: String::new(),
                };
                self.b.block_execution_for_admission(a).await
            }
            Op::Unblock { slot } => {
                let a = UnblockExecutionArgs { execution_id: self.ids[slot].clone(), expected_reason: None };
                self.b.unblock_execution(a).await
            }
            Op::Priority { slot, p } => {
                let a = ChangePriorityArgs { execution_id: self.ids[slot].clone(), new_priority: p };
                self.b.change_priority(a).await.map(|_| ())
            }
            Op::Expire { slot, deadline } => {
                let phase =
                    if deadline { ExpirePhase::ExecutionDeadline } else { ExpirePhase::AttemptTimeout };
                self.b.expire_execution(&self.ids[slot], phase).await.map(|_| ())
            }
            Op::Advance { ms } => {
                self.clock.advance(ms);
                Ok(())
            }
            Op::Scan { kind } => {
                let kind = ScannerKind::ALL[usize::from(kind) % ScannerKind::ALL.len()];
                for p in 0..4 {
                    self.b.run_scanner(kind, p, 2).await?;
                }
                Ok(())
            }
        }
    }

    async fn reclaim(&mut self, slot: usize, worker: u8) -> Result<(), EngineError> {
        let (worker_id, worker_instance_id) = Self::worker(worker);
        let g = IssueClaimGrantArgs {
            execution_id: self.ids[slot].clone(),
            worker_id: worker_id.clone(),
            worker_instance_id: worker_instance_id.clone(),
            lane_id: LaneId::new("default"),
            capability_hash: String::new(),
            grant_ttl_ms: 1000,
            route_snapshot_json: String::new(),
            admission_summary: String::new(),
            worker_capabilities: CapabilitySet::default(),
        };
        self.b.issue_reclaim_grant(g).await?;
        let a = ReclaimExecutionArgs {
            execution_id: self.ids[slot].clone(),
            worker_id,
            worker_instance_id,
            lane_id: LaneId::new("default"),
            lease_id: LeaseId::from_uuid(self.uuid()),
            lease_ttl_ms: 5_000,
            attempt_id: AttemptId::from_uuid(self.uuid()),
            attempt_policy_json: String::new(),
            max_reclaim_count: None,
        };
        if let ReclaimExecutionOutcome::Claimed(c) = self.b.reclaim_execution(a).await? {
            self.record(slot, c)?;
        }
        Ok(())
    }

    async fn claim_resumed(&mut self, slot: usize, worker: u8) -> Result<(), EngineError> {
        // A self-delayed execution must be promoted before it can be granted again.
        self.b.promote_delayed(&LaneId::new("default"), &self.ids[slot]).await?;
        let (worker_id, worker_instance_id) = Self::worker(worker);
        let g = IssueClaimGrantArgs {
            execution_id: self.ids[slot].clone(),
            worker_id: worker_id.clone(),
            worker_instance_id: worker_instance_id.clone(),
            lane_id: LaneId::new("default"),
            capability_hash: String::new(),
            grant_ttl_ms: 1000,
            route_snapshot_json: String::new(),
            admission_summary: String::new(),
            worker_capabilities: CapabilitySet::default(),
        };
        self.b.issue_claim_grant(g).await?;
        let a = ClaimResumedExecutionArgs {
            execution_id: self.ids[slot].clone(),
            worker_id,
            worker_instance_id,
            lane_id: LaneId::new("default"),
            lease_id: LeaseId::from_uuid(self.uuid()),
            lease_ttl_ms: 5_000,
            remaining_attempt_timeout_ms: None,
        };
        let c = self.b.claim_resumed_execution(a).await?;
        self.record(slot, c)
    }

    fn record(&mut self, slot: usize, c: ClaimedExecution) -> Result<(), EngineError> {
        let last = self.epochs.insert(slot, c.lease_epoch).unwrap_or(0);
        if c.lease_epoch != last + 1 {
            return Err(EngineError::invalid_input(format!("epoch {} after {last}", c.lease_epoch)));
        }
        self.claims.entry(slot).or_default().push(c);
        Ok(())
    }
}

/// Errors a contract may legitimately return; anything else fails the property.
fn typed(e: &EngineError) -> bool {
    matches!(
        e.root(),
        EngineError::NotFound { .. }
            | EngineError::Contention(_)
            | EngineError::Conflict(_)
            | EngineError::State(_)
            | EngineError::Validation { .. }
    ) && !matches!(e.root(), EngineError::Validation { detail, .. } if detail.starts_with("epoch"))
}

/// Which op kinds succeeded at least once over the whole run (coverage marks).
static SUCCEEDED: std::sync::Mutex<std::collections::BTreeSet<&'static str>> =
    std::sync::Mutex::new(std::collections::BTreeSet::new());

fn kind(op: &Op) -> &'static str {
    match op {
        Op::Create { .. } => "create",
        Op::GrantClaim { .. } => "claim",
        Op::Complete { .. } => "complete",
        Op::Fail { .. } => "fail",
        Op::Renew { .. } => "renew",
        Op::Cancel { .. } => "cancel",
        Op::Delay { .. } => "delay",
        Op::WaitChildren { .. } => "wait_children",
        Op::Revoke { .. } => "revoke",
        Op::Reclaim { .. } => "reclaim",
        Op::ClaimResumed { .. } => "claim_resumed",
        Op::Replay { .. } => "replay",
        Op::Block { .. } => "block",
        Op::Unblock { .. } => "unblock",
        Op::Priority { .. } => "priority",
        Op::Expire { .. } => "expire",
        Op::Advance { .. } => "advance",
        Op::Scan { .. } => "scan",
    }
}

fn check(ops: &[Op]) -> Result<(), TestCaseError> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .map_err(|e| TestCaseError::fail(e.to_string()))?;
    rt.block_on(async {
        let mut m = Model::new();
        // Every slot starts created, so most generated ops reach a real execution.
        for slot in 0..SLOTS {
            let create = Op::Create { slot, delay_ms: None, retries: (slot % 3) as u8 };
            m.apply(&create).await.map_err(|e| TestCaseError::fail(e.to_string()))?;
        }
        let mut epochs = [0u64; SLOTS];
        for (i, op) in ops.iter().enumerate() {
            match m.apply(op).await {
                Ok(()) => {
                    if let Ok(mut s) = SUCCEEDED.lock() {
                        s.insert(kind(op));
                    }
                }
                Err(e) => prop_assert!(typed(&e), "step {i} {op:?}: untyped or invariant error {e}"),
            }
            let v = m.b.runner().invariant_violations();
            prop_assert!(v.is_empty(), "step {i} {op:?}: {v:?}");
            for (slot, last) in epochs.iter_mut().enumerate() {
                let snap =
                    m.b.describe_execution(&m.ids[slot])
                        .await
                        .map_err(|e| TestCaseError::fail(e.to_string()))?;
                let epoch = snap.map_or(0, |s| s.lease_epoch);
                prop_assert!(
                    epoch >= *last,
                    "step {i} {op:?}: epoch of slot {slot} went from {last} to {epoch}"
                );
                *last = epoch;
            }
        }
        Ok(())
    })
}

#[test]
fn random_sequences_keep_state_invariants() {
    let seed: u64 =
        std::env::var("FF_PROPTEST_SEED").ok().and_then(|s| s.parse().ok()).unwrap_or(0x5eed_f10f);
    let cases: u32 = std::env::var("FF_PROPTEST_CASES").ok().and_then(|s| s.parse().ok()).unwrap_or(512);
    let mut bytes = [0u8; 32];
    bytes[..8].copy_from_slice(&seed.to_le_bytes());
    let rng = TestRng::from_seed(RngAlgorithm::ChaCha, &bytes);
    let config = Config { cases, failure_persistence: None, ..Config::default() };
    let mut runner = TestRunner::new_with_rng(config, rng);
    let result = runner.run(&proptest::collection::vec(op(), 1..80), |ops| check(&ops));
    if let Err(e) = result {
        panic!("property failed; reproduce with FF_PROPTEST_SEED={seed}: {e:?}");
    }
    // The generator must actually reach every contract, not only its error paths.
    let seen = SUCCEEDED.lock().map(|s| s.clone()).unwrap_or_default();
    for k in [
        "create",
        "claim",
        "complete",
        "fail",
        "renew",
        "cancel",
        "delay",
        "wait_children",
        "revoke",
        "reclaim",
        "claim_resumed",
        "replay",
        "block",
        "unblock",
        "priority",
        "expire",
    ] {
        assert!(seen.contains(k), "no successful {k} in {cases} cases (seed {seed}); seen {seen:?}");
    }
}
