//! Budgets and quotas (spec 03 §3–§4, reconciler §7.3.8).
//!
//! A budget is one [`BudgetRecord`] (definition, limits, usage, counters and
//! per-execution spend ledgers) under `RecordKind::Budget`; usage-report dedup
//! markers are separate `RecordKind::UsageDedup` records so they can lapse on
//! their own. A quota policy is one [`QuotaRecord`] (definition, concurrency
//! counter, admission guards) plus one sliding window index per policy,
//! `IndexKey::QuotaWindow(<policy id>)`: the spec's dimension argument is
//! ignored, so the scheduler, the unblock scanner and the reconciler all see
//! the same admission history.

use std::collections::BTreeMap;

use ff_core::admission::*;
use ff_core::contracts::Validate;
use ff_core::error::ValidationKind;
use ff_core::{BudgetId, EngineError, ExecutionId, QuotaPolicyId, TimestampMs};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::records::{IndexKey, RecordKind};
use crate::store::{Store, StoreResult};

/// Window entries removed per `index_range` page while trimming.
const WINDOW_TRIM_PAGE_MAX: usize = 1000;

/// A usage field that is never shown by `get_budget_status` (spec 03 §3.3).
const USAGE_HIDDEN_FIELD: &str = "_init";

/// A budget: definition, limits, usage, counters and spend ledgers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BudgetRecord {
    /// Id.
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
    /// Hard limit per dimension; 0 means no limit.
    pub hard_limits: BTreeMap<String, u64>,
    /// Soft limit per dimension; 0 means no limit.
    pub soft_limits: BTreeMap<String, u64>,
    /// Usage per dimension.
    pub usage: BTreeMap<String, u64>,
    /// Hard breaches.
    pub breach_count: u64,
    /// Soft breaches.
    pub soft_breach_count: u64,
    /// Resets performed.
    pub reset_count: u64,
    /// Last hard breach time; cleared by reset.
    pub last_breach_at: Option<TimestampMs>,
    /// Last hard-breached dimension; cleared by reset.
    pub last_breach_dim: Option<String>,
    /// Last reset time.
    pub last_reset_at: Option<TimestampMs>,
    /// Next scheduled reset (mirrors `IndexKey::BudgetResets`).
    pub next_reset_at: Option<TimestampMs>,
    /// Creation time.
    pub created_at: TimestampMs,
    /// Last write by a budget contract.
    pub last_updated_at: TimestampMs,
    /// Spend per execution id, per dimension (`record_spend`); not cleared by reset.
    pub ledgers: BTreeMap<String, BTreeMap<String, u64>>,
    /// Set by the budget reconciler while a hard limit is exceeded (kept out of `usage`).
    #[serde(default)]
    pub breached_at: Option<TimestampMs>,
}

/// A quota policy's definition, concurrency counter and admission guards.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct QuotaRecord {
    /// Id.
    pub quota_policy_id: QuotaPolicyId,
    /// Window length in seconds.
    pub requests_per_window_seconds: u64,
    /// Admissions per window; 0 disables.
    pub max_requests_per_window: u64,
    /// Concurrency cap; 0 disables.
    pub active_concurrency_cap: u64,
    /// Creation time; `None` when only admission state exists (no definition).
    pub created_at: Option<TimestampMs>,
    /// The concurrency counter (spec 03 §4.4 semantics).
    pub concurrency: u64,
    /// Admission guards: execution id → expiry; a guard lives while `now < expiry`.
    pub guards: BTreeMap<String, TimestampMs>,
}

impl QuotaRecord {
    /// Admission state with no definition, for a policy id nobody created.
    fn stub(id: QuotaPolicyId) -> Self {
        Self {
            quota_policy_id: id,
            requests_per_window_seconds: 0,
            max_requests_per_window: 0,
            active_concurrency_cap: 0,
            created_at: None,
            concurrency: 0,
            guards: BTreeMap::new(),
        }
    }

    fn is_defined(&self) -> bool {
        self.created_at.is_some()
    }
}

/// A usage-report dedup marker.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UsageDedup {
    /// The marker lapses at this instant.
    pub expires_at: TimestampMs,
}

fn get<T: DeserializeOwned>(store: &dyn Store, kind: RecordKind, key: &str) -> StoreResult<Option<T>> {
    match store.get_record(kind, key)? {
        None => Ok(None),
        Some(json) => serde_json::from_str(&json).map(Some).map_err(|e| {
            EngineError::validation(ValidationKind::Corruption, format!("{}: {key}: {e}", kind.as_str()))
        }),
    }
}

fn put<T: Serialize>(store: &mut dyn Store, kind: RecordKind, key: &str, v: &T) -> StoreResult<()> {
    let json = serde_json::to_string(v).map_err(|e| {
        EngineError::validation(ValidationKind::Corruption, format!("{}: {e}", kind.as_str()))
    })?;
    store.put_record(kind, key, &json)
}

fn budget_not_found() -> EngineError {
    EngineError::NotFound { entity: "budget" }
}

fn load_budget(store: &dyn Store, id: &BudgetId) -> StoreResult<BudgetRecord> {
    get(store, RecordKind::Budget, &id.to_string())?.ok_or_else(budget_not_found)
}

fn put_budget(store: &mut dyn Store, rec: &BudgetRecord) -> StoreResult<()> {
    put(store, RecordKind::Budget, &rec.budget_id.to_string(), rec)
}

fn get_quota(store: &dyn Store, id: &QuotaPolicyId) -> StoreResult<Option<QuotaRecord>> {
    get(store, RecordKind::QuotaPolicy, &id.to_string())
}

fn put_quota(store: &mut dyn Store, rec: &QuotaRecord) -> StoreResult<()> {
    put(store, RecordKind::QuotaPolicy, &rec.quota_policy_id.to_string(), rec)
}

fn window_key(id: &QuotaPolicyId) -> IndexKey {
    IndexKey::QuotaWindow(id.to_string())
}

fn dedup_record_key(budget: &BudgetId, key: &str) -> String {
    format!("{budget}|{key}")
}

// ---------------------------------------------------------------------------
// Budgets
// ---------------------------------------------------------------------------

/// Creates a budget (spec 03 §3.2.1); an existing id answers `AlreadySatisfied`.
///
/// Errors: `Validation(InvalidInput)` for bad args.
pub fn create_budget(
    store: &mut dyn Store,
    now: TimestampMs,
    args: &CreateBudgetArgs,
) -> StoreResult<CreateBudgetOutcome> {
    args.validate()?;
    let budget_id = args.budget_id;
    store.index_add(&IndexKey::BudgetPolicies, &budget_id.to_string(), 0)?;
    if get::<BudgetRecord>(store, RecordKind::Budget, &budget_id.to_string())?.is_some() {
        return Ok(CreateBudgetOutcome::AlreadySatisfied { budget_id });
    }
    // Later duplicates of a dimension overwrite earlier ones, as the per-field writes do.
    let mut hard_limits = BTreeMap::new();
    let mut soft_limits = BTreeMap::new();
    for ((dim, hard), soft) in args.dimensions.iter().zip(&args.hard_limits).zip(&args.soft_limits) {
        hard_limits.insert(dim.clone(), *hard);
        soft_limits.insert(dim.clone(), *soft);
    }
    let next_reset_at = next_reset(now, args.reset_interval_ms);
    let rec = BudgetRecord {
        budget_id,
        scope_type: args.scope_type.clone(),
        scope_id: args.scope_id.clone(),
        enforcement_mode: args.enforcement_mode.clone(),
        on_hard_limit: args.on_hard_limit.clone(),
        on_soft_limit: args.on_soft_limit.clone(),
        reset_interval_ms: args.reset_interval_ms,
        hard_limits,
        soft_limits,
        usage: BTreeMap::new(),
        breach_count: 0,
        soft_breach_count: 0,
        reset_count: 0,
        last_breach_at: None,
        last_breach_dim: None,
        last_reset_at: None,
        next_reset_at,
        created_at: now,
        last_updated_at: now,
        ledgers: BTreeMap::new(),
        breached_at: None,
    };
    put_budget(store, &rec)?;
    if let Some(at) = next_reset_at {
        store.index_add(&IndexKey::BudgetResets, &budget_id.to_string(), at)?;
    }
    Ok(CreateBudgetOutcome::Created { budget_id })
}

/// Reports usage to a budget (spec 03 §3.2.2): dedup, hard check, apply, soft check.
///
/// Errors: `Validation(InvalidInput)` for bad args; `NotFound{budget}`.
pub fn report_usage(
    store: &mut dyn Store,
    now: TimestampMs,
    args: &ReportUsageArgs,
) -> StoreResult<ReportUsageResult> {
    args.validate()?;
    charge(store, now, &args.budget_id, &args.dimensions, args.dedup_key.as_deref(), None)
}

/// Records an execution's spend (spec 03 §3.2.3): as `report_usage`, plus its ledger.
///
/// Errors: `Validation(InvalidInput)` for bad args; `NotFound{budget}`.
pub fn record_spend(
    store: &mut dyn Store,
    now: TimestampMs,
    args: &RecordSpendArgs,
) -> StoreResult<ReportUsageResult> {
    args.validate()?;
    let deltas: Vec<(String, u64)> = args.deltas.iter().map(|(d, v)| (d.clone(), *v)).collect();
    charge(store, now, &args.budget_id, &deltas, args.idempotency_key.as_deref(), Some(&args.execution_id))
}

/// The shared body of `report_usage` and `record_spend`.
fn charge(
    store: &mut dyn Store,
    now: TimestampMs,
    budget_id: &BudgetId,
    deltas: &[(String, u64)],
    dedup_key: Option<&str>,
    execution: Option<&ExecutionId>,
) -> StoreResult<ReportUsageResult> {
    let mut rec = load_budget(store, budget_id)?;
    let dedup_key = dedup_key.filter(|k| !k.is_empty()).map(|k| dedup_record_key(budget_id, k));
    if let Some(key) = &dedup_key {
        let marker: Option<UsageDedup> = get(store, RecordKind::UsageDedup, key)?;
        if marker.is_some_and(|m| now < m.expires_at) {
            return Ok(ReportUsageResult::AlreadyApplied);
        }
    }
    if let Some(breach) = find_hard_breach(&rec.usage, &rec.hard_limits, deltas) {
        // Only the breach bookkeeping is written; the dedup key is not, so a retry re-evaluates.
        rec.breach_count = rec.breach_count.saturating_add(1);
        rec.last_breach_at = Some(now);
        rec.last_breach_dim = Some(breach.dimension.clone());
        rec.last_updated_at = now;
        put_budget(store, &rec)?;
        return Ok(ReportUsageResult::HardBreach {
            dimension: breach.dimension,
            current_usage: breach.usage,
            hard_limit: breach.limit,
        });
    }
    let soft = apply_deltas(&mut rec.usage, &rec.soft_limits, deltas);
    if let Some(eid) = execution.filter(|_| !deltas.is_empty()) {
        let ledger = rec.ledgers.entry(eid.to_string()).or_default();
        for (dim, delta) in deltas {
            let spent = ledger.entry(dim.clone()).or_insert(0);
            *spent = spent.saturating_add(*delta);
        }
    }
    rec.last_updated_at = now;
    if soft.is_some() {
        rec.soft_breach_count = rec.soft_breach_count.saturating_add(1);
    }
    put_budget(store, &rec)?;
    if let Some(key) = &dedup_key {
        let marker = UsageDedup { expires_at: now.saturating_add(USAGE_DEDUP_TTL_MS) };
        put(store, RecordKind::UsageDedup, key, &marker)?;
    }
    Ok(match soft {
        Some(b) => ReportUsageResult::SoftBreach {
            dimension: b.dimension,
            current_usage: b.usage,
            soft_limit: b.limit,
        },
        None => ReportUsageResult::Ok,
    })
}

/// Returns an execution's ledgered spend to the budget (spec 03 §3.2.4); true if released.
///
/// Usage is clamped at 0; an empty or absent ledger (or budget) is a no-op answering false.
pub fn release_budget(
    store: &mut dyn Store,
    _now: TimestampMs,
    budget_id: &BudgetId,
    execution_id: &ExecutionId,
) -> StoreResult<bool> {
    let Some(mut rec) = get::<BudgetRecord>(store, RecordKind::Budget, &budget_id.to_string())? else {
        return Ok(false);
    };
    let Some(ledger) = rec.ledgers.remove(execution_id.as_str()) else {
        return Ok(false);
    };
    if ledger.is_empty() {
        put_budget(store, &rec)?;
        return Ok(false);
    }
    for (dim, delta) in ledger.into_iter().filter(|(_, d)| *d > 0) {
        let used = rec.usage.entry(dim).or_insert(0);
        *used = used.saturating_sub(delta);
    }
    put_budget(store, &rec)?;
    Ok(true)
}

/// Zeroes a budget's usage and reschedules its reset (spec 03 §3.2.5); returns `next_reset_at`.
///
/// Ledgers are kept, so a later release clamps at 0. Errors: `NotFound{budget}`.
pub fn reset_budget(
    store: &mut dyn Store,
    now: TimestampMs,
    budget_id: &BudgetId,
) -> StoreResult<Option<i64>> {
    let mut rec = load_budget(store, budget_id)?;
    for used in rec.usage.values_mut() {
        *used = 0;
    }
    rec.reset_count = rec.reset_count.saturating_add(1);
    rec.last_reset_at = Some(now);
    rec.last_updated_at = now;
    rec.last_breach_at = None;
    rec.last_breach_dim = None;
    rec.next_reset_at = next_reset(now, rec.reset_interval_ms);
    put_budget(store, &rec)?;
    let member = budget_id.to_string();
    match rec.next_reset_at {
        Some(at) => store.index_add(&IndexKey::BudgetResets, &member, at)?,
        None => {
            store.index_remove(&IndexKey::BudgetResets, &member)?;
        }
    }
    Ok(rec.next_reset_at)
}

/// A budget's definition, limits, usage and counters (spec 03 §3.3).
///
/// Errors: `NotFound{budget}`.
pub fn get_budget_status(store: &dyn Store, budget_id: &BudgetId) -> StoreResult<BudgetStatus> {
    let rec = load_budget(store, budget_id)?;
    let non_empty = |s: Option<String>| s.filter(|v| !v.is_empty());
    Ok(BudgetStatus {
        budget_id: rec.budget_id,
        scope_type: rec.scope_type,
        scope_id: rec.scope_id,
        enforcement_mode: rec.enforcement_mode,
        usage: rec.usage.into_iter().filter(|(d, _)| d != USAGE_HIDDEN_FIELD).collect(),
        hard_limits: rec.hard_limits,
        soft_limits: rec.soft_limits,
        breach_count: rec.breach_count,
        soft_breach_count: rec.soft_breach_count,
        last_breach_at: rec.last_breach_at,
        last_breach_dim: non_empty(rec.last_breach_dim),
        next_reset_at: rec.next_reset_at,
        created_at: Some(rec.created_at),
    })
}

/// Budgets whose scheduled reset is due (`next_reset_at ≤ now`), oldest first, at most `limit`.
///
/// Unparsable index members are skipped with a warning.
pub fn due_budget_resets(store: &dyn Store, now: TimestampMs, limit: usize) -> StoreResult<Vec<BudgetId>> {
    let due = store.index_range(&IndexKey::BudgetResets, None, now, limit)?;
    Ok(due
        .into_iter()
        .filter_map(|(_, member)| match BudgetId::parse(&member) {
            Ok(id) => Some(id),
            Err(e) => {
                tracing::warn!(member, error = ?e, "budget_resets: unparsable member skipped");
                None
            }
        })
        .collect())
}

fn next_reset(now: TimestampMs, interval_ms: u64) -> Option<TimestampMs> {
    if interval_ms == 0 {
        return None;
    }
    Some(now.saturating_add(i64::try_from(interval_ms).unwrap_or(i64::MAX)))
}

/// A dimension that crossed a limit, with the usage to report and the limit.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Breach {
    dimension: String,
    usage: u64,
    limit: u64,
}

/// The first dimension whose usage would exceed its hard limit; reports the pre-increment usage.
///
/// Nothing is incremented, so the report is all-or-nothing. A dimension listed
/// more than once is checked against its running total within the report, so
/// one report can never carry usage past a hard limit.
fn find_hard_breach(
    usage: &BTreeMap<String, u64>,
    hard_limits: &BTreeMap<String, u64>,
    deltas: &[(String, u64)],
) -> Option<Breach> {
    let mut running: BTreeMap<&str, u64> = BTreeMap::new();
    deltas.iter().find_map(|(dim, delta)| {
        let current = *running.entry(dim.as_str()).or_insert_with(|| usage.get(dim).copied().unwrap_or(0));
        let next = current.saturating_add(*delta);
        running.insert(dim.as_str(), next);
        let limit = hard_limits.get(dim).copied().unwrap_or(0);
        (limit > 0 && next > limit).then(|| Breach { dimension: dim.clone(), usage: current, limit })
    })
}

/// Increments every dimension in order; returns the first one past its soft limit (post-increment usage).
fn apply_deltas(
    usage: &mut BTreeMap<String, u64>,
    soft_limits: &BTreeMap<String, u64>,
    deltas: &[(String, u64)],
) -> Option<Breach> {
    let mut first = None;
    for (dim, delta) in deltas {
        let used = usage.entry(dim.clone()).or_insert(0);
        *used = used.saturating_add(*delta);
        let limit = soft_limits.get(dim).copied().unwrap_or(0);
        if first.is_none() && limit > 0 && *used > limit {
            first = Some(Breach { dimension: dim.clone(), usage: *used, limit });
        }
    }
    first
}

// ---------------------------------------------------------------------------
// Quotas
// ---------------------------------------------------------------------------

/// Creates a quota policy (spec 03 §4.2.1); an existing definition answers `AlreadySatisfied`.
///
/// Admission state left by `check_admission_and_record` on an undefined id is kept,
/// except that the concurrency counter is set to 0 as the reference does.
/// Errors: `Validation(InvalidInput)` for bad args.
pub fn create_quota_policy(
    store: &mut dyn Store,
    now: TimestampMs,
    args: &CreateQuotaPolicyArgs,
) -> StoreResult<CreateQuotaOutcome> {
    args.validate()?;
    let quota_policy_id = args.quota_policy_id;
    let existing = get_quota(store, &quota_policy_id)?;
    if existing.as_ref().is_some_and(QuotaRecord::is_defined) {
        return Ok(CreateQuotaOutcome::AlreadySatisfied { quota_policy_id });
    }
    let mut rec = existing.unwrap_or_else(|| QuotaRecord::stub(quota_policy_id));
    rec.requests_per_window_seconds = args.window_seconds;
    rec.max_requests_per_window = args.max_requests_per_window;
    rec.active_concurrency_cap = args.max_concurrent;
    rec.created_at = Some(now);
    rec.concurrency = 0;
    put_quota(store, &rec)?;
    store.index_add(&IndexKey::QuotaPolicies, &quota_policy_id.to_string(), 0)?;
    Ok(CreateQuotaOutcome::Created { quota_policy_id })
}

/// Checks the caller's rate and concurrency limits and records an admission (spec 03 §4.2.2).
///
/// The limits come from `args`, not from the stored definition. An id with no
/// definition still works on those limits: its window, guards and counter are
/// kept in a definition-less record, so `read_quota_policy_limits` stays `None`
/// and a later `create_quota_policy` still creates. Refusals write only the window trim.
/// Errors: `Validation(InvalidInput)` for bad args.
pub fn check_admission_and_record(
    store: &mut dyn Store,
    now: TimestampMs,
    args: &CheckAdmissionArgs,
) -> StoreResult<CheckAdmissionResult> {
    args.validate()?;
    let mut rec =
        get_quota(store, &args.quota_policy_id)?.unwrap_or_else(|| QuotaRecord::stub(args.quota_policy_id));
    let eid = args.execution_id.to_string();
    if rec.guards.get(&eid).is_some_and(|expires_at| now < *expires_at) {
        return Ok(CheckAdmissionResult::AlreadyAdmitted);
    }
    let window_ms = window_ms(args.window_seconds);
    let key = window_key(&args.quota_policy_id);
    trim_window(store, &key, now.saturating_sub(window_ms))?;
    if args.rate_limit > 0 && store.index_count(&key)? >= args.rate_limit {
        let oldest = store.index_range(&key, None, i64::MAX, 1)?.first().map_or(now, |(score, _)| *score);
        return Ok(CheckAdmissionResult::RateExceeded {
            retry_after_ms: retry_after_ms(oldest, window_ms, now),
        });
    }
    if args.concurrency_cap > 0 && rec.concurrency >= args.concurrency_cap {
        return Ok(CheckAdmissionResult::ConcurrencyExceeded);
    }
    store.index_add(&key, &eid, now)?;
    // Lapsed guards are dead already; dropping them here only bounds the record.
    rec.guards.retain(|_, expires_at| now < *expires_at);
    if window_ms > 0 {
        rec.guards.insert(eid, now.saturating_add(window_ms));
    }
    if args.concurrency_cap > 0 {
        rec.concurrency = rec.concurrency.saturating_add(1);
    }
    put_quota(store, &rec)?;
    Ok(CheckAdmissionResult::Admitted)
}

/// Releases an admission after a failed claim (spec 03 §4.2.3).
///
/// Deletes the guard and decrements the counter if above 0 (as the reference
/// does, even when no guard existed); the window entry stays. An absent record is a no-op.
pub fn release_admission(
    store: &mut dyn Store,
    _now: TimestampMs,
    quota_policy_id: &QuotaPolicyId,
    execution_id: &ExecutionId,
) -> StoreResult<()> {
    let Some(mut rec) = get_quota(store, quota_policy_id)? else {
        return Ok(());
    };
    rec.guards.remove(execution_id.as_str());
    rec.concurrency = rec.concurrency.saturating_sub(1);
    put_quota(store, &rec)
}

/// A policy's stored limits (spec 03 §4.3); `None` when it has no definition.
pub fn read_quota_policy_limits(
    store: &dyn Store,
    quota_policy_id: &QuotaPolicyId,
) -> StoreResult<Option<QuotaPolicyLimits>> {
    Ok(get_quota(store, quota_policy_id)?.filter(QuotaRecord::is_defined).map(|rec| QuotaPolicyLimits {
        max_requests_per_window: rec.max_requests_per_window,
        requests_per_window_seconds: rec.requests_per_window_seconds,
        active_concurrency_cap: rec.active_concurrency_cap,
        jitter_ms: 0,
    }))
}

/// Reconciles one policy (spec 03 §7.3.8); true if the counter was corrected.
///
/// With a window configured, trims window entries older than the window; with
/// a cap configured, drops lapsed guards and sets the counter to the live
/// guard count. A policy without a definition is skipped (the reference only
/// walks created policies).
pub fn reconcile_quota(
    store: &mut dyn Store,
    now: TimestampMs,
    quota_policy_id: &QuotaPolicyId,
) -> StoreResult<bool> {
    let Some(mut rec) = get_quota(store, quota_policy_id)?.filter(QuotaRecord::is_defined) else {
        return Ok(false);
    };
    if rec.requests_per_window_seconds > 0 {
        let cutoff = now.saturating_sub(window_ms(rec.requests_per_window_seconds));
        trim_window(store, &window_key(quota_policy_id), cutoff)?;
    }
    if rec.active_concurrency_cap == 0 {
        return Ok(false);
    }
    let before = (rec.concurrency, rec.guards.len());
    rec.guards.retain(|_, expires_at| now < *expires_at);
    let live = rec.guards.len() as u64;
    let corrected = rec.concurrency != live;
    rec.concurrency = live;
    if before != (rec.concurrency, rec.guards.len()) {
        put_quota(store, &rec)?;
    }
    Ok(corrected)
}

/// The budget reconciler's step for one budget (spec 03 §7.3.7): sets or clears
/// the breach marker on the definition; true if it flipped.
///
/// Budgets with a periodic reset are skipped; an unknown id answers false.
pub fn reconcile_budget(store: &mut dyn Store, now: TimestampMs, budget_id: &BudgetId) -> StoreResult<bool> {
    let Some(mut rec) = get::<BudgetRecord>(store, RecordKind::Budget, &budget_id.to_string())? else {
        return Ok(false);
    };
    if rec.reset_interval_ms > 0 || rec.hard_limits.values().all(|l| *l == 0) {
        return Ok(false);
    }
    let breached = rec
        .hard_limits
        .iter()
        .any(|(dim, limit)| *limit > 0 && rec.usage.get(dim).copied().unwrap_or(0) > *limit);
    let flip = breached != rec.breached_at.is_some();
    if flip {
        rec.breached_at = breached.then_some(now);
        put_budget(store, &rec)?;
    }
    Ok(flip)
}

/// The first hard-limited dimension of a budget whose usage has reached its
/// limit, as `(dimension, used, limit)`; `None` for an unknown budget (spec 03 §6.2 c, §7.3.6).
pub fn budget_hard_breach(
    store: &dyn Store,
    budget_id: &BudgetId,
) -> StoreResult<Option<(String, u64, u64)>> {
    let Some(rec) = get::<BudgetRecord>(store, RecordKind::Budget, &budget_id.to_string())? else {
        return Ok(None);
    };
    Ok(rec.hard_limits.iter().find_map(|(dim, limit)| {
        let used = rec.usage.get(dim).copied().unwrap_or(0);
        (*limit > 0 && used >= *limit).then(|| (dim.clone(), used, *limit))
    }))
}

/// Whether a quota policy still refuses admission at `now` (spec 03 §7.3.6):
/// its window is full or its concurrency counter is at the cap. Trims the window.
pub fn quota_still_blocked(
    store: &mut dyn Store,
    now: TimestampMs,
    quota_policy_id: &QuotaPolicyId,
) -> StoreResult<bool> {
    let Some(rec) = get_quota(store, quota_policy_id)?.filter(QuotaRecord::is_defined) else {
        return Ok(false);
    };
    if rec.max_requests_per_window > 0 {
        let seconds = if rec.requests_per_window_seconds == 0 { 60 } else { rec.requests_per_window_seconds };
        let key = window_key(quota_policy_id);
        trim_window(store, &key, now.saturating_sub(window_ms(seconds)))?;
        if store.index_count(&key)? >= rec.max_requests_per_window {
            return Ok(true);
        }
    }
    Ok(rec.active_concurrency_cap > 0 && rec.concurrency >= rec.active_concurrency_cap)
}

/// Removes window entries scored at or before `cutoff`; returns how many.
fn trim_window(store: &mut dyn Store, key: &IndexKey, cutoff: TimestampMs) -> StoreResult<u64> {
    let mut removed = 0u64;
    loop {
        let page = store.index_range(key, None, cutoff, WINDOW_TRIM_PAGE_MAX)?;
        for (_, member) in &page {
            if store.index_remove(key, member)? {
                removed += 1;
            }
        }
        if page.len() < WINDOW_TRIM_PAGE_MAX {
            return Ok(removed);
        }
    }
}

/// A window length in milliseconds (`window_seconds` is bounded by validation).
fn window_ms(window_seconds: u64) -> i64 {
    i64::try_from(window_seconds.saturating_mul(1000)).unwrap_or(i64::MAX)
}

/// Time until the oldest window entry leaves the window, never negative.
fn retry_after_ms(oldest: TimestampMs, window_ms: i64, now: TimestampMs) -> u64 {
    u64::try_from(oldest.saturating_add(window_ms).saturating_sub(now)).unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn map(pairs: &[(&str, u64)]) -> BTreeMap<String, u64> {
        pairs.iter().map(|(k, v)| (k.to_string(), *v)).collect()
    }

    fn deltas(pairs: &[(&str, u64)]) -> Vec<(String, u64)> {
        pairs.iter().map(|(k, v)| (k.to_string(), *v)).collect()
    }

    fn breach(dim: &str, usage: u64, limit: u64) -> Option<Breach> {
        Some(Breach { dimension: dim.into(), usage, limit })
    }

    #[test]
    fn admission_hard_limit_allows_reaching_exactly_the_limit() {
        let usage = map(&[("tokens", 90)]);
        let hard = map(&[("tokens", 100)]);
        assert_eq!(find_hard_breach(&usage, &hard, &deltas(&[("tokens", 10)])), None);
        assert_eq!(find_hard_breach(&usage, &hard, &deltas(&[("tokens", 11)])), breach("tokens", 90, 100));
    }

    #[test]
    fn admission_hard_breach_reports_first_dim_and_pre_increment_usage() {
        let usage = map(&[("a", 5), ("b", 5)]);
        let hard = map(&[("a", 10), ("b", 6), ("c", 0)]);
        let d = deltas(&[("c", 1_000_000), ("b", 2), ("a", 100)]);
        assert_eq!(find_hard_breach(&usage, &hard, &d), breach("b", 5, 6));
    }

    #[test]
    fn admission_zero_or_missing_limit_means_unlimited() {
        let usage = map(&[]);
        let hard = map(&[("a", 0)]);
        assert_eq!(find_hard_breach(&usage, &hard, &deltas(&[("a", u64::MAX), ("z", 7)])), None);
    }

    #[test]
    fn admission_apply_increments_all_and_reports_first_soft_breach_post_value() {
        let mut usage = map(&[("a", 1)]);
        let soft = map(&[("a", 2), ("b", 3)]);
        let got = apply_deltas(&mut usage, &soft, &deltas(&[("b", 4), ("a", 5), ("c", 0)]));
        assert_eq!(got, breach("b", 4, 3));
        assert_eq!(usage, map(&[("a", 6), ("b", 4), ("c", 0)]));
    }

    #[test]
    fn admission_soft_limit_is_exclusive() {
        let mut usage = map(&[]);
        let soft = map(&[("a", 3)]);
        assert_eq!(apply_deltas(&mut usage, &soft, &deltas(&[("a", 3)])), None);
        assert_eq!(apply_deltas(&mut usage, &soft, &deltas(&[("a", 1)])), breach("a", 4, 3));
    }

    #[test]
    fn admission_retry_after_is_time_until_oldest_leaves_window() {
        assert_eq!(retry_after_ms(1_000, 60_000, 31_000), 30_000);
        assert_eq!(retry_after_ms(1_000, 60_000, 61_000), 0);
        assert_eq!(retry_after_ms(1_000, 60_000, 99_000), 0);
        assert_eq!(retry_after_ms(i64::MAX, 60_000, 0), u64::try_from(i64::MAX).unwrap_or(0));
    }

    #[test]
    fn admission_window_ms_and_next_reset() {
        assert_eq!(window_ms(0), 0);
        assert_eq!(window_ms(QUOTA_WINDOW_SECONDS_MAX), 31_536_000_000);
        assert_eq!(next_reset(1_000, 0), None);
        assert_eq!(next_reset(1_000, 500), Some(1_500));
    }

    #[test]
    fn admission_records_round_trip_through_json() {
        let mut rec = QuotaRecord::stub(QuotaPolicyId::default());
        rec.guards.insert("e".into(), 5);
        let json = serde_json::to_string(&rec).unwrap();
        assert_eq!(serde_json::from_str::<QuotaRecord>(&json).unwrap(), rec);
        assert!(!rec.is_defined());
    }
}
