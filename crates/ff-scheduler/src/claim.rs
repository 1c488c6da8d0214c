//! `claim_for_worker` (spec 03 §6.2): probe a rotating window of partitions,
//! take the head of the lane's eligible index on each, run the admission
//! pre-checks in the spec's order (capability → budget → quota) and issue one
//! claim grant.
//!
//! A failed pre-check parks the execution in the matching blocked index (best
//! effort) so the next probe of that partition sees the next candidate. Budget
//! and quota reads that fail abort the whole call: admission fails closed.

use std::collections::BTreeMap;
use std::sync::Arc;

use ff_core::admission::{BudgetStatus, CheckAdmissionArgs, CheckAdmissionResult};
use ff_core::contracts::{
    BlockExecutionArgs, CAPS_CSV_BYTES_MAX, CAPS_TOKENS_MAX, CapabilitySet, ClaimGrant, ExecutionSnapshot,
    IssueClaimGrantArgs, IssueClaimGrantOutcome, ScanEligibleArgs, Validate,
};
use ff_core::error::ValidationKind;
use ff_core::keys::ExecKeys;
use ff_core::partition::{fnv1a_u16_mod, fnv1a_xor8hex};
use ff_core::{
    BlockingReason, BudgetId, EngineBackend, EngineError, ExecutionId, LaneId, QuotaPolicyId, TimestampMs,
    WorkerId, WorkerInstanceId,
};
use tracing::{debug, warn};

use crate::rotation::RotationCursor;

/// Quota window in seconds used when a policy stores 0 (spec 03 §6.2 d).
pub const QUOTA_WINDOW_SECONDS_DEFAULT: u64 = 60;
/// Blocking detail of a route block (spec 03 §6.2 b).
pub const ROUTE_BLOCK_DETAIL: &str = "no connected worker satisfies required_capabilities";

/// Scheduler settings (spec 03 §6.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SchedulerConfig {
    /// Partitions probed per `claim_for_worker` call (clamped to `1..=partition count`).
    pub max_partitions_per_scan: u16,
    /// How long one rotation cursor value is kept, in ms.
    pub rotation_window_ms: u64,
}

impl Default for SchedulerConfig {
    fn default() -> Self {
        Self { max_partitions_per_scan: 32, rotation_window_ms: 250 }
    }
}

/// Claims work for workers over any [`EngineBackend`].
pub struct Scheduler {
    backend: Arc<dyn EngineBackend>,
    config: SchedulerConfig,
    rotation: RotationCursor,
}

impl std::fmt::Debug for Scheduler {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Scheduler").field("config", &self.config).finish_non_exhaustive()
    }
}

/// One call's validated inputs.
struct ClaimRequest<'a> {
    lane: &'a LaneId,
    worker_id: &'a WorkerId,
    worker_instance_id: &'a WorkerInstanceId,
    capabilities: CapabilitySet,
    capability_hash: String,
    grant_ttl_ms: u64,
}

impl ClaimRequest<'_> {
    fn grant_args(&self, execution_id: ExecutionId) -> IssueClaimGrantArgs {
        IssueClaimGrantArgs {
            execution_id,
            worker_id: self.worker_id.clone(),
            worker_instance_id: self.worker_instance_id.clone(),
            lane_id: self.lane.clone(),
            capability_hash: self.capability_hash.clone(),
            grant_ttl_ms: self.grant_ttl_ms,
            route_snapshot_json: String::new(),
            admission_summary: String::new(),
            worker_capabilities: self.capabilities.clone(),
        }
    }
}

/// What the quota pre-check decided.
enum QuotaDecision {
    /// No quota applies.
    Unlimited,
    /// Admitted (or already admitted) under this policy; release it if the grant fails.
    Admitted(QuotaPolicyId),
    /// Refused; block with this detail.
    Refused(String),
    /// An outcome this scheduler does not know; skip the partition without blocking.
    Unknown,
}

/// Budget verdicts of one call, by raw budget id: `Some(detail)` when breached.
type BudgetCache = BTreeMap<String, Option<String>>;

impl Scheduler {
    /// A scheduler over `backend`.
    pub fn new(backend: Arc<dyn EngineBackend>, config: SchedulerConfig) -> Self {
        Self { backend, config, rotation: RotationCursor::default() }
    }

    /// The settings.
    pub fn config(&self) -> SchedulerConfig {
        self.config
    }

    /// The backend the scheduler drives.
    pub fn backend(&self) -> &Arc<dyn EngineBackend> {
        &self.backend
    }

    /// Grants the first admissible eligible execution of `lane` to the worker; `Ok(None)` when none.
    ///
    /// Errors: `Validation(InvalidInput)` for a zero partition count, malformed capability
    /// tokens, bad ids or a grant TTL outside `1..=60000` (nothing is touched);
    /// the backend's error, with context, when the clock, a budget or a quota read fails.
    pub async fn claim_for_worker(
        &self,
        lane: &LaneId,
        worker_id: &WorkerId,
        worker_instance_id: &WorkerInstanceId,
        capabilities: &[String],
        grant_ttl_ms: u64,
    ) -> Result<Option<ClaimGrant>, EngineError> {
        let partitions = self.backend.partition_config().num_flow_partitions;
        if partitions == 0 {
            return Err(EngineError::invalid_input("num_flow_partitions must be > 0"));
        }
        let capabilities = validate_worker_capabilities(capabilities)?;
        let capability_hash = fnv1a_xor8hex(&capabilities.to_csv());
        let request =
            ClaimRequest { lane, worker_id, worker_instance_id, capabilities, capability_hash, grant_ttl_ms };
        validate_request(&request)?;
        let now = self
            .backend
            .server_time_ms()
            .await
            .map_err(|e| e.backend_context("claim_for_worker: server_time_ms"))?;
        let step = self.config.max_partitions_per_scan.clamp(1, partitions);
        let cursor = self.rotation.cursor(now, self.config.rotation_window_ms, step, partitions);
        let start = fnv1a_u16_mod(worker_instance_id.as_str(), partitions);
        let mut budgets = BudgetCache::new();
        for offset in 0..step {
            let partition = partition_at(start, cursor, offset, partitions);
            if let Some(grant) = self.try_partition(&request, partition, now, &mut budgets).await? {
                return Ok(Some(grant));
            }
        }
        Ok(None)
    }

    /// Steps a–f of spec 03 §6.2 on one partition.
    async fn try_partition(
        &self,
        request: &ClaimRequest<'_>,
        partition: u16,
        now: TimestampMs,
        budgets: &mut BudgetCache,
    ) -> Result<Option<ClaimGrant>, EngineError> {
        let Some(snapshot) = self.eligible_head(request.lane, partition).await else {
            return Ok(None);
        };
        let execution_id = snapshot.execution_id.clone();
        if !is_subset(&snapshot.required_capabilities, &request.capabilities) {
            self.block(&execution_id, BlockingReason::WaitingForCapableWorker, ROUTE_BLOCK_DETAIL.into())
                .await;
            return Ok(None);
        }
        if let Some(detail) = self.budget_breach(&snapshot, budgets).await? {
            self.block(&execution_id, BlockingReason::WaitingForBudget, detail).await;
            return Ok(None);
        }
        let admitted = match self.admit_quota(&snapshot).await? {
            QuotaDecision::Unlimited => None,
            QuotaDecision::Admitted(quota) => Some(quota),
            QuotaDecision::Refused(detail) => {
                self.block(&execution_id, BlockingReason::WaitingForQuota, detail).await;
                return Ok(None);
            }
            QuotaDecision::Unknown => return Ok(None),
        };
        Ok(self.grant(request, execution_id, now, admitted).await)
    }

    /// The snapshot of the head of the lane's eligible index; read errors skip the partition.
    async fn eligible_head(&self, lane: &LaneId, partition: u16) -> Option<ExecutionSnapshot> {
        let scan = ScanEligibleArgs { lane_id: lane.clone(), partition, limit: 1 };
        let head = match self.backend.scan_eligible_executions(scan).await {
            Ok(ids) => ids.into_iter().next()?,
            Err(e) => {
                warn!(partition, error = %e, "scheduler: eligible scan failed; skipping partition");
                return None;
            }
        };
        match self.backend.describe_execution(&head).await {
            Ok(snapshot) => snapshot,
            Err(e) => {
                warn!(execution_id = %head, error = %e, "scheduler: describe failed; skipping partition");
                None
            }
        }
    }

    /// The first hard breach among the execution's budgets; read failures abort (fail closed).
    async fn budget_breach(
        &self,
        snapshot: &ExecutionSnapshot,
        budgets: &mut BudgetCache,
    ) -> Result<Option<String>, EngineError> {
        for raw in snapshot.budget_ids.iter().filter(|b| !b.is_empty()) {
            let verdict = match budgets.get(raw) {
                Some(cached) => cached.clone(),
                None => {
                    let verdict = self.read_budget_breach(raw).await?;
                    budgets.insert(raw.clone(), verdict.clone());
                    verdict
                }
            };
            if verdict.is_some() {
                return Ok(verdict);
            }
        }
        Ok(None)
    }

    /// One budget's breach detail; a non-UUID or unknown budget is not breached.
    async fn read_budget_breach(&self, raw: &str) -> Result<Option<String>, EngineError> {
        let Ok(budget_id) = BudgetId::parse(raw) else {
            return Ok(None);
        };
        match self.backend.get_budget_status(&budget_id).await {
            Ok(status) => {
                Ok(hard_breach(&status)
                    .map(|(dim, used, limit)| format!("budget {raw}: {dim} {used}/{limit}")))
            }
            Err(e) if matches!(e.root(), EngineError::NotFound { .. }) => Ok(None),
            Err(e) => Err(e.backend_context(format!("claim_for_worker: budget {raw}"))),
        }
    }

    /// Reads the execution's quota policy and records an admission; read failures abort.
    async fn admit_quota(&self, snapshot: &ExecutionSnapshot) -> Result<QuotaDecision, EngineError> {
        let Some(raw) = snapshot.quota_policy_id.as_deref().filter(|q| !q.is_empty()) else {
            return Ok(QuotaDecision::Unlimited);
        };
        let Ok(quota_policy_id) = QuotaPolicyId::parse(raw) else {
            return Ok(QuotaDecision::Unlimited);
        };
        let context = |e: EngineError| e.backend_context(format!("claim_for_worker: quota {raw}"));
        let limits = self.backend.read_quota_policy_limits(&quota_policy_id).await.map_err(context)?;
        let Some(limits) = limits.filter(|l| !l.is_unlimited()) else {
            return Ok(QuotaDecision::Unlimited);
        };
        let window_seconds = match limits.requests_per_window_seconds {
            0 => QUOTA_WINDOW_SECONDS_DEFAULT,
            w => w,
        };
        let args = CheckAdmissionArgs {
            quota_policy_id,
            execution_id: snapshot.execution_id.clone(),
            window_seconds,
            rate_limit: limits.max_requests_per_window,
            concurrency_cap: limits.active_concurrency_cap,
        };
        let rate = limits.max_requests_per_window;
        Ok(match self.backend.check_admission_and_record(args).await.map_err(context)? {
            CheckAdmissionResult::Admitted | CheckAdmissionResult::AlreadyAdmitted => {
                QuotaDecision::Admitted(quota_policy_id)
            }
            CheckAdmissionResult::RateExceeded { .. } => QuotaDecision::Refused(format!(
                "quota {raw}: rate limit {rate}/{rate} per {window_seconds}s window"
            )),
            CheckAdmissionResult::ConcurrencyExceeded => QuotaDecision::Refused(format!(
                "quota {raw}: concurrency cap {}",
                limits.active_concurrency_cap
            )),
            other => {
                warn!(quota = raw, outcome = ?other, "scheduler: unknown admission outcome; skipping");
                QuotaDecision::Unknown
            }
        })
    }

    /// Step e–f: issue the grant; on any failure release the quota admission (best effort).
    async fn grant(
        &self,
        request: &ClaimRequest<'_>,
        execution_id: ExecutionId,
        now: TimestampMs,
        admitted: Option<QuotaPolicyId>,
    ) -> Option<ClaimGrant> {
        match self.backend.issue_claim_grant(request.grant_args(execution_id.clone())).await {
            Ok(IssueClaimGrantOutcome::Granted(_)) => return Some(claim_grant(execution_id, now, request)),
            Ok(other) => warn!(%execution_id, outcome = ?other, "scheduler: unknown grant outcome"),
            Err(e) if is_capability_mismatch(&e) => {
                // A required capability changed between the pre-check and the grant.
                self.block(&execution_id, BlockingReason::WaitingForCapableWorker, ROUTE_BLOCK_DETAIL.into())
                    .await;
            }
            Err(e) => debug!(%execution_id, error = %e, "scheduler: grant refused; next partition"),
        }
        if let Some(quota) = admitted
            && let Err(e) = self.backend.release_admission(&quota, &execution_id).await
        {
            warn!(%execution_id, %quota, error = %e, "scheduler: releasing quota admission failed");
        }
        None
    }

    /// Parks an execution in a blocked index; failures are logged only.
    async fn block(&self, execution_id: &ExecutionId, reason: BlockingReason, detail: String) {
        let args = BlockExecutionArgs { execution_id: execution_id.clone(), reason, detail };
        match self.backend.block_execution_for_admission(args).await {
            Ok(()) => debug!(%execution_id, %reason, "scheduler: blocked"),
            Err(e) => warn!(%execution_id, %reason, error = %e, "scheduler: blocking failed"),
        }
    }
}

/// Checks worker capability tokens at ingress (spec 03 §6.2 step 3) and returns them as a set.
///
/// Errors: `Validation(InvalidInput)` for an empty token, a token with `,`, a control or
/// whitespace character, more than 256 tokens, or a sorted CSV longer than 4096 bytes.
pub fn validate_worker_capabilities(tokens: &[String]) -> Result<CapabilitySet, EngineError> {
    for token in tokens {
        if token.is_empty() {
            return Err(EngineError::invalid_input("capabilities: empty token"));
        }
        if token.contains(',') {
            return Err(EngineError::invalid_input(format!("capabilities: token {token:?} contains ','")));
        }
        if token.chars().any(|c| c.is_control() || c.is_whitespace()) {
            return Err(EngineError::invalid_input(format!(
                "capabilities: token {token:?} contains a control or whitespace character"
            )));
        }
    }
    if tokens.len() > CAPS_TOKENS_MAX {
        return Err(EngineError::invalid_input(format!(
            "capabilities: {} tokens, more than {CAPS_TOKENS_MAX}",
            tokens.len()
        )));
    }
    let set = CapabilitySet::new(tokens.iter().cloned());
    let csv_bytes = set.to_csv().len();
    if csv_bytes > CAPS_CSV_BYTES_MAX {
        return Err(EngineError::invalid_input(format!(
            "capabilities: sorted CSV is {csv_bytes} bytes, more than {CAPS_CSV_BYTES_MAX}"
        )));
    }
    Ok(set)
}

/// Validates ids, lane and grant TTL once, before anything is read or written.
fn validate_request(request: &ClaimRequest<'_>) -> Result<(), EngineError> {
    let probe = request.grant_args(ExecutionId::from_parts(0, uuid::Uuid::nil()));
    probe.validate().map_err(|e| match e {
        // Capabilities were checked above; anything else keeps the grant's own wording.
        EngineError::Validation { kind: ValidationKind::InvalidCapabilities, detail } => {
            EngineError::invalid_input(detail)
        }
        other => other,
    })
}

/// The partition probed at `offset`: `(start + cursor + offset) mod partitions`.
fn partition_at(start: u16, cursor: u16, offset: u16, partitions: u16) -> u16 {
    let sum = (u32::from(start) + u32::from(cursor) + u32::from(offset)) % u32::from(partitions);
    // A value below `partitions: u16` fits in u16.
    sum as u16
}

/// Whether every non-empty required token is held by the worker (case-sensitive).
fn is_subset(required: &[String], worker: &CapabilitySet) -> bool {
    required.iter().filter(|t| !t.is_empty()).all(|t| worker.0.contains(t))
}

/// The first dimension (in name order) with a hard limit > 0 and usage at or above it.
fn hard_breach(status: &BudgetStatus) -> Option<(&str, u64, u64)> {
    status.hard_limits.iter().filter(|(_, limit)| **limit > 0).find_map(|(dim, limit)| {
        let used = status.usage.get(dim).copied().unwrap_or(0);
        (used >= *limit).then_some((dim.as_str(), used, *limit))
    })
}

fn is_capability_mismatch(e: &EngineError) -> bool {
    matches!(e.root(), EngineError::Validation { kind: ValidationKind::CapabilityMismatch, .. })
}

/// The grant as the scheduler reports it: expiry on the scheduler's clock (spec 03 §6.2 f).
fn claim_grant(execution_id: ExecutionId, now: TimestampMs, request: &ClaimRequest<'_>) -> ClaimGrant {
    let tag = execution_id.hash_tag();
    let grant_key = ExecKeys::new(&tag, execution_id.as_str()).claim_grant();
    let ttl = i64::try_from(request.grant_ttl_ms).unwrap_or(i64::MAX);
    ClaimGrant {
        partition_key: execution_id.partition().key(),
        grant_key,
        expires_at_ms: now.saturating_add(ttl),
        execution_id,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn caps(tokens: &[&str]) -> Vec<String> {
        tokens.iter().map(|t| (*t).to_owned()).collect()
    }

    #[test]
    fn capability_ingress_rules() {
        assert!(validate_worker_capabilities(&caps(&["gpu", "cuda"])).is_ok());
        assert!(validate_worker_capabilities(&[]).is_ok());
        for bad in ["", "a,b", "a b", "a\tb", "a\u{7f}", "a\u{a0}b"] {
            let e = validate_worker_capabilities(&caps(&[bad]));
            assert!(
                matches!(e, Err(EngineError::Validation { kind: ValidationKind::InvalidInput, .. })),
                "{bad:?}: {e:?}"
            );
        }
        let many: Vec<String> = (0..=CAPS_TOKENS_MAX).map(|i| format!("t{i}")).collect();
        assert!(validate_worker_capabilities(&many).is_err());
        let long: Vec<String> = (0..200).map(|i| format!("{i:0>30}")).collect();
        assert!(validate_worker_capabilities(&long).is_err());
    }

    #[test]
    fn subset_is_case_sensitive_and_ignores_empty_tokens() {
        let worker = CapabilitySet::new(["gpu", "cuda"]);
        assert!(is_subset(&caps(&[]), &worker));
        assert!(is_subset(&caps(&["gpu", ""]), &worker));
        assert!(!is_subset(&caps(&["GPU"]), &worker));
        assert!(!is_subset(&caps(&["gpu", "tpu"]), &worker));
    }

    #[test]
    fn partition_window_wraps() {
        assert_eq!(partition_at(250, 10, 0, 256), 4);
        assert_eq!(partition_at(u16::MAX, u16::MAX, u16::MAX, 7), ((3 * 65_535u32) % 7) as u16);
    }

    #[test]
    fn hard_breach_needs_limit_and_usage_at_limit() {
        let mut status = BudgetStatus {
            budget_id: BudgetId::default(),
            scope_type: String::new(),
            scope_id: String::new(),
            enforcement_mode: String::new(),
            usage: BTreeMap::from([("a".to_owned(), 5), ("b".to_owned(), 9)]),
            hard_limits: BTreeMap::from([("a".to_owned(), 0), ("b".to_owned(), 10), ("c".to_owned(), 1)]),
            soft_limits: BTreeMap::new(),
            breach_count: 0,
            soft_breach_count: 0,
            last_breach_at: None,
            last_breach_dim: None,
            next_reset_at: None,
            created_at: None,
        };
        assert_eq!(hard_breach(&status), None);
        status.usage.insert("b".to_owned(), 10);
        assert_eq!(hard_breach(&status), Some(("b", 10, 10)));
    }
}
