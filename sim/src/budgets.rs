//! Budgets in a simulated run: the budgets a run creates, every usage report a
//! worker sent with the backend's reply, and the invariants checked over that
//! history against the usage the backend stores.
//!
//! A report's fate is known when the backend answered it: `Ok`/`SoftBreach`
//! applied it, `HardBreach` refused it, `AlreadyApplied` means an earlier send
//! of the same dedup key applied it. A report whose every send lost its reply
//! may or may not have applied, so the stored usage of a dimension must lie
//! between the sum of the known-applied deltas and that sum plus the unknown
//! ones. Reports are counted once per dedup key: every report under one key
//! carries the same deltas, and the key applied when any of them was told so.

use std::collections::BTreeMap;

use ff_core::admission::{CreateBudgetArgs, ReportUsageResult};
use ff_core::{BudgetId, ExecutionId, TimestampMs};
use serde::Serialize;

use crate::Rng;

/// Budget violations listed per check at most (the rest are counted).
const VIOLATIONS_LISTED_MAX: usize = 8;

/// Most usage reports one task attempt sends.
pub const REPORTS_PER_ATTEMPT_MAX: u64 = 3;

/// Largest `tokens` delta of one report.
pub const TOKENS_PER_REPORT_MAX: u64 = 100;

/// One budget a run creates: its id and its hard and soft limit per dimension.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SimBudget {
    /// Id.
    pub budget_id: BudgetId,
    /// `(dimension, hard limit, soft limit)`, in report order.
    pub dimensions: Vec<(String, u64, u64)>,
}

impl SimBudget {
    /// The `create_budget` arguments of this budget.
    pub fn create_args(&self) -> CreateBudgetArgs {
        CreateBudgetArgs {
            budget_id: self.budget_id,
            scope_type: "sim".into(),
            scope_id: "sim".into(),
            enforcement_mode: "strict".into(),
            on_hard_limit: "fail".into(),
            on_soft_limit: "warn".into(),
            reset_interval_ms: 0,
            dimensions: self.dimensions.iter().map(|(d, _, _)| d.clone()).collect(),
            hard_limits: self.dimensions.iter().map(|(_, h, _)| *h).collect(),
            soft_limits: self.dimensions.iter().map(|(_, _, s)| *s).collect(),
        }
    }

    /// The hard limit of a dimension (0: none).
    pub fn hard_limit(&self, dimension: &str) -> u64 {
        self.dimensions.iter().find(|(d, _, _)| d == dimension).map_or(0, |(_, h, _)| *h)
    }
}

/// The budgets of a run with `attached` executions on each: one `tokens` budget, one
/// `tokens`+`calls` budget and one more `tokens` budget. Each hard limit is the expected
/// demand of its executions scaled by a seeded 40–130 %, so most seeds exhaust at least
/// one budget and some exhaust none; soft limits sit at half the hard ones.
pub fn plan_budgets(rng: &mut Rng, attached: [u64; 3]) -> Vec<SimBudget> {
    // Expected tokens per execution: ~1.3 attempts × 2 reports × ~50 tokens.
    let tokens_per_execution = 130;
    let mut out = Vec::new();
    for (k, executions) in attached.into_iter().enumerate() {
        let scale_pct = 40 + rng.below(91);
        let tokens_hard = (executions * tokens_per_execution * scale_pct / 100).max(1);
        let mut dimensions = vec![("tokens".to_owned(), tokens_hard, tokens_hard / 2)];
        if k == 1 {
            // Two reports per attempt on average: the calls limit bites around the same time.
            let calls_hard = (executions * 3 * scale_pct / 100).max(1);
            dimensions.push(("calls".to_owned(), calls_hard, 0));
        }
        out.push(SimBudget { budget_id: BudgetId::from_uuid(rng.uuid()), dimensions });
    }
    out
}

/// The deltas of the report under `dedup_key`: `tokens` drawn from the key (so every
/// re-send, and a resumed attempt's repeat, carries the same usage), and one `calls` on a
/// budget that has that dimension.
pub fn report_deltas(budget: &SimBudget, dedup_key: &str) -> Vec<(String, u64)> {
    let hash = dedup_key
        .bytes()
        .fold(0xcbf2_9ce4_8422_2325u64, |h, b| (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3));
    let mut deltas = vec![("tokens".to_owned(), 1 + Rng::new(hash).below(TOKENS_PER_REPORT_MAX))];
    if budget.dimensions.iter().any(|(d, _, _)| d == "calls") {
        deltas.push(("calls".to_owned(), 1));
    }
    deltas
}

/// What a usage report finally got back.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum UsageReply {
    /// Applied, no limit crossed.
    Ok,
    /// Applied, a soft limit crossed.
    SoftBreach,
    /// Refused at a hard limit; `stored_after` is the dimension's stored usage read
    /// right after the reply (nothing else ran in between).
    HardBreach {
        /// The breached dimension.
        dimension: String,
        /// Usage before the refused increment, as the backend reported it.
        usage_before: u64,
        /// The hard limit, as the backend reported it.
        hard_limit: u64,
        /// Stored usage read after the reply, when read.
        stored_after: Option<u64>,
    },
    /// An earlier send of the same dedup key applied it.
    AlreadyApplied,
    /// Every send lost its reply: applied or not.
    Unknown,
}

impl UsageReply {
    /// The reply of a contract's answer (`stored_after` still unread).
    pub fn of(result: &ReportUsageResult) -> Self {
        match result {
            ReportUsageResult::Ok => Self::Ok,
            ReportUsageResult::SoftBreach { .. } => Self::SoftBreach,
            ReportUsageResult::HardBreach { dimension, current_usage, hard_limit } => Self::HardBreach {
                dimension: dimension.clone(),
                usage_before: *current_usage,
                hard_limit: *hard_limit,
                stored_after: None,
            },
            ReportUsageResult::AlreadyApplied => Self::AlreadyApplied,
            // A reply this checker does not know may or may not have applied.
            _ => Self::Unknown,
        }
    }

    /// Whether the report applied: `Some(true)` acknowledged, `Some(false)` refused, `None` unknown.
    pub fn applied(&self) -> Option<bool> {
        match self {
            Self::Ok | Self::SoftBreach | Self::AlreadyApplied => Some(true),
            Self::HardBreach { .. } => Some(false),
            Self::Unknown => None,
        }
    }

    /// A short tag for traces.
    pub fn tag(&self) -> &'static str {
        match self {
            Self::Ok => "ok",
            Self::SoftBreach => "soft",
            Self::HardBreach { .. } => "hard",
            Self::AlreadyApplied => "dup",
            Self::Unknown => "unknown",
        }
    }
}

/// One usage report a worker sent (with all its re-sends) and what it got back.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct UsageReport {
    /// Index of the budget in the run's budget list.
    pub budget: usize,
    /// The reporting execution.
    pub execution_id: ExecutionId,
    /// Its attempt.
    pub attempt: u32,
    /// The report's step within the attempt.
    pub step: u32,
    /// `(dimension, delta)` pairs.
    pub deltas: Vec<(String, u64)>,
    /// Sends (1 + re-sends after a lost reply).
    pub sends: u32,
    /// The final reply.
    pub reply: UsageReply,
    /// Time of the final reply, ms.
    pub at_ms: TimestampMs,
}

impl UsageReport {
    /// The dedup key: one per (execution, attempt, step), shared by every re-send.
    pub fn dedup_key(execution_id: &ExecutionId, attempt: u32, step: u32) -> String {
        format!("{execution_id}/a{attempt}/s{step}")
    }

    fn delta(&self, dimension: &str) -> u64 {
        self.deltas.iter().filter(|(d, _)| d == dimension).map(|(_, v)| *v).sum()
    }
}

/// Applied and unknown usage per dimension, summed over a budget's reports.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct Tally {
    acknowledged: u64,
    unknown: u64,
}

/// What the backend did with one dedup key, from every report sent under it.
fn key_fate(reports: &[&UsageReport]) -> Option<bool> {
    let fates = reports.iter().map(|r| r.reply.applied());
    if fates.clone().any(|f| f == Some(true)) {
        Some(true)
    } else if fates.clone().any(|f| f.is_none()) {
        None
    } else {
        Some(false)
    }
}

/// The budget invariants, as violation texts: for every budget and dimension,
/// (a) stored usage within the hard limit, and the acknowledged reports within it too;
/// (b) acknowledged ≤ stored ≤ acknowledged + unknown; (c) every `HardBreach` was due
/// (usage before + delta past the limit the budget was created with) and left the
/// stored usage where it was. `stored` is each budget's usage per dimension, read
/// from the backend; a budget missing from it is not checked against storage.
pub fn budget_violations(
    budgets: &[SimBudget],
    reports: &[UsageReport],
    stored: &BTreeMap<usize, BTreeMap<String, u64>>,
) -> Vec<String> {
    let mut out = Vec::new();
    let mut by_key: BTreeMap<(usize, &ExecutionId, u32, u32), Vec<&UsageReport>> = BTreeMap::new();
    for report in reports {
        by_key
            .entry((report.budget, &report.execution_id, report.attempt, report.step))
            .or_default()
            .push(report);
        out.extend(hard_breach_violation(budgets, report));
    }
    let mut tallies: BTreeMap<(usize, &str), Tally> = BTreeMap::new();
    for ((budget, ..), sent) in &by_key {
        let fate = key_fate(sent);
        for (dimension, delta) in sent.first().map(|r| r.deltas.as_slice()).unwrap_or_default() {
            let tally = tallies.entry((*budget, dimension.as_str())).or_default();
            match fate {
                Some(true) => tally.acknowledged += delta,
                None => tally.unknown += delta,
                Some(false) => {}
            }
        }
    }
    for (k, budget) in budgets.iter().enumerate() {
        for (dimension, hard, _) in &budget.dimensions {
            let tally = tallies.get(&(k, dimension.as_str())).copied().unwrap_or_default();
            let id = &budget.budget_id;
            if *hard > 0 && tally.acknowledged > *hard {
                out.push(format!(
                    "budget {id}: reports acknowledged as applied add up to {} {dimension}, past the hard limit {hard}",
                    tally.acknowledged
                ));
            }
            let Some(used) = stored.get(&k).map(|u| u.get(dimension).copied().unwrap_or(0)) else {
                continue;
            };
            if *hard > 0 && used > *hard {
                out.push(format!(
                    "budget {id}: stored usage {used} {dimension} is past the hard limit {hard}"
                ));
            }
            let (low, high) = (tally.acknowledged, tally.acknowledged + tally.unknown);
            if used < low || used > high {
                out.push(format!(
                    "budget {id}: stored usage {used} {dimension} is outside [{low}, {high}] (acknowledged reports, plus those with unknown outcome)"
                ));
            }
        }
    }
    if out.len() > VIOLATIONS_LISTED_MAX {
        let more = out.len() - VIOLATIONS_LISTED_MAX;
        out.truncate(VIOLATIONS_LISTED_MAX);
        out.push(format!("{more} more budget violations"));
    }
    out
}

/// Invariant (c) for one report: a refusal must be due and must leave the usage unchanged.
fn hard_breach_violation(budgets: &[SimBudget], report: &UsageReport) -> Option<String> {
    let UsageReply::HardBreach { dimension, usage_before, hard_limit, stored_after } = &report.reply else {
        return None;
    };
    let who = format!("{} attempt {} step {}", report.execution_id, report.attempt, report.step);
    let configured = budgets.get(report.budget).map_or(0, |b| b.hard_limit(dimension));
    let delta = report.delta(dimension);
    if *hard_limit != configured || configured == 0 || usage_before + delta <= configured {
        return Some(format!(
            "usage report of {who} refused at {usage_before} + {delta} {dimension} against a hard limit of {hard_limit} (created with {configured})"
        ));
    }
    match stored_after {
        Some(after) if after != usage_before => Some(format!(
            "usage report of {who} answered HardBreach but changed {dimension} from {usage_before} to {after}"
        )),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn budget() -> SimBudget {
        SimBudget {
            budget_id: BudgetId::from_uuid(uuid::Uuid::from_u64_pair(1, 1)),
            dimensions: vec![("tokens".into(), 100, 50)],
        }
    }

    fn report(step: u32, delta: u64, reply: UsageReply) -> UsageReport {
        UsageReport {
            budget: 0,
            execution_id: ExecutionId::from_parts(0, uuid::Uuid::from_u64_pair(2, 2)),
            attempt: 0,
            step,
            deltas: vec![("tokens".into(), delta)],
            sends: 1,
            reply,
            at_ms: 0,
        }
    }

    fn stored(used: u64) -> BTreeMap<usize, BTreeMap<String, u64>> {
        BTreeMap::from([(0, BTreeMap::from([("tokens".to_owned(), used)]))])
    }

    fn hard(before: u64, after: Option<u64>) -> UsageReply {
        UsageReply::HardBreach {
            dimension: "tokens".into(),
            usage_before: before,
            hard_limit: 100,
            stored_after: after,
        }
    }

    #[test]
    fn an_honest_history_holds() {
        let reports = [
            report(0, 60, UsageReply::Ok),
            report(1, 30, UsageReply::SoftBreach),
            report(2, 20, hard(90, Some(90))),
            report(3, 5, UsageReply::Unknown),
        ];
        assert_eq!(budget_violations(&[budget()], &reports, &stored(90)), Vec::<String>::new());
        assert_eq!(budget_violations(&[budget()], &reports, &stored(95)), Vec::<String>::new());
    }

    #[test]
    fn usage_past_the_hard_limit_is_caught() {
        let reports = [report(0, 60, UsageReply::Ok), report(1, 50, UsageReply::Ok)];
        let v = budget_violations(&[budget()], &reports, &stored(110));
        assert_eq!(v.len(), 2, "{v:?}");
        assert!(v[0].contains("acknowledged as applied add up to 110 tokens, past the hard limit 100"));
        assert!(v[1].contains("stored usage 110 tokens is past the hard limit 100"));
    }

    #[test]
    fn stored_usage_outside_the_acknowledged_range_is_caught() {
        let reports = [report(0, 60, UsageReply::Ok), report(1, 10, UsageReply::Unknown)];
        let low = budget_violations(&[budget()], &reports, &stored(50));
        assert!(low.len() == 1 && low[0].contains("outside [60, 70]"), "{low:?}");
        let high = budget_violations(&[budget()], &reports, &stored(75));
        assert!(high.len() == 1 && high[0].contains("outside [60, 70]"), "{high:?}");
    }

    #[test]
    fn a_hard_breach_that_changed_usage_or_was_not_due_is_caught() {
        let changed = [report(0, 90, UsageReply::Ok), report(1, 20, hard(90, Some(100)))];
        let v = budget_violations(&[budget()], &changed, &BTreeMap::new());
        assert!(v.len() == 1 && v[0].contains("changed tokens from 90 to 100"), "{v:?}");
        let undue = [report(0, 20, UsageReply::Ok), report(1, 20, hard(20, Some(20)))];
        let v = budget_violations(&[budget()], &undue, &BTreeMap::new());
        assert!(v.len() == 1 && v[0].contains("refused at 20 + 20 tokens"), "{v:?}");
    }

    #[test]
    fn reports_under_one_key_count_once() {
        let reports = [report(0, 60, UsageReply::Unknown), report(0, 60, UsageReply::AlreadyApplied)];
        assert_eq!(budget_violations(&[budget()], &reports, &stored(60)), Vec::<String>::new());
        let v = budget_violations(&[budget()], &reports, &stored(0));
        assert!(v.len() == 1 && v[0].contains("outside [60, 60]"), "{v:?}");
    }

    #[test]
    fn planned_limits_are_positive_and_replay_by_seed() {
        let a = plan_budgets(&mut Rng::new(3), [10, 0, 40]);
        assert_eq!(a, plan_budgets(&mut Rng::new(3), [10, 0, 40]));
        assert_eq!(a.len(), 3);
        assert!(a.iter().all(|b| b.dimensions.iter().all(|(_, h, _)| *h > 0)));
        assert_eq!(a[1].dimensions.len(), 2);
    }
}
