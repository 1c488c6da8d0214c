//! Execution and retry policies (spec 01 §7) and the backoff formula.

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::ids::TimestampMs;

/// Fallback backoff in ms when the policy names no usable strategy.
pub const BACKOFF_FALLBACK_MS: u64 = 1000;
/// Default reclaim cap when the stored policy names none and the caller passes none.
pub const MAX_RECLAIM_COUNT_FALLBACK: u32 = 100;
/// Default reclaim cap of the Rust surface.
pub const MAX_RECLAIM_COUNT_DEFAULT: u32 = 1000;
/// Default replay cap.
pub const MAX_REPLAY_COUNT_DEFAULT: u32 = 10;
/// Default create idempotency window in ms (24 h).
pub const DEDUP_WINDOW_MS_DEFAULT: u64 = 86_400_000;

/// How a retry waits.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum BackoffStrategy {
    /// A fixed delay.
    Fixed {
        /// Delay in ms.
        delay_ms: u64,
    },
    /// Exponential growth capped at a maximum.
    Exponential {
        /// First delay in ms.
        initial_delay_ms: u64,
        /// Cap in ms.
        max_delay_ms: u64,
        /// Growth factor.
        multiplier: f64,
        /// Accepted and ignored.
        #[serde(default)]
        jitter: bool,
    },
}

impl Default for BackoffStrategy {
    fn default() -> Self {
        Self::Exponential { initial_delay_ms: 1000, max_delay_ms: 60_000, multiplier: 2.0, jitter: false }
    }
}

/// When and how a failed execution is retried.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RetryPolicy {
    /// Retries allowed after the first attempt.
    #[serde(default = "default_max_retries")]
    pub max_retries: u32,
    /// Wait strategy.
    #[serde(default)]
    pub backoff: BackoffStrategy,
    /// Recorded only; plays no part in the decision.
    #[serde(default)]
    pub retryable_categories: Vec<String>,
}

fn default_max_retries() -> u32 {
    3
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self { max_retries: 3, backoff: BackoffStrategy::default(), retryable_categories: Vec::new() }
    }
}

/// What an execution needs from the worker that runs it.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct RoutingRequirements {
    /// Capability tokens the worker must have.
    #[serde(default)]
    pub required_capabilities: Vec<String>,
}

/// The policy submitted with an execution (stored verbatim as JSON).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ExecutionPolicy {
    /// Retry policy; `None` means no retries.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry_policy: Option<RetryPolicy>,
    /// Reclaim cap.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_reclaim_count: Option<u32>,
    /// Replay cap.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_replay_count: Option<u32>,
    /// Create idempotency window in ms.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dedup_window_ms: Option<u64>,
    /// Capability routing.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub routing_requirements: Option<RoutingRequirements>,
    /// Budgets charged by this execution.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub budget_ids: Vec<String>,
    /// Quota policy applied to this execution.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub quota_policy_id: Option<String>,
}

/// The retry decision for a failure (spec 01 §7.2–7.3).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RetryDecision {
    /// Retry after `backoff_ms`.
    Retry {
        /// Delay before the retry is eligible.
        backoff_ms: u64,
    },
    /// No retries left.
    Terminal,
}

/// Decides whether to retry from a `retry_policy` JSON and the retries already scheduled.
pub fn retry_decision(retry_policy_json: &str, retry_count: u32) -> RetryDecision {
    let Ok(Value::Object(obj)) = serde_json::from_str::<Value>(retry_policy_json) else {
        return RetryDecision::Terminal;
    };
    let max_retries = obj.get("max_retries").and_then(Value::as_u64).unwrap_or(0);
    if u64::from(retry_count) >= max_retries {
        return RetryDecision::Terminal;
    }
    RetryDecision::Retry { backoff_ms: backoff_ms(obj.get("backoff"), retry_count) }
}

/// The backoff for the `rc`-th retry (0-based), truncated to whole ms.
pub fn backoff_ms(backoff: Option<&Value>, rc: u32) -> u64 {
    let Some(Value::Object(b)) = backoff else {
        return BACKOFF_FALLBACK_MS;
    };
    let num = |k: &str, d: f64| b.get(k).and_then(Value::as_f64).unwrap_or(d);
    match b.get("type").and_then(Value::as_str) {
        Some("exponential") => {
            let initial = num("initial_delay_ms", 1000.0);
            let max = num("max_delay_ms", 60_000.0);
            let mult = num("multiplier", 2.0);
            let raw = (initial * mult.powi(i32::try_from(rc).unwrap_or(i32::MAX))).min(max);
            if raw.is_finite() && raw > 0.0 { raw.trunc() as u64 } else { 0 }
        }
        Some("fixed") => {
            let d = num("delay_ms", 1000.0);
            if d.is_finite() && d > 0.0 { d.trunc() as u64 } else { 0 }
        }
        _ => BACKOFF_FALLBACK_MS,
    }
}

/// Reads a numeric field from a stored policy JSON, ignoring non-numbers.
pub fn policy_u64(policy_json: &str, field: &str) -> Option<u64> {
    serde_json::from_str::<Value>(policy_json).ok()?.get(field)?.as_u64()
}

/// `now + backoff`, saturating.
pub fn delay_until(now: TimestampMs, backoff_ms: u64) -> TimestampMs {
    now.saturating_add(i64::try_from(backoff_ms).unwrap_or(i64::MAX))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_exponential_sequence() {
        let p = serde_json::to_string(&RetryPolicy { max_retries: 10, ..Default::default() }).unwrap();
        let got: Vec<u64> = (0..8)
            .map(|rc| match retry_decision(&p, rc) {
                RetryDecision::Retry { backoff_ms } => backoff_ms,
                RetryDecision::Terminal => 0,
            })
            .collect();
        assert_eq!(got, vec![1000, 2000, 4000, 8000, 16000, 32000, 60000, 60000]);
    }

    #[test]
    fn decision_is_count_only() {
        assert_eq!(retry_decision("", 0), RetryDecision::Terminal);
        assert_eq!(retry_decision("not json", 0), RetryDecision::Terminal);
        assert_eq!(retry_decision("[1]", 0), RetryDecision::Terminal);
        assert_eq!(retry_decision("{}", 0), RetryDecision::Terminal);
        assert_eq!(retry_decision(r#"{"max_retries":0}"#, 0), RetryDecision::Terminal);
        assert_eq!(retry_decision(r#"{"max_retries":2}"#, 1), RetryDecision::Retry { backoff_ms: 1000 });
        assert_eq!(retry_decision(r#"{"max_retries":2}"#, 2), RetryDecision::Terminal);
    }

    #[test]
    fn backoff_variants_and_truncation() {
        let fixed: Value = serde_json::json!({"type":"fixed","delay_ms":250});
        assert_eq!(backoff_ms(Some(&fixed), 5), 250);
        let frac: Value = serde_json::json!({"type":"exponential","initial_delay_ms":1000,"multiplier":1.5});
        assert_eq!(backoff_ms(Some(&frac), 1), 1500);
        assert_eq!(backoff_ms(Some(&frac), 3), 3375);
        let odd: Value = serde_json::json!({"type":"exponential","initial_delay_ms":333,"multiplier":1.1});
        assert_eq!(backoff_ms(Some(&odd), 1), 366);
        let unknown: Value = serde_json::json!({"type":"linear"});
        assert_eq!(backoff_ms(Some(&unknown), 0), 1000);
        assert_eq!(backoff_ms(None, 0), 1000);
    }

    #[test]
    fn policy_numbers_ignore_garbage() {
        assert_eq!(policy_u64(r#"{"max_reclaim_count":"x"}"#, "max_reclaim_count"), None);
        assert_eq!(policy_u64(r#"{"max_reclaim_count":3}"#, "max_reclaim_count"), Some(3));
        assert_eq!(policy_u64("garbage", "max_reclaim_count"), None);
    }
}
