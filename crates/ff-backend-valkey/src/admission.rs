//! The budgets and quotas families over `lua/admission.lua` (spec 03 §3–§4),
//! their global scanners, and the partitioned unblock scanner.
//!
//! A budget's records live in its `{b:M}` slot and a quota policy's in its
//! `{q:K}` slot (`ff_core::partition::{budget_partition, quota_partition}`), so
//! each contract is one FCALL on one slot. The unblock scanner spans slots (an
//! execution's partition, its budgets', its quota's, the worker registry), so
//! it runs here: it lists the blocked executions of a partition, checks each
//! attachment with its own call, and unblocks with `expected_reason` (the
//! function refuses if the execution moved meanwhile).

use std::collections::{BTreeMap, BTreeSet};

use ff_core::admission::*;
use ff_core::contracts::{ListWorkersArgs, ScanReport, ScannerKind, UnblockExecutionArgs, Validate};
use ff_core::partition::{budget_partition, quota_partition};
use ff_core::state::BlockingReason;
use ff_core::{BudgetId, EngineBackend, EngineError, ExecutionId, Namespace, QuotaPolicyId, TimestampMs};

use crate::wire::{self, num, protocol, slot};
use crate::{ValkeyBackend, arg};

/// Largest budget or quota number the Lua functions hold exactly (2^53 − 1).
pub const ADMISSION_VALUE_MAX: u64 = (1 << 53) - 1;
/// Worker registry page read by the unblock scanner's route check.
const WORKER_PAGE: usize = 256;

/// Refuses a number the Lua functions could not hold exactly.
fn check_value(field: &str, v: u64) -> Result<(), EngineError> {
    if v > ADMISSION_VALUE_MAX {
        return Err(EngineError::invalid_input(format!("{field}: over 2^53 - 1")));
    }
    Ok(())
}

/// A `{dim, usage, limit}` breach reply.
fn breach(r: &[String]) -> Result<(String, u64, u64), EngineError> {
    Ok((slot(r, 1)?.to_owned(), num(r, 2)?, num(r, 3)?))
}

impl ValkeyBackend {
    /// Calls a budget or quota function (`family` is `budget` or `quota`) on the id's slot.
    async fn policy_call(
        &self,
        function: &str,
        family: &str,
        tag: String,
        id: String,
        extra: Vec<Vec<u8>>,
        read_only: bool,
    ) -> Result<Vec<String>, EngineError> {
        let key = format!("{}ff:{family}:{tag}:{id}", self.cfg.key_prefix);
        let mut args =
            vec![self.now_arg(), self.cfg.key_prefix.clone().into_bytes(), tag.into_bytes(), id.into_bytes()];
        args.extend(extra);
        args.push(self.version.clone().into_bytes());
        let keys = [key];
        let r = if read_only {
            self.client.fcall_readonly(function, &keys, &args).await
        } else {
            self.client.fcall(function, &keys, &args).await
        };
        wire::texts(r.map_err(wire::engine_error)?)
    }

    async fn budget_call(
        &self,
        function: &str,
        id: &BudgetId,
        extra: Vec<Vec<u8>>,
        read_only: bool,
    ) -> Result<Vec<String>, EngineError> {
        let tag = budget_partition(&id.uuid(), &self.cfg.partitions).hash_tag();
        self.policy_call(function, "budget", tag, id.to_string(), extra, read_only).await
    }

    async fn quota_call(
        &self,
        function: &str,
        id: &QuotaPolicyId,
        extra: Vec<Vec<u8>>,
        read_only: bool,
    ) -> Result<Vec<String>, EngineError> {
        let tag = quota_partition(&id.uuid(), &self.cfg.partitions).hash_tag();
        self.policy_call(function, "quota", tag, id.to_string(), extra, read_only).await
    }

    /// `create_budget` (spec 03 §3.2.1).
    pub(crate) async fn create_budget_call(
        &self,
        a: CreateBudgetArgs,
    ) -> Result<CreateBudgetOutcome, EngineError> {
        a.validate()?;
        check_value("reset_interval_ms", a.reset_interval_ms)?;
        let mut extra = vec![
            arg(&a.scope_type),
            arg(&a.scope_id),
            arg(&a.enforcement_mode),
            arg(&a.on_hard_limit),
            arg(&a.on_soft_limit),
            arg(a.reset_interval_ms),
            arg(a.dimensions.len()),
        ];
        for ((dim, hard), soft) in a.dimensions.iter().zip(&a.hard_limits).zip(&a.soft_limits) {
            check_value("hard_limits", *hard)?;
            check_value("soft_limits", *soft)?;
            extra.extend([arg(dim), arg(hard), arg(soft)]);
        }
        let r = self.budget_call("ff_create_budget", &a.budget_id, extra, false).await?;
        match slot(&r, 0)? {
            "created" => Ok(CreateBudgetOutcome::Created { budget_id: a.budget_id }),
            "already_satisfied" => Ok(CreateBudgetOutcome::AlreadySatisfied { budget_id: a.budget_id }),
            other => Err(protocol(format!("create budget reply {other:?}"))),
        }
    }

    /// The shared body of `report_usage_and_check` and `record_spend`.
    pub(crate) async fn charge_call(
        &self,
        id: &BudgetId,
        deltas: &[(String, u64)],
        dedup_key: Option<&str>,
        execution: Option<&ExecutionId>,
    ) -> Result<ReportUsageResult, EngineError> {
        let mut extra = vec![
            arg(dedup_key.unwrap_or_default()),
            arg(execution.map(ExecutionId::as_str).unwrap_or_default()),
            arg(deltas.len()),
        ];
        for (dim, delta) in deltas {
            check_value("dimensions", *delta)?;
            extra.extend([arg(dim), arg(delta)]);
        }
        let r = self.budget_call("ff_charge_budget", id, extra, false).await?;
        match slot(&r, 0)? {
            "ok" => Ok(ReportUsageResult::Ok),
            "already_applied" => Ok(ReportUsageResult::AlreadyApplied),
            "soft_breach" => {
                let (dimension, current_usage, soft_limit) = breach(&r)?;
                Ok(ReportUsageResult::SoftBreach { dimension, current_usage, soft_limit })
            }
            "hard_breach" => {
                let (dimension, current_usage, hard_limit) = breach(&r)?;
                Ok(ReportUsageResult::HardBreach { dimension, current_usage, hard_limit })
            }
            other => Err(protocol(format!("charge reply {other:?}"))),
        }
    }

    /// `release_budget` (spec 03 §3.2.4).
    pub(crate) async fn release_budget_call(
        &self,
        id: &BudgetId,
        e: &ExecutionId,
    ) -> Result<bool, EngineError> {
        let r = self.budget_call("ff_release_budget", id, vec![arg(e.as_str())], false).await?;
        Ok(slot(&r, 0)? == "1")
    }

    /// `reset_budget` (spec 03 §3.2.5).
    pub(crate) async fn reset_budget_call(&self, id: &BudgetId) -> Result<Option<TimestampMs>, EngineError> {
        let r = self.budget_call("ff_reset_budget", id, Vec::new(), false).await?;
        if slot(&r, 0)?.is_empty() { Ok(None) } else { num(&r, 0).map(Some) }
    }

    /// `get_budget_status` (spec 03 §3.3).
    pub(crate) async fn budget_status_call(&self, id: &BudgetId) -> Result<BudgetStatus, EngineError> {
        let tag = budget_partition(&id.uuid(), &self.cfg.partitions).hash_tag();
        let key = format!("{}ff:budget:{tag}:{id}", self.cfg.key_prefix);
        let args = vec![
            self.now_arg(),
            self.cfg.key_prefix.clone().into_bytes(),
            tag.into_bytes(),
            id.to_string().into_bytes(),
            self.version.clone().into_bytes(),
        ];
        let v = self
            .client
            .fcall_readonly("ff_budget_status", &[key], &args)
            .await
            .map_err(wire::engine_error)?;
        let mut parts = wire::array(v)?.into_iter();
        let (Some(def), Some(usage), Some(limits)) = (parts.next(), parts.next(), parts.next()) else {
            return Err(EngineError::NotFound { entity: "budget" });
        };
        let def: BTreeMap<String, String> = wire::pairs(def)?.into_iter().collect();
        let number = |s: &str| s.parse::<u64>().map_err(|_| protocol(format!("budget number {s:?}")));
        let mut usage_map = BTreeMap::new();
        for (dim, v) in wire::pairs(usage)? {
            if dim != "_init" {
                usage_map.insert(dim, number(&v)?);
            }
        }
        let (mut hard_limits, mut soft_limits) = (BTreeMap::new(), BTreeMap::new());
        for (field, v) in wire::pairs(limits)? {
            if let Some(dim) = field.strip_prefix("hard:") {
                hard_limits.insert(dim.to_owned(), number(&v)?);
            } else if let Some(dim) = field.strip_prefix("soft:") {
                soft_limits.insert(dim.to_owned(), number(&v)?);
            }
        }
        let text = |f: &str| def.get(f).cloned().unwrap_or_default();
        let count = |f: &str| def.get(f).map_or(Ok(0), |v| number(v));
        let time = |f: &str| -> Result<Option<TimestampMs>, EngineError> {
            def.get(f).map(|v| v.parse().map_err(|_| protocol(format!("budget {f} {v:?}")))).transpose()
        };
        Ok(BudgetStatus {
            budget_id: *id,
            scope_type: text("scope_type"),
            scope_id: text("scope_id"),
            enforcement_mode: text("enforcement_mode"),
            usage: usage_map,
            hard_limits,
            soft_limits,
            breach_count: count("breach_count")?,
            soft_breach_count: count("soft_breach_count")?,
            last_breach_at: time("last_breach_at")?,
            last_breach_dim: def.get("last_breach_dim").filter(|d| !d.is_empty()).cloned(),
            next_reset_at: time("next_reset_at")?,
            created_at: time("created_at")?,
        })
    }

    /// `create_quota_policy` (spec 03 §4.2.1).
    pub(crate) async fn create_quota_call(
        &self,
        a: CreateQuotaPolicyArgs,
    ) -> Result<CreateQuotaOutcome, EngineError> {
        a.validate()?;
        check_value("max_requests_per_window", a.max_requests_per_window)?;
        check_value("max_concurrent", a.max_concurrent)?;
        let extra = vec![arg(a.window_seconds), arg(a.max_requests_per_window), arg(a.max_concurrent)];
        let r = self.quota_call("ff_create_quota_policy", &a.quota_policy_id, extra, false).await?;
        let quota_policy_id = a.quota_policy_id;
        match slot(&r, 0)? {
            "created" => Ok(CreateQuotaOutcome::Created { quota_policy_id }),
            "already_satisfied" => Ok(CreateQuotaOutcome::AlreadySatisfied { quota_policy_id }),
            other => Err(protocol(format!("create quota reply {other:?}"))),
        }
    }

    /// `check_admission_and_record` (spec 03 §4.2.2).
    pub(crate) async fn check_admission_call(
        &self,
        a: CheckAdmissionArgs,
    ) -> Result<CheckAdmissionResult, EngineError> {
        a.validate()?;
        check_value("rate_limit", a.rate_limit)?;
        check_value("concurrency_cap", a.concurrency_cap)?;
        let extra = vec![
            arg(a.execution_id.as_str()),
            arg(a.window_seconds),
            arg(a.rate_limit),
            arg(a.concurrency_cap),
        ];
        let r = self.quota_call("ff_check_admission", &a.quota_policy_id, extra, false).await?;
        match slot(&r, 0)? {
            "admitted" => Ok(CheckAdmissionResult::Admitted),
            "already_admitted" => Ok(CheckAdmissionResult::AlreadyAdmitted),
            "rate_exceeded" => Ok(CheckAdmissionResult::RateExceeded { retry_after_ms: num(&r, 1)? }),
            "concurrency_exceeded" => Ok(CheckAdmissionResult::ConcurrencyExceeded),
            other => Err(protocol(format!("admission reply {other:?}"))),
        }
    }

    /// `release_admission` (spec 03 §4.2.3).
    pub(crate) async fn release_admission_call(
        &self,
        id: &QuotaPolicyId,
        e: &ExecutionId,
    ) -> Result<(), EngineError> {
        self.quota_call("ff_release_admission", id, vec![arg(e.as_str())], false).await?;
        Ok(())
    }

    /// `read_quota_policy_limits` (spec 03 §4.3).
    pub(crate) async fn quota_limits_call(
        &self,
        id: &QuotaPolicyId,
    ) -> Result<Option<QuotaPolicyLimits>, EngineError> {
        let r = self.quota_call("ff_quota_limits", id, Vec::new(), true).await?;
        if r.is_empty() {
            return Ok(None);
        }
        Ok(Some(QuotaPolicyLimits {
            requests_per_window_seconds: num(&r, 0)?,
            max_requests_per_window: num(&r, 1)?,
            active_concurrency_cap: num(&r, 2)?,
            jitter_ms: 0,
        }))
    }

    /// The global budget and quota scanners: they act for partition 0 only and visit
    /// every budget (quota) partition.
    pub(crate) async fn global_pass(
        &self,
        kind: ScannerKind,
        partition: u16,
        batch: usize,
    ) -> Result<ScanReport, EngineError> {
        let mut report = ScanReport::default();
        if partition != 0 {
            return Ok(report);
        }
        let (family, function, count, extra) = match kind {
            ScannerKind::BudgetReset => (
                "budget",
                "ff_budget_pass",
                self.cfg.partitions.num_budget_partitions,
                vec![arg("budget_reset")],
            ),
            ScannerKind::BudgetReconciler => (
                "budget",
                "ff_budget_pass",
                self.cfg.partitions.num_budget_partitions,
                vec![arg("budget_reconciler")],
            ),
            _ => ("quota", "ff_quota_pass", self.cfg.partitions.num_quota_partitions, Vec::new()),
        };
        let prefix_char = if family == "budget" { "b" } else { "q" };
        for p in 0..count {
            let tag = format!("{{{prefix_char}:{p}}}");
            let key = format!("{}ff:idx:{tag}:{family}_policies", self.cfg.key_prefix);
            let mut args = vec![self.now_arg(), self.cfg.key_prefix.clone().into_bytes(), tag.into_bytes()];
            args.extend(extra.iter().cloned());
            args.push(arg(batch));
            args.push(self.version.clone().into_bytes());
            let v = self.client.fcall(function, &[key], &args).await.map_err(wire::engine_error)?;
            let r = wire::texts(v)?;
            report.examined += num::<u32>(&r, 0)?;
            report.acted += num::<u32>(&r, 1)?;
        }
        Ok(report)
    }

    /// Whether any attached budget still has a hard dimension at or past its limit.
    async fn budget_still_blocked(&self, budget_ids: &str) -> Result<bool, EngineError> {
        for raw in budget_ids.split(',').filter(|b| !b.is_empty()) {
            let Ok(id) = BudgetId::parse(raw) else { continue };
            if !self.budget_call("ff_budget_hard_breach", &id, Vec::new(), true).await?.is_empty() {
                return Ok(true);
            }
        }
        Ok(false)
    }

    /// The union of the capabilities of a namespace's live workers.
    async fn live_capabilities(&self, namespace: &Namespace) -> Result<BTreeSet<String>, EngineError> {
        let mut union = BTreeSet::new();
        let mut after = None;
        loop {
            let args =
                ListWorkersArgs { namespace: namespace.clone(), after: after.clone(), limit: WORKER_PAGE };
            let page = self.list_workers(args).await?;
            for w in &page.workers {
                union.extend(w.capabilities.0.iter().cloned());
            }
            match page.cursor {
                Some(c) if after.as_ref() != Some(&c) => after = Some(c),
                _ => return Ok(union),
            }
        }
    }

    /// The unblock scanner (spec 03 §7.3.6) over one execution partition.
    pub(crate) async fn unblock_pass(&self, partition: u16, batch: usize) -> Result<ScanReport, EngineError> {
        let v = self.partition_call("ff_list_blocked", partition, vec![arg(batch)], true).await?;
        let mut report = ScanReport::default();
        let mut route_caps: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
        for row in wire::array(v)? {
            let r = wire::texts(row)?;
            report.examined += 1;
            let (expected, actual) = (slot(&r, 1)?, slot(&r, 2)?);
            if actual != expected {
                continue;
            }
            let Some(reason) = BlockingReason::parse(expected) else { continue };
            let cleared = match reason {
                BlockingReason::WaitingForBudget => !self.budget_still_blocked(slot(&r, 3)?).await?,
                BlockingReason::WaitingForQuota => match QuotaPolicyId::parse(slot(&r, 4)?) {
                    Ok(q) => {
                        self.quota_call("ff_quota_still_blocked", &q, Vec::new(), false).await?.first()
                            != Some(&"1".to_owned())
                    }
                    Err(_) => true,
                },
                _ => {
                    let required: Vec<&str> = slot(&r, 5)?.split(',').filter(|t| !t.is_empty()).collect();
                    let ns = slot(&r, 6)?.to_owned();
                    if !required.is_empty() && !route_caps.contains_key(&ns) {
                        let caps = self.live_capabilities(&Namespace::new(ns.clone())).await?;
                        route_caps.insert(ns.clone(), caps);
                    }
                    required.iter().all(|t| route_caps.get(&ns).is_some_and(|u| u.contains(*t)))
                }
            };
            if !cleared {
                continue;
            }
            let id =
                ExecutionId::parse(slot(&r, 0)?).map_err(|e| protocol(format!("blocked member: {e}")))?;
            let args = UnblockExecutionArgs { execution_id: id, expected_reason: Some(reason) };
            match self.unblock_execution(args).await {
                Ok(()) => report.acted += 1,
                // The execution moved since it was listed: nothing to unblock.
                Err(e @ EngineError::Transport { .. }) => return Err(e),
                Err(_) => {}
            }
        }
        Ok(report)
    }
}
