//! Differential property tests: random operation sequences with random clock
//! advances run on the backend under test and on the memory reference; the
//! normalised outcomes must match step by step and the invariants hold after
//! every step. A failure shrinks to a minimal sequence and names the seed.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use ff_core::contracts::*;
use ff_core::state::BlockingReason;
use ff_core::stream::{Frame, FrameKind, StreamMode};
use ff_core::suspension::*;
use ff_core::{
    AttemptId, CancelSource, Clock, EngineBackend, EngineError, ExecutionId, LaneId, LeaseId, SimClock,
    WorkerId, WorkerInstanceId,
};
use ff_core::{ContractFamily, SignalId, SuspensionId, WaitpointId};
use proptest::prelude::*;
use proptest::test_runner::{Config, RngAlgorithm, TestCaseError, TestRng, TestRunner};
use uuid::Uuid;

use crate::{Case, Ctx, Factory, Fixture, Group};

/// Execution slots the generator addresses.
pub const SLOTS: usize = 5;

/// One generated operation.
#[derive(Debug, Clone)]
#[allow(missing_docs)]
pub enum Op {
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
    Suspend { slot: usize, cond: u8, timeout: Option<u8> },
    Signal { slot: usize, go: bool },
    Resume { slot: usize, delay_ms: u64 },
    Append { slot: usize, summary: bool },
}

/// The operation generator.
pub fn op() -> impl Strategy<Value = Op> {
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
        (0u8..6).prop_map(|kind| Op::Scan { kind }),
        (slot.clone(), 0u8..3, proptest::option::of(0u8..5)).prop_map(|(slot, cond, timeout)| Op::Suspend {
            slot,
            cond,
            timeout
        }),
        (slot.clone(), any::<bool>()).prop_map(|(slot, go)| Op::Signal { slot, go }),
        (slot.clone(), prop_oneof![Just(0u64), 0u64..2000])
            .prop_map(|(slot, delay_ms)| Op::Resume { slot, delay_ms }),
        (slot.clone(), any::<bool>()).prop_map(|(slot, summary)| Op::Append { slot, summary }),
    ]
}

/// One backend driven by generated operations.
pub struct Model {
    b: Arc<dyn EngineBackend>,
    clock: SimClock,
    ids: Vec<ExecutionId>,
    claims: BTreeMap<usize, Vec<ClaimedExecution>>,
    epochs: BTreeMap<usize, u64>,
    next: u64,
    tokens: BTreeMap<usize, (WaitpointId, String)>,
}

impl Model {
    /// A model over a backend and its clock.
    pub fn new(b: Arc<dyn EngineBackend>, clock: SimClock) -> Self {
        let parts = b.partition_config().num_flow_partitions.clamp(1, 4);
        let ids = (0..SLOTS)
            .map(|i| ExecutionId::from_parts((i as u16) % parts, Uuid::from_u64_pair(9, i as u64)))
            .collect();
        Self {
            b,
            clock,
            ids,
            claims: BTreeMap::new(),
            epochs: BTreeMap::new(),
            next: 0,
            tokens: BTreeMap::new(),
        }
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

    /// Applies an operation; the outcome in normalised text.
    pub async fn apply(&mut self, op: &Op) -> Result<String, EngineError> {
        let lane = LaneId::new("default");
        match *op {
            Op::Create { slot, delay_ms, retries } => {
                let mut a = CreateExecutionArgs::new(self.ids[slot].clone(), "ns", lane, "k");
                a.delay_until = delay_ms.map(|d| self.clock.now_ms() + d as i64);
                a.policy_json = format!(
                    r#"{{"retry_policy":{{"max_retries":{retries},"backoff":{{"type":"fixed","delay_ms":700}}}},"max_reclaim_count":3}}"#
                );
                a.execution_deadline_at = Some(self.clock.now_ms() + 60_000);
                self.b.create_execution(a).await.map(|o| format!("{o:?}"))
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
                Some(c) => self.b.complete(&c.handle, None).await.map(|o| format!("{o:?}")),
                None => Ok("no claim".into()),
            },
            Op::Fail { slot, back } => match self.claim_at(slot, back) {
                Some(c) => self
                    .b
                    .fail(&c.handle, FailureReason::new("x"), FailureClass::Transient)
                    .await
                    .map(|o| format!("{o:?}")),
                None => Ok("no claim".into()),
            },
            Op::Renew { slot, back } => match self.claim_at(slot, back) {
                Some(c) => self.b.renew(&c.handle).await.map(|o| format!("{o:?}")),
                None => Ok("no claim".into()),
            },
            Op::Cancel { slot } => {
                let a = CancelExecutionArgs {
                    execution_id: self.ids[slot].clone(),
                    reason: "r".into(),
                    source: CancelSource::OperatorOverride,
                    lease_id: None,
                    lease_epoch: None,
                };
                self.b.cancel_execution(a).await.map(|o| format!("{o:?}"))
            }
            Op::Delay { slot, ms } => match self.claim_at(slot, 0) {
                Some(c) => {
                    self.b.delay(&c.handle, self.clock.now_ms() + ms as i64).await.map(|o| format!("{o:?}"))
                }
                None => Ok("no claim".into()),
            },
            Op::WaitChildren { slot } => match self.claim_at(slot, 0) {
                Some(c) => self.b.wait_children(&c.handle).await.map(|o| format!("{o:?}")),
                None => Ok("no claim".into()),
            },
            Op::Revoke { slot } => {
                let a = RevokeLeaseArgs {
                    execution_id: self.ids[slot].clone(),
                    expected_lease_id: None,
                    reason: String::new(),
                };
                self.b.revoke_lease(a).await.map(|o| format!("{o:?}"))
            }
            Op::Reclaim { slot, worker } => self.reclaim(slot, worker).await,
            Op::ClaimResumed { slot, worker } => self.claim_resumed(slot, worker).await,
            Op::Replay { slot } => self.b.replay_execution(&self.ids[slot]).await.map(|o| format!("{o:?}")),
            Op::Block { slot } => {
                let a = BlockExecutionArgs {
                    execution_id: self.ids[slot].clone(),
                    reason: BlockingReason::WaitingForBudget,
                    detail: String::new(),
                };
                self.b.block_execution_for_admission(a).await.map(|o| format!("{o:?}"))
            }
            Op::Unblock { slot } => {
                let a = UnblockExecutionArgs { execution_id: self.ids[slot].clone(), expected_reason: None };
                self.b.unblock_execution(a).await.map(|o| format!("{o:?}"))
            }
            Op::Priority { slot, p } => {
                let a = ChangePriorityArgs { execution_id: self.ids[slot].clone(), new_priority: p };
                self.b.change_priority(a).await.map(|o| format!("{o:?}"))
            }
            Op::Expire { slot, deadline } => {
                let phase =
                    if deadline { ExpirePhase::ExecutionDeadline } else { ExpirePhase::AttemptTimeout };
                self.b.expire_execution(&self.ids[slot], phase).await.map(|o| format!("{o:?}"))
            }
            Op::Advance { ms } => Ok(format!("now {}", self.clock.advance(ms))),
            Op::Suspend { slot, cond, timeout } => self.suspend(slot, cond, timeout).await,
            Op::Signal { slot, go } => self.signal(slot, go).await,
            Op::Resume { slot, delay_ms } => {
                let a =
                    ResumeExecutionArgs { execution_id: self.ids[slot].clone(), resume_delay_ms: delay_ms };
                self.b.resume_execution(a).await.map(|o| format!("{o:?}"))
            }
            Op::Append { slot, summary } => match self.claim_at(slot, 0) {
                Some(c) => {
                    let frame = if summary {
                        Frame::new(format!("{{\"n\":{}}}", self.next).into_bytes(), FrameKind::Event)
                            .with_mode(StreamMode::durable_summary())
                    } else {
                        Frame::new(b"line".to_vec(), FrameKind::Stdout)
                    };
                    self.b.append_frame(&c.handle, frame).await.map(|o| format!("{o:?}"))
                }
                None => Ok("no claim".into()),
            },
            Op::Scan { kind } => {
                let kind = ScannerKind::ALL[usize::from(kind) % ScannerKind::ALL.len()];
                let mut out = Vec::new();
                for p in 0..self.b.partition_config().num_flow_partitions.clamp(1, 4) {
                    out.push(self.b.run_scanner(kind, p, 2).await?);
                }
                Ok(format!("{out:?}"))
            }
        }
    }

    async fn reclaim(&mut self, slot: usize, worker: u8) -> Result<String, EngineError> {
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
        match self.b.reclaim_execution(a).await? {
            ReclaimExecutionOutcome::Claimed(c) => self.record(slot, c),
            other => Ok(format!("{other:?}")),
        }
    }

    async fn claim_resumed(&mut self, slot: usize, worker: u8) -> Result<String, EngineError> {
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

    async fn suspend(&mut self, slot: usize, cond: u8, timeout: Option<u8>) -> Result<String, EngineError> {
        let Some(c) = self.claim_at(slot, 0) else { return Ok("no claim".into()) };
        let wp = WaitpointId::from_uuid(self.uuid());
        let condition = match cond {
            0 => ResumeCondition::Single {
                waitpoint_key: "k".into(),
                matcher: SignalMatcher::ByName("go".into()),
            },
            1 => ResumeCondition::Single { waitpoint_key: "k".into(), matcher: SignalMatcher::Wildcard },
            _ => ResumeCondition::OperatorOnly,
        };
        let binding = WaitpointBinding::Fresh { waitpoint_id: wp, waitpoint_key: "k".into() };
        let mut args = SuspendArgs::new(
            SuspensionId::from_uuid(self.uuid()),
            binding,
            condition,
            SuspensionReasonCode::WaitingForSignal,
        );
        if let Some(t) = timeout {
            let behaviors = [
                TimeoutBehavior::Fail,
                TimeoutBehavior::Cancel,
                TimeoutBehavior::Expire,
                TimeoutBehavior::AutoResumeWithTimeoutSignal,
                TimeoutBehavior::Escalate,
            ];
            args =
                args.with_timeout(self.clock.now_ms() + 3_000, behaviors[usize::from(t) % behaviors.len()]);
        }
        match self.b.suspend(&c.handle, args).await? {
            SuspendOutcome::Suspended { details, .. } => {
                let text = format!("suspended {}", details.primary.waitpoint_token);
                self.tokens.insert(slot, (wp, details.primary.waitpoint_token));
                Ok(text)
            }
            other => Ok(format!("{other:?}")),
        }
    }

    async fn signal(&mut self, slot: usize, go: bool) -> Result<String, EngineError> {
        let Some((wp, token)) = self.tokens.get(&slot).cloned() else { return Ok("no waitpoint".into()) };
        let args = DeliverSignalArgs {
            source_type: "t".into(),
            source_identity: "s".into(),
            ..DeliverSignalArgs::new(
                self.ids[slot].clone(),
                wp,
                SignalId::from_uuid(self.uuid()),
                if go { "go" } else { "noise" },
                token,
            )
        };
        self.b.deliver_signal(args).await.map(|o| format!("{o:?}"))
    }

    fn record(&mut self, slot: usize, c: ClaimedExecution) -> Result<String, EngineError> {
        let last = self.epochs.insert(slot, c.lease_epoch).unwrap_or(0);
        if c.lease_epoch != last + 1 {
            return Err(EngineError::Bug {
                kind: ff_core::error::BugKind::InvariantViolation,
                detail: format!("epoch {} after {last}", c.lease_epoch),
            });
        }
        let text = format!(
            "claimed #{} {} epoch {} expires {}",
            c.attempt_index, c.attempt_type, c.lease_epoch, c.lease_expires_at
        );
        self.claims.entry(slot).or_default().push(c);
        Ok(text)
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
    )
}

/// The op's kind name.
pub fn kind(op: &Op) -> &'static str {
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
        Op::Suspend { .. } => "suspend",
        Op::Signal { .. } => "signal",
        Op::Resume { .. } => "resume",
        Op::Append { .. } => "append",
    }
}

/// The normalised text of a step's result.
fn outcome(r: &Result<String, EngineError>) -> String {
    match r {
        Ok(s) => format!("ok {s}"),
        Err(e) => match e.root() {
            EngineError::Contention(ff_core::error::ContentionKind::ExecutionNotActive {
                terminal_outcome,
                lease_epoch,
                lifecycle_phase,
                ..
            }) => format!("err execution_not_active {terminal_outcome} {lease_epoch} {lifecycle_phase}"),
            _ => format!("err {}", e.code().unwrap_or("untyped")),
        },
    }
}

/// The family an operation needs beyond the execution core, if any.
fn op_family(op: &Op) -> Option<ContractFamily> {
    match op {
        Op::Suspend { .. } | Op::Signal { .. } | Op::Resume { .. } => Some(ContractFamily::Suspension),
        Op::Append { .. } => Some(ContractFamily::Streams),
        Op::Scan { kind } => Some(ScannerKind::ALL[usize::from(*kind) % ScannerKind::ALL.len()].family()),
        _ => None,
    }
}

/// A reference memory backend whose clock starts where the fixture's does.
fn reference(fixture: &Fixture, clock: &SimClock) -> (Arc<dyn EngineBackend>, SimClock) {
    let ref_clock = SimClock::new(clock.now_ms());
    let cfg = fixture.backend.partition_config();
    (Arc::new(ff_backend_memory::new_sim_backend(ref_clock.clone(), cfg)), ref_clock)
}

/// Runs one sequence on a fresh fixture and the reference; `Err` names the first divergence.
pub async fn check_sequence(
    factory: Arc<dyn Factory>,
    ops: Vec<Op>,
) -> Result<BTreeSet<&'static str>, String> {
    let fixture = factory.make().await;
    let clock = fixture.clock.clone().ok_or("differential tests need a simulated clock")?;
    let (ref_b, ref_clock) = reference(&fixture, &clock);
    let mut sut = Model::new(fixture.backend.clone(), clock);
    let mut refm = Model::new(ref_b, ref_clock);
    let mut succeeded = BTreeSet::new();
    let caps = fixture.backend.capabilities();
    if caps.has(ContractFamily::Suspension) {
        for m in [&sut, &refm] {
            m.b.seed_waitpoint_hmac_secret("k1", crate::suspension::SECRET_A)
                .await
                .map_err(|e| e.to_string())?;
        }
    }
    // Operations of families the backend does not claim are left out of the sequence.
    let ops: Vec<Op> = ops.into_iter().filter(|op| op_family(op).is_none_or(|f| caps.has(f))).collect();
    let setup = (0..SLOTS).map(|slot| Op::Create { slot, delay_ms: None, retries: (slot % 3) as u8 });
    for (i, op) in setup.chain(ops.iter().cloned()).enumerate() {
        let got = sut.apply(&op).await;
        if matches!(op, Op::Scan { .. }) && matches!(&got, Err(EngineError::Unavailable { .. })) {
            // A scanner the backend does not run is skipped on both sides.
            continue;
        }
        let want = refm.apply(&op).await;
        if let Err(e) = &got
            && !typed(e)
        {
            return Err(format!("step {i} {op:?}: untyped error {e}"));
        }
        let (g, w) = (outcome(&got), outcome(&want));
        if g != w {
            return Err(format!("step {i} {op:?}: backend {g} != reference {w}"));
        }
        if got.is_ok() {
            succeeded.insert(kind(&op));
        }
        let mut v = crate::snapshot::check_invariants(sut.b.as_ref(), &sut.ids).await;
        if let Some(deep) = &fixture.deep_check {
            v.extend(deep());
        }
        if !v.is_empty() {
            return Err(format!("step {i} {op:?}: invariants violated: {v:?}"));
        }
        for slot in 0..SLOTS {
            let a = sut.b.describe_execution(&sut.ids[slot]).await.map_err(|e| e.to_string())?;
            let b = refm.b.describe_execution(&refm.ids[slot]).await.map_err(|e| e.to_string())?;
            let strip = |s: Option<ExecutionSnapshot>| {
                s.map(|s| {
                    (s.state, s.lease_epoch, s.total_attempt_count, s.retry_count, s.lease_reclaim_count)
                })
            };
            if strip(a.clone()) != strip(b.clone()) {
                return Err(format!(
                    "step {i} {op:?}: slot {slot} state differs: backend {a:?} reference {b:?}"
                ));
            }
        }
    }
    Ok(succeeded)
}

async fn random_sequences_match_reference(ctx: Ctx) {
    let seed = ctx.options.seed;
    let cases = ctx.options.cases.max(1);
    let factory = ctx.factory.clone();
    let handle = tokio::runtime::Handle::current();
    let result = tokio::task::spawn_blocking(move || {
        let mut bytes = [0u8; 32];
        bytes[..8].copy_from_slice(&seed.to_le_bytes());
        let rng = TestRng::from_seed(RngAlgorithm::ChaCha, &bytes);
        let config = Config { cases, failure_persistence: None, ..Config::default() };
        let mut runner = TestRunner::new_with_rng(config, rng);
        let seen = std::sync::Mutex::new(BTreeSet::new());
        let r = runner.run(&proptest::collection::vec(op(), 1..60), |ops| {
            match handle.block_on(check_sequence(factory.clone(), ops)) {
                Ok(s) => {
                    if let Ok(mut all) = seen.lock() {
                        all.extend(s);
                    }
                    Ok(())
                }
                Err(why) => Err(TestCaseError::fail(why)),
            }
        });
        (r.map_err(|e| format!("{e:?}")), seen.into_inner().unwrap_or_default())
    })
    .await;
    let (r, seen) = match result {
        Ok(v) => v,
        Err(e) => panic!("differential runner crashed: {e}"),
    };
    if let Err(e) = r {
        panic!("diverged from the reference; reproduce with --seed {seed}: {e}");
    }
    if cases >= 256 {
        for k in [
            "claim",
            "complete",
            "fail",
            "renew",
            "cancel",
            "delay",
            "revoke",
            "reclaim",
            "claim_resumed",
            "replay",
            "expire",
        ] {
            assert!(seen.contains(k), "no successful {k} in {cases} cases (seed {seed}); seen {seen:?}");
        }
    }
}

/// The differential group.
pub fn cases() -> Vec<Case> {
    vec![crate::simulated_only(
        crate::case!(Group::Differential, random_sequences_match_reference),
        "the memory reference must see the same simulated instants as the backend",
    )]
}
