//! Values the Lua functions need from policy JSON, derived once in the client
//! (the stored policy never changes after create).

use ff_core::EngineError;
use ff_core::policy::{self, DEDUP_WINDOW_MS_DEFAULT};
use serde_json::Value;

/// Everything `ff_create_execution` stores from the policy.
pub struct CreatePolicy {
    /// Sorted required-capability CSV, or the rejection to raise after the duplicate checks.
    pub required: Result<Option<String>, EngineError>,
    /// Attached budgets (comma-separated).
    pub budget_ids: Option<String>,
    /// Attached quota policy.
    pub quota_policy_id: Option<String>,
    /// `max_replay_count`.
    pub max_replay_count: Option<u64>,
    /// `max_reclaim_count`, saturated to u32.
    pub max_reclaim_count: Option<u32>,
    /// The stored `retry_policy` as a Lua retry spec (`""` = never retry).
    pub retry_spec: String,
    /// Idempotency window.
    pub dedup_window_ms: u64,
}

/// Derives the create-time values of a policy JSON text.
pub fn create_policy(policy_json: &str) -> CreatePolicy {
    let obj = match serde_json::from_str::<Value>(policy_json) {
        Ok(Value::Object(obj)) => Some(obj),
        _ => None,
    };
    let budget_ids = obj
        .as_ref()
        .and_then(|o| o.get("budget_ids"))
        .and_then(Value::as_array)
        .map(|a| a.iter().filter_map(Value::as_str).collect::<Vec<_>>().join(","))
        .filter(|b| !b.is_empty());
    let quota_policy_id = obj
        .as_ref()
        .and_then(|o| o.get("quota_policy_id"))
        .and_then(Value::as_str)
        .filter(|q| !q.is_empty())
        .map(str::to_owned);
    let retry_spec = obj
        .as_ref()
        .and_then(|o| o.get("retry_policy"))
        .filter(|v| !v.is_null())
        .map(retry_spec_of_value)
        .unwrap_or_default();
    CreatePolicy {
        required: ff_engine::execution::required_capabilities(policy_json),
        budget_ids,
        quota_policy_id,
        max_replay_count: policy::policy_u64(policy_json, "max_replay_count"),
        max_reclaim_count: policy::policy_u64(policy_json, "max_reclaim_count")
            .map(|v| u32::try_from(v).unwrap_or(u32::MAX)),
        retry_spec,
        dedup_window_ms: policy::policy_u64(policy_json, "dedup_window_ms")
            .unwrap_or(DEDUP_WINDOW_MS_DEFAULT),
    }
}

/// The Lua retry spec of a retry-policy JSON text (`fail_execution`'s override).
pub fn retry_spec(retry_policy_json: &str) -> String {
    match serde_json::from_str::<Value>(retry_policy_json) {
        Ok(v) => retry_spec_of_value(&v),
        Err(_) => String::new(),
    }
}

/// `"<max_retries> <kind> <params…>"` as `ff_core::policy::retry_decision` reads a
/// policy; `""` when it is not an object (never retry).
fn retry_spec_of_value(v: &Value) -> String {
    let Value::Object(obj) = v else { return String::new() };
    let max_retries = obj.get("max_retries").and_then(Value::as_u64).unwrap_or(0);
    let backoff = match obj.get("backoff") {
        Some(Value::Object(b)) => {
            let num = |k: &str, d: f64| b.get(k).and_then(Value::as_f64).unwrap_or(d);
            match b.get("type").and_then(Value::as_str) {
                Some("exponential") => format!(
                    "exponential {:?} {:?} {:?}",
                    num("initial_delay_ms", 1000.0),
                    num("max_delay_ms", 60_000.0),
                    num("multiplier", 2.0)
                ),
                Some("fixed") => format!("fixed {:?}", num("delay_ms", 1000.0)),
                _ => "fallback".to_owned(),
            }
        }
        _ => "fallback".to_owned(),
    };
    format!("{max_retries} {backoff}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_specs() {
        assert_eq!(retry_spec(""), "");
        assert_eq!(retry_spec("[1]"), "");
        assert_eq!(retry_spec(r#"{"max_retries":2}"#), "2 fallback");
        assert_eq!(
            retry_spec(r#"{"max_retries":3,"backoff":{"type":"exponential","initial_delay_ms":100}}"#),
            "3 exponential 100.0 60000.0 2.0"
        );
        assert_eq!(retry_spec(r#"{"backoff":{"type":"fixed","delay_ms":5}}"#), "0 fixed 5.0");
    }

    #[test]
    fn create_policy_reads_the_counters() {
        let p =
            create_policy(r#"{"max_replay_count":1,"max_reclaim_count":99999999999,"dedup_window_ms":5}"#);
        assert_eq!(p.max_replay_count, Some(1));
        assert_eq!(p.max_reclaim_count, Some(u32::MAX));
        assert_eq!(p.dedup_window_ms, 5);
        assert!(matches!(p.required, Ok(None)));
    }
}
