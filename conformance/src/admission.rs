//! Budgets and quotas (spec 03 §3–§5, unblock scanner and reconcilers §7.3.6–§7.3.8):
//! every contract's outcomes and error codes, two golden transcripts, and a
//! property that random budget operations agree with a model of the spec and
//! never carry usage past a hard limit.
//!
//! The trait has no scheduler, so [`schedule`] plays the scheduler's admission
//! steps (spec 03 §6.2 c–e) through the trait: budget pre-check, quota
//! admission, block on refusal, otherwise grant and claim.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use ff_core::admission::*;
use ff_core::contracts::{BlockExecutionArgs, ScannerKind};
use ff_core::error::ValidationKind;
use ff_core::state::{BlockingReason, EligibilityState};
use ff_core::{
    BudgetId, ContractFamily, EngineBackend, EngineError, ExecutionId, PublicState, QuotaPolicyId,
};
use proptest::prelude::*;
use proptest::test_runner::{Config, RngAlgorithm, TestCaseError, TestRng, TestRunner};
use uuid::Uuid;

use crate::cases::assert_invariants;
use crate::{Case, Ctx, Group, Harness, case, rejects, simulated_only, untimed};

/// Budget and quota ids named in transcripts (`B<n>`, `Q<n>` for `n` below this).
const NAMED_IDS_MAX: u64 = 10;
/// Window the scheduler uses when a policy stores none (spec 03 §6.2 d).
const SCHEDULER_DEFAULT_WINDOW_SECONDS: u64 = 60;

fn harness(ctx: &Ctx) -> Harness {
    Harness::new(&ctx.fixture)
}

fn budget(n: u64) -> BudgetId {
    BudgetId::from_uuid(Uuid::from_u64_pair(0xb0d6e7, n))
}

fn quota(n: u64) -> QuotaPolicyId {
    QuotaPolicyId::from_uuid(Uuid::from_u64_pair(0x9007a, n))
}

/// An execution id for ledgers and admissions that need no execution record.
fn eid(n: u64) -> ExecutionId {
    ExecutionId::from_parts(0, Uuid::from_u64_pair(0xad, n))
}

/// Rewrites budget and quota ids into `B<n>` / `Q<n>`.
fn named(s: &str) -> String {
    let mut out = s.to_owned();
    for n in 0..NAMED_IDS_MAX {
        out = out.replace(&budget(n).to_string(), &format!("B{n}"));
        out = out.replace(&quota(n).to_string(), &format!("Q{n}"));
    }
    out
}

fn say(h: &mut Harness, line: String) {
    let line = named(&line);
    h.say(line);
}

/// A budget definition from `(dimension, hard, soft)` triples.
fn budget_args(n: u64, dims: &[(&str, u64, u64)], reset_interval_ms: u64) -> CreateBudgetArgs {
    CreateBudgetArgs {
        budget_id: budget(n),
        scope_type: "tenant".into(),
        scope_id: "t1".into(),
        enforcement_mode: "strict".into(),
        on_hard_limit: "fail".into(),
        on_soft_limit: "warn".into(),
        reset_interval_ms,
        dimensions: dims.iter().map(|(d, _, _)| (*d).to_owned()).collect(),
        hard_limits: dims.iter().map(|(_, h, _)| *h).collect(),
        soft_limits: dims.iter().map(|(_, _, s)| *s).collect(),
    }
}

fn report_args(n: u64, deltas: &[(&str, u64)], dedup_key: Option<&str>) -> ReportUsageArgs {
    ReportUsageArgs {
        budget_id: budget(n),
        dimensions: deltas.iter().map(|(d, v)| ((*d).to_owned(), *v)).collect(),
        dedup_key: dedup_key.map(str::to_owned),
    }
}

fn spend_args(n: u64, e: &ExecutionId, deltas: &[(&str, u64)], key: Option<&str>) -> RecordSpendArgs {
    RecordSpendArgs {
        budget_id: budget(n),
        execution_id: e.clone(),
        deltas: deltas.iter().map(|(d, v)| ((*d).to_owned(), *v)).collect(),
        idempotency_key: key.map(str::to_owned),
    }
}

fn quota_args(n: u64, window_seconds: u64, rate: u64, cap: u64) -> CreateQuotaPolicyArgs {
    CreateQuotaPolicyArgs {
        quota_policy_id: quota(n),
        window_seconds,
        max_requests_per_window: rate,
        max_concurrent: cap,
    }
}

fn admit_args(n: u64, e: &ExecutionId, window_seconds: u64, rate: u64, cap: u64) -> CheckAdmissionArgs {
    CheckAdmissionArgs {
        quota_policy_id: quota(n),
        execution_id: e.clone(),
        window_seconds,
        rate_limit: rate,
        concurrency_cap: cap,
    }
}

fn usage_text(r: &ReportUsageResult) -> String {
    match r {
        ReportUsageResult::Ok => "ok".into(),
        ReportUsageResult::SoftBreach { dimension, current_usage, soft_limit } => {
            format!("soft_breach {dimension} {current_usage}/{soft_limit}")
        }
        ReportUsageResult::HardBreach { dimension, current_usage, hard_limit } => {
            format!("hard_breach {dimension} {current_usage}/{hard_limit}")
        }
        ReportUsageResult::AlreadyApplied => "already_applied".into(),
        other => format!("{other:?}"),
    }
}

fn admission_text(r: &CheckAdmissionResult) -> String {
    match r {
        CheckAdmissionResult::Admitted => "admitted".into(),
        CheckAdmissionResult::AlreadyAdmitted => "already_admitted".into(),
        CheckAdmissionResult::RateExceeded { retry_after_ms } => {
            format!("rate_exceeded retry_after_ms={retry_after_ms}")
        }
        CheckAdmissionResult::ConcurrencyExceeded => "concurrency_exceeded".into(),
        other => format!("{other:?}"),
    }
}

fn map_text(m: &BTreeMap<String, u64>) -> String {
    let parts: Vec<String> = m.iter().map(|(k, v)| format!("{k}={v}")).collect();
    format!("{{{}}}", parts.join(", "))
}

async fn create_budget(h: &mut Harness, n: u64, dims: &[(&str, u64, u64)], reset_interval_ms: u64) {
    let r = h.b.create_budget(budget_args(n, dims, reset_interval_ms)).await;
    let limits: Vec<String> = dims.iter().map(|(d, hl, sl)| format!("{d} hard={hl} soft={sl}")).collect();
    let text = match r {
        Ok(CreateBudgetOutcome::Created { .. }) => "created".into(),
        Ok(other) => format!("{other:?}"),
        Err(e) => h.err(&e),
    };
    say(h, format!("create budget B{n} [{}] reset={reset_interval_ms} -> {text}", limits.join(", ")));
}

async fn report(h: &mut Harness, n: u64, deltas: &[(&str, u64)]) -> ReportUsageResult {
    let r = h.b.report_usage_and_check(report_args(n, deltas, None)).await.expect("report usage");
    let what: Vec<String> = deltas.iter().map(|(d, v)| format!("{d}+{v}")).collect();
    say(h, format!("report B{n} {} -> {}", what.join(" "), usage_text(&r)));
    r
}

async fn status(h: &Harness, n: u64) -> BudgetStatus {
    h.b.get_budget_status(&budget(n)).await.expect("budget status")
}

/// Logs a budget's usage and counters.
async fn show_budget(h: &mut Harness, n: u64) {
    let s = status(h, n).await;
    let opt_t = |t: Option<i64>| t.map(|t| h.t(t)).unwrap_or_else(|| "-".into());
    let last_breach = match (&s.last_breach_dim, s.last_breach_at) {
        (None, None) => "-".to_owned(),
        (dim, at) => format!("{}@{}", dim.as_deref().unwrap_or("?"), opt_t(at)),
    };
    let line = format!(
        "budget B{n}: usage {} hard {} soft {} breaches={} soft_breaches={} last_breach={last_breach} \
         next_reset={}",
        map_text(&s.usage),
        map_text(&s.hard_limits),
        map_text(&s.soft_limits),
        s.breach_count,
        s.soft_breach_count,
        opt_t(s.next_reset_at),
    );
    say(h, line);
}

async fn create_quota(h: &mut Harness, n: u64, window_seconds: u64, rate: u64, cap: u64) {
    let r = h.b.create_quota_policy(quota_args(n, window_seconds, rate, cap)).await;
    let text = match r {
        Ok(CreateQuotaOutcome::Created { .. }) => "created".into(),
        Ok(other) => format!("{other:?}"),
        Err(e) => h.err(&e),
    };
    say(h, format!("create quota Q{n} [{rate} per {window_seconds}s, cap {cap}] -> {text}"));
}

/// Creates `name` attached to budgets and/or a quota policy through its policy JSON.
async fn create_attached(h: &mut Harness, name: &str, budgets: &[u64], quota_n: Option<u64>) {
    let ids: Vec<String> = budgets.iter().map(|n| budget(*n).to_string()).collect();
    let mut policy = serde_json::json!({ "budget_ids": ids });
    if let Some(q) = quota_n {
        policy["quota_policy_id"] = serde_json::Value::String(quota(q).to_string());
    }
    h.create_with(name, |a| a.policy_json = policy.to_string()).await;
    let snap = h.b.describe_execution(&h.id(name)).await.expect("describe").expect("present");
    assert_eq!(snap.budget_ids, ids, "policy budget_ids become the attachment (spec 03 §3.1)");
    assert_eq!(snap.quota_policy_id, quota_n.map(|q| quota(q).to_string()));
    let line = format!(
        "{name} attached: budgets [{}] quota {}",
        snap.budget_ids.join(", "),
        snap.quota_policy_id.as_deref().unwrap_or("-")
    );
    say(h, line);
}

async fn block(h: &mut Harness, name: &str, reason: BlockingReason, detail: String) {
    let args = BlockExecutionArgs { execution_id: h.id(name), reason, detail: detail.clone() };
    let r = h.b.block_execution_for_admission(args).await;
    let text = match r {
        Ok(()) => format!("blocked {} ({detail})", reason.as_str()),
        Err(e) => h.err(&e),
    };
    say(h, format!("schedule {name} -> {text}"));
}

async fn public_state(h: &Harness, name: &str) -> PublicState {
    h.b.describe_execution(&h.id(name)).await.expect("describe").expect("present").public_state
}

/// The scheduler's budget pre-check (spec 03 §6.2 c): the first attached budget
/// with a hard dimension at or past its limit, as the block detail.
async fn budget_breach(h: &Harness, budget_ids: &[String]) -> Option<String> {
    for raw in budget_ids {
        let Ok(id) = BudgetId::parse(raw) else { continue };
        let s = match h.b.get_budget_status(&id).await {
            Ok(s) => s,
            Err(EngineError::NotFound { .. }) => continue,
            Err(e) => panic!("budget read: {e}"),
        };
        for (dim, limit) in s.hard_limits.iter().filter(|(_, l)| **l > 0) {
            let used = s.usage.get(dim).copied().unwrap_or(0);
            if used >= *limit {
                return Some(format!("budget ff:budget:{id}:usage: {dim} {used}/{limit}"));
            }
        }
    }
    None
}

/// The scheduler's quota admission (spec 03 §6.2 d): `Ok(Some(policy))` when an
/// admission was recorded, `Ok(None)` when no quota applies, `Err(detail)` on refusal.
async fn quota_admission(
    h: &mut Harness,
    name: &str,
    quota_policy_id: Option<&str>,
) -> Result<Option<QuotaPolicyId>, String> {
    let Some(id) = quota_policy_id.and_then(|q| QuotaPolicyId::parse(q).ok()) else { return Ok(None) };
    let limits = h.b.read_quota_policy_limits(&id).await.expect("quota limits");
    let Some(limits) = limits.filter(|l| !l.is_unlimited()) else { return Ok(None) };
    let window = match limits.requests_per_window_seconds {
        0 => SCHEDULER_DEFAULT_WINDOW_SECONDS,
        w => w,
    };
    let args = CheckAdmissionArgs {
        quota_policy_id: id,
        execution_id: h.id(name),
        window_seconds: window,
        rate_limit: limits.max_requests_per_window,
        concurrency_cap: limits.active_concurrency_cap,
    };
    let r = h.b.check_admission_and_record(args).await.expect("check admission");
    say(h, format!("admission {name} on {id} -> {}", admission_text(&r)));
    let (rate, cap) = (limits.max_requests_per_window, limits.active_concurrency_cap);
    match r {
        CheckAdmissionResult::RateExceeded { .. } => {
            Err(format!("quota {id}: rate limit {rate}/{rate} per {window}s window"))
        }
        CheckAdmissionResult::ConcurrencyExceeded => Err(format!("quota {id}: concurrency cap {cap}")),
        _ => Ok(Some(id)),
    }
}

/// Plays the scheduler for one execution (spec 03 §6.2 c–e): budget, then quota,
/// then grant and claim; a refusal blocks it. True when it was claimed.
async fn schedule(h: &mut Harness, name: &str, w: &str) -> bool {
    let snap = h.b.describe_execution(&h.id(name)).await.expect("describe").expect("present");
    if let Some(detail) = budget_breach(h, &snap.budget_ids).await {
        block(h, name, BlockingReason::WaitingForBudget, detail).await;
        return false;
    }
    let admitted = match quota_admission(h, name, snap.quota_policy_id.as_deref()).await {
        Ok(admitted) => admitted,
        Err(detail) => {
            block(h, name, BlockingReason::WaitingForQuota, detail).await;
            return false;
        }
    };
    say(h, format!("schedule {name} -> admitted"));
    if h.grant(name, w, &[]).await.is_err() {
        if let Some(q) = admitted {
            h.b.release_admission(&q, &h.id(name)).await.expect("release admission");
        }
        return false;
    }
    h.claim(name, w).await.is_ok()
}

/// The detail of a typed `Validation(InvalidInput)` error.
fn invalid_input_detail<T: std::fmt::Debug>(r: Result<T, EngineError>) -> String {
    match r {
        Err(EngineError::Validation { kind: ValidationKind::InvalidInput, detail }) => detail,
        other => panic!("expected Validation(InvalidInput), got {other:?}"),
    }
}

async fn budget_not_written(h: &Harness, n: u64) {
    let r = h.b.get_budget_status(&budget(n)).await;
    assert!(matches!(r, Err(EngineError::NotFound { entity: "budget" })), "B{n} was written: {r:?}");
}

// ---------------------------------------------------------------------------
// Budgets
// ---------------------------------------------------------------------------

/// Spec 03 §3.2.1, §3.3: Created, AlreadySatisfied, the two parse errors, status reads.
async fn budget_create_codes(ctx: Ctx) {
    let mut h = harness(&ctx);
    let b = h.b.clone();
    let dims = [("tokens", 100, 80), ("calls", 0, 5)];
    let creating = h.now().await;
    let created = b.create_budget(budget_args(1, &dims, 0)).await.expect("create");
    let done = h.now().await;
    assert_eq!(created, CreateBudgetOutcome::Created { budget_id: budget(1) });
    let again = b.create_budget(budget_args(1, &[("other", 1, 1)], 50)).await.expect("again");
    assert_eq!(again, CreateBudgetOutcome::AlreadySatisfied { budget_id: budget(1) });
    let s = status(&h, 1).await;
    assert_eq!(s.budget_id, budget(1));
    assert_eq!(
        (s.scope_type.as_str(), s.scope_id.as_str(), s.enforcement_mode.as_str()),
        ("tenant", "t1", "strict")
    );
    assert_eq!(map_text(&s.hard_limits), "{calls=0, tokens=100}", "AlreadySatisfied changed nothing");
    assert_eq!(map_text(&s.soft_limits), "{calls=5, tokens=80}");
    assert!(s.usage.is_empty(), "usage starts empty: {:?}", s.usage);
    assert_eq!((s.breach_count, s.soft_breach_count), (0, 0));
    assert_eq!((s.last_breach_at, s.last_breach_dim.as_deref()), (None, None));
    assert_eq!(s.next_reset_at, None);
    h.assert_stamp("created_at", s.created_at.unwrap_or(i64::MIN), creating, done);
    // A periodic budget schedules its first reset at creation.
    h.advance(7).await;
    let creating = h.now().await;
    b.create_budget(budget_args(2, &dims, 60_000)).await.expect("create periodic");
    let done = h.now().await;
    let next = status(&h, 2).await.next_reset_at.unwrap_or(i64::MIN);
    h.assert_stamp("next_reset_at", next, creating + 60_000, done + 60_000);
    // Rust pre-checks: typed Validation errors, nothing written.
    let wide: Vec<(String, u64, u64)> =
        (0..=BUDGET_DIMENSIONS_MAX).map(|i| (format!("d{i}"), 1, 1)).collect();
    let wide: Vec<(&str, u64, u64)> = wide.iter().map(|(d, hl, sl)| (d.as_str(), *hl, *sl)).collect();
    rejects!(h, b.create_budget(budget_args(3, &wide, 0)), "invalid_input");
    let detail = invalid_input_detail(b.create_budget(budget_args(3, &wide, 0)).await);
    assert!(detail.starts_with("too_many_dimensions"), "{detail}");
    budget_not_written(&h, 3).await;
    let at_max = &wide[..BUDGET_DIMENSIONS_MAX];
    assert!(matches!(
        b.create_budget(budget_args(4, at_max, 0)).await,
        Ok(CreateBudgetOutcome::Created { .. })
    ));
    for (hard_len, soft_len) in [(1, 2), (2, 1), (3, 3)] {
        let mut args = budget_args(5, &dims, 0);
        args.hard_limits.resize(hard_len, 1);
        args.soft_limits.resize(soft_len, 1);
        rejects!(h, b.create_budget(args.clone()), "invalid_input");
        let detail = invalid_input_detail(b.create_budget(args).await);
        assert!(detail.starts_with("dimension_limit_array_mismatch"), "{detail}");
    }
    budget_not_written(&h, 5).await;
    rejects!(h, b.get_budget_status(&budget(6)), "budget_not_found");
}

/// Spec 03 §3.2.2: Ok, SoftBreach (post-increment), exactly-at-limit, HardBreach
/// (pre-increment, nothing applied, breach counters), all-or-nothing, NotFound.
async fn report_usage_outcomes(ctx: Ctx) {
    let mut h = harness(&ctx);
    let b = h.b.clone();
    create_budget(&mut h, 1, &[("tokens", 100, 80), ("calls", 0, 0)], 0).await;
    assert_eq!(report(&mut h, 1, &[("tokens", 50)]).await, ReportUsageResult::Ok);
    let soft = report(&mut h, 1, &[("tokens", 40), ("calls", 3)]).await;
    assert_eq!(
        soft,
        ReportUsageResult::SoftBreach { dimension: "tokens".into(), current_usage: 90, soft_limit: 80 }
    );
    let at_limit = report(&mut h, 1, &[("tokens", 10)]).await;
    assert!(
        matches!(at_limit, ReportUsageResult::SoftBreach { current_usage: 100, .. }),
        "the hard limit allows reaching exactly L: {at_limit:?}"
    );
    let s = status(&h, 1).await;
    assert_eq!(map_text(&s.usage), "{calls=3, tokens=100}");
    assert_eq!((s.breach_count, s.soft_breach_count), (0, 2));
    h.advance(5).await;
    // Hard breach: the pre-increment usage, nothing incremented (not even `calls`).
    let breaching = h.now().await;
    let hard = report(&mut h, 1, &[("calls", 7), ("tokens", 1)]).await;
    let breached = h.now().await;
    assert_eq!(
        hard,
        ReportUsageResult::HardBreach { dimension: "tokens".into(), current_usage: 100, hard_limit: 100 }
    );
    let s = status(&h, 1).await;
    assert_eq!(map_text(&s.usage), "{calls=3, tokens=100}", "all-or-nothing");
    assert_eq!((s.breach_count, s.soft_breach_count), (1, 2));
    assert_eq!(s.last_breach_dim.as_deref(), Some("tokens"));
    h.assert_stamp("last_breach_at", s.last_breach_at.unwrap_or(i64::MIN), breaching, breached);
    // An unlimited dimension takes any amount.
    assert_eq!(report(&mut h, 1, &[("calls", 1_000_000)]).await, ReportUsageResult::Ok);
    // The first breaching dimension in argument order is the one reported.
    create_budget(&mut h, 2, &[("a", 10, 0), ("b", 10, 0)], 0).await;
    let first = report(&mut h, 2, &[("b", 11), ("a", 11)]).await;
    assert!(
        matches!(first, ReportUsageResult::HardBreach { ref dimension, .. } if dimension == "b"),
        "{first:?}"
    );
    rejects!(h, b.report_usage_and_check(report_args(9, &[("tokens", 1)], None)), "budget_not_found");
    rejects!(h, b.report_usage_and_check(report_args(9, &[("tokens", 1)], Some("k"))), "budget_not_found");
    budget_not_written(&h, 9).await;
}

/// Spec 03 §3.2.2–§3.2.3: a dedup key answers AlreadyApplied for 24 h, is shared
/// with record_spend idempotency keys, and is not recorded by a hard breach.
async fn usage_dedup_keys(ctx: Ctx) {
    let mut h = harness(&ctx);
    let b = h.b.clone();
    create_budget(&mut h, 1, &[("tokens", 100, 0)], 0).await;
    let once = report_args(1, &[("tokens", 10)], Some("req-1"));
    assert_eq!(b.report_usage_and_check(once.clone()).await.expect("first"), ReportUsageResult::Ok);
    assert_eq!(
        b.report_usage_and_check(once.clone()).await.expect("replay"),
        ReportUsageResult::AlreadyApplied
    );
    let spend = spend_args(1, &eid(1), &[("tokens", 10)], Some("req-1"));
    assert_eq!(b.record_spend(spend).await.expect("shared"), ReportUsageResult::AlreadyApplied);
    assert_eq!(status(&h, 1).await.usage["tokens"], 10, "replays apply nothing");
    assert!(!b.release_budget(&budget(1), &eid(1)).await.expect("release"), "no ledger was written");
    // A hard breach is not deduped: the same key re-evaluates after room is made.
    let big = report_args(1, &[("tokens", 95)], Some("req-2"));
    assert!(matches!(b.report_usage_and_check(big.clone()).await, Ok(ReportUsageResult::HardBreach { .. })));
    b.reset_budget(&budget(1)).await.expect("reset");
    assert_eq!(b.report_usage_and_check(big.clone()).await.expect("retry"), ReportUsageResult::Ok);
    assert_eq!(b.report_usage_and_check(big).await.expect("replay"), ReportUsageResult::AlreadyApplied);
    // Keys are per budget.
    create_budget(&mut h, 2, &[("tokens", 100, 0)], 0).await;
    assert_eq!(
        b.report_usage_and_check(report_args(2, &[("tokens", 1)], Some("req-1")))
            .await
            .expect("other budget"),
        ReportUsageResult::Ok
    );
    // The marker lives 24 h.
    b.reset_budget(&budget(1)).await.expect("reset");
    h.advance(USAGE_DEDUP_TTL_MS as u64 - 1).await;
    assert_eq!(b.report_usage_and_check(once.clone()).await.expect("day"), ReportUsageResult::AlreadyApplied);
    h.advance(1).await;
    assert_eq!(b.report_usage_and_check(once).await.expect("lapsed"), ReportUsageResult::Ok);
    assert_eq!(status(&h, 1).await.usage["tokens"], 10);
}

/// Spec 03 §3.2.3–§3.2.4: spend is ledgered per execution; release gives it back
/// once, clamps at 0 after a reset, and answers false with no ledger.
async fn record_spend_and_release(ctx: Ctx) {
    let mut h = harness(&ctx);
    let b = h.b.clone();
    create_budget(&mut h, 1, &[("tokens", 100, 40), ("usd", 0, 0)], 0).await;
    let r = b.record_spend(spend_args(1, &eid(1), &[("tokens", 30), ("usd", 2)], None)).await.expect("spend");
    assert_eq!(r, ReportUsageResult::Ok);
    let r = b.record_spend(spend_args(1, &eid(2), &[("tokens", 20)], None)).await.expect("spend");
    assert!(matches!(r, ReportUsageResult::SoftBreach { current_usage: 50, soft_limit: 40, .. }), "{r:?}");
    let hard = b.record_spend(spend_args(1, &eid(3), &[("tokens", 51)], None)).await.expect("spend");
    assert!(matches!(hard, ReportUsageResult::HardBreach { current_usage: 50, hard_limit: 100, .. }));
    assert_eq!(map_text(&status(&h, 1).await.usage), "{tokens=50, usd=2}");
    assert!(!b.release_budget(&budget(1), &eid(3)).await.expect("release"), "a hard breach ledgers nothing");
    assert!(b.release_budget(&budget(1), &eid(1)).await.expect("release e1"));
    assert_eq!(map_text(&status(&h, 1).await.usage), "{tokens=20, usd=0}");
    assert!(!b.release_budget(&budget(1), &eid(1)).await.expect("again"), "second release is a no-op");
    assert_eq!(map_text(&status(&h, 1).await.usage), "{tokens=20, usd=0}");
    // Reset keeps ledgers, so a later release clamps at 0.
    b.reset_budget(&budget(1)).await.expect("reset");
    b.record_spend(spend_args(1, &eid(4), &[("tokens", 5)], None)).await.expect("spend");
    assert!(b.release_budget(&budget(1), &eid(2)).await.expect("release e2"));
    assert_eq!(map_text(&status(&h, 1).await.usage), "{tokens=0, usd=0}", "clamped at 0");
    assert!(!b.release_budget(&budget(7), &eid(1)).await.expect("unknown budget"));
    rejects!(h, b.record_spend(spend_args(7, &eid(1), &[("tokens", 1)], None)), "budget_not_found");
    let wide: BTreeMap<String, u64> = (0..=BUDGET_DIMENSIONS_MAX).map(|i| (format!("d{i}"), 1)).collect();
    let args = RecordSpendArgs { deltas: wide, ..spend_args(1, &eid(5), &[], None) };
    rejects!(h, b.record_spend(args), "invalid_input");
    budget_not_written(&h, 7).await;
}

/// Spec 03 §3.2.5: usage to zero (fields kept), breach marker fields cleared,
/// counters kept, next reset rescheduled; unknown id is NotFound.
async fn reset_budget_codes(ctx: Ctx) {
    let mut h = harness(&ctx);
    let b = h.b.clone();
    create_budget(&mut h, 1, &[("tokens", 10, 5), ("calls", 0, 0)], 60_000).await;
    report(&mut h, 1, &[("tokens", 8), ("calls", 2)]).await;
    report(&mut h, 1, &[("tokens", 3)]).await;
    h.advance(1_000).await;
    let resetting = h.now().await;
    let next = b.reset_budget(&budget(1)).await.expect("reset");
    let reset = h.now().await;
    h.assert_stamp("next_reset_at", next.unwrap_or(i64::MIN), resetting + 60_000, reset + 60_000);
    let s = status(&h, 1).await;
    assert_eq!(map_text(&s.usage), "{calls=0, tokens=0}");
    assert_eq!((s.breach_count, s.soft_breach_count), (1, 1), "reset keeps the counters");
    assert_eq!((s.last_breach_at, s.last_breach_dim), (None, None), "reset clears the last breach");
    assert_eq!(s.next_reset_at, next);
    create_budget(&mut h, 2, &[("tokens", 10, 0)], 0).await;
    assert_eq!(b.reset_budget(&budget(2)).await.expect("reset"), None);
    assert_eq!(status(&h, 2).await.next_reset_at, None);
    rejects!(h, b.reset_budget(&budget(3)), "budget_not_found");
    budget_not_written(&h, 3).await;
}

/// Spec 03 §7.2 #8: the budget-reset scanner resets a budget when its
/// `next_reset_at` is due under the simulated clock, and not a millisecond before.
async fn budget_reset_scanner(ctx: Ctx) {
    let mut h = harness(&ctx);
    create_budget(&mut h, 1, &[("tokens", 100, 0)], 10_000).await;
    create_budget(&mut h, 2, &[("tokens", 100, 0)], 0).await;
    report(&mut h, 1, &[("tokens", 40)]).await;
    report(&mut h, 2, &[("tokens", 40)]).await;
    let due = status(&h, 1).await.next_reset_at.expect("scheduled");
    h.advance(9_999).await;
    h.scan(ScannerKind::BudgetReset).await;
    assert_eq!(status(&h, 1).await.usage["tokens"], 40, "not due yet");
    h.advance(1).await;
    assert_eq!(h.now().await, due);
    h.scan(ScannerKind::BudgetReset).await;
    let s = status(&h, 1).await;
    assert_eq!(s.usage["tokens"], 0, "reset when due");
    assert_eq!(s.next_reset_at, Some(h.now().await + 10_000), "rescheduled");
    assert_eq!(status(&h, 2).await.usage["tokens"], 40, "a budget without an interval is never reset");
    h.scan(ScannerKind::BudgetReset).await;
    assert_eq!(h.log.last().map(String::as_str), Some("scan BudgetReset -> examined 0 acted 0"));
}

/// Spec 03 §7.3.7 with its Spec line: the reconciler's breach marker never shows
/// in `get_budget_status().usage`; and (our decision, docs/DECISIONS.md) a report
/// naming a dimension twice is checked against its running total, so no report
/// carries usage past a hard limit and the reconciler finds nothing to flip.
async fn budget_reconciler_marker_stays_out_of_usage(ctx: Ctx) {
    let mut h = harness(&ctx);
    create_budget(&mut h, 1, &[("tokens", 100, 0)], 0).await;
    create_budget(&mut h, 2, &[("tokens", 100, 0)], 60_000).await;
    create_budget(&mut h, 3, &[("tokens", 0, 0)], 0).await;
    h.scan(ScannerKind::BudgetReconciler).await;
    assert_eq!(h.log.last().map(String::as_str), Some("scan BudgetReconciler -> examined 3 acted 0"));
    for n in [1, 2] {
        let twice = report(&mut h, n, &[("tokens", 60), ("tokens", 60)]).await;
        assert_eq!(
            twice,
            ReportUsageResult::HardBreach { dimension: "tokens".into(), current_usage: 60, hard_limit: 100 },
            "B{n}: the second entry breaches on the running total"
        );
        assert_eq!(status(&h, n).await.usage.get("tokens").copied().unwrap_or(0), 0, "B{n}: nothing applied");
        assert_eq!(report(&mut h, n, &[("tokens", 60), ("tokens", 40)]).await, ReportUsageResult::Ok);
        assert_eq!(status(&h, n).await.usage["tokens"], 100, "B{n}: exactly at the limit");
    }
    assert_eq!(report(&mut h, 3, &[("tokens", 60), ("tokens", 60)]).await, ReportUsageResult::Ok);
    assert_eq!(status(&h, 3).await.usage["tokens"], 120, "no limit, both applied");
    h.scan(ScannerKind::BudgetReconciler).await;
    assert_eq!(
        h.log.last().map(String::as_str),
        Some("scan BudgetReconciler -> examined 3 acted 0"),
        "at the limit is not past it"
    );
    for n in [1, 2, 3] {
        let keys: Vec<String> = status(&h, n).await.usage.into_keys().collect();
        assert_eq!(keys, ["tokens"], "B{n}: the marker must stay out of usage");
    }
    h.b.reset_budget(&budget(1)).await.expect("reset");
    h.scan(ScannerKind::BudgetReconciler).await;
    assert_eq!(h.log.last().map(String::as_str), Some("scan BudgetReconciler -> examined 3 acted 0"));
    assert_eq!(map_text(&status(&h, 1).await.usage), "{tokens=0}");
}

/// Spec 03 §7.3.6 (budget): blocked `waiting_for_budget` stays blocked while any
/// attached budget has a hard dimension at its limit; reset or release frees it.
async fn unblock_waiting_for_budget(ctx: Ctx) {
    let mut h = harness(&ctx);
    let b = h.b.clone();
    create_budget(&mut h, 1, &[("tokens", 10, 0)], 0).await;
    create_budget(&mut h, 2, &[("tokens", 10, 0)], 0).await;
    create_budget(&mut h, 3, &[("tokens", 10, 0)], 0).await;
    report(&mut h, 1, &[("tokens", 10)]).await;
    b.record_spend(spend_args(2, &eid(1), &[("tokens", 10)], None)).await.expect("spend");
    report(&mut h, 3, &[("tokens", 9)]).await;
    create_attached(&mut h, "at-limit", &[3, 1], None).await;
    create_attached(&mut h, "spent", &[2], None).await;
    create_attached(&mut h, "below-limit", &[3], None).await;
    create_attached(&mut h, "unattached", &[], None).await;
    for name in ["at-limit", "spent", "below-limit", "unattached"] {
        block(&mut h, name, BlockingReason::WaitingForBudget, "test".into()).await;
        assert_eq!(public_state(&h, name).await, PublicState::RateLimited);
    }
    h.scan(ScannerKind::Unblock).await;
    assert_eq!(public_state(&h, "below-limit").await, PublicState::Waiting, "9/10 is not a breach");
    assert_eq!(public_state(&h, "unattached").await, PublicState::Waiting, "no budget → cleared");
    assert_eq!(public_state(&h, "at-limit").await, PublicState::RateLimited, "10/10 still blocks");
    assert_eq!(public_state(&h, "spent").await, PublicState::RateLimited);
    h.scan(ScannerKind::Unblock).await;
    assert_eq!(public_state(&h, "at-limit").await, PublicState::RateLimited, "scans alone change nothing");
    b.reset_budget(&budget(1)).await.expect("reset");
    assert!(b.release_budget(&budget(2), &eid(1)).await.expect("release"));
    h.scan(ScannerKind::Unblock).await;
    for name in ["at-limit", "spent"] {
        let snap = b.describe_execution(&h.id(name)).await.expect("describe").expect("present");
        assert_eq!(snap.public_state, PublicState::Waiting, "{name}");
        assert_eq!(snap.state.eligibility_state, EligibilityState::EligibleNow, "{name}");
        assert_eq!(snap.state.blocking_reason, BlockingReason::WaitingForWorker, "{name}");
    }
    assert_invariants(&h, &ctx).await;
}

// ---------------------------------------------------------------------------
// Quotas
// ---------------------------------------------------------------------------

/// Spec 03 §4.2.1, §4.3: Created, AlreadySatisfied, limits read back, None for unknown.
async fn quota_create_and_limits(ctx: Ctx) {
    let h = harness(&ctx);
    let b = h.b.clone();
    assert_eq!(b.read_quota_policy_limits(&quota(1)).await.expect("read"), None);
    let created = b.create_quota_policy(quota_args(1, 10, 2, 3)).await.expect("create");
    assert_eq!(created, CreateQuotaOutcome::Created { quota_policy_id: quota(1) });
    let again = b.create_quota_policy(quota_args(1, 99, 9, 9)).await.expect("again");
    assert_eq!(again, CreateQuotaOutcome::AlreadySatisfied { quota_policy_id: quota(1) });
    let limits = b.read_quota_policy_limits(&quota(1)).await.expect("read").expect("defined");
    assert_eq!(
        limits,
        QuotaPolicyLimits {
            max_requests_per_window: 2,
            requests_per_window_seconds: 10,
            active_concurrency_cap: 3,
            jitter_ms: 0
        }
    );
    assert!(!limits.is_unlimited());
    b.create_quota_policy(quota_args(2, 60, 0, 0)).await.expect("create unlimited");
    assert!(b.read_quota_policy_limits(&quota(2)).await.expect("read").expect("defined").is_unlimited());
    // Admission on an undefined policy works on the caller's limits and defines nothing;
    // a later create still creates and sets the counter to 0 (spec 03 §4.2.1).
    let cap1 = |e: u64| admit_args(3, &eid(e), 60, 0, 1);
    assert_eq!(b.check_admission_and_record(cap1(1)).await.expect("admit"), CheckAdmissionResult::Admitted);
    assert_eq!(
        b.check_admission_and_record(cap1(2)).await.expect("full"),
        CheckAdmissionResult::ConcurrencyExceeded
    );
    assert_eq!(b.read_quota_policy_limits(&quota(3)).await.expect("read"), None);
    let created = b.create_quota_policy(quota_args(3, 60, 0, 1)).await.expect("create");
    assert!(matches!(created, CreateQuotaOutcome::Created { .. }));
    assert_eq!(b.check_admission_and_record(cap1(2)).await.expect("admit"), CheckAdmissionResult::Admitted);
    // Window bound: typed error, nothing written.
    let too_long = quota_args(4, QUOTA_WINDOW_SECONDS_MAX + 1, 1, 0);
    rejects!(h, b.create_quota_policy(too_long), "invalid_input");
    assert_eq!(b.read_quota_policy_limits(&quota(4)).await.expect("read"), None);
    let bad = admit_args(4, &eid(1), QUOTA_WINDOW_SECONDS_MAX + 1, 1, 0);
    rejects!(h, b.check_admission_and_record(bad), "invalid_input");
}

async fn admit(b: &Arc<dyn EngineBackend>, args: CheckAdmissionArgs) -> CheckAdmissionResult {
    b.check_admission_and_record(args).await.expect("check admission")
}

/// Spec 03 §4.2.2: Admitted, AlreadyAdmitted while the guard lives, RateExceeded
/// with the exact retry, ConcurrencyExceeded, rate checked before concurrency.
async fn admission_outcomes(ctx: Ctx) {
    let mut h = harness(&ctx);
    let b = h.b.clone();
    let rate = |e: u64| admit_args(1, &eid(e), 10, 2, 0);
    assert_eq!(admit(&b, rate(1)).await, CheckAdmissionResult::Admitted);
    assert_eq!(admit(&b, rate(1)).await, CheckAdmissionResult::AlreadyAdmitted);
    h.advance(1_000).await;
    assert_eq!(admit(&b, rate(2)).await, CheckAdmissionResult::Admitted, "a guard hit adds no window entry");
    h.advance(1_000).await;
    assert_eq!(admit(&b, rate(3)).await, CheckAdmissionResult::RateExceeded { retry_after_ms: 8_000 });
    assert_eq!(admit(&b, rate(3)).await, CheckAdmissionResult::RateExceeded { retry_after_ms: 8_000 });
    h.advance(7_999).await;
    assert_eq!(admit(&b, rate(1)).await, CheckAdmissionResult::AlreadyAdmitted, "guard lives W ms");
    assert_eq!(admit(&b, rate(3)).await, CheckAdmissionResult::RateExceeded { retry_after_ms: 1 });
    h.advance(1).await;
    // Entries scored ≤ now − W leave the window; the guard lapses at the same instant.
    assert_eq!(admit(&b, rate(3)).await, CheckAdmissionResult::Admitted);
    assert_eq!(admit(&b, rate(1)).await, CheckAdmissionResult::RateExceeded { retry_after_ms: 1_000 });
    let cap = |e: u64| admit_args(2, &eid(e), 60, 0, 2);
    assert_eq!(admit(&b, cap(1)).await, CheckAdmissionResult::Admitted);
    assert_eq!(admit(&b, cap(2)).await, CheckAdmissionResult::Admitted);
    assert_eq!(admit(&b, cap(3)).await, CheckAdmissionResult::ConcurrencyExceeded);
    assert_eq!(admit(&b, cap(1)).await, CheckAdmissionResult::AlreadyAdmitted, "guard before the cap");
    let both = |e: u64| admit_args(3, &eid(e), 10, 1, 1);
    assert_eq!(admit(&b, both(1)).await, CheckAdmissionResult::Admitted);
    assert_eq!(admit(&b, both(2)).await, CheckAdmissionResult::RateExceeded { retry_after_ms: 10_000 });
    // Zero disables each component; with no window there is no guard either.
    let open = |e: u64| admit_args(4, &eid(e), 0, 0, 0);
    for e in [1, 1, 2, 3, 4, 5] {
        assert_eq!(admit(&b, open(e)).await, CheckAdmissionResult::Admitted);
    }
}

/// Spec 03 §4.2.3: release deletes the guard and decrements the counter if above
/// 0 (with or without a guard, as the reference does); the window entry stays.
async fn release_admission_semantics(ctx: Ctx) {
    let h = harness(&ctx);
    let b = h.b.clone();
    b.create_quota_policy(quota_args(1, 60, 0, 1)).await.expect("create");
    let cap = |e: u64| admit_args(1, &eid(e), 60, 0, 1);
    assert_eq!(admit(&b, cap(1)).await, CheckAdmissionResult::Admitted);
    assert_eq!(admit(&b, cap(2)).await, CheckAdmissionResult::ConcurrencyExceeded);
    b.release_admission(&quota(1), &eid(1)).await.expect("release");
    assert_eq!(admit(&b, cap(2)).await, CheckAdmissionResult::Admitted);
    assert_eq!(admit(&b, cap(1)).await, CheckAdmissionResult::ConcurrencyExceeded, "its guard is gone");
    b.release_admission(&quota(1), &eid(1)).await.expect("release without a guard");
    assert_eq!(admit(&b, cap(3)).await, CheckAdmissionResult::Admitted, "the counter still went down");
    b.release_admission(&quota(9), &eid(1)).await.expect("unknown policy is a no-op");
    assert_eq!(b.read_quota_policy_limits(&quota(9)).await.expect("read"), None);
    // The window entry outlives the release.
    let rate = |e: u64| admit_args(2, &eid(e), 10, 1, 0);
    let admitting = h.now().await;
    assert_eq!(admit(&b, rate(1)).await, CheckAdmissionResult::Admitted);
    b.release_admission(&quota(2), &eid(1)).await.expect("release");
    let again = admit(&b, rate(1)).await;
    // The full window, less whatever real time passed since the admission.
    let elapsed = u64::try_from(h.now().await - admitting).unwrap_or(0);
    match again {
        CheckAdmissionResult::RateExceeded { retry_after_ms } => assert!(
            (10_000u64.saturating_sub(elapsed)..=10_000).contains(&retry_after_ms),
            "retry_after_ms {retry_after_ms} with {elapsed} ms elapsed"
        ),
        other => panic!("expected RateExceeded, got {other:?}"),
    }
}

/// Spec 03 §7.3.8 and §4.4: nothing decrements the counter when guards lapse;
/// the reconciler sets it to the live guard count.
async fn quota_reconciler_recount(ctx: Ctx) {
    let mut h = harness(&ctx);
    let b = h.b.clone();
    b.create_quota_policy(quota_args(1, 10, 0, 2)).await.expect("create");
    b.create_quota_policy(quota_args(2, 0, 0, 1)).await.expect("create windowless");
    let cap = |e: u64| admit_args(1, &eid(e), 10, 0, 2);
    assert_eq!(admit(&b, cap(1)).await, CheckAdmissionResult::Admitted);
    h.advance(5_000).await;
    assert_eq!(admit(&b, cap(2)).await, CheckAdmissionResult::Admitted);
    assert_eq!(admit(&b, admit_args(2, &eid(1), 0, 0, 1)).await, CheckAdmissionResult::Admitted);
    h.scan(ScannerKind::QuotaReconciler).await;
    assert_eq!(h.log.last().map(String::as_str), Some("scan QuotaReconciler -> examined 2 acted 1"));
    // Q2 keeps no guard without a window, so its counter dropped to 0.
    assert_eq!(admit(&b, admit_args(2, &eid(2), 0, 0, 1)).await, CheckAdmissionResult::Admitted);
    h.advance(5_000).await;
    assert_eq!(
        admit(&b, cap(3)).await,
        CheckAdmissionResult::ConcurrencyExceeded,
        "a lapsed guard is still counted"
    );
    h.scan(ScannerKind::QuotaReconciler).await;
    assert_eq!(h.log.last().map(String::as_str), Some("scan QuotaReconciler -> examined 2 acted 2"));
    assert_eq!(admit(&b, cap(3)).await, CheckAdmissionResult::Admitted, "recounted to the one live guard");
    assert_eq!(admit(&b, cap(4)).await, CheckAdmissionResult::ConcurrencyExceeded);
}

/// Spec 03 §7.3.6 (quota): blocked `waiting_for_quota` stays blocked while the
/// policy's window is full or its counter at the cap.
async fn unblock_waiting_for_quota(ctx: Ctx) {
    let mut h = harness(&ctx);
    let b = h.b.clone();
    create_quota(&mut h, 1, 10, 1, 0).await;
    create_quota(&mut h, 2, 60, 0, 1).await;
    assert_eq!(admit(&b, admit_args(1, &eid(1), 10, 1, 0)).await, CheckAdmissionResult::Admitted);
    assert_eq!(admit(&b, admit_args(2, &eid(2), 60, 0, 1)).await, CheckAdmissionResult::Admitted);
    create_attached(&mut h, "rated", &[], Some(1)).await;
    create_attached(&mut h, "capped", &[], Some(2)).await;
    create_attached(&mut h, "unattached", &[], None).await;
    for name in ["rated", "capped", "unattached"] {
        block(&mut h, name, BlockingReason::WaitingForQuota, "test".into()).await;
    }
    h.scan(ScannerKind::Unblock).await;
    assert_eq!(public_state(&h, "unattached").await, PublicState::Waiting, "no quota → cleared");
    assert_eq!(public_state(&h, "rated").await, PublicState::RateLimited);
    assert_eq!(public_state(&h, "capped").await, PublicState::RateLimited);
    h.advance(9_999).await;
    h.scan(ScannerKind::Unblock).await;
    assert_eq!(public_state(&h, "rated").await, PublicState::RateLimited, "window still full");
    h.advance(1).await;
    h.scan(ScannerKind::Unblock).await;
    assert_eq!(public_state(&h, "rated").await, PublicState::Waiting, "the window slid");
    assert_eq!(public_state(&h, "capped").await, PublicState::RateLimited, "the cap does not slide");
    b.release_admission(&quota(2), &eid(2)).await.expect("release");
    h.scan(ScannerKind::Unblock).await;
    assert_eq!(public_state(&h, "capped").await, PublicState::Waiting);
    assert_invariants(&h, &ctx).await;
}

// ---------------------------------------------------------------------------
// Golden transcripts
// ---------------------------------------------------------------------------

/// Spec 03 §3.1: a hard breach never touches in-flight work; it blocks future
/// admission of executions attached to the budget until usage drops.
async fn budget_hard_breach_during_running_attempt(ctx: Ctx) {
    let mut h = harness(&ctx);
    create_budget(&mut h, 1, &[("tokens", 100, 80)], 0).await;
    create_attached(&mut h, "e1", &[1], None).await;
    assert!(schedule(&mut h, "e1", "w1").await, "e1 is admitted");
    h.advance(1_000).await;
    report(&mut h, 1, &[("tokens", 60)]).await;
    report(&mut h, 1, &[("tokens", 30)]).await;
    report(&mut h, 1, &[("tokens", 10)]).await;
    let before = h.b.describe_execution(&h.id("e1")).await.expect("describe");
    h.advance(1_000).await;
    let breach = report(&mut h, 1, &[("tokens", 5)]).await;
    assert!(matches!(breach, ReportUsageResult::HardBreach { current_usage: 100, .. }), "{breach:?}");
    assert_eq!(before, h.b.describe_execution(&h.id("e1")).await.expect("describe"), "e1 untouched");
    show_budget(&mut h, 1).await;
    h.show("e1").await;
    h.renew_nth("e1", None).await.expect("the lease is still valid");
    create_attached(&mut h, "e2", &[1], None).await;
    assert!(!schedule(&mut h, "e2", "w2").await, "e2 is refused at the limit");
    h.show("e2").await;
    h.eligible().await;
    h.scan(ScannerKind::Unblock).await;
    h.show("e2").await;
    h.advance(1_000).await;
    let next = h.b.reset_budget(&budget(1)).await.expect("reset");
    let next = next.map(|t| h.t(t)).unwrap_or_else(|| "-".into());
    say(&mut h, format!("reset B1 -> next reset {next}"));
    show_budget(&mut h, 1).await;
    h.scan(ScannerKind::Unblock).await;
    h.show("e2").await;
    h.eligible().await;
    assert!(schedule(&mut h, "e2", "w2").await, "e2 is admitted after the reset");
    h.complete("e1").await.expect("the breached attempt can still complete");
    h.show("e1").await;
    assert_invariants(&h, &ctx).await;
    insta::assert_snapshot!("budget_hard_breach_during_running_attempt", h.transcript());
}

/// Spec 03 §4.2.2, §7.3.6: a 2-per-10 s window slides under the simulated clock.
async fn quota_window_sliding(ctx: Ctx) {
    let mut h = harness(&ctx);
    create_quota(&mut h, 1, 10, 2, 0).await;
    for name in ["e1", "e2", "e3", "e4"] {
        create_attached(&mut h, name, &[], Some(1)).await;
    }
    assert!(schedule(&mut h, "e1", "w1").await);
    h.advance(1_000).await;
    assert!(schedule(&mut h, "e2", "w1").await);
    assert!(!schedule(&mut h, "e3", "w1").await, "third in the window is refused");
    h.show("e3").await;
    // Finishing work frees no window slot (spec 03 §4.4: no release-on-terminal hook).
    h.complete("e1").await.expect("complete");
    h.complete("e2").await.expect("complete");
    h.scan(ScannerKind::Unblock).await;
    assert_eq!(public_state(&h, "e3").await, PublicState::RateLimited);
    h.advance(8_999).await;
    h.scan(ScannerKind::Unblock).await;
    h.show("e3").await;
    h.advance(1).await;
    h.scan(ScannerKind::Unblock).await;
    h.show("e3").await;
    assert!(schedule(&mut h, "e3", "w1").await, "e1's entry left the window");
    assert!(!schedule(&mut h, "e4", "w1").await, "e2 and e3 fill the window");
    h.advance(1_000).await;
    h.scan(ScannerKind::Unblock).await;
    assert!(schedule(&mut h, "e4", "w1").await, "e2's entry left the window");
    for name in ["e3", "e4"] {
        h.complete(name).await.expect("complete");
    }
    assert_invariants(&h, &ctx).await;
    insta::assert_snapshot!("quota_window_sliding", h.transcript());
}

// ---------------------------------------------------------------------------
// Property: random budget operations agree with a model of spec 03 §3.2
// ---------------------------------------------------------------------------

/// Dimensions a generated budget declares; one more is generated undeclared (no limit).
const MODEL_DIMENSIONS: usize = 3;
/// Executions and dedup keys a generated sequence addresses.
const MODEL_SLOTS: u8 = 3;
/// First budget id the property uses (below it are the named ids).
const MODEL_BUDGET_ID_MIN: u64 = 1_000;

/// One generated budget operation; dimensions are indexes (`d<i>`).
#[derive(Debug, Clone)]
enum BudgetOp {
    Report { deltas: Vec<(usize, u64)>, key: Option<u8> },
    Spend { exec: u8, deltas: Vec<(usize, u64)>, key: Option<u8> },
    Release { exec: u8 },
    Reset,
}

fn budget_op() -> impl Strategy<Value = BudgetOp> {
    // Distinct dimensions per call: a repeated one is checked per entry against
    // stored usage and may pass the hard limit (see the reconciler case).
    let deltas = proptest::collection::btree_map(0..=MODEL_DIMENSIONS, 0u64..25, 0..=3)
        .prop_map(|m| m.into_iter().collect::<Vec<_>>());
    let key = proptest::option::of(0..MODEL_SLOTS);
    prop_oneof![
        4 => (deltas.clone(), key.clone()).prop_map(|(deltas, key)| BudgetOp::Report { deltas, key }),
        3 => (0..MODEL_SLOTS, deltas, key)
            .prop_map(|(exec, deltas, key)| BudgetOp::Spend { exec, deltas, key }),
        2 => (0..MODEL_SLOTS).prop_map(|exec| BudgetOp::Release { exec }),
        1 => Just(BudgetOp::Reset),
    ]
}

fn dim(i: usize) -> String {
    format!("d{i}")
}

/// Spec 03 §3.2.2–§3.2.5 for one budget with interval 0, no clock movement.
#[derive(Debug, Default)]
struct BudgetModel {
    hard: BTreeMap<String, u64>,
    soft: BTreeMap<String, u64>,
    usage: BTreeMap<String, u64>,
    ledgers: BTreeMap<u8, BTreeMap<String, u64>>,
    keys: BTreeSet<u8>,
    breach_count: u64,
    soft_breach_count: u64,
}

impl BudgetModel {
    fn charge(&mut self, deltas: &[(String, u64)], key: Option<u8>, exec: Option<u8>) -> ReportUsageResult {
        if key.is_some_and(|k| self.keys.contains(&k)) {
            return ReportUsageResult::AlreadyApplied;
        }
        for (d, delta) in deltas {
            let current = self.usage.get(d).copied().unwrap_or(0);
            let limit = self.hard.get(d).copied().unwrap_or(0);
            if limit > 0 && current + delta > limit {
                self.breach_count += 1;
                return ReportUsageResult::HardBreach {
                    dimension: d.clone(),
                    current_usage: current,
                    hard_limit: limit,
                };
            }
        }
        let mut soft = None;
        for (d, delta) in deltas {
            let used = self.usage.entry(d.clone()).or_insert(0);
            *used += delta;
            let limit = self.soft.get(d).copied().unwrap_or(0);
            if soft.is_none() && limit > 0 && *used > limit {
                soft = Some(ReportUsageResult::SoftBreach {
                    dimension: d.clone(),
                    current_usage: *used,
                    soft_limit: limit,
                });
            }
        }
        if let Some(e) = exec.filter(|_| !deltas.is_empty()) {
            let ledger = self.ledgers.entry(e).or_default();
            for (d, delta) in deltas {
                *ledger.entry(d.clone()).or_insert(0) += delta;
            }
        }
        if let Some(k) = key {
            self.keys.insert(k);
        }
        if soft.is_some() {
            self.soft_breach_count += 1;
        }
        soft.unwrap_or(ReportUsageResult::Ok)
    }

    fn release(&mut self, exec: u8) -> bool {
        let Some(ledger) = self.ledgers.remove(&exec).filter(|l| !l.is_empty()) else { return false };
        for (d, spent) in ledger.into_iter().filter(|(_, v)| *v > 0) {
            let used = self.usage.entry(d).or_insert(0);
            *used = used.saturating_sub(spent);
        }
        true
    }

    fn reset(&mut self) {
        self.usage.values_mut().for_each(|u| *u = 0);
    }
}

fn dedup(key: Option<u8>) -> Option<String> {
    key.map(|k| format!("k{k}"))
}

/// Applies one op to the backend and the model; `Err` names the divergence.
async fn model_step(
    b: &dyn EngineBackend,
    id: BudgetId,
    m: &mut BudgetModel,
    op: &BudgetOp,
) -> Result<(), String> {
    let named = |ds: &[(usize, u64)]| ds.iter().map(|(i, v)| (dim(*i), *v)).collect::<Vec<_>>();
    let (got, want) = match op {
        BudgetOp::Report { deltas, key } => {
            let ds = named(deltas);
            let args = ReportUsageArgs { budget_id: id, dimensions: ds.clone(), dedup_key: dedup(*key) };
            let got = b.report_usage_and_check(args).await.map_err(|e| e.to_string())?;
            (format!("{got:?}"), format!("{:?}", m.charge(&ds, *key, None)))
        }
        BudgetOp::Spend { exec, deltas, key } => {
            let ds = named(deltas);
            let args = RecordSpendArgs {
                budget_id: id,
                execution_id: eid(u64::from(*exec)),
                deltas: ds.iter().cloned().collect(),
                idempotency_key: dedup(*key),
            };
            let got = b.record_spend(args).await.map_err(|e| e.to_string())?;
            (format!("{got:?}"), format!("{:?}", m.charge(&ds, *key, Some(*exec))))
        }
        BudgetOp::Release { exec } => {
            let got = b.release_budget(&id, &eid(u64::from(*exec))).await.map_err(|e| e.to_string())?;
            (format!("{got}"), format!("{}", m.release(*exec)))
        }
        BudgetOp::Reset => {
            let got = b.reset_budget(&id).await.map_err(|e| e.to_string())?;
            m.reset();
            (format!("{got:?}"), "None".to_owned())
        }
    };
    if got != want {
        return Err(format!("backend {got} != model {want}"));
    }
    Ok(())
}

/// Checks the status after a step: the hard-limit bound, then exact agreement.
async fn model_check(b: &dyn EngineBackend, id: BudgetId, m: &BudgetModel) -> Result<(), String> {
    let s = b.get_budget_status(&id).await.map_err(|e| e.to_string())?;
    for (d, limit) in s.hard_limits.iter().filter(|(_, l)| **l > 0) {
        let used = s.usage.get(d).copied().unwrap_or(0);
        if used > *limit {
            return Err(format!("usage {d}={used} above its hard limit {limit}"));
        }
    }
    if s.usage != m.usage {
        return Err(format!("usage {:?} != model {:?}", s.usage, m.usage));
    }
    if (s.breach_count, s.soft_breach_count) != (m.breach_count, m.soft_breach_count) {
        let got = (s.breach_count, s.soft_breach_count);
        return Err(format!("breach counts {got:?} != model {:?}", (m.breach_count, m.soft_breach_count)));
    }
    Ok(())
}

/// Runs one generated sequence on a fresh budget.
async fn budget_sequence(
    b: Arc<dyn EngineBackend>,
    id: BudgetId,
    limits: Vec<(u64, u64)>,
    ops: Vec<BudgetOp>,
) -> Result<(), String> {
    let mut m = BudgetModel::default();
    let mut args = budget_args(0, &[], 0);
    args.budget_id = id;
    for (i, (hard, soft)) in limits.iter().enumerate() {
        args.dimensions.push(dim(i));
        args.hard_limits.push(*hard);
        args.soft_limits.push(*soft);
        m.hard.insert(dim(i), *hard);
        m.soft.insert(dim(i), *soft);
    }
    b.create_budget(args).await.map_err(|e| e.to_string())?;
    for (i, op) in ops.iter().enumerate() {
        model_step(b.as_ref(), id, &mut m, op).await.map_err(|e| format!("step {i} {op:?}: {e}"))?;
        model_check(b.as_ref(), id, &m).await.map_err(|e| format!("after step {i} {op:?}: {e}"))?;
    }
    Ok(())
}

/// Random report/spend/release/reset sequences on one budget with random limits:
/// every outcome, usage and counter matches the model, and no dimension's usage
/// ever exceeds its hard limit. `record_spend` is checked before it applies just
/// like `report_usage`, and release and reset only lower usage, so the bound is
/// exact: usage ≤ hard limit for every limited dimension, after every step.
async fn budget_usage_never_exceeds_hard_limit(ctx: Ctx) {
    let seed = ctx.options.seed;
    let cases = ctx.options.cases.max(1);
    let b = ctx.fixture.backend.clone();
    let handle = tokio::runtime::Handle::current();
    let next_id = Arc::new(AtomicU64::new(MODEL_BUDGET_ID_MIN));
    let result = tokio::task::spawn_blocking(move || {
        let mut bytes = [0u8; 32];
        bytes[..8].copy_from_slice(&seed.to_le_bytes());
        let rng = TestRng::from_seed(RngAlgorithm::ChaCha, &bytes);
        let config = Config { cases, failure_persistence: None, ..Config::default() };
        let mut runner = TestRunner::new_with_rng(config, rng);
        let limits = proptest::collection::vec((0u64..40, 0u64..40), MODEL_DIMENSIONS);
        let strategy = (limits, proptest::collection::vec(budget_op(), 1..40));
        runner
            .run(&strategy, |(limits, ops)| {
                // A fresh budget per run (shrinking reruns too), so runs never share state.
                let id = budget(next_id.fetch_add(1, Ordering::Relaxed));
                handle.block_on(budget_sequence(b.clone(), id, limits, ops)).map_err(TestCaseError::fail)
            })
            // Debug names the shrunk input (limits and operations), not just the reason.
            .map_err(|e| format!("{e:?}"))
    })
    .await;
    match result {
        Ok(Ok(())) => {}
        Ok(Err(e)) => panic!("budget property failed; reproduce with FF_CONFORMANCE_SEED={seed}: {e}"),
        Err(e) => panic!("budget property runner crashed (seed {seed}): {e}"),
    }
}

/// The budget and quota cases.
pub fn cases() -> Vec<Case> {
    let budgets = Group::Family(ContractFamily::Budgets);
    let quotas = Group::Family(ContractFamily::Quotas);
    let golden = |requires: ContractFamily, c: Case| Case { requires, ..c };
    vec![
        case!(budgets, budget_create_codes),
        case!(budgets, report_usage_outcomes),
        simulated_only(
            case!(budgets, usage_dedup_keys),
            "the dedup marker's 24 h lifetime is the spec's, not the case's, and is checked to the millisecond",
        ),
        untimed(case!(budgets, record_spend_and_release)),
        case!(budgets, reset_budget_codes),
        simulated_only(
            case!(budgets, budget_reset_scanner),
            "checks the reset at its exact due instant and not a millisecond before",
        ),
        untimed(case!(budgets, budget_reconciler_marker_stays_out_of_usage)),
        untimed(case!(budgets, unblock_waiting_for_budget)),
        untimed(case!(budgets, budget_usage_never_exceeds_hard_limit)),
        untimed(case!(quotas, quota_create_and_limits)),
        simulated_only(
            case!(quotas, admission_outcomes),
            "checks exact retry_after_ms values at exact instants of a whole-second rate window",
        ),
        untimed(case!(quotas, release_admission_semantics)),
        simulated_only(
            case!(quotas, quota_reconciler_recount),
            "lets one guard lapse half-way through a whole-second window while another lives, at exact instants",
        ),
        simulated_only(
            case!(quotas, unblock_waiting_for_quota),
            "checks the window still full one millisecond before it slides",
        ),
        golden(ContractFamily::Budgets, case!(Group::Golden, budget_hard_breach_during_running_attempt)),
        golden(ContractFamily::Quotas, case!(Group::Golden, quota_window_sliding)),
    ]
}
