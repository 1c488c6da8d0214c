//! `EngineBackend` for `ValkeyBackend`: one FCALL per contract (the family
//! modules `suspension`, `streams`, `admission` and `flow` hold the bodies of
//! their families).

use async_trait::async_trait;
use ff_core::admission::*;
use ff_core::capabilities::Capabilities;
use ff_core::contracts::*;
use ff_core::flow::*;
use ff_core::handle::{BackendTag, Handle, HandleKind, HandlePayload};
use ff_core::hmac_token::{KidInfo, RotateOutcome, SeedOutcome};
use ff_core::ids::{AttemptIndex, ExecutionId, LaneId, TimestampMs, WaitpointId};
use ff_core::ids::{BudgetId, EdgeId, FlowId, QuotaPolicyId};
use ff_core::state::{AttemptType, LifecyclePhase, PublicState};
use ff_core::stream::{AppendFrameOutcome, StreamCursor, StreamFrames, SummaryDocument, TailVisibility};
use ff_core::suspension::*;
use ff_core::{AttemptId, Clock, EngineBackend, EngineError, LeaseId, SimClock, WorkerInstanceId};

use crate::wire::{self, num, protocol, slot};
use crate::{ValkeyBackend, arg, flag, opt_arg, policy, snapshot};

/// Largest batch of one scanner pass (as the engine's).
const SCANNER_BATCH_MAX: usize = 10_000;

/// The fence triple as three arguments (`""` lease id for none).
pub(crate) fn fence_args(fence: &Option<ff_core::LeaseFence>) -> Vec<Vec<u8>> {
    match fence {
        Some(f) => vec![arg(f.lease_id), arg(f.lease_epoch), arg(f.attempt_id)],
        None => vec![Vec::new(), Vec::new(), Vec::new()],
    }
}

fn parse_wire<T>(what: &str, s: &str, parse: fn(&str) -> Option<T>) -> Result<T, EngineError> {
    parse(s).ok_or_else(|| protocol(format!("{what} is not a known value: {s:?}")))
}

impl ValkeyBackend {
    /// The claim reply `{epoch, index, attempt id, type, expires, instance}` as a claim with its handle.
    fn claimed(
        &self,
        id: &ExecutionId,
        lease_id: LeaseId,
        ttl_ms: u64,
        lane: &LaneId,
        kind: HandleKind,
        r: &[String],
    ) -> Result<ClaimedExecution, EngineError> {
        let lease_epoch: u64 = num(r, 0)?;
        let attempt_index: u32 = num(r, 1)?;
        let attempt_id = AttemptId::parse(slot(r, 2)?).map_err(|e| protocol(format!("attempt id: {e}")))?;
        let attempt_type = parse_wire("attempt type", slot(r, 3)?, AttemptType::parse)?;
        let payload = HandlePayload {
            execution_id: id.clone(),
            attempt_index,
            attempt_id,
            lease_id,
            lease_epoch,
            lease_ttl_ms: ttl_ms,
            lane_id: lane.clone(),
            worker_instance_id: WorkerInstanceId::new(slot(r, 5)?),
        };
        Ok(ClaimedExecution {
            execution_id: id.clone(),
            lease_id,
            lease_epoch,
            attempt_index,
            attempt_id,
            attempt_type,
            lease_expires_at: num(r, 4)?,
            handle: Handle::mint(BackendTag::Valkey, kind, &payload),
        })
    }

    async fn call_texts(
        &self,
        f: &str,
        id: &ExecutionId,
        extra: Vec<Vec<u8>>,
    ) -> Result<Vec<String>, EngineError> {
        wire::texts(self.exec_call(f, id, extra, false).await?)
    }

    async fn create(&self, args: CreateExecutionArgs) -> Result<CreateExecutionOutcome, EngineError> {
        args.validate()?;
        let partitions = self.cfg.partitions.num_flow_partitions;
        if args.execution_id.partition_index() >= partitions {
            return Err(EngineError::invalid_input(format!(
                "execution_id: partition {} not below {partitions}",
                args.execution_id.partition_index()
            )));
        }
        let p = policy::create_policy(&args.policy_json);
        let (required, rejection) = match p.required {
            Ok(r) => (r, String::new()),
            Err(e) => (None, format!("{} {}", e.code().unwrap_or("invalid_input"), validation_detail(&e))),
        };
        let mut extra = vec![
            arg(&args.namespace),
            arg(&args.lane_id),
            arg(&args.execution_kind),
            arg(ff_engine::common::clamp_priority(args.priority)),
            arg(&args.creator_identity),
            opt_arg(required),
            opt_arg(p.budget_ids),
            opt_arg(p.quota_policy_id),
            opt_arg(args.delay_until),
            opt_arg(args.execution_deadline_at),
            args.input_payload.clone(),
            arg(&args.policy_json),
            opt_arg(p.max_replay_count),
            opt_arg(p.max_reclaim_count),
            arg(p.retry_spec),
            arg(rejection),
            arg(args.tags.len()),
        ];
        for (k, v) in &args.tags {
            extra.push(arg(k));
            extra.push(arg(v));
        }
        let idempotency_key = args.idempotency_key.as_deref().filter(|k| !k.is_empty());
        if !self.is_cluster() {
            // One server holds every slot: the create checks and writes the guard itself,
            // in the same atomic call.
            if let Some(key) = idempotency_key {
                let tag = idempotency_tag(args.namespace.as_str(), key, partitions);
                extra.extend([arg(tag), arg(key), arg(p.dedup_window_ms)]);
            }
            return self.create_call(&args.execution_id, extra).await;
        }
        // On a cluster the guard lives on its own slot: reserve it first, and undo the
        // reservation when the create answers that it did not create.
        let guard = match idempotency_key {
            None => None,
            Some(key) => match self.reserve_idempotency(&args, key, p.dedup_window_ms).await? {
                Reservation::Duplicate(execution_id) => {
                    return Ok(CreateExecutionOutcome::Duplicate { execution_id });
                }
                Reservation::Held => None,
                Reservation::Reserved(undo) => Some(undo),
            },
        };
        let outcome = self.create_call(&args.execution_id, extra).await;
        if let Some(undo) = guard
            && !created_or_unknown(&outcome)
        {
            // A failed release leaves the guard to lapse at the end of its window.
            let _ = self.release_idempotency(undo).await;
        }
        outcome
    }

    /// `ff_create_execution` and its reply.
    async fn create_call(
        &self,
        execution_id: &ExecutionId,
        extra: Vec<Vec<u8>>,
    ) -> Result<CreateExecutionOutcome, EngineError> {
        let r = self.call_texts("ff_create_execution", execution_id, extra).await?;
        let id = |s: &str| ExecutionId::parse(s).map_err(|e| protocol(format!("execution id {s:?}: {e}")));
        match slot(&r, 0)? {
            "created" => Ok(CreateExecutionOutcome::Created {
                execution_id: execution_id.clone(),
                public_state: parse_wire("public state", slot(&r, 1)?, PublicState::parse)?,
            }),
            "duplicate" => Ok(CreateExecutionOutcome::Duplicate { execution_id: id(slot(&r, 1)?)? }),
            other => Err(protocol(format!("create reply {other:?}"))),
        }
    }

    /// The guard key of an idempotency key and its ARGV[1..6] (see `lua/execution.lua`).
    fn idempotency_call_parts(&self, namespace: &str, key: &str, id: &ExecutionId) -> (String, Vec<Vec<u8>>) {
        let tag = idempotency_tag(namespace, key, self.cfg.partitions.num_flow_partitions);
        let guard = format!("{}ff:idem:{tag}:{namespace}:{key}", self.cfg.key_prefix);
        let args = vec![
            self.now_arg(),
            self.cfg.key_prefix.clone().into_bytes(),
            tag.into_bytes(),
            arg(namespace),
            arg(key),
            arg(id.as_str()),
        ];
        (guard, args)
    }

    /// `ff_reserve_idempotency`: who holds the guard of `key`, reserving it when nobody does.
    async fn reserve_idempotency(
        &self,
        args: &CreateExecutionArgs,
        key: &str,
        window_ms: u64,
    ) -> Result<Reservation, EngineError> {
        let namespace = args.namespace.to_string();
        let (guard, mut call_args) = self.idempotency_call_parts(&namespace, key, &args.execution_id);
        call_args.push(arg(window_ms));
        call_args.push(self.version.clone().into_bytes());
        let v = self
            .client
            .fcall::<ferriskey::Value>("ff_reserve_idempotency", &[guard.as_str()], &call_args)
            .await;
        let r = wire::texts(v.map_err(wire::engine_error)?)?;
        match slot(&r, 0)? {
            "duplicate" => Ok(Reservation::Duplicate(
                ExecutionId::parse(slot(&r, 1)?).map_err(|e| protocol(format!("idempotency guard: {e}")))?,
            )),
            "held" => Ok(Reservation::Held),
            "reserved" => Ok(Reservation::Reserved(Undo {
                namespace,
                key: key.to_owned(),
                execution_id: args.execution_id.clone(),
                previous: (slot(&r, 1)?.to_owned(), slot(&r, 2)?.to_owned()),
            })),
            other => Err(protocol(format!("reserve idempotency reply {other:?}"))),
        }
    }

    /// `ff_release_idempotency`: restores the guard a reservation replaced.
    async fn release_idempotency(&self, undo: Undo) -> Result<(), EngineError> {
        let (guard, mut call_args) =
            self.idempotency_call_parts(&undo.namespace, &undo.key, &undo.execution_id);
        call_args.push(arg(undo.previous.0));
        call_args.push(arg(undo.previous.1));
        call_args.push(self.version.clone().into_bytes());
        let v = self
            .client
            .fcall::<ferriskey::Value>("ff_release_idempotency", &[guard.as_str()], &call_args)
            .await;
        wire::texts(v.map_err(wire::engine_error)?)?;
        Ok(())
    }

    /// Arguments of both grant functions.
    fn grant_args(args: &IssueClaimGrantArgs) -> Vec<Vec<u8>> {
        vec![
            arg(&args.worker_id),
            arg(&args.worker_instance_id),
            arg(&args.lane_id),
            arg(&args.capability_hash),
            arg(args.grant_ttl_ms),
            arg(&args.route_snapshot_json),
            arg(&args.admission_summary),
            arg(args.worker_capabilities.to_csv()),
        ]
    }

    fn grant_key(id: &ExecutionId) -> String {
        ff_core::keys::ExecKeys::new(&id.hash_tag(), id.as_str()).claim_grant()
    }

    async fn scan_report(
        &self,
        kind: ScannerKind,
        partition: u16,
        batch: usize,
    ) -> Result<ScanReport, EngineError> {
        let kind_text = match kind {
            ScannerKind::LeaseExpiry => "lease_expiry",
            ScannerKind::DelayedPromoter => "delayed_promoter",
            ScannerKind::AttemptTimeout => "attempt_timeout",
            ScannerKind::ExecutionDeadline => "execution_deadline",
            ScannerKind::SuspensionTimeout => "suspension_timeout",
            ScannerKind::PendingWaitpointExpiry => "pending_waitpoint_expiry",
            ScannerKind::BudgetReset | ScannerKind::BudgetReconciler | ScannerKind::QuotaReconciler => {
                return self.global_pass(kind, partition, batch.clamp(1, SCANNER_BATCH_MAX)).await;
            }
            ScannerKind::Unblock => {
                return self.unblock_pass(partition, batch.clamp(1, SCANNER_BATCH_MAX)).await;
            }
            ScannerKind::DependencyReconciler => "dependency_reconciler",
            ScannerKind::CancelReconciler => "cancel_reconciler",
            ScannerKind::EdgeCancelDispatcher => "edge_cancel_dispatcher",
            ScannerKind::RetentionTrimmer => "retention_trimmer",
            _ => return Err(EngineError::Unavailable { op: "run_scanner" }),
        };
        let batch = batch.clamp(1, SCANNER_BATCH_MAX);
        let v =
            self.partition_call("ff_run_scanner", partition, vec![arg(kind_text), arg(batch)], false).await?;
        let r = wire::texts(v)?;
        Ok(ScanReport { examined: num(&r, 0)?, acted: num(&r, 1)? })
    }
}

/// Who holds an idempotency guard, as `ff_reserve_idempotency` answered.
enum Reservation {
    /// A live guard names another execution: the create is its duplicate.
    Duplicate(ExecutionId),
    /// A live guard names this execution (a retried create).
    Held,
    /// The guard now names this execution; undo it if the create does not create.
    Reserved(Undo),
}

/// What `ff_release_idempotency` needs to restore a guard.
struct Undo {
    namespace: String,
    key: String,
    execution_id: ExecutionId,
    /// The guard's previous `(execution_id, expires_at)`, `""` for none.
    previous: (String, String),
}

/// The `{fp:M}` tag of an idempotency guard: FNV-1a of `namespace \n key` mod the flow
/// partitions, so every create with that key, whatever its execution's partition,
/// meets the same guard.
fn idempotency_tag(namespace: &str, key: &str, partitions: u16) -> String {
    let h = ff_core::partition::fnv1a_u64(format!("{namespace}\n{key}").as_bytes());
    format!("{{fp:{}}}", h % u64::from(partitions.max(1)))
}

/// True when a create may have created: it says so, or its answer was lost in transport.
fn created_or_unknown(outcome: &Result<CreateExecutionOutcome, EngineError>) -> bool {
    match outcome {
        Ok(CreateExecutionOutcome::Created { .. }) => true,
        Ok(_) => false,
        Err(e) => matches!(e.root(), EngineError::Transport { .. } | EngineError::Timeout { .. }),
    }
}

/// The detail a validation error carries (empty for other errors).
fn validation_detail(e: &EngineError) -> String {
    match e.root() {
        EngineError::Validation { detail, .. } => detail.clone(),
        _ => String::new(),
    }
}

#[async_trait]
impl EngineBackend for ValkeyBackend {
    fn backend_tag(&self) -> BackendTag {
        BackendTag::Valkey
    }

    fn capabilities(&self) -> Capabilities {
        self.capability_report()
    }

    async fn server_time_ms(&self) -> Result<TimestampMs, EngineError> {
        if let Some(c) = &self.cfg.clock {
            return Ok(c.now_ms());
        }
        let v: ferriskey::Value = self.client.cmd("TIME").execute().await.map_err(wire::engine_error)?;
        let t = wire::texts(v)?;
        let secs: i64 = num(&t, 0)?;
        let micros: i64 = num(&t, 1)?;
        Ok(secs * 1000 + micros / 1000)
    }

    fn sim_clock(&self) -> Option<SimClock> {
        self.cfg.clock.clone()
    }

    fn partition_config(&self) -> ff_core::PartitionConfig {
        self.cfg.partitions
    }

    async fn create_execution(
        &self,
        args: CreateExecutionArgs,
    ) -> Result<CreateExecutionOutcome, EngineError> {
        self.create(args).await
    }

    async fn claim_execution(&self, args: ClaimExecutionArgs) -> Result<ClaimedExecution, EngineError> {
        args.validate()?;
        let extra = vec![
            arg(&args.worker_id),
            arg(&args.worker_instance_id),
            arg(&args.lane_id),
            arg(args.lease_id),
            arg(args.lease_ttl_ms),
            arg(args.attempt_id),
            arg(&args.attempt_policy_json),
            opt_arg(args.attempt_timeout_ms),
            opt_arg(args.execution_deadline_at),
        ];
        let r = self.call_texts("ff_claim_execution", &args.execution_id, extra).await?;
        self.claimed(
            &args.execution_id,
            args.lease_id,
            args.lease_ttl_ms,
            &args.lane_id,
            HandleKind::Fresh,
            &r,
        )
    }

    async fn complete_execution(&self, args: CompleteExecutionArgs) -> Result<CompleteOutcome, EngineError> {
        args.validate()?;
        let mut extra = fence_args(&args.fence);
        extra.push(flag(args.source.is_override()));
        extra.push(args.result_payload.clone().unwrap_or_default());
        self.call_texts("ff_complete_execution", &args.execution_id, extra).await?;
        Ok(CompleteOutcome::Completed { execution_id: args.execution_id })
    }

    async fn cancel_execution(&self, args: CancelExecutionArgs) -> Result<CancelOutcome, EngineError> {
        args.validate()?;
        let extra = vec![
            arg(&args.reason),
            arg(args.source.as_str()),
            flag(args.source.is_override()),
            opt_arg(args.lease_id),
            opt_arg(args.lease_epoch),
        ];
        let r = self.call_texts("ff_cancel_execution", &args.execution_id, extra).await?;
        let from_phase = parse_wire("phase", slot(&r, 1)?, LifecyclePhase::parse)?;
        Ok(CancelOutcome::Cancelled { execution_id: args.execution_id, from_phase })
    }

    async fn delay_execution(&self, args: DelayExecutionArgs) -> Result<TimestampMs, EngineError> {
        args.validate()?;
        let mut extra = fence_args(&args.fence);
        extra.push(flag(args.source.is_override()));
        extra.push(arg(args.delay_until));
        let r = self.call_texts("ff_delay_execution", &args.execution_id, extra).await?;
        num(&r, 0)
    }

    async fn move_to_waiting_children(&self, args: MoveToWaitingChildrenArgs) -> Result<(), EngineError> {
        args.validate()?;
        let mut extra = fence_args(&args.fence);
        extra.push(flag(args.source.is_override()));
        self.call_texts("ff_move_to_waiting_children", &args.execution_id, extra).await?;
        Ok(())
    }

    async fn fail_execution(&self, args: FailExecutionArgs) -> Result<FailOutcome, EngineError> {
        args.validate()?;
        let mut extra = fence_args(&args.fence);
        extra.push(flag(args.source.is_override()));
        extra.push(arg(&args.failure_reason));
        extra.push(arg(&args.failure_category));
        extra.push(match &args.retry_policy_json {
            Some(j) => arg(policy::retry_spec(j)),
            None => arg("-"),
        });
        let r = self.call_texts("ff_fail_execution", &args.execution_id, extra).await?;
        match slot(&r, 0)? {
            "retry_scheduled" => Ok(FailOutcome::RetryScheduled { delay_until: num(&r, 1)? }),
            "terminal_failed" => Ok(FailOutcome::TerminalFailed),
            other => Err(protocol(format!("fail reply {other:?}"))),
        }
    }

    async fn reclaim_execution(
        &self,
        args: ReclaimExecutionArgs,
    ) -> Result<ReclaimExecutionOutcome, EngineError> {
        args.validate()?;
        let extra = vec![
            arg(&args.worker_id),
            arg(&args.worker_instance_id),
            arg(&args.lane_id),
            arg(args.lease_id),
            arg(args.lease_ttl_ms),
            arg(args.attempt_id),
            opt_arg(args.max_reclaim_count),
        ];
        let id = args.execution_id.clone();
        let r = self.call_texts("ff_reclaim_execution", &id, extra).await?;
        match slot(&r, 0)? {
            "not_reclaimable" => Ok(ReclaimExecutionOutcome::NotReclaimable {
                execution_id: id,
                detail: slot(&r, 1)?.to_owned(),
            }),
            "cap_exceeded" => Ok(ReclaimExecutionOutcome::ReclaimCapExceeded {
                execution_id: id,
                reclaim_count: num(&r, 1)?,
            }),
            "grant_not_found" => Ok(ReclaimExecutionOutcome::GrantNotFound { execution_id: id }),
            "claimed" => {
                let c = self.claimed(
                    &id,
                    args.lease_id,
                    args.lease_ttl_ms,
                    &args.lane_id,
                    HandleKind::Reclaimed,
                    &r[1..],
                )?;
                Ok(ReclaimExecutionOutcome::Claimed(c))
            }
            other => Err(protocol(format!("reclaim reply {other:?}"))),
        }
    }

    async fn expire_execution(
        &self,
        execution_id: &ExecutionId,
        phase: ExpirePhase,
    ) -> Result<ExpireOutcome, EngineError> {
        let r = self.call_texts("ff_expire_execution", execution_id, vec![arg(phase.as_str())]).await?;
        match slot(&r, 0)? {
            "expired" => Ok(ExpireOutcome::Expired {
                from_phase: parse_wire("phase", slot(&r, 1)?, LifecyclePhase::parse)?,
            }),
            "already_terminal" => Ok(ExpireOutcome::AlreadyTerminal),
            "not_found_cleaned" => Ok(ExpireOutcome::NotFoundCleaned),
            other => Err(protocol(format!("expire reply {other:?}"))),
        }
    }

    async fn set_execution_tags(&self, args: SetExecutionTagsArgs) -> Result<usize, EngineError> {
        args.validate()?;
        // The key rule needs no stored state, but a missing execution answers first.
        let bad = args.tags.iter().find(|(k, _)| !is_valid_tag_key(k)).map(|(k, _)| k.clone());
        if let Some(bad) = bad {
            if self.describe_execution(&args.execution_id).await?.is_none() {
                return Err(EngineError::execution_not_found());
            }
            return Err(EngineError::validation(ff_core::error::ValidationKind::InvalidTagKey, bad));
        }
        let mut extra = vec![arg(args.tags.len())];
        for (k, v) in &args.tags {
            extra.push(arg(k));
            extra.push(arg(v));
        }
        let r = self.call_texts("ff_set_execution_tags", &args.execution_id, extra).await?;
        num(&r, 0)
    }

    async fn replay_execution(&self, execution_id: &ExecutionId) -> Result<ReplayOutcome, EngineError> {
        let r = self.call_texts("ff_replay_execution", execution_id, Vec::new()).await?;
        Ok(ReplayOutcome::Replayed {
            public_state: parse_wire("public state", slot(&r, 1)?, PublicState::parse)?,
        })
    }

    async fn renew_lease(&self, args: RenewLeaseArgs) -> Result<LeaseRenewal, EngineError> {
        args.validate()?;
        let mut extra = vec![arg(args.attempt_index)];
        extra.extend(fence_args(&args.fence));
        extra.push(arg(args.lease_ttl_ms));
        extra.push(arg(args.lease_history_grace_ms));
        let r = self.call_texts("ff_renew_lease", &args.execution_id, extra).await?;
        Ok(LeaseRenewal { expires_at_ms: num(&r, 0)?, lease_epoch: num(&r, 1)? })
    }

    async fn mark_lease_expired_if_due(
        &self,
        execution_id: &ExecutionId,
    ) -> Result<MarkLeaseExpiredOutcome, EngineError> {
        let r = self.call_texts("ff_mark_lease_expired_if_due", execution_id, Vec::new()).await?;
        Ok(match slot(&r, 0)? {
            "marked_expired" => MarkLeaseExpiredOutcome::MarkedExpired,
            reason => MarkLeaseExpiredOutcome::AlreadySatisfied { reason: reason.to_owned() },
        })
    }

    async fn revoke_lease(&self, args: RevokeLeaseArgs) -> Result<RevokeLeaseOutcome, EngineError> {
        args.validate()?;
        let extra = vec![opt_arg(args.expected_lease_id), arg(&args.reason)];
        let r = self.call_texts("ff_revoke_lease", &args.execution_id, extra).await?;
        match slot(&r, 0)? {
            "already_satisfied" => {
                Ok(RevokeLeaseOutcome::AlreadySatisfied { reason: slot(&r, 1)?.to_owned() })
            }
            "revoked" => Ok(RevokeLeaseOutcome::Revoked {
                lease_id: LeaseId::parse(slot(&r, 1)?).map_err(|e| protocol(format!("lease id: {e}")))?,
                lease_epoch: num(&r, 2)?,
            }),
            other => Err(protocol(format!("revoke reply {other:?}"))),
        }
    }

    async fn list_expired_leases(
        &self,
        args: ListExpiredLeasesArgs,
    ) -> Result<ExpiredLeasesPage, EngineError> {
        args.validate()?;
        let mut candidates: Vec<(i64, String, Vec<String>)> = Vec::new();
        for p in 0..self.cfg.partitions.num_flow_partitions {
            let (score, id) = match &args.after {
                Some((t, id)) => (arg(t), arg(id.as_str())),
                None => (Vec::new(), Vec::new()),
            };
            let extra = vec![arg(args.as_of), score, id, arg(args.limit + 1)];
            let v = self.partition_call("ff_list_expired_leases", p, extra, true).await?;
            for row in wire::array(v)? {
                let row = wire::texts(row)?;
                candidates.push((num(&row, 0)?, slot(&row, 1)?.to_owned(), row));
            }
        }
        candidates.sort_by(|a, b| (a.0, &a.1).cmp(&(b.0, &b.1)));
        let more = candidates.len() > args.limit;
        let mut entries = Vec::new();
        let mut last_seen = None;
        for (expires, member, row) in candidates.into_iter().take(args.limit) {
            let id = ExecutionId::parse(&member)
                .map_err(|e| protocol(format!("lease_expiry member {member}: {e}")))?;
            last_seen = Some((expires, id.clone()));
            let (lease, inst) = (slot(&row, 2)?, slot(&row, 4)?);
            if lease.is_empty() || inst.is_empty() {
                continue;
            }
            entries.push(ExpiredLeaseInfo {
                execution_id: id,
                lease_id: LeaseId::parse(lease).map_err(|e| protocol(format!("lease id: {e}")))?,
                lease_epoch: num(&row, 3)?,
                worker_instance_id: WorkerInstanceId::new(inst),
                expires_at_ms: expires,
                attempt_index: num(&row, 5)?,
            });
        }
        Ok(ExpiredLeasesPage { entries, cursor: if more { last_seen } else { None } })
    }

    async fn issue_claim_grant(
        &self,
        args: IssueClaimGrantArgs,
    ) -> Result<IssueClaimGrantOutcome, EngineError> {
        args.validate()?;
        let r = self.call_texts("ff_issue_claim_grant", &args.execution_id, Self::grant_args(&args)).await?;
        let id = &args.execution_id;
        Ok(IssueClaimGrantOutcome::Granted(ClaimGrant {
            execution_id: id.clone(),
            partition_key: id.partition().key(),
            grant_key: Self::grant_key(id),
            expires_at_ms: num(&r, 0)?,
        }))
    }

    async fn change_priority(&self, args: ChangePriorityArgs) -> Result<PriorityChange, EngineError> {
        let p = ff_engine::common::clamp_priority(args.new_priority);
        let r = self.call_texts("ff_change_priority", &args.execution_id, vec![arg(p)]).await?;
        Ok(PriorityChange { old_priority: num(&r, 0)?, new_priority: num(&r, 1)? })
    }

    async fn update_progress(&self, args: UpdateProgressArgs) -> Result<(), EngineError> {
        args.validate()?;
        let extra = vec![
            arg(args.lease_id),
            arg(args.lease_epoch),
            opt_arg(args.progress_pct),
            flag(args.progress_message.is_some()),
            args.progress_message.clone().unwrap_or_default().into_bytes(),
        ];
        self.call_texts("ff_update_progress", &args.execution_id, extra).await?;
        Ok(())
    }

    async fn promote_delayed(
        &self,
        lane_id: &LaneId,
        execution_id: &ExecutionId,
    ) -> Result<PromoteOutcome, EngineError> {
        let r = self.call_texts("ff_promote_delayed", execution_id, vec![arg(lane_id)]).await?;
        match slot(&r, 0)? {
            "promoted" => Ok(PromoteOutcome::Promoted),
            "not_yet_due" => Ok(PromoteOutcome::NotYetDue),
            "not_found_cleaned" => Ok(PromoteOutcome::NotFoundCleaned),
            "not_runnable_cleaned" => Ok(PromoteOutcome::NotRunnableCleaned),
            "not_delayed_cleaned" => Ok(PromoteOutcome::NotDelayedCleaned),
            other => Err(protocol(format!("promote reply {other:?}"))),
        }
    }

    async fn issue_reclaim_grant(
        &self,
        args: IssueReclaimGrantArgs,
    ) -> Result<IssueReclaimGrantOutcome, EngineError> {
        args.validate()?;
        let r =
            self.call_texts("ff_issue_reclaim_grant", &args.execution_id, Self::grant_args(&args)).await?;
        let id = &args.execution_id;
        match slot(&r, 0)? {
            "not_reclaimable" => Ok(IssueReclaimGrantOutcome::NotReclaimable {
                execution_id: id.clone(),
                detail: slot(&r, 1)?.to_owned(),
            }),
            "granted" => Ok(IssueReclaimGrantOutcome::Granted(LaneGrant {
                execution_id: id.clone(),
                partition_key: id.partition().key(),
                grant_key: Self::grant_key(id),
                expires_at_ms: num(&r, 1)?,
                lane_id: LaneId::new(slot(&r, 2)?),
            })),
            other => Err(protocol(format!("reclaim grant reply {other:?}"))),
        }
    }

    async fn claim_resumed_execution(
        &self,
        args: ClaimResumedExecutionArgs,
    ) -> Result<ClaimedExecution, EngineError> {
        args.validate()?;
        let extra = vec![
            arg(&args.worker_id),
            arg(&args.worker_instance_id),
            arg(&args.lane_id),
            arg(args.lease_id),
            arg(args.lease_ttl_ms),
            opt_arg(args.remaining_attempt_timeout_ms),
        ];
        let r = self.call_texts("ff_claim_resumed_execution", &args.execution_id, extra).await?;
        self.claimed(
            &args.execution_id,
            args.lease_id,
            args.lease_ttl_ms,
            &args.lane_id,
            HandleKind::Resumed,
            &r,
        )
    }

    async fn issue_grant_and_claim(
        &self,
        args: IssueGrantAndClaimArgs,
    ) -> Result<ClaimGrantOutcome, EngineError> {
        args.validate()?;
        let extra =
            vec![arg(&args.lane_id), arg(args.lease_id), arg(args.lease_duration_ms), arg(args.attempt_id)];
        let r = self.call_texts("ff_issue_grant_and_claim", &args.execution_id, extra).await?;
        Ok(ClaimGrantOutcome {
            lease_id: args.lease_id,
            lease_epoch: num(&r, 0)?,
            attempt_index: num(&r, 1)?,
        })
    }

    async fn block_execution_for_admission(&self, args: BlockExecutionArgs) -> Result<(), EngineError> {
        args.validate()?;
        let extra = vec![arg(args.reason.as_str()), arg(&args.detail)];
        self.call_texts("ff_block_execution_for_admission", &args.execution_id, extra).await?;
        Ok(())
    }

    async fn unblock_execution(&self, args: UnblockExecutionArgs) -> Result<(), EngineError> {
        let extra = vec![opt_arg(args.expected_reason.map(|r| r.as_str()))];
        self.call_texts("ff_unblock_execution", &args.execution_id, extra).await?;
        Ok(())
    }

    async fn scan_eligible_executions(
        &self,
        args: ScanEligibleArgs,
    ) -> Result<Vec<ExecutionId>, EngineError> {
        let limit = args.limit.clamp(1, LIST_LIMIT_MAX);
        let extra = vec![arg(&args.lane_id), arg(limit)];
        let v = self.partition_call("ff_scan_eligible", args.partition, extra, true).await?;
        wire::texts(v)?
            .iter()
            .map(|m| ExecutionId::parse(m).map_err(|e| protocol(format!("eligible member {m}: {e}"))))
            .collect()
    }

    async fn scan_eligible_heads(
        &self,
        lane_id: &LaneId,
        partitions: std::ops::Range<u16>,
    ) -> Result<Vec<ExecutionId>, EngineError> {
        let mut heads = Vec::new();
        for m in self.scan_heads_pipelined(lane_id, partitions).await?.into_iter().flatten() {
            heads.push(ExecutionId::parse(&m).map_err(|e| protocol(format!("eligible member {m}: {e}")))?);
        }
        Ok(heads)
    }

    async fn describe_execution(
        &self,
        execution_id: &ExecutionId,
    ) -> Result<Option<ExecutionSnapshot>, EngineError> {
        snapshot::describe(self.exec_call("ff_describe_execution", execution_id, Vec::new(), true).await?)
    }

    async fn read_execution_context(
        &self,
        execution_id: &ExecutionId,
    ) -> Result<ExecutionContext, EngineError> {
        let v = self.exec_call("ff_read_execution_context", execution_id, Vec::new(), true).await?;
        let mut items = wire::array(v)?.into_iter();
        let Some(kind) = items.next() else {
            return Err(EngineError::invalid_input("execution_not_found"));
        };
        let payload = items.next().map(wire::bytes).transpose()?.unwrap_or_default();
        let rest: Vec<String> = items.map(wire::text).collect::<Result<_, _>>()?;
        let tags =
            rest.chunks(2).filter(|kv| kv.len() == 2).map(|kv| (kv[0].clone(), kv[1].clone())).collect();
        Ok(ExecutionContext { input_payload: payload, execution_kind: wire::text(kind)?, tags })
    }

    async fn get_execution_result(&self, execution_id: &ExecutionId) -> Result<Option<Vec<u8>>, EngineError> {
        let v = self.exec_call("ff_get_execution_result", execution_id, Vec::new(), true).await?;
        wire::array(v)?.into_iter().next().map(wire::bytes).transpose()
    }

    async fn get_execution_tag(
        &self,
        execution_id: &ExecutionId,
        key: &str,
    ) -> Result<Option<String>, EngineError> {
        let v = self.exec_call("ff_get_execution_tag", execution_id, vec![arg(key)], true).await?;
        wire::array(v)?.into_iter().next().map(wire::text).transpose()
    }

    async fn read_lease_history(
        &self,
        execution_id: &ExecutionId,
    ) -> Result<Vec<LeaseHistoryEntry>, EngineError> {
        snapshot::lease_history(
            self.exec_call("ff_read_lease_history", execution_id, Vec::new(), true).await?,
        )
    }

    async fn list_executions(
        &self,
        partition: u16,
        after: Option<ExecutionId>,
        limit: usize,
    ) -> Result<Vec<ExecutionId>, EngineError> {
        let limit = limit.clamp(1, LIST_LIMIT_MAX);
        let extra = vec![opt_arg(after.as_ref().map(ExecutionId::as_str)), arg(limit)];
        let v = self.partition_call("ff_list_executions", partition, extra, true).await?;
        wire::texts(v)?
            .iter()
            .map(|m| ExecutionId::parse(m).map_err(|e| protocol(format!("all_executions member {m}: {e}"))))
            .collect()
    }

    async fn run_scanner(
        &self,
        kind: ScannerKind,
        partition: u16,
        batch: usize,
    ) -> Result<ScanReport, EngineError> {
        self.scan_report(kind, partition, batch).await
    }

    async fn register_worker(&self, args: RegisterWorkerArgs) -> Result<RegisterWorkerOutcome, EngineError> {
        args.validate()?;
        let json = |v: Result<String, serde_json::Error>| v.map_err(|e| protocol(format!("encode: {e}")));
        let extra = vec![
            arg(&args.worker_instance_id),
            arg(&args.worker_id),
            arg(args.liveness_ttl_ms),
            arg(json(serde_json::to_string(&args.lanes))?),
            arg(json(serde_json::to_string(&args.capabilities))?),
        ];
        let r = wire::texts(self.worker_call("ff_register_worker", &args.namespace, extra, false).await?)?;
        match slot(&r, 0)? {
            "registered" => Ok(RegisterWorkerOutcome::Registered),
            "refreshed" => Ok(RegisterWorkerOutcome::Refreshed),
            other => Err(protocol(format!("register reply {other:?}"))),
        }
    }

    async fn heartbeat_worker(&self, args: HeartbeatWorkerArgs) -> Result<HeartbeatOutcome, EngineError> {
        let extra = vec![arg(&args.worker_instance_id)];
        let r = wire::texts(self.worker_call("ff_heartbeat_worker", &args.namespace, extra, false).await?)?;
        match slot(&r, 0)? {
            "refreshed" => Ok(HeartbeatOutcome::Refreshed { next_expiry_ms: num(&r, 1)? }),
            "not_registered" => Ok(HeartbeatOutcome::NotRegistered),
            other => Err(protocol(format!("heartbeat reply {other:?}"))),
        }
    }

    async fn mark_worker_dead(&self, args: MarkWorkerDeadArgs) -> Result<MarkWorkerDeadOutcome, EngineError> {
        args.validate()?;
        let extra = vec![arg(&args.worker_instance_id)];
        let r = wire::texts(self.worker_call("ff_mark_worker_dead", &args.namespace, extra, false).await?)?;
        match slot(&r, 0)? {
            "marked" => Ok(MarkWorkerDeadOutcome::Marked),
            "not_registered" => Ok(MarkWorkerDeadOutcome::NotRegistered),
            other => Err(protocol(format!("mark dead reply {other:?}"))),
        }
    }

    async fn list_workers(&self, args: ListWorkersArgs) -> Result<WorkersPage, EngineError> {
        let limit = args.limit.clamp(1, LIST_LIMIT_MAX);
        let extra = vec![opt_arg(args.after.as_ref()), arg(limit)];
        let mut items =
            wire::array(self.worker_call("ff_list_workers", &args.namespace, extra, true).await?)?;
        if items.is_empty() {
            return Err(protocol("list_workers reply has no cursor"));
        }
        let cursor = wire::text(items.remove(0))?;
        let mut workers = Vec::with_capacity(items.len());
        for row in items {
            let r = wire::texts(row)?;
            workers.push(WorkerInfo {
                worker_id: ff_core::WorkerId::new(slot(&r, 1)?),
                worker_instance_id: WorkerInstanceId::new(slot(&r, 0)?),
                namespace: args.namespace.clone(),
                lanes: serde_json::from_str(slot(&r, 2)?)
                    .map_err(|e| protocol(format!("worker lanes: {e}")))?,
                capabilities: serde_json::from_str(slot(&r, 3)?)
                    .map_err(|e| protocol(format!("worker capabilities: {e}")))?,
                last_heartbeat_ms: num(&r, 4)?,
                liveness_ttl_ms: num(&r, 5)?,
                registered_at_ms: num(&r, 6)?,
            });
        }
        let cursor = (!cursor.is_empty()).then(|| WorkerInstanceId::new(cursor));
        Ok(WorkersPage { workers, cursor })
    }

    async fn read_completions(&self, after: u64, limit: usize) -> Result<Vec<CompletionEvent>, EngineError> {
        self.read_completions_call(after, limit).await
    }

    async fn suspend_by_triple(&self, args: SuspendByTripleArgs) -> Result<SuspendOutcome, EngineError> {
        self.suspend_call(args).await
    }

    async fn create_pending_waitpoint(
        &self,
        args: CreateWaitpointArgs,
    ) -> Result<PendingWaitpoint, EngineError> {
        self.create_waitpoint_call(args).await
    }

    async fn close_waitpoint(
        &self,
        execution_id: &ExecutionId,
        waitpoint_id: &WaitpointId,
        reason: &str,
    ) -> Result<bool, EngineError> {
        self.close_waitpoint_call(execution_id, waitpoint_id, reason).await
    }

    async fn deliver_signal(&self, args: DeliverSignalArgs) -> Result<DeliverSignalOutcome, EngineError> {
        self.deliver_call(args).await
    }

    async fn resume_execution(&self, args: ResumeExecutionArgs) -> Result<ResumeOutcome, EngineError> {
        self.resume_call(args).await
    }

    async fn expire_suspension(
        &self,
        execution_id: &ExecutionId,
    ) -> Result<ExpireSuspensionOutcome, EngineError> {
        self.expire_suspension_call(execution_id).await
    }

    async fn read_waitpoint_token(&self, waitpoint_id: &WaitpointId) -> Result<Option<String>, EngineError> {
        self.read_token_call(waitpoint_id).await
    }

    async fn observe_execution_signals(
        &self,
        execution_id: &ExecutionId,
    ) -> Result<Vec<ResumeSignal>, EngineError> {
        self.observe_call(execution_id).await
    }

    async fn list_pending_waitpoints(
        &self,
        execution_id: &ExecutionId,
        after: Option<WaitpointId>,
        limit: usize,
    ) -> Result<(Vec<PendingWaitpointInfo>, Option<WaitpointId>), EngineError> {
        self.list_pending_call(execution_id, after, limit).await
    }

    async fn list_suspended(
        &self,
        partition: u16,
        after: Option<ExecutionId>,
        limit: usize,
    ) -> Result<(Vec<SuspendedExecutionEntry>, Option<ExecutionId>), EngineError> {
        self.list_suspended_call(partition, after, limit).await
    }

    async fn seed_waitpoint_hmac_secret(
        &self,
        kid: &str,
        secret_hex: &str,
    ) -> Result<SeedOutcome, EngineError> {
        self.seed_hmac(kid, secret_hex).await
    }

    async fn rotate_waitpoint_hmac_secret_all(
        &self,
        new_kid: &str,
        new_secret_hex: &str,
        grace_ms: u64,
    ) -> Result<Vec<(u16, Result<RotateOutcome, EngineError>)>, EngineError> {
        self.rotate_hmac(new_kid, new_secret_hex, grace_ms).await
    }

    async fn list_waitpoint_hmac_kids(&self) -> Result<(Option<String>, Vec<KidInfo>), EngineError> {
        self.list_hmac_kids().await
    }

    async fn create_flow(&self, args: CreateFlowArgs) -> Result<CreateFlowOutcome, EngineError> {
        self.create_flow_call(args).await
    }

    async fn add_execution_to_flow(
        &self,
        flow_id: &FlowId,
        execution_id: &ExecutionId,
    ) -> Result<AddToFlowOutcome, EngineError> {
        self.add_to_flow_call(flow_id, execution_id).await
    }

    async fn stage_dependency_edge(&self, args: StageEdgeArgs) -> Result<(EdgeId, u64), EngineError> {
        self.stage_edge_call(args).await
    }

    async fn set_edge_group_policy(
        &self,
        flow_id: &FlowId,
        downstream: &ExecutionId,
        policy: EdgeDependencyPolicy,
    ) -> Result<bool, EngineError> {
        self.set_group_policy_call(flow_id, downstream, policy).await
    }

    async fn apply_dependency_to_child(
        &self,
        flow_id: &FlowId,
        edge_id: &EdgeId,
    ) -> Result<Option<u64>, EngineError> {
        self.apply_dependency_call(flow_id, edge_id).await
    }

    async fn resolve_dependency(
        &self,
        flow_id: &FlowId,
        edge_id: &EdgeId,
        upstream_outcome: ff_core::state::TerminalOutcome,
    ) -> Result<ResolveDependencyOutcome, EngineError> {
        self.resolve_dependency_call(flow_id, edge_id, upstream_outcome).await
    }

    async fn cancel_flow_header(
        &self,
        flow_id: &FlowId,
        reason: &str,
        policy: CancelFlowPolicy,
        grace_ms: u64,
    ) -> Result<CancelFlowHeader, EngineError> {
        self.cancel_flow_header_call(flow_id, reason, policy, grace_ms).await
    }

    async fn ack_cancel_member(
        &self,
        flow_id: &FlowId,
        execution_id: &ExecutionId,
    ) -> Result<(), EngineError> {
        self.ack_cancel_call(flow_id, execution_id).await
    }

    async fn promote_blocked_to_eligible(&self, execution_id: &ExecutionId) -> Result<(), EngineError> {
        self.promote_blocked_call(execution_id).await
    }

    async fn set_flow_tags(
        &self,
        flow_id: &FlowId,
        tags: Vec<(String, String)>,
    ) -> Result<usize, EngineError> {
        self.set_flow_tags_call(flow_id, tags).await
    }

    async fn describe_flow(&self, flow_id: &FlowId) -> Result<Option<FlowSnapshot>, EngineError> {
        self.describe_flow_call(flow_id).await
    }

    async fn evaluate_flow_eligibility(
        &self,
        execution_id: &ExecutionId,
    ) -> Result<FlowEligibility, EngineError> {
        self.flow_eligibility_call(execution_id).await
    }

    async fn create_budget(&self, args: CreateBudgetArgs) -> Result<CreateBudgetOutcome, EngineError> {
        self.create_budget_call(args).await
    }

    async fn report_usage_and_check(&self, args: ReportUsageArgs) -> Result<ReportUsageResult, EngineError> {
        args.validate()?;
        self.charge_call(&args.budget_id, &args.dimensions, args.dedup_key.as_deref(), None).await
    }

    async fn record_spend(&self, args: RecordSpendArgs) -> Result<ReportUsageResult, EngineError> {
        args.validate()?;
        let deltas: Vec<(String, u64)> = args.deltas.iter().map(|(d, v)| (d.clone(), *v)).collect();
        let key = args.idempotency_key.as_deref();
        self.charge_call(&args.budget_id, &deltas, key, Some(&args.execution_id)).await
    }

    async fn release_budget(
        &self,
        budget_id: &BudgetId,
        execution_id: &ExecutionId,
    ) -> Result<bool, EngineError> {
        self.release_budget_call(budget_id, execution_id).await
    }

    async fn reset_budget(&self, budget_id: &BudgetId) -> Result<Option<TimestampMs>, EngineError> {
        self.reset_budget_call(budget_id).await
    }

    async fn get_budget_status(&self, budget_id: &BudgetId) -> Result<BudgetStatus, EngineError> {
        self.budget_status_call(budget_id).await
    }

    async fn create_quota_policy(
        &self,
        args: CreateQuotaPolicyArgs,
    ) -> Result<CreateQuotaOutcome, EngineError> {
        self.create_quota_call(args).await
    }

    async fn check_admission_and_record(
        &self,
        args: CheckAdmissionArgs,
    ) -> Result<CheckAdmissionResult, EngineError> {
        self.check_admission_call(args).await
    }

    async fn release_admission(
        &self,
        quota_policy_id: &QuotaPolicyId,
        execution_id: &ExecutionId,
    ) -> Result<(), EngineError> {
        self.release_admission_call(quota_policy_id, execution_id).await
    }

    async fn read_quota_policy_limits(
        &self,
        quota_policy_id: &QuotaPolicyId,
    ) -> Result<Option<QuotaPolicyLimits>, EngineError> {
        self.quota_limits_call(quota_policy_id).await
    }

    async fn append_stream_frame(&self, args: AppendFrameArgs) -> Result<AppendFrameOutcome, EngineError> {
        self.append_call(args).await
    }

    async fn read_stream(
        &self,
        execution_id: &ExecutionId,
        attempt_index: AttemptIndex,
        from: StreamCursor,
        to: StreamCursor,
        count_limit: u64,
    ) -> Result<StreamFrames, EngineError> {
        self.read_stream_call(execution_id, attempt_index, &from, &to, count_limit).await
    }

    async fn tail_stream(
        &self,
        execution_id: &ExecutionId,
        attempt_index: AttemptIndex,
        after: StreamCursor,
        block_ms: u64,
        count_limit: u64,
        visibility: TailVisibility,
    ) -> Result<StreamFrames, EngineError> {
        self.tail_call(execution_id, attempt_index, &after, block_ms, count_limit, visibility).await
    }

    async fn read_summary(
        &self,
        execution_id: &ExecutionId,
        attempt_index: AttemptIndex,
    ) -> Result<Option<SummaryDocument>, EngineError> {
        self.read_summary_call(execution_id, attempt_index).await
    }
}
