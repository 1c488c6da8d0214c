//! Budgets and quotas (spec 03 §3–§4): one `Args` and one outcome per
//! contract, checked by [`Validate`] before any backend reads or writes.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::contracts::{NAME_BYTES_MAX, Validate, check_name, check_text};
use crate::error::EngineError;
use crate::ids::{BudgetId, ExecutionId, QuotaPolicyId, TimestampMs};

/// Most dimensions a budget definition or one usage report may carry.
pub const BUDGET_DIMENSIONS_MAX: usize = 64;
/// How long a usage-report dedup marker lives, in milliseconds (24 h).
pub const USAGE_DEDUP_TTL_MS: i64 = 86_400_000;
/// Longest quota window, in seconds (one year).
pub const QUOTA_WINDOW_SECONDS_MAX: u64 = 86_400 * 365;

/// Largest budget limit, usage delta or quota limit (2^53 − 1): every backend holds
/// it exactly, including one whose scripts keep numbers as doubles.
pub const ADMISSION_VALUE_MAX: u64 = (1 << 53) - 1;

/// Checks one budget or quota number against [`ADMISSION_VALUE_MAX`].
fn check_value(field: &str, v: u64) -> Result<(), EngineError> {
    crate::contracts::check_range(field, v, 0, ADMISSION_VALUE_MAX)
}

/// Checks a dimension count against [`BUDGET_DIMENSIONS_MAX`].
fn check_dimension_count(count: usize) -> Result<(), EngineError> {
    if count > BUDGET_DIMENSIONS_MAX {
        return Err(EngineError::invalid_input(format!(
            "too_many_dimensions: {count} > {BUDGET_DIMENSIONS_MAX}"
        )));
    }
    Ok(())
}

/// Checks an optional dedup or idempotency key.
fn check_key(field: &str, key: Option<&String>) -> Result<(), EngineError> {
    match key {
        Some(k) => check_text(field, k, NAME_BYTES_MAX),
        None => Ok(()),
    }
}

/// Arguments of `create_budget` (spec 03 §3.2.1).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CreateBudgetArgs {
    /// Caller-minted id.
    pub budget_id: BudgetId,
    /// Stored only.
    pub scope_type: String,
    /// Stored only.
    pub scope_id: String,
    /// Stored only.
    pub enforcement_mode: String,
    /// Stored only.
    pub on_hard_limit: String,
    /// Stored only.
    pub on_soft_limit: String,
    /// Periodic reset interval; 0 disables resets.
    pub reset_interval_ms: u64,
    /// Dimension names, parallel to the two limit arrays.
    pub dimensions: Vec<String>,
    /// Hard limit per dimension; 0 means no limit.
    pub hard_limits: Vec<u64>,
    /// Soft limit per dimension; 0 means no limit.
    pub soft_limits: Vec<u64>,
}

impl Validate for CreateBudgetArgs {
    fn validate(&self) -> Result<(), EngineError> {
        check_dimension_count(self.dimensions.len())?;
        let n = self.dimensions.len();
        if self.hard_limits.len() != n || self.soft_limits.len() != n {
            return Err(EngineError::invalid_input(format!(
                "dimension_limit_array_mismatch: dimensions={n} hard_limits={} soft_limits={}",
                self.hard_limits.len(),
                self.soft_limits.len()
            )));
        }
        for d in &self.dimensions {
            check_name("dimensions", d)?;
        }
        for v in &self.hard_limits {
            check_value("hard_limits", *v)?;
        }
        for v in &self.soft_limits {
            check_value("soft_limits", *v)?;
        }
        check_text("scope_type", &self.scope_type, NAME_BYTES_MAX)?;
        check_text("scope_id", &self.scope_id, NAME_BYTES_MAX)?;
        check_text("enforcement_mode", &self.enforcement_mode, NAME_BYTES_MAX)?;
        check_text("on_hard_limit", &self.on_hard_limit, NAME_BYTES_MAX)?;
        check_text("on_soft_limit", &self.on_soft_limit, NAME_BYTES_MAX)
    }
}

/// Outcome of `create_budget`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub enum CreateBudgetOutcome {
    /// The budget was created.
    Created {
        /// Its id.
        budget_id: BudgetId,
    },
    /// A budget with this id already existed; nothing changed.
    AlreadySatisfied {
        /// Its id.
        budget_id: BudgetId,
    },
}

/// Arguments of `report_usage` (spec 03 §3.2.2).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReportUsageArgs {
    /// Target budget.
    pub budget_id: BudgetId,
    /// `(dimension, delta)` pairs, applied all-or-nothing in order.
    pub dimensions: Vec<(String, u64)>,
    /// Replay guard; a repeated key answers `AlreadyApplied` for 24 h.
    pub dedup_key: Option<String>,
}

impl Validate for ReportUsageArgs {
    fn validate(&self) -> Result<(), EngineError> {
        check_dimension_count(self.dimensions.len())?;
        for (d, v) in &self.dimensions {
            check_name("dimensions", d)?;
            check_value("dimensions", *v)?;
        }
        check_key("dedup_key", self.dedup_key.as_ref())
    }
}

/// Arguments of `record_spend` (spec 03 §3.2.3).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RecordSpendArgs {
    /// Target budget.
    pub budget_id: BudgetId,
    /// Execution whose ledger records the spend.
    pub execution_id: ExecutionId,
    /// Delta per dimension.
    pub deltas: BTreeMap<String, u64>,
    /// Replay guard, shared namespace with `report_usage` dedup keys.
    pub idempotency_key: Option<String>,
}

impl Validate for RecordSpendArgs {
    fn validate(&self) -> Result<(), EngineError> {
        check_dimension_count(self.deltas.len())?;
        for (d, v) in &self.deltas {
            check_name("deltas", d)?;
            check_value("deltas", *v)?;
        }
        check_key("idempotency_key", self.idempotency_key.as_ref())
    }
}

/// Outcome of `report_usage` and `record_spend`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub enum ReportUsageResult {
    /// Applied; no limit crossed.
    Ok,
    /// Applied; the first dimension past its soft limit.
    SoftBreach {
        /// Dimension.
        dimension: String,
        /// Usage after the increment.
        current_usage: u64,
        /// The soft limit.
        soft_limit: u64,
    },
    /// Rejected; nothing applied.
    HardBreach {
        /// Dimension.
        dimension: String,
        /// Usage before the (rejected) increment.
        current_usage: u64,
        /// The hard limit.
        hard_limit: u64,
    },
    /// The dedup key was already applied; nothing changed.
    AlreadyApplied,
}

/// A budget's definition, limits, usage and counters (spec 03 §3.3).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BudgetStatus {
    /// Id.
    pub budget_id: BudgetId,
    /// Stored only.
    pub scope_type: String,
    /// Stored only.
    pub scope_id: String,
    /// Stored only.
    pub enforcement_mode: String,
    /// Usage per dimension.
    pub usage: BTreeMap<String, u64>,
    /// Hard limit per dimension.
    pub hard_limits: BTreeMap<String, u64>,
    /// Soft limit per dimension.
    pub soft_limits: BTreeMap<String, u64>,
    /// Hard breaches since creation.
    pub breach_count: u64,
    /// Soft breaches since creation.
    pub soft_breach_count: u64,
    /// Last hard breach time (cleared by reset).
    pub last_breach_at: Option<TimestampMs>,
    /// Last hard-breached dimension (cleared by reset).
    pub last_breach_dim: Option<String>,
    /// Next scheduled reset.
    pub next_reset_at: Option<TimestampMs>,
    /// Creation time.
    pub created_at: Option<TimestampMs>,
}

/// Arguments of `create_quota_policy` (spec 03 §4.2.1).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CreateQuotaPolicyArgs {
    /// Caller-minted id.
    pub quota_policy_id: QuotaPolicyId,
    /// Sliding window length; 0 disables the rate limit window.
    pub window_seconds: u64,
    /// Admissions per window; 0 disables the rate limit.
    pub max_requests_per_window: u64,
    /// Concurrency cap; 0 disables it.
    pub max_concurrent: u64,
}

impl Validate for CreateQuotaPolicyArgs {
    fn validate(&self) -> Result<(), EngineError> {
        crate::contracts::check_range("window_seconds", self.window_seconds, 0, QUOTA_WINDOW_SECONDS_MAX)?;
        check_value("max_requests_per_window", self.max_requests_per_window)?;
        check_value("max_concurrent", self.max_concurrent)
    }
}

/// Outcome of `create_quota_policy`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub enum CreateQuotaOutcome {
    /// The policy was created.
    Created {
        /// Its id.
        quota_policy_id: QuotaPolicyId,
    },
    /// A policy with this id already existed; nothing changed.
    AlreadySatisfied {
        /// Its id.
        quota_policy_id: QuotaPolicyId,
    },
}

/// Arguments of `check_admission` (spec 03 §4.2.2); limits come from the caller.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CheckAdmissionArgs {
    /// Policy whose window, guards and counter are used.
    pub quota_policy_id: QuotaPolicyId,
    /// Execution asking for admission.
    pub execution_id: ExecutionId,
    /// Window length; 0 means no window and no guard.
    pub window_seconds: u64,
    /// Admissions per window; 0 disables the rate check.
    pub rate_limit: u64,
    /// Concurrency cap; 0 disables the concurrency check.
    pub concurrency_cap: u64,
}

impl Validate for CheckAdmissionArgs {
    fn validate(&self) -> Result<(), EngineError> {
        crate::contracts::check_range("window_seconds", self.window_seconds, 0, QUOTA_WINDOW_SECONDS_MAX)?;
        check_value("rate_limit", self.rate_limit)?;
        check_value("concurrency_cap", self.concurrency_cap)
    }
}

/// Outcome of `check_admission`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub enum CheckAdmissionResult {
    /// Admitted and recorded.
    Admitted,
    /// A live admission guard already exists for this execution.
    AlreadyAdmitted,
    /// The window is full; retry after this many milliseconds.
    RateExceeded {
        /// Time until the oldest window entry leaves the window.
        retry_after_ms: u64,
    },
    /// The concurrency counter is at its cap.
    ConcurrencyExceeded,
}

/// A quota policy's stored limits (spec 03 §4.3).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct QuotaPolicyLimits {
    /// Admissions per window; 0 disables.
    pub max_requests_per_window: u64,
    /// Window length in seconds.
    pub requests_per_window_seconds: u64,
    /// Concurrency cap; 0 disables.
    pub active_concurrency_cap: u64,
    /// Retry jitter; never persisted, so always 0.
    pub jitter_ms: u64,
}

impl QuotaPolicyLimits {
    /// Whether neither the rate limit nor the concurrency cap is enabled.
    pub fn is_unlimited(&self) -> bool {
        self.max_requests_per_window == 0 && self.active_concurrency_cap == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn budget(dims: usize, hard: usize, soft: usize) -> CreateBudgetArgs {
        CreateBudgetArgs {
            budget_id: BudgetId::default(),
            scope_type: "tenant".into(),
            scope_id: "t1".into(),
            enforcement_mode: "strict".into(),
            on_hard_limit: "fail".into(),
            on_soft_limit: "warn".into(),
            reset_interval_ms: 0,
            dimensions: (0..dims).map(|i| format!("d{i}")).collect(),
            hard_limits: vec![0; hard],
            soft_limits: vec![0; soft],
        }
    }

    fn detail(e: EngineError) -> String {
        match e {
            EngineError::Validation { detail, .. } => detail,
            other => format!("{other:?}"),
        }
    }

    #[test]
    fn create_budget_bounds() {
        assert!(budget(3, 3, 3).validate().is_ok());
        assert!(
            detail(budget(3, 2, 3).validate().unwrap_err()).starts_with("dimension_limit_array_mismatch")
        );
        assert!(detail(budget(65, 65, 65).validate().unwrap_err()).starts_with("too_many_dimensions"));
        let mut a = budget(1, 1, 1);
        a.dimensions[0] = String::new();
        assert!(a.validate().is_err());
    }

    #[test]
    fn unlimited_means_both_zero() {
        let mut l = QuotaPolicyLimits { requests_per_window_seconds: 60, ..Default::default() };
        assert!(l.is_unlimited());
        l.active_concurrency_cap = 1;
        assert!(!l.is_unlimited());
    }
}

#[cfg(test)]
mod value_bound_tests {
    use super::*;

    #[test]
    fn numbers_above_two_to_the_53_are_refused_everywhere() {
        let over = ADMISSION_VALUE_MAX + 1;
        let budget = |hard: u64| CreateBudgetArgs {
            budget_id: BudgetId::from_uuid(uuid::Uuid::nil()),
            scope_type: String::new(),
            scope_id: String::new(),
            enforcement_mode: String::new(),
            on_hard_limit: String::new(),
            on_soft_limit: String::new(),
            reset_interval_ms: 0,
            dimensions: vec!["d".into()],
            hard_limits: vec![hard],
            soft_limits: vec![0],
        };
        assert!(budget(ADMISSION_VALUE_MAX).validate().is_ok());
        assert!(budget(over).validate().is_err());
        let report = ReportUsageArgs {
            budget_id: BudgetId::from_uuid(uuid::Uuid::nil()),
            dimensions: vec![("d".into(), over)],
            dedup_key: None,
        };
        assert!(report.validate().is_err());
        let quota = CreateQuotaPolicyArgs {
            quota_policy_id: QuotaPolicyId::from_uuid(uuid::Uuid::nil()),
            window_seconds: 1,
            max_requests_per_window: over,
            max_concurrent: 0,
        };
        assert!(quota.validate().is_err());
    }
}
